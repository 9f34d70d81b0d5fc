//! The rate budget of one action (rule 7): GCRA for steady spacing plus an
//! exact sliding-window count, both derived from the grant log, so a restart
//! rebuilds the same budget from durable history instead of refilling it.

use std::collections::VecDeque;
use std::time::Duration;

use crate::config::Rate;
use crate::types::{Time, later};

/// Grant times of one action and the GCRA state derived from them.
#[derive(Debug, Default, Clone)]
pub(crate) struct RateState {
    /// Grant times, oldest first, kept for `per + burst × interval + interval`.
    log: VecDeque<Time>,
    /// GCRA's theoretical arrival time of the next conforming grant.
    tat: Option<Time>,
}

impl RateState {
    /// Rebuilds the state from grant times (oldest first).
    pub(crate) fn rebuild(rate: &Rate, times: impl IntoIterator<Item = Time>) -> Self {
        let mut s = Self::default();
        for t in times {
            s.record(rate, t);
        }
        s
    }

    /// Records a grant at `now`.
    pub(crate) fn record(&mut self, rate: &Rate, now: Time) {
        let t = rate.interval();
        let base = match self.tat {
            Some(tat) if tat > now => tat,
            _ => now,
        };
        self.tat = Some(later(base, t));
        self.log.push_back(now);
    }

    /// Drops grants no check can look at any more.
    pub(crate) fn prune(&mut self, rate: &Rate, now: Time) {
        let keep = rate.lookback();
        while let Some(&front) = self.log.front() {
            if now.duration_since(front).unwrap_or_default() > keep {
                self.log.pop_front();
            } else {
                break;
            }
        }
    }

    /// Grants in the window of length `per` ending at `now`.
    pub(crate) fn used(&self, rate: &Rate, now: Time) -> u32 {
        u32::try_from(self.log.len() - self.window_start(rate, now)).unwrap_or(u32::MAX)
    }

    /// Index of the first grant inside the window `(now - per, now]`.
    fn window_start(&self, rate: &Rate, now: Time) -> usize {
        self.log
            .partition_point(|&t| now.duration_since(t).is_ok_and(|d| d >= rate.per))
    }

    /// `Ok` if a grant at `now` fits the budget, else how long until one does.
    pub(crate) fn check(&self, rate: &Rate, now: Time) -> Result<(), Duration> {
        let tolerance = rate.tolerance();
        let mut wait = Duration::ZERO;
        if let Some(tat) = self.tat {
            // Conforming iff now >= tat - tolerance.
            if let Ok(ahead) = tat.duration_since(now)
                && ahead > tolerance
            {
                wait = ahead - tolerance;
            }
        }
        // The hard bound of I2: at most count + burst in any window `per`.
        let limit = rate.limit() as usize;
        let in_window = self.log.len() - self.window_start(rate, now);
        if limit == 0 || in_window >= limit {
            // The grant that must leave the window before another fits.
            let leaves = self
                .log
                .get(self.log.len().saturating_sub(limit.max(1)))
                .map_or(now, |&t| later(t, rate.per));
            wait = wait.max(leaves.duration_since(now).unwrap_or_default());
        }
        if wait.is_zero() { Ok(()) } else { Err(wait) }
    }

    /// When the next grant fits, if not now.
    pub(crate) fn next_at(&self, rate: &Rate, now: Time) -> Option<Time> {
        self.check(rate, now).err().map(|w| later(now, w))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(count: u32, per_secs: u64, burst: u32) -> Rate {
        Rate {
            count,
            per: Duration::from_secs(per_secs),
            burst,
        }
    }

    fn t(secs: u64) -> Time {
        Time::UNIX_EPOCH + Duration::from_secs(1_000_000 + secs)
    }

    #[test]
    fn burst_plus_one_grants_fit_at_once_then_steady_spacing() {
        let r = rate(10, 600, 2); // one per minute, burst 2
        let mut s = RateState::default();
        for _ in 0..3 {
            assert_eq!(s.check(&r, t(0)), Ok(()));
            s.record(&r, t(0));
        }
        assert_eq!(s.check(&r, t(0)), Err(Duration::from_secs(60)));
        assert_eq!(s.check(&r, t(60)), Ok(()));
    }

    #[test]
    fn no_window_of_length_per_exceeds_count_plus_burst() {
        let r = rate(5, 100, 3);
        let mut s = RateState::default();
        let mut grants = Vec::new();
        for sec in 0..1000 {
            if s.check(&r, t(sec)).is_ok() {
                s.record(&r, t(sec));
                grants.push(sec);
            }
            s.prune(&r, t(sec));
        }
        for (i, &g) in grants.iter().enumerate() {
            let in_window = grants[i..].iter().take_while(|&&x| x < g + 100).count();
            assert!(in_window <= 8, "window at {g} holds {in_window} grants");
        }
    }

    #[test]
    fn rates_past_the_bounds_saturate_instead_of_panicking() {
        // What validation refuses: had one got through, the rule would
        // still answer (denying for as long as a time can say).
        let r = Rate {
            count: 1,
            per: Duration::from_secs(100_000_000_000),
            burst: u32::MAX,
        };
        assert_eq!(r.tolerance(), Duration::MAX);
        assert_eq!(r.lookback(), Duration::MAX);
        let mut s = RateState::default();
        for _ in 0..3 {
            s.record(&r, t(0));
        }
        s.prune(&r, t(1));
        assert_eq!(s.used(&r, t(1)), 3);
        assert_eq!(s.next_at(&r, t(1)).is_some(), s.check(&r, t(1)).is_err());
    }

    #[test]
    fn rebuilding_from_the_log_gives_the_same_budget() {
        let r = rate(4, 60, 1);
        let mut live = RateState::default();
        let times: Vec<Time> = [0, 1, 20, 35].into_iter().map(t).collect();
        for &x in &times {
            live.record(&r, x);
        }
        let rebuilt = RateState::rebuild(&r, times);
        for sec in 35..120 {
            assert_eq!(live.check(&r, t(sec)), rebuilt.check(&r, t(sec)));
        }
    }
}
