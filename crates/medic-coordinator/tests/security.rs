//! The security matrix: every way a caller can be wrong gets its exact
//! status code, and nothing it tried changes the coordinator's state.
//! A real coordinator serves mutual TLS on loopback with a dev-certs set.

#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use medic_coordinator::devcerts::{Ca, Leaf};
use medic_coordinator::testing::{
    Admin, Agent, FAST, TestServer, client_tls, dev_certs, labels, permit_request, tls_toml,
};
use medic_proto::pb::v1 as pb;
use tonic::Code;
use tonic::transport::{Channel, ClientTlsConfig};

const TOKEN: &str = "0123456789abcdef0123456789abcdef-automation";

struct Setup {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    certs: PathBuf,
    server: TestServer,
}

fn write_private(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// A TLS coordinator with admission control loose enough for the tests,
/// and a read-only bearer token.
async fn setup(extra: &str) -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_owned();
    let certs = dev_certs(&dir, &["web-1", "web-2"]);
    let token = dir.join("ci.token");
    write_private(&token, TOKEN);
    let toml = format!(
        "{FAST}{extra}{}\n[[auth.tokens]]\nname = \"ci\"\nfile = \"{}\"\nrole = \"read-only\"\n",
        tls_toml(&certs),
        token.display()
    );
    let server = TestServer::start(&dir, &toml).await;
    Setup {
        _dir: tmp,
        dir,
        certs,
        server,
    }
}

impl Setup {
    async fn channel(&self, name: Option<&str>) -> Channel {
        self.server.tls_channel(client_tls(&self.certs, name)).await
    }

    async fn agent(&self, name: &str) -> Agent {
        Agent::new(self.channel(Some(&format!("agents/{name}"))).await)
    }

    async fn admin(&self, name: Option<&str>) -> Admin {
        Admin::new(self.channel(name).await)
    }

