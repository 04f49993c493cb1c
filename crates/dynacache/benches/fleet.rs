//! Fleet scale, on each engine: what the in-process tier costs per hit against a bare moka
//! get, how many DynamoDB reads a hot key costs when 16 processes read it, how many origin calls
//! 64 concurrent misses in 4 processes make with and without fleet single flight (key/value and
//! HTTP), how long the first hit of a fresh process takes with and without `Table::warm`, and
//! HTTP hits per second per core with and without the tier. Reproduce with:
//!
//! ```text
//! scripts/bench fleet                                  # starts DynamoDB Local, both engines
//! cargo bench -p dynacache --bench fleet -- --bench    # embedded engine only
//! ```
//!
//! `DYNACACHE_FLEET_SECONDS` sets how long each hot-key run lasts (default 30),
//! `DYNACACHE_FLEET_ROUNDS` the rounds of concurrent misses (default 20), and
//! `DYNACACHE_FLEET_ONLY` a comma-separated subset of `tier,hot,flight,first,http`;
//! `DYNACACHE_FLEET_PROFILE_TIER=struct` (or `Vec`, `ByteBuf`) runs only tier hits of that
//! value for 5 s, for `perf record`.
//!
//! The other processes are this binary run again with `DYNACACHE_FLEET_ROLE` set; they reach
//! the embedded engine through the loopback endpoint it listens on (`Table::local_endpoint`).

mod common;
use common::cpu_time;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dynacache::http::{CacheFactsExt, CachedClient, HttpCache};
use dynacache::{Cache, Expiry, FleetSingleFlight, InProcessTier, Table, TablePolicy};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use serde_json::{Value, json};
use tokio::sync::mpsc;

const ROLE: &str = "DYNACACHE_FLEET_ROLE";
const ENDPOINT: &str = "DYNACACHE_FLEET_ENDPOINT";
const TABLE: &str = "DYNACACHE_FLEET_TABLE";
const PARAM: &str = "DYNACACHE_FLEET_PARAM";
const SPAWNED: &str = "DYNACACHE_FLEET_SPAWNED_US";
/// What starts a child's words on stdout.
const SAYS: &str = "FLEET ";
/// The namespace and key every process reads in the hot-key and first-hit runs.
const NAMESPACE: &str = "fleet";
const HOT_KEY: &str = "hot";

// ----- measuring ------------------------------------------------------------------------------

/// This thread's CPU time in nanoseconds, from /proc/thread-self/schedstat (exact, unlike the
/// 10 ms ticks of /proc/self/stat).
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .expect("/proc/thread-self/schedstat")
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

fn median<T: PartialOrd + Copy>(mut v: Vec<T>) -> T {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn random_bytes(n: usize) -> Vec<u8> {
    (0..n).map(|_| fastrand::u8(..)).collect()
}

/// Sleeps until `at_us` (epoch µs).
async fn until(at_us: u64) {
    let now = now_us();
    if at_us > now {
        tokio::time::sleep(Duration::from_micros(at_us - now)).await;
    }
}

// ----- counting DynamoDB calls ------------------------------------------------------------------

/// A metrics recorder that counts only what these runs need, exactly and cheaply: the
/// DynamoDB calls (`dynacache_storage_seconds` samples, by `op`) and storage errors (by
/// `kind`). Everything else is a no-op, so hits cost what they cost without a recorder, plus a
/// name comparison.
#[derive(Default)]
struct Counts(Mutex<HashMap<String, Arc<Count>>>);

#[derive(Default)]
struct Count(AtomicU64);

impl metrics::HistogramFn for Count {
    fn record(&self, _: f64) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

impl metrics::CounterFn for Count {
    fn increment(&self, value: u64) {
        self.0.fetch_add(value, Ordering::Relaxed);
    }

    fn absolute(&self, value: u64) {
        self.0.fetch_max(value, Ordering::Relaxed);
    }
}

impl Counts {
    fn handle(&self, name: String) -> Arc<Count> {
        self.0.lock().unwrap().entry(name).or_default().clone()
    }

    fn snapshot(&self) -> BTreeMap<String, u64> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.0.load(Ordering::Relaxed)))
            .collect()
    }
}

struct Recording(Arc<Counts>);

fn label(key: &metrics::Key, name: &str) -> String {
    key.labels()
        .find(|l| l.key() == name)
        .map(|l| l.value().to_owned())
        .unwrap_or_default()
}

