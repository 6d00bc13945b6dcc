//! Streamed responses converted event by event: the upstream's bytes go through the incremental
//! [`SseParser`] (so events may be split at any byte), each complete event is decoded into
//! neutral [`StreamEvent`]s by the upstream format's stateful decoder, and those are encoded at
//! once by the client format's stateful encoder, which keeps the client's event grammar (opening
//! and closing blocks, terminal events). Nothing waits for the end of the stream; encoders only
//! remember what the client grammar repeats at the end (the Responses API's final output).

use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;

use super::neutral::{ErrorInfo, StreamEvent};
use crate::{ClientFormat, ProxyError, SseEvent, SseParser};

/// How a streamed response is framed for the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StreamFraming {
    /// Server-sent events (`text/event-stream`): every format's SDK default.
    #[default]
    Sse,
    /// A JSON array written element by element (`application/json`): Gemini's
    /// `streamGenerateContent` without `alt=sse`. Other formats ignore it.
    JsonArray,
}

impl StreamFraming {
    /// The content type of a stream framed this way.
    pub fn content_type(self) -> &'static str {
        match self {
            StreamFraming::Sse => crate::stream::EVENT_STREAM,
            StreamFraming::JsonArray => "application/json",
        }
    }
}

/// What the client's request says about the stream it gets back, so the client stream can be
/// shaped the way the client's real provider shapes it. Carried by
/// [`ConvertedRequest`](super::ConvertedRequest), so its stream converter needs no argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientStream {
    /// How the stream is framed.
    pub framing: StreamFraming,
    /// Whether the client asked for usage in the stream (OpenAI Chat Completions'
    /// `stream_options.include_usage`): OpenAI then ends the stream with a separate chunk
    /// holding the usage and no choices, and sends no usage at all otherwise. Other formats
    /// always carry usage.
    pub include_usage: bool,
    /// The model the client asked for: the client stream names it when the upstream names none.
    pub model: Option<String>,
}

impl Default for ClientStream {
    /// SSE, usage included, no requested model: the shape for a converter built without a
    /// client request, which loses nothing the upstream reports.
    fn default() -> Self {
        ClientStream {
            framing: StreamFraming::Sse,
            include_usage: true,
            model: None,
        }
    }
}

/// Turns one format's upstream stream events into neutral events.
pub(crate) trait StreamDecoder: Send {
    /// Decodes one SSE event; unknown event types add nothing, unreadable ones add an error.
    fn event(&mut self, event: &SseEvent<'_>, out: &mut Vec<StreamEvent>);

    /// The upstream closed the stream; adds what its end implies (Gemini has no end event).
    fn finish(&mut self, out: &mut Vec<StreamEvent>) {
        out.push(StreamEvent::End);
    }
}

/// Writes neutral events as one format's client stream.
pub(crate) trait StreamEncoder: Send {
    /// Encodes one event. After [`StreamEvent::End`] or [`StreamEvent::Error`] the encoder is
    /// done and writes nothing more.
    fn encode(&mut self, event: StreamEvent, out: &mut BytesMut);

