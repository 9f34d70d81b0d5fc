//! The `-o json` output: medicctl's own types, not the protocol's, so that
//! scripts see stable snake_case names whatever the wire does.
//!
//! Conventions, for every type here:
//! - times are RFC 3339 strings in UTC (`2026-11-26T17:42:01Z`, fractional
//!   seconds only when not whole); a time that is absent is `null`;
//! - spans are numbers of seconds (fractional when not whole), in fields
//!   named `*_seconds`;
//! - enum values are snake_case names without their protocol prefix
//!   (`reboot_host`, `paused`, `quarantine`); a value this medicctl does
//!   not know (a newer coordinator) reads `unknown(N)`;
//! - labels and selectors are objects of strings;
//! - lists are wrapped in an object (`{"hosts": [...]}`) so that fields can
//!   be added without breaking a script.
//!
//! Fields are only ever added, never renamed or removed.

use std::collections::BTreeMap;

use medic_proto::pb::v1 as pb;
use serde::Serialize;

use crate::format::{enum_name, std_duration, system_time};

// === Helpers ===

/// An optional wire time as RFC 3339.
pub fn time(t: Option<&prost_types::Timestamp>) -> Option<String> {
    t.map(|t| humantime::format_rfc3339(system_time(t)).to_string())
}

/// An optional wire span in seconds.
pub fn seconds(d: Option<&prost_types::Duration>) -> Option<f64> {
    d.map(|d| std_duration(d).as_secs_f64())
}

/// `Some(s)` unless `s` is empty.
fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

/// `restart_job`, `reboot_host`; `None` for ACTION_UNSPECIFIED.
pub fn action(raw: i32) -> Option<String> {
    match pb::Action::try_from(raw) {
        Ok(pb::Action::Unspecified) => None,
        a => Some(enum_name(a.ok().map(|a| a.as_str_name()), raw, "ACTION_")),
    }
}

/// `restart_job`, `reboot_host` (or `unknown(N)`), for a required action.
pub fn action_name(raw: i32) -> String {
    action(raw).unwrap_or_else(|| format!("unknown({raw})"))
}

/// `active`, `succeeded`, ... `revoked`.
pub fn permit_state(raw: i32) -> String {
    enum_name(
        pb::PermitState::try_from(raw).ok().map(|s| s.as_str_name()),
        raw,
        "PERMIT_STATE_",
    )
}

/// `paused`, `quarantined`, ... (a denial's rule).
pub fn deny_reason(raw: i32) -> String {
    enum_name(
        pb::DenyReason::try_from(raw).ok().map(|s| s.as_str_name()),
        raw,
        "DENY_REASON_",
    )
}

/// `grant`, `deny`, ... `renew`.
pub fn event_kind(raw: i32) -> String {
    enum_name(
        pb::EventKind::try_from(raw).ok().map(|s| s.as_str_name()),
        raw,
        "EVENT_KIND_",
    )
}

/// `mutual_tls`, `plaintext_loopback`, `insecure`.
pub fn transport_security(raw: i32) -> String {
    enum_name(
        pb::TransportSecurity::try_from(raw)
            .ok()
            .map(|s| s.as_str_name()),
        raw,
        "TRANSPORT_SECURITY_",
    )
}

/// `manual`, `attempt_budget`, `permit_expired`, `gave_up`.
pub fn quarantine_cause(raw: i32) -> String {
    enum_name(
        pb::QuarantineCause::try_from(raw)
            .ok()
            .map(|s| s.as_str_name()),
        raw,
        "QUARANTINE_CAUSE_",
    )
}

/// `unhealthy_fraction`, `failure_fraction`.
pub fn breaker_cause(raw: i32) -> String {
    enum_name(
        pb::BreakerCause::try_from(raw)
            .ok()
            .map(|s| s.as_str_name()),
        raw,
        "BREAKER_CAUSE_",
    )
}

