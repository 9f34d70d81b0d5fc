//! Human formatting: durations (`3m12s`), times absolute and relative
//! (`2026-11-26 17:42:01Z (3m ago)`), aligned tables, and the names of the
//! protocol's enum values.

use std::io::{self, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A span in at most two units, largest first: `45s`, `3m12s`, `2h5m`,
/// `3d4h`. Under a second: `250ms`, or `0s`.
pub fn duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        let ms = d.subsec_millis();
        return if ms == 0 {
            "0s".to_owned()
        } else {
            format!("{ms}ms")
        };
    }
    let units = [(86_400, "d"), (3_600, "h"), (60, "m"), (1, "s")];
    let mut out = String::new();
    let mut rest = secs;
    let mut shown = 0;
    for (size, name) in units {
        let n = rest / size;
        rest %= size;
        if n > 0 {
            out.push_str(&format!("{n}{name}"));
            shown += 1;
        } else if shown > 0 {
            // A zero between two units ends the list: `2h` not `2h0m5s`.
            shown += 1;
        }
        if shown == 2 {
            break;
        }
    }
    out
}

/// How far `t` is from `now`: `3m ago`, `in 12m`, or `now` within a second.
pub fn relative(t: SystemTime, now: SystemTime) -> String {
    match t.duration_since(now) {
        Ok(ahead) if ahead >= Duration::from_secs(1) => format!("in {}", duration(ahead)),
        Ok(_) => "now".to_owned(),
        Err(e) if e.duration() >= Duration::from_secs(1) => {
            format!("{} ago", duration(e.duration()))
        }
        Err(_) => "now".to_owned(),
    }
}

/// An instant in UTC to the second: `2026-11-26 17:42:01Z`.
pub fn absolute(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(printable(t))
        .to_string()
        .replacen('T', " ", 1)
}

/// The last second RFC 3339 can print (four-digit years).
const LAST_PRINTABLE: Duration = Duration::from_secs(253_402_300_799);

/// `t` within what the RFC 3339 formatters print (they panic past year
/// 9999): a coordinator never sends such times, but medicctl must not
/// crash on one.
pub fn printable(t: SystemTime) -> SystemTime {
    t.min(UNIX_EPOCH + LAST_PRINTABLE)
}

/// Absolute and relative: `2026-11-26 17:42:01Z (3m ago)`.
pub fn time(t: SystemTime, now: SystemTime) -> String {
    format!("{} ({})", absolute(t), relative(t, now))
}

/// An optional wire time, absolute and relative; `absent` when unset.
pub fn opt_time(t: Option<&prost_types::Timestamp>, now: SystemTime, absent: &str) -> String {
    t.map_or_else(|| absent.to_owned(), |t| time(system_time(t), now))
}

/// An optional wire time, absolute only; `absent` when unset.
pub fn opt_absolute(t: Option<&prost_types::Timestamp>, absent: &str) -> String {
    t.map_or_else(|| absent.to_owned(), |t| absolute(system_time(t)))
}

/// An optional wire span like `3m12s`; `absent` when unset.
pub fn opt_duration(d: Option<&prost_types::Duration>, absent: &str) -> String {
    d.map_or_else(|| absent.to_owned(), |d| duration(std_duration(d)))
}

/// Which way a wall-clock step went: `ahead` or `back`.
pub fn step_direction(forward: bool) -> &'static str {
    if forward { "ahead" } else { "back" }
}

/// The plural ending for `n` things: `""` for one, `"s"` otherwise.
pub fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// A wire timestamp as a [`SystemTime`]. The coordinator only sends valid
/// ones; anything out of range saturates at the epoch rather than failing.
pub fn system_time(t: &prost_types::Timestamp) -> SystemTime {
    let nanos = u32::try_from(t.nanos).unwrap_or(0).min(999_999_999);
    let t = match u64::try_from(t.seconds) {
        Ok(s) => UNIX_EPOCH
            .checked_add(Duration::new(s, nanos))
            .unwrap_or(UNIX_EPOCH),
        Err(_) => UNIX_EPOCH
            .checked_sub(Duration::from_secs(t.seconds.unsigned_abs()))
            .and_then(|t| t.checked_add(Duration::from_nanos(u64::from(nanos))))
            .unwrap_or(UNIX_EPOCH),
    };
    printable(t)
}

