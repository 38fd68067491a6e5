//! Per-worker upstream connection pools: idle keep-alive connections per target, reused LIFO so
//! the warmest connection goes first. Owned by one worker; no locks.
//!
//! `max_idle_per_worker` is what the pool keeps for long. Under load more connections than that
//! are briefly idle between requests; closing them at once only to dial again a moment later
//! (nginx's and Go's behaviour with a fixed cap) cost 40% of the proxy's CPU in the benchmark,
//! so surplus connections get a short grace period first, as HAProxy's pool-purge-delay does.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::net::stream::Stream;
use crate::upstream::target::TargetShared;

/// A reserved connection slot against a target's `conns`; released when dropped.
pub struct ConnSlot(Arc<TargetShared>);

impl ConnSlot {
    /// Wraps a slot already reserved in `shared.conns` (see `Balancer::try_reserve_conn`).
    pub fn reserved(shared: Arc<TargetShared>) -> Self {
        ConnSlot(shared)
    }

    /// The target this connection counts against.
    pub fn target(&self) -> &Arc<TargetShared> {
        &self.0
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.0.conns.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Marks a request or tunnel in flight on a target for as long as it lives (least_conn,
/// p2c and `unhealthy_request_count` read it). Borrowed, not an `Arc`: a clone would add a
/// second contended atomic per request.
pub struct InFlight<'a>(&'a TargetShared);

impl<'a> InFlight<'a> {
    pub fn new(shared: &'a TargetShared) -> Self {
        shared.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(shared)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Whom a pooled connection may serve: `None` for anyone; with a PROXY header, the client
/// addresses it announced (source, destination), so it is never reused for another client.
pub type Tag = Option<(Option<SocketAddr>, Option<SocketAddr>)>;

/// An open upstream connection; counts against its target's `conns` until dropped.
pub struct UpConn {
    pub stream: Stream,
    pub slot: ConnSlot,
    /// Came out of the pool (so it may have been closed by the upstream meanwhile).
    pub reused: bool,
    pub tag: Tag,
}

impl UpConn {
    /// Wraps a freshly dialed stream whose slot was already reserved in `shared.conns`.
    pub fn new(stream: Stream, shared: Arc<TargetShared>) -> Self {
        UpConn {
            stream,
            slot: ConnSlot::reserved(shared),
            reused: false,
            tag: None,
        }
    }
}

/// How long a connection above `max_idle_per_worker` may stay idle before it is closed.
pub const SURPLUS_GRACE: Duration = Duration::from_secs(1);
/// Idle connections per target per worker never exceed this, whatever the load.
pub const HARD_CAP: usize = 4096;
/// How often a worker checks its idle connections without traffic: a connection the upstream
/// closed (or one past `idle_timeout`) is closed within this, instead of sitting in CLOSE-WAIT
/// until the next request to its target. A sweep costs one non-blocking peek per idle
/// connection, and no memory per connection (a watcher task per connection would).
pub const SWEEP_EVERY: Duration = Duration::from_secs(1);

struct Idle {
    conn: UpConn,
    since: Instant,
}

pub struct Pool {
    /// `idle[upstream][target]`.
    idle: Vec<Vec<RefCell<VecDeque<Idle>>>>,
}

impl Pool {
    pub fn new(targets_per_upstream: impl Iterator<Item = usize>) -> Self {
        Pool {
            idle: targets_per_upstream
                .map(|n| (0..n).map(|_| RefCell::new(VecDeque::new())).collect())
                .collect(),
        }
    }

    /// Whether an idle connection with tag `tag` waits for `target` (one look for untagged
    /// pools; PROXY-header pools look for the client's own).
    pub fn has_idle_tagged(&self, upstream: usize, target: usize, tag: Tag) -> bool {
        let idle = self.idle[upstream][target].borrow();
        match tag {
            None => !idle.is_empty(),
            Some(_) => idle.iter().any(|i| i.conn.tag == tag),
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
        self.checkout_tagged(upstream, target, max_idle_age, None)
    }

    /// Like [`Pool::checkout`], for a connection with tag `tag` only. Untagged pools (every
    /// upstream without a PROXY header) take the newest at once; tagged ones search from it.
    pub fn checkout_tagged(
        &self,
        upstream: usize,
        target: usize,
        max_idle_age: Option<Duration>,
        tag: Tag,
    ) -> Option<UpConn> {
        let mut idle = self.idle[upstream][target].borrow_mut();
        let now = Instant::now();
        if let Some(max) = max_idle_age {
            // Oldest sit at the front: drop expired ones from there.
            while idle.front().is_some_and(|i| now - i.since > max) {
                idle.pop_front();
            }
        }
        let at = idle.iter().rposition(|i| i.conn.tag == tag)?;
        let mut entry = idle.remove(at)?;
        entry.conn.reused = true;
        Some(entry.conn)
    }

    /// Closes the oldest idle connection to a target of `upstream` that a request with `tag`
    /// cannot use (another client's PROXY-header connection), freeing its slot for it.
    pub fn evict_other(&self, upstream: usize, tag: Tag) -> bool {
        for target in &self.idle[upstream] {
            let mut idle = target.borrow_mut();
            if let Some(at) = idle.iter().position(|i| i.conn.tag != tag) {
                idle.remove(at);
                return true;
            }
        }
        false
    }

    /// Closes every idle connection to a target, whatever its tag.
    pub fn drain(&self, upstream: usize, target: usize) {
        self.idle[upstream][target].borrow_mut().clear();
    }

    /// Keeps `conn` for reuse. Connections beyond `max_idle` are closed once they have been
    /// idle for `SURPLUS_GRACE`, oldest first. `max_idle == 0` keeps nothing.
    pub fn checkin(&self, upstream: usize, target: usize, mut conn: UpConn, max_idle: usize) {
        if max_idle == 0 {
            return;
        }
        // An idle TLS connection gives back its ciphertext buffers (its next read or write
        // takes them again); a stale one is still found by a peek on its socket.
        if let Stream::TlsClient(tls, _) = &mut conn.stream {
            tls.release_buffers();
        }
        let mut idle = self.idle[upstream][target].borrow_mut();
        let now = Instant::now();
        while idle.len() >= HARD_CAP
            || (idle.len() >= max_idle
                && idle.front().is_some_and(|i| now - i.since > SURPLUS_GRACE))
        {
            idle.pop_front();
        }
        idle.push_back(Idle { conn, since: now });
    }

    /// Closes this worker's oldest idle connection to a capped target that another worker
    /// is waiting for (`TargetShared::wanted`), freeing its slot. True when one was closed.
    pub fn hand_over(&self, upstream: usize, target: usize, shared: &TargetShared) -> bool {
        let mut idle = self.idle[upstream][target].borrow_mut();
        if idle.is_empty() || !shared.wanted.load(Ordering::Relaxed) {
            return false;
        }
        if !shared.wanted.swap(false, Ordering::Relaxed) {
            return false;
        }
        idle.pop_front();
        true
    }

    /// Moves every idle connection of `from` into `to`'s pool at `to_index` (a reload keeps the
    /// connections of targets that did not change), keeping their idle-since times.
    pub fn move_idle(&self, from: (usize, usize), to: &Pool, to_index: (usize, usize)) {
        let moved = std::mem::take(&mut *self.idle[from.0][from.1].borrow_mut());
        to.idle[to_index.0][to_index.1].borrow_mut().extend(moved);
    }

    /// Closes the idle connections of every target that are older than their upstream's
    /// `idle_timeout` (`max_age(upstream)`) or that the upstream closed or wrote to; returns
    /// how many were closed.
    pub fn sweep(&self, now: Instant, max_age: impl Fn(usize) -> Option<Duration>) -> usize {
        let mut closed = 0;
        for (u, targets) in self.idle.iter().enumerate() {
            let max = max_age(u);
            for idle in targets {
                let mut idle = idle.borrow_mut();
                let before = idle.len();
                idle.retain(|i| {
                    max.is_none_or(|m| now.saturating_duration_since(i.since) <= m)
                        && !i.conn.stream.peer_closed()
                });
                closed += before - idle.len();
            }
        }
        closed
    }

    /// Idle connections held for all targets of an upstream (`keepalive_idle_conns`).
    pub fn idle_total(&self, upstream: usize) -> usize {
        self.idle[upstream].iter().map(|t| t.borrow().len()).sum()
    }

    /// Idle connections held for a target (for tests and metrics).
    pub fn idle_count(&self, upstream: usize, target: usize) -> usize {
        self.idle[upstream][target].borrow().len()
    }
}
