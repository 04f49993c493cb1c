//! The `dynacache` binary, run as a user runs it, on the embedded engine and on DynamoDB Local
//! (when `DYNACACHE_TEST_DYNAMODB_LOCAL` names it; `scripts/test` does).

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicU32, Ordering};

use assert_cmd::Command;
use serde_json::Value;

/// Where a test's table lives.
enum Engine {
    Embedded(tempfile::TempDir),
    Local(String),
}

static TABLES: AtomicU32 = AtomicU32::new(0);

/// A table of a test's own, on one engine.
struct Place {
    engine: Engine,
    table: String,
}

impl Place {
    fn embedded() -> Place {
        Place {
            engine: Engine::Embedded(tempfile::tempdir().expect("temp dir")),
            table: "dynacache".into(),
        }
    }

    /// `None` when DynamoDB Local is not configured (outside `scripts/test`).
    fn dynamodb_local() -> Option<Place> {
        let url = std::env::var("DYNACACHE_TEST_DYNAMODB_LOCAL").ok()?;
        let n = TABLES.fetch_add(1, Ordering::Relaxed);
        Some(Place {
            engine: Engine::Local(url),
            table: format!(
                "cli_{}_{}_{n}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos()
                    % 1_000_000_000
            ),
        })
    }

    fn connection_args(&self) -> Vec<String> {
        let mut args = match &self.engine {
            Engine::Embedded(dir) => vec![
                "--embedded-file".to_owned(),
                dir.path().join("cache.db").display().to_string(),
            ],
            Engine::Local(url) => vec!["--endpoint-url".to_owned(), url.clone()],
        };
        args.extend(["--table".to_owned(), self.table.clone()]);
        args
    }

    /// The binary with this place's connection options, isolated from the caller's AWS settings.
    fn cmd(&self) -> Command {
        let mut cmd = bare_cmd();
        cmd.args(self.connection_args());
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("run dynacache")
    }

    /// Runs and expects success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "dynacache {args:?} failed ({:?}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 stdout")
    }

    /// Runs and expects this exit code; returns stderr.
    fn fails(&self, args: &[&str], code: i32) -> String {
        let out = self.run(args);
        assert_eq!(
            out.status.code(),
            Some(code),
            "dynacache {args:?}: stdout {}\nstderr {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stderr).expect("utf-8 stderr")
    }

    fn json_lines(&self, args: &[&str]) -> Vec<Value> {
        let mut all = args.to_vec();
        all.push("--json");
        json_lines(&self.ok(&all))
    }
}

fn bare_cmd() -> Command {
    let mut cmd = Command::cargo_bin("dynacache").expect("the dynacache binary");
    for var in [
        "DYNACACHE_TABLE",
        "DYNACACHE_NAMESPACE",
        "DYNACACHE_KV_NAMESPACE",
        "DYNACACHE_EMBEDDED_FILE",
        "DYNACACHE_AWS",
        "AWS_ENDPOINT_URL_DYNAMODB",
        "AWS_PROFILE",
        "AWS_REGION",
        "RUST_LOG",
    ] {
        cmd.env_remove(var);
    }
    cmd.timeout(std::time::Duration::from_secs(240));
    cmd
}

fn json_lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// Runs a test body on the embedded engine and, when configured, on DynamoDB Local.
macro_rules! on_both_engines {
    ($($name:ident => $body:ident;)*) => {
        mod embedded {
            use super::Place;
            $(#[test] fn $name() { super::$body(&Place::embedded()); })*
        }
        mod dynamodb_local {
            use super::Place;
            $(#[test] fn $name() {
                let Some(place) = Place::dynamodb_local() else {
                    eprintln!("DYNACACHE_TEST_DYNAMODB_LOCAL is not set: skipped (scripts/test sets it)");
                    return;
                };
                super::$body(&place);
            })*
        }
    };
}

on_both_engines! {
    demo_second_pass_is_served_from_the_cache => demo_second_pass;
    inspection_and_maintenance_after_the_demo => inspect_after_demo;
    get_fetches_through_the_cache => get_through_cache;
    kv_commands => kv_commands;
    table_lifecycle => table_lifecycle;
    missing_table_is_explained => missing_table;
    wrong_schema_is_explained => wrong_schema;
    templates_match_the_table_the_code_creates => templates_match_created_table;
    iam_policy_covers_every_key_a_namespace_writes => iam_keys_match_the_policy;
    iam_policy_lets_a_namespace_workload_through_and_nothing_else => iam_enforced_workload;
    copy_moves_a_cache_to_another_engine_and_namespace => copy_between_places;
}

