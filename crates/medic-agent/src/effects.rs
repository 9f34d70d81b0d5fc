//! The agent's effects on the host: signalling a job's processes and
//! running commands (restart, reboot), each bounded in time; and the
//! [`Host`] seam the agent reaches them through.

use std::future::Future;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant, SystemTime};

use medic_policy::{Action, PermitRef};

use crate::config::{CustomStep, HookConfig, JobConfig};
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
    #[error("{program} did not finish within {timeout}; output: {output:?}")]
    Timeout {
        /// The program.
        program: String,
        /// The limit.
        timeout: String,
        /// The end of its output.
        output: String,
    },
    /// It exited unsuccessfully.
    #[error("{program} {status}; output: {output:?}")]
    Exit {
        /// The program.
        program: String,
        /// How it exited, for a human (`exited with code 3`).
        status: String,
        /// The end of its output.
        output: String,
    },
}

impl CommandError {
    /// How the command ended, for a log field (`exited with code 3`).
    pub fn status(&self) -> String {
        match self {
            CommandError::Spawn { source, .. } => format!("not started: {source}"),
            CommandError::Timeout { timeout, .. } => format!("killed after {timeout}"),
            CommandError::Exit { status, .. } => status.clone(),
        }
    }

    /// The end of the command's output (empty when it did not start).
    pub fn output(&self) -> &str {
        match self {
            CommandError::Spawn { .. } => "",
            CommandError::Timeout { output, .. } | CommandError::Exit { output, .. } => output,
        }
    }
}

/// How much of the end of a command's output (stdout and stderr together)
/// is kept for the outcome and the log.
pub const OUTPUT_TAIL: usize = 2048;

/// A command that ran to a successful exit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandReport {
    /// How it exited, for a human (`exited with code 0`).
    pub status: String,
    /// The last [`OUTPUT_TAIL`] bytes of its stdout and stderr (lossy UTF-8,
    /// trimmed).
    pub output: String,
}

/// What an action is done for, handed to every command the agent runs under
/// a permit (restart, reboot) in its environment: `MEDIC_JOB`,
/// `MEDIC_ACTION`, `MEDIC_PERMIT_ID`, `MEDIC_FENCING_TOKEN`, `MEDIC_REASON`
/// and `MEDIC_DRY_RUN`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActionContext {
    /// The job the action is for.
    pub job: String,
    /// The action.
    pub action: Action,
    /// The permit it is done under.
    pub permit: PermitRef,
    /// Why: the evidence that made the job stuck.
    pub reason: String,
    /// Whether the permit is a dry run.
    pub dry_run: bool,
}

impl ActionContext {
    /// The environment variables a command gets.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("MEDIC_JOB", self.job.clone()),
            ("MEDIC_ACTION", self.action.as_str().to_owned()),
            ("MEDIC_PERMIT_ID", self.permit.id.to_string()),
            ("MEDIC_FENCING_TOKEN", self.permit.token.0.to_string()),
            ("MEDIC_REASON", self.reason.clone()),
            (
                "MEDIC_DRY_RUN",
                if self.dry_run { "1" } else { "0" }.to_owned(),
            ),
        ]
    }
}

/// Which of a job's hooks runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Hook {
    /// Before the action: drain, tell the workload, or veto.
    Pre,
    /// After the action is verified (or after an action not taken once
    /// `pre` had run): undo what `pre` did.
    Post,
}

impl Hook {
    /// `pre` or `post`: the config key, `MEDIC_HOOK`, and the metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Hook::Pre => "pre",
            Hook::Post => "post",
        }
    }
}

impl std::fmt::Display for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A command running (a hook, a custom action's): it owns what it needs,
/// so that the agent renews its permit and heartbeats while it waits.
pub type CommandRun<E> =
    std::pin::Pin<Box<dyn Future<Output = Result<CommandReport, E>> + Send + 'static>>;

/// A hook running.
pub type HookRun = CommandRun<CommandError>;

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
    /// A custom action's command failed.
    #[error("{action} command failed: {source}")]
    ActionCommand {
        /// The custom action.
        action: Action,
        /// How its command failed.
        #[source]
        source: CommandError,
    },
}

