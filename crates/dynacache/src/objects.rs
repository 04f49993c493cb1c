//! Large payloads on object storage: the table keeps the entry, the object store keeps the bytes.
//!
//! An [`ObjectStore`] given to a cache ([`CacheBuilder::object_store`](crate::CacheBuilder::object_store),
//! `HttpCacheBuilder::object_store`) takes every payload too large for one DynamoDB item (or, with
//! [`ObjectStoreBuilder::threshold`], every payload from a smaller size up). The entry's item keeps
//! everything else (expiry, headers, tags, the object's key and ETag, its size and SHA-256); the
//! object holds only the bytes. Reads check the bytes against the digest in the entry, so a
//! replaced, truncated or foreign object is a miss, never served.
//!
//! Two engines, one interface:
//!
//! - **S3** and any S3-compatible service, through the AWS SDK: `s3://bucket/prefix`, credentials
//!   and region from the standard AWS chain, or [`endpoint_url`](ObjectStoreBuilder::endpoint_url).
//! - **A local directory** (the embedded default, beside the embedded table's file): Apache Arrow's
//!   `object_store` crate, whose local backend writes each object to a temporary file and renames
//!   it into place, so a reader never sees half an object. No server, no port, no set-up.
//!
//! Every call goes through a circuit breaker and a deadline, as the table's calls do: an
//! unreachable or silent object store is an error within the operation timeout (longer for a
//! large transfer: the timeout plus the time the payload takes at 8 MiB/s), never a hang. A
//! download is timed on the time spent waiting for the store only (a reader may take its
//! time), and one that stalls or breaks off counts against the breaker as a failed call.
//!
//! An object of more than 1 MiB also has a checksum of each 1 MiB part in its entry, so an HTTP
//! `Range` hit downloads (with a ranged GET) and checks only the parts the range is in.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> dynacache::Result<()> {
//! use dynacache::{Cache, ObjectStore};
//!
//! let dir = std::env::temp_dir().join(format!("dynacache-doc-{}", std::process::id()));
//! let objects = ObjectStore::builder().local(&dir).open().await?;
//! let cache = Cache::builder()
//!     .object_store(objects.clone())
//!     .build(dynacache::Table::builder().open().await?)?;
//! let big: Vec<u64> = (0..300_000u64).map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15)).collect();
//! cache.set("big", &big).await?; // about 2.7 MB: one object, not eight chunk items
//! assert_eq!(cache.get::<Vec<u64>>("big").await?, Some(big));
//! assert_eq!(std::fs::read_dir(dir.join("kv")).unwrap().count(), 1);
//! # std::fs::remove_dir_all(&dir).ok();
//! # Ok(()) }
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_config::Region;
use aws_sdk_dynamodb::config::Credentials;
use aws_sdk_s3::error::ProvideErrorMetadata;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::{ObjectStore as _, ObjectStoreExt as _};

use crate::error::{Error, Result};
use crate::table::{CircuitBreaker, DEFAULT_CONNECT_TIMEOUT, DEFAULT_OPERATION_TIMEOUT};

/// The smallest throughput a transfer is allowed before its deadline passes: a large upload or
/// download gets the operation timeout plus its size at this rate.
const MIN_THROUGHPUT: f64 = 8.0 * 1024.0 * 1024.0;

/// A handle on an object store for large payloads (cheap to clone). See the
/// [module documentation](crate::objects).
#[derive(Clone)]
pub struct ObjectStore {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Backend,
    /// Prepended to every object key ("" or ending in `/`).
    prefix: String,
    threshold: usize,
    timeout: Duration,
    breaker: crate::table::Breaker,
    /// `s3://bucket/prefix` or `file:///dir`, for messages and the breaker.
    url: String,
}

enum Backend {
    S3 {
        client: aws_sdk_s3::Client,
        bucket: String,
    },
    Local {
        fs: object_store::local::LocalFileSystem,
    },
}

impl fmt::Debug for ObjectStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectStore")
            .field("url", &self.inner.url)
            .field("threshold", &self.inner.threshold)
            .finish()
    }
}

/// An object read: its size, and its bytes as they arrive.
pub(crate) struct ObjectRead {
    /// The size the store announces (`None` when it does not say).
    pub(crate) size: Option<u64>,
    pub(crate) body: BoxStream<'static, Result<Bytes>>,
}

/// One object found by [`ObjectStore::list`].
#[derive(Debug, Clone)]
pub(crate) struct Listed {
    pub(crate) key: String,
    /// Last modified, epoch ms.
    pub(crate) modified: i64,
}

impl ObjectStore {
    /// Starts building an object store handle. See [`ObjectStoreBuilder`].
    pub fn builder() -> ObjectStoreBuilder {
        ObjectStoreBuilder::default()
    }

