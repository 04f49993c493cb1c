//! The stored item layout: attribute names and typed accessors.
//!
//! Attribute names are short because DynamoDB bills their bytes on every item. Every
//! expression refers to them through `#placeholders`, so none can collide with a reserved word.

use std::collections::HashMap;

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;

/// One DynamoDB item.
pub(crate) type Item = HashMap<String, AttributeValue>;

/// The encoded value (binary).
pub(crate) const VALUE: &str = "v";
/// A counter (number), for values that are integers.
pub(crate) const COUNTER: &str = "n";
/// The logical expiry in epoch milliseconds (number); absent for "never".
pub(crate) const EXPIRES: &str = "e";
/// How the value is encoded (string).
pub(crate) const FORMAT: &str = "f";
/// The original key, for keys stored under their hash (binary).
pub(crate) const ORIGINAL_KEY: &str = "k";
/// When the item was written, epoch milliseconds (number).
pub(crate) const WRITTEN: &str = "w";
/// Chunked value: the number of chunks (number).
pub(crate) const CHUNKS: &str = "c";
/// Chunked value: the version id that names its chunks (string).
pub(crate) const CHUNK_VERSION: &str = "cv";
/// Chunked value: SHA-256 of the whole encoded payload (binary).
pub(crate) const CHECKSUM: &str = "cs";
/// Chunked value: the payload size in bytes (number).
pub(crate) const SIZE: &str = "sz";
/// Chunked value: the size of every chunk but the last, in bytes (number).
pub(crate) const CHUNK_SIZE: &str = "cz";
/// Payload in an object store: the object's key (string).
pub(crate) const OBJECT: &str = "ob";
/// Payload in an object store: the object's ETag, when the store gave one (string).
pub(crate) const OBJECT_ETAG: &str = "oe";
/// An object's part checksums: the first 16 bytes of the SHA-256 of each
/// `store::objects::OBJECT_PART` bytes, concatenated (binary; only for objects of more parts
/// than one).
pub(crate) const OBJECT_PARTS: &str = "op";
/// Chunk item: its slice of the payload (binary).
pub(crate) const DATA: &str = "d";
/// Chunk item: the key of the head item it belongs to (string).
pub(crate) const HEAD: &str = "h";
/// Lease item: the current holder's owner token (string).
pub(crate) const LEASE_OWNER: &str = "lo";
/// Lease item: when the current holding ends, epoch ms (number; 0 once released).
pub(crate) const LEASE_EXPIRES: &str = "le";
/// Lease item: the fencing token, one more for each new holder (number).
pub(crate) const LEASE_TOKEN: &str = "lt";
/// A value's recompute time in ms, for refresh-ahead (number).
pub(crate) const COST: &str = "rc";

const RESERVED: &[&str] = &[
    VALUE,
    COUNTER,
    EXPIRES,
    FORMAT,
    ORIGINAL_KEY,
    WRITTEN,
    CHUNKS,
    CHUNK_VERSION,
    CHECKSUM,
    SIZE,
    CHUNK_SIZE,
    OBJECT,
    OBJECT_ETAG,
    OBJECT_PARTS,
    DATA,
    HEAD,
    LEASE_OWNER,
    LEASE_EXPIRES,
    LEASE_TOKEN,
    COST,
    super::index::META_ATTRIBUTE,
];

pub(crate) fn is_reserved_attribute(name: &str) -> bool {
    RESERVED.contains(&name)
}

pub(crate) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub(crate) fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

pub(crate) fn b(v: impl Into<Vec<u8>>) -> AttributeValue {
    AttributeValue::B(Blob::new(v))
}

pub(crate) fn get_s<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
}

pub(crate) fn get_b<'a>(item: &'a Item, name: &str) -> Option<&'a [u8]> {
    item.get(name).and_then(|v| v.as_b().ok()).map(Blob::as_ref)
}

/// A number attribute as i64: `None` when absent, `Some(Err)` when present but not an i64.
pub(crate) fn get_i64(item: &Item, name: &str) -> Option<Result<i64, String>> {
    item.get(name).map(|v| match v.as_n() {
        Ok(text) => text
            .parse::<i64>()
            .map_err(|_| format!("attribute {name} is not a 64-bit integer: {text}")),
        Err(_) => Err(format!("attribute {name} is not a number")),
    })
}

/// Takes a binary attribute out of an item without copying it.
pub(crate) fn take_b(item: &mut Item, name: &str) -> Option<Vec<u8>> {
    match item.remove(name) {
        Some(AttributeValue::B(blob)) => Some(blob.into_inner()),
        Some(other) => {
            item.insert(name.to_owned(), other);
            None
        }
        None => None,
    }
}

/// DynamoDB's size of an attribute value, as its docs define it (for size checks).
pub(crate) fn attribute_size(v: &AttributeValue) -> usize {
    match v {
        AttributeValue::S(s) => s.len(),
        AttributeValue::B(b) => b.as_ref().len(),
        AttributeValue::N(n) => n.len().div_ceil(2) + 1,
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        AttributeValue::L(l) => 3 + l.iter().map(|v| 1 + attribute_size(v)).sum::<usize>(),
        AttributeValue::M(m) => {
            3 + m
                .iter()
                .map(|(k, v)| 1 + k.len() + attribute_size(v))
                .sum::<usize>()
        }
        AttributeValue::Ss(v) => v.iter().map(String::len).sum(),
        AttributeValue::Ns(v) => v.iter().map(|n| n.len().div_ceil(2) + 1).sum(),
        AttributeValue::Bs(v) => v.iter().map(|b| b.as_ref().len()).sum(),
        _ => 0,
    }
}

/// DynamoDB's size of an item: attribute names plus values.
pub(crate) fn item_size(item: &Item) -> usize {
    item.iter().map(|(k, v)| k.len() + attribute_size(v)).sum()
}
