//! The incremental SSE parser. Chunks are appended to one reused buffer and split into lines
//! at `\n`, `\r\n` or `\r` (a `\r` ending one chunk ends the line at once; a `\n` starting the
//! next is then skipped), so chunks may be cut at any byte, inside a UTF-8 character or between
//! `\r` and `\n`. Field handling follows the WHATWG event stream rules: a leading BOM is
//! skipped, `:` lines are comments, one space after the colon is dropped, `data` lines are
//! joined with `\n`, `id` values containing NUL are ignored, `retry` must be all digits, and a
//! blank line dispatches the event unless it has no data. Invalid UTF-8 is replaced.
//!
//! Events borrow the parser's buffers, so steady-state parsing allocates nothing; buffers are
//! bounded by a configurable limit so a misbehaving upstream cannot grow them without end.

use super::{SseError, SseEvent};

/// The default bound on one line and on one event's data: generous, since one Gemini event can
/// carry a whole generated image in base64.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 32 * 1024 * 1024;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Above this capacity an idle line buffer is shrunk back, so one huge event does not pin
/// memory for the rest of a long stream.
const SHRINK_ABOVE: usize = 1024 * 1024;
const SHRINK_TO: usize = 64 * 1024;

/// Incremental SSE parser: [`push`](SseParser::push) chunks, then call
/// [`next_event`](SseParser::next_event) until it returns `Ok(None)`; at the end of the stream
/// call [`finish`](SseParser::finish) and drain again. [`feed`](SseParser::feed) does push and
/// drain in one call.
#[derive(Debug)]
pub struct SseParser {
    /// Received bytes not yet consumed; `pos` is the start of the unconsumed part.
    buf: Vec<u8>,
    pos: usize,
    /// The last line ended with `\r`: a `\n` right after it belongs to that line ending.
    skip_lf: bool,
    /// The start of the stream has not been checked for a BOM yet.
    bom_pending: bool,
    max_event_bytes: usize,
    failed: Option<SseError>,
    block: Block,
}

/// The fields of the event being read.
#[derive(Debug, Default)]
struct Block {
    data: String,
    data_lines: usize,
    event: String,
    /// The last event id buffer, which (per the standard) survives dispatch.
    last_id: String,
    id_in_block: bool,
    retry: Option<u64>,
    /// An event was handed out; clear the block before reading on.
    dispatched: bool,
}

impl Block {
    fn reset(&mut self) {
        self.data.clear();
        self.data_lines = 0;
        self.event.clear();
        self.id_in_block = false;
        self.retry = None;
        self.dispatched = false;
    }

    fn event(&self) -> SseEvent<'_> {
        SseEvent {
            event: (!self.event.is_empty()).then_some(self.event.as_str()),
            data: &self.data,
            id: self.id_in_block.then_some(self.last_id.as_str()),
            retry: self.retry,
        }
    }

    /// Applies one non-empty line.
    fn line(&mut self, line: &[u8], max_event_bytes: usize) -> Result<(), SseError> {
        if line.first() == Some(&b':') {
            return Ok(());
        }
        let (name, value) = match memchr::memchr(b':', line) {
            Some(colon) => {
                let value = line.get(colon + 1..).unwrap_or_default();
                (
                    line.get(..colon).unwrap_or_default(),
                    value.strip_prefix(b" ").unwrap_or(value),
                )
            }
            None => (line, &[][..]),
        };
        match name {
            b"data" => {
                let separator = usize::from(self.data_lines > 0);
                if self.data.len() + separator + value.len() > max_event_bytes {
                    return Err(SseError::EventTooLarge {
                        limit: max_event_bytes,
                    });
                }
                if separator == 1 {
                    self.data.push('\n');
                }
                self.data.push_str(&String::from_utf8_lossy(value));
                self.data_lines += 1;
            }
            b"event" => {
                self.event.clear();
                self.event.push_str(&String::from_utf8_lossy(value));
            }
            b"id" if !value.contains(&0) => {
                self.last_id.clear();
                self.last_id.push_str(&String::from_utf8_lossy(value));
                self.id_in_block = true;
            }
            b"retry" if !value.is_empty() => {
                // Only ASCII digits count; an overflowing value is ignored like any invalid one.
                let parsed = value.iter().try_fold(0u64, |acc, &byte| {
                    let digit = byte.is_ascii_digit().then(|| u64::from(byte - b'0'))?;
                    acc.checked_mul(10)?.checked_add(digit)
                });
                if let Some(retry) = parsed {
                    self.retry = Some(retry);
                }
            }
            _ => {}
        }
        Ok(())
    }
}

