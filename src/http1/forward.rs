//! The request head ringway sends upstream: method and path after the route's strip_prefix or
//! rewrite, the client's header lines copied from the receive buffer minus hop-by-hop ones,
//! Host, X-Forwarded-* or Forwarded, and the upstream's header operations.
//!
//! Everything writes into buffers the connection owns, so once they have grown to a typical
//! head a request costs no allocation here; the one exception is a header `replace` that
//! changes a value (regex's `replace_all` hands back an owned String).

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};

use crate::config::{Forwarded, HeaderOp, NamePattern, Route, Upstream};
use crate::http1::parse::{host_from_target, Framing, HeaderIdx, HeaderKind, RequestHead};
use crate::route;
use crate::template::{Placeholder, Placeholders};

/// Who the client is, computed once per connection.
pub struct Client {
    pub peer: Option<SocketAddr>,
    /// `peer`'s X-Forwarded-* and Forwarded headers are believed.
    pub trusted: bool,
    pub ip_text: String,
    /// `https` or `http`: how the client reached us.
    pub scheme: &'static str,
    /// The address the client reached us at (`Forwarded: by=`); `None` on Unix sockets.
    pub local: Option<SocketAddr>,
}

/// The request being forwarded, as the head writers read it: its head parsed in place in
/// `buf`, and who sent it.
pub struct Request<'a> {
    pub buf: &'a [u8],
    pub head: &'a RequestHead,
    pub headers: &'a [HeaderIdx],
    pub client: &'a Client,
    /// For the `{worker}` placeholder.
    pub worker: usize,
}

/// Placeholder values for one request.
pub(crate) struct ReqInfo<'a> {
    pub(crate) buf: &'a [u8],
    pub(crate) head: &'a RequestHead,
    pub(crate) headers: &'a [HeaderIdx],
    pub(crate) client: &'a Client,
    /// After strip_prefix.
    pub(crate) path: &'a [u8],
    pub(crate) query: Option<&'a [u8]>,
    pub(crate) upstream: &'a str,
    pub(crate) worker: usize,
}

impl Placeholders for ReqInfo<'_> {
    fn write(&self, p: &Placeholder, out: &mut Vec<u8>) {
        match p {
            Placeholder::ClientIp => out.extend_from_slice(self.client.ip_text.as_bytes()),
            Placeholder::ClientPort => {
                if let Some(peer) = self.client.peer {
                    out.extend_from_slice(itoa::Buffer::new().format(peer.port()).as_bytes());
                }
            }
            Placeholder::Host => {
                if let Some(h) = self.head.host {
                    out.extend_from_slice(route::host_without_port(h.get(self.buf)));
                }
            }
            Placeholder::Method => out.extend_from_slice(self.head.method.get(self.buf)),
            Placeholder::Scheme => out.extend_from_slice(self.client.scheme.as_bytes()),
            Placeholder::Path => out.extend_from_slice(self.path),
            Placeholder::Query => {
                if let Some(q) = self.query {
                    out.extend_from_slice(q);
                }
            }
            Placeholder::Uri => {
                out.extend_from_slice(self.head.path.get(self.buf));
                if let Some(q) = self.head.query {
                    out.push(b'?');
                    out.extend_from_slice(q.get(self.buf));
                }
            }
            Placeholder::Header(name) => {
                if let Some(h) = self
                    .headers
                    .iter()
                    .find(|h| h.name.get(self.buf).eq_ignore_ascii_case(name.as_bytes()))
                {
                    out.extend_from_slice(h.value.get(self.buf));
                }
            }
            Placeholder::UpstreamHostport => out.extend_from_slice(self.upstream.as_bytes()),
            Placeholder::Worker => {
                out.extend_from_slice(itoa::Buffer::new().format(self.worker).as_bytes());
            }
            // A request has no response yet (validation allows these in handle_response only).
            Placeholder::Response(_) => {}
        }
    }
}

/// Whether a header is replaced by the forwarded-header logic (and so not copied through).
fn is_forwarding_header(kind: HeaderKind, mode: Forwarded) -> bool {
    match mode {
        Forwarded::Off => false,
        Forwarded::Xff => matches!(
            kind,
            HeaderKind::XForwardedFor
                | HeaderKind::XForwardedProto
                | HeaderKind::XForwardedHost
                | HeaderKind::XRealIp
        ),
        Forwarded::Rfc7239 => matches!(
            kind,
            HeaderKind::XForwardedFor
                | HeaderKind::XForwardedProto
                | HeaderKind::XForwardedHost
                | HeaderKind::XRealIp
                | HeaderKind::Forwarded
        ),
    }
}

