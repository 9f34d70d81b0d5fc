//! The cascade: a shared dependency with a capacity, reconnect bursts after
//! every restart and reboot, and a blip that the legacy script turns into a
//! long outage while medic and a bare reboot lock do not. The model's own
//! pieces first (fast, no agents), then the scenario's short form against
//! the real agent and coordinator.

#![allow(clippy::unwrap_used)]

use medic_sim::legacy::{Script, run_script};
use medic_sim::model::{Dependency, World};
use medic_sim::scenario::DependencySpec;
use medic_sim::{Options, Scenario};

fn spec(capacity: f64) -> DependencySpec {
    toml::from_str(&format!(
        r#"
capacity = {capacity}
steady_load = 1
reconnect_load = 5
reconnect_for = "2m"
recover_after = "2m"
"#
    ))
    .unwrap()
}

#[test]
fn dependency_recovers_only_after_its_demand_stays_within_capacity_for_recover_after() {
    // 10 jobs, capacity 20: steady demand 10; a blip from 60 s to 120 s.
    let mut d = Dependency::new(spec(20.0), vec![(60.0, 120.0)], &[true; 10]);
    assert!(!d.failing(59.0));
    assert!(d.failing(60.0));
    // The blip is over, but it needs 2 calm minutes.
    assert!(d.failing(200.0));
    assert!(!d.failing(241.0));
    // Five jobs reconnecting at once: 5 * 5 + 5 * 1 = 30 > 20.
    for i in 0..5 {
        d.reconnect(i, 300.0);
    }
    assert!((d.load() - 30.0).abs() < 1e-9);
    assert!(
        d.failing(301.0),
        "a reconnect storm beyond capacity must fail it"
    );
    // The bursts end at 420 s; calm from then, up at 540 s.
    assert!(d.failing(530.0));
    assert!(!d.failing(541.0));
    let out = d.outcome(600.0, &[(0.0, 0), (600.0, 0)]);
    assert_eq!(out.down.len(), 2, "{:?}", out.down);
    assert!(
        (out.down_minutes - (180.0 + 240.0) / 60.0).abs() < 0.1,
        "{out:?}"
    );
}

#[test]
fn a_host_going_down_takes_its_jobs_demand_away() {
    let mut d = Dependency::new(spec(100.0), vec![], &[true, true, false]);
    assert!((d.load() - 2.0).abs() < 1e-9, "the non-user adds nothing");
    d.disconnect(0, 10.0);
    assert!((d.load() - 1.0).abs() < 1e-9);
    d.reconnect(0, 20.0);
    d.reconnect(2, 20.0);
    assert!((d.load() - 6.0).abs() < 1e-9, "only users reconnect");
}

fn cascade() -> Scenario {
    Scenario::load("cascade").unwrap()
}

#[test]
fn legacy_script_turns_the_blip_into_a_long_outage_and_a_reboot_lock_does_not() {
    let s = cascade();
    let world = World::build(&s, 1);
    let legacy = run_script(&s, &world, 15.0, Script::Legacy);
    let lock = run_script(&s, &world, 15.0, Script::Lock { concurrency: 1 });
    let (ld, kd) = (
        legacy.dependency.as_ref().unwrap(),
        lock.dependency.as_ref().unwrap(),
    );
    // The blip (3 minutes) plus the 2 calm minutes it needs: 5 minutes.
    assert!((kd.down_minutes - 5.0).abs() < 0.1, "lock: {:?}", kd.down);
    assert!(lock.reboots <= 3, "lock rebooted {}", lock.reboots);
    assert!(
        ld.down_minutes > 3.0 * kd.down_minutes,
        "legacy {:.1} min vs lock {:.1} min",
        ld.down_minutes,
        kd.down_minutes
    );
    assert!(
        ld.peak_load > ld.capacity,
        "the reconnect storm never exceeded capacity"
    );
    assert!(legacy.stuck_host_minutes > 3.0 * lock.stuck_host_minutes);
}

#[test]
fn with_ample_capacity_the_legacy_script_no_longer_prolongs_the_blip() {
    // The same fleet and blip, a database that absorbs every reconnect
    // storm: the legacy script's outage is the blip's. The report's
    // figures come from the model, not from the scenario's story.
    let mut s = cascade();
    if let Some(d) = s.dependency.as_mut() {
        d.capacity = 2000.0;
    }
    let world = World::build(&s, 1);
    let legacy = run_script(&s, &world, 15.0, Script::Legacy);
    let d = legacy.dependency.unwrap();
    assert!((d.down_minutes - 5.0).abs() < 0.1, "{:?}", d.down);
    assert!(d.full_recovery_minutes.is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn cascade_report_shows_the_legacy_script_prolonging_the_outage_and_medic_not() {
    let r = medic_sim::run(
        cascade(),
        &Options {
            seed: 1,
            short: true,
            ..Options::default()
        },
    )
    .await
    .unwrap();
    let summary = medic_sim::report::summary(&r);
    assert!(r.verdict.ok(), "{summary}");
    let md = r.medic.dependency.as_ref().unwrap();
    let ld = r.legacy.dependency.as_ref().unwrap();
    // medic: the blip and its calm minutes, nothing more.
    assert!(md.down_minutes <= 5.5, "medic prolonged it:\n{summary}");
    assert!(md.full_recovery_minutes.is_some(), "{summary}");
    assert!(
        ld.down_minutes > 3.0 * md.down_minutes,
        "the legacy script did not prolong it:\n{summary}"
    );
    assert!(
        r.legacy.stuck_host_minutes > 3.0 * r.medic.stuck_host_minutes,
        "{summary}"
    );
    assert!(r.medic.reboots < r.legacy.reboots / 10, "{summary}");
    // The breaker stopped remediation, and the report says so per rule.
    assert!(
        r.denials_by_rule
            .iter()
            .any(|d| d.rule == "breaker_open" && d.count > 0),
        "{summary}"
    );
    // The report prints what the model measured.
    for needle in [
        format!("{:.1}", md.down_minutes),
        format!("{:.1}", ld.down_minutes),
        "time to full recovery".to_owned(),
        "breaker_open".to_owned(),
    ] {
        assert!(summary.contains(&needle), "{needle:?} missing:\n{summary}");
    }
    let html = medic_sim::report::html(&r);
    assert!(html.contains(r#"id="dependency""#), "no dependency chart");
}
