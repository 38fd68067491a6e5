//! TLS test support: a test PKI made with rcgen ([`Pki`]), a blocking rustls client
//! ([`TlsClient`]) and a small rustls HTTP/1.1 backend on std threads ([`TlsBackend`]) that
//! counts connections, handshakes and resumed handshakes.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::client::Resumption;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, StreamOwned};

/// Per blocking read or write.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate and its key as PEM, plus the files they were written to.
#[derive(Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A test CA that issues server and client certificates into a directory.
pub struct Pki {
    pub dir: PathBuf,
    ca_key: KeyPair,
    ca: rcgen::Certificate,
    pub ca_pem: String,
    pub ca_file: PathBuf,
}

impl Pki {
    pub fn new(dir: &Path, name: &str) -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate().unwrap();
        let ca = params.self_signed(&ca_key).unwrap();
        let ca_pem = ca.pem();
        let ca_file = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&ca_file, &ca_pem).unwrap();
        Pki {
            dir: dir.to_path_buf(),
            ca_key,
            ca,
            ca_pem,
            ca_file,
        }
    }

    fn issue(&self, stem: &str, mut params: CertificateParams, key: KeyPair) -> Issued {
        params
            .distinguished_name
            .push(DnType::CommonName, stem.to_string());
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        let issued = Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert: self.dir.join(format!("{stem}.pem")),
            key: self.dir.join(format!("{stem}.key")),
        };
        std::fs::write(&issued.cert, &issued.cert_pem).unwrap();
        std::fs::write(&issued.key, &issued.key_pem).unwrap();
        issued
    }

    /// A server certificate (ECDSA P-256) for DNS names and IP addresses.
    pub fn server(&self, stem: &str, names: &[&str]) -> Issued {
        self.server_with_key(stem, names, KeyPair::generate().unwrap())
    }

    pub fn server_with_key(&self, stem: &str, names: &[&str], key: KeyPair) -> Issued {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(stem, params, key)
    }

    /// A server certificate whose validity ended in 2001.
    pub fn expired_server(&self, stem: &str, names: &[&str]) -> Issued {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.not_before = rcgen::date_time_ymd(2000, 1, 1);
        params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        self.issue(stem, params, KeyPair::generate().unwrap())
    }

    /// A client certificate (for mutual TLS).
    pub fn client(&self, stem: &str) -> Issued {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(stem, params, KeyPair::generate().unwrap())
    }

    /// Writes the CA's private key next to its certificate (for signing with other tools).
    pub fn write_ca_key(&self) -> PathBuf {
        let path = self.ca_file.with_extension("key");
        std::fs::write(&path, self.ca_key.serialize_pem()).unwrap();
        path
    }

    pub fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(self.ca_pem.as_bytes()).unwrap())
            .unwrap();
        roots
    }
}

/// A client config trusting `roots`, optionally presenting `client`, with its own session cache
/// (so connections made with one config can resume).
pub fn client_config(roots: RootCertStore, client: Option<&Issued>) -> Arc<ClientConfig> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match client {
        Some(c) => builder
            .with_client_auth_cert(certs(&c.cert_pem), key(&c.key_pem))
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.resumption = Resumption::in_memory_sessions(64);
    Arc::new(config)
}

/// A client config that accepts any server certificate (to see which one a server picks for
/// a name it has no certificate for).
pub fn accept_any_config() -> Arc<ClientConfig> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny(
            provider().signature_verification_algorithms,
        )))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

#[derive(Debug)]
struct AcceptAny(rustls::crypto::WebPkiSupportedAlgorithms);

impl rustls::client::danger::ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_schemes()
    }
}

pub fn certs(pem: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap()
}

pub fn key(pem: &str) -> PrivateKeyDer<'static> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).unwrap()
}

/// A response read by [`TlsClient`].
#[derive(Debug)]
pub struct TlsResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl TlsResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A blocking TLS client connection speaking just enough HTTP/1.1 for the tests.
pub struct TlsClient {
    pub tls: StreamOwned<ClientConnection, TcpStream>,
    buf: Vec<u8>,
}

