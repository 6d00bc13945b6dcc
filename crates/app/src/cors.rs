//! Cross-origin access (SPEC §11): which browser origins may call the proxy routes
//! (`CORS_ALLOWED_ORIGINS`, `*` by default, as the original backend allowed) and the admin API
//! (`CORS_ADMIN_ALLOWED_ORIGINS`, none by default: the console is served from the same origin).
//!
//! `actix-cors` does the protocol work: it answers a preflight (`OPTIONS` with
//! `Access-Control-Request-Method`) itself, before the proxy's key check, so a browser chat
//! client can ask first and then send its proxy key; actual responses get
//! `Access-Control-Allow-Origin` for an allowed origin and `Vary: Origin`.

use actix_cors::Cors;

/// Origins a set of routes accepts cross-origin requests from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedOrigins {
    /// Same-origin only: no CORS headers, preflights are not answered.
    None,
    /// Any origin (`*`).
    Any,
    /// These origins exactly (`scheme://host[:port]`).
    List(Vec<String>),
}

impl AllowedOrigins {
    /// Reads a comma-separated list: blank is none, `*` is any origin.
    ///
    /// # Errors
    /// The first entry that is not an origin (`https://app.example.com`, no path), as a phrase.
    pub fn parse(text: &str) -> Result<Self, String> {
        let entries: Vec<&str> = text
            .split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .collect();
        if entries.is_empty() {
            return Ok(AllowedOrigins::None);
        }
        if entries.contains(&"*") {
            return Ok(AllowedOrigins::Any);
        }
        let mut origins = Vec::with_capacity(entries.len());
        for entry in entries {
            let origin = url::Url::parse(entry)
                .ok()
                .filter(|url| matches!(url.scheme(), "http" | "https"))
                .filter(|url| url.path() == "/" && url.query().is_none())
                .map(|url| url.origin().ascii_serialization())
                .filter(|origin| entry.trim_end_matches('/') == origin)
                .ok_or_else(|| {
                    format!("must list origins like https://chat.example.com or *, got {entry:?}")
                })?;
            origins.push(origin);
        }
        Ok(AllowedOrigins::List(origins))
    }

    /// Whether any cross-origin request is allowed.
    pub fn is_enabled(&self) -> bool {
        !matches!(self, AllowedOrigins::None)
    }

    /// The `actix-cors` middleware for these origins: any method and request header (the
    /// proxies forward what the upstream API takes), every response header readable by the
    /// page (rate-limit and request-id headers), preflights cached for an hour. For
    /// [`AllowedOrigins::None`] it allows nothing; mount it only when [`Self::is_enabled`].
    pub fn middleware(&self) -> Cors {
        let cors = Cors::default()
            .allow_any_method()
            .allow_any_header()
            .expose_any_header()
            .max_age(3600);
        match self {
            AllowedOrigins::None => cors,
            AllowedOrigins::Any => cors.allow_any_origin().send_wildcard(),
            AllowedOrigins::List(origins) => origins
                .iter()
                .fold(cors, |cors, origin| cors.allowed_origin(origin)),
        }
    }
}

/// The cross-origin rules of the whole server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorsPolicy {
    /// `/proxy/...` and `/llm/...`.
    pub proxy: AllowedOrigins,
    /// `/admin/...` (and its `/api/admin` alias).
    pub admin: AllowedOrigins,
}

impl Default for CorsPolicy {
    /// The defaults of SPEC §11: any origin on the proxies, same-origin on the admin API.
    fn default() -> Self {
        CorsPolicy {
            proxy: AllowedOrigins::Any,
            admin: AllowedOrigins::None,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn origins_parse_as_none_any_or_a_list() {
        assert_eq!(AllowedOrigins::parse(" ").unwrap(), AllowedOrigins::None);
        assert_eq!(AllowedOrigins::parse("*").unwrap(), AllowedOrigins::Any);
        assert_eq!(
            AllowedOrigins::parse("https://chat.example.com, http://localhost:3000/").unwrap(),
            AllowedOrigins::List(vec![
                "https://chat.example.com".into(),
                "http://localhost:3000".into()
            ])
        );
    }

    #[test]
    fn entries_that_are_not_origins_are_refused() {
        for bad in [
            "chat.example.com",
            "https://chat.example.com/app",
            "ftp://x.example",
        ] {
            assert!(AllowedOrigins::parse(bad).is_err(), "{bad}");
        }
    }
}
