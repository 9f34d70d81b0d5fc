//! `medic-agent run --log-format json` as a log shipper reads it: every
//! line of standard error is one JSON object with one `message`, through a
//! denial and a restart whose command writes to its stderr (that output is
//! a field of a log line, never a raw line of the agent's stream).

#![allow(clippy::unwrap_used)]

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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
"#;

async fn outcomes(admin: &mut pb::admin_client::AdminClient<tonic::transport::Channel>) -> usize {
    admin
        .get_history(pb::GetHistoryRequest {
            kinds: vec![pb::EventKind::Outcome.into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_hold_one_message_per_line_and_child_output_in_fields() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let server = LiveServer::start(COORDINATOR, &d.join("coordinator")).await;
    let addr = server.addr;
    let mut admin = server.admin().await;
    let pause_id = admin
        .pause(pb::PauseRequest {
            scope: None,
            reason: "incident".into(),
            duration: None,
        })
        .await
        .unwrap()
        .into_inner()
        .pause
        .unwrap()
        .pause_id;

    // The job, and a restart command that talks on stderr and starts it.
    let pidfile = d.join("job.pid");
    std::fs::write(
        d.join("job.sh"),
        format!(
            "echo $$ > {}\nwhile true; do touch {}; sleep 0.2; done\n",
            pidfile.display(),
            d.join("job.hb").display()
        ),
    )
    .unwrap();
    std::fs::write(
        d.join("start.sh"),
        format!(
            "echo 'restart-stderr-marker: starting \"job\"' >&2\nnohup sh {} >/dev/null 2>&1 &\n",
            d.join("job.sh").display()
        ),
    )
    .unwrap();
    Command::new("sh")
        .arg("-c")
        .arg(format!(
            "nohup sh {} >/dev/null 2>&1 &",
            d.join("job.sh").display()
        ))
        .status()
        .unwrap();
    let agent_toml = d.join("agent.toml");
    std::fs::write(
        &agent_toml,
        format!(
            r#"host_id = "h1"
coordinators = ["http://{addr}"]
check_interval = "200ms"
heartbeat_interval = "1s"
safety_margin = "1s"
state_dir = "{state}"
[[jobs]]
name = "job"
confirm = 2
probation = "0s"
[jobs.restart]
grace = "2s"
command = ["sh", "{start}"]
verify_timeout = "5s"
[jobs.heartbeat_file]
path = "{hb}"
stale_after = "1s"
[jobs.process]
pidfile = "{pid}"
"#,
            state = d.join("agent-state").display(),
            start = d.join("start.sh").display(),
            hb = d.join("job.hb").display(),
            pid = pidfile.display(),
        ),
    )
    .unwrap();
    let mut agent = Command::new(env!("CARGO_BIN_EXE_medic-agent"))
        .args(["run", "--log-format", "json", "--config"])
        .arg(&agent_toml)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let pid = loop {
        if let Some(p) = std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
        {
            break p;
        }
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    Command::new("kill")
        .args(["-STOP", &pid.to_string()])
        .status()
        .unwrap();
    // Denied while paused, then granted once resumed.
    tokio::time::sleep(Duration::from_secs(3)).await;
    admin
        .resume(pb::ResumeRequest {
            target: Some(pb::resume_request::Target::PauseId(pause_id)),
            reason: "over".into(),
        })
        .await
        .unwrap();
    while outcomes(&mut admin).await == 0 {
        assert!(Instant::now() < deadline, "no outcome");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = Command::new("kill")
        .args(["-TERM", &agent.id().to_string()])
        .status();
    let mut log = String::new();
    agent
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    let _ = agent.wait();
    if let Some(p) = std::fs::read_to_string(&pidfile)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
    {
        let _ = Command::new("kill")
            .args(["-KILL", &p.to_string()])
            .status();
    }
    server.stop().await;

    let mut seen = Vec::new();
    for line in log.lines() {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}\n--- the whole log:\n{log}"));
        assert_eq!(
            line.matches("\"message\":").count(),
            1,
            "one message per line: {line}"
        );
        seen.push(
            v["fields"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
    }
    for want in [
        "permit denied; leaving the job alone",
        "restart command finished",
    ] {
        assert!(
            seen.iter().any(|m| m.starts_with(want)),
            "no {want:?} in:\n{log}"
        );
    }
    let restart = log
        .lines()
        .find(|l| l.contains("restart command finished"))
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(restart).unwrap();
    assert_eq!(
        v["fields"]["command_output"],
        "restart-stderr-marker: starting \"job\""
    );
}
