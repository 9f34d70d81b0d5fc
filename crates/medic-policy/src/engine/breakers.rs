//! The breakers (rule 2): when one opens, and when it closes by itself.
//! Operators' resets are in `operator`; the check that denies is in
//! `rules`.

use humantime::format_duration;

use super::Engine;
use crate::types::{BreakerCause, BreakerScope, BreakerTrip, COORDINATOR_ACTOR, Event, Time};

// === impl Engine: breakers ===

impl Engine {
    /// Whether the breaker of `scope` should be open now, and why.
    fn breaker_condition(&self, scope: &BreakerScope, now: Time) -> Option<(BreakerCause, String)> {
        // Percentages over a fleet still being learned are guesses.
        let fleet_known =
            self.warming_up(now).is_none() && self.fleet.live >= self.config.fleet.min_fleet_size;
        match scope {
            BreakerScope::Fleet => {
                let b = &self.config.breaker;
                let c = self.fleet;
                if fleet_known && over(c.unhealthy, c.live, b.unhealthy_percent) {
                    return Some((
                        BreakerCause::UnhealthyFraction,
                        format!(
                            "{} of {} live hosts unhealthy ({:.1}% > unhealthy_percent {}%)",
                            c.unhealthy,
                            c.live,
                            pct(c.unhealthy, c.live),
                            b.unhealthy_percent
                        ),
                    ));
                }
                let n = u32::try_from(self.outcomes.len()).unwrap_or(u32::MAX);
                if n >= b.min_samples && over(self.outcomes_failed, n, b.failure_percent) {
                    return Some((
                        BreakerCause::FailureFraction,
                        format!(
                            "{} of the last {} remediations in {} failed or expired \
                             ({:.1}% > failure_percent {}%)",
                            self.outcomes_failed,
                            n,
                            format_duration(b.window),
                            pct(self.outcomes_failed, n),
                            b.failure_percent
                        ),
                    ));
                }
                None
            }
            BreakerScope::Domain { label, value } => {
                let d = self.config.breaker.domains.get(label)?;
                let g = self.groups.iter().find(|g| &g.label == label)?;
                let c = g.counts[*g.ids.get(value)? as usize];
                if fleet_known
                    && c.live >= d.min_hosts
                    && over(c.unhealthy, c.live, d.unhealthy_percent)
                {
                    Some((
                        BreakerCause::UnhealthyFraction,
                        format!(
                            "{} of {} live hosts in {label}={value} unhealthy \
                             ({:.1}% > unhealthy_percent {}%)",
                            c.unhealthy,
                            c.live,
                            pct(c.unhealthy, c.live),
                            d.unhealthy_percent
                        ),
                    ))
                } else {
                    None
                }
            }
        }
    }

    /// Opens the breaker of `scope` when its condition holds; closes an
    /// open one once the condition has been clear for `auto_close_after`.
    pub(super) fn evaluate_breaker(&mut self, scope: BreakerScope, now: Time) {
        let cond = self.breaker_condition(&scope, now);
        if self.durable.breakers.contains_key(&scope) {
            if cond.is_some() {
                self.breaker_clear_since.remove(&scope);
                return;
            }
            let since = *self.breaker_clear_since.entry(scope.clone()).or_insert(now);
            if let Some(after) = self.config.breaker.auto_close_after
                && now.duration_since(since).is_ok_and(|d| d >= after)
            {
                self.breaker_clear_since.remove(&scope);
                self.emit(Event::BreakerClosed {
                    scope,
                    actor: COORDINATOR_ACTOR.to_owned(),
                    reason: format!("condition clear for {}", format_duration(after)),
                    at: now,
                });
            }
        } else if let Some((cause, detail)) = cond {
            self.emit(Event::BreakerOpened(BreakerTrip {
                scope,
                cause,
                since: now,
                detail,
            }));
        }
    }

    /// Brings the breakers of host slot `i`'s failure domains up to date
    /// (the fleet breaker is kept current by `advance`; domain breakers
    /// otherwise only on `tick`).
    pub(super) fn evaluate_domain_breakers(&mut self, i: usize, now: Time) {
        if self.config.breaker.domains.is_empty() {
            return;
        }
        for gi in 0..self.groups.len() {
            let label = &self.groups[gi].label;
            if !self.config.breaker.domains.contains_key(label) {
                continue;
            }
            if let Some(v) = self.hosts[i].group_values[gi] {
                let scope = BreakerScope::Domain {
                    label: label.clone(),
                    value: self.groups[gi].names[v as usize].clone(),
                };
                self.evaluate_breaker(scope, now);
            }
        }
    }
}

fn over(part: u32, whole: u32, percent: f64) -> bool {
    whole > 0 && f64::from(part) * 100.0 > percent * f64::from(whole)
}

fn pct(part: u32, whole: u32) -> f64 {
    if whole == 0 {
        0.0
    } else {
        f64::from(part) * 100.0 / f64::from(whole)
    }
}
