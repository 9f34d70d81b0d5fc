//! The agent's footprint: the release binary watching 20 jobs with mixed
//! detectors at a 10 s check interval, measured from /proc over at least 60 s.
//! A coordinator serves it in the same process, so heartbeats flow.
//!
//! It runs twice: a baseline, then with pre and post hooks and probation on
//! every job and one more job frozen as the measurement starts, so that a
//! whole restart (hooks, verification, probation) happens inside it.
//!
//! Run: `cargo bench -p medic-agent --bench footprint` (add `-- --secs N` to
//! measure each run longer; default 90). Goal (issues 4 and 16): under 8 MiB
//! RSS and 0.2% of one core.

#![allow(clippy::unwrap_used, clippy::cast_precision_loss)]

use std::fmt::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use medic_coordinator::testing::LiveServer;

fn usage(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let f: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .collect();
    // utime + stime of the agent and of the children it waited for (probes).
    let ticks: u64 = [11, 12, 13, 14]
        .iter()
        .map(|&i| f[i].parse::<u64>().unwrap())
        .sum();
    (rss, ticks)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        return;
    }
    let secs: u64 = args
        .iter()
        .position(|a| a == "--secs")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(90);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    // A coordinator for the agent to heartbeat to.
    let server = rt.block_on(LiveServer::start(
        "[server]\nadmission = { per_second = 1000, burst = 1000 }\n\
             [fleet]\nheartbeat_interval = \"10s\"\n[limits.restart_job]\ncooldown = \"0s\"\n",
        &d.join("coordinator"),
    ));
    let addr = server.addr;

    let base = measure(&rt, d, &addr.to_string(), false, secs);
    let hooked = measure(&rt, d, &addr.to_string(), true, secs);
    println!(
        "medic-agent, 20 jobs (heartbeat files, cmdline processes, probes), check every 10 s, over {secs} s each:"
    );
    for (what, m) in [
        ("baseline (no hooks, no action)", &base),
        (
            "pre/post hooks and 30s probation on every job, one job frozen and fixed",
            &hooked,
        ),
    ] {
        println!(
            "  {what}:\n    RSS {:.2} MiB (peak {:.2} MiB), CPU {:.3}% of one core (agent and its children){}",
            m.rss as f64 / 1024.0,
            m.peak as f64 / 1024.0,
            m.cpu * 100.0,
            m.outcome
                .as_ref()
                .map(|o| format!("\n    the frozen job's permit: {o}"))
                .unwrap_or_default()
        );
    }
    println!(
        "  ratio with hooks and probation to baseline: RSS {:.2}x, CPU {:.2}x",
        hooked.peak as f64 / base.peak as f64,
        hooked.cpu / base.cpu
    );
    rt.block_on(server.stop());
}

/// What one run of the agent used.
struct Measured {
    rss: u64,
    peak: u64,
    cpu: f64,
    /// With hooks: how the frozen job's permit ended.
    outcome: Option<String>,
}

