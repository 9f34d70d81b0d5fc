//! The decision engine under arbitrary sequences of operations.
//!
//! An input is a policy choice (one of a few fixed configs, or one written
//! by [`toml_gen`] and pruned until valid) and then
//! operations: heartbeats (labels that change, problems dated in the past
//! or the future, held permits real or made up), permit requests (retries
//! and conflicting reuse of request ids included), renewals and outcomes
//! with right and wrong tokens, pauses (ending at any time up to year 9999),
//! resumes, quarantines, releases, revocations, breaker resets, views, ticks,
//! time moving forward by anything up to the year 9999 or back, wall-clock
//! steps reported through `clock_checked`, restarts from the durable state,
//! config swaps, and alert gate readings (quiet, firing, failed, missing
//! for some racks, taken long ago).
//!
//! Checked after every operation, besides "never panics":
//! - the durable state equals what the events taken so far rebuild
//!   ([`DurableState::apply`], with the tick's compaction);
//! - the engine's active counts equal its permits, fleet-wide and per
//!   group value; its live and unhealthy counts equal its host views;
//! - a host holds at most one permit;
//! - a request is granted exactly when `explain` found nothing in the way,
//!   and denied for the first reason `explain` gave;
//! - a fresh grant has the next fencing token, and was made after warm-up,
//!   to a host not quarantined, not paused, under no open breaker, within
//!   the concurrency cap, with the configured TTL, and with no alert gate
//!   covering it closed (firing, or unusable without `on_error = "open"`);
//! - a renewal extends to now + TTL.
//!
//! The wall clock stays between the Unix epoch and the end of year 9999
//! ([`latest_time`]): the coordinator's clock cannot read outside it.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::sync::OnceLock;
use std::time::Duration;

use medic_policy::config::{GateConfig, OnError};
use medic_policy::{
    Action, BreakerScope, ClockMark, ClockStep, Decision, DurableState, Engine, FencingToken,
    GateReading, GateReadings, Heartbeat, HostId, Labels, Outcome, PermitId, PermitRef,
    PermitRequest, PolicyConfig, PolicyError, Problem, RequestId, ResumeTarget, Scope, Time,
    latest_time,
};

use crate::choices::Gen;
use crate::driver::{Features, Target};
use crate::toml_gen;

/// The engine target.
pub const ENGINE: Target = Target {
    name: "engine",
    run,
    describe,
    seeds,
    dictionary: &[],
    max_len: 2048,
};

/// The start of every run: 2023-11-14T22:13:20Z.
pub fn t0() -> Time {
    Time::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

const HOSTS: [&str; 6] = ["web-1", "web-2", "web-3", "db-1", "db-2", "edge-1"];
const JOBS: [&str; 3] = ["ingest", "db", "cache"];
const LABELS: [&[(&str, &str)]; 6] = [
    &[("rack", "r1"), ("zone", "z1")],
    &[("rack", "r1"), ("zone", "z2")],
    &[("rack", "r2"), ("zone", "z1")],
    &[("rack", "r2")],
    &[],
    &[("rack", "r3"), ("zone", "z2"), ("region", "eu")],
];

/// The fixed policies: the embedded defaults, tight caps with groups and a
/// rack breaker, a dry-run with windows in a zone with half-hour DST, and
/// one that lets nearly everything through.
const POLICIES: [&str; 4] = [
    "",
    r#"
        [fleet]
        heartbeat_interval = "10s"
        host_ttl = "30s"
        warmup = "30s"
        min_fleet_size = 2
        [breaker]
        unhealthy_percent = 60
        failure_percent = 50
        window = "30m"
        min_samples = 3
        auto_close_after = "5m"
        [breaker.domains.rack]
        unhealthy_percent = 80
        min_hosts = 2
        [limits.restart_job]
        max_in_flight = 3
        max_in_flight_percent = 40
        permit_ttl = "2m"
        cooldown = "1m"
        rate = { count = 6, per = "10m", burst = 2 }
        host_budget = { max_attempts = 3, per = "1h" }
        [limits.restart_job.groups.rack]
        max_in_flight = 1
        [limits.restart_job.groups.zone]
        max_in_flight_percent = 50
        [limits.reboot_host]
        max_in_flight = 1
        permit_ttl = "5m"
        cooldown = "10m"
        rate = { count = 3, per = "30m", burst = 1 }
        host_budget = { max_attempts = 2, per = "2h" }
        [limits.reboot_host.approval]
        always = true
        expire_after = "10m"
        use_within = "2m"
        [limits.restart_job.approval]
        above_in_flight = 1
        [[gates]]
        name = "db"
        prometheus = "http://prometheus:9090"
        query = 'ALERTS{alertstate="firing",alertname="DatabaseDown"}'
        [[gates]]
        name = "rack"
        prometheus = "http://prometheus:9090"
        query = 'ALERTS{alertstate="firing",rack="$value"}'
        label = "rack"
        actions = ["reboot_host"]
    "#,
    r#"
        mode = "dry-run"
        [fleet]
        heartbeat_interval = "1s"
        host_ttl = "3s"
        warmup = "1s"
        min_fleet_size = 1
        [breaker]
        unhealthy_percent = 90
        auto_close_after = "never"
        min_samples = 1
        failure_percent = 1
        [limits.restart_job]
        max_in_flight = 1
        permit_ttl = "3s"
        cooldown = "0s"
        rate = { count = 1, per = "1s", burst = 0 }
        host_budget = { max_attempts = 1, per = "1h" }
        timezone = "Australia/Lord_Howe"
        windows = [{ days = ["mon", "tue", "sat"], start = "01:30", end = "02:30" }, { days = ["sun"], start = "23:00", end = "01:00" }]
        [limits.reboot_host]
        max_in_flight = 0
    "#,
    r#"
        [fleet]
        heartbeat_interval = "10s"
        host_ttl = "1h"
        warmup = "1m"
        min_fleet_size = 1
        [breaker]
        unhealthy_percent = 100
        failure_percent = 100
        [limits.restart_job]
        max_in_flight = 1000000
        permit_ttl = "3650d"
        cooldown = "0s"
        rate = { count = 1000000, per = "1s", burst = 1000000 }
        host_budget = { max_attempts = 1000000, per = "3650d" }
        [limits.reboot_host]
        max_in_flight = 1000000
        max_in_flight_percent = 100
        permit_ttl = "30s"
        rate = { count = 1000, per = "1d", burst = 1000 }
        host_budget = { max_attempts = 1000000, per = "3650d" }
        [idempotency]
        retention = "3650d"
        [[gates]]
        name = "advice"
        prometheus = "https://prometheus.example"
        query = "up{job='db'} == 0"
        on_error = "open"
        interval = "100ms"
        timeout = "10ms"
    "#,
];

/// The fixed policies, parsed.
pub fn policies() -> &'static [PolicyConfig] {
    static P: OnceLock<Vec<PolicyConfig>> = OnceLock::new();
    P.get_or_init(|| {
        POLICIES
            .iter()
            .map(|t| {
                PolicyConfig::from_toml(t)
                    .unwrap_or_else(|e| panic!("a fixed fuzz policy is invalid: {e}\n{t}"))
            })
            .collect()
    })
}

