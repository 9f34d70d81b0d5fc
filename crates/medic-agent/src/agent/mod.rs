//! The agent's loop: check the jobs, heartbeat, and when a job is stuck,
//! ask for a permit and climb its ladder. It never acts without an active,
//! unexpired permit (checked against its own monotonic clock with a safety
//! margin), re-checks the problem right before acting, and with no
//! coordinator it does nothing (I8).
//!
//! The loop is here; its parts have their own files: `detection` (the
//! check round), `heartbeat`, `permit` (asking for, renewing and
//! reporting on a permit), `climb` (the ladder's rungs carried out under a
//! permit, and a reboot finished after it), `hooks` (a job's pre and post
//! commands) and `probation` (a verified fix held under its permit until
//! it has stayed healthy).

mod climb;
mod detection;
mod heartbeat;
mod hooks;
mod permit;
mod probation;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use medic_policy::Action;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::clock::{Clock, SystemClock};
use crate::config::AgentConfig;
use crate::coordinator::{Coordinator, Coordinators};
use crate::detect::JobDetectors;
use crate::effects::{Host, SystemHost};
use crate::ladder::Health;
use crate::state::{AgentState, StateError, StateFile};

use detection::WatchedJob;
use permit::Held;
use probation::Probation;

/// What the signal handler (or a test) asks of a running agent.
#[derive(Debug)]
pub enum Control {
    /// Apply a new, already validated configuration.
    Reload(Box<AgentConfig>),
    /// Finish any action in flight, then stop.
    Shutdown,
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
    /// The jobs the configuration names, as watched.
    watched: Vec<WatchedJob>,
    coordinator: C,
    state_file: StateFile,
    /// `Err`: the state file is unusable; heartbeat, but never act.
    state: Result<AgentState, StateError>,
    heartbeat_interval: Duration,
    next_heartbeat: Instant,
    next_request: Instant,
    backoff: Backoff,
    /// The wait after a pre hook's veto: it grows while the hook keeps
    /// vetoing.
    vetoes: Backoff,
    /// The attempt in progress: (job, action, request_id), reused when a
    /// request must be retried after a transport failure, and while it
    /// waits for a human's approval.
    attempt: Option<(String, Action, String)>,
    /// The approval the attempt waits on, once said in the log.
    approval_said: Option<u64>,
    held: Option<Held>,
    /// Set while a verified fix is on probation under `held`.
    probation: Option<Probation>,
    reachable: Option<bool>,
    /// The last cause of unreachability logged, and when: logged again
    /// when it changes, and at most once a minute.
    unreachable_said: Option<(Instant, String)>,
    /// What the agent is doing under a permit, for whoever stops it.
    activity: Activity,
    metrics: std::sync::Arc<crate::metrics::AgentMetrics>,
    /// Which jobs were stuck at the last check.
    last_stuck: Vec<bool>,
    /// The coordinator's wake-up value in its last heartbeat reply.
    wake: Option<u64>,
    /// Whether the coordinator said it runs in dry-run (last heartbeat).
    coordinator_dry_run: bool,
    /// The ladder as a dry run climbs it, per job: in memory only, so a
    /// preview never moves the real counters.
    dry_ladder: std::collections::BTreeMap<String, crate::state::JobCounters>,
    /// Set while the next request waits out a denial: the wake-up value
    /// seen when it came. A reply with another value ends the wait early.
    waiting: Option<Waiting>,
}

/// A denial the agent is waiting out.
#[derive(Clone, Copy, Debug)]
pub(super) struct Waiting {
    /// The coordinator's wake-up value when the denial came (unknown if no
    /// heartbeat had been answered yet).
    pub(super) wake: Option<u64>,
}

