//! `[[gates]]`: Prometheus queries that hold remediation while they return
//! anything (an alert firing on the database, a rack's switch flapping).
//!
//! Only what can be checked without I/O is checked here: names, URLs,
//! durations, the actions a gate covers, and the parts of PromQL that a
//! reader can check without a parser (balanced brackets, closed string
//! literals, where the `$value` placeholder stands). Whatever else is wrong
//! with a query, Prometheus says at the first evaluation, and the gate is
//! then closed with that error.
//!
//! A per-domain gate (`label = "rack"`) is a template: `$value` stands for
//! the host's value of the label, inside a string literal, and is replaced
//! by that value escaped for the literal's quote ([`GateConfig::query_for`]).

use std::collections::BTreeSet;
use std::time::Duration;

use serde::Deserialize;

use super::Errors;
use super::errors::label_key_ok;

/// What a gate's query writes for the host's label value.
pub const GATE_PLACEHOLDER: &str = "$value";

/// The shortest `interval` a gate accepts: 100 ms (tests and the simulator
/// go this low; production gates use seconds).
pub const MIN_GATE_INTERVAL: Duration = Duration::from_millis(100);

/// The longest `interval`: 10 minutes. A gate read less often than that
/// holds remediation on stale news.
pub const MAX_GATE_INTERVAL: Duration = Duration::from_secs(600);

/// The longest query a gate accepts, in bytes.
pub const MAX_GATE_QUERY: usize = 4096;

/// One `[[gates]]` entry, as written.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawGate {
    /// Names the gate in denials, metrics and logs. Required, unique.
    pub name: Option<String>,
    /// Base URL of the Prometheus server (`http://prometheus:9090`).
    pub prometheus: Option<String>,
    /// The PromQL instant query; the gate is closed while it returns any
    /// series.
    pub query: Option<String>,
    /// A failure-domain label: the gate holds each value of it apart.
    pub label: Option<String>,
    /// The actions it holds; absent: all of them.
    pub actions: Option<Vec<String>>,
    /// How often the query runs (default 5s).
    pub interval: Option<String>,
    /// How long one evaluation may take (default 2s, at most `interval`).
    pub timeout: Option<String>,
    /// How old a result may be before it counts as an error (default
    /// three intervals).
    pub stale_after: Option<String>,
    /// `"closed"` (default) or `"open"`: what the gate does when it cannot
    /// be evaluated.
    pub on_error: Option<String>,
}

/// What a gate does while it cannot be evaluated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnError {
    /// Grant nothing it covers: no news is not good news.
    Closed,
    /// Grant as if it returned nothing: for gates that are advice.
    Open,
}

impl OnError {
    /// The name as written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            OnError::Closed => "closed",
            OnError::Open => "open",
        }
    }
}

/// One piece of a query template.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    /// Query text, as written.
    Text(String),
    /// The host's label value, inside a string literal opened by this
    /// quote.
    Value(char),
}

/// A validated gate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GateConfig {
    /// Its name.
    pub name: String,
    /// The Prometheus base URL, without a trailing slash.
    pub prometheus: String,
    /// The query as written (with `$value` for per-domain gates).
    pub query: String,
    /// The failure-domain label, for per-domain gates.
    pub label: Option<String>,
    /// The names of the actions it holds; `None`: every action.
    pub actions: Option<Vec<String>>,
    /// How often it is evaluated.
    pub interval: Duration,
    /// How long one evaluation may take.
    pub timeout: Duration,
    /// A result older than this counts as an error.
    pub stale_after: Duration,
    /// What it does while it cannot be evaluated.
    pub on_error: OnError,
    template: Vec<Piece>,
}

impl GateConfig {
    /// Whether the gate holds the action named `action`.
    #[inline]
    pub fn covers(&self, action: &str) -> bool {
        self.actions
            .as_ref()
            .is_none_or(|a| a.iter().any(|n| n == action))
    }

