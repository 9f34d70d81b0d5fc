//! Hosts that went silent: the liveness-drop breaker's count (rule 2).
//!
//! A host that was live and stops heartbeating (past `host_ttl`, holding no
//! permit) is *silent* until it is heard from again or forgotten. Silent
//! hosts count as unhealthy for the unhealthy share, so a partition or a
//! mass crash never makes the fleet look healthier. Those that went silent
//! within `liveness_drop.window` are *recently silent*: too large a share
//! of them opens the liveness-drop breaker. A host that comes back stops
//! counting at once, so a rolling restart of agents (a few hosts silent at
//! a time, each briefly) never adds up.

use std::collections::VecDeque;

use humantime::format_duration;

use super::Engine;
use crate::types::{HostId, Time};

/// The recently silent hosts.
#[derive(Debug, Default)]
pub(super) struct Silences {
    /// (since, host) of each host that went silent within the window,
    /// oldest first. Entries of hosts heard from again are skipped when
    /// they age out.
    recent: VecDeque<(Time, HostId)>,
    /// Hosts recently silent now.
    count: u32,
    /// Hosts that ever went silent in this engine's life.
    total: u64,
    /// `total` when the fleet breaker last went half-open.
    total_at_half_open: u64,
}

impl Silences {
    /// Notes that the fleet breaker went half-open: a liveness drop opens it
    /// again only with hosts that went silent after this.
    pub(super) fn mark_half_open(&mut self) {
        self.total_at_half_open = self.total;
    }
}

// === impl Engine: silence ===

impl Engine {
    /// Host slot `i`, which was live, has just gone silent.
    pub(super) fn went_silent(&mut self, i: usize, now: Time) {
        let slot = &mut self.hosts[i];
        slot.silent_since = Some(now);
        slot.recently_silent = true;
        self.silence.count += 1;
        self.silence.total += 1;
        self.silence.recent.push_back((now, slot.id.clone()));
    }

    /// Host slot `i`, silent, has been heard from again.
    pub(super) fn heard_again(&mut self, i: usize) {
        let slot = &mut self.hosts[i];
        slot.silent_since = None;
        if std::mem::take(&mut slot.recently_silent) {
            self.silence.count = self.silence.count.saturating_sub(1);
        }
    }

    /// Silences older than `liveness_drop.window` stop being recent.
    pub(super) fn age_silences(&mut self, now: Time) {
        let window = self.config.breaker.liveness_drop.window;
        while let Some((at, _)) = self.silence.recent.front() {
            if !now.duration_since(*at).is_ok_and(|d| d > window) {
                break;
            }
            let Some((at, host)) = self.silence.recent.pop_front() else {
                break;
            };
            if let Some(&i) = self.host_index.get(&host) {
                let slot = &mut self.hosts[i];
                if slot.recently_silent && slot.silent_since == Some(at) {
                    slot.recently_silent = false;
                    self.silence.count = self.silence.count.saturating_sub(1);
                }
            }
        }
    }

    /// Recounts the recently silent hosts from the slots (after a rebuild
    /// of the indexes: a config change, a clock step, forgotten hosts).
    pub(super) fn rebuild_silences(&mut self) {
        let now = self.clock;
        let window = self.config.breaker.liveness_drop.window;
        let mut recent: Vec<(Time, HostId)> = Vec::new();
        for slot in &mut self.hosts {
            slot.recently_silent = slot
                .silent_since
                .is_some_and(|s| !now.duration_since(s).is_ok_and(|d| d > window));
            if slot.recently_silent
                && let Some(s) = slot.silent_since
            {
                recent.push((s, slot.id.clone()));
            }
        }
        recent.sort();
        self.silence.count = u32::try_from(recent.len()).unwrap_or(u32::MAX);
        self.silence.recent = recent.into();
    }

    /// The liveness-drop condition: more than `liveness_drop.percent` of
    /// the hosts live a moment ago (live now, or recently silent) went
    /// silent within the window. `None` when it does not hold.
    pub(super) fn liveness_drop(&self) -> Option<String> {
        let ld = &self.config.breaker.liveness_drop;
        let silent = self.silence.count;
        let recently_live = self.fleet.live.saturating_add(silent);
        if silent < ld.min_hosts || !super::breakers::over(silent, recently_live, ld.percent) {
            return None;
        }
        Some(format!(
            "{silent} of {recently_live} hosts live within the last {} went silent \
             ({:.1}% > liveness_drop.percent {}%): a partition, a dead failure domain \
             or a mass crash, which medic cannot tell apart",
            format_duration(ld.window),
            super::breakers::pct(silent, recently_live),
            ld.percent
        ))
    }

    /// Whether enough hosts went silent since the fleet breaker went
    /// half-open for a liveness drop to open it again.
    pub(super) fn silent_since_half_open(&self) -> bool {
        let new = self.silence.total - self.silence.total_at_half_open;
        new >= u64::from(self.config.breaker.liveness_drop.min_hosts)
    }

    /// Hosts silent now, recently or not (status, metrics).
    pub(super) fn silent_hosts(&self) -> u32 {
        self.fleet.silent
    }
}
