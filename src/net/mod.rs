//! Sockets and what wraps them: listening sockets, TCP/Unix/TLS streams, splice pipes, rustls
//! configs, PROXY protocol headers.

pub mod listener;
pub mod proxy_protocol;
pub mod sniff;
pub mod splice;
pub mod stream;
pub mod tls;
