//! The agent's loop: check the jobs, heartbeat, and when a job is stuck,
//! ask for a permit and climb its ladder. It never acts without an active,
//! unexpired permit (checked against its own monotonic clock with a safety
//! margin), re-checks the problem right before acting, and with no
//! coordinator it does nothing (I8).

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use medic_client::CallError;
use medic_policy::{
    Action, Decision, Heartbeat, Outcome, PermitRef, PermitRequest, Problem, RequestId,
};
use medic_proto::request::{OutcomeReport, Renewal};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::backoff::{Backoff, after_denial};
use crate::clock::{Clock, SystemClock};
use crate::config::{AgentConfig, JobConfig};
use crate::coordinator::{Coordinator, Coordinators};
use crate::detect::{JobDetectors, Verdict};
use crate::effects::{Host, SystemHost};
use crate::ladder::{self, JobState, Step};
use crate::state::{AgentState, Pending, StateError, StateFile};

/// What the signal handler (or a test) asks of a running agent.
#[derive(Debug)]
pub enum Control {
    /// Apply a new, already validated configuration.
    Reload(Box<AgentConfig>),
    /// Finish any action in flight, then stop.
    Shutdown,
}

struct Job {
    config: JobConfig,
    detectors: JobDetectors,
    state: JobState,
}

/// A permit the agent holds, timed by its own monotonic clock.
#[derive(Clone, Debug)]
struct Held {
    permit: PermitRef,
    action: Action,
    job: String,
    dry_run: bool,
    ttl: Duration,
    /// When it was received or last renewed (monotonic).
    renewed: Instant,
}

impl Held {
    /// The instant after which no irreversible step may start.
    fn act_before(&self, margin: Duration) -> Instant {
        self.renewed + self.ttl.saturating_sub(margin)
    }
}

/// Settings the agent takes from outside its config file.
#[derive(Clone, Debug)]
pub struct Environment {
    /// Where /proc is ("/proc"; a fixture directory in tests).
    pub proc_root: PathBuf,
    /// Where the agent reads the time and waits (the system's clocks; a
    /// [`crate::clock::VirtualClock`] in tests).
    pub clock: Arc<dyn Clock>,
}

impl Default for Environment {
    fn default() -> Self {
        Self {
            proc_root: PathBuf::from("/proc"),
            clock: Arc::new(SystemClock),
        }
    }
}

/// The agent. `H` is the machine it acts on: the real one by default, a
/// simulated one in `medic-sim`. `C` is the permit service it asks: the
/// configured coordinators by default, a stand-in in tests.
pub struct Agent<H = SystemHost, C = Coordinators> {
    host: H,
    config: AgentConfig,
    env: Environment,
    /// `env.clock`, at hand.
    clock: Arc<dyn Clock>,
    jobs: Vec<Job>,
    coordinator: C,
    state_file: StateFile,
    /// `Err`: the state file is unusable; heartbeat, but never act.
    state: Result<AgentState, StateError>,
    heartbeat_interval: Duration,
    next_heartbeat: Instant,
    next_request: Instant,
    backoff: Backoff,
    /// The attempt in progress: (job, action, request_id), reused when a
    /// request must be retried after a transport failure.
    attempt: Option<(String, Action, String)>,
    held: Option<Held>,
    reachable: Option<bool>,
    metrics: std::sync::Arc<crate::metrics::AgentMetrics>,
    /// Which jobs were stuck at the last check.
    last_stuck: Vec<bool>,
}

impl<H, C> std::fmt::Debug for Agent<H, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Agent({}, {} jobs)",
            self.config.host_id,
            self.jobs.len()
        )
    }
}

impl Agent<SystemHost> {
    /// An agent for `config` on this machine; loads its state file (a
    /// corrupt one disables actions, with a logged reason).
    pub fn new(config: AgentConfig, env: Environment) -> Self {
        Agent::with_host(config, env, SystemHost)
    }
}

