//! Shared integration-test support: real backends ([`backend`]), a raw client ([`client`]) and
//! a proxy started from YAML text through the library ([`Proxy`]).
//!
//! Every test file does `#[macro_use] mod support;`; not every file uses every helper.
#![allow(dead_code, unused_macros, unused_imports)]

pub mod backend;
pub mod client;
pub mod connect_proxy;
pub mod dns;
pub mod fixed;
pub mod l4;
pub mod nginx;
pub mod process;
pub mod socks5;
pub mod streaming;
pub mod targets;
pub mod tls;

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

pub use backend::{pattern, refused_addr, Backend, Options as BackendOptions, Request};
pub use client::{
    expect_early_401, get, get_req, head_content_length, start_upload, Client, ReadError, Response,
};
pub use fixed::FixedBackend;

use ringway::control::Server;

/// The event loop a proxy under test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    IoUring,
    Epoll,
}

impl Driver {
    pub fn yaml(self) -> &'static str {
        match self {
            Driver::IoUring => "io_uring",
            Driver::Epoll => "epoll",
        }
    }

    /// io_uring when this machine has it, else epoll: for tests that need only one driver.
    pub fn any() -> Driver {
        if ringway::worker::io_uring_available() {
            Driver::IoUring
        } else {
            Driver::Epoll
        }
    }

    /// `Some(IoUring)`, or `None` after printing (uncaptured) why this test half is skipped.
    pub fn io_uring_or_skip(test: &str) -> Option<Driver> {
        if ringway::worker::io_uring_available() {
            Some(Driver::IoUring)
        } else {
            // Written straight to the process's stderr so the harness does not swallow it.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {test}::io_uring: io_uring is unavailable on this machine (kernel or seccomp)"
            );
            None
        }
    }
}

/// Makes the test binary's global allocator the system allocator counting live heap bytes in
/// `LIVE`: for tests that measure what the proxy (running in-process) holds.
#[allow(unused_macros)]
macro_rules! live_bytes_allocator {
    () => {
        struct Counting;

        static LIVE: std::sync::atomic::AtomicIsize = std::sync::atomic::AtomicIsize::new(0);

        // SAFETY: forwards every call to the system allocator unchanged; only counts live bytes.
        unsafe impl std::alloc::GlobalAlloc for Counting {
            unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
                LIVE.fetch_add(layout.size() as isize, std::sync::atomic::Ordering::Relaxed);
                // SAFETY: same contract as our caller's.
                unsafe { std::alloc::System.alloc(layout) }
            }
            unsafe fn realloc(
                &self,
                ptr: *mut u8,
                layout: std::alloc::Layout,
                new_size: usize,
            ) -> *mut u8 {
                LIVE.fetch_add(
                    new_size as isize - layout.size() as isize,
                    std::sync::atomic::Ordering::Relaxed,
                );
                // SAFETY: same contract as our caller's.
                unsafe { std::alloc::System.realloc(ptr, layout, new_size) }
            }
            unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
                LIVE.fetch_sub(layout.size() as isize, std::sync::atomic::Ordering::Relaxed);
                // SAFETY: same contract as our caller's.
                unsafe { std::alloc::System.dealloc(ptr, layout) }
            }
        }

        #[global_allocator]
        static GLOBAL: Counting = Counting;
    };
}

/// Defines each test twice, as `NAME::io_uring` and `NAME::epoll`:
///
/// ```ignore
/// driver_tests! {
///     fn get_reaches_backend(driver) { ... }
/// }
/// ```
macro_rules! driver_tests {
    ($( $(#[$meta:meta])* fn $name:ident($driver:ident) $body:block )*) => {$(
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            fn run($driver: $crate::support::Driver) $body

            #[test]
            fn io_uring() {
                if let Some(d) = $crate::support::Driver::io_uring_or_skip(module_path!()) {
                    run(d);
                }
            }

            #[test]
            fn epoll() {
                run($crate::support::Driver::Epoll);
            }
        }
    )*};
}

