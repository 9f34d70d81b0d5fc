//! medic's per-host agent: detects stuck jobs, asks the coordinator for a
//! permit, and only then restarts the job or reboots the host, climbing a
//! ladder and stopping for a human when remediation does not help.
//!
//! The binary (`main.rs`) only parses flags, loads the config and runs an
//! [`agent::Agent`]; tests run agents in-process.
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

pub use agent::{Agent, Control, Environment};
pub use clock::{Clock, SystemClock, VirtualClock};
pub use config::AgentConfig;
pub use coordinator::{Coordinator, Coordinators};
pub use effects::{Host, HostError, SystemHost};
