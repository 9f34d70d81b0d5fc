//! Time behind a trait, so tests drive time instead of sleeping, and
//! steps of the wall clock can be told from time passing.
//!
//! The wall clock can be stepped (NTP after a VM resumes, an operator's
//! `date -s`); the boot clock (`CLOCK_BOOTTIME`) counts time asleep and is
//! never stepped. Two readings of both, in the same boot, show a step as
//! the wall clock moving more, or less, than the boot clock:
//! [`StepWatch`] compares them on every reading the coordinator decides
//! with.

use std::fmt::Debug;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use medic_policy::{ClockMark, ClockStep};

/// Steps smaller than this pass for time passing. NTP slews both clocks
/// alike; only a step moves one without the other, and a second of error
/// in an expiry or a window is harmless.
pub const STEP_THRESHOLD: Duration = Duration::from_secs(1);

/// Where the coordinator reads the time.
pub trait Clock: Send + Sync + Debug + 'static {
    /// The wall clock.
    fn now(&self) -> SystemTime;

    /// Time since boot, counting time asleep; never stepped.
    fn since_boot(&self) -> Duration;

    /// This boot's identity: boot clock readings of different boots do not
    /// compare.
    fn boot_id(&self) -> String;

    /// Both clocks, read together.
    fn mark(&self) -> ClockMark {
        ClockMark {
            wall: self.now(),
            since_boot: self.since_boot(),
            boot: self.boot_id(),
        }
    }
}

/// The system's clocks.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }

    fn since_boot(&self) -> Duration {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        let id = nix::time::ClockId::CLOCK_BOOTTIME;
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        let id = nix::time::ClockId::CLOCK_MONOTONIC;
        // Cannot fail for a clock id the kernel has; a zero would make
        // every reading look like a step, so fall back to the process's
        // monotonic clock instead.
        nix::time::clock_gettime(id).map_or_else(
            |_| monotonic_fallback(),
            |t| {
                Duration::new(
                    u64::try_from(t.tv_sec()).unwrap_or(0),
                    u32::try_from(t.tv_nsec()).unwrap_or(0),
                )
            },
        )
    }

    fn boot_id(&self) -> String {
        static BOOT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        BOOT.get_or_init(|| {
            std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
                .map(|s| s.trim().to_owned())
                // Without a boot id, marks compare only within this
                // process: unique per process, never equal to a stored one.
                .unwrap_or_else(|_| format!("process-{}", std::process::id()))
        })
        .clone()
    }
}

fn monotonic_fallback() -> Duration {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START.get_or_init(std::time::Instant::now).elapsed()
}

/// Clocks that move only when told to (tests): [`ManualClock::advance`]
/// lets time pass, [`ManualClock::step`] jumps the wall clock alone.
#[derive(Debug)]
pub struct ManualClock(Mutex<Manual>);

#[derive(Debug)]
struct Manual {
    wall: SystemTime,
    since_boot: Duration,
    boot: String,
}

impl ManualClock {
    /// A wall clock standing at `start`, an hour after boot.
    pub fn new(start: SystemTime) -> Self {
        Self(Mutex::new(Manual {
            wall: start,
            since_boot: Duration::from_secs(3600),
            boot: "manual-boot-1".to_owned(),
        }))
    }

    fn with<T>(&self, f: impl FnOnce(&mut Manual) -> T) -> T {
        f(&mut self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// Lets `by` pass: both clocks move.
    pub fn advance(&self, by: Duration) {
        self.with(|m| {
            m.wall += by;
            m.since_boot += by;
        });
    }

    /// Steps the wall clock alone, as NTP or `date -s` would.
    pub fn step(&self, step: ClockStep) {
        self.with(|m| m.wall = step.shift(m.wall));
    }

    /// A reboot: a new boot id, the boot clock from near zero. The wall
    /// clock is left where it is.
    pub fn reboot(&self) {
        self.with(|m| {
            m.since_boot = Duration::from_secs(30);
            m.boot = format!("{}+", m.boot);
        });
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        self.with(|m| m.wall)
    }

    fn since_boot(&self) -> Duration {
        self.with(|m| m.since_boot)
    }

    fn boot_id(&self) -> String {
        self.with(|m| m.boot.clone())
    }
}

/// The last reading of both clocks, to find steps between readings. A
/// process lives in one boot, so readings carry no boot id (an empty
/// string, which allocates nothing): each costs two clock reads.
#[derive(Debug)]
pub struct StepWatch {
    last: ClockMark,
}

impl StepWatch {
    /// Starts from `mark`.
    pub fn new(mark: &ClockMark) -> Self {
        Self {
            last: ClockMark {
                boot: String::new(),
                ..mark.clone()
            },
        }
    }

    /// Compares a reading with the last one: the step between them if it
    /// reaches [`STEP_THRESHOLD`]. The reading becomes the last one either
    /// way, so slow drift never adds up to a false step.
    pub fn observe(&mut self, wall: SystemTime, since_boot: Duration) -> Option<ClockStep> {
        let now = ClockMark {
            wall,
            since_boot,
            boot: String::new(),
        };
        let step = self.last.step_to(&now);
        self.last = now;
        step.filter(|s| s.by >= STEP_THRESHOLD)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(watch: &mut StepWatch, clock: &ManualClock) -> Option<ClockStep> {
        watch.observe(clock.now(), clock.since_boot())
    }

    #[test]
    fn time_passing_is_not_a_step_and_a_jump_is() {
        let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        let mut watch = StepWatch::new(&clock.mark());
        clock.advance(Duration::from_secs(3600));
        assert_eq!(read(&mut watch, &clock), None);
        clock.step(ClockStep {
            forward: false,
            by: Duration::from_secs(10_800),
        });
        clock.advance(Duration::from_secs(1));
        assert_eq!(
            read(&mut watch, &clock),
            Some(ClockStep {
                forward: false,
                by: Duration::from_secs(10_800)
            })
        );
        assert_eq!(read(&mut watch, &clock), None, "reported once");
    }

    #[test]
    fn marks_of_different_boots_show_no_step() {
        let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        let before = clock.mark();
        clock.reboot();
        clock.advance(Duration::from_secs(600));
        assert_eq!(before.step_to(&clock.mark()), None);
    }

    #[test]
    fn the_system_boot_clock_moves_with_time() {
        let a = SystemClock.since_boot();
        std::thread::sleep(Duration::from_millis(20));
        let b = SystemClock.since_boot();
        assert!(b > a && b - a >= Duration::from_millis(20), "{a:?} {b:?}");
        assert_eq!(SystemClock.boot_id(), SystemClock.boot_id());
    }
}
