//! How a cache key becomes a DynamoDB partition key.
//!
//! A key that is valid UTF-8 and fits is stored readably as `{namespace}:{key}`. A key that is
//! not UTF-8, or would make the partition key longer than DynamoDB's 2048 bytes, is stored as
//! `{namespace}#{sha256 hex}` with the original bytes in the item, and every read compares them:
//! two keys can never be mixed up, even in the (astronomically unlikely) event of a hash
//! collision. Chunks of large values live under `{namespace}!{version}!{index}`, and leases
//! under `{namespace}~` followed by the rest of their key's form (`~:name` or `~#sha256`). The
//! four separators cannot appear in a namespace, so namespaces never overlap.

use std::fmt;

use crate::codec::checksum;
use crate::error::{Error, Result};
use crate::table::MAX_KEY_BYTES;

/// The longest key accepted, in bytes (it is stored in the item when hashed).
pub const MAX_KEY_LEN: usize = 64 * 1024;

/// A cache key as the partition key it is stored under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredKey {
    pub(crate) pk: String,
    /// The original key bytes, for keys stored under their hash.
    pub(crate) original: Option<Vec<u8>>,
}

pub(crate) fn validate_namespace(ns: &str) -> Result<()> {
    let ok = !ns.is_empty()
        && ns.len() <= 64
        && ns
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/'));
    if ok {
        Ok(())
    } else {
        Err(Error::config(format!(
            "namespace {ns:?} is not valid: use 1 to 64 characters of letters, digits, \
             '_', '-', '.' and '/'"
        )))
    }
}

pub(crate) fn stored_key(ns: &str, key: &[u8]) -> Result<StoredKey> {
    if key.is_empty() {
        return Err(Error::InvalidKey {
            reason: "the key is empty".into(),
        });
    }
    if key.len() > MAX_KEY_LEN {
        return Err(Error::InvalidKey {
            reason: format!("the key is {} bytes; the limit is {MAX_KEY_LEN}", key.len()),
        });
    }
    match std::str::from_utf8(key) {
        Ok(text) if ns.len() + 1 + text.len() <= MAX_KEY_BYTES => Ok(StoredKey {
            pk: format!("{ns}:{text}"),
            original: None,
        }),
        _ => Ok(StoredKey {
            pk: format!("{ns}#{}", hex::encode(checksum(key))),
            original: Some(key.to_vec()),
        }),
    }
}

/// Prefixes of this namespace's entries (readable and hashed keys).
pub(crate) fn entry_prefixes(ns: &str) -> Vec<String> {
    vec![format!("{ns}:"), format!("{ns}#")]
}

/// The key of the lease named `name`: `{ns}~` and the rest of the entry key `name` would have.
pub(crate) fn lease_key(ns: &str, name: &[u8]) -> Result<StoredKey> {
    let entry = stored_key(ns, name)?;
    Ok(StoredKey {
        pk: format!("{ns}~{}", &entry.pk[ns.len()..]),
        original: entry.original,
    })
}

/// Prefix of this namespace's lease items.
pub(crate) fn lease_prefix(ns: &str) -> String {
    format!("{ns}~")
}

/// Prefix of this namespace's chunk items.
pub(crate) fn chunk_prefix(ns: &str) -> String {
    format!("{ns}!")
}

pub(crate) fn chunk_key(ns: &str, version: &str, index: u32) -> String {
    format!("{ns}!{version}!{index}")
}

/// A key read back from the cache, as the bytes the caller gave.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> dynacache::Result<()> {
/// use futures::TryStreamExt;
/// use dynacache::{Cache, Table};
///
/// let cache = Cache::new(Table::builder().open().await?)?;
/// cache.set("greeting", &"hello").await?;
/// let keys: Vec<_> = cache.keys().try_collect().await?;
/// assert_eq!(keys[0].as_str(), Some("greeting"));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(Vec<u8>);

impl Key {
    pub(crate) fn new(bytes: Vec<u8>) -> Self {
        Key(bytes)
    }

    /// The key's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The key as text, when it is UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }

    /// The key's bytes, owned.
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

impl AsRef<[u8]> for Key {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Display for Key {
    /// UTF-8 keys as they are; other keys as lossy UTF-8.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.0))
    }
}

impl PartialEq<str> for Key {
    fn eq(&self, other: &str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl PartialEq<&str> for Key {
    fn eq(&self, other: &&str) -> bool {
        self.0 == other.as_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_keys_are_readable() {
        let k = stored_key("kv", b"user:1").unwrap();
        assert_eq!(k.pk, "kv:user:1");
        assert_eq!(k.original, None);
    }

    #[test]
    fn long_and_binary_keys_are_hashed_and_keep_their_bytes() {
        let long = vec![b'a'; 4096];
        let k = stored_key("kv", &long).unwrap();
        assert!(k.pk.starts_with("kv#") && k.pk.len() == 3 + 64);
        assert_eq!(k.original.as_deref(), Some(&long[..]));
        let binary = stored_key("kv", &[0xff, 0xfe]).unwrap();
        assert!(binary.pk.starts_with("kv#"));
        assert_ne!(binary.pk, k.pk);
        // A key just under the limit stays readable; one byte more is hashed.
        let fits = vec![b'b'; MAX_KEY_BYTES - 3];
        assert_eq!(stored_key("kv", &fits).unwrap().original, None);
        let over = vec![b'b'; MAX_KEY_BYTES - 2];
        assert!(stored_key("kv", &over).unwrap().original.is_some());
    }

    #[test]
    fn empty_and_huge_keys_are_refused() {
        assert!(stored_key("kv", b"").unwrap_err().is_invalid_input());
        assert!(
            stored_key("kv", &vec![0u8; MAX_KEY_LEN + 1])
                .unwrap_err()
                .is_invalid_input()
        );
    }

    #[test]
    fn namespaces_cannot_contain_separators() {
        assert!(validate_namespace("sessions").is_ok());
        assert!(validate_namespace("a:b").is_err());
        assert!(validate_namespace("a#b").is_err());
        assert!(validate_namespace("a!b").is_err());
        assert!(validate_namespace("").is_err());
    }
}
