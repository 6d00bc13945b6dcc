//! Handling of secrets: masking for display, constant-time proxy key checks, and redaction of
//! known secrets and credential-bearing query parameters from any text we emit.

use std::borrow::Cow;

use aho_corasick::{AhoCorasick, MatchKind};
use subtle::ConstantTimeEq;

/// The stars between the visible ends of a masked secret; fixed so the mask leaks no length.
const MASK_STARS: &str = "****";
/// Characters shown at each end of a long secret.
const MAX_VISIBLE_EACH_SIDE: usize = 4;

/// Masks a secret as `prefix****suffix`.
///
/// At most a quarter of the secret is shown at each end, and never more than 4 characters, so
/// short secrets show nothing but the stars.
pub fn mask_secret(secret: &str) -> String {
    let chars = secret.chars().count();
    let visible = (chars / 4).min(MAX_VISIBLE_EACH_SIDE);
    let mut masked = String::with_capacity(visible * 2 + MASK_STARS.len());
    masked.extend(secret.chars().take(visible));
    masked.push_str(MASK_STARS);
    masked.extend(secret.chars().skip(chars - visible));
    masked
}

/// The global proxy keys clients present (`GLOBAL_PROXY_KEYS`).
#[derive(Clone)]
pub struct ProxyKeySet {
    keys: Vec<Box<[u8]>>,
}

impl std::fmt::Debug for ProxyKeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ProxyKeySet({} keys)", self.keys.len())
    }
}

impl ProxyKeySet {
    /// Builds the set, ignoring blank entries.
    pub fn new<I, S>(keys: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let keys = keys
            .into_iter()
            .filter_map(|k| {
                let key = k.as_ref().trim();
                (!key.is_empty()).then(|| Box::from(key.as_bytes()))
            })
            .collect();
        ProxyKeySet { keys }
    }

    /// Whether no key is configured (then every proxy request is refused).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether `presented` is one of the keys. Every configured key is compared in constant time,
    /// without stopping at a match, so timing tells nothing about which key or which prefix
    /// matched.
    pub fn verify(&self, presented: &str) -> bool {
        let presented = presented.as_bytes();
        let mut matched = subtle::Choice::from(0);
        for key in &self.keys {
            matched |= key.as_ref().ct_eq(presented);
        }
        bool::from(matched)
    }

    /// The configured keys, for the redactor.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().filter_map(|k| std::str::from_utf8(k).ok())
    }
}

/// Query parameter names whose values are credentials wherever they appear in a URL.
const CREDENTIAL_PARAMS: &[&str] = &[
    "key",
    "api_key",
    "apikey",
    "api-key",
    "access_token",
    "token",
    "x-goog-api-key",
];

/// Replaces known secrets with their masks, and the values of credential query parameters
/// (`?key=...`, as Gemini uses) with `[REDACTED]`, in any text: error bodies, log lines, URLs.
#[derive(Clone)]
pub struct Redactor {
    secrets: Option<(AhoCorasick, Vec<String>)>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let count = self.secrets.as_ref().map_or(0, |(_, masks)| masks.len());
        write!(f, "Redactor({count} secrets)")
    }
}

impl Default for Redactor {
    fn default() -> Self {
        Redactor::new(std::iter::empty::<&str>())
    }
}

impl Redactor {
    /// A redactor for these secrets (blank ones are ignored).
    pub fn new<I, S>(secrets: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let secrets: Vec<String> = secrets
            .into_iter()
            .map(|s| s.as_ref().trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect();
        let masks = secrets.iter().map(|s| mask_secret(s)).collect();
        // Leftmost-longest so that a secret which contains another is masked whole.
        let matcher = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(&secrets);
        Redactor {
            secrets: matcher
                .ok()
                .filter(|_| !secrets.is_empty())
                .map(|m| (m, masks)),
        }
    }

    /// The text with every known secret masked and every credential query value removed.
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let masked = match &self.secrets {
            Some((matcher, masks)) if matcher.is_match(text) => {
                Cow::Owned(matcher.replace_all(text, masks))
            }
            _ => Cow::Borrowed(text),
        };
        match redact_credential_params(&masked) {
            Cow::Borrowed(_) => masked,
            Cow::Owned(redacted) => Cow::Owned(redacted),
        }
    }
}

