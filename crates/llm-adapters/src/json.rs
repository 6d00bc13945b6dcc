//! Minimal JSON helpers for request bodies: a scanner that finds the byte spans of the members
//! of a top-level object (so one member can be cut out without re-encoding the rest of the
//! body: numbers, escapes and key order stay as the client sent them), and a borrowed probe for
//! a top-level boolean. Both run only after a cheap substring check found the member name.

use serde::de::IgnoredAny;

/// Byte spans of one member of a top-level object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Member {
    /// From the opening quote of the name to just after its closing quote.
    pub(crate) name: (usize, usize),
    /// From the first byte of the value to just after its last byte.
    pub(crate) value: (usize, usize),
}

impl Member {
    pub(crate) fn name_bytes<'b>(&self, body: &'b [u8]) -> &'b [u8] {
        body.get(self.name.0..self.name.1).unwrap_or_default()
    }

    pub(crate) fn value_bytes<'b>(&self, body: &'b [u8]) -> &'b [u8] {
        body.get(self.value.0..self.value.1).unwrap_or_default()
    }

    /// Whether the member's name is `name` (escaped names are decoded before comparing).
    pub(crate) fn has_name(&self, body: &[u8], name: &str) -> bool {
        let raw = self.name_bytes(body);
        let Some(inner) = raw.get(1..raw.len().saturating_sub(1)) else {
            return false;
        };
        if !inner.contains(&b'\\') {
            return inner == name.as_bytes();
        }
        serde_json::from_slice::<String>(raw).is_ok_and(|decoded| decoded == name)
    }
}

/// The members of `body` when it is one valid JSON object, in order; `None` for invalid JSON or
/// any other top-level value.
pub(crate) fn top_level_members(body: &[u8]) -> Option<Vec<Member>> {
    // Validate first (no allocation: every value is ignored), so the scanner below only has to
    // find boundaries in well-formed input.
    serde_json::from_slice::<IgnoredAny>(body).ok()?;
    let mut members = Vec::new();
    let mut i = skip_ws(body, 0);
    if body.get(i) != Some(&b'{') {
        return None;
    }
    i = skip_ws(body, i + 1);
    if body.get(i) == Some(&b'}') {
        return Some(members);
    }
    loop {
        let name_start = i;
        let name_end = skip_string(body, i)?;
        i = skip_ws(body, name_end);
        if body.get(i) != Some(&b':') {
            return None;
        }
        let value_start = skip_ws(body, i + 1);
        let value_end = skip_value(body, value_start)?;
        members.push(Member {
            name: (name_start, name_end),
            value: (value_start, value_end),
        });
        i = skip_ws(body, value_end);
        match body.get(i) {
            Some(b',') => i = skip_ws(body, i + 1),
            Some(b'}') => return Some(members),
            _ => return None,
        }
    }
}

