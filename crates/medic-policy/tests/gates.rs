//! Alert gates through the public API: the config's checks (each error by
//! key path), and the gate rule fed with readings as the coordinator's
//! evaluators feed it.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::time::Duration;

use medic_policy::config::GateConfig;
use medic_policy::{
    Action, Decision, DenyReason, Engine, GateReading, GateReadings, Heartbeat, HostId, Labels,
    PermitRequest, PolicyConfig, RequestId, Time,
};

fn t0() -> Time {
    Time::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

const BASE: &str = r#"
[fleet]
heartbeat_interval = "1s"
host_ttl = "5s"
warmup = "1s"
min_fleet_size = 1
[breaker]
unhealthy_percent = 100
[limits.restart_job]
max_in_flight = 100
cooldown = "0s"
rate = { count = 1000, per = "1h", burst = 0 }
[limits.reboot_host]
max_in_flight = 100
cooldown = "0s"
"#;

const DB_GATE: &str = r#"
[[gates]]
name = "db-down"
prometheus = "http://prometheus:9090"
query = 'ALERTS{alertstate="firing",alertname="DatabaseDown"}'
interval = "5s"
"#;

const RACK_GATE: &str = r#"
[[gates]]
name = "rack-power"
prometheus = "http://prometheus:9090"
query = 'ALERTS{alertstate="firing",alertname="RackPower",rack="$value"}'
label = "rack"
"#;

struct Fleet {
    engine: Engine,
    now: Time,
    hosts: Vec<(HostId, Labels)>,
    next: u32,
}

impl Fleet {
    /// Hosts `h0..` in racks as given, past warm-up.
    fn new(gates: &str, racks: &[&str]) -> Self {
        let config = PolicyConfig::from_toml(&format!("{BASE}{gates}")).unwrap();
        let mut f = Fleet {
            engine: Engine::new(config, t0()),
            now: t0(),
            hosts: racks
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    let labels = Labels::from([("rack".to_owned(), (*r).to_owned())]);
                    (HostId::new(format!("h{i}")).unwrap(), labels)
                })
                .collect(),
            next: 0,
        };
        f.advance(Duration::from_secs(2));
        f
    }

    fn gate(&self, name: &str) -> GateConfig {
        self.engine
            .config()
            .gates
            .iter()
            .find(|g| g.name == name)
            .unwrap()
            .clone()
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        for (host, labels) in self.hosts.clone() {
            self.engine.heartbeat(
                Heartbeat {
                    host,
                    labels,
                    agent_version: "test".into(),
                    problems: vec![],
                    held_permit: None,
                    needs_human: None,
                    state_error: None,
                },
                self.now,
            );
        }
    }

    fn request(&mut self, i: usize, action: Action) -> Decision {
        self.next += 1;
        let req = PermitRequest {
            request_id: RequestId::new(format!("r{}", self.next)).unwrap(),
            host: self.hosts[i].0.clone(),
            action,
            job: "ingest".into(),
            reason: "stuck".into(),
            dry_run: false,
        };
        self.engine.request_permit(req, self.now).unwrap()
    }

    fn fleet_reading(&mut self, gate: &str, result: Result<Vec<String>, String>) {
        let g = self.gate(gate);
        let at = self.now;
        self.engine
            .set_gate_readings(&g, GateReadings::Fleet(GateReading { at, result }), at);
    }

    fn rack_readings(&mut self, gate: &str, racks: &[(&str, Result<Vec<String>, String>)]) {
        let g = self.gate(gate);
        let at = self.now;
        let map: HashMap<String, GateReading> = racks
            .iter()
            .map(|(r, result)| {
                (
                    (*r).to_owned(),
                    GateReading {
                        at,
                        result: result.clone(),
                    },
                )
            })
            .collect();
        self.engine
            .set_gate_readings(&g, GateReadings::ByValue(map), at);
    }
}

fn firing(series: &str) -> Result<Vec<String>, String> {
    Ok(vec![series.to_owned()])
}

