//! `[[limits.<action>.windows]]`: weekly windows (rule 8).

use std::time::Duration;

use chrono::{NaiveTime, Timelike, Weekday};
use serde::Deserialize;

use super::Errors;

/// One weekly window.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawWindow {
    /// Day names (`mon` .. `sun`) on which the window opens.
    pub days: Option<Vec<String>>,
    /// Opening time, `HH:MM`.
    pub start: Option<String>,
    /// Closing time, `HH:MM` (`24:00` allowed; earlier than `start` means the
    /// next day).
    pub end: Option<String>,
}

/// A weekly window: opens on each of `days` at `start`, lasts `length`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    /// Days it opens on.
    pub days: Vec<Weekday>,
    /// Opening time of day, seconds after midnight.
    pub start_secs: u32,
    /// How long it stays open (may run past midnight).
    pub length: Duration,
}

fn parse_weekday(s: &str) -> Option<Weekday> {
    match s.to_ascii_lowercase().as_str() {
        "mon" | "monday" => Some(Weekday::Mon),
        "tue" | "tuesday" => Some(Weekday::Tue),
        "wed" | "wednesday" => Some(Weekday::Wed),
        "thu" | "thursday" => Some(Weekday::Thu),
        "fri" | "friday" => Some(Weekday::Fri),
        "sat" | "saturday" => Some(Weekday::Sat),
        "sun" | "sunday" => Some(Weekday::Sun),
        _ => None,
    }
}

/// Parses `HH:MM` into seconds after midnight; `24:00` is allowed.
fn parse_time_of_day(s: &str) -> Option<u32> {
    if s == "24:00" {
        return Some(24 * 3600);
    }
    let t = NaiveTime::parse_from_str(s, "%H:%M").ok()?;
    Some(t.num_seconds_from_midnight())
}

impl RawWindow {
    pub(super) fn validate(&self, errs: &mut Errors, path: &str) -> Option<Window> {
        let before = errs.len();
        let days: Vec<Weekday> = match &self.days {
            None => {
                errs.push(
                    format!("{path}.days"),
                    "is required (for example [\"sat\", \"sun\"])",
                );
                Vec::new()
            }
            Some(days) if days.is_empty() => {
                errs.push(format!("{path}.days"), "must name at least one day");
                Vec::new()
            }
            Some(days) => days
                .iter()
                .enumerate()
                .filter_map(|(i, d)| {
                    let parsed = parse_weekday(d);
                    if parsed.is_none() {
                        errs.push(
                            format!("{path}.days[{i}]"),
                            format!("unknown day {d:?}; use mon, tue, wed, thu, fri, sat, sun"),
                        );
                    }
                    parsed
                })
                .collect(),
        };
        let mut time = |key: &str, raw: &Option<String>| match raw {
            None => {
                errs.push(format!("{path}.{key}"), "is required (HH:MM)");
                None
            }
            Some(s) => {
                let t = parse_time_of_day(s);
                if t.is_none() {
                    errs.push(
                        format!("{path}.{key}"),
                        format!("invalid time {s:?}; use HH:MM, 00:00 to 24:00"),
                    );
                }
                t
            }
        };
        let start = time("start", &self.start);
        let end = time("end", &self.end);
        if let (Some(s), Some(e)) = (start, end) {
            if s == e {
                errs.push(
                    format!("{path}.end"),
                    "must differ from start (for a whole day use 00:00 to 24:00)",
                );
            }
            if s == 24 * 3600 {
                errs.push(format!("{path}.start"), "24:00 is only valid as an end");
            }
        }
        if errs.len() > before {
            return None;
        }
        let (s, e) = (start?, end?);
        let length = if e > s { e - s } else { 24 * 3600 - s + e };
        Some(Window {
            days,
            start_secs: s,
            length: Duration::from_secs(u64::from(length)),
        })
    }
}
