//! `medic-sim sweep`: the grid, the overrides reaching the coordinator, and
//! bad keys and values refused by name before anything runs.

#![allow(clippy::unwrap_used)]

use medic_sim::sweep::{Axis, apply, grid, label, sweep};
use medic_sim::{Options, Scenario};

#[test]
fn set_reads_a_dotted_key_and_comma_separated_toml_values() {
    let a = Axis::parse("limits.restart_job.cooldown=2m, 5m").unwrap();
    assert_eq!(a.key, "limits.restart_job.cooldown");
    assert_eq!(
        a.values,
        vec![
            toml::Value::String("2m".into()),
            toml::Value::String("5m".into())
        ]
    );
    let b = Axis::parse("breaker.unhealthy_percent=10,20.5").unwrap();
    assert_eq!(
        b.values,
        vec![toml::Value::Integer(10), toml::Value::Float(20.5)]
    );
    for bad in [
        "breaker.unhealthy_percent",
        "=10",
        "a..b=1",
        "breaker.unhealthy_percent=10,",
    ] {
        let e = Axis::parse(bad).unwrap_err().to_string();
        assert!(e.contains(bad), "{bad}: {e}");
    }
}

#[test]
fn grid_is_the_cartesian_product_of_the_sets() {
    let axes = [
        Axis::parse("breaker.unhealthy_percent=10,20,30,40").unwrap(),
        Axis::parse("limits.restart_job.rate.count=10,60").unwrap(),
    ];
    let points = grid(&axes);
    assert_eq!(points.len(), 8);
    assert_eq!(
        label(&points[0]),
        "breaker.unhealthy_percent=10 limits.restart_job.rate.count=10"
    );
    assert_eq!(
        label(&points[7]),
        "breaker.unhealthy_percent=40 limits.restart_job.rate.count=60"
    );
}

#[test]
fn an_override_reaches_into_an_inline_table_of_the_scenario() {
    let s = Scenario::load("cascade").unwrap();
    let axes = [Axis::parse("limits.restart_job.rate.count=7").unwrap()];
    let out = apply(&s, &grid(&axes)[0]).unwrap();
    let rate = &out.coordinator["limits"]["restart_job"]["rate"];
    assert_eq!(rate["count"].as_integer(), Some(7));
    assert_eq!(
        rate["per"].as_str(),
        Some("10m"),
        "the rest of the table stays"
    );
}

#[test]
fn an_unknown_key_is_refused_naming_it() {
    let s = Scenario::load("cascade").unwrap();
    let axes = [Axis::parse("breaker.unhealthy_pct=10").unwrap()];
    let e = apply(&s, &grid(&axes)[0]).unwrap_err().to_string();
    assert!(e.contains("--set breaker.unhealthy_pct=10"), "{e}");
    assert!(e.contains("unhealthy_pct"), "{e}");
}

#[test]
fn a_value_the_coordinator_refuses_is_refused_naming_key_and_value() {
    let s = Scenario::load("cascade").unwrap();
    for set in [
        "breaker.unhealthy_percent=500",
        "breaker.unhealthy_percent=lots",
        "limits.restart_job.rate.count.deep=1",
    ] {
        let axes = [Axis::parse(set).unwrap()];
        let e = apply(&s, &grid(&axes)[0]).unwrap_err().to_string();
        assert!(e.contains(&format!("--set {set}")), "{set}: {e}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sweep_runs_every_point_and_a_tighter_rate_budget_remediates_less() {
    let s = Scenario::from_toml(
        r#"
name = "sweep-test"
description = "many local faults, two rate budgets"
duration = "20m"
speed = 120
[fleet]
hosts = 20
racks = 4
[jobs]
failure_rate_per_hour = 3.0
[coordinator.fleet]
heartbeat_interval = "10s"
host_ttl = "30s"
warmup = "30s"
[coordinator.breaker]
unhealthy_percent = 90
[coordinator.limits.restart_job]
max_in_flight = 20
max_in_flight_percent = 100
cooldown = "1m"
rate = { count = 60, per = "10m", burst = 0 }
"#,
    )
    .unwrap();
    let axes = [Axis::parse("limits.restart_job.rate.count=1,120").unwrap()];
    let mut seen = Vec::new();
    let r = sweep(
        &s,
        &axes,
        &Options {
            seed: 2,
            ..Options::default()
        },
        |i, n, p| seen.push((i, n, p.remediations())),
    )
    .await
    .unwrap();
    assert_eq!(r.points.len(), 2);
    assert_eq!(
        seen.iter().map(|x| (x.0, x.1)).collect::<Vec<_>>(),
        [(1, 2), (2, 2)]
    );
    let table = medic_sim::sweep::table(&r);
    assert!(r.points.iter().all(|p| p.invariants_ok), "{table}");
    let (tight, loose) = (&r.points[0], &r.points[1]);
    // One grant per 10 minutes, burst 0: at most 2 (and one more at
    // most, at the very end) in 20 minutes.
    assert!(tight.restarts <= 3, "{table}");
    assert!(loose.restarts > tight.restarts, "{table}");
    assert!(
        table.contains("limits.restart_job.rate.count=1 "),
        "{table}"
    );
    let html = medic_sim::sweep::html(&r);
    assert_eq!(html.matches(r#"class="point""#).count(), 2);
}

#[test]
fn the_command_exits_78_naming_an_unknown_key_and_64_on_a_malformed_set() {
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_medic-sim"))
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["sweep", "cascade", "--set", "breaker.unhealthy_pct=10,20"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(err.contains("breaker.unhealthy_pct"), "{err}");
    let out = run(&["sweep", "cascade", "--set", "breaker.unhealthy_percent"]);
    assert_eq!(out.status.code(), Some(64));
}

#[test]
fn the_plot_numbers_each_point_and_labels_points_on_one_spot_once() {
    use medic_sim::sweep::{PointResult, SweepResult};
    let point = |v: i64, lost: f64, restarts: usize| PointResult {
        point: vec![("breaker.unhealthy_percent".into(), toml::Value::Integer(v))],
        lost_host_minutes: lost,
        restarts,
        reboots: 0,
        denials: 0,
        breaker_opens: 0,
        left_stuck: 0,
        dependency_down_minutes: None,
        invariants_ok: true,
    };
    let r = SweepResult {
        scenario: "t".into(),
        seed: 1,
        duration: 600.0,
        points: vec![
            point(10, 500.0, 0),
            point(20, 500.0, 0),
            point(30, 100.0, 40),
        ],
        legacy: (900.0, 50),
    };
    let html = medic_sim::sweep::html(&r);
    assert_eq!(html.matches(r#"class="point""#).count(), 3);
    assert!(
        html.contains(">#1 #2</text>"),
        "coinciding points share a label"
    );
    assert!(html.contains(">#3</text>"));
    let table = medic_sim::sweep::table(&r);
    assert!(
        table.contains("  3 breaker.unhealthy_percent=30"),
        "{table}"
    );
}
