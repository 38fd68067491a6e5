//! The upstream side, shared by HTTP and layer 4: per-target state, balancer replicas, pools of
//! idle connections, and the connector that picks, dials and fails over; `dial` opens the TCP
//! connection (socket options, `eyeballs` racing a hostname's addresses, a `forward` proxy,
//! `socks` its SOCKS5 codec).

pub mod balance;
pub mod connect;
pub mod dial;
pub mod eyeballs;
pub mod forward;
pub mod handshake;
pub mod pool;
pub mod queue;
pub mod retry;
pub mod socks;
pub mod target;