    /// Where the objects are: `s3://bucket/prefix` or `file:///directory`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> dynacache::Result<()> {
    /// let dir = std::env::temp_dir().join("dynacache-doc-url");
    /// let objects = dynacache::ObjectStore::builder().local(&dir).open().await?;
    /// assert!(objects.url().starts_with("file:///"));
    /// # Ok(()) }
    /// ```
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    /// Payloads of this many bytes or more are stored as objects (payloads too large for one
    /// item always are).
    pub fn threshold(&self) -> usize {
        self.inner.threshold
    }

    /// The object store's health as its circuit breaker sees it.
    pub fn health(&self) -> crate::StorageHealth {
        self.inner.breaker.health()
    }

    /// The bucket, for S3 (`None` for a local directory).
    pub fn bucket(&self) -> Option<&str> {
        match &self.inner.backend {
            Backend::S3 { bucket, .. } => Some(bucket),
            Backend::Local { .. } => None,
        }
    }

    /// The key prefix every object of this store starts with ("" or ending in `/`).
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// The prefix under which a namespace's objects are kept (for IAM policies and lifecycle
    /// rules): `{prefix}{namespace}/`, with `/` in the namespace written `=s` (and a leading
    /// `.` written `=d`).
    pub fn namespace_prefix(&self, namespace: &str) -> String {
        namespace_prefix(&self.inner.prefix, namespace)
    }

    /// The key of a new object of a namespace: unique per write (a random version), so no
    /// write ever overwrites an object another entry names.
    /// Whether `key` is one of this store's keys for `namespace` (see [`is_object_key`]).
    pub(crate) fn owns(&self, namespace: &str, key: &str) -> bool {
        is_object_key(&self.inner.prefix, namespace, key)
    }

    pub(crate) fn new_key(&self, namespace: &str) -> String {
        format!(
            "{}{:032x}",
            self.namespace_prefix(namespace),
            fastrand::u128(..)
        )
    }

    fn deadline(&self, size: usize) -> Duration {
        self.inner.timeout + Duration::from_secs_f64(size as f64 / MIN_THROUGHPUT)
    }

    /// Runs one call through the breaker, within `timeout`.
    async fn guarded<T>(
        &self,
        op: &'static str,
        timeout: Duration,
        call: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        let (admission, outcome) = self.admitted(op, timeout, call).await?;
        self.inner.breaker.record(admission, &outcome);
        outcome
    }

    /// Runs one call the breaker lets through, within `timeout`: its admission (to report the
    /// outcome with) and its outcome.
    async fn admitted<T>(
        &self,
        op: &'static str,
        timeout: Duration,
        call: impl std::future::Future<Output = Result<T>>,
    ) -> Result<(crate::table::Admission<'_>, Result<T>)> {
        // As `Table::guarded`, with the deadline this module sets (the SDK sets none).
        let admission = self.inner.breaker.admit(&self.inner.url)?;
        let started = Instant::now();
        let outcome = match tokio::time::timeout(timeout, call).await {
            Ok(outcome) => outcome,
            Err(_) => Err(Error::Timeout(
                format!(
                    "object store {}: {op} took longer than {timeout:?}",
                    self.inner.url
                )
                .into(),
            )),
        };
        crate::metrics::storage_call(op, started.elapsed());
        Ok((admission, outcome))
    }

    /// Stores `data` under `key`; returns the object's ETag when the store gives one.
    pub(crate) async fn put(&self, key: &str, data: Bytes) -> Result<Option<String>> {
        let deadline = self.deadline(data.len());
        self.guarded("object_put", deadline, async {
            match &self.inner.backend {
                Backend::S3 { client, bucket } => client
                    .put_object()
                    .bucket(bucket)
                    .key(key)
                    .content_length(data.len() as i64)
                    .body(data.into())
                    .send()
                    .await
                    .map(|out| out.e_tag().map(str::to_owned))
                    .map_err(|e| self.s3_error(e)),
                Backend::Local { fs } => fs
                    .put(&object_store::path::Path::from(key), data.into())
                    .await
                    .map(|r| r.e_tag)
                    .map_err(|e| self.local_error(e)),
            }
        })
        .await
    }