impl metrics::Recorder for Recording {
    fn describe_counter(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_gauge(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_histogram(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }

    fn register_counter(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        if key.name() == "dynacache_storage_errors_total" {
            let kind = label(key, "kind");
            return metrics::Counter::from_arc(self.0.handle(format!("error:{kind}")));
        }
        metrics::Counter::noop()
    }

    fn register_gauge(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        metrics::Gauge::noop()
    }

    fn register_histogram(
        &self,
        key: &metrics::Key,
        _: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        if key.name() == "dynacache_storage_seconds" {
            return metrics::Histogram::from_arc(self.0.handle(label(key, "op")));
        }
        metrics::Histogram::noop()
    }
}

/// Installs the counting recorder for this process.
fn count_calls() -> Arc<Counts> {
    let counts = Arc::new(Counts::default());
    metrics::set_global_recorder(Recording(counts.clone())).expect("one recorder");
    counts
}

fn diff(after: &BTreeMap<String, u64>, before: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect()
}

// ----- child processes ----------------------------------------------------------------------------

/// Another process of the fleet: this binary run again in a role. Killed when dropped.
struct Child {
    process: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    lines: mpsc::UnboundedReceiver<String>,
}

impl Child {
    fn start(role: &str, endpoint: &str, table: &str, param: &str) -> Child {
        let mut process = Command::new(std::env::current_exe().unwrap())
            .env(ROLE, role)
            .env(ENDPOINT, endpoint)
            .env(TABLE, table)
            .env(PARAM, param)
            .env(SPAWNED, now_us().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start a child process");
        let stdout = process.stdout.take().unwrap();
        let (tx, lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if let Some(said) = line.strip_prefix(SAYS) {
                    let _ = tx.send(said.to_owned());
                }
            }
        });
        Child {
            stdin: process.stdin.take(),
            process,
            lines,
        }
    }

    fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// The child's next line (a hang guard, not a timing assertion).
    async fn said(&mut self, secs: u64) -> String {
        tokio::time::timeout(Duration::from_secs(secs), self.lines.recv())
            .await
            .unwrap_or_else(|_| panic!("a child process said nothing for {secs} s"))
            .expect("a child process ended early")
    }

    /// The JSON after `word` in the child's next line.
    async fn result(&mut self, word: &str, secs: u64) -> Value {
        let line = self.said(secs).await;
        let rest = line
            .strip_prefix(word)
            .unwrap_or_else(|| panic!("expected {word:?}, the child said {line:?}"));
        serde_json::from_str(rest.trim()).unwrap()
    }

    /// Closes its stdin (it ends) and waits for it.
    fn finish(mut self) {
        self.stdin.take();
        let status = self.process.wait().unwrap();
        assert!(status.success(), "a child process failed: {status}");
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.stdin.is_some() {
            let _ = self.process.kill();
            let _ = self.process.wait();
        }
    }
}

mod child {
    use super::*;

    fn var(name: &str) -> String {
        std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"))
    }

    pub(super) fn say(line: &str) {
        println!("{SAYS}{line}");
    }

    /// Lines from the parent, read on a thread of their own so the runtime keeps running.
    fn commands() -> mpsc::UnboundedReceiver<String> {
        let (tx, rx) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in std::io::stdin().lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        rx
    }

    async fn open() -> Table {
        Table::builder()
            .name(var(TABLE))
            .endpoint_url(var(ENDPOINT))
            .policy(TablePolicy::AssumeExists)
            .open()
            .await
            .unwrap()
    }

    pub(super) fn main(role: &str) {
        let entered_us = now_us();
        let rt = if role == "first" {
            // What `#[tokio::main]` builds on this machine.
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
        } else {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
        }
        .unwrap();
        rt.block_on(async {
            match role {
                "hot" => hot().await,
                "flight_kv" => flight_kv().await,
                "flight_http" => flight_http().await,
                "first" => first(entered_us).await,
                other => panic!("unknown role {other}"),
            }
        });
        std::process::exit(0);
    }

