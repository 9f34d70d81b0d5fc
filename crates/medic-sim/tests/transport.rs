//! The direct transport (the coordinator's handlers called in the
//! process) skips HTTP/2 and protobuf encoding, not rules: the same calls
//! get the same answers and leave the same audit history, event for
//! event, as over an agent's own gRPC connection; and a scenario holds
//! every invariant and repeats under its seed over either.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::time::Duration;

use medic_agent::AgentConfig;
use medic_client::CallError;
use medic_policy::{
    Action, Decision, Heartbeat, HostId, Outcome, PermitRef, PermitRequest, Problem, RequestId,
};
use medic_proto::request::{OutcomeReport, Renewal};
use medic_sim::coord::{Coordinator, Mode};
use medic_sim::host::{Link, SimClock, linked_coordinator};
use medic_sim::run::Transport;
use medic_sim::scenario::Scale;
mod common;

use common::{first_difference, run};
use medic_sim::{Options, Scenario};

/// Over both transports a scenario keeps every invariant, and over each
/// the same seed replays the same history. The two histories are not the
/// same event for event: calls at the same virtual instant reach the
/// coordinator in another order through the HTTP/2 connections' tasks
/// than called directly, and a breaker that opens between two of them
/// decides differently; both orders are ones a real fleet could produce,
/// which is what the invariant checker judges.
async fn assert_sound_over_both(name: &str, seed: u64) {
    for transport in [Transport::Grpc, Transport::Direct] {
        let a = run(name, seed, transport).await;
        let b = run(name, seed, transport).await;
        assert!(
            a.grants > 0 && a.history.len() > 10,
            "{name} over {transport:?}: too little happened ({} events, {} grants)",
            a.history.len(),
            a.grants
        );
        assert!(
            a.verdict.ok(),
            "{name} seed {seed} over {transport:?}: {:?}",
            a.verdict.violations
        );
        assert!(
            a.history == b.history,
            "{name} seed {seed} over {transport:?}: two runs differ: {}",
            first_difference(&a, &b)
        );
        assert_eq!(
            a.actions, b.actions,
            "{name} seed {seed} over {transport:?}"
        );
    }
}

#[tokio::test]
async fn a_scenario_holds_every_invariant_and_repeats_over_either_transport() {
    assert_sound_over_both("dependency-outage", 7).await;
}

#[tokio::test]
async fn a_partition_holds_every_invariant_and_repeats_over_either_transport() {
    assert_sound_over_both("partition", 3).await;
}

#[test]
fn a_grpc_run_is_replayed_over_grpc() {
    let opts = Options {
        seed: 5,
        short: true,
        transport: Transport::Grpc,
        ..Options::default()
    };
    assert_eq!(
        medic_sim::run::replay_command("steady", &opts),
        "medic-sim run steady --seed 5 --short --transport grpc"
    );
}

// === the same calls over both ===

/// One step of the script both coordinators are taken through.
#[derive(Clone, Copy, Debug)]
enum Step {
    /// Host `i` heartbeats, reporting its job stuck or not (from now on).
    Beat(usize, bool),
    /// Every host heartbeats, as stuck as it last said.
    BeatAll,
    /// Host `i` asks for `action` with request id suffix `id`.
    Ask(usize, Action, &'static str),
    /// Host `i` renews the permit it holds, or with a token one behind.
    Renew(usize, bool),
    /// Host `i` reports the outcome of the permit it holds.
    Report(usize, Outcome),
    /// Virtual time passes, every host heartbeating every 10 s (the
    /// coordinator's interval).
    Wait(Duration),
    /// Virtual time passes, every host silent.
    Silence(Duration),
}

const HOSTS: usize = 10;

fn host(i: usize) -> HostId {
    HostId::new(format!("h{i:02}")).unwrap()
}

/// One coordinator and the permits its hosts hold.
struct Side<C> {
    /// Its host's index.
    i: usize,
    calls: C,
    held: BTreeMap<usize, PermitRef>,
    stuck: bool,
}

fn show<T: Debug>(r: &Result<T, CallError>) -> String {
    match r {
        Ok(v) => format!("ok {v:?}"),
        Err(e) => format!("error {e} (transient: {})", e.is_transient()),
    }
}

impl<C: medic_agent::Coordinator> Side<C> {
    fn heartbeat(&self, i: usize, clock: &SimClock) -> Heartbeat {
        let labels = [
            ("rack".to_owned(), format!("r{}", i % 2)),
            ("zone".to_owned(), "z1".to_owned()),
        ];
        Heartbeat {
            host: host(i),
            labels: labels.into_iter().collect(),
            agent_version: "test".to_owned(),
            problems: if self.stuck {
                vec![Problem {
                    job: "ingest".to_owned(),
                    detector: "sim".to_owned(),
                    since: clock.now(),
                    detail: "stuck".to_owned(),
                }]
            } else {
                Vec::new()
            },
            held_permit: self.held.get(&i).cloned(),
            needs_human: None,
            state_error: None,
        }
    }