    /// The object under `key`, if it is there (and, given an ETag, still that object): its
    /// size and its bytes as they arrive, each part within the operation timeout. Given a
    /// `range`, only those bytes (fewer when the object is shorter; `None` when it starts past
    /// the object's end). A server that ignores the range sends the whole object, with its
    /// size: callers check the size they get against the one they asked for.
    pub(crate) async fn get(
        &self,
        key: &str,
        etag: Option<&str>,
        range: Option<std::ops::Range<u64>>,
    ) -> Result<Option<ObjectRead>> {
        let timeout = self.inner.timeout;
        let (admission, found) = self
            .admitted("object_get", timeout, async {
                match &self.inner.backend {
                    Backend::S3 { client, bucket } => {
                        match client
                            .get_object()
                            .bucket(bucket)
                            .key(key)
                            .set_if_match(etag.map(str::to_owned))
                            .set_range(
                                range.as_ref().map(|r| {
                                    format!("bytes={}-{}", r.start, r.end.saturating_sub(1))
                                }),
                            )
                            .send()
                            .await
                        {
                            Ok(out) => {
                                let size = out.content_length().map(|n| n.max(0) as u64);
                                let url = self.inner.url.clone();
                                let body = futures::stream::unfold(out.body, move |mut body| {
                                    let url = url.clone();
                                    async move {
                                        match body.try_next().await {
                                            Ok(Some(part)) => Some((Ok(part), body)),
                                            Ok(None) => None,
                                            Err(e) => Some((
                                                Err(Error::Unreachable(
                                                    format!("object store {url}: {e}").into(),
                                                )),
                                                body,
                                            )),
                                        }
                                    }
                                })
                                .boxed();
                                Ok(Some(ObjectRead { size, body }))
                            }
                            Err(e) if is_absent(&e) => Ok(None),
                            // A range past the end: the object is not the one the head names.
                            Err(e) if range.is_some() && is_past_end(&e) => Ok(None),
                            Err(e) => Err(self.s3_error(e)),
                        }
                    }
                    Backend::Local { fs } => {
                        let options = object_store::GetOptions {
                            if_match: etag.map(str::to_owned),
                            ..Default::default()
                        };
                        match fs
                            .get_opts(&object_store::path::Path::from(key), options)
                            .await
                        {
                            Ok(got) => {
                                // The range is cut here, from the file opened (the crate's
                                // error for a range past the end is not told apart).
                                let whole = got.meta.size;
                                let range = match range.clone() {
                                    None => 0..whole,
                                    Some(r) if r.start >= whole => return Ok(None),
                                    Some(r) => r.start..r.end.min(whole),
                                };
                                let size = Some(range.end - range.start);
                                let url = self.inner.url.clone();
                                let body = match got.payload {
                                    // The file opened (the one that matched): read in large
                                    // pieces, not the crate's 8 KiB stream parts.
                                    object_store::GetResultPayload::File(file, _) => {
                                        file_parts(file, range, url)
                                    }
                                    // Not on native targets (the file is always given);
                                    // whole, with `size` the range's: a caller's size and
                                    // checksum checks refuse it.
                                    other => object_store::GetResult {
                                        payload: other,
                                        ..got
                                    }
                                    .into_stream()
                                    .map_err(move |e| {
                                        Error::Unreachable(
                                            format!("object store {url}: {e}").into(),
                                        )
                                    })
                                    .boxed(),
                                };
                                Ok(Some(ObjectRead { size, body }))
                            }
                            Err(
                                object_store::Error::NotFound { .. }
                                | object_store::Error::Precondition { .. },
                            ) => Ok(None),
                            Err(e) => Err(self.local_error(e)),
                        }
                    }
                }
            })
            .await?;
        let read = match found {
            Ok(Some(read)) => read,
            other => {
                self.inner.breaker.record(admission, &other);
                return other;
            }
        };
        // The call is reported when the download ends: a store that answers and then stalls
        // or breaks off fails the call, as one that does not answer does.
        let download = Download {
            probe: self.inner.breaker.defer(admission),
            store: self.inner.clone(),
            settled: false,
        };
        // Each part within the timeout, and the whole within the transfer's time: both counted
        // only while the store is waited for, never while the reader takes its time.
        let budget = read.size.map(|size| self.deadline(size as usize));
        Ok(Some(ObjectRead {
            size: read.size,
            body: bounded(read.body, timeout, budget, download),
        }))
    }

    /// Deletes the object under `key` (nothing when it is already gone).
    pub(crate) async fn delete(&self, key: &str) -> Result<()> {
        self.guarded("object_delete", self.inner.timeout, async {
            match &self.inner.backend {
                Backend::S3 { client, bucket } => client
                    .delete_object()
                    .bucket(bucket)
                    .key(key)
                    .send()
                    .await
                    .map(|_| ())
                    .or_else(|e| {
                        if is_absent(&e) {
                            Ok(())
                        } else {
                            Err(self.s3_error(e))
                        }
                    }),
                Backend::Local { fs } => {
                    match fs.delete(&object_store::path::Path::from(key)).await {
                        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                        Err(e) => Err(self.local_error(e)),
                    }
                }
            }
        })
        .await
    }

