//! Access log: one line per request. Workers format into a per-worker buffer and hand full
//! buffers to a writer thread over a channel, so a slow disk or pipe never blocks a worker.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use std::net::SocketAddr;

use crate::config::access_format::{AccessFormat, Piece, FIELDS};
use crate::config::AccessLog;

/// A worker hands its buffer over once it holds this much (fewer, larger writes).
const FLUSH_BYTES: usize = 64 * 1024;
/// ...or this long after the first line went in, so quiet servers still log promptly.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(500);

/// The writer thread; ends at the empty buffer `finish` sends (workers never send one).
pub struct Writer {
    thread: Option<JoinHandle<()>>,
    tx: mpsc::Sender<Vec<u8>>,
}

impl Writer {
    pub fn start(target: &AccessLog) -> std::io::Result<(Writer, mpsc::Sender<Vec<u8>>)> {
        let mut out: Box<dyn std::io::Write + Send> = match target {
            AccessLog::Stdout => Box::new(std::io::stdout()),
            AccessLog::File(p) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map_err(|e| {
                        std::io::Error::new(e.kind(), format!("access log {}: {e}", p.display()))
                    })?,
            ),
        };
        let (tx, rx) = mpsc::channel::<Vec<u8>>();
        let thread = std::thread::Builder::new()
            .name("ringway-access-log".into())
            .spawn(move || {
                for buf in rx {
                    if buf.is_empty() {
                        break;
                    }
                    if let Err(e) = out.write_all(&buf).and_then(|_| out.flush()) {
                        tracing::warn!("access log write failed: {e}");
                    }
                }
            })?;
        Ok((
            Writer {
                thread: Some(thread),
                tx: tx.clone(),
            },
            tx,
        ))
    }

    /// Waits for everything sent so far to be written (call after the workers are gone).
    pub fn finish(mut self) {
        let _ = self.tx.send(Vec::new());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What one access log line is about.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Event {
    /// An HTTP request that got a status (proxied, answered locally or refused by the parser).
    #[default]
    Request,
    /// One layer-4 connection.
    Tcp,
    /// A client whose TLS handshake failed: no request, no status.
    TlsHandshakeFailed,
}

impl Event {
    fn name(self) -> &'static str {
        match self {
            Event::Request => "request",
            Event::Tcp => "tcp",
            Event::TlsHandshakeFailed => "tls_handshake_failed",
        }
    }
}

/// One access log line. Byte-string fields are the request's own bytes (lossily shown);
/// empty means absent.
#[derive(Debug, Default)]
pub struct Record<'a> {
    pub event: Event,
    pub client: Option<SocketAddr>,
    pub listener: &'a str,
    /// `HTTP/1.1`, `HTTP/1.0`; empty when the request line never parsed.
    pub protocol: &'a str,
    pub method: &'a [u8],
    pub host: &'a [u8],
    pub uri: &'a [u8],
    /// 0: none was sent.
    pub status: u16,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Of `bytes_out`, the response body (nginx's `$body_bytes_sent`).
    pub body_bytes_out: u64,
    pub duration: Duration,
    /// The route's `name`, else its index in the listener's `routes`.
    pub route: Option<&'a str>,
    /// The upstream group's name.
    pub upstream: Option<&'a str>,
    /// The target dialed (last tried, when every try failed).
    pub upstream_addr: Option<&'a str>,
    pub upstream_connect: Option<Duration>,
    /// From the first dial until the response ended (nginx's `$upstream_response_time`).
    pub upstream_response: Option<Duration>,
    pub user_agent: &'a [u8],
    pub referer: &'a [u8],
    pub request_id: &'a [u8],
    pub worker: usize,
    /// Layer 4: how the tunnel ended (closed, idle_timeout, client_error, upstream_error,
    /// no_target).
    pub end: &'a str,
    /// TLS: why the handshake failed.
    pub reason: &'a str,
}

/// The fields each event shows in `text` and `json` lines, in order.
const REQUEST_FIELDS: &[&str] = &[
    "time",
    "client",
    "client_port",
    "listener",
    "protocol",
    "method",
    "host",
    "uri",
    "status",
    "bytes_in",
    "bytes_out",
    "duration_ms",
    "route",
    "upstream",
    "upstream_addr",
    "upstream_connect_ms",
    "upstream_response_ms",
    "user_agent",
    "referer",
    "request_id",
    "worker",
];
const TCP_FIELDS: &[&str] = &[
    "time",
    "event",
    "protocol",
    "client",
    "client_port",
    "listener",
    "upstream",
    "upstream_addr",
    "upstream_connect_ms",
    "bytes_in",
    "bytes_out",
    "duration_ms",
    "end",
    "worker",
];
const TLS_FIELDS: &[&str] = &[
    "time",
    "event",
    "client",
    "client_port",
    "listener",
    "reason",
    "duration_ms",
    "worker",
];

