//! Value encoding: serde to MessagePack, zstd compression when it saves space, and checksums for
//! values split over several items.

use std::cell::RefCell;
use std::thread::LocalKey;

use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// MessagePack, as written.
pub(crate) const FORMAT_PLAIN: &str = "m";
/// MessagePack, zstd-compressed.
pub(crate) const FORMAT_ZSTD: &str = "mz";

const ZSTD_LEVEL: i32 = 3;

/// A value ready to store.
#[derive(Debug)]
pub(crate) enum Encoded {
    /// An integer, stored as a DynamoDB number so that `inc`/`dec` can update it atomically.
    Counter(i64),
    /// Encoded bytes and their format, with the size of the MessagePack before compression
    /// (what a read must decompress, so what `max_value_size` bounds).
    Bytes {
        format: &'static str,
        data: Vec<u8>,
        plain_len: usize,
    },
}

/// Encodes a value. Integers become counters; other values become MessagePack (with field names,
/// so stored structs survive added or reordered fields), compressed when that saves space.
pub(crate) fn encode<T: Serialize + ?Sized>(
    value: &T,
    compress_from: Option<usize>,
) -> Result<Encoded> {
    let data = rmp_serde::to_vec_named(value).map_err(|e| Error::Serialize(Box::new(e)))?;
    if let Some(n) = as_integer(&data) {
        return Ok(Encoded::Counter(n));
    }
    if let Some(min) = compress_from
        && data.len() >= min
    {
        let compressed = zstd_compress(&data).map_err(|e| Error::Serialize(Box::new(e)))?;
        // Keep it only when it saves at least 1/16 of the size: decompression is not free.
        if compressed.len() + data.len() / 16 < data.len() {
            return Ok(Encoded::Bytes {
                format: FORMAT_ZSTD,
                data: compressed,
                plain_len: data.len(),
            });
        }
    }
    Ok(Encoded::Bytes {
        format: FORMAT_PLAIN,
        plain_len: data.len(),
        data,
    })
}

/// The integer a MessagePack encoding holds, if it is exactly one integer that fits an i64.
fn as_integer(data: &[u8]) -> Option<i64> {
    let first = *data.first()?;
    let is_int = matches!(first, 0x00..=0x7f | 0xe0..=0xff | 0xcc..=0xd3);
    if !is_int || data.len() > 9 {
        return None;
    }
    rmp_serde::from_slice::<i64>(data).ok()
}

/// Decodes stored bytes. `max_size` bounds decompression, so a tampered item cannot make us
/// allocate without limit.
pub(crate) fn decode<T: DeserializeOwned>(
    key: &str,
    format: &str,
    data: &[u8],
    max_size: usize,
) -> Result<T> {
    let plain;
    let bytes = match format {
        FORMAT_PLAIN => data,
        FORMAT_ZSTD => {
            plain = decompress(key, data, max_size)?;
            &plain[..]
        }
        other => {
            return Err(Error::corrupt(
                key,
                format!("unknown value format {other:?}"),
            ));
        }
    };
    rmp_serde::from_slice(bytes).map_err(|e| Error::Deserialize {
        key: key.to_owned(),
        source: if is_python_pickle(bytes) {
            Box::new(PythonPickle)
        } else {
            Box::new(e)
        },
    })
}

/// The MessagePack extension type that marks a Python object stored with `pickle=True` by the
/// `dynacache` Python package: the whole value is `ext(80, pickle bytes)`.
pub const PYTHON_PICKLE_EXT: i8 = 80;

/// Whether MessagePack bytes are one extension value of type [`PYTHON_PICKLE_EXT`].
fn is_python_pickle(data: &[u8]) -> bool {
    let type_at = match data.first() {
        Some(0xd4..=0xd8) => 1, // fixext 1, 2, 4, 8, 16
        Some(0xc7) => 2,        // ext 8
        Some(0xc8) => 3,        // ext 16
        Some(0xc9) => 5,        // ext 32
        _ => return false,
    };
    data.get(type_at) == Some(&(PYTHON_PICKLE_EXT as u8))
}

/// Why a pickled Python object does not decode in Rust.
#[derive(Debug)]
struct PythonPickle;

impl std::fmt::Display for PythonPickle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the value is a Python object stored with pickle=True: only Python can read it")
    }
}

impl std::error::Error for PythonPickle {}

