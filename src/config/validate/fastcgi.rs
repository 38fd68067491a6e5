//! `transport.protocol: fastcgi` and `transport.fastcgi`, and the upstream keys that mean
//! nothing to a FastCGI application.

use super::{Res, Validator};
use crate::config::file::{HeadersFile, TransportFile};
use crate::config::spans::join;
use crate::config::units::Size;
use crate::config::{defaults, Fastcgi, Health, ProxyProtocol, Transport};

impl Validator<'_> {
    /// The FastCGI settings of a transport (`None` for HTTP).
    pub(super) fn fastcgi(&self, key: &str, t: &TransportFile) -> Res<Option<Fastcgi>> {
        let on = t.protocol.as_deref() == Some("fastcgi");
        let fk = join(key, "fastcgi");
        let f = match (&t.fastcgi, on) {
            (None, false) => return Ok(None),
            (Some(_), false) => {
                return Err(self.at_key(&fk, "only valid with `protocol: fastcgi`"));
            }
            (None, true) => {
                return Err(self.at_value(
                    &join(key, "protocol"),
                    "FastCGI needs `transport.fastcgi` with at least its `root`",
                ));
            }
            (Some(f), true) => f,
        };
        let Some(root) = f.root.as_deref().filter(|r| !r.is_empty()) else {
            return Err(self.at_key(&fk, "missing key `root` (the document root)"));
        };
        if !root.starts_with('/') {
            return Err(self.at_value(&join(&fk, "root"), "must be an absolute path"));
        }
        let root = match root.trim_end_matches('/') {
            "" => "/",
            r => r,
        };
        let mut split_path = Vec::new();
        match &f.split_path {
            Some(list) => {
                for (i, ext) in list.items.iter().enumerate() {
                    if !ext.starts_with('.') || ext.len() < 2 || ext.contains('/') {
                        return Err(self.at_value(
                            &list.item_key(&join(&fk, "split_path"), i),
                            "a split extension looks like `.php`",
                        ));
                    }
                    split_path.push(ext.to_ascii_lowercase());
                }
            }
            None => split_path.push(defaults::FASTCGI_SPLIT_PATH.to_string()),
        }
        let index = f.index.as_deref().unwrap_or(defaults::FASTCGI_INDEX);
        if index.contains('/') {
            return Err(self.at_value(&join(&fk, "index"), "a file name, without `/`"));
        }
        let mut env = Vec::new();
        if let Some(map) = &f.env {
            for (name, value) in &map.0 {
                let k = join(&join(&fk, "env"), name);
                let ok = !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
                if !ok {
                    return Err(self.at_key(&k, format!("invalid parameter name \"{name}\"")));
                }
                env.push((name.clone(), self.template(&k, value)?));
            }
        }
        Ok(Some(Fastcgi {
            root: root.to_string(),
            split_path,
            index: index.to_string(),
            env,
            capture_stderr: f.capture_stderr.unwrap_or(false),
        }))
    }

    /// Refuses the keys of a FastCGI upstream that only an HTTP exchange could honour.
    pub(super) fn fastcgi_upstream(
        &self,
        key: &str,
        headers: &Option<HeadersFile>,
        health: &Health,
        transport: &Transport,
        response_buffer: &Option<Size>,
    ) -> Res<()> {
        if transport.tls.is_some() {
            return Err(self.at_value(
                &join(key, "transport.protocol"),
                "FastCGI targets are dialed in plain TCP or over a unix socket (no https:// \
                 targets, transport.tls or TLS ports)",
            ));
        }
        if transport.proxy_protocol != ProxyProtocol::Off {
            return Err(self.at_value(
                &join(key, "transport.proxy_protocol"),
                "not supported with protocol: fastcgi (REMOTE_ADDR carries the client)",
            ));
        }
        if response_buffer.as_ref().is_some_and(|Size(n)| *n > 0) {
            return Err(self.at_value(
                &join(key, "response_buffer"),
                "not supported with protocol: fastcgi (responses stream)",
            ));
        }
        if headers.as_ref().is_some_and(|h| h.request.is_some()) {
            return Err(self.at_key(
                &join(key, "headers.request"),
                "not supported yet with protocol: fastcgi (HTTP_* parameters are the request's \
                 fields as sent; use transport.fastcgi.env)",
            ));
        }
        if health.active.as_ref().is_some_and(|a| a.uri.is_some()) {
            return Err(self.at_value(
                &join(key, "health.active.uri"),
                "HTTP probes cannot speak FastCGI: omit uri for a connect check",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::test_support::*;
    use crate::config::*;

    fn fastcgi_upstream(extra: &str) -> String {
        with_upstream(&format!(
            "transport:\n  protocol: fastcgi\n  fastcgi: {{ root: /var/www/html/ }}\n{extra}"
        ))
    }

    #[test]
    fn fastcgi_transport_is_read_with_its_defaults() {
        let c = Config::parse(&fastcgi_upstream(""), "t.yaml").unwrap_or_else(|e| panic!("{e}"));
        let f = c.upstreams[0].transport.fastcgi.as_ref().expect("fastcgi");
        assert_eq!(f.root, "/var/www/html");
        assert_eq!(f.split_path, vec![".php".to_string()]);
        assert_eq!(f.index, "index.php");
        assert!(f.env.is_empty() && !f.capture_stderr);
        let text = with_upstream(
            "transport:\n  protocol: fastcgi\n  fastcgi:\n    root: /srv\n    split_path: [.PHP, .php5]\n    \
             index: app.php\n    env: { APP_ENV: prod, CLIENT: \"{client_ip}\" }\n    capture_stderr: true\n",
        );
        let c = Config::parse(&text, "t.yaml").unwrap_or_else(|e| panic!("{e}"));
        let f = c.upstreams[0].transport.fastcgi.as_ref().expect("fastcgi");
        assert_eq!(f.split_path, vec![".php".to_string(), ".php5".to_string()]);
        assert_eq!((f.index.as_str(), f.capture_stderr), ("app.php", true));
        assert_eq!(f.env[0].0, "APP_ENV");
        assert_eq!(f.env[0].1.as_literal(), Some("prod"));
        assert_eq!(f.env[1].1.as_literal(), None);
    }

    #[test]
    fn bad_fastcgi_settings_are_refused_at_their_key() {
        let cases = [
            ("transport:\n  protocol: fastcgi\n", 9, "transport.protocol", "needs `transport.fastcgi`"),
            ("transport:\n  fastcgi: { root: /srv }\n", 9, "transport.fastcgi", "only valid with `protocol: fastcgi`"),
            ("transport:\n  protocol: fastcgi\n  fastcgi: { index: a.php }\n", 10, "transport.fastcgi", "missing key `root`"),
            ("transport:\n  protocol: fastcgi\n  fastcgi: { root: srv }\n", 10, "transport.fastcgi.root", "absolute"),
            ("transport:\n  protocol: fastcgi\n  fastcgi: { root: /srv, split_path: [php] }\n", 10, "transport.fastcgi.split_path[0]", "like `.php`"),
            ("transport:\n  protocol: fastcgi\n  fastcgi: { root: /srv, index: a/b.php }\n", 10, "transport.fastcgi.index", "without `/`"),
            ("transport:\n  protocol: fastcgi\n  fastcgi: { root: /srv, env: { \"A B\": x } }\n", 10, "transport.fastcgi.env.A B", "invalid parameter name"),
            ("transport:\n  protocol: fastcgi\n  fastcgi: { root: /srv, env: { A: \"{nope}\" } }\n", 10, "transport.fastcgi.env.A", "unknown placeholder"),
            ("transport:\n  protocol: gopher\n", 9, "transport.protocol", "unknown transport protocol"),
        ];
        for (extra, line, key, message) in cases {
            let e = upstream_err(extra);
            assert_eq!(
                (e.line, e.key.as_str()),
                (line, format!("upstreams.api.{key}").as_str()),
                "{e}"
            );
            assert!(e.message.contains(message), "{e}");
        }
    }

    #[test]
    fn http_only_keys_are_refused_on_fastcgi_upstreams() {
        let cases = [
            ("  proxy_protocol: v1\n", "transport.proxy_protocol"),
            ("  tls: {}\n", "transport.protocol"),
            ("response_buffer: 1k\n", "response_buffer"),
            (
                "headers:\n  request:\n    - set: { X-A: b }\n",
                "headers.request",
            ),
            ("health:\n  active: { uri: /health }\n", "health.active.uri"),
        ];
        for (extra, key) in cases {
            let e = Config::parse(&fastcgi_upstream(extra), "t").expect_err(key);
            assert_eq!(e.key, format!("upstreams.api.{key}"), "{e}");
        }
        let ok = fastcgi_upstream("health:\n  active: { interval: 5s }\n");
        Config::parse(&ok, "t").unwrap_or_else(|e| panic!("a connect check is fine: {e}"));
    }
}
