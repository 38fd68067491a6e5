//! This worker's HTTP/2 connections to upstream targets (h2c, or TLS with ALPN h2): one
//! connection per target carries many streams, up to the peer's MAX_CONCURRENT_STREAMS, then
//! another is opened. Each connection is driven by a task on the worker's own runtime; handles
//! and counters are `Rc`/`Cell`, so nothing here is shared with another thread.
//!
//! A connection the peer closed, sent GOAWAY on, or that idled past `transport.idle_timeout`
//! is marked closed and dropped from the cache at the next look. It holds its target's
//! connection slot (`max_connections`) until it ends; the streams count in flight per request
//! (`upstream::pool::InFlight`, taken by the connector), which least_conn and health read.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::client::SendRequest;
use monoio_compat::StreamWrapper;

use super::io::H2Io;
use crate::config::Transport;
use crate::net::stream::Stream;
use crate::upstream::pool::{Tag, UpConn};

/// Streams assumed allowed before the peer's SETTINGS arrive (RFC 9113 §6.5.2 recommends
/// servers allow at least 100).
const INITIAL_MAX_STREAMS: usize = 100;

/// Per-stream receive window: a 3 MiB gRPC message needs a few round trips, not fifty, and a
/// stream buffers at most this much for a client that reads slowly.
const STREAM_WINDOW: u32 = 256 * 1024;

/// Connection receive window: several streams at full speed at once.
const CONN_WINDOW: u32 = 1024 * 1024;

/// How often a connection's driver looks at its idle time.
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// What a connection's driver and its streams share.
struct State {
    /// Streams handed out and not yet finished.
    open: Cell<usize>,
    /// The connection ended, or no new stream should be opened on it.
    closed: Cell<bool>,
    /// Since when no stream is open.
    idle_since: Cell<Instant>,
}

struct Conn {
    send: SendRequest<Bytes>,
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
        let mut probe = self.send.clone();
        let mut cx = std::task::Context::from_waker(Waker::noop());
        if let Poll::Ready(Err(_)) = probe.poll_ready(&mut cx) {
            self.state.closed.set(true);
            return false;
        }
        self.state.open.get() < self.send.current_max_send_streams()
    }
}

/// The connections to one target and the dials under way to it.
#[derive(Default)]
struct Slot {
    conns: Vec<Conn>,
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
    state: Rc<State>,
}

impl Drop for H2Stream {
    fn drop(&mut self) {
        let open = self.state.open.get() - 1;
        self.state.open.set(open);
        if open == 0 {
            self.state.idle_since.set(Instant::now());
        }
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
                .map(|n| (0..n).map(|_| RefCell::default()).collect())
                .collect(),
        }
    }

    /// A stream on a connection to target `t` with room for one, if there is one. Closed
    /// connections met on the way are dropped.
    pub fn stream(&self, u: usize, t: usize, tag: Tag) -> Option<H2Stream> {
        let mut slot = self.slots[u][t].borrow_mut();
        slot.conns.retain(|c| !c.state.closed.get());
        let conn = slot.conns.iter().find(|c| c.tag == tag && c.has_room())?;
        conn.state.open.set(conn.state.open.get() + 1);
        Some(H2Stream {
            send: conn.send.clone(),
            reused: true,
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
    pub async fn open(
        &self,
        u: usize,
        t: usize,
        conn: UpConn,
        tr: &Transport,
    ) -> Result<H2Stream, h2::Error> {
        let idle_timeout = tr.idle_timeout;
        let UpConn {
            stream, slot, tag, ..
        } = conn;
        let io = StreamWrapper::new(H2Io::new(stream, Vec::new()));
        let (send, connection) = h2::client::Builder::new()
            .initial_max_send_streams(INITIAL_MAX_STREAMS)
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONN_WINDOW)
            .enable_push(false)
            // A response head larger than the data path accepts is refused by h2 already.
            .max_header_list_size(tr.max_response_header as u32)
            .handshake::<_, Bytes>(io)
            .await?;
        let state = Rc::new(State {
            open: Cell::new(1),
            closed: Cell::new(false),
            idle_since: Cell::new(Instant::now()),
        });
        let driven = state.clone();
        monoio::spawn(async move {
            // The connection holds its target's slot for as long as it lives.
            let _slot = slot;
            let mut connection = std::pin::pin!(connection);
            loop {
                monoio::select! {
                    r = &mut connection => {
                        if let Err(e) = r {
                            tracing::debug!("upstream HTTP/2 connection ended: {e}");
                        }
                        break;
                    }
                    _ = monoio::time::sleep(IDLE_CHECK) => {
                        let idle = driven.open.get() == 0
                            && idle_timeout.is_some_and(|d| driven.idle_since.get().elapsed() >= d);
                        if idle {
                            // Dropping the connection closes the socket; no stream is open.
                            break;
                        }
                    }
                }
            }
            driven.closed.set(true);
        });
        let mut slot = self.slots[u][t].borrow_mut();
        slot.conns.push(Conn {
            send: send.clone(),
            state: state.clone(),
            tag,
        });
        Ok(H2Stream {
            send,
            reused: false,
            state,
        })
    }

    /// HTTP/2 connections held to `t` (for tests and metrics).
    pub fn count(&self, u: usize, t: usize) -> usize {
        let slot = self.slots[u][t].borrow();
        slot.conns.iter().filter(|c| !c.state.closed.get()).count()
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
        Stream::TlsClient(tls, _) => tls.alpn_protocol().as_deref() == Some(b"h2"),
        _ => h2c,
    }
}
