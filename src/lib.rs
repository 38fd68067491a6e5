//! ringway: a thread-per-core HTTP/1.1 reverse proxy and load balancer on io_uring.
//!
//! # Layout
//!
//! - [`config`]: the YAML file types, their validation, and the runtime types workers use.
//! - [`template`]: `{placeholder}` templates for headers, rewrites and respond bodies.
//! - [`server`]: starts the workers on bound listeners and drains them on shutdown.
//! - [`control`]: the control side of a running server: sockets, worker links, health
//!   checker, and configuration reloads that swap a new generation into every worker.
//! - [`generation`]: one loaded configuration and the state workers share because of it;
//!   unchanged targets carry their health and pooled connections across reloads.
//! - [`worker`]: one pinned thread per core running its own monoio runtime (io_uring, or epoll
//!   when io_uring is unavailable), its own accept loops, balancers and pools.
//! - [`listener`]: SO_REUSEPORT listening sockets, bound before workers start.
//! - [`access`]: the access log, buffered per worker and written by its own thread.
//! - [`metrics`]: per-worker counters summed on scrape into Prometheus text.
//! - [`admin`]: the control-plane HTTP endpoint (metrics, health, readiness, upstreams).
//! - [`proxy`]: the HTTP/1 data path of one downstream connection.
//! - [`l4`]: layer-4 tunnels of `protocol: tcp` listeners (splice(2) through pipes).
//! - [`proxy_protocol`]: PROXY protocol v1/v2 headers, sent to upstreams and read from front
//!   balancers.
//! - [`route`]: host/path/method/header route matching.
//! - [`http1`]: head parsing straight from the receive buffer ([`http1::parse`]), body
//!   framing ([`http1::body`]), and the request head written upstream with its forwarded
//!   headers and header operations ([`http1::forward`]).
//! - [`balance`]: per-worker balancer replicas over shared per-target atomics.
//! - [`health`]: active health checks on one control thread, published through the shared
//!   per-target atomics.
//! - [`target`]: per-target state shared by all workers (load, health, latency), atomics only.
//! - [`pool`]: per-worker pools of idle upstream connections.
//! - [`stream`]: TCP, Unix and TLS streams behind one type.
//! - [`tls`]: rustls configs: SNI certificate choice, client auth, reload, upstream TLS.
//! - [`closer`]: a same-thread "stop now" broadcast that ends a worker's tasks.
//! - [`error`]: proxy errors with their side and retry safety, mapped to one status each.

pub mod access;
pub mod admin;
pub mod balance;
pub mod closer;
pub mod config;
pub mod control;
pub mod error;
pub mod generation;
pub mod health;
pub mod http1;
pub mod l4;
pub mod listener;
pub mod metrics;
pub mod pool;
pub mod proxy;
pub mod proxy_protocol;
pub mod route;
pub mod server;
pub mod stream;
pub mod target;
pub mod template;
pub mod tls;
pub mod tunnel;
pub mod worker;
