//! Sockets and what wraps them: listening sockets, TCP/Unix/TLS streams, in-memory stream
//! pairs, splice pipes, rustls configs, PROXY protocol headers.

pub mod close;
pub mod duplex;
pub mod listener;
pub mod proxy_protocol;
pub mod sniff;
pub mod sock;
pub mod splice;
pub mod stream;
pub mod tls;
pub mod tls_stream;
