//! Detectors: does a job look stuck right now?
//!
//! Four kinds, any of which may be combined for one job (ARCHITECTURE.md "The
//! agent"): a heartbeat file's age, the job's process as /proc shows it, a
//! probe command, and the state of a systemd unit. [`JobDetectors::check`]
//! runs them all once and answers [`Verdict::Fired`] with the first one that
//! fired; counting `confirm` consecutive positive checks is the caller's job.
//!
//! One rule runs through all of them: **a detector that cannot look does not
//! say "stuck"**. A pidfile we may not read, a missing `systemctl`, a probe
//! binary that does not exist or a /proc read that hangs are the agent's
//! problem, not evidence about the job, and acting on them could restart a
//! healthy job or reboot a healthy host. They are logged at `warn` once per
//! change of reason (and again after the detector recovered) and the check
//! answers healthy for that detector.
//!
//! Time: every "for longer than" that cannot be read from the system (D state,
//! a systemd unit's transition, absence) is measured from the first check
//! that saw the condition, using the `now` passed to [`JobDetectors::check`].
//! Such a clock only starts late, never early, and tests drive it without
//! sleeping.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use medic_policy::config::Errors;
use serde::Deserialize;

mod blocking;
mod command;
mod heartbeat;
mod probe;
mod process;
mod systemd;
mod warn;

// === Verdicts ===

/// What a detector saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Evidence {
    /// Which detector fired: `"heartbeat_file"`, `"process"`, `"probe"` or
    /// `"systemd"`.
    pub detector: &'static str,
    /// What it saw, for a human (it goes into heartbeats and logs), e.g.
    /// `heartbeat file /run/x.hb is 12m 3s old (stale_after 2m)`.
    pub detail: String,
}

/// The answer of one check. A detector firing once is not yet a stuck job:
/// the job is stuck when one fires on `confirm` consecutive checks
/// ([`crate::ladder::Health`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// No configured detector fired (or none could look; see the module docs).
    Healthy,
    /// At least one detector fired; this is the first one's evidence.
    Fired(Evidence),
}

impl Verdict {
    /// Whether a detector fired.
    pub fn fired(&self) -> bool {
        matches!(self, Verdict::Fired(_))
    }
}

// === Raw (serde) sections ===

/// `heartbeat_file = { ... }` of a job, as written.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawHeartbeatFile {
    /// The file the job touches while it makes progress (absolute path).
    pub path: Option<String>,
    /// Stuck once the file's mtime is older than this. Default 2m.
    pub stale_after: Option<String>,
    /// A missing file is stuck only this long after the agent (or the job)
    /// started. Default: `stale_after`.
    pub startup_grace: Option<String>,
}

/// `process = { ... }` of a job, as written. Exactly one of `pidfile`,
/// `systemd_unit` and `cmdline` names the process.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawProcess {
    /// A file holding the job's pid (absolute path).
    pub pidfile: Option<String>,
    /// A systemd unit whose `MainPID` is the job.
    pub systemd_unit: Option<String>,
    /// A regex matched against each process's command line (arguments joined
    /// by spaces); every match is the job.
    pub cmdline: Option<String>,
    /// Stuck when the process has run longer than this. Default: no limit.
    pub max_runtime: Option<String>,
    /// Stuck when the process stays in uninterruptible sleep (state D) longer
    /// than this. Default 2m.
    pub d_state_for: Option<String>,
    /// Whether a stopped process (state T or t) is stuck. Default true.
    pub stopped_is_stuck: Option<bool>,
    /// Whether no process at all is stuck. Default true.
    pub absent_is_stuck: Option<bool>,
    /// Absence counts after this long, from the agent's start or from when the
    /// process was last seen. Default 1m.
    pub absent_grace: Option<String>,
}

/// `probe = { ... }` of a job, as written.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawProbe {
    /// The command, as argv (no shell): `["/usr/local/bin/check-db", "-q"]`.
    pub command: Option<Vec<String>>,
    /// Killed (with its process group) and stuck after this long. Default 10s.
    pub timeout: Option<String>,
    /// Bytes of stdout and stderr kept for the evidence; the rest is read and
    /// dropped. Default 4096, at most 1 MiB.
    pub max_output: Option<i64>,
}

/// `systemd = { ... }` of a job, as written.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawSystemd {
    /// The unit (`db.service`).
    pub unit: Option<String>,
    /// Stuck when the unit stays `activating` or `deactivating` longer than
    /// this. Default 5m.
    pub transition_stuck_after: Option<String>,
}

// === Validated settings ===

