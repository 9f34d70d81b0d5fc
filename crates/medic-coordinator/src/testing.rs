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
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

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

/// A coordinator on the system clock, in this process, on loopback port
/// 0, its state in a directory the caller provides: for tests and
/// benchmarks that drive real agents in real time ([`TestServer`] runs on a
/// manual clock).
#[derive(Debug)]
pub struct LiveServer {
    /// Its gRPC address.
    pub addr: SocketAddr,
    control: mpsc::Sender<Control>,
    task: JoinHandle<Result<(), RunError>>,
}

impl LiveServer {
    /// Starts one on `toml` with its state in `state_dir`.
    pub async fn start(toml: &str, state_dir: &Path) -> Self {
        let config = CoordinatorConfig::from_toml(toml).unwrap_or_else(|e| panic!("{e}"));
        let store = RedbStore::open(&state_dir.join("state")).unwrap();
        let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let metrics = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = grpc.local_addr().unwrap();
        let (control, rx) = mpsc::channel(1);
        let task = tokio::spawn(run(
            config,
            None,
            store,
            Listeners { grpc, metrics },
            rx,
            Arc::new(crate::SystemClock),
        ));
        Self {
            addr,
            control,
            task,
        }
    }

    /// An operator client (plaintext loopback: the caller is admin).
    pub async fn admin(&self) -> pb::admin_client::AdminClient<Channel> {
        pb::admin_client::AdminClient::connect(format!("http://{}", self.addr))
            .await
            .unwrap()
    }

    /// Stops it and waits for it to end.
    pub async fn stop(self) {
        let _ = self.control.send(Control::Shutdown).await;
        let _ = self.task.await;
    }
}

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

/// Writes a dev-certs set (CA, server, operator, viewer, one agent per
/// host) into `dir/certs` and returns that directory.
pub fn dev_certs(dir: &Path, hosts: &[&str]) -> PathBuf {
    let out = dir.join("certs");
    crate::devcerts::write(&crate::devcerts::DevCerts {
        out: out.clone(),
        hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
        server_names: Vec::new(),
        validity: Duration::from_secs(86400),
        force: false,
    })
    .unwrap();
    out
}

/// `[tls]` and `[auth]` sections for a dev-certs set in `certs`: the
/// dev-certs operator is an admin, the viewer read-only.
pub fn tls_toml(certs: &Path) -> String {
    let d = certs.display();
    format!(
        r#"
[tls]
cert = "{d}/server.pem"
key = "{d}/server.key"
client_ca = "{d}/ca.pem"
[auth]
admin = ["{admin}"]
read_only = ["{viewer}"]
"#,
        admin = crate::devcerts::ADMIN_URI,
        viewer = crate::devcerts::VIEWER_URI,
    )
}

/// Client TLS settings trusting `certs/ca.pem`, presenting
/// `certs/<name>.pem` when `name` is given (`operator`, `viewer`,
/// `agents/web-1`).
pub fn client_tls(certs: &Path, name: Option<&str>) -> ClientTlsConfig {
    let ca = std::fs::read(certs.join("ca.pem")).unwrap();
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost");
    if let Some(n) = name {
        let cert = std::fs::read(certs.join(format!("{n}.pem"))).unwrap();
        let key = std::fs::read(certs.join(format!("{n}.key"))).unwrap();
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    tls
}

/// The example config at `example` (`config/*.toml`) with its
/// `/etc/medic/tls` paths pointed at a fresh dev-certs set in `dir`, whose
/// `agent.pem`/`agent.key` are `host`'s agent certificate. Returns the
/// rewritten file.
pub fn example_with_dev_certs(example: &Path, dir: &Path, host: &str) -> PathBuf {
    let certs = dev_certs(dir, &[host]);
    for ext in ["pem", "key"] {
        std::fs::copy(
            certs.join(format!("agents/{host}.{ext}")),
            certs.join(format!("agent.{ext}")),
        )
        .unwrap();
    }
    let text = std::fs::read_to_string(example)
        .unwrap()
        .replace("/etc/medic/tls", certs.to_str().unwrap());
    let out = dir.join(example.file_name().unwrap());
    std::fs::write(&out, text).unwrap();
    out
}

pub fn start_time() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600)
}

impl TestServer {
    /// Starts a coordinator with `toml` (a whole coordinator.toml; the
    /// listen addresses are replaced by port-0 listeners) in `dir`.
    pub async fn start_in(dir: &Path, toml: &str, clock: Arc<ManualClock>) -> Self {
        let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::start_with(dir, toml, clock, grpc).await
    }

