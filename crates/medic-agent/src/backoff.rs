//! The waits the agent keeps between calls to the coordinator: exponential
//! backoff with jitter after failures, and the wait after a denial. (The
//! calls themselves are `medic_client::Client`'s.)

use std::cell::RefCell;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

thread_local! {
    /// This thread's seeded generator, when [`seed_thread`] set one.
    static SEEDED: RefCell<Option<StdRng>> = const { RefCell::new(None) };
}

/// Makes every random draw of the agents on this thread (jitter, request
/// ids) repeatable from `seed`; `None` goes back to the system's
/// generator. The simulator runs a whole fleet on one thread on virtual
/// time, so that the same seed gives the same run.
pub fn seed_thread(seed: Option<u64>) {
    SEEDED.with(|r| *r.borrow_mut() = seed.map(StdRng::seed_from_u64));
}

/// Draws with this thread's seeded generator, or the system's.
pub(crate) fn with_rng<T>(f: impl FnOnce(&mut dyn RngCore) -> T) -> T {
    SEEDED.with(|r| match r.borrow_mut().as_mut() {
        Some(seeded) => f(seeded),
        None => f(&mut rand::rng()),
    })
}

/// Exponential backoff with full jitter between failed calls.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    min: Duration,
    max: Duration,
}

impl Backoff {
    /// Starts at `min`, doubles up to `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            next: min,
            min,
            max,
        }
    }

    /// The wait before the next attempt (random in [next/2, next]), and
    /// doubles the next one.
    pub fn fail(&mut self) -> Duration {
        let d = jitter(self.next, 0.5);
        self.next = (self.next * 2).min(self.max);
        d
    }

    /// A call got through: start again from the minimum.
    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

/// `d` scaled by a random factor in `[1 - spread, 1]`, so a fleet told the
/// same `retry_after` does not come back at the same instant.
pub fn jitter(d: Duration, spread: f64) -> Duration {
    let f = 1.0 - with_rng(|r| r.random_range(0.0..=spread));
    d.mul_f64(f)
}

/// The wait after a denial: its `retry_after` plus up to 20% jitter; when a
/// human must act (no `retry_after`), `idle`.
pub fn after_denial(retry_after: Option<Duration>, idle: Duration) -> Duration {
    match retry_after {
        Some(d) => d.max(Duration::from_secs(1)) + jitter(d / 5, 1.0),
        None => idle,
    }
}

/// The most heartbeat intervals an agent waits on a denial before it asks
/// again, whatever the denial's `retry_after`: a long `retry_after` (a
/// breaker's, say) must not outlast the reason it was given for.
pub const MAX_DENIAL_WAIT_HEARTBEATS: u32 = 6;

/// `wait`, capped at [`MAX_DENIAL_WAIT_HEARTBEATS`] heartbeat intervals
/// (less up to 20% jitter, so a fleet denied together does not come back
/// together).
pub fn cap_denial_wait(wait: Duration, heartbeat_interval: Duration) -> Duration {
    let cap = heartbeat_interval.saturating_mul(MAX_DENIAL_WAIT_HEARTBEATS);
    if wait > cap { jitter(cap, 0.2) } else { wait }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_maximum_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(4));
        let waits: Vec<Duration> = (0..4).map(|_| b.fail()).collect();
        let bounds = [1, 2, 4, 4];
        for (w, max) in waits.iter().zip(bounds) {
            let max = Duration::from_secs(max);
            assert!(
                *w <= max && *w >= max / 2,
                "{w:?} not in [{:?}, {max:?}]",
                max / 2
            );
        }
        b.reset();
        assert!(b.fail() <= Duration::from_secs(1));
    }

    #[test]
    fn a_denial_waits_its_retry_after_plus_jitter_or_idles() {
        let d = after_denial(Some(Duration::from_secs(10)), Duration::from_secs(60));
        assert!(
            d >= Duration::from_secs(10) && d <= Duration::from_secs(12),
            "{d:?}"
        );
        assert_eq!(
            after_denial(None, Duration::from_secs(60)),
            Duration::from_secs(60)
        );
    }

    #[test]
    fn a_denial_wait_is_capped_at_six_heartbeat_intervals_less_jitter() {
        let hb = Duration::from_secs(10);
        let d = cap_denial_wait(Duration::from_secs(900), hb);
        assert!(
            d >= Duration::from_secs(48) && d <= Duration::from_secs(60),
            "{d:?}"
        );
        assert_eq!(
            cap_denial_wait(Duration::from_secs(30), hb),
            Duration::from_secs(30)
        );
    }
}
