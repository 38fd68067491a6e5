//! What ringway tells about itself: per-worker counters, their Prometheus rendering, and the
//! access log.

pub mod access;
pub mod metrics;
pub mod scrape;
pub mod series;