/// Runs the agent over 20 healthy jobs for `secs` after 12 s of settling.
/// With `hooks`, every job has pre and post hooks and a 30 s probation, and
/// one more job, a shell loop with a pidfile, is frozen as the measurement
/// starts: its restart runs the hooks, verification and probation inside
/// the window.
fn measure(
    rt: &tokio::runtime::Runtime,
    d: &std::path::Path,
    addr: &str,
    hooks: bool,
    secs: u64,
) -> Measured {
    let d = &d.join(if hooks { "hooks" } else { "base" });
    std::fs::create_dir_all(d).unwrap();
    let extra = if hooks {
        "probation = \"30s\"\n[jobs.pre]\ncommand = [\"true\"]\n[jobs.post]\ncommand = [\"true\"]\n"
    } else {
        ""
    };
    // 20 healthy jobs: 7 heartbeat files, 7 processes found by cmdline, 6
    // probes (`true`), each job with one or two detectors.
    let mut jobs = String::new();
    let mut keep = Vec::new();
    for i in 0..20 {
        let hb = d.join(format!("job{i}.hb"));
        std::fs::write(&hb, "").unwrap();
        // A restart must have something to act on (check-config refuses a
        // job whose restart could change nothing); none runs here.
        write!(
            jobs,
            "[[jobs]]\nname = \"job{i}\"\n{extra}[jobs.restart]\ncommand = [\"true\"]\n"
        )
        .unwrap();
        match i % 3 {
            0 => write!(
                jobs,
                "[jobs.heartbeat_file]\npath = \"{}\"\nstale_after = \"1h\"\n",
                hb.display()
            )
            .unwrap(),
            1 => {
                let n = 100_000 + i + if hooks { 100 } else { 0 };
                let child = Command::new("sleep").arg(n.to_string()).spawn().unwrap();
                keep.push(child);
                write!(
                    jobs,
                    "[jobs.process]\ncmdline = \"^sleep {n}$\"\n[jobs.heartbeat_file]\npath = \"{}\"\nstale_after = \"1h\"\n",
                    hb.display()
                )
                .unwrap();
            }
            _ => write!(
                jobs,
                "[jobs.probe]\ncommand = [\"true\"]\ntimeout = \"5s\"\n"
            )
            .unwrap(),
        }
    }
    let pidfile = d.join("frozen.pid");
    if hooks {
        std::fs::write(
            d.join("frozen.sh"),
            format!(
                "echo $$ > {}\nwhile true; do touch {}; sleep 1; done\n",
                pidfile.display(),
                d.join("frozen.hb").display()
            ),
        )
        .unwrap();
        std::fs::write(
            d.join("start.sh"),
            format!(
                "nohup sh {} >/dev/null 2>&1 &\n",
                d.join("frozen.sh").display()
            ),
        )
        .unwrap();
        Command::new("sh").arg(d.join("start.sh")).status().unwrap();
        write!(
            jobs,
            "[[jobs]]\nname = \"frozen\"\n{extra}[jobs.restart]\ncommand = [\"sh\", \"{}\"]\n\
             [jobs.heartbeat_file]\npath = \"{}\"\n[jobs.process]\npidfile = \"{}\"\n",
            d.join("start.sh").display(),
            d.join("frozen.hb").display(),
            pidfile.display()
        )
        .unwrap();
    }
    let config = d.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "host_id = \"bench-host\"\ncoordinators = [\"http://{addr}\"]\ncheck_interval = \"10s\"\nstate_dir = \"{}\"\n{jobs}",
            d.join("agent-state").display()
        ),
    )
    .unwrap();
    let mut agent = Command::new(env!("CARGO_BIN_EXE_medic-agent"))
        .args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let pid = agent.id();
    // Settle (first checks, connection), then measure.
    std::thread::sleep(Duration::from_secs(12));
    let frozen = std::fs::read_to_string(&pidfile).ok();
    if let Some(p) = &frozen {
        Command::new("kill")
            .args(["-STOP", p.trim()])
            .status()
            .unwrap();
    }
    if let Ok(Some(status)) = agent.try_wait() {
        panic!("the agent exited during settling ({status}): see its log above");
    }
    let (_, t0) = usage(pid);
    let start = Instant::now();
    let mut peak = 0;
    while start.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_secs(1));
        peak = peak.max(usage(pid).0);
    }
    let (rss, t1) = usage(pid);
    let cpu = (t1 - t0) as f64 / 100.0 / start.elapsed().as_secs_f64();
    let outcome = hooks.then(|| last_outcome(rt, addr));
    let _ = agent.kill();
    let _ = agent.wait();
    for mut c in keep {
        let _ = c.kill();
        let _ = c.wait();
    }
    if let Ok(p) = std::fs::read_to_string(&pidfile) {
        let _ = Command::new("kill").args(["-KILL", p.trim()]).status();
    }
    Measured {
        rss,
        peak,
        cpu,
        outcome,
    }
}

/// How the last permit in the coordinator's history ended, in its words.
fn last_outcome(rt: &tokio::runtime::Runtime, addr: &str) -> String {
    rt.block_on(async {
        let mut admin =
            medic_proto::pb::v1::admin_client::AdminClient::connect(format!("http://{addr}"))
                .await
                .unwrap();
        let events = admin
            .get_history(medic_proto::pb::v1::GetHistoryRequest {
                kinds: vec![medic_proto::pb::v1::EventKind::Outcome.into()],
                newest_first: true,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .events;
        match events.first().and_then(|e| e.payload.clone()) {
            Some(medic_proto::pb::v1::event::Payload::PermitEnded(end)) => {
                format!("{:?}: {}", end.state(), end.detail)
            }
            _ => "none ended within the window".to_owned(),
        }
    })
}
