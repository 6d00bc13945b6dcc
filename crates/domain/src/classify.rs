//! Classification of upstream outcomes (SPEC §3, §8): each outcome gets a class ([`Verdict`]) that
//! decides what happens to the key's health; whether the request is retried is the failover
//! machine's call ([`crate::failover`]), from the class and the config's policy.

use std::sync::LazyLock;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder};
use chrono::{DateTime, TimeDelta, Utc};

/// How much of an error body is searched for markers.
pub const MARKER_SCAN_BYTES: usize = 8 * 1024;
/// The longest cooldown an upstream header can impose; longer values are treated as garbage.
pub const MAX_COOLDOWN: TimeDelta = TimeDelta::days(1);

/// Body fragments meaning the key hit a rate limit or quota.
const RATE_LIMIT_MARKERS: &[&str] = &[
    "rate_limit",
    "rate limit",
    "ratelimit",
    "too many requests",
    "resource_exhausted",
    "insufficient_quota",
    "quota exceeded",
    "exceeded your current quota",
];

/// Body fragments meaning the upstream rejected the key itself.
const INVALID_KEY_MARKERS: &[&str] = &[
    "invalid_api_key",
    "invalid api key",
    "incorrect api key",
    "api_key_invalid",
    "api key not valid",
    "api key expired",
    "api_key_expired",
    "authentication_error",
    "account_deactivated",
    "key has been suspended",
    "suspended",
    "revoked",
];

static RATE_LIMIT: LazyLock<Option<AhoCorasick>> = LazyLock::new(|| markers(RATE_LIMIT_MARKERS));
static INVALID_KEY: LazyLock<Option<AhoCorasick>> = LazyLock::new(|| markers(INVALID_KEY_MARKERS));

fn markers(patterns: &[&str]) -> Option<AhoCorasick> {
    AhoCorasickBuilder::new()
        .ascii_case_insensitive(true)
        .build(patterns)
        .ok()
}

fn body_has(markers: &LazyLock<Option<AhoCorasick>>, body: &[u8]) -> bool {
    let scanned = &body[..body.len().min(MARKER_SCAN_BYTES)];
    markers.as_ref().is_some_and(|m| m.is_match(scanned))
}

/// The rate-limit reset headers read when a response has no `Retry-After`, in order of trust.
pub const RATE_LIMIT_RESET_HEADERS: [&str; 4] = [
    "x-ratelimit-reset-requests",
    "anthropic-ratelimit-requests-reset",
    "x-ratelimit-reset",
    "ratelimit-reset",
];

/// Whether the classifier needs the start of the body of a response with this status: error
/// bodies are searched for markers, successes are streamed untouched.
pub fn needs_body(status: u16) -> bool {
    status >= 400
}

/// The facts of an upstream response head (and, for errors, the start of its body) that the
/// classifier needs. Header values are passed raw.
#[derive(Debug, Clone, Copy, Default)]
pub struct UpstreamResponse<'a> {
    /// HTTP status.
    pub status: u16,
    /// `Retry-After`: delay in seconds or an HTTP-date.
    pub retry_after: Option<&'a str>,
    /// A rate-limit reset header (`x-ratelimit-reset-requests`,
    /// `anthropic-ratelimit-requests-reset`, `x-ratelimit-reset`): a duration like `1m30s` or
    /// `250ms`, seconds, a Unix time or an RFC 3339 time.
    pub rate_limit_reset: Option<&'a str>,
    /// The first bytes of an error body (empty for successes or streams).
    pub body: &'a [u8],
}

impl<'a> UpstreamResponse<'a> {
    /// The facts of a response, reading the headers the classifier needs through `header` (which
    /// answers a header's value by lower-case name) and keeping at most [`MARKER_SCAN_BYTES`] of
    /// the body.
    pub fn from_head(
        status: u16,
        header: impl Fn(&'static str) -> Option<&'a str>,
        body: &'a [u8],
    ) -> Self {
        UpstreamResponse {
            status,
            retry_after: header("retry-after"),
            rate_limit_reset: RATE_LIMIT_RESET_HEADERS.into_iter().find_map(&header),
            body: &body[..body.len().min(MARKER_SCAN_BYTES)],
        }
    }
}

/// What happened to one upstream attempt.
#[derive(Debug, Clone, Copy)]
pub enum Outcome<'a> {
    /// The upstream answered with a response head.
    Response(UpstreamResponse<'a>),
    /// No connection could be made (refused, DNS, TLS).
    ConnectFailed,
    /// The response head did not arrive within the response timeout.
    HeadTimeout,
}

/// What happens to the key after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyEffect {
    /// Nothing: the key is healthy, or the fault is not the key's.
    Unchanged,
    /// The key cools down until then.
    CoolDown(DateTime<Utc>),
    /// The key is failed until recovered.
    Fail,
    /// The key is back in rotation: failure and cooldown cleared (a successful probe).
    Restore,
}

