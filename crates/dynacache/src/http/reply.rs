//! Answering a request from a stored (or just stored) response: the `Age` header, a 304 for a
//! client's own conditional request, a 206 for a `Range`, and `Content-Length`.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};

use super::body::CacheBody;
use super::engine::{HttpCache, Incoming, Served, StoredUrl};
use super::facts::CacheFacts;
use super::policy::{self, Decision, RangeAnswer};
use super::stored::{Found, Part};
use crate::clock::millis_to_system_time;

impl HttpCache {
    /// The answer to a request from a stored response.
    pub(crate) fn reply<B>(
        &self,
        found: &Found,
        incoming: &Incoming,
        decision: &Decision,
        served: Served,
    ) -> Response<CacheBody<B>> {
        let doc = &found.doc;
        let now = self.now();
        let mut headers = doc.headers.clone();
        if !served.revalidated {
            // no-cache="field": served without validation, so without those fields.
            for name in &decision.strip_unvalidated {
                headers.remove(name);
            }
        }
        let age = policy::current_age_ms(&found.meta(), now).max(0) / 1000;
        headers.insert(header::AGE, HeaderValue::from(age));
        let facts = CacheFacts {
            from_cache: served.from_cache,
            revalidated: served.revalidated,
            stale: served.stale,
            coalesced: served.coalesced,
            created_at: Some(millis_to_system_time(doc.received_ms)),
            expires: doc.expires_ms.map(millis_to_system_time),
            is_expired: doc.expires_ms.is_some_and(|e| e <= now),
            cache_key: Some(found.key.clone()),
            ..CacheFacts::default()
        };
        let mut extensions = http::Extensions::new();
        extensions.insert(facts);
        extensions.insert(StoredUrl(doc.url.clone()));
        let streamed = found.stream.as_ref();
        let mut res = answer(
            doc.status,
            headers,
            doc.body.clone(),
            found.part.as_ref(),
            streamed.map(|s| s.len),
            incoming,
            doc.received_ms,
            now,
            extensions,
        );
        // A body left in its chunks streams from them, when the answer has a body.
        if let Some(streamed) = streamed
            && res.status() != StatusCode::NOT_MODIFIED
            && incoming.parts.method != Method::HEAD
        {
            let started = streamed
                .started
                .as_ref()
                .and_then(|s| s.lock().unwrap_or_else(|e| e.into_inner()).take());
            let store = &self.inner.store;
            *res.body_mut() = match started {
                Some(s) => CacheBody::stored(streamed.len, Some(s.first), s.rest),
                None => match store
                    .key(found.key.as_bytes())
                    .and_then(|key| store.stream_chunks(&key, &streamed.head))
                {
                    Ok(Some((len, rx))) => CacheBody::stored(len, None, rx),
                    Ok(None) => CacheBody::broken("the stored body has no chunks".into()),
                    Err(e) => CacheBody::broken(Box::new(e)),
                },
            };
        }
        res
    }
}

/// A response just fetched and stored, answered to the request that fetched it: the client's
/// own conditional or range request is answered from it (the cache asked the origin for the
/// whole response, to store it).
pub(crate) fn answer_fresh<B>(
    res: Response<CacheBody<B>>,
    incoming: &Incoming,
    body: Bytes,
    received_ms: i64,
) -> Response<CacheBody<B>> {
    let asks = [
        header::IF_NONE_MATCH,
        header::IF_MODIFIED_SINCE,
        header::RANGE,
    ];
    if !asks.iter().any(|h| incoming.parts.headers.contains_key(h)) {
        return res;
    }
    let (parts, _) = res.into_parts();
    let headers = parts.headers;
    answer(
        parts.status,
        headers,
        body,
        None,
        None,
        incoming,
        received_ms,
        received_ms,
        parts.extensions,
    )
}

/// The answer to a request from a response's status, headers and body (or, for a body left in
/// its chunks, the part of it a range request needs).
#[allow(clippy::too_many_arguments)]
fn answer<B>(
    status: StatusCode,
    mut headers: HeaderMap,
    body: Bytes,
    part: Option<&Part>,
    streamed_len: Option<u64>,
    incoming: &Incoming,
    received_ms: i64,
    now: i64,
    extensions: http::Extensions,
) -> Response<CacheBody<B>> {
    let method = &incoming.parts.method;
    let request_headers = &incoming.parts.headers;
    let (status, headers, body) = if policy::answers_not_modified(
        method,
        request_headers,
        status,
        &headers,
        received_ms,
        now,
    ) {
        let mut not_modified = policy::not_modified_headers(&headers);
        if let Some(age) = headers.get(header::AGE) {
            not_modified.insert(header::AGE, age.clone());
        }
        (StatusCode::NOT_MODIFIED, not_modified, Bytes::new())
    } else {
        let len = part.map_or(streamed_len.unwrap_or(body.len() as u64), |p| p.len);
        // A part read alone is the range this request asked for (see `HttpCache::ready`).
        let range = match part {
            Some(p) => RangeAnswer::Partial {
                start: p.start,
                end: p.end,
            },
            // Streamed only for requests without a range (see `HttpCache::ready`).
            None if streamed_len.is_some() => RangeAnswer::Full,
            None => policy::evaluate_range(method, request_headers, status, &headers, len, now),
        };
        match range {
            RangeAnswer::Partial { start, end } => {
                let range = format!("bytes {start}-{end}/{len}");
                if let Ok(v) = HeaderValue::from_str(&range) {
                    headers.insert(header::CONTENT_RANGE, v);
                }
                let part = match part {
                    Some(p) => p.bytes.clone(),
                    None => body.slice(start as usize..=end as usize),
                };
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(part.len()));
                (StatusCode::PARTIAL_CONTENT, headers, part)
            }
            RangeAnswer::Unsatisfiable => {
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                    headers.insert(header::CONTENT_RANGE, v);
                }
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
                (StatusCode::RANGE_NOT_SATISFIABLE, headers, Bytes::new())
            }
            RangeAnswer::Full if *method == Method::HEAD => (status, headers, Bytes::new()),
            // RFC 9110 §8.6: never a Content-Length on a 1xx or 204.
            RangeAnswer::Full if status.is_informational() || status == StatusCode::NO_CONTENT => {
                headers.remove(header::CONTENT_LENGTH);
                (status, headers, body)
            }
            RangeAnswer::Full => {
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
                (status, headers, body)
            }
        }
    };
    // The body is whole bytes now: the origin's framing no longer applies.
    let mut headers = headers;
    headers.remove(header::TRANSFER_ENCODING);
    let mut res = Response::new(CacheBody::full(body));
    *res.status_mut() = status;
    *res.headers_mut() = headers;
    *res.extensions_mut() = extensions;
    res
}

/// `504 Gateway Timeout`: `only-if-cached` and nothing usable is stored (RFC 9111 §5.2.1.7).
pub(crate) fn gateway_timeout<B>() -> Response<CacheBody<B>> {
    let mut res = Response::new(CacheBody::full(
        "504 Gateway Timeout: not in the cache (only-if-cached)",
    ));
    *res.status_mut() = StatusCode::GATEWAY_TIMEOUT;
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    res.extensions_mut().insert(CacheFacts::default());
    res
}
