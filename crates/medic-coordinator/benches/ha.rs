//! High availability on etcd (issue 9), in one run against one throwaway
//! etcd on loopback:
//!
//! 1. failover under SIGKILL: three replicas of the real binary as child
//!    processes (`lease_ttl` 2 s); a client heartbeats and asks for permits
//!    (and reports each outcome) every 20 ms through the agent's own
//!    client, which follows leader redirects; the leader is SIGKILLed at a
//!    random moment and the time from the kill to the first grant by
//!    another replica is measured, `--kills` times (the killed replica is
//!    restarted after each and rejoins as a follower). Each failover is
//!    split into lease expiry (etcd deleting the leader key, seen through a
//!    watch), election (another replica's key put), load (its "serving" log
//!    line) and warm-up plus the client's next request;
//! 2. grant throughput, same etcd, same run, for K concurrent clients each,
//!    on a fresh deployment per K (three replicas, the default `lease_ttl`
//!    of 10 s): (a) the coordinator: RequestPermit then
//!    ReportOutcome(success) in a loop, one host per client, caps too high
//!    to deny; (b) the airlock-style baseline: K workers taking and
//!    releasing one semaphore key in etcd by compare-and-swap (read value
//!    and mod_revision, txn comparing it, put with the holder added or
//!    removed, retry on conflict); (c) the floor: K workers each putting
//!    their own key, one put per op. Then the leader of that deployment is
//!    SIGKILLed once more: a failover with the state the phase left.
//!
//! Run: `cargo bench -p medic-coordinator --features etcd --bench ha`
//! (add `-- --kills N` to change the number of kills, default 20, 0 skips
//! phase 1; `--seconds S` the length of each throughput measurement,
//! default 10, 0 skips phase 2; `--clients 1,8,32` the values of K).
//!
//! With `--cluster`, etcd is three members on loopback instead of one, and
//! every replica lists all three: both phases run with all members up,
//! then again, in the same run, with the first listed member SIGKILLed (a
//! minority lost; every replica's requests start at that member and must
//! move on to the next).
//! Needs `etcd` on the PATH (or `MEDIC_ETCD_BIN`). Every child process is
//! killed on exit, on a panic, and on SIGINT or SIGTERM; the replicas' logs
//! are kept when the run fails.

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

use etcd::{EtcdCluster, EtcdServer};
use medic_client::{Client, Endpoints, Settings};
use medic_proto::pb::v1 as pb;
use medic_store::etcd_client::{self, Compare, CompareOp, EventType, Txn, TxnOp};
use pb::request_permit_response::Decision;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tonic::transport::Channel;

