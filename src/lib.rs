//! ringway: a thread-per-core HTTP/1.1, HTTP/2 and TCP reverse proxy and load balancer on io_uring.
//!
//! # Layout
//!
//! One request, in the order it meets the code: [`net`] accepts it, [`worker`] dispatches it,
//! [`http1`] parses its head, [`route`] picks a route, [`upstream`] connects to a target,
//! [`proxy`] runs the exchange and relays the bodies, [`http1`] writes the response head.
//!
//! - [`config`]: the runtime types workers use (a leaf), the YAML file types, units, key
//!   positions for errors, named defaults, and `config/validate/`, which turns a file into a
//!   checked `Config` or says which key on which line is wrong.
//! - [`control`]: starting and stopping the server, the state shared with workers
//!   (`control::state`, a leaf), configuration generations and reloads, the admin endpoint and
//!   active health checks. Never on the data path.
//!   `control/discover/` resolves the DNS names of dynamic upstreams on its own thread and
//!   swaps changed target sets in like a reload.
//! - [`worker`]: one pinned thread per core running its own monoio runtime (io_uring, or epoll
//!   when io_uring is unavailable): accept loops, dispatch, and the per-generation context that
//!   owns its balancer replicas and pools.
//! - [`net`]: listening sockets, TCP/Unix/TLS streams (and `Stream::H2`, an HTTP/2 stream as
//!   the data path's client), in-memory stream pairs (a WebSocket over an HTTP/2 stream),
//!   splice pipes, rustls configs, PROXY protocol headers.
//! - [`upstream`]: per-target shared state, balancer replicas, idle-connection pools, and the
//!   connector (select -> reserve -> dial -> TLS -> PROXY header -> failover) shared by HTTP and
//!   layer 4, with the pure retry decisions and the FIFO of requests waiting for a slot; the
//!   dial itself (`upstream::dial`): socket options, RFC 8305 racing of a hostname's addresses
//!   (`upstream::eyeballs`), forward proxies (`upstream::forward`, `upstream::socks`).
//! - [`http1`]: head parsing straight from the receive buffer, body framing, the upstream request
//!   head and the client response head.
//! - [`http2`]: HTTP/2 client connections (the `h2` crate): detection by ALPN or preface, the
//!   connection's streams, limits and GOAWAY; each stream runs through [`proxy`]'s HTTP/1 data
//!   path as a one-request connection whose reads and writes `http2::down` turns into the
//!   stream's frames in place (a WebSocket's extended CONNECT as an upgrade, over a pair). Also
//!   HTTP/2 to upstreams: the worker's shared connection per target (`http2::client`) and the
//!   exchange that replaces the HTTP/1.1 one on it (`http2::upstream`, gRPC's path).
//! - [`route`]: host/path/method/header route matching.
//! - [`proxy`]: the HTTP/1 data path of one downstream connection: the keep-alive loop over a
//!   `Session`, one exchange with an upstream, body relays, local answers, and `proxy::shape`
//!   (a route's `handle_response` rules and `error_pages`).
//! - [`fastcgi`]: the FastCGI transport (php-fpm): records, CGI/1.1 parameters and the
//!   exchange that replaces the HTTP one for `transport.protocol: fastcgi` upstreams.
//! - [`l4`]: layer-4 tunnels of `protocol: tcp` listeners, and the relay of upgraded HTTP
//!   connections.
//! - [`observe`]: metrics (per-worker counters summed on scrape) and the access log.
//! - [`template`]: `{placeholder}` templates for headers, rewrites and respond bodies.
//! - [`error`]: proxy errors with their side and retry safety, mapped to one status each.

pub mod config;
pub mod control;
pub mod error;
pub mod fastcgi;
pub mod http1;
pub mod http2;
pub mod l4;
pub mod net;
pub mod observe;
pub mod proxy;
pub mod route;
pub mod template;
pub mod upstream;
pub mod worker;
