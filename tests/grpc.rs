//! gRPC end to end through ringway: a real Python `grpcio` server behind an `h2c://` target
//! and a real `grpcio` client in front, over an h2c listener (prior knowledge) and over a TLS
//! listener (ALPN h2). Unary and streaming calls, 3 MB messages, trailers (grpc-status,
//! grpc-message, custom trailing metadata), error statuses, deadlines, cancellation seen by
//! the server, and many concurrent calls over one upstream connection. The peers are
//! `tests/grpc/server.py` and `tests/grpc/client.py` (generic handlers, bytes in and out).

#[macro_use]
mod support;

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::tls::Pki;
use support::*;

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/grpc")
        .join(name)
}

/// Fails the test unless python3 with `grpcio` can run.
fn require_grpcio() {
    let o = Command::new("python3")
        .args(["-c", "import grpc"])
        .output()
        .unwrap_or_else(|e| {
            panic!("test peer python3 could not run ({e}); see tests/support/install-peers.sh")
        });
    assert!(
        o.status.success(),
        "test peer python3 with the `grpcio` package is missing (pip install grpcio): {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// `tests/grpc/server.py` on 127.0.0.1; killed when dropped.
struct GrpcServer {
    child: Child,
    port: u16,
    dir: TempDir,
}

impl GrpcServer {
    fn start() -> GrpcServer {
        require_grpcio();
        let dir = TempDir::new();
        let mut child = Command::new("python3")
            .arg(script("server.py"))
            .arg(dir.join("events"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the gRPC test server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("PORT ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("the gRPC test server did not start: {line:?}"));
        GrpcServer { child, port, dir }
    }

    fn target(&self) -> String {
        format!("h2c://127.0.0.1:{}", self.port)
    }

    fn events(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("events"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The client ports of the calls it served: one per upstream connection ringway used.
    fn connections(&self) -> HashSet<String> {
        self.events()
            .iter()
            .filter_map(|e| e.split_once(" ipv4:").map(|(_, peer)| peer.to_string()))
            .collect()
    }
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs one scenario of `tests/grpc/client.py` against `addr` (over TLS to `a.test` when a CA
/// is given) and returns its verdict, the last line it printed.
fn call(addr: &str, scenario: &str, ca: Option<&Path>) -> String {
    let mut cmd = Command::new("python3");
    cmd.arg(script("client.py")).arg(addr).arg(scenario);
    if let Some(ca) = ca {
        cmd.arg(ca);
    }
    let o = cmd.output().expect("run the gRPC test client");
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "gRPC {scenario} failed: {out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    out.lines().last().unwrap_or_default().to_string()
}

const H2C_EDGE: &str = "listeners:\n  - name: web\n    listen: 127.0.0.1:0\n    protocols: [h1, h2c]\n    routes:\n      - upstream: grpc\nupstreams:\n  grpc:\n    targets: [\"$G\"]\n";

fn h2c_edge(driver: Driver, server: &GrpcServer) -> Proxy {
    Proxy::start(driver, H2C_EDGE, &[("G", server.target())])
}

/// Every kind of call, with the verdict `client.py` prints when it went as it should.
const CALLS: [(&str, &str); 7] = [
    ("unary", "ok unary OK"),
    ("big", "ok big"),
    ("server_stream", "ok server_stream 50"),
    ("client_stream", "ok client_stream 30:3000000"),
    ("bidi", "ok bidi 10"),
    ("error", "ok error NOT_FOUND"),
    ("deadline", "ok deadline DEADLINE_EXCEEDED"),
];

driver_tests! {
    fn every_kind_of_grpc_call_passes_from_an_h2c_listener_to_an_h2c_upstream(driver) {
        let server = GrpcServer::start();
        let proxy = h2c_edge(driver, &server);
        let addr = proxy.addr().to_string();
        for (scenario, verdict) in CALLS {
            assert_eq!(call(&addr, scenario, None), verdict);
        }
        // grpc-timeout reached the server: it knew its deadline (well under a second left).
        let left: Vec<f64> = server
            .events()
            .iter()
            .filter_map(|e| e.strip_prefix("deadline ")?.parse().ok())
            .collect();
        assert!(matches!(left[..], [l] if l > 0.0 && l < 1.0), "{left:?}");
        // One upstream connection carried every call.
        assert_eq!(server.connections().len(), 1, "{:?}", server.events());
    }

    fn grpc_calls_from_a_tls_h2_listener_reach_an_h2c_upstream(driver) {
        let server = GrpcServer::start();
        let dir = TempDir::new();
        let pki = Pki::new(dir.path(), "edge");
        pki.server("a", &["a.test"]);
        let yaml = "listeners:\n  - name: web\n    listen: 127.0.0.1:0\n    tls:\n      certificates: [{ cert: $CERT, key: $KEY }]\n    routes:\n      - upstream: grpc\nupstreams:\n  grpc:\n    targets: [\"$G\"]\n";
        let proxy = Proxy::start(
            driver,
            yaml,
            &[
                ("G", server.target()),
                ("CERT", dir.join("a.pem").display().to_string()),
                ("KEY", dir.join("a.key").display().to_string()),
            ],
        );
        let addr = proxy.addr().to_string();
        for (scenario, verdict) in CALLS {
            assert_eq!(call(&addr, scenario, Some(&pki.ca_file)), verdict);
        }
    }

    fn a_call_the_client_cancels_is_seen_cancelled_by_the_server(driver) {
        let server = GrpcServer::start();
        let proxy = h2c_edge(driver, &server);
        assert_eq!(call(&proxy.addr().to_string(), "cancel", None), "ok cancel CANCELLED");
        // The server's handler would sleep 30 s: only ringway's RST_STREAM ends it this soon.
        let cancelled = wait_for(Duration::from_secs(10), || {
            server.events().iter().any(|e| e == "cancelled Wait")
        });
        assert!(cancelled, "the server never saw the cancel: {:?}", server.events());
    }

    fn many_concurrent_calls_share_one_upstream_connection(driver) {
        let server = GrpcServer::start();
        let proxy = h2c_edge(driver, &server);
        assert_eq!(call(&proxy.addr().to_string(), "many", None), "ok many 200");
        let conns = server.connections();
        assert!(!conns.is_empty() && conns.len() <= 2, "200 calls used {} upstream connections", conns.len());
    }

    fn least_conn_counts_a_stream_held_open_on_a_shared_connection(driver) {
        let (a, b) = (GrpcServer::start(), GrpcServer::start());
        let yaml = "listeners:\n  - name: web\n    listen: 127.0.0.1:0\n    protocols: [h1, h2c]\n    routes:\n      - upstream: grpc\nupstreams:\n  grpc:\n    targets: [\"$A\", \"$B\"]\n    lb: { policy: least_conn }\n";
        let proxy = Proxy::start(driver, yaml, &[("A", a.target()), ("B", b.target())]);
        let addr = proxy.addr().to_string();
        let mut hold = Command::new("python3")
            .arg(script("client.py"))
            .arg(&addr)
            .arg("hold")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run the gRPC test client");
        let mut out = BufReader::new(hold.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "holding");
        let (held, other) = if a.events().iter().any(|e| e.starts_with("Wait")) { (&a, &b) } else { (&b, &a) };
        for _ in 0..6 {
            assert_eq!(call(&addr, "unary", None), "ok unary OK");
        }
        let echoes = |s: &GrpcServer| s.events().iter().filter(|e| e.starts_with("Echo")).count();
        assert_eq!((echoes(held), echoes(other)), (0, 6), "the held stream counts as in flight");
        drop(hold.stdin.take());
        line.clear();
        out.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ok hold");
        assert!(hold.wait().unwrap().success());
    }

    fn an_http1_client_gets_grpc_trailers_in_the_chunked_trailer_section(driver) {
        let server = GrpcServer::start();
        let proxy = h2c_edge(driver, &server);
        let dir = TempDir::new();
        // One gRPC message: no compression, length 5, "hello".
        let msg = dir.join("msg");
        std::fs::write(&msg, b"\x00\x00\x00\x00\x05hello").unwrap();
        let o = Command::new("curl")
            .args(["-sS", "--max-time", "20", "--raw", "--http1.1", "-D", "-"])
            .args(["-H", "content-type: application/grpc", "-H", "te: trailers"])
            .arg("--data-binary")
            .arg(format!("@{}", msg.display()))
            .arg(format!("http://{}/test.Svc/Echo", proxy.addr()))
            .output()
            .expect("test peer `curl` could not run; see tests/support/install-peers.sh");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let out = String::from_utf8_lossy(&o.stdout).to_lowercase();
        assert!(out.contains("transfer-encoding: chunked\r\n"), "{out}");
        // The echoed message, then the last chunk and the trailers gRPC's status rides in.
        let tail = out.split("hello\r\n").nth(1).unwrap_or_else(|| panic!("{out}"));
        assert!(tail.starts_with("0\r\ngrpc-status: 0\r\n"), "{tail:?}");
        assert!(tail.contains("x-trailer: yes\r\n") && tail.ends_with("\r\n\r\n"), "{tail:?}");
    }
}