/// The class of an outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// 1xx/2xx/3xx: returned to the client.
    Success,
    /// 429 or a rate-limit/quota marker: retry with the next key; the key cools down.
    RateLimited {
        /// End of the cooldown.
        until: DateTime<Utc>,
    },
    /// 401, or a marker that the key itself is invalid, suspended or revoked (any 4xx): the key
    /// fails.
    KeyRejected,
    /// 403 without any key marker: about the request (a resource or model the account may not
    /// use) as likely as about the key, so it never fails a key by itself (SPEC §8).
    Forbidden,
    /// 5xx, connect error, head timeout: the key is not at fault.
    UpstreamFault,
    /// Any other 4xx: the client's own error, returned as is.
    ClientError,
}

impl Verdict {
    /// What happens to the key on the proxy path.
    pub fn key_effect(self) -> KeyEffect {
        match self {
            Verdict::RateLimited { until } => KeyEffect::CoolDown(until),
            Verdict::KeyRejected => KeyEffect::Fail,
            Verdict::Success
            | Verdict::Forbidden
            | Verdict::UpstreamFault
            | Verdict::ClientError => KeyEffect::Unchanged,
        }
    }

    /// Whether the attempt counts as a failure in the key's usage.
    pub fn is_failure(self) -> bool {
        !matches!(
            self,
            Verdict::Success | Verdict::ClientError | Verdict::Forbidden
        )
    }

    /// The class's name in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Success => "success",
            Verdict::RateLimited { .. } => "rate_limited",
            Verdict::KeyRejected => "key_rejected",
            Verdict::Forbidden => "forbidden",
            Verdict::UpstreamFault => "upstream_fault",
            Verdict::ClientError => "client_error",
        }
    }
}

/// Classifies upstream outcomes.
#[derive(Debug, Clone, Copy)]
pub struct Classifier {
    default_cooldown: TimeDelta,
}

impl Classifier {
    /// A classifier that cools keys down for `default_cooldown` when the upstream does not say
    /// how long (`KEY_COOLDOWN_SECONDS`).
    pub fn new(default_cooldown: TimeDelta) -> Self {
        Classifier { default_cooldown }
    }

    /// Classifies one outcome at `now`.
    pub fn classify(&self, outcome: &Outcome<'_>, now: DateTime<Utc>) -> Verdict {
        let response = match outcome {
            Outcome::ConnectFailed | Outcome::HeadTimeout => return Verdict::UpstreamFault,
            Outcome::Response(response) => response,
        };
        let rate_limited = || Verdict::RateLimited {
            until: self.cooldown_until(response, now),
        };
        match response.status {
            429 => rate_limited(),
            // Some APIs (GitHub, a few gateways) answer 403 when a key exceeds its rate limit.
            403 if body_has(&RATE_LIMIT, response.body)
                && !body_has(&INVALID_KEY, response.body) =>
            {
                rate_limited()
            }
            401 => Verdict::KeyRejected,
            403 if body_has(&INVALID_KEY, response.body) => Verdict::KeyRejected,
            403 => Verdict::Forbidden,
            500..=599 => Verdict::UpstreamFault,
            400..=499 if body_has(&INVALID_KEY, response.body) => Verdict::KeyRejected,
            400..=499 if body_has(&RATE_LIMIT, response.body) => rate_limited(),
            400..=499 => Verdict::ClientError,
            _ => Verdict::Success,
        }
    }

