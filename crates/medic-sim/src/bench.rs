//! Load: `medic-sim bench` (decisions per second and latency against the
//! no-op RPC ceiling of the same server, measured in the same run) and the
//! `storm` scenario (thousands of hosts ask for a permit within a second).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use medic_proto::pb::v1 as pb;
use pb::request_permit_response::Decision;
use tonic::transport::Channel;

use crate::check::{self, AuditEntry, Context};
use crate::coord::{Coordinator, Mode, TlsFiles};
use crate::error::SimError;
use crate::host::SimClock;
use crate::record::Side;
use crate::run::{RunResult, summarize_history};
use crate::scenario::{Scale, Scenario, Storm, host_labels, host_name};

/// Latency percentiles of a set of calls.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Latency {
    /// Median.
    pub p50: Duration,
    /// 90th percentile.
    pub p90: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Slowest.
    pub max: Duration,
}

impl Latency {
    /// From samples (sorted here).
    pub fn of(samples: &mut [Duration]) -> Self {
        samples.sort_unstable();
        let at = |q: f64| -> Duration {
            if samples.is_empty() {
                return Duration::ZERO;
            }
            #[allow(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                clippy::cast_precision_loss
            )]
            let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
            samples[i]
        };
        Self {
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            max: samples.last().copied().unwrap_or_default(),
        }
    }
}

/// What a storm measured.
#[derive(Clone, Debug, Default)]
pub struct StormResult {
    /// Hosts that asked.
    pub hosts: usize,
    /// Over how long the requests were sent.
    pub within: Duration,
    /// The bound every answer had to meet (from the first send).
    pub answer_within: Duration,
    /// Requests answered with a decision.
    pub answered: usize,
    /// Requests that failed (transport or status).
    pub errors: usize,
    /// Of which granted.
    pub granted: usize,
    /// Of which denied.
    pub denied: usize,
    /// From the first send to the last answer.
    pub all_answered_after: Duration,
    /// Per-request latency.
    pub latency: Latency,
    /// Connections the requests shared.
    pub connections: usize,
}

impl StormResult {
    /// Every request answered within the bound.
    pub fn ok(&self) -> bool {
        self.errors == 0
            && self.answered == self.hosts
            && self.all_answered_after <= self.answer_within
    }
}

async fn channels(coordinator: &Coordinator, n: usize) -> Result<Vec<Channel>, SimError> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n.max(1) {
        out.push(coordinator.channel().await?);
    }
    Ok(out)
}