impl HostError {
    /// The command that failed.
    pub fn command(&self) -> &CommandError {
        match self {
            HostError::RestartCommand(e)
            | HostError::RebootCommand(e)
            | HostError::ActionCommand { source: e, .. } => e,
        }
    }
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

/// Runs `argv` (no shell) with a deadline and `env` added to its
/// environment; kills it (and its process group) if it runs over.
///
/// Its stdout and stderr go to an unlinked temporary file rather than a
/// pipe, so a job it starts in the background that inherits them is never
/// killed by SIGPIPE once the agent stops reading; the last
/// [`OUTPUT_TAIL`] bytes are read back when it ends.
pub async fn run(
    argv: &[String],
    timeout: Duration,
    env: &[(&'static str, String)],
) -> Result<CommandReport, CommandError> {
    let program = argv.first().cloned().unwrap_or_default();
    let spawn_error = |source| CommandError::Spawn {
        program: program.clone(),
        source,
    };
    let mut out = output_file().map_err(spawn_error)?;
    let mut cmd = tokio::process::Command::new(&program);
    cmd.args(argv.get(1..).unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null())
        .stdout(out.try_clone().map_err(spawn_error)?)
        .stderr(out.try_clone().map_err(spawn_error)?)
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(spawn_error)?;
    let waited = tokio::time::timeout(timeout, child.wait()).await;
    if waited.is_err() {
        if let Some(id) = child.id().and_then(|id| i32::try_from(id).ok()) {
            let _ = killpg(Pid::from_raw(id), Signal::SIGKILL);
        }
        let _ = child.kill().await;
    }
    let output = tail(&mut out);
    match waited {
        Ok(Ok(status)) if status.success() => Ok(CommandReport {
            status: describe(status),
            output,
        }),
        Ok(Ok(status)) => Err(CommandError::Exit {
            program,
            status: describe(status),
            output,
        }),
        Ok(Err(source)) => Err(CommandError::Spawn { program, source }),
        Err(_) => Err(CommandError::Timeout {
            program,
            timeout: humantime::format_duration(timeout).to_string(),
            output,
        }),
    }
}

/// A new, already unlinked file in the temporary directory, readable by
/// the agent alone.
fn output_file() -> std::io::Result<std::fs::File> {
    let dir = std::env::temp_dir();
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    for n in 0..100u32 {
        let path = dir.join(format!("medic-output-{}-{nanos}-{n}", std::process::id()));
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(f) => {
                let _ = std::fs::remove_file(&path);
                return Ok(f);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other(format!(
        "cannot create an output file in {}",
        dir.display()
    )))
}

/// The last [`OUTPUT_TAIL`] bytes of `file`, as trimmed lossy UTF-8.
fn tail(file: &mut std::fs::File) -> String {
    let len = file.seek(SeekFrom::End(0)).unwrap_or(0);
    let from = len.saturating_sub(OUTPUT_TAIL as u64);
    let mut raw = Vec::new();
    if file.seek(SeekFrom::Start(from)).is_ok() {
        let _ = file.take(OUTPUT_TAIL as u64).read_to_end(&mut raw);
    }
    let text = String::from_utf8_lossy(&raw);
    if from > 0 {
        format!("[{from} bytes cut] {}", text.trim())
    } else {
        text.trim().to_owned()
    }
}

/// An exit status for a human: `exited with code 3`, `killed by signal 9`.
fn describe(status: std::process::ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        (None, None) => format!("ended with {status}"),
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

    /// Restarts `job` for `action` (its permit, and why): the first
    /// irreversible step. `Ok` carries how the restart command ended, if
    /// the job has one; `Err` says why the restart itself failed
    /// (verification is the agent's).
    fn restart(
        &mut self,
        job: &JobConfig,
        detectors: &JobDetectors,
        action: &ActionContext,
    ) -> impl Future<Output = Result<Option<CommandReport>, HostError>> + Send;

    /// Reboots the host for `action` with `command`. On a real host a
    /// successful command does not come back: the machine goes down.
    fn reboot(
        &mut self,
        command: &[String],
        action: &ActionContext,
    ) -> impl Future<Output = Result<(), HostError>> + Send;

    /// Carries out the custom action of `action` for `job` by running
    /// `step`'s command: the first irreversible step. The default runs it
    /// for real ([`run`]) with the action's context in its environment.
    fn custom(
        &mut self,
        job: &JobConfig,
        step: &CustomStep,
        action: &ActionContext,
    ) -> CommandRun<HostError> {
        let _ = job;
        let argv = step.command.clone();
        let timeout = step.timeout;
        let env = action.env();
        let kind = action.action;
        Box::pin(async move {
            run(&argv, timeout, &env)
                .await
                .map_err(|source| HostError::ActionCommand {
                    action: kind,
                    source,
                })
        })
    }

    /// Starts `job`'s `which` hook, `command`, for `action`. The default
    /// runs it for real ([`run`]: argv, no shell, its own process group,
    /// killed at its timeout, output bounded) with the action's context and
    /// `MEDIC_HOOK` in its environment.
    fn hook(
        &mut self,
        job: &JobConfig,
        which: Hook,
        command: &HookConfig,
        action: &ActionContext,
    ) -> HookRun {
        let _ = job;
        let argv = command.command.clone();
        let timeout = command.timeout;
        let mut env = action.env();
        env.push(("MEDIC_HOOK", which.as_str().to_owned()));
        Box::pin(async move { run(&argv, timeout, &env).await })
    }

    /// How long ago `job`'s processes started (the oldest), as its last
    /// check saw them, for its `start_grace`. The default asks the process
    /// detector ([`JobDetectors::started_ago`]).
    fn started_ago(&mut self, job: &JobConfig, detectors: &JobDetectors) -> Option<Duration> {
        let _ = job;
        detectors.started_ago()
    }

    /// After a check that found `job` healthy during a restart's
    /// verification: `Err` says which detector has no evidence newer than
    /// the restart ([`JobDetectors::mark_restart`]). The default asks the
    /// detectors what their last check saw.
    fn fresh(&mut self, job: &JobConfig, detectors: &JobDetectors) -> Result<(), String> {
        let _ = job;
        detectors.fresh()
    }
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
        action: &ActionContext,
    ) -> Result<Option<CommandReport>, HostError> {
        let cfg = &job.restart;
        let pids = detectors.pids().await;
        stop_processes(&pids, cfg.signal, cfg.grace).await;
        match &cfg.command {
            Some(cmd) => run(cmd, cfg.command_timeout, &action.env())
                .await
                .map(Some)
                .map_err(HostError::RestartCommand),
            None => Ok(None),
        }
    }

    async fn reboot(
        &mut self,
        command: &[String],
        action: &ActionContext,
    ) -> Result<(), HostError> {
        run(command, Duration::from_secs(300), &action.env())
            .await
            .map(|_| ())
            .map_err(HostError::RebootCommand)
    }
}
