//! Test support for medic's crates: a coordinator running in-process on
//! loopback port 0, with a manual clock and a state directory the caller
//! provides, clients for both services, and helpers to drive agents.
//!
//! Not for production use. Its helpers panic with a message instead of
//! returning errors, as tests want.

// Test support: a failed setup step must stop the test with its message.
#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::{Control, CoordinatorConfig, Listeners, ManualClock, RunError, run};
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

#[derive(Debug)]
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

    /// The URL clients (medicctl) are given.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
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
