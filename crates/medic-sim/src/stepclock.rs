//! The coordinator's clock for scenarios that step its wall clock (the
//! `clock-step` incident): the run's clocks (the system's on real time, the
//! simulated one on virtual time), with an offset added to the wall clock
//! alone. The boot clock is left as it is, as when an operator
//! or a broken NTP daemon sets the time, so the coordinator sees the step
//! the way it would see a real one.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime};

use medic_coordinator::{Clock, SystemClock};

/// A clock's wall clock offset by what [`StepClock::step`] added up.
pub struct StepClock {
    /// The clocks stepped.
    inner: Arc<dyn Clock>,
    /// Nanoseconds added to the wall clock (negative: behind).
    offset_ns: AtomicI64,
}

impl std::fmt::Debug for StepClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StepClock")
            .field("offset_ns", &self.offset_ns())
            .finish_non_exhaustive()
    }
}

impl Default for StepClock {
    fn default() -> Self {
        Self::over(Arc::new(SystemClock))
    }
}

impl StepClock {
    /// `inner`'s clocks, not stepped yet.
    pub fn over(inner: Arc<dyn Clock>) -> Self {
        Self {
            inner,
            offset_ns: AtomicI64::new(0),
        }
    }

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
        let now = self.inner.now();
        let off = self.offset_ns();
        let d = Duration::from_nanos(off.unsigned_abs());
        if off >= 0 {
            now.checked_add(d).unwrap_or(now)
        } else {
            now.checked_sub(d).unwrap_or(now)
        }
    }

    fn since_boot(&self) -> Duration {
        self.inner.since_boot()
    }

    fn boot_id(&self) -> String {
        self.inner.boot_id()
    }
}
