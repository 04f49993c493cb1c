//! HTTP-date (RFC 9110 §5.6.7) and Age (RFC 9111 §5.1).
//!
//! The shape of a date is checked here, byte by byte, because `httpdate` trims whitespace, maps
//! rfc850 two-digit years with a fixed pivot (< 70 → 20xx) and accepts the three formats in one
//! call; it is then used only for the calendar arithmetic (and it checks the day-name against the
//! date, and rejects years before 1970 or after 9999).

use super::directives::{DELTA_MAX, parse_delta, split_list, trim_ows};
use http::header::AGE;
use http::{HeaderMap, HeaderName};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const DAY_NAMES: [&[u8]; 7] = [b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat", b"Sun"];
const DAY_NAMES_LONG: [&[u8]; 7] = [
    b"Monday",
    b"Tuesday",
    b"Wednesday",
    b"Thursday",
    b"Friday",
    b"Saturday",
    b"Sunday",
];
const MONTHS: [&[u8]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];
/// The last instant httpdate can format (9999-12-31T23:59:59Z), in ms.
const MAX_MS: i64 = 253_402_300_799_999;
/// 50 Gregorian years (365.2425 days each), for the rfc850 two-digit year rule.
const FIFTY_YEARS_MS: i64 = 50 * 31_556_952_000;

/// The calendar fields of a date whose shape has been checked.
#[derive(Clone, Copy)]
struct Fields<'a> {
    day_name: &'a [u8],
    day: [u8; 2],
    month: &'a [u8],
    year: u32,
    time: &'a [u8],
}

fn digits(v: &[u8]) -> Option<u32> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0u32, |n, &b| {
        n.saturating_mul(10)
            .saturating_add(u32::from(b.saturating_sub(b'0')))
    }))
}

/// `hour ":" minute ":" second`, each 2DIGIT.
fn is_time(v: &[u8]) -> bool {
    matches!(v, [h1, h2, b':', m1, m2, b':', s1, s2]
        if [h1, h2, m1, m2, s1, s2].iter().all(|b| b.is_ascii_digit()))
}

/// The epoch ms of checked fields, via httpdate. A leap second (":60") is read as the next second.
fn to_ms(f: &Fields<'_>) -> Option<i64> {
    let short = DAY_NAMES
        .iter()
        .zip(DAY_NAMES_LONG)
        .find(|(s, l)| **s == f.day_name || *l == f.day_name)
        .map(|(s, _)| *s)?;
    let mut time = f.time.to_vec();
    let leap = time.get(6..8) == Some(b"60");
    if leap {
        time.splice(6..8, *b"59");
    }
    if f.year > 9999 {
        return None;
    }
    let text = format!(
        "{}, {}{} {} {:04} {} GMT",
        String::from_utf8_lossy(short),
        char::from(f.day[0]),
        char::from(f.day[1]),
        String::from_utf8_lossy(f.month),
        f.year,
        String::from_utf8_lossy(&time),
    );
    let t = httpdate::parse_http_date(&text).ok()?;
    let ms = i64::try_from(t.duration_since(UNIX_EPOCH).ok()?.as_millis()).ok()?;
    Some(if leap { ms.saturating_add(1000) } else { ms })
}

/// `IMF-fixdate = day-name "," SP date1 SP time-of-day SP GMT`, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
fn imf_fixdate(v: &[u8]) -> Option<Fields<'_>> {
    if v.len() != 29 {
        return None;
    }
    let (dn, rest) = v.split_at(3);
    match rest {
        [
            b',',
            b' ',
            d1,
            d2,
            b' ',
            m1,
            m2,
            m3,
            b' ',
            y1,
            y2,
            y3,
            y4,
            b' ',
            time @ ..,
            b' ',
            b'G',
            b'M',
            b'T',
        ] => {
            let month = [*m1, *m2, *m3];
            let m = MONTHS.iter().find(|m| **m == month)?;
            if !DAY_NAMES.contains(&dn)
                || !is_time(time)
                || !d1.is_ascii_digit()
                || !d2.is_ascii_digit()
            {
                return None;
            }
            Some(Fields {
                day_name: dn,
                day: [*d1, *d2],
                month: m,
                year: digits(&[*y1, *y2, *y3, *y4])?,
                time,
            })
        }
        _ => None,
    }
}

