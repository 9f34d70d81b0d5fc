//! `medic-sim replay`: a history recorded by the real decision engine,
//! exported through medicctl's own JSON types, decided again under the
//! same and under other limits.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, SystemTime};

use medic_policy::{
    Action, Decision, Engine, Event, Heartbeat, HostId, Labels, Outcome, PermitRef, PermitRequest,
    PolicyConfig, RequestId,
};
use medic_proto::pb::v1 as pb;
use medic_sim::replay::{Decided, replay_file};

fn config(rate_count: u32) -> String {
    format!(
        r#"
[fleet]
heartbeat_interval = "10s"
host_ttl = "30s"
warmup = "30s"
[breaker]
unhealthy_percent = 90
[limits.restart_job]
max_in_flight = 2
cooldown = "1m"
rate = {{ count = {rate_count}, per = "10m", burst = 0 }}
"#
    )
}

fn policy(text: &str) -> PolicyConfig {
    medic_coordinator::CoordinatorConfig::from_toml(text)
        .unwrap()
        .policy
}

fn host(i: usize) -> HostId {
    HostId::new(format!("h{i:02}")).unwrap()
}

/// Twenty hosts; eight of them ask for a restart ten seconds apart, and a
/// granted restart succeeds 30 s later. Recorded under `config(60)` (the
/// cap of 2 denies some), and
/// exported as `medicctl history -o json` writes it.
fn recorded_history(dir: &Path) -> std::path::PathBuf {
    recorded_history_with(dir, false)
}

/// The same, and with `again_after_two_hours` the same eight requests
/// again two quiet hours later.
fn recorded_history_with(dir: &Path, again_after_two_hours: bool) -> std::path::PathBuf {
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let mut engine = Engine::new(policy(&config(60)), t0);
    let hb = |engine: &mut Engine, i: usize, now| {
        engine.heartbeat(
            Heartbeat {
                host: host(i),
                labels: Labels::from([("rack".to_owned(), format!("r{}", i % 4))]),
                agent_version: "test".into(),
                problems: vec![],
                held_permit: None,
                needs_human: None,
                state_error: None,
            },
            now,
        );
    };
    let mut wire: Vec<pb::Event> = Vec::new();
    let mut id = 0;
    let push_events = |engine: &mut Engine, wire: &mut Vec<pb::Event>, id: &mut u64| {
        for e in engine.take_events() {
            if matches!(e, Event::PermitGranted { .. } | Event::PermitEnded { .. }) {
                *id += 1;
                wire.push(pb::Event::from_policy(*id, e));
            }
        }
    };
    let mut pending: Vec<(SystemTime, HostId, PermitRef)> = Vec::new();
    let last_step = if again_after_two_hours { 760 } else { 40 };
    for step in 0..=last_step {
        let now = t0 + Duration::from_secs(step * 10);
        for i in 0..20 {
            hb(&mut engine, i, now);
        }
        pending.retain(|(at, h, p)| {
            if *at <= now {
                engine
                    .report_outcome(h, p, Outcome::Succeeded, "fixed", now)
                    .unwrap();
                false
            } else {
                true
            }
        });
        push_events(&mut engine, &mut wire, &mut id);
        if (4..12).contains(&step) || (again_after_two_hours && (724..732).contains(&step)) {
            let i = usize::try_from(step % 720).unwrap();
            let req = PermitRequest {
                request_id: RequestId::new(format!("r{step}")).unwrap(),
                host: host(i),
                action: Action::RestartJob,
                job: "ingest".into(),
                reason: "stuck".into(),
                dry_run: false,
            };
            match engine.request_permit(req, now).unwrap() {
                Decision::Granted { permit, .. } => pending.push((
                    now + Duration::from_secs(30),
                    host(i),
                    PermitRef {
                        id: permit.id.clone(),
                        token: permit.token,
                    },
                )),
                d => {
                    let denial = d.denial().unwrap().clone();
                    push_events(&mut engine, &mut wire, &mut id);
                    id += 1;
                    wire.push(pb::Event::denied(
                        id,
                        now,
                        &host(i),
                        Action::RestartJob,
                        denial,
                        1,
                    ));
                }
            }
            push_events(&mut engine, &mut wire, &mut id);
        }
    }
    let export = medic_cli::json::History {
        events: wire.iter().map(medic_cli::json::Event::from).collect(),
        next_page_token: None,
    };
    let path = dir.join("history.json");
    std::fs::write(&path, serde_json::to_string_pretty(&export).unwrap()).unwrap();
    path
}

