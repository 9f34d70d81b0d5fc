//! The probe detector: a command that exits zero while the job is healthy.

use super::command::{self, Finished};
use super::warn::Warned;
use super::{Evidence, ProbeConfig, human};

const NAME: &str = "probe";

/// Stuck when the command exits non-zero, is ended by a signal, or runs past
/// its timeout (then it is killed with its process group). A command that
/// cannot be started at all (not found, not executable) is a configuration
/// or host problem, not evidence about the job: warned about, not stuck.
#[derive(Debug)]
pub(crate) struct ProbeDetector {
    config: ProbeConfig,
    /// `command` as written, for messages.
    shown: String,
    warned: Warned,
}

impl ProbeDetector {
    pub(crate) fn new(config: ProbeConfig) -> Self {
        let shown = format!("{:?}", config.command);
        ProbeDetector {
            config,
            shown,
            warned: Warned::default(),
        }
    }

    pub(crate) async fn check(&mut self) -> Option<Evidence> {
        let run = match command::run(
            &self.config.command,
            self.config.timeout,
            self.config.max_output,
        )
        .await
        {
            Ok(run) => run,
            Err(e) => {
                self.warned
                    .warn(NAME, &self.shown, format!("cannot run probe: {e}"));
                return None;
            }
        };
        self.warned.clear(NAME, &self.shown);
        let output = run.output.text();
        match run.finished {
            Finished::Exited(status) if status.success() => None,
            Finished::Exited(status) => Some(Evidence {
                detector: NAME,
                detail: format!(
                    "probe {} {}; output: {output}",
                    self.shown,
                    command::describe(status)
                ),
            }),
            Finished::TimedOut => Some(Evidence {
                detector: NAME,
                detail: format!(
                    "probe {} timed out after {} and was killed; output: {output}",
                    self.shown,
                    human(self.config.timeout)
                ),
            }),
        }
    }
}