/// `rfc850-date = day-name-l "," SP date2 SP time-of-day SP GMT`, e.g.
/// `Sunday, 06-Nov-94 08:49:37 GMT`; the year is returned as its two digits.
fn rfc850_date(v: &[u8]) -> Option<(Fields<'_>, u32)> {
    let comma = v.iter().position(|&b| b == b',')?;
    let (dn, rest) = v.split_at(comma);
    if !DAY_NAMES_LONG.contains(&dn) {
        return None;
    }
    match rest {
        [
            b',',
            b' ',
            d1,
            d2,
            b'-',
            m1,
            m2,
            m3,
            b'-',
            y1,
            y2,
            b' ',
            time @ ..,
        ] => {
            let time = time.strip_suffix(b" GMT")?;
            let month = [*m1, *m2, *m3];
            let m = MONTHS.iter().find(|m| **m == month)?;
            if !is_time(time) || !d1.is_ascii_digit() || !d2.is_ascii_digit() {
                return None;
            }
            let yy = digits(&[*y1, *y2])?;
            Some((
                Fields {
                    day_name: dn,
                    day: [*d1, *d2],
                    month: m,
                    year: yy,
                    time,
                },
                yy,
            ))
        }
        _ => None,
    }
}

/// `asctime-date = day-name SP date3 SP time-of-day SP year`, with
/// `date3 = month SP ( 2DIGIT / ( SP DIGIT ) )`, e.g. `Sun Nov  6 08:49:37 1994`.
fn asctime_date(v: &[u8]) -> Option<Fields<'_>> {
    match v {
        [a, b, c, b' ', m1, m2, m3, b' ', d1, d2, b' ', rest @ ..] => {
            let (time, year) = match rest {
                [time @ .., b' ', y1, y2, y3, y4] => (time, digits(&[*y1, *y2, *y3, *y4])?),
                _ => return None,
            };
            let dn = [*a, *b, *c];
            let dn = DAY_NAMES.iter().find(|d| **d == dn)?;
            let month = [*m1, *m2, *m3];
            let m = MONTHS.iter().find(|m| **m == month)?;
            let day = match (d1, d2) {
                (b' ', d) if d.is_ascii_digit() => [b'0', *d],
                (x, y) if x.is_ascii_digit() && y.is_ascii_digit() => [*x, *y],
                _ => return None,
            };
            if !is_time(time) {
                return None;
            }
            Some(Fields {
                day_name: dn,
                day,
                month: m,
                year,
                time,
            })
        }
        _ => None,
    }
}

/// The year of `now_ms`, clamped to what httpdate can represent.
fn year_of(now_ms: i64) -> u32 {
    let text = fmt_http_date(now_ms);
    digits(text.as_bytes().get(12..16).unwrap_or(b"1970")).unwrap_or(1970)
}

/// An HTTP-date in any of the three formats of RFC 9110 §5.6.7 (IMF-fixdate, rfc850-date, asctime),
/// strictly: exact spacing and field widths per the grammar (asctime's day is `2DIGIT / SP DIGIT`,
/// so "Sun Nov  6 08:49:37 1994" is valid), "GMT" required for the first two. Anything else,
/// including extra/missing spaces or trailing garbage, is None. A day-name that does not match the
/// date is None too (httpdate checks it). rfc850 two-digit years: RFC 9110 §5.6.7 "MUST interpret a
/// timestamp ... that appears to be more than 50 years in the future as representing the most
/// recent year in the past that had the same last two digits", relative to `now_ms`.
pub(crate) fn parse_http_date(value: &[u8], now_ms: i64) -> Option<i64> {
    if let Some(f) = imf_fixdate(value) {
        return to_ms(&f);
    }
    if let Some(f) = asctime_date(value) {
        return to_ms(&f);
    }
    let (mut f, yy) = rfc850_date(value)?;
    let now_year = year_of(now_ms);
    let century = now_year.saturating_sub(now_year % 100);
    // The latest year ending in `yy` that is not more than 50 years ahead of now; the day-name is
    // checked only once the year is chosen, so it cannot pick the century.
    let limit = now_ms.clamp(0, MAX_MS).saturating_add(FIFTY_YEARS_MS);
    for base in [
        century.saturating_add(100),
        century,
        century.saturating_sub(100),
    ] {
        f.year = base.saturating_add(yy);
        if !(1970..=9999).contains(&f.year) {
            continue;
        }
        let ms = DAY_NAMES.iter().find_map(|name| {
            to_ms(&Fields {
                day_name: name,
                ..f
            })
        })?;
        if ms <= limit {
            return to_ms(&f);
        }
    }
    None
}

/// An IMF-fixdate (the only format a sender may generate, RFC 9110 §5.6.7); out-of-range
/// instants are clamped to 1970..=9999.
pub(crate) fn fmt_http_date(ms: i64) -> String {
    let ms = u64::try_from(ms.clamp(0, MAX_MS)).unwrap_or(0);
    httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_millis(ms))
}

