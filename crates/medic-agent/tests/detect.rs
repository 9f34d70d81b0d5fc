//! Detectors: /proc fixtures (D, T, Z, runtime, absence, command lines), a
//! fake `systemctl`, real probe commands, heartbeat files, and validation.
//!
//! Everything but the probes and the one real-process test runs on fixture
//! files and a synthetic clock (`now` is passed to every check), so nothing
//! here sleeps to let time pass.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use medic_agent::detect::{
    self, DetectorsConfig, Evidence, JobDetectors, ProcessTarget, RawHeartbeatFile, RawProbe,
    RawProcess, RawSystemd, Verdict,
};
use medic_policy::config::Errors;

// === Fixtures ===

/// Boot time of every fixture /proc, seconds since the epoch.
const BOOT: u64 = 1_700_000_000;

/// `secs` seconds after the fixture boot.
fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(BOOT + secs)
}

/// A /proc tree in a temporary directory.
struct FakeProc {
    dir: tempfile::TempDir,
}

impl FakeProc {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(
            dir.path().join("stat"),
            format!(
                "cpu  10 0 10 1000 0 0 0 0 0 0\ncpu0 10 0 10 1000 0 0 0 0 0 0\nctxt 1000\nbtime {BOOT}\nprocesses 100\n"
            ),
        )
        .expect("write stat");
        FakeProc { dir }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// Writes `<root>/PID/stat` (a real kernel's line with these fields
    /// replaced) and `<root>/PID/cmdline`.
    fn put(&self, pid: i32, comm: &str, state: char, starttime_ticks: u64, cmdline: &[&str]) {
        let dir = self.dir.path().join(pid.to_string());
        fs::create_dir_all(&dir).expect("mkdir pid");
        fs::write(
            dir.join("stat"),
            format!(
                "{pid} ({comm}) {state} 1 {pid} {pid} 0 -1 4194304 100 0 0 0 0 0 0 0 20 0 1 0 \
                 {starttime_ticks} 3133440 412 18446744073709551615 94274866008064 94274866027945 \
                 140733420358736 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0 94274866043952 94274866045568 \
                 94275794935808 140733420362466 140733420362486 140733420362486 140733420363755 0\n"
            ),
        )
        .expect("write pid stat");
        let mut raw = Vec::new();
        for arg in cmdline {
            raw.extend_from_slice(arg.as_bytes());
            raw.push(0);
        }
        fs::write(dir.join("cmdline"), raw).expect("write cmdline");
    }

    fn remove(&self, pid: i32) {
        fs::remove_dir_all(self.dir.path().join(pid.to_string())).expect("rm pid");
    }
}

fn config(
    heartbeat_file: Option<RawHeartbeatFile>,
    process: Option<RawProcess>,
    probe: Option<RawProbe>,
    systemd: Option<RawSystemd>,
) -> DetectorsConfig {
    let mut errs = Errors::default();
    let c = detect::validate(
        heartbeat_file.as_ref(),
        process.as_ref(),
        probe.as_ref(),
        systemd.as_ref(),
        &mut errs,
        "jobs[0]",
    );
    assert!(errs.is_empty(), "{:?}", errs.finish(()));
    c
}

fn process_detectors(fake: &FakeProc, process: RawProcess) -> JobDetectors {
    JobDetectors::new(config(None, Some(process), None, None), fake.root(), at(0))
        .with_clock_ticks(100)
}

fn pidfile(dir: &Path, pid: i32) -> PathBuf {
    let path = dir.join("job.pid");
    fs::write(&path, format!("{pid}\n")).expect("write pidfile");
    path
}

fn by_pidfile(path: &Path) -> RawProcess {
    RawProcess {
        pidfile: Some(path.display().to_string()),
        ..RawProcess::default()
    }
}

#[track_caller]
fn stuck(verdict: Verdict, detector: &str, contains: &[&str]) -> Evidence {
    match verdict {
        Verdict::Fired(e) => {
            assert_eq!(e.detector, detector, "{e:?}");
            for part in contains {
                assert!(e.detail.contains(part), "{:?} lacks {part:?}", e.detail);
            }
            e
        }
        Verdict::Healthy => panic!("expected stuck by {detector}, got healthy"),
    }
}

// === Process: state from /proc ===

