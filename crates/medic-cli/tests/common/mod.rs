//! The in-process coordinator of `medic_coordinator::testing`, and the real
//! `medicctl` binary run against it.

#![allow(dead_code, unused_imports, unreachable_pub, clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

pub use medic_coordinator::testing::*;

/// `server.medicctl(args)`: runs the real binary against a test server.
pub trait Medicctl {
    /// Runs `medicctl --coordinator URL ARGS` against this coordinator.
    async fn medicctl(&self, args: &[&str]) -> Run;
}

impl Medicctl for TestServer {
    async fn medicctl(&self, args: &[&str]) -> Run {
        let url = self.url();
        let mut all = vec!["--coordinator", url.as_str()];
        all.extend_from_slice(args);
        medicctl_raw(&all).await
    }
}

// === medicctl ===

/// What one run of the real `medicctl` binary did.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Asserts exit 0 and returns stdout.
    pub fn ok(&self) -> &str {
        assert_eq!(self.code, 0, "medicctl failed: {self:#?}");
        &self.stdout
    }

    /// Asserts exit 0 and parses stdout as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.ok())
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:#?}"))
    }
}

/// Runs `medicctl ARGS` with nothing of this machine's environment that
/// medicctl reads (`MEDIC_*`), as user `tester`.
pub async fn medicctl_raw(args: &[&str]) -> Run {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_medicctl"));
    cmd.args(args)
        .env("USER", "tester")
        .env_remove("MEDIC_COORDINATOR")
        .env_remove("MEDIC_ACTOR")
        .env_remove("MEDIC_TLS_CA")
        .env_remove("MEDIC_TLS_CERT")
        .env_remove("MEDIC_TLS_KEY")
        // Tables are cut to COLUMNS; stdout is a pipe, so without it they
        // are whole.
        .env_remove("COLUMNS")
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .expect("medicctl finishes within 30s")
        .expect("medicctl runs");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A coordinator past its warm-up with `hosts` live and reporting a stuck
/// job; the first, third, ... hosts (h1, h3, ...) in rack r1, the others
/// in r2.
pub async fn ready(dir: &Path, toml: &str, hosts: &[&str]) -> (TestServer, Agent, Admin) {
    let server = TestServer::start(dir, toml).await;
    let mut agent = server.agent().await;
    let admin = server.admin().await;
    let rack = |i: usize| if i.is_multiple_of(2) { "r1" } else { "r2" };
    for (i, h) in hosts.iter().enumerate() {
        heartbeat(&mut agent, h, labels(&[("rack", rack(i))]), true).await;
    }
    // Past `warmup = "2s"`; heartbeat again so every host is live.
    server.advance(Duration::from_secs(3));
    for (i, h) in hosts.iter().enumerate() {
        heartbeat(&mut agent, h, labels(&[("rack", rack(i))]), true).await;
    }
    (server, agent, admin)
}
