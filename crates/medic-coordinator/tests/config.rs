//! coordinator.toml: the example is valid and documents the defaults;
//! broken files produce every error with its key path, from the library and
//! from `medic-coordinator check-config` (exit 78).

use std::process::Command;

use medic_coordinator::CoordinatorConfig;

fn example_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/coordinator.toml")
}

#[test]
fn embedded_defaults_are_valid() {
    let c = CoordinatorConfig::default();
    assert_eq!(c.server.listen.to_string(), "127.0.0.1:7470");
    assert_eq!(c.server.metrics_listen.to_string(), "127.0.0.1:7471");
}

#[test]
fn example_config_is_valid_and_documents_the_defaults() {
    let example = CoordinatorConfig::load(&example_path()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(example, CoordinatorConfig::default());
}

#[test]
fn server_and_policy_errors_are_reported_together_with_key_paths() {
    let e = CoordinatorConfig::from_toml(
        r#"
        [server]
        listen = "0.0.0.0:7470"
        metrics_listen = "localhost"
        admission = { per_second = 0 }
        shutdown_grace = "soon"
        [audit]
        max_entries = -5
        [limits.reboot_host]
        max_in_flight_percent = 250
        [fleet]
        heartbeat_intervall = "10s"
        "#,
    )
    .expect_err("invalid");
    let text = e.to_string();
    for want in [
        "server.listen: 0.0.0.0:7470 is not a loopback address",
        "server.metrics_listen: invalid address \"localhost\"",
        "server.admission.per_second: must be an integer of at least 1, got 0",
        "server.shutdown_grace: invalid duration \"soon\"",
        "audit.max_entries: must be an integer of at least 1, got -5",
        "limits.reboot_host.max_in_flight_percent: must be in (0, 100], got 250",
        "fleet.heartbeat_intervall: unknown key",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
}

#[test]
fn reload_refuses_settings_that_need_a_restart() {
    let old = CoordinatorConfig::default();
    let new = CoordinatorConfig::from_toml(
        "[server]\nlisten = \"127.0.0.1:9999\"\nstate_dir = \"/tmp/other\"\n",
    )
    .expect("valid");
    let errors = old.reload_errors(&new);
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, vec!["server.listen", "server.state_dir"]);
    assert!(errors[0].message.contains("restart the coordinator"));
}

fn check_config(file: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_medic-coordinator"))
        .arg("check-config")
        .arg(file)
        .output()
        .expect("run medic-coordinator")
}

#[test]
fn check_config_passes_on_the_example_with_a_summary() {
    let out = check_config(&example_path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(": ok: mode enforce, listen 127.0.0.1:7470"),
        "{stdout}"
    );
    assert_eq!(stdout.lines().count(), 1, "one-line summary: {stdout}");
}

#[test]
fn check_config_prints_every_error_and_exits_78() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases: &[(&str, &[&str])] = &[
        (
            "mode = \"yolo\"\n[breaker]\nfailure_percent = 0\n",
            &[
                "mode: must be \"enforce\" or \"dry-run\"",
                "breaker.failure_percent: must be in (0, 100], got 0",
            ],
        ),
        ("[fleet\n", &["line 1"]),
        (
            "[limits.restart_job]\nrate = { count = 0, per = \"0s\" }\n",
            &[
                "limits.restart_job.rate.count",
                "limits.restart_job.rate.per: must be longer than zero",
            ],
        ),
        (
            "[limits.reboot_host]\ntimezone = \"Nowhere/Land\"\nwindows = [{ days = [\"someday\"], start = \"9\", end = \"17:00\" }]\n",
            &[
                "limits.reboot_host.timezone: unknown IANA time zone \"Nowhere/Land\"",
                "limits.reboot_host.windows[0].days[0]: unknown day \"someday\"",
                "limits.reboot_host.windows[0].start: invalid time \"9\"",
            ],
        ),
        (
            "[server]\nstate_dir = \"\"\n",
            &["server.state_dir: must not be empty"],
        ),
    ];
    for (i, (text, wants)) in cases.iter().enumerate() {
        let file = dir.path().join(format!("broken-{i}.toml"));
        std::fs::write(&file, text).expect("write");
        let out = check_config(&file);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "case {i}: {stderr}");
        for want in *wants {
            assert!(
                stderr.contains(want),
                "case {i}: missing {want:?} in:\n{stderr}"
            );
        }
    }
}

#[test]
fn check_config_on_a_missing_file_names_it() {
    let out = check_config(std::path::Path::new("/nonexistent/medic.toml"));
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read /nonexistent/medic.toml"));
}

#[test]
fn bad_usage_exits_64() {
    let out = Command::new(env!("CARGO_BIN_EXE_medic-coordinator"))
        .arg("frobnicate")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(64));
}