    /// Reads the hot key in a tight loop for the time the parent says, from the moment it says.
    async fn hot() {
        let counts = count_calls();
        let l1_ms: u64 = var(PARAM).parse().unwrap();
        let table = open().await;
        let mut builder = Cache::builder().namespace(NAMESPACE);
        if l1_ms > 0 {
            builder = builder
                .in_process(InProcessTier::new(16 << 20).l1_ttl(Duration::from_millis(l1_ms)));
        }
        let cache = builder.build(table.clone()).unwrap();
        // One read before the start: the connection is open and the tier holds the value.
        assert!(cache.get::<ByteBuf>(HOT_KEY).await.unwrap().is_some());
        let mut commands = commands();
        say("ready");
        let go = commands.recv().await.expect("go");
        let mut words = go.split_whitespace().skip(1);
        let start_us: u64 = words.next().unwrap().parse().unwrap();
        let run = Duration::from_millis(words.next().unwrap().parse().unwrap());
        until(start_us).await;
        let (calls, units) = (counts.snapshot(), table.consumed_capacity().read_units);
        let started = Instant::now();
        let end = started + run;
        let (mut gets, mut errors, mut throttled) = (0u64, 0u64, 0u64);
        loop {
            match cache.get::<ByteBuf>(HOT_KEY).await {
                Ok(Some(v)) => {
                    std::hint::black_box(v);
                    gets += 1;
                }
                Ok(None) => panic!("the hot key is missing"),
                Err(e) => {
                    errors += 1;
                    throttled += u64::from(e.is_throttled());
                }
            }
            if Instant::now() >= end {
                break;
            }
        }
        let elapsed = started.elapsed();
        let calls = diff(&counts.snapshot(), &calls);
        say(&format!(
            "result {}",
            json!({
                "gets": gets,
                "get_items": calls.get("GetItem").copied().unwrap_or(0),
                "read_units": table.consumed_capacity().read_units - units,
                "errors": errors,
                "throttled": throttled,
                "throttled_metric": calls.get("error:throttled").copied().unwrap_or(0),
                "seconds": elapsed.as_secs_f64(),
            })
        ));
    }

    /// For each `go START KEY`: 16 concurrent `get_or_insert_with` of KEY from START.
    async fn flight_kv() {
        let counts = count_calls();
        let fleet = var(PARAM) == "fleet";
        let mut builder = Cache::builder().namespace("flight");
        if fleet {
            builder = builder.fleet_single_flight(FleetSingleFlight::new(Duration::from_secs(10)));
        }
        let cache = builder.build(open().await).unwrap();
        let mut commands = commands();
        say("ready");
        while let Some(go) = commands.recv().await {
            let mut words = go.split_whitespace().skip(1);
            let start_us: u64 = words.next().unwrap().parse().unwrap();
            let key = words.next().unwrap().to_owned();
            until(start_us).await;
            let before = counts.snapshot();
            let started = Instant::now();
            let calls = Arc::new(AtomicUsize::new(0));
            let tasks: Vec<_> = (0..16)
                .map(|i| {
                    let (cache, calls, key) = (cache.clone(), calls.clone(), key.clone());
                    tokio::spawn(async move {
                        let v: String = cache
                            .get_or_insert_with(
                                &key,
                                Expiry::After(Duration::from_secs(600)),
                                || async {
                                    calls.fetch_add(1, Ordering::SeqCst);
                                    tokio::time::sleep(Duration::from_millis(100)).await;
                                    format!("{key} computed by pid {} task {i}", std::process::id())
                                },
                            )
                            .await;
                        (v, started.elapsed())
                    })
                })
                .collect();
            let done = futures::future::try_join_all(tasks).await.unwrap();
            report_round(&counts, &before, calls.load(Ordering::SeqCst), done);
        }
    }

    /// For each `go START URL`: 16 concurrent GETs of URL through one `CachedClient` from START.
    async fn flight_http() {
        let counts = count_calls();
        let fleet = var(PARAM) == "fleet";
        let mut builder = HttpCache::builder().namespace("flight_http");
        if fleet {
            builder = builder.fleet_single_flight(FleetSingleFlight::new(Duration::from_secs(10)));
        }
        let client =
            CachedClient::new(reqwest::Client::new(), builder.build(open().await).unwrap());
        let mut commands = commands();
        say("ready");
        while let Some(go) = commands.recv().await {
            let mut words = go.split_whitespace().skip(1);
            let start_us: u64 = words.next().unwrap().parse().unwrap();
            let url = words.next().unwrap().to_owned();
            until(start_us).await;
            let before = counts.snapshot();
            let started = Instant::now();
            let tasks: Vec<_> = (0..16)
                .map(|_| {
                    let (client, url) = (client.clone(), url.clone());
                    tokio::spawn(async move {
                        let res = client.get(&url).send().await.unwrap();
                        assert_eq!(res.status(), 200);
                        let body = res.text().await.unwrap();
                        (body, started.elapsed())
                    })
                })
                .collect();
            let done = futures::future::try_join_all(tasks).await.unwrap();
            report_round(&counts, &before, 0, done);
        }
    }