/// The MessagePack bytes of a stored payload (decompressed when it was compressed), to decode
/// with `FORMAT_PLAIN` as often as needed.
pub(crate) fn plain(key: &str, format: &str, data: Vec<u8>, max_size: usize) -> Result<Vec<u8>> {
    match format {
        FORMAT_PLAIN => Ok(data),
        FORMAT_ZSTD => decompress(key, &data, max_size),
        other => Err(Error::corrupt(
            key,
            format!("unknown value format {other:?}"),
        )),
    }
}

/// Decodes a counter as the requested type (any type that deserializes from an integer).
pub(crate) fn decode_counter<T: DeserializeOwned>(key: &str, n: i64) -> Result<T> {
    let data = rmp_serde::to_vec(&n).map_err(|e| Error::Serialize(Box::new(e)))?;
    decode(key, FORMAT_PLAIN, &data, data.len())
}

fn decompress(key: &str, data: &[u8], max_size: usize) -> Result<Vec<u8>> {
    let size = match zstd::zstd_safe::get_frame_content_size(data) {
        Ok(Some(size)) => size,
        _ => {
            return Err(Error::corrupt(
                key,
                "compressed value has no valid zstd frame header",
            ));
        }
    };
    if size > max_size as u64 {
        return Err(Error::corrupt(
            key,
            format!("compressed value claims {size} bytes, over the {max_size} byte limit"),
        ));
    }
    zstd_decompress(data, size as usize)
        .map_err(|e| Error::corrupt(key, format!("compressed value does not decode: {e}")))
}

thread_local! {
    // zstd contexts hold sizeable buffers: made once per thread, not once per value.
    static COMPRESSOR: RefCell<Option<zstd::bulk::Compressor<'static>>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

fn zstd_compress(data: &[u8]) -> std::io::Result<Vec<u8>> {
    with_context(
        &COMPRESSOR,
        || zstd::bulk::Compressor::new(ZSTD_LEVEL),
        |c| c.compress(data),
    )
}

fn zstd_decompress(data: &[u8], capacity: usize) -> std::io::Result<Vec<u8>> {
    with_context(&DECOMPRESSOR, zstd::bulk::Decompressor::new, |d| {
        d.decompress(data, capacity)
    })
}

/// Runs `f` with this thread's context, made by `make` the first time.
fn with_context<C: 'static, R>(
    slot: &'static LocalKey<RefCell<Option<C>>>,
    make: impl FnOnce() -> std::io::Result<C>,
    f: impl FnOnce(&mut C) -> std::io::Result<R>,
) -> std::io::Result<R> {
    slot.with(|slot| {
        let mut ctx = match slot.borrow_mut().take() {
            Some(ctx) => ctx,
            None => make()?,
        };
        let out = f(&mut ctx);
        *slot.borrow_mut() = Some(ctx);
        out
    })
}

/// Raw bytes (HTTP bodies), as written.
pub(crate) const FORMAT_RAW: &str = "b";
/// Raw bytes, zstd-compressed.
pub(crate) const FORMAT_RAW_ZSTD: &str = "bz";

/// Compresses raw bytes when that saves space; returns the format and the stored bytes.
pub(crate) fn encode_bytes(data: Vec<u8>, compress_from: Option<usize>) -> (&'static str, Vec<u8>) {
    if let Some(min) = compress_from
        && data.len() >= min
        && let Ok(compressed) = zstd_compress(&data)
        && compressed.len() + data.len() / 16 < data.len()
    {
        return (FORMAT_RAW_ZSTD, compressed);
    }
    (FORMAT_RAW, data)
}

/// The raw bytes of a payload written by [`encode_bytes`].
pub(crate) fn decode_bytes(
    key: &str,
    format: &str,
    data: Vec<u8>,
    max_size: usize,
) -> Result<Vec<u8>> {
    match format {
        FORMAT_RAW => Ok(data),
        FORMAT_RAW_ZSTD => decompress(key, &data, max_size),
        other => Err(Error::corrupt(
            key,
            format!("unknown body format {other:?}"),
        )),
    }
}

/// SHA-256 of a payload, to detect damaged or mixed chunks.
pub(crate) fn checksum(data: &[u8]) -> Vec<u8> {
    Sha256::digest(data).to_vec()
}

/// Secret signing keys: the first signs, any verifies. Their `Debug` never shows them.
#[derive(Clone, Default)]
pub(crate) struct SecretKeys(pub(crate) Vec<Vec<u8>>);

