//! A simulated host: the real [`medic_agent::Agent`] (ladder, permit
//! client, backoff, state file in its own directory, its own gRPC
//! connection) acting on a simulated machine ([`SimHost`]). Its driver
//! plays the machine's life around the agent: a reboot cuts the agent off
//! mid-await (power loss), keeps the host silent for the reboot time, then
//! starts a fresh agent on the same state directory, which finishes the
//! pending reboot exactly as after a real one.
//!
//! On virtual time ([`SimClock::virtual_time`]) the agent reads the run's
//! [`SimClock`] as its wall clock and waits on tokio's paused clock, and
//! reaches the in-process coordinator through an in-memory connection or
//! by calling its handlers directly ([`Link`]); on real time it has the
//! system's clocks and a URL.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use medic_agent::config::JobConfig;
use medic_agent::detect::{Evidence, JobDetectors, Verdict};
use medic_agent::effects::{ActionContext, CommandReport};
use medic_agent::{Agent, AgentConfig, Control, Coordinators, Environment, Host};
use medic_client::{Attempt, CallError, Client, Endpoints, MemoryConnector, Settings};
use medic_coordinator::service::DirectAgents;
use medic_policy::{
    Action, Decision, Heartbeat, HeartbeatReply, InvalidInput, Permit, PermitRef, PermitRequest,
};
use medic_proto::pb::v1 as pb;
use medic_proto::request::{OutcomeReport, Renewal};
use rand::Rng;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::model::{JobModel, draw};
use crate::record::ActionRecord;
use crate::scenario::{Scale, Scenario};

/// Where a virtual run's wall clock starts: Monday 2026-01-05 00:00 UTC,
/// the same for every run, so that the same seed gives the same history,
/// timestamps included.
pub const VIRTUAL_ORIGIN_UNIX_SECS: u64 = 1_767_571_200;

/// The run's clock: tokio's clock since the start, times the speed, is
/// scenario time.
///
/// On virtual time (tokio's paused clock, speed 1) it is also the wall
/// clock of every agent and of the coordinator: [`SimClock::now`] reads
/// [`VIRTUAL_ORIGIN_UNIX_SECS`] plus the virtual time elapsed. On real
/// time (a child-process or external coordinator) the wall clock is the
/// system's.
#[derive(Clone, Copy, Debug)]
pub struct SimClock {
    start: Instant,
    /// The wall-clock time at the start.
    pub wall: SystemTime,
    /// The speed factor (1 on virtual time).
    pub scale: Scale,
    /// Whether the run is on virtual time.
    pub virtual_time: bool,
}

impl SimClock {
    /// Starts now, on real time divided by the scale.
    pub fn start(scale: Scale) -> Self {
        Self {
            start: Instant::now(),
            wall: SystemTime::now(),
            scale,
            virtual_time: false,
        }
    }

    /// Starts now on virtual time (a paused tokio clock), its wall clock
    /// at [`VIRTUAL_ORIGIN_UNIX_SECS`].
    pub fn start_virtual() -> Self {
        Self {
            start: Instant::now(),
            wall: SystemTime::UNIX_EPOCH + Duration::from_secs(VIRTUAL_ORIGIN_UNIX_SECS),
            scale: Scale(1.0),
            virtual_time: true,
        }
    }

    /// The wall clock now: the virtual one, or the system's.
    pub fn now(&self) -> SystemTime {
        if self.virtual_time {
            self.wall + self.start.elapsed()
        } else {
            SystemTime::now()
        }
    }

    /// Scenario seconds since the start.
    pub fn t(&self) -> f64 {
        self.start.elapsed().as_secs_f64() * self.scale.0
    }

    /// Scenario seconds of a wall-clock time (negative before the start).
    pub fn t_of(&self, at: SystemTime) -> f64 {
        match at.duration_since(self.wall) {
            Ok(d) => d.as_secs_f64() * self.scale.0,
            Err(e) => -e.duration().as_secs_f64() * self.scale.0,
        }
    }