    fn report_round(
        counts: &Counts,
        before: &BTreeMap<String, u64>,
        calls: usize,
        done: Vec<(String, Duration)>,
    ) {
        let slowest = done.iter().map(|(_, d)| *d).max().unwrap();
        let mut values: Vec<String> = done.into_iter().map(|(v, _)| v).collect();
        values.sort();
        values.dedup();
        say(&format!(
            "done {}",
            json!({
                "calls": calls,
                "slowest_ms": ms(slowest),
                "values": values,
                "ops": diff(&counts.snapshot(), before),
            })
        ));
    }

    /// A cold start: open the table, optionally warm it during "init", then the first get.
    async fn first(entered_us: u64) {
        let spawned_us: u64 = var(SPAWNED).parse().unwrap();
        let warm = var(PARAM) == "warm";
        let t = Instant::now();
        let table = open().await;
        let open_ms = ms(t.elapsed());
        let cache = Cache::builder()
            .namespace(NAMESPACE)
            .build(table.clone())
            .unwrap();
        let mut warm_ms = 0.0;
        if warm {
            let t = Instant::now();
            table.warm().await.unwrap();
            warm_ms = ms(t.elapsed());
        }
        let t = Instant::now();
        let v = cache.get::<ByteBuf>(HOT_KEY).await.unwrap();
        let first_ms = ms(t.elapsed());
        let hit_done_us = now_us();
        assert!(v.is_some(), "the first get is a hit");
        let t = Instant::now();
        cache.get::<ByteBuf>(HOT_KEY).await.unwrap().unwrap();
        let second_ms = ms(t.elapsed());
        say(&format!(
            "result {}",
            json!({
                "exec_ms": entered_us.saturating_sub(spawned_us) as f64 / 1e3,
                "open_ms": open_ms,
                "warm_ms": warm_ms,
                "first_ms": first_ms,
                "second_ms": second_ms,
                "start_to_hit_ms": (hit_done_us - spawned_us) as f64 / 1e3,
            })
        ));
    }
}

// ----- the origin -------------------------------------------------------------------------------

/// A local origin: `/items.json` (20,065 bytes of JSON, as in `benches/http.rs`) and
/// `/flight/...` (a small JSON document after 100 ms, fresh for 10 minutes). Counts requests
/// by path.
#[derive(Clone)]
struct Origin {
    base: String,
    counts: Arc<Mutex<HashMap<String, usize>>>,
}

impl Origin {
    async fn start() -> Origin {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let items: Vec<String> = (0..326)
            .map(|i| {
                format!(
                    r#"{{"id":{i},"name":"item {i:04}","price":{}.25,"tags":["x","y"]}}"#,
                    i * 3
                )
            })
            .collect();
        let items = Arc::new(format!("[{}]", items.join(",")));
        let counts = Arc::new(Mutex::new(HashMap::new()));
        let origin = Origin {
            base,
            counts: counts.clone(),
        };
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let (items, counts) = (items.clone(), counts.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&buf);
                    let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
                    *counts.lock().unwrap().entry(path.clone()).or_insert(0) += 1;
                    let (extra, body) = if path.starts_with("/flight/") {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        (
                            "cache-control: max-age=600\r\n",
                            format!(r#"{{"path":"{path}","served_at_us":{}}}"#, now_us()),
                        )
                    } else {
                        ("", items.to_string())
                    };
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n{extra}content-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = socket.write_all(head.as_bytes()).await;
                    let _ = socket.write_all(body.as_bytes()).await;
                });
            }
        });
        origin
    }

    fn count(&self, path: &str) -> usize {
        self.counts.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

// ----- 1. the in-process tier against a bare moka get --------------------------------------------

/// A small struct of about 1 KB.
#[derive(Serialize, Deserialize, Clone, PartialEq, Debug)]
struct Profile {
    id: u64,
    name: String,
    email: String,
    roles: Vec<String>,
    bio: String,
    active: bool,
    score: f64,
}

fn profile() -> Profile {
    Profile {
        id: 421_337,
        name: "Ada Lovelace".into(),
        email: "ada.lovelace@example.com".into(),
        roles: vec!["admin".into(), "editor".into(), "viewer".into()],
        bio: (0..900).map(|_| fastrand::alphanumeric()).collect(),
        active: true,
        score: 98.25,
    }
}

/// CPU nanoseconds per evaluation of `$body` (which may `.await`), over about 0.15 s of CPU:
/// the kernel accounts a running thread's CPU time at scheduler ticks, so short loops would
/// read as zero.
macro_rules! per_op {
    ($body:expr) => {{
        let t = Instant::now();
        for _ in 0..1_000 {
            std::hint::black_box($body);
        }
        let estimate = t.elapsed().as_nanos() as f64 / 1_000.0;
        let n = ((0.15e9 / estimate.max(1.0)) as u64).clamp(1_000, 50_000_000);
        let c = thread_cpu_ns();
        for _ in 0..n {
            std::hint::black_box($body);
        }
        (thread_cpu_ns() - c) as f64 / n as f64
    }};
}

/// moka configured as the tier configures it: a weigher and one time-to-live, over slots of
/// MessagePack and a logical expiry.
type Slot = Arc<(Arc<Vec<u8>>, Option<i64>)>;

/// What one tier hit of `value` costs against moka, and the parts a tier hit is made of.
async fn tier_vs_moka<V>(what: &str, value: V, table: &Table, rows: &mut Vec<String>)
where
    V: Serialize + DeserializeOwned + Clone + PartialEq + std::fmt::Debug + Send + Sync + 'static,
{
    let cache = Cache::builder()
        .namespace("tier")
        .in_process(InProcessTier::new(64 << 20).l1_ttl(Duration::from_secs(60)))
        .build(table.clone())
        .unwrap();
    let key = "profile:421337";
    cache.set(key, &value).await.unwrap();
    assert_eq!(cache.get::<V>(key).await.unwrap().as_ref(), Some(&value));
    assert_eq!(cache.in_process_usage().unwrap().entries, 1);
    let before = table.consumed_capacity().read_units;

    let owned: moka::sync::Cache<String, V> = moka::sync::Cache::new(10_000);
    owned.insert(key.to_owned(), value.clone());
    let shared: moka::sync::Cache<String, Arc<V>> = moka::sync::Cache::new(10_000);
    shared.insert(key.to_owned(), Arc::new(value.clone()));
    let configured: moka::sync::Cache<String, Slot> = moka::sync::Cache::builder()
        .max_capacity(64 << 20)
        .weigher(|_: &String, _: &Slot| 1_088)
        .time_to_live(Duration::from_secs(60))
        .build();
    let msgpack = rmp_serde::to_vec_named(&value).unwrap();
    configured.insert(key.to_owned(), Arc::new((Arc::new(msgpack.clone()), None)));

    // For a profiler (`perf record`): only tier hits of the values named, for 5 s each.
    if let Ok(which) = std::env::var("DYNACACHE_FLEET_PROFILE_TIER") {
        if !what.contains(which.as_str()) {
            return;
        }
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            for _ in 0..1_000 {
                std::hint::black_box(cache.get::<V>(key).await.unwrap().unwrap());
            }
        }
        return;
    }
    let names = [
        "tier",
        "tier_shared",
        "moka_owned",
        "moka_arc",
        "moka_configured",
        "decode",
        "key",
        "clock",
        "metric",
    ];
    let mut samples: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for round in 0..5 {
        for i in 0..names.len() {
            // A different order each round, so no variant always runs first.
            let name = names[(i + round) % names.len()];
            let ns = match name {
                "tier" => per_op!(cache.get::<V>(key).await.unwrap().unwrap()),
                "tier_shared" => per_op!(cache.get_shared::<V>(key).await.unwrap().unwrap()),
                "moka_owned" => per_op!(owned.get(key).unwrap()),
                "moka_arc" => per_op!(shared.get(key).unwrap()),
                "moka_configured" => per_op!(configured.get(key).unwrap().0.clone()),
                "decode" => per_op!(rmp_serde::from_slice::<V>(&msgpack).unwrap()),
                "key" => per_op!(format!("{NAMESPACE}:{}", std::hint::black_box(key))),
                "clock" => per_op!(SystemTime::now()),
                "metric" => per_op!({
                    metrics::counter!("dynacache_hits_total", "cache" => "kv", "tier" => "memory")
                        .increment(1)
                }),
                _ => unreachable!(),
            };
            samples.entry(name).or_default().push(ns);
        }
    }
    assert_eq!(
        table.consumed_capacity().read_units,
        before,
        "every get was a tier hit"
    );
    let m: BTreeMap<&str, f64> = samples.into_iter().map(|(k, v)| (k, median(v))).collect();
    let size = msgpack.len();
    rows.push(format!(
        "| {what} | {size} B | {:.0} | {:.0} | {:.0} | {:.0} | {:.1}x | {:.1}x | {:.1}x | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |",
        m["tier"],
        m["tier_shared"],
        m["moka_owned"],
        m["moka_arc"],
        m["tier"] / m["moka_owned"],
        m["tier"] / m["moka_arc"],
        m["tier_shared"] / m["moka_arc"],
        m["moka_configured"],
        m["decode"],
        m["key"],
        m["clock"],
        m["metric"],
    ));
}