/// `fleet`, or `LABEL=VALUE` for a failure domain: the syntax
/// `medicctl breaker reset --scope` takes.
pub fn breaker_scope(s: Option<&pb::BreakerScope>) -> String {
    use pb::breaker_scope::Kind;
    match s.and_then(|s| s.kind.as_ref()) {
        Some(Kind::Fleet(_)) => "fleet".to_owned(),
        Some(Kind::Domain(d)) => format!("{}={}", d.label, d.value),
        None => "unknown".to_owned(),
    }
}

// === Status ===

/// `medicctl status`.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// The coordinator's version.
    pub version: String,
    /// `enforce`, or `dry_run` (grants only tell agents to log).
    pub mode: String,
    /// How the gRPC port is protected: `mutual_tls`, `plaintext_loopback`,
    /// or `insecure` (plaintext on a non-loopback address).
    pub transport_security: String,
    /// Who the coordinator identified this call as.
    pub caller: String,
    /// `admin` or `read-only`.
    pub caller_role: String,
    /// The coordinator's clock when it answered.
    pub server_time: Option<String>,
    /// When the coordinator process started.
    pub started_at: Option<String>,
    /// When the configuration in force was loaded.
    pub config_loaded_at: Option<String>,
    /// The heartbeat interval agents keep.
    pub heartbeat_interval_seconds: Option<f64>,
    /// How long a host stays live without a heartbeat.
    pub host_ttl_seconds: Option<f64>,
    /// Whether the coordinator is still warming up (grants nothing).
    pub warming_up: bool,
    /// When warm-up ends; `null` when not warming up.
    pub warming_up_until: Option<String>,
    /// Host counts.
    pub hosts: HostCounts,
    /// Pauses in force.
    pub pauses: Vec<Pause>,
    /// Open circuit breakers.
    pub breakers: Vec<Breaker>,
    /// Per action: slots and budget.
    pub actions: Vec<ActionStatus>,
    /// Wall-clock steps the coordinator found since it started.
    pub clock_steps: u64,
    /// The latest of them; `null`: none.
    pub last_clock_step: Option<ClockStep>,
}

/// A wall-clock step in [`Status`].
#[derive(Debug, Clone, Serialize)]
pub struct ClockStep {
    /// `ahead` or `back`.
    pub direction: &'static str,
    /// How far, in seconds.
    pub seconds: Option<f64>,
    /// When it was found.
    pub at: Option<String>,
    /// How it was found.
    pub detail: String,
}

/// Host counts in [`Status`].
#[derive(Debug, Clone, Serialize)]
pub struct HostCounts {
    /// Hosts known (heartbeated, or holding a permit).
    pub known: u32,
    /// Hosts live (heartbeat within the host TTL, or holding a permit).
    pub live: u32,
    /// Live hosts reporting a problem or holding a permit.
    pub unhealthy: u32,
    /// Quarantined hosts.
    pub quarantined: u32,
    /// The fleet floor: below it nothing is granted.
    pub min_fleet_size: u32,
}

/// One action's slots and budget.
#[derive(Debug, Clone, Serialize)]
pub struct ActionStatus {
    /// `restart_job` or `reboot_host`.
    pub action: String,
    /// Active permits of this action.
    pub active: u32,
    /// The effective concurrency cap (0: the action is disabled).
    pub effective_cap: u32,
    /// Grants allowed per rate window (`count + burst`).
    pub rate_limit: u32,
    /// Grants made in the window ending now.
    pub rate_used: u32,
    /// `rate_limit - rate_used`, never negative.
    pub rate_left: u32,
    /// The rate window.
    pub rate_per_seconds: Option<f64>,
    /// When the rate budget next allows a grant; `null`: now.
    pub rate_next_at: Option<String>,
    /// Whether the action's time windows allow it now.
    pub in_window: bool,
}

