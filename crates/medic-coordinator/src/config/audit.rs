//! `[audit]`: how long the audit history is kept, denial sampling and
//! snapshots.

use std::time::Duration;

use medic_policy::config::{Errors, MAX_COUNT};
use serde::Deserialize;

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawAudit {
    retention: Option<String>,
    max_entries: Option<i64>,
    denial_sample_interval: Option<String>,
    snapshot_every: Option<i64>,
}

/// `[audit]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditConfig {
    /// History older than this is removed. Default 30 days.
    pub retention: Duration,
    /// At most this many history entries are kept. Default 1,000,000.
    pub max_entries: u64,
    /// Denials are sampled: the first per host and reason per interval is
    /// recorded (with a count of the ones it stands for). Default 1m.
    pub denial_sample_interval: Duration,
    /// A snapshot of the durable state every this many log entries, so
    /// start-up replays at most that many. Default 10,000.
    pub snapshot_every: u64,
}

/// The longest `audit.denial_sample_interval`: a day.
pub const MAX_DENIAL_SAMPLE_INTERVAL: Duration = Duration::from_secs(24 * 3600);

impl RawAudit {
    pub(super) fn validate(&self, errs: &mut Errors) -> AuditConfig {
        let retention = errs.positive_duration(
            "audit.retention",
            self.retention.as_deref(),
            Duration::from_secs(30 * 24 * 3600),
        );
        let max_entries =
            u64::from(errs.count("audit.max_entries", self.max_entries, 1_000_000, 1));
        let denial_sample_interval = errs.duration_in(
            "audit.denial_sample_interval",
            self.denial_sample_interval.as_deref(),
            Duration::from_secs(60),
            Duration::from_millis(1)..=MAX_DENIAL_SAMPLE_INTERVAL,
            "denials are recorded at least once a day",
        );
        let snapshot_every = u64::from(errs.count_in(
            "audit.snapshot_every",
            self.snapshot_every,
            10_000,
            1,
            MAX_COUNT,
        ));
        AuditConfig {
            retention,
            max_entries,
            denial_sample_interval,
            snapshot_every,
        }
    }
}
