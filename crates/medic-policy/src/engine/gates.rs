//! Alert gates: the readings the coordinator feeds in, and the rule that
//! denies while a gate covering the request is closed.
//!
//! A gate covers a request when it holds the request's action and, for a
//! per-domain gate, the host has its label (a host without a `rack` label
//! is in no rack a rack gate could hold). It is closed for the request
//! while its reading for the host's label value lists any series, or while
//! there is no usable reading (never evaluated, stale, or failed) and it
//! says `on_error = "closed"`.

use std::collections::HashMap;

use humantime::format_duration;

use super::Engine;
use super::rules::trunc;
use crate::config::{GateConfig, OnError};
use crate::gates::{GateReading, GateReadings, GateStates};
use crate::types::{Action, Denial, DenyReason, Event, Labels, Time};

/// How many series a denial names before it says how many more there are.
const SERIES_SHOWN: usize = 5;

/// What a gate's reading says, judged at decision time.
enum Verdict<'a> {
    /// Nothing returned: the gate does not hold this request.
    Open,
    /// The series the query returned.
    Firing(&'a GateReading, &'a [String]),
    /// No usable reading, and why.
    Error(String),
}

fn judge<'a>(g: &GateConfig, reading: Option<&'a GateReading>, now: Time) -> Verdict<'a> {
    let Some(r) = reading else {
        return Verdict::Error(
            "not evaluated yet (it is evaluated within one interval of a value first appearing)"
                .to_owned(),
        );
    };
    let age = now.duration_since(r.at).unwrap_or_default();
    if age > g.stale_after {
        return Verdict::Error(format!(
            "its last result is {} old, older than stale_after {}",
            format_duration(trunc(age)),
            format_duration(g.stale_after)
        ));
    }
    match &r.result {
        Ok(series) if series.is_empty() => Verdict::Open,
        Ok(series) => Verdict::Firing(r, series),
        Err(e) => Verdict::Error(e.clone()),
    }
}

/// Whether a reading holds requests back, staleness aside: what a newer
/// reading is compared with to decide whether waiting agents should ask
/// again.
fn holds(g: &GateConfig, r: Option<&GateReading>) -> bool {
    match r {
        None => g.on_error == OnError::Closed,
        Some(r) => r.firing() || (r.result.is_err() && g.on_error == OnError::Closed),
    }
}

// === impl Engine: readings ===

impl Engine {
    /// Records a round of evaluations of `gate` (ignored unless a gate of
    /// the configuration in force has exactly these settings: a round that
    /// finished after a reload changed or removed its gate says nothing
    /// about the new one). When the round opens what held requests back,
    /// waiting agents are told to ask again at their next heartbeat.
    pub fn set_gate_readings(&mut self, gate: &GateConfig, readings: GateReadings, now: Time) {
        // Time passes as in every call (expiries, silences).
        let now = self.observe(now);
        self.advance(now);
        let Some(i) = self.config.gates.iter().position(|g| g == gate) else {
            return;
        };
        let g = &self.config.gates[i];
        let old = self.gates.slots[i].take();
        let reopened = match (&old, &readings) {
            (None, GateReadings::Fleet(new)) => holds(g, None) && !holds(g, Some(new)),
            (Some(GateReadings::Fleet(old)), GateReadings::Fleet(new)) => {
                holds(g, Some(old)) && !holds(g, Some(new))
            }
            (old, GateReadings::ByValue(new)) => {
                let empty = HashMap::new();
                let old = match old {
                    Some(GateReadings::ByValue(m)) => m,
                    _ => &empty,
                };
                new.iter()
                    .any(|(v, r)| holds(g, old.get(v)) && !holds(g, Some(r)))
            }
            (Some(GateReadings::ByValue(_)), GateReadings::Fleet(_)) => true,
        };
        let g = g.clone();
        self.record_gate_changes(&g, &readings, now);
        self.gates.slots[i] = Some(readings);
        if reopened {
            self.wake = self.wake.wrapping_add(1);
        }
    }

    /// Emits `Event::GateChanged` for every domain of `g` whose reading
    /// now holds requests back and whose closing was not recorded yet, or
    /// no longer holds them and whose closing was. Staleness aside: a
    /// reading that goes stale without a newer one closes the gate at
    /// decision time, unrecorded (the trail never says open while the
    /// engine holds requests back, which is what the audit must not miss).
    fn record_gate_changes(&mut self, g: &GateConfig, readings: &GateReadings, now: Time) {
        let mut domains: Vec<(Option<&String>, &GateReading)> = match readings {
            GateReadings::Fleet(r) => vec![(None, r)],
            GateReadings::ByValue(m) => m.iter().map(|(v, r)| (Some(v), r)).collect(),
        };
        // In value order: the same readings give the same history.
        domains.sort_by(|a, b| a.0.cmp(&b.0));
        for (value, r) in domains {
            let closed = holds(g, Some(r));
            let key = (g.name.clone(), value.cloned());
            if closed == self.gates_closed.contains(&key) {
                continue;
            }
            let detail = match &r.result {
                Ok(series) if series.is_empty() => "the query returns nothing".to_owned(),
                Ok(series) => format!("the query returns {}", series_list(series)),
                Err(e) => format!("it cannot be evaluated ({e}); on_error = \"closed\""),
            };
            if closed {
                self.gates_closed.insert(key);
            } else {
                self.gates_closed.remove(&key);
            }
            self.emit(Event::GateChanged {
                gate: g.name.clone(),
                label: g.label.clone(),
                value: value.cloned(),
                closed,
                detail,
                at: now,
            });
        }
    }