#[test]
fn replaying_a_history_under_its_own_limits_reproduces_every_decision() {
    let dir = tempfile::tempdir().unwrap();
    let path = recorded_history(dir.path());
    let r = replay_file(&path, &policy(&config(60)), 20).unwrap();
    let text = medic_sim::replay::render(&r, false);
    assert_eq!(r.rows.len(), 8, "{text}");
    assert_eq!(r.fleet, 20);
    // Both kinds of decision were recorded: grants, and the cap's denials.
    assert!(r.grants().0 >= 2 && r.grants().0 < 8, "{text}");
    assert!(text.contains("deny concurrency_cap"), "{text}");
    assert_eq!(
        r.agreeing(),
        r.rows.len(),
        "{}",
        medic_sim::replay::render(&r, false)
    );
}

#[test]
fn two_quiet_hours_in_the_history_are_not_read_as_silence() {
    let dir = tempfile::tempdir().unwrap();
    let path = recorded_history_with(dir.path(), true);
    let r = replay_file(&path, &policy(&config(60)), 20).unwrap();
    let text = medic_sim::replay::render(&r, false);
    assert_eq!(r.rows.len(), 16, "{text}");
    assert_eq!(r.agreeing(), 16, "{text}");
    assert!(!text.contains("breaker"), "{text}");
}

#[test]
fn a_tighter_rate_under_the_candidate_denies_what_was_granted_and_says_by_which_rule() {
    let dir = tempfile::tempdir().unwrap();
    let path = recorded_history(dir.path());
    let r = replay_file(&path, &policy(&config(1)), 20).unwrap();
    let text = medic_sim::replay::render(&r, false);
    let (recorded, candidate) = r.grants();
    assert_eq!(candidate, 1, "{text}");
    let changed: Vec<_> = r
        .rows
        .iter()
        .filter(|x| x.recorded == Decided::Granted && x.candidate != Decided::Granted)
        .collect();
    assert_eq!(changed.len(), recorded - 1, "{text}");
    assert!(
        changed
            .iter()
            .all(|x| x.candidate == Decided::Denied("rate_limited".into())),
        "{changed:?}"
    );
    let text = medic_sim::replay::render(&r, true);
    assert!(
        text.contains("<- differs") && text.contains("rate_limited"),
        "{text}"
    );
    assert!(
        text.contains(&format!("agree on {} of 8 requests", r.agreeing())),
        "{text}"
    );
    assert!(r.agreeing() < 8);
}

#[test]
fn a_looser_candidate_grants_what_was_denied() {
    let dir = tempfile::tempdir().unwrap();
    let path = recorded_history(dir.path());
    let looser = config(600).replace("max_in_flight = 2", "max_in_flight = 20");
    let r = replay_file(&path, &policy(&looser), 20).unwrap();
    let text = medic_sim::replay::render(&r, false);
    assert!(r.grants().0 < 8, "{text}");
    assert_eq!(r.grants().1, 8, "{text}");
}

#[test]
fn a_history_that_is_not_an_export_is_refused_naming_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.json");
    std::fs::write(&path, "{\"events\": 3}\nnot json\n").unwrap();
    let e = replay_file(&path, &policy(&config(3)), 0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("bad.json") && e.contains("line 1"), "{e}");
}

#[test]
fn a_candidate_config_with_an_unknown_key_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("candidate.toml");
    std::fs::write(&path, "[breaker]\nunhealthy_pct = 30\n").unwrap();
    let e = medic_sim::replay::candidate(&path).unwrap_err().to_string();
    assert!(e.contains("unhealthy_pct"), "{e}");
}

#[test]
fn the_command_prints_both_decisions_and_only_the_changes_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let history = recorded_history(dir.path());
    let candidate = dir.path().join("candidate.toml");
    std::fs::write(&candidate, config(1)).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_medic-sim"))
        .args([
            "replay",
            "--fleet-size",
            "20",
            "--changes-only",
            "--history",
        ])
        .arg(&history)
        .arg("--config")
        .arg(&candidate)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("deny rate_limited"), "{text}");
    assert!(
        text.lines()
            .filter(|l| l.contains(" h0"))
            .all(|l| l.contains("<- differs")),
        "--changes-only printed an agreeing row:\n{text}"
    );
}
