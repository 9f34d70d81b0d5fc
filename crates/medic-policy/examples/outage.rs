//! A shared dependency fails: what does medic allow, and what would the old
//! reboot script have done?
//!
//! `cargo run -p medic-policy --example outage` runs the decision engine on
//! its embedded defaults (or on `--config FILE`) over a simulated fleet of
//! 1,000 hosts in 20 racks. At minute 5 a dependency fails and 35% of the
//! hosts' jobs stick; at minute 25 it recovers. While it is down, restarts do
//! not help. Agents heartbeat every 10 s and ask for a restart when stuck,
//! then a reboot after two failed restarts. The legacy script reboots every
//! stuck host every minute, uncoordinated.
//!
//! This is the engine alone, in simulated time. `medic-sim` runs the real
//! coordinator and agents.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use medic_policy::{
    Action, Decision, Engine, Event, Heartbeat, HostId, Labels, Outcome, PermitRef, PermitRequest,
    PolicyConfig, Problem, RequestId, Time,
};

const HOSTS: usize = 1_000;
const RACKS: usize = 20;
const OUTAGE_START: u64 = 5 * 60;
const OUTAGE_END: u64 = 25 * 60;
const END: u64 = 60 * 60;
const STEP: u64 = 10;

struct Host {
    id: HostId,
    labels: Labels,
    stuck: bool,
    failed_restarts: u32,
    permit: Option<(PermitRef, Action, u64)>,
    attempt: u64,
}

fn main() {
    let config = match std::env::args().skip_while(|a| a != "--config").nth(1) {
        Some(path) => {
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| fail(&format!("cannot read {path}: {e}")));
            PolicyConfig::from_toml(&text)
                .unwrap_or_else(|e| fail(&format!("{path} is invalid:\n{e}")))
        }
        None => PolicyConfig::default(),
    };
    let t0 = Time::UNIX_EPOCH + Duration::from_secs(1_767_225_600);
    let mut engine = Engine::new(config, t0);
    let mut hosts: Vec<Host> = (0..HOSTS)
        .map(|i| Host {
            id: HostId::new(format!("host-{i:04}")).unwrap(),
            labels: Labels::from([("rack".to_owned(), format!("r{:02}", i % RACKS))]),
            stuck: false,
            failed_restarts: 0,
            permit: None,
            attempt: 0,
        })
        .collect();
    // Deterministic choice of the 35% hit by the outage.
    let hit = |i: usize| (i * 7919) % 100 < 35;

    let (mut restarts, mut reboots, mut legacy_reboots) = (0u32, 0u32, 0u32);
    let mut denials: std::collections::BTreeMap<&'static str, u32> = Default::default();
    println!("minute  stuck  medic: restarts reboots active breaker   legacy script: reboots");
    for t in (0..=END).step_by(STEP as usize) {
        let now = t0 + Duration::from_secs(t);
        let outage = (OUTAGE_START..OUTAGE_END).contains(&t);
        for (i, h) in hosts.iter_mut().enumerate() {
            if outage && hit(i) {
                h.stuck = true;
            }
            if !outage && t == OUTAGE_END {
                h.stuck = false; // the dependency is back; jobs recover
            }
        }
        if t % 60 == 0 {
            legacy_reboots += hosts.iter().filter(|h| h.stuck).count() as u32;
        }
        let (mut m_restart, mut m_reboot) = (0, 0);
        for h in &mut hosts {
            // A permit in hand: act, then report after 30 s.
            if let Some((r, action, granted_at)) = h.permit.clone()
                && t >= granted_at + 30
            {
                let helped = !outage;
                let outcome = if helped {
                    Outcome::Succeeded
                } else {
                    Outcome::Failed
                };
                let _ = engine.report_outcome(&h.id, &r, outcome, "simulated", now);
                h.permit = None;
                if helped {
                    h.stuck = false;
                    h.failed_restarts = 0;
                } else if action == Action::RestartJob {
                    h.failed_restarts += 1;
                }
            }
            let problems = if h.stuck {
                vec![Problem {
                    job: "ingest".into(),
                    detector: "probe".into(),
                    since: now,
                    detail: "probe failing".into(),
                }]
            } else {
                vec![]
            };
            engine.heartbeat(
                Heartbeat {
                    state_error: None,
                    host: h.id.clone(),
                    labels: h.labels.clone(),
                    agent_version: "example".into(),
                    problems,
                    held_permit: h.permit.as_ref().map(|p| p.0.clone()),
                    needs_human: None,
                },
                now,
            );
            if h.stuck && h.permit.is_none() {
                let action = if h.failed_restarts >= 2 {
                    Action::RebootHost
                } else {
                    Action::RestartJob
                };
                h.attempt += 1;
                let req = PermitRequest {
                    dry_run: false,
                    request_id: RequestId::new(format!("{}-{}", h.id, h.attempt)).unwrap(),
                    host: h.id.clone(),
                    action,
                    job: "ingest".into(),
                    reason: "probe failing".into(),
                };
                match engine.request_permit(req, now).unwrap() {
                    Decision::Granted { permit, .. } => {
                        h.permit = Some((
                            PermitRef {
                                id: permit.id,
                                token: permit.token,
                            },
                            action,
                            t,
                        ));
                        match action {
                            Action::RestartJob => m_restart += 1,
                            Action::RebootHost => m_reboot += 1,
                            // The outage asks only for the built-ins.
                            Action::Custom(_) => {}
                        }
                    }
                    Decision::Denied(d) => *denials.entry(d.reason.as_str()).or_default() += 1,
                    // This configuration asks for no approvals.
                    Decision::Waiting(_) => *denials.entry("waiting").or_default() += 1,
                }
            }
        }
        engine.tick(now);
        for e in engine.take_events() {
            match e {
                Event::BreakerOpened(trip) => {
                    println!("        breaker OPEN for {}: {}", trip.scope, trip.detail)
                }
                Event::BreakerClosed { scope, reason, .. } => {
                    println!("        breaker closed for {scope}: {reason}")
                }
                _ => {}
            }
        }
        restarts += m_restart;
        reboots += m_reboot;
        if t % 60 == 0 {
            let status = engine.status(now);
            let active: u32 = status.actions.iter().map(|a| a.active).sum();
            println!(
                "{:>6} {:>6} {:>15} {:>7} {:>6} {:>7} {:>24}",
                t / 60,
                hosts.iter().filter(|h| h.stuck).count(),
                m_restart,
                m_reboot,
                active,
                if status.breakers.is_empty() {
                    "closed"
                } else {
                    "OPEN"
                },
                hosts.iter().filter(|h| h.stuck).count(),
            );
        }
    }
    println!();
    println!(
        "over {} minutes of a {}-minute outage hitting 35% of {HOSTS} hosts:",
        END / 60,
        (OUTAGE_END - OUTAGE_START) / 60
    );
    println!("  legacy script: {legacy_reboots} reboots");
    println!("  medic:         {restarts} job restarts, {reboots} reboots");
    println!("  medic denials by reason: {denials:?}");
}

fn fail(msg: &str) -> ! {
    eprintln!("outage: {msg}");
    std::process::exit(78)
}
