//! medicctl's errors, and the exit code each one means.

use std::io;

/// Exit codes, as documented in `medicctl --help`.
pub mod exit {
    /// The command did what was asked.
    pub const OK: u8 = 0;
    /// The coordinator answered with an error (its message is printed), or
    /// the command could not finish (a rejected reload, unwritable output).
    pub const FAILED: u8 = 1;
    /// The coordinator could not be reached: connection refused, TLS
    /// handshake failed, or no answer within `--timeout`.
    pub const UNREACHABLE: u8 = 2;
    /// Bad usage: an unknown flag, a malformed value, an unreadable TLS file.
    pub const USAGE: u8 = 64;
}

/// Why a medicctl command failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A flag or its value is wrong in a way clap cannot see (a malformed
    /// URL, a TLS flag without its partner, an unreadable file).
    #[error("{0}")]
    Usage(String),
    /// The coordinator could not be reached (refused, reset, TLS failure).
    #[error("cannot reach the coordinator at {url}: {detail}")]
    Unreachable {
        /// The `--coordinator` URL.
        url: String,
        /// What the transport said, cause by cause.
        detail: String,
    },
    /// The coordinator did not answer in time.
    #[error("no answer from the coordinator at {url} within {timeout} (--timeout)")]
    Timeout {
        /// The `--coordinator` URL.
        url: String,
        /// The `--timeout` in force, formatted.
        timeout: String,
    },
    /// The coordinator answered with a gRPC error.
    #[error("{code}: {message}")]
    Rpc {
        /// The gRPC status code's name (`NOT_FOUND`).
        code: &'static str,
        /// The coordinator's message.
        message: String,
    },
    /// The call succeeded but what was asked did not happen (a reload the
    /// coordinator rejected).
    #[error("{0}")]
    Failed(String),
    /// Writing the output failed.
    #[error("cannot write the output: {0}")]
    Output(#[from] io::Error),
}

impl Error {
    /// The process exit code for this error (see [`exit`]).
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) => exit::USAGE,
            Error::Unreachable { .. } | Error::Timeout { .. } => exit::UNREACHABLE,
            Error::Rpc { .. } | Error::Failed(_) | Error::Output(_) => exit::FAILED,
        }
    }

    /// Whether this is a write to a closed pipe (`medicctl history | head`),
    /// which is not worth a message.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, Error::Output(e) if e.kind() == io::ErrorKind::BrokenPipe)
    }
}

pub use medic_client::code_name;
pub use medic_client::error::chain;
