//! The process detector: the job's process as /proc shows it.
//!
//! The process is found by a pidfile, a systemd unit's `MainPID`, or a regex
//! over every process's command line; its `stat` is parsed by the procfs
//! crate under a configurable root (`/proc`, or a fixture directory). Start
//! times are clock ticks since boot, turned into wall-clock time with the
//! `btime` line of `<root>/stat`.
//!
//! A pidfile naming a pid that was reused by an unrelated process cannot be
//! told apart from the job here: jobs should remove their pidfile on exit (or
//! be found by systemd unit).

use std::collections::HashMap;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use procfs::FromRead;
use procfs::process::Stat;

use super::blocking::{self, Blocking, FS_TIMEOUT};
use super::systemd;
use super::warn::Warned;
use super::{Evidence, ProcessConfig, ProcessTarget, human};

const NAME: &str = "process";

/// The most of one `/proc/PID/cmdline` that is matched against.
const MAX_CMDLINE: u64 = 64 * 1024;

// === /proc ===

/// A /proc tree: where it is, and how to read its clock.
#[derive(Clone, Debug)]
pub(crate) struct ProcFs {
    root: PathBuf,
    /// Clock ticks per second (`sysconf(_SC_CLK_TCK)`; fixtures use 100).
    ticks: u64,
    /// Never matched by a command line: the agent itself.
    self_pid: i32,
    /// Boot time, seconds since the epoch, read once.
    btime: Arc<OnceLock<u64>>,
}

/// One process, as its `stat` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Seen {
    pub(crate) pid: i32,
    pub(crate) comm: String,
    /// `R`, `S`, `D`, `T`, `t`, `Z`, ...
    pub(crate) state: char,
    /// When it started (only read when `max_runtime` is set or a restart
    /// is being verified).
    pub(crate) started: Option<SystemTime>,
    /// When it started, in clock ticks since boot.
    pub(crate) start_ticks: u64,
}

impl ProcFs {
    pub(crate) fn new(root: PathBuf) -> Self {
        ProcFs {
            root,
            ticks: procfs::ticks_per_second(),
            self_pid: i32::try_from(std::process::id()).unwrap_or(-1),
            btime: Arc::default(),
        }
    }

    /// Boot time from the `btime` line of `<root>/stat`.
    fn btime(&self) -> Result<u64, String> {
        if let Some(b) = self.btime.get() {
            return Ok(*b);
        }
        let path = self.root.join("stat");
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let btime = text
            .lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .ok_or_else(|| format!("no btime line in {}", path.display()))?;
        // Another thread may have set it meanwhile, to the same value.
        let _ = self.btime.set(btime);
        Ok(btime)
    }

    /// When a process started `starttime` clock ticks after boot.
    fn start_time(&self, starttime: u64, btime: u64) -> Option<SystemTime> {
        UNIX_EPOCH
            .checked_add(Duration::from_secs(btime))?
            .checked_add(self.since_boot(starttime)?)
    }

    /// `ticks` clock ticks as a duration.
    fn since_boot(&self, ticks: u64) -> Option<Duration> {
        if self.ticks == 0 {
            return None;
        }
        let secs = ticks / self.ticks;
        // rem < ticks, so rem * 1e9 / ticks < 1e9.
        let nanos = u128::from(ticks % self.ticks) * 1_000_000_000 / u128::from(self.ticks);
        Some(Duration::new(secs, u32::try_from(nanos).ok()?))
    }

    /// Time since boot from `<root>/uptime`, on the clock process start
    /// times are counted on (wall-clock steps do not move it).
    fn uptime(&self) -> Option<Duration> {
        let text = std::fs::read_to_string(self.root.join("uptime")).ok()?;
        let secs: f64 = text.split_whitespace().next()?.parse().ok()?;
        Duration::try_from_secs_f64(secs).ok()
    }

