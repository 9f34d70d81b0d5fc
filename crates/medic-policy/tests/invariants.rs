//! Model-based property test: random sequences of heartbeats, requests,
//! retries, renewals, outcomes, expiries, pauses, quarantines, breaker
//! resets, alert gate readings, config changes, restarts and time jumps,
//! with ARCHITECTURE.md's invariants I1–I5 and I7 (and "no grant while a
//! gate covering it is closed") checked after every step against an independent
//! model of the fleet kept by the test (not against the engine's own counts).
//! On failure proptest shrinks to a minimal sequence and prints it.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use medic_policy::config::{GateConfig, OnError};
use medic_policy::{
    Action, BreakerScope, Decision, DurableState, Engine, Event, FencingToken, GateReading,
    GateReadings, Heartbeat, HostId, Labels, Outcome, PermitRef, PermitRequest, PolicyConfig,
    PolicyError, Problem, RequestId, ResumeTarget, Scope, Time,
};
use proptest::prelude::*;
use proptest::test_runner::Config;
use proptest_state_machine::{ReferenceStateMachine, StateMachineTest, prop_state_machine};

const HOSTS: usize = 12;
const RACKS: usize = 3;
const ZONES: usize = 2;

fn start_time() -> Time {
    Time::UNIX_EPOCH + Duration::from_secs(1_767_225_600) // 2026-01-01T00:00:00Z
}

/// Config variants the test switches between: tight caps and budgets so the
/// rules actually bind, per-group caps on two labels, a rack breaker, dry-run
/// and a time window.
fn configs() -> Vec<PolicyConfig> {
    let base = r#"
        [fleet]
        heartbeat_interval = "10s"
        host_ttl = "30s"
        warmup = "30s"
        min_fleet_size = 4
        [breaker]
        unhealthy_percent = 60
        failure_percent = 50
        window = "30m"
        min_samples = 4
        auto_close_after = "5m"
        [breaker.domains.rack]
        unhealthy_percent = 80
        min_hosts = 3
        [limits.restart_job]
        max_in_flight = 4
        max_in_flight_percent = 30
        permit_ttl = "2m"
        cooldown = "1m"
        rate = { count = 6, per = "10m", burst = 2 }
        host_budget = { max_attempts = 3, per = "1h" }
        [limits.restart_job.groups.rack]
        max_in_flight = 2
        [limits.restart_job.groups.zone]
        max_in_flight_percent = 25
        [limits.reboot_host]
        max_in_flight = 2
        permit_ttl = "5m"
        cooldown = "10m"
        rate = { count = 3, per = "30m", burst = 1 }
        host_budget = { max_attempts = 2, per = "2h" }
        [limits.reboot_host.groups.rack]
        max_in_flight = 1
        [limits.restart_job.jobs.job-0]
        max_in_flight = 2
        groups = { rack = 1 }
        [limits.restart_job.override_ceiling]
        max_in_flight = 7
        rate_count = 12
        [actions.drain_host]
        description = "drain the host's traffic"
        [limits.drain_host]
        max_in_flight = 2
        permit_ttl = "3m"
        cooldown = "2m"
        rate = { count = 3, per = "20m", burst = 0 }
        host_budget = { max_attempts = 2, per = "1h" }
        [limits.drain_host.jobs.job-1]
        groups = { zone = 1 }
        [limits.drain_host.approval]
        always = true
        expire_after = "5m"
        use_within = "2m"
        [limits.reboot_host.approval]
        above_in_flight = 1
        [[gates]]
        name = "db"
        prometheus = "http://prometheus:9090"
        query = 'ALERTS{alertstate="firing",alertname="DatabaseDown"}'
        interval = "10s"
        [[gates]]
        name = "rack"
        prometheus = "http://prometheus:9090"
        query = 'ALERTS{alertstate="firing",rack="$value"}'
        label = "rack"
        actions = ["reboot_host"]
        interval = "10s"
        stale_after = "1m"
    "#;
    let tight = r#"
        mode = "dry-run"
        [fleet]
        heartbeat_interval = "10s"
        host_ttl = "30s"
        min_fleet_size = 2
        [breaker]
        unhealthy_percent = 90
        auto_close_after = "never"
        [limits.restart_job]
        max_in_flight = 1
        permit_ttl = "1m"
        cooldown = "30s"
        rate = { count = 2, per = "5m" }
        host_budget = { max_attempts = 2, per = "30m" }
        [limits.reboot_host]
        max_in_flight = 1
        permit_ttl = "1m"
        rate = { count = 1, per = "1h", burst = 0 }
        timezone = "UTC"
        windows = [{ days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], start = "00:00", end = "12:00" }]
        [limits.reboot_host.groups.zone]
        max_in_flight = 1
        [[gates]]
        name = "db"
        prometheus = "http://prometheus:9090"
        query = 'ALERTS{alertstate="firing",alertname="DatabaseDown"}'
        interval = "10s"
        on_error = "open"
    "#;
    let loose = r#"
        [fleet]
        heartbeat_interval = "10s"
        min_fleet_size = 1
        [breaker]
        unhealthy_percent = 100
        failure_percent = 100
        # Loose: hosts going quiet between steps do not open it either.
        liveness_drop = { percent = 100 }
        [limits.restart_job]
        max_in_flight = 8
        max_in_flight_percent = 50
        permit_ttl = "1m"
        cooldown = "0s"
        rate = { count = 20, per = "10m", burst = 5 }
        host_budget = { max_attempts = 5, per = "1h" }
        [limits.restart_job.groups.rack]
        max_in_flight_percent = 50
        [limits.reboot_host]
        max_in_flight = 3
        permit_ttl = "2m"
        cooldown = "1m"
        rate = { count = 4, per = "20m", burst = 1 }
        [actions.drain_host]
        [limits.drain_host]
        dry_run = true
        max_in_flight = 1
        permit_ttl = "1m"
        [limits.drain_host.jobs.job-2]
        max_in_flight = 1
        [limits.reboot_host.approval]
        always = true
        expire_after = "10m"
        use_within = "1m"
        [limits.restart_job.approval]
        above_in_flight = 2
    "#;
    [base, tight, loose]
        .iter()
        .map(|t| PolicyConfig::from_toml(t).unwrap_or_else(|e| panic!("{e}")))
        .collect()
}

