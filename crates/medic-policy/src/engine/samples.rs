//! The failure breaker's samples: which hosts' remediations ended within
//! the window, and which of those failed. A host counts once however often
//! it failed: one bad host is its attempt budget's business, not a sign
//! that the fleet is sick.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use crate::types::{HostId, Labels, Time};

/// Outcomes within the window, counted by host.
#[derive(Debug, Default)]
pub(super) struct FailureSamples {
    /// (when, whose, failed), oldest first.
    samples: VecDeque<(Time, HostId, bool)>,
    /// Per host: its samples in the window, how many of them failed, and
    /// the latest one's time and labels.
    per_host: HashMap<HostId, PerHost>,
    /// Hosts with at least one failed sample in the window.
    failed_hosts: u32,
}

/// One host's samples in the window.
#[derive(Debug, Default)]
pub(super) struct PerHost {
    count: u32,
    failed: u32,
    /// The latest sample's time.
    pub(super) last: Option<Time>,
    /// The latest sample's labels (its permit's).
    pub(super) labels: Labels,
}

impl FailureSamples {
    /// Records one ended remediation of `host`, granted with `labels`.
    pub(super) fn record(&mut self, at: Time, host: &HostId, failed: bool, labels: &Labels) {
        let entry = self.per_host.entry(host.clone()).or_default();
        entry.count += 1;
        if entry.last.is_none_or(|l| l <= at) {
            entry.last = Some(at);
            entry.labels.clone_from(labels);
        }
        if failed {
            entry.failed += 1;
            if entry.failed == 1 {
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
            entry.count -= 1;
            if failed {
                entry.failed -= 1;
                if entry.failed == 0 {
                    self.failed_hosts -= 1;
                }
            }
            if entry.count == 0 {
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

    /// Each host with an outcome in the window: whether one failed, and
    /// its latest sample.
    pub(super) fn by_host(&self) -> impl Iterator<Item = (bool, &PerHost)> {
        self.per_host.values().map(|p| (p.failed > 0, p))
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
            s.record(t(i), &h("bad"), true, &Labels::new());
        }
        assert_eq!((s.hosts(), s.failed_hosts()), (1, 1));
        s.record(t(6), &h("good"), false, &Labels::new());
        assert_eq!((s.hosts(), s.failed_hosts()), (2, 1));
    }

    #[test]
    fn a_host_stops_counting_as_failed_when_its_last_failure_ages_out() {
        let mut s = FailureSamples::default();
        let window = Duration::from_secs(60);
        s.record(t(0), &h("a"), true, &Labels::new());
        s.record(t(30), &h("a"), false, &Labels::new());
        s.record(t(40), &h("b"), true, &Labels::new());
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
