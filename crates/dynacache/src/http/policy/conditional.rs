//! Conditional requests (RFC 9111 §4.3, RFC 9110 §13) and 304 handling (RFC 9110 §15.4.5).

use super::dates::{fmt_http_date, parse_http_date, valid_date};
use super::directives::trim_ows;
use super::storable::not_stored_fields;
use http::header::{
    CACHE_CONTROL, CONTENT_LENGTH, CONTENT_LOCATION, DATE, ETAG, EXPIRES, IF_MATCH,
    IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE, IF_UNMODIFIED_SINCE, LAST_MODIFIED, RANGE, VARY,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};

/// `entity-tag = [ weak ] opaque-tag` (RFC 9110 §8.8.3); `opaque` excludes the DQUOTEs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EntityTag<'a> {
    pub(crate) weak: bool,
    pub(crate) opaque: &'a [u8],
}

impl EntityTag<'_> {
    /// RFC 9110 §8.8.3.2: both strong and character-by-character equal.
    pub(crate) fn strong_eq(&self, other: &EntityTag<'_>) -> bool {
        !self.weak && !other.weak && self.opaque == other.opaque
    }

    /// RFC 9110 §8.8.3.2: opaque-tags equal, weakness ignored.
    pub(crate) fn weak_eq(&self, other: &EntityTag<'_>) -> bool {
        self.opaque == other.opaque
    }
}

/// `etagc = %x21 / %x23-7E / obs-text`.
fn is_etagc(b: u8) -> bool {
    b == 0x21 || (0x23..=0x7e).contains(&b) || b >= 0x80
}

/// An entity-tag at the start of `v`, and the rest.
fn etag_prefix(v: &[u8]) -> Option<(EntityTag<'_>, &[u8])> {
    let (weak, rest) = match v.strip_prefix(b"W/") {
        Some(rest) => (true, rest),
        None => (false, v),
    };
    let rest = rest.strip_prefix(b"\"")?;
    let end = rest.iter().position(|&b| b == b'"')?;
    let (opaque, after) = rest.split_at(end);
    if !opaque.iter().all(|&b| is_etagc(b)) {
        return None;
    }
    Some((
        EntityTag { weak, opaque },
        after.get(1..).unwrap_or_default(),
    ))
}

/// Exactly one entity-tag, nothing else.
pub(crate) fn parse_etag(v: &[u8]) -> Option<EntityTag<'_>> {
    match etag_prefix(trim_ows(v))? {
        (tag, []) => Some(tag),
        _ => None,
    }
}

/// `#entity-tag`: members separated by commas with OWS; a malformed member is skipped up to the
/// next comma.
pub(crate) fn parse_etag_list(v: &[u8]) -> Vec<EntityTag<'_>> {
    let mut out = Vec::new();
    let mut rest = v;
    loop {
        while let [b' ' | b'\t' | b',', tail @ ..] = rest {
            rest = tail;
        }
        if rest.is_empty() {
            return out;
        }
        if let Some((tag, after)) = etag_prefix(rest) {
            let after = trim_ows(after);
            if after.is_empty() || after.first() == Some(&b',') {
                out.push(tag);
                rest = after;
                continue;
            }
        }
        match rest.iter().position(|&b| b == b',') {
            Some(comma) => rest = rest.get(comma..).unwrap_or_default(),
            None => return out,
        }
    }
}

/// The response's ETag when it has exactly one valid one.
pub(crate) fn single_etag(headers: &HeaderMap) -> Option<EntityTag<'_>> {
    let mut lines = headers.get_all(ETAG).iter();
    let first = lines.next()?;
    if lines.next().is_some() {
        return None;
    }
    parse_etag(first.as_bytes())
}

