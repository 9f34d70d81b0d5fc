//! The targets. Each takes any byte string; a panic is a finding.
//!
//! - [`config::COORDINATOR`]: `coordinator.toml` (and the fleet and policy
//!   parsers that share it), as raw text or built from the known keys; an
//!   accepted file also drives the decision engine a little, so a value
//!   that validates but breaks the engine later is caught here.
//! - [`config::AGENT`]: `agent.toml`, the same two ways.
//! - [`wire::WIRE`]: every request the services accept and every response
//!   the agent and `medicctl` read, decoded from bytes (raw, or encoded from
//!   the `.proto` schema) and converted with medic-proto's `TryFrom`; what
//!   converts must survive the trip back to the wire and again unchanged.
//! - [`engine::ENGINE`]: the decision engine under a sequence of operations
//!   (agents' calls, operators' calls, ticks, time jumps and wall-clock
//!   steps, restarts, config swaps), with invariants checked after each.

pub mod config;
pub mod engine;
pub mod wire;

use crate::driver::Target;

/// Every target, in the order CI runs them.
pub const ALL: [Target; 4] = [
    config::COORDINATOR,
    config::AGENT,
    wire::WIRE,
    engine::ENGINE,
];

/// The target called `name`.
pub fn by_name(name: &str) -> Option<Target> {
    ALL.iter().copied().find(|t| t.name == name)
}

/// An error's field path with indices and digits folded (`jobs[3]` and
/// `jobs[7]` are the same place), cut short: a feature, not a key to
/// everything random in the input.
pub(crate) fn place(path: &str) -> String {
    // Map keys in paths (`labels["x"]`, `groups.<any label>`) are the
    // input's own text: keep the shape, not the key.
    let mut out = String::new();
    let mut quoted = false;
    let mut escaped = false;
    for c in path.chars().take(64) {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => {
                quoted = !quoted;
                if quoted {
                    out.push('K');
                }
            }
            _ if quoted => {}
            c if c.is_ascii_digit() => out.push('#'),
            c if c.is_ascii_alphanumeric() || "._[] ".contains(c) => out.push(c),
            _ => out.push('?'),
        }
    }
    out
}

/// The first three words of an error message (values mostly come later),
/// folded like [`place`] (`unknown value 12` and `unknown value 7` are one).
pub(crate) fn gist(message: &str) -> String {
    place(
        &message
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
    )
}
