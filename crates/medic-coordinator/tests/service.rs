//! The coordinator end to end, in-process on port 0, driven with the
//! generated clients: grants, every denial with its reason and retry_after,
//! renewals, outcomes, expiry, revocation, pauses, quarantine, idempotent
//! retries, history, watch, health, reflection, metrics, restart, reload.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use medic_proto::pb::v1 as pb;
use tonic::Code;

use pb::Action::{RebootHost, RestartJob};

/// Starts a server, heartbeats `hosts` (rack r1/r2 alternating) and waits
/// out the warm-up.
async fn ready(dir: &std::path::Path, toml: &str, hosts: &[&str]) -> (TestServer, Agent, Admin) {
    let server = TestServer::start(dir, toml).await;
    let mut agent = server.agent().await;
    let admin = server.admin().await;
    for (i, h) in hosts.iter().enumerate() {
        heartbeat(
            &mut agent,
            h,
            labels(&[("rack", if i % 2 == 0 { "r1" } else { "r2" })]),
            true,
        )
        .await;
    }
    server.advance(Duration::from_secs(3));
    for (i, h) in hosts.iter().enumerate() {
        heartbeat(
            &mut agent,
            h,
            labels(&[("rack", if i % 2 == 0 { "r1" } else { "r2" })]),
            true,
        )
        .await;
    }
    (server, agent, admin)
}

fn secs(d: &Option<prost_types::Duration>) -> Option<i64> {
    d.as_ref().map(|d| d.seconds)
}

#[tokio::test]
async fn grant_is_denied_while_warming_up_then_granted() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), FAST).await;
    let mut agent = server.agent().await;
    let hb = heartbeat(&mut agent, "h1", labels(&[]), true).await;
    assert_eq!(secs(&hb.heartbeat_interval), Some(1));
    let d = denied(request(&mut agent, "h1", RestartJob, "r1").await);
    assert_eq!(d.reason(), pb::DenyReason::WarmingUp);
    assert_eq!(secs(&d.retry_after), Some(2));
    server.advance(Duration::from_secs(3));
    heartbeat(&mut agent, "h1", labels(&[]), true).await;
    let g = granted(request(&mut agent, "h1", RestartJob, "r2").await);
    let p = g.permit.unwrap();
    assert_eq!(p.host_id, "h1");
    assert_eq!(p.fencing_token, 1);
    assert!(!g.replayed);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn unknown_host_is_told_to_heartbeat_first() {
    let dir = tempfile::tempdir().unwrap();
    let (server, mut agent, _) = ready(dir.path(), FAST, &["h1"]).await;
    let d = denied(request(&mut agent, "ghost", RestartJob, "r1").await);
    assert_eq!(d.reason(), pb::DenyReason::UnknownHost);
    assert_eq!(secs(&d.retry_after), Some(1));
    server.stop().await.unwrap();
}

#[tokio::test]
async fn invalid_input_names_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let (server, mut agent, mut admin) = ready(dir.path(), FAST, &["h1"]).await;
    let mut req = permit_request("h1", RestartJob, "r1");
    req.action = 0;
    let e = agent.request_permit(req).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("action"), "{}", e.message());
    let e = admin
        .pause(pb::PauseRequest {
            scope: None,
            reason: String::new(),
            duration: None,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("reason"), "{}", e.message());
    server.stop().await.unwrap();
}