    /// Every object under `prefix` (a full listing, page by page).
    pub(crate) async fn list(&self, prefix: &str) -> Result<Vec<Listed>> {
        match &self.inner.backend {
            Backend::S3 { client, bucket } => {
                let mut out = Vec::new();
                let mut token = None;
                loop {
                    let page = self
                        .guarded("object_list", self.inner.timeout, async {
                            client
                                .list_objects_v2()
                                .bucket(bucket)
                                .prefix(prefix)
                                .set_continuation_token(token.clone())
                                .send()
                                .await
                                .map_err(|e| self.s3_error(e))
                        })
                        .await?;
                    for o in page.contents() {
                        if let Some(key) = o.key() {
                            out.push(Listed {
                                key: key.to_owned(),
                                modified: o
                                    .last_modified()
                                    .and_then(|t| t.to_millis().ok())
                                    .unwrap_or(0),
                            });
                        }
                    }
                    token = page.next_continuation_token().map(str::to_owned);
                    if token.is_none() || page.is_truncated() != Some(true) {
                        return Ok(out);
                    }
                }
            }
            Backend::Local { fs } => {
                // The local listing wants a directory: list from it and filter by the key.
                let dir = prefix.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
                let path = object_store::path::Path::from(dir);
                self.guarded("object_list", self.inner.timeout, async {
                    fs.list(Some(&path))
                        .try_filter_map(|meta| async move {
                            let key = meta.location.to_string();
                            Ok(key.starts_with(prefix).then(|| Listed {
                                key,
                                modified: meta.last_modified.timestamp_millis(),
                            }))
                        })
                        .try_collect::<Vec<_>>()
                        .await
                        .map_err(|e| self.local_error(e))
                })
                .await
            }
        }
    }

    fn s3_error<E, R>(&self, err: aws_sdk_s3::error::SdkError<E, R>) -> Error
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: fmt::Debug + Send + Sync + 'static,
    {
        use aws_sdk_s3::error::SdkError;
        if let SdkError::ServiceError(s) = &err {
            let code = s.err().code().unwrap_or("Unknown").to_owned();
            let message = format!(
                "object store {}: {}",
                self.inner.url,
                s.err().message().unwrap_or(&code)
            );
            return match code.as_str() {
                "SlowDown" | "RequestLimitExceeded" | "ThrottlingException" => Error::Throttled {
                    message,
                    source: Some(Box::new(err)),
                },
                "AccessDenied"
                | "InvalidAccessKeyId"
                | "SignatureDoesNotMatch"
                | "ExpiredToken" => Error::AccessDenied {
                    message,
                    source: Box::new(err),
                },
                "NoSuchBucket" => Error::config(message),
                "InternalError" | "ServiceUnavailable" => Error::Service {
                    code: "ServiceUnavailable".into(),
                    message,
                    source: Box::new(err),
                },
                _ => Error::Service {
                    code,
                    message,
                    source: Box::new(err),
                },
            };
        }
        Error::from_sdk(err, &self.inner.url)
    }

    fn local_error(&self, err: object_store::Error) -> Error {
        Error::Service {
            code: "ObjectStore".into(),
            message: format!("object store {}: {err}", self.inner.url),
            source: Box::new(err),
        }
    }
}

