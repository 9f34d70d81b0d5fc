//! The heartbeat file detector: a file the job touches while it makes
//! progress.

use std::io;
use std::time::SystemTime;

use super::blocking::{Blocking, FS_TIMEOUT};
use super::warn::Warned;
use super::{Evidence, HeartbeatFileConfig, human};

const NAME: &str = "heartbeat_file";

/// Stuck when the file's mtime is older than `stale_after`; a missing file is
/// stuck only once `startup_grace` has passed since `started`. Any other error
/// reading the file (permission denied, a hung mount) is not evidence.
#[derive(Debug)]
pub(crate) struct HeartbeatDetector {
    config: HeartbeatFileConfig,
    started: SystemTime,
    stat: Blocking<io::Result<SystemTime>>,
    warned: Warned,
    /// When the action being verified began, if one is, and its name for
    /// messages ("the restart").
    mark: Option<(SystemTime, String)>,
    /// The mtime the last check read (`None`: missing or unreadable).
    last_mtime: Option<SystemTime>,
}

impl HeartbeatDetector {
    pub(crate) fn new(config: HeartbeatFileConfig, started: SystemTime) -> Self {
        HeartbeatDetector {
            config,
            started,
            stat: Blocking::default(),
            warned: Warned::default(),
            mark: None,
            last_mtime: None,
        }
    }

    /// An action (`what`, "the restart") begins at `at`: only a file
    /// written after it is fresh, whether or not the job was restarted.
    pub(crate) fn mark(&mut self, at: SystemTime, what: &str) {
        self.mark = Some((at, what.to_owned()));
        self.last_mtime = None;
    }

    /// Whether the last check saw the file written after the action began.
    pub(crate) fn fresh(&self) -> Result<(), String> {
        let target = self.config.path.display();
        let Some((mark, what)) = &self.mark else {
            return Ok(());
        };
        match self.last_mtime {
            None => Err(format!(
                "heartbeat file {target} has not been written since {what} (missing or unreadable)"
            )),
            Some(mtime) if mtime > *mark => Ok(()),
            Some(mtime) => Err(format!(
                "heartbeat file {target} was last written {} before {what}",
                human(mark.duration_since(mtime).unwrap_or_default())
            )),
        }
    }

    pub(crate) async fn check(&mut self, now: SystemTime) -> Option<Evidence> {
        let path = self.config.path.clone();
        let target = self.config.path.display().to_string();
        self.last_mtime = None;
        let mtime = match self
            .stat
            .run(FS_TIMEOUT, move || {
                std::fs::metadata(&path).and_then(|m| m.modified())
            })
            .await
        {
            Ok(mtime) => mtime,
            Err(stalled) => {
                self.warned.warn(NAME, &target, stalled.to_string());
                return None;
            }
        };
        match mtime {
            Ok(mtime) => {
                self.warned.clear(NAME, &target);
                self.last_mtime = Some(mtime);
                // An mtime in the future (clock steps) counts as fresh.
                let age = now.duration_since(mtime).unwrap_or_default();
                (age > self.config.stale_after).then(|| Evidence {
                    detector: NAME,
                    detail: format!(
                        "heartbeat file {target} is {} old (stale_after {})",
                        human(age),
                        human(self.config.stale_after)
                    ),
                })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.warned.clear(NAME, &target);
                let since_start = now.duration_since(self.started).unwrap_or_default();
                (since_start >= self.config.startup_grace).then(|| Evidence {
                    detector: NAME,
                    detail: format!(
                        "heartbeat file {target} is missing, {} after start (startup_grace {})",
                        human(since_start),
                        human(self.config.startup_grace)
                    ),
                })
            }
            Err(e) => {
                self.warned
                    .warn(NAME, &target, format!("cannot read heartbeat file: {e}"));
                None
            }
        }
    }
}
