//! The URL rule of both proxies: target + `/` + rest with exactly one slash between, the
//! client's path kept exactly as sent (percent-encoding included), the target's own query (an
//! Azure-style `api-version`) merged with the client's, and, for LLM targets, a duplicate API
//! version segment dropped (`.../v1` + `v1/chat/completions`) so both SDK styles work.

/// Why a client path cannot be appended to a target.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// A `.` or `..` segment (plain or percent-encoded) that would climb out of the target path.
    #[error("the request path must not contain `.` or `..` segments")]
    DotSegment,
    /// A character that cannot appear in a URL path (`?`, `#`, a control or space character).
    #[error("the request path contains a character that is not allowed in a URL path")]
    InvalidCharacter,
}

/// Joins a GENERIC target URL and the client's path tail: `target` + `/` + `rest`, with exactly
/// one slash between; `rest` is kept as given (no decoding or re-encoding). An empty `rest`
/// gives the target itself. `query` is the client's raw query string (without `?`, possibly
/// empty), appended after the target's own query, if any.
///
/// # Errors
/// [`UrlError`] when `rest` contains dot segments (which would escape the target path) or
/// characters a URL path cannot hold.
pub fn join_url(target: &str, rest: &str, query: &str) -> Result<String, UrlError> {
    build(target, rest, query, false)
}

/// Joins an LLM target base URL and the client's action, like [`join_url`], and additionally
/// drops a duplicated API version: when the base path ends in a version segment (`v1`, `v1beta`,
/// `v2`, ...) and the action starts with the same segment, the action's copy is dropped, so
/// `https://api.openai.com/v1` + `v1/chat/completions` and + `chat/completions` both reach
/// `https://api.openai.com/v1/chat/completions`.
///
/// # Errors
/// As [`join_url`].
pub fn llm_url(base: &str, action: &str, query: &str) -> Result<String, UrlError> {
    build(base, action, query, true)
}

fn build(target: &str, rest: &str, query: &str, dedupe_version: bool) -> Result<String, UrlError> {
    check_path(rest)?;
    let (target_path, target_query) = target.split_once('?').unwrap_or((target, ""));
    let base = target_path.trim_end_matches('/');
    let mut rest = rest.trim_start_matches('/');
    if dedupe_version {
        rest = drop_duplicate_version(base, rest);
    }
    let mut url = String::with_capacity(target.len() + rest.len() + query.len() + 2);
    if rest.is_empty() {
        url.push_str(target_path);
    } else {
        url.push_str(base);
        url.push('/');
        url.push_str(rest);
    }
    let mut first = true;
    for part in [target_query, query] {
        if !part.is_empty() {
            url.push(if first { '?' } else { '&' });
            url.push_str(part);
            first = false;
        }
    }
    Ok(url)
}

/// `rest` without its first segment when that segment is an API version equal to the last
/// segment of `base` (already stripped of trailing slashes).
fn drop_duplicate_version<'r>(base: &str, rest: &'r str) -> &'r str {
    // Only the path counts: a host named `v1` is not a version segment.
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let Some(path) = base
        .get(authority_start..)
        .and_then(|s| s.find('/').and_then(|i| s.get(i..)))
    else {
        return rest;
    };
    let Some((_, last)) = path.rsplit_once('/') else {
        return rest;
    };
    if !is_version_segment(last) {
        return rest;
    }
    match rest.split_once('/') {
        Some((first, tail)) if first == last => tail.trim_start_matches('/'),
        None if rest == last => "",
        _ => rest,
    }
}

/// `v` + digits + optional lower-case letters/digits: `v1`, `v1beta`, `v2`, `v1alpha1`.
fn is_version_segment(segment: &str) -> bool {
    let Some(tail) = segment.strip_prefix('v') else {
        return false;
    };
    tail.bytes().next().is_some_and(|b| b.is_ascii_digit())
        && tail
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
}

