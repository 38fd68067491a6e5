//! The response head ringway sends its client for an upstream response.

use std::io::Write as _;

use crate::config::Upstream;
use crate::http1::body::Encode;
use crate::http1::forward::{write_content_length, write_orig, HeaderList, ReqInfo, Request};
use crate::http1::parse::{
    content_length_value, Framing, HeaderIdx, HeaderKind, ResponseHead, Version,
};

/// An upstream response as it goes to the client: its head parsed in place in `rbuf`, and how
/// the proxy frames it.
pub struct ClientResponse<'a> {
    pub rbuf: &'a [u8],
    pub head: &'a ResponseHead,
    pub headers: &'a [HeaderIdx],
    pub encode: Encode,
    /// A HEAD went upstream for a GET: the client gets an explicitly empty body.
    pub zero_length: bool,
    /// Whether the client connection stays open after this response.
    pub keep: bool,
    /// `(name, value)` of a balancer cookie to set.
    pub set_cookie: Option<(&'a str, &'a str)>,
}

/// The status line and header section sent to the client. `tmp` and `list` are scratch space
/// the caller keeps between requests.
pub fn write_response_head(
    req: &Request,
    up: &Upstream,
    upstream_host: &str,
    r: &ClientResponse,
    out: &mut Vec<u8>,
    tmp: &mut Vec<u8>,
    list: &mut HeaderList,
) {
    let ClientResponse {
        rbuf,
        head: resp,
        headers,
        encode,
        zero_length,
        keep,
        set_cookie,
    } = *r;
    let (req_buf, client, worker) = (req.buf, req.client, req.worker);
    let req = req.head;
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(itoa::Buffer::new().format(resp.status).as_bytes());
    out.push(b' ');
    out.extend_from_slice(resp.reason.get(rbuf));
    out.extend_from_slice(b"\r\n");
    let ops = &up.headers.response;
    // Chunk re-coding changes framing: the upstream's Content-Length no longer applies.
    let drop_length = matches!(encode, Encode::Chunk | Encode::Dechunk) || zero_length;
    // Content-Length goes out as the one value ringway read, never as the received lines.
    let kept = |h: &&HeaderIdx| !(h.hop_by_hop || h.kind == HeaderKind::ContentLength);
    let length = headers
        .iter()
        .find(|h| h.kind == HeaderKind::ContentLength)
        .and_then(|h| content_length_value(h.value.get(rbuf)))
        .filter(|_| !drop_length);
    if ops.is_empty() {
        for h in headers.iter().filter(kept) {
            write_orig(out, rbuf, h, resp.bare_lf);
        }
    } else {
        list.clear();
        for (i, h) in headers.iter().enumerate() {
            if kept(&h) {
                list.push_orig(i);
            }
        }
        let info = ReqInfo {
            buf: req_buf,
            head: req,
            headers: &[],
            client,
            path: req.path.get(req_buf),
            query: req.query.map(|q| q.get(req_buf)),
            upstream: upstream_host,
            worker,
        };
        list.apply(ops, rbuf, headers, &info, tmp);
        list.write(out, rbuf, headers, resp.bare_lf);
    }
    if let Some(n) = length {
        write_content_length(out, n);
    }
    if encode == Encode::Chunk || (resp.framing == Framing::Chunked && encode == Encode::Raw) {
        out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
    }
    if zero_length {
        out.extend_from_slice(b"Content-Length: 0\r\n");
    }
    if let Some((name, value)) = set_cookie {
        let _ = write!(out, "Set-Cookie: {name}={value}; Path=/");
        // Over HTTPS the cookie never leaks to plain HTTP, nor rides cross-site subrequests.
        if client.scheme == "https" {
            out.extend_from_slice(b"; Secure; SameSite=Lax");
        }
        out.extend_from_slice(b"\r\n");
    }
    finish_conn_header(out, req.version, keep);
}

/// `Connection` for the client: close when we will, keep-alive when a 1.0 client asked for it.
pub fn finish_conn_header(out: &mut Vec<u8>, version: Version, keep: bool) {
    if !keep {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if version == Version::Http10 {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
}
