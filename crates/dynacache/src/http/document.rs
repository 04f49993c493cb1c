//! A stored response: an item a person can read in the AWS console.
//!
//! ```text
//! key      http:3f2a…            kind    response
//! status   200                   method  GET
//! url      https://api.example.com/users?page=2
//! headers  { "content-type": ["application/json"], "etag": ["\"v1\""], … }
//! request  { "method": "GET", "url": "…", "headers": { … } }   (secrets removed)
//! created  Sun, 22 Nov 2026 14:00:00 GMT       expires  Sun, 22 Nov 2026 15:00:00 GMT
//! received 1795356000000 (epoch ms, updated by revalidation)   age 0 (ms, when received)
//! body     {"users": […]}                      (text up to 4 KiB by default; else `v`, binary)
//! ```
//!
//! A response that varies (`Vary`) is stored as a small index item under the request's key,
//! naming the varying headers and a generation, and one response item per variant under
//! `{key}.{hash of the generation and the normalised header values}`. Replacing or deleting the
//! index makes every variant of the old generation unreachable at once, in every process, even
//! variants another process was writing meanwhile; the index also lists its variants so that
//! deletions remove them.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use super::settings::Settings;
use crate::codec;
use crate::error::{Error, Result};
use crate::table::item::{self, Item, b, get_i64, get_s, n, s};

pub(crate) const KIND: &str = "kind";
pub(crate) const KIND_RESPONSE: &str = "response";
pub(crate) const KIND_VARY: &str = "vary";
pub(crate) const KIND_REDIRECT: &str = "redirect";
const TARGET: &str = "target";
const STATUS: &str = "status";
const URL: &str = "url";
const METHOD: &str = "method";
const HEADERS: &str = "headers";
const REQUEST: &str = "request";
const CREATED: &str = "created";
const EXPIRES_TEXT: &str = "expires";
const BODY: &str = "body";
const BODY_SIZE: &str = "size";
const RECEIVED: &str = "received";
/// SHA-256 (first 16 bytes) of a body stored as text (payloads carry the store's own checksum).
const BODY_SUM: &str = "sum";
const INITIAL_AGE: &str = "age";
/// How long the origin took to answer, ms (refresh-ahead's cost).
const FETCH_MS: &str = "fetch";
pub(crate) const SIGNATURE: &str = "sig";
const VARY: &str = "vary";
const GENERATION: &str = "gen";
pub(crate) const VARIANTS: &str = "variants";

/// A response as stored.
#[derive(Debug, Clone)]
pub(crate) struct StoredResponse {
    pub(crate) status: StatusCode,
    pub(crate) url: String,
    pub(crate) method: String,
    pub(crate) headers: HeaderMap,
    pub(crate) request_headers: HeaderMap,
    /// When the response was received (or last revalidated), epoch ms.
    pub(crate) received_ms: i64,
    /// Its age when received (RFC 9111 §4.2.3 `corrected_initial_age`), ms.
    pub(crate) initial_age_ms: i64,
    pub(crate) expires_ms: Option<i64>,
    /// How long the origin took to answer it, ms (unknown for responses stored before this
    /// was recorded). Not signed: it only tunes refresh-ahead.
    pub(crate) fetch_ms: Option<i64>,
    pub(crate) body: bytes::Bytes,
}

impl StoredResponse {
    pub(crate) fn response_parts(&self) -> http::response::Parts {
        let mut res = http::Response::new(());
        *res.status_mut() = self.status;
        *res.headers_mut() = self.headers.clone();
        res.into_parts().0
    }
}

/// What a signature covers. Every item the cache follows is signed together with the key it
/// is stored under, so an item copied under another key fails verification.
pub(crate) enum Signed<'a> {
    /// A response: everything served from it except the expiry (which maintenance updates
    /// without reading the body), and its body through the digest of the stored payload, so the
    /// signature can be checked from the head item alone, before any chunk is read.
    Response {
        doc: &'a StoredResponse,
        digest: &'a PayloadDigest,
    },
    /// A redirect alias: where it leads.
    Alias { target: &'a str, url: &'a str },
    /// A `Vary` index: the headers and the generation that name its variants.
    Index { index: &'a VaryIndex },
}