/// A local object's bytes in parts of 1 MiB, each read on a blocking thread.
fn file_parts(
    file: std::fs::File,
    range: std::ops::Range<u64>,
    url: String,
) -> BoxStream<'static, Result<Bytes>> {
    const PART: u64 = 1 << 20;
    let size = range.end - range.start;
    // Seeks to the range's start before its first read.
    let seek = Some(range.start).filter(|&start| start > 0);
    futures::stream::unfold(Some((file, size, seek)), move |state| {
        let url = url.clone();
        async move {
            let (mut file, left, seek) = state?;
            if left == 0 {
                return None;
            }
            let want = left.min(PART) as usize;
            let read = tokio::task::spawn_blocking(move || {
                use std::io::{Read, Seek};
                if let Some(start) = seek {
                    file.seek(std::io::SeekFrom::Start(start))?;
                }
                let mut buf = vec![0u8; want];
                let mut filled = 0;
                while filled < want {
                    match file.read(&mut buf[filled..]) {
                        Ok(0) => break,
                        Ok(n) => filled += n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                buf.truncate(filled);
                Ok((file, buf))
            })
            .await;
            match read {
                // A file shorter than it was: the reader sees fewer bytes (and a digest
                // mismatch), never other bytes.
                Ok(Ok((_, buf))) if buf.is_empty() => None,
                Ok(Ok((file, buf))) => {
                    let next = left - buf.len() as u64;
                    Some((Ok(Bytes::from(buf)), Some((file, next, None))))
                }
                Ok(Err(e)) => Some((
                    Err(Error::Unreachable(
                        format!("object store {url}: {e}").into(),
                    )),
                    None,
                )),
                Err(e) => Some((
                    Err(Error::Unreachable(
                        format!("object store {url}: {e}").into(),
                    )),
                    None,
                )),
            }
        }
    })
    .boxed()
}

/// A download under way: the breaker learns how its call went when it ends (see
/// [`Breaker::defer`](crate::table::Breaker::defer)). A probe (the breaker half-open) is
/// settled as soon as the store sends its first part, so the way is not held for as long as a
/// reader takes; a failure after that still counts, as one failed call.
struct Download {
    store: Arc<Inner>,
    probe: bool,
    settled: bool,
}

impl Download {
    /// The store has sent a part: a probe has its answer.
    fn answered(&mut self) {
        if self.probe && !self.settled {
            let store = &self.store;
            store.breaker.settle_deferred(true, None, &store.url);
            self.probe = false;
        }
    }

    fn settle(&mut self, error: Option<&Error>) {
        if !std::mem::replace(&mut self.settled, true) {
            let store = &self.store;
            store.breaker.settle_deferred(self.probe, error, &store.url);
        }
    }
}

impl Drop for Download {
    /// Dropped before its end (the reader stopped): nothing learned, as for a dropped call.
    fn drop(&mut self) {
        if !self.settled && self.probe {
            self.store.breaker.release_probe();
        }
    }
}

/// Each part of a download within `timeout`, and all of them within `budget`: a stalled
/// transfer ends with an error, not a hang. Only the time spent waiting for the store counts,
/// so a reader that takes its time (a slow HTTP client) is never taken for a slow store. The
/// end of the download, whole or failed, settles its call with the breaker.
fn bounded(
    body: BoxStream<'static, Result<Bytes>>,
    timeout: Duration,
    budget: Option<Duration>,
    download: Download,
) -> BoxStream<'static, Result<Bytes>> {
    futures::stream::unfold(Some((body, download, budget)), move |state| async move {
        let (mut body, mut download, budget) = state?;
        let limit = budget.map_or(timeout, |left| timeout.min(left));
        let waiting = Instant::now();
        let failed = match tokio::time::timeout(limit, body.next()).await {
            Ok(Some(Ok(part))) => {
                download.answered();
                let budget = budget.map(|left| left.saturating_sub(waiting.elapsed()));
                return Some((Ok(part), Some((body, download, budget))));
            }
            Ok(None) => {
                download.settle(None);
                return None;
            }
            Ok(Some(Err(e))) => e,
            Err(_) => Error::Timeout(
                format!(
                    "object store {}: the download stalled or took too long",
                    download.store.url
                )
                .into(),
            ),
        };
        download.settle(Some(&failed));
        Some((Err(failed), None))
    })
    .boxed()
}

/// The key prefix of a namespace's objects under a store prefix (`""` or ending in `/`): what an
/// IAM policy or a lifecycle rule names for it.
///
/// ```
/// assert_eq!(dynacache::objects::namespace_prefix("cache/", "http"), "cache/http/");
/// assert_eq!(dynacache::objects::namespace_prefix("", "tenant/a"), "tenant=sa/");
/// ```
pub fn namespace_prefix(prefix: &str, namespace: &str) -> String {
    format!("{prefix}{}/", namespace_segment(namespace))
}

/// A store prefix as [`ObjectStoreBuilder::prefix`] keeps it: no leading `/`, a trailing one.
///
/// ```
/// assert_eq!(dynacache::objects::normalize_prefix("/cache"), "cache/");
/// assert_eq!(dynacache::objects::normalize_prefix(""), "");
/// ```
pub fn normalize_prefix(prefix: &str) -> String {
    let mut prefix = prefix.trim_start_matches('/').to_owned();
    if !prefix.is_empty() && !prefix.ends_with('/') {
        prefix.push('/');
    }
    prefix
}

/// A namespace as one key segment: `/` written `=s` and a leading `.` written `=d` (`=` is in
/// no namespace, so no two namespaces share a segment), so that no namespace makes a `.` or `..`
/// segment, and every character is one object stores keep as it is.
fn namespace_segment(namespace: &str) -> String {
    let (lead, rest) = match namespace.strip_prefix('.') {
        Some(rest) => ("=d", rest),
        None => ("", namespace),
    };
    format!("{lead}{}", rest.replace('/', "=s"))
}

