//! Listeners and their routes.

use std::time::Duration;

use super::addr::parse_listen;
use super::{Res, Validator};
use crate::config::file::{ListenerFile, MatchFile, RespondFile, RouteFile};
use crate::config::spans::join;
use crate::config::units::{dur, Dur};
use crate::config::{
    defaults, Action, HostMatch, Http2Limits, ListenAddr, Listener, ListenerKind, ListenerTls,
    Match, PathMatch, Protocols, Respond, Route,
};

/// The keys of a `protocol: tcp` listener.
struct TcpListenerFile {
    has_routes: bool,
    upstream: Option<String>,
    idle_timeout: Option<Dur>,
    proxy_protocol: bool,
    tls: Option<ListenerTls>,
}

impl Validator<'_> {
    pub(super) fn listeners(
        &self,
        list: Option<Vec<ListenerFile>>,
        upstreams: &[&str],
        has_trusted: bool,
    ) -> Res<Vec<Listener>> {
        let list = list.unwrap_or_default();
        if list.is_empty() {
            return Err(self.at_key("listeners", "at least one listener is required"));
        }
        let mut out: Vec<Listener> = Vec::new();
        for (i, l) in list.into_iter().enumerate() {
            let key = format!("listeners[{i}]");
            let named = l.name.is_some();
            // A broken listener is set aside so the ones after it are still checked.
            let Some(listener) = self.keep(self.listener(&key, l, upstreams, has_trusted)) else {
                continue;
            };
            let name_key = join(&key, if named { "name" } else { "listen" });
            if let Some(other) = out.iter().find(|o| o.name == listener.name) {
                return Err(self.at_value(
                    &name_key,
                    format!("duplicate listener name \"{}\"", other.name),
                ));
            }
            // Port 0 asks the kernel for a fresh port each time, so it never collides.
            let fixed = !matches!(listener.addr, ListenAddr::Tcp(a) if a.port() == 0);
            if let Some(other) = out.iter().find(|o| fixed && o.addr == listener.addr) {
                return Err(self.at_value(
                    &join(&key, "listen"),
                    format!(
                        "duplicate listen address (also used by listener \"{}\")",
                        other.name
                    ),
                ));
            }
            out.push(listener);
        }
        Ok(out)
    }

    pub(super) fn listener(
        &self,
        key: &str,
        l: ListenerFile,
        upstreams: &[&str],
        has_trusted: bool,
    ) -> Res<Listener> {
        let name = l.name.unwrap_or_else(|| l.listen.clone());
        if name.is_empty() {
            return Err(self.at_value(&join(key, "name"), "must not be empty"));
        }
        let addr = parse_listen(&l.listen).map_err(|m| self.at_value(&join(key, "listen"), m))?;
        let tcp = match l.protocol.as_deref().unwrap_or(defaults::LISTENER_PROTOCOL) {
            "http" => false,
            "tcp" => true,
            other => {
                return Err(self.at_value(
                    &join(key, "protocol"),
                    format!("unknown protocol \"{other}\" (expected http or tcp)"),
                ))
            }
        };
        let proxy_protocol = l.proxy_protocol == Some(true);
        if proxy_protocol {
            let pp_key = join(key, "proxy_protocol");
            if matches!(addr, ListenAddr::Unix(_)) {
                return Err(self.at_value(
                    &pp_key,
                    "not supported on unix listeners (their peers have no address to check \
                     against trusted_proxies)",
                ));
            }
            if !has_trusted {
                return Err(self.at_value(
                    &pp_key,
                    "needs trusted_proxies: PROXY headers are accepted only from those peers",
                ));
            }
        }
        let tls = match l.tls {
            Some(t) => Some(self.listener_tls(&join(key, "tls"), t)?),
            None => None,
        };
        if tcp {
            // Layer 4 copies bytes: an HTTP version or HTTP/2 limits would mean nothing there.
            for (k, written) in [
                ("protocols", l.protocols.is_some()),
                ("http2", l.http2.is_some()),
            ] {
                if written {
                    return Err(self.at_key(
                        &join(key, k),
                        "only valid on http listeners; a tcp listener tunnels bytes",
                    ));
                }
            }
            let tcp = TcpListenerFile {
                has_routes: l.routes.is_some(),
                upstream: l.upstream,
                idle_timeout: l.idle_timeout,
                proxy_protocol,
                tls,
            };
            return self.tcp_listener(key, name, addr, tcp, upstreams);
        }
        let protocols = self.http_protocols(&join(key, "protocols"), l.protocols, tls.is_some())?;
        let http2 = self.http2_limits(&join(key, "http2"), l.http2)?;
        let mut tls = tls;
        if let Some(t) = &mut tls {
            t.alpn = super::http2::alpn(&protocols);
        }
        if l.upstream.is_some() {
            return Err(self.at_key(
                &join(key, "upstream"),
                "only valid with `protocol: tcp`; http listeners proxy through `routes`",
            ));
        }
        if l.idle_timeout.is_some() {
            return Err(self.at_key(
                &join(key, "idle_timeout"),
                "only valid with `protocol: tcp`; http listeners use `limits.idle_timeout`",
            ));
        }
        let routes_key = join(key, "routes");
        let routes = l.routes.unwrap_or_default();
        if routes.is_empty() {
            let at = if self.spans.knows(&routes_key) {
                routes_key.as_str()
            } else {
                key
            };
            return Err(self.at_key(at, "an http listener needs at least one route"));
        }
        let mut failed = None;
        let mut out = Vec::new();
        for (j, r) in routes.into_iter().enumerate() {
            // Every route is checked; the first failure fails the listener (set aside already).
            match self.route(&format!("{routes_key}[{j}]"), r, upstreams) {
                Ok(route) => out.push(route),
                Err(e) => {
                    failed.get_or_insert(e.clone());
                    self.keep::<()>(Err(e));
                }
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
        let routes = out;
        Ok(Listener {
            name,
            addr,
            kind: ListenerKind::Http { routes },
            tls,
            proxy_protocol,
            protocols,
            http2,
        })
    }

    fn tcp_listener(
        &self,
        key: &str,
        name: String,
        addr: ListenAddr,
        l: TcpListenerFile,
        upstreams: &[&str],
    ) -> Res<Listener> {
        if l.has_routes {
            return Err(self.at_key(
                &join(key, "routes"),
                "only valid on http listeners; a tcp listener names one `upstream`",
            ));
        }
        let up_key = join(key, "upstream");
        let Some(up_name) = l.upstream else {
            return Err(self.at_key(key, "a tcp listener needs an `upstream`"));
        };
        let Some(upstream) = upstreams.iter().position(|u| *u == up_name) else {
            return Err(self.at_value(&up_key, format!("unknown upstream \"{up_name}\"")));
        };
        Ok(Listener {
            name,
            addr,
            kind: ListenerKind::Tcp {
                upstream,
                idle_timeout: dur(l.idle_timeout, Duration::ZERO),
            },
            tls: l.tls,
            proxy_protocol: l.proxy_protocol,
            // Layer 4 tunnels bytes; these keys are refused on tcp listeners.
            protocols: Protocols {
                h1: false,
                h2: false,
                h2c: false,
            },
            http2: Http2Limits {
                max_concurrent_streams: defaults::HTTP2_MAX_CONCURRENT_STREAMS,
                initial_window: defaults::HTTP2_INITIAL_WINDOW as u32,
                max_header_list: defaults::HTTP2_MAX_HEADER_LIST as u32,
                max_resets_per_s: defaults::HTTP2_MAX_RESETS_PER_S,
            },
        })
    }

    pub(super) fn route(&self, key: &str, r: RouteFile, upstreams: &[&str]) -> Res<Route> {
        let matcher = match r.matcher {
            Some(m) => self.matcher(&join(key, "match"), m)?,
            None => Match::default(),
        };
        if let Some(p) = &r.strip_prefix {
            if !p.starts_with('/') {
                return Err(self.at_value(&join(key, "strip_prefix"), "must start with `/`"));
            }
        }
        let rewrite = match &r.rewrite {
            Some(t) => {
                let k = join(key, "rewrite");
                if !t.starts_with(['/', '{']) {
                    return Err(
                        self.at_value(&k, "must start with `/` (or a placeholder such as {path})")
                    );
                }
                Some(self.template(&k, t)?)
            }
            None => None,
        };
        let method = match &r.method {
            Some(m) => Some(self.method(&join(key, "method"), m)?),
            None => None,
        };
        let respond_key = join(key, "respond");
        // `respond:` with nothing under it still means "respond" (200, empty body).
        let respond = r
            .respond
            .or_else(|| self.spans.knows(&respond_key).then(RespondFile::default));
        let action = match (respond, &r.upstream) {
            (Some(_), Some(_)) => {
                return Err(self.at_key(
                    &join(key, "upstream"),
                    "a route takes exactly one of `respond` or `upstream`, not both",
                ))
            }
            (None, None) => {
                return Err(self.at_key(key, "a route needs one of `respond` or `upstream`"))
            }
            (Some(resp), None) => Action::Respond(self.respond(&respond_key, resp)?),
            (None, Some(name)) => match upstreams.iter().position(|u| u == name) {
                Some(i) => Action::Proxy(i),
                None => {
                    return Err(self.at_value(
                        &join(key, "upstream"),
                        format!("unknown upstream \"{name}\""),
                    ))
                }
            },
        };
        let handle_response =
            self.handle_response(&join(key, "handle_response"), r.handle_response, upstreams)?;
        let error_pages = self.error_pages(&join(key, "error_pages"), r.error_pages)?;
        if matches!(action, Action::Respond(_)) {
            for (k, set) in [
                ("handle_response", !handle_response.is_empty()),
                ("error_pages", !error_pages.is_empty()),
            ] {
                if set {
                    return Err(self.at_key(
                        &join(key, k),
                        "only valid on a route with an `upstream` (a `respond` route has no \
                         upstream response)",
                    ));
                }
            }
        }
        if r.name.as_deref() == Some("") {
            return Err(self.at_value(&join(key, "name"), "must not be empty"));
        }
        Ok(Route {
            name: r.name,
            matcher,
            strip_prefix: r.strip_prefix,
            rewrite,
            method,
            action,
            handle_response,
            error_pages,
        })
    }

    pub(super) fn matcher(&self, key: &str, m: MatchFile) -> Res<Match> {
        let mut out = Match::default();
        if let Some(hosts) = &m.host {
            for (i, h) in hosts.items.iter().enumerate() {
                let hm = HostMatch::parse(h)
                    .map_err(|e| self.at_value(&hosts.item_key(&join(key, "host"), i), e))?;
                out.hosts.push(hm);
            }
        }
        if let Some(p) = m.path {
            let pm = PathMatch::parse(&p).map_err(|e| self.at_value(&join(key, "path"), e))?;
            out.path = Some(pm);
        }
        if let Some(except) = &m.except {
            for (i, p) in except.items.iter().enumerate() {
                let pm = PathMatch::parse(p)
                    .map_err(|e| self.at_value(&except.item_key(&join(key, "except"), i), e))?;
                out.except.push(pm);
            }
        }
        if let Some(methods) = &m.methods {
            for (i, me) in methods.items.iter().enumerate() {
                out.methods
                    .push(self.method(&methods.item_key(&join(key, "methods"), i), me)?);
            }
        }
        if let Some(headers) = m.headers {
            for (name, value) in headers.0 {
                let k = join(&join(key, "headers"), &name);
                self.header_name(&k, &name)?;
                out.headers.push((name.to_ascii_lowercase(), value));
            }
        }
        Ok(out)
    }

    pub(super) fn respond(&self, key: &str, r: RespondFile) -> Res<Respond> {
        let status = r.status.unwrap_or(defaults::RESPOND_STATUS);
        if !(100..=599).contains(&status) {
            return Err(self.at_value(
                &join(key, "status"),
                format!("status {status} is out of range (100-599)"),
            ));
        }
        let body = self.template(&join(key, "body"), r.body.as_deref().unwrap_or(""))?;
        let mut headers = Vec::new();
        for (name, value) in r.headers.map(|h| h.0).unwrap_or_default() {
            let k = join(&join(key, "headers"), &name);
            self.header_name(&k, &name)?;
            headers.push((name, self.header_value(&k, &value)?));
        }
        Ok(Respond {
            status,
            body,
            headers,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::*;
    use crate::config::*;

    #[test]
    fn unknown_upstream_name_is_reported_with_its_line() {
        let e = assert_err(
            r#"
            listeners:
              - listen: 127.0.0.1:8080
                routes:
                  - upstream: apix
            upstreams:
              api:
                targets: [127.0.0.1:9001]
            "#,
            4,
            "listeners[0].routes[0].upstream",
            "unknown upstream \"apix\"",
        );
        assert_eq!(e.column, 19);
    }

    #[test]
    fn route_with_both_respond_and_upstream_is_rejected() {
        assert_err(
            r#"
            listeners:
              - listen: 127.0.0.1:8080
                routes:
                  - respond: { status: 204 }
                    upstream: api
            upstreams:
              api:
                targets: [127.0.0.1:9001]
            "#,
            5,
            "listeners[0].routes[0].upstream",
            "exactly one of `respond` or `upstream`",
        );
    }

    #[test]
    fn route_with_neither_respond_nor_upstream_is_rejected() {
        let e = assert_err(
            r#"
            listeners:
              - listen: 127.0.0.1:8080
                routes:
                  - respond: {}
                  - match: { path: /x }
                    strip_prefix: /x
            "#,
            5,
            "listeners[0].routes[1]",
            "needs one of `respond` or `upstream`",
        );
        assert_eq!(e.column, 9);
    }

    #[test]
    fn respond_without_fields_means_an_empty_200() {
        let c = ok(r#"
            listeners:
              - listen: 127.0.0.1:8080
                routes:
                  - respond:
        "#);
        let Action::Respond(r) = &routes(&c)[0].action else {
            panic!("expected respond")
        };
        assert_eq!((r.status, r.body.as_literal()), (200, Some("")));
    }

    #[test]
    fn tcp_listener_names_its_upstream_and_idle_timeout() {
        let c = ok(r#"
            trusted_proxies: [10.0.0.0/8]
            listeners:
              - name: postgres
                listen: "127.0.0.1:5433"
                protocol: tcp
                proxy_protocol: true
                upstream: db
                idle_timeout: 5m
            upstreams:
              db:
                targets: [127.0.0.1:5432, unix//run/pg.sock]
                transport: { proxy_protocol: v2 }
            "#);
        let l = &c.listeners[0];
        assert!(l.proxy_protocol);
        let ListenerKind::Tcp {
            upstream,
            idle_timeout,
        } = l.kind
        else {
            panic!("expected a tcp listener");
        };
        assert_eq!(upstream, 0);
        assert_eq!(idle_timeout, Some(Duration::from_secs(300)));
        assert_eq!(c.upstreams[0].transport.proxy_protocol, ProxyProtocol::V2);
        let c = ok("listeners: [{ listen: \"127.0.0.1:1\", protocol: tcp, upstream: u }]\n\
                    upstreams: { u: { targets: [127.0.0.1:2], transport: { proxy_protocol: v1 } } }\n");
        assert!(!c.listeners[0].proxy_protocol);
        assert!(matches!(
            c.listeners[0].kind,
            ListenerKind::Tcp {
                idle_timeout: None,
                ..
            }
        ));
        assert_eq!(c.upstreams[0].transport.proxy_protocol, ProxyProtocol::V1);
    }

    #[test]
    fn tcp_listener_mistakes_are_located() {
        let up = "upstreams: { db: { targets: [127.0.0.1:5432] } }\n";
        let e = assert_err(
            &format!(
                "listeners:\n  - listen: 127.0.0.1:1\n    protocol: tcp\n    upstream: dbx\n{up}"
            ),
            4,
            "listeners[0].upstream",
            "unknown upstream \"dbx\"",
        );
        assert_eq!(e.column, 15);
        assert_err(
            &format!("listeners:\n  - listen: 127.0.0.1:1\n    protocol: tcp\n{up}"),
            2,
            "listeners[0]",
            "a tcp listener needs an `upstream`",
        );
        assert_err(
            &format!(
                "listeners:\n  - listen: 127.0.0.1:1\n    protocol: tcp\n    upstream: db\n    \
                 routes: [{{ upstream: db }}]\n{up}"
            ),
            5,
            "listeners[0].routes",
            "only valid on http listeners",
        );
        assert_err(
            "listeners: [{ listen: \"127.0.0.1:1\", protocol: udp }]\n",
            1,
            "listeners[0].protocol",
            "unknown protocol \"udp\"",
        );
    }

    #[test]
    fn proxy_protocol_listener_needs_trusted_proxies_and_an_ip_listener() {
        let route = "    routes: [{ respond: {} }]\n";
        assert_err(
            &format!("listeners:\n  - listen: 127.0.0.1:1\n    proxy_protocol: true\n{route}"),
            3,
            "listeners[0].proxy_protocol",
            "needs trusted_proxies",
        );
        assert_err(
            &format!(
                "trusted_proxies: [127.0.0.1]\nlisteners:\n  - listen: unix//tmp/rw.sock\n    \
                 proxy_protocol: true\n{route}"
            ),
            4,
            "listeners[0].proxy_protocol",
            "not supported on unix listeners",
        );
        let c = ok(&format!(
            "trusted_proxies: [127.0.0.1]\nlisteners:\n  - listen: 127.0.0.1:1\n    \
             proxy_protocol: true\n{route}"
        ));
        assert!(c.listeners[0].proxy_protocol);
    }

    #[test]
    fn tcp_only_keys_on_an_http_listener_are_rejected() {
        assert_err(
            r#"
            listeners:
              - listen: 127.0.0.1:8080
                upstream: api
                routes: [{ respond: {} }]
            "#,
            3,
            "listeners[0].upstream",
            "protocol: tcp",
        );
    }

    #[test]
    fn listen_address_forms_are_parsed() {
        let c = ok(r#"
            listeners:
              - { listen: "0.0.0.0:8080", routes: [{ respond: {} }] }
              - { listen: "[::]:8080", routes: [{ respond: {} }] }
              - { listen: "localhost:8081", routes: [{ respond: {} }] }
              - { listen: ":8082", routes: [{ respond: {} }] }
              - { listen: "unix//tmp/rw.sock", routes: [{ respond: {} }] }
              - { listen: "127.0.0.1:0", routes: [{ respond: {} }] }
              - { name: again, listen: "127.0.0.1:0", routes: [{ respond: {} }] }
        "#);
        let a: Vec<&ListenAddr> = c.listeners.iter().map(|l| &l.addr).collect();
        assert_eq!(*a[0], ListenAddr::Tcp("0.0.0.0:8080".parse().unwrap()));
        assert_eq!(*a[1], ListenAddr::Tcp("[::]:8080".parse().unwrap()));
        assert!(matches!(a[2], ListenAddr::Tcp(s) if s.ip().is_loopback() && s.port() == 8081));
        assert_eq!(*a[3], ListenAddr::Tcp("0.0.0.0:8082".parse().unwrap()));
        assert_eq!(*a[4], ListenAddr::Unix("/tmp/rw.sock".into()));
    }

    #[test]
    fn bad_listen_addresses_are_rejected() {
        for (listen, message) in [
            ("8080", "expected \\\"host:port\\\""),
            ("http://0.0.0.0:8080", "not a URL"),
            ("0.0.0.0:99999", "expected \\\"host:port\\\""),
        ] {
            let text = format!(
                "listeners:\n  - routes: [{{ respond: {{}} }}]\n    listen: \"{listen}\"\n"
            );
            let e = Config::parse(&text, "t").expect_err(listen);
            assert_eq!((e.line, e.key.as_str()), (3, "listeners[0].listen"), "{e}");
            assert!(
                e.to_string().contains(message.replace('\\', "").as_str()),
                "{e}"
            );
        }
        assert_err(
            "listeners:\n  - routes: []\n",
            2,
            "listeners[0]",
            "missing key `listen`",
        );
    }

    #[test]
    fn duplicate_listen_addresses_and_names_are_rejected() {
        assert_err(
            r#"
            listeners:
              - { name: a, listen: "127.0.0.1:8080", routes: [{ respond: {} }] }
              - { name: b, listen: "127.0.0.1:8080", routes: [{ respond: {} }] }
            "#,
            3,
            "listeners[1].listen",
            "duplicate listen address (also used by listener \"a\")",
        );
        assert_err(
            r#"
            listeners:
              - { name: a, listen: "127.0.0.1:8080", routes: [{ respond: {} }] }
              - name: a
                listen: "127.0.0.1:8081"
                routes: [{ respond: {} }]
            "#,
            3,
            "listeners[1].name",
            "duplicate listener name \"a\"",
        );
    }

    #[test]
    fn listeners_are_required_and_need_routes() {
        assert_err("", 1, "listeners", "at least one listener");
        assert_err("workers: 2\n", 1, "listeners", "at least one listener");
        assert_err(
            "listeners:\n  - listen: 127.0.0.1:1\n    routes: []\n",
            3,
            "listeners[0].routes",
            "at least one route",
        );
        assert_err(
            "listeners:\n  - listen: 127.0.0.1:1\n",
            2,
            "listeners[0]",
            "at least one route",
        );
    }

    #[test]
    fn route_values_are_validated_at_their_line() {
        let base = "listeners:\n  - listen: 127.0.0.1:1\n    routes:\n      - respond: {}\n";
        let cases = [
            (
                "match: { host: \"example.com:8080\" }",
                "match.host",
                "do not include a port",
            ),
            (
                "match: { host: [a.com, \"a.*.com\"] }",
                "match.host[1]",
                "wildcard",
            ),
            ("match: { path: api }", "match.path", "must start with `/`"),
            (
                "match: { path: \"~ ^/api/(v1\" }",
                "match.path",
                "invalid regex \"^/api/(v1\": ",
            ),
            (
                "match: { path: \"/api/v[0-9]+\" }",
                "match.path",
                "for a regex write `~ /api/v[0-9]+`",
            ),
            (
                "match: { host: [\"~ [\"] }",
                "match.host[0]",
                "invalid regex",
            ),
            (
                "match: { except: [/a, b] }",
                "match.except[1]",
                "must start with `/`",
            ),
            (
                "match: { methods: [\"GE T\"] }",
                "match.methods[0]",
                "invalid method",
            ),
            (
                "match: { headers: { \"X A\": b } }",
                "match.headers.X A",
                "invalid header name",
            ),
            ("strip_prefix: api", "strip_prefix", "must start with `/`"),
            ("rewrite: v2", "rewrite", "must start with `/`"),
            (
                "rewrite: \"/{nope}\"",
                "rewrite",
                "unknown placeholder {nope}",
            ),
        ];
        for (extra, key, message) in cases {
            let e = Config::parse(&format!("{base}        {extra}\n"), "t").expect_err(extra);
            assert_eq!(e.line, 5, "{e}");
            assert_eq!(e.key, format!("listeners[0].routes[0].{key}"), "{e}");
            assert!(e.message.contains(message), "{e}");
        }
        let e =
            Config::parse(&format!("{base}        respond: {{ status: 600 }}\n"), "t").unwrap_err();
        assert!(e.message.contains("duplicate key `respond`"), "{e}");
        let text = concat!(
            "listeners:\n  - listen: 127.0.0.1:1\n    routes:\n",
            "      - respond:\n          status: 600\n"
        );
        let e = Config::parse(text, "t").unwrap_err();
        assert_eq!(
            (e.line, e.key.as_str()),
            (5, "listeners[0].routes[0].respond.status"),
            "{e}"
        );
    }
}
