//! `dynacache demo`: a local origin, a set of URLs fetched through the cache twice.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use clap::Args;
use dynacache::http::{CacheFactsExt, CachedClient, HttpCache};
use serde_json::json;

use crate::connect::{Connection, Creates};
use crate::error::CliError;
use crate::http_cmds::{outcome, outcome_colour};
use crate::output::{Colour, Output, human_bytes, paint, print_table};

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// The namespace the demo writes to (cleared when the demo starts).
    #[arg(long, default_value = "demo")]
    pub demo_namespace: String,
    /// How many times to fetch the set of URLs.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=10))]
    pub passes: u32,
}

/// What the origin counts.
#[derive(Default)]
struct Origin {
    requests: AtomicU64,
    not_modified: AtomicU64,
}

const LARGE_BODY: usize = 2 * 1024 * 1024;

fn catalog() -> String {
    let items: Vec<_> = (0..160)
        .map(|i| {
            json!({
                "id": i,
                "name": format!("Item number {i}"),
                "price_cents": 199 + i * 37 % 1000,
                "tags": ["demo", if i % 2 == 0 { "even" } else { "odd" }],
                "description": "A product of the demo origin, served with Cache-Control: max-age=300.",
            })
        })
        .collect();
    json!({ "items": items }).to_string()
}

fn large_body() -> Vec<u8> {
    // Incompressible (xorshift), so that it is stored as chunk items, not as one compressed item.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut body = Vec::with_capacity(LARGE_BODY);
    while body.len() < LARGE_BODY {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        body.extend_from_slice(&state.to_le_bytes());
    }
    body.truncate(LARGE_BODY);
    body
}

fn router(origin: Arc<Origin>) -> Router {
    let catalog = catalog();
    let large = Arc::new(large_body());
    Router::new()
        .route(
            "/api/catalog.json",
            get(move || async move {
                (
                    [
                        (header::CONTENT_TYPE, "application/json"),
                        (header::CACHE_CONTROL, "max-age=300"),
                    ],
                    catalog,
                )
            }),
        )
        .route(
            "/files/archive.bin",
            get(move || {
                let large = large.clone();
                async move {
                    (
                        [
                            (header::CONTENT_TYPE, "application/octet-stream"),
                            (header::CACHE_CONTROL, "max-age=300"),
                        ],
                        large.as_ref().clone(),
                    )
                }
            }),
        )
        .route("/api/profile", get(profile))
        .route("/old-home", get(|| async { Redirect::permanent("/home") }))
        .route(
            "/home",
            get(|| async {
                (
                    [
                        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                        (header::CACHE_CONTROL, "max-age=300"),
                    ],
                    "<!doctype html><title>home</title><h1>Welcome home</h1>",
                )
            }),
        )
        .route("/api/greeting", get(greeting))
        .layer(axum::middleware::from_fn_with_state(
            origin.clone(),
            count_requests,
        ))
        .with_state(origin)
}

async fn count_requests(
    State(origin): State<Arc<Origin>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    origin.requests.fetch_add(1, Ordering::Relaxed);
    next.run(request).await
}

async fn profile(State(origin): State<Arc<Origin>>, headers: HeaderMap) -> Response {
    const ETAG: &str = "\"profile-v1\"";
    let etag_header = [
        (header::ETAG, ETAG),
        (header::CACHE_CONTROL, "no-cache"),
        (header::CONTENT_TYPE, "application/json"),
    ];
    if headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == ETAG.as_bytes())
    {
        origin.not_modified.fetch_add(1, Ordering::Relaxed);
        return (StatusCode::NOT_MODIFIED, etag_header).into_response();
    }
    (etag_header, r#"{"user":"demo","plan":"free"}"#).into_response()
}

async fn greeting(headers: HeaderMap) -> Response {
    let lang = headers
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("en");
    let text = if lang.starts_with("fr") {
        "Bonjour"
    } else {
        "Hello"
    };
    let mut response = (
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        text,
    )
        .into_response();
    response
        .headers_mut()
        .insert(header::VARY, HeaderValue::from_static("Accept-Language"));
    response
}

/// One URL of the demo, with the header that makes it a variant.
struct Fetch {
    label: &'static str,
    path: &'static str,
    accept_language: Option<&'static str>,
}

