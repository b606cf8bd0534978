//! The `sealstream` command: key tools, sealing, export and the quickstart.

mod cli;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    init_logging(args.log_format, args.default_log_level());
    // With `--features failpoints` only: the FAILPOINTS the soak sets (a no-op otherwise).
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    match cli::run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", cause_chain(&e));
            ExitCode::from(1)
        }
    }
}

/// Logs go to standard error: `SEALSTREAM_LOG` filters (e.g. `debug`, `sealstream=trace`),
/// colour only on a terminal, JSON lines with `--log-format json`.
fn init_logging(format: cli::LogFormat, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SEALSTREAM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        cli::LogFormat::Json => builder.json().with_ansi(false).init(),
        cli::LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}

/// An error and its causes, each said once: "outer: inner: innermost". A link whose words the
/// previous link already printed (thiserror messages often embed their source) is skipped.
fn cause_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for link in e.chain() {
        let text = link.to_string();
        if text.is_empty() || out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{path}: cannot read: {source}")]
    struct Embeds {
        path: String,
        source: std::io::Error,
    }

    #[test]
    fn each_cause_is_said_once() {
        let io = std::io::Error::from_raw_os_error(20);
        let e = anyhow::Error::new(Embeds {
            path: "/srv/x/sealstream.db".into(),
            source: io,
        })
        .context("starting the server from serve.toml");
        let text = cause_chain(&e);
        assert_eq!(text.matches("Not a directory").count(), 1, "{text}");
        assert!(text.starts_with("starting the server from serve.toml: /srv/x/sealstream.db"));
    }
}
