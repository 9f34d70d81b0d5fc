//! The invariant checker fails on doctored histories: each test starts from
//! a history that passes, breaks one invariant the way a buggy coordinator
//! (or agent) would, and expects that invariant, and only that one, to be
//! reported. A checker that cannot fail would prove nothing.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, SystemTime};

use medic_coordinator::CoordinatorConfig;
use medic_policy::{
    Action, BreakerCause, BreakerScope, BreakerTrip, Event, FencingToken, HostId, Labels, Permit,
    PermitId, PermitState, PolicyConfig, RequestId,
};
use medic_proto::pb::v1 as pb;
use medic_sim::check::{AuditEntry, Context, Verdict, check};
use medic_sim::record::ActionRecord;

const CONFIG: &str = r#"
[fleet]
heartbeat_interval = "1s"
host_ttl = "3s"
warmup = "5s"
[limits.restart_job]
max_in_flight = 2
permit_ttl = "60s"
cooldown = "10s"
rate = { count = 3, per = "100s", burst = 1 }
[limits.restart_job.groups.rack]
max_in_flight = 1
[limits.restart_job.jobs.zookeeper]
max_in_flight = 1
[limits.reboot_host]
max_in_flight = 1
permit_ttl = "60s"
[limits.reboot_host.approval]
always = true
[[gates]]
name = "rack-power"
prometheus = "http://prometheus:9090"
query = 'ALERTS{alertstate="firing",rack="$value"}'
label = "rack"
actions = ["restart_job"]
"#;

fn policy() -> PolicyConfig {
    CoordinatorConfig::from_toml(CONFIG).unwrap().policy
}

fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn at(s: u64) -> SystemTime {
    t0() + Duration::from_secs(s)
}

fn labels(rack: &str) -> Labels {
    Labels::from([("rack".to_owned(), rack.to_owned())])
}

fn fleet() -> Vec<Labels> {
    (0..10).map(|i| labels(&format!("r{}", i % 5))).collect()
}

struct History {
    entries: Vec<AuditEntry>,
}

impl History {
    fn new() -> Self {
        Self {
            entries: Vec::new(),
        }
    }

    fn push(&mut self, kind: pb::EventKind, actor: &str, reason: &str, event: Event) -> u64 {
        let id = self.entries.len() as u64 + 1;
        self.entries.push(AuditEntry {
            id,
            at: event.at(),
            kind,
            actor: actor.to_owned(),
            host: event.host().map(|h| h.to_string()).unwrap_or_default(),
            reason: reason.to_owned(),
            event: Some(event),
        });
        id
    }

    fn grant(&mut self, token: u64, host: &str, rack: &str, s: u64) -> Permit {
        self.grant_req(token, host, rack, s, &format!("req-{token}"))
    }

    fn grant_req(&mut self, token: u64, host: &str, rack: &str, s: u64, req: &str) -> Permit {
        self.grant_of(token, host, rack, s, req, Action::RestartJob, "ingest")
    }

    #[allow(clippy::too_many_arguments)]
    fn grant_of(
        &mut self,
        token: u64,
        host: &str,
        rack: &str,
        s: u64,
        req: &str,
        action: Action,
        job: &str,
    ) -> Permit {
        let permit = Permit {
            id: PermitId::for_token(FencingToken(token)),
            token: FencingToken(token),
            request_id: RequestId::new(req).unwrap(),
            host: HostId::new(host).unwrap(),
            action,
            job: job.into(),
            reason: "stuck".into(),
            labels: labels(rack),
            dry_run: false,
            granted_at: at(s),
            expires_at: at(s + 60),
            ttl: Duration::from_secs(60),
            state: PermitState::Active,
        };
        self.push(
            pb::EventKind::Grant,
            &format!("host:{host}"),
            "stuck",
            Event::PermitGranted {
                permit: permit.clone(),
            },
        );
        permit
    }

    fn end(&mut self, p: &Permit, s: u64) {
        self.end_as(p, s, PermitState::Succeeded);
    }

