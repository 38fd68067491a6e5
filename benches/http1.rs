//! HTTP/1 wire-layer throughput: head parsing and chunked decoding.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use ringway::http1::body::{write_chunk_header, ChunkedDecoder, LAST_CHUNK};
use ringway::http1::parse::{parse_request, parse_response, HeadLimits, HeaderIdx, Parse};

const LIMITS: HeadLimits = HeadLimits {
    max_head_bytes: 16 * 1024,
    max_uri_bytes: 8 * 1024,
    max_headers: 100,
};

fn small_head() -> Vec<u8> {
    b"GET /index.html HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n".to_vec()
}

fn browser_head() -> Vec<u8> {
    let mut v = b"GET /api/v1/items?page=2&sort=desc HTTP/1.1\r\n\
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
X-Forwarded-For: 203.0.113.7\r\n"
        .to_vec();
    v.extend_from_slice(b"\r\n");
    v
}

fn large_head() -> Vec<u8> {
    let mut v = b"POST /upload HTTP/1.1\r\nHost: example.com\r\nContent-Length: 0\r\n".to_vec();
    let mut i = 0;
    while v.len() < 8 * 1024 - 80 {
        v.extend_from_slice(format!("X-Custom-Header-{i:02}: {}\r\n", "v".repeat(100)).as_bytes());
        i += 1;
    }
    v.extend_from_slice(b"\r\n");
    v
}

fn response_head() -> Vec<u8> {
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

fn bench_heads(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse_request");
    let mut headers: Vec<HeaderIdx> = Vec::with_capacity(LIMITS.max_headers);
    for (name, head) in [
        ("small", small_head()),
        ("20_headers", browser_head()),
        ("8KiB", large_head()),
    ] {
        assert!(matches!(
            parse_request(&head, &LIMITS, &mut headers),
            Parse::Complete(_)
        ));
        g.throughput(Throughput::Bytes(head.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| parse_request(black_box(&head), &LIMITS, &mut headers))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("parse_response");
    let head = response_head();
    assert!(matches!(
        parse_response(&head, false, &LIMITS, &mut headers),
        Parse::Complete(_)
    ));
    g.throughput(Throughput::Bytes(head.len() as u64));
    g.bench_function("9_headers", |b| {
        b.iter(|| parse_response(black_box(&head), false, &LIMITS, &mut headers))
    });
    g.finish();
}

fn bench_chunked(c: &mut Criterion) {
    let chunk = vec![b'x'; 4096];
    let mut body = Vec::new();
    for _ in 0..16 {
        write_chunk_header(chunk.len(), &mut body);
        body.extend_from_slice(&chunk);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(LAST_CHUNK);

    let mut g = c.benchmark_group("chunked_decode");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("64KiB_in_4KiB_chunks", |b| {
        b.iter(|| {
            let mut dec = ChunkedDecoder::new();
            let mut input = black_box(&body[..]);
            let mut payload = 0;
            loop {
                let s = dec.step(input).unwrap();
                if let Some(r) = s.data {
                    payload += black_box(&input[r]).len();
                }
                input = &input[s.consumed..];
                if s.done || s.consumed == 0 {
                    break;
                }
            }
            assert_eq!(payload, 64 * 1024);
        })
    });
    g.finish();
}

criterion_group!(benches, bench_heads, bench_chunked);
criterion_main!(benches);
