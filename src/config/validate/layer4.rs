//! Keys that only make sense on one kind of listener's upstreams.

use super::{Res, Validator};
use crate::config::file::UpstreamFile;
use crate::config::spans::join;

/// Policies that hash a part of an HTTP request; a tunnel has none to hash.
const HTTP_POLICIES: &[&str] = &["uri_hash", "query", "header", "cookie"];

impl Validator<'_> {
    /// Refuses the keys of an upstream that only an HTTP exchange reads, when the upstream
    /// serves tcp listener `listener`: layer 4 dials, tunnels bytes and fails over, so it
    /// keeps targets, their TLS, balancing by address, retries, health and dial settings.
    pub(super) fn layer4_upstream(&self, key: &str, u: &UpstreamFile, listener: &str) -> Res<()> {
        let lb = u.lb.as_ref();
        let passive = u.health.as_ref().and_then(|h| h.passive.as_ref());
        let t = u.transport.as_ref();
        let written = [
            ("headers", u.headers.is_some()),
            ("forwarded", u.forwarded.is_some()),
            ("flush_interval", u.flush_interval.is_some()),
            ("request_buffer", u.request_buffer.is_some()),
            ("response_buffer", u.response_buffer.is_some()),
            (
                "lb.retry_methods",
                lb.is_some_and(|l| l.retry_methods.is_some()),
            ),
            ("stream_timeout", u.stream_timeout.is_some()),
            ("stream_close_delay", u.stream_close_delay.is_some()),
            (
                "transport.max_response_header",
                t.is_some_and(|t| t.max_response_header.is_some()),
            ),
            (
                "transport.queue_timeout",
                t.is_some_and(|t| t.queue_timeout.is_some()),
            ),
            (
                "lb.retry_match",
                lb.is_some_and(|l| l.retry_match.is_some()),
            ),
            (
                "health.passive.unhealthy_status",
                passive.is_some_and(|p| p.unhealthy_status.is_some()),
            ),
            (
                "health.passive.unhealthy_latency",
                passive.is_some_and(|p| p.unhealthy_latency.is_some()),
            ),
            (
                "transport.protocol",
                t.is_some_and(|t| t.protocol.is_some()),
            ),
            (
                "transport.versions",
                t.is_some_and(|t| t.versions.is_some()),
            ),
            ("transport.fastcgi", t.is_some_and(|t| t.fastcgi.is_some())),
            (
                "transport.response_header_timeout",
                t.is_some_and(|t| t.response_header_timeout.is_some()),
            ),
            // A tunnel has no request head to hold a body behind.
            (
                "transport.expect_continue_timeout",
                t.is_some_and(|t| t.expect_continue_timeout.is_some()),
            ),
            // Tunnels run until a side closes (the listener's idle_timeout bounds them).
            (
                "transport.read_timeout",
                t.is_some_and(|t| t.read_timeout.is_some()),
            ),
            (
                "transport.write_timeout",
                t.is_some_and(|t| t.write_timeout.is_some()),
            ),
            // Tunnels are never pooled.
            (
                "transport.keepalive",
                t.is_some_and(|t| t.keepalive.is_some()),
            ),
            (
                "transport.idle_timeout",
                t.is_some_and(|t| t.idle_timeout.is_some()),
            ),
            (
                "transport.max_idle_per_worker",
                t.is_some_and(|t| t.max_idle_per_worker.is_some()),
            ),
        ];
        let why = |what: &str| {
            format!(
                "{what} on upstreams of http listeners; this upstream serves tcp listener \
                 \"{listener}\" (layer 4), which would ignore it"
            )
        };
        if let Some((k, _)) = written.iter().find(|(_, w)| *w) {
            return Err(self.at_key(&join(key, k), why("only valid")));
        }
        if let Some(policy) = lb.and_then(|l| l.policy.as_deref()) {
            if HTTP_POLICIES.contains(&policy) {
                return Err(self.at_value(
                    &join(key, "lb.policy"),
                    why(&format!(
                        "policy {policy} hashes HTTP request data: only valid"
                    )),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::test_support::*;
    use crate::config::*;

    /// A tcp listener `pg` and its upstream `db`, with `extra` under `db` from line 9 on.
    fn tcp_upstream(extra: &str) -> String {
        let mut y = String::from(
            "listeners:\n  - name: pg\n    listen: 127.0.0.1:5433\n    protocol: tcp\n    \
             upstream: db\nupstreams:\n  db:\n    targets: [127.0.0.1:5432]\n",
        );
        for line in dedent(extra).lines() {
            y.push_str("    ");
            y.push_str(line);
            y.push('\n');
        }
        y
    }

    #[test]
    fn validate_refuses_headers_on_an_upstream_of_a_tcp_listener() {
        let e = assert_err(
            &tcp_upstream("headers:\n  request:\n    - set: { X-Env: prod }"),
            9,
            "upstreams.db.headers",
            "only valid on upstreams of http listeners",
        );
        assert!(e.message.contains("tcp listener \"pg\""), "{e}");
    }

    #[test]
    fn http_only_keys_of_a_tcp_upstream_are_refused_at_their_line() {
        let cases = [
            ("forwarded: off", 9, "forwarded"),
            ("flush_interval: -1", 9, "flush_interval"),
            ("request_buffer: 4KiB", 9, "request_buffer"),
            ("response_buffer: 0", 9, "response_buffer"),
            ("lb:\n  retry_methods: [GET]", 10, "lb.retry_methods"),
            ("lb:\n  retry_match: { path: /x }", 10, "lb.retry_match"),
            (
                "transport:\n  queue_timeout: 1s",
                10,
                "transport.queue_timeout",
            ),
            ("lb:\n  policy: uri_hash", 10, "lb.policy"),
            ("lb:\n  policy: header\n  key: X-User", 10, "lb.policy"),
            ("lb:\n  policy: query\n  key: u", 10, "lb.policy"),
            ("lb:\n  policy: cookie", 10, "lb.policy"),
            (
                "health:\n  passive:\n    unhealthy_status: [5xx]",
                11,
                "health.passive.unhealthy_status",
            ),
            (
                "health:\n  passive:\n    unhealthy_latency: 1s",
                11,
                "health.passive.unhealthy_latency",
            ),
            ("transport:\n  protocol: http", 10, "transport.protocol"),
            (
                "transport:\n  versions: [\"1.1\"]",
                10,
                "transport.versions",
            ),
            (
                "transport:\n  response_header_timeout: 5s",
                10,
                "transport.response_header_timeout",
            ),
            (
                "transport:\n  expect_continue_timeout: 1s",
                10,
                "transport.expect_continue_timeout",
            ),
            (
                "transport:\n  read_timeout: 5s",
                10,
                "transport.read_timeout",
            ),
            (
                "transport:\n  write_timeout: 5s",
                10,
                "transport.write_timeout",
            ),
            ("transport:\n  keepalive: false", 10, "transport.keepalive"),
            (
                "transport:\n  idle_timeout: 30s",
                10,
                "transport.idle_timeout",
            ),
            (
                "transport:\n  max_idle_per_worker: 4",
                10,
                "transport.max_idle_per_worker",
            ),
        ];
        for (extra, line, key) in cases {
            let key = format!("upstreams.db.{key}");
            let e = Config::parse(&tcp_upstream(extra), "t").expect_err(&key);
            assert_eq!((e.line, e.key.as_str()), (line, key.as_str()), "{e}");
            assert!(e.message.contains("tcp listener \"pg\""), "{e}");
        }
    }

    #[test]
    fn an_upstream_of_both_an_http_route_and_a_tcp_listener_is_refused_http_only_keys() {
        let e = assert_err(
            "listeners:\n  - listen: 127.0.0.1:8080\n    routes: [{ upstream: db }]\n  \
             - name: pg\n    listen: 127.0.0.1:5433\n    protocol: tcp\n    upstream: db\n\
             upstreams:\n  db:\n    targets: [127.0.0.1:5432]\n    forwarded: rfc7239\n",
            11,
            "upstreams.db.forwarded",
            "serves tcp listener \"pg\"",
        );
        assert!(e.message.contains("layer 4"), "{e}");
    }

    #[test]
    fn what_layer_4_uses_is_accepted_on_a_tcp_upstream() {
        let c = Config::parse(
            &tcp_upstream(
                r#"
                targets:
                  - 127.0.0.1:5432
                  - { address: 127.0.0.1:5434, weight: 2, max_connections: 10 }
                split: { targets: [127.0.0.1:5435], percent: 10 }
                lb:
                  policy: client_ip_hash
                  retries: 2
                  try_duration: 5s
                  try_interval: 100ms
                health:
                  active: { interval: 5s, timeout: 1s, fails: 3, passes: 1 }
                  passive: { fail_duration: 30s, max_fails: 3, unhealthy_request_count: 50 }
                transport: { dial_timeout: 1s, proxy_protocol: v2 }
                "#,
            )
            .replacen("    targets: [127.0.0.1:5432]\n", "", 1),
            "t",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let u = &c.upstreams[0];
        assert_eq!(u.lb.policy, Policy::ClientIpHash);
        assert_eq!(u.targets.len(), 3);
        assert_eq!(u.transport.proxy_protocol, ProxyProtocol::V2);
        assert!(u.health.active.as_ref().is_some_and(|a| a.uri.is_none()));
    }

    #[test]
    fn tls_to_the_targets_of_a_tcp_upstream_validates() {
        let dir = temp_dir("l4tls");
        let (cert, key) = write_cert(&dir, "client", &["client.test"]);
        let c = Config::parse(
            &tcp_upstream(&format!(
                r#"
                transport:
                  tls:
                    ca: []
                    client_cert: {cert}
                    client_key: {key}
                    server_name: db.internal
                    insecure_skip_verify: true
                    handshake_timeout: 5s
                    except_ports: [5432]
                  https_ports: [6432]
                "#
            ))
            .replace(
                "[127.0.0.1:5432]",
                "[127.0.0.1:5432, 127.0.0.1:6432, https://127.0.0.1:7432]",
            ),
            "t",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let u = &c.upstreams[0];
        let tls: Vec<bool> = u.targets.iter().map(|t| t.tls).collect();
        assert_eq!(tls, [false, true, true]);
        let settings = u.transport.tls.as_ref().expect("tls settings");
        assert_eq!(settings.server_name.as_deref(), Some("db.internal"));
        assert!(settings.client_cert.is_some() && settings.insecure_skip_verify);
    }

    #[test]
    fn proxy_protocol_to_upstreams_of_http_routes_is_accepted() {
        let c = Config::parse(&with_upstream("transport:\n  proxy_protocol: v1"), "t.yaml")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.upstreams[0].transport.proxy_protocol, ProxyProtocol::V1);
    }
}