    /// After a reload: gates that are gone hold nothing back any more, and
    /// the audit trail says so for each domain it recorded closed. (A gate
    /// whose settings changed keeps its record until its first reading.)
    pub(super) fn forget_removed_gates(&mut self, now: Time) {
        let gone: Vec<(String, Option<String>)> = self
            .gates_closed
            .iter()
            .filter(|(name, _)| !self.config.gates.iter().any(|g| &g.name == name))
            .cloned()
            .collect();
        for (gate, value) in gone {
            self.gates_closed.remove(&(gate.clone(), value.clone()));
            self.emit(Event::GateChanged {
                label: None,
                gate,
                value,
                closed: false,
                detail: "the gate was removed from the configuration".to_owned(),
                at: now,
            });
        }
    }

    /// The distinct values of `label` among live hosts, sorted: what a
    /// per-domain gate on it is evaluated for.
    pub fn label_values(&self, label: &str) -> Vec<String> {
        let mut values: Vec<String> = self
            .hosts
            .iter()
            .filter(|s| s.flags.live)
            .filter_map(|s| s.labels.get(label).cloned())
            .collect();
        values.sort();
        values.dedup();
        values
    }

    /// The gates' readings kept across a configuration change: a gate
    /// whose settings did not change keeps its latest readings; a new or
    /// changed one starts unevaluated.
    pub(super) fn carry_gate_states(
        old: &[GateConfig],
        states: &mut GateStates,
        new: &[GateConfig],
    ) -> GateStates {
        let slots = new
            .iter()
            .map(|g| {
                old.iter()
                    .position(|o| o == g)
                    .and_then(|i| states.slots.get_mut(i).and_then(Option::take))
            })
            .collect();
        GateStates { slots }
    }

    /// Lines for `explain` about gates that cover the request but do not
    /// deny it because they cannot be evaluated and say `on_error =
    /// "open"`: an operator should know that a gate is blind.
    pub(super) fn gate_notes(&self, action: Action, labels: &Labels, now: Time) -> Vec<String> {
        self.covering_gates(action, labels)
            .filter(|(g, _, _)| g.on_error == OnError::Open)
            .filter_map(|(g, value, r)| match judge(g, r, now) {
                Verdict::Error(e) => Some(format!(
                    "gate {}{} cannot be evaluated ({e}); it lets requests through \
                     (on_error = \"open\")",
                    g.name,
                    domain(g, value)
                )),
                _ => None,
            })
            .collect()
    }

    /// The gates that cover `action` for a host with `labels`, each with
    /// the host's value of its label and its reading for that value.
    fn covering_gates<'a>(
        &'a self,
        action: Action,
        labels: &'a Labels,
    ) -> impl Iterator<Item = (&'a GateConfig, Option<&'a str>, Option<&'a GateReading>)> + 'a {
        self.config
            .gates
            .iter()
            .enumerate()
            .filter(move |(_, g)| g.covers(action.as_str()))
            .filter_map(move |(i, g)| {
                let value = match &g.label {
                    None => None,
                    Some(l) => Some(labels.get(l)?.as_str()),
                };
                Some((g, value, self.gates.reading(i, value)))
            })
    }

    /// The gate rule: one denial per closed gate covering the request,
    /// lazily (a request stops at the first). Allocates only to deny.
    pub(super) fn check_gates<'a>(
        &'a self,
        action: Action,
        labels: &'a Labels,
        now: Time,
    ) -> impl Iterator<Item = Denial> + 'a {
        self.covering_gates(action, labels)
            .filter_map(move |(g, value, reading)| match judge(g, reading, now) {
                Verdict::Open => None,
                Verdict::Firing(r, series) => Some(Denial {
                    reason: DenyReason::GateClosed,
                    retry_after: Some(g.interval),
                    message: format!(
                        "gate {}{} is closed: its query returns {} (evaluated {} ago); no \
                         {action} grants while it returns anything",
                        g.name,
                        domain(g, value),
                        series_list(series),
                        format_duration(trunc(now.duration_since(r.at).unwrap_or_default())),
                    ),
                }),
                Verdict::Error(e) => (g.on_error == OnError::Closed).then(|| Denial {
                    reason: DenyReason::GateClosed,
                    retry_after: Some(g.interval),
                    message: format!(
                        "gate {}{} is closed: it cannot be evaluated ({e}); a gate that \
                         cannot be evaluated grants nothing (on_error = \"closed\")",
                        g.name,
                        domain(g, value)
                    ),
                }),
            })
    }
}

/// ` for rack=r12`, for a per-domain gate.
fn domain(g: &GateConfig, value: Option<&str>) -> String {
    match (&g.label, value) {
        (Some(l), Some(v)) => format!(" for {l}={v}"),
        _ => String::new(),
    }
}

fn series_list(series: &[String]) -> String {
    let shown: Vec<&str> = series
        .iter()
        .take(SERIES_SHOWN)
        .map(String::as_str)
        .collect();
    let more = series.len().saturating_sub(SERIES_SHOWN);
    if more > 0 {
        format!("{} (and {more} more series)", shown.join(", "))
    } else {
        shown.join(", ")
    }
}
