//! `medic-coordinator`: parses the flags and runs the command
//! ([`medic_coordinator::cli`]).

use std::process::ExitCode;

use clap::Parser;
use medic_coordinator::cli::{Cli, EXIT_USAGE};

fn main() -> ExitCode {
    match Cli::try_parse() {
        Ok(cli) => cli.run(),
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            ExitCode::from(code)
        }
    }
}