    /// Sleeps until scenario time `t`.
    pub async fn sleep_until(&self, t: f64) {
        let at = self.start + self.scale.real_secs(t);
        tokio::time::sleep_until(at).await;
    }

    /// Sleeps for `secs` of scenario time.
    pub async fn sleep(&self, secs: f64) {
        tokio::time::sleep(self.scale.real_secs(secs)).await;
    }
}

/// The agents' clock on virtual time: the wall clock is the run's, the
/// monotonic one tokio's (paused).
impl medic_agent::Clock for SimClock {
    fn now(&self) -> SystemTime {
        SimClock::now(self)
    }
}

/// The coordinator's clock on virtual time. Its boot clock moves with the
/// wall clock (no steps) from an hour after a boot of its own.
impl medic_coordinator::Clock for SimClock {
    fn now(&self) -> SystemTime {
        SimClock::now(self)
    }

    fn since_boot(&self) -> Duration {
        Duration::from_secs(3600) + self.start.elapsed()
    }

    fn boot_id(&self) -> String {
        "medic-sim-virtual-boot".to_owned()
    }
}

/// How an agent on virtual time reaches the in-process coordinator: an
/// in-memory connection or a direct call, and the partition's switch when
/// the host is one that gets cut off.
#[derive(Clone, Debug)]
pub struct Link {
    /// Connects to the coordinator in memory.
    pub connector: MemoryConnector,
    /// Set: the agent calls the coordinator's handlers directly, without
    /// HTTP/2 or protobuf encoding ([`crate::run::Transport::Direct`]).
    pub direct: Option<DirectAgents>,
    /// While true the host is cut off: every call is refused, as the
    /// real-time relay refuses connections.
    pub cut: Option<Arc<AtomicBool>>,
}

/// The agent's permit service over a [`Link`]: the real client stack
/// (`medic_client`, through the agent's own [`Coordinators`]) or the
/// direct calls, unless the link is cut.
struct LinkedCoordinator {
    inner: Via,
    url: String,
    cut: Option<Arc<AtomicBool>>,
}

/// What carries a [`LinkedCoordinator`]'s calls.
enum Via {
    /// gRPC: HTTP/2 over an in-memory connection.
    Grpc(Coordinators),
    /// The coordinator's handlers, called in the same process.
    Direct(DirectCoordinator),
}

impl LinkedCoordinator {
    fn new(config: &AgentConfig, link: &Link) -> Result<Self, crate::SimError> {
        let url = config
            .coordinators
            .first()
            .cloned()
            .ok_or_else(|| crate::SimError::Config("agent: no coordinator URL".into()))?;
        let inner = match &link.direct {
            Some(agents) => Via::Direct(DirectCoordinator {
                agents: agents.clone(),
                url: url.clone(),
                timeout: config.request_timeout,
            }),
            None => {
                let endpoints = Endpoints::new([url.clone()])
                    .map_err(|e| crate::SimError::Config(e.to_string()))?;
                let client = Client::new(
                    Settings::new(endpoints, config.request_timeout).memory(link.connector.clone()),
                )
                .map_err(|e| crate::SimError::Config(e.to_string()))?;
                Via::Grpc(Coordinators::with_client(client))
            }
        };
        Ok(Self {
            inner,
            url,
            cut: link.cut.clone(),
        })
    }

    fn reachable(&self) -> Result<(), CallError> {
        match &self.cut {
            Some(cut) if cut.load(Ordering::SeqCst) => Err(CallError::Unreachable {
                attempts: vec![Attempt {
                    url: self.url.clone(),
                    detail: "connection refused (the simulated partition)".to_owned(),
                }],
            }),
            _ => Ok(()),
        }
    }
}

/// The permit service a simulated agent with `config` calls over `link`
/// (what [`drive`] gives each agent it starts).
pub fn linked_coordinator(
    config: &AgentConfig,
    link: &Link,
) -> Result<impl medic_agent::Coordinator, crate::SimError> {
    LinkedCoordinator::new(config, link)
}

