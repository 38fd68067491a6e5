//! Keys that only make sense on one kind of listener's upstreams.

use super::{Res, Validator};
use crate::config::{Action, Listener, ListenerKind, ProxyProtocol, Upstream};

impl Validator<'_> {
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
