//! `[limits.<action>]`: one action's caps, rate and host budgets, and
//! group caps (rules 5–7); its windows are in `windows`.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

use super::errors::label_key_ok;
use super::{
    Errors, FleetConfig, MAX_COUNT, MAX_DURATION, MIN_RATE_PER, Number, RawWindow, Window,
};
use crate::types::Action;

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
    /// Caps per job name, keyed by job.
    pub jobs: BTreeMap<String, RawJobCap>,
    /// Grant this action as dry-run only, whatever the global mode.
    pub dry_run: Option<bool>,
    /// The most an operator's override may raise a limit to.
    pub override_ceiling: Option<RawCeiling>,
    /// When a grant needs a human's approval.
    pub approval: Option<RawApproval>,
}

/// `[limits.<action>.approval]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawApproval {
    /// Every grant needs an approval.
    pub always: Option<bool>,
    /// A grant that would make more than this many permits of the action
    /// active fleet-wide needs an approval.
    pub above_in_flight: Option<i64>,
    /// Outside the action's windows a request waits for an approval
    /// instead of being denied.
    pub outside_windows: Option<bool>,
    /// How long a request waits for a human before its approval expires.
    pub expire_after: Option<String>,
    /// How long an approved request may wait for its agent to ask again.
    pub use_within: Option<String>,
}

/// When grants of an action need a human's approval
/// (`[limits.<action>.approval]`). An approval never bypasses another rule:
/// every rule is checked again when the approved request is granted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApprovalRule {
    /// Every grant.
    pub always: bool,
    /// Grants that would make more than this many permits of the action
    /// active fleet-wide.
    pub above_in_flight: Option<u32>,
    /// Grants outside the action's windows (which then wait for a human
    /// instead of being denied).
    pub outside_windows: bool,
    /// A pending approval expires after this; a rejection holds as long.
    pub expire_after: Duration,
    /// An approved request must be granted within this.
    pub use_within: Duration,
}

impl ApprovalRule {
    /// A pending approval's default life: long enough for a human paged at
    /// night to look, short enough that a stale request does not linger.
    pub const DEFAULT_EXPIRE_AFTER: Duration = Duration::from_secs(3600);
    /// How long an approval waits for its agent by default: a few
    /// heartbeats and denial waits.
    pub const DEFAULT_USE_WITHIN: Duration = Duration::from_secs(15 * 60);
}

/// `override_ceiling = { max_in_flight, rate_count }`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawCeiling {
    /// Ceiling of an override of `max_in_flight`.
    pub max_in_flight: Option<i64>,
    /// Ceiling of an override of `rate.count`.
    pub rate_count: Option<i64>,
}

/// The most an operator's temporary override (`medicctl override`) may set
/// each limit to. By default the configured values: an override can lower
/// a limit but raise it only where the configuration allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OverrideCeiling {
    /// For `max_in_flight` (an override replaces the whole fleet-wide cap,
    /// percentage included).
    pub max_in_flight: u32,
    /// For `rate.count`.
    pub rate_count: u32,
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

/// `[limits.<action>.groups.<label>]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawGroupCap {
    /// Absolute cap per label value.
    pub max_in_flight: Option<i64>,
    /// Cap as a share of the value's live hosts.
    pub max_in_flight_percent: Option<Number>,
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
    /// Caps per job name (`zookeeper`): fleet-wide and per label value.
    pub jobs: BTreeMap<String, JobCap>,
    /// Every grant of this action is a dry run, whatever the global mode.
    pub dry_run: bool,
    /// How far operators' overrides may raise its limits.
    pub override_ceiling: OverrideCeiling,
    /// When its grants need a human's approval; `None`: never.
    pub approval: Option<ApprovalRule>,
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

/// `[limits.<action>.jobs.<job>]`, as written.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawJobCap {
    /// Fleet-wide cap on active permits of this action for this job.
    pub max_in_flight: Option<i64>,
    /// Caps per value of a label (`rack = 1`), for this job only.
    pub groups: BTreeMap<String, i64>,
}

