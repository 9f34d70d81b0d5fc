//! The direct transport (the coordinator's handlers called in the
//! process) skips HTTP/2 and protobuf encoding, not rules: the same
//! scenario and seed give the same audit history, event for event, and
//! the same actions on the hosts as every agent's own gRPC connection.

#![allow(clippy::unwrap_used)]

use medic_sim::run::Transport;
use medic_sim::{Options, RunResult, Scenario};

async fn run(name: &str, seed: u64, transport: Transport) -> RunResult {
    let opts = Options {
        seed,
        short: true,
        transport,
        ..Options::default()
    };
    let r = medic_sim::run(Scenario::load(name).unwrap(), &opts)
        .await
        .unwrap_or_else(|e| panic!("{name} seed {seed} over {transport:?}: {e}"));
    assert!(r.virtual_time, "{name} did not run on virtual time");
    r
}

/// The first place two histories differ, for the failure message.
fn first_difference(a: &RunResult, b: &RunResult) -> String {
    let i = a
        .history
        .iter()
        .zip(&b.history)
        .position(|(x, y)| x != y)
        .unwrap_or(a.history.len().min(b.history.len()));
    format!(
        "{} vs {} events; first difference at #{i}:\n  {:?}\n  {:?}",
        a.history.len(),
        b.history.len(),
        a.history.get(i),
        b.history.get(i)
    )
}

async fn assert_same_over_both(name: &str, seed: u64) {
    let grpc = run(name, seed, Transport::Grpc).await;
    let direct = run(name, seed, Transport::Direct).await;
    assert!(
        grpc.grants > 0 && grpc.history.len() > 10,
        "{name}: too little happened to show anything ({} events, {} grants)",
        grpc.history.len(),
        grpc.grants
    );
    assert!(
        grpc.history == direct.history,
        "{name} seed {seed}: gRPC and direct histories differ: {}",
        first_difference(&grpc, &direct)
    );
    assert_eq!(grpc.actions, direct.actions, "{name} seed {seed}: actions");
    assert_eq!(grpc.medic.series, direct.medic.series, "{name} seed {seed}");
    assert!(grpc.verdict.ok() && direct.verdict.ok(), "{name}: invariants");
}

#[tokio::test]
async fn direct_calls_decide_as_grpc_does_under_the_same_seed() {
    assert_same_over_both("dependency-outage", 7).await;
}

#[tokio::test]
async fn direct_calls_decide_as_grpc_does_through_a_partition() {
    assert_same_over_both("partition", 3).await;
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
