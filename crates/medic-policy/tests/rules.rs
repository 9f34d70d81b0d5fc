//! The coordinator's rules (ARCHITECTURE.md, "The coordinator's rules" 1–10 and the
//! invariants they uphold), one or more tests per rule, through the public
//! API only.
//!
//! Every test builds its policy with `PolicyConfig::from_toml`, so each also
//! documents the keys it relies on. Time is explicit: a fixed start, then
//! [`Fleet::advance`], which heartbeats every host that is not silent once per
//! `heartbeat_interval`, as real agents do. Two things to keep in mind when
//! reading them:
//!
//! - warm-up (default: `host_ttl` = 30s) denies everything after a start or a
//!   restore, so fixtures advance past it before asking;
//! - a host holding a permit counts as unhealthy, so with the default
//!   `breaker.unhealthy_percent = 30` a few grants in a small fleet open the
//!   fleet breaker. Tests that grant several permits set it to 100 (never).

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use medic_policy::{
    Action, BreakerCause, BreakerScope, ClockMark, ClockStep, Decision, Denial, DenyReason,
    DurableState, Engine, Event, Explanation, FencingToken, Heartbeat, HeartbeatReply, HostId,
    HostView, Labels, Outcome, Permit, PermitId, PermitRef, PermitRequest, PermitState,
    PolicyConfig, PolicyError, Problem, QuarantineCause, RequestId, ResumeTarget, Scope, Status,
    Time,
};

// === Fixture ===

