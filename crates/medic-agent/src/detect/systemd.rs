//! The systemd detector, and `systemctl show` for the process detector.
//!
//! If `systemctl` is missing (a host without systemd) or fails, the detector
//! cannot look: it warns once and answers healthy. A detector that cannot
//! look must not be the reason a job is restarted or a host rebooted.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::command::{self, Finished};
use super::warn::Warned;
use super::{Evidence, SystemdConfig, human};

const NAME: &str = "systemd";

/// How long one `systemctl show` may take.
const SYSTEMCTL_TIMEOUT: Duration = Duration::from_secs(10);

/// How much of its output is read (a few properties: a few hundred bytes).
const SYSTEMCTL_MAX_OUTPUT: usize = 64 * 1024;

/// Why `systemctl show` gave no answer.
#[derive(Debug)]
pub(crate) enum ShowError {
    /// There is no `systemctl` to run.
    Missing(io::Error),
    /// It ran, but failed or timed out.
    Failed(String),
}

impl std::fmt::Display for ShowError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ShowError::Missing(e) => {
                write!(f, "cannot run systemctl ({e}); is this host using systemd?")
            }
            ShowError::Failed(why) => f.write_str(why),
        }
    }
}

/// `systemctl show -p P1 -p P2 ... -- UNIT`, as a map of the properties.
pub(crate) async fn show(
    systemctl: &Path,
    unit: &str,
    properties: &[&str],
) -> Result<BTreeMap<String, String>, ShowError> {
    let mut argv = vec![systemctl.display().to_string(), "show".to_owned()];
    for p in properties {
        argv.push("-p".to_owned());
        argv.push((*p).to_owned());
    }
    argv.push("--".to_owned());
    argv.push(unit.to_owned());
    let run = match command::run(&argv, SYSTEMCTL_TIMEOUT, SYSTEMCTL_MAX_OUTPUT).await {
        Ok(run) => run,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(ShowError::Missing(e)),
        Err(e) => return Err(ShowError::Failed(format!("cannot run systemctl: {e}"))),
    };
    match run.finished {
        Finished::Exited(status) if status.success() => {}
        Finished::Exited(status) => {
            return Err(ShowError::Failed(format!(
                "systemctl show {unit} {}: {}",
                command::describe(status),
                run.output.text()
            )));
        }
        Finished::TimedOut => {
            return Err(ShowError::Failed(format!(
                "systemctl show {unit} timed out after {}",
                human(SYSTEMCTL_TIMEOUT)
            )));
        }
    }
    let text = String::from_utf8_lossy(run.output.bytes());
    Ok(text
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect())
}

/// Stuck when the unit is `failed`, or `activating`/`deactivating` for longer
/// than `transition_stuck_after`. How long it has been in a transition is
/// counted from the first check that saw it there (a transition re-entered
/// between two checks, seen by its `StateChangeTimestampMonotonic`, starts
/// the count again), so after an agent restart the count starts late, never
/// early.
#[derive(Debug)]
pub(crate) struct SystemdDetector {
    config: SystemdConfig,
    systemctl: PathBuf,
    /// The transition seen (ActiveState, StateChangeTimestampMonotonic) and
    /// since when.
    transition: Option<((String, String), SystemTime)>,
    warned: Warned,
    /// What the last check saw: ActiveState and ActiveEnterTimestampMonotonic
    /// (`None`: it could not look).
    last: Option<(String, String)>,
    /// During an action's verification: what it waits for.
    mark: Option<Mark>,
}

/// What an action's verification waits for.
#[derive(Debug)]
struct Mark {
    /// After a restart: the ActiveEnterTimestampMonotonic seen before it
    /// began (`Some(None)`: none was seen), which must change. `None`
    /// after an action in place.
    before: Option<Option<String>>,
    /// The action, for messages ("the restart").
    what: String,
}

impl SystemdDetector {
    pub(crate) fn new(config: SystemdConfig, systemctl: PathBuf) -> Self {
        SystemdDetector {
            config,
            systemctl,
            transition: None,
            warned: Warned::default(),
            last: None,
            mark: None,
        }
    }

