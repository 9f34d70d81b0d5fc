//! The rules (ARCHITECTURE.md, "The coordinator's rules"): one check per
//! rule, each returning the denial it would give, or `None` when it passes,
//! and [`Engine::evaluate`], which runs them in order.
//!
//! The order is behaviour: a request gets the first denial. It is an
//! action the configuration does not know, then 9, 1, 2, gates, 3, 4, 5, 8,
//! 6, 7: the fleet-wide rules first (warm-up and the fleet floor, pauses,
//! breakers, alert gates), then the host's own (quarantine, one at a
//! time, cooldown, attempt budget), then windows, concurrency caps and the
//! rate budget. Messages are built only when a rule denies: the deny path
//! is hot, and a passing check allocates nothing.

use std::ops::ControlFlow;
use std::time::Duration;

use humantime::format_duration;

use super::{Engine, HostActionHistory, HostSlot};
use crate::config::ActionLimits;
use crate::rate::RateState;
use crate::types::{Action, BreakerTrip, Denial, DenyReason, HostId, Labels, Pause, Time};
use crate::window;

/// Where the checks' denials go: a request stops at the first one, an
/// explanation collects them all.
struct Denials<'a> {
    out: &'a mut Vec<Denial>,
    all: bool,
}

impl Denials<'_> {
    /// Records `denial`, if there is one; `Break` when evaluation should
    /// stop there. Inlined: it runs once per rule on every decision.
    #[inline]
    fn check(&mut self, denial: Option<Denial>) -> ControlFlow<()> {
        match denial {
            Some(d) => self.deny(d),
            None => ControlFlow::Continue(()),
        }
    }

    #[inline]
    fn deny(&mut self, denial: Denial) -> ControlFlow<()> {
        self.out.push(denial);
        if self.all {
            ControlFlow::Continue(())
        } else {
            ControlFlow::Break(())
        }
    }
}

// === impl Engine: the order of the rules ===

impl Engine {
    /// Evaluates the rules in order for host slot `i` (or an unknown host)
    /// and `action` on `job` (job caps are skipped without one), for a
    /// permit granted with `dry_run` (whose budgets are the dry-run
    /// lane's), pushing denials. Stops at the first unless `all`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn evaluate(
        &self,
        i: Option<usize>,
        action: Action,
        job: Option<&str>,
        dry_run: bool,
        now: Time,
        all: bool,
        out: &mut Vec<Denial>,
    ) {
        let slot = i.map(|i| &self.hosts[i]);
        // `Break` only says that evaluation stopped early; the denial that
        // stopped it is already in `out`.
        let _ = self.check_rules(slot, action, job, dry_run, now, &mut Denials { out, all });
    }

    fn check_rules(
        &self,
        slot: Option<&HostSlot>,
        action: Action,
        job: Option<&str>,
        dry_run: bool,
        now: Time,
        denials: &mut Denials<'_>,
    ) -> ControlFlow<()> {
        denials.check(self.check_known(action))?;
        let limits = self.limits_in_force(action);
        let limits = limits.as_ref();
        let empty = Labels::new();
        let labels = slot.map_or(&empty, |s| &s.labels);

        // Rules that need nothing of the host but its labels.
        denials.check(self.check_warm_up(now))?; // rule 9
        denials.check(self.check_fleet_floor())?; // rule 9
        denials.check(self.check_pauses(action, labels, now))?; // rule 1
        denials.check(self.check_breakers(labels, now))?; // rule 2
        for denial in self.check_gates(action, labels, now) {
            denials.deny(denial)?; // alert gates (engine/gates.rs)
        }

        let Some(slot) = slot else {
            return ControlFlow::Continue(());
        };
        let host = &slot.id;
        let history = slot.history.get(action, dry_run);
        denials.check(self.check_quarantine(host))?; // rule 3
        denials.check(self.check_rejected(host, action, job, limits, now))?; // approvals
        denials.check(self.check_one_at_a_time(slot, now))?; // rule 4
        denials.check(check_cooldown(host, history, action, limits, now))?; // rule 5
        denials.check(check_attempt_budget(
            host, history, action, limits, dry_run, now,
        ))?; // rule 5
        // Outside its windows, an action whose approval rule says
        // `outside_windows` waits for a human instead (engine/approvals.rs).
        if !limits.approval.is_some_and(|a| a.outside_windows) {
            denials.check(check_window(action, limits, now))?; // rule 8
        }
        denials.check(self.check_fleet_cap(action, limits))?; // rule 6
        for denial in self.check_group_caps(slot, action, limits) {
            denials.deny(denial)?; // rule 6
        }
        if let Some(job) = job {
            denials.check(self.check_job_caps(slot, action, job, limits))?; // rule 6
        }
        denials.check(self.check_rate_budget(action, dry_run, limits, now)) // rule 7
    }
}

