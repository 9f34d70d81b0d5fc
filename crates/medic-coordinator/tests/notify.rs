//! Webhook notifications: a receiver on loopback gets the breaker-opened and
//! quarantine notifications with the documented fields; a receiver that
//! hangs does not slow RequestPermit.

#![allow(clippy::unwrap_used, clippy::cast_precision_loss)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use medic_proto::pb::v1 as pb;
use tokio::sync::mpsc;

/// A webhook receiver: every POSTed body goes to the returned channel.
async fn receiver() -> (SocketAddr, mpsc::UnboundedReceiver<serde_json::Value>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::body::Bytes| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null));
                "ok"
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, rx)
}

/// A webhook that accepts connections and never answers.
async fn hanging_receiver() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s); // keep it open, say nothing
        }
    });
    addr
}

async fn next_of_kind(
    rx: &mut mpsc::UnboundedReceiver<serde_json::Value>,
    kind: &str,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(v)) = tokio::time::timeout(Duration::from_secs(1), rx.recv()).await
            && v["kind"] == kind
        {
            return v;
        }
    }
    panic!("no {kind} notification within 10s");
}

fn with_webhook(url: &str, extra: &str) -> String {
    format!("[[notify.webhooks]]\nurl = \"{url}\"\n{extra}\n{FAST}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breaker_and_quarantine_notifications_carry_the_documented_fields() {
    let (addr, mut rx) = receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let toml = with_webhook(&format!("http://{addr}/hook"), "").replace(
        "unhealthy_percent = 100",
        "unhealthy_percent = 50\nmin_unhealthy = 1",
    );
    let server = TestServer::start(dir.path(), &toml).await;
    let mut agent = server.agent().await;
    let mut admin = server.admin().await;
    for h in ["h1", "h2", "h3"] {
        heartbeat(&mut agent, h, labels(&[]), false).await;
    }
    server.advance(Duration::from_secs(3));
    let mut req = tonic::Request::new(pb::QuarantineRequest {
        host_id: "h3".into(),
        reason: "disk errors".into(),
    });
    req.metadata_mut()
        .insert("medic-actor", "alice".parse().unwrap());
    admin.quarantine(req).await.unwrap();
    let q = next_of_kind(&mut rx, "host_quarantined").await;
    assert_eq!(q["host"], "h3");
    assert_eq!(q["reason"], "disk errors");
    assert!(q["actor"].as_str().unwrap().contains("alice"), "{q}");
    assert_eq!(q["details"]["cause"], "manual");
    assert!(q["event_id"].as_u64().unwrap() >= 1);
    assert!(q["time"].as_str().unwrap().ends_with('Z'));
    assert!(
        q["summary"].as_str().unwrap().contains("QUARANTINED"),
        "{q}"
    );

    // Two of three hosts stuck: over 50%, the breaker opens.
    heartbeat(&mut agent, "h1", labels(&[]), true).await;
    heartbeat(&mut agent, "h2", labels(&[]), true).await;
    heartbeat(&mut agent, "h3", labels(&[]), false).await;
    let b = next_of_kind(&mut rx, "breaker_opened").await;
    assert_eq!(b["details"]["scope"], "fleet");
    assert_eq!(b["details"]["cause"], "unhealthy_fraction");
    assert_eq!(b["actor"], "coordinator");
    assert!(
        b["reason"]
            .as_str()
            .unwrap()
            .contains("2 of 3 live hosts unhealthy"),
        "{b}"
    );
    for key in [
        "kind", "event_id", "time", "summary", "actor", "reason", "host", "details",
    ] {
        assert!(b.get(key).is_some(), "field {key} missing: {b}");
    }

    // A reset moves it to half-open, and says so.
    let mut req = tonic::Request::new(pb::ResetBreakerRequest {
        scope: None,
        reason: "dependency back".into(),
    });
    req.metadata_mut()
        .insert("medic-actor", "alice".parse().unwrap());
    admin.reset_breaker(req).await.unwrap();
    let h = next_of_kind(&mut rx, "breaker_half_opened").await;
    assert_eq!(h["details"]["scope"], "fleet");
    assert!(h["actor"].as_str().unwrap().contains("alice"), "{h}");
    assert!(
        h["reason"]
            .as_str()
            .unwrap()
            .starts_with("dependency back; probing with 1 permit"),
        "{h}"
    );
    assert!(h["summary"].as_str().unwrap().contains("HALF-OPEN"), "{h}");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_reload_and_a_lost_host_are_notified_in_slack_format_too() {
    let (addr, mut rx) = receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let toml = with_webhook(
        &format!("http://{addr}/hook"),
        "format = \"slack\"\nevents = [\"config_reload_failed\", \"host_lost\"]",
    );
    let server = TestServer::start(dir.path(), &toml).await;
    let mut admin = server.admin().await;
    let mut agent = server.agent().await;
    heartbeat(&mut agent, "h1", labels(&[]), true).await;
    server.advance(Duration::from_secs(3));
    heartbeat(&mut agent, "h1", labels(&[]), true).await;
    granted(request(&mut agent, "h1", pb::Action::RebootHost, "r1").await);
    // The host goes silent mid-reboot and never reports: after the TTL the
    // permit expires and the host is lost.
    server.advance(Duration::from_secs(61));
    admin.get_status(pb::GetStatusRequest {}).await.unwrap();
    let v = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
        .unwrap();
    let text = v["text"].as_str().unwrap();
    assert!(text.contains("host h1 LOST mid-remediation"), "{text}");
    assert_eq!(
        v.as_object().unwrap().len(),
        1,
        "slack format is just text: {v}"
    );
    std::fs::write(&server.config_path, "bogus = 1\n").unwrap();
    let r = admin
        .reload_config(pb::ReloadConfigRequest {
            reason: "test".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!r.applied);
    let v = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
        .unwrap();
    let text = v["text"].as_str().unwrap();
    assert!(text.contains("config reload REJECTED"), "{text}");
    assert!(text.contains("bogus: unknown key"), "{text}");
    server.stop().await.unwrap();
}

/// p50 of `n` RequestPermit calls (each granted, then completed).
async fn grant_latency(server: &TestServer, n: usize) -> Duration {
    let mut agent = server.agent().await;
    let mut admin = server.admin().await;
    heartbeat(&mut agent, "h1", labels(&[]), false).await;
    server.advance(Duration::from_secs(3));
    heartbeat(&mut agent, "h1", labels(&[]), false).await;
    let mut lat = Vec::new();
    for i in 0..n {
        // Each round also produces two notifications (pause, resume) for the
        // webhook, so a hanging webhook has plenty to choke on.
        let p = admin
            .pause(pb::PauseRequest {
                scope: Some(pb::Scope {
                    selector: labels(&[("rack", "none")]),
                    action: 0,
                    action_name: String::new(),
                }),
                reason: format!("round {i}"),
                duration: None,
            })
            .await
            .unwrap()
            .into_inner()
            .pause
            .unwrap();
        admin
            .resume(pb::ResumeRequest {
                target: Some(pb::resume_request::Target::PauseId(p.pause_id)),
                reason: "done".into(),
            })
            .await
            .unwrap();
        let t = Instant::now();
        let g = granted(request(&mut agent, "h1", pb::Action::RestartJob, &format!("r{i}")).await);
        lat.push(t.elapsed());
        let p = g.permit.unwrap();
        agent
            .report_outcome(pb::ReportOutcomeRequest {
                host_id: "h1".into(),
                permit_id: p.permit_id,
                fencing_token: p.fencing_token,
                outcome: pb::Outcome::Succeeded.into(),
                detail: "ok".into(),
            })
            .await
            .unwrap();
    }
    lat.sort();
    lat[lat.len() / 2]
}

const GENEROUS: &str = "[server]\nadmission = { per_second = 100000, burst = 100000 }\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_webhook_does_not_slow_request_permit() {
    const N: usize = 60;
    let base_dir = tempfile::tempdir().unwrap();
    let base = TestServer::start(base_dir.path(), &format!("{GENEROUS}{FAST}").replace("rate = { count = 100, per = \"1h\", burst = 10 }", "rate = { count = 1000, per = \"1h\", burst = 1000 }\nhost_budget = { max_attempts = 1000, per = \"1h\" }")).await;
    let without = grant_latency(&base, N).await;
    base.stop().await.unwrap();

    let hang = hanging_receiver().await;
    let dir = tempfile::tempdir().unwrap();
    // A long timeout and a tiny queue: the webhook is stuck on its first
    // notification for the whole test and the queue overflows.
    let toml = format!(
        "{GENEROUS}[notify]\nqueue = 2\n{}",
        with_webhook(&format!("http://{hang}/hook"), "timeout = \"60s\"")
    )
    .replace("rate = { count = 100, per = \"1h\", burst = 10 }", "rate = { count = 1000, per = \"1h\", burst = 1000 }\nhost_budget = { max_attempts = 1000, per = \"1h\" }");
    let server = TestServer::start(dir.path(), &toml).await;
    let with = grant_latency(&server, N).await;
    let ratio = with.as_secs_f64() / without.as_secs_f64();
    println!(
        "RequestPermit p50 without a webhook {:.3} ms, with a hanging webhook {:.3} ms: ratio {ratio:.2}",
        without.as_secs_f64() * 1e3,
        with.as_secs_f64() * 1e3
    );
    // Blocking on the webhook would cost its 60s timeout per call; the bound
    // leaves room for this noisy machine, not for waiting on a webhook.
    assert!(
        ratio < 5.0,
        "a hanging webhook slowed RequestPermit: ratio {ratio:.2}"
    );
    let metrics = http_get_metrics(server.metrics_addr).await;
    let dropped: f64 = metrics
        .lines()
        .find(|l| l.starts_with("medic_notifications_dropped_total{reason=\"queue_full\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(
        dropped > 0.0,
        "dropped notifications are counted: {dropped}"
    );
    server.stop().await.unwrap();
}

async fn http_get_metrics(addr: SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

/// A webhook receiver that keeps each request's headers and raw body.
async fn raw_receiver() -> (
    SocketAddr,
    mpsc::UnboundedReceiver<(axum::http::HeaderMap, axum::body::Bytes)>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send((headers, body));
                    "ok"
                }
            },
        ),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, rx)
}

