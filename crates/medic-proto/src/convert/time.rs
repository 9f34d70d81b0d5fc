//! `google.protobuf.Timestamp` ↔ [`SystemTime`] and `google.protobuf.Duration`
//! ↔ [`Duration`].
//!
//! The wire side is held to the ranges the protobuf documentation defines
//! (years 0001 to 9999; spans of at most 10,000 years, nanoseconds in range
//! and never negative here): anything else is an error naming the field. The
//! domain side can hold values outside those ranges; they saturate at the
//! range's ends, so encoding never fails and never emits an invalid message.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use medic_policy::InvalidInput;

use super::required;

/// Seconds of 0001-01-01T00:00:00Z since the Unix epoch (the earliest valid
/// `Timestamp`).
const MIN_TIMESTAMP_SECS: i64 = -62_135_596_800;
/// Seconds of 9999-12-31T23:59:59Z since the Unix epoch (the latest valid
/// `Timestamp`).
const MAX_TIMESTAMP_SECS: i64 = 253_402_300_799;
const NANOS_PER_SEC: u32 = 1_000_000_000;

/// The longest `google.protobuf.Duration`: 10,000 years, in seconds.
pub const MAX_DURATION_SECS: i64 = 315_576_000_000;

// === Timestamps ===

/// Encodes a wall-clock instant. Instants before year 1 or after year 9999
/// saturate to those ends.
pub fn to_timestamp(time: SystemTime) -> prost_types::Timestamp {
    let (seconds, nanos) = match time.duration_since(UNIX_EPOCH) {
        Ok(after) => match i64::try_from(after.as_secs()) {
            Ok(s) if s <= MAX_TIMESTAMP_SECS => (s, after.subsec_nanos()),
            _ => (MAX_TIMESTAMP_SECS, NANOS_PER_SEC - 1),
        },
        Err(before) => {
            // `before` is the (positive) distance to the epoch; a Timestamp
            // counts whole seconds down and nanoseconds up.
            let before = before.duration();
            let whole = i64::try_from(before.as_secs()).unwrap_or(i64::MAX);
            match before.subsec_nanos() {
                0 => (whole.saturating_neg(), 0),
                n => (whole.saturating_neg().saturating_sub(1), NANOS_PER_SEC - n),
            }
        }
    };
    if seconds < MIN_TIMESTAMP_SECS {
        return prost_types::Timestamp {
            seconds: MIN_TIMESTAMP_SECS,
            nanos: 0,
        };
    }
    prost_types::Timestamp {
        seconds,
        nanos: nanos_i32(nanos),
    }
}

/// Decodes the timestamp in wire field `field`. It must lie within years
/// 0001 to 9999, with `nanos` in `0..1_000_000_000`.
pub fn from_timestamp(
    field: &str,
    timestamp: prost_types::Timestamp,
) -> Result<SystemTime, InvalidInput> {
    let prost_types::Timestamp { seconds, nanos } = timestamp;
    let nanos = u32::try_from(nanos)
        .ok()
        .filter(|n| *n < NANOS_PER_SEC)
        .ok_or_else(|| {
            InvalidInput::new(
                field,
                format!("nanos must be within 0..=999999999, got {nanos}"),
            )
        })?;
    if !(MIN_TIMESTAMP_SECS..=MAX_TIMESTAMP_SECS).contains(&seconds) {
        return Err(InvalidInput::new(
            field,
            format!(
                "must be within 0001-01-01T00:00:00Z..=9999-12-31T23:59:59Z, got {seconds}s since the Unix epoch"
            ),
        ));
    }
    let time = if seconds >= 0 {
        UNIX_EPOCH.checked_add(Duration::new(seconds.unsigned_abs(), nanos))
    } else {
        UNIX_EPOCH
            .checked_sub(Duration::from_secs(seconds.unsigned_abs()))
            .and_then(|t| t.checked_add(Duration::from_nanos(u64::from(nanos))))
    };
    time.ok_or_else(|| {
        InvalidInput::new(
            field,
            format!("{seconds}s since the Unix epoch is out of this platform's range"),
        )
    })
}

/// A timestamp field that must be set.
pub(crate) fn required_time(
    field: &str,
    value: Option<prost_types::Timestamp>,
) -> Result<SystemTime, InvalidInput> {
    from_timestamp(field, required(field, value)?)
}

/// A timestamp field whose absence means `None`.
pub(crate) fn optional_time(
    field: &str,
    value: Option<prost_types::Timestamp>,
) -> Result<Option<SystemTime>, InvalidInput> {
    value.map(|t| from_timestamp(field, t)).transpose()
}

// === Durations ===

/// Encodes a span. Spans longer than [`MAX_DURATION_SECS`] saturate to it.
pub fn to_duration(duration: Duration) -> prost_types::Duration {
    match i64::try_from(duration.as_secs()) {
        Ok(s) if s < MAX_DURATION_SECS => prost_types::Duration {
            seconds: s,
            nanos: nanos_i32(duration.subsec_nanos()),
        },
        _ => prost_types::Duration {
            seconds: MAX_DURATION_SECS,
            nanos: 0,
        },
    }
}

/// Decodes the span in wire field `field`. It must not be negative, must have
/// `nanos` in `0..1_000_000_000`, and must not exceed
/// [`MAX_DURATION_SECS`].
pub fn from_duration(
    field: &str,
    duration: prost_types::Duration,
) -> Result<Duration, InvalidInput> {
    let prost_types::Duration { seconds, nanos } = duration;
    if seconds < 0 || nanos < 0 {
        return Err(InvalidInput::new(
            field,
            format!("must not be negative, got {seconds}s {nanos}ns"),
        ));
    }
    let nanos = u32::try_from(nanos)
        .ok()
        .filter(|n| *n < NANOS_PER_SEC)
        .ok_or_else(|| {
            InvalidInput::new(
                field,
                format!("nanos must be within 0..=999999999, got {nanos}"),
            )
        })?;
    if seconds > MAX_DURATION_SECS || (seconds == MAX_DURATION_SECS && nanos > 0) {
        return Err(InvalidInput::new(
            field,
            format!("must be at most {MAX_DURATION_SECS}s (10000 years), got {seconds}s"),
        ));
    }
    Ok(Duration::new(seconds.unsigned_abs(), nanos))
}

/// A duration field that must be set.
pub(crate) fn required_duration(
    field: &str,
    value: Option<prost_types::Duration>,
) -> Result<Duration, InvalidInput> {
    from_duration(field, required(field, value)?)
}

/// A duration field that must be set and above zero (an interval, a TTL).
pub(crate) fn positive_duration(
    field: &str,
    value: Option<prost_types::Duration>,
) -> Result<Duration, InvalidInput> {
    let duration = required_duration(field, value)?;
    if duration.is_zero() {
        return Err(InvalidInput::new(field, "must be positive, got 0s"));
    }
    Ok(duration)
}

/// A duration field whose absence means `None`.
pub(crate) fn optional_duration(
    field: &str,
    value: Option<prost_types::Duration>,
) -> Result<Option<Duration>, InvalidInput> {
    value.map(|d| from_duration(field, d)).transpose()
}

/// Nanoseconds below one second as the wire's `i32`.
fn nanos_i32(nanos: u32) -> i32 {
    // Callers pass `subsec_nanos()` or a value below NANOS_PER_SEC, which
    // fits; the fallback only keeps this total.
    i32::try_from(nanos.min(NANOS_PER_SEC - 1)).unwrap_or(0)
}