/// Whether a client's conditional request is answered 304 from this response (§4.3.2, RFC 9110
/// §13.1.2/§13.1.3/§13.2.2): only for GET/HEAD and a 200 response; If-None-Match ("*" or a list,
/// WEAK comparison) takes precedence; else If-Modified-Since (a valid HTTP-date) against the
/// response's Last-Modified, else its Date, else `response_time_ms`: not modified ⇔ that ≤ IMS.
pub(crate) fn answers_not_modified(
    method: &Method,
    request_headers: &HeaderMap,
    status: StatusCode,
    headers: &HeaderMap,
    response_time_ms: i64,
    now_ms: i64,
) -> bool {
    if !(method == Method::GET || method == Method::HEAD) || status != StatusCode::OK {
        return false;
    }
    let inm = request_headers.get_all(IF_NONE_MATCH);
    if inm.iter().next().is_some() {
        let mut lines = inm.iter();
        if let (Some(only), None) = (lines.next(), lines.next())
            && trim_ows(only.as_bytes()) == b"*"
        {
            return true;
        }
        let Some(current) = single_etag(headers) else {
            return false;
        };
        return inm
            .iter()
            .flat_map(|v| parse_etag_list(v.as_bytes()))
            .any(|t| t.weak_eq(&current));
    }
    let Some(since) = valid_date(request_headers, IF_MODIFIED_SINCE, now_ms) else {
        return false;
    };
    let modified = valid_date(headers, LAST_MODIFIED, now_ms)
        .or_else(|| valid_date(headers, DATE, now_ms))
        .unwrap_or(response_time_ms);
    modified <= since
}

/// The headers of a 304 built from a stored 200 (RFC 9110 §15.4.5): Cache-Control,
/// Content-Location, Date, ETag, Expires, Vary, and Last-Modified if present (useful to guide
/// cache updates downstream).
pub(crate) fn not_modified_headers(headers: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for name in [
        CACHE_CONTROL,
        CONTENT_LOCATION,
        DATE,
        ETAG,
        EXPIRES,
        VARY,
        LAST_MODIFIED,
    ] {
        for v in headers.get_all(&name) {
            let _ = out.try_append(name.clone(), v.clone());
        }
    }
    out
}

/// The validators to send when revalidating a stored response (§4.3.1): If-None-Match with its
/// ETag, and If-Modified-Since with its Last-Modified, sent as IMF-fixdate (RFC 9110 §5.6.7:
/// senders generate only that format; an IMF-fixdate Last-Modified goes back byte for byte).
/// Empty when it has none. `now_ms` interprets an rfc850 Last-Modified.
pub(crate) fn validators(stored: &HeaderMap, now_ms: i64) -> HeaderMap {
    let mut out = HeaderMap::new();
    if single_etag(stored).is_some()
        && let Some(v) = stored.get(ETAG)
        && let Ok(v) = HeaderValue::from_bytes(trim_ows(v.as_bytes()))
    {
        let _ = out.try_insert(IF_NONE_MATCH, v);
    }
    if let Some(ms) = valid_date(stored, LAST_MODIFIED, now_ms)
        && let Ok(v) = HeaderValue::from_str(&fmt_http_date(ms))
    {
        let _ = out.try_insert(IF_MODIFIED_SINCE, v);
    }
    out
}

/// Whether a 304 may update this stored response (§4.3.4): if the 304 has an ETag, the stored
/// ETag must match it (strong comparison when the 304's is strong, weak otherwise); with no ETag
/// in the 304 but a Last-Modified, the stored Last-Modified must be equal; with neither, the
/// stored response is selected. `now_ms` interprets rfc850 dates.
///
/// The last rule departs from the letter of §4.3.4 (which selects a stored response for a
/// validator-less 304 only if it has no validator either): the cache sent *this* stored
/// response's validators, and RFC 9110 §15.4.5 does not require a 304 to repeat
/// `Last-Modified`, so origins that validate by date alone answer with bare 304s. Refusing them
/// would turn every such revalidation into a full refetch.
pub(crate) fn not_modified_selects(
    stored: &HeaderMap,
    not_modified: &HeaderMap,
    now_ms: i64,
) -> bool {
    let stored_tag = single_etag(stored);
    let stored_lm = valid_date(stored, LAST_MODIFIED, now_ms);
    if let Some(tag) = single_etag(not_modified) {
        return stored_tag.is_some_and(|s| {
            if tag.weak {
                tag.weak_eq(&s)
            } else {
                tag.strong_eq(&s)
            }
        });
    }
    if let Some(lm) = valid_date(not_modified, LAST_MODIFIED, now_ms) {
        return stored_lm == Some(lm);
    }
    true
}

