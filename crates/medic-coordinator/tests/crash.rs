//! Crash safety of the real binary (I5, I6, I7): the coordinator dies
//! without a clean shutdown in the middle of a stream of grants and
//! outcomes, at several points, including right after a commit and before
//! its replies leave (fault injection), and by SIGKILL from outside. After
//! each restart: no grant the agents saw is lost, none is duplicated,
//! fencing tokens still increase, the rate budget is not refilled, and
//! pauses and quarantines are still in force.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use medic_proto::pb::v1 as pb;
use pb::request_permit_response::Decision;
use tonic::transport::Channel;

const CONFIG: &str = r#"
[server]
listen = "127.0.0.1:0"
metrics_listen = "127.0.0.1:0"
state_dir = "STATE"
[audit]
snapshot_every = 25
[fleet]
heartbeat_interval = "1s"
host_ttl = "60s"
warmup = "1s"
[breaker]
unhealthy_percent = 100
failure_percent = 100
[limits.restart_job]
max_in_flight = 1000
permit_ttl = "10m"
cooldown = "0s"
rate = { count = 100000, per = "1h", burst = 100000 }
host_budget = { max_attempts = 100000, per = "1h" }
[limits.reboot_host]
max_in_flight = 10
permit_ttl = "10m"
rate = { count = 2, per = "1h", burst = 0 }
"#;

struct Coordinator {
    child: Child,
    addr: String,
}

fn start(dir: &Path, crash_after: Option<u64>) -> Coordinator {
    let config = dir.join("coordinator.toml");
    std::fs::write(
        &config,
        CONFIG.replace("STATE", &dir.join("state").display().to_string()),
    )
    .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_medic-coordinator"));
    cmd.arg("run")
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "info")
        .env_remove("MEDIC_CRASH_AFTER_COMMITS")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(n) = crash_after {
        cmd.env("MEDIC_CRASH_AFTER_COMMITS", n.to_string());
    }
    let mut child = cmd.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std_mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if !sent && let Some(i) = line.find("grpc=") {
                let addr: String = line[i + 5..]
                    .chars()
                    .take_while(|c| !c.is_whitespace())
                    .collect();
                let _ = tx.send(addr);
                sent = true;
            }
            // Keep draining so the child never blocks on a full pipe.
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the coordinator logs its address within 20s");
    Coordinator { child, addr }
}