    fn end_as(&mut self, p: &Permit, s: u64, state: PermitState) {
        self.push(
            pb::EventKind::Outcome,
            &format!("host:{}", p.host),
            "restarted",
            Event::PermitEnded {
                id: p.id.clone(),
                host: p.host.clone(),
                action: p.action,
                state,
                actor: format!("host:{}", p.host),
                detail: "restarted".into(),
                at: at(s),
            },
        );
    }

    /// Gate rack-power closes (or opens) for `rack` at `s`.
    fn gate(&mut self, rack: &str, closed: bool, s: u64) {
        self.push(
            pb::EventKind::Gate,
            "coordinator",
            "the query returns ALERTS{rack=...}",
            Event::GateChanged {
                gate: "rack-power".into(),
                label: Some("rack".into()),
                value: Some(rack.into()),
                closed,
                detail: "the query returns ALERTS{rack=...}".into(),
                at: at(s),
            },
        );
    }

    /// A reboot of `host` waits for approval `id` from `s`.
    fn approval_requested(&mut self, id: u64, host: &str, req: &str, s: u64) {
        self.push(
            pb::EventKind::Approval,
            &format!("host:{host}"),
            "every reboot_host needs a human's approval",
            Event::ApprovalRequested(medic_policy::Approval {
                id,
                request_id: RequestId::new(req).unwrap(),
                host: HostId::new(host).unwrap(),
                action: Action::RebootHost,
                job: "ingest".into(),
                reason: "stuck".into(),
                dry_run: false,
                why: "every reboot_host needs a human's approval".into(),
                requested_at: at(s),
                expires_at: at(s + 600),
                state: medic_policy::ApprovalState::Pending,
                actor: String::new(),
                decision: String::new(),
                decided_at: None,
                permit: None,
            }),
        );
    }

    /// Approval `id` moves to `state` at `s` (used: by `permit`).
    fn approval(
        &mut self,
        id: u64,
        host: &str,
        state: medic_policy::ApprovalState,
        permit: Option<&Permit>,
        s: u64,
    ) {
        let actor = if state == medic_policy::ApprovalState::Approved {
            "operator:alice"
        } else {
            "coordinator"
        };
        self.push(
            pb::EventKind::Approval,
            actor,
            "checked",
            Event::ApprovalChanged {
                id,
                host: HostId::new(host).unwrap(),
                state,
                actor: actor.into(),
                reason: "checked".into(),
                expires_at: (state == medic_policy::ApprovalState::Approved).then(|| at(s + 300)),
                permit: permit.map(|p| p.id.clone()),
                at: at(s),
            },
        );
    }

    fn open_breaker(&mut self, cause: BreakerCause, s: u64) {
        self.push(
            pb::EventKind::Breaker,
            "coordinator",
            cause.as_str(),
            Event::BreakerOpened(BreakerTrip {
                scope: BreakerScope::Fleet,
                cause,
                since: at(s),
                detail: cause.as_str().into(),
                half_open: None,
            }),
        );
    }

    /// An operator resets the fleet breaker: it goes half-open.
    fn reset_breaker(&mut self, s: u64) {
        self.push(
            pb::EventKind::Breaker,
            "operator:alice",
            "fixed the database",
            Event::BreakerHalfOpened {
                scope: BreakerScope::Fleet,
                actor: "operator:alice".into(),
                reason: "fixed the database".into(),
                at: at(s),
            },
        );
    }

    fn check(&self, actions: &[ActionRecord]) -> Verdict {
        let policy = policy();
        let fleet = fleet();
        check(
            &self.entries,
            actions,
            &Context {
                policy: &policy,
                fleet: &fleet,
                starts: &[t0()],
                read_at: at(1000),
                tick: Duration::from_secs(1),
            },
        )
    }
}

fn acted(p: &Permit, s: u64) -> ActionRecord {
    ActionRecord {
        host: p.host.to_string(),
        action: p.action,
        job: "ingest".into(),
        permit_id: p.id.to_string(),
        token: p.token.0,
        at: at(s),
        t: s as f64,
        rechecked_stuck: true,
    }
}

/// Two restarts in different racks, each acted on and ended.
fn clean() -> (History, Vec<ActionRecord>) {
    let mut h = History::new();
    let a = h.grant(1, "h1", "r1", 10);
    let b = h.grant(2, "h2", "r2", 11);
    let actions = vec![acted(&a, 12), acted(&b, 13)];
    h.end(&a, 20);
    h.end(&b, 21);
    (h, actions)
}

