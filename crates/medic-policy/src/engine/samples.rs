//! The failure breaker's samples: which hosts' remediations ended within
//! the window, and which of those failed. A host counts once however often
//! it failed: one bad host is its attempt budget's business, not a sign
//! that the fleet is sick.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use crate::types::{HostId, Time};

/// Outcomes within the window, counted by host.
#[derive(Debug, Default)]
pub(super) struct FailureSamples {
    /// (when, whose, failed), oldest first.
    samples: VecDeque<(Time, HostId, bool)>,
    /// Per host: its samples in the window, and how many of them failed.
    per_host: HashMap<HostId, (u32, u32)>,
    /// Hosts with at least one failed sample in the window.
    failed_hosts: u32,
}

impl FailureSamples {
    /// Records one ended remediation of `host`.
    pub(super) fn record(&mut self, at: Time, host: &HostId, failed: bool) {
        let entry = self.per_host.entry(host.clone()).or_default();
        entry.0 += 1;
        if failed {
            entry.1 += 1;
            if entry.1 == 1 {
                self.failed_hosts += 1;
            }
        }
        self.samples.push_back((at, host.clone(), failed));
    }

    /// Drops the samples older than `window` at `now`.
    pub(super) fn age(&mut self, now: Time, window: Duration) {
        while let Some((at, _, _)) = self.samples.front() {
            if !now.duration_since(*at).is_ok_and(|d| d > window) {
                break;
            }
            let Some((_, host, failed)) = self.samples.pop_front() else {
                break;
            };
            let Some(entry) = self.per_host.get_mut(&host) else {
                continue;
            };
            entry.0 -= 1;
            if failed {
                entry.1 -= 1;
                if entry.1 == 0 {
                    self.failed_hosts -= 1;
                }
            }
            if entry.0 == 0 {
                self.per_host.remove(&host);
            }
        }
    }

    /// Forgets everything (before a rebuild from the durable endings).
    pub(super) fn clear(&mut self) {
        *self = Self::default();
    }

    /// Distinct hosts with an outcome in the window.
    pub(super) fn hosts(&self) -> u32 {
        u32::try_from(self.per_host.len()).unwrap_or(u32::MAX)
    }

    /// Distinct hosts with a failed or expired outcome in the window.
    pub(super) fn failed_hosts(&self) -> u32 {
        self.failed_hosts
    }

    /// Each host with an outcome in the window, and whether one failed.
    pub(super) fn by_host(&self) -> impl Iterator<Item = (&HostId, bool)> {
        self.per_host
            .iter()
            .map(|(h, &(_, failed))| (h, failed > 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: u64) -> Time {
        Time::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + s)
    }

    fn h(name: &str) -> HostId {
        HostId::new(name).expect("a valid host id")
    }

    #[test]
    fn a_host_that_failed_five_times_counts_once() {
        let mut s = FailureSamples::default();
        for i in 0..5 {
            s.record(t(i), &h("bad"), true);
        }
        assert_eq!((s.hosts(), s.failed_hosts()), (1, 1));
        s.record(t(6), &h("good"), false);
        assert_eq!((s.hosts(), s.failed_hosts()), (2, 1));
    }

    #[test]
    fn a_host_stops_counting_as_failed_when_its_last_failure_ages_out() {
        let mut s = FailureSamples::default();
        let window = Duration::from_secs(60);
        s.record(t(0), &h("a"), true);
        s.record(t(30), &h("a"), false);
        s.record(t(40), &h("b"), true);
        s.age(t(61), window);
        assert_eq!(
            (s.hosts(), s.failed_hosts()),
            (2, 1),
            "a's failure aged out"
        );
        s.age(t(91), window);
        assert_eq!(
            (s.hosts(), s.failed_hosts()),
            (1, 1),
            "a has no sample left"
        );
        s.age(t(101), window);
        assert_eq!((s.hosts(), s.failed_hosts()), (0, 0));
    }
}