/// A `SystemTime` as epoch ms, saturating.
pub(crate) fn system_time_ms(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_millis()).map_or(i64::MIN, |v| v.saturating_neg()),
    }
}

/// The Age header (§5.1): first line, first list member, non-negative integer (saturated at 2^31);
/// anything else (absent, invalid, negative) is None.
pub(crate) fn age_value(headers: &HeaderMap) -> Option<u64> {
    let line = headers.get(AGE)?;
    let first = split_list(line.as_bytes()).into_iter().next()?;
    parse_delta(first).map(|v| v.min(DELTA_MAX))
}

/// A single-valued date header (Date, Expires, Last-Modified): None when absent; `Some(None)` when
/// present but invalid (more than one line, or not a valid HTTP-date).
pub(crate) fn date_header(
    headers: &HeaderMap,
    name: HeaderName,
    now_ms: i64,
) -> Option<Option<i64>> {
    let mut lines = headers.get_all(name).iter();
    let first = lines.next()?;
    if lines.next().is_some() {
        return Some(None);
    }
    Some(parse_http_date(trim_ows(first.as_bytes()), now_ms))
}

/// A valid single date header, or None.
pub(crate) fn valid_date(headers: &HeaderMap, name: HeaderName, now_ms: i64) -> Option<i64> {
    date_header(headers, name, now_ms).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use http::header::{DATE, EXPIRES};

    /// 2026-06-01T00:00:00Z.
    const NOW: i64 = 1_780_272_000_000;
    /// 1994-11-06T08:49:37Z, the RFC's example.
    const EXAMPLE: i64 = 784_111_777_000;

    fn p(v: &str) -> Option<i64> {
        parse_http_date(v.as_bytes(), NOW)
    }

    fn map(name: HeaderName, values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(name.clone(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn imf_fixdate_is_parsed() {
        // RFC 9110 §5.6.7: IMF-fixdate.
        assert_eq!(p("Sun, 06 Nov 1994 08:49:37 GMT"), Some(EXAMPLE));
    }

    #[test]
    fn rfc850_date_is_parsed() {
        // RFC 9110 §5.6.7: recipients MUST accept the obsolete rfc850-date.
        assert_eq!(p("Sunday, 06-Nov-94 08:49:37 GMT"), Some(EXAMPLE));
    }

    #[test]
    fn asctime_date_is_parsed_with_either_day_form() {
        // RFC 9110 §5.6.7: asctime-date, day = 2DIGIT / SP DIGIT.
        assert_eq!(p("Sun Nov  6 08:49:37 1994"), Some(EXAMPLE));
        assert_eq!(p("Sun Nov 06 08:49:37 1994"), Some(EXAMPLE));
        assert_eq!(p("Sun Nov 6 08:49:37 1994"), None);
    }

    #[test]
    fn dates_with_extra_or_missing_spaces_are_invalid() {
        // RFC 9110 §5.6.7: the grammar fixes every SP.
        for v in [
            "Sun,  06 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994  08:49:37 GMT",
            "Sun,06 Nov 1994 08:49:37 GMT",
            " Sun, 06 Nov 1994 08:49:37 GMT",
            "Sun, 6 Nov 1994 08:49:37 GMT",
            "Sunday,  06-Nov-94 08:49:37 GMT",
            "Sun Nov   6 08:49:37 1994",
            "Sun Nov  6 08:49:37  1994",
        ] {
            assert_eq!(p(v), None, "{v}");
        }
    }

    #[test]
    fn dates_without_gmt_are_invalid() {
        // RFC 9110 §5.6.7: GMT = %s"GMT", required in IMF-fixdate and rfc850-date.
        for v in [
            "Sun, 06 Nov 1994 08:49:37",
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sun, 06 Nov 1994 08:49:37 gmt",
            "Sun, 06 Nov 1994 08:49:37 +0000",
            "Sunday, 06-Nov-94 08:49:37",
        ] {
            assert_eq!(p(v), None, "{v}");
        }
    }

    #[test]
    fn dates_with_trailing_garbage_are_invalid() {
        // RFC 9110 §5.6.7: nothing follows the date.
        for v in [
            "Sun, 06 Nov 1994 08:49:37 GMTx",
            "Sun, 06 Nov 1994 08:49:37 GMT, Mon, 07 Nov 1994 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT;",
            "0",
            "",
        ] {
            assert_eq!(p(v), None, "{v}");
        }
    }

    #[test]
    fn names_are_case_sensitive() {
        // RFC 9110 §5.6.7: day-name and month are %s (case-sensitive) literals.
        assert_eq!(p("sun, 06 Nov 1994 08:49:37 GMT"), None);
        assert_eq!(p("Sun, 06 NOV 1994 08:49:37 GMT"), None);
        assert_eq!(p("SUNDAY, 06-Nov-94 08:49:37 GMT"), None);
    }

    #[test]
    fn impossible_calendar_values_are_invalid() {
        // RFC 9110 §5.6.7: day, hour, minute ranges; the day-name must fit the date.
        assert_eq!(p("Tue, 29 Feb 2000 00:00:00 GMT"), Some(951_782_400_000));
        assert_eq!(p("Wed, 30 Feb 2000 00:00:00 GMT"), None);
        assert_eq!(p("Sun, 06 Nov 1994 24:00:00 GMT"), None);
        assert_eq!(p("Sun, 06 Nov 1994 08:60:00 GMT"), None);
        assert_eq!(p("Mon, 06 Nov 1994 08:49:37 GMT"), None);
    }

    #[test]
    fn leap_second_is_accepted() {
        // RFC 9110 §5.6.7: time-of-day runs to 23:59:60.
        assert_eq!(p("Sun, 06 Nov 1994 23:59:60 GMT"), Some(784_166_400_000));
    }

    #[test]
    fn rfc850_year_more_than_50_years_ahead_is_in_the_past() {
        // RFC 9110 §5.6.7: a two-digit year more than 50 years ahead is the latest past one.
        assert_eq!(p("Tuesday, 01-Jan-80 00:00:00 GMT"), Some(315_532_800_000)); // 1980, not 2080
        assert_eq!(
            p("Tuesday, 01-Jan-30 00:00:00 GMT"),
            Some(1_893_456_000_000)
        ); // 2030
        // Relative to the clock: in 2090, "95" is 2095, five years ahead.
        let in_2090 = 3_799_958_400_000;
        assert_eq!(
            parse_http_date(b"Saturday, 01-Jan-95 00:00:00 GMT", in_2090),
            Some(3_944_678_400_000)
        );
        // A day-name that fits only another century is not silently moved there.
        assert_eq!(p("Thursday, 01-Jan-70 00:00:00 GMT"), None); // 2070-01-01 is a Wednesday
    }

    #[test]
    fn fmt_http_date_emits_imf_fixdate_without_panicking() {
        // RFC 9110 §5.6.7: senders generate IMF-fixdate.
        assert_eq!(fmt_http_date(EXAMPLE), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(fmt_http_date(-5), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(fmt_http_date(i64::MAX), "Fri, 31 Dec 9999 23:59:59 GMT");
        assert_eq!(parse_http_date(fmt_http_date(NOW).as_bytes(), 0), Some(NOW));
    }

    #[test]
    fn age_uses_first_member_of_a_list() {
        // RFC 9111 §5.1: a list-valued Age uses its first member.
        assert_eq!(age_value(&map(AGE, &["7200, 0"])), Some(7200));
        assert_eq!(age_value(&map(AGE, &["30", "5"])), Some(30));
        assert_eq!(age_value(&map(AGE, &[" 12 "])), Some(12));
    }

    #[test]
    fn invalid_age_is_ignored() {
        // RFC 9111 §5.1: a cache SHOULD ignore an invalid Age.
        for v in ["-1", "1.5", "abc", "+3", "", "1 2"] {
            assert_eq!(age_value(&map(AGE, &[v])), None, "{v}");
        }
        assert_eq!(age_value(&HeaderMap::new()), None);
    }

    #[test]
    fn age_saturates_at_two_pow_31() {
        // RFC 9111 §1.2.2.
        assert_eq!(
            age_value(&map(AGE, &["999999999999999999999"])),
            Some(DELTA_MAX)
        );
    }

    #[test]
    fn date_header_distinguishes_absent_from_invalid() {
        // RFC 9111 §5.3 (invalid Expires is a past time) needs absent vs invalid; §4.2.1 duplicates.
        assert_eq!(date_header(&HeaderMap::new(), EXPIRES, NOW), None);
        assert_eq!(date_header(&map(EXPIRES, &["0"]), EXPIRES, NOW), Some(None));
        let two = map(
            DATE,
            &[
                "Sun, 06 Nov 1994 08:49:37 GMT",
                "Sun, 06 Nov 1994 08:49:37 GMT",
            ],
        );
        assert_eq!(date_header(&two, DATE, NOW), Some(None));
        // Surrounding OWS is not part of a field value (RFC 9110 §5.5).
        let padded = map(DATE, &["  Sun, 06 Nov 1994 08:49:37 GMT\t"]);
        assert_eq!(date_header(&padded, DATE, NOW), Some(Some(EXAMPLE)));
    }
}