    /// Whether the client stream has been ended (cleanly or with an error event).
    fn is_done(&self) -> bool;
}

/// Converts one upstream stream into the client's format, chunk by chunk. Build it with
/// [`Conversion::stream`](super::Conversion::stream) or
/// [`ConvertedRequest::stream_converter`](super::ConvertedRequest::stream_converter).
pub struct StreamConverter {
    parser: SseParser,
    decoder: Box<dyn StreamDecoder>,
    encoder: Box<dyn StreamEncoder>,
    events: Vec<StreamEvent>,
    out: BytesMut,
    done: bool,
}

impl std::fmt::Debug for StreamConverter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamConverter")
            .field("buffered", &self.parser.buffered_len())
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl StreamConverter {
    pub(crate) fn new(decoder: Box<dyn StreamDecoder>, encoder: Box<dyn StreamEncoder>) -> Self {
        StreamConverter {
            parser: SseParser::new(),
            decoder,
            encoder,
            events: Vec::new(),
            out: BytesMut::new(),
            done: false,
        }
    }

    /// Takes the next chunk of the upstream body (cut anywhere) and returns the client bytes
    /// it completes, to send now (often empty: an event split across chunks waits for its
    /// end). After the client stream has ended, returns nothing.
    pub fn push(&mut self, chunk: &[u8]) -> Bytes {
        if !self.done {
            self.parser.push(chunk);
            self.drain_parser();
        }
        self.out.split().freeze()
    }

    /// The upstream closed the stream cleanly: returns the client's tail (the last event when
    /// it lacked its blank line, then the closing events of the client's grammar, such as
    /// `message_stop` or `data: [DONE]`). Call it once; on a broken upstream connection send
    /// [`crate::stream_error_event`] instead.
    pub fn finish(&mut self) -> Bytes {
        if !self.done {
            self.parser.finish();
            self.drain_parser();
        }
        if !self.done {
            self.decoder.finish(&mut self.events);
            self.encode_pending();
        }
        if !self.done {
            self.encoder.encode(StreamEvent::End, &mut self.out);
            self.done = true;
        }
        self.out.split().freeze()
    }

    /// Whether the client stream has ended (terminal event or error event written).
    pub fn is_done(&self) -> bool {
        self.done
    }

    fn drain_parser(&mut self) {
        while !self.done {
            match self.parser.next_event() {
                Ok(Some(event)) => self.decoder.event(&event, &mut self.events),
                Ok(None) => break,
                Err(err) => self.events.push(StreamEvent::Error(ErrorInfo::new(
                    502,
                    "upstream_stream_too_large",
                    err.to_string(),
                ))),
            }
            self.encode_pending();
        }
    }

    fn encode_pending(&mut self) {
        for event in self.events.drain(..) {
            if self.done {
                break;
            }
            self.encoder.encode(event, &mut self.out);
            self.done = self.encoder.is_done();
        }
        self.events.clear();
    }
}

/// Writes one SSE frame whose data is `value` as one line of JSON.
pub(crate) fn put_json_event<T: Serialize + ?Sized>(
    out: &mut BytesMut,
    event: Option<&str>,
    value: &T,
) {
    let start = out.len();
    if let Some(name) = event {
        out.put_slice(b"event: ");
        out.put_slice(name.as_bytes());
        out.put_u8(b'\n');
    }
    out.put_slice(b"data: ");
    if serde_json::to_writer(out.writer(), value).is_err() {
        out.truncate(start);
        return;
    }
    out.put_slice(b"\n\n");
}

/// Writes the client format's in-band error event for `error`.
pub(crate) fn put_error_event(out: &mut BytesMut, client: ClientFormat, error: &ErrorInfo) {
    out.put_slice(&crate::stream_error_event(
        client,
        &ProxyError::new(error.status, &error.code, &error.message),
    ));
}

/// Parses one upstream event's JSON data, or pushes the malformed-event error.
pub(crate) fn parse_event<T: serde::de::DeserializeOwned>(
    data: &str,
    out: &mut Vec<StreamEvent>,
) -> Option<T> {
    match serde_json::from_str(data) {
        Ok(value) => Some(value),
        Err(err) => {
            out.push(StreamEvent::Error(ErrorInfo::malformed_event(
                &err.to_string(),
            )));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::{ClientFormat, Conversion};

    #[test]
    fn json_events_are_one_frame() {
        let mut out = BytesMut::new();
        put_json_event(&mut out, Some("ping"), &serde_json::json!({"a": "b\nc"}));
        put_json_event(&mut out, None, &serde_json::json!([1]));
        assert_eq!(
            &out[..],
            b"event: ping\ndata: {\"a\":\"b\\nc\"}\n\ndata: [1]\n\n"
        );
    }

    #[test]
    fn an_empty_upstream_stream_still_ends_the_client_grammar() {
        let mut stream = Conversion::between(ClientFormat::Anthropic, ClientFormat::Gemini)
            .unwrap()
            .stream();
        assert!(stream.push(b"").is_empty());
        let tail = stream.finish();
        let text = std::str::from_utf8(&tail).unwrap();
        assert!(text.starts_with("event: message_start\n"), "{text}");
        assert!(text.ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"));
        assert!(stream.is_done());
        assert!(stream.finish().is_empty(), "finish is idempotent");
    }

    #[test]
    fn malformed_json_ends_the_stream_at_once() {
        let mut stream = Conversion::between(ClientFormat::Openai, ClientFormat::Anthropic)
            .unwrap()
            .stream();
        let out = stream.push(b"event: message_start\ndata: {oops\n\ndata: more\n\n");
        assert!(stream.is_done());
        let text = std::str::from_utf8(&out).unwrap();
        assert!(text.starts_with("data: {\"error\":"), "{text}");
        assert!(!text.contains("[DONE]"));
        assert!(stream.finish().is_empty());
    }

    #[test]
    fn framing_content_types() {
        assert_eq!(StreamFraming::Sse.content_type(), "text/event-stream");
        assert_eq!(StreamFraming::JsonArray.content_type(), "application/json");
    }
}