fn host_id(i: usize) -> HostId {
    HostId::new(format!("h{i:02}")).unwrap()
}

fn host_labels(i: usize) -> Labels {
    Labels::from([
        ("rack".to_owned(), format!("r{}", i % RACKS)),
        ("zone".to_owned(), format!("z{}", i % ZONES)),
    ])
}

// === The transitions ===

#[derive(Clone, Debug)]
enum Step {
    Heartbeat {
        host: usize,
        problem: bool,
        needs_human: bool,
    },
    /// Every agent heartbeats (a bit set in `problems`: reporting one), as
    /// a fleet does within each heartbeat interval.
    FleetHeartbeat {
        problems: u16,
    },
    Request {
        host: usize,
        action: Action,
        job: u8,
        /// The agent runs in dry-run and asks for a dry-run permit.
        dry_run: bool,
    },
    /// Retry an earlier request with the same request_id (I7).
    Retry {
        pick: usize,
    },
    Renew {
        pick: usize,
        stale: bool,
    },
    Report {
        pick: usize,
        outcome: Outcome,
        stale: bool,
    },
    Pause {
        rack: Option<usize>,
        action: Option<Action>,
        for_secs: Option<u64>,
    },
    Resume {
        pick: usize,
    },
    Quarantine {
        host: usize,
    },
    Unquarantine {
        host: usize,
    },
    Revoke {
        pick: usize,
    },
    ResetBreaker,
    SetConfig {
        variant: usize,
    },
    Tick,
    Advance {
        secs: u64,
    },
    Restart,
    /// An operator overrides a limit (maybe above its ceiling, or without
    /// a reason: then it must be refused).
    Override {
        action: Action,
        rate: bool,
        value: u32,
        secs: u64,
        reason: bool,
    },
    EndOverride {
        pick: usize,
    },
    /// An operator approves or rejects an approval (any: deciding one
    /// that is not pending, or without a reason, must be refused).
    Decide {
        pick: usize,
        /// Pick among the pending ones only.
        pending: bool,
        approve: bool,
        reason: bool,
        /// The waiting agent asks again at once (woken by the decision).
        retry: bool,
    },
    /// A round of a gate's evaluations: per rack (a fleet-wide gate uses
    /// the first), 0 quiet, 1 firing, 2 failed, 3 not evaluated.
    Gate {
        pick: usize,
        states: [u8; RACKS],
    },
}

/// The built-ins and `drain_host`, a custom action two of the three
/// configs declare (the third does not know it: it is denied there).
fn action() -> impl Strategy<Value = Action> {
    let drain = Action::declare("drain_host").unwrap();
    prop_oneof![
        Just(Action::RestartJob),
        Just(Action::RebootHost),
        Just(drain)
    ]
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        3 => Just(Outcome::Succeeded),
        2 => Just(Outcome::Failed),
        1 => Just(Outcome::Aborted),
        1 => Just(Outcome::DryRun),
    ]
}

struct Model;

impl ReferenceStateMachine for Model {
    /// The reference only picks the config to start in; the invariants are checked against
    /// the harness's own model of the fleet, see `Harness`.
    /// The config variant the sequence starts in.
    type State = usize;
    type Transition = Step;

    fn init_state() -> BoxedStrategy<Self::State> {
        (0usize..3).boxed()
    }

    fn transitions(_: &Self::State) -> BoxedStrategy<Self::Transition> {
        let host = 0..HOSTS;
        prop_oneof![
            30 => (host.clone(), proptest::bool::weighted(0.4), proptest::bool::weighted(0.01))
                .prop_map(|(host, problem, needs_human)| Step::Heartbeat { host, problem, needs_human }),
            6 => (any::<u16>(), any::<u16>())
                .prop_map(|(a, b)| Step::FleetHeartbeat { problems: a & b }),
            25 => (host.clone(), action(), 0u8..3, proptest::bool::weighted(0.2))
                .prop_map(|(host, action, job, dry_run)| Step::Request { host, action, job, dry_run }),
            4 => any::<usize>().prop_map(|pick| Step::Retry { pick }),
            6 => (any::<usize>(), proptest::bool::weighted(0.2))
                .prop_map(|(pick, stale)| Step::Renew { pick, stale }),
            12 => (any::<usize>(), outcome(), proptest::bool::weighted(0.15))
                .prop_map(|(pick, outcome, stale)| Step::Report { pick, outcome, stale }),
            2 => (proptest::option::of(0..RACKS), proptest::option::of(action()),
                  proptest::option::of(30u64..1800))
                .prop_map(|(rack, action, for_secs)| Step::Pause { rack, action, for_secs }),
            2 => any::<usize>().prop_map(|pick| Step::Resume { pick }),
            1 => host.clone().prop_map(|host| Step::Quarantine { host }),
            3 => host.prop_map(|host| Step::Unquarantine { host }),
            1 => any::<usize>().prop_map(|pick| Step::Revoke { pick }),
            1 => Just(Step::ResetBreaker),
            1 => (0usize..3).prop_map(|variant| Step::SetConfig { variant }),
            3 => Just(Step::Tick),
            12 => prop_oneof![1u64..20, 20u64..200, 200u64..4000]
                .prop_map(|secs| Step::Advance { secs }),
            1 => Just(Step::Restart),
            2 => (action(), any::<bool>(), 0u32..10, prop_oneof![1u64..120, 120u64..3600],
                  proptest::bool::weighted(0.9))
                .prop_map(|(action, rate, value, secs, reason)| Step::Override {
                    action, rate, value, secs, reason,
                }),
            1 => any::<usize>().prop_map(|pick| Step::EndOverride { pick }),
            6 => (any::<usize>(), proptest::bool::weighted(0.8), proptest::bool::weighted(0.7),
                  proptest::bool::weighted(0.95), proptest::bool::weighted(0.7))
                .prop_map(|(pick, pending, approve, reason, retry)| Step::Decide {
                    pick, pending, approve, reason, retry,
                }),
            6 => (any::<usize>(), [0u8..4, 0u8..4, 0u8..4])
                .prop_map(|(pick, states)| Step::Gate { pick, states }),
        ]
        .boxed()
    }