/// Stored headers updated with a 304's fields (§3.2): each field of the 304 replaces the stored
/// field of that name (all its lines), except the fields §3.2 excludes: hop-by-hop fields and
/// Proxy-Authenticate/-Authentication-Info (§3.1), and Content-Length. The caller recomputes the
/// storage plan from the result (qualified private fields, new expiry).
pub(crate) fn merge_not_modified(stored: &mut HeaderMap, not_modified: &HeaderMap) {
    let mut excluded = not_stored_fields(not_modified);
    excluded.push(CONTENT_LENGTH);
    let names: Vec<&HeaderName> = not_modified.keys().collect();
    for name in names {
        if excluded.contains(name) {
            continue;
        }
        stored.remove(name);
        for v in not_modified.get_all(name) {
            let _ = stored.try_append(name.clone(), v.clone());
        }
    }
}

/// Remove request conditionals (If-None-Match, If-Modified-Since, If-Match, If-Unmodified-Since,
/// If-Range, Range) from a header map, for an unconditional fetch the cache can store.
pub(crate) fn strip_conditionals(headers: &mut HeaderMap) {
    for name in [
        IF_NONE_MATCH,
        IF_MODIFIED_SINCE,
        IF_MATCH,
        IF_UNMODIFIED_SINCE,
        IF_RANGE,
        RANGE,
    ] {
        headers.remove(name);
    }
}

