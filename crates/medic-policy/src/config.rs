//! The coordinator's limits, as SREs write them in TOML.
//!
//! Two stages, as in vector: serde reads a raw, all-optional structure (every
//! unknown key is collected with its full path instead of stopping at the
//! first), then [`RawPolicy::validate`] checks every field and cross-field
//! rule and returns *every* error at once, each naming its key path. Nothing
//! half-valid ever reaches the engine: a reload either applies a whole valid
//! [`PolicyConfig`] or changes nothing (I10).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{NaiveTime, Timelike, Weekday};
use serde::Deserialize;

use crate::types::Action;

// === Bounds ===

/// The longest duration any key of either config file accepts: 10 years
/// (humantime's `"10y"`, 3652.5 days). Every instant the coordinator
/// computes is a time plus a few such durations, so none can overflow or
/// pass year 9999 (the last one dates print).
pub const MAX_DURATION: Duration = Duration::from_secs(315_576_000);

/// The longest `fleet.forget_hosts_after`: a year.
pub const MAX_FORGET_HOSTS_AFTER: Duration = Duration::from_secs(366 * 24 * 3600);

/// The largest count of grants, permits, hosts or samples a key accepts:
/// one million, more than one coordinator serves, and small enough that
/// sums and products of counts and durations cannot overflow.
pub const MAX_COUNT: u32 = 1_000_000;

/// The shortest heartbeat interval (`fleet.heartbeat_interval`, and the
/// agent's own): 10 ms. Production fleets use seconds; the simulator
/// compresses time and goes this low.
pub const MIN_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(10);

/// The longest heartbeat interval: an hour. A host that is not heard from
/// for longer is not being watched.
pub const MAX_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(3600);

/// The shortest rate window (`limits.<action>.rate.per`): a second. A
/// shorter window cannot space remediations apart.
pub const MIN_RATE_PER: Duration = Duration::from_secs(1);

// === Errors ===

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
pub struct Errors(Vec<ConfigError>);

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

/// Reads TOML into `T`. Every unknown key is recorded in `errs` with its full
/// path (and reading goes on, so validation can report its own errors too);
/// a syntax or type error is recorded with its key path and line, and stops
/// reading (`None`).
pub fn parse_toml<T: serde::de::DeserializeOwned>(text: &str, errs: &mut Errors) -> Option<T> {
    let de = match toml::Deserializer::parse(text) {
        Ok(de) => de,
        Err(e) => {
            errs.push("", toml_message(&e));
            return None;
        }
    };
    let mut unknown = Vec::new();
    let mut track = serde_path_to_error::Track::new();
    let result = serde_ignored::deserialize(
        serde_path_to_error::Deserializer::new(de, &mut track),
        |path| unknown.push(ignored_key_path(&path)),
    );
    for path in unknown {
        errs.push(path, "unknown key");
    }
    match result {
        Ok(v) => Some(v),
        Err(e) => {
            errs.push(error_key_path(&track.path()), toml_message(&e));
            None
        }
    }
}

/// An unknown key's path as the docs write it (`jobs[0].restart.colour`,
/// `limits.restart_job.rate.extra`): serde_ignored's own text marks every
/// optional value on the way with `?` and writes indices as keys.
fn ignored_key_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", ignored_key_path(parent)),
        Path::Map { parent, key } => {
            let parent = ignored_key_path(parent);
            if parent.is_empty() {
                key.clone()
            } else {
                format!("{parent}.{key}")
            }
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => ignored_key_path(parent),
    }
}

/// The path of a value of the wrong type, in the same form, leaving out
/// the segments serde cannot name.
fn error_key_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for segment in path {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Unknown => {}
        }
    }
    out
}

fn toml_message(e: &toml::de::Error) -> String {
    // toml's message already says where (line, column) and what was expected.
    e.to_string().trim_end().to_owned()
}

// === Raw (serde) structures ===

/// A number that TOML may write as an integer or a float (`10` or `2.5`).
#[derive(Clone, Copy, Debug, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Number {
    /// Written as an integer.
    Int(i64),
    /// Written as a float.
    Float(f64),
}