    /// `<root>/PID/stat`; `None` when the process is gone (or dead, state X).
    pub(crate) fn stat(&self, pid: i32, with_start: bool) -> Result<Option<Seen>, String> {
        let path = self.root.join(pid.to_string()).join("stat");
        let stat = match Stat::from_file(&path) {
            Ok(stat) => stat,
            Err(procfs::ProcError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        if matches!(stat.state, 'X' | 'x') {
            return Ok(None);
        }
        let started = if with_start {
            Some(
                self.start_time(stat.starttime, self.btime()?)
                    .ok_or_else(|| format!("start time of process {pid} is out of range"))?,
            )
        } else {
            None
        };
        Ok(Some(Seen {
            pid,
            comm: stat.comm,
            state: stat.state,
            started,
            start_ticks: stat.starttime,
        }))
    }

    /// Every process (but the agent) whose command line, arguments joined by
    /// spaces, matches `re`, by pid.
    pub(crate) fn matching(&self, re: &regex::Regex) -> Result<Vec<i32>, String> {
        let entries = std::fs::read_dir(&self.root)
            .map_err(|e| format!("cannot list {}: {e}", self.root.display()))?;
        let mut pids: Vec<i32> = entries
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| *pid != self.self_pid)
            .filter(|pid| {
                // Gone, unreadable or empty (kernel threads, zombies): no match.
                self.cmdline(*pid)
                    .is_some_and(|cmdline| !cmdline.is_empty() && re.is_match(&cmdline))
            })
            .collect();
        pids.sort_unstable();
        Ok(pids)
    }

    /// `<root>/PID/cmdline` with NULs as spaces (lossy UTF-8, bounded).
    fn cmdline(&self, pid: i32) -> Option<String> {
        let path = self.root.join(pid.to_string()).join("cmdline");
        let mut raw = Vec::new();
        std::fs::File::open(path)
            .ok()?
            .take(MAX_CMDLINE)
            .read_to_end(&mut raw)
            .ok()?;
        let text = String::from_utf8_lossy(&raw);
        Some(text.trim_end_matches('\0').replace('\0', " "))
    }
}

/// The pid in a pidfile: `Ok(Err(why))` when it names no process.
fn read_pidfile(path: &Path) -> Result<Result<i32, String>, String> {
    let mut raw = Vec::new();
    let read = std::fs::File::open(path).and_then(|f| f.take(64).read_to_end(&mut raw));
    match read {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(Err(format!("pidfile {} is missing", path.display())));
        }
        Err(e) => return Err(format!("cannot read pidfile {}: {e}", path.display())),
    }
    let text = String::from_utf8_lossy(&raw);
    let text = text.trim();
    if text.is_empty() {
        // Written but not yet filled, or emptied on exit.
        return Ok(Err(format!("pidfile {} is empty", path.display())));
    }
    match text.parse::<i32>() {
        Ok(pid) if pid > 0 => Ok(Ok(pid)),
        _ => Err(format!(
            "pidfile {} does not hold a pid: {text:?}",
            path.display()
        )),
    }
}

// === Looking ===

/// Where the process is to be found, once any `systemctl` call is done.
#[derive(Debug)]
enum How {
    Pidfile(PathBuf),
    MainPid { unit: String, pid: i32 },
    Cmdline(regex::Regex),
}

/// What one look found.
#[derive(Debug)]
enum Look {
    /// These processes (never empty), and how they were found.
    Found { seen: Vec<Seen>, source: String },
    /// None, and why.
    Absent(String),
}

/// Resolves `target` as far as it takes a command (`systemctl show`).
/// `Ok(Err(why))`: the unit has no main process.
async fn how(target: &ProcessTarget, systemctl: &Path) -> Result<Result<How, String>, String> {
    Ok(Ok(match target {
        ProcessTarget::Pidfile(path) => How::Pidfile(path.clone()),
        ProcessTarget::Cmdline(re) => How::Cmdline(re.clone()),
        ProcessTarget::SystemdUnit(unit) => {
            let props = systemd::show(systemctl, unit, &["MainPID"])
                .await
                .map_err(|e| e.to_string())?;
            let raw = props.get("MainPID").map(String::as_str).unwrap_or("");
            match raw.parse::<i32>() {
                Ok(0) => {
                    return Ok(Err(format!("unit {unit} has no main process (MainPID=0)")));
                }
                Ok(pid) if pid > 0 => How::MainPid {
                    unit: unit.clone(),
                    pid,
                },
                _ => return Err(format!("systemctl show {unit}: bad MainPID {raw:?}")),
            }
        }
    }))
}