fn tier_section() -> Vec<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let table = Table::builder().name("bench_tier").open().await.unwrap();
        let mut rows = Vec::new();
        tier_vs_moka("`Vec<u8>`", random_bytes(1024), &table, &mut rows).await;
        tier_vs_moka(
            "`serde_bytes::ByteBuf`",
            ByteBuf::from(random_bytes(1024)),
            &table,
            &mut rows,
        )
        .await;
        tier_vs_moka("struct (7 fields)", profile(), &table, &mut rows).await;
        for r in &rows {
            eprintln!("{r}");
        }
        rows
    })
}

// ----- 2. a hot key read by 16 processes ----------------------------------------------------------

/// An engine the fleet shares: its name in the tables, the endpoint other processes reach it
/// at, and the table.
struct Target<'a> {
    engine: &'a str,
    endpoint: &'a str,
    table: &'a Table,
}

impl Target<'_> {
    fn child(&self, role: &str, param: &str) -> Child {
        Child::start(role, self.endpoint, self.table.name(), param)
    }
}

async fn hot_key(t: &Target<'_>, l1_ms: u64, seconds: u64, rows: &mut Vec<String>) {
    const PROCESSES: usize = 16;
    let engine = t.engine;
    let mut children: Vec<Child> = (0..PROCESSES)
        .map(|_| t.child("hot", &l1_ms.to_string()))
        .collect();
    for c in &mut children {
        assert_eq!(c.said(120).await, "ready");
    }
    let start = now_us() + 300_000;
    for c in &mut children {
        c.send(&format!("go {start} {}", seconds * 1000));
    }
    let mut results = Vec::new();
    for c in &mut children {
        results.push(c.result("result", seconds + 120).await);
    }
    for c in children {
        c.finish();
    }
    let sum = |k: &str| results.iter().map(|r| r[k].as_f64().unwrap()).sum::<f64>();
    let secs = results
        .iter()
        .map(|r| r["seconds"].as_f64().unwrap())
        .fold(0.0, f64::max);
    let (gets, reads, units) = (sum("gets"), sum("get_items"), sum("read_units"));
    // Errors a get returned as throttled, or that the metrics counted (whichever saw more).
    let throttled: f64 = results
        .iter()
        .map(|r| {
            r["throttled"]
                .as_f64()
                .unwrap()
                .max(r["throttled_metric"].as_f64().unwrap())
        })
        .sum();
    let (tier, bound) = if l1_ms == 0 {
        ("none".to_owned(), "-".to_owned())
    } else {
        (
            format!("l1_ttl {l1_ms} ms"),
            format!("{:.0}", PROCESSES as f64 * 1000.0 / l1_ms as f64),
        )
    };
    let row = format!(
        "| {engine} | {tier} | {PROCESSES} | {secs:.1} | {:.0} | {reads:.0} | {:.1} | {bound} | {:.1} | {:.0} | {:.0} |",
        gets / secs,
        reads / secs,
        units / secs,
        throttled,
        sum("errors"),
    );
    eprintln!("{row}");
    rows.push(row);
}

