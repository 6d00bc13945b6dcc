//! Proxy configs: the validated value types they are built from, and the kind enum that makes a
//! GENERIC config without a method or target, or an LLM config without a base URL, unrepresentable.

use std::{fmt, str::FromStr, sync::Arc};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{key::ApiKey, wire_enum::wire_enum};
use crate::failover::ConfigPolicy;
use crate::selection::SelectionCache;

/// Database identifier of a proxy config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ProxyConfigId(pub i64);

impl fmt::Display for ProxyConfigId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Longest accepted config name, in characters.
pub const MAX_NAME_CHARS: usize = 100;
/// Longest accepted slug, in characters.
pub const MAX_SLUG_CHARS: usize = 100;

/// A config's display name: trimmed, 1 to 100 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct ConfigName(Box<str>);

impl ConfigName {
    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ConfigName {
    type Err = &'static str;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let name = input.trim();
        if name.is_empty() {
            return Err("must not be empty");
        }
        if name.chars().count() > MAX_NAME_CHARS {
            return Err("must be at most 100 characters");
        }
        if name.chars().any(char::is_control) {
            return Err("must not contain control characters");
        }
        Ok(ConfigName(name.into()))
    }
}

impl fmt::Display for ConfigName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The URL-safe name of a config in proxy paths: `[a-z0-9][a-z0-9._-]{0,99}`.
///
/// Input is accepted in any case and stored in lower case, which makes uniqueness and the
/// proxy routes' matching case-insensitive: a client of the original backend that calls
/// `/llm/My.Api/...` reaches the config it created as `My.Api`. Dots are allowed because the
/// original stored them; a slug cannot start with one, so it is never a dot segment.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Slug(Box<str>);

impl Slug {
    /// The slug as text (always lower case).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Lets maps keyed by slug be searched with the text of a request path, without building a
/// `Slug` (the derived `Hash` of the inner `Box<str>` is that of the `str`).
impl std::borrow::Borrow<str> for Slug {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl FromStr for Slug {
    type Err = &'static str;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let slug = input.trim().to_ascii_lowercase();
        let mut chars = slug.chars();
        match chars.next() {
            None => return Err("must not be empty"),
            Some(first) if !(first.is_ascii_lowercase() || first.is_ascii_digit()) => {
                return Err("must start with a letter or a digit");
            }
            Some(_) => {}
        }
        if chars.any(|c| {
            !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-' | '.'))
        }) {
            return Err("may contain only letters, digits, '_', '-' and '.'");
        }
        if slug.len() > MAX_SLUG_CHARS {
            return Err("must be at most 100 characters");
        }
        Ok(Slug(slug.into()))
    }
}

impl<'de> Deserialize<'de> for Slug {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Slug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An absolute `http` or `https` URL with a host.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HttpUrl(url::Url);

impl HttpUrl {
    /// The URL as text, as normalised by the URL parser.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The parsed URL.
    pub fn url(&self) -> &url::Url {
        &self.0
    }
}

impl FromStr for HttpUrl {
    type Err = &'static str;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        // The URL parser silently drops tabs and line breaks; a URL that had them is refused
        // rather than stored as something else than the admin typed.
        if input.trim().chars().any(char::is_control) {
            return Err("must not contain control characters such as CR, LF or tab");
        }
        let url = url::Url::parse(input.trim()).map_err(|_| "must be an absolute http(s) URL")?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err("must use the http or https scheme");
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err("must name a host");
        }
        if url.fragment().is_some() {
            return Err("must not contain a fragment");
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("must not embed credentials; use the key pool instead");
        }
        Ok(HttpUrl(url))
    }
}

