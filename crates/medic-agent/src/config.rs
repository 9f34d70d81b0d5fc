//! `agent.toml`: the host, its coordinators, and the jobs it watches.
//! Same two stages as the coordinator: raw serde (unknown keys collected
//! with their paths), then a validation that reports every error at once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use medic_policy::config::{
    ConfigError, ConfigErrors, Errors, MAX_COUNT, MAX_HEARTBEAT_INTERVAL, MIN_HEARTBEAT_INTERVAL,
    parse_toml,
};
use medic_policy::text;
use medic_policy::{Action, HostId, Labels};
use serde::Deserialize;

use crate::detect::{self, DetectorsConfig, RawHeartbeatFile, RawProbe, RawProcess, RawSystemd};

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
struct RawAgent {
    host_id: Option<String>,
    labels: BTreeMap<String, String>,
    coordinators: Option<Vec<String>>,
    check_interval: Option<String>,
    heartbeat_interval: Option<String>,
    request_timeout: Option<String>,
    state_dir: Option<String>,
    dry_run: Option<bool>,
    safety_margin: Option<String>,
    reboot_command: Option<Vec<String>>,
    metrics_listen: Option<String>,
    tls: Option<crate::tls::RawTls>,
    jobs: Vec<RawJob>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
struct RawJob {
    name: Option<String>,
    confirm: Option<i64>,
    reboot_after_failed_restarts: Option<i64>,
    give_up_after_failed_reboots: Option<i64>,
    restart: RawRestart,
    ladder: Option<Vec<RawStep>>,
    pre: Option<RawHook>,
    post: Option<RawHook>,
    probation: Option<String>,
    start_grace: Option<String>,
    heartbeat_file: Option<RawHeartbeatFile>,
    process: Option<RawProcess>,
    probe: Option<RawProbe>,
    systemd: Option<RawSystemd>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
struct RawRestart {
    signal: Option<String>,
    grace: Option<String>,
    command: Option<Vec<String>>,
    command_timeout: Option<String>,
    verify_timeout: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
struct RawStep {
    action: Option<String>,
    attempts: Option<i64>,
    command: Option<Vec<String>>,
    timeout: Option<String>,
    verify_timeout: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
struct RawHook {
    command: Option<Vec<String>>,
    timeout: Option<String>,
}

/// The validated agent configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentConfig {
    /// This host's identity (default: the hostname).
    pub host_id: HostId,
    /// Its labels (failure domains).
    pub labels: Labels,
    /// Coordinator URLs, tried in order.
    pub coordinators: Vec<String>,
    /// How often detectors run. Default 10s.
    pub check_interval: Duration,
    /// Heartbeat interval until the coordinator says otherwise. Default 10s.
    pub heartbeat_interval: Duration,
    /// Deadline of each call to the coordinator. Default 5s.
    pub request_timeout: Duration,
    /// Where counters and a reboot's pending permit are kept.
    pub state_dir: PathBuf,
    /// Log what would be done instead of doing it.
    pub dry_run: bool,
    /// A permit must have at least this much left, by the agent's own
    /// monotonic clock, before an irreversible step. Default 30s.
    pub safety_margin: Duration,
    /// How to reboot the host. Default `systemctl reboot`.
    pub reboot_command: Vec<String>,
    /// Where to serve Prometheus metrics; none by default.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Mutual TLS to the coordinators; none: plaintext (`http://` URLs).
    pub tls: Option<crate::tls::AgentTls>,
    /// The watched jobs.
    pub jobs: Vec<JobConfig>,
}

/// One watched job.
#[derive(Clone, Debug, PartialEq)]
pub struct JobConfig {
    /// Its name (unique on the host).
    pub name: String,
    /// Consecutive positive checks before the job counts as stuck. Default 3.
    pub confirm: u32,
    /// The rungs climbed in order while the job stays stuck, each tried
    /// `attempts` times before the next; past the last, a human. Default:
    /// `reboot_after_failed_restarts` (2) restarts, then
    /// `give_up_after_failed_reboots` (1) reboots.
    pub ladder: Vec<LadderStep>,
    /// How to restart it.
    pub restart: RestartConfig,
    /// Run under the permit before the action (drain, tell the workload,
    /// or veto by exiting non-zero).
    pub pre: Option<HookConfig>,
    /// Run under the permit once the action is verified (undo the drain).
    pub post: Option<HookConfig>,
    /// After a verified fix, the job must stay healthy this long before
    /// the outcome is SUCCEEDED; the permit is held meanwhile. Zero: off.
    /// Default 5m.
    pub probation: Duration,
    /// A job whose processes (found by its process detector) started less
    /// than this long ago is starting, not stuck: its detectors' alarms do
    /// not count toward `confirm`, and a permit already held is not acted
    /// on. For deploys and slow starters. Zero (the default): off.
    pub start_grace: Duration,
    /// How to tell it is stuck.
    pub detectors: DetectorsConfig,
}

/// How a job is restarted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestartConfig {
    /// Signal sent first to the job's process groups. Default TERM.
    pub signal: nix::sys::signal::Signal,
    /// How long to wait for them to exit before SIGKILL. Default 30s.
    pub grace: Duration,
    /// Run after the processes are gone (e.g. `systemctl restart x`).
    pub command: Option<Vec<String>>,
    /// Deadline of that command. Default 60s.
    pub command_timeout: Duration,
    /// The detectors must pass within this long after the restart. Default 2m.
    pub verify_timeout: Duration,
}

/// One rung of a job's ladder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LadderStep {
    /// The action asked for (and its permit's kind).
    pub action: Action,
    /// Failed attempts of it before the next rung.
    pub attempts: u32,
    /// For a custom action: the command that carries it out.
    pub custom: Option<CustomStep>,
}

/// How the agent carries out a custom action: a command run under the
/// action's permit, between the job's hooks, then the job verified (the
/// detectors must pass on checks made after the command finished) and put
/// on probation, as after a restart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CustomStep {
    /// argv, run without a shell in its own process group, with the
    /// action's context in its environment (`MEDIC_ACTION` names it).
    pub command: Vec<String>,
    /// Killed (its whole process group) after this long. Default 5m.
    pub timeout: Duration,
    /// The detectors must pass within this long after the command.
    /// Default: the job's `restart.verify_timeout`.
    pub verify_timeout: Duration,
}