// ----- 3. concurrent misses across 4 processes ----------------------------------------------------

#[derive(Clone, Copy, PartialEq)]
enum Flight {
    Kv,
    Http,
}

async fn misses(
    t: &Target<'_>,
    origin: &Origin,
    kind: Flight,
    fleet: bool,
    rounds: usize,
    rows: &mut Vec<String>,
) {
    const PROCESSES: usize = 4;
    let engine = t.engine;
    let role = match kind {
        Flight::Kv => "flight_kv",
        Flight::Http => "flight_http",
    };
    let param = if fleet { "fleet" } else { "local" };
    let mut children: Vec<Child> = (0..PROCESSES).map(|_| t.child(role, param)).collect();
    for c in &mut children {
        assert_eq!(c.said(120).await, "ready");
    }
    let run = fastrand::u32(..);
    let (mut per_round, mut slowest, mut agreed) = (Vec::new(), Vec::new(), 0);
    let mut ops: BTreeMap<String, u64> = BTreeMap::new();
    for round in 0..rounds {
        let (what, path) = match kind {
            Flight::Kv => (format!("k{run:x}-{param}-{round}"), String::new()),
            Flight::Http => {
                let path = format!("/flight/{run:x}-{param}-{round}");
                (format!("{}{path}", origin.base), path)
            }
        };
        let start = now_us() + 100_000;
        for c in &mut children {
            c.send(&format!("go {start} {what}"));
        }
        let (mut calls, mut slow, mut values) = (0, 0.0f64, Vec::new());
        for c in &mut children {
            let r = c.result("done", 120).await;
            calls += r["calls"].as_u64().unwrap() as usize;
            slow = slow.max(r["slowest_ms"].as_f64().unwrap());
            for v in r["values"].as_array().unwrap() {
                values.push(v.as_str().unwrap().to_owned());
            }
            for (op, n) in r["ops"].as_object().unwrap() {
                *ops.entry(op.clone()).or_default() += n.as_u64().unwrap();
            }
        }
        if kind == Flight::Http {
            calls = origin.count(&path);
        }
        values.sort();
        values.dedup();
        agreed += usize::from(values.len() == 1);
        per_round.push(calls);
        slowest.push(slow);
    }
    for c in children {
        c.finish();
    }
    let total: usize = per_round.iter().sum();
    let (min, max) = (
        *per_round.iter().min().unwrap(),
        *per_round.iter().max().unwrap(),
    );
    let ops: Vec<String> = ops
        .iter()
        .map(|(op, n)| format!("{op} {:.1}", *n as f64 / rounds as f64))
        .collect();
    let row = format!(
        "| {engine} | {} | {} | {rounds} | {:.2} | {min}–{max} | {agreed}/{rounds} | {:.0} | {} |",
        match kind {
            Flight::Kv => "key/value `get_or_insert_with`",
            Flight::Http => "HTTP `CachedClient` GET",
        },
        if fleet { "on" } else { "off" },
        total as f64 / rounds as f64,
        median(slowest),
        ops.join(", "),
    );
    eprintln!("{row}");
    rows.push(row);
}

