//! The agent's own timing, on virtual time: a stand-in coordinator and a
//! stand-in machine answer in memory, and tokio's paused clock runs the
//! minutes these tests cover in milliseconds. Nothing here touches a socket
//! or a process, so paused time cannot fire a deadline early while real
//! I/O is under way (the end-to-end tests in `agent.rs` keep real time).

#![allow(clippy::unwrap_used)]

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use medic_agent::config::JobConfig;
use medic_agent::detect::{Evidence, JobDetectors, Verdict};
use medic_agent::effects::{ActionContext, CommandReport};
use medic_agent::{
    Agent, AgentConfig, Control, Coordinator, Environment, Host, HostError, VirtualClock,
};
use medic_client::CallError;
use medic_policy::{
    Action, Decision, Denial, DenyReason, FencingToken, Heartbeat, HeartbeatReply, Outcome, Permit,
    PermitId, PermitRequest, PermitState, Quarantine, QuarantineCause,
};
use medic_proto::request::{OutcomeReport, Renewal};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// One call the agent made, and when (virtual time since the test began).
#[derive(Clone, Debug, PartialEq)]
enum Call {
    /// A heartbeat, with its `needs_human`.
    Heartbeat(Option<String>),
    Request(Action),
    Renew,
    Report(Outcome, String),
}

/// A coordinator in memory: it answers permit requests from a script (then
/// denies, asking for a human), renews whatever it granted, and records
/// every call with its time.
#[derive(Clone)]
struct Scripted {
    start: Instant,
    calls: Arc<Mutex<Vec<(Duration, Call)>>>,
    decisions: Arc<Mutex<VecDeque<Answer>>>,
    granted: Arc<Mutex<Option<Permit>>>,
    /// Outcome reports get no answer (no coordinator reachable).
    reports_unreachable: bool,
    /// The renewal with this number (1 = the first) and every later one
    /// finds the permit revoked.
    revoke_at_renewal: Option<usize>,
    /// The wake-up value heartbeat replies carry.
    wake: Arc<AtomicU64>,
    /// Whether the host is quarantined: set, as the coordinator does, by a
    /// heartbeat that says it needs a human; cleared by `release`.
    quarantined: Arc<AtomicBool>,
}

/// What the stand-in answers a permit request with.
enum Answer {
    Grant(Duration),
    Deny(Option<Duration>),
}

impl Scripted {
    fn new(answers: impl IntoIterator<Item = Answer>) -> Self {
        Self {
            start: Instant::now(),
            calls: Arc::default(),
            decisions: Arc::new(Mutex::new(answers.into_iter().collect())),
            granted: Arc::default(),
            reports_unreachable: false,
            revoke_at_renewal: None,
            wake: Arc::new(AtomicU64::new(1)),
            quarantined: Arc::default(),
        }
    }

    fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// Something changed at the coordinator (a breaker reset, say).
    fn wake_up(&self) {
        self.wake.fetch_add(1, Ordering::SeqCst);
    }

    /// A person releases the host, as `medicctl unquarantine` does.
    fn release(&self) {
        self.quarantined.store(false, Ordering::SeqCst);
        self.wake_up();
    }

    /// When heartbeats were sent, and whether they said a human is needed.
    fn heartbeats(&self) -> Vec<(Duration, bool)> {
        self.calls()
            .into_iter()
            .filter_map(|(at, c)| match c {
                Call::Heartbeat(h) => Some((at, h.is_some())),
                _ => None,
            })
            .collect()
    }

    fn record(&self, call: Call) {
        self.calls
            .lock()
            .unwrap()
            .push((self.start.elapsed(), call));
    }

    fn calls(&self) -> Vec<(Duration, Call)> {
        self.calls.lock().unwrap().clone()
    }

    fn reports(&self) -> Vec<(Duration, Outcome, String)> {
        self.calls()
            .into_iter()
            .filter_map(|(at, c)| match c {
                Call::Report(o, d) => Some((at, o, d)),
                _ => None,
            })
            .collect()
    }