impl medic_agent::Coordinator for LinkedCoordinator {
    async fn heartbeat(&mut self, heartbeat: Heartbeat) -> Result<HeartbeatReply, CallError> {
        self.reachable()?;
        match &mut self.inner {
            Via::Grpc(c) => c.heartbeat(heartbeat).await,
            Via::Direct(c) => c.heartbeat(heartbeat).await,
        }
    }

    async fn request_permit(&mut self, request: PermitRequest) -> Result<Decision, CallError> {
        self.reachable()?;
        match &mut self.inner {
            Via::Grpc(c) => c.request_permit(request).await,
            Via::Direct(c) => c.request_permit(request).await,
        }
    }

    async fn renew_permit(&mut self, renewal: Renewal) -> Result<Permit, CallError> {
        self.reachable()?;
        match &mut self.inner {
            Via::Grpc(c) => c.renew_permit(renewal).await,
            Via::Direct(c) => c.renew_permit(renewal).await,
        }
    }

    async fn report_outcome(&mut self, report: OutcomeReport) -> Result<Permit, CallError> {
        self.reachable()?;
        match &mut self.inner {
            Via::Grpc(c) => c.report_outcome(report).await,
            Via::Direct(c) => c.report_outcome(report).await,
        }
    }
}

// === impl DirectCoordinator ===

/// The agent's four calls made on the in-process coordinator's handlers
/// ([`DirectAgents`]): the same messages as over gRPC, converted the same
/// way both ways (`medic_proto`), the same per-call deadline, and the
/// coordinator's statuses turned into the same [`CallError`]s as
/// `medic_client` turns them; only the transport is skipped.
struct DirectCoordinator {
    agents: DirectAgents,
    /// The URL the agent's configuration names, for its errors.
    url: String,
    timeout: Duration,
}

impl DirectCoordinator {
    /// One call within the deadline; a status as `medic_client` reports it.
    async fn call<R>(
        &self,
        call: impl Future<Output = Result<R, tonic::Status>>,
    ) -> Result<R, CallError> {
        match tokio::time::timeout(self.timeout, call).await {
            Err(_) => Err(CallError::Timeout {
                url: self.url.clone(),
                timeout: self.timeout,
            }),
            Ok(Err(status)) => Err(CallError::from_status(&self.url, status)),
            Ok(Ok(reply)) => Ok(reply),
        }
    }

    fn malformed(&self, error: InvalidInput) -> CallError {
        CallError::Malformed {
            url: self.url.clone(),
            error,
        }
    }

    /// The `permit` of a renewal's or outcome's reply, which is always set
    /// (as `medic_client` reads it).
    fn reply_permit(&self, permit: Option<pb::Permit>) -> Result<Permit, CallError> {
        let permit = permit
            .ok_or_else(|| InvalidInput::new("response.permit", "must be set"))
            .and_then(|p| Permit::try_from(p).map_err(|e| e.within("permit").within("response")));
        permit.map_err(|e| self.malformed(e))
    }

    async fn heartbeat(&mut self, heartbeat: Heartbeat) -> Result<HeartbeatReply, CallError> {
        let req = pb::HeartbeatRequest::from(heartbeat);
        let reply = self.call(self.agents.heartbeat(req)).await?;
        HeartbeatReply::try_from(reply).map_err(|e| self.malformed(e))
    }

    async fn request_permit(&mut self, request: PermitRequest) -> Result<Decision, CallError> {
        let req = pb::RequestPermitRequest::from(request);
        let reply = self.call(self.agents.request_permit(req)).await?;
        Decision::try_from(reply).map_err(|e| self.malformed(e))
    }

    async fn renew_permit(&mut self, renewal: Renewal) -> Result<Permit, CallError> {
        let req = pb::RenewPermitRequest::from(renewal);
        let reply = self.call(self.agents.renew_permit(req)).await?;
        self.reply_permit(reply.permit)
    }