fn check_path(rest: &str) -> Result<(), UrlError> {
    if rest
        .bytes()
        .any(|b| b.is_ascii_control() || matches!(b, b' ' | b'?' | b'#'))
    {
        return Err(UrlError::InvalidCharacter);
    }
    // `\` counts as a separator: URL parsers treat it as `/` in http(s) URLs. A dot segment
    // needs a `.` or a `%`, so the usual action (`chat/completions`) skips the split.
    let may_hold_dots = rest.bytes().any(|b| b == b'.' || b == b'%');
    if may_hold_dots && rest.split(['/', '\\']).any(is_dot_segment) {
        return Err(UrlError::DotSegment);
    }
    Ok(())
}

fn is_dot_segment(segment: &str) -> bool {
    let is_dot = |s: &str| s == "." || s.eq_ignore_ascii_case("%2e");
    match segment.len() {
        1 | 3 => is_dot(segment),
        2 | 4 | 6 => {
            // `..`, `.%2e`, `%2e.`, `%2e%2e`
            let split = if segment.starts_with('.') { 1 } else { 3 };
            segment.len() > split
                && segment.is_char_boundary(split)
                && is_dot(&segment[..split])
                && is_dot(&segment[split..])
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn exactly_one_slash_between_base_and_action() {
        for base in [
            "https://api.x.com/v1",
            "https://api.x.com/v1/",
            "https://api.x.com/v1//",
        ] {
            for action in [
                "chat/completions",
                "/chat/completions",
                "//chat/completions",
            ] {
                assert_eq!(
                    llm_url(base, action, "").unwrap(),
                    "https://api.x.com/v1/chat/completions",
                    "{base} + {action}"
                );
            }
        }
    }

    #[test]
    fn duplicate_v1_is_dropped() {
        assert_eq!(
            llm_url("https://api.openai.com/v1", "v1/chat/completions", "").unwrap(),
            "https://api.openai.com/v1/chat/completions"
        );
        assert_eq!(
            llm_url("https://api.openai.com/v1/", "/v1/models", "").unwrap(),
            "https://api.openai.com/v1/models"
        );
        assert_eq!(
            llm_url("https://api.openai.com/v1", "v1", "").unwrap(),
            "https://api.openai.com/v1"
        );
    }

    #[test]
    fn v1_is_kept_when_the_base_has_no_version() {
        assert_eq!(
            llm_url("https://api.anthropic.com", "v1/messages", "").unwrap(),
            "https://api.anthropic.com/v1/messages"
        );
        assert_eq!(
            llm_url("https://api.anthropic.com/", "v1/messages", "").unwrap(),
            "https://api.anthropic.com/v1/messages"
        );
    }

    #[test]
    fn only_a_whole_matching_version_segment_is_dropped() {
        assert_eq!(
            llm_url("https://x.example/v1", "v1beta/models", "").unwrap(),
            "https://x.example/v1/v1beta/models"
        );
        assert_eq!(
            llm_url("https://x.example/v1", "v10/models", "").unwrap(),
            "https://x.example/v1/v10/models"
        );
        assert_eq!(
            llm_url("https://x.example/api", "api/models", "").unwrap(),
            "https://x.example/api/api/models"
        );
    }

    #[test]
    fn duplicate_v1beta_is_dropped_for_gemini_bases() {
        assert_eq!(
            llm_url(
                "https://generativelanguage.googleapis.com/v1beta",
                "v1beta/models/gemini-2.0-flash:generateContent",
                ""
            )
            .unwrap(),
            "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.0-flash:generateContent"
        );
    }

    #[test]
    fn a_host_named_like_a_version_is_not_a_path_segment() {
        assert_eq!(
            llm_url("http://v1", "v1/models", "").unwrap(),
            "http://v1/v1/models"
        );
        assert_eq!(
            llm_url("http://v1:8080/", "v1/models", "").unwrap(),
            "http://v1:8080/v1/models"
        );
    }

    #[test]
    fn generic_join_never_drops_segments() {
        assert_eq!(
            join_url("https://api.example.com/v1", "v1/things", "").unwrap(),
            "https://api.example.com/v1/v1/things"
        );
        assert_eq!(
            join_url("https://api.example.com/base/", "/items/42", "a=1&a=2").unwrap(),
            "https://api.example.com/base/items/42?a=1&a=2"
        );
    }

    #[test]
    fn empty_action_gives_the_target_itself() {
        assert_eq!(
            llm_url("https://x.example/v1", "", "").unwrap(),
            "https://x.example/v1"
        );
        assert_eq!(
            llm_url("https://x.example/", "/", "").unwrap(),
            "https://x.example/"
        );
        assert_eq!(
            join_url("https://x.example/hook", "", "a=1").unwrap(),
            "https://x.example/hook?a=1"
        );
    }

    #[test]
    fn query_strings_are_appended_and_merged_with_the_target_query() {
        assert_eq!(
            llm_url("https://x.example/v1", "models", "limit=5&after=m%201").unwrap(),
            "https://x.example/v1/models?limit=5&after=m%201"
        );
        assert_eq!(
            llm_url(
                "https://res.openai.azure.com/openai/deployments/gpt?api-version=2024-10-21",
                "chat/completions",
                "x=1"
            )
            .unwrap(),
            "https://res.openai.azure.com/openai/deployments/gpt/chat/completions?api-version=2024-10-21&x=1"
        );
        assert_eq!(
            llm_url("https://x.example/v1/?v=2", "", "").unwrap(),
            "https://x.example/v1/?v=2"
        );
    }

    #[test]
    fn percent_encoding_of_the_action_is_kept() {
        assert_eq!(
            llm_url("https://x.example/v1", "files/a%2Fb%20c/content", "").unwrap(),
            "https://x.example/v1/files/a%2Fb%20c/content"
        );
        assert_eq!(
            llm_url(
                "https://x.example",
                "v1beta/models/gemini-pro:streamGenerateContent",
                "alt=sse"
            )
            .unwrap(),
            "https://x.example/v1beta/models/gemini-pro:streamGenerateContent?alt=sse"
        );
    }

    #[test]
    fn dot_segments_are_rejected() {
        for action in [
            "../admin",
            "v1/../../secret",
            "./models",
            "%2e%2e/admin",
            "%2E./admin",
            ".%2e/admin",
            "models/..",
            "..\\admin",
        ] {
            assert_eq!(
                llm_url("https://x.example/v1", action, ""),
                Err(UrlError::DotSegment),
                "{action}"
            );
        }
        assert!(llm_url("https://x.example/v1", "models/gpt-4.1", "").is_ok());
        assert!(llm_url("https://x.example/v1", "a/.../b", "").is_ok());
        assert!(llm_url("https://x.example/v1", ".well-known/x", "").is_ok());
    }

    #[test]
    fn characters_that_would_change_the_url_are_rejected() {
        for action in ["models?x=1", "models#frag", "a b", "a\r\nb"] {
            assert_eq!(
                llm_url("https://x.example/v1", action, ""),
                Err(UrlError::InvalidCharacter),
                "{action:?}"
            );
        }
    }

    #[test]
    fn model_list_paths_go_through_the_url_rule() {
        assert_eq!(
            llm_url("https://api.openai.com/v1", "v1/models", "").unwrap(),
            "https://api.openai.com/v1/models"
        );
        assert_eq!(
            llm_url("https://api.openai.com/v1", "models", "").unwrap(),
            "https://api.openai.com/v1/models"
        );
        assert_eq!(
            llm_url("https://api.anthropic.com", "v1/models", "limit=20").unwrap(),
            "https://api.anthropic.com/v1/models?limit=20"
        );
        assert_eq!(
            llm_url(
                "https://generativelanguage.googleapis.com",
                "v1beta/models",
                "pageSize=50"
            )
            .unwrap(),
            "https://generativelanguage.googleapis.com/v1beta/models?pageSize=50"
        );
    }
}