/// Header lines to emit, for the path where header operations rewrite them: original lines
/// by index, or new ones whose bytes live in `arena`. Reused per connection.
#[derive(Default)]
pub struct HeaderList {
    items: Vec<Item>,
    arena: Vec<u8>,
}

#[derive(Clone)]
enum Item {
    Orig(usize),
    New {
        name: std::ops::Range<usize>,
        value: std::ops::Range<usize>,
    },
}

impl HeaderList {
    pub(crate) fn clear(&mut self) {
        self.items.clear();
        self.arena.clear();
    }

    /// An original header line, by its index in the parsed headers.
    pub(crate) fn push_orig(&mut self, i: usize) {
        self.items.push(Item::Orig(i));
    }

    fn push_new(&mut self, name: &[u8], value: &[u8]) {
        let n0 = self.arena.len();
        self.arena.extend_from_slice(name);
        let v0 = self.arena.len();
        self.arena.extend_from_slice(value);
        self.items.push(Item::New {
            name: n0..v0,
            value: v0..self.arena.len(),
        });
    }

    fn name<'a>(&'a self, item: &Item, buf: &'a [u8], headers: &[HeaderIdx]) -> &'a [u8] {
        match item {
            Item::Orig(i) => headers[*i].name.get(buf),
            Item::New { name, .. } => &self.arena[name.clone()],
        }
    }

    fn value<'a>(&'a self, item: &Item, buf: &'a [u8], headers: &[HeaderIdx]) -> &'a [u8] {
        match item {
            Item::Orig(i) => headers[*i].value.get(buf),
            Item::New { value, .. } => &self.arena[value.clone()],
        }
    }

    pub(crate) fn apply(
        &mut self,
        ops: &[HeaderOp],
        buf: &[u8],
        headers: &[HeaderIdx],
        ctx: &impl Placeholders,
        tmp: &mut Vec<u8>,
    ) {
        for op in ops {
            match op {
                HeaderOp::Set(name, value) => {
                    self.remove_matching(buf, headers, |n| n.eq_ignore_ascii_case(name.as_bytes()));
                    tmp.clear();
                    value.render(ctx, tmp);
                    self.push_new(name.as_bytes(), tmp);
                }
                HeaderOp::Add(name, value) => {
                    tmp.clear();
                    value.render(ctx, tmp);
                    self.push_new(name.as_bytes(), tmp);
                }
                HeaderOp::Remove(NamePattern::Exact(name)) => {
                    self.remove_matching(buf, headers, |n| n.eq_ignore_ascii_case(name.as_bytes()));
                }
                HeaderOp::Remove(NamePattern::Prefix(prefix)) => {
                    // Framing stays the proxy's: `Content-*` must not take Content-Length.
                    self.remove_matching(buf, headers, |n| {
                        n.len() >= prefix.len()
                            && n[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
                            && !n.eq_ignore_ascii_case(b"content-length")
                    });
                }
                HeaderOp::Replace { name, regex, with } => {
                    for k in 0..self.items.len() {
                        let item = self.items[k].clone();
                        if !self
                            .name(&item, buf, headers)
                            .eq_ignore_ascii_case(name.as_bytes())
                        {
                            continue;
                        }
                        let Ok(value) = std::str::from_utf8(self.value(&item, buf, headers)) else {
                            continue;
                        };
                        let replaced = regex.replace_all(value, with.as_str());
                        if let std::borrow::Cow::Owned(v) = replaced {
                            let n0 = self.arena.len();
                            self.arena.extend_from_slice(name.as_bytes());
                            let v0 = self.arena.len();
                            self.arena.extend_from_slice(v.as_bytes());
                            self.items[k] = Item::New {
                                name: n0..v0,
                                value: v0..self.arena.len(),
                            };
                        }
                    }
                }
            }
        }
    }

    fn remove_matching(&mut self, buf: &[u8], headers: &[HeaderIdx], pred: impl Fn(&[u8]) -> bool) {
        let arena = &self.arena;
        self.items.retain(|item| {
            let n = match item {
                Item::Orig(i) => headers[*i].name.get(buf),
                Item::New { name, .. } => &arena[name.clone()],
            };
            !pred(n)
        });
    }

    pub(crate) fn write(
        &self,
        out: &mut Vec<u8>,
        buf: &[u8],
        headers: &[HeaderIdx],
        bare_lf: bool,
    ) {
        for item in &self.items {
            match item {
                Item::Orig(i) => write_orig(out, buf, &headers[*i], bare_lf),
                Item::New { name, value } => {
                    out.extend_from_slice(&self.arena[name.clone()]);
                    out.extend_from_slice(b": ");
                    out.extend_from_slice(&self.arena[value.clone()]);
                    out.extend_from_slice(b"\r\n");
                }
            }
        }
    }
}

/// Copies an untouched header: its original line, or a rebuilt CRLF line when the head used
/// bare LF line ends (never forward a framing style the next hop might read differently).
#[inline]
pub(crate) fn write_orig(out: &mut Vec<u8>, buf: &[u8], h: &HeaderIdx, bare_lf: bool) {
    if bare_lf {
        out.extend_from_slice(h.name.get(buf));
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value.get(buf));
        out.extend_from_slice(b"\r\n");
    } else {
        out.extend_from_slice(h.line.get(buf));
    }
}

