//! Metrics through the [`metrics`](https://docs.rs/metrics) facade: dynacache records, the
//! application chooses an exporter (Prometheus, OpenTelemetry, StatsD, ...). Without one,
//! recording costs next to nothing.
//!
//! | name | kind | labels | what |
//! |---|---|---|---|
//! | `dynacache_hits_total` | counter | `cache` (`kv`, `http`), `tier` (`memory`, `table`) | reads answered from the cache |
//! | `dynacache_misses_total` | counter | `cache` | reads that found nothing usable |
//! | `dynacache_stores_total` | counter | `cache` | values and responses written |
//! | `dynacache_revalidations_total` | counter | | HTTP responses revalidated with a 304 |
//! | `dynacache_stale_served_total` | counter | `cache` | stale values or responses served |
//! | `dynacache_coalesced_total` | counter | `cache`, `scope` (`local`, `fleet`) | callers that waited for another's computation |
//! | `dynacache_storage_errors_total` | counter | `kind` | storage failures, by kind |
//! | `dynacache_verification_failures_total` | counter | | items that failed signature verification |
//! | `dynacache_read_units_total`, `dynacache_write_units_total` | counter | | capacity consumed, in thousandths of a unit |
//! | `dynacache_storage_seconds` | histogram | `op` (`GetItem`, `PutItem`, ...) | latency of each DynamoDB call |
//! | `dynacache_breaker_open` | gauge | `table` | 1 while the circuit breaker is open |
//! | `dynacache_in_process_bytes`, `dynacache_in_process_entries` | gauge | `cache` | what the in-process tier holds |
//!
//! `examples/prometheus.rs` wires a Prometheus exporter.

use std::time::Duration;

pub(crate) fn hit(cache: &'static str, tier: &'static str) {
    metrics::counter!("dynacache_hits_total", "cache" => cache, "tier" => tier).increment(1);
}

pub(crate) fn miss(cache: &'static str) {
    metrics::counter!("dynacache_misses_total", "cache" => cache).increment(1);
}

pub(crate) fn stored(cache: &'static str) {
    metrics::counter!("dynacache_stores_total", "cache" => cache).increment(1);
}

pub(crate) fn revalidated() {
    metrics::counter!("dynacache_revalidations_total").increment(1);
}

pub(crate) fn stale_served(cache: &'static str) {
    metrics::counter!("dynacache_stale_served_total", "cache" => cache).increment(1);
}

pub(crate) fn coalesced(cache: &'static str, scope: &'static str) {
    metrics::counter!("dynacache_coalesced_total", "cache" => cache, "scope" => scope).increment(1);
}

pub(crate) fn storage_error(e: &crate::Error) {
    let kind = if e.is_throttled() {
        "throttled"
    } else if e.is_timeout() {
        "timeout"
    } else if e.is_unreachable() {
        "unreachable"
    } else if e.is_unavailable() {
        "unavailable"
    } else if e.is_corrupt() {
        "corrupt"
    } else if e.is_table_not_found() {
        "table_not_found"
    } else {
        "other"
    };
    metrics::counter!("dynacache_storage_errors_total", "kind" => kind).increment(1);
}

pub(crate) fn verification_failure() {
    metrics::counter!("dynacache_verification_failures_total").increment(1);
}

pub(crate) fn capacity(read_units: f64, write_units: f64) {
    if read_units > 0.0 {
        metrics::counter!("dynacache_read_units_total").increment((read_units * 1000.0) as u64);
    }
    if write_units > 0.0 {
        metrics::counter!("dynacache_write_units_total").increment((write_units * 1000.0) as u64);
    }
}

pub(crate) fn storage_call(op: &'static str, took: Duration) {
    metrics::histogram!("dynacache_storage_seconds", "op" => op).record(took.as_secs_f64());
}

pub(crate) fn breaker_open(table: &str, open: bool) {
    metrics::gauge!("dynacache_breaker_open", "table" => table.to_owned()).set(if open {
        1.0
    } else {
        0.0
    });
}

pub(crate) fn in_process(cache: &'static str, usage: crate::InProcessUsage) {
    metrics::gauge!("dynacache_in_process_bytes", "cache" => cache).set(usage.bytes as f64);
    metrics::gauge!("dynacache_in_process_entries", "cache" => cache).set(usage.entries as f64);
}