    /// What the matrix must leave untouched: policy history (everything
    /// but the access-refusal records), known hosts, active permits.
    async fn state(&self) -> (Vec<(u64, i32)>, Vec<String>, Vec<String>) {
        let mut admin = self.admin(Some("operator")).await;
        let history = admin
            .get_history(pb::GetHistoryRequest {
                page_size: 1000,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .events
            .into_iter()
            .filter(|e| e.kind != pb::EventKind::Access as i32)
            .map(|e| (e.id, e.kind))
            .collect();
        let hosts = admin
            .list_hosts(pb::ListHostsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .hosts
            .into_iter()
            .map(|h| h.host_id)
            .collect();
        let permits = admin
            .list_permits(pb::ListPermitsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .permits
            .into_iter()
            .map(|p| p.permit_id)
            .collect();
        (history, hosts, permits)
    }

    /// The access-refusal records, once `ready` holds of them (they are
    /// committed in the background; at most 5 s).
    async fn access_events_when(
        &self,
        ready: impl Fn(&[pb::event::AccessDenied]) -> bool,
    ) -> Vec<pb::event::AccessDenied> {
        for _ in 0..100 {
            let events = self.access_events().await;
            if ready(&events) {
                return events;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let events = self.access_events().await;
        panic!("the audit history never showed the refusals: {events:?}");
    }

    async fn access_events(&self) -> Vec<pb::event::AccessDenied> {
        let mut admin = self.admin(Some("operator")).await;
        admin
            .get_history(pb::GetHistoryRequest {
                kinds: vec![pb::EventKind::Access as i32],
                page_size: 1000,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .events
            .into_iter()
            .filter_map(|e| match e.payload {
                Some(pb::event::Payload::AccessDenied(a)) => Some(a),
                _ => None,
            })
            .collect()
    }
}

fn heartbeat(host: &str) -> pb::HeartbeatRequest {
    pb::HeartbeatRequest {
        host_id: host.into(),
        labels: labels(&[("rack", "r1")]),
        agent_version: "test".into(),
        ..Default::default()
    }
}

fn pause() -> pb::PauseRequest {
    pb::PauseRequest {
        scope: Some(pb::Scope::default()),
        reason: "test".into(),
        ..Default::default()
    }
}

#[track_caller]
fn code<T: std::fmt::Debug>(r: Result<tonic::Response<T>, tonic::Status>) -> (Code, String) {
    match r {
        Ok(ok) => panic!("expected a refusal, got {ok:?}"),
        Err(s) => (s.code(), s.message().to_owned()),
    }
}

/// A client certificate issued by `ca` with a validity in the past.
fn expired_agent(certs: &Path, out: &Path, host: &str) -> (PathBuf, PathBuf) {
    let ca = Ca::from_pem(
        &std::fs::read_to_string(certs.join("ca.pem")).unwrap(),
        &std::fs::read_to_string(certs.join("ca.key")).unwrap(),
    )
    .unwrap();
    let mut leaf = Leaf::agent(host, Duration::from_secs(60));
    leaf.not_before = time::OffsetDateTime::now_utc() - Duration::from_secs(7200);
    leaf.not_after = time::OffsetDateTime::now_utc() - Duration::from_secs(3600);
    let issued = ca.issue(&leaf).unwrap();
    let (c, k) = (out.join("expired.pem"), out.join("expired.key"));
    std::fs::write(&c, issued.cert_pem).unwrap();
    write_private(&k, &issued.key_pem);
    (c, k)
}

fn with_identity(certs: &Path, cert: &Path, key: &Path) -> ClientTlsConfig {
    client_tls(certs, None).identity(tonic::transport::Identity::from_pem(
        std::fs::read(cert).unwrap(),
        std::fs::read(key).unwrap(),
    ))
}

#[tokio::test]
async fn calls_without_a_client_certificate_are_unauthenticated() {
    let s = setup("").await;
    let before = s.state().await;
    let mut agent = Agent::new(s.channel(None).await);
    let (c, m) = code(agent.heartbeat(heartbeat("web-1")).await);
    assert_eq!(c, Code::Unauthenticated, "{m}");
    assert!(m.contains("client certificate"), "{m}");
    let mut admin = s.admin(None).await;
    let (c, m) = code(admin.get_status(pb::GetStatusRequest {}).await);
    assert_eq!(c, Code::Unauthenticated, "{m}");
    let (c, _) = code(admin.pause(pause()).await);
    assert_eq!(c, Code::Unauthenticated);
    assert_eq!(s.state().await, before);
}

#[tokio::test]
async fn certificate_from_another_ca_is_unauthenticated() {
    let s = setup("").await;
    let before = s.state().await;
    let other = dev_certs(&s.dir.join("other"), &["web-1"]);
    // Trusts the right server CA, presents a web-1 certificate of another.
    let tls = with_identity(
        &s.certs,
        &other.join("agents/web-1.pem"),
        &other.join("agents/web-1.key"),
    );
    let mut agent = Agent::new(s.server.tls_channel(tls).await);
    let (c, m) = code(agent.heartbeat(heartbeat("web-1")).await);
    assert_eq!(c, Code::Unauthenticated, "{m}");
    assert!(
        m.contains("not signed by a CA this coordinator trusts"),
        "{m}"
    );
    let tls = with_identity(
        &s.certs,
        &other.join("operator.pem"),
        &other.join("operator.key"),
    );
    let mut admin = Admin::new(s.server.tls_channel(tls).await);
    let (c, _) = code(admin.pause(pause()).await);
    assert_eq!(c, Code::Unauthenticated);
    assert_eq!(s.state().await, before);
}

#[tokio::test]
async fn expired_certificate_is_unauthenticated() {
    let s = setup("").await;
    let before = s.state().await;
    let (cert, key) = expired_agent(&s.certs, &s.dir, "web-1");
    let mut agent = Agent::new(
        s.server
            .tls_channel(with_identity(&s.certs, &cert, &key))
            .await,
    );
    let (c, m) = code(agent.heartbeat(heartbeat("web-1")).await);
    assert_eq!(c, Code::Unauthenticated, "{m}");
    assert!(m.contains("expired"), "{m}");
    assert_eq!(s.state().await, before);
}

#[tokio::test]
async fn agent_certificate_speaks_only_for_its_own_host() {
    let s = setup("").await;
    let mut web1 = s.agent("web-1").await;
    // Its own host: fine.
    web1.heartbeat(heartbeat("web-1")).await.unwrap();
    let before = s.state().await;

    let (c, m) = code(web1.heartbeat(heartbeat("web-2")).await);
    assert_eq!(c, Code::PermissionDenied, "{m}");
    assert!(m.contains("web-1") && m.contains("web-2"), "{m}");
    let (c, _) = code(
        web1.request_permit(permit_request("web-2", pb::Action::RestartJob, "r-1"))
            .await,
    );
    assert_eq!(c, Code::PermissionDenied);
    let (c, _) = code(
        web1.renew_permit(pb::RenewPermitRequest {
            host_id: "web-2".into(),
            permit_id: "p-000000000001".into(),
            fencing_token: 1,
        })
        .await,
    );
    assert_eq!(c, Code::PermissionDenied);
    let (c, _) = code(
        web1.report_outcome(pb::ReportOutcomeRequest {
            host_id: "web-2".into(),
            permit_id: "p-000000000001".into(),
            fencing_token: 1,
            outcome: pb::Outcome::Succeeded.into(),
            detail: String::new(),
        })
        .await,
    );
    assert_eq!(c, Code::PermissionDenied);
    assert_eq!(s.state().await, before);

    // Audited, naming who tried what for whom (sampled per call).
    let calls = [
        "Remediation/Heartbeat",
        "Remediation/RequestPermit",
        "Remediation/RenewPermit",
        "Remediation/ReportOutcome",
    ];
    let access = s
        .access_events_when(|a| calls.iter().all(|c| a.iter().any(|e| e.call == *c)))
        .await;
    assert!(
        access
            .iter()
            .all(|a| a.identity == "cert:web-1" && a.host_id == "web-2"),
        "{access:?}"
    );
}

#[tokio::test]
async fn agent_certificate_cannot_call_admin() {
    let s = setup("").await;
    let before = s.state().await;
    let mut admin = Admin::new(s.channel(Some("agents/web-1")).await);
    let (c, m) = code(admin.get_status(pb::GetStatusRequest {}).await);
    assert_eq!(c, Code::PermissionDenied, "{m}");
    let (c, m) = code(admin.pause(pause()).await);
    assert_eq!(c, Code::PermissionDenied, "{m}");
    assert!(m.contains("not an operator's"), "{m}");
    assert_eq!(s.state().await, before);
    s.access_events_when(|a| {
        a.iter()
            .any(|e| e.call == "Admin/Pause" && e.identity == "cert:web-1")
    })
    .await;
}

#[tokio::test]
async fn read_only_operator_may_read_but_not_pause() {
    let s = setup("").await;
    let before = s.state().await;
    let mut viewer = s.admin(Some("viewer")).await;
    let status = viewer
        .get_status(pb::GetStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.caller, "cert:spiffe://medic.dev/operator/viewer");
    assert_eq!(status.caller_role, "read-only");
    assert_eq!(
        status.transport_security,
        pb::TransportSecurity::MutualTls as i32
    );
    let (c, m) = code(viewer.pause(pause()).await);
    assert_eq!(c, Code::PermissionDenied, "{m}");
    assert!(m.contains("read-only"), "{m}");
    let (c, _) = code(
        viewer
            .reload_config(pb::ReloadConfigRequest {
                reason: "test".into(),
            })
            .await,
    );
    assert_eq!(c, Code::PermissionDenied);
    assert_eq!(s.state().await, before);
}

#[tokio::test]
async fn read_only_operator_may_list_approvals_but_not_approve_or_reject() {
    let s = setup("[limits.restart_job.approval]\nalways = true\n").await;
    let mut agent = s.agent("web-1").await;
    agent.heartbeat(heartbeat("web-1")).await.unwrap();
    s.server.advance(Duration::from_secs(3));
    agent.heartbeat(heartbeat("web-1")).await.unwrap();
    let decision = agent
        .request_permit(permit_request("web-1", pb::Action::RestartJob, "r-1"))
        .await
        .unwrap()
        .into_inner()
        .decision;
    let Some(pb::request_permit_response::Decision::Waiting(w)) = decision else {
        panic!("expected the request to wait: {decision:?}")
    };
    let mut viewer = s.admin(Some("viewer")).await;
    let listed = viewer
        .list_approvals(pb::ListApprovalsRequest { all: false })
        .await
        .unwrap()
        .into_inner()
        .approvals;
    assert_eq!(listed.len(), 1);
    let decide = || pb::DecideApprovalRequest {
        approval_id: w.approval_id,
        reason: "looks fine".into(),
    };
    let (c, m) = code(viewer.approve(decide()).await);
    assert_eq!(c, Code::PermissionDenied, "{m}");
    assert!(m.contains("read-only"), "{m}");
    let (c, _) = code(viewer.reject(decide()).await);
    assert_eq!(c, Code::PermissionDenied);
    // Still pending; an admin's approval is recorded as theirs.
    let mut admin = s.admin(Some("operator")).await;
    let a = admin
        .approve(decide())
        .await
        .unwrap()
        .into_inner()
        .approval
        .unwrap();
    assert_eq!(a.state(), pb::ApprovalState::Approved);
    assert_eq!(a.actor, "cert:spiffe://medic.dev/operator/admin");
    let (c, m) = code(admin.approve(decide()).await);
    assert_eq!(c, Code::FailedPrecondition, "{m}");
    assert!(m.contains("already approved"), "{m}");
}

#[tokio::test]
async fn admin_operator_is_the_audit_actor() {
    let s = setup("").await;
    let mut admin = s.admin(Some("operator")).await;
    let p = admin
        .pause(pause())
        .await
        .unwrap()
        .into_inner()
        .pause
        .unwrap();
    assert_eq!(p.actor, "cert:spiffe://medic.dev/operator/admin");
}

#[tokio::test]
async fn bearer_tokens_are_checked() {
    let s = setup("").await;
    let before = s.state().await;
    let channel = s.channel(None).await;
    let with = |token: &'static str| {
        let value: tonic::metadata::MetadataValue<_> = format!("Bearer {token}").parse().unwrap();
        Admin::with_interceptor(channel.clone(), move |mut r: tonic::Request<()>| {
            r.metadata_mut().insert("authorization", value.clone());
            Ok(r)
        })
    };
    let mut wrong = with("0123456789abcdef0123456789abcdef-automatioN");
    let (c, m) = code(wrong.get_status(pb::GetStatusRequest {}).await);
    assert_eq!(c, Code::Unauthenticated, "{m}");
    let mut right = with(TOKEN);
    let status = right
        .get_status(pb::GetStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.caller, "token:ci");
    let (c, _) = code(right.pause(pause()).await);
    assert_eq!(c, Code::PermissionDenied);
    assert_eq!(s.state().await, before);
}

#[tokio::test]
async fn plaintext_client_against_the_tls_port_gets_no_service() {
    let s = setup("").await;
    let before = s.state().await;
    let channel = Channel::from_shared(format!("http://{}", s.server.addr))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect_lazy();
    let mut agent = Agent::new(channel);
    // The server answers the HTTP/2 preface with a TLS alert and closes:
    // the client sees its connection die mid-handshake.
    let (c, m) = code(agent.heartbeat(heartbeat("web-1")).await);
    assert_eq!(c, Code::Unknown, "{m}");
    assert!(m.contains("transport error"), "{m}");
    let metrics = scrape(s.server.metrics_addr).await;
    assert!(
        metrics.contains("medic_tls_handshakes_total{result=\"failed\"} 1"),
        "{metrics}"
    );
    assert_eq!(s.state().await, before);
}

async fn scrape(addr: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    conn.read_to_string(&mut body).await.unwrap();
    body
}

#[tokio::test]
async fn oversized_message_is_refused_before_it_is_read() {
    let s = setup("[server]\nmax_message_bytes = 65536\n").await;
    let before = s.state().await;
    let mut agent = s.agent("web-1").await;
    let mut hb = heartbeat("web-1");
    hb.agent_version = "x".repeat(100_000);
    let (c, m) = code(agent.heartbeat(hb).await);
    assert_eq!(c, Code::OutOfRange, "{m}");
    assert!(m.contains("65536"), "{m}");
    assert_eq!(s.state().await, before);
}

#[tokio::test]
async fn too_many_labels_are_invalid_naming_the_field() {
    let s = setup("").await;
    let before = s.state().await;
    let mut agent = s.agent("web-1").await;
    let mut hb = heartbeat("web-1");
    hb.labels = (0..65).map(|i| (format!("k{i}"), "v".to_owned())).collect();
    let (c, m) = code(agent.heartbeat(hb).await);
    assert_eq!(c, Code::InvalidArgument, "{m}");
    assert!(m.contains("labels") && m.contains("64"), "{m}");
    assert_eq!(s.state().await, before);
}

/// Median latency of `n` heartbeats for `host`, one at a time.
async fn heartbeat_latency(agent: &mut Agent, host: &str, n: usize) -> Duration {
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        agent.heartbeat(heartbeat(host)).await.unwrap();
        times.push(t.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    times.sort();
    times[n / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_one_identity_does_not_starve_the_others() {
    let s = setup("[server]\nadmission = { per_second = 50, burst = 50 }\n").await;
    let mut web2 = s.agent("web-2").await;
    web2.heartbeat(heartbeat("web-2")).await.unwrap();
    let quiet = heartbeat_latency(&mut web2, "web-2", 40).await;

    // web-1 floods from 16 concurrent callers on its own connection.
    let flooder = s.agent("web-1").await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let mut a = flooder.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut limited) = (0u64, 0u64);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match a.heartbeat(heartbeat("web-1")).await {
                    Ok(_) => ok += 1,
                    Err(e) if e.code() == Code::ResourceExhausted => limited += 1,
                    Err(e) => panic!("flood call failed: {e}"),
                }
            }
            (ok, limited)
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let flooded = heartbeat_latency(&mut web2, "web-2", 40).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut ok, mut limited) = (0, 0);
    for t in tasks {
        let (o, l) = t.await.unwrap();
        ok += o;
        limited += l;
    }
    println!(
        "flood: web-1 {ok} admitted, {limited} refused RESOURCE_EXHAUSTED; web-2 median \
         heartbeat {quiet:?} quiet, {flooded:?} during the flood (ratio {:.2})",
        flooded.as_secs_f64() / quiet.as_secs_f64()
    );
    // The flooder was limited by its own identity; web-2 was served every
    // time (heartbeat_latency unwraps each call).
    assert!(limited > 0, "the flood was never limited");
}

/// `medic_tls_certificate_expiry_timestamp_seconds` from a scrape.
fn cert_expiry(metrics: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("medic_tls_certificate_expiry_timestamp_seconds "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no certificate expiry in {metrics}"))
}

#[tokio::test]
async fn a_certificate_rotated_with_medicctl_reload_updates_the_expiry_metric() {
    let s = setup("").await;
    let before = cert_expiry(&scrape(s.server.metrics_addr).await);
    // A server certificate valid for a week, where the first was valid for
    // a day.
    let ca = Ca::from_pem(
        &std::fs::read_to_string(s.certs.join("ca.pem")).unwrap(),
        &std::fs::read_to_string(s.certs.join("ca.key")).unwrap(),
    )
    .unwrap();
    let week = Duration::from_secs(7 * 86400);
    let mut leaf = Leaf::new("medic-coordinator-2", true, week);
    leaf.dns.push("localhost".to_owned());
    let renewed = ca.issue(&leaf).unwrap();
    std::fs::write(s.certs.join("server.pem"), &renewed.cert_pem).unwrap();
    write_private(&s.certs.join("server.key"), &renewed.key_pem);

    // Through the Admin API, not SIGHUP.
    let mut admin = s.admin(Some("operator")).await;
    let r = admin
        .reload_config(pb::ReloadConfigRequest {
            reason: "rotate the serving certificate".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.applied, "{r:?}");
    let after = cert_expiry(&scrape(s.server.metrics_addr).await);
    let in_a_week = (std::time::SystemTime::now() + week)
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert_ne!(
        after, before,
        "the expiry metric still shows the old certificate"
    );
    assert!(
        after.abs_diff(in_a_week) < 3600,
        "expiry {after}, the new certificate's is about {in_a_week}"
    );
}

#[tokio::test]
async fn certificates_rotate_on_reload_and_established_connections_are_checked_again() {
    let s = setup("").await;
    let mut old_conn = s.admin(Some("operator")).await;
    old_conn.get_status(pb::GetStatusRequest {}).await.unwrap();

    // 1. A new server certificate from the same CA: established
    // connections carry on, new ones get it.
    let ca = Ca::from_pem(
        &std::fs::read_to_string(s.certs.join("ca.pem")).unwrap(),
        &std::fs::read_to_string(s.certs.join("ca.key")).unwrap(),
    )
    .unwrap();
    let mut leaf = Leaf::new("medic-coordinator-2", true, Duration::from_secs(86400));
    leaf.dns.push("localhost".to_owned());
    let renewed = ca.issue(&leaf).unwrap();
    std::fs::write(s.certs.join("server.pem"), &renewed.cert_pem).unwrap();
    write_private(&s.certs.join("server.key"), &renewed.key_pem);
    s.server.reload().await;
    let mut served = None;
    for _ in 0..100 {
        let mut fresh = s.admin(Some("operator")).await;
        fresh.get_status(pb::GetStatusRequest {}).await.unwrap();
        // The certificate this connection got is the renewed one once the
        // reload has landed.
        let metrics = scrape(s.server.metrics_addr).await;
        if metrics.contains("medic_config_reloads_total{result=\"ok\"} 1") {
            served = Some(fresh);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    served.expect("the reload applied");
    old_conn.get_status(pb::GetStatusRequest {}).await.unwrap();

    // 2. A whole new CA. Keep the old set to try it afterwards.
    let old = s.dir.join("old");
    std::fs::create_dir_all(&old).unwrap();
    for f in ["ca.pem", "operator.pem", "operator.key"] {
        std::fs::copy(s.certs.join(f), old.join(f)).unwrap();
    }
    let fresh = dev_certs(&s.dir.join("fresh"), &["web-1"]);
    for f in ["ca.pem", "server.pem", "server.key"] {
        std::fs::copy(fresh.join(f), s.certs.join(f)).unwrap();
    }
    s.server.reload().await;
    // New connections get the new certificate (tls_channel retries while
    // the reload lands).
    let mut new_conn = Admin::new(
        s.server
            .tls_channel(client_tls(&fresh, Some("operator")))
            .await,
    );
    new_conn.get_status(pb::GetStatusRequest {}).await.unwrap();
    // The established connection stays open, but its certificate is checked
    // against the CAs now in force on its next call: a removed CA revokes
    // at once.
    let (c, m) = code(old_conn.get_status(pb::GetStatusRequest {}).await);
    assert_eq!(c, Code::Unauthenticated, "{m}");
    assert!(
        m.contains("not signed by a CA this coordinator trusts"),
        "{m}"
    );
    // The old CA no longer verifies the server.
    let stale = Channel::from_shared(format!("https://{}", s.server.addr))
        .unwrap()
        .tls_config(client_tls(&old, Some("operator")))
        .unwrap()
        .connect()
        .await;
    assert!(
        stale.is_err(),
        "a client trusting only the old CA connected"
    );

    // A key others can read is refused on reload; the running TLS stays.
    std::fs::set_permissions(
        s.certs.join("server.key"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let r = new_conn
        .reload_config(pb::ReloadConfigRequest {
            reason: "rotate".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!r.applied);
    assert!(
        r.errors
            .iter()
            .any(|e| e.key == "tls.key" && e.message.contains("0644")),
        "{r:?}"
    );
    new_conn.get_status(pb::GetStatusRequest {}).await.unwrap();
    let mut another = Admin::new(
        s.server
            .tls_channel(client_tls(&fresh, Some("operator")))
            .await,
    );
    another.get_status(pb::GetStatusRequest {}).await.unwrap();
}

#[tokio::test]
async fn watch_streams_outlive_the_request_timeout() {
    let s = setup("[server]\nrequest_timeout = \"1s\"\n").await;
    let mut admin = s.admin(Some("operator")).await;
    let mut stream = admin
        .watch_events(pb::WatchEventsRequest::default())
        .await
        .unwrap()
        .into_inner();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    admin.pause(pause()).await.unwrap();
    let e = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("an event within 5s")
        .unwrap()
        .expect("the stream is still open");
    assert_eq!(e.event.unwrap().kind, pb::EventKind::Pause as i32);
}

#[tokio::test]
async fn guessing_bearer_tokens_is_throttled_per_address() {
    let s = setup("[server]\nadmission = { per_second = 5, burst = 5 }\n").await;
    let channel = s.channel(None).await;
    let with = |token: &'static str| {
        let value: tonic::metadata::MetadataValue<_> = format!("Bearer {token}").parse().unwrap();
        Admin::with_interceptor(channel.clone(), move |mut r: tonic::Request<()>| {
            r.metadata_mut().insert("authorization", value.clone());
            Ok(r)
        })
    };
    let mut guesser = with("not-the-token-not-the-token-not-the-token");
    let mut codes = Vec::new();
    for _ in 0..20 {
        codes.push(code(guesser.get_status(pb::GetStatusRequest {}).await).0);
    }
    assert_eq!(codes[0], Code::Unauthenticated);
    assert!(codes.contains(&Code::ResourceExhausted), "{codes:?}");
    // The real token, from the same address, has its own budget.
    let mut right = with(TOKEN);
    right.get_status(pb::GetStatusRequest {}).await.unwrap();
}
