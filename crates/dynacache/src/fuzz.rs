//! Fuzzing of every decoder of stored data, on stable Rust: generated and mutated items and
//! bytes fed to the code that reads them back, asserting no panic and no wrong value.
//!
//! A stored item is whatever a process with write access to the table put there, so each
//! decoder must turn any input into a value, a miss or a typed error. Valid items are built the
//! way the caches write them, then mutated (bit flips, truncations, extensions, attributes
//! removed, retyped or replaced by random ones); decoding a mutant must give an error, a miss,
//! or exactly the original value: never another value. Counters are the exception on purpose:
//! a DynamoDB number changed by a tamperer is a valid counter (see `docs/security.md`).
//!
//! A short run is part of the test suite. The long run is an ignored test:
//!
//! ```text
//! DYNACACHE_FUZZ_INPUTS=1000000 cargo test --release -p dynacache --lib fuzz -- --ignored --nocapture
//! ```
//!
//! (`DYNACACHE_FUZZ_SEED` picks another sequence of inputs; a failure prints the seed and input
//! number that reproduce it.)

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use serde::{Deserialize, Serialize};

use crate::codec::{self, Encoded};
use crate::http::fuzzing as http_doc;
use crate::store::{Decoded, Payload, Stamp, Store, StoreConfig};
use crate::table::item::{self, Item};

/// A value of the kind users store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Value {
    name: String,
    numbers: Vec<i64>,
    blob: Vec<u8>,
    nested: Option<Box<Value>>,
}

fn random_value(rng: &mut fastrand::Rng, depth: u32) -> Value {
    let len = rng.usize(0..64);
    Value {
        name: (0..rng.usize(0..24)).map(|_| rng.alphanumeric()).collect(),
        numbers: (0..rng.usize(0..8)).map(|_| rng.i64(..)).collect(),
        // Sometimes long and repetitive, so that it is compressed.
        blob: if rng.bool() {
            (0..len).map(|_| rng.u8(..)).collect()
        } else {
            vec![rng.u8(..); rng.usize(0..4000)]
        },
        nested: (depth < 2 && rng.bool()).then(|| Box::new(random_value(rng, depth + 1))),
    }
}

fn random_bytes(rng: &mut fastrand::Rng, max: usize) -> Vec<u8> {
    (0..rng.usize(0..max)).map(|_| rng.u8(..)).collect()
}

fn random_attribute(rng: &mut fastrand::Rng, depth: u32) -> AttributeValue {
    match rng.u8(0..8) {
        0 => AttributeValue::S(String::from_utf8_lossy(&random_bytes(rng, 40)).into_owned()),
        1 => AttributeValue::N(match rng.u8(0..4) {
            0 => rng.i64(..).to_string(),
            1 => format!("{}.{}", rng.i32(..), rng.u32(..)),
            2 => "1e400".to_owned(),
            _ => rng.u64(..).to_string(),
        }),
        2 => AttributeValue::B(Blob::new(random_bytes(rng, 64))),
        3 => AttributeValue::Bool(rng.bool()),
        4 => AttributeValue::Null(true),
        5 if depth < 3 => AttributeValue::L(
            (0..rng.usize(0..4))
                .map(|_| random_attribute(rng, depth + 1))
                .collect(),
        ),
        6 if depth < 3 => AttributeValue::M(
            (0..rng.usize(0..4))
                .map(|i| (format!("k{i}"), random_attribute(rng, depth + 1)))
                .collect(),
        ),
        _ => AttributeValue::Ss(vec![format!("{}", rng.u16(..))]),
    }
}

/// One mutation of an item.
fn mutate(rng: &mut fastrand::Rng, item: &mut Item) {
    let names: Vec<String> = item.keys().cloned().collect();
    if names.is_empty() || rng.u8(0..10) == 0 {
        item.insert(format!("x{}", rng.u8(..)), random_attribute(rng, 0));
        return;
    }
    let name = names[rng.usize(0..names.len())].clone();
    let Some(value) = item.get_mut(&name) else {
        return;
    };
    match (rng.u8(0..6), value) {
        (0, _) => {
            item.remove(&name);
        }
        (1, v) => *v = random_attribute(rng, 0),
        (_, AttributeValue::B(blob)) => {
            let mut bytes = blob.as_ref().to_vec();
            mutate_bytes(rng, &mut bytes);
            *blob = Blob::new(bytes);
        }
        (_, AttributeValue::S(text)) => {
            let mut bytes = text.clone().into_bytes();
            mutate_bytes(rng, &mut bytes);
            *text = String::from_utf8_lossy(&bytes).into_owned();
        }
        (_, AttributeValue::N(number)) => {
            let mut bytes = number.clone().into_bytes();
            mutate_bytes(rng, &mut bytes);
            *number = String::from_utf8_lossy(&bytes).into_owned();
        }
        (_, AttributeValue::M(map)) => {
            let mut inner: Item = std::mem::take(map);
            mutate(rng, &mut inner);
            *map = inner;
        }
        (_, AttributeValue::L(list)) if !list.is_empty() => {
            let i = rng.usize(0..list.len());
            list[i] = random_attribute(rng, 1);
        }
        (_, v) => *v = random_attribute(rng, 0),
    }
}