impl<H, C> std::fmt::Debug for Agent<H, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Agent({}, {} jobs)",
            self.config.host_id,
            self.watched.len()
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
        let watched = config
            .jobs
            .iter()
            .map(|j| WatchedJob {
                config: j.clone(),
                detectors: JobDetectors::new(j.detectors.clone(), env.proc_root.clone(), now),
                health: Health::Healthy,
                fix_watched: false,
            })
            .collect();
        Self {
            heartbeat_interval: config.heartbeat_interval,
            next_heartbeat: clock.instant(),
            next_request: clock.instant(),
            backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(300)),
            vetoes: Backoff::new(Duration::from_secs(10), Duration::from_secs(300)),
            attempt: None,
            approval_said: None,
            held: None,
            probation: None,
            reachable: None,
            unreachable_said: None,
            activity: Activity::default(),
            metrics: std::sync::Arc::new(crate::metrics::AgentMetrics::new()),
            last_stuck: Vec::new(),
            wake: None,
            coordinator_dry_run: false,
            dry_ladder: std::collections::BTreeMap::new(),
            waiting: None,
            host,
            coordinator,
            state_file,
            state,
            watched,
            env,
            clock,
            config,
        }
    }

    /// A handle on what the agent is doing under a permit: a stop request
    /// says what it waits for.
    pub fn activity(&self) -> Activity {
        self.activity.clone()
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
            // Biased: a control message and a due check at the same
            // instant resolve the same way every time (repeatable runs on
            // virtual time).
            tokio::select! {
                biased;
                c = control.recv() => match c {
                    Some(Control::Reload(cfg)) => { self.reload(*cfg); continue; }
                    Some(Control::Shutdown) | None => break,
                },
                () = sleep => {}
            }
            next_check = self.clock.instant() + self.config.check_interval;
            self.check_jobs().await;
            if self.clock.instant() >= self.next_heartbeat {
                self.heartbeat().await;
            }
            if self.probation.is_some() {
                self.tend_probation().await;
            } else if self.clock.instant() >= self.next_request {
                self.maybe_act().await;
            }
        }
        if let (Some(p), Some(held)) = (&self.probation, &self.held) {
            tracing::warn!(
                job = %held.job, permit = %held.permit.id,
                "stopping during the job's probation ({} left): the agent that starts next resumes it",
                humantime::format_duration(std::time::Duration::from_secs(
                    p.until.saturating_duration_since(self.clock.instant()).as_secs()
                ))
            );
        }
        if let Some(s) = metrics_server {
            s.abort();
        }
        tracing::info!("medic agent stopped");
    }

    pub(super) fn reload(&mut self, config: AgentConfig) {
        let now = self.clock.now();
        let mut old: Vec<WatchedJob> = std::mem::take(&mut self.watched);
        self.watched = config
            .jobs
            .iter()
            .map(|j| {
                // A job that did not change keeps its detectors' memory.
                match old.iter().position(|o| o.config == *j) {
                    Some(i) => old.swap_remove(i),
                    None => WatchedJob {
                        config: j.clone(),
                        detectors: JobDetectors::new(
                            j.detectors.clone(),
                            self.env.proc_root.clone(),
                            now,
                        ),
                        health: Health::Healthy,
                        fix_watched: false,
                    },
                }
            })
            .collect();
        self.coordinator.reconfigure(&self.config, &config);
        tracing::info!(summary = %config.summary(), "configuration reloaded");
        self.config = config;
        self.reread_state();
    }

    /// Reads the state file again (on reload, between rounds, with no
    /// action in flight), so that a job reset on the host with
    /// `medic-agent reset-job` takes effect without a restart.
    fn reread_state(&mut self) {
        match self.state_file.load() {
            Ok(s) if self.state.as_ref().ok() == Some(&s) => {}
            Ok(s) => {
                tracing::info!(path = %self.state_file.path().display(), "state file changed on disk; using it");
                self.state = Ok(s);
            }
            Err(e) => {
                tracing::error!(error = %e, "not acting until the state file is fixed");
                self.state = Err(e);
            }
        }
    }

    /// Whether the next permit would be a dry run: this agent's own
    /// dry-run, or the coordinator's.
    pub(super) fn dry_running(&self) -> bool {
        self.config.dry_run || self.coordinator_dry_run
    }

    /// The ladder a stuck job climbs now: the dry-run one while dry-running.
    pub(super) fn ladder_of(&self, job: &str) -> crate::state::JobCounters {
        if self.dry_running() {
            self.dry_ladder.get(job).cloned().unwrap_or_default()
        } else {
            self.counters(job)
        }
    }

    pub(super) fn counters(&self, job: &str) -> crate::state::JobCounters {
        self.state
            .as_ref()
            .ok()
            .and_then(|s| s.jobs.get(job).cloned())
            .unwrap_or_default()
    }

    pub(super) fn save(&mut self) {
        if let Ok(state) = &self.state
            && let Err(e) = self.state_file.save(state)
        {
            tracing::error!(error = %e, "cannot save the agent state; not acting until it can be saved");
            self.state = Err(e);
        }
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

/// What an agent is doing under a permit right now (an action and its
/// verification), readable from another task: a SIGTERM handler says what
/// the agent finishes before it stops.
#[derive(Clone, Debug, Default)]
pub struct Activity(Arc<std::sync::Mutex<Option<String>>>);

impl Activity {
    /// The action in flight, in words; `None` when idle.
    pub fn describe(&self) -> Option<String> {
        self.0.lock().ok().and_then(|d| d.clone())
    }

    pub(super) fn set(&self, what: Option<String>) {
        if let Ok(mut d) = self.0.lock() {
            *d = what;
        }
    }
}
