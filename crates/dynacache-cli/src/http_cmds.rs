//! The HTTP cache subcommands: get, ls, show, stats, rm, purge, clear.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use clap::{Args, ValueEnum};
use dynacache::http::{CacheFactsExt, CachedClient, CachedEntry, HttpCache, RequestOptions};
use futures::TryStreamExt;
use serde_json::json;

use crate::connect::{Connection, Creates};
use crate::error::{CliError, EXIT_ORIGIN};
use crate::output::{Colour, Output, epoch_secs, human_bytes, paint, print_table, time_text};

fn capacity_note(out: &Output, cache: &HttpCache) {
    let c = cache.table().consumed_capacity();
    out.note(format!(
        "capacity consumed: {:.1} read units, {:.1} write units",
        c.read_units, c.write_units
    ));
}

#[derive(Debug, Args)]
pub struct GetArgs {
    /// The URL.
    pub url: String,
    /// Write the body to this file instead of stdout.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// Revalidate a cached response even if it is fresh.
    #[arg(long)]
    pub refresh: bool,
    /// Ignore the cached response and fetch anew.
    #[arg(long)]
    pub force_refresh: bool,
    /// Answer from the cache only (exit code 3 when nothing is cached).
    #[arg(long)]
    pub only_if_cached: bool,
}

pub async fn get(conn: &Connection, out: &Output, args: GetArgs) -> Result<(), CliError> {
    let cache = conn.http(Creates::Yes).await?;
    let client = CachedClient::new(reqwest::Client::new(), cache.clone());
    let started = std::time::Instant::now();
    let request = client
        .inner()
        .get(&args.url)
        .build()
        .map_err(|e| CliError::new(format!("bad URL {:?}: {e}", args.url), 2))?;
    let options = RequestOptions {
        refresh: args.refresh,
        force_refresh: args.force_refresh,
        only_if_cached: args.only_if_cached,
        ..Default::default()
    };
    let response = client
        .execute_with(request, options)
        .await
        .map_err(|e| CliError::new(format!("the request failed: {e}"), EXIT_ORIGIN))?;
    let facts = response.cache_facts();
    let status = response.status();
    if args.only_if_cached && status == reqwest::StatusCode::GATEWAY_TIMEOUT && !facts.from_cache {
        return Err(CliError::not_found(format!(
            "{} is not in the cache",
            args.url
        )));
    }
    let body = response
        .bytes()
        .await
        .map_err(|e| CliError::new(format!("reading the body failed: {e}"), EXIT_ORIGIN))?;
    // A write that outlasted the request is still under way: let it land before exiting.
    cache.flush().await;
    let outcome = outcome(&facts);
    if out.json {
        out.json_line(&json!({
            "url": args.url,
            "status": status.as_u16(),
            "outcome": outcome,
            "from_cache": facts.from_cache,
            "revalidated": facts.revalidated,
            "stale": facts.stale,
            "cache_key": facts.cache_key,
            "created": facts.created_at.map(epoch_secs),
            "expires": facts.expires.map(epoch_secs),
            "size": body.len(),
            "ms": started.elapsed().as_secs_f64() * 1000.0,
        }));
    } else {
        out.note(format!(
            "{} {} {} {} in {:.1} ms{}",
            status,
            paint(outcome, outcome_colour(outcome)),
            human_bytes(body.len() as u64),
            facts.cache_key.as_deref().unwrap_or("(not stored)"),
            started.elapsed().as_secs_f64() * 1000.0,
            facts
                .expires
                .map(|e| format!(", expires {}", time_text(e)))
                .unwrap_or_default()
        ));
    }
    match &args.output {
        Some(path) => std::fs::write(path, &body)
            .map_err(|e| CliError::new(format!("cannot write {}: {e}", path.display()), 1))?,
        None if !out.json => {
            let mut stdout = std::io::stdout();
            if stdout.is_terminal() && std::str::from_utf8(&body).is_err() {
                out.note(format!(
                    "(binary body of {} not printed: use --output FILE)",
                    human_bytes(body.len() as u64)
                ));
            } else {
                let _ = stdout.write_all(&body);
            }
        }
        None => {}
    }
    if !status.is_success() && !status.is_redirection() {
        return Err(CliError::new(
            format!("the origin answered {status}"),
            EXIT_ORIGIN,
        ));
    }
    Ok(())
}

