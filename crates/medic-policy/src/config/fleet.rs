//! `[fleet]`: liveness and warm-up (rule 9).

use std::time::Duration;

use serde::Deserialize;

use super::{
    Errors, MAX_COUNT, MAX_FORGET_HOSTS_AFTER, MAX_HEARTBEAT_INTERVAL, MIN_HEARTBEAT_INTERVAL,
};

/// `[fleet]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawFleet {
    /// How often agents heartbeat (told to them in every reply).
    pub heartbeat_interval: Option<String>,
    /// A host is live while its last heartbeat is younger than this.
    pub host_ttl: Option<String>,
    /// No grants for this long after start.
    pub warmup: Option<String>,
    /// No grants while fewer hosts than this are live.
    pub min_fleet_size: Option<i64>,
    /// A host unheard of for this long, holding nothing, is forgotten.
    pub forget_hosts_after: Option<String>,
}

/// Liveness and warm-up (rule 9).
#[derive(Clone, Debug, PartialEq)]
pub struct FleetConfig {
    /// How often agents heartbeat. Default 10s.
    pub heartbeat_interval: Duration,
    /// Live while the last heartbeat is younger than this. Default 3 ×
    /// heartbeat_interval.
    pub host_ttl: Duration,
    /// No grants this long after start. Default: host_ttl.
    pub warmup: Duration,
    /// No grants while fewer hosts are live. Default 1.
    pub min_fleet_size: u32,
    /// A host unheard of for this long that holds no permit and is not
    /// quarantined is forgotten: its labels, version and problems are
    /// dropped (its budgets live on in the grant records). Default 24h.
    pub forget_hosts_after: Duration,
}

impl RawFleet {
    pub(super) fn validate(&self, errs: &mut Errors, path: &str) -> FleetConfig {
        let heartbeat_interval = errs.duration_in(
            &format!("{path}.heartbeat_interval"),
            self.heartbeat_interval.as_deref(),
            Duration::from_secs(10),
            MIN_HEARTBEAT_INTERVAL..=MAX_HEARTBEAT_INTERVAL,
            "every agent calls this often, and a host unheard of for longer is not watched",
        );
        let host_ttl = errs.positive_duration(
            &format!("{path}.host_ttl"),
            self.host_ttl.as_deref(),
            heartbeat_interval.saturating_mul(3),
        );
        if host_ttl <= heartbeat_interval {
            errs.push(
                format!("{path}.host_ttl"),
                format!(
                    "must be longer than {path}.heartbeat_interval ({}), got {}; \
                     otherwise every host flaps between live and gone",
                    humantime::format_duration(heartbeat_interval),
                    humantime::format_duration(host_ttl)
                ),
            );
        }
        let warmup = errs.duration(&format!("{path}.warmup"), self.warmup.as_deref(), host_ttl);
        if warmup < heartbeat_interval {
            errs.push(
                format!("{path}.warmup"),
                format!(
                    "must be at least {path}.heartbeat_interval ({}), got {}; \
                     a shorter warm-up decides before every host could report",
                    humantime::format_duration(heartbeat_interval),
                    humantime::format_duration(warmup)
                ),
            );
        }
        let min_fleet_size = errs.count_in(
            &format!("{path}.min_fleet_size"),
            self.min_fleet_size,
            1,
            1,
            MAX_COUNT,
        );
        let forget_hosts_after = errs.duration_in(
            &format!("{path}.forget_hosts_after"),
            self.forget_hosts_after.as_deref(),
            Duration::from_secs(24 * 3600).max(host_ttl),
            host_ttl..=MAX_FORGET_HOSTS_AFTER,
            "a host is forgotten only after it stopped being live",
        );
        FleetConfig {
            heartbeat_interval,
            host_ttl,
            warmup,
            min_fleet_size,
            forget_hosts_after,
        }
    }
}
