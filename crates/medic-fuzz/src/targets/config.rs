//! The config parsers: `coordinator.toml` (with the fleet-config and
//! policy-only parsers that share its sections) and `agent.toml`.
//!
//! An input's first byte picks the form: a multiple of 4 means the rest is
//! the file's text as is (lossy UTF-8); anything else means the rest drives
//! [`toml_gen`], which writes a syntactically valid file
//! from the keys the parser knows.

use medic_agent::AgentConfig;
use medic_coordinator::CoordinatorConfig;
use medic_coordinator::config::FleetConfig;
use medic_policy::{ConfigErrors, PolicyConfig};

use super::{gist, place};
use crate::choices::Gen;
use crate::driver::{Features, Target};
use crate::toml_gen;

/// `coordinator.toml`.
pub const COORDINATOR: Target = Target {
    name: "coordinator_config",
    run: run_coordinator,
    describe: describe_coordinator,
    seeds: seeds_coordinator,
    dictionary: DICTIONARY,
    max_len: 4096,
};

/// `agent.toml`.
pub const AGENT: Target = Target {
    name: "agent_config",
    run: run_agent,
    describe: describe_agent,
    seeds: seeds_agent,
    dictionary: DICTIONARY,
    max_len: 4096,
};

/// TOML syntax, section and key names, and values that broke parsers
/// before (issue 14, case 7).
const DICTIONARY: &[&str] = &[
    "[",
    "]",
    "[[",
    "]]",
    "=",
    "\"",
    "'",
    "'''",
    "\"\"\"",
    "\n",
    "#",
    ",",
    "{",
    "}",
    ".",
    "true",
    "false",
    "nan",
    "inf",
    "-inf",
    "1e999",
    "-0.0",
    "0x7fffffffffffffff",
    "9223372036854775807",
    "4294967295",
    "4294967296",
    "-1",
    "1979-05-27T07:32:00Z",
    "\"0s\"",
    "\"1ns\"",
    "\"never\"",
    "\"7000000000000000000s\"",
    "\"100000000000s\"",
    "\"584942417355y\"",
    "\"10000y\"",
    "[server]",
    "[tls]",
    "[auth]",
    "[audit]",
    "[notify]",
    "[[notify.webhooks]]",
    "[store]",
    "[store.tls]",
    "[fleet]",
    "[breaker]",
    "[breaker.domains.rack]",
    "[limits.restart_job]",
    "[limits.reboot_host]",
    "[limits.restart_job.groups.rack]",
    "[idempotency]",
    "[[jobs]]",
    "[jobs.restart]",
    "[jobs.process]",
    "[jobs.probe]",
    "[jobs.heartbeat_file]",
    "[jobs.systemd]",
    "[labels]",
    "mode = \"dry-run\"",
    "tick_interval",
    "heartbeat_interval",
    "host_ttl",
    "warmup",
    "min_fleet_size",
    "min_samples",
    "auto_close_after",
    "denial_sample_interval",
    "permit_ttl",
    "cooldown",
    "max_in_flight",
    "max_in_flight_percent",
    "retention",
    "rate = { count = 1, per = \"100000000000s\", burst = 4294967295 }",
    "host_budget = { max_attempts = 4294967295, per = \"10000y\" }",
    "windows = [{ days = [\"mon\"], start = \"23:00\", end = \"01:00\" }]",
    "timezone = \"Australia/Lord_Howe\"",
    "kind = \"etcd\"",
    "state_dir = \"/dev/null\"",
    "max_message_bytes",
    "lease_ttl",
    "safety_margin",
    "check_interval",
    "max_output",
    "cmdline = \"(\"",
    "signal = \"SIGFOO\"",
    "host_id = \"\\u202eevil\"",
];

fn seeds_coordinator() -> Vec<Vec<u8>> {
    let mut out = vec![
        text_seed(include_str!("../../../../config/coordinator.toml")),
        text_seed(""),
        text_seed("mode = \"dry-run\"\n[fleet]\nheartbeat_interval = \"10s\"\n"),
    ];
    // A few structured starts.
    out.extend((1u8..=16).map(|b| vec![b; 64]));
    out
}

fn seeds_agent() -> Vec<Vec<u8>> {
    let mut out = vec![
        text_seed(include_str!("../../../../config/agent.toml")),
        text_seed(
            "host_id = \"web-1\"\n[[jobs]]\nname = \"ingest\"\n[jobs.probe]\ncommand = [\"/bin/true\"]\n",
        ),
    ];
    out.extend((1u8..=16).map(|b| vec![b; 64]));
    out
}

fn text_seed(text: &str) -> Vec<u8> {
    let mut v = vec![0];
    v.extend_from_slice(text.as_bytes());
    v
}