/// The digest of a stored body: how it is stored, and the SHA-256 of the stored bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PayloadDigest {
    pub(crate) format: String,
    pub(crate) sum: Vec<u8>,
}

impl PayloadDigest {
    /// The digest of a response as it is written: its readable body, or its payload.
    pub(crate) fn of_written(attrs: &Item, payload: Option<&crate::store::Payload>) -> Self {
        match (get_s(attrs, BODY), payload) {
            (Some(text), _) => PayloadDigest {
                format: "text".into(),
                sum: codec::checksum(text.as_bytes()),
            },
            (None, Some(p)) => PayloadDigest {
                format: p.format.clone(),
                sum: codec::checksum(&p.data),
            },
            (None, None) => PayloadDigest {
                format: String::new(),
                sum: codec::checksum(b""),
            },
        }
    }

    /// The digest of a stored response as read: from its readable body, its inline payload,
    /// or, for a payload in chunks, the checksum its head records (the chunks are checked
    /// against it when they are read).
    pub(crate) fn of_stored(entry: &crate::store::Entry) -> Self {
        if let Some(chunks) = &entry.chunks
            && let (Some(format), Some(sum)) = (
                get_s(chunks, item::FORMAT),
                item::get_b(chunks, item::CHECKSUM),
            )
        {
            return PayloadDigest {
                format: format.to_owned(),
                sum: sum.to_vec(),
            };
        }
        PayloadDigest::of_written(&entry.item, entry.payload.as_ref())
    }
}

/// The bytes a signature covers (see [`Signed`]).
pub(crate) fn signing_input(key: &str, signed: Signed<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(1024);
    let mut part = |bytes: &[u8]| {
        out.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
        out.extend_from_slice(bytes);
    };
    part(b"dynacache-http-signature-v3");
    part(key.as_bytes());
    match signed {
        Signed::Response { doc, digest } => {
            part(KIND_RESPONSE.as_bytes());
            part(doc.status.as_str().as_bytes());
            part(doc.method.as_bytes());
            part(doc.url.as_bytes());
            part(&doc.received_ms.to_be_bytes());
            part(&doc.initial_age_ms.to_be_bytes());
            for headers in [&doc.headers, &doc.request_headers] {
                let mut pairs: Vec<(&str, &[u8])> = headers
                    .iter()
                    .map(|(n, v)| (n.as_str(), v.as_bytes()))
                    .collect();
                // By name only: the order of a field's lines is part of its meaning (the first
                // stale-while-revalidate wins, for one), and the stored lists keep it.
                pairs.sort_by(|a, b| a.0.cmp(b.0));
                part(&(pairs.len() as u64).to_be_bytes());
                for (n, v) in pairs {
                    part(n.as_bytes());
                    part(v);
                }
            }
            part(digest.format.as_bytes());
            part(&digest.sum);
        }
        Signed::Alias { target, url } => {
            part(KIND_REDIRECT.as_bytes());
            part(target.as_bytes());
            part(url.as_bytes());
        }
        Signed::Index { index } => {
            part(KIND_VARY.as_bytes());
            part(index.generation.as_bytes());
            part(&(index.names.len() as u64).to_be_bytes());
            for name in &index.names {
                part(name.as_bytes());
            }
        }
    }
    out
}

/// Request headers with secrets removed, for storage.
pub(crate) fn redact_headers(headers: &HeaderMap, settings: &Settings) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        if !settings.is_ignored(name.as_str()) {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

/// A URL with ignored query parameters removed, for storage.
pub(crate) fn redact_url(url: &url::Url, settings: &Settings) -> String {
    let mut url = url.clone();
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| !settings.is_ignored(k))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    if url.query().is_some() {
        if pairs.is_empty() {
            url.set_query(None);
        } else {
            url.query_pairs_mut().clear().extend_pairs(pairs);
        }
    }
    url.set_fragment(None);
    url.to_string()
}

