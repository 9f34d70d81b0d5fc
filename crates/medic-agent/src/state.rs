//! The agent's durable state: ladder counters per job, and the permit of a
//! reboot in progress or of a fix on probation. Written atomically (temporary file, fsync, rename,
//! fsync of the directory), so a crash or the reboot itself leaves either
//! the old or the new state, never half of one.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use medic_policy::{Action, PermitRef};
use serde::{Deserialize, Serialize};

/// The format version this build writes.
pub const STATE_VERSION: u32 = 1;

/// What survives agent restarts and reboots.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentState {
    /// Format version.
    pub version: u32,
    /// Ladder counters by job name.
    pub jobs: BTreeMap<String, JobCounters>,
    /// An action that must be finished at start-up (a reboot).
    pub pending: Option<Pending>,
}

/// Where a job stands on its ladder.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobCounters {
    /// Restarts that did not fix the job since it was last healthy.
    pub failed_restarts: u32,
    /// Reboots that did not fix it.
    pub failed_reboots: u32,
    /// Custom actions that did not fix it, by action name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub failed_custom: BTreeMap<String, u32>,
    /// Set when the ladder is exhausted: why a human is needed. Sent to the
    /// coordinator as `needs_human`, which quarantines the host.
    pub gave_up: Option<String>,
    /// The coordinator has confirmed, since the job gave up, that the host
    /// is quarantined. The agent stops sending `needs_human` then, and takes
    /// a later heartbeat reply without a quarantine as a person's release:
    /// the job's ladder starts afresh.
    #[serde(default)]
    pub quarantined: bool,
}

/// A permit whose action was under way when the agent stopped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// The permit.
    pub permit: PermitRef,
    /// Its action.
    pub action: Action,
    /// The job it was for.
    pub job: String,
    /// When the action started (wall clock). After a reboot, only evidence
    /// newer than this verifies it.
    pub started_at: SystemTime,
    /// Why the action was taken (the evidence), for the commands run when
    /// it is finished (`MEDIC_REASON` of the post hook).
    #[serde(default)]
    pub reason: String,
    /// Set once the action is verified and the job is on probation: the
    /// agent that starts next resumes the probation instead of verifying
    /// again.
    #[serde(default)]
    pub probation: Option<ProbationRecord>,
}

/// A verified fix on probation, as recorded in [`Pending`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbationRecord {
    /// When the fix was verified (wall clock): probation ends `probation`
    /// after it.
    pub since: SystemTime,
    /// What was done and verified, for the outcome's detail.
    pub detail: String,
}

/// Why the state file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Unreadable or undecodable: the agent refuses to act until a human
    /// looks (acting on forgotten counters could reboot in a loop).
    #[error(
        "agent state file {path} is unusable ({detail}); the agent keeps heartbeating but takes \
         no action until it is repaired or removed"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// Writing failed.
    #[error("cannot write agent state file {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// The state file in the state directory.
#[derive(Clone, Debug)]
pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    /// The state file `state.json` in `dir`.
    pub fn new(dir: &Path) -> Self {
        Self {
            path: dir.join("state.json"),
        }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the state; a missing file is a fresh state.
    pub fn load(&self) -> Result<AgentState, StateError> {
        let text = match std::fs::read(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(AgentState {
                    version: STATE_VERSION,
                    ..AgentState::default()
                });
            }
            Err(e) => {
                return Err(StateError::Corrupt {
                    path: self.path.clone(),
                    detail: e.to_string(),
                });
            }
        };
        let state: AgentState = serde_json::from_slice(&text).map_err(|e| StateError::Corrupt {
            path: self.path.clone(),
            detail: e.to_string(),
        })?;
        if state.version != STATE_VERSION {
            return Err(StateError::Corrupt {
                path: self.path.clone(),
                detail: format!(
                    "version {} is not this build's {STATE_VERSION}",
                    state.version
                ),
            });
        }
        Ok(state)
    }

    /// Resets job `job`'s ladder: forgets its failed restarts and reboots
    /// and its gave-up state. Returns what it was (`None`: nothing was
    /// recorded for it, so nothing changed).
    pub fn reset_job(&self, job: &str) -> Result<Option<JobCounters>, StateError> {
        let mut state = self.load()?;
        let Some(old) = state.jobs.remove(job) else {
            return Ok(None);
        };
        self.save(&state)?;
        Ok(Some(old))
    }

    /// Whether the state directory can hold the state: created if missing,
    /// and a file written, synced and removed there. The agent checks it at
    /// start-up: an agent that cannot keep its ladder or a reboot's pending
    /// permit must not run.
    pub fn check_writable(&self) -> Result<(), StateError> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let probe = dir.join(".write-check");
        let err = |source| StateError::Write {
            path: probe.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(err)?;
        {
            let mut f = std::fs::File::create(&probe).map_err(err)?;
            f.write_all(b"medic-agent\n").map_err(err)?;
            f.sync_all().map_err(err)?;
        }
        std::fs::remove_file(&probe).map_err(err)?;
        Ok(())
    }

    /// Writes the state atomically and durably.
    pub fn save(&self, state: &AgentState) -> Result<(), StateError> {
        let err = |source| StateError::Write {
            path: self.path.clone(),
            source,
        };
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(err)?;
        let tmp = self.path.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(state).map_err(|e| err(e.into()))?;
        {
            let mut f = std::fs::File::create(&tmp).map_err(err)?;
            f.write_all(&bytes).map_err(err)?;
            f.sync_all().map_err(err)?;
        }
        std::fs::rename(&tmp, &self.path).map_err(err)?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(err)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_job_forgets_only_that_jobs_ladder() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let file = StateFile::new(dir.path());
        let gave_up = JobCounters {
            failed_restarts: 2,
            failed_reboots: 1,
            gave_up: Some("still stuck".into()),
            quarantined: true,
            ..JobCounters::default()
        };
        let mut state = file.load().unwrap_or_else(|e| panic!("{e}"));
        state.jobs.insert("ingest".into(), gave_up.clone());
        state.jobs.insert("web".into(), gave_up.clone());
        file.save(&state).unwrap_or_else(|e| panic!("{e}"));

        let old = file.reset_job("ingest").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(old, Some(gave_up.clone()));
        let after = file.load().unwrap_or_else(|e| panic!("{e}"));
        assert!(!after.jobs.contains_key("ingest"));
        assert_eq!(after.jobs.get("web"), Some(&gave_up));
        assert_eq!(
            file.reset_job("ingest").unwrap_or_else(|e| panic!("{e}")),
            None
        );
    }
}