#[tokio::test]
async fn process_in_d_state_longer_than_limit_is_stuck() {
    let fake = FakeProc::new();
    fake.put(1234, "etl", 'D', 500, &["etl"]);
    let pf = pidfile(fake.dir.path(), 1234);
    let mut d = process_detectors(&fake, by_pidfile(&pf));

    assert_eq!(d.check(at(100)).await, Verdict::Healthy, "D just seen");
    assert_eq!(d.check(at(200)).await, Verdict::Healthy, "D for 100s < 2m");
    let e = stuck(
        d.check(at(221)).await,
        "process",
        &[
            "process 1234 (etl",
            "uninterruptible sleep (state D)",
            "2m 1s",
            "d_state_for 2m",
        ],
    );
    assert!(
        e.detail.contains(&format!("pidfile {}", pf.display())),
        "{e:?}"
    );
    assert_eq!(d.pids().await, vec![1234]);
}

#[tokio::test]
async fn d_state_count_starts_again_after_the_process_left_it() {
    let fake = FakeProc::new();
    fake.put(1234, "etl", 'D', 500, &["etl"]);
    let pf = pidfile(fake.dir.path(), 1234);
    let mut d = process_detectors(
        &fake,
        RawProcess {
            d_state_for: Some("60s".into()),
            ..by_pidfile(&pf)
        },
    );

    assert_eq!(d.check(at(100)).await, Verdict::Healthy);
    fake.put(1234, "etl", 'S', 500, &["etl"]);
    assert_eq!(d.check(at(150)).await, Verdict::Healthy);
    fake.put(1234, "etl", 'D', 500, &["etl"]);
    assert_eq!(
        d.check(at(170)).await,
        Verdict::Healthy,
        "D again since 170"
    );
    assert_eq!(
        d.check(at(230)).await,
        Verdict::Healthy,
        "60s is not longer than 60s"
    );
    stuck(
        d.check(at(231)).await,
        "process",
        &["state D", "for at least 1m 1s"],
    );
}

#[tokio::test]
async fn stopped_process_is_stuck() {
    let fake = FakeProc::new();
    fake.put(1234, "etl", 'T', 500, &["etl"]);
    let pf = pidfile(fake.dir.path(), 1234);
    let mut d = process_detectors(&fake, by_pidfile(&pf));
    stuck(
        d.check(at(100)).await,
        "process",
        &["process 1234 (etl", "stopped (state T)"],
    );

    fake.put(1234, "etl", 't', 500, &["etl"]);
    stuck(
        d.check(at(110)).await,
        "process",
        &["stopped (state t) by a tracer"],
    );
}

#[tokio::test]
async fn stopped_process_is_healthy_when_stopped_is_not_stuck() {
    let fake = FakeProc::new();
    fake.put(1234, "etl", 'T', 500, &["etl"]);
    let pf = pidfile(fake.dir.path(), 1234);
    let mut d = process_detectors(
        &fake,
        RawProcess {
            stopped_is_stuck: Some(false),
            ..by_pidfile(&pf)
        },
    );
    assert_eq!(d.check(at(100)).await, Verdict::Healthy);
}

#[tokio::test]
async fn zombie_process_is_stuck() {
    let fake = FakeProc::new();
    // A comm with spaces and parentheses: the state is the field after the
    // last ')'.
    fake.put(1234, "my (odd) job", 'Z', 500, &[]);
    let pf = pidfile(fake.dir.path(), 1234);
    let mut d = process_detectors(&fake, by_pidfile(&pf));
    stuck(
        d.check(at(100)).await,
        "process",
        &["process 1234 (my (odd) job", "zombie (state Z)"],
    );
}

#[tokio::test]
async fn running_or_sleeping_process_is_healthy() {
    let fake = FakeProc::new();
    fake.put(1234, "etl", 'S', 500, &["etl"]);
    let pf = pidfile(fake.dir.path(), 1234);
    let mut d = process_detectors(&fake, by_pidfile(&pf));
    assert_eq!(d.check(at(100)).await, Verdict::Healthy);
    fake.put(1234, "etl", 'R', 500, &["etl"]);
    assert_eq!(
        d.check(at(1_000_000)).await,
        Verdict::Healthy,
        "no max_runtime"
    );
}