/// A wire duration as a [`Duration`]; negative ones (never sent) as zero.
pub fn std_duration(d: &prost_types::Duration) -> Duration {
    match (u64::try_from(d.seconds), u32::try_from(d.nanos)) {
        (Ok(s), Ok(n)) => Duration::new(s, n.min(999_999_999)),
        _ => Duration::ZERO,
    }
}

/// The snake_case name of a protocol enum value: `ACTION_REBOOT_HOST` →
/// `reboot_host`, given `prefix` `ACTION_`. Values this build does not
/// know (a newer coordinator) read `unknown(N)`.
pub fn enum_name(proto_name: Option<&'static str>, raw: i32, prefix: &str) -> String {
    match proto_name {
        Some(n) => n.strip_prefix(prefix).unwrap_or(n).to_ascii_lowercase(),
        None => format!("unknown({raw})"),
    }
}

/// `rack=r1,zone=z1`, or `-` for none.
pub fn labels(l: &std::collections::BTreeMap<String, String>) -> String {
    if l.is_empty() {
        return "-".to_owned();
    }
    l.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// `-` for an empty cell, so columns never collapse.
pub fn or_dash(s: &str) -> String {
    if s.is_empty() {
        "-".to_owned()
    } else {
        s.to_owned()
    }
}

/// The headings of free-text columns, which a table cut to the terminal's
/// width may shorten.
pub const FREE_TEXT: &[&str] = &[
    "WHY",
    "WHAT",
    "REASON",
    "QUARANTINE",
    "PROBLEMS",
    "HEALTH",
    "ERROR",
    "CAUSE",
];

/// How wide tables may be: `COLUMNS` when set to a number; otherwise the
/// terminal's width when standard output is one; otherwise no limit (a
/// pipe or a file gets every character).
pub fn terminal_width() -> Option<usize> {
    if let Some(n) = std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.trim().parse::<usize>().ok())
        .filter(|n| *n > 0)
    {
        return Some(n);
    }
    use std::io::IsTerminal;
    if !io::stdout().is_terminal() {
        return None;
    }
    terminal_size::terminal_size().map(|(w, _)| usize::from(w.0))
}