fn headers_to_attr(headers: &HeaderMap) -> AttributeValue {
    let mut map: HashMap<String, Vec<AttributeValue>> = HashMap::new();
    for (name, value) in headers {
        let v = match value.to_str() {
            Ok(text) => s(text),
            Err(_) => b(value.as_bytes().to_vec()),
        };
        map.entry(name.as_str().to_owned()).or_default().push(v);
    }
    AttributeValue::M(
        map.into_iter()
            .map(|(k, v)| (k, AttributeValue::L(v)))
            .collect(),
    )
}

fn headers_from_attr(key: &str, attr: Option<&AttributeValue>) -> Result<HeaderMap> {
    let mut headers = HeaderMap::new();
    let Some(attr) = attr else {
        return Ok(headers);
    };
    let map = attr
        .as_m()
        .map_err(|_| Error::corrupt(key, "headers are not a map"))?;
    for (name, values) in map {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| Error::corrupt(key, format!("bad header name {name:?}")))?;
        let values = values
            .as_l()
            .map_err(|_| Error::corrupt(key, "header values are not a list"))?;
        for v in values {
            let value = match v {
                AttributeValue::S(text) => HeaderValue::from_str(text),
                AttributeValue::B(bytes) => HeaderValue::from_bytes(bytes.as_ref()),
                _ => return Err(Error::corrupt(key, "bad header value")),
            }
            .map_err(|_| Error::corrupt(key, "bad header value"))?;
            headers.append(name.clone(), value);
        }
    }
    Ok(headers)
}

/// An HTTP date, clamped to what the format can say (years 1970 to 9999).
fn http_date(ms: i64) -> String {
    super::policy::fmt_http_date(ms)
}

/// The item attributes of a stored response, and its body as a payload unless it is UTF-8 text
/// of at most `readable_max` bytes, stored as a readable string.
pub(crate) fn to_attributes(
    doc: &StoredResponse,
    compress_from: Option<usize>,
    readable_max: usize,
) -> (Item, Option<crate::store::Payload>) {
    let mut attrs = Item::from([
        (KIND.to_owned(), s(KIND_RESPONSE)),
        (STATUS.to_owned(), n(doc.status.as_u16())),
        (URL.to_owned(), s(doc.url.clone())),
        (METHOD.to_owned(), s(doc.method.clone())),
        (HEADERS.to_owned(), headers_to_attr(&doc.headers)),
        (
            REQUEST.to_owned(),
            AttributeValue::M(HashMap::from([
                (METHOD.to_owned(), s(doc.method.clone())),
                (URL.to_owned(), s(doc.url.clone())),
                (HEADERS.to_owned(), headers_to_attr(&doc.request_headers)),
            ])),
        ),
        (CREATED.to_owned(), s(http_date(doc.received_ms))),
        (RECEIVED.to_owned(), n(doc.received_ms)),
        (INITIAL_AGE.to_owned(), n(doc.initial_age_ms)),
        (BODY_SIZE.to_owned(), n(doc.body.len())),
    ]);
    if let Some(f) = doc.fetch_ms {
        attrs.insert(FETCH_MS.to_owned(), n(f));
    }
    if let Some(e) = doc.expires_ms {
        attrs.insert(EXPIRES_TEXT.to_owned(), s(http_date(e)));
    }
    let is_text = doc.body.len() <= readable_max
        && !doc.body.is_empty()
        && is_text_type(&doc.headers)
        && !doc.headers.contains_key(http::header::CONTENT_ENCODING);
    if is_text && let Ok(text) = std::str::from_utf8(&doc.body) {
        attrs.insert(BODY.to_owned(), s(text));
        attrs.insert(BODY_SUM.to_owned(), b(text_sum(text)));
        return (attrs, None);
    }
    let (format, data) = codec::encode_bytes(doc.body.to_vec(), compress_from);
    (
        attrs,
        Some(crate::store::Payload {
            format: format.to_owned(),
            data,
        }),
    )
}