/// Masks known secrets in relayed response bodies (bytes, not necessarily UTF-8): each secret
/// as written, JSON-escaped (`\"`, `\\`, `\/`) and percent-encoded, since an upstream may echo
/// the key it got in a JSON message, a URL or a header dump. Each occurrence becomes the mask
/// the admin API shows; a body without a secret is returned as it is, byte for byte.
#[derive(Clone)]
pub struct BodyRedactor {
    secrets: Option<(AhoCorasick, Vec<String>)>,
}

impl std::fmt::Debug for BodyRedactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let count = self.secrets.as_ref().map_or(0, |(_, masks)| masks.len());
        write!(f, "BodyRedactor({count} forms)")
    }
}

impl BodyRedactor {
    /// A redactor for these secrets and their encoded forms (blank ones are ignored).
    pub fn new<I, S>(secrets: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut forms: Vec<String> = Vec::new();
        let mut masks: Vec<String> = Vec::new();
        for secret in secrets {
            let secret = secret.as_ref().trim();
            if secret.is_empty() {
                continue;
            }
            let mask = mask_secret(secret);
            for form in encoded_forms(secret) {
                if !forms.contains(&form) {
                    forms.push(form);
                    masks.push(mask.clone());
                }
            }
        }
        let matcher = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(&forms);
        BodyRedactor {
            secrets: matcher
                .ok()
                .filter(|_| !forms.is_empty())
                .map(|m| (m, masks)),
        }
    }

    /// The body with every form of every secret masked.
    pub fn redact<'a>(&self, body: &'a [u8]) -> Cow<'a, [u8]> {
        match &self.secrets {
            Some((matcher, masks)) if matcher.is_match(body) => {
                Cow::Owned(matcher.replace_all_bytes(body, masks))
            }
            _ => Cow::Borrowed(body),
        }
    }
}

/// A secret as written, JSON-escaped both ways a serializer may escape `/`, and
/// percent-encoded as a URL query value.
fn encoded_forms(secret: &str) -> Vec<String> {
    // Key values are printable ASCII, where a JSON string escapes only `"` and `\`.
    let json = secret.replace('\\', "\\\\").replace('"', "\\\"");
    let json_slashes = json.replace('/', "\\/");
    let percent: String = url::form_urlencoded::byte_serialize(secret.as_bytes()).collect();
    vec![secret.to_owned(), json, json_slashes, percent]
}

/// Removes the values of credential query parameters (`?key=`, `&api_key=`, ...) from `text`.
pub fn redact_credential_params(text: &str) -> Cow<'_, str> {
    let bytes = text.as_bytes();
    let mut out: Option<String> = None;
    let mut copied_up_to = 0;
    let mut i = 0;
    while i < bytes.len() {
        if matches!(bytes[i], b'?' | b'&')
            && let Some(value_start) = credential_value_start(text, i + 1)
        {
            let value_end = text[value_start..]
                .find(|c: char| {
                    matches!(
                        c,
                        '&' | '#' | '"' | '\'' | '<' | '>' | ')' | ',' | ';' | '\\'
                    ) || c.is_whitespace()
                })
                .map_or(text.len(), |offset| value_start + offset);
            if value_end > value_start && &text[value_start..value_end] != "[REDACTED]" {
                let buffer = out.get_or_insert_with(|| String::with_capacity(text.len()));
                buffer.push_str(&text[copied_up_to..value_start]);
                buffer.push_str("[REDACTED]");
                copied_up_to = value_end;
            }
            i = value_end.max(i + 1);
            continue;
        }
        i += 1;
    }
    match out {
        None => Cow::Borrowed(text),
        Some(mut buffer) => {
            buffer.push_str(&text[copied_up_to..]);
            Cow::Owned(buffer)
        }
    }
}

