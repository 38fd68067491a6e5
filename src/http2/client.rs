//! This worker's HTTP/2 connections to upstream targets (h2c, or TLS with ALPN h2): one
//! connection per target carries many streams, up to the peer's MAX_CONCURRENT_STREAMS, then
//! another is opened. Each connection is driven by a task on the worker's own runtime; handles
//! and counters are `Rc`/`Cell`, so nothing here is shared with another thread.
//!
//! A connection the peer closed or sent GOAWAY on is marked closed and dropped from the cache
//! at the next look. A connection with no open stream is idle, and the pool's keys mean for it
//! what they mean for pooled HTTP/1.1 connections (see [`close_idle_at`]): its driver closes it
//! (GOAWAY NO_ERROR, then the socket) by a timer, without traffic. It holds its target's
//! connection slot (`max_connections`) until it ends; the streams count in flight per request
//! (`upstream::pool::InFlight`, taken by the connector), which least_conn and health read.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::client::SendRequest;

use super::io::H2Transport;
use crate::config::Transport;
use crate::net::stream::Stream;
use crate::upstream::pool::{ConnSlot, Tag, UpConn, SURPLUS_GRACE};

/// Streams assumed allowed before the peer's SETTINGS arrive (RFC 9113 §6.5.2 recommends
/// servers allow at least 100).
const INITIAL_MAX_STREAMS: usize = 100;

/// Per-stream receive window: a 3 MiB gRPC message needs a few round trips, not fifty, and a
/// stream buffers at most this much for a client that reads slowly.
const STREAM_WINDOW: u32 = 256 * 1024;

/// Connection receive window: several streams at full speed at once.
const CONN_WINDOW: u32 = 1024 * 1024;

/// How long a closing connection may take to send its GOAWAY and see the peer's close.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Idle connections held now, by one target and by its whole upstream (this worker's), for
/// `max_idle_per_worker` and `keepalive_idle_conns`.
#[derive(Clone, Default)]
struct IdleCounts {
    target: Rc<Cell<usize>>,
    upstream: Rc<Cell<usize>>,
}

impl IdleCounts {
    fn add(&self, n: isize) {
        for c in [&self.target, &self.upstream] {
            c.set(c.get().saturating_add_signed(n));
        }
    }
}

/// What decides when an idle connection closes (from the upstream's `transport`).
#[derive(Debug, Clone, Copy)]
struct IdlePolicy {
    keepalive: bool,
    idle_timeout: Option<Duration>,
    max_idle_per_worker: usize,
    keepalive_idle_conns: Option<usize>,
}

/// When a connection idle since `since` closes, `None`: not by a timer. As for pooled
/// HTTP/1.1 connections: `keepalive: false` keeps none (it closes as its last stream ends);
/// one past `max_idle_per_worker` of its target, or past `keepalive_idle_conns` of its
/// upstream, goes after the pool's short grace ([`SURPLUS_GRACE`], so a burst does not redial);
/// any other after `idle_timeout`. A connection of a replaced configuration (`retired`) closes
/// as soon as it is idle: the new generation dials its own.
fn close_idle_at(
    p: IdlePolicy,
    since: Instant,
    idle_target: usize,
    idle_upstream: usize,
    retired: bool,
) -> Option<Instant> {
    if !p.keepalive || retired {
        return Some(since);
    }
    let surplus = idle_target > p.max_idle_per_worker
        || p.keepalive_idle_conns
            .is_some_and(|cap| idle_upstream > cap);
    let grace = surplus.then_some(SURPLUS_GRACE);
    match (grace, p.idle_timeout) {
        (Some(g), Some(t)) => Some(since + g.min(t)),
        (g, t) => g.or(t).map(|d| since + d),
    }
}

