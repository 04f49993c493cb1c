//! Byte ranges served from a stored complete response (RFC 9110 §14, §13.1.5).

use super::conditional::{date_value, parse_etag, single_etag};
use super::dates::valid_date;
use super::directives::{split_list, trim_ows};
use http::header::{DATE, IF_RANGE, LAST_MODIFIED, RANGE};
use http::{HeaderMap, Method, StatusCode};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RangeAnswer {
    /// Send the whole representation (200).
    Full,
    /// Send these bytes (206); `end` is inclusive.
    Partial { start: u64, end: u64 },
    /// 416.
    Unsatisfiable,
}

/// `1*DIGIT`, saturating (a position beyond u64 is beyond any representation anyway).
fn position(v: &[u8]) -> Option<u64> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0u64, |n, &b| {
        n.saturating_mul(10)
            .saturating_add(u64::from(b.saturating_sub(b'0')))
    }))
}

/// RFC 9110 §13.1.5: If-Range holds when its entity-tag strongly matches the stored ETag, or its
/// date exactly equals the stored Last-Modified and that is a strong validator (§8.8.2.2: the
/// stored Date is at least one second later).
fn if_range_holds(request_headers: &HeaderMap, headers: &HeaderMap, now_ms: i64) -> bool {
    let mut lines = request_headers.get_all(IF_RANGE).iter();
    let Some(value) = lines.next() else {
        return true;
    };
    if lines.next().is_some() {
        return false;
    }
    let v = trim_ows(value.as_bytes());
    if v.starts_with(b"\"") || v.starts_with(b"W/") {
        return match (parse_etag(v), single_etag(headers)) {
            (Some(wanted), Some(current)) => wanted.strong_eq(&current),
            _ => false,
        };
    }
    let Some(since) = date_value(value, now_ms) else {
        return false;
    };
    let Some(modified) = valid_date(headers, LAST_MODIFIED, now_ms) else {
        return false;
    };
    let strong =
        valid_date(headers, DATE, now_ms).is_some_and(|date| date.saturating_sub(modified) >= 1000);
    since == modified && strong
}

