//! Store errors. Each says what is wrong and what an operator can do.

use std::path::PathBuf;

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process holds the state directory.
    #[error(
        "state directory {dir} is locked by another coordinator (pid {holder}); \
         two coordinators must never share state. Stop it, or use another state_dir"
    )]
    Locked {
        /// The state directory.
        dir: PathBuf,
        /// The pid written in the lock file (`unknown` if unreadable).
        holder: String,
    },
    /// The file was written by a newer medic.
    #[error(
        "state file {path} has schema version {found}, newer than this build's {supported}; \
         refusing to start (run the newer medic, or restore a backup)"
    )]
    NewerSchema {
        /// The state file.
        path: PathBuf,
        /// Its schema version.
        found: u32,
        /// The newest this build knows.
        supported: u32,
    },
    /// The file cannot be read as medic state.
    #[error(
        "state file {path} is corrupt ({detail}); refusing to start, because an empty state \
         would refill budgets and forget quarantines and pauses. Restore it from a backup, or \
         move it away deliberately to start with no history"
    )]
    Corrupt {
        /// The state file.
        path: PathBuf,
        /// What was found wrong.
        detail: String,
    },
    /// The state file is gone, empty, or not a file, where medic state was
    /// (or had been) kept: before start-up, or while the coordinator ran.
    #[error(
        "state file {path}: {detail}. Refusing to go on, because an empty state would refill \
         budgets and forget quarantines and pauses. {remedy}"
    )]
    Lost {
        /// The state file.
        path: PathBuf,
        /// What was found.
        detail: String,
        /// What the operator can do.
        remedy: String,
    },
    /// An I/O error on the state directory or file.
    #[error("state directory {path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The storage engine failed (disk full, I/O error during commit), or a
    /// record could not be encoded.
    #[error("state store: {0}")]
    Backend(String),
    /// A snapshot that would make later loads lose events. A caller bug:
    /// nothing was written.
    #[error("snapshot after entry {upto} refused: {detail}")]
    SnapshotRejected {
        /// The entry the snapshot claimed to follow.
        upto: u64,
        /// Why it was refused.
        detail: String,
    },
    /// A write by a coordinator that is no longer (or never was) the
    /// leader: the etcd transaction's comparison of the leader key failed,
    /// so nothing of the write is stored. The coordinator must stop
    /// granting, and campaign again to load the state anew.
    #[error("not the leader: {detail}; nothing was written")]
    NotLeader {
        /// What the store found instead of this coordinator's leadership.
        detail: String,
    },
    /// No medic state where some was expected (an etcd prefix that holds
    /// none, opened without creating it).
    #[error("{detail}")]
    Missing {
        /// Where, and what to check.
        detail: String,
    },
    /// A compare-and-swap write found the value changed since it was read
    /// (another writer in between). Nothing was written.
    #[error("{detail}; nothing was written")]
    Conflict {
        /// What was found instead of what was expected.
        detail: String,
    },
    /// One record or snapshot piece larger than a single etcd request may
    /// carry. Nothing was written.
    #[error("{detail}; nothing was written")]
    TooLarge {
        /// What was too large, and the limit.
        detail: String,
    },
}