    /// When a rate-limited key comes back: `Retry-After`, else the rate-limit reset header, else
    /// the default cooldown; never in the past and never more than [`MAX_COOLDOWN`] ahead.
    pub fn cooldown_until(
        &self,
        response: &UpstreamResponse<'_>,
        now: DateTime<Utc>,
    ) -> DateTime<Utc> {
        let announced = response
            .retry_after
            .and_then(|v| parse_retry_after(v, now))
            .or_else(|| {
                response
                    .rate_limit_reset
                    .and_then(|v| parse_rate_limit_reset(v, now))
            });
        match announced {
            Some(at) if at > now && at - now <= MAX_COOLDOWN => at,
            // A reset that has already passed still deserves a short pause before the retry.
            Some(at) if at <= now => now + TimeDelta::seconds(1),
            _ => now + self.default_cooldown,
        }
    }
}

/// Parses `Retry-After`: delay-seconds or an HTTP-date. `None` for anything else.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        let seconds = i64::try_from(seconds).ok()?;
        return now.checked_add_signed(TimeDelta::try_seconds(seconds)?);
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(DateTime::<Utc>::from(at))
}

/// Parses a rate-limit reset header: a Go-style duration (`1m30s`, `250ms`, `6m0s`, `0.5s`), plain
/// seconds, a Unix time in seconds, or an RFC 3339 time. `None` for anything else.
pub fn parse_rate_limit_reset(value: &str, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let value = value.trim();
    if let Ok(at) = DateTime::parse_from_rfc3339(value) {
        return Some(at.with_timezone(&Utc));
    }
    if let Ok(number) = value.parse::<f64>() {
        if !number.is_finite() || number < 0.0 {
            return None;
        }
        // Values this large are Unix times, not delays.
        if number > 1_000_000_000.0 {
            return DateTime::from_timestamp_millis((number * 1000.0) as i64);
        }
        return now.checked_add_signed(TimeDelta::milliseconds((number * 1000.0) as i64));
    }
    now.checked_add_signed(parse_go_duration(value)?)
}