/// Default `heartbeat_file.stale_after`.
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(120);
/// Default `process.d_state_for`.
pub const DEFAULT_D_STATE_FOR: Duration = Duration::from_secs(120);
/// Default `process.absent_grace`.
pub const DEFAULT_ABSENT_GRACE: Duration = Duration::from_secs(60);
/// Default `probe.timeout`.
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default `probe.max_output`, bytes.
pub const DEFAULT_MAX_OUTPUT: usize = 4096;
/// The largest `probe.max_output` accepted, bytes: evidence is for a human,
/// and the agent must stay small.
pub const MAX_MAX_OUTPUT: usize = 1 << 20;
/// Default `systemd.transition_stuck_after`.
pub const DEFAULT_TRANSITION_STUCK_AFTER: Duration = Duration::from_secs(300);

/// Validated detector settings of one job.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct DetectorsConfig {
    /// The heartbeat file detector, if configured.
    pub heartbeat_file: Option<HeartbeatFileConfig>,
    /// The process detector, if configured.
    pub process: Option<ProcessConfig>,
    /// The probe command, if configured.
    pub probe: Option<ProbeConfig>,
    /// The systemd unit detector, if configured.
    pub systemd: Option<SystemdConfig>,
}

/// Validated `heartbeat_file`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeartbeatFileConfig {
    /// The file (absolute).
    pub path: PathBuf,
    /// Stuck once older than this. Default 2m.
    pub stale_after: Duration,
    /// Missing is stuck only this long after start. Default: `stale_after`.
    pub startup_grace: Duration,
}

/// How the process detector finds the job's process.
#[derive(Clone, Debug)]
pub enum ProcessTarget {
    /// The pid in this file (absolute path).
    Pidfile(PathBuf),
    /// The unit's `MainPID` (0: not running).
    SystemdUnit(String),
    /// Every process whose command line matches.
    Cmdline(regex::Regex),
}

impl PartialEq for ProcessTarget {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (ProcessTarget::Pidfile(a), ProcessTarget::Pidfile(b)) => a == b,
            (ProcessTarget::SystemdUnit(a), ProcessTarget::SystemdUnit(b)) => a == b,
            // Same source text, same regex.
            (ProcessTarget::Cmdline(a), ProcessTarget::Cmdline(b)) => a.as_str() == b.as_str(),
            _ => false,
        }
    }
}

/// Validated `process`.
#[derive(Clone, Debug, PartialEq)]
pub struct ProcessConfig {
    /// How the process is found.
    pub target: ProcessTarget,
    /// Stuck when running longer than this. Default: no limit.
    pub max_runtime: Option<Duration>,
    /// Stuck when in state D continuously longer than this. Default 2m.
    pub d_state_for: Duration,
    /// Stopped (T, t) is stuck. Default true.
    pub stopped_is_stuck: bool,
    /// No process is stuck (after `absent_grace`). Default true.
    pub absent_is_stuck: bool,
    /// Absence counts after this long since start or last seen. Default 1m.
    pub absent_grace: Duration,
}

/// Validated `probe`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeConfig {
    /// argv; `command[0]` is looked up in `PATH`.
    pub command: Vec<String>,
    /// Killed and stuck after this long. Default 10s.
    pub timeout: Duration,
    /// Output bytes kept. Default 4096.
    pub max_output: usize,
}

/// Validated `systemd`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SystemdConfig {
    /// The unit.
    pub unit: String,
    /// Stuck when activating/deactivating longer than this. Default 5m.
    pub transition_stuck_after: Duration,
}

// === Validation ===

/// Validates the four optional detector sections of the job at `path` (e.g.
/// `jobs[0]`), pushing every error with its key path
/// (`jobs[0].heartbeat_file.stale_after: invalid duration "x" ...`) into
/// `errs`. At least one detector is required (an error at `path`), and
/// `process` names its process exactly one way. The result is only meaningful
/// when nothing was pushed; an invalid section is left out of it.
pub fn validate(
    heartbeat_file: Option<&RawHeartbeatFile>,
    process: Option<&RawProcess>,
    probe: Option<&RawProbe>,
    systemd: Option<&RawSystemd>,
    errs: &mut Errors,
    path: &str,
) -> DetectorsConfig {
    if heartbeat_file.is_none() && process.is_none() && probe.is_none() && systemd.is_none() {
        errs.push(
            path,
            "no detector configured; set at least one of heartbeat_file, process, probe, systemd",
        );
    }
    DetectorsConfig {
        heartbeat_file: heartbeat_file
            .and_then(|r| validate_heartbeat(r, errs, &format!("{path}.heartbeat_file"))),
        process: process.and_then(|r| validate_process(r, errs, &format!("{path}.process"))),
        probe: probe.and_then(|r| validate_probe(r, errs, &format!("{path}.probe"))),
        systemd: systemd.and_then(|r| validate_systemd(r, errs, &format!("{path}.systemd"))),
    }
}

