//! SSE framing: writes events (`event:`, one `data:` line per data line, `id:`, `retry:`, blank
//! line) into a reused `BytesMut` and hands each frame out as `Bytes`, ready for the response
//! body stream, with no copy and, once the previous frames are dropped, no new allocation.

use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;

use super::SseEvent;

/// Writes `event` as one SSE frame. Data is split into lines at `\r\n`, `\r` and `\n`; CR, LF
/// (and NUL in ids) are removed from the event name and id, which cannot hold them. An empty
/// event name is omitted (it means the default type).
pub fn write_event<B: BufMut>(out: &mut B, event: &SseEvent<'_>) {
    if let Some(name) = event.event.filter(|name| !name.is_empty()) {
        out.put_slice(b"event: ");
        put_single_line(out, name, false);
        out.put_u8(b'\n');
    }
    if let Some(id) = event.id {
        out.put_slice(b"id: ");
        put_single_line(out, id, true);
        out.put_u8(b'\n');
    }
    if let Some(retry) = event.retry {
        out.put_slice(b"retry: ");
        put_decimal(out, retry);
        out.put_u8(b'\n');
    }
    for line in lines(event.data) {
        out.put_slice(b"data: ");
        out.put_slice(line.as_bytes());
        out.put_u8(b'\n');
    }
    out.put_u8(b'\n');
}

/// Writes `value` in decimal without allocating.
fn put_decimal<B: BufMut>(out: &mut B, mut value: u64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        if let Some(slot) = digits.get_mut(start) {
            // `value % 10` is below 10, so the cast cannot truncate.
            *slot = b'0' + (value % 10) as u8;
        }
        value /= 10;
        if value == 0 {
            break;
        }
    }
    out.put_slice(digits.get(start..).unwrap_or_default());
}

/// `text` without CR, LF (and NUL when `strip_nul`).
fn put_single_line<B: BufMut>(out: &mut B, text: &str, strip_nul: bool) {
    for part in text.split(|c| c == '\r' || c == '\n' || (strip_nul && c == '\0')) {
        out.put_slice(part.as_bytes());
    }
}

/// The lines of `data` split at `\r\n`, `\r` and `\n`, as the parser will rejoin them with
/// `\n`; empty data is one empty line.
fn lines(data: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(data);
    std::iter::from_fn(move || {
        let text = rest?;
        match text.find(['\r', '\n']) {
            None => {
                rest = None;
                Some(text)
            }
            Some(i) => {
                let skip = if text[i..].starts_with("\r\n") { 2 } else { 1 };
                rest = Some(&text[i + skip..]);
                Some(&text[..i])
            }
        }
    })
}

/// Frames events into `Bytes` through one reused buffer.
#[derive(Debug, Default)]
pub struct SseEncoder {
    buf: BytesMut,
}

impl SseEncoder {
    /// An encoder with an empty buffer.
    pub fn new() -> Self {
        SseEncoder::default()
    }

    /// One frame for `event`.
    pub fn encode(&mut self, event: &SseEvent<'_>) -> Bytes {
        write_event(&mut self.buf, event);
        self.buf.split().freeze()
    }

    /// One unnamed event (`data: ...`).
    pub fn data(&mut self, data: &str) -> Bytes {
        self.encode(&SseEvent::data(data))
    }

    /// One named event (`event: ...` + `data: ...`).
    pub fn named(&mut self, event: &str, data: &str) -> Bytes {
        self.encode(&SseEvent::named(event, data))
    }

    /// One event whose data is `value` serialised as JSON (one line: JSON escapes newlines).
    ///
    /// # Errors
    /// When `value`'s `Serialize` implementation fails; nothing is emitted then.
    pub fn json<T: Serialize + ?Sized>(
        &mut self,
        event: Option<&str>,
        value: &T,
    ) -> Result<Bytes, serde_json::Error> {
        if let Some(name) = event.filter(|name| !name.is_empty()) {
            self.buf.put_slice(b"event: ");
            put_single_line(&mut self.buf, name, false);
            self.buf.put_u8(b'\n');
        }
        self.buf.put_slice(b"data: ");
        if let Err(err) = serde_json::to_writer((&mut self.buf).writer(), value) {
            self.buf.clear();
            return Err(err);
        }
        self.buf.put_slice(b"\n\n");
        Ok(self.buf.split().freeze())
    }

