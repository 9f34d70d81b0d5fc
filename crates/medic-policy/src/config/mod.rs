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
//! - `actions`: `[actions.<name>]`, custom action kinds.
//! - `limits`: `[limits.<action>]`, caps, budgets and group caps.
//! - `windows`: weekly windows of an action.
//! - `gates`: `[[gates]]`, Prometheus queries that hold remediation.

mod actions;
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

pub use actions::{ActionDecl, MAX_DESCRIPTION, RawActionDecl};
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
    ActionLimits, ApprovalRule, GroupCap, HostBudget, JobCap, MAX_JOB_NAME, OverrideCeiling, Rate,
    RawApproval, RawCeiling, RawGroupCap, RawHostBudget, RawJobCap, RawLimits, RawRate,
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
    /// Custom action kinds, keyed by name.
    pub actions: BTreeMap<String, RawActionDecl>,
    /// Per-action limits, keyed by action name (`restart_job`,
    /// `reboot_host`, or a name declared in `actions`).
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
    /// Per-action limits: the built-ins and every declared custom action.
    pub limits: BTreeMap<Action, ActionLimits>,
    /// The declared custom actions.
    pub custom_actions: BTreeMap<Action, ActionDecl>,
    /// The limits of an action this configuration does not know (a custom
    /// action removed by a reload while permits of it were active): nothing
    /// more is granted.
    pub unknown_limits: ActionLimits,
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

    /// The limits of `action`; a disabled action's when it is not
    /// configured.
    pub fn limits(&self, action: Action) -> &ActionLimits {
        self.limits.get(&action).unwrap_or(&self.unknown_limits)
    }

    /// Whether `action` is a built-in or declared in `[actions]`.
    pub fn knows(&self, action: Action) -> bool {
        self.limits.contains_key(&action)
    }

    /// Every configured action: the built-ins, then custom ones by name.
    pub fn actions(&self) -> impl Iterator<Item = Action> + '_ {
        self.limits.keys().copied()
    }

    /// Every configured action's name, for messages (`restart_job,
    /// reboot_host, drain_host`).
    pub fn action_names(&self) -> String {
        self.actions()
            .map(Action::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Every label that some group cap or domain breaker counts by, sorted.
    pub fn group_labels(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .limits
            .values()
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

        let custom_actions = actions::validate_actions(&self.actions, errs, &p("actions"));
        for key in self.limits.keys() {
            let known =
                Action::builtin(key).is_some() || custom_actions.keys().any(|a| a.as_str() == key);
            if !known {
                let declared: Vec<&str> = custom_actions.keys().map(|a| a.as_str()).collect();
                errs.push(
                    p(&format!("limits.{key}")),
                    format!(
                        "unknown action; expected restart_job, reboot_host{}, or declare it \
                         in [actions.{key}]",
                        declared.iter().fold(String::new(), |acc, n| acc + ", " + n)
                    ),
                );
            }
        }
        let limits: BTreeMap<Action, ActionLimits> = Action::BUILTIN
            .into_iter()
            .chain(custom_actions.keys().copied())
            .map(|a| {
                let raw = self.limits.get(a.as_str()).cloned().unwrap_or_default();
                let l = raw.validate(errs, &p(&format!("limits.{}", a.as_str())), a, &fleet);
                (a, l)
            })
            .collect();

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
        for (a, l) in &limits {
            let ttl = l.permit_ttl;
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

        let actions: Vec<&str> = limits.keys().map(|a| a.as_str()).collect();
        let gates = validate_gates(&self.gates, errs, &p("gates"), &actions);

        PolicyConfig {
            dry_run,
            fleet,
            breaker,
            limits,
            custom_actions,
            unknown_limits: ActionLimits::disabled(),
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
fn most_outcomes_within(window: Duration, limits: &BTreeMap<Action, ActionLimits>) -> u64 {
    let total = limits
        .values()
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
