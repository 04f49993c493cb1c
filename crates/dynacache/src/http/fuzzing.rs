//! What the fuzz harness (`src/fuzz.rs`) needs from the HTTP cache: a signed stored response
//! built the way the cache writes one, and the reading and verification a lookup applies.

use bytes::Bytes;
use http::{HeaderMap, StatusCode};

use super::document::{self, PayloadDigest, Signed, StoredResponse};
use crate::codec;
use crate::store::{Decoded, Stamp, Store};
use crate::table::item::{Item, b, get_b};

const SECRET: &[u8] = b"fuzz secret";

/// What a client would be served from a stored response.
#[derive(Debug, PartialEq)]
pub(crate) struct Served {
    status: StatusCode,
    url: String,
    headers: HeaderMap,
    request_headers: HeaderMap,
    received_ms: i64,
    body: Bytes,
}

impl Served {
    fn of(doc: &StoredResponse) -> Self {
        Served {
            status: doc.status,
            url: doc.url.clone(),
            headers: doc.headers.clone(),
            request_headers: doc.request_headers.clone(),
            received_ms: doc.received_ms,
            body: doc.body.clone(),
        }
    }
}

/// A response stored the way the cache stores it (readable text or a payload), signed.
pub(crate) fn signed_item(store: &Store, body: &[u8], seed: u64) -> (String, Item, Served) {
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        "application/json".parse().unwrap(),
    );
    headers.insert(http::header::ETAG, format!("\"{seed}\"").parse().unwrap());
    let doc = StoredResponse {
        status: StatusCode::OK,
        url: format!("https://example.com/{seed}"),
        method: "GET".into(),
        headers,
        request_headers: HeaderMap::new(),
        received_ms: 1_000,
        initial_age_ms: 0,
        expires_ms: Some(i64::MAX / 2),
        fetch_ms: Some(3),
        body: Bytes::copy_from_slice(body),
    };
    let key = format!("{seed:032x}");
    let (mut attrs, payload) = document::to_attributes(&doc, Some(64), 4096);
    let digest = PayloadDigest::of_written(&attrs, payload.as_ref());
    let input = document::signing_input(
        &key,
        Signed::Response {
            doc: &doc,
            digest: &digest,
        },
    );
    attrs.insert(
        document::SIGNATURE.to_owned(),
        b(codec::hmac(SECRET, &input)),
    );
    let stamp = Stamp {
        now: doc.received_ms,
        expires: doc.expires_ms,
    };
    let stored_key = store.key(key.as_bytes()).unwrap();
    let item = store
        .inline_item(&stored_key, attrs, payload, stamp)
        .unwrap_or_else(|_| panic!("a small body fits inline"));
    (key, item, Served::of(&doc))
}

/// Reads a stored response back as a lookup does, signature checked: `Ok(None)` when it is
/// not served (absent, or failing verification).
pub(crate) fn read_verified(store: &Store, key: &str, item: Item) -> crate::Result<Option<Served>> {
    let stored_key = store.key(key.as_bytes())?;
    let entry = match store.decode_item(&stored_key, item, true, true)? {
        Decoded::Entry(entry) => entry,
        Decoded::Absent | Decoded::Chunked(_) => return Ok(None),
    };
    let digest = PayloadDigest::of_stored(&entry);
    let deferred = entry.is_deferred();
    let doc = document::from_item(key, &entry.item, entry.payload, 1 << 20, deferred)?;
    if deferred {
        return Ok(None);
    }
    let input = document::signing_input(
        key,
        Signed::Response {
            doc: &doc,
            digest: &digest,
        },
    );
    let verified = get_b(&entry.item, document::SIGNATURE)
        .is_some_and(|sig| codec::signed_by_any(&[SECRET.to_vec()], &input, sig));
    Ok(verified.then(|| Served::of(&doc)))
}

/// What a lookup reads from an alias or index item.
pub(crate) fn follow(item: &Item) -> (Option<String>, Option<document::VaryIndex>) {
    let _ = document::redirect_url(item);
    (document::redirect_target(item), document::vary_index(item))
}
