//! What ringway tells about itself: per-worker counters, their Prometheus rendering, the
//! process's own resource use (read from /proc at scrape), and the access log.

pub mod access;
pub mod metrics;
pub mod process;
pub mod scrape;
pub mod series;
