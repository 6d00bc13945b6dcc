//! Property tests of the SSE parser: a stream cut at arbitrary byte boundaries yields exactly
//! the events of the uncut stream, and encoder output parses back to the events encoded.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use llm_adapters::{OwnedSseEvent, SseEncoder, SseParser};
use proptest::prelude::*;

fn parse_chunks(chunks: &[&[u8]]) -> Vec<OwnedSseEvent> {
    let mut parser = SseParser::new();
    let mut events = Vec::new();
    for chunk in chunks {
        parser
            .feed(chunk, |event| events.push(event.to_owned_event()))
            .unwrap();
    }
    parser.finish();
    while let Some(event) = parser.next_event().unwrap() {
        events.push(event.to_owned_event());
    }
    events
}

/// Cuts `bytes` at the given (unsorted, possibly repeated) positions.
fn cut<'a>(bytes: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    points.sort_unstable();
    let mut chunks = Vec::new();
    let mut start = 0;
    for point in points {
        chunks.push(&bytes[start..point]);
        start = point;
    }
    chunks.push(&bytes[start..]);
    chunks
}

/// Bytes biased towards what matters to the parser: line endings, colons, field names,
/// multi-byte characters, invalid UTF-8 and BOM bytes.
fn stream_bytes() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"\n".to_vec()),
        Just(b"\r".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"\n\n".to_vec()),
        Just(b":".to_vec()),
        Just(b" ".to_vec()),
        Just(b"data".to_vec()),
        Just(b"data: ".to_vec()),
        Just(b"event: ".to_vec()),
        Just(b"id: ".to_vec()),
        Just(b"retry: ".to_vec()),
        Just(b"\xEF\xBB\xBF".to_vec()),
        Just("é😀✓".as_bytes().to_vec()),
        Just(b"\xFF\xC3".to_vec()),
        Just(b"\0".to_vec()),
        "[a-z0-9{}\"]{1,8}".prop_map(String::into_bytes),
    ];
    prop::collection::vec(piece, 0..60).prop_map(|pieces| pieces.concat())
}

fn event_text() -> impl Strategy<Value = String> {
    // No CR: the parser rejoins data lines with LF, so CR in data does not round-trip.
    "[a-zA-Z0-9 :{}\"é😀\n]{0,24}"
}

fn name_text() -> impl Strategy<Value = String> {
    "[a-z_.]{1,16}"
}

fn owned_event() -> impl Strategy<Value = OwnedSseEvent> {
    (
        prop::option::of(name_text()),
        event_text(),
        prop::option::of("[a-z0-9]{0,8}"),
        prop::option::of(any::<u64>()),
    )
        .prop_map(|(event, data, id, retry)| OwnedSseEvent {
            event,
            data,
            id,
            retry,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_split_of_any_stream_yields_the_same_events(
        bytes in stream_bytes(),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let whole = parse_chunks(&[&bytes]);
        let split = parse_chunks(&cut(&bytes, &cuts));
        prop_assert_eq!(split, whole);
    }

    #[test]
    fn byte_by_byte_equals_whole(bytes in stream_bytes()) {
        let whole = parse_chunks(&[&bytes]);
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        prop_assert_eq!(parse_chunks(&singles), whole);
    }

    #[test]
    fn encoded_events_parse_back_whatever_the_split(
        events in prop::collection::vec(owned_event(), 0..12),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
        crlf in any::<bool>(),
    ) {
        let mut encoder = SseEncoder::new();
        let mut stream = Vec::new();
        for event in &events {
            stream.extend_from_slice(&encoder.encode(&event.as_event()));
        }
        if crlf {
            stream = String::from_utf8(stream).unwrap().replace('\n', "\r\n").into_bytes();
        }
        let parsed = parse_chunks(&cut(&stream, &cuts));
        prop_assert_eq!(parsed, events);
    }
}