impl Number {
    fn as_f64(self) -> f64 {
        match self {
            // Percentages and small counts: the conversion is exact.
            #[allow(clippy::cast_precision_loss)]
            Number::Int(i) => i as f64,
            Number::Float(f) => f,
        }
    }
}

/// The policy part of `coordinator.toml`, as written.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawPolicy {
    /// `"enforce"` (default) or `"dry-run"`.
    pub mode: Option<String>,
    /// Fleet liveness and warm-up.
    pub fleet: RawFleet,
    /// The circuit breaker.
    pub breaker: RawBreaker,
    /// Per-action limits, keyed `restart_job` / `reboot_host`.
    pub limits: BTreeMap<String, RawLimits>,
    /// Idempotency records.
    pub idempotency: RawIdempotency,
}

/// `[fleet]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawFleet {
    /// How often agents heartbeat (told to them in every reply).
    pub heartbeat_interval: Option<String>,
    /// A host is live while its last heartbeat is younger than this.
    pub host_ttl: Option<String>,
    /// No grants for this long after start.
    pub warmup: Option<String>,
    /// No grants while fewer hosts than this are live.
    pub min_fleet_size: Option<i64>,
    /// A host unheard of for this long, holding nothing, is forgotten.
    pub forget_hosts_after: Option<String>,
}

/// `[breaker]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawBreaker {
    /// Open when more than this share of live hosts is unhealthy.
    pub unhealthy_percent: Option<Number>,
    /// Open when more than this share of recent outcomes failed or expired.
    pub failure_percent: Option<Number>,
    /// How far back outcomes count.
    pub window: Option<String>,
    /// Outcomes needed in `window` before `failure_percent` applies.
    pub min_samples: Option<i64>,
    /// Close by itself once clear this long; `"never"` for manual reset only.
    pub auto_close_after: Option<String>,
    /// Per failure-domain breakers, keyed by label.
    pub domains: BTreeMap<String, RawDomainBreaker>,
}

/// `[breaker.domains.<label>]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawDomainBreaker {
    /// Open for one label value when more than this share of its live hosts
    /// is unhealthy.
    pub unhealthy_percent: Option<Number>,
    /// Domains with fewer live hosts than this never open.
    pub min_hosts: Option<i64>,
}

/// `[limits.<action>]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawLimits {
    /// Absolute cap on active permits.
    pub max_in_flight: Option<i64>,
    /// Cap as a share of the live fleet.
    pub max_in_flight_percent: Option<Number>,
    /// How long a grant (or renewal) lasts.
    pub permit_ttl: Option<String>,
    /// Per host: wait this long after its last permit of this action ended.
    pub cooldown: Option<String>,
    /// Rate budget.
    pub rate: Option<RawRate>,
    /// Per-host attempt budget.
    pub host_budget: Option<RawHostBudget>,
    /// IANA time zone of `windows`.
    pub timezone: Option<String>,
    /// Weekly windows; empty: any time.
    pub windows: Option<Vec<RawWindow>>,
    /// Caps per value of a label, keyed by label.
    pub groups: BTreeMap<String, RawGroupCap>,
}

/// `rate = { count, per, burst }`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawRate {
    /// Grants per `per`.
    pub count: Option<i64>,
    /// The window.
    pub per: Option<String>,
    /// Extra grants allowed at once.
    pub burst: Option<i64>,
}

/// `host_budget = { max_attempts, per }`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawHostBudget {
    /// Grants per host per `per`.
    pub max_attempts: Option<i64>,
    /// The window.
    pub per: Option<String>,
}

/// One weekly window.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawWindow {
    /// Day names (`mon` .. `sun`) on which the window opens.
    pub days: Option<Vec<String>>,
    /// Opening time, `HH:MM`.
    pub start: Option<String>,
    /// Closing time, `HH:MM` (`24:00` allowed; earlier than `start` means the
    /// next day).
    pub end: Option<String>,
}

/// `[limits.<action>.groups.<label>]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawGroupCap {
    /// Absolute cap per label value.
    pub max_in_flight: Option<i64>,
    /// Cap as a share of the value's live hosts.
    pub max_in_flight_percent: Option<Number>,
}

