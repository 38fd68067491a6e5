//! Defaults that must not lose requests: a target that refuses connections is skipped for the
//! request that met it (whatever `retries` says) and marked down for `fail_duration` (10s by
//! default), over HTTP and layer 4 alike.

#[macro_use]
mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::time::Duration;

use support::l4::{connect, read_to_end_or_error, L4Backend, Mode};
use support::*;

/// The admin endpoint's `/upstreams` body as JSON.
fn admin_upstreams(addr: SocketAddr) -> serde_json::Value {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET /upstreams HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// Whether the admin endpoint reports `target` of the first upstream healthy.
fn healthy(admin: SocketAddr, target: &str) -> bool {
    let v = admin_upstreams(admin);
    let t = v[0]["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["target"].as_str().is_some_and(|s| s.contains(target)))
        .unwrap_or_else(|| panic!("{target} not in {v}"));
    t["healthy"].as_bool().unwrap()
}

driver_tests! {
    fn a_refusing_target_loses_no_request_with_default_settings(driver) {
        let live = Backend::start("live");
        let dead = refused_addr();
        for policy in ["round_robin", "random_choose", "least_conn"] {
            let yaml = format!(
                "workers: 2\nadmin:\n  listen: 127.0.0.1:0\n{}",
                one_upstream_yaml("$LIVE, $DEAD", &format!("    lb: {{ policy: {policy} }}\n"))
            );
            let proxy = Proxy::start(
                driver,
                &yaml,
                &[("LIVE", live.target()), ("DEAD", dead.to_string())],
            );
            let admin = proxy.server().admin_addr().expect("admin enabled");
            assert!(healthy(admin, &dead.to_string()), "{policy}: healthy before any request");
            for i in 0..20 {
                let r = proxy.get("/");
                assert_eq!(r.status, 200, "{policy}: request {i}: {}", r.head_text());
                assert_eq!(r.header("x-backend"), Some("live"));
            }
            // The refused dial took the target down (passive health is on by default).
            assert!(!healthy(admin, &dead.to_string()), "{policy}: the dead target is marked down");
            assert!(healthy(admin, &live.target()), "{policy}: the live target stays up");
        }
    }

    fn a_lone_refusing_target_gets_502_each_time_and_is_not_marked_down_unless_told(driver) {
        let dead = refused_addr();
        let yaml = format!("admin:\n  listen: 127.0.0.1:0\n{}", one_upstream_yaml("$DEAD", ""));
        let proxy = Proxy::start(driver, &yaml, &[("DEAD", dead.to_string())]);
        let admin = proxy.server().admin_addr().expect("admin enabled");
        assert_eq!(proxy.get("/").status, 502);
        assert_eq!(proxy.get("/").status, 502, "tried again, not 503");
        assert!(healthy(admin, &dead.to_string()));
        // Written out, fail_duration applies to a lone target too.
        let yaml = format!(
            "admin:\n  listen: 127.0.0.1:0\n{}",
            one_upstream_yaml("$DEAD", "    health: { passive: { fail_duration: 400ms } }\n")
        );
        let proxy = Proxy::start(driver, &yaml, &[("DEAD", dead.to_string())]);
        let admin = proxy.server().admin_addr().expect("admin enabled");
        assert_eq!(proxy.get("/").status, 502);
        assert!(!healthy(admin, &dead.to_string()));
        assert_eq!(proxy.get("/").status, 503, "down: no target to try");
        assert!(
            wait_for(Duration::from_secs(3), || healthy(admin, &dead.to_string())),
            "back after fail_duration"
        );
    }

    fn fail_duration_zero_turns_passive_health_off(driver) {
        let live = Backend::start("live");
        let dead = refused_addr();
        let yaml = format!(
            "admin:\n  listen: 127.0.0.1:0\n{}",
            one_upstream_yaml(
                "$LIVE, $DEAD",
                "    lb: { policy: round_robin }\n    health: { passive: { fail_duration: 0s } }\n",
            )
        );
        let proxy = Proxy::start(
            driver,
            &yaml,
            &[("LIVE", live.target()), ("DEAD", dead.to_string())],
        );
        let admin = proxy.server().admin_addr().expect("admin enabled");
        for _ in 0..6 {
            assert_eq!(proxy.get("/").status, 200, "failover still happens");
        }
        assert!(healthy(admin, &dead.to_string()), "no passive memory when it is off");
    }

    fn a_layer4_listener_fails_over_from_a_refusing_target_with_default_settings(driver) {
        let echo = L4Backend::start(Mode::Echo);
        let dead = refused_addr();
        let yaml = "workers: 2\nlisteners:\n  - name: web\n    listen: 127.0.0.1:0\n    protocol: tcp\n    \
             upstream: app\nupstreams:\n  app:\n    targets: [$DEAD, $LIVE]\n    \
             lb: { policy: round_robin }\n";
        let proxy = Proxy::start(
            driver,
            yaml,
            &[("LIVE", echo.target()), ("DEAD", dead.to_string())],
        );
        for i in 0..10 {
            let mut c = connect(proxy.addr());
            c.write_all(b"hi").unwrap();
            c.shutdown(Shutdown::Write).unwrap();
            let got = read_to_end_or_error(&mut c);
            assert!(matches!(got, Ok(ref b) if b == b"hibye"), "connection {i}: {got:?}");
        }
        assert_eq!(echo.accepted(), 10);
    }
}
