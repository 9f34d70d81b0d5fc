//! Conversions: domain → wire → domain is the identity, and bad wire input
//! is an error naming the field.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use medic_policy::{
    Action, ActionStatus, BreakerCause, BreakerScope, BreakerTrip, Decision, Denial, DenyReason,
    Event, Explanation, FencingToken, Heartbeat, HeartbeatReply, HostId, HostView, InvalidInput,
    Labels, Outcome, Pause, Permit, PermitId, PermitRef, PermitRequest, PermitState, Problem,
    Quarantine, QuarantineCause, RequestId, Scope, Status,
};
use prost::Message;

use super::{MAX_DURATION_SECS, from_duration, from_timestamp, to_duration, to_timestamp};
use crate::limits::{
    MAX_AGENT_VERSION_LEN, MAX_DETECTOR_LEN, MAX_HOST_ID_LEN, MAX_JOB_LEN, MAX_LABEL_KEY_LEN,
    MAX_LABEL_VALUE_LEN, MAX_LABELS, MAX_PERMIT_ID_LEN, MAX_PROBLEM_DETAIL_LEN, MAX_PROBLEMS,
    MAX_REASON_LEN, MAX_REQUEST_ID_LEN,
};
use crate::pb::v1 as pb;

// === Fixtures ===

/// An instant with sub-second precision, `secs` after the epoch.
fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::new(secs, 123_456_789)
}