// ----- 4. the first hit of a fresh process --------------------------------------------------------

async fn first_hit(t: &Target<'_>, rows: &mut Vec<String>) {
    let (engine, runs) = (t.engine, 10);
    let mut results: BTreeMap<bool, Vec<Value>> = BTreeMap::new();
    for i in 0..2 * runs {
        // Alternate, so both see the same machine load.
        let warm = i % 2 == 1;
        let mut child = t.child("first", if warm { "warm" } else { "cold" });
        let r = child.result("result", 120).await;
        child.finish();
        results.entry(warm).or_default().push(r);
    }
    for (warm, results) in results {
        let med = |k: &str| median(results.iter().map(|r| r[k].as_f64().unwrap()).collect());
        let row = format!(
            "| {engine} | {} | {:.1} | {:.2} | {} | {:.2} | {:.2} | {:.1} |",
            if warm { "yes" } else { "no" },
            med("exec_ms"),
            med("open_ms"),
            if warm {
                format!("{:.2}", med("warm_ms"))
            } else {
                "-".into()
            },
            med("first_ms"),
            med("second_ms"),
            med("start_to_hit_ms"),
        );
        eprintln!("{row}");
        rows.push(row);
    }
}

// ----- 5. HTTP hits per second per core -----------------------------------------------------------

async fn http_hits(engine: &str, table: &Table, origin: &Origin, rows: &mut Vec<String>) {
    let url = format!("{}/items.json", origin.base);
    for tier in [false, true] {
        let mut builder =
            HttpCache::builder().namespace(if tier { "hits_tier" } else { "hits_plain" });
        if tier {
            builder =
                builder.in_process(InProcessTier::new(64 << 20).l1_ttl(Duration::from_secs(60)));
        }
        let client = CachedClient::new(
            reqwest::Client::new(),
            builder.build(table.clone()).unwrap(),
        );
        let first = client.get(&url).send().await.unwrap();
        assert!(!first.from_cache());
        let size = first.bytes().await.unwrap().len();
        let hit = || async {
            let res = client.get(&url).send().await.unwrap();
            assert!(res.from_cache());
            res.bytes().await.unwrap().len()
        };
        for _ in 0..200 {
            hit().await;
        }
        let mut latencies = Vec::new();
        for _ in 0..2000 {
            let t = Instant::now();
            assert_eq!(hit().await, size);
            latencies.push(t.elapsed());
        }
        let latency = median(latencies);
        // About 1 s of hits, so the 10 ms CPU ticks are 1% of it.
        let n = ((1.0 / latency.as_secs_f64()) as u32).max(2000);
        let reads = table.consumed_capacity().read_units;
        let c = cpu_time();
        for _ in 0..n {
            hit().await;
        }
        let cpu = (cpu_time() - c) / n;
        let reads_per_hit = (table.consumed_capacity().read_units - reads) / n as f64;
        let row = format!(
            "| {engine} | {} | {size} B JSON | {:.1} | {:.1} | {:.0} | {reads_per_hit:.2} |",
            if tier {
                "in-process, l1_ttl 60 s"
            } else {
                "none"
            },
            latency.as_secs_f64() * 1e6,
            cpu.as_secs_f64() * 1e6,
            1.0 / cpu.as_secs_f64(),
        );
        eprintln!("{row}");
        rows.push(row);
    }
}

