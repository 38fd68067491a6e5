//! Inputs and measured operations shared by the benches and by `tests/bench_alloc.rs`, so the
//! allocation test runs exactly what the benches time.

// Each bench (and the test) uses only part of this module.
#![allow(dead_code)]

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use ringway::config::{Action, Config, ListenerKind, TargetAddr};
use ringway::http1::body::{write_chunk_header, ChunkedDecoder, LAST_CHUNK};
use ringway::http1::forward::{write_request_head, Client, HeaderList, Request};
use ringway::http1::parse::{parse_request, HeadLimits, HeaderIdx, Parse, RequestHead};
use ringway::net::stream::Stream;
use ringway::upstream::pool::{Pool, UpConn};
use ringway::upstream::target::TargetShared;

pub const LIMITS: HeadLimits = HeadLimits {
    max_head_bytes: 16 * 1024,
    max_uri_bytes: 8 * 1024,
    max_headers: 100,
};

pub fn small_head() -> Vec<u8> {
    b"GET /index.html HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n".to_vec()
}

/// What a browser sends: 20 fields, a cookie, conditional headers.
pub fn browser_head() -> Vec<u8> {
    b"GET /api/v1/items?page=2&sort=desc HTTP/1.1\r\n\
Host: www.example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n\
Accept-Language: en-US,en;q=0.5\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Referer: https://www.example.com/catalog\r\n\
Connection: keep-alive\r\n\
Cookie: session=0123456789abcdef0123456789abcdef; theme=dark; consent=yes\r\n\
Upgrade-Insecure-Requests: 1\r\n\
Sec-Fetch-Dest: document\r\n\
Sec-Fetch-Mode: navigate\r\n\
Sec-Fetch-Site: same-origin\r\n\
Sec-Fetch-User: ?1\r\n\
Priority: u=0, i\r\n\
Cache-Control: max-age=0\r\n\
If-None-Match: \"5f3c-1a2b3c4d\"\r\n\
If-Modified-Since: Tue, 01 Apr 2025 10:00:00 GMT\r\n\
X-Request-Id: 7d7f6c1e-8f1a-4b5e-9c3d-2e1f0a9b8c7d\r\n\
X-Forwarded-For: 203.0.113.7\r\n\
\r\n"
        .to_vec()
}

/// Just under 8 KiB of head: the default limit's worth of long custom fields.
pub fn large_head() -> Vec<u8> {
    let mut v = b"POST /upload HTTP/1.1\r\nHost: example.com\r\nContent-Length: 0\r\n".to_vec();
    let mut i = 0;
    while v.len() < 8 * 1024 - 80 {
        v.extend_from_slice(format!("X-Custom-Header-{i:02}: {}\r\n", "v".repeat(100)).as_bytes());
        i += 1;
    }
    v.extend_from_slice(b"\r\n");
    v
}