    fn apply(state: Self::State, _: &Self::Transition) -> Self::State {
        state
    }
}

// === The harness: engine plus an independent model ===

struct Harness {
    configs: Vec<PolicyConfig>,
    config: usize,
    engine: Engine,
    started: Time,
    now: Time,
    /// Every event the engine ever emitted, folded (with the same
    /// compactions) into what a store would hold.
    folded: DurableState,
    last_heartbeat: Vec<Option<Time>>,
    problems: Vec<bool>,
    /// Every request made, and the permit it obtained.
    requests: Vec<(
        PermitRequest,
        Option<(medic_policy::PermitId, FencingToken)>,
    )>,
    /// Every fresh grant: (time, action, token).
    /// Grants: when, what, and whether dry-run (each lane has its budget).
    grants: Vec<(Time, Action, bool)>,
    /// Whether each granted permit was dry-run.
    dry: HashMap<medic_policy::PermitId, bool>,
    last_token: FencingToken,
    /// Model of pauses issued through the engine: id → (scope, until).
    pauses: BTreeMap<u64, (Scope, Option<Time>)>,
    /// Overrides the model knows are in force until their `until`.
    overrides: BTreeMap<u64, medic_policy::Override>,
    quarantined: BTreeSet<HostId>,
    last_end: HashMap<(HostId, Action, bool), Time>,
    /// Model of the gate readings fed to the engine, by gate (its
    /// settings, and when and what it read per rack; `None` for a rack
    /// not evaluated). Cleared for a gate whose settings change, and by a
    /// restart: readings are not durable.
    gates: Vec<(GateConfig, Time, [Option<u8>; RACKS])>,
    /// Approvals as the model saw them in the events: where each stands,
    /// until when, and for which request.
    approvals: BTreeMap<u64, ModelApproval>,
    next_request: u64,
}

#[derive(Clone, Debug)]
struct ModelApproval {
    state: medic_policy::ApprovalState,
    expires_at: Time,
    request_id: RequestId,
}

impl Harness {
    /// The first gate covering `action` for a host in `rack` that the
    /// model says is closed now: firing, or unusable (failed, stale, never
    /// evaluated) without `on_error = "open"`.
    fn closed_gate(&self, action: Action, rack: usize) -> Option<String> {
        self.cfg()
            .gates
            .iter()
            .filter(|g| g.covers(action.as_str()))
            .find_map(|g| {
                let reading =
                    self.gates
                        .iter()
                        .find(|(c, _, _)| c == g)
                        .and_then(|(_, at, states)| {
                            let state = states[if g.label.is_some() { rack } else { 0 }]?;
                            let stale = self.now.duration_since(*at).unwrap() > g.stale_after;
                            Some(if stale { 2 } else { state })
                        });
                let closed = match reading {
                    Some(1) => true,
                    Some(0) => false,
                    _ => g.on_error == OnError::Closed,
                };
                closed.then(|| g.name.clone())
            })
    }

    fn cfg(&self) -> &PolicyConfig {
        &self.configs[self.config]
    }

    /// Applies new events to the fold and to the model of quarantines and
    /// permit ends. Returns them.
    fn absorb(&mut self) -> Vec<Event> {
        let events = self.engine.take_events();
        // Right after a call the engine's incremental live and unhealthy
        // counts must match a recount of the model.
        let (unhealthy, live) = self.unhealthy();
        let (elive, eunhealthy, _) = self.engine.counts();
        assert_eq!(
            (elive, eunhealthy),
            (live, unhealthy),
            "live/unhealthy counts drifted"
        );
        // Whether the permit that last expired was dry-run: a dry-run
        // permit's expiry quarantines nothing.
        let mut expired_dry = None;
        for e in &events {
            self.folded.apply(e);
            match e {
                Event::HostQuarantined(q) => {
                    if q.cause == medic_policy::QuarantineCause::PermitExpired {
                        assert_eq!(
                            expired_dry,
                            Some(false),
                            "a quarantine for an expiry follows a real permit's expiry"
                        );
                    }
                    self.quarantined.insert(q.host.clone());
                }
                Event::HostReleased { host, .. } => {
                    self.quarantined.remove(host);
                }
                Event::PermitEnded {
                    id,
                    host,
                    action,
                    state,
                    at,
                    ..
                } => {
                    let dry = self.dry.get(id).copied().unwrap_or(false);
                    self.last_end.insert((host.clone(), *action, dry), *at);
                    if *state == medic_policy::PermitState::Expired {
                        expired_dry = Some(dry);
                    }
                }
                Event::Resumed { pause, .. } => {
                    self.pauses.remove(&pause.id);
                }
                Event::ApprovalRequested(a) => {
                    assert!(
                        !self.approvals.contains_key(&a.id),
                        "approval id {} reused",
                        a.id
                    );
                    self.approvals.insert(
                        a.id,
                        ModelApproval {
                            state: a.state,
                            expires_at: a.expires_at,
                            request_id: a.request_id.clone(),
                        },
                    );
                }
                Event::ApprovalChanged {
                    id,
                    state,
                    expires_at,
                    at,
                    ..
                } => {
                    use medic_policy::ApprovalState as S;
                    let m = self
                        .approvals
                        .get_mut(id)
                        .unwrap_or_else(|| panic!("approval {id} changed before it was requested"));
                    // Decided or used once, and only before it expired;
                    // expired only once due.
                    let allowed = match (m.state, *state) {
                        (S::Pending, S::Approved | S::Rejected) | (S::Approved, S::Used) => {
                            m.expires_at > *at
                        }
                        (S::Pending | S::Approved, S::Expired) => m.expires_at <= *at,
                        (S::Pending, S::Withdrawn) => true,
                        _ => false,
                    };
                    assert!(
                        allowed,
                        "approval {id} went from {} to {state} (an approval used twice, \
                         or used without being approved, or after it expired)",
                        m.state
                    );
                    m.state = *state;
                    if let Some(e) = expires_at {
                        m.expires_at = *e;
                    }
                }
                _ => {}
            }
        }
        events
    }

