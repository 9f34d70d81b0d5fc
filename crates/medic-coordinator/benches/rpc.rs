//! The coordinator's serving figures, each phase in one run against the
//! same server stack on loopback:
//!
//! 1. the ceiling: a no-op unary RPC (`grpc.health.v1.Health/Check`) from 64
//!    concurrent clients;
//! 2. `RequestPermit` on the deny path and 3. `Heartbeat`, same clients,
//!    reported as ratios of the ceiling with p50/p99 latency;
//! 4. durable grants: 64 clients each granted a permit and reporting its
//!    outcome, grant latency p50/p99 and grants per second (commit batching);
//! 5. the real binary with 100,000 hosts heartbeating every 10 s: its RSS and
//!    CPU share, read from /proc;
//! 6. mutual TLS: phases 1–3 again over TLS with each client presenting its
//!    host's certificate (identity binding and authorization on every
//!    call), against the plaintext ceiling of phase 1;
//! 7. a flood from one identity: another host's heartbeat latency with and
//!    without one certificate flooding from 32 concurrent callers, under
//!    the default admission control;
//! 8. the deny path with ten alert gates and a custom action configured:
//!    every request asks for the custom action by name (`drain_host`), all
//!    ten gates are open and cover it, so each is judged before the cap
//!    denies; against the no-op ceiling of the same server and of phase 1.
//!    The gates read a stub Prometheus in this process that answers every
//!    query with no series.
//!
//! Run: `cargo bench -p medic-coordinator --bench rpc` (add `-- --soak 60`
//! to change the length of phase 5 in seconds; default 60).

#![allow(clippy::unwrap_used, clippy::cast_precision_loss)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use medic_coordinator::testing::{client_tls, dev_certs, tls_toml};
use medic_coordinator::{Control, CoordinatorConfig, Listeners, SystemClock, run};
use medic_proto::pb::v1 as pb;
use medic_store::RedbStore;
use tonic::transport::Channel;

const CLIENTS: usize = 64;
const HOSTS: usize = 10_000;
const PHASE: Duration = Duration::from_secs(5);

const CONFIG: &str = r#"
[server]
admission = { per_second = 100000, burst = 100000 }
[fleet]
heartbeat_interval = "1s"
host_ttl = "600s"
warmup = "1s"
[breaker]
unhealthy_percent = 100
failure_percent = 100
[limits.restart_job]
# Disabled: every request runs the rules and is denied (the deny path).
max_in_flight = 0
[limits.reboot_host]
max_in_flight = 100000
permit_ttl = "10m"
cooldown = "0s"
rate = { count = 1000000, per = "1h", burst = 1000000 }
host_budget = { max_attempts = 1000000, per = "1h" }
"#;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

struct PhaseResult {
    calls: usize,
    secs: f64,
    p50: Duration,
    p99: Duration,
}

impl PhaseResult {
    fn rate(&self) -> f64 {
        self.calls as f64 / self.secs
    }
}

/// Runs `call` from CLIENTS concurrent clients (one connection each) for
/// PHASE, and collects latencies: the whole call's, or the part the call
/// returns.
async fn phase<F, Fut>(channels: &[Channel], call: F) -> PhaseResult
where
    F: Fn(Channel, usize, usize) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = Option<Duration>> + Send,
{
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (c, ch) in channels.iter().enumerate() {
        let (ch, stop, call) = (ch.clone(), stop.clone(), call.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let part = call(ch.clone(), c, n).await;
                lat.push(part.unwrap_or_else(|| t.elapsed()));
                n += 1;
            }
            lat
        }));
    }
    tokio::time::sleep(PHASE).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let secs = started.elapsed().as_secs_f64();
    all.sort();
    PhaseResult {
        calls: all.len(),
        secs,
        p50: percentile(&all, 0.50),
        p99: percentile(&all, 0.99),
    }
}

fn host(c: usize, n: usize) -> String {
    format!("host-{:05}", (c * 7919 + n * 31) % HOSTS)
}

