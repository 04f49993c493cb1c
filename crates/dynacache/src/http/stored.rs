//! Stored responses: finding one for a request (through redirect aliases and `Vary` indexes),
//! storing what the origin sends, updating one after a 304, and removing them (deletions and
//! invalidation). The item layout is [`document`](super::document)'s.

use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use http::{HeaderMap, Method, Request, Response, request};
use http_body::Body;

use super::body::{BoxError, CacheBody, Limited, read_limited};
use super::document::{self, StoredResponse, VaryIndex};
use super::engine::{FinalUrl, HttpCache, Incoming, passed_through};
use super::facts::{CacheFacts, bump};
use super::key::{variant_key, variant_suffix};
use super::policy::{self, StoredMeta};
use crate::clock::millis_to_system_time;
use crate::error::Result;
use crate::store::{Condition, Entry, Stamp};
use crate::table::item::{Item, b, get_b};

/// A stored response found for a request.
#[derive(Debug, Clone)]
pub(crate) struct Found {
    pub(crate) key: String,
    pub(crate) doc: StoredResponse,
    /// For a body stored in chunks: the head attributes naming them, to re-date them.
    pub(crate) chunks: Option<Item>,
    /// When the item was written: a 304 updates it only if it is still that one.
    pub(crate) written: i64,
    /// The digest of its stored body, when signing is on (a 304's update is signed with it).
    pub(crate) digest: Option<document::PayloadDigest>,
    /// The stored item, when its body is in chunks not read yet (a range request may need
    /// only some of them).
    pub(crate) deferred: Option<Item>,
    /// The part of the body a range request needs, read alone.
    pub(crate) part: Option<Part>,
    /// A large body left in its chunks, to be streamed from them as it is sent.
    pub(crate) stream: Option<Streamed>,
}

/// A body to stream from its chunks: the head attributes naming them (checked), and its
/// length.
#[derive(Debug, Clone)]
pub(crate) struct Streamed {
    pub(crate) head: Item,
    pub(crate) len: u64,
    /// The stream `ready` started for this request, its first part read (so that a body that
    /// cannot be read is a miss, not a broken answer); `reply` takes it.
    pub(crate) started: Option<Arc<std::sync::Mutex<Option<StartedStream>>>>,
}

impl Streamed {
    /// The same body, for another request to stream on its own.
    pub(crate) fn unstarted(&self) -> Streamed {
        Streamed {
            head: self.head.clone(),
            len: self.len,
            started: None,
        }
    }
}

/// A stream of a body's chunks, its first part already read.
#[derive(Debug)]
pub(crate) struct StartedStream {
    pub(crate) first: Bytes,
    pub(crate) rest: tokio::sync::mpsc::Receiver<crate::Result<Bytes>>,
}

/// Bodies in chunks at least this large are streamed from their chunks as they are sent (when
/// they are stored uncompressed, signing is off, and the whole body is asked for), not read
/// whole first: memory per response stays at a few MB (two chunks read at a time).
pub(crate) const STREAMED_BODY_MIN: u64 = 4 * 1024 * 1024;

/// Bytes `start..=end` of a body of `len` bytes.
#[derive(Debug, Clone)]
pub(crate) struct Part {
    pub(crate) start: u64,
    pub(crate) end: u64,
    pub(crate) len: u64,
    pub(crate) bytes: Bytes,
}

impl Found {
    /// Whether it is stale at `now`.
    pub(crate) fn is_stale(&self, now: i64) -> bool {
        self.doc.expires_ms.is_some_and(|e| e <= now)
    }

    pub(crate) fn meta(&self) -> StoredMeta<'_> {
        StoredMeta {
            headers: &self.doc.headers,
            response_time_ms: self.doc.received_ms,
            initial_age_ms: self.doc.initial_age_ms,
            expires_ms: self.doc.expires_ms,
        }
    }
}

/// What a lookup found under a request's key.
#[derive(Debug)]
pub(crate) struct Lookup {
    /// The key responses to the request are stored under (a redirect alias's target, if one
    /// was followed).
    pub(crate) base: String,
    /// The `Vary` index stored there, if any.
    pub(crate) index: Option<VaryIndex>,
    /// The response for this request (its variant).
    pub(crate) found: Option<Found>,
}

