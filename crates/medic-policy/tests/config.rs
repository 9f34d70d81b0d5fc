//! Config validation: every error at once, each with its key path.

#![allow(clippy::unwrap_used)]

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
    let text = e.to_string();
    assert!(text.contains("restart_job, reboot_host"), "{text}");
    assert!(
        text.contains("declare it in [actions.reboot_planet]"),
        "{text}"
    );
}

#[test]
fn a_declared_custom_action_gets_limits_with_reboot_like_defaults() {
    let c = PolicyConfig::from_toml(
        r#"
        [actions.drain_host]
        description = "drain traffic"
        [limits.drain_host]
        max_in_flight = 3
        dry_run = true
        "#,
    )
    .unwrap();
    let drain = Action::declare("drain_host").unwrap();
    assert!(c.knows(drain));
    assert_eq!(
        c.actions().map(Action::as_str).collect::<Vec<_>>(),
        ["restart_job", "reboot_host", "drain_host"]
    );
    let l = c.limits(drain);
    assert_eq!(l.max_in_flight, 3);
    assert!(l.dry_run);
    let reboot = c.limits(Action::RebootHost);
    assert_eq!(l.cooldown, reboot.cooldown);
    assert_eq!(l.rate, reboot.rate);
    assert_eq!(l.host_budget, reboot.host_budget);
    assert_eq!(c.custom_actions[&drain].description, "drain traffic");
    // Undeclared, limits read as disabled.
    let other = Action::declare("reimage").unwrap();
    assert!(!c.knows(other));
    assert_eq!(c.limits(other).max_in_flight, 0);
}

#[test]
fn bad_custom_action_declarations_are_named() {
    let e = errors(
        r#"
        [actions.restart_job]
        [actions.Drain-Host]
        [actions.reimage]
        description = "bad\u0007bell"
        "#,
    );
    let p = paths(&e);
    assert!(p.contains(&"actions.restart_job"), "{e}");
    assert!(p.contains(&"actions.Drain-Host"), "{e}");
    assert!(p.contains(&"actions.reimage.description"), "{e}");
    assert!(e.to_string().contains("is a built-in action"), "{e}");
    assert!(e.to_string().contains("invalid action name"), "{e}");
}