    fn live(&self, i: usize, holders: &BTreeSet<HostId>) -> bool {
        let ttl = self.cfg().fleet.host_ttl;
        let heard = self.last_heartbeat[i]
            .is_some_and(|t| self.now.duration_since(t).is_ok_and(|d| d < ttl));
        heard || holders.contains(&host_id(i))
    }

    /// Hosts that surely went silent within the liveness-drop window:
    /// heard from since the engine started, not live now, and their last
    /// heartbeat's TTL ran out within the window.
    fn recently_silent(&self) -> u32 {
        let cfg = self.cfg();
        let (ttl, window) = (cfg.fleet.host_ttl, cfg.breaker.liveness_drop.window);
        let holders = self.holders();
        (0..HOSTS)
            .filter(|&i| !self.live(i, &holders))
            .filter_map(|i| self.last_heartbeat[i])
            .filter(|&hb| {
                self.now
                    .duration_since(hb + ttl)
                    .is_ok_and(|since| since <= window)
            })
            .count() as u32
    }

    fn holders(&self) -> BTreeSet<HostId> {
        self.engine.permits().map(|p| p.host.clone()).collect()
    }

    /// Fleet-wide unhealthy share as the model sees it, if the fleet is
    /// known: (unhealthy, live).
    fn unhealthy(&self) -> (u32, u32) {
        let holders = self.holders();
        let mut live = 0;
        let mut unhealthy = 0;
        for i in 0..HOSTS {
            if self.live(i, &holders) {
                live += 1;
                if self.problems[i] && self.last_heartbeat[i].is_some()
                    || holders.contains(&host_id(i))
                {
                    unhealthy += 1;
                }
            }
        }
        (unhealthy, live)
    }

