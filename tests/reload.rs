//! Hot reload: a new configuration swapped into every worker with nothing lost. Requests under
//! load across many reloads, a rejected file, tunnels opened before a reload, pools and
//! listeners across reloads, and the reload counters.

#[macro_use]
mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::l4::*;
use support::*;

/// Listener `web` to upstream `app` (targets `$B1`), answering with `X-Gen: {gen}` added to
/// each response, so a client can tell which configuration served it.
fn tagged_yaml(gen: &str, extra_listeners: &str) -> String {
    format!(
        "listeners:\n  - name: web\n    listen: 127.0.0.1:0\n    routes:\n      - upstream: app\n\
         {extra_listeners}upstreams:\n  app:\n    targets: [$B1]\n    headers:\n      response:\n        \
         - set: {{ X-Gen: \"{gen}\" }}\n"
    )
}

fn admin_post(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "POST {path} HTTP/1.1\r\nHost: admin\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text[9..12].parse().unwrap();
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string());
    (status, body.unwrap_or_default())
}

fn admin_get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: admin\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap()
}

/// The value of one sample line (`name{labels} value`) of a metrics page.
fn metric(page: &str, series: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

driver_tests! {
    fn a_keep_alive_connection_moves_to_the_new_config_with_its_next_request(driver) {
        let b1 = Backend::start("b1");
        let vars = [("B1", b1.target())];
        let proxy = Proxy::start(driver, &tagged_yaml("1", ""), &vars);
        let mut c = proxy.client();
        let r = c.request(get_req("/", ""));
        assert_eq!(r.header("x-gen"), Some("1"));
        proxy.rewrite_config(&tagged_yaml("2", ""), &vars);
        let done = proxy.server().reload().expect("reload");
        assert_eq!(done.generation, 2);
        let r = c.request(get_req("/", ""));
        assert_eq!(r.header("x-gen"), Some("2"), "same connection, new configuration");
        assert!(!r.closes());
        assert_eq!(proxy.get("/").header("x-gen"), Some("2"), "a new connection too");
    }

    fn a_rejected_file_keeps_the_running_config_and_names_file_line_and_key(driver) {
        let b1 = Backend::start("b1");
        let vars = [("B1", b1.target())];
        let mut yaml = tagged_yaml("1", "");
        yaml.push_str("admin:\n  listen: 127.0.0.1:0\n");
        let proxy = Proxy::start(driver, &yaml, &vars);
        let admin = proxy.server().admin_addr().unwrap();
        let mut bad = tagged_yaml("2", "");
        bad.push_str("admin:\n  listen: 127.0.0.1:0\nbogus_key: 1\n");
        proxy.rewrite_config(&bad, &vars);
        let (status, body) = admin_post(admin, "/reload");
        assert_eq!(status, 400, "{body}");
        assert!(body.contains("ringway.yaml:"), "the file: {body}");
        assert!(body.contains("bogus_key"), "the key: {body}");
        let text = proxy.config_text();
        let line = text.lines().position(|l| l.starts_with("bogus_key")).unwrap() + 1;
        assert!(body.contains(&format!("ringway.yaml:{line}:")), "line {line}: {body}");
        assert_eq!(proxy.get("/").header("x-gen"), Some("1"), "old config still serves");
        let page = admin_get(admin, "/metrics");
        assert_eq!(metric(&page, "ringway_config_reloads_total{result=\"failed\"}"), Some(1.0));
        assert_eq!(metric(&page, "ringway_config_reloads_total{result=\"ok\"}"), Some(0.0));
        // A file that parses but names a certificate that cannot be read: refused as well.
        let mut tls = tagged_yaml("3", "");
        tls = tls.replace(
            "    routes:\n",
            "    tls:\n      certificates:\n        - { cert: /nonexistent.pem, key: /nonexistent.key }\n    routes:\n",
        );
        tls.push_str("admin:\n  listen: 127.0.0.1:0\n");
        proxy.rewrite_config(&tls, &vars);
        let (status, body) = admin_post(admin, "/reload");
        assert_eq!(status, 400, "{body}");
        assert!(body.contains("nonexistent"), "{body}");
        assert_eq!(proxy.get("/").header("x-gen"), Some("1"));
    }

    fn pooled_upstream_connections_survive_reloads(driver) {
        let b1 = Backend::start("b1");
        let vars = [("B1", b1.target())];
        let proxy = Proxy::start(driver, &tagged_yaml("1", ""), &vars);
        for gen in 2..=6 {
            assert_eq!(proxy.get("/").status, 200);
            proxy.rewrite_config(&tagged_yaml(&gen.to_string(), ""), &vars);
            proxy.server().reload().expect("reload");
        }
        assert_eq!(proxy.get("/").header("x-gen"), Some("6"));
        assert_eq!(b1.requests(), 6);
        assert_eq!(b1.connections(), 1, "one upstream connection served every generation");
    }

    fn a_changed_target_list_drops_only_the_removed_targets_connections(driver) {
        let (b1, b2) = (Backend::start("b1"), Backend::start("b2"));
        let vars = [("B1", b1.target()), ("B2", b2.target())];
        let both = one_upstream_yaml("$B1, $B2", "    lb:\n      policy: round_robin\n");
        let proxy = Proxy::start(driver, &both, &vars);
        for _ in 0..4 {
            assert_eq!(proxy.get("/").status, 200);
        }
        assert_eq!((b1.connections(), b2.connections()), (1, 1));
        proxy.rewrite_config(&one_upstream_yaml("$B1", ""), &vars);
        proxy.server().reload().expect("reload");
        for _ in 0..3 {
            assert_eq!(proxy.get("/").text(), "b1\n");
        }
        assert_eq!(b1.connections(), 1, "b1's pooled connection carried over");
        assert!(
            b2.wait_for_no_open_connections(Duration::from_secs(5)),
            "the removed target's idle connection is closed"
        );
    }

    fn listeners_added_by_a_reload_accept_and_removed_ones_stop(driver) {
        let b1 = Backend::start("b1");
        let vars = [("B1", b1.target())];
        let proxy = Proxy::start(driver, &tagged_yaml("1", ""), &vars);
        let extra = "  - name: extra\n    listen: 127.0.0.1:0\n    routes:\n      - respond:\n          status: 200\n          body: \"extra\\n\"\n";
        proxy.rewrite_config(&tagged_yaml("2", extra), &vars);
        let done = proxy.server().reload().expect("reload");
        assert_eq!((done.listeners_added, done.listeners_removed), (1, 0));
        let extra_addr = proxy.local_addr("extra").expect("bound");
        assert_eq!(client::get(extra_addr, "/").text(), "extra\n");
        // A keep-alive connection on the listener that goes away: its next request is served
        // (by the configuration it came in under) and the connection then closes.
        let mut kept = Client::connect(extra_addr);
        assert_eq!(kept.request(get_req("/", "")).status, 200);
        proxy.rewrite_config(&tagged_yaml("3", ""), &vars);
        let done = proxy.server().reload().expect("reload");
        assert_eq!((done.listeners_added, done.listeners_removed), (0, 1));
        assert!(proxy.local_addr("extra").is_none());
        assert!(
            wait_for(Duration::from_secs(5), || TcpStream::connect(extra_addr).is_err()),
            "the removed listener refuses connections"
        );
        let r = kept.request(get_req("/", ""));
        assert_eq!(r.status, 200);
        assert!(kept.is_closed_within(Duration::from_secs(5)));
        assert_eq!(proxy.get("/").header("x-gen"), Some("3"));
    }

    fn a_websocket_opened_before_a_reload_keeps_working_after_it(driver) {
        let ws = support::streaming::start_ws_echo();
        let vars = [("B1", ws.to_string())];
        let proxy = Proxy::start(driver, &tagged_yaml("1", ""), &vars);
        let url = format!("ws://{}/chat", proxy.addr());
        let stream = TcpStream::connect(proxy.addr()).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let (mut client, resp) = tungstenite::client(url.as_str(), stream).expect("handshake");
        assert_eq!(resp.status(), 101);
        client.send(tungstenite::Message::text("before")).unwrap();
        assert_eq!(client.read().unwrap().into_text().unwrap(), "before");
        for gen in 2..=4 {
            proxy.rewrite_config(&tagged_yaml(&gen.to_string(), ""), &vars);
            proxy.server().reload().expect("reload");
        }
        client.send(tungstenite::Message::text("after")).unwrap();
        assert_eq!(client.read().unwrap().into_text().unwrap(), "after");
        client.close(None).unwrap();
    }

    fn a_tcp_tunnel_opened_before_a_reload_keeps_working_after_it(driver) {
        let b1 = L4Backend::start(Mode::Echo);
        let vars = [("B1", b1.target())];
        let tcp = |idle: &str| {
            format!(
                "listeners:\n  - name: web\n    listen: 127.0.0.1:0\n    protocol: tcp\n    upstream: app\n\
                 upstreams:\n  app:\n    targets: [$B1]\n    transport:\n      dial_timeout: {idle}\n"
            )
        };
        let proxy = Proxy::start(driver, &tcp("30s"), &vars);
        let mut c = TcpStream::connect(proxy.addr()).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.write_all(b"ping").unwrap();
        let mut buf = [0u8; 4];
        c.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ping");
        proxy.rewrite_config(&tcp("20s"), &vars);
        proxy.server().reload().expect("reload");
        c.write_all(b"pong").unwrap();
        c.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"pong");
        c.shutdown(Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        c.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, b"bye", "the echo backend's goodbye after our FIN");
        // And the listener still tunnels new connections.
        let mut c2 = TcpStream::connect(proxy.addr()).unwrap();
        c2.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c2.write_all(b"new!").unwrap();
        c2.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"new!");
    }

    fn counters_keep_counting_across_reloads_and_reloads_are_counted(driver) {
        let b1 = Backend::start("b1");
        let vars = [("B1", b1.target())];
        let with_admin = |gen: &str| format!("{}admin:\n  listen: 127.0.0.1:0\n", tagged_yaml(gen, ""));
        let proxy = Proxy::start(driver, &with_admin("1"), &vars);
        let admin = proxy.server().admin_addr().unwrap();
        for _ in 0..3 {
            assert_eq!(proxy.get("/").status, 200);
        }
        proxy.rewrite_config(&with_admin("2"), &vars);
        let (status, body) = admin_post(admin, "/reload");
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("\"generation\":2"), "{body}");
        for _ in 0..2 {
            assert_eq!(proxy.get("/").status, 200);
        }
        // A request is counted just after its response went out: give the last one a moment.
        let requests = "ringway_requests_total{listener=\"web\",protocol=\"h1\",code=\"2xx\"}";
        let counted = || metric(&admin_get(admin, "/metrics"), requests) == Some(5.0);
        assert!(wait_for(Duration::from_secs(5), counted));
        let page = admin_get(admin, "/metrics");
        let target = format!("upstream=\"app\",target=\"{}\"", b1.target());
        let responses = format!("ringway_upstream_responses_total{{{target},code=\"2xx\"}}");
        assert_eq!(metric(&page, &responses), Some(5.0), "{page}");
        let selected = format!("ringway_upstream_selected_total{{{target}}}");
        assert_eq!(metric(&page, &selected), Some(5.0), "{page}");
        assert_eq!(metric(&page, "ringway_config_reloads_total{result=\"ok\"}"), Some(1.0));
        // Once the old generation is let go its counts are folded in, not lost.
        let page = admin_get(admin, "/metrics");
        assert_eq!(metric(&page, requests), Some(5.0), "{page}");
    }
}

