//! medic's decision engine.
//!
//! Modules, and what each holds:
//!
//! - [`config`]: the policy config: TOML in, every error by key path, a
//!   validated [`PolicyConfig`] out; one file per section.
//! - `engine`: [`Engine`]: the fleet view, the rules (one check each, in
//!   `engine/rules.rs`), and the calls of agents and operators.
//! - `error`: [`PolicyError`], calls that make no sense in the current state.
//! - `gates`: [`GateReadings`], the alert gates' results the coordinator
//!   feeds in.
//! - `rate`: the rate budget of one action (rule 7), rebuilt from grants.
//! - `state`: [`DurableState`], what survives a restart, and the one
//!   function that changes it.
//! - [`text`]: characters an identifier must not hold.
//! - `types`: the domain types: hosts, permits, decisions, events.
//! - `view`: read-only views for operators: status, hosts, explanations.
//! - `window`: weekly windows in a named time zone (rule 8).
//!
//! Pure and synchronous: no I/O and no clock of its own (every call takes
//! `now`). Everything that decides "may host H do action A now?" lives here:
//! the fleet view, pauses, breakers, quarantines, per-host budgets,
//! concurrency caps, rate budgets, windows, warm-up and dry-run (ARCHITECTURE.md,
//! "The coordinator's rules" 1–10).
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use medic_policy::*;
//!
//! let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
//! let mut engine = Engine::new(PolicyConfig::default(), start);
//! let host = HostId::new("web-1").unwrap();
//! engine.heartbeat(Heartbeat {
//!     host: host.clone(),
//!     labels: Labels::from([("rack".into(), "r1".into())]),
//!     agent_version: "0.1.0".into(),
//!     problems: vec![],
//!     held_permit: None,
//!     needs_human: None,
//!     state_error: None,
//! }, start);
//! let request = PermitRequest {
//!     request_id: RequestId::new("req-1").unwrap(),
//!     host,
//!     action: Action::RestartJob,
//!     job: "ingest".into(),
//!     reason: "heartbeat file 12m old".into(),
//!     dry_run: false,
//! };
//! // Still warming up: the coordinator has not seen the fleet long enough.
//! let d = engine.request_permit(request.clone(), start).unwrap();
//! assert_eq!(d.denial().unwrap().reason, DenyReason::WarmingUp);
//! // After warm-up (the host keeps heartbeating), it is granted.
//! let later = start + Duration::from_secs(30);
//! # engine.heartbeat(Heartbeat { host: request.host.clone(), labels: Labels::new(),
//! #     agent_version: "0.1.0".into(), problems: vec![], held_permit: None,
//! #     needs_human: None, state_error: None }, later);
//! let d = engine.request_permit(request, later).unwrap();
//! assert!(d.permit().is_some());
//! // Every durable change is an event for the store.
//! assert!(matches!(engine.take_events().last(), Some(Event::PermitGranted { .. })));
//! ```
#![forbid(unsafe_code)]

mod action;
pub mod config;
mod engine;
mod error;
mod gates;
mod rate;
mod state;
pub mod text;
mod types;
mod view;
mod window;

pub use config::{ConfigError, ConfigErrors, PolicyConfig, RawPolicy};
pub use engine::{Engine, MAX_OVERRIDE, ResumeTarget};
pub use error::{InvalidInput, PolicyError, ScopeSuffix};
pub use gates::{GateReading, GateReadings};
pub use state::{DurableState, EndRecord, GrantRecord};
pub use types::*;
pub use view::{ActionStatus, Explanation, HostView, Status};
