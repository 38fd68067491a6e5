//! Sockets and what wraps them: listening sockets, TCP/Unix/TLS streams, rustls configs, PROXY
//! protocol headers.

pub mod listener;
pub mod proxy_protocol;
pub mod stream;
pub mod tls;