    fn times_of(&self, wanted: &Call) -> Vec<Duration> {
        self.calls()
            .into_iter()
            .filter(|(_, c)| c == wanted)
            .map(|(at, _)| at)
            .collect()
    }
}

impl Coordinator for Scripted {
    async fn heartbeat(&mut self, hb: Heartbeat) -> Result<HeartbeatReply, CallError> {
        self.record(Call::Heartbeat(hb.needs_human.clone()));
        if hb.needs_human.is_some() {
            self.quarantined.store(true, Ordering::SeqCst);
        }
        let quarantine = self.quarantined.load(Ordering::SeqCst).then(|| Quarantine {
            host: hb.host.clone(),
            cause: QuarantineCause::GaveUp,
            actor: format!("agent:{}", hb.host),
            reason: hb.needs_human.clone().unwrap_or_default(),
            since: SystemTime::UNIX_EPOCH,
        });
        Ok(HeartbeatReply {
            heartbeat_interval: Duration::from_secs(10),
            held_permit_state: None,
            quarantine,
            dry_run: false,
            wake: self.wake.load(Ordering::SeqCst),
        })
    }

    async fn request_permit(&mut self, r: PermitRequest) -> Result<Decision, CallError> {
        self.record(Call::Request(r.action));
        let answer = self.decisions.lock().unwrap().pop_front();
        Ok(match answer {
            Some(Answer::Grant(ttl)) => {
                let token = FencingToken(1);
                let now = SystemTime::UNIX_EPOCH;
                let permit = Permit {
                    id: PermitId::for_token(token),
                    token,
                    request_id: r.request_id,
                    host: r.host,
                    action: r.action,
                    job: r.job,
                    reason: r.reason,
                    labels: Default::default(),
                    dry_run: r.dry_run,
                    granted_at: now,
                    expires_at: now + ttl,
                    ttl,
                    state: PermitState::Active,
                };
                *self.granted.lock().unwrap() = Some(permit.clone());
                Decision::Granted {
                    permit,
                    replayed: false,
                }
            }
            Some(Answer::Deny(retry_after)) => deny(retry_after),
            None => deny(None),
        })
    }

    async fn renew_permit(&mut self, _: Renewal) -> Result<Permit, CallError> {
        self.record(Call::Renew);
        if self
            .revoke_at_renewal
            .is_some_and(|n| self.times_of(&Call::Renew).len() >= n)
        {
            return Err(CallError::Status {
                url: "scripted".into(),
                status: tonic::Status::failed_precondition(
                    "permit p-000000000001 has already ended (revoked)",
                ),
            });
        }
        Ok(self.granted.lock().unwrap().clone().unwrap())
    }

    async fn report_outcome(&mut self, r: OutcomeReport) -> Result<Permit, CallError> {
        self.record(Call::Report(r.outcome, r.detail));
        if self.reports_unreachable {
            return Err(CallError::Unreachable {
                attempts: Vec::new(),
            });
        }
        let mut permit = self.granted.lock().unwrap().clone().unwrap();
        permit.state = r.outcome.final_state();
        Ok(permit)
    }
}

fn deny(retry_after: Option<Duration>) -> Decision {
    Decision::Denied(Denial {
        reason: DenyReason::Paused,
        retry_after,
        message: "paused".into(),
    })
}

/// A machine whose job stays stuck whatever is done to it (unless a
/// person fixes it: `healthy`).
#[derive(Clone, Default)]
struct StuckJob {
    restarts: Arc<AtomicUsize>,
    reboots: Arc<AtomicUsize>,
    healthy: Arc<AtomicBool>,
    /// A restart fixes the job (until the test makes it relapse).
    heal_on_restart: Arc<AtomicBool>,
}

