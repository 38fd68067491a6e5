//! HTTP/2 client connections: detected by TLS ALPN (`h2`) or, on `h2c` listeners, by the
//! connection preface; framed, HPACK-coded and flow-controlled by the `h2` crate (run over
//! monoio through `monoio_compat`, on this worker's thread only); each stream served by the
//! HTTP/1 data path (see `stream` and `down`).
//!
//! The connection task accepts streams and spawns one task per stream; it sends GOAWAY when the
//! server drains, after a reload or when it idles past `limits.idle_timeout`, and GOAWAY ENHANCE_YOUR_CALM when the client resets more than
//! `http2.max_resets_per_s` streams in a second (rapid reset, CVE-2023-44487).

pub(crate) mod chunks;
pub mod client;
pub mod down;
pub mod head;
pub(crate) mod io;
mod stream;
mod tunnel;
pub(crate) mod upstream;
mod websocket;

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::http1::forward::Client;
use crate::net::stream::Stream;
use crate::proxy::session::{timed, timed_at, RecvBuf};
use crate::worker::catch::CatchPanic;
use crate::worker::closer::Closer;
use crate::worker::ctx::WorkerCtx;

/// What a client opens an HTTP/2 connection with (RFC 9113 §3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How often an HTTP/2 connection looks at its idle time and for a reload: both are
/// seconds-scale, so a one-second check costs nothing noticeable.
const TICK: Duration = Duration::from_secs(1);

/// How long a connection that was sent GOAWAY and has no stream left may take to close on its
/// own (the client reads the GOAWAY and closes; one that does not read is closed for it).
const GOAWAY_GRACE: Duration = Duration::from_secs(5);

/// The connection-level receive window, in stream windows: a few streams upload at full
/// speed at once; more share it (the client sees it as back-pressure, not as an error).
const CONN_WINDOW_STREAMS: u64 = 4;

/// Largest window HTTP/2 can express.
const MAX_WINDOW: u64 = (1 << 31) - 1;

/// Which protocol a new client connection speaks.
pub(crate) enum Detected {
    Http1,
    Http2,
    /// Neither is served to it (or it left before saying): close.
    Close,
}

/// Decides between HTTP/1 and HTTP/2: by ALPN on TLS; by the connection preface on plaintext
/// listeners that serve `h2c` (bytes read stay in `down` for whichever side serves them).
pub(crate) async fn detect(
    ctx: &WorkerCtx,
    listener: usize,
    stream: &mut Stream,
    down: &mut RecvBuf,
) -> Detected {
    let p = ctx.config().listeners[listener].protocols;
    if let Stream::TlsServer(tls, _) = stream {
        if tls.alpn_protocol() == Some(b"h2") {
            return Detected::Http2;
        }
        return if p.h1 {
            Detected::Http1
        } else {
            Detected::Close
        };
    }
    if !p.h2c {
        return Detected::Http1;
    }
    let deadline = ctx
        .config()
        .limits
        .header_read_timeout
        .map(|d| Instant::now() + d);
    loop {
        match preface(&down.buf) {
            Some(true) => return Detected::Http2,
            Some(false) if p.h1 => return Detected::Http1,
            Some(false) => return Detected::Close,
            None => {}
        }
        match timed_at(deadline, down.read_more(stream, PREFACE.len() + 4096)).await {
            Some(Ok(n)) if n > 0 => {}
            _ => return Detected::Close,
        }
    }
}

/// Whether `buf` starts with the HTTP/2 preface: `None` while it is a proper prefix of it.
fn preface(buf: &[u8]) -> Option<bool> {
    let n = buf.len().min(PREFACE.len());
    if buf[..n] != PREFACE[..n] {
        Some(false)
    } else if n == PREFACE.len() {
        Some(true)
    } else {
        None
    }
}

/// What every stream of one connection shares.
pub(crate) struct Conn {
    ctx: Rc<WorkerCtx>,
    socket: usize,
    listener: usize,
    peer: Option<SocketAddr>,
    /// Who the client is, worked out once for all its streams (its address as text, trust).
    client: Client,
    resets: ResetMeter,
    max_resets_per_s: u32,
    /// Fired when the client resets too many streams.
    calm: Closer,
    streams: Cell<usize>,
    /// Since when no stream has been open (`None` while one is).
    idle_since: Cell<Option<Instant>>,
}

impl Conn {
    fn note_reset(&self) {
        if self.resets.hit(Instant::now(), self.max_resets_per_s) {
            self.calm.close();
        }
    }
}

/// Client resets counted in one-second windows.
#[derive(Default)]
struct ResetMeter {
    window: Cell<Option<Instant>>,
    count: Cell<u32>,
}

impl ResetMeter {
    /// Counts one reset at `now`; `true` once more than `max` fell in the current second.
    fn hit(&self, now: Instant, max: u32) -> bool {
        match self.window.get() {
            Some(start) if now.duration_since(start) < Duration::from_secs(1) => {}
            _ => {
                self.window.set(Some(now));
                self.count.set(0);
            }
        }
        self.count.set(self.count.get() + 1);
        self.count.get() > max
    }
}

enum Event<T> {
    Stream(Option<Result<T, h2::Error>>),
    Drain,
    Calm,
    Tick,
}