fn absolute_path(raw: Option<&str>, errs: &mut Errors, path: &str) -> Option<PathBuf> {
    match raw {
        None => {
            errs.push(path, "required");
            None
        }
        Some("") => {
            errs.push(path, "must not be empty");
            None
        }
        Some(s) if !s.starts_with('/') => {
            errs.push(path, format!("must be an absolute path, got {s:?}"));
            None
        }
        Some(s) => Some(PathBuf::from(s)),
    }
}

fn unit_name(raw: &str, errs: &mut Errors, path: &str) -> Option<String> {
    if raw.is_empty() {
        errs.push(path, "must not be empty");
        None
    } else if raw.starts_with('-') || raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
        errs.push(
            path,
            format!("invalid systemd unit name {raw:?} (no leading '-', no whitespace)"),
        );
        None
    } else {
        Some(raw.to_owned())
    }
}

fn validate_heartbeat(
    raw: &RawHeartbeatFile,
    errs: &mut Errors,
    path: &str,
) -> Option<HeartbeatFileConfig> {
    let file = absolute_path(raw.path.as_deref(), errs, &format!("{path}.path"));
    let stale_after = errs.positive_duration(
        &format!("{path}.stale_after"),
        raw.stale_after.as_deref(),
        DEFAULT_STALE_AFTER,
    );
    let startup_grace = errs.duration(
        &format!("{path}.startup_grace"),
        raw.startup_grace.as_deref(),
        stale_after,
    );
    Some(HeartbeatFileConfig {
        path: file?,
        stale_after,
        startup_grace,
    })
}

/// Regexes come from the config file; bound what one may cost.
const CMDLINE_REGEX_SIZE_LIMIT: usize = 1 << 20;

fn validate_process(raw: &RawProcess, errs: &mut Errors, path: &str) -> Option<ProcessConfig> {
    let set: Vec<&str> = [
        ("pidfile", raw.pidfile.is_some()),
        ("systemd_unit", raw.systemd_unit.is_some()),
        ("cmdline", raw.cmdline.is_some()),
    ]
    .iter()
    .filter(|(_, is_set)| *is_set)
    .map(|(name, _)| *name)
    .collect();
    let target = match set.as_slice() {
        ["pidfile"] => absolute_path(raw.pidfile.as_deref(), errs, &format!("{path}.pidfile"))
            .map(ProcessTarget::Pidfile),
        ["systemd_unit"] => raw
            .systemd_unit
            .as_deref()
            .and_then(|u| unit_name(u, errs, &format!("{path}.systemd_unit")))
            .map(ProcessTarget::SystemdUnit),
        ["cmdline"] => match raw.cmdline.as_deref() {
            Some("") => {
                errs.push(
                    format!("{path}.cmdline"),
                    "must not be empty (it would match every process)",
                );
                None
            }
            Some(re) => match regex::RegexBuilder::new(re)
                .size_limit(CMDLINE_REGEX_SIZE_LIMIT)
                .build()
            {
                Ok(re) => Some(ProcessTarget::Cmdline(re)),
                Err(e) => {
                    errs.push(
                        format!("{path}.cmdline"),
                        format!("invalid regex {re:?}: {e}"),
                    );
                    None
                }
            },
            None => None,
        },
        [] => {
            errs.push(path, "set one of pidfile, systemd_unit, cmdline");
            None
        }
        several => {
            errs.push(
                path,
                format!(
                    "set exactly one of pidfile, systemd_unit, cmdline (found {})",
                    several.join(", ")
                ),
            );
            None
        }
    };
    // An invalid value falls back to MAX, so it is not also "zero".
    let max_runtime = raw
        .max_runtime
        .as_deref()
        .map(|s| errs.positive_duration(&format!("{path}.max_runtime"), Some(s), Duration::MAX));
    let d_state_for = errs.positive_duration(
        &format!("{path}.d_state_for"),
        raw.d_state_for.as_deref(),
        DEFAULT_D_STATE_FOR,
    );
    let absent_grace = errs.duration(
        &format!("{path}.absent_grace"),
        raw.absent_grace.as_deref(),
        DEFAULT_ABSENT_GRACE,
    );
    Some(ProcessConfig {
        target: target?,
        max_runtime,
        d_state_for,
        stopped_is_stuck: raw.stopped_is_stuck.unwrap_or(true),
        absent_is_stuck: raw.absent_is_stuck.unwrap_or(true),
        absent_grace,
    })
}