impl Host for StuckJob {
    async fn check(&mut self, _: &JobConfig, _: &mut JobDetectors, _: SystemTime) -> Verdict {
        if self.healthy.load(Ordering::SeqCst) {
            return Verdict::Healthy;
        }
        Verdict::Fired(Evidence {
            detector: "heartbeat_file",
            detail: "stale".into(),
        })
    }
    async fn restart(
        &mut self,
        _: &JobConfig,
        _: &JobDetectors,
        _: &ActionContext,
    ) -> Result<Option<CommandReport>, HostError> {
        self.restarts.fetch_add(1, Ordering::SeqCst);
        if self.heal_on_restart.load(Ordering::SeqCst) {
            self.healthy.store(true, Ordering::SeqCst);
        }
        Ok(None)
    }
    async fn reboot(&mut self, _: &[String], _: &ActionContext) -> Result<(), HostError> {
        self.reboots.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    /// Healthy here means healthy on evidence made now.
    fn fresh(&mut self, _: &JobConfig, _: &JobDetectors) -> Result<(), String> {
        if self.healthy.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err("no evidence since".to_owned())
        }
    }
}

fn config(dir: &Path, extra: &str) -> AgentConfig {
    AgentConfig::from_toml(&format!(
        r#"
host_id = "h1"
coordinators = ["http://127.0.0.1:1"]
check_interval = "1s"
heartbeat_interval = "10s"
state_dir = "{state}"
safety_margin = "5s"
[[jobs]]
name = "ingest"
confirm = 1
{extra}
[jobs.restart]
verify_timeout = "60s"
command = ["true"]
[jobs.heartbeat_file]
path = "{hb}"
"#,
        state = dir.join("state").display(),
        hb = dir.join("job.hb").display(),
    ))
    .unwrap_or_else(|e| panic!("{e}"))
}

/// Runs an agent on virtual time until `done` holds (checked every virtual
/// second, for at most an hour of it), then stops it. Its wall clock reads
/// a fixed origin when the test began, so an agent started again later in
/// a test sees the time move on.
async fn run_until(
    config: AgentConfig,
    host: StuckJob,
    coordinator: Scripted,
    done: impl Fn(&Scripted) -> bool,
) {
    let env = Environment {
        clock: Arc::new(VirtualClock::new(
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000) + coordinator.elapsed(),
        )),
        ..Environment::default()
    };
    let agent = Agent::with_coordinator(config, env, host, coordinator.clone());
    let (tx, rx) = mpsc::channel(1);
    let task = tokio::spawn(agent.run(rx));
    let give_up = Instant::now() + Duration::from_secs(3600);
    while !done(&coordinator) {
        assert!(Instant::now() < give_up, "{:#?}", coordinator.calls());
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    tx.send(Control::Shutdown).await.unwrap();
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_held_permit_is_renewed_every_third_of_its_ttl_while_the_restart_is_verified() {
    let dir = tempfile::tempdir().unwrap();
    let host = StuckJob::default();
    let coordinator = Scripted::new([Answer::Grant(Duration::from_secs(30))]);
    run_until(
        config(dir.path(), ""),
        host.clone(),
        coordinator.clone(),
        |c| !c.reports().is_empty(),
    )
    .await;

    assert_eq!(host.restarts.load(Ordering::SeqCst), 1);
    let granted = coordinator.times_of(&Call::Request(Action::RestartJob))[0];
    let renewals = coordinator.times_of(&Call::Renew);
    // Right before the restart, whatever the permit's age (a revocation
    // would be seen), then every 10 s (TTL/3) of the 60 s verification,
    // each seen within a verification step (1 s).
    assert_eq!(renewals[0], granted, "{renewals:?}");
    assert_eq!(renewals.len(), 6, "{renewals:?}");
    for pair in renewals.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= Duration::from_secs(10) && gap <= Duration::from_secs(11),
            "{renewals:?}"
        );
    }
    let (at, outcome, detail) = coordinator.reports().remove(0);
    assert_eq!(outcome, Outcome::Failed);
    assert!(detail.contains("still stuck after 1m"), "{detail}");
    let verified_for = at - granted;
    assert!(
        verified_for >= Duration::from_secs(60) && verified_for <= Duration::from_secs(61),
        "{verified_for:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_reboot_command_that_returns_fails_the_reboot_two_minutes_later() {
    let dir = tempfile::tempdir().unwrap();
    let host = StuckJob::default();
    let coordinator = Scripted::new([Answer::Grant(Duration::from_secs(600))]);
    let config = config(dir.path(), "reboot_after_failed_restarts = 0");
    let state = config.state_dir.join("state.json");
    run_until(config, host.clone(), coordinator.clone(), |c| {
        !c.reports().is_empty()
    })
    .await;

    assert_eq!(host.reboots.load(Ordering::SeqCst), 1);
    assert_eq!(host.restarts.load(Ordering::SeqCst), 0);
    let granted = coordinator.times_of(&Call::Request(Action::RebootHost))[0];
    let (at, outcome, detail) = coordinator.reports().remove(0);
    assert_eq!(outcome, Outcome::Failed);
    assert_eq!(
        detail,
        "the reboot command returned but the host did not reboot"
    );
    assert_eq!(at - granted, Duration::from_secs(120));
    let saved = std::fs::read_to_string(state).unwrap();
    assert!(saved.contains("\"failed_reboots\": 1"), "{saved}");
    assert!(saved.contains("\"pending\": null"), "{saved}");
}

