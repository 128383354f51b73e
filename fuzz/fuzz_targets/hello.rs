//! ClientHello reassembly (`HelloReader::advance`) fed the same bytes in
//! fuzzer-chosen prefixes, against a one-shot read of the same bytes.
//!
//! Input: one mode byte (chunking, and a 600 B, 4 KiB or 64 KiB bound), then
//! the bytes. Checks: the incremental answer equals the one-shot answer on the
//! prefix where it stopped, and on the whole input when that stop was a
//! verdict; a hello's records fit in what was read and under the bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sni_router::sniff::{HelloError, HelloReader};
use sni_router_fuzz::split_mode;

fuzz_target!(|data: &[u8]| {
    let Some((mode, input)) = split_mode(data) else {
        return;
    };
    let limit = match mode >> 6 {
        0 => 600,
        1 => 4096,
        _ => 64 * 1024,
    };
    // Prefix ends: grow by 1..=step bytes at a time, `step` from the mode.
    let step = usize::from(mode & 0x3f) + 1;
    let mut reader = HelloReader::new(limit);
    let mut end = 0;
    let mut rng = u32::from(mode) | 1;
    let verdict = loop {
        rng ^= rng << 13;
        rng ^= rng >> 17;
        rng ^= rng << 5;
        end = (end + 1 + rng as usize % step).min(input.len());
        match reader.advance(&input[..end]) {
            Ok(None) if end < input.len() => continue,
            other => break other,
        }
    };
    let one_shot = HelloReader::new(limit).advance(&input[..end]);
    assert_eq!(
        verdict,
        one_shot,
        "incremental and one-shot disagree at {end} of {} bytes",
        input.len()
    );
    match &verdict {
        Ok(Some((_, used))) => {
            assert!(
                *used <= end && *used <= limit,
                "hello spans {used} of {end} bytes, limit {limit}"
            );
            // More bytes after the hello change nothing.
            assert_eq!(HelloReader::new(limit).advance(input), verdict);
        }
        Ok(None) => assert!(end == input.len() && end < limit),
        Err(HelloError::TooLarge { .. }) => {
            assert_eq!(HelloReader::new(limit).advance(input), verdict);
        }
        Err(HelloError::Malformed(_)) => {
            assert_eq!(HelloReader::new(limit).advance(input), verdict);
        }
    }
});