/// For a GET with one `Range: bytes=` range against a stored complete 200 of `len` bytes:
/// `a-b`, `a-`, `-n` (suffix); b clamped to len−1; a ≥ len → Unsatisfiable (also `-0`);
/// multiple ranges, other units, malformed → Full (a server may ignore Range). If-Range: an
/// entity-tag must match the stored ETag by STRONG comparison (weak tags never match), an HTTP-date
/// must equal the stored Last-Modified exactly (and be strong); otherwise Full. Not GET or no
/// Range → Full.
pub(crate) fn evaluate_range(
    method: &Method,
    request_headers: &HeaderMap,
    status: StatusCode,
    headers: &HeaderMap,
    len: u64,
    now_ms: i64,
) -> RangeAnswer {
    // RFC 9110 §14.2: range handling is defined for GET only.
    if *method != Method::GET || status != StatusCode::OK {
        return RangeAnswer::Full;
    }
    let mut lines = request_headers.get_all(RANGE).iter();
    let (Some(range), None) = (lines.next(), lines.next()) else {
        return RangeAnswer::Full;
    };
    // RFC 9110 §13.2.2 step 5: a false If-Range means the Range is ignored.
    if !if_range_holds(request_headers, headers, now_ms) {
        return RangeAnswer::Full;
    }
    let v = trim_ows(range.as_bytes());
    let Some(eq) = v.iter().position(|&b| b == b'=') else {
        return RangeAnswer::Full;
    };
    let (unit, set) = v.split_at(eq);
    // RFC 9110 §14.1: range units are compared case-insensitively.
    if !unit.eq_ignore_ascii_case(b"bytes") {
        return RangeAnswer::Full;
    }
    let specs = split_list(set.get(1..).unwrap_or_default());
    let [spec] = specs.as_slice() else {
        return RangeAnswer::Full;
    };
    let Some(dash) = spec.iter().position(|&b| b == b'-') else {
        return RangeAnswer::Full;
    };
    let (first, last) = (
        spec.get(..dash).unwrap_or_default(),
        spec.get(dash.saturating_add(1)..).unwrap_or_default(),
    );
    if first.is_empty() {
        // suffix-range (RFC 9110 §14.1.1): the last n bytes, all of them if shorter.
        return match position(last) {
            None => RangeAnswer::Full,
            Some(0) => RangeAnswer::Unsatisfiable,
            Some(_) if len == 0 => RangeAnswer::Full,
            Some(n) => RangeAnswer::Partial {
                start: len.saturating_sub(n),
                end: len.saturating_sub(1),
            },
        };
    }
    let Some(start) = position(first) else {
        return RangeAnswer::Full;
    };
    let end = if last.is_empty() {
        u64::MAX
    } else {
        match position(last) {
            // RFC 9110 §14.1.1: last-pos < first-pos is invalid.
            Some(end) if end >= start => end,
            _ => return RangeAnswer::Full,
        }
    };
    if start >= len {
        return RangeAnswer::Unsatisfiable;
    }
    RangeAnswer::Partial {
        start,
        end: end.min(len.saturating_sub(1)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderName, HeaderValue};

    const NOW: i64 = 1_780_272_000_000;
    const LM: &str = "Sun, 06 Nov 1994 08:49:37 GMT";

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn eval(req: &[(&str, &str)], stored: &[(&str, &str)], len: u64) -> RangeAnswer {
        evaluate_range(
            &Method::GET,
            &headers(req),
            StatusCode::OK,
            &headers(stored),
            len,
            NOW,
        )
    }

    fn range(v: &str) -> RangeAnswer {
        eval(&[("range", v)], &[], 100)
    }

    fn part(start: u64, end: u64) -> RangeAnswer {
        RangeAnswer::Partial { start, end }
    }

    #[test]
    fn int_range_selects_inclusive_bytes() {
        // RFC 9110 §14.1.1: first-pos "-" last-pos, inclusive; last-pos clamped to length − 1.
        assert_eq!(range("bytes=0-9"), part(0, 9));
        assert_eq!(range("bytes=90-1000"), part(90, 99));
        assert_eq!(range("bytes=99-99"), part(99, 99));
    }

    #[test]
    fn open_range_runs_to_the_end() {
        // RFC 9110 §14.1.1: an absent last-pos means the rest.
        assert_eq!(range("bytes=10-"), part(10, 99));
    }

    #[test]
    fn suffix_range_selects_the_last_bytes() {
        // RFC 9110 §14.1.1: "-n" is the final n bytes, the whole when shorter.
        assert_eq!(range("bytes=-10"), part(90, 99));
        assert_eq!(range("bytes=-1000"), part(0, 99));
    }

    #[test]
    fn unsatisfiable_ranges_are_reported() {
        // RFC 9110 §14.1.1, §15.5.17: first-pos past the end, or a zero suffix.
        assert_eq!(range("bytes=100-"), RangeAnswer::Unsatisfiable);
        assert_eq!(range("bytes=100-200"), RangeAnswer::Unsatisfiable);
        assert_eq!(range("bytes=-0"), RangeAnswer::Unsatisfiable);
        assert_eq!(
            range("bytes=99999999999999999999999999-"),
            RangeAnswer::Unsatisfiable
        );
        assert_eq!(
            eval(&[("range", "bytes=0-")], &[], 0),
            RangeAnswer::Unsatisfiable
        );
    }

    #[test]
    fn invalid_or_multiple_ranges_are_ignored() {
        // RFC 9110 §14.2: a server MAY ignore Range; invalid specs are ignored.
        for v in [
            "bytes=10-5",
            "bytes=a-b",
            "bytes=0-1,5-6",
            "bytes=",
            "bytes 0-5",
            "items=0-5",
            "bytes=0 - 5",
            "bytes=--5",
        ] {
            assert_eq!(range(v), RangeAnswer::Full, "{v}");
        }
        assert_eq!(
            eval(&[("range", "bytes=0-1"), ("range", "bytes=2-3")], &[], 100),
            RangeAnswer::Full
        );
        assert_eq!(eval(&[("range", "bytes=-5")], &[], 0), RangeAnswer::Full);
    }

    #[test]
    fn range_unit_is_case_insensitive() {
        // RFC 9110 §14.1: range units are case-insensitive; empty list members are ignored.
        assert_eq!(range("Bytes=0-1"), part(0, 1));
        assert_eq!(range("BYTES=, 0-1 ,"), part(0, 1));
    }

    #[test]
    fn range_applies_only_to_get_on_a_stored_200() {
        // RFC 9110 §14.2: GET only.
        let req = headers(&[("range", "bytes=0-1")]);
        let h = headers(&[]);
        assert_eq!(
            evaluate_range(&Method::HEAD, &req, StatusCode::OK, &h, 10, NOW),
            RangeAnswer::Full
        );
        assert_eq!(
            evaluate_range(&Method::GET, &req, StatusCode::NOT_FOUND, &h, 10, NOW),
            RangeAnswer::Full
        );
        assert_eq!(
            evaluate_range(&Method::GET, &h, StatusCode::OK, &h, 10, NOW),
            RangeAnswer::Full
        );
    }

    #[test]
    fn if_range_entity_tag_needs_strong_match() {
        // RFC 9110 §13.1.5: strong comparison; a weak tag never matches.
        let r = |ir: &str, etag: &str| {
            eval(
                &[("range", "bytes=0-1"), ("if-range", ir)],
                &[("etag", etag)],
                10,
            )
        };
        assert_eq!(r("\"a\"", "\"a\""), part(0, 1));
        assert_eq!(r("\"a\"", "\"b\""), RangeAnswer::Full);
        assert_eq!(r("W/\"a\"", "W/\"a\""), RangeAnswer::Full);
        assert_eq!(r("\"a\"", "W/\"a\""), RangeAnswer::Full);
        assert_eq!(r("\"a", "\"a\""), RangeAnswer::Full);
    }

    #[test]
    fn if_range_date_needs_exact_strong_last_modified() {
        // RFC 9110 §13.1.5 and §8.8.2.2: equal to Last-Modified, which Date must exceed by 1 s.
        let later = "Sun, 06 Nov 1994 08:49:38 GMT";
        let r = |ir: &str, date: &str| {
            eval(
                &[("range", "bytes=0-1"), ("if-range", ir)],
                &[("last-modified", LM), ("date", date)],
                10,
            )
        };
        assert_eq!(r(LM, later), part(0, 1));
        assert_eq!(r("Sunday, 06-Nov-94 08:49:37 GMT", later), part(0, 1));
        assert_eq!(r(later, later), RangeAnswer::Full);
        assert_eq!(r(LM, LM), RangeAnswer::Full);
        assert_eq!(r("yesterday", later), RangeAnswer::Full);
    }

    #[test]
    fn if_range_false_beats_unsatisfiable() {
        // RFC 9110 §13.2.2 step 5: a false If-Range ignores the Range entirely.
        let req = [("range", "bytes=500-"), ("if-range", "\"old\"")];
        assert_eq!(eval(&req, &[("etag", "\"new\"")], 10), RangeAnswer::Full);
    }
}
