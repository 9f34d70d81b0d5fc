//! agent.toml: the example is valid; broken files give every error with
//! its key path, from the library and from `medic-agent check-config`.

#![allow(clippy::unwrap_used)]

use std::process::Command;

use medic_agent::AgentConfig;

fn example() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/agent.toml")
}

#[test]
fn example_config_is_valid() {
    let c = AgentConfig::load(&example()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.host_id.as_str(), "web-17.example.net");
    assert_eq!(c.jobs.len(), 1);
    assert_eq!(c.jobs[0].confirm, 3);
}

#[test]
fn every_error_is_reported_with_its_key_path() {
    let e = AgentConfig::from_toml(
        r#"
        host_id = "h 1"
        coordinators = ["ftp://x"]
        check_interval = "often"
        colour = "blue"
        [[jobs]]
        confirm = 0
        [jobs.restart]
        signal = "KILLME"
        [[jobs]]
        name = "b"
        "#,
    )
    .expect_err("invalid");
    let text = e.to_string();
    for want in [
        "host_id: must not contain whitespace",
        "coordinators[0]: \"ftp://x\" is not an http:// or https:// URL",
        "check_interval: invalid duration \"often\"",
        "colour: unknown key",
        "jobs[0].name: is required",
        "jobs[0].confirm: must be an integer of at least 1, got 0",
        "jobs[0].restart.signal: unknown signal \"KILLME\"",
        "jobs[1]",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
}

#[test]
fn check_config_exits_0_on_the_example_and_78_on_errors() {
    let bin = env!("CARGO_BIN_EXE_medic-agent");
    let ok = Command::new(bin)
        .arg("check-config")
        .arg(example())
        .output()
        .unwrap();
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(
        String::from_utf8_lossy(&ok.stdout)
            .contains("ok: host web-17.example.net, 1 job(s) [ingest]")
    );
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "check_interval = 5\n").unwrap();
    let out = Command::new(bin)
        .arg("check-config")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("check_interval"));
}