impl fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for HttpUrl {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

wire_enum! {
    /// Whether a config proxies any REST API or an LLM API.
    pub enum ConfigType {
        /// Any REST API, one method and one target URL.
        Generic => "GENERIC",
        /// An LLM API in one of the [`ApiFormat`]s.
        Llm => "LLM",
    }
}

wire_enum! {
    /// The wire format an LLM upstream speaks.
    pub enum ApiFormat {
        /// OpenAI and every OpenAI-compatible API.
        OpenaiCompatible => "openai_compatible",
        /// Anthropic's Messages API.
        AnthropicNative => "anthropic_native",
        /// Google's Gemini API.
        GeminiNative => "gemini_native",
    }
}

wire_enum! {
    /// The wire format an LLM config's clients speak; `none` means the upstream's own.
    pub enum OutputFormat {
        /// Same as the upstream's [`ApiFormat`].
        None => "none",
        /// OpenAI Chat Completions.
        Openai => "openai",
        /// Anthropic Messages.
        Anthropic => "anthropic",
        /// Gemini generateContent.
        Gemini => "gemini",
        /// OpenAI Responses.
        OpenaiResponses => "openai_responses",
    }
}

wire_enum! {
    /// Where the upstream key is put in the outgoing request.
    pub enum KeyLocation {
        /// In a request header.
        Header => "header",
        /// In a query parameter.
        Query => "query",
    }
}

wire_enum! {
    /// The HTTP method a GENERIC config accepts.
    pub enum HttpMethod {
        /// GET.
        Get => "GET",
        /// POST.
        Post => "POST",
        /// PUT.
        Put => "PUT",
        /// PATCH.
        Patch => "PATCH",
        /// DELETE.
        Delete => "DELETE",
        /// HEAD.
        Head => "HEAD",
        /// OPTIONS.
        Options => "OPTIONS",
    }
}

/// Longest accepted key prefix, in characters.
pub const MAX_KEY_PREFIX_CHARS: usize = 64;

/// Where and under which name the upstream key is injected, and the text sent before it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyPlacement {
    /// Header or query parameter.
    pub location: KeyLocation,
    /// The header or parameter name, validated for its location.
    pub name: Box<str>,
    /// Sent right before the key (`Bearer ` gives `Authorization: Bearer <key>`); empty sends
    /// the key alone.
    pub prefix: Box<str>,
}

impl KeyPlacement {
    /// Checks that `name` is usable at `location`: an HTTP token for a header, a non-empty name
    /// without URL delimiters for a query parameter.
    ///
    /// # Errors
    /// A short reason, phrased for the `api_key_name` field.
    pub fn new(location: KeyLocation, name: &str) -> Result<Self, &'static str> {
        let name = name.trim();
        if name.is_empty() {
            return Err("must not be empty");
        }
        if name.len() > 256 {
            return Err("must be at most 256 characters");
        }
        let valid = match location {
            KeyLocation::Header => name.bytes().all(is_header_token_byte),
            KeyLocation::Query => name.bytes().all(|b| {
                b.is_ascii_graphic() && !matches!(b, b'&' | b'=' | b'#' | b'?' | b'+' | b'%')
            }),
        };
        if !valid {
            return Err(match location {
                KeyLocation::Header => "is not a valid HTTP header name",
                KeyLocation::Query => "is not a valid query parameter name",
            });
        }
        if location == KeyLocation::Header && is_managed_header(name) {
            return Err(
                "names a header the proxy manages itself (Host, Content-Length or a hop-by-hop header)",
            );
        }
        Ok(KeyPlacement {
            location,
            name: name.into(),
            prefix: "".into(),
        })
    }

    /// The same placement with `prefix` sent before the key, kept exactly as given (a trailing
    /// space is part of it: `Bearer `).
    ///
    /// # Errors
    /// A short reason, phrased for the `api_key_prefix` field: longer than 64 characters, or
    /// holding anything but printable ASCII and spaces (a header value cannot carry the rest).
    pub fn with_prefix(mut self, prefix: &str) -> Result<Self, &'static str> {
        Self::check_prefix(prefix)?;
        self.prefix = prefix.into();
        Ok(self)
    }

    /// Checks a prefix on its own: at most 64 characters, printable ASCII and spaces only.
    ///
    /// # Errors
    /// A short reason, phrased for the `api_key_prefix` field.
    pub fn check_prefix(prefix: &str) -> Result<(), &'static str> {
        if prefix.len() > MAX_KEY_PREFIX_CHARS {
            return Err("must be at most 64 characters");
        }
        if !prefix.bytes().all(|b| b == b' ' || b.is_ascii_graphic()) {
            return Err("may contain only printable ASCII characters and spaces");
        }
        Ok(())
    }

    /// The prefix a config gets when its admin sets none: `Bearer ` for an LLM config whose
    /// key header is `Authorization` (as the original backend sent it, and as every
    /// `Authorization`-keyed LLM API expects), nothing otherwise.
    pub fn default_prefix(
        config_type: ConfigType,
        location: KeyLocation,
        name: &str,
    ) -> &'static str {
        let bearer_header =
            location == KeyLocation::Header && name.trim().eq_ignore_ascii_case("authorization");
        if config_type == ConfigType::Llm && bearer_header {
            "Bearer "
        } else {
            ""
        }
    }
}