const EXE: &str = env!("CARGO_BIN_EXE_medic-coordinator");
const REPLICAS: usize = 3;
/// The failover phase's lease: the shortest etcd grants with its default
/// election timeout.
const LEASE_TTL: Duration = Duration::from_secs(2);
/// The throughput phase's lease: the default.
const THROUGHPUT_LEASE_TTL: Duration = Duration::from_secs(10);
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
const WARMUP: Duration = Duration::from_secs(1);
/// How often the failover client heartbeats and asks.
const PROBE_EVERY: Duration = Duration::from_millis(20);
/// Waiting longer than this (past a lease) means a broken run or a failed
/// failover, not a slow one.
const GIVE_UP: Duration = Duration::from_secs(30);
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
fn replica_toml(
    endpoint: &str,
    prefix: &str,
    lease_ttl: Duration,
    grpc: u16,
    metrics: u16,
) -> String {
    format!(
        r#"[server]
listen = "127.0.0.1:{grpc}"
metrics_listen = "127.0.0.1:{metrics}"
tick_interval = "100ms"
admission = {{ per_second = 1000000, burst = 1000000 }}

[store]
kind = "etcd"
endpoints = [{endpoints}]
prefix = "{prefix}"
lease_ttl = "{lease}s"
advertise = "http://127.0.0.1:{grpc}"
"#,
        lease = lease_ttl.as_secs(),
        endpoints = endpoint
            .split(',')
            .map(|e| format!("{e:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// The fleet-wide policy, pushed to etcd once for every replica: caps,
/// rates and budgets far above anything the bench asks for, so no request
/// is denied once the warm-up is over. Everything else is the default
/// (idempotency retention 24 h, a snapshot every 10,000 entries).
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

fn name(i: usize) -> char {
    char::from(b'a' + u8::try_from(i).unwrap())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

// === a deployment: replicas on one prefix ===

/// Replicas of one fleet (one etcd prefix), with the changes of their
/// leader key as a watch saw them.
struct Deployment {
    prefix: String,
    lease_ttl: Duration,
    replicas: Vec<Replica>,
    events: Arc<Mutex<Vec<KeyEvent>>>,
    watcher: tokio::task::JoinHandle<()>,
}

impl Deployment {
    /// Writes every replica's file and pushes the fleet-wide policy to etcd
    /// with the binary's `config push`, as an operator would; starts
    /// watching the leader key, then the replicas.
    async fn start(dir: &Path, endpoint: &str, prefix: &str, lease_ttl: Duration) -> Deployment {
        let dir = dir.join(prefix.trim_start_matches('/').replace('/', "-"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut replicas = Vec::new();
        for i in 0..REPLICAS {
            let (grpc, metrics) = (free_port(), free_port());
            let config = dir.join(format!("replica-{}.toml", name(i)));
            std::fs::write(
                &config,
                replica_toml(endpoint, prefix, lease_ttl, grpc, metrics),
            )
            .unwrap();
            replicas.push(Replica::new(i, config, grpc, &dir));
        }
        let fleet = dir.join("fleet.toml");
        std::fs::write(&fleet, fleet_toml()).unwrap();
        let push = Command::new(EXE)
            .args(["config", "push", "--init", "--config"])
            .arg(&replicas[0].config)
            .arg(&fleet)
            .output();
        let out = push.unwrap_or_else(|e| panic!("cannot run {EXE} config push: {e}"));
        assert!(
            out.status.success(),
            "config push failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let events: Arc<Mutex<Vec<KeyEvent>>> = Arc::default();
        let (watching, ready) = tokio::sync::oneshot::channel();
        let watcher = tokio::spawn(watch_leader_key(
            endpoint.to_owned(),
            format!("{prefix}/leader"),
            events.clone(),
            watching,
        ));
        let _ = ready.await;
        for r in &mut replicas {
            r.spawn();
        }
        Deployment {
            prefix: prefix.to_owned(),
            lease_ttl,
            replicas,
            events,
            watcher,
        }
    }

    fn urls(&self) -> Vec<String> {
        self.replicas.iter().map(|r| r.url.clone()).collect()
    }

    /// Leader-key deletions (lease ends) seen between `from` and `to`.
    fn leader_losses(&self, from: Instant, to: Instant) -> usize {
        lock(&self.events)
            .iter()
            .filter(|e| !e.put && e.at >= from && e.at <= to)
            .count()
    }

    /// The last error line of each replica that logged one.
    fn errors(&self) -> Vec<String> {
        self.replicas
            .iter()
            .filter_map(|r| {
                lock(&r.lines)
                    .iter()
                    .rev()
                    .find(|(_, l)| l.contains(" ERROR "))
                    .map(|(_, l)| format!("{}: {l}", r.name))
            })
            .collect()
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        self.watcher.abort();
        // The replicas kill themselves as they drop.
    }
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

/// Records every change of `key` with the instant it was seen; says on
/// `watching` once the watch is in place.
async fn watch_leader_key(
    endpoint: String,
    key: String,
    events: Arc<Mutex<Vec<KeyEvent>>>,
    watching: tokio::sync::oneshot::Sender<()>,
) {
    let mut c = etcd_client(&endpoint).await;
    let mut stream = c.watch(key, None).await.unwrap();
    let _ = watching.send(());
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
        dry_run: false,
        request_id,
        host_id: host.into(),
        action: pb::Action::RestartJob.into(),
        action_name: String::new(),
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

/// A request as medic's type, for [`Client`].
fn domain<W, D: TryFrom<W, Error = medic_policy::InvalidInput>>(wire: W) -> D {
    D::try_from(wire).unwrap()
}

/// An agent that never stops asking, as the agent's own client does it:
/// every `PROBE_EVERY` a heartbeat, then the outcome of the permit it holds
/// (retried until some leader takes it) or a new request. A request
/// without an answer is retried with the same id (idempotent, I7), so a
/// grant whose reply was lost in a kill is replayed, not leaked. Each grant
/// is sent to `tx` with the replica that gave it.
async fn probe(urls: Vec<String>, tx: mpsc::UnboundedSender<Granted>, stop: Arc<AtomicBool>) {
    const HOST: &str = "failover-probe";
    let c = Client::new(Settings::new(
        Endpoints::new(urls).unwrap(),
        Duration::from_secs(1),
    ))
    .unwrap();
    let mut n = 0u64;
    let mut held: Option<pb::Permit> = None;
    while !stop.load(Ordering::Relaxed) {
        let _ = c.heartbeat(domain(heartbeat(HOST))).await;
        if let Some(p) = &held {
            match c.report_outcome(domain(succeeded(HOST, p))).await {
                Ok(_) => held = None,
                Err(e) if e.is_transient() => {}
                Err(e) => {
                    eprintln!("outcome of {} refused: {e}", p.permit_id);
                    held = None;
                }
            }
        } else {
            let req = permit(HOST, format!("probe-{n}"));
            match c.request_permit(domain(req)).await {
                Ok(medic_policy::Decision::Granted { permit, replayed }) => {
                    let p = pb::Permit::from(permit);
                    let _ = tx.send(Granted {
                        at: Instant::now(),
                        by: c.current(),
                        token: p.fencing_token,
                        replayed,
                    });
                    held = Some(p);
                    n += 1;
                }
                // Denied (warming up): a new request next time, since a
                // retry of this id would replay the denial.
                Ok(medic_policy::Decision::Denied(_) | medic_policy::Decision::Waiting(_)) => {
                    n += 1
                }
                Err(e) if e.is_transient() => {}
                Err(e) => {
                    eprintln!("request probe-{n} refused: {e}");
                    n += 1;
                }
            }
        }
        tokio::time::sleep(PROBE_EVERY).await;
    }
}

/// The failover client running against a deployment, and the grants it
/// reports, each one's fencing token kept in the order they arrive.
struct Prober {
    rx: mpsc::UnboundedReceiver<Granted>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
    seen: Vec<(u64, bool)>,
}

impl Prober {
    fn start(d: &Deployment) -> Prober {
        let (tx, rx) = mpsc::unbounded_channel();
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(probe(d.urls(), tx, stop.clone()));
        Prober {
            rx,
            stop,
            task,
            seen: Vec::new(),
        }
    }

    async fn next(&mut self, within: Duration) -> Result<Granted, String> {
        match tokio::time::timeout(within, self.rx.recv()).await {
            Ok(Some(g)) => {
                self.seen.push((g.token, g.replayed));
                Ok(g)
            }
            Ok(None) => Err("the failover client stopped".to_owned()),
            Err(_) => Err(format!("no grant within {within:?}")),
        }
    }

    /// Takes whatever has arrived, without waiting.
    fn drain(&mut self) {
        while let Ok(g) = self.rx.try_recv() {
            self.seen.push((g.token, g.replayed));
        }
    }

    async fn stop(mut self) -> Vec<(u64, bool)> {
        self.stop.store(true, Ordering::Relaxed);
        (&mut self.task).await.unwrap();
        self.drain();
        self.seen
    }
}

// === failover ===

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

fn seed() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1
}

fn goal(lease_ttl: Duration) -> Duration {
    2 * HEARTBEAT_INTERVAL + lease_ttl
}

/// One failover: waits until the leader grants, SIGKILLs it at a random
/// moment, and times the first grant by another replica. With `restart`,
/// the killed replica is started again and follows before this returns.
/// An error names what the replicas logged when no other replica granted.
async fn failover_once(
    d: &mut Deployment,
    prober: &mut Prober,
    seed: &mut u64,
    restart: bool,
) -> Result<Failover, String> {
    let steady_from = Instant::now();
    let mut g = prober.next(GIVE_UP).await?;
    while g.at < steady_from {
        g = prober.next(GIVE_UP).await?;
    }
    let leader = d
        .replicas
        .iter()
        .position(|r| r.url == g.by)
        .ok_or_else(|| format!("granted by an unknown replica {}", g.by))?;
    tokio::time::sleep(jitter(Duration::from_secs(1), seed)).await;
    // Grants before the kill are not what is measured.
    prober.drain();

    let killed_at = d.replicas[leader].kill();
    let first = loop {
        match prober.next(d.lease_ttl + GIVE_UP).await {
            Ok(g) if g.at > killed_at && g.by != d.replicas[leader].url => break g,
            Ok(_) => {}
            Err(e) => {
                let mut why = format!(
                    "{e} after the kill of {}; the replicas' last errors:",
                    d.replicas[leader].name
                );
                for line in d.errors() {
                    why.push_str("\n      ");
                    why.push_str(&line);
                }
                return Err(why);
            }
        }
    };
    let to = d.replicas.iter().position(|r| r.url == first.by).unwrap();
    let (deleted, put) = {
        let ev = lock(&d.events);
        let deleted = ev.iter().find(|e| e.at > killed_at && !e.put).map(|e| e.at);
        let put = deleted.and_then(|t| {
            ev.iter()
                .find(|e| e.at >= t && e.put && e.value == first.by)
                .map(|e| e.at)
        });
        (deleted, put)
    };
    let serving = d.replicas[to].line_after(killed_at, "medic coordinator serving");
    let f = Failover {
        total: first.at - killed_at,
        expiry: deleted.map(|t| t - killed_at),
        election: deleted
            .zip(put)
            .map(|(t, p)| p.saturating_duration_since(t)),
        load: put
            .zip(serving)
            .map(|(p, s)| s.saturating_duration_since(p)),
        warmup: serving.map(|s| first.at.saturating_duration_since(s)),
        from: d.replicas[leader].name,
        to: d.replicas[to].name,
        replayed: first.replayed,
    };
    if restart {
        // The killed replica comes back (as systemd would restart it) and
        // must follow the new leader before the next kill.
        let restarted = d.replicas[leader].spawn();
        d.replicas[leader]
            .wait_line(restarted, "following leader=Some")
            .await;
    }
    Ok(f)
}

const FAILOVER_HEADER: &str =
    "  kill  total s  of goal | lease expiry  election   load  warm-up+ask (s) | leader";

fn failover_row(label: &str, f: &Failover, goal: Duration) -> String {
    format!(
        "  {label:>4}  {:>7}  {:>7.2} | {:>12}  {:>8}  {:>5}  {:>11}     | {} -> {}{}",
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
    )
}

/// Phase 1.
async fn failovers(dir: &Path, endpoint: &str, kills: usize, label: &str) {
    let mut d =
        Deployment::start(dir, endpoint, &format!("/medic/{label}failover"), LEASE_TTL).await;
    let goal = goal(LEASE_TTL);
    println!(
        "failover under SIGKILL: leader killed -> first grant by another replica; goal \
         2 x heartbeat_interval + lease_ttl = {} s",
        secs(goal)
    );
    println!("{FAILOVER_HEADER}");
    let mut prober = Prober::start(&d);
    prober
        .next(GIVE_UP)
        .await
        .unwrap_or_else(|e| panic!("first election: {e}"));
    let mut seed = seed();
    let mut results = Vec::new();
    for round in 1..=kills {
        let f = failover_once(&mut d, &mut prober, &mut seed, true)
            .await
            .unwrap_or_else(|e| panic!("kill {round}: {e}"));
        println!("{}", failover_row(&round.to_string(), &f, goal));
        results.push(f);
    }
    let seen = prober.stop().await;

    // Fencing tokens the client saw, in the order it saw them: a replayed
    // grant repeats an earlier token; a fresh one exceeds them all (I5).
    let mut max = 0;
    let mut out_of_order = 0;
    for &(token, replayed) in &seen {
        if !replayed && token <= max {
            out_of_order += 1;
        }
        max = max.max(token);
    }
    println!(
        "  {} grants seen by the client across {} leaders; fresh grants whose fencing token \
         did not exceed every earlier one: {out_of_order}",
        seen.len(),
        kills + 1
    );
    summarize(&results, goal);
}

fn summarize(results: &[Failover], goal: Duration) {
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

// === throughput ===

/// What one worker of a throughput measurement did.
#[derive(Default)]
struct Worker {
    /// Latency of each completed op.
    lat: Vec<Duration>,
    /// Failed compare-and-swaps (the baseline).
    conflicts: u64,
    /// Successful compare-and-swaps (the baseline).
    swaps: u64,
    /// Why it stopped early, if it did.
    error: Option<String>,
}

struct Rate {
    ops: u64,
    secs: f64,
    p50: Duration,
    p99: Duration,
    conflicts: u64,
    swaps: u64,
    errors: Vec<String>,
}

impl Rate {
    fn per_sec(&self) -> f64 {
        self.ops as f64 / self.secs
    }
}

/// Runs `k` workers for `length` after all of them are set up. A worker
/// waits on `ready` exactly once, whether its set-up worked or not.
async fn timed<F, Fut>(k: usize, length: Duration, work: F) -> Rate
where
    F: Fn(usize, Arc<AtomicBool>, Arc<tokio::sync::Barrier>) -> Fut,
    Fut: std::future::Future<Output = Worker> + Send + 'static,
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
    let mut all = Worker::default();
    let mut errors = Vec::new();
    for t in tasks {
        let w = t.await.unwrap();
        all.lat.extend(w.lat);
        all.conflicts += w.conflicts;
        all.swaps += w.swaps;
        errors.extend(w.error);
    }
    let secs = started.elapsed().as_secs_f64();
    all.lat.sort();
    Rate {
        ops: all.lat.len() as u64,
        secs,
        p50: percentile(&all.lat, 0.5),
        p99: percentile(&all.lat, 0.99),
        conflicts: all.conflicts,
        swaps: all.swaps,
        errors,
    }
}

/// (a) K agents, each its own host and connection: grant, then outcome.
async fn coordinator(leader: &str, k: usize, length: Duration) -> Rate {
    let leader = leader.to_owned();
    timed(k, length, move |i, stop, ready| {
        let leader = leader.clone();
        async move {
            let host = format!("tp-{k}-{i}");
            let setup = async {
                let ch = Channel::from_shared(leader.clone())
                    .map_err(|e| e.to_string())?
                    .tcp_nodelay(true)
                    .connect()
                    .await
                    .map_err(|e| format!("cannot connect to {leader}: {e}"))?;
                let mut a = pb::remediation_client::RemediationClient::new(ch);
                a.heartbeat(heartbeat(&host))
                    .await
                    .map_err(|e| format!("Heartbeat: {e}"))?;
                Ok::<_, String>(a)
            }
            .await;
            ready.wait().await;
            let mut w = Worker::default();
            let mut a = match setup {
                Ok(a) => a,
                Err(e) => {
                    w.error = Some(e);
                    return w;
                }
            };
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let r = a.request_permit(permit(&host, format!("{host}-{n}"))).await;
                n += 1;
                let p = match r.map(|r| r.into_inner().decision) {
                    Ok(Some(Decision::Granted(g))) => g.permit.unwrap(),
                    Ok(other) => {
                        w.error = Some(format!("{host}: not granted: {other:?}"));
                        break;
                    }
                    Err(s) => {
                        w.error = Some(format!("RequestPermit: {s}"));
                        break;
                    }
                };
                if let Err(s) = a.report_outcome(succeeded(&host, &p)).await {
                    w.error = Some(format!("ReportOutcome: {s}"));
                    break;
                }
                w.lat.push(t.elapsed());
            }
            w
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
async fn swap(
    c: &mut etcd_client::Client,
    change: impl Fn(&mut Semaphore),
) -> Result<u64, etcd_client::Error> {
    let mut conflicts = 0;
    loop {
        let r = c.get(SEMAPHORE_KEY, None).await?;
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
        if c.txn(txn).await?.succeeded() {
            return Ok(conflicts);
        }
        conflicts += 1;
    }
}

/// A client of the first of `endpoints` (comma-separated) that answers:
/// the baselines and the bench's own watch use one live member.
async fn etcd_client(endpoints: &str) -> etcd_client::Client {
    for e in endpoints.split(',') {
        let options = etcd_client::ConnectOptions::new()
            .with_connect_timeout(Duration::from_millis(300))
            .with_timeout(Duration::from_secs(10));
        if let Ok(mut c) = etcd_client::Client::connect([e], Some(options)).await
            && c.get("medic-bench-probe", None).await.is_ok()
        {
            return c;
        }
    }
    let endpoint = endpoints.split(',').next().unwrap_or_default();
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
            let mut w = Worker::default();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let take = swap(&mut c, |s| {
                    assert!(s.semaphore > 0, "the semaphore ran out of slots");
                    if !s.holders.contains(&me) {
                        s.semaphore -= 1;
                        s.holders.push(me.clone());
                    }
                })
                .await;
                let give = match take {
                    Ok(n) => {
                        w.conflicts += n;
                        swap(&mut c, |s| {
                            if let Some(at) = s.holders.iter().position(|h| *h == me) {
                                s.holders.swap_remove(at);
                                s.semaphore += 1;
                            }
                        })
                        .await
                    }
                    Err(e) => Err(e),
                };
                match give {
                    Ok(n) => w.conflicts += n,
                    Err(e) => {
                        w.error = Some(format!("etcd: {e}"));
                        break;
                    }
                }
                w.swaps += 2;
                w.lat.push(t.elapsed());
            }
            w
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
            let mut w = Worker::default();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                if let Err(e) = c.put(key.as_str(), "x", None).await {
                    w.error = Some(format!("etcd: {e}"));
                    break;
                }
                w.lat.push(t.elapsed());
            }
            w
        }
    })
    .await
}

/// Heartbeats and asks through the agent's client until granted (an
/// election and the warm-up passed); returns the replica that granted.
async fn ready_leader(d: &Deployment) -> String {
    let host = "ready-probe";
    let c = Client::new(Settings::new(
        Endpoints::new(d.urls()).unwrap(),
        Duration::from_secs(1),
    ))
    .unwrap();
    let started = Instant::now();
    for n in 0.. {
        let _ = c.heartbeat(domain(heartbeat(host))).await;
        let r = c
            .request_permit(domain(permit(host, format!("ready-{n}"))))
            .await;
        if let Ok(medic_policy::Decision::Granted { permit, .. }) = r {
            let p = pb::Permit::from(permit);
            let _ = c.report_outcome(domain(succeeded(host, &p))).await;
            return c.current();
        }
        assert!(
            started.elapsed() < GIVE_UP,
            "{}: no grant within {GIVE_UP:?}; last: {r:?}; errors: {:?}",
            d.prefix,
            d.errors()
        );
        tokio::time::sleep(PROBE_EVERY).await;
    }
    unreachable!()
}

/// The current snapshot's size in etcd (read key by key: one range over
/// its pieces can exceed a gRPC message) and the log's length.
async fn state_size(endpoint: &str, prefix: &str) -> (usize, u64) {
    #[derive(Deserialize)]
    struct Meta {
        generation: u64,
        chunks: usize,
    }
    let mut c = etcd_client(endpoint).await;
    let get = async |c: &mut etcd_client::Client, key: String| {
        c.get(key, None)
            .await
            .ok()
            .and_then(|r| r.kvs().first().map(|kv| kv.value().to_vec()))
    };
    let last_id = get(&mut c, format!("{prefix}/meta/last_id"))
        .await
        .and_then(|v| String::from_utf8(v).ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let Some(meta) = get(&mut c, format!("{prefix}/meta/snapshot"))
        .await
        .and_then(|v| serde_json::from_slice::<Meta>(&v).ok())
    else {
        return (0, last_id);
    };
    let mut bytes = 0;
    for n in 0..meta.chunks {
        let key = format!("{prefix}/snap/{:020}/{n:06}", meta.generation);
        bytes += get(&mut c, key).await.map_or(0, |v| v.len());
    }
    (bytes, last_id)
}

/// Phase 2.
async fn throughput(dir: &Path, endpoint: &str, clients: &[usize], length: Duration, label: &str) {
    println!(
        "throughput, same etcd, {} s per measurement, a fresh deployment per K (lease_ttl {} s); \
         (a) the coordinator: grant + outcome per op; (b) airlock-style CAS on one key: \
         acquire + release per op; (c) one put per op",
        length.as_secs(),
        THROUGHPUT_LEASE_TTL.as_secs()
    );
    println!(
        "     K | (a) grants/s    p50 ms   p99 ms | (b) acq/s    p50 ms   p99 ms  conflicts | \
         (c) puts/s | a/b     a/(c/2)  b/(c/2)"
    );
    let mut after = Vec::new();
    let mut seed = seed();
    for &k in clients {
        let mut d = Deployment::start(
            dir,
            endpoint,
            &format!("/medic/{label}throughput-{k}"),
            THROUGHPUT_LEASE_TTL,
        )
        .await;
        let leader = ready_leader(&d).await;
        let from = Instant::now();
        let a = coordinator(&leader, k, length).await;
        let a_end = Instant::now();
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
        for (what, r) in [("(a)", &a), ("(b)", &b), ("(c)", &c)] {
            if let Some(e) = r.errors.first() {
                println!(
                    "         {what} {} of {k} workers stopped early, after {} ops in all: {e}",
                    r.errors.len(),
                    r.ops
                );
            }
        }
        let losses = d.leader_losses(from, Instant::now());
        if losses > 0 {
            println!(
                "         the leader's key was deleted {losses} time(s) during the measurements \
                 ({} during (a)); replicas' last errors: {:?}",
                d.leader_losses(from, a_end),
                d.errors()
            );
        }

        // What a failover costs with the state this left behind.
        let (snapshot, entries) = state_size(endpoint, &d.prefix).await;
        let mut prober = Prober::start(&d);
        let f = failover_once(&mut d, &mut prober, &mut seed, false).await;
        prober.stop().await;
        after.push((k, a.ops, snapshot, entries, f));
    }
    let goal = goal(THROUGHPUT_LEASE_TTL);
    println!(
        "failover under SIGKILL after each throughput deployment, with the state it left \
         (goal {} s):",
        secs(goal)
    );
    println!("{FAILOVER_HEADER}");
    for (k, grants, snapshot, entries, f) in after {
        let snapshot = if snapshot == 0 {
            "no snapshot yet".to_owned()
        } else {
            format!("snapshot {:.1} MB", snapshot as f64 / 1e6)
        };
        println!("  K={k}: {grants} grants in (a); {snapshot}, log {entries} entries");
        match f {
            Ok(f) => println!("{}", failover_row("", &f, goal)),
            Err(e) => println!("        FAILED: {e}"),
        }
    }
}

// === main ===

struct Args {
    cluster: bool,
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
        cluster: args.iter().any(|a| a == "--cluster"),
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

/// SIGINT or SIGTERM.
async fn interrupted() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).unwrap();
    let mut int = signal(SignalKind::interrupt()).unwrap();
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// etcd for the run: one member, or three ([`Args::cluster`]).
enum Etcd {
    One(EtcdServer),
    Three(EtcdCluster),
}

impl Etcd {
    fn endpoints(&self) -> String {
        match self {
            Etcd::One(s) => s.endpoint.clone(),
            Etcd::Three(c) => c.endpoints().join(","),
        }
    }
}

/// Both phases against `endpoints`, their deployments' prefixes under
/// `label`.
async fn phases(dir: &Path, endpoints: &str, args: &Args, label: &str) {
    if args.kills > 0 {
        failovers(dir, endpoints, args.kills, label).await;
    }
    if args.seconds > 0 {
        throughput(
            dir,
            endpoints,
            &args.clients,
            Duration::from_secs(args.seconds),
            label,
        )
        .await;
    }
}

fn main() {
    let Some(args) = args() else { return };
    let started = if args.cluster {
        EtcdCluster::start().map(Etcd::Three)
    } else {
        EtcdServer::start().map(Etcd::One)
    };
    let Some(mut server) = started else {
        return;
    };
    let dir = tempfile::Builder::new()
        .prefix("medic-ha-bench")
        .tempdir()
        .unwrap();
    println!(
        "{} on loopback ({}, data on this machine's disk); {REPLICAS} replicas of the \
         release binary as child processes; heartbeat_interval {} s, warmup {} s, tick 100 ms; \
         logs in {} (kept if the run fails)",
        etcd_version(),
        if args.cluster {
            "three members"
        } else {
            "one member"
        },
        HEARTBEAT_INTERVAL.as_secs(),
        WARMUP.as_secs(),
        dir.path().display()
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    // Every deployment lives inside this future: a panic unwinds through
    // it and an interruption drops it, and either way the replicas are
    // killed as they drop; etcd goes when `server` drops.
    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rt.block_on(async {
            let all = async {
                let endpoints = server.endpoints();
                if !args.cluster {
                    phases(dir.path(), &endpoints, &args, "").await;
                    return;
                }
                println!("== all three etcd members up");
                phases(dir.path(), &endpoints, &args, "up-").await;
                if let Etcd::Three(c) = &mut server {
                    c.kill(0);
                }
                println!(
                    "== etcd member 0 SIGKILLed (the first endpoint every replica lists); \
                     two of three up"
                );
                phases(dir.path(), &endpoints, &args, "down-").await;
            };
            tokio::select! {
                () = all => true,
                () = interrupted() => false,
            }
        })
    }));
    match run {
        Ok(true) => {}
        Ok(false) => {
            eprintln!("interrupted: replicas and etcd stopped");
            drop(server);
            std::process::exit(130);
        }
        Err(panic) => {
            eprintln!("logs kept in {}", dir.keep().display());
            drop(server);
            std::panic::resume_unwind(panic);
        }
    }
}