/// Reads /proc for `how` (blocking).
fn look(procfs: &ProcFs, how: &How, with_start: bool) -> Result<Look, String> {
    let (pids, source, none) = match how {
        How::Pidfile(path) => match read_pidfile(path)? {
            Ok(pid) => (
                vec![pid],
                format!("pidfile {}", path.display()),
                format!(
                    "pidfile {} names pid {pid}, which is not running",
                    path.display()
                ),
            ),
            Err(why) => return Ok(Look::Absent(why)),
        },
        How::MainPid { unit, pid } => (
            vec![*pid],
            format!("MainPID of unit {unit}"),
            format!("MainPID {pid} of unit {unit} is not running"),
        ),
        How::Cmdline(re) => (
            procfs.matching(re)?,
            format!("cmdline match for {:?}", re.as_str()),
            format!("no process matches cmdline {:?}", re.as_str()),
        ),
    };
    let mut seen = Vec::with_capacity(pids.len());
    for pid in pids {
        if let Some(s) = procfs.stat(pid, with_start)? {
            seen.push(s);
        }
    }
    Ok(if seen.is_empty() {
        Look::Absent(none)
    } else {
        Look::Found { seen, source }
    })
}

// === The detector ===

/// Stuck when a process of the job is in state D continuously longer than
/// `d_state_for`, stopped (T, t; if `stopped_is_stuck`), a zombie (Z), has run
/// longer than `max_runtime`, or when there is none (if `absent_is_stuck`)
/// for `absent_grace` since the agent started or the process was last seen.
/// State D is sampled: it counts from the first check that saw it, and a
/// check that sees the process out of D starts the count again.
#[derive(Debug)]
pub(crate) struct ProcessDetector {
    config: ProcessConfig,
    procfs: ProcFs,
    systemctl: PathBuf,
    started: SystemTime,
    /// Since when each pid has been seen in state D.
    d_since: HashMap<i32, SystemTime>,
    last_seen: Option<SystemTime>,
    reads: Blocking<Result<Look, String>>,
    warned: Warned,
    /// The target as written, for messages.
    shown: String,
    /// When the restart being verified began, if one is.
    mark: Option<Mark>,
    /// The processes the last check found (`None`: none, or it could not
    /// look).
    last_found: Option<Vec<Seen>>,
}

/// When a restart began: on the wall clock, and as time since boot when
/// /proc tells it (start times are compared on that clock).
/// An action done in place (`restarted` false) asks only that the job's
/// processes be found after it, not that they be new.
#[derive(Clone, Debug)]
struct Mark {
    wall: SystemTime,
    since_boot: Option<Duration>,
    restarted: bool,
    /// The action, for messages ("the restart").
    what: String,
}

impl ProcessDetector {
    pub(crate) fn new(
        config: ProcessConfig,
        proc_root: PathBuf,
        started: SystemTime,
        systemctl: PathBuf,
    ) -> Self {
        let shown = match &config.target {
            ProcessTarget::Pidfile(p) => format!("pidfile {}", p.display()),
            ProcessTarget::SystemdUnit(u) => format!("unit {u}"),
            ProcessTarget::Cmdline(re) => format!("cmdline {:?}", re.as_str()),
        };
        ProcessDetector {
            config,
            procfs: ProcFs::new(proc_root),
            systemctl,
            started,
            d_since: HashMap::new(),
            last_seen: None,
            reads: Blocking::default(),
            warned: Warned::default(),
            shown,
            mark: None,
            last_found: None,
        }
    }

    /// How long ago the oldest of the processes the last check found
    /// started, on the boot clock (`/proc/uptime` against their start
    /// ticks), so that no step of the wall clock moves it. The oldest: a
    /// job whose main process runs on is not starting because it forks a
    /// helper or recycles a worker. `None`: none found, or /proc cannot
    /// tell.
    pub(crate) fn started_ago(&self) -> Option<Duration> {
        let uptime = self.procfs.uptime()?;
        self.last_found
            .as_ref()?
            .iter()
            .filter_map(|s| self.procfs.since_boot(s.start_ticks))
            .min()
            .map(|start| uptime.saturating_sub(start))
    }