enum Value<'v> {
    Null,
    Text(std::borrow::Cow<'v, str>),
    Int(u64),
    Ms(f64),
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

fn bytes(b: &[u8]) -> Value<'_> {
    if b.is_empty() {
        Value::Null
    } else {
        Value::Text(String::from_utf8_lossy(b))
    }
}

impl Record<'_> {
    fn value(&self, field: &str, now: SystemTime) -> Value<'_> {
        let opt = |s: Option<&str>| s.map_or(Value::Null, |s| Value::Text(s.to_string().into()));
        let text = |s: &str| {
            if s.is_empty() {
                Value::Null
            } else {
                Value::Text(s.to_string().into())
            }
        };
        match field {
            "time" => Value::Text(rfc3339(now).into()),
            "time_local" => Value::Text(clf_time(now).into()),
            "event" => Value::Text(self.event.name().into()),
            "client" => self
                .client
                .map_or(Value::Null, |c| Value::Text(c.ip().to_string().into())),
            "client_port" => self
                .client
                .map_or(Value::Null, |c| Value::Int(u64::from(c.port()))),
            "listener" => text(self.listener),
            "protocol" => text(self.protocol),
            "method" => bytes(self.method),
            "host" => bytes(self.host),
            "uri" => bytes(self.uri),
            "status" if self.status == 0 => Value::Null,
            "status" => Value::Int(u64::from(self.status)),
            "bytes_in" => Value::Int(self.bytes_in),
            "bytes_out" => Value::Int(self.bytes_out),
            "body_bytes_out" => Value::Int(self.body_bytes_out),
            "duration_ms" => Value::Ms(ms(self.duration)),
            "route" => opt(self.route),
            "upstream" => opt(self.upstream),
            "upstream_addr" => opt(self.upstream_addr),
            "upstream_connect_ms" => self
                .upstream_connect
                .map_or(Value::Null, |d| Value::Ms(ms(d))),
            "upstream_response_ms" => self
                .upstream_response
                .map_or(Value::Null, |d| Value::Ms(ms(d))),
            "user_agent" => bytes(self.user_agent),
            "referer" => bytes(self.referer),
            "request_id" => bytes(self.request_id),
            "worker" => Value::Int(self.worker as u64),
            "end" => text(self.end),
            "reason" => text(self.reason),
            _ => Value::Null,
        }
    }

    fn fields(&self) -> &'static [&'static str] {
        match self.event {
            Event::Request => REQUEST_FIELDS,
            Event::Tcp => TCP_FIELDS,
            Event::TlsHandshakeFailed => TLS_FIELDS,
        }
    }

    /// Appends this record's line (with its newline) to `out`.
    pub fn render(&self, format: &AccessFormat, now: SystemTime, out: &mut String) {
        match format {
            AccessFormat::Json => {
                let mut map = serde_json::Map::new();
                for &f in self.fields() {
                    let v = match self.value(f, now) {
                        Value::Null => serde_json::Value::Null,
                        Value::Text(t) => serde_json::Value::String(t.into_owned()),
                        Value::Int(n) => n.into(),
                        Value::Ms(x) => x.into(),
                    };
                    map.insert(f.to_string(), v);
                }
                let _ = writeln!(out, "{}", serde_json::Value::Object(map));
            }
            AccessFormat::Text => self.render_text(now, out),
            AccessFormat::Combined => self.render_combined(now, out),
            AccessFormat::Template(pieces) => {
                for p in pieces {
                    match p {
                        Piece::Literal(l) => out.push_str(l),
                        Piece::Field(i) => push_plain(out, self.value(FIELDS[*i], now)),
                    }
                }
                out.push('\n');
            }
        }
    }

    /// `time client "METHOD uri" status key=value...`: the head readable at a glance, the
    /// rest named.
    fn render_text(&self, now: SystemTime, out: &mut String) {
        let _ = write!(out, "{} ", rfc3339(now));
        push_plain(out, self.value("client", now));
        match self.event {
            Event::Request => {
                let _ = write!(
                    out,
                    " \"{} {}\" ",
                    String::from_utf8_lossy(self.method),
                    String::from_utf8_lossy(self.uri)
                );
                push_plain(out, self.value("status", now));
                let _ = write!(out, " in={} out={}", self.bytes_in, self.bytes_out);
            }
            Event::Tcp => {
                let _ = write!(
                    out,
                    " TCP {} in={} out={}",
                    self.end, self.bytes_in, self.bytes_out
                );
            }
            Event::TlsHandshakeFailed => {
                let _ = write!(out, " TLS handshake failed: {}", self.reason);
            }
        }
        let _ = write!(out, " {:.3}ms", self.duration.as_secs_f64() * 1000.0);
        let named: &[&str] = match self.event {
            Event::Request => &[
                "listener",
                "host",
                "route",
                "upstream",
                "upstream_addr",
                "upstream_connect_ms",
                "upstream_response_ms",
                "request_id",
                "worker",
            ],
            Event::Tcp => &["listener", "upstream", "upstream_addr", "worker"],
            Event::TlsHandshakeFailed => &["listener", "worker"],
        };
        for &f in named {
            let _ = write!(out, " {f}=");
            push_plain(out, self.value(f, now));
        }
        out.push('\n');
    }

    /// nginx's `combined`, byte for byte in shape. Lines that are not requests (tunnels,
    /// failed handshakes) show what they were in place of the request line, status `-`.
    fn render_combined(&self, now: SystemTime, out: &mut String) {
        push_plain(out, self.value("client", now));
        let _ = write!(out, " - - [{}] \"", clf_time(now));
        match self.event {
            Event::Request if !self.method.is_empty() => {
                push_escaped(out, self.method);
                out.push(' ');
                push_escaped(out, self.uri);
                if !self.protocol.is_empty() {
                    out.push(' ');
                    out.push_str(self.protocol);
                }
            }
            Event::Request => {}
            Event::Tcp => {
                let _ = write!(out, "TCP {}", self.end);
            }
            Event::TlsHandshakeFailed => {
                let _ = write!(out, "TLS handshake failed: {}", self.reason);
            }
        }
        out.push_str("\" ");
        push_plain(out, self.value("status", now));
        let body = match self.event {
            Event::Request => self.body_bytes_out,
            _ => self.bytes_out,
        };
        let _ = write!(out, " {body} \"");
        push_escaped_or_dash(out, self.referer);
        out.push_str("\" \"");
        push_escaped_or_dash(out, self.user_agent);
        out.push_str("\"\n");
    }
}

