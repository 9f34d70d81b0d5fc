//! The agent's footprint: the release binary watching 20 jobs with mixed
//! detectors at a 10 s check interval, measured from /proc over at least 60 s.
//! A coordinator serves it in the same process, so heartbeats flow.
//!
//! Run: `cargo bench -p medic-agent --bench footprint` (add `-- --secs N` to
//! measure longer; default 60). Goal (issue 4): under 8 MiB RSS and 0.2% of
//! one core.

#![allow(clippy::unwrap_used, clippy::cast_precision_loss)]

use std::fmt::Write as _;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use medic_coordinator::{Control, CoordinatorConfig, Listeners, SystemClock, run};
use medic_store::RedbStore;

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
        .unwrap_or(60);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    // A coordinator for the agent to heartbeat to.
    let (control, addr) = rt.block_on(async {
        let config =
            CoordinatorConfig::from_toml("[fleet]\nheartbeat_interval = \"10s\"\n").unwrap();
        let store = RedbStore::open(&d.join("coordinator")).unwrap();
        let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let metrics = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = grpc.local_addr().unwrap();
        let (control, rx) = tokio::sync::mpsc::channel(1);
        tokio::spawn(run(
            config,
            None,
            store,
            Listeners { grpc, metrics },
            rx,
            Arc::new(SystemClock),
        ));
        (control, addr)
    });

    // 20 healthy jobs: 8 heartbeat files, 6 processes found by cmdline, 6
    // probes (`true`), each job with one or two detectors.
    let mut jobs = String::new();
    let mut keep = Vec::new();
    for i in 0..20 {
        let hb = d.join(format!("job{i}.hb"));
        std::fs::write(&hb, "").unwrap();
        write!(jobs, "[[jobs]]\nname = \"job{i}\"\n").unwrap();
        match i % 3 {
            0 => write!(
                jobs,
                "[jobs.heartbeat_file]\npath = \"{}\"\nstale_after = \"1h\"\n",
                hb.display()
            )
            .unwrap(),
            1 => {
                let child = Command::new("sleep")
                    .arg(format!("{}", 100_000 + i))
                    .spawn()
                    .unwrap();
                keep.push(child);
                write!(
                    jobs,
                    "[jobs.process]\ncmdline = \"^sleep {}$\"\n[jobs.heartbeat_file]\npath = \"{}\"\nstale_after = \"1h\"\n",
                    100_000 + i,
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
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let pid = agent.id();
    // Settle (first checks, connection), then measure.
    std::thread::sleep(Duration::from_secs(12));
    let (_, t0) = usage(pid);
    let start = Instant::now();
    let mut peak = 0;
    while start.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_secs(1));
        peak = peak.max(usage(pid).0);
    }
    let (rss, t1) = usage(pid);
    let cpu = (t1 - t0) as f64 / 100.0 / start.elapsed().as_secs_f64();
    println!(
        "medic-agent, 20 jobs (heartbeat files, cmdline processes, probes), check every 10 s, over {secs} s:"
    );
    println!(
        "  RSS {:.2} MiB (peak {:.2} MiB), CPU {:.3}% of one core (agent and its probe children)",
        rss as f64 / 1024.0,
        peak as f64 / 1024.0,
        cpu * 100.0
    );
    let _ = agent.kill();
    let _ = agent.wait();
    for mut c in keep {
        let _ = c.kill();
        let _ = c.wait();
    }
    rt.block_on(async {
        let _ = control.send(Control::Shutdown).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    });
}