/// The fixed start of most tests: 2023-11-14T22:13:20Z, a Tuesday.
fn t0() -> Time {
    Time::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn mins(n: u64) -> Duration {
    Duration::from_secs(60 * n)
}

/// An instant written as RFC 3339 (`2023-11-18T21:00:00Z`).
fn at(rfc3339: &str) -> Time {
    humantime::parse_rfc3339(rfc3339).unwrap_or_else(|e| panic!("bad time {rfc3339}: {e}"))
}

fn config(toml: &str) -> PolicyConfig {
    PolicyConfig::from_toml(toml).unwrap_or_else(|e| panic!("invalid test config:\n{e}"))
}

fn host(name: &str) -> HostId {
    HostId::new(name).unwrap()
}

/// `"rack=r1,zone=z1"` as labels; `""` for none.
fn labels(spec: &str) -> Labels {
    spec.split(',')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').expect("labels are k=v");
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

/// What an agent presents to act on `p`.
fn held(p: &Permit) -> PermitRef {
    PermitRef {
        id: p.id.clone(),
        token: p.token,
    }
}

fn reasons(e: &Explanation) -> Vec<DenyReason> {
    e.denials.iter().map(|d| d.reason).collect()
}

fn assert_mentions(d: &Denial, words: &[&str]) {
    for w in words {
        assert!(
            d.message.contains(w),
            "{} denial message should mention {w:?}: {:?}",
            d.reason,
            d.message
        );
    }
}

const JOB: &str = "ingest";

#[derive(Clone, Debug)]
struct Member {
    id: HostId,
    labels: Labels,
    problem: bool,
    silent: bool,
}

/// An engine, its clock, and the agents of a fleet that heartbeat as time
/// passes.
struct Fleet {
    engine: Engine,
    now: Time,
    members: Vec<Member>,
    next_request: u32,
}

impl Fleet {
    /// An engine started at `start`, no hosts yet (still warming up).
    fn new_at(toml: &str, start: Time) -> Self {
        Self {
            engine: Engine::new(config(toml), start),
            now: start,
            members: Vec::new(),
            next_request: 0,
        }
    }

    fn new(toml: &str) -> Self {
        Self::new_at(toml, t0())
    }

    /// `n` unlabelled hosts `h1`..`hn`, past warm-up.
    fn ready(toml: &str, n: usize) -> Self {
        let mut f = Self::new(toml);
        for i in 1..=n {
            f.join(&format!("h{i}"), "");
        }
        f.warm_up();
        f
    }

    /// Hosts with labels, (`("a1", "rack=r1,zone=z1")`), past warm-up.
    fn ready_with(toml: &str, hosts: &[(&str, &str)]) -> Self {
        let mut f = Self::new(toml);
        for (name, spec) in hosts {
            f.join(name, spec);
        }
        f.warm_up();
        f
    }

    /// A new host whose agent heartbeats from now on.
    fn join(&mut self, name: &str, spec: &str) -> HeartbeatReply {
        self.members.push(Member {
            id: host(name),
            labels: labels(spec),
            problem: false,
            silent: false,
        });
        self.heartbeat(name)
    }

    fn warm_up(&mut self) {
        let ends = self.engine.started_at() + self.engine.config().fleet.warmup;
        self.advance_to(ends);
    }

    /// Lets `d` pass; every host that is not silent heartbeats once per
    /// heartbeat interval (and at the end).
    fn advance(&mut self, d: Duration) {
        let step = self.engine.config().fleet.heartbeat_interval;
        let end = self.now + d;
        while self.now < end {
            self.now = (self.now + step).min(end);
            for i in 0..self.members.len() {
                if !self.members[i].silent {
                    self.beat(i, |_| {});
                }
            }
        }
    }

    fn advance_to(&mut self, t: Time) {
        let d = t.duration_since(self.now).expect("time only moves forward");
        self.advance(d);
    }

    fn index(&self, name: &str) -> usize {
        self.members
            .iter()
            .position(|m| m.id.as_str() == name)
            .unwrap_or_else(|| panic!("no host {name} in the fleet"))
    }

    fn beat(&mut self, i: usize, edit: impl FnOnce(&mut Heartbeat)) -> HeartbeatReply {
        let m = &self.members[i];
        let mut hb = Heartbeat {
            state_error: None,
            host: m.id.clone(),
            labels: m.labels.clone(),
            agent_version: "0.1.0".into(),
            problems: if m.problem {
                vec![Problem {
                    job: JOB.into(),
                    detector: "heartbeat_file".into(),
                    since: self.now,
                    detail: "heartbeat file 12m old".into(),
                }]
            } else {
                Vec::new()
            },
            held_permit: None,
            needs_human: None,
        };
        edit(&mut hb);
        self.engine.heartbeat(hb, self.now)
    }

    /// One heartbeat of `name` now.
    fn heartbeat(&mut self, name: &str) -> HeartbeatReply {
        self.send(name, |_| {})
    }

    /// One heartbeat of `name` now, edited (held permit, needs_human).
    fn send(&mut self, name: &str, edit: impl FnOnce(&mut Heartbeat)) -> HeartbeatReply {
        let i = self.index(name);
        self.beat(i, edit)
    }

    /// The host starts or stops reporting a problem (sent at once).
    fn set_problem(&mut self, name: &str, problem: bool) {
        let i = self.index(name);
        self.members[i].problem = problem;
        self.beat(i, |_| {});
    }

    /// The host stops heartbeating (rebooting, or gone).
    fn silence(&mut self, name: &str) {
        let i = self.index(name);
        self.members[i].silent = true;
    }

    /// The host heartbeats again, starting now.
    fn wake(&mut self, name: &str) {
        let i = self.index(name);
        self.members[i].silent = false;
        self.beat(i, |_| {});
    }

    fn request_with(
        &mut self,
        request_id: &str,
        name: &str,
        action: Action,
        job: &str,
    ) -> Result<Decision, PolicyError> {
        let req = PermitRequest {
            dry_run: false,
            request_id: RequestId::new(request_id).unwrap(),
            host: host(name),
            action,
            job: job.into(),
            reason: "heartbeat file 12m old".into(),
        };
        self.engine.request_permit(req, self.now)
    }

    /// A fresh request for a dry-run permit, as an agent in dry-run asks.
    fn request_dry(&mut self, name: &str, action: Action) -> Decision {
        self.next_request += 1;
        let req = PermitRequest {
            dry_run: true,
            request_id: RequestId::new(format!("req-{}", self.next_request)).unwrap(),
            host: host(name),
            action,
            job: JOB.into(),
            reason: "heartbeat file 12m old (dry run)".into(),
        };
        self.engine.request_permit(req, self.now).unwrap()
    }

    /// A fresh request (new request_id) for `JOB`.
    fn request(&mut self, name: &str, action: Action) -> Decision {
        self.next_request += 1;
        let rid = format!("req-{}", self.next_request);
        self.request_with(&rid, name, action, JOB)
            .unwrap_or_else(|e| panic!("request of {name} failed: {e}"))
    }

    fn grant(&mut self, name: &str, action: Action) -> Permit {
        match self.request(name, action) {
            Decision::Granted {
                permit,
                replayed: false,
            } => permit,
            other => panic!("expected a new {action} grant for {name}, got {other:?}"),
        }
    }

    fn deny(&mut self, name: &str, action: Action) -> Denial {
        match self.request(name, action) {
            Decision::Denied(d) => d,
            other => panic!("expected {action} for {name} to be denied, got {other:?}"),
        }
    }

    /// The holder reports `outcome` for `p`.
    fn finish(&mut self, p: &Permit, outcome: Outcome) -> Permit {
        self.engine
            .report_outcome(&p.host, &held(p), outcome, "done", self.now)
            .unwrap_or_else(|e| panic!("outcome for {} failed: {e}", p.id))
    }

    fn explain(&mut self, name: &str, action: Action) -> Explanation {
        self.engine.explain(&host(name), action, self.now)
    }

    fn status(&mut self) -> Status {
        self.engine.status(self.now)
    }

    fn view(&mut self, name: &str) -> HostView {
        let id = host(name);
        self.engine
            .hosts(self.now)
            .into_iter()
            .find(|v| v.host == id)
            .unwrap_or_else(|| panic!("engine does not know {name}"))
    }

    /// The wall clock jumps by `step` without time passing, and the
    /// coordinator, having noticed, tells the engine.
    fn step_clock(&mut self, step: ClockStep) {
        self.now = step.shift(self.now);
        let mark = ClockMark {
            wall: self.now,
            since_boot: secs(3600),
            boot: "test-boot".into(),
        };
        self.engine
            .clock_checked(Some(step), "seen live".into(), mark, self.now);
    }

    /// A coordinator restarted now from this one's durable state (as the
    /// store would hand it over), with the same agents, which heartbeat at
    /// once. It warms up again.
    fn restarted(&self) -> Fleet {
        let engine = Engine::restore(
            self.engine.config().clone(),
            self.engine.durable().clone(),
            self.now,
        );
        let mut f = Fleet {
            engine,
            now: self.now,
            members: self.members.clone(),
            next_request: self.next_request + 1000,
        };
        for i in 0..f.members.len() {
            if !f.members[i].silent {
                f.beat(i, |_| {});
            }
        }
        f
    }
}

/// How the restart cap of a status reads: (active, effective cap).
fn restart_slots(s: &Status) -> (u32, u32) {
    let a = s
        .actions
        .iter()
        .find(|a| a.action == Action::RestartJob)
        .unwrap();
    (a.active, a.effective_cap)
}

// === Rule 1: pauses ===

#[test]
fn grant_is_denied_while_fleet_paused() {
    let mut f = Fleet::ready(
        r#"
        [breaker]
        unhealthy_percent = 100
        "#,
        3,
    );
    let pause = f.engine.pause(
        Scope::fleet(),
        "alice",
        "database failover in progress",
        None,
        f.now,
    );
    assert_eq!(pause.since, f.now);

    for (name, action) in [("h1", Action::RestartJob), ("h2", Action::RebootHost)] {
        let d = f.deny(name, action);
        assert_eq!(d.reason, DenyReason::Paused);
        assert_eq!(d.retry_after, None, "an open-ended pause needs a human");
        assert_mentions(
            &d,
            &[
                "fleet",
                "alice",
                "database failover in progress",
                "until resumed",
            ],
        );
    }

    let ended = f
        .engine
        .resume(ResumeTarget::Id(pause.id), "alice", "failover done", f.now)
        .unwrap();
    assert_eq!(ended, vec![pause]);
    f.grant("h1", Action::RestartJob);
}

#[test]
fn pause_scoped_to_a_rack_leaves_other_racks_alone() {
    let mut f = Fleet::ready_with(
        r#"
        [breaker]
        unhealthy_percent = 100
        [limits.restart_job]
        max_in_flight = 10
        "#,
        &[("a1", "rack=r1"), ("a2", "rack=r1"), ("b1", "rack=r2")],
    );
    let scope = Scope {
        selector: labels("rack=r1"),
        action: None,
    };
    f.engine.pause(
        scope.clone(),
        "alice",
        "switch firmware upgrade",
        None,
        f.now,
    );

    let d = f.deny("a1", Action::RestartJob);
    assert_eq!(d.reason, DenyReason::Paused);
    assert_mentions(&d, &["rack=r1", "switch firmware upgrade"]);
    assert_eq!(f.deny("a2", Action::RebootHost).reason, DenyReason::Paused);
    f.grant("b1", Action::RestartJob);

    // Resuming by scope ends exactly that pause.
    f.engine
        .resume(ResumeTarget::Scope(scope), "alice", "done", f.now)
        .unwrap();
    f.grant("a1", Action::RestartJob);
}

#[test]
fn pause_scoped_to_an_action_leaves_other_actions_alone() {
    let mut f = Fleet::ready(
        r#"
        [breaker]
        unhealthy_percent = 100
        "#,
        3,
    );
    let scope = Scope {
        selector: Labels::new(),
        action: Some(Action::RebootHost),
    };
    f.engine
        .pause(scope, "alice", "kernel rollout", None, f.now);

    let d = f.deny("h1", Action::RebootHost);
    assert_eq!(d.reason, DenyReason::Paused);
    assert_mentions(&d, &["action=reboot_host", "kernel rollout"]);
    f.grant("h1", Action::RestartJob);
}

#[test]
fn pause_expires_by_itself() {
    let mut f = Fleet::ready(
        r#"
        [breaker]
        unhealthy_percent = 100
        "#,
        3,
    );
    let until = f.now + mins(10);
    let pause = f
        .engine
        .pause(Scope::fleet(), "alice", "maintenance", Some(until), f.now);

    let d = f.deny("h1", Action::RestartJob);
    assert_eq!(d.reason, DenyReason::Paused);
    assert_eq!(d.retry_after, Some(mins(10)));
    assert_mentions(&d, &["until 2023-11-14T22:23:50Z"]);

    f.advance(mins(4));
    assert_eq!(f.deny("h1", Action::RestartJob).retry_after, Some(mins(6)));

    f.engine.take_events();
    f.advance(mins(6));
    let resumed: Vec<Event> = f
        .engine
        .take_events()
        .into_iter()
        .filter(|e| matches!(e, Event::Resumed { .. }))
        .collect();
    assert_eq!(
        resumed,
        vec![Event::Resumed {
            pause,
            actor: "coordinator".into(),
            reason: "pause expired".into(),
            at: until,
        }]
    );
    assert!(f.status().pauses.is_empty());
    f.grant("h1", Action::RestartJob);
}

#[test]
fn overlapping_pauses_wait_for_the_last_and_an_open_ended_one_needs_a_human() {
    let mut f = Fleet::ready_with(
        r#"
        [breaker]
        unhealthy_percent = 100
        "#,
        &[("a1", "rack=r1"), ("b1", "rack=r2")],
    );
    let rack1 = Scope {
        selector: labels("rack=r1"),
        action: None,
    };
    f.engine.pause(
        Scope::fleet(),
        "alice",
        "short",
        Some(f.now + mins(5)),
        f.now,
    );
    f.engine.pause(
        rack1.clone(),
        "bob",
        "longer",
        Some(f.now + mins(20)),
        f.now,
    );

    let d = f.deny("a1", Action::RestartJob);
    assert_eq!(d.retry_after, Some(mins(20)), "both pauses must lapse");
    assert_mentions(&d, &["and 1 more pauses"]);
    assert_eq!(f.deny("b1", Action::RestartJob).retry_after, Some(mins(5)));

    f.engine.pause(rack1, "carol", "open-ended", None, f.now);
    assert_eq!(f.deny("a1", Action::RestartJob).retry_after, None);
}

#[test]
fn pauses_quarantines_and_open_breakers_survive_a_restart() {
    let mut f = Fleet::ready(
        r#"
        [breaker]
        unhealthy_percent = 30
        min_unhealthy = 1
        auto_close_after = "never"
        "#,
        4,
    );
    let scope = Scope {
        selector: Labels::new(),
        action: Some(Action::RebootHost),
    };
    f.engine
        .pause(scope, "alice", "kernel rollout", None, f.now);
    f.engine
        .quarantine(&host("h1"), "dave", "bad disk", f.now)
        .unwrap();
    f.set_problem("h2", true);
    f.set_problem("h3", true);
    f.advance(secs(10));
    assert_eq!(f.status().breakers.len(), 1, "2 of 4 unhealthy opens it");
    f.set_problem("h2", false);
    f.set_problem("h3", false);

    let mut r = f.restarted();
    r.warm_up();
    let s = r.status();
    assert_eq!(s.pauses.len(), 1);
    assert_eq!(s.quarantined_hosts, 1);
    assert_eq!(s.breakers.len(), 1, "a breaker closes only by reset here");
    let e = r.explain("h1", Action::RebootHost);
    assert_eq!(
        reasons(&e),
        vec![
            DenyReason::Paused,
            DenyReason::BreakerOpen,
            DenyReason::Quarantined
        ]
    );
}

// === Rule 2: breakers ===

#[test]
fn breaker_opens_when_unhealthy_fraction_exceeds_threshold() {
    let mut f = Fleet::ready(
        r#"
        [breaker]
        unhealthy_percent = 30
        [limits.restart_job]
        max_in_flight = 10
        "#,
        10,
    );
    for h in ["h1", "h2", "h3"] {
        f.set_problem(h, true);
    }
    f.advance(secs(10));
    assert!(f.status().breakers.is_empty(), "3 of 10 is not over 30%");
    // h1 is already unhealthy: its permit does not add to the count.
    f.grant("h1", Action::RestartJob);

    f.set_problem("h4", true);
    f.engine.take_events();
    f.advance(secs(10));
    let trips: Vec<_> = f
        .engine
        .take_events()
        .into_iter()
        .filter_map(|e| match e {
            Event::BreakerOpened(t) => Some(t),
            _ => None,
        })
        .collect();
    assert_eq!(trips.len(), 1, "opening is an audited event");
    assert_eq!(trips[0].scope, BreakerScope::Fleet);
    assert_eq!(trips[0].cause, BreakerCause::UnhealthyFraction);
    assert!(trips[0].detail.contains("4 of 10 live hosts unhealthy"));

    let d = f.deny("h4", Action::RestartJob);
    assert_eq!(d.reason, DenyReason::BreakerOpen);
    // The condition still holds: at least the whole auto_close_after (15m).
    assert_eq!(d.retry_after, Some(mins(15)));
    assert_mentions(
        &d,
        &[
            "fleet",
            "4 of 10 live hosts unhealthy",
            "40.0% > unhealthy_percent 30%",
        ],
    );
}

#[test]
fn permits_in_flight_count_towards_the_unhealthy_breaker() {
    let mut f = Fleet::ready(
        r#"
        [breaker]
        unhealthy_percent = 30
        [limits.restart_job]
        max_in_flight = 10
        "#,
        10,
    );
    for h in ["h1", "h2", "h3", "h4"] {
        f.grant(h, Action::RestartJob);
    }
    // No host reports a problem, but 4 of 10 are being remediated.
    let d = f.deny("h5", Action::RestartJob);
    assert_eq!(d.reason, DenyReason::BreakerOpen);
    assert_mentions(&d, &["4 of 10 live hosts unhealthy"]);
}

#[test]
fn breaker_opens_on_failure_fraction_counting_each_host_once() {
    let mut f = Fleet::ready(
        r#"
        [breaker]
        unhealthy_percent = 100
        failure_percent = 50
        window = "30m"
        min_samples = 4
        [limits.restart_job]
        max_in_flight = 10
        "#,
        6,
    );
    for h in ["h1", "h2", "h3"] {
        let p = f.grant(h, Action::RestartJob);
        f.finish(&p, Outcome::Failed);
    }
    // 3 of 3 hosts failed, but fewer than min_samples hosts: no verdict yet.
    let p = f.grant("h4", Action::RestartJob);
    f.finish(&p, Outcome::Succeeded);

    // 3 of 4 hosts failed: 75% > 50%.
    let d = f.deny("h5", Action::RestartJob);
    assert_eq!(d.reason, DenyReason::BreakerOpen);
    assert_mentions(
        &d,
        &[
            "3 of the 4 hosts remediated in the last 30m failed or expired",
            "75.0% > failure_percent 50%",
            "failure_fraction",
        ],
    );
    let trip = &f.status().breakers[0];
    assert_eq!(trip.cause, BreakerCause::FailureFraction);
}

/// One bad host failing again and again is its attempt budget's business:
/// the fleet-wide failure breaker counts it once.
#[test]
fn one_host_failing_repeatedly_does_not_open_the_fleet_breaker() {
    let mut f = Fleet::ready(
        r#"
        [breaker]
        unhealthy_percent = 100
        min_samples = 2
        [limits.restart_job]
        cooldown = "0s"
        host_budget = { max_attempts = 10, per = "1h" }
        "#,
        4,
    );
    for _ in 0..5 {
        let p = f.grant("h1", Action::RestartJob);
        f.finish(&p, Outcome::Failed);
    }
    assert!(
        f.status().breakers.is_empty(),
        "1 host sampled < min_samples 2"
    );
    let p = f.grant("h2", Action::RestartJob);
    f.finish(&p, Outcome::Succeeded);
    // 1 of 2 hosts failed: 50% is not over 50%.
    assert!(f.status().breakers.is_empty());
    f.grant("h3", Action::RestartJob);
}

/// Open → half-open after `auto_close_after` clear → closed once enough
/// probes succeeded with the condition clear.
#[test]
fn breaker_goes_half_open_when_clear_and_closes_after_verified_probes() {
    let mut f = Fleet::ready(
        r#"
        [breaker]
        unhealthy_percent = 30
        auto_close_after = "5m"
        half_open_probes = 1
        half_open_successes = 3
        [limits.restart_job]
        max_in_flight = 10
        cooldown = "0s"
        "#,
        10,
    );
    for h in ["h1", "h2", "h3", "h4"] {
        f.set_problem(h, true);
    }
    f.advance(mins(10));
    let d = f.deny("h1", Action::RestartJob);
    assert_eq!(d.reason, DenyReason::BreakerOpen);
    assert_eq!(d.retry_after, Some(mins(5)), "still unhealthy: the full 5m");
    assert_mentions(&d, &["goes half-open by itself once clear for 5m"]);

    for h in ["h1", "h2", "h3", "h4"] {
        f.set_problem(h, false);
    }
    let clear_at = f.now;
    f.advance(mins(2));
    let d = f.deny("h1", Action::RestartJob);
    assert_eq!(d.reason, DenyReason::BreakerOpen);
    assert_eq!(d.retry_after, Some(mins(3)));

    f.engine.take_events();
    f.advance(mins(3));
    let half: Vec<Event> = f
        .engine
        .take_events()
        .into_iter()
        .filter(|e| matches!(e, Event::BreakerHalfOpened { .. }))
        .collect();
    assert_eq!(
        half,
        vec![Event::BreakerHalfOpened {
            scope: BreakerScope::Fleet,
            actor: "coordinator".into(),
            reason: "condition clear for 5m; probing with 1 permit at a time, \
                     one more per verified success"
                .into(),
            at: clear_at + mins(5),
        }]
    );

    // One probe at a time.
    let p1 = f.grant("h1", Action::RestartJob);
    let d = f.deny("h2", Action::RestartJob);
    assert_eq!(d.reason, DenyReason::BreakerHalfOpen);
    assert_mentions(&d, &["half-open for fleet", "1 of 1 probe permits active"]);
    // A verified success widens the budget by one.
    f.finish(&p1, Outcome::Succeeded);
    let p2 = f.grant("h2", Action::RestartJob);
    let p3 = f.grant("h3", Action::RestartJob);
    assert_mentions(
        &f.deny("h4", Action::RestartJob),
        &["2 of 2 probe permits active"],
    );
    f.finish(&p2, Outcome::Succeeded);
    f.engine.take_events();
    f.finish(&p3, Outcome::Succeeded);
    f.advance(secs(1));
    assert!(f.engine.take_events().iter().any(|e| matches!(
        e,
        Event::BreakerClosed { actor, reason, .. }
            if actor == "coordinator" && reason.contains("3 probe permits succeeded")
    )));
    assert!(f.status().breakers.is_empty());
    for h in ["h4", "h5", "h6"] {
        f.grant(h, Action::RestartJob);
    }
}

#[test]
fn a_failed_probe_opens_the_breaker_again_at_once() {
    let mut f = Fleet::ready(
        r#"
        [breaker]
        unhealthy_percent = 30
        auto_close_after = "1m"
        [limits.restart_job]
        max_in_flight = 10
        "#,
        10,
    );
    for h in ["h1", "h2", "h3", "h4"] {
        f.set_problem(h, true);
    }
    f.advance(secs(10));
    for h in ["h1", "h2", "h3", "h4"] {
        f.set_problem(h, false);
    }
    f.advance(mins(2));
    let p = f.grant("h5", Action::RestartJob);
    f.finish(&p, Outcome::Failed);
    let d = f.deny("h6", Action::RestartJob);
    assert_eq!(d.reason, DenyReason::BreakerOpen);
    assert_mentions(
        &d,
        &[
            "probe_failed",
            "h5",
            "failed while the breaker was half-open",
        ],
    );
    assert_eq!(f.status().breakers[0].cause, BreakerCause::ProbeFailed);
    assert!(f.status().breakers[0].is_open());
}

#[test]
fn an_expired_probe_opens_the_breaker_again() {
    let mut f = Fleet::ready(
        r#"
        [breaker]
        unhealthy_percent = 100
        failure_percent = 50
        min_samples = 3
        auto_close_after = "never"
        [limits.restart_job]
        max_in_flight = 10
        permit_ttl = "2m"
        "#,
        10,
    );
    for h in ["h1", "h2", "h3"] {
        let p = f.grant(h, Action::RestartJob);
        f.finish(&p, Outcome::Failed);
    }
    f.engine.reset_breaker(None, "bob", "fixed", f.now).unwrap();
    f.grant("h4", Action::RestartJob);
    f.silence("h4");
    f.advance(mins(3));
    let trip = &f.status().breakers[0];
    assert_eq!(trip.cause, BreakerCause::ProbeFailed);
    assert!(
        trip.detail.contains("expired without an outcome"),
        "{trip:?}"
    );
}

#[test]
fn breaker_with_auto_close_never_waits_for_a_reset() {
    let mut f = Fleet::ready(
        r#"
        [breaker]
        unhealthy_percent = 30
        auto_close_after = "never"
        "#,
        10,
    );
    for h in ["h1", "h2", "h3", "h4"] {
        f.set_problem(h, true);
    }
    f.advance(secs(10));
    for h in ["h1", "h2", "h3", "h4"] {
        f.set_problem(h, false);
    }
    f.advance(mins(60));
    let d = f.deny("h1", Action::RestartJob);
    assert_eq!(d.reason, DenyReason::BreakerOpen);
    assert_eq!(d.retry_after, None);
    assert_mentions(&d, &["goes half-open by medicctl breaker reset"]);
}

#[test]
fn domain_breaker_blocks_only_its_rack() {
    let mut f = Fleet::ready_with(
        r#"
        [breaker]
        unhealthy_percent = 100
        [breaker.domains.rack]
        unhealthy_percent = 50
        min_hosts = 3
        [limits.restart_job]
        max_in_flight = 10
        "#,
        &[
            ("a1", "rack=r1"),
            ("a2", "rack=r1"),
            ("a3", "rack=r1"),
            ("a4", "rack=r1"),
            ("b1", "rack=r2"),
            ("b2", "rack=r2"),
            ("b3", "rack=r2"),
            ("b4", "rack=r2"),
            ("c1", "rack=r3"),
            ("c2", "rack=r3"),
        ],
    );
    for h in ["a1", "a2", "a3", "c1", "c2"] {
        f.set_problem(h, true);
    }
    let d = f.deny("a1", Action::RestartJob);
    assert_eq!(d.reason, DenyReason::BreakerOpen);
    assert_mentions(
        &d,
        &[
            "rack=r1",
            "3 of 4 live hosts in rack=r1 unhealthy",
            "75.0% > unhealthy_percent 50%",
        ],
    );
    let trips = f.status().breakers;
    assert_eq!(trips.len(), 1);
    assert_eq!(
        trips[0].scope,
        BreakerScope::Domain {
            label: "rack".into(),
            value: "r1".into()
        }
    );

    f.grant("b1", Action::RestartJob);
    // Rack r3 is wholly unhealthy but has fewer than min_hosts live hosts.
    f.grant("c1", Action::RestartJob);
}

/// Failures inside a failure domain whose own breaker has tripped are
/// that breaker's: they do not stop the healthy domains through the fleet
/// failure breaker. Failures elsewhere still count.
#[test]
fn failures_under_a_tripped_domain_breaker_do_not_open_the_fleet_breaker() {
    let mut f = Fleet::ready_with(
        r#"
        [breaker]
        unhealthy_percent = 100
        failure_percent = 50
        min_samples = 2
        [breaker.domains.rack]
        unhealthy_percent = 50
        min_hosts = 3
        [limits.restart_job]
        max_in_flight = 10
        cooldown = "0s"
        "#,
        &[
            ("a1", "rack=r1"),
            ("a2", "rack=r1"),
            ("a3", "rack=r1"),
            ("a4", "rack=r1"),
            ("b1", "rack=r2"),
            ("b2", "rack=r2"),
            ("b3", "rack=r2"),
            ("b4", "rack=r2"),
            ("c1", "rack=r3"),
            ("c2", "rack=r3"),
        ],
    );
    // Rack r1 goes down while three of its restarts are in flight: its
    // breaker opens, and the restarts fail.
    let granted: Vec<Permit> = ["a1", "a2", "a3"]
        .iter()
        .map(|h| f.grant(h, Action::RestartJob))
        .collect();
    for h in ["a1", "a2", "a3"] {
        f.set_problem(h, true);
    }
    // A request from the rack finds its breaker open.
    assert_eq!(
        f.deny("a4", Action::RestartJob).reason,
        DenyReason::BreakerOpen
    );
    assert_eq!(f.status().breakers.len(), 1, "rack r1's breaker");
    for p in &granted {
        f.finish(p, Outcome::Failed);
    }
    let p = f.grant("b1", Action::RestartJob);
    f.finish(&p, Outcome::Succeeded);
    // 3 of 4 remediated hosts failed, all of them in rack r1: rack r2
    // goes on.
    let p = f.grant("b2", Action::RestartJob);
    assert_eq!(f.status().breakers.len(), 1, "{:?}", f.status().breakers);
    // Failures outside rack r1 count as before: 2 of 2.
    f.finish(&p, Outcome::Failed);
    let p = f.grant("b3", Action::RestartJob);
    f.finish(&p, Outcome::Failed);
    let d = f.deny("b4", Action::RestartJob);
    assert_eq!(d.reason, DenyReason::BreakerOpen);
    assert_mentions(
        &d,
        &[
            "2 of the 3 hosts remediated",
            "3 host(s) under a tripped failure-domain breaker left out",
        ],
    );
}

/// Rack r1 of `f` trips its breaker with three restarts in flight, which
/// then fail; returns after the failures are in.
fn rack_r1_fails(f: &mut Fleet) {
    let granted: Vec<Permit> = ["a1", "a2", "a3"]
        .iter()
        .map(|h| f.grant(h, Action::RestartJob))
        .collect();
    for h in ["a1", "a2", "a3"] {
        f.set_problem(h, true);
    }
    assert_eq!(
        f.deny("a4", Action::RestartJob).reason,
        DenyReason::BreakerOpen
    );
    for p in &granted {
        f.finish(p, Outcome::Failed);
    }
}

const RACKS: &[(&str, &str)] = &[
    ("a1", "rack=r1"),
    ("a2", "rack=r1"),
    ("a3", "rack=r1"),
    ("a4", "rack=r1"),
    ("b1", "rack=r2"),
    ("b2", "rack=r2"),
    ("b3", "rack=r2"),
    ("b4", "rack=r2"),
    ("c1", "rack=r3"),
    ("c2", "rack=r3"),
];

/// The failures are filed under the labels their permits were granted
/// with, kept durably: a restarted coordinator whose rack r1 hosts are
/// silent (the rack is down) still leaves them out.
#[test]
fn a_tripped_domains_failures_stay_out_of_the_fleet_count_after_a_restart() {
    let mut f = Fleet::ready_with(
        r#"
        [breaker]
        unhealthy_percent = 100
        failure_percent = 50
        min_samples = 2
        [breaker.liveness_drop]
        min_hosts = 100
        [breaker.domains.rack]
        unhealthy_percent = 50
        min_hosts = 3
        [limits.restart_job]
        max_in_flight = 10
        cooldown = "0s"
        "#,
        RACKS,
    );
    rack_r1_fails(&mut f);
    for h in ["a1", "a2", "a3", "a4"] {
        f.silence(h);
    }
    let mut g = f.restarted();
    g.warm_up();
    let p = g.grant("b1", Action::RestartJob);
    g.finish(&p, Outcome::Failed);
    // 1 of 1 counted: under min_samples, and rack r1's 3 left out.
    g.grant("b2", Action::RestartJob);
    let scopes: Vec<BreakerScope> = g.status().breakers.into_iter().map(|t| t.scope).collect();
    assert_eq!(
        scopes,
        [BreakerScope::Domain {
            label: "rack".into(),
            value: "r1".into()
        }]
    );
}

/// Once a domain's breaker has closed (its probes proved the fix), the
/// failures from before the close stay its own: they do not open the
/// fleet breaker the moment the domain recovers.
#[test]
fn a_domain_recovering_does_not_open_the_fleet_breaker_on_its_old_failures() {
    let mut f = Fleet::ready_with(
        r#"
        [breaker]
        unhealthy_percent = 100
        failure_percent = 50
        min_samples = 2
        window = "1h"
        auto_close_after = "1m"
        half_open_successes = 1
        [breaker.domains.rack]
        unhealthy_percent = 50
        min_hosts = 3
        [limits.restart_job]
        max_in_flight = 10
        cooldown = "0s"
        "#,
        RACKS,
    );
    rack_r1_fails(&mut f);
    // Rack r1 comes back; its breaker goes half-open, a probe succeeds,
    // and it closes.
    for h in ["a1", "a2", "a3"] {
        f.set_problem(h, false);
    }
    f.explain("a4", Action::RestartJob);
    f.advance(mins(2));
    f.explain("a4", Action::RestartJob);
    let probe = f.grant("a4", Action::RestartJob);
    f.finish(&probe, Outcome::Succeeded);
    f.heartbeat("a4");
    f.explain("a4", Action::RestartJob);
    assert!(f.status().breakers.is_empty(), "{:?}", f.status().breakers);
    // One success and one failure elsewhere: 1 of 2, not over 50%. Counted
    // with rack r1's old failures it would be 4 of 6.
    let p = f.grant("b1", Action::RestartJob);
    f.finish(&p, Outcome::Succeeded);
    let p = f.grant("b2", Action::RestartJob);
    f.finish(&p, Outcome::Failed);
    f.grant("b3", Action::RestartJob);
    assert!(f.status().breakers.is_empty(), "{:?}", f.status().breakers);
}

/// Like overlapping pauses (which wait for the last), a host covered by
/// two open breakers can be granted only once both have closed.
#[test]

fn breaker_retry_after_waits_for_every_covering_breaker() {
    let mut f = Fleet::ready_with(
        r#"
        [breaker]
        unhealthy_percent = 30
        auto_close_after = "10m"
        [breaker.domains.rack]
        unhealthy_percent = 50
        min_hosts = 2
        "#,
        &[
            ("a1", "rack=r1"),
            ("a2", "rack=r1"),
            ("b1", "rack=r2"),
            ("b2", "rack=r2"),
            ("b3", "rack=r2"),
            ("b4", "rack=r2"),
            ("b5", "rack=r2"),
            ("b6", "rack=r2"),
            ("b7", "rack=r2"),
            ("b8", "rack=r2"),
        ],
    );
    for h in ["a1", "a2", "b1", "b2"] {
        f.set_problem(h, true);
    }
    // 4 of 10 opens the fleet breaker, 2 of 2 the one of rack r1.
    assert_eq!(
        f.deny("a1", Action::RestartJob).reason,
        DenyReason::BreakerOpen
    );
    assert_eq!(f.status().breakers.len(), 2);
    // The fleet recovers; rack r1 does not.
    f.set_problem("b1", false);
    f.set_problem("b2", false);
    f.advance(mins(6));
    let d = f.deny("a1", Action::RestartJob);
    assert_eq!(d.reason, DenyReason::BreakerOpen);
    assert!(
        d.retry_after >= Some(mins(10)),
        "rack r1 is still unhealthy, its breaker stays open at least 10m: {d:?}"
    );
}

/// A reset is the operator saying "I fixed the cause": the breaker goes
/// half-open, not closed, and the failures before it still count.
#[test]
fn reset_breaker_goes_half_open_and_keeps_old_failures() {
    let mut f = Fleet::ready(
        r#"
        [breaker]
        unhealthy_percent = 100
        failure_percent = 50
        min_samples = 4
        auto_close_after = "never"
        [limits.restart_job]
        max_in_flight = 10
        "#,
        10,
    );
    for h in ["h1", "h2", "h3", "h4"] {
        let p = f.grant(h, Action::RestartJob);
        f.finish(&p, Outcome::Failed);
    }
    let d = f.deny("h5", Action::RestartJob);
    assert_eq!(d.reason, DenyReason::BreakerOpen);
    assert_eq!(d.retry_after, None);

    f.advance(mins(5));
    f.engine.take_events();
    let reset = f
        .engine
        .reset_breaker(None, "bob", "database is back", f.now)
        .unwrap();
    assert_eq!(reset.len(), 1);
    assert_eq!(reset[0].scope, BreakerScope::Fleet);
    assert!(f.engine.take_events().iter().any(|e| matches!(
        e,
        Event::BreakerHalfOpened { actor, reason, .. }
            if actor == "bob" && reason.starts_with("database is back; probing with 1 permit")
    )));
    assert!(matches!(
        f.engine.reset_breaker(None, "bob", "again", f.now),
        Err(PolicyError::BreakerAlreadyHalfOpen(s)) if s == "fleet"
    ));

    // One probe; the rest wait for it.
    let p = f.grant("h5", Action::RestartJob);
    assert_eq!(
        f.deny("h6", Action::RestartJob).reason,
        DenyReason::BreakerHalfOpen
    );
    // It fails: the cause was not fixed, and the breaker opens again.
    f.finish(&p, Outcome::Failed);
    assert_eq!(
        f.deny("h6", Action::RestartJob).reason,
        DenyReason::BreakerOpen
    );

    // A restarted coordinator sees the same.
    let mut r = f.restarted();
    r.warm_up();
    assert_eq!(
        r.deny("h6", Action::RestartJob).reason,
        DenyReason::BreakerOpen
    );
}

/// Probes that succeed widen the budget, but a breaker closes only once
/// its condition is clear: old failures keep it half-open until they age
/// out of the window.
#[test]
fn a_half_open_breaker_closes_only_once_old_failures_age_out() {
    let mut f = Fleet::ready(
        r#"
        [breaker]
        unhealthy_percent = 100
        failure_percent = 50
        window = "30m"
        min_samples = 4
        auto_close_after = "never"
        [limits.restart_job]
        max_in_flight = 10
        cooldown = "0s"
        "#,
        10,
    );
    for h in ["h1", "h2", "h3", "h4"] {
        let p = f.grant(h, Action::RestartJob);
        f.finish(&p, Outcome::Failed);
    }
    f.advance(mins(1));
    f.engine.reset_breaker(None, "bob", "fixed", f.now).unwrap();
    for h in ["h5", "h6", "h7"] {
        let p = f.grant(h, Action::RestartJob);
        f.finish(&p, Outcome::Succeeded);
    }
    // 4 of 7 hosts failed: still over 50%, so not closed; but three
    // successes allow four probes at once.
    f.advance(secs(1));
    let trip = f.status().breakers[0].clone();
    assert_eq!(trip.half_open.as_ref().map(|h| h.successes), Some(3));
    let probes: Vec<Permit> = ["h8", "h9", "h10", "h1"]
        .iter()
        .map(|h| f.grant(h, Action::RestartJob))
        .collect();
    assert_eq!(
        f.deny("h2", Action::RestartJob).reason,
        DenyReason::BreakerHalfOpen
    );
    for p in &probes {
        f.finish(p, Outcome::Succeeded);
    }
    // The four failures age out 30m after they happened.
    f.advance(mins(29) + secs(30));
    assert!(f.status().breakers.is_empty(), "{:?}", f.status().breakers);
}

#[test]
fn a_half_open_breaker_and_its_successes_survive_a_restart() {
    let mut f = Fleet::ready(
        r#"
        [breaker]
        unhealthy_percent = 100
        failure_percent = 50
        min_samples = 3
        auto_close_after = "never"
        [limits.restart_job]
        max_in_flight = 10
        "#,
        10,
    );
    for h in ["h1", "h2", "h3"] {
        let p = f.grant(h, Action::RestartJob);
        f.finish(&p, Outcome::Failed);
    }
    f.engine.reset_breaker(None, "bob", "fixed", f.now).unwrap();
    let p = f.grant("h4", Action::RestartJob);
    f.finish(&p, Outcome::Succeeded);

    let mut r = f.restarted();
    r.warm_up();
    f.advance(secs(30));
    for engine in [&mut f, &mut r] {
        engine.grant("h5", Action::RestartJob);
        engine.grant("h6", Action::RestartJob);
        assert_eq!(
            engine.deny("h7", Action::RestartJob).reason,
            DenyReason::BreakerHalfOpen,
            "one success: two probes at once"
        );
    }
}

#[test]
fn a_half_open_rack_breaker_spends_its_probes_in_its_rack_only() {
    let mut f = Fleet::ready_with(
        r#"
        [breaker]
        unhealthy_percent = 100
        auto_close_after = "never"
        [breaker.domains.rack]
        unhealthy_percent = 50
        min_hosts = 3
        [limits.restart_job]
        max_in_flight = 10
        "#,
        &[
            ("a1", "rack=r1"),
            ("a2", "rack=r1"),
            ("a3", "rack=r1"),
            ("a4", "rack=r1"),
            ("b1", "rack=r2"),
            ("b2", "rack=r2"),
            ("b3", "rack=r2"),
        ],
    );
    for h in ["a1", "a2", "a3"] {
        f.set_problem(h, true);
    }
    assert_eq!(
        f.deny("a1", Action::RestartJob).reason,
        DenyReason::BreakerOpen
    );
    let rack = BreakerScope::Domain {
        label: "rack".into(),
        value: "r1".into(),
    };
    f.engine
        .reset_breaker(Some(&rack), "bob", "switch replaced", f.now)
        .unwrap();
    f.grant("b1", Action::RestartJob);
    f.grant("a1", Action::RestartJob);
    let d = f.deny("a2", Action::RestartJob);
    assert_eq!(d.reason, DenyReason::BreakerHalfOpen);
    assert_mentions(&d, &["rack=r1", "1 of 1 probe permits active"]);
    f.grant("b2", Action::RestartJob);
}

// === Rule 2: the fleet-wide unhealthy breaker's minimum ===

#[test]
fn a_one_host_trial_heals_its_host() {
    let mut f = Fleet::ready("", 1);
    f.set_problem("h1", true);
    let p = f.grant("h1", Action::RestartJob);
    f.finish(&p, Outcome::Succeeded);
    assert!(f.status().breakers.is_empty());
}

#[test]
fn a_three_host_fleet_heals_one_host_at_a_time() {
    let mut f = Fleet::ready(
        r#"
        [limits.restart_job]
        max_in_flight = 1
        "#,
        3,
    );
    f.set_problem("h1", true);
    f.set_problem("h2", true);
    let p = f.grant("h1", Action::RestartJob);
    assert_eq!(
        f.deny("h2", Action::RestartJob).reason,
        DenyReason::ConcurrencyCap
    );
    f.set_problem("h1", false);
    f.finish(&p, Outcome::Succeeded);
    f.grant("h2", Action::RestartJob);
    assert!(
        f.status().breakers.is_empty(),
        "2 of 3 is under min_unhealthy 3"
    );
}

#[test]
fn a_fleet_of_100_with_31_unhealthy_still_trips() {
    let mut f = Fleet::ready("", 100);
    for i in 1..=31 {
        f.set_problem(&format!("h{i}"), true);
    }
    let d = f.deny("h1", Action::RestartJob);
    assert_eq!(d.reason, DenyReason::BreakerOpen);
    assert_mentions(&d, &["31 of 100 live hosts unhealthy"]);
}

#[test]
fn min_unhealthy_holds_the_breaker_back_in_a_small_fleet() {
    let mut f = Fleet::ready(
        r#"
        [breaker]
        unhealthy_percent = 30
        min_unhealthy = 4
        "#,
        6,
    );
    for h in ["h1", "h2", "h3"] {
        f.set_problem(h, true);
    }
    assert!(f.status().breakers.is_empty(), "3 of 6 is 50%, but under 4");
    f.set_problem("h4", true);
    assert_eq!(
        f.status().breakers[0].cause,
        BreakerCause::UnhealthyFraction
    );
}

// === Rule 2: silence is not health ===

#[test]
fn a_third_of_the_fleet_going_silent_opens_the_liveness_drop_breaker() {
    let mut f = Fleet::ready("", 30);
    let silenced_at = f.now;
    for i in 1..=10 {
        f.silence(&format!("h{i}"));
    }
    let ttl = f.engine.config().fleet.host_ttl;
    f.advance(ttl + secs(10));
    let trip = f.status().breakers[0].clone();
    assert_eq!(trip.cause, BreakerCause::LivenessDrop);
    assert!(
        trip.since <= silenced_at + ttl + secs(10),
        "opened within one host TTL of the last heartbeat: {trip:?}"
    );
    assert!(
        trip.detail
            .contains("10 of 30 hosts live within the last 5m went silent"),
        "{trip:?}"
    );
    // No grant to the rest while it is open.
    let d = f.deny("h20", Action::RestartJob);
    assert_eq!(d.reason, DenyReason::BreakerOpen);
    assert_mentions(&d, &["liveness_drop"]);
    // Past the window the silent hosts still count as unhealthy: 10 of 30.
    f.advance(mins(30));
    assert_eq!(
        f.deny("h20", Action::RestartJob).reason,
        DenyReason::BreakerOpen
    );
    assert_eq!(f.status().silent_hosts, 10);

    // They come back: clear, then half-open after auto_close_after.
    for i in 1..=10 {
        f.wake(&format!("h{i}"));
    }
    assert_eq!(f.status().silent_hosts, 0);
    f.advance(mins(15) + secs(10));
    assert!(f.status().breakers[0].half_open.is_some());
    f.grant("h20", Action::RestartJob);
}

#[test]
fn silent_hosts_count_as_unhealthy_until_heard_again() {
    let mut f = Fleet::ready(
        r#"
        [breaker]
        unhealthy_percent = 30
        [breaker.liveness_drop]
        percent = 100
        "#,
        20,
    );
    for h in ["h1", "h2", "h3"] {
        f.set_problem(h, true);
    }
    for h in ["h4", "h5", "h6", "h7"] {
        f.silence(h);
    }
    f.advance(mins(1));
    // 7 of 20 hosts: 35%; counting only the 16 live ones, 3 of 16 would
    // have looked like 19%.
    let trip = f.status().breakers[0].clone();
    assert_eq!(trip.cause, BreakerCause::UnhealthyFraction);
    assert!(
        trip.detail
            .contains("7 of 20 hosts unhealthy, 4 of them silent"),
        "{trip:?}"
    );
    let v = f.view("h4");
    assert!(!v.live && v.silent_since.is_some(), "{v:?}");
    for h in ["h4", "h5", "h6", "h7"] {
        f.wake(h);
    }
    assert_eq!(f.status().silent_hosts, 0);
    assert!(f.view("h4").silent_since.is_none());
}

#[test]
fn forgotten_hosts_stop_counting_as_silent() {
    let mut f = Fleet::ready(
        r#"
        [fleet]
        forget_hosts_after = "2m"
        [breaker]
        unhealthy_percent = 30
        "#,
        10,
    );
    for h in ["h1", "h2", "h3", "h4"] {
        f.silence(h);
    }
    f.advance(mins(1));
    assert_eq!(f.status().silent_hosts, 4);
    assert_eq!(f.status().breakers.len(), 1);
    f.advance(mins(2));
    f.engine.tick(f.now);
    assert_eq!(f.status().silent_hosts, 0, "retired hosts are forgotten");
}

#[test]
fn a_rolling_restart_of_agents_opens_no_breaker() {
    let mut f = Fleet::ready("", 100);
    // Five agents at a time, each down for 45s (past host_ttl 30s).
    for batch in 0..20 {
        let names: Vec<String> = (1..=5).map(|i| format!("h{}", batch * 5 + i)).collect();
        for n in &names {
            f.silence(n);
        }
        f.advance(secs(45));
        assert!(f.status().silent_hosts <= 5);
        for n in &names {
            f.wake(n);
        }
        f.advance(secs(15));
    }
    assert!(f.status().breakers.is_empty(), "{:?}", f.status().breakers);
    f.grant("h1", Action::RestartJob);
}

#[test]
fn a_new_liveness_drop_opens_a_half_open_breaker_again() {
    let mut f = Fleet::ready(
        r#"
        [breaker]
        auto_close_after = "1m"
        "#,
        30,
    );
    for i in 1..=10 {
        f.set_problem(&format!("h{i}"), true);
    }
    f.advance(secs(10));
    for i in 1..=10 {
        f.set_problem(&format!("h{i}"), false);
    }
    f.advance(mins(2));
    assert!(f.status().breakers[0].half_open.is_some());
    for i in 11..=20 {
        f.silence(&format!("h{i}"));
    }
    f.advance(secs(45));
    let trip = f.status().breakers[0].clone();
    assert_eq!(trip.cause, BreakerCause::LivenessDrop);
    assert!(trip.is_open());
}

// === Rule 2: outcomes are checked against the permit ===

#[test]
fn a_dry_run_outcome_for_an_enforce_permit_is_refused() {
    let mut f = Fleet::ready("", 3);
    let p = f.grant("h1", Action::RestartJob);
    let err = f
        .engine
        .report_outcome(&p.host, &held(&p), Outcome::DryRun, "nothing", f.now)
        .unwrap_err();
    assert!(
        matches!(err, PolicyError::OutcomeNotForMode { dry_run: false, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("granted in enforce mode"), "{err}");
    // The permit is still active, and still ends honestly.
    assert_eq!(f.engine.permits().count(), 1);
    assert_eq!(f.finish(&p, Outcome::Failed).state, PermitState::Failed);
}

#[test]
fn a_dry_run_permit_cannot_end_succeeded_or_failed() {
    let mut f = Fleet::ready(r#"mode = "dry-run""#, 3);
    let p = f.grant("h1", Action::RestartJob);
    assert!(p.dry_run);
    for outcome in [Outcome::Succeeded, Outcome::Failed] {
        let err = f
            .engine
            .report_outcome(&p.host, &held(&p), outcome, "pretend", f.now)
            .unwrap_err();
        assert!(
            matches!(err, PolicyError::OutcomeNotForMode { dry_run: true, .. }),
            "{err:?}"
        );
    }
    assert_eq!(f.finish(&p, Outcome::DryRun).state, PermitState::DryRun);
    let p = f.grant("h2", Action::RestartJob);
    assert_eq!(f.finish(&p, Outcome::Aborted).state, PermitState::Aborted);
}

/// The same ordering by timestamp for the attempt budget: grants at the
/// same instant as a release (`g.at >= released`) count against the fresh
/// budget after a restore, though the live engine cleared them.
#[test]

fn restart_after_release_at_the_same_instant_keeps_the_fresh_budget() {
    let mut f = Fleet::ready(
        r#"
        [breaker]
        unhealthy_percent = 100
        [limits.restart_job]
        cooldown = "0s"
        host_budget = { max_attempts = 2, per = "1h" }
        "#,
        3,
    );
    for _ in 0..2 {
        let p = f.grant("h1", Action::RestartJob);
        f.finish(&p, Outcome::Failed);
    }
    f.deny("h1", Action::RestartJob); // quarantined
    f.engine
        .unquarantine(&host("h1"), "dave", "replaced the NIC", f.now)
        .unwrap();
    assert!(f.explain("h1", Action::RestartJob).would_grant());

    let mut r = f.restarted();
    r.warm_up();
    f.advance(secs(30));
    assert_eq!(
        reasons(&r.explain("h1", Action::RestartJob)),
        reasons(&f.explain("h1", Action::RestartJob)),
        "restored vs live"
    );
}

// === Rule 3: quarantine ===

#[test]
fn quarantined_host_gets_nothing_until_released() {
    let mut f = Fleet::ready(
        r#"
        [breaker]
        unhealthy_percent = 100
        "#,
        3,
    );
    let q = f
        .engine
        .quarantine(&host("h1"), "dave", "disk errors in dmesg", f.now)
        .unwrap();
    assert_eq!(q.cause, QuarantineCause::Manual);

    for action in Action::BUILTIN {
        let d = f.deny("h1", action);
        assert_eq!(d.reason, DenyReason::Quarantined);
        assert_eq!(d.retry_after, None);
        assert_mentions(
            &d,
            &[
                "h1",
                "manual",
                "dave",
                "disk errors in dmesg",
                "medicctl unquarantine",
            ],
        );
    }
    assert_eq!(f.heartbeat("h1").quarantine, Some(q.clone()));

    // It does not wear off.
    f.advance(mins(24 * 60));
    assert_eq!(
        f.deny("h1", Action::RestartJob).reason,
        DenyReason::Quarantined
    );
    assert!(matches!(
        f.engine.quarantine(&host("h1"), "erin", "again", f.now),
        Err(PolicyError::AlreadyQuarantined(_))
    ));

    let released = f
        .engine
        .unquarantine(&host("h1"), "dave", "disk replaced", f.now)
        .unwrap();
    assert_eq!(released, q);
    assert_eq!(f.heartbeat("h1").quarantine, None);
    f.grant("h1", Action::RestartJob);
    assert!(matches!(
        f.engine.unquarantine(&host("h1"), "dave", "twice", f.now),
        Err(PolicyError::NotQuarantined(_))
    ));
}

#[test]
fn expired_permit_quarantines_its_host() {
    let mut f = Fleet::ready(
        r#"
        [breaker]
        unhealthy_percent = 100
        [limits.reboot_host]
        permit_ttl = "1m"
        "#,
        3,
    );
    let p = f.grant("h1", Action::RebootHost);
    assert_eq!(p.expires_at, f.now + mins(1));
    f.silence("h1"); // it reboots... and never reports back

    f.advance(secs(50));
    assert_eq!(f.engine.permits().count(), 1);
    f.engine.take_events();
    f.advance(secs(10));
    let events = f.engine.take_events();
    assert!(events.iter().any(|e| matches!(
        e,
        Event::PermitEnded { id, state: PermitState::Expired, actor, .. }
            if *id == p.id && actor == "coordinator"
    )));
    let q = events
        .iter()
        .find_map(|e| match e {
            Event::HostQuarantined(q) => Some(q.clone()),
            _ => None,
        })
        .expect("the host is quarantined");
    assert_eq!(q.host, host("h1"));
    assert_eq!(q.cause, QuarantineCause::PermitExpired);
    assert_eq!(q.since, p.expires_at);

    // When the agent comes back it learns both.
    let reply = f.send("h1", |hb| hb.held_permit = Some(held(&p)));
    assert_eq!(reply.held_permit_state, Some(PermitState::Expired));
    assert_eq!(reply.quarantine, Some(q));
    let d = f.deny("h1", Action::RestartJob);
    assert_eq!(d.reason, DenyReason::Quarantined);
    assert_mentions(&d, &["permit_expired", "coordinator"]);
}

#[test]
fn needs_human_heartbeat_quarantines_host() {
    let mut f = Fleet::ready("", 3);
    let reply = f.send("h1", |hb| {
        hb.needs_human = Some("2 reboots did not fix job ingest".into());
    });
    let q = reply.quarantine.expect("quarantined at once");
    assert_eq!(q.cause, QuarantineCause::GaveUp);
    assert_eq!(q.actor, "host:h1");
    assert_eq!(q.reason, "2 reboots did not fix job ingest");

    let d = f.deny("h1", Action::RebootHost);
    assert_eq!(d.reason, DenyReason::Quarantined);
    assert_eq!(d.retry_after, None);
    assert_mentions(&d, &["gave_up", "2 reboots did not fix job ingest"]);
}

// === Rule 4: one permit per host ===

#[test]
fn host_holds_at_most_one_permit() {
    let mut f = Fleet::ready(
        r#"
        [breaker]
        unhealthy_percent = 100
        [limits.restart_job]
        max_in_flight = 10
        permit_ttl = "10m"
        "#,
        3,
    );
    let p = f.grant("h1", Action::RestartJob);
    f.advance(mins(1));

    for action in Action::BUILTIN {
        let d = f.deny("h1", action);
        assert_eq!(d.reason, DenyReason::HostBusy);
        assert_eq!(d.retry_after, Some(mins(9)), "until the permit expires");
        assert_mentions(&d, &["h1", p.id.as_str(), "restart_job", "ingest"]);
    }
    // Another job on the same host waits too.
    let other_job = f
        .request_with("req-other", "h1", Action::RestartJob, "billing")
        .unwrap();
    assert_eq!(
        other_job.denial().map(|d| d.reason),
        Some(DenyReason::HostBusy)
    );

    f.finish(&p, Outcome::Succeeded);
    // Restarts are in cooldown now, reboots are not.
    f.grant("h1", Action::RebootHost);
}

// === Rule 5: cooldown and attempt budget ===

#[test]
fn cooldown_after_permit_ends() {
    let mut f = Fleet::ready(
        r#"
        [breaker]
        unhealthy_percent = 100
        [limits.restart_job]
        cooldown = "5m"
        "#,
        3,
    );
    let p = f.grant("h1", Action::RestartJob);
    f.advance(mins(2));
    f.finish(&p, Outcome::Succeeded);
    f.advance(mins(1));

    let d = f.deny("h1", Action::RestartJob);
    assert_eq!(d.reason, DenyReason::Cooldown);
    assert_eq!(d.retry_after, Some(mins(4)), "measured from the end");
    assert_mentions(&d, &["h1", "ended 1m ago", "cooldown is 5m", "4m left"]);
    // The cooldown is per action and per host.
    assert!(f.explain("h1", Action::RebootHost).would_grant());
    assert!(f.explain("h2", Action::RestartJob).would_grant());

    f.advance(mins(4));
    f.grant("h1", Action::RestartJob);
}

#[test]
fn cooldown_also_follows_a_revocation() {
    let mut f = Fleet::ready(
        r#"
        [breaker]
        unhealthy_percent = 100
        [limits.restart_job]
        cooldown = "5m"
        "#,
        3,
    );
    let p = f.grant("h1", Action::RestartJob);
    f.engine.revoke(&p.id, "carol", "oops", f.now).unwrap();
    let d = f.deny("h1", Action::RestartJob);
    assert_eq!(d.reason, DenyReason::Cooldown);
    assert_eq!(d.retry_after, Some(mins(5)));
}

#[test]
fn attempt_budget_exhaustion_quarantines_host() {
    let mut f = Fleet::ready(
        r#"
        [breaker]
        unhealthy_percent = 100
        [limits.restart_job]
        cooldown = "0s"
        host_budget = { max_attempts = 2, per = "1h" }
        "#,
        3,
    );
    for _ in 0..2 {
        let p = f.grant("h1", Action::RestartJob);
        f.finish(&p, Outcome::Failed);
    }
    f.engine.take_events();
    let d = f.deny("h1", Action::RestartJob);
    assert_eq!(d.reason, DenyReason::AttemptBudgetExhausted);
    assert_eq!(d.retry_after, None);
    assert_mentions(
        &d,
        &[
            "h1",
            "2 restart_job permits in the last 1h",
            "host_budget.max_attempts 2",
            "quarantined",
        ],
    );
    let q = f
        .engine
        .take_events()
        .into_iter()
        .find_map(|e| match e {
            Event::HostQuarantined(q) => Some(q),
            _ => None,
        })
        .expect("the host is quarantined");
    assert_eq!(q.cause, QuarantineCause::AttemptBudget);
    assert_eq!(q.actor, "coordinator");

    // From now on it is a quarantine, for every action, whatever time passes.
    f.advance(mins(120));
    assert_eq!(
        f.deny("h1", Action::RestartJob).reason,
        DenyReason::Quarantined
    );
    assert_eq!(
        f.deny("h1", Action::RebootHost).reason,
        DenyReason::Quarantined
    );
}

#[test]
fn attempt_budget_counts_only_the_last_per() {
    let mut f = Fleet::ready(
        r#"
        [breaker]
        unhealthy_percent = 100
        [limits.restart_job]
        cooldown = "0s"
        host_budget = { max_attempts = 2, per = "1h" }
        "#,
        3,
    );
    let p = f.grant("h1", Action::RestartJob);
    f.finish(&p, Outcome::Succeeded);
    f.advance(mins(30));
    let p = f.grant("h1", Action::RestartJob);
    f.finish(&p, Outcome::Succeeded);

    f.advance(mins(29));
    let e = f.explain("h1", Action::RestartJob);
    assert_eq!(reasons(&e), vec![DenyReason::AttemptBudgetExhausted]);
    // An hour after the first attempt, it leaves the window.
    f.advance(mins(1));
    f.grant("h1", Action::RestartJob);
}

#[test]
fn release_restarts_attempt_budget() {
    let mut f = Fleet::ready(
        r#"
        [breaker]
        unhealthy_percent = 100
        [limits.restart_job]
        cooldown = "0s"
        host_budget = { max_attempts = 2, per = "1h" }
        "#,
        3,
    );
    for _ in 0..2 {
        let p = f.grant("h1", Action::RestartJob);
        f.finish(&p, Outcome::Failed);
    }
    assert_eq!(
        f.deny("h1", Action::RestartJob).reason,
        DenyReason::AttemptBudgetExhausted
    );

    f.advance(mins(10));
    f.engine
        .unquarantine(&host("h1"), "dave", "replaced the NIC", f.now)
        .unwrap();
    let p = f.grant("h1", Action::RestartJob);
    f.finish(&p, Outcome::Succeeded);

    // A restart neither forgets the release nor refills the budget.
    let mut f = f.restarted();
    f.warm_up();
    let p = f.grant("h1", Action::RestartJob);
    f.finish(&p, Outcome::Succeeded);
    assert_eq!(
        f.deny("h1", Action::RestartJob).reason,
        DenyReason::AttemptBudgetExhausted
    );
}

#[test]
fn cooldown_and_attempt_budget_survive_a_restart() {
    let mut f = Fleet::ready(
        r#"
        [breaker]
        unhealthy_percent = 100
        [limits.restart_job]
        cooldown = "5m"
        host_budget = { max_attempts = 2, per = "1h" }
        "#,
        3,
    );
    let p = f.grant("h1", Action::RestartJob);
    f.finish(&p, Outcome::Succeeded);
    f.advance(mins(5));
    let p = f.grant("h1", Action::RestartJob);
    f.finish(&p, Outcome::Succeeded);

    let mut r = f.restarted();
    r.warm_up();
    let e = r.explain("h1", Action::RestartJob);
    assert_eq!(
        reasons(&e),
        vec![DenyReason::Cooldown, DenyReason::AttemptBudgetExhausted]
    );
    assert_eq!(e.denials[0].retry_after, Some(mins(5) - secs(30)));
}

// === Rule 6: concurrency caps ===

#[test]
fn fleet_cap_is_min_of_absolute_and_percent() {
    let mut f = Fleet::ready(
        r#"
        [breaker]
        unhealthy_percent = 100
        [limits.restart_job]
        max_in_flight = 3
        max_in_flight_percent = 20
        "#,
        10,
    );
    // min(3, 20% of 10 = 2) = 2.
    f.grant("h1", Action::RestartJob);
    f.grant("h2", Action::RestartJob);
    let d = f.deny("h3", Action::RestartJob);
    assert_eq!(d.reason, DenyReason::ConcurrencyCap);
    assert_eq!(d.retry_after, Some(secs(10)), "a heartbeat interval");
    assert_mentions(
        &d,
        &[
            "2 of 2 restart_job permits active fleet-wide",
            "max_in_flight 3",
            "20% of 10 live hosts",
        ],
    );
    assert_eq!(restart_slots(&f.status()), (2, 2));

    // With 20 live hosts the percentage allows 4; the absolute cap wins.
    for i in 11..=20 {
        f.join(&format!("h{i}"), "");
    }
    f.grant("h3", Action::RestartJob);
    let d = f.deny("h4", Action::RestartJob);
    assert_eq!(d.reason, DenyReason::ConcurrencyCap);
    assert_mentions(&d, &["3 of 3", "20% of 20 live hosts"]);
    assert_eq!(restart_slots(&f.status()), (3, 3));
}

#[test]
fn absolute_cap_alone_means_exactly_that_cap() {
    let mut f = Fleet::ready(
        r#"
        [breaker]
        unhealthy_percent = 100
        [limits.restart_job]
        max_in_flight = 3
        "#,
        4,
    );
    for h in ["h1", "h2", "h3"] {
        f.grant(h, Action::RestartJob);
    }
    let d = f.deny("h4", Action::RestartJob);
    assert_eq!(d.reason, DenyReason::ConcurrencyCap);
    assert_mentions(&d, &["3 of 3", "max_in_flight 3"]);
}

#[test]
fn percent_cap_never_rounds_below_one() {
    // Defaults: restart_job max_in_flight_percent = 5; 5% of 4 hosts is 0.2.
    let mut f = Fleet::ready(
        r#"
        [breaker]
        unhealthy_percent = 100
        "#,
        4,
    );
    assert_eq!(restart_slots(&f.status()), (0, 1));
    f.grant("h1", Action::RestartJob);
    let d = f.deny("h2", Action::RestartJob);
    assert_eq!(d.reason, DenyReason::ConcurrencyCap);
    assert_mentions(&d, &["1 of 1", "5% of 4 live hosts, at least 1"]);
}

#[test]
fn percent_cap_rounds_down() {
    let c = config(
        r#"
        [limits.restart_job]
        max_in_flight = 100000
        max_in_flight_percent = 5
        "#,
    );
    let l = c.limits(Action::RestartJob);
    assert_eq!(l.effective_cap(39), 1);
    assert_eq!(l.effective_cap(40), 2);
    assert_eq!(l.effective_cap(59), 2);
    assert_eq!(l.effective_cap(50_000), 2500);
}

/// `max_in_flight_percent = 2.3` of 50,000 live hosts is exactly 1,150, and
/// 32.3% of 1,000 is exactly 323; the engine computes `floor(p * n / 100)` in
/// binary floating point, where `2.3 * 50000 / 100` is 1149.999…
#[test]

fn percent_cap_is_exact_for_decimal_percentages() {
    let c = config(
        r#"
        [limits.restart_job]
        max_in_flight = 100000
        max_in_flight_percent = 2.3
        [limits.reboot_host]
        max_in_flight = 100000
        max_in_flight_percent = 32.3
        "#,
    );
    assert_eq!(c.limits(Action::RestartJob).effective_cap(50_000), 1150);

    // And through a running engine: 1,000 live hosts.
    let mut f = Fleet::new(
        r#"
        [limits.reboot_host]
        max_in_flight = 100000
        max_in_flight_percent = 32.3
        "#,
    );
    for i in 0..1000 {
        f.join(&format!("n{i}"), "");
    }
    f.warm_up();
    let reboot = f
        .status()
        .actions
        .into_iter()
        .find(|a| a.action == Action::RebootHost)
        .unwrap();
    assert_eq!(reboot.effective_cap, 323);
}

#[test]
fn group_caps_all_apply_at_once() {
    let mut f = Fleet::ready_with(
        r#"
        [breaker]
        unhealthy_percent = 100
        [limits.restart_job]
        max_in_flight = 100
        [limits.restart_job.groups.rack]
        max_in_flight = 1
        [limits.restart_job.groups.zone]
        max_in_flight = 2
        "#,
        &[
            ("a", "rack=r1,zone=z1"),
            ("b", "rack=r1,zone=z1"),
            ("c", "rack=r2,zone=z1"),
            ("d", "rack=r3,zone=z1"),
            ("e", "rack=r4,zone=z2"),
        ],
    );
    f.grant("a", Action::RestartJob);
    let d = f.deny("b", Action::RestartJob);
    assert_eq!(d.reason, DenyReason::GroupCap);
    assert_eq!(d.retry_after, Some(secs(10)));
    assert_mentions(&d, &["1 of 1 restart_job permits active in rack=r1"]);

    f.grant("c", Action::RestartJob);
    // Rack r3 is free, but zone z1 is full.
    let d = f.deny("d", Action::RestartJob);
    assert_eq!(d.reason, DenyReason::GroupCap);
    assert_mentions(&d, &["2 of 2 restart_job permits active in zone=z1"]);
    // b fits neither, and explain names both groups.
    let e = f.explain("b", Action::RestartJob);
    assert_eq!(reasons(&e), vec![DenyReason::GroupCap; 2]);
    assert!(e.denials.iter().any(|d| d.message.contains("rack=r1")));
    assert!(e.denials.iter().any(|d| d.message.contains("zone=z1")));

    f.grant("e", Action::RestartJob);
    assert_eq!(
        f.engine.group_active("zone", Action::RestartJob),
        vec![("z1".to_owned(), 2, 4), ("z2".to_owned(), 1, 1)]
    );
}

#[test]
fn group_percent_cap_counts_the_value_live_hosts() {
    let mut f = Fleet::ready_with(
        r#"
        [breaker]
        unhealthy_percent = 100
        [limits.restart_job]
        max_in_flight = 100
        [limits.restart_job.groups.rack]
        max_in_flight_percent = 50
        "#,
        &[
            ("a1", "rack=r1"),
            ("a2", "rack=r1"),
            ("a3", "rack=r1"),
            ("a4", "rack=r1"),
            ("b1", "rack=r2"),
        ],
    );
    f.grant("a1", Action::RestartJob);
    f.grant("a2", Action::RestartJob);
    let d = f.deny("a3", Action::RestartJob);
    assert_eq!(d.reason, DenyReason::GroupCap);
    assert_mentions(&d, &["2 of 2", "rack=r1", "4 live hosts there"]);
    // 50% of a one-host rack still allows one.
    f.grant("b1", Action::RestartJob);
}

#[test]
fn permit_counts_against_the_groups_it_was_granted_in() {
    let mut f = Fleet::ready_with(
        r#"
        [breaker]
        unhealthy_percent = 100
        [limits.restart_job]
        max_in_flight = 100
        [limits.restart_job.groups.rack]
        max_in_flight = 1
        "#,
        &[("a1", "rack=r1"), ("a2", "rack=r1")],
    );
    let p = f.grant("a1", Action::RestartJob);
    assert_eq!(p.labels, labels("rack=r1"));
    // The host moves to another rack while remediating: r1 stays occupied.
    f.members[0].labels = labels("rack=r2");
    f.heartbeat("a1");
    assert_eq!(
        f.deny("a2", Action::RestartJob).reason,
        DenyReason::GroupCap
    );
}

#[test]
fn lowering_a_cap_revokes_nothing() {
    let mut f = Fleet::ready(
        r#"
        [breaker]
        unhealthy_percent = 100
        [limits.restart_job]
        max_in_flight = 3
        "#,
        5,
    );
    let permits: Vec<Permit> = ["h1", "h2", "h3"]
        .iter()
        .map(|h| f.grant(h, Action::RestartJob))
        .collect();
    f.engine.take_events();

    f.engine.set_config(
        config(
            r#"
            [breaker]
            unhealthy_percent = 100
            [limits.restart_job]
            max_in_flight = 1
            "#,
        ),
        f.now,
    );
    assert!(f.engine.take_events().is_empty(), "nothing ended");
    assert_eq!(f.engine.permits().count(), 3);
    assert_eq!(restart_slots(&f.status()), (3, 1));
    for p in &permits {
        let reply = f.send(p.host.as_str(), |hb| hb.held_permit = Some(held(p)));
        assert_eq!(reply.held_permit_state, Some(PermitState::Active));
    }

    // New grants wait until the count is under the new cap.
    for (p, active) in permits.iter().zip([3, 2, 1]) {
        let d = f.deny("h4", Action::RestartJob);
        assert_eq!(d.reason, DenyReason::ConcurrencyCap);
        assert_mentions(&d, &[&format!("{active} of 1")]);
        f.finish(p, Outcome::Succeeded);
    }
    f.grant("h4", Action::RestartJob);
}

#[test]
fn disabled_action_is_denied_naming_the_key() {
    let mut f = Fleet::ready(
        r#"
        [limits.reboot_host]
        max_in_flight = 0
        "#,
        3,
    );
    let d = f.deny("h1", Action::RebootHost);
    assert_eq!(d.reason, DenyReason::ConcurrencyCap);
    assert_mentions(
        &d,
        &[
            "reboot_host is disabled",
            "limits.reboot_host.max_in_flight = 0",
        ],
    );
    f.grant("h1", Action::RestartJob);
}

/// A disabled action never becomes grantable by itself: only a human
/// editing the config does that, which `Denial::retry_after = None` means.
#[test]

fn disabled_action_denial_says_a_human_must_act() {
    let mut f = Fleet::ready(
        r#"
        [limits.reboot_host]
        max_in_flight = 0
        "#,
        3,
    );
    assert_eq!(f.deny("h1", Action::RebootHost).retry_after, None);
}

// === Rule 7: rate budget ===

#[test]
fn rate_budget_spacing_and_burst() {
    let mut f = Fleet::ready(
        r#"
        [breaker]
        unhealthy_percent = 100
        [limits.restart_job]
        max_in_flight = 100
        # one grant per 10s on average, 2 extra at once
        rate = { count = 6, per = "1m", burst = 2 }
        "#,
        12,
    );
    // burst + 1 at once...
    for h in ["h1", "h2", "h3"] {
        f.grant(h, Action::RestartJob);
    }
    let d = f.deny("h4", Action::RestartJob);
    assert_eq!(d.reason, DenyReason::RateLimited);
    assert_eq!(d.retry_after, Some(secs(10)));
    assert_mentions(
        &d,
        &[
            "restart_job rate budget spent",
            "3 granted in the last 1m",
            "count 6 per 1m plus burst 2",
            "next grant possible in 10s",
        ],
    );
    // ...then one per interval.
    f.advance(secs(5));
    assert_eq!(f.deny("h4", Action::RestartJob).retry_after, Some(secs(5)));
    f.advance(secs(5));
    f.grant("h4", Action::RestartJob);
    assert_eq!(f.deny("h5", Action::RestartJob).retry_after, Some(secs(10)));
    for h in ["h5", "h6", "h7", "h8"] {
        f.advance(secs(10));
        f.grant(h, Action::RestartJob);
    }
    // 8 = count + burst in the last minute; the next fits when the first
    // three leave the window at +60s.
    f.advance(secs(5));
    let s = f.status();
    let restart = &s.actions[Action::RestartJob.index()];
    assert_eq!((restart.rate_used, restart.rate_limit), (8, 8));
    assert_eq!(restart.rate_next_at, Some(f.now + secs(5)));
    assert_eq!(
        f.deny("h9", Action::RestartJob).reason,
        DenyReason::RateLimited
    );
    f.advance(secs(5));
    f.grant("h9", Action::RestartJob);
}

#[test]
fn rate_budget_never_exceeds_count_plus_burst_in_any_window() {
    let mut f = Fleet::ready(
        r#"
        [fleet]
        heartbeat_interval = "1s"
        [breaker]
        unhealthy_percent = 100
        [limits.restart_job]
        max_in_flight = 100
        permit_ttl = "1m"
        cooldown = "0s"
        rate = { count = 5, per = "1m", burst = 3 }
        host_budget = { max_attempts = 1000, per = "1h" }
        "#,
        2,
    );
    let mut grants = Vec::new();
    for _ in 0..600 {
        for h in ["h1", "h2"] {
            if let Decision::Granted { permit, .. } = f.request(h, Action::RestartJob) {
                grants.push(permit.granted_at);
                f.finish(&permit, Outcome::Aborted);
            }
        }
        f.advance(secs(1));
    }
    assert!(grants.len() >= 40, "the budget is used: {}", grants.len());
    for (i, &start) in grants.iter().enumerate() {
        let in_window = grants[i..]
            .iter()
            .take_while(|&&t| t < start + mins(1))
            .count();
        assert!(
            in_window <= 8,
            "{in_window} grants in the minute after grant {i}"
        );
    }
}

#[test]
fn rate_budget_is_not_refilled_by_restore() {
    let mut f = Fleet::ready(
        r#"
        [breaker]
        unhealthy_percent = 100
        [limits.restart_job]
        max_in_flight = 100
        rate = { count = 3, per = "1h", burst = 1 }
        "#,
        5,
    );
    f.grant("h1", Action::RestartJob);
    f.grant("h2", Action::RestartJob);
    assert_eq!(f.deny("h3", Action::RestartJob).retry_after, Some(mins(20)));
    f.advance(mins(1));

    let mut r = Fleet {
        engine: Engine::restore(f.engine.config().clone(), f.engine.durable().clone(), f.now),
        now: f.now,
        members: f.members.clone(),
        next_request: 100,
    };
    r.warm_up();
    f.advance(secs(30));
    let before = f.deny("h3", Action::RestartJob);
    let after = r.deny("h3", Action::RestartJob);
    assert_eq!(after.reason, DenyReason::RateLimited);
    assert_eq!(after.retry_after, Some(mins(20) - mins(1) - secs(30)));
    assert_eq!(after, before, "the same budget as without the restart");

    r.advance(mins(18) + secs(30));
    r.grant("h3", Action::RestartJob);
    assert_eq!(
        r.deny("h4", Action::RestartJob).reason,
        DenyReason::RateLimited
    );
}

// === Rule 8: windows ===

#[test]
fn outside_window_denied_with_time_until_open() {
    let mut f = Fleet::ready(
        r#"
        [breaker]
        unhealthy_percent = 100
        [limits.reboot_host]
        timezone = "Europe/Berlin"
        windows = [{ days = ["sat", "sun"], start = "22:00", end = "06:00" }]
        "#,
        3,
    );
    // Tuesday 22:13:50 UTC = 23:13:50 in Berlin (CET, UTC+1). The next window
    // opens Saturday 22:00 Berlin = 21:00 UTC.
    assert_eq!(f.now, at("2023-11-14T22:13:50Z"));
    let opens = at("2023-11-18T21:00:00Z");
    let d = f.deny("h1", Action::RebootHost);
    assert_eq!(d.reason, DenyReason::OutsideWindow);
    assert_eq!(d.retry_after, Some(opens.duration_since(f.now).unwrap()));
    assert_mentions(&d, &["Europe/Berlin", "next opens in 3days 22h 46m 10s"]);
    // Restarts have no windows.
    let p = f.grant("h2", Action::RestartJob);
    f.finish(&p, Outcome::Succeeded);

    f.advance_to(opens - secs(10));
    assert_eq!(f.deny("h1", Action::RebootHost).retry_after, Some(secs(10)));
    f.advance(secs(10));
    let p = f.grant("h1", Action::RebootHost);
    f.finish(&p, Outcome::Succeeded);

    // Sunday 06:00 Berlin it closes; Sunday 22:00 Berlin it opens again.
    f.advance_to(at("2023-11-19T04:59:50Z"));
    assert!(f.explain("h3", Action::RebootHost).would_grant());
    f.advance(secs(10));
    let e = f.explain("h3", Action::RebootHost);
    assert_eq!(reasons(&e), vec![DenyReason::OutsideWindow]);
    assert_eq!(
        e.denials[0].retry_after,
        Some(Duration::from_secs(16 * 3600))
    );
}

#[test]
fn window_follows_daylight_saving_time_of_its_zone() {
    // Berlin leaves summer time on 2023-10-29 at 03:00 CEST (01:00 UTC).
    let mut f = Fleet::new_at(
        r#"
        [breaker]
        unhealthy_percent = 100
        [limits.reboot_host]
        timezone = "Europe/Berlin"
        windows = [{ days = ["sun"], start = "04:00", end = "05:00" }]
        "#,
        at("2023-10-28T12:00:00Z"),
    );
    f.join("h1", "");
    f.warm_up();
    // Sunday 04:00 CET is 03:00 UTC, not 02:00 UTC as it would be in summer.
    let opens = at("2023-10-29T03:00:00Z");
    let d = f.deny("h1", Action::RebootHost);
    assert_eq!(d.retry_after, Some(opens.duration_since(f.now).unwrap()));
    f.advance_to(at("2023-10-29T02:30:00Z"));
    assert_eq!(
        f.deny("h1", Action::RebootHost).reason,
        DenyReason::OutsideWindow
    );
    f.advance_to(opens);
    f.grant("h1", Action::RebootHost);
}

// === Rule 9: warm-up, fleet floor, liveness ===

#[test]
fn warmup_denies_until_it_ends() {
    let mut f = Fleet::new(
        r#"
        [fleet]
        warmup = "2m"
        "#,
    );
    f.join("h1", "");
    f.join("h2", "");
    assert_eq!(f.status().warming_up_until, Some(t0() + mins(2)));
    let d = f.deny("h1", Action::RestartJob);
    assert_eq!(d.reason, DenyReason::WarmingUp);
    assert_eq!(d.retry_after, Some(mins(2)));

    f.advance(secs(30));
    let d = f.deny("h1", Action::RestartJob);
    assert_eq!(d.retry_after, Some(secs(90)));
    assert_mentions(&d, &["started 30s ago", "warmup 2m", "another 1m 30s"]);

    f.advance(secs(90));
    assert_eq!(f.status().warming_up_until, None);
    f.grant("h1", Action::RestartJob);
}

#[test]
fn warmup_begins_again_after_a_restore() {
    let mut f = Fleet::ready("", 3);
    f.advance(mins(10));
    let mut r = f.restarted();
    let d = r.deny("h1", Action::RestartJob);
    assert_eq!(d.reason, DenyReason::WarmingUp);
    assert_eq!(d.retry_after, Some(secs(30)), "default warm-up = host_ttl");
    r.warm_up();
    r.grant("h1", Action::RestartJob);
}

#[test]
fn fleet_below_min_size_denies() {
    let mut f = Fleet::ready(
        r#"
        [fleet]
        min_fleet_size = 5
        "#,
        4,
    );
    let d = f.deny("h1", Action::RestartJob);
    assert_eq!(d.reason, DenyReason::FleetTooSmall);
    assert_eq!(d.retry_after, Some(secs(10)));
    assert_mentions(
        &d,
        &["only 4 hosts are live", "fewer than fleet.min_fleet_size 5"],
    );

    f.join("h5", "");
    f.grant("h1", Action::RestartJob);
}

#[test]
fn silent_host_stops_counting_as_live() {
    let mut f = Fleet::ready(
        r#"
        [fleet]
        heartbeat_interval = "10s"
        host_ttl = "30s"
        min_fleet_size = 3
        "#,
        3,
    );
    f.silence("h3"); // its last heartbeat was now
    f.advance(secs(20));
    assert!(f.view("h3").live);
    assert_eq!(f.status().live_hosts, 3);

    f.advance(secs(10));
    assert!(!f.view("h3").live, "host_ttl since its last heartbeat");
    assert_eq!(f.status().live_hosts, 2);
    let d = f.deny("h1", Action::RestartJob);
    assert_eq!(d.reason, DenyReason::FleetTooSmall);
    assert_mentions(&d, &["only 2 hosts are live"]);

    f.wake("h3");
    assert!(f.view("h3").live);
    f.grant("h1", Action::RestartJob);
}

#[test]
fn silent_host_with_a_problem_stops_counting_as_unhealthy() {
    let mut f = Fleet::ready("", 4);
    f.set_problem("h4", true);
    assert_eq!(f.status().unhealthy_hosts, 1);
    f.silence("h4");
    f.advance(secs(30));
    let s = f.status();
    assert_eq!((s.live_hosts, s.unhealthy_hosts), (3, 0));
}

#[test]
fn host_holding_permit_counts_as_live_and_unhealthy() {
    let mut f = Fleet::ready(
        r#"
        [breaker]
        unhealthy_percent = 100
        "#,
        4,
    );
    let p = f.grant("h1", Action::RebootHost);
    f.silence("h1"); // rebooting
    f.advance(mins(5));
    let v = f.view("h1");
    assert!(v.live && v.unhealthy, "{v:?}");
    assert_eq!(v.active_permit, Some(p.id.clone()));
    let s = f.status();
    assert_eq!((s.live_hosts, s.unhealthy_hosts), (4, 1));

    // The agent reports after its reboot, then heartbeats again.
    f.finish(&p, Outcome::Succeeded);
    let v = f.view("h1");
    assert!(
        !v.live && !v.unhealthy,
        "silent for 5m and no permit: {v:?}"
    );
    f.wake("h1");
    let v = f.view("h1");
    assert!(v.live && !v.unhealthy, "{v:?}");
}

#[test]
fn unknown_host_must_heartbeat_first() {
    let mut f = Fleet::ready("", 3);
    let d = f.deny("ghost", Action::RestartJob);
    assert_eq!(d.reason, DenyReason::UnknownHost);
    assert_eq!(d.retry_after, Some(secs(10)));
    assert_mentions(&d, &["ghost", "has not sent a heartbeat"]);
}

// === Rule 10: dry-run ===

#[test]
fn dry_run_grants_are_marked() {
    let mut f = Fleet::ready(
        r#"
        mode = "dry-run"
        "#,
        10,
    );
    assert!(f.status().dry_run);
    assert!(f.heartbeat("h1").dry_run);
    let p = f.grant("h1", Action::RestartJob);
    assert!(p.dry_run);
    // Every rule still applies: the default cap of 1 for ten hosts.
    assert_eq!(
        f.deny("h2", Action::RestartJob).reason,
        DenyReason::ConcurrencyCap
    );
    let ended = f.finish(&p, Outcome::DryRun);
    assert_eq!(ended.state, PermitState::DryRun);
    f.engine.take_events();

    // In enforce mode grants authorise action again.
    f.engine.set_config(config(""), f.now);
    assert!(!f.heartbeat("h1").dry_run);
    assert!(!f.grant("h2", Action::RestartJob).dry_run);
}

/// An agent in dry-run asks for a dry-run permit; it spends only the
/// dry-run budgets, so the real ones are whole when the agent acts for
/// real.
#[test]
fn dry_run_permits_spend_no_real_budget_and_quarantine_nothing() {
    let mut f = Fleet::ready(
        r#"
        [breaker]
        unhealthy_percent = 100
        [limits.restart_job]
        cooldown = "10m"
        rate = { count = 2, per = "1h", burst = 2 }
        host_budget = { max_attempts = 2, per = "1h" }
        "#,
        3,
    );
    for _ in 0..2 {
        let d = f.request_dry("h1", Action::RestartJob);
        let Decision::Granted { permit, .. } = d else {
            panic!("dry-run request denied: {d:?}");
        };
        assert!(permit.dry_run, "asked for dry-run, granted dry-run");
        f.finish(&permit, Outcome::DryRun);
        // The dry-run cooldown applies to dry-run permits only.
        assert_eq!(
            f.request_dry("h1", Action::RestartJob)
                .denial()
                .map(|d| d.reason),
            Some(DenyReason::Cooldown)
        );
        f.advance(mins(10));
    }
    // The dry-run attempt budget is spent: denied, and nothing is
    // quarantined.
    let d = f.request_dry("h1", Action::RestartJob);
    let d = d.denial().unwrap();
    assert_eq!(d.reason, DenyReason::AttemptBudgetExhausted);
    assert_mentions(d, &["dry run: it would be; nothing is quarantined"]);
    assert_eq!(f.status().quarantined_hosts, 0);
    // The real budgets are whole: no grant in the rate window, no attempt,
    // no cooldown.
    let p = f.grant("h1", Action::RestartJob);
    assert!(!p.dry_run);
    assert_eq!(f.status().action(Action::RestartJob).unwrap().rate_used, 1);
}

#[test]
fn a_coordinator_back_from_dry_run_finds_budgets_and_quarantines_untouched() {
    let mut f = Fleet::ready(
        r#"
        mode = "dry-run"
        [breaker]
        unhealthy_percent = 100
        [limits.restart_job]
        cooldown = "0s"
        permit_ttl = "2m"
        host_budget = { max_attempts = 2, per = "1h" }
        "#,
        3,
    );
    for _ in 0..2 {
        let p = f.grant("h1", Action::RestartJob);
        f.finish(&p, Outcome::DryRun);
    }
    // A dry-run permit that expires quarantines nothing.
    f.grant("h2", Action::RestartJob);
    f.silence("h2");
    f.advance(mins(3));
    assert_eq!(
        f.deny("h1", Action::RestartJob).reason,
        DenyReason::AttemptBudgetExhausted
    );
    assert_eq!(f.status().quarantined_hosts, 0);
    f.wake("h2");

    f.engine.set_config(
        config(
            r#"
            [breaker]
            unhealthy_percent = 100
            [limits.restart_job]
            cooldown = "0s"
            host_budget = { max_attempts = 2, per = "1h" }
            "#,
        ),
        f.now,
    );
    for h in ["h1", "h2"] {
        let p = f.grant(h, Action::RestartJob);
        f.finish(&p, Outcome::Succeeded);
    }
}

#[test]
fn expired_dry_run_permits_count_for_no_breaker() {
    let mut f = Fleet::ready(
        r#"
        mode = "dry-run"
        [breaker]
        unhealthy_percent = 100
        failure_percent = 50
        min_samples = 2
        [breaker.liveness_drop]
        percent = 100
        [limits.restart_job]
        max_in_flight = 10
        permit_ttl = "2m"
        "#,
        6,
    );
    for h in ["h1", "h2", "h3"] {
        f.grant(h, Action::RestartJob);
        f.silence(h);
    }
    f.advance(mins(3));
    assert!(f.status().breakers.is_empty(), "{:?}", f.status().breakers);
}

// === Permit lifecycle: idempotency, fencing, renew, outcome, revoke ===

#[test]
fn retried_request_id_returns_same_permit_and_no_second_slot() {
    let mut f = Fleet::ready(
        r#"
        [breaker]
        unhealthy_percent = 100
        [limits.restart_job]
        max_in_flight = 10
        "#,
        3,
    );
    let first = f
        .request_with("req-a", "h1", Action::RestartJob, JOB)
        .unwrap();
    let Decision::Granted {
        permit,
        replayed: false,
    } = first
    else {
        panic!("expected a grant, got {first:?}");
    };
    f.engine.take_events();
    f.advance(secs(5));

    let again = f
        .request_with("req-a", "h1", Action::RestartJob, JOB)
        .unwrap();
    assert_eq!(
        again,
        Decision::Granted {
            permit: permit.clone(),
            replayed: true
        }
    );
    assert!(
        !f.engine
            .take_events()
            .iter()
            .any(|e| matches!(e, Event::PermitGranted { .. })),
        "no second grant"
    );
    let s = f.status();
    assert_eq!(restart_slots(&s).0, 1, "one slot");
    assert_eq!(
        s.actions[Action::RestartJob.index()].rate_used,
        1,
        "one budget unit"
    );

    // After it ended, a retry still answers with that permit, now ended.
    f.finish(&permit, Outcome::Succeeded);
    let late = f
        .request_with("req-a", "h1", Action::RestartJob, JOB)
        .unwrap();
    let Decision::Granted {
        permit: replay,
        replayed: true,
    } = late
    else {
        panic!("expected a replay, got {late:?}");
    };
    assert_eq!(
        (replay.id, replay.state),
        (permit.id, PermitState::Succeeded)
    );
    assert_eq!(f.engine.permits().count(), 0);
}

#[test]
fn request_id_reused_for_other_request_is_an_error() {
    let mut f = Fleet::ready(
        r#"
        [breaker]
        unhealthy_percent = 100
        "#,
        3,
    );
    f.request_with("req-a", "h1", Action::RestartJob, JOB)
        .unwrap();
    for (name, action, job) in [
        ("h2", Action::RestartJob, JOB),
        ("h1", Action::RebootHost, JOB),
        ("h1", Action::RestartJob, "billing"),
    ] {
        let err = f.request_with("req-a", name, action, job).unwrap_err();
        let PolicyError::RequestIdConflict {
            request_id,
            previous,
        } = &err
        else {
            panic!("expected a conflict, got {err:?}");
        };
        assert_eq!(request_id.as_str(), "req-a");
        assert_eq!(previous, "restart_job of job \"ingest\" on host h1");
        assert!(err.to_string().contains("use a new request_id"), "{err}");
    }
    assert_eq!(f.engine.permits().count(), 1);
}

#[test]
fn fencing_tokens_strictly_increase_across_restore() {
    let mut f = Fleet::ready(
        r#"
        [breaker]
        unhealthy_percent = 100
        [limits.restart_job]
        max_in_flight = 10
        "#,
        4,
    );
    let p1 = f.grant("h1", Action::RestartJob);
    let p2 = f.grant("h2", Action::RestartJob);
    assert!(p2.token > p1.token);
    f.finish(&p2, Outcome::Succeeded);

    let mut r = f.restarted();
    r.warm_up();
    let p3 = r.grant("h3", Action::RestartJob);
    assert!(p3.token > p2.token, "{} after {}", p3.token, p2.token);
    assert_eq!(p3.id, PermitId::for_token(p3.token));
    assert_eq!(r.engine.durable().last_token, p3.token);
}

#[test]
fn renew_with_stale_token_changes_nothing() {
    let mut f = Fleet::ready(
        r#"
        [breaker]
        unhealthy_percent = 100
        [limits.restart_job]
        cooldown = "0s"
        "#,
        3,
    );
    let old = f.grant("h1", Action::RestartJob);
    f.finish(&old, Outcome::Succeeded);
    let p = f.grant("h1", Action::RestartJob);
    f.engine.take_events();
    let before = f.engine.durable().clone();

    let stale = PermitRef {
        id: p.id.clone(),
        token: old.token,
    };
    let err = f.engine.renew(&host("h1"), &stale, f.now).unwrap_err();
    assert_eq!(
        err,
        PolicyError::StaleToken {
            id: p.id.clone(),
            presented: old.token,
            current: p.token
        }
    );
    assert!(err.to_string().contains("is stale"), "{err}");
    let err = f
        .engine
        .report_outcome(&host("h1"), &stale, Outcome::Failed, "x", f.now)
        .unwrap_err();
    assert!(matches!(err, PolicyError::StaleToken { .. }), "{err:?}");

    // Another host's agent cannot act on it either.
    let err = f.engine.renew(&host("h2"), &held(&p), f.now).unwrap_err();
    assert!(matches!(err, PolicyError::WrongHost { .. }), "{err:?}");
    let err = f
        .engine
        .report_outcome(&host("h2"), &held(&p), Outcome::Succeeded, "x", f.now)
        .unwrap_err();
    assert!(matches!(err, PolicyError::WrongHost { .. }), "{err:?}");

    assert!(f.engine.take_events().is_empty());
    assert_eq!(f.engine.durable(), &before);
    let reply = f.send("h1", |hb| hb.held_permit = Some(stale));
    assert_eq!(reply.held_permit_state, Some(PermitState::Revoked));
}

#[test]
fn outcome_with_unknown_permit_is_an_error() {
    let mut f = Fleet::ready(
        r#"
        [breaker]
        unhealthy_percent = 100
        "#,
        3,
    );
    let p = f.grant("h1", Action::RestartJob);
    f.engine.take_events();
    let unknown = PermitRef {
        id: PermitId::parse("p-000000000999").unwrap(),
        token: FencingToken(999),
    };
    let err = f
        .engine
        .report_outcome(&host("h1"), &unknown, Outcome::Succeeded, "x", f.now)
        .unwrap_err();
    assert_eq!(err, PolicyError::UnknownPermit(unknown.id.clone()));
    assert_eq!(err.to_string(), "permit p-000000000999 is unknown");
    assert!(matches!(
        f.engine.renew(&host("h1"), &unknown, f.now),
        Err(PolicyError::UnknownPermit(_))
    ));
    assert!(matches!(
        f.engine.revoke(&unknown.id, "carol", "x", f.now),
        Err(PolicyError::UnknownPermit(_))
    ));
    assert!(f.engine.take_events().is_empty());
    assert_eq!(f.engine.permits().next(), Some(&p));
}

#[test]
fn renew_extends_expiry() {
    let mut f = Fleet::ready(
        r#"
        [breaker]
        unhealthy_percent = 100
        [limits.reboot_host]
        permit_ttl = "1m"
        "#,
        3,
    );
    let p = f.grant("h1", Action::RebootHost);
    let granted = f.now;
    f.advance(secs(20)); // agents renew at a third of the TTL
    let renewed = f.engine.renew(&host("h1"), &held(&p), f.now).unwrap();
    assert_eq!(renewed.expires_at, granted + secs(80));
    assert_eq!(renewed.state, PermitState::Active);
    assert!(f.engine.take_events().iter().any(|e| matches!(
        e,
        Event::PermitRenewed { id, expires_at, .. } if *id == p.id && *expires_at == granted + secs(80)
    )));

    // Past the original expiry it is still active...
    f.advance(secs(50));
    let reply = f.send("h1", |hb| hb.held_permit = Some(held(&p)));
    assert_eq!(reply.held_permit_state, Some(PermitState::Active));
    let busy = f.deny("h1", Action::RebootHost);
    assert_eq!(busy.retry_after, Some(secs(10)));
    // ...until the renewed one.
    f.advance(secs(10));
    let reply = f.send("h1", |hb| hb.held_permit = Some(held(&p)));
    assert_eq!(reply.held_permit_state, Some(PermitState::Expired));
    assert_eq!(
        f.engine.renew(&host("h1"), &held(&p), f.now),
        Err(PolicyError::PermitEnded {
            id: p.id.clone(),
            state: PermitState::Expired
        })
    );
}

#[test]
fn outcome_repeated_is_idempotent() {
    let mut f = Fleet::ready("", 3);
    let p = f.grant("h1", Action::RestartJob);
    f.engine.take_events();
    let first = f.finish(&p, Outcome::Succeeded);
    assert_eq!(first.state, PermitState::Succeeded);
    f.advance(secs(5));
    let second = f.finish(&p, Outcome::Succeeded);
    assert_eq!(second.state, PermitState::Succeeded);
    let ends = f
        .engine
        .take_events()
        .into_iter()
        .filter(|e| matches!(e, Event::PermitEnded { .. }))
        .count();
    assert_eq!(ends, 1, "the retry records nothing");

    // A different outcome for an ended permit is an error, and changes nothing.
    let err = f
        .engine
        .report_outcome(&host("h1"), &held(&p), Outcome::Failed, "x", f.now)
        .unwrap_err();
    assert_eq!(
        err,
        PolicyError::PermitEnded {
            id: p.id.clone(),
            state: PermitState::Succeeded
        }
    );
    assert!(f.engine.take_events().is_empty());
}

#[test]
fn revoke_frees_the_slot() {
    let mut f = Fleet::ready(
        r#"
        [breaker]
        unhealthy_percent = 100
        "#,
        3,
    );
    let p = f.grant("h1", Action::RestartJob);
    assert_eq!(
        f.deny("h2", Action::RestartJob).reason,
        DenyReason::ConcurrencyCap
    );
    let revoked = f
        .engine
        .revoke(&p.id, "carol", "wrong host picked", f.now)
        .unwrap();
    assert_eq!(revoked.state, PermitState::Revoked);
    assert!(f.engine.take_events().iter().any(|e| matches!(
        e,
        Event::PermitEnded { state: PermitState::Revoked, actor, detail, .. }
            if actor == "carol" && detail == "wrong host picked"
    )));
    f.grant("h2", Action::RestartJob);

    // The agent learns it on its next heartbeat; it can no longer act on it.
    let reply = f.send("h1", |hb| hb.held_permit = Some(held(&p)));
    assert_eq!(reply.held_permit_state, Some(PermitState::Revoked));
    let ended = PolicyError::PermitEnded {
        id: p.id.clone(),
        state: PermitState::Revoked,
    };
    assert_eq!(
        f.engine.renew(&host("h1"), &held(&p), f.now),
        Err(ended.clone())
    );
    assert_eq!(
        f.engine
            .report_outcome(&host("h1"), &held(&p), Outcome::Succeeded, "x", f.now),
        Err(ended.clone())
    );
    assert_eq!(f.engine.revoke(&p.id, "carol", "again", f.now), Err(ended));
}

#[test]
fn active_permit_survives_a_restart_and_still_expires() {
    let mut f = Fleet::ready(
        r#"
        [breaker]
        unhealthy_percent = 100
        [limits.reboot_host]
        permit_ttl = "1m"
        "#,
        3,
    );
    let p = f.grant("h1", Action::RebootHost);
    f.silence("h1");
    let mut r = f.restarted();
    r.warm_up();
    // Silent and unknown to the new engine's heartbeats, but holding a permit.
    let v = r.view("h1");
    assert!(v.live && v.unhealthy, "{v:?}");
    assert_eq!(
        r.deny("h1", Action::RestartJob).reason,
        DenyReason::HostBusy
    );
    let s = r.status();
    assert_eq!(s.actions[Action::RebootHost.index()].active, 1);

    r.advance(secs(30));
    assert_eq!(
        r.deny("h1", Action::RestartJob).reason,
        DenyReason::Quarantined
    );
    assert_eq!(r.engine.permits().count(), 0);
    assert!(r.engine.durable().quarantines.contains_key(&p.host));
}

// === Explain ===

#[test]
fn explain_lists_every_denying_rule_not_only_the_first() {
    let mut f = Fleet::ready(
        r#"
        [breaker]
        unhealthy_percent = 100
        [limits.restart_job]
        max_in_flight = 1
        "#,
        3,
    );
    f.grant("h2", Action::RestartJob);
    f.engine
        .pause(Scope::fleet(), "alice", "incident 4711", None, f.now);
    f.engine
        .quarantine(&host("h1"), "dave", "bad disk", f.now)
        .unwrap();

    let e = f.explain("h1", Action::RestartJob);
    assert_eq!(e.host, host("h1"));
    assert_eq!(e.action, Action::RestartJob);
    assert!(!e.would_grant());
    assert_eq!(
        reasons(&e),
        vec![
            DenyReason::Paused,
            DenyReason::Quarantined,
            DenyReason::ConcurrencyCap
        ]
    );
    // A request answers with the first only.
    assert_eq!(f.deny("h1", Action::RestartJob).reason, DenyReason::Paused);
    assert_eq!(
        reasons(&f.explain("h3", Action::RestartJob)),
        vec![DenyReason::Paused, DenyReason::ConcurrencyCap]
    );
    // An unknown host: that, and the fleet-wide rules.
    assert_eq!(
        reasons(&f.explain("ghost", Action::RestartJob)),
        vec![DenyReason::UnknownHost, DenyReason::Paused]
    );
    assert_eq!(
        reasons(&f.explain("h3", Action::RebootHost)),
        vec![DenyReason::Paused]
    );
}

#[test]
fn explain_changes_nothing() {
    let mut f = Fleet::ready(
        r#"
        [breaker]
        unhealthy_percent = 100
        [limits.restart_job]
        cooldown = "0s"
        host_budget = { max_attempts = 1, per = "1h" }
        "#,
        3,
    );
    let p = f.grant("h1", Action::RestartJob);
    f.finish(&p, Outcome::Failed);
    f.engine.take_events();
    let before = f.engine.durable().clone();

    for _ in 0..3 {
        let e = f.explain("h1", Action::RestartJob);
        assert_eq!(reasons(&e), vec![DenyReason::AttemptBudgetExhausted]);
        assert!(f.explain("h2", Action::RestartJob).would_grant());
    }
    assert!(f.engine.take_events().is_empty(), "no quarantine, no grant");
    assert_eq!(f.engine.durable(), &before);
    assert_eq!(f.status().quarantined_hosts, 0);
    // Asking for real does quarantine.
    f.deny("h1", Action::RestartJob);
    assert_eq!(f.status().quarantined_hosts, 1);
}

// === Durable state ===

#[test]
fn events_rebuild_the_same_durable_state() {
    let mut f = Fleet::ready_with(
        r#"
        [breaker]
        unhealthy_percent = 100
        failure_percent = 50
        min_samples = 2
        [breaker.domains.rack]
        unhealthy_percent = 50
        min_hosts = 2
        [limits.restart_job]
        max_in_flight = 10
        permit_ttl = "1m"
        cooldown = "0s"
        host_budget = { max_attempts = 2, per = "1h" }
        "#,
        &[
            ("a1", "rack=r1"),
            ("a2", "rack=r1"),
            ("b1", "rack=r2"),
            ("b2", "rack=r2"),
            ("b3", "rack=r2"),
            ("c1", "rack=r3"),
        ],
    );
    let mut log = f.engine.take_events();
    // Grant, renew, succeed; grant, revoke.
    let p = f.grant("a1", Action::RestartJob);
    f.advance(secs(20));
    f.engine.renew(&host("a1"), &held(&p), f.now).unwrap();
    f.finish(&p, Outcome::Succeeded);
    let p = f.grant("b1", Action::RestartJob);
    f.engine
        .revoke(&p.id, "carol", "wrong host", f.now)
        .unwrap();
    // Expiry and its quarantine; release.
    f.grant("c1", Action::RestartJob);
    f.silence("c1");
    f.advance(mins(1));
    f.engine
        .unquarantine(&host("c1"), "dave", "it is back", f.now)
        .unwrap();
    // Two more failures open the fleet breaker; a reset closes it.
    let pa = f.grant("a2", Action::RestartJob);
    let pb = f.grant("b2", Action::RestartJob);
    f.finish(&pa, Outcome::Failed);
    f.finish(&pb, Outcome::Failed);
    f.advance(secs(10));
    f.engine.reset_breaker(None, "bob", "fixed", f.now).unwrap();
    // A rack breaker.
    f.set_problem("a1", true);
    f.set_problem("a2", true);
    assert_eq!(
        f.deny("a1", Action::RestartJob).reason,
        DenyReason::BreakerOpen
    );
    // Budget quarantine, manual and agent quarantines.
    let p = f.grant("b2", Action::RestartJob);
    f.finish(&p, Outcome::Succeeded);
    f.deny("b2", Action::RestartJob);
    f.engine
        .quarantine(&host("b3"), "dave", "fan noise", f.now)
        .unwrap();
    f.send("b1", |hb| hb.needs_human = Some("gave up".into()));
    // Pauses: one expires, one is resumed, one stays.
    f.engine.pause(
        Scope::fleet(),
        "alice",
        "short",
        Some(f.now + mins(1)),
        f.now,
    );
    let p2 = f
        .engine
        .pause(Scope::fleet(), "alice", "resumed", None, f.now);
    f.engine
        .pause(Scope::fleet(), "alice", "stays", None, f.now);
    f.advance(mins(2));
    f.engine
        .resume(ResumeTarget::Id(p2.id), "alice", "done", f.now)
        .unwrap();

    log.extend(f.engine.take_events());
    assert!(
        log.windows(2).all(|w| w[0].at() <= w[1].at()),
        "events come oldest first"
    );
    let mut folded = DurableState::default();
    for e in &log {
        folded.apply(e);
    }
    assert_eq!(&folded, f.engine.durable());
    let s = &folded;
    assert_eq!((s.pauses.len(), s.quarantines.len()), (1, 3));
    assert!(s.breakers.contains_key(&BreakerScope::Domain {
        label: "rack".into(),
        value: "r1".into()
    }));
}

// === Denials: retry_after per rule ===

/// `Some(wait)` where time alone clears the rule, `None` where a human must
/// act (resume, release, reset).
#[test]
fn denials_carry_retry_after() {
    fn table(e: &Explanation) -> Vec<(DenyReason, Option<Duration>)> {
        e.denials
            .iter()
            .map(|d| (d.reason, d.retry_after))
            .collect()
    }

    // Warm-up and the fleet floor.
    let mut f = Fleet::new(
        r#"
        [fleet]
        min_fleet_size = 2
        "#,
    );
    f.join("h1", "");
    assert_eq!(
        table(&f.explain("h1", Action::RestartJob)),
        vec![
            (DenyReason::WarmingUp, Some(secs(30))),
            (DenyReason::FleetTooSmall, Some(secs(10))),
        ]
    );

    // Per-host, cap, rate, window and pause rules.
    let mut f = Fleet::ready_with(
        r#"
        [breaker]
        unhealthy_percent = 100
        [limits.restart_job]
        max_in_flight = 1
        permit_ttl = "10m"
        cooldown = "5m"
        host_budget = { max_attempts = 1, per = "24h" }
        rate = { count = 2, per = "1h", burst = 1 }
        [limits.reboot_host]
        timezone = "UTC"
        windows = [{ days = ["sat"], start = "00:00", end = "24:00" }]
        "#,
        &[
            ("h1", ""),
            ("h2", ""),
            ("h3", ""),
            ("h4", "rack=r4"),
            ("h5", "rack=r5"),
        ],
    );
    let p = f.grant("h1", Action::RestartJob);
    f.finish(&p, Outcome::Succeeded);
    f.grant("h2", Action::RestartJob);
    f.advance(mins(1));
    let pause = |rack: &str| Scope {
        selector: labels(rack),
        action: None,
    };
    f.engine
        .pause(pause("rack=r4"), "alice", "until resumed", None, f.now);
    f.engine.pause(
        pause("rack=r5"),
        "alice",
        "for 10m",
        Some(f.now + mins(10)),
        f.now,
    );
    f.engine
        .quarantine(&host("h4"), "dave", "bad disk", f.now)
        .unwrap();

    assert_eq!(
        table(&f.explain("h1", Action::RestartJob)),
        vec![
            (DenyReason::Cooldown, Some(mins(4))),
            (DenyReason::AttemptBudgetExhausted, None),
            (DenyReason::ConcurrencyCap, Some(secs(10))),
            (DenyReason::RateLimited, Some(mins(29))),
        ]
    );
    assert_eq!(
        table(&f.explain("h2", Action::RestartJob))[0],
        (DenyReason::HostBusy, Some(mins(9)))
    );
    // Tuesday 22:14:50 UTC to Saturday 00:00 UTC.
    assert_eq!(
        table(&f.explain("h3", Action::RebootHost)),
        vec![(
            DenyReason::OutsideWindow,
            Some(at("2023-11-18T00:00:00Z").duration_since(f.now).unwrap())
        )]
    );
    assert_eq!(
        table(&f.explain("h4", Action::RebootHost))[..2],
        [(DenyReason::Paused, None), (DenyReason::Quarantined, None)]
    );
    assert_eq!(
        table(&f.explain("h5", Action::RebootHost))[0],
        (DenyReason::Paused, Some(mins(10)))
    );
    assert_eq!(
        table(&f.explain("ghost", Action::RestartJob)),
        vec![(DenyReason::UnknownHost, Some(secs(10)))]
    );

    // Breakers: auto-close gives a time, "never" needs a reset.
    for (close, expected) in [("15m", Some(mins(15))), ("never", None)] {
        let mut f = Fleet::ready(
            &format!(
                r#"
                [breaker]
                unhealthy_percent = 30
                min_unhealthy = 1
                auto_close_after = "{close}"
                "#
            ),
            3,
        );
        f.set_problem("h1", true);
        f.set_problem("h2", true);
        assert_eq!(
            table(&f.explain("h3", Action::RestartJob)),
            vec![(DenyReason::BreakerOpen, expected)],
            "auto_close_after = {close}"
        );
    }
}

// === Clock steps: time is what passed, not what the wall clock says ===

const STEPPED: &str = r#"
[fleet]
warmup = "30s"
[breaker]
unhealthy_percent = 100
failure_percent = 30
[limits.restart_job]
max_in_flight = 10
permit_ttl = "10m"
cooldown = "0s"
rate = { count = 1, per = "1h", burst = 2 }
"#;

fn ahead(by: Duration) -> ClockStep {
    ClockStep { forward: true, by }
}

fn back(by: Duration) -> ClockStep {
    ClockStep { forward: false, by }
}

/// The danger the check exists for: the same jump, unnoticed, is an hour
/// passing, and every permit expires at once, quarantining every holder.
#[test]
fn an_unnoticed_forward_jump_would_expire_every_permit_at_once() {
    let mut f = Fleet::ready(STEPPED, 4);
    for h in ["h1", "h2", "h3"] {
        f.grant(h, Action::RestartJob);
    }
    f.advance(mins(60));
    assert_eq!(f.status().quarantined_hosts, 3);
}

#[test]
fn a_forward_clock_step_expires_nothing_and_quarantines_no_one() {
    let mut f = Fleet::ready(STEPPED, 4);
    let permits: Vec<Permit> = ["h1", "h2", "h3"]
        .iter()
        .map(|h| f.grant(h, Action::RestartJob))
        .collect();
    f.advance(mins(2));
    f.step_clock(ahead(mins(60)));
    f.advance(secs(5));
    f.engine.tick(f.now);
    let status = f.status();
    assert_eq!(status.quarantined_hosts, 0);
    assert!(status.breakers.is_empty(), "{:?}", status.breakers);
    assert_eq!(status.action(Action::RestartJob).unwrap().active, 3);
    // Each permit still has the 8 minutes it had left, from the new "now".
    let active = &f.engine.durable().permits[&permits[0].id];
    let left = active.expires_at.duration_since(f.now).unwrap();
    assert!(left > mins(7) && left <= mins(8), "{left:?} left");
    // They expire when their time has passed.
    f.advance(mins(9));
    assert_eq!(f.status().quarantined_hosts, 3);
}

#[test]
fn a_backward_clock_step_leaves_the_rate_budget_as_it_was() {
    let mut f = Fleet::ready(STEPPED, 4);
    let p = f.grant("h1", Action::RestartJob);
    f.finish(&p, Outcome::Succeeded);
    f.advance(mins(10));
    f.step_clock(back(mins(180)));
    f.advance(secs(1));
    let status = f.status();
    let restart = status.action(Action::RestartJob).unwrap();
    assert_eq!(
        restart.rate_used, 1,
        "the grant 10 minutes ago still counts"
    );
    // Two grants left, not a budget frozen for three hours.
    let p = f.grant("h2", Action::RestartJob);
    f.finish(&p, Outcome::Succeeded);
    f.grant("h3", Action::RestartJob);
    let d = f.deny("h4", Action::RestartJob);
    assert_eq!(d.reason, DenyReason::RateLimited);
    let wait = d.retry_after.unwrap();
    assert!(
        wait <= mins(60),
        "one grant per hour: the next within the hour, not in {wait:?}"
    );
}

#[test]
fn a_pause_lasts_as_long_as_set_across_a_backward_step() {
    let mut f = Fleet::ready(STEPPED, 2);
    f.engine.pause(
        Scope::default(),
        "alice",
        "db maintenance",
        Some(f.now + mins(30)),
        f.now,
    );
    f.advance(mins(10));
    f.step_clock(back(mins(180)));
    f.advance(mins(19));
    assert_eq!(f.status().pauses.len(), 1, "20 of its 30 minutes left");
    f.advance(mins(2));
    assert!(f.status().pauses.is_empty(), "ended after 30 minutes");
}

#[test]
fn a_breaker_opened_before_a_step_is_dated_in_the_new_time() {
    let toml = STEPPED.replace("[breaker]", "[breaker]\nmin_samples = 2");
    let mut f = Fleet::ready(&toml, 4);
    for h in ["h1", "h2"] {
        let p = f.grant(h, Action::RestartJob);
        f.finish(&p, Outcome::Failed);
    }
    let opened = f.status().breakers[0].since;
    let before = f.now;
    f.step_clock(ahead(mins(60)));
    let since = f.status().breakers[0].since;
    assert_eq!(since, opened + mins(60));
    assert!(since <= f.now && before < since);
}

#[test]
fn a_restored_engine_sees_the_step_its_events_recorded() {
    let mut f = Fleet::ready(STEPPED, 3);
    f.grant("h1", Action::RestartJob);
    f.step_clock(back(mins(180)));
    let mut replayed = DurableState::default();
    let mut g = Fleet::ready(STEPPED, 3);
    g.grant("h1", Action::RestartJob);
    g.step_clock(back(mins(180)));
    for e in g.engine.take_events() {
        replayed.apply(&e);
    }
    assert_eq!(&replayed, f.engine.durable());
    assert!(replayed.clock.is_some());
    let restarted = f.restarted();
    assert_eq!(restarted.engine.durable().permits.len(), 1);
}

#[test]
fn times_past_year_9999_print_instead_of_panicking() {
    let far = Time::UNIX_EPOCH + Duration::from_secs(400_000_000_000);
    assert_eq!(medic_policy::rfc3339(far), "9999-12-31T23:59:59Z");
    // A step can never carry a time past what prints.
    let stepped = ClockStep {
        forward: true,
        by: Duration::from_secs(u64::MAX / 4),
    }
    .shift(t0());
    assert_eq!(stepped, medic_policy::latest_time());
}

/// A state saved by an older medic, which took pauses of any length: a
/// pause until the year 10000 must explain and deny, not panic.
#[test]
fn a_stored_pause_past_year_9999_is_explained_without_panicking() {
    let mut f = Fleet::ready(STEPPED, 2);
    let far = Time::UNIX_EPOCH + Duration::from_secs(300_000_000_000);
    f.engine
        .pause(Scope::default(), "alice", "forever", Some(far), f.now);
    let restarted = f.restarted();
    let mut f = restarted;
    f.advance(mins(1));
    let d = f.deny("h1", Action::RestartJob);
    assert_eq!(d.reason, DenyReason::Paused);
    assert!(d.message.contains("9999-12-31T23:59:59Z"), "{}", d.message);
}

#[test]
fn hosts_unheard_of_for_the_retention_are_forgotten_but_not_their_budgets() {
    let toml = r#"
        [fleet]
        forget_hosts_after = "1h"
        [breaker]
        unhealthy_percent = 100
        [limits.restart_job]
        cooldown = "0s"
        host_budget = { max_attempts = 2, per = "1d" }
    "#;
    let mut f = Fleet::ready(toml, 3);
    let p = f.grant("h1", Action::RestartJob);
    f.finish(&p, Outcome::Succeeded);
    f.silence("h1");
    f.silence("h2");
    f.advance(mins(59));
    f.engine.tick(f.now);
    assert_eq!(f.status().known_hosts, 3, "not yet");
    f.advance(mins(2));
    f.engine.tick(f.now);
    assert_eq!(
        f.status().known_hosts,
        1,
        "h1 and h2 forgotten, h3 heartbeats"
    );
    // h1 comes back: its attempt of the day still counts.
    f.wake("h1");
    let p = f.grant("h1", Action::RestartJob);
    f.finish(&p, Outcome::Succeeded);
    let d = f.deny("h1", Action::RestartJob);
    assert_eq!(d.reason, DenyReason::AttemptBudgetExhausted, "{d:?}");
    f.advance(mins(1));
    f.engine.tick(f.now);
    assert_eq!(f.status().known_hosts, 2);
}

// === Custom actions and per-job caps ===

fn drain() -> Action {
    Action::declare("drain_host").unwrap()
}

#[test]
fn a_custom_action_is_granted_within_its_own_limits() {
    let mut f = Fleet::ready(
        r#"
        [breaker]
        unhealthy_percent = 100
        [actions.drain_host]
        description = "drain traffic"
        [limits.drain_host]
        max_in_flight = 1
        cooldown = "10m"
        "#,
        4,
    );
    let p = f.grant("h1", drain());
    assert_eq!(p.action, drain());
    // Its own cap: a second drain waits, a restart does not.
    let d = f.deny("h2", drain());
    assert_eq!(d.reason, DenyReason::ConcurrencyCap);
    assert_mentions(&d, &["1 of 1 drain_host permits active fleet-wide"]);
    f.grant("h3", Action::RestartJob);
    // Its own cooldown after it ends.
    f.finish(&p, Outcome::Succeeded);
    let d = f.deny("h1", drain());
    assert_eq!(d.reason, DenyReason::Cooldown);
    assert_mentions(&d, &["last drain_host permit ended"]);
    let s = f.status();
    let names: Vec<&str> = s.actions.iter().map(|a| a.action.as_str()).collect();
    assert_eq!(names, ["restart_job", "reboot_host", "drain_host"]);
}

#[test]
fn grant_denied_for_an_action_the_coordinator_does_not_know() {
    let mut f = Fleet::ready("[breaker]\nunhealthy_percent = 100\n", 4);
    let unknown = Action::declare("reimage").unwrap();
    let d = f.deny("h1", unknown);
    assert_eq!(d.reason, DenyReason::UnknownAction);
    assert_eq!(d.retry_after, None);
    assert_mentions(
        &d,
        &[
            "unknown action \"reimage\"",
            "restart_job, reboot_host",
            "[actions.reimage]",
        ],
    );
    // Explain says the same, first.
    assert_eq!(
        reasons(&f.explain("h1", unknown))[0],
        DenyReason::UnknownAction
    );
}

#[test]
fn a_custom_action_removed_by_a_reload_grants_nothing_more_but_its_permits_end_normally() {
    let with = r#"
        [breaker]
        unhealthy_percent = 100
        [actions.drain_host]
        [limits.drain_host]
        max_in_flight = 5
    "#;
    let mut f = Fleet::ready(with, 4);
    let p = f.grant("h1", drain());
    f.engine
        .set_config(config("[breaker]\nunhealthy_percent = 100\n"), f.now);
    assert_eq!(f.deny("h2", drain()).reason, DenyReason::UnknownAction);
    let ended = f.finish(&p, Outcome::Succeeded);
    assert_eq!(ended.state, PermitState::Succeeded);
}

#[test]
fn an_action_marked_dry_run_is_granted_as_a_dry_run_in_enforce_mode() {
    let mut f = Fleet::ready(
        r#"
        [breaker]
        unhealthy_percent = 100
        [actions.drain_host]
        [limits.drain_host]
        dry_run = true
        "#,
        4,
    );
    assert!(f.grant("h1", drain()).dry_run);
    assert!(!f.grant("h2", Action::RestartJob).dry_run);
    let s = f.status();
    let drain_status = s.actions.iter().find(|a| a.action == drain()).unwrap();
    assert!(drain_status.dry_run);
}

#[test]
fn job_cap_limits_one_jobs_permits_fleet_wide_and_per_rack() {
    let mut f = Fleet::ready_with(
        r#"
        [breaker]
        unhealthy_percent = 100
        [limits.restart_job]
        max_in_flight = 100
        [limits.restart_job.jobs.zookeeper]
        max_in_flight = 2
        groups = { rack = 1 }
        "#,
        &[
            ("a", "rack=r1"),
            ("b", "rack=r1"),
            ("c", "rack=r2"),
            ("d", "rack=r3"),
            ("e", "rack=r1"),
        ],
    );
    let zk = |f: &mut Fleet, name: &str, id: &str| {
        f.request_with(id, name, Action::RestartJob, "zookeeper")
            .unwrap()
    };
    assert!(matches!(zk(&mut f, "a", "z1"), Decision::Granted { .. }));
    // One per rack: b shares rack r1 with a.
    let Decision::Denied(d) = zk(&mut f, "b", "z2") else {
        panic!("b should wait for a's zookeeper restart");
    };
    assert_eq!(d.reason, DenyReason::JobCap);
    assert_mentions(
        &d,
        &["1 of 1 restart_job permits for job \"zookeeper\" active in rack=r1"],
    );
    // Other jobs in rack r1 are not held back.
    assert!(matches!(
        f.request_with("k1", "e", Action::RestartJob, "kafka")
            .unwrap(),
        Decision::Granted { .. }
    ));
    assert!(matches!(zk(&mut f, "c", "z3"), Decision::Granted { .. }));
    // Two fleet-wide: d in a free rack still waits.
    let Decision::Denied(d) = zk(&mut f, "d", "z4") else {
        panic!("d should wait: two zookeeper restarts are out");
    };
    assert_eq!(d.reason, DenyReason::JobCap);
    assert_mentions(
        &d,
        &["2 of 2 restart_job permits for job \"zookeeper\" active fleet-wide"],
    );
    // Explain with the job names the cap; without a job it cannot.
    let e = f
        .engine
        .explain_job(&host("d"), Action::RestartJob, Some("zookeeper"), f.now);
    assert_eq!(reasons(&e), vec![DenyReason::JobCap]);
    assert!(f.explain("d", Action::RestartJob).denials.is_empty());
}

#[test]
fn a_job_cap_on_a_job_no_agent_names_holds_back_nothing() {
    let mut f = Fleet::ready(
        r#"
        [breaker]
        unhealthy_percent = 100
        [limits.restart_job]
        max_in_flight = 10
        [limits.restart_job.jobs.zookepeer]
        max_in_flight = 1
        "#,
        4,
    );
    for h in ["h1", "h2", "h3"] {
        f.grant(h, Action::RestartJob);
    }
}

// === Operators' overrides ===

const OVERRIDABLE: &str = r#"
    [breaker]
    unhealthy_percent = 100
    [limits.restart_job]
    max_in_flight = 1
    rate = { count = 100, per = "1h", burst = 10 }
    cooldown = "0s"
    permit_ttl = "2h"
    override_ceiling = { max_in_flight = 3 }
"#;

#[test]
fn an_override_raises_a_cap_for_its_time_and_then_ends_by_itself() {
    use medic_policy::OverrideLimit::MaxInFlight;
    let mut f = Fleet::ready(OVERRIDABLE, 6);
    f.grant("h1", Action::RestartJob);
    assert_eq!(
        f.deny("h2", Action::RestartJob).reason,
        DenyReason::ConcurrencyCap
    );
    let o = f
        .engine
        .set_override(
            Action::RestartJob,
            MaxInFlight,
            3,
            mins(30),
            "alice",
            "INC-7: backlog",
            f.now,
        )
        .unwrap();
    assert_eq!(o.until, f.now + mins(30));
    assert!(matches!(
        f.engine.take_events().last(),
        Some(Event::OverrideSet(x)) if x.id == o.id
    ));
    f.grant("h2", Action::RestartJob);
    f.grant("h3", Action::RestartJob);
    let d = f.deny("h4", Action::RestartJob);
    assert_mentions(&d, &["3 of 3 restart_job permits active"]);
    assert_eq!(f.status().overrides, vec![o.clone()]);
    // Past its end it is gone, by itself, and the configured cap is back.
    f.advance(mins(31));
    let ended = f.engine.take_events();
    assert!(
        ended.iter().any(|e| matches!(
            e,
            Event::OverrideEnded { over, actor, .. } if over.id == o.id && actor == "coordinator"
        )),
        "{ended:?}"
    );
    assert!(f.status().overrides.is_empty());
    assert_eq!(
        f.deny("h4", Action::RestartJob).reason,
        DenyReason::ConcurrencyCap
    );
}

#[test]
fn an_override_past_its_ceiling_or_without_a_reason_is_refused() {
    use medic_policy::OverrideLimit::{MaxInFlight, RateCount};
    let mut f = Fleet::ready(OVERRIDABLE, 2);
    let e = f
        .engine
        .set_override(
            Action::RestartJob,
            MaxInFlight,
            4,
            mins(30),
            "alice",
            "more",
            f.now,
        )
        .unwrap_err();
    assert!(
        matches!(e, PolicyError::OverrideAboveCeiling { ceiling: 3, .. }),
        "{e}"
    );
    assert!(
        e.to_string()
            .contains("limits.restart_job.override_ceiling.max_in_flight"),
        "{e}"
    );
    // Without a ceiling, an override may only lower: reboot_host's cap is
    // its configured 10 (the default).
    let e = f
        .engine
        .set_override(
            Action::RebootHost,
            MaxInFlight,
            11,
            mins(5),
            "alice",
            "x",
            f.now,
        )
        .unwrap_err();
    assert!(
        matches!(e, PolicyError::OverrideAboveCeiling { ceiling: 10, .. }),
        "{e}"
    );
    let e = f
        .engine
        .set_override(
            Action::RestartJob,
            MaxInFlight,
            2,
            mins(5),
            "alice",
            "  ",
            f.now,
        )
        .unwrap_err();
    assert!(e.to_string().contains("reason"), "{e}");
    let e = f
        .engine
        .set_override(
            Action::RestartJob,
            RateCount,
            0,
            mins(5),
            "alice",
            "x",
            f.now,
        )
        .unwrap_err();
    assert!(e.to_string().contains("at least 1"), "{e}");
    let e = f
        .engine
        .set_override(
            Action::RestartJob,
            MaxInFlight,
            2,
            secs(8 * 24 * 3600),
            "alice",
            "x",
            f.now,
        )
        .unwrap_err();
    assert!(e.to_string().contains("duration"), "{e}");
    let e = f
        .engine
        .set_override(
            Action::declare("reimage").unwrap(),
            MaxInFlight,
            1,
            mins(5),
            "alice",
            "x",
            f.now,
        )
        .unwrap_err();
    assert!(e.to_string().contains("unknown action \"reimage\""), "{e}");
    assert_eq!(
        f.engine.end_override(42, "alice", "x", f.now).unwrap_err(),
        PolicyError::NoSuchOverride(42)
    );
    assert!(f.status().overrides.is_empty());
}

#[test]
fn overrides_survive_a_restart_and_a_lowered_ceiling_holds_them() {
    use medic_policy::OverrideLimit::MaxInFlight;
    let mut f = Fleet::ready(OVERRIDABLE, 6);
    f.engine
        .set_override(
            Action::RestartJob,
            MaxInFlight,
            3,
            mins(30),
            "alice",
            "INC-7",
            f.now,
        )
        .unwrap();
    let mut f = f.restarted();
    f.warm_up();
    assert_eq!(f.status().overrides.len(), 1);
    for h in ["h1", "h2", "h3"] {
        f.grant(h, Action::RestartJob);
    }
    assert_eq!(
        f.deny("h4", Action::RestartJob).reason,
        DenyReason::ConcurrencyCap
    );
    // A reload lowering the ceiling to 2: the override is held to it.
    let lower = OVERRIDABLE.replace("max_in_flight = 3 }", "max_in_flight = 2 }");
    f.engine.set_config(config(&lower), f.now);
    let s = f.status();
    let restart = s
        .actions
        .iter()
        .find(|a| a.action == Action::RestartJob)
        .unwrap();
    assert_eq!(restart.effective_cap, 2);
}

#[test]
fn a_raised_rate_count_frees_grants_at_once() {
    use medic_policy::OverrideLimit::RateCount;
    let mut f = Fleet::ready(
        r#"
        [breaker]
        unhealthy_percent = 100
        [limits.restart_job]
        max_in_flight = 10
        cooldown = "0s"
        rate = { count = 1, per = "1h", burst = 0 }
        override_ceiling = { rate_count = 10 }
        "#,
        4,
    );
    f.grant("h1", Action::RestartJob);
    assert_eq!(
        f.deny("h2", Action::RestartJob).reason,
        DenyReason::RateLimited
    );
    f.engine
        .set_override(
            Action::RestartJob,
            RateCount,
            10,
            mins(30),
            "alice",
            "backlog",
            f.now,
        )
        .unwrap();
    // 10 per hour: one every 6 minutes.
    f.advance(mins(6));
    f.grant("h2", Action::RestartJob);
}

// === Human approvals ([limits.<action>.approval]) ===

const APPROVE_REBOOTS: &str = r#"
[breaker]
unhealthy_percent = 100
[limits.reboot_host]
max_in_flight = 3
[limits.reboot_host.approval]
always = true
expire_after = "30m"
use_within = "10m"
"#;

fn waiting(d: Decision) -> medic_policy::Waiting {
    match d {
        Decision::Waiting(w) => w,
        other => panic!("expected the request to wait for an approval, got {other:?}"),
    }
}

#[test]
fn a_request_needing_approval_waits_and_is_granted_once_approved() {
    let mut f = Fleet::ready(APPROVE_REBOOTS, 5);
    let w = waiting(
        f.request_with("r-1", "h1", Action::RebootHost, JOB)
            .unwrap(),
    );
    assert!(w.message.contains("medicctl approve"), "{}", w.message);
    assert!(w.retry_after > Duration::ZERO);
    // Asking again with the same id waits on the same approval.
    let again = waiting(
        f.request_with("r-1", "h1", Action::RebootHost, JOB)
            .unwrap(),
    );
    assert_eq!(again.approval, w.approval);
    assert_eq!(f.engine.approvals(false).len(), 1);

    let wake_before = f.heartbeat("h1").wake;
    let a = f
        .engine
        .decide_approval(w.approval, true, "alice", "checked the host, go", f.now)
        .unwrap();
    assert_eq!(a.state, medic_policy::ApprovalState::Approved);
    assert_ne!(
        f.heartbeat("h1").wake,
        wake_before,
        "the waiting agent is woken"
    );

    let Decision::Granted { permit, replayed } = f
        .request_with("r-1", "h1", Action::RebootHost, JOB)
        .unwrap()
    else {
        panic!("an approved request is granted")
    };
    assert!(!replayed);
    let a = &f.engine.durable().approvals[&w.approval];
    assert_eq!(a.state, medic_policy::ApprovalState::Used);
    assert_eq!(a.permit.as_ref(), Some(&permit.id));
    // The same request asked again is the same grant (I7), not a second use.
    assert!(matches!(
        f.request_with("r-1", "h1", Action::RebootHost, JOB)
            .unwrap(),
        Decision::Granted { replayed: true, .. }
    ));
    // Another request needs its own approval: an approval is used once.
    waiting(
        f.request_with("r-2", "h2", Action::RebootHost, JOB)
            .unwrap(),
    );
}

#[test]
fn an_approval_never_bypasses_the_other_rules() {
    let mut f = Fleet::ready(APPROVE_REBOOTS, 5);
    let w = waiting(
        f.request_with("r-1", "h1", Action::RebootHost, JOB)
            .unwrap(),
    );
    f.engine
        .decide_approval(w.approval, true, "alice", "go", f.now)
        .unwrap();
    f.engine
        .pause(Scope::fleet(), "bob", "incident", None, f.now);
    let d = f
        .request_with("r-1", "h1", Action::RebootHost, JOB)
        .unwrap();
    assert_eq!(d.denial().map(|d| d.reason), Some(DenyReason::Paused));
    assert_eq!(
        f.engine.durable().approvals[&w.approval].state,
        medic_policy::ApprovalState::Approved,
        "a denied ask leaves the approval for the next"
    );
    f.engine
        .resume(ResumeTarget::All, "bob", "over", f.now)
        .unwrap();
    assert!(matches!(
        f.request_with("r-1", "h1", Action::RebootHost, JOB)
            .unwrap(),
        Decision::Granted { .. }
    ));
}

#[test]
fn a_rejected_request_is_denied_naming_who_and_why_until_the_rejection_lapses() {
    let mut f = Fleet::ready(APPROVE_REBOOTS, 5);
    let w = waiting(
        f.request_with("r-1", "h1", Action::RebootHost, JOB)
            .unwrap(),
    );
    f.engine
        .decide_approval(
            w.approval,
            false,
            "alice",
            "this host is being replaced",
            f.now,
        )
        .unwrap();
    let d = f.deny("h1", Action::RebootHost);
    assert_eq!(d.reason, DenyReason::ApprovalRejected);
    assert_mentions(&d, &["alice", "this host is being replaced"]);
    // Explain, which names no job, says so too.
    assert!(reasons(&f.explain("h1", Action::RebootHost)).contains(&DenyReason::ApprovalRejected));
    // Another host is not held by it.
    waiting(
        f.request_with("r-9", "h2", Action::RebootHost, JOB)
            .unwrap(),
    );
    f.advance(mins(31));
    waiting(
        f.request_with("r-10", "h1", Action::RebootHost, JOB)
            .unwrap(),
    );
}

#[test]
fn deciding_an_approval_twice_or_after_it_expired_is_refused() {
    let mut f = Fleet::ready(APPROVE_REBOOTS, 5);
    let w = waiting(
        f.request_with("r-1", "h1", Action::RebootHost, JOB)
            .unwrap(),
    );
    let e = f
        .engine
        .decide_approval(w.approval, true, "alice", " ", f.now)
        .unwrap_err();
    assert!(e.to_string().contains("reason"), "{e}");
    f.engine
        .decide_approval(w.approval, true, "alice", "go", f.now)
        .unwrap();
    let e = f
        .engine
        .decide_approval(w.approval, false, "bob", "no", f.now)
        .unwrap_err();
    assert!(
        matches!(e, PolicyError::ApprovalNotPending { .. }) && e.to_string().contains("alice"),
        "{e}"
    );
    // Approved but never used: it expires after use_within.
    f.advance(mins(11));
    assert_eq!(
        f.engine.durable().approvals[&w.approval].state,
        medic_policy::ApprovalState::Expired
    );

    let w2 = waiting(
        f.request_with("r-2", "h2", Action::RebootHost, JOB)
            .unwrap(),
    );
    f.advance(mins(31));
    let e = f
        .engine
        .decide_approval(w2.approval, true, "alice", "late", f.now)
        .unwrap_err();
    assert!(e.to_string().contains("expired"), "{e}");
    assert!(matches!(
        f.engine
            .decide_approval(999, true, "alice", "who?", f.now)
            .unwrap_err(),
        PolicyError::NoSuchApproval(999)
    ));
    // The agent still asking with the expired request's id waits anew.
    let w3 = waiting(
        f.request_with("r-2", "h2", Action::RebootHost, JOB)
            .unwrap(),
    );
    assert_ne!(w3.approval, w2.approval);
}

#[test]
fn approval_beyond_a_threshold_is_needed_only_past_it_and_withdrawn_when_no_longer_needed() {
    let mut f = Fleet::ready(
        r#"
[breaker]
unhealthy_percent = 100
[limits.restart_job]
max_in_flight = 10
cooldown = "0s"
[limits.restart_job.approval]
above_in_flight = 1
"#,
        5,
    );
    let p = f.grant("h1", Action::RestartJob);
    let w = waiting(
        f.request_with("r-x", "h2", Action::RestartJob, JOB)
            .unwrap(),
    );
    assert!(
        f.explain("h3", Action::RestartJob)
            .notes
            .iter()
            .any(|n| n.contains("above_in_flight = 1")),
        "explain says a request would wait"
    );
    f.finish(&p, Outcome::Succeeded);
    // Below the threshold again: the waiting request is granted, and its
    // approval withdrawn.
    assert!(matches!(
        f.request_with("r-x", "h2", Action::RestartJob, JOB)
            .unwrap(),
        Decision::Granted { .. }
    ));
    assert_eq!(
        f.engine.durable().approvals[&w.approval].state,
        medic_policy::ApprovalState::Withdrawn
    );
}

#[test]
fn outside_windows_a_request_waits_for_a_human_instead_of_being_denied() {
    let toml = r#"
[breaker]
unhealthy_percent = 100
[limits.reboot_host]
windows = [{ days = ["sat", "sun"], start = "00:00", end = "23:59" }]
[limits.reboot_host.approval]
outside_windows = true
"#;
    // t0 is a Tuesday: outside the window.
    let mut f = Fleet::ready(toml, 3);
    let w = waiting(
        f.request_with("r-1", "h1", Action::RebootHost, JOB)
            .unwrap(),
    );
    f.engine
        .decide_approval(w.approval, true, "alice", "urgent", f.now)
        .unwrap();
    assert!(matches!(
        f.request_with("r-1", "h1", Action::RebootHost, JOB)
            .unwrap(),
        Decision::Granted { .. }
    ));
}

#[test]
fn approvals_survive_a_restart() {
    let mut f = Fleet::ready(APPROVE_REBOOTS, 5);
    let w = waiting(
        f.request_with("r-1", "h1", Action::RebootHost, JOB)
            .unwrap(),
    );
    let mut g = f.restarted();
    g.warm_up();
    assert_eq!(g.engine.approvals(false).len(), 1);
    g.engine
        .decide_approval(w.approval, true, "alice", "go", g.now)
        .unwrap();
    assert!(matches!(
        g.request_with("r-1", "h1", Action::RebootHost, JOB)
            .unwrap(),
        Decision::Granted { .. }
    ));
    // Ids are never reused.
    let w2 = waiting(
        g.request_with("r-2", "h2", Action::RebootHost, JOB)
            .unwrap(),
    );
    assert!(w2.approval > w.approval);
}

#[test]
fn approval_config_errors_name_the_key() {
    for (toml, key) in [
        (
            "[limits.reboot_host.approval]\n",
            "limits.reboot_host.approval",
        ),
        (
            "[limits.reboot_host.approval]\nalways = true\nabove_in_flight = 2\n",
            "limits.reboot_host.approval.always",
        ),
        (
            "[limits.reboot_host.approval]\noutside_windows = true\n",
            "limits.reboot_host.approval.outside_windows",
        ),
        (
            "[limits.reboot_host.approval]\nalways = true\nexpire_after = \"5s\"\n",
            "limits.reboot_host.approval.expire_after",
        ),
        (
            "[limits.reboot_host.approval]\nalways = true\ncolour = 1\n",
            "limits.reboot_host.approval.colour",
        ),
    ] {
        let e = PolicyConfig::from_toml(toml).unwrap_err().to_string();
        assert!(e.contains(key), "{toml}: {e}");
    }
}
