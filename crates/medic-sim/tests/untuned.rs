//! Scenarios no one tuned for: a slow burn, a zone outage with flapping
//! hosts inside it, half the agents cut off, and a rolling deploy. Their
//! worlds first (fast), then each short form against the real agent and
//! coordinator, with the invariant checker as the judge.

#![allow(clippy::unwrap_used)]

use medic_sim::model::{JobModel, World};
use medic_sim::{Options, RunResult, Scenario};

async fn run(name: &str) -> RunResult {
    run_scenario(Scenario::load(name).unwrap(), name).await
}

/// `s`'s short form, seed 1, its invariants held.
async fn run_scenario(s: Scenario, name: &str) -> RunResult {
    let r = medic_sim::run(
        s,
        &Options {
            seed: 1,
            short: true,
            ..Options::default()
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{name}: {e}"));
    assert!(
        r.verdict.ok(),
        "{name}: invariants violated\n{}",
        medic_sim::report::summary(&r)
    );
    r
}

#[test]
fn a_slow_burn_draws_more_failures_late_than_early() {
    let s = Scenario::load("slow-burn").unwrap();
    let w = World::build(&s, 1);
    let half = s.duration.secs() / 2.0;
    let (early, late): (Vec<f64>, Vec<f64>) = w
        .hosts
        .iter()
        .flat_map(|h| h.faults.iter().copied())
        .partition(|&t| t < half);
    // The rate climbs from 0.05 to 3 an hour: the second half has about
    // three times the first's faults.
    assert!(
        late.len() > 2 * early.len(),
        "{} early, {} late",
        early.len(),
        late.len()
    );
}

#[test]
fn a_zone_outage_sticks_every_host_of_that_zone_and_no_other() {
    let s = Scenario::load("zone-flapping").unwrap();
    let w = World::build(&s, 1);
    let mid = 20.0 * 60.0;
    for h in &w.hosts {
        let mut job = JobModel::new(h.clone(), 1);
        let stuck = job.stuck(mid);
        if h.labels.get("zone").map(String::as_str) == Some("z1") {
            assert!(stuck.is_some(), "{} in z1 not stuck", h.name);
        } else {
            assert_ne!(stuck, Some("zone down"), "{} outside z1 stuck", h.name);
        }
    }
    // The flapping hosts are all inside the zone.
    let flappers: Vec<_> = w.hosts.iter().filter(|h| h.flapping.is_some()).collect();
    assert_eq!(flappers.len(), 4);
    assert!(flappers.iter().all(|h| h.labels["zone"] == "z1"));
}

#[test]
fn a_rolling_deploy_restarts_every_job_once_one_host_after_the_other() {
    let s = Scenario::load("rolling-deploy").unwrap();
    let w = World::build(&s, 1);
    let starts: Vec<f64> = w.hosts.iter().map(|h| h.deploy.unwrap().0).collect();
    assert!(
        starts.windows(2).all(|p| p[0] < p[1]),
        "not one after the other"
    );
    assert!(starts[0] >= 5.0 * 60.0 && *starts.last().unwrap() < 25.0 * 60.0);
    let h = &w.hosts[3];
    let (from, back) = h.deploy.unwrap();
    let mut job = JobModel::new(h.clone(), 1);
    assert_eq!(job.stuck(from + 1.0), Some("deploy: job starting"));
    assert_eq!(job.stuck(back + 1.0), None, "the job came back by itself");
}

#[test]
fn scenario_errors_name_the_unknown_zone_and_the_missing_dependency() {
    let base = r#"
name = "t"
description = "t"
duration = "10m"
[fleet]
hosts = 10
zones = 2
"#;
    let e = Scenario::from_toml(&format!(
        "{base}[[incidents]]\nkind = \"zone\"\nat = \"1m\"\nduration = \"1m\"\nzone = \"z7\"\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(e.contains("incidents[0].zone") && e.contains("z7"), "{e}");
    let e = Scenario::from_toml(&format!(
        "{base}[[incidents]]\nkind = \"dependency-blip\"\nat = \"1m\"\nduration = \"1m\"\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("incidents[0]") && e.contains("[dependency]"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_burn_holds_every_invariant_and_remediates_as_failures_climb() {
    let r = run("slow-burn").await;
    assert!(r.medic.restarts > 0, "{}", medic_sim::report::summary(&r));
}

#[tokio::test(flavor = "multi_thread")]
async fn zone_outage_opens_that_zones_breaker_first() {
    let r = run("zone-flapping").await;
    let first = r.breakers.iter().find(|b| b.open);
    assert_eq!(
        first.map(|b| b.scope.as_str()),
        Some("zone=z1"),
        "{}",
        medic_sim::report::summary(&r)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn half_the_agents_cut_off_opens_the_liveness_drop_breaker_during_the_cut() {
    let r = run("half-cut-off").await;
    let (at, until) = (10.0 * 60.0, 25.0 * 60.0);
    assert!(
        r.breakers.iter().any(|b| b.open
            && b.cause.as_deref() == Some("liveness_drop")
            && b.t >= at
            && b.t < until),
        "{}",
        medic_sim::report::summary(&r)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rolling_deploy_does_not_make_remediation_pile_on() {
    let r = run("rolling-deploy").await;
    let summary = medic_sim::report::summary(&r);
    let medic = r.medic.restarts + r.medic.reboots;
    assert_eq!(r.medic.reboots, 0, "{summary}");
    assert!(medic <= r.scenario.fleet.hosts / 4, "{summary}");
    assert!(r.legacy.reboots > medic, "{summary}");
}

/// The same deploy without the agents' start grace: jobs slower to start
/// than `confirm` checks look stuck and are restarted mid-start. With it,
/// only real faults are.
#[tokio::test(flavor = "multi_thread")]
async fn a_start_grace_keeps_remediation_off_jobs_a_deploy_is_starting() {
    let with = run("rolling-deploy").await;
    let mut s = Scenario::load("rolling-deploy").unwrap();
    assert!(!s.agent.start_grace.0.is_zero());
    s.agent.start_grace.0 = std::time::Duration::ZERO;
    let without = run_scenario(s, "rolling-deploy without start_grace").await;
    let (a, b) = (
        medic_sim::report::summary(&with),
        medic_sim::report::summary(&without),
    );
    assert!(
        with.medic.restarts * 2 < without.medic.restarts,
        "with start_grace:\n{a}\nwithout:\n{b}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn coordinator_clock_jumping_an_hour_forward_and_back_breaks_no_invariant() {
    let r = run("clock-jump").await;
    let summary = medic_sim::report::summary(&r);
    let steps: Vec<bool> = r
        .history
        .iter()
        .filter_map(|e| match &e.event {
            Some(medic_policy::Event::ClockChecked { step: Some(s), .. }) => Some(s.forward),
            _ => None,
        })
        .collect();
    assert_eq!(
        steps,
        [true, false],
        "both steps recorded, in order\n{summary}"
    );
    assert!(r.medic.restarts > 0, "{summary}");
    // The report reads the coordinator's times back into scenario time.
    let end = r.scenario.duration.secs() + 60.0;
    assert!(r.denials_by_rule.iter().all(|d| d.last <= end), "{summary}");
}
