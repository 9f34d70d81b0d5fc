//! The shipped systemd unit passes `systemd-analyze verify` with no
//! warning about it (the binary path is pointed at the one just built).

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

/// Verifies `unit` with its `/usr/bin/NAME` replaced by `binary`; returns
/// the warnings that concern the unit file.
fn verify_unit(unit: &Path, name: &str, binary: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(unit).unwrap();
    let file = dir.path().join(unit.file_name().unwrap());
    std::fs::write(&file, text.replace(&format!("/usr/bin/{name}"), binary)).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&file)
        .output()
        .expect("systemd-analyze (scripts/test installs systemd)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let file_name = file.file_name().unwrap().to_string_lossy().into_owned();
    let mut warnings: Vec<String> = stderr
        .lines()
        .filter(|l| l.contains(&file_name))
        .map(str::to_owned)
        .collect();
    if !out.status.success() {
        warnings.push(format!(
            "systemd-analyze exited with {}: {stderr}",
            out.status
        ));
    }
    warnings
}

#[test]
fn coordinator_unit_verifies_clean() {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy/systemd/medic-coordinator.service");
    let warnings = verify_unit(
        &unit,
        "medic-coordinator",
        env!("CARGO_BIN_EXE_medic-coordinator"),
    );
    assert!(warnings.is_empty(), "{warnings:#?}");
    let text = std::fs::read_to_string(&unit).unwrap();
    for want in [
        "Type=notify",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "StateDirectory=medic",
        "User=medic",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "RestartPreventExitStatus=78",
    ] {
        assert!(text.contains(want), "the unit lacks {want}");
    }
}

#[test]
fn a_broken_unit_is_caught() {
    // The check itself must be able to fail: an unknown key is reported.
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("broken.service");
    std::fs::write(
        &unit,
        "[Service]\nType=notifyy\nExecStart=/usr/bin/medic-coordinator run\n",
    )
    .unwrap();
    let warnings = verify_unit(
        &unit,
        "medic-coordinator",
        env!("CARGO_BIN_EXE_medic-coordinator"),
    );
    assert!(!warnings.is_empty());
}