fn only(v: &Verdict, invariant: &str) {
    assert!(!v.ok(), "the doctored history passed");
    let others: Vec<_> = v
        .violations
        .iter()
        .filter(|x| x.invariant != invariant)
        .collect();
    assert!(
        others.is_empty(),
        "expected only {invariant}, also got {others:#?}"
    );
}

#[test]
fn a_clean_history_passes() {
    let (h, actions) = clean();
    let v = h.check(&actions);
    assert!(v.ok(), "{:#?}", v.violations);
    assert!(
        v.checked.len() == 9,
        "every invariant was looked at: {:?}",
        v.checked
    );
}

#[test]
fn i1_fleet_cap_exceeded_is_caught() {
    let (mut h, actions) = clean();
    let a = h.grant(3, "h3", "r1", 30);
    let b = h.grant(4, "h4", "r2", 31);
    let c = h.grant(5, "h5", "r3", 32); // third active restart, cap 2
    for p in [&a, &b, &c] {
        h.end(p, 40);
    }
    let v = h.check(&actions);
    // The rate budget (3 + 1 per 100 s) is also exceeded by the fifth grant.
    assert!(v.of("I1") >= 1, "{:#?}", v.violations);
    assert!(v.violations[0].message.contains("cap at most 2"));
}

#[test]
fn i1_group_cap_exceeded_is_caught() {
    let mut h = History::new();
    let a = h.grant(1, "h1", "r1", 10);
    let b = h.grant(2, "h6", "r1", 11); // same rack, rack cap 1
    h.end(&a, 20);
    h.end(&b, 21);
    let v = h.check(&[]);
    only(&v, "I1");
    assert!(v.violations[0].message.contains("rack=r1"));
}

#[test]
fn i1_job_cap_exceeded_is_caught() {
    let mut h = History::new();
    let a = h.grant_of(1, "h1", "r1", 10, "z1", Action::RestartJob, "zookeeper");
    let b = h.grant_of(2, "h2", "r2", 11, "z2", Action::RestartJob, "zookeeper");
    h.end(&a, 20);
    h.end(&b, 21);
    let v = h.check(&[]);
    only(&v, "I1");
    assert!(
        v.violations[0].message.contains("job \"zookeeper\""),
        "{:#?}",
        v.violations
    );
}

#[test]
fn a_grant_of_an_undeclared_action_is_caught() {
    let mut h = History::new();
    let reimage = Action::declare("reimage").unwrap();
    let a = h.grant_of(1, "h1", "r1", 10, "x1", reimage, "ingest");
    h.end(&a, 20);
    let v = h.check(&[]);
    assert!(
        v.violations
            .iter()
            .any(|x| x.message.contains("does not declare")),
        "{:#?}",
        v.violations
    );
}

#[test]
fn i2_rate_budget_exceeded_is_caught() {
    let mut h = History::new();
    // 5 grants within 100 s, one at a time: budget 3 + burst 1.
    for i in 0..5 {
        let p = h.grant(i + 1, &format!("h{i}"), &format!("r{i}"), 10 + i * 12);
        h.end(&p, 10 + i * 12 + 1);
    }
    let v = h.check(&[]);
    only(&v, "I2");
}

/// Raises restart_job's rate count to 10 from `from` to `until` (seconds).
fn rate_override(h: &mut History, from: u64, until: u64) {
    h.push(
        pb::EventKind::Override,
        "alice",
        "catching up after the incident",
        Event::OverrideSet(medic_policy::Override {
            id: 1,
            action: Action::RestartJob,
            limit: medic_policy::OverrideLimit::RateCount,
            value: 10,
            actor: "alice".into(),
            reason: "catching up after the incident".into(),
            since: at(from),
            until: at(until),
        }),
    );
}

#[test]
fn grants_within_a_rate_override_in_force_pass() {
    let mut h = History::new();
    rate_override(&mut h, 5, 1000);
    for i in 0..5 {
        let p = h.grant(i + 1, &format!("h{i}"), &format!("r{i}"), 10 + i * 12);
        h.end(&p, 10 + i * 12 + 1);
    }
    let v = h.check(&[]);
    assert!(v.ok(), "{:#?}", v.violations);
}