/// Headers the proxy sets or drops itself: a key placed there would replace the upstream's
/// `Host`, corrupt the message framing, or be dropped on the way.
fn is_managed_header(name: &str) -> bool {
    [
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
        "expect",
    ]
    .iter()
    .any(|managed| managed.eq_ignore_ascii_case(name))
}

/// RFC 9110 `tchar`.
fn is_header_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A GENERIC config's target: exactly one method, one URL and a key placement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenericTarget {
    /// The only method clients may use.
    pub method: HttpMethod,
    /// The URL the proxied path is appended to.
    pub target_url: HttpUrl,
    /// Where the upstream key goes.
    pub key_placement: KeyPlacement,
}

/// An LLM config's target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LlmTarget {
    /// The base URL the action path is appended to.
    pub target_base_url: HttpUrl,
    /// What the upstream speaks.
    pub api_format: ApiFormat,
    /// What the clients speak.
    pub output_format: OutputFormat,
    /// Overrides the upstream format's own way of sending the key.
    pub key_placement: Option<KeyPlacement>,
}

impl LlmTarget {
    /// The format the clients speak, with `none` resolved to the upstream's format.
    pub fn client_format(&self) -> OutputFormat {
        match (self.output_format, self.api_format) {
            (OutputFormat::None, ApiFormat::OpenaiCompatible) => OutputFormat::Openai,
            (OutputFormat::None, ApiFormat::AnthropicNative) => OutputFormat::Anthropic,
            (OutputFormat::None, ApiFormat::GeminiNative) => OutputFormat::Gemini,
            (explicit, _) => explicit,
        }
    }
}

/// What a config proxies to; the variant carries exactly the fields its type needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigKind {
    /// Any REST API.
    Generic(GenericTarget),
    /// An LLM API.
    Llm(LlmTarget),
}

impl ConfigKind {
    /// The wire type of this kind.
    pub fn config_type(&self) -> ConfigType {
        match self {
            ConfigKind::Generic(_) => ConfigType::Generic,
            ConfigKind::Llm(_) => ConfigType::Llm,
        }
    }

    /// The key placement, when one is set.
    pub fn key_placement(&self) -> Option<&KeyPlacement> {
        match self {
            ConfigKind::Generic(target) => Some(&target.key_placement),
            ConfigKind::Llm(target) => target.key_placement.as_ref(),
        }
    }
}

/// A validated config as the admin wrote it, before the store gives it an id and timestamps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyConfigSpec {
    /// Unique display name.
    pub name: ConfigName,
    /// Unique path name.
    pub slug: Slug,
    /// Whether the proxy routes accept requests for it.
    pub is_active: bool,
    /// Type and target.
    pub kind: ConfigKind,
    /// Failover overrides (SPEC §8); unset fields follow the environment.
    pub policy: ConfigPolicy,
}

/// A stored proxy config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyConfig {
    /// Store identifier.
    pub id: ProxyConfigId,
    /// Unique display name.
    pub name: ConfigName,
    /// Unique path name.
    pub slug: Slug,
    /// Whether the proxy routes accept requests for it.
    pub is_active: bool,
    /// Type and target.
    pub kind: ConfigKind,
    /// Failover overrides (SPEC §8); unset fields follow the environment.
    pub policy: ConfigPolicy,
    /// Set by the store on insert.
    pub created_at: DateTime<Utc>,
    /// Set by the store on every write.
    pub updated_at: DateTime<Utc>,
}