    /// Stops this coordinator and starts another on the same gRPC address,
    /// state directory, config and clock: what clients see of a restart.
    pub async fn restart(self) -> Self {
        let (dir, addr, clock) = (self.dir.clone(), self.addr, self.clock.clone());
        let toml = std::fs::read_to_string(&self.config_path).unwrap();
        self.stop().await.unwrap();
        let mut last = None;
        for _ in 0..100 {
            match TcpListener::bind(addr).await {
                Ok(grpc) => return Self::start_with(&dir, &toml, clock, grpc).await,
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("cannot bind {addr} again: {last:?}");
    }

    async fn start_with(
        dir: &Path,
        toml: &str,
        clock: Arc<ManualClock>,
        grpc: TcpListener,
    ) -> Self {
        let config_path = dir.join("coordinator.toml");
        std::fs::write(&config_path, toml).unwrap();
        let config = CoordinatorConfig::from_toml(toml).unwrap_or_else(|e| panic!("{e}"));
        let state = dir.join("state");
        let store = RedbStore::open(&state).unwrap_or_else(|e| panic!("{e}"));
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

    /// A TLS channel with `tls` (see [`client_tls`]).
    pub async fn tls_channel(&self, tls: ClientTlsConfig) -> Channel {
        let url = format!("https://{}", self.addr);
        let endpoint = Channel::from_shared(url.clone())
            .unwrap()
            .tls_config(tls)
            .unwrap();
        let mut last = String::new();
        for _ in 0..100 {
            match endpoint.connect().await {
                Ok(c) => return c,
                Err(e) => last = format!("{e:?}"),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("cannot connect to {url}: {last}");
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
            state_error: None,
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
        dry_run: false,
        request_id: request_id.into(),
        host_id: host.into(),
        action: action.into(),
        action_name: String::new(),
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
        pb::request_permit_response::Decision::Waiting(w) => panic!("waiting: {w:?}"),
    }
}

pub fn denied(d: pb::request_permit_response::Decision) -> pb::Denial {
    match d {
        pb::request_permit_response::Decision::Denied(d) => d,
        pb::request_permit_response::Decision::Granted(g) => panic!("granted: {g:?}"),
        pb::request_permit_response::Decision::Waiting(w) => panic!("waiting: {w:?}"),
    }
}

pub fn waiting(d: pb::request_permit_response::Decision) -> pb::Waiting {
    match d {
        pb::request_permit_response::Decision::Waiting(w) => w,
        pb::request_permit_response::Decision::Granted(g) => panic!("granted: {g:?}"),
        pb::request_permit_response::Decision::Denied(d) => panic!("denied: {d:?}"),
    }
}

/// A minimal HTTP/1.1 GET over loopback (`/metrics`, `/healthz`): the
/// whole response, status line included.
pub async fn http_get(addr: SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

/// An HTTP/1.1 request over loopback with an optional `Accept` header: the
/// head and the body of the answer.
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    accept: Option<&str>,
) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let accept = accept
        .map(|a| format!("Accept: {a}\r\n"))
        .unwrap_or_default();
    s.write_all(
        format!("{method} {path} HTTP/1.1\r\nHost: x\r\n{accept}Connection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    (head.to_owned(), body.to_owned())
}

fn piped(program: &str, args: &[&str], input: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// The metric families in exposition `text` as the Python client's parser
/// reads it (its OpenMetrics parser with `openmetrics`, its classic text
/// parser otherwise): one `NAME TYPE SAMPLES` line per family.
pub fn python_families(text: &str, openmetrics: bool) -> String {
    let module = if openmetrics {
        "prometheus_client.openmetrics.parser"
    } else {
        "prometheus_client.parser"
    };
    let script = format!(
        "import sys\nfrom {module} import text_string_to_metric_families as parse\n\
         for f in parse(sys.stdin.read()):\n    print(f.name, f.type, len(f.samples))\n"
    );
    let out = piped("python3", &["-c", &script], text);
    assert!(
        out.status.success(),
        "the Python client cannot parse it: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `promtool check metrics` on classic exposition `text`: panics with its
/// complaints, if any.
pub fn promtool_check_metrics(text: &str) {
    let out = piped("promtool", &["check", "metrics"], text);
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Reads a raw TCP connection until the server closes it: `true` if it did
/// within `limit`.
pub async fn closed_within(s: &mut tokio::net::TcpStream, limit: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}
