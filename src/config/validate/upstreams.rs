//! Upstreams: targets, load balancing, health checks, transport.

use std::time::Duration;

use regex::Regex;

use super::addr::parse_target;
use super::{is_token, Res, Validator};
use crate::config::file::{
    ActiveHealthFile, HealthFile, LbFile, PassiveHealthFile, TargetFile, TransportFile,
    UpstreamFile,
};
use crate::config::spans::join;
use crate::config::units::{dur, Size};
use crate::config::{
    defaults, ActiveHealth, Forwarded, HeaderOps, Health, HttpVersion, Lb, PassiveHealth, Policy,
    ProxyProtocol, Split, StatusSet, Target, Transport, Upstream, UpstreamTls,
};

const POLICIES: &str = "random, random_choose, first, round_robin, weighted_round_robin, \
     least_conn, ip_hash, client_ip_hash, uri_hash, query, header, cookie, p2c_ewma";

impl Validator<'_> {
    /// `tcp_user`: the tcp listener this upstream serves, if any.
    pub(super) fn upstream(
        &self,
        name: String,
        u: UpstreamFile,
        tcp_user: Option<&str>,
    ) -> Res<Upstream> {
        let key = join("upstreams", &name);
        if name.is_empty() {
            return Err(self.at_key(&key, "an upstream name must not be empty"));
        }
        if let Some(listener) = tcp_user {
            self.layer4_upstream(&key, &u, listener)?;
        }
        let mut targets = Vec::new();
        let mut schemes = Vec::new();
        for (i, t) in u.targets.unwrap_or_default().into_iter().enumerate() {
            let (target, scheme) = self.target(&format!("{key}.targets[{i}]"), t)?;
            targets.push(target);
            schemes.push(scheme);
        }
        let dynamic = match u.dynamic {
            Some(d) => Some(self.dynamic(&join(&key, "dynamic"), d)?),
            None => None,
        };
        let main_targets = targets.len();
        let mut split = None;
        if let Some(sp) = u.split {
            let sk = join(&key, "split");
            for (i, t) in sp.targets.unwrap_or_default().into_iter().enumerate() {
                let (target, scheme) = self.target(&format!("{sk}.targets[{i}]"), t)?;
                targets.push(target);
                schemes.push(scheme);
            }
            if targets.len() == main_targets {
                return Err(self.at_key(&sk, "split needs at least one target"));
            }
            let percent = sp.percent.unwrap_or(defaults::SPLIT_PERCENT);
            if percent > 100 {
                return Err(self.at_value(&join(&sk, "percent"), "must be between 0 and 100"));
            }
            split = Some(Split {
                start: main_targets,
                percent,
            });
        }
        if main_targets == 0 && dynamic.is_none() {
            let k = join(&key, "targets");
            let at = if self.spans.knows(&k) {
                k.as_str()
            } else {
                key.as_str()
            };
            return Err(self.at_key(at, "an upstream needs at least one target"));
        }
        let lb = self.lb(&join(&key, "lb"), u.lb.unwrap_or_default())?;
        let mut health = match u.health {
            Some(h) => self.health(&join(&key, "health"), h)?,
            None => Health::default(),
        };
        // A lone target has nowhere else to send traffic: marking it down by default would only
        // turn its 502s into 503s and delay its recovery (nginx never marks a lone server down).
        // Written out, `fail_duration` applies as written.
        if targets.len() < 2
            && !self
                .spans
                .knows(&join(&key, "health.passive.fail_duration"))
        {
            health.passive.fail_duration = None;
        }
        let transport_file = u.transport.unwrap_or_default();
        let https_ports = transport_file.https_ports.clone().unwrap_or_default();
        let mut transport = self.transport(&join(&key, "transport"), transport_file)?;
        self.upstream_tls(&key, &mut targets, &schemes, &mut transport, &https_ports)?;
        self.h2_targets(&key, &mut targets, &transport, &health, tcp_user.is_some())?;
        if transport.fastcgi.is_some() {
            self.fastcgi_upstream(&key, &u.headers, &health, &transport, &u.response_buffer)?;
        }
        let h = u.headers.unwrap_or_default();
        let headers = HeaderOps {
            request: self.header_ops(&join(&key, "headers.request"), h.request)?,
            response: self.header_ops(&join(&key, "headers.response"), h.response)?,
        };
        let forwarded = match u.forwarded.as_deref().unwrap_or(defaults::FORWARDED) {
            "xff" => Forwarded::Xff,
            "rfc7239" => Forwarded::Rfc7239,
            "off" => Forwarded::Off,
            other => {
                return Err(self.at_value(
                    &join(&key, "forwarded"),
                    format!("unknown forwarded mode \"{other}\" (expected xff, rfc7239 or off)"),
                ))
            }
        };
        // flush_interval needs nothing at run time: every upstream read is written to the
        // client at once, which meets any interval (and -1, and event streams).
        let mut buffers = [defaults::BODY_BUFFER; 2];
        for (i, (k, v)) in [
            ("request_buffer", &u.request_buffer),
            ("response_buffer", &u.response_buffer),
        ]
        .into_iter()
        .enumerate()
        {
            if let Some(Size(n)) = v {
                if *n > defaults::MAX_BODY_BUFFER {
                    return Err(self.at_value(
                        &join(&key, k),
                        format!(
                            "at most {} MiB (held per connection)",
                            defaults::MAX_BODY_BUFFER >> 20
                        ),
                    ));
                }
                buffers[i] = *n;
            }
        }
        transport.stream_timeout = dur(u.stream_timeout, Duration::ZERO);
        transport.stream_close_delay = dur(u.stream_close_delay, Duration::ZERO);
        Ok(Upstream {
            name,
            targets,
            split,
            lb,
            health,
            transport,
            headers,
            forwarded,
            request_buffer: buffers[0],
            response_buffer: buffers[1],
            dynamic,
        })
    }

    /// The target and its explicit scheme: `Some(true)` for `https://`, `Some(false)` for
    /// `http://`, `None` when none was written.
    pub(super) fn target(&self, key: &str, t: TargetFile) -> Res<(Target, Option<bool>)> {
        let (address, address_key, weight, max_connections) = match t {
            TargetFile::Address(a) => (a, key.to_string(), None, None),
            TargetFile::Detailed(m) => {
                (m.address, join(key, "address"), m.weight, m.max_connections)
            }
        };
        let addr = parse_target(&address).map_err(|m| self.at_value(&address_key, m))?;
        let weight = weight.unwrap_or(defaults::TARGET_WEIGHT);
        if weight == 0 {
            return Err(self.at_value(&join(key, "weight"), "must be at least 1"));
        }
        let h2c = is_h2c(&address);
        // h2c is cleartext: an explicit "not TLS", like http://.
        let scheme = match address.split_once("://") {
            _ if h2c => Some(false),
            Some((s, _)) => Some(s.eq_ignore_ascii_case("https")),
            None => None,
        };
        let target = Target {
            addr,
            tls: false,
            h2c,
            weight,
            max_connections: max_connections.filter(|&n| n > 0),
            source: Default::default(),
            fallbacks: Vec::new(),
        };
        Ok((target, scheme))
    }

    pub(super) fn lb(&self, key: &str, lb: LbFile) -> Res<Lb> {
        let policy = match lb.policy.as_deref().unwrap_or(defaults::LB_POLICY) {
            "random" => Policy::Random,
            "random_choose" => Policy::RandomChoose,
            "first" => Policy::First,
            "round_robin" => Policy::RoundRobin,
            "weighted_round_robin" => Policy::WeightedRoundRobin,
            "least_conn" => Policy::LeastConn,
            "ip_hash" => Policy::IpHash,
            "client_ip_hash" => Policy::ClientIpHash,
            "uri_hash" => Policy::UriHash,
            "query" => Policy::Query,
            "header" => Policy::Header,
            "cookie" => Policy::Cookie,
            "p2c_ewma" => Policy::P2cEwma,
            other => {
                return Err(self.at_value(
                    &join(key, "policy"),
                    format!("unknown lb policy \"{other}\" (expected one of {POLICIES})"),
                ))
            }
        };
        let choose = lb.choose.unwrap_or(defaults::LB_CHOOSE);
        if choose < 2 {
            return Err(self.at_value(&join(key, "choose"), "must be at least 2"));
        }
        let mut lb_key = lb.key.clone().unwrap_or_default();
        match policy {
            Policy::Header | Policy::Query if lb_key.is_empty() => {
                let what = if policy == Policy::Header {
                    "a header name"
                } else {
                    "a query key"
                };
                let k = join(key, "key");
                let at = if self.spans.knows(&k) {
                    k
                } else {
                    join(key, "policy")
                };
                return Err(self.at_value(&at, format!("this policy needs `key`: {what}")));
            }
            Policy::Header => self.header_name(&join(key, "key"), &lb_key)?,
            Policy::Cookie if lb_key.is_empty() => lb_key = defaults::DEFAULT_COOKIE.to_string(),
            Policy::Cookie if !is_token(&lb_key) => {
                return Err(self.at_value(&join(key, "key"), "not a valid cookie name"));
            }
            Policy::Query | Policy::Cookie => {}
            _ if !lb_key.is_empty() => {
                return Err(self.at_value(
                    &join(key, "key"),
                    "only the header, query and cookie policies use `key`",
                ));
            }
            _ => {}
        }
        let secret = lb.secret.clone().unwrap_or_default();
        if !secret.is_empty() && policy != Policy::Cookie {
            return Err(self.at_value(&join(key, "secret"), "only the cookie policy uses `secret`"));
        }
        let retry_methods = match &lb.retry_methods {
            Some(list) => list
                .items
                .iter()
                .enumerate()
                .map(|(i, m)| self.method(&list.item_key(&join(key, "retry_methods"), i), m))
                .collect::<Res<Vec<_>>>()?,
            None => defaults::RETRY_METHODS
                .iter()
                .map(|m| m.to_string())
                .collect(),
        };
        Ok(Lb {
            policy,
            choose,
            key: lb_key,
            secret,
            retries: lb.retries.unwrap_or(defaults::LB_RETRIES),
            try_duration: dur(lb.try_duration, defaults::TRY_DURATION),
            try_interval: dur(lb.try_interval, defaults::TRY_INTERVAL).unwrap_or_default(),
            retry_methods,
            retry_match: match lb.retry_match {
                Some(m) => Some(self.matcher(&join(key, "retry_match"), m)?),
                None => None,
            },
        })
    }

    pub(super) fn health(&self, key: &str, h: HealthFile) -> Res<Health> {
        let active = match h.active {
            Some(a) => Some(self.active_health(&join(key, "active"), a)?),
            None => None,
        };
        let passive = match h.passive {
            Some(p) => self.passive_health(&join(key, "passive"), p)?,
            None => PassiveHealth::default(),
        };
        Ok(Health { active, passive })
    }

    pub(super) fn active_health(&self, key: &str, a: ActiveHealthFile) -> Res<ActiveHealth> {
        let uri = a.uri.filter(|u| !u.is_empty());
        if let Some(u) = &uri {
            if !u.starts_with('/') || u.bytes().any(|b| b <= b' ' || b == 0x7f) {
                return Err(self.at_value(
                    &join(key, "uri"),
                    "must be an origin-form URI starting with / (no spaces)",
                ));
            }
        }
        let method = a.method.as_deref().unwrap_or(defaults::PROBE_METHOD);
        let method = match method.to_ascii_uppercase().as_str() {
            "GET" => "GET".to_string(),
            "HEAD" => "HEAD".to_string(),
            other => {
                return Err(self.at_value(
                    &join(key, "method"),
                    format!("unsupported probe method \"{other}\" (expected GET or HEAD)"),
                ))
            }
        };
        let interval = dur(a.interval, defaults::PROBE_INTERVAL).unwrap_or_default();
        if interval < defaults::MIN_PROBE_INTERVAL {
            return Err(self.at_value(
                &join(key, "interval"),
                format!("must be at least {:?}", defaults::MIN_PROBE_INTERVAL),
            ));
        }
        let timeout = dur(a.timeout, defaults::PROBE_TIMEOUT).unwrap_or(interval);
        let expect_status = match a.expect_status.as_deref() {
            None | Some("") => StatusSet(vec![defaults::PROBE_EXPECT_STATUS]),
            Some(s) => {
                StatusSet::parse(s).map_err(|m| self.at_value(&join(key, "expect_status"), m))?
            }
        };
        let body =
            match a.body.as_deref() {
                None | Some("") => None,
                Some(re) => Some(Regex::new(re).map_err(|e| {
                    self.at_value(&join(key, "body"), format!("invalid regex: {e}"))
                })?),
            };
        let mut headers = Vec::new();
        for (name, value) in a.headers.map(|h| h.0).unwrap_or_default() {
            let k = join(&join(key, "headers"), &name);
            self.header_name(&k, &name)?;
            if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
                return Err(self.at_value(&k, "header values must not contain CR, LF or NUL"));
            }
            headers.push((name, value));
        }
        let counts = |k: &str, v: Option<u32>, default| match v.unwrap_or(default) {
            0 => Err(self.at_value(&join(key, k), "must be at least 1")),
            n => Ok(n),
        };
        Ok(ActiveHealth {
            uri,
            port: a.port.unwrap_or(defaults::PROBE_PORT),
            method,
            interval,
            timeout,
            expect_status,
            body,
            headers,
            fails: counts("fails", a.fails, defaults::PROBE_FAILS)?,
            passes: counts("passes", a.passes, defaults::PROBE_PASSES)?,
            max_latency: dur(a.max_latency, Duration::ZERO),
        })
    }

    pub(super) fn passive_health(&self, key: &str, p: PassiveHealthFile) -> Res<PassiveHealth> {
        let max_fails = p.max_fails.unwrap_or(defaults::PASSIVE_MAX_FAILS);
        if max_fails == 0 || max_fails as usize > defaults::MAX_PASSIVE_FAILS {
            return Err(self.at_value(
                &join(key, "max_fails"),
                format!("must be between 1 and {}", defaults::MAX_PASSIVE_FAILS),
            ));
        }
        let mut unhealthy_status = StatusSet::default();
        if let Some(list) = &p.unhealthy_status {
            for (i, s) in list.items.iter().enumerate() {
                let k = list.item_key(&join(key, "unhealthy_status"), i);
                let set = StatusSet::parse(s).map_err(|m| self.at_value(&k, m))?;
                unhealthy_status.0.extend(set.0);
            }
        }
        Ok(PassiveHealth {
            fail_duration: dur(p.fail_duration, defaults::FAIL_DURATION),
            max_fails,
            unhealthy_status,
            unhealthy_latency: dur(p.unhealthy_latency, Duration::ZERO),
            unhealthy_request_count: p.unhealthy_request_count.filter(|&n| n > 0),
        })
    }

    pub(super) fn transport(&self, key: &str, t: TransportFile) -> Res<Transport> {
        match t
            .protocol
            .as_deref()
            .unwrap_or(defaults::TRANSPORT_PROTOCOL)
        {
            "http" | "fastcgi" => {}
            other => {
                return Err(self.at_value(
                    &join(key, "protocol"),
                    format!("unknown transport protocol \"{other}\" (expected http or fastcgi)"),
                ))
            }
        }
        let versions = match &t.versions {
            Some(list) => self.versions(&join(key, "versions"), list)?,
            None => vec![HttpVersion::Http11],
        };
        let fastcgi = self.fastcgi(key, &t)?;
        let proxy_protocol = match t
            .proxy_protocol
            .as_deref()
            .unwrap_or(defaults::PROXY_PROTOCOL)
        {
            "off" => ProxyProtocol::Off,
            "v1" => ProxyProtocol::V1,
            "v2" => ProxyProtocol::V2,
            other => {
                return Err(self.at_value(
                    &join(key, "proxy_protocol"),
                    format!("unknown proxy_protocol \"{other}\" (expected off, v1 or v2)"),
                ))
            }
        };
        let tls = match t.tls {
            Some(f) => {
                let cert = f.client_cert.filter(|c| !c.is_empty());
                let private = f.client_key.filter(|k| !k.is_empty());
                let client_cert = if cert.is_none() && private.is_none() {
                    None
                } else {
                    let k = join(key, "tls");
                    Some(self.cert_paths(&k, "client_cert", cert, "client_key", private)?)
                };
                Some(UpstreamTls {
                    ca: f
                        .ca
                        .map(|c| c.items.iter().map(|p| self.path(p)).collect())
                        .unwrap_or_default(),
                    client_cert,
                    server_name: f.server_name.filter(|s| !s.is_empty()),
                    insecure_skip_verify: f
                        .insecure_skip_verify
                        .unwrap_or(defaults::INSECURE_SKIP_VERIFY),
                    handshake_timeout: dur(
                        f.handshake_timeout,
                        defaults::UPSTREAM_TLS_HANDSHAKE_TIMEOUT,
                    ),
                    except_ports: f.except_ports.unwrap_or_default(),
                    curves: self.curves(&join(key, "tls"), f.renegotiation, f.curves)?,
                })
            }
            None => None,
        };
        Ok(Transport {
            dial_timeout: dur(t.dial_timeout, defaults::DIAL_TIMEOUT),
            response_header_timeout: dur(t.response_header_timeout, Duration::ZERO),
            read_timeout: dur(t.read_timeout, Duration::ZERO),
            write_timeout: dur(t.write_timeout, Duration::ZERO),
            keepalive: t.keepalive.unwrap_or(defaults::KEEPALIVE),
            idle_timeout: dur(t.idle_timeout, defaults::POOL_IDLE_TIMEOUT),
            max_idle_per_worker: t
                .max_idle_per_worker
                .unwrap_or(defaults::MAX_IDLE_PER_WORKER),
            tls,
            proxy_protocol,
            queue_timeout: dur(t.queue_timeout, defaults::QUEUE_TIMEOUT),
            max_connections: t.max_connections.filter(|&n| n > 0),
            max_response_header: self.max_response_header(key, t.max_response_header)?,
            keepalive_interval: dur(t.keepalive_interval, defaults::KEEPALIVE_INTERVAL),
            local_address: match t.local_address.as_deref() {
                None | Some("") => None,
                Some(a) => Some(a.parse().map_err(|_| {
                    self.at_value(
                        &join(key, "local_address"),
                        format!("\"{a}\" is not an IP address (e.g. 10.0.0.5)"),
                    )
                })?),
            },
            stream_timeout: None,
            forward_proxy: self.forward_proxy(key, t.forward_proxy_url.as_deref())?,
            fallback: super::knobs::fallback(t.dial_fallback_delay),
            expect_continue_timeout: dur(t.expect_continue_timeout, Duration::ZERO),
            read_buffer: self.socket_buffer(key, "read_buffer", t.read_buffer)?,
            write_buffer: self.socket_buffer(key, "write_buffer", t.write_buffer)?,
            keepalive_idle_conns: t.keepalive_idle_conns.filter(|&n| n > 0),
            stream_close_delay: None,
            fastcgi,
            versions,
        })
    }
}

