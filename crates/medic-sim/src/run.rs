//! One simulation: the fleet of real agents against a real coordinator,
//! incidents on the timeline, then the legacy baseline over the same
//! world, the invariant checker over everything, and the numbers for the
//! report.
//!
//! # Virtual time
//!
//! A run with the simulator's own in-process coordinator (every scenario
//! but `coordinator-crash`, the permit storm and `--coordinator`) runs on
//! virtual time: one thread, a single-threaded tokio runtime whose clock
//! is paused and jumps to the next timer whenever every task waits. The
//! agents, the coordinator and the simulated machines share that one
//! clock ([`SimClock`]): every timer, backoff, tick, warm-up and retry of
//! the real agent and coordinator code is in scenario time, and the wall
//! clock they read starts at a fixed date. They talk over in-memory
//! connections (`medic_client::memory`), never a socket; the agents' random
//! draws come from the run's seed. So the same scenario and seed give the
//! same audit history, event for event, and the run goes as fast as the
//! CPU allows; `--speed` only paces it for watching.
//!
//! A scenario that kills the coordinator runs it as a child process,
//! which lives on real time: that run divides every scenario duration by
//! the speed ([`Scale`]), as do runs against an external coordinator and
//! the permit storm (which measures real latency).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use indicatif::{ProgressBar, ProgressStyle};
use medic_policy::{Action, Event};
use medic_proto::pb::v1 as pb;

use crate::check::{self, AuditEntry, Context, Verdict};
use crate::coord::{Coordinator, Mode, TlsFiles};
use crate::error::SimError;
use crate::host::{Link, Shared, SimClock, SimHostSpec, Stop, drive};
use crate::model::{JobModel, StuckTracker, World};
use crate::proxy::Proxy;
use crate::record::{ActionRecord, Sample, Side};
use crate::scenario::{Incident, Scale, Scenario};

/// How to run a scenario.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// The seed (failures, incidents, coin flips, the agents' jitter).
    pub seed: u64,
    /// On real time: overrides the scenario's speed. On virtual time:
    /// paces the run to this many scenario seconds per real second, for
    /// watching it live (unset: as fast as it goes).
    pub speed: Option<f64>,
    /// Run the scenario's short form.
    pub short: bool,
    /// An external coordinator instead of an in-process one.
    pub external: Option<(String, TlsFiles)>,
    /// The `medic-sim` executable, to run a killable coordinator
    /// (`coordinator-crash`).
    pub exe: Option<PathBuf>,
    /// Show a progress bar.
    pub progress: bool,
    /// On virtual time, how the agents reach the in-process coordinator.
    pub transport: Transport,
}

/// How simulated agents on virtual time reach the in-process coordinator.
/// Both run the same agent and coordinator code from the call's messages
/// on (conversions, identity, admission, the engine, the durable commit),
/// so the same calls get the same answers; and over each, the same seed
/// gives the same history. The two histories of one seed may differ:
/// calls at the same virtual instant reach the coordinator in another
/// order through the HTTP/2 connections' tasks than called directly.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    /// The coordinator's handlers called in the same process: no HTTP/2
    /// framing and no protobuf encoding. Many times faster, which is what
    /// lets a 10,000-host fleet run a day in minutes.
    #[default]
    Direct,
    /// Each agent's own `medic_client` connection, HTTP/2 over an
    /// in-memory duplex: the wire path, exercised.
    Grpc,
}

impl Transport {
    /// Its name on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Direct => "direct",
            Transport::Grpc => "grpc",
        }
    }
}

/// The state a breaker moved to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    /// Open: nothing it covers is granted.
    Open,
    /// Half-open: probe permits go out, a few at a time.
    HalfOpen,
    /// Closed.
    Closed,
}

impl BreakerState {
    /// `open`, `half-open`, `closed`.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half-open",
            BreakerState::Closed => "closed",
        }
    }
}

/// A breaker opening, going half-open or closing, in scenario time.
#[derive(Clone, Debug, PartialEq)]
pub struct BreakerChange {
    /// When.
    pub t: f64,
    /// Opened (true) or not (half-open or closed: see `state`).
    pub open: bool,
    /// The state it moved to.
    pub state: BreakerState,
    /// What opened it (`liveness_drop`, `probe_failed`...), for an opening.
    pub cause: Option<String>,
    /// Who moved it (`coordinator`, or the operator who reset it).
    pub actor: String,
    /// Which breaker.
    pub scope: String,
    /// Why.
    pub reason: String,
}