// === Inputs ===

/// A permit an operation names.
#[derive(Clone, Debug)]
enum PermitChoice {
    /// The `index`-th permit granted in this run (modulo), with its token
    /// moved by `skew` (0: the right token).
    Granted { index: usize, skew: i8 },
    /// Made up: the id of `token`, presented with `token`.
    MadeUp { token: u64 },
}

#[derive(Clone, Debug)]
enum Op {
    Heartbeat {
        host: usize,
        labels: usize,
        problems: Vec<(usize, bool, Duration)>,
        held: Option<PermitChoice>,
        needs_human: bool,
    },
    Request {
        request: usize,
        host: usize,
        action: Action,
        job: usize,
    },
    Renew {
        host: usize,
        permit: PermitChoice,
    },
    Outcome {
        host: usize,
        permit: PermitChoice,
        outcome: Outcome,
    },
    Pause {
        scope: usize,
        until: Option<(bool, Duration)>,
    },
    Resume {
        target: usize,
        id: u64,
        scope: usize,
    },
    Quarantine {
        host: usize,
    },
    Release {
        host: usize,
    },
    Revoke {
        permit: PermitChoice,
    },
    ResetBreaker {
        scope: usize,
    },
    Explain {
        host: usize,
        action: Action,
    },
    Views,
    /// An operator approves or rejects approval `id` (maybe one that is
    /// not pending, or without a reason: refused).
    Decide {
        id: u64,
        approve: bool,
        reason: bool,
    },
    Tick,
    Advance(Duration),
    Back(Duration),
    ClockChecked {
        step: Option<ClockStep>,
        follow: bool,
        since_boot: Duration,
        boot: usize,
    },
    Restart,
    SetConfig(usize),
    /// A round of the `gate`-th gate (modulo) taken `age` ago: per rack
    /// (r1, r2, r3; a fleet-wide gate reads the first) 0 quiet, 1 firing,
    /// 2 failed, 3 not evaluated.
    Gate {
        gate: usize,
        states: [u8; 3],
        age: Duration,
    },
}

/// Which policy, and its text when generated.
#[derive(Clone, Debug)]
enum PolicyChoice {
    Fixed(usize),
    Generated(String),
}

fn span(g: &mut Gen) -> Duration {
    let secs = |n: usize| Duration::from_secs(n as u64);
    match g.below(10) {
        0 => Duration::from_millis(g.below(1000) as u64),
        1 => secs(g.below(60)),
        2 => secs(60 * g.below(60)),
        3 => secs(3600 * g.below(48)),
        4 => secs(86_400 * g.below(400)),
        5 => secs(365 * 86_400 * g.below(10_000)),
        6 => Duration::from_nanos(g.u64()),
        7 => Duration::new(g.u64(), g.u32() % 1_000_000_000),
        _ => *g.pick(&[
            Duration::from_nanos(1),
            Duration::from_secs(1),
            Duration::from_secs(10),
            Duration::from_millis(29_999),
            Duration::from_secs(30),
            Duration::from_secs(31),
            Duration::from_secs(61),
            Duration::from_secs(121),
            Duration::from_secs(301),
            Duration::from_secs(3601),
            Duration::from_secs(86_401),
            Duration::MAX,
        ]),
    }
}

