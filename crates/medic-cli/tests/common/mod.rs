//! A coordinator running in-process on loopback port 0, with a manual clock
//! and a temporary state directory, and clients for both services; and the
//! real `medicctl` binary run against it.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use medic_coordinator::{Control, CoordinatorConfig, Listeners, ManualClock, RunError, run};
use medic_proto::pb::v1 as pb;
use medic_store::RedbStore;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

pub type Agent = pb::remediation_client::RemediationClient<Channel>;
pub type Admin = pb::admin_client::AdminClient<Channel>;

/// Settings that make tests quick: 1s heartbeats, short TTLs, no percent
/// caps unless a test asks.
pub const FAST: &str = r#"
[fleet]
heartbeat_interval = "1s"
host_ttl = "5s"
warmup = "2s"
min_fleet_size = 1
[breaker]
unhealthy_percent = 100
[limits.restart_job]
max_in_flight = 10
permit_ttl = "30s"
cooldown = "0s"
rate = { count = 100, per = "1h", burst = 10 }
[limits.reboot_host]
max_in_flight = 10
permit_ttl = "60s"
cooldown = "0s"
"#;

pub struct TestServer {
    pub addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub clock: Arc<ManualClock>,
    pub dir: PathBuf,
    pub config_path: PathBuf,
    control: mpsc::Sender<Control>,
    handle: Option<JoinHandle<Result<(), RunError>>>,
}

pub fn start_time() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600)
}

impl TestServer {
    /// Starts a coordinator with `toml` (a whole coordinator.toml; the
    /// listen addresses are replaced by port-0 listeners) in `dir`.
    pub async fn start_in(dir: &Path, toml: &str, clock: Arc<ManualClock>) -> Self {
        let config_path = dir.join("coordinator.toml");
        std::fs::write(&config_path, toml).unwrap();
        let config = CoordinatorConfig::from_toml(toml).unwrap_or_else(|e| panic!("{e}"));
        let state = dir.join("state");
        let store = RedbStore::open(&state).unwrap_or_else(|e| panic!("{e}"));
        let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let metrics = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = grpc.local_addr().unwrap();
        let metrics_addr = metrics.local_addr().unwrap();
        let (control, rx) = mpsc::channel(4);
        let handle = tokio::spawn(run(
            config,
            Some(config_path.clone()),
            store,
            Listeners { grpc, metrics },
            rx,
            clock.clone(),
        ));
        Self {
            addr,
            metrics_addr,
            clock,
            dir: dir.to_owned(),
            config_path,
            control,
            handle: Some(handle),
        }
    }

    /// Starts a fresh coordinator past its warm-up is left to the test.
    pub async fn start(dir: &Path, toml: &str) -> Self {
        Self::start_in(dir, toml, Arc::new(ManualClock::new(start_time()))).await
    }

    pub async fn agent(&self) -> Agent {
        Agent::new(self.channel().await)
    }

    pub async fn admin(&self) -> Admin {
        Admin::new(self.channel().await)
    }

    pub async fn channel(&self) -> Channel {
        let url = format!("http://{}", self.addr);
        for _ in 0..100 {
            if let Ok(c) = Channel::from_shared(url.clone()).unwrap().connect().await {
                return c;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("cannot connect to {url}");
    }

    pub fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }

    pub async fn reload(&self) {
        self.control.send(Control::Reload).await.unwrap();
    }

    /// Drains and stops; returns what `run` returned.
    pub async fn stop(mut self) -> Result<(), RunError> {
        let _ = self.control.send(Control::Shutdown).await;
        self.handle.take().unwrap().await.unwrap()
    }
}

pub fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

pub async fn heartbeat(
    agent: &mut Agent,
    host: &str,
    labels: BTreeMap<String, String>,
    stuck: bool,
) -> pb::HeartbeatResponse {
    let problems = if stuck {
        vec![pb::Problem {
            job: "ingest".into(),
            detector: "heartbeat_file".into(),
            since: Some(prost_types::Timestamp {
                seconds: 1_767_225_600,
                nanos: 0,
            }),
            detail: "heartbeat file stale".into(),
        }]
    } else {
        vec![]
    };
    agent
        .heartbeat(pb::HeartbeatRequest {
            host_id: host.into(),
            labels,
            agent_version: "test".into(),
            problems,
            held_permit: None,
            needs_human: None,
        })
        .await
        .unwrap_or_else(|e| panic!("heartbeat {host}: {e}"))
        .into_inner()
}

pub fn permit_request(
    host: &str,
    action: pb::Action,
    request_id: &str,
) -> pb::RequestPermitRequest {
    pb::RequestPermitRequest {
        request_id: request_id.into(),
        host_id: host.into(),
        action: action.into(),
        job: "ingest".into(),
        reason: "heartbeat file stale".into(),
    }
}

pub async fn request(
    agent: &mut Agent,
    host: &str,
    action: pb::Action,
    request_id: &str,
) -> pb::request_permit_response::Decision {
    agent
        .request_permit(permit_request(host, action, request_id))
        .await
        .unwrap_or_else(|e| panic!("request {request_id}: {e}"))
        .into_inner()
        .decision
        .expect("a decision")
}

pub fn granted(d: pb::request_permit_response::Decision) -> pb::Grant {
    match d {
        pb::request_permit_response::Decision::Granted(g) => g,
        pb::request_permit_response::Decision::Denied(d) => panic!("denied: {d:?}"),
    }
}

pub fn denied(d: pb::request_permit_response::Decision) -> pb::Denial {
    match d {
        pb::request_permit_response::Decision::Denied(d) => d,
        pb::request_permit_response::Decision::Granted(g) => panic!("granted: {g:?}"),
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

impl TestServer {
    /// The URL medicctl is given.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Runs `medicctl --coordinator URL ARGS` against this coordinator.
    pub async fn medicctl(&self, args: &[&str]) -> Run {
        let url = self.url();
        let mut all = vec!["--coordinator", url.as_str()];
        all.extend_from_slice(args);
        medicctl_raw(&all).await
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
