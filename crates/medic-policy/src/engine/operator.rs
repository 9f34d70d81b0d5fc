//! What operators call: pauses, quarantines, revocations, breaker resets
//! and overrides of limits. Each is audited through the event it records, with its actor
//! and reason.

use super::Engine;
use crate::error::InvalidInput;
use crate::error::{PolicyError, ScopeSuffix};
use crate::types::{
    Action, BreakerScope, BreakerTrip, Event, HostId, Override, OverrideLimit, Pause, Permit,
    PermitId, PermitState, Quarantine, QuarantineCause, Scope, Time, later,
};

/// The longest an override may last: a week. Longer is a configuration
/// change, reviewed like one.
pub const MAX_OVERRIDE: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

// === impl Engine: operator calls ===

impl Engine {
    /// Overrides `limit` of `action` with `value` for `duration`: audited,
    /// never past the configured ceiling, ended by itself. A newer override
    /// of the same action and limit replaces the older one (which ends,
    /// saying so). Lowering a cap revokes nothing (I10).
    #[allow(clippy::too_many_arguments)]
    pub fn set_override(
        &mut self,
        action: Action,
        limit: OverrideLimit,
        value: u32,
        duration: std::time::Duration,
        actor: &str,
        reason: &str,
        now: Time,
    ) -> Result<Override, PolicyError> {
        let now = self.observe(now);
        self.advance(now);
        if !self.config.knows(action) {
            return Err(InvalidInput::new(
                "action",
                format!(
                    "unknown action \"{action}\": this coordinator knows {}",
                    self.config.action_names()
                ),
            )
            .into());
        }
        if reason.trim().is_empty() {
            return Err(InvalidInput::new(
                "reason",
                "must say why: an override bypasses the reviewed configuration",
            )
            .into());
        }
        if duration.is_zero() || duration > MAX_OVERRIDE {
            return Err(InvalidInput::new(
                "duration",
                format!(
                    "must be more than 0s and at most {} (a longer change belongs in the \
                     configuration), got {}",
                    humantime::format_duration(MAX_OVERRIDE),
                    humantime::format_duration(duration)
                ),
            )
            .into());
        }
        if limit == OverrideLimit::RateCount && value == 0 {
            return Err(InvalidInput::new(
                "value",
                "rate_count must be at least 1; pause the action to stop it",
            )
            .into());
        }
        let ceiling = self.config.limits(action).ceiling(limit);
        if value > ceiling {
            return Err(PolicyError::OverrideAboveCeiling {
                action,
                limit,
                value,
                ceiling,
            });
        }
        let replaced: Vec<Override> = self
            .durable
            .overrides
            .values()
            .filter(|o| o.action == action && o.limit == limit)
            .cloned()
            .collect();
        let over = Override {
            id: self.durable.last_override_id + 1,
            action,
            limit,
            value,
            actor: actor.to_owned(),
            reason: reason.to_owned(),
            since: now,
            until: later(now, duration),
        };
        for old in replaced {
            self.emit(Event::OverrideEnded {
                over: old,
                actor: actor.to_owned(),
                reason: format!("replaced by override {}", over.id),
                at: now,
            });
        }
        self.emit(Event::OverrideSet(over.clone()));
        self.overrides_changed();
        Ok(over)
    }

    /// Ends override `id` before its time.
    pub fn end_override(
        &mut self,
        id: u64,
        actor: &str,
        reason: &str,
        now: Time,
    ) -> Result<Override, PolicyError> {
        let now = self.observe(now);
        self.advance(now);
        let over = self
            .durable
            .overrides
            .get(&id)
            .cloned()
            .ok_or(PolicyError::NoSuchOverride(id))?;
        self.emit(Event::OverrideEnded {
            over: over.clone(),
            actor: actor.to_owned(),
            reason: reason.to_owned(),
            at: now,
        });
        self.overrides_changed();
        Ok(over)
    }

    /// After an override began or ended: the rate budgets are rebuilt
    /// under the rates now in force (a raised count frees grants at once),
    /// and waiting agents are told to ask again.
    pub(super) fn overrides_changed(&mut self) {
        self.rebuild_rates();
        self.wake = self.wake.wrapping_add(1);
    }

    /// Pauses grants in `scope` until resumed or until `until`.
    pub fn pause(
        &mut self,
        scope: Scope,
        actor: &str,
        reason: &str,
        until: Option<Time>,
        now: Time,
    ) -> Pause {
        let now = self.observe(now);
        self.advance(now);
        let pause = Pause {
            id: self.durable.last_pause_id + 1,
            scope,
            actor: actor.to_owned(),
            reason: reason.to_owned(),
            since: now,
            until,
        };
        self.emit(Event::Paused(pause.clone()));
        pause
    }

