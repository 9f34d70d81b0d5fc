//! Warnings about detectors that cannot look, once per change of reason.

/// Remembers the last reason a detector could not look, so a check every few
/// seconds does not log the same warning every few seconds.
#[derive(Debug, Default)]
pub(crate) struct Warned {
    last: Option<String>,
}

impl Warned {
    /// Logs `reason` at warn, unless it is the reason logged last time.
    pub(crate) fn warn(&mut self, detector: &'static str, target: &str, reason: String) {
        if self.last.as_deref() != Some(reason.as_str()) {
            tracing::warn!(
                detector,
                target,
                "detector cannot look, counting it as healthy: {reason}"
            );
            self.last = Some(reason);
        }
    }

    /// The detector could look again; a later failure is logged anew.
    pub(crate) fn clear(&mut self, detector: &'static str, target: &str) {
        if self.last.take().is_some() {
            tracing::info!(detector, target, "detector can look again");
        }
    }
}