#[tokio::test]
async fn process_running_longer_than_max_runtime_is_stuck() {
    let fake = FakeProc::new();
    // Started 60 s after boot (6000 ticks at 100 per second).
    fake.put(1234, "etl", 'S', 6000, &["etl"]);
    let pf = pidfile(fake.dir.path(), 1234);
    let mut d = process_detectors(
        &fake,
        RawProcess {
            max_runtime: Some("1h".into()),
            ..by_pidfile(&pf)
        },
    );
    assert_eq!(d.check(at(60 + 3600)).await, Verdict::Healthy, "exactly 1h");
    stuck(
        d.check(at(60 + 3661)).await,
        "process",
        &["has run for 1h 1m 1s", "max_runtime 1h"],
    );
}

#[tokio::test]
async fn clock_ticks_convert_start_times() {
    let fake = FakeProc::new();
    // 6000 ticks: 60 s at 100 per second, 6 s at 1000 per second.
    fake.put(1234, "etl", 'S', 6000, &["etl"]);
    let pf = pidfile(fake.dir.path(), 1234);
    let c = config(
        None,
        Some(RawProcess {
            max_runtime: Some("100s".into()),
            ..by_pidfile(&pf)
        }),
        None,
        None,
    );
    let mut d = JobDetectors::new(c, fake.root(), at(0)).with_clock_ticks(1000);
    stuck(d.check(at(107)).await, "process", &["has run for 1m 41s"]);
}

// === Process: absence ===

#[tokio::test]
async fn absent_process_is_stuck_after_absent_grace() {
    let fake = FakeProc::new();
    let pf = fake.dir.path().join("job.pid");
    let mut d = process_detectors(&fake, by_pidfile(&pf));
    assert_eq!(
        d.check(at(30)).await,
        Verdict::Healthy,
        "within 1m of start"
    );
    stuck(
        d.check(at(60)).await,
        "process",
        &[
            "is missing",
            "no process for 1m since the agent started",
            "absent_grace 1m",
        ],
    );
    assert_eq!(d.pids().await, Vec::<i32>::new());
}

#[tokio::test]
async fn absence_counts_from_when_the_process_was_last_seen() {
    let fake = FakeProc::new();
    fake.put(1234, "etl", 'S', 500, &["etl"]);
    let pf = pidfile(fake.dir.path(), 1234);
    let mut d = process_detectors(&fake, by_pidfile(&pf));
    assert_eq!(d.check(at(600)).await, Verdict::Healthy);

    fake.remove(1234);
    assert_eq!(d.check(at(630)).await, Verdict::Healthy, "gone for 30s");
    stuck(
        d.check(at(661)).await,
        "process",
        &[
            "names pid 1234, which is not running",
            "since it was last seen",
        ],
    );
}

#[tokio::test]
async fn absent_process_is_healthy_when_absence_is_not_stuck() {
    let fake = FakeProc::new();
    let pf = fake.dir.path().join("job.pid");
    let mut d = process_detectors(
        &fake,
        RawProcess {
            absent_is_stuck: Some(false),
            ..by_pidfile(&pf)
        },
    );
    assert_eq!(d.check(at(10_000)).await, Verdict::Healthy);
}

#[tokio::test]
async fn empty_pidfile_counts_as_absent() {
    let fake = FakeProc::new();
    let pf = fake.dir.path().join("job.pid");
    fs::write(&pf, "").expect("write");
    let mut d = process_detectors(&fake, by_pidfile(&pf));
    stuck(d.check(at(61)).await, "process", &["is empty"]);
}

#[tokio::test]
async fn pidfile_that_cannot_be_read_is_not_stuck() {
    let fake = FakeProc::new();
    // Garbage: the detector cannot tell which process is the job.
    let pf = fake.dir.path().join("job.pid");
    fs::write(&pf, "not a pid\n").expect("write");
    let mut d = process_detectors(&fake, by_pidfile(&pf));
    assert_eq!(d.check(at(10_000)).await, Verdict::Healthy);

    // A "pidfile" below a regular file: ENOTDIR, not "missing".
    let pf = fake.dir.path().join("stat").join("job.pid");
    let mut d = process_detectors(&fake, by_pidfile(&pf));
    assert_eq!(d.check(at(10_000)).await, Verdict::Healthy);
}

// === Process: command-line match ===