impl JobConfig {
    /// The ladder's rung for `action`, if it has one.
    pub fn step(&self, action: Action) -> Option<&LadderStep> {
        self.ladder.iter().find(|s| s.action == action)
    }
}

/// The longest custom step `timeout`: an hour.
pub const MAX_STEP_TIMEOUT: Duration = Duration::from_secs(3600);

/// A hook: a command run before or after a job's action, under its permit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookConfig {
    /// argv, run without a shell in its own process group.
    pub command: Vec<String>,
    /// Killed (its whole process group) after this long. Default 60s.
    pub timeout: Duration,
}

/// The longest `probation`: a day.
pub const MAX_PROBATION: Duration = Duration::from_secs(24 * 3600);

/// The longest `start_grace`: an hour.
pub const MAX_START_GRACE: Duration = Duration::from_secs(3600);

/// The longest hook `timeout`: an hour.
pub const MAX_HOOK_TIMEOUT: Duration = Duration::from_secs(3600);

impl AgentConfig {
    /// Reads and validates `agent.toml` text.
    pub fn from_toml(text: &str) -> Result<Self, ConfigErrors> {
        let mut errs = Errors::default();
        let Some(raw) = parse_toml::<RawAgent>(text, &mut errs) else {
            return Err(into_errors(errs));
        };
        let config = raw.validate(&mut errs);
        errs.finish(config)
    }

