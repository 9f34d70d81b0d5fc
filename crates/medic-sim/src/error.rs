//! Why a simulation could not run (as opposed to invariant violations,
//! which are results, not errors).

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The scenario file is invalid.
    #[error("scenario: {0}")]
    Scenario(String),
    /// A command line that makes no sense (a malformed `--set`).
    #[error("{0}")]
    Usage(String),
    /// The generated coordinator or agent configuration was rejected.
    #[error("configuration: {0}")]
    Config(String),
    /// The coordinator could not be started, reached or stopped.
    #[error("coordinator: {0}")]
    Coordinator(String),
    /// Local I/O (temporary directories, the report file).
    #[error("{0}")]
    Io(#[from] std::io::Error),
}