pub fn outcome(facts: &dynacache::http::CacheFacts) -> &'static str {
    match (facts.from_cache, facts.revalidated, facts.stale) {
        (true, true, _) => "revalidated",
        (true, _, true) => "stale",
        (true, false, false) => "hit",
        (false, ..) => "miss",
    }
}

pub fn outcome_colour(outcome: &str) -> Colour {
    match outcome {
        "hit" => Colour::Green,
        "revalidated" | "stale" => Colour::Yellow,
        _ => Colour::Dim,
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SortBy {
    Created,
    Expires,
    Size,
    Url,
    Status,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Only URLs matching this glob (`*example.com/api/*`).
    #[arg(long)]
    pub url: Option<String>,
    /// Only this status code.
    #[arg(long)]
    pub status: Option<u16>,
    /// Only expired responses.
    #[arg(long, conflicts_with = "fresh")]
    pub expired: bool,
    /// Only fresh responses.
    #[arg(long)]
    pub fresh: bool,
    /// Sort order.
    #[arg(long, value_enum, default_value = "created")]
    pub sort: SortBy,
}

fn glob(pattern: &Option<String>) -> Result<Option<globset::GlobMatcher>, CliError> {
    pattern
        .as_deref()
        .map(|p| {
            globset::Glob::new(p)
                .map(|g| g.compile_matcher())
                .map_err(|e| CliError::new(format!("bad glob {p:?}: {e}"), 2))
        })
        .transpose()
}

async fn scan_entries(
    conn: &Connection,
    out: &Output,
    cache: &HttpCache,
    keep: impl Fn(&CachedEntry) -> bool,
) -> Result<Vec<CachedEntry>, CliError> {
    let bar = out.progress("scanning");
    let mut entries = cache.entries();
    let mut kept = Vec::new();
    while let Some(e) = entries
        .try_next()
        .await
        .map_err(|e| CliError::storage(e, conn))?
    {
        bar.inc(1);
        if keep(&e) {
            kept.push(e);
        }
    }
    bar.finish_and_clear();
    Ok(kept)
}

pub async fn ls(conn: &Connection, out: &Output, args: LsArgs) -> Result<(), CliError> {
    let cache = conn.http(Creates::No).await?;
    let url_glob = glob(&args.url)?;
    let mut entries = scan_entries(conn, out, &cache, |e| {
        url_glob.as_ref().is_none_or(|g| g.is_match(&e.url))
            && args.status.is_none_or(|s| s == e.status)
            && (!args.expired || e.is_expired)
            && (!args.fresh || !e.is_expired)
    })
    .await?;
    match args.sort {
        SortBy::Created => entries.sort_by_key(|e| e.created_at),
        SortBy::Expires => entries.sort_by_key(|e| {
            e.expires
                .unwrap_or(SystemTime::UNIX_EPOCH + Duration::from_secs(u32::MAX as u64 * 8))
        }),
        SortBy::Size => entries.sort_by_key(|e| std::cmp::Reverse(e.size)),
        SortBy::Url => entries.sort_by(|a, b| a.url.cmp(&b.url)),
        SortBy::Status => entries.sort_by_key(|e| e.status),
    }
    if out.json {
        for e in &entries {
            out.json_line(&entry_json(e));
        }
        return Ok(());
    }
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            vec![
                e.method.clone(),
                e.url.clone(),
                e.status.to_string(),
                human_bytes(e.size),
                time_text(e.created_at),
                e.expires.map(time_text).unwrap_or_else(|| "never".into()),
                if e.is_expired {
                    paint("stale", Colour::Yellow)
                } else {
                    paint("fresh", Colour::Green)
                },
            ]
        })
        .collect();
    print_table(
        &[
            "METHOD", "URL", "STATUS", "SIZE", "CREATED", "EXPIRES", "STATE",
        ],
        &rows,
    );
    out.note(format!(
        "{} responses in {}",
        entries.len(),
        conn.describe()
    ));
    capacity_note(out, &cache);
    Ok(())
}

