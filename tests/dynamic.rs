//! Dynamic upstreams: targets from a real DNS server (dnsmasq on a loopback port), backends on
//! 127.0.0.2, 127.0.0.3, ...

#[macro_use]
mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use support::dns::{port_free_on, Dnsmasq};
use support::*;

fn admin_get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// `/upstreams` as JSON.
fn upstreams(proxy: &Proxy) -> serde_json::Value {
    let admin = proxy.server().admin_addr().expect("admin enabled");
    let text = admin_get(admin, "/upstreams");
    let body = text.split_once("\r\n\r\n").expect("a response").1;
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// The addresses of upstream `api`'s targets that are healthy now.
fn healthy_addresses(proxy: &Proxy) -> Vec<String> {
    let u = upstreams(proxy);
    let targets = u[0]["targets"].as_array().cloned().unwrap_or_default();
    targets
        .iter()
        .filter(|t| t["healthy"] == true)
        .map(|t| t["address"].as_str().unwrap_or("").to_string())
        .collect()
}

/// Polls `cond` every 50 ms until it holds; false after `limit`.
fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    cond()
}

/// The backend name a response came from (`X-Backend`), or its status when it failed.
fn who(proxy: &Proxy) -> String {
    let r = proxy.get("/");
    match r.status {
        200 => r.header("x-backend").unwrap_or("?").to_string(),
        s => format!("status {s}"),
    }
}

const BASE: &str = "
admin: { listen: 127.0.0.1:0 }
listeners:
  - name: web
    listen: 127.0.0.1:0
    routes:
      - upstream: api
upstreams:
  api:
";