    /// A restart began at `at`, `ago` before now: only processes started
    /// after it are fresh (by start time, so a reused pid does not count).
    /// A restart from before the last boot makes every process fresh.
    pub(crate) fn mark_restart(&mut self, at: SystemTime, ago: Duration) {
        self.mark = Some(Mark {
            wall: at,
            since_boot: self.procfs.uptime().map(|u| u.saturating_sub(ago)),
            restarted: true,
            what: "the restart".to_owned(),
        });
        self.last_found = None;
    }

    /// An action that need not restart the job (`what`) begins: only a
    /// check that finds the job's processes after it is fresh; their start
    /// times do not matter.
    pub(crate) fn mark_in_place(&mut self, at: SystemTime, what: &str) {
        self.mark = Some(Mark {
            wall: at,
            since_boot: None,
            restarted: false,
            what: what.to_owned(),
        });
        self.last_found = None;
    }

    /// Whether the last check found the job's processes, all started after
    /// the restart began.
    pub(crate) fn fresh(&self) -> Result<(), String> {
        let Some(mark) = &self.mark else {
            return Ok(());
        };
        let Some(seen) = &self.last_found else {
            return Err(format!(
                "no process of the job ({}) has been found since {}",
                self.shown, mark.what
            ));
        };
        if !mark.restarted {
            return Ok(());
        }
        for s in seen {
            let before = match (mark.since_boot, self.procfs.since_boot(s.start_ticks)) {
                (Some(mark), Some(start)) => mark.checked_sub(start).filter(|d| !d.is_zero()),
                _ => s
                    .started
                    .and_then(|start| mark.wall.duration_since(start).ok())
                    .filter(|d| !d.is_zero()),
            };
            if let Some(before) = before {
                return Err(format!(
                    "process {} ({}, {}) started {} before the restart",
                    s.pid,
                    s.comm,
                    self.shown,
                    human(before)
                ));
            }
        }
        Ok(())
    }

    pub(crate) fn set_clock_ticks(&mut self, ticks: u64) {
        self.procfs.ticks = ticks;
    }

    pub(crate) fn set_systemctl(&mut self, systemctl: PathBuf) {
        self.systemctl = systemctl;
    }

    async fn look(&mut self) -> Result<Look, String> {
        let how = match how(&self.config.target, &self.systemctl).await? {
            Ok(how) => how,
            Err(why) => return Ok(Look::Absent(why)),
        };
        let procfs = self.procfs.clone();
        let with_start =
            self.config.max_runtime.is_some() || self.mark.as_ref().is_some_and(|m| m.restarted);
        self.reads
            .run(FS_TIMEOUT, move || look(&procfs, &how, with_start))
            .await
            .unwrap_or_else(|stalled| Err(stalled.to_string()))
    }

    pub(crate) async fn check(&mut self, now: SystemTime) -> Option<Evidence> {
        self.last_found = None;
        match self.look().await {
            Err(reason) => {
                // Unknown: keep what we knew (D since...) for the next look.
                self.warned.warn(NAME, &self.shown, reason);
                None
            }
            Ok(Look::Absent(why)) => {
                self.warned.clear(NAME, &self.shown);
                self.d_since.clear();
                if !self.config.absent_is_stuck {
                    return None;
                }
                let since = self.last_seen.unwrap_or(self.started).max(self.started);
                let absent_for = now.duration_since(since).unwrap_or_default();
                (absent_for >= self.config.absent_grace).then(|| Evidence {
                    detector: NAME,
                    detail: format!(
                        "{why}; no process for {} since {} (absent_grace {})",
                        human(absent_for),
                        if self.last_seen.is_some() {
                            "it was last seen"
                        } else {
                            "the agent started"
                        },
                        human(self.config.absent_grace)
                    ),
                })
            }
            Ok(Look::Found { seen, source }) => {
                self.warned.clear(NAME, &self.shown);
                self.last_seen = Some(now);
                self.last_found = Some(seen.clone());
                let mut d_since = HashMap::new();
                let mut first = None;
                for s in &seen {
                    let evidence = self.judge(s, &source, now, &mut d_since);
                    if first.is_none() {
                        first = evidence;
                    }
                }
                self.d_since = d_since;
                first
            }
        }
    }

