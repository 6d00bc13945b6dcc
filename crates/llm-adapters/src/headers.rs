//! Which request and response headers the proxies forward: hop-by-hop headers (RFC 9110 §7.6.1,
//! plus `host` and the ones a `Connection` header lists) are never forwarded, and on the LLM
//! proxy neither is any header a client credential can travel in, so a proxy key never reaches
//! the upstream and the injected upstream key is the only credential it sees.
//!
//! Names are compared ASCII case-insensitively. `Content-Length` is left to the server, which
//! recomputes it when the body changes.

use crate::{ClientFormat, anthropic, gemini, openai};

/// The header GENERIC proxy clients authenticate with; never forwarded.
pub const PROXY_KEY_HEADER: &str = "x-proxy-key";

/// Headers that describe one connection, not the message, plus `host` (the client set it for
/// the proxy, the HTTP client sets the upstream's) and the non-standard `proxy-connection`.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
];

/// Every header any supported SDK sends a credential in, plus the GENERIC proxy key header.
/// Dropped whatever the client format: a client that sends its proxy key the "wrong" way must
/// not leak it upstream, and a second credential would conflict with the injected key.
const ANY_FORMAT_CREDENTIALS: &[&str] = &[
    "authorization",
    "x-api-key",
    anthropic::ORIGINAL_KEY_HEADER,
    "x-goog-api-key",
    PROXY_KEY_HEADER,
];

/// Whether `name` is a hop-by-hop header that no proxy forwards (in either direction).
pub fn is_hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP.iter().any(|h| h.eq_ignore_ascii_case(name))
}

/// Whether `name` may carry a client credential on the LLM proxy: the client format's own
/// credential headers ([`openai::CLIENT_CREDENTIAL_HEADERS`] and its siblings) and, for every
/// format, the credential headers of the other formats and `x-proxy-key`.
pub fn is_client_credential(name: &str, client: ClientFormat) -> bool {
    let own = match client {
        ClientFormat::Openai | ClientFormat::OpenaiResponses => openai::CLIENT_CREDENTIAL_HEADERS,
        ClientFormat::Anthropic => anthropic::CLIENT_CREDENTIAL_HEADERS,
        ClientFormat::Gemini => gemini::CLIENT_CREDENTIAL_HEADERS,
    };
    own.iter()
        .chain(ANY_FORMAT_CREDENTIALS)
        .any(|h| h.eq_ignore_ascii_case(name))
}

/// Whether the `Connection` header value lists `name` (such headers are hop-by-hop too).
pub fn listed_in_connection(name: &str, connection: Option<&str>) -> bool {
    connection.is_some_and(|value| {
        value
            .split(',')
            .any(|token| token.trim().eq_ignore_ascii_case(name))
    })
}

/// Whether a client request header is forwarded upstream by the LLM proxy: not hop-by-hop, not
/// listed in `Connection` (pass the request's `Connection` value), not a credential.
pub fn forward_llm_request_header(
    name: &str,
    client: ClientFormat,
    connection: Option<&str>,
) -> bool {
    !(is_hop_by_hop(name)
        || is_client_credential(name, client)
        || listed_in_connection(name, connection))
}

/// Whether a client request header is forwarded upstream by the GENERIC proxy: not hop-by-hop,
/// not listed in `Connection`, not `x-proxy-key`. Other headers (an `Authorization` meant for
/// the target, say) pass; the configured key header is replaced by the injection.
pub fn forward_generic_request_header(name: &str, connection: Option<&str>) -> bool {
    !(is_hop_by_hop(name)
        || name.eq_ignore_ascii_case(PROXY_KEY_HEADER)
        || listed_in_connection(name, connection))
}

/// Whether an upstream response header is passed to the client: not hop-by-hop and not listed
/// in the response's `Connection` header.
pub fn forward_response_header(name: &str, connection: Option<&str>) -> bool {
    !(is_hop_by_hop(name) || listed_in_connection(name, connection))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL_CLIENTS: [ClientFormat; 4] = [
        ClientFormat::Openai,
        ClientFormat::OpenaiResponses,
        ClientFormat::Anthropic,
        ClientFormat::Gemini,
    ];

    #[test]
    fn hop_by_hop_headers_are_recognised_in_any_case() {
        for name in [
            "connection",
            "Keep-Alive",
            "proxy-authenticate",
            "Proxy-Authorization",
            "TE",
            "trailer",
            "Transfer-Encoding",
            "upgrade",
            "Host",
        ] {
            assert!(is_hop_by_hop(name), "{name}");
        }
        for name in [
            "content-type",
            "content-length",
            "accept",
            "x-request-id",
            "trailers",
        ] {
            assert!(!is_hop_by_hop(name), "{name}");
        }
    }

    #[test]
    fn every_credential_header_is_dropped_for_every_client_format() {
        for client in ALL_CLIENTS {
            for name in [
                "authorization",
                "X-Api-Key",
                "x-goog-api-key",
                "X-Proxy-Key",
            ] {
                assert!(is_client_credential(name, client), "{name} for {client:?}");
                assert!(!forward_llm_request_header(name, client, None));
            }
        }
    }

    #[test]
    fn ordinary_headers_are_forwarded() {
        for client in ALL_CLIENTS {
            for name in [
                "content-type",
                "accept",
                "anthropic-version",
                "anthropic-beta",
                "openai-beta",
                "x-goog-api-client",
                "user-agent",
            ] {
                assert!(forward_llm_request_header(name, client, None), "{name}");
            }
        }
    }

    #[test]
    fn headers_listed_in_connection_are_hop_by_hop() {
        let connection = Some("keep-alive, X-Trace-Hop ,close");
        assert!(listed_in_connection("x-trace-hop", connection));
        assert!(!forward_llm_request_header(
            "x-trace-hop",
            ClientFormat::Openai,
            connection
        ));
        assert!(!forward_response_header("X-Trace-Hop", connection));
        assert!(forward_response_header("x-trace", connection));
        assert!(!listed_in_connection("x-trace-hop", None));
    }

    #[test]
    fn generic_proxy_drops_only_its_key_and_hop_by_hop_headers() {
        assert!(!forward_generic_request_header("X-Proxy-Key", None));
        assert!(!forward_generic_request_header("transfer-encoding", None));
        assert!(forward_generic_request_header("authorization", None));
        assert!(forward_generic_request_header("content-type", None));
    }

    #[test]
    fn response_headers_keep_content_headers() {
        assert!(forward_response_header("content-type", None));
        assert!(forward_response_header("retry-after", None));
        assert!(!forward_response_header("transfer-encoding", None));
    }
}