impl Lookup {
    pub(crate) fn empty(base: String) -> Self {
        Lookup {
            base,
            index: None,
            found: None,
        }
    }

    /// What concurrent misses share a trip on: the variant when the index is known, else the
    /// key (waiting requests then check that the leader's variant is theirs).
    pub(crate) fn coalescing_key(&self, headers: &HeaderMap) -> String {
        match &self.index {
            Some(index) => variant_key(&self.base, &variant_suffix(index, headers)),
            None => self.base.clone(),
        }
    }
}

/// What the in-process tier keeps under a key: a lookup as the table resolved it (the base
/// after a redirect alias, its `Vary` index) and, unless the response varies, the response.
/// Variants are kept under their own keys.
#[derive(Debug)]
pub(crate) struct Kept {
    base: String,
    index: Option<VaryIndex>,
    found: Option<Found>,
}

/// The bytes a kept response weighs.
fn weight(found: &Found) -> usize {
    found.doc.body.len()
        + found
            .doc
            .headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len())
            .sum::<usize>()
        + 256
}

/// What a leader shares with the requests that waited for it: the response as stored.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) key: String,
    pub(crate) doc: StoredResponse,
    /// The body, when it streams from its chunks (`doc` has none then).
    pub(crate) stream: Option<Streamed>,
    pub(crate) index: Option<VaryIndex>,
    pub(crate) suffix: String,
}

impl HttpCache {
    async fn read(&self, key: &str, defer: bool) -> Result<Option<Entry>> {
        let store = &self.inner.store;
        let key = store.key(key.as_bytes())?;
        if defer {
            store.get_deferred(&key, true).await
        } else {
            store.get(&key, true).await
        }
    }

    /// The lookup the in-process tier keeps for a request's key (and variant), if any.
    pub(crate) fn lookup_kept(&self, base: &str, headers: &HeaderMap) -> Option<Lookup> {
        let tier = self.inner.tier.as_ref()?;
        let kept = tier.get(base)?;
        let found = match &kept.index {
            None => kept.found.clone()?,
            Some(index) => {
                let variant = variant_key(&kept.base, &variant_suffix(index, headers));
                tier.get(&variant)?.found.clone()?
            }
        };
        Some(Lookup {
            base: kept.base.clone(),
            index: kept.index.clone(),
            found: Some(found),
        })
    }

    /// Keeps what a table lookup (started at `read`) found, whole bodies only.
    pub(crate) fn keep(&self, read: crate::tier::ReadStart, lookup: &Lookup) {
        let (Some(tier), Some(found)) = (&self.inner.tier, &lookup.found) else {
            return;
        };
        if found.deferred.is_some() {
            return;
        }
        let requested = found.key.clone();
        self.keep_found(
            tier,
            Some(read),
            &lookup.base,
            lookup.index.as_ref(),
            &requested,
            found,
        );
    }

    /// Keeps a response this cache just stored, revalidated or read whole.
    pub(crate) fn remember(&self, lookup: &Lookup, found: &Found) {
        if let Some(tier) = &self.inner.tier {
            tier.invalidate(&found.key);
            self.keep_found(
                tier,
                None,
                &lookup.base,
                lookup.index.as_ref(),
                &found.key,
                found,
            );
        }
    }

    fn keep_found(
        &self,
        tier: &crate::tier::Tier<String, Kept>,
        read: Option<crate::tier::ReadStart>,
        base: &str,
        index: Option<&VaryIndex>,
        key: &str,
        found: &Found,
    ) {
        // A body streamed from its chunks is not kept (it is not in `found`); its head is kept
        // when it is looked up, and each hit streams again.
        if found.stream.is_some() {
            return;
        }
        let insert = |key: String, kept: Kept, bytes: usize, expires: Option<i64>| match read {
            Some(read) => tier.insert_read(read, key, Arc::new(kept), bytes, expires),
            None => tier.insert(key, Arc::new(kept), bytes, expires),
        };
        let expires = found.doc.expires_ms;
        let mut found = found.clone();
        found.part = None;
        let bytes = weight(&found);
        match index {
            Some(index) => {
                let lookup = Kept {
                    base: base.to_owned(),
                    index: Some(index.clone()),
                    found: None,
                };
                insert(base.to_owned(), lookup, 256, None);
                let variant = Kept {
                    base: base.to_owned(),
                    index: None,
                    found: Some(found),
                };
                insert(key.to_owned(), variant, bytes, expires);
            }
            None => {
                let kept = Kept {
                    base: base.to_owned(),
                    index: None,
                    found: Some(found),
                };
                insert(key.to_owned(), kept, bytes, expires);
            }
        }
    }

