//! Alert gates against a real Prometheus (Debian's `prometheus`, which
//! scripts/test installs): each test starts its own server on loopback,
//! with rules that fire at once (`for: 0s`) and a 100 ms evaluation
//! interval, and kills it at the end. The coordinator runs in-process
//! (`TestServer`), driven through its gRPC API.
//!
//! Prometheus evaluates on its own schedule, so the tests wait for a state
//! (a denial naming the alert, a grant, a metric) with a deadline instead
//! of sleeping a fixed time.

#![allow(clippy::unwrap_used)]

mod common;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use medic_proto::pb::v1 as pb;

use pb::Action::{RebootHost, RestartJob};

/// How long a test waits for Prometheus and the coordinator to agree.
const DEADLINE: Duration = Duration::from_secs(30);

// === A throwaway Prometheus ===

/// Rules: `DatabaseDown` fires fleet-wide while `firing`; `RackPower`
/// always fires for rack r12.
fn rules(firing: bool) -> String {
    format!(
        r#"groups:
  - name: medic-test
    interval: 100ms
    rules:
      - alert: DatabaseDown
        expr: vector({}) > 0
        for: 0s
        labels:
          severity: page
      - alert: RackPower
        expr: label_replace(vector(1), "rack", "r12", "", "")
        for: 0s
"#,
        u8::from(firing)
    )
}

