//! File-system reads that may hang, kept off the runtime and bounded in time.
//!
//! A stat of a file on a hung NFS mount, or a read of `/proc/PID/cmdline` of a
//! process stuck holding its memory map lock, can block for ever — exactly on
//! the hosts this agent exists for. Such reads run on tokio's blocking pool
//! with a deadline; a read that overran is remembered, and no new one is
//! started for the same detector until it finished, so a hung mount costs one
//! thread, not one per check.

use std::fmt;
use std::time::Duration;

use tokio::task::JoinHandle;

/// How long a detector's file-system reads may take.
pub(crate) const FS_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a blocking read gave no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stalled {
    /// It took longer than its deadline (and may still be running).
    TimedOut,
    /// The read started by an earlier check has not finished yet.
    StillRunning,
    /// It panicked (a bug; the reason is in the log).
    Failed,
}

impl fmt::Display for Stalled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stalled::TimedOut => "a file-system read did not finish in time",
            Stalled::StillRunning => "an earlier file-system read is still hanging",
            Stalled::Failed => "a file-system read failed unexpectedly",
        })
    }
}

/// One detector's blocking reads, at most one at a time.
pub(crate) struct Blocking<T> {
    pending: Option<JoinHandle<T>>,
}

impl<T> Default for Blocking<T> {
    fn default() -> Self {
        Blocking { pending: None }
    }
}

impl<T> fmt::Debug for Blocking<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Blocking")
            .field("pending", &self.pending.is_some())
            .finish()
    }
}

impl<T: Send + 'static> Blocking<T> {
    /// Runs `read` on the blocking pool and waits up to `timeout` for it.
    pub(crate) async fn run(
        &mut self,
        timeout: Duration,
        read: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Stalled> {
        if let Some(pending) = &self.pending {
            if !pending.is_finished() {
                return Err(Stalled::StillRunning);
            }
            // Finished late: its answer is stale, look again.
            self.pending = None;
        }
        run_once(timeout, read).await.map_err(|(stalled, handle)| {
            self.pending = handle;
            stalled
        })
    }
}

/// Runs `read` on the blocking pool once, without remembering a hang (for
/// occasional calls such as looking up pids to signal).
pub(crate) async fn run_once<T: Send + 'static>(
    timeout: Duration,
    read: impl FnOnce() -> T + Send + 'static,
) -> Result<T, (Stalled, Option<JoinHandle<T>>)> {
    let mut handle = tokio::task::spawn_blocking(read);
    match tokio::time::timeout(timeout, &mut handle).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => {
            tracing::error!("detector read failed: {e}");
            Err((Stalled::Failed, None))
        }
        Err(_) => Err((Stalled::TimedOut, Some(handle))),
    }
}
