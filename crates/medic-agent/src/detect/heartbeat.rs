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
}

impl HeartbeatDetector {
    pub(crate) fn new(config: HeartbeatFileConfig, started: SystemTime) -> Self {
        HeartbeatDetector {
            config,
            started,
            stat: Blocking::default(),
            warned: Warned::default(),
        }
    }

    pub(crate) async fn check(&mut self, now: SystemTime) -> Option<Evidence> {
        let path = self.config.path.clone();
        let target = self.config.path.display().to_string();
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