    async fn report_outcome(&mut self, report: OutcomeReport) -> Result<Permit, CallError> {
        let req = pb::ReportOutcomeRequest::from(report);
        let reply = self.call(self.agents.report_outcome(req)).await?;
        self.reply_permit(reply.permit)
    }
}

/// What every host of a run shares.
#[derive(Debug)]
pub struct Shared {
    /// The clock.
    pub clock: SimClock,
    /// The scenario.
    pub scenario: Scenario,
    /// Every action any host performed, in order.
    pub actions: Mutex<Vec<ActionRecord>>,
}

impl Shared {
    fn record(&self, r: ActionRecord) {
        if let Ok(mut a) = self.actions.lock() {
            a.push(r);
        }
    }
}

/// What the driver and the sampler see of a host.
#[derive(Debug)]
pub struct HostState {
    /// Its job.
    pub model: JobModel,
    /// Down rebooting.
    pub down: bool,
    /// Down for good (a reboot that never ended).
    pub gone: bool,
    /// The verdict of the agent's latest check.
    last_check_stuck: bool,
}

impl HostState {
    /// Whether the host counts as stuck at `t` (job stuck, or down).
    pub fn stuck(&mut self, t: f64) -> bool {
        self.down || self.gone || self.model.stuck(t).is_some()
    }
}

/// What the machine tells its driver.
#[derive(Debug)]
enum MachineEvent {
    /// The reboot command ran: the machine goes down now.
    Reboot,
    /// The agent process died.
    Crash,
}

/// The simulated machine the agent acts on.
#[derive(Debug)]
pub struct SimHost {
    name: String,
    shared: Arc<Shared>,
    state: Arc<Mutex<HostState>>,
    events: mpsc::UnboundedSender<MachineEvent>,
}

impl SimHost {
    fn lock(&self) -> std::sync::MutexGuard<'_, HostState> {
        // A panic while holding the lock is a bug in the simulator; the
        // state is plain data, so keep going with it.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn record(&self, action: Action, job: &str, permit: &PermitRef) {
        let rechecked_stuck = self.lock().last_check_stuck;
        self.shared.record(ActionRecord {
            host: self.name.clone(),
            action,
            job: job.to_owned(),
            permit_id: permit.id.to_string(),
            token: permit.token.0,
            at: self.shared.clock.now(),
            t: self.shared.clock.t(),
            rechecked_stuck,
        });
    }

    /// Whether the agent dies right after this action (agent-crash).
    fn crashes_after_grant(&self) -> bool {
        let t = self.shared.clock.t();
        let mut st = self.lock();
        match st.model.plan().crash {
            Some(c) if t >= c.start && t < c.end => st.model.rng().random_bool(c.after_grant),
            _ => false,
        }
    }
}

impl Host for SimHost {
    async fn check(
        &mut self,
        _job: &JobConfig,
        _detectors: &mut JobDetectors,
        _now: SystemTime,
    ) -> Verdict {
        let t = self.shared.clock.t();
        let mut st = self.lock();
        let verdict = match st.model.stuck(t) {
            Some(why) => Verdict::Fired(Evidence {
                detector: "sim",
                detail: why.to_owned(),
            }),
            None => Verdict::Healthy,
        };
        st.last_check_stuck = verdict.fired();
        verdict
    }

    async fn restart(
        &mut self,
        job: &JobConfig,
        _detectors: &JobDetectors,
        action: &ActionContext,
    ) -> Result<Option<CommandReport>, medic_agent::HostError> {
        self.record(Action::RestartJob, &job.name, &action.permit);
        let secs = {
            let mut st = self.lock();
            draw(st.model.rng(), self.shared.scenario.fleet.restart_time)
        };
        self.shared.clock.sleep(secs).await;
        let t = self.shared.clock.t();
        let p = self.shared.scenario.jobs.restart_fixes;
        self.lock().model.restart(t, p);
        if self.crashes_after_grant() {
            let _ = self.events.send(MachineEvent::Crash);
            std::future::pending::<()>().await;
        }
        Ok(None)
    }

