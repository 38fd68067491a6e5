//! HTTP/2 to upstreams: which targets speak it, and the combinations not (yet) possible.

use super::{Res, Validator};
use crate::config::spans::join;
use crate::config::{Health, HttpVersion, Target, Transport};

impl Validator<'_> {
    /// Marks the plaintext targets of a `versions: ["2"]` upstream as h2c, and refuses what
    /// HTTP/2 targets cannot do: FastCGI, layer-4 tunnels and HTTP/1.1 health probes.
    pub(super) fn h2_targets(
        &self,
        key: &str,
        targets: &mut [Target],
        transport: &Transport,
        health: &Health,
        tcp: bool,
    ) -> Res<()> {
        let versions_key = join(key, "transport.versions");
        let h2_offered = transport.versions.contains(&HttpVersion::Http2);
        if transport.fastcgi.is_some() && h2_offered {
            return Err(self.at_value(
                &versions_key,
                "a FastCGI upstream speaks FastCGI, not HTTP/2 (use [\"1.1\"])",
            ));
        }
        for (i, t) in targets.iter_mut().enumerate() {
            t.h2c |= !t.tls && transport.h2_only();
            let target_key = format!("{key}.targets[{i}]");
            if t.h2c && transport.fastcgi.is_some() {
                return Err(self.at_value(
                    &target_key,
                    "a FastCGI upstream speaks FastCGI, not h2c (use host:port or unix//path)",
                ));
            }
            if t.h2c && tcp {
                return Err(self.at_value(
                    &target_key,
                    "a tcp listener's upstream relays bytes: h2c targets are for http upstreams",
                ));
            }
        }
        let probes_h1 = health.active.as_ref().is_some_and(|a| a.uri.is_some());
        // A probe speaks HTTP/1.1 (offered as http/1.1 by ALPN): a target that only speaks
        // HTTP/2 would always fail it.
        let h2_only_target = targets
            .iter()
            .any(|t| t.h2c || (t.tls && transport.h2_only()));
        if probes_h1 && h2_only_target {
            return Err(self.at_value(
                &join(key, "health.active.uri"),
                "not supported yet for HTTP/2-only targets (probes speak HTTP/1.1); omit uri \
                 for a connect check",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::test_support::*;
    use crate::config::*;

    fn targets(list: &str, extra: &str) -> Vec<(bool, bool)> {
        let text = with_upstream(extra).replace("[127.0.0.1:9001]", list);
        let c = Config::parse(&text, "t").unwrap_or_else(|e| panic!("{e}"));
        c.upstreams[0]
            .targets
            .iter()
            .map(|t| (t.tls, t.h2c))
            .collect()
    }

    #[test]
    fn h2c_schemes_and_versions_decide_which_targets_speak_cleartext_http2() {
        let list = r#"["h2c://127.0.0.1:9001", "unix+h2c//run/app.sock", "127.0.0.1:9002", "https://127.0.0.1:9443"]"#;
        let tls = "transport:\n  tls: { insecure_skip_verify: true, except_ports: [9002] }";
        assert_eq!(
            targets(list, tls),
            [(false, true), (false, true), (false, false), (true, false)]
        );
        // `versions: ["2"]`: plaintext targets have no other way to speak HTTP/2.
        let two = "transport:\n  versions: [\"2\"]";
        assert_eq!(
            targets(r#"["127.0.0.1:9001", "https://127.0.0.1:9443"]"#, two),
            [(false, true), (true, false)]
        );
        // h2c:// defaults to port 80 like http://.
        let c = Config::parse(
            &with_upstream("").replace("[127.0.0.1:9001]", "[\"h2c://127.0.0.1\"]"),
            "t",
        )
        .unwrap();
        match &c.upstreams[0].targets[0].addr {
            TargetAddr::Tcp { addr, .. } => assert_eq!(addr.port(), 80),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn versions_keep_their_order_for_alpn() {
        let c = Config::parse(&with_upstream("transport:\n  versions: [\"2\", 1.1]"), "t")
            .unwrap_or_else(|e| panic!("{e}"));
        let tr = &c.upstreams[0].transport;
        assert_eq!(tr.alpn(), [b"h2".to_vec(), b"http/1.1".to_vec()]);
        assert!(!tr.h2_only());
        let c = Config::parse(&with_upstream(""), "t").unwrap();
        assert_eq!(c.upstreams[0].transport.alpn(), [b"http/1.1".to_vec()]);
    }

    #[test]
    fn http2_targets_with_fastcgi_or_http1_probes_are_refused_at_their_key() {
        let cases = [
            (
                "transport: { protocol: fastcgi, versions: [\"2\"], fastcgi: { root: /srv } }",
                8,
                "upstreams.api.transport.versions",
                "FastCGI",
            ),
            (
                "health: { active: { uri: /health } }\ntransport: { versions: [\"2\"] }",
                8,
                "upstreams.api.health.active.uri",
                "not supported yet",
            ),
        ];
        for (extra, line, key, words) in cases {
            let e = upstream_err(extra);
            assert_eq!((e.line, e.key.as_str()), (line, key), "{e}");
            assert!(e.message.contains(words), "{e}");
        }
        let text = with_upstream("transport: { protocol: fastcgi, fastcgi: { root: /srv } }")
            .replace("[127.0.0.1:9001]", "[\"h2c://127.0.0.1:9001\"]");
        let e = Config::parse(&text, "t").expect_err("fastcgi over h2c");
        assert_eq!(e.key, "upstreams.api.targets[0]", "{e}");
        // A connect check is fine.
        let text = with_upstream("health: { active: { interval: 1s } }")
            .replace("[127.0.0.1:9001]", "[\"h2c://127.0.0.1:9001\"]");
        Config::parse(&text, "t").unwrap_or_else(|e| panic!("{e}"));
    }
}