impl<H: Host> Agent<H> {
    /// An agent for `config` acting on `host` (a simulated machine, a fake
    /// in tests); otherwise the same as [`Agent::new`].
    pub fn with_host(config: AgentConfig, env: Environment, host: H) -> Self {
        let coordinator = Coordinators::new(&config);
        Agent::with_coordinator(config, env, host, coordinator)
    }
}

impl<H: Host, C: Coordinator> Agent<H, C> {
    /// An agent for `config` acting on `host` and asking `coordinator`
    /// (a stand-in in tests) instead of the configured coordinators;
    /// otherwise the same as [`Agent::with_host`].
    pub fn with_coordinator(
        config: AgentConfig,
        env: Environment,
        host: H,
        coordinator: C,
    ) -> Self {
        let state_file = StateFile::new(&config.state_dir);
        let state = state_file.load().inspect_err(|e| {
            tracing::error!(error = %e, "not acting until the state file is fixed");
        });
        let clock = env.clock.clone();
        let now = clock.now();
        let jobs = config
            .jobs
            .iter()
            .map(|j| Job {
                config: j.clone(),
                detectors: JobDetectors::new(j.detectors.clone(), env.proc_root.clone(), now),
                state: JobState::Healthy,
            })
            .collect();
        Self {
            heartbeat_interval: config.heartbeat_interval,
            next_heartbeat: clock.instant(),
            next_request: clock.instant(),
            backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(300)),
            attempt: None,
            held: None,
            reachable: None,
            metrics: std::sync::Arc::new(crate::metrics::AgentMetrics::new()),
            last_stuck: Vec::new(),
            host,
            coordinator,
            state_file,
            state,
            jobs,
            env,
            clock,
            config,
        }
    }

    /// The agent's metrics.
    pub fn metrics(&self) -> std::sync::Arc<crate::metrics::AgentMetrics> {
        self.metrics.clone()
    }

    /// Runs until `control` says `Shutdown` (or is closed). An action in
    /// flight is finished first.
    pub async fn run(mut self, mut control: mpsc::Receiver<Control>) {
        tracing::info!(summary = %self.config.summary(), "medic agent running");
        let metrics_server = match self.config.metrics_listen {
            None => None,
            Some(addr) => match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => {
                    tracing::info!(%addr, "serving metrics");
                    Some(tokio::spawn(crate::metrics::serve(l, self.metrics.clone())))
                }
                Err(e) => {
                    tracing::error!(%addr, error = %e, "cannot serve metrics");
                    None
                }
            },
        };
        self.finish_pending().await;
        let mut next_check = self.clock.instant();
        loop {
            let sleep = self.clock.sleep_until(next_check);
            tokio::select! {
                () = sleep => {}
                c = control.recv() => match c {
                    Some(Control::Reload(cfg)) => { self.reload(*cfg); continue; }
                    Some(Control::Shutdown) | None => break,
                },
            }
            next_check = self.clock.instant() + self.config.check_interval;
            self.check_jobs().await;
            if self.clock.instant() >= self.next_heartbeat {
                self.heartbeat().await;
            }
            if self.clock.instant() >= self.next_request {
                self.maybe_act().await;
            }
        }
        if let Some(s) = metrics_server {
            s.abort();
        }
        tracing::info!("medic agent stopped");
    }

    fn reload(&mut self, config: AgentConfig) {
        let now = self.clock.now();
        let mut old: Vec<Job> = std::mem::take(&mut self.jobs);
        self.jobs = config
            .jobs
            .iter()
            .map(|j| {
                // A job that did not change keeps its detectors' memory.
                match old.iter().position(|o| o.config == *j) {
                    Some(i) => old.swap_remove(i),
                    None => Job {
                        config: j.clone(),
                        detectors: JobDetectors::new(
                            j.detectors.clone(),
                            self.env.proc_root.clone(),
                            now,
                        ),
                        state: JobState::Healthy,
                    },
                }
            })
            .collect();
        self.coordinator.reconfigure(&self.config, &config);
        tracing::info!(summary = %config.summary(), "configuration reloaded");
        self.config = config;
    }

    async fn check_jobs(&mut self) {
        let now = self.clock.now();
        self.metrics.checks.inc();
        for job in &mut self.jobs {
            let verdict = self.host.check(&job.config, &mut job.detectors, now).await;
            let before = job.state.stuck().is_some();
            job.state = job.state.observe(verdict, job.config.confirm, now);
            match (&job.state, before) {
                (JobState::Stuck { evidence, .. }, false) => tracing::warn!(
                    job = %job.config.name, detector = evidence.detector, detail = %evidence.detail,
                    "job is stuck"
                ),
                (JobState::Healthy, true) => {
                    tracing::info!(job = %job.config.name, "job is healthy again");
                }
                _ => {}
            }
        }
        let now_stuck: Vec<bool> = self
            .jobs
            .iter()
            .map(|j| j.state.stuck().is_some())
            .collect();
        if now_stuck != self.last_stuck {
            // The set of problems changed: tell the coordinator now.
            self.next_heartbeat = self.clock.instant();
            self.last_stuck = now_stuck;
        }
        let stuck = self
            .jobs
            .iter()
            .filter(|j| j.state.stuck().is_some())
            .count();
        self.metrics
            .jobs_stuck
            .set(i64::try_from(stuck).unwrap_or(i64::MAX));
    }

    fn counters(&self, job: &str) -> crate::state::JobCounters {
        self.state
            .as_ref()
            .ok()
            .and_then(|s| s.jobs.get(job).cloned())
            .unwrap_or_default()
    }

    fn save(&mut self) {
        if let Ok(state) = &self.state
            && let Err(e) = self.state_file.save(state)
        {
            tracing::error!(error = %e, "cannot save the agent state; not acting until it can be saved");
            self.state = Err(e);
        }
    }

    fn note_reachable(&mut self, ok: bool) {
        self.metrics.coordinator_reachable.set(i64::from(ok));
        if !ok {
            self.metrics.coordinator_errors.inc();
        }
        if self.reachable != Some(ok) {
            if ok {
                tracing::info!("coordinator reachable");
            } else {
                tracing::warn!(
                    "no coordinator reachable: taking no action until one answers (fail closed)"
                );
            }
            self.reachable = Some(ok);
        }
    }

    /// Accounts for a call that got no usable answer: unreachable (fail
    /// closed), refused, or a reply that cannot be used, which is an error
    /// for the operator (counted, logged with its cause), never ignored.
    fn call_failed(&mut self, call: &str, e: &CallError) {
        if e.is_transient() {
            self.note_reachable(false);
            return;
        }
        self.note_reachable(true);
        if let CallError::Malformed { .. } = e {
            self.metrics.malformed_replies.inc();
            tracing::error!(call, error = %e, "the coordinator's reply cannot be used; the call failed");
        }
    }

    /// Sends a heartbeat; adopts the coordinator's interval; notices a held
    /// permit that is no longer active.
    async fn heartbeat(&mut self) {
        let problems: Vec<Problem> = self
            .jobs
            .iter()
            .filter_map(|j| {
                j.state.stuck().map(|(e, since)| Problem {
                    job: j.config.name.clone(),
                    detector: e.detector.to_owned(),
                    since,
                    detail: e.detail.clone(),
                })
            })
            .collect();
        // An unusable state file stops actions but is not, by itself, a
        // reason to quarantine the host: it is logged for the operator.
        let needs_human = match &self.state {
            Err(_) => None,
            Ok(s) => s.jobs.values().find_map(|c| c.gave_up.clone()),
        };
        let heartbeat = Heartbeat {
            host: self.config.host_id.clone(),
            labels: self.config.labels.clone(),
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            problems,
            held_permit: self.held.as_ref().map(|h| h.permit.clone()),
            needs_human,
        };
        self.next_heartbeat = self.clock.instant() + self.heartbeat_interval;
        self.metrics.heartbeats.inc();
        let reply = self.coordinator.heartbeat(heartbeat).await;
        match reply {
            Ok(reply) => {
                self.note_reachable(true);
                // Within the bounds a config may set, whatever the
                // coordinator sends: `now + d` must not overflow.
                let d = reply.heartbeat_interval.clamp(
                    medic_policy::config::MIN_HEARTBEAT_INTERVAL,
                    medic_policy::config::MAX_HEARTBEAT_INTERVAL,
                );
                if d != self.heartbeat_interval {
                    tracing::info!(interval = %humantime::format_duration(d), "coordinator sets the heartbeat interval");
                    self.heartbeat_interval = d;
                    self.next_heartbeat = self.clock.instant() + d;
                }
            }
            Err(e) => {
                self.call_failed("heartbeat", &e);
                tracing::debug!(error = %e, "heartbeat failed");
            }
        }
    }

    /// If a job is stuck and nothing is in flight, climbs its ladder.
    async fn maybe_act(&mut self) {
        if let Err(why) = &self.state {
            tracing::debug!(%why, "not acting: state file unusable");
            return;
        }
        let Some(i) = self.jobs.iter().position(|j| {
            j.state.stuck().is_some() && self.counters(&j.config.name).gave_up.is_none()
        }) else {
            self.attempt = None;
            return;
        };
        let name = self.jobs[i].config.name.clone();
        let counters = self.counters(&name);
        let action = match ladder::next_step(&counters, &self.jobs[i].config) {
            Step::GiveUp(why) => {
                tracing::error!(job = %name, %why, "ladder exhausted: the host needs a human");
                if let Ok(state) = &mut self.state {
                    state.jobs.entry(name).or_default().gave_up = Some(why);
                }
                self.save();
                self.heartbeat().await; // tell the coordinator now
                return;
            }
            Step::Ask(a) => a,
        };
        let request_id = match &self.attempt {
            Some((j, a, id)) if *j == name && *a == action => id.clone(),
            _ => {
                let id = format!(
                    "{}-{}-{}-{:x}",
                    self.config.host_id,
                    name,
                    self.clock
                        .now()
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .unwrap_or_default()
                        .as_millis(),
                    rand::random::<u32>()
                );
                self.attempt = Some((name.clone(), action, id.clone()));
                id
            }
        };
        let (evidence, _) = self.jobs[i]
            .state
            .stuck()
            .map(|(e, s)| (e.clone(), s))
            .unzip();
        let reason = evidence
            .map(|e| format!("{}: {}", e.detector, e.detail))
            .unwrap_or_default();
        let request = match RequestId::new(request_id) {
            Ok(request_id) => PermitRequest {
                request_id,
                host: self.config.host_id.clone(),
                action,
                job: name.clone(),
                reason: format!(
                    "{reason} ({} failed restart(s), {} failed reboot(s))",
                    counters.failed_restarts, counters.failed_reboots
                ),
            },
            Err(e) => {
                tracing::error!(job = %name, %action, error = %e, "cannot make a permit request id");
                self.attempt = None;
                self.next_request = self.clock.instant() + self.backoff.fail();
                return;
            }
        };
        let received = self.clock.instant();
        self.metrics.permit_requests.inc();
        let reply = self.coordinator.request_permit(request).await;
        match reply {
            Err(e) if e.is_transient() => {
                self.call_failed("request_permit", &e);
                let wait = self.backoff.fail();
                tracing::debug!(error = %e, wait = ?wait, "permit request failed; retrying later");
                self.next_request = self.clock.instant() + wait;
            }
            Err(e @ CallError::Malformed { .. }) => {
                // The coordinator may have granted a permit this agent
                // cannot use: it is not acted on, and the request is asked
                // again with the same id, so that a coordinator that
                // recovers replays its grant instead of making another.
                self.call_failed("request_permit", &e);
                tracing::error!(error = %e, job = %name, %action, "permit request failed: the coordinator's answer cannot be used");
                self.next_request = self.clock.instant() + self.backoff.fail();
            }
            Err(e) => {
                self.call_failed("request_permit", &e);
                tracing::error!(error = %e, job = %name, %action, "permit request refused");
                self.attempt = None;
                let wait = self.backoff.fail().max(e.retry_after().unwrap_or_default());
                self.next_request = self.clock.instant() + wait;
            }
            Ok(decision) => {
                self.note_reachable(true);
                self.backoff.reset();
                self.attempt = None;
                match decision {
                    Decision::Denied(d) => {
                        let wait = after_denial(d.retry_after, Duration::from_secs(60));
                        self.metrics
                            .permit_denials
                            .get_or_create(&crate::metrics::ReasonLabel {
                                reason: d.reason.as_str().to_owned(),
                            })
                            .inc();
                        tracing::info!(
                            job = %name, %action, reason = %d.reason, message = %d.message,
                            retry_in = %humantime::format_duration(Duration::from_secs(wait.as_secs())),
                            "permit denied; leaving the job alone"
                        );
                        self.next_request = self.clock.instant() + wait;
                    }
                    Decision::Granted { permit, .. } => {
                        let held = Held {
                            permit: PermitRef {
                                id: permit.id,
                                token: permit.token,
                            },
                            action,
                            job: name.clone(),
                            dry_run: permit.dry_run,
                            ttl: permit.ttl,
                            renewed: received,
                        };
                        tracing::warn!(job = %name, %action, permit = %held.permit.id, "permit granted");
                        self.metrics.permits_granted.inc();
                        self.held = Some(held.clone());
                        self.act(i, held).await;
                        self.held = None;
                        self.next_request = self.clock.instant();
                    }
                }
            }
        }
    }

    /// Renews the held permit if a third of its TTL has passed. Returns
    /// false if it is no longer active (revoked, expired) or too close to
    /// expiry to start anything.
    async fn keep_valid(&mut self, held: &mut Held) -> bool {
        self.renew_if(held, false).await
    }

    /// Right before an irreversible step: renews the permit whatever its
    /// age, so a revocation is seen before anything is done.
    async fn confirm_valid(&mut self, held: &mut Held) -> bool {
        self.renew_if(held, true).await
    }

    async fn renew_if(&mut self, held: &mut Held, always: bool) -> bool {
        let now = self.clock.instant();
        if always || now.duration_since(held.renewed) >= held.ttl / 3 {
            let renewal = Renewal {
                host: self.config.host_id.clone(),
                permit: held.permit.clone(),
            };
            let sent = self.clock.instant();
            let reply = self.coordinator.renew_permit(renewal).await;
            match reply {
                Ok(_) => held.renewed = sent,
                Err(e @ CallError::Status { .. }) if !e.is_transient() => {
                    tracing::warn!(permit = %held.permit.id, error = %e, "permit no longer active; aborting");
                    return false;
                }
                // Unreachable, or a reply that cannot be used: whether the
                // renewal took is unknown, so it is not counted.
                Err(e) => {
                    self.call_failed("renew_permit", &e);
                    tracing::warn!(error = %e, "cannot renew the permit; it stays valid only until its own expiry");
                }
            }
        }
        self.clock.instant() < held.act_before(self.config.safety_margin)
    }

    /// Carries out a granted action and reports its outcome.
    async fn act(&mut self, i: usize, mut held: Held) {
        let name = held.job.clone();
        let (outcome, detail) = 'act: {
            if !self.keep_valid(&mut held).await {
                break 'act (
                    Outcome::Aborted,
                    "permit not valid long enough to act".to_owned(),
                );
            }
            // Right before acting: is the problem still there?
            if self.check_now(i).await == Verdict::Healthy {
                break 'act (
                    Outcome::Aborted,
                    "the job recovered before the action".to_owned(),
                );
            }
            if self.config.dry_run || held.dry_run {
                tracing::warn!(job = %name, action = %held.action, "DRY RUN: would {} now", verb(held.action));
                break 'act (
                    Outcome::DryRun,
                    format!("dry run: would {}", verb(held.action)),
                );
            }
            match held.action {
                Action::RestartJob => self.restart(i, &mut held).await,
                Action::RebootHost => self.reboot(i, &mut held).await,
            }
        };
        self.report(&held, outcome, &detail).await;
        self.count_action(held.action, outcome);
        if let Ok(state) = &mut self.state {
            ladder::record(
                state.jobs.entry(name.clone()).or_default(),
                held.action,
                outcome,
            );
            state.pending = None;
        }
        self.save();
        tracing::warn!(job = %name, action = %held.action, outcome = ?outcome, %detail, "action finished");
        if outcome == Outcome::Succeeded {
            self.jobs[i].state = JobState::Healthy;
        }
    }

    /// Checks job `i` once, through the host.
    async fn check_now(&mut self, i: usize) -> Verdict {
        let job = &mut self.jobs[i];
        self.host
            .check(&job.config, &mut job.detectors, self.clock.now())
            .await
    }

    fn count_action(&self, action: Action, outcome: Outcome) {
        let outcome = match outcome {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::Aborted => "aborted",
            Outcome::DryRun => "dry_run",
        };
        self.metrics
            .actions
            .get_or_create(&crate::metrics::ActionLabels {
                action: action.as_str().to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    async fn restart(&mut self, i: usize, held: &mut Held) -> (Outcome, String) {
        let verify_timeout = self.jobs[i].config.restart.verify_timeout;
        if !self.confirm_valid(held).await {
            return (
                Outcome::Aborted,
                "permit revoked or about to expire before the restart".to_owned(),
            );
        }
        // The first irreversible step.
        let job = &self.jobs[i];
        if let Err(e) = self
            .host
            .restart(&job.config, &job.detectors, &held.permit)
            .await
        {
            return (Outcome::Failed, e.to_string());
        }
        self.verify(i, held, verify_timeout, "restarted").await
    }

    /// Waits until the job's detectors pass, renewing the permit and
    /// heartbeating meanwhile.
    async fn verify(
        &mut self,
        i: usize,
        held: &mut Held,
        within: Duration,
        what: &str,
    ) -> (Outcome, String) {
        let deadline = self.clock.instant() + within;
        let step = self.config.check_interval.min(Duration::from_secs(1));
        loop {
            if self.check_now(i).await == Verdict::Healthy {
                return (
                    Outcome::Succeeded,
                    format!("{what}; the job verified healthy"),
                );
            }
            if self.clock.instant() >= deadline {
                return (
                    Outcome::Failed,
                    format!(
                        "{what}, but the job was still stuck after {}",
                        humantime::format_duration(within)
                    ),
                );
            }
            let _ = self.keep_valid(held).await;
            if self.clock.instant() >= self.next_heartbeat {
                self.heartbeat().await;
            }
            self.clock.sleep(step).await;
        }
    }

    async fn reboot(&mut self, i: usize, held: &mut Held) -> (Outcome, String) {
        if let Ok(state) = &mut self.state {
            state.pending = Some(Pending {
                permit: held.permit.clone(),
                action: Action::RebootHost,
                job: held.job.clone(),
                started_at: self.clock.now(),
            });
        }
        self.save();
        if self.state.is_err() {
            return (
                Outcome::Aborted,
                "cannot record the reboot in the state file".to_owned(),
            );
        }
        if !self.confirm_valid(held).await {
            return (
                Outcome::Aborted,
                "permit revoked or about to expire before the reboot".to_owned(),
            );
        }
        tracing::warn!(job = %held.job, permit = %held.permit.id, "rebooting the host");
        let cmd = self.config.reboot_command.clone();
        match self.host.reboot(&cmd, &held.job, &held.permit).await {
            Err(e) => (Outcome::Failed, e.to_string()),
            Ok(()) => {
                // `systemctl reboot` returns before the host goes down: give
                // it time. Still here afterwards means it did not reboot.
                self.clock.sleep(Duration::from_secs(120)).await;
                let _ = i;
                (
                    Outcome::Failed,
                    "the reboot command returned but the host did not reboot".to_owned(),
                )
            }
        }
    }

    /// After a restart (of the agent, or of the host), finishes an action
    /// recorded as pending: verifies the job and reports the outcome.
    async fn finish_pending(&mut self) {
        let Some(p) = self.state.as_ref().ok().and_then(|s| s.pending.clone()) else {
            return;
        };
        tracing::warn!(job = %p.job, permit = %p.permit.id, "finishing the {} in progress before the agent stopped", p.action);
        let Some(i) = self.jobs.iter().position(|j| j.config.name == p.job) else {
            self.report_pending(&p, Outcome::Aborted, "the job is no longer configured")
                .await;
            return;
        };
        let mut held = Held {
            permit: p.permit.clone(),
            action: p.action,
            job: p.job.clone(),
            dry_run: false,
            ttl: Duration::from_secs(u64::MAX / 4),
            renewed: self.clock.instant(),
        };
        // Heartbeat first so the coordinator knows the host is back.
        self.heartbeat().await;
        let within = self.jobs[i].config.restart.verify_timeout;
        let (outcome, detail) = self.verify(i, &mut held, within, "rebooted").await;
        self.report_pending(&p, outcome, &detail).await;
    }

    async fn report_pending(&mut self, p: &Pending, outcome: Outcome, detail: &str) {
        let held = Held {
            permit: p.permit.clone(),
            action: p.action,
            job: p.job.clone(),
            dry_run: false,
            ttl: Duration::ZERO,
            renewed: self.clock.instant(),
        };
        self.report(&held, outcome, detail).await;
        self.count_action(p.action, outcome);
        if let Ok(state) = &mut self.state {
            ladder::record(
                state.jobs.entry(p.job.clone()).or_default(),
                p.action,
                outcome,
            );
            state.pending = None;
        }
        self.save();
    }

    /// Reports an outcome, retrying while no coordinator answers (up to a
    /// few minutes: past that the permit expires and the coordinator
    /// quarantines the host, which is the safe end).
    async fn report(&mut self, held: &Held, outcome: Outcome, detail: &str) {
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        let give_up = self.clock.instant() + Duration::from_secs(300);
        loop {
            let report = OutcomeReport {
                host: self.config.host_id.clone(),
                permit: held.permit.clone(),
                outcome,
                detail: detail.to_owned(),
            };
            let reply = self.coordinator.report_outcome(report).await;
            match reply {
                Ok(_) => return,
                Err(e) if e.is_transient() && self.clock.instant() < give_up => {
                    tracing::debug!(error = %e, "cannot report the outcome yet; retrying");
                    self.clock.sleep(backoff.fail()).await;
                }
                Err(e) if e.is_transient() => {
                    self.call_failed("report_outcome", &e);
                    tracing::error!(error = %e, permit = %held.permit.id, "could not report the outcome; the permit will expire");
                    return;
                }
                // The coordinator answered: recorded (a reply that cannot
                // be used is logged by `call_failed`) or refused.
                Err(e) => {
                    self.call_failed("report_outcome", &e);
                    tracing::warn!(permit = %held.permit.id, error = %e, "outcome not recorded");
                    return;
                }
            }
        }
    }
}

fn verb(a: Action) -> &'static str {
    match a {
        Action::RestartJob => "restart the job",
        Action::RebootHost => "reboot the host",
    }
}

/// Runs an agent until `shutdown` resolves (convenience for tests).
pub async fn run_until(config: AgentConfig, env: Environment, shutdown: impl Future<Output = ()>) {
    let (tx, rx) = mpsc::channel(1);
    let agent = Agent::new(config, env);
    let task = tokio::spawn(agent.run(rx));
    shutdown.await;
    let _ = tx.send(Control::Shutdown).await;
    let _ = task.await;
}
