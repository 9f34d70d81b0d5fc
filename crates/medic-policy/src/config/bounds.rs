//! The bounds every value is checked against where it is parsed: a value
//! past them is a typo or an attack, and would let the times and counts
//! computed from it overflow.

use std::time::Duration;

/// The longest duration any key of either config file accepts: 10 years
/// (humantime's `"10y"`, 3652.5 days). Every instant the coordinator
/// computes is a time plus a few such durations, so none can overflow or
/// pass year 9999 (the last one dates print).
pub const MAX_DURATION: Duration = Duration::from_secs(315_576_000);

/// The longest `fleet.forget_hosts_after`: a year.
pub const MAX_FORGET_HOSTS_AFTER: Duration = Duration::from_secs(366 * 24 * 3600);

/// The largest count of grants, permits, hosts or samples a key accepts:
/// one million, more than one coordinator serves, and small enough that
/// sums and products of counts and durations cannot overflow.
pub const MAX_COUNT: u32 = 1_000_000;

/// The shortest heartbeat interval (`fleet.heartbeat_interval`, and the
/// agent's own): 10 ms. Production fleets use seconds; the simulator
/// compresses time and goes this low.
pub const MIN_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(10);

/// The longest heartbeat interval: an hour. A host that is not heard from
/// for longer is not being watched.
pub const MAX_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(3600);

/// The shortest rate window (`limits.<action>.rate.per`): a second. A
/// shorter window cannot space remediations apart.
pub const MIN_RATE_PER: Duration = Duration::from_secs(1);
