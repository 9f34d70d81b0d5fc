//! Faults injected into the real binary from outside, as an operator's
//! mistakes and a host's accidents would: the state file emptied,
//! truncated, deleted, replaced or linked away. Each case checks that the
//! coordinator says what happened, and that nothing it acknowledged is
//! lost: every grant an agent saw replays, by its request id, as the same
//! permit after the file is put right.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use medic_proto::pb::v1 as pb;
use pb::request_permit_response::Decision;
use tonic::transport::Channel;

const CONFIG: &str = r#"
[server]
listen = "127.0.0.1:0"
metrics_listen = "127.0.0.1:0"
state_dir = "STATE"
[fleet]
heartbeat_interval = "1s"
host_ttl = "60s"
warmup = "1s"
[breaker]
unhealthy_percent = 100
failure_percent = 100
[limits.restart_job]
max_in_flight = 1000
permit_ttl = "10m"
cooldown = "0s"
rate = { count = 100000, per = "1h", burst = 100000 }
host_budget = { max_attempts = 100000, per = "1h" }
"#;

/// The coordinator binary, run on `dir/state`, its log kept.
struct Coordinator {
    child: Child,
    addr: Option<String>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Coordinator {
    /// Starts it; `addr` is set once it serves (within 20 s), `None` when it
    /// exits first.
    fn start(dir: &Path) -> Coordinator {
        Self::start_with(dir, &[])
    }

    /// Starts it with `env` set (libfaketime's, for clock steps).
    fn start_with(dir: &Path, env: &[(&str, String)]) -> Coordinator {
        Self::start_configured(dir, "", env)
    }

    /// Starts it with `server` lines added to `[server]`, and `env` set.
    fn start_configured(dir: &Path, server: &str, env: &[(&str, String)]) -> Coordinator {
        let config = dir.join("coordinator.toml");
        let state = format!("\"{}\"\n{server}", dir.join("state").display());
        std::fs::write(&config, CONFIG.replace("\"STATE\"", &state)).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_medic-coordinator"));
        command
            .arg("run")
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "info")
            .env_remove("MEDIC_CRASH_AFTER_COMMITS")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(i) = line.find("grpc=") {
                    let addr: String = line[i + 5..]
                        .chars()
                        .take_while(|c| !c.is_whitespace())
                        .collect();
                    let _ = tx.send(Some(addr));
                }
                lines.lock().unwrap().push(line);
            }
            let _ = tx.send(None);
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the coordinator serves or exits within 20s");
        Coordinator { child, addr, log }
    }

    fn addr(&self) -> &str {
        self.addr
            .as_deref()
            .unwrap_or_else(|| panic!("the coordinator did not serve:\n{}", self.log()))
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Waits up to `limit` for the process to exit on its own.
    fn exit_within(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // The reader thread drains the rest of the pipe.
                std::thread::sleep(Duration::from_millis(100));
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "still running after {limit:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, and the clean exit that follows.
    fn stop(mut self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap()),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let status = self.exit_within(Duration::from_secs(20));
        assert!(status.success(), "{status}:\n{}", self.log());
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A start that must fail: its exit code and log.
fn refused_start(dir: &Path) -> (Option<i32>, String) {
    let mut c = Coordinator::start(dir);
    assert!(c.addr.is_none(), "it served:\n{}", c.log());
    let status = c.exit_within(Duration::from_secs(20));
    (status.code(), c.log())
}

async fn connect(addr: &str) -> Channel {
    let url = format!("http://{addr}");
    for _ in 0..200 {
        if let Ok(c) = Channel::from_shared(url.clone()).unwrap().connect().await {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("cannot connect to {url}");
}

/// An agent that heartbeats for `hosts` hosts past the warm-up.
async fn agent(addr: &str, hosts: usize) -> pb::remediation_client::RemediationClient<Channel> {
    let mut agent = pb::remediation_client::RemediationClient::new(connect(addr).await);
    for round in 0..2 {
        if round == 1 {
            tokio::time::sleep(Duration::from_millis(1200)).await;
        }
        for h in 0..hosts {
            agent
                .heartbeat(pb::HeartbeatRequest {
                    host_id: format!("h{h}"),
                    agent_version: "fault-test".into(),
                    ..Default::default()
                })
                .await
                .unwrap();
        }
    }
    agent
}

/// Asks for a restart permit: the permit id if granted, the status if the
/// call failed.
async fn request(
    agent: &mut pb::remediation_client::RemediationClient<Channel>,
    host: &str,
    request_id: &str,
) -> Result<String, tonic::Status> {
    let reply = agent
        .request_permit(pb::RequestPermitRequest {
            dry_run: false,
            request_id: request_id.into(),
            host_id: host.into(),
            action: pb::Action::RestartJob.into(),
            action_name: String::new(),
            job: "ingest".into(),
            reason: "fault test".into(),
        })
        .await?
        .into_inner();
    match reply.decision {
        Some(Decision::Granted(g)) => Ok(g.permit.unwrap().permit_id),
        other => panic!("{host}/{request_id}: expected a grant, got {other:?}"),
    }
}

/// Grants for hosts h0..h{n}, one each: (host, request id, permit id).
async fn grant_each(addr: &str, n: usize, tag: &str) -> Vec<(String, String, String)> {
    let mut agent = agent(addr, n).await;
    let mut out = Vec::new();
    for h in 0..n {
        let (host, rid) = (format!("h{h}"), format!("{tag}-{h}"));
        let permit = request(&mut agent, &host, &rid).await.unwrap();
        out.push((host, rid, permit));
    }
    out
}

/// Every acknowledged grant replays as the same permit (I7): nothing was
/// lost, and nothing was granted twice.
async fn assert_all_replay(addr: &str, grants: &[(String, String, String)]) {
    let mut agent = agent(addr, grants.len()).await;
    for (host, rid, permit) in grants {
        let again = request(&mut agent, host, rid).await.unwrap();
        assert_eq!(&again, permit, "{host}/{rid} replayed as another permit");
    }
}

fn state_file(dir: &Path) -> PathBuf {
    dir.join("state/medic.redb")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_or_linked_away_state_files_stop_start_up_and_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::start(dir.path());
    let grants = grant_each(c.addr(), 6, "before").await;
    c.stop();
    let file = state_file(dir.path());
    let good = std::fs::read(&file).unwrap();

    type Damage = fn(&Path);
    let cases: [(&str, Damage, &str); 5] = [
        (
            "emptied",
            |f| std::fs::write(f, b"").unwrap(),
            "empty (0 bytes)",
        ),
        (
            "truncated to half",
            |f| {
                let len = std::fs::metadata(f).unwrap().len();
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(f)
                    .unwrap()
                    .set_len(len / 2)
                    .unwrap();
            },
            "corrupt",
        ),
        (
            "linked to /dev/null",
            |f| {
                std::fs::remove_file(f).unwrap();
                std::os::unix::fs::symlink("/dev/null", f).unwrap();
            },
            "a symbolic link to /dev/null, which is a character device",
        ),
        (
            "a dangling link",
            |f| {
                std::fs::remove_file(f).unwrap();
                std::os::unix::fs::symlink("/nonexistent/medic.redb", f).unwrap();
            },
            "which does not exist",
        ),
        (
            "deleted beside its LOCK",
            |f| std::fs::remove_file(f).unwrap(),
            "it does not exist, but the directory has held medic state (it has LOCK)",
        ),
    ];
    for (name, damage, says) in cases {
        damage(&file);
        let (code, log) = refused_start(dir.path());
        assert_eq!(code, Some(1), "{name}:\n{log}");
        assert!(
            log.contains(says),
            "{name}: the log should say {says:?}:\n{log}"
        );
        assert!(
            log.contains("Restore the state file") || log.contains("Restore it from a backup"),
            "{name}: the log should say what to do:\n{log}"
        );
        // Put right from the copy, everything acknowledged is there.
        let _ = std::fs::remove_file(&file);
        std::fs::write(&file, &good).unwrap();
    }
    let c = Coordinator::start(dir.path());
    assert_all_replay(c.addr(), &grants).await;
    c.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_file_deleted_while_serving_stops_it_and_the_rescued_copy_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Coordinator::start(dir.path());
    let grants = grant_each(c.addr(), 5, "live").await;
    std::fs::remove_file(state_file(dir.path())).unwrap();

    // Idle, it notices within a tick or two and stops.
    let status = c.exit_within(Duration::from_secs(10));
    let log = c.log();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("deleted while the coordinator ran"), "{log}");
    assert!(log.contains("medic.redb.rescued"), "{log}");
    drop(c);

    // The next start refuses, and points at the copy.
    let (code, log) = refused_start(dir.path());
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("medic.redb.rescued"), "{log}");

    // Moved back as the message says, it holds every grant.
    std::fs::rename(
        dir.path().join("state/medic.redb.rescued"),
        state_file(dir.path()),
    )
    .unwrap();
    let c = Coordinator::start(dir.path());
    assert_all_replay(c.addr(), &grants).await;
    c.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_file_replaced_while_serving_is_never_picked_silently() {
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::start(dir.path());
    let early = grant_each(c.addr(), 2, "early").await;
    let backup = dir.path().join("backup.redb");
    std::fs::copy(state_file(dir.path()), &backup).unwrap();
    let mut agent = agent(c.addr(), 4).await;
    let late = request(&mut agent, "h3", "late-3").await.unwrap();

    // An old backup moved over the live file, while it serves.
    std::fs::rename(&backup, state_file(dir.path())).unwrap();
    let next = request(&mut agent, "h2", "late-2").await;
    assert!(next.is_err(), "a grant into the replaced file: {next:?}");
    let mut c = c;
    let status = c.exit_within(Duration::from_secs(10));
    let log = c.log();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("replaced by another file"), "{log}");
    drop(c);

    // Restarting on the old backup would lose `late`: refused.
    let (code, log) = refused_start(dir.path());
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("medic.redb.rescued beside it"), "{log}");

    std::fs::rename(
        dir.path().join("state/medic.redb.rescued"),
        state_file(dir.path()),
    )
    .unwrap();
    let c = Coordinator::start(dir.path());
    let mut all = early;
    all.push(("h3".into(), "late-3".into(), late));
    assert_all_replay(c.addr(), &all).await;
    c.stop();
}

// === Faults that need tools or root: libfaketime, a small tmpfs ===

/// Whether a fault this machine cannot inject is a failure
/// (`MEDIC_REQUIRE_FAULTS=1`, as scripts/test sets) or a loud skip.
fn cannot_inject(what: &str) {
    if std::env::var("MEDIC_REQUIRE_FAULTS").is_ok_and(|v| v == "1") {
        panic!("MEDIC_REQUIRE_FAULTS=1, but {what}");
    }
    eprintln!("SKIPPED: {what}");
}

const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// The wall clock of a process started with [`FakeClock::env`], stepped
/// live through libfaketime's timestamp file; its boot clock is real.
struct FakeClock(PathBuf);

impl FakeClock {
    fn new(dir: &Path) -> Option<FakeClock> {
        if !Path::new(LIBFAKETIME).exists() {
            cannot_inject(&format!(
                "{LIBFAKETIME} is missing (Debian package faketime; scripts/test installs it)"
            ));
            return None;
        }
        let c = FakeClock(dir.join("faketime"));
        c.set(0);
        Some(c)
    }

    /// The wall clock reads `offset` seconds from the real time.
    fn set(&self, offset: i64) {
        std::fs::write(&self.0, format!("{offset:+}\n")).unwrap();
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("LD_PRELOAD", LIBFAKETIME.to_owned()),
            ("FAKETIME_TIMESTAMP_FILE", self.0.display().to_string()),
            ("FAKETIME_NO_CACHE", "1".to_owned()),
            ("DONT_FAKE_MONOTONIC", "1".to_owned()),
        ]
    }
}