/// Columns aligned on the widest cell, two spaces apart; the last column
/// is not padded (it may hold long free text).
#[derive(Debug, Clone)]
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headings.
    pub fn new(headings: &[&str]) -> Self {
        Self {
            rows: vec![headings.iter().map(|h| (*h).to_owned()).collect()],
        }
    }

    /// Adds a row (one cell per heading).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Whether only the headings are there.
    pub fn is_empty(&self) -> bool {
        self.rows.len() <= 1
    }

    /// Writes the table, one line per row, cut to the terminal's width
    /// (see [`terminal_width`]).
    pub fn write(&self, out: &mut dyn Write) -> io::Result<()> {
        self.write_within(out, terminal_width())
    }

    /// Writes the table, one line per row. Given a `width`, lines longer
    /// than it have their free-text columns (reasons, problems, messages:
    /// see [`FREE_TEXT`]) cut short with `…`, the widest first, as far as
    /// needed and never below their heading; other columns (ids, hosts,
    /// times) are never cut, so a line may still be longer.
    pub fn write_within(&self, out: &mut dyn Write, width: Option<usize>) -> io::Result<()> {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut widths = vec![0usize; columns];
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        // Free-text columns, shortened one character at a time from the
        // widest, down to their heading at least, until lines fit.
        let full = widths.clone();
        if let Some(limit) = width {
            let free: Vec<(usize, usize)> = self.rows[0]
                .iter()
                .enumerate()
                .filter(|(_, h)| FREE_TEXT.contains(&h.as_str()))
                .map(|(i, h)| (i, h.chars().count().max(2)))
                .collect();
            let mut total = widths.iter().sum::<usize>() + 2 * columns.saturating_sub(1);
            while total > limit {
                let Some(&(i, _)) = free
                    .iter()
                    .filter(|(i, least)| widths[*i] > *least)
                    .max_by_key(|(i, _)| widths[*i])
                else {
                    break;
                };
                widths[i] -= 1;
                total -= 1;
            }
        }
        for row in &self.rows {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                let shortened;
                let cell = if widths[i] < full[i] && cell.chars().count() > widths[i] {
                    shortened = cell
                        .chars()
                        .take(widths[i] - 1)
                        .chain(['…'])
                        .collect::<String>();
                    &shortened
                } else {
                    cell
                };
                if i + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    let pad = widths[i] - cell.chars().count() + 2;
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            writeln!(out, "{}", line.trim_end())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timestamp_past_year_9999_prints_instead_of_panicking() {
        let far = prost_types::Timestamp {
            seconds: i64::MAX,
            nanos: 0,
        };
        assert_eq!(absolute(system_time(&far)), "9999-12-31 23:59:59Z");
        let json = crate::json::time(Some(&far)).expect("a time");
        assert!(json.starts_with("9999-12-31T23:59:59"), "{json}");
    }

    #[test]
    fn durations_read_like_people_write_them() {
        let s = Duration::from_secs;
        assert_eq!(duration(Duration::ZERO), "0s");
        assert_eq!(duration(Duration::from_millis(250)), "250ms");
        assert_eq!(duration(s(45)), "45s");
        assert_eq!(duration(s(192)), "3m12s");
        assert_eq!(duration(s(3600)), "1h");
        assert_eq!(duration(s(7200 + 300 + 7)), "2h5m");
        assert_eq!(duration(s(7200 + 7)), "2h");
        assert_eq!(duration(s(86_400 * 3 + 3600 * 4 + 59)), "3d4h");
    }

    #[test]
    fn times_are_absolute_and_relative() {
        let now = UNIX_EPOCH + Duration::from_secs(1_795_714_921); // 2026-11-26 17:42:01Z
        assert_eq!(absolute(now), "2026-11-26 17:42:01Z");
        assert_eq!(
            time(now - Duration::from_secs(180), now),
            "2026-11-26 17:39:01Z (3m ago)"
        );
        assert_eq!(relative(now + Duration::from_secs(720), now), "in 12m");
        assert_eq!(relative(now, now), "now");
    }

    #[test]
    fn enum_names_are_snake_case_without_prefix() {
        assert_eq!(
            enum_name(Some("ACTION_REBOOT_HOST"), 2, "ACTION_"),
            "reboot_host"
        );
        assert_eq!(enum_name(None, 42, "ACTION_"), "unknown(42)");
    }

    #[test]
    fn tables_align_on_the_widest_cell() {
        let mut t = Table::new(&["HOST", "STATE", "WHY"]);
        t.row(vec!["h1".into(), "ok".into(), "fine".into()]);
        t.row(vec!["host-22".into(), "quarantined".into(), "disk".into()]);
        let mut out = Vec::new();
        t.write(&mut out).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            String::from_utf8_lossy(&out),
            "HOST     STATE        WHY\nh1       ok           fine\nhost-22  quarantined  disk\n"
        );
    }

    #[test]
    fn tables_cut_the_widest_free_text_column_to_the_width() {
        let mut t = Table::new(&["HOST", "QUARANTINE", "PROBLEMS"]);
        let long = "x".repeat(130);
        t.row(vec![
            "a-very-long-host-name".into(),
            long.clone(),
            "disk".into(),
        ]);
        let mut out = Vec::new();
        t.write_within(&mut out, Some(60))
            .unwrap_or_else(|e| panic!("{e}"));
        let text = String::from_utf8_lossy(&out);
        for line in text.lines() {
            assert!(line.chars().count() <= 60, "{line:?}");
        }
        assert!(text.contains("a-very-long-host-name"), "{text}");
        assert!(text.contains("x…"), "{text}");
        // No width: every character.
        let mut out = Vec::new();
        t.write_within(&mut out, None)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(String::from_utf8_lossy(&out).contains(&long));
    }
}