    async fn reboot(
        &mut self,
        _command: &[String],
        action: &ActionContext,
    ) -> Result<(), medic_agent::HostError> {
        self.record(Action::RebootHost, &action.job, &action.permit);
        let _ = self.events.send(MachineEvent::Reboot);
        // The machine goes down: the driver drops this agent mid-await.
        std::future::pending::<()>().await;
        Ok(())
    }

    /// The simulated job's checks are its own model: a healthy check after
    /// a restart is fresh by construction.
    fn started_ago(&mut self, _job: &JobConfig, _detectors: &JobDetectors) -> Option<Duration> {
        let clock = &self.shared.clock;
        let t = clock.t();
        let started = self.lock().model.started(t)?;
        Some(clock.scale.real_secs((t - started).max(0.0)))
    }

    fn fresh(&mut self, _job: &JobConfig, _detectors: &JobDetectors) -> Result<(), String> {
        Ok(())
    }
}

/// One host of the fleet and how to run its agent.
#[derive(Debug)]
pub struct SimHostSpec {
    /// Its name.
    pub name: String,
    /// Its agent's configuration.
    pub config: AgentConfig,
    /// Its state, shared with the sampler.
    pub state: Arc<Mutex<HostState>>,
    /// On virtual time, its in-memory link to the coordinator.
    pub link: Option<Link>,
}

impl SimHostSpec {
    /// A host whose agent talks to `url` (through `link` on virtual time)
    /// and keeps its state under `dir`.
    pub fn new(
        model: JobModel,
        scenario: &Scenario,
        scale: Scale,
        url: &str,
        link: Option<Link>,
        dir: PathBuf,
    ) -> Result<Self, crate::SimError> {
        let plan = model.plan().clone();
        let a = &scenario.agent;
        let labels = plan
            .labels
            .iter()
            .map(|(k, v)| format!("{k} = {v:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        let toml = format!(
            r#"
host_id = "{name}"
labels = {{ {labels} }}
coordinators = ["{url}"]
check_interval = "{check}"
heartbeat_interval = "{hb}"
request_timeout = "5s"
state_dir = {dir:?}
safety_margin = "{margin}"
# Never run: the simulated machine reboots instead.
reboot_command = ["false"]

[[jobs]]
name = "ingest"
confirm = {confirm}
reboot_after_failed_restarts = {restarts}
give_up_after_failed_reboots = {reboots}
probation = "{probation}"
{start_grace}# The command is never run: the simulated machine restarts the job.
restart = {{ grace = "{grace}", verify_timeout = "{verify}", command = ["true"] }}
# Never read: the simulated machine answers every check.
heartbeat_file = {{ path = "/run/medic-sim/ingest.hb" }}
{process}"#,
            name = plan.name,
            check = scale.text(a.check_interval.0),
            hb = scale.text(a.heartbeat_interval.0),
            dir = dir.display().to_string(),
            margin = scale.text(a.safety_margin.0),
            confirm = a.confirm,
            restarts = a.reboot_after_failed_restarts,
            reboots = a.give_up_after_failed_reboots,
            grace = scale.text(Duration::from_secs(30)),
            verify = scale.text(a.verify_timeout.0),
            probation = scale.text(a.probation.0),
            start_grace = if a.start_grace.0.is_zero() {
                String::new()
            } else {
                format!("start_grace = \"{}\"\n", scale.text(a.start_grace.0))
            },
            // Never read either; a start grace needs one to be configured.
            process = if a.start_grace.0.is_zero() {
                ""
            } else {
                "process = { pidfile = \"/run/medic-sim/ingest.pid\" }\n"
            },
        );
        let config = AgentConfig::from_toml(&toml)
            .map_err(|e| crate::SimError::Config(format!("agent {}: {e}", plan.name)))?;
        if let Some(link) = &link {
            // What `drive` builds at each start of the agent, checked once.
            LinkedCoordinator::new(&config, link)?;
        }
        Ok(Self {
            name: plan.name.clone(),
            config,
            state: Arc::new(Mutex::new(HostState {
                model,
                down: false,
                gone: false,
                last_check_stuck: false,
            })),
            link,
        })
    }
}

/// Aborts a task when dropped (a driver that is itself aborted takes its
/// agent with it).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The end of a run, told to every host's driver. Drivers learn of it in
/// the order they began to wait (a `Notify`; a `watch` channel would wake
/// them in a random order), so a run on virtual time ends the same way
/// every time.
#[derive(Debug, Default)]
pub struct Stop {
    stopped: AtomicBool,
    changed: tokio::sync::Notify,
}

impl Stop {
    /// Tells every driver.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    /// Whether the run is ending.
    pub fn stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    /// Waits until the run ends.
    pub async fn wait(&self) {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            // Registered before the flag is read: no stop is missed.
            notified.as_mut().enable();
            if self.stopped() {
                return;
            }
            notified.await;
        }
    }
}