impl Validator<'_> {
    fn max_response_header(&self, key: &str, v: Option<Size>) -> Res<usize> {
        let n = v.map_or(defaults::MAX_RESPONSE_HEADER, |Size(n)| n);
        if !(defaults::MIN_MAX_RESPONSE_HEADER..=defaults::MAX_BODY_BUFFER).contains(&n) {
            return Err(self.at_value(
                &join(key, "max_response_header"),
                format!(
                    "must be between {} KiB and {} MiB",
                    defaults::MIN_MAX_RESPONSE_HEADER >> 10,
                    defaults::MAX_BODY_BUFFER >> 20
                ),
            ));
        }
        Ok(n as usize)
    }

    /// `transport.tls.renegotiation` (only `never` exists with rustls) and `transport.tls.curves`
    /// (names rustls's ring provider implements), giving the curves in the order written.
    fn curves(
        &self,
        key: &str,
        renegotiation: Option<String>,
        curves: Option<crate::config::file::Strings>,
    ) -> Res<Vec<String>> {
        match renegotiation.as_deref() {
            None | Some("never") => {}
            Some(other @ ("once" | "freely")) => {
                return Err(self.at_value(
                    &join(key, "renegotiation"),
                    format!(
                        "\"{other}\" is not possible: rustls never renegotiates (TLS 1.3 has no \
                         renegotiation); use never"
                    ),
                ))
            }
            Some(other) => {
                return Err(self.at_value(
                    &join(key, "renegotiation"),
                    format!("unknown renegotiation \"{other}\" (expected never)"),
                ))
            }
        }
        let mut out = Vec::new();
        if let Some(list) = curves {
            for (i, name) in list.items.iter().enumerate() {
                let k = list.item_key(&join(key, "curves"), i);
                let canonical =
                    crate::net::tls::curve_name(name).map_err(|m| self.at_value(&k, m))?;
                out.push(canonical.to_string());
            }
            if out.is_empty() {
                return Err(self.at_value(&join(key, "curves"), "name at least one curve"));
            }
        }
        Ok(out)
    }

    /// `transport.versions`: "1.1" and "2", in the order ALPN offers them.
    fn versions(&self, key: &str, list: &[serde_yaml::Value]) -> Res<Vec<HttpVersion>> {
        if list.is_empty() {
            return Err(self.at_value(key, "at least one version is required (use [\"1.1\"])"));
        }
        let mut out = Vec::new();
        for (i, v) in list.iter().enumerate() {
            let text = match v {
                serde_yaml::Value::String(s) => s.clone(),
                serde_yaml::Value::Number(n) => n.to_string(),
                other => format!("{other:?}"),
            };
            let version = match text.as_str() {
                "1.1" => HttpVersion::Http11,
                "2" => HttpVersion::Http2,
                _ => {
                    return Err(self.at_value(
                        &format!("{key}[{i}]"),
                        format!("unknown HTTP version \"{text}\" (expected \"1.1\" or \"2\")"),
                    ))
                }
            };
            if !out.contains(&version) {
                out.push(version);
            }
        }
        Ok(out)
    }
}

