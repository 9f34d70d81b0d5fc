//! Sampling for the audit history: a flood of denials or refused calls
//! leaves one record per key and interval, carrying the count of those
//! suppressed since, while metrics count every one.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use medic_policy::{Denial, DenyReason, HostId};

/// One sampled key: when it was last recorded, and how many were
/// suppressed since.
#[derive(Clone, Copy, Debug)]
struct Sample {
    last: SystemTime,
    suppressed: u64,
}

impl Sample {
    fn first(now: SystemTime) -> Self {
        Self {
            last: now,
            suppressed: 0,
        }
    }

    /// `Some(count)` when this one is recorded, standing for `count` (itself
    /// and the ones suppressed before it); a clock that went back counts as
    /// inside the interval.
    fn observe(&mut self, now: SystemTime, interval: Duration) -> Option<u64> {
        if now < self.last || now.duration_since(self.last).is_ok_and(|d| d < interval) {
            self.suppressed += 1;
            return None;
        }
        let count = self.suppressed + 1;
        *self = Self::first(now);
        Some(count)
    }

    fn age(&self, now: SystemTime) -> Duration {
        now.duration_since(self.last).unwrap_or_default()
    }

    /// Worth keeping: something suppressed waits to be counted, or it was
    /// recorded less than `keep` ago.
    fn live(&self, now: SystemTime, keep: Duration) -> bool {
        self.suppressed > 0 || self.age(now) < keep
    }
}

/// Denials, sampled per host and reason.
#[derive(Debug)]
pub(crate) struct DenialSampler {
    pub(crate) interval: Duration,
    /// Per host, per reason (by `DenyReason::ALL` index): allocation-free
    /// for a host already seen, on the deny path.
    seen: HashMap<HostId, [Option<Sample>; DenyReason::ALL.len()]>,
}

impl DenialSampler {
    pub(crate) fn new(interval: Duration) -> Self {
        Self {
            interval,
            seen: HashMap::new(),
        }
    }

    /// `Some(count)` when this denial is recorded (see [`Sample::observe`]).
    pub(crate) fn observe(
        &mut self,
        host: &HostId,
        denial: &Denial,
        now: SystemTime,
    ) -> Option<u64> {
        let i = DenyReason::ALL
            .iter()
            .position(|r| *r == denial.reason)
            .unwrap_or(0);
        let slots = match self.seen.get_mut(host) {
            Some(slots) => slots,
            None => self
                .seen
                .entry(host.clone())
                .or_insert([None; DenyReason::ALL.len()]),
        };
        match &mut slots[i] {
            Some(sample) => sample.observe(now, self.interval),
            slot @ None => {
                *slot = Some(Sample::first(now));
                Some(1)
            }
        }
    }

    /// Forgets hosts quiet for two intervals with nothing suppressed.
    pub(crate) fn prune(&mut self, now: SystemTime) {
        let keep = self.interval.saturating_mul(2);
        self.seen
            .retain(|_, slots| slots.iter().flatten().any(|s| s.live(now, keep)));
    }
}

/// Refused calls, sampled per identity and call. Refused callers choose
/// their own names (a rejected certificate's subject), so what they cause
/// is bounded in size and in time.
#[derive(Debug)]
pub(crate) struct RefusalSampler {
    pub(crate) interval: Duration,
    seen: HashMap<String, Sample>,
}

impl RefusalSampler {
    /// Keys tracked at most; beyond it new ones are counted in metrics but
    /// not sampled.
    const MAX_TRACKED: usize = 50_000;

    pub(crate) fn new(interval: Duration) -> Self {
        Self {
            interval,
            seen: HashMap::new(),
        }
    }

    /// `Some(count)` when this refusal is recorded (see
    /// [`Sample::observe`]).
    pub(crate) fn observe(&mut self, key: String, now: SystemTime) -> Option<u64> {
        if let Some(sample) = self.seen.get_mut(&key) {
            return sample.observe(now, self.interval);
        }
        if self.seen.len() >= Self::MAX_TRACKED {
            return None;
        }
        self.seen.insert(key, Sample::first(now));
        Some(1)
    }

    /// Forgets keys quiet for two intervals, and any (suppressed counts
    /// included) after ten.
    pub(crate) fn prune(&mut self, now: SystemTime) {
        let keep = self.interval.saturating_mul(2);
        let at_most = self.interval.saturating_mul(10);
        self.seen
            .retain(|_, s| s.age(now) < at_most && s.live(now, keep));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_refusal_of_a_key_is_recorded_and_the_next_ones_counted_with_the_one_after() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut s = RefusalSampler::new(Duration::from_secs(60));
        assert_eq!(s.observe("cert:x Admin/Pause".into(), t0), Some(1));
        for i in 1..=3 {
            assert_eq!(
                s.observe("cert:x Admin/Pause".into(), t0 + Duration::from_secs(i)),
                None
            );
        }
        // A clock stepped back is inside the interval.
        assert_eq!(
            s.observe("cert:x Admin/Pause".into(), t0 - Duration::from_secs(5)),
            None
        );
        assert_eq!(
            s.observe("cert:x Admin/Pause".into(), t0 + Duration::from_secs(61)),
            Some(5)
        );
        // Quiet for two intervals with nothing suppressed: forgotten.
        s.prune(t0 + Duration::from_secs(61 + 121));
        assert!(s.seen.is_empty());
    }
}
