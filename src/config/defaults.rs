//! Every value a key takes when it is left out, and the bounds validation enforces.
//!
//! Named here, with the reason, so the contract (`shared/reference/config.yaml`) and the code
//! can be compared in one place; the validator uses only these names, never a literal.

use std::time::Duration;

// Process.

/// Long enough for a typical request to finish, short enough for a rolling deploy.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
/// Off: only deployments behind a load balancer need the extra accepting time.
pub const SHUTDOWN_DELAY: Duration = Duration::ZERO;
/// Pinning avoids cross-core migration of a worker's hot caches.
pub const PIN_WORKERS: bool = true;
/// io_uring where the kernel allows it, epoll (with a warning) where it does not.
pub const DRIVER: &str = "auto";
/// Read by people first; `json` is for log shippers.
pub const LOG_FORMAT: &str = "text";
/// Chatty enough to see lifecycle events, quiet per request.
pub const LOG_LEVEL: &str = "info";

// Downstream limits (http listeners).

/// Big cookies and JWTs fit; a flood of headers does not (nginx/Caddy use similar bounds).
pub const MAX_HEADER_BYTES: u64 = 64 * 1024;
/// Below this even ordinary requests fail with 431.
pub const MIN_MAX_HEADER_BYTES: u64 = 1024;
/// Long query strings fit; URLs used as a data channel do not.
pub const MAX_URI_BYTES: u64 = 8 * 1024;
/// Room for `GET /`: a smaller bound would refuse every request.
pub const MIN_MAX_URI_BYTES: u64 = 16;
/// Browsers send about 20; 100 leaves room for proxies in between.
pub const MAX_HEADERS: usize = 100;
/// The parser keeps header positions in a fixed array of this size.
pub const MAX_MAX_HEADERS: usize = 256;
/// Unlimited: uploads are streamed, so a large body costs no memory.
pub const MAX_REQUEST_BODY: u64 = 0;
/// Bounds slowloris: a client must finish its head in this time.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Keep-alive between requests: browsers reuse connections for about this long.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

// Listeners.

/// A listener without `protocol` serves HTTP, the common case.
pub const LISTENER_PROTOCOL: &str = "http";
/// TLS 1.2 is still needed by older clients; 1.0/1.1 are never offered.
pub const TLS_MIN_VERSION: &str = "1.2";
/// The ALPN list of a TLS tcp listener (http listeners derive theirs from `protocols`).
pub const ALPN: &str = "http/1.1";
/// Browsers get HTTP/2 by ALPN and everything else HTTP/1.1, as nginx and Caddy default to.
pub const PROTOCOLS: &[&str] = &["h1", "h2"];
/// RFC 9113 recommends at least 100; browsers open about that many at once.
pub const HTTP2_MAX_CONCURRENT_STREAMS: u32 = 100;
/// 1 MiB per stream lets one upload run at ~100 MB/s over a 10 ms round trip.
pub const HTTP2_INITIAL_WINDOW: u64 = 1024 * 1024;
/// Matches the HTTP/1 head limit scale; a decoded block past it is an HPACK bomb.
pub const HTTP2_MAX_HEADER_LIST: u64 = 64 * 1024;
/// Far above a browser's cancellations (navigation aborts a few), far below a rapid-reset
/// attack (CVE-2023-44487 sends thousands per second).
pub const HTTP2_MAX_RESETS_PER_S: u32 = 100;
/// A client that has not finished its TLS handshake by then is stalled or hostile.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Mutual TLS that lets clients without a certificate in has to be asked for explicitly.
pub const CLIENT_AUTH_REQUIRED: bool = true;
/// A `respond` route without `status` is a plain success.
pub const RESPOND_STATUS: u16 = 200;
/// The ranges `private_ranges` stands for: RFC 1918, loopback, IPv6 ULA and loopback.
pub const PRIVATE_RANGES: &[&str] = &[
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "127.0.0.0/8",
    "fc00::/7",
    "::1/128",
];

// Upstreams.

/// Every target carries the same share unless told otherwise.
pub const TARGET_WEIGHT: u32 = 1;
/// Canary off: all requests go to the main targets.
pub const SPLIT_PERCENT: u32 = 0;
/// Two random choices, least loaded wins: near-optimal spread with no shared state.
pub const LB_POLICY: &str = "random_choose";
/// "The power of two choices": more samples gain little.
pub const LB_CHOOSE: usize = 2;
/// The cookie policy's cookie name when `key` is empty (Caddy's default).
pub const DEFAULT_COOKIE: &str = "lb";
/// No retries: a retried request may not be safe to repeat. A failed dial or TLS handshake is
/// not a retry: nothing was sent, so it always moves on to a target not yet tried for this
/// request (nginx's `proxy_next_upstream error`), whatever `retries` says. `retries` and
/// `try_duration` count rounds over the targets after that, and exchanges that were sent.
pub const LB_RETRIES: u32 = 0;
/// Off: `retries` alone bounds the attempts.
pub const TRY_DURATION: Duration = Duration::ZERO;
/// Short enough to be invisible to a client, long enough not to hammer a failing pool.
pub const TRY_INTERVAL: Duration = Duration::from_millis(250);
/// Only GET is idempotent and common enough to retry without asking.
pub const RETRY_METHODS: &[&str] = &["GET"];
/// Absent `forwarded` means X-Forwarded-*, what most applications read.
pub const FORWARDED: &str = "xff";
/// No body buffering: streamed at once (0).
pub const BODY_BUFFER: u64 = 0;
/// Largest `request_buffer` / `response_buffer`: the bytes are held per connection.
pub const MAX_BODY_BUFFER: u64 = 16 * 1024 * 1024;