    /// Whether one process is stuck; records it in `d_since` if in state D.
    fn judge(
        &self,
        s: &Seen,
        source: &str,
        now: SystemTime,
        d_since: &mut HashMap<i32, SystemTime>,
    ) -> Option<Evidence> {
        let who = format!("process {} ({}, {source})", s.pid, s.comm);
        let detail = match s.state {
            'D' => {
                let since = self.d_since.get(&s.pid).copied().unwrap_or(now);
                d_since.insert(s.pid, since);
                let d_for = now.duration_since(since).unwrap_or_default();
                (d_for > self.config.d_state_for).then(|| {
                    format!(
                        "{who} has been in uninterruptible sleep (state D) for at least {} (d_state_for {})",
                        human(d_for),
                        human(self.config.d_state_for)
                    )
                })
            }
            'T' | 't' if self.config.stopped_is_stuck => Some(format!(
                "{who} is stopped (state {}){}",
                s.state,
                if s.state == 't' { " by a tracer" } else { "" }
            )),
            'Z' => Some(format!("{who} is a zombie (state Z)")),
            _ => None,
        };
        let detail = detail.or_else(|| {
            let max = self.config.max_runtime?;
            let runtime = now.duration_since(s.started?).unwrap_or_default();
            (runtime > max).then(|| {
                format!(
                    "{who} has run for {} (max_runtime {})",
                    human(runtime),
                    human(max)
                )
            })
        });
        detail.map(|detail| Evidence {
            detector: NAME,
            detail,
        })
    }

    /// The job's pids right now (empty when none, or when they cannot be
    /// looked up; the reason is logged at debug, `check` warns about it).
    pub(crate) async fn pids(&self) -> Vec<i32> {
        let how = match how(&self.config.target, &self.systemctl).await {
            Ok(Ok(how)) => how,
            Ok(Err(why)) => {
                tracing::debug!(target = %self.shown, "no pids: {why}");
                return Vec::new();
            }
            Err(reason) => {
                tracing::debug!(target = %self.shown, "no pids: {reason}");
                return Vec::new();
            }
        };
        let procfs = self.procfs.clone();
        match blocking::run_once(FS_TIMEOUT, move || look(&procfs, &how, false)).await {
            Ok(Ok(Look::Found { seen, .. })) => seen.iter().map(|s| s.pid).collect(),
            Ok(Ok(Look::Absent(why))) => {
                tracing::debug!(target = %self.shown, "no pids: {why}");
                Vec::new()
            }
            Ok(Err(reason)) => {
                tracing::debug!(target = %self.shown, "no pids: {reason}");
                Vec::new()
            }
            Err((stalled, _)) => {
                tracing::debug!(target = %self.shown, "no pids: {stalled}");
                Vec::new()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_is_boot_time_plus_ticks() {
        let mut procfs = ProcFs::new(PathBuf::from("/nonexistent"));
        procfs.ticks = 100;
        assert_eq!(
            procfs.start_time(12_345, 1_000),
            Some(UNIX_EPOCH + Duration::from_millis(1_000_000 + 123_450))
        );
        procfs.ticks = 0;
        assert_eq!(procfs.start_time(12_345, 1_000), None);
    }

    #[test]
    fn pidfile_holds_one_positive_pid() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.pid");
        std::fs::write(&path, " 42\n").expect("write");
        assert_eq!(read_pidfile(&path), Ok(Ok(42)));
        std::fs::write(&path, "0\n").expect("write");
        assert!(read_pidfile(&path).is_err());
        std::fs::write(&path, "-1\n").expect("write");
        assert!(read_pidfile(&path).is_err());
        assert!(matches!(read_pidfile(&dir.path().join("none")), Ok(Err(_))));
    }
}
