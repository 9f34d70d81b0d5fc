//! Wall-clock steps, live and across restarts, on an in-process
//! coordinator whose clocks the test moves: a step is never taken for time
//! passing (no mass expiry, no quarantine, no breaker, no frozen budget),
//! and it is logged, counted, recorded in the history and shown in status.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use medic_coordinator::ManualClock;
use medic_policy::ClockStep;
use medic_proto::pb::v1 as pb;

use pb::Action::RestartJob;

const HOSTS: [&str; 4] = ["h1", "h2", "h3", "h4"];

fn hour() -> Duration {
    Duration::from_secs(3600)
}

fn ahead(by: Duration) -> ClockStep {
    ClockStep { forward: true, by }
}

fn back(by: Duration) -> ClockStep {
    ClockStep { forward: false, by }
}

/// FAST with a tight restart budget: two at once, then one an hour.
fn config() -> String {
    FAST.replace(
        "rate = { count = 100, per = \"1h\", burst = 10 }",
        "rate = { count = 1, per = \"1h\", burst = 1 }",
    )
}

/// A coordinator on `clock`, its hosts heartbeating past the warm-up.
async fn ready(dir: &std::path::Path, clock: &Arc<ManualClock>) -> (TestServer, Agent, Admin) {
    let server = TestServer::start_in(dir, &config(), clock.clone()).await;
    let mut agent = server.agent().await;
    let admin = server.admin().await;
    beat(&mut agent).await;
    clock.advance(Duration::from_secs(3));
    beat(&mut agent).await;
    (server, agent, admin)
}

async fn beat(agent: &mut Agent) {
    for h in HOSTS {
        heartbeat(agent, h, labels(&[]), false).await;
    }
}

async fn status(admin: &mut Admin) -> pb::GetStatusResponse {
    admin
        .get_status(pb::GetStatusRequest {})
        .await
        .unwrap()
        .into_inner()
}

