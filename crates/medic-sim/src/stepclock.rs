//! The coordinator's clock for scenarios that step its wall clock (the
//! `clock-step` incident): the system's clocks, with an offset added to the
//! wall clock alone. The boot clock is left as it is, as when an operator
//! or a broken NTP daemon sets the time, so the coordinator sees the step
//! the way it would see a real one.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime};

use medic_coordinator::{Clock, SystemClock};

/// The system's clocks, the wall clock offset by what [`StepClock::step`]
/// added up.
#[derive(Debug, Default)]
pub struct StepClock {
    /// Nanoseconds added to the wall clock (negative: behind).
    offset_ns: AtomicI64,
}

impl StepClock {
    /// Steps the wall clock `by`, forward or back.
    pub fn step(&self, forward: bool, by: Duration) {
        let ns = i64::try_from(by.as_nanos()).unwrap_or(i64::MAX);
        self.offset_ns
            .fetch_add(if forward { ns } else { -ns }, Ordering::SeqCst);
    }

    /// The current offset of the wall clock, signed nanoseconds.
    pub fn offset_ns(&self) -> i64 {
        self.offset_ns.load(Ordering::SeqCst)
    }
}

impl Clock for StepClock {
    fn now(&self) -> SystemTime {
        let now = SystemClock.now();
        let off = self.offset_ns();
        let d = Duration::from_nanos(off.unsigned_abs());
        if off >= 0 {
            now.checked_add(d).unwrap_or(now)
        } else {
            now.checked_sub(d).unwrap_or(now)
        }
    }

    fn since_boot(&self) -> Duration {
        SystemClock.since_boot()
    }

    fn boot_id(&self) -> String {
        SystemClock.boot_id()
    }
}