/// The TOML an input stands for.
pub fn text_of(data: &[u8], schema: &[toml_gen::Field]) -> String {
    match data.split_first() {
        None => String::new(),
        Some((mode, rest)) if mode % 4 == 0 => String::from_utf8_lossy(rest).into_owned(),
        Some((_, rest)) => toml_gen::document(&mut Gen::new(rest), schema),
    }
}

fn describe_coordinator(data: &[u8]) -> String {
    describe_with(data, toml_gen::COORDINATOR, |t| {
        CoordinatorConfig::from_toml(t).map(|_| ())
    })
}

fn describe_agent(data: &[u8]) -> String {
    describe_with(data, toml_gen::AGENT, |t| {
        AgentConfig::from_toml(t).map(|_| ())
    })
}

/// The text, and for a generated one that fails, the part that validates.
fn describe_with(
    data: &[u8],
    schema: &[toml_gen::Field],
    parse: impl Fn(&str) -> Result<(), ConfigErrors>,
) -> String {
    let text = text_of(data, schema);
    let mut out = text.clone();
    if generated(data) && parse(&text).is_err() {
        match toml_gen::valid_part(&text, parse) {
            Some((valid, ())) => {
                out.push_str("\n--- with the keys that fail removed (valid):\n");
                out.push_str(&valid);
            }
            None => out.push_str("\n--- (no valid part)\n"),
        }
    }
    out
}

/// Every error has a message; the features are where and what.
fn errors(kind: &str, e: &ConfigErrors, features: &mut Features) {
    assert!(
        !e.0.is_empty(),
        "{kind}: refused with no error to show the operator"
    );
    for err in &e.0 {
        assert!(
            !err.message.trim().is_empty(),
            "{kind}: an error at {:?} with an empty message",
            err.path
        );
        features.add_parts(&[kind, &place(&err.path), &gist(&err.message)]);
    }
    let _ = e.to_string();
}

fn run_coordinator(data: &[u8], features: &mut Features) {
    let text = text_of(data, toml_gen::COORDINATOR);
    // For a generated file that fails, the part of it that validates too,
    // extreme values and all.
    if !check_coordinator(&text, features)
        && generated(data)
        && let Some((valid, _)) = toml_gen::valid_part(&text, CoordinatorConfig::from_toml)
    {
        features.add_parts(&["coordinator", "pruned"]);
        check_coordinator(&valid, features);
    }
}

/// Whether an input is a generated document (not raw text).
fn generated(data: &[u8]) -> bool {
    data.first().is_some_and(|mode| mode % 4 != 0)
}

/// Everything `coordinator.toml` text goes through. Whether it was valid.
pub fn check_coordinator(text: &str, features: &mut Features) -> bool {
    let coordinator = CoordinatorConfig::from_toml(text);
    match &coordinator {
        Ok(c) => {
            features.add_parts(&["coordinator", "ok", c.transport_summary()]);
            let _ = c.summary();
            let _ = c.limits_summary();
            let _ = c.build_errors();
            let same = c.reload_errors(c);
            assert!(
                same.is_empty(),
                "reloading a config onto itself reports restart-only changes: {same:?}"
            );
            super::engine::exercise(&c.policy, features);
        }
        Err(e) => errors("coordinator", e, features),
    }
    match FleetConfig::from_toml(text) {
        Ok(_) => features.add_parts(&["fleet", "ok"]),
        Err(e) => errors("fleet", &e, features),
    }
    match PolicyConfig::from_toml(text) {
        Ok(p) => {
            features.add_parts(&["policy", "ok"]);
            // Unknown keys aside, the policy sections mean the same alone.
            if let Ok(c) = &coordinator {
                assert_eq!(
                    c.policy, p,
                    "the policy sections read differently in coordinator.toml and alone"
                );
            }
        }
        Err(e) => errors("policy", &e, features),
    }
    coordinator.is_ok()
}

fn run_agent(data: &[u8], features: &mut Features) {
    let text = text_of(data, toml_gen::AGENT);
    // For a generated file that fails, the part of it that validates too,
    // extreme values and all.
    if !check_agent(&text, features)
        && generated(data)
        && let Some((valid, _)) = toml_gen::valid_part(&text, AgentConfig::from_toml)
    {
        features.add_parts(&["agent", "pruned"]);
        check_agent(&valid, features);
    }
}

/// Everything `agent.toml` text goes through. Whether it was valid.
pub fn check_agent(text: &str, features: &mut Features) -> bool {
    let config = AgentConfig::from_toml(text);
    match &config {
        Ok(c) => {
            features.add_parts(&["agent", "ok", &c.jobs.len().to_string()]);
            let _ = c.summary();
            for job in &c.jobs {
                assert!(
                    c.job(&job.name).is_some(),
                    "job {:?} is in the config but not found by name",
                    job.name
                );
            }
        }
        Err(e) => errors("agent", e, features),
    }
    config.is_ok()
}
