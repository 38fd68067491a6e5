//! Keys that only make sense on one kind of listener's upstreams.

use super::{Res, Validator};
use crate::config::file::UpstreamFile;
use crate::config::spans::join;
use crate::config::{Action, Listener, ListenerKind, ProxyProtocol, Upstream};

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

    /// Pooled http connections are shared by many clients, so a PROXY header naming one of
    /// them would be wrong for the rest: only tcp listeners' upstreams may send one for now.
    pub(super) fn proxy_protocol_only_for_tcp(
        &self,
        listeners: &[Listener],
        upstreams: &[Upstream],
    ) -> Res<()> {
        for l in listeners {
            let ListenerKind::Http { routes } = &l.kind else {
                continue;
            };
            for r in routes {
                let Action::Proxy(u) = r.action else {
                    continue;
                };
                let up = &upstreams[u];
                if up.transport.proxy_protocol != ProxyProtocol::Off {
                    let key = format!("upstreams.{}.transport.proxy_protocol", up.name);
                    return Err(self.at_value(
                        &key,
                        format!(
                            "not supported yet on upstreams of http listeners (used by \
                             listener \"{}\"); tcp listeners' upstreams support it",
                            l.name
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::test_support::*;

    #[test]
    fn proxy_protocol_to_upstreams_of_http_routes_is_not_supported_yet() {
        let e = upstream_err("transport:\n  proxy_protocol: v1");
        assert_eq!(
            (e.line, e.key.as_str()),
            (9, "upstreams.api.transport.proxy_protocol")
        );
        assert!(e.message.starts_with("not supported yet"), "{e}");
        assert!(e.message.contains("tcp listeners"), "{e}");
    }
}