/// Everything a run produced.
#[derive(Debug)]
pub struct RunResult {
    /// The scenario as run (short form applied).
    pub scenario: Scenario,
    /// The speed it ran at (1 on virtual time, where scenario time is the
    /// clock every part reads).
    pub speed: f64,
    /// Whether it ran on virtual time.
    pub virtual_time: bool,
    /// The seed.
    pub seed: u64,
    /// Real time the medic run took.
    pub wall: Duration,
    /// Wall-clock time of scenario time 0.
    pub origin: SystemTime,
    /// The medic side.
    pub medic: Side,
    /// The legacy script over the same world.
    pub legacy: Side,
    /// The legacy script behind a reboot lock of concurrency 1 and
    /// nothing else (kured-style), over the same world.
    pub lock: Side,
    /// Denials per rule, from the history's samples, in scenario time.
    pub denials_by_rule: Vec<crate::report::RuleDenials>,
    /// The effective caps at the end (restart, reboot).
    pub caps: (Option<u32>, Option<u32>),
    /// Breaker changes.
    pub breakers: Vec<BreakerChange>,
    /// Grants made while a breaker covering the host was half-open after
    /// an operator reset (not after its condition cleared by itself).
    pub half_open_grants_after_reset: usize,
    /// The half-open probe budget before any success
    /// (`breaker.half_open_probes`).
    pub half_open_probes: u32,
    /// Pauses begun.
    pub pauses: usize,
    /// Hosts quarantined.
    pub quarantines: usize,
    /// Permits that expired without an outcome.
    pub expired: usize,
    /// Grants in the history.
    pub grants: usize,
    /// Denials (counted, from the samples).
    pub denials: u64,
    /// Times the coordinator was killed.
    pub coordinator_kills: usize,
    /// When each coordinator incarnation started, scenario seconds
    /// (negative: before the fleet started).
    pub coordinator_starts: Vec<f64>,
    /// The invariant checker's verdict.
    pub verdict: Verdict,
    /// The audit history.
    pub history: Vec<AuditEntry>,
    /// The hosts' action records.
    pub actions: Vec<ActionRecord>,
    /// A storm's figures, for the `storm` scenario.
    pub storm: Option<crate::bench::StormResult>,
}

/// Whether `scenario` runs on virtual time with these options: with the
/// simulator's own in-process coordinator, unless the scenario kills the
/// coordinator (a child process, on real time) or is a permit storm (real
/// latency).
pub fn on_virtual_time(scenario: &Scenario, opts: &Options) -> bool {
    opts.external.is_none() && !scenario.crashes_coordinator() && scenario.storm.is_none()
}

/// The command that runs `scenario` again exactly (on virtual time, the
/// same history), for a failing seed.
pub fn replay_command(scenario: &str, opts: &Options) -> String {
    let mut cmd = format!("medic-sim run {scenario} --seed {}", opts.seed);
    if opts.short {
        cmd.push_str(" --short");
    }
    if let Some((url, _)) = &opts.external {
        cmd.push_str(&format!(" --coordinator {url}"));
    }
    if opts.transport != Transport::default() {
        cmd.push_str(&format!(" --transport {}", opts.transport.as_str()));
    }
    cmd
}

/// Runs `scenario`: on virtual time (see the module's documentation) on
/// a thread of its own, else on real time in the caller's runtime.
pub async fn run(scenario: Scenario, opts: &Options) -> Result<RunResult, SimError> {
    let scenario = if opts.short {
        scenario.shortened()
    } else {
        scenario
    };
    if let Some(speed) = opts.speed
        && (speed.is_nan() || speed <= 0.0)
    {
        return Err(SimError::Scenario(format!(
            "--speed must be positive, got {speed}"
        )));
    }
    if !on_virtual_time(&scenario, opts) {
        return run_fleet(scenario, opts, false).await;
    }
    let opts = opts.clone();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("medic-sim-fleet".to_owned())
        .spawn(move || {
            let result = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .start_paused(true)
                .build()
                .map_err(SimError::Io)
                .and_then(|rt| {
                    medic_agent::backoff::seed_thread(Some(opts.seed));
                    rt.block_on(run_fleet(scenario, &opts, true))
                });
            let _ = tx.send(result);
        })?;
    rx.await.map_err(|_| {
        SimError::Coordinator("the simulation thread ended without a result (it panicked)".into())
    })?
}