impl TlsClient {
    /// Connects and completes the handshake; `sni` None sends no server name (the name to
    /// verify is then `verify_as`).
    pub fn connect(
        addr: SocketAddr,
        config: Arc<ClientConfig>,
        sni: Option<&str>,
    ) -> io::Result<TlsClient> {
        let (config, name) = match sni {
            Some(n) => (config, n.to_string()),
            None => {
                let mut c = (*config).clone();
                c.enable_sni = false;
                (Arc::new(c), "default.invalid".to_string())
            }
        };
        let tcp = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
        tcp.set_read_timeout(Some(IO_TIMEOUT))?;
        tcp.set_write_timeout(Some(IO_TIMEOUT))?;
        let conn = ClientConnection::new(config, ServerName::try_from(name).unwrap())
            .map_err(io::Error::other)?;
        let mut tls = StreamOwned::new(conn, tcp);
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock)?;
        }
        Ok(TlsClient {
            tls,
            buf: Vec::new(),
        })
    }

    /// The DNS names of the certificate the server presented.
    pub fn peer_names(&self) -> Vec<String> {
        let certs = self.tls.conn.peer_certificates().unwrap_or_default();
        let ee = webpki::EndEntityCert::try_from(&certs[0]).unwrap();
        ee.valid_dns_names().map(str::to_string).collect()
    }

    pub fn resumed(&self) -> bool {
        self.tls.conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed)
    }

    /// Sends a GET for `path` with `Host: host` and reads the response.
    pub fn get(&mut self, host: &str, path: &str) -> io::Result<TlsResponse> {
        self.request(&format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n"))
    }

    /// Reads the next response (after bytes written straight to `tls`).
    pub fn read_response(&mut self) -> io::Result<TlsResponse> {
        read_response(&mut self.tls, &mut self.buf)
    }

    pub fn request(&mut self, raw: &str) -> io::Result<TlsResponse> {
        self.tls.write_all(raw.as_bytes())?;
        self.tls.flush()?;
        read_response(&mut self.tls, &mut self.buf)
    }
}

fn read_response(s: &mut impl Read, buf: &mut Vec<u8>) -> io::Result<TlsResponse> {
    loop {
        let mut hs = [httparse::EMPTY_HEADER; 64];
        let mut r = httparse::Response::new(&mut hs);
        if let httparse::Status::Complete(n) = r.parse(buf).map_err(io::Error::other)? {
            let headers: Vec<(String, String)> = r
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_string(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect();
            let status = r.code.unwrap_or(0);
            let len: usize = headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(0);
            while buf.len() < n + len {
                fill(s, buf)?;
            }
            let body = String::from_utf8_lossy(&buf[n..n + len]).into_owned();
            buf.drain(..n + len);
            return Ok(TlsResponse {
                status,
                headers,
                body,
            });
        }
        fill(s, buf)?;
    }
}

fn fill(s: &mut impl Read, buf: &mut Vec<u8>) -> io::Result<()> {
    let mut tmp = [0u8; 16 * 1024];
    let n = s.read(&mut tmp)?;
    if n == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    buf.extend_from_slice(&tmp[..n]);
    Ok(())
}

#[derive(Default)]
struct Counts {
    connections: AtomicUsize,
    handshakes: AtomicUsize,
    resumed: AtomicUsize,
    failed: AtomicUsize,
    requests: AtomicUsize,
}

/// An HTTPS backend on 127.0.0.1: one thread per connection, keep-alive. Every response is
/// 200 with body `NAME sni=<sni or -> client_cert=<yes|no>\n`, except `GET /big?n=N`: N `x`s.
pub struct TlsBackend {
    pub addr: SocketAddr,
    counts: Arc<Counts>,
    stop: Arc<AtomicBool>,
    /// Last request head seen (for header checks).
    pub last_head: Arc<Mutex<String>>,
}

impl TlsBackend {
    /// Serves `server` (cert and key); `client_ca` requires clients to present a certificate
    /// issued by it.
    pub fn start(name: &str, server: &Issued, client_ca: Option<&Pki>) -> TlsBackend {
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = match client_ca {
            Some(pki) => builder.with_client_cert_verifier(
                rustls::server::WebPkiClientVerifier::builder_with_provider(
                    pki.roots().into(),
                    provider(),
                )
                .build()
                .unwrap(),
            ),
            None => builder.with_no_client_auth(),
        };
        let config = Arc::new(
            builder
                .with_single_cert(certs(&server.cert_pem), key(&server.key_pem))
                .unwrap(),
        );
        Self::serve_config(name, config)
    }

    /// Serves `server` with only the key exchange `groups` (to test the proxy's `curves`).
    pub fn start_with_groups(
        name: &str,
        server: &Issued,
        groups: Vec<&'static dyn rustls::crypto::SupportedKxGroup>,
    ) -> TlsBackend {
        let mut p = rustls::crypto::ring::default_provider();
        p.kx_groups = groups;
        let config = ServerConfig::builder_with_provider(Arc::new(p))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs(&server.cert_pem), key(&server.key_pem))
            .unwrap();
        Self::serve_config(name, Arc::new(config))
    }

    fn serve_config(name: &str, config: Arc<ServerConfig>) -> TlsBackend {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let counts = Arc::new(Counts::default());
        let stop = Arc::new(AtomicBool::new(false));
        let last_head = Arc::new(Mutex::new(String::new()));
        {
            let (counts, stop, last_head, name) = (
                counts.clone(),
                stop.clone(),
                last_head.clone(),
                name.to_string(),
            );
            std::thread::spawn(move || {
                for tcp in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(tcp) = tcp else { continue };
                    counts.connections.fetch_add(1, Ordering::SeqCst);
                    let (config, counts, last_head, name) = (
                        config.clone(),
                        counts.clone(),
                        last_head.clone(),
                        name.clone(),
                    );
                    std::thread::spawn(move || serve(tcp, config, &counts, &last_head, &name));
                }
            });
        }
        TlsBackend {
            addr,
            counts,
            stop,
            last_head,
        }
    }

    pub fn connections(&self) -> usize {
        self.counts.connections.load(Ordering::SeqCst)
    }

    pub fn handshakes(&self) -> usize {
        self.counts.handshakes.load(Ordering::SeqCst)
    }

    pub fn resumed(&self) -> usize {
        self.counts.resumed.load(Ordering::SeqCst)
    }

    pub fn failed_handshakes(&self) -> usize {
        self.counts.failed.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> usize {
        self.counts.requests.load(Ordering::SeqCst)
    }
}