fn validate_probe(raw: &RawProbe, errs: &mut Errors, path: &str) -> Option<ProbeConfig> {
    let command = match &raw.command {
        None => {
            errs.push(format!("{path}.command"), "required");
            None
        }
        Some(argv) if argv.first().is_none_or(String::is_empty) => {
            errs.push(
                format!("{path}.command"),
                "must start with a program name (argv, e.g. [\"/usr/bin/check\", \"-q\"])",
            );
            None
        }
        Some(argv) => Some(argv.clone()),
    };
    let timeout = errs.positive_duration(
        &format!("{path}.timeout"),
        raw.timeout.as_deref(),
        DEFAULT_PROBE_TIMEOUT,
    );
    let max_output = match raw.max_output {
        None => DEFAULT_MAX_OUTPUT,
        Some(n) => match usize::try_from(n) {
            Ok(n) if (1..=MAX_MAX_OUTPUT).contains(&n) => n,
            _ => {
                errs.push(
                    format!("{path}.max_output"),
                    format!("must be between 1 and {MAX_MAX_OUTPUT} bytes, got {n}"),
                );
                DEFAULT_MAX_OUTPUT
            }
        },
    };
    Some(ProbeConfig {
        command: command?,
        timeout,
        max_output,
    })
}

fn validate_systemd(raw: &RawSystemd, errs: &mut Errors, path: &str) -> Option<SystemdConfig> {
    let unit = match raw.unit.as_deref() {
        None => {
            errs.push(format!("{path}.unit"), "required");
            None
        }
        Some(u) => unit_name(u, errs, &format!("{path}.unit")),
    };
    let transition_stuck_after = errs.positive_duration(
        &format!("{path}.transition_stuck_after"),
        raw.transition_stuck_after.as_deref(),
        DEFAULT_TRANSITION_STUCK_AFTER,
    );
    Some(SystemdConfig {
        unit: unit?,
        transition_stuck_after,
    })
}

// === JobDetectors ===

/// The `systemctl` run when none is configured (looked up in `PATH`).
pub const SYSTEMCTL: &str = "systemctl";

/// One job's detectors, with the state they need across checks (since when a
/// process is in state D, when it was last seen, warnings already given...).
#[derive(Debug)]
pub struct JobDetectors {
    heartbeat: Option<heartbeat::HeartbeatDetector>,
    process: Option<process::ProcessDetector>,
    probe: Option<probe::ProbeDetector>,
    systemd: Option<systemd::SystemdDetector>,
}

impl JobDetectors {
    /// Builds the detectors of one job. `proc_root` is `/proc` in production
    /// and a fixture directory in tests; `started` is when the agent (or the
    /// job) started, from which start-up grace and absence are counted.
    pub fn new(config: DetectorsConfig, proc_root: PathBuf, started: SystemTime) -> Self {
        let systemctl = PathBuf::from(SYSTEMCTL);
        JobDetectors {
            heartbeat: config
                .heartbeat_file
                .map(|c| heartbeat::HeartbeatDetector::new(c, started)),
            process: config
                .process
                .map(|c| process::ProcessDetector::new(c, proc_root, started, systemctl.clone())),
            probe: config.probe.map(probe::ProbeDetector::new),
            systemd: config
                .systemd
                .map(|c| systemd::SystemdDetector::new(c, systemctl)),
        }
    }

    /// How long ago the oldest of the job's processes found by the last
    /// check started, on the boot clock (`None` without a process
    /// detector, or when it found none).
    pub fn started_ago(&self) -> Option<Duration> {
        self.process.as_ref().and_then(|p| p.started_ago())
    }

    /// Uses `ticks` clock ticks per second to read /proc start times instead
    /// of the system's (`sysconf(_SC_CLK_TCK)`), for fixtures written with
    /// another value (Linux uses 100 nearly everywhere).
    #[must_use]
    pub fn with_clock_ticks(mut self, ticks: u64) -> Self {
        if let Some(p) = &mut self.process {
            p.set_clock_ticks(ticks);
        }
        self
    }

    /// Runs `systemctl` from this path instead of `PATH` (tests use a fake).
    #[must_use]
    pub fn with_systemctl(mut self, systemctl: PathBuf) -> Self {
        if let Some(p) = &mut self.process {
            p.set_systemctl(systemctl.clone());
        }
        if let Some(s) = &mut self.systemd {
            s.set_systemctl(systemctl);
        }
        self
    }