#[test]
fn job_caps_are_validated_naming_the_key() {
    let ok = PolicyConfig::from_toml(
        r#"
        [limits.restart_job.jobs.zookeeper]
        max_in_flight = 2
        groups = { rack = 1 }
        "#,
    )
    .unwrap();
    let cap = &ok.limits(Action::RestartJob).jobs["zookeeper"];
    assert_eq!(cap.max_in_flight, Some(2));
    assert_eq!(cap.groups["rack"], 1);

    let e = errors(
        r#"
        [limits.restart_job.jobs.zookeeper]
        [limits.restart_job.jobs.kafka]
        max_in_flight = 0
        groups = { rack = 0 }
        [limits.reboot_host.jobs."two words"]
        max_in_flight = 1
        "#,
    );
    let p = paths(&e);
    for want in [
        "limits.restart_job.jobs.zookeeper",
        "limits.restart_job.jobs.kafka.max_in_flight",
        "limits.restart_job.jobs.kafka.groups.rack",
        "limits.reboot_host.jobs.two words",
    ] {
        assert!(p.contains(&want), "missing {want}; got:\n{e}");
    }
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

// === Every value has a bound ===

/// The one error at `path`, or a panic listing what there was.
fn error_at(toml: &str, path: &str) -> String {
    let e = errors(toml);
    e.0.iter()
        .find(|e| e.path == path)
        .map(|e| e.message.clone())
        .unwrap_or_else(|| panic!("no error at {path}; got:\n{e}"))
}

#[test]
fn a_duration_longer_than_ten_years_is_refused_naming_the_key() {
    // 7e18 s fits a Duration, but 3 × it (the default host_ttl) did not:
    // this file used to make check-config panic.
    let m = error_at(
        "[fleet]\nheartbeat_interval = \"7000000000000000000s\"\n",
        "fleet.heartbeat_interval",
    );
    assert!(m.contains("must be at most"), "{m}");
    for key in [
        "[fleet]\nwarmup",
        "[breaker]\nwindow",
        "[breaker]\nauto_close_after",
        "[limits.restart_job]\npermit_ttl",
        "[limits.restart_job]\ncooldown",
        "[idempotency]\nretention",
    ] {
        let path = key.replace(['[', ']'], "").replace('\n', ".");
        let m = error_at(&format!("{key} = \"11y\"\n"), &path);
        assert!(m.contains("must be at most 10years"), "{path}: {m}");
    }
    // Ten years itself is allowed.
    PolicyConfig::from_toml("[limits.restart_job]\ncooldown = \"10y\"\n").expect("10y is valid");
}

#[test]
fn heartbeat_interval_below_ten_milliseconds_or_above_an_hour_is_refused_naming_the_key() {
    let m = error_at(
        "[fleet]\nheartbeat_interval = \"1ms\"\n",
        "fleet.heartbeat_interval",
    );
    assert!(m.contains("must be at least 10ms, got 1ms"), "{m}");
    let m = error_at(
        "[fleet]\nheartbeat_interval = \"2h\"\nhost_ttl = \"6h\"\n",
        "fleet.heartbeat_interval",
    );
    assert!(m.contains("must be at most 1h, got 2h"), "{m}");
    PolicyConfig::from_toml("[fleet]\nheartbeat_interval = \"10ms\"\nhost_ttl = \"30ms\"\n")
        .expect("10ms is the floor");
}

#[test]
fn a_rate_whose_window_would_overflow_is_refused() {
    // The rate of the report: a window of 3,000 years and a burst of 4e9
    // passed check-config, then every RequestPermit and GetStatus panicked.
    let e = errors(
        "[limits.restart_job]\nrate = { count = 1, per = \"100000000000s\", burst = 4294967295 }\n",
    );
    let p = paths(&e);
    assert!(p.contains(&"limits.restart_job.rate.per"), "{e}");
    assert!(p.contains(&"limits.restart_job.rate.burst"), "{e}");
    // Each value in bounds, the product not: a grant every year with a
    // burst of a million looks back a million years.
    let m = error_at(
        "[limits.restart_job]\nrate = { count = 1, per = \"1y\", burst = 1000000 }\n",
        "limits.restart_job.rate",
    );
    assert!(
        m.contains("looks back rate.per + rate.per / rate.count"),
        "{m}"
    );
}

#[test]
fn a_rate_window_shorter_than_a_second_is_refused_naming_the_key() {
    let m = error_at(
        "[limits.reboot_host]\nrate = { count = 1, per = \"100ms\" }\n",
        "limits.reboot_host.rate.per",
    );
    assert!(m.contains("must be at least 1s, got 100ms"), "{m}");
}

#[test]
fn counts_above_a_million_are_refused_naming_the_key() {
    for (toml, path) in [
        (
            "[fleet]\nmin_fleet_size = 1000001\n",
            "fleet.min_fleet_size",
        ),
        (
            "[breaker]\nmin_samples = 4294967295\n",
            "breaker.min_samples",
        ),
        (
            "[breaker.domains.rack]\nunhealthy_percent = 50\nmin_hosts = 1000001\n",
            "breaker.domains.rack.min_hosts",
        ),
        (
            "[limits.restart_job]\nmax_in_flight = 1000001\n",
            "limits.restart_job.max_in_flight",
        ),
        (
            "[limits.restart_job]\nrate = { count = 1000001 }\n",
            "limits.restart_job.rate.count",
        ),
        (
            "[limits.restart_job]\nrate = { burst = 1000001 }\n",
            "limits.restart_job.rate.burst",
        ),
        (
            "[limits.restart_job]\nhost_budget = { max_attempts = 1000001 }\n",
            "limits.restart_job.host_budget.max_attempts",
        ),
        (
            "[limits.restart_job.groups.rack]\nmax_in_flight = 1000001\n",
            "limits.restart_job.groups.rack.max_in_flight",
        ),
    ] {
        let m = error_at(toml, path);
        assert!(m.contains("must be at most 1000000"), "{path}: {m}");
    }
    // A million is allowed (the benchmarks use it).
    PolicyConfig::from_toml(
        "[limits.restart_job]\nrate = { count = 1000000, per = \"1h\", burst = 1000000 }\n\
         host_budget = { max_attempts = 1000000, per = \"1h\" }\n",
    )
    .expect("a million is the bound");
}

#[test]
fn a_breaker_that_needs_more_samples_than_its_window_can_hold_is_refused() {
    // The defaults: restarts 60 + 10 per 10m, reboots 20 + 5 per 1h, caps
    // 50 and 10, a 30m window: at most 3 × 70 + 50 + 1 × 25 + 10 = 295
    // remediations can end in it.
    let m = error_at("[breaker]\nmin_samples = 296\n", "breaker.min_samples");
    assert!(
        m.contains("must be at most 295, got 296") && m.contains("could never open"),
        "{m}"
    );
    PolicyConfig::from_toml("[breaker]\nmin_samples = 295\n").expect("295 can be reached");
    // A disabled action adds nothing.
    let m = error_at(
        "[breaker]\nmin_samples = 100\n[limits.restart_job]\nmax_in_flight = 0\n",
        "breaker.min_samples",
    );
    assert!(m.contains("must be at most 35"), "{m}");
}

#[test]
fn an_unknown_key_in_an_inline_table_is_named_by_its_path() {
    let e = errors(
        "[limits.restart_job]\nrate = { count = 1, extra = 2 }\nhost_budget = { per = \"1h\", x = 1 }\n",
    );
    let p = paths(&e);
    assert!(p.contains(&"limits.restart_job.rate.extra"), "{e}");
    assert!(p.contains(&"limits.restart_job.host_budget.x"), "{e}");
    assert!(!e.to_string().contains('?'), "{e}");
}

#[test]
fn an_unknown_key_in_an_array_of_tables_is_named_with_its_index() {
    let e = errors(
        "[limits.reboot_host]\nwindows = [{ days = [\"sat\"], start = \"22:00\", end = \"06:00\", colour = 1 }]\n",
    );
    assert_eq!(
        paths(&e),
        vec!["limits.reboot_host.windows[0].colour"],
        "{e}"
    );
}

#[test]
fn a_wrong_type_inside_an_inline_table_is_named_by_its_path() {
    let e = errors("[limits.restart_job]\nrate = { count = \"many\" }\n");
    assert_eq!(paths(&e), vec!["limits.restart_job.rate.count"], "{e}");
}

#[test]
fn label_names_with_invisible_characters_are_refused() {
    let m = error_at(
        "[limits.reboot_host.groups.\"ra\u{200B}ck\"]\nmax_in_flight = 1\n",
        "limits.reboot_host.groups.ra\u{200B}ck",
    );
    assert!(m.contains("invisible"), "{m}");
}
