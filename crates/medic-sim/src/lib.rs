//! medic-sim: a simulated fleet running the real medic agent against a real
//! coordinator, incidents replayed on a timeline, the legacy reboot script
//! as a baseline over the same failures, ARCHITECTURE.md's invariants checked on
//! everything that happened, and reports (terminal and HTML) and load
//! benchmarks.
//!
//! The binary (`main.rs`) parses flags and calls [`run::run`] or
//! [`bench::bench`]; tests call them in-process.
//!
//! Modules:
//! - [`scenario`]: scenario files (fleet, failure processes, incidents).
//! - [`model`]: which simulated job is stuck when, and why; the shared
//!   dependency with a capacity that remediations can keep failing.
//! - [`host`]: a simulated host running the real agent, and the run's
//!   clock.
//! - [`legacy`]: the baselines: the reboot script medic replaces, and the
//!   same script behind a bare reboot lock (kured-style).
//! - [`coord`]: the coordinator a run talks to (in-process on virtual time
//!   over in-memory connections, in-process on loopback, a child process,
//!   or external).
//! - [`stepclock`]: the coordinator's wall clock, steppable by a scenario.
//! - [`proxy`]: a TCP relay to cut agents off from the coordinator (on
//!   real time; on virtual time the in-memory link is cut instead).
//! - [`mod@run`]: one simulation, on virtual time (one paused clock for
//!   every agent and the coordinator; the same seed gives the same history)
//!   or on real time divided by a speed; [`mod@bench`]: load and the permit
//!   storm.
//! - [`check`]: the invariant checker over what a run left behind.
//! - [`record`], [`report`]: time series, the terminal summary and the
//!   HTML report.
//! - [`sweep`]: one scenario over a grid of coordinator settings, and the
//!   trade-off between lost capacity and remediations.
//! - [`replay`]: a real coordinator's exported audit history decided again
//!   under candidate limits, request by request.
//! - [`netns`]: network namespaces for multi-host tests (Linux, root).
//! - [`error`]: why a simulation could not run.
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
pub mod replay;
pub mod report;
pub mod run;
pub mod scenario;
pub mod stepclock;
pub mod sweep;

pub use error::SimError;
pub use run::{Options, RunResult, run};
pub use scenario::Scenario;
