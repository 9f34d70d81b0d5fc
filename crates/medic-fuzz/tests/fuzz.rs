//! The fuzz runs: one test per target, each for `MEDIC_FUZZ_SECS` seconds
//! (default 30). Ignored by ordinary test runs; `scripts/test` runs them
//! in its own step (`--run-ignored only`, or `-- --ignored`). A finding
//! fails the test and is printed in full (input, panic, the medic frame it
//! came from) and saved under `target/tmp/medic-fuzz/<target>/`.

use std::path::Path;

use medic_fuzz::driver::{self, Target};
use medic_fuzz::{fixtures, targets};

fn fuzz(target: Target) {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("medic-fuzz");
    fixtures::init(&out);
    let budget = driver::budget_from_env(30.0);
    let seed = driver::seed_from_env(target.name);
    let report = driver::fuzz(&target, budget, seed, Some(&out));
    println!("{}", report.summary());
    assert!(
        report.findings.is_empty(),
        "{}\n{}",
        report.summary(),
        report.details()
    );
}

#[test]
#[ignore = "fuzzing: run by scripts/test's fuzz step (MEDIC_FUZZ_SECS)"]
fn fuzz_coordinator_config() {
    fuzz(targets::config::COORDINATOR);
}

#[test]
#[ignore = "fuzzing: run by scripts/test's fuzz step (MEDIC_FUZZ_SECS)"]
fn fuzz_agent_config() {
    fuzz(targets::config::AGENT);
}

#[test]
#[ignore = "fuzzing: run by scripts/test's fuzz step (MEDIC_FUZZ_SECS)"]
fn fuzz_wire() {
    fuzz(targets::wire::WIRE);
}

#[test]
#[ignore = "fuzzing: run by scripts/test's fuzz step (MEDIC_FUZZ_SECS)"]
fn fuzz_engine() {
    fuzz(targets::engine::ENGINE);
}

/// Replays one saved input and prints what it means and what it did:
/// `MEDIC_FUZZ_REPLAY=<target>:<file> cargo nextest run --workspace
/// --all-features -E 'test(=replay)' --run-ignored only --no-capture`.
#[test]
#[ignore = "replays MEDIC_FUZZ_REPLAY=<target>:<file>"]
fn replay() {
    let Ok(spec) = std::env::var("MEDIC_FUZZ_REPLAY") else {
        return;
    };
    let (name, file) = spec
        .split_once(':')
        .unwrap_or_else(|| panic!("MEDIC_FUZZ_REPLAY={spec}: expected <target>:<file>"));
    let target = targets::by_name(name).unwrap_or_else(|| panic!("no target {name}"));
    fixtures::init(&Path::new(env!("CARGO_TARGET_TMPDIR")).join("medic-fuzz"));
    // Relative to the workspace root (tests run in the crate's directory).
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(file);
    let data = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    println!("{}", (target.describe)(&data));
    match driver::execute(&target, &data) {
        Ok(_) => println!("{name}: no panic"),
        Err(p) => panic!(
            "{name}: panicked: {}\nlocation: {}\nmedic frames:\n  {}",
            p.message,
            p.location,
            p.frames.join("\n  ")
        ),
    }
}
