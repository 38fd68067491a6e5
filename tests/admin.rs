//! The admin endpoint: Prometheus metrics checked with a real exposition-format parser after
//! known traffic, health and readiness (flipping during a drain), upstream state, config.

#[macro_use]
mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use support::*;

fn admin_get(addr: SocketAddr, path: &str) -> (u16, String) {
    admin_request(addr, "GET", path)
}

fn admin_request(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: admin\r\n\r\n").unwrap();
    let mut out = Vec::new();
    loop {
        let mut buf = [0u8; 8192];
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => panic!("admin read: {e}"),
        }
    }
    let text = String::from_utf8(out).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head[9..12].parse().unwrap();
    (status, body.to_string())
}

fn start_with_admin(driver: Driver, extra_top: &str) -> (Proxy, Backend, SocketAddr) {
    let b1 = Backend::start("b1");
    let yaml = format!(
        "admin:\n  listen: 127.0.0.1:0\nworkers: 2\n{extra_top}{}",
        one_upstream_yaml("$B1", "")
    );
    let proxy = Proxy::start(driver, &yaml, &[("B1", b1.target())]);
    let admin = proxy.server().admin_addr().expect("admin enabled");
    (proxy, b1, admin)
}

fn sample(metrics: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    metrics
        .samples
        .iter()
        .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

fn scrape(admin: SocketAddr) -> prometheus_parse::Scrape {
    let (status, body) = admin_get(admin, "/metrics");
    assert_eq!(status, 200);
    prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string())))
        .expect("valid Prometheus text exposition")
}

driver_tests! {
    fn metrics_count_known_traffic_and_parse_as_prometheus_text(driver) {
        let (proxy, _b1, admin) = start_with_admin(driver, "");
        let mut c = proxy.client();
        for _ in 0..5 {
            assert_eq!(c.request(get_req("/", "")).status, 200);
        }
        assert_eq!(c.request(get_req("/status/503", "")).status, 503);
        drop(c);
        // A worker counts a request right after writing its response: let the last one land.
        assert!(wait_for(Duration::from_secs(2), || {
            sample(&scrape(admin), "ringway_requests_total", &[]) == 6.0
        }));
        let m = scrape(admin);
        assert_eq!(sample(&m, "ringway_requests_total", &[("listener", "web"), ("code", "2xx")]), 5.0);
        assert_eq!(sample(&m, "ringway_requests_total", &[("listener", "web"), ("code", "5xx")]), 1.0);
        // One client connection: one upstream connection, reused for the next five requests.
        assert_eq!(sample(&m, "ringway_upstream_requests_total", &[("connection_reused", "false")]), 1.0);
        assert_eq!(sample(&m, "ringway_upstream_requests_total", &[("connection_reused", "true")]), 5.0);
        assert_eq!(sample(&m, "ringway_worker_accepted_connections_total", &[]), 1.0);
        assert_eq!(sample(&m, "ringway_upstream_healthy", &[]), 1.0);
        let durations = m
            .samples
            .iter()
            .find(|s| s.metric == "ringway_request_duration_seconds")
            .expect("request duration histogram");
        match &durations.value {
            prometheus_parse::Value::Histogram(buckets) => {
                assert_eq!(buckets.last().unwrap().count, 6.0, "every request observed once");
            }
            other => panic!("not a histogram: {other:?}"),
        }
        assert_eq!(sample(&m, "ringway_build_info", &[]), 1.0);
    }
}

#[test]
fn healthz_upstreams_config_and_reload_answer() {
    let (_proxy, _b1, admin) = start_with_admin(Driver::any(), "");
    assert_eq!(admin_get(admin, "/healthz"), (200, "ok\n".into()));
    assert_eq!(admin_get(admin, "/readyz"), (200, "ready\n".into()));
    let (status, body) = admin_get(admin, "/upstreams");
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v[0]["name"], "app");
    assert_eq!(v[0]["targets"][0]["healthy"], true);
    let (status, body) = admin_get(admin, "/config");
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["workers"], 2);
    assert_eq!(v["listeners"][0]["name"], "web");
    // The file is unchanged: the reload still makes a new generation, adding nothing.
    let (status, body) = admin_request(admin, "POST", "/reload");
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["generation"], 2, "{body}");
    assert_eq!(v["listeners_added"], 0, "{body}");
    assert!(admin_get(admin, "/config").1.contains("\"generation\": 2"));
    assert_eq!(admin_request(admin, "POST", "/metrics").0, 405);
    assert_eq!(admin_get(admin, "/nope").0, 404);
}

#[test]
fn readyz_turns_503_at_once_on_shutdown_while_listeners_still_accept_during_shutdown_delay() {
    let (mut proxy, _b1, admin) = start_with_admin(Driver::any(), "shutdown_delay: 1s\n");
    let addr = proxy.addr();
    let server = proxy.take_server();
    let stopper = std::thread::spawn(move || server.shutdown());
    assert!(
        wait_for(Duration::from_secs(2), || admin_get(admin, "/readyz").0
            == 503),
        "readyz never reported the drain"
    );
    // Within shutdown_delay new connections are still served (told to close afterwards).
    let r = get(addr, "/");
    assert_eq!(r.status, 200);
    stopper.join().unwrap();
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_err() || get_fails(addr),
        "listeners are closed once the delay is over"
    );
}

/// Whether a request on a fresh connection fails (refused or closed unanswered).
fn get_fails(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return true;
    };
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut buf = [0u8; 16];
    !matches!(s.read(&mut buf), Ok(n) if n > 0)
}