/// Whether `key` is the key of an object of `namespace` under `prefix` (as [`ObjectStore`] makes
/// them: the namespace's prefix, then 32 hex digits), and not of a deeper prefix's store.
pub(crate) fn is_object_key(prefix: &str, namespace: &str, key: &str) -> bool {
    key.strip_prefix(&namespace_prefix(prefix, namespace))
        .is_some_and(|rest| rest.len() == 32 && rest.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Whether an S3 error says the object is not there (or is not the one asked for).
fn is_absent<E: ProvideErrorMetadata>(
    err: &aws_sdk_s3::error::SdkError<E, aws_smithy_runtime_api::http::Response>,
) -> bool {
    use aws_sdk_s3::error::SdkError;
    match err {
        SdkError::ServiceError(s) => {
            // A missing bucket is a configuration error, not a missing object: a reader pointed
            // at the wrong bucket must not take (and delete) every entry as broken.
            let code = s.err().code();
            code != Some("NoSuchBucket")
                && (matches!(code, Some("NoSuchKey" | "NotFound" | "PreconditionFailed"))
                    || matches!(s.raw().status().as_u16(), 404 | 412))
        }
        _ => false,
    }
}

/// Whether a ranged GetObject error says the range starts past the object's end.
fn is_past_end<E: ProvideErrorMetadata>(
    err: &aws_sdk_s3::error::SdkError<E, aws_smithy_runtime_api::http::Response>,
) -> bool {
    match err {
        aws_sdk_s3::error::SdkError::ServiceError(s) => {
            s.err().code() == Some("InvalidRange") || s.raw().status().as_u16() == 416
        }
        _ => false,
    }
}

/// Whether a HeadBucket error says the bucket is not there.
fn bucket_absent<E: ProvideErrorMetadata>(
    err: &aws_sdk_s3::error::SdkError<E, aws_smithy_runtime_api::http::Response>,
) -> bool {
    use aws_sdk_s3::error::SdkError;
    match err {
        SdkError::ServiceError(s) => {
            matches!(s.err().code(), Some("NoSuchBucket" | "NotFound"))
                || s.raw().status().as_u16() == 404
        }
        _ => false,
    }
}

/// How to open an [`ObjectStore`].
///
/// ```no_run
/// # async fn f() -> dynacache::Result<()> {
/// use dynacache::ObjectStore;
///
/// // AWS: credentials and region from the standard chain.
/// let s3 = ObjectStore::builder().url("s3://my-bucket/cache/")?.open().await?;
/// // An S3-compatible server.
/// let local = ObjectStore::builder()
///     .s3("cache")
///     .endpoint_url("http://127.0.0.1:9000")
///     .open()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct ObjectStoreBuilder {
    location: Option<Location>,
    prefix: String,
    endpoint_url: Option<String>,
    region: Option<String>,
    profile: Option<String>,
    credentials: Option<Credentials>,
    sdk_config: Option<aws_config::SdkConfig>,
    threshold: usize,
    connect_timeout: Option<Duration>,
    operation_timeout: Option<Duration>,
    breaker: CircuitBreaker,
    create_bucket: bool,
    assume_exists: bool,
}

#[derive(Debug, Clone)]
enum Location {
    S3(String),
    Local(PathBuf),
}

/// The default [`threshold`](ObjectStoreBuilder::threshold): payloads that do not fit one item.
///
/// Below DynamoDB's item limit an entry is one GetItem; an object would add a second round trip
/// to every hit. Above it the entry already takes two or more calls (its head and its chunks),
/// and an object replaces the chunks at a fraction of their price: a 1 MiB value costs 1,025
/// write units to store in chunks (about $0.00064 on demand) against one PUT ($0.000005), and 129
/// read units per hit (about $0.000032) against one GET ($0.0000004).
pub const DEFAULT_OBJECT_THRESHOLD: usize = crate::table::MAX_ITEM_BYTES;

impl Default for ObjectStoreBuilder {
    fn default() -> Self {
        ObjectStoreBuilder {
            location: None,
            prefix: String::new(),
            endpoint_url: None,
            region: None,
            profile: None,
            credentials: None,
            sdk_config: None,
            threshold: DEFAULT_OBJECT_THRESHOLD,
            connect_timeout: None,
            operation_timeout: None,
            breaker: CircuitBreaker::default(),
            create_bucket: true,
            assume_exists: false,
        }
    }
}

impl ObjectStoreBuilder {
    /// Objects in an S3 bucket (AWS, or the S3-compatible service at
    /// [`endpoint_url`](Self::endpoint_url)).
    pub fn s3(mut self, bucket: impl Into<String>) -> Self {
        self.location = Some(Location::S3(bucket.into()));
        self
    }

    /// Objects as files under a local directory (created if missing).
    pub fn local(mut self, dir: impl AsRef<Path>) -> Self {
        self.location = Some(Location::Local(dir.as_ref().to_path_buf()));
        self
    }

    /// The location as a URL: `s3://bucket/prefix`, `file:///directory`, or a plain path.
    ///
    /// ```
    /// let b = dynacache::ObjectStore::builder().url("s3://bucket/cache").unwrap();
    /// assert!(dynacache::ObjectStore::builder().url("s3://").is_err());
    /// ```
    pub fn url(mut self, url: &str) -> Result<Self> {
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            validate_bucket(bucket)?;
            self.location = Some(Location::S3(bucket.to_owned()));
            self.prefix = prefix.to_owned();
            return Ok(self);
        }
        let path = url.strip_prefix("file://").unwrap_or(url);
        if path.is_empty() || url.contains("://") && !url.starts_with("file://") {
            return Err(Error::config(format!(
                "object store {url:?}: use s3://bucket/prefix, file:///directory or a path"
            )));
        }
        self.location = Some(Location::Local(PathBuf::from(path)));
        Ok(self)
    }

    /// A prefix for every object key (a `/` is added when it lacks one).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// An S3-compatible endpoint, such as `http://127.0.0.1:9000`. Path-style addressing;
    /// for a loopback endpoint without credentials, local dummy ones.
    pub fn endpoint_url(mut self, url: impl Into<String>) -> Self {
        self.endpoint_url = Some(url.into());
        self
    }

    /// The AWS region (default: the standard chain's, else `us-east-1`).
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// A named profile of the shared AWS configuration.
    pub fn profile(mut self, profile: impl Into<String>) -> Self {
        self.profile = Some(profile.into());
        self
    }

    /// Static credentials.
    pub fn credentials(
        mut self,
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
        session_token: Option<String>,
    ) -> Self {
        self.credentials = Some(Credentials::new(
            access_key_id,
            secret_access_key,
            session_token,
            None,
            "dynacache",
        ));
        self
    }

    /// An SDK configuration to build the S3 client from (region, credentials, endpoint).
    pub fn sdk_config(mut self, config: &aws_config::SdkConfig) -> Self {
        self.sdk_config = Some(config.clone());
        self
    }

    /// Payloads of this many bytes or more are stored as objects (default
    /// [`DEFAULT_OBJECT_THRESHOLD`]; payloads too large for one item always are).
    pub fn threshold(mut self, bytes: usize) -> Self {
        self.threshold = bytes.max(1);
        self
    }

    /// How long connecting may take (default as for the table).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// How long one call may take, and each part of a download (default as for the table). An
    /// upload gets this plus its size at 8 MiB/s.
    pub fn operation_timeout(mut self, timeout: Duration) -> Self {
        self.operation_timeout = Some(timeout);
        self
    }

    /// The circuit breaker (default as for the table).
    pub fn circuit_breaker(mut self, breaker: CircuitBreaker) -> Self {
        self.breaker = breaker;
        self
    }

    /// Whether `open` creates a missing bucket (default true). Off, a missing bucket is an
    /// [`InvalidConfig`](Error::InvalidConfig) error.
    pub fn create_bucket(mut self, create: bool) -> Self {
        self.create_bucket = create;
        self
    }

    /// Makes no call at `open`: the bucket is assumed to exist (an IAM policy confined to the
    /// namespaces' prefixes grants no HeadBucket). Default false.
    pub fn assume_exists(mut self, assume: bool) -> Self {
        self.assume_exists = assume;
        self
    }

    /// Connects (checking that the bucket or directory is there, creating it if allowed).
    pub async fn open(self) -> Result<ObjectStore> {
        let prefix = normalize_prefix(&self.prefix);
        if prefix.split('/').any(|s| s == "." || s == "..") {
            return Err(Error::config(format!(
                "object store prefix {prefix:?} has a '.' or '..' segment"
            )));
        }
        let timeout = self.operation_timeout.unwrap_or(DEFAULT_OPERATION_TIMEOUT);
        let (backend, url) = match self.location.clone() {
            None => {
                return Err(Error::config(
                    "object store: give a bucket (s3) or a directory (local)",
                ));
            }
            Some(Location::Local(dir)) => {
                std::fs::create_dir_all(&dir).map_err(|e| {
                    Error::config(format!("object store directory {}: {e}", dir.display()))
                })?;
                let dir = dir.canonicalize().map_err(|e| {
                    Error::config(format!("object store directory {}: {e}", dir.display()))
                })?;
                let fs = object_store::local::LocalFileSystem::new_with_prefix(&dir)
                    .map_err(|e| Error::config(format!("object store directory: {e}")))?
                    .with_automatic_cleanup(true);
                let url = format!("file://{}/{prefix}", dir.display());
                (Backend::Local { fs }, url)
            }
            Some(Location::S3(bucket)) => {
                validate_bucket(&bucket)?;
                let client = self.s3_client().await;
                let url = format!("s3://{bucket}/{prefix}");
                (Backend::S3 { client, bucket }, url)
            }
        };
        let store = ObjectStore {
            inner: Arc::new(Inner {
                backend,
                prefix,
                threshold: self.threshold,
                timeout,
                breaker: crate::table::Breaker::new(self.breaker),
                url,
            }),
        };
        if !self.assume_exists {
            store.check_bucket(self.create_bucket).await?;
        }
        Ok(store)
    }

    async fn s3_client(&self) -> aws_sdk_s3::Client {
        let local = self
            .endpoint_url
            .as_deref()
            .is_some_and(crate::table::is_loopback);
        let base = match &self.sdk_config {
            Some(config) => config.clone(),
            None => {
                crate::table::aws_loader(
                    self.endpoint_url.as_deref(),
                    local,
                    self.region.as_deref(),
                    self.profile.as_deref(),
                    self.credentials.as_ref(),
                    None,
                )
                .load()
                .await
            }
        };
        // Deadlines are this module's (scaled to each transfer's size); the SDK only bounds
        // connecting. Checksums are dynacache's own SHA-256, so none is asked of the server
        // beyond what it requires (S3-compatible servers differ in the ones they know).
        let mut conf = aws_sdk_s3::config::Builder::from(&base)
            .force_path_style(self.endpoint_url.is_some())
            .request_checksum_calculation(
                aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired,
            )
            .response_checksum_validation(
                aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired,
            )
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .connect_timeout(self.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT))
                    .build(),
            );
        if let Some(url) = &self.endpoint_url {
            conf = conf.endpoint_url(url);
        }
        // A region given beside an SDK configuration overrides the configuration's.
        if let (Some(_), Some(region)) = (&self.sdk_config, &self.region) {
            conf = conf.region(Region::new(region.clone()));
        }
        aws_sdk_s3::Client::from_conf(conf.build())
    }
}