    /// Reads and validates a file.
    pub fn load(path: &Path) -> Result<Self, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                path: String::new(),
                message: format!("cannot read {}: {e}", path.display()),
            }])
        })?;
        Self::from_toml(&text)
    }

    /// The job named `name`.
    pub fn job(&self, name: &str) -> Option<&JobConfig> {
        self.jobs.iter().find(|j| j.name == name)
    }

    /// One line for `check-config` and logs.
    pub fn summary(&self) -> String {
        format!(
            "host {}, {} job(s) [{}], coordinators {}, check every {}{}",
            self.host_id,
            self.jobs.len(),
            self.jobs
                .iter()
                .map(|j| j.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            self.coordinators.join(" "),
            humantime::format_duration(self.check_interval),
            if self.dry_run { ", dry-run" } else { "" }
        )
    }
}

fn into_errors(errs: Errors) -> ConfigErrors {
    match errs.finish(()) {
        Ok(()) => ConfigErrors(Vec::new()),
        Err(e) => e,
    }
}

fn argv(errs: &mut Errors, path: &str, raw: &[String]) -> Vec<String> {
    if raw.is_empty() || raw[0].is_empty() {
        errs.push(path, "must name a program (argv, not a shell line)");
    }
    raw.to_vec()
}

/// The shortest `check_interval`: 10 ms.
pub const MIN_CHECK_INTERVAL: Duration = Duration::from_millis(10);

/// The longest `check_interval`: an hour.
pub const MAX_CHECK_INTERVAL: Duration = Duration::from_secs(3600);

/// The longest `request_timeout`: an hour.
pub const MAX_REQUEST_TIMEOUT: Duration = Duration::from_secs(3600);

/// Records that `value` (a host id, a label's name or value, a job name)
/// holds an invisible character (see [`medic_policy::text`]).
fn hidden(errs: &mut Errors, path: &str, what: &str, value: &str) {
    let c = text::first_hidden(value).map_or_else(String::new, text::describe);
    errs.push(
        path,
        format!(
            "{what}must not contain invisible (control or format) characters such as \
             bidirectional overrides or zero-width spaces, got {value:?} (holds {c})"
        ),
    );
}

fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