/// `[idempotency]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawIdempotency {
    /// How long a granted request_id is remembered.
    pub retention: Option<String>,
}

// === Validated configuration ===

/// The validated policy configuration the engine runs on.
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyConfig {
    /// Grants are marked dry-run: agents log instead of acting (rule 10).
    pub dry_run: bool,
    /// Liveness and warm-up.
    pub fleet: FleetConfig,
    /// The circuit breaker.
    pub breaker: BreakerConfig,
    /// Per-action limits, indexed by [`Action::index`].
    pub limits: [ActionLimits; 2],
    /// How long a granted request_id is remembered for idempotent retries.
    pub idempotency_retention: Duration,
}

/// Liveness and warm-up (rule 9).
#[derive(Clone, Debug, PartialEq)]
pub struct FleetConfig {
    /// How often agents heartbeat. Default 10s.
    pub heartbeat_interval: Duration,
    /// Live while the last heartbeat is younger than this. Default 3 ×
    /// heartbeat_interval.
    pub host_ttl: Duration,
    /// No grants this long after start. Default: host_ttl.
    pub warmup: Duration,
    /// No grants while fewer hosts are live. Default 1.
    pub min_fleet_size: u32,
    /// A host unheard of for this long that holds no permit and is not
    /// quarantined is forgotten: its labels, version and problems are
    /// dropped (its budgets live on in the grant records). Default 24h.
    pub forget_hosts_after: Duration,
}

/// The circuit breaker (rule 2).
#[derive(Clone, Debug, PartialEq)]
pub struct BreakerConfig {
    /// Fleet-wide unhealthy share that opens it, percent. Default 30.
    pub unhealthy_percent: f64,
    /// Failed-or-expired share of recent outcomes that opens it. Default 50.
    pub failure_percent: f64,
    /// Outcome window. Default 30m.
    pub window: Duration,
    /// Outcomes needed before `failure_percent` applies. Default 5.
    pub min_samples: u32,
    /// Auto-close after the condition has been clear this long. Default 15m.
    pub auto_close_after: Option<Duration>,
    /// Per failure-domain breakers, keyed by label.
    pub domains: BTreeMap<String, DomainBreakerConfig>,
}

/// A breaker per value of one label.
#[derive(Clone, Debug, PartialEq)]
pub struct DomainBreakerConfig {
    /// Unhealthy share of the value's live hosts that opens it.
    pub unhealthy_percent: f64,
    /// Values with fewer live hosts never open. Default 3.
    pub min_hosts: u32,
}

/// One action's limits (rules 5–8).
#[derive(Clone, Debug, PartialEq)]
pub struct ActionLimits {
    /// Absolute cap on active permits; 0 disables the action.
    pub max_in_flight: u32,
    /// Cap as a share of live hosts (rounded down, never below 1).
    pub max_in_flight_percent: Option<f64>,
    /// Lifetime of a grant or renewal.
    pub permit_ttl: Duration,
    /// Per-host wait after its last permit of this action ended.
    pub cooldown: Duration,
    /// Rate budget.
    pub rate: Rate,
    /// Per-host attempt budget.
    pub host_budget: HostBudget,
    /// Time zone of `windows`.
    pub timezone: chrono_tz::Tz,
    /// Weekly windows; empty: any time.
    pub windows: Vec<Window>,
    /// Caps per value of each label.
    pub groups: BTreeMap<String, GroupCap>,
}

/// `count` grants per `per`, plus `burst` at once (GCRA). In any window of
/// length `per` there are at most `count + burst` grants (I2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// Steady grants per `per`.
    pub count: u32,
    /// The window.
    pub per: Duration,
    /// Extra grants allowed at once on top of the steady rate.
    pub burst: u32,
}

impl Rate {
    /// The most grants any window of length `per` may hold.
    pub fn limit(&self) -> u32 {
        self.count.saturating_add(self.burst)
    }

    /// The steady spacing between grants (`per / count`).
    pub fn interval(&self) -> Duration {
        self.per / self.count.max(1)
    }