    /// The checks of I1–I4 for one fresh grant made at `self.now`, with the
    /// model state `before` the request.
    fn check_grant(&self, req: &PermitRequest, token: FencingToken, dry: bool, before: &Before) {
        let cfg = self.cfg();
        let now = self.now;
        // The limits in force: the config's, with the overrides the model
        // knows to be unexpired. An expired override still applied, or an
        // override past its ceiling, shows as a broken cap below.
        let mut in_force = cfg.limits(req.action).clone();
        for o in self
            .overrides
            .values()
            .filter(|o| o.action == req.action && o.until > now)
        {
            in_force.overridden(o.limit, o.value);
        }
        let limits = &in_force;
        // I5: strictly increasing tokens.
        assert!(
            token > before.last_token,
            "I5: token {token} not above {}",
            before.last_token
        );
        // I3: warm-up, pause, quarantine, cooldown, window, breaker.
        assert!(
            now.duration_since(self.started).unwrap() >= cfg.fleet.warmup,
            "I3: granted while warming up"
        );
        let labels = host_labels(host_index(&req.host));
        for (id, (scope, until)) in &before.pauses {
            let in_force = until.is_none_or(|u| u > now);
            assert!(
                !(in_force && scope.covers(req.action, &labels)),
                "I3: granted {} to {} under pause {id} ({scope})",
                req.action,
                req.host
            );
        }
        assert!(
            !self.quarantined.contains(&req.host),
            "I3: granted to a quarantined host {}",
            req.host
        );
        // Only actions the config knows are granted.
        assert!(
            cfg.knows(req.action),
            "granted {} which the config does not declare",
            req.action
        );
        // A dry-run permit asked, granted in dry-run mode, or of an action
        // that is dry-run only.
        assert_eq!(
            dry,
            req.dry_run || cfg.dry_run || limits.dry_run,
            "dry-run of the permit"
        );
        if let Some(end) = before.last_end.get(&(req.host.clone(), req.action, dry)) {
            assert!(
                now.duration_since(*end).unwrap() >= limits.cooldown,
                "I3: granted to {} in cooldown",
                req.host
            );
        }
        for w in &limits.windows {
            // The only windowed variant allows 00:00-12:00 UTC daily.
            assert_eq!(w.start_secs, 0);
            let secs_of_day = now.duration_since(Time::UNIX_EPOCH).unwrap().as_secs() % 86_400;
            assert!(secs_of_day < 12 * 3600, "I3: granted outside the window");
        }
        for trip in self.engine.durable().breakers.values() {
            if !trip.scope.covers(&labels) {
                continue;
            }
            // Open: nothing. Half-open: no more probes at once than its
            // budget (the grant included).
            let Some(h) = &trip.half_open else {
                panic!(
                    "I3: granted to {} while breaker {} is open",
                    req.host, trip.scope
                );
            };
            let probes = self
                .engine
                .permits()
                .filter(|p| trip.scope.covers(&p.labels))
                .count() as u32;
            let budget = cfg.breaker.probe_budget(h.successes);
            assert!(
                probes <= budget,
                "I3: {probes} probes active under half-open breaker {} (budget {budget})",
                trip.scope
            );
        }
        let fleet_trip = self.engine.durable().breakers.get(&BreakerScope::Fleet);
        let (unhealthy, live) = before.unhealthy;
        if live >= cfg.fleet.min_fleet_size
            && unhealthy >= cfg.breaker.min_unhealthy
            && fleet_trip.is_none()
        {
            assert!(
                f64::from(unhealthy) * 100.0 <= cfg.breaker.unhealthy_percent * f64::from(live),
                "I3: granted with {unhealthy}/{live} hosts unhealthy (breaker should be open)"
            );
        }
        // The liveness drop: hosts the model knows went silent within the
        // window are a lower bound of what the engine counts, and the share
        // only grows with the count.
        if fleet_trip.is_none() {
            let ld = &cfg.breaker.liveness_drop;
            let silent = self.recently_silent();
            let live = (0..HOSTS)
                .filter(|&i| self.live(i, &self.holders()))
                .count() as u32;
            assert!(
                silent < ld.min_hosts
                    || f64::from(silent) * 100.0 <= ld.percent * f64::from(live + silent),
                "I3: granted with {silent} of {} hosts gone silent within {:?} \
                 (the liveness-drop breaker should be open)",
                live + silent,
                ld.window
            );
        }
        // No grant while a gate covering it is closed.
        if let Some(gate) = self.closed_gate(req.action, host_index(&req.host) % RACKS) {
            panic!(
                "granted {} to {} while gate {gate} is closed",
                req.action, req.host
            );
        }
        // I4: the host held nothing before.
        assert!(
            !before.holders.contains(&req.host),
            "I4: {} got a second permit",
            req.host
        );

        // I1: caps, fleet-wide and per group value, over the model's liveness.
        let holders = self.holders();
        let live_now = (0..HOSTS).filter(|&i| self.live(i, &holders)).count() as u32;
        let active = self
            .engine
            .permits()
            .filter(|p| p.action == req.action)
            .count() as u32;
        let cap = limits.effective_cap(live_now);
        assert!(
            active <= cap,
            "I1: {active} active {} > cap {cap}",
            req.action
        );
        for (label, gcap) in &limits.groups {
            let value = &labels[label];
            let in_group = |l: &Labels| l.get(label) == Some(value);
            let live_in = (0..HOSTS)
                .filter(|&i| in_group(&host_labels(i)) && self.live(i, &holders))
                .count() as u32;
            let active_in = self
                .engine
                .permits()
                .filter(|p| p.action == req.action && in_group(&p.labels))
                .count() as u32;
            let cap = gcap.cap(live_in);
            assert!(
                active_in <= cap,
                "I1: {active_in} active {} in {label}={value} > cap {cap}",
                req.action
            );
        }
        // I1: the job's caps, fleet-wide and per label value.
        if let Some(jcap) = limits.jobs.get(&req.job) {
            let same_job = |p: &&medic_policy::Permit| p.action == req.action && p.job == req.job;
            let n = self.engine.permits().filter(same_job).count() as u32;
            if let Some(max) = jcap.max_in_flight {
                assert!(
                    n <= max,
                    "I1: {n} active {} of job {} > {max}",
                    req.action,
                    req.job
                );
            }
            for (label, &max) in &jcap.groups {
                let value = &labels[label];
                let n = self
                    .engine
                    .permits()
                    .filter(same_job)
                    .filter(|p| p.labels.get(label) == Some(value))
                    .count() as u32;
                assert!(
                    n <= max,
                    "I1: {n} active {} of job {} in {label}={value} > {max}",
                    req.action,
                    req.job
                );
            }
        }
        // I2: grants in the window ending now.
        let r = limits.rate;
        let in_window = self
            .grants
            .iter()
            .filter(|(t, a, d)| {
                *a == req.action && *d == dry && now.duration_since(*t).unwrap() < r.per
            })
            .count() as u32;
        assert!(
            in_window <= r.limit(),
            "I2: {in_window} {} grants within {:?} > {}",
            req.action,
            r.per,
            r.limit()
        );
    }
}

fn host_index(h: &HostId) -> usize {
    h.as_str()[1..].parse().unwrap()
}

/// Model state captured before a request.
struct Before {
    last_token: FencingToken,
    pauses: BTreeMap<u64, (Scope, Option<Time>)>,
    last_end: HashMap<(HostId, Action, bool), Time>,
    holders: BTreeSet<HostId>,
    unhealthy: (u32, u32),
}

struct EngineTest;

impl StateMachineTest for EngineTest {
    type SystemUnderTest = Harness;
    type Reference = Model;

    fn init_test(start: &usize) -> Harness {
        let configs = configs();
        let now = start_time();
        Harness {
            engine: Engine::new(configs[*start].clone(), now),
            configs,
            config: *start,
            started: now,
            now,
            folded: DurableState::default(),
            last_heartbeat: vec![None; HOSTS],
            problems: vec![false; HOSTS],
            requests: Vec::new(),
            grants: Vec::new(),
            dry: HashMap::new(),
            last_token: FencingToken(0),
            pauses: BTreeMap::new(),
            overrides: BTreeMap::new(),
            quarantined: BTreeSet::new(),
            last_end: HashMap::new(),
            next_request: 0,
            gates: Vec::new(),
            approvals: BTreeMap::new(),
        }
    }

