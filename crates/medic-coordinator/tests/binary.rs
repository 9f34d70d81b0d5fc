//! Start-up refusals of the real binary: a second coordinator on the same
//! state directory, and a corrupt state file, stop with a clear message and
//! a non-zero exit, never a silent reset.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

fn config(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("coordinator.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nmetrics_listen = \"127.0.0.1:0\"\nstate_dir = \"{}\"\n",
            dir.join("state").display()
        ),
    )
    .unwrap();
    path
}

fn command(config: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_medic-coordinator"));
    c.arg("run").arg("--config").arg(config);
    c
}

/// Starts the coordinator and waits until it serves.
fn start(config: &Path) -> Child {
    let mut child = command(config)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("serving") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(20))
        .expect("serving within 20s");
    child
}

fn run_to_exit(config: &Path) -> Output {
    command(config).output().unwrap()
}

#[test]
fn second_coordinator_on_the_same_state_dir_exits_naming_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let mut first = start(&cfg);
    let second = run_to_exit(&cfg);
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("pid {}", first.id())), "{stderr}");
    assert!(stderr.contains("locked by another coordinator"), "{stderr}");
    first.kill().unwrap();
    first.wait().unwrap();
}

#[test]
fn corrupt_state_file_stops_start_up_instead_of_resetting() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let mut first = start(&cfg);
    first.kill().unwrap();
    first.wait().unwrap();
    let file = dir.path().join("state/medic.redb");
    let mut bytes = std::fs::read(&file).unwrap();
    for b in bytes.iter_mut().skip(512).step_by(97) {
        *b ^= 0x5a;
    }
    std::fs::write(&file, &bytes).unwrap();
    let out = run_to_exit(&cfg);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("corrupt"), "{stderr}");
    assert!(stderr.contains("refusing to start"), "{stderr}");
    // Nothing was reset: the damaged file is still there, byte for byte.
    assert_eq!(std::fs::read(&file).unwrap(), bytes);
}
