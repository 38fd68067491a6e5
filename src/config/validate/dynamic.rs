//! `upstreams.*.dynamic`: DNS names whose records become targets at run time. Only the syntax
//! is checked here: a name that does not resolve yet is not an error (the upstream answers 503
//! until it does).

use std::net::{IpAddr, SocketAddr};

use super::{Res, Validator};
use crate::config::file::{DynamicFile, SrvFile, SrvPartsFile};
use crate::config::spans::join;
use crate::config::units::dur;
use crate::config::{defaults, Dynamic};

impl Validator<'_> {
    pub(super) fn dynamic(&self, key: &str, d: DynamicFile) -> Res<Dynamic> {
        let a = match d.a {
            Some(a) => {
                let k = join(key, "a");
                let name = a
                    .name
                    .filter(|n| !n.is_empty())
                    .ok_or_else(|| self.at_key(&k, "missing key `name` (the name to resolve)"))?;
                dns_name(&name).map_err(|m| self.at_value(&join(&k, "name"), m))?;
                let port = match a.port {
                    Some(0) => return Err(self.at_value(&join(&k, "port"), "must be 1-65535")),
                    Some(p) => p,
                    None => {
                        return Err(self.at_key(&k, "missing key `port` (A records carry none)"))
                    }
                };
                Some((name, port))
            }
            None => None,
        };
        let srv = match d.srv {
            Some(SrvFile::Name(s)) if s.is_empty() => None,
            Some(SrvFile::Name(s)) => {
                dns_name(&s).map_err(|m| self.at_value(&join(key, "srv"), m))?;
                Some(s)
            }
            Some(SrvFile::Parts(p)) => Some(self.srv_parts(&join(key, "srv"), p)?),
            None => None,
        };
        if a.is_none() && srv.is_none() {
            return Err(self.at_key(key, "dynamic needs `a` or `srv` (or both)"));
        }
        let refresh = dur(d.refresh, defaults::DNS_REFRESH).unwrap_or_default();
        if refresh < defaults::MIN_DNS_REFRESH {
            return Err(self.at_value(
                &join(key, "refresh"),
                format!("must be at least {:?}", defaults::MIN_DNS_REFRESH),
            ));
        }
        let mut resolvers = Vec::new();
        if let Some(list) = &d.resolvers {
            for (i, r) in list.items.iter().enumerate() {
                let k = list.item_key(&join(key, "resolvers"), i);
                resolvers.push(resolver_addr(r).map_err(|m| self.at_value(&k, m))?);
            }
        }
        Ok(Dynamic {
            a,
            srv,
            refresh,
            resolvers,
        })
    }
}

impl Validator<'_> {
    /// `{service, proto, name}` -> `_service._proto.name` (just `name` without a service).
    fn srv_parts(&self, key: &str, p: SrvPartsFile) -> Res<String> {
        let name = p
            .name
            .filter(|n| !n.is_empty())
            .ok_or_else(|| self.at_key(key, "missing key `name` (the domain of the service)"))?;
        dns_name(&name).map_err(|m| self.at_value(&join(key, "name"), m))?;
        let proto = p.proto.unwrap_or_else(|| defaults::SRV_PROTO.to_string());
        if proto != "tcp" && proto != "udp" {
            return Err(self.at_value(&join(key, "proto"), "expected tcp or udp"));
        }
        let Some(service) = p.service.filter(|s| !s.is_empty()) else {
            return Ok(name);
        };
        let full = format!("_{service}._{proto}.{name}");
        dns_name(&full).map_err(|m| self.at_value(&join(key, "service"), m))?;
        Ok(full)
    }
}

/// `"ip"` (port 53) or `"ip:port"` / `"[v6]:port"`.
fn resolver_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, defaults::DNS_PORT));
    }
    s.parse::<SocketAddr>().map_err(|_| {
        format!("invalid resolver \"{s}\" (expected an IP address or \"ip:port\", e.g. 10.96.0.10)")
    })
}