impl From<&pb::GetStatusResponse> for Status {
    fn from(r: &pb::GetStatusResponse) -> Self {
        let s = r.status.clone().unwrap_or_default();
        Status {
            version: r.version.clone(),
            mode: if s.dry_run { "dry_run" } else { "enforce" }.to_owned(),
            transport_security: transport_security(r.transport_security),
            caller: r.caller.clone(),
            caller_role: r.caller_role.clone(),
            clock_steps: r.clock_steps,
            last_clock_step: r.last_clock_step.as_ref().map(|c| ClockStep {
                direction: if c.forward { "ahead" } else { "back" },
                seconds: seconds(c.by.as_ref()),
                at: time(c.at.as_ref()),
                detail: c.detail.clone(),
            }),
            server_time: time(r.server_time.as_ref()),
            started_at: time(r.started_at.as_ref()),
            config_loaded_at: time(r.config_loaded_at.as_ref()),
            heartbeat_interval_seconds: seconds(r.heartbeat_interval.as_ref()),
            host_ttl_seconds: seconds(r.host_ttl.as_ref()),
            warming_up: s.warming_up_until.is_some(),
            warming_up_until: time(s.warming_up_until.as_ref()),
            hosts: HostCounts {
                known: s.known_hosts,
                live: s.live_hosts,
                unhealthy: s.unhealthy_hosts,
                quarantined: s.quarantined_hosts,
                min_fleet_size: s.min_fleet_size,
            },
            pauses: s.pauses.iter().map(Pause::from).collect(),
            breakers: s.breakers.iter().map(Breaker::from).collect(),
            actions: s
                .actions
                .iter()
                .map(|a| ActionStatus {
                    action: action_name(a.action),
                    active: a.active,
                    effective_cap: a.effective_cap,
                    rate_limit: a.rate_limit,
                    rate_used: a.rate_used,
                    rate_left: a.rate_limit.saturating_sub(a.rate_used),
                    rate_per_seconds: seconds(a.rate_per.as_ref()),
                    rate_next_at: time(a.rate_next_at.as_ref()),
                    in_window: a.in_window,
                })
                .collect(),
        }
    }
}

// === Pauses, breakers, quarantines ===

/// What a pause covers.
#[derive(Debug, Clone, Serialize)]
pub struct Scope {
    /// Hosts whose labels contain all of these; `{}`: every host.
    pub selector: BTreeMap<String, String>,
    /// Only this action; `null`: every action.
    pub action: Option<String>,
}

impl From<Option<&pb::Scope>> for Scope {
    fn from(s: Option<&pb::Scope>) -> Self {
        Scope {
            selector: s.map(|s| s.selector.clone()).unwrap_or_default(),
            action: s.and_then(|s| action(s.action)),
        }
    }
}

/// An operator's pause.
#[derive(Debug, Clone, Serialize)]
pub struct Pause {
    /// Its id, for `medicctl resume --id`.
    pub id: u64,
    /// What it covers.
    pub scope: Scope,
    /// Who paused.
    pub actor: String,
    /// Why.
    pub reason: String,
    /// When it began.
    pub since: Option<String>,
    /// When it lapses by itself; `null`: until resumed.
    pub until: Option<String>,
}

impl From<&pb::Pause> for Pause {
    fn from(p: &pb::Pause) -> Self {
        Pause {
            id: p.pause_id,
            scope: Scope::from(p.scope.as_ref()),
            actor: p.actor.clone(),
            reason: p.reason.clone(),
            since: time(p.since.as_ref()),
            until: time(p.until.as_ref()),
        }
    }
}

/// An open circuit breaker.
#[derive(Debug, Clone, Serialize)]
pub struct Breaker {
    /// `fleet`, or `LABEL=VALUE` for a failure domain.
    pub scope: String,
    /// `unhealthy_fraction` or `failure_fraction`.
    pub cause: String,
    /// When it opened.
    pub since: Option<String>,
    /// The numbers that opened it.
    pub detail: String,
}

impl From<&pb::BreakerTrip> for Breaker {
    fn from(b: &pb::BreakerTrip) -> Self {
        Breaker {
            scope: breaker_scope(b.scope.as_ref()),
            cause: breaker_cause(b.cause),
            since: time(b.since.as_ref()),
            detail: b.detail.clone(),
        }
    }
}

