//! `medicctl`, the operator's command line for medic's coordinator: pause
//! and resume remediation, inspect hosts, permits and the audit history,
//! explain decisions, revoke permits, quarantine hosts, reset breakers,
//! reload the config, and follow events live, over `medic.v1.Admin`.
//!
//! The binary (`main.rs`) parses the command line into a [`Cli`], calls
//! [`run`] and exits with [`Error::exit_code`]. Everything else is here:
//!
//! - [`cli`]: flags, subcommands, their help and value parsers;
//! - [`client`]: the connection (URL, TLS, the caller's name, deadlines);
//! - [`format`](mod@format): durations, times and tables for people;
//! - [`json`]: the `-o json` output types, whose field names are stable;
//! - [`error`]: errors and exit codes.
#![forbid(unsafe_code)]

pub mod cli;
pub mod client;
mod commands;
pub mod error;
pub mod format;
pub mod json;

use std::io::Write;

use clap::CommandFactory;

pub use cli::Cli;
pub use error::{Error, exit};

use crate::cli::{BreakerCommand, Command};
use crate::client::Target;
use crate::commands::Ctx;

/// Runs one medicctl command, writing its output to `out`.
///
/// `completions` needs no coordinator; every other command connects first,
/// so an unreachable coordinator fails before anything is printed.
pub async fn run(cli: Cli, out: &mut dyn Write) -> Result<(), Error> {
    let Cli { global, command } = cli;
    if let Command::Completions(a) = command {
        // Generated into memory first: clap_complete panics on a failed
        // write, and a closed pipe is not worth a panic.
        let mut script = Vec::new();
        clap_complete::generate(a.shell, &mut Cli::command(), "medicctl", &mut script);
        out.write_all(&script)?;
        out.flush()?;
        return Ok(());
    }
    let conn = Target::from_args(&global).connect().await?;
    let mut ctx = Ctx {
        conn,
        out,
        format: global.output,
    };
    match command {
        Command::Status => commands::status(&mut ctx).await,
        Command::Pause(a) => commands::pause(&mut ctx, a).await,
        Command::Resume(a) => commands::resume(&mut ctx, a).await,
        Command::Hosts(a) => commands::hosts(&mut ctx, a).await,
        Command::Permits(a) => commands::permits(&mut ctx, a).await,
        Command::Revoke(a) => commands::revoke(&mut ctx, a).await,
        Command::Quarantine(a) => commands::quarantine(&mut ctx, a).await,
        Command::Unquarantine(a) => commands::unquarantine(&mut ctx, a).await,
        Command::History(a) => commands::history(&mut ctx, a).await,
        Command::Explain(a) => commands::explain(&mut ctx, a).await,
        Command::Breaker(BreakerCommand::Reset(a)) => commands::breaker_reset(&mut ctx, a).await,
        Command::Reload(a) => commands::reload(&mut ctx, a).await,
        Command::Watch(a) => commands::watch(&mut ctx, a).await,
        Command::Completions(_) => Ok(()),
    }?;
    ctx.out.flush()?;
    Ok(())
}