fn entry_json(e: &CachedEntry) -> serde_json::Value {
    json!({
        "key": e.key,
        "method": e.method,
        "url": e.url,
        "status": e.status,
        "size": e.size,
        "created": epoch_secs(e.created_at),
        "expires": e.expires.map(epoch_secs),
        "expired": e.is_expired,
    })
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// A cache key or a URL.
    pub target: String,
    /// Print the whole body, even when it is binary or long.
    #[arg(long)]
    pub body: bool,
}

fn key_of(cache: &HttpCache, target: &str) -> String {
    if target.contains("://") {
        cache
            .key_for_url(target)
            .unwrap_or_else(|| target.to_owned())
    } else {
        target.to_owned()
    }
}

pub async fn show(conn: &Connection, out: &Output, args: ShowArgs) -> Result<(), CliError> {
    let cache = conn.http(Creates::No).await?;
    let key = key_of(&cache, &args.target);
    let stored = cache
        .stored_response(&key)
        .await
        .map_err(|e| CliError::storage(e, conn))?
        .ok_or_else(|| CliError::not_found(format!("nothing cached for {}", args.target)))?;
    let header_map = |h: &reqwest::header::HeaderMap| -> serde_json::Value {
        let mut map = serde_json::Map::new();
        for (k, v) in h {
            let value = String::from_utf8_lossy(v.as_bytes()).into_owned();
            match map.get_mut(k.as_str()) {
                Some(serde_json::Value::Array(a)) => a.push(value.into()),
                _ => {
                    map.insert(k.as_str().to_owned(), json!([value]));
                }
            }
        }
        serde_json::Value::Object(map)
    };
    let text = std::str::from_utf8(&stored.body).ok();
    if out.json {
        let mut v = entry_json(&stored.entry);
        v["headers"] = header_map(&stored.headers);
        v["request_headers"] = header_map(&stored.request_headers);
        v["body"] = match text {
            Some(t) => json!(t),
            None => serde_json::Value::Null,
        };
        out.json_line(&v);
        return Ok(());
    }
    let e = &stored.entry;
    println!("{} {}", paint(&e.method, Colour::Bold), e.url);
    println!("key:      {}", e.key);
    println!("status:   {}", e.status);
    println!("created:  {}", time_text(e.created_at));
    println!(
        "expires:  {}{}",
        e.expires.map(time_text).unwrap_or_else(|| "never".into()),
        if e.is_expired { " (expired)" } else { "" }
    );
    println!("size:     {}", human_bytes(e.size));
    println!("\n{}", paint("request headers", Colour::Bold));
    if stored.request_headers.is_empty() {
        println!("  (none)");
    }
    for (k, v) in &stored.request_headers {
        println!("  {k}: {}", String::from_utf8_lossy(v.as_bytes()));
    }
    println!("\n{}", paint("response headers", Colour::Bold));
    for (k, v) in &stored.headers {
        println!("  {k}: {}", String::from_utf8_lossy(v.as_bytes()));
    }
    println!("\n{}", paint("body", Colour::Bold));
    match text {
        Some(t) if args.body || t.len() <= 4096 => println!("{t}"),
        Some(t) => println!(
            "{}…\n({} in all; --body prints it whole)",
            &t[..t.floor_char_boundary(4096)],
            human_bytes(e.size)
        ),
        None if args.body => {
            let _ = std::io::stdout().write_all(&stored.body);
        }
        None => println!(
            "(binary, {}; first bytes: {})",
            human_bytes(e.size),
            stored
                .body
                .iter()
                .take(16)
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(" ")
        ),
    }
    Ok(())
}

