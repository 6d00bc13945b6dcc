//! A fast OpenAI-compatible mock upstream for benchmarks and load tests: `POST
//! …/chat/completions` answers a small fixed completion, or with `"stream": true` an event stream
//! of a configurable number of chunks a configurable delay apart, then `data: [DONE]`;
//! `GET …/models` lists one model. Every such request is counted under the key it carried
//! (`Authorization: Bearer <key>`, else `x-api-key` or `x-goog-api-key`); `GET /__stats` shows
//! the counts as JSON and `POST /__reset` clears them.
//!
//! Per request it parses nothing but the method, the path, the query and, for a chat
//! completion, a substring search of the body for `"stream": true`; it logs nothing and answers
//! from static buffers, so that it costs far less than whatever is measured in front of it.
//!
//! The query of a streaming request may override the defaults: `?chunks=N&delay_ms=D`.

pub mod body;
pub mod stats;

use std::{convert::Infallible, sync::Arc, time::Duration};

use http_body_util::BodyExt;
use hyper::{
    Method, Request, Response, StatusCode,
    body::Body,
    header::{self, HeaderMap, HeaderValue},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

pub use body::{EventStream, MockBody};
pub use stats::{NO_KEY, Stats};

/// The non-streaming chat completion every request gets.
pub const COMPLETION: &[u8] = br#"{"id":"chatcmpl-mock","object":"chat.completion","created":1747400000,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Hello","refusal":null},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":1,"total_tokens":10}}"#;

/// The answer of `GET …/models`.
pub const MODELS: &[u8] = br#"{"object":"list","data":[{"id":"gpt-4o-mini","object":"model","created":1721172741,"owned_by":"system"}]}"#;

const NOT_FOUND: &[u8] = br#"{"error":{"message":"the mock upstream has no such route","type":"invalid_request_error","code":"not_found"}}"#;

/// How streamed responses are shaped unless a request's query says otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Completion chunks before `data: [DONE]`.
    pub chunks: u32,
    /// Delay between two events of a stream.
    pub chunk_delay: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            chunks: 5,
            chunk_delay: Duration::ZERO,
        }
    }
}

/// What every connection shares: the options and the counts.
#[derive(Debug, Default)]
pub struct State {
    /// Defaults of streamed responses.
    pub options: Options,
    /// Requests per key.
    pub stats: Stats,
}

impl State {
    /// A fresh state with these defaults.
    pub fn new(options: Options) -> Self {
        State {
            options,
            stats: Stats::default(),
        }
    }
}

/// Accepts connections on `listener` and serves each on its own task, forever.
///
/// # Errors
/// None in practice: failed accepts (out of file descriptors, say) are retried after a pause.
pub async fn serve(listener: TcpListener, state: Arc<State>) -> std::io::Result<()> {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
        };
        // Latency matters more than segment count on loopback.
        let _ = stream.set_nodelay(true);
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let state = Arc::clone(&state);
                async move { Ok::<_, Infallible>(handle(request, &state).await) }
            });
            // A client that goes away mid-request is not an error worth reporting.
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Answers one request.
pub async fn handle<B>(request: Request<B>, state: &State) -> Response<MockBody>
where
    B: Body,
{
    let path = request.uri().path();
    let method = request.method();
    if path.ends_with("/chat/completions") && method == Method::POST {
        state.stats.count(upstream_key(request.headers()));
        let (chunks, delay) = stream_shape(request.uri().query(), state.options);
        let Ok(collected) = request.into_body().collect().await else {
            return json(StatusCode::BAD_REQUEST, MockBody::empty());
        };
        if asks_for_stream(&collected.to_bytes()) {
            let mut response = Response::new(MockBody::Events(EventStream::new(chunks, delay)));
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            );
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            return response;
        }
        return json(StatusCode::OK, MockBody::from_static(COMPLETION));
    }
    if path.ends_with("/models") && method == Method::GET {
        state.stats.count(upstream_key(request.headers()));
        return json(StatusCode::OK, MockBody::from_static(MODELS));
    }
    match (method, path) {
        (&Method::GET, "/__stats") => {
            json(StatusCode::OK, MockBody::from_vec(state.stats.to_json()))
        }
        (&Method::POST, "/__reset") => {
            state.stats.reset();
            let mut response = Response::new(MockBody::empty());
            *response.status_mut() = StatusCode::NO_CONTENT;
            response
        }
        _ => json(StatusCode::NOT_FOUND, MockBody::from_static(NOT_FOUND)),
    }
}

fn json(status: StatusCode, body: MockBody) -> Response<MockBody> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The upstream key a request carries, the way OpenAI, Anthropic or Gemini clients send it.
pub fn upstream_key(headers: &HeaderMap) -> &str {
    if let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let value = value.trim();
        return match value.get(..7) {
            Some(scheme) if scheme.eq_ignore_ascii_case("bearer ") => value[7..].trim_start(),
            _ => value,
        };
    }
    ["x-api-key", "x-goog-api-key"]
        .into_iter()
        .find_map(|name| headers.get(name).and_then(|v| v.to_str().ok()))
        .unwrap_or(NO_KEY)
}

/// Whether a chat completion body has `"stream"` set to `true` (whitespace allowed around the
/// colon). A substring search, not a JSON parse: the mock must stay cheap.
pub fn asks_for_stream(body: &[u8]) -> bool {
    memchr::memmem::find_iter(body, b"\"stream\"").any(|at| {
        let rest = &body[at + b"\"stream\"".len()..];
        let rest = trim_start(rest);
        rest.first() == Some(&b':') && trim_start(&rest[1..]).starts_with(b"true")
    })
}

fn trim_start(bytes: &[u8]) -> &[u8] {
    let skip = bytes.iter().take_while(|b| b.is_ascii_whitespace()).count();
    &bytes[skip..]
}

