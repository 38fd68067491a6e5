//! Streaming: large bodies moved with splice and bounded memory, upgrades (WebSocket and raw),
//! server-sent events flushed as written, body limits, and no descriptor leaks on disconnects.

#[macro_use]
mod support;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use support::streaming::*;
use support::*;

driver_tests! {
    fn small_bodies_are_not_spliced(driver) {
        let (proxy, _bulk) = bulk_proxy(driver, "");
        let mut s = connect(&proxy);
        write!(s, "GET /source/1000 HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        read_head(&mut s);
        let mut body = vec![0u8; 1000];
        s.read_exact(&mut body).unwrap();
        assert_eq!(proxy.server().spliced_bytes(), (0, 0));
    }

    fn websocket_echo_works_through_the_proxy_including_a_10_mib_message(driver) {
        let ws = start_ws_echo();
        let yaml = one_upstream_yaml("$WS", "");
        let proxy = Proxy::start(driver, &yaml, &[("WS", ws.to_string())]);
        let url = format!("ws://{}/chat", proxy.addr());
        let stream = connect(&proxy);
        let (mut client, resp) = tungstenite::client(url.as_str(), stream).expect("handshake");
        assert_eq!(resp.status(), 101);
        client.send(tungstenite::Message::text("hello")).unwrap();
        assert_eq!(client.read().unwrap().into_text().unwrap(), "hello");
        let big: Vec<u8> = (0..10 << 20).map(|i: u32| (i % 251) as u8).collect();
        client.send(tungstenite::Message::binary(big.clone())).unwrap();
        assert_eq!(client.read().unwrap().into_data(), big);
        client.close(None).unwrap();
        // The close handshake completes: the echo server's close frame comes back.
        loop {
            match client.read() {
                Ok(m) if m.is_close() => continue,
                Ok(other) => panic!("unexpected message after close: {other:?}"),
                Err(tungstenite::Error::ConnectionClosed) => break,
                Err(e) => panic!("close handshake failed: {e}"),
            }
        }
    }

    fn raw_upgrade_tunnels_bytes_both_ways_and_passes_half_close(driver) {
        let (proxy, _bulk) = bulk_proxy(driver, "");
        let mut s = connect(&proxy);
        s.write_all(b"GET /raw HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\nearly").unwrap();
        let head = read_head(&mut s);
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        assert!(head.contains("Upgrade: echo"), "{head}");
        assert!(head.to_ascii_lowercase().contains("connection: upgrade"), "{head}");
        let mut got = [0u8; 5];
        s.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"early", "bytes sent right after the upgrade request go through");
        s.write_all(b"ping").unwrap();
        let mut got = [0u8; 4];
        s.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ping");
        s.0.shutdown(std::net::Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty(), "the echo side closes after our FIN");
    }

    fn upgrade_answered_without_101_is_an_ordinary_response(driver) {
        let (proxy, _bulk) = bulk_proxy(driver, "");
        let mut s = connect(&proxy);
        s.write_all(b"GET /nope HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n").unwrap();
        let head = read_head(&mut s);
        assert!(head.starts_with("HTTP/1.1 404"), "{head}");
        // Still HTTP: the same connection serves another request.
        s.write_all(b"GET /source/3 HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        let head = read_head(&mut s);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    }

    fn server_sent_events_reach_the_client_as_the_upstream_writes_them(driver) {
        let (proxy, bulk) = bulk_proxy(driver, "");
        let mut s = connect(&proxy);
        s.write_all(b"GET /sse HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        let head = read_head(&mut s);
        assert!(head.contains("text/event-stream"), "{head}");
        let mut seen = String::new();
        for i in 0..3 {
            let written = bulk.events.recv_timeout(Duration::from_secs(5)).unwrap();
            let want = format!("data: {i}\n\n");
            let mut buf = [0u8; 256];
            while !seen.contains(&want) {
                let n = s.read(&mut buf).unwrap();
                assert!(n > 0);
                seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
            let delay = Instant::now().saturating_duration_since(written);
            assert!(delay < Duration::from_millis(50), "event {i} arrived {delay:?} after it was written");
        }
    }

    fn chunked_upload_growing_past_max_request_body_gets_413(driver) {
        let bulk = BulkServer::start();
        let yaml = format!("limits:\n  max_request_body: 1000\n{}", one_upstream_yaml("$B", ""));
        let proxy = Proxy::start(driver, &yaml, &[("B", bulk.target())]);
        let mut s = connect(&proxy);
        s.write_all(b"POST /sink HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap();
        let chunk = vec![b'x'; 600];
        for _ in 0..2 {
            write!(s, "258\r\n").unwrap();
            s.write_all(&chunk).unwrap();
            s.write_all(b"\r\n").unwrap();
        }
        let head = read_head(&mut s);
        assert!(head.starts_with("HTTP/1.1 413"), "{head}");
        assert!(head.contains("Connection: close"), "{head}");
    }

    fn client_gone_mid_download_leaks_no_descriptors(driver) {
        let (proxy, _bulk) = bulk_proxy(driver, "");
        // Warm up: the first splice transfer leaves one empty pipe cached for reuse.
        let mut s = connect(&proxy);
        write!(s, "GET /source/{} HTTP/1.1\r\nHost: t\r\n\r\n", 4 << 20).unwrap();
        read_head(&mut s);
        let mut body = vec![0u8; 4 << 20];
        s.read_exact(&mut body).unwrap();
        drop(s);
        assert!(wait_for(Duration::from_secs(3), || proxy.server().spliced_bytes().1 > 0));
        std::thread::sleep(Duration::from_millis(100));
        let before = open_fds();
        for _ in 0..5 {
            let mut s = connect(&proxy);
            write!(s, "GET /source/{} HTTP/1.1\r\nHost: t\r\n\r\n", 256 << 20).unwrap();
            read_head(&mut s);
            let mut some = vec![0u8; 1 << 20];
            s.read_exact(&mut some).unwrap();
        }
        // Client sockets, upstream sockets and pipes of the cut transfers are all released.
        let settled = wait_for(Duration::from_secs(5), || open_fds() <= before);
        assert!(settled, "descriptors: {before} before, {} after", open_fds());
    }

    fn request_and_response_buffers_still_deliver_bodies_intact(driver) {
        let (proxy, _bulk) = bulk_proxy(driver, "    request_buffer: 64KiB\n    response_buffer: 64KiB\n");
        let mut s = connect(&proxy);
        let n = 200_000u64;
        write!(s, "POST /sink HTTP/1.1\r\nHost: t\r\nContent-Length: {n}\r\n\r\n").unwrap();
        Payload::new().for_each(n, |b| s.write_all(b).unwrap());
        let head = read_head(&mut s);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let mut body = vec![0u8; 64 + 1 + n.to_string().len()];
        s.read_exact(&mut body).unwrap();
        assert_eq!(String::from_utf8_lossy(&body), format!("{} {n}", Payload::new().sha256(n)));
    }
}

driver_tests! {
    fn a_stalled_reader_does_not_slow_another_client_on_the_same_worker(driver) {
        // workers: 1 (the test default) puts both clients on one worker.
        let (proxy, _bulk) = bulk_proxy(driver, "");
        let rss_before = rss_kib();
        let mut slow = connect(&proxy);
        write!(slow, "GET /source/{} HTTP/1.1\r\nHost: t\r\n\r\n", 512u64 << 20).unwrap();
        read_head(&mut slow);
        // The slow client takes 1 KiB a second; the proxy must apply backpressure to its
        // upstream, not buffer the body, and keep serving the other client at full speed.
        let mut kib = [0u8; 1024];
        slow.read_exact(&mut kib).unwrap();
        let started = Instant::now();
        let n = 64u64 << 20;
        let mut fast = connect(&proxy);
        write!(fast, "GET /source/{n} HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        read_head(&mut fast);
        let mut buf = vec![0u8; 256 * 1024];
        let mut left = n;
        let mut last_slow_read = Instant::now();
        while left > 0 {
            let want = left.min(buf.len() as u64) as usize;
            let got = fast.read(&mut buf[..want]).unwrap();
            assert!(got > 0);
            left -= got as u64;
            if last_slow_read.elapsed() >= Duration::from_secs(1) {
                slow.read_exact(&mut kib).unwrap();
                last_slow_read = Instant::now();
            }
        }
        let took = started.elapsed();
        assert!(took < Duration::from_secs(10), "the fast client took {took:?} for 64 MiB");
        let growth = rss_kib().saturating_sub(rss_before);
        assert!(growth < 64 * 1024, "RSS grew by {growth} KiB with a stalled reader");
        // The slow transfer is still open and still delivering.
        slow.read_exact(&mut kib).unwrap();
    }
}

driver_tests! {
    fn keep_alive_connections_serve_more_requests_after_spliced_bodies(driver) {
        // Splicing switches both sockets to non-blocking mode; the runtime's own reads and
        // writes on them must go on working for the next requests.
        let (proxy, _bulk) = bulk_proxy(driver, "");
        let mut s = connect(&proxy);
        let n = 3u64 << 20;
        for _ in 0..3 {
            write!(s, "GET /source/{n} HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
            let head = read_head(&mut s);
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            let mut body = vec![0u8; n as usize];
            s.read_exact(&mut body).unwrap();
            write!(s, "POST /sink HTTP/1.1\r\nHost: t\r\nContent-Length: {n}\r\n\r\n").unwrap();
            Payload::new().for_each(n, |b| s.write_all(b).unwrap());
            let head = read_head(&mut s);
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            let mut digest = vec![0u8; 64 + 1 + n.to_string().len()];
            s.read_exact(&mut digest).unwrap();
            write!(s, "GET /source/10 HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
            assert!(read_head(&mut s).starts_with("HTTP/1.1 200"));
            let mut small = [0u8; 10];
            s.read_exact(&mut small).unwrap();
        }
        let (up, down) = proxy.server().spliced_bytes();
        assert!(up >= 3 * n - (64 << 10) * 3 && down >= 3 * n - (64 << 10) * 3, "{up} {down}");
    }
}