impl Drop for TlsBackend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}

fn serve(
    tcp: TcpStream,
    config: Arc<ServerConfig>,
    counts: &Counts,
    last_head: &Mutex<String>,
    name: &str,
) {
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(30)));
    let conn = rustls::ServerConnection::new(config).unwrap();
    let mut tls = StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        if tls.conn.complete_io(&mut tls.sock).is_err() {
            counts.failed.fetch_add(1, Ordering::SeqCst);
            return;
        }
    }
    counts.handshakes.fetch_add(1, Ordering::SeqCst);
    if tls.conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
        counts.resumed.fetch_add(1, Ordering::SeqCst);
    }
    let sni = tls.conn.server_name().unwrap_or("-").to_string();
    let client_cert = if tls.conn.peer_certificates().is_some() {
        "yes"
    } else {
        "no"
    };
    let mut buf = Vec::new();
    loop {
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if fill(&mut tls, &mut buf).is_err() {
                return;
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        let len: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0);
        while buf.len() < end + len {
            if fill(&mut tls, &mut buf).is_err() {
                return;
            }
        }
        buf.drain(..end + len);
        *last_head.lock().unwrap() = head.clone();
        counts.requests.fetch_add(1, Ordering::SeqCst);
        let close = head.to_ascii_lowercase().contains("connection: close");
        // `GET /big?n=N`: N bytes of `x` (large enough for the proxy's bulk paths).
        let big = head
            .split_whitespace()
            .nth(1)
            .and_then(|t| t.strip_prefix("/big?n="))
            .and_then(|n| n.parse::<usize>().ok());
        let body = match big {
            Some(n) => "x".repeat(n),
            None => format!("{name} sni={sni} client_cert={client_cert}\n"),
        };
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n{}\r\n{body}",
            body.len(),
            if close { "Connection: close\r\n" } else { "" }
        );
        if tls.write_all(resp.as_bytes()).is_err() || tls.flush().is_err() || close {
            tls.conn.send_close_notify();
            let _ = tls.flush();
            return;
        }
    }
}
