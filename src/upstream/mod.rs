//! The upstream side, shared by HTTP and layer 4: per-target state, balancer replicas, pools of
//! idle connections, and the connector that picks, dials and fails over.

pub mod balance;
pub mod connect;
pub mod pool;
pub mod queue;
pub mod retry;
pub mod target;