pub fn request_heads() -> [(&'static str, Vec<u8>); 3] {
    [
        ("small", small_head()),
        ("20_headers", browser_head()),
        ("8KiB", large_head()),
    ]
}

/// Heads for the upstream head rewrite: the 8 KiB one adds only more of the same copying.
pub fn rewrite_heads() -> [(&'static str, Vec<u8>); 2] {
    [("small", small_head()), ("20_headers", browser_head())]
}

pub fn response_head() -> Vec<u8> {
    b"HTTP/1.1 200 OK\r\n\
Date: Tue, 01 Apr 2025 10:00:00 GMT\r\n\
Server: upstream\r\n\
Content-Type: application/json; charset=utf-8\r\n\
Content-Length: 1234\r\n\
Cache-Control: private, max-age=60\r\n\
ETag: \"5f3c-1a2b3c4d\"\r\n\
Vary: Accept-Encoding\r\n\
Connection: keep-alive\r\n\r\n"
        .to_vec()
}

/// One route per way of forwarding, picked by index (never matched). `header_ops` also
/// rewrites the path and runs the operations that are allocation-free once warm: a `replace`
/// that changes a value allocates (regex's `replace_all` returns an owned String), so it is
/// not part of the measured path that `tests/bench_alloc.rs` holds to zero allocations.
const REWRITE_CONFIG: &str = r#"
listeners:
  - listen: 127.0.0.1:8080
    routes:
      - upstream: xff
      - upstream: rfc7239
      - rewrite: "/v2{path}?{query}"
        upstream: header_ops
upstreams:
  xff:
    targets: [10.0.0.2:8080]
  rfc7239:
    targets: [10.0.0.2:8080]
    forwarded: rfc7239
  header_ops:
    targets: [10.0.0.2:8080]
    headers:
      request:
        - set: { X-Env: prod, X-Client: "{client_ip}:{client_port}" }
        - add: { X-Trace: "{header.X-Request-Id}" }
        - remove: ["Sec-Fetch-*", Priority]
"#;

/// The routes of `REWRITE_CONFIG`, by index, with the header each must write.
pub const REWRITE_ROUTES: [(&str, &str); 3] = [
    ("xff", "X-Forwarded-For: 198.51.100.23\r\n"),
    ("rfc7239", "Forwarded: for=198.51.100.23"),
    ("header_ops", "X-Client: 198.51.100.23:50123\r\n"),
];

/// A parsed request head and the reused buffers `write_request_head` writes into, as a
/// connection holds them.
pub struct HeadRewrite {
    config: Config,
    client: Client,
    head: Vec<u8>,
    req: RequestHead,
    headers: Vec<HeaderIdx>,
    pub out: Vec<u8>,
    tmp: Vec<u8>,
    list: HeaderList,
}

impl HeadRewrite {
    pub fn new(head: Vec<u8>) -> Self {
        let config =
            ringway::config::Config::parse(REWRITE_CONFIG, "bench.yaml").expect("bench config");
        // A client straight from the internet: untrusted, so its X-Forwarded-For is replaced.
        let peer = "198.51.100.23:50123".parse().expect("peer address");
        let client = Client {
            peer: Some(peer),
            trusted: false,
            ip_text: peer.ip().to_string(),
            scheme: "http",
            local: None,
        };
        let mut headers = Vec::with_capacity(LIMITS.max_headers);
        let Parse::Complete(req) = parse_request(&head, &LIMITS, &mut headers) else {
            panic!("bench head does not parse");
        };
        HeadRewrite {
            config,
            client,
            head,
            req,
            headers,
            out: Vec::new(),
            tmp: Vec::new(),
            list: HeaderList::default(),
        }
    }

    pub fn head_len(&self) -> usize {
        self.head.len()
    }

    /// Writes the upstream head for route `route` of `REWRITE_ROUTES` into `out`, as the proxy
    /// does for one request; returns its length.
    #[inline]
    pub fn run(&mut self, route: usize) -> usize {
        let ListenerKind::Http { routes } = &self.config.listeners[0].kind else {
            unreachable!("the bench listener is HTTP");
        };
        let route = &routes[route];
        let Action::Proxy(u) = route.action else {
            unreachable!("every bench route proxies");
        };
        let up = &self.config.upstreams[u];
        let upstream_host = match &up.targets[0].addr {
            TargetAddr::Tcp { host, .. } => host.as_str(),
            TargetAddr::Unix(_) => "localhost",
        };
        self.out.clear();
        let req = Request {
            buf: std::hint::black_box(&self.head),
            head: &self.req,
            headers: &self.headers,
            client: &self.client,
            worker: 0,
        };
        write_request_head(
            &req,
            up,
            route,
            upstream_host,
            &mut self.out,
            &mut self.tmp,
            &mut self.list,
        );
        self.out.len()
    }
}

pub const CHUNKED_PAYLOAD: usize = 64 * 1024;

/// 64 KiB of payload in 4 KiB chunks, as a streaming upstream sends it.
pub fn chunked_body() -> Vec<u8> {
    let chunk = vec![b'x'; 4096];
    let mut body = Vec::new();
    for _ in 0..CHUNKED_PAYLOAD / chunk.len() {
        write_chunk_header(chunk.len(), &mut body);
        body.extend_from_slice(&chunk);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(LAST_CHUNK);
    body
}

/// Decodes a whole chunked body as the proxy does (step until done); returns the payload bytes.
pub fn decode_chunked(body: &[u8]) -> usize {
    let mut dec = ChunkedDecoder::new();
    let mut input = body;
    let mut payload = 0;
    loop {
        let s = dec.step(input).expect("valid chunked body");
        if let Some(r) = s.data {
            payload += std::hint::black_box(&input[r]).len();
        }
        input = &input[s.consumed..];
        if s.done || s.consumed == 0 {
            break;
        }
    }
    payload
}

/// Idle connections a pool may keep per target in the pool bench (the config default).
pub const POOL_MAX_IDLE: usize = 32;
pub const POOL_MAX_IDLE_AGE: Option<Duration> = Some(Duration::from_secs(60));

/// A one-target pool holding `idle` connections: halves of Unix socket pairs, their peers
/// returned so they stay open. Must run inside a monoio runtime (the streams register with it).
pub fn warm_pool(idle: usize) -> (Pool, Vec<std::os::unix::net::UnixStream>) {
    let pool = Pool::new(std::iter::once(1));
    let shared = Arc::new(TargetShared::new());
    let mut peers = Vec::new();
    for _ in 0..idle {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().expect("socketpair");
        let ours = monoio::net::UnixStream::from_std(ours).expect("register stream");
        // UpConn releases a slot reserved by the dialer; reserve it as the dialer would.
        shared.conns.fetch_add(1, Ordering::AcqRel);
        let conn = UpConn::new(Stream::Unix(ours), shared.clone());
        pool.checkin(0, 0, conn, POOL_MAX_IDLE);
        peers.push(theirs);
    }
    (pool, peers)
}

/// One request's use of the pool: take the warmest connection, give it back afterwards.
#[inline]
pub fn pool_round_trip(pool: &Pool) {
    let conn = pool
        .checkout(0, 0, POOL_MAX_IDLE_AGE)
        .expect("an idle connection");
    pool.checkin(0, 0, std::hint::black_box(conn), POOL_MAX_IDLE);
}

/// The runtime the pool's streams live in; epoll works where io_uring is unavailable.
pub fn runtime() -> monoio::Runtime<monoio::LegacyDriver> {
    monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .build()
        .expect("monoio runtime")
}
