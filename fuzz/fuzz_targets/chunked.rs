//! The chunked decoder: never panics, never reports data outside its input, and decodes the
//! same whether the bytes arrive at once or in pieces (the pieces' sizes come from the input).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringway::http1::body::ChunkedDecoder;

/// Feeds `input` in pieces of the given sizes (cycled), keeping unconsumed bytes as a real
/// relay does. Returns (payload, consumed, done) or None when the decoder refused the body.
fn decode(input: &[u8], pieces: &[u8]) -> Option<(Vec<u8>, usize, bool)> {
    let mut dec = ChunkedDecoder::new();
    let mut payload = Vec::new();
    let mut consumed = 0;
    let mut arrived = 0;
    let mut i = 0;
    loop {
        let piece = pieces
            .get(i % pieces.len().max(1))
            .map_or(input.len(), |&p| p as usize + 1);
        i += 1;
        arrived = (arrived + piece).min(input.len());
        loop {
            let window = &input[consumed..arrived];
            let step = dec.step(window).ok()?;
            assert!(step.consumed <= window.len());
            if let Some(r) = &step.data {
                assert!(r.start <= r.end && r.end <= step.consumed);
                payload.extend_from_slice(&window[r.clone()]);
            }
            consumed += step.consumed;
            if step.done {
                assert!(dec.is_done());
                return Some((payload, consumed, true));
            }
            if step.consumed == 0 {
                break;
            }
        }
        if arrived == input.len() {
            return Some((payload, consumed, false));
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // [n][n piece sizes][body]
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let n = (n as usize % 16).min(rest.len());
    let (pieces, input) = rest.split_at(n);
    let whole = decode(input, &[]);
    let split = decode(input, pieces);
    match (&whole, &split) {
        // Fed in pieces a body can only fail where it fails at once, and then identically.
        (Some(w), Some(s)) if w.2 => assert_eq!(w, s),
        (Some(w), Some(s)) => {
            assert!(!s.2);
            assert_eq!(w.0, s.0);
        }
        (None, None) => {}
        // Complete bodies decode the same either way; a refusal never depends on the split.
        _ => panic!("whole {whole:?} vs split {split:?}"),
    }
});
