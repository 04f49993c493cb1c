//! The pure RFC 9111 policy of the HTTP cache: what may be stored, for how long, and what to do
//! with a stored response when a request comes. No I/O and no clock: time comes in as epoch ms.

pub(crate) mod conditional;
pub(crate) mod dates;
pub(crate) mod directives;
pub(crate) mod freshness;
pub(crate) mod invalidate;
pub(crate) mod range;
pub(crate) mod storable;
pub(crate) mod vary;

#[allow(unused_imports)]
pub(crate) use self::{
    conditional::{
        answers_not_modified, merge_not_modified, not_modified_headers, not_modified_selects,
        strip_conditionals, validators,
    },
    dates::{age_value, date_header, fmt_http_date, parse_http_date},
    directives::{
        Delta, RequestDirectives, ResponseDirectives, request_directives, response_directives,
        uses_targeted_field,
    },
    freshness::{Exchange, FreshnessSource, Lifetime, freshness_lifetime, initial_age_ms},
    invalidate::{invalidates, invalidation_targets},
    range::{RangeAnswer, evaluate_range},
    storable::{NotStored, StoragePlan, storable},
    vary::{Vary, normalised, vary},
};

use std::time::Duration;

pub(crate) use super::settings::{ExpireAfter, SetCookie, StaleWindow};

#[derive(Debug, Clone)]
pub(crate) struct PolicyConfig {
    pub(crate) shared: bool,
    /// false = ignore response Cache-Control/Expires/Pragma entirely; only `fallback` decides
    /// (requests-cache's cache_control=False). Request directives are still honoured.
    pub(crate) honour_headers: bool,
    pub(crate) heuristic_fraction: f64,
    pub(crate) heuristic_max_ms: i64,
    /// Statuses that may be stored; None = whatever RFC 9111 allows. Narrows, never widens.
    pub(crate) allowed_codes: Option<Vec<u16>>,
    pub(crate) set_cookie: SetCookie,
    /// Cache-specific targeted fields (RFC 9213), most specific first, e.g.
    /// ["dynacache-cache-control", "cdn-cache-control"]. Only used when `shared`. The first one
    /// present, valid and non-empty replaces Cache-Control for the response's freshness/storage
    /// directives; Cache-Control is then ignored for them, and so is Expires. Empty by default.
    pub(crate) targeted_fields: Vec<http::HeaderName>,
    /// Operator windows used when the response has no stale-while-revalidate / stale-if-error.
    pub(crate) stale_while_revalidate: StaleWindow,
    pub(crate) stale_if_error: StaleWindow,
    /// Revalidate every stored response before use (except fresh `immutable` ones).
    pub(crate) always_revalidate: bool,
}

impl PolicyConfig {
    /// A private (single-user) cache: RFC 9111 defaults, Set-Cookie kept (it is the user's own).
    #[cfg(test)]
    pub(crate) fn private() -> Self {
        Self {
            shared: false,
            honour_headers: true,
            heuristic_fraction: 0.1,
            heuristic_max_ms: 86_400_000,
            allowed_codes: None,
            set_cookie: SetCookie::Store,
            targeted_fields: Vec::new(),
            stale_while_revalidate: StaleWindow::Off,
            stale_if_error: StaleWindow::Off,
            always_revalidate: false,
        }
    }

    /// A shared cache: responses carrying Set-Cookie are not stored by default, since they are
    /// usually personalised and one user's cookie must not reach another.
    #[cfg(test)]
    pub(crate) fn shared() -> Self {
        Self {
            shared: true,
            set_cookie: SetCookie::DoNotStore,
            ..Self::private()
        }
    }
}

/// What is known about a stored response when deciding how to use it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StoredMeta<'a> {
    pub(crate) headers: &'a http::HeaderMap,
    pub(crate) response_time_ms: i64,
    pub(crate) initial_age_ms: i64,
    /// As computed by `storable` (or after a 304 update); None = never stale.
    pub(crate) expires_ms: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// Serve it without contacting the origin. `stale`: it is stale (max-stale allowed it).
    Serve { stale: bool },
    /// Serve it stale now and revalidate in the background (stale-while-revalidate).
    ServeStaleAndRevalidate,
    /// Contact the origin (conditionally when it has validators). `stale_if_error`: if the origin
    /// fails (connection error or 500/502/503/504) the stale response may be served instead.
    Revalidate { stale_if_error: bool },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Decision {
    pub(crate) action: Action,
    /// Current age (§4.2.3), whole seconds, for the Age header of what is served.
    pub(crate) age_secs: u64,
    /// Fields to remove when serving without validation (qualified no-cache="f", §5.2.2.4).
    pub(crate) strip_unvalidated: Vec<http::HeaderName>,
}

