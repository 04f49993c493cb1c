//! Request normalisation: equal requests give equal keys, in every process and version.
//!
//! The key is SHA-256 over a length-prefixed list of parts, truncated to 128 bits (32 hex
//! characters):
//!
//! - `dynacache-http-v1` (a format version);
//! - the method, upper-cased;
//! - the URL: scheme and host lower-cased, default port dropped, fragment dropped, query
//!   parameters sorted (by name, then value) with ignored parameters removed;
//! - the body: JSON bodies re-serialised with object keys sorted (list order kept) and ignored
//!   fields removed; form bodies with fields sorted and ignored fields removed; other bodies as
//!   they are;
//!
//! In a shared cache, ignored query parameters and body fields stay in the key (they are still
//! removed from what is stored): a shared cache serves many users, and `?token=alice` and
//! `?token=bob` are different resources (RFC 9111 §4: the target URIs must match). The key is a
//! hash, so they are not stored in the clear.
//! - the matched headers, `name:value` lower-case names, sorted, ignored headers removed.

use http::{HeaderMap, Method};
use sha2::{Digest, Sha256};

use super::settings::{MatchHeaders, Settings};

const FORMAT: &[u8] = b"dynacache-http-v1";

/// The normalised URL: query parameters sorted, ignored ones removed, no fragment.
pub(crate) fn normalize_url(url: &url::Url, settings: &Settings) -> url::Url {
    let mut url = url.clone();
    url.set_fragment(None);
    let mut pairs: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| !settings.drops_from_key(k))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    if pairs.is_empty() {
        url.set_query(None);
    } else {
        pairs.sort();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    url
}

/// The normalised body, for the key.
fn normalize_body(headers: &HeaderMap, body: &[u8], settings: &Settings) -> Vec<u8> {
    if body.is_empty() {
        return Vec::new();
    }
    let content_type = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if content_type.contains("json")
        && let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(body)
    {
        strip_ignored(&mut value, settings);
        let mut out = Vec::with_capacity(body.len());
        write_canonical(&value, &mut out);
        return out;
    }
    if content_type.starts_with("application/x-www-form-urlencoded") {
        let mut pairs: Vec<(String, String)> = url::form_urlencoded::parse(body)
            .filter(|(k, _)| !settings.drops_from_key(k))
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        pairs.sort();
        return url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish()
            .into_bytes();
    }
    body.to_vec()
}

fn strip_ignored(value: &mut serde_json::Value, settings: &Settings) {
    match value {
        serde_json::Value::Object(map) => {
            map.retain(|k, _| !settings.drops_from_key(k));
            for v in map.values_mut() {
                strip_ignored(v, settings);
            }
        }
        serde_json::Value::Array(items) => {
            for v in items {
                strip_ignored(v, settings);
            }
        }
        _ => {}
    }
}

/// JSON with object keys sorted, whatever map type serde_json was built with.
fn write_canonical(value: &serde_json::Value, out: &mut Vec<u8>) {
    match value {
        serde_json::Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(serde_json::to_string(k).unwrap_or_default().as_bytes());
                out.push(b':');
                write_canonical(v, out);
            }
            out.push(b'}');
        }
        serde_json::Value::Array(items) => {
            out.push(b'[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(v, out);
            }
            out.push(b']');
        }
        other => out.extend_from_slice(other.to_string().as_bytes()),
    }
}

/// The matched headers as sorted `name:value` parts.
pub(crate) fn matched_headers(headers: &HeaderMap, settings: &Settings) -> Vec<String> {
    let mut parts: Vec<String> = match &settings.match_headers {
        MatchHeaders::None => Vec::new(),
        MatchHeaders::All => headers
            .iter()
            .filter(|(n, _)| !settings.is_ignored(n.as_str()))
            .map(|(n, v)| format!("{}:{}", n.as_str(), String::from_utf8_lossy(v.as_bytes())))
            .collect(),
        MatchHeaders::Only(names) => names
            .iter()
            .filter(|n| !settings.is_ignored(n.as_str()))
            .flat_map(|n| {
                headers.get_all(n).iter().map(move |v| {
                    format!("{}:{}", n.as_str(), String::from_utf8_lossy(v.as_bytes()))
                })
            })
            .collect(),
    };
    parts.sort();
    parts
}

/// The cache key of a request.
pub(crate) fn create_key(
    method: &Method,
    url: &url::Url,
    headers: &HeaderMap,
    body: &[u8],
    settings: &Settings,
) -> String {
    let mut hasher = Sha256::new();
    let mut part = |bytes: &[u8]| {
        hasher.update((bytes.len() as u64).to_be_bytes());
        hasher.update(bytes);
    };
    part(FORMAT);
    part(method.as_str().to_ascii_uppercase().as_bytes());
    part(normalize_url(url, settings).as_str().as_bytes());
    part(&normalize_body(headers, body, settings));
    for h in matched_headers(headers, settings) {
        part(h.as_bytes());
    }
    hex::encode(&hasher.finalize()[..16])
}

