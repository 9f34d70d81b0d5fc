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