struct Prometheus {
    child: Child,
    addr: SocketAddr,
    rules: PathBuf,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts one on a free loopback port (Prometheus cannot listen on
    /// port 0: a port is found by binding one, then handed over; if
    /// another process takes it meanwhile, another is tried).
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let rules_path = dir.path().join("rules.yml");
        std::fs::write(&rules_path, rules(true)).unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            "global:\n  evaluation_interval: 100ms\nrule_files:\n  - rules.yml\n",
        )
        .unwrap();
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
            let mut child = Command::new("prometheus")
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address={addr}"))
                .arg("--log.level=warn")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("cannot run prometheus ({e}); scripts/test installs it (apt-get install prometheus)")
                });
            if ready(addr, &mut child).await {
                firing(addr).await;
                return Self {
                    child,
                    addr,
                    rules: rules_path,
                    _dir: dir,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("prometheus did not start on any of 5 loopback ports");
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Rewrites the rules and has Prometheus read them again (SIGHUP).
    fn set_firing(&self, firing: bool) {
        std::fs::write(&self.rules, rules(firing)).unwrap();
        let status = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether Prometheus at `addr` answers `/-/ready` before it exits or the
/// deadline passes.
async fn ready(addr: SocketAddr, child: &mut Child) -> bool {
    let start = Instant::now();
    while start.elapsed() < DEADLINE {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        if tokio::net::TcpStream::connect(addr).await.is_ok()
            && http_get(addr, "/-/ready").await.starts_with("HTTP/1.1 200")
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Waits until Prometheus' first rule evaluation has both alerts firing:
/// before it, a gate would see nothing and let requests through.
async fn firing(addr: SocketAddr) {
    eventually("prometheus' rules to fire", || async {
        let body = http_get(addr, "/api/v1/query?query=ALERTS").await;
        (body.contains("DatabaseDown") && body.contains("RackPower")).then_some(())
    })
    .await;
}

// === Helpers ===

/// Polls `f` until it returns `Some`, or fails naming `what`.
async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A loopback address nothing listens on.
fn dead_address() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("http://127.0.0.1:{port}")
}

/// A coordinator with `gates` appended to the fast test settings, hosts
/// `(name, rack)` heartbeating, past warm-up.
async fn coordinator(dir: &Path, gates: &str, hosts: &[(&str, &str)]) -> (TestServer, Agent) {
    let server = TestServer::start(dir, &format!("{FAST}{gates}")).await;
    let mut agent = server.agent().await;
    for (h, rack) in hosts {
        heartbeat(&mut agent, h, labels(&[("rack", rack)]), true).await;
    }
    server.advance(Duration::from_secs(3));
    for (h, rack) in hosts {
        heartbeat(&mut agent, h, labels(&[("rack", rack)]), true).await;
    }
    (server, agent)
}

/// Asks for `action` on `host` with a fresh request id.
async fn ask(
    agent: &mut Agent,
    host: &str,
    action: pb::Action,
) -> pb::request_permit_response::Decision {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    request(agent, host, action, &format!("req-{n}")).await
}

/// The gate denial, if `d` is one.
fn gate_closed(d: &pb::request_permit_response::Decision) -> Option<String> {
    match d {
        pb::request_permit_response::Decision::Denied(d)
            if d.reason() == pb::DenyReason::GateClosed =>
        {
            Some(d.message.clone())
        }
        _ => None,
    }
}

/// The value of the series `series` (exactly, labels included) in
/// `/metrics`.
async fn metric(server: &TestServer, series: &str) -> Option<f64> {
    let body = http_get(server.metrics_addr, "/metrics").await;
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

// === Tests ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grant_denied_while_gate_closed_and_granted_when_the_alert_stops() {
    let prom = Prometheus::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gates = format!(
        r#"
[[gates]]
name = "db-down"
prometheus = "{}"
query = 'ALERTS{{alertstate="firing",alertname="DatabaseDown"}}'
interval = "200ms"
timeout = "200ms"
"#,
        prom.url()
    );
    let (server, agent) = coordinator(dir.path(), &gates, &[("web-1", "r1")]).await;

    let message = eventually("a denial naming the firing alert", || {
        let mut agent = agent.clone();
        async move {
            gate_closed(&ask(&mut agent, "web-1", RestartJob).await)
                .filter(|m| m.contains("returns"))
        }
    })
    .await;
    assert!(message.contains("gate db-down is closed"), "{message}");
    assert!(message.contains(r#"alertname="DatabaseDown""#), "{message}");
    assert_eq!(
        metric(&server, r#"medic_gate_open{gate="db-down"}"#).await,
        Some(0.0)
    );
    assert_eq!(
        metric(
            &server,
            r#"medic_decisions_total{action="restart_job",outcome="gate_closed"}"#
        )
        .await
        .map(|v| v > 0.0),
        Some(true)
    );

    prom.set_firing(false);
    eventually("a grant once the alert stopped", || {
        let mut agent = agent.clone();
        async move {
            match ask(&mut agent, "web-1", RestartJob).await {
                pb::request_permit_response::Decision::Granted(g) => Some(g),
                _ => None,
            }
        }
    })
    .await;
    assert_eq!(
        metric(&server, r#"medic_gate_open{gate="db-down"}"#).await,
        Some(1.0)
    );
    assert_eq!(
        metric(&server, r#"medic_gate_failing{gate="db-down"}"#).await,
        Some(0.0)
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_rack_gate_stops_only_the_rack_whose_alert_fires() {
    let prom = Prometheus::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gates = format!(
        r#"
[[gates]]
name = "rack-power"
prometheus = "{}"
query = 'ALERTS{{alertstate="firing",alertname="RackPower",rack="$value"}}'
label = "rack"
interval = "200ms"
timeout = "200ms"
"#,
        prom.url()
    );
    let (server, agent) =
        coordinator(dir.path(), &gates, &[("web-12", "r12"), ("web-1", "r1")]).await;

    let message = eventually("rack r12 held by its alert", || {
        let mut agent = agent.clone();
        async move {
            gate_closed(&ask(&mut agent, "web-12", RebootHost).await)
                .filter(|m| m.contains("returns"))
        }
    })
    .await;
    assert!(
        message.contains("gate rack-power for rack=r12 is closed"),
        "{message}"
    );
    assert!(message.contains(r#"rack="r12""#), "{message}");
    // Rack r1 is not held. Until the gate's first round that knows rack r1
    // (web-1 may have registered after the round that found r12 firing), the
    // only denial allowed is "not evaluated yet"; after it, a grant.
    let decision = eventually("rack r1 evaluated", || {
        let mut agent = agent.clone();
        async move {
            let d = ask(&mut agent, "web-1", RebootHost).await;
            match gate_closed(&d) {
                Some(m) if m.contains("not evaluated yet") => None,
                _ => Some(d),
            }
        }
    })
    .await;
    granted(decision);
    assert_eq!(
        metric(&server, r#"medic_gate_closed_domains{gate="rack-power"}"#).await,
        Some(1.0)
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_prometheus_closes_the_gate_unless_it_says_on_error_open() {
    let dir = tempfile::tempdir().unwrap();
    let dead = dead_address();
    let gates = format!(
        r#"
[[gates]]
name = "blind-closed"
prometheus = "{dead}"
query = 'ALERTS{{alertstate="firing"}}'
actions = ["restart_job"]
interval = "200ms"
timeout = "200ms"

[[gates]]
name = "blind-open"
prometheus = "{dead}"
query = 'ALERTS{{alertstate="firing"}}'
actions = ["reboot_host"]
on_error = "open"
interval = "200ms"
timeout = "200ms"
"#
    );
    let (server, mut agent) =
        coordinator(dir.path(), &gates, &[("web-1", "r1"), ("web-2", "r1")]).await;

    eventually("both gates failing", || async {
        let closed = metric(&server, r#"medic_gate_failing{gate="blind-closed"}"#).await;
        let open = metric(&server, r#"medic_gate_failing{gate="blind-open"}"#).await;
        (closed == Some(1.0) && open == Some(1.0)).then_some(())
    })
    .await;
    let message = eventually("a denial naming the unreachable source", || {
        let mut agent = agent.clone();
        async move {
            gate_closed(&ask(&mut agent, "web-1", RestartJob).await)
                .filter(|m| m.contains("unreachable"))
        }
    })
    .await;
    assert!(message.contains("gate blind-closed is closed"), "{message}");
    assert!(
        message.contains("Connection refused") || message.contains("refused"),
        "{message}"
    );
    granted(ask(&mut agent, "web-2", RebootHost).await);

    assert_eq!(
        metric(&server, r#"medic_gate_open{gate="blind-closed"}"#).await,
        Some(0.0)
    );
    assert_eq!(
        metric(&server, r#"medic_gate_open{gate="blind-open"}"#).await,
        Some(1.0)
    );
    assert!(
        metric(&server, r#"medic_gate_errors_total{gate="blind-open"}"#)
            .await
            .unwrap()
            > 0.0
    );
    assert_eq!(
        metric(
            &server,
            r#"medic_gate_last_success_timestamp_seconds{gate="blind-closed"}"#
        )
        .await,
        Some(0.0)
    );

    // Explain shows both: the closed gate as a denial, the open one as a
    // note.
    let mut admin = server.admin().await;
    let e = admin
        .explain(pb::ExplainRequest {
            host_id: "web-1".into(),
            action: RestartJob.into(),
            action_name: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        e.denials
            .iter()
            .any(|d| d.reason() == pb::DenyReason::GateClosed && d.message.contains("blind-closed")),
        "{e:?}"
    );
    // Its latest reading may be a stale one for a moment (a busy machine
    // delays the next round): wait for the round that says why.
    let e = eventually("the open gate's note naming the unreachable source", || {
        let mut admin = admin.clone();
        async move {
            let e = admin
                .explain(pb::ExplainRequest {
                    host_id: "web-1".into(),
                    action: RebootHost.into(),
                    action_name: String::new(),
                })
                .await
                .unwrap()
                .into_inner();
            e.notes
                .iter()
                .any(|n| {
                    n.contains("gate blind-open cannot be evaluated") && n.contains("unreachable")
                })
                .then_some(e)
        }
    })
    .await;
    assert!(e.would_grant, "{e:?}");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_prometheus_refuses_is_a_closed_gate_with_its_error_in_explain_and_metrics() {
    let prom = Prometheus::start().await;
    let dir = tempfile::tempdir().unwrap();
    // Balanced and quoted, so it passes the config's checks; Prometheus
    // knows no such function and answers 400.
    let gates = format!(
        r#"
[[gates]]
name = "typo"
prometheus = "{}"
query = 'no_such_function(ALERTS{{alertstate="firing"}})'
interval = "200ms"
timeout = "200ms"
"#,
        prom.url()
    );
    let (server, mut agent) = coordinator(dir.path(), &gates, &[("web-1", "r1")]).await;
    let admin = server.admin().await;
    let message = eventually("explain naming Prometheus' error", || {
        let mut admin = admin.clone();
        async move {
            let e = admin
                .explain(pb::ExplainRequest {
                    host_id: "web-1".into(),
                    action: RestartJob.into(),
                    action_name: String::new(),
                })
                .await
                .unwrap()
                .into_inner();
            e.denials
                .into_iter()
                .find(|d| {
                    d.reason() == pb::DenyReason::GateClosed && d.message.contains("HTTP 400")
                })
                .map(|d| d.message)
        }
    })
    .await;
    assert!(message.contains("bad_data"), "{message}");
    assert!(message.contains("no_such_function"), "{message}");
    gate_closed(&ask(&mut agent, "web-1", RestartJob).await).unwrap();
    assert_eq!(
        metric(&server, r#"medic_gate_failing{gate="typo"}"#).await,
        Some(1.0)
    );
    assert!(
        metric(&server, r#"medic_gate_errors_total{gate="typo"}"#)
            .await
            .unwrap()
            > 0.0
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_gate_config_is_refused_by_key_and_a_reload_keeps_the_running_gates() {
    let prom = Prometheus::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gate = format!(
        r#"
[[gates]]
name = "db-down"
prometheus = "{}"
query = 'ALERTS{{alertstate="firing",alertname="DatabaseDown"}}'
interval = "200ms"
timeout = "200ms"
"#,
        prom.url()
    );
    let (server, mut agent) = coordinator(dir.path(), &gate, &[("web-1", "r1")]).await;
    eventually("the gate closed by the alert", || {
        let mut agent = agent.clone();
        async move {
            gate_closed(&ask(&mut agent, "web-1", RestartJob).await)
                .filter(|m| m.contains("DatabaseDown"))
        }
    })
    .await;

    let bad = format!(
        "{FAST}{}",
        gate.replace("DatabaseDown\"}'", "DatabaseDown\"'").replace(
            "interval = \"200ms\"",
            "interval = \"200ms\"\nactions = [\"reimage\"]"
        )
    );
    let errs = medic_coordinator::CoordinatorConfig::from_toml(&bad)
        .unwrap_err()
        .to_string();
    assert!(
        errs.contains("gates[0].query: has an unclosed '{'"),
        "{errs}"
    );
    assert!(
        errs.contains("gates[0].actions: unknown action \"reimage\""),
        "{errs}"
    );

    std::fs::write(&server.config_path, bad).unwrap();
    server.reload().await;
    eventually("the reload counted as rejected", || async {
        (metric(&server, r#"medic_config_reloads_total{result="error"}"#).await == Some(1.0))
            .then_some(())
    })
    .await;
    // The old gate still holds, and still follows Prometheus.
    gate_closed(&ask(&mut agent, "web-1", RestartJob).await).unwrap();
    prom.set_firing(false);
    eventually("a grant once the alert stopped", || {
        let mut agent = agent.clone();
        async move {
            match ask(&mut agent, "web-1", RestartJob).await {
                pb::request_permit_response::Decision::Granted(g) => Some(g),
                _ => None,
            }
        }
    })
    .await;
    server.stop().await.unwrap();
}