// === impl Engine: one check per rule ===

impl Engine {
    /// Before the rules: the action must be one the configuration knows.
    fn check_known(&self, action: Action) -> Option<Denial> {
        (!self.config.knows(action)).then(|| Denial {
            reason: DenyReason::UnknownAction,
            retry_after: None,
            message: format!(
                "unknown action \"{action}\": this coordinator knows {}; declare it in \
                 [actions.{action}] of the coordinator's configuration",
                self.config.action_names()
            ),
        })
    }

    /// Rule 9: no grants while warming up after start.
    fn check_warm_up(&self, now: Time) -> Option<Denial> {
        let left = self.warming_up(now)?;
        Some(Denial {
            reason: DenyReason::WarmingUp,
            retry_after: Some(left),
            message: format!(
                "the coordinator started {} ago and is still learning the fleet \
                 (warmup {}); no grants for another {}",
                format_duration(trunc(
                    now.duration_since(self.started_at).unwrap_or_default()
                )),
                format_duration(self.config.fleet.warmup),
                format_duration(trunc(left))
            ),
        })
    }

    /// Rule 9: no grants while fewer than `min_fleet_size` hosts are live.
    fn check_fleet_floor(&self) -> Option<Denial> {
        let fleet = &self.config.fleet;
        (self.fleet.live < fleet.min_fleet_size).then(|| Denial {
            reason: DenyReason::FleetTooSmall,
            retry_after: Some(fleet.heartbeat_interval),
            message: format!(
                "only {} hosts are live, fewer than fleet.min_fleet_size {}; \
                 percentages over so small a fleet are guesses",
                self.fleet.live, fleet.min_fleet_size
            ),
        })
    }

    /// Rule 1: no grant while a pause covers the action or the host's
    /// labels. It clears when the last covering pause expires (never, if
    /// one has no expiry).
    fn check_pauses(&self, action: Action, labels: &Labels, now: Time) -> Option<Denial> {
        let mut covering = self
            .durable
            .pauses
            .values()
            .filter(|p| p.scope.covers(action, labels))
            .peekable();
        covering.peek()?;
        let pauses: Vec<&Pause> = covering.collect();
        let retry_after = pauses
            .iter()
            .map(|p| p.until.map(|u| u.duration_since(now).unwrap_or_default()))
            .try_fold(Duration::ZERO, |acc, d| d.map(|d| acc.max(d)));
        let p = pauses[0];
        Some(Denial {
            reason: DenyReason::Paused,
            retry_after,
            message: format!(
                "paused ({}) by {} since {}: {:?}{}{}",
                p.scope,
                p.actor,
                crate::types::rfc3339(p.since),
                p.reason,
                match p.until {
                    Some(u) => format!(", until {}", crate::types::rfc3339(u)),
                    None => ", until resumed".to_owned(),
                },
                if pauses.len() > 1 {
                    format!(" (and {} more pauses)", pauses.len() - 1)
                } else {
                    String::new()
                }
            ),
        })
    }

    /// Rule 2: no grant while a breaker covering the host is open (every
    /// one of them must close), nor while a half-open one has all the
    /// probe permits out that it allows.
    fn check_breakers(&self, labels: &Labels, now: Time) -> Option<Denial> {
        let mut trips = self.trips_covering(labels).peekable();
        trips.peek()?;
        let (open, half_open): (Vec<&BreakerTrip>, Vec<&BreakerTrip>) =
            trips.partition(|t| t.is_open());
        if open.is_empty() {
            return self.check_probe_budget(&half_open);
        }
        let auto_close_after = self.config.breaker.auto_close_after;
        let retry_after = auto_close_after.map(|after| {
            open.iter()
                .map(|t| {
                    let clear = self.breaker_clear_since.get(&t.scope).copied();
                    let elapsed = clear.map_or(Duration::ZERO, |c| {
                        now.duration_since(c).unwrap_or_default()
                    });
                    after.saturating_sub(elapsed)
                })
                .max()
                .unwrap_or_default()
        });
        let what: Vec<String> = open
            .iter()
            .map(|t| {
                format!(
                    "{} since {} ({}): {}",
                    t.scope,
                    crate::types::rfc3339(t.since),
                    t.cause,
                    t.detail
                )
            })
            .collect();
        Some(Denial {
            reason: DenyReason::BreakerOpen,
            retry_after,
            message: format!(
                "circuit breaker open for {}. The problem looks systemic; {}",
                what.join("; and for "),
                match auto_close_after {
                    Some(a) => format!(
                        "a breaker goes half-open by itself once clear for {}, or by \
                         medicctl breaker reset, and then lets probe permits through",
                        format_duration(a)
                    ),
                    None => "it goes half-open by medicctl breaker reset, and then lets \
                             probe permits through"
                        .to_owned(),
                }
            ),
        })
    }