    fn apply(mut h: Harness, _: &usize, step: Step) -> Harness {
        match step {
            Step::Heartbeat {
                host,
                problem,
                needs_human,
            } => beat(&mut h, host, problem, needs_human),
            Step::FleetHeartbeat { problems } => {
                for host in 0..HOSTS {
                    beat(&mut h, host, problems & (1 << host) != 0, false);
                }
            }
            Step::Request {
                host,
                action,
                job,
                dry_run,
            } => {
                h.next_request += 1;
                let req = PermitRequest {
                    dry_run,
                    request_id: RequestId::new(format!("req-{}", h.next_request)).unwrap(),
                    host: host_id(host),
                    action,
                    job: format!("job-{job}"),
                    reason: "stuck".into(),
                };
                request(&mut h, req, None);
            }
            Step::Retry { pick } => {
                if !h.requests.is_empty() {
                    let (req, granted) = h.requests[pick % h.requests.len()].clone();
                    request(&mut h, req, Some(granted));
                }
            }
            Step::Renew { pick, stale } => {
                if let Some((req, id, token)) = pick_granted(&h, pick) {
                    let r = PermitRef {
                        id,
                        token: if stale {
                            FencingToken(token.0 + 1_000)
                        } else {
                            token
                        },
                    };
                    let before = h.engine.durable().clone();
                    let res = h.engine.renew(&req.host, &r, h.now);
                    let events = h.absorb();
                    if stale {
                        // I5: a stale token changes nothing (time passing may
                        // have expired other things: compare only renewals).
                        assert!(res.is_err(), "I5: renew with a stale token succeeded");
                        assert!(
                            !events
                                .iter()
                                .any(|e| matches!(e, Event::PermitRenewed { .. })),
                            "I5: stale renew changed a permit"
                        );
                    }
                    if let Ok(p) = res {
                        assert!(before.permits.contains_key(&p.id));
                        assert_eq!(p.expires_at, h.now + p.ttl);
                    }
                }
            }
            Step::Report {
                pick,
                outcome,
                stale,
            } => {
                if let Some((req, id, token)) = pick_granted(&h, pick) {
                    let r = PermitRef {
                        id: id.clone(),
                        token: if stale {
                            FencingToken(token.0 + 1_000)
                        } else {
                            token
                        },
                    };
                    // Let time pass first, so that what the outcome does is
                    // all that changes below.
                    let _ = h.engine.status(h.now);
                    h.absorb();
                    let permit = h.engine.permits().find(|p| p.id == id).cloned();
                    let was_active = permit.is_some();
                    let half_open: Vec<BreakerScope> = h
                        .engine
                        .durable()
                        .breakers
                        .values()
                        .filter(|t| t.half_open.is_some())
                        .filter(|t| permit.as_ref().is_some_and(|p| t.scope.covers(&p.labels)))
                        .map(|t| t.scope.clone())
                        .collect();
                    let res = h
                        .engine
                        .report_outcome(&req.host, &r, outcome, "done", h.now);
                    let events = h.absorb();
                    // Outcomes fit the permit's mode: DRY_RUN only for
                    // dry-run permits, SUCCEEDED and FAILED only for others.
                    if let Some(p) = &permit
                        && !stale
                    {
                        let fits = match outcome {
                            Outcome::Aborted => true,
                            Outcome::DryRun => p.dry_run,
                            Outcome::Succeeded | Outcome::Failed => !p.dry_run,
                        };
                        assert_eq!(
                            fits,
                            !matches!(res, Err(PolicyError::OutcomeNotForMode { .. })),
                            "{outcome:?} for a permit with dry_run {}: {res:?}",
                            p.dry_run
                        );
                        // A probe that failed opens its half-open breakers.
                        if fits && outcome == Outcome::Failed {
                            for scope in &half_open {
                                let trip = h.engine.durable().breakers.get(scope);
                                assert!(
                                    trip.is_some_and(|t| t.is_open()),
                                    "a failed probe left breaker {scope} {trip:?}"
                                );
                            }
                        }
                    }
                    let ended_it = events.iter().any(
                        |e| matches!(e, Event::PermitEnded { id: eid, state, .. } if *eid == id && *state == outcome.final_state()),
                    );
                    if stale {
                        assert!(
                            matches!(
                                res,
                                Err(PolicyError::StaleToken { .. } | PolicyError::UnknownPermit(_))
                            ),
                            "I5: outcome with a stale token: {res:?}"
                        );
                        assert!(!ended_it, "I5: a stale outcome ended the permit");
                    } else if was_active && res.is_ok() {
                        assert!(ended_it || !h.engine.permits().any(|p| p.id == id));
                    }
                }
            }
            Step::Pause {
                rack,
                action,
                for_secs,
            } => {
                let scope = Scope {
                    selector: rack
                        .map(|r| Labels::from([("rack".to_owned(), format!("r{r}"))]))
                        .unwrap_or_default(),
                    action,
                };
                let until = for_secs.map(|s| h.now + Duration::from_secs(s));
                let p = h
                    .engine
                    .pause(scope.clone(), "op:test", "testing", until, h.now);
                h.pauses.insert(p.id, (scope, until));
                h.absorb();
            }
            Step::Resume { pick } => {
                let ids: Vec<u64> = h.pauses.keys().copied().collect();
                if !ids.is_empty() {
                    let id = ids[pick % ids.len()];
                    // It may have expired already (then the engine says so).
                    let _ = h
                        .engine
                        .resume(ResumeTarget::Id(id), "op:test", "done", h.now);
                    h.absorb();
                }
            }
            Step::Quarantine { host } => {
                let _ = h
                    .engine
                    .quarantine(&host_id(host), "op:test", "suspect", h.now);
                h.absorb();
            }
            Step::Unquarantine { host } => {
                let _ = h
                    .engine
                    .unquarantine(&host_id(host), "op:test", "fixed", h.now);
                h.absorb();
            }
            Step::Revoke { pick } => {
                if let Some((_, id, _)) = pick_granted(&h, pick) {
                    let _ = h.engine.revoke(&id, "op:test", "stop", h.now);
                    h.absorb();
                }
            }
            Step::ResetBreaker => {
                let _ = h.engine.reset_breaker(None, "op:test", "reset", h.now);
                h.absorb();
            }
            Step::SetConfig { variant } => {
                h.config = variant;
                h.engine.set_config(h.configs[variant].clone(), h.now);
                let kept = h.configs[variant].gates.clone();
                h.gates.retain(|(g, _, _)| kept.contains(g));
                h.absorb();
            }
            Step::Tick => {
                h.engine.tick(h.now);
                h.absorb();
                let cfg = h.cfg().clone();
                h.folded.compact(&cfg, h.now);
            }
            Step::Advance { secs } => {
                h.now += Duration::from_secs(secs);
            }
            Step::Override {
                action,
                rate,
                value,
                secs,
                reason,
            } => {
                let limit = if rate {
                    medic_policy::OverrideLimit::RateCount
                } else {
                    medic_policy::OverrideLimit::MaxInFlight
                };
                let res = h.engine.set_override(
                    action,
                    limit,
                    value,
                    Duration::from_secs(secs),
                    "op:test",
                    if reason { "incident" } else { " " },
                    h.now,
                );
                h.absorb();
                let cfg = h.cfg().clone();
                let should = reason
                    && cfg.knows(action)
                    && value <= cfg.limits(action).ceiling(limit)
                    && !(rate && value == 0);
                assert_eq!(
                    res.is_ok(),
                    should,
                    "override {action} {limit}={value}: {res:?}"
                );
                if let Ok(o) = res {
                    h.overrides
                        .retain(|_, x| !(x.action == o.action && x.limit == o.limit));
                    h.overrides.insert(o.id, o);
                }
            }
            Step::Decide {
                pick,
                pending,
                approve,
                reason,
                retry,
            } => {
                let ids: Vec<u64> = h
                    .approvals
                    .iter()
                    .filter(|(_, a)| !pending || a.state == medic_policy::ApprovalState::Pending)
                    .map(|(id, _)| *id)
                    .collect();
                if !ids.is_empty() {
                    let id = ids[pick % ids.len()];
                    let why = if reason { "looked at it" } else { "" };
                    let res = h.engine.decide_approval(id, approve, "op:test", why, h.now);
                    h.absorb();
                    let m = &h.approvals[&id];
                    match res {
                        Ok(a) => {
                            assert!(reason, "a decision without a reason was taken");
                            let want = if approve {
                                medic_policy::ApprovalState::Approved
                            } else {
                                medic_policy::ApprovalState::Rejected
                            };
                            assert_eq!((a.state, m.state), (want, want));
                            let asked = h
                                .requests
                                .iter()
                                .find(|(r, _)| r.request_id == a.request_id)
                                .cloned();
                            if let (true, Some((req, granted))) = (retry, asked) {
                                request(&mut h, req, Some(granted));
                            }
                        }
                        Err(e) => assert!(
                            !reason
                                || m.state != medic_policy::ApprovalState::Pending
                                || matches!(e, PolicyError::NoSuchApproval(_)),
                            "deciding pending approval {id} failed: {e}"
                        ),
                    }
                }
            }
            Step::EndOverride { pick } => {
                let ids: Vec<u64> = h.overrides.keys().copied().collect();
                if !ids.is_empty() {
                    let id = ids[pick % ids.len()];
                    let res = h.engine.end_override(id, "op:test", "done", h.now);
                    h.absorb();
                    let expired = h.overrides[&id].until <= h.now;
                    assert_eq!(res.is_err(), expired, "end of override {id}: {res:?}");
                    h.overrides.remove(&id);
                }
            }
            Step::Restart => {
                // A coordinator restart: the new engine sees only what the
                // events made durable. Liveness is not durable.
                let cfg = h.cfg().clone();
                h.engine = Engine::restore(cfg, h.folded.clone(), h.now);
                h.started = h.now;
                h.last_heartbeat = vec![None; HOSTS];
                h.gates.clear();
            }
            Step::Gate { pick, states } => {
                let gates = h.cfg().gates.clone();
                if !gates.is_empty() {
                    let g = gates[pick % gates.len()].clone();
                    let reading = |state: u8| GateReading {
                        at: h.now,
                        result: match state {
                            0 => Ok(vec![]),
                            1 => Ok(vec![format!("ALERTS{{gate=\"{}\"}}", g.name)]),
                            _ => Err("unreachable".to_owned()),
                        },
                    };
                    let readings = match &g.label {
                        None => match states[0] {
                            3 => None,
                            s => Some(GateReadings::Fleet(reading(s))),
                        },
                        Some(_) => Some(GateReadings::ByValue(
                            (0..RACKS)
                                .filter(|&r| states[r] != 3)
                                .map(|r| (format!("r{r}"), reading(states[r])))
                                .collect(),
                        )),
                    };
                    // A fleet gate's "not evaluated" is a round that was
                    // never handed over: nothing changes.
                    if let Some(readings) = readings {
                        h.engine.set_gate_readings(&g, readings, h.now);
                        h.absorb();
                        let model = states.map(|s| (s != 3).then_some(s));
                        h.gates.retain(|(c, _, _)| c != &g);
                        h.gates.push((g, h.now, model));
                    }
                }
            }
        }
        h
    }