fn permit_choice(g: &mut Gen) -> PermitChoice {
    if g.chance(220) {
        let skew = if g.chance(200) { 0 } else { g.byte() as i8 };
        PermitChoice::Granted {
            index: g.below(64),
            skew,
        }
    } else {
        PermitChoice::MadeUp {
            token: *g.pick(&[0, 1, 2, 3, u64::MAX, 1 << 40]),
        }
    }
}

/// The built-ins and a custom action, which a config may or may not
/// declare (undeclared, every request for it is denied).
fn actions() -> [Action; 3] {
    [
        Action::RestartJob,
        Action::RebootHost,
        Action::declare("drain_host").unwrap_or(Action::RebootHost),
    ]
}

fn action(g: &mut Gen) -> Action {
    *g.pick(&actions())
}

fn op(g: &mut Gen) -> Op {
    let host = |g: &mut Gen| g.below(HOSTS.len() + 1);
    match g.byte() {
        0..=49 => {
            let host = host(g);
            Op::Heartbeat {
                host,
                labels: if g.chance(230) {
                    host % LABELS.len()
                } else {
                    g.below(LABELS.len())
                },
                problems: (0..g.below(3))
                    .map(|_| (g.below(JOBS.len()), g.chance(128), span(g)))
                    .collect(),
                held: g.chance(40).then(|| permit_choice(g)),
                needs_human: g.chance(8),
            }
        }
        50..=99 => Op::Request {
            request: g.below(12),
            host: host(g),
            action: action(g),
            job: g.below(JOBS.len()),
        },
        100..=114 => Op::Renew {
            host: host(g),
            permit: permit_choice(g),
        },
        115..=134 => Op::Outcome {
            host: host(g),
            permit: permit_choice(g),
            outcome: *g.pick(&[
                Outcome::Succeeded,
                Outcome::Failed,
                Outcome::Aborted,
                Outcome::DryRun,
            ]),
        },
        135..=141 => Op::Pause {
            scope: g.below(5),
            until: g.chance(200).then(|| (g.chance(230), span(g))),
        },
        142..=147 => Op::Resume {
            target: g.below(3),
            id: g.below(6) as u64,
            scope: g.below(5),
        },
        148..=152 => Op::Quarantine { host: host(g) },
        153..=158 => Op::Release { host: host(g) },
        159..=162 => Op::Revoke {
            permit: permit_choice(g),
        },
        163..=166 => Op::ResetBreaker { scope: g.below(4) },
        167..=172 => Op::Explain {
            host: host(g),
            action: action(g),
        },
        173..=174 => Op::Views,
        175..=176 => Op::Decide {
            id: g.below(6) as u64,
            approve: g.chance(160),
            reason: g.chance(230),
        },
        177..=190 => Op::Tick,
        191..=225 => Op::Advance(span(g)),
        226..=232 => Op::Back(span(g)),
        233..=244 => Op::ClockChecked {
            step: g.chance(200).then(|| ClockStep {
                forward: g.chance(128),
                by: span(g).min(Duration::from_nanos(u64::MAX)),
            }),
            follow: g.chance(200),
            since_boot: Duration::from_millis(g.u64() >> 24),
            boot: g.below(2),
        },
        245..=247 => Op::Restart,
        248..=252 => Op::Gate {
            gate: g.below(4),
            states: [0; 3].map(|_| g.below(4) as u8),
            age: if g.chance(200) {
                Duration::ZERO
            } else {
                span(g)
            },
        },
        _ => Op::SetConfig(g.below(POLICIES.len() + 1)),
    }
}

fn decode(data: &[u8]) -> (PolicyChoice, Vec<Op>) {
    let mut g = Gen::new(data);
    let first = g.byte();
    let policy = if first < 200 {
        PolicyChoice::Fixed(usize::from(first) % POLICIES.len())
    } else {
        PolicyChoice::Generated(toml_gen::document(&mut g, toml_gen::POLICY))
    };
    let mut ops = Vec::new();
    while !g.is_empty() && ops.len() < 400 {
        ops.push(op(&mut g));
    }
    (policy, ops)
}

/// A policy from generated text, with the keys that fail validation
/// removed; `None` if that does not make it valid.
fn generated_policy(text: &str) -> Option<PolicyConfig> {
    toml_gen::valid_part(text, PolicyConfig::from_toml).map(|(_, p)| p)
}

fn policy_of(choice: &PolicyChoice) -> PolicyConfig {
    match choice {
        PolicyChoice::Fixed(i) => policies()[*i].clone(),
        PolicyChoice::Generated(text) => {
            generated_policy(text).unwrap_or_else(|| policies()[0].clone())
        }
    }
}

fn seeds() -> Vec<Vec<u8>> {
    // Heartbeats from every host, past warm-up, then requests: grants.
    let mut busy = vec![1u8];
    for h in 0..6u8 {
        busy.extend([0, h, 0, 0, 255, 255]);
    }
    busy.extend([191, 1, 40]);
    for h in 0..6u8 {
        busy.extend([0, h, 0, 0, 255, 255]);
    }
    for r in 0..6u8 {
        busy.extend([50 + r, r, r, 0, 0]);
    }
    vec![busy, vec![0], vec![2; 64], vec![3; 64], vec![201; 256]]
}

