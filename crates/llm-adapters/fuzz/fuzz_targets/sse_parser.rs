//! Fuzzes the incremental SSE parser: the input is cut into chunks at positions taken from its
//! first bytes, fed in order, then finished; nothing may panic and buffers stay bounded.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llm_adapters::SseParser;

fuzz_target!(|data: &[u8]| {
    let (cuts, stream) = data.split_at(data.len().min(4));
    let mut parser = SseParser::with_max_event_bytes(64 * 1024);
    let mut start = 0;
    for &cut in cuts {
        let end = (start + usize::from(cut)).min(stream.len());
        let _ = parser.feed(&stream[start..end], |_| {});
        start = end;
    }
    let _ = parser.feed(&stream[start..], |_| {});
    parser.finish();
    while let Ok(Some(_)) = parser.next_event() {}
});