#[test]
fn a_rate_override_set_later_does_not_excuse_grants_made_before_it() {
    let mut h = History::new();
    // Five grants within 100 s under the configured budget (3 + burst 1),
    // then an override that would have allowed them.
    for i in 0..5 {
        let p = h.grant(i + 1, &format!("h{i}"), &format!("r{i}"), 10 + i * 12);
        h.end(&p, 10 + i * 12 + 1);
    }
    rate_override(&mut h, 70, 1000);
    let v = h.check(&[]);
    only(&v, "I2");
}

#[test]
fn i3_grant_while_breaker_open_is_caught() {
    let (mut h, actions) = clean();
    h.push(
        pb::EventKind::Breaker,
        "coordinator",
        "40% unhealthy",
        Event::BreakerOpened(BreakerTrip {
            scope: BreakerScope::Fleet,
            cause: BreakerCause::UnhealthyFraction,
            since: at(50),
            detail: "40% unhealthy".into(),
            half_open: None,
        }),
    );
    let p = h.grant(3, "h3", "r3", 60);
    h.end(&p, 61);
    only(&h.check(&actions), "I3");
}

#[test]
fn i3_grant_during_cooldown_or_warmup_is_caught() {
    let (mut h, actions) = clean();
    let p = h.grant(3, "h1", "r1", 25); // h1's restart ended at 20, cooldown 10s
    h.end(&p, 26);
    only(&h.check(&actions), "I3");

    let mut h = History::new();
    let p = h.grant(1, "h1", "r1", 2); // warm-up is 5 s from t0
    h.end(&p, 3);
    only(&h.check(&[]), "I3");
}

#[test]
fn i4_second_active_permit_for_a_host_is_caught() {
    let mut h = History::new();
    let a = h.grant(1, "h1", "r1", 10);
    let b = h.grant(2, "h1", "r1", 11);
    h.end(&a, 20);
    h.end(&b, 21);
    let v = h.check(&[]);
    assert!(v.of("I4") == 1, "{:#?}", v.violations);
}

#[test]
fn i5_token_going_backwards_is_caught() {
    let mut h = History::new();
    let a = h.grant(7, "h1", "r1", 10);
    let b = h.grant(5, "h2", "r2", 11);
    h.end(&a, 20);
    h.end(&b, 21);
    only(&h.check(&[]), "I5");
}

#[test]
fn i5_outcome_changing_an_ended_permit_is_caught() {
    let (mut h, actions) = clean();
    let first = match &h.entries[0].event {
        Some(Event::PermitGranted { permit }) => permit.clone(),
        _ => unreachable!(),
    };
    h.end(&first, 30);
    only(&h.check(&actions), "I5");
}

#[test]
fn i6_action_under_a_grant_missing_from_history_is_caught() {
    let (h, mut actions) = clean();
    let mut ghost = actions[0].clone();
    ghost.permit_id = "p-000000000099".into();
    ghost.token = 99;
    actions.push(ghost);
    only(&h.check(&actions), "I6");
}

#[test]
fn i7_one_request_granted_twice_is_caught() {
    let mut h = History::new();
    let a = h.grant_req(1, "h1", "r1", 10, "same");
    h.end(&a, 20);
    let b = h.grant_req(2, "h1", "r1", 40, "same");
    h.end(&b, 50);
    only(&h.check(&[]), "I7");
}

#[test]
fn i8_acting_after_expiry_or_without_recheck_is_caught() {
    let (h, mut actions) = clean();
    actions[0].at = at(75); // the permit expired at 70 (and ended at 20)
    only(&h.check(&actions), "I8");

    let (h, mut actions) = clean();
    actions[1].rechecked_stuck = false;
    only(&h.check(&actions), "I8");
}

#[test]
fn i9_permit_never_ended_or_unattributed_record_is_caught() {
    let mut h = History::new();
    let a = h.grant(1, "h1", "r1", 10); // never ended, expired long before read_at
    let v = h.check(&[acted(&a, 11)]);
    only(&v, "I9");

    let (mut h, actions) = clean();
    h.entries[2].actor.clear();
    only(&h.check(&actions), "I9");
}