fn mutate_bytes(rng: &mut fastrand::Rng, bytes: &mut Vec<u8>) {
    match rng.u8(0..5) {
        _ if bytes.is_empty() => bytes.push(rng.u8(..)),
        0 => bytes.truncate(rng.usize(0..bytes.len())),
        1 => bytes.extend(random_bytes(rng, 16)),
        2 => {
            let i = rng.usize(0..bytes.len());
            bytes[i] = rng.u8(..);
        }
        _ => {
            let i = rng.usize(0..bytes.len());
            bytes[i] ^= 1 << rng.u8(0..8);
        }
    }
}

/// What one run found.
#[derive(Debug, Default)]
struct Tally {
    inputs: u64,
    errors: u64,
    misses: u64,
    same: u64,
}

/// Runs `inputs` fuzz inputs from `seed` through every decoder. Panics (with the seed and the
/// input number) on a decoder panic or a wrong value.
fn run(store: &Store, seed: u64, inputs: u64) -> Tally {
    let mut tally = Tally::default();
    for n in 0..inputs {
        let input_seed = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(n);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut rng = fastrand::Rng::with_seed(input_seed);
            match n % 5 {
                0 | 1 => kv_value(store, &mut rng),
                2 => http_document(store, &mut rng),
                3 => chunk_head(&mut rng),
                _ => raw_bytes_and_keys(store, &mut rng),
            }
        }));
        match outcome {
            Ok(Outcome::Error) => tally.errors += 1,
            Ok(Outcome::Miss) => tally.misses += 1,
            Ok(Outcome::Same) => tally.same += 1,
            Err(_) => panic!(
                "fuzz input {n} of seed {seed} failed (reproduce with DYNACACHE_FUZZ_SEED={seed})"
            ),
        }
        tally.inputs += 1;
    }
    tally
}

enum Outcome {
    Error,
    Miss,
    Same,
}

/// A KV value written as the cache writes it, mutated, read back.
fn kv_value(store: &Store, rng: &mut fastrand::Rng) -> Outcome {
    let value = random_value(rng, 0);
    let key = store.key(format!("k{}", rng.u32(..)).as_bytes()).unwrap();
    let (format, data) = match codec::encode(&value, Some(1024)).unwrap() {
        Encoded::Bytes { format, data, .. } => (format, data),
        Encoded::Counter(_) => unreachable!("a struct is not a counter"),
    };
    let payload = Payload {
        format: format.to_owned(),
        data,
    };
    let stamp = Stamp {
        now: 1_000,
        expires: Some(i64::MAX / 2),
    };
    let Ok(mut item) = store.inline_item(&key, Item::new(), Some(payload), stamp) else {
        return Outcome::Miss;
    };
    for _ in 0..rng.usize(1..4) {
        mutate(rng, &mut item);
    }
    let entry = match store.decode_item(&key, item, false, false) {
        Err(e) => {
            assert!(e.is_corrupt(), "{e}");
            return Outcome::Error;
        }
        Ok(Decoded::Absent) | Ok(Decoded::Chunked(_)) => return Outcome::Miss,
        Ok(Decoded::Entry(entry)) => entry,
    };
    if let Some(Ok(_)) = item::get_i64(&entry.item, item::COUNTER) {
        // A mutated item that now holds a number attribute reads as a counter: counters are
        // not checksummed (they change atomically inside DynamoDB).
        return Outcome::Miss;
    }
    let Some(p) = entry.payload else {
        return Outcome::Miss;
    };
    match codec::decode::<Value>(&key.pk, &p.format, &p.data, 1 << 20) {
        Err(_) => Outcome::Error,
        Ok(decoded) => {
            assert_eq!(decoded, value, "a mutated item decoded to another value");
            Outcome::Same
        }
    }
}

