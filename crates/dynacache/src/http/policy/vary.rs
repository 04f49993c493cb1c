//! Vary (RFC 9111 §4.1, RFC 9110 §12.5.5) and the request-header normalisation used to match
//! variants: two values match when a normalisation known to keep their meaning makes them equal.

use super::directives::{is_ows, is_token, split_list, trim_ows};
use http::HeaderMap;
use http::header::VARY;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Vary {
    None,
    /// Never matches (§4.1).
    Star,
    /// Names lower-case, sorted, deduplicated.
    Names(Vec<String>),
}

/// All Vary lines, comma lists, "*" anywhere → Star. A member that is not a field name also
/// gives Star: guessing which request header it meant could serve the wrong variant.
pub(crate) fn vary(headers: &HeaderMap) -> Vary {
    let mut names: Vec<String> = Vec::new();
    for line in headers.get_all(VARY) {
        for member in split_list(line.as_bytes()) {
            if member == b"*" || !is_token(member) {
                return Vary::Star;
            }
            names.push(String::from_utf8_lossy(member).to_ascii_lowercase());
        }
    }
    names.sort();
    names.dedup();
    if names.is_empty() {
        Vary::None
    } else {
        Vary::Names(names)
    }
}

/// Internal runs of OWS become one space.
fn collapse_ws(v: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len());
    let mut in_ws = false;
    for &b in v {
        if is_ows(b) {
            in_ws = true;
        } else {
            if in_ws && !out.is_empty() {
                out.push(b' ');
            }
            in_ws = false;
            out.push(b);
        }
    }
    out
}

/// `qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )` (RFC 9110 §12.4.2), in
/// thousandths.
fn qvalue(v: &[u8]) -> Option<u16> {
    let (int, frac) = match v.iter().position(|&b| b == b'.') {
        Some(dot) => (v.get(..dot)?, v.get(dot.saturating_add(1)..)?),
        None => (v, &b""[..]),
    };
    if frac.len() > 3 || !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut thousandths: u16 = 0;
    for i in 0..3 {
        let d = frac.get(i).map_or(0, |b| b.saturating_sub(b'0'));
        thousandths = thousandths.saturating_mul(10).saturating_add(u16::from(d));
    }
    match int {
        b"0" => Some(thousandths),
        b"1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

fn fmt_q(q: u16) -> String {
    if q == 0 {
        return "0".into();
    }
    let s = format!("0.{q:03}");
    s.trim_end_matches('0').to_string()
}

/// Splits on `;` outside quoted-strings.
fn split_params(v: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, &b) in v.iter().enumerate() {
        if quoted {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => quoted = false,
                _ => {}
            }
        } else if b == b'"' {
            quoted = true;
        } else if b == b';' {
            out.push(v.get(start..i).unwrap_or_default());
            start = i.saturating_add(1);
        }
    }
    out.push(v.get(start..).unwrap_or_default());
    out
}

/// A content-negotiation member, normalised: token and parameter names lower-cased, whitespace
/// around `;` and `=` removed, the weight pulled out (q=1 dropped, "0.50" → "0.5").
fn negotiation_member(member: &[u8]) -> (Vec<u8>, u16) {
    let parts = split_params(member);
    let mut out = trim_ows(parts.first().copied().unwrap_or_default()).to_ascii_lowercase();
    let mut q = 1000;
    for p in parts.iter().skip(1) {
        let p = trim_ows(p);
        let (name, value) = match p.iter().position(|&b| b == b'=') {
            Some(eq) => (
                trim_ows(p.get(..eq).unwrap_or_default()),
                Some(trim_ows(p.get(eq.saturating_add(1)..).unwrap_or_default())),
            ),
            None => (p, None),
        };
        let name = name.to_ascii_lowercase();
        if name == b"q"
            && let Some(parsed) = value.and_then(qvalue)
        {
            q = parsed;
            continue;
        }
        out.push(b';');
        out.extend_from_slice(&name);
        if let Some(v) = value {
            out.push(b'=');
            out.extend_from_slice(v);
        }
    }
    if q != 1000 {
        out.extend_from_slice(b";q=");
        out.extend_from_slice(fmt_q(q).as_bytes());
    }
    (out, q)
}