async fn register(
    chans: &[Channel],
    hosts: &[(String, medic_policy::Labels)],
    problem: bool,
) -> Result<(), SimError> {
    let per = hosts.len().div_ceil(chans.len());
    let mut tasks = tokio::task::JoinSet::new();
    for (i, chunk) in hosts.chunks(per.max(1)).enumerate() {
        let mut client =
            pb::remediation_client::RemediationClient::new(chans[i % chans.len()].clone());
        let chunk = chunk.to_vec();
        tasks.spawn(async move {
            for (name, labels) in chunk {
                let problems = if problem {
                    vec![pb::Problem {
                        job: "ingest".into(),
                        detector: "sim".into(),
                        since: Some(medic_proto::convert::to_timestamp(SystemTime::now())),
                        detail: "storm".into(),
                    }]
                } else {
                    Vec::new()
                };
                client
                    .heartbeat(pb::HeartbeatRequest {
                        state_error: None,
                        host_id: name,
                        labels,
                        agent_version: "medic-sim".into(),
                        problems,
                        held_permit: None,
                        needs_human: None,
                    })
                    .await
                    .map_err(|e| SimError::Coordinator(format!("heartbeat: {e}")))?;
            }
            Ok::<(), SimError>(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.map_err(|e| SimError::Coordinator(e.to_string()))??;
    }
    Ok(())
}

async fn wait_warm(coordinator: &Coordinator) -> Result<(), SimError> {
    let mut admin = coordinator.admin_retrying(Duration::from_secs(30)).await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let s = admin
            .get_status(pb::GetStatusRequest {})
            .await
            .map_err(|e| SimError::Coordinator(e.to_string()))?
            .into_inner()
            .status
            .unwrap_or_default();
        if s.warming_up_until.is_none() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(SimError::Coordinator(
                "still warming up after 2 minutes".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The `storm` scenario: every host heartbeats (reporting a problem), then
/// all of them ask for a restart permit within `storm.within`, spread
/// evenly; every answer must arrive within `storm.answer_within` of the
/// first request. The checker then judges the history (caps above all).
pub(crate) async fn run_storm(
    scenario: Scenario,
    storm: Storm,
    speed: f64,
    seed: u64,
    coordinator: Coordinator,
) -> Result<RunResult, SimError> {
    let clock = SimClock::start(Scale(speed));
    let hosts: Vec<(String, medic_policy::Labels)> = (0..storm.hosts)
        .map(|i| (host_name(i), host_labels(&scenario.fleet, i)))
        .collect();
    let chans = channels(&coordinator, storm.connections).await?;
    register(&chans, &hosts, true).await?;
    wait_warm(&coordinator).await?;
    // Heartbeats again so that every host is fresh when the storm hits.
    register(&chans, &hosts, true).await?;

    let n = hosts.len();
    let start = Instant::now() + Duration::from_millis(50);
    let mut tasks = tokio::task::JoinSet::new();
    for (i, (name, _)) in hosts.iter().enumerate() {
        #[allow(clippy::cast_possible_truncation)]
        let send_at = start + storm.within.0.mul_f64(i as f64 / n as f64);
        let mut client =
            pb::remediation_client::RemediationClient::new(chans[i % chans.len()].clone());
        let name = name.clone();
        tasks.spawn(async move {
            tokio::time::sleep_until(send_at.into()).await;
            let sent = Instant::now();
            let r = client
                .request_permit(pb::RequestPermitRequest {
                    dry_run: false,
                    request_id: format!("storm-{name}"),
                    host_id: name.clone(),
                    action: pb::Action::RestartJob.into(),
                    action_name: String::new(),
                    job: "ingest".into(),
                    reason: "storm".into(),
                })
                .await;
            let done = Instant::now();
            (name, sent, done, r.map(|r| r.into_inner()))
        });
    }
    let mut result = StormResult {
        hosts: n,
        within: storm.within.0,
        answer_within: storm.answer_within.0,
        connections: chans.len(),
        ..StormResult::default()
    };
    let mut latencies = Vec::with_capacity(n);
    let mut grants = Vec::new();
    let mut last = start;
    while let Some(r) = tasks.join_next().await {
        let (name, sent, done, reply) = r.map_err(|e| SimError::Coordinator(e.to_string()))?;
        last = last.max(done);
        match reply {
            Ok(reply) => {
                result.answered += 1;
                latencies.push(done - sent);
                match reply.decision {
                    Some(Decision::Granted(g)) => {
                        result.granted += 1;
                        if let Some(p) = g.permit {
                            grants.push((name, p));
                        }
                    }
                    // The bench's configuration asks for no approvals.
                    Some(Decision::Denied(_) | Decision::Waiting(_)) => result.denied += 1,
                    None => result.errors += 1,
                }
            }
            Err(_) => result.errors += 1,
        }
    }
    result.all_answered_after = last.saturating_duration_since(start);
    result.latency = Latency::of(&mut latencies);

    // End every granted permit, so the history is complete.
    let mut client = pb::remediation_client::RemediationClient::new(chans[0].clone());
    for (host, p) in grants {
        let _ = client
            .report_outcome(pb::ReportOutcomeRequest {
                host_id: host,
                permit_id: p.permit_id,
                fencing_token: p.fencing_token,
                outcome: pb::Outcome::Succeeded.into(),
                detail: "storm: done".into(),
            })
            .await;
    }

    let Checked {
        history,
        verdict,
        policy,
        starts,
    } = stop_and_check(coordinator, &hosts).await?;
    let mut r = RunResult {
        speed,
        virtual_time: false,
        seed,
        wall: clock.wall.elapsed().unwrap_or_default(),
        origin: clock.wall,
        medic: Side {
            name: "medic".into(),
            ..Side::default()
        },
        legacy: Side {
            name: "legacy script".into(),
            ..Side::default()
        },
        lock: Side::default(),
        denials_by_rule: Vec::new(),
        caps: (
            Some(
                policy
                    .limits(medic_policy::Action::RestartJob)
                    .effective_cap(u32::try_from(n).unwrap_or(u32::MAX)),
            ),
            None,
        ),
        breakers: Vec::new(),
        half_open_grants_after_reset: 0,
        half_open_probes: policy.breaker.half_open_probes,
        pauses: 0,
        quarantines: 0,
        expired: 0,
        grants: 0,
        denials: 0,
        coordinator_kills: 0,
        coordinator_starts: starts.iter().map(|s| clock.t_of(*s)).collect(),
        verdict,
        history,
        actions: Vec::new(),
        storm: Some(result),
        scenario,
    };
    summarize_history(&mut r, &clock);
    Ok(r)
}

// === bench ===

/// `medic-sim bench` settings.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Hosts registered.
    pub hosts: usize,
    /// Concurrent simulated agents, one connection each.
    pub agents: usize,
    /// Seconds per phase.
    pub secs: f64,
    /// An external coordinator instead of an in-process one.
    pub external: Option<(String, TlsFiles)>,
}

/// What a phase measured.
#[derive(Clone, Debug, Default)]
pub struct Phase {
    /// What ran.
    pub name: String,
    /// Calls completed.
    pub calls: usize,
    /// Calls that failed.
    pub errors: usize,
    /// Calls per second.
    pub rate: f64,
    /// Latency.
    pub latency: Latency,
    /// Grants among the decisions.
    pub granted: usize,
}

/// What `bench` measured.
#[derive(Clone, Debug)]
pub struct BenchResult {
    /// The no-op RPC (`grpc.health.v1.Health/Check`) on the same server.
    pub ceiling: Phase,
    /// `RequestPermit` decisions (a granted permit is reported done at
    /// once, so slots keep freeing and both paths run).
    pub decisions: Phase,
    /// The settings.
    pub hosts: usize,
    /// Concurrent agents.
    pub agents: usize,
    /// Invariants over the bench's history.
    pub verdict: check::Verdict,
}

/// The coordinator configuration `bench` runs in-process: caps and budgets
/// that let grants and denials both happen at full speed.
pub const BENCH_CONFIG: &str = r#"
[server]
admission = { per_second = 100000, burst = 100000 }
[fleet]
heartbeat_interval = "10s"
host_ttl = "10m"
warmup = "10s"
[breaker]
unhealthy_percent = 100
failure_percent = 100
[limits.restart_job]
max_in_flight = 50
max_in_flight_percent = 5
permit_ttl = "10m"
cooldown = "0s"
rate = { count = 1000000, per = "1h", burst = 1000 }
host_budget = { max_attempts = 1000000, per = "1h" }
"#;

/// Runs the bench.
pub async fn bench(opts: &BenchOptions) -> Result<BenchResult, SimError> {
    let dir = tempfile::Builder::new().prefix("medic-bench-").tempdir()?;
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state)?;
    let mode = match &opts.external {
        Some((url, tls)) => Mode::External {
            url: url.clone(),
            tls: tls.clone(),
        },
        None => Mode::InProcess,
    };
    // The warm-up of 10 s is real time: bench runs at speed 1.
    let toml = Scale(1.0).coordinator_toml(
        &BENCH_CONFIG
            .parse::<toml::Table>()
            .map_err(|e| SimError::Config(e.to_string()))?,
        &state,
    );
    let coordinator = Coordinator::start(mode, &toml, dir.path()).await?;
    let fleet = crate::scenario::Fleet {
        hosts: opts.hosts,
        racks: 50,
        zones: 5,
        reboot_time: crate::scenario::Span {
            min: crate::scenario::Dur(Duration::ZERO),
            max: crate::scenario::Dur(Duration::ZERO),
        },
        restart_time: crate::scenario::Span {
            min: crate::scenario::Dur(Duration::ZERO),
            max: crate::scenario::Dur(Duration::ZERO),
        },
    };
    let hosts: Vec<(String, medic_policy::Labels)> = (0..opts.hosts)
        .map(|i| (host_name(i), host_labels(&fleet, i)))
        .collect();
    let chans = channels(&coordinator, opts.agents).await?;
    register(&chans, &hosts, false).await?;
    wait_warm(&coordinator).await?;
    register(&chans, &hosts, false).await?;

    let ceiling = phase(
        &chans,
        opts.secs,
        "no-op Health/Check (ceiling)",
        |ch, _, _| async move {
            let mut c = tonic_health::pb::health_client::HealthClient::new(ch);
            c.check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await
            .map(|_| false)
            .map_err(|_| ())
        },
    )
    .await;
    let names = Arc::new(hosts.iter().map(|h| h.0.clone()).collect::<Vec<_>>());
    let decisions = phase(
        &chans,
        opts.secs,
        "RequestPermit decision",
        move |ch, worker, n| {
            let names = names.clone();
            async move {
                let mut c = pb::remediation_client::RemediationClient::new(ch);
                let host = names[(worker * 7919 + n * 104_729) % names.len()].clone();
                let reply = c
                    .request_permit(pb::RequestPermitRequest {
                        dry_run: false,
                        request_id: format!("bench-{worker}-{n}"),
                        host_id: host.clone(),
                        action: pb::Action::RestartJob.into(),
                        action_name: String::new(),
                        job: "ingest".into(),
                        reason: "bench".into(),
                    })
                    .await
                    .map_err(|_| ())?
                    .into_inner();
                if let Some(Decision::Granted(g)) = reply.decision
                    && let Some(p) = g.permit
                {
                    c.report_outcome(pb::ReportOutcomeRequest {
                        host_id: host,
                        permit_id: p.permit_id,
                        fencing_token: p.fencing_token,
                        outcome: pb::Outcome::Succeeded.into(),
                        detail: "bench".into(),
                    })
                    .await
                    .map_err(|_| ())?;
                    return Ok(true);
                }
                Ok(false)
            }
        },
    )
    .await;
    let verdict = stop_and_check(coordinator, &hosts).await?.verdict;
    Ok(BenchResult {
        ceiling,
        decisions,
        hosts: opts.hosts,
        agents: chans.len(),
        verdict,
    })
}

/// What a bench's coordinator left, checked.
struct Checked {
    history: Vec<AuditEntry>,
    verdict: check::Verdict,
    policy: medic_policy::PolicyConfig,
    starts: Vec<SystemTime>,
}

/// Reads the coordinator's history, stops it, and checks the invariants
/// over the history for a fleet of `hosts`.
async fn stop_and_check(
    mut coordinator: Coordinator,
    hosts: &[(String, medic_policy::Labels)],
) -> Result<Checked, SimError> {
    let read_at = SystemTime::now();
    let history: Vec<AuditEntry> = coordinator
        .history()
        .await?
        .into_iter()
        .map(AuditEntry::from_wire)
        .collect();
    let policy = coordinator.config().policy.clone();
    let tick = coordinator.config().server.tick_interval;
    let starts = coordinator.starts.clone();
    coordinator.stop().await;
    let fleet: Vec<medic_policy::Labels> = hosts.iter().map(|h| h.1.clone()).collect();
    let verdict = check::check(
        &history,
        &[],
        &Context {
            policy: &policy,
            fleet: &fleet,
            starts: &starts,
            read_at,
            tick: tick * 2,
        },
    );
    Ok(Checked {
        history,
        verdict,
        policy,
        starts,
    })
}

async fn phase<F, Fut>(chans: &[Channel], secs: f64, name: &str, call: F) -> Phase
where
    F: Fn(Channel, usize, usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<bool, ()>> + Send,
{
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut tasks = tokio::task::JoinSet::new();
    for (w, ch) in chans.iter().enumerate() {
        let ch = ch.clone();
        let call = call.clone();
        tasks.spawn(async move {
            let mut lat = Vec::new();
            let (mut errors, mut granted) = (0, 0);
            let mut n = 0;
            while Instant::now() < deadline {
                let t0 = Instant::now();
                match call(ch.clone(), w, n).await {
                    Ok(g) => {
                        lat.push(t0.elapsed());
                        granted += usize::from(g);
                    }
                    Err(()) => errors += 1,
                }
                n += 1;
            }
            (lat, errors, granted)
        });
    }
    let started = Instant::now();
    let mut all = Vec::new();
    let (mut errors, mut granted) = (0, 0);
    while let Some(Ok((lat, e, g))) = tasks.join_next().await {
        all.extend(lat);
        errors += e;
        granted += g;
    }
    let elapsed = started.elapsed().as_secs_f64().max(1e-9);
    #[allow(clippy::cast_precision_loss)]
    let rate = all.len() as f64 / elapsed;
    Phase {
        name: name.to_owned(),
        calls: all.len(),
        errors,
        rate,
        latency: Latency::of(&mut all),
        granted,
    }
}
