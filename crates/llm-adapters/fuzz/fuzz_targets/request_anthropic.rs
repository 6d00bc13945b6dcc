//! Fuzzes the Anthropic Messages request converter: the input is a client request body, converted to
//! every other format; a conversion either fails with a 4xx error or yields a JSON body.
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
    for upstream in FORMATS {
        let Some(conversion) = Conversion::between(ClientFormat::Anthropic, upstream) else {
            continue;
        };
        match conversion.request("v1/messages", "alt=sse&key=k", data) {
            Ok(converted) => {
                assert!(serde_json::from_slice::<serde_json::Value>(&converted.body).is_ok());
            }
            Err(err) => assert!(matches!(err.status(), 400 | 404)),
        }
    }
});