/// A value as nginx prints a variable: `-` when absent.
fn push_plain(out: &mut String, v: Value) {
    match v {
        Value::Null => out.push('-'),
        Value::Text(t) => out.push_str(&t),
        Value::Int(n) => {
            let _ = write!(out, "{n}");
        }
        Value::Ms(x) => {
            let _ = write!(out, "{x:.3}");
        }
    }
}

fn push_escaped_or_dash(out: &mut String, b: &[u8]) {
    if b.is_empty() {
        out.push('-');
    } else {
        push_escaped(out, b);
    }
}

/// nginx's access log escaping: `"`, `\`, control and non-ASCII bytes as `\xHH`.
fn push_escaped(out: &mut String, b: &[u8]) {
    for &c in b {
        if c == b'"' || c == b'\\' || !(0x20..0x7f).contains(&c) {
            let _ = write!(out, "\\x{c:02X}");
        } else {
            out.push(c as char);
        }
    }
}

/// A worker's side of the access log.
pub struct WorkerLog {
    buf: RefCell<String>,
    tx: mpsc::Sender<Vec<u8>>,
    format: AccessFormat,
}

impl WorkerLog {
    pub fn new(tx: mpsc::Sender<Vec<u8>>, format: AccessFormat) -> Self {
        WorkerLog {
            buf: RefCell::new(String::with_capacity(FLUSH_BYTES)),
            tx,
            format,
        }
    }

    pub fn record(&self, r: &Record) {
        r.render(&self.format, SystemTime::now(), &mut self.buf.borrow_mut());
        self.flush_if_full();
    }

    fn flush_if_full(&self) {
        if self.buf.borrow().len() >= FLUSH_BYTES {
            self.flush();
        }
    }

