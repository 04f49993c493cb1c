//! The `dynacache` command-line tool.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod connect;
mod copy_cmd;
mod demo;
mod error;
mod http_cmds;
mod iam;
mod kv_cmds;
mod output;
mod serve;
mod table_cmds;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use connect::Connection;
use output::Output;

/// Inspect and maintain a dynacache table: HTTP responses, key/value entries, and the table
/// itself, on AWS DynamoDB, DynamoDB Local, or the embedded engine (the default).
#[derive(Debug, Parser)]
#[command(
    name = "dynacache",
    version,
    after_help = "Examples:\n  dynacache demo\n  dynacache get https://example.com/ --output page.html\n  dynacache ls --url '*example.com*' --sort size\n  dynacache --endpoint-url http://127.0.0.1:8000 stats\n  dynacache --aws --region eu-west-1 --table prod_cache table validate\n  dynacache table template --format iam --namespace tenant-a > policy.json\n\nExit codes: 0 success, 1 error, 2 bad usage, 3 not found, 4 DynamoDB unreachable or \
credentials refused, 5 table missing or with the wrong schema, 6 the origin failed."
)]
struct Cli {
    #[command(flatten)]
    connection: Connection,
    #[command(flatten)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show the whole product on a local origin: fetch URLs through the cache twice.
    #[command(
        after_help = "Example:\n  dynacache demo\n  dynacache --endpoint-url http://127.0.0.1:8000 demo"
    )]
    Demo(demo::DemoArgs),
    /// Fetch a URL through the cache and print status and cache facts.
    #[command(after_help = "Example:\n  dynacache get https://example.com/ --output page.html")]
    Get(http_cmds::GetArgs),
    /// List cached responses.
    #[command(
        after_help = "Example:\n  dynacache ls --url '*api*' --status 200 --sort created\n  dynacache ls --expired --json"
    )]
    Ls(http_cmds::LsArgs),
    /// Show one cached response: metadata, request, headers, body.
    #[command(
        after_help = "Example:\n  dynacache show https://example.com/\n  dynacache show 3f2a9c0e5b1d4e7f8a6b2c1d0e9f8a7b"
    )]
    Show(http_cmds::ShowArgs),
    /// Counts, sizes, expired items, chunked items, largest items, storage cost.
    #[command(after_help = "Example:\n  dynacache stats --json")]
    Stats,
    /// Delete cached responses by key or URL.
    #[command(
        after_help = "Example:\n  dynacache rm https://example.com/ 3f2a9c0e5b1d4e7f8a6b2c1d0e9f8a7b"
    )]
    Rm(http_cmds::RmArgs),
    /// Delete cached responses that are expired, older than an age, or match a URL glob.
    #[command(
        after_help = "Example:\n  dynacache purge --expired\n  dynacache purge --older-than 7d --url '*example.com*' --dry-run"
    )]
    Purge(http_cmds::PurgeArgs),
    /// Delete every cached response of the namespace.
    #[command(after_help = "Example:\n  dynacache clear --yes")]
    Clear(http_cmds::ClearArgs),
    /// Delete chunk items and objects no entry names any more (left by crashed writers, expired
    /// entries and batch deletes), in the HTTP and key/value namespaces; anything written in the
    /// last 15 minutes is left alone.
    #[command(
        after_help = "Example:\n  dynacache vacuum\n  dynacache --aws --object-store s3://my-bucket/cache vacuum"
    )]
    Vacuum,
    /// Copy the cache to another table, engine or namespace (from the embedded file to AWS, say).
    #[command(
        after_help = "Example:\n  dynacache copy --to-aws --to-region eu-west-1 --to-assume-exists\n  dynacache copy --what kv --to-endpoint-url http://127.0.0.1:8000 --to-kv-namespace kv2"
    )]
    Copy(copy_cmd::CopyArgs),
    /// A caching reverse proxy in front of an origin: one cache for every proxy on the table.
    #[command(
        after_help = "Example:\n  dynacache serve --origin http://127.0.0.1:3000 --listen 127.0.0.1:8080\n  curl -X POST 'http://127.0.0.1:8081/purge?prefix=http://127.0.0.1:8080/api/'"
    )]
    Serve(serve::ServeArgs),
    /// The key/value cache.
    #[command(subcommand)]
    Kv(kv_cmds::KvCommand),
    /// The table: create, describe, validate, delete, print its template.
    #[command(subcommand)]
    Table(table_cmds::TableCommand),
}

fn main() {
    quiet_on_closed_stdout();
    let matches = Cli::command().get_matches();
    let mut cli =
        Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.format(&mut Cli::command()).exit());
    // `table template --format iam` covers the namespaces named, so it needs to know which were.
    cli.connection.given = connect::Given::from_matches(&matches);
    cli.output.init_logging();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    // The proxy uses every core (or `TOKIO_WORKER_THREADS`); other commands need two threads.
    if !matches!(cli.command, Command::Serve(_)) {
        builder.worker_threads(2);
    } else if let Ok(threads) = std::env::var("TOKIO_WORKER_THREADS") {
        // Checked here: tokio panics on a value that is not a positive integer.
        match threads.trim().parse::<usize>() {
            Ok(n) if n > 0 => {
                builder.worker_threads(n);
            }
            _ => {
                eprintln!(
                    "error: TOKIO_WORKER_THREADS must be a positive number of threads, not {threads:?}"
                );
                std::process::exit(2);
            }
        }
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    let result = runtime.block_on(run(cli));
    if let Err(e) = result {
        e.report();
        std::process::exit(e.exit_code());
    }
}

async fn run(cli: Cli) -> Result<(), error::CliError> {
    let out = &cli.output;
    let conn = &cli.connection;
    match cli.command {
        Command::Demo(args) => demo::run(conn, out, args).await,
        Command::Get(args) => http_cmds::get(conn, out, args).await,
        Command::Ls(args) => http_cmds::ls(conn, out, args).await,
        Command::Show(args) => http_cmds::show(conn, out, args).await,
        Command::Stats => http_cmds::stats(conn, out).await,
        Command::Rm(args) => http_cmds::rm(conn, out, args).await,
        Command::Purge(args) => http_cmds::purge(conn, out, args).await,
        Command::Clear(args) => http_cmds::clear(conn, out, args).await,
        Command::Vacuum => http_cmds::vacuum(conn, out).await,
        Command::Serve(args) => serve::run(conn, out, args).await,
        Command::Copy(args) => copy_cmd::run(conn, out, args).await,
        Command::Kv(cmd) => kv_cmds::run(conn, out, cmd).await,
        Command::Table(cmd) => table_cmds::run(conn, out, cmd).await,
    }
}

/// `dynacache ls | head` ends quietly when `head` has read enough, like other Unix tools, instead
/// of failing on a closed pipe: printing to a closed stdout ends the process with status 141
/// (128 + SIGPIPE), what a shell reports for a tool killed by SIGPIPE, and prints nothing.
///
/// SIGPIPE itself stays ignored (Rust's default): with its default action, a DynamoDB endpoint
/// or an origin closing a connection while a request was being written (`writev` raises
/// SIGPIPE on a socket) killed the process instead of failing one call.
fn quiet_on_closed_stdout() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        default_hook(info);
    }));
}