/// The run itself, on virtual time (`virtual_time`: in a paused
/// single-threaded runtime) or real time.
async fn run_fleet(
    scenario: Scenario,
    opts: &Options,
    virtual_time: bool,
) -> Result<RunResult, SimError> {
    let speed = if virtual_time {
        1.0
    } else {
        opts.speed.unwrap_or(scenario.speed)
    };
    if speed.is_nan() || speed <= 0.0 {
        return Err(SimError::Scenario(format!(
            "speed must be positive, got {speed}"
        )));
    }
    let pace = if virtual_time { opts.speed } else { None };
    let scale = Scale(speed);
    let real_start = std::time::Instant::now();
    let dir = tempfile::Builder::new().prefix("medic-sim-").tempdir()?;
    let state_dir = dir.path().join("state");
    std::fs::create_dir_all(&state_dir)?;
    let mut toml = scale.coordinator_toml(&scenario.coordinator, &state_dir);
    if virtual_time {
        toml = without_admission_limit(&toml)?;
    }
    if let Some((url, _)) = &opts.external
        && url.starts_with("https://")
        && scenario.storm.is_none()
    {
        return Err(SimError::Scenario(format!(
            "{url}: the simulated agents run the real agent's client, which connects in \
             plaintext; use an http:// coordinator (bench and storm take TLS files)"
        )));
    }
    if opts.external.is_some() && scenario.partitions() {
        return Err(SimError::Scenario(
            "partition cuts links through the simulator's own relay; run it without --coordinator"
                .into(),
        ));
    }
    let started = SystemTime::now();
    if scenario.steps_clock() && (opts.external.is_some() || scenario.crashes_coordinator()) {
        return Err(SimError::Scenario(
            "a scenario that steps the coordinator's clock needs the simulator's in-process \
             coordinator (no --coordinator, no coordinator crash)"
                .into(),
        ));
    }
    let mode = match (&opts.external, scenario.crashes_coordinator()) {
        (Some((url, tls)), false) => Mode::External {
            url: url.clone(),
            tls: tls.clone(),
        },
        (Some(_), true) => {
            return Err(SimError::Scenario(
                "a scenario that kills the coordinator needs the simulator's own coordinator, \
                 not --coordinator"
                    .into(),
            ));
        }
        (None, true) => Mode::Child {
            exe: opts.exe.clone().ok_or_else(|| {
                SimError::Coordinator("no medic-sim executable to run the coordinator".into())
            })?,
        },
        (None, false) if virtual_time => Mode::Memory {
            clock: SimClock::start_virtual(),
        },
        (None, false) => Mode::InProcess,
    };
    // On virtual time the clock starts with the coordinator (no time
    // passes while it starts), and is its clock.
    let clock = match &mode {
        Mode::Memory { clock } => *clock,
        _ => SimClock::start(scale),
    };
    let coordinator = Coordinator::start(mode, &toml, dir.path()).await?;

    if let Some(storm) = &scenario.storm {
        let storm = storm.clone();
        return crate::bench::run_storm(scenario, storm, speed, opts.seed, coordinator).await;
    }

    let world = World::build(&scenario, opts.seed);
    let dependency = world.dependency();
    let clock = if virtual_time {
        clock
    } else {
        SimClock::start(scale)
    };
    let shared = Arc::new(Shared {
        clock,
        scenario: scenario.clone(),
        actions: Mutex::new(Vec::new()),
    });

    // Agents reach the coordinator directly, or through relays when the
    // scenario cuts links or moves the coordinator.
    let target: Option<SocketAddr> = coordinator
        .url()
        .strip_prefix("http://")
        .and_then(|a| a.parse().ok());
    let memory = coordinator.memory().cloned();
    let direct = match opts.transport {
        Transport::Direct => coordinator.direct().cloned(),
        Transport::Grpc => None,
    };
    let cut = Arc::new(AtomicBool::new(false));
    let main_proxy = if coordinator.killable() {
        Some(Proxy::start(target).await?)
    } else {
        None
    };
    let part_proxy = if scenario.partitions() && memory.is_none() {
        Some(Proxy::start(target).await?)
    } else {
        None
    };
    let main_url = main_proxy
        .as_ref()
        .map_or_else(|| coordinator.url().to_owned(), Proxy::url);

    let mut specs = Vec::new();
    for (i, plan) in world.hosts.iter().enumerate() {
        let model = JobModel::new(plan.clone(), opts.seed.wrapping_mul(1_000_003) ^ i as u64)
            .with_dependency(dependency.as_ref(), i);
        let url = match &part_proxy {
            Some(p) if plan.ever_partitioned() => p.url(),
            _ => main_url.clone(),
        };
        let host_dir = dir.path().join("hosts").join(&plan.name);
        let link = memory.as_ref().map(|connector| Link {
            connector: connector.clone(),
            direct: direct.clone(),
            cut: plan.ever_partitioned().then(|| cut.clone()),
        });
        specs.push(Arc::new(SimHostSpec::new(
            model, &scenario, scale, &url, link, host_dir,
        )?));
    }
    let stop = Arc::new(Stop::default());
    let mut drivers = tokio::task::JoinSet::new();
    for spec in &specs {
        drivers.spawn(drive(spec.clone(), shared.clone(), stop.clone()));
    }

    // The timeline: partitions and coordinator crashes.
    let coordinator = Arc::new(tokio::sync::Mutex::new(coordinator));
    let proxies = Arc::new((main_proxy, part_proxy));
    let timeline = tokio::spawn(timeline(
        scenario.incidents.clone(),
        scale,
        clock,
        coordinator.clone(),
        proxies.clone(),
        cut.clone(),
    ));

    let end = scenario.duration.secs();
    let step = (end / 240.0).max(5.0);
    let bar = if opts.progress {
        let b = ProgressBar::new(end.ceil() as u64);
        b.set_style(
            ProgressStyle::with_template(
                "{spinner} {prefix} [{bar:40}] {msg} (scenario {pos}/{len} s, {elapsed} real)",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        b.set_prefix(scenario.name.clone());
        b
    } else {
        ProgressBar::hidden()
    };

    let dialer = {
        let c = coordinator.lock().await;
        let mut d = c.dialer();
        if c.killable() {
            // Through the relay, which follows the coordinator's restarts.
            d = crate::coord::Dialer::url(&main_url);
        }
        d
    };
    let mut admin: Option<pb::admin_client::AdminClient<tonic::transport::Channel>> = None;
    let mut tracker = StuckTracker::new(specs.len());
    let mut series = Vec::new();
    let mut caps = (None, None);
    let mut t_next = 0.0;
    while t_next <= end {
        clock.sleep_until(t_next).await;
        if let Some(pace) = pace {
            // Watching live: hold the whole simulation (this thread) until
            // real time catches up with scenario time at the pace asked.
            let due = real_start + Duration::from_secs_f64(t_next / pace);
            std::thread::sleep(due.saturating_duration_since(std::time::Instant::now()));
        }
        let t = clock.t();
        let stuck: Vec<bool> = specs
            .iter()
            .map(|s| {
                s.state
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .stuck(t)
            })
            .collect();
        let count = tracker.sample(t, stuck.into_iter());
        let (restarts_total, reboots_total) = totals(&shared);
        let mut sample = Sample {
            t,
            stuck: count,
            restarts_total,
            reboots_total,
            ..Sample::default()
        };
        if admin.is_none() {
            admin = dialer
                .connect()
                .await
                .ok()
                .map(pb::admin_client::AdminClient::new);
        }
        if let Some(a) = admin.as_mut() {
            match tokio::time::timeout(
                Duration::from_secs(2),
                a.get_status(pb::GetStatusRequest {}),
            )
            .await
            {
                Ok(Ok(r)) => {
                    let s = r.into_inner().status.unwrap_or_default();
                    sample.coordinator_up = true;
                    let half_open = s.breakers.iter().filter(|b| b.half_open.is_some()).count();
                    sample.breakers_open = Some(s.breakers.len() - half_open);
                    sample.breakers_half_open = Some(half_open);
                    for act in &s.actions {
                        let active = act.active as usize;
                        match pb::Action::try_from(act.action) {
                            Ok(pb::Action::RestartJob) => {
                                sample.restarts_in_flight = active;
                                sample.restart_cap = Some(act.effective_cap);
                            }
                            Ok(pb::Action::RebootHost) => {
                                sample.reboots_in_flight = active;
                                sample.reboot_cap = Some(act.effective_cap);
                            }
                            _ => {}
                        }
                    }
                    caps = (sample.restart_cap, sample.reboot_cap);
                }
                _ => admin = None,
            }
        }
        series.push(sample);
        bar.set_position(t.min(end) as u64);
        bar.set_message(format!(
            "{} stuck, {} restarts, {} reboots",
            count, restarts_total, reboots_total
        ));
        t_next += step;
    }
    bar.set_message("letting agents finish their actions".to_owned());

    // The end: agents finish what they are doing and stop; hosts down
    // rebooting come back and report first.
    let _ = timeline.await;
    stop.stop();
    let a = &scenario.agent;
    let grace = scale
        .real(a.verify_timeout.0 + scenario.fleet.reboot_time.max.0 + a.check_interval.0 * 2)
        + Duration::from_secs(10);
    let _ = tokio::time::timeout(grace, async {
        while drivers.join_next().await.is_some() {}
    })
    .await;
    drivers.abort_all();

    // Permits of hosts that died expire by their TTL: wait for them, so
    // that "every permit ended" can be judged.
    let coordinator = Arc::try_unwrap(coordinator)
        .map_err(|_| SimError::Coordinator("timeline still holds the coordinator".into()))?
        .into_inner();
    let policy = coordinator.config().policy.clone();
    let tick = coordinator.config().server.tick_interval;
    let max_ttl = policy
        .limits
        .values()
        .map(|l| l.permit_ttl)
        .max()
        .unwrap_or_default();
    let drain_until = tokio::time::Instant::now() + max_ttl + tick * 3 + Duration::from_secs(2);
    let mut admin = coordinator.admin_retrying(Duration::from_secs(30)).await?;
    loop {
        let active: u32 = admin
            .get_status(pb::GetStatusRequest {})
            .await
            .ok()
            .and_then(|r| r.into_inner().status)
            .map_or(1, |s| s.actions.iter().map(|a| a.active).sum());
        if active == 0 || tokio::time::Instant::now() >= drain_until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bar.finish_and_clear();
    let wall = real_start.elapsed();

    let read_at = clock.now();
    let mut wire = coordinator.history().await?;
    if opts.external.is_some() {
        // Someone else's coordinator has a past: judge this run only.
        wire.retain(|e| {
            e.time
                .and_then(|t| medic_proto::convert::from_timestamp("time", t).ok())
                .is_some_and(|at| at >= started)
        });
    }
    let denials_by_rule = crate::report::denials_by_rule(&wire, |at| clock.t_of(at));
    let history: Vec<AuditEntry> = wire.into_iter().map(AuditEntry::from_wire).collect();
    let mut coordinator = coordinator;
    let starts = coordinator.starts.clone();
    let kills = coordinator.kills;
    coordinator.stop().await;
    drop(proxies);

    let actions = shared.actions.lock().map(|a| a.clone()).unwrap_or_default();
    let fleet: Vec<medic_policy::Labels> = world.hosts.iter().map(|h| h.labels.clone()).collect();
    let verdict = check::check(
        &history,
        &actions,
        &Context {
            policy: &policy,
            fleet: &fleet,
            starts: &starts,
            read_at,
            tick: tick * 2 + Duration::from_millis(200),
        },
    );

    let legacy = crate::legacy::run(&scenario, &world, step);
    let lock = crate::legacy::run_script(
        &scenario,
        &world,
        step,
        crate::legacy::Script::Lock { concurrency: 1 },
    );
    let mut medic = Side {
        name: "medic".into(),
        restarts: actions
            .iter()
            .filter(|a| a.action == Action::RestartJob)
            .count(),
        reboots: actions
            .iter()
            .filter(|a| a.action == Action::RebootHost)
            .count(),
        series,
        stuck_host_minutes: tracker.host_seconds / 60.0,
        longest_stuck_minutes: tracker.longest / 60.0,
        ..Side::default()
    };
    let (left, for_secs) = tracker.left_stuck();
    medic.left_stuck = left;
    medic.left_stuck_minutes = for_secs / 60.0;
    medic.finish();
    medic.finish_dependency(dependency.as_ref(), end);

    let mut result = RunResult {
        speed,
        virtual_time,
        seed: opts.seed,
        wall,
        origin: clock.wall,
        medic,
        legacy,
        lock,
        denials_by_rule,
        caps,
        breakers: Vec::new(),
        half_open_grants_after_reset: 0,
        half_open_probes: policy.breaker.half_open_probes,
        pauses: 0,
        quarantines: 0,
        expired: 0,
        grants: 0,
        denials: 0,
        coordinator_kills: kills,
        coordinator_starts: starts.iter().map(|s| clock.t_of(*s)).collect(),
        verdict,
        history,
        actions,
        storm: None,
        scenario,
    };
    summarize_history(&mut result, &clock);
    Ok(result)
}

/// The coordinator's configuration with admission control out of the way:
/// it limits calls per *real* second (its limiter reads the system's
/// clock), which on virtual time would judge how fast the simulator runs,
/// not what the fleet does.
fn without_admission_limit(toml: &str) -> Result<String, SimError> {
    let mut t: toml::Table =
        toml::from_str(toml).map_err(|e| SimError::Config(format!("coordinator: {e}")))?;
    let most = i64::from(medic_policy::config::MAX_COUNT);
    if let Some(toml::Value::Table(server)) = t.get_mut("server") {
        let mut adm = toml::Table::new();
        adm.insert("per_second".into(), most.into());
        adm.insert("burst".into(), most.into());
        server.insert("admission".into(), toml::Value::Table(adm));
    }
    toml::to_string(&t).map_err(|e| SimError::Config(format!("coordinator: {e}")))
}

fn totals(shared: &Shared) -> (usize, usize) {
    shared.actions.lock().map_or((0, 0), |a| {
        (
            a.iter().filter(|r| r.action == Action::RestartJob).count(),
            a.iter().filter(|r| r.action == Action::RebootHost).count(),
        )
    })
}

/// Counts grants, denials, breaker changes, pauses, quarantines and
/// expiries from the history, and the grants made under a breaker an
/// operator reset to half-open.
pub(crate) fn summarize_history(r: &mut RunResult, clock: &SimClock) {
    let end = r.scenario.duration.secs();
    // Breakers half-open after an operator's reset.
    let mut reset: Vec<medic_policy::BreakerScope> = Vec::new();
    // Times in scenario time even when the coordinator's clock stepped.
    let mut unstep = crate::report::Unstep::default();
    for e in &r.history {
        unstep.observe(e.event.as_ref());
        let at = unstep.apply(e.at);
        match &e.event {
            Some(Event::PermitGranted { permit })
                if reset.iter().any(|s| s.covers(&permit.labels)) =>
            {
                r.half_open_grants_after_reset += 1;
            }
            Some(Event::BreakerOpened(t)) => reset.retain(|s| *s != t.scope),
            Some(Event::BreakerHalfOpened { scope, actor, .. }) => {
                reset.retain(|s| s != scope);
                if actor != medic_policy::COORDINATOR_ACTOR {
                    reset.push(scope.clone());
                }
            }
            Some(Event::BreakerClosed { scope, .. }) => reset.retain(|s| s != scope),
            _ => {}
        }
        // After the run the agents stop heartbeating, the live fleet
        // shrinks and a breaker may open over the few hosts still holding
        // permits: true, but not part of the scenario. The checker still
        // judges those records; the report's breaker story ends with the
        // run.
        if matches!(
            e.event,
            Some(
                Event::BreakerOpened(_)
                    | Event::BreakerHalfOpened { .. }
                    | Event::BreakerClosed { .. }
            )
        ) && clock.t_of(at) > end
        {
            continue;
        }
        let change =
            |state, scope: &medic_policy::BreakerScope, cause, actor: &str, reason: &str| {
                BreakerChange {
                    t: clock.t_of(at),
                    open: state == BreakerState::Open,
                    state,
                    cause,
                    actor: actor.to_owned(),
                    scope: scope.to_string(),
                    reason: reason.to_owned(),
                }
            };
        match &e.event {
            Some(Event::PermitGranted { .. }) => r.grants += 1,
            Some(Event::BreakerOpened(t)) => r.breakers.push(change(
                BreakerState::Open,
                &t.scope,
                Some(t.cause.as_str().to_owned()),
                medic_policy::COORDINATOR_ACTOR,
                &t.detail,
            )),
            Some(Event::BreakerHalfOpened {
                scope,
                actor,
                reason,
                ..
            }) => r
                .breakers
                .push(change(BreakerState::HalfOpen, scope, None, actor, reason)),
            Some(Event::BreakerClosed {
                scope,
                actor,
                reason,
                ..
            }) => r
                .breakers
                .push(change(BreakerState::Closed, scope, None, actor, reason)),
            Some(Event::Paused(_)) => r.pauses += 1,
            Some(Event::HostQuarantined(_)) => r.quarantines += 1,
            Some(Event::PermitEnded {
                state: medic_policy::PermitState::Expired,
                ..
            }) => r.expired += 1,
            _ => {}
        }
        if e.kind == pb::EventKind::Deny {
            r.denials += 1;
        }
    }
}

async fn timeline(
    incidents: Vec<Incident>,
    scale: Scale,
    clock: SimClock,
    coordinator: Arc<tokio::sync::Mutex<Coordinator>>,
    proxies: Arc<(Option<Proxy>, Option<Proxy>)>,
    cut_link: Arc<AtomicBool>,
) {
    // (time, what): true/false cut the partition; crashes kill, then
    // restart after their downtime.
    #[derive(Debug)]
    enum Step {
        Cut(bool),
        Kill,
        Restart,
        Reset(String),
        SetClock(bool, Duration),
    }
    let mut steps: Vec<(f64, Step)> = Vec::new();
    for inc in incidents {
        match inc {
            Incident::Partition { at, duration, .. } => {
                steps.push((at.secs(), Step::Cut(true)));
                steps.push((at.secs() + duration.secs(), Step::Cut(false)));
            }
            Incident::BreakerReset { at, reason } => steps.push((at.secs(), Step::Reset(reason))),
            Incident::ClockStep { at, forward, back } => {
                if let Some(by) = forward.or(back) {
                    steps.push((
                        at.secs(),
                        Step::SetClock(forward.is_some(), scale.real(by.0)),
                    ));
                }
            }
            Incident::CoordinatorCrash { at, down_for } => {
                steps.push((at.secs(), Step::Kill));
                steps.push((at.secs() + down_for.secs(), Step::Restart));
            }
            _ => {}
        }
    }
    steps.sort_by(|a, b| a.0.total_cmp(&b.0));
    for (t, step) in steps {
        clock.sleep_until(t).await;
        match step {
            Step::Cut(cut) => {
                cut_link.store(cut, Ordering::SeqCst);
                if let Some(p) = &proxies.1 {
                    p.set_cut(cut);
                }
            }
            Step::Kill => {
                let mut c = coordinator.lock().await;
                for p in [&proxies.0, &proxies.1].into_iter().flatten() {
                    p.set_target(None);
                }
                if let Err(e) = c.kill().await {
                    tracing::error!(error = %e, "cannot kill the coordinator");
                }
            }
            Step::SetClock(forward, by) => {
                let c = coordinator.lock().await;
                if let Err(e) = c.step_clock(forward, by) {
                    tracing::error!(error = %e, "cannot step the coordinator's clock");
                }
            }
            Step::Reset(reason) => {
                let c = coordinator.lock().await;
                reset_breakers(&c, reason).await;
            }
            Step::Restart => {
                let mut c = coordinator.lock().await;
                match c.restart().await {
                    Ok(()) => {
                        let addr = c.url().strip_prefix("http://").and_then(|a| a.parse().ok());
                        for p in [&proxies.0, &proxies.1].into_iter().flatten() {
                            p.set_target(addr);
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "cannot restart the coordinator"),
                }
            }
        }
    }
}

/// An operator's `medicctl breaker reset`: every open breaker goes
/// half-open. Failures are logged (none open is a scenario's business).
async fn reset_breakers(c: &Coordinator, reason: String) {
    let mut admin = match c.admin_retrying(Duration::from_secs(10)).await {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "cannot reach the coordinator to reset its breakers");
            return;
        }
    };
    let mut req = tonic::Request::new(pb::ResetBreakerRequest {
        scope: None,
        reason,
    });
    if let Ok(v) = "sim-operator".parse() {
        req.metadata_mut().insert(medic_proto::metadata::ACTOR, v);
    }
    match admin.reset_breaker(req).await {
        Ok(r) => tracing::info!(count = r.into_inner().closed.len(), "breakers reset"),
        Err(e) => tracing::warn!(error = %e, "breaker reset refused"),
    }
}