/// A signed HTTP document, mutated: verification and decoding must refuse it or give it back
/// exactly.
fn http_document(store: &Store, rng: &mut fastrand::Rng) -> Outcome {
    let body = if rng.bool() {
        random_bytes(rng, 200)
    } else {
        format!(r#"{{"n": {}}}"#, rng.u32(..)).into_bytes()
    };
    let (key, mut item, original) = http_doc::signed_item(store, &body, rng.u64(..));
    for _ in 0..rng.usize(1..4) {
        mutate(rng, &mut item);
    }
    match http_doc::read_verified(store, &key, item) {
        Err(_) => Outcome::Error,
        Ok(None) => Outcome::Miss,
        Ok(Some(served)) => {
            assert!(
                served == original,
                "a mutated document verified as another response"
            );
            Outcome::Same
        }
    }
}

/// Chunk heads: random and mutated ones must be refused, or bounded by what they declare.
fn chunk_head(rng: &mut fastrand::Rng) -> Outcome {
    let mut head = Item::from([
        (item::CHUNK_VERSION.to_owned(), item::s("0123456789abcdef")),
        (item::CHUNKS.to_owned(), item::n(3)),
        (item::SIZE.to_owned(), item::n(1000)),
        (item::CHUNK_SIZE.to_owned(), item::n(400)),
        (item::CHECKSUM.to_owned(), item::b(vec![7u8; 32])),
        (item::FORMAT.to_owned(), item::s("b")),
    ]);
    for _ in 0..rng.usize(0..4) {
        mutate(rng, &mut head);
    }
    let max = 1 << 20;
    match crate::store::chunks::Head::from_item("ns:k", &head, max) {
        Err(e) => {
            assert!(e.is_corrupt(), "{e}");
            Outcome::Error
        }
        Ok(None) => Outcome::Miss,
        Ok(Some(h)) => {
            assert!(h.size() <= max && h.count as usize <= h.size().max(1));
            Outcome::Same
        }
    }
}

/// Raw bytes to the value decoders, and random bytes as keys.
fn raw_bytes_and_keys(store: &Store, rng: &mut fastrand::Rng) -> Outcome {
    let bytes = random_bytes(rng, 300);
    let format = ["m", "mz", "b", "bz", "", "zz"][rng.usize(0..6)];
    let _ = codec::decode::<Value>("k", format, &bytes, 1 << 16);
    let _ = codec::decode::<String>("k", format, &bytes, 1 << 16);
    let _ = codec::decode_bytes("k", format, bytes.clone(), 1 << 16);
    let _ = codec::decode_counter::<u8>("k", rng.i64(..));
    let mut index = Item::new();
    for _ in 0..rng.usize(0..5) {
        mutate(rng, &mut index);
    }
    let _ = http_doc::follow(&index);
    match store.key(&bytes) {
        Ok(key) => {
            assert!(key.pk.len() <= crate::table::MAX_KEY_BYTES);
            Outcome::Same
        }
        Err(e) => {
            assert!(e.is_invalid_input());
            Outcome::Error
        }
    }
}

async fn fuzz_store() -> Store {
    let table = crate::Table::builder().open().await.unwrap();
    Store::new(
        table,
        StoreConfig {
            namespace: "fz".into(),
            ttl_grace: std::time::Duration::from_secs(60),
            max_value_size: 1 << 20,
            chunk_size: 350 * 1024,
            clock: std::sync::Arc::new(crate::SystemClock),
            objects: None,
        },
    )
    .unwrap()
}

fn seed() -> u64 {
    std::env::var("DYNACACHE_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5EED)
}

#[tokio::test]
async fn decoders_survive_generated_and_mutated_inputs() {
    let store = fuzz_store().await;
    let tally = tokio::task::spawn_blocking(move || run(&store, seed(), 20_000))
        .await
        .unwrap();
    // Every kind of outcome happened: the generator reaches errors, misses and clean reads.
    assert!(
        tally.errors > 1000 && tally.same > 1000 && tally.misses > 0,
        "{tally:?}"
    );
}

#[tokio::test]
#[ignore = "long run: DYNACACHE_FUZZ_INPUTS=1000000 cargo test --release -p dynacache --lib fuzz -- --ignored"]
async fn decoders_survive_a_long_run() {
    let inputs: u64 = std::env::var("DYNACACHE_FUZZ_INPUTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let store = fuzz_store().await;
    let seed = seed();
    let started = std::time::Instant::now();
    let tally = tokio::task::spawn_blocking(move || run(&store, seed, inputs))
        .await
        .unwrap();
    println!(
        "{} inputs in {:.1} s (seed {seed}): {} refused, {} misses, {} read back unchanged",
        tally.inputs,
        started.elapsed().as_secs_f64(),
        tally.errors,
        tally.misses,
        tally.same
    );
}
