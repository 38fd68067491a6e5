//! Active health checks. One control thread (not one per worker) probes every target of every
//! upstream with `health.active`, once per interval, and publishes the verdict through
//! `TargetShared::healthy`; workers see it on their next selection. Probes use plain blocking
//! std sockets with timeouts: this thread is off the data path.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::config::{ActiveHealth, Config, TargetAddr};
use crate::upstream::balance::SharedTargets;
use crate::upstream::target::{dial_name, TargetShared};

/// Response bytes a probe reads at most: enough for a status page, bounded against a target
/// that streams forever.
const MAX_PROBE_RESPONSE: usize = 64 * 1024;
/// Read size for probe responses.
const PROBE_READ: usize = 4096;

/// The running checker; `stop` (or drop) ends the thread.
pub struct Checker {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Checker {
    /// Starts the control thread when some upstream has active health checks.
    pub fn start(config: Arc<Config>, targets: SharedTargets) -> io::Result<Option<Checker>> {
        let probes: Vec<Probe> = config
            .upstreams
            .iter()
            .zip(targets)
            .filter(|(u, _)| u.health.active.is_some())
            .flat_map(|(u, shared)| {
                let active = Arc::new(u.health.active.clone().expect("filtered above"));
                // TLS targets are probed over TLS, verified as the data path verifies them
                // (validation already built this config once, so it cannot fail here).
                let settings = u.transport.tls.clone();
                let proxy = u.transport.forward_proxy.clone();
                let client = settings
                    .as_ref()
                    .and_then(|s| crate::net::tls::client_config(s).ok())
                    .map(Arc::new);
                u.targets.iter().zip(shared).map(move |(t, shared)| {
                    let tls = match (&t.addr, &settings, &client) {
                        (TargetAddr::Tcp { host, .. }, Some(s), Some(c)) if t.tls => {
                            crate::net::tls::server_name(s, host)
                                .ok()
                                .map(|n| (c.clone(), n))
                        }
                        _ => None,
                    };
                    let mut probe = Probe::new(&u.name, &t.addr, active.clone(), shared, tls);
                    probe.also_at(&t.fallbacks, active.port);
                    if let Some(fp) = &proxy {
                        probe.through(fp);
                    }
                    probe
                })
            })
            .collect();
        if probes.is_empty() {
            return Ok(None);
        }
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("ringway-health".into())
                .spawn(move || run(probes, &stop))?
        };
        Ok(Some(Checker {
            stop,
            thread: Some(thread),
        }))
    }

