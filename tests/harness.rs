//! The test support itself, without the proxy: the backend and client must be right before
//! their verdicts on the proxy mean anything.

#[macro_use]
mod support;

use std::time::Duration;
use support::*;

#[test]
fn backend_serves_keep_alive_requests_on_one_connection() {
    let b = Backend::start("b1");
    let mut c = Client::connect(b.addr());
    for i in 0..3 {
        let r = c.request(get_req(&format!("/n{i}"), ""));
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "b1\n");
        assert_eq!(r.header("x-path"), Some(format!("/n{i}").as_str()));
    }
    assert_eq!(b.connections(), 1);
    assert_eq!(b.requests(), 3);
}

#[test]
fn backend_answers_pipelined_requests_in_order() {
    let b = Backend::start("b1");
    let mut c = Client::connect(b.addr());
    c.send(format!(
        "{}{}{}",
        get_req("/a", ""),
        get_req("/b", ""),
        get_req("/c", "")
    ));
    for p in ["/a", "/b", "/c"] {
        assert_eq!(c.read_response().header("x-path"), Some(p));
    }
}

#[test]
fn backend_decodes_chunked_request_bodies_with_trailers() {
    let b = Backend::start("b1");
    let mut c = Client::connect(b.addr());
    let r = c.request(
        "POST /echo-body HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nT: 1\r\n\r\n",
    );
    assert_eq!(r.text(), "abcde");
    let req = b.only_request();
    assert!(req.chunked);
    assert_eq!(req.trailers, vec![("T".to_string(), "1".to_string())]);
}

#[test]
fn client_reads_chunked_close_delimited_and_head_responses() {
    let b = Backend::start("b1");
    let mut c = Client::connect(b.addr());
    let r = c.request(get_req("/chunked", ""));
    assert!(r.chunked);
    assert_eq!(r.text(), "hello, chunked world");
    assert_eq!(
        r.trailers,
        vec![("X-Trailer".to_string(), "done".to_string())]
    );
    c.send("HEAD /big?n=50 HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = c.read_head_response();
    assert_eq!(r.header("content-length"), Some("50"));
    assert!(r.body.is_empty());
    let r = c.request(get_req("/close?n=3000", ""));
    assert_eq!(r.body, pattern(3000));
    c.expect_closed();
}

#[test]
fn backend_sends_100_continue_before_reading_the_body() {
    let b = Backend::start("b1");
    let mut c = Client::connect(b.addr());
    c.send(
        "POST /continue HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n",
    );
    assert_eq!(c.read_response().status, 100);
    c.send("abcd");
    assert_eq!(c.read_response().text(), "got 4 bytes\n");
}

#[test]
fn backend_counts_open_connections_and_can_close_after_each_response() {
    let b = Backend::start_with(
        "b1",
        BackendOptions {
            close_after_response: true,
            ..Default::default()
        },
    );
    let mut c = Client::connect(b.addr());
    let r = c.request(get_req("/", ""));
    assert!(!r.closes(), "the close must not be announced");
    c.expect_closed();
    assert!(b.wait_for_no_open_connections(Duration::from_secs(5)));
}

#[test]
fn client_times_out_instead_of_hanging_on_a_silent_peer() {
    let b = Backend::start("b1");
    let mut c = Client::connect(b.addr());
    c.send("GET / HTTP/1.1\r\nHost: x\r\n"); // incomplete head: the backend waits
    c.expect_silence(Duration::from_millis(200));
}

#[test]
fn refused_addr_refuses_connections() {
    let a = refused_addr();
    assert!(std::net::TcpStream::connect_timeout(&a, Duration::from_secs(1)).is_err());
}

#[test]
fn unix_backend_serves_requests() {
    let dir = TempDir::new();
    let b = Backend::start_with(
        "u1",
        BackendOptions {
            unix: Some(dir.join("b.sock")),
            ..Default::default()
        },
    );
    assert!(b.target().starts_with("unix//"));
    let mut c = Client::connect_unix(&dir.join("b.sock"));
    assert_eq!(c.request(get_req("/", "")).text(), "u1\n");
}

#[test]
fn subst_replaces_longest_names_first() {
    let out = subst(
        "a: $B1\nb: $B10\n",
        &[("B1", "x".into()), ("B10", "y".into())],
    );
    assert_eq!(out, "a: x\nb: y\n");
}
