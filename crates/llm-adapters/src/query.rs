//! Raw query strings, handled as bytes so that every pair we do not touch is kept byte for byte
//! (repeated parameters included): looking a parameter up, removing one (the Gemini client's
//! `key`), appending one with a percent-encoded value (a key placed in the query), and the
//! form-style percent decoding and encoding these need.

use std::borrow::Cow;

/// The `key` parameter the Gemini SDKs and REST clients use for credentials.
pub const GEMINI_KEY_PARAM: &str = "key";

/// The decoded value of the first `name` parameter in a raw query string (without `?`).
///
/// Names and values are form-decoded (`+` is a space, `%XX` a byte, invalid UTF-8 replaced);
/// a pair without `=` has the empty value. Borrows when the value needs no decoding.
pub fn query_param<'q>(query: &'q str, name: &str) -> Option<Cow<'q, str>> {
    pairs(query).find_map(|pair| {
        let (raw_name, raw_value) = split_pair(pair);
        name_matches(raw_name, name).then(|| percent_decode(raw_value))
    })
}

/// Removes every `name` parameter from a raw query string, keeping every other pair (and the
/// order, the encoding and the repeated parameters) byte for byte. Borrows when nothing matched.
pub fn remove_query_param<'q>(query: &'q str, name: &str) -> Cow<'q, str> {
    if !pairs(query).any(|pair| name_matches(split_pair(pair).0, name)) {
        return Cow::Borrowed(query);
    }
    let mut out = String::with_capacity(query.len());
    for pair in pairs(query).filter(|pair| !name_matches(split_pair(pair).0, name)) {
        if !out.is_empty() {
            out.push('&');
        }
        out.push_str(pair);
    }
    Cow::Owned(out)
}

/// Removes the Gemini credential parameter `key` (every occurrence), keeping all other pairs
/// byte for byte.
pub fn strip_key_param(query: &str) -> Cow<'_, str> {
    remove_query_param(query, GEMINI_KEY_PARAM)
}

/// Appends `name=value` to a raw query string, percent-encoding the value (every byte except
/// the RFC 3986 unreserved characters). `name` is written as is: the domain validates query
/// parameter names so they need no encoding.
pub fn append_query_param(query: &str, name: &str, value: &str) -> String {
    let mut out = String::with_capacity(query.len() + name.len() + value.len() * 3 + 2);
    out.push_str(query);
    if !query.is_empty() {
        out.push('&');
    }
    out.push_str(name);
    out.push('=');
    percent_encode_into(&mut out, value);
    out
}

/// Appends `value` to `out` with every byte outside `A-Z a-z 0-9 - . _ ~` written as `%XX`.
pub fn percent_encode_into(out: &mut String, value: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0x0f)]));
        }
    }
}

/// Form-decodes a raw query component: `+` becomes a space and `%XX` the byte it names;
/// malformed escapes are kept literally and invalid UTF-8 is replaced. Borrows when the input
/// contains neither `+` nor `%`.
pub fn percent_decode(raw: &str) -> Cow<'_, str> {
    if !raw.bytes().any(|b| b == b'+' || b == b'%') {
        return Cow::Borrowed(raw);
    }
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        match byte {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => match (
                bytes.get(i + 1).copied().and_then(hex_value),
                bytes.get(i + 2).copied().and_then(hex_value),
            ) {
                (Some(high), Some(low)) => {
                    out.push(high << 4 | low);
                    i += 3;
                }
                _ => {
                    out.push(b'%');
                    i += 1;
                }
            },
            other => {
                out.push(other);
                i += 1;
            }
        }
    }
    match String::from_utf8(out) {
        Ok(text) => Cow::Owned(text),
        Err(err) => Cow::Owned(String::from_utf8_lossy(err.as_bytes()).into_owned()),
    }
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// The `&`-separated pairs of a raw query, empty ones included (they are kept on removal).
fn pairs(query: &str) -> impl Iterator<Item = &str> {
    query.split('&').filter(|_| !query.is_empty())
}

/// `(name, value)` of a raw pair; the value is empty when there is no `=`.
fn split_pair(pair: &str) -> (&str, &str) {
    pair.split_once('=').unwrap_or((pair, ""))
}

/// Whether a raw (possibly encoded) parameter name decodes to `name`.
fn name_matches(raw_name: &str, name: &str) -> bool {
    raw_name == name || (raw_name.contains(['%', '+']) && percent_decode(raw_name) == name)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn removing_key_keeps_other_pairs_byte_for_byte() {
        let query = "alt=sse&key=proxy-123&b=x%20y&b=z+w&empty=&flag";
        assert_eq!(strip_key_param(query), "alt=sse&b=x%20y&b=z+w&empty=&flag");
    }

    #[test]
    fn removing_key_removes_every_occurrence_and_encoded_names() {
        assert_eq!(strip_key_param("key=a&x=1&key=b&k%65y=c"), "x=1");
    }

    #[test]
    fn removing_the_only_pair_leaves_an_empty_query() {
        assert_eq!(strip_key_param("key=abc"), "");
        assert_eq!(strip_key_param("key"), "");
    }

    #[test]
    fn removing_an_absent_param_borrows() {
        let query = "alt=sse&keyring=1&monkey=2";
        assert!(matches!(strip_key_param(query), Cow::Borrowed(q) if q == query));
        assert!(matches!(strip_key_param(""), Cow::Borrowed("")));
    }

    #[test]
    fn empty_segments_are_kept_when_removing() {
        assert_eq!(strip_key_param("a=1&&key=2&b=3"), "a=1&&b=3");
    }

    #[test]
    fn query_param_decodes_the_first_value() {
        assert_eq!(query_param("a=1&key=ab%2Bc&key=2", "key").unwrap(), "ab+c");
        assert_eq!(query_param("key=a+b", "key").unwrap(), "a b");
        assert_eq!(query_param("key", "key").unwrap(), "");
        assert!(query_param("keys=1", "key").is_none());
        assert!(query_param("", "key").is_none());
    }

    #[test]
    fn query_param_borrows_plain_values() {
        assert!(matches!(
            query_param("key=AIzaSyPlain", "key"),
            Some(Cow::Borrowed("AIzaSyPlain"))
        ));
    }

    #[test]
    fn append_percent_encodes_the_value() {
        assert_eq!(
            append_query_param("alt=sse", "key", "a b+c/d=e&f~g"),
            "alt=sse&key=a%20b%2Bc%2Fd%3De%26f~g"
        );
        assert_eq!(
            append_query_param("", "api_key", "sk-1_2.3"),
            "api_key=sk-1_2.3"
        );
    }

    #[test]
    fn percent_decode_keeps_malformed_escapes() {
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%41%62"), "Ab");
        assert_eq!(percent_decode("%FF"), "\u{FFFD}");
    }

    #[test]
    fn encode_then_decode_round_trips() {
        let value = "sk-ünïcødé &=+/?#%";
        let mut encoded = String::new();
        percent_encode_into(&mut encoded, value);
        assert_eq!(percent_decode(&encoded), value);
    }
}
