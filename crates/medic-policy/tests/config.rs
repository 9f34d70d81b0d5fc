//! Config validation: every error at once, each with its key path.

use std::time::Duration;

use medic_policy::{Action, ConfigErrors, PolicyConfig, RawPolicy};

fn errors(toml: &str) -> ConfigErrors {
    match PolicyConfig::from_toml(toml) {
        Ok(c) => panic!("expected errors, got a valid config: {c:?}"),
        Err(e) => e,
    }
}

fn paths(e: &ConfigErrors) -> Vec<&str> {
    e.0.iter().map(|e| e.path.as_str()).collect()
}

#[test]
fn embedded_defaults_are_valid() {
    let c = RawPolicy::default().validate().expect("defaults validate");
    assert!(!c.dry_run);
    assert_eq!(c.fleet.heartbeat_interval, Duration::from_secs(10));
    assert_eq!(c.fleet.host_ttl, Duration::from_secs(30));
    assert_eq!(c.fleet.warmup, Duration::from_secs(30));
}

#[test]
fn empty_file_runs_on_defaults() {
    assert_eq!(
        PolicyConfig::from_toml("").expect("empty is valid"),
        PolicyConfig::default()
    );
}

#[test]
fn validation_reports_several_errors_at_once_with_key_paths() {
    let e = errors(
        r#"
        mode = "yolo"
        [fleet]
        heartbeat_interval = "ten seconds"
        min_fleet_size = 0
        [breaker]
        unhealthy_percent = 0
        [limits.reboot_host]
        max_in_flight_percent = 250
        rate = { count = 0, per = "1h" }
        timezone = "Mars/Olympus_Mons"
        "#,
    );
    let p = paths(&e);
    for want in [
        "mode",
        "fleet.heartbeat_interval",
        "fleet.min_fleet_size",
        "breaker.unhealthy_percent",
        "limits.reboot_host.max_in_flight_percent",
        "limits.reboot_host.rate.count",
        "limits.reboot_host.timezone",
    ] {
        assert!(p.contains(&want), "missing error for {want}; got:\n{e}");
    }
    let text = e.to_string();
    assert!(
        text.contains("limits.reboot_host.max_in_flight_percent: must be in (0, 100], got 250"),
        "{text}"
    );
    assert!(text.contains("\"Mars/Olympus_Mons\""), "{text}");
}

#[test]
fn unknown_keys_are_rejected_with_their_full_names() {
    let e = errors(
        r#"
        colour = "blue"
        [fleet]
        heartbeat_intervall = "10s"
        [limits.reboot_host]
        max_inflight = 3
        [limits.reboot_host.groups.rack]
        max_in_flight = 1
        maximum = 2
        "#,
    );
    let p = paths(&e);
    for want in [
        "colour",
        "fleet.heartbeat_intervall",
        "limits.reboot_host.max_inflight",
        "limits.reboot_host.groups.rack.maximum",
    ] {
        assert!(p.contains(&want), "missing unknown key {want}; got:\n{e}");
    }
    assert!(e.0.iter().all(|e| e.message == "unknown key"));
}

#[test]
fn unknown_action_section_is_named() {
    let e = errors("[limits.reboot_planet]\nmax_in_flight = 1\n");
    assert_eq!(paths(&e), vec!["limits.reboot_planet"]);
    assert!(e.to_string().contains("restart_job or reboot_host"));
}

#[test]
fn toml_syntax_error_says_where() {
    let e = errors("[fleet\nheartbeat_interval = 1\n");
    assert_eq!(e.0.len(), 1);
    assert!(e.0[0].path.is_empty());
    assert!(e.to_string().contains("line 1"), "{e}");
}

#[test]
fn wrong_type_names_the_key() {
    let e = errors("[fleet]\nmin_fleet_size = \"three\"\n");
    assert_eq!(paths(&e), vec!["fleet.min_fleet_size"], "{e}");
    assert!(e.to_string().contains("line 2"), "{e}");
}

#[test]
fn cross_field_rules_name_both_fields() {
    let e = errors(
        r#"
        [fleet]
        heartbeat_interval = "30s"
        host_ttl = "20s"
        warmup = "5s"
        [limits.restart_job]
        permit_ttl = "1m"
        "#,
    );
    let text = e.to_string();
    assert!(
        text.contains(
            "fleet.host_ttl: must be longer than fleet.heartbeat_interval (30s), got 20s"
        ),
        "{text}"
    );
    assert!(
        text.contains("fleet.warmup: must be at least fleet.heartbeat_interval"),
        "{text}"
    );
    assert!(
        text.contains(
            "limits.restart_job.permit_ttl: must be at least 3 × fleet.heartbeat_interval"
        ),
        "{text}"
    );
}

#[test]
fn group_cap_needs_a_limit_and_windows_are_checked() {
    let e = errors(
        r#"
        [limits.reboot_host]
        windows = [
            { days = ["sat", "caturday"], start = "22:00", end = "06:00" },
            { days = [], start = "25:00", end = "01:00" },
            { days = ["mon"], start = "03:00", end = "03:00" },
        ]
        [limits.reboot_host.groups.rack]
        "#,
    );
    let p = paths(&e);
    for want in [
        "limits.reboot_host.windows[0].days[1]",
        "limits.reboot_host.windows[1].days",
        "limits.reboot_host.windows[1].start",
        "limits.reboot_host.windows[2].end",
        "limits.reboot_host.groups.rack",
    ] {
        assert!(p.contains(&want), "missing error for {want}; got:\n{e}");
    }
}

#[test]
fn explicit_absolute_cap_alone_means_exactly_that_cap() {
    let c = PolicyConfig::from_toml("[limits.reboot_host]\nmax_in_flight = 7\n").expect("valid");
    let l = c.limits(Action::RebootHost);
    assert_eq!(l.max_in_flight_percent, None);
    assert_eq!(l.effective_cap(10_000), 7);
    // The default restart cap still carries its percentage.
    assert_eq!(c.limits(Action::RestartJob).effective_cap(100), 5);
}

#[test]
fn dry_run_mode_and_never_auto_close_parse() {
    let c =
        PolicyConfig::from_toml("mode = \"dry-run\"\n[breaker]\nauto_close_after = \"never\"\n")
            .expect("valid");
    assert!(c.dry_run);
    assert_eq!(c.breaker.auto_close_after, None);
}

#[test]
fn unknown_keys_and_invalid_values_are_reported_together() {
    let e = errors("colour = 1\nmode = \"yolo\"\n");
    assert_eq!(paths(&e), vec!["colour", "mode"], "{e}");
}
