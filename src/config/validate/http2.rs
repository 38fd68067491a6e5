//! `listeners[].protocols` and `listeners[].http2`: which HTTP versions a listener serves and
//! the limits its HTTP/2 clients live under.

use super::{Res, Validator};
use crate::config::file::{Http2File, Strings};
use crate::config::spans::join;
use crate::config::units::size;
use crate::config::{defaults, Http2Limits, Protocols};

/// Largest flow-control window HTTP/2 allows (RFC 9113 §6.9.1).
const MAX_WINDOW: u64 = (1 << 31) - 1;

/// Smallest header list worth allowing: a browser's ordinary request is about 1-2 KiB.
const MIN_HEADER_LIST: u64 = 1024;

impl Validator<'_> {
    /// `protocols` of an http listener; `tls` says whether it terminates TLS (h2 needs ALPN,
    /// h2c needs cleartext).
    pub(super) fn http_protocols(
        &self,
        key: &str,
        list: Option<Strings>,
        tls: bool,
    ) -> Res<Protocols> {
        let Some(list) = list else {
            // The default offers h2 where it can be negotiated, which is only over TLS.
            return Ok(Protocols {
                h1: true,
                h2: tls && defaults::PROTOCOLS.contains(&"h2"),
                h2c: false,
            });
        };
        if list.items.is_empty() {
            return Err(self.at_value(key, "at least one protocol is required (e.g. [h1, h2])"));
        }
        let mut p = Protocols {
            h1: false,
            h2: false,
            h2c: false,
        };
        for (i, name) in list.items.iter().enumerate() {
            let item = list.item_key(key, i);
            match name.as_str() {
                "h1" => p.h1 = true,
                "h2" if !tls => {
                    return Err(self.at_value(
                        &item,
                        "h2 is negotiated by TLS ALPN; a plaintext listener serves HTTP/2 as h2c",
                    ))
                }
                "h2" => p.h2 = true,
                "h2c" if tls => {
                    return Err(self.at_value(
                        &item,
                        "h2c is cleartext HTTP/2; a TLS listener serves HTTP/2 as h2",
                    ))
                }
                "h2c" => p.h2c = true,
                other => {
                    return Err(self.at_value(
                        &item,
                        format!("unknown protocol \"{other}\" (expected h1, h2 or h2c)"),
                    ))
                }
            }
        }
        Ok(p)
    }

    /// `http2`: every limit written is checked against what HTTP/2 can express.
    pub(super) fn http2_limits(&self, key: &str, h: Option<Http2File>) -> Res<Http2Limits> {
        let h = h.unwrap_or(Http2File {
            max_concurrent_streams: None,
            initial_window: None,
            max_header_list: None,
            max_resets_per_s: None,
        });
        let streams = h
            .max_concurrent_streams
            .unwrap_or(defaults::HTTP2_MAX_CONCURRENT_STREAMS);
        if streams == 0 {
            return Err(self.at_value(
                &join(key, "max_concurrent_streams"),
                "must be at least 1 (0 would refuse every request)",
            ));
        }
        let window = size(h.initial_window, defaults::HTTP2_INITIAL_WINDOW);
        if window == 0 || window > MAX_WINDOW {
            return Err(self.at_value(
                &join(key, "initial_window"),
                format!("must be between 1 byte and {MAX_WINDOW} bytes (2^31-1)"),
            ));
        }
        let headers = size(h.max_header_list, defaults::HTTP2_MAX_HEADER_LIST);
        if !(MIN_HEADER_LIST..=u32::MAX as u64).contains(&headers) {
            return Err(self.at_value(
                &join(key, "max_header_list"),
                format!("must be between {MIN_HEADER_LIST} bytes and 4GiB"),
            ));
        }
        let resets = h
            .max_resets_per_s
            .unwrap_or(defaults::HTTP2_MAX_RESETS_PER_S);
        if resets == 0 {
            return Err(self.at_value(
                &join(key, "max_resets_per_s"),
                "must be at least 1 (a browser cancels streams now and then)",
            ));
        }
        Ok(Http2Limits {
            max_concurrent_streams: streams,
            initial_window: window as u32,
            max_header_list: headers as u32,
            max_resets_per_s: resets,
        })
    }
}