impl ObjectStore {
    /// Checks the bucket is there (HeadBucket), creating it when allowed.
    async fn check_bucket(&self, create: bool) -> Result<()> {
        let Backend::S3 { client, bucket } = &self.inner.backend else {
            return Ok(());
        };
        let head = self
            .guarded("object_head_bucket", self.inner.timeout, async {
                match client.head_bucket().bucket(bucket).send().await {
                    Ok(_) => Ok(true),
                    Err(e) if bucket_absent(&e) => Ok(false),
                    Err(e) => Err(self.s3_error(e)),
                }
            })
            .await?;
        if head {
            return Ok(());
        }
        if !create {
            return Err(Error::config(format!(
                "object store {}: the bucket does not exist",
                self.inner.url
            )));
        }
        self.guarded("object_create_bucket", self.inner.timeout, async {
            match client.create_bucket().bucket(bucket).send().await {
                Ok(_) => Ok(()),
                Err(e)
                    if matches!(
                        e.code(),
                        Some("BucketAlreadyOwnedByYou" | "BucketAlreadyExists")
                    ) =>
                {
                    Ok(())
                }
                Err(e) => Err(self.s3_error(e)),
            }
        })
        .await
    }
}

/// S3 bucket names: 3 to 63 characters of lower-case letters, digits, `-` and `.`.
fn validate_bucket(bucket: &str) -> Result<()> {
    let ok = (3..=63).contains(&bucket.len())
        && bucket
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.'))
        && !bucket.starts_with(['-', '.'])
        && !bucket.ends_with(['-', '.']);
    if ok {
        Ok(())
    } else {
        Err(Error::config(format!(
            "bucket name {bucket:?} is not valid: use 3 to 63 lower-case letters, digits, '-' and '.'"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_make_distinct_safe_segments() {
        let names = [
            "a", "a/b", "a=sb", ".x", "/.x", "=dx", "..", "a/", "a.b", "x/y/z",
        ];
        let segments: Vec<String> = names
            .iter()
            .filter(|n| crate::store::validate_namespace(n).is_ok())
            .map(|n| namespace_segment(n))
            .collect();
        let mut unique = segments.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), segments.len(), "{segments:?}");
        for s in &segments {
            assert!(!s.contains('/') && !s.starts_with('.'), "{s}");
        }
        assert_eq!(namespace_segment(".."), "=d.");
        assert_eq!(namespace_segment("/.x"), "=s.x");
        assert_eq!(namespace_segment(".x"), "=dx");
    }

    #[test]
    fn object_keys_are_told_from_a_deeper_store_s_keys() {
        let key = format!("cache/{}", "a".repeat(32));
        assert!(is_object_key("", "cache", &key));
        let deeper = format!("cache/kv/{}", "a".repeat(32));
        assert!(!is_object_key("", "cache", &deeper));
        assert!(is_object_key("cache/", "kv", &deeper));
        assert!(!is_object_key("", "cache", "cache/short"));
        assert!(!is_object_key(
            "",
            "cache",
            &format!("cache/{}", "g".repeat(32))
        ));
    }
}