#[tokio::test(start_paused = true)]
async fn a_denied_agent_asks_again_after_retry_after_and_idles_a_minute_without_one() {
    let dir = tempfile::tempdir().unwrap();
    let coordinator = Scripted::new([
        Answer::Deny(Some(Duration::from_secs(30))),
        Answer::Deny(None),
    ]);
    run_until(
        config(dir.path(), ""),
        StuckJob::default(),
        coordinator.clone(),
        |c| c.times_of(&Call::Request(Action::RestartJob)).len() >= 3,
    )
    .await;

    let asked = coordinator.times_of(&Call::Request(Action::RestartJob));
    // retry_after plus up to 20% jitter, seen at the next check (1 s).
    let first_wait = asked[1] - asked[0];
    assert!(
        first_wait >= Duration::from_secs(30) && first_wait <= Duration::from_secs(37),
        "{asked:?}"
    );
    // No retry_after: a human must act; the agent looks again in a minute.
    let idle = asked[2] - asked[1];
    assert!(
        idle >= Duration::from_secs(60) && idle <= Duration::from_secs(61),
        "{asked:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn an_outcome_nobody_takes_is_retried_for_five_minutes_then_left_to_expire() {
    let dir = tempfile::tempdir().unwrap();
    let host = StuckJob::default();
    let mut coordinator = Scripted::new([Answer::Grant(Duration::from_secs(30))]);
    coordinator.reports_unreachable = true;
    let mut config = config(dir.path(), "");
    config.dry_run = true;
    // Done once the agent asks again: it stopped reporting.
    run_until(config, host.clone(), coordinator.clone(), |c| {
        c.times_of(&Call::Request(Action::RestartJob)).len() >= 2
    })
    .await;

    assert_eq!(host.restarts.load(Ordering::SeqCst), 0, "a dry run");
    let reports = coordinator.reports();
    assert!(reports.iter().all(|(_, o, _)| *o == Outcome::DryRun));
    let (first, last) = (reports[0].0, reports[reports.len() - 1].0);
    // Backoff from 0.5 s, doubling up to 30 s: retried until five minutes
    // have passed, and not once more after that.
    assert!(
        last - first >= Duration::from_secs(300) && last - first <= Duration::from_secs(330),
        "{reports:?}"
    );
    assert!(reports.len() >= 12, "{reports:?}");
}

#[tokio::test(start_paused = true)]
async fn a_waiting_agent_asks_again_within_two_heartbeats_after_a_wake_up() {
    let dir = tempfile::tempdir().unwrap();
    // A breaker's denial: come back in 15 minutes.
    let coordinator = Scripted::new([Answer::Deny(Some(Duration::from_secs(900)))]);
    let woken_at = Duration::from_secs(20);
    let woken = AtomicBool::new(false);
    run_until(
        config(dir.path(), ""),
        StuckJob::default(),
        coordinator.clone(),
        |c| {
            // An operator resets the breaker 20 s after the denial.
            if c.elapsed() >= woken_at && !woken.swap(true, Ordering::SeqCst) {
                c.wake_up();
            }
            c.times_of(&Call::Request(Action::RestartJob)).len() >= 2
        },
    )
    .await;

    let asked = coordinator.times_of(&Call::Request(Action::RestartJob));
    assert!(asked[0] < woken_at, "{asked:?}");
    // Learnt at the next heartbeat (within one interval, 10 s), asked
    // within one more interval of jitter, seen at the next check (1 s).
    assert!(
        asked[1] >= woken_at && asked[1] <= woken_at + Duration::from_secs(21),
        "{asked:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_denial_wait_is_capped_at_a_bounded_multiple_of_the_heartbeat_interval() {
    let dir = tempfile::tempdir().unwrap();
    let coordinator = Scripted::new([
        Answer::Deny(Some(Duration::from_secs(900))),
        Answer::Deny(Some(Duration::from_secs(900))),
    ]);
    run_until(
        config(dir.path(), ""),
        StuckJob::default(),
        coordinator.clone(),
        |c| c.times_of(&Call::Request(Action::RestartJob)).len() >= 2,
    )
    .await;

    let asked = coordinator.times_of(&Call::Request(Action::RestartJob));
    // Six heartbeat intervals (60 s) less up to 20% jitter, not 15 minutes.
    let wait = asked[1] - asked[0];
    assert!(
        wait >= Duration::from_secs(48) && wait <= Duration::from_secs(61),
        "{asked:?}"
    );
}

/// A state file for a job whose ladder is exhausted, as an agent of the
/// previous release wrote it (no `quarantined`).
fn gave_up_state(config: &AgentConfig) {
    std::fs::create_dir_all(&config.state_dir).unwrap();
    std::fs::write(
        config.state_dir.join("state.json"),
        r#"{
  "version": 1,
  "jobs": {
    "ingest": {
      "failed_restarts": 2,
      "failed_reboots": 1,
      "gave_up": "job ingest is still stuck after 2 failed restart(s) and 1 failed reboot(s)"
    }
  },
  "pending": null
}"#,
    )
    .unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_released_host_stops_asking_for_a_human() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "");
    gave_up_state(&config);
    let state = config.state_dir.join("state.json");
    let host = StuckJob::default();
    let coordinator = Scripted::new([]);
    let released_at = Duration::from_secs(35);
    let released = AtomicBool::new(false);
    run_until(config, host.clone(), coordinator.clone(), |c| {
        if c.elapsed() >= released_at && !released.swap(true, Ordering::SeqCst) {
            c.release();
        }
        !c.times_of(&Call::Request(Action::RestartJob)).is_empty()
    })
    .await;

    let beats = coordinator.heartbeats();
    // Asked for a human until the coordinator confirmed the quarantine
    // (the first reply), and never again: not even after the release.
    assert!(beats[0].1, "{beats:?}");
    assert!(beats[1..].iter().all(|(_, needs)| !needs), "{beats:?}");
    assert!(beats.iter().any(|(at, _)| *at > released_at), "{beats:?}");
    assert!(
        !coordinator.quarantined.load(Ordering::SeqCst),
        "released stays released"
    );
    // The ladder starts afresh: a restart is asked for, after the release.
    let asked = coordinator.times_of(&Call::Request(Action::RestartJob));
    assert!(asked[0] > released_at, "{asked:?}");
    let saved = std::fs::read_to_string(state).unwrap();
    assert!(saved.contains("\"gave_up\": null"), "{saved}");
    assert!(saved.contains("\"failed_restarts\": 0"), "{saved}");
}