fn skip_ws(body: &[u8], mut i: usize) -> usize {
    while body
        .get(i)
        .is_some_and(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
    {
        i += 1;
    }
    i
}

/// `i` is at an opening quote; returns the index just after the closing quote.
fn skip_string(body: &[u8], i: usize) -> Option<usize> {
    if body.get(i) != Some(&b'"') {
        return None;
    }
    let mut j = i + 1;
    loop {
        let offset = memchr::memchr2(b'"', b'\\', body.get(j..)?)?;
        j += offset;
        if body.get(j) == Some(&b'\\') {
            j += 2;
        } else {
            return Some(j + 1);
        }
    }
}

/// `i` is at the first byte of a value; returns the index just after its last byte.
fn skip_value(body: &[u8], i: usize) -> Option<usize> {
    match body.get(i)? {
        b'"' => skip_string(body, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            loop {
                match body.get(j)? {
                    b'"' => {
                        j = skip_string(body, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
        }
        _ => {
            let mut j = i;
            while body
                .get(j)
                .is_some_and(|b| !matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'))
            {
                j += 1;
            }
            Some(j)
        }
    }
}

/// Whether `body` is a JSON object whose top-level `stream` member is `true`.
pub(crate) fn has_true_stream_flag(body: &[u8]) -> bool {
    /// Only `stream` is read; every other member is skipped without allocating.
    #[derive(serde::Deserialize)]
    struct StreamFlag {
        #[serde(default)]
        stream: Option<IgnoredOrBool>,
    }

    /// `true` only for the JSON literal `true`; any other value is accepted and means false.
    struct IgnoredOrBool(bool);

    impl<'de> serde::Deserialize<'de> for IgnoredOrBool {
        fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct Visitor;
            impl<'de> serde::de::Visitor<'de> for Visitor {
                type Value = IgnoredOrBool;

                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("any JSON value")
                }

                fn visit_bool<E>(self, value: bool) -> Result<Self::Value, E> {
                    Ok(IgnoredOrBool(value))
                }

                fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                    Ok(IgnoredOrBool(false))
                }

                fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                    Ok(IgnoredOrBool(false))
                }

                fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                    Ok(IgnoredOrBool(false))
                }

                fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
                    Ok(IgnoredOrBool(false))
                }

                fn visit_unit<E>(self) -> Result<Self::Value, E> {
                    Ok(IgnoredOrBool(false))
                }

                fn visit_none<E>(self) -> Result<Self::Value, E> {
                    Ok(IgnoredOrBool(false))
                }

                fn visit_seq<A: serde::de::SeqAccess<'de>>(
                    self,
                    mut seq: A,
                ) -> Result<Self::Value, A::Error> {
                    while seq.next_element::<IgnoredAny>()?.is_some() {}
                    Ok(IgnoredOrBool(false))
                }

                fn visit_map<A: serde::de::MapAccess<'de>>(
                    self,
                    mut map: A,
                ) -> Result<Self::Value, A::Error> {
                    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                    Ok(IgnoredOrBool(false))
                }
            }
            deserializer.deserialize_any(Visitor)
        }
    }

    memchr::memmem::find(body, b"\"stream\"").is_some()
        && serde_json::from_slice::<StreamFlag>(body)
            .is_ok_and(|flag| flag.stream.is_some_and(|s| s.0))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn names(body: &str) -> Vec<String> {
        top_level_members(body.as_bytes())
            .unwrap()
            .iter()
            .map(|m| String::from_utf8(m.name_bytes(body.as_bytes()).to_vec()).unwrap())
            .collect()
    }

    fn values(body: &str) -> Vec<String> {
        top_level_members(body.as_bytes())
            .unwrap()
            .iter()
            .map(|m| String::from_utf8(m.value_bytes(body.as_bytes()).to_vec()).unwrap())
            .collect()
    }

    #[test]
    fn scanner_finds_top_level_members_only() {
        let body = r#" { "a" : 1 , "b":{"api_key":"x","c":[1,{"d":"}"}]}, "e":"q\"}" ,"f":null,"g":-1.5e3,"h":true }"#;
        assert_eq!(
            names(body),
            [r#""a""#, r#""b""#, r#""e""#, r#""f""#, r#""g""#, r#""h""#]
        );
        assert_eq!(
            values(body),
            [
                "1",
                r#"{"api_key":"x","c":[1,{"d":"}"}]}"#,
                r#""q\"}""#,
                "null",
                "-1.5e3",
                "true"
            ]
        );
    }

    #[test]
    fn scanner_handles_empty_objects_and_rejects_other_values() {
        assert_eq!(top_level_members(b"{}").unwrap(), []);
        assert_eq!(top_level_members(b" { \n } ").unwrap(), []);
        assert!(top_level_members(b"[1,2]").is_none());
        assert!(top_level_members(b"\"s\"").is_none());
        assert!(top_level_members(b"{\"a\":").is_none());
        assert!(top_level_members(b"{\"a\":1} trailing").is_none());
        assert!(top_level_members(b"").is_none());
    }

    #[test]
    fn escaped_names_are_compared_decoded() {
        let body = br#"{"api\u005fkey":"k","api_key2":1}"#;
        let members = top_level_members(body).unwrap();
        assert!(members[0].has_name(body, "api_key"));
        assert!(!members[1].has_name(body, "api_key"));
    }

    #[test]
    fn stream_flag_is_true_only_for_a_top_level_true() {
        assert!(has_true_stream_flag(br#"{"model":"m","stream":true}"#));
        assert!(has_true_stream_flag(br#"{"stream" : true, "x": [1]}"#));
        assert!(!has_true_stream_flag(br#"{"stream":false}"#));
        assert!(!has_true_stream_flag(br#"{"stream":"true"}"#));
        assert!(!has_true_stream_flag(br#"{"stream":null}"#));
        assert!(!has_true_stream_flag(br#"{"stream":{"on":true}}"#));
        assert!(!has_true_stream_flag(br#"{"options":{"stream":true}}"#));
        assert!(!has_true_stream_flag(br#"{"model":"m"}"#));
        assert!(!has_true_stream_flag(br#"{"stream":true"#));
        assert!(!has_true_stream_flag(b""));
    }
}
