//! medic-sim: a simulated fleet running the real medic agent against a real
//! coordinator, incidents replayed on a timeline, the legacy reboot script
//! as a baseline over the same failures, ARCHITECTURE.md's invariants checked on
//! everything that happened, and reports (terminal and HTML) and load
//! benchmarks.
//!
//! The binary (`main.rs`) parses flags and calls [`run::run`] or
//! [`bench::bench`]; tests call them in-process.
#![forbid(unsafe_code)]

pub mod bench;
pub mod check;
pub mod coord;
pub mod error;
pub mod host;
pub mod legacy;
pub mod model;
#[cfg(target_os = "linux")]
pub mod netns;
pub mod proxy;
pub mod record;
pub mod report;
pub mod run;
pub mod scenario;

pub use error::SimError;
pub use run::{Options, RunResult, run};
pub use scenario::Scenario;
