//! Fuzzes the response converters: the first byte picks the format pair and the status, the
//! rest is the upstream body; every result must be a JSON body with a valid status.
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
    let status = if selector & 0x80 == 0 {
        200
    } else {
        400 + u16::from(selector % 130)
    };
    if let Some(conversion) = Conversion::between(client, upstream) {
        let converted = conversion.response(status, body);
        assert!((100..600).contains(&converted.status));
        assert!(!converted.body.is_empty());
    }
});
