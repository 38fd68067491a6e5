//! TLS with rustls (ring provider): server configs for listeners — certificates chosen by SNI,
//! optional client authentication, resumption shared by every worker, reload from the files —
//! and client configs for upstreams.
//!
//! Configs are built once and shared through `Arc`s; a worker loads a listener's current config
//! once per accepted connection (never per request), so a reload swaps it for new connections
//! while existing ones keep the session they have.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert, StoresServerSessions, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme,
    SupportedProtocolVersion,
};

use crate::config::{CertificatePaths, ListenerTls, TlsVersion, UpstreamTls};

/// Server-side sessions remembered for stateful resumption (TLS 1.2 session IDs), shared by all
/// workers; about 1 KiB each.
const SERVER_SESSION_CACHE: usize = 16 * 1024;
/// Upstream sessions remembered per upstream for client-side resumption.
const CLIENT_SESSION_CACHE: usize = 1024;

/// A TLS setting that cannot be used: `key` is relative to the `tls` block
/// (e.g. `certificates[1].key`), so config validation can point at the line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsError {
    pub key: String,
    pub message: String,
}

impl TlsError {
    fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        TlsError {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

static TLS13_ONLY: [&SupportedProtocolVersion; 1] = [&rustls::version::TLS13];

fn versions(min: TlsVersion) -> &'static [&'static SupportedProtocolVersion] {
    match min {
        TlsVersion::V12 => rustls::ALL_VERSIONS,
        TlsVersion::V13 => &TLS13_ONLY,
    }
}

fn load_certs(path: &Path, key: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let text = std::fs::read(path)
        .map_err(|e| TlsError::new(key, format!("cannot read {}: {e}", path.display())))?;
    let certs = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::new(key, format!("{}: bad PEM: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(TlsError::new(
            key,
            format!("{}: no CERTIFICATE block found", path.display()),
        ));
    }
    Ok(certs)
}

fn load_key(path: &Path, key: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    let text = std::fs::read(path)
        .map_err(|e| TlsError::new(key, format!("cannot read {}: {e}", path.display())))?;
    // PKCS#8, PKCS#1 (RSA) and SEC1 (EC) blocks are all accepted.
    PrivateKeyDer::from_pem_slice(&text).map_err(|e| {
        TlsError::new(
            key,
            format!("{}: no usable private key: {e}", path.display()),
        )
    })
}

/// A certificate chain and its key, checked to belong together.
fn certified_key(
    paths: &CertificatePaths,
    base: &str,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let cert_key = format!("{base}cert");
    let key_key = format!("{base}key");
    let chain = load_certs(&paths.cert, &cert_key)?;
    let der = load_key(&paths.key, &key_key)?;
    let signing = provider.key_provider.load_private_key(der).map_err(|e| {
        TlsError::new(
            &key_key,
            format!("{}: unsupported private key: {e}", paths.key.display()),
        )
    })?;
    let ck = CertifiedKey::new(chain, signing);
    ck.keys_match().map_err(|_| {
        TlsError::new(
            &key_key,
            format!(
                "{} does not match the certificate in {}",
                paths.key.display(),
                paths.cert.display()
            ),
        )
    })?;
    webpki::EndEntityCert::try_from(&ck.cert[0]).map_err(|e| {
        TlsError::new(
            &cert_key,
            format!("{}: unusable certificate: {e}", paths.cert.display()),
        )
    })?;
    Ok(ck)
}

fn roots_from(files: &[PathBuf], key: &str) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for (i, f) in files.iter().enumerate() {
        let k = format!("{key}[{i}]");
        for cert in load_certs(f, &k)? {
            roots
                .add(cert)
                .map_err(|e| TlsError::new(&k, format!("{}: bad CA: {e}", f.display())))?;
        }
    }
    Ok(roots)
}

/// A certificate's names: exact (`api.example.com`) or one-label wildcards (`*.example.com`,
/// kept as `.example.com`), lower-case.
#[derive(Debug)]
struct SniCert {
    exact: Vec<String>,
    wildcard: Vec<String>,
    key: Arc<CertifiedKey>,
}

/// Picks the certificate whose SAN names match the client's SNI: an exact name first, then a
/// wildcard; the first certificate for clients without SNI or with an unknown name.
#[derive(Debug)]
struct SniResolver {
    certs: Vec<SniCert>,
}

impl SniResolver {
    fn pick(&self, sni: Option<&str>) -> &Arc<CertifiedKey> {
        if let Some(name) = sni {
            let name = name.to_ascii_lowercase();
            if let Some(c) = self.certs.iter().find(|c| c.exact.contains(&name)) {
                return &c.key;
            }
            if let Some((_, parent)) = name.split_once('.') {
                let suffix = format!(".{parent}");
                if let Some(c) = self.certs.iter().find(|c| c.wildcard.contains(&suffix)) {
                    return &c.key;
                }
            }
        }
        &self.certs[0].key
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.pick(hello.server_name()).clone())
    }
}