impl Default for SseParser {
    fn default() -> Self {
        SseParser::new()
    }
}

impl SseParser {
    /// A parser bounding lines and event data to [`DEFAULT_MAX_EVENT_BYTES`].
    pub fn new() -> Self {
        SseParser::with_max_event_bytes(DEFAULT_MAX_EVENT_BYTES)
    }

    /// A parser bounding one line, and one event's data, to `max_event_bytes`.
    pub fn with_max_event_bytes(max_event_bytes: usize) -> Self {
        SseParser {
            buf: Vec::new(),
            pos: 0,
            skip_lf: false,
            bom_pending: true,
            max_event_bytes,
            failed: None,
            block: Block::default(),
        }
    }

    /// Appends a chunk of the stream (cut anywhere). Copies it into the reused buffer.
    pub fn push(&mut self, chunk: &[u8]) {
        if self.failed.is_none() {
            self.buf.extend_from_slice(chunk);
        }
    }

    /// Marks the end of the stream: an unterminated last line is taken as complete and an event
    /// missing only its final blank line is dispatched (some upstreams close right after the
    /// last `data:` line). Drain with [`next_event`](SseParser::next_event) afterwards.
    pub fn finish(&mut self) {
        self.push(b"\n\n");
    }

    /// The next complete event, if the pushed bytes hold one. The event borrows the parser, so
    /// handle (or [copy](SseEvent::to_owned_event)) it before calling again.
    ///
    /// # Errors
    /// [`SseError`] when a line or an event's data exceeds the limit; the parser then refuses
    /// all further input with the same error.
    pub fn next_event(&mut self) -> Result<Option<SseEvent<'_>>, SseError> {
        if let Some(err) = self.failed {
            return Err(err);
        }
        if self.block.dispatched {
            self.block.reset();
        }
        loop {
            if self.skip_lf {
                match self.buf.get(self.pos) {
                    None => break,
                    Some(b'\n') => {
                        self.pos += 1;
                        self.skip_lf = false;
                    }
                    Some(_) => self.skip_lf = false,
                }
            }
            let rest = self.buf.get(self.pos..).unwrap_or_default();
            if self.bom_pending {
                if rest.len() < BOM.len() && BOM.starts_with(rest) {
                    break;
                }
                if rest.starts_with(BOM) {
                    self.pos += BOM.len();
                }
                self.bom_pending = false;
                continue;
            }
            let Some(end) = memchr::memchr2(b'\n', b'\r', rest) else {
                if rest.len() > self.max_event_bytes {
                    return Err(self.fail(SseError::LineTooLong {
                        limit: self.max_event_bytes,
                    }));
                }
                break;
            };
            let start = self.pos;
            self.skip_lf = rest.get(end) == Some(&b'\r');
            self.pos = start + end + 1;
            if end > self.max_event_bytes {
                return Err(self.fail(SseError::LineTooLong {
                    limit: self.max_event_bytes,
                }));
            }
            let line = self.buf.get(start..start + end).unwrap_or_default();
            if line.is_empty() {
                if self.block.data_lines > 0 {
                    self.block.dispatched = true;
                    return Ok(Some(self.block.event()));
                }
                self.block.reset();
                continue;
            }
            if let Err(err) = self.block.line(line, self.max_event_bytes) {
                return Err(self.fail(err));
            }
        }
        self.compact();
        Ok(None)
    }

    /// [`push`](SseParser::push)es `chunk` and hands every event it completes to `on_event`.
    ///
    /// # Errors
    /// As [`next_event`](SseParser::next_event).
    pub fn feed(
        &mut self,
        chunk: &[u8],
        mut on_event: impl FnMut(SseEvent<'_>),
    ) -> Result<(), SseError> {
        self.push(chunk);
        while let Some(event) = self.next_event()? {
            on_event(event);
        }
        Ok(())
    }

    /// The last event id seen on the stream (the standard's "last event ID buffer"), for a
    /// reconnecting client's `Last-Event-ID`.
    pub fn last_event_id(&self) -> &str {
        &self.block.last_id
    }

    /// Bytes held for an incomplete line.
    pub fn buffered_len(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn fail(&mut self, err: SseError) -> SseError {
        self.failed = Some(err);
        self.buf = Vec::new();
        self.pos = 0;
        self.block = Block::default();
        err
    }

    /// Drops the consumed prefix of the buffer.
    fn compact(&mut self) {
        if self.pos >= self.buf.len() {
            self.buf.clear();
        } else if self.pos > 0 {
            self.buf.drain(..self.pos);
        }
        self.pos = 0;
        if self.buf.capacity() > SHRINK_ABOVE && self.buf.len() <= SHRINK_TO {
            self.buf.shrink_to(SHRINK_TO);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::sse::OwnedSseEvent;

    fn parse_chunks(chunks: &[&[u8]]) -> Vec<OwnedSseEvent> {
        let mut parser = SseParser::new();
        let mut events = Vec::new();
        for chunk in chunks {
            parser
                .feed(chunk, |event| events.push(event.to_owned_event()))
                .unwrap();
        }
        events
    }

    fn parse(stream: &str) -> Vec<OwnedSseEvent> {
        parse_chunks(&[stream.as_bytes()])
    }

    fn data(event: &str) -> OwnedSseEvent {
        OwnedSseEvent {
            data: event.to_owned(),
            ..OwnedSseEvent::default()
        }
    }

    #[test]
    fn yields_events_at_blank_lines() {
        assert_eq!(parse("data: a\n\ndata: b\n\n"), [data("a"), data("b")]);
    }

    #[test]
    fn incomplete_event_is_held_until_its_blank_line() {
        let mut parser = SseParser::new();
        parser.push(b"data: a\n");
        assert_eq!(parser.next_event().unwrap(), None);
        parser.push(b"\n");
        assert_eq!(parser.next_event().unwrap().unwrap().data, "a");
        assert_eq!(parser.next_event().unwrap(), None);
    }

    #[test]
    fn all_line_endings_are_accepted() {
        let expected = [data("a"), data("b"), data("c")];
        assert_eq!(parse("data: a\n\ndata: b\n\ndata: c\n\n"), expected);
        assert_eq!(
            parse("data: a\r\n\r\ndata: b\r\n\r\ndata: c\r\n\r\n"),
            expected
        );
        assert_eq!(parse("data: a\r\rdata: b\r\rdata: c\r\r"), expected);
        assert_eq!(parse("data: a\r\n\ndata: b\n\r\ndata: c\r\r\n"), expected);
    }

    #[test]
    fn crlf_split_between_chunks_is_one_line_ending() {
        let events = parse_chunks(&[b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n"]);
        assert_eq!(events, [data("a\nb")]);
    }

    #[test]
    fn cr_ends_the_line_without_waiting_for_the_next_chunk() {
        let mut parser = SseParser::new();
        parser.push(b"data: a\r\r");
        assert_eq!(parser.next_event().unwrap().unwrap().data, "a");
        parser.push(b"\ndata: b\n\n");
        assert_eq!(parser.next_event().unwrap().unwrap().data, "b");
    }

    #[test]
    fn utf8_split_inside_a_character_is_reassembled() {
        let text = "data: héllo ✓ 😀\n\n".as_bytes();
        for cut in 0..text.len() {
            let (a, b) = text.split_at(cut);
            assert_eq!(parse_chunks(&[a, b]), [data("héllo ✓ 😀")], "cut at {cut}");
        }
    }

    #[test]
    fn comments_are_skipped() {
        assert_eq!(parse(": ping\n\n:\ndata: x\n: inside\n\n"), [data("x")]);
    }

    #[test]
    fn multi_line_data_is_joined_with_newlines() {
        assert_eq!(
            parse("data: a\ndata:b\ndata:  c\ndata\n\n"),
            [data("a\nb\n c\n")]
        );
        assert_eq!(parse("data:\n\n"), [data("")]);
    }

    #[test]
    fn event_id_and_retry_fields() {
        let events = parse("event: content_block_delta\nid: 7\nretry: 3000\ndata: {}\n\n");
        assert_eq!(
            events,
            [OwnedSseEvent {
                event: Some("content_block_delta".to_owned()),
                data: "{}".to_owned(),
                id: Some("7".to_owned()),
                retry: Some(3000),
            }]
        );
    }

    #[test]
    fn fields_reset_after_each_event_but_last_id_persists() {
        let mut parser = SseParser::new();
        parser.push(b"event: a\nid: 1\ndata: x\n\ndata: y\n\n");
        let first = parser.next_event().unwrap().unwrap().to_owned_event();
        assert_eq!(
            (first.event.as_deref(), first.id.as_deref()),
            (Some("a"), Some("1"))
        );
        let second = parser.next_event().unwrap().unwrap().to_owned_event();
        assert_eq!((second.event, second.id), (None, None));
        assert_eq!(parser.last_event_id(), "1");
    }

    #[test]
    fn invalid_id_and_retry_values_are_ignored() {
        let events = parse("id: a\0b\nretry: 12x\nretry: 99999999999999999999999\ndata: d\n\n");
        assert_eq!(events, [data("d")]);
    }

    #[test]
    fn events_without_data_are_not_dispatched() {
        assert_eq!(parse("event: ping\n\nretry: 5\n\nid: 3\n\n"), []);
    }

    #[test]
    fn event_name_does_not_leak_into_the_next_event() {
        assert_eq!(parse("event: ping\n\ndata: x\n\n"), [data("x")]);
    }

    #[test]
    fn unknown_fields_and_lines_without_colon_are_ignored() {
        assert_eq!(parse("foo: bar\nbaz\ndata: x\n\n"), [data("x")]);
    }

    #[test]
    fn only_one_leading_space_is_stripped() {
        assert_eq!(parse("data:   x  \n\n"), [data("  x  ")]);
        assert_eq!(
            parse("event:  spaced\ndata: x\n\n")[0].event.as_deref(),
            Some(" spaced")
        );
    }

    #[test]
    fn leading_bom_is_skipped_even_when_split() {
        assert_eq!(
            parse_chunks(&[b"\xEF", b"\xBB", b"\xBFdata: x\n\n"]),
            [data("x")]
        );
        assert_eq!(parse_chunks(&[b"\xEF\xBB\xBFdata: x\n\n"]), [data("x")]);
        // Only at the very start.
        let later = parse("data: a\n\n\u{FEFF}data: b\n\n");
        assert_eq!(later.len(), 1);
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        assert_eq!(parse_chunks(&[b"data: a\xFFb\n\n"]), [data("a\u{FFFD}b")]);
    }

    #[test]
    fn finish_dispatches_an_event_missing_its_blank_line() {
        let mut parser = SseParser::new();
        parser.push(b"data: a\n\ndata: [DONE]");
        assert_eq!(parser.next_event().unwrap().unwrap().data, "a");
        assert_eq!(parser.next_event().unwrap(), None);
        parser.finish();
        assert_eq!(parser.next_event().unwrap().unwrap().data, "[DONE]");
        assert_eq!(parser.next_event().unwrap(), None);
    }

    #[test]
    fn finish_after_a_clean_end_yields_nothing() {
        for stream in [&b"data: a\n\n"[..], b"data: a\r\n\r\n", b"data: a\r\r"] {
            let mut parser = SseParser::new();
            parser.feed(stream, |_| {}).unwrap();
            parser.finish();
            assert_eq!(parser.next_event().unwrap(), None);
        }
        let mut parser = SseParser::new();
        parser.feed(b"data: a\r", |_| {}).unwrap();
        parser.finish();
        assert_eq!(parser.next_event().unwrap().unwrap().data, "a");
    }

    #[test]
    fn overlong_line_is_an_error_and_poisons_the_parser() {
        let mut parser = SseParser::with_max_event_bytes(16);
        parser.push(b"data: 0123456789abcdef");
        assert_eq!(
            parser.next_event(),
            Err(SseError::LineTooLong { limit: 16 })
        );
        parser.push(b"\n\n");
        assert_eq!(
            parser.next_event(),
            Err(SseError::LineTooLong { limit: 16 })
        );
        assert_eq!(parser.buffered_len(), 0);
    }

    #[test]
    fn overlong_event_data_is_an_error() {
        let mut parser = SseParser::with_max_event_bytes(16);
        parser.push(b"data: 0123456789\ndata: 0123456789\n\n");
        assert_eq!(
            parser.next_event(),
            Err(SseError::EventTooLarge { limit: 16 })
        );
    }

    #[test]
    fn buffer_holds_only_the_incomplete_line() {
        let mut parser = SseParser::new();
        parser.feed(b"data: a\n\ndata: par", |_| {}).unwrap();
        assert_eq!(parser.buffered_len(), b"data: par".len());
    }
}