    /// The query to run: for a per-domain gate, with `$value` replaced by
    /// `value` escaped for its string literal; otherwise as written.
    pub fn query_for(&self, value: Option<&str>) -> String {
        let mut out = String::with_capacity(self.query.len());
        for piece in &self.template {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Value(quote) => push_escaped(&mut out, value.unwrap_or(""), *quote),
            }
        }
        out
    }
}

/// Appends `value` escaped for a PromQL string literal opened by `quote`.
/// PromQL unquotes like Go: a backslash, the literal's own quote and
/// control characters need escapes, and an escape of the *other* quote is
/// an error, so only the literal's own is escaped.
fn push_escaped(out: &mut String, value: &str, quote: char) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
}

/// Validates every gate, each at `{path}[i]`. `actions` are the names of
/// the actions the config knows, which a gate's `actions` must come from.
pub fn validate_gates(
    raw: &[RawGate],
    errs: &mut Errors,
    path: &str,
    actions: &[&str],
) -> Vec<GateConfig> {
    let mut names = BTreeSet::new();
    raw.iter()
        .enumerate()
        .map(|(i, g)| {
            let p = format!("{path}[{i}]");
            let gate = g.validate(errs, &p, actions);
            if !gate.name.is_empty() && !names.insert(gate.name.clone()) {
                errs.push(
                    format!("{p}.name"),
                    format!(
                        "gate {:?} is defined twice; names must be unique",
                        gate.name
                    ),
                );
            }
            gate
        })
        .collect()
}

// === impl RawGate ===

impl RawGate {
    fn validate(&self, errs: &mut Errors, path: &str, known: &[&str]) -> GateConfig {
        let p = |k: &str| format!("{path}.{k}");

        let name = match self.name.as_deref() {
            None => {
                errs.push(p("name"), "is required");
                String::new()
            }
            Some(n) if n.is_empty() || n.len() > 64 || !n.chars().all(name_char) => {
                errs.push(
                    p("name"),
                    format!(
                        "must be 1 to 64 letters, digits, '_', '-' or '.', got {n:?} (it names \
                         the gate in metrics and messages)"
                    ),
                );
                String::new()
            }
            Some(n) => n.to_owned(),
        };

        let prometheus = match self.prometheus.as_deref() {
            None => {
                errs.push(
                    p("prometheus"),
                    "is required (e.g. \"http://prometheus:9090\")",
                );
                String::new()
            }
            Some(u) => match check_base_url(u) {
                Ok(u) => u,
                Err(why) => {
                    errs.push(p("prometheus"), format!("{why}, got {u:?}"));
                    String::new()
                }
            },
        };

        let label = self.label.clone();
        if let Some(l) = &label {
            label_key_ok(errs, &p("label"), l);
        }

        let (query, template) = match self.query.as_deref() {
            None => {
                errs.push(p("query"), "is required");
                (String::new(), Vec::new())
            }
            Some(q) => match check_query(q, label.as_deref()) {
                Ok(t) => (q.to_owned(), t),
                Err(why) => {
                    errs.push(p("query"), why);
                    (q.to_owned(), Vec::new())
                }
            },
        };

        let actions = self.actions.as_ref().map(|list| {
            if list.is_empty() {
                errs.push(
                    p("actions"),
                    "must name at least one action; leave it out to cover every action",
                );
            }
            for a in list {
                if !known.contains(&a.as_str()) {
                    errs.push(
                        p("actions"),
                        format!("unknown action {a:?}; expected one of {}", known.join(", ")),
                    );
                }
            }
            list.clone()
        });

        let interval = errs.duration_in(
            &p("interval"),
            self.interval.as_deref(),
            Duration::from_secs(5),
            MIN_GATE_INTERVAL..=MAX_GATE_INTERVAL,
            "",
        );
        let timeout = errs.duration_in(
            &p("timeout"),
            self.timeout.as_deref(),
            Duration::from_secs(2).min(interval),
            Duration::from_millis(10)..=MAX_GATE_INTERVAL,
            "",
        );
        if timeout > interval {
            errs.push(
                p("timeout"),
                format!(
                    "must be at most interval ({}), got {}; evaluations would overlap",
                    humantime::format_duration(interval),
                    humantime::format_duration(timeout)
                ),
            );
        }
        let stale_after =
            errs.duration(&p("stale_after"), self.stale_after.as_deref(), interval * 3);
        if stale_after < interval + timeout {
            errs.push(
                p("stale_after"),
                format!(
                    "must be at least interval + timeout ({}), got {}; every result would be \
                     stale before the next one could arrive",
                    humantime::format_duration(interval + timeout),
                    humantime::format_duration(stale_after)
                ),
            );
        }

        let on_error = match self.on_error.as_deref() {
            None | Some("closed") => OnError::Closed,
            Some("open") => OnError::Open,
            Some(other) => {
                errs.push(
                    p("on_error"),
                    format!("must be \"closed\" or \"open\", got {other:?}"),
                );
                OnError::Closed
            }
        };

        GateConfig {
            name,
            prometheus,
            query,
            label,
            actions,
            interval,
            timeout,
            stale_after,
            on_error,
            template,
        }
    }
}