fn describe(data: &[u8]) -> String {
    let (choice, ops) = decode(data);
    let mut out = String::new();
    match &choice {
        PolicyChoice::Fixed(i) => {
            let _ = writeln!(out, "policy: fixed #{i}:{}", POLICIES[*i]);
        }
        PolicyChoice::Generated(text) => {
            let valid = generated_policy(text).is_some();
            let _ = writeln!(
                out,
                "policy: generated ({}):\n{text}",
                if valid {
                    "valid after pruning"
                } else {
                    "invalid, fixed #0 used"
                }
            );
            if let Some(p) = generated_policy(text) {
                let _ = writeln!(out, "as validated: {p:?}");
            }
        }
    }
    let _ = writeln!(out, "start: {}", medic_policy::rfc3339(t0()));
    for (i, op) in ops.iter().enumerate() {
        let _ = writeln!(out, "{i:3}: {op:?}");
    }
    out
}

// === Running ===

struct Harness {
    engine: Engine,
    config: PolicyConfig,
    /// The durable state rebuilt from the events taken.
    replayed: DurableState,
    /// The wall clock handed to the engine.
    now: Time,
    /// The engine's own clock as it must be (the latest `now` seen, moved
    /// by steps, reset by a restart).
    clock: Time,
    /// Every permit granted, for operations to name.
    granted: Vec<(PermitRef, HostId)>,
    /// The previous operation's kind (features of pairs).
    last: String,
    /// The gate readings handed to the engine: each gate's settings, when
    /// the round was taken, and per rack what it read (`None`: not
    /// evaluated). Dropped for a gate whose settings change, and by a
    /// restart (readings are not durable).
    gates: Vec<(GateConfig, Time, [Option<u8>; 3])>,
}

fn host_id(i: usize) -> HostId {
    let name = HOSTS.get(i).copied().unwrap_or("unknown-host");
    HostId::new(name).unwrap_or_else(|e| unreachable!("valid literal: {e}"))
}

