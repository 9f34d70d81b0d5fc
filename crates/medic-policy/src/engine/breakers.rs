//! The breakers (rule 2): when one opens, goes half-open and closes.
//! Operators' resets are in `operator`; the check that denies is in
//! `rules`.
//!
//! A breaker is closed (absent), open, or half-open:
//!
//! - closed → open: its condition holds (the unhealthy share, the failure
//!   share, a liveness drop).
//! - open → half-open: its condition has been clear for
//!   `auto_close_after`, or an operator reset it ("I fixed the cause").
//! - half-open: probe permits go out, `half_open_probes` at a time plus one
//!   per verified success. A probe that fails or expires opens it again
//!   (cause `probe_failed`), as does a new liveness drop of the fleet.
//! - half-open → closed: `half_open_successes` probes succeeded and its
//!   condition is clear.
//!
//! Failure samples are never thrown away by a close or a reset: they age
//! out of `window`, and the half-open step is what stops them from holding
//! the fleet hostage once the cause is fixed.

use humantime::format_duration;

use super::{Counts, Engine};
use crate::types::{
    BreakerCause, BreakerScope, BreakerTrip, COORDINATOR_ACTOR, Event, Labels, Permit, PermitState,
    Time,
};

// === impl Engine: breakers ===

impl Engine {
    /// Whether the breaker of `scope` should be open now, and why.
    fn breaker_condition(&self, scope: &BreakerScope, now: Time) -> Option<(BreakerCause, String)> {
        // Percentages over a fleet still being learned are guesses.
        let warm = self.warming_up(now).is_none();
        let fleet_known = warm && self.fleet.live >= self.config.fleet.min_fleet_size;
        let b = &self.config.breaker;
        match scope {
            BreakerScope::Fleet => {
                if warm && let Some(detail) = self.liveness_drop() {
                    return Some((BreakerCause::LivenessDrop, detail));
                }
                let c = &self.fleet;
                if fleet_known
                    && c.unhealthy_or_silent() >= b.min_unhealthy
                    && over(
                        c.unhealthy_or_silent(),
                        c.live_or_silent(),
                        b.unhealthy_percent,
                    )
                {
                    return Some((
                        BreakerCause::UnhealthyFraction,
                        unhealthy_detail(c, "", b.unhealthy_percent),
                    ));
                }
                let (n, failed, left_out) = self.fleet_failure_sample();
                if n >= b.min_samples && over(failed, n, b.failure_percent) {
                    let left_out = if left_out == 0 {
                        String::new()
                    } else {
                        format!(
                            "; {left_out} host(s) under a tripped failure-domain breaker left \
                             out"
                        )
                    };
                    return Some((
                        BreakerCause::FailureFraction,
                        format!(
                            "{failed} of the {n} hosts remediated in the last {} failed or \
                             expired ({:.1}% > failure_percent {}%; each host counted \
                             once{left_out})",
                            format_duration(b.window),
                            pct(failed, n),
                            b.failure_percent
                        ),
                    ));
                }
                None
            }
            BreakerScope::Domain { label, value } => {
                let d = b.domains.get(label)?;
                let c = self.domain_counts(label, value)?;
                (fleet_known
                    && c.live_or_silent() >= d.min_hosts
                    && over(
                        c.unhealthy_or_silent(),
                        c.live_or_silent(),
                        d.unhealthy_percent,
                    ))
                .then(|| {
                    (
                        BreakerCause::UnhealthyFraction,
                        unhealthy_detail(c, &format!(" in {label}={value}"), d.unhealthy_percent),
                    )
                })
            }
        }
    }

    /// The fleet failure breaker's sample: hosts with an outcome in the
    /// window, how many of them failed, and how many were left out. A host
    /// is left out while a failure-domain breaker covering it is tripped
    /// (open or half-open), and once that breaker has closed if all its
    /// samples are from before the close: that domain's breaker held their
    /// cause (nothing is granted there but its probes, whose failures
    /// reopen it), and counted fleet-wide they would stop the healthy
    /// domains too, or trip the fleet the moment the domain recovered.
    /// Coverage is judged on the labels each permit was granted with, kept
    /// in the durable endings, so a restarted coordinator judges the same
    /// whether or not the host has heartbeated since.
    fn fleet_failure_sample(&self) -> (u32, u32, u32) {
        let tripped: Vec<&BreakerScope> = self
            .durable
            .breakers
            .keys()
            .filter(|s| matches!(s, BreakerScope::Domain { .. }))
            .collect();
        let closes = &self.durable.domain_closes;
        let raw = (self.failures.hosts(), self.failures.failed_hosts(), 0);
        // Leaving hosts out adds no host and no failure: without enough of
        // either already, the share cannot be judged (it runs on every
        // call, so the scan below is for when it might).
        if (tripped.is_empty() && closes.is_empty())
            || raw.1 == 0
            || raw.0 < self.config.breaker.min_samples
        {
            return raw;
        }
        let (mut n, mut failed, mut left_out) = (0, 0, 0);
        for (host_failed, host) in self.failures.by_host() {
            let covered = tripped.iter().any(|s| s.covers(&host.labels))
                || closes.iter().any(|(s, closed)| {
                    host.last.is_some_and(|last| last <= *closed) && s.covers(&host.labels)
                });
            if covered {
                left_out += 1;
            } else {
                n += 1;
                failed += u32::from(host_failed);
            }
        }
        (n, failed, left_out)
    }

    /// The counts of one failure domain's value, if the engine indexes it.
    pub(super) fn domain_counts(&self, label: &str, value: &str) -> Option<&Counts> {
        let g = self.groups.iter().find(|g| g.label == label)?;
        Some(&g.counts[*g.ids.get(value)? as usize])
    }