/// A single date request header, parsed strictly (used by If-Range too).
pub(crate) fn date_value(v: &HeaderValue, now_ms: i64) -> Option<i64> {
    parse_http_date(trim_ows(v.as_bytes()), now_ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::{CONNECTION, CONTENT_TYPE, SET_COOKIE};

    const NOW: i64 = 1_780_272_000_000;
    const LM: &str = "Sun, 06 Nov 1994 08:49:37 GMT";
    const LM_MS: i64 = 784_111_777_000;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_bytes(v.as_bytes()).unwrap(),
            );
        }
        h
    }

    fn nm(req: &[(&str, &str)], stored: &[(&str, &str)]) -> bool {
        answers_not_modified(
            &Method::GET,
            &headers(req),
            StatusCode::OK,
            &headers(stored),
            NOW,
            NOW,
        )
    }

    #[test]
    fn if_none_match_uses_weak_comparison() {
        // RFC 9110 §13.1.2: weak comparison for If-None-Match.
        assert!(nm(&[("if-none-match", "W/\"a\"")], &[("etag", "\"a\"")]));
        assert!(nm(
            &[("if-none-match", "\"x\", \"a\"")],
            &[("etag", "W/\"a\"")]
        ));
        assert!(!nm(&[("if-none-match", "\"b\"")], &[("etag", "\"a\"")]));
        assert!(!nm(&[("if-none-match", "\"a\"")], &[]));
    }

    #[test]
    fn if_none_match_star_matches_any_stored_response() {
        // RFC 9110 §13.1.2: "*" is false when a current representation exists.
        assert!(nm(&[("if-none-match", " * ")], &[]));
        assert!(!nm(&[("if-none-match", "*, \"a\"")], &[("etag", "\"b\"")]));
    }

    #[test]
    fn etag_lists_skip_malformed_members() {
        // RFC 9110 §8.8.3 grammar; RFC 9110 §5.6.1 lists.
        let v = br#"junk, W/"a,b" ,"c" x, W/ "d", "e""#;
        let tags: Vec<_> = parse_etag_list(v)
            .iter()
            .map(|t| (t.weak, t.opaque))
            .collect();
        assert_eq!(tags, vec![(true, &b"a,b"[..]), (false, b"e")]);
        assert_eq!(parse_etag(b"\"a\" x"), None);
        assert_eq!(parse_etag(b"w/\"a\""), None);
        assert_eq!(parse_etag(b"\"a b\""), None);
    }

    #[test]
    fn if_none_match_takes_precedence_over_if_modified_since() {
        // RFC 9110 §13.1.3: If-Modified-Since is ignored when If-None-Match is present.
        let stored = [("etag", "\"a\""), ("last-modified", LM)];
        assert!(!nm(
            &[("if-none-match", "\"b\""), ("if-modified-since", LM)],
            &stored
        ));
    }

    #[test]
    fn if_modified_since_compares_last_modified() {
        // RFC 9111 §4.3.2: Last-Modified of the stored response; RFC 9110 §13.1.3: ≤ is not modified.
        let stored = [("last-modified", LM)];
        assert!(nm(&[("if-modified-since", LM)], &stored));
        assert!(nm(
            &[("if-modified-since", "Sunday, 06-Nov-94 08:49:38 GMT")],
            &stored
        ));
        assert!(!nm(
            &[("if-modified-since", "Sun, 06 Nov 1994 08:49:36 GMT")],
            &stored
        ));
    }

    #[test]
    fn if_modified_since_falls_back_to_date_then_receipt() {
        // RFC 9111 §4.3.2: else the Date, else the time the response was received.
        assert!(nm(&[("if-modified-since", LM)], &[("date", LM)]));
        assert!(!nm(
            &[("if-modified-since", LM)],
            &[("date", "Mon, 07 Nov 1994 08:49:37 GMT")]
        ));
        let ims = headers(&[("if-modified-since", LM)]);
        let empty = headers(&[]);
        assert!(answers_not_modified(
            &Method::GET,
            &ims,
            StatusCode::OK,
            &empty,
            LM_MS,
            NOW
        ));
        assert!(!answers_not_modified(
            &Method::GET,
            &ims,
            StatusCode::OK,
            &empty,
            LM_MS + 1,
            NOW
        ));
    }

    #[test]
    fn invalid_if_modified_since_is_ignored() {
        // RFC 9110 §13.1.3: not a valid HTTP-date, or more than one member.
        let stored = [("last-modified", LM)];
        assert!(!nm(
            &[("if-modified-since", "Sun, 06 Nov 1994 08:49:37")],
            &stored
        ));
        assert!(!nm(
            &[("if-modified-since", LM), ("if-modified-since", LM)],
            &stored
        ));
    }

    #[test]
    fn only_get_or_head_on_a_200_is_answered_304() {
        // RFC 9110 §13.1.3 (GET/HEAD) and §15.4.5 (304 stands for a 200).
        let req = headers(&[("if-none-match", "\"a\"")]);
        let stored = headers(&[("etag", "\"a\"")]);
        assert!(answers_not_modified(
            &Method::HEAD,
            &req,
            StatusCode::OK,
            &stored,
            NOW,
            NOW
        ));
        assert!(!answers_not_modified(
            &Method::POST,
            &req,
            StatusCode::OK,
            &stored,
            NOW,
            NOW
        ));
        assert!(!answers_not_modified(
            &Method::GET,
            &req,
            StatusCode::NOT_FOUND,
            &stored,
            NOW,
            NOW
        ));
    }

    #[test]
    fn not_modified_carries_only_the_listed_fields() {
        // RFC 9110 §15.4.5.
        let stored = headers(&[
            ("cache-control", "max-age=5"),
            ("etag", "\"a\""),
            ("vary", "accept"),
            ("vary", "accept-encoding"),
            ("content-type", "text/html"),
            ("content-length", "10"),
            ("last-modified", LM),
            ("set-cookie", "a=b"),
        ]);
        let out = not_modified_headers(&stored);
        assert_eq!(out.len(), 5);
        assert_eq!(out.get_all(VARY).iter().count(), 2);
        assert!(!out.contains_key(CONTENT_TYPE) && !out.contains_key(SET_COOKIE));
    }

    #[test]
    fn validators_send_stored_etag_and_last_modified() {
        // RFC 9111 §4.3.1: send the entity tag and the Last-Modified value; RFC 9110 §5.6.7.
        let v = validators(&headers(&[("etag", "W/\"a\""), ("last-modified", LM)]), NOW);
        assert_eq!(v.get(IF_NONE_MATCH).unwrap(), "W/\"a\"");
        assert_eq!(v.get(IF_MODIFIED_SINCE).unwrap(), LM);
        let v = validators(
            &headers(&[("last-modified", "Sunday, 06-Nov-94 08:49:37 GMT")]),
            NOW,
        );
        assert_eq!(v.get(IF_MODIFIED_SINCE).unwrap(), LM);
        assert!(validators(&headers(&[("etag", "a"), ("last-modified", "x")]), NOW).is_empty());
    }

    #[test]
    fn not_modified_selects_by_validator() {
        // RFC 9111 §4.3.4: strong validator, then weak, then none on both sides.
        let s = |p: &[(&str, &str)], n: &[(&str, &str)]| {
            not_modified_selects(&headers(p), &headers(n), NOW)
        };
        assert!(s(&[("etag", "\"a\"")], &[("etag", "\"a\"")]));
        assert!(!s(&[("etag", "W/\"a\"")], &[("etag", "\"a\"")]));
        assert!(s(&[("etag", "\"a\"")], &[("etag", "W/\"a\"")]));
        assert!(!s(&[("etag", "\"a\"")], &[("etag", "\"b\"")]));
        assert!(!s(&[], &[("etag", "\"a\"")]));
        assert!(s(&[("last-modified", LM)], &[("last-modified", LM)]));
        assert!(!s(
            &[("last-modified", LM)],
            &[("last-modified", "Mon, 07 Nov 1994 08:49:37 GMT")]
        ));
        assert!(s(&[], &[]));
    }

    #[test]
    fn a_304_without_validators_selects_the_response_it_revalidates() {
        // Deliberate departure from RFC 9111 §4.3.4 (see `not_modified_selects`): the cache sent
        // the stored response's own validators, and RFC 9110 §15.4.5 lets a 304 omit
        // Last-Modified.
        let s = |p: &[(&str, &str)]| not_modified_selects(&headers(p), &HeaderMap::new(), NOW);
        assert!(s(&[("etag", "\"a\"")]));
        assert!(s(&[("last-modified", LM)]));
    }

    #[test]
    fn merge_replaces_fields_except_excluded_ones() {
        // RFC 9111 §3.2: replace stored fields, except §3.1 fields and Content-Length.
        let mut stored = headers(&[
            ("cache-control", "max-age=5"),
            ("vary", "a"),
            ("vary", "b"),
            ("content-length", "10"),
            ("content-type", "text/html"),
        ]);
        let update = headers(&[
            ("cache-control", "max-age=60"),
            ("vary", "c"),
            ("content-length", "0"),
            ("connection", "x-hop"),
            ("x-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("x-new", "y"),
        ]);
        merge_not_modified(&mut stored, &update);
        assert_eq!(stored.get(CACHE_CONTROL).unwrap(), "max-age=60");
        assert_eq!(stored.get_all(VARY).iter().collect::<Vec<_>>(), vec!["c"]);
        assert_eq!(stored.get(CONTENT_LENGTH).unwrap(), "10");
        assert_eq!(stored.get(CONTENT_TYPE).unwrap(), "text/html");
        assert_eq!(stored.get("x-new").unwrap(), "y");
        assert!(
            !stored.contains_key(CONNECTION)
                && !stored.contains_key("x-hop")
                && !stored.contains_key("keep-alive")
        );
    }

    #[test]
    fn conditionals_are_stripped_for_an_unconditional_fetch() {
        // RFC 9111 §4.3.2: a cache may forward without the client's own preconditions.
        let mut h = headers(&[
            ("if-none-match", "\"a\""),
            ("if-modified-since", LM),
            ("if-match", "*"),
            ("if-unmodified-since", LM),
            ("if-range", "\"a\""),
            ("range", "bytes=0-1"),
            ("accept", "*/*"),
        ]);
        strip_conditionals(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("accept"));
    }
}