#[test]
fn an_srv_upstream_reaches_the_record_host_and_port_and_its_lowest_live_priority_only() {
    let port = port_free_on(&["127.0.0.2", "127.0.0.3"]);
    let primary = FixedBackend::start("primary", 200, format!("127.0.0.2:{port}").parse().unwrap());
    let backup = FixedBackend::start("backup", 200, format!("127.0.0.3:{port}").parse().unwrap());
    let dns = Dnsmasq::start(
        "127.0.0.2 web-0.test\n127.0.0.3 web-1.test\n",
        &[
            format!("_api._tcp.test,web-0.test,{port},10,5"),
            format!("_api._tcp.test,web-1.test,{port},20,5"),
        ],
    );
    let yaml = format!(
        "{BASE}    dynamic: {{ srv: _api._tcp.test, refresh: 1s, resolvers: [$DNS] }}\n    \
         lb: {{ policy: round_robin }}\n    \
         health: {{ active: {{ uri: /health, interval: 200ms, timeout: 1s, fails: 1, passes: 1 }} }}\n"
    );
    let proxy = Proxy::start(Driver::any(), &yaml, &[("DNS", dns.resolver())]);
    assert!(
        eventually(Duration::from_secs(10), || healthy_addresses(&proxy).len()
            == 2),
        "both SRV targets probed healthy: {}",
        upstreams(&proxy)
    );
    let picks: Vec<String> = (0..6).map(|_| who(&proxy)).collect();
    assert!(
        picks.iter().all(|p| p == "primary"),
        "priority 10 takes everything while it is healthy: {picks:?}"
    );
    let u = upstreams(&proxy);
    let sources: Vec<&str> = u[0]["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["source"].as_str().unwrap())
        .collect();
    assert_eq!(sources, ["srv priority 10", "srv priority 20"], "{u}");
    let admin = proxy.server().admin_addr().unwrap();
    let config = admin_get(admin, "/config");
    let config: serde_json::Value =
        serde_json::from_str(config.split_once("\r\n\r\n").unwrap().1).unwrap();
    let d = &config["upstreams"][0]["dynamic"];
    assert_eq!(d["srv"], "_api._tcp.test", "{config}");
    assert_eq!(d["resolvers"][0], dns.resolver(), "{config}");
    assert_eq!(
        u[0]["targets"][0]["address"],
        format!("127.0.0.2:{port}"),
        "{u}"
    );
    // The priority-10 target dies: its probes take it out, and priority 20 takes over.
    drop(primary);
    assert!(
        eventually(Duration::from_secs(10), || healthy_addresses(&proxy).len()
            == 1),
        "the dead target is probed down: {}",
        upstreams(&proxy)
    );
    let picks: Vec<String> = (0..4).map(|_| who(&proxy)).collect();
    assert!(picks.iter().all(|p| p == "backup"), "{picks:?}");
    assert!(backup.requests() >= 4);
    proxy.shutdown();
}

#[test]
fn an_a_record_changed_mid_test_moves_all_traffic_within_two_refresh_periods() {
    let port = port_free_on(&["127.0.0.2", "127.0.0.3"]);
    let old = FixedBackend::start("old", 200, format!("127.0.0.2:{port}").parse().unwrap());
    let new = FixedBackend::start("new", 200, format!("127.0.0.3:{port}").parse().unwrap());
    let dns = Dnsmasq::start("127.0.0.2 api.test\n", &[]);
    let refresh = Duration::from_secs(2);
    // Two workers: the new set reaches each of them.
    let yaml = format!(
        "workers: 2\n{BASE}    dynamic: {{ a: {{ name: api.test, port: {port} }}, refresh: 2s, resolvers: [$DNS] }}\n"
    );
    let proxy = Proxy::start(Driver::any(), &yaml, &[("DNS", dns.resolver())]);
    let picks: Vec<String> = (0..5).map(|_| who(&proxy)).collect();
    assert!(picks.iter().all(|p| p == "old"), "{picks:?}");
    dns.set_hosts("127.0.0.3 api.test\n");
    std::thread::sleep(2 * refresh);
    let picks: Vec<String> = (0..20).map(|_| who(&proxy)).collect();
    assert!(
        picks.iter().all(|p| p == "new"),
        "two refresh periods after the change every request goes to the new address: {picks:?}"
    );
    assert_eq!(old.requests(), 5);
    assert!(new.requests() >= 20);
    proxy.shutdown();
}

#[test]
fn a_dead_discovered_address_is_skipped_by_active_health_and_no_request_fails() {
    let port = port_free_on(&["127.0.0.2", "127.0.0.3"]);
    let live = FixedBackend::start("live", 200, format!("127.0.0.2:{port}").parse().unwrap());
    // Nothing listens on 127.0.0.3:port.
    let dns = Dnsmasq::start("127.0.0.2 api.test\n127.0.0.3 api.test\n", &[]);
    let yaml = format!(
        "{BASE}    dynamic: {{ a: {{ name: api.test, port: {port} }}, refresh: 1s, resolvers: [$DNS] }}\n    \
         lb: {{ policy: round_robin }}\n    \
         health: {{ active: {{ uri: /health, interval: 10s, timeout: 1s }} }}\n"
    );
    let proxy = Proxy::start(Driver::any(), &yaml, &[("DNS", dns.resolver())]);
    // The first probe of each new address decides at once (interval 10 s: no second one yet).
    assert!(
        eventually(Duration::from_secs(10), || healthy_addresses(&proxy)
            == [format!("127.0.0.2:{port}")]),
        "{}",
        upstreams(&proxy)
    );
    let picks: Vec<String> = (0..20).map(|_| who(&proxy)).collect();
    assert!(
        picks.iter().all(|p| p == "live"),
        "no request reaches the dead address: {picks:?}"
    );
    let u = upstreams(&proxy);
    let targets = u[0]["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 2, "{u}");
    assert!(targets.iter().all(|t| t["source"] == "a"), "{u}");
    assert_eq!(u[0]["dns"][0]["name"], format!("api.test:{port}"), "{u}");
    assert_eq!(u[0]["dns"][0]["addresses"], 2, "{u}");
    drop(live);
    proxy.shutdown();
}

#[test]
fn dns_failures_keep_the_last_good_set_serving_and_are_counted() {
    let port = port_free_on(&["127.0.0.2"]);
    let backend = FixedBackend::start("b", 200, format!("127.0.0.2:{port}").parse().unwrap());
    let mut dns = Dnsmasq::start("127.0.0.2 api.test\n", &[]);
    let yaml = format!(
        "{BASE}    dynamic: {{ a: {{ name: api.test, port: {port} }}, refresh: 1s, resolvers: [$DNS] }}\n"
    );
    let proxy = Proxy::start(Driver::any(), &yaml, &[("DNS", dns.resolver())]);
    assert_eq!(who(&proxy), "b");
    let admin = proxy.server().admin_addr().unwrap();
    let failures = |reason: &str| {
        let m = admin_get(admin, "/metrics");
        let prefix = format!(
            "ringway_dns_resolution_failures_total{{upstream=\"api\",name=\"api.test:{port}\",reason=\"{reason}\"}} "
        );
        m.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .map_or(0, |n| n.parse::<u64>().unwrap())
    };
    // The name disappears (NXDOMAIN): the last good address keeps serving.
    dns.set_hosts("");
    assert!(
        eventually(Duration::from_secs(10), || failures("nxdomain") >= 1),
        "NXDOMAIN counted"
    );
    assert_eq!(who(&proxy), "b");
    // The DNS server stops answering at all.
    dns.stop();
    let before = failures("nxdomain");
    assert!(
        eventually(Duration::from_secs(20), || {
            let m = admin_get(admin, "/metrics");
            m.lines().any(|l| {
                l.starts_with("ringway_dns_resolution_failures_total{upstream=\"api\"")
                    && !l.contains("nxdomain")
            })
        }),
        "a failure other than NXDOMAIN counted once the server is gone"
    );
    let picks: Vec<String> = (0..5).map(|_| who(&proxy)).collect();
    assert!(picks.iter().all(|p| p == "b"), "{picks:?}");
    assert!(failures("nxdomain") >= before);
    let u = upstreams(&proxy);
    assert!(u[0]["dns"][0]["failing"].is_string(), "{u}");
    let m = admin_get(admin, "/metrics");
    assert!(
        m.contains("ringway_upstream_targets{upstream=\"api\"} 1"),
        "{m}"
    );
    assert!(backend.requests() >= 7);
    proxy.shutdown();
}

#[test]
fn a_name_that_does_not_resolve_yet_answers_503_until_it_does() {
    let port = port_free_on(&["127.0.0.2"]);
    let _backend = FixedBackend::start("late", 200, format!("127.0.0.2:{port}").parse().unwrap());
    let dns = Dnsmasq::start("", &[]);
    let yaml = format!(
        "{BASE}    dynamic: {{ a: {{ name: api.test, port: {port} }}, refresh: 1s, resolvers: [$DNS] }}\n"
    );
    let proxy = Proxy::start(Driver::any(), &yaml, &[("DNS", dns.resolver())]);
    assert_eq!(who(&proxy), "status 503");
    dns.set_hosts("127.0.0.2 api.test\n");
    assert!(
        eventually(Duration::from_secs(10), || who(&proxy) == "late"),
        "served once the name resolves"
    );
    proxy.shutdown();
}

#[test]
fn pooled_connections_to_an_unchanged_target_are_reused_across_a_refresh() {
    let stays = Backend::start("stays");
    let port = stays.addr().port();
    let dns = Dnsmasq::start("127.0.0.1 api.test\n", &[]);
    let yaml = format!(
        "{BASE}    dynamic: {{ a: {{ name: api.test, port: {port} }}, refresh: 1s, resolvers: [$DNS] }}\n    \
         lb: {{ policy: first }}\n"
    );
    let proxy = Proxy::start(Driver::any(), &yaml, &[("DNS", dns.resolver())]);
    let mut client = proxy.client();
    let mut request = || {
        let r = client.request(get_req("/", ""));
        assert_eq!(r.status, 200);
    };
    for _ in 0..3 {
        request();
    }
    assert_eq!(stays.connections(), 1);
    // A second address joins: the set changes and is swapped into the worker.
    let _joined = FixedBackend::start("joined", 200, format!("127.0.0.2:{port}").parse().unwrap());
    dns.set_hosts("127.0.0.1 api.test\n127.0.0.2 api.test\n");
    assert!(
        eventually(Duration::from_secs(10), || {
            proxy.server().config().upstreams[0].targets.len() == 2
        }),
        "the new address is swapped in"
    );
    // Refreshes that change nothing come and go meanwhile.
    std::thread::sleep(Duration::from_millis(1500));
    for _ in 0..3 {
        request();
    }
    assert_eq!(
        stays.connections(),
        1,
        "the pooled connection to the unchanged target is reused"
    );
    assert_eq!(stays.requests(), 6);
    proxy.shutdown();
}

#[test]
fn a_reload_keeps_the_discovered_targets_and_their_pooled_connections() {
    let stays = Backend::start("stays");
    let port = stays.addr().port();
    let dns = Dnsmasq::start("127.0.0.1 api.test\n", &[]);
    let yaml = format!(
        "{BASE}    dynamic: {{ a: {{ name: api.test, port: {port} }}, refresh: 30s, resolvers: [$DNS] }}\n"
    );
    let vars = [("DNS", dns.resolver())];
    let proxy = Proxy::start(Driver::any(), &yaml, &vars);
    let mut client = proxy.client();
    assert_eq!(client.request(get_req("/", "")).status, 200);
    // The file changes something else; the new generation is built with the last answers
    // merged in at once (an empty upstream would answer 503).
    proxy.rewrite_config(&format!("{yaml}    forwarded: off\n"), &vars);
    let r = proxy.server().reload().expect("reload");
    assert!(r.generation >= 3, "{r}");
    for _ in 0..2 {
        assert_eq!(client.request(get_req("/", "")).status, 200);
    }
    assert_eq!(stays.connections(), 1, "the pooled connection moved along");
    assert!(stays
        .recorded()
        .last()
        .is_some_and(|r| !r.has_header("x-forwarded-for")));
    proxy.shutdown();
}

#[test]
fn idle_connections_to_a_removed_target_close_when_the_new_set_is_swapped_in() {
    let leaving = Backend::start("leaving");
    let port = leaving.addr().port();
    let _next = FixedBackend::start("next", 200, format!("127.0.0.2:{port}").parse().unwrap());
    let dns = Dnsmasq::start("127.0.0.1 api.test\n", &[]);
    let yaml = format!(
        "{BASE}    dynamic: {{ a: {{ name: api.test, port: {port} }}, refresh: 1s, resolvers: [$DNS] }}\n"
    );
    let proxy = Proxy::start(Driver::any(), &yaml, &[("DNS", dns.resolver())]);
    // A keep-alive client leaves an idle pooled connection to `leaving` behind.
    let mut client = proxy.client();
    assert_eq!(client.request(get_req("/", "")).status, 200);
    assert_eq!(leaving.open_connections(), 1);
    dns.set_hosts("127.0.0.2 api.test\n");
    assert!(
        leaving.wait_for_no_open_connections(Duration::from_secs(10)),
        "the pooled connection to the removed address is closed"
    );
    let r = client.request(get_req("/", ""));
    assert_eq!(r.header("x-backend"), Some("next"));
    proxy.shutdown();
}

#[test]
fn a_hostname_target_is_re_resolved_to_every_address() {
    let port = port_free_on(&["127.0.0.2", "127.0.0.3"]);
    let b2 = FixedBackend::start("b2", 200, format!("127.0.0.2:{port}").parse().unwrap());
    let b3 = FixedBackend::start("b3", 200, format!("127.0.0.3:{port}").parse().unwrap());
    let dns = Dnsmasq::start("127.0.0.2 web.test\n127.0.0.3 web.test\n", &[]);
    let dir = TempDir::new();
    let log = dir.join("access.log");
    // `dynamic` names the resolver; its own name resolves to nothing (NXDOMAIN).
    let yaml = format!(
        "listeners:\n  - name: web\n    listen: 127.0.0.1:0\n    routes:\n      - upstream: api\n\
         upstreams:\n  api:\n    targets: [127.0.0.1:{port}]\n    \
         dynamic: {{ a: {{ name: none.test, port: 1 }}, refresh: 1s, resolvers: [{}] }}\n    \
         lb: {{ policy: round_robin }}\n\
         admin: {{ listen: 127.0.0.1:0 }}\nworkers: 1\npin_workers: false\n\
         log: {{ format: json, access_log: {} }}\n",
        dns.resolver(),
        log.display()
    );
    let mut config = ringway::config::Config::parse(&yaml, "t.yaml").unwrap();
    // As validation leaves a hostname target: the name as written, its first address at load
    // (loading it from a file would ask the system's resolver, which tests must not use).
    config.upstreams[0].targets[0].addr = ringway::config::TargetAddr::Tcp {
        host: format!("web.test:{port}"),
        addr: format!("127.0.0.1:{port}").parse().unwrap(),
    };
    let server = ringway::control::Server::start(config).expect("start");
    let addr = server.local_addr("web").unwrap();
    let targets = server.config().upstreams[0].targets.clone();
    let got: Vec<String> = targets
        .iter()
        .map(|t| match &t.addr {
            ringway::config::TargetAddr::Tcp { host, addr } => format!("{host}={addr}"),
            ringway::config::TargetAddr::Unix(p) => p.display().to_string(),
        })
        .collect();
    assert_eq!(
        got,
        [
            format!("web.test:{port}=127.0.0.2:{port}"),
            format!("web.test:{port}=127.0.0.3:{port}")
        ]
    );
    for _ in 0..4 {
        let r = get(addr, "/");
        assert_eq!(r.status, 200);
        assert!(r.header("x-backend").is_some());
    }
    assert_eq!(
        (b2.requests(), b3.requests()),
        (2, 2),
        "both addresses serve"
    );
    let admin = server.admin_addr().unwrap();
    let text = admin_get(admin, "/upstreams");
    assert!(text.contains("\"source\": \"dns\""), "{text}");
    server.shutdown();
    // The access log names the address each request was dialled at, not the shared name.
    let lines = std::fs::read_to_string(&log).unwrap();
    let mut dialled: Vec<String> = lines
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["upstream_addr"].to_string())
        .collect();
    dialled.sort();
    dialled.dedup();
    assert_eq!(
        dialled,
        [
            format!("\"127.0.0.2:{port}\""),
            format!("\"127.0.0.3:{port}\"")
        ],
        "{lines}"
    );
}

/// A TCP server on `addr` that greets each connection with `greeting` and closes it.
fn greeter(addr: SocketAddr, greeting: &'static str) {
    let l = std::net::TcpListener::bind(addr).unwrap();
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            let _ = c.write_all(greeting.as_bytes());
        }
    });
}