    /// Rule 2, half-open: the first of `trips` whose probe permits are all
    /// out denies.
    fn check_probe_budget(&self, trips: &[&BreakerTrip]) -> Option<Denial> {
        let b = &self.config.breaker;
        trips.iter().find_map(|t| {
            let (active, budget) = self.probes(t)?;
            let h = t.half_open.as_ref()?;
            (active >= budget).then(|| Denial {
                reason: DenyReason::BreakerHalfOpen,
                retry_after: Some(self.config.fleet.heartbeat_interval),
                message: format!(
                    "circuit breaker half-open for {} since {} (opened for {}: {}): {active} \
                     of {budget} probe permits active; each verified success allows one more, \
                     one failure opens it again, and it closes after {} successes with its \
                     condition clear ({} so far)",
                    t.scope,
                    crate::types::rfc3339(h.since),
                    t.cause,
                    t.detail,
                    b.half_open_successes,
                    h.successes
                ),
            })
        })
    }

    /// Rule 3: a quarantined host gets nothing until a human releases it.
    fn check_quarantine(&self, host: &HostId) -> Option<Denial> {
        let q = self.durable.quarantines.get(host)?;
        Some(Denial {
            reason: DenyReason::Quarantined,
            retry_after: None,
            message: format!(
                "host {host} is quarantined ({}) by {} since {}: {}. \
                 A human must release it (medicctl unquarantine)",
                q.cause.as_str(),
                q.actor,
                crate::types::rfc3339(q.since),
                q.reason
            ),
        })
    }

    /// Rule 4: a host holds at most one active permit.
    fn check_one_at_a_time(&self, slot: &HostSlot, now: Time) -> Option<Denial> {
        let pid = slot.active_permit.as_ref()?;
        let p = &self.durable.permits[pid];
        Some(Denial {
            reason: DenyReason::HostBusy,
            retry_after: Some(p.expires_at.duration_since(now).unwrap_or_default()),
            message: format!(
                "host {} already holds permit {pid} ({} of job {:?}); one at a time",
                slot.id, p.action, p.job
            ),
        })
    }

    /// Rule 6: active permits of `action` stay within the fleet-wide cap.
    fn check_fleet_cap(&self, action: Action, limits: &ActionLimits) -> Option<Denial> {
        let active = self.fleet.active[action];
        let cap = limits.effective_cap(self.fleet.live);
        (active >= cap).then(|| Denial {
            reason: DenyReason::ConcurrencyCap,
            // A disabled action stays disabled until the config changes.
            retry_after: (limits.max_in_flight > 0).then_some(self.config.fleet.heartbeat_interval),
            message: cap_message(action, active, cap, limits, self.fleet.live),
        })
    }

    /// Rule 6: active permits of `action` stay within each group label's
    /// cap for the host's value of it. Yields one denial per full group,
    /// lazily: a request stops at the first.
    fn check_group_caps<'a>(
        &'a self,
        slot: &'a HostSlot,
        action: Action,
        limits: &'a ActionLimits,
    ) -> impl Iterator<Item = Denial> + 'a {
        let retry_after = self.config.fleet.heartbeat_interval;
        self.groups
            .iter()
            .zip(&slot.group_values)
            .filter_map(move |(g, value)| {
                let (Some(gcap), Some(v)) = (limits.groups.get(&g.label), value) else {
                    return None;
                };
                let c = &g.counts[*v as usize];
                let cap = gcap.cap(c.live);
                (c.active[action] >= cap).then(|| Denial {
                    reason: DenyReason::GroupCap,
                    retry_after: Some(retry_after),
                    message: format!(
                        "{} of {} {action} permits active in {}={} ({} live hosts there); \
                         a slot frees when one ends",
                        c.active[action], cap, g.label, g.names[*v as usize], c.live
                    ),
                })
            })
    }

    /// Rule 6: active permits of `action` for `job` stay within the job's
    /// caps: fleet-wide, and per value of each label for the host's value.
    /// Counted over the active permits, which the caps keep few.
    fn check_job_caps(
        &self,
        slot: &HostSlot,
        action: Action,
        job: &str,
        limits: &ActionLimits,
    ) -> Option<Denial> {
        let cap = limits.jobs.get(job)?;
        let same_job = || {
            self.durable
                .permits
                .values()
                .filter(move |p| p.action == action && p.job == job)
        };
        let retry_after = Some(self.config.fleet.heartbeat_interval);
        if let Some(max) = cap.max_in_flight {
            let active = u32::try_from(same_job().count()).unwrap_or(u32::MAX);
            if active >= max {
                return Some(Denial {
                    reason: DenyReason::JobCap,
                    retry_after,
                    message: format!(
                        "{active} of {max} {action} permits for job {job:?} active fleet-wide \
                         (limits.{action}.jobs.{job}.max_in_flight); a slot frees when one ends"
                    ),
                });
            }
        }
        cap.groups.iter().find_map(|(label, &max)| {
            let value = slot.labels.get(label)?;
            let active = same_job()
                .filter(|p| p.labels.get(label) == Some(value))
                .count();
            let active = u32::try_from(active).unwrap_or(u32::MAX);
            (active >= max).then(|| Denial {
                reason: DenyReason::JobCap,
                retry_after,
                message: format!(
                    "{active} of {max} {action} permits for job {job:?} active in \
                     {label}={value} (limits.{action}.jobs.{job}.groups.{label}); a slot frees \
                     when one ends"
                ),
            })
        })
    }

    /// Rule 7: grants of `action` stay within the rate budget.
    fn check_rate_budget(
        &self,
        action: Action,
        dry_run: bool,
        limits: &ActionLimits,
        now: Time,
    ) -> Option<Denial> {
        let rate: &RateState = self.rate.get(action, dry_run);
        let wait = rate.check(&limits.rate, now).err()?;
        let r = limits.rate;
        Some(Denial {
            reason: DenyReason::RateLimited,
            retry_after: Some(wait),
            message: format!(
                "{action} rate budget spent: {} granted in the last {} \
                 (count {} per {} plus burst {}); next grant possible in {}",
                rate.used(&r, now),
                format_duration(r.per),
                r.count,
                format_duration(r.per),
                r.burst,
                format_duration(trunc(wait))
            ),
        })
    }
}