impl ProxyConfig {
    /// Joins a stored id and timestamps to a spec.
    pub fn from_spec(
        id: ProxyConfigId,
        spec: ProxyConfigSpec,
        created_at: DateTime<Utc>,
        updated_at: DateTime<Utc>,
    ) -> Self {
        let ProxyConfigSpec {
            name,
            slug,
            is_active,
            kind,
            policy,
        } = spec;
        ProxyConfig {
            id,
            name,
            slug,
            is_active,
            kind,
            policy,
            created_at,
            updated_at,
        }
    }

    /// The spec part, for a replace that keeps everything.
    pub fn spec(&self) -> ProxyConfigSpec {
        ProxyConfigSpec {
            name: self.name.clone(),
            slug: self.slug.clone(),
            is_active: self.is_active,
            kind: self.kind.clone(),
            policy: self.policy,
        }
    }
}

/// An active config with every one of its keys (enabled or not), as the proxy hot path reads it
/// from the in-process cache.
///
/// A snapshot also carries what [`crate::Rotator::plan`] learnt about its keys (the enabled ones,
/// and which of those were usable at some health version), so that a request over a large pool
/// costs the same as one over a small pool. That knowledge lives and dies with the snapshot:
/// an admin write replaces the snapshot, and the keys cannot change under it (they are read-only
/// once built). Equality, clones and `Debug` look at the config and keys only.
pub struct ConfigSnapshot {
    /// The config.
    pub config: ProxyConfig,
    keys: Vec<Arc<ApiKey>>,
    selection: SelectionCache,
}

impl ConfigSnapshot {
    /// A snapshot of `config` with `keys`, ordered by id.
    pub fn new(config: ProxyConfig, keys: Vec<Arc<ApiKey>>) -> Self {
        ConfigSnapshot {
            config,
            keys,
            selection: SelectionCache::default(),
        }
    }

    /// Its keys, ordered by id.
    pub fn keys(&self) -> &[Arc<ApiKey>] {
        &self.keys
    }

    /// The config and its keys, for building a changed snapshot.
    pub fn into_parts(self) -> (ProxyConfig, Vec<Arc<ApiKey>>) {
        (self.config, self.keys)
    }

    pub(crate) fn selection(&self) -> &SelectionCache {
        &self.selection
    }
}

impl Clone for ConfigSnapshot {
    /// The config and keys; the clone learns its usable keys afresh.
    fn clone(&self) -> Self {
        ConfigSnapshot::new(self.config.clone(), self.keys.clone())
    }
}

impl PartialEq for ConfigSnapshot {
    fn eq(&self, other: &Self) -> bool {
        self.config == other.config && self.keys == other.keys
    }
}