// ----- the run -----------------------------------------------------------------------------------

#[derive(Default)]
struct Rows {
    hot: Vec<String>,
    misses: Vec<String>,
    first: Vec<String>,
    http: Vec<String>,
}

async fn engine_runs(
    engine: &str,
    table: Table,
    endpoint: &str,
    origin: &Origin,
    want: &dyn Fn(&str) -> bool,
    rows: &mut Rows,
) {
    let seconds = env_u64("DYNACACHE_FLEET_SECONDS", 30);
    let rounds = env_u64("DYNACACHE_FLEET_ROUNDS", 20) as usize;
    // The hot key, and the key of the first-hit runs: 1 KB.
    Cache::builder()
        .namespace(NAMESPACE)
        .build(table.clone())
        .unwrap()
        .set(HOT_KEY, &ByteBuf::from(random_bytes(1024)))
        .await
        .unwrap();
    let t = Target {
        engine,
        endpoint,
        table: &table,
    };
    if want("hot") {
        for l1_ms in [1000, 250] {
            hot_key(&t, l1_ms, seconds, &mut rows.hot).await;
        }
        hot_key(&t, 0, seconds.min(10), &mut rows.hot).await;
    }
    if want("flight") {
        for kind in [Flight::Kv, Flight::Http] {
            for fleet in [true, false] {
                misses(&t, origin, kind, fleet, rounds, &mut rows.misses).await;
            }
        }
    }
    if want("first") {
        first_hit(&t, &mut rows.first).await;
    }
    if want("http") {
        http_hits(engine, &table, origin, &mut rows.http).await;
    }
}

fn print(header: &str, rows: &[String]) {
    if rows.is_empty() {
        return;
    }
    println!();
    println!("{header}");
    let columns = header.matches('|').count() - 1;
    println!("|{}", "---|".repeat(columns));
    for r in rows {
        println!("{r}");
    }
}

fn main() {
    if let Ok(role) = std::env::var(ROLE) {
        child::main(&role);
        return;
    }
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let only = std::env::var("DYNACACHE_FLEET_ONLY").unwrap_or_default();
    let want = |what: &str| only.is_empty() || only.split(',').any(|w| w.trim() == what);
    let tier_rows = if want("tier") {
        tier_section()
    } else {
        Vec::new()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let rows = rt.block_on(async {
        let origin = Origin::start().await;
        let mut rows = Rows::default();
        let embedded = Table::builder().name("bench_fleet").open().await.unwrap();
        let endpoint = embedded.local_endpoint().unwrap().to_owned();
        engine_runs("embedded", embedded, &endpoint, &origin, &want, &mut rows).await;
        if let Ok(url) = std::env::var("DYNACACHE_TEST_DYNAMODB_LOCAL") {
            let local = Table::builder()
                .name(format!("bench_fleet_{:x}", fastrand::u32(..)))
                .endpoint_url(&url)
                .open()
                .await
                .unwrap();
            engine_runs("DynamoDB Local", local, &url, &origin, &want, &mut rows).await;
        }
        rows
    });
    print(
        "| value | MessagePack | `get` tier hit ns | `get_shared` tier hit ns | moka get (owned clone) ns | moka get (Arc) ns | `get` / moka owned | `get` / moka Arc | `get_shared` / moka Arc | parts: moka as the tier configures it ns | MessagePack decode ns | key building ns | clock ns | hit metric ns |",
        &tier_rows,
    );
    print(
        "| engine | tier | processes | seconds | gets/s served | GetItem calls | GetItem/s | bound 16/t per s | read units/s | throttling errors | errors |",
        &rows.hot,
    );
    print(
        "| engine | what | fleet single flight | rounds | origin calls per round | min–max | rounds where all 64 got one value | median ms until all 64 served | DynamoDB calls per round (all 4 processes) |",
        &rows.misses,
    );
    print(
        "| engine | `warm()` in init | exec to `main` ms | open ms | warm ms | first get ms | second get ms | spawn to first hit done ms |",
        &rows.first,
    );
    print(
        "| engine | in-process tier | response | hit median µs | CPU per hit µs | hits/s per core | read units per hit |",
        &rows.http,
    );
}
