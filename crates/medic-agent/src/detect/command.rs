//! Runs a command (a probe, `systemctl`) with a deadline and bounded output.
//!
//! The child gets its own process group, so a timeout kills everything it
//! started (a probe that is a shell script runs children of its own), and
//! `kill_on_drop` plus a guard do the same if the check itself is dropped
//! (agent shutdown). Output is read as it comes, in small chunks: the first
//! `max_output` bytes are kept and the rest is read and dropped, so a chatty
//! probe neither blocks on a full pipe nor grows the agent.

use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;

/// How long the output pipes may stay open after the command exited (a
/// background child still holding them) before we stop reading.
const PIPE_GRACE: Duration = Duration::from_millis(500);

/// How long to wait for a killed command to be reaped.
const REAP_TIMEOUT: Duration = Duration::from_secs(2);

/// How a command ended.
#[derive(Debug)]
pub(crate) enum Finished {
    /// It exited (or a signal ended it) within the timeout.
    Exited(ExitStatus),
    /// It ran past the timeout and was killed with its process group.
    TimedOut,
}

/// A finished command.
#[derive(Debug)]
pub(crate) struct Run {
    /// How it ended.
    pub(crate) finished: Finished,
    /// stdout and stderr, interleaved as they arrived, bounded.
    pub(crate) output: Output,
}

/// The first `max` bytes of a command's output, and how much there was.
#[derive(Debug)]
pub(crate) struct Output {
    kept: Vec<u8>,
    max: usize,
    total: u64,
}

impl Output {
    fn new(max: usize) -> Self {
        Output {
            kept: Vec::new(),
            max,
            total: 0,
        }
    }

    fn push(&mut self, data: &[u8]) {
        let room = self.max.saturating_sub(self.kept.len());
        self.kept.extend_from_slice(&data[..room.min(data.len())]);
        self.total = self
            .total
            .saturating_add(u64::try_from(data.len()).unwrap_or(u64::MAX));
    }

    /// The bytes kept (at most `max_output`).
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.kept
    }

    /// The kept output as text (lossy UTF-8, trimmed), saying when it was cut.
    pub(crate) fn text(&self) -> String {
        let text = String::from_utf8_lossy(&self.kept);
        let text = text.trim();
        if self.total > self.kept.len() as u64 {
            format!(
                "{text:?} (first {} of {} bytes)",
                self.kept.len(),
                self.total
            )
        } else {
            format!("{text:?}")
        }
    }
}

/// Describes an exit status for a human: `exited with code 3`, `killed by
/// signal 9`.
pub(crate) fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(sig)) => match Signal::try_from(sig) {
            Ok(s) => format!("killed by signal {sig} ({s})"),
            Err(_) => format!("killed by signal {sig}"),
        },
        (None, None) => format!("ended with {status}"),
    }
}

/// Kills the command's process group when dropped while armed: on timeout,
/// and when the check is dropped half-way. Armed only while the group leader
/// has not been reaped, so its pid (the group id) cannot have been reused.
struct GroupGuard {
    pgid: Option<Pid>,
}

impl GroupGuard {
    fn kill(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            // ESRCH: the group is already gone, which is what we want.
            let _ = killpg(pgid, Signal::SIGKILL);
        }
    }

    fn disarm(&mut self) {
        self.pgid = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `argv` (no shell) with stdin from /dev/null, for at most `timeout`,
/// keeping at most `max_output` bytes of its stdout and stderr. Errors only
/// when it cannot be started (or waited for).
pub(crate) async fn run(argv: &[String], timeout: Duration, max_output: usize) -> io::Result<Run> {
    let Some((program, args)) = argv.split_first() else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty command"));
    };
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()?;
    // Declared after `child`, so dropped before it: the group is killed while
    // its leader is still unreaped.
    let mut guard = GroupGuard {
        pgid: child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .map(Pid::from_raw),
    };
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let mut output = Output::new(max_output);
    let mut deadline = Instant::now() + timeout;
    let mut status = None;
    let mut drained = false;
    {
        let drain = drain(stdout, stderr, &mut output);
        tokio::pin!(drain);
        loop {
            tokio::select! {
                s = child.wait(), if status.is_none() => {
                    status = Some(s?);
                    // Reaped: the group id may be reused from now on.
                    guard.disarm();
                    deadline = deadline.min(Instant::now() + PIPE_GRACE);
                }
                () = &mut drain, if !drained => drained = true,
                () = tokio::time::sleep_until(deadline) => break,
            }
            if status.is_some() && drained {
                break;
            }
        }
    }
    match status {
        Some(status) => Ok(Run {
            finished: Finished::Exited(status),
            output,
        }),
        None => {
            guard.kill();
            // The leader may have left the group; make sure it dies too.
            let _ = child.start_kill();
            let _ = tokio::time::timeout(REAP_TIMEOUT, child.wait()).await;
            Ok(Run {
                finished: Finished::TimedOut,
                output,
            })
        }
    }
}

/// Reads both pipes to their end into `output`.
async fn drain(
    mut stdout: Option<tokio::process::ChildStdout>,
    mut stderr: Option<tokio::process::ChildStderr>,
    output: &mut Output,
) {
    let mut out_buf = [0u8; 2048];
    let mut err_buf = [0u8; 2048];
    while stdout.is_some() || stderr.is_some() {
        tokio::select! {
            n = read_some(&mut stdout, &mut out_buf) => match n {
                0 => stdout = None,
                n => output.push(&out_buf[..n]),
            },
            n = read_some(&mut stderr, &mut err_buf) => match n {
                0 => stderr = None,
                n => output.push(&err_buf[..n]),
            },
        }
    }
}

/// Reads once from `pipe`; 0 at its end (or on an error); never returns for
/// a pipe already closed.
async fn read_some<R: AsyncRead + Unpin>(pipe: &mut Option<R>, buf: &mut [u8]) -> usize {
    match pipe {
        Some(p) => p.read(buf).await.unwrap_or(0),
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_keeps_only_the_first_max_bytes_and_counts_the_rest() {
        let mut out = Output::new(5);
        out.push(b"abc");
        out.push(b"defgh");
        out.push(b"ij");
        assert_eq!(out.bytes(), b"abcde");
        assert_eq!(out.text(), r#""abcde" (first 5 of 10 bytes)"#);
    }

    #[test]
    fn output_text_is_trimmed_lossy_utf8() {
        let mut out = Output::new(100);
        out.push(b"  bad \xff byte\n\n");
        assert_eq!(out.text(), "\"bad \u{fffd} byte\"");
    }

    #[tokio::test]
    async fn empty_command_is_an_error() {
        assert!(run(&[], Duration::from_secs(1), 10).await.is_err());
    }
}