/// The suffix that names one `Vary` variant: a hash of the varying request headers, each
/// normalised (whitespace, case, list order where the order carries no meaning), so equivalent
/// requests select the same variant.
pub(crate) fn variant_suffix(index: &super::document::VaryIndex, headers: &HeaderMap) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"dynacache-vary-v2");
    hasher.update((index.generation.len() as u64).to_be_bytes());
    hasher.update(index.generation.as_bytes());
    for name in &index.names {
        hasher.update((name.len() as u64).to_be_bytes());
        hasher.update(name.as_bytes());
        match super::policy::normalised(name, headers) {
            None => hasher.update([0u8]),
            Some(value) => {
                hasher.update([1u8]);
                hasher.update((value.len() as u64).to_be_bytes());
                hasher.update(&value);
            }
        }
    }
    hex::encode(&hasher.finalize()[..16])
}

/// The key of one `Vary` variant of a response stored under `base`.
pub(crate) fn variant_key(base: &str, suffix: &str) -> String {
    format!("{base}.{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(method: &str, url: &str, headers: &[(&str, &str)], body: &[u8]) -> String {
        let mut map = HeaderMap::new();
        for (n, v) in headers {
            map.append(
                http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        create_key(
            &Method::from_bytes(method.as_bytes()).unwrap(),
            &url::Url::parse(url).unwrap(),
            &map,
            body,
            &Settings::default(),
        )
    }

    #[test]
    fn keys_are_pinned_across_versions() {
        // Changing these values orphans every stored response: bump FORMAT when you must.
        assert_eq!(
            key("GET", "https://example.com/a?b=2&a=1", &[], b""),
            "2715113df6ae3b325f2f80faf8445928"
        );
    }

    #[test]
    fn equivalent_requests_have_equal_keys() {
        let base = key("GET", "https://example.com/a?a=1&b=2", &[], b"");
        assert_eq!(
            base,
            key("get", "HTTPS://EXAMPLE.com:443/a?b=2&a=1#frag", &[], b"")
        );
        assert_eq!(
            base,
            key(
                "GET",
                "https://example.com/a?a=1&b=2&api_key=secret",
                &[],
                b""
            )
        );
        assert_eq!(
            base,
            key(
                "GET",
                "https://example.com/a?a=1&b=2",
                &[("authorization", "x")],
                b""
            )
        );
        let json = |b: &[u8]| {
            key(
                "POST",
                "https://e.com/",
                &[("content-type", "application/json")],
                b,
            )
        };
        assert_eq!(
            json(br#"{"a":1,"b":[1,2]}"#),
            json(br#"{ "b": [1, 2], "a": 1, "api_key": "s" }"#)
        );
        let form = |b: &[u8]| {
            key(
                "POST",
                "https://e.com/",
                &[("content-type", "application/x-www-form-urlencoded")],
                b,
            )
        };
        assert_eq!(form(b"a=1&b=2"), form(b"b=2&a=1&access_token=t"));
    }

    #[test]
    fn a_shared_cache_keeps_credential_parameters_in_the_key() {
        let shared = Settings {
            shared: true,
            ..Settings::default()
        };
        let key = |url: &str, settings: &Settings| {
            create_key(
                &Method::GET,
                &url::Url::parse(url).unwrap(),
                &HeaderMap::new(),
                b"",
                settings,
            )
        };
        let private = Settings::default();
        assert_eq!(
            key("https://e.com/f?token=alice", &private),
            key("https://e.com/f?token=bob", &private),
            "a private cache serves one user: credentials are left out"
        );
        assert_ne!(
            key("https://e.com/f?token=alice", &shared),
            key("https://e.com/f?token=bob", &shared),
            "a shared cache must not serve Alice's response for Bob's token"
        );
    }

    #[test]
    fn different_requests_have_different_keys() {
        let keys = [
            key("GET", "https://example.com/a", &[], b""),
            key("HEAD", "https://example.com/a", &[], b""),
            key("GET", "http://example.com/a", &[], b""),
            key("GET", "https://example.com/b", &[], b""),
            key("GET", "https://example.com/a?x=1", &[], b""),
            key("GET", "https://example.com/a?x=2", &[], b""),
            key(
                "POST",
                "https://example.com/a",
                &[("content-type", "application/json")],
                b"[1,2]",
            ),
            key(
                "POST",
                "https://example.com/a",
                &[("content-type", "application/json")],
                b"[2,1]",
            ),
        ];
        let unique: std::collections::HashSet<_> = keys.iter().collect();
        assert_eq!(unique.len(), keys.len());
        assert!(keys.iter().all(|k| k.len() == 32));
    }
}