    /// Stops the thread; a probe in progress finishes first (bounded by its timeout).
    pub fn stop(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        let (flag, cv) = &*self.stop;
        *flag.lock().unwrap_or_else(|e| e.into_inner()) = true;
        cv.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Checker {
    fn drop(&mut self) {
        self.stop_now();
    }
}

enum ProbeAddr {
    /// The target's address, then the other addresses of its name (`dial_fallback_delay`),
    /// tried in turn in RFC 8305's order.
    Tcp(Vec<SocketAddr>),
    /// Through an `http://` or `socks5://` forward proxy, to the target's host and port.
    Proxied(crate::config::ForwardProxy, String, u16),
    Unix(PathBuf),
}

/// One target's checker state (owned by the control thread, so plain fields).
/// What a TLS probe needs: the upstream's client config and the name to verify.
type ProbeTls = (
    Arc<rustls::ClientConfig>,
    rustls::pki_types::ServerName<'static>,
);

struct Probe {
    tls: Option<ProbeTls>,
    upstream: String,
    target: String,
    addr: ProbeAddr,
    /// Host header value unless `headers` overrides it.
    host: String,
    cfg: Arc<ActiveHealth>,
    shared: Arc<TargetShared>,
    next: Instant,
    fails: u32,
    passes: u32,
}

impl Probe {
    /// Adds the other addresses of a hostname target (on the probe `port` when one is set).
    fn also_at(&mut self, fallbacks: &[SocketAddr], port: u16) {
        if let ProbeAddr::Tcp(addrs) = &mut self.addr {
            addrs.extend(fallbacks.iter().map(|a| match port {
                0 => *a,
                p => SocketAddr::new(a.ip(), p),
            }));
            *addrs = crate::upstream::eyeballs::order(addrs);
        }
    }

    /// Probes through `fp` (not for `https://` proxies: those targets are probed directly).
    fn through(&mut self, fp: &crate::config::ForwardProxy) {
        if fp.kind == crate::config::ProxyKind::Https {
            return;
        }
        if let ProbeAddr::Tcp(addrs) = &self.addr {
            let port = addrs[0].port();
            let host = crate::net::tls::host_of(&self.host).to_string();
            self.addr = ProbeAddr::Proxied(fp.clone(), host, port);
        }
    }

    fn new(
        upstream: &str,
        addr: &TargetAddr,
        cfg: Arc<ActiveHealth>,
        shared: Arc<TargetShared>,
        tls: Option<ProbeTls>,
    ) -> Probe {
        let target = dial_name(addr);
        let (addr, host) = match addr {
            TargetAddr::Tcp { host, addr } => {
                let mut a = *addr;
                if cfg.port != 0 {
                    a.set_port(cfg.port);
                }
                let host = match (cfg.port, host.rsplit_once(':')) {
                    (0, _) | (_, None) => host.clone(),
                    (p, Some((h, _))) => format!("{h}:{p}"),
                };
                (ProbeAddr::Tcp(vec![a]), host)
            }
            TargetAddr::Unix(p) => (ProbeAddr::Unix(p.clone()), "localhost".to_string()),
        };
        Probe {
            tls,
            upstream: upstream.to_string(),
            target,
            addr,
            host,
            cfg,
            shared,
            next: Instant::now(),
            fails: 0,
            passes: 0,
        }
    }

    /// Runs one probe and folds its result into the fails/passes hysteresis.
    fn check(&mut self) {
        let result = probe(&self.addr, &self.host, &self.cfg, self.tls.as_ref());
        let up = self.shared.healthy.load(Ordering::Relaxed);
        if self.shared.unprobed.swap(false, Ordering::Relaxed) && result.is_ok() {
            // A target new from DNS: its first good probe lets it take traffic.
            self.passes = 1;
            self.shared.healthy.store(true, Ordering::Relaxed);
            tracing::info!(
                upstream = %self.upstream, target = %self.target,
                "new target is up: its first health check passed"
            );
            return;
        }
        match result {
            Ok(()) => {
                self.fails = 0;
                self.passes = self.passes.saturating_add(1);
                if !up && self.passes >= self.cfg.passes {
                    self.shared.healthy.store(true, Ordering::Relaxed);
                    tracing::info!(
                        upstream = %self.upstream, target = %self.target,
                        "target is up: {} passing health checks in a row", self.passes
                    );
                }
            }
            Err(reason) => {
                self.passes = 0;
                self.fails = self.fails.saturating_add(1);
                if up && self.fails >= self.cfg.fails {
                    self.shared.healthy.store(false, Ordering::Relaxed);
                    self.shared.active_marks.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        upstream = %self.upstream, target = %self.target,
                        "target is down: {} failed health checks in a row, last: {reason}",
                        self.fails
                    );
                } else {
                    tracing::debug!(
                        upstream = %self.upstream, target = %self.target,
                        "health check failed: {reason}"
                    );
                }
            }
        }
    }
}

fn run(mut probes: Vec<Probe>, stop: &(Mutex<bool>, Condvar)) {
    let (flag, cv) = stop;
    loop {
        let now = Instant::now();
        for p in probes.iter_mut().filter(|p| p.next <= now) {
            if *flag.lock().unwrap_or_else(|e| e.into_inner()) {
                return;
            }
            p.check();
            // Next probe one interval after this one was due; a slow round does not pile up.
            p.next = (p.next + p.cfg.interval).max(Instant::now());
        }
        let next = probes
            .iter()
            .map(|p| p.next)
            .min()
            .expect("at least one probe");
        let mut stopped = flag.lock().unwrap_or_else(|e| e.into_inner());
        while !*stopped {
            let now = Instant::now();
            if now >= next {
                break;
            }
            stopped = cv
                .wait_timeout(stopped, next - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        if *stopped {
            return;
        }
    }
}

/// A probe connection: plain TCP, Unix, or TLS over TCP.
enum Conn {
    Tcp(TcpStream),
    Unix(UnixStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Conn {
    fn set_timeouts(&self, t: Duration) -> io::Result<()> {
        let t = Some(t.max(Duration::from_millis(1)));
        match self {
            Conn::Tcp(s) => {
                s.set_read_timeout(t)?;
                s.set_write_timeout(t)
            }
            Conn::Unix(s) => {
                s.set_read_timeout(t)?;
                s.set_write_timeout(t)
            }
            Conn::Tls(s) => {
                s.sock.set_read_timeout(t)?;
                s.sock.set_write_timeout(t)
            }
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.read(buf),
            Conn::Unix(s) => s.read(buf),
            Conn::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.write(buf),
            Conn::Unix(s) => s.write(buf),
            Conn::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Tls(s) => s.flush(),
            _ => Ok(()),
        }
    }
}

/// Connects to the first of `addrs` that answers, each given Go's share of `timeout` (a
/// hostname target's dead first address must not use up the whole probe).
fn connect_any(addrs: &[SocketAddr], timeout: Duration) -> std::io::Result<TcpStream> {
    let started = Instant::now();
    let mut last = std::io::Error::other("no address to probe");
    for (i, a) in addrs.iter().enumerate() {
        let left = timeout.saturating_sub(started.elapsed());
        let share = crate::upstream::eyeballs::attempt_limit(Some(left), addrs.len() - i)
            .unwrap_or(left)
            .max(Duration::from_millis(1));
        match TcpStream::connect_timeout(a, share) {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// A tunnel to `host:port` through `fp`, all within `timeout`.
fn connect_through(
    fp: &crate::config::ForwardProxy,
    host: &str,
    port: u16,
    timeout: Duration,
) -> std::io::Result<TcpStream> {
    let mut tcp = TcpStream::connect_timeout(&fp.addr, timeout)?;
    tcp.set_read_timeout(Some(timeout))?;
    tcp.set_write_timeout(Some(timeout))?;
    let to = crate::upstream::forward::Through { host, port };
    crate::upstream::forward::open_blocking(fp, &mut tcp, &to)?;
    Ok(tcp)
}

/// One probe: a connect (no `uri`) or an HTTP request, all within `timeout`; `Err` says why
/// it failed.
fn probe(
    addr: &ProbeAddr,
    host: &str,
    cfg: &ActiveHealth,
    tls: Option<&ProbeTls>,
) -> Result<(), String> {
    let started = Instant::now();
    let deadline = started + cfg.timeout;
    let remaining = || deadline.saturating_duration_since(Instant::now());
    let mut conn = match addr {
        ProbeAddr::Tcp(addrs) => connect_any(addrs, cfg.timeout).map(Conn::Tcp),
        ProbeAddr::Proxied(fp, host, port) => {
            connect_through(fp, host, *port, cfg.timeout).map(Conn::Tcp)
        }
        ProbeAddr::Unix(p) => UnixStream::connect(p).map(Conn::Unix),
    }
    .map_err(|e| format!("connect: {e}"))?;
    if let (Some((client, name)), Conn::Tcp(tcp)) = (tls, &conn) {
        let tcp = tcp.try_clone().map_err(|e| e.to_string())?;
        let mut session = rustls::ClientConnection::new(client.clone(), name.clone())
            .map_err(|e| format!("TLS: {e}"))?;
        let mut sock = tcp;
        let t = Some(remaining().max(Duration::from_millis(1)));
        sock.set_read_timeout(t).map_err(|e| e.to_string())?;
        sock.set_write_timeout(t).map_err(|e| e.to_string())?;
        while session.is_handshaking() {
            session
                .complete_io(&mut sock)
                .map_err(|e| format!("TLS handshake: {}", crate::net::tls::failure_reason(&e)))?;
        }
        conn = Conn::Tls(Box::new(rustls::StreamOwned::new(session, sock)));
    }
    if let Some(uri) = &cfg.uri {
        let mut req = format!("{} {uri} HTTP/1.1\r\n", cfg.method);
        if !cfg
            .headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("host"))
        {
            req.push_str(&format!("Host: {host}\r\n"));
        }
        for (n, v) in &cfg.headers {
            req.push_str(&format!("{n}: {v}\r\n"));
        }
        req.push_str("User-Agent: ringway-health-check\r\nConnection: close\r\n\r\n");
        conn.set_timeouts(remaining()).map_err(|e| e.to_string())?;
        conn.write_all(req.as_bytes())
            .map_err(|e| format!("send: {e}"))?;
        let (status, body) = read_response(&mut conn, cfg.method == "HEAD", &remaining)?;
        if !cfg.expect_status.contains(status) {
            return Err(format!("status {status} is not the expected one"));
        }
        if let Some(re) = &cfg.body {
            if !re.is_match(&String::from_utf8_lossy(&body)) {
                return Err(format!("body does not match /{re}/"));
            }
        }
    }
    let took = started.elapsed();
    match cfg.max_latency {
        Some(max) if took > max => Err(format!("took {took:?}, over max_latency {max:?}")),
        _ => Ok(()),
    }
}

/// Reads a response until its body is complete (by Content-Length), the target closes, or
/// `MAX_PROBE_RESPONSE` bytes arrived. Returns the status and the body bytes (chunked bodies
/// are matched with their chunk-size lines left in; a body regex still finds its text).
fn read_response(
    conn: &mut Conn,
    head_only: bool,
    remaining: &impl Fn() -> Duration,
) -> Result<(u16, Vec<u8>), String> {
    let mut buf = Vec::with_capacity(PROBE_READ);
    let mut parsed: Option<(u16, usize, Option<usize>)> = None;
    loop {
        if let Some((status, head_len, len)) = parsed {
            let have = buf.len() - head_len;
            if head_only || len.is_some_and(|l| have >= l) {
                let end = head_len + len.unwrap_or(0).min(have);
                return Ok((
                    status,
                    buf[head_len..if head_only { head_len } else { end }].to_vec(),
                ));
            }
        }
        if buf.len() >= MAX_PROBE_RESPONSE {
            return match parsed {
                Some((status, head_len, _)) => Ok((status, buf.split_off(head_len))),
                None => Err("response head too large".into()),
            };
        }
        let t = remaining();
        if t.is_zero() {
            return Err("timed out".into());
        }
        conn.set_timeouts(t).map_err(|e| e.to_string())?;
        let at = buf.len();
        buf.resize(at + PROBE_READ, 0);
        let n = match conn.read(&mut buf[at..]) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err("timed out".into())
            }
            Err(e) => return Err(format!("read: {e}")),
        };
        buf.truncate(at + n);
        if parsed.is_none() {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut resp = httparse::Response::new(&mut headers);
            match resp.parse(&buf) {
                Ok(httparse::Status::Complete(head_len)) => {
                    let status = resp.code.unwrap_or(0);
                    let len = resp
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                        .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok());
                    parsed = Some((status, head_len, len));
                    continue;
                }
                Ok(httparse::Status::Partial) => {}
                Err(e) => return Err(format!("malformed response: {e}")),
            }
        }
        if n == 0 {
            return match parsed {
                Some((status, head_len, _)) => Ok((status, buf.split_off(head_len))),
                None => Err("closed before a response".into()),
            };
        }
    }
}
