//! `medicctl`: parse the command line, run the command, exit with its code
//! (0 ok, 1 the call failed, 2 coordinator unreachable, 64 bad usage).
#![forbid(unsafe_code)]

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use clap::error::ErrorKind;
use medic_cli::{Cli, exit};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // clap prints help and version to stdout, mistakes to stderr.
            let _ = e.print();
            return match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => ExitCode::SUCCESS,
                _ => ExitCode::from(exit::USAGE),
            };
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("medicctl: cannot start the async runtime: {e}");
            return ExitCode::from(exit::FAILED);
        }
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match runtime.block_on(medic_cli::run(cli, &mut out)) {
        Ok(()) => ExitCode::SUCCESS,
        // `medicctl history | head`: the reader has all it wanted.
        Err(e) if e.is_broken_pipe() => ExitCode::SUCCESS,
        Err(e) => {
            let _ = out.flush();
            eprintln!("medicctl: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
