//! Unix-domain sockets on both sides: `unix//path` upstream targets and listeners.

#[macro_use]
mod support;

use support::*;

driver_tests! {
    fn unix_socket_upstream_is_proxied_with_keep_alive(driver) {
        let dir = TempDir::new();
        let b = Backend::start_with("ub", BackendOptions { unix: Some(dir.join("b.sock")), ..Default::default() });
        let proxy = Proxy::start(driver, &one_upstream_yaml("\"$U\"", ""), &[("U", b.target())]);
        let mut c = proxy.client();
        for i in 0..3 {
            let r = c.request(get_req(&format!("/u{i}"), ""));
            assert_eq!(r.status, 200);
            assert_eq!(r.text(), "ub\n");
        }
        let got = b.last_request();
        assert_eq!(got.header("host"), Some("test.local"), "the client's Host is kept");
        assert_eq!(b.connections(), 1, "unix upstream connections are pooled too");
        let mut body = post_echo(&mut c, 100_000);
        assert_eq!(body.len(), 100_000);
        assert!(std::mem::take(&mut body) == pattern(100_000));
    }

    fn unix_socket_listener_serves_requests(driver) {
        let dir = TempDir::new();
        let sock = dir.join("proxy.sock");
        let b1 = Backend::start("b1");
        let yaml = format!(
            "listeners:\n  - name: local\n    listen: \"unix/{}\"\n    routes:\n      - upstream: app\nupstreams:\n  app:\n    targets: [$B1]\n",
            sock.display()
        );
        let proxy = Proxy::start(driver, &yaml, &[("B1", b1.target())]);
        assert!(backend::is_socket(&sock), "the listener socket file exists");
        assert_eq!(proxy.local_addr("local"), None, "a unix listener has no TCP address");
        let mut c = Client::connect_unix(&sock);
        for _ in 0..2 {
            let r = c.request(get_req("/via-unix", ""));
            assert_eq!(r.status, 200);
            assert_eq!(r.text(), "b1\n");
        }
        let got = b1.last_request();
        assert_eq!(got.target, "/via-unix");
        // No peer address: no client IP may be made up.
        if let Some(xff) = got.header("x-forwarded-for") {
            assert!(!xff.contains("127.0.0.1"), "{}", got.head_text());
        }
        drop(c);
        proxy.shutdown();
    }
}

fn post_echo(c: &mut Client, n: usize) -> Vec<u8> {
    let mut req =
        format!("POST /echo-body HTTP/1.1\r\nHost: test.local\r\nContent-Length: {n}\r\n\r\n")
            .into_bytes();
    req.extend_from_slice(&pattern(n));
    c.request(req).body
}

#[test]
fn stale_unix_socket_file_is_replaced_at_startup() {
    let dir = TempDir::new();
    let sock = dir.join("stale.sock");
    // A socket file left behind by a previous run.
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    assert!(backend::is_socket(&sock));
    let yaml = format!(
        "listeners:\n  - name: local\n    listen: \"unix/{}\"\n    routes:\n      - respond: {{ status: 200, body: \"up\\n\" }}\n",
        sock.display()
    );
    let _proxy = Proxy::start(Driver::any(), &yaml, &[]);
    let r = Client::connect_unix(&sock).request(get_req("/", ""));
    assert_eq!(r.text(), "up\n");
}