impl std::fmt::Debug for SecretKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{} secret keys]", self.0.len())
    }
}

/// HMAC-SHA256 of `data` under `key`.
pub(crate) fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    use hmac::{KeyInit, Mac};
    let mut mac = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(key)
        .expect("HMAC takes keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// Whether a signature of `input` by one of `keys` is `signature`, compared in constant time.
pub(crate) fn signed_by_any(keys: &[Vec<u8>], input: &[u8], signature: &[u8]) -> bool {
    let eq = |a: &[u8], b: &[u8]| {
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    };
    keys.iter().any(|k| eq(&hmac(k, input), signature))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_pickles_are_reported_as_such_and_other_mismatches_are_not() {
        use std::error::Error as _;
        // ext 8: 0xc7, length, type, data (what the Python package writes for pickle=True).
        let mut pickled = vec![0xc7, 4, PYTHON_PICKLE_EXT as u8];
        pickled.extend_from_slice(b"\x80\x04N.");
        let err = decode::<String>("k", FORMAT_PLAIN, &pickled, 64).unwrap_err();
        let why = err.source().unwrap().to_string();
        assert!(why.contains("pickle=True"), "{why}");
        for short in [
            &[0xd4, PYTHON_PICKLE_EXT as u8, 0][..],
            &[0xd6, 80, 1, 2, 3, 4],
        ] {
            let err = decode::<String>("k", FORMAT_PLAIN, short, 64).unwrap_err();
            assert!(err.source().unwrap().to_string().contains("pickle"));
        }
        // Another extension type, or a plain mismatch, keeps serde's own message.
        let other = [0xc7, 1, 7, 0];
        let err = decode::<String>("k", FORMAT_PLAIN, &other, 64).unwrap_err();
        assert!(!err.source().unwrap().to_string().contains("pickle"));
        let number = rmp_serde::to_vec(&1.5f64).unwrap();
        let err = decode::<String>("k", FORMAT_PLAIN, &number, 64).unwrap_err();
        assert!(!err.source().unwrap().to_string().contains("pickle"));
    }

    #[test]
    fn integers_become_counters_and_other_values_do_not() {
        assert!(matches!(encode(&7u8, None).unwrap(), Encoded::Counter(7)));
        assert!(matches!(
            encode(&-300i32, None).unwrap(),
            Encoded::Counter(-300)
        ));
        assert!(matches!(
            encode(&i64::MIN, None).unwrap(),
            Encoded::Counter(i64::MIN)
        ));
        // Too large for i64: stays an encoded value.
        assert!(matches!(
            encode(&u64::MAX, None).unwrap(),
            Encoded::Bytes { .. }
        ));
        assert!(matches!(
            encode(&1.5f64, None).unwrap(),
            Encoded::Bytes { .. }
        ));
        assert!(matches!(encode("12", None).unwrap(), Encoded::Bytes { .. }));
        assert!(matches!(
            encode(&true, None).unwrap(),
            Encoded::Bytes { .. }
        ));
    }

    #[test]
    fn counters_decode_as_any_integer_type() {
        assert_eq!(decode_counter::<u8>("k", 7).unwrap(), 7);
        assert_eq!(decode_counter::<Option<i64>>("k", 7).unwrap(), Some(7));
        assert!(decode_counter::<String>("k", 7).is_err());
    }

    #[test]
    fn compressible_values_are_compressed_and_round_trip() {
        let text = "abc".repeat(10_000);
        let Encoded::Bytes { format, data, .. } = encode(&text, Some(1024)).unwrap() else {
            panic!("not bytes")
        };
        assert_eq!(format, FORMAT_ZSTD);
        assert!(data.len() < 1000);
        assert_eq!(decode::<String>("k", format, &data, 1 << 20).unwrap(), text);
    }

    #[test]
    fn a_compressed_value_over_the_limit_is_corrupt_not_allocated() {
        let Encoded::Bytes { format, data, .. } = encode(&"x".repeat(100_000), Some(1)).unwrap()
        else {
            panic!("not bytes")
        };
        let err = decode::<String>("k", format, &data, 1000).unwrap_err();
        assert!(err.is_corrupt(), "{err}");
        let err = decode::<String>("k", FORMAT_ZSTD, b"garbage", 1000).unwrap_err();
        assert!(err.is_corrupt(), "{err}");
    }
}