    /// Finds the stored response for a request: follows a redirect alias once, then a `Vary`
    /// index to the request's variant. With signing on, every item followed must verify
    /// against the key it was read from. `filter_fn` applies. `defer_body`: leave a body
    /// stored in chunks unread ([`ready`](HttpCache::ready) reads what the request needs);
    /// signatures are checked from the head alone, so this holds with signing on too.
    pub(crate) async fn lookup(
        &self,
        base: &str,
        headers: &HeaderMap,
        defer_body: bool,
    ) -> Result<Lookup> {
        let defer = defer_body;
        let mut lookup = Lookup::empty(base.to_owned());
        let Some(mut entry) = self.read(base, defer).await? else {
            return Ok(lookup);
        };
        // A redirect alias (this URL was the target of a redirect another request followed).
        if let Some(target) = document::redirect_target(&entry.item) {
            let url = document::redirect_url(&entry.item).to_owned();
            let signed = document::Signed::Alias {
                target: &target,
                url: &url,
            };
            if !self.verified(base, &entry.item, signed) {
                return Ok(lookup);
            }
            match self.read(&target, defer).await? {
                // One alias is followed, never a chain.
                Some(e) if document::redirect_target(&e.item).is_none() => {
                    (entry, lookup.base) = (e, target)
                }
                _ => return Ok(lookup),
            }
        }
        let key = match document::vary_index(&entry.item) {
            None => lookup.base.clone(),
            Some(index) => {
                let signed = document::Signed::Index { index: &index };
                if !self.verified(&lookup.base, &entry.item, signed) {
                    return Ok(lookup);
                }
                let key = variant_key(&lookup.base, &variant_suffix(&index, headers));
                lookup.index = Some(index);
                match self.read(&key, defer).await? {
                    Some(variant) => entry = variant,
                    None => return Ok(lookup),
                }
                key
            }
        };
        let is_deferred = entry.is_deferred();
        let written = entry.written();
        let digest = (!self.inner.secret_keys.is_empty())
            .then(|| document::PayloadDigest::of_stored(&entry));
        let Entry {
            item,
            payload,
            chunks,
        } = entry;
        let doc = document::from_item(
            &key,
            &item,
            payload,
            self.inner.settings.max_body_size,
            is_deferred,
        )?;
        if let Some(digest) = &digest {
            let signed = document::Signed::Response { doc: &doc, digest };
            if !self.verified(&key, &item, signed) {
                return Ok(lookup);
            }
        }
        if let Some(filter) = &self.inner.settings.filter_fn
            && !filter(&doc.response_parts())
        {
            if !self.inner.settings.read_only
                && let Err(e) = self.remove_keys([key.clone()]).await
            {
                self.storage_error("deleting a filtered response", &e);
            }
            return Ok(lookup);
        }
        lookup.found = Some(Found {
            key,
            doc,
            written,
            chunks,
            digest,
            deferred: is_deferred.then_some(item),
            part: None,
            stream: None,
        });
        Ok(lookup)
    }