    /// How far ahead of now GCRA lets the next conforming grant be
    /// (`interval × burst`); saturates instead of overflowing.
    pub fn tolerance(&self) -> Duration {
        self.interval().saturating_mul(self.burst)
    }

    /// How far back a budget check may look at grants
    /// (`per + interval × (burst + 1)`); saturates instead of overflowing.
    /// Validation keeps it within [`MAX_DURATION`].
    pub fn lookback(&self) -> Duration {
        self.per
            .saturating_add(self.interval().saturating_mul(self.burst.saturating_add(1)))
    }
}

/// At most `max_attempts` grants of an action per host per `per`; a host that
/// asks again is quarantined.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostBudget {
    /// Grants allowed per host per window.
    pub max_attempts: u32,
    /// The window.
    pub per: Duration,
}

/// A weekly window: opens on each of `days` at `start`, lasts `length`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    /// Days it opens on.
    pub days: Vec<Weekday>,
    /// Opening time of day, seconds after midnight.
    pub start_secs: u32,
    /// How long it stays open (may run past midnight).
    pub length: Duration,
}

/// A cap per value of one label; both limits apply when both are set.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GroupCap {
    /// Absolute cap per value.
    pub max_in_flight: Option<u32>,
    /// Share of the value's live hosts (rounded down, never below 1).
    pub max_in_flight_percent: Option<f64>,
}

impl ActionLimits {
    /// `min(max_in_flight, max_in_flight_percent of live)`; a percentage
    /// rounds down but never below 1, so small fleets can still heal.
    pub fn effective_cap(&self, live: u32) -> u32 {
        match self.max_in_flight_percent {
            Some(p) => self.max_in_flight.min(percent_of(p, live)),
            None => self.max_in_flight,
        }
    }
}

impl GroupCap {
    /// This group's cap for a value with `live` live hosts.
    pub fn cap(&self, live: u32) -> u32 {
        let abs = self.max_in_flight.unwrap_or(u32::MAX);
        match self.max_in_flight_percent {
            Some(p) => abs.min(percent_of(p, live)),
            None => abs,
        }
    }
}

/// `floor(p% of n)`, but at least 1. Computed in integers (hundredths of a
/// percent), so 2.3% of 50,000 is exactly 1,150.
fn percent_of(p: f64, n: u32) -> u32 {
    // p is in (0, 100], so hundredths fit a u64 without loss.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let hundredths = (p * 100.0).round() as u64;
    let v = hundredths * u64::from(n) / 10_000;
    u32::try_from(v).unwrap_or(u32::MAX).max(1)
}

impl Default for PolicyConfig {
    fn default() -> Self {
        match RawPolicy::default().validate() {
            Ok(c) => c,
            // The embedded defaults are valid; the test
            // `embedded_defaults_are_valid` pins it.
            Err(e) => panic!("embedded policy defaults are invalid: {e}"),
        }
    }
}

impl PolicyConfig {
    /// Reads and validates a TOML document holding only the policy sections.
    pub fn from_toml(text: &str) -> Result<Self, ConfigErrors> {
        let mut errs = Errors::default();
        let Some(raw) = parse_toml::<RawPolicy>(text, &mut errs) else {
            return Err(ConfigErrors(errs.0));
        };
        let config = raw.validate_into(&mut errs, "");
        errs.finish(config)
    }

    /// The limits of `action`.
    pub fn limits(&self, action: Action) -> &ActionLimits {
        &self.limits[action.index()]
    }

    /// Every label that some group cap or domain breaker counts by, sorted.
    pub fn group_labels(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .limits
            .iter()
            .flat_map(|l| l.groups.keys().cloned())
            .chain(self.breaker.domains.keys().cloned())
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }
}

// === impl RawPolicy (validation) ===

impl RawPolicy {
    /// Validates everything and returns the config, or every error found.
    pub fn validate(&self) -> Result<PolicyConfig, ConfigErrors> {
        let mut errs = Errors::default();
        let cfg = self.validate_into(&mut errs, "");
        errs.finish(cfg)
    }