/// Caps on one job's permits of an action, so one service's remediations
/// cannot take out its own quorum: at most `max_in_flight` fleet-wide, and
/// at most `groups[label]` per value of each label.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobCap {
    /// Fleet-wide cap, if any.
    pub max_in_flight: Option<u32>,
    /// Cap per value of each label.
    pub groups: BTreeMap<String, u32>,
}

/// Longest job name a job cap may name, in bytes (as on the wire).
pub const MAX_JOB_NAME: usize = 256;

/// A cap per value of one label; both limits apply when both are set.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GroupCap {
    /// Absolute cap per value.
    pub max_in_flight: Option<u32>,
    /// Share of the value's live hosts (rounded down, never below 1).
    pub max_in_flight_percent: Option<f64>,
}

impl ActionLimits {
    /// These limits with an operator's override of `limit` to `value`,
    /// held to the ceiling: `max_in_flight` replaces the whole fleet-wide
    /// cap (the percentage too); `rate_count` the rate's count (at least 1).
    pub fn overridden(&mut self, limit: crate::types::OverrideLimit, value: u32) {
        use crate::types::OverrideLimit;
        match limit {
            OverrideLimit::MaxInFlight => {
                self.max_in_flight = value.min(self.override_ceiling.max_in_flight);
                self.max_in_flight_percent = None;
            }
            OverrideLimit::RateCount => {
                self.rate.count = value.min(self.override_ceiling.rate_count).max(1);
            }
        }
    }

    /// The ceiling an override of `limit` may not pass.
    pub fn ceiling(&self, limit: crate::types::OverrideLimit) -> u32 {
        match limit {
            crate::types::OverrideLimit::MaxInFlight => self.override_ceiling.max_in_flight,
            crate::types::OverrideLimit::RateCount => self.override_ceiling.rate_count,
        }
    }

    /// The limits of an action the configuration does not know: nothing is
    /// granted.
    pub fn disabled() -> Self {
        let d = action_defaults(Action::RebootHost);
        Self {
            max_in_flight: 0,
            max_in_flight_percent: None,
            permit_ttl: d.permit_ttl,
            cooldown: d.cooldown,
            rate: d.rate,
            host_budget: d.host_budget,
            timezone: chrono_tz::UTC,
            windows: Vec::new(),
            groups: BTreeMap::new(),
            jobs: BTreeMap::new(),
            dry_run: false,
            override_ceiling: OverrideCeiling {
                max_in_flight: 0,
                rate_count: d.rate.count,
            },
            approval: None,
        }
    }

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

/// Defaults per action: restarts are cheap and frequent, reboots rare, and
/// a custom action, whose cost medic cannot know, is limited like a reboot.
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
        Action::RebootHost | Action::Custom(_) => ActionDefaults {
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
    pub(super) fn validate(
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
            Some(r) => r.validate(errs, &k("rate"), d.rate),
        };
        let host_budget = match &self.host_budget {
            None => d.host_budget,
            Some(b) => b.validate(errs, &k("host_budget"), d.host_budget),
        };
        let timezone = validate_timezone(errs, &k("timezone"), self.timezone.as_deref());
        let has_windows = self.windows.as_ref().is_some_and(|w| !w.is_empty());
        let windows = self
            .windows
            .iter()
            .flatten()
            .enumerate()
            .filter_map(|(i, w)| w.validate(errs, &format!("{path}.windows[{i}]")))
            .collect();
        let groups = self
            .groups
            .iter()
            .map(|(label, g)| {
                let cap = g.validate(errs, &format!("{path}.groups.{label}"), label);
                (label.clone(), cap)
            })
            .collect();

        let jobs = self
            .jobs
            .iter()
            .map(|(job, c)| {
                let cap = c.validate(errs, &format!("{path}.jobs.{job}"), job);
                (job.clone(), cap)
            })
            .collect();

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
            jobs,
            dry_run: self.dry_run.unwrap_or(false),
            override_ceiling: validate_ceiling(
                errs,
                &k("override_ceiling"),
                self.override_ceiling.as_ref(),
                max_in_flight,
                rate.count,
            ),
            approval: self
                .approval
                .as_ref()
                .and_then(|a| a.validate(errs, &k("approval"), has_windows)),
        }
    }
}