/// Runs host `spec` until `stop`: starts its agent, and plays
/// reboots, crashes and hosts that never come back. On stop, an agent in
/// the middle of an action finishes it, and a rebooting host comes back
/// and reports first.
pub async fn drive(spec: Arc<SimHostSpec>, shared: Arc<Shared>, stop: Arc<Stop>) {
    loop {
        let (events, mut rx) = mpsc::unbounded_channel();
        let (control, control_rx) = mpsc::channel(1);
        let host = SimHost {
            name: spec.name.clone(),
            shared: shared.clone(),
            state: spec.state.clone(),
            events,
        };
        let mut task = match &spec.link {
            Some(link) => {
                let coordinator = match LinkedCoordinator::new(&spec.config, link) {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::error!(host = %spec.name, error = %e, "cannot start the agent");
                        return;
                    }
                };
                let env = Environment {
                    clock: Arc::new(shared.clock),
                    ..Environment::default()
                };
                let agent = Agent::with_coordinator(spec.config.clone(), env, host, coordinator);
                AbortOnDrop(tokio::spawn(agent.run(control_rx)))
            }
            None => {
                let agent = Agent::with_host(spec.config.clone(), Environment::default(), host);
                AbortOnDrop(tokio::spawn(agent.run(control_rx)))
            }
        };
        let mut stopping = stop.stopped();
        if stopping {
            let _ = control.try_send(Control::Shutdown);
        }
        let event = loop {
            // Biased: the same order every time (repeatable runs).
            tokio::select! {
                biased;
                e = rx.recv() => break e,
                _ = &mut task.0 => return,
                () = stop.wait(), if !stopping => {
                    stopping = true;
                    let _ = control.try_send(Control::Shutdown);
                }
            }
        };
        // Power loss (or a dead process): the agent stops mid-await.
        drop(task);
        match event {
            Some(MachineEvent::Reboot) => {
                let (secs, never_back) = {
                    let mut st = spec
                        .state
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    st.down = true;
                    let t = shared.clock.t();
                    st.model.going_down(t);
                    let secs = draw(st.model.rng(), shared.scenario.fleet.reboot_time);
                    let never = match st.model.plan().crash {
                        Some(c) if t >= c.start && t < c.end => {
                            st.model.rng().random_bool(c.never_back)
                        }
                        _ => false,
                    };
                    (secs, never)
                };
                if never_back {
                    let mut st = spec
                        .state
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    st.gone = true;
                    return;
                }
                shared.clock.sleep(secs).await;
                let t = shared.clock.t();
                let p = shared.scenario.jobs.reboot_fixes;
                let mut st = spec
                    .state
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                st.model.reboot(t, p);
                st.down = false;
            }
            Some(MachineEvent::Crash) => {
                if stopping {
                    return;
                }
                let back = spec
                    .state
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .model
                    .plan()
                    .crash
                    .map_or(0.0, |c| c.back_after);
                shared.clock.sleep(back).await;
            }
            None => return,
        }
    }
}