    /// Makes a found response ready to answer `incoming`: a body left in its chunks is read,
    /// only the chunks a single range needs when the body is stored uncompressed, else whole.
    /// `None` when the body cannot be read (it is gone, or damaged: counted and logged).
    pub(crate) async fn ready(&self, mut found: Found, incoming: &Incoming) -> Option<Found> {
        let Some(item) = found.deferred.take() else {
            return Some(found);
        };
        let store = &self.inner.store;
        let result = async {
            let key = store.key(found.key.as_bytes())?;
            let Some(head) = found.chunks.as_ref() else {
                return Ok(None);
            };
            let len = document::body_size(&item).unwrap_or(0);
            // A part is checked against its chunks' own checksums, which a signature does not
            // cover: with signing on, the whole body is read and checked against the signed
            // digest.
            let raw = crate::table::item::get_s(head, crate::table::item::FORMAT)
                == Some(crate::codec::FORMAT_RAW)
                && self.inner.secret_keys.is_empty();
            if raw
                && len >= STREAMED_BODY_MIN
                && incoming.parts.method == http::Method::GET
                && !incoming.parts.headers.contains_key(http::header::RANGE)
                // A head that does not check out is read (and found damaged) as before.
                && let Ok(Some(size)) = store.streamable_size(&key, head)
                && size == len
            {
                let Some((_, mut rest)) = store.stream_chunks(&key, head)? else {
                    return Ok(None);
                };
                // The first part is read before the answer is committed: a body replaced or
                // damaged from the start is a miss, as a whole read would make it.
                let first = match rest.recv().await {
                    Some(Ok(first)) => first,
                    Some(Err(e)) => return Err(e),
                    None => return Ok(None),
                };
                let started = StartedStream { first, rest };
                return Ok(Some((
                    None,
                    None,
                    Some(Streamed {
                        head: head.clone(),
                        len,
                        started: Some(Arc::new(std::sync::Mutex::new(Some(started)))),
                    }),
                )));
            }
            if raw
                && let policy::RangeAnswer::Partial { start, end } = policy::evaluate_range(
                    &incoming.parts.method,
                    &incoming.parts.headers,
                    found.doc.status,
                    &found.doc.headers,
                    len,
                    self.now(),
                )
                && let Some(bytes) = store.read_chunk_range(&key, head, start, end).await?
            {
                let part = Part {
                    start,
                    end,
                    len,
                    bytes: Bytes::from(bytes),
                };
                return Ok(Some((None, Some(part), None)));
            }
            let version = crate::store::payload_id(&item).map(str::to_owned);
            let entry = Entry {
                item,
                payload: None,
                chunks: found.chunks.clone(),
            };
            match store.read_deferred(&key, entry, true).await? {
                // Replaced while it was read: the headers and the decision made on them belong
                // to the response looked up, not to this one. A miss, not a mix of the two.
                Some(entry) if crate::store::payload_id(&entry.item) != version.as_deref() => {
                    Ok(None)
                }
                Some(entry) => {
                    let doc = document::from_item(
                        &found.key,
                        &entry.item,
                        entry.payload,
                        self.inner.settings.max_body_size,
                        false,
                    )?;
                    Ok(Some((Some(doc.body), None, None)))
                }
                None => Ok(None),
            }
        }
        .await;
        match result {
            Ok(Some((body, part, stream))) => {
                if let Some(body) = body {
                    found.doc.body = body;
                }
                found.part = part;
                found.stream = stream;
                Some(found)
            }
            Ok(None) => None,
            Err(e) => {
                self.storage_error("reading a stored body", &e);
                None
            }
        }
    }

