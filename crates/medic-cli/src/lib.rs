//! `medicctl`, the operator's command line for medic's coordinator: pause
//! and resume remediation, inspect hosts, permits and the audit history,
//! explain decisions, revoke permits, quarantine hosts, reset breakers,
//! reload the config, and follow events live, over `medic.v1.Admin`.
//!
//! The binary (`main.rs`) parses the command line into a [`Cli`], calls
//! [`run`] and exits with [`Error::exit_code`]. The modules:
//!
//! - [`cli`]: flags, subcommands, their help and value parsers;
//! - [`client`]: the connection (URL, TLS, the caller's name, deadlines);
//! - `commands`: one file per subcommand: build the request, call, print;
//! - [`json`]: the `-o json` output types, whose field names are stable;
//! - [`format`](mod@format): durations, times and tables for people;
//! - [`error`]: errors and exit codes.
//!
//! A new subcommand is its clap entry in `cli`, its file in `commands` (a
//! `mod` line and one arm of `commands::run`), its output types in `json`,
//! and its test in `tests/medicctl.rs`.
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

use crate::cli::Command;
use crate::client::Target;
use crate::commands::Ctx;

/// Runs one medicctl command, writing its output to `out`.
///
/// `completions` and `man` need no coordinator; every other command connects first,
/// so an unreachable coordinator fails before anything is printed.
pub async fn run(cli: Cli, out: &mut dyn Write) -> Result<(), Error> {
    let Cli { global, command } = cli;
    if let Command::Completions(a) = &command {
        out.write_all(&medic_proto::clidocs::completion(
            Cli::command(),
            "medicctl",
            a.shell,
        ))?;
        out.flush()?;
        return Ok(());
    }
    if let Command::Man(a) = &command {
        medic_proto::clidocs::write_man_pages(Cli::command(), "medicctl", &a.out)?;
        return Ok(());
    }
    let conn = Target::from_args(&global).connect().await?;
    let mut ctx = Ctx {
        conn,
        out,
        format: global.output,
    };
    commands::run(&mut ctx, command).await?;
    ctx.out.flush()?;
    Ok(())
}