    /// Moves the breaker of `scope` along: open when its condition holds,
    /// half-open once clear for `auto_close_after`, closed once its probes
    /// proved the fix.
    pub(super) fn evaluate_breaker(&mut self, scope: BreakerScope, now: Time) {
        let state = self
            .durable
            .breakers
            .get(&scope)
            .map(|t| t.half_open.as_ref().map(|h| h.successes));
        match state {
            None => {
                if let Some((cause, detail)) = self.breaker_condition(&scope, now) {
                    self.open_breaker(scope, cause, detail, now);
                }
            }
            Some(None) => {
                if self.breaker_condition(&scope, now).is_some() {
                    self.breaker_clear_since.remove(&scope);
                    return;
                }
                let since = *self.breaker_clear_since.entry(scope.clone()).or_insert(now);
                if let Some(after) = self.config.breaker.auto_close_after
                    && now.duration_since(since).is_ok_and(|d| d >= after)
                {
                    let reason = format!("condition clear for {}", format_duration(after));
                    self.half_open_breaker(scope, COORDINATOR_ACTOR, &reason, now);
                }
            }
            Some(Some(successes)) => {
                if scope == BreakerScope::Fleet
                    && self.warming_up(now).is_none()
                    && self.silent_since_half_open()
                    && let Some(detail) = self.liveness_drop()
                {
                    self.open_breaker(scope, BreakerCause::LivenessDrop, detail, now);
                    return;
                }
                let needed = self.config.breaker.half_open_successes;
                if successes >= needed && self.breaker_condition(&scope, now).is_none() {
                    self.emit(Event::BreakerClosed {
                        scope,
                        actor: COORDINATOR_ACTOR.to_owned(),
                        reason: format!(
                            "{successes} probe permits succeeded (half_open_successes \
                             {needed}) and the condition is clear"
                        ),
                        at: now,
                    });
                }
            }
        }
    }

    fn open_breaker(
        &mut self,
        scope: BreakerScope,
        cause: BreakerCause,
        detail: String,
        now: Time,
    ) {
        self.breaker_clear_since.remove(&scope);
        self.emit(Event::BreakerOpened(BreakerTrip {
            scope,
            cause,
            since: now,
            detail,
            half_open: None,
        }));
    }

    /// Moves an open breaker to half-open.
    pub(super) fn half_open_breaker(
        &mut self,
        scope: BreakerScope,
        actor: &str,
        reason: &str,
        now: Time,
    ) {
        self.breaker_clear_since.remove(&scope);
        let probes = self.config.breaker.half_open_probes;
        self.emit(Event::BreakerHalfOpened {
            scope,
            actor: actor.to_owned(),
            reason: format!(
                "{reason}; probing with {probes} permit{} at a time, one more per verified success",
                if probes == 1 { "" } else { "s" }
            ),
            at: now,
        });
    }

    /// A permit ended `state`: if it failed or expired under a half-open
    /// breaker, that breaker opens again at once.
    pub(super) fn probe_ended(&mut self, p: &Permit, state: PermitState, now: Time) {
        if !matches!(state, PermitState::Failed | PermitState::Expired) {
            return;
        }
        let reopen: Vec<(BreakerScope, u32)> = self
            .durable
            .breakers
            .values()
            .filter(|t| t.scope.covers(&p.labels))
            .filter_map(|t| t.half_open.as_ref().map(|h| (t.scope.clone(), h.successes)))
            .collect();
        for (scope, successes) in reopen {
            let detail = format!(
                "{} permit {} of job {:?} on host {} {} while the breaker was half-open \
                 ({successes} probe{} had succeeded): the cause is not fixed",
                p.action,
                p.id,
                p.job,
                p.host,
                if state == PermitState::Expired {
                    "expired without an outcome"
                } else {
                    "failed"
                },
                if successes == 1 { "" } else { "s" },
            );
            self.open_breaker(scope, BreakerCause::ProbeFailed, detail, now);
        }
    }

    /// The probe permits active under a half-open breaker of `scope`, and
    /// how many it allows at once.
    pub(super) fn probes(&self, trip: &BreakerTrip) -> Option<(u32, u32)> {
        let h = trip.half_open.as_ref()?;
        let active = match &trip.scope {
            BreakerScope::Fleet => self.fleet.active_total(),
            BreakerScope::Domain { label, value } => self
                .domain_counts(label, value)
                .map_or(0, |c| c.active_total()),
        };
        Some((active, self.config.breaker.probe_budget(h.successes)))
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

    /// The tripped breakers covering `labels`.
    pub(super) fn trips_covering<'a>(
        &'a self,
        labels: &'a Labels,
    ) -> impl Iterator<Item = &'a BreakerTrip> + 'a {
        self.durable
            .breakers
            .values()
            .filter(move |t| t.scope.covers(labels))
    }
}

fn unhealthy_detail(c: &Counts, domain: &str, percent: f64) -> String {
    let (bad, all) = (c.unhealthy_or_silent(), c.live_or_silent());
    let share = pct(bad, all);
    if c.silent == 0 {
        format!(
            "{bad} of {all} live hosts{domain} unhealthy ({share:.1}% > unhealthy_percent {percent}%)"
        )
    } else {
        format!(
            "{bad} of {all} hosts{domain} unhealthy, {} of them silent \
             ({share:.1}% > unhealthy_percent {percent}%)",
            c.silent
        )
    }
}

pub(super) fn over(part: u32, whole: u32, percent: f64) -> bool {
    whole > 0 && f64::from(part) * 100.0 > percent * f64::from(whole)
}

pub(super) fn pct(part: u32, whole: u32) -> f64 {
    if whole == 0 {
        0.0
    } else {
        f64::from(part) * 100.0 / f64::from(whole)
    }
}