/// The target: a load run that spans 20 reloads sees no failed request. Clients on
/// keep-alive and on new connections, reloads alternating two configurations.
#[test]
fn continuous_load_across_twenty_reloads_fails_no_request() {
    let b1 = Backend::start("b1");
    let vars = [("B1", b1.target())];
    let yaml = tagged_yaml("0", "");
    let proxy = Proxy::start(Driver::any(), &format!("workers: 2\n{yaml}"), &vars);
    let addr = proxy.addr();
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for i in 0..4 {
        let (stop, ok) = (stop.clone(), ok.clone());
        clients.push(std::thread::spawn(move || -> Result<(), String> {
            let keep_alive = i % 2 == 0;
            let mut c = Client::connect(addr);
            while !stop.load(Ordering::Relaxed) {
                if !keep_alive {
                    c = Client::connect(addr);
                }
                let r = c
                    .try_send(get_req("/", ""))
                    .map_err(|e| format!("send: {e}"))
                    .and_then(|_| c.try_read_response(false).map_err(|e| format!("{e:?}")))?;
                if r.status != 200 {
                    return Err(format!("status {}: {}", r.status, r.text()));
                }
                ok.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        }));
    }
    let mut seen = std::collections::HashSet::new();
    for gen in 1..=20 {
        proxy.rewrite_config(
            &format!("workers: 2\n{}", tagged_yaml(&gen.to_string(), "")),
            &vars,
        );
        let done = proxy.server().reload().expect("reload");
        assert_eq!(done.generation, gen + 1);
        std::thread::sleep(Duration::from_millis(50));
        seen.insert(proxy.get("/").header("x-gen").map(str::to_string));
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join()
            .unwrap()
            .expect("every request under reloads succeeded");
    }
    assert!(ok.load(Ordering::Relaxed) > 100, "load actually ran");
    assert_eq!(seen.len(), 20, "each reload took effect: {seen:?}");
}
