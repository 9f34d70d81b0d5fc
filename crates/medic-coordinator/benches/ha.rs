//! High availability on etcd (issue 9), in one run against one throwaway
//! etcd on loopback:
//!
//! 1. failover under SIGKILL: three replicas of the real binary as child
//!    processes; a client heartbeats and asks for permits (and reports each
//!    outcome) every 20 ms through the agent's own client, which follows
//!    leader redirects; the leader is SIGKILLed at a random moment and the
//!    time from the kill to the first grant by another replica is measured,
//!    `--kills` times (the killed replica is restarted after each and
//!    rejoins as a follower). Each failover is split into lease expiry
//!    (etcd deleting the leader key, seen through a watch), election
//!    (another replica's key put), load (its "serving" log line) and warm-up
//!    plus the client's next request;
//! 2. grant throughput, same etcd, same run, for K concurrent clients each:
//!    (a) the coordinator: RequestPermit then ReportOutcome(success) in a
//!    loop, one host per client, caps too high to deny; (b) the airlock-style
//!    baseline: K workers taking and releasing one semaphore key in etcd by
//!    compare-and-swap (read value and mod_revision, txn comparing it, put
//!    with the holder added or removed, retry on conflict); (c) the floor:
//!    K workers each putting their own key, one put per op.
//!
//! Run: `cargo bench -p medic-coordinator --features etcd --bench ha`
//! (add `-- --kills N` to change the number of kills, default 20, 0 skips
//! phase 1; `--seconds S` the length of each throughput measurement,
//! default 10, 0 skips phase 2; `--clients 1,8,32` the values of K).
//! Needs `etcd` on the PATH (or `MEDIC_ETCD_BIN`). The replicas' logs are
//! kept in a temporary directory, printed if a phase fails.

#![allow(clippy::unwrap_used, clippy::cast_precision_loss)]

// medic-store's throwaway etcd servers, shared with the tests.
#[path = "../../medic-store/tests/common/mod.rs"]
mod etcd;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use etcd::EtcdServer;
use medic_agent::client::{CallError, Coordinators};
use medic_proto::pb::v1 as pb;
use medic_store::etcd_client::{self, Compare, CompareOp, EventType, Txn, TxnOp};
use pb::request_permit_response::Decision;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tonic::transport::Channel;

const EXE: &str = env!("CARGO_BIN_EXE_medic-coordinator");
const PREFIX: &str = "/medic/bench";
const REPLICAS: usize = 3;
const LEASE_TTL: Duration = Duration::from_secs(2);
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
const WARMUP: Duration = Duration::from_secs(1);
/// How often the failover client heartbeats and asks.
const PROBE_EVERY: Duration = Duration::from_millis(20);
/// A failover that takes longer than this is a broken run, not a figure.
const GIVE_UP: Duration = Duration::from_secs(60);
/// Only the election and serving lines: the per-grant info lines would cost
/// the throughput phase a log write per call.
const LOG_FILTER: &str = "warn,medic_coordinator::ha=info,medic_coordinator::server=info";
/// The airlock-style semaphore key and its slots (more than any K).
const SEMAPHORE_KEY: &str = "/airlock/semaphore";
const SEMAPHORE_SLOTS: u64 = 10_000;

// === config ===

/// The replica's own file: what only this replica knows (its ports, its
/// advertised URL) and how it reaches etcd. The policy is not here: with
/// `[store] kind = "etcd"` it lives once in etcd ([`fleet_toml`]).
fn replica_toml(endpoint: &str, grpc: u16, metrics: u16) -> String {
    format!(
        r#"[server]
listen = "127.0.0.1:{grpc}"
metrics_listen = "127.0.0.1:{metrics}"
tick_interval = "100ms"
admission = {{ per_second = 1000000, burst = 1000000 }}

[store]
kind = "etcd"
endpoints = ["{endpoint}"]
prefix = "{PREFIX}"
lease_ttl = "{lease}s"
advertise = "http://127.0.0.1:{grpc}"
"#,
        lease = LEASE_TTL.as_secs()
    )
}

