//! Prometheus exposition by content negotiation, for both daemons'
//! `/metrics`: OpenMetrics 1.0 to a scraper that asks for it (Prometheus
//! does), the classic text format 0.0.4 to everyone else (older scrapers,
//! `promtool check metrics`, the Python client's text parser, `curl`).
//!
//! The metrics are encoded once, as OpenMetrics (`prometheus-client`'s
//! encoder); [`classic`] rewrites that text into the classic format, where
//! a counter family is named with its `_total` suffix, `info` becomes a
//! gauge, and there is no `# UNIT`, `# EOF` or exemplar.

/// The content type of an OpenMetrics answer.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The content type of a classic text answer.
pub const CLASSIC: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The two exposition formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0.
    OpenMetrics,
    /// The classic text format, 0.0.4.
    Classic,
}

impl Format {
    /// The `Content-Type` of an answer in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => OPENMETRICS,
            Format::Classic => CLASSIC,
        }
    }

    /// The format an `Accept` header asks for: OpenMetrics when it names
    /// `application/openmetrics-text` with a higher quality than any
    /// `text/plain` (or alone), classic text otherwise (no header, `*/*`,
    /// `text/plain`).
    pub fn negotiate(accept: Option<&str>) -> Format {
        let Some(accept) = accept else {
            return Format::Classic;
        };
        let (mut om, mut text) = (None::<f32>, None::<f32>);
        for item in accept.split(',') {
            let mut parts = item.split(';').map(str::trim);
            let media = parts.next().unwrap_or_default().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.strip_prefix("q="))
                .find_map(|q| q.parse::<f32>().ok())
                .unwrap_or(1.0);
            let slot = match media.as_str() {
                "application/openmetrics-text" => &mut om,
                "text/plain" => &mut text,
                _ => continue,
            };
            *slot = Some(slot.map_or(q, |old| old.max(q)));
        }
        match (om, text) {
            (Some(o), Some(t)) if o > 0.0 && o >= t => Format::OpenMetrics,
            (Some(o), None) if o > 0.0 => Format::OpenMetrics,
            _ => Format::Classic,
        }
    }

    /// `openmetrics` (the encoder's output) in this format.
    pub fn render(self, openmetrics: String) -> String {
        match self {
            Format::OpenMetrics => openmetrics,
            Format::Classic => classic(&openmetrics),
        }
    }
}

/// OpenMetrics text rewritten in the classic text format 0.0.4.
pub fn classic(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    // The family being written, and how to rename it: a counter family
    // `x` is `x_total` in the classic format, an info family `x` is the
    // gauge `x_info`.
    let mut rename: Option<(String, String)> = None;
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let (new, kind) = match kind {
                "counter" => (format!("{name}_total"), "counter"),
                "info" => (format!("{name}_info"), "gauge"),
                "gaugehistogram" => (name.to_owned(), "histogram"),
                "stateset" | "unknown" => (name.to_owned(), "untyped"),
                k => (name.to_owned(), k),
            };
            out.push_str(&format!("# TYPE {new} {kind}\n"));
            rename = Some((name.to_owned(), new));
            continue;
        }
        if line.starts_with("# HELP ") {
            // HELP comes before TYPE: `fix_help` moves it onto the name
            // the TYPE line gives the family.
            out.push_str(line);
            out.push('\n');
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        // A sample: drop an exemplar (` # {...} v`), and `_created` series,
        // which the classic format has not.
        let sample = line.split(" # ").next().unwrap_or(line);
        let name_end = sample.find(['{', ' ']).unwrap_or(sample.len());
        if sample[..name_end].ends_with("_created") {
            continue;
        }
        match &rename {
            Some((old, new)) if new.ends_with("_info") && sample[..name_end] == **old => {
                out.push_str(new);
                out.push_str(&sample[name_end..]);
            }
            _ => out.push_str(sample),
        }
        out.push('\n');
    }
    fix_help(&out)
}

/// Moves each `# HELP` line onto its family's final name: the classic
/// format wants `# HELP x_total ...` before `# TYPE x_total counter`.
fn fix_help(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if let (Some(help), Some(next)) = (line.strip_prefix("# HELP "), lines.get(i + 1))
            && let Some(ty) = next.strip_prefix("# TYPE ")
        {
            let (_, words) = help.split_once(' ').unwrap_or((help, ""));
            let (name, _) = ty.split_once(' ').unwrap_or((ty, ""));
            out.push_str(&format!("# HELP {name} {words}\n{next}\n"));
            i += 2;
            continue;
        }
        out.push_str(line);
        out.push('\n');
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const OM: &str = "# HELP medic_decisions Permit decisions.\n\
# TYPE medic_decisions counter\n\
medic_decisions_total{action=\"restart_job\",outcome=\"granted\"} 1\n\
medic_decisions_created{action=\"restart_job\",outcome=\"granted\"} 1700000000.0\n\
# HELP medic_build Build.\n\
# TYPE medic_build info\n\
medic_build_info{version=\"0.1.0\"} 1\n\
# HELP medic_rpc_duration_seconds RPC latency.\n\
# TYPE medic_rpc_duration_seconds histogram\n\
# UNIT medic_rpc_duration_seconds seconds\n\
medic_rpc_duration_seconds_bucket{le=\"0.1\"} 2\n\
medic_rpc_duration_seconds_bucket{le=\"+Inf\"} 3 # {trace_id=\"x\"} 0.2\n\
medic_rpc_duration_seconds_sum 0.5\n\
medic_rpc_duration_seconds_count 3\n\
# EOF\n";

    #[test]
    fn classic_text_names_counter_families_with_their_total_suffix() {
        let c = classic(OM);
        assert_eq!(
            c,
            "# HELP medic_decisions_total Permit decisions.\n\
# TYPE medic_decisions_total counter\n\
medic_decisions_total{action=\"restart_job\",outcome=\"granted\"} 1\n\
# HELP medic_build_info Build.\n\
# TYPE medic_build_info gauge\n\
medic_build_info{version=\"0.1.0\"} 1\n\
# HELP medic_rpc_duration_seconds RPC latency.\n\
# TYPE medic_rpc_duration_seconds histogram\n\
medic_rpc_duration_seconds_bucket{le=\"0.1\"} 2\n\
medic_rpc_duration_seconds_bucket{le=\"+Inf\"} 3\n\
medic_rpc_duration_seconds_sum 0.5\n\
medic_rpc_duration_seconds_count 3\n"
        );
    }

    #[test]
    fn the_accept_header_chooses_the_format() {
        use Format::{Classic, OpenMetrics};
        for (accept, want) in [
            (None, Classic),
            (Some("*/*"), Classic),
            (Some("text/plain;version=0.0.4"), Classic),
            (Some("application/openmetrics-text"), OpenMetrics),
            // What Prometheus sends.
            (
                Some(
                    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
                     version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
                ),
                OpenMetrics,
            ),
            (
                Some("text/plain;version=0.0.4;q=1,application/openmetrics-text;q=0.5"),
                Classic,
            ),
            (Some("application/openmetrics-text;q=0"), Classic),
        ] {
            assert_eq!(Format::negotiate(accept), want, "{accept:?}");
        }
    }
}