#[test]
fn a_tcp_listener_follows_its_dynamic_upstream() {
    let port = port_free_on(&["127.0.0.2", "127.0.0.3"]);
    greeter(format!("127.0.0.2:{port}").parse().unwrap(), "two\n");
    greeter(format!("127.0.0.3:{port}").parse().unwrap(), "three\n");
    let dns = Dnsmasq::start("127.0.0.2 db.test\n", &[]);
    let yaml = format!(
        "listeners:\n  - name: web\n    listen: 127.0.0.1:0\n    protocol: tcp\n    upstream: db\n\
         upstreams:\n  db:\n    \
         dynamic: {{ a: {{ name: db.test, port: {port} }}, refresh: 1s, resolvers: [$DNS] }}\n"
    );
    let proxy = Proxy::start(Driver::any(), &yaml, &[("DNS", dns.resolver())]);
    let greeting = || {
        let mut c = TcpStream::connect(proxy.addr()).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut s = String::new();
        let _ = c.read_to_string(&mut s);
        s
    };
    assert_eq!(greeting(), "two\n");
    dns.set_hosts("127.0.0.3 db.test\n");
    assert!(
        eventually(Duration::from_secs(10), || greeting() == "three\n"),
        "new tunnels go to the new address"
    );
    proxy.shutdown();
}