/// The chunk count and delay of a streamed answer: `chunks` and `delay_ms` from the query when
/// given and valid, the defaults otherwise.
pub fn stream_shape(query: Option<&str>, defaults: Options) -> (u32, Duration) {
    let mut chunks = defaults.chunks;
    let mut delay = defaults.chunk_delay;
    for pair in query.unwrap_or_default().split('&') {
        match pair.split_once('=') {
            Some(("chunks", value)) => chunks = value.parse().unwrap_or(chunks),
            Some(("delay_ms", value)) => {
                delay = value.parse().map(Duration::from_millis).unwrap_or(delay);
            }
            _ => {}
        }
    }
    (chunks, delay)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::io::{Read, Write};

    use http_body_util::Full;
    use hyper::body::Bytes;

    use super::*;

    fn request(method: &str, uri: &str, key: Option<&str>, body: &str) -> Request<Full<Bytes>> {
        let mut builder = Request::builder().method(method).uri(uri);
        if let Some(key) = key {
            builder = builder.header("authorization", format!("Bearer {key}"));
        }
        builder
            .body(Full::new(Bytes::from(body.to_owned())))
            .unwrap()
    }

    async fn text(response: Response<MockBody>) -> String {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn a_chat_completion_gets_the_fixed_json_answer() {
        let state = State::default();
        let body = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;

        let response = handle(
            request("POST", "/v1/chat/completions", Some("sk-1"), body),
            &state,
        )
        .await;

        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-type"], "application/json");
        let json: serde_json::Value = serde_json::from_str(&text(response).await).unwrap();
        assert_eq!(json["choices"][0]["message"]["content"], "Hello");
    }

    #[tokio::test]
    async fn a_streaming_request_gets_the_chunks_the_query_asks_for() {
        let state = State::default();
        let body = r#"{"model":"m","stream" : true,"messages":[]}"#;

        let response = handle(
            request(
                "POST",
                "/v1/chat/completions?chunks=2&delay_ms=0",
                Some("k"),
                body,
            ),
            &state,
        )
        .await;

        assert_eq!(response.headers()["content-type"], "text/event-stream");
        let text = text(response).await;
        assert_eq!(text.matches("data: ").count(), 3, "{text}");
        assert!(text.ends_with("data: [DONE]\n\n"));
    }

    #[tokio::test]
    async fn requests_are_counted_per_key_until_reset() {
        let state = State::default();
        for key in ["sk-a", "sk-b", "sk-a"] {
            handle(
                request("POST", "/v1/chat/completions", Some(key), "{}"),
                &state,
            )
            .await;
        }
        handle(request("GET", "/v1/models", None, ""), &state).await;

        let stats = text(handle(request("GET", "/__stats", None, ""), &state).await).await;
        let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
        assert_eq!(
            stats,
            serde_json::json!({"total": 4, "keys": {"sk-a": 2, "sk-b": 1, "(none)": 1}})
        );

        let reset = handle(request("POST", "/__reset", None, ""), &state).await;
        assert_eq!(reset.status(), StatusCode::NO_CONTENT);
        assert!(state.stats.snapshot().is_empty());
    }

    #[tokio::test]
    async fn unknown_routes_are_404_and_not_counted() {
        let state = State::default();

        let response = handle(
            request("GET", "/v1/chat/completions", Some("k"), ""),
            &state,
        )
        .await;

        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert!(state.stats.snapshot().is_empty());
    }

    #[test]
    fn the_stream_flag_is_found_without_parsing() {
        assert!(asks_for_stream(br#"{"stream":true}"#));
        assert!(asks_for_stream(b"{\"a\":1, \"stream\" :\n true}"));
        assert!(!asks_for_stream(br#"{"stream":false}"#));
        assert!(!asks_for_stream(br#"{"content":"stream"}"#));
        assert!(!asks_for_stream(b""));
    }

    #[test]
    fn keys_are_read_from_any_sdk_header() {
        let mut headers = HeaderMap::new();
        assert_eq!(upstream_key(&headers), NO_KEY);
        headers.insert("x-api-key", HeaderValue::from_static("sk-ant"));
        assert_eq!(upstream_key(&headers), "sk-ant");
        headers.insert("authorization", HeaderValue::from_static("bearer sk-oai"));
        assert_eq!(upstream_key(&headers), "sk-oai");
    }

    #[test]
    fn the_query_overrides_the_stream_shape() {
        let defaults = Options::default();
        assert_eq!(stream_shape(None, defaults), (5, Duration::ZERO));
        assert_eq!(
            stream_shape(Some("x=1&chunks=3&delay_ms=7"), defaults),
            (3, Duration::from_millis(7))
        );
        assert_eq!(
            stream_shape(Some("chunks=lots"), defaults),
            (5, Duration::ZERO)
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn serves_http_over_tcp_with_keep_alive() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(serve(listener, Arc::new(State::default())));

        let answer = tokio::task::spawn_blocking(move || {
            let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            let body = r#"{"stream":true}"#;
            let request = format!(
                "POST /v1/chat/completions?chunks=1 HTTP/1.1\r\nhost: x\r\nauthorization: Bearer sk-tcp\r\ncontent-length: {}\r\n\r\n{body}\
                 GET /__stats HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
                body.len()
            );
            stream.write_all(request.as_bytes()).unwrap();
            let mut answer = String::new();
            stream.read_to_string(&mut answer).unwrap();
            answer
        })
        .await
        .unwrap();
        server.abort();

        assert_eq!(answer.matches("HTTP/1.1 200 OK").count(), 2, "{answer}");
        assert!(answer.contains("data: [DONE]"), "{answer}");
        assert!(answer.contains(r#""sk-tcp":1"#), "{answer}");
    }
}
