//! medic's per-host agent: detects stuck jobs, asks the coordinator for a
//! permit, and only then restarts the job or reboots the host, climbing a
//! ladder and stopping for a human when remediation does not help.
//!
//! The binary (`main.rs`) only parses flags, loads the config and runs an
//! [`agent::Agent`]; tests run agents in-process.
//!
//! Modules:
//! - [`agent`]: the loop (check round, heartbeat, permit, ladder climbing).
//! - [`backoff`]: waits between calls: backoff with jitter, after a denial.
//! - [`clock`]: the wall and monotonic clocks, injected (virtual in tests).
//! - [`config`]: `agent.toml`, parsed and validated with key paths.
//! - [`coordinator`]: the permit service the agent calls, behind a trait.
//! - [`detect`]: the detectors that check a job once.
//! - [`effects`]: what the agent does to its machine ([`Host`]).
//! - [`ladder`]: pure functions: health streaks, the next rung, outcomes.
//! - [`metrics`]: `medic_agent_*` metrics and their local endpoint.
//! - [`state`]: the state file: ladder counters and a reboot in progress.
//! - [`tls`]: the agent's certificates for mutual TLS.
#![forbid(unsafe_code)]

pub mod agent;
pub mod backoff;
pub mod clock;
pub mod config;
pub mod coordinator;
pub mod detect;
pub mod effects;
pub mod ladder;
pub mod metrics;
pub mod state;
pub mod tls;

pub use agent::{Activity, Agent, Control, Environment};
pub use clock::{Clock, SystemClock, VirtualClock};
pub use config::AgentConfig;
pub use coordinator::{Coordinator, Coordinators};
pub use effects::{Host, HostError, SystemHost};
