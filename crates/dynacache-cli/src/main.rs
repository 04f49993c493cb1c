//! The `dynacache` command-line tool.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--version" | "-V") => println!("dynacache {}", env!("CARGO_PKG_VERSION")),
        _ => {
            println!(
                "dynacache {}: DynamoDB-backed caching.\n\n\
                 The subcommands (demo, get, ls, show, stats, rm, purge, clear, kv, table) are \
                 not built yet.\nSee the README for the library, and \
                 `cargo run -p dynacache --example kv_quickstart` for a first run.",
                env!("CARGO_PKG_VERSION")
            );
        }
    }
}