    /// Hands buffered lines to the writer thread.
    pub fn flush(&self) {
        let mut buf = self.buf.borrow_mut();
        if !buf.is_empty() {
            let full = std::mem::replace(&mut *buf, String::with_capacity(FLUSH_BYTES));
            let _ = self.tx.send(full.into_bytes());
        }
    }
}

/// Year, month (1-12), day of a count of days since 1970-01-01 (civil-from-days, Howard
/// Hinnant's), so no date library is needed.
fn civil(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// `2026-11-21T09:30:00.123Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let (year, month, day) = civil(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// nginx's `$time_local` in UTC: `21/Nov/2026:09:30:00 +0000`.
pub fn clf_time(t: SystemTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let (year, month, day) = civil(days);
    format!(
        "{day:02}/{}/{year:04}:{:02}:{:02}:{:02} +0000",
        MONTHS[(month - 1) as usize],
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Record<'static> {
        Record {
            client: Some("192.0.2.7:51234".parse().unwrap()),
            listener: "web",
            protocol: "HTTP/1.1",
            method: b"GET",
            host: b"example.com",
            uri: b"/a?b=\"c\"",
            status: 200,
            bytes_in: 80,
            bytes_out: 150,
            body_bytes_out: 12,
            duration: Duration::from_micros(1500),
            route: Some("1"),
            upstream: Some("api"),
            upstream_addr: Some("127.0.0.1:9001"),
            upstream_connect: Some(Duration::from_micros(250)),
            upstream_response: Some(Duration::from_millis(1)),
            user_agent: b"curl/8.0",
            referer: b"",
            request_id: b"abc",
            worker: 3,
            ..Record::default()
        }
    }

    fn render(r: &Record, format: &str) -> String {
        let mut out = String::new();
        let at = UNIX_EPOCH + Duration::from_millis(1_795_253_400_123);
        r.render(&AccessFormat::parse(format).unwrap(), at, &mut out);
        out
    }

    #[test]
    fn combined_lines_have_nginx_shape() {
        let cases: Vec<(Record, &str)> = vec![
            (
                sample(),
                "192.0.2.7 - - [21/Nov/2026:09:30:00 +0000] \"GET /a?b=\\x22c\\x22 HTTP/1.1\" 200 12 \"-\" \"curl/8.0\"\n",
            ),
            (
                // A parser refusal: no request line, nginx logs `""` and the status.
                Record {
                    client: Some("192.0.2.7:1".parse().unwrap()),
                    status: 431,
                    bytes_out: 90,
                    ..Record::default()
                },
                "192.0.2.7 - - [21/Nov/2026:09:30:00 +0000] \"\" 431 0 \"-\" \"-\"\n",
            ),
            (
                Record {
                    event: Event::TlsHandshakeFailed,
                    reason: "no shared cipher",
                    ..Record::default()
                },
                "- - - [21/Nov/2026:09:30:00 +0000] \"TLS handshake failed: no shared cipher\" - 0 \"-\" \"-\"\n",
            ),
        ];
        for (r, want) in cases {
            assert_eq!(render(&r, "combined"), want);
        }
    }

    #[test]
    fn json_lines_have_unique_named_fields_per_event() {
        let line = render(&sample(), "json");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["client"], "192.0.2.7");
        assert_eq!(v["client_port"], 51234);
        assert_eq!(v["upstream"], "api");
        assert_eq!(v["upstream_addr"], "127.0.0.1:9001");
        assert_eq!(v["upstream_connect_ms"], 0.25);
        assert_eq!(v["route"], "1");
        assert_eq!(v["referer"], serde_json::Value::Null);
        assert_eq!(v.as_object().unwrap().len(), REQUEST_FIELDS.len());
        for fields in [REQUEST_FIELDS, TCP_FIELDS, TLS_FIELDS] {
            let mut sorted = fields.to_vec();
            sorted.sort();
            sorted.dedup();
            assert_eq!(sorted.len(), fields.len(), "a key twice in {fields:?}");
            for f in fields {
                assert!(FIELDS.contains(f), "{f} is not a documented field");
            }
        }
    }

    #[test]
    fn templates_fill_fields_and_dash_the_absent_ones() {
        assert_eq!(
            render(
                &sample(),
                "{client}:{client_port} {host} {status} {referer} {upstream_response_ms}"
            ),
            "192.0.2.7:51234 example.com 200 - 1.000\n"
        );
    }

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_795_253_400_123);
        assert_eq!(rfc3339(t), "2026-11-21T09:30:00.123Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
    }
}
