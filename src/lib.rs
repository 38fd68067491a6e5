//! ringway: a thread-per-core HTTP/1.1 and TCP reverse proxy and load balancer on io_uring.

pub mod config;
pub mod http1;
pub mod template;