/// What a connection's driver and its streams share.
struct State {
    /// Streams handed out and not yet finished.
    open: Cell<usize>,
    /// The connection ended, or no new stream should be opened on it.
    closed: Cell<bool>,
    /// Since when no stream is open.
    idle_since: Cell<Instant>,
    /// Counted in `counts` as idle.
    counted_idle: Cell<bool>,
    counts: IdleCounts,
    /// Its `Conns` is gone (a reload replaced the configuration).
    retired: Cell<bool>,
    /// The handle streams are opened from; taken when the connection closes, after which h2
    /// sends GOAWAY NO_ERROR once no stream is left.
    send: RefCell<Option<SendRequest<Bytes>>>,
    policy: IdlePolicy,
    /// When the driver's timer fires next (`None`: it waits for a wake-up only).
    armed: Cell<Option<Instant>>,
    /// The driver, woken when the connection must close before its timer fires.
    driver: Cell<Option<Waker>>,
    /// Counts those wake-ups.
    wakeups: Cell<u64>,
    /// The peer's first SETTINGS were read (a PING's answer came back after them).
    settled: Cell<bool>,
    /// Streams waiting for that.
    settle_waiters: RefCell<Vec<Waker>>,
}

impl State {
    /// When it closes for being idle; `None` while a stream is open or without a deadline.
    fn close_at(&self) -> Option<Instant> {
        if self.open.get() > 0 {
            return None;
        }
        let c = &self.counts;
        close_idle_at(
            self.policy,
            self.idle_since.get(),
            c.target.get(),
            c.upstream.get(),
            self.retired.get(),
        )
    }

    /// Wakes the driver when the connection is to close before its timer fires. Otherwise
    /// not: a busy connection turns idle after every request, and the timer, when it fires,
    /// looks at the idle time then (one wake-up per idle_timeout, not one per request).
    fn nudge(&self) {
        if let Some(at) = self.close_at() {
            if self.armed.get().is_none_or(|armed| at < armed) {
                self.wake_driver();
            }
        }
    }

    /// Lets the streams waiting for the peer's SETTINGS go on.
    fn settle_now(&self) {
        self.settled.set(true);
        for w in self.settle_waiters.borrow_mut().drain(..) {
            w.wake();
        }
    }

    fn wake_driver(&self) {
        self.wakeups.set(self.wakeups.get() + 1);
        if let Some(w) = self.driver.take() {
            w.wake();
        }
    }

    /// Marks it idle (or not) in the counts.
    fn set_idle(&self, idle: bool) {
        if self.counted_idle.replace(idle) != idle {
            self.counts.add(if idle { 1 } else { -1 });
        }
    }
}

struct Conn {
    state: Rc<State>,
    /// Whom it may serve (a PROXY header names one client).
    tag: Tag,
}

impl Conn {
    /// Whether it can take one more stream now. A connection whose peer sent GOAWAY (or that
    /// failed) refuses new streams: `poll_ready` on a fresh handle says so at once.
    fn has_room(&self) -> bool {
        if self.state.closed.get() {
            return false;
        }
        let send = self.state.send.borrow();
        let Some(send) = send.as_ref() else {
            return false;
        };
        let mut probe = send.clone();
        let mut cx = std::task::Context::from_waker(Waker::noop());
        if let Poll::Ready(Err(_)) = probe.poll_ready(&mut cx) {
            self.state.closed.set(true);
            return false;
        }
        self.state.open.get() < send.current_max_send_streams()
    }
}

/// The connections to one target and the dials under way to it.
#[derive(Default)]
struct Slot {
    conns: Vec<Conn>,
    idle: IdleCounts,
    dialing: usize,
    /// Bumped when a dial ends: requests waiting for it look again.
    dials_ended: u64,
    /// The last dial that ended failed.
    last_failed: bool,
    waiters: Vec<Waker>,
}