fn host(id: &str) -> HostId {
    HostId::new(id).expect("fixture host ids are valid")
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn problem(job: &str) -> Problem {
    Problem {
        job: job.to_owned(),
        detector: "heartbeat_file".to_owned(),
        since: at(1_700_000_000),
        detail: "heartbeat file 12m old".to_owned(),
    }
}

fn permit() -> Permit {
    let token = FencingToken(42);
    Permit {
        id: PermitId::for_token(token),
        token,
        request_id: RequestId::new("req-7").expect("fixture request ids are valid"),
        host: host("web-1.use1"),
        action: Action::RebootHost,
        job: "ingest".to_owned(),
        reason: "heartbeat file 12m old, 2 restarts failed".to_owned(),
        labels: labels(&[("rack", "r12"), ("zone", "use1-az2")]),
        dry_run: true,
        granted_at: at(1_700_000_100),
        expires_at: at(1_700_000_400),
        ttl: Duration::from_secs(300),
        state: PermitState::Active,
    }
}

fn denial(retry_after: Option<Duration>) -> Denial {
    Denial {
        reason: DenyReason::GroupCap,
        retry_after,
        message: "rack=r12 has 2 of 2 reboots in flight".to_owned(),
    }
}

fn pause(until: Option<SystemTime>) -> Pause {
    Pause {
        id: 3,
        scope: Scope {
            selector: labels(&[("zone", "use1-az2")]),
            action: Some(Action::RebootHost),
        },
        actor: "alice".to_owned(),
        reason: "db-3 failover, INC-1234".to_owned(),
        since: at(1_700_000_000),
        until,
    }
}

fn quarantine() -> Quarantine {
    Quarantine {
        host: host("web-1.use1"),
        cause: QuarantineCause::PermitExpired,
        actor: "coordinator".to_owned(),
        reason: "permit p-000000000042 expired without an outcome".to_owned(),
        since: at(1_700_000_500),
    }
}

fn domain_breaker() -> BreakerTrip {
    BreakerTrip {
        scope: BreakerScope::Domain {
            label: "rack".to_owned(),
            value: "r12".to_owned(),
        },
        cause: BreakerCause::UnhealthyFraction,
        since: at(1_700_000_600),
        detail: "9 of 20 live hosts unhealthy (45%), threshold 25%".to_owned(),
        half_open: Some(medic_policy::HalfOpen {
            since: at(1_700_000_900),
            actor: "alice".to_owned(),
            reason: "switch replaced; probing with 1 permit at a time".to_owned(),
            successes: 2,
        }),
    }
}

fn heartbeat() -> Heartbeat {
    Heartbeat {
        state_error: None,
        host: host("web-1.use1"),
        labels: labels(&[("rack", "r12"), ("pool", "ingest")]),
        agent_version: "0.3.1".to_owned(),
        problems: vec![problem("ingest"), problem("shipper")],
        held_permit: Some(PermitRef {
            id: PermitId::for_token(FencingToken(42)),
            token: FencingToken(42),
        }),
        needs_human: Some("2 reboots did not fix ingest".to_owned()),
    }
}

fn wire_heartbeat() -> pb::HeartbeatRequest {
    heartbeat().into()
}

/// Asserts the conversion failed with exactly `expected` as its message.
#[track_caller]
fn assert_error<T: std::fmt::Debug>(result: Result<T, InvalidInput>, expected: &str) {
    match result {
        Ok(v) => panic!("expected error {expected:?}, got {v:?}"),
        Err(e) => assert_eq!(e.to_string(), expected),
    }
}

fn assert_err_has<T: std::fmt::Debug>(result: Result<T, InvalidInput>, expected: &str) {
    match result {
        Ok(v) => panic!("expected error {expected:?}, got {v:?}"),
        Err(e) => assert!(e.to_string().starts_with(expected), "{e}"),
    }
}

// === Round trips ===

#[test]
fn heartbeat_round_trips() {
    let wire = pb::HeartbeatRequest::from(heartbeat());
    assert_eq!(Heartbeat::try_from(wire), Ok(heartbeat()));
}

#[test]
fn heartbeat_without_permit_or_problems_round_trips() {
    let healthy = Heartbeat {
        problems: vec![],
        held_permit: None,
        needs_human: None,
        labels: Labels::new(),
        ..heartbeat()
    };
    let wire = pb::HeartbeatRequest::from(healthy.clone());
    assert_eq!(wire.held_permit, None);
    assert_eq!(wire.needs_human, None);
    assert_eq!(Heartbeat::try_from(wire), Ok(healthy));
}

#[test]
fn heartbeat_survives_encoding_to_bytes() {
    let bytes = wire_heartbeat().encode_to_vec();
    let decoded = pb::HeartbeatRequest::decode(bytes.as_slice()).expect("valid encoding");
    assert_eq!(Heartbeat::try_from(decoded), Ok(heartbeat()));
}

#[test]
fn heartbeat_reply_round_trips() {
    let reply = HeartbeatReply {
        heartbeat_interval: Duration::from_millis(2_500),
        held_permit_state: Some(PermitState::Revoked),
        quarantine: Some(quarantine()),
        dry_run: true,
        wake: 0x1234_5678_9abc_def0,
    };
    let wire = pb::HeartbeatResponse::from(reply.clone());
    assert_eq!(wire.wake, 0x1234_5678_9abc_def0);
    assert_eq!(HeartbeatReply::try_from(wire), Ok(reply));
}

#[test]
fn heartbeat_reply_from_a_coordinator_without_wake_reads_as_zero() {
    let wire = pb::HeartbeatResponse {
        heartbeat_interval: Some(to_duration(Duration::from_secs(10))),
        ..Default::default()
    };
    let reply = HeartbeatReply::try_from(wire).expect("valid reply");
    assert_eq!(reply.wake, 0);
}

#[test]
fn heartbeat_reply_without_permit_state_sends_unspecified() {
    let reply = HeartbeatReply {
        heartbeat_interval: Duration::from_secs(10),
        held_permit_state: None,
        quarantine: None,
        dry_run: false,
        wake: 7,
    };
    let wire = pb::HeartbeatResponse::from(reply.clone());
    assert_eq!(
        wire.held_permit_state,
        i32::from(pb::PermitState::Unspecified)
    );
    assert_eq!(HeartbeatReply::try_from(wire), Ok(reply));
}

#[test]
fn permit_request_round_trips() {
    let request = PermitRequest {
        dry_run: false,
        request_id: RequestId::new("3f2a-01").expect("valid"),
        host: host("web-1.use1"),
        action: Action::RestartJob,
        job: "ingest".to_owned(),
        reason: "heartbeat file 12m old".to_owned(),
    };
    let wire = pb::RequestPermitRequest::from(request.clone());
    assert_eq!(wire.action, i32::from(pb::Action::RestartJob));
    assert_eq!(PermitRequest::try_from(wire), Ok(request));
}

#[test]
fn permit_round_trips() {
    let wire = pb::Permit::from(permit());
    assert_eq!(wire.permit_id, "p-000000000042");
    assert_eq!(Permit::try_from(wire), Ok(permit()));
}

#[test]
fn granted_decision_round_trips_with_its_replay_flag() {
    for replayed in [false, true] {
        let decision = Decision::Granted {
            permit: permit(),
            replayed,
        };
        let wire = pb::RequestPermitResponse::from(decision.clone());
        assert_eq!(Decision::try_from(wire), Ok(decision));
    }
}

#[test]
fn denied_decision_round_trips_with_and_without_retry_after() {
    for retry_after in [None, Some(Duration::ZERO), Some(Duration::from_secs(90))] {
        let decision = Decision::Denied(denial(retry_after));
        let wire = pb::RequestPermitResponse::from(decision.clone());
        assert_eq!(Decision::try_from(wire), Ok(decision));
    }
}

#[test]
fn waiting_decision_round_trips_and_a_waiting_without_its_approval_is_refused() {
    let decision = Decision::Waiting(medic_policy::Waiting {
        approval: 4,
        retry_after: Duration::from_secs(10),
        expires_at: at(1_700_003_600),
        message: "waiting for a human to approve".into(),
    });
    let wire = pb::RequestPermitResponse::from(decision.clone());
    assert_eq!(Decision::try_from(wire.clone()), Ok(decision));
    let mut bad = wire;
    if let Some(pb::request_permit_response::Decision::Waiting(w)) = &mut bad.decision {
        w.approval_id = 0;
    }
    assert_error(
        Decision::try_from(bad),
        "response.waiting.approval_id: must be set",
    );
}

#[test]
fn approval_events_round_trip_through_a_history_entry_under_their_kind() {
    let requested = medic_policy::Approval {
        id: 3,
        request_id: RequestId::new("web-1-ingest-7").expect("valid"),
        host: HostId::new("web-1").expect("valid"),
        action: Action::declare("drain_host").expect("a valid name"),
        job: "ingest".into(),
        reason: "stuck".into(),
        dry_run: false,
        why: "every drain_host needs a human's approval".into(),
        requested_at: at(1_700_000_000),
        expires_at: at(1_700_003_600),
        state: medic_policy::ApprovalState::Pending,
        actor: String::new(),
        decision: String::new(),
        decided_at: None,
        permit: None,
    };
    let events = [
        Event::ApprovalRequested(requested),
        Event::ApprovalChanged {
            id: 3,
            host: HostId::new("web-1").expect("valid"),
            state: medic_policy::ApprovalState::Approved,
            actor: "alice".into(),
            reason: "checked".into(),
            expires_at: Some(at(1_700_000_900)),
            permit: None,
            at: at(1_700_000_060),
        },
        Event::ApprovalChanged {
            id: 3,
            host: HostId::new("web-1").expect("valid"),
            state: medic_policy::ApprovalState::Used,
            actor: "coordinator".into(),
            reason: "used by permit p-7".into(),
            expires_at: None,
            permit: Some(PermitId::for_token(FencingToken(7))),
            at: at(1_700_000_070),
        },
    ];
    for (id, event) in (1..).zip(events) {
        let wire = pb::Event::from_policy(id, event.clone());
        assert_eq!(wire.kind(), pb::EventKind::Approval);
        assert_eq!(wire.host_id, "web-1");
        assert_eq!(Event::try_from(wire), Ok(event));
    }
}

#[test]
fn denial_that_needs_a_human_has_no_retry_after_on_the_wire() {
    let wire = pb::Denial::from(denial(None));
    assert_eq!(wire.retry_after, None);
}

#[test]
fn scope_round_trips_for_fleet_selector_and_action() {
    let scopes = [
        Scope::fleet(),
        Scope {
            selector: labels(&[("rack", "r12")]),
            action: None,
        },
        Scope {
            selector: Labels::new(),
            action: Some(Action::RebootHost),
        },
    ];
    for scope in scopes {
        let wire = pb::Scope::from(scope.clone());
        assert_eq!(Scope::try_from(wire), Ok(scope));
    }
}

#[test]
fn pause_round_trips_with_and_without_expiry() {
    for until in [None, Some(at(1_700_003_600))] {
        let wire = pb::Pause::from(pause(until));
        assert_eq!(Pause::try_from(wire), Ok(pause(until)));
    }
}

#[test]
fn pause_without_scope_covers_the_fleet() {
    let wire = pb::Pause {
        scope: None,
        ..pb::Pause::from(pause(None))
    };
    let decoded = Pause::try_from(wire).expect("valid pause");
    assert_eq!(decoded.scope, Scope::fleet());
}

#[test]
fn quarantine_round_trips() {
    let wire = pb::Quarantine::from(quarantine());
    assert_eq!(Quarantine::try_from(wire), Ok(quarantine()));
}

#[test]
fn breaker_trip_round_trips_for_fleet_and_domain() {
    let fleet = BreakerTrip {
        scope: BreakerScope::Fleet,
        cause: BreakerCause::FailureFraction,
        ..domain_breaker()
    };
    for trip in [fleet, domain_breaker()] {
        let wire = pb::BreakerTrip::from(trip.clone());
        assert_eq!(BreakerTrip::try_from(wire), Ok(trip));
    }
}

#[test]
fn status_round_trips() {
    let status = Status {
        dry_run: false,
        warming_up_until: Some(at(1_700_000_060)),
        known_hosts: 50_000,
        live_hosts: 49_800,
        unhealthy_hosts: 120,
        silent_hosts: 7,
        quarantined_hosts: 4,
        min_fleet_size: 100,
        pauses: vec![pause(None)],
        overrides: vec![medic_policy::Override {
            id: 3,
            action: Action::declare("drain_host").expect("a valid name"),
            limit: medic_policy::OverrideLimit::MaxInFlight,
            value: 4,
            actor: "alice".into(),
            reason: "INC-7".into(),
            since: at(1_700_000_000),
            until: at(1_700_003_600),
        }],
        approvals: vec![
            medic_policy::Approval {
                id: 9,
                request_id: RequestId::new("web-1-ingest-7").expect("valid"),
                host: HostId::new("web-1").expect("valid"),
                action: Action::RebootHost,
                job: "ingest".into(),
                reason: "heartbeat file 12m old".into(),
                dry_run: true,
                why: "every reboot_host needs a human's approval".into(),
                requested_at: at(1_700_000_010),
                expires_at: at(1_700_003_610),
                state: medic_policy::ApprovalState::Pending,
                actor: String::new(),
                decision: String::new(),
                decided_at: None,
                permit: None,
            },
            medic_policy::Approval {
                id: 8,
                request_id: RequestId::new("web-2-ingest-3").expect("valid"),
                host: HostId::new("web-2").expect("valid"),
                action: Action::declare("drain_host").expect("a valid name"),
                job: "ingest".into(),
                reason: "stuck".into(),
                dry_run: false,
                why: "2 drain_host permits in flight would pass 1".into(),
                requested_at: at(1_700_000_000),
                expires_at: at(1_700_000_900),
                state: medic_policy::ApprovalState::Used,
                actor: "coordinator".into(),
                decision: "used by permit p-00000000000000000007".into(),
                decided_at: Some(at(1_700_000_100)),
                permit: Some(PermitId::for_token(FencingToken(7))),
            },
        ],
        breakers: vec![domain_breaker()],
        actions: vec![
            ActionStatus {
                dry_run: false,
                action: Action::RestartJob,
                active: 12,
                effective_cap: 500,
                rate_limit: 1_000,
                rate_per: Duration::from_secs(3_600),
                rate_used: 240,
                rate_next_at: None,
                in_window: true,
            },
            ActionStatus {
                dry_run: false,
                action: Action::RebootHost,
                active: 3,
                effective_cap: 3,
                rate_limit: 50,
                rate_per: Duration::from_secs(3_600),
                rate_used: 50,
                rate_next_at: Some(at(1_700_000_900)),
                in_window: false,
            },
        ],
    };
    let wire = pb::Status::from(status.clone());
    assert_eq!(Status::try_from(wire), Ok(status));
}

#[test]
fn host_view_round_trips_with_and_without_permit() {
    let busy = HostView {
        state_error: None,
        host: host("web-1.use1"),
        labels: labels(&[("rack", "r12")]),
        agent_version: "0.3.1".to_owned(),
        live: true,
        unhealthy: true,
        silent_since: Some(at(1_700_000_700)),
        last_heartbeat: Some(at(1_700_000_300)),
        problems: vec![problem("ingest")],
        active_permit: Some(PermitId::for_token(FencingToken(42))),
        quarantine: Some(quarantine()),
    };
    let idle = HostView {
        last_heartbeat: None,
        problems: vec![],
        active_permit: None,
        quarantine: None,
        ..busy.clone()
    };
    for view in [busy, idle] {
        let wire = pb::Host::from(view.clone());
        assert_eq!(HostView::try_from(wire), Ok(view));
    }
}

#[test]
fn explanation_round_trips_and_says_whether_it_would_grant() {
    let would_grant = Explanation {
        host: host("web-1.use1"),
        action: Action::RebootHost,
        denials: vec![],
        notes: vec!["gate db cannot be evaluated".to_owned()],
    };
    let would_deny = Explanation {
        denials: vec![
            Denial {
                reason: DenyReason::Paused,
                retry_after: None,
                message: "zone=use1-az2 is paused by alice".to_owned(),
            },
            denial(Some(Duration::from_secs(60))),
        ],
        ..would_grant.clone()
    };
    for explanation in [would_grant, would_deny] {
        let wire = pb::ExplainResponse::from(explanation.clone());
        assert_eq!(wire.would_grant, explanation.would_grant());
        assert_eq!(Explanation::try_from(wire), Ok(explanation));
    }
}

fn every_policy_event() -> Vec<Event> {
    let p = permit();
    vec![
        Event::PermitGranted { permit: p.clone() },
        Event::PermitRenewed {
            id: p.id.clone(),
            expires_at: at(1_700_000_700),
            at: at(1_700_000_400),
        },
        Event::PermitEnded {
            id: p.id.clone(),
            host: p.host.clone(),
            action: p.action,
            state: PermitState::Failed,
            actor: "host:web-1.use1".to_owned(),
            detail: "probe still failing: exit 2".to_owned(),
            at: at(1_700_000_800),
        },
        Event::PermitEnded {
            id: p.id.clone(),
            host: p.host.clone(),
            action: p.action,
            state: PermitState::Revoked,
            actor: "alice".to_owned(),
            detail: "wrong host".to_owned(),
            at: at(1_700_000_800),
        },
        Event::HostQuarantined(quarantine()),
        Event::HostReleased {
            host: p.host.clone(),
            actor: "bob".to_owned(),
            reason: "disk replaced".to_owned(),
            at: at(1_700_001_000),
        },
        Event::Paused(pause(Some(at(1_700_003_600)))),
        Event::Resumed {
            pause: pause(None),
            actor: "coordinator".to_owned(),
            reason: "expired".to_owned(),
            at: at(1_700_003_600),
        },
        Event::BreakerOpened(domain_breaker()),
        Event::BreakerClosed {
            scope: BreakerScope::Fleet,
            actor: "alice".to_owned(),
            reason: "db-3 is back".to_owned(),
            at: at(1_700_004_000),
        },
    ]
}

#[test]
fn every_policy_event_round_trips_through_a_history_entry() {
    for (id, event) in (1..).zip(every_policy_event()) {
        let wire = pb::Event::from_policy(id, event.clone());
        assert_eq!(wire.id, id);
        assert_eq!(wire.time, Some(to_timestamp(event.at())));
        assert_eq!(
            wire.host_id,
            event.host().map(|h| h.to_string()).unwrap_or_default()
        );
        assert_eq!(Event::try_from(wire), Ok(event));
    }
}

#[test]
fn history_entries_are_filed_under_their_kind() {
    let kinds: Vec<pb::EventKind> = every_policy_event()
        .into_iter()
        .map(|e| pb::Event::from_policy(1, e).kind())
        .collect();
    use pb::EventKind as K;
    assert_eq!(
        kinds,
        [
            K::Grant,
            K::Renew,
            K::Outcome,
            K::Admin,
            K::Quarantine,
            K::Quarantine,
            K::Pause,
            K::Pause,
            K::Breaker,
            K::Breaker,
        ]
    );
}

#[test]
fn grant_entry_names_the_host_as_actor_and_its_reason() {
    let wire = pb::Event::from_policy(7, Event::PermitGranted { permit: permit() });
    assert_eq!(wire.actor, "host:web-1.use1");
    assert_eq!(wire.reason, permit().reason);
}

#[test]
fn denied_entry_carries_the_denial_and_its_count() {
    let wire = pb::Event::denied(
        9,
        at(1_700_000_000),
        &host("web-1.use1"),
        Action::RebootHost,
        denial(Some(Duration::from_secs(30))),
        17,
    );
    assert_eq!(wire.kind(), pb::EventKind::Deny);
    assert_eq!(wire.host_id, "web-1.use1");
    let Some(pb::event::Payload::Denied(d)) = wire.payload else {
        panic!("expected a denied payload, got {:?}", wire.payload);
    };
    assert_eq!(d.count, 17);
    assert_eq!(d.action(), pb::Action::RebootHost);
    let sampled = Denial::try_from(d.denial.expect("set")).expect("valid denial");
    assert_eq!(sampled, denial(Some(Duration::from_secs(30))));
}

#[test]
fn config_reload_entry_is_ok_exactly_without_errors() {
    let failed = pb::Event::config_reloaded(
        10,
        at(1_700_000_000),
        "alice".to_owned(),
        "raise reboot cap".to_owned(),
        vec![pb::ConfigError {
            key: "actions.reboot_host.max_in_flight_percent".to_owned(),
            message: "must be within 0..=100, got 150".to_owned(),
        }],
    );
    let ok = pb::Event::config_reloaded(11, at(1_700_000_000), "alice".into(), "x".into(), vec![]);
    for (entry, expected) in [(failed, false), (ok, true)] {
        assert_eq!(entry.kind(), pb::EventKind::Config);
        let Some(pb::event::Payload::ConfigReloaded(c)) = entry.payload else {
            panic!("expected a config payload");
        };
        assert_eq!(c.ok, expected);
    }
}

#[test]
fn every_wire_deny_reason_mirrors_a_domain_reason_of_the_same_name() {
    let mut seen = 0;
    for raw in 1.. {
        let Ok(wire) = pb::DenyReason::try_from(raw) else {
            break;
        };
        let domain = DenyReason::try_from(wire).expect("every specified reason maps");
        assert_eq!(pb::DenyReason::from(domain), wire);
        assert_eq!(
            wire.as_str_name(),
            format!("DENY_REASON_{}", domain.as_str().to_uppercase())
        );
        seen += 1;
    }
    assert_eq!(
        seen,
        DenyReason::ALL.len(),
        "every medic_policy::DenyReason"
    );
}

#[test]
fn every_wire_permit_state_mirrors_a_domain_state_of_the_same_name() {
    let mut seen = 0;
    for raw in 1.. {
        let Ok(wire) = pb::PermitState::try_from(raw) else {
            break;
        };
        let domain = PermitState::try_from(wire).expect("every specified state maps");
        assert_eq!(pb::PermitState::from(domain), wire);
        assert_eq!(
            wire.as_str_name(),
            format!("PERMIT_STATE_{}", domain.as_str().to_uppercase())
        );
        seen += 1;
    }
    assert_eq!(seen, 7);
}

#[test]
fn actions_outcomes_and_causes_round_trip() {
    for a in Action::BUILTIN {
        let wire = pb::Action::try_from(crate::convert::wire_action(a)).expect("a wire value");
        assert_eq!(
            wire.as_str_name(),
            format!("ACTION_{}", a.as_str().to_uppercase())
        );
        assert_eq!(
            crate::convert::required_action("action", wire.into(), a.as_str()),
            Ok(a)
        );
    }
    for o in [
        Outcome::Succeeded,
        Outcome::Failed,
        Outcome::Aborted,
        Outcome::DryRun,
    ] {
        assert_eq!(Outcome::try_from(pb::Outcome::from(o)), Ok(o));
        // An outcome ends a permit in the state of the same name.
        assert_eq!(
            pb::Outcome::from(o)
                .as_str_name()
                .trim_start_matches("OUTCOME_"),
            pb::PermitState::from(o.final_state())
                .as_str_name()
                .trim_start_matches("PERMIT_STATE_")
        );
    }
    for c in [
        QuarantineCause::Manual,
        QuarantineCause::AttemptBudget,
        QuarantineCause::PermitExpired,
        QuarantineCause::GaveUp,
    ] {
        let wire = pb::QuarantineCause::from(c);
        assert_eq!(
            wire.as_str_name(),
            format!("QUARANTINE_CAUSE_{}", c.as_str().to_uppercase())
        );
        assert_eq!(QuarantineCause::try_from(wire), Ok(c));
    }
    for c in [
        BreakerCause::UnhealthyFraction,
        BreakerCause::FailureFraction,
        BreakerCause::LivenessDrop,
        BreakerCause::ProbeFailed,
    ] {
        assert_eq!(BreakerCause::try_from(pb::BreakerCause::from(c)), Ok(c));
    }
}

// === Times and durations ===

#[test]
fn instants_before_the_epoch_round_trip() {
    let before = UNIX_EPOCH - Duration::new(86_400, 250_000_000);
    let wire = to_timestamp(before);
    assert_eq!(
        wire,
        prost_types::Timestamp {
            seconds: -86_401,
            nanos: 750_000_000
        }
    );
    assert_eq!(from_timestamp("t", wire), Ok(before));
}

#[test]
fn instants_past_year_9999_saturate() {
    let far = UNIX_EPOCH + Duration::from_secs(400_000_000_000);
    let wire = to_timestamp(far);
    assert_eq!(wire.seconds, 253_402_300_799);
    assert!(from_timestamp("t", wire).is_ok());
}

#[test]
fn timestamp_with_nanos_out_of_range_names_the_field() {
    let bad = prost_types::Timestamp {
        seconds: 0,
        nanos: -1,
    };
    assert_error(
        from_timestamp("problems[0].since", bad),
        "problems[0].since: nanos must be within 0..=999999999, got -1",
    );
}

#[test]
fn timestamp_past_year_9999_names_the_field() {
    let bad = prost_types::Timestamp {
        seconds: 253_402_300_800,
        nanos: 0,
    };
    assert_error(
        from_timestamp("since", bad),
        "since: must be within 0001-01-01T00:00:00Z..=9999-12-31T23:59:59Z, got 253402300800s since the Unix epoch",
    );
}

#[test]
fn durations_round_trip_and_saturate_at_ten_thousand_years() {
    let d = Duration::new(90, 5);
    assert_eq!(from_duration("d", to_duration(d)), Ok(d));
    let huge = to_duration(Duration::from_secs(u64::MAX));
    assert_eq!(huge.seconds, MAX_DURATION_SECS);
    assert!(from_duration("d", huge).is_ok());
}

#[test]
fn negative_duration_names_the_field() {
    let bad = prost_types::Duration {
        seconds: -5,
        nanos: 0,
    };
    assert_error(
        from_duration("retry_after", bad),
        "retry_after: must not be negative, got -5s 0ns",
    );
}

// === Errors name the field ===

#[test]
fn heartbeat_without_host_id_names_the_field() {
    let wire = pb::HeartbeatRequest {
        host_id: String::new(),
        ..wire_heartbeat()
    };
    assert_error(
        Heartbeat::try_from(wire),
        "heartbeat.host_id: must not be empty",
    );
}

#[test]
fn heartbeat_with_whitespace_in_host_id_names_the_field() {
    let wire = pb::HeartbeatRequest {
        host_id: "web 1".to_owned(),
        ..wire_heartbeat()
    };
    assert_error(
        Heartbeat::try_from(wire),
        "heartbeat.host_id: must not contain whitespace or control characters, got \"web 1\"",
    );
}

#[test]
fn heartbeat_problem_without_since_names_its_index() {
    let mut wire = wire_heartbeat();
    wire.problems.push(pb::Problem {
        since: None,
        ..pb::Problem::from(problem("shipper"))
    });
    assert_error(
        Heartbeat::try_from(wire),
        "heartbeat.problems[2].since: must be set",
    );
}

#[test]
fn heartbeat_reporting_the_same_problem_twice_is_invalid_naming_both_indexes() {
    let mut wire = wire_heartbeat();
    let again = wire.problems[0].clone();
    wire.problems.push(again);
    let (job, detector) = (
        wire.problems[0].job.clone(),
        wire.problems[0].detector.clone(),
    );
    assert_error(
        Heartbeat::try_from(wire),
        &format!(
            "heartbeat.problems[2]: job {job:?}, detector {detector:?} is reported already as \
             problems[0]; a heartbeat reports each (job, detector) at most once"
        ),
    );
    // The same job with another detector is another problem.
    let mut wire = wire_heartbeat();
    let mut other = wire.problems[0].clone();
    other.detector = "another-detector".into();
    wire.problems.push(other);
    assert!(Heartbeat::try_from(wire).is_ok());
}

#[test]
fn heartbeat_problem_without_job_names_its_index() {
    let mut wire = wire_heartbeat();
    wire.problems[0].job = String::new();
    assert_error(
        Heartbeat::try_from(wire),
        "heartbeat.problems[0].job: must not be empty",
    );
}

#[test]
fn heartbeat_with_empty_label_key_names_the_label() {
    let mut wire = wire_heartbeat();
    wire.labels.insert(String::new(), "x".to_owned());
    assert_error(
        Heartbeat::try_from(wire),
        "heartbeat.labels[\"\"]: key must not be empty",
    );
}

#[test]
fn heartbeat_with_blank_label_value_names_the_label() {
    let mut wire = wire_heartbeat();
    wire.labels.insert("rack".to_owned(), "r 12".to_owned());
    assert_error(
        Heartbeat::try_from(wire),
        "heartbeat.labels[\"rack\"]: value must not contain whitespace or control characters, got \"r 12\"",
    );
}

#[test]
fn heartbeat_held_permit_without_id_names_the_field() {
    let mut wire = wire_heartbeat();
    wire.held_permit = Some(pb::PermitRef {
        permit_id: String::new(),
        fencing_token: 42,
    });
    assert_error(
        Heartbeat::try_from(wire),
        "heartbeat.held_permit.permit_id: must not be empty",
    );
}

fn wire_permit_request() -> pb::RequestPermitRequest {
    pb::RequestPermitRequest {
        dry_run: false,
        request_id: "3f2a-01".to_owned(),
        host_id: "web-1.use1".to_owned(),
        action: pb::Action::RebootHost.into(),
        action_name: String::new(),
        job: "ingest".to_owned(),
        reason: "2 restarts failed".to_owned(),
    }
}

#[test]
fn an_action_pair_reads_as_types_proto_says() {
    use crate::convert::{action_from_wire, required_action, wire_action};
    let custom = i32::from(pb::Action::Custom);
    let restart = i32::from(pb::Action::RestartJob);
    let drain = Action::declare("drain_host").expect("a valid name");
    // Old agents: the enum alone.
    assert_eq!(
        required_action("action", restart, ""),
        Ok(Action::RestartJob)
    );
    // Built-in named twice, consistently.
    assert_eq!(
        required_action("action", restart, "restart_job"),
        Ok(Action::RestartJob)
    );
    // Custom by ACTION_CUSTOM + name, or by name alone.
    assert_eq!(required_action("action", custom, "drain_host"), Ok(drain));
    assert_eq!(required_action("action", 0, "drain_host"), Ok(drain));
    assert_eq!(
        required_action("action", 0, "reboot_host"),
        Ok(Action::RebootHost)
    );
    // Replies fill both.
    assert_eq!(wire_action(drain), custom);
    // A filter with neither is "every action".
    assert_eq!(action_from_wire("action", 0, ""), Ok(None));
    assert_err_has(required_action("action", 0, ""), "action: must be set");
    assert_err_has(
        required_action("action", custom, ""),
        "action_name: must be set when action is ACTION_CUSTOM",
    );
    assert_err_has(
        required_action("action", custom, "restart_job"),
        "action_name: \"restart_job\" is a built-in action",
    );
    assert_err_has(
        required_action("action", restart, "drain_host"),
        "action_name: is \"drain_host\" but action is restart_job",
    );
    assert_err_has(
        required_action("request.action", custom, "Drain Host"),
        "request.action_name: invalid action name",
    );
    assert_err_has(required_action("action", 9, ""), "action: unknown value 9");
}

#[test]
fn a_custom_permit_request_round_trips() {
    let wire = pb::RequestPermitRequest {
        action: pb::Action::Custom.into(),
        action_name: "reimage".to_owned(),
        ..wire_permit_request()
    };
    let req = PermitRequest::try_from(wire).expect("a valid request");
    assert_eq!(req.action.as_str(), "reimage");
    let back = pb::RequestPermitRequest::from(req);
    assert_eq!(back.action, i32::from(pb::Action::Custom));
    assert_eq!(back.action_name, "reimage");
}

#[test]
fn permit_request_without_host_id_names_the_field() {
    let wire = pb::RequestPermitRequest {
        host_id: String::new(),
        ..wire_permit_request()
    };
    assert_error(
        PermitRequest::try_from(wire),
        "request.host_id: must not be empty",
    );
}

#[test]
fn permit_request_without_action_names_the_field() {
    let wire = pb::RequestPermitRequest {
        action: pb::Action::Unspecified.into(),
        ..wire_permit_request()
    };
    assert_error(PermitRequest::try_from(wire), "request.action: must be set");
}

#[test]
fn permit_request_with_unknown_action_names_the_value() {
    let wire = pb::RequestPermitRequest {
        action: 9,
        ..wire_permit_request()
    };
    assert_error(
        PermitRequest::try_from(wire),
        "request.action: unknown value 9 (the peer may speak a newer medic.v1)",
    );
}

#[test]
fn permit_request_without_request_id_names_the_field() {
    let wire = pb::RequestPermitRequest {
        request_id: String::new(),
        ..wire_permit_request()
    };
    assert_error(
        PermitRequest::try_from(wire),
        "request.request_id: must not be empty",
    );
}

#[test]
fn permit_request_with_blank_reason_names_the_field() {
    let wire = pb::RequestPermitRequest {
        reason: "  ".to_owned(),
        ..wire_permit_request()
    };
    assert_error(
        PermitRequest::try_from(wire),
        "request.reason: must not be empty",
    );
}

#[test]
fn decision_with_neither_grant_nor_denial_says_what_may_be_set() {
    let wire = pb::RequestPermitResponse { decision: None };
    assert_error(
        Decision::try_from(wire),
        "response.decision: must be set (granted, denied or waiting)",
    );
}

#[test]
fn grant_whose_permit_lacks_a_ttl_names_the_path() {
    let mut wire = pb::RequestPermitResponse::from(Decision::Granted {
        permit: permit(),
        replayed: false,
    });
    if let Some(pb::request_permit_response::Decision::Granted(g)) = &mut wire.decision {
        g.permit.as_mut().expect("set").ttl = None;
    }
    assert_error(
        Decision::try_from(wire),
        "response.granted.permit.ttl: must be set",
    );
}

#[test]
fn grant_without_permit_names_the_path() {
    let wire = pb::RequestPermitResponse {
        decision: Some(pb::request_permit_response::Decision::Granted(pb::Grant {
            permit: None,
            replayed: true,
        })),
    };
    assert_error(
        Decision::try_from(wire),
        "response.granted.permit: must be set",
    );
}

#[test]
fn denial_with_negative_retry_after_names_the_path() {
    let mut wire = pb::RequestPermitResponse::from(Decision::Denied(denial(None)));
    if let Some(pb::request_permit_response::Decision::Denied(d)) = &mut wire.decision {
        d.retry_after = Some(prost_types::Duration {
            seconds: -5,
            nanos: 0,
        });
    }
    assert_error(
        Decision::try_from(wire),
        "response.denied.retry_after: must not be negative, got -5s 0ns",
    );
}

#[test]
fn denial_without_reason_names_the_path() {
    let mut wire = pb::RequestPermitResponse::from(Decision::Denied(denial(None)));
    if let Some(pb::request_permit_response::Decision::Denied(d)) = &mut wire.decision {
        d.reason = pb::DenyReason::Unspecified.into();
    }
    assert_error(
        Decision::try_from(wire),
        "response.denied.reason: must be set",
    );
}

#[test]
fn heartbeat_reply_with_zero_interval_is_rejected() {
    let wire = pb::HeartbeatResponse {
        heartbeat_interval: Some(prost_types::Duration::default()),
        held_permit_state: 0,
        quarantine: None,
        dry_run: false,
        wake: 0,
    };
    assert_error(
        HeartbeatReply::try_from(wire),
        "response.heartbeat_interval: must be positive, got 0s",
    );
}

#[test]
fn heartbeat_reply_with_unknown_permit_state_names_the_field() {
    let wire = pb::HeartbeatResponse {
        heartbeat_interval: Some(to_duration(Duration::from_secs(10))),
        held_permit_state: 99,
        quarantine: None,
        dry_run: false,
        wake: 0,
    };
    assert_error(
        HeartbeatReply::try_from(wire),
        "response.held_permit_state: unknown value 99 (the peer may speak a newer medic.v1)",
    );
}

#[test]
fn breaker_scope_without_kind_says_what_may_be_set() {
    let wire = pb::BreakerTrip {
        scope: Some(pb::BreakerScope { kind: None }),
        ..pb::BreakerTrip::from(domain_breaker())
    };
    assert_error(
        BreakerTrip::try_from(wire),
        "scope.kind: must be set (fleet or domain)",
    );
}

#[test]
fn breaker_domain_without_value_names_the_field() {
    let wire = pb::BreakerScope {
        kind: Some(pb::breaker_scope::Kind::Domain(pb::breaker_scope::Domain {
            label: "rack".to_owned(),
            value: String::new(),
        })),
    };
    assert_error(
        BreakerScope::try_from(wire),
        "domain.value: must not be empty",
    );
}

#[test]
fn status_with_bad_pause_names_its_index() {
    let mut wire = pb::Status::from(Status {
        approvals: Vec::new(),
        dry_run: false,
        warming_up_until: None,
        known_hosts: 0,
        live_hosts: 0,
        unhealthy_hosts: 0,
        silent_hosts: 0,
        quarantined_hosts: 0,
        min_fleet_size: 0,
        pauses: vec![pause(None), pause(None)],
        overrides: Vec::new(),
        breakers: vec![],
        actions: vec![],
    });
    wire.pauses[1].since = None;
    assert_error(Status::try_from(wire), "pauses[1].since: must be set");
}

#[test]
fn history_entry_without_payload_names_the_field() {
    let wire = pb::Event {
        payload: None,
        ..pb::Event::from_policy(1, Event::BreakerOpened(domain_breaker()))
    };
    assert_error(Event::try_from(wire), "payload: must be set");
}

#[test]
fn sampled_denials_are_not_policy_events() {
    let wire = pb::Event::denied(
        1,
        at(1),
        &host("web-1.use1"),
        Action::RestartJob,
        denial(None),
        1,
    );
    assert_error(
        Event::try_from(wire),
        "denied: is a coordinator record, not a decision-engine event",
    );
}

#[test]
fn permit_ended_entry_in_active_state_is_rejected() {
    let mut wire = pb::Event::from_policy(1, every_policy_event().remove(2));
    if let Some(pb::event::Payload::PermitEnded(e)) = &mut wire.payload {
        e.state = pb::PermitState::Active.into();
    }
    assert_error(
        Event::try_from(wire),
        "permit_ended.state: must be a final state, got active",
    );
}

#[test]
fn granted_entry_with_bad_permit_names_the_path() {
    let mut wire = pb::Event::from_policy(1, Event::PermitGranted { permit: permit() });
    if let Some(pb::event::Payload::PermitGranted(g)) = &mut wire.payload {
        g.permit.as_mut().expect("set").host_id = String::new();
    }
    assert_error(
        Event::try_from(wire),
        "permit_granted.permit.host_id: must not be empty",
    );
}

#[test]
fn explanation_whose_flag_contradicts_its_denials_is_rejected() {
    let mut wire = pb::ExplainResponse::from(Explanation {
        host: host("web-1.use1"),
        action: Action::RestartJob,
        denials: vec![denial(None)],
        notes: vec![],
    });
    wire.would_grant = true;
    assert_error(
        Explanation::try_from(wire),
        "response.would_grant: is true but 1 denials are listed; it must be true exactly when denials is empty",
    );
}

#[test]
fn permit_with_unspecified_state_names_the_field() {
    let wire = pb::Permit {
        state: 0,
        ..pb::Permit::from(permit())
    };
    assert_error(Permit::try_from(wire), "state: must be set");
}

#[test]
fn host_view_with_bad_active_permit_id_names_the_field() {
    let wire = pb::Host {
        host_id: "web-1.use1".to_owned(),
        active_permit_id: "p 1".to_owned(),
        ..pb::Host::default()
    };
    assert_error(
        HostView::try_from(wire),
        "active_permit_id: must not contain whitespace or control characters, got \"p 1\"",
    );
}

// === Request limits ===

/// `n` labels `k000=v`, `k001=v`, ...
fn many_labels(n: usize) -> std::collections::BTreeMap<String, String> {
    (0..n)
        .map(|i| (format!("k{i:03}"), "v".to_owned()))
        .collect()
}

/// `n` problems of distinct jobs.
fn many_problems(n: usize) -> Vec<pb::Problem> {
    (0..n)
        .map(|i| pb::Problem::from(problem(&format!("job-{i}"))))
        .collect()
}

/// Asserts that `convert` accepts text of exactly `max` bytes and rejects
/// `max + 1` bytes with `field: must be at most {max} bytes, got {max + 1}`.
#[track_caller]
fn assert_text_limit<T: std::fmt::Debug>(
    field: &str,
    max: usize,
    convert: impl Fn(String) -> Result<T, InvalidInput>,
) {
    if let Err(e) = convert("x".repeat(max)) {
        panic!("{field}: {max} bytes must be accepted, got {e}");
    }
    assert_error(
        convert("x".repeat(max + 1)),
        &format!("{field}: must be at most {max} bytes, got {}", max + 1),
    );
}

#[test]
fn heartbeat_with_too_many_labels_is_rejected_naming_the_field() {
    let at_limit = pb::HeartbeatRequest {
        labels: many_labels(MAX_LABELS),
        ..wire_heartbeat()
    };
    assert!(Heartbeat::try_from(at_limit).is_ok());
    let over = pb::HeartbeatRequest {
        labels: many_labels(MAX_LABELS + 1),
        ..wire_heartbeat()
    };
    assert_error(
        Heartbeat::try_from(over),
        "heartbeat.labels: at most 64 labels, got 65",
    );
}

#[test]
fn heartbeat_with_too_long_label_key_is_rejected_naming_the_field() {
    let with_key = |len: usize| {
        let mut wire = wire_heartbeat();
        wire.labels.insert("k".repeat(len), "v".to_owned());
        Heartbeat::try_from(wire)
    };
    assert!(with_key(MAX_LABEL_KEY_LEN).is_ok());
    // The key is quoted by its start only: the error stays small.
    assert_error(
        with_key(MAX_LABEL_KEY_LEN + 1),
        &format!(
            "heartbeat.labels: key {:?}... must be at most 128 bytes, got 129",
            "k".repeat(32)
        ),
    );
}

#[test]
fn heartbeat_with_too_long_label_value_is_rejected_naming_the_label() {
    let with_value = |len: usize| {
        let mut wire = wire_heartbeat();
        wire.labels.insert("rack".to_owned(), "r".repeat(len));
        Heartbeat::try_from(wire)
    };
    assert!(with_value(MAX_LABEL_VALUE_LEN).is_ok());
    assert_error(
        with_value(MAX_LABEL_VALUE_LEN + 1),
        "heartbeat.labels[\"rack\"]: value must be at most 256 bytes, got 257",
    );
}

#[test]
fn heartbeat_with_too_many_problems_is_rejected_naming_the_field() {
    let at_limit = pb::HeartbeatRequest {
        problems: many_problems(MAX_PROBLEMS),
        ..wire_heartbeat()
    };
    assert!(Heartbeat::try_from(at_limit).is_ok());
    let over = pb::HeartbeatRequest {
        problems: many_problems(MAX_PROBLEMS + 1),
        ..wire_heartbeat()
    };
    assert_error(
        Heartbeat::try_from(over),
        "heartbeat.problems: at most 64 problems, got 65",
    );
}

#[test]
fn heartbeat_problem_with_too_long_job_is_rejected_naming_its_index() {
    assert_text_limit("heartbeat.problems[1].job", MAX_JOB_LEN, |text| {
        let mut wire = wire_heartbeat();
        wire.problems[1].job = text;
        Heartbeat::try_from(wire)
    });
}

#[test]
fn heartbeat_problem_with_too_long_detector_is_rejected_naming_its_index() {
    assert_text_limit("heartbeat.problems[0].detector", MAX_DETECTOR_LEN, |text| {
        let mut wire = wire_heartbeat();
        wire.problems[0].detector = text;
        Heartbeat::try_from(wire)
    });
}

#[test]
fn heartbeat_problem_with_too_long_detail_is_rejected_naming_its_index() {
    assert_text_limit(
        "heartbeat.problems[1].detail",
        MAX_PROBLEM_DETAIL_LEN,
        |text| {
            let mut wire = wire_heartbeat();
            wire.problems[1].detail = text;
            Heartbeat::try_from(wire)
        },
    );
}

#[test]
fn heartbeat_with_too_long_agent_version_is_rejected_naming_the_field() {
    assert_text_limit("heartbeat.agent_version", MAX_AGENT_VERSION_LEN, |text| {
        Heartbeat::try_from(pb::HeartbeatRequest {
            agent_version: text,
            ..wire_heartbeat()
        })
    });
}

#[test]
fn heartbeat_with_too_long_needs_human_is_rejected_naming_the_field() {
    assert_text_limit("heartbeat.needs_human", MAX_REASON_LEN, |text| {
        Heartbeat::try_from(pb::HeartbeatRequest {
            needs_human: Some(text),
            ..wire_heartbeat()
        })
    });
}

#[test]
fn permit_request_with_too_long_job_is_rejected_naming_the_field() {
    assert_text_limit("request.job", MAX_JOB_LEN, |text| {
        PermitRequest::try_from(pb::RequestPermitRequest {
            job: text,
            ..wire_permit_request()
        })
    });
}

#[test]
fn permit_request_with_too_long_reason_is_rejected_naming_the_field() {
    assert_text_limit("request.reason", MAX_REASON_LEN, |text| {
        PermitRequest::try_from(pb::RequestPermitRequest {
            reason: text,
            ..wire_permit_request()
        })
    });
}

#[test]
fn text_limits_count_bytes_not_characters() {
    // "é" is 2 bytes of UTF-8: 512 of them fill a 1024-byte reason.
    let reason = |n: usize| {
        PermitRequest::try_from(pb::RequestPermitRequest {
            reason: "é".repeat(n),
            ..wire_permit_request()
        })
    };
    assert!(reason(MAX_REASON_LEN / 2).is_ok());
    assert_error(
        reason(MAX_REASON_LEN / 2 + 1),
        "request.reason: must be at most 1024 bytes, got 1026",
    );
}

#[test]
fn id_limits_are_the_ones_medic_policy_enforces() {
    for (max, parse) in [
        (
            MAX_HOST_ID_LEN,
            (|s: String| HostId::new(s).map(drop)) as fn(String) -> Result<(), InvalidInput>,
        ),
        (MAX_REQUEST_ID_LEN, |s| RequestId::new(s).map(drop)),
        (MAX_PERMIT_ID_LEN, |s| PermitId::parse(s).map(drop)),
    ] {
        assert!(parse("x".repeat(max)).is_ok(), "{max} bytes accepted");
        assert!(
            parse("x".repeat(max + 1)).is_err(),
            "{max} + 1 bytes rejected"
        );
    }
}

#[test]
fn heartbeat_at_every_limit_is_accepted_and_encodes_under_128_kib() {
    let text = |n: usize| "x".repeat(n);
    let wire = pb::HeartbeatRequest {
        state_error: None,
        host_id: text(MAX_HOST_ID_LEN),
        labels: (0..MAX_LABELS)
            .map(|i| {
                let key = format!("{i:03}{}", text(MAX_LABEL_KEY_LEN - 3));
                (key, text(MAX_LABEL_VALUE_LEN))
            })
            .collect(),
        agent_version: text(MAX_AGENT_VERSION_LEN),
        problems: (0..MAX_PROBLEMS)
            .map(|i| pb::Problem {
                job: format!("{i:03}{}", text(MAX_JOB_LEN - 3)),
                detector: text(MAX_DETECTOR_LEN),
                since: Some(to_timestamp(at(1_700_000_000))),
                detail: text(MAX_PROBLEM_DETAIL_LEN),
            })
            .collect(),
        held_permit: Some(pb::PermitRef {
            permit_id: text(MAX_PERMIT_ID_LEN),
            fencing_token: u64::MAX,
        }),
        needs_human: Some(text(MAX_REASON_LEN)),
    };
    let size = wire.encoded_len();
    assert!(Heartbeat::try_from(wire).is_ok());
    assert!(size < 128 * 1024, "{size} bytes");
}

#[test]
fn responses_are_not_held_to_request_limits() {
    // A newer coordinator may allow more: its replies must still be read.
    let wire = pb::Host {
        labels: many_labels(MAX_LABELS + 1),
        problems: many_problems(MAX_PROBLEMS + 1),
        agent_version: "x".repeat(MAX_AGENT_VERSION_LEN + 1),
        ..pb::Host::from(HostView {
            state_error: None,
            host: host("web-1.use1"),
            labels: Labels::new(),
            agent_version: String::new(),
            live: true,
            unhealthy: true,
            silent_since: None,
            last_heartbeat: None,
            problems: vec![],
            active_permit: None,
            quarantine: None,
        })
    };
    assert!(HostView::try_from(wire).is_ok());
    let mut permit = pb::Permit::from(permit());
    permit.reason = "x".repeat(MAX_REASON_LEN + 1);
    assert!(Permit::try_from(permit).is_ok());
}

// === The descriptor set ===

#[test]
fn descriptor_set_describes_both_services() {
    let set = prost_types::FileDescriptorSet::decode(crate::FILE_DESCRIPTOR_SET)
        .expect("the embedded descriptor set decodes");
    let services: Vec<String> = set
        .file
        .iter()
        .filter(|f| f.package() == "medic.v1")
        .flat_map(|f| f.service.iter().map(|s| s.name().to_owned()))
        .collect();
    assert_eq!(services, ["Remediation", "Admin"]);
    // Imports are included, so reflection can resolve Timestamp and Duration.
    assert!(
        set.file
            .iter()
            .any(|f| f.name() == "google/protobuf/timestamp.proto")
    );
}

// === Identifiers must be visible (issue 14) ===

/// The characters of the report: a right-to-left override, a zero-width
/// space, a first-strong isolate, a byte-order mark.
const INVISIBLE: [(char, &str); 4] = [
    ('\u{202E}', "U+202E"),
    ('\u{200B}', "U+200B"),
    ('\u{2068}', "U+2068"),
    ('\u{FEFF}', "U+FEFF"),
];

#[track_caller]
fn assert_invisible_refused<T: std::fmt::Debug>(
    result: Result<T, InvalidInput>,
    field: &str,
    code: &str,
) {
    match result {
        Ok(v) => panic!("expected {field} refused for {code}, got {v:?}"),
        Err(e) => {
            let text = e.to_string();
            assert!(
                text.starts_with(&format!("{field}: must not contain invisible characters")),
                "{text}"
            );
            assert!(text.contains(&format!("(holds {code})")), "{text}");
        }
    }
}

#[test]
fn heartbeat_with_bidi_override_or_zero_width_characters_in_host_id_names_the_field() {
    for (c, code) in INVISIBLE {
        let wire = pb::HeartbeatRequest {
            host_id: format!("web-1{c}.use1"),
            ..wire_heartbeat()
        };
        assert_invisible_refused(Heartbeat::try_from(wire), "heartbeat.host_id", code);
    }
}

#[test]
fn heartbeat_with_invisible_characters_in_a_label_names_the_label() {
    for (c, code) in INVISIBLE {
        let mut wire = wire_heartbeat();
        wire.labels.insert("rack".to_owned(), format!("r12{c}"));
        assert_invisible_refused(
            Heartbeat::try_from(wire),
            "heartbeat.labels[\"rack\"]",
            code,
        );
        let mut wire = wire_heartbeat();
        wire.labels.insert(format!("ra{c}ck"), "r12".to_owned());
        assert_invisible_refused(
            Heartbeat::try_from(wire),
            &format!("heartbeat.labels[{:?}]", format!("ra{c}ck")),
            code,
        );
    }
}

#[test]
fn heartbeat_problem_with_invisible_job_or_detector_names_its_index() {
    let mut wire = wire_heartbeat();
    wire.problems[1].job = "ingest\u{200D}".to_owned();
    assert_invisible_refused(
        Heartbeat::try_from(wire),
        "heartbeat.problems[1].job",
        "U+200D",
    );
    let mut wire = wire_heartbeat();
    wire.problems[0].detector = "probe\u{2066}".to_owned();
    assert_invisible_refused(
        Heartbeat::try_from(wire),
        "heartbeat.problems[0].detector",
        "U+2066",
    );
}

#[test]
fn permit_request_with_invisible_characters_in_an_identifier_names_the_field() {
    for (c, code) in INVISIBLE {
        let wire = pb::RequestPermitRequest {
            host_id: format!("{c}web-1.use1"),
            ..wire_permit_request()
        };
        assert_invisible_refused(PermitRequest::try_from(wire), "request.host_id", code);
        let wire = pb::RequestPermitRequest {
            job: format!("ingest{c}"),
            ..wire_permit_request()
        };
        assert_invisible_refused(PermitRequest::try_from(wire), "request.job", code);
        let wire = pb::RequestPermitRequest {
            request_id: format!("3f2a{c}-01"),
            ..wire_permit_request()
        };
        assert_invisible_refused(PermitRequest::try_from(wire), "request.request_id", code);
    }
}

#[test]
fn free_text_may_hold_direction_marks_and_responses_are_read_as_sent() {
    // A reason is prose, which right-to-left scripts write with marks.
    let wire = pb::RequestPermitRequest {
        reason: "\u{5D3}\u{5D9}\u{5E1}\u{5E7} \u{200F}full".to_owned(),
        ..wire_permit_request()
    };
    PermitRequest::try_from(wire).expect("a reason may hold a direction mark");
    // Responses are read without the request bounds, so a client keeps
    // working with ids an older coordinator accepted.
    let mut p = permit();
    p.host = host("web-1\u{200B}.use1");
    let back = Permit::try_from(pb::Permit::from(p.clone())).expect("responses are read");
    assert_eq!(back, p);
}