async fn in_process() -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let mut config = CoordinatorConfig::from_toml(CONFIG).unwrap();
    config.server.state_dir = dir.path().to_owned();
    let store = RedbStore::open(dir.path()).unwrap();
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = grpc.local_addr().unwrap();
    let (control, rx) = tokio::sync::mpsc::channel(1);
    let server = tokio::spawn(run(
        config,
        None,
        store,
        Listeners { grpc, metrics },
        rx,
        Arc::new(SystemClock),
    ));
    let mut channels = Vec::new();
    for _ in 0..CLIENTS {
        channels.push(connect(&format!("http://{addr}")).await);
    }
    // Register the fleet, then wait out the warm-up.
    let mut agent = pb::remediation_client::RemediationClient::new(channels[0].clone());
    for h in 0..HOSTS {
        agent
            .heartbeat(pb::HeartbeatRequest {
                host_id: format!("host-{h:05}"),
                agent_version: "bench".into(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;

    println!(
        "in-process server, {CLIENTS} concurrent clients on loopback, {HOSTS} hosts registered, {PHASE:?} per phase"
    );
    let noop = phase(&channels, |ch, _, _| async move {
        let mut h = tonic_health::pb::health_client::HealthClient::new(ch);
        h.check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();
        None
    })
    .await;
    // Requests are built before the phase, so the client measures calls,
    // not string formatting.
    let requests: Arc<Vec<pb::RequestPermitRequest>> = Arc::new(
        (0..4096)
            .map(|k| pb::RequestPermitRequest {
                dry_run: false,
                request_id: format!("deny-{k}"),
                host_id: host(k, k),
                action: pb::Action::RestartJob.into(),
                action_name: String::new(),
                job: "ingest".into(),
                reason: "bench".into(),
            })
            .collect(),
    );
    let beats: Arc<Vec<pb::HeartbeatRequest>> = Arc::new(
        (0..4096)
            .map(|k| pb::HeartbeatRequest {
                host_id: host(k, k),
                agent_version: "bench".into(),
                ..Default::default()
            })
            .collect(),
    );
    let deny = phase(&channels, move |ch, c, n| {
        let req = requests[(c * 64 + n) % requests.len()].clone();
        async move {
            let mut a = pb::remediation_client::RemediationClient::new(ch);
            let r = a.request_permit(req).await.unwrap().into_inner();
            assert!(matches!(
                r.decision,
                Some(pb::request_permit_response::Decision::Denied(_))
            ));
            None
        }
    })
    .await;
    let beat = phase(&channels, move |ch, c, n| {
        let req = beats[(c * 64 + n) % beats.len()].clone();
        async move {
            let mut a = pb::remediation_client::RemediationClient::new(ch);
            a.heartbeat(req).await.unwrap();
            None
        }
    })
    .await;
    let row = |name: &str, r: &PhaseResult| {
        println!(
            "  {name:<28} {:>9.0} calls/s  {:>5.2} of ceiling  p50 {:>8.3} ms  p99 {:>8.3} ms",
            r.rate(),
            r.rate() / noop.rate(),
            r.p50.as_secs_f64() * 1e3,
            r.p99.as_secs_f64() * 1e3
        );
    };
    row("no-op (Health/Check)", &noop);
    row("RequestPermit (denied)", &deny);
    row("Heartbeat", &beat);

    // Durable grants: each client owns its hosts; grant, then outcome.
    let grants = phase(&channels, |ch, c, n| async move {
        let mut a = pb::remediation_client::RemediationClient::new(ch);
        let h = format!("host-{:05}", c + CLIENTS * (n % (HOSTS / CLIENTS)));
        let t = Instant::now();
        let r = a
            .request_permit(pb::RequestPermitRequest {
                dry_run: false,
                request_id: format!("grant-{c}-{n}"),
                host_id: h.clone(),
                action: pb::Action::RebootHost.into(),
                action_name: String::new(),
                job: "ingest".into(),
                reason: "bench".into(),
            })
            .await
            .unwrap()
            .into_inner();
        let grant_latency = t.elapsed();
        let Some(pb::request_permit_response::Decision::Granted(g)) = r.decision else {
            panic!("not granted: {r:?}");
        };
        let p = g.permit.unwrap();
        a.report_outcome(pb::ReportOutcomeRequest {
            host_id: h,
            permit_id: p.permit_id,
            fencing_token: p.fencing_token,
            outcome: pb::Outcome::Succeeded.into(),
            detail: "bench".into(),
        })
        .await
        .unwrap();
        Some(grant_latency)
    })
    .await;
    println!(
        "  durable grants               {:>9.0} grants/s, each fsynced before its reply, then its outcome reported; grant latency p50 {:>8.3} ms  p99 {:>8.3} ms",
        grants.rate(),
        grants.p50.as_secs_f64() * 1e3,
        grants.p99.as_secs_f64() * 1e3
    );
    control.send(Control::Shutdown).await.unwrap();
    server.await.unwrap().unwrap();
    noop.rate()
}

/// A server on loopback port 0 with `toml`; returns its address and how to
/// stop it.
async fn start(
    toml: &str,
    dir: &std::path::Path,
) -> (
    std::net::SocketAddr,
    tokio::sync::mpsc::Sender<Control>,
    tokio::task::JoinHandle<Result<(), medic_coordinator::RunError>>,
) {
    let mut config = CoordinatorConfig::from_toml(toml).unwrap();
    config.server.state_dir = dir.join("state");
    let store = RedbStore::open(&config.server.state_dir).unwrap();
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = grpc.local_addr().unwrap();
    let (control, rx) = tokio::sync::mpsc::channel(1);
    let server = tokio::spawn(run(
        config,
        None,
        store,
        Listeners { grpc, metrics },
        rx,
        Arc::new(SystemClock),
    ));
    (addr, control, server)
}

async fn tls_connect(addr: std::net::SocketAddr, certs: &std::path::Path, who: &str) -> Channel {
    let endpoint = Channel::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(client_tls(certs, Some(who)))
        .unwrap();
    for _ in 0..200 {
        if let Ok(c) = endpoint.connect().await {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("cannot connect to {addr}");
}

fn beat(host: &str) -> pb::HeartbeatRequest {
    pb::HeartbeatRequest {
        host_id: host.to_owned(),
        agent_version: "bench".into(),
        ..Default::default()
    }
}

/// A stub of Prometheus' query API on loopback port 0: every request
/// (keep-alive included) gets an empty instant vector.
async fn stub_prometheus() -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let body = r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    // One request: its headers, then content-length bytes.
                    let need = loop {
                        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                            let len: usize = head
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .and_then(|v| v.trim().parse().ok())
                                .unwrap_or(0);
                            break end + 4 + len;
                        }
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    while buf.len() < need {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buf.drain(..need);
                    if s.write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// Phase 8: the deny path for a custom action, with ten open gates
/// covering every request.
async fn ten_gates(phase1_ceiling: f64) {
    let prometheus = stub_prometheus().await;
    let gates: String = (0..10)
        .map(|i| {
            format!(
                "[[gates]]\nname = \"gate-{i}\"\nprometheus = \"http://{prometheus}\"\n\
                 query = 'ALERTS{{alertstate=\"firing\",alertname=\"Alert{i}\"}}'\n\
                 interval = \"1s\"\ntimeout = \"500ms\"\n"
            )
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    // A custom action, disabled like restart_job in CONFIG: every request
    // for it runs every rule and is denied by the cap.
    let custom = "[actions.drain_host]\ndescription = \"drain the host\"\n\
                  [limits.drain_host]\nmax_in_flight = 0\n";
    let (addr, control, server) = start(&format!("{CONFIG}{custom}{gates}"), dir.path()).await;
    let mut channels = Vec::new();
    for _ in 0..CLIENTS {
        channels.push(connect(&format!("http://{addr}")).await);
    }
    let mut agent = pb::remediation_client::RemediationClient::new(channels[0].clone());
    for h in 0..HOSTS {
        agent
            .heartbeat(beat(&format!("host-{h:05}")))
            .await
            .unwrap();
    }
    // Past warm-up, and every gate evaluated and open: the request is
    // denied by the cap, after all ten gates let it through.
    let mut admin = pb::admin_client::AdminClient::new(channels[0].clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let e = admin
            .explain(pb::ExplainRequest {
                host_id: host(0, 0),
                action: pb::Action::Custom.into(),
                action_name: "drain_host".into(),
            })
            .await
            .unwrap()
            .into_inner();
        let reasons: Vec<pb::DenyReason> = e.denials.iter().map(|d| d.reason()).collect();
        if reasons == [pb::DenyReason::ConcurrencyCap] {
            break;
        }
        assert!(Instant::now() < deadline, "gates never opened: {e:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "a custom action (drain_host) and ten alert gates (open, each covering the request), \
         same clients and hosts"
    );
    let noop = phase(&channels, |ch, _, _| async move {
        let mut h = tonic_health::pb::health_client::HealthClient::new(ch);
        h.check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();
        None
    })
    .await;
    let requests: Arc<Vec<pb::RequestPermitRequest>> = Arc::new(
        (0..4096)
            .map(|k| pb::RequestPermitRequest {
                dry_run: false,
                request_id: format!("gated-{k}"),
                host_id: host(k, k),
                action: pb::Action::Custom.into(),
                action_name: "drain_host".into(),
                job: "ingest".into(),
                reason: "bench".into(),
            })
            .collect(),
    );
    let deny = phase(&channels, move |ch, c, n| {
        let req = requests[(c * 64 + n) % requests.len()].clone();
        async move {
            let mut a = pb::remediation_client::RemediationClient::new(ch);
            let r = a.request_permit(req).await.unwrap().into_inner();
            match r.decision {
                Some(pb::request_permit_response::Decision::Denied(d)) => {
                    assert_eq!(d.reason(), pb::DenyReason::ConcurrencyCap, "{d:?}");
                }
                other => panic!("not denied by the cap: {other:?}"),
            }
            None
        }
    })
    .await;
    println!(
        "  {:<34} {:>9.0} calls/s",
        "no-op (Health/Check)",
        noop.rate()
    );
    println!(
        "  {:<34} {:>9.0} calls/s  {:>5.2} of this server's ceiling  {:>5.2} of phase 1's  p50 {:>8.3} ms  p99 {:>8.3} ms",
        "RequestPermit drain_host (denied)",
        deny.rate(),
        deny.rate() / noop.rate(),
        deny.rate() / phase1_ceiling,
        deny.p50.as_secs_f64() * 1e3,
        deny.p99.as_secs_f64() * 1e3
    );
    control.send(Control::Shutdown).await.unwrap();
    server.await.unwrap().unwrap();
}

/// Phases 1–3 over mutual TLS, each client speaking for its own host.
async fn mutual_tls(plain_ceiling: f64) {
    let dir = tempfile::tempdir().unwrap();
    let hosts: Vec<String> = (0..CLIENTS).map(|c| format!("host-{c:05}")).collect();
    let names: Vec<&str> = hosts.iter().map(String::as_str).collect();
    let certs = dev_certs(dir.path(), &names);
    let (addr, control, server) = start(&format!("{CONFIG}{}", tls_toml(&certs)), dir.path()).await;
    let mut channels = Vec::new();
    for h in &hosts {
        let ch = tls_connect(addr, &certs, &format!("agents/{h}")).await;
        pb::remediation_client::RemediationClient::new(ch.clone())
            .heartbeat(beat(h))
            .await
            .unwrap();
        channels.push(ch);
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    println!(
        "mutual TLS: {CLIENTS} clients, each with its host's certificate, {PHASE:?} per phase"
    );
    // A first pass warms the connections (and the allocator) up.
    let _ = phase(&channels, |ch, _, _| async move {
        let mut h = tonic_health::pb::health_client::HealthClient::new(ch);
        h.check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();
        None
    })
    .await;
    let noop = phase(&channels, |ch, _, _| async move {
        let mut h = tonic_health::pb::health_client::HealthClient::new(ch);
        h.check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();
        None
    })
    .await;
    let hosts = Arc::new(hosts);
    let deny = {
        let hosts = hosts.clone();
        phase(&channels, move |ch, c, n| {
            let req = pb::RequestPermitRequest {
                dry_run: false,
                request_id: format!("deny-{c}-{}", n % 64),
                host_id: hosts[c].clone(),
                action: pb::Action::RestartJob.into(),
                action_name: String::new(),
                job: "ingest".into(),
                reason: "bench".into(),
            };
            async move {
                let mut a = pb::remediation_client::RemediationClient::new(ch);
                let r = a.request_permit(req).await.unwrap().into_inner();
                assert!(matches!(
                    r.decision,
                    Some(pb::request_permit_response::Decision::Denied(_))
                ));
                None
            }
        })
        .await
    };
    let heartbeat = {
        let hosts = hosts.clone();
        phase(&channels, move |ch, c, _| {
            let req = beat(&hosts[c]);
            async move {
                let mut a = pb::remediation_client::RemediationClient::new(ch);
                a.heartbeat(req).await.unwrap();
                None
            }
        })
        .await
    };
    let row = |name: &str, r: &PhaseResult| {
        println!(
            "  {name:<28} {:>9.0} calls/s  {:>5.2} of the TLS ceiling  {:>5.2} of the plaintext ceiling  p50 {:>8.3} ms  p99 {:>8.3} ms",
            r.rate(),
            r.rate() / noop.rate(),
            r.rate() / plain_ceiling,
            r.p50.as_secs_f64() * 1e3,
            r.p99.as_secs_f64() * 1e3
        );
    };
    row("no-op (Health/Check), TLS", &noop);
    row("RequestPermit (denied), TLS", &deny);
    row("Heartbeat, TLS", &heartbeat);
    control.send(Control::Shutdown).await.unwrap();
    server.await.unwrap().unwrap();
}

/// Median of `n` sequential heartbeats of `host`.
async fn median_heartbeat(ch: &Channel, host: &str, n: usize) -> Duration {
    let mut a = pb::remediation_client::RemediationClient::new(ch.clone());
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        a.heartbeat(beat(host)).await.unwrap();
        lat.push(t.elapsed());
        // 16 calls a second: under the victim's own admission limit.
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    lat.sort();
    percentile(&lat, 0.5)
}

/// One certificate floods; another host is measured with and without it,
/// under the default admission control (20/s, burst 40 per identity).
async fn flood() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dev_certs(dir.path(), &["flooder", "victim"]);
    let toml = CONFIG.replace(
        "admission = { per_second = 100000, burst = 100000 }",
        "admission = { per_second = 20, burst = 40 }",
    );
    let (addr, control, server) = start(&format!("{toml}{}", tls_toml(&certs)), dir.path()).await;
    let victim = tls_connect(addr, &certs, "agents/victim").await;
    let flooder = tls_connect(addr, &certs, "agents/flooder").await;
    let quiet = median_heartbeat(&victim, "victim", 100).await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (ch, stop) = (flooder.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut a = pb::remediation_client::RemediationClient::new(ch);
            let (mut ok, mut limited) = (0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                match a.heartbeat(beat("flooder")).await {
                    Ok(_) => ok += 1,
                    Err(e) if e.code() == tonic::Code::ResourceExhausted => limited += 1,
                    Err(e) => panic!("{e}"),
                }
            }
            (ok, limited)
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = Instant::now();
    let flooded = median_heartbeat(&victim, "victim", 100).await;
    let secs = t.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let (mut ok, mut limited) = (0, 0);
    for t in tasks {
        let (o, l) = t.await.unwrap();
        ok += o;
        limited += l;
    }
    println!(
        "flood from one identity (32 concurrent callers, default admission 20/s burst 40): \
         {:.0} calls/s refused RESOURCE_EXHAUSTED, {ok} admitted; another host's median \
         heartbeat {:.3} ms quiet, {:.3} ms during the flood: ratio {:.2}",
        limited as f64 / secs,
        quiet.as_secs_f64() * 1e3,
        flooded.as_secs_f64() * 1e3,
        flooded.as_secs_f64() / quiet.as_secs_f64()
    );
    control.send(Control::Shutdown).await.unwrap();
    server.await.unwrap().unwrap();
}

async fn connect(url: &str) -> Channel {
    for _ in 0..200 {
        if let Ok(c) = Channel::from_shared(url.to_owned())
            .unwrap()
            .connect()
            .await
        {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("cannot connect to {url}");
}

/// (RSS in KiB, CPU ticks) of a process, from /proc.
fn proc_usage(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    (rss, ticks)
}

async fn soak(secs: u64) {
    const FLEET: usize = 100_000;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("coordinator.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nmetrics_listen = \"127.0.0.1:0\"\nstate_dir = \"{}\"\n\
             admission = {{ per_second = 100000, burst = 100000 }}\n[fleet]\nheartbeat_interval = \"10s\"\n",
            dir.path().join("state").display()
        ),
    )
    .unwrap();
    let exe = env!("CARGO_BIN_EXE_medic-coordinator");
    let mut child = Command::new(exe)
        .args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn,medic_coordinator::server=info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {exe}: {e}"));
    let pid = child.id();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("coordinator exited").unwrap();
        if let Some(i) = line.find("grpc=") {
            break line[i + 5..].split_whitespace().next().unwrap().to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let mut channels = Vec::new();
    for _ in 0..16 {
        channels.push(connect(&format!("http://{addr}")).await);
    }
    // 100,000 hosts, each heartbeating every 10 s: 10,000 heartbeats/s,
    // spread evenly over 16 connections.
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for (c, ch) in channels.iter().enumerate() {
        let (ch, stop) = (ch.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut a = pb::remediation_client::RemediationClient::new(ch);
            let mine: Vec<String> = (c..FLEET)
                .step_by(16)
                .map(|h| format!("host-{h:06}"))
                .collect();
            let per_host = Duration::from_secs(10) / mine.len() as u32;
            let mut tick = tokio::time::interval(per_host);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                a.heartbeat(pb::HeartbeatRequest {
                    host_id: mine[i % mine.len()].clone(),
                    agent_version: "bench".into(),
                    labels: [("rack".to_owned(), format!("r{:03}", i % 500))].into(),
                    ..Default::default()
                })
                .await
                .unwrap();
                i += 1;
            }
            i
        }));
    }
    // The first 10 s register the fleet; measure after that.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let ticks_per_sec = 100.0; // USER_HZ on Linux
    let (_, t0) = proc_usage(pid);
    let w0 = Instant::now();
    let mut peak = 0;
    while w0.elapsed() < Duration::from_secs(secs) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        peak = peak.max(proc_usage(pid).0);
    }
    let (rss, t1) = proc_usage(pid);
    let cpu = (t1 - t0) as f64 / ticks_per_sec / w0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let mut sent = 0;
    for t in tasks {
        sent += t.await.unwrap();
    }
    let total = w0.elapsed().as_secs_f64() + 12.0;
    println!(
        "coordinator binary, {FLEET} hosts heartbeating every 10 s ({:.0} heartbeats/s sent), measured over {secs} s:",
        sent as f64 / total
    );
    println!(
        "  RSS {:.1} MiB (peak {:.1} MiB), CPU {:.1}% of one core",
        rss as f64 / 1024.0,
        peak as f64 / 1024.0,
        cpu * 100.0
    );
    stop_child(&mut child);
}

fn stop_child(child: &mut std::process::Child) {
    let _ = child.kill();
    let _ = child.wait();
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let soak_secs = args
        .iter()
        .position(|a| a == "--soak")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    // `cargo bench` passes --bench; `cargo test --benches` would run us
    // too: only run when benchmarking.
    if !args.iter().any(|a| a == "--bench") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let ceiling = rt.block_on(in_process());
    rt.block_on(ten_gates(ceiling));
    rt.block_on(mutual_tls(ceiling));
    rt.block_on(flood());
    if soak_secs > 0 {
        rt.block_on(soak(soak_secs));
    }
}
