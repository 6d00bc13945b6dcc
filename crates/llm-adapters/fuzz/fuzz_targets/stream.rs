//! Fuzzes the stream converters: the first byte picks the format pair and the chunk size, the
//! rest is the upstream SSE body, pushed chunk by chunk and finished; nothing may panic and the
//! converter must end the client stream.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llm_adapters::{ClientFormat, Conversion};

const FORMATS: [ClientFormat; 4] = [
    ClientFormat::Openai,
    ClientFormat::OpenaiResponses,
    ClientFormat::Anthropic,
    ClientFormat::Gemini,
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let client = FORMATS[usize::from(selector) % 4];
    let upstream = FORMATS[usize::from(selector / 4) % 4];
    let chunk = usize::from(selector / 16) + 1;
    if let Some(conversion) = Conversion::between(client, upstream) {
        let mut stream = conversion.stream();
        for piece in body.chunks(chunk) {
            let _ = stream.push(piece);
        }
        let _ = stream.finish();
        assert!(stream.is_done());
    }
});