impl RawAgent {
    fn validate(&self, errs: &mut Errors) -> AgentConfig {
        let host_id = match self.host_id.clone().or_else(hostname) {
            None => {
                errs.push("host_id", "is required (the hostname could not be read)");
                HostId::new("unknown").unwrap_or_else(|_| unreachable!("a valid literal"))
            }
            Some(h) => match HostId::new(h) {
                Ok(h) if text::first_hidden(h.as_str()).is_some() => {
                    hidden(errs, "host_id", "", h.as_str());
                    HostId::new("unknown").unwrap_or_else(|_| unreachable!("a valid literal"))
                }
                Ok(h) => h,
                Err(e) => {
                    errs.push("host_id", e.message);
                    HostId::new("unknown").unwrap_or_else(|_| unreachable!("a valid literal"))
                }
            },
        };
        for (k, v) in &self.labels {
            if k.is_empty() || v.is_empty() || k.contains(['=', ',']) {
                errs.push(
                    format!("labels.{k}"),
                    "label names and values must be non-empty, without '=' or ','",
                );
            } else if text::first_hidden(k).is_some() {
                hidden(errs, &format!("labels.{k}"), "name ", k);
            } else if text::first_hidden(v).is_some() {
                hidden(errs, &format!("labels.{k}"), "value ", v);
            }
        }
        let coordinators = self
            .coordinators
            .clone()
            .unwrap_or_else(|| vec!["http://127.0.0.1:7470".to_owned()]);
        if coordinators.is_empty() {
            errs.push("coordinators", "must list at least one URL");
        }
        for (i, c) in coordinators.iter().enumerate() {
            if !(c.starts_with("http://") || c.starts_with("https://")) {
                errs.push(
                    format!("coordinators[{i}]"),
                    format!("{c:?} is not an http:// or https:// URL"),
                );
            } else if let Err(e) = medic_client::endpoint::check(c) {
                errs.push(format!("coordinators[{i}]"), e.to_string());
            } else if self.tls.is_some() && c.starts_with("http://") {
                errs.push(
                    format!("coordinators[{i}]"),
                    format!("{c:?} is plaintext but [tls] is configured; use https://"),
                );
            } else if self.tls.is_none() && c.starts_with("https://") {
                errs.push(
                    format!("coordinators[{i}]"),
                    format!(
                        "{c:?} needs [tls] (ca, cert, key): the coordinator identifies agents by \
                         their certificates"
                    ),
                );
            }
        }
        let tls = self.tls.as_ref().and_then(|t| t.validate(errs, &host_id));
        let check_interval = errs.duration_in(
            "check_interval",
            self.check_interval.as_deref(),
            Duration::from_secs(10),
            MIN_CHECK_INTERVAL..=MAX_CHECK_INTERVAL,
            "",
        );
        let heartbeat_interval = errs.duration_in(
            "heartbeat_interval",
            self.heartbeat_interval.as_deref(),
            Duration::from_secs(10),
            MIN_HEARTBEAT_INTERVAL..=MAX_HEARTBEAT_INTERVAL,
            "",
        );
        let request_timeout = errs.duration_in(
            "request_timeout",
            self.request_timeout.as_deref(),
            Duration::from_secs(5),
            Duration::from_millis(1)..=MAX_REQUEST_TIMEOUT,
            "",
        );
        let state_dir = PathBuf::from(
            self.state_dir
                .clone()
                .unwrap_or_else(|| "/var/lib/medic-agent".to_owned()),
        );
        if let Ok(meta) = std::fs::metadata(&state_dir)
            && !meta.is_dir()
        {
            errs.push(
                "state_dir",
                format!(
                    "{} exists and is not a directory; name a directory (it is created when \
                     missing)",
                    state_dir.display()
                ),
            );
        }
        let safety_margin = errs.duration(
            "safety_margin",
            self.safety_margin.as_deref(),
            Duration::from_secs(30),
        );
        let reboot_command = match &self.reboot_command {
            None => vec!["systemctl".to_owned(), "reboot".to_owned()],
            Some(c) => argv(errs, "reboot_command", c),
        };
        let metrics_listen = self.metrics_listen.as_deref().and_then(|a| {
            a.parse()
                .map_err(|e| {
                    errs.push(
                        "metrics_listen",
                        format!(
                            "invalid address {a:?} ({e}); use IP:PORT, for example 127.0.0.1:7472"
                        ),
                    );
                })
                .ok()
        });
        let mut names = std::collections::BTreeSet::new();
        let jobs = self
            .jobs
            .iter()
            .enumerate()
            .map(|(i, j)| {
                let job = j.validate(errs, &format!("jobs[{i}]"));
                if !names.insert(job.name.clone()) {
                    errs.push(
                        format!("jobs[{i}].name"),
                        format!("{:?} is used by another job", job.name),
                    );
                }
                job
            })
            .collect();
        AgentConfig {
            host_id,
            labels: self.labels.clone(),
            coordinators,
            check_interval,
            heartbeat_interval,
            request_timeout,
            state_dir,
            dry_run: self.dry_run.unwrap_or(false),
            safety_margin,
            reboot_command,
            metrics_listen,
            tls,
            jobs,
        }
    }
}

fn signal(errs: &mut Errors, path: &str, raw: Option<&str>) -> nix::sys::signal::Signal {
    use nix::sys::signal::Signal;
    let name = raw.unwrap_or("TERM");
    let full = if name.starts_with("SIG") {
        name.to_owned()
    } else {
        format!("SIG{name}")
    };
    match full.parse::<Signal>() {
        Ok(s) => s,
        Err(_) => {
            errs.push(
                path,
                format!("unknown signal {name:?} (for example TERM, INT, HUP)"),
            );
            Signal::SIGTERM
        }
    }
}