/// current_age in ms = initial_age + (now − response_time), ≥ 0 (§4.2.3).
pub(crate) fn current_age_ms(stored: &StoredMeta<'_>, now_ms: i64) -> i64 {
    let resident = now_ms.saturating_sub(stored.response_time_ms);
    stored.initial_age_ms.saturating_add(resident).max(0)
}

fn secs_ms(secs: u64) -> i64 {
    i64::try_from(secs).unwrap_or(i64::MAX).saturating_mul(1000)
}

fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Whether a window (the response's directive, else the operator's) covers `staleness` ms.
fn window_covers(directive: Option<u64>, operator: StaleWindow, staleness: i64) -> bool {
    match (directive, operator) {
        (Some(secs), _) => staleness <= secs_ms(secs),
        (None, StaleWindow::Off) => false,
        (None, StaleWindow::Always) => true,
        (None, StaleWindow::Max(d)) => staleness <= duration_ms(d),
    }
}

/// How to use a stored response for a request (§4, §4.2.4, §5.2; RFC 5861; RFC 8246).
pub(crate) fn decide(
    stored: &StoredMeta<'_>,
    req: &RequestDirectives,
    cfg: &PolicyConfig,
    now_ms: i64,
) -> Decision {
    let d = response_directives(stored.headers, cfg);
    let age_ms = current_age_ms(stored, now_ms);
    let strip_unvalidated = d.no_cache.clone().unwrap_or_default();
    let decision = |action| Decision {
        action,
        age_secs: u64::try_from(age_ms / 1000).unwrap_or(0),
        strip_unvalidated: strip_unvalidated.clone(),
    };

    // §5.2.2.4 (response no-cache) and §5.2.1.4 (request no-cache): validate first, and since
    // the stored response must not be used without a successful validation, not on error either.
    let unqualified_no_cache = d.no_cache.as_ref().is_some_and(Vec::is_empty);
    if unqualified_no_cache || req.no_cache {
        return decision(Action::Revalidate {
            stale_if_error: false,
        });
    }

    // Staleness for this request: the response's own (§4.2), then how far it fails the
    // request's max-age (§5.2.1.1) and min-fresh (§5.2.1.3). None = acceptable as fresh.
    let fresh = stored.expires_ms.is_none_or(|e| now_ms < e);
    let mut staleness: Option<i64> = stored
        .expires_ms
        .filter(|_| !fresh)
        .map(|e| now_ms.saturating_sub(e));
    let mut worse = |by: i64| {
        if by > 0 {
            staleness = Some(staleness.map_or(by, |s| s.max(by)));
        }
    };
    if let Some(max_age) = req.max_age {
        worse(age_ms.saturating_sub(secs_ms(max_age)));
    }
    if let (Some(min_fresh), Some(e)) = (req.min_fresh, stored.expires_ms) {
        worse(now_ms.saturating_add(secs_ms(min_fresh)).saturating_sub(e));
    }

    // §4.2.4: serving a response that has become stale is prohibited by these directives.
    let prohibited = !fresh
        && (d.must_revalidate || (cfg.shared && (d.proxy_revalidate || d.s_maxage.is_some())));
    let stale_if_error = |s: i64| {
        !prohibited
            && match req.stale_if_error {
                Some(secs) => s <= secs_ms(secs),
                None => window_covers(d.stale_if_error, cfg.stale_if_error, s),
            }
    };

    // Operator's always-revalidate; RFC 8246 §2: a fresh immutable response needs no validation.
    if cfg.always_revalidate && !(fresh && d.immutable) {
        let stale_if_error = staleness.is_none_or(stale_if_error);
        return decision(Action::Revalidate { stale_if_error });
    }

    let Some(s) = staleness else {
        return decision(Action::Serve { stale: false });
    };
    if prohibited {
        return decision(Action::Revalidate {
            stale_if_error: false,
        });
    }
    let max_stale_ok = match req.max_stale {
        None => false,
        Some(None) => true,
        Some(Some(secs)) => s <= secs_ms(secs),
    };
    if max_stale_ok {
        return decision(Action::Serve { stale: true });
    }
    if window_covers(d.stale_while_revalidate, cfg.stale_while_revalidate, s) {
        return decision(Action::ServeStaleAndRevalidate);
    }
    decision(Action::Revalidate {
        stale_if_error: stale_if_error(s),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, HeaderName, HeaderValue};

    const T0: i64 = 1_780_272_000_000;

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

    /// A response received at T0 with age 0, fresh for `lifetime_s` seconds (None = forever).
    fn meta(h: &HeaderMap, lifetime_s: Option<i64>) -> StoredMeta<'_> {
        StoredMeta {
            headers: h,
            response_time_ms: T0,
            initial_age_ms: 0,
            expires_ms: lifetime_s.map(|s| T0 + s * 1000),
        }
    }

    fn req(cc: &str) -> RequestDirectives {
        request_directives(&headers(&[("cache-control", cc)]))
    }

    fn at(secs: i64) -> i64 {
        T0 + secs * 1000
    }

    fn act(h: &HeaderMap, lifetime: Option<i64>, r: &str, cfg: &PolicyConfig, secs: i64) -> Action {
        decide(&meta(h, lifetime), &req(r), cfg, at(secs)).action
    }

    const REVALIDATE: Action = Action::Revalidate {
        stale_if_error: false,
    };
    const FRESH: Action = Action::Serve { stale: false };

    #[test]
    fn fresh_response_is_served() {
        // RFC 9111 §4.2: fresh ⇔ freshness_lifetime > current_age.
        let h = headers(&[]);
        let p = PolicyConfig::private();
        assert_eq!(act(&h, Some(60), "", &p, 59), FRESH);
        assert_eq!(act(&h, Some(60), "", &p, 60), REVALIDATE);
        assert_eq!(act(&h, None, "", &p, 1_000_000_000), FRESH);
    }

    #[test]
    fn age_is_reported_in_whole_seconds() {
        // RFC 9111 §4.2.3: current_age = corrected_initial_age + resident_time; §5.1 Age.
        let h = headers(&[]);
        let mut m = meta(&h, Some(600));
        m.initial_age_ms = 10_500;
        let d = decide(
            &m,
            &RequestDirectives::default(),
            &PolicyConfig::private(),
            at(20),
        );
        assert_eq!(d.age_secs, 30);
        assert_eq!(current_age_ms(&m, at(20)), 30_500);
        assert_eq!(current_age_ms(&m, i64::MIN), 0);
    }

    #[test]
    fn unqualified_no_cache_always_revalidates() {
        // RFC 9111 §5.2.2.4: no reuse without successful validation, even when fresh.
        let h = headers(&[("cache-control", "no-cache, max-age=600, stale-if-error=600")]);
        let p = PolicyConfig::private();
        assert_eq!(act(&h, Some(600), "max-stale", &p, 1), REVALIDATE);
    }

    #[test]
    fn qualified_no_cache_fields_are_stripped_when_served() {
        // RFC 9111 §5.2.2.4: listed fields are not sent without revalidation; the rest is usable.
        let h = headers(&[("cache-control", "no-cache=\"Set-Cookie\", max-age=600")]);
        let d = decide(
            &meta(&h, Some(600)),
            &req(""),
            &PolicyConfig::private(),
            at(1),
        );
        assert_eq!(d.action, FRESH);
        assert_eq!(d.strip_unvalidated, vec![http::header::SET_COOKIE]);
    }

    #[test]
    fn request_no_cache_revalidates_fresh_response() {
        // RFC 9111 §5.2.1.4, and §5.4 for Pragma.
        let h = headers(&[("cache-control", "immutable")]);
        let p = PolicyConfig::private();
        assert_eq!(act(&h, Some(600), "no-cache", &p, 1), REVALIDATE);
        let pragma = request_directives(&headers(&[("pragma", "no-cache")]));
        assert_eq!(
            decide(&meta(&h, Some(600)), &pragma, &p, at(1)).action,
            REVALIDATE
        );
    }

    #[test]
    fn request_max_age_limits_acceptable_age() {
        // RFC 9111 §5.2.1.1: the client does not want a response older than max-age.
        let h = headers(&[]);
        let p = PolicyConfig::private();
        assert_eq!(act(&h, Some(600), "max-age=10", &p, 10), FRESH);
        assert_eq!(act(&h, Some(600), "max-age=10", &p, 11), REVALIDATE);
        assert_eq!(act(&h, Some(600), "max-age=0", &p, 1), REVALIDATE);
    }

    #[test]
    fn request_max_age_with_max_stale_accepts_older() {
        // RFC 9111 §5.2.1.1: "Unless the max-stale request directive is also present".
        let h = headers(&[]);
        let p = PolicyConfig::private();
        let stale = Action::Serve { stale: true };
        assert_eq!(act(&h, Some(600), "max-age=10, max-stale=5", &p, 15), stale);
        assert_eq!(
            act(&h, Some(600), "max-age=10, max-stale=5", &p, 16),
            REVALIDATE
        );
    }

    #[test]
    fn request_min_fresh_needs_remaining_freshness() {
        // RFC 9111 §5.2.1.3: still fresh for at least min-fresh seconds.
        let h = headers(&[]);
        let p = PolicyConfig::private();
        assert_eq!(act(&h, Some(60), "min-fresh=30", &p, 30), FRESH);
        assert_eq!(act(&h, Some(60), "min-fresh=30", &p, 31), REVALIDATE);
        assert_eq!(act(&h, None, "min-fresh=30", &p, 31), FRESH);
    }

    #[test]
    fn max_stale_serves_stale_within_its_bound() {
        // RFC 9111 §5.2.1.2: accepts a response stale by no more than the value.
        let h = headers(&[]);
        let p = PolicyConfig::private();
        let stale = Action::Serve { stale: true };
        assert_eq!(act(&h, Some(60), "max-stale=30", &p, 90), stale);
        assert_eq!(act(&h, Some(60), "max-stale=30", &p, 91), REVALIDATE);
        assert_eq!(act(&h, Some(60), "max-stale", &p, 1_000_000), stale);
    }

    #[test]
    fn must_revalidate_prohibits_any_stale_use() {
        // RFC 9111 §5.2.2.2 and §4.2.4: not even with max-stale or on error.
        let mut p = PolicyConfig::private();
        p.stale_if_error = StaleWindow::Always;
        p.stale_while_revalidate = StaleWindow::Always;
        let h = headers(&[("cache-control", "must-revalidate, stale-if-error=99")]);
        assert_eq!(
            act(&h, Some(60), "max-stale, stale-if-error=99", &p, 61),
            REVALIDATE
        );
        assert_eq!(act(&h, Some(60), "max-stale", &p, 59), FRESH);
    }

    #[test]
    fn proxy_revalidate_binds_only_shared_caches() {
        // RFC 9111 §5.2.2.8: like must-revalidate, for shared caches only.
        let h = headers(&[("cache-control", "proxy-revalidate")]);
        assert_eq!(
            act(&h, Some(60), "max-stale", &PolicyConfig::shared(), 61),
            REVALIDATE
        );
        assert_eq!(
            act(&h, Some(60), "max-stale", &PolicyConfig::private(), 61),
            Action::Serve { stale: true }
        );
    }

    #[test]
    fn s_maxage_prohibits_stale_use_in_shared_cache() {
        // RFC 9111 §5.2.2.10: s-maxage implies proxy-revalidate semantics.
        let h = headers(&[("cache-control", "s-maxage=60, stale-while-revalidate=60")]);
        assert_eq!(
            act(&h, Some(60), "", &PolicyConfig::shared(), 61),
            REVALIDATE
        );
        assert_eq!(
            act(&h, Some(60), "", &PolicyConfig::private(), 61),
            Action::ServeStaleAndRevalidate
        );
    }

    #[test]
    fn stale_while_revalidate_window_serves_and_refreshes() {
        // RFC 5861 §3: stale for up to the given seconds while revalidating in the background.
        let h = headers(&[("cache-control", "max-age=60, stale-while-revalidate=30")]);
        let p = PolicyConfig::private();
        assert_eq!(
            act(&h, Some(60), "", &p, 90),
            Action::ServeStaleAndRevalidate
        );
        assert_eq!(act(&h, Some(60), "", &p, 91), REVALIDATE);
    }

    #[test]
    fn operator_stale_window_applies_only_without_directive() {
        // RFC 9111 §4.2.4: configuration may allow stale use; the response's own directive wins.
        let mut p = PolicyConfig::private();
        p.stale_while_revalidate = StaleWindow::Max(Duration::from_secs(100));
        let plain = headers(&[]);
        assert_eq!(
            act(&plain, Some(60), "", &p, 160),
            Action::ServeStaleAndRevalidate
        );
        assert_eq!(act(&plain, Some(60), "", &p, 161), REVALIDATE);
        let own = headers(&[("cache-control", "stale-while-revalidate=10")]);
        assert_eq!(act(&own, Some(60), "", &p, 71), REVALIDATE);
    }

    #[test]
    fn stale_if_error_allows_stale_on_origin_failure() {
        // RFC 5861 §4: response directive, overridden by the request's own.
        let h = headers(&[("cache-control", "stale-if-error=30")]);
        let p = PolicyConfig::private();
        let sie = Action::Revalidate {
            stale_if_error: true,
        };
        assert_eq!(act(&h, Some(60), "", &p, 90), sie);
        assert_eq!(act(&h, Some(60), "", &p, 91), REVALIDATE);
        assert_eq!(act(&h, Some(60), "stale-if-error=5", &p, 70), REVALIDATE);
        assert_eq!(act(&h, Some(60), "stale-if-error=500", &p, 500), sie);
        let mut always = PolicyConfig::private();
        always.stale_if_error = StaleWindow::Always;
        assert_eq!(act(&headers(&[]), Some(60), "", &always, 1_000_000), sie);
    }

    #[test]
    fn always_revalidate_spares_only_fresh_immutable() {
        // RFC 8246 §2: a fresh immutable response is not revalidated.
        let mut p = PolicyConfig::private();
        p.always_revalidate = true;
        let plain = headers(&[]);
        assert_eq!(
            act(&plain, Some(60), "", &p, 1),
            Action::Revalidate {
                stale_if_error: true
            }
        );
        let immutable = headers(&[("cache-control", "immutable")]);
        assert_eq!(act(&immutable, Some(60), "", &p, 1), FRESH);
        assert_eq!(act(&immutable, Some(60), "", &p, 61), REVALIDATE);
    }

    #[test]
    fn stale_windows_count_from_request_max_age() {
        // RFC 9111 §5.2.1.1 with RFC 5861 §3: a response too old for the request is stale for it.
        let h = headers(&[("cache-control", "stale-while-revalidate=5")]);
        let p = PolicyConfig::private();
        assert_eq!(
            act(&h, Some(600), "max-age=10", &p, 15),
            Action::ServeStaleAndRevalidate
        );
        assert_eq!(act(&h, Some(600), "max-age=10", &p, 16), REVALIDATE);
        // Not yet stale, so must-revalidate does not bind; the client's max-stale is honoured.
        let mr = headers(&[("cache-control", "must-revalidate")]);
        assert_eq!(
            act(&mr, Some(600), "max-age=10, max-stale", &p, 20),
            Action::Serve { stale: true }
        );
    }

    #[test]
    fn honour_headers_false_ignores_response_directives_in_decisions() {
        // Configuration: response directives are not read; request directives still are.
        let mut p = PolicyConfig::private();
        p.honour_headers = false;
        let h = headers(&[("cache-control", "no-cache, must-revalidate")]);
        assert_eq!(act(&h, Some(60), "", &p, 1), FRESH);
        assert_eq!(
            act(&h, Some(60), "max-stale", &p, 61),
            Action::Serve { stale: true }
        );
        assert_eq!(act(&h, Some(60), "no-cache", &p, 1), REVALIDATE);
    }
}