fn sni_cert(key: CertifiedKey) -> SniCert {
    let (mut exact, mut wildcard) = (Vec::new(), Vec::new());
    if let Ok(ee) = webpki::EndEntityCert::try_from(&key.cert[0]) {
        for name in ee.valid_dns_names() {
            let name = name.to_ascii_lowercase();
            match name.strip_prefix('*') {
                Some(suffix) => wildcard.push(suffix.to_string()),
                None => exact.push(name),
            }
        }
    }
    SniCert {
        exact,
        wildcard,
        key: Arc::new(key),
    }
}

/// Resumption state that outlives reloads, so clients resume across workers and reloads.
pub struct Resumption {
    ticketer: Arc<dyn rustls::server::ProducesTickets>,
    cache: Arc<dyn StoresServerSessions>,
}

impl Resumption {
    pub fn new() -> Result<Resumption, TlsError> {
        Ok(Resumption {
            ticketer: rustls::crypto::ring::Ticketer::new()
                .map_err(|e| TlsError::new("", format!("session ticket keys: {e}")))?,
            cache: rustls::server::ServerSessionMemoryCache::new(SERVER_SESSION_CACHE),
        })
    }
}

/// Builds a listener's server config from its files. Errors name the offending key.
pub fn server_config(
    tls: &ListenerTls,
    resumption: Option<&Resumption>,
) -> Result<ServerConfig, TlsError> {
    let provider = provider();
    let mut certs = Vec::with_capacity(tls.certificates.len());
    for (i, paths) in tls.certificates.iter().enumerate() {
        let key = certified_key(paths, &format!("certificates[{i}]."), &provider)?;
        certs.push(sni_cert(key));
    }
    if certs.is_empty() {
        return Err(TlsError::new(
            "certificates",
            "at least one certificate is required",
        ));
    }
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions(tls.min_version))
        .map_err(|e| TlsError::new("min_version", e.to_string()))?;
    let builder = match &tls.client_auth {
        Some(auth) => {
            let roots = roots_from(&auth.ca, "client_auth.ca")?;
            let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider);
            let verifier = if auth.required {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            let verifier = verifier
                .build()
                .map_err(|e| TlsError::new("client_auth.ca", e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(SniResolver { certs }));
    config.alpn_protocols = tls.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    if let Some(r) = resumption {
        config.ticketer = r.ticketer.clone();
        config.session_storage = r.cache.clone();
    }
    Ok(config)
}

/// One TLS listener's live server config: loaded per accepted connection, swapped by reload.
pub struct ListenerTlsState {
    pub settings: ListenerTls,
    resumption: Resumption,
    pub current: ArcSwap<ServerConfig>,
}

impl ListenerTlsState {
    pub fn new(settings: &ListenerTls) -> Result<ListenerTlsState, TlsError> {
        let resumption = Resumption::new()?;
        let config = server_config(settings, Some(&resumption))?;
        Ok(ListenerTlsState {
            settings: settings.clone(),
            resumption,
            current: ArcSwap::from_pointee(config),
        })
    }

    /// Rebuilds from the files; on error the running config stays as it was.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = server_config(&self.settings, Some(&self.resumption))?;
        self.current.store(Arc::new(config));
        Ok(())
    }
}

/// Verifies nothing (`insecure_skip_verify`), but still checks handshake signatures so the
/// peer holds the key of the certificate it sent.
#[derive(Debug)]
struct NoVerification(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// The key exchange groups `curves` may name (Caddy's names and the usual aliases) and the
/// canonical name each stands for, as rustls's ring provider implements them.
const CURVES: &[(&str, &str)] = &[
    ("x25519", "x25519"),
    ("secp256r1", "secp256r1"),
    ("p256", "secp256r1"),
    ("p-256", "secp256r1"),
    ("prime256v1", "secp256r1"),
    ("secp384r1", "secp384r1"),
    ("p384", "secp384r1"),
    ("p-384", "secp384r1"),
];

/// The canonical name of a `curves` entry, or why it cannot be offered.
pub fn curve_name(name: &str) -> Result<&'static str, String> {
    let lower = name.to_ascii_lowercase();
    if let Some((_, c)) = CURVES.iter().find(|(n, _)| *n == lower) {
        return Ok(c);
    }
    match lower.as_str() {
        "secp521r1" | "p521" | "p-521" | "x25519mlkem768" => Err(format!(
            "curve \"{name}\" is not available in this build (rustls with ring offers x25519, \
             secp256r1, secp384r1)"
        )),
        _ => Err(format!(
            "unknown curve \"{name}\" (expected x25519, secp256r1 or secp384r1)"
        )),
    }
}

fn kx_group(canonical: &str) -> &'static dyn rustls::crypto::SupportedKxGroup {
    use rustls::crypto::ring::kx_group;
    match canonical {
        "x25519" => kx_group::X25519,
        "secp256r1" => kx_group::SECP256R1,
        _ => kx_group::SECP384R1,
    }
}

