//! The coordinator's limits, as SREs write them in TOML.
//!
//! Two stages, as in vector: serde reads a raw, all-optional structure (every
//! unknown key is collected with its full path instead of stopping at the
//! first), then [`RawPolicy::validate`] checks every field and cross-field
//! rule and returns *every* error at once, each naming its key path. Nothing
//! half-valid ever reaches the engine: a reload either applies a whole valid
//! [`PolicyConfig`] or changes nothing (I10).
//!
//! One file per section, each with its raw (as written) and validated
//! structures and the validation between them; this file holds the whole
//! policy and the checks across sections:
//!
//! - `bounds`: the limits every value is checked against.
//! - `errors`: [`ConfigError`], [`Errors`] and its readers of values.
//! - `parse`: reading TOML, with unknown keys and type errors by key path.
//! - `fleet`: `[fleet]`, liveness and warm-up.
//! - `breaker`: `[breaker]`, the circuit breakers.
//! - `limits`: `[limits.<action>]`, caps, budgets and group caps.
//! - `windows`: weekly windows of an action.
//! - `gates`: `[[gates]]`, Prometheus queries that hold remediation.

mod bounds;
mod breaker;
mod errors;
mod fleet;
mod gates;
mod limits;
mod parse;
mod windows;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::types::Action;

pub use bounds::{
    MAX_COUNT, MAX_DURATION, MAX_FORGET_HOSTS_AFTER, MAX_HEARTBEAT_INTERVAL,
    MIN_HEARTBEAT_INTERVAL, MIN_RATE_PER,
};
pub use breaker::{
    BreakerConfig, DomainBreakerConfig, LivenessDropConfig, RawBreaker, RawDomainBreaker,
    RawLivenessDrop,
};
pub use errors::{ConfigError, ConfigErrors, Errors};
pub use fleet::{FleetConfig, RawFleet};
pub use gates::{
    GATE_PLACEHOLDER, GateConfig, MAX_GATE_INTERVAL, MAX_GATE_QUERY, MIN_GATE_INTERVAL, OnError,
    RawGate, validate_gates,
};
pub use limits::{
    ActionLimits, GroupCap, HostBudget, Rate, RawGroupCap, RawHostBudget, RawLimits, RawRate,
};
pub use parse::{Number, parse_toml};
pub use windows::{RawWindow, Window};

// === The whole policy ===

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
    /// Alert gates.
    pub gates: Vec<RawGate>,
}

/// `[idempotency]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawIdempotency {
    /// How long a granted request_id is remembered.
    pub retention: Option<String>,
}

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
    /// Alert gates: queries that hold the actions they cover while they
    /// return anything.
    pub gates: Vec<GateConfig>,
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
        let breaker = self.breaker.validate(errs, &p("breaker"), &fleet);

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

        let actions = Action::ALL.map(Action::as_str);
        let gates = validate_gates(&self.gates, errs, &p("gates"), &actions);

        PolicyConfig {
            dry_run,
            fleet,
            breaker,
            limits,
            idempotency_retention,
            gates,
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
