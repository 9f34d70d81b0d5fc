//! The agent's clocks, behind one seam so that its tests run on virtual
//! time.
//!
//! The agent reads two clocks. The **wall clock** ([`Clock::now`]) dates
//! what it tells others and what detectors compare with files and /proc:
//! a problem's `since`, a heartbeat file's age, a request id. The
//! **monotonic clock** ([`Clock::instant`], [`Clock::sleep`],
//! [`Clock::sleep_until`]) times everything that means "elapsed": a held
//! permit's lifetime and safety margin (I8), the check schedule, backoff,
//! verification deadlines.
//!
//! The monotonic side is tokio's timer, whatever the implementation: the
//! client's per-call deadlines (`request_timeout`) run on it too, and the
//! agent's own waits must agree with them. Under tokio's paused time
//! (`#[tokio::test(start_paused = true)]`, `tokio::time::advance`) every
//! wait of the agent is virtual. Only the wall clock differs between
//! [`SystemClock`] (production) and [`VirtualClock`] (tests), which follows
//! tokio's clock from a fixed origin.

use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::time::{Instant, Sleep};

/// Where the agent reads the time and waits.
pub trait Clock: Send + Sync + Debug + 'static {
    /// The wall clock.
    fn now(&self) -> SystemTime;

    /// The monotonic clock (tokio's, so paused time pauses it).
    fn instant(&self) -> Instant {
        Instant::now()
    }

    /// Waits for `d` on the monotonic clock.
    fn sleep(&self, d: Duration) -> Sleep {
        tokio::time::sleep(d)
    }

    /// Waits until `deadline` on the monotonic clock.
    fn sleep_until(&self, deadline: Instant) -> Sleep {
        tokio::time::sleep_until(deadline)
    }
}

/// The system's clocks: production.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A wall clock for tests that moves with tokio's clock: it reads `origin`
/// plus the monotonic time elapsed since it was made, so under paused time
/// `tokio::time::advance` moves both clocks together. [`VirtualClock::step`]
/// jumps the wall clock alone, as an NTP step would.
#[derive(Clone, Debug)]
pub struct VirtualClock(Arc<Mutex<Virtual>>);

#[derive(Debug)]
struct Virtual {
    origin: SystemTime,
    start: Instant,
}

impl VirtualClock {
    /// A wall clock that reads `origin` now.
    pub fn new(origin: SystemTime) -> Self {
        Self(Arc::new(Mutex::new(Virtual {
            origin,
            start: Instant::now(),
        })))
    }

    /// Steps the wall clock forward by `d` (the monotonic clock does not
    /// move).
    pub fn step(&self, d: Duration) {
        self.lock().origin += d;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Virtual> {
        // The data is two plain values: a panic elsewhere cannot leave it
        // half-written.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Clock for VirtualClock {
    fn now(&self) -> SystemTime {
        let v = self.lock();
        v.origin + v.start.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_virtual_wall_clock_follows_paused_tokio_time_and_steps_alone() {
        let origin = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let clock = VirtualClock::new(origin);
        let start = clock.instant();
        assert_eq!(clock.now(), origin);
        tokio::time::advance(Duration::from_secs(90)).await;
        assert_eq!(clock.now(), origin + Duration::from_secs(90));
        clock.sleep(Duration::from_secs(10)).await;
        assert_eq!(clock.now(), origin + Duration::from_secs(100));
        clock.step(Duration::from_secs(3600));
        assert_eq!(clock.now(), origin + Duration::from_secs(3700));
        assert_eq!(clock.instant() - start, Duration::from_secs(100));
    }
}