async fn status(addr: &str) -> pb::GetStatusResponse {
    pb::admin_client::AdminClient::new(connect(addr).await)
        .get_status(pb::GetStatusRequest {})
        .await
        .unwrap()
        .into_inner()
}

async fn active_permits(addr: &str) -> usize {
    pb::admin_client::AdminClient::new(connect(addr).await)
        .list_permits(pb::ListPermitsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .permits
        .len()
}

/// Waits until the coordinator has seen `n` clock steps.
async fn steps_seen(addr: &str, n: u64) -> pb::GetStatusResponse {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = status(addr).await;
        if s.clock_steps >= n {
            return s;
        }
        assert!(Instant::now() < deadline, "{n} step(s) not seen: {s:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_takes_wall_clock_steps_live_and_across_a_restart_for_what_they_are() {
    let dir = tempfile::tempdir().unwrap();
    let Some(clock) = FakeClock::new(dir.path()) else {
        return;
    };
    let c = Coordinator::start_with(dir.path(), &clock.env());
    let grants = grant_each(c.addr(), 3, "before").await;

    // An hour ahead, live: permits of 10 minutes do not expire, no holder
    // is quarantined.
    clock.set(3600);
    let s = steps_seen(c.addr(), 1).await;
    let step = s.last_clock_step.clone().unwrap();
    assert!(step.forward && step.by.unwrap().seconds >= 3599, "{step:?}");
    assert_eq!(s.status.unwrap().quarantined_hosts, 0);
    assert_eq!(active_permits(c.addr()).await, 3);
    assert!(
        c.log().contains("the wall clock was stepped ahead 1h;"),
        "{}",
        c.log()
    );

    // Three hours behind the real time, live: the budget is not frozen.
    clock.set(-3 * 3600);
    steps_seen(c.addr(), 2).await;
    let mut agent = agent(c.addr(), 4).await;
    request(&mut agent, "h3", "after-back").await.unwrap();
    c.stop();

    // Stopped, then two hours ahead of the real time: the same boot, so
    // the step across the restart is measured and taken out.
    clock.set(2 * 3600);
    let c = Coordinator::start_with(dir.path(), &clock.env());
    let s = steps_seen(c.addr(), 1).await;
    let step = s.last_clock_step.unwrap();
    assert!(step.forward, "{step:?}");
    assert!(step.detail.contains("at start-up"), "{step:?}");
    assert_eq!(s.status.unwrap().quarantined_hosts, 0);
    assert_eq!(active_permits(c.addr()).await, 4);
    assert_all_replay(c.addr(), &grants).await;
    c.stop();
}

/// A tmpfs of `size` mounted on `dir` for the test's life.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        let uid = Command::new("id").arg("-u").output().unwrap().stdout;
        if String::from_utf8_lossy(&uid).trim() != "0" {
            eprintln!("SKIPPED: a full or read-only disk needs root to mount a tmpfs");
            return None;
        }
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .output()
            .unwrap();
        if !out.status.success() {
            cannot_inject(&format!(
                "mounting a tmpfs failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
            return None;
        }
        Some(Tmpfs(dir.to_owned()))
    }

    fn remount(&self, how: &str) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,{how}")])
            .arg(&self.0)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Asks for grants (each ended by its outcome) until a call fails: the
/// grants acknowledged before.
async fn grant_until_refused(addr: &str, tag: &str) -> Vec<(String, String, String)> {
    let mut agent = pb::remediation_client::RemediationClient::new(connect(addr).await);
    for h in 0..8 {
        agent
            .heartbeat(pb::HeartbeatRequest {
                host_id: format!("{tag}{h}"),
                agent_version: "fault-test".into(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let mut out = Vec::new();
    for n in 0..5000 {
        let (host, rid) = (format!("{tag}{}", n % 8), format!("{tag}-{n}"));
        let reply = agent
            .request_permit(pb::RequestPermitRequest {
                dry_run: false,
                request_id: rid.clone(),
                host_id: host.clone(),
                action: pb::Action::RestartJob.into(),
                action_name: String::new(),
                job: "ingest".into(),
                reason: "fault test".into(),
            })
            .await;
        let Ok(reply) = reply else { return out };
        let Some(Decision::Granted(g)) = reply.into_inner().decision else {
            panic!("{host}/{rid}: not granted");
        };
        let p = g.permit.unwrap();
        out.push((host.clone(), rid, p.permit_id.clone()));
        let ended = agent
            .report_outcome(pb::ReportOutcomeRequest {
                host_id: host,
                permit_id: p.permit_id,
                fencing_token: p.fencing_token,
                outcome: pb::Outcome::Succeeded.into(),
                detail: "ok".into(),
            })
            .await;
        if ended.is_err() {
            return out;
        }
    }
    panic!("5000 grants and the disk never refused one");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_or_read_only_state_disk_stops_it_and_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let Some(disk) = Tmpfs::mount(&dir.path().join("state"), "8m") else {
        return;
    };
    let mut c = Coordinator::start(dir.path());
    let mut acknowledged = grant_each(c.addr(), 4, "before").await;

    // Full: a filler takes what is left.
    let filler = dir.path().join("state/filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 64 * 1024];
        while f.write_all(&block).is_ok() {}
        let _ = f.sync_all();
    }
    acknowledged.extend(grant_until_refused(c.addr(), "full").await);
    let status = c.exit_within(Duration::from_secs(10));
    let log = c.log();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("No space left on device"), "{log}");
    assert!(log.contains("the coordinator stops"), "{log}");
    drop(c);

    // Room again: everything acknowledged is there.
    std::fs::remove_file(&filler).unwrap();
    let c = Coordinator::start(dir.path());
    assert_all_replay(c.addr(), &acknowledged).await;

    // Read-only (as a file system with errors is remounted; a tmpfs with
    // files open for writing cannot be, so it happens while stopped): the
    // start refuses, naming it, and changes nothing.
    c.stop();
    disk.remount("ro");
    let (code, log) = refused_start(dir.path());
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("Read-only file system"), "{log}");
    disk.remount("rw");
    let c = Coordinator::start(dir.path());
    assert_all_replay(c.addr(), &acknowledged).await;
    c.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_closes_idle_connections_and_cuts_off_watchers_that_never_read() {
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::start_configured(
        dir.path(),
        "idle_timeout = \"2s\"\nrequest_timeout = \"1s\"\nwatch_streams_per_caller = 2\n\
         watch_stall_timeout = \"1s\"\nadmission = { per_second = 10000, burst = 10000 }",
        &[],
    );
    let addr = c.addr().to_owned();

    // Forty connections that never say anything are closed after 2 s.
    let mut idle = Vec::new();
    for _ in 0..40 {
        idle.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    // Enough history that a reader that does not read fills its stream's
    // buffers (HTTP/2's send buffer, then the stream's 256 events).
    let mut admin = pb::admin_client::AdminClient::new(connect(&addr).await);
    for i in 0..600 {
        admin
            .pause(pb::PauseRequest {
                scope: None,
                reason: format!("drill {i}"),
                duration: None,
            })
            .await
            .unwrap();
        admin
            .resume(pb::ResumeRequest {
                target: Some(pb::resume_request::Target::Scope(pb::Scope::default())),
                reason: format!("drill {i} over"),
            })
            .await
            .unwrap();
    }
    for s in &mut idle {
        assert!(
            medic_coordinator::testing::closed_within(s, Duration::from_secs(5)).await,
            "an idle connection lived on"
        );
    }

    // Two watchers that never read are this caller's share; a third is
    // refused; cut off after 1 s of stalling, their places come back.
    let narrow = || async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .initial_stream_window_size(Some(1024))
            .initial_connection_window_size(Some(1024))
            .connect()
            .await
            .unwrap();
        pb::admin_client::AdminClient::new(channel)
            .watch_events(pb::WatchEventsRequest {
                kinds: vec![],
                after_id: Some(0),
            })
            .await
    };
    let _one = narrow().await.unwrap();
    let _two = narrow().await.unwrap();
    let three = narrow().await.unwrap_err();
    assert_eq!(three.code(), tonic::Code::ResourceExhausted, "{three:?}");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    narrow().await.unwrap();
    c.stop();
}
