//! Reading and copying a whole namespace, value by value.

use futures::stream::{BoxStream, StreamExt};
use serde::de::DeserializeOwned;

use super::{Cache, SIGNATURE};
use crate::codec;
use crate::error::Result;
use crate::store::{CopyProgress, Decoded, Key};
use crate::table::item::{Item, b, get_b};

impl Cache {
    /// Every live key with its value, as a stream read page by page (a Scan of the whole table
    /// that keeps only this namespace's items; values in chunks are read as they come). Values
    /// are checked as [`get`](Cache::get) checks them; one that is not a `T` is an error item
    /// in the stream, which goes on.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> dynacache::Result<()> {
    /// use futures::TryStreamExt;
    /// use dynacache::{Cache, Table};
    ///
    /// let cache = Cache::new(Table::builder().open().await?)?;
    /// cache.set("a", &1).await?;
    /// cache.set("b", &2).await?;
    /// let mut all: Vec<(String, i64)> = cache
    ///     .entries::<i64>()
    ///     .map_ok(|(k, v)| (k.to_string(), v))
    ///     .try_collect()
    ///     .await?;
    /// all.sort();
    /// assert_eq!(all, [("a".to_owned(), 1), ("b".to_owned(), 2)]);
    /// # Ok(()) }
    /// ```
    pub fn entries<T: DeserializeOwned + Send + 'static>(
        &self,
    ) -> BoxStream<'static, Result<(Key, T)>> {
        let cache = self.clone();
        self.store()
            .list_all()
            .filter_map(move |listed| {
                let cache = cache.clone();
                async move {
                    let listed = match listed {
                        Ok(listed) => listed,
                        Err(e) => return Some(Err(e)),
                    };
                    let key = match cache.key(listed.key.as_bytes()) {
                        Ok(key) => key,
                        Err(e) => return Some(Err(e)),
                    };
                    let entry = match cache.store().decode_item(&key, listed.item, false, false) {
                        Ok(Decoded::Absent) => return None,
                        Ok(Decoded::Entry(entry)) => entry,
                        // A value in chunks: read it as `get` does (it may have changed since).
                        Ok(Decoded::Chunked(_)) => match cache.store().get(&key, false).await {
                            Ok(Some(entry)) => entry,
                            Ok(None) => return None,
                            Err(e) => return Some(Err(e)),
                        },
                        Err(e) => return Some(Err(e)),
                    };
                    Some(
                        cache
                            .keep(&key, entry, None)
                            .and_then(|kept| cache.read_kept(&key, &kept))
                            .map(|v| (listed.key, v)),
                    )
                }
            })
            .boxed()
    }

    /// Copies every item of this cache's namespace into `target`'s namespace and table (the
    /// same engine or another: from the embedded file to AWS, say), chunks of large values
    /// before the entries naming them, reporting progress as it goes. Values are copied as they
    /// are stored, with their expiry and checksums. When this cache signs its values, only
    /// values whose signature verifies are copied (the others are counted in
    /// [`CopyProgress::skipped`]); when the target signs, every value copied is signed with the
    /// target's first secret key for its new key, so a copy to another namespace or to a cache
    /// with other secret keys verifies there. Entries already in the target under the same keys
    /// are replaced. `dynacache copy` is this, with a progress bar.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> dynacache::Result<()> {
    /// use dynacache::{Cache, Table};
    ///
    /// let from = Cache::new(Table::builder().name("source").open().await?)?;
    /// let to = Cache::new(Table::builder().name("target").open().await?)?;
    /// from.set("k", &"v").await?;
    /// let copied = from.copy_to(&to, |p| println!("{} items", p.items)).await?;
    /// assert_eq!(copied.items, 1);
    /// assert_eq!(to.get::<String>("k").await?.as_deref(), Some("v"));
    /// # Ok(()) }
    /// ```
    pub async fn copy_to(
        &self,
        target: &Cache,
        progress: impl FnMut(CopyProgress),
    ) -> Result<CopyProgress> {
        if let Some(tier) = &target.inner.tier {
            tier.clear();
        }
        let resign = |old_pk: &str, new_pk: &str, item: &mut Item| {
            // Counters are not signed (an atomic add cannot re-sign), and are read as they are.
            if item.contains_key(crate::table::item::COUNTER) {
                return true;
            }
            if !self.inner.secret_keys.0.is_empty() {
                let input = Cache::item_signing_input(old_pk, item);
                let signed = get_b(item, SIGNATURE).is_some_and(|sig| {
                    codec::signed_by_any(&self.inner.secret_keys.0, &input, sig)
                });
                if !signed {
                    return false;
                }
            }
            match target.inner.secret_keys.0.first() {
                Some(secret) => {
                    let input = Cache::item_signing_input(new_pk, item);
                    item.insert(SIGNATURE.to_owned(), b(codec::hmac(secret, &input)));
                }
                None => {
                    item.remove(SIGNATURE);
                }
            }
            true
        };
        let copied = self.store().copy_to(target.store(), resign, progress).await;
        // Again after: a read of the target that overlapped the copy is not kept.
        if let Some(tier) = &target.inner.tier {
            tier.clear();
        }
        copied
    }
}