/// A DNS name as written: dot-separated labels of letters, digits, `-` and `_` (SRV names
/// start with `_service._proto`), an optional final dot.
fn dns_name(s: &str) -> Result<(), String> {
    let bare = s.strip_suffix('.').unwrap_or(s);
    let bad = |why: &str| Err(format!("invalid DNS name \"{s}\": {why}"));
    if bare.is_empty() || bare.len() > 253 {
        return bad("it must have 1 to 253 characters");
    }
    for label in bare.split('.') {
        if label.is_empty() || label.len() > 63 {
            return bad("each label must have 1 to 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return bad("only letters, digits, '-' and '_' are allowed");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::*;
    use crate::config::*;

    #[test]
    fn resolvers_take_an_ip_or_an_ip_and_port() {
        let cases = [
            ("10.96.0.10", Ok("10.96.0.10:53")),
            ("127.0.0.1:5353", Ok("127.0.0.1:5353")),
            ("::1", Ok("[::1]:53")),
            ("[::1]:5353", Ok("[::1]:5353")),
            ("dns.local", Err(())),
            ("10.0.0.1:", Err(())),
            ("", Err(())),
        ];
        for (text, want) in cases {
            let got = resolver_addr(text).map(|a| a.to_string()).map_err(|_| ());
            assert_eq!(got, want.map(String::from), "{text}");
        }
    }

    #[test]
    fn dns_names_allow_srv_underscores_and_a_final_dot() {
        for good in [
            "api",
            "api.default.svc.cluster.local.",
            "_http._tcp.api.svc",
        ] {
            assert!(dns_name(good).is_ok(), "{good}");
        }
        for bad in ["", ".", "a..b", "has space.example", "a/b", &"x".repeat(64)] {
            assert!(dns_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_dynamic_upstream_needs_no_static_targets() {
        let text = with_upstream(
            "dynamic:\n  a: { name: api.svc.local, port: 8080 }\n  srv: _api._tcp.svc.local\n  \
             refresh: 5s\n  resolvers: [127.0.0.1:5353, 10.96.0.10]",
        )
        .replace("    targets: [127.0.0.1:9001]\n", "");
        let c = Config::parse(&text, "t").unwrap_or_else(|e| panic!("{e}"));
        let u = &c.upstreams[0];
        assert!(u.targets.is_empty());
        let d = u.dynamic.as_ref().expect("dynamic");
        assert_eq!(d.a, Some(("api.svc.local".to_string(), 8080)));
        assert_eq!(d.srv.as_deref(), Some("_api._tcp.svc.local"));
        assert_eq!(d.refresh, Duration::from_secs(5));
        let r: Vec<String> = d.resolvers.iter().map(|a| a.to_string()).collect();
        assert_eq!(r, ["127.0.0.1:5353", "10.96.0.10:53"]);
    }

    #[test]
    fn dynamic_defaults_to_a_30s_refresh_and_the_system_resolvers() {
        let c = ok(&with_upstream("dynamic: { srv: _api._tcp.example }"));
        let d = c.upstreams[0].dynamic.as_ref().expect("dynamic");
        assert_eq!(d.refresh, defaults::DNS_REFRESH);
        assert!(d.resolvers.is_empty());
    }

    #[test]
    fn an_srv_name_may_be_given_as_service_proto_and_name() {
        let cases = [
            (
                "srv: { service: http, proto: tcp, name: api.ns.svc }",
                "_http._tcp.api.ns.svc",
            ),
            (
                "srv: { service: http, name: api.ns.svc }",
                "_http._tcp.api.ns.svc",
            ),
            ("srv: { name: _x._udp.api }", "_x._udp.api"),
        ];
        for (srv, want) in cases {
            let c = ok(&with_upstream(&format!("dynamic: {{ {srv} }}")));
            let d = c.upstreams[0].dynamic.as_ref().expect("dynamic");
            assert_eq!(d.srv.as_deref(), Some(want), "{srv}");
        }
    }

    #[test]
    fn dynamic_problems_are_reported_at_their_key() {
        let cases = [
            ("dynamic: {}", 8, "dynamic", "needs `a` or `srv`"),
            (
                "dynamic: { a: { port: 80 } }",
                8,
                "dynamic.a",
                "missing key `name`",
            ),
            (
                "dynamic: { a: { name: x.y } }",
                8,
                "dynamic.a",
                "missing key `port`",
            ),
            (
                "dynamic: { a: { name: x.y, port: 0 } }",
                8,
                "dynamic.a.port",
                "1-65535",
            ),
            (
                "dynamic: { a: { name: 'x y', port: 80 } }",
                8,
                "dynamic.a.name",
                "invalid DNS",
            ),
            (
                "dynamic: { srv: 'a..b' }",
                8,
                "dynamic.srv",
                "invalid DNS name",
            ),
            (
                "dynamic: { srv: { service: http } }",
                8,
                "dynamic.srv",
                "missing key `name`",
            ),
            (
                "dynamic: { srv: { name: a.b, proto: sctp } }",
                8,
                "dynamic.srv.proto",
                "tcp or udp",
            ),
            (
                "dynamic: { srv: { name: a.b, port: 1 } }",
                8,
                "dynamic.srv.port",
                "unknown key",
            ),
            (
                "dynamic: { srv: x.y, refresh: 100ms }",
                8,
                "dynamic.refresh",
                "at least",
            ),
            (
                "dynamic:\n  srv: x.y\n  resolvers: [a.b]",
                10,
                "dynamic.resolvers[0]",
                "invalid resolver",
            ),
            (
                "dynamic: { srv: x.y, ttl: 5s }",
                8,
                "dynamic.ttl",
                "unknown key",
            ),
        ];
        for (extra, line, key, message) in cases {
            let e = upstream_err(extra);
            let key = format!("upstreams.api.{key}");
            assert_eq!((e.line, e.key.as_str()), (line, key.as_str()), "{e}");
            assert!(e.message.contains(message), "{e}");
        }
    }
}