impl RawApproval {
    /// `[limits.<action>.approval]` at `path`, for an action that has
    /// windows (`has_windows`) or not. `None` when it is invalid (the
    /// error is recorded).
    fn validate(&self, errs: &mut Errors, path: &str, has_windows: bool) -> Option<ApprovalRule> {
        let before = errs.len();
        let k = |key: &str| format!("{path}.{key}");
        let always = self.always.unwrap_or(false);
        let above_in_flight = self
            .above_in_flight
            .map(|n| errs.count_in(&k("above_in_flight"), Some(n), 0, 0, MAX_COUNT));
        let outside_windows = self.outside_windows.unwrap_or(false);
        if !always && above_in_flight.is_none() && !outside_windows {
            errs.push(
                path,
                "says when a grant needs a human's approval: set always = true, \
                 above_in_flight = N or outside_windows = true",
            );
        }
        if always && (above_in_flight.is_some() || outside_windows) {
            errs.push(
                k("always"),
                "always = true needs an approval for every grant: drop above_in_flight \
                 and outside_windows, or always",
            );
        }
        if outside_windows && !has_windows {
            errs.push(
                k("outside_windows"),
                "the action has no windows (it may run at any time), so no grant is \
                 ever outside them; add windows or drop outside_windows",
            );
        }
        let expire_after = errs.duration_in(
            &k("expire_after"),
            self.expire_after.as_deref(),
            ApprovalRule::DEFAULT_EXPIRE_AFTER,
            Duration::from_secs(60)..=Duration::from_secs(7 * 24 * 3600),
            "a human needs time to look, and a stale request should not linger",
        );
        let use_within = errs.duration_in(
            &k("use_within"),
            self.use_within.as_deref(),
            ApprovalRule::DEFAULT_USE_WITHIN,
            Duration::from_secs(60)..=Duration::from_secs(24 * 3600),
            "the agent asks again within a few heartbeats",
        );
        (errs.len() == before).then_some(ApprovalRule {
            always,
            above_in_flight,
            outside_windows,
            expire_after,
            use_within,
        })
    }
}

impl RawRate {
    /// `rate = { count, per, burst }` at `path`; what is not written comes
    /// from `default`, and so does the whole rate if it looks back too far.
    fn validate(&self, errs: &mut Errors, path: &str, default: Rate) -> Rate {
        let before = errs.len();
        let rate = Rate {
            count: errs.count_in(
                &format!("{path}.count"),
                self.count,
                default.count,
                1,
                MAX_COUNT,
            ),
            per: errs.duration_in(
                &format!("{path}.per"),
                self.per.as_deref(),
                default.per,
                MIN_RATE_PER..=MAX_DURATION,
                "",
            ),
            burst: errs.count_in(
                &format!("{path}.burst"),
                self.burst,
                default.burst,
                0,
                MAX_COUNT,
            ),
        };
        if errs.len() == before && rate.lookback() > MAX_DURATION {
            errs.push(
                path,
                format!(
                    "looks back rate.per + rate.per / rate.count × (rate.burst + 1) = {}, \
                     more than {} (\"10y\"); lower rate.burst or rate.per, or raise \
                     rate.count",
                    humantime::format_duration(rate.lookback()),
                    humantime::format_duration(MAX_DURATION)
                ),
            );
            default
        } else {
            rate
        }
    }
}

impl RawHostBudget {
    /// `host_budget = { max_attempts, per }` at `path`; what is not written
    /// comes from `default`.
    fn validate(&self, errs: &mut Errors, path: &str, default: HostBudget) -> HostBudget {
        HostBudget {
            max_attempts: errs.count_in(
                &format!("{path}.max_attempts"),
                self.max_attempts,
                default.max_attempts,
                1,
                MAX_COUNT,
            ),
            per: errs.positive_duration(&format!("{path}.per"), self.per.as_deref(), default.per),
        }
    }
}

