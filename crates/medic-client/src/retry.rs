//! Retry hints: how long a coordinator asks a refused caller to wait
//! ([`retry-after-ms`](medic_proto::metadata::RETRY_AFTER_MS)).

use std::time::Duration;

use medic_proto::metadata;
use tonic::Status;

/// The wait when a RESOURCE_EXHAUSTED carries no usable hint.
pub const DEFAULT_WAIT: Duration = Duration::from_millis(200);
/// The shortest wait [`bounded_wait`] returns (a hint of 0 is not a reason
/// to hammer the coordinator).
pub const MIN_WAIT: Duration = Duration::from_millis(10);
/// The longest wait [`bounded_wait`] returns (a caller waits, it does not
/// hang on a hint).
pub const MAX_WAIT: Duration = Duration::from_secs(5);

/// The hint in `status`, if it carries a well-formed one (a decimal count
/// of milliseconds).
pub fn retry_after(status: &Status) -> Option<Duration> {
    let v = status.metadata().get(metadata::RETRY_AFTER_MS)?;
    let ms = v.to_str().ok()?.trim().parse::<u64>().ok()?;
    Some(Duration::from_millis(ms))
}

/// The wait before retrying after `status`: its hint within
/// [`MIN_WAIT`]..=[`MAX_WAIT`], [`DEFAULT_WAIT`] without one.
pub fn bounded_wait(status: &Status) -> Duration {
    retry_after(status)
        .unwrap_or(DEFAULT_WAIT)
        .clamp(MIN_WAIT, MAX_WAIT)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn with_hint(v: &str) -> Status {
        let mut s = Status::resource_exhausted("slow down");
        s.metadata_mut()
            .insert(metadata::RETRY_AFTER_MS, v.parse().unwrap());
        s
    }

    #[test]
    fn a_well_formed_hint_is_read_in_milliseconds() {
        assert_eq!(
            retry_after(&with_hint("1500")),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            bounded_wait(&with_hint("1500")),
            Duration::from_millis(1500)
        );
    }

    #[test]
    fn a_missing_or_malformed_hint_is_none_and_waits_the_default() {
        let none = Status::resource_exhausted("slow down");
        assert_eq!(retry_after(&none), None);
        assert_eq!(bounded_wait(&none), DEFAULT_WAIT);
        for bad in ["soon", "-5", "1.5", "", "99999999999999999999999"] {
            let s = with_hint(bad);
            assert_eq!(retry_after(&s), None, "{bad:?}");
            assert_eq!(bounded_wait(&s), DEFAULT_WAIT, "{bad:?}");
        }
    }

    #[test]
    fn hints_are_bounded_both_ways() {
        assert_eq!(bounded_wait(&with_hint("0")), MIN_WAIT);
        assert_eq!(bounded_wait(&with_hint("3600000")), MAX_WAIT);
        // The raw hint is still there for callers with their own bounds.
        assert_eq!(
            retry_after(&with_hint("3600000")),
            Some(Duration::from_secs(3600))
        );
    }
}