/// A host held for a human.
#[derive(Debug, Clone, Serialize)]
pub struct Quarantine {
    /// The host.
    pub host_id: String,
    /// `manual`, `attempt_budget`, `permit_expired` or `gave_up`.
    pub cause: String,
    /// Who quarantined it (an operator, or `coordinator`).
    pub actor: String,
    /// Why.
    pub reason: String,
    /// Since when.
    pub since: Option<String>,
}

impl From<&pb::Quarantine> for Quarantine {
    fn from(q: &pb::Quarantine) -> Self {
        Quarantine {
            host_id: q.host_id.clone(),
            cause: quarantine_cause(q.cause),
            actor: q.actor.clone(),
            reason: q.reason.clone(),
            since: time(q.since.as_ref()),
        }
    }
}

// === Hosts ===

/// `medicctl hosts`.
#[derive(Debug, Clone, Serialize)]
pub struct Hosts {
    /// The hosts, ordered by host id.
    pub hosts: Vec<Host>,
}

/// One host as the coordinator sees it.
#[derive(Debug, Clone, Serialize)]
pub struct Host {
    /// The host.
    pub host_id: String,
    /// Its labels as last reported.
    pub labels: BTreeMap<String, String>,
    /// Its agent's version; `null` when not reported.
    pub agent_version: Option<String>,
    /// Whether it counts as live.
    pub live: bool,
    /// Whether it counts as unhealthy (a problem, or a permit in flight).
    pub unhealthy: bool,
    /// Its last heartbeat; `null`: known only through a permit.
    pub last_heartbeat: Option<String>,
    /// Its reported problems.
    pub problems: Vec<Problem>,
    /// Its active permit's id; `null`: none.
    pub active_permit_id: Option<String>,
    /// Its quarantine; `null`: not quarantined.
    pub quarantine: Option<Quarantine>,
}

/// A job's confirmed stuck condition.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// The job.
    pub job: String,
    /// The detector that fired.
    pub detector: String,
    /// Since when (the agent's clock).
    pub since: Option<String>,
    /// Evidence.
    pub detail: String,
}

impl From<&pb::Host> for Host {
    fn from(h: &pb::Host) -> Self {
        Host {
            host_id: h.host_id.clone(),
            labels: h.labels.clone(),
            agent_version: non_empty(&h.agent_version),
            live: h.live,
            unhealthy: h.unhealthy,
            last_heartbeat: time(h.last_heartbeat.as_ref()),
            problems: h
                .problems
                .iter()
                .map(|p| Problem {
                    job: p.job.clone(),
                    detector: p.detector.clone(),
                    since: time(p.since.as_ref()),
                    detail: p.detail.clone(),
                })
                .collect(),
            active_permit_id: non_empty(&h.active_permit_id),
            quarantine: h.quarantine.as_ref().map(Quarantine::from),
        }
    }
}

// === Permits ===

/// `medicctl permits`.
#[derive(Debug, Clone, Serialize)]
pub struct Permits {
    /// The permits, in grant order.
    pub permits: Vec<Permit>,
}

/// A permit.
#[derive(Debug, Clone, Serialize)]
pub struct Permit {
    /// `p-000000000042`.
    pub permit_id: String,
    /// Its fencing token.
    pub fencing_token: u64,
    /// The agent's idempotency key.
    pub request_id: String,
    /// The host allowed to act.
    pub host_id: String,
    /// `restart_job` or `reboot_host`.
    pub action: String,
    /// The job concerned.
    pub job: String,
    /// The agent's reason.
    pub reason: String,
    /// The host's labels at grant time.
    pub labels: BTreeMap<String, String>,
    /// Granted in dry-run mode.
    pub dry_run: bool,
    /// When it was granted.
    pub granted_at: Option<String>,
    /// When it lapses unless renewed or ended.
    pub expires_at: Option<String>,
    /// How long each grant or renewal lasts.
    pub ttl_seconds: Option<f64>,
    /// `active`, `succeeded`, `failed`, `aborted`, `dry_run`, `expired` or
    /// `revoked`.
    pub state: String,
}