fn quiet() -> Result<Vec<String>, String> {
    Ok(vec![])
}

fn gate_denial(d: &Decision) -> &str {
    match d {
        Decision::Denied(d) if d.reason == DenyReason::GateClosed => &d.message,
        other => panic!("expected a gate_closed denial, got {other:?}"),
    }
}

// === The rule ===

#[test]
fn grant_denied_while_gate_closed() {
    let mut f = Fleet::new(DB_GATE, &["r1"]);
    f.fleet_reading(
        "db-down",
        firing(r#"ALERTS{alertname="DatabaseDown",alertstate="firing"}"#),
    );
    let d = f.request(0, Action::RestartJob);
    let msg = gate_denial(&d);
    assert!(msg.contains("gate db-down is closed"), "{msg}");
    assert!(msg.contains(r#"alertname="DatabaseDown""#), "{msg}");
    match &d {
        Decision::Denied(d) => assert_eq!(d.retry_after, Some(Duration::from_secs(5))),
        _ => unreachable!(),
    }
    // The alert stops: granted again.
    f.fleet_reading("db-down", quiet());
    assert!(f.request(0, Action::RestartJob).permit().is_some());
}

#[test]
fn per_domain_gate_holds_only_its_value() {
    let mut f = Fleet::new(RACK_GATE, &["r12", "r1"]);
    f.rack_readings(
        "rack-power",
        &[
            ("r12", firing(r#"ALERTS{alertname="RackPower",rack="r12"}"#)),
            ("r1", quiet()),
        ],
    );
    let msg = gate_denial(&f.request(0, Action::RebootHost)).to_owned();
    assert!(msg.contains("rack-power for rack=r12"), "{msg}");
    assert!(f.request(1, Action::RebootHost).permit().is_some());
}

#[test]
fn host_without_the_label_is_not_held_by_a_per_domain_gate() {
    let mut f = Fleet::new(RACK_GATE, &["r12"]);
    f.hosts[0].1.clear();
    f.advance(Duration::from_secs(1));
    f.rack_readings("rack-power", &[]);
    assert!(f.request(0, Action::RestartJob).permit().is_some());
}

#[test]
fn gate_never_evaluated_is_closed() {
    let mut f = Fleet::new(DB_GATE, &["r1"]);
    let msg = gate_denial(&f.request(0, Action::RestartJob)).to_owned();
    assert!(msg.contains("not evaluated yet"), "{msg}");
}

#[test]
fn gate_that_cannot_be_evaluated_is_closed() {
    let mut f = Fleet::new(DB_GATE, &["r1"]);
    f.fleet_reading("db-down", Err("http://prometheus:9090 unreachable".into()));
    let msg = gate_denial(&f.request(0, Action::RestartJob)).to_owned();
    assert!(msg.contains("unreachable"), "{msg}");
    assert!(msg.contains("on_error = \"closed\""), "{msg}");
}

#[test]
fn gate_with_on_error_open_grants_when_it_cannot_be_evaluated_and_explain_says_so() {
    let mut f = Fleet::new(&format!("{DB_GATE}on_error = \"open\"\n"), &["r1"]);
    f.fleet_reading("db-down", Err("http://prometheus:9090 unreachable".into()));
    let host = f.hosts[0].0.clone();
    let e = f.engine.explain(&host, Action::RestartJob, f.now);
    assert!(e.would_grant());
    assert_eq!(e.notes.len(), 1, "{e:?}");
    assert!(
        e.notes[0].contains("gate db-down cannot be evaluated"),
        "{e:?}"
    );
    assert!(f.request(0, Action::RestartJob).permit().is_some());
    // A firing alert still closes it.
    f.fleet_reading("db-down", firing("ALERTS{}"));
    gate_denial(&f.request(0, Action::RestartJob));
}

#[test]
fn stale_reading_counts_as_an_error() {
    let mut f = Fleet::new(DB_GATE, &["r1"]);
    f.fleet_reading("db-down", quiet());
    // stale_after defaults to three intervals (15s).
    f.advance(Duration::from_secs(16));
    let msg = gate_denial(&f.request(0, Action::RestartJob)).to_owned();
    assert!(msg.contains("older than stale_after 15s"), "{msg}");
}

#[test]
fn gate_scoped_to_an_action_lets_other_actions_through() {
    let mut f = Fleet::new(
        &format!("{DB_GATE}actions = [\"reboot_host\"]\n"),
        &["r1", "r2"],
    );
    f.fleet_reading("db-down", firing("ALERTS{}"));
    gate_denial(&f.request(0, Action::RebootHost));
    assert!(f.request(1, Action::RestartJob).permit().is_some());
}

#[test]
fn explain_lists_every_closed_gate() {
    let mut f = Fleet::new(&format!("{DB_GATE}{RACK_GATE}"), &["r12"]);
    f.fleet_reading("db-down", firing("ALERTS{}"));
    f.rack_readings("rack-power", &[("r12", firing("ALERTS{}"))]);
    let host = f.hosts[0].0.clone();
    let e = f.engine.explain(&host, Action::RestartJob, f.now);
    let gates: Vec<_> = e
        .denials
        .iter()
        .filter(|d| d.reason == DenyReason::GateClosed)
        .collect();
    assert_eq!(gates.len(), 2, "{e:?}");
}

#[test]
fn reload_keeps_readings_of_unchanged_gates_only() {
    let mut f = Fleet::new(&format!("{DB_GATE}{RACK_GATE}"), &["r12"]);
    f.fleet_reading("db-down", quiet());
    f.rack_readings("rack-power", &[("r12", quiet())]);
    assert!(f.request(0, Action::RestartJob).permit().is_some());
    // rack-power's query changes: its readings no longer apply.
    let changed = RACK_GATE.replace("RackPower", "RackHeat");
    let config = PolicyConfig::from_toml(&format!("{BASE}{DB_GATE}{changed}")).unwrap();
    f.engine.set_config(config, f.now);
    let msg = gate_denial(&f.request(0, Action::RebootHost)).to_owned();
    assert!(
        msg.contains("rack-power") && msg.contains("not evaluated yet"),
        "{msg}"
    );
    // A round of the old query, finishing late, is not taken for the new.
    let old = PolicyConfig::from_toml(&format!("{BASE}{RACK_GATE}"))
        .unwrap()
        .gates[0]
        .clone();
    let at = f.now;
    f.engine.set_gate_readings(
        &old,
        GateReadings::ByValue(HashMap::from([(
            "r12".to_owned(),
            GateReading {
                at,
                result: quiet(),
            },
        )])),
        at,
    );
    gate_denial(&f.request(0, Action::RebootHost));
}

#[test]
fn gate_opening_wakes_waiting_agents() {
    let mut f = Fleet::new(DB_GATE, &["r1"]);
    f.fleet_reading("db-down", firing("ALERTS{}"));
    let host = f.hosts[0].0.clone();
    let before = f.engine.wake(&host);
    f.fleet_reading("db-down", firing("ALERTS{}"));
    assert_eq!(
        f.engine.wake(&host),
        before,
        "still closed: nothing to ask again for"
    );
    f.fleet_reading("db-down", quiet());
    assert_ne!(f.engine.wake(&host), before);
}

#[test]
fn per_domain_gate_is_evaluated_for_live_hosts_label_values() {
    let f = Fleet::new(RACK_GATE, &["r2", "r1", "r2"]);
    assert_eq!(f.engine.label_values("rack"), vec!["r1", "r2"]);
}

// === The config ===

fn errors(gates: &str) -> Vec<String> {
    match PolicyConfig::from_toml(&format!("{BASE}{gates}")) {
        Ok(_) => panic!("accepted:\n{gates}"),
        Err(e) => {
            e.0.iter()
                .map(|e| format!("{}: {}", e.path, e.message))
                .collect()
        }
    }
}

fn has(errs: &[String], prefix: &str) {
    assert!(
        errs.iter().any(|e| e.starts_with(prefix)),
        "no error starting {prefix:?} in {errs:#?}"
    );
}

#[test]
fn gate_config_errors_name_their_keys() {
    let errs = errors(
        r#"
[[gates]]
prometheus = "prometheus:9090"
query = "sum(up"
interval = "1s"
timeout = "2s"
on_error = "ignore"
actions = ["drain_host"]

[[gates]]
name = "x"
prometheus = "http://p:9090"
query = "up == 0"
stale_after = "1s"

[[gates]]
name = "x"
prometheus = "http://p:9090"
query = 'up{rack="$value"}'
colour = "red"
"#,
    );
    has(&errs, "gates[0].name: is required");
    has(
        &errs,
        "gates[0].prometheus: must be an http:// or https:// URL",
    );
    has(&errs, "gates[0].query: has an unclosed '('");
    has(&errs, "gates[0].timeout: must be at most interval");
    has(&errs, "gates[0].on_error: must be \"closed\" or \"open\"");
    has(&errs, "gates[0].actions: unknown action \"drain_host\"");
    has(
        &errs,
        "gates[1].stale_after: must be at least interval + timeout",
    );
    has(&errs, "gates[2].name: gate \"x\" is defined twice");
    has(&errs, "gates[2].query: uses $value");
    has(&errs, "gates[2].colour: unknown key");
}

#[test]
fn per_domain_gate_must_use_the_placeholder_in_a_string_literal() {
    let errs = errors(
        r#"
[[gates]]
name = "r"
prometheus = "http://p:9090"
query = 'up{rack=$value} == 0'
label = "rack"
"#,
    );
    has(&errs, "gates[0].query: $value must stand inside");
}

#[test]
fn gate_query_placeholder_value_is_escaped() {
    let config = PolicyConfig::from_toml(&format!("{BASE}{RACK_GATE}")).unwrap();
    assert_eq!(
        config.gates[0].query_for(Some("r\"1\\")),
        r#"ALERTS{alertstate="firing",alertname="RackPower",rack="r\"1\\"}"#
    );
}

// === The audit trail ===

/// The gate changes among the events emitted since the last call:
/// (gate, value, closed).
fn gate_changes(f: &mut Fleet) -> Vec<(String, Option<String>, bool)> {
    f.engine
        .take_events()
        .into_iter()
        .filter_map(|e| match e {
            medic_policy::Event::GateChanged {
                gate,
                value,
                closed,
                ..
            } => Some((gate, value, closed)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_gate_closing_and_opening_is_recorded_once_per_change_and_domain() {
    let mut f = Fleet::new(RACK_GATE, &["r12", "r1"]);
    let _ = f.engine.take_events();
    let fire = || firing(r#"ALERTS{alertname="RackPower",rack="r12"}"#);
    f.rack_readings("rack-power", &[("r12", fire()), ("r1", quiet())]);
    // The first quiet reading records nothing: nothing was recorded closed.
    assert_eq!(
        gate_changes(&mut f),
        [("rack-power".to_owned(), Some("r12".to_owned()), true)]
    );
    // The same again: no change, no record.
    f.rack_readings("rack-power", &[("r12", fire()), ("r1", quiet())]);
    assert_eq!(gate_changes(&mut f), []);
    f.rack_readings(
        "rack-power",
        &[("r12", quiet()), ("r1", Err("timed out".into()))],
    );
    assert_eq!(
        gate_changes(&mut f),
        [
            ("rack-power".to_owned(), Some("r1".to_owned()), true),
            ("rack-power".to_owned(), Some("r12".to_owned()), false),
        ]
    );
    // A reload that removes the gate records it open where it was closed.
    let config = PolicyConfig::from_toml(BASE).unwrap();
    let now = f.now;
    f.engine.set_config(config, now);
    assert_eq!(
        gate_changes(&mut f),
        [("rack-power".to_owned(), Some("r1".to_owned()), false)]
    );
}