/// The fleet breaker opened and was reset at 60: half-open, one probe at a
/// time (`half_open_probes` 1).
fn reset_after_failures() -> (History, Vec<ActionRecord>) {
    let (mut h, actions) = clean();
    h.open_breaker(BreakerCause::FailureFraction, 50);
    h.reset_breaker(60);
    (h, actions)
}

#[test]
fn i3_probes_within_the_half_open_budget_pass() {
    let (mut h, actions) = reset_after_failures();
    let a = h.grant(3, "h3", "r3", 61); // the one probe
    h.end(&a, 65); // succeeded: the budget is now 2
    let b = h.grant(4, "h4", "r4", 66);
    h.end(&b, 70);
    let v = h.check(&actions);
    assert!(v.ok(), "{:#?}", v.violations);
}

#[test]
fn i3_grant_beyond_the_half_open_budget_is_caught() {
    let (mut h, actions) = reset_after_failures();
    let a = h.grant(3, "h3", "r3", 61); // the one probe
    let b = h.grant(4, "h4", "r4", 62); // a second one before any success
    h.end(&a, 70);
    h.end(&b, 71);
    let v = h.check(&actions);
    only(&v, "I3");
    assert_eq!(v.of("I3"), 1, "{:#?}", v.violations);
    assert!(
        v.violations[0].message.contains("probe budget 1"),
        "{:#?}",
        v.violations
    );
}

#[test]
fn i3_failed_probe_must_reopen_the_breaker_at_once() {
    // Reopened at the same time: clean, and nothing more is granted.
    let (mut h, actions) = reset_after_failures();
    let a = h.grant(3, "h3", "r3", 61);
    h.end_as(&a, 65, PermitState::Failed);
    h.open_breaker(BreakerCause::ProbeFailed, 65);
    let v = h.check(&actions);
    assert!(v.ok(), "{:#?}", v.violations);

    // Not reopened: the next entry (later) finds it missing.
    let (mut h, actions) = reset_after_failures();
    let a = h.grant(3, "h3", "r3", 61);
    h.end_as(&a, 65, PermitState::Expired);
    let v = h.check(&actions);
    only(&v, "I3");
    assert!(v.violations[0].message.contains("did not open again"));

    // Not reopened, and another probe granted at once.
    let (mut h, actions) = reset_after_failures();
    let a = h.grant(3, "h3", "r3", 61);
    h.end_as(&a, 65, PermitState::Failed);
    let b = h.grant(4, "h4", "r4", 65);
    h.end(&b, 70);
    let v = h.check(&actions);
    only(&v, "I3");
    assert_eq!(v.of("I3"), 2, "{:#?}", v.violations);
}

#[test]
fn i3_grant_while_a_liveness_drop_holds_the_fleet_breaker_open_is_caught() {
    let (mut h, actions) = clean();
    h.open_breaker(BreakerCause::LivenessDrop, 50);
    let p = h.grant(3, "h3", "r3", 60);
    h.end(&p, 61);
    let v = h.check(&actions);
    only(&v, "I3");
    assert!(v.violations[0].message.contains("liveness_drop"));
}

#[test]
fn approvals_used_once_each_while_approved_pass() {
    use medic_policy::ApprovalState::{Approved, Used};
    let mut h = History::new();
    h.approval_requested(1, "h1", "req-r1", 10);
    h.approval(1, "h1", Approved, None, 20);
    let p = h.grant_of(1, "h1", "r1", 30, "req-r1", Action::RebootHost, "ingest");
    h.approval(1, "h1", Used, Some(&p), 30);
    let actions = vec![acted(&p, 31)];
    h.end(&p, 40);
    let v = h.check(&actions);
    assert!(v.ok(), "{:#?}", v.violations);
    assert!(v.checked["approvals"] >= 2, "{:?}", v.checked);
}