    fn check_invariants(h: &Harness, _: &usize) {
        // I4: at most one active permit per host.
        let mut seen = BTreeSet::new();
        for p in h.engine.permits() {
            assert!(
                seen.insert(p.host.clone()),
                "I4: {} holds two permits",
                p.host
            );
        }
        // I6 foundation: the folded events are exactly the engine's durable state.
        assert_eq!(
            &h.folded,
            h.engine.durable(),
            "events do not rebuild the durable state"
        );
        // The engine's incremental active counts agree with a recount.
        let (_, _, active) = h.engine.counts();
        for a in Action::BUILTIN
            .into_iter()
            .chain([Action::declare("drain_host").unwrap()])
        {
            let n = h.engine.permits().filter(|p| p.action == a).count() as u32;
            assert_eq!(active[a], n, "active count of {a} drifted");
        }
    }
}

/// One heartbeat of `host`, reporting a problem or not, and maybe that its
/// agent needs a human.
fn beat(h: &mut Harness, host: usize, problem: bool, needs_human: bool) {
    let problems = if problem {
        vec![Problem {
            job: "ingest".into(),
            detector: "heartbeat_file".into(),
            since: h.now,
            detail: "stale".into(),
        }]
    } else {
        vec![]
    };
    h.engine.heartbeat(
        Heartbeat {
            state_error: None,
            host: host_id(host),
            labels: host_labels(host),
            agent_version: "test".into(),
            problems,
            held_permit: None,
            needs_human: needs_human.then(|| "gave up".to_owned()),
        },
        h.now,
    );
    h.last_heartbeat[host] = Some(h.now);
    h.problems[host] = problem;
    h.absorb();
}

