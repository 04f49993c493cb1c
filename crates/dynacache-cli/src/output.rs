//! How results are shown: aligned tables or JSON lines, colours and progress only on a terminal.

use std::io::IsTerminal;
use std::time::{Duration, SystemTime};

use clap::{ArgAction, Args};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Debug, Args)]
pub struct Output {
    /// One JSON object per line, for scripts.
    #[arg(long, global = true)]
    pub json: bool,
    /// Print only results and errors.
    #[arg(long, short, global = true)]
    pub quiet: bool,
    /// More logging (-v: info, -vv: debug), to stderr.
    #[arg(long, short, global = true, action = ArgAction::Count)]
    pub verbose: u8,
}

impl Output {
    pub fn init_logging(&self) {
        // The embedded engine logs every error answer it gives (a missing table included), which
        // dynacache already turns into errors of its own: its lines show from -vv on.
        let level = match (self.quiet, self.verbose) {
            (true, _) => "error",
            (false, 0) => "warn,dynoxide=error,aws_config=error",
            (false, 1) => "info,dynoxide=error,aws_config=warn",
            _ => "debug",
        };
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(colour_on_stderr())
            .try_init();
    }

    /// A spinner counting scanned items, on a terminal only.
    pub fn progress(&self, what: &str) -> ProgressBar {
        if self.quiet || self.json || !std::io::stderr().is_terminal() {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new_spinner().with_message(what.to_owned());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg}: {pos} items ({elapsed})")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.enable_steady_tick(Duration::from_millis(100));
        bar
    }

    /// A line for people (not printed with --quiet or --json).
    pub fn note(&self, line: impl AsRef<str>) {
        if !self.quiet && !self.json {
            eprintln!("{}", line.as_ref());
        }
    }

    pub fn json_line(&self, value: &serde_json::Value) {
        println!("{value}");
    }
}

fn colour_on_stderr() -> bool {
    std::env::var_os("NO_COLOR").is_none() && std::io::stderr().is_terminal()
}

fn colour_on_stdout() -> bool {
    std::env::var_os("NO_COLOR").is_none() && std::io::stdout().is_terminal()
}

/// Text in a colour, on a terminal without NO_COLOR.
pub fn paint(text: &str, colour: Colour) -> String {
    if !colour_on_stdout() {
        return text.to_owned();
    }
    let code = match colour {
        Colour::Green => "32",
        Colour::Yellow => "33",
        Colour::Dim => "2",
        Colour::Bold => "1",
    };
    format!("\x1b[{code}m{text}\x1b[0m")
}

#[derive(Debug, Clone, Copy)]
pub enum Colour {
    Green,
    Yellow,
    Dim,
    Bold,
}

/// Prints rows as aligned columns (colour codes are not counted in the width).
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let visible = |s: &str| {
        let mut n = 0;
        let mut in_escape = false;
        for c in s.chars() {
            match (in_escape, c) {
                (false, '\x1b') => in_escape = true,
                (true, 'm') => in_escape = false,
                (true, _) => {}
                (false, _) => n += 1,
            }
        }
        n
    };
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(visible(cell));
            }
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            let pad = widths
                .get(i)
                .copied()
                .unwrap_or(0)
                .saturating_sub(visible(cell));
            out.push_str(cell);
            if i + 1 < cells.len() {
                out.push_str(&" ".repeat(pad + 2));
            }
        }
        println!("{}", out.trim_end());
    };
    line(header.iter().map(|h| paint(h, Colour::Bold)).collect());
    for row in rows {
        line(row.clone());
    }
}

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

pub fn time_text(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

pub fn epoch_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
