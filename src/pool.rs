//! Per-worker upstream connection pools: idle keep-alive connections per target, reused LIFO so
//! the warmest connection goes first. Owned by one worker; no locks.

use std::cell::RefCell;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::balance::TargetShared;
use crate::stream::Stream;

/// An open upstream connection; counts against its target's `conns` until dropped.
pub struct UpConn {
    pub stream: Stream,
    shared: Arc<TargetShared>,
    /// Came out of the pool (so it may have been closed by the upstream meanwhile).
    pub reused: bool,
}

impl UpConn {
    /// Wraps a freshly dialed stream whose slot was already reserved in `shared.conns`.
    pub fn new(stream: Stream, shared: Arc<TargetShared>) -> Self {
        UpConn { stream, shared, reused: false }
    }
}

impl Drop for UpConn {
    fn drop(&mut self) {
        self.shared.conns.fetch_sub(1, Ordering::AcqRel);
    }
}

struct Idle {
    conn: UpConn,
    since: Instant,
}

pub struct Pool {
    /// `idle[upstream][target]`.
    idle: Vec<Vec<RefCell<Vec<Idle>>>>,
}

impl Pool {
    pub fn new(targets_per_upstream: impl Iterator<Item = usize>) -> Self {
        Pool {
            idle: targets_per_upstream
                .map(|n| (0..n).map(|_| RefCell::new(Vec::new())).collect())
                .collect(),
        }
    }

    pub fn has_idle(&self, upstream: usize, target: usize) -> bool {
        !self.idle[upstream][target].borrow().is_empty()
    }

    /// The most recently returned connection younger than `max_idle_age`; older ones are closed.
    pub fn checkout(
        &self,
        upstream: usize,
        target: usize,
        max_idle_age: Option<Duration>,
    ) -> Option<UpConn> {
        let mut idle = self.idle[upstream][target].borrow_mut();
        let now = Instant::now();
        if let Some(max) = max_idle_age {
            // Oldest sit at the front: drop expired ones from there.
            let expired = idle.iter().take_while(|i| now - i.since > max).count();
            idle.drain(..expired);
        }
        let mut entry = idle.pop()?;
        entry.conn.reused = true;
        Some(entry.conn)
    }

    /// Keeps `conn` for reuse unless `max_idle` connections are already idle for the target.
    pub fn checkin(&self, upstream: usize, target: usize, conn: UpConn, max_idle: usize) {
        let mut idle = self.idle[upstream][target].borrow_mut();
        if idle.len() < max_idle {
            idle.push(Idle { conn, since: Instant::now() });
        }
    }
}
