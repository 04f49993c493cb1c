//! Freshness lifetime (RFC 9111 §4.2.1, §4.2.2) and age (§4.2.3).

use super::dates::{age_value, date_header, system_time_ms, valid_date};
use super::directives::{Delta, ResponseDirectives, uses_targeted_field};
use super::{ExpireAfter, PolicyConfig};
use http::header::{DATE, EXPIRES, LAST_MODIFIED};

/// Everything known about one exchange with the origin.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Exchange<'a> {
    pub(crate) request_headers: &'a http::HeaderMap,
    pub(crate) status: http::StatusCode,
    pub(crate) headers: &'a http::HeaderMap,
    pub(crate) request_time_ms: i64,
    pub(crate) response_time_ms: i64,
}

impl Exchange<'_> {
    /// The Date header's value, or the time the response was received when it is absent or
    /// invalid (RFC 9110 §6.6.1).
    fn date_or_received(&self) -> i64 {
        valid_date(self.headers, DATE, self.response_time_ms).unwrap_or(self.response_time_ms)
    }
}

/// §4.2.3 corrected_initial_age in ms: max(apparent_age, age_value + response_delay), with Date
/// absent/invalid meaning apparent_age 0. A negative response_delay (clock trouble) counts as 0.
pub(crate) fn initial_age_ms(ex: &Exchange<'_>) -> i64 {
    let apparent = valid_date(ex.headers, DATE, ex.response_time_ms)
        .map_or(0, |date| ex.response_time_ms.saturating_sub(date).max(0));
    let age = age_value(ex.headers)
        .and_then(|a| i64::try_from(a).ok())
        .map_or(0, |a| a.saturating_mul(1000));
    let delay = ex
        .response_time_ms
        .saturating_sub(ex.request_time_ms)
        .max(0);
    apparent.max(age.saturating_add(delay))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FreshnessSource {
    /// s-maxage, max-age or Expires.
    Explicit,
    /// §4.2.2, from Last-Modified.
    Heuristic,
    /// The configured fallback.
    Setting,
    /// Nothing gives freshness.
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Lifetime {
    /// None = forever (ExpireAfter::Never).
    pub(crate) ms: Option<i64>,
    pub(crate) source: FreshnessSource,
}

/// RFC 9110 §15.1: statuses that are heuristically cacheable by default.
pub(crate) fn heuristically_cacheable(status: http::StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 206 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

fn explicit(ms: i64) -> Lifetime {
    Lifetime {
        ms: Some(ms.max(0)),
        source: FreshnessSource::Explicit,
    }
}

fn delta_ms(d: Delta) -> i64 {
    match d {
        Delta::Seconds(s) => i64::try_from(s).unwrap_or(i64::MAX).saturating_mul(1000),
        Delta::Invalid => 0,
    }
}

/// §4.2.1 freshness lifetime, in order:
/// - honour_headers && shared && s-maxage → it (Invalid → 0)
/// - honour_headers && max-age → it (Invalid → 0)
/// - honour_headers && Expires (and no targeted field in use) → Expires − Date (Date absent/invalid:
///   response_time); Expires invalid or several lines → 0 (§5.3: already expired); max 0.
/// - otherwise the fallback: Never → forever; After(d) → d; At(t) → t − response_time (≥0);
///   Immediately → 0; DoNotCache → 0 (and `storable` refuses it); Headers → heuristic (§4.2.2).
pub(crate) fn freshness_lifetime(
    ex: &Exchange<'_>,
    d: &ResponseDirectives,
    cfg: &PolicyConfig,
    fallback: ExpireAfter,
) -> Lifetime {
    if cfg.honour_headers {
        if cfg.shared
            && let Some(s) = d.s_maxage
        {
            return explicit(delta_ms(s));
        }
        if let Some(m) = d.max_age {
            return explicit(delta_ms(m));
        }
        if !uses_targeted_field(ex.headers, cfg)
            && let Some(expires) = date_header(ex.headers, EXPIRES, ex.response_time_ms)
        {
            return explicit(expires.map_or(0, |e| e.saturating_sub(ex.date_or_received())));
        }
    }
    let setting = |ms: Option<i64>| Lifetime {
        ms,
        source: FreshnessSource::Setting,
    };
    match fallback {
        ExpireAfter::Never => setting(None),
        ExpireAfter::After(d) => setting(Some(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))),
        ExpireAfter::At(t) => setting(Some(
            system_time_ms(t).saturating_sub(ex.response_time_ms).max(0),
        )),
        ExpireAfter::Immediately => setting(Some(0)),
        ExpireAfter::DoNotCache => Lifetime {
            ms: Some(0),
            source: FreshnessSource::None,
        },
        ExpireAfter::Headers => heuristic(ex, d, cfg),
    }
}

/// §4.2.2: a fraction of the time since Last-Modified, capped; only for heuristically cacheable
/// statuses or responses marked `public`, and only with a Last-Modified not after Date.
fn heuristic(ex: &Exchange<'_>, d: &ResponseDirectives, cfg: &PolicyConfig) -> Lifetime {
    let none = Lifetime {
        ms: Some(0),
        source: FreshnessSource::None,
    };
    if !(heuristically_cacheable(ex.status) || d.public) {
        return none;
    }
    let Some(last_modified) = valid_date(ex.headers, LAST_MODIFIED, ex.response_time_ms) else {
        return none;
    };
    let date = ex.date_or_received();
    if last_modified > date {
        return none;
    }
    let scaled = date.saturating_sub(last_modified) as f64 * cfg.heuristic_fraction;
    if !scaled.is_finite() || scaled <= 0.0 {
        return none;
    }
    // `as` saturates for floats; the cap is never negative.
    let ms = (scaled as i64).min(cfg.heuristic_max_ms.max(0));
    Lifetime {
        ms: Some(ms),
        source: FreshnessSource::Heuristic,
    }
}

#[cfg(test)]
mod tests {
    use super::super::directives::response_directives;
    use super::super::fmt_http_date;
    use super::*;
    use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
    use std::time::{Duration, UNIX_EPOCH};

    /// 2026-06-01T00:00:00Z, whole seconds so HTTP-dates are exact.
    const T0: i64 = 1_780_272_000_000;

    fn headers(pairs: &[(&str, String)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn date(secs_from_t0: i64) -> String {
        fmt_http_date(T0 + secs_from_t0 * 1000)
    }

    fn ex<'a>(h: &'a HeaderMap, rq: &'a HeaderMap, status: u16) -> Exchange<'a> {
        Exchange {
            request_headers: rq,
            status: StatusCode::from_u16(status).unwrap(),
            headers: h,
            request_time_ms: T0,
            response_time_ms: T0,
        }
    }

    fn lifetime(
        pairs: &[(&str, String)],
        status: u16,
        cfg: &PolicyConfig,
        fb: ExpireAfter,
    ) -> Lifetime {
        let h = headers(pairs);
        let rq = HeaderMap::new();
        let e = ex(&h, &rq, status);
        freshness_lifetime(&e, &response_directives(&h, cfg), cfg, fb)
    }

    fn ms(pairs: &[(&str, String)], cfg: &PolicyConfig) -> Option<i64> {
        lifetime(pairs, 200, cfg, ExpireAfter::Headers).ms
    }

    fn cc(v: &str) -> (&'static str, String) {
        ("cache-control", v.to_string())
    }

    #[test]
    fn initial_age_takes_apparent_age_from_date() {
        // RFC 9111 §4.2.3: apparent_age = max(0, response_time − date_value).
        let h = headers(&[("date", date(-100))]);
        let rq = HeaderMap::new();
        assert_eq!(initial_age_ms(&ex(&h, &rq, 200)), 100_000);
        let future = headers(&[("date", date(100))]);
        assert_eq!(initial_age_ms(&ex(&future, &rq, 200)), 0);
    }

    #[test]
    fn initial_age_adds_response_delay_to_age() {
        // RFC 9111 §4.2.3: corrected_age_value = age_value + response_delay.
        let h = headers(&[("date", date(0)), ("age", "30".into())]);
        let rq = HeaderMap::new();
        let mut e = ex(&h, &rq, 200);
        e.request_time_ms = T0 - 2_000;
        assert_eq!(initial_age_ms(&e), 32_000);
        e.request_time_ms = T0 + 5_000; // clock trouble: no negative delay
        assert_eq!(initial_age_ms(&e), 30_000);
    }

    #[test]
    fn missing_or_invalid_date_means_no_apparent_age() {
        // RFC 9110 §6.6.1: the receipt time stands in for a missing or invalid Date.
        let rq = HeaderMap::new();
        assert_eq!(initial_age_ms(&ex(&headers(&[]), &rq, 200)), 0);
        let bad = headers(&[("date", "yesterday".into())]);
        assert_eq!(initial_age_ms(&ex(&bad, &rq, 200)), 0);
    }

    #[test]
    fn s_maxage_overrides_max_age_in_shared_cache_only() {
        // RFC 9111 §5.2.2.10: s-maxage overrides max-age and Expires for shared caches.
        let pairs = [cc("max-age=60, s-maxage=600"), ("expires", date(6000))];
        assert_eq!(ms(&pairs, &PolicyConfig::shared()), Some(600_000));
        assert_eq!(ms(&pairs, &PolicyConfig::private()), Some(60_000));
    }

    #[test]
    fn max_age_overrides_expires() {
        // RFC 9111 §5.3: with max-age present, Expires is ignored.
        let pairs = [cc("max-age=60"), ("expires", date(6000)), ("date", date(0))];
        assert_eq!(ms(&pairs, &PolicyConfig::private()), Some(60_000));
    }

    #[test]
    fn expires_minus_date_is_the_lifetime() {
        // RFC 9111 §4.2.1: Expires − Date, or − receipt time without Date.
        let p = PolicyConfig::private();
        assert_eq!(
            ms(&[("expires", date(90)), ("date", date(-10))], &p),
            Some(100_000)
        );
        assert_eq!(ms(&[("expires", date(90))], &p), Some(90_000));
        assert_eq!(
            ms(&[("expires", date(-90)), ("date", date(0))], &p),
            Some(0)
        );
        let l = lifetime(&[("expires", date(90))], 500, &p, ExpireAfter::Never);
        assert_eq!(l.source, FreshnessSource::Explicit);
    }

    #[test]
    fn invalid_expires_means_already_expired() {
        // RFC 9111 §5.3: invalid dates, especially "0", are in the past.
        let p = PolicyConfig::private();
        let lm = ("last-modified", date(-100_000));
        assert_eq!(ms(&[("expires", "0".into()), lm.clone()], &p), Some(0));
        assert_eq!(
            ms(&[("expires", "Sun, 06 Nov 1994 08:49:37".into()), lm], &p),
            Some(0)
        );
    }

    #[test]
    fn several_expires_lines_mean_already_expired() {
        // RFC 9111 §4.2.1: duplicates may make the response stale.
        let p = PolicyConfig::private();
        assert_eq!(
            ms(&[("expires", date(60)), ("expires", date(60))], &p),
            Some(0)
        );
    }

    #[test]
    fn invalid_max_age_means_stale() {
        // RFC 9111 §4.2.1 and §1.2.2.
        let pairs = [cc("max-age=ten"), ("expires", date(600))];
        assert_eq!(ms(&pairs, &PolicyConfig::private()), Some(0));
        let shared = [cc("s-maxage=-1, max-age=600")];
        assert_eq!(ms(&shared, &PolicyConfig::shared()), Some(0));
    }

    #[test]
    fn targeted_field_makes_expires_ignored() {
        // RFC 9213 §2.2: Cache-Control and Expires are ignored when a targeted field is used.
        let mut cfg = PolicyConfig::shared();
        cfg.targeted_fields = vec![HeaderName::from_static("cdn-cache-control")];
        let pairs = [
            ("cdn-cache-control", "public".to_string()),
            ("expires", date(600)),
        ];
        let l = lifetime(&pairs, 200, &cfg, ExpireAfter::Immediately);
        assert_eq!(
            l,
            Lifetime {
                ms: Some(0),
                source: FreshnessSource::Setting
            }
        );
    }

    #[test]
    fn heuristic_is_a_fraction_of_time_since_last_modified() {
        // RFC 9111 §4.2.2: e.g. 10% of (Date − Last-Modified).
        let p = PolicyConfig::private();
        let l = lifetime(
            &[("last-modified", date(-10_000)), ("date", date(0))],
            200,
            &p,
            ExpireAfter::Headers,
        );
        assert_eq!(
            l,
            Lifetime {
                ms: Some(1_000_000),
                source: FreshnessSource::Heuristic
            }
        );
    }

    #[test]
    fn heuristic_is_capped() {
        // RFC 9111 §4.2.2: caches may bound the heuristic (operator's heuristic_max).
        let p = PolicyConfig::private();
        assert_eq!(
            ms(&[("last-modified", date(-100_000_000))], &p),
            Some(86_400_000)
        );
        let mut odd = PolicyConfig::private();
        odd.heuristic_fraction = f64::NAN;
        assert_eq!(ms(&[("last-modified", date(-100))], &odd), Some(0));
        odd.heuristic_fraction = f64::INFINITY;
        odd.heuristic_max_ms = -5;
        assert_eq!(ms(&[("last-modified", date(-100))], &odd), Some(0));
    }

    #[test]
    fn heuristic_needs_cacheable_status_or_public() {
        // RFC 9111 §4.2.2 and RFC 9110 §15.1: heuristically cacheable statuses, or `public`.
        let p = PolicyConfig::private();
        let lm = ("last-modified", date(-10_000));
        let l = lifetime(std::slice::from_ref(&lm), 500, &p, ExpireAfter::Headers);
        assert_eq!(
            l,
            Lifetime {
                ms: Some(0),
                source: FreshnessSource::None
            }
        );
        let l = lifetime(&[lm.clone(), cc("public")], 500, &p, ExpireAfter::Headers);
        assert_eq!(l.ms, Some(1_000_000));
        assert_eq!(
            lifetime(&[lm], 404, &p, ExpireAfter::Headers).ms,
            Some(1_000_000)
        );
    }

    #[test]
    fn heuristic_needs_last_modified_not_after_date() {
        // RFC 9111 §4.2.2 (Last-Modified based); RFC 9110 §8.8.2.1 (not later than Date).
        let p = PolicyConfig::private();
        assert_eq!(
            ms(&[("last-modified", date(10)), ("date", date(0))], &p),
            Some(0)
        );
        assert_eq!(ms(&[("last-modified", "garbage".into())], &p), Some(0));
        assert_eq!(ms(&[], &p), Some(0));
    }

    #[test]
    fn fallback_settings_apply_without_explicit_freshness() {
        // Configuration stands in for the §4.2.2 heuristic when headers give no expiry.
        let p = PolicyConfig::private();
        let setting = |ms| Lifetime {
            ms,
            source: FreshnessSource::Setting,
        };
        assert_eq!(lifetime(&[], 200, &p, ExpireAfter::Never), setting(None));
        let after = ExpireAfter::After(Duration::from_secs(5));
        assert_eq!(lifetime(&[], 200, &p, after), setting(Some(5000)));
        let at =
            ExpireAfter::At(UNIX_EPOCH + Duration::from_millis(u64::try_from(T0).unwrap() + 7000));
        assert_eq!(lifetime(&[], 200, &p, at), setting(Some(7000)));
        assert_eq!(
            lifetime(&[], 200, &p, ExpireAfter::At(UNIX_EPOCH)),
            setting(Some(0))
        );
        assert_eq!(
            lifetime(&[], 200, &p, ExpireAfter::Immediately),
            setting(Some(0))
        );
        let none = Lifetime {
            ms: Some(0),
            source: FreshnessSource::None,
        };
        assert_eq!(lifetime(&[], 200, &p, ExpireAfter::DoNotCache), none);
        // Explicit freshness beats every setting.
        assert_eq!(
            lifetime(&[cc("max-age=3")], 200, &p, ExpireAfter::Never).ms,
            Some(3000)
        );
    }

    #[test]
    fn ignored_headers_leave_only_the_fallback() {
        // Configuration (honour_headers = false): Cache-Control and Expires are not read.
        let mut p = PolicyConfig::private();
        p.honour_headers = false;
        let l = lifetime(
            &[cc("max-age=60"), ("expires", date(60))],
            200,
            &p,
            ExpireAfter::Immediately,
        );
        assert_eq!(l.ms, Some(0));
    }
}
