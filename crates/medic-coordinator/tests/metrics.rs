//! The breaker and host gauges follow the engine's status: open and
//! half-open breakers are told apart, open ones are counted by cause, and
//! silent hosts have their own gauge.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, SystemTime};

use medic_coordinator::metrics::Metrics;
use medic_policy::{BreakerCause, BreakerScope, BreakerTrip, HalfOpen, Status};

fn status(breakers: Vec<BreakerTrip>, silent_hosts: u32) -> Status {
    Status {
        dry_run: false,
        warming_up_until: None,
        known_hosts: 10,
        live_hosts: 10 - silent_hosts,
        unhealthy_hosts: 0,
        silent_hosts,
        quarantined_hosts: 0,
        min_fleet_size: 0,
        pauses: Vec::new(),
        overrides: Vec::new(),
        approvals: Vec::new(),
        breakers,
        actions: Vec::new(),
    }
}

fn trip(scope: BreakerScope, cause: BreakerCause, half_open: bool) -> BreakerTrip {
    let since = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    BreakerTrip {
        scope,
        cause,
        since,
        detail: String::new(),
        half_open: half_open.then(|| HalfOpen {
            since,
            actor: "coordinator".into(),
            reason: "condition cleared".into(),
            successes: 1,
        }),
    }
}

fn rack(value: &str) -> BreakerScope {
    BreakerScope::Domain {
        label: "rack".into(),
        value: value.into(),
    }
}

/// The value of the series `line` starts with, or a failure naming it.
fn value(body: &str, series: &str) -> i64 {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in\n{body}"))
        .parse()
        .unwrap()
}

#[test]
fn breaker_metrics_exist_at_zero_for_every_cause_before_any_status() {
    let body = Metrics::new().encode();
    for cause in BreakerCause::ALL {
        let series = format!("medic_breaker_open{{cause=\"{}\"}}", cause.as_str());
        assert_eq!(value(&body, &series), 0);
    }
    assert_eq!(value(&body, "medic_breakers_open"), 0);
    assert_eq!(value(&body, "medic_breakers_half_open"), 0);
    assert_eq!(value(&body, "medic_breaker_fleet_open"), 0);
    assert_eq!(value(&body, "medic_hosts_silent"), 0);
}

#[test]
fn breaker_metrics_count_open_and_half_open_breakers_apart() {
    let m = Metrics::new();
    m.set_status(&status(
        vec![
            trip(BreakerScope::Fleet, BreakerCause::LivenessDrop, false),
            trip(rack("r1"), BreakerCause::FailureFraction, false),
            trip(rack("r2"), BreakerCause::ProbeFailed, false),
            trip(rack("r3"), BreakerCause::UnhealthyFraction, true),
        ],
        3,
    ));
    let body = m.encode();
    assert_eq!(value(&body, "medic_breakers_open"), 3);
    assert_eq!(value(&body, "medic_breakers_half_open"), 1);
    assert_eq!(value(&body, "medic_breaker_fleet_open"), 1);
    assert_eq!(
        value(&body, "medic_breaker_open{cause=\"liveness_drop\"}"),
        1
    );
    assert_eq!(
        value(&body, "medic_breaker_open{cause=\"failure_fraction\"}"),
        1
    );
    assert_eq!(
        value(&body, "medic_breaker_open{cause=\"probe_failed\"}"),
        1
    );
    assert_eq!(
        value(&body, "medic_breaker_open{cause=\"unhealthy_fraction\"}"),
        0,
        "a half-open breaker is not counted as open"
    );
    assert_eq!(value(&body, "medic_hosts_silent"), 3);

    // The fleet breaker goes half-open, the rest close: the gauges follow
    // and the per-cause series drop back to 0.
    m.set_status(&status(
        vec![trip(BreakerScope::Fleet, BreakerCause::LivenessDrop, true)],
        0,
    ));
    let body = m.encode();
    assert_eq!(value(&body, "medic_breakers_open"), 0);
    assert_eq!(value(&body, "medic_breakers_half_open"), 1);
    assert_eq!(
        value(&body, "medic_breaker_fleet_open"),
        0,
        "a half-open fleet breaker is not open"
    );
    for cause in BreakerCause::ALL {
        let series = format!("medic_breaker_open{{cause=\"{}\"}}", cause.as_str());
        assert_eq!(value(&body, &series), 0, "{series}");
    }
    assert_eq!(value(&body, "medic_hosts_silent"), 0);

    m.set_status(&status(Vec::new(), 0));
    assert_eq!(value(&m.encode(), "medic_breakers_half_open"), 0);
}

#[test]
fn decisions_on_undeclared_actions_share_one_series_whatever_name_the_caller_sent() {
    let m = Metrics::new();
    for name in ["made_up_a", "made_up_b", "made_up_c"] {
        m.decision(
            medic_policy::Action::from_wire(name).unwrap(),
            "unknown_action",
        );
    }
    let body = m.encode();
    assert_eq!(
        value(
            &body,
            r#"medic_decisions_total{action="undeclared",outcome="unknown_action"}"#
        ),
        3
    );
    assert!(!body.contains("made_up"), "{body}");
}
