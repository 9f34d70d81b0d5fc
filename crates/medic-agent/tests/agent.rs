//! The agent end to end with real processes and an in-process coordinator:
//! a job frozen with SIGSTOP is detected, restarted after a grant, and
//! verified healthy; denied, it is left alone; with no coordinator nothing
//! is touched; the ladder climbs to a reboot that survives the agent's stop.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use medic_agent::{Agent, AgentConfig, Control, Environment};
use medic_coordinator::testing::LiveServer;
use medic_proto::pb::v1 as pb;
use tokio::sync::mpsc;

const COORDINATOR: &str = r#"
[server]
admission = { per_second = 1000, burst = 1000 }
[fleet]
heartbeat_interval = "1s"
host_ttl = "5s"
warmup = "1s"
[breaker]
unhealthy_percent = 100
failure_percent = 100
[limits.restart_job]
max_in_flight = 10
permit_ttl = "30s"
cooldown = "0s"
[limits.reboot_host]
max_in_flight = 10
permit_ttl = "60s"
cooldown = "0s"
"#;

/// The in-process coordinator and its state directory.
struct Coordinator {
    live: LiveServer,
    _dir: tempfile::TempDir,
}

impl std::ops::Deref for Coordinator {
    type Target = LiveServer;
    fn deref(&self) -> &LiveServer {
        &self.live
    }
}

impl Coordinator {
    async fn stop(self) {
        self.live.stop().await;
    }
}

async fn coordinator(extra: &str) -> Coordinator {
    let dir = tempfile::tempdir().unwrap();
    let live = LiveServer::start(&format!("{COORDINATOR}{extra}"), dir.path()).await;
    Coordinator { live, _dir: dir }
}

/// A job: a shell loop that writes its pid and touches a heartbeat file.
struct Job {
    dir: PathBuf,
}

impl Job {
    fn new(dir: &Path) -> Self {
        let script = dir.join("job.sh");
        std::fs::write(
            &script,
            format!(
                "echo $$ > {pid}\nwhile true; do touch {hb}; sleep 0.1; done\n",
                pid = dir.join("job.pid").display(),
                hb = dir.join("job.hb").display()
            ),
        )
        .unwrap();
        // The restart command starts the job again, detached.
        std::fs::write(
            dir.join("start.sh"),
            format!("nohup sh {} >/dev/null 2>&1 &\n", script.display()),
        )
        .unwrap();
        Self {
            dir: dir.to_owned(),
        }
    }

    fn start(&self) -> i32 {
        let _ = std::fs::remove_file(self.dir.join("job.pid"));
        std::process::Command::new("sh")
            .arg(self.dir.join("start.sh"))
            .status()
            .unwrap();
        self.wait_pid(None)
    }

    fn wait_pid(&self, not: Option<i32>) -> i32 {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(pid) = std::fs::read_to_string(self.dir.join("job.pid"))
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok())
                && Some(pid) != not
                && alive(pid)
            {
                return pid;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the job did not (re)start");
    }

