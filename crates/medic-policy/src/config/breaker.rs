//! `[breaker]`: the circuit breaker, fleet-wide and per failure domain
//! (rule 2).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::errors::label_key_ok;
use super::{Errors, FleetConfig, MAX_COUNT, Number};

/// `[breaker]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawBreaker {
    /// Open when more than this share of live hosts is unhealthy.
    pub unhealthy_percent: Option<Number>,
    /// Unhealthy hosts needed before `unhealthy_percent` applies.
    pub min_unhealthy: Option<i64>,
    /// Open when more than this share of recently remediated hosts failed.
    pub failure_percent: Option<Number>,
    /// How far back outcomes count.
    pub window: Option<String>,
    /// Remediated hosts needed in `window` before `failure_percent` applies.
    pub min_samples: Option<i64>,
    /// Go half-open by itself once clear this long; `"never"` for manual
    /// reset only.
    pub auto_close_after: Option<String>,
    /// Probe permits in flight at the start of the half-open step.
    pub half_open_probes: Option<i64>,
    /// Verified successes in the half-open step before it closes.
    pub half_open_successes: Option<i64>,
    /// `[breaker.liveness_drop]`.
    pub liveness_drop: RawLivenessDrop,
    /// Per failure-domain breakers, keyed by label.
    pub domains: BTreeMap<String, RawDomainBreaker>,
}

/// `[breaker.liveness_drop]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawLivenessDrop {
    /// Open when more than this share of the hosts live a moment ago went
    /// silent within `window`.
    pub percent: Option<Number>,
    /// How recent a silence counts.
    pub window: Option<String>,
    /// Silent hosts needed before `percent` applies.
    pub min_hosts: Option<i64>,
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

/// The circuit breaker (rule 2).
#[derive(Clone, Debug, PartialEq)]
pub struct BreakerConfig {
    /// Fleet-wide unhealthy share that opens it, percent. Hosts that went
    /// silent count as unhealthy. Default 30.
    pub unhealthy_percent: f64,
    /// Unhealthy hosts (silent ones included) needed before
    /// `unhealthy_percent` applies. Default 3: a fleet of three heals one
    /// host at a time, and a one-host trial heals its host.
    pub min_unhealthy: u32,
    /// Share of the hosts remediated within `window` whose remediation
    /// failed or expired that opens it, each host counted once. Default 50.
    pub failure_percent: f64,
    /// Outcome window. Default 30m.
    pub window: Duration,
    /// Distinct remediated hosts needed before `failure_percent` applies.
    /// Default 5.
    pub min_samples: u32,
    /// Go half-open after the condition has been clear this long; `None`
    /// for manual reset only. Default 15m.
    pub auto_close_after: Option<Duration>,
    /// Probe permits a half-open breaker lets be active at once before any
    /// succeeded. Default 1.
    pub half_open_probes: u32,
    /// Verified successes a half-open breaker needs (with its condition
    /// clear) before it closes. Default 3.
    pub half_open_successes: u32,
    /// The liveness-drop breaker.
    pub liveness_drop: LivenessDropConfig,
    /// Per failure-domain breakers, keyed by label.
    pub domains: BTreeMap<String, DomainBreakerConfig>,
}

impl BreakerConfig {
    /// Probe permits a half-open breaker with `successes` lets be active at
    /// once: each verified success widens the budget by one.
    pub fn probe_budget(&self, successes: u32) -> u32 {
        self.half_open_probes.saturating_add(successes)
    }
}

/// The liveness-drop breaker: silence is not health.
#[derive(Clone, Debug, PartialEq)]
pub struct LivenessDropConfig {
    /// Share of the hosts live a moment ago (live now, plus those that went
    /// silent within `window` and still are) that opens it. Default 20.
    pub percent: f64,
    /// How recent a silence counts. Default 5m.
    pub window: Duration,
    /// Silent hosts needed before `percent` applies. Default 3.
    pub min_hosts: u32,
}

/// A breaker per value of one label.
#[derive(Clone, Debug, PartialEq)]
pub struct DomainBreakerConfig {
    /// Unhealthy share of the value's live hosts that opens it.
    pub unhealthy_percent: f64,
    /// Values with fewer live hosts never open. Default 3.
    pub min_hosts: u32,
}

impl RawBreaker {
    pub(super) fn validate(
        &self,
        errs: &mut Errors,
        path: &str,
        fleet: &FleetConfig,
    ) -> BreakerConfig {
        let unhealthy_percent = errs.percent(
            &format!("{path}.unhealthy_percent"),
            self.unhealthy_percent.map(Number::as_f64),
            30.0,
        );
        let min_unhealthy = errs.count_in(
            &format!("{path}.min_unhealthy"),
            self.min_unhealthy,
            3,
            1,
            MAX_COUNT,
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
        let half_open_probes = errs.count_in(
            &format!("{path}.half_open_probes"),
            self.half_open_probes,
            1,
            1,
            MAX_COUNT,
        );
        let half_open_successes = errs.count_in(
            &format!("{path}.half_open_successes"),
            self.half_open_successes,
            3,
            1,
            MAX_COUNT,
        );
        let liveness_drop =
            self.liveness_drop
                .validate(errs, &format!("{path}.liveness_drop"), fleet);
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
            min_unhealthy,
            failure_percent,
            window,
            min_samples,
            auto_close_after,
            half_open_probes,
            half_open_successes,
            liveness_drop,
            domains,
        }
    }
}

impl RawLivenessDrop {
    fn validate(&self, errs: &mut Errors, path: &str, fleet: &FleetConfig) -> LivenessDropConfig {
        let percent = errs.percent(
            &format!("{path}.percent"),
            self.percent.map(Number::as_f64),
            20.0,
        );
        // Hosts that fell silent together are noticed over one heartbeat
        // interval (each at its last heartbeat plus host_ttl).
        let window = errs.duration_in(
            &format!("{path}.window"),
            self.window.as_deref(),
            Duration::from_secs(5 * 60).max(fleet.heartbeat_interval),
            fleet.heartbeat_interval..=MAX_LIVENESS_DROP_WINDOW,
            "hosts that fall silent together are noticed over one fleet.heartbeat_interval",
        );
        let min_hosts = errs.count_in(
            &format!("{path}.min_hosts"),
            self.min_hosts,
            3,
            1,
            MAX_COUNT,
        );
        LivenessDropConfig {
            percent,
            window,
            min_hosts,
        }
    }
}

/// The longest `liveness_drop.window`: a drop is sudden, or it is churn.
const MAX_LIVENESS_DROP_WINDOW: Duration = Duration::from_secs(3600);