#[tokio::test]
async fn cmdline_regex_finds_every_matching_process() {
    let fake = FakeProc::new();
    fake.put(
        100,
        "python3",
        'S',
        500,
        &["/usr/bin/python3", "/opt/jobs/etl.py", "--daily"],
    );
    fake.put(
        101,
        "python3",
        'R',
        500,
        &["python3", "/opt/jobs/etl.py", "--daily", "-v"],
    );
    fake.put(
        102,
        "python3",
        'S',
        500,
        &["/usr/bin/python3", "/opt/jobs/etl.py", "--hourly"],
    );
    fake.put(2, "kthreadd", 'S', 0, &[]);
    // The agent itself never matches, whatever its command line.
    let me = i32::try_from(std::process::id()).expect("pid fits");
    fake.put(
        me,
        "medic-agent",
        'S',
        500,
        &["medic-agent", "etl.py --daily"],
    );
    let mut d = process_detectors(
        &fake,
        RawProcess {
            cmdline: Some(r"etl\.py --daily".into()),
            ..RawProcess::default()
        },
    );
    assert_eq!(d.pids().await, vec![100, 101]);
    assert_eq!(d.check(at(100)).await, Verdict::Healthy);

    fake.put(
        101,
        "python3",
        'T',
        500,
        &["python3", "/opt/jobs/etl.py", "--daily", "-v"],
    );
    stuck(
        d.check(at(110)).await,
        "process",
        &[
            "process 101 (python3, cmdline match for",
            "stopped (state T)",
        ],
    );
}

