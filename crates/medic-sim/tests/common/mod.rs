//! What the simulator's run tests share: a scenario's short form on
//! virtual time, and where two histories part.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use medic_sim::run::Transport;
use medic_sim::{Options, RunResult, Scenario};

/// `name`'s short form with `seed` over `transport`, on virtual time.
pub async fn run(name: &str, seed: u64, transport: Transport) -> RunResult {
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
pub fn first_difference(a: &RunResult, b: &RunResult) -> String {
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