    /// Runs every configured detector once (concurrently) and answers
    /// [`Verdict::Fired`] with the first that fired, in the order heartbeat
    /// file, process, probe, systemd. All of them run every time, so their
    /// state (since when in state D, last seen...) stays current.
    pub async fn check(&mut self, now: SystemTime) -> Verdict {
        let (heartbeat, process, probe, systemd) = tokio::join!(
            async {
                match &mut self.heartbeat {
                    Some(d) => d.check(now).await,
                    None => None,
                }
            },
            async {
                match &mut self.process {
                    Some(d) => d.check(now).await,
                    None => None,
                }
            },
            async {
                match &mut self.probe {
                    Some(d) => d.check().await,
                    None => None,
                }
            },
            async {
                match &mut self.systemd {
                    Some(d) => d.check(now).await,
                    None => None,
                }
            },
        );
        match heartbeat.or(process).or(probe).or(systemd) {
            Some(evidence) => Verdict::Fired(evidence),
            None => Verdict::Healthy,
        }
    }

    /// A restart of the job began at `at` (wall clock), which is `now` for
    /// a restart about to begin, or earlier for a reboot finished after the
    /// host came back: from now on [`JobDetectors::fresh`] accepts only
    /// evidence newer than it. Call it before the job's processes are
    /// stopped.
    pub fn mark_restart(&mut self, at: SystemTime, now: SystemTime) {
        if let Some(d) = &mut self.heartbeat {
            d.mark(at, "the restart");
        }
        if let Some(d) = &mut self.process {
            d.mark_restart(at, now.duration_since(at).unwrap_or_default());
        }
        if let Some(d) = &mut self.probe {
            d.mark("the restart");
        }
        if let Some(d) = &mut self.systemd {
            d.mark_restart();
        }
    }

    /// An action that need not restart the job (a custom action, `action`)
    /// begins at `at`, now: from now on [`JobDetectors::fresh`] accepts only
    /// checks that observed the job after it: a heartbeat file written
    /// after it, the job's processes found (old ones too), a probe that
    /// passed, the systemd unit read active. A detector that could not look
    /// (a hung mount, an unreadable /proc) reports no evidence of being
    /// stuck, but that is not evidence of a fix either.
    pub fn mark_in_place(&mut self, action: &str, at: SystemTime) {
        let what = format!("the {action} began");
        if let Some(d) = &mut self.heartbeat {
            d.mark(at, &what);
        }
        if let Some(d) = &mut self.process {
            d.mark_in_place(at, &what);
        }
        if let Some(d) = &mut self.probe {
            d.mark(&what);
        }
        if let Some(d) = &mut self.systemd {
            d.mark_in_place(&what);
        }
    }

    /// After [`JobDetectors::mark_restart`] and a healthy check: whether
    /// every detector's last check saw evidence newer than the restart (a
    /// heartbeat file written after it began, processes started after it, a
    /// probe that passed after the restart command finished, a systemd unit
    /// that entered active after it); after [`JobDetectors::mark_in_place`],
    /// whether each observed the job after the action began. `Err` names
    /// the first detector that did not, and what it saw. Without an action
    /// marked: `Ok`.
    pub fn fresh(&self) -> Result<(), String> {
        if let Some(d) = &self.heartbeat {
            d.fresh()?;
        }
        if let Some(d) = &self.process {
            d.fresh()?;
        }
        if let Some(d) = &self.probe {
            d.fresh()?;
        }
        if let Some(d) = &self.systemd {
            d.fresh()?;
        }
        Ok(())
    }

    /// The job's processes (from the process detector: the pidfile, the
    /// systemd unit's `MainPID`, or every command-line match), for the restart
    /// step to signal. Empty without a process detector or when none is found
    /// (or they cannot be looked up right now).
    pub async fn pids(&self) -> Vec<i32> {
        match &self.process {
            Some(p) => p.pids().await,
            None => Vec::new(),
        }
    }
}

// === Helpers ===

/// A duration for a human: whole seconds from a second up (`12m 3s`),
/// milliseconds below (`200ms`).
pub(crate) fn human(d: Duration) -> String {
    let rounded = if d >= Duration::from_secs(1) {
        Duration::from_secs(d.as_secs())
    } else {
        Duration::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    };
    humantime::format_duration(rounded).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_shown_in_whole_seconds_or_milliseconds() {
        assert_eq!(human(Duration::from_millis(723_456)), "12m 3s");
        assert_eq!(human(Duration::from_micros(200_400)), "200ms");
    }
}