pub async fn stats(conn: &Connection, out: &Output) -> Result<(), CliError> {
    let cache = conn.http(Creates::No).await?;
    let bar = out.progress("reading every item");
    let s = cache
        .storage_stats()
        .await
        .map_err(|e| CliError::storage(e, conn))?;
    bar.finish_and_clear();
    // One more scan, of the listed attributes only, for the responses and their body sizes.
    let (responses, body_bytes) = cache
        .entries()
        .try_fold((0u64, 0u64), |(n, bytes), e| {
            futures::future::ready(Ok((n + 1, bytes + e.size)))
        })
        .await
        .map_err(|e| CliError::storage(e, conn))?;
    let cost = s.monthly_cost(0.25);
    if out.json {
        out.json_line(&json!({
            "table": conn.table,
            "namespace": conn.namespace,
            "responses": responses,
            "items": s.entries + s.chunk_items,
            "expired_not_swept": s.expired,
            "chunked_responses": s.chunked_entries,
            "chunk_items": s.chunk_items,
            "object_responses": s.object_entries,
            "object_bytes": s.object_bytes,
            "body_bytes": body_bytes,
            "stored_bytes": s.stored_bytes,
            "largest": s.largest.iter().map(|(l, b)| json!({"url": l, "stored_bytes": b})).collect::<Vec<_>>(),
            "monthly_storage_cost_usd": cost,
        }));
        return Ok(());
    }
    println!("{}", paint(&conn.describe(), Colour::Bold));
    println!("namespace:            {}", conn.namespace);
    println!("responses:            {responses}");
    println!(
        "items:                {} ({} chunk items)",
        s.entries + s.chunk_items,
        s.chunk_items
    );
    println!("expired, not swept:   {}", s.expired);
    println!("chunked responses:    {}", s.chunked_entries);
    if s.object_entries > 0 {
        println!(
            "in the object store:  {} responses, {}",
            s.object_entries,
            human_bytes(s.object_bytes)
        );
    }
    println!("body bytes:           {}", human_bytes(body_bytes));
    println!(
        "stored bytes:         {} (compressed, with metadata)",
        human_bytes(s.stored_bytes)
    );
    println!("storage cost:         ${cost:.4} a month at $0.25/GB-month");
    if !s.largest.is_empty() {
        println!("largest:");
        for (label, bytes) in &s.largest {
            println!("  {:>10}  {label}", human_bytes(*bytes));
        }
    }
    capacity_note(out, &cache);
    Ok(())
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// Cache keys or URLs.
    #[arg(required = true)]
    pub targets: Vec<String>,
}

