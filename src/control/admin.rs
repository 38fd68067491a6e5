//! The admin endpoint: a small blocking HTTP/1.1 server on its own thread, never on a worker.
//! `GET /metrics /healthz /readyz /upstreams /config`, `POST /reload`.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::config::{ListenAddr, ListenerKind, Policy, TargetAddr, TargetSource};
use crate::control::generation::Generation;
use crate::control::reload::Control;
use crate::control::state::Shared;

/// An admin request head larger than this is refused: the endpoint takes no bodies.
const MAX_ADMIN_HEAD: usize = 16 * 1024;
/// A scraper or probe that stalls this long is dropped (it must not block the next one).
const ADMIN_IO_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Admin {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Admin {
    pub fn start(
        addr: SocketAddr,
        shared: Arc<Shared>,
        control: Arc<Mutex<Control>>,
    ) -> io::Result<Admin> {
        let listener = TcpListener::bind(addr)
            .map_err(|e| io::Error::new(e.kind(), format!("admin listen {addr}: {e}")))?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("ringway-admin".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if stopping.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    if let Err(e) = serve(conn, &shared, &control) {
                        tracing::debug!("admin request failed: {e}");
                    }
                }
            })?;
        Ok(Admin {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Admin {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // A connection wakes the blocking accept so the thread sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(mut conn: TcpStream, shared: &Shared, control: &Mutex<Control>) -> io::Result<()> {
    conn.set_read_timeout(Some(ADMIN_IO_TIMEOUT))?;
    conn.set_write_timeout(Some(ADMIN_IO_TIMEOUT))?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let (method, path) = loop {
        let n = conn.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(_)) => {
                let path = req.path.unwrap_or("/");
                let path = path.split('?').next().unwrap_or("/");
                break (req.method.unwrap_or("").to_string(), path.to_string());
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_ADMIN_HEAD => {}
            _ => return respond(&mut conn, 400, "text/plain", "bad request\n"),
        }
    };
    let draining = shared.draining.load(Ordering::SeqCst);
    let gen = shared.current.load_full();
    match (method.as_str(), path.as_str()) {
        ("GET", "/healthz") => respond(&mut conn, 200, "text/plain", "ok\n"),
        ("GET", "/readyz") if draining => respond(&mut conn, 503, "text/plain", "draining\n"),
        ("GET", "/readyz") => respond(&mut conn, 200, "text/plain", "ready\n"),
        ("GET", "/metrics") => {
            let body = crate::observe::scrape::render(shared, &shared.registry);
            respond(&mut conn, 200, "text/plain; version=0.0.4", &body)
        }
        ("GET", "/upstreams") => respond(
            &mut conn,
            200,
            "application/json",
            &upstreams_json(&gen, shared),
        ),
        ("GET", "/config") => respond(&mut conn, 200, "application/json", &config_json(&gen)),
        ("POST", "/reload") => {
            // Reloads are serialized with each other and with shutdown.
            let result = control.lock().unwrap_or_else(|e| e.into_inner()).reload();
            match result {
                Ok(r) => {
                    let body = serde_json::json!({
                        "reloaded": true,
                        "generation": r.generation,
                        "listeners_added": r.listeners_added,
                        "listeners_removed": r.listeners_removed,
                        "restart_required": r.restart_required,
                    });
                    respond(&mut conn, 200, "application/json", &format!("{body}\n"))
                }
                Err(e) => {
                    let body = serde_json::json!({ "reloaded": false, "error": e });
                    respond(&mut conn, 400, "application/json", &format!("{body}\n"))
                }
            }
        }
        (_, "/healthz" | "/readyz" | "/metrics" | "/upstreams" | "/config" | "/reload") => {
            respond(&mut conn, 405, "text/plain", "method not allowed\n")
        }
        _ => respond(&mut conn, 404, "text/plain", "not found\n"),
    }
}

fn respond(conn: &mut TcpStream, status: u16, content_type: &str, body: &str) -> io::Result<()> {
    let reason = crate::error::reason_phrase(status);
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes())?;
    conn.write_all(body.as_bytes())
}

fn target_label(addr: &TargetAddr) -> String {
    match addr {
        TargetAddr::Tcp { host, .. } => host.clone(),
        TargetAddr::Unix(p) => format!("unix/{}", p.display()),
    }
}

fn upstreams_json(gen: &Generation, shared: &Shared) -> String {
    let list: Vec<serde_json::Value> = gen
        .config
        .upstreams
        .iter()
        .zip(&gen.targets)
        .map(|(u, states)| {
            let targets: Vec<serde_json::Value> = u
                .targets
                .iter()
                .zip(states)
                .map(|(t, s)| {
                    serde_json::json!({
                        "target": target_label(&t.addr),
                        "healthy": s.is_healthy(&u.health.passive),
                        "in_flight": s.in_flight.load(Ordering::Relaxed),
                        "connections": s.conns.load(Ordering::Relaxed),
                        "weight": t.weight,
                        "max_connections": t.max_connections,
                        "address": match &t.addr {
                            TargetAddr::Tcp { addr, .. } => Some(addr.to_string()),
                            TargetAddr::Unix(_) => None,
                        },
                        "source": match t.source {
                            TargetSource::Static => "static".to_string(),
                            TargetSource::Hostname => "dns".to_string(),
                            TargetSource::A => "a".to_string(),
                            TargetSource::Srv { priority } => format!("srv priority {priority}"),
                        },
                    })
                })
                .collect();
            let dns: Vec<serde_json::Value> = shared
                .dns
                .queries_of(&u.name)
                .into_iter()
                .map(|(name, q)| {
                    serde_json::json!({
                        "name": name,
                        "kind": q.kind,
                        "addresses": q.addresses,
                        "failing": q.failing,
                    })
                })
                .collect();
            serde_json::json!({
                "name": u.name,
                "policy": policy_name(u.lb.policy),
                "targets": targets,
                "dns": dns,
            })
        })
        .collect();
    serde_json::to_string_pretty(&list).unwrap_or_default() + "\n"
}

fn policy_name(p: Policy) -> &'static str {
    match p {
        Policy::Random => "random",
        Policy::RandomChoose => "random_choose",
        Policy::First => "first",
        Policy::RoundRobin => "round_robin",
        Policy::WeightedRoundRobin => "weighted_round_robin",
        Policy::LeastConn => "least_conn",
        Policy::IpHash => "ip_hash",
        Policy::ClientIpHash => "client_ip_hash",
        Policy::UriHash => "uri_hash",
        Policy::Query => "query",
        Policy::Header => "header",
        Policy::Cookie => "cookie",
        Policy::P2cEwma => "p2c_ewma",
    }
}

