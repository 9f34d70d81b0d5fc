//! The agent's systemd unit passes `systemd-analyze verify` with no
//! warning about it, and keeps only the capabilities the agent needs.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

#[test]
fn agent_unit_verifies_clean_with_minimal_capabilities() {
    let unit =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/systemd/medic-agent.service");
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(&unit).unwrap();
    let file = dir.path().join("medic-agent.service");
    std::fs::write(
        &file,
        text.replace("/usr/bin/medic-agent", env!("CARGO_BIN_EXE_medic-agent")),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&file)
        .output()
        .expect("systemd-analyze (scripts/test installs systemd)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("medic-agent.service"))
        .collect();
    assert!(out.status.success() && ours.is_empty(), "{stderr}");
    for want in [
        "Type=notify",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "StateDirectory=medic-agent",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=CAP_KILL CAP_SYS_BOOT CAP_DAC_READ_SEARCH CAP_SYS_PTRACE",
        "ProtectSystem=strict",
    ] {
        assert!(text.contains(want), "the unit lacks {want}");
    }
}

#[test]
fn alert_rules_use_only_metrics_the_agent_exports() {
    let exported = medic_agent::metrics::AgentMetrics::new().encode();
    let rules = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/prometheus/medic-rules.yaml"),
    )
    .unwrap();
    let mut checked = 0;
    for word in rules.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if !word.starts_with("medic_agent_") {
            continue;
        }
        let family = word.strip_suffix("_total").unwrap_or(word);
        assert!(
            exported.contains(&format!("# TYPE {family} ")),
            "the rules use {word}, which the agent does not export"
        );
        checked += 1;
    }
    assert!(checked >= 2, "only {checked} agent metric references found");
}