fn labels(i: usize) -> Labels {
    LABELS[i % LABELS.len()]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn scope(i: usize) -> Scope {
    match i {
        0 => Scope::fleet(),
        1 => Scope {
            selector: labels(0).into_iter().take(1).collect(),
            action: None,
        },
        2 => Scope {
            selector: Labels::new(),
            action: Some(Action::RebootHost),
        },
        3 => Scope {
            selector: labels(2),
            action: Some(Action::RestartJob),
        },
        _ => Scope {
            selector: [("region".to_owned(), "eu".to_owned())].into(),
            action: None,
        },
    }
}

fn breaker_scope(i: usize) -> Option<BreakerScope> {
    match i {
        0 => None,
        1 => Some(BreakerScope::Fleet),
        2 => Some(BreakerScope::Domain {
            label: "rack".to_owned(),
            value: "r1".to_owned(),
        }),
        _ => Some(BreakerScope::Domain {
            label: "zone".to_owned(),
            value: "nowhere".to_owned(),
        }),
    }
}

fn later(t: Time, d: Duration) -> Time {
    t.checked_add(d)
        .unwrap_or_else(latest_time)
        .min(latest_time())
}

fn earlier(t: Time, d: Duration) -> Time {
    t.checked_sub(d)
        .unwrap_or(Time::UNIX_EPOCH)
        .max(Time::UNIX_EPOCH)
}

impl Harness {
    fn new(config: PolicyConfig) -> Self {
        let now = t0();
        Self {
            engine: Engine::new(config.clone(), now),
            config,
            replayed: DurableState::default(),
            now,
            clock: now,
            granted: Vec::new(),
            last: String::new(),
            gates: Vec::new(),
        }
    }

    /// The first gate covering `action` for a host with `labels` that is
    /// closed at `now`: a fresh reading listing series, or no usable one
    /// (none, failed, older than `stale_after`) without `on_error = "open"`.
    fn closed_gate(&self, action: Action, labels: &Labels, now: Time) -> Option<String> {
        self.config
            .gates
            .iter()
            .filter(|g| g.covers(action.as_str()))
            .find_map(|g| {
                let rack = match &g.label {
                    None => 0,
                    Some(l) => match labels.get(l).map(String::as_str) {
                        None => return None,
                        Some("r1") => 0,
                        Some("r2") => 1,
                        Some("r3") => 2,
                        Some(_) => 3,
                    },
                };
                let reading =
                    self.gates
                        .iter()
                        .find(|(c, _, _)| c == g)
                        .and_then(|(_, at, states)| {
                            let state = (*states.get(rack)?)?;
                            let age = now.duration_since(*at).unwrap_or_default();
                            Some(if age > g.stale_after { 2 } else { state })
                        });
                let closed = match reading {
                    Some(1) => true,
                    Some(0) => false,
                    _ => g.on_error == OnError::Closed,
                };
                closed.then(|| g.name.clone())
            })
    }

    /// The engine's `observe`: what `now` it decides at.
    fn observe(&mut self) -> Time {
        self.clock = self.clock.max(self.now);
        self.clock
    }

    fn permit_ref(&self, choice: &PermitChoice) -> PermitRef {
        match choice {
            PermitChoice::Granted { index, skew } if !self.granted.is_empty() => {
                let (r, _) = &self.granted[index % self.granted.len()];
                PermitRef {
                    id: r.id.clone(),
                    token: FencingToken(r.token.0.wrapping_add_signed(i64::from(*skew))),
                }
            }
            PermitChoice::Granted { .. } => PermitRef {
                id: PermitId::for_token(FencingToken(1)),
                token: FencingToken(1),
            },
            PermitChoice::MadeUp { token } => PermitRef {
                id: PermitId::for_token(FencingToken(*token)),
                token: FencingToken(*token),
            },
        }
    }

    /// The holder of a named permit when the choice is a granted one and
    /// `host` is out of the pool: agents act on their own permits mostly.
    fn holder(&self, host: usize, choice: &PermitChoice) -> HostId {
        match choice {
            PermitChoice::Granted { index, .. }
                if host >= HOSTS.len() && !self.granted.is_empty() =>
            {
                self.granted[index % self.granted.len()].1.clone()
            }
            _ => host_id(host),
        }
    }

    fn apply(&mut self, op: &Op, features: &mut Features) {
        let tag = format!("{op:?}");
        let tag = tag.split([' ', '(', '{']).next().unwrap_or("?").to_owned();
        match op {
            Op::Heartbeat {
                host,
                labels: l,
                problems,
                held,
                needs_human,
            } => {
                let now = self.observe();
                let hb = Heartbeat {
                    state_error: None,
                    host: host_id(*host),
                    labels: labels(*l),
                    agent_version: "0.1.0".to_owned(),
                    problems: problems
                        .iter()
                        .map(|(job, past, d)| Problem {
                            job: JOBS[*job].to_owned(),
                            detector: "heartbeat_file".to_owned(),
                            since: if *past {
                                earlier(self.now, *d)
                            } else {
                                later(self.now, *d)
                            },
                            detail: "stale".to_owned(),
                        })
                        .collect(),
                    held_permit: held.as_ref().map(|c| self.permit_ref(c)),
                    needs_human: needs_human.then(|| "gave up".to_owned()),
                };
                let reply = self.engine.heartbeat(hb, self.now);
                assert_eq!(
                    reply.heartbeat_interval,
                    self.config.fleet.heartbeat_interval
                );
                assert_eq!(reply.dry_run, self.config.dry_run);
                let _ = now;
                features.add_parts(&[
                    &tag,
                    &format!("{:?}", reply.held_permit_state),
                    &reply.quarantine.is_some().to_string(),
                ]);
            }
            Op::Request {
                request,
                host,
                action,
                job,
            } => self.request(*request, *host, *action, *job, features),
            Op::Renew { host, permit } => {
                let r = self.permit_ref(permit);
                let h = self.holder(*host, permit);
                let now = self.observe();
                match self.engine.renew(&h, &r, self.now) {
                    Ok(p) => {
                        features.add_parts(&[&tag, "ok"]);
                        assert_eq!(
                            p.expires_at,
                            later(now, p.ttl),
                            "a renewal must run to now + ttl"
                        );
                        assert!(self.engine.durable().permits.contains_key(&p.id));
                    }
                    Err(e) => features.add_parts(&[&tag, error_kind(&e)]),
                }
            }
            Op::Outcome {
                host,
                permit,
                outcome,
            } => {
                let r = self.permit_ref(permit);
                let h = self.holder(*host, permit);
                match self
                    .engine
                    .report_outcome(&h, &r, *outcome, "fuzz outcome", self.now)
                {
                    Ok(p) => {
                        features.add_parts(&[&tag, "ok", p.state.as_str()]);
                        assert_eq!(p.state, outcome.final_state());
                        assert!(
                            !self.engine.durable().permits.contains_key(&p.id),
                            "a permit with an outcome is still active"
                        );
                    }
                    Err(e) => features.add_parts(&[&tag, error_kind(&e)]),
                }
            }
            Op::Pause { scope: s, until } => {
                let until = until.map(|(ahead, d)| {
                    if ahead {
                        later(self.now, d)
                    } else {
                        earlier(self.now, d)
                    }
                });
                let p = self
                    .engine
                    .pause(scope(*s), "operator", "fuzz pause", until, self.now);
                features.add_parts(&[&tag, &p.until.is_some().to_string()]);
            }
            Op::Resume {
                target,
                id,
                scope: s,
            } => {
                let target = match target {
                    0 => ResumeTarget::Id(*id),
                    1 => ResumeTarget::Scope(scope(*s)),
                    _ => ResumeTarget::All,
                };
                let r = self
                    .engine
                    .resume(target, "operator", "fuzz resume", self.now);
                features.add_parts(&[&tag, &r.map(|v| v.len()).unwrap_or(0).to_string()]);
            }
            Op::Quarantine { host } => {
                let r = self
                    .engine
                    .quarantine(&host_id(*host), "operator", "fuzz", self.now);
                features.add_parts(&[&tag, &r.is_ok().to_string()]);
            }
            Op::Release { host } => {
                let r = self
                    .engine
                    .unquarantine(&host_id(*host), "operator", "fuzz", self.now);
                features.add_parts(&[&tag, &r.is_ok().to_string()]);
            }
            Op::Revoke { permit } => {
                let r = self.permit_ref(permit);
                match self.engine.revoke(&r.id, "operator", "fuzz", self.now) {
                    Ok(p) => {
                        features.add_parts(&[&tag, "ok"]);
                        assert!(!self.engine.durable().permits.contains_key(&p.id));
                    }
                    Err(e) => features.add_parts(&[&tag, error_kind(&e)]),
                }
            }
            Op::ResetBreaker { scope: s } => {
                let scope = breaker_scope(*s);
                let r = self
                    .engine
                    .reset_breaker(scope.as_ref(), "operator", "fuzz", self.now);
                features.add_parts(&[&tag, &r.is_ok().to_string()]);
            }
            Op::Explain { host, action } => {
                let e = self.engine.explain(&host_id(*host), *action, self.now);
                for d in &e.denials {
                    features.add_parts(&[&tag, d.reason.as_str()]);
                }
            }
            Op::Views => {
                let _ = self.engine.status(self.now);
                let _ = self.engine.hosts(self.now);
                features.add_str(&tag);
            }
            Op::Decide {
                id,
                approve,
                reason,
            } => {
                let before = self.engine.durable().approvals.get(id).map(|a| a.state);
                let why = if *reason { "checked" } else { "" };
                match self
                    .engine
                    .decide_approval(*id, *approve, "op:fuzz", why, self.now)
                {
                    Ok(a) => {
                        features.add_parts(&["decide", a.state.as_str()]);
                        assert!(*reason, "decided without a reason");
                        assert_eq!(a.id, *id);
                    }
                    Err(e) => {
                        features.add_parts(&["decide", error_kind(&e)]);
                        let pending = self
                            .engine
                            .durable()
                            .approvals
                            .get(id)
                            .is_some_and(|a| a.state == medic_policy::ApprovalState::Pending);
                        assert!(
                            !*reason || !pending,
                            "deciding pending approval {id} (was {before:?}) failed: {e}"
                        );
                    }
                }
            }
            Op::Tick => {
                self.engine.tick(self.now);
            }
            Op::Advance(d) => {
                self.now = later(self.now, *d);
                self.engine.tick(self.now);
            }
            Op::Back(d) => {
                self.now = earlier(self.now, *d);
                self.engine.tick(self.now);
            }
            Op::ClockChecked {
                step,
                follow,
                since_boot,
                boot,
            } => {
                if let Some(step) = step {
                    self.clock = step.shift(self.clock);
                    if *follow {
                        self.now = step.shift(self.now);
                    }
                }
                let mark = ClockMark {
                    wall: self.now,
                    since_boot: *since_boot,
                    boot: format!("boot-{boot}"),
                };
                self.engine
                    .clock_checked(*step, "fuzz".to_owned(), mark, self.now);
                features.add_parts(&[&tag, &step.map(|s| s.forward).is_some().to_string()]);
            }
            Op::Restart => {
                self.engine =
                    Engine::restore(self.config.clone(), self.engine.durable().clone(), self.now);
                self.clock = self.now;
                self.gates.clear();
            }
            Op::Gate { gate, states, age } => {
                let now = self.observe();
                if !self.config.gates.is_empty() {
                    let g = self.config.gates[gate % self.config.gates.len()].clone();
                    let at = earlier(now, *age);
                    let reading = |state: u8| GateReading {
                        at,
                        result: match state {
                            0 => Ok(vec![]),
                            1 => Ok(vec![format!("ALERTS{{gate={:?}}}", g.name)]),
                            _ => Err("unreachable".to_owned()),
                        },
                    };
                    let readings = match &g.label {
                        None if states[0] == 3 => None,
                        None => Some(GateReadings::Fleet(reading(states[0]))),
                        Some(_) => Some(GateReadings::ByValue(
                            ["r1", "r2", "r3"]
                                .iter()
                                .zip(states)
                                .filter(|(_, s)| **s != 3)
                                .map(|(r, s)| ((*r).to_owned(), reading(*s)))
                                .collect(),
                        )),
                    };
                    if let Some(readings) = readings {
                        self.engine.set_gate_readings(&g, readings, self.now);
                        self.gates.retain(|(c, _, _)| c != &g);
                        self.gates
                            .push((g, at, states.map(|s| (s != 3).then_some(s))));
                        features.add_parts(&[&tag, &format!("{states:?}")]);
                    }
                }
            }
            Op::SetConfig(i) => {
                self.config = if *i < POLICIES.len() {
                    policies()[*i].clone()
                } else {
                    PolicyConfig::default()
                };
                self.engine.set_config(self.config.clone(), self.now);
                let kept = self.config.gates.clone();
                self.gates.retain(|(g, _, _)| kept.contains(g));
            }
        }
        let now = self.observe();
        let events = self.engine.take_events();
        for e in &events {
            features.add_parts(&["event", event_kind(e)]);
            self.replayed.apply(e);
            if let medic_policy::Event::PermitGranted { permit } = e {
                self.granted.push((
                    PermitRef {
                        id: permit.id.clone(),
                        token: permit.token,
                    },
                    permit.host.clone(),
                ));
            }
        }
        if matches!(op, Op::Tick | Op::Advance(_) | Op::Back(_)) {
            self.replayed.compact(&self.config, now);
        }
        self.check(op);
        let d = self.engine.durable();
        let (live, _, active) = self.engine.counts();
        features.add_parts(&[
            "state",
            &actions()
                .iter()
                .map(|&a| active[a].min(3).to_string())
                .collect::<String>(),
            &d.quarantines.len().min(3).to_string(),
            &d.pauses.len().min(2).to_string(),
            &d.breakers.len().min(2).to_string(),
            &live.min(7).to_string(),
        ]);
        features.add_parts(&["after", &self.last, &tag]);
        self.last = tag;
    }

    fn request(
        &mut self,
        request: usize,
        host: usize,
        action: Action,
        job: usize,
        features: &mut Features,
    ) {
        let request_id = RequestId::new(format!("req-{request}"))
            .unwrap_or_else(|e| unreachable!("valid literal: {e}"));
        let host = host_id(host);
        let known = self.engine.durable().requests.contains_key(&request_id);
        let explanation = (!known).then(|| self.engine.explain(&host, action, self.now));
        let last_token = self.engine.durable().last_token;
        let now = self.observe();
        let req = PermitRequest {
            dry_run: false,
            request_id,
            host: host.clone(),
            action,
            job: JOBS[job].to_owned(),
            reason: "fuzz".to_owned(),
        };
        match self.engine.request_permit(req, self.now) {
            Ok(Decision::Granted {
                permit,
                replayed: false,
            }) => {
                features.add_parts(&["request", "granted", action.as_str()]);
                if let Some(e) = &explanation {
                    assert!(
                        e.denials.is_empty(),
                        "granted although explain said {:?}",
                        e.denials
                    );
                }
                self.check_grant(&permit, last_token, now);
            }
            Ok(Decision::Granted { replayed: true, .. }) => {
                assert!(known, "a replay of a request never granted");
                features.add_parts(&["request", "replayed"]);
            }
            Ok(Decision::Waiting(w)) => {
                features.add_parts(&["request", "waiting", action.as_str()]);
                if let Some(e) = &explanation {
                    assert!(
                        e.denials.is_empty(),
                        "waits for an approval although explain said {:?}",
                        e.denials
                    );
                }
                let a = &self.engine.durable().approvals[&w.approval];
                assert_eq!(a.state, medic_policy::ApprovalState::Pending);
                assert!(w.retry_after > Duration::ZERO && !w.message.is_empty());
            }
            Ok(Decision::Denied(d)) => {
                features.add_parts(&["request", "denied", d.reason.as_str()]);
                assert!(!d.message.is_empty());
                if let Some(e) = &explanation {
                    let first = e.denials.first().map(|d| d.reason);
                    assert_eq!(
                        first,
                        Some(d.reason),
                        "denied for another reason than explain gave first ({:?})",
                        e.denials
                    );
                }
            }
            Err(e) => {
                features.add_parts(&["request", error_kind(&e)]);
                assert!(
                    matches!(e, PolicyError::RequestIdConflict { .. }),
                    "a request failed with {e}"
                );
            }
        }
    }

    fn check_grant(&self, p: &medic_policy::Permit, last_token: FencingToken, now: Time) {
        let d = self.engine.durable();
        let limits = self.config.limits(p.action);
        assert_eq!(
            p.token.0,
            last_token.0 + 1,
            "fencing tokens must be consecutive"
        );
        assert_eq!(p.id, PermitId::for_token(p.token));
        assert!(
            later(self.engine.started_at(), self.config.fleet.warmup) <= now,
            "granted during warm-up"
        );
        assert!(
            !d.quarantines.contains_key(&p.host),
            "granted to a quarantined host"
        );
        assert!(
            d.pauses
                .values()
                .all(|x| !x.scope.covers(p.action, &p.labels)),
            "granted under a pause"
        );
        assert!(
            d.breakers
                .values()
                .all(|t| !t.scope.covers(&p.labels) || !t.is_open()),
            "granted under an open breaker"
        );
        for t in d.breakers.values().filter(|t| t.scope.covers(&p.labels)) {
            let Some(h) = &t.half_open else { continue };
            let probes = self
                .engine
                .permits()
                .filter(|q| t.scope.covers(&q.labels))
                .count();
            let budget = self.config.breaker.probe_budget(h.successes) as usize;
            assert!(
                probes <= budget,
                "{probes} probes under half-open breaker {} (budget {budget})",
                t.scope
            );
        }
        let (live, _, active) = self.engine.counts();
        assert!(
            active[p.action] <= limits.effective_cap(live),
            "granted past the concurrency cap"
        );
        assert_eq!(p.ttl, limits.permit_ttl);
        assert_eq!(p.granted_at, now);
        assert_eq!(
            p.expires_at,
            later(now, p.ttl),
            "a grant must run to now + ttl"
        );
        assert_eq!(p.dry_run, self.config.dry_run || limits.dry_run);
        assert!(
            self.config.knows(p.action),
            "granted {}, which the config does not declare",
            p.action
        );
        if let Some(gate) = self.closed_gate(p.action, &p.labels, now) {
            panic!(
                "granted {} to {} while gate {gate} is closed",
                p.action, p.host
            );
        }
    }

    fn check(&mut self, op: &Op) {
        // The views let time pass too, at the same instant: anything due
        // now (a permit that expires the moment it is granted at the end of
        // year 9999, a pause set to end in the past) happens first.
        let views = self.engine.hosts(self.now);
        for e in self.engine.take_events() {
            self.replayed.apply(&e);
        }
        assert!(
            self.replayed == *self.engine.durable(),
            "after {op:?}, the durable state differs from the one its events rebuild:\n\
             engine:   {:?}\nreplayed: {:?}",
            self.engine.durable(),
            self.replayed
        );
        let (live, unhealthy, active) = self.engine.counts();
        let mut holders = BTreeSet::new();
        let mut by_action = medic_policy::PerAction::<u32>::default();
        for p in self.engine.permits() {
            by_action[p.action] += 1;
            assert!(
                holders.insert(p.host.clone()),
                "host {} holds two permits",
                p.host
            );
        }
        for a in actions() {
            assert_eq!(
                active[a], by_action[a],
                "active {a} count drifted from the permits"
            );
        }
        for label in self.config.group_labels() {
            for a in actions() {
                for (value, n, _) in self.engine.group_active(&label, a) {
                    let held = self
                        .engine
                        .permits()
                        .filter(|p| p.action == a && p.labels.get(&label) == Some(&value))
                        .count();
                    assert_eq!(
                        n as usize, held,
                        "active {a} count of {label}={value} drifted from the permits"
                    );
                }
            }
        }
        let live_views = views.iter().filter(|v| v.live).count();
        let unhealthy_views = views.iter().filter(|v| v.unhealthy).count();
        assert_eq!(
            live as usize, live_views,
            "live count drifted from the hosts"
        );
        assert_eq!(
            unhealthy as usize, unhealthy_views,
            "unhealthy count drifted from the hosts"
        );
    }
}

fn error_kind(e: &PolicyError) -> &'static str {
    match e {
        PolicyError::UnknownPermit(_) => "unknown",
        PolicyError::StaleToken { .. } => "stale",
        PolicyError::WrongHost { .. } => "wrong-host",
        PolicyError::PermitEnded { .. } => "ended",
        PolicyError::RequestIdConflict { .. } => "conflict",
        _ => "other",
    }
}

