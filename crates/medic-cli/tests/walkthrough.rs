//! The README's "Watch your first job", run as written: its commands, in
//! order, with the binaries of this build on `PATH` (the README builds
//! them with `cargo build --release` first). They use the coordinator's
//! defaults (port 7470, state in /var/lib/medic) and /tmp/medic-demo, so
//! the test runs them in namespaces of its own: a network namespace (its
//! own loopback), a mount namespace with fresh /tmp and /var/lib, and a
//! PID namespace whose end kills every process the walkthrough started.
//! As root it always runs (and fails, never skips, when CI requires it);
//! elsewhere it skips with a loud message.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The shell commands between the README's walkthrough markers.
fn walkthrough() -> String {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
            .unwrap();
    let (_, rest) = readme
        .split_once("<!-- walkthrough:start -->")
        .expect("README.md has a walkthrough:start marker");
    let (section, _) = rest
        .split_once("<!-- walkthrough:end -->")
        .expect("README.md has a walkthrough:end marker");
    let mut script = String::new();
    let mut in_block = false;
    for line in section.lines() {
        match (in_block, line.trim_end()) {
            (false, "```sh") => in_block = true,
            (true, "```") => in_block = false,
            (true, l) => {
                script.push_str(l);
                script.push('\n');
            }
            _ => {}
        }
    }
    assert!(!script.is_empty(), "no ```sh block in the walkthrough");
    script
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// The directory holding this build's binaries (all three are built with
/// the workspace).
fn binaries() -> PathBuf {
    let dir = Path::new(env!("CARGO_BIN_EXE_medicctl"))
        .parent()
        .unwrap()
        .to_owned();
    for bin in ["medic-coordinator", "medic-agent"] {
        assert!(
            dir.join(bin).exists(),
            "{bin} is not built in {}: run the workspace's tests (cargo nextest run --workspace) \
             or cargo build -p {bin} first",
            dir.display()
        );
    }
    dir
}

#[test]
fn the_readme_walkthrough_watches_a_frozen_job_restarted_verified_and_reported() {
    if !is_root() {
        assert!(
            std::env::var_os("MEDIC_REQUIRE_NETNS").is_none(),
            "MEDIC_REQUIRE_NETNS is set but this is not root: the walkthrough needs namespaces"
        );
        eprintln!(
            "SKIPPED: the README walkthrough runs in namespaces of its own, which needs root"
        );
        return;
    }
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let script = dir.path().join("walkthrough.sh");
    // On the way out, whatever happened: both logs, for whoever reads a
    // failure.
    std::fs::write(
        &script,
        format!(
            "trap 'echo \"== agent.log\"; cat /tmp/medic-demo/agent.log; \
             echo \"== coordinator.log\"; tail -n 40 /tmp/medic-demo/coordinator.log' EXIT\n{}",
            walkthrough()
        ),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        binaries().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("timeout")
        .args([
            "600",
            "unshare",
            "--net",
            "--mount",
            "--pid",
            "--fork",
            "--mount-proc",
        ])
        .args([
            "sh",
            "-c",
            "ip link set lo up && mount -t tmpfs tmpfs /var/lib && mount -t tmpfs tmpfs /tmp \
             && exec sh -eu \"$0\"",
        ])
        .arg(&script)
        .env("PATH", path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the walkthrough failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    for want in [
        // check-config, then the host live and healthy.
        "agent.toml: ok: host demo-1, 1 job(s) [demo]",
        "demo-1  yes   ok",
        // The permit held through probation, then its outcome.
        "restart_job  demo  active",
        "granted restart_job p-000000000001 for job demo: process: process",
        "is stopped (state T)",
        "restart_job p-000000000001 succeeded: restarted (restart command exited with code 0",
        "the job verified healthy; healthy through 30s of probation",
        // The host's side.
        "verified; on probation for 30s",
    ] {
        assert!(
            stdout.contains(want),
            "no {want:?} in the walkthrough's output:\n{stdout}\n{stderr}"
        );
    }
}
