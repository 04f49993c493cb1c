//! `dynacache kv get|set|del|ls`.

use std::time::Duration;

use clap::Subcommand;
use dynacache::Expiry;
use futures::TryStreamExt;
use serde_json::json;

use crate::connect::{Connection, Creates};
use crate::error::CliError;
use crate::output::Output;

#[derive(Debug, Subcommand)]
pub enum KvCommand {
    /// Print a value as JSON (exit code 3 when missing or expired).
    #[command(after_help = "Example:\n  dynacache kv get session:42")]
    Get {
        /// The key.
        key: String,
    },
    /// Store a value: JSON when it parses as JSON, else a string.
    #[command(
        after_help = "Example:\n  dynacache kv set greeting '\"hello\"' --ttl 10m\n  dynacache kv set limits '{\"rps\": 10}'"
    )]
    Set {
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// Expire after this long (`30s`, `10m`, `7d`); default: never.
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Option<Duration>,
    },
    /// Delete keys.
    #[command(after_help = "Example:\n  dynacache kv del session:42 session:43")]
    Del {
        /// The keys.
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// List live keys.
    #[command(after_help = "Example:\n  dynacache kv ls --json")]
    Ls,
}

pub async fn run(conn: &Connection, out: &Output, cmd: KvCommand) -> Result<(), CliError> {
    match cmd {
        KvCommand::Get { key } => {
            let cache = conn.kv(Creates::No).await?;
            match cache
                .get::<serde_json::Value>(&key)
                .await
                .map_err(|e| CliError::storage(e, conn))?
            {
                Some(v) => {
                    println!("{v}");
                    Ok(())
                }
                None => Err(CliError::not_found(format!("no value for key {key:?}"))),
            }
        }
        KvCommand::Set { key, value, ttl } => {
            let cache = conn.kv(Creates::Yes).await?;
            let value: serde_json::Value =
                serde_json::from_str(&value).unwrap_or(serde_json::Value::String(value));
            let expiry = ttl.map_or(Expiry::Never, Expiry::After);
            cache
                .set_with(&key, &value, expiry)
                .await
                .map_err(|e| CliError::storage(e, conn))?;
            out.note(format!("stored {key:?}"));
            Ok(())
        }
        KvCommand::Del { keys } => {
            let cache = conn.kv(Creates::No).await?;
            let mut deleted = 0;
            for k in &keys {
                if cache
                    .delete(k)
                    .await
                    .map_err(|e| CliError::storage(e, conn))?
                {
                    deleted += 1;
                }
            }
            if out.json {
                out.json_line(&json!({"deleted": deleted}));
            } else {
                println!("deleted {deleted} of {} keys", keys.len());
            }
            if deleted == 0 {
                return Err(CliError::not_found("none of the keys had a value"));
            }
            Ok(())
        }
        KvCommand::Ls => {
            let cache = conn.kv(Creates::No).await?;
            let bar = out.progress("scanning");
            let mut keys: Vec<String> = cache
                .keys()
                .inspect_ok(|_| bar.inc(1))
                .map_ok(|k| k.to_string())
                .try_collect()
                .await
                .map_err(|e| CliError::storage(e, conn))?;
            bar.finish_and_clear();
            keys.sort();
            for k in &keys {
                if out.json {
                    out.json_line(&json!({ "key": k }));
                } else {
                    println!("{k}");
                }
            }
            out.note(format!("{} keys", keys.len()));
            Ok(())
        }
    }
}