async fn clock_events(admin: &mut Admin) -> Vec<pb::event::ClockChecked> {
    admin
        .get_history(pb::GetHistoryRequest {
            kinds: vec![pb::EventKind::Clock.into()],
            page_size: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events
        .into_iter()
        .filter_map(|e| match e.payload {
            Some(pb::event::Payload::ClockChecked(c)) => Some(c),
            _ => None,
        })
        .collect()
}

async fn active_permits(admin: &mut Admin) -> usize {
    admin
        .list_permits(pb::ListPermitsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .permits
        .len()
}

#[tokio::test]
async fn a_live_forward_step_expires_no_permit_and_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(start_time()));
    let (server, mut agent, mut admin) = ready(dir.path(), &clock).await;
    granted(request(&mut agent, "h1", RestartJob, "a").await);
    granted(request(&mut agent, "h2", RestartJob, "b").await);

    // NTP steps the clock an hour ahead; permits last 30 s.
    clock.step(ahead(hour()));
    clock.advance(Duration::from_secs(1));
    beat(&mut agent).await;
    let s = status(&mut admin).await;
    let engine = s.status.clone().unwrap();
    assert_eq!(engine.quarantined_hosts, 0, "no holder quarantined");
    assert!(engine.breakers.is_empty(), "{:?}", engine.breakers);
    assert_eq!(active_permits(&mut admin).await, 2, "no permit expired");
    assert_eq!(s.clock_steps, 1);
    let step = s.last_clock_step.unwrap();
    assert!(step.forward);
    assert_eq!(step.by.unwrap().seconds, 3600);
    assert!(step.detail.contains("seen live"), "{}", step.detail);
    let recorded = clock_events(&mut admin).await;
    assert!(
        recorded
            .iter()
            .any(|c| c.step.as_ref().is_some_and(|s| s.forward)),
        "{recorded:?}"
    );
    assert!(
        http_get(server.metrics_addr, "/metrics")
            .await
            .contains("medic_clock_steps_total{direction=\"ahead\"} 1")
    );

    // The permits expire when their 30 s have passed, not before.
    clock.advance(Duration::from_secs(25));
    beat(&mut agent).await;
    assert_eq!(active_permits(&mut admin).await, 2);
    clock.advance(Duration::from_secs(6));
    beat(&mut agent).await;
    assert_eq!(active_permits(&mut admin).await, 0);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_backward_step_across_a_restart_leaves_budgets_and_pauses_as_set() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(start_time()));
    let (server, mut agent, mut admin) = ready(dir.path(), &clock).await;
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
    admin
        .pause(pb::PauseRequest {
            scope: Some(pb::Scope {
                selector: labels(&[]),
                action: pb::Action::RebootHost.into(),
                action_name: String::new(),
            }),
            reason: "change freeze".into(),
            duration: Some(prost_types::Duration {
                seconds: 600,
                nanos: 0,
            }),
        })
        .await
        .unwrap();
    server.stop().await.unwrap();

    // Stopped, the clock is stepped three hours back, then it starts.
    clock.step(back(3 * hour()));
    let (server, mut agent, mut admin) = ready(dir.path(), &clock).await;
    let s = status(&mut admin).await;
    assert_eq!(s.clock_steps, 1);
    let step = s.last_clock_step.unwrap();
    assert!(!step.forward);
    assert_eq!(step.by.unwrap().seconds, 3 * 3600);
    assert!(step.detail.contains("at start-up"), "{}", step.detail);
    let engine = s.status.unwrap();
    assert_eq!(engine.pauses.len(), 1);

    // The budget is as it was: one more grant now, then one an hour, not
    // a budget frozen for three hours.
    granted(request(&mut agent, "h2", RestartJob, "b").await);
    let d = denied(request(&mut agent, "h3", RestartJob, "c").await);
    assert_eq!(d.reason(), pb::DenyReason::RateLimited);
    let wait = d.retry_after.unwrap().seconds;
    assert!(wait <= 3600, "retry after {wait}s");

    // The ten-minute pause ends ten minutes after it began.
    clock.advance(Duration::from_secs(600));
    beat(&mut agent).await;
    let engine = status(&mut admin).await.status.unwrap();
    assert!(engine.pauses.is_empty(), "{:?}", engine.pauses);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_forward_step_across_a_restart_expires_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(start_time()));
    let (server, mut agent, _) = ready(dir.path(), &clock).await;
    granted(request(&mut agent, "h1", RestartJob, "a").await);
    server.stop().await.unwrap();

    clock.step(ahead(hour()));
    let (server, _agent, mut admin) = ready(dir.path(), &clock).await;
    let s = status(&mut admin).await;
    assert_eq!(s.clock_steps, 1);
    assert_eq!(s.status.unwrap().quarantined_hosts, 0);
    assert_eq!(active_permits(&mut admin).await, 1);
    server.stop().await.unwrap();
}

/// After a reboot the boot clock cannot measure the time spent stopped;
/// a wall clock behind the latest record was still certainly stepped back.
#[tokio::test]
async fn a_clock_behind_the_latest_record_after_a_reboot_counts_the_stop_as_no_time() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(start_time()));
    let (server, mut agent, _) = ready(dir.path(), &clock).await;
    granted(request(&mut agent, "h1", RestartJob, "a").await);
    server.stop().await.unwrap();

    clock.reboot();
    clock.step(back(2 * hour()));
    let (server, _agent, mut admin) = ready(dir.path(), &clock).await;
    let s = status(&mut admin).await;
    assert_eq!(s.clock_steps, 1);
    let step = s.last_clock_step.unwrap();
    assert!(!step.forward);
    assert!(
        step.detail.contains("before the latest record"),
        "{}",
        step.detail
    );
    assert_eq!(active_permits(&mut admin).await, 1);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn time_passing_across_a_restart_is_not_a_step() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(start_time()));
    let (server, _agent, _admin) = ready(dir.path(), &clock).await;
    server.stop().await.unwrap();
    clock.advance(hour());
    let (server, _agent, mut admin) = ready(dir.path(), &clock).await;
    let s = status(&mut admin).await;
    assert_eq!(s.clock_steps, 0);
    assert!(s.last_clock_step.is_none());
    // One mark, taken at the first start of this boot.
    let recorded = clock_events(&mut admin).await;
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    assert!(recorded[0].step.is_none());
    server.stop().await.unwrap();
}