#[tokio::test]
async fn cmdline_without_a_match_is_absent() {
    let fake = FakeProc::new();
    fake.put(100, "python3", 'S', 500, &["python3", "other.py"]);
    let mut d = process_detectors(
        &fake,
        RawProcess {
            cmdline: Some(r"etl\.py".into()),
            ..RawProcess::default()
        },
    );
    assert_eq!(d.pids().await, Vec::<i32>::new());
    stuck(
        d.check(at(60)).await,
        "process",
        &[r#"no process matches cmdline "etl\\.py""#],
    );
}

/// The real /proc: a process found by its command line, stopped with SIGSTOP.
#[tokio::test]
async fn real_stopped_process_is_found_by_cmdline_and_stuck() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;

    let mut child = std::process::Command::new("sleep")
        .arg("60.4242")
        .spawn()
        .expect("spawn sleep");
    let pid = i32::try_from(child.id()).expect("pid fits");
    let c = config(
        None,
        Some(RawProcess {
            cmdline: Some(r"^sleep 60\.4242$".into()),
            ..RawProcess::default()
        }),
        None,
        None,
    );
    let mut d = JobDetectors::new(c, PathBuf::from("/proc"), SystemTime::now());
    assert_eq!(d.pids().await, vec![pid]);
    assert_eq!(d.check(SystemTime::now()).await, Verdict::Healthy);

    kill(Pid::from_raw(pid), Signal::SIGSTOP).expect("SIGSTOP");
    // The stop is asynchronous; wait until the kernel shows it.
    let deadline = Instant::now() + Duration::from_secs(5);
    let verdict = loop {
        let v = d.check(SystemTime::now()).await;
        if v.fired() || Instant::now() > deadline {
            break v;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let _ = child.kill();
    let _ = child.wait();
    stuck(
        verdict,
        "process",
        &[&format!("process {pid} (sleep"), "stopped (state T)"],
    );
}

// === systemd (a fake systemctl) ===

/// A `systemctl` that prints the file `show` beside it and records its
/// arguments in `args`.
struct FakeSystemctl {
    dir: tempfile::TempDir,
}

impl FakeSystemctl {
    fn new(show: &str) -> Self {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("systemctl");
        fs::write(
            &path,
            "#!/bin/sh\nd=\"${0%/*}\"\necho \"$@\" > \"$d/args\"\nexec cat \"$d/show\"\n",
        )
        .expect("write systemctl");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod");
        let fake = FakeSystemctl { dir };
        fake.set(show);
        // Another test's fork may briefly hold the new file open for writing
        // (ETXTBSY); wait until it runs.
        for _ in 0..100 {
            if std::process::Command::new(&path).output().is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        fake
    }

    fn set(&self, show: &str) {
        fs::write(self.dir.path().join("show"), show).expect("write show");
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("systemctl")
    }

    fn args(&self) -> String {
        fs::read_to_string(self.dir.path().join("args")).expect("read args")
    }
}

fn systemd_detectors(systemctl: &FakeSystemctl, unit: &str) -> JobDetectors {
    let c = config(
        None,
        None,
        None,
        Some(RawSystemd {
            unit: Some(unit.into()),
            transition_stuck_after: None,
        }),
    );
    JobDetectors::new(c, PathBuf::from("/proc"), at(0)).with_systemctl(systemctl.path())
}

#[tokio::test]
async fn failed_systemd_unit_is_stuck() {
    let sc = FakeSystemctl::new(
        "LoadState=loaded\nActiveState=failed\nSubState=failed\nStateChangeTimestampMonotonic=5000000\n",
    );
    let mut d = systemd_detectors(&sc, "etl.service");
    stuck(
        d.check(at(10)).await,
        "systemd",
        &["unit etl.service has failed"],
    );
    assert!(sc.args().contains("-- etl.service"), "{}", sc.args());

    sc.set("LoadState=loaded\nActiveState=active\nSubState=running\n");
    assert_eq!(d.check(at(20)).await, Verdict::Healthy);
}

#[tokio::test]
async fn systemd_unit_activating_longer_than_limit_is_stuck() {
    let sc = FakeSystemctl::new(
        "LoadState=loaded\nActiveState=activating\nSubState=start-pre\nStateChangeTimestampMonotonic=5000000\n",
    );
    let mut d = systemd_detectors(&sc, "etl.service");
    assert_eq!(d.check(at(0)).await, Verdict::Healthy);
    assert_eq!(
        d.check(at(300)).await,
        Verdict::Healthy,
        "5m is not longer than 5m"
    );
    stuck(
        d.check(at(301)).await,
        "systemd",
        &[
            "has been activating (SubState=start-pre) for at least 5m 1s",
            "transition_stuck_after 5m",
        ],
    );

    // Re-entered between two checks (a new state change): counted anew.
    sc.set(
        "LoadState=loaded\nActiveState=activating\nSubState=start\nStateChangeTimestampMonotonic=9000000\n",
    );
    assert_eq!(d.check(at(310)).await, Verdict::Healthy);
    sc.set("LoadState=loaded\nActiveState=deactivating\nSubState=stop-sigterm\nStateChangeTimestampMonotonic=9500000\n");
    assert_eq!(d.check(at(400)).await, Verdict::Healthy);
    stuck(
        d.check(at(701)).await,
        "systemd",
        &["has been deactivating"],
    );
}

#[tokio::test]
async fn missing_systemctl_is_healthy() {
    let c = config(
        None,
        None,
        None,
        Some(RawSystemd {
            unit: Some("etl.service".into()),
            transition_stuck_after: None,
        }),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let mut d = JobDetectors::new(c, PathBuf::from("/proc"), at(0))
        .with_systemctl(dir.path().join("no-such-systemctl"));
    assert_eq!(d.check(at(10)).await, Verdict::Healthy);
    assert_eq!(d.check(at(10_000)).await, Verdict::Healthy);
}

#[tokio::test]
async fn systemd_unit_main_pid_is_read_from_proc() {
    let fake = FakeProc::new();
    fake.put(4321, "db", 'Z', 500, &[]);
    let sc = FakeSystemctl::new("MainPID=4321\n");
    let unit = RawProcess {
        systemd_unit: Some("db.service".into()),
        ..RawProcess::default()
    };
    let mut d = process_detectors(&fake, unit.clone()).with_systemctl(sc.path());
    assert_eq!(d.pids().await, vec![4321]);
    stuck(
        d.check(at(10)).await,
        "process",
        &["process 4321 (db, MainPID of unit db.service)", "zombie"],
    );
    assert!(
        sc.args().contains("-p MainPID -- db.service"),
        "{}",
        sc.args()
    );

    sc.set("MainPID=0\n");
    assert_eq!(d.pids().await, Vec::<i32>::new());
    assert_eq!(d.check(at(40)).await, Verdict::Healthy, "last seen 30s ago");
    stuck(
        d.check(at(70)).await,
        "process",
        &["unit db.service has no main process (MainPID=0)"],
    );
}

// === Probe (real commands) ===

fn probe_detectors(command: &[&str], timeout: &str, max_output: Option<i64>) -> JobDetectors {
    let c = config(
        None,
        None,
        Some(RawProbe {
            command: Some(command.iter().map(|s| (*s).to_owned()).collect()),
            timeout: Some(timeout.into()),
            max_output,
        }),
        None,
    );
    JobDetectors::new(c, PathBuf::from("/proc"), SystemTime::now())
}

#[tokio::test]
async fn probe_exiting_zero_is_healthy() {
    let mut d = probe_detectors(&["sh", "-c", "echo all good"], "10s", None);
    assert_eq!(d.check(SystemTime::now()).await, Verdict::Healthy);
}

#[tokio::test]
async fn probe_exiting_non_zero_is_stuck_with_its_output() {
    let mut d = probe_detectors(
        &["sh", "-c", "echo to-stdout; echo to-stderr >&2; exit 2"],
        "10s",
        None,
    );
    stuck(
        d.check(SystemTime::now()).await,
        "probe",
        &["exited with code 2", "to-stdout", "to-stderr"],
    );
}

#[tokio::test]
async fn probe_that_times_out_is_stuck() {
    let mut d = probe_detectors(&["sh", "-c", "sleep 5"], "200ms", None);
    let begun = Instant::now();
    let verdict = d.check(SystemTime::now()).await;
    let took = begun.elapsed();
    stuck(verdict, "probe", &["timed out after 200ms", "killed"]);
    assert!(took < Duration::from_secs(3), "took {took:?}");
}

#[tokio::test]
async fn probe_timeout_kills_its_children_too() {
    // The shell starts a child of its own, prints its pid and waits.
    let mut d = probe_detectors(&["sh", "-c", "sleep 30 & echo $!; wait"], "300ms", None);
    let e = stuck(d.check(SystemTime::now()).await, "probe", &["timed out"]);
    let pid: String = e
        .detail
        .rsplit("output: ")
        .next()
        .unwrap_or_default()
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    assert!(!pid.is_empty(), "{e:?}");
    let stat = Path::new("/proc").join(&pid).join("stat");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        // Gone, or a zombie waiting for whoever adopted it.
        match fs::read_to_string(&stat) {
            Err(_) => break,
            Ok(s) if s.rsplit(") ").next().is_some_and(|r| r.starts_with('Z')) => break,
            Ok(s) => assert!(Instant::now() < deadline, "grandchild still alive: {s}"),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn probe_output_is_bounded() {
    let mut d = probe_detectors(
        &["sh", "-c", "yes | head -c 100000; exit 3"],
        "10s",
        Some(1000),
    );
    let e = stuck(
        d.check(SystemTime::now()).await,
        "probe",
        &["exited with code 3", "(first 1000 of 100000 bytes)"],
    );
    // 500 lines of "y\n", escaped: the detail holds 1000 bytes of output, not more.
    let output = e.detail.rsplit("output: ").next().unwrap_or_default();
    let output = output.split(" (first").next().unwrap_or_default();
    let ys = output.matches('y').count();
    assert_eq!(ys, 500, "{:?}", e.detail);
}

#[tokio::test]
async fn probe_that_cannot_start_is_not_stuck() {
    let mut d = probe_detectors(&["/nonexistent/medic-probe"], "1s", None);
    assert_eq!(d.check(SystemTime::now()).await, Verdict::Healthy);
}

// === Heartbeat file ===

fn heartbeat_detectors(
    path: &Path,
    stale_after: &str,
    startup_grace: Option<&str>,
) -> JobDetectors {
    let c = config(
        Some(RawHeartbeatFile {
            path: Some(path.display().to_string()),
            stale_after: Some(stale_after.into()),
            startup_grace: startup_grace.map(Into::into),
        }),
        None,
        None,
        None,
    );
    JobDetectors::new(c, PathBuf::from("/proc"), at(0))
}

fn touch(path: &Path, mtime: SystemTime) {
    let f = fs::File::create(path).expect("create heartbeat");
    f.set_modified(mtime).expect("set mtime");
}

#[tokio::test]
async fn stale_heartbeat_file_is_stuck() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hb = dir.path().join("job.hb");
    touch(&hb, at(1000));
    let mut d = heartbeat_detectors(&hb, "2m", None);
    assert_eq!(d.check(at(1000)).await, Verdict::Healthy);
    assert_eq!(
        d.check(at(1120)).await,
        Verdict::Healthy,
        "2m is not older than 2m"
    );
    stuck(
        d.check(at(1000 + 723)).await,
        "heartbeat_file",
        &[&format!(
            "heartbeat file {} is 12m 3s old (stale_after 2m)",
            hb.display()
        )],
    );

    touch(&hb, at(1700));
    assert_eq!(d.check(at(1723)).await, Verdict::Healthy, "touched again");
}

#[tokio::test]
async fn missing_heartbeat_file_is_stuck_only_after_startup_grace() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hb = dir.path().join("job.hb");
    let mut d = heartbeat_detectors(&hb, "1m", Some("10m"));
    assert_eq!(d.check(at(0)).await, Verdict::Healthy);
    assert_eq!(d.check(at(599)).await, Verdict::Healthy);
    stuck(
        d.check(at(600)).await,
        "heartbeat_file",
        &["is missing, 10m after start (startup_grace 10m)"],
    );
}

#[tokio::test]
async fn startup_grace_defaults_to_stale_after() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hb = dir.path().join("job.hb");
    let mut d = heartbeat_detectors(&hb, "3m", None);
    assert_eq!(d.check(at(179)).await, Verdict::Healthy);
    stuck(
        d.check(at(180)).await,
        "heartbeat_file",
        &["startup_grace 3m"],
    );
}

#[tokio::test]
async fn heartbeat_file_that_cannot_be_read_is_not_stuck() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("file");
    fs::write(&file, "").expect("write");
    // Below a regular file: ENOTDIR, which says nothing about the job.
    let mut d = heartbeat_detectors(&file.join("job.hb"), "1m", None);
    assert_eq!(d.check(at(100_000)).await, Verdict::Healthy);
}

// === Several detectors ===

#[tokio::test]
async fn first_firing_detector_is_reported_and_every_detector_runs() {
    let fake = FakeProc::new();
    fake.put(1234, "etl", 'D', 500, &["etl"]);
    let pf = pidfile(fake.dir.path(), 1234);
    let hb = fake.dir.path().join("job.hb");
    touch(&hb, at(0));
    let c = config(
        Some(RawHeartbeatFile {
            path: Some(hb.display().to_string()),
            stale_after: Some("1m".into()),
            startup_grace: None,
        }),
        Some(by_pidfile(&pf)),
        None,
        None,
    );
    let mut d = JobDetectors::new(c, fake.root(), at(0)).with_clock_ticks(100);
    // Heartbeat stale: reported first, while the process detector starts
    // counting state D all the same.
    stuck(d.check(at(100)).await, "heartbeat_file", &["is 1m 40s old"]);
    touch(&hb, at(221));
    stuck(
        d.check(at(221)).await,
        "process",
        &["state D", "for at least 2m 1s"],
    );
}

#[tokio::test]
async fn pids_are_empty_without_a_process_detector() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = heartbeat_detectors(&dir.path().join("hb"), "1m", None);
    assert_eq!(d.pids().await, Vec::<i32>::new());
}

// === Validation ===

fn errors(
    heartbeat_file: Option<RawHeartbeatFile>,
    process: Option<RawProcess>,
    probe: Option<RawProbe>,
    systemd: Option<RawSystemd>,
) -> Vec<String> {
    let mut errs = Errors::default();
    let _ = detect::validate(
        heartbeat_file.as_ref(),
        process.as_ref(),
        probe.as_ref(),
        systemd.as_ref(),
        &mut errs,
        "jobs[3]",
    );
    match errs.finish(()) {
        Ok(()) => Vec::new(),
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn job_without_detectors_is_an_error() {
    assert_eq!(
        errors(None, None, None, None),
        vec![
            "jobs[3]: no detector configured; set at least one of heartbeat_file, process, probe, systemd"
        ]
    );
}

#[test]
fn every_detector_error_is_reported_with_its_key_path() {
    let errs = errors(
        Some(RawHeartbeatFile {
            path: Some("relative/job.hb".into()),
            stale_after: Some("x".into()),
            startup_grace: None,
        }),
        Some(RawProcess {
            cmdline: Some("etl(".into()),
            d_state_for: Some("0s".into()),
            max_runtime: Some("soon".into()),
            ..RawProcess::default()
        }),
        Some(RawProbe {
            command: Some(vec![]),
            timeout: Some("0s".into()),
            max_output: Some(0),
        }),
        Some(RawSystemd {
            unit: Some("-H evil".into()),
            transition_stuck_after: Some("forever".into()),
        }),
    );
    let paths: Vec<&str> = errs.iter().filter_map(|e| e.split(": ").next()).collect();
    assert_eq!(
        paths,
        vec![
            "jobs[3].heartbeat_file.path",
            "jobs[3].heartbeat_file.stale_after",
            "jobs[3].process.cmdline",
            "jobs[3].process.max_runtime",
            "jobs[3].process.d_state_for",
            "jobs[3].probe.command",
            "jobs[3].probe.timeout",
            "jobs[3].probe.max_output",
            "jobs[3].systemd.unit",
            "jobs[3].systemd.transition_stuck_after",
        ],
        "{errs:#?}"
    );
    assert!(errs[1].contains(r#"invalid duration "x""#), "{}", errs[1]);
    assert!(errs[0].contains("absolute path"), "{}", errs[0]);
}

#[test]
fn process_is_found_exactly_one_way() {
    let errs = errors(
        None,
        Some(RawProcess {
            pidfile: Some("/run/etl.pid".into()),
            cmdline: Some("etl".into()),
            ..RawProcess::default()
        }),
        None,
        None,
    );
    assert_eq!(
        errs,
        vec![
            "jobs[3].process: set exactly one of pidfile, systemd_unit, cmdline (found pidfile, cmdline)"
        ]
    );
    let errs = errors(None, Some(RawProcess::default()), None, None);
    assert_eq!(
        errs,
        vec!["jobs[3].process: set one of pidfile, systemd_unit, cmdline"]
    );
    let errs = errors(
        None,
        Some(RawProcess {
            cmdline: Some(String::new()),
            ..RawProcess::default()
        }),
        None,
        None,
    );
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].starts_with("jobs[3].process.cmdline: must not be empty"));
}

#[test]
fn defaults_are_documented_values() {
    let c = config(
        Some(RawHeartbeatFile {
            path: Some("/run/etl.hb".into()),
            stale_after: Some("5m".into()),
            startup_grace: None,
        }),
        Some(RawProcess {
            systemd_unit: Some("etl.service".into()),
            ..RawProcess::default()
        }),
        Some(RawProbe {
            command: Some(vec!["/usr/local/bin/check-etl".into()]),
            ..RawProbe::default()
        }),
        Some(RawSystemd {
            unit: Some("etl.service".into()),
            ..RawSystemd::default()
        }),
    );
    let hb = c.heartbeat_file.expect("heartbeat");
    assert_eq!(
        hb.startup_grace,
        Duration::from_secs(300),
        "startup_grace = stale_after"
    );
    let p = c.process.expect("process");
    assert_eq!(p.target, ProcessTarget::SystemdUnit("etl.service".into()));
    assert_eq!(p.d_state_for, Duration::from_secs(120));
    assert_eq!(p.absent_grace, Duration::from_secs(60));
    assert_eq!(p.max_runtime, None);
    assert!(p.stopped_is_stuck && p.absent_is_stuck);
    let probe = c.probe.expect("probe");
    assert_eq!(probe.timeout, Duration::from_secs(10));
    assert_eq!(probe.max_output, 4096);
    let sd = c.systemd.expect("systemd");
    assert_eq!(sd.transition_stuck_after, Duration::from_secs(300));
}

#[test]
fn raw_sections_read_from_toml_with_defaults() {
    #[derive(serde::Deserialize)]
    struct Job {
        process: Option<RawProcess>,
        probe: Option<RawProbe>,
    }
    let mut errs = Errors::default();
    let job: Job = medic_policy::config::parse_toml(
        "process = { cmdline = 'etl', stopped_is_stuck = false }\nprobe = { command = ['true'], max_output = 10 }\n",
        &mut errs,
    )
    .expect("parses");
    assert!(errs.is_empty());
    let p = job.process.expect("process");
    assert_eq!(p.stopped_is_stuck, Some(false));
    assert_eq!(p.absent_is_stuck, None);
    assert_eq!(job.probe.expect("probe").max_output, Some(10));
}
