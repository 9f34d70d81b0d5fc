//! Weekly windows in a named time zone (rule 8).

use std::time::Duration;

use chrono::{DateTime, Datelike, Days, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;

use crate::config::Window;
use crate::types::Time;

/// Whether `now` falls inside one of `windows` (always, when there are none);
/// otherwise how long until the next one opens (`None` if none ever opens,
/// which validation prevents).
pub(crate) fn check(windows: &[Window], tz: Tz, now: Time) -> Result<(), Option<Duration>> {
    if windows.is_empty() {
        return Ok(());
    }
    let now_utc: DateTime<Utc> = now.into();
    let today = now_utc.with_timezone(&tz).date_naive();
    let mut next_open: Option<DateTime<Utc>> = None;
    // An occurrence lasts at most a day, so one that started yesterday may
    // still be open; the next opening is within the coming week.
    for offset in -1i64..=8 {
        let Some(date) = shift(today, offset) else {
            continue;
        };
        for w in windows {
            if !w.days.contains(&date.weekday()) {
                continue;
            }
            let Some(open) = local_instant(tz, date, w.start_secs) else {
                continue;
            };
            let close = open + chrono::Duration::from_std(w.length).unwrap_or_default();
            if open <= now_utc && now_utc < close {
                return Ok(());
            }
            if open > now_utc && next_open.is_none_or(|n| open < n) {
                next_open = Some(open);
            }
        }
    }
    Err(next_open.map(|n| (n - now_utc).to_std().unwrap_or_default()))
}

fn shift(date: NaiveDate, days: i64) -> Option<NaiveDate> {
    if days >= 0 {
        date.checked_add_days(Days::new(days.unsigned_abs()))
    } else {
        date.checked_sub_days(Days::new(days.unsigned_abs()))
    }
}

/// The instant at `secs` after local midnight of `date` in `tz`. A time that
/// a DST change skips opens at the first valid instant after it.
fn local_instant(tz: Tz, date: NaiveDate, secs: u32) -> Option<DateTime<Utc>> {
    let midnight: NaiveDateTime = date.and_hms_opt(0, 0, 0)?;
    let mut local = midnight + chrono::Duration::seconds(i64::from(secs));
    for _ in 0..4 {
        if let Some(t) = tz.from_local_datetime(&local).earliest() {
            return Some(t.with_timezone(&Utc));
        }
        local += chrono::Duration::minutes(30);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Weekday;

    fn at(rfc3339: &str) -> Time {
        DateTime::parse_from_rfc3339(rfc3339)
            .map(|d| d.with_timezone(&Utc).into())
            .unwrap_or_else(|e| panic!("bad test time {rfc3339}: {e}"))
    }

    fn weekend_nights() -> Vec<Window> {
        vec![Window {
            days: vec![Weekday::Sat, Weekday::Sun],
            start_secs: 22 * 3600,
            length: Duration::from_secs(6 * 3600),
        }]
    }

    #[test]
    fn no_windows_means_always_allowed() {
        assert_eq!(
            check(&[], chrono_tz::UTC, at("2026-11-25T12:00:00Z")),
            Ok(())
        );
    }

    #[test]
    fn inside_a_window_that_runs_past_midnight() {
        // Sunday 02:00 Berlin is inside Saturday's 22:00 + 6h window.
        let now = at("2026-11-29T01:00:00Z");
        assert_eq!(
            check(&weekend_nights(), chrono_tz::Europe::Berlin, now),
            Ok(())
        );
    }

    #[test]
    fn outside_reports_time_until_next_opening_in_the_zone() {
        // Wednesday 12:00 UTC = 13:00 Berlin; next opening Saturday 22:00
        // Berlin = 21:00 UTC: 3 days 9 hours.
        let now = at("2026-11-25T12:00:00Z");
        let wait = check(&weekend_nights(), chrono_tz::Europe::Berlin, now);
        assert_eq!(wait, Err(Some(Duration::from_secs((3 * 24 + 9) * 3600))));
    }

    #[test]
    fn window_opening_in_a_dst_gap_opens_after_the_gap() {
        // 2026-03-29 02:30 does not exist in Berlin (clocks jump 02:00 -> 03:00).
        let w = vec![Window {
            days: vec![Weekday::Sun],
            start_secs: 2 * 3600 + 1800,
            length: Duration::from_secs(3600),
        }];
        // 03:10 Berlin (CEST) = 01:10 UTC: inside the shifted window.
        assert_eq!(
            check(&w, chrono_tz::Europe::Berlin, at("2026-03-29T01:10:00Z")),
            Ok(())
        );
    }
}