/// Rule 5: a host waits `cooldown` after its last permit of `action` ended.
fn check_cooldown(
    host: &HostId,
    history: &HostActionHistory,
    action: Action,
    limits: &ActionLimits,
    now: Time,
) -> Option<Denial> {
    let since = now.duration_since(history.last_end?).unwrap_or_default();
    if since >= limits.cooldown {
        return None;
    }
    let left = limits.cooldown - since;
    Some(Denial {
        reason: DenyReason::Cooldown,
        retry_after: Some(left),
        message: format!(
            "host {host}'s last {action} permit ended {} ago; cooldown is {}, {} left",
            format_duration(trunc(since)),
            format_duration(limits.cooldown),
            format_duration(trunc(left))
        ),
    })
}

/// Rule 5: at most `host_budget.max_attempts` grants of `action` per host
/// per `host_budget.per`. The caller quarantines a host this denies.
fn check_attempt_budget(
    host: &HostId,
    history: &HostActionHistory,
    action: Action,
    limits: &ActionLimits,
    dry_run: bool,
    now: Time,
) -> Option<Denial> {
    let b = limits.host_budget;
    // Counted, not collected: this runs on every decision.
    let recent = history
        .attempts
        .iter()
        .filter(|&&t| now.duration_since(t).map_or(true, |d| d < b.per))
        .count();
    (recent >= b.max_attempts as usize).then(|| Denial {
        reason: DenyReason::AttemptBudgetExhausted,
        retry_after: None,
        message: format!(
            "host {host} already had {} {action} permits in the last {} \
             (host_budget.max_attempts {}); remediation is not helping, so the host \
             is quarantined for a human{}",
            recent,
            format_duration(b.per),
            b.max_attempts,
            if dry_run {
                " (dry run: it would be; nothing is quarantined)"
            } else {
                ""
            }
        ),
    })
}

/// Rule 8: `action` only inside its weekly windows, if it has any.
fn check_window(action: Action, limits: &ActionLimits, now: Time) -> Option<Denial> {
    let wait = window::check(&limits.windows, limits.timezone, now).err()?;
    Some(Denial {
        reason: DenyReason::OutsideWindow,
        retry_after: wait,
        message: format!(
            "{action} is allowed only in its windows ({}); the next opens in {}",
            limits.timezone,
            wait.map_or_else(
                || "never".to_owned(),
                |w| format_duration(trunc(w)).to_string()
            )
        ),
    })
}

/// A duration as messages print it: whole seconds, or milliseconds under
/// ten seconds (so that short warm-ups and retries never read "0s").
pub(super) fn trunc(d: Duration) -> Duration {
    if d < Duration::from_secs(10) {
        Duration::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    } else {
        Duration::from_secs(d.as_secs())
    }
}

fn cap_message(action: Action, active: u32, cap: u32, limits: &ActionLimits, live: u32) -> String {
    if limits.max_in_flight == 0 {
        return format!("{action} is disabled (limits.{action}.max_in_flight = 0)");
    }
    let how = match limits.max_in_flight_percent {
        Some(p) => format!(
            "min(max_in_flight {}, {p}% of {live} live hosts, at least 1)",
            limits.max_in_flight
        ),
        None => format!("max_in_flight {}", limits.max_in_flight),
    };
    format!(
        "{active} of {cap} {action} permits active fleet-wide (cap = {how}); a slot frees when one ends"
    )
}