/// The 2 MiB body: in chunk items, or one object with an object store.
const LARGE_PATH: &str = "/files/archive.bin";
const LARGE_LABEL: &str = "2 MiB binary";

const FETCHES: &[Fetch] = &[
    Fetch {
        label: "JSON, max-age=300",
        path: "/api/catalog.json",
        accept_language: None,
    },
    Fetch {
        label: LARGE_LABEL,
        path: LARGE_PATH,
        accept_language: None,
    },
    Fetch {
        label: "ETag + no-cache",
        path: "/api/profile",
        accept_language: None,
    },
    Fetch {
        label: "301 redirect",
        path: "/old-home",
        accept_language: None,
    },
    Fetch {
        label: "Vary: Accept-Language (en)",
        path: "/api/greeting",
        accept_language: Some("en"),
    },
    Fetch {
        label: "Vary: Accept-Language (fr)",
        path: "/api/greeting",
        accept_language: Some("fr"),
    },
];

pub async fn run(conn: &Connection, out: &Output, args: DemoArgs) -> Result<(), CliError> {
    let origin = Arc::new(Origin::default());
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .map_err(|e| CliError::new(format!("cannot start the local origin: {e}"), 1))?;
    let addr = listener
        .local_addr()
        .map_err(|e| CliError::new(format!("cannot start the local origin: {e}"), 1))?;
    let app = router(origin.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    let mut conn_demo = conn.clone();
    conn_demo.namespace = args.demo_namespace.clone();
    let conn = &conn_demo;
    out.note(format!(
        "dynacache demo: origin at http://{addr}, cache in {}, namespace {:?}",
        conn.describe(),
        conn.namespace
    ));
    let cache: HttpCache = conn.http(Creates::Yes).await?;
    cache
        .clear()
        .await
        .map_err(|e| CliError::storage(e, conn))?;
    let client = CachedClient::new(reqwest::Client::new(), cache.clone());

    // With an object store, the large body is one object (too large for one item, it always is).
    let large_objects = cache.object_store();
    let large_label = match large_objects {
        Some(_) => format!("{LARGE_LABEL}, one object"),
        None => format!("{LARGE_LABEL}, in chunks"),
    };
    // The large body's units: to store it (the first pass) and per hit (the last).
    let (mut large_store, mut large_hit) = (None, None);
    let mut rows = Vec::new();
    let mut from_cache_by_pass = vec![0usize; args.passes as usize];
    let mut origin_by_pass = Vec::new();
    for pass in 1..=args.passes {
        let origin_before = origin.requests.load(Ordering::Relaxed);
        for fetch in FETCHES {
            let url = format!("http://{addr}{}", fetch.path);
            let mut request = client.get(&url);
            if let Some(lang) = fetch.accept_language {
                request = request.header(header::ACCEPT_LANGUAGE.as_str(), lang);
            }
            let before = cache.table().consumed_capacity();
            let started = Instant::now();
            let response = request
                .send()
                .await
                .map_err(|e| CliError::new(format!("{url}: {e}"), crate::error::EXIT_ORIGIN))?;
            let facts = response.cache_facts();
            let status = response.status();
            let final_url = response.url().to_string();
            let body = response
                .bytes()
                .await
                .map_err(|e| CliError::new(format!("{url}: {e}"), crate::error::EXIT_ORIGIN))?;
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            // Writes that outlast the request go on in the background: count them with it.
            cache.flush().await;
            let after = cache.table().consumed_capacity();
            let rcu = after.read_units - before.read_units;
            let wcu = after.write_units - before.write_units;
            let outcome = outcome(&facts);
            if facts.from_cache {
                from_cache_by_pass[pass as usize - 1] += 1;
            }
            if fetch.path == LARGE_PATH {
                if facts.from_cache {
                    large_hit = Some(rcu);
                } else {
                    large_store.get_or_insert(wcu);
                }
            }
            let label = match fetch.path {
                LARGE_PATH => large_label.as_str(),
                _ => fetch.label,
            };
            if out.json {
                out.json_line(&json!({
                    "pass": pass,
                    "request": label,
                    "url": url,
                    "final_url": final_url,
                    "status": status.as_u16(),
                    "outcome": outcome,
                    "from_cache": facts.from_cache,
                    "revalidated": facts.revalidated,
                    "size": body.len(),
                    "ms": ms,
                    "read_units": rcu,
                    "write_units": wcu,
                    "cache_key": facts.cache_key,
                }));
            }
            rows.push(vec![
                pass.to_string(),
                label.to_owned(),
                fetch.path.to_owned(),
                status.as_u16().to_string(),
                human_bytes(body.len() as u64),
                paint(outcome, outcome_colour(outcome)),
                format!("{ms:.1} ms"),
                format!("{rcu:.1} / {wcu:.1}"),
            ]);
        }
        origin_by_pass.push(origin.requests.load(Ordering::Relaxed) - origin_before);
    }
    if out.json {
        return Ok(());
    }
    print_table(
        &[
            "PASS",
            "REQUEST",
            "PATH",
            "STATUS",
            "SIZE",
            "CACHE",
            "LATENCY",
            "RCU / WCU",
        ],
        &rows,
    );
    println!();
    for (i, (hits, origin_requests)) in from_cache_by_pass.iter().zip(&origin_by_pass).enumerate() {
        println!(
            "pass {}: {hits} of {} responses from the cache, {origin_requests} requests reached the origin",
            i + 1,
            FETCHES.len(),
        );
    }
    println!(
        "{} of the origin's answers were 304 Not Modified (revalidations, no body sent)",
        origin.not_modified.load(Ordering::Relaxed)
    );
    let total = cache.table().consumed_capacity();
    println!(
        "capacity consumed in all: {:.1} read units, {:.1} write units{}",
        total.read_units,
        total.write_units,
        if total.read_units + total.write_units == 0.0 {
            " (this engine reports none)"
        } else {
            ""
        }
    );
    if let (Some(stored), Some(hit)) = (large_store, large_hit)
        && total.read_units + total.write_units > 0.0
    {
        match large_objects {
            Some(objects) => println!(
                "the 2 MiB body is one object in {}: {stored:.1} write units and one PUT to \
                 store it, {hit:.1} read units and one GET per hit (run the demo without \
                 --object-store to compare)",
                objects.url()
            ),
            None => println!(
                "the 2 MiB body took {stored:.1} write units to store in chunk items and \
                 {hit:.1} read units per hit; `--object-store embedded` (or s3://bucket/prefix) \
                 keeps it as one object instead: one PUT, one GET per hit"
            ),
        }
    }
    println!();
    println!("{}", paint("Where the data lives", Colour::Bold));
    println!("  {}, namespace {:?}", conn.describe(), conn.namespace);
    if let Some(objects) = large_objects {
        println!("  bodies too large for one item: {}", objects.url());
    }
    println!();
    println!("{}", paint("Look inside", Colour::Bold));
    let prefix = connection_flags(conn);
    println!("  dynacache{prefix} ls");
    println!("  dynacache{prefix} show http://{addr}/api/catalog.json");
    println!("  dynacache{prefix} stats");
    println!("  dynacache{prefix} purge --expired --dry-run");
    println!("  dynacache{prefix} table describe");
    Ok(())
}

/// The flags that point another command at the same place as this one.
fn connection_flags(conn: &Connection) -> String {
    let mut flags = String::new();
    if let Some(url) = &conn.endpoint_url {
        flags.push_str(&format!(" --endpoint-url {url}"));
    } else if conn.aws {
        flags.push_str(" --aws");
        if let Some(r) = &conn.region {
            flags.push_str(&format!(" --region {r}"));
        }
    } else if conn.embedded_file.is_some() {
        flags.push_str(&format!(
            " --embedded-file {}",
            conn.embedded_path().display()
        ));
    }
    if let Some(objects) = &conn.object_store {
        flags.push_str(&format!(" --object-store {objects}"));
        if let Some(url) = &conn.object_store_endpoint_url {
            flags.push_str(&format!(" --object-store-endpoint-url {url}"));
        }
    }
    if conn.table != "dynacache" {
        flags.push_str(&format!(" --table {}", conn.table));
    }
    flags.push_str(&format!(" --namespace {}", conn.namespace));
    flags
}
