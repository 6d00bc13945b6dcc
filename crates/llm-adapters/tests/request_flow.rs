//! One LLM request end to end through the public API, in the order the server calls it:
//! authenticate, drop client headers, build the upstream URL and key injection, detect
//! streaming, convert between formats when the client's differs from the upstream's, and report
//! a broken stream in the client's format. Doubles as the usage example.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use domain::{ApiFormat, KeyLocation, KeyPlacement, LlmTarget, OutputFormat};
use llm_adapters::{
    ClientFormat, Conversion, KeySource, ProxyError, SseParser, authenticate, error_body,
    forward_llm_request_header, is_event_stream, is_streaming_request, prepare_llm_request,
    probe_request, stream_error_event,
};

fn lookup<'a>(list: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<&'a str> {
    move |name| {
        list.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }
}

#[test]
fn openai_client_with_body_key_to_openai_upstream() {
    let target = LlmTarget {
        target_base_url: "https://api.openai.com/v1".parse().unwrap(),
        api_format: ApiFormat::OpenaiCompatible,
        output_format: OutputFormat::None,
        key_placement: None,
    };
    let client = ClientFormat::from(&target);
    let request_headers = [
        ("content-type", "application/json"),
        ("connection", "keep-alive"),
        ("host", "proxy.local"),
        ("x-stainless-lang", "python"),
    ];
    let headers = lookup(&request_headers);
    let body = br#"{"model":"gpt-4o-mini","api_key":"proxy-key-1","stream":true,"messages":[]}"#;

    // 1. Authenticate; the body loses its api_key member.
    let auth = authenticate(client, &headers, "", body).unwrap();
    let presented = auth.key.unwrap();
    assert_eq!(presented.source, KeySource::BodyApiKey);
    assert_eq!(presented.key, "proxy-key-1"); // then: ProxyKeySet::verify
    let body = auth.rewritten_body.unwrap();
    assert_eq!(
        body,
        br#"{"model":"gpt-4o-mini","stream":true,"messages":[]}"#
    );

    // 2. Forward only end-to-end, non-credential headers.
    let connection = headers("connection");
    let forwarded: Vec<&str> = request_headers
        .iter()
        .map(|(name, _)| *name)
        .filter(|name| forward_llm_request_header(name, client, connection))
        .collect();
    assert_eq!(forwarded, ["content-type", "x-stainless-lang"]);

    // 3. URL and key injection (the selected upstream key).
    let upstream =
        prepare_llm_request(&target, "v1/chat/completions", "", "sk-upstream", &headers).unwrap();
    assert_eq!(upstream.url, "https://api.openai.com/v1/chat/completions");
    let set: Vec<(&str, &str)> = upstream
        .injection
        .headers()
        .map(|h| (h.name, h.value.as_ref()))
        .collect();
    assert_eq!(set, [("authorization", "Bearer sk-upstream")]);

    // 4. Streaming: request flag, then the response's content type.
    assert!(is_streaming_request(client, "v1/chat/completions", &body));
    assert!(is_event_stream("text/event-stream; charset=utf-8"));

    // 5. The stream breaks after the commit boundary: end it with an in-band error event.
    let frame = stream_error_event(
        client,
        &ProxyError::new(
            502,
            "upstream_stream_broken",
            "the upstream closed the stream early",
        ),
    );
    let mut parser = SseParser::new();
    let mut data = Vec::new();
    parser
        .feed(&frame, |event| data.push(event.data.to_owned()))
        .unwrap();
    assert_eq!(data.len(), 1);
    assert!(data[0].contains("\"type\":\"upstream_error\""));
}

#[test]
fn gemini_client_with_query_key_to_gemini_upstream_with_query_placement() {
    let target = LlmTarget {
        target_base_url: "https://generativelanguage.googleapis.com".parse().unwrap(),
        api_format: ApiFormat::GeminiNative,
        output_format: OutputFormat::None,
        key_placement: Some(KeyPlacement::new(KeyLocation::Query, "key").unwrap()),
    };
    let client = ClientFormat::from(&target);
    let action = "v1beta/models/gemini-2.5-flash:streamGenerateContent";
    let query = "alt=sse&key=proxy%2Dkey";

    let auth = authenticate(client, lookup(&[]), query, b"{}").unwrap();
    let presented = auth.key.unwrap();
    assert_eq!(
        (presented.key.as_ref(), presented.source),
        ("proxy-key", KeySource::QueryKey)
    );
    assert_eq!(auth.rewritten_body, None);

    let upstream = prepare_llm_request(&target, action, query, "AIza up", lookup(&[])).unwrap();
    assert_eq!(
        upstream.url,
        "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse&key=AIza%20up"
    );
    assert_eq!(upstream.injection.headers().count(), 0);
    assert!(is_streaming_request(client, action, b"{}"));

    // Before the commit boundary the proxy answers with a JSON body in the client's format.
    let body = error_body(
        client,
        &ProxyError::new(503, "no_usable_key", "no usable key"),
    );
    let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(value["error"]["status"], "UNAVAILABLE");
}

