//! Virtual time makes a run repeatable: the same scenario and seed give
//! the same audit history, event for event (times, tokens, request ids,
//! reasons), and the same actions on the hosts.

#![allow(clippy::unwrap_used)]

mod common;

use common::{first_difference, run};
use medic_sim::Options;
use medic_sim::run::Transport;

async fn assert_repeats(name: &str, seed: u64) {
    let a = run(name, seed, Transport::Direct).await;
    let b = run(name, seed, Transport::Direct).await;
    assert!(
        a.history.len() > 10,
        "{name}: too little happened to show anything ({} events)",
        a.history.len()
    );
    assert!(
        a.history == b.history,
        "{name} seed {seed}: two runs differ: {}",
        first_difference(&a, &b)
    );
    assert_eq!(a.actions, b.actions, "{name} seed {seed}: actions differ");
    assert_eq!(a.medic.series, b.medic.series, "{name} seed {seed}");
}

#[tokio::test]
async fn the_same_seed_gives_the_same_audit_history_event_for_event() {
    assert_repeats("dependency-outage", 7).await;
}

#[tokio::test]
async fn a_partition_replays_the_same_under_the_same_seed() {
    assert_repeats("partition", 3).await;
}

#[tokio::test]
async fn different_seeds_give_different_histories() {
    let a = run("steady", 1, Transport::Direct).await;
    let b = run("steady", 2, Transport::Direct).await;
    assert_ne!(a.history, b.history, "the seed changes nothing");
}

#[test]
fn a_failing_seed_is_replayed_by_the_command_it_prints() {
    let opts = Options {
        seed: 42,
        short: true,
        ..Options::default()
    };
    assert_eq!(
        medic_sim::run::replay_command("flapping", &opts),
        "medic-sim run flapping --seed 42 --short"
    );
    let full = Options {
        seed: 3,
        ..Options::default()
    };
    assert_eq!(
        medic_sim::run::replay_command("scenarios/mine.toml", &full),
        "medic-sim run scenarios/mine.toml --seed 3"
    );
}