fn event_kind(e: &medic_policy::Event) -> &'static str {
    use medic_policy::Event as E;
    match e {
        E::PermitGranted { .. } => "granted",
        E::PermitRenewed { .. } => "renewed",
        E::PermitEnded { .. } => "ended",
        E::HostQuarantined(_) => "quarantined",
        E::HostReleased { .. } => "released",
        E::Paused(_) => "paused",
        E::Resumed { .. } => "resumed",
        E::BreakerOpened(_) => "breaker-opened",
        E::BreakerHalfOpened { .. } => "breaker-half-opened",
        E::BreakerClosed { .. } => "breaker-closed",
        E::ClockChecked { .. } => "clock",
        E::OverrideSet(_) => "override-set",
        E::OverrideEnded { .. } => "override-ended",
        E::ApprovalRequested(_) => "approval-requested",
        E::ApprovalChanged { .. } => "approval-changed",
        E::GateChanged { .. } => "gate-changed",
    }
}

fn run(data: &[u8], features: &mut Features) {
    let (choice, ops) = decode(data);
    let config = policy_of(&choice);
    features.add_parts(&["policy", &format!("{:?}", std::mem::discriminant(&choice))]);
    let mut h = Harness::new(config);
    for op in &ops {
        h.apply(op, features);
    }
}