    /// Takes `step`; what each call answered, one line per call.
    async fn take(&mut self, step: Step, clock: &SimClock) -> Vec<String> {
        match step {
            Step::Beat(i, stuck) => {
                self.stuck = stuck;
                let hb = self.heartbeat(i, clock);
                vec![show(&self.calls.heartbeat(hb).await)]
            }
            Step::BeatAll => {
                let hb = self.heartbeat(self.i, clock);
                vec![show(&self.calls.heartbeat(hb).await)]
            }
            Step::Ask(i, action, id) => {
                let request = PermitRequest {
                    request_id: RequestId::new(format!("h{i:02}-{id}")).unwrap(),
                    host: host(i),
                    action,
                    job: "ingest".to_owned(),
                    reason: "stuck".to_owned(),
                    dry_run: false,
                };
                let r = self.calls.request_permit(request).await;
                if let Ok(Decision::Granted { permit, .. }) = &r {
                    self.held.insert(
                        i,
                        PermitRef {
                            id: permit.id.clone(),
                            token: permit.token,
                        },
                    );
                }
                vec![show(&r)]
            }
            Step::Renew(i, stale) => {
                let mut permit = self.held.get(&i).cloned().expect("a held permit");
                if stale {
                    permit.token.0 -= 1;
                }
                let renewal = Renewal {
                    host: host(i),
                    permit,
                };
                vec![show(&self.calls.renew_permit(renewal).await)]
            }
            Step::Report(i, outcome) => {
                let permit = self.held.get(&i).cloned().expect("a held permit");
                let report = OutcomeReport {
                    host: host(i),
                    permit,
                    outcome,
                    detail: "done".to_owned(),
                };
                vec![show(&self.calls.report_outcome(report).await)]
            }
            Step::Wait(_) | Step::Silence(_) => Vec::new(),
        }
    }
}

/// Grants, replays, each kind of denial (warm-up, one at a time,
/// cooldown, a cap, an open breaker), renewals and outcomes with good and
/// stale tokens, and a permit that expires while its host is silent.
fn script() -> Vec<Step> {
    use Action::{RebootHost, RestartJob};
    use Step::*;
    vec![
        BeatAll,
        Ask(0, RestartJob, "warming"),
        Wait(Duration::from_secs(40)),
        Beat(0, true),
        Ask(0, RestartJob, "a"),
        Ask(0, RestartJob, "a"),
        Ask(0, RestartJob, "b"),
        Renew(0, false),
        Renew(0, true),
        Wait(Duration::from_secs(10)),
        Report(0, Outcome::Succeeded),
        Report(0, Outcome::Succeeded),
        Beat(0, false),
        Ask(0, RestartJob, "c"),
        Beat(1, true),
        Beat(3, true),
        Ask(1, RebootHost, "a"),
        Ask(3, RebootHost, "a"),
        Beat(2, true),
        Beat(4, true),
        Beat(6, true),
        Ask(2, RestartJob, "a"),
        Wait(Duration::from_secs(60)),
        Silence(Duration::from_secs(20 * 60)),
        BeatAll,
        Ask(4, RestartJob, "late"),
    ]
}

fn agent_config(i: usize) -> AgentConfig {
    AgentConfig::from_toml(&format!(
        r#"
host_id = "h{i:02}"
coordinators = ["{url}"]
request_timeout = "5s"
state_dir = "/nonexistent/medic-sim-test"
reboot_command = ["false"]

[[jobs]]
name = "ingest"
restart = {{ command = ["true"] }}
heartbeat_file = {{ path = "/nonexistent/ingest.hb" }}
"#,
        url = medic_sim::coord::MEMORY_URL,
    ))
    .unwrap()
}

async fn start(clock: SimClock, dir: &std::path::Path) -> Coordinator {
    let scenario = Scenario::load("steady").unwrap();
    let state = dir.join("state");
    std::fs::create_dir_all(&state).unwrap();
    let toml = Scale(1.0).coordinator_toml(&scenario.coordinator, &state);
    // As a run on virtual time: admission control counts real time (its
    // own clock), which would make the answers depend on the machine.
    let mut table: toml::Table = toml::from_str(&toml).unwrap();
    let most = i64::from(medic_policy::config::MAX_COUNT);
    let mut admission = toml::Table::new();
    admission.insert("per_second".into(), most.into());
    admission.insert("burst".into(), most.into());
    table["server"]
        .as_table_mut()
        .unwrap()
        .insert("admission".into(), admission.into());
    let toml = toml::to_string(&table).unwrap();
    Coordinator::start(Mode::Memory { clock }, &toml, dir)
        .await
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn the_same_calls_get_the_same_answers_and_history_over_grpc_and_direct() {
    let clock = SimClock::start_virtual();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let grpc = start(clock, dir_a.path()).await;
    let direct = start(clock, dir_b.path()).await;
    let link = |c: &Coordinator, direct: bool| Link {
        connector: c.memory().cloned().unwrap(),
        direct: if direct { c.direct().cloned() } else { None },
        cut: None,
    };
    let (link_a, link_b) = (link(&grpc, false), link(&direct, true));
    let mut a: Vec<Side<_>> = Vec::new();
    let mut b: Vec<Side<_>> = Vec::new();
    for i in 0..HOSTS {
        let config = agent_config(i);
        a.push(Side {
            i,
            calls: linked_coordinator(&config, &link_a).unwrap(),
            held: BTreeMap::new(),
            stuck: false,
        });
        b.push(Side {
            i,
            calls: linked_coordinator(&config, &link_b).unwrap(),
            held: BTreeMap::new(),
            stuck: false,
        });
    }
    // One client per host, as in a run: every step goes to the client of
    // the host it names.
    let owner = |step: Step| match step {
        Step::Beat(i, _) | Step::Ask(i, ..) | Step::Renew(i, _) | Step::Report(i, _) => Some(i),
        Step::BeatAll | Step::Wait(_) | Step::Silence(_) => None,
    };
    let mut answers = Vec::new();
    let mut steps = Vec::new();
    for step in script() {
        match step {
            Step::Wait(d) => {
                for _ in 0..d.as_secs() / 10 {
                    steps.push(Step::Silence(Duration::from_secs(10)));
                    steps.push(Step::BeatAll);
                }
            }
            other => steps.push(other),
        }
    }
    for step in steps {
        if let Step::Silence(d) = step {
            tokio::time::sleep(d).await;
            continue;
        }
        let (over_grpc, over_direct) = match owner(step) {
            Some(i) => (a[i].take(step, &clock).await, b[i].take(step, &clock).await),
            None => {
                let (mut x, mut y) = (Vec::new(), Vec::new());
                for (sa, sb) in a.iter_mut().zip(b.iter_mut()) {
                    x.extend(sa.take(step, &clock).await);
                    y.extend(sb.take(step, &clock).await);
                }
                (x, y)
            }
        };
        assert_eq!(over_grpc, over_direct, "{step:?}");
        answers.extend(over_grpc);
    }
    let seen = answers.join("\n");
    for expected in [
        "WarmingUp",
        "replayed: true",
        "replayed: false",
        "HostBusy",
        "Cooldown",
        "ConcurrencyCap",
        "BreakerOpen",
        "FAILED_PRECONDITION",
    ] {
        assert!(
            seen.contains(expected),
            "no answer says {expected:?}:\n{seen}"
        );
    }
    let (history_a, history_b) = (
        grpc.history().await.unwrap(),
        direct.history().await.unwrap(),
    );
    assert!(history_a.len() > 5, "{history_a:?}");
    assert_eq!(history_a, history_b);
}
