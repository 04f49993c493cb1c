//! Invalidation after unsafe requests (RFC 9111 §4.4).

use super::directives::trim_ows;
use http::header::{CONTENT_LOCATION, LOCATION};
use http::{HeaderMap, Method, StatusCode};
use url::Url;

/// Whether a response to this method invalidates stored responses: unsafe or unknown methods
/// (anything but GET, HEAD, OPTIONS, TRACE, RFC 9110 §9.2.1) with a non-error status (2xx or 3xx).
pub(crate) fn invalidates(method: &Method, status: StatusCode) -> bool {
    let safe = [Method::GET, Method::HEAD, Method::OPTIONS, Method::TRACE].contains(method);
    !safe && (status.is_success() || status.is_redirection())
}

/// The URIs to invalidate: the target URI, and Location / Content-Location when they resolve
/// (relative to the target) to the same origin (scheme, host, port). Fragments are dropped: they
/// are not part of what a cache stores under.
pub(crate) fn invalidation_targets(target: &Url, headers: &HeaderMap) -> Vec<Url> {
    let mut own = target.clone();
    own.set_fragment(None);
    let origin = target.origin();
    let mut out = vec![own];
    for name in [LOCATION, CONTENT_LOCATION] {
        let mut lines = headers.get_all(name).iter();
        let (Some(line), None) = (lines.next(), lines.next()) else {
            continue;
        };
        let Ok(text) = std::str::from_utf8(trim_ows(line.as_bytes())) else {
            continue;
        };
        let Ok(mut url) = target.join(text) else {
            continue;
        };
        url.set_fragment(None);
        // RFC 9111 §4.4: MUST NOT invalidate a URI of another origin. Opaque origins never match.
        if url.origin() == origin && origin.is_tuple() && !out.contains(&url) {
            out.push(url);
        }
    }
    out
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

    fn targets(target: &str, pairs: &[(&str, &str)]) -> Vec<String> {
        invalidation_targets(&Url::parse(target).unwrap(), &headers(pairs))
            .into_iter()
            .map(String::from)
            .collect()
    }

    #[test]
    fn unsafe_methods_with_non_error_status_invalidate() {
        // RFC 9111 §4.4: unsafe (or unknown) method, 2xx or 3xx.
        let ok = StatusCode::OK;
        assert!(invalidates(&Method::POST, ok));
        assert!(invalidates(&Method::PUT, StatusCode::FOUND));
        assert!(invalidates(&Method::DELETE, StatusCode::NO_CONTENT));
        assert!(invalidates(&Method::from_bytes(b"PURGEISH").unwrap(), ok));
    }

    #[test]
    fn safe_methods_and_errors_do_not_invalidate() {
        // RFC 9111 §4.4: only non-error responses to unsafe requests.
        for m in [Method::GET, Method::HEAD, Method::OPTIONS, Method::TRACE] {
            assert!(!invalidates(&m, StatusCode::OK), "{m}");
        }
        assert!(!invalidates(&Method::POST, StatusCode::NOT_FOUND));
        assert!(!invalidates(
            &Method::POST,
            StatusCode::INTERNAL_SERVER_ERROR
        ));
        assert!(!invalidates(&Method::POST, StatusCode::CONTINUE));
    }

    #[test]
    fn same_origin_locations_are_invalidated_too() {
        // RFC 9111 §4.4: Location and Content-Location are candidates, resolved against the target.
        let t = targets(
            "https://a.example/items/1#frag",
            &[("location", "/items/2"), ("content-location", "3?x=1#y")],
        );
        assert_eq!(
            t,
            vec![
                "https://a.example/items/1",
                "https://a.example/items/2",
                "https://a.example/items/3?x=1"
            ]
        );
        let same_port = targets(
            "http://a.example/x",
            &[("location", "HTTP://A.EXAMPLE:80/y")],
        );
        assert_eq!(same_port, vec!["http://a.example/x", "http://a.example/y"]);
    }

    #[test]
    fn other_origins_are_never_invalidated() {
        // RFC 9111 §4.4: MUST NOT invalidate when the origin differs.
        for loc in [
            "https://b.example/x",
            "http://a.example/x",
            "https://a.example:8443/x",
            "//evil.example/x",
        ] {
            assert_eq!(
                targets("https://a.example/", &[("location", loc)]),
                vec!["https://a.example/"],
                "{loc}"
            );
        }
    }

    #[test]
    fn unusable_locations_are_skipped_and_duplicates_dropped() {
        // RFC 9110 §10.2.2: Location is a single URI-reference.
        let t = targets(
            "https://a.example/p",
            &[
                ("location", "/q"),
                ("location", "/r"),
                ("content-location", "/p"),
            ],
        );
        assert_eq!(t, vec!["https://a.example/p"]);
        assert_eq!(
            targets("https://a.example/p", &[("location", "http://[bad")]),
            vec!["https://a.example/p"]
        );
    }
}