/// The roots an upstream is verified against without `ca`: the operating system's trust store
/// (honouring SSL_CERT_FILE / SSL_CERT_DIR), or webpki's roots when it has none (a scratch
/// container). Read on each (re)load, so a refreshed system store is picked up by a reload.
fn system_roots() -> RootCertStore {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    let (added, _ignored) = roots.add_parsable_certificates(native.certs);
    if added == 0 {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    roots
}

/// Builds an upstream's client config: the system roots or the `ca` files, optional client
/// certificate, `curves`, ALPN http/1.1, a session cache for resumption. Errors name the
/// offending key.
pub fn client_config(tls: &UpstreamTls) -> Result<ClientConfig, TlsError> {
    let mut provider = rustls::crypto::ring::default_provider();
    if !tls.curves.is_empty() {
        provider.kx_groups = tls.curves.iter().map(|c| kx_group(c)).collect();
    }
    let provider = Arc::new(provider);
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(rustls::ALL_VERSIONS)
        .map_err(|e| TlsError::new("", e.to_string()))?;
    let builder = if tls.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(
                provider.signature_verification_algorithms,
            )))
    } else {
        let roots = if tls.ca.is_empty() {
            system_roots()
        } else {
            roots_from(&tls.ca, "ca")?
        };
        builder.with_root_certificates(roots)
    };
    let mut config = match &tls.client_cert {
        Some(paths) => {
            let ck = certified_key(paths, "client_", &provider)?;
            builder
                .with_client_auth_cert(ck.cert, load_key(&paths.key, "client_key")?)
                .map_err(|e| TlsError::new("client_key", e.to_string()))?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.resumption = rustls::client::Resumption::in_memory_sessions(CLIENT_SESSION_CACHE);
    Ok(config)
}

/// The name a TLS upstream is dialed and verified as: `server_name`, else the target's host.
pub fn server_name(tls: &UpstreamTls, host: &str) -> Result<ServerName<'static>, TlsError> {
    let name = match &tls.server_name {
        Some(n) => n.as_str(),
        None => host_of(host),
    };
    ServerName::try_from(name.to_string())
        .map_err(|e| TlsError::new("server_name", format!("invalid name \"{name}\": {e}")))
}

/// `host` of `host:port` / `[v6]:port` / `host`.
/// The host of `host[:port]` (brackets of an IPv6 literal removed).
pub fn host_of(hostport: &str) -> &str {
    if let Some(rest) = hostport.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match hostport.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') && p.parse::<u16>().is_ok() => h,
        _ => hostport,
    }
}

/// A short reason for an upstream TLS failure, for the log line ("unknown issuer",
/// "name mismatch", "expired", ...).
pub fn failure_reason(e: &std::io::Error) -> String {
    use rustls::CertificateError as C;
    let Some(r) = e.get_ref().and_then(|r| r.downcast_ref::<rustls::Error>()) else {
        return e.to_string();
    };
    match r {
        rustls::Error::InvalidCertificate(c) => match c {
            C::UnknownIssuer => "certificate from an unknown issuer".into(),
            C::NotValidForName | C::NotValidForNameContext { .. } => {
                "certificate name mismatch".into()
            }
            C::Expired | C::ExpiredContext { .. } => "certificate expired".into(),
            C::NotValidYet | C::NotValidYetContext { .. } => "certificate not valid yet".into(),
            C::Revoked => "certificate revoked".into(),
            _ => r.to_string(),
        },
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curves_take_caddy_names_and_aliases_and_refuse_the_rest_with_a_reason() {
        let table = [
            ("x25519", Ok("x25519")),
            ("X25519", Ok("x25519")),
            ("secp256r1", Ok("secp256r1")),
            ("P-256", Ok("secp256r1")),
            ("prime256v1", Ok("secp256r1")),
            ("p384", Ok("secp384r1")),
            ("secp521r1", Err("not available")),
            ("x25519mlkem768", Err("not available")),
            ("brainpoolP256r1", Err("unknown curve")),
        ];
        for (name, want) in table {
            match (curve_name(name), want) {
                (Ok(got), Ok(w)) => assert_eq!(got, w, "{name}"),
                (Err(m), Err(w)) => assert!(m.contains(w), "{name}: {m}"),
                (got, w) => panic!("{name}: {got:?}, wanted {w:?}"),
            }
        }
    }

    #[test]
    fn upstream_certificate_failures_are_named() {
        use rustls::CertificateError as C;
        let wrap = |c: C| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                rustls::Error::InvalidCertificate(c),
            )
        };
        assert_eq!(
            failure_reason(&wrap(C::UnknownIssuer)),
            "certificate from an unknown issuer"
        );
        assert_eq!(
            failure_reason(&wrap(C::NotValidForName)),
            "certificate name mismatch"
        );
        assert_eq!(failure_reason(&wrap(C::Expired)), "certificate expired");
        let plain = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert_eq!(failure_reason(&plain), plain.to_string());
    }

    #[test]
    fn host_of_strips_ports_and_brackets() {
        assert_eq!(host_of("api.example:8443"), "api.example");
        assert_eq!(host_of("[::1]:443"), "::1");
        assert_eq!(host_of("10.0.0.1"), "10.0.0.1");
    }
}