#[tokio::test(start_paused = true)]
async fn a_job_seen_healthy_clears_its_gave_up_state() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "");
    gave_up_state(&config);
    let host = StuckJob::default();
    let coordinator = Scripted::new([]);
    let fixed = (Duration::from_secs(30), Duration::from_secs(40));
    let probe = host.clone();
    run_until(config, host.clone(), coordinator.clone(), move |c| {
        // A person fixes the job; it gets stuck again ten seconds later.
        probe.healthy.store(
            c.elapsed() >= fixed.0 && c.elapsed() < fixed.1,
            Ordering::SeqCst,
        );
        !c.times_of(&Call::Request(Action::RestartJob)).is_empty()
    })
    .await;

    let beats = coordinator.heartbeats();
    assert!(
        beats.iter().all(|(at, needs)| !needs || *at < fixed.0),
        "{beats:?}"
    );
    // Stuck again: the ladder climbs from its first rung instead of giving
    // up at once. (The host stays quarantined until a person releases it.)
    let asked = coordinator.times_of(&Call::Request(Action::RestartJob));
    assert!(asked[0] >= fixed.1, "{asked:?}");
    assert!(coordinator.quarantined.load(Ordering::SeqCst));
}

/// An operator revokes the permit while the restart is being verified: the
/// agent stops verifying at once, reports nothing (the coordinator ended
/// the permit), counts no failed restart (so its ladder does not climb to
/// a reboot), and does not ask again at once.
#[tokio::test(start_paused = true)]
async fn a_permit_revoked_during_verification_stops_it_once_and_counts_no_failed_restart() {
    let dir = tempfile::tempdir().unwrap();
    let host = StuckJob::default();
    let mut coordinator = Scripted::new([
        Answer::Grant(Duration::from_secs(30)),
        Answer::Grant(Duration::from_secs(30)),
    ]);
    // The first renewal confirms the permit right before the restart; the
    // second, 10 s into verification, finds it revoked.
    coordinator.revoke_at_renewal = Some(2);
    run_until(
        config(dir.path(), "reboot_after_failed_restarts = 1"),
        host.clone(),
        coordinator.clone(),
        |c| {
            c.times_of(&Call::Request(Action::RestartJob)).len() >= 2
                || !c.times_of(&Call::Request(Action::RebootHost)).is_empty()
        },
    )
    .await;

    assert_eq!(host.restarts.load(Ordering::SeqCst), 1);
    let asked = coordinator.times_of(&Call::Request(Action::RestartJob));
    let renewals = coordinator.times_of(&Call::Renew);
    let first_permit: Vec<_> = renewals.iter().filter(|&&t| t < asked[1]).collect();
    assert_eq!(
        first_permit.len(),
        2,
        "no renewal after the revocation: {renewals:?}"
    );
    assert!(
        coordinator.reports().is_empty(),
        "{:?}",
        coordinator.reports()
    );
    assert!(
        coordinator
            .times_of(&Call::Request(Action::RebootHost))
            .is_empty(),
        "a revoked restart is not a failed one: {:?}",
        coordinator.calls()
    );
    assert!(
        asked[1] >= renewals[1] + Duration::from_secs(10),
        "asked again at once: {asked:?}, revoked at {:?}",
        renewals[1]
    );
}