// Health checks.

/// Probe the target's own port.
pub const PROBE_PORT: u16 = 0;
/// GET, since some servers answer HEAD differently.
pub const PROBE_METHOD: &str = "GET";
/// Detects a dead target within seconds at negligible load.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(10);
/// Probes more often than this would load the targets for no gain in detection time.
pub const MIN_PROBE_INTERVAL: Duration = Duration::from_millis(10);
/// Half the interval: a probe never overlaps the next.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Any success is healthy.
pub const PROBE_EXPECT_STATUS: (u16, u16) = (200, 299);
/// Two in a row: one lost packet neither takes a target down nor brings it back.
pub const PROBE_FAILS: u32 = 2;
/// See `PROBE_FAILS`.
pub const PROBE_PASSES: u32 = 2;
/// One failure within `fail_duration` marks a target down (Caddy's default).
pub const PASSIVE_MAX_FAILS: u32 = 1;
/// Passive health is on unless `fail_duration: 0s`: a target that refused a connection, failed
/// its handshake, or hung or reset before answering is left alone this long (nginx's
/// `max_fails=1 fail_timeout=10s`). Caddy and the reference contract default to 0 (off), which
/// with `targets: [live, dead]` sends every other request to the dead target forever; a dead
/// target now costs one failed dial per 10s. A lone target is never marked down unless
/// `fail_duration` is written (nginx's rule): it has nowhere else to send traffic, so a mark would
/// only turn 502s into 503s and delay recovery. Status and latency failures still need
/// `unhealthy_status` / `unhealthy_latency`, which have no default.
pub const FAIL_DURATION: Duration = Duration::from_secs(10);
/// Failures one target remembers: each is an atomic timestamp in a per-target ring.
pub const MAX_PASSIVE_FAILS: usize = 64;

// Transport.

/// A healthy target in the same network connects in milliseconds; 3s is a dead one.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(3);
/// Reusing connections saves a handshake per request.
pub const KEEPALIVE: bool = true;
/// Below the common 75s server-side keep-alive, so the target never closes first.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Enough for bursts per worker without holding many sockets per target.
pub const MAX_IDLE_PER_WORKER: usize = 32;
/// A request finding every target at `max_connections` waits this long for a slot, then 503
/// (Caddy's `max_conns_per_host` waits without bound; a bound keeps a stuck target from
/// holding clients forever).
pub const QUEUE_TIMEOUT: Duration = Duration::from_secs(5);
/// Big cookies and long redirect URLs fit; a runaway header section does not.
pub const MAX_RESPONSE_HEADER: u64 = 64 * 1024;
/// Smallest `max_response_header`: below it ordinary responses fail.
pub const MIN_MAX_RESPONSE_HEADER: u64 = 1024;
/// Off: the kernel's keep-alive settings apply only to sockets that ask for them.
pub const KEEPALIVE_INTERVAL: Duration = Duration::ZERO;
/// Caddy's (Go's) fast-fallback delay and RFC 8305's recommended Connection Attempt Delay
/// upper range: a live address answers well within it, a dead one costs no more.
pub const DIAL_FALLBACK_DELAY: Duration = Duration::from_millis(300);
/// Smallest `read_buffer` / `write_buffer`: the kernel's own floor is about 2 KiB (it doubles
/// the value asked for bookkeeping), below which it silently rounds up.
pub const MIN_SOCKET_BUFFER: u64 = 1024;
/// Largest `read_buffer` / `write_buffer` accepted before the sysctl check: 64 MiB is far past
/// any bandwidth-delay product one upstream connection needs.
pub const MAX_SOCKET_BUFFER: u64 = 64 * 1024 * 1024;
/// `socks5://` forward proxies without a port (RFC 1928's well-known port).
pub const SOCKS_PORT: u16 = 1080;
/// A target that has not finished its handshake by then is stalled.
pub const UPSTREAM_TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Targets speak HTTP unless told otherwise.
pub const TRANSPORT_PROTOCOL: &str = "http";
/// A PROXY header is sent only to targets that expect one: others would read it as data.
pub const PROXY_PROTOCOL: &str = "off";
/// Verification stays on unless turned off by name.
pub const INSECURE_SKIP_VERIFY: bool = false;
/// `http://` targets without a port.
pub const HTTP_PORT: u16 = 80;
/// Caddy's rule: a target on 443 is dialed with TLS without being told.
pub const HTTPS_PORT: u16 = 443;

// FastCGI.

/// PHP is what FastCGI serves almost everywhere (Caddy's php_fastcgi splits on .php).
pub const FASTCGI_SPLIT_PATH: &str = ".php";
/// The script a directory path runs, as in nginx's and Caddy's PHP setups.
pub const FASTCGI_INDEX: &str = "index.php";

// Dynamic upstreams.

/// Kubernetes endpoints change within seconds; a 30 s lag is what Caddy-style setups accept.
pub const DNS_REFRESH: Duration = Duration::from_secs(30);
/// Below this a refresh (or a record's TTL, dnsmasq's local records say 0) would hammer the server.
pub const MIN_DNS_REFRESH: Duration = Duration::from_secs(1);
/// The DNS port when a resolver is written as a bare IP.
pub const DNS_PORT: u16 = 53;
/// `srv: {service, name}` without `proto`: services behind a proxy speak TCP.
pub const SRV_PROTO: &str = "tcp";
