//! TLS settings: listeners terminating TLS, and upstream targets dialed with it.
//!
//! Certificates are loaded here (through `crate::tls`) so a bad file is reported with its
//! key at validation, not at startup.

use super::{Res, Validator};
use crate::config::file::ListenerTlsFile;
use crate::config::spans::join;
use crate::config::units::dur;
use crate::config::{
    defaults, CertificatePaths, ClientAuth, ListenerTls, Target, TargetAddr, TlsVersion, Transport,
    UpstreamTls,
};

impl Validator<'_> {
    pub(super) fn listener_tls(&self, key: &str, t: ListenerTlsFile) -> Res<ListenerTls> {
        let list_key = join(key, "certificates");
        let files = t.certificates.unwrap_or_default();
        if files.is_empty() {
            let at = if self.spans.knows(&list_key) {
                list_key.as_str()
            } else {
                key
            };
            return Err(self.at_key(at, "at least one certificate is required"));
        }
        let mut certificates = Vec::with_capacity(files.len());
        for (i, c) in files.into_iter().enumerate() {
            let item = format!("{list_key}[{i}]");
            certificates.push(self.cert_paths(&item, "cert", c.cert, "key", c.key)?);
        }
        let min_version = t.min_version.map(|v| match v {
            serde_yaml::Value::String(s) => s,
            serde_yaml::Value::Number(n) => n.to_string(),
            other => format!("{other:?}"),
        });
        let min_version = match min_version.as_deref().unwrap_or(defaults::TLS_MIN_VERSION) {
            "1.2" => TlsVersion::V12,
            "1.3" => TlsVersion::V13,
            other => {
                return Err(self.at_value(
                    &join(key, "min_version"),
                    format!("unknown TLS version \"{other}\" (expected \"1.2\" or \"1.3\")"),
                ))
            }
        };
        if t.alpn.is_some() {
            return Err(self.at_key(
                &join(key, "alpn"),
                "ALPN follows the listener's `protocols` (e.g. protocols: [h1, h2]); remove tls.alpn",
            ));
        }
        // http listeners replace this with what their `protocols` offer.
        let alpn = vec![defaults::ALPN.to_string()];
        let client_auth = match t.client_auth {
            Some(a) => {
                let ca_key = join(key, "client_auth.ca");
                let ca = a.ca.map(|c| c.items).unwrap_or_default();
                if ca.is_empty() {
                    let at = if self.spans.knows(&ca_key) {
                        ca_key
                    } else {
                        join(key, "client_auth")
                    };
                    return Err(self.at_key(&at, "client_auth needs at least one `ca` file"));
                }
                Some(ClientAuth {
                    ca: ca.iter().map(|p| self.path(p)).collect(),
                    required: a.required.unwrap_or(defaults::CLIENT_AUTH_REQUIRED),
                })
            }
            None => None,
        };
        let tls = ListenerTls {
            certificates,
            min_version,
            alpn,
            handshake_timeout: dur(t.handshake_timeout, defaults::TLS_HANDSHAKE_TIMEOUT),
            client_auth,
        };
        // Read every file now, so a bad certificate is reported here and not at startup.
        crate::net::tls::server_config(&tls, None)
            .map_err(|e| self.at_value(&join(key, &e.key), e.message))?;
        Ok(tls)
    }

    /// A `cert`/`key` pair: both or neither (`Ok(None)` only when `optional`).
    pub(super) fn cert_paths(
        &self,
        key: &str,
        cert_name: &str,
        cert: Option<String>,
        key_name: &str,
        private: Option<String>,
    ) -> Res<CertificatePaths> {
        let cert = cert.filter(|c| !c.is_empty());
        let private = private.filter(|k| !k.is_empty());
        match (cert, private) {
            (Some(cert), Some(private)) => Ok(CertificatePaths {
                cert: self.path(&cert),
                key: self.path(&private),
            }),
            (None, _) => Err(self.at_key(key, format!("missing key `{cert_name}`"))),
            (_, None) => Err(self.at_key(key, format!("missing key `{key_name}`"))),
        }
    }

    /// Decides which targets are dialed with TLS and checks the TLS settings: an explicit
    /// `https://`/`http://` scheme wins; otherwise `except_ports` turns TLS off, and a `tls`
    /// block, `https_ports` or port 443 (Caddy's rule) turn it on.
    pub(super) fn upstream_tls(
        &self,
        key: &str,
        targets: &mut [Target],
        schemes: &[Option<bool>],
        transport: &mut Transport,
        https_ports: &[u16],
    ) -> Res<()> {
        let block = transport.tls.is_some();
        let except = transport
            .tls
            .as_ref()
            .map(|t| t.except_ports.clone())
            .unwrap_or_default();
        let mut any = false;
        for (i, (t, scheme)) in targets.iter_mut().zip(schemes).enumerate() {
            let TargetAddr::Tcp { addr, .. } = &t.addr else {
                // A unix target has no port: a `tls` block (or https://) is what asks for TLS.
                t.tls = scheme.unwrap_or(block);
                any |= t.tls;
                let tls = transport.tls.as_ref();
                let named = tls.is_some_and(|s| s.server_name.is_some() || s.insecure_skip_verify);
                if t.tls && !named {
                    return Err(self.at_value(
                        &format!("{key}.targets[{i}]"),
                        "a unix target has no host name to verify: set transport.tls.server_name \
                         (or insecure_skip_verify)",
                    ));
                }
                continue;
            };
            let port = addr.port();
            t.tls = match scheme {
                Some(explicit) => *explicit,
                None if except.contains(&port) => false,
                None => block || https_ports.contains(&port) || port == defaults::HTTPS_PORT,
            };
            any |= t.tls;
        }
        if !any && !block {
            return Ok(());
        }
        let tls_key = join(key, "transport.tls");
        let settings = transport.tls.get_or_insert_with(|| UpstreamTls {
            handshake_timeout: Some(defaults::UPSTREAM_TLS_HANDSHAKE_TIMEOUT),
            ..UpstreamTls::default()
        });
        crate::net::tls::client_config(settings)
            .map_err(|e| self.at_value(&join(&tls_key, &e.key), e.message))?;
        for (i, t) in targets.iter().enumerate() {
            if let (true, TargetAddr::Tcp { host, .. }) = (t.tls, &t.addr) {
                crate::net::tls::server_name(settings, host).map_err(|e| {
                    if settings.server_name.is_some() {
                        self.at_value(&join(&tls_key, "server_name"), e.message)
                    } else {
                        self.at_value(&format!("{key}.targets[{i}]"), e.message)
                    }
                })?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use crate::config::test_support::*;
    use crate::config::*;

    fn tls_flags(targets: &str, extra: &str) -> Vec<bool> {
        let text = with_upstream(extra).replace("[127.0.0.1:9001]", targets);
        let c = Config::parse(&text, "t").unwrap_or_else(|e| panic!("{e}"));
        c.upstreams[0].targets.iter().map(|t| t.tls).collect()
    }

    #[test]
    fn targets_use_tls_by_scheme_port_443_https_ports_and_tls_block() {
        let targets = r#"["https://127.0.0.1:8443", "127.0.0.1:443", "http://127.0.0.1:443", "127.0.0.1:8443", "127.0.0.1:9000"]"#;
        assert_eq!(tls_flags(targets, ""), [true, true, false, false, false]);
        assert_eq!(
            tls_flags(targets, "transport:\n  https_ports: [8443]"),
            [true, true, false, true, false]
        );
        // A tls block turns TLS on for every target without an explicit scheme, except_ports
        // turns it off again.
        assert_eq!(
            tls_flags(
                targets,
                "transport:\n  tls: { insecure_skip_verify: true, except_ports: [9000, 443] }"
            ),
            [true, false, false, true, false]
        );
        let c = Config::parse(
            &with_upstream("").replace("[127.0.0.1:9001]", "[\"https://localhost\"]"),
            "t",
        )
        .unwrap();
        let up = &c.upstreams[0];
        let TargetAddr::Tcp { host, addr } = &up.targets[0].addr else {
            panic!("tcp")
        };
        assert_eq!((host.as_str(), addr.port()), ("localhost", 443));
        let tls = up
            .transport
            .tls
            .as_ref()
            .expect("defaults for an https target");
        assert!(!tls.insecure_skip_verify && tls.ca.is_empty());
        assert_eq!(tls.handshake_timeout, Some(Duration::from_secs(10)));
        assert!(c.upstreams[0].transport.tls.is_some());
    }

    #[test]
    fn plaintext_upstreams_get_no_tls_settings() {
        let c = Config::parse(&with_upstream(""), "t").unwrap();
        assert!(c.upstreams[0].transport.tls.is_none());
        assert!(!c.upstreams[0].targets[0].tls);
    }

    #[test]
    fn listener_tls_is_converted_with_defaults() {
        let dir = temp_dir("conv");
        let (cert, key) = write_cert(&dir, "a", &["a.test"]);
        let c = ok(&tls_listener(&format!(
            "certificates:\n  - {{ cert: {cert}, key: {key} }}\n"
        )));
        let tls = c.listeners[0].tls.as_ref().unwrap();
        assert_eq!(tls.certificates[0].cert, PathBuf::from(&cert));
        assert_eq!(tls.min_version, TlsVersion::V12);
        // An http listener offers HTTP/2 first by default.
        assert_eq!(tls.alpn, ["h2", "http/1.1"]);
        assert_eq!(tls.handshake_timeout, Some(Duration::from_secs(10)));
        assert!(tls.client_auth.is_none());
        let c = ok(&tls_listener(&format!(
            "certificates:\n  - {{ cert: {cert}, key: {key} }}\nmin_version: \"1.3\"\n\
             handshake_timeout: 2s\nclient_auth: {{ ca: [{cert}], required: false }}\n"
        )));
        let tls = c.listeners[0].tls.as_ref().unwrap();
        assert_eq!(tls.min_version, TlsVersion::V13);
        assert_eq!(tls.handshake_timeout, Some(Duration::from_secs(2)));
        assert!(!tls.client_auth.as_ref().unwrap().required);
        let unquoted = ok(&tls_listener(&format!(
            "certificates: [{{ cert: {cert}, key: {key} }}]\nmin_version: 1.3\n"
        )));
        let tls = unquoted.listeners[0].tls.as_ref().unwrap();
        assert_eq!(tls.min_version, TlsVersion::V13);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn listener_tls_problems_are_reported_at_their_key() {
        let dir = temp_dir("errs");
        let (cert, key) = write_cert(&dir, "a", &["a.test"]);
        let (_, other_key) = write_cert(&dir, "b", &["b.test"]);
        let missing = dir.join("missing.pem").display().to_string();
        let base = "listeners[0].tls";
        let cases = [
            (
                format!("certificates:\n  - cert: {missing}\n    key: {key}\n"),
                5,
                "certificates[0].cert",
                "cannot read",
            ),
            (
                format!("certificates:\n  - cert: {cert}\n    key: {other_key}\n"),
                6,
                "certificates[0].key",
                "does not match the certificate",
            ),
            (
                format!("certificates:\n  - cert: {key}\n    key: {key}\n"),
                5,
                "certificates[0].cert",
                "no CERTIFICATE",
            ),
            (
                format!("certificates:\n  - cert: {cert}\n    key: {cert}\n"),
                6,
                "certificates[0].key",
                "no usable private key",
            ),
            (
                format!("certificates:\n  - cert: {cert}\n"),
                5,
                "certificates[0]",
                "missing key `key`",
            ),
            ("certificates: []\n".to_string(), 4, "certificates", "at least one"),
            (
                format!("certificates: [{{ cert: {cert}, key: {key} }}]\nmin_version: \"1.1\"\n"),
                5,
                "min_version",
                "unknown TLS version",
            ),
            (
                format!("certificates: [{{ cert: {cert}, key: {key} }}]\nalpn: [h2]\n"),
                5,
                "alpn",
                "follows the listener's `protocols`",
            ),
            (
                format!("certificates: [{{ cert: {cert}, key: {key} }}]\nclient_auth: {{ required: true }}\n"),
                5,
                "client_auth",
                "at least one `ca`",
            ),
            (
                format!("certificates: [{{ cert: {cert}, key: {key} }}]\nclient_auth: {{ ca: [{missing}] }}\n"),
                5,
                "client_auth.ca[0]",
                "cannot read",
            ),
        ];
        for (tls, line, key, message) in cases {
            let e = Config::parse(&tls_listener(&tls), "t").expect_err(key);
            assert_eq!(
                (e.line, e.key.as_str()),
                (line, format!("{base}.{key}").as_str()),
                "{e}"
            );
            assert!(e.message.contains(message), "{e}");
        }
        let unix = tls_listener(&format!("certificates: [{{ cert: {cert}, key: {key} }}]\n"))
            .replace("127.0.0.1:8443", "unix//tmp/rw.sock");
        let c = Config::parse(&unix, "t").unwrap_or_else(|e| panic!("{e}"));
        assert!(c.listeners[0].tls.is_some(), "TLS on a unix listener");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn upstream_tls_problems_are_reported_at_their_key() {
        let dir = temp_dir("up");
        let (cert, key) = write_cert(&dir, "c", &["client.test"]);
        let missing = dir.join("missing.pem").display().to_string();
        let cases = [
            (format!("transport:\n  tls: {{ ca: [{missing}] }}"), 9, "transport.tls.ca[0]", "cannot read"),
            (format!("transport:\n  tls: {{ client_cert: {cert} }}"), 9, "transport.tls", "missing key `client_key`"),
            (format!("transport:\n  tls: {{ client_cert: {cert}, client_key: {missing} }}"), 9, "transport.tls.client_key", "cannot read"),
            (format!("transport:\n  tls: {{ client_cert: {cert}, client_key: {key}, server_name: \"bad name!\" }}"), 9, "transport.tls.server_name", "invalid name"),
        ];
        for (extra, line, k, message) in cases {
            let e = upstream_err(&extra);
            assert_eq!(
                (e.line, e.key.as_str()),
                (line, format!("upstreams.api.{k}").as_str()),
                "{e}"
            );
            assert!(e.message.contains(message), "{e}");
        }
        let text = with_upstream("transport:\n  tls: {}")
            .replace("[127.0.0.1:9001]", "[unix//tmp/a.sock]");
        let e = Config::parse(&text, "t").unwrap_err();
        assert_eq!(e.key, "upstreams.api.targets[0]", "{e}");
        assert!(e.message.contains("server_name"), "{e}");
        let text = with_upstream("transport:\n  tls: { server_name: app.internal }")
            .replace("[127.0.0.1:9001]", "[unix//tmp/a.sock]");
        let c = Config::parse(&text, "t").unwrap_or_else(|e| panic!("{e}"));
        assert!(c.upstreams[0].targets[0].tls);
        let _ = std::fs::remove_dir_all(dir);
    }
}