/// The normalised value of a request header for variant matching: all lines combined, list
/// members trimmed and internal whitespace runs collapsed to one space. For Accept,
/// Accept-Charset, Accept-Encoding, Accept-Language: member tokens and parameter names lower-cased,
/// `;q=1`/`q=1.0`/`q=1.000` dropped, q-values normalised ("0.50" → "0.5"), members stably sorted by
/// q descending (equal q keep their order), and for Accept-Encoding additionally sorted by name
/// within equal q (order carries no meaning there). Absent header → None (distinct from empty).
pub(crate) fn normalised(name: &str, headers: &HeaderMap) -> Option<Vec<u8>> {
    let lines = headers.get_all(name);
    lines.iter().next()?;
    let members: Vec<Vec<u8>> = lines
        .iter()
        .flat_map(|v| split_list(v.as_bytes()))
        .map(collapse_ws)
        .collect();
    let negotiation = [
        "accept",
        "accept-charset",
        "accept-encoding",
        "accept-language",
    ]
    .iter()
    .any(|n| n.eq_ignore_ascii_case(name));
    let members = if negotiation {
        let mut weighted: Vec<(Vec<u8>, u16)> =
            members.iter().map(|m| negotiation_member(m)).collect();
        if name.eq_ignore_ascii_case("accept-encoding") {
            weighted.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        } else {
            weighted.sort_by_key(|m| std::cmp::Reverse(m.1));
        }
        weighted.into_iter().map(|(m, _)| m).collect()
    } else {
        members
    };
    Some(members.join(&b", "[..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderName, HeaderValue};

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

    fn norm(name: &str, values: &[&str]) -> Option<String> {
        let pairs: Vec<(&str, &str)> = values.iter().map(|v| (name, *v)).collect();
        normalised(name, &headers(&pairs)).map(|v| String::from_utf8(v).unwrap())
    }

    fn names(v: &[&str]) -> Vary {
        Vary::Names(v.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn vary_names_are_lower_cased_sorted_and_deduplicated() {
        // RFC 9110 §12.5.5: a list of case-insensitive field names, over all lines.
        let h = headers(&[
            ("vary", "Accept-Encoding, accept"),
            ("vary", " ACCEPT ,,User-Agent"),
        ]);
        assert_eq!(
            vary(&h),
            names(&["accept", "accept-encoding", "user-agent"])
        );
    }

    #[test]
    fn vary_star_anywhere_never_matches() {
        // RFC 9111 §4.1: a "*" member always fails to match.
        assert_eq!(
            vary(&headers(&[("vary", "accept"), ("vary", "cookie, *")])),
            Vary::Star
        );
    }

    #[test]
    fn absent_or_empty_vary_varies_on_nothing() {
        // RFC 9111 §4.1: no Vary, nothing to match.
        assert_eq!(vary(&headers(&[])), Vary::None);
        assert_eq!(vary(&headers(&[("vary", " , ")])), Vary::None);
    }

    #[test]
    fn malformed_vary_member_is_treated_as_star() {
        // RFC 9111 §4.1: a member that names no field cannot be matched safely.
        assert_eq!(vary(&headers(&[("vary", "accept encoding")])), Vary::Star);
        assert_eq!(vary(&headers(&[("vary", "accept, \"x\"")])), Vary::Star);
    }

    #[test]
    fn whitespace_and_line_splits_are_normalised() {
        // RFC 9111 §4.1: whitespace where allowed, and combining lines, do not change a match.
        assert_eq!(
            norm("x-thing", &["a,   b  c", "d"]),
            Some("a, b c, d".into())
        );
        assert_eq!(norm("x-thing", &[" a ,b "]), norm("x-thing", &["a", "b"]));
        assert_eq!(norm("cookie", &["b=1, a=2"]), Some("b=1, a=2".into()));
    }

    #[test]
    fn absent_header_differs_from_empty() {
        // RFC 9111 §4.1: a header absent from both requests matches; present-but-empty is a value.
        assert_eq!(norm("accept", &[]), None);
        assert_eq!(norm("accept", &[""]), Some(String::new()));
        assert_eq!(normalised("bad header", &headers(&[])), None);
    }

    #[test]
    fn accept_members_are_ordered_by_quality() {
        // RFC 9110 §12.4.2, §12.5.1: weights order preference; q=1 is the default; case-insensitive.
        let a = norm(
            "accept-language",
            &["fr;q=0.50, EN-us, de ; Q=0.5, en;q=1.000"],
        );
        assert_eq!(a, Some("en-us, en, fr;q=0.5, de;q=0.5".into()));
        assert_eq!(
            norm("accept-language", &["en, fr;q=0.5"]),
            norm("accept-language", &["fr;q=0.500", "en;q=1"])
        );
        assert_ne!(
            norm("accept-language", &["en, fr"]),
            norm("accept-language", &["fr, en"])
        );
    }

    #[test]
    fn accept_encoding_order_within_equal_quality_is_ignored() {
        // RFC 9110 §12.5.3: codings are a set weighted by q.
        assert_eq!(
            norm("accept-encoding", &["gzip, br, deflate"]),
            Some("br, deflate, gzip".into())
        );
        assert_eq!(
            norm("Accept-Encoding", &["BR;q=0.1, gzip"]),
            norm("accept-encoding", &["gzip, br;q=0.100"])
        );
        assert_eq!(
            norm("accept-encoding", &["identity;q=0, gzip"]),
            Some("gzip, identity;q=0".into())
        );
    }

    #[test]
    fn accept_parameter_names_fold_but_values_keep_case() {
        // RFC 9110 §5.6.6: parameter names are case-insensitive; values may not be.
        let a = norm("accept", &["Text/HTML; Level=\"A;b\" ;q=0.8, */*;q=x"]);
        assert_eq!(a, Some("*/*;q=x, text/html;level=\"A;b\";q=0.8".into()));
    }
}