    /// The pid in the pidfile, if it holds one: a restarting job may have
    /// truncated it and not yet written its own.
    fn try_pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.dir.join("job.pid"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    fn pid(&self) -> i32 {
        std::fs::read_to_string(self.dir.join("job.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    /// SIGSTOP, then wait (up to 2 s) until the kernel shows it stopped:
    /// the signal is delivered asynchronously.
    fn freeze(&self) {
        let pid = self.pid();
        signal(pid, "STOP");
        for _ in 0..200 {
            if self.state(pid) == "T" {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn state(&self, pid: i32) -> String {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')
                    .and_then(|(_, r)| r.split_whitespace().next().map(str::to_owned))
            })
            .unwrap_or_default()
    }

    fn kill(&self) {
        signal(self.pid(), "KILL");
    }
}

fn signal(pid: i32, sig: &str) {
    std::process::Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .unwrap();
}

fn alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// The test job with no probation (its own tests set one), `extra_job`
/// added to its process detector.
fn agent_config(dir: &Path, coordinator: &str, extra_job: &str) -> AgentConfig {
    agent_config_with(dir, coordinator, "probation = \"0s\"", extra_job)
}

/// The test job with `job_keys` (hooks, probation) in its `[[jobs]]`
/// table and `extra_job` in its process detector.
fn agent_config_with(
    dir: &Path,
    coordinator: &str,
    job_keys: &str,
    extra_job: &str,
) -> AgentConfig {
    agent_config_laddered(
        dir,
        coordinator,
        "reboot_after_failed_restarts = 1\ngive_up_after_failed_reboots = 1",
        job_keys,
        extra_job,
    )
}

/// The test job with `ladder` (the default ladder's keys, or
/// `[[jobs.ladder]]` rungs), `job_keys` in its `[[jobs]]` table and
/// `extra_job` in its process detector.
fn agent_config_laddered(
    dir: &Path,
    coordinator: &str,
    ladder: &str,
    job_keys: &str,
    extra_job: &str,
) -> AgentConfig {
    AgentConfig::from_toml(&format!(
        r#"
host_id = "h1"
coordinators = ["{coordinator}"]
check_interval = "200ms"
heartbeat_interval = "1s"
request_timeout = "2s"
state_dir = "{state}"
safety_margin = "1s"
reboot_command = ["sleep", "600"]
[labels]
rack = "r1"
[[jobs]]
name = "ingest"
confirm = 2
{ladder}
{job_keys}
[jobs.restart]
signal = "TERM"
grace = "2s"
command = ["sh", "{start}"]
verify_timeout = "3s"
[jobs.heartbeat_file]
path = "{hb}"
stale_after = "1s"
[jobs.process]
pidfile = "{pid}"
{extra_job}
"#,
        state = dir.join("agent-state").display(),
        start = dir.join("start.sh").display(),
        hb = dir.join("job.hb").display(),
        pid = dir.join("job.pid").display(),
    ))
    .unwrap_or_else(|e| panic!("{e}"))
}

fn spawn_agent(config: AgentConfig) -> (mpsc::Sender<Control>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(1);
    let task = tokio::spawn(Agent::new(config, Environment::default()).run(rx));
    (tx, task)
}

/// [`spawn_agent`], with the agent's metrics to watch.
fn spawn_agent_watched(
    config: AgentConfig,
) -> (
    std::sync::Arc<medic_agent::metrics::AgentMetrics>,
    mpsc::Sender<Control>,
    tokio::task::JoinHandle<()>,
) {
    let agent = Agent::new(config, Environment::default());
    let metrics = agent.metrics();
    let (tx, rx) = mpsc::channel(1);
    (metrics, tx, tokio::spawn(agent.run(rx)))
}

async fn history(
    admin: &mut pb::admin_client::AdminClient<tonic::transport::Channel>,
    kind: pb::EventKind,
) -> Vec<pb::Event> {
    admin
        .get_history(pb::GetHistoryRequest {
            kinds: vec![kind.into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events
}

/// How long a condition may take before the test fails. Generous: on a
/// loaded machine the coordinator's fsync alone can stall for seconds, and
/// a passing test never waits for it.
const PATIENCE: Duration = Duration::from_secs(60);

/// A bounded poll: each [`Poll::tick`] waits a little, and fails the test
/// once [`PATIENCE`] has run out waiting for `what`. Tests wait for
/// conditions, never for a fixed time.
struct Poll {
    what: &'static str,
    deadline: Instant,
}

impl Poll {
    fn new(what: &'static str) -> Self {
        Self {
            what,
            deadline: Instant::now() + PATIENCE,
        }
    }

    async fn tick(&self) {
        assert!(
            Instant::now() < self.deadline,
            "timed out waiting for {}",
            self.what
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_for<F: FnMut() -> bool>(what: &'static str, mut f: F) {
    let poll = Poll::new(what);
    while !f() {
        poll.tick().await;
    }
}

/// Waits until the coordinator is past its warm-up and sees host h1 live:
/// from then on a stuck job is granted at once.
async fn warmed_up(admin: &mut pb::admin_client::AdminClient<tonic::transport::Channel>) {
    let poll = Poll::new("the coordinator's warm-up with h1 live");
    loop {
        let status = admin
            .get_status(pb::GetStatusRequest::default())
            .await
            .unwrap()
            .into_inner()
            .status
            .unwrap_or_default();
        if status.warming_up_until.is_none() && status.live_hosts >= 1 {
            return;
        }
        poll.tick().await;
    }
}

/// The first outcome in the coordinator's history, once there is one.
async fn first_outcome(
    admin: &mut pb::admin_client::AdminClient<tonic::transport::Channel>,
) -> pb::Event {
    let poll = Poll::new("an outcome in the coordinator's history");
    loop {
        if let Some(e) = history(admin, pb::EventKind::Outcome)
            .await
            .into_iter()
            .next()
        {
            return e;
        }
        poll.tick().await;
    }
}

/// Waits until the agent has run `n` more check rounds: whatever the round
/// in progress was doing (a heartbeat, then maybe a permit request) has
/// finished.
async fn rounds_later(metrics: &medic_agent::metrics::AgentMetrics, n: u64) {
    let target = metrics.checks.get() + n;
    wait_for("more check rounds", || metrics.checks.get() >= target).await;
}

/// Actions the agent finished, whatever their outcome.
fn actions_finished(metrics: &medic_agent::metrics::AgentMetrics, action: &str) -> u64 {
    ["succeeded", "failed", "aborted", "dry_run"]
        .into_iter()
        .map(|outcome| {
            metrics
                .actions
                .get_or_create(&medic_agent::metrics::ActionLabels {
                    action: action.to_owned(),
                    outcome: outcome.to_owned(),
                })
                .get()
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_job_is_restarted_after_a_grant_and_verified() {
    let dir = tempfile::tempdir().unwrap();
    let job = Job::new(dir.path());
    let first = job.start();
    let c = coordinator("").await;
    let mut admin = c.admin().await;
    let (tx, task) = spawn_agent(agent_config(dir.path(), &format!("http://{}", c.addr), ""));
    warmed_up(&mut admin).await;
    job.freeze();
    assert_eq!(job.state(first), "T");
    wait_for("a restarted job", || {
        job.try_pid().is_some_and(|p| p != first && alive(p))
    })
    .await;
    assert!(
        !alive(first) || job.state(first) == "Z",
        "the frozen job was stopped"
    );
    let e = first_outcome(&mut admin).await;
    let Some(pb::event::Payload::PermitEnded(end)) = e.payload else {
        panic!("{e:?}")
    };
    assert_eq!(end.state(), pb::PermitState::Succeeded, "{end:?}");
    assert_eq!(end.host_id, "h1");
    tx.send(Control::Shutdown).await.unwrap();
    task.await.unwrap();
    job.kill();
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_job_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let job = Job::new(dir.path());
    let pid = job.start();
    let c = coordinator("").await;
    let mut admin = c.admin().await;
    admin
        .pause(pb::PauseRequest {
            scope: None,
            reason: "incident".into(),
            duration: None,
        })
        .await
        .unwrap();
    let agent = Agent::new(
        agent_config(dir.path(), &format!("http://{}", c.addr), ""),
        Environment::default(),
    );
    let metrics = agent.metrics();
    let (tx, rx) = mpsc::channel(1);
    let task = tokio::spawn(agent.run(rx));
    job.freeze();
    // Denied while paused (with no retry_after, so it does not ask again
    // for a minute): the request round is over once the denial is counted.
    wait_for("a denial", || {
        metrics
            .encode()
            .contains("medic_agent_permit_denials_total{reason=\"paused\"}")
    })
    .await;
    assert_eq!(job.state(pid), "T", "a denied agent must not touch the job");
    let text = metrics.encode();
    assert!(
        text.contains("medic_agent_permit_denials_total{reason=\"paused\"}"),
        "{text}"
    );
    assert!(
        text.contains("medic_agent_coordinator_reachable 1"),
        "{text}"
    );
    assert!(text.contains("medic_agent_jobs_stuck 1"), "{text}");
    assert_eq!(job.pid(), pid);
    // Sampled denials are audited without delaying the reply.
    let poll = Poll::new("the denial in the audit history");
    let mut denials = history(&mut admin, pb::EventKind::Deny).await;
    while denials.is_empty() {
        poll.tick().await;
        denials = history(&mut admin, pb::EventKind::Deny).await;
    }
    assert!(!denials.is_empty(), "the agent asked and was denied");
    tx.send(Control::Shutdown).await.unwrap();
    task.await.unwrap();
    job.kill();
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_coordinator_nothing_is_touched() {
    let dir = tempfile::tempdir().unwrap();
    let job = Job::new(dir.path());
    let pid = job.start();
    // A loopback port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut config = agent_config(dir.path(), &url, "");
    config.metrics_listen = Some(port);
    let agent = Agent::new(config, Environment::default());
    let metrics = agent.metrics();
    let (tx, rx) = mpsc::channel(1);
    let task = tokio::spawn(agent.run(rx));
    job.freeze();
    // A second request means the first one failed and nothing was done.
    wait_for("a permit request asked again", || {
        metrics.permit_requests.get() >= 2
    })
    .await;
    assert_eq!(job.state(pid), "T", "no coordinator means no action");
    assert_eq!(job.pid(), pid);
    // Served on the local metrics port: unreachable, counted.
    let text = {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(port).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    };
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    assert!(
        text.contains("medic_agent_coordinator_reachable 0"),
        "{text}"
    );
    assert!(
        !text.contains("medic_agent_coordinator_errors_total 0"),
        "{text}"
    );
    assert!(
        text.contains("medic_agent_permits_granted_total 0"),
        "{text}"
    );
    tx.send(Control::Shutdown).await.unwrap();
    task.await.unwrap();
    job.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_restart_climbs_to_a_reboot_that_is_finished_after_the_agent_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let job = Job::new(dir.path());
    // The restart "fixes" nothing: the command starts nothing.
    std::fs::write(dir.path().join("start.sh"), "true\n").unwrap();
    let c = coordinator("").await;
    let url = format!("http://{}", c.addr);
    // No job running at all: the process detector finds it absent and the
    // heartbeat file missing, past their grace.
    let config = agent_config(dir.path(), &url, "absent_grace = \"1s\"");
    let (_tx, task) = spawn_agent(config.clone());
    let state = dir.path().join("agent-state/state.json");
    wait_for("a reboot recorded as pending", || {
        std::fs::read_to_string(&state).is_ok_and(|s| s.contains("reboot_host"))
    })
    .await;
    // The "reboot": the agent stops abruptly mid-action.
    task.abort();
    let _ = task.await;
    // The host comes back with a healthy job, and a new agent finishes the
    // pending permit from its state file.
    std::fs::write(
        dir.path().join("start.sh"),
        format!(
            "nohup sh {} >/dev/null 2>&1 &\n",
            dir.path().join("job.sh").display()
        ),
    )
    .unwrap();
    job.start();
    let (tx, task) = spawn_agent(config);
    let mut admin = c.admin().await;
    let poll = Poll::new("the reboot's outcome reported after the restart");
    let end = loop {
        let ends = history(&mut admin, pb::EventKind::Outcome).await;
        if let Some(end) = ends.iter().find_map(|e| match &e.payload {
            Some(pb::event::Payload::PermitEnded(end))
                if end.action() == pb::Action::RebootHost =>
            {
                Some(end.clone())
            }
            _ => None,
        }) {
            break end;
        }
        poll.tick().await;
    };
    assert_eq!(end.state(), pb::PermitState::Succeeded, "{end:?}");
    let restarts = history(&mut admin, pb::EventKind::Outcome)
        .await
        .into_iter()
        .filter(|e| matches!(&e.payload, Some(pb::event::Payload::PermitEnded(x)) if x.action() == pb::Action::RestartJob && x.state() == pb::PermitState::Failed))
        .count();
    assert_eq!(restarts, 1, "one failed restart before the reboot");
    // The agent clears the pending permit once the coordinator answered
    // its report, which can be after the outcome shows in the history.
    wait_for("the state file to be saved after the report", || {
        std::fs::read_to_string(&state).is_ok_and(|s| !s.contains("\"pending\": {"))
    })
    .await;
    let saved = std::fs::read_to_string(&state).unwrap();
    assert!(
        !saved.contains("\"pending\": {"),
        "the pending permit is cleared: {saved}"
    );
    tx.send(Control::Shutdown).await.unwrap();
    task.await.unwrap();
    job.kill();
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permit_too_close_to_expiry_by_the_agents_clock_is_not_acted_on() {
    let dir = tempfile::tempdir().unwrap();
    let job = Job::new(dir.path());
    let pid = job.start();
    let c = coordinator("").await;
    // The permit lasts 30s; a 40s safety margin means it can never be
    // acted on: the agent must abort before touching anything.
    let mut config = agent_config(dir.path(), &format!("http://{}", c.addr), "");
    config.safety_margin = Duration::from_secs(40);
    let mut admin = c.admin().await;
    let (tx, task) = spawn_agent(config);
    warmed_up(&mut admin).await;
    job.freeze();
    let e = first_outcome(&mut admin).await;
    let Some(pb::event::Payload::PermitEnded(end)) = e.payload else {
        panic!("{e:?}")
    };
    assert_eq!(end.state(), pb::PermitState::Aborted, "{end:?}");
    assert_eq!(job.state(pid), "T", "the job was not touched");
    assert_eq!(job.pid(), pid);
    tx.send(Control::Shutdown).await.unwrap();
    task.await.unwrap();
    job.kill();
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_agent_asks_for_a_dry_run_permit_and_acts_on_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let job = Job::new(dir.path());
    let pid = job.start();
    let c = coordinator("").await;
    let mut config = agent_config(dir.path(), &format!("http://{}", c.addr), "");
    config.dry_run = true;
    let mut admin = c.admin().await;
    let (tx, task) = spawn_agent(config);
    warmed_up(&mut admin).await;
    job.freeze();
    let e = first_outcome(&mut admin).await;
    let Some(pb::event::Payload::PermitEnded(end)) = e.payload else {
        panic!("{e:?}")
    };
    // The coordinator is in enforce mode, but the agent asked for a dry-run
    // permit: it ends DRY_RUN and spends no real budget.
    assert_eq!(end.state(), pb::PermitState::DryRun);
    assert!(end.detail.contains("dry run: would restart"), "{end:?}");
    let s = admin
        .get_status(pb::GetStatusRequest {})
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    let restart = s
        .actions
        .iter()
        .find(|a| a.action() == pb::Action::RestartJob)
        .unwrap();
    assert_eq!(restart.rate_used, 0, "the real rate budget is whole: {s:?}");
    assert_eq!(job.state(pid), "T", "dry run touches nothing");
    tx.send(Control::Shutdown).await.unwrap();
    task.await.unwrap();
    job.kill();
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_state_file_stops_actions_but_not_heartbeats() {
    let dir = tempfile::tempdir().unwrap();
    let job = Job::new(dir.path());
    let pid = job.start();
    let c = coordinator("").await;
    let config = agent_config(dir.path(), &format!("http://{}", c.addr), "");
    std::fs::create_dir_all(&config.state_dir).unwrap();
    std::fs::write(config.state_dir.join("state.json"), "{ not json").unwrap();
    let agent = Agent::new(config, Environment::default());
    let metrics = agent.metrics();
    let (tx, rx) = mpsc::channel(1);
    let task = tokio::spawn(agent.run(rx));
    job.freeze();
    let mut admin = c.admin().await;
    // The heartbeat that reports the problem is followed, in the same
    // round, by the point where a permit would be asked for.
    let poll = Poll::new("h1 to report its stuck job");
    let hosts = loop {
        let hosts = admin
            .list_hosts(pb::ListHostsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .hosts;
        if hosts
            .iter()
            .any(|h| h.host_id == "h1" && h.live && !h.problems.is_empty())
        {
            break hosts;
        }
        poll.tick().await;
    };
    rounds_later(&metrics, 2).await;
    assert_eq!(job.state(pid), "T", "no action with an unusable state file");
    let h = hosts
        .iter()
        .find(|h| h.host_id == "h1")
        .expect("the agent still heartbeats");
    assert!(h.live);
    assert!(!h.problems.is_empty(), "and reports the stuck job");
    // The operator sees why it does nothing.
    assert!(
        h.state_error.contains("state.json") && h.state_error.contains("unusable"),
        "{h:?}"
    );
    assert!(
        history(&mut admin, pb::EventKind::Grant).await.is_empty(),
        "it never asked"
    );
    tx.send(Control::Shutdown).await.unwrap();
    task.await.unwrap();
    job.kill();
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permit_revoked_before_the_action_is_not_acted_on() {
    let dir = tempfile::tempdir().unwrap();
    // A job whose probe always fails, slowly: the agent's re-check right
    // before acting takes 1.5s, long enough for an operator to revoke.
    let mut job = std::process::Command::new("sleep")
        .arg("300")
        .spawn()
        .unwrap();
    let pid = i32::try_from(job.id()).unwrap();
    std::fs::write(dir.path().join("job.pid"), pid.to_string()).unwrap();
    let c = coordinator("").await;
    let config = AgentConfig::from_toml(&format!(
        r#"
host_id = "h1"
coordinators = ["http://{addr}"]
check_interval = "200ms"
heartbeat_interval = "1s"
state_dir = "{state}"
safety_margin = "1s"
[[jobs]]
name = "slow"
confirm = 1
[jobs.restart]
grace = "1s"
verify_timeout = "2s"
[jobs.probe]
command = ["sh", "-c", "sleep 1.5; exit 1"]
timeout = "5s"
[jobs.process]
pidfile = "{pid}"
"#,
        addr = c.addr,
        state = dir.path().join("agent-state").display(),
        pid = dir.path().join("job.pid").display(),
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    let agent = Agent::new(config, Environment::default());
    let metrics = agent.metrics();
    let (tx, rx) = mpsc::channel(1);
    let task = tokio::spawn(agent.run(rx));
    let mut admin = c.admin().await;
    // Revoke the permit as soon as it is granted.
    let mut revoked = false;
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        let permits = admin
            .list_permits(pb::ListPermitsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .permits;
        if let Some(p) = permits.first() {
            admin
                .revoke_permit(pb::RevokePermitRequest {
                    permit_id: p.permit_id.clone(),
                    reason: "wrong host".into(),
                })
                .await
                .unwrap();
            // And no new grant after it: what happens next is the revoked
            // permit's business alone.
            admin
                .pause(pb::PauseRequest {
                    scope: None,
                    reason: "investigating".into(),
                    duration: None,
                })
                .await
                .unwrap();
            revoked = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(revoked, "a permit was granted");
    // The agent is done with the revoked permit once its action finished.
    wait_for("the revoked permit's action to end", || {
        actions_finished(&metrics, "restart_job") >= 1
    })
    .await;
    // Still sleeping: neither killed (a zombie, since the test is its
    // parent) nor stopped.
    let state = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_default()
        .rsplit_once(')')
        .and_then(|(_, r)| r.split_whitespace().next().map(str::to_owned));
    assert_eq!(
        state.as_deref(),
        Some("S"),
        "the job of a revoked permit was touched"
    );
    tx.send(Control::Shutdown).await.unwrap();
    task.await.unwrap();
    let _ = job.kill();
    let _ = job.wait();
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_mutual_tls_the_agent_is_identified_by_its_certificate() {
    use medic_coordinator::testing::{client_tls, dev_certs, tls_toml};
    let dir = tempfile::tempdir().unwrap();
    let certs = dev_certs(dir.path(), &["h1"]);
    let job = Job::new(dir.path());
    let first = job.start();
    let c = coordinator(&tls_toml(&certs)).await;
    let tls = format!(
        "[tls]\nca = \"{d}/ca.pem\"\ncert = \"{d}/agents/h1.pem\"\nkey = \"{d}/agents/h1.key\"\n",
        d = certs.display()
    );
    let config = agent_config(
        dir.path(),
        &format!("https://localhost:{}", c.addr.port()),
        &tls,
    );
    let channel = tonic::transport::Channel::from_shared(format!("https://{}", c.addr))
        .unwrap()
        .tls_config(client_tls(&certs, Some("operator")))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut admin = pb::admin_client::AdminClient::new(channel);
    let (tx, task) = spawn_agent(config);
    warmed_up(&mut admin).await;
    job.freeze();
    wait_for("a restarted job", || {
        job.try_pid().is_some_and(|p| p != first && alive(p))
    })
    .await;
    let poll = Poll::new("an outcome reported over mutual TLS");
    let e = loop {
        if let Some(e) = history(&mut admin, pb::EventKind::Outcome).await.pop() {
            break e;
        }
        poll.tick().await;
    };
    assert_eq!(e.actor, "host:h1", "{e:?}");
    let Some(pb::event::Payload::PermitEnded(end)) = e.payload else {
        panic!("{e:?}")
    };
    assert_eq!(end.state(), pb::PermitState::Succeeded, "{end:?}");
    // Nothing was refused on the way.
    assert!(history(&mut admin, pb::EventKind::Access).await.is_empty());
    tx.send(Control::Shutdown).await.unwrap();
    task.await.unwrap();
    job.kill();
    c.stop().await;
}

/// A deploy restarts the job and the new process takes 2.5 s to write its
/// first heartbeat: its heartbeat file goes stale and the detector fires,
/// but its process is younger than `start_grace` (4 s), so the agent
/// counts nothing and asks for nothing. Once the job has run past its
/// grace, a freeze is remediated as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_starting_within_its_start_grace_is_left_alone_and_remediated_once_past_it() {
    let dir = tempfile::tempdir().unwrap();
    let job = Job::new(dir.path());
    let first = job.start();
    let c = coordinator("").await;
    let mut admin = c.admin().await;
    let (metrics, tx, task) = spawn_agent_watched(agent_config_with(
        dir.path(),
        &format!("http://{}", c.addr),
        "probation = \"0s\"\nstart_grace = \"4s\"",
        "",
    ));
    warmed_up(&mut admin).await;
    // The deploy: the old process goes, a slow starter takes its place.
    std::fs::write(
        dir.path().join("slow.sh"),
        format!(
            "echo $$ > {pid}\nsleep 2.5\nexec sh {script}\n",
            pid = dir.path().join("job.pid").display(),
            script = dir.path().join("job.sh").display()
        ),
    )
    .unwrap();
    signal(first, "KILL");
    std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "nohup sh {} >/dev/null 2>&1 &",
            dir.path().join("slow.sh").display()
        ))
        .status()
        .unwrap();
    let second = job.wait_pid(Some(first));
    wait_for("the starting job reported", || {
        metrics.jobs_starting.get() == 1
    })
    .await;
    // Through the slow start and past it: nothing asked, nothing granted.
    wait_for("the job healthy after its slow start", || {
        metrics.jobs_starting.get() == 0
    })
    .await;
    rounds_later(&metrics, 3).await;
    assert_eq!(metrics.jobs_stuck.get(), 0);
    assert_eq!(metrics.permit_requests.get(), 0);
    assert!(grants(&mut admin).await.is_empty());
    assert_eq!(job.pid(), second);
    // Past its grace, a frozen job is stuck like any other.
    tokio::time::sleep(Duration::from_secs(2)).await;
    job.freeze();
    let e = first_outcome(&mut admin).await;
    let Some(pb::event::Payload::PermitEnded(end)) = e.payload else {
        panic!("{e:?}")
    };
    assert_eq!(end.state(), pb::PermitState::Succeeded, "{end:?}");
    assert_ne!(job.pid(), second, "restarted");
    tx.send(Control::Shutdown).await.unwrap();
    task.await.unwrap();
    job.kill();
    c.stop().await;
}

/// A job in a crash loop always has a young process, so the grace cannot
/// be judged by the process alone: it covers the first `start_grace` of an
/// alarm, once. Here a supervisor starts a new process every half second
/// that never heartbeats: after the 3 s grace the job is confirmed stuck
/// and a restart is asked for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_looping_job_gets_one_start_grace_per_alarm_then_is_remediated() {
    let dir = tempfile::tempdir().unwrap();
    let job = Job::new(dir.path());
    let first = job.start();
    let c = coordinator("").await;
    let mut admin = c.admin().await;
    let (metrics, tx, task) = spawn_agent_watched(agent_config_with(
        dir.path(),
        &format!("http://{}", c.addr),
        "probation = \"0s\"\nstart_grace = \"3s\"",
        "",
    ));
    warmed_up(&mut admin).await;
    let pidfile = dir.path().join("job.pid");
    let mut looping = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "while true; do sh -c 'echo $$ > {}; exec sleep 0.5'; done",
            pidfile.display()
        ))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    signal(first, "KILL");
    wait_for("the crash-looping job seen starting", || {
        metrics.jobs_starting.get() == 1
    })
    .await;
    wait_for(
        "the crash-looping job confirmed stuck past its grace",
        || metrics.jobs_stuck.get() == 1,
    )
    .await;
    wait_for("a restart asked for", || metrics.permit_requests.get() >= 1).await;
    tx.send(Control::Shutdown).await.unwrap();
    task.await.unwrap();
    let _ = looping.kill();
    let _ = looping.wait();
    // The restart may have started the job again, detached.
    let _ = std::process::Command::new("pkill")
        .arg("-f")
        .arg(dir.path().join("job.sh"))
        .status();
    c.stop().await;
}

/// Freezes the running job `job` (first started as `first`), waits for the
/// agent's restart to end, and returns how the permit ended.
async fn restart_outcome(
    admin: &mut pb::admin_client::AdminClient<tonic::transport::Channel>,
    job: &Job,
) -> pb::event::PermitEnded {
    warmed_up(admin).await;
    job.freeze();
    let e = first_outcome(admin).await;
    let Some(pb::event::Payload::PermitEnded(end)) = e.payload else {
        panic!("{e:?}")
    };
    end
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_command_that_starts_nothing_is_failed_not_succeeded() {
    let dir = tempfile::tempdir().unwrap();
    let job = Job::new(dir.path());
    job.start();
    // The restart stops the frozen job, and its command starts nothing. The
    // heartbeat file is still younger than stale_after and the stale pidfile
    // within absent_grace: both detectors pass, but on evidence from before
    // the restart.
    std::fs::write(dir.path().join("start.sh"), "echo nothing to start\n").unwrap();
    let c = coordinator("").await;
    let mut admin = c.admin().await;
    let (_tx, task) = spawn_agent(agent_config(
        dir.path(),
        &format!("http://{}", c.addr),
        "absent_grace = \"1m\"",
    ));
    let end = restart_outcome(&mut admin, &job).await;
    assert_eq!(end.state(), pb::PermitState::Failed, "{end:?}");
    assert!(
        end.detail.contains("restart command exited with code 0")
            && end.detail.contains("nothing to start"),
        "{}",
        end.detail
    );
    // The ladder now climbs to a reboot, whose command would not return.
    task.abort();
    let _ = task.await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_waits_for_a_heartbeat_written_after_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let job = Job::new(dir.path());
    let first = job.start();
    // The restart command returns at once; the job comes back 1.5 s later.
    std::fs::write(
        dir.path().join("start.sh"),
        format!(
            "nohup sh -c 'sleep 1.5; exec sh {}' >/dev/null 2>&1 &\n",
            dir.path().join("job.sh").display()
        ),
    )
    .unwrap();
    let c = coordinator("").await;
    let mut admin = c.admin().await;
    let (tx, task) = spawn_agent(agent_config(dir.path(), &format!("http://{}", c.addr), ""));
    let end = restart_outcome(&mut admin, &job).await;
    assert_eq!(end.state(), pb::PermitState::Succeeded, "{end:?}");
    // Succeeded only once the new job was running and heartbeating.
    let now = job.try_pid();
    assert!(
        now.is_some_and(|p| p != first && alive(p)),
        "SUCCEEDED before the restarted job ran (pidfile: {now:?})"
    );
    tx.send(Control::Shutdown).await.unwrap();
    task.await.unwrap();
    job.kill();
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_restart_command_gets_the_permit_context_in_its_environment() {
    let dir = tempfile::tempdir().unwrap();
    let job = Job::new(dir.path());
    job.start();
    let env = dir.path().join("env.txt");
    std::fs::write(
        dir.path().join("start.sh"),
        format!(
            "env | grep ^MEDIC_ | sort > {env}\nnohup sh {job} >/dev/null 2>&1 &\n",
            env = env.display(),
            job = dir.path().join("job.sh").display()
        ),
    )
    .unwrap();
    let c = coordinator("").await;
    let mut admin = c.admin().await;
    let (tx, task) = spawn_agent(agent_config(dir.path(), &format!("http://{}", c.addr), ""));
    let end = restart_outcome(&mut admin, &job).await;
    assert_eq!(end.state(), pb::PermitState::Succeeded, "{end:?}");
    let env = std::fs::read_to_string(&env).unwrap();
    for want in [
        "MEDIC_JOB=ingest\n".to_owned(),
        "MEDIC_ACTION=restart_job\n".to_owned(),
        format!("MEDIC_PERMIT_ID={}\n", end.permit_id),
        "MEDIC_DRY_RUN=0\n".to_owned(),
        "MEDIC_FENCING_TOKEN=".to_owned(),
    ] {
        assert!(env.contains(&want), "no {want:?} in:\n{env}");
    }
    assert!(
        env.lines()
            .any(|l| l.starts_with("MEDIC_REASON=") && l.contains("stopped")),
        "no reason naming the stopped job in:\n{env}"
    );
    tx.send(Control::Shutdown).await.unwrap();
    task.await.unwrap();
    job.kill();
    c.stop().await;
}

/// Quarantines for a gave-up job, as the history records them.
async fn gave_up_quarantines(
    admin: &mut pb::admin_client::AdminClient<tonic::transport::Channel>,
) -> usize {
    history(admin, pb::EventKind::Quarantine)
        .await
        .iter()
        .filter(|e| {
            matches!(&e.payload, Some(pb::event::Payload::HostQuarantined(q))
                if q.cause() == pb::QuarantineCause::GaveUp)
        })
        .count()
}

/// A host whose job gave up is quarantined; a person fixes the job by hand
/// and releases the host, and it stays released: the agent stops asking
/// for a human, with nothing deleted by hand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_fixed_by_hand_and_released_stays_released() {
    let dir = tempfile::tempdir().unwrap();
    let job = Job::new(dir.path());
    // The job gave up before this agent started: its ladder is exhausted.
    let state_dir = dir.path().join("agent-state");
    std::fs::create_dir_all(&state_dir).unwrap();
    std::fs::write(
        state_dir.join("state.json"),
        r#"{"version":1,"jobs":{"ingest":{"failed_restarts":1,"failed_reboots":1,
            "gave_up":"ladder exhausted: 1 restart and 1 reboot did not fix it"}},
            "pending":null}"#,
    )
    .unwrap();
    let c = coordinator("").await;
    let mut admin = c.admin().await;
    let config = agent_config(
        dir.path(),
        &format!("http://{}", c.addr),
        "absent_grace = \"1s\"",
    );
    let (tx, task) = spawn_agent(config);
    let poll = Poll::new("the host quarantined because its job gave up");
    while gave_up_quarantines(&mut admin).await == 0 {
        poll.tick().await;
    }

    // Fixed by hand, then released.
    job.start();
    let mut req = tonic::Request::new(pb::UnquarantineRequest {
        host_id: "h1".into(),
        reason: "fixed the job by hand".into(),
    });
    req.metadata_mut()
        .insert("medic-actor", "alice".parse().unwrap());
    admin.unquarantine(req).await.unwrap();

    // Several heartbeats later it is still released.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        gave_up_quarantines(&mut admin).await,
        1,
        "quarantined again"
    );
    let s = admin
        .get_status(pb::GetStatusRequest {})
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_eq!(s.quarantined_hosts, 0, "{s:?}");
    let saved = std::fs::read_to_string(state_dir.join("state.json")).unwrap();
    assert!(!saved.contains("ladder exhausted"), "{saved}");
    tx.send(Control::Shutdown).await.unwrap();
    task.await.unwrap();
    job.kill();
    c.stop().await;
}

// === Hooks and probation ===

/// Outcomes in the coordinator's history, oldest first.
async fn outcomes(
    admin: &mut pb::admin_client::AdminClient<tonic::transport::Channel>,
) -> Vec<pb::event::PermitEnded> {
    history(admin, pb::EventKind::Outcome)
        .await
        .into_iter()
        .filter_map(|e| match e.payload {
            Some(pb::event::Payload::PermitEnded(end)) => Some(end),
            _ => None,
        })
        .collect()
}

/// Permits granted, oldest first.
async fn grants(
    admin: &mut pb::admin_client::AdminClient<tonic::transport::Channel>,
) -> Vec<pb::Permit> {
    history(admin, pb::EventKind::Grant)
        .await
        .into_iter()
        .filter_map(|e| match e.payload {
            Some(pb::event::Payload::PermitGranted(p)) => p.permit,
            _ => None,
        })
        .collect()
}

/// A shell hook: `script` run by `sh -c`, as argv.
fn sh_hook(table: &str, script: &str, timeout: &str) -> String {
    format!("[jobs.{table}]\ncommand = [\"sh\", \"-c\", {script:?}]\ntimeout = \"{timeout}\"\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vetoing_pre_hook_restarts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let job = Job::new(dir.path());
    let first = job.start();
    let runs = dir.path().join("pre-runs");
    let keys = format!(
        "probation = \"0s\"\n{}",
        sh_hook(
            "pre",
            &format!(
                "echo run >> {}; echo \"refusing: $MEDIC_JOB is the last replica\"; exit 3",
                runs.display()
            ),
            "5s"
        )
    );
    let c = coordinator("").await;
    let mut admin = c.admin().await;
    let (tx, task) = spawn_agent(agent_config_with(
        dir.path(),
        &format!("http://{}", c.addr),
        &keys,
        "",
    ));
    let end = restart_outcome(&mut admin, &job).await;
    assert_eq!(end.state(), pb::PermitState::Aborted, "{end:?}");
    assert!(
        end.detail
            .contains("the pre hook stopped the restart_job; nothing was done")
            && end.detail.contains("exited with code 3")
            && end.detail.contains("refusing: ingest is the last replica"),
        "{}",
        end.detail
    );
    // Nothing was restarted: the frozen job is the same process, still
    // stopped; and the agent does not ask again at once (it waits at least
    // 5 s after a first veto, longer after each next one).
    assert_eq!(job.pid(), first);
    assert_eq!(job.state(first), "T");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        std::fs::read_to_string(&runs).unwrap().lines().count(),
        1,
        "asked again at once after a veto"
    );
    tx.send(Control::Shutdown).await.unwrap();
    task.await.unwrap();
    job.kill();
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_pre_hook_is_killed_and_the_action_aborted() {
    let dir = tempfile::tempdir().unwrap();
    let job = Job::new(dir.path());
    let first = job.start();
    // The hook leaves a child in its process group, then hangs.
    let child = dir.path().join("hook-child.pid");
    let keys = format!(
        "probation = \"0s\"\n{}",
        sh_hook(
            "pre",
            &format!("sleep 600 & echo $! > {}; wait", child.display()),
            "1s"
        )
    );
    let c = coordinator("").await;
    let mut admin = c.admin().await;
    let (tx, task) = spawn_agent(agent_config_with(
        dir.path(),
        &format!("http://{}", c.addr),
        &keys,
        "",
    ));
    let end = restart_outcome(&mut admin, &job).await;
    assert_eq!(end.state(), pb::PermitState::Aborted, "{end:?}");
    assert!(
        end.detail.contains("did not finish within 1s") && end.detail.contains("nothing was done"),
        "{}",
        end.detail
    );
    // Its whole process group was killed, and nothing was restarted.
    let child: i32 = std::fs::read_to_string(&child)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    wait_for("the hook's child killed", || !alive(child)).await;
    assert_eq!(job.pid(), first);
    assert_eq!(job.state(first), "T");
    tx.send(Control::Shutdown).await.unwrap();
    task.await.unwrap();
    job.kill();
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_run_around_a_verified_restart_with_the_permit_context() {
    let dir = tempfile::tempdir().unwrap();
    let job = Job::new(dir.path());
    let first = job.start();
    let log = dir.path().join("steps.log");
    let step = |what: &str| {
        format!(
            "echo \"{what} $MEDIC_HOOK $MEDIC_ACTION $MEDIC_PERMIT_ID\" >> {}",
            log.display()
        )
    };
    std::fs::write(
        dir.path().join("start.sh"),
        format!(
            "{}\nnohup sh {} >/dev/null 2>&1 &\n",
            step("restart"),
            dir.path().join("job.sh").display()
        ),
    )
    .unwrap();
    let keys = format!(
        "probation = \"0s\"\n{}{}",
        sh_hook("pre", &step("drain"), "5s"),
        sh_hook("post", &format!("{}; exit 1", step("undrain")), "5s"),
    );
    let c = coordinator("").await;
    let mut admin = c.admin().await;
    let (tx, task) = spawn_agent(agent_config_with(
        dir.path(),
        &format!("http://{}", c.addr),
        &keys,
        "",
    ));
    let end = restart_outcome(&mut admin, &job).await;
    // A failing post hook does not undo a verified fix: the outcome stays
    // SUCCEEDED and its detail says the hook failed.
    assert_eq!(end.state(), pb::PermitState::Succeeded, "{end:?}");
    assert!(
        end.detail.contains("the job verified healthy")
            && end.detail.contains("the post hook failed")
            && end.detail.contains("exited with code 1"),
        "{}",
        end.detail
    );
    assert_ne!(job.try_pid(), Some(first));
    let p = &end.permit_id;
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        format!(
            "drain pre restart_job {p}\nrestart  restart_job {p}\nundrain post restart_job {p}\n"
        )
    );
    tx.send(Control::Shutdown).await.unwrap();
    task.await.unwrap();
    job.kill();
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relapse_in_probation_is_failed_and_climbs_the_ladder() {
    let dir = tempfile::tempdir().unwrap();
    let job = Job::new(dir.path());
    let first = job.start();
    let c = coordinator("").await;
    let mut admin = c.admin().await;
    let (tx, task) = spawn_agent(agent_config_with(
        dir.path(),
        &format!("http://{}", c.addr),
        "probation = \"1h\"",
        "",
    ));
    warmed_up(&mut admin).await;
    job.freeze();
    // Restarted and verified; the permit is held through probation.
    let second = job.wait_pid(Some(first));
    let state = dir.path().join("agent-state/state.json");
    wait_for("the probation recorded in the state file", || {
        std::fs::read_to_string(&state).is_ok_and(|s| s.contains("\"probation\": {"))
    })
    .await;
    assert!(
        outcomes(&mut admin).await.is_empty(),
        "ended before probation"
    );
    let s = admin
        .get_status(pb::GetStatusRequest {})
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    let restarts = s
        .actions
        .iter()
        .find(|a| a.action() == pb::Action::RestartJob)
        .unwrap();
    assert_eq!(
        restarts.active, 1,
        "the permit counts against the cap: {s:?}"
    );
    // The restarted job relapses.
    job.freeze();
    let poll = Poll::new("the restart's outcome");
    let end = loop {
        if let Some(end) = outcomes(&mut admin).await.into_iter().next() {
            break end;
        }
        poll.tick().await;
    };
    assert_eq!(end.state(), pb::PermitState::Failed, "{end:?}");
    assert!(
        end.detail.contains("the job verified healthy")
            && end.detail.contains("relapsed")
            && end.detail.contains("into its 1h probation")
            && end.detail.contains(&format!("process {second}")),
        "{}",
        end.detail
    );
    // The ladder climbs: one failed restart asks for a reboot next.
    let poll = Poll::new("a reboot granted");
    while !grants(&mut admin)
        .await
        .iter()
        .any(|p| p.action() == pb::Action::RebootHost)
    {
        poll.tick().await;
    }
    task.abort();
    let _ = task.await;
    drop(tx);
    job.kill();
    c.stop().await;
}

/// A job whose ladder is one custom action, `clear_cache`, whose command
/// logs its context and thaws the job (SIGCONT): the fix without a restart.
fn custom_ladder(dir: &Path, action: &str) -> String {
    format!(
        "probation = \"0s\"\n[[jobs.ladder]]\naction = \"{action}\"\n\
         command = [\"sh\", \"-c\", \"echo $MEDIC_ACTION $MEDIC_PERMIT_ID >> {log}; kill -CONT $(cat {pid})\"]\n\
         timeout = \"5s\"\nverify_timeout = \"5s\"\n",
        log = dir.join("custom.log").display(),
        pid = dir.join("job.pid").display(),
    )
}

/// The shared agent config, with its default-ladder keys replaced by
/// `ladder`.
fn agent_config_with_ladder(dir: &Path, coordinator: &str, ladder: &str) -> AgentConfig {
    agent_config_laddered(dir, coordinator, ladder, "", "")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_action_runs_its_command_under_its_own_permit_and_is_verified() {
    let dir = tempfile::tempdir().unwrap();
    let job = Job::new(dir.path());
    let first = job.start();
    let c = coordinator(
        "[actions.clear_cache]\ndescription = \"drop the job's cache\"\n\
         [limits.clear_cache]\nmax_in_flight = 3\npermit_ttl = \"30s\"\ncooldown = \"0s\"\n",
    )
    .await;
    let mut admin = c.admin().await;
    let (tx, task) = spawn_agent(agent_config_with_ladder(
        dir.path(),
        &format!("http://{}", c.addr),
        &custom_ladder(dir.path(), "clear_cache"),
    ));
    let end = restart_outcome(&mut admin, &job).await;
    assert_eq!(end.state(), pb::PermitState::Succeeded, "{end:?}");
    assert_eq!(end.action_name, "clear_cache");
    assert_eq!(end.action(), pb::Action::Custom);
    assert!(
        end.detail.contains("ran clear_cache") && end.detail.contains("verified healthy"),
        "{}",
        end.detail
    );
    // The command ran once, under that permit, and the job was not
    // restarted: the same process is running again.
    assert_eq!(
        std::fs::read_to_string(dir.path().join("custom.log")).unwrap(),
        format!("clear_cache {}\n", end.permit_id)
    );
    assert_eq!(job.pid(), first);
    let granted = grants(&mut admin).await;
    assert_eq!(granted.len(), 1);
    assert_eq!(granted[0].action_name, "clear_cache");
    // The coordinator's status lists it beside the built-ins.
    let status = admin
        .get_status(pb::GetStatusRequest::default())
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    let names: Vec<&str> = status
        .actions
        .iter()
        .map(|a| a.action_name.as_str())
        .collect();
    assert_eq!(names, ["restart_job", "reboot_host", "clear_cache"]);
    tx.send(Control::Shutdown).await.unwrap();
    task.await.unwrap();
    job.kill();
    c.stop().await;
}

/// A custom action is verified only on checks that observed the job after
/// it began. Here the command thaws the job but turns its heartbeat file
/// into a symlink loop: the heartbeat detector can no longer read it (not
/// evidence of a hang, so no alarm) and the process runs. Every check then
/// passes, but the heartbeat detector has not seen the job work since the
/// action: it fails, naming the detector.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_action_is_not_verified_by_a_detector_that_could_not_look() {
    let dir = tempfile::tempdir().unwrap();
    let job = Job::new(dir.path());
    job.start();
    let c = coordinator(
        "[actions.clear_cache]\n[limits.clear_cache]\nmax_in_flight = 3\npermit_ttl = \"30s\"\ncooldown = \"0s\"\n",
    )
    .await;
    let mut admin = c.admin().await;
    let hb = dir.path().join("job.hb");
    let ladder = format!(
        "probation = \"0s\"\n[[jobs.ladder]]\naction = \"clear_cache\"\n\
         command = [\"sh\", \"-c\", \"rm -f {hb} && ln -s {hb} {hb} && kill -CONT $(cat {pid})\"]\n\
         timeout = \"5s\"\nverify_timeout = \"2s\"\n",
        hb = hb.display(),
        pid = dir.path().join("job.pid").display(),
    );
    let (tx, task) = spawn_agent(agent_config_with_ladder(
        dir.path(),
        &format!("http://{}", c.addr),
        &ladder,
    ));
    let end = restart_outcome(&mut admin, &job).await;
    assert_eq!(end.state(), pb::PermitState::Failed, "{end:?}");
    assert!(
        end.detail.contains("ran clear_cache")
            && end.detail.contains("no evidence newer than the action")
            && end.detail.contains(&format!(
                "heartbeat file {} has not been written since the clear_cache began",
                hb.display()
            )),
        "{}",
        end.detail
    );
    tx.send(Control::Shutdown).await.unwrap();
    task.await.unwrap();
    job.kill();
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_action_the_coordinator_does_not_declare_is_denied_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let job = Job::new(dir.path());
    job.start();
    let c = coordinator("").await;
    let mut admin = c.admin().await;
    let config = agent_config_with_ladder(
        dir.path(),
        &format!("http://{}", c.addr),
        &custom_ladder(dir.path(), "reimage"),
    );
    let agent = Agent::new(config, Environment::default());
    let metrics = agent.metrics();
    let (tx, rx) = mpsc::channel(1);
    let task = tokio::spawn(agent.run(rx));
    warmed_up(&mut admin).await;
    job.freeze();
    let denied = || {
        metrics
            .permit_denials
            .get_or_create(&medic_agent::metrics::ReasonLabel {
                reason: "unknown_action".to_owned(),
            })
            .get()
    };
    wait_for("an unknown_action denial", || denied() >= 1).await;
    assert!(grants(&mut admin).await.is_empty());
    assert!(!dir.path().join("custom.log").exists(), "nothing ran");
    let explain = admin
        .explain(pb::ExplainRequest {
            host_id: "h1".into(),
            action: pb::Action::Custom.into(),
            action_name: "reimage".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let d = &explain.denials[0];
    assert_eq!(d.reason(), pb::DenyReason::UnknownAction);
    assert!(
        d.message.contains("unknown action \"reimage\""),
        "{}",
        d.message
    );
    tx.send(Control::Shutdown).await.unwrap();
    task.await.unwrap();
    signal(job.pid(), "CONT");
    job.kill();
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_that_needs_approval_waits_for_a_human_and_runs_once_approved() {
    let dir = tempfile::tempdir().unwrap();
    let job = Job::new(dir.path());
    let first = job.start();
    let c = coordinator("[limits.restart_job.approval]\nalways = true\n").await;
    let mut admin = c.admin().await;
    let agent = Agent::new(
        agent_config(dir.path(), &format!("http://{}", c.addr), ""),
        Environment::default(),
    );
    let metrics = agent.metrics();
    let (tx, rx) = mpsc::channel(1);
    let task = tokio::spawn(agent.run(rx));
    warmed_up(&mut admin).await;
    job.freeze();
    wait_for("the agent waiting for an approval", || {
        metrics.waiting_for_approval.get() == 1
    })
    .await;
    let pending = admin
        .list_approvals(pb::ListApprovalsRequest { all: false })
        .await
        .unwrap()
        .into_inner()
        .approvals;
    assert_eq!(pending.len(), 1, "{pending:?}");
    let a = &pending[0];
    assert_eq!(
        (a.state(), a.host_id.as_str(), a.action_name.as_str()),
        (pb::ApprovalState::Pending, "h1", "restart_job")
    );
    assert!(
        a.reason.contains("stopped"),
        "the agent's evidence: {}",
        a.reason
    );
    // Waiting is not acting: nothing granted, the job untouched, and no
    // denial counted.
    assert!(grants(&mut admin).await.is_empty());
    assert_eq!(job.pid(), first);

    admin
        .approve(pb::DecideApprovalRequest {
            approval_id: a.approval_id,
            reason: "looked at h1, go".into(),
        })
        .await
        .unwrap();
    let e = first_outcome(&mut admin).await;
    let Some(pb::event::Payload::PermitEnded(end)) = e.payload else {
        panic!("{e:?}")
    };
    assert_eq!(end.state(), pb::PermitState::Succeeded, "{end:?}");
    assert_ne!(job.pid(), first, "the job was restarted");
    let all = admin
        .list_approvals(pb::ListApprovalsRequest { all: true })
        .await
        .unwrap()
        .into_inner()
        .approvals;
    assert_eq!(all[0].state(), pb::ApprovalState::Used, "{all:?}");
    assert_eq!(all[0].permit_id, end.permit_id);
    assert_eq!(metrics.waiting_for_approval.get(), 0);
    tx.send(Control::Shutdown).await.unwrap();
    task.await.unwrap();
    job.kill();
    c.stop().await;
}