    /// A restart begins: only a unit that enters `active` from now on is
    /// fresh, told by a change of its ActiveEnterTimestampMonotonic.
    pub(crate) fn mark_restart(&mut self) {
        self.mark = Some(Mark {
            before: Some(self.last.take().map(|(_, entered)| entered)),
            what: "the restart".to_owned(),
        });
    }

    /// An action that need not restart the unit (`what`) begins: only a
    /// check after it that reads the unit active is fresh.
    pub(crate) fn mark_in_place(&mut self, what: &str) {
        self.last = None;
        self.mark = Some(Mark {
            before: None,
            what: what.to_owned(),
        });
    }

    /// Whether the last check saw the unit active, entered after the restart
    /// began (after an action in place: read active after it began).
    pub(crate) fn fresh(&self) -> Result<(), String> {
        let unit = &self.config.unit;
        let Some(Mark { before, what }) = &self.mark else {
            return Ok(());
        };
        match &self.last {
            None => Err(format!("unit {unit} could not be read since {what}")),
            Some((active, _)) if active != "active" => {
                Err(format!("unit {unit} is {active}, not active, since {what}"))
            }
            Some((_, entered))
                if before
                    .as_ref()
                    .is_some_and(|b| entered.is_empty() || Some(entered) == b.as_ref()) =>
            {
                Err(format!(
                    "unit {unit} has not entered active since {what} (ActiveEnterTimestampMonotonic={entered:?} unchanged)"
                ))
            }
            Some(_) => Ok(()),
        }
    }

    pub(crate) fn set_systemctl(&mut self, systemctl: PathBuf) {
        self.systemctl = systemctl;
    }

    pub(crate) async fn check(&mut self, now: SystemTime) -> Option<Evidence> {
        let unit = self.config.unit.clone();
        let props = match show(
            &self.systemctl,
            &unit,
            &[
                "LoadState",
                "ActiveState",
                "SubState",
                "StateChangeTimestampMonotonic",
                "ActiveEnterTimestampMonotonic",
            ],
        )
        .await
        {
            Ok(props) => props,
            Err(e) => {
                self.last = None;
                self.transition = None;
                self.warned.warn(NAME, &unit, e.to_string());
                return None;
            }
        };
        let get = |k: &str| props.get(k).map(String::as_str).unwrap_or("");
        let (load, active, sub) = (get("LoadState"), get("ActiveState"), get("SubState"));
        self.last = Some((
            active.to_owned(),
            get("ActiveEnterTimestampMonotonic").to_owned(),
        ));
        if load == "not-found" {
            self.transition = None;
            self.warned.warn(
                NAME,
                &unit,
                format!("unit {unit} is not loaded (LoadState={load})"),
            );
            return None;
        }
        if active.is_empty() {
            self.transition = None;
            self.warned
                .warn(NAME, &unit, "systemctl show gave no ActiveState".to_owned());
            return None;
        }
        self.warned.clear(NAME, &unit);
        match active {
            "failed" => {
                self.transition = None;
                Some(Evidence {
                    detector: NAME,
                    detail: format!("unit {unit} has failed (ActiveState=failed, SubState={sub})"),
                })
            }
            "activating" | "deactivating" => {
                let key = (
                    active.to_owned(),
                    get("StateChangeTimestampMonotonic").to_owned(),
                );
                let since = match &self.transition {
                    Some((seen, since)) if *seen == key => *since,
                    _ => {
                        self.transition = Some((key, now));
                        now
                    }
                };
                let stuck_for = now.duration_since(since).unwrap_or_default();
                (stuck_for > self.config.transition_stuck_after).then(|| Evidence {
                    detector: NAME,
                    detail: format!(
                        "unit {unit} has been {active} (SubState={sub}) for at least {} (transition_stuck_after {})",
                        human(stuck_for),
                        human(self.config.transition_stuck_after)
                    ),
                })
            }
            _ => {
                self.transition = None;
                None
            }
        }
    }
}