/// The effective configuration as JSON. It holds no secrets: the cookie policy's secret is
/// never written here (no TLS keys exist yet); redact those here when they arrive.
fn config_json(gen: &Generation) -> String {
    let config = &gen.config;
    let addr = |a: &ListenAddr| match a {
        ListenAddr::Tcp(a) => a.to_string(),
        ListenAddr::Unix(p) => format!("unix/{}", p.display()),
    };
    let listeners: Vec<serde_json::Value> = config
        .listeners
        .iter()
        .zip(&gen.addrs)
        .map(|(l, a)| {
            let (protocol, routes) = match &l.kind {
                ListenerKind::Http { routes } => ("http", routes.len()),
                ListenerKind::Tcp { .. } => ("tcp", 0),
            };
            serde_json::json!({ "name": l.name, "listen": addr(a), "protocol": protocol, "routes": routes })
        })
        .collect();
    let upstreams: Vec<serde_json::Value> = config
        .upstreams
        .iter()
        .map(|u| {
            serde_json::json!({
                "name": u.name,
                "targets": u.targets.iter().map(|t| target_label(&t.addr)).collect::<Vec<_>>(),
                "policy": policy_name(u.lb.policy),
                "retries": u.lb.retries,
                "keepalive": u.transport.keepalive,
                "max_idle_per_worker": u.transport.max_idle_per_worker,
                "dynamic": u.dynamic.as_ref().map(|d| serde_json::json!({
                    "a": d.a.as_ref().map(|(name, port)| format!("{name}:{port}")),
                    "srv": d.srv,
                    "refresh_ms": d.refresh.as_millis() as u64,
                    "resolvers": d.resolvers.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
                })),
            })
        })
        .collect();
    let doc = serde_json::json!({
        "workers": config.workers,
        "driver": format!("{:?}", config.driver).to_lowercase(),
        "shutdown_timeout_ms": config.shutdown_timeout.as_millis() as u64,
        "shutdown_delay_ms": config.shutdown_delay.as_millis() as u64,
        "admin": config.admin.map(|a| a.to_string()),
        "generation": gen.id,
        "source": config.source.as_ref().map(|p| p.display().to_string()),
        "listeners": listeners,
        "upstreams": upstreams,
    });
    serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n"
}
