//! A soak: 256 tasks doing mixed key/value operations for a while (2 minutes by default,
//! `DYNACACHE_SOAK_SECONDS`), on the embedded engine and, when `DYNACACHE_TEST_DYNAMODB_LOCAL`
//! is set, on DynamoDB Local. Reports operations per second, errors by kind, resident memory
//! over time, and checks that counters are exact and that no read ever returned a value another
//! key or another write put there. Reproduce with `scripts/bench soak`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dynacache::{Cache, Expiry, Table};
use serde::{Deserialize, Serialize};

const TASKS: usize = 256;
const KEYS: u64 = 2000;
const COUNTERS: usize = 16;

/// A value that names its key and the write that made it, so a wrong read is caught.
#[derive(Debug, Serialize, Deserialize)]
struct Stamped {
    key: u64,
    writer: u64,
    pad: Vec<u8>,
}

#[derive(Default)]
struct Tally {
    ops: AtomicU64,
    errors: std::sync::Mutex<HashMap<String, u64>>,
    wrong: AtomicU64,
}

impl Tally {
    fn error(&self, e: &dynacache::Error) {
        let kind = if e.is_throttled() {
            "throttled"
        } else if e.is_timeout() {
            "timeout"
        } else if e.is_unavailable() {
            "unavailable"
        } else if e.is_corrupt() {
            "corrupt"
        } else if e.is_contention() {
            "contention"
        } else {
            "other"
        };
        *self
            .errors
            .lock()
            .unwrap()
            .entry(kind.to_owned())
            .or_default() += 1;
    }
}

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

async fn soak(engine: &str, table: Table, seconds: u64) -> String {
    let cache = Cache::builder()
        .namespace(format!("soak{:x}", fastrand::u32(..)))
        .default_ttl(Duration::from_secs(3600))
        .build(table)
        .unwrap();
    let tally = Arc::new(Tally::default());
    let expected: Arc<Vec<AtomicI64>> =
        Arc::new((0..COUNTERS).map(|_| AtomicI64::new(0)).collect());
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let rss_start = rss_mib();
    let mut rss_peak = rss_start;
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let (cache, tally, expected) = (cache.clone(), tally.clone(), expected.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = fastrand::Rng::with_seed(t as u64);
            let mut writes = 0u64;
            while Instant::now() < deadline {
                let k = rng.u64(0..KEYS);
                let key = format!("key:{k}");
                let result: dynacache::Result<()> = match rng.u8(0..100) {
                    0..40 => match cache.get::<Stamped>(&key).await {
                        Ok(Some(v)) if v.key != k => {
                            tally.wrong.fetch_add(1, Ordering::Relaxed);
                            Ok(())
                        }
                        other => other.map(|_| ()),
                    },
                    40..65 => {
                        writes += 1;
                        // Now and then a value beyond the item limit, split into chunks.
                        let pad = if rng.u8(0..200) == 0 {
                            600_000
                        } else {
                            rng.usize(0..2000)
                        };
                        let v = Stamped {
                            key: k,
                            writer: (t as u64) << 32 | writes,
                            pad: (0..pad).map(|_| rng.u8(..)).collect(),
                        };
                        cache.set(&key, &v).await
                    }
                    65..80 => {
                        let c = rng.usize(0..COUNTERS);
                        match cache.inc(format!("counter:{c}"), 1).await {
                            Ok(_) => {
                                expected[c].fetch_add(1, Ordering::Relaxed);
                                Ok(())
                            }
                            Err(e) => Err(e),
                        }
                    }
                    80..88 => cache.delete(&key).await.map(|_| ()),
                    88..94 => {
                        let keys: Vec<String> = (0..10)
                            .map(|_| format!("key:{}", rng.u64(0..KEYS)))
                            .collect();
                        match cache.get_many::<Stamped, _>(&keys).await {
                            Ok(values) => {
                                for (key, v) in keys.iter().zip(values) {
                                    if v.is_some_and(|v| format!("key:{}", v.key) != *key) {
                                        tally.wrong.fetch_add(1, Ordering::Relaxed);
                                    }
                                }
                                Ok(())
                            }
                            Err(e) => Err(e),
                        }
                    }
                    94..97 => cache
                        .add_with(
                            &key,
                            &Stamped {
                                key: k,
                                writer: 0,
                                pad: vec![],
                            },
                            Expiry::Default,
                        )
                        .await
                        .map(|_| ()),
                    _ => cache.has(&key).await.map(|_| ()),
                };
                tally.ops.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = result {
                    tally.error(&e);
                }
            }
        }));
    }
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        rss_peak = rss_peak.max(rss_mib());
    }
    for t in tasks {
        t.await.unwrap();
    }
    let rss_end = rss_mib();
    let mut exact = true;
    for (c, want) in expected.iter().enumerate() {
        let got = cache
            .get::<i64>(format!("counter:{c}"))
            .await
            .unwrap()
            .unwrap_or(0);
        exact &= got == want.load(Ordering::Relaxed);
    }
    let ops = tally.ops.load(Ordering::Relaxed);
    let errors = tally.errors.lock().unwrap();
    let mut errors: Vec<String> = errors.iter().map(|(k, v)| format!("{k} {v}")).collect();
    errors.sort();
    format!(
        "| {engine} | {seconds} s | {ops} | {:.0} | {} | {} | {} | {:.0} → {:.0} (peak {:.0}) |",
        ops as f64 / seconds as f64,
        if errors.is_empty() {
            "none".to_owned()
        } else {
            errors.join(", ")
        },
        tally.wrong.load(Ordering::Relaxed),
        if exact { "exact" } else { "WRONG" },
        rss_start,
        rss_end,
        rss_peak,
    )
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let seconds: u64 = std::env::var("DYNACACHE_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(120);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut rows = Vec::new();
        let embedded = Table::builder().name("soak").open().await.unwrap();
        rows.push(soak("embedded", embedded, seconds).await);
        if let Ok(url) = std::env::var("DYNACACHE_TEST_DYNAMODB_LOCAL") {
            let local = Table::builder()
                .name(format!("soak_{:x}", fastrand::u32(..)))
                .endpoint_url(url)
                .open()
                .await
                .unwrap();
            rows.push(soak("DynamoDB Local", local, seconds).await);
        }
        println!("| engine | duration | operations | ops/s | errors | wrong values | counters | resident MiB start → end (peak) |");
        println!("|---|---|---|---|---|---|---|---|");
        for r in rows {
            println!("{r}");
        }
    });
}