/// A file only its owner can read, as tokens and keys must be.
fn secret_file(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// The receiver's check from docs/configuration.md, as written there.
fn documented_check() -> String {
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/configuration.md"),
    )
    .unwrap();
    let (_, rest) = doc.split_once("<!-- webhook-check:start -->").unwrap();
    let (block, _) = rest.split_once("<!-- webhook-check:end -->").unwrap();
    block
        .lines()
        .filter(|l| !l.starts_with("```"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_carry_configured_headers_and_a_signature_the_documented_check_accepts() {
    let (addr, mut rx) = raw_receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let auth = secret_file(dir.path(), "auth", "Bearer s3cr3t-token-for-the-receiver\n");
    let key = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let key_file = secret_file(dir.path(), "hmac", &format!("{key}\n"));
    let toml = with_webhook(
        &format!("http://{addr}/hook"),
        &format!(
            "hmac_secret_file = {:?}\nheaders = {{ Authorization = {{ file = {:?} }}, \"X-Team\" = \"sre\" }}",
            key_file.display().to_string(),
            auth.display().to_string()
        ),
    );
    let server = TestServer::start(dir.path(), &toml).await;
    let mut admin = server.admin().await;
    admin
        .pause(pb::PauseRequest {
            reason: "change freeze".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let (headers, body) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        headers["authorization"],
        "Bearer s3cr3t-token-for-the-receiver"
    );
    assert_eq!(headers["x-team"], "sre");
    let ts = headers["x-medic-timestamp"].to_str().unwrap().to_owned();
    let sig = headers["x-medic-signature"].to_str().unwrap().to_owned();
    // HMAC-SHA256 of "TIMESTAMP.BODY" under the key, checked independently.
    let hex = sig.strip_prefix("sha256=").unwrap();
    let tag: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    let mut signed = format!("{ts}.").into_bytes();
    signed.extend_from_slice(&body);
    ring::hmac::verify(
        &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key.as_bytes()),
        &signed,
        &tag,
    )
    .expect("the signature verifies");
    let age = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - ts.parse::<u64>().unwrap();
    assert!(age <= 10, "{age}");

    // The documented shell check accepts it, and refuses a changed body.
    std::fs::write(dir.path().join("body.json"), &body).unwrap();
    let script =
        documented_check().replace("/etc/medic/webhook-hmac", &key_file.display().to_string());
    let check = |dir: &std::path::Path| {
        std::process::Command::new("bash")
            .args(["-c", &script])
            .current_dir(dir)
            .env("TS", &ts)
            .env("SIG", &sig)
            .output()
            .unwrap()
    };
    let out = check(dir.path());
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("signed by medic"),
        "{out:?}"
    );
    std::fs::write(dir.path().join("body.json"), b"{\"kind\":\"forged\"}").unwrap();
    let out = check(dir.path());
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stdout).contains("bad signature"),
        "{out:?}"
    );
    server.stop().await.unwrap();
}

