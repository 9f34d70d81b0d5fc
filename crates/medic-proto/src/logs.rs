//! How medic's daemons log, set up once for the coordinator and the agent:
//! to standard error, filtered by `RUST_LOG` (`info` when unset), as text
//! (coloured on a terminal) or as one JSON object per line for journald
//! and log shippers.

use std::io::IsTerminal;

/// Installs the global subscriber: JSON lines when `json`, else text.
/// Call once, first thing.
pub fn init(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.with_ansi(std::io::stderr().is_terminal()).init();
    }
}