    /// Ends pauses: the one with `id`, or every pause with exactly `scope`.
    /// Returns the pauses ended.
    pub fn resume(
        &mut self,
        target: ResumeTarget,
        actor: &str,
        reason: &str,
        now: Time,
    ) -> Result<Vec<Pause>, PolicyError> {
        let now = self.observe(now);
        self.advance(now);
        let ended: Vec<Pause> = match &target {
            ResumeTarget::Id(id) => self.durable.pauses.get(id).cloned().into_iter().collect(),
            ResumeTarget::Scope(s) => self
                .durable
                .pauses
                .values()
                .filter(|p| &p.scope == s)
                .cloned()
                .collect(),
            ResumeTarget::All => self.durable.pauses.values().cloned().collect(),
        };
        if ended.is_empty() {
            return Err(PolicyError::NoSuchPause(match target {
                ResumeTarget::Id(id) => format!("id {id}"),
                ResumeTarget::Scope(s) => format!("scope {s}"),
                ResumeTarget::All => "any scope (nothing is paused)".to_owned(),
            }));
        }
        for pause in &ended {
            self.emit(Event::Resumed {
                pause: pause.clone(),
                actor: actor.to_owned(),
                reason: reason.to_owned(),
                at: now,
            });
        }
        Ok(ended)
    }

    /// Quarantines a host by hand. Known or not: an operator may fence off a
    /// host before its agent ever reports.
    pub fn quarantine(
        &mut self,
        host: &HostId,
        actor: &str,
        reason: &str,
        now: Time,
    ) -> Result<Quarantine, PolicyError> {
        let now = self.observe(now);
        self.advance(now);
        if self.durable.quarantines.contains_key(host) {
            return Err(PolicyError::AlreadyQuarantined(host.clone()));
        }
        let q = Quarantine {
            host: host.clone(),
            cause: QuarantineCause::Manual,
            actor: actor.to_owned(),
            reason: reason.to_owned(),
            since: now,
        };
        self.emit(Event::HostQuarantined(q.clone()));
        Ok(q)
    }

    /// Releases a host from quarantine; its attempt budget starts afresh.
    pub fn unquarantine(
        &mut self,
        host: &HostId,
        actor: &str,
        reason: &str,
        now: Time,
    ) -> Result<Quarantine, PolicyError> {
        let now = self.observe(now);
        self.advance(now);
        let Some(q) = self.durable.quarantines.get(host).cloned() else {
            return Err(PolicyError::NotQuarantined(host.clone()));
        };
        self.emit(Event::HostReleased {
            host: host.clone(),
            actor: actor.to_owned(),
            reason: reason.to_owned(),
            at: now,
        });
        Ok(q)
    }

    /// Revokes an active permit. The slot frees at once; the agent learns it
    /// on its next renewal or heartbeat and aborts before any irreversible
    /// step it has not begun.
    pub fn revoke(
        &mut self,
        id: &PermitId,
        actor: &str,
        reason: &str,
        now: Time,
    ) -> Result<Permit, PolicyError> {
        let now = self.observe(now);
        self.advance(now);
        if !self.durable.permits.contains_key(id) {
            let ended = self
                .permit_requests
                .get(id)
                .and_then(|rid| self.durable.requests.get(rid));
            return Err(match ended {
                Some(p) => PolicyError::PermitEnded {
                    id: id.clone(),
                    state: p.state,
                },
                None => PolicyError::UnknownPermit(id.clone()),
            });
        }
        Ok(self.end_permit(id, PermitState::Revoked, actor, reason, now))
    }

    /// Moves open breakers to half-open: the one for `scope`, or every
    /// open one. A reset is an operator saying the cause is fixed: probe
    /// permits go out a few at a time, and one failure opens the breaker
    /// again. Failure samples are kept; they age out of the window.
    pub fn reset_breaker(
        &mut self,
        scope: Option<&BreakerScope>,
        actor: &str,
        reason: &str,
        now: Time,
    ) -> Result<Vec<BreakerTrip>, PolicyError> {
        let now = self.observe(now);
        self.advance(now);
        let (open, half_open): (Vec<BreakerTrip>, Vec<BreakerTrip>) = self
            .durable
            .breakers
            .values()
            .filter(|t| scope.is_none_or(|s| &t.scope == s))
            .cloned()
            .partition(BreakerTrip::is_open);
        if open.is_empty() {
            if half_open.is_empty() {
                return Err(PolicyError::NoOpenBreaker(ScopeSuffix(
                    scope.map(ToString::to_string),
                )));
            }
            let scopes: Vec<String> = half_open.iter().map(|t| t.scope.to_string()).collect();
            return Err(PolicyError::BreakerAlreadyHalfOpen(scopes.join(", ")));
        }
        for t in &open {
            self.half_open_breaker(t.scope.clone(), actor, reason, now);
        }
        Ok(open)
    }
}

/// Which pauses `Engine::resume` ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResumeTarget {
    /// The pause with this id.
    Id(u64),
    /// Every pause with exactly this scope.
    Scope(Scope),
    /// Every pause.
    All,
}
