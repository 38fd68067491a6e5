//! 1 GiB each way through the proxy: intact (sha256), moved with splice, bounded memory.
//! Alone in this test binary so that other tests' buffers do not blur the RSS measurement.

#[macro_use]
mod support;

use std::io::{Read, Write};

use sha2::{Digest, Sha256};
use support::streaming::*;

/// The issue asks for 1 GiB each way; the payload is cheap to make and hashing is optimised.
const BIG: u64 = 1 << 30;
/// How much the whole test process may grow while big bodies stream through the proxy.
const MAX_RSS_GROWTH_KIB: u64 = 32 * 1024;

driver_tests! {
    fn one_gib_download_arrives_intact_with_splice_and_bounded_memory(driver) {
        let (proxy, _bulk) = bulk_proxy(driver, "");
        let rss_before = rss_kib();
        let mut s = connect(&proxy);
        write!(s, "GET /source/{BIG} HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        let head = read_head(&mut s);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let mut h = Sha256::new();
        let mut left = BIG;
        let mut buf = vec![0u8; 256 * 1024];
        let mut peak = rss_before;
        while left > 0 {
            let want = left.min(buf.len() as u64) as usize;
            let n = s.read(&mut buf[..want]).unwrap();
            assert!(n > 0, "body cut short with {left} bytes to go");
            h.update(&buf[..n]);
            left -= n as u64;
            if left % (64 << 20) < n as u64 {
                peak = peak.max(rss_kib());
            }
        }
        assert_eq!(hex(&h.finalize()), Payload::new().sha256(BIG));
        let growth = peak.saturating_sub(rss_before);
        assert!(growth < MAX_RSS_GROWTH_KIB, "RSS grew by {growth} KiB during the transfer");
        let (_, down) = proxy.server().spliced_bytes();
        assert!(down > BIG / 2, "only {down} bytes were spliced toward the client");
    }

    fn one_gib_upload_arrives_intact_with_splice(driver) {
        let (proxy, _bulk) = bulk_proxy(driver, "");
        let mut s = connect(&proxy);
        write!(s, "POST /sink HTTP/1.1\r\nHost: t\r\nContent-Length: {BIG}\r\n\r\n").unwrap();
        let mut p = Payload::new();
        p.for_each(BIG, |b| s.write_all(b).unwrap());
        let head = read_head(&mut s);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let mut body = vec![0u8; 64 + 1 + BIG.to_string().len()];
        s.read_exact(&mut body).unwrap();
        let expected = format!("{} {BIG}", Payload::new().sha256(BIG));
        assert_eq!(String::from_utf8_lossy(&body), expected);
        let (up, _) = proxy.server().spliced_bytes();
        assert!(up > BIG / 2, "only {up} bytes were spliced toward the upstream");
    }

}
