//! Fuzz targets for medic, and a driver that runs them on stable Rust for a
//! bounded time.
//!
//! The targets ([`targets`]) cover both config parsers, the wire
//! conversions and the decision engine driven by arbitrary operation
//! sequences. Each is a plain `fn(&[u8])` that panics on a finding. CI runs
//! them with [`driver`]: seeded generation and mutation, inputs kept when
//! they show new behaviour, panics caught, minimized, saved and printed,
//! all inside the workspace's ordinary debug build. The same targets sit
//! behind `cargo fuzz` (libFuzzer, coverage-guided) in `fuzz/` for long
//! local runs; CI does not use it because installing cargo-fuzz and its
//! sanitizer build of the whole dependency tree take longer than the rest
//! of CI (BENCHMARKS.md, "Fuzzing").
//!
//! Run by `scripts/test` (its "fuzz" step):
//!
//! ```text
//! MEDIC_FUZZ_SECS=30 cargo nextest run --workspace --all-features \
//!     -E 'package(medic-fuzz) & test(/^fuzz_/)' --run-ignored only
//! ```
//!
//! - `MEDIC_FUZZ_SECS`: seconds per target (default 30);
//! - `MEDIC_FUZZ_EXECS`: executions per target instead (with the seed a run
//!   printed, the same inputs again);
//! - `MEDIC_FUZZ_SEED`: a number, or `random` (default: fixed per target);
//! - findings are saved under `target/tmp/medic-fuzz/<target>/`; copy one
//!   into `regressions/<target>/` to keep it as a test (`tests/regressions.rs`
//!   replays every file there on every test run).
//!
//! Modules: [`targets`] (the fuzz targets), [`driver`] (running them for a
//! bounded time), [`choices`] (an input's bytes as choices),
//! [`toml_gen`] (structured config documents), [`fixtures`] (the files
//! the config targets can name).
#![forbid(unsafe_code)]

pub mod choices;
pub mod driver;
pub mod fixtures;
pub mod targets;
pub mod toml_gen;