/// One request's stream on an upstream HTTP/2 connection; the connection counts it open until
/// this drops.
pub struct H2Stream {
    pub send: SendRequest<Bytes>,
    /// The connection served streams before this one (a broken one is replayed, as a stale
    /// pooled HTTP/1.1 connection is).
    pub reused: bool,
    /// A WebSocket's own connection slot (`max_connections`), reserved before its extended
    /// CONNECT went out: its tunnel counts as a connection, as one over HTTP/1.1 would.
    pub tunnel_slot: Option<ConnSlot>,
    state: Rc<State>,
}

impl Drop for H2Stream {
    fn drop(&mut self) {
        let open = self.state.open.get() - 1;
        self.state.open.set(open);
        if open == 0 {
            self.state.idle_since.set(Instant::now());
            self.state.set_idle(true);
            self.state.nudge();
        }
    }
}

impl H2Stream {
    /// Waits until the peer's first SETTINGS were read (what it allows, such as extended
    /// CONNECT, is known then), or the connection ended.
    pub async fn settled(&self) {
        poll_fn(|cx| {
            if self.state.settled.get() {
                return Poll::Ready(());
            }
            self.state
                .settle_waiters
                .borrow_mut()
                .push(cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}

/// How waiting for another request's dial ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Waited {
    /// No dial to this target was under way.
    NoDial,
    /// It ended with a connection (look again).
    Connected,
    /// It failed: the target is not reachable now.
    Failed,
}

/// This worker's HTTP/2 connections, per upstream and target.
pub struct Conns {
    slots: Vec<Vec<RefCell<Slot>>>,
}

impl Conns {
    pub fn new(targets_per_upstream: impl Iterator<Item = usize>) -> Self {
        Conns {
            slots: targets_per_upstream
                .map(|n| {
                    let upstream = Rc::new(Cell::new(0));
                    (0..n)
                        .map(|_| {
                            RefCell::new(Slot {
                                idle: IdleCounts {
                                    target: Rc::default(),
                                    upstream: upstream.clone(),
                                },
                                ..Slot::default()
                            })
                        })
                        .collect()
                })
                .collect(),
        }
    }

    /// A stream on a connection to target `t` with room for one, if there is one. Closed
    /// connections met on the way are dropped.
    pub fn stream(&self, u: usize, t: usize, tag: Tag) -> Option<H2Stream> {
        let mut slot = self.slots[u][t].borrow_mut();
        slot.conns.retain(|c| !c.state.closed.get());
        let conn = slot.conns.iter().find(|c| c.tag == tag && c.has_room())?;
        let send = conn.state.send.borrow().clone()?;
        conn.state.open.set(conn.state.open.get() + 1);
        conn.state.set_idle(false);
        Some(H2Stream {
            send,
            reused: true,
            tunnel_slot: None,
            state: conn.state.clone(),
        })
    }

    /// Whether a stream to `t` can be had without a new connection (the connector lets a
    /// target at its `max_connections` be chosen then).
    pub fn has_room(&self, u: usize, t: usize, tag: Tag) -> bool {
        let slot = self.slots[u][t].borrow();
        slot.conns.iter().any(|c| c.tag == tag && c.has_room())
    }

    /// Marks a dial to `t` under way until the guard drops; requests wanting `t` meanwhile
    /// wait for it instead of dialing too.
    pub fn dialing(&self, u: usize, t: usize) -> Dialing<'_> {
        self.slots[u][t].borrow_mut().dialing += 1;
        Dialing {
            slot: &self.slots[u][t],
            failed: false,
        }
    }

    /// Waits for a dial to `t` that another request started, if any.
    pub async fn wait_for_dial(&self, u: usize, t: usize) -> Waited {
        let cell = &self.slots[u][t];
        let seen = {
            let slot = cell.borrow();
            if slot.dialing == 0 {
                return Waited::NoDial;
            }
            slot.dials_ended
        };
        poll_fn(|cx| {
            let mut slot = cell.borrow_mut();
            if slot.dials_ended != seen {
                return Poll::Ready(if slot.last_failed {
                    Waited::Failed
                } else {
                    Waited::Connected
                });
            }
            slot.waiters.push(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Opens HTTP/2 on a freshly dialed connection to `t` (the preface and SETTINGS go out;
    /// the peer's SETTINGS are read by the driver), starts its driver and takes one stream.
    /// `gauge` counts the connection open until it ends (called with +1, then -1).
    pub async fn open(
        &self,
        u: usize,
        t: usize,
        conn: UpConn,
        tr: &Transport,
        gauge: Box<dyn Fn(isize)>,
    ) -> Result<H2Stream, h2::Error> {
        let policy = IdlePolicy {
            keepalive: tr.keepalive,
            idle_timeout: tr.idle_timeout,
            max_idle_per_worker: tr.max_idle_per_worker,
            keepalive_idle_conns: tr.keepalive_idle_conns,
        };
        let UpConn {
            stream, slot, tag, ..
        } = conn;
        let io = H2Transport::new(stream, Vec::new());
        let (send, connection) = h2::client::Builder::new()
            .initial_max_send_streams(INITIAL_MAX_STREAMS)
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONN_WINDOW)
            .enable_push(false)
            // A response head larger than the data path accepts is refused by h2 already.
            .max_header_list_size(tr.max_response_header as u32)
            .handshake::<_, Bytes>(io)
            .await?;
        let counts = self.slots[u][t].borrow().idle.clone();
        let state = Rc::new(State {
            open: Cell::new(1),
            closed: Cell::new(false),
            idle_since: Cell::new(Instant::now()),
            counted_idle: Cell::new(false),
            counts,
            retired: Cell::new(false),
            send: RefCell::new(Some(send.clone())),
            policy,
            armed: Cell::new(None),
            driver: Cell::new(None),
            wakeups: Cell::new(0),
            settled: Cell::new(false),
            settle_waiters: RefCell::default(),
        });
        gauge(1);
        let driven = state.clone();
        let mut connection = connection;
        let ping = connection.ping_pong();
        monoio::spawn(async move {
            // The connection holds its target's slot for as long as it lives.
            let _slot = slot;
            let mut connection = std::pin::pin!(connection);
            monoio::select! {
                _ = settle(ping, &driven) => {}
                r = &mut connection => {
                    if let Err(e) = r {
                        tracing::debug!("upstream HTTP/2 connection ended: {e}");
                    }
                }
                _ = idle_out(&driven) => {
                    // No stream is open and none can be opened: with the last handle gone,
                    // h2 sends GOAWAY NO_ERROR and ends the connection.
                    driven.closed.set(true);
                    drop(driven.send.take());
                    let _ = monoio::time::timeout(CLOSE_GRACE, &mut connection).await;
                }
            }
            driven.closed.set(true);
            driven.set_idle(false);
            drop(driven.send.take());
            driven.settle_now();
            gauge(-1);
        });
        let mut slot = self.slots[u][t].borrow_mut();
        slot.conns.push(Conn {
            state: state.clone(),
            tag,
        });
        Ok(H2Stream {
            send,
            reused: false,
            tunnel_slot: None,
            state,
        })
    }

    /// HTTP/2 connections held to `t` (for tests and metrics).
    pub fn count(&self, u: usize, t: usize) -> usize {
        let slot = self.slots[u][t].borrow();
        slot.conns.iter().filter(|c| !c.state.closed.get()).count()
    }
}

impl Drop for Conns {
    /// A replaced configuration's connections close once their streams end.
    fn drop(&mut self) {
        for slot in self.slots.iter().flatten() {
            for c in &slot.borrow().conns {
                c.state.retired.set(true);
                c.state.nudge();
            }
        }
    }
}

/// Marks the connection settled once the peer's first SETTINGS were read: a server sends them
/// first, so the answer to a PING sent now comes after them. Then waits forever.
async fn settle(ping: Option<h2::PingPong>, state: &State) {
    if let Some(mut ping) = ping {
        let _ = ping.ping(h2::Ping::opaque()).await;
    }
    state.settle_now();
    std::future::pending::<()>().await;
}

/// Completes when the connection is to close for being idle (see [`close_idle_at`]).
async fn idle_out(state: &State) {
    loop {
        let at = state.close_at();
        if at.is_some_and(|at| at <= Instant::now()) {
            return;
        }
        state.armed.set(at);
        // Woken when it must close sooner (see `State::nudge`); else at the deadline.
        let seen = state.wakeups.get();
        let woken = poll_fn(|cx| {
            if state.wakeups.get() != seen {
                return Poll::Ready(());
            }
            state.driver.set(Some(cx.waker().clone()));
            Poll::Pending
        });
        match at {
            Some(at) => {
                let sleep = monoio::time::sleep(at.saturating_duration_since(Instant::now()));
                monoio::select! {
                    _ = sleep => {}
                    _ = woken => {}
                }
            }
            None => woken.await,
        }
    }
}

/// A dial under way (see [`Conns::dialing`]). One given up with its request (the client
/// left) is no failure: the requests waiting for it dial themselves.
pub struct Dialing<'a> {
    slot: &'a RefCell<Slot>,
    failed: bool,
}

impl Dialing<'_> {
    /// The dial or the HTTP/2 handshake failed: waiting requests look at other targets.
    pub fn fail(&mut self) {
        self.failed = true;
    }
}

impl Drop for Dialing<'_> {
    fn drop(&mut self) {
        let mut slot = self.slot.borrow_mut();
        slot.dialing -= 1;
        slot.dials_ended += 1;
        slot.last_failed = self.failed;
        for w in slot.waiters.drain(..) {
            w.wake();
        }
    }
}

/// Whether a freshly dialed connection agreed to HTTP/2: h2c targets always do; TLS ones
/// when ALPN chose `h2`.
pub fn negotiated_h2(h2c: bool, stream: &Stream) -> bool {
    match stream {
        Stream::TlsClient(tls, _) => tls.alpn_protocol() == Some(b"h2"),
        _ => h2c,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_connection_closes_as_the_pool_keys_say() {
        let now = Instant::now();
        let s = Duration::from_secs;
        let p = |keepalive, idle_timeout, max_idle, total| IdlePolicy {
            keepalive,
            idle_timeout,
            max_idle_per_worker: max_idle,
            keepalive_idle_conns: total,
        };
        // (policy, idle conns of its target, of its upstream, retired, closes after)
        let cases = [
            // The default: kept until idle_timeout.
            (p(true, Some(s(60)), 32, None), 1, 1, false, Some(s(60))),
            (p(true, None, 32, None), 1, 1, false, None),
            // keepalive: false keeps no idle connection, nor does a replaced configuration.
            (p(false, Some(s(60)), 32, None), 1, 1, false, Some(s(0))),
            (p(true, Some(s(60)), 32, None), 1, 1, true, Some(s(0))),
            // Past max_idle_per_worker (0 included) or keepalive_idle_conns: the short grace.
            (
                p(true, Some(s(60)), 1, None),
                2,
                2,
                false,
                Some(SURPLUS_GRACE),
            ),
            (p(true, None, 0, None), 1, 1, false, Some(SURPLUS_GRACE)),
            (
                p(true, Some(s(60)), 32, Some(2)),
                1,
                3,
                false,
                Some(SURPLUS_GRACE),
            ),
            (p(true, Some(s(60)), 32, Some(3)), 1, 3, false, Some(s(60))),
            // An idle_timeout shorter than the grace still wins.
            (
                p(true, Some(Duration::from_millis(200)), 0, None),
                1,
                1,
                false,
                Some(Duration::from_millis(200)),
            ),
        ];
        for (policy, target, upstream, retired, want) in cases {
            let got = close_idle_at(policy, now, target, upstream, retired);
            assert_eq!(
                got,
                want.map(|d| now + d),
                "{policy:?} idle {target}/{upstream} retired={retired}"
            );
        }
    }
}
