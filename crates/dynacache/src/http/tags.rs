//! Purge by tag (surrogate keys) without scanning the table.
//!
//! A response may name tags in configured fields (`Surrogate-Key: a b`, `Cache-Tag: a,b`). Before
//! a tagged response is stored, its key is added to its tags' index items: a tag `t` of
//! namespace `ns` has [`SHARDS`] items `{ns}~g:{t}#{shard}`, each a string set of the base keys
//! stored with it, the shard chosen by the key's hash so that no item grows past DynamoDB's
//! 400 KB while a tag names up to about 90,000 URLs. A purge reads the shards (one
//! BatchGetItem), deletes the responses they name (every `Vary` variant with them), and removes
//! exactly those keys from the sets, so a response stored meanwhile keeps its place.
//!
//! The index is written before the response: a stored response can always be found by its tags.
//! If the index cannot be written (a full shard, a failing table), the response is not stored.
//! A response stored while a purge of one of its tags runs may survive that purge; keys of
//! responses that expired stay in the sets until a purge of the tag removes them (index items
//! have no TTL: an entry that never expires must stay purgeable). Each tag costs one more write
//! (an UpdateItem) per stored response.

use std::collections::BTreeSet;

use aws_sdk_dynamodb::types::AttributeValue;
use http::{HeaderMap, HeaderName};

use super::HttpCache;
use crate::error::Result;
use crate::table::Expr;

/// Index items per tag.
pub(crate) const SHARDS: u32 = 16;
/// The attribute holding the keys of a shard.
const KEYS: &str = "tk";
/// At most this many tags of a response are indexed (the others are ignored).
pub(crate) const MAX_TAGS: usize = 64;
/// Tags longer than this many bytes are ignored.
pub(crate) const MAX_TAG_LEN: usize = 256;

/// The tags a response names in `fields`: split on white space and commas, each at most
/// [`MAX_TAG_LEN`] bytes, at most [`MAX_TAGS`], sorted and without duplicates.
pub(crate) fn tags_of(headers: &HeaderMap, fields: &[HeaderName]) -> Vec<String> {
    let mut tags = BTreeSet::new();
    for field in fields {
        for value in headers.get_all(field) {
            let Ok(value) = value.to_str() else { continue };
            for tag in value.split(|c: char| c.is_ascii_whitespace() || c == ',') {
                if !tag.is_empty() && tag.len() <= MAX_TAG_LEN {
                    tags.insert(tag.to_owned());
                }
            }
        }
    }
    tags.into_iter().take(MAX_TAGS).collect()
}

/// The shard of a key: FNV-1a, stable across processes and versions.
fn shard_of(key: &str) -> u32 {
    crate::table::index::fnv1a(key) % SHARDS
}

impl HttpCache {
    /// The partition key of a tag's shard.
    fn tag_shard_key(&self, tag: &str, shard: u32) -> Result<String> {
        let name = format!("g:{tag}#{shard}");
        Ok(self.inner.store.lease_key(name.as_bytes())?.pk)
    }

    /// Adds `base` to the index of each tag (before the response is written).
    pub(super) async fn index_tags(&self, base: &str, tags: &[String]) -> Result<()> {
        let shard = shard_of(base);
        for tag in tags {
            let pk = self.tag_shard_key(tag, shard)?;
            let update = Expr::new("ADD #keys :key")
                .name("#keys", KEYS)
                .value(":key", AttributeValue::Ss(vec![base.to_owned()]));
            self.table().update_item_quiet(&pk, update, None).await?;
        }
        Ok(())
    }

    /// Deletes every response stored with `tag` (in a `Surrogate-Key`, `Cache-Tag` or another
    /// field named with [`HttpCacheBuilder::tag_fields`](super::HttpCacheBuilder::tag_fields)),
    /// each with all its `Vary` variants, without scanning the table: one BatchGetItem of the
    /// tag's index, the deletions, and one UpdateItem per index item. Returns how many responses
    /// were deleted. Responses stored while the purge runs may survive it.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> dynacache::Result<()> {
    /// use dynacache::{Table, http::HttpCache};
    ///
    /// let cache = HttpCache::builder()
    ///     .shared(true)
    ///     .tag_fields(["Surrogate-Key", "Cache-Tag"])?
    ///     .build(Table::builder().open().await?)?;
    /// assert_eq!(cache.purge_tag("product-42").await?, 0);
    /// # Ok(()) }
    /// ```
    pub async fn purge_tag(&self, tag: &str) -> Result<u64> {
        let pks: Vec<String> = (0..SHARDS)
            .map(|s| self.tag_shard_key(tag, s))
            .collect::<Result<_>>()?;
        let items = self.table().batch_get(pks, true).await?;
        let mut purged = 0;
        for item in items {
            let Some(pk) = item
                .get(self.table().key_attribute())
                .and_then(|v| v.as_s().ok())
                .cloned()
            else {
                continue;
            };
            let keys: Vec<String> = match item.get(KEYS) {
                Some(AttributeValue::Ss(keys)) => keys.clone(),
                _ => continue,
            };
            purged += self.delete_keys(&keys).await?;
            // Exactly these keys leave the set: a key added meanwhile stays.
            let update = Expr::new("DELETE #keys :keys")
                .name("#keys", KEYS)
                .value(":keys", AttributeValue::Ss(keys));
            self.table().update_item_quiet(&pk, update, None).await?;
        }
        Ok(purged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_split_on_spaces_and_commas_and_bounded() {
        let mut h = HeaderMap::new();
        h.append("surrogate-key", "a  b\tc".parse().unwrap());
        h.append("cache-tag", "c,d, e".parse().unwrap());
        h.append("x-other", "z".parse().unwrap());
        let fields = [
            HeaderName::from_static("surrogate-key"),
            HeaderName::from_static("cache-tag"),
        ];
        assert_eq!(tags_of(&h, &fields), ["a", "b", "c", "d", "e"]);
        let long = "x".repeat(MAX_TAG_LEN + 1);
        let many: Vec<String> = (0..100).map(|i| format!("t{i:03}")).collect();
        let mut h = HeaderMap::new();
        h.insert(
            "surrogate-key",
            format!("{long} {}", many.join(" ")).parse().unwrap(),
        );
        let tags = tags_of(&h, &fields[..1]);
        assert_eq!(tags.len(), MAX_TAGS);
        assert!(!tags.contains(&long));
    }

    #[test]
    fn shards_spread_keys_and_are_stable() {
        assert_eq!(
            shard_of("http:GET https://example.com/"),
            shard_of("http:GET https://example.com/")
        );
        let used: BTreeSet<u32> = (0..1000).map(|i| shard_of(&format!("k{i}"))).collect();
        assert_eq!(used.len(), SHARDS as usize);
    }
}