#[test]
fn probe_uses_the_same_rules_as_real_traffic() {
    let target = LlmTarget {
        target_base_url: "https://api.anthropic.com/v1".parse().unwrap(),
        api_format: ApiFormat::AnthropicNative,
        output_format: OutputFormat::Openai,
        key_placement: None,
    };
    let probe = probe_request(&target, "sk-ant").unwrap();
    assert_eq!(
        (probe.method, probe.url.as_str()),
        ("GET", "https://api.anthropic.com/v1/models")
    );
    assert!(probe.injection.sets_header("x-api-key"));
    assert!(probe.injection.sets_header("anthropic-version"));
}

#[test]
fn openai_client_to_anthropic_upstream_with_conversion() {
    let target = LlmTarget {
        target_base_url: "https://api.anthropic.com".parse().unwrap(),
        api_format: ApiFormat::AnthropicNative,
        output_format: OutputFormat::Openai,
        key_placement: None,
    };
    let client = ClientFormat::from(&target);
    let request_headers = [
        ("authorization", "Bearer proxy-key-1"),
        ("content-type", "application/json"),
        ("content-length", "118"),
        ("accept-encoding", "gzip, br"),
        ("openai-organization", "org-1"),
        ("user-agent", "OpenAI/Python 1.99.0"),
    ];
    let headers = lookup(&request_headers);
    let body = br#"{"model":"claude-sonnet-4-5","stream":true,"messages":[{"role":"user","content":"Hi"}]}"#;

    // 1. Authenticate as for any request.
    let auth = authenticate(client, &headers, "", body).unwrap();
    assert_eq!(auth.key.unwrap().source, KeySource::AuthorizationBearer);
    let body = auth.rewritten_body.unwrap_or_else(|| body.to_vec());

    // 2. The formats differ: convert the request.
    let conversion = Conversion::lookup(client, target.api_format).unwrap();
    let converted = conversion
        .request("v1/chat/completions", "", &body)
        .unwrap();
    assert!(converted.stream);

    // 3. URL, key injection and headers for the converted request.
    let upstream = prepare_llm_request(
        &target,
        &converted.action,
        &converted.query,
        "sk-ant-up",
        &headers,
    )
    .unwrap();
    assert_eq!(upstream.url, "https://api.anthropic.com/v1/messages");
    assert!(upstream.injection.sets_header("x-api-key"));
    assert!(upstream.injection.sets_header("anthropic-version"));
    let forwarded: Vec<&str> = request_headers
        .iter()
        .map(|(name, _)| *name)
        .filter(|name| conversion.forward_request_header(name, None))
        .collect();
    assert_eq!(forwarded, ["user-agent"]);
    let sent: serde_json::Value = serde_json::from_slice(&converted.body).unwrap();
    assert_eq!(sent["max_tokens"], 4096);

    // 4. The upstream streams: answer as SSE and convert chunk by chunk.
    assert!(is_event_stream("text/event-stream"));
    assert_eq!(converted.content_type(), "text/event-stream");
    let mut stream = converted.stream_converter();
    let upstream_body = b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"claude-sonnet-4-5\",\"usage\":{\"input_tokens\":9,\"output_tokens\":1}}}\n\nevent: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\nevent: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello\"}}\n\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":2}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
    let mut client_bytes = Vec::new();
    for chunk in upstream_body.chunks(40) {
        client_bytes.extend_from_slice(&stream.push(chunk));
    }
    client_bytes.extend_from_slice(&stream.finish());
    let mut parser = SseParser::new();
    let mut data = Vec::new();
    parser
        .feed(&client_bytes, |event| data.push(event.data.to_owned()))
        .unwrap();
    assert_eq!(data.last().unwrap(), "[DONE]");
    assert!(data.iter().any(|d| d.contains("\"content\":\"Hello\"")));
    assert!(
        data.iter()
            .any(|d| d.contains("\"finish_reason\":\"stop\""))
    );

    // 5. A non-streamed or error response goes through `response`.
    let error = conversion.response(
        429,
        br#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}"#,
    );
    assert_eq!(error.status, 429);
    let value: serde_json::Value = serde_json::from_slice(&error.body).unwrap();
    assert_eq!(value["error"]["message"], "slow down");
    assert_eq!(value["error"]["type"], "rate_limit_error");
}