/// Where header lines go: straight out, or into a list the operations rewrite.
enum Sink<'a> {
    Direct(&'a mut Vec<u8>),
    List(&'a mut HeaderList),
}

impl Sink<'_> {
    fn header(&mut self, name: &[u8], value: &[u8]) {
        match self {
            Sink::Direct(out) => {
                out.extend_from_slice(name);
                out.extend_from_slice(b": ");
                out.extend_from_slice(value);
                out.extend_from_slice(b"\r\n");
            }
            Sink::List(list) => list.push_new(name, value),
        }
    }
}

/// Appends the X-Forwarded-* (and Forwarded) fields for the upstream request.
fn forwarded_headers(
    mode: Forwarded,
    client: &Client,
    buf: &[u8],
    head: &RequestHead,
    headers: &[HeaderIdx],
    sink: &mut Sink,
    tmp: &mut Vec<u8>,
) {
    if mode == Forwarded::Off {
        return;
    }
    let incoming = |kind: HeaderKind| {
        headers
            .iter()
            .filter(move |h| h.kind == kind)
            .map(|h| h.value.get(buf))
    };
    let host = head.host.map(|h| h.get(buf));
    // X-Forwarded-For: extend a trusted chain, otherwise start a new one.
    tmp.clear();
    if client.trusted {
        for v in incoming(HeaderKind::XForwardedFor) {
            if !tmp.is_empty() {
                tmp.extend_from_slice(b", ");
            }
            tmp.extend_from_slice(v);
        }
    }
    if !client.ip_text.is_empty() {
        if !tmp.is_empty() {
            tmp.extend_from_slice(b", ");
        }
        tmp.extend_from_slice(client.ip_text.as_bytes());
    }
    if !tmp.is_empty() {
        sink.header(b"X-Forwarded-For", tmp);
    }
    let keep_or = |kind: HeaderKind, default: Option<&[u8]>, name: &[u8], sink: &mut Sink| {
        let trusted_value = if client.trusted {
            incoming(kind).next()
        } else {
            None
        };
        if let Some(v) = trusted_value.or(default) {
            sink.header(name, v);
        }
    };
    keep_or(
        HeaderKind::XForwardedProto,
        Some(client.scheme.as_bytes()),
        b"X-Forwarded-Proto",
        sink,
    );
    keep_or(HeaderKind::XForwardedHost, host, b"X-Forwarded-Host", sink);
    let ip = (!client.ip_text.is_empty()).then_some(client.ip_text.as_bytes());
    keep_or(HeaderKind::XRealIp, ip, b"X-Real-IP", sink);
    if mode == Forwarded::Rfc7239 {
        tmp.clear();
        if client.trusted {
            for v in incoming(HeaderKind::Forwarded) {
                if !tmp.is_empty() {
                    tmp.extend_from_slice(b", ");
                }
                tmp.extend_from_slice(v);
            }
        }
        if !tmp.is_empty() {
            tmp.extend_from_slice(b", ");
        }
        match client.peer.map(|p| p.ip()) {
            // RFC 7239 §6: IPv6 addresses are bracketed and the value quoted.
            Some(IpAddr::V6(v6)) => {
                let _ = write!(tmp, "for=\"[{v6}]\"");
            }
            Some(IpAddr::V4(v4)) => {
                let _ = write!(tmp, "for={v4}");
            }
            None => tmp.extend_from_slice(b"for=unknown"),
        }
        match client.local.map(|l| l.ip()) {
            Some(IpAddr::V6(v6)) => {
                let _ = write!(tmp, ";by=\"[{v6}]\"");
            }
            Some(IpAddr::V4(v4)) => {
                let _ = write!(tmp, ";by={v4}");
            }
            None => tmp.extend_from_slice(b";by=unknown"),
        }
        if let Some(h) = host {
            tmp.extend_from_slice(b";host=\"");
            tmp.extend_from_slice(h);
            tmp.push(b'"');
        }
        tmp.extend_from_slice(b";proto=");
        tmp.extend_from_slice(client.scheme.as_bytes());
        sink.header(b"Forwarded", tmp);
    }
}

