//! Server-sent events as the LLM APIs use them (WHATWG HTML "event stream" format): an
//! incremental parser that accepts chunks split at any byte and yields events as soon as they
//! complete, borrowing from its reused buffers, and an encoder that frames events into
//! `Bytes` for the response stream.

mod encoder;
mod parser;

pub use encoder::{SseEncoder, write_event};
pub use parser::{DEFAULT_MAX_EVENT_BYTES, SseParser};

/// One event, borrowed from the parser's buffers (or built by the caller for the encoder).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SseEvent<'a> {
    /// The `event:` field; `None` for the default type (`message`).
    pub event: Option<&'a str>,
    /// The `data:` lines joined with `\n`.
    pub data: &'a str,
    /// The `id:` field when this event set one (`Some("")` resets the last event id).
    pub id: Option<&'a str>,
    /// The `retry:` field when this event carried a valid one, in milliseconds.
    pub retry: Option<u64>,
}

impl<'a> SseEvent<'a> {
    /// An unnamed event with this data.
    pub fn data(data: &'a str) -> Self {
        SseEvent {
            data,
            ..SseEvent::default()
        }
    }

    /// A named event (`event: name`) with this data.
    pub fn named(event: &'a str, data: &'a str) -> Self {
        SseEvent {
            event: Some(event),
            data,
            ..SseEvent::default()
        }
    }

    /// The event type as a browser reports it: the `event:` field or `message`.
    pub fn event_type(&self) -> &'a str {
        self.event.unwrap_or("message")
    }

    /// An owned copy, to keep after the parser moves on.
    pub fn to_owned_event(&self) -> OwnedSseEvent {
        OwnedSseEvent {
            event: self.event.map(str::to_owned),
            data: self.data.to_owned(),
            id: self.id.map(str::to_owned),
            retry: self.retry,
        }
    }
}

/// An owned [`SseEvent`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OwnedSseEvent {
    /// The `event:` field; `None` for the default type.
    pub event: Option<String>,
    /// The data lines joined with `\n`.
    pub data: String,
    /// The `id:` field, when set.
    pub id: Option<String>,
    /// The `retry:` field, when set.
    pub retry: Option<u64>,
}

impl OwnedSseEvent {
    /// A borrowed view, for the encoder.
    pub fn as_event(&self) -> SseEvent<'_> {
        SseEvent {
            event: self.event.as_deref(),
            data: &self.data,
            id: self.id.as_deref(),
            retry: self.retry,
        }
    }
}

/// A stream the parser refuses to buffer further; the stream should be abandoned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    /// A line grew past the limit without a line ending.
    #[error("an SSE line exceeded {limit} bytes")]
    LineTooLong {
        /// The configured limit, in bytes.
        limit: usize,
    },
    /// An event's data grew past the limit before the event ended.
    #[error("an SSE event exceeded {limit} bytes of data")]
    EventTooLarge {
        /// The configured limit, in bytes.
        limit: usize,
    },
}
