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
