//! HTTP/1 wire-layer throughput: head parsing, the upstream head rewrite and chunked decoding.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use ringway::http1::parse::{parse_request, parse_response, HeaderIdx, Parse};

mod common;
use common::{
    chunked_body, decode_chunked, request_heads, response_head, rewrite_heads, HeadRewrite,
    CHUNKED_PAYLOAD, LIMITS, REWRITE_ROUTES,
};

fn bench_heads(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse_request");
    let mut headers: Vec<HeaderIdx> = Vec::with_capacity(LIMITS.max_headers);
    for (name, head) in request_heads() {
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

fn bench_rewrite(c: &mut Criterion) {
    let mut g = c.benchmark_group("request_head_rewrite");
    for (head_name, head) in rewrite_heads() {
        let mut rw = HeadRewrite::new(head);
        g.throughput(Throughput::Bytes(rw.head_len() as u64));
        for (route, (route_name, expect)) in REWRITE_ROUTES.iter().enumerate() {
            rw.run(route);
            let out = String::from_utf8_lossy(&rw.out);
            assert!(out.contains(expect), "{route_name} wrote:\n{out}");
            g.bench_function(format!("{head_name}/{route_name}"), |b| {
                b.iter(|| rw.run(black_box(route)))
            });
        }
    }
    g.finish();
}

fn bench_chunked(c: &mut Criterion) {
    let body = chunked_body();
    assert_eq!(decode_chunked(&body), CHUNKED_PAYLOAD);
    let mut g = c.benchmark_group("chunked_decode");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("64KiB_in_4KiB_chunks", |b| {
        b.iter(|| decode_chunked(black_box(&body)))
    });
    g.finish();
}

criterion_group!(benches, bench_heads, bench_rewrite, bench_chunked);
criterion_main!(benches);