fn text_sum(text: &str) -> Vec<u8> {
    let mut sum = codec::checksum(text.as_bytes());
    sum.truncate(16);
    sum
}

fn is_text_type(headers: &HeaderMap) -> bool {
    let ct = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    ct.starts_with("text/")
        || ct.contains("json")
        || ct.contains("xml")
        || ct.contains("javascript")
        || ct.contains("x-www-form-urlencoded")
}

/// Reads a stored response back; `payload` is the body when it was not stored as text.
/// `deferred`: the body is in chunks not read yet (it is left empty).
pub(crate) fn from_item(
    key: &str,
    item: &Item,
    payload: Option<crate::store::Payload>,
    max_body: usize,
    deferred: bool,
) -> Result<StoredResponse> {
    // Only final statuses are ever stored.
    let status = get_i64(item, STATUS)
        .and_then(|s| s.ok())
        .and_then(|s| u16::try_from(s).ok())
        .filter(|s| (200..=999).contains(s))
        .and_then(|s| StatusCode::from_u16(s).ok())
        .ok_or_else(|| Error::corrupt(key, "bad or missing status"))?;
    let request = item.get(REQUEST).and_then(|r| r.as_m().ok());
    let body = match (item.get(BODY), payload) {
        (Some(AttributeValue::S(text)), _) => {
            if item::get_b(item, BODY_SUM) != Some(text_sum(text).as_slice()) {
                return Err(Error::corrupt(key, "the body does not match its checksum"));
            }
            bytes::Bytes::from(text.clone().into_bytes())
        }
        (_, Some(p)) => codec::decode_bytes(key, &p.format, p.data, max_body)?.into(),
        (None, None) => bytes::Bytes::new(),
        _ => return Err(Error::corrupt(key, "bad body")),
    };
    if !deferred
        && let Some(Ok(size)) = get_i64(item, BODY_SIZE)
        && size != body.len() as i64
    {
        return Err(Error::corrupt(key, "body size does not match"));
    }
    Ok(StoredResponse {
        status,
        url: get_s(item, URL).unwrap_or_default().to_owned(),
        method: get_s(item, METHOD).unwrap_or("GET").to_owned(),
        headers: headers_from_attr(key, item.get(HEADERS))?,
        request_headers: headers_from_attr(key, request.and_then(|r| r.get(HEADERS)))?,
        received_ms: get_i64(item, RECEIVED)
            .or_else(|| get_i64(item, item::WRITTEN))
            .and_then(|w| w.ok())
            .unwrap_or(0),
        initial_age_ms: get_i64(item, INITIAL_AGE)
            .and_then(|a| a.ok())
            .unwrap_or(0)
            .max(0),
        expires_ms: get_i64(item, item::EXPIRES).and_then(|e| e.ok()),
        fetch_ms: get_i64(item, FETCH_MS)
            .and_then(|f| f.ok())
            .filter(|f| *f >= 0),
        body,
    })
}

/// The attributes of a stored response that a revalidation changes: its headers, when it was
/// received and its age then, and the readable expiry.
pub(crate) fn metadata_attributes(doc: &StoredResponse) -> Item {
    Item::from([
        (HEADERS.to_owned(), headers_to_attr(&doc.headers)),
        (RECEIVED.to_owned(), n(doc.received_ms)),
        (INITIAL_AGE.to_owned(), n(doc.initial_age_ms)),
        (
            EXPIRES_TEXT.to_owned(),
            s(doc.expires_ms.map_or_else(|| "never".to_owned(), http_date)),
        ),
    ])
}

