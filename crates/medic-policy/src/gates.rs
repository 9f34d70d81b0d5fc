//! What the coordinator learned of its alert gates: the engine's input for
//! the gate rule. The engine runs no queries (it does no I/O); the
//! coordinator evaluates each gate of [`crate::config::GateConfig`] on its
//! interval and hands the results over as [`GateReadings`], each with the
//! time it was taken, and the engine judges them at decision time: a
//! result older than the gate's `stale_after` counts as an error.

use std::collections::HashMap;

use crate::types::Time;

/// One evaluation of a gate's query (for one label value, in a
/// per-domain gate).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GateReading {
    /// When the evaluation finished.
    pub at: Time,
    /// The series the query returned (each as `name{label="value",...}`;
    /// empty: the gate is open), or why it could not be evaluated.
    pub result: Result<Vec<String>, String>,
}

impl GateReading {
    /// Whether the query returned anything.
    pub fn firing(&self) -> bool {
        matches!(&self.result, Ok(series) if !series.is_empty())
    }
}

/// One round of a gate's evaluations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GateReadings {
    /// A fleet-wide gate's one reading.
    Fleet(GateReading),
    /// A per-domain gate's readings, by label value. A value not in the
    /// map has not been evaluated (yet): it counts as an error.
    ByValue(HashMap<String, GateReading>),
}

/// The latest readings of every configured gate, index-aligned with
/// `PolicyConfig::gates`.
#[derive(Clone, Debug, Default)]
pub(crate) struct GateStates {
    pub(crate) slots: Vec<Option<GateReadings>>,
}

impl GateStates {
    /// The reading that applies to a host whose label value is `value`
    /// (`None` for a fleet-wide gate).
    pub(crate) fn reading(&self, gate: usize, value: Option<&str>) -> Option<&GateReading> {
        match (self.slots.get(gate)?.as_ref()?, value) {
            (GateReadings::Fleet(r), _) => Some(r),
            (GateReadings::ByValue(m), Some(v)) => m.get(v),
            (GateReadings::ByValue(_), None) => None,
        }
    }
}