impl RawJob {
    fn validate(&self, errs: &mut Errors, path: &str) -> JobConfig {
        let name = match self.name.as_deref() {
            None | Some("") => {
                errs.push(format!("{path}.name"), "is required");
                String::new()
            }
            Some(n) => {
                if text::first_hidden(n).is_some() {
                    hidden(errs, &format!("{path}.name"), "", n);
                }
                n.to_owned()
            }
        };
        let r = &self.restart;
        let restart = RestartConfig {
            signal: signal(errs, &format!("{path}.restart.signal"), r.signal.as_deref()),
            grace: errs.duration(
                &format!("{path}.restart.grace"),
                r.grace.as_deref(),
                Duration::from_secs(30),
            ),
            command: r
                .command
                .as_ref()
                .map(|c| argv(errs, &format!("{path}.restart.command"), c)),
            command_timeout: errs.positive_duration(
                &format!("{path}.restart.command_timeout"),
                r.command_timeout.as_deref(),
                Duration::from_secs(60),
            ),
            verify_timeout: errs.positive_duration(
                &format!("{path}.restart.verify_timeout"),
                r.verify_timeout.as_deref(),
                Duration::from_secs(120),
            ),
        };
        let pre = self
            .pre
            .as_ref()
            .map(|h| h.validate(errs, &format!("{path}.pre")));
        let post = self
            .post
            .as_ref()
            .map(|h| h.validate(errs, &format!("{path}.post")));
        let probation = errs.duration_in(
            &format!("{path}.probation"),
            self.probation.as_deref(),
            Duration::from_secs(300),
            Duration::ZERO..=MAX_PROBATION,
            "",
        );
        let start_grace = errs.duration_in(
            &format!("{path}.start_grace"),
            self.start_grace.as_deref(),
            Duration::ZERO,
            Duration::ZERO..=MAX_START_GRACE,
            "",
        );
        if !start_grace.is_zero() && self.process.is_none() {
            errs.push(
                format!("{path}.start_grace"),
                format!(
                    "job {name:?} has a start_grace but no process detector: the agent learns \
                     when the job started from its processes; add [jobs.process] (a pidfile, a \
                     systemd unit or a cmdline), or remove start_grace"
                ),
            );
        }
        let detectors = detect::validate(
            self.heartbeat_file.as_ref(),
            self.process.as_ref(),
            self.probe.as_ref(),
            self.systemd.as_ref(),
            errs,
            path,
        );
        let ladder = self.validate_ladder(errs, path, &restart);
        // A restart stops the process detector's processes and runs the
        // restart command. With neither, it changes nothing, and nothing could
        // ever give evidence newer than it.
        let restarts = ladder.iter().any(|s| s.action == Action::RestartJob);
        if restarts && restart.command.is_none() && self.process.is_none() {
            errs.push(
                format!("{path}.restart"),
                format!(
                    "job {name:?} cannot be restarted: with no restart.command and no process detector, \
                     a restart stops and starts nothing, so no detector could show the job healthy \
                     after it; set restart.command (and a process detector to stop the old \
                     process), or leave restart_job out of its ladder \
                     (reboot_after_failed_restarts = 0) to go straight to the next rung"
                ),
            );
        }
        JobConfig {
            name,
            confirm: errs.count_in(&format!("{path}.confirm"), self.confirm, 3, 1, MAX_COUNT),
            ladder,
            restart,
            pre,
            post,
            probation,
            start_grace,
            detectors,
        }
    }
}

