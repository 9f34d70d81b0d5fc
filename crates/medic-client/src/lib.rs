//! medic's client library: what the agent, `medicctl` and `medic-sim` need
//! to talk to the coordinators, in one place.
//!
//! - [`endpoint`]: the list of coordinator URLs, validated, with errors
//!   that name the bad one.
//! - [`tls`]: client TLS (a CA, and for mutual TLS a certificate and key)
//!   from PEM files, with errors that name the file.
//! - [`headers`]: what an operator's client sends besides the message: the
//!   actor (`medic-actor`) and a bearer token (`authorization`).
//! - [`Client`]: connections to the configured coordinators, a deadline
//!   per call, leader following, admission retries on `retry-after-ms`
//!   hints, and typed calls: requests and replies go through
//!   [`medic_proto`]'s conversions, so a reply that does not convert (a
//!   grant without a usable permit) is a [`CallError::Malformed`] for the
//!   caller, never dropped.
//! - [`memory`]: connections to a coordinator in the same process, without
//!   sockets (the simulator).
//! - [`error`]: [`ConfigError`] (settings that cannot work) and
//!   [`CallError`] (a call that did not get a usable answer).
//!
//! # Leader following
//!
//! Replicated coordinators elect one leader; a follower answers every call
//! UNAVAILABLE naming the leader in the
//! [`medic-leader`](medic_proto::metadata::LEADER) metadata. One strategy,
//! for every client: connect to the configured endpoints in order (from
//! the one in use) and keep the first that accepts; when a call is answered
//! UNAVAILABLE naming a leader that is one of the configured endpoints,
//! switch to it and retry the call there at once, once; a leader that is
//! not configured is never followed (a follower cannot send a client
//! anywhere its operators did not list). Any other transient failure drops
//! the connection and the next call starts at the next endpoint.
#![forbid(unsafe_code)]

pub mod client;
pub mod endpoint;
pub mod error;
pub mod headers;
pub mod memory;
pub mod retry;
pub mod tls;

pub use client::{Admin, Client, Settings};
pub use endpoint::Endpoints;
pub use error::{Attempt, CallError, ConfigError, code_name};
pub use headers::Headers;
pub use memory::MemoryConnector;
pub use tls::{ClientTls, TlsError, TlsFile, TlsFiles};