    /// Validates into `errs`, prefixing key paths with `prefix` (empty, or
    /// `policy.` when embedded in a larger file). Returns a config that is
    /// meaningful only when `errs` stayed empty.
    pub fn validate_into(&self, errs: &mut Errors, prefix: &str) -> PolicyConfig {
        let p = |k: &str| format!("{prefix}{k}");

        let dry_run = match self.mode.as_deref() {
            None | Some("enforce") => false,
            Some("dry-run") => true,
            Some(other) => {
                errs.push(
                    p("mode"),
                    format!("must be \"enforce\" or \"dry-run\", got {other:?}"),
                );
                false
            }
        };

        let fleet = self.fleet.validate(errs, &p("fleet"));
        let breaker = self.breaker.validate(errs, &p("breaker"));

        for key in self.limits.keys() {
            if !Action::ALL.iter().any(|a| a.as_str() == key) {
                errs.push(
                    p(&format!("limits.{key}")),
                    "unknown action; expected restart_job or reboot_host",
                );
            }
        }
        let limits = Action::ALL.map(|a| {
            let raw = self.limits.get(a.as_str()).cloned().unwrap_or_default();
            raw.validate(errs, &p(&format!("limits.{}", a.as_str())), a, &fleet)
        });

        let reachable = most_outcomes_within(breaker.window, &limits);
        if u64::from(breaker.min_samples) > reachable {
            errs.push(
                p("breaker.min_samples"),
                format!(
                    "must be at most {reachable}, got {}: no more remediations than that can \
                     end within breaker.window ({}) under the limits' rates and caps, so the \
                     failure breaker could never open",
                    breaker.min_samples,
                    humantime::format_duration(breaker.window)
                ),
            );
        }

        let idempotency_retention = errs.positive_duration(
            &p("idempotency.retention"),
            self.idempotency.retention.as_deref(),
            Duration::from_secs(24 * 3600),
        );
        for a in Action::ALL {
            let ttl = limits[a.index()].permit_ttl;
            if idempotency_retention < ttl {
                errs.push(
                    p("idempotency.retention"),
                    format!(
                        "must be at least limits.{a}.permit_ttl ({}), got {}",
                        humantime::format_duration(ttl),
                        humantime::format_duration(idempotency_retention)
                    ),
                );
            }
        }

        PolicyConfig {
            dry_run,
            fleet,
            breaker,
            limits,
            idempotency_retention,
        }
    }
}

/// The most remediations that can end within any `window`: per action
/// that is not disabled, the grants its rate allows in `window` (at most
/// `count + burst` in each of the `ceil(window / per)` rate windows that
/// cover it) plus the permits already active when it began (at most
/// `max_in_flight`).
fn most_outcomes_within(window: Duration, limits: &[ActionLimits; 2]) -> u64 {
    let total = limits
        .iter()
        .filter(|l| l.max_in_flight > 0)
        .map(|l| {
            let windows = window.as_nanos().div_ceil(l.rate.per.as_nanos().max(1));
            windows
                .saturating_mul(u128::from(l.rate.limit()))
                .saturating_add(u128::from(l.max_in_flight))
        })
        .fold(0u128, u128::saturating_add);
    u64::try_from(total).unwrap_or(u64::MAX)
}

