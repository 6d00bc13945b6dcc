//! The one bounded reader of upstream response bodies: every body the server reads whole from an
//! upstream (an error body it classifies and relays, a non-streamed answer it converts to the
//! client's format, a key probe's answer) goes through [`read_bounded`], which stops at the
//! caller's limit instead of growing with whatever the upstream sends. It reads the response's own
//! stream, so the client's response timeout keeps applying while the body arrives.

use awc::error::PayloadError;
use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};

/// Why an upstream body could not be read whole.
#[derive(Debug, thiserror::Error)]
pub enum BodyReadError {
    /// The body is longer than the caller's limit; reading stopped there.
    #[error("the upstream response is larger than {limit} bytes")]
    TooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// The connection failed, or the response timed out, while the body arrived.
    #[error("the upstream response could not be read: {0}")]
    Read(#[from] PayloadError),
}

/// Reads a whole upstream body of at most `limit` bytes. A body that arrives in one chunk (most
/// error bodies) is returned without a copy.
///
/// # Errors
/// [`BodyReadError::TooLarge`] as soon as the bytes read pass `limit`; [`BodyReadError::Read`]
/// when the stream fails.
pub async fn read_bounded<S>(mut body: S, limit: usize) -> Result<Bytes, BodyReadError>
where
    S: Stream<Item = Result<Bytes, PayloadError>> + Unpin,
{
    let mut first: Option<Bytes> = None;
    let mut joined = BytesMut::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        let read = first.as_ref().map_or(0, Bytes::len) + joined.len();
        if read + chunk.len() > limit {
            return Err(BodyReadError::TooLarge { limit });
        }
        match first.take() {
            None if joined.is_empty() => first = Some(chunk),
            None => joined.extend_from_slice(&chunk),
            Some(earlier) => {
                joined.reserve(earlier.len() + chunk.len());
                joined.extend_from_slice(&earlier);
                joined.extend_from_slice(&chunk);
            }
        }
    }
    Ok(first.unwrap_or_else(|| joined.freeze()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use futures_util::stream;

    use super::*;

    fn chunks(parts: &[&'static str]) -> impl Stream<Item = Result<Bytes, PayloadError>> + Unpin {
        stream::iter(
            parts
                .iter()
                .map(|p| Ok(Bytes::from_static(p.as_bytes())))
                .collect::<Vec<_>>(),
        )
    }

    #[tokio::test]
    async fn a_body_within_the_limit_is_read_whole_in_order() {
        let body = read_bounded(chunks(&["ab", "cd", "ef"]), 6).await.unwrap();
        assert_eq!(&body[..], b"abcdef");
        let single = read_bounded(chunks(&["only"]), 4).await.unwrap();
        assert_eq!(&single[..], b"only");
        let empty = read_bounded(chunks(&[]), 0).await.unwrap();
        assert!(empty.is_empty());
    }

    #[tokio::test]
    async fn a_body_past_the_limit_stops_the_read() {
        let error = read_bounded(chunks(&["abc", "def", "never read"]), 5)
            .await
            .unwrap_err();
        assert!(
            matches!(error, BodyReadError::TooLarge { limit: 5 }),
            "{error}"
        );
        assert_eq!(
            error.to_string(),
            "the upstream response is larger than 5 bytes"
        );
    }

    #[tokio::test]
    async fn a_failed_stream_is_a_read_error() {
        let failing = stream::iter(vec![
            Ok(Bytes::from_static(b"ab")),
            Err(PayloadError::Incomplete(None)),
        ]);
        let error = read_bounded(failing, 100).await.unwrap_err();
        assert!(matches!(error, BodyReadError::Read(_)), "{error}");
        assert!(
            error
                .to_string()
                .starts_with("the upstream response could not be read")
        );
    }
}