/// The ALPN list a TLS http listener offers, most preferred first.
pub(super) fn alpn(p: &Protocols) -> Vec<String> {
    let mut out = Vec::new();
    if p.h2 {
        out.push("h2".to_string());
    }
    if p.h1 {
        out.push("http/1.1".to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn listener(extra: &str) -> String {
        format!(
            "listeners:\n  - listen: 127.0.0.1:8080\n    {extra}\n    routes: [{{ respond: {{}} }}]\n"
        )
    }

    #[test]
    fn plaintext_listeners_serve_h1_and_h2c_when_asked() {
        let c = Config::parse(&listener("protocols: [h1, h2c]"), "t").unwrap();
        let p = c.listeners[0].protocols;
        assert!(p.h1 && p.h2c && !p.h2);
        let c = Config::parse(&listener("protocols: [h1]"), "t").unwrap();
        assert!(!c.listeners[0].protocols.h2c);
        let c = Config::parse(&listener("http2: {}"), "t").unwrap();
        let l = c.listeners[0].http2;
        assert_eq!(
            (
                l.max_concurrent_streams,
                l.initial_window,
                l.max_header_list,
                l.max_resets_per_s
            ),
            (100, 1024 * 1024, 64 * 1024, 100)
        );
    }

    #[test]
    fn http2_limits_are_read_and_bad_ones_located() {
        let text = listener(
            "http2: { max_concurrent_streams: 7, initial_window: 64KiB, max_header_list: 8KiB, max_resets_per_s: 5 }"
        );
        let l = Config::parse(&text, "t").unwrap().listeners[0].http2;
        assert_eq!(
            (
                l.max_concurrent_streams,
                l.initial_window,
                l.max_header_list,
                l.max_resets_per_s
            ),
            (7, 65536, 8192, 5)
        );
        for (extra, key, msg) in [
            (
                "protocols: [h1, h2]",
                "listeners[0].protocols[1]",
                "negotiated by TLS ALPN",
            ),
            (
                "protocols: []",
                "listeners[0].protocols",
                "at least one protocol",
            ),
            (
                "protocols: [h1, h3]",
                "listeners[0].protocols[1]",
                "unknown protocol \"h3\"",
            ),
            (
                "http2: { max_concurrent_streams: 0 }",
                "listeners[0].http2.max_concurrent_streams",
                "at least 1",
            ),
            (
                "http2: { initial_window: 0 }",
                "listeners[0].http2.initial_window",
                "between 1 byte",
            ),
            (
                "http2: { initial_window: 2GiB }",
                "listeners[0].http2.initial_window",
                "2^31-1",
            ),
            (
                "http2: { max_header_list: 100 }",
                "listeners[0].http2.max_header_list",
                "between 1024 bytes",
            ),
            (
                "http2: { max_resets_per_s: 0 }",
                "listeners[0].http2.max_resets_per_s",
                "at least 1",
            ),
            (
                "http2: { max_streams: 5 }",
                "listeners[0].http2.max_streams",
                "max_streams",
            ),
        ] {
            let e = Config::parse(&listener(extra), "t").expect_err(extra);
            assert_eq!((e.line, e.key.as_str()), (3, key), "{extra}: {e}");
            assert!(e.message.contains(msg), "{extra}: {e}");
        }
    }

    #[test]
    fn alpn_lists_h2_first_when_offered() {
        use crate::config::Protocols;
        let p = |h1, h2| Protocols { h1, h2, h2c: false };
        assert_eq!(super::alpn(&p(true, true)), ["h2", "http/1.1"]);
        assert_eq!(super::alpn(&p(true, false)), ["http/1.1"]);
        assert_eq!(super::alpn(&p(false, true)), ["h2"]);
    }
}