/// While an action is in flight, the agent says what it is (a stop
/// request logs it); idle, nothing.
#[tokio::test(start_paused = true)]
async fn the_action_in_flight_is_described_for_a_stop_request() {
    let dir = tempfile::tempdir().unwrap();
    let host = StuckJob::default();
    let coordinator = Scripted::new([Answer::Grant(Duration::from_secs(30))]);
    let env = Environment {
        clock: Arc::new(VirtualClock::new(
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        )),
        ..Environment::default()
    };
    let agent = Agent::with_coordinator(
        config(dir.path(), ""),
        env,
        host.clone(),
        coordinator.clone(),
    );
    let activity = agent.activity();
    assert_eq!(activity.describe(), None);
    let (tx, rx) = mpsc::channel(1);
    let task = tokio::spawn(agent.run(rx));
    // Verifying the restart (renewed every 10 s of it).
    while coordinator.times_of(&Call::Renew).len() < 2 {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let what = activity.describe().expect("an action in flight");
    assert!(
        what.starts_with("restart_job of job \"ingest\" under permit"),
        "{what}"
    );
    while coordinator.reports().is_empty() {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(activity.describe(), None);
    tx.send(Control::Shutdown).await.unwrap();
    task.await.unwrap();
}

/// A dry run climbs the ladder as failures would, so a reboot is
/// previewed too, and it gives up in words only: nothing is restarted or
/// rebooted, the real ladder does not move, and no human is asked for.
#[tokio::test(start_paused = true)]
async fn the_dry_run_ladder_climbs_to_a_reboot_preview_and_changes_nothing_real() {
    let dir = tempfile::tempdir().unwrap();
    let host = StuckJob::default();
    let coordinator = Scripted::new([
        Answer::Grant(Duration::from_secs(30)),
        Answer::Grant(Duration::from_secs(30)),
    ]);
    let mut config = config(
        dir.path(),
        "reboot_after_failed_restarts = 1\ngive_up_after_failed_reboots = 1",
    );
    config.dry_run = true;
    run_until(config.clone(), host.clone(), coordinator.clone(), |c| {
        c.reports().len() >= 2
    })
    .await;

    assert!(
        !coordinator
            .times_of(&Call::Request(Action::RestartJob))
            .is_empty()
    );
    assert!(
        !coordinator
            .times_of(&Call::Request(Action::RebootHost))
            .is_empty()
    );
    assert_eq!(host.restarts.load(Ordering::SeqCst), 0);
    assert_eq!(host.reboots.load(Ordering::SeqCst), 0);
    let reports = coordinator.reports();
    assert!(
        reports.iter().all(|(_, o, _)| *o == Outcome::DryRun),
        "{reports:?}"
    );
    assert!(
        reports[0].2.contains("would restart job \"ingest\"")
            && reports[1].2.contains("would reboot the host"),
        "{reports:?}"
    );
    assert!(
        coordinator.heartbeats().iter().all(|(_, needs)| !needs),
        "a dry run asks for no human"
    );
    let saved = std::fs::read_to_string(config.state_dir.join("state.json")).unwrap_or_default();
    assert!(!saved.contains("failed_restarts\": 1"), "{saved}");
}

/// A machine whose job a restart fixes.
fn healing() -> StuckJob {
    let host = StuckJob::default();
    host.heal_on_restart.store(true, Ordering::SeqCst);
    host
}

/// After a verified fix the permit is held, and renewed, through the
/// job's probation; only then is the outcome SUCCEEDED.
#[tokio::test(start_paused = true)]
async fn a_verified_fix_is_held_through_probation_then_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let host = healing();
    let coordinator = Scripted::new([Answer::Grant(Duration::from_secs(60))]);
    run_until(
        config(dir.path(), "probation = \"5m\""),
        host.clone(),
        coordinator.clone(),
        |c| !c.reports().is_empty(),
    )
    .await;

    assert_eq!(host.restarts.load(Ordering::SeqCst), 1);
    let granted = coordinator.times_of(&Call::Request(Action::RestartJob))[0];
    let (at, outcome, detail) = coordinator.reports().remove(0);
    assert_eq!(outcome, Outcome::Succeeded);
    assert!(
        detail.contains("the job verified healthy; healthy through 5m of probation"),
        "{detail}"
    );
    let held = at - granted;
    assert!(
        held >= Duration::from_secs(300) && held <= Duration::from_secs(303),
        "{held:?}"
    );
    // Renewed every third of its 60 s TTL meanwhile, so it never expired.
    let renewals = coordinator.times_of(&Call::Renew);
    assert!(renewals.len() >= 15, "{renewals:?}");
    for pair in renewals.windows(2) {
        assert!(pair[1] - pair[0] <= Duration::from_secs(21), "{renewals:?}");
    }
    assert!(
        *renewals.last().unwrap() + Duration::from_secs(60) > at,
        "{renewals:?}"
    );
}

/// A job that relapses during probation ends the permit FAILED, and the
/// ladder climbs to the next rung.
#[tokio::test(start_paused = true)]
async fn a_relapse_in_probation_is_failed_and_the_next_rung_is_a_reboot() {
    let dir = tempfile::tempdir().unwrap();
    let host = healing();
    let coordinator = Scripted::new([
        Answer::Grant(Duration::from_secs(60)),
        Answer::Grant(Duration::from_secs(600)),
    ]);
    let relapse = host.clone();
    run_until(
        config(
            dir.path(),
            "probation = \"5m\"\nreboot_after_failed_restarts = 1",
        ),
        host.clone(),
        coordinator.clone(),
        move |c| {
            // Two minutes into probation the job is stuck again.
            if c.elapsed() >= Duration::from_secs(120) {
                relapse.heal_on_restart.store(false, Ordering::SeqCst);
                relapse.healthy.store(false, Ordering::SeqCst);
            }
            !c.times_of(&Call::Request(Action::RebootHost)).is_empty()
        },
    )
    .await;

    let (at, outcome, detail) = coordinator.reports().remove(0);
    assert_eq!(outcome, Outcome::Failed);
    assert!(
        detail.contains("the job verified healthy, but the job relapsed")
            && detail.contains("into its 5m probation: heartbeat_file: stale"),
        "{detail}"
    );
    assert!(
        at >= Duration::from_secs(120) && at <= Duration::from_secs(123),
        "{at:?}"
    );
    let reboot = coordinator.times_of(&Call::Request(Action::RebootHost))[0];
    assert!(reboot - at <= Duration::from_secs(2), "{reboot:?} {at:?}");
}

/// An agent stopped during probation leaves it in its state file; the next
/// one resumes it (no second restart) and ends it on time.
#[tokio::test(start_paused = true)]
async fn an_agent_restarted_during_probation_resumes_it() {
    let dir = tempfile::tempdir().unwrap();
    let host = healing();
    let coordinator = Scripted::new([Answer::Grant(Duration::from_secs(60))]);
    let config = config(dir.path(), "probation = \"5m\"");
    let state = config.state_dir.join("state.json");
    let on_probation = {
        let state = state.clone();
        move |c: &Scripted| {
            c.elapsed() >= Duration::from_secs(60)
                && std::fs::read_to_string(&state).is_ok_and(|s| s.contains("\"probation\": {"))
        }
    };
    run_until(
        config.clone(),
        host.clone(),
        coordinator.clone(),
        on_probation,
    )
    .await;
    assert!(coordinator.reports().is_empty());
    let stopped = coordinator.elapsed();

    run_until(config, host.clone(), coordinator.clone(), |c| {
        !c.reports().is_empty()
    })
    .await;
    assert_eq!(host.restarts.load(Ordering::SeqCst), 1, "restarted again");
    let granted = coordinator.times_of(&Call::Request(Action::RestartJob))[0];
    let (at, outcome, detail) = coordinator.reports().remove(0);
    assert_eq!(outcome, Outcome::Succeeded, "{detail}");
    assert!(
        detail.contains("healthy through 5m of probation"),
        "{detail}"
    );
    assert!(at > stopped);
    let held = at - granted;
    assert!(
        held >= Duration::from_secs(300) && held <= Duration::from_secs(303),
        "{held:?}"
    );
    assert!(
        coordinator
            .times_of(&Call::Renew)
            .iter()
            .any(|&t| t > stopped),
        "the resumed probation renews the permit"
    );
}
