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
    /// During an action's verification: whether a check since the action
    /// began passed (`None`: no action being verified).
    passed_since_mark: Option<bool>,
    /// The action being verified, for messages ("the restart").
    what: String,
}

impl ProbeDetector {
    pub(crate) fn new(config: ProbeConfig) -> Self {
        let shown = format!("{:?}", config.command);
        ProbeDetector {
            config,
            shown,
            warned: Warned::default(),
            passed_since_mark: None,
            what: String::new(),
        }
    }

    /// An action (`what`, "the restart") begins: only a probe that passes
    /// from now on is fresh (the agent checks again only once the action's
    /// command has finished).
    pub(crate) fn mark(&mut self, what: &str) {
        self.passed_since_mark = Some(false);
        self.what = what.to_owned();
    }

    /// Whether the last check, run after the action began, passed.
    pub(crate) fn fresh(&self) -> Result<(), String> {
        match self.passed_since_mark {
            Some(false) => Err(format!(
                "probe {} has not passed since {}",
                self.shown, self.what
            )),
            None | Some(true) => Ok(()),
        }
    }

    pub(crate) async fn check(&mut self) -> Option<Evidence> {
        if self.passed_since_mark.is_some() {
            self.passed_since_mark = Some(false);
        }
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
            Finished::Exited(status) if status.success() => {
                if self.passed_since_mark.is_some() {
                    self.passed_since_mark = Some(true);
                }
                None
            }
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