fn pick_granted(
    h: &Harness,
    pick: usize,
) -> Option<(PermitRequest, medic_policy::PermitId, FencingToken)> {
    let granted: Vec<_> = h
        .requests
        .iter()
        .filter_map(|(r, g)| g.clone().map(|(id, t)| (r.clone(), id, t)))
        .collect();
    if granted.is_empty() {
        None
    } else {
        Some(granted[pick % granted.len()].clone())
    }
}

/// Sends a request; `retry` carries the earlier result of the same
/// request_id when this is a retry.
fn request(
    h: &mut Harness,
    req: PermitRequest,
    retry: Option<Option<(medic_policy::PermitId, FencingToken)>>,
) {
    let before = Before {
        last_token: h.last_token,
        pauses: h.pauses.clone(),
        last_end: h.last_end.clone(),
        holders: h.holders(),
        unhealthy: h.unhealthy(),
    };
    let active_before = h.engine.permits().count();
    let active_of_action = h
        .engine
        .permits()
        .filter(|p| p.action == req.action)
        .count();
    let dry = req.dry_run || h.cfg().dry_run || h.cfg().limits(req.action).dry_run;
    let decision = h.engine.request_permit(req.clone(), h.now).unwrap();
    let events = h.absorb();
    // A dry run quarantines nothing, even with its attempt budget spent.
    assert!(
        !(dry
            && events.iter().any(|e| matches!(
                e,
                Event::HostQuarantined(q) if q.cause == medic_policy::QuarantineCause::AttemptBudget
            ))),
        "a dry-run request quarantined its host"
    );
    match (&decision, retry) {
        (Decision::Granted { permit, replayed }, Some(Some((id, token)))) => {
            // I7: the same permit, no new slot, no new budget.
            assert!(*replayed, "I7: retry of a granted request was not a replay");
            assert_eq!(
                (&permit.id, permit.token),
                (&id, token),
                "I7: retry got another permit"
            );
            assert!(
                !events
                    .iter()
                    .any(|e| matches!(e, Event::PermitGranted { .. })),
                "I7: retry granted again"
            );
            assert!(h.engine.permits().count() <= active_before);
        }
        (Decision::Granted { replayed: true, .. }, _) => {
            panic!("I7: a replay for a request that was never granted");
        }
        (Decision::Granted { permit, .. }, retry) => {
            // A denied request retried may be granted later: that is a new decision.
            assert!(matches!(retry, None | Some(None)));
            // A grant the configuration says needs a human used an
            // approval of this very request (which `absorb` checked was
            // approved, unexpired and unused).
            let used: Vec<u64> = events
                .iter()
                .filter_map(|e| match e {
                    Event::ApprovalChanged {
                        id,
                        state: medic_policy::ApprovalState::Used,
                        ..
                    } => Some(*id),
                    _ => None,
                })
                .collect();
            for id in &used {
                assert_eq!(
                    h.approvals[id].request_id, req.request_id,
                    "approval {id} used by another request"
                );
            }
            if let Some(rule) = h.cfg().limits(req.action).approval {
                let needed = rule.always
                    || rule
                        .above_in_flight
                        .is_some_and(|n| active_of_action + 1 > n as usize);
                assert!(
                    !needed || used.len() == 1,
                    "granted {} to {} without a human's approval",
                    req.action,
                    req.host
                );
            }
            h.check_grant(&req, permit.token, permit.dry_run, &before);
            h.last_token = permit.token;
            h.grants.push((h.now, req.action, permit.dry_run));
            h.dry.insert(permit.id.clone(), permit.dry_run);
            let entry = (req.clone(), Some((permit.id.clone(), permit.token)));
            match h
                .requests
                .iter_mut()
                .find(|(r, _)| r.request_id == req.request_id)
            {
                Some(slot) => *slot = entry,
                None => h.requests.push(entry),
            }
        }
        (Decision::Waiting(w), retry) => {
            assert!(
                !matches!(retry, Some(Some(_))),
                "I7: retry of a granted request waits"
            );
            assert!(
                !events
                    .iter()
                    .any(|e| matches!(e, Event::PermitGranted { .. })),
                "a waiting request emitted a grant"
            );
            let m = &h.approvals[&w.approval];
            assert_eq!(m.request_id, req.request_id, "waits on another's approval");
            assert_eq!(m.state, medic_policy::ApprovalState::Pending);
            if retry.is_none() {
                h.requests.push((req, None));
            }
        }
        (Decision::Denied(_), retry) => {
            assert!(
                !matches!(retry, Some(Some(_))),
                "I7: retry of a granted request was denied"
            );
            assert!(
                !events
                    .iter()
                    .any(|e| matches!(e, Event::PermitGranted { .. })),
                "a denial emitted a grant"
            );
            if retry.is_none() {
                h.requests.push((req, None));
            }
        }
    }
}

prop_state_machine! {
    #![proptest_config(Config {
        // 64 sequences × up to 250 steps: well over 10,000 steps per run.
        cases: 64,
        max_shrink_iters: 20_000,
        failure_persistence: None,
        .. Config::default()
    })]

    #[test]
    fn engine_keeps_invariants_under_random_operations(sequential 150..250 => EngineTest);
}