    /// Stores a response from the origin if the rules allow, and answers the request with it.
    /// Also invalidates what an unsafe method changed. Storage failures are logged, never
    /// returned. Returns what coalesced requests may share: the response, if it was stored.
    pub(crate) async fn store_and_answer<B>(
        &self,
        incoming: &Incoming,
        lookup: &Lookup,
        res: Response<B>,
        request_time: i64,
    ) -> (Response<CacheBody<B>>, Option<Arc<Shared>>)
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: Into<BoxError>,
    {
        self.invalidate_after(incoming, res.status(), res.headers())
            .await;
        let settings = &self.inner.settings;
        if settings.read_only {
            return (passed_through(res), None);
        }
        let response_time = self.now();
        let exchange = policy::Exchange {
            request_headers: &incoming.parts.headers,
            status: res.status(),
            headers: res.headers(),
            request_time_ms: request_time,
            response_time_ms: response_time,
        };
        let Ok(plan) = policy::storable(&exchange, &self.inner.policy, incoming.fallback) else {
            return (passed_through(res), None);
        };
        let (rparts, body) = res.into_parts();
        if let Some(filter) = &settings.filter_fn
            && !filter(&rparts)
        {
            return (passed_through(Response::from_parts(rparts, body)), None);
        }
        let final_url = rparts
            .extensions
            .get::<FinalUrl>()
            .map(|u| u.0.clone())
            .filter(|u| {
                super::key::normalize_url(u, settings)
                    != super::key::normalize_url(&incoming.url, settings)
            });
        // The client followed a redirect: this is the final URL's response, not the requested
        // one's, and the redirect's own cacheability was never seen. A private cache stores it
        // under the requested URL anyway (its one user asked for that URL); a shared cache must
        // not (`/me` redirecting privately to `/users/42` would serve user 42 to everyone).
        if final_url.is_some() && self.inner.policy.shared {
            return (passed_through(Response::from_parts(rparts, body)), None);
        }
        let declared = rparts
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > settings.max_body_size as u64) {
            return (passed_through(Response::from_parts(rparts, body)), None);
        }
        let body = match read_limited(body, settings.max_body_size).await {
            Ok(Limited::Complete(bytes)) => bytes,
            Ok(Limited::TooLarge(prefix, rest)) => {
                let mut res = Response::from_parts(rparts, CacheBody::streaming(prefix, rest));
                res.extensions_mut().insert(CacheFacts::default());
                return (res, None);
            }
            Err(e) => {
                tracing::debug!(error = %e, "response body failed while being read");
                let mut res = Response::from_parts(rparts, CacheBody::broken(e));
                res.headers_mut().remove(http::header::CONTENT_LENGTH);
                res.extensions_mut().insert(CacheFacts::default());
                return (res, None);
            }
        };
        let mut stored_headers = rparts.headers.clone();
        for name in &plan.strip {
            stored_headers.remove(name);
        }
        let doc = StoredResponse {
            status: rparts.status,
            url: document::redact_url(final_url.as_ref().unwrap_or(&incoming.url), settings),
            method: incoming.method.to_string(),
            headers: stored_headers,
            request_headers: document::redact_headers(&incoming.parts.headers, settings),
            received_ms: response_time,
            initial_age_ms: plan.initial_age_ms,
            expires_ms: plan.expires_ms,
            // At least a millisecond: refresh-ahead scales with it.
            fetch_ms: Some((response_time - request_time).max(1)),
            body: body.clone(),
        };
        let (key, index, suffix) = match policy::vary(&rparts.headers) {
            policy::Vary::Names(names) => {
                let index = match &lookup.index {
                    Some(index) if index.names == names => index.clone(),
                    _ => VaryIndex::new(names),
                };
                let suffix = variant_suffix(&index, &incoming.parts.headers);
                (variant_key(&lookup.base, &suffix), Some(index), suffix)
            }
            _ => (lookup.base.clone(), None, String::new()),
        };
        let replacing = match (&index, &lookup.index) {
            (None, _) => None,
            (Some(index), Some(seen)) if index == seen => None,
            (Some(_), seen) => Some(seen.clone()),
        };
        let mut facts = CacheFacts {
            created_at: Some(millis_to_system_time(response_time)),
            expires: doc.expires_ms.map(millis_to_system_time),
            is_expired: doc.expires_ms.is_some_and(|e| e <= response_time),
            ..CacheFacts::default()
        };
        facts.cache_key = Some(key.clone());
        if self.inner.secret_keys.is_empty() {
            // This process's own write is seen here at once. (Signed responses are kept when
            // read back: a revalidation re-signs with the digest the read computes.)
            let stored = Lookup {
                base: lookup.base.clone(),
                index: index.clone(),
                found: None,
            };
            let found = Found {
                key: key.clone(),
                doc: doc.clone(),
                written: doc.received_ms,
                digest: None,
                chunks: None,
                deferred: None,
                part: None,
                stream: None,
            };
            self.remember(&stored, &found);
        }
        // Waiting requests may share it: it is storable, whether or not the write lands.
        let shared = Arc::new(Shared {
            key: key.clone(),
            doc: doc.clone(),
            stream: None,
            index: index.clone(),
            suffix: suffix.clone(),
        });
        let alias = final_url
            .as_ref()
            .and_then(|url| Some((self.alias_key(incoming, url)?, url.clone())));
        let cache = self.clone();
        let base = lookup.base.clone();
        let tags = super::tags::tags_of(&rparts.headers, &settings.tag_fields);
        self.write_behind("storing a response", async move {
            // The tags' index first: a stored response can always be purged by its tags.
            if !tags.is_empty() {
                cache.index_tags(&base, &tags).await?;
            }
            cache
                .write_response(&base, &key, index.as_ref(), replacing, &suffix, &doc)
                .await?;
            bump(&cache.inner.counters.stored);
            crate::metrics::stored("http");
            if let Some((alias, url)) = alias {
                cache
                    .write_redirect_alias(&base, &alias, &url, doc.expires_ms)
                    .await?;
            }
            Ok(())
        })
        .await;
        let shared = Some(shared);
        let mut res = Response::from_parts(rparts, CacheBody::full(body.clone()));
        res.extensions_mut().insert(facts);
        let res = super::reply::answer_fresh(res, incoming, body, response_time);
        (res, shared)
    }

    /// Writes a response item, and the `Vary` index naming it. `replacing`: the index is new
    /// (it replaces the one seen, if any, and only that one).
    async fn write_response(
        &self,
        base: &str,
        key: &str,
        index: Option<&VaryIndex>,
        replacing: Option<Option<VaryIndex>>,
        suffix: &str,
        doc: &StoredResponse,
    ) -> Result<()> {
        let store = &self.inner.store;
        let stamp = Stamp {
            now: doc.received_ms,
            expires: doc.expires_ms,
        };
        let (mut attrs, payload) =
            document::to_attributes(doc, Some(1024), self.inner.settings.readable_body_max);
        if !self.inner.secret_keys.is_empty() {
            let digest = document::PayloadDigest::of_written(&attrs, payload.as_ref());
            let signed = document::Signed::Response {
                doc,
                digest: &digest,
            };
            if let Some(signature) = self.sign(key, signed) {
                attrs.insert(document::SIGNATURE.to_owned(), b(signature));
            }
        }
        // The variant first: an index naming a missing variant is a miss, a variant no index
        // names is unreachable.
        store
            .put(&store.key(key.as_bytes())?, attrs, payload, stamp, None)
            .await?;
        let Some(index) = index else {
            return Ok(());
        };
        let base_key = store.key(base.as_bytes())?;
        let Some(seen) = replacing else {
            // The index already names this generation: list the variant, so that deletions
            // find it, while the list is short (past that, deleting the index still makes every
            // variant unreachable, and their TTL removes them).
            if index.variants.len() < document::MAX_LISTED_VARIANTS
                && !index.variants.iter().any(|v| v == suffix)
            {
                store
                    .add_to_set(
                        &base_key,
                        document::VARIANTS,
                        suffix,
                        document::generation_condition(index),
                    )
                    .await?;
            }
            return Ok(());
        };
        // A new generation replaces the index seen (or takes an empty place), and only that:
        // if another process changed it meanwhile, its index stays and this variant is simply
        // unreachable.
        let mut index = index.clone();
        index.variants = vec![suffix.to_owned()];
        let stamp = Stamp {
            now: doc.received_ms,
            expires: None,
        };
        let when = match &seen {
            Some(seen) => document::generation_condition(seen),
            None => document::no_generation_condition(),
        };
        let mut attrs = document::index_attributes(&index, &doc.url);
        if let Some(signature) = self.sign(base, document::Signed::Index { index: &index }) {
            attrs.insert(document::SIGNATURE.to_owned(), b(signature));
        }
        store
            .put_if(&base_key, attrs, None, stamp, when)
            .await
            .map(|_| ())
    }

    /// The key a redirect alias for `final_url` goes under, when the request was a GET
    /// redirected to another URL.
    fn alias_key(&self, incoming: &Incoming, final_url: &url::Url) -> Option<String> {
        let settings = &self.inner.settings;
        if incoming.method != Method::GET
            || super::key::normalize_url(final_url, settings)
                == super::key::normalize_url(&incoming.url, settings)
        {
            return None;
        }
        let mut parts = incoming.parts.clone();
        parts.method = Method::GET;
        parts.uri = final_url.as_str().parse().ok()?;
        Some(self.key_for_parts(&parts, final_url, &[]))
    }

    /// Stores an alias under the final URL's key pointing to the response stored for the
    /// requested URL, so that every process sharing the table gets a hit for the final URL too.
    async fn write_redirect_alias(
        &self,
        base: &str,
        alias: &str,
        final_url: &url::Url,
        expires: Option<i64>,
    ) -> Result<()> {
        let store = &self.inner.store;
        let url = document::redact_url(final_url, &self.inner.settings);
        let mut attrs = document::redirect_attributes(base, &url);
        let signed = document::Signed::Alias {
            target: base,
            url: &url,
        };
        if let Some(signature) = self.sign(alias, signed) {
            attrs.insert(document::SIGNATURE.to_owned(), b(signature));
        }
        let stamp = Stamp {
            now: self.now(),
            expires,
        };
        // Never over a response or a `Vary` index stored for the final URL itself.
        store
            .put_if(
                &store.key(alias.as_bytes())?,
                attrs,
                None,
                stamp,
                document::alias_condition(),
            )
            .await
            .map(|_| ())
    }

    /// Updates a stored response with a 304's headers (RFC 9111 §4.3.4) and stores its new
    /// freshness without rewriting the body (a chunked body's chunks get the new TTL, nothing
    /// else). If the updated response may no longer be stored, it is deleted.
    pub(crate) async fn apply_not_modified(
        &self,
        found: &Found,
        incoming: &Incoming,
        not_modified: &HeaderMap,
        request_time: i64,
    ) -> Found {
        let now = self.now();
        let mut doc = found.doc.clone();
        // A 304 without Age was validated by the origin for this request (RFC 9111 §5.1): the
        // stored response's old Age no longer applies (one in the 304 replaces it). Likewise a
        // 304 without Date is dated now (RFC 9110 §6.6.1), not by the old response's Date.
        doc.headers.remove(http::header::AGE);
        if let Ok(date) = http::HeaderValue::from_str(&policy::fmt_http_date(now)) {
            doc.headers.insert(http::header::DATE, date);
        }
        policy::merge_not_modified(&mut doc.headers, not_modified);
        let exchange = policy::Exchange {
            request_headers: &incoming.parts.headers,
            status: doc.status,
            headers: &doc.headers,
            request_time_ms: request_time,
            response_time_ms: now,
        };
        let plan = policy::storable(&exchange, &self.inner.policy, incoming.fallback);
        doc.received_ms = now;
        let storable = plan.is_ok();
        if let Ok(plan) = plan {
            for name in &plan.strip {
                doc.headers.remove(name);
            }
            doc.initial_age_ms = plan.initial_age_ms;
            doc.expires_ms = plan.expires_ms;
        } else {
            doc.initial_age_ms = 0;
            doc.expires_ms = Some(now);
        }
        if let Some(tier) = &self.inner.tier {
            tier.invalidate(&found.key);
        }
        if !self.inner.settings.read_only {
            let cache = self.clone();
            let (found, updated) = (found.clone(), doc.clone());
            self.write_behind("updating a revalidated response", async move {
                if storable {
                    cache.update_metadata(&found, &updated).await
                } else {
                    // The updated response may no longer be stored.
                    cache.remove_keys([found.key.clone()]).await.map(|_| ())
                }
            })
            .await;
        }
        Found {
            key: found.key.clone(),
            doc,
            written: found.written,
            digest: found.digest.clone(),
            chunks: found.chunks.clone(),
            deferred: found.deferred.clone(),
            part: None,
            stream: None,
        }
    }

    /// Stores a revalidated response's new metadata, unless another process replaced the
    /// stored response meanwhile: the new headers describe the body that was revalidated, and
    /// must never land on another one.
    async fn update_metadata(&self, found: &Found, doc: &StoredResponse) -> Result<()> {
        let store = &self.inner.store;
        let mut sets = document::metadata_attributes(doc);
        if let Some(digest) = &found.digest {
            let signed = document::Signed::Response { doc, digest };
            if let Some(signature) = self.sign(&found.key, signed) {
                sets.insert(document::SIGNATURE.to_owned(), b(signature));
            }
        }
        store
            .update(
                &store.key(found.key.as_bytes())?,
                sets,
                doc.expires_ms,
                found.chunks.as_ref(),
                Some(Condition::Unchanged(found.written)),
            )
            .await
            .map(|_| ())
    }

    /// After a response to an unsafe method (POST, PUT, DELETE, PATCH, or one the cache does
    /// not know) that is not an error, removes the stored responses of the target URI and of a
    /// same-origin `Location` or `Content-Location` (RFC 9111 §4.4), in the table, so every
    /// process sharing it sees the change.
    pub(crate) async fn invalidate_after(
        &self,
        incoming: &Incoming,
        status: http::StatusCode,
        headers: &HeaderMap,
    ) {
        if !policy::invalidates(&incoming.method, status) || self.inner.settings.read_only {
            return;
        }
        let mut keys = Vec::new();
        for url in policy::invalidation_targets(&incoming.url, headers) {
            let Ok(uri) = url.as_str().parse::<http::Uri>() else {
                continue;
            };
            for method in [Method::GET, Method::HEAD] {
                let mut parts = Request::new(()).into_parts().0;
                parts.method = method;
                parts.uri = uri.clone();
                parts.headers = incoming.parts.headers.clone();
                keys.push(self.key_for_parts(&parts, &url, &[]));
            }
        }
        if let Some(tier) = &self.inner.tier {
            for key in &keys {
                tier.invalidate(key);
            }
        }
        let cache = self.clone();
        self.write_behind("invalidating stored responses", async move {
            let n = cache.remove_keys(keys).await?;
            cache
                .inner
                .counters
                .invalidated
                .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            Ok(())
        })
        .await;
    }

    /// Removes responses by key: a `Vary` index takes the variants it lists with it (variants
    /// it does not list, written by a race, are unreachable once the index is gone and expire).
    /// Returns how many responses were there.
    pub(crate) async fn remove_keys(&self, keys: impl IntoIterator<Item = String>) -> Result<u64> {
        let keys: Vec<String> = keys.into_iter().collect();
        if let Some(tier) = &self.inner.tier {
            for key in &keys {
                tier.invalidate(key);
            }
        }
        let removed = self.remove_all(keys).await?;
        let mut deleted = 0u64;
        let mut variants = Vec::new();
        for (key, item) in &removed {
            match item.as_ref().map(|i| (i, document::vary_index(i))) {
                Some((_, Some(index))) => {
                    variants.extend(index.variants.iter().map(|s| variant_key(key, s)));
                }
                Some((item, None)) if document::is_response(item) => deleted += 1,
                _ => {}
            }
        }
        if let Some(tier) = &self.inner.tier {
            for key in &variants {
                tier.invalidate(key);
            }
        }
        let gone = self.remove_all(variants).await?;
        deleted += gone.iter().filter(|(_, item)| item.is_some()).count() as u64;
        Ok(deleted)
    }

    /// Removes these keys (chunks included), a few at a time; returns what each key held.
    async fn remove_all(
        &self,
        keys: impl IntoIterator<Item = String>,
    ) -> Result<Vec<(String, Option<Item>)>> {
        let store = &self.inner.store;
        futures::stream::iter(keys)
            .map(|k| async move {
                let key = store.key(k.as_bytes())?;
                let old = store.remove(&key).await?;
                Ok((k, old))
            })
            .buffer_unordered(16)
            .try_collect()
            .await
    }

    /// The signature of an item stored under `key` (`None` when signing is off).
    fn sign(&self, key: &str, signed: document::Signed<'_>) -> Option<Vec<u8>> {
        let secret = self.inner.secret_keys.first()?;
        Some(crate::codec::hmac(
            secret,
            &document::signing_input(key, signed),
        ))
    }

    /// Whether an item read from `key` carries a signature of `signed` by one of the secret
    /// keys (always, when signing is off). A failure is counted and logged, never served.
    fn verified(&self, key: &str, item: &Item, signed: document::Signed<'_>) -> bool {
        if self.inner.secret_keys.is_empty() {
            return true;
        }
        let input = document::signing_input(key, signed);
        let ok = get_b(item, document::SIGNATURE).is_some_and(|signature| {
            crate::codec::signed_by_any(&self.inner.secret_keys, &input, signature)
        });
        if !ok {
            bump(&self.inner.counters.verification_failures);
            crate::metrics::verification_failure();
            tracing::warn!(
                key,
                "dynacache: a stored item failed signature verification; not used"
            );
        }
        ok
    }
}

/// A request whose parts are those of `parts` with another method and URL (inspection).
pub(crate) fn parts_for(method: Method, url: &url::Url) -> Option<request::Parts> {
    let uri: http::Uri = url.as_str().parse().ok()?;
    let mut parts = Request::new(()).into_parts().0;
    parts.method = method;
    parts.uri = uri;
    Some(parts)
}