/// A directory under the system temp dir, removed on drop; short paths (Unix sockets).
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new() -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let path = std::env::temp_dir().join(format!(
            "rw-{}-{}-{nanos:x}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&path).unwrap();
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Writes `text` to `name` in this directory and returns the path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Replaces each `$NAME` in `yaml` (longest names first, so `$B10` is not read as `$B1`).
pub fn subst(yaml: &str, vars: &[(&str, String)]) -> String {
    let mut vars: Vec<&(&str, String)> = vars.iter().collect();
    vars.sort_by_key(|(k, _)| std::cmp::Reverse(k.len()));
    let mut out = yaml.to_string();
    for (k, v) in vars {
        out = out.replace(&format!("${k}"), v);
    }
    out
}

/// Top-level settings every test proxy gets unless its YAML sets them itself.
fn with_test_defaults(yaml: &str, driver: Driver) -> String {
    let defaults = [
        ("driver", driver.yaml().to_string()),
        ("workers", "1".to_string()),
        ("pin_workers", "false".to_string()),
        ("shutdown_timeout", "5s".to_string()),
    ];
    let mut out = String::new();
    for (key, value) in defaults {
        let set = yaml.lines().any(|l| l.starts_with(&format!("{key}:")));
        if !set {
            out.push_str(&format!("{key}: {value}\n"));
        }
    }
    out.push_str(yaml);
    out
}

/// A proxy started through the library from YAML text.
pub struct Proxy {
    server: Option<Server>,
    /// The TCP address of the listener named `web` (if there is one).
    pub addr: Option<SocketAddr>,
    pub yaml: String,
    /// Holds the config file a reload re-reads (`rewrite_config`).
    dir: TempDir,
    driver: Driver,
}

impl Proxy {
    /// Parses `yaml` (after `$NAME` substitution and the test defaults) and starts it; panics
    /// with the config error when it does not parse.
    pub fn start(driver: Driver, yaml: &str, vars: &[(&str, String)]) -> Proxy {
        let yaml = with_test_defaults(&subst(yaml, vars), driver);
        // From a file, as `ringway run` does, so that reloads have something to re-read.
        let dir = TempDir::new();
        let path = dir.write("ringway.yaml", &yaml);
        let config = ringway::config::Config::load(&path)
            .unwrap_or_else(|e| panic!("test config did not parse: {e}\n--- config ---\n{yaml}"));
        let server = Server::start(config)
            .unwrap_or_else(|e| panic!("Server::start failed: {e}\n--- config ---\n{yaml}"));
        let addr = server.local_addr("web");
        Proxy {
            server: Some(server),
            addr,
            yaml,
            dir,
            driver,
        }
    }

    /// The config file's text as the proxy reads it (test defaults included).
    pub fn config_text(&self) -> String {
        std::fs::read_to_string(self.dir.join("ringway.yaml")).unwrap()
    }

    /// Replaces the config file with `yaml` (after substitution and the test defaults, as in
    /// `start`); the next reload reads it.
    pub fn rewrite_config(&self, yaml: &str, vars: &[(&str, String)]) {
        let yaml = with_test_defaults(&subst(yaml, vars), self.driver);
        self.dir.write("ringway.yaml", &yaml);
    }

    /// The `web` listener's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
            .expect("the test config has a TCP listener named web")
    }

    pub fn local_addr(&self, listener: &str) -> Option<SocketAddr> {
        self.server.as_ref().unwrap().local_addr(listener)
    }

    /// A new client connection to `web`.
    pub fn client(&self) -> Client {
        Client::connect(self.addr())
    }

    /// GET `path` on a fresh connection (Host `test.local`, `Connection: close`).
    pub fn get(&self, path: &str) -> Response {
        get(self.addr(), path)
    }

    /// Graceful shutdown: drains and joins the workers. Fails the test when that takes more
    /// than `SHUTDOWN_LIMIT` (the workers are then left behind, not waited for).
    pub fn shutdown(mut self) {
        if let Some(s) = self.server.take() {
            if let Err(msg) = shutdown_bounded(s) {
                panic!("{msg}");
            }
        }
    }

    /// The running server (counters such as spliced bytes; TLS reload in-process).
    pub fn server(&self) -> &Server {
        self.server.as_ref().expect("server still running")
    }

    /// Takes the server out, e.g. to shut it down from another thread.
    pub fn take_server(&mut self) -> Server {
        self.server.take().expect("server still running")
    }
}

/// How long `Server::shutdown` may take in a test (the test configs use `shutdown_timeout: 5s`).
pub const SHUTDOWN_LIMIT: Duration = Duration::from_secs(8);

/// Runs `server.shutdown()` on a thread; `Err` when it has not returned within `SHUTDOWN_LIMIT`.
pub fn shutdown_bounded(server: Server) -> Result<Duration, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let start = std::time::Instant::now();
    std::thread::spawn(move || {
        server.shutdown();
        let _ = tx.send(());
    });
    match rx.recv_timeout(SHUTDOWN_LIMIT) {
        Ok(()) => Ok(start.elapsed()),
        Err(_) => Err(format!(
            "Server::shutdown() did not return within {SHUTDOWN_LIMIT:?}"
        )),
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            if let Err(msg) = shutdown_bounded(s) {
                if !std::thread::panicking() {
                    panic!("{msg}");
                }
            }
        }
    }
}

/// The usual single-upstream config: listener `web` routing everything to upstream `app`
/// with the given targets (a YAML flow list body, e.g. `$B1, $B2`) and extra upstream keys
/// (indented lines under `app:`, may be empty).
pub fn one_upstream_yaml(targets: &str, upstream_extra: &str) -> String {
    format!(
        "listeners:\n  - name: web\n    listen: 127.0.0.1:0\n    routes:\n      - upstream: app\nupstreams:\n  app:\n    targets: [{targets}]\n{upstream_extra}"
    )
}

/// Starts one backend `b1` and a proxy sending everything to it.
pub fn proxy_to_one_backend(driver: Driver) -> (Proxy, Backend) {
    let b1 = Backend::start("b1");
    let proxy = Proxy::start(
        driver,
        &one_upstream_yaml("$B1", ""),
        &[("B1", b1.target())],
    );
    (proxy, b1)
}

/// `ringway_worker_receive_buffers` summed over workers: connections holding a receive buffer
/// (busy ones; a parked connection holds none).
pub fn receive_buffers(admin: SocketAddr) -> u64 {
    use std::io::Read as _;
    let mut s = std::net::TcpStream::connect(admin).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: admin\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text.lines()
        .filter(|l| l.starts_with("ringway_worker_receive_buffers{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

/// Waits (polling every 5 ms, at most `timeout`) for `cond`; false when it never held.
pub fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Runs `f` on a thread and fails the test if it does not finish within `timeout`.
pub fn within<T: Send + 'static>(
    timeout: Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(timeout) {
        Ok(v) => v,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("{what} did not finish within {timeout:?}")
        }
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => panic!("{what} panicked"),
    }
}