/// Serves one HTTP/2 connection until the client or the server ends it. `prefix`: bytes read
/// while detecting the protocol.
pub(crate) async fn serve(
    ctx: Rc<WorkerCtx>,
    socket: usize,
    listener: usize,
    stream: Stream,
    prefix: Vec<u8>,
    client: Client,
) {
    let limits = ctx.config().listeners[listener].http2;
    let io = io::H2Transport::new(stream, prefix);
    let window = limits.initial_window as u64;
    let mut builder = h2::server::Builder::new();
    builder
        .max_concurrent_streams(limits.max_concurrent_streams)
        .initial_window_size(limits.initial_window)
        .initial_connection_window_size((window * CONN_WINDOW_STREAMS).min(MAX_WINDOW) as u32)
        .max_header_list_size(limits.max_header_list)
        // Streams reset before we even saw them count against the same budget.
        .max_pending_accept_reset_streams(limits.max_resets_per_s as usize);
    if websocket::offered(ctx.config(), listener) {
        // RFC 8441: clients may open WebSockets with extended CONNECT.
        builder.enable_connect_protocol();
    }
    let handshake = builder.handshake::<_, Bytes>(io);
    let mut h2 = match timed(ctx.config().limits.header_read_timeout, handshake).await {
        Some(Ok(h2)) => h2,
        Some(Err(e)) => {
            tracing::debug!(peer = ?client.peer, "HTTP/2 handshake failed: {e}");
            return;
        }
        None => return,
    };
    let conn = Rc::new(Conn {
        ctx: ctx.clone(),
        socket,
        listener,
        peer: client.peer,
        client,
        resets: ResetMeter::default(),
        max_resets_per_s: limits.max_resets_per_s,
        calm: Closer::default(),
        streams: Cell::new(0),
        idle_since: Cell::new(Some(Instant::now())),
    });
    let mut goaway: Option<Instant> = None;
    let mut calmed = false;
    // One timer for the connection's life, not one armed and cancelled per stream accepted.
    let start = monoio::time::Instant::now() + TICK;
    let mut tick = monoio::time::interval_at(start, TICK);
    tick.set_missed_tick_behavior(monoio::time::MissedTickBehavior::Delay);
    loop {
        let event = monoio::select! {
            s = h2.accept() => Event::Stream(s),
            _ = ctx.drain_started(), if goaway.is_none() => Event::Drain,
            _ = conn.calm.wait(), if !calmed => Event::Calm,
            _ = tick.tick() => Event::Tick,
        };
        match event {
            Event::Stream(None) => break,
            Event::Stream(Some(Err(e))) => {
                tracing::debug!(peer = ?conn.peer, "HTTP/2 connection ended: {e}");
                break;
            }
            Event::Stream(Some(Ok((req, respond)))) => spawn_stream(&conn, req, respond),
            Event::Drain => {
                h2.graceful_shutdown();
                goaway = Some(Instant::now());
            }
            Event::Calm => {
                tracing::debug!(peer = ?conn.peer, "HTTP/2 client reset streams past max_resets_per_s");
                h2.abrupt_shutdown(h2::Reason::ENHANCE_YOUR_CALM);
                calmed = true;
                goaway = Some(Instant::now());
            }
            Event::Tick if goaway.is_some() => {
                // A client that does not read never lets GOAWAY out (nor a PING flood's
                // answers): once its streams are done, it gets GOAWAY_GRACE, then the close.
                if goaway.is_some_and(|t| t.elapsed() >= GOAWAY_GRACE) && conn.streams.get() == 0 {
                    break;
                }
            }
            Event::Tick => {
                let idle = ctx.config().limits.idle_timeout;
                let idled = matches!((conn.idle_since.get(), idle), (Some(t), Some(max)) if t.elapsed() >= max);
                // After a reload the client reconnects for the new generation's settings,
                // certificates and limits; streams in flight finish on this connection.
                let reloaded = ctx.newer().is_some();
                if idled || reloaded || ctx.draining() {
                    h2.graceful_shutdown();
                    goaway = Some(Instant::now());
                }
            }
        }
    }
}

fn spawn_stream(
    conn: &Rc<Conn>,
    req: http::Request<h2::RecvStream>,
    respond: h2::server::SendResponse<Bytes>,
) {
    conn.streams.set(conn.streams.get() + 1);
    conn.idle_since.set(None);
    let conn = conn.clone();
    monoio::spawn(async move {
        let work = CatchPanic(crate::worker::catch::boxed(|| {
            stream::serve(conn.clone(), req, respond)
        }));
        monoio::select! {
            _ = work => {},
            _ = conn.ctx.closing() => {},
        }
        conn.streams.set(conn.streams.get() - 1);
        if conn.streams.get() == 0 {
            conn.idle_since.set(Some(Instant::now()));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_preface_is_recognised_byte_by_byte() {
        assert_eq!(preface(b""), None);
        assert_eq!(preface(b"PRI * HTTP/2"), None);
        assert_eq!(preface(PREFACE), Some(true));
        assert_eq!(preface(&[PREFACE, b"\0\0\x12\x04"].concat()), Some(true));
        assert_eq!(preface(b"GET / HTTP/1.1\r\n"), Some(false));
        assert_eq!(preface(b"PRI * HTTP/1.1"), Some(false));
    }

    #[test]
    fn resets_past_the_limit_within_a_second_trip_the_meter() {
        let m = ResetMeter::default();
        let t0 = Instant::now();
        assert!(!(0..3).any(|_| m.hit(t0, 3)));
        assert!(m.hit(t0 + Duration::from_millis(500), 3));
        // A new second starts a new count.
        let m = ResetMeter::default();
        for s in 0..10 {
            assert!(!m.hit(t0 + Duration::from_secs(s), 1));
        }
    }
}
