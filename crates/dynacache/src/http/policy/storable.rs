//! Whether a response may be stored (RFC 9111 §3) and what to remove before storing (§3.1).

use super::conditional::single_etag;
use super::dates::valid_date;
use super::directives::{request_directives, response_directives, split_list, uses_targeted_field};
use super::freshness::{
    Exchange, FreshnessSource, Lifetime, freshness_lifetime, heuristically_cacheable,
    initial_age_ms,
};
use super::vary::{Vary, vary};
use super::{ExpireAfter, PolicyConfig, SetCookie};
use http::header::{
    AUTHORIZATION, CONNECTION, EXPIRES, LAST_MODIFIED, PROXY_AUTHENTICATE, SET_COOKIE, TE, TRAILER,
    TRANSFER_ENCODING, UPGRADE,
};
use http::{HeaderMap, HeaderName};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NotStored {
    Status,
    NoStore,
    RequestNoStore,
    Private,
    Authorization,
    NoFreshness,
    NotAllowedCode,
    SetCookie,
    VaryStar,
    MustUnderstand,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoragePlan {
    /// Header fields to remove before storing: hop-by-hop (Connection and the fields it names,
    /// Keep-Alive, TE, Trailer, Transfer-Encoding, Upgrade, Proxy-Connection), Proxy-Authenticate,
    /// Proxy-Authentication-Info (§3.1), qualified private="f" fields when shared (§5.2.2.7),
    /// Set-Cookie/Set-Cookie2 when SetCookie::Strip. Only fields present in the response.
    pub(crate) strip: Vec<HeaderName>,
    pub(crate) initial_age_ms: i64,
    pub(crate) lifetime: Lifetime,
    /// When it stops being fresh, epoch ms (None = never): response_time + lifetime − initial_age.
    pub(crate) expires_ms: Option<i64>,
}

/// Fields a cache never stores or forwards from a response (§3.1, RFC 9110 §7.6.1): the
/// hop-by-hop fields, those the Connection header names, and the proxy authentication fields.
pub(crate) fn not_stored_fields(headers: &HeaderMap) -> Vec<HeaderName> {
    let mut names = vec![
        CONNECTION,
        HeaderName::from_static("keep-alive"),
        TE,
        TRAILER,
        TRANSFER_ENCODING,
        UPGRADE,
        HeaderName::from_static("proxy-connection"),
        PROXY_AUTHENTICATE,
        HeaderName::from_static("proxy-authentication-info"),
    ];
    for line in headers.get_all(CONNECTION) {
        for member in split_list(line.as_bytes()) {
            if let Ok(name) = HeaderName::from_bytes(member)
                && !names.contains(&name)
            {
                names.push(name);
            }
        }
    }
    names
}

/// RFC 9110 defines these final status codes; 206 and 304 are left out because storing them
/// needs partial-content / validation machinery this cache does not have (§3, §5.2.2.3).
fn understood(status: u16) -> bool {
    matches!(status, 200..=205 | 300..=303 | 305 | 307 | 308 | 400..=417 | 421 | 422 | 426 | 500..=505)
}

/// Whether the stored response can be validated (§4.3.1): a valid ETag or Last-Modified.
fn has_validator(ex: &Exchange<'_>) -> bool {
    single_etag(ex.headers).is_some()
        || valid_date(ex.headers, LAST_MODIFIED, ex.response_time_ms).is_some()
}

/// Whether (and how) to store a response. `method_allowed`: the engine already checked the
/// method is one it caches (GET/HEAD, or POST when the user opted in: POST is then judged like GET).
pub(crate) fn storable(
    ex: &Exchange<'_>,
    cfg: &PolicyConfig,
    fallback: ExpireAfter,
) -> Result<StoragePlan, NotStored> {
    let status = ex.status.as_u16();
    // §3: final status; 206/304 need machinery we do not have.
    if status < 200 || status == 206 || status == 304 {
        return Err(NotStored::Status);
    }
    // §3, §5.2.1.5.
    if request_directives(ex.request_headers).no_store {
        return Err(NotStored::RequestNoStore);
    }
    let d = response_directives(ex.headers, cfg);
    let authorized = ex.request_headers.contains_key(AUTHORIZATION);
    if cfg.honour_headers {
        // §5.2.2.3: must-understand limits storage to understood statuses and overrides no-store.
        if d.must_understand {
            if !understood(status) {
                return Err(NotStored::MustUnderstand);
            }
        } else if d.no_store {
            return Err(NotStored::NoStore);
        }
        // §5.2.2.7.
        if cfg.shared && d.private.as_ref().is_some_and(Vec::is_empty) {
            return Err(NotStored::Private);
        }
        // §3.5.
        if cfg.shared && authorized && !(d.must_revalidate || d.public || d.s_maxage.is_some()) {
            return Err(NotStored::Authorization);
        }
        // §3: something must make it reusable.
        let expires = !uses_targeted_field(ex.headers, cfg) && ex.headers.contains_key(EXPIRES);
        let reusable = d.public
            || (d.private.is_some() && !cfg.shared)
            || expires
            || d.max_age.is_some()
            || (cfg.shared && d.s_maxage.is_some())
            || heuristically_cacheable(ex.status);
        if !reusable {
            return Err(NotStored::NoFreshness);
        }
        if let Some(codes) = &cfg.allowed_codes
            && !codes.contains(&status)
        {
            return Err(NotStored::NotAllowedCode);
        }
    } else {
        // §3.5 is about the request, which is still read: nothing in the ignored headers can
        // allow a shared cache to store an answer to an authenticated request.
        if cfg.shared && authorized {
            return Err(NotStored::Authorization);
        }
        if !cfg
            .allowed_codes
            .as_deref()
            .unwrap_or(&[200])
            .contains(&status)
        {
            return Err(NotStored::NotAllowedCode);
        }
    }
    // §4.1: a Vary of "*" never matches, so storing it is pointless.
    if vary(ex.headers) == Vary::Star {
        return Err(NotStored::VaryStar);
    }
    let set_cookie2 = HeaderName::from_static("set-cookie2");
    let cookies = ex.headers.contains_key(SET_COOKIE) || ex.headers.contains_key(&set_cookie2);
    if cookies && cfg.set_cookie == SetCookie::DoNotStore {
        return Err(NotStored::SetCookie);
    }
    let mut lifetime = freshness_lifetime(ex, &d, cfg, fallback);
    if fallback == ExpireAfter::DoNotCache && lifetime.source != FreshnessSource::Explicit {
        return Err(NotStored::NoFreshness);
    }
    // An unqualified no-cache response is never used without validation (§5.2.2.4), so the
    // freshness it may claim is never used either: it is recorded as stale at once, which is
    // what listings and the TTL then show.
    if cfg.honour_headers && d.no_cache.as_ref().is_some_and(Vec::is_empty) {
        lifetime.ms = Some(0);
    }
    let initial_age_ms = initial_age_ms(ex);
    // Stale on arrival and impossible to validate: useless (§4.3.1).
    if lifetime.ms.is_some_and(|l| l <= initial_age_ms) && !has_validator(ex) {
        return Err(NotStored::NoFreshness);
    }

    let mut strip = Vec::new();
    let mut candidates = not_stored_fields(ex.headers);
    if cfg.honour_headers && cfg.shared {
        candidates.extend(d.private.iter().flatten().cloned());
    }
    if cfg.set_cookie == SetCookie::Strip {
        candidates.push(SET_COOKIE);
        candidates.push(set_cookie2);
    }
    for name in candidates {
        if ex.headers.contains_key(&name) && !strip.contains(&name) {
            strip.push(name);
        }
    }

    let expires_ms = lifetime.ms.map(|l| {
        ex.response_time_ms
            .saturating_add(l)
            .saturating_sub(initial_age_ms)
    });
    Ok(StoragePlan {
        strip,
        initial_age_ms,
        lifetime,
        expires_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderValue, StatusCode};

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

    fn run(
        req: &[(&str, &str)],
        status: u16,
        resp: &[(&str, &str)],
        cfg: &PolicyConfig,
        fallback: ExpireAfter,
    ) -> Result<StoragePlan, NotStored> {
        let rq = headers(req);
        let h = headers(resp);
        let ex = Exchange {
            request_headers: &rq,
            status: StatusCode::from_u16(status).unwrap(),
            headers: &h,
            request_time_ms: T0,
            response_time_ms: T0,
        };
        storable(&ex, cfg, fallback)
    }

    fn private(status: u16, resp: &[(&str, &str)]) -> Result<StoragePlan, NotStored> {
        run(
            &[],
            status,
            resp,
            &PolicyConfig::private(),
            ExpireAfter::Headers,
        )
    }

    fn shared(req: &[(&str, &str)], resp: &[(&str, &str)]) -> Result<StoragePlan, NotStored> {
        run(
            req,
            200,
            resp,
            &PolicyConfig::shared(),
            ExpireAfter::Headers,
        )
    }

    const MAX_AGE: (&str, &str) = ("cache-control", "max-age=60");

    #[test]
    fn only_final_non_partial_non_304_statuses_are_stored() {
        // RFC 9111 §3: the status is final (and one this cache understands).
        for s in [100, 103, 206, 304] {
            assert_eq!(private(s, &[MAX_AGE]).err(), Some(NotStored::Status), "{s}");
        }
        assert!(private(200, &[MAX_AGE]).is_ok());
    }

    #[test]
    fn request_no_store_prevents_storage() {
        // RFC 9111 §5.2.1.5.
        let r = run(
            &[("cache-control", "no-store")],
            200,
            &[MAX_AGE],
            &PolicyConfig::private(),
            ExpireAfter::Never,
        );
        assert_eq!(r.err(), Some(NotStored::RequestNoStore));
    }

    #[test]
    fn response_no_store_prevents_storage() {
        // RFC 9111 §5.2.2.5.
        let r = private(200, &[("cache-control", "max-age=60, No-Store")]);
        assert_eq!(r.err(), Some(NotStored::NoStore));
    }

    #[test]
    fn must_understand_with_understood_status_overrides_no_store() {
        // RFC 9111 §5.2.2.3: a cache that understands the status ignores no-store.
        let r = private(
            200,
            &[("cache-control", "must-understand, no-store, max-age=60")],
        );
        assert!(r.is_ok());
    }

    #[test]
    fn must_understand_with_unknown_status_is_not_stored() {
        // RFC 9111 §5.2.2.3 and §3: the cache must understand the status code.
        for s in [299, 418, 451, 599] {
            let r = private(s, &[("cache-control", "must-understand, max-age=60")]);
            assert_eq!(r.err(), Some(NotStored::MustUnderstand), "{s}");
        }
    }

    #[test]
    fn private_is_stored_only_by_private_caches() {
        // RFC 9111 §5.2.2.7 and §3 (private makes a response storable by a private cache).
        assert_eq!(
            shared(&[], &[("cache-control", "private, max-age=60")]).err(),
            Some(NotStored::Private)
        );
        assert!(private(500, &[("cache-control", "private"), ("etag", "\"a\"")]).is_ok());
    }

    #[test]
    fn qualified_private_fields_are_stripped_by_shared_cache() {
        // RFC 9111 §5.2.2.7: a shared cache MUST NOT store the listed fields.
        let resp = [
            ("cache-control", "private=\"X-User\", max-age=60"),
            ("x-user", "bob"),
        ];
        assert_eq!(
            shared(&[], &resp).unwrap().strip,
            vec![HeaderName::from_static("x-user")]
        );
        assert!(private(200, &resp).unwrap().strip.is_empty());
    }

    #[test]
    fn authorization_blocks_shared_storage_unless_allowed() {
        // RFC 9111 §3.5: only must-revalidate, public or s-maxage allow it.
        let auth = [("authorization", "Bearer x")];
        assert_eq!(
            shared(&auth, &[MAX_AGE]).err(),
            Some(NotStored::Authorization)
        );
        for cc in [
            "public, max-age=60",
            "must-revalidate, max-age=60",
            "s-maxage=60",
        ] {
            assert!(shared(&auth, &[("cache-control", cc)]).is_ok(), "{cc}");
        }
        let r = run(
            &auth,
            200,
            &[MAX_AGE],
            &PolicyConfig::private(),
            ExpireAfter::Headers,
        );
        assert!(r.is_ok());
    }

    #[test]
    fn response_needs_something_making_it_reusable() {
        // RFC 9111 §3: public, private (private cache), Expires, max-age, s-maxage (shared), or a
        // heuristically cacheable status.
        let etag = ("etag", "\"v1\"");
        assert_eq!(private(500, &[etag]).err(), Some(NotStored::NoFreshness));
        assert_eq!(private(302, &[etag]).err(), Some(NotStored::NoFreshness));
        assert!(private(500, &[etag, ("expires", "0")]).is_ok());
        assert!(private(500, &[("cache-control", "max-age=5")]).is_ok());
        assert!(private(404, &[etag]).is_ok());
        let s = run(
            &[],
            500,
            &[("cache-control", "s-maxage=5")],
            &PolicyConfig::shared(),
            ExpireAfter::Headers,
        );
        assert!(s.is_ok());
        assert_eq!(
            private(500, &[("cache-control", "s-maxage=5"), etag]).err(),
            Some(NotStored::NoFreshness)
        );
    }

    #[test]
    fn allowed_codes_only_narrow() {
        // Configuration may store less than RFC 9111 allows, never more.
        let mut cfg = PolicyConfig::private();
        cfg.allowed_codes = Some(vec![200, 500]);
        let r = run(&[], 404, &[MAX_AGE], &cfg, ExpireAfter::Headers);
        assert_eq!(r.err(), Some(NotStored::NotAllowedCode));
        let r = run(&[], 500, &[("etag", "\"a\"")], &cfg, ExpireAfter::Headers);
        assert_eq!(r.err(), Some(NotStored::NoFreshness));
    }

    #[test]
    fn vary_star_is_not_stored() {
        // RFC 9111 §4.1: "*" always fails to match.
        assert_eq!(
            private(200, &[MAX_AGE, ("vary", "accept, *")]).err(),
            Some(NotStored::VaryStar)
        );
    }

    #[test]
    fn set_cookie_follows_policy() {
        // RFC 9111 §7.3 leaves Set-Cookie to the cache's policy.
        let resp = [MAX_AGE, ("set-cookie", "a=b")];
        assert_eq!(shared(&[], &resp).err(), Some(NotStored::SetCookie));
        assert!(private(200, &resp).unwrap().strip.is_empty());
        let mut cfg = PolicyConfig::shared();
        cfg.set_cookie = SetCookie::Strip;
        let plan = run(&[], 200, &resp, &cfg, ExpireAfter::Headers).unwrap();
        assert_eq!(plan.strip, vec![SET_COOKIE]);
    }

    #[test]
    fn do_not_cache_fallback_needs_explicit_freshness() {
        // Configuration: without explicit freshness (§4.2.1) nothing is stored.
        let lm = ("last-modified", "Sun, 06 Nov 1994 08:49:37 GMT");
        let cfg = PolicyConfig::private();
        assert_eq!(
            run(&[], 200, &[lm], &cfg, ExpireAfter::DoNotCache).err(),
            Some(NotStored::NoFreshness)
        );
        assert!(run(&[], 200, &[lm, MAX_AGE], &cfg, ExpireAfter::DoNotCache).is_ok());
    }

    #[test]
    fn zero_lifetime_needs_a_validator() {
        // RFC 9111 §4.3.1: a response stale on arrival is only useful if it can be validated.
        assert_eq!(
            private(200, &[("cache-control", "max-age=0")]).err(),
            Some(NotStored::NoFreshness)
        );
        assert!(private(200, &[("cache-control", "max-age=0"), ("etag", "W/\"x\"")]).is_ok());
        let lm = ("last-modified", "Sun, 06 Nov 1994 08:49:37 GMT");
        assert!(private(200, &[("cache-control", "max-age=0"), lm]).is_ok());
        assert_eq!(
            private(200, &[("cache-control", "max-age=0"), ("etag", "x")]).err(),
            Some(NotStored::NoFreshness)
        );
    }

    #[test]
    fn unqualified_no_cache_is_stored_stale_at_once() {
        // RFC 9111 §5.2.2.4: never used without validation, so its freshness is never used.
        let etag = ("etag", "\"x\"");
        for fallback in [ExpireAfter::Never, ExpireAfter::Headers] {
            let plan = run(
                &[],
                200,
                &[("cache-control", "no-cache, max-age=600"), etag],
                &PolicyConfig::private(),
                fallback,
            )
            .unwrap();
            assert_eq!(plan.expires_ms, Some(T0));
        }
        assert_eq!(
            private(200, &[("cache-control", "no-cache")]).err(),
            Some(NotStored::NoFreshness),
            "and without a validator it is useless"
        );
        // Qualified no-cache="f" keeps the response's freshness (only the field needs it).
        let plan = private(200, &[("cache-control", "no-cache=\"x-a\", max-age=60")]).unwrap();
        assert_eq!(plan.expires_ms, Some(T0 + 60_000));
    }

    #[test]
    fn a_response_stale_on_arrival_needs_a_validator() {
        // RFC 9111 §4.3.1 with §4.2.3: an Age above max-age makes it stale on arrival.
        assert_eq!(
            private(200, &[("cache-control", "max-age=60"), ("age", "120")]).err(),
            Some(NotStored::NoFreshness)
        );
        assert!(private(200, &[("cache-control", "max-age=60"), ("age", "30")]).is_ok());
    }

    #[test]
    fn hop_by_hop_fields_are_not_stored() {
        // RFC 9111 §3.1, RFC 9110 §7.6.1: Connection and the fields it names, proxy auth fields.
        let resp = [
            MAX_AGE,
            ("connection", "close, X-Hop"),
            ("x-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("proxy-authenticate", "Basic"),
            ("proxy-authentication-info", "x"),
            ("content-type", "text/plain"),
        ];
        let strip = private(200, &resp).unwrap().strip;
        let want = [
            "connection",
            "keep-alive",
            "transfer-encoding",
            "proxy-authenticate",
            "proxy-authentication-info",
            "x-hop",
        ];
        assert_eq!(strip, want.map(HeaderName::from_static).to_vec());
    }

    #[test]
    fn ignored_headers_leave_status_and_fallback() {
        // Configuration (honour_headers = false): no-store and max-age are not read; only 200 by default.
        let mut cfg = PolicyConfig::private();
        cfg.honour_headers = false;
        let resp = [("cache-control", "no-store, max-age=60")];
        let plan = run(
            &[],
            200,
            &resp,
            &cfg,
            ExpireAfter::After(std::time::Duration::from_secs(9)),
        )
        .unwrap();
        assert_eq!(plan.expires_ms, Some(T0 + 9000));
        assert_eq!(
            run(&[], 404, &resp, &cfg, ExpireAfter::Never).err(),
            Some(NotStored::NotAllowedCode)
        );
        assert_eq!(
            run(&[], 200, &resp, &cfg, ExpireAfter::Immediately).err(),
            Some(NotStored::NoFreshness)
        );
        assert_eq!(
            run(&[], 200, &resp, &cfg, ExpireAfter::DoNotCache).err(),
            Some(NotStored::NoFreshness)
        );
        let r = run(
            &[("cache-control", "no-store")],
            200,
            &[],
            &cfg,
            ExpireAfter::Never,
        );
        assert_eq!(r.err(), Some(NotStored::RequestNoStore));
    }

    #[test]
    fn authorization_still_blocks_shared_cache_ignoring_headers() {
        // RFC 9111 §3.5: MUST NOT, and ignored headers cannot carry the exemption.
        let mut cfg = PolicyConfig::shared();
        cfg.honour_headers = false;
        let r = run(
            &[("authorization", "x")],
            200,
            &[("cache-control", "public")],
            &cfg,
            ExpireAfter::Never,
        );
        assert_eq!(r.err(), Some(NotStored::Authorization));
    }

    #[test]
    fn expiry_is_receipt_plus_lifetime_minus_initial_age() {
        // RFC 9111 §4.2: fresh while freshness_lifetime > current_age.
        let plan = private(200, &[MAX_AGE, ("age", "15")]).unwrap();
        assert_eq!(plan.initial_age_ms, 15_000);
        assert_eq!(plan.expires_ms, Some(T0 + 45_000));
        let never = run(&[], 200, &[], &PolicyConfig::private(), ExpireAfter::Never).unwrap();
        assert_eq!(never.expires_ms, None);
    }
}
