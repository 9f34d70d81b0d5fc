//! Errors in a config file, and [`Errors`], which collects them while
//! validating, with the readers of durations, counts and percentages that
//! record what is wrong with a value instead of stopping at it.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

use super::MAX_DURATION;

/// One problem in a config file.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct ConfigError {
    /// The key path (`limits.reboot_host.max_in_flight_percent`); empty for
    /// problems of the whole file (a TOML syntax error).
    pub path: String,
    /// What is wrong, with the offending value.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found in a config file (never empty).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Collects errors while validating, each under its key path.
#[derive(Debug, Default)]
pub struct Errors(pub(super) Vec<ConfigError>);

impl Errors {
    /// Records a problem at `path`.
    pub fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigError {
            path: path.into(),
            message: message.into(),
        });
    }

    /// How many problems were recorded.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok(value)` when nothing was recorded, else every error.
    pub fn finish<T>(self, value: T) -> Result<T, ConfigErrors> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(ConfigErrors(self.0))
        }
    }

    /// Parses a humantime duration (`"15m"`, `"1h 30m"`), or records why not.
    /// Every duration is at most [`MAX_DURATION`] (10 years): a longer one is
    /// a typo, and would let the times computed from it overflow or pass
    /// what a date can print.
    pub fn duration(&mut self, path: &str, raw: Option<&str>, default: Duration) -> Duration {
        match raw {
            None => default,
            Some(s) => match humantime::parse_duration(s) {
                Ok(d) if d > MAX_DURATION => {
                    self.push(
                        path,
                        format!(
                            "must be at most {} (\"10y\"), got {s:?}",
                            humantime::format_duration(MAX_DURATION)
                        ),
                    );
                    default
                }
                Ok(d) => d,
                Err(e) => {
                    self.push(
                        path,
                        format!(
                            "invalid duration {s:?} ({e}); use forms like \"30s\", \"15m\", \"2h\""
                        ),
                    );
                    default
                }
            },
        }
    }

    /// Parses a duration that must be longer than zero.
    pub fn positive_duration(
        &mut self,
        path: &str,
        raw: Option<&str>,
        default: Duration,
    ) -> Duration {
        let d = self.duration(path, raw, default);
        if raw.is_some() && d.is_zero() {
            self.push(path, "must be longer than zero");
        }
        d
    }

    /// Parses a duration in `range` (`default` when absent). Outside it,
    /// records why, with `why` (a reason, may be empty) appended, and
    /// returns `default`.
    pub fn duration_in(
        &mut self,
        path: &str,
        raw: Option<&str>,
        default: Duration,
        range: std::ops::RangeInclusive<Duration>,
        why: &str,
    ) -> Duration {
        let before = self.len();
        let d = self.duration(path, raw, default);
        if raw.is_none() || self.len() > before {
            return d;
        }
        let why = if why.is_empty() {
            String::new()
        } else {
            format!("; {why}")
        };
        let fmt = humantime::format_duration;
        if d.is_zero() && !range.start().is_zero() {
            self.push(path, format!("must be longer than zero{why}"));
            default
        } else if d < *range.start() {
            self.push(
                path,
                format!(
                    "must be at least {}, got {}{why}",
                    fmt(*range.start()),
                    fmt(d)
                ),
            );
            default
        } else if d > *range.end() {
            self.push(
                path,
                format!("must be at most {}, got {}{why}", fmt(*range.end()), fmt(d)),
            );
            default
        } else {
            d
        }
    }

    /// Reads a whole number of at least `min` (`default` when absent), or
    /// records why not.
    pub fn count(&mut self, path: &str, raw: Option<i64>, default: u32, min: u32) -> u32 {
        self.count_in(path, raw, default, min, u32::MAX)
    }

    /// Reads a whole number from `min` to `max` (`default` when absent), or
    /// records why not (and returns `default`).
    pub fn count_in(
        &mut self,
        path: &str,
        raw: Option<i64>,
        default: u32,
        min: u32,
        max: u32,
    ) -> u32 {
        match raw {
            None => default,
            Some(v) if v < i64::from(min) => {
                self.push(
                    path,
                    format!("must be an integer of at least {min}, got {v}"),
                );
                default
            }
            Some(v) if v > i64::from(max) => {
                self.push(path, format!("must be at most {max}, got {v}"));
                default
            }
            Some(v) => u32::try_from(v).unwrap_or(default),
        }
    }

    /// Checks a percentage is in (0, 100].
    pub fn percent(&mut self, path: &str, raw: Option<f64>, default: f64) -> f64 {
        match raw {
            None => default,
            Some(p) if p > 0.0 && p <= 100.0 => p,
            Some(p) => {
                self.push(path, format!("must be in (0, 100], got {p}"));
                default
            }
        }
    }
}

/// Checks a label name used as a key (`groups.<label>`,
/// `domains.<label>`): the names that `label=value` selectors can write.
pub(super) fn label_key_ok(errs: &mut Errors, path: &str, key: &str) {
    if key.is_empty()
        || key
            .chars()
            .any(|c| c.is_whitespace() || c == '=' || c == ',' || crate::text::is_hidden(c))
    {
        errs.push(
            path,
            format!(
                "label name {key:?} must be non-empty, without spaces, '=', ',' or invisible \
                 (control or format) characters"
            ),
        );
    }
}