async fn connect(addr: &str) -> Channel {
    let url = format!("http://{addr}");
    for _ in 0..200 {
        if let Ok(c) = Channel::from_shared(url.clone()).unwrap().connect().await {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("cannot connect to {url}");
}

async fn heartbeat_all(
    agent: &mut pb::remediation_client::RemediationClient<Channel>,
    hosts: usize,
) {
    for h in 0..hosts {
        agent
            .heartbeat(pb::HeartbeatRequest {
                host_id: format!("h{h}"),
                agent_version: "crash-test".into(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
}

/// What the agents saw: request id → (host, the grant if a reply came).
#[derive(Default)]
struct Seen {
    sent: BTreeMap<String, (String, Option<(String, u64)>)>,
    /// Grants received so far, for a killer that waits for some.
    granted: Arc<std::sync::atomic::AtomicUsize>,
}

/// Grants and outcomes from `hosts` hosts until the coordinator dies.
async fn stream_until_dead(addr: &str, hosts: usize, seen: &mut Seen, round: usize) {
    let channel = connect(addr).await;
    let mut agent = pb::remediation_client::RemediationClient::new(channel);
    // A restarted coordinator knows no host until it heartbeats.
    for h in 0..hosts {
        let r = agent
            .heartbeat(pb::HeartbeatRequest {
                host_id: format!("h{h}"),
                agent_version: "crash-test".into(),
                ..Default::default()
            })
            .await;
        if r.is_err() {
            return; // died already
        }
    }
    let mut n = 0usize;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let host = format!("h{}", n % hosts);
        let rid = format!("r{round}-{n}");
        n += 1;
        seen.sent.insert(rid.clone(), (host.clone(), None));
        let req = pb::RequestPermitRequest {
            dry_run: false,
            request_id: rid.clone(),
            host_id: host.clone(),
            action: pb::Action::RestartJob.into(),
            action_name: String::new(),
            job: "ingest".into(),
            reason: "crash test".into(),
        };
        let Ok(reply) = agent.request_permit(req).await else {
            return; // dead
        };
        match reply.into_inner().decision {
            Some(Decision::Granted(g)) => {
                let p = g.permit.unwrap();
                seen.sent.get_mut(&rid).unwrap().1 = Some((p.permit_id.clone(), p.fencing_token));
                seen.granted
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let r = agent
                    .report_outcome(pb::ReportOutcomeRequest {
                        host_id: host,
                        permit_id: p.permit_id,
                        fencing_token: p.fencing_token,
                        outcome: pb::Outcome::Succeeded.into(),
                        detail: "ok".into(),
                    })
                    .await;
                if r.is_err() {
                    return;
                }
            }
            Some(Decision::Denied(d)) => {
                // Host busy after a crash (an outcome that did not land): fine.
                assert!(
                    matches!(
                        d.reason(),
                        pb::DenyReason::HostBusy | pb::DenyReason::WarmingUp
                    ),
                    "unexpected denial {d:?}"
                );
                if d.reason() == pb::DenyReason::WarmingUp {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            Some(Decision::Waiting(w)) => panic!("no approvals are configured: {w:?}"),
            None => panic!("no decision"),
        }
    }
    panic!("the coordinator did not die within 30s");
}

/// Every grant in the durable history, in id order: (request id, token).
async fn grants_in_history(
    admin: &mut pb::admin_client::AdminClient<Channel>,
) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let page = admin
            .get_history(pb::GetHistoryRequest {
                kinds: vec![pb::EventKind::Grant.into()],
                page_size: 1000,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        for e in page.events {
            if let Some(pb::event::Payload::PermitGranted(g)) = e.payload {
                let p = g.permit.unwrap();
                out.push((p.request_id, p.fencing_token));
            }
        }
        if page.next_page_token.is_empty() {
            return out;
        }
        token = page.next_page_token;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_survive_crashes_at_every_point() {
    let dir = tempfile::tempdir().unwrap();
    let hosts = 8;
    let mut seen = Seen::default();

    // Set the scene: a pause, a quarantine, and the reboot budget spent.
    let mut c = start(dir.path(), None);
    let channel = connect(&c.addr).await;
    let mut agent = pb::remediation_client::RemediationClient::new(channel.clone());
    let mut admin = pb::admin_client::AdminClient::new(channel);
    heartbeat_all(&mut agent, hosts + 3).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    heartbeat_all(&mut agent, hosts + 3).await;
    admin
        .pause(pb::PauseRequest {
            scope: Some(pb::Scope {
                selector: [("rack".to_owned(), "r9".to_owned())].into(),
                action: 0,
                action_name: String::new(),
            }),
            reason: "rack r9 switch replacement".into(),
            duration: None,
        })
        .await
        .unwrap();
    admin
        .quarantine(pb::QuarantineRequest {
            host_id: "h9".into(),
            reason: "bad disk".into(),
        })
        .await
        .unwrap();
    let reboot = agent
        .request_permit(pb::RequestPermitRequest {
            dry_run: false,
            request_id: "reboot-1".into(),
            host_id: "h8".into(),
            action: pb::Action::RebootHost.into(),
            action_name: String::new(),
            job: "ingest".into(),
            reason: "restarts failed".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        matches!(reboot.decision, Some(Decision::Granted(_))),
        "{reboot:?}"
    );
    c.child.kill().unwrap();
    c.child.wait().unwrap();

    // Crash after the 3rd, 10th and 40th commits (fault injection: after
    // the fsync, before the replies), and once by SIGKILL from outside.
    for (round, crash) in [Some(3u64), Some(10), Some(40), None]
        .into_iter()
        .enumerate()
    {
        let mut c = start(dir.path(), crash);
        match crash {
            Some(_) => {
                stream_until_dead(&c.addr, hosts, &mut seen, round).await;
                let status = c.child.wait().unwrap();
                assert!(!status.success(), "the coordinator should have aborted");
            }
            None => {
                let addr = c.addr.clone();
                // Killed mid-stream: once this round has had 20 grants
                // (past the warm-up, however slow the machine), and at
                // least 1.5 s in.
                let granted = seen.granted.clone();
                let before = granted.load(std::sync::atomic::Ordering::Relaxed);
                let killer = tokio::spawn(async move {
                    let start = Instant::now();
                    while granted.load(std::sync::atomic::Ordering::Relaxed) < before + 20
                        || start.elapsed() < Duration::from_millis(1500)
                    {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                });
                let stream = stream_until_dead(&addr, hosts, &mut seen, round);
                tokio::pin!(stream);
                tokio::select! {
                    () = &mut stream => {}
                    _ = killer => {
                        c.child.kill().unwrap(); // SIGKILL
                        stream.await;
                    }
                }
                c.child.wait().unwrap();
            }
        }
    }

    // Restart cleanly and check everything.
    let c = start(dir.path(), None);
    let channel = connect(&c.addr).await;
    let mut agent = pb::remediation_client::RemediationClient::new(channel.clone());
    let mut admin = pb::admin_client::AdminClient::new(channel);
    heartbeat_all(&mut agent, hosts + 3).await;

    let history = grants_in_history(&mut admin).await;
    // I5: tokens strictly increase in log order; no token twice.
    for w in history.windows(2) {
        assert!(w[0].1 < w[1].1, "tokens not increasing: {w:?}");
    }
    // No duplicate grant for one request id (I7).
    let mut by_request: HashMap<&str, u64> = HashMap::new();
    for (rid, token) in &history {
        assert!(
            by_request.insert(rid, *token).is_none(),
            "request {rid} granted twice"
        );
    }
    // I6: every grant an agent saw is durable, with the same token.
    let mut seen_grants = 0;
    for (rid, (_, grant)) in &seen.sent {
        if let Some((_, token)) = grant {
            seen_grants += 1;
            assert_eq!(
                by_request.get(rid.as_str()),
                Some(token),
                "grant {rid} lost"
            );
        }
    }
    assert!(
        seen_grants >= 30,
        "the test made too few grants ({seen_grants}) to mean much"
    );
    // Requests whose replies were lost: a retry returns the durable grant
    // (replayed) or decides afresh if it never became durable.
    let unanswered: Vec<(&String, &String)> = seen
        .sent
        .iter()
        .filter(|(_, (_, g))| g.is_none())
        .map(|(rid, (host, _))| (rid, host))
        .collect();
    let mut replays = 0;
    for (rid, host) in &unanswered {
        if let Some(token) = by_request.get(rid.as_str()) {
            let r = agent
                .request_permit(pb::RequestPermitRequest {
                    dry_run: false,
                    request_id: (*rid).clone(),
                    host_id: (*host).clone(),
                    action: pb::Action::RestartJob.into(),
                    action_name: String::new(),
                    job: "ingest".into(),
                    reason: "crash test".into(),
                })
                .await
                .unwrap()
                .into_inner();
            let Some(Decision::Granted(g)) = r.decision else {
                panic!("retry of durable grant {rid} was not granted: {r:?}");
            };
            assert!(g.replayed);
            assert_eq!(g.permit.unwrap().fencing_token, *token);
            replays += 1;
        }
    }
    // The fault injection aborts after a commit and before its replies:
    // at least one grant was durable without its agent knowing.
    assert!(
        replays >= 1,
        "no grant was committed-but-unanswered; the crash points missed"
    );

    // The scene survived: pause, quarantine, spent reboot budget.
    let status = admin
        .get_status(pb::GetStatusRequest {})
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_eq!(status.pauses.len(), 1);
    assert!(status.pauses[0].reason.contains("switch replacement"));
    assert_eq!(status.quarantined_hosts, 1);
    tokio::time::sleep(Duration::from_millis(1200)).await; // warm-up
    heartbeat_all(&mut agent, hosts + 3).await;
    let r = agent
        .request_permit(pb::RequestPermitRequest {
            dry_run: false,
            request_id: "reboot-2".into(),
            host_id: "h10".into(),
            action: pb::Action::RebootHost.into(),
            action_name: String::new(),
            job: "ingest".into(),
            reason: "after crashes".into(),
        })
        .await
        .unwrap()
        .into_inner();
    match r.decision {
        Some(Decision::Denied(d)) => {
            assert_eq!(
                d.reason(),
                pb::DenyReason::RateLimited,
                "the reboot budget was refilled: {d:?}"
            );
        }
        other => panic!("the reboot budget was refilled: {other:?}"),
    }
    let mut c = c;
    c.child.kill().unwrap();
    c.child.wait().unwrap();
}