pub async fn rm(conn: &Connection, out: &Output, args: RmArgs) -> Result<(), CliError> {
    let cache = conn.http(Creates::No).await?;
    let keys: Vec<String> = args.targets.iter().map(|t| key_of(&cache, t)).collect();
    let deleted = cache
        .delete_keys(&keys)
        .await
        .map_err(|e| CliError::storage(e, conn))?;
    if out.json {
        out.json_line(&json!({"deleted": deleted, "asked": keys.len()}));
    } else {
        println!("deleted {deleted} of {} responses", keys.len());
        capacity_note(out, &cache);
    }
    if deleted == 0 {
        return Err(CliError::not_found("none of them was cached"));
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct PurgeArgs {
    /// Expired responses.
    #[arg(long)]
    pub expired: bool,
    /// Responses fetched longer ago than this (`30m`, `7d`).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub older_than: Option<Duration>,
    /// Responses whose URL matches this glob.
    #[arg(long)]
    pub url: Option<String>,
    /// Every response stored with this tag (named in `--tag-field` fields, by default
    /// `Surrogate-Key` and `Cache-Tag`, as `dynacache serve` stores them): read from the tag's
    /// index, no scan. Not combined with the other filters.
    #[arg(long, conflicts_with_all = ["expired", "older_than", "url", "dry_run"])]
    pub tag: Option<String>,
    /// List what would be deleted, delete nothing.
    #[arg(long)]
    pub dry_run: bool,
}

pub async fn purge(conn: &Connection, out: &Output, args: PurgeArgs) -> Result<(), CliError> {
    if let Some(tag) = &args.tag {
        let cache = conn.http(Creates::No).await?;
        let deleted = cache
            .purge_tag(tag)
            .await
            .map_err(|e| CliError::storage(e, conn))?;
        report_deleted(out, &cache, "deleted", deleted, "responses");
        return Ok(());
    }
    if !args.expired && args.older_than.is_none() && args.url.is_none() {
        return Err(CliError::new(
            "say what to purge: --expired, --older-than AGE and/or --url GLOB (all must match), or --tag TAG",
            2,
        ));
    }
    let cache = conn.http(Creates::No).await?;
    let url_glob = glob(&args.url)?;
    let cutoff = args.older_than.map(|age| SystemTime::now() - age);
    let doomed = scan_entries(conn, out, &cache, |e| {
        (!args.expired || e.is_expired)
            && cutoff.is_none_or(|c| e.created_at < c)
            && url_glob.as_ref().is_none_or(|g| g.is_match(&e.url))
    })
    .await?;
    if args.dry_run {
        for e in &doomed {
            if out.json {
                out.json_line(&entry_json(e));
            } else {
                println!("would delete {} {}", e.key, e.url);
            }
        }
        out.note(format!(
            "{} responses would be deleted (dry run)",
            doomed.len()
        ));
        return Ok(());
    }
    let bar = out.progress("deleting");
    let deleted = cache
        .delete_keys(doomed.iter().map(|e| e.key.as_str()))
        .await
        .map_err(|e| CliError::storage(e, conn))?;
    bar.finish_and_clear();
    report_deleted(out, &cache, "deleted", deleted, "responses");
    Ok(())
}

/// The summary of a deletion: a JSON line, or a sentence and the capacity it consumed.
fn report_deleted(out: &Output, cache: &HttpCache, json_field: &str, count: u64, what: &str) {
    if out.json {
        out.json_line(&json!({ json_field: count }));
    } else {
        println!("deleted {count} {what}");
        capacity_note(out, cache);
    }
}

#[derive(Debug, Args)]
pub struct ClearArgs {
    /// Do not ask for confirmation.
    #[arg(long, short)]
    pub yes: bool,
}

pub async fn clear(conn: &Connection, out: &Output, args: ClearArgs) -> Result<(), CliError> {
    if !args.yes {
        if !std::io::stdin().is_terminal() {
            return Err(CliError::new(
                "clear deletes every cached response: pass --yes to confirm",
                2,
            ));
        }
        eprint!(
            "Delete every item of namespace {:?} in {}? [y/N] ",
            conn.namespace,
            conn.describe()
        );
        let mut answer = [0u8; 1];
        let _ = std::io::stdin().read(&mut answer);
        if !matches!(answer[0], b'y' | b'Y') {
            return Err(CliError::new("not cleared", 1));
        }
    }
    let cache = conn.http(Creates::No).await?;
    let bar = out.progress("deleting");
    let deleted = cache
        .clear()
        .await
        .map_err(|e| CliError::storage(e, conn))?;
    bar.finish_and_clear();
    report_deleted(out, &cache, "deleted_items", deleted, "items");
    Ok(())
}

/// `dynacache vacuum`: chunk items and objects no entry names, in both namespaces.
pub async fn vacuum(conn: &Connection, out: &Output) -> Result<(), CliError> {
    let http = conn.http(Creates::No).await?;
    let kv = conn.kv(Creates::No).await?;
    let bar = out.progress("vacuuming");
    let from_http = http
        .vacuum()
        .await
        .map_err(|e| CliError::storage(e, conn))?;
    let from_kv = kv.vacuum().await.map_err(|e| CliError::storage(e, conn))?;
    bar.finish_and_clear();
    if out.json {
        out.json_line(&json!({ "http": from_http, "kv": from_kv }));
    } else {
        println!(
            "deleted {from_http} unreferenced chunk items and objects of namespace {:?}, {from_kv} of {:?}",
            conn.namespace, conn.kv_namespace
        );
    }
    Ok(())
}