#[test]
fn webhook_headers_and_keys_are_validated_naming_the_key() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let open = dir.path().join("open");
    std::fs::write(&open, "Bearer x").unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
    let short = secret_file(dir.path(), "short", "abc");
    for (extra, want) in [
        (
            "headers = { \"Bad Name\" = \"x\" }".to_owned(),
            "notify.webhooks[0].headers.Bad Name: \"Bad Name\" is not a valid HTTP header name",
        ),
        (
            "headers = { \"X-Medic-Signature\" = \"x\" }".to_owned(),
            "notify.webhooks[0].headers.X-Medic-Signature: X-Medic-Signature is set by medic itself",
        ),
        (
            "headers = { \"X-Team\" = \"a\\nb\" }".to_owned(),
            "notify.webhooks[0].headers.X-Team: must be a non-empty header value",
        ),
        (
            format!(
                "headers = {{ Authorization = {{ file = {:?} }} }}",
                open.display().to_string()
            ),
            "notify.webhooks[0].headers.Authorization:",
        ),
        (
            format!("hmac_secret_file = {:?}", short.display().to_string()),
            "an HMAC key must be at least 32 bytes",
        ),
    ] {
        let toml = format!("[[notify.webhooks]]\nurl = \"http://127.0.0.1:9/hook\"\n{extra}\n");
        let e = medic_coordinator::CoordinatorConfig::from_toml(&toml)
            .expect_err(&extra)
            .to_string();
        assert!(e.contains(want), "{extra}: {e}");
    }
    // A world-readable token file is refused with the mode and the fix.
    let toml = format!(
        "[[notify.webhooks]]\nurl = \"http://127.0.0.1:9/hook\"\nheaders = {{ Authorization = {{ file = {:?} }} }}\n",
        open.display().to_string()
    );
    let e = medic_coordinator::CoordinatorConfig::from_toml(&toml)
        .unwrap_err()
        .to_string();
    assert!(e.contains("0644") || e.contains("644"), "{e}");
}