/// A short fixed scenario on a validated policy: heartbeats, past warm-up,
/// requests for both actions, a renewal and an outcome, a pause, views,
/// ticks past the TTL and far ahead. Used by the config targets, so that a
/// value that validates but breaks the engine later is found there.
pub fn exercise(config: &PolicyConfig, features: &mut Features) {
    let mut h = Harness::new(config.clone());
    let mut ops: Vec<Op> = (0..4)
        .map(|i| Op::Heartbeat {
            host: i,
            labels: i,
            problems: if i == 0 {
                vec![(0, true, Duration::from_secs(600))]
            } else {
                vec![]
            },
            held: None,
            needs_human: false,
        })
        .collect();
    ops.push(Op::Advance(
        config.fleet.warmup.saturating_add(Duration::from_secs(1)),
    ));
    ops.extend((0..4).map(|i| Op::Heartbeat {
        host: i,
        labels: i,
        problems: vec![],
        held: None,
        needs_human: false,
    }));
    for (i, a) in actions().iter().enumerate() {
        ops.push(Op::Request {
            request: i,
            host: i,
            action: *a,
            job: 0,
        });
    }
    ops.extend([
        Op::Renew {
            host: HOSTS.len(),
            permit: PermitChoice::Granted { index: 0, skew: 0 },
        },
        Op::Outcome {
            host: HOSTS.len(),
            permit: PermitChoice::Granted { index: 0, skew: 0 },
            outcome: Outcome::Failed,
        },
        Op::Pause {
            scope: 0,
            until: Some((true, Duration::from_secs(3600))),
        },
        Op::Explain {
            host: 2,
            action: Action::RestartJob,
        },
        Op::Views,
        Op::Advance(config.limits(Action::RebootHost).permit_ttl),
        Op::Request {
            request: 5,
            host: 3,
            action: Action::RestartJob,
            job: 1,
        },
        Op::Advance(Duration::from_secs(400 * 86_400)),
        Op::Views,
    ]);
    for op in &ops {
        h.apply(op, features);
    }
}
