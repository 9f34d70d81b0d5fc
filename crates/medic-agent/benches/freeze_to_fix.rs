//! Time from a frozen job to its verified fix: the release agent binary
//! watching one real job (a shell loop that records its pid and touches a
//! heartbeat file every second) against a coordinator in this process. The
//! job is frozen with SIGSTOP again and again; each time the bench takes,
//! from the coordinator's audit history, when the permit was granted and
//! when it ended SUCCEEDED (probation off), and prints the median and p90
//! of each part.
//!
//! Run: `cargo bench -p medic-agent --bench freeze_to_fix` (add
//! `-- --freezes N`, default 20, and `--check-interval D`, default 1s).
//! Detection takes about `confirm` (3) check intervals, so the part before
//! the grant scales with `check_interval`; the part after it does not.

#![allow(clippy::unwrap_used, clippy::cast_precision_loss)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use medic_coordinator::testing::LiveServer;
use medic_proto::pb::v1 as pb;

const COORDINATOR: &str = r#"
[server]
admission = { per_second = 1000, burst = 1000 }
[fleet]
heartbeat_interval = "1s"
host_ttl = "3s"
warmup = "1s"
[limits.restart_job]
cooldown = "0s"
rate = { count = 1000, per = "10m", burst = 100 }
host_budget = { max_attempts = 1000, per = "1h" }
"#;

fn arg<T: std::str::FromStr>(args: &[String], name: &str) -> Option<T> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
}

fn pid_of(dir: &Path) -> Option<i32> {
    std::fs::read_to_string(dir.join("job.pid"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .filter(|p| Path::new(&format!("/proc/{p}")).exists())
}

fn at(ts: Option<&prost_types::Timestamp>) -> SystemTime {
    let ts = ts.unwrap();
    SystemTime::UNIX_EPOCH
        + Duration::new(
            u64::try_from(ts.seconds).unwrap(),
            u32::try_from(ts.nanos).unwrap(),
        )
}

/// The `p`th percentile (nearest rank) of sorted `xs`.
fn pct(xs: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * xs.len() as f64).ceil().max(1.0) as usize;
    xs[rank.min(xs.len()) - 1]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        return;
    }
    let freezes: usize = arg(&args, "--freezes").unwrap_or(20);
    let check: String = arg(&args, "--check-interval").unwrap_or_else(|| "1s".to_owned());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_owned();

    let server = rt.block_on(LiveServer::start(COORDINATOR, &d.join("coordinator")));
    let addr = server.addr;

    // The job, and the restart command that starts it again, detached.
    std::fs::write(
        d.join("job.sh"),
        format!(
            "echo $$ > {pid}\nwhile true; do touch {hb}; sleep 1; done\n",
            pid = d.join("job.pid").display(),
            hb = d.join("job.hb").display()
        ),
    )
    .unwrap();
    std::fs::write(
        d.join("start.sh"),
        format!(
            "nohup sh {} >/dev/null 2>&1 &\n",
            d.join("job.sh").display()
        ),
    )
    .unwrap();
    Command::new("sh").arg(d.join("start.sh")).status().unwrap();
    let config = d.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            r#"host_id = "bench-host"
coordinators = ["http://{addr}"]
check_interval = "{check}"
heartbeat_interval = "1s"
state_dir = "{state}"
[[jobs]]
name = "job"
probation = "0s"
[jobs.restart]
command = ["sh", "{start}"]
[jobs.heartbeat_file]
path = "{hb}"
[jobs.process]
pidfile = "{pid}"
"#,
            state = d.join("agent-state").display(),
            start = d.join("start.sh").display(),
            hb = d.join("job.hb").display(),
            pid = d.join("job.pid").display(),
        ),
    )
    .unwrap();
    let mut agent = Command::new(env!("CARGO_BIN_EXE_medic-agent"))
        .args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    let (mut detect, mut fix, mut total) = (Vec::new(), Vec::new(), Vec::new());
    rt.block_on(async {
        let mut admin = pb::admin_client::AdminClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        // Past the warm-up, with the host live.
        loop {
            let s = admin
                .get_status(pb::GetStatusRequest::default())
                .await
                .unwrap()
                .into_inner()
                .status
                .unwrap_or_default();
            if s.warming_up_until.is_none() && s.live_hosts >= 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let events = |kind: pb::EventKind| {
            let mut admin = admin.clone();
            async move {
                admin
                    .get_history(pb::GetHistoryRequest {
                        kinds: vec![kind.into()],
                        page_size: 1000,
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_inner()
                    .events
            }
        };
        for n in 0..freezes {
            // A healthy job whose heartbeat the agent has seen fresh.
            let pid = loop {
                if let Some(p) = pid_of(&d) {
                    break p;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            tokio::time::sleep(Duration::from_secs(2)).await;
            let frozen = SystemTime::now();
            let started = Instant::now();
            Command::new("kill")
                .args(["-STOP", &pid.to_string()])
                .status()
                .unwrap();
            let end = loop {
                assert!(
                    started.elapsed() < Duration::from_secs(300),
                    "no outcome for freeze {n}"
                );
                let ends = events(pb::EventKind::Outcome).await;
                if ends.len() > n {
                    break ends[n].clone();
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            let Some(pb::event::Payload::PermitEnded(ended)) = &end.payload else {
                panic!("{end:?}")
            };
            assert_eq!(ended.state(), pb::PermitState::Succeeded, "{ended:?}");
            let grant = events(pb::EventKind::Grant).await[n].clone();
            let granted = at(grant.time.as_ref());
            let verified = at(end.time.as_ref());
            let secs = |a: SystemTime, b: SystemTime| b.duration_since(a).unwrap().as_secs_f64();
            detect.push(secs(frozen, granted));
            fix.push(secs(granted, verified));
            total.push(secs(frozen, verified));
        }
    });
    for xs in [&mut detect, &mut fix, &mut total] {
        xs.sort_by(f64::total_cmp);
    }
    println!(
        "medic-agent, one job (heartbeat file every 1 s + pidfile), check every {check}, confirm 3, probation off, {freezes} freezes:"
    );
    for (what, xs) in [
        ("freeze -> permit granted (detection)", &detect),
        ("grant -> verified fix (restart, fresh evidence)", &fix),
        ("freeze -> verified fix", &total),
    ] {
        println!(
            "  {what:<48} median {:6.2} s   p90 {:6.2} s   max {:6.2} s",
            pct(xs, 50.0),
            pct(xs, 90.0),
            xs[xs.len() - 1]
        );
    }
    let _ = agent.kill();
    let _ = agent.wait();
    if let Some(p) = pid_of(&d) {
        let _ = Command::new("kill")
            .args(["-KILL", &p.to_string()])
            .status();
    }
    rt.block_on(server.stop());
}