#[test]
fn an_approval_used_twice_is_caught() {
    use medic_policy::ApprovalState::{Approved, Used};
    let mut h = History::new();
    h.approval_requested(1, "h1", "req-r1", 10);
    h.approval(1, "h1", Approved, None, 20);
    let p = h.grant_of(1, "h1", "r1", 30, "req-r1", Action::RebootHost, "ingest");
    h.approval(1, "h1", Used, Some(&p), 30);
    h.end(&p, 40);
    // The same approval again, for another request of another host.
    let q = h.grant_of(2, "h2", "r2", 50, "req-r2", Action::RebootHost, "ingest");
    h.approval(1, "h1", Used, Some(&q), 50);
    h.end(&q, 60);
    let v = h.check(&[]);
    only(&v, "approvals");
    assert!(
        v.violations
            .iter()
            .any(|x| x.message.contains("used twice")),
        "{:#?}",
        v.violations
    );
}

#[test]
fn a_grant_without_the_approval_its_action_always_needs_is_caught() {
    let mut h = History::new();
    let p = h.grant_of(1, "h1", "r1", 30, "req-r1", Action::RebootHost, "ingest");
    h.end(&p, 40);
    let v = h.check(&[]);
    only(&v, "approvals");
    assert!(
        v.violations[0]
            .message
            .contains("without a human's approval")
    );
}

#[test]
fn an_approval_used_after_it_expired_or_never_approved_is_caught() {
    use medic_policy::ApprovalState::{Approved, Used};
    let mut h = History::new();
    // Approved at 20, usable until 320; used at 400.
    h.approval_requested(1, "h1", "req-r1", 10);
    h.approval(1, "h1", Approved, None, 20);
    let p = h.grant_of(1, "h1", "r1", 400, "req-r1", Action::RebootHost, "ingest");
    h.approval(1, "h1", Used, Some(&p), 400);
    h.end(&p, 410);
    // Pending, never approved, used.
    h.approval_requested(2, "h2", "req-r2", 500);
    let q = h.grant_of(2, "h2", "r2", 510, "req-r2", Action::RebootHost, "ingest");
    h.approval(2, "h2", Used, Some(&q), 510);
    h.end(&q, 520);
    let v = h.check(&[]);
    only(&v, "approvals");
    let messages: Vec<&str> = v.violations.iter().map(|x| x.message.as_str()).collect();
    assert!(
        messages.iter().any(|m| m.contains("after it expired")),
        "{messages:?}"
    );
    assert!(
        messages.iter().any(|m| m.contains("used while pending")),
        "{messages:?}"
    );
}

#[test]
fn a_grant_while_a_gate_covering_it_is_closed_is_caught() {
    let mut h = History::new();
    h.gate("r1", true, 10);
    // Another rack, and another action, are not held.
    let other_rack = h.grant(1, "h2", "r2", 20);
    let other_action = h.grant_of(
        2,
        "h3",
        "r3",
        20,
        "req-2",
        Action::declare("drain_host").unwrap(),
        "ingest",
    );
    h.end(&other_rack, 30);
    h.end(&other_action, 30);
    let held = h.grant(3, "h1", "r1", 40);
    h.end(&held, 50);
    h.gate("r1", false, 60);
    let after = h.grant(4, "h1", "r1", 70);
    h.end(&after, 80);
    let v = h.check(&[]);
    let i3: Vec<&str> = v
        .violations
        .iter()
        .filter(|x| x.invariant == "I3")
        .map(|x| x.message.as_str())
        .collect();
    assert_eq!(i3.len(), 1, "{:#?}", v.violations);
    assert!(
        i3[0].contains("alert gate rack-power for r1 was closed")
            && i3[0].contains(&held.id.to_string()),
        "{i3:?}"
    );
}

#[test]
fn an_approval_decided_after_it_expired_is_caught() {
    use medic_policy::ApprovalState::{Approved, Used};
    let mut h = History::new();
    // Requested at 10, pending until 610; approved at 700.
    h.approval_requested(1, "h1", "req-r1", 10);
    h.approval(1, "h1", Approved, None, 700);
    let p = h.grant_of(1, "h1", "r1", 710, "req-r1", Action::RebootHost, "ingest");
    h.approval(1, "h1", Used, Some(&p), 710);
    h.end(&p, 720);
    let v = h.check(&[]);
    only(&v, "approvals");
    assert!(
        v.violations
            .iter()
            .any(|x| x.message.contains("approved after it expired")),
        "{:#?}",
        v.violations
    );
}