fn label_key_ok(errs: &mut Errors, path: &str, key: &str) {
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

impl RawFleet {
    fn validate(&self, errs: &mut Errors, path: &str) -> FleetConfig {
        let heartbeat_interval = errs.duration_in(
            &format!("{path}.heartbeat_interval"),
            self.heartbeat_interval.as_deref(),
            Duration::from_secs(10),
            MIN_HEARTBEAT_INTERVAL..=MAX_HEARTBEAT_INTERVAL,
            "every agent calls this often, and a host unheard of for longer is not watched",
        );
        let host_ttl = errs.positive_duration(
            &format!("{path}.host_ttl"),
            self.host_ttl.as_deref(),
            heartbeat_interval.saturating_mul(3),
        );
        if host_ttl <= heartbeat_interval {
            errs.push(
                format!("{path}.host_ttl"),
                format!(
                    "must be longer than {path}.heartbeat_interval ({}), got {}; \
                     otherwise every host flaps between live and gone",
                    humantime::format_duration(heartbeat_interval),
                    humantime::format_duration(host_ttl)
                ),
            );
        }
        let warmup = errs.duration(&format!("{path}.warmup"), self.warmup.as_deref(), host_ttl);
        if warmup < heartbeat_interval {
            errs.push(
                format!("{path}.warmup"),
                format!(
                    "must be at least {path}.heartbeat_interval ({}), got {}; \
                     a shorter warm-up decides before every host could report",
                    humantime::format_duration(heartbeat_interval),
                    humantime::format_duration(warmup)
                ),
            );
        }
        let min_fleet_size = errs.count_in(
            &format!("{path}.min_fleet_size"),
            self.min_fleet_size,
            1,
            1,
            MAX_COUNT,
        );
        let forget_hosts_after = errs.duration_in(
            &format!("{path}.forget_hosts_after"),
            self.forget_hosts_after.as_deref(),
            Duration::from_secs(24 * 3600).max(host_ttl),
            host_ttl..=MAX_FORGET_HOSTS_AFTER,
            "a host is forgotten only after it stopped being live",
        );
        FleetConfig {
            heartbeat_interval,
            host_ttl,
            warmup,
            min_fleet_size,
            forget_hosts_after,
        }
    }
}

impl RawBreaker {
    fn validate(&self, errs: &mut Errors, path: &str) -> BreakerConfig {
        let unhealthy_percent = errs.percent(
            &format!("{path}.unhealthy_percent"),
            self.unhealthy_percent.map(Number::as_f64),
            30.0,
        );
        let failure_percent = errs.percent(
            &format!("{path}.failure_percent"),
            self.failure_percent.map(Number::as_f64),
            50.0,
        );
        let window = errs.positive_duration(
            &format!("{path}.window"),
            self.window.as_deref(),
            Duration::from_secs(30 * 60),
        );
        // Whether the window can hold this many is checked against the
        // limits, in `RawPolicy::validate_into`.
        let min_samples = errs.count_in(
            &format!("{path}.min_samples"),
            self.min_samples,
            5,
            1,
            MAX_COUNT,
        );
        let auto_close_after = match self.auto_close_after.as_deref() {
            Some("never") => None,
            raw => Some(errs.positive_duration(
                &format!("{path}.auto_close_after"),
                raw,
                Duration::from_secs(15 * 60),
            )),
        };
        let mut domains = BTreeMap::new();
        for (label, d) in &self.domains {
            let dp = format!("{path}.domains.{label}");
            label_key_ok(errs, &dp, label);
            let unhealthy_percent = match d.unhealthy_percent {
                Some(n) => errs.percent(&format!("{dp}.unhealthy_percent"), Some(n.as_f64()), 50.0),
                None => {
                    errs.push(format!("{dp}.unhealthy_percent"), "is required");
                    50.0
                }
            };
            let min_hosts = errs.count_in(&format!("{dp}.min_hosts"), d.min_hosts, 3, 1, MAX_COUNT);
            domains.insert(
                label.clone(),
                DomainBreakerConfig {
                    unhealthy_percent,
                    min_hosts,
                },
            );
        }
        BreakerConfig {
            unhealthy_percent,
            failure_percent,
            window,
            min_samples,
            auto_close_after,
            domains,
        }
    }
}

/// Defaults per action: restarts are cheap and frequent, reboots rare.
struct ActionDefaults {
    max_in_flight: u32,
    max_in_flight_percent: f64,
    permit_ttl: Duration,
    cooldown: Duration,
    rate: Rate,
    host_budget: HostBudget,
}

fn action_defaults(action: Action) -> ActionDefaults {
    const MIN: u64 = 60;
    const HOUR: u64 = 3600;
    match action {
        Action::RestartJob => ActionDefaults {
            max_in_flight: 50,
            max_in_flight_percent: 5.0,
            permit_ttl: Duration::from_secs(10 * MIN),
            cooldown: Duration::from_secs(5 * MIN),
            rate: Rate {
                count: 60,
                per: Duration::from_secs(10 * MIN),
                burst: 10,
            },
            host_budget: HostBudget {
                max_attempts: 6,
                per: Duration::from_secs(24 * HOUR),
            },
        },
        Action::RebootHost => ActionDefaults {
            max_in_flight: 10,
            max_in_flight_percent: 1.0,
            permit_ttl: Duration::from_secs(30 * MIN),
            cooldown: Duration::from_secs(HOUR),
            rate: Rate {
                count: 20,
                per: Duration::from_secs(HOUR),
                burst: 5,
            },
            host_budget: HostBudget {
                max_attempts: 3,
                per: Duration::from_secs(24 * HOUR),
            },
        },
    }
}

impl RawLimits {
    fn validate(
        &self,
        errs: &mut Errors,
        path: &str,
        action: Action,
        fleet: &FleetConfig,
    ) -> ActionLimits {
        let d = action_defaults(action);
        let k = |key: &str| format!("{path}.{key}");
        let max_in_flight = errs.count_in(
            &k("max_in_flight"),
            self.max_in_flight,
            d.max_in_flight,
            0,
            MAX_COUNT,
        );
        let max_in_flight_percent = match self.max_in_flight_percent {
            Some(n) => Some(errs.percent(&k("max_in_flight_percent"), Some(n.as_f64()), 1.0)),
            // An explicit absolute cap without a percentage means exactly that cap.
            None if self.max_in_flight.is_some() => None,
            None => Some(d.max_in_flight_percent),
        };
        let permit_ttl =
            errs.positive_duration(&k("permit_ttl"), self.permit_ttl.as_deref(), d.permit_ttl);
        if permit_ttl < fleet.heartbeat_interval.saturating_mul(3) {
            errs.push(
                k("permit_ttl"),
                format!(
                    "must be at least 3 × fleet.heartbeat_interval ({}), got {}; \
                     agents renew at a third of the TTL",
                    humantime::format_duration(fleet.heartbeat_interval.saturating_mul(3)),
                    humantime::format_duration(permit_ttl)
                ),
            );
        }
        let cooldown = errs.duration(&k("cooldown"), self.cooldown.as_deref(), d.cooldown);

        let rate = match &self.rate {
            None => d.rate,
            Some(r) => {
                let before = errs.len();
                let rate = Rate {
                    count: errs.count_in(&k("rate.count"), r.count, d.rate.count, 1, MAX_COUNT),
                    per: errs.duration_in(
                        &k("rate.per"),
                        r.per.as_deref(),
                        d.rate.per,
                        MIN_RATE_PER..=MAX_DURATION,
                        "",
                    ),
                    burst: errs.count_in(&k("rate.burst"), r.burst, d.rate.burst, 0, MAX_COUNT),
                };
                if errs.len() == before && rate.lookback() > MAX_DURATION {
                    errs.push(
                        k("rate"),
                        format!(
                            "looks back rate.per + rate.per / rate.count × (rate.burst + 1) = {}, \
                             more than {} (\"10y\"); lower rate.burst or rate.per, or raise \
                             rate.count",
                            humantime::format_duration(rate.lookback()),
                            humantime::format_duration(MAX_DURATION)
                        ),
                    );
                    d.rate
                } else {
                    rate
                }
            }
        };
        let host_budget = match &self.host_budget {
            None => d.host_budget,
            Some(b) => HostBudget {
                max_attempts: errs.count_in(
                    &k("host_budget.max_attempts"),
                    b.max_attempts,
                    d.host_budget.max_attempts,
                    1,
                    MAX_COUNT,
                ),
                per: errs.positive_duration(
                    &k("host_budget.per"),
                    b.per.as_deref(),
                    d.host_budget.per,
                ),
            },
        };

        let timezone = match self.timezone.as_deref() {
            None => chrono_tz::UTC,
            Some(name) => match chrono_tz::Tz::from_str(name) {
                Ok(tz) => tz,
                Err(_) => {
                    errs.push(
                        k("timezone"),
                        format!("unknown IANA time zone {name:?} (for example \"Europe/Berlin\", \"UTC\")"),
                    );
                    chrono_tz::UTC
                }
            },
        };
        let windows = self
            .windows
            .iter()
            .flatten()
            .enumerate()
            .filter_map(|(i, w)| w.validate(errs, &format!("{path}.windows[{i}]")))
            .collect();

        let mut groups = BTreeMap::new();
        for (label, g) in &self.groups {
            let gp = format!("{path}.groups.{label}");
            label_key_ok(errs, &gp, label);
            let max_in_flight = g
                .max_in_flight
                .map(|v| errs.count_in(&format!("{gp}.max_in_flight"), Some(v), 1, 1, MAX_COUNT));
            let max_in_flight_percent = g.max_in_flight_percent.map(|n| {
                errs.percent(
                    &format!("{gp}.max_in_flight_percent"),
                    Some(n.as_f64()),
                    100.0,
                )
            });
            if max_in_flight.is_none() && max_in_flight_percent.is_none() {
                errs.push(
                    gp.clone(),
                    "needs max_in_flight, max_in_flight_percent, or both",
                );
            }
            groups.insert(
                label.clone(),
                GroupCap {
                    max_in_flight,
                    max_in_flight_percent,
                },
            );
        }

        ActionLimits {
            max_in_flight,
            max_in_flight_percent,
            permit_ttl,
            cooldown,
            rate,
            host_budget,
            timezone,
            windows,
            groups,
        }
    }
}

fn parse_weekday(s: &str) -> Option<Weekday> {
    match s.to_ascii_lowercase().as_str() {
        "mon" | "monday" => Some(Weekday::Mon),
        "tue" | "tuesday" => Some(Weekday::Tue),
        "wed" | "wednesday" => Some(Weekday::Wed),
        "thu" | "thursday" => Some(Weekday::Thu),
        "fri" | "friday" => Some(Weekday::Fri),
        "sat" | "saturday" => Some(Weekday::Sat),
        "sun" | "sunday" => Some(Weekday::Sun),
        _ => None,
    }
}

/// Parses `HH:MM` into seconds after midnight; `24:00` is allowed.
fn parse_time_of_day(s: &str) -> Option<u32> {
    if s == "24:00" {
        return Some(24 * 3600);
    }
    let t = NaiveTime::parse_from_str(s, "%H:%M").ok()?;
    Some(t.num_seconds_from_midnight())
}

impl RawWindow {
    fn validate(&self, errs: &mut Errors, path: &str) -> Option<Window> {
        let before = errs.0.len();
        let days: Vec<Weekday> = match &self.days {
            None => {
                errs.push(
                    format!("{path}.days"),
                    "is required (for example [\"sat\", \"sun\"])",
                );
                Vec::new()
            }
            Some(days) if days.is_empty() => {
                errs.push(format!("{path}.days"), "must name at least one day");
                Vec::new()
            }
            Some(days) => days
                .iter()
                .enumerate()
                .filter_map(|(i, d)| {
                    let parsed = parse_weekday(d);
                    if parsed.is_none() {
                        errs.push(
                            format!("{path}.days[{i}]"),
                            format!("unknown day {d:?}; use mon, tue, wed, thu, fri, sat, sun"),
                        );
                    }
                    parsed
                })
                .collect(),
        };
        let mut time = |key: &str, raw: &Option<String>| match raw {
            None => {
                errs.push(format!("{path}.{key}"), "is required (HH:MM)");
                None
            }
            Some(s) => {
                let t = parse_time_of_day(s);
                if t.is_none() {
                    errs.push(
                        format!("{path}.{key}"),
                        format!("invalid time {s:?}; use HH:MM, 00:00 to 24:00"),
                    );
                }
                t
            }
        };
        let start = time("start", &self.start);
        let end = time("end", &self.end);
        if let (Some(s), Some(e)) = (start, end) {
            if s == e {
                errs.push(
                    format!("{path}.end"),
                    "must differ from start (for a whole day use 00:00 to 24:00)",
                );
            }
            if s == 24 * 3600 {
                errs.push(format!("{path}.start"), "24:00 is only valid as an end");
            }
        }
        if errs.0.len() > before {
            return None;
        }
        let (s, e) = (start?, end?);
        let length = if e > s { e - s } else { 24 * 3600 - s + e };
        Some(Window {
            days,
            start_secs: s,
            length: Duration::from_secs(u64::from(length)),
        })
    }
}