impl From<&pb::Permit> for Permit {
    fn from(p: &pb::Permit) -> Self {
        Permit {
            permit_id: p.permit_id.clone(),
            fencing_token: p.fencing_token,
            request_id: p.request_id.clone(),
            host_id: p.host_id.clone(),
            action: action_name(p.action),
            job: p.job.clone(),
            reason: p.reason.clone(),
            labels: p.labels.clone(),
            dry_run: p.dry_run,
            granted_at: time(p.granted_at.as_ref()),
            expires_at: time(p.expires_at.as_ref()),
            ttl_seconds: seconds(p.ttl.as_ref()),
            state: permit_state(p.state),
        }
    }
}

// === Explain ===

/// `medicctl explain`.
#[derive(Debug, Clone, Serialize)]
pub struct Explain {
    /// The host asked about.
    pub host_id: String,
    /// The action asked about.
    pub action: String,
    /// Whether a request would be granted now (exactly when `denials` is
    /// empty).
    pub would_grant: bool,
    /// Every rule that would deny, in rule order.
    pub denials: Vec<Denial>,
}

/// One rule's refusal.
#[derive(Debug, Clone, Serialize)]
pub struct Denial {
    /// The rule: `warming_up`, `paused`, `breaker_open`, `quarantined`,
    /// `host_busy`, `cooldown`, `concurrency_cap`, `rate_limited`, ...
    pub reason: String,
    /// How long until it could clear by itself; `null`: it will not, a
    /// human must act (resume, release, reset).
    pub retry_after_seconds: Option<f64>,
    /// A sentence a human can act on.
    pub message: String,
}

impl From<&pb::Denial> for Denial {
    fn from(d: &pb::Denial) -> Self {
        Denial {
            reason: deny_reason(d.reason),
            retry_after_seconds: seconds(d.retry_after.as_ref()),
            message: d.message.clone(),
        }
    }
}

impl From<&pb::ExplainResponse> for Explain {
    fn from(e: &pb::ExplainResponse) -> Self {
        Explain {
            host_id: e.host_id.clone(),
            action: action_name(e.action),
            would_grant: e.would_grant,
            denials: e.denials.iter().map(Denial::from).collect(),
        }
    }
}

// === History ===

/// `medicctl history`.
#[derive(Debug, Clone, Serialize)]
pub struct History {
    /// The events, oldest first (newest first with `--newest-first`).
    pub events: Vec<Event>,
    /// Pass as `--page-token` to continue; `null`: nothing more.
    pub next_page_token: Option<String>,
}

/// One audit event (`history`, and each line of `watch -o json`).
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// Its position in the history: strictly increasing.
    pub id: u64,
    /// When it happened (the coordinator's clock).
    pub time: Option<String>,
    /// `grant`, `deny`, `outcome`, `admin`, `breaker`, `quarantine`,
    /// `pause`, `config` or `renew`.
    pub kind: String,
    /// Who caused it (an operator, `host:ID`, or `coordinator`); `null`
    /// when not recorded.
    pub actor: Option<String>,
    /// The host it concerns; `null`: no single host.
    pub host_id: Option<String>,
    /// Why, or what happened, in words.
    pub reason: String,
    /// The complete record; its `type` says which.
    pub payload: Payload,
}