#[tokio::test]
async fn renew_outcome_and_stale_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let (server, mut agent, _) = ready(dir.path(), FAST, &["h1"]).await;
    let p = granted(request(&mut agent, "h1", RestartJob, "r1").await)
        .permit
        .unwrap();
    server.advance(Duration::from_secs(10));
    let renewed = agent
        .renew_permit(pb::RenewPermitRequest {
            host_id: "h1".into(),
            permit_id: p.permit_id.clone(),
            fencing_token: p.fencing_token,
        })
        .await
        .unwrap()
        .into_inner()
        .permit
        .unwrap();
    assert_eq!(
        renewed.expires_at.unwrap().seconds,
        p.expires_at.unwrap().seconds + 10
    );
    // A stale token changes nothing and says so.
    let e = agent
        .report_outcome(pb::ReportOutcomeRequest {
            host_id: "h1".into(),
            permit_id: p.permit_id.clone(),
            fencing_token: p.fencing_token + 7,
            outcome: pb::Outcome::Succeeded.into(),
            detail: "ok".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e}");
    assert!(e.message().contains("stale"), "{}", e.message());
    // Another host cannot act on it.
    let e = agent
        .renew_permit(pb::RenewPermitRequest {
            host_id: "h2".into(),
            permit_id: p.permit_id.clone(),
            fencing_token: p.fencing_token,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e}");
    let done = agent
        .report_outcome(pb::ReportOutcomeRequest {
            host_id: "h1".into(),
            permit_id: p.permit_id.clone(),
            fencing_token: p.fencing_token,
            outcome: pb::Outcome::Succeeded.into(),
            detail: "restarted, verified".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .permit
        .unwrap();
    assert_eq!(done.state(), pb::PermitState::Succeeded);
    // Renewing an ended permit fails; an unknown one is NOT_FOUND.
    let e = agent
        .renew_permit(pb::RenewPermitRequest {
            host_id: "h1".into(),
            permit_id: p.permit_id.clone(),
            fencing_token: p.fencing_token,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    let e = agent
        .renew_permit(pb::RenewPermitRequest {
            host_id: "h1".into(),
            permit_id: "p-999999999999".into(),
            fencing_token: 999_999,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn retried_request_id_gets_the_same_permit() {
    let dir = tempfile::tempdir().unwrap();
    let (server, mut agent, mut admin) = ready(dir.path(), FAST, &["h1"]).await;
    let first = granted(request(&mut agent, "h1", RestartJob, "same").await);
    let again = granted(request(&mut agent, "h1", RestartJob, "same").await);
    assert!(again.replayed);
    assert_eq!(
        first.permit.unwrap().permit_id,
        again.permit.unwrap().permit_id
    );
    let permits = admin
        .list_permits(pb::ListPermitsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .permits;
    assert_eq!(permits.len(), 1);
    // The same id for something else is refused.
    let e = agent
        .request_permit(permit_request("h1", RebootHost, "same"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn every_rule_denies_with_its_reason_and_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "{FAST}\n[limits.reboot_host.groups.rack]\nmax_in_flight = 1\n"
    )
    .replace(
        "[limits.reboot_host]\nmax_in_flight = 10",
        "[limits.reboot_host]\nmax_in_flight = 2\nrate = { count = 3, per = \"1h\", burst = 5 }\nhost_budget = { max_attempts = 1, per = \"1h\" }",
    )
    .replace("[limits.restart_job]\nmax_in_flight = 10\npermit_ttl = \"30s\"\ncooldown = \"0s\"",
             "[limits.restart_job]\nmax_in_flight = 10\npermit_ttl = \"30s\"\ncooldown = \"5m\"");
    let (server, mut agent, mut admin) =
        ready(dir.path(), &toml, &["h1", "h2", "h3", "h4", "h5"]).await;

    // Host busy: one permit per host.
    let p = granted(request(&mut agent, "h1", RestartJob, "a").await)
        .permit
        .unwrap();
    let d = denied(request(&mut agent, "h1", RebootHost, "b").await);
    assert_eq!(d.reason(), pb::DenyReason::HostBusy);
    assert_eq!(secs(&d.retry_after), Some(30));
    // Cooldown after it ends.
    agent
        .report_outcome(pb::ReportOutcomeRequest {
            host_id: "h1".into(),
            permit_id: p.permit_id,
            fencing_token: p.fencing_token,
            outcome: pb::Outcome::Failed.into(),
            detail: "still stuck".into(),
        })
        .await
        .unwrap();
    let d = denied(request(&mut agent, "h1", RestartJob, "c").await);
    assert_eq!(d.reason(), pb::DenyReason::Cooldown);
    assert_eq!(secs(&d.retry_after), Some(300));
    // Group cap: one reboot per rack (h1, h3, h5 are in r1).
    granted(request(&mut agent, "h3", RebootHost, "d").await);
    let d = denied(request(&mut agent, "h5", RebootHost, "e").await);
    assert_eq!(d.reason(), pb::DenyReason::GroupCap);
    assert!(d.message.contains("rack=r1"), "{}", d.message);
    // Fleet cap: two reboots at once.
    granted(request(&mut agent, "h2", RebootHost, "f").await);
    let d = denied(request(&mut agent, "h4", RebootHost, "g").await);
    assert!(
        matches!(
            d.reason(),
            pb::DenyReason::ConcurrencyCap | pb::DenyReason::GroupCap
        ),
        "{d:?}"
    );
    // Pause, with an expiry: retry_after says when it ends.
    admin
        .pause(pb::PauseRequest {
            scope: Some(pb::Scope {
                selector: labels(&[]),
                action: RestartJob.into(),
                action_name: String::new(),
            }),
            reason: "dependency outage".into(),
            duration: Some(prost_types::Duration {
                seconds: 600,
                nanos: 0,
            }),
        })
        .await
        .unwrap();
    let d = denied(request(&mut agent, "h4", RestartJob, "h").await);
    assert_eq!(d.reason(), pb::DenyReason::Paused);
    assert_eq!(secs(&d.retry_after), Some(600));
    assert!(d.message.contains("dependency outage"), "{}", d.message);
    // Quarantine: no retry_after, a human must act.
    admin
        .quarantine(pb::QuarantineRequest {
            host_id: "h4".into(),
            reason: "bad disk".into(),
        })
        .await
        .unwrap();
    let explain = admin
        .explain(pb::ExplainRequest {
            host_id: "h4".into(),
            action: RestartJob.into(),
            action_name: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let reasons: Vec<pb::DenyReason> = explain.denials.iter().map(|d| d.reason()).collect();
    assert!(!explain.would_grant);
    assert!(
        reasons.contains(&pb::DenyReason::Paused) && reasons.contains(&pb::DenyReason::Quarantined),
        "{reasons:?}"
    );
    let q = explain
        .denials
        .iter()
        .find(|d| d.reason() == pb::DenyReason::Quarantined)
        .unwrap();
    assert_eq!(q.retry_after, None);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn rate_budget_denies_with_time_until_the_next_slot() {
    let dir = tempfile::tempdir().unwrap();
    let toml = FAST.replace(
        "rate = { count = 100, per = \"1h\", burst = 10 }",
        "rate = { count = 2, per = \"1h\", burst = 0 }",
    );
    let (server, mut agent, _) = ready(dir.path(), &toml, &["h1", "h2", "h3"]).await;
    granted(request(&mut agent, "h1", RestartJob, "a").await);
    let d = denied(request(&mut agent, "h2", RestartJob, "b").await);
    assert_eq!(d.reason(), pb::DenyReason::RateLimited);
    assert_eq!(secs(&d.retry_after), Some(1800));
    server.stop().await.unwrap();
}

#[tokio::test]
async fn expired_permit_quarantines_its_host() {
    let dir = tempfile::tempdir().unwrap();
    let (server, mut agent, mut admin) = ready(dir.path(), FAST, &["h1", "h2"]).await;
    let p = granted(request(&mut agent, "h1", RestartJob, "a").await)
        .permit
        .unwrap();
    server.advance(Duration::from_secs(31));
    heartbeat(&mut agent, "h2", labels(&[]), false).await;
    let hosts = admin
        .list_hosts(pb::ListHostsRequest {
            quarantined_only: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .hosts;
    assert_eq!(hosts.len(), 1);
    assert_eq!(hosts[0].host_id, "h1");
    let q = hosts[0].quarantine.as_ref().unwrap();
    assert_eq!(q.cause(), pb::QuarantineCause::PermitExpired);
    let e = agent
        .report_outcome(pb::ReportOutcomeRequest {
            host_id: "h1".into(),
            permit_id: p.permit_id,
            fencing_token: p.fencing_token,
            outcome: pb::Outcome::Succeeded.into(),
            detail: "late".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    heartbeat(&mut agent, "h1", labels(&[]), true).await;
    let d = denied(request(&mut agent, "h1", RestartJob, "b").await);
    assert_eq!(d.reason(), pb::DenyReason::Quarantined);
    // Released by a human, it may ask again.
    admin
        .unquarantine(pb::UnquarantineRequest {
            host_id: "h1".into(),
            reason: "host checked".into(),
        })
        .await
        .unwrap();
    granted(request(&mut agent, "h1", RestartJob, "c").await);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn revoked_permit_cannot_be_renewed() {
    let dir = tempfile::tempdir().unwrap();
    let (server, mut agent, mut admin) = ready(dir.path(), FAST, &["h1"]).await;
    let p = granted(request(&mut agent, "h1", RebootHost, "a").await)
        .permit
        .unwrap();
    let revoked = admin
        .revoke_permit(pb::RevokePermitRequest {
            permit_id: p.permit_id.clone(),
            reason: "wrong host".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .permit
        .unwrap();
    assert_eq!(revoked.state(), pb::PermitState::Revoked);
    let e = agent
        .renew_permit(pb::RenewPermitRequest {
            host_id: "h1".into(),
            permit_id: p.permit_id.clone(),
            fencing_token: p.fencing_token,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("revoked"), "{}", e.message());
    server.stop().await.unwrap();
}

#[tokio::test]
async fn pause_and_resume_with_scope_and_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let (server, mut agent, mut admin) = ready(dir.path(), FAST, &["h1", "h2"]).await;
    let pause = admin
        .pause(pb::PauseRequest {
            scope: Some(pb::Scope {
                selector: labels(&[("rack", "r1")]),
                action: 0,
                action_name: String::new(),
            }),
            reason: "rack r1 maintenance".into(),
            duration: None,
        })
        .await
        .unwrap()
        .into_inner()
        .pause
        .unwrap();
    // h1 is in r1, h2 in r2.
    let d = denied(request(&mut agent, "h1", RestartJob, "a").await);
    assert_eq!(d.reason(), pb::DenyReason::Paused);
    assert_eq!(d.retry_after, None, "an open-ended pause waits for a human");
    granted(request(&mut agent, "h2", RestartJob, "b").await);
    admin
        .resume(pb::ResumeRequest {
            target: Some(pb::resume_request::Target::PauseId(pause.pause_id)),
            reason: "done".into(),
        })
        .await
        .unwrap();
    granted(request(&mut agent, "h1", RestartJob, "c").await);
    // A pause with an expiry ends by itself.
    admin
        .pause(pb::PauseRequest {
            scope: None,
            reason: "short".into(),
            duration: Some(prost_types::Duration {
                seconds: 60,
                nanos: 0,
            }),
        })
        .await
        .unwrap();
    let status = admin
        .get_status(pb::GetStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.status.unwrap().pauses.len(), 1);
    server.advance(Duration::from_secs(61));
    let status = admin
        .get_status(pb::GetStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(status.status.unwrap().pauses.is_empty());
    server.stop().await.unwrap();
}

#[tokio::test]
async fn history_records_grants_outcomes_and_admin_calls_with_actors() {
    let dir = tempfile::tempdir().unwrap();
    let (server, mut agent, mut admin) = ready(dir.path(), FAST, &["h1", "h2"]).await;
    let p = granted(request(&mut agent, "h1", RestartJob, "a").await)
        .permit
        .unwrap();
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
    let mut req = tonic::Request::new(pb::QuarantineRequest {
        host_id: "h2".into(),
        reason: "flaky".into(),
    });
    req.metadata_mut()
        .insert("medic-actor", "alice".parse().unwrap());
    admin.quarantine(req).await.unwrap();
    // Denials are sampled: many denials, one record with the count.
    for i in 0..5 {
        denied(request(&mut agent, "h2", RestartJob, &format!("d{i}")).await);
    }
    // Let the committer catch up on the (unawaited) denial samples.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let all = admin
        .get_history(pb::GetHistoryRequest::default())
        .await
        .unwrap()
        .into_inner()
        .events;
    let kinds: Vec<pb::EventKind> = all.iter().map(|e| e.kind()).collect();
    assert!(kinds.contains(&pb::EventKind::Grant), "{kinds:?}");
    assert!(kinds.contains(&pb::EventKind::Outcome), "{kinds:?}");
    let q = all
        .iter()
        .find(|e| e.kind() == pb::EventKind::Quarantine)
        .unwrap();
    assert!(
        q.actor.starts_with("unverified:alice@127.0.0.1"),
        "{}",
        q.actor
    );
    assert_eq!(q.reason, "flaky");
    let denials: Vec<&pb::Event> = all
        .iter()
        .filter(|e| e.kind() == pb::EventKind::Deny)
        .collect();
    assert_eq!(denials.len(), 1, "denials are sampled: {denials:?}");
    // Filters and paging.
    let grants = admin
        .get_history(pb::GetHistoryRequest {
            kinds: vec![pb::EventKind::Grant.into()],
            host_id: "h1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(grants.len(), 1);
    let page = admin
        .get_history(pb::GetHistoryRequest {
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.events.len(), 1);
    assert!(!page.next_page_token.is_empty());
    let next = admin
        .get_history(pb::GetHistoryRequest {
            page_size: 1,
            page_token: page.next_page_token,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(next.events[0].id > page.events[0].id);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn watch_streams_events_as_they_become_durable() {
    let dir = tempfile::tempdir().unwrap();
    let (server, mut agent, mut admin) = ready(dir.path(), FAST, &["h1"]).await;
    let mut stream = admin
        .watch_events(pb::WatchEventsRequest {
            kinds: vec![pb::EventKind::Grant.into()],
            after_id: None,
        })
        .await
        .unwrap()
        .into_inner();
    granted(request(&mut agent, "h1", RestartJob, "a").await);
    let e = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("an event within 5s")
        .unwrap()
        .unwrap()
        .event
        .unwrap();
    assert_eq!(e.kind(), pb::EventKind::Grant);
    assert_eq!(e.host_id, "h1");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn health_reflection_and_metrics_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let (server, mut agent, _) = ready(dir.path(), FAST, &["h1"]).await;
    granted(request(&mut agent, "h1", RestartJob, "a").await);
    let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel().await);
    let s = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "medic.v1.Remediation".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        s.status(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );

    let body = http_get(server.metrics_addr, "/metrics").await;
    assert!(
        body.contains("medic_decisions_total{action=\"restart_job\",outcome=\"granted\"} 1"),
        "{body}"
    );
    assert!(body.contains("medic_rpc_duration_seconds"), "{body}");
    assert!(
        body.contains("medic_store_commit_duration_seconds"),
        "{body}"
    );
    assert!(
        http_get(server.metrics_addr, "/healthz")
            .await
            .contains("ok")
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn restart_keeps_permits_tokens_pauses_and_quarantines() {
    let dir = tempfile::tempdir().unwrap();
    let clock = std::sync::Arc::new(medic_coordinator::ManualClock::new(start_time()));
    let server = TestServer::start_in(dir.path(), FAST, clock.clone()).await;
    let mut agent = server.agent().await;
    let mut admin = server.admin().await;
    heartbeat(&mut agent, "h1", labels(&[]), true).await;
    heartbeat(&mut agent, "h2", labels(&[]), true).await;
    clock.advance(Duration::from_secs(3));
    heartbeat(&mut agent, "h1", labels(&[]), true).await;
    heartbeat(&mut agent, "h2", labels(&[]), true).await;
    let p = granted(request(&mut agent, "h1", RestartJob, "a").await)
        .permit
        .unwrap();
    admin
        .pause(pb::PauseRequest {
            scope: Some(pb::Scope {
                selector: labels(&[]),
                action: RebootHost.into(),
                action_name: String::new(),
            }),
            reason: "no reboots today".into(),
            duration: None,
        })
        .await
        .unwrap();
    admin
        .quarantine(pb::QuarantineRequest {
            host_id: "h2".into(),
            reason: "bad disk".into(),
        })
        .await
        .unwrap();
    server.stop().await.unwrap();

    let server = TestServer::start_in(dir.path(), FAST, clock.clone()).await;
    let mut agent = server.agent().await;
    let mut admin = server.admin().await;
    let permits = admin
        .list_permits(pb::ListPermitsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .permits;
    assert_eq!(permits.len(), 1);
    assert_eq!(permits[0].permit_id, p.permit_id);
    let status = admin
        .get_status(pb::GetStatusRequest {})
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_eq!(status.pauses.len(), 1);
    assert_eq!(status.quarantined_hosts, 1);
    clock.advance(Duration::from_secs(3));
    heartbeat(&mut agent, "h3", labels(&[]), true).await;
    let g = granted(request(&mut agent, "h3", RestartJob, "b").await)
        .permit
        .unwrap();
    assert!(
        g.fencing_token > p.fencing_token,
        "tokens keep increasing across restarts"
    );
    // The retry of the pre-restart request is still answered with its permit.
    let again = granted(request(&mut agent, "h1", RestartJob, "a").await);
    assert!(again.replayed);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn reload_applies_a_valid_change_without_dropping_connections() {
    let dir = tempfile::tempdir().unwrap();
    let (server, mut agent, mut admin) = ready(dir.path(), FAST, &["h1", "h2"]).await;
    granted(request(&mut agent, "h1", RestartJob, "a").await);
    // Lower the cap to 1: nothing is revoked, new grants wait.
    std::fs::write(
        &server.config_path,
        FAST.replace(
            "[limits.restart_job]\nmax_in_flight = 10",
            "[limits.restart_job]\nmax_in_flight = 1",
        ),
    )
    .unwrap();
    server.reload().await;
    let mut applied = false;
    for _ in 0..50 {
        let s = admin
            .get_status(pb::GetStatusRequest {})
            .await
            .unwrap()
            .into_inner();
        let caps: Vec<u32> = s
            .status
            .unwrap()
            .actions
            .iter()
            .map(|a| a.effective_cap)
            .collect();
        if caps.contains(&1) {
            applied = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(applied, "SIGHUP reload did not apply");
    let permits = admin
        .list_permits(pb::ListPermitsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .permits;
    assert_eq!(permits.len(), 1, "lowering a cap revokes nothing");
    let d = denied(request(&mut agent, "h2", RestartJob, "b").await);
    assert_eq!(d.reason(), pb::DenyReason::ConcurrencyCap);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn invalid_reload_is_rejected_with_every_error_and_old_limits_stay() {
    let dir = tempfile::tempdir().unwrap();
    let (server, mut agent, mut admin) = ready(dir.path(), FAST, &["h1", "h2"]).await;
    std::fs::write(
        &server.config_path,
        "[limits.restart_job]\nmax_in_flight = -1\n[fleet]\nheartbeat_interval = \"fast\"\nbogus = 1\n",
    )
    .unwrap();
    let r = admin
        .reload_config(pb::ReloadConfigRequest {
            reason: "tune caps".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!r.applied);
    let keys: Vec<&str> = r.errors.iter().map(|e| e.key.as_str()).collect();
    assert!(
        keys.contains(&"limits.restart_job.max_in_flight"),
        "{keys:?}"
    );
    assert!(keys.contains(&"fleet.heartbeat_interval"), "{keys:?}");
    assert!(keys.contains(&"fleet.bogus"), "{keys:?}");
    // The old limits still apply (10 restarts allowed).
    granted(request(&mut agent, "h1", RestartJob, "a").await);
    granted(request(&mut agent, "h2", RestartJob, "b").await);
    let history = admin
        .get_history(pb::GetHistoryRequest {
            kinds: vec![pb::EventKind::Config.into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(history.len(), 1, "the failed reload is audited");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_flooding_caller_gets_resource_exhausted_with_a_retry_hint() {
    let dir = tempfile::tempdir().unwrap();
    let toml = format!("[server]\nadmission = {{ per_second = 1, burst = 3 }}\n{FAST}");
    let (server, mut agent, _) = ready(dir.path(), &toml, &[]).await;
    let mut refused = None;
    for i in 0..10 {
        let r = agent
            .heartbeat(pb::HeartbeatRequest {
                host_id: "noisy".into(),
                agent_version: format!("{i}"),
                ..Default::default()
            })
            .await;
        if let Err(e) = r {
            refused = Some(e);
            break;
        }
    }
    let e = refused.expect("a refusal");
    assert_eq!(e.code(), Code::ResourceExhausted);
    assert!(e.metadata().get("retry-after-ms").is_some());
    // Another caller is not affected.
    heartbeat(&mut agent, "quiet", labels(&[]), false).await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn breaker_window_floor_and_attempt_budget_deny_with_their_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let toml = FAST
        .replace("unhealthy_percent = 100", "unhealthy_percent = 70")
        .replace("min_fleet_size = 1", "min_fleet_size = 3")
        .replace(
            "[limits.reboot_host]\nmax_in_flight = 10",
            "[limits.reboot_host]\nmax_in_flight = 10\nwindows = [{ days = [\"sat\"], start = \"03:00\", end = \"04:00\" }]",
        )
        .replace(
            "[limits.restart_job]\nmax_in_flight = 10",
            "[limits.restart_job]\nmax_in_flight = 10\nhost_budget = { max_attempts = 1, per = \"1h\" }",
        );
    // Two hosts live: below min_fleet_size 3.
    let (server, mut agent, _) = ready(dir.path(), &toml, &["h1", "h2"]).await;
    let d = denied(request(&mut agent, "h1", RestartJob, "a").await);
    assert_eq!(d.reason(), pb::DenyReason::FleetTooSmall);
    assert_eq!(secs(&d.retry_after), Some(1));
    for h in ["h3", "h4", "h5", "h6"] {
        heartbeat(&mut agent, h, labels(&[]), false).await;
    }
    // 2026-01-01 is a Thursday: reboots wait for Saturday 03:00 UTC.
    let d = denied(request(&mut agent, "h3", RebootHost, "b").await);
    assert_eq!(d.reason(), pb::DenyReason::OutsideWindow);
    assert!(secs(&d.retry_after).unwrap() > 24 * 3600, "{d:?}");
    // Attempt budget: one restart per hour; asking again quarantines.
    let p = granted(request(&mut agent, "h1", RestartJob, "c").await)
        .permit
        .unwrap();
    agent
        .report_outcome(pb::ReportOutcomeRequest {
            host_id: "h1".into(),
            permit_id: p.permit_id,
            fencing_token: p.fencing_token,
            outcome: pb::Outcome::Failed.into(),
            detail: "still stuck".into(),
        })
        .await
        .unwrap();
    let d = denied(request(&mut agent, "h1", RestartJob, "d").await);
    assert_eq!(d.reason(), pb::DenyReason::AttemptBudgetExhausted);
    assert_eq!(d.retry_after, None);
    let d = denied(request(&mut agent, "h1", RestartJob, "e").await);
    assert_eq!(d.reason(), pb::DenyReason::Quarantined);
    // Breaker: 5 of 6 live hosts stuck (h1, h2 and three more) is over 70%.
    heartbeat(&mut agent, "h3", labels(&[]), true).await;
    heartbeat(&mut agent, "h4", labels(&[]), true).await;
    heartbeat(&mut agent, "h5", labels(&[]), true).await;
    let d = denied(request(&mut agent, "h6", RestartJob, "f").await);
    assert_eq!(d.reason(), pb::DenyReason::BreakerOpen);
    assert!(d.message.contains("unhealthy"), "{}", d.message);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn reflection_lists_both_services_and_health() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), FAST).await;
    let mut client = ServerReflectionClient::new(server.channel().await);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = client
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner();
    let reply = stream.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("unexpected reply {reply:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for want in [
        "medic.v1.Remediation",
        "medic.v1.Admin",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing from {names:?}"
        );
    }
    server.stop().await.unwrap();
}

/// `/metrics` answers what the scraper asks for, and Prometheus' own
/// tools read both answers: one family per metric, none typed unknown.
#[tokio::test]
async fn metrics_are_negotiated_and_read_cleanly_by_promtool_and_the_python_client() {
    let dir = tempfile::tempdir().unwrap();
    let (server, mut agent, _) = ready(dir.path(), FAST, &["h1", "h2"]).await;
    granted(request(&mut agent, "h1", RestartJob, "a").await);
    let addr = server.metrics_addr;
    let (head, classic) =
        http_request(addr, "GET", "/metrics", Some("text/plain;version=0.0.4")).await;
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    assert!(
        classic.contains("# TYPE medic_decisions_total counter")
            && classic
                .contains("medic_decisions_total{action=\"restart_job\",outcome=\"granted\"} 1"),
        "{classic}"
    );
    let (head, om) = http_request(
        addr,
        "GET",
        "/metrics",
        Some("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"),
    )
    .await;
    assert!(
        head.to_ascii_lowercase()
            .contains("application/openmetrics-text"),
        "{head}"
    );
    assert!(om.ends_with("# EOF\n"), "{om}");
    let c = python_families(&classic, false);
    let o = python_families(&om, true);
    let decisions: Vec<&str> = c
        .lines()
        .filter(|l| l.starts_with("medic_decisions "))
        .collect();
    assert_eq!(
        decisions.len(),
        1,
        "one family for medic_decisions_total:\n{c}"
    );
    assert!(decisions[0].starts_with("medic_decisions counter"), "{c}");
    assert!(!c.contains(" unknown "), "families typed unknown:\n{c}");
    let names = |t: &str| {
        t.lines()
            .map(|l| l.split(' ').take(2).collect::<Vec<_>>().join(" "))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(&c),
        names(&o),
        "the two formats hold the same families"
    );
    promtool_check_metrics(&classic);
    let (head, body) = http_request(addr, "HEAD", "/metrics", None).await;
    assert!(
        head.starts_with("HTTP/1.1 200") && body.is_empty(),
        "{head}"
    );
    server.stop().await.unwrap();
}

/// Older reflection clients (grpcio-reflection's, for one) speak only
/// v1alpha: they list the same services.
#[tokio::test]
async fn reflection_v1alpha_lists_both_services_too() {
    use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), FAST).await;
    let mut client = ServerReflectionClient::new(server.channel().await);
    let list = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let describe = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::FileContainingSymbol(
            "medic.v1.Admin".into(),
        )),
    };
    let mut stream = client
        .server_reflection_info(tokio_stream::iter(vec![list, describe]))
        .await
        .unwrap()
        .into_inner();
    let reply = stream.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("unexpected reply {reply:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for want in ["medic.v1.Remediation", "medic.v1.Admin"] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing from {names:?}"
        );
    }
    let reply = stream.message().await.unwrap().unwrap();
    let Some(MessageResponse::FileDescriptorResponse(files)) = reply.message_response else {
        panic!("unexpected reply {reply:?}");
    };
    assert!(!files.file_descriptor_proto.is_empty());
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_dry_run_outcome_for_an_enforce_permit_is_failed_precondition() {
    let dir = tempfile::tempdir().unwrap();
    let (server, mut agent, _) = ready(dir.path(), FAST, &["h1"]).await;
    let p = granted(request(&mut agent, "h1", RestartJob, "r1").await)
        .permit
        .unwrap();
    let e = agent
        .report_outcome(pb::ReportOutcomeRequest {
            host_id: "h1".into(),
            permit_id: p.permit_id.clone(),
            fencing_token: p.fencing_token,
            outcome: pb::Outcome::DryRun.into(),
            detail: "did nothing, honest".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e}");
    assert!(e.message().contains("enforce mode"), "{}", e.message());
    server.stop().await.unwrap();
}

/// Sends any bytes as a request body.
#[derive(Clone, Copy, Default)]
struct Raw;

impl tonic::codec::Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl tonic::codec::Encoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        use bytes::Buf;
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

#[tokio::test]
async fn an_undecodable_request_body_is_invalid_argument() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), FAST).await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    for path in [
        "/medic.v1.Remediation/Heartbeat",
        "/medic.v1.Remediation/RequestPermit",
        "/medic.v1.Admin/GetStatus",
    ] {
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        grpc.ready().await.unwrap();
        // Field 1 as a string, cut off after its length: not a message.
        let e = grpc
            .unary(
                tonic::Request::new(vec![0x0a, 0x05, b'h']),
                tonic::codegen::http::uri::PathAndQuery::from_static(path),
                Raw,
            )
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{path}: {e}");
        assert!(
            e.message().contains("failed to decode Protobuf message"),
            "{path}: {e}"
        );
    }
    // A well-formed body still works.
    let mut admin = server.admin().await;
    admin.get_status(pb::GetStatusRequest {}).await.unwrap();
    server.stop().await.unwrap();
}