/// A route that turns a request into a GET or HEAD sends no body upstream (a body on those
/// means nothing, and an upstream may not read it, desynchronising the connection).
pub fn override_drops_body(route: &Route) -> bool {
    matches!(route.method.as_deref(), Some("GET" | "HEAD"))
}

/// Appends the request line and header section sent to the upstream to `out`. `tmp` and
/// `list` are scratch space the caller keeps between requests.
pub fn write_request_head(
    req: &Request,
    up: &Upstream,
    route: &Route,
    upstream_host: &str,
    out: &mut Vec<u8>,
    tmp: &mut Vec<u8>,
    list: &mut HeaderList,
) {
    let Request {
        buf,
        head,
        headers,
        client,
        worker,
    } = *req;
    let method = route
        .method
        .as_deref()
        .map(str::as_bytes)
        .unwrap_or(head.method.get(buf));
    out.extend_from_slice(method);
    out.push(b' ');
    let path = head.path.get(buf);
    let stripped = route
        .strip_prefix
        .as_deref()
        .map(|p| route::strip_prefix(path, p.as_bytes()))
        .unwrap_or(path);
    let query = head.query.map(|q| q.get(buf));
    let info = ReqInfo {
        buf,
        head,
        headers,
        client,
        path: stripped,
        query,
        upstream: upstream_host,
        worker,
    };
    if let Some(rewrite) = &route.rewrite {
        let start = out.len();
        rewrite.render(&info, out);
        // "/v2{path}?{query}" with no query leaves a bare '?'.
        if out.len() > start && out.last() == Some(&b'?') {
            out.pop();
        }
    } else if route.strip_prefix.is_some() || head.target.get(buf).first() != Some(&b'/') {
        if stripped.is_empty() {
            out.push(b'/');
        }
        out.extend_from_slice(stripped);
        if let Some(q) = query {
            out.push(b'?');
            out.extend_from_slice(q);
        }
    } else {
        out.extend_from_slice(head.target.get(buf));
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mode = up.forwarded;
    let ops = &up.headers.request;
    // The upstream must read the request as ringway did: the authority it routed on is the
    // Host (an absolute-form target's wins over the field, RFC 9112 §3.2.2), and the length it
    // framed the body with is one canonical Content-Length, never the received lines (a list
    // such as `5, 5` or a repeated field is read differently by some servers).
    let authority = host_from_target(head)
        .then(|| head.host.map(|h| h.get(buf)))
        .flatten();
    // A method override to GET/HEAD sends no body: no framing, no Expect.
    let no_body = override_drops_body(route);
    let copied = |h: &&HeaderIdx| {
        let dropped = h.hop_by_hop
            || is_forwarding_header(h.kind, mode)
            || h.kind == HeaderKind::ContentLength
            || no_body && h.kind == HeaderKind::Expect
            || authority.is_some() && h.kind == HeaderKind::Host;
        !dropped
    };
    if ops.is_empty() {
        if let Some(a) = authority {
            Sink::Direct(out).header(b"Host", a);
        }
        for h in headers.iter().filter(copied) {
            write_orig(out, buf, h, head.bare_lf);
        }
        if head.host.is_none() {
            let _ = write!(out, "Host: {upstream_host}\r\n");
        }
        forwarded_headers(
            mode,
            client,
            buf,
            head,
            headers,
            &mut Sink::Direct(out),
            tmp,
        );
    } else {
        list.clear();
        if let Some(a) = authority {
            list.push_new(b"Host", a);
        }
        for (i, h) in headers.iter().enumerate() {
            if copied(&h) {
                list.push_orig(i);
            }
        }
        if head.host.is_none() {
            list.push_new(b"Host", upstream_host.as_bytes());
        }
        forwarded_headers(mode, client, buf, head, headers, &mut Sink::List(list), tmp);
        list.apply(ops, buf, headers, &info, tmp);
        list.write(out, buf, headers, head.bare_lf);
    }
    match head.framing {
        _ if no_body => {}
        Framing::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        Framing::Length(n) => write_content_length(out, n),
        _ => {}
    }
    if head.conn.upgrade {
        // Upgrade is hop-by-hop except when upgrading: then it must reach the upstream.
        for h in headers.iter().filter(|h| h.kind == HeaderKind::Upgrade) {
            write_orig(out, buf, h, head.bare_lf);
        }
        out.extend_from_slice(b"Connection: Upgrade\r\n");
    } else if !up.transport.keepalive {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// `Content-Length: n` and its line end. Once per response on the hot path: `itoa` rather than
/// `write!`, whose formatting machinery cost 3.6% of small keep-alive's user-space instructions.
pub fn write_content_length(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(b"Content-Length: ");
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    out.extend_from_slice(b"\r\n");
}
