//! `[breaker]`: the circuit breaker, fleet-wide and per failure domain
//! (rule 2).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::errors::label_key_ok;
use super::{Errors, MAX_COUNT, Number};

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

impl RawBreaker {
    pub(super) fn validate(&self, errs: &mut Errors, path: &str) -> BreakerConfig {
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