impl RawGroupCap {
    /// `[limits.<action>.groups.<label>]` at `path`: at least one of the
    /// two caps.
    fn validate(&self, errs: &mut Errors, path: &str, label: &str) -> GroupCap {
        label_key_ok(errs, path, label);
        let max_in_flight = self
            .max_in_flight
            .map(|v| errs.count_in(&format!("{path}.max_in_flight"), Some(v), 1, 1, MAX_COUNT));
        let max_in_flight_percent = self.max_in_flight_percent.map(|n| {
            errs.percent(
                &format!("{path}.max_in_flight_percent"),
                Some(n.as_f64()),
                100.0,
            )
        });
        if max_in_flight.is_none() && max_in_flight_percent.is_none() {
            errs.push(path, "needs max_in_flight, max_in_flight_percent, or both");
        }
        GroupCap {
            max_in_flight,
            max_in_flight_percent,
        }
    }
}

impl RawJobCap {
    /// `[limits.<action>.jobs.<job>]` at `path`: a valid job name and at
    /// least one cap.
    fn validate(&self, errs: &mut Errors, path: &str, job: &str) -> JobCap {
        if job.is_empty()
            || job.len() > MAX_JOB_NAME
            || job
                .chars()
                .any(|c| c.is_whitespace() || crate::text::is_hidden(c))
        {
            errs.push(
                path,
                format!(
                    "job name {job:?} must be 1 to {MAX_JOB_NAME} bytes without spaces or \
                     invisible (control or format) characters, as agents name their jobs"
                ),
            );
        }
        let max_in_flight = self
            .max_in_flight
            .map(|v| errs.count_in(&format!("{path}.max_in_flight"), Some(v), 1, 1, MAX_COUNT));
        let groups: BTreeMap<String, u32> = self
            .groups
            .iter()
            .map(|(label, &v)| {
                let key = format!("{path}.groups.{label}");
                label_key_ok(errs, &key, label);
                (label.clone(), errs.count_in(&key, Some(v), 1, 1, MAX_COUNT))
            })
            .collect();
        if max_in_flight.is_none() && groups.is_empty() {
            errs.push(
                path,
                "needs max_in_flight, groups (for example groups = { rack = 1 }), or both",
            );
        }
        JobCap {
            max_in_flight,
            groups,
        }
    }
}

/// `override_ceiling` at `path`: each at least the configured value it
/// caps (a ceiling below it would stop overrides from restoring it).
fn validate_ceiling(
    errs: &mut Errors,
    path: &str,
    raw: Option<&RawCeiling>,
    max_in_flight: u32,
    rate_count: u32,
) -> OverrideCeiling {
    let raw = raw.cloned().unwrap_or_default();
    let ceiling = |errs: &mut Errors, key: &str, v: Option<i64>, configured: u32, what: &str| {
        let key = format!("{path}.{key}");
        let c = errs.count_in(&key, v, configured, 0, MAX_COUNT);
        if c < configured {
            errs.push(
                key,
                format!("must be at least {what} ({configured}), got {c}"),
            );
            configured
        } else {
            c
        }
    };
    OverrideCeiling {
        max_in_flight: ceiling(
            errs,
            "max_in_flight",
            raw.max_in_flight,
            max_in_flight,
            "max_in_flight",
        ),
        rate_count: ceiling(errs, "rate_count", raw.rate_count, rate_count, "rate.count"),
    }
}

/// The IANA time zone of an action's windows at `path` (UTC when absent).
fn validate_timezone(errs: &mut Errors, path: &str, raw: Option<&str>) -> chrono_tz::Tz {
    match raw {
        None => chrono_tz::UTC,
        Some(name) => match chrono_tz::Tz::from_str(name) {
            Ok(tz) => tz,
            Err(_) => {
                errs.push(
                    path,
                    format!(
                        "unknown IANA time zone {name:?} (for example \"Europe/Berlin\", \"UTC\")"
                    ),
                );
                chrono_tz::UTC
            }
        },
    }
}
