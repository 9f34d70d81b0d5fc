//! The pieces the comparison rests on: time scaling of the coordinator's
//! configuration, and the legacy script's model.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use medic_coordinator::CoordinatorConfig;
use medic_sim::Scenario;
use medic_sim::model::World;
use medic_sim::scenario::Scale;

#[test]
fn coordinator_durations_are_divided_by_the_speed_and_admission_multiplied() {
    let table: toml::Table = r#"
[fleet]
heartbeat_interval = "10s"
host_ttl = "30s"
warmup = "30s"
[limits.restart_job]
permit_ttl = "10m"
cooldown = "2m"
rate = { count = 60, per = "10m", burst = 10 }
"#
    .parse()
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = Scale(20.0).coordinator_toml(&table, dir.path());
    let c = CoordinatorConfig::from_toml(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let p = &c.policy;
    assert_eq!(p.fleet.heartbeat_interval, Duration::from_millis(500));
    assert_eq!(p.fleet.host_ttl, Duration::from_millis(1500));
    let r = p.limits(medic_policy::Action::RestartJob);
    assert_eq!(r.permit_ttl, Duration::from_secs(30));
    assert_eq!(r.cooldown, Duration::from_secs(6));
    assert_eq!(r.rate.per, Duration::from_secs(30));
    assert_eq!((r.rate.count, r.rate.burst), (60, 10));
    assert_eq!(c.server.tick_interval, Duration::from_millis(50));
    assert_eq!(c.server.state_dir, dir.path());
}

#[test]
fn legacy_script_reboots_every_stuck_host_at_every_run() {
    let s = Scenario::from_toml(
        r#"
name = "t"
description = "every host stuck for 10 minutes"
duration = "15m"
[fleet]
hosts = 10
reboot_time = { min = "2m", max = "2m" }
[jobs]
failure_rate_per_hour = 0
[[incidents]]
kind = "dependency"
at = "0s"
duration = "10m"
share = 1.0
"#,
    )
    .unwrap();
    let world = World::build(&s, 1);
    let legacy = medic_sim::legacy::run(&s, &world, 10.0);
    // Cron at 1m reboots all 10 (down 2m); back at 3m, still stuck,
    // rebooted again: at 1, 3, 5, 7 and 9 minutes.
    assert_eq!(legacy.reboots, 50);
    assert_eq!(legacy.max_reboots_in_flight, 10);
    assert_eq!(legacy.left_stuck, 0);
}

#[test]
fn the_same_seed_draws_the_same_world() {
    let s = Scenario::load("steady").unwrap();
    let a = World::build(&s, 7);
    let b = World::build(&s, 7);
    let c = World::build(&s, 8);
    let faults = |w: &World| w.hosts.iter().map(|h| h.faults.clone()).collect::<Vec<_>>();
    assert_eq!(faults(&a), faults(&b));
    assert_ne!(faults(&a), faults(&c));
}
