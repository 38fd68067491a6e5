//! Access log: one line per request. Workers format into a per-worker buffer and hand full
//! buffers to a writer thread over a channel, so a slow disk or pipe never blocks a worker.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::{AccessLog, LogFormat};

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

/// One request's line.
pub struct Record<'a> {
    pub client: &'a str,
    pub method: &'a [u8],
    pub uri: &'a [u8],
    pub status: u16,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub duration: Duration,
    pub upstream: Option<&'a str>,
    pub worker: usize,
}

/// One layer-4 connection's line.
pub struct TcpRecord<'a> {
    pub client: &'a str,
    /// The target tunnelled to; `None` when none could be reached.
    pub upstream: Option<&'a str>,
    /// Client -> upstream and upstream -> client payload bytes.
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub duration: Duration,
    /// How it ended: closed, idle_timeout, client_error, upstream_error, no_target.
    pub end: &'a str,
    pub worker: usize,
}

/// A worker's side of the access log.
pub struct WorkerLog {
    buf: RefCell<String>,
    tx: mpsc::Sender<Vec<u8>>,
    format: LogFormat,
}

impl WorkerLog {
    pub fn new(tx: mpsc::Sender<Vec<u8>>, format: LogFormat) -> Self {
        WorkerLog {
            buf: RefCell::new(String::with_capacity(FLUSH_BYTES)),
            tx,
            format,
        }
    }

    pub fn record(&self, r: &Record) {
        let mut buf = self.buf.borrow_mut();
        let time = rfc3339(SystemTime::now());
        let method = String::from_utf8_lossy(r.method);
        let uri = String::from_utf8_lossy(r.uri);
        let ms = r.duration.as_secs_f64() * 1000.0;
        match self.format {
            LogFormat::Json => {
                let line = serde_json::json!({
                    "time": time,
                    "client": r.client,
                    "method": method,
                    "uri": uri,
                    "status": r.status,
                    "bytes_in": r.bytes_in,
                    "bytes_out": r.bytes_out,
                    "duration_ms": (ms * 1000.0).round() / 1000.0,
                    "upstream": r.upstream,
                    "worker": r.worker,
                });
                let _ = writeln!(buf, "{line}");
            }
            LogFormat::Text => {
                let _ = writeln!(
                    buf,
                    "{time} {} \"{method} {uri}\" {} in={} out={} {ms:.3}ms upstream={} worker={}",
                    if r.client.is_empty() { "-" } else { r.client },
                    r.status,
                    r.bytes_in,
                    r.bytes_out,
                    r.upstream.unwrap_or("-"),
                    r.worker
                );
            }
        }
        drop(buf);
        self.flush_if_full();
    }

    pub fn record_tcp(&self, r: &TcpRecord) {
        let mut buf = self.buf.borrow_mut();
        let time = rfc3339(SystemTime::now());
        let ms = r.duration.as_secs_f64() * 1000.0;
        match self.format {
            LogFormat::Json => {
                let line = serde_json::json!({
                    "time": time,
                    "protocol": "tcp",
                    "client": r.client,
                    "upstream": r.upstream,
                    "bytes_in": r.bytes_in,
                    "bytes_out": r.bytes_out,
                    "duration_ms": (ms * 1000.0).round() / 1000.0,
                    "end": r.end,
                    "worker": r.worker,
                });
                let _ = writeln!(buf, "{line}");
            }
            LogFormat::Text => {
                let _ = writeln!(
                    buf,
                    "{time} {} TCP {} in={} out={} {ms:.3}ms upstream={} worker={}",
                    if r.client.is_empty() { "-" } else { r.client },
                    r.end,
                    r.bytes_in,
                    r.bytes_out,
                    r.upstream.unwrap_or("-"),
                    r.worker
                );
            }
        }
        drop(buf);
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

/// `2026-11-21T09:30:00.123Z`, without a date library (civil-from-days, Howard Hinnant's).
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_795_253_400_123);
        assert_eq!(rfc3339(t), "2026-11-21T09:30:00.123Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
    }
}
