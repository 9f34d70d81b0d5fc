//! The agent's effects on the host: signalling a job's processes and
//! running commands (restart, reboot), each bounded in time; and the
//! [`Host`] seam the agent reaches them through.

use std::future::Future;
use std::time::{Duration, Instant, SystemTime};

use medic_policy::PermitRef;

use crate::config::JobConfig;
use crate::detect::{JobDetectors, Verdict};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::{Pid, getpgid, getpgrp};

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// It could not be started.
    #[error("cannot run {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// It ran longer than allowed and was killed.
    #[error("{program} did not finish within {timeout}")]
    Timeout {
        /// The program.
        program: String,
        /// The limit.
        timeout: String,
    },
    /// It exited unsuccessfully.
    #[error("{program} exited with {status}")]
    Exit {
        /// The program.
        program: String,
        /// How it exited.
        status: std::process::ExitStatus,
    },
}

/// Why an effect on the host failed: which step, and how its command
/// failed (could not start, ran over its time, or exited unsuccessfully).
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The job's restart command failed.
    #[error("restart command failed: {0}")]
    RestartCommand(#[source] CommandError),
    /// The reboot command failed.
    #[error("reboot command failed: {0}")]
    RebootCommand(#[source] CommandError),
}

/// Sends `signal` to each process's group (or the process alone when it
/// shares the agent's group), waits up to `grace` for them to exit, then
/// SIGKILLs what is left.
pub async fn stop_processes(pids: &[i32], signal: Signal, grace: Duration) {
    let own = getpgrp();
    let send = |pid: i32, sig: Signal| {
        let p = Pid::from_raw(pid);
        let r = match getpgid(Some(p)) {
            Ok(g) if g != own && g.as_raw() > 1 => killpg(g, sig),
            _ => kill(p, sig),
        };
        if let Err(e) = r {
            tracing::debug!(pid, signal = %sig, error = %e, "signal not delivered");
        }
    };
    for &pid in pids {
        tracing::info!(pid, signal = %signal, "signalling the job");
        send(pid, signal);
        // A stopped process cannot act on SIGTERM until it continues.
        send(pid, Signal::SIGCONT);
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && pids.iter().any(|&p| alive(p)) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for &pid in pids.iter().filter(|&&p| alive(p)) {
        tracing::warn!(pid, "still running after the grace period: SIGKILL");
        send(pid, Signal::SIGKILL);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && pids.iter().any(|&p| alive(p)) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether a process exists (and is not a zombie waiting to be reaped).
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
    }
}

/// Runs `argv` (no shell) with a deadline; kills it (and its process
/// group) if it runs over.
pub async fn run(argv: &[String], timeout: Duration) -> Result<(), CommandError> {
    let program = argv.first().cloned().unwrap_or_default();
    let mut cmd = tokio::process::Command::new(&program);
    cmd.args(&argv[1..])
        .stdin(std::process::Stdio::null())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|source| CommandError::Spawn {
        program: program.clone(),
        source,
    })?;
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => Err(CommandError::Exit { program, status }),
        Ok(Err(source)) => Err(CommandError::Spawn { program, source }),
        Err(_) => {
            if let Some(id) = child.id().and_then(|id| i32::try_from(id).ok()) {
                let _ = killpg(Pid::from_raw(id), Signal::SIGKILL);
            }
            let _ = child.kill().await;
            Err(CommandError::Timeout {
                program,
                timeout: humantime::format_duration(timeout).to_string(),
            })
        }
    }
}

// === The host seam ===

/// Everything the agent does to (or learns from) its machine, behind one
/// trait: whether a job is stuck, restarting it, rebooting the host.
///
/// The agent's decisions (the ladder, the permit client, backoff, the state
/// file) stay in [`crate::agent::Agent`]; only these effects change between
/// a real host ([`SystemHost`]) and a simulated one (`medic-sim` runs
/// thousands of real agents against simulated jobs and reboots). Each
/// effect is given the permit it acts under so that a stand-in can record
/// what authorised it.
pub trait Host: Send + 'static {
    /// Checks `job` once (the default runs its detectors).
    fn check(
        &mut self,
        job: &JobConfig,
        detectors: &mut JobDetectors,
        now: SystemTime,
    ) -> impl Future<Output = Verdict> + Send;

    /// Restarts `job` under `permit`: the first irreversible step. `Err`
    /// says why the restart itself failed (verification is the agent's).
    fn restart(
        &mut self,
        job: &JobConfig,
        detectors: &JobDetectors,
        permit: &PermitRef,
    ) -> impl Future<Output = Result<(), HostError>> + Send;

    /// Reboots the host under `permit` (for `job`) with `command`. On a real
    /// host a successful command does not come back: the machine goes down.
    fn reboot(
        &mut self,
        command: &[String],
        job: &str,
        permit: &PermitRef,
    ) -> impl Future<Output = Result<(), HostError>> + Send;
}

/// The real machine: detectors read /proc, files and systemd; a restart
/// signals the job's processes and runs its restart command; a reboot runs
/// the reboot command.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemHost;

impl Host for SystemHost {
    async fn check(
        &mut self,
        _job: &JobConfig,
        detectors: &mut JobDetectors,
        now: SystemTime,
    ) -> Verdict {
        detectors.check(now).await
    }

    async fn restart(
        &mut self,
        job: &JobConfig,
        detectors: &JobDetectors,
        _permit: &PermitRef,
    ) -> Result<(), HostError> {
        let cfg = &job.restart;
        let pids = detectors.pids().await;
        stop_processes(&pids, cfg.signal, cfg.grace).await;
        if let Some(cmd) = &cfg.command {
            run(cmd, cfg.command_timeout)
                .await
                .map_err(HostError::RestartCommand)?;
        }
        Ok(())
    }

    async fn reboot(
        &mut self,
        command: &[String],
        _job: &str,
        _permit: &PermitRef,
    ) -> Result<(), HostError> {
        run(command, Duration::from_secs(300))
            .await
            .map_err(HostError::RebootCommand)
    }
}