/// `h2c://` and `unix+h2c//` targets speak cleartext HTTP/2.
fn is_h2c(address: &str) -> bool {
    let a = address.as_bytes();
    a.len() >= 6 && a[..6].eq_ignore_ascii_case(b"h2c://") || address.starts_with("unix+h2c/")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::*;
    use crate::config::*;

    #[test]
    fn streaming_keys_are_accepted_and_buffers_are_bounded() {
        let c = Config::parse(
            &with_upstream("flush_interval: -1\nrequest_buffer: 4KiB\nresponse_buffer: 1MiB"),
            "t.yaml",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.upstreams[0].request_buffer, 4096);
        assert_eq!(c.upstreams[0].response_buffer, 1 << 20);
        let e = upstream_err("request_buffer: 1GiB");
        assert_eq!(
            (e.line, e.key.as_str()),
            (8, "upstreams.api.request_buffer"),
            "{e}"
        );
        assert!(e.message.contains("at most 16 MiB"), "{e}");
    }

    #[test]
    fn upstream_defaults_follow_the_contract() {
        let c = Config::parse(&with_upstream(""), "t.yaml").unwrap();
        let u = &c.upstreams[0];
        assert_eq!(u.name, "api");
        assert_eq!(u.lb.policy, Policy::RandomChoose);
        assert_eq!(u.lb.choose, 2);
        assert_eq!(u.lb.retries, 0);
        assert_eq!(u.lb.try_duration, None);
        assert_eq!(u.lb.try_interval, Duration::from_millis(250));
        assert_eq!(u.lb.retry_methods, ["GET"]);
        let t = &u.transport;
        assert_eq!(t.dial_timeout, Some(Duration::from_secs(3)));
        assert_eq!(t.queue_timeout, Some(Duration::from_secs(5)));
        assert_eq!(t.max_connections, None);
        assert_eq!(t.response_header_timeout, None);
        assert_eq!(t.read_timeout, None);
        assert_eq!(t.write_timeout, None);
        assert!(t.keepalive);
        assert_eq!(t.idle_timeout, Some(Duration::from_secs(60)));
        assert_eq!(t.max_idle_per_worker, 32);
        assert!(u.headers.request.is_empty() && u.headers.response.is_empty());
        assert_eq!(u.forwarded, Forwarded::Xff);
        assert_eq!(u.targets[0].weight, 1);
        assert_eq!(u.targets[0].max_connections, None);
        // Passive health is on by default (10s) for two targets or more, off for a lone one
        // unless written; `fail_duration: 0s` turns it off.
        assert_eq!(u.health.passive.fail_duration, None, "a lone target");
        let two = |extra: &str| {
            let text = with_upstream(extra)
                .replace("[127.0.0.1:9001]", "[127.0.0.1:9001, 127.0.0.1:9002]");
            let c = Config::parse(&text, "t.yaml").unwrap_or_else(|e| panic!("{e}"));
            c.upstreams[0].health.passive.fail_duration
        };
        let ten = Some(Duration::from_secs(10));
        assert_eq!(two(""), ten);
        assert_eq!(two("health: { passive: { max_fails: 2 } }"), ten);
        assert_eq!(two("health: { passive: { fail_duration: 0s } }"), None);
        let c = Config::parse(
            &with_upstream("health: { passive: { fail_duration: 3s } }"),
            "t.yaml",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            c.upstreams[0].health.passive.fail_duration,
            Some(Duration::from_secs(3)),
            "written, it applies to a lone target too"
        );
    }

    #[test]
    fn forward_proxy_url_takes_http_https_and_socks5_with_credentials() {
        let c = Config::parse(
            &with_upstream(
                "transport: { forward_proxy_url: \"socks5://u%40x:pw@127.0.0.1\", \
                 dial_fallback_delay: -1, read_buffer: 4KiB }",
            ),
            "t.yaml",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let t = &c.upstreams[0].transport;
        let fp = t.forward_proxy.as_ref().expect("forward proxy");
        assert_eq!(fp.kind, crate::config::ProxyKind::Socks5);
        assert_eq!(fp.addr, "127.0.0.1:1080".parse().unwrap());
        assert_eq!(fp.credentials, Some(("u@x".into(), "pw".into())));
        assert!(!format!("{fp:?}").contains("pw"), "{fp:?}");
        assert_eq!(t.fallback, Some(crate::config::Fallback::Sequential));
        assert_eq!(t.read_buffer, Some(4096));
        for (extra, key, message) in [
            (
                "forward_proxy_url: \"ftp://127.0.0.1\"",
                "forward_proxy_url",
                "unknown proxy scheme",
            ),
            (
                "forward_proxy_url: \"http://127.0.0.1:3128/x\"",
                "forward_proxy_url",
                "no path",
            ),
            ("read_buffer: 100", "read_buffer", "between 1 KiB"),
            ("write_buffer: 1GiB", "write_buffer", "between 1 KiB"),
        ] {
            let e = upstream_err(&format!("transport: {{ {extra} }}"));
            assert_eq!(e.key, format!("upstreams.api.transport.{key}"), "{e}");
            assert_eq!(e.line, 8, "{e}");
            assert!(e.message.contains(message), "{extra}: {e}");
        }
    }

    #[test]
    fn retry_match_is_a_route_matcher_checked_like_one() {
        let c = Config::parse(
            &with_upstream("lb: { retry_match: { path: /api, headers: { X-Idem: \"1\" } } }"),
            "t.yaml",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let m = c.upstreams[0].lb.retry_match.as_ref().expect("retry_match");
        assert_eq!(
            m.path,
            Some(crate::config::pattern::PathMatch::Prefix("/api".into()))
        );
        assert_eq!(m.headers, [("x-idem".to_string(), "1".to_string())]);
        let e = upstream_err("lb: { retry_match: { path: api } }");
        assert_eq!(e.key, "upstreams.api.lb.retry_match.path", "{e}");
        assert!(e.message.contains("must start with"), "{e}");
    }

    #[test]
    fn unknown_lb_policy_lists_the_valid_ones() {
        let e = upstream_err("lb: { policy: fastest }");
        assert_eq!(
            (e.line, e.key.as_str()),
            (8, "upstreams.api.lb.policy"),
            "{e}"
        );
        assert_eq!(
            e.message,
            "unknown lb policy \"fastest\" (expected one of random, random_choose, first, \
             round_robin, weighted_round_robin, least_conn, ip_hash, client_ip_hash, uri_hash, \
             query, header, cookie, p2c_ewma)"
        );
    }

    #[test]
    fn every_contract_lb_policy_is_accepted() {
        for p in [
            "random",
            "random_choose",
            "first",
            "round_robin",
            "weighted_round_robin",
            "least_conn",
            "ip_hash",
            "client_ip_hash",
            "uri_hash",
            "cookie",
            "p2c_ewma",
        ] {
            Config::parse(&with_upstream(&format!("lb: {{ policy: {p} }}")), "t").unwrap();
        }
        for p in ["query", "header"] {
            Config::parse(
                &with_upstream(&format!("lb: {{ policy: {p}, key: x }}")),
                "t",
            )
            .unwrap();
        }
    }

    #[test]
    fn header_and_query_policies_need_a_key() {
        let e = upstream_err("lb:\n  policy: header\n");
        assert_eq!(
            (e.line, e.key.as_str()),
            (9, "upstreams.api.lb.policy"),
            "{e}"
        );
        assert!(e.message.contains("needs `key`"), "{e}");
        let e = upstream_err("lb:\n  policy: query\n  key: \"\"\n");
        assert_eq!(
            (e.line, e.key.as_str()),
            (10, "upstreams.api.lb.key"),
            "{e}"
        );
        let e = upstream_err("lb:\n  policy: header\n  key: \"Bad Name\"\n");
        assert_eq!(
            (e.line, e.key.as_str()),
            (10, "upstreams.api.lb.key"),
            "{e}"
        );
    }

    #[test]
    fn key_and_secret_are_refused_for_policies_that_do_not_use_them() {
        let e = upstream_err("lb:\n  policy: round_robin\n  key: X-User\n");
        assert_eq!(
            (e.line, e.key.as_str()),
            (10, "upstreams.api.lb.key"),
            "{e}"
        );
        let e = upstream_err("lb:\n  policy: header\n  key: X-User\n  secret: s\n");
        assert_eq!(
            (e.line, e.key.as_str()),
            (11, "upstreams.api.lb.secret"),
            "{e}"
        );
    }

    #[test]
    fn cookie_policy_defaults_its_name_to_lb_and_keeps_the_secret() {
        let c = Config::parse(
            &with_upstream("lb: { policy: cookie, secret: s3cret }"),
            "t",
        )
        .unwrap();
        let lb = &c.upstreams[0].lb;
        assert_eq!(
            (lb.policy, lb.key.as_str(), lb.secret.as_str()),
            (Policy::Cookie, "lb", "s3cret")
        );
        let c = Config::parse(&with_upstream("lb: { policy: cookie, key: sticky }"), "t").unwrap();
        assert_eq!(c.upstreams[0].lb.key, "sticky");
    }

    #[test]
    fn split_targets_follow_the_main_targets() {
        let c = Config::parse(
            &with_upstream("split: { targets: [127.0.0.1:9101, 127.0.0.1:9102], percent: 10 }"),
            "t",
        )
        .unwrap();
        let u = &c.upstreams[0];
        assert_eq!(u.targets.len(), 3);
        assert_eq!(
            u.split,
            Some(Split {
                start: 1,
                percent: 10
            })
        );
        let e = upstream_err("split:\n  targets: [127.0.0.1:9101]\n  percent: 101\n");
        assert_eq!(
            (e.line, e.key.as_str()),
            (10, "upstreams.api.split.percent"),
            "{e}"
        );
        let e = upstream_err("split:\n  targets: []\n");
        assert_eq!((e.line, e.key.as_str()), (8, "upstreams.api.split"), "{e}");
        let e = upstream_err("split:\n  targets: [nope]\n");
        assert_eq!(e.key, "upstreams.api.split.targets[0]", "{e}");
    }

    #[test]
    fn status_sets_take_codes_classes_ranges_and_lists() {
        let s = StatusSet::parse("200,204").unwrap();
        assert!(s.contains(200) && s.contains(204) && !s.contains(201));
        let s = StatusSet::parse("2xx").unwrap();
        assert!(s.contains(200) && s.contains(299) && !s.contains(300));
        let s = StatusSet::parse("200-299").unwrap();
        assert!(s.contains(250) && !s.contains(199));
        for bad in ["", "6xx", "299-200", "abc", "99"] {
            assert!(StatusSet::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn active_health_defaults_and_values_are_validated() {
        let c = Config::parse(&with_upstream("health:\n  active: { uri: /health }"), "t").unwrap();
        let a = c.upstreams[0].health.active.as_ref().unwrap();
        assert_eq!(a.uri.as_deref(), Some("/health"));
        assert_eq!((a.method.as_str(), a.fails, a.passes), ("GET", 2, 2));
        assert_eq!(
            (a.interval, a.timeout),
            (Duration::from_secs(10), Duration::from_secs(5))
        );
        assert!(a.expect_status.contains(204));
        let c = Config::parse(&with_upstream("health:\n  active: { interval: 1s }"), "t").unwrap();
        assert!(c.upstreams[0].health.active.as_ref().unwrap().uri.is_none());
        let cases = [
            (
                "health:\n  active:\n    method: POST",
                10,
                "method",
                "GET or HEAD",
            ),
            (
                "health:\n  active:\n    expect_status: 2zz",
                10,
                "expect_status",
                "invalid status",
            ),
            (
                "health:\n  active:\n    body: \"(\"",
                10,
                "body",
                "invalid regex",
            ),
            (
                "health:\n  active:\n    fails: 0",
                10,
                "fails",
                "at least 1",
            ),
            (
                "health:\n  active:\n    uri: health",
                10,
                "uri",
                "starting with /",
            ),
            (
                "health:\n  active:\n    interval: 1ms",
                10,
                "interval",
                "at least",
            ),
        ];
        for (yaml, line, key, msg) in cases {
            let e = upstream_err(yaml);
            let key = format!("upstreams.api.health.active.{key}");
            assert_eq!((e.line, e.key.as_str()), (line, key.as_str()), "{e}");
            assert!(e.message.contains(msg), "{e}");
        }
    }

    #[test]
    fn passive_health_values_are_validated() {
        let c = Config::parse(
            &with_upstream(
                "health:\n  passive:\n    fail_duration: 10s\n    max_fails: 3\n    \
                 unhealthy_status: [5xx, 429]\n    unhealthy_request_count: 7",
            ),
            "t",
        )
        .unwrap();
        let p = &c.upstreams[0].health.passive;
        assert_eq!(p.fail_duration, Some(Duration::from_secs(10)));
        assert_eq!(p.max_fails, 3);
        assert!(p.unhealthy_status.contains(503) && p.unhealthy_status.contains(429));
        assert!(!p.unhealthy_status.contains(404));
        assert_eq!(p.unhealthy_request_count, Some(7));
        let e = upstream_err("health:\n  passive:\n    max_fails: 0");
        assert_eq!(
            (e.line, e.key.as_str()),
            (10, "upstreams.api.health.passive.max_fails"),
            "{e}"
        );
        let e = upstream_err("health:\n  passive:\n    unhealthy_status: [5xx, 7]");
        assert_eq!(
            e.key, "upstreams.api.health.passive.unhealthy_status[1]",
            "{e}"
        );
    }

    #[test]
    fn lb_choose_below_two_is_rejected() {
        let e = upstream_err("lb: { choose: 1 }");
        assert_eq!(
            (e.line, e.key.as_str()),
            (8, "upstreams.api.lb.choose"),
            "{e}"
        );
    }

    #[test]
    fn upstream_indices_follow_file_order() {
        let c = ok(r#"
            listeners:
              - listen: 127.0.0.1:8080
                routes:
                  - { match: { path: /z }, upstream: zeta }
                  - { match: { path: /a }, upstream: alpha }
                  - upstream: mid
            upstreams:
              zeta: { targets: [127.0.0.1:1] }
              alpha: { targets: [127.0.0.1:2] }
              mid: { targets: [127.0.0.1:3] }
        "#);
        let names: Vec<&str> = c.upstreams.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, ["zeta", "alpha", "mid"]);
        let idx: Vec<usize> = routes(&c)
            .iter()
            .map(|r| match r.action {
                Action::Proxy(i) => i,
                Action::Respond(_) => usize::MAX,
            })
            .collect();
        assert_eq!(idx, [0, 1, 2]);
    }

    #[test]
    fn target_address_forms_are_resolved() {
        let c = Config::parse(
            &with_upstream("").replace(
                "targets: [127.0.0.1:9001]",
                "targets: [\"localhost:9001\", \"[::1]:9002\", \
                 \"http://127.0.0.1\", \"HTTP://[::1]/\", 127.0.0.1, \"https://127.0.0.1\", \
                 \"[::1]\"]",
            ),
            "t",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let t: Vec<(String, SocketAddr)> = c.upstreams[0]
            .targets
            .iter()
            .map(|t| match &t.addr {
                TargetAddr::Tcp { host, addr } => (host.clone(), *addr),
                TargetAddr::Unix(_) => panic!("unix"),
            })
            .collect();
        assert_eq!(t[0].0, "localhost:9001");
        assert!(t[0].1.ip().is_loopback() && t[0].1.port() == 9001);
        assert_eq!(t[1], ("[::1]:9002".into(), "[::1]:9002".parse().unwrap()));
        assert_eq!(t[2], ("127.0.0.1".into(), "127.0.0.1:80".parse().unwrap()));
        assert_eq!(t[3], ("[::1]".into(), "[::1]:80".parse().unwrap()));
        // Without a scheme or port: 80, as Caddy; https:// without a port: 443, with TLS.
        assert_eq!(t[4], ("127.0.0.1".into(), "127.0.0.1:80".parse().unwrap()));
        assert_eq!(t[5], ("127.0.0.1".into(), "127.0.0.1:443".parse().unwrap()));
        assert!(c.upstreams[0].targets[5].tls && !c.upstreams[0].targets[4].tls);
        assert_eq!(t[6], ("[::1]".into(), "[::1]:80".parse().unwrap()));
    }

    #[test]
    fn bad_target_addresses_are_rejected_at_their_line() {
        for (target, message) in [
            ("10.0.0.1:99999", "invalid target address"),
            ("ftp://10.0.0.1:21", "unknown scheme"),
            ("http://10.0.0.1:8080/api", "no path"),
            ("unix/", "needs a path"),
            ("no-such-host.invalid:80", "cannot resolve"),
        ] {
            let text = with_upstream("").replace(
                "[127.0.0.1:9001]",
                &format!("\n      - 127.0.0.1:1\n      - \"{target}\""),
            );
            let e = Config::parse(&text, "t").expect_err(target);
            assert_eq!(
                (e.line, e.key.as_str()),
                (9, "upstreams.api.targets[1]"),
                "{e}"
            );
            assert!(e.message.contains(message), "{e}");
        }
        let text = with_upstream("").replace(
            "[127.0.0.1:9001]",
            "[{ address: \"127.0.0.1:1\", weight: 0 }]",
        );
        let e = Config::parse(&text, "t").unwrap_err();
        assert_eq!(
            (e.line, e.key.as_str()),
            (7, "upstreams.api.targets[0].weight"),
            "{e}"
        );
    }

    #[test]
    fn upstream_without_targets_is_rejected() {
        let e = err(r#"
            listeners: [{ listen: "127.0.0.1:1", routes: [{ upstream: api }] }]
            upstreams:
              api:
                lb: { policy: first }
        "#);
        assert_eq!((e.line, e.key.as_str()), (3, "upstreams.api"), "{e}");
        assert!(e.message.contains("at least one target"), "{e}");
    }

    #[test]
    fn unknown_forwarded_and_proxy_protocol_values_are_rejected() {
        let e = upstream_err("forwarded: x-forwarded");
        assert_eq!(
            (e.line, e.key.as_str()),
            (8, "upstreams.api.forwarded"),
            "{e}"
        );
        let e = upstream_err("transport: { proxy_protocol: v3 }");
        assert_eq!(
            (e.line, e.key.as_str()),
            (8, "upstreams.api.transport.proxy_protocol"),
            "{e}"
        );
        assert!(e.message.contains("expected off, v1 or v2"), "{e}");
    }
}