/// An event's complete record, tagged by `type`.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Payload {
    /// A permit was granted.
    PermitGranted {
        /// The permit as granted.
        permit: Permit,
    },
    /// A permit's expiry was pushed out.
    PermitRenewed {
        /// Which permit.
        permit_id: String,
        /// Its new expiry.
        expires_at: Option<String>,
        /// When.
        at: Option<String>,
    },
    /// A permit ended: an outcome, an expiry, or a revocation.
    PermitEnded {
        /// Which permit.
        permit_id: String,
        /// The host that held it.
        host_id: String,
        /// Its action.
        action: String,
        /// Its final state.
        state: String,
        /// Who ended it.
        actor: String,
        /// The outcome text, or the revocation reason.
        detail: String,
        /// When.
        at: Option<String>,
    },
    /// A host was quarantined.
    HostQuarantined {
        /// The quarantine.
        quarantine: Quarantine,
    },
    /// A host was released.
    HostReleased {
        /// The host.
        host_id: String,
        /// Who released it.
        actor: String,
        /// Why.
        reason: String,
        /// When.
        at: Option<String>,
    },
    /// A pause began.
    Paused {
        /// The pause.
        pause: Pause,
    },
    /// A pause ended.
    Resumed {
        /// The pause as it was.
        pause: Option<Pause>,
        /// Who resumed it (`coordinator` when it expired).
        actor: String,
        /// Why.
        reason: String,
        /// When.
        at: Option<String>,
    },
    /// A circuit breaker opened.
    BreakerOpened {
        /// The breaker.
        breaker: Breaker,
    },
    /// A circuit breaker closed.
    BreakerClosed {
        /// `fleet` or `LABEL=VALUE`.
        scope: String,
        /// Who closed it (`coordinator` for an automatic close).
        actor: String,
        /// Why.
        reason: String,
        /// When.
        at: Option<String>,
    },
    /// A sample of denied requests.
    Denied {
        /// The host denied.
        host_id: String,
        /// What it asked for.
        action: String,
        /// The (last) denial.
        denial: Option<Denial>,
        /// How many denials this event stands for.
        count: u64,
    },
    /// A configuration reload was attempted.
    ConfigReloaded {
        /// Whether the new configuration is in force.
        ok: bool,
        /// Every error, when not.
        errors: Vec<ConfigError>,
    },
    /// An authenticated caller was refused (sampled).
    AccessDenied {
        /// Who (`cert:NAME`, `token:NAME`).
        identity: String,
        /// The call.
        call: String,
        /// The host a Remediation call named.
        host_id: Option<String>,
        /// The client's address.
        peer: String,
        /// Refusals this event stands for.
        count: u64,
    },
    /// The wall clock was checked, and perhaps found stepped.
    ClockChecked {
        /// `ahead` or `back`; absent without a step.
        step_direction: Option<&'static str>,
        /// How far it jumped, in seconds.
        step_seconds: Option<f64>,
        /// How it was found.
        detail: String,
        /// When.
        at: Option<String>,
    },
    /// A payload this medicctl does not know (a newer coordinator).
    Unknown,
}