fn demo_second_pass(place: &Place) {
    let lines = place.json_lines(&["demo"]);
    assert_eq!(lines.len(), 12, "two passes of six requests: {lines:?}");
    let outcome = |pass: u64, request: &str| -> String {
        lines
            .iter()
            .find(|l| l["pass"] == pass && l["request"].as_str().unwrap().starts_with(request))
            .unwrap_or_else(|| panic!("no line for pass {pass} {request}"))["outcome"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    for l in lines.iter().filter(|l| l["pass"] == 1) {
        assert_eq!(l["outcome"], "miss", "first pass: {l}");
        assert_eq!(l["status"], 200, "{l}");
    }
    assert_eq!(outcome(2, "JSON"), "hit");
    assert_eq!(outcome(2, "2 MiB binary"), "hit");
    assert_eq!(outcome(2, "ETag"), "revalidated");
    assert_eq!(outcome(2, "301 redirect"), "hit");
    assert_eq!(outcome(2, "Vary: Accept-Language (en)"), "hit");
    assert_eq!(outcome(2, "Vary: Accept-Language (fr)"), "hit");
    let size = |pass: u64, request: &str| {
        lines
            .iter()
            .find(|l| l["pass"] == pass && l["request"].as_str().unwrap().starts_with(request))
            .unwrap()["size"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(size(2, "2 MiB binary"), 2 * 1024 * 1024);
    assert_eq!(size(1, "JSON"), size(2, "JSON"));
    // The variants are stored side by side: each answer is its own language.
    assert_ne!(
        lines
            .iter()
            .find(|l| l["pass"] == 2 && l["request"].as_str().unwrap().ends_with("(fr)"))
            .unwrap()["size"],
        lines
            .iter()
            .find(|l| l["pass"] == 2 && l["request"].as_str().unwrap().ends_with("(en)"))
            .unwrap()["size"],
    );

    // The human output says the same, and tells where the data lives.
    let text = place.ok(&["demo"]);
    assert!(
        text.contains("pass 1: 0 of 6 responses from the cache"),
        "{text}"
    );
    assert!(
        text.contains("pass 2: 6 of 6 responses from the cache, 1 requests reached the origin"),
        "{text}"
    );
    assert!(text.contains("Where the data lives"), "{text}");
    assert!(text.contains(&place.table), "{text}");
    assert!(
        !text.contains('\x1b'),
        "no colours when stdout is not a terminal: {text}"
    );
}

fn inspect_after_demo(place: &Place) {
    let demo = place.json_lines(&["demo"]);
    let url_of = |request: &str| {
        demo.iter()
            .find(|l| l["request"].as_str().unwrap().starts_with(request))
            .unwrap()["url"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let catalog = url_of("JSON");
    let archive = url_of("2 MiB binary");
    let ns = ["--namespace", "demo"];
    let with_ns =
        |args: &[&str]| -> Vec<String> { ns.iter().chain(args).map(|s| s.to_string()).collect() };
    let ok = |args: &[&str]| {
        let a = with_ns(args);
        place.ok(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let fails = |args: &[&str], code| {
        let a = with_ns(args);
        place.fails(&a.iter().map(String::as_str).collect::<Vec<_>>(), code)
    };
    let ls = |args: &[&str]| {
        let mut a = args.to_vec();
        a.insert(0, "ls");
        a.push("--json");
        json_lines(&ok(&a))
    };

    // ls: six responses (the redirect is stored under its final URL), filters, sorting.
    let all = ls(&[]);
    assert_eq!(all.len(), 6, "{all:?}");
    assert!(
        all.iter()
            .all(|e| e["method"] == "GET" && e["status"] == 200)
    );
    assert_eq!(ls(&["--url", "*greeting*"]).len(), 2);
    assert_eq!(ls(&["--status", "404"]).len(), 0);
    assert_eq!(ls(&["--status", "200"]).len(), 6);
    let by_expiry = ls(&["--sort", "expires"]);
    assert!(
        by_expiry[0]["url"]
            .as_str()
            .unwrap()
            .ends_with("/api/profile"),
        "the response that expired at once comes first: {by_expiry:?}"
    );
    let expiries: Vec<u64> = by_expiry
        .iter()
        .map(|e| e["expires"].as_u64().unwrap())
        .collect();
    assert!(expiries.windows(2).all(|w| w[0] <= w[1]), "{expiries:?}");
    let by_created = ls(&["--sort", "created"]);
    let created: Vec<u64> = by_created
        .iter()
        .map(|e| e["created"].as_u64().unwrap())
        .collect();
    assert!(created.windows(2).all(|w| w[0] <= w[1]), "{created:?}");
    let expired = ls(&["--expired"]);
    assert_eq!(
        expired.len(),
        1,
        "the no-cache response is stale at once: {expired:?}"
    );
    assert!(
        expired[0]["url"]
            .as_str()
            .unwrap()
            .ends_with("/api/profile")
    );
    assert_eq!(ls(&["--fresh"]).len(), 5);
    let by_size = ls(&["--sort", "size"]);
    assert_eq!(by_size[0]["url"], archive.as_str());
    assert_eq!(by_size[0]["size"], 2 * 1024 * 1024);
    let by_url = ls(&["--sort", "url"]);
    let urls: Vec<&str> = by_url.iter().map(|e| e["url"].as_str().unwrap()).collect();
    let mut sorted = urls.clone();
    sorted.sort();
    assert_eq!(urls, sorted);
    let table = ok(&["ls"]);
    assert!(table.starts_with("METHOD"), "{table}");
    assert!(table.contains(&catalog), "{table}");

    // show: by URL and by key; text shown, binary summarised; a miss is exit code 3.
    let shown = ok(&["show", &catalog]);
    assert!(shown.contains("status:   200"), "{shown}");
    assert!(shown.contains("cache-control: max-age=300"), "{shown}");
    assert!(shown.contains("Item number 0"), "{shown}");
    let archive_key = all.iter().find(|e| e["url"] == archive.as_str()).unwrap()["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let shown = ok(&["show", &archive_key]);
    assert!(shown.contains("(binary, 2.0 MiB; first bytes:"), "{shown}");
    let whole = place.run(&["--namespace", "demo", "show", &archive_key, "--body"]);
    assert!(whole.status.success());
    assert!(
        whole.stdout.len() > 2 * 1024 * 1024,
        "--body prints the binary body whole ({} bytes)",
        whole.stdout.len()
    );
    let shown = ok(&["show", &catalog]);
    assert!(
        shown.contains("--body prints it whole"),
        "a 25 KiB text body is cut: {shown}"
    );
    let shown_whole = ok(&["show", &catalog, "--body"]);
    assert!(
        shown_whole.trim_end().ends_with("]}"),
        "the whole JSON body"
    );
    let shown_json = json_lines(&ok(&["show", &catalog, "--json"]));
    assert!(
        shown_json[0]["body"]
            .as_str()
            .unwrap()
            .starts_with("{\"items\"")
    );
    assert_eq!(
        shown_json[0]["headers"]["content-type"][0],
        "application/json"
    );
    let err = fails(&["show", "http://127.0.0.1:9/not-cached"], 3);
    assert!(err.contains("nothing cached"), "{err}");

    // stats: counts, chunking, expired-not-swept, largest, cost.
    let stats = json_lines(&ok(&["stats", "--json"]));
    let s = &stats[0];
    assert_eq!(s["responses"], 6, "{s}");
    assert_eq!(s["chunked_responses"], 1, "{s}");
    assert!(
        s["chunk_items"].as_u64().unwrap() >= 6,
        "2 MiB in chunks of at most 350 KiB: {s}"
    );
    assert_eq!(s["expired_not_swept"], 1, "{s}");
    assert!(
        s["stored_bytes"].as_u64().unwrap() >= 2 * 1024 * 1024,
        "{s}"
    );
    assert_eq!(s["largest"][0]["url"], archive.as_str(), "{s}");
    assert!(s["monthly_storage_cost_usd"].as_f64().unwrap() > 0.0);
    let text = ok(&["stats"]);
    assert!(text.contains("chunked responses:    1"), "{text}");

    // rm: by URL and by key; nothing left to remove is exit code 3.
    let out = ok(&["rm", &catalog, &archive_key]);
    assert!(out.contains("deleted 2 of 2"), "{out}");
    fails(&["rm", &catalog], 3);
    assert_eq!(ls(&[]).len(), 4);
    // The chunks went with the large response.
    let stats = json_lines(&ok(&["stats", "--json"]));
    assert_eq!(stats[0]["chunk_items"], 0, "{}", stats[0]);

    // purge: a dry run deletes nothing; then it does; it needs a criterion.
    let dry = ok(&["purge", "--url", "*greeting*", "--dry-run"]);
    assert_eq!(
        dry.lines()
            .filter(|l| l.starts_with("would delete"))
            .count(),
        2,
        "{dry}"
    );
    assert_eq!(ls(&[]).len(), 4);
    let out = ok(&["purge", "--url", "*greeting*"]);
    assert!(out.contains("deleted 2 responses"), "{out}");
    let out = ok(&["purge", "--expired"]);
    assert!(out.contains("deleted 1 responses"), "{out}");
    let out = ok(&["purge", "--older-than", "1h"]);
    assert!(
        out.contains("deleted 0 responses"),
        "nothing is an hour old: {out}"
    );
    let out = ok(&["purge", "--url", "*/home", "--expired"]);
    assert!(
        out.contains("deleted 0 responses"),
        "every criterion given must match (home is fresh): {out}"
    );
    let dry = ok(&["purge", "--older-than", "0s", "--dry-run"]);
    assert_eq!(
        dry.lines()
            .filter(|l| l.starts_with("would delete"))
            .count(),
        1,
        "{dry}"
    );
    let err = fails(&["purge"], 2);
    assert!(err.contains("--expired"), "{err}");
    assert_eq!(ls(&[]).len(), 1);

    // clear: refuses without --yes when it cannot ask; confined to its namespace.
    place.ok(&["kv", "set", "survivor", "1"]);
    let err = fails(&["clear"], 2);
    assert!(err.contains("--yes"), "{err}");
    assert_eq!(ls(&[]).len(), 1);
    ok(&["clear", "--yes"]);
    assert_eq!(ls(&[]).len(), 0);
    assert_eq!(place.ok(&["kv", "get", "survivor"]).trim(), "1");
}

/// A tiny origin for `get`: `/fresh` (max-age), `/etag` (revalidation), `/vary` (a `Vary`
/// response), `/large` (1 MiB that does not compress: stored as chunks), `/moved` (a permanent
/// redirect to `/fresh`), `/boom` (500).
fn start_origin() -> (String, std::sync::Arc<AtomicU32>) {
    use axum::routing::get;
    let hits = std::sync::Arc::new(AtomicU32::new(0));
    let counter = hits.clone();
    let app = axum::Router::new()
        .route(
            "/fresh",
            get(move || {
                counter.fetch_add(1, Ordering::SeqCst);
                async { ([("cache-control", "max-age=600")], "fresh body\n") }
            }),
        )
        .route(
            "/etag",
            get(|headers: axum::http::HeaderMap| async move {
                let etag = "\"e1\"";
                if headers
                    .get("if-none-match")
                    .is_some_and(|v| v.as_bytes() == etag.as_bytes())
                {
                    return (
                        axum::http::StatusCode::NOT_MODIFIED,
                        [("etag", etag), ("cache-control", "max-age=600")],
                        "",
                    );
                }
                (
                    axum::http::StatusCode::OK,
                    [("etag", etag), ("cache-control", "max-age=600")],
                    "tagged",
                )
            }),
        )
        .route(
            "/vary",
            get(|| async {
                (
                    [
                        ("cache-control", "max-age=600"),
                        ("vary", "Accept-Language"),
                    ],
                    "varies\n",
                )
            }),
        )
        .route(
            "/large",
            get(|| async { ([("cache-control", "max-age=600")], noise(1 << 20, 7)) }),
        )
        .route(
            "/moved",
            get(|| async {
                (
                    axum::http::StatusCode::MOVED_PERMANENTLY,
                    [("location", "/fresh"), ("cache-control", "max-age=600")],
                    "",
                )
            }),
        )
        .route(
            "/boom",
            get(|| async { (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "boom") }),
        );
    (format!("http://{}", serve(app)), hits)
}

/// Serves `app` on 127.0.0.1 from a thread of its own, for as long as the test runs.
fn serve(app: axum::Router) -> std::net::SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    rx.recv().unwrap()
}

fn get_through_cache(place: &Place) {
    let (origin, hits) = start_origin();
    let url = format!("{origin}/fresh");
    let first = place.json_lines(&["get", &url]);
    assert_eq!(first[0]["outcome"], "miss");
    assert_eq!(first[0]["status"], 200);
    let key = first[0]["cache_key"].as_str().unwrap().to_owned();
    let second = place.json_lines(&["get", &url]);
    assert_eq!(second[0]["outcome"], "hit", "{second:?}");
    assert_eq!(second[0]["cache_key"], key.as_str());
    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "the second get came from the cache"
    );

    // The body goes to stdout, or to a file.
    assert_eq!(place.ok(&["get", &url]), "fresh body\n");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("body.txt");
    place.ok(&["get", &url, "--output", file.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "fresh body\n");
    assert_eq!(hits.load(Ordering::SeqCst), 1);

    // --force-refresh goes to the origin; --only-if-cached never does.
    let forced = place.json_lines(&["get", &url, "--force-refresh"]);
    assert_eq!(forced[0]["outcome"], "miss");
    assert_eq!(hits.load(Ordering::SeqCst), 2);
    // --refresh revalidates a fresh response.
    let tagged = format!("{origin}/etag");
    assert_eq!(place.json_lines(&["get", &tagged])[0]["outcome"], "miss");
    assert_eq!(place.json_lines(&["get", &tagged])[0]["outcome"], "hit");
    let refreshed = place.json_lines(&["get", &tagged, "--refresh"]);
    assert_eq!(refreshed[0]["outcome"], "revalidated", "{refreshed:?}");
    assert_eq!(refreshed[0]["size"], 6);
    let err = place.fails(&["get", &format!("{origin}/never"), "--only-if-cached"], 3);
    assert!(err.contains("not in the cache"), "{err}");

    // The origin failing is exit code 6; an origin that is down, too.
    let err = place.fails(&["get", &format!("{origin}/boom")], 6);
    assert!(err.contains("500"), "{err}");
    place.fails(&["get", "http://127.0.0.1:9/down"], 6);

    // `show` finds what `get` stored.
    let shown = place.ok(&["show", &url]);
    assert!(shown.contains("fresh body"), "{shown}");
}

fn kv_commands(place: &Place) {
    place.ok(&["kv", "set", "limits", r#"{"rps": 10, "burst": [1, 2]}"#]);
    place.ok(&["kv", "set", "greeting", "hello world", "--ttl", "10m"]);
    let v: Value = serde_json::from_str(place.ok(&["kv", "get", "limits"]).trim()).unwrap();
    assert_eq!(v, serde_json::json!({"rps": 10, "burst": [1, 2]}));
    assert_eq!(
        place.ok(&["kv", "get", "greeting"]).trim(),
        "\"hello world\""
    );
    let err = place.fails(&["kv", "get", "absent"], 3);
    assert!(err.contains("no value"), "{err}");

    // Another namespace is another cache.
    place.fails(&["--kv-namespace", "other", "kv", "get", "limits"], 3);
    place.ok(&["--kv-namespace", "other", "kv", "set", "mine", "1"]);

    let keys: Vec<String> = place
        .json_lines(&["kv", "ls"])
        .iter()
        .map(|l| l["key"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(keys, ["greeting", "limits"]);
    assert_eq!(place.ok(&["kv", "ls"]), "greeting\nlimits\n");

    // --ttl: expired values are misses (checked on read, whatever DynamoDB's sweeper does).
    place.ok(&["kv", "set", "brief", "1", "--ttl", "1s"]);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    place.fails(&["kv", "get", "brief"], 3);

    let out = place.ok(&["kv", "del", "limits", "absent"]);
    assert!(out.contains("deleted 1 of 2"), "{out}");
    place.fails(&["kv", "del", "limits"], 3);
    place.fails(&["kv", "get", "limits"], 3);
    assert_eq!(
        place
            .ok(&["--kv-namespace", "other", "kv", "get", "mine"])
            .trim(),
        "1"
    );
    // Bad input is an error, not a panic.
    let err = place.fails(&["kv", "set", "", "x"], 1);
    assert!(err.contains("error:"), "{err}");
}

fn table_lifecycle(place: &Place) {
    let out = place.ok(&["table", "create"]);
    assert!(out.contains("PAY_PER_REQUEST"), "{out}");
    place.ok(&["table", "create"]); // idempotent
    let d = &place.json_lines(&["table", "describe"])[0];
    assert_eq!(d["table"], place.table.as_str());
    assert_eq!(d["status"], "ACTIVE");
    let out = place.ok(&["table", "validate"]);
    assert!(out.contains("expected schema"), "{out}");
    let err = place.fails(&["table", "delete"], 2);
    assert!(err.contains("--yes"), "{err}");
    place.ok(&["table", "validate"]);
    place.ok(&["table", "delete", "--yes"]);
    let err = place.fails(&["table", "validate"], 5);
    assert!(err.contains("does not exist"), "{err}");
}

fn missing_table(place: &Place) {
    for args in [
        &["ls"][..],
        &["stats"],
        &["show", "http://example.com/"],
        &["rm", "http://example.com/"],
        &["purge", "--expired"],
        &["clear", "--yes"],
        &["kv", "get", "x"],
        &["kv", "ls"],
        &["table", "describe"],
    ] {
        let err = place.fails(args, 5);
        assert!(
            err.contains(&format!("table {:?} does not exist", place.table)),
            "{args:?}: {err}"
        );
        assert!(
            err.contains("hint: create it with `dynacache table create`"),
            "{args:?}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
}

/// A runtime for the library workloads of these tests. Debug builds of the AWS SDK's futures
/// are deep: a workload runs on a thread of its own with a stack larger than a test thread's
/// 2 MiB.
fn runtime() -> Rt {
    Rt(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap())
}

struct Rt(tokio::runtime::Runtime);

impl Rt {
    fn block_on<F>(&self, f: F) -> F::Output
    where
        F: std::future::Future + Send,
        F::Output: Send,
    {
        std::thread::scope(|s| {
            std::thread::Builder::new()
                .stack_size(16 << 20)
                .spawn_scoped(s, || self.0.block_on(f))
                .unwrap()
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }
}

/// The test's table, through the library (the table is assumed to exist). On the embedded
/// engine, open it only while no `dynacache` process of the test runs.
async fn open_table(place: &Place) -> dynacache::Table {
    let b = dynacache::Table::builder()
        .name(&place.table)
        .policy(dynacache::TablePolicy::AssumeExists);
    let b = match &place.engine {
        Engine::Embedded(dir) => b.embedded_file(dir.path().join("cache.db")),
        Engine::Local(url) => b.endpoint_url(url),
    };
    b.open().await.unwrap()
}

/// Makes the test's table with a sort key, through the library, on the test's engine.
fn create_wrong_table(place: &Place) {
    runtime().block_on(async {
        let table = open_table(place).await;
        use aws_sdk_dynamodb::types::{
            AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
        };
        table
            .client()
            .create_table()
            .table_name(&place.table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name("pk")
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .unwrap(),
            )
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name("sk")
                    .attribute_type(ScalarAttributeType::N)
                    .build()
                    .unwrap(),
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name("pk")
                    .key_type(KeyType::Hash)
                    .build()
                    .unwrap(),
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name("sk")
                    .key_type(KeyType::Range)
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .unwrap();
    });
}

fn wrong_schema(place: &Place) {
    create_wrong_table(place);
    for args in [
        &["ls"][..],
        &["kv", "get", "x"],
        &["kv", "set", "x", "1"],
        &["table", "validate"],
    ] {
        let err = place.fails(args, 5);
        assert!(
            err.contains("does not have the schema dynacache expects"),
            "{args:?}: {err}"
        );
        assert!(
            err.contains("partition key is \"pk\", expected \"key\""),
            "{args:?}: {err}"
        );
        assert!(err.contains("sort key \"sk\""), "{args:?}: {err}");
        assert!(err.contains("hint:"), "{err}");
    }
    // describe shows the table as it is.
    let d = &place.json_lines(&["table", "describe"])[0];
    assert_eq!(d["key_schema"][0]["name"], "pk");
}

/// What a template says about the table, in the terms of `table describe --json`.
#[derive(Debug, PartialEq)]
struct TemplateFacts {
    key: String,
    key_type: String,
    attribute_type: String,
    billing: String,
    ttl_attribute: String,
    ttl_enabled: bool,
    default_table: String,
    meta_index: bool,
}

fn value_after<'a>(text: &'a str, label: &str) -> &'a str {
    let start = text
        .find(label)
        .unwrap_or_else(|| panic!("{label} not in:\n{text}"))
        + label.len();
    text[start..]
        .lines()
        .next()
        .unwrap()
        .trim()
        .trim_matches('"')
}

fn cloudformation_facts(t: &str) -> TemplateFacts {
    let key_schema = &t[t.find("KeySchema:").unwrap()..];
    let attrs = &t[t.find("AttributeDefinitions:").unwrap()..];
    let ttl = &t[t.find("TimeToLiveSpecification:").unwrap()..];
    TemplateFacts {
        key: value_after(key_schema, "AttributeName:").into(),
        key_type: value_after(key_schema, "KeyType:").into(),
        attribute_type: value_after(attrs, "AttributeType:").into(),
        billing: value_after(t, "BillingMode:").into(),
        ttl_attribute: value_after(ttl, "AttributeName:").into(),
        ttl_enabled: value_after(ttl, "Enabled:") == "true",
        default_table: value_after(&t[t.find("TableName:").unwrap()..], "Default:").into(),
        meta_index: t.contains("- IndexName: meta\n"),
    }
}

fn terraform_facts(t: &str) -> TemplateFacts {
    let attribute = &t[t.find("attribute {").unwrap()..];
    let ttl = &t[t.find("ttl {").unwrap()..];
    TemplateFacts {
        key: value_after(t, "hash_key     =").into(),
        key_type: if t.contains("range_key") {
            "RANGE"
        } else {
            "HASH"
        }
        .into(),
        attribute_type: value_after(attribute, "type =").into(),
        billing: value_after(t, "billing_mode =").into(),
        ttl_attribute: value_after(ttl, "attribute_name =").into(),
        ttl_enabled: value_after(ttl, "enabled        =") == "true",
        default_table: value_after(t, "default =").into(),
        meta_index: t.contains("name               = \"meta\"\n"),
    }
}

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

fn templates_match_created_table(place: &Place) {
    // The table the code creates...
    place.ok(&["table", "create"]);
    let d = &place.json_lines(&["table", "describe"])[0];
    let created = TemplateFacts {
        key: d["key_schema"][0]["name"].as_str().unwrap().into(),
        key_type: d["key_schema"][0]["key_type"].as_str().unwrap().into(),
        attribute_type: d["key_schema"][0]["type"].as_str().unwrap().into(),
        billing: d["billing_mode"].as_str().unwrap().into(),
        ttl_attribute: d["ttl_attribute"].as_str().unwrap().into(),
        ttl_enabled: d["ttl_status"] == "ENABLED",
        default_table: place.table.clone(),
        meta_index: d["indexes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["name"] == "meta"),
    };
    assert!(created.meta_index, "{d}");
    assert_eq!(d["key_schema"].as_array().unwrap().len(), 1, "{d}");
    // ... is the table both templates describe.
    let cf = place.ok(&["table", "template", "--format", "cloudformation"]);
    let tf = place.ok(&["table", "template", "--format", "terraform"]);
    assert_eq!(cloudformation_facts(&cf), created);
    assert_eq!(terraform_facts(&tf), created);
}

#[test]
fn committed_templates_are_what_the_tool_prints() {
    for (format, path) in [
        ("cloudformation", "deploy/cloudformation.yml"),
        ("terraform", "deploy/terraform/main.tf"),
    ] {
        let printed = bare_cmd()
            .args(["table", "template", "--format", format])
            .output()
            .unwrap();
        assert!(printed.status.success());
        let committed = std::fs::read_to_string(repo_file(path)).unwrap();
        assert_eq!(
            String::from_utf8(printed.stdout).unwrap(),
            committed,
            "{path} differs from `dynacache table template --format {format}`: regenerate it"
        );
    }
}

#[test]
fn unreachable_endpoint_is_explained() {
    for args in [
        &["ls"][..],
        &["kv", "get", "x"],
        &["table", "describe"],
        &["demo"],
    ] {
        let out = bare_cmd()
            .args(["--endpoint-url", "http://127.0.0.1:9"])
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(4), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("cannot reach DynamoDB"), "{err}");
        assert!(err.contains("hint: is the endpoint running?"), "{err}");
    }
}

#[test]
fn a_bad_thread_count_for_serve_is_an_error_not_a_panic() {
    for bad in ["0", "many", "-1"] {
        let out = bare_cmd()
            .env("TOKIO_WORKER_THREADS", bad)
            .args([
                "serve",
                "--origin",
                "http://127.0.0.1:9",
                "--listen",
                "127.0.0.1:0",
            ])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("TOKIO_WORKER_THREADS must be a positive number"),
            "{err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn missing_credentials_are_explained() {
    let home = tempfile::tempdir().unwrap();
    let out = bare_cmd()
        .env_clear()
        .env("HOME", home.path())
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .args(["--aws", "--region", "us-east-1", "ls"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no usable AWS credentials"), "{err}");
    assert!(err.contains("hint: set AWS_PROFILE"), "{err}");
}

#[test]
fn every_subcommand_has_help_with_an_example() {
    let subcommands: &[&[&str]] = &[
        &["demo"],
        &["get"],
        &["ls"],
        &["show"],
        &["stats"],
        &["rm"],
        &["purge"],
        &["clear"],
        &["kv", "get"],
        &["kv", "set"],
        &["kv", "del"],
        &["kv", "ls"],
        &["table", "create"],
        &["table", "describe"],
        &["table", "validate"],
        &["table", "delete"],
        &["table", "template"],
    ];
    for sub in subcommands {
        let out = bare_cmd().args(*sub).arg("--help").output().unwrap();
        assert!(out.status.success(), "{sub:?}");
        let help = String::from_utf8(out.stdout).unwrap();
        assert!(
            help.contains("Example:"),
            "{sub:?} --help has no example:\n{help}"
        );
        assert!(
            help.contains("--table"),
            "{sub:?}: connection options are global"
        );
    }
    let out = bare_cmd().arg("--help").output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    assert!(help.contains("Exit codes"), "{help}");
}

#[test]
fn bad_usage_is_exit_code_2() {
    let out = bare_cmd()
        .args(["ls", "--sort", "sideways"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = bare_cmd().args(["frobnicate"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn quiet_and_verbose_control_what_goes_to_stderr() {
    let place = Place::embedded();
    let loud = place.run(&["kv", "set", "k", "v"]);
    assert!(String::from_utf8_lossy(&loud.stderr).contains("stored \"k\""));
    let quiet = place.run(&["-q", "kv", "set", "k", "v"]);
    assert!(quiet.status.success());
    assert_eq!(String::from_utf8_lossy(&quiet.stderr), "");
    let verbose = place.run(&["-vv", "kv", "get", "k"]);
    assert!(verbose.status.success());
    assert!(
        String::from_utf8_lossy(&verbose.stderr).contains("DEBUG"),
        "-vv shows debug logs: {}",
        String::from_utf8_lossy(&verbose.stderr)
    );
    // No colour codes when stderr is not a terminal, whatever the level.
    assert!(!String::from_utf8_lossy(&verbose.stderr).contains('\x1b'));
}

#[test]
fn the_embedded_file_comes_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("from-env.db");
    let mut cmd = bare_cmd();
    cmd.env("DYNACACHE_EMBEDDED_FILE", &file)
        .args(["kv", "set", "k", "1"]);
    assert!(cmd.output().unwrap().status.success());
    assert!(
        file.exists(),
        "the embedded engine persisted to {}",
        file.display()
    );
    let out = bare_cmd()
        .env("DYNACACHE_EMBEDDED_FILE", &file)
        .args(["kv", "get", "k"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1");
}

#[test]
fn environment_variables_configure_the_connection() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("env.db");
    let with_env = || {
        let mut cmd = bare_cmd();
        cmd.env("DYNACACHE_EMBEDDED_FILE", &file)
            .env("DYNACACHE_TABLE", "from_env")
            .env("DYNACACHE_KV_NAMESPACE", "envns")
            .env("DYNACACHE_NAMESPACE", "envhttp");
        cmd
    };
    assert!(
        with_env()
            .args(["kv", "set", "a", "1"])
            .output()
            .unwrap()
            .status
            .success()
    );
    let flags = |ns: &str| {
        let mut cmd = bare_cmd();
        cmd.args([
            "--embedded-file",
            file.to_str().unwrap(),
            "--table",
            "from_env",
        ])
        .args(["--kv-namespace", ns, "kv", "get", "a"]);
        cmd
    };
    let out = flags("envns").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "1",
        "same table, same namespace"
    );
    assert_eq!(
        flags("kv").output().unwrap().status.code(),
        Some(3),
        "another namespace"
    );
    // DYNACACHE_AWS accepts the usual spellings of yes and no.
    for (value, code) in [("1", 4), ("yes", 4), ("0", 0)] {
        let home = tempfile::tempdir().unwrap();
        let out = with_env()
            .env("HOME", home.path())
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env("DYNACACHE_AWS", value)
            .args(["--region", "us-east-1", "kv", "get", "a"])
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(code),
            "DYNACACHE_AWS={value}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // AWS_ENDPOINT_URL_DYNAMODB points at another engine.
    if let Ok(url) = std::env::var("DYNACACHE_TEST_DYNAMODB_LOCAL") {
        let table = format!("env_{}", std::process::id());
        let out = bare_cmd()
            .env("AWS_ENDPOINT_URL_DYNAMODB", &url)
            .env("DYNACACHE_TABLE", &table)
            .args(["table", "create"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = bare_cmd()
            .args([
                "--endpoint-url",
                &url,
                "--table",
                &table,
                "table",
                "validate",
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "the table is on DynamoDB Local");
    }
}

/// A stand-in for DynamoDB that refuses every call, as IAM does without the right policy (no
/// engine can be made to do this on demand).
fn start_refusing_endpoint() -> String {
    let app = axum::Router::new().fallback(|| async {
        (
            axum::http::StatusCode::BAD_REQUEST,
            [("content-type", "application/x-amz-json-1.0")],
            r#"{"__type":"com.amazon.coral.service#AccessDeniedException","message":"User: arn:aws:iam::123456789012:user/ci is not authorized to perform: dynamodb:DescribeTable"}"#,
        )
    });
    format!("http://{}", serve(app))
}

#[test]
fn access_denied_is_explained() {
    let url = start_refusing_endpoint();
    for args in [
        &["ls"][..],
        &["kv", "set", "k", "v"],
        &["table", "validate"],
    ] {
        let out = bare_cmd()
            .args(["--endpoint-url", &url])
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(4), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("access denied"), "{err}");
        assert!(
            err.contains("not authorized to perform: dynamodb:DescribeTable"),
            "{err}"
        );
        assert!(err.contains("Permissions, and AWS Lambda"), "{err}");
    }
}

// ---------------------------------------------------------------------------------------------
// `table template --format iam`: a policy confined to namespaces by `dynamodb:LeadingKeys`.

/// Bytes that do not compress (xorshift), so that a large value is stored as chunk items.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ seed.wrapping_mul(0xA24B_AED4_963E_E407);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// IAM's `StringLike`: `*` matches any sequence of characters (none included), `?` exactly one;
/// every other character itself, case-sensitively.
fn string_like(value: &str, pattern: &str) -> bool {
    let v: Vec<char> = value.chars().collect();
    let p: Vec<char> = pattern.chars().collect();
    let (mut i, mut j) = (0, 0);
    // The last `*` seen, and where in the value it was tried against.
    let mut star: Option<(usize, usize)> = None;
    while i < v.len() {
        if j < p.len() && (p[j] == '?' || (p[j] != '*' && p[j] == v[i])) {
            i += 1;
            j += 1;
        } else if j < p.len() && p[j] == '*' {
            star = Some((j, i));
            j += 1;
        } else if let Some((sj, si)) = star {
            // Let the last `*` take one more character.
            star = Some((sj, si + 1));
            j = sj + 1;
            i = si + 1;
        } else {
            return false;
        }
    }
    p[j..].iter().all(|&c| c == '*')
}

#[test]
fn iam_string_like_matches_as_iam_does() {
    for (value, pattern, expected) in [
        ("kv:user:1", "kv:*", true),
        ("kv:", "kv:*", true),
        ("kv#00ff", "kv:*", false),
        ("kv2:user", "kv:*", false),
        ("k:v", "kv:*", false),
        ("kv", "kv:*", false),
        ("abc", "a?c", true),
        ("ac", "a?c", false),
        ("abbc", "a?c", false),
        ("abbc", "a*c", true),
        ("abcbd", "a*b?", true),
        ("abcbd", "*c*d", true),
        ("abcbd", "*c*e", false),
        ("", "*", true),
        ("", "?", false),
        ("KV:x", "kv:*", false),
        ("é:x", "?:*", true),
    ] {
        assert_eq!(
            string_like(value, pattern),
            expected,
            "{value:?} ~ {pattern:?}"
        );
    }
}

/// The `dynamodb:LeadingKeys` patterns of a policy's item statement.
fn leading_key_patterns(policy: &Value) -> Vec<String> {
    policy["Statement"][0]["Condition"]["ForAllValues:StringLike"]["dynamodb:LeadingKeys"]
        .as_array()
        .unwrap_or_else(|| panic!("no LeadingKeys condition: {policy}"))
        .iter()
        .map(|p| p.as_str().unwrap().to_owned())
        .collect()
}

const ITEM_ACTIONS: [&str; 6] = [
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:BatchGetItem",
    "dynamodb:BatchWriteItem",
];

fn iam_policy(args: &[&str]) -> (Value, String) {
    let out = bare_cmd().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let policy = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("{args:?} printed no JSON document ({e}):\n{stdout}"));
    (policy, String::from_utf8(out.stderr).unwrap())
}

#[test]
fn iam_policy_document_has_the_item_actions_confined_to_the_namespaces() {
    // Without a namespace: both defaults, `http` (HTTP responses) and `kv` (key/value entries).
    let (policy, notes) = iam_policy(&["table", "template", "--format", "iam"]);
    assert_eq!(policy["Version"], "2012-10-17");
    let statements = policy["Statement"].as_array().unwrap();
    assert_eq!(statements.len(), 2, "no Scan unless asked: {policy}");
    // Query on the metadata index, confined to the namespaces' index partitions alike.
    let index = &statements[1];
    assert_eq!(index["Action"], serde_json::json!(["dynamodb:Query"]));
    assert_eq!(
        index["Resource"],
        "arn:aws:dynamodb:${Region}:${AccountId}:table/dynacache/index/meta"
    );
    assert_eq!(index["Condition"], statements[0]["Condition"]);
    let items = &statements[0];
    assert_eq!(items["Effect"], "Allow");
    assert_eq!(items["Action"], serde_json::json!(ITEM_ACTIONS));
    assert_eq!(
        items["Resource"],
        "arn:aws:dynamodb:${Region}:${AccountId}:table/dynacache"
    );
    assert_eq!(
        leading_key_patterns(&policy),
        [
            "http:*", "http#*", "http!*", "http~*", "kv:*", "kv#*", "kv!*", "kv~*"
        ]
    );
    // A request that names no partition key is not let through by an empty "for all values".
    assert_eq!(items["Condition"]["Null"]["dynamodb:LeadingKeys"], "false");
    assert_eq!(items["Condition"].as_object().unwrap().len(), 2);
    assert!(!policy.to_string().contains("Scan\""), "{policy}");
    assert!(
        notes.contains("dynamodb:Scan is not granted"),
        "the notes say why: {notes}"
    );
    assert!(notes.contains("--assume-exists"), "{notes}");
    assert!(notes.contains("${Region}"), "{notes}");

    // Namespaces named, region, account, table, and Scan asked for.
    let (policy, notes) = iam_policy(&[
        "--table",
        "tenant_cache",
        "--region",
        "eu-west-1",
        "table",
        "template",
        "--format",
        "iam",
        "--namespace",
        "acme",
        "--namespace",
        "acme/kv",
        "--account",
        "123456789012",
        "--allow-scan",
    ]);
    let arn = "arn:aws:dynamodb:eu-west-1:123456789012:table/tenant_cache";
    assert_eq!(policy["Statement"][0]["Resource"], arn);
    assert_eq!(
        leading_key_patterns(&policy),
        [
            "acme:*",
            "acme#*",
            "acme!*",
            "acme~*",
            "acme/kv:*",
            "acme/kv#*",
            "acme/kv!*",
            "acme/kv~*"
        ]
    );
    assert_eq!(
        policy["Statement"][1]["Resource"],
        format!("{arn}/index/meta")
    );
    let scan = &policy["Statement"][2];
    assert_eq!(scan["Effect"], "Allow");
    assert_eq!(scan["Action"], serde_json::json!(["dynamodb:Scan"]));
    assert_eq!(scan["Resource"], arn);
    assert!(
        scan.get("Condition").is_none(),
        "a LeadingKeys condition cannot confine a Scan: {scan}"
    );
    assert!(notes.contains("WHOLE table"), "{notes}");
    assert!(!notes.contains("${Region}"), "{notes}");

    // The connection's namespace options, on the command line or in the environment: the
    // namespaces named, and only those.
    for (env, args, expected) in [
        (
            None,
            &["--namespace", "web", "--kv-namespace", "sessions"][..],
            &["web", "sessions"][..],
        ),
        (None, &["--kv-namespace", "sessions"], &["sessions"]),
        (None, &["--namespace", "web"], &["web"]),
        (Some(("DYNACACHE_NAMESPACE", "envweb")), &[], &["envweb"]),
        (Some(("DYNACACHE_KV_NAMESPACE", "envkv")), &[], &["envkv"]),
    ] {
        let mut cmd = bare_cmd();
        if let Some((k, v)) = env {
            cmd.env(k, v);
        }
        let out = cmd
            .args(args)
            .args(["table", "template", "--format", "iam"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{env:?} {args:?}");
        let policy: Value = serde_json::from_slice(&out.stdout).unwrap();
        let expected: Vec<String> = expected
            .iter()
            .flat_map(|ns| {
                [
                    format!("{ns}:*"),
                    format!("{ns}#*"),
                    format!("{ns}!*"),
                    format!("{ns}~*"),
                ]
            })
            .collect();
        assert_eq!(leading_key_patterns(&policy), expected, "{env:?} {args:?}");
    }
    // The partition follows the region.
    let (policy, _) = iam_policy(&[
        "--region",
        "cn-north-1",
        "table",
        "template",
        "--format",
        "iam",
    ]);
    assert!(
        policy["Statement"][0]["Resource"]
            .as_str()
            .unwrap()
            .starts_with("arn:aws-cn:dynamodb:cn-north-1:${AccountId}:table/"),
        "{policy}"
    );

    // What would widen the policy is refused: IAM wildcards in a namespace or the table name,
    // a namespace dynacache refuses, an account that is not one.
    for args in [
        &["--namespace", "acme*"][..],
        &["--namespace", "ac?me"],
        &["--namespace", "*"],
        &["--namespace", "a:b"],
        &["--namespace", ""],
        &["--kv-namespace", "kv*"],
        &["--account", "12345"],
        &["--table", "cache*"],
    ] {
        let out = bare_cmd()
            .args(["table", "template", "--format", "iam"])
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}: no document");
    }
    let out = bare_cmd()
        .args([
            "table",
            "template",
            "--format",
            "iam",
            "--namespace",
            "ac?me",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("wildcards of IAM's StringLike"), "{err}");
    let out = bare_cmd()
        .args(["table", "template", "--format", "terraform", "--allow-scan"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "--allow-scan is for --format iam"
    );
}

#[test]
fn iam_namespace_rule_is_the_library_rule() {
    // The CLI refuses exactly the namespaces the library refuses (and so every namespace with
    // an IAM wildcard, `*` or `?`, or a key separator, `:`, `#` or `!`).
    let rt = runtime();
    let table = rt.block_on(async { dynacache::Table::builder().open().await.unwrap() });
    let mut candidates: Vec<String> = (0x20u8..0x7f).map(|b| format!("n{}s", b as char)).collect();
    candidates.extend(["é".to_owned(), "n".repeat(64), "n".repeat(65)]);
    for ns in &candidates {
        let library = dynacache::Cache::builder()
            .namespace(ns)
            .build(table.clone())
            .is_ok();
        let http_library = dynacache::http::HttpCache::builder()
            .namespace(ns)
            .build(table.clone())
            .is_ok();
        assert_eq!(library, http_library, "{ns:?}");
        let out = bare_cmd()
            .args(["table", "template", "--format", "iam", "--namespace", ns])
            .output()
            .unwrap();
        assert_eq!(
            out.status.success(),
            library,
            "namespace {ns:?}: the CLI and the library disagree ({})",
            String::from_utf8_lossy(&out.stderr)
        );
        if ns.contains(['*', '?']) {
            assert!(!library, "{ns:?}");
        }
    }
}

#[test]
fn iam_docs_show_the_policy_the_tool_prints() {
    let printed = bare_cmd()
        .args(["table", "template", "--format", "iam"])
        .output()
        .unwrap();
    let docs = std::fs::read_to_string(repo_file("docs/iam.md")).unwrap();
    assert!(
        docs.contains(&*String::from_utf8_lossy(&printed.stdout)),
        "docs/iam.md does not show `dynacache table template --format iam` as it prints now"
    );
}

/// The namespaces of the tenant the policy is for, and neighbours that share the table and
/// begin like them.
const TENANT_HTTP: &str = "acme";
const TENANT_KV: &str = "acme/kv";
const OTHER_HTTP: &str = "acme2";
const OTHER_KV: &str = "acme/kv2";

/// The namespace a partition key belongs to: what comes before the first separator.
fn namespace_of(pk: &str) -> &str {
    let end = pk
        .find([':', '#', '!', '~'])
        .unwrap_or_else(|| panic!("{pk:?} is in no namespace"));
    &pk[..end]
}

/// Key/value work of one namespace through the library: a binary key (hashed), a large value
/// (chunked) replaced by another, an atomic add, a counter, batched reads and writes, a lease,
/// read-through with fleet-wide single flight, touch and take.
async fn kv_library_workload(table: &dynacache::Table, ns: &str) {
    let cache = dynacache::Cache::builder()
        .namespace(ns)
        .build(table.clone())
        .unwrap();
    cache
        .set(&[0xff_u8, 0xfe, 0x00][..], &"binary")
        .await
        .unwrap();
    assert_eq!(
        cache
            .get::<String>(&[0xff_u8, 0xfe, 0x00][..])
            .await
            .unwrap(),
        Some("binary".to_owned())
    );
    for seed in [1, 2] {
        let big = noise(700 * 1024, seed);
        cache.set("big", &big).await.unwrap();
        assert_eq!(cache.get::<Vec<u8>>("big").await.unwrap(), Some(big));
    }
    cache.set("big2", &noise(500 * 1024, 3)).await.unwrap();
    assert!(cache.delete("big2").await.unwrap());
    assert!(cache.add("once", &1).await.unwrap());
    assert!(!cache.add("once", &2).await.unwrap());
    assert_eq!(cache.inc("counter", 1).await.unwrap(), 1);
    assert_eq!(cache.inc("counter", 2).await.unwrap(), 3);
    cache
        .set_many([("m1", 1), ("m2", 2)], dynacache::Expiry::Never)
        .await
        .unwrap();
    let got: Vec<Option<i32>> = cache.get_many(["m1", "m2", "absent"]).await.unwrap();
    assert_eq!(got, [Some(1), Some(2), None]);
    cache.delete_many(["m2", "absent"]).await.unwrap();
    assert_eq!(cache.get::<i32>("m2").await.unwrap(), None);
    // Leases, read-through with fleet-wide single flight, take and touch.
    let ttl = std::time::Duration::from_secs(30);
    let mut lease = cache.lease("job", ttl).await.unwrap().expect("free");
    assert!(cache.renew(&mut lease, ttl).await.unwrap());
    assert!(cache.release(lease).await.unwrap());
    let fleet = dynacache::Cache::builder()
        .namespace(ns)
        .fleet_single_flight(dynacache::FleetSingleFlight::new(ttl))
        .build(table.clone())
        .unwrap();
    let v: u32 =
        Box::pin(fleet.get_or_insert_with("computed", dynacache::Expiry::Never, || async { 7 }))
            .await;
    assert_eq!(v, 7);
    cache
        .set_with("session", &1, dynacache::Expiry::After(ttl))
        .await
        .unwrap();
    assert!(cache.touch("session", ttl * 100).await.unwrap());
    assert_eq!(cache.take::<u32>("session").await.unwrap(), Some(1));
}

/// The same work through the CLI: a short key, a key over 2 KB (stored under its hash), reads,
/// a delete.
fn kv_cli_workload(place: &Place, extra: &[&str], ns: &str) {
    let long_key = "k".repeat(2100);
    let run = |args: &[&str]| {
        let mut all: Vec<&str> = extra.to_vec();
        all.extend(["--kv-namespace", ns]);
        all.extend(args);
        place.ok(&all)
    };
    run(&["kv", "set", "short", "\"value\""]);
    run(&["kv", "set", &long_key, "{\"n\": 1}"]);
    assert_eq!(run(&["kv", "get", "short"]).trim(), "\"value\"");
    assert_eq!(run(&["kv", "get", &long_key]).trim(), "{\"n\":1}");
    run(&["kv", "set", "temporary", "1"]);
    run(&["kv", "del", "temporary"]);
}

/// HTTP work of one namespace through `dynacache get`: a response stored then hit, one
/// revalidated (a 304 updates it), a `Vary` response, a 1 MiB body (chunks) stored, hit and
/// replaced, a redirect.
fn http_cli_workload(place: &Place, extra: &[&str], ns: &str, origin: &str) {
    let get = |path: &str, flags: &[&str]| -> Value {
        let url = format!("{origin}{path}");
        let mut all: Vec<&str> = extra.to_vec();
        all.extend(["--namespace", ns, "get", &url, "--json"]);
        all.extend(flags);
        json_lines(&place.ok(&all)).remove(0)
    };
    for path in ["/fresh", "/vary", "/large", "/moved"] {
        assert_eq!(get(path, &[])["outcome"], "miss", "{path}");
        assert_eq!(get(path, &[])["outcome"], "hit", "{path}");
    }
    assert_eq!(get("/large", &["--force-refresh"])["outcome"], "miss");
    assert_eq!(get("/large", &[])["size"], 1 << 20);
    get("/etag", &[]);
    assert_eq!(get("/etag", &["--refresh"])["outcome"], "revalidated");
}

/// Every partition key in the table, read with the raw SDK (a Scan to the last page).
async fn all_partition_keys(table: &dynacache::Table) -> Vec<String> {
    let mut keys = Vec::new();
    let mut start = None;
    loop {
        let page = table
            .client()
            .scan()
            .table_name(table.name())
            .projection_expression("#k")
            .expression_attribute_names("#k", table.key_attribute())
            .set_exclusive_start_key(start)
            .send()
            .await
            .unwrap();
        for item in page.items() {
            keys.push(
                item[table.key_attribute()]
                    .as_s()
                    .expect("string partition keys")
                    .clone(),
            );
        }
        start = page.last_evaluated_key().cloned();
        if start.is_none() {
            return keys;
        }
    }
}

/// What a namespace's workload writes is all matched by the policy printed for it, and what the
/// neighbouring namespaces write in the same table is not.
fn iam_keys_match_the_policy(place: &Place) {
    let (origin, _) = start_origin();
    // The tenant: the demo (Vary variants, a redirect alias, a 2 MiB chunked body, a
    // revalidation), `get`, and key/value work through the CLI and the library.
    place.ok(&["demo", "--demo-namespace", TENANT_HTTP]);
    http_cli_workload(place, &[], TENANT_HTTP, &origin);
    kv_cli_workload(place, &[], TENANT_KV);
    // Its neighbours, in the same table.
    place.ok(&["demo", "--demo-namespace", OTHER_HTTP, "--passes", "1"]);
    http_cli_workload(place, &[], OTHER_HTTP, &origin);
    kv_cli_workload(place, &[], OTHER_KV);
    place.ok(&["--kv-namespace", "acm", "kv", "set", "x", "1"]);
    place.ok(&["kv", "set", "x", "1"]);

    let policy: Value = serde_json::from_str(&place.ok(&[
        "--namespace",
        TENANT_HTTP,
        "--kv-namespace",
        TENANT_KV,
        "table",
        "template",
        "--format",
        "iam",
    ]))
    .unwrap();
    assert!(
        policy["Statement"][0]["Resource"]
            .as_str()
            .unwrap()
            .ends_with(&format!(":table/{}", place.table))
    );
    let patterns = leading_key_patterns(&policy);
    let allowed = |pk: &str| patterns.iter().any(|p| string_like(pk, p));

    let keys = runtime().block_on(async {
        let table = open_table(place).await;
        Box::pin(kv_library_workload(&table, TENANT_KV)).await;
        Box::pin(kv_library_workload(&table, OTHER_KV)).await;
        all_partition_keys(&table).await
    });
    let mut tenant_keys = 0;
    for pk in &keys {
        let ns = namespace_of(pk);
        if ns == TENANT_HTTP || ns == TENANT_KV {
            tenant_keys += 1;
            assert!(
                allowed(pk),
                "{pk:?} of the tenant is not matched by {patterns:?}"
            );
        } else {
            assert!(
                !allowed(pk),
                "{pk:?} of namespace {ns:?} is matched by {patterns:?}"
            );
        }
    }
    // The workload wrote every kind of key: readable, hashed, chunks, in both of the tenant's
    // namespaces, and the neighbours wrote theirs.
    for prefix in [
        "acme:",
        "acme!",
        "acme/kv:",
        "acme/kv#",
        "acme/kv!",
        "acme2:",
        "acme2!",
        "acme/kv2#",
        "acme/kv2!",
        "acm:",
        "kv:",
    ] {
        assert!(
            keys.iter().any(|k| k.starts_with(prefix)),
            "no key starts with {prefix:?}: {keys:?}"
        );
    }
    assert!(
        tenant_keys >= 20,
        "{tenant_keys} keys of the tenant: {keys:?}"
    );
}

/// One request the IAM stand-in saw.
#[derive(Debug, Clone)]
struct Call {
    action: String,
    leading_keys: Vec<String>,
    allowed: bool,
}

/// A stand-in for DynamoDB behind IAM: it evaluates each request against a policy printed by
/// `table template --format iam`, as IAM evaluates an identity-based policy (default deny; an
/// Allow statement applies when its action and resource match and every condition holds), then
/// forwards what is allowed to a real engine and answers AccessDeniedException to the rest.
struct IamStandIn {
    url: String,
    policy: std::sync::Arc<std::sync::Mutex<Value>>,
    calls: std::sync::Arc<std::sync::Mutex<Vec<Call>>>,
}

const STAND_IN_REGION: &str = "us-east-1";
const STAND_IN_ACCOUNT: &str = "123456789012";

/// The partition keys a request names: `dynamodb:LeadingKeys` as IAM computes it.
fn request_leading_keys(action: &str, body: &Value, key_attr: &str) -> Vec<String> {
    let key_of = |key: &Value| key[key_attr]["S"].as_str().map(str::to_owned);
    let mut keys = Vec::new();
    match action {
        "dynamodb:GetItem" | "dynamodb:DeleteItem" | "dynamodb:UpdateItem" => {
            keys.extend(key_of(&body["Key"]))
        }
        "dynamodb:PutItem" => keys.extend(key_of(&body["Item"])),
        // The values the key condition compares the (index's) partition key with.
        "dynamodb:Query" => {
            let condition = body["KeyConditionExpression"].as_str().unwrap_or("");
            for (placeholder, value) in body["ExpressionAttributeValues"]
                .as_object()
                .into_iter()
                .flatten()
            {
                if condition.contains(placeholder.as_str()) {
                    keys.extend(value["S"].as_str().map(str::to_owned));
                }
            }
        }
        "dynamodb:BatchGetItem" => {
            for table in body["RequestItems"].as_object().into_iter().flatten() {
                for k in table.1["Keys"].as_array().into_iter().flatten() {
                    keys.extend(key_of(k));
                }
            }
        }
        "dynamodb:BatchWriteItem" => {
            for table in body["RequestItems"].as_object().into_iter().flatten() {
                for w in table.1.as_array().into_iter().flatten() {
                    keys.extend(key_of(&w["PutRequest"]["Item"]));
                    keys.extend(key_of(&w["DeleteRequest"]["Key"]));
                }
            }
        }
        _ => {}
    }
    keys
}

fn request_table(body: &Value) -> Option<String> {
    body["TableName"].as_str().map(str::to_owned).or_else(|| {
        body["RequestItems"]
            .as_object()
            .and_then(|m| m.keys().next().cloned())
    })
}

/// IAM's evaluation of an identity-based policy of Allow statements, for the condition operators
/// the printed policies use (any other is a test failure).
fn iam_allows(policy: &Value, action: &str, resource: &str, leading_keys: &[String]) -> bool {
    let listed = |v: &Value| -> Vec<String> {
        match v {
            Value::String(s) => vec![s.clone()],
            Value::Array(a) => a.iter().map(|s| s.as_str().unwrap().to_owned()).collect(),
            _ => panic!("not a string or a list: {v}"),
        }
    };
    policy["Statement"].as_array().unwrap().iter().any(|st| {
        assert_eq!(st["Effect"], "Allow", "{st}");
        if !listed(&st["Action"]).iter().any(|a| string_like(action, a))
            || !listed(&st["Resource"])
                .iter()
                .any(|r| string_like(resource, r))
        {
            return false;
        }
        let Some(conditions) = st.get("Condition") else {
            return true;
        };
        conditions.as_object().unwrap().iter().all(|(op, keys)| {
            keys.as_object().unwrap().iter().all(|(key, values)| {
                assert_eq!(key, "dynamodb:LeadingKeys", "{st}");
                match op.as_str() {
                    // True when every value matches a pattern, and so when there is none.
                    "ForAllValues:StringLike" => leading_keys
                        .iter()
                        .all(|k| listed(values).iter().any(|p| string_like(k, p))),
                    "Null" => match values.as_str().unwrap() {
                        "false" => !leading_keys.is_empty(),
                        _ => leading_keys.is_empty(),
                    },
                    _ => panic!("the stand-in does not evaluate {op}"),
                }
            })
        })
    })
}

fn start_iam_stand_in(backend: String, key_attr: &'static str) -> IamStandIn {
    use std::sync::{Arc, Mutex};
    let policy = Arc::new(Mutex::new(Value::Null));
    let calls = Arc::new(Mutex::new(Vec::new()));
    let (p, c) = (policy.clone(), calls.clone());
    let client = reqwest::Client::new();
    let app = axum::Router::new()
        .fallback(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let (policy, calls, client, backend) =
                    (p.clone(), c.clone(), client.clone(), backend.clone());
                async move {
                    use axum::response::IntoResponse;
                    let target = headers
                        .get("x-amz-target")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    let action = format!("dynamodb:{}", target.rsplit('.').next().unwrap_or(""));
                    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    let mut resource = format!(
                        "arn:aws:dynamodb:{STAND_IN_REGION}:{STAND_IN_ACCOUNT}:table/{}",
                        request_table(&request).unwrap_or_default()
                    );
                    if let Some(index) = request["IndexName"].as_str() {
                        resource = format!("{resource}/index/{index}");
                    }
                    let leading_keys = request_leading_keys(&action, &request, key_attr);
                    let allowed = {
                        let policy = policy.lock().unwrap();
                        iam_allows(&policy, &action, &resource, &leading_keys)
                    };
                    calls.lock().unwrap().push(Call {
                        action: action.clone(),
                        leading_keys,
                        allowed,
                    });
                    if !allowed {
                        let message = format!(
                            "User: arn:aws:sts::{STAND_IN_ACCOUNT}:assumed-role/tenant/test is not \
                         authorized to perform: {action} on resource: {resource} because no \
                         identity-based policy allows the {action} action"
                        );
                        return (
                            axum::http::StatusCode::BAD_REQUEST,
                            [("content-type", "application/x-amz-json-1.0")],
                            serde_json::json!({
                                "__type": "com.amazon.coral.service#AccessDeniedException",
                                "message": message,
                            })
                            .to_string(),
                        )
                            .into_response();
                    }
                    let mut forward = client.post(&backend).body(body);
                    for (name, value) in &headers {
                        if name != "host" && name != "content-length" {
                            forward = forward.header(name.as_str(), value.as_bytes());
                        }
                    }
                    let answer = forward
                        .send()
                        .await
                        .expect("the engine behind the stand-in");
                    let status = answer.status().as_u16();
                    let mut response = axum::response::Response::builder().status(status);
                    for (name, value) in answer.headers() {
                        if !matches!(
                            name.as_str(),
                            "content-length" | "transfer-encoding" | "connection"
                        ) {
                            response = response.header(name.as_str(), value.as_bytes());
                        }
                    }
                    let bytes = answer.bytes().await.expect("the engine's answer");
                    response.body(axum::body::Body::from(bytes)).unwrap()
                }
            },
        )
        // DynamoDB takes requests up to 16 MB (a BatchWriteItem of chunks is ~3 MB); axum's default
        // limit is 2 MB.
        .layer(axum::extract::DefaultBodyLimit::max(16 * 1024 * 1024));
    IamStandIn {
        url: format!("http://{}", serve(app)),
        policy,
        calls,
    }
}

impl IamStandIn {
    fn set_policy(&self, policy: Value) {
        *self.policy.lock().unwrap() = policy;
    }

    /// The calls seen since the last time, forgetting them.
    fn take_calls(&self) -> Vec<Call> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }
}

/// The engine behind the stand-in: DynamoDB Local itself, or the embedded engine (dynoxide)
/// served over HTTP from the test process.
fn backend_url(place: &Place) -> String {
    match &place.engine {
        Engine::Local(url) => url.clone(),
        Engine::Embedded(dir) => {
            let db =
                dynoxide::Database::new(dir.path().join("backend.db").to_str().unwrap()).unwrap();
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                runtime().block_on(async move {
                    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                    tx.send(listener.local_addr().unwrap()).unwrap();
                    dynoxide::server::serve_on(listener, db).await;
                });
            });
            format!("http://{}", rx.recv().unwrap())
        }
    }
}

/// Under the policy printed for a tenant's namespaces, the tenant's whole workload runs with no
/// request refused, and whatever reaches beyond its namespaces is refused: Scan (listing,
/// counting, clearing) unless `--allow-scan`, other namespaces' items, control-plane calls.
fn iam_enforced_workload(place: &Place) {
    let backend = backend_url(place);
    bare_cmd()
        .args([
            "--endpoint-url",
            &backend,
            "--table",
            &place.table,
            "table",
            "create",
        ])
        .assert()
        .success();
    let stand_in = start_iam_stand_in(backend.clone(), "key");
    let (origin, _) = start_origin();
    let policy_for = |extra: &[&str]| -> Value {
        let mut args = vec![
            "--table",
            &place.table,
            "--region",
            STAND_IN_REGION,
            "--namespace",
            TENANT_HTTP,
            "--kv-namespace",
            TENANT_KV,
            "table",
            "template",
            "--format",
            "iam",
            "--account",
            STAND_IN_ACCOUNT,
        ];
        args.extend(extra);
        iam_policy(&args).0
    };
    stand_in.set_policy(policy_for(&[]));
    // The CLI, through the stand-in, without control-plane calls.
    let through = Place {
        engine: Engine::Local(stand_in.url.clone()),
        table: place.table.clone(),
    };
    let tenant_flags = ["--assume-exists"];

    http_cli_workload(&through, &tenant_flags, TENANT_HTTP, &origin);
    kv_cli_workload(&through, &tenant_flags, TENANT_KV);
    runtime().block_on(async {
        let table = open_table(&through).await;
        Box::pin(kv_library_workload(&table, TENANT_KV)).await;
    });
    let calls = stand_in.take_calls();
    let refused: Vec<&Call> = calls.iter().filter(|c| !c.allowed).collect();
    assert!(
        refused.is_empty(),
        "the tenant's workload was refused: {refused:?}"
    );
    let mut actions: Vec<&str> = calls.iter().map(|c| c.action.as_str()).collect();
    actions.sort();
    actions.dedup();
    let mut expected = ITEM_ACTIONS.to_vec();
    expected.sort();
    assert_eq!(
        actions, expected,
        "the workload uses every action granted, and no other"
    );
    assert!(calls.iter().all(|c| !c.leading_keys.is_empty()));

    // Scan is refused: listing, counting, clearing, purging, the demo (it clears its namespace),
    // while the tenant's namespaces are not marked as indexed (the table's own marker is
    // beyond the tenant's keys).
    let listings = [
        &["--kv-namespace", TENANT_KV, "kv", "ls"][..],
        &["--namespace", TENANT_HTTP, "ls"],
        &["--namespace", TENANT_HTTP, "purge", "--expired"],
    ];
    let maintenance = [
        &["--namespace", TENANT_HTTP, "stats"][..],
        &["--namespace", TENANT_HTTP, "clear", "--yes"],
        &["demo", "--demo-namespace", TENANT_HTTP, "--passes", "1"],
    ];
    for args in listings.iter().chain(&maintenance) {
        let mut all = tenant_flags.to_vec();
        all.extend(*args);
        let err = through.fails(&all, 4);
        assert!(err.contains("access denied"), "{args:?}: {err}");
        assert!(err.contains("dynamodb:Scan"), "{args:?}: {err}");
    }
    // Once an administrator marks them, the tenant's listings read its index partitions.
    let admin = Place {
        engine: Engine::Local(backend),
        table: place.table.clone(),
    };
    admin.ok(&[
        "--namespace",
        TENANT_HTTP,
        "--kv-namespace",
        TENANT_KV,
        "table",
        "index",
    ]);
    stand_in.take_calls();
    let listed = through.ok(&["--assume-exists", "--kv-namespace", TENANT_KV, "kv", "ls"]);
    for key in ["short", "counter", "big", "once", "m1"] {
        assert!(listed.lines().any(|l| l == key), "{key} not in:\n{listed}");
    }
    through.ok(&["--assume-exists", "--namespace", TENANT_HTTP, "ls"]);
    through.ok(&[
        "--assume-exists",
        "--namespace",
        TENANT_HTTP,
        "purge",
        "--expired",
    ]);
    let calls = stand_in.take_calls();
    assert!(calls.iter().all(|c| c.allowed), "{calls:?}");
    assert!(calls.iter().any(|c| c.action == "dynamodb:Query"));
    assert!(calls.iter().all(|c| c.action != "dynamodb:Scan"));
    for args in maintenance {
        let mut all = tenant_flags.to_vec();
        all.extend(args);
        let err = through.fails(&all, 4);
        assert!(err.contains("dynamodb:Scan"), "{args:?}: {err}");
    }
    // Another namespace's items are refused, through the CLI and the library.
    let err = through.fails(
        &[
            "--assume-exists",
            "--kv-namespace",
            OTHER_KV,
            "kv",
            "set",
            "x",
            "1",
        ],
        4,
    );
    assert!(err.contains("dynamodb:PutItem"), "{err}");
    through.fails(
        &["--assume-exists", "--kv-namespace", "acm", "kv", "get", "x"],
        4,
    );
    runtime().block_on(async {
        let table = open_table(&through).await;
        let other = dynacache::Cache::builder()
            .namespace(OTHER_KV)
            .build(table)
            .unwrap();
        let err = other.set("x", &1).await.unwrap_err();
        assert!(format!("{err}").contains("not authorized"), "{err}");
    });
    // An HTTP cache that may not store serves from the origin (a cache failure never fails the
    // request), and every one of its calls was refused.
    stand_in.take_calls();
    let out = json_lines(&through.ok(&[
        "--assume-exists",
        "--namespace",
        OTHER_HTTP,
        "get",
        &format!("{origin}/fresh"),
        "--json",
    ]));
    assert_eq!(out[0]["status"], 200);
    let calls = stand_in.take_calls();
    assert!(
        !calls.is_empty() && calls.iter().all(|c| !c.allowed),
        "{calls:?}"
    );
    assert!(
        calls
            .iter()
            .flat_map(|c| &c.leading_keys)
            .all(|k| namespace_of(k) == OTHER_HTTP),
        "{calls:?}"
    );
    // Without --assume-exists, the CLI checks the table first: DescribeTable, not granted.
    let err = through.fails(&["--kv-namespace", TENANT_KV, "kv", "get", "short"], 4);
    assert!(err.contains("dynamodb:DescribeTable"), "{err}");

    // With --allow-scan, the listing and maintenance commands work, and stay in the namespace.
    stand_in.set_policy(policy_for(&["--allow-scan"]));
    stand_in.take_calls();
    let listed = through.ok(&["--assume-exists", "--kv-namespace", TENANT_KV, "kv", "ls"]);
    for key in ["short", "counter", "big", "once", "m1"] {
        assert!(listed.lines().any(|l| l == key), "{key} not in:\n{listed}");
    }
    through.ok(&["--assume-exists", "demo", "--demo-namespace", TENANT_HTTP]);
    through.ok(&["--assume-exists", "--namespace", TENANT_HTTP, "stats"]);
    through.ok(&[
        "--assume-exists",
        "--namespace",
        TENANT_HTTP,
        "clear",
        "--yes",
    ]);
    let calls = stand_in.take_calls();
    assert!(calls.iter().all(|c| c.allowed), "{calls:?}");
    assert!(calls.iter().any(|c| c.action == "dynamodb:Scan"));
}

/// The listing of a cache through the CLI, line by line (keys, URLs, sizes, creation and expiry
/// times), sorted.
fn listing(place: &Place, extra: &[&str], args: &[&str]) -> Vec<String> {
    let mut all = extra.to_vec();
    all.extend(args);
    let mut rows: Vec<String> = place
        .json_lines(&all)
        .iter()
        .map(Value::to_string)
        .collect();
    rows.sort();
    rows
}

/// `dynacache copy`: the whole cache (HTTP responses with a 1 MiB body in chunks, key/value
/// entries with a 600 KB value in chunks) to a fresh embedded file, then the key/value entries
/// to another namespace of the same table; everything reads back the same, nothing of the
/// source changes; a copy onto itself and a copy to a missing table are refused.
fn copy_between_places(place: &Place) {
    let (origin, _) = start_origin();
    http_cli_workload(place, &[], "http", &origin);
    kv_cli_workload(place, &[], "kv");
    let big: Vec<u8> = noise(600_000, 3);
    runtime().block_on(async {
        let kv = dynacache::Cache::new(open_table(place).await).unwrap();
        kv.set("big", &big).await.unwrap();
        kv.set_with(
            "brief",
            &"soon gone",
            dynacache::Expiry::After(std::time::Duration::from_secs(3600)),
        )
        .await
        .unwrap();
    });
    let http_before = listing(place, &[], &["ls"]);
    let kv_before = listing(place, &[], &["kv", "ls"]);
    assert!(http_before.len() >= 4, "{http_before:?}");
    assert_eq!(kv_before.len(), 4, "{kv_before:?}");

    // To another engine: a fresh embedded file, table created on the way.
    let target = Place {
        engine: Engine::Embedded(tempfile::tempdir().unwrap()),
        table: "copied".into(),
    };
    let Engine::Embedded(dir) = &target.engine else {
        unreachable!()
    };
    let file = dir.path().join("cache.db");
    let file = file.to_str().unwrap();
    let lines = place.json_lines(&["copy", "--to-embedded-file", file, "--to-table", "copied"]);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0]["what"], "http");
    assert_eq!(lines[1]["what"], "kv");
    // The large values went as chunks: more items than entries.
    assert!(lines[1]["items"].as_u64().unwrap() > 4, "{lines:?}");
    assert!(lines[0]["bytes"].as_u64().unwrap() > 1 << 20, "{lines:?}");
    let there: [&str; 0] = [];
    assert_eq!(listing(&target, &there, &["ls"]), http_before);
    assert_eq!(listing(&target, &there, &["kv", "ls"]), kv_before);
    let mut get = there.to_vec();
    get.extend(["kv", "get", "short"]);
    assert_eq!(target.ok(&get).trim(), "\"value\"");
    // A response copied is a hit there, its 1 MiB body whole.
    let url = format!("{origin}/large");
    let mut get = there.to_vec();
    get.extend(["get", &url, "--json", "--only-if-cached"]);
    let hit = json_lines(&target.ok(&get)).remove(0);
    assert_eq!(hit["outcome"], "hit", "{hit}");
    assert_eq!(hit["size"], 1 << 20);
    runtime().block_on(async {
        let table = dynacache::Table::builder()
            .name("copied")
            .embedded_file(file)
            .open()
            .await
            .unwrap();
        let kv = dynacache::Cache::new(table).unwrap();
        assert_eq!(kv.get::<Vec<u8>>("big").await.unwrap(), Some(big.clone()));
        // The expiry came along.
        let left = kv.ttl("brief").await.unwrap().flatten().expect("an expiry");
        assert!(left > std::time::Duration::from_secs(3000), "{left:?}");
    });

    // To another namespace of the same table.
    let lines = place.json_lines(&["copy", "--what", "kv", "--to-kv-namespace", "kv2"]);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(
        listing(place, &["--kv-namespace", "kv2"], &["kv", "ls"]),
        kv_before
    );
    assert_eq!(listing(place, &[], &["kv", "ls"]), kv_before);
    assert_eq!(listing(place, &[], &["ls"]), http_before);
    runtime().block_on(async {
        let kv = dynacache::Cache::builder()
            .namespace("kv2")
            .build(open_table(place).await)
            .unwrap();
        assert_eq!(kv.get::<Vec<u8>>("big").await.unwrap(), Some(big.clone()));
    });

    // Onto itself: refused, nothing written.
    let err = place.fails(&["copy"], 2);
    assert!(err.contains("same"), "{err}");
    // To a table that does not exist, with no control-plane call allowed: the table error.
    let err = place.fails(
        &[
            "copy",
            "--to-table",
            "absent",
            "--to-assume-exists",
            "--what",
            "kv",
        ],
        5,
    );
    assert!(err.contains("absent"), "{err}");
}

/// `dynacache ... | head` ends quietly when the reader has gone: status 141 (what a shell
/// reports for a tool killed by SIGPIPE), nothing on stderr.
#[test]
fn a_closed_stdout_ends_the_command_quietly() {
    let bin = assert_cmd::cargo::cargo_bin("dynacache");
    let mut child = std::process::Command::new(bin)
        .args(["table", "template", "--format", "terraform"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // the reader is gone before the command prints
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(141), "{out:?}");
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `--object-store embedded`: values from `--object-threshold` up are objects in a directory
/// beside the embedded file, read back by `kv get`, deleted by `kv del`; `vacuum` answers.
#[test]
fn the_object_store_keeps_large_values_beside_the_embedded_file() {
    let place = Place::embedded();
    let Engine::Embedded(dir) = &place.engine else {
        unreachable!()
    };
    let objects = dir.path().join("cache.db.objects").join("kv");
    // Hex of noise: about 4 KB once compressed.
    let big: String = noise(4000, 9).iter().map(|b| format!("{b:02x}")).collect();
    let with = ["--object-store", "embedded", "--object-threshold", "1000"];
    let args = |rest: &[&'static str]| -> Vec<&str> {
        with.iter().copied().chain(rest.iter().copied()).collect()
    };
    place.ok(&[&args(&["kv", "set", "big"])[..], &[big.as_str()]].concat());
    place.ok(&args(&["kv", "set", "small", "1"]));
    assert_eq!(
        std::fs::read_dir(&objects).unwrap().count(),
        1,
        "one object"
    );
    let got: Value = serde_json::from_str(place.ok(&args(&["kv", "get", "big"])).trim()).unwrap();
    assert_eq!(got, Value::String(big.clone()));
    // Without the object store, the entry is a clear error, not garbage or a miss.
    let err = place.fails(&["kv", "get", "big"], 1);
    assert!(err.contains("object store"), "{err}");
    let vacuumed = place.json_lines(&args(&["vacuum"]));
    assert_eq!(vacuumed[0]["kv"], 0);
    place.ok(&args(&["kv", "del", "big"]));
    // Deleted with its entry (an emptied directory goes too).
    let left = std::fs::read_dir(&objects).map_or(0, |d| d.count());
    assert_eq!(left, 0, "deleted with its entry");
}

/// The demo with `--object-store embedded`: the 2 MiB body is one object, and the summary
/// compares what it costs with what the same demo in chunk items cost.
#[test]
fn the_demo_keeps_its_large_body_as_one_object() {
    let place = Place::embedded();
    let Engine::Embedded(dir) = &place.engine else {
        unreachable!()
    };
    let chunked = place.ok(&["demo"]);
    assert!(
        chunked.contains("the 2 MiB body took") && chunked.contains("in chunk items"),
        "{chunked}"
    );
    let text = place.ok(&["--object-store", "embedded", "demo"]);
    assert!(text.contains("2 MiB binary, one object"), "{text}");
    assert!(text.contains("the 2 MiB body is one object in"), "{text}");
    assert!(
        text.contains("pass 2: 6 of 6 responses from the cache"),
        "{text}"
    );
    assert!(
        text.contains("--object-store embedded --namespace demo ls"),
        "{text}"
    );
    let objects = dir.path().join("cache.db.objects").join("demo");
    assert_eq!(
        std::fs::read_dir(&objects).unwrap().count(),
        1,
        "one object"
    );
    // The commands it suggests see the object-backed entry.
    let listed = place.ok(&["--object-store", "embedded", "--namespace", "demo", "ls"]);
    assert!(listed.contains("/files/archive.bin"), "{listed}");
}

/// `table template` for a bucket and prefix.
const TEMPLATE_WITH_BUCKET: [&str; 4] = [
    "--object-store",
    "s3://cache-bucket/pre",
    "table",
    "template",
];

#[test]
fn templates_and_iam_cover_the_object_store_bucket() {
    let (policy, notes) = iam_policy(&[&TEMPLATE_WITH_BUCKET[..], &["--format", "iam"]].concat());
    let statements = policy["Statement"].as_array().unwrap();
    let objects = statements
        .iter()
        .find(|s| s["Sid"] == "DynacacheObjectsOfItsNamespaces")
        .expect("an object statement");
    assert_eq!(
        objects["Resource"],
        serde_json::json!([
            "arn:aws:s3:::cache-bucket/pre/http/*",
            "arn:aws:s3:::cache-bucket/pre/kv/*"
        ])
    );
    let listing = statements
        .iter()
        .find(|s| s["Sid"] == "DynacacheListingOfItsObjects")
        .expect("a listing statement");
    assert_eq!(listing["Resource"], "arn:aws:s3:::cache-bucket");
    assert_eq!(
        listing["Condition"]["StringLike"]["s3:prefix"],
        serde_json::json!(["pre/http/*", "pre/kv/*"])
    );
    assert!(notes.contains("cache-bucket"), "{notes}");
    for format in ["cloudformation", "terraform"] {
        let out = bare_cmd()
            .args(["--object-store", "s3://cache-bucket/pre"])
            .args(["table", "template", "--format", format])
            .output()
            .unwrap();
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.contains("cache-bucket"), "{format}: {text}");
        assert!(
            text.contains("dynacache-backstop"),
            "{format}: a lifecycle rule"
        );
        assert!(
            text.to_lowercase()
                .contains("abortincompletemultipartupload")
                || text.contains("abort_incomplete_multipart_upload"),
            "{format}"
        );
        let days = |text: &str| -> Vec<String> {
            text.lines()
                .map(str::trim)
                .filter(|l| l.starts_with("ExpirationInDays:") || l.starts_with("days ="))
                .map(str::to_owned)
                .collect()
        };
        assert_eq!(days(&text).len(), 1, "{format}: one expiration: {text}");
        assert!(days(&text)[0].ends_with(" 30"), "{format}: 30 by default");
        let out = bare_cmd()
            .args(["--object-store", "s3://cache-bucket/pre"])
            .args(["table", "template", "--format", format])
            .args(["--object-expiration-days", "400"])
            .output()
            .unwrap();
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(days(&text)[0].ends_with(" 400"), "{format}: {text}");
    }
    // Without a bucket, or with the IAM format, it has no meaning: said so.
    for args in [
        vec!["table", "template", "--object-expiration-days", "9"],
        [
            &TEMPLATE_WITH_BUCKET[..],
            &["--format", "iam", "--object-expiration-days", "9"],
        ]
        .concat(),
    ] {
        let out = bare_cmd().args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(err.contains("--object-expiration-days"), "{err}");
    }
}
