//! medic's coordinator: serves `medic.v1.Remediation` to agents and
//! `medic.v1.Admin` to operators, decides with `medic-policy`, and keeps
//! every decision durable in `medic-store` before answering.
//!
//! The binary (`main.rs`) only parses flags, loads the config, binds the
//! listeners and calls [`run`]; tests call [`run`] in-process on port 0.
#![forbid(unsafe_code)]

pub mod admit;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod config;
pub mod conn;
pub mod core;
pub mod devcerts;
#[cfg(feature = "etcd")]
pub mod fleet;
#[cfg(feature = "etcd")]
pub mod ha;
pub mod live;
pub mod metrics;
pub mod notify;
mod role;
mod sample;
pub mod server;
pub mod service;
pub mod shell;
pub mod signal;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tls;

pub use clock::{Clock, ManualClock, SystemClock};
pub use config::CoordinatorConfig;
pub use server::{Control, Listeners, RunError, run};