/// The fleet-wide policy, pushed to etcd once for every replica: caps,
/// rates and budgets far above anything the bench asks for, so no request
/// is denied once the warm-up is over.
fn fleet_toml() -> String {
    format!(
        r#"[fleet]
heartbeat_interval = "{hb}s"
host_ttl = "600s"
warmup = "{warmup}s"
min_fleet_size = 1

[breaker]
unhealthy_percent = 100
failure_percent = 100

[limits.restart_job]
max_in_flight = 100000
permit_ttl = "300s"
cooldown = "0s"
rate = {{ count = 1000000, per = "1h", burst = 1000000 }}
host_budget = {{ max_attempts = 1000000, per = "1h" }}
"#,
        hb = HEARTBEAT_INTERVAL.as_secs(),
        warmup = WARMUP.as_secs()
    )
}

/// Writes every replica's file and pushes the fleet-wide policy to etcd
/// with the binary's `config push`, as an operator would, before any
/// replica starts.
fn write_configs(dir: &Path, endpoint: &str, ports: &[(u16, u16)]) -> Vec<PathBuf> {
    let replicas: Vec<PathBuf> = ports
        .iter()
        .enumerate()
        .map(|(i, &(grpc, metrics))| {
            let path = dir.join(format!("replica-{}.toml", name(i)));
            std::fs::write(&path, replica_toml(endpoint, grpc, metrics)).unwrap();
            path
        })
        .collect();
    let fleet = dir.join("fleet.toml");
    std::fs::write(&fleet, fleet_toml()).unwrap();
    let out = Command::new(EXE)
        .args(["config", "push", "--config"])
        .arg(&replicas[0])
        .arg(&fleet)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {EXE} config push: {e}"));
    assert!(
        out.status.success(),
        "config push failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    replicas
}

fn name(i: usize) -> char {
    char::from(b'a' + u8::try_from(i).unwrap())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

// === replicas as child processes ===

type Lines = Arc<Mutex<Vec<(Instant, String)>>>;

/// One replica: the binary as a child process, SIGKILLed when dropped
/// (also on a panic), its stderr lines kept with the instant each arrived.
struct Replica {
    name: char,
    url: String,
    config: PathBuf,
    log: PathBuf,
    lines: Lines,
    child: Option<Child>,
}

impl Replica {
    fn new(i: usize, config: PathBuf, grpc: u16, dir: &Path) -> Replica {
        Replica {
            name: name(i),
            url: format!("http://127.0.0.1:{grpc}"),
            config,
            log: dir.join(format!("replica-{}.log", name(i))),
            lines: Arc::default(),
            child: None,
        }
    }

    fn spawn(&mut self) -> Instant {
        let at = Instant::now();
        let mut child = Command::new(EXE)
            .args(["run", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", LOG_FILTER)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {EXE}: {e}"));
        let stderr = child.stderr.take().unwrap();
        let lines = self.lines.clone();
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let _ = writeln!(file, "--- started");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let _ = writeln!(file, "{line}");
                lock(&lines).push((Instant::now(), line));
            }
        });
        self.child = Some(child);
        at
    }

    /// SIGKILL; returns the instant just before the signal.
    fn kill(&mut self) -> Instant {
        let at = Instant::now();
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        at
    }

    /// When the first line containing `needle` arrived after `after`.
    fn line_after(&self, after: Instant, needle: &str) -> Option<Instant> {
        lock(&self.lines)
            .iter()
            .find(|(t, l)| *t > after && l.contains(needle))
            .map(|(t, _)| *t)
    }

    /// Waits for such a line; panics (with the log) if the process exits
    /// or nothing comes within `GIVE_UP`.
    async fn wait_line(&mut self, after: Instant, needle: &str) -> Instant {
        let started = Instant::now();
        loop {
            if let Some(t) = self.line_after(after, needle) {
                return t;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                panic!(
                    "replica {} exited ({status}) waiting for {needle:?}:\n{}",
                    self.name,
                    self.tail()
                );
            }
            assert!(
                started.elapsed() < GIVE_UP,
                "replica {}: no {needle:?} within {GIVE_UP:?}:\n{}",
                self.name,
                self.tail()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn tail(&self) -> String {
        let lines = lock(&self.lines);
        let from = lines.len().saturating_sub(30);
        lines[from..]
            .iter()
            .map(|(_, l)| l.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

// === the leader key, watched ===

#[derive(Clone, Debug)]
struct KeyEvent {
    at: Instant,
    put: bool,
    value: String,
}

/// Records every change of the leader key with the instant it was seen.
async fn watch_leader_key(endpoint: String, events: Arc<Mutex<Vec<KeyEvent>>>) {
    let mut c = etcd_client::Client::connect([endpoint], None)
        .await
        .unwrap();
    let mut stream = c.watch(format!("{PREFIX}/leader"), None).await.unwrap();
    while let Ok(Some(resp)) = stream.message().await {
        let at = Instant::now();
        for e in resp.events() {
            lock(&events).push(KeyEvent {
                at,
                put: e.event_type() == EventType::Put,
                value: e
                    .kv()
                    .map(|kv| String::from_utf8_lossy(kv.value()).into_owned())
                    .unwrap_or_default(),
            });
        }
    }
}

// === the failover client ===

#[derive(Clone, Debug)]
struct Granted {
    at: Instant,
    by: String,
    token: u64,
    replayed: bool,
}

fn heartbeat(host: &str) -> pb::HeartbeatRequest {
    pb::HeartbeatRequest {
        host_id: host.into(),
        agent_version: "bench".into(),
        ..Default::default()
    }
}

fn permit(host: &str, request_id: String) -> pb::RequestPermitRequest {
    pb::RequestPermitRequest {
        request_id,
        host_id: host.into(),
        action: pb::Action::RestartJob.into(),
        job: "ingest".into(),
        reason: "bench".into(),
    }
}

fn succeeded(host: &str, p: &pb::Permit) -> pb::ReportOutcomeRequest {
    pb::ReportOutcomeRequest {
        host_id: host.into(),
        permit_id: p.permit_id.clone(),
        fencing_token: p.fencing_token,
        outcome: pb::Outcome::Succeeded.into(),
        detail: "bench".into(),
    }
}

/// An agent that never stops asking, as the agent's own client does it:
/// every `PROBE_EVERY` a heartbeat, then the outcome of the permit it holds
/// (retried until some leader takes it) or a new request. A request
/// without an answer is retried with the same id (idempotent, I7), so a
/// grant whose reply was lost in a kill is replayed, not leaked. Each grant
/// is sent to `tx` with the replica that gave it.
async fn probe(urls: Vec<String>, tx: mpsc::UnboundedSender<Granted>, stop: Arc<AtomicBool>) {
    const HOST: &str = "failover-probe";
    let mut c = Coordinators::new(urls, Duration::from_secs(1), None);
    let mut n = 0u64;
    let mut held: Option<pb::Permit> = None;
    while !stop.load(Ordering::Relaxed) {
        let _ = c
            .call(
                heartbeat(HOST),
                |mut c, r| async move { c.heartbeat(r).await },
            )
            .await;
        if let Some(p) = &held {
            match c
                .call(succeeded(HOST, p), |mut c, r| async move {
                    c.report_outcome(r).await
                })
                .await
            {
                Ok(_) => held = None,
                Err(CallError::Refused(s)) => {
                    eprintln!("outcome of {} refused: {s}", p.permit_id);
                    held = None;
                }
                Err(CallError::Unavailable(_)) => {}
            }
        } else {
            let req = permit(HOST, format!("probe-{n}"));
            match c
                .call(req, |mut c, r| async move { c.request_permit(r).await })
                .await
            {
                Ok(pb::RequestPermitResponse {
                    decision: Some(Decision::Granted(g)),
                }) => {
                    let p = g.permit.unwrap();
                    let _ = tx.send(Granted {
                        at: Instant::now(),
                        by: c.current().to_owned(),
                        token: p.fencing_token,
                        replayed: g.replayed,
                    });
                    held = Some(p);
                    n += 1;
                }
                // Denied (warming up): a new request next time, since a
                // retry of this id would replay the denial.
                Ok(_) => n += 1,
                Err(CallError::Refused(s)) => {
                    eprintln!("request probe-{n} refused: {s}");
                    n += 1;
                }
                Err(CallError::Unavailable(_)) => {}
            }
        }
        tokio::time::sleep(PROBE_EVERY).await;
    }
}

// === phase 1: failover ===

struct Failover {
    total: Duration,
    /// kill -> leader key deleted (lease expired in etcd).
    expiry: Option<Duration>,
    /// deleted -> another replica's key put (follower poll + campaign).
    election: Option<Duration>,
    /// put -> "serving" logged (state loaded, warm-up begins).
    load: Option<Duration>,
    /// serving -> first grant seen (warm-up + the client's next request).
    warmup: Option<Duration>,
    from: char,
    to: char,
    replayed: bool,
}

fn secs(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64())
}

fn opt(d: Option<Duration>) -> String {
    d.map_or_else(|| "    ?".to_owned(), secs)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// A pseudo-random delay in [0, max): where in the leader's keep-alive
/// period the kill lands should vary.
fn jitter(max: Duration, state: &mut u64) -> Duration {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    max.mul_f64((*state % 10_000) as f64 / 10_000.0)
}

/// The grants the failover client reports, each one's fencing token kept
/// in the order they arrive.
struct Grants {
    rx: mpsc::UnboundedReceiver<Granted>,
    seen: Vec<(u64, bool)>,
    /// Which replica gave the latest grant.
    last_by: String,
}

impl Grants {
    async fn next(&mut self, what: &str) -> Granted {
        match tokio::time::timeout(GIVE_UP, self.rx.recv()).await {
            Ok(Some(g)) => {
                self.seen.push((g.token, g.replayed));
                self.last_by.clone_from(&g.by);
                g
            }
            Ok(None) => panic!("the failover client stopped"),
            Err(_) => panic!("no grant within {GIVE_UP:?} ({what})"),
        }
    }

    /// Takes whatever has arrived, without waiting.
    fn drain(&mut self) {
        while let Ok(g) = self.rx.try_recv() {
            self.seen.push((g.token, g.replayed));
            self.last_by = g.by;
        }
    }
}

async fn failover(
    replicas: &mut [Replica],
    endpoint: &str,
    kills: usize,
    grants: &mut Grants,
) -> Vec<Failover> {
    let events: Arc<Mutex<Vec<KeyEvent>>> = Arc::default();
    let watcher = tokio::spawn(watch_leader_key(endpoint.to_owned(), events.clone()));
    let goal = 2 * HEARTBEAT_INTERVAL + LEASE_TTL;
    let mut seed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    let mut results = Vec::new();
    println!(
        "failover under SIGKILL: leader killed -> first grant by another replica; goal \
         2 x heartbeat_interval + lease_ttl = {} s",
        secs(goal)
    );
    println!("  kill  total s  of goal | lease expiry  election  load  warm-up+ask (s) | leader");
    for round in 1..=kills {
        // Steady state: the leader grants, the others follow it.
        let steady_from = Instant::now();
        let mut g = grants.next("steady state").await;
        while g.at < steady_from {
            g = grants.next("steady state").await;
        }
        let leader = replicas
            .iter()
            .position(|r| r.url == g.by)
            .unwrap_or_else(|| panic!("granted by an unknown replica {}", g.by));
        tokio::time::sleep(jitter(Duration::from_secs(1), &mut seed)).await;
        // Grants before the kill are not what is measured.
        grants.drain();

        let killed_at = replicas[leader].kill();
        let first = loop {
            let g = grants.next("after a kill").await;
            if g.at > killed_at && g.by != replicas[leader].url {
                break g;
            }
        };
        let to = replicas.iter().position(|r| r.url == first.by).unwrap();
        let total = first.at - killed_at;

        let (deleted, put) = {
            let ev = lock(&events);
            let deleted = ev.iter().find(|e| e.at > killed_at && !e.put).map(|e| e.at);
            let put = deleted.and_then(|d| {
                ev.iter()
                    .find(|e| e.at >= d && e.put && e.value == first.by)
                    .map(|e| e.at)
            });
            (deleted, put)
        };
        let serving = replicas[to].line_after(killed_at, "medic coordinator serving");
        let f = Failover {
            total,
            expiry: deleted.map(|d| d - killed_at),
            election: deleted
                .zip(put)
                .map(|(d, p)| p.saturating_duration_since(d)),
            load: put
                .zip(serving)
                .map(|(p, s)| s.saturating_duration_since(p)),
            warmup: serving.map(|s| first.at.saturating_duration_since(s)),
            from: replicas[leader].name,
            to: replicas[to].name,
            replayed: first.replayed,
        };
        println!(
            "  {round:>4}  {:>7}  {:>7.2} | {:>12}  {:>8}  {:>4}  {:>11}     | {} -> {}{}",
            secs(f.total),
            f.total.as_secs_f64() / goal.as_secs_f64(),
            opt(f.expiry),
            opt(f.election),
            opt(f.load),
            opt(f.warmup),
            f.from,
            f.to,
            if f.replayed {
                " (a grant replayed)"
            } else {
                ""
            }
        );
        results.push(f);

        // The killed replica comes back (as systemd would restart it) and
        // must follow the new leader before the next kill.
        let restarted = replicas[leader].spawn();
        replicas[leader]
            .wait_line(restarted, "following leader=Some")
            .await;
    }
    watcher.abort();

    // Fencing tokens the client saw, in the order it saw them: a replayed
    // grant repeats an earlier token; a fresh one exceeds them all (I5).
    let mut max = 0;
    let mut out_of_order = 0;
    for &(token, replayed) in &grants.seen {
        if !replayed && token <= max {
            out_of_order += 1;
        }
        max = max.max(token);
    }
    println!(
        "  {} grants seen by the client across {} leaders; fresh grants whose fencing token \
         did not exceed every earlier one: {out_of_order}",
        grants.seen.len(),
        kills + 1
    );
    results
}

fn summarize(results: &[Failover]) {
    let goal = 2 * HEARTBEAT_INTERVAL + LEASE_TTL;
    let mut totals: Vec<Duration> = results.iter().map(|f| f.total).collect();
    totals.sort();
    let row = |label: &str, d: Duration| {
        format!(
            "{label} {} s ({:.2} of goal)",
            secs(d),
            d.as_secs_f64() / goal.as_secs_f64()
        )
    };
    println!(
        "  {} kills: {}, {}, {}, {}; {} of {} within the goal",
        results.len(),
        row("min", totals[0]),
        row("p50", percentile(&totals, 0.5)),
        row("p90", percentile(&totals, 0.9)),
        row("max", totals[totals.len() - 1]),
        totals.iter().filter(|t| **t <= goal).count(),
        totals.len()
    );
    let part = |f: fn(&Failover) -> Option<Duration>| {
        let mut v: Vec<Duration> = results.iter().filter_map(f).collect();
        v.sort();
        if v.is_empty() {
            return "?".to_owned();
        }
        format!(
            "p50 {} (min {}, max {})",
            secs(percentile(&v, 0.5)),
            secs(v[0]),
            secs(v[v.len() - 1])
        )
    };
    println!("  where the time goes (s):");
    println!(
        "    lease expiry (kill -> etcd deletes the leader key)    {}",
        part(|f| f.expiry)
    );
    println!(
        "    election (key deleted -> a follower's key put)       {}",
        part(|f| f.election)
    );
    println!(
        "    load (key put -> \"serving\" logged, state loaded)     {}",
        part(|f| f.load)
    );
    println!(
        "    warm-up + next request (serving -> first grant)       {}",
        part(|f| f.warmup)
    );
}

// === phase 2: throughput ===

struct Rate {
    ops: u64,
    secs: f64,
    p50: Duration,
    p99: Duration,
    /// Failed compare-and-swaps, for the baseline.
    conflicts: u64,
    /// Successful compare-and-swaps, for the baseline.
    swaps: u64,
}

impl Rate {
    fn per_sec(&self) -> f64 {
        self.ops as f64 / self.secs
    }
}

/// Runs one worker per element of `workers` for `length`; each returns
/// (latencies of its completed ops, conflicts, swaps).
async fn timed<F, Fut>(k: usize, length: Duration, work: F) -> Rate
where
    F: Fn(usize, Arc<AtomicBool>, Arc<tokio::sync::Barrier>) -> Fut,
    Fut: std::future::Future<Output = (Vec<Duration>, u64, u64)> + Send + 'static,
{
    let stop = Arc::new(AtomicBool::new(false));
    let ready = Arc::new(tokio::sync::Barrier::new(k + 1));
    let tasks: Vec<_> = (0..k)
        .map(|i| tokio::spawn(work(i, stop.clone(), ready.clone())))
        .collect();
    ready.wait().await;
    let started = Instant::now();
    tokio::time::sleep(length).await;
    stop.store(true, Ordering::Relaxed);
    let (mut lat, mut conflicts, mut swaps) = (Vec::new(), 0, 0);
    for t in tasks {
        let (l, c, s) = t.await.unwrap();
        lat.extend(l);
        conflicts += c;
        swaps += s;
    }
    let secs = started.elapsed().as_secs_f64();
    lat.sort();
    Rate {
        ops: lat.len() as u64,
        secs,
        p50: percentile(&lat, 0.5),
        p99: percentile(&lat, 0.99),
        conflicts,
        swaps,
    }
}

async fn connect(url: &str) -> Channel {
    Channel::from_shared(url.to_owned())
        .unwrap()
        .tcp_nodelay(true)
        .connect()
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {url}: {e}"))
}

/// (a) K agents, each its own host and connection: grant, then outcome.
async fn coordinator(leader: &str, k: usize, length: Duration) -> Rate {
    let leader = leader.to_owned();
    timed(k, length, move |i, stop, ready| {
        let leader = leader.clone();
        async move {
            let host = format!("tp-{k}-{i}");
            let mut a = pb::remediation_client::RemediationClient::new(connect(&leader).await);
            a.heartbeat(heartbeat(&host)).await.unwrap();
            ready.wait().await;
            let mut lat = Vec::new();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let r = a
                    .request_permit(permit(&host, format!("{host}-{n}")))
                    .await
                    .unwrap()
                    .into_inner();
                n += 1;
                let p = match r.decision {
                    Some(Decision::Granted(g)) => g.permit.unwrap(),
                    other => panic!("{host}: not granted: {other:?}"),
                };
                a.report_outcome(succeeded(&host, &p)).await.unwrap();
                lat.push(t.elapsed());
            }
            (lat, 0, 0)
        }
    })
    .await
}

/// The semaphore document, as locksmith and airlock keep it.
#[derive(Debug, Serialize, Deserialize)]
struct Semaphore {
    semaphore: u64,
    max: u64,
    holders: Vec<String>,
}

/// One compare-and-swap on the semaphore key, retried until it applies:
/// read the document and its mod_revision, change it, write it only if
/// the key is unchanged. Returns the failed attempts.
async fn swap(c: &mut etcd_client::Client, change: impl Fn(&mut Semaphore)) -> u64 {
    let mut conflicts = 0;
    loop {
        let r = c.get(SEMAPHORE_KEY, None).await.unwrap();
        let kv = &r.kvs()[0];
        let mut sem: Semaphore = serde_json::from_slice(kv.value()).unwrap();
        change(&mut sem);
        let txn = Txn::new()
            .when([Compare::mod_revision(
                SEMAPHORE_KEY,
                CompareOp::Equal,
                kv.mod_revision(),
            )])
            .and_then([TxnOp::put(
                SEMAPHORE_KEY,
                serde_json::to_vec(&sem).unwrap(),
                None,
            )]);
        if c.txn(txn).await.unwrap().succeeded() {
            return conflicts;
        }
        conflicts += 1;
    }
}

async fn etcd_client(endpoint: &str) -> etcd_client::Client {
    etcd_client::Client::connect([endpoint], None)
        .await
        .unwrap()
}

/// (b) K workers, each its own etcd connection, taking a slot of the one
/// semaphore and giving it back.
async fn airlock(endpoint: &str, k: usize, length: Duration) -> Rate {
    let mut c = etcd_client(endpoint).await;
    let empty = Semaphore {
        semaphore: SEMAPHORE_SLOTS,
        max: SEMAPHORE_SLOTS,
        holders: Vec::new(),
    };
    c.put(SEMAPHORE_KEY, serde_json::to_vec(&empty).unwrap(), None)
        .await
        .unwrap();
    let endpoint = endpoint.to_owned();
    timed(k, length, move |i, stop, ready| {
        let endpoint = endpoint.clone();
        async move {
            let me = format!("airlock-{k}-{i}");
            let mut c = etcd_client(&endpoint).await;
            ready.wait().await;
            let (mut lat, mut conflicts, mut swaps) = (Vec::new(), 0, 0);
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                conflicts += swap(&mut c, |s| {
                    assert!(s.semaphore > 0, "the semaphore ran out of slots");
                    if !s.holders.contains(&me) {
                        s.semaphore -= 1;
                        s.holders.push(me.clone());
                    }
                })
                .await;
                conflicts += swap(&mut c, |s| {
                    if let Some(at) = s.holders.iter().position(|h| *h == me) {
                        s.holders.swap_remove(at);
                        s.semaphore += 1;
                    }
                })
                .await;
                swaps += 2;
                lat.push(t.elapsed());
            }
            (lat, conflicts, swaps)
        }
    })
    .await
}

/// (c) K workers each putting its own key: etcd's durable write floor.
async fn floor(endpoint: &str, k: usize, length: Duration) -> Rate {
    let endpoint = endpoint.to_owned();
    timed(k, length, move |i, stop, ready| {
        let endpoint = endpoint.clone();
        async move {
            let key = format!("/floor/{k}/{i}");
            let mut c = etcd_client(&endpoint).await;
            ready.wait().await;
            let mut lat = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                c.put(key.as_str(), "x", None).await.unwrap();
                lat.push(t.elapsed());
            }
            (lat, 0, 0)
        }
    })
    .await
}

async fn throughput(leader: &str, endpoint: &str, clients: &[usize], length: Duration) {
    println!(
        "throughput, same etcd, {} s per measurement; (a) the coordinator: grant + outcome per op; \
         (b) airlock-style CAS on one key: acquire + release per op; (c) one put per op",
        length.as_secs()
    );
    println!(
        "     K | (a) grants/s    p50 ms   p99 ms | (b) acq/s    p50 ms   p99 ms  conflicts | \
         (c) puts/s | a/b     a/(c/2)  b/(c/2)"
    );
    for &k in clients {
        let a = coordinator(leader, k, length).await;
        let b = airlock(endpoint, k, length).await;
        let c = floor(endpoint, k, length).await;
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let conflict_rate = b.conflicts as f64 / (b.conflicts + b.swaps).max(1) as f64;
        // A grant cycle and an airlock cycle each make two durable writes.
        let pair = c.per_sec() / 2.0;
        println!(
            "  {k:>4} | {:>12.0}  {:>8.2} {:>8.2} | {:>9.0}  {:>8.2} {:>8.2}  {:>8.1}% | {:>10.0} | {:>5.2}  {:>7.2}  {:>7.2}",
            a.per_sec(),
            ms(a.p50),
            ms(a.p99),
            b.per_sec(),
            ms(b.p50),
            ms(b.p99),
            conflict_rate * 100.0,
            c.per_sec(),
            a.per_sec() / b.per_sec(),
            a.per_sec() / pair,
            b.per_sec() / pair,
        );
    }
}

// === main ===

struct Args {
    kills: usize,
    seconds: u64,
    clients: Vec<usize>,
}

fn args() -> Option<Args> {
    let args: Vec<String> = std::env::args().collect();
    // `cargo bench` passes --bench; `cargo test --benches` would run us
    // too: only run when benchmarking.
    if !args.iter().any(|a| a == "--bench") {
        return None;
    }
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    Some(Args {
        kills: value("--kills").map_or(20, |v| v.parse().unwrap()),
        seconds: value("--seconds").map_or(10, |v| v.parse().unwrap()),
        clients: value("--clients").map_or_else(
            || vec![1, 8, 32],
            |v| v.split(',').map(|k| k.trim().parse().unwrap()).collect(),
        ),
    })
}

fn etcd_version() -> String {
    let bin = std::env::var("MEDIC_ETCD_BIN").unwrap_or_else(|_| "etcd".to_owned());
    Command::new(bin)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(str::to_owned))
        .unwrap_or_default()
}

fn main() {
    let Some(args) = args() else { return };
    let Some(server) = EtcdServer::start() else {
        return;
    };
    let dir = tempfile::Builder::new()
        .prefix("medic-ha-bench")
        .tempdir()
        .unwrap();
    let ports: Vec<(u16, u16)> = (0..REPLICAS).map(|_| (free_port(), free_port())).collect();
    let configs = write_configs(dir.path(), &server.endpoint, &ports);
    let mut replicas: Vec<Replica> = configs
        .into_iter()
        .zip(&ports)
        .enumerate()
        .map(|(i, (config, &(grpc, _)))| Replica::new(i, config, grpc, dir.path()))
        .collect();
    println!(
        "{} on loopback (one member, data on this machine's disk); {REPLICAS} replicas of the \
         release binary as child processes; lease_ttl {} s, heartbeat_interval {} s, warmup {} s, \
         tick 100 ms; logs in {} (kept if the run fails)",
        etcd_version(),
        LEASE_TTL.as_secs(),
        HEARTBEAT_INTERVAL.as_secs(),
        WARMUP.as_secs(),
        dir.path().display()
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rt.block_on(async {
            for r in &mut replicas {
                r.spawn();
            }
            let stop = Arc::new(AtomicBool::new(false));
            let (tx, rx) = mpsc::unbounded_channel();
            let mut grants = Grants {
                rx,
                seen: Vec::new(),
                last_by: String::new(),
            };
            let prober = tokio::spawn(probe(
                replicas.iter().map(|r| r.url.clone()).collect(),
                tx,
                stop.clone(),
            ));
            grants.next("first election").await;
            if args.kills > 0 {
                let results =
                    failover(&mut replicas, &server.endpoint, args.kills, &mut grants).await;
                summarize(&results);
            }
            stop.store(true, Ordering::Relaxed);
            prober.await.unwrap();
            grants.drain();
            let leader = grants.last_by.clone();
            if args.seconds > 0 {
                throughput(
                    &leader,
                    &server.endpoint,
                    &args.clients,
                    Duration::from_secs(args.seconds),
                )
                .await;
            }
        });
    }));
    if let Err(panic) = result {
        for r in &replicas {
            eprintln!(
                "--- replica {} ({}), last lines:\n{}",
                r.name,
                r.log.display(),
                r.tail()
            );
        }
        drop(replicas);
        let _ = dir.keep();
        std::panic::resume_unwind(panic);
    }
}