impl RawJob {
    /// `[[jobs.ladder]]`, or the default ladder from
    /// `reboot_after_failed_restarts` and `give_up_after_failed_reboots`.
    fn validate_ladder(
        &self,
        errs: &mut Errors,
        path: &str,
        restart: &RestartConfig,
    ) -> Vec<LadderStep> {
        let Some(raw) = &self.ladder else {
            let restarts = errs.count_in(
                &format!("{path}.reboot_after_failed_restarts"),
                self.reboot_after_failed_restarts,
                2,
                0,
                MAX_COUNT,
            );
            let reboots = errs.count_in(
                &format!("{path}.give_up_after_failed_reboots"),
                self.give_up_after_failed_reboots,
                1,
                0,
                MAX_COUNT,
            );
            return [
                (Action::RestartJob, restarts),
                (Action::RebootHost, reboots),
            ]
            .into_iter()
            .filter(|&(_, n)| n > 0)
            .map(|(action, attempts)| LadderStep {
                action,
                attempts,
                custom: None,
            })
            .collect();
        };
        for key in [
            (
                "reboot_after_failed_restarts",
                self.reboot_after_failed_restarts,
            ),
            (
                "give_up_after_failed_reboots",
                self.give_up_after_failed_reboots,
            ),
        ]
        .iter()
        .filter(|(_, v)| v.is_some())
        .map(|(k, _)| k)
        {
            errs.push(
                format!("{path}.{key}"),
                "cannot be combined with ladder: give each rung its attempts there",
            );
        }
        if raw.is_empty() {
            errs.push(
                format!("{path}.ladder"),
                "must have at least one rung (for example { action = \"restart_job\", attempts = 2 })",
            );
        }
        let mut steps: Vec<LadderStep> = Vec::new();
        for (i, r) in raw.iter().enumerate() {
            let at = format!("{path}.ladder[{i}]");
            let action = match r.action.as_deref() {
                None => {
                    errs.push(
                        format!("{at}.action"),
                        "is required: restart_job, reboot_host, or a custom action the \
                         coordinator declares",
                    );
                    continue;
                }
                Some(name) => match Action::declare(name) {
                    Ok(a) => a,
                    Err(e) => {
                        errs.push(format!("{at}.action"), e.message);
                        continue;
                    }
                },
            };
            if steps.iter().any(|s| s.action == action) {
                errs.push(
                    format!("{at}.action"),
                    format!(
                        "{action} is already a rung of this ladder; give it more attempts instead"
                    ),
                );
                continue;
            }
            let attempts = errs.count_in(&format!("{at}.attempts"), r.attempts, 1, 1, MAX_COUNT);
            let custom = if action.is_builtin() {
                for (key, set) in [
                    ("command", r.command.is_some()),
                    ("timeout", r.timeout.is_some()),
                    ("verify_timeout", r.verify_timeout.is_some()),
                ] {
                    if set {
                        errs.push(
                            format!("{at}.{key}"),
                            format!(
                                "is for custom actions; {action} is configured by {}",
                                if action == Action::RestartJob {
                                    "[jobs.restart]"
                                } else {
                                    "reboot_command"
                                }
                            ),
                        );
                    }
                }
                None
            } else {
                let command = match &r.command {
                    Some(c) => argv(errs, &format!("{at}.command"), c),
                    None => {
                        errs.push(
                            format!("{at}.command"),
                            format!(
                                "is required for the custom action {action}: the argv that \
                                 carries it out, for example [\"/usr/local/bin/{action}\"]"
                            ),
                        );
                        Vec::new()
                    }
                };
                Some(CustomStep {
                    command,
                    timeout: errs.duration_in(
                        &format!("{at}.timeout"),
                        r.timeout.as_deref(),
                        Duration::from_secs(300),
                        Duration::from_millis(1)..=MAX_STEP_TIMEOUT,
                        "",
                    ),
                    verify_timeout: errs.positive_duration(
                        &format!("{at}.verify_timeout"),
                        r.verify_timeout.as_deref(),
                        restart.verify_timeout,
                    ),
                })
            };
            steps.push(LadderStep {
                action,
                attempts,
                custom,
            });
        }
        steps
    }
}

impl RawHook {
    fn validate(&self, errs: &mut Errors, path: &str) -> HookConfig {
        let command = match &self.command {
            Some(c) => argv(errs, &format!("{path}.command"), c),
            None => {
                errs.push(
                    format!("{path}.command"),
                    "is required: the hook's argv, for example [\"/usr/local/bin/drain\"]",
                );
                Vec::new()
            }
        };
        HookConfig {
            command,
            timeout: errs.duration_in(
                &format!("{path}.timeout"),
                self.timeout.as_deref(),
                Duration::from_secs(60),
                Duration::from_millis(1)..=MAX_HOOK_TIMEOUT,
                "",
            ),
        }
    }
}