/// A `Vary` index: the request headers a URL's responses vary on, and the generation that
/// names the current variants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VaryIndex {
    pub(crate) names: Vec<String>,
    pub(crate) generation: String,
    /// The variant suffixes written under this index (for deletion).
    pub(crate) variants: Vec<String>,
}

impl VaryIndex {
    /// A new index, with a fresh generation.
    pub(crate) fn new(names: Vec<String>) -> Self {
        VaryIndex {
            names,
            generation: format!("{:016x}", fastrand::u64(..)),
            variants: Vec::new(),
        }
    }
}

/// The attributes of a `Vary` index item.
pub(crate) fn index_attributes(index: &VaryIndex, url: &str) -> Item {
    let mut attrs = Item::from([
        (KIND.to_owned(), s(KIND_VARY)),
        (URL.to_owned(), s(url)),
        (
            VARY.to_owned(),
            AttributeValue::L(index.names.iter().map(|n| s(n.clone())).collect()),
        ),
        (GENERATION.to_owned(), s(index.generation.clone())),
    ]);
    if !index.variants.is_empty() {
        attrs.insert(
            VARIANTS.to_owned(),
            AttributeValue::Ss(index.variants.clone()),
        );
    }
    attrs
}

/// How many variants an index lists for deletion; past that, deleting the index still makes
/// every variant unreachable, and their TTL removes them. Keeps the index small (it is read
/// on every hit of the URL).
pub(crate) const MAX_LISTED_VARIANTS: usize = 64;

/// The condition "no index (of any generation) is stored here".
pub(crate) fn no_generation_condition() -> crate::store::Condition {
    crate::store::Condition::AbsentOrWithout(GENERATION)
}

/// The condition "nothing, or a redirect alias, is stored here" (an alias never replaces a
/// response or an index).
pub(crate) fn alias_condition() -> crate::store::Condition {
    crate::store::Condition::AbsentOr(KIND, s(KIND_REDIRECT))
}

/// The condition "this index still has that generation".
pub(crate) fn generation_condition(index: &VaryIndex) -> crate::store::Condition {
    crate::store::Condition::Equals(GENERATION, s(index.generation.clone()))
}

/// The `Vary` index an item holds, if it is one.
pub(crate) fn vary_index(item: &Item) -> Option<VaryIndex> {
    if get_s(item, KIND) != Some(KIND_VARY) {
        return None;
    }
    let strings = |name: &str| -> Vec<String> {
        match item.get(name) {
            Some(AttributeValue::L(l)) => l.iter().filter_map(|v| v.as_s().ok().cloned()).collect(),
            Some(AttributeValue::Ss(v)) => v.clone(),
            _ => Vec::new(),
        }
    };
    Some(VaryIndex {
        names: strings(VARY),
        generation: get_s(item, GENERATION).unwrap_or_default().to_owned(),
        variants: strings(VARIANTS),
    })
}

/// The attributes of a redirect alias: the key of the final URL points to the response stored
/// for the URL that redirected to it.
pub(crate) fn redirect_attributes(target: &str, url: &str) -> Item {
    Item::from([
        (KIND.to_owned(), s(KIND_REDIRECT)),
        (URL.to_owned(), s(url)),
        (TARGET.to_owned(), s(target)),
    ])
}

/// The body size a stored response declares.
pub(crate) fn body_size(item: &Item) -> Option<u64> {
    get_i64(item, BODY_SIZE)?
        .ok()
        .and_then(|s| u64::try_from(s).ok())
}

/// Whether an item is a stored response (not an index or an alias).
pub(crate) fn is_response(item: &Item) -> bool {
    get_s(item, KIND) == Some(KIND_RESPONSE)
}

/// The URL a redirect alias item was written for.
pub(crate) fn redirect_url(item: &Item) -> &str {
    get_s(item, URL).unwrap_or_default()
}

pub(crate) fn redirect_target(item: &Item) -> Option<String> {
    if get_s(item, KIND) != Some(KIND_REDIRECT) {
        return None;
    }
    get_s(item, TARGET).map(str::to_owned)
}