/// If a credential parameter name followed by `=` starts at `at`, where its value starts.
fn credential_value_start(text: &str, at: usize) -> Option<usize> {
    let rest = text.get(at..)?;
    CREDENTIAL_PARAMS.iter().find_map(|name| {
        let candidate = rest.get(..name.len())?;
        (candidate.eq_ignore_ascii_case(name) && rest[name.len()..].starts_with('='))
            .then_some(at + name.len() + 1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::unwrap_used)]
    fn relayed_bodies_lose_every_form_of_an_echoed_key() {
        let key = "sk-live/abc+def\"ghi12345";
        let redactor = BodyRedactor::new([key, "proxy-key-0123456789"]);
        let mask = mask_secret(key);
        let json_echo = format!(
            r#"{{"error":{{"message":"Incorrect API key provided: {}"}}}}"#,
            serde_json::to_string(key).unwrap().trim_matches('"')
        );
        let slash_echo = json_echo.replace('/', "\\/");
        let url_echo = format!(
            "GET https://g.example/v1?key={}&alt=sse",
            url::form_urlencoded::byte_serialize(key.as_bytes()).collect::<String>()
        );
        let header_echo = format!("x-api-key: {key}\r\nx-proxy: proxy-key-0123456789");
        for body in [json_echo, slash_echo, url_echo, header_echo] {
            let redacted = redactor.redact(body.as_bytes()).into_owned();
            let text = String::from_utf8(redacted).unwrap();
            assert!(!text.contains("abc+def"), "{text}");
            assert!(!text.contains("abc%2Bdef"), "{text}");
            assert!(!text.contains("0123456789"), "{text}");
            assert!(
                text.contains(&mask) || text.contains("prox****6789"),
                "{text}"
            );
        }
    }

    #[test]
    fn bodies_without_a_key_are_kept_byte_for_byte() {
        let redactor = BodyRedactor::new(["sk-live-abcdefgh12345678"]);
        let body: &[u8] = b"{\"error\":\"rate limited\"}\xff\xfe not utf-8";
        assert!(matches!(redactor.redact(body), Cow::Borrowed(b) if b == body));
        assert!(matches!(
            BodyRedactor::new(["", " "]).redact(body),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn masking_shows_at_most_a_quarter_and_four_characters_each_side() {
        assert_eq!(mask_secret(""), "****");
        assert_eq!(mask_secret("abc"), "****");
        assert_eq!(mask_secret("abcdefghi"), "ab****hi");
        let forty = "sk-proj-0123456789abcdefghijklmnopqrstuv";
        assert_eq!(forty.len(), 40);
        assert_eq!(mask_secret(forty), "sk-p****stuv");
    }

    #[test]
    fn masking_handles_multibyte_characters() {
        assert_eq!(mask_secret("ключ-секрет"), "кл****ет");
    }

    #[test]
    fn proxy_keys_verify_any_configured_key_only() {
        let keys = ProxyKeySet::new(["alpha-key", " beta-key ", ""]);
        assert!(keys.verify("alpha-key"));
        assert!(keys.verify("beta-key"));
        assert!(!keys.verify("alpha"));
        assert!(!keys.verify("alpha-key-longer"));
        assert!(!keys.verify(""));
        assert!(!ProxyKeySet::new(Vec::<String>::new()).verify(""));
    }

    #[test]
    fn redaction_masks_known_secrets() {
        let redactor = Redactor::new(["sk-secret-value-1234", "short"]);
        let text = "upstream said: bad key sk-secret-value-1234 and short";
        let redacted = redactor.redact(text);
        assert!(!redacted.contains("sk-secret-value-1234"), "{redacted}");
        assert!(redacted.contains("sk-s****1234"), "{redacted}");
        assert!(!redacted.contains("short"), "{redacted}");
    }

    #[test]
    fn redaction_removes_a_key_inside_a_url_query() {
        let redactor = Redactor::default();
        let text = "error sending request for url (https://g.example/v1beta/models?alt=sse&key=AIzaSyUNKNOWN-123): connection refused";
        let redacted = redactor.redact(text);
        assert_eq!(
            redacted,
            "error sending request for url (https://g.example/v1beta/models?alt=sse&key=[REDACTED]): connection refused"
        );
        assert_eq!(
            redact_credential_params("/x?API_KEY=abc&monkey=1&token=t#f"),
            "/x?API_KEY=[REDACTED]&monkey=1&token=[REDACTED]#f"
        );
    }

    #[test]
    fn redaction_leaves_clean_text_borrowed() {
        let redactor = Redactor::new(["secret"]);
        assert!(matches!(
            redactor.redact("nothing here?x=1"),
            Cow::Borrowed(_)
        ));
    }
}