impl From<&pb::Event> for Event {
    fn from(e: &pb::Event) -> Self {
        use pb::event::Payload as P;
        let payload = match &e.payload {
            Some(P::PermitGranted(g)) => match &g.permit {
                Some(p) => Payload::PermitGranted {
                    permit: Permit::from(p),
                },
                None => Payload::Unknown,
            },
            Some(P::PermitRenewed(r)) => Payload::PermitRenewed {
                permit_id: r.permit_id.clone(),
                expires_at: time(r.expires_at.as_ref()),
                at: time(r.at.as_ref()),
            },
            Some(P::PermitEnded(x)) => Payload::PermitEnded {
                permit_id: x.permit_id.clone(),
                host_id: x.host_id.clone(),
                action: action_name(x.action),
                state: permit_state(x.state),
                actor: x.actor.clone(),
                detail: x.detail.clone(),
                at: time(x.at.as_ref()),
            },
            Some(P::HostQuarantined(q)) => Payload::HostQuarantined {
                quarantine: Quarantine::from(q),
            },
            Some(P::HostReleased(r)) => Payload::HostReleased {
                host_id: r.host_id.clone(),
                actor: r.actor.clone(),
                reason: r.reason.clone(),
                at: time(r.at.as_ref()),
            },
            Some(P::Paused(p)) => Payload::Paused {
                pause: Pause::from(p),
            },
            Some(P::Resumed(r)) => Payload::Resumed {
                pause: r.pause.as_ref().map(Pause::from),
                actor: r.actor.clone(),
                reason: r.reason.clone(),
                at: time(r.at.as_ref()),
            },
            Some(P::BreakerOpened(b)) => Payload::BreakerOpened {
                breaker: Breaker::from(b),
            },
            Some(P::BreakerClosed(b)) => Payload::BreakerClosed {
                scope: breaker_scope(b.scope.as_ref()),
                actor: b.actor.clone(),
                reason: b.reason.clone(),
                at: time(b.at.as_ref()),
            },
            Some(P::Denied(d)) => Payload::Denied {
                host_id: d.host_id.clone(),
                action: action_name(d.action),
                denial: d.denial.as_ref().map(Denial::from),
                count: d.count,
            },
            Some(P::ConfigReloaded(c)) => Payload::ConfigReloaded {
                ok: c.ok,
                errors: c.errors.iter().map(ConfigError::from).collect(),
            },
            Some(P::AccessDenied(a)) => Payload::AccessDenied {
                identity: a.identity.clone(),
                call: a.call.clone(),
                host_id: non_empty(&a.host_id),
                peer: a.peer.clone(),
                count: a.count,
            },
            Some(P::ClockChecked(c)) => Payload::ClockChecked {
                step_direction: c
                    .step
                    .as_ref()
                    .map(|s| if s.forward { "ahead" } else { "back" }),
                step_seconds: c.step.as_ref().and_then(|s| seconds(s.by.as_ref())),
                detail: c.detail.clone(),
                at: time(c.at.as_ref()),
            },
            None => Payload::Unknown,
        };
        Event {
            id: e.id,
            time: time(e.time.as_ref()),
            kind: event_kind(e.kind),
            actor: non_empty(&e.actor),
            host_id: non_empty(&e.host_id),
            reason: e.reason.clone(),
            payload,
        }
    }
}

// === Replies to state-changing calls ===

/// `medicctl pause`.
#[derive(Debug, Clone, Serialize)]
pub struct Paused {
    /// The new pause.
    pub pause: Pause,
}

/// `medicctl resume`.
#[derive(Debug, Clone, Serialize)]
pub struct Resumed {
    /// The pauses that ended, each as it was.
    pub resumed: Vec<Pause>,
}

/// `medicctl revoke`.
#[derive(Debug, Clone, Serialize)]
pub struct Revoked {
    /// The permit, now `revoked`.
    pub permit: Permit,
}

/// `medicctl quarantine`.
#[derive(Debug, Clone, Serialize)]
pub struct Quarantined {
    /// The new quarantine.
    pub quarantine: Quarantine,
}

/// `medicctl unquarantine`.
#[derive(Debug, Clone, Serialize)]
pub struct Released {
    /// The quarantine that ended, as it was.
    pub released: Quarantine,
}

/// `medicctl breaker reset`.
#[derive(Debug, Clone, Serialize)]
pub struct BreakersClosed {
    /// The breakers that closed, each as it was while open.
    pub closed: Vec<Breaker>,
}

/// `medicctl reload`.
#[derive(Debug, Clone, Serialize)]
pub struct Reload {
    /// Whether the new configuration is in force.
    pub applied: bool,
    /// Every error found, when not.
    pub errors: Vec<ConfigError>,
}

/// One invalid setting.
#[derive(Debug, Clone, Serialize)]
pub struct ConfigError {
    /// Its key path (`limits.reboot_host.cooldown`); empty for the file as
    /// a whole.
    pub key: String,
    /// What is wrong, and what would be accepted.
    pub message: String,
}

impl From<&pb::ConfigError> for ConfigError {
    fn from(e: &pb::ConfigError) -> Self {
        ConfigError {
            key: e.key.clone(),
            message: e.message.clone(),
        }
    }
}