    /// [`SseEncoder::json`] for this crate's own shapes, which cannot fail to serialise.
    pub(crate) fn json_frame<T: Serialize + ?Sized>(
        &mut self,
        event: Option<&str>,
        value: &T,
    ) -> Bytes {
        self.json(event, value).unwrap_or_default()
    }

    /// A comment frame (`: text`), the usual keep-alive; ignored by every client.
    pub fn comment(&mut self, text: &str) -> Bytes {
        for line in lines(text) {
            self.buf.put_slice(b": ");
            self.buf.put_slice(line.as_bytes());
            self.buf.put_u8(b'\n');
        }
        self.buf.put_u8(b'\n');
        self.buf.split().freeze()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::sse::SseParser;

    fn text(bytes: &Bytes) -> &str {
        std::str::from_utf8(bytes).unwrap()
    }

    #[test]
    fn data_event_is_one_data_line_and_a_blank_line() {
        assert_eq!(
            text(&SseEncoder::new().data("{\"a\":1}")),
            "data: {\"a\":1}\n\n"
        );
    }

    #[test]
    fn named_event_puts_the_name_first() {
        assert_eq!(
            text(&SseEncoder::new().named("message_stop", "{\"type\":\"message_stop\"}")),
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
        );
    }

    #[test]
    fn multi_line_data_becomes_several_data_lines() {
        assert_eq!(
            text(&SseEncoder::new().data("a\nb\r\nc\rd")),
            "data: a\ndata: b\ndata: c\ndata: d\n\n"
        );
        assert_eq!(text(&SseEncoder::new().data("")), "data: \n\n");
        assert_eq!(text(&SseEncoder::new().data("x\n")), "data: x\ndata: \n\n");
    }

    #[test]
    fn all_fields_are_written() {
        let event = SseEvent {
            event: Some("delta"),
            data: " leading space",
            id: Some("42"),
            retry: Some(1500),
        };
        assert_eq!(
            text(&SseEncoder::new().encode(&event)),
            "event: delta\nid: 42\nretry: 1500\ndata:  leading space\n\n"
        );
    }

    #[test]
    fn names_and_ids_cannot_break_the_framing() {
        let event = SseEvent {
            event: Some("evil\r\ndata: injected"),
            data: "ok",
            id: Some("1\n2\0"),
            retry: None,
        };
        assert_eq!(
            text(&SseEncoder::new().encode(&event)),
            "event: evildata: injected\nid: 12\ndata: ok\n\n"
        );
    }

    #[test]
    fn json_frames_are_single_line() {
        let mut encoder = SseEncoder::new();
        let frame = encoder
            .json(Some("error"), &serde_json::json!({"message": "a\nb"}))
            .unwrap();
        assert_eq!(
            text(&frame),
            "event: error\ndata: {\"message\":\"a\\nb\"}\n\n"
        );
    }

    #[test]
    fn comments_are_ignored_by_the_parser() {
        let mut encoder = SseEncoder::new();
        let mut stream = encoder.comment("keep-alive").to_vec();
        stream.extend_from_slice(&encoder.data("x"));
        assert_eq!(
            text(&Bytes::from(stream.clone())),
            ": keep-alive\n\ndata: x\n\n"
        );
        let mut parser = SseParser::new();
        let mut events = Vec::new();
        parser
            .feed(&stream, |e| events.push(e.to_owned_event()))
            .unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].data, "x");
    }

    #[test]
    fn encoder_reuses_its_buffer_between_frames() {
        let mut encoder = SseEncoder::new();
        let first = encoder.data("one");
        let second = encoder.data("two");
        assert_eq!(text(&first), "data: one\n\n");
        assert_eq!(text(&second), "data: two\n\n");
    }

    #[test]
    fn retry_is_written_in_decimal() {
        for (retry, expected) in [
            (0, "0"),
            (7, "7"),
            (1500, "1500"),
            (u64::MAX, "18446744073709551615"),
        ] {
            let mut out = Vec::new();
            put_decimal(&mut out, retry);
            assert_eq!(out, expected.as_bytes());
        }
    }

    #[test]
    fn write_event_works_on_a_vec() {
        let mut out = Vec::new();
        write_event(&mut out, &SseEvent::named("ping", "{}"));
        assert_eq!(out, b"event: ping\ndata: {}\n\n");
    }
}