/// Parses durations such as `1h2m3.5s`, `250ms` or `6m0s`.
fn parse_go_duration(value: &str) -> Option<TimeDelta> {
    let mut rest = value;
    let mut total_ms = 0f64;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let number_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        if number_len == 0 {
            return None;
        }
        let number: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit_ms = match &rest[..unit_len] {
            "h" => 3_600_000.0,
            "m" => 60_000.0,
            "s" => 1_000.0,
            "ms" => 1.0,
            _ => return None,
        };
        total_ms += number * unit_ms;
        rest = &rest[unit_len..];
    }
    TimeDelta::try_milliseconds(total_ms.round() as i64)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn response(status: u16, body: &str) -> Verdict {
        let classifier = Classifier::new(TimeDelta::seconds(60));
        let body = body.as_bytes();
        classifier.classify(
            &Outcome::Response(UpstreamResponse {
                status,
                body,
                ..Default::default()
            }),
            now(),
        )
    }

    #[test]
    fn each_outcome_class_decides_retry_and_key_effect() {
        let cooled = now() + TimeDelta::seconds(60);
        assert_eq!(response(200, ""), Verdict::Success);
        assert_eq!(response(429, ""), Verdict::RateLimited { until: cooled });
        assert_eq!(response(401, ""), Verdict::KeyRejected);
        assert_eq!(response(403, "forbidden"), Verdict::Forbidden);
        assert_eq!(
            response(403, r#"{"error":{"code":"account_deactivated"}}"#),
            Verdict::KeyRejected
        );
        assert_eq!(response(500, ""), Verdict::UpstreamFault);
        assert_eq!(response(503, "rate limit"), Verdict::UpstreamFault);
        assert_eq!(
            response(400, r#"{"error":"bad request"}"#),
            Verdict::ClientError
        );
        assert_eq!(response(404, ""), Verdict::ClientError);
        assert_eq!(response(413, ""), Verdict::ClientError);
        let classifier = Classifier::new(TimeDelta::seconds(60));
        assert_eq!(
            classifier.classify(&Outcome::ConnectFailed, now()),
            Verdict::UpstreamFault
        );
        assert_eq!(
            classifier.classify(&Outcome::HeadTimeout, now()),
            Verdict::UpstreamFault
        );

        assert_eq!(Verdict::KeyRejected.key_effect(), KeyEffect::Fail);
        assert_eq!(Verdict::UpstreamFault.key_effect(), KeyEffect::Unchanged);
        assert_eq!(Verdict::ClientError.key_effect(), KeyEffect::Unchanged);
        assert_eq!(Verdict::Forbidden.key_effect(), KeyEffect::Unchanged);
    }

    #[test]
    fn response_facts_are_read_through_the_header_lookup() {
        let headers = [("x-ratelimit-reset", "20s"), ("retry-after", "7")];
        let lookup = |name: &'static str| {
            headers
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, value)| *value)
        };
        let long_body = vec![b'x'; MARKER_SCAN_BYTES + 10];
        let facts = UpstreamResponse::from_head(429, lookup, &long_body);
        assert_eq!(facts.retry_after, Some("7"));
        assert_eq!(facts.rate_limit_reset, Some("20s"));
        assert_eq!(facts.body.len(), MARKER_SCAN_BYTES);
        assert!(needs_body(403) && !needs_body(200) && !needs_body(302));
    }

    #[test]
    fn body_markers_turn_4xx_into_key_outcomes() {
        let gemini_bad_key = r#"{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT","details":[{"reason":"API_KEY_INVALID"}]}}"#;
        assert_eq!(response(400, gemini_bad_key), Verdict::KeyRejected);
        let quota = r#"{"error":{"status":"RESOURCE_EXHAUSTED"}}"#;
        assert!(matches!(response(400, quota), Verdict::RateLimited { .. }));
        assert!(matches!(
            response(403, "API rate limit exceeded"),
            Verdict::RateLimited { .. }
        ));
        assert_eq!(response(403, "your key was revoked"), Verdict::KeyRejected);
    }

    #[test]
    fn retry_after_in_seconds() {
        assert_eq!(
            parse_retry_after("120", now()),
            Some(now() + TimeDelta::seconds(120))
        );
        assert_eq!(parse_retry_after(" 0 ", now()), Some(now()));
    }

    #[test]
    fn retry_after_as_http_date() {
        let at = parse_retry_after("Thu, 01 Jan 2026 00:02:00 GMT", now()).unwrap();
        assert_eq!(at, now() + TimeDelta::seconds(120));
    }

    #[test]
    fn retry_after_garbage_falls_back_to_the_default_cooldown() {
        assert_eq!(parse_retry_after("soon", now()), None);
        assert_eq!(parse_retry_after("-5", now()), None);
        assert_eq!(parse_retry_after("99999999999999999999", now()), None);
        let classifier = Classifier::new(TimeDelta::seconds(60));
        let until = classifier.cooldown_until(
            &UpstreamResponse {
                status: 429,
                retry_after: Some("soon"),
                ..Default::default()
            },
            now(),
        );
        assert_eq!(until, now() + TimeDelta::seconds(60));
    }

    #[test]
    fn absurd_cooldowns_are_capped_to_the_default() {
        let classifier = Classifier::new(TimeDelta::seconds(60));
        let until = classifier.cooldown_until(
            &UpstreamResponse {
                status: 429,
                retry_after: Some("31536000"),
                ..Default::default()
            },
            now(),
        );
        assert_eq!(until, now() + TimeDelta::seconds(60));
    }

    #[test]
    fn rate_limit_reset_headers_in_every_common_shape() {
        let at = |v| parse_rate_limit_reset(v, now());
        assert_eq!(at("1m30s"), Some(now() + TimeDelta::seconds(90)));
        assert_eq!(at("250ms"), Some(now() + TimeDelta::milliseconds(250)));
        assert_eq!(at("6m0s"), Some(now() + TimeDelta::minutes(6)));
        assert_eq!(at("2.5"), Some(now() + TimeDelta::milliseconds(2500)));
        assert_eq!(
            at("2026-01-01T00:00:30Z"),
            Some(now() + TimeDelta::seconds(30))
        );
        assert_eq!(at("1767225645"), Some(now() + TimeDelta::seconds(45)));
        assert_eq!(at("later"), None);
        assert_eq!(at("5x"), None);
        let classifier = Classifier::new(TimeDelta::seconds(60));
        let until = classifier.cooldown_until(
            &UpstreamResponse {
                status: 429,
                rate_limit_reset: Some("20s"),
                ..Default::default()
            },
            now(),
        );
        assert_eq!(until, now() + TimeDelta::seconds(20));
    }
}
