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

/// The observation count of the one histogram series with these labels.
fn histogram_count(m: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<_> = m
        .samples
        .iter()
        .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .collect();
    assert_eq!(found.len(), 1, "{name} {labels:?}: {found:?}");
    match &found[0].value {
        prometheus_parse::Value::Histogram(buckets) => buckets.last().unwrap().count,
        other => panic!("not a histogram: {other:?}"),
    }
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
        // By listener, upstream and status class: 5 answered 2xx, 1 answered 5xx.
        for (code, n) in [("2xx", 5.0), ("5xx", 1.0)] {
            let labels = [("listener", "web"), ("upstream", "app"), ("code", code)];
            assert_eq!(histogram_count(&m, "ringway_request_duration_seconds", &labels), n, "{code}");
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

#[test]
fn metrics_label_durations_count_open_connections_and_bytes_and_report_the_process() {
    let b1 = Backend::start("b1");
    let yaml = "admin:\n  listen: 127.0.0.1:0\nworkers: 2\nlisteners:\n  - name: web\n    listen: 127.0.0.1:0\n    routes:\n      - match: { path: /local }\n        respond: { body: here }\n      - upstream: app\n  - name: db\n    listen: 127.0.0.1:0\n    protocol: tcp\n    upstream: raw\nupstreams:\n  app:\n    targets: [$B1]\n  raw:\n    targets: [$B1]\n";
    let proxy = Proxy::start(Driver::any(), yaml, &[("B1", b1.target())]);
    let admin = proxy.server().admin_addr().unwrap();
    let db = proxy.local_addr("db").unwrap();
    let req = get_req("/x", "");
    let mut held = [proxy.client(), proxy.client()];
    for c in &mut held {
        assert_eq!(c.request(&req).status, 200);
    }
    assert_eq!(held[0].request(get_req("/local", "")).status, 200);
    let mut tunnel = Client::connect(db);
    assert_eq!(tunnel.request(&req).status, 200);
    let open = |m: &prometheus_parse::Scrape, l: &str| {
        sample(m, "ringway_open_connections", &[("listener", l)])
    };
    assert!(wait_for(Duration::from_secs(5), || {
        let m = scrape(admin);
        open(&m, "web") == 2.0 && open(&m, "db") == 1.0
    }));
    drop(held);
    drop(tunnel);
    assert!(wait_for(Duration::from_secs(5), || {
        let m = scrape(admin);
        open(&m, "web") == 0.0 && open(&m, "db") == 0.0
    }));
    let m = scrape(admin);
    let web_in = sample(
        &m,
        "ringway_listener_bytes_total",
        &[("listener", "web"), ("direction", "in")],
    );
    assert!(web_in >= 3.0 * req.len() as f64, "{web_in}");
    let web_out = sample(
        &m,
        "ringway_listener_bytes_total",
        &[("listener", "web"), ("direction", "out")],
    );
    assert!(web_out > 0.0);
    // The tunnel's bytes count on db and on raw; app got web's two proxied requests.
    let db_in = sample(
        &m,
        "ringway_listener_bytes_total",
        &[("listener", "db"), ("direction", "in")],
    );
    assert_eq!(db_in, req.len() as f64);
    let app_out = sample(
        &m,
        "ringway_upstream_bytes_total",
        &[("upstream", "app"), ("direction", "out")],
    );
    assert_eq!(app_out, 2.0 * req.len() as f64);
    let raw_out = sample(
        &m,
        "ringway_upstream_bytes_total",
        &[("upstream", "raw"), ("direction", "out")],
    );
    assert_eq!(raw_out, req.len() as f64);
    // An upstream only a tcp listener uses has no HTTP series, only what tunnels have too.
    let raw_series: Vec<&str> = m
        .samples
        .iter()
        .filter(|s| s.labels.get("upstream") == Some("raw"))
        .map(|s| s.metric.as_str())
        .collect();
    for http_only in [
        "ringway_upstream_requests_total",
        "ringway_upstream_responses_total",
        "ringway_upstream_response_time_seconds",
    ] {
        assert!(
            !raw_series.contains(&http_only),
            "{http_only} for a tcp-only upstream"
        );
    }
    assert!(
        raw_series.contains(&"ringway_upstream_selected_total"),
        "{raw_series:?}"
    );
    assert!(
        sample(
            &m,
            "ringway_upstream_bytes_total",
            &[("upstream", "app"), ("direction", "in")]
        ) > 0.0
    );
    let labels = [("listener", "web"), ("upstream", "app"), ("code", "2xx")];
    assert_eq!(
        histogram_count(&m, "ringway_request_duration_seconds", &labels),
        2.0
    );
    let local = [("listener", "web"), ("upstream", ""), ("code", "2xx")];
    assert_eq!(
        histogram_count(&m, "ringway_request_duration_seconds", &local),
        1.0
    );
    // A tcp listener has no HTTP series, only its connection count.
    assert!(
        !m.samples
            .iter()
            .any(|s| s.labels.get("listener") == Some("db")
                && (s.metric == "ringway_requests_total"
                    || s.metric.starts_with("ringway_request_duration"))),
        "HTTP series for the tcp listener"
    );
    assert_eq!(
        sample(&m, "ringway_tcp_connections_total", &[("listener", "db")]),
        1.0
    );
    for name in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
    ] {
        assert!(sample(&m, name, &[]) > 0.0, "{name}");
    }
    let start = sample(&m, "process_start_time_seconds", &[]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(start <= now && start > now - 3600.0, "{start} vs {now}");
}

#[test]
fn grafana_dashboard_queries_only_series_ringway_exports() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/grafana/ringway-dashboard.json"
    );
    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let b1 = Backend::start("b1");
    let yaml = "admin:\n  listen: 127.0.0.1:0\nlisteners:\n  - name: web\n    listen: 127.0.0.1:0\n    routes: [{ upstream: app }]\n  - name: db\n    listen: 127.0.0.1:0\n    protocol: tcp\n    upstream: app\nupstreams:\n  app:\n    targets: [$B1]\n";
    let proxy = Proxy::start(Driver::any(), yaml, &[("B1", b1.target())]);
    assert_eq!(proxy.get("/").status, 200);
    let mut tunnel = Client::connect(proxy.local_addr("db").unwrap());
    assert_eq!(tunnel.request(get_req("/", "")).status, 200);
    drop(tunnel);
    let admin = proxy.server().admin_addr().unwrap();
    assert!(wait_for(Duration::from_secs(5), || sample(
        &scrape(admin),
        "ringway_tcp_connections_total",
        &[]
    ) == 1.0));
    let text = admin_get(admin, "/metrics").1;
    let exported: std::collections::HashSet<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap())
        .collect();
    let name = regex::Regex::new(r"\b(?:ringway|process)_[a-z0-9_]+").unwrap();
    let mut used = 0;
    let mut ids = std::collections::HashSet::new();
    for panel in dash["panels"].as_array().unwrap() {
        assert!(ids.insert(panel["id"].as_u64().unwrap()), "panel id twice");
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{} has no query", panel["title"]);
        for t in targets {
            let expr = t["expr"].as_str().unwrap();
            for m in name.find_iter(expr) {
                used += 1;
                assert!(
                    exported.contains(m.as_str()),
                    "{} queries {}, which /metrics does not export",
                    panel["title"],
                    m.as_str()
                );
            }
        }
    }
    assert!(used >= 15, "{used}");
    for var in dash["templating"]["list"].as_array().unwrap() {
        if let Some(q) = var["definition"].as_str() {
            for m in name.find_iter(q) {
                assert!(
                    exported.contains(m.as_str()),
                    "variable {} queries {}",
                    var["name"],
                    m.as_str()
                );
            }
        }
    }
}
