//! medic's coordinator: serves `medic.v1.Remediation` to agents and
//! `medic.v1.Admin` to operators, decides with `medic-policy`, and keeps
//! every decision durable in `medic-store` before answering.
//!
//! The binary (`main.rs`) only parses flags, loads the config, binds the
//! listeners and calls [`run`]; tests call [`run`] in-process on port 0.
//!
//! Modules, in the order a call meets them (ARCHITECTURE.md, "The path of
//! a permit"):
//! - [`cli`]: the command line: `run`, `check-config`, `config`,
//!   `dev-certs`, and the exit codes.
//! - [`server`]: [`run`]: the replica's life in order (configuration,
//!   transport, role, drain). Its roles and the moves between them are in
//!   a private `role` module.
//! - [`live`]: the configuration in force and the one place its side
//!   effects are applied, for every way a configuration comes in.
//! - [`shell`]: the transport: one gRPC and one HTTP server, bound once,
//!   and the follower/leader [`shell::Switch`].
//! - [`tls`], [`conn`]: accepting connections: TLS material and
//!   handshakes, connection limits, idle closing.
//! - [`service`]: the handlers, thin (decode, core, encode), one file per
//!   API; their call layer names and times every call.
//! - [`auth`]: who is calling and may they; [`admit`]: admission control.
//! - [`core`]: the engine behind a lock, and the committer that makes its
//!   events durable before anyone is told.
//! - [`clock`]: the clock, and wall-clock steps found against the boot
//!   clock.
//! - [`config`]: `coordinator.toml`, one file per section.
//! - [`gates`]: the alert gates' evaluators: Prometheus queries run on
//!   their interval, their results handed to the engine.
//! - [`metrics`], [`notify`]: what operators see: Prometheus metrics and
//!   webhooks.
//! - [`ha`], [`fleet`]: replicated coordinators on etcd (feature `etcd`).
//! - [`devcerts`]: certificates for trials; [`signal`]: SIGHUP and
//!   SIGTERM; [`testing`]: test support (feature `testing`).
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
pub mod gates;
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
pub mod status_page;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tls;

pub use clock::{Clock, ManualClock, SystemClock};
pub use config::CoordinatorConfig;
pub use server::{Control, Listeners, RunError, run, run_in_memory};