fn name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')
}

/// An `http://` or `https://` base URL with a host, no query or fragment,
/// returned without its trailing slash.
fn check_base_url(u: &str) -> Result<String, &'static str> {
    let rest = u
        .strip_prefix("http://")
        .or_else(|| u.strip_prefix("https://"))
        .ok_or("must be an http:// or https:// URL")?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err("must name a host");
    }
    if u.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not hold spaces or control characters");
    }
    if u.contains(['?', '#']) {
        return Err("must be a base URL without a query or fragment (the query goes in `query`)");
    }
    Ok(u.trim_end_matches('/').to_owned())
}

/// Checks what can be checked of PromQL without a parser, and splits the
/// query around `$value`: brackets balance outside string literals, every
/// literal is closed, `$value` appears (only) in a per-domain gate's query
/// and only inside a quoted (not a raw, backtick) literal.
fn check_query(q: &str, label: Option<&str>) -> Result<Vec<Piece>, String> {
    if q.trim().is_empty() {
        return Err("must not be empty".to_owned());
    }
    if q.len() > MAX_GATE_QUERY {
        return Err(format!(
            "must be at most {MAX_GATE_QUERY} bytes, got {}",
            q.len()
        ));
    }
    let mut pieces = Vec::new();
    let mut text = String::new();
    let mut stack: Vec<char> = Vec::new();
    let mut quote: Option<char> = None;
    let mut placeholders = 0;
    let mut chars = q.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c == '$' {
            if !q[i..].starts_with(GATE_PLACEHOLDER) {
                return Err(format!(
                    "has a '$' at byte {i} that is not {GATE_PLACEHOLDER}; PromQL has no \
                     variables, and only {GATE_PLACEHOLDER} is replaced"
                ));
            }
            match quote {
                Some('"' | '\'') => {}
                _ => {
                    return Err(format!(
                        "{GATE_PLACEHOLDER} must stand inside a \"...\" or '...' string literal \
                         (e.g. rack=\"{GATE_PLACEHOLDER}\"), so that the value can be escaped"
                    ));
                }
            }
            pieces.push(Piece::Text(std::mem::take(&mut text)));
            pieces.push(Piece::Value(quote.unwrap_or('"')));
            placeholders += 1;
            for _ in 1..GATE_PLACEHOLDER.len() {
                chars.next();
            }
            continue;
        }
        text.push(c);
        match quote {
            Some(open) => {
                if c == '\\' && open != '`' {
                    if let Some((_, e)) = chars.next() {
                        text.push(e);
                    }
                } else if c == open {
                    quote = None;
                }
            }
            None => match c {
                '"' | '\'' | '`' => quote = Some(c),
                '(' | '{' | '[' => stack.push(c),
                ')' | '}' | ']' => {
                    let want = match c {
                        ')' => '(',
                        '}' => '{',
                        _ => '[',
                    };
                    if stack.pop() != Some(want) {
                        return Err(format!("has an unbalanced {c:?} at byte {i}"));
                    }
                }
                _ => {}
            },
        }
    }
    if let Some(open) = quote {
        return Err(format!(
            "has a string literal opened by {open} that is never closed"
        ));
    }
    if let Some(open) = stack.pop() {
        return Err(format!("has an unclosed {open:?}"));
    }
    match (label, placeholders) {
        (Some(l), 0) => {
            return Err(format!(
                "must use {GATE_PLACEHOLDER} for the host's {l} (e.g. \
                 ALERTS{{alertstate=\"firing\",{l}=\"{GATE_PLACEHOLDER}\"}}), or the gate \
                 would hold every {l} for an alert in any one"
            ));
        }
        (None, n) if n > 0 => {
            return Err(format!(
                "uses {GATE_PLACEHOLDER}, which only a per-domain gate (with `label`) replaces"
            ));
        }
        _ => {}
    }
    pieces.push(Piece::Text(text));
    Ok(pieces)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn gate(query: &str, label: Option<&str>) -> Result<GateConfig, Vec<String>> {
        let raw = RawGate {
            name: Some("g".into()),
            prometheus: Some("http://127.0.0.1:9090/".into()),
            query: Some(query.into()),
            label: label.map(str::to_owned),
            ..RawGate::default()
        };
        let mut errs = Errors::default();
        let g = validate_gates(&[raw], &mut errs, "gates", &["restart_job", "reboot_host"]);
        if errs.is_empty() {
            Ok(g.into_iter().next().unwrap())
        } else {
            Err(errs
                .0
                .iter()
                .map(|e| format!("{}: {}", e.path, e.message))
                .collect())
        }
    }

    #[test]
    fn placeholder_is_replaced_by_the_escaped_value() {
        let g = gate(r#"ALERTS{alertstate="firing",rack="$value"}"#, Some("rack")).unwrap();
        assert_eq!(
            g.query_for(Some(r#"r1"}or vector(1)#\"#)),
            r#"ALERTS{alertstate="firing",rack="r1\"}or vector(1)#\\"}"#
        );
        assert_eq!(g.prometheus, "http://127.0.0.1:9090");
    }

    #[test]
    fn placeholder_in_single_quotes_escapes_only_single_quotes() {
        let g = gate("up{rack='$value'} == 0", Some("rack")).unwrap();
        assert_eq!(g.query_for(Some("a'b\"c\n")), r#"up{rack='a\'b"c\n'} == 0"#);
    }

    #[test]
    fn placeholder_outside_a_string_literal_is_refused() {
        let e = gate("up{rack=$value}", Some("rack")).unwrap_err();
        assert!(e[0].contains("inside"), "{e:?}");
        let e = gate("up{rack=`$value`}", Some("rack")).unwrap_err();
        assert!(e[0].contains("inside"), "{e:?}");
    }

    #[test]
    fn per_domain_gate_without_placeholder_is_refused() {
        let e = gate("ALERTS", Some("rack")).unwrap_err();
        assert!(e[0].starts_with("gates[0].query: must use $value"), "{e:?}");
        let e = gate(r#"up{rack="$value"}"#, None).unwrap_err();
        assert!(e[0].contains("only a per-domain gate"), "{e:?}");
    }

    #[test]
    fn unbalanced_queries_are_refused() {
        for q in [
            "sum(up",
            "up{job=\"a\"",
            "up)",
            "rate(up[5m)",
            "up{job=\"a}",
        ] {
            assert!(gate(q, None).is_err(), "{q} accepted");
        }
        // Brackets inside strings do not count.
        gate(r#"up{job="(}["}"#, None).unwrap();
    }
}
