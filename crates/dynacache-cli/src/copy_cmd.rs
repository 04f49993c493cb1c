//! `dynacache copy`: a namespace to another table, engine or namespace.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use dynacache::CopyProgress;
use serde_json::json;

use crate::connect::{Connection, Creates};
use crate::error::CliError;
use crate::output::{Output, human_bytes};

/// What `copy` copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum What {
    /// The HTTP responses of `--namespace`.
    Http,
    /// The key/value entries of `--kv-namespace`.
    Kv,
    /// Both.
    Both,
}

#[derive(Debug, Args)]
pub struct CopyArgs {
    /// What to copy.
    #[arg(long, value_enum, default_value = "both")]
    what: What,
    /// The target table [default: the source's --table].
    #[arg(long)]
    to_table: Option<String>,
    /// The target is this DynamoDB-compatible endpoint.
    #[arg(long, conflicts_with_all = ["to_aws", "to_embedded_file"])]
    to_endpoint_url: Option<String>,
    /// The target is AWS DynamoDB (credentials from the standard chain).
    #[arg(long, conflicts_with = "to_embedded_file")]
    to_aws: bool,
    /// The target is the embedded engine persisted to this file.
    #[arg(long)]
    to_embedded_file: Option<PathBuf>,
    /// The target's AWS region [default: the source's].
    #[arg(long)]
    to_region: Option<String>,
    /// The target's AWS profile [default: the source's].
    #[arg(long)]
    to_profile: Option<String>,
    /// The namespace HTTP responses are copied to [default: the source's].
    #[arg(long)]
    to_namespace: Option<String>,
    /// The namespace key/value entries are copied to [default: the source's].
    #[arg(long)]
    to_kv_namespace: Option<String>,
    /// Make no control-plane call on the target: its table is assumed to exist.
    #[arg(long)]
    to_assume_exists: bool,
    /// The target's object store (s3://bucket/prefix, a directory, or `embedded`) [default: the
    /// source's --object-store]. Values in the source's object store are copied into it.
    #[arg(long)]
    to_object_store: Option<String>,
    /// The target object store's S3-compatible endpoint [default: the source's].
    #[arg(long)]
    to_object_store_endpoint_url: Option<String>,
}

impl CopyArgs {
    /// The target's connection: the source's, changed by the `--to-*` options.
    fn target(&self, source: &Connection) -> Connection {
        let mut to = source.clone();
        if let Some(url) = &self.to_endpoint_url {
            to.endpoint_url = Some(url.clone());
            to.aws = false;
        } else if self.to_aws {
            to.endpoint_url = None;
            to.aws = true;
        } else if let Some(file) = &self.to_embedded_file {
            to.endpoint_url = None;
            to.aws = false;
            to.embedded_file = Some(file.clone());
        }
        if let Some(t) = &self.to_table {
            to.table = t.clone();
        }
        if let Some(o) = &self.to_object_store {
            to.object_store = Some(o.clone());
        }
        if let Some(url) = &self.to_object_store_endpoint_url {
            to.object_store_endpoint_url = Some(url.clone());
        }
        if let Some(r) = &self.to_region {
            to.region = Some(r.clone());
        }
        if let Some(p) = &self.to_profile {
            to.profile = Some(p.clone());
        }
        if let Some(ns) = &self.to_namespace {
            to.namespace = ns.clone();
        }
        if let Some(ns) = &self.to_kv_namespace {
            to.kv_namespace = ns.clone();
        }
        to.assume_exists = self.to_assume_exists;
        to
    }
}

/// Whether two connections name the same table in the same place.
fn same_table(a: &Connection, b: &Connection) -> bool {
    a.table == b.table
        && a.endpoint_url == b.endpoint_url
        && a.aws == b.aws
        && (!a.aws || a.region == b.region)
        && (!a.is_embedded() || same_file(&a.embedded_path(), &b.embedded_path()))
}

fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

pub async fn run(source: &Connection, out: &Output, args: CopyArgs) -> Result<(), CliError> {
    let target = args.target(source);
    let copies_http = matches!(args.what, What::Http | What::Both);
    let copies_kv = matches!(args.what, What::Kv | What::Both);
    if same_table(source, &target)
        && (!copies_http || source.namespace == target.namespace)
        && (!copies_kv || source.kv_namespace == target.kv_namespace)
    {
        return Err(CliError::new(
            "the source and the target are the same namespace of the same table",
            2,
        )
        .hint("name another table (--to-table), engine (--to-endpoint-url, --to-aws, --to-embedded-file) or namespace (--to-namespace, --to-kv-namespace)"));
    }
    // Both tables open before anything is copied, so that a wrong target is reported at once.
    let from = source.table(Creates::No).await?;
    let to = if same_table(source, &target) && source.is_embedded() {
        // One embedded engine per file: the same table, seen from both sides.
        from.clone()
    } else {
        target.table(Creates::Yes).await?
    };
    let plans = [
        (
            copies_http,
            "HTTP responses",
            &source.namespace,
            &target.namespace,
        ),
        (
            copies_kv,
            "key/value entries",
            &source.kv_namespace,
            &target.kv_namespace,
        ),
    ];
    for (wanted, what, from_ns, to_ns) in plans {
        if !wanted {
            continue;
        }
        if same_table(source, &target) && from_ns == to_ns {
            continue;
        }
        let bar = out.progress(&format!("copying {what} ({from_ns} → {to_ns})"));
        let show = |p: CopyProgress| {
            bar.set_position(p.items);
            bar.set_message(format!(
                "copying {what} ({from_ns} → {to_ns}), {}",
                human_bytes(p.bytes)
            ));
        };
        let copied = if what.starts_with("HTTP") {
            let a = source.http_on(from.clone(), from_ns).await?;
            let b = target.http_on(to.clone(), to_ns).await?;
            a.copy_to(&b, show).await
        } else {
            let a = source.kv_on(from.clone(), from_ns).await?;
            let b = target.kv_on(to.clone(), to_ns).await?;
            a.copy_to(&b, show).await
        };
        bar.finish_and_clear();
        // An error may come from either side; the message names the table it happened on.
        let copied = copied.map_err(|e| CliError::storage(e, &target))?;
        if out.json {
            out.json_line(&json!({
                "what": if what.starts_with("HTTP") { "http" } else { "kv" },
                "from_namespace": from_ns,
                "to_namespace": to_ns,
                "items": copied.items,
                "bytes": copied.bytes,
            }));
        } else if !out.quiet {
            println!(
                "copied {} items ({}) of {what} from namespace {from_ns:?} to {to_ns:?}",
                copied.items,
                human_bytes(copied.bytes)
            );
        }
    }
    out.note(format!(
        "from {} to {}",
        source.describe(),
        target.describe()
    ));
    Ok(())
}