impl fmt::Debug for ConfigSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigSnapshot")
            .field("config", &self.config)
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn slug_is_lowercased_and_checked() {
        assert_eq!("My-API_1".parse::<Slug>().unwrap().as_str(), "my-api_1");
        assert!("-leading".parse::<Slug>().is_err());
        assert!("".parse::<Slug>().is_err());
        assert!("has space".parse::<Slug>().is_err());
        assert!("a".repeat(100).parse::<Slug>().is_ok());
        assert!("a".repeat(101).parse::<Slug>().is_err());
    }

    #[test]
    fn slug_accepts_the_dots_and_upper_case_the_original_stored() {
        assert_eq!("My.API-v1".parse::<Slug>().unwrap().as_str(), "my.api-v1");
        assert!(".hidden".parse::<Slug>().is_err());
        assert!("a/b".parse::<Slug>().is_err());
    }

    #[test]
    fn key_prefix_is_kept_exactly_and_checked() {
        let placement = KeyPlacement::new(KeyLocation::Header, "Authorization")
            .unwrap()
            .with_prefix("token ")
            .unwrap();
        assert_eq!(&*placement.prefix, "token ");
        let plain = KeyPlacement::new(KeyLocation::Header, "X-Key").unwrap();
        assert_eq!(&*plain.prefix, "");
        assert!(plain.clone().with_prefix("Bearer\r\n").is_err());
        assert!(plain.with_prefix(&"x".repeat(65)).is_err());
    }

    #[test]
    fn only_llm_authorization_headers_default_to_bearer() {
        let llm =
            KeyPlacement::default_prefix(ConfigType::Llm, KeyLocation::Header, "authorization");
        assert_eq!(llm, "Bearer ");
        let generic =
            KeyPlacement::default_prefix(ConfigType::Generic, KeyLocation::Header, "Authorization");
        assert_eq!(generic, "");
        let other = KeyPlacement::default_prefix(ConfigType::Llm, KeyLocation::Header, "api-key");
        assert_eq!(other, "");
        let query =
            KeyPlacement::default_prefix(ConfigType::Llm, KeyLocation::Query, "authorization");
        assert_eq!(query, "");
    }

    #[test]
    fn wire_enums_accept_any_case_and_print_canonical_names() {
        assert_eq!(
            "generic".parse::<ConfigType>().unwrap(),
            ConfigType::Generic
        );
        assert_eq!(" Llm ".parse::<ConfigType>().unwrap().to_string(), "LLM");
        assert_eq!("post".parse::<HttpMethod>().unwrap(), HttpMethod::Post);
        assert_eq!(
            "GEMINI_NATIVE".parse::<ApiFormat>().unwrap(),
            ApiFormat::GeminiNative
        );
        let err = "soap".parse::<KeyLocation>().unwrap_err();
        assert_eq!(err.to_string(), "must be one of header, query");
        let json = serde_json::to_string(&OutputFormat::OpenaiResponses).unwrap();
        assert_eq!(json, "\"openai_responses\"");
        let parsed: ConfigType = serde_json::from_str("\"gEnErIc\"").unwrap();
        assert_eq!(parsed, ConfigType::Generic);
    }

    #[test]
    fn http_url_rejects_relative_other_schemes_and_credentials() {
        assert!("https://api.example.com/v1".parse::<HttpUrl>().is_ok());
        assert!("/relative".parse::<HttpUrl>().is_err());
        assert!("ftp://example.com".parse::<HttpUrl>().is_err());
        assert!("https://user:pw@example.com".parse::<HttpUrl>().is_err());
    }

    #[test]
    fn http_url_refuses_line_breaks_and_tabs_instead_of_dropping_them() {
        for url in [
            "https://api.example.com/v1\r\nX-Injected: 1",
            "https://api.exa\tmple.com",
            "https://api.example.com/a\nb",
        ] {
            assert!(url.parse::<HttpUrl>().is_err(), "{url:?}");
        }
        assert!(" https://api.example.com/v1 \n".parse::<HttpUrl>().is_ok());
    }

    #[test]
    fn a_key_cannot_take_the_place_of_a_header_the_proxy_manages() {
        for name in [
            "Host",
            "content-length",
            "Connection",
            "Transfer-Encoding",
            "TE",
        ] {
            assert!(
                KeyPlacement::new(KeyLocation::Header, name).is_err(),
                "{name}"
            );
        }
        assert!(KeyPlacement::new(KeyLocation::Query, "host").is_ok());
        assert!(KeyPlacement::new(KeyLocation::Header, "Authorization").is_ok());
    }

    #[test]
    fn key_placement_checks_names_for_their_location() {
        assert!(KeyPlacement::new(KeyLocation::Header, "X-Api-Key").is_ok());
        assert!(KeyPlacement::new(KeyLocation::Header, "bad header").is_err());
        assert!(KeyPlacement::new(KeyLocation::Query, "key").is_ok());
        assert!(KeyPlacement::new(KeyLocation::Query, "a&b").is_err());
        assert!(KeyPlacement::new(KeyLocation::Query, " ").is_err());
    }

    #[test]
    fn client_format_none_means_the_upstream_format() {
        let target = LlmTarget {
            target_base_url: "https://x.example".parse().unwrap(),
            api_format: ApiFormat::AnthropicNative,
            output_format: OutputFormat::None,
            key_placement: None,
        };
        assert_eq!(target.client_format(), OutputFormat::Anthropic);
    }
}
