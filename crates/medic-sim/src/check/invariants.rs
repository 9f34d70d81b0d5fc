//! One function per invariant, named for it as ARCHITECTURE.md numbers
//! them. Each judges one moment of the replay: a grant against the state
//! just before it (I3 to I7) or just after it (I1), a renewal or an end
//! (I5), a record (I9), the whole history (I2, I9), or an action a host
//! took (I6, I8). Each counts what it checked and flags what it finds in
//! the [`Verdict`].

use std::collections::{HashMap, HashSet};

use medic_policy::{Action, Event, Labels, Permit, PermitId};
use medic_proto::pb::v1 as pb;

use super::replay::{Active, EntryId, Granted, Replay};
use super::{AuditEntry, Context, Verdict};
use crate::record::ActionRecord;

/// The fleet's size and each group's (one value of one label): the largest
/// the live fleet can be, which bounds the percent caps from above.
#[derive(Debug)]
pub(super) struct Fleet {
    size: u32,
    groups: HashMap<(String, String), u32>,
}

impl Fleet {
    pub(super) fn of(fleet: &[Labels]) -> Self {
        let mut groups: HashMap<(String, String), u32> = HashMap::new();
        for labels in fleet {
            for (label, value) in labels {
                *groups.entry((label.clone(), value.clone())).or_default() += 1;
            }
        }
        Self {
            size: u32::try_from(fleet.len()).unwrap_or(u32::MAX),
            groups,
        }
    }

    fn group_size(&self, label: &str, value: &str) -> u32 {
        self.groups
            .get(&(label.to_owned(), value.to_owned()))
            .copied()
            .unwrap_or(0)
    }
}

/// The count of `items` for comparing with a cap.
fn count<T>(items: &[T]) -> u32 {
    u32::try_from(items.len()).unwrap_or(u32::MAX)
}

/// The entries of `active`, in history order.
fn entries_of(active: &[&Active]) -> Vec<EntryId> {
    let mut entries: Vec<EntryId> = active.iter().map(|a| a.entry).collect();
    entries.sort_unstable();
    entries
}

/// I1: caps hold, fleet-wide and per group value, once `permit` holds its
/// slot.
pub(super) fn i1_caps_hold(
    v: &mut Verdict,
    state: &Replay,
    fleet: &Fleet,
    cx: &Context<'_>,
    permit: &Permit,
) {
    v.count("I1");
    let (id, a) = (&permit.id, permit.action);
    if !cx.policy.knows(a) {
        v.flag(
            "I1",
            format!(
                "{id} grants {a}, which the configuration does not declare (it knows {})",
                cx.policy.action_names()
            ),
            Vec::new(),
        );
    }
    let limits = state.limits_at(cx.policy, a, permit.granted_at);
    let limits = &limits;
    let same: Vec<&Active> = state.active_of(a).collect();
    let cap = limits.effective_cap(fleet.size);
    if count(&same) > cap {
        v.flag(
            "I1",
            format!(
                "{} active {a} permits after {id}, cap at most {cap}",
                same.len()
            ),
            entries_of(&same),
        );
    }
    if let Some(job_cap) = limits.jobs.get(&permit.job) {
        let of_job: Vec<&Active> = same
            .iter()
            .copied()
            .filter(|x| x.permit.job == permit.job)
            .collect();
        let job = &permit.job;
        if let Some(max) = job_cap.max_in_flight
            && count(&of_job) > max
        {
            v.flag(
                "I1",
                format!(
                    "{} active {a} permits for job {job:?} after {id}, job cap at most {max}",
                    of_job.len()
                ),
                entries_of(&of_job),
            );
        }
        for (label, &max) in &job_cap.groups {
            let Some(value) = permit.labels.get(label) else {
                continue;
            };
            let in_group: Vec<&Active> = of_job
                .iter()
                .copied()
                .filter(|x| x.permit.labels.get(label) == Some(value))
                .collect();
            if count(&in_group) > max {
                v.flag(
                    "I1",
                    format!(
                        "{} active {a} permits for job {job:?} in {label}={value} after {id}, \
                         job cap at most {max}",
                        in_group.len()
                    ),
                    entries_of(&in_group),
                );
            }
        }
    }
    for (label, group) in &limits.groups {
        let Some(value) = permit.labels.get(label) else {
            continue;
        };
        let in_group: Vec<&Active> = same
            .iter()
            .copied()
            .filter(|x| x.permit.labels.get(label) == Some(value))
            .collect();
        let gcap = group.cap(fleet.group_size(label, value));
        if count(&in_group) > gcap {
            v.flag(
                "I1",
                format!(
                    "{} active {a} permits in {label}={value} after {id}, cap at most {gcap}",
                    in_group.len()
                ),
                entries_of(&in_group),
            );
        }
    }
}

/// I2: no window of length `per` holds more than `count + burst` grants
/// of an action, `count` being the one in force when the window's last
/// grant was made (the configured one, or an operator's override then in
/// force; overlapping overrides, which the coordinator never has, count
/// by the most generous).
pub(super) fn i2_rate_holds(v: &mut Verdict, state: &Replay, cx: &Context<'_>) {
    let no_overrides = Vec::new();
    for (&a, grants) in &state.grants {
        let configured = cx.policy.limits(a).rate;
        let spans = state.rate_overrides.get(&a).unwrap_or(&no_overrides);
        let mut lo = 0;
        for hi in 0..grants.len() {
            v.count("I2");
            let mut rate = configured;
            if let Some(count) = spans.iter().filter_map(|s| s.at(grants[hi].at)).max() {
                rate.count = count;
            }
            while grants[hi]
                .at
                .duration_since(grants[lo].at)
                .unwrap_or_default()
                >= rate.per
            {
                lo += 1;
            }
            let n = hi - lo + 1;
            if n > rate.limit() as usize {
                v.flag(
                    "I2",
                    format!(
                        "{n} {a} grants within {:?}, budget {} + burst {}",
                        rate.per, rate.count, rate.burst
                    ),
                    vec![grants[lo].entry, grants[hi].entry],
                );
            }
        }
    }
}

/// I3: nothing is granted while a breaker covering the host is open, a
/// pause covering it is in force, the host is quarantined or in cooldown,
/// or the coordinator warms up; nor, under a half-open breaker, beyond its
/// probe budget (`half_open_probes` plus one per covered success since it
/// went half-open, against the permits active in its scope), nor after a
/// covered permit failed or expired and before the breaker opened again.
/// (Weekly windows are not checked.)
pub(super) fn i3_no_grant_while_forbidden(
    v: &mut Verdict,
    state: &Replay,
    cx: &Context<'_>,
    permit: &Permit,
    entry: EntryId,
) {
    v.count("I3");
    let (id, host, a, at) = (&permit.id, &permit.host, permit.action, permit.granted_at);
    let labels = &permit.labels;
    if let Some((scope, t)) = state.breaker_over(labels) {
        v.flag(
            "I3",
            format!(
                "{id} granted to {host} while breaker {scope} was open ({})",
                t.cause
            ),
            vec![t.entry, entry],
        );
    }
    for r in state.reopen.iter().filter(|r| r.scope.covers(labels)) {
        v.flag(
            "I3",
            format!(
                "{id} granted to {host} after a permit under half-open breaker {} failed or \
                 expired, before the breaker opened again",
                r.scope
            ),
            vec![r.entry, entry],
        );
    }
    let b = &cx.policy.breaker;
    for (scope, h) in state.half_open_over(labels) {
        // The permits already holding a slot in the scope, and this one.
        let active: Vec<&Active> = state.active_in(scope).collect();
        let budget = b.probe_budget(h.successes);
        if count(&active).saturating_add(1) > budget {
            let mut entries = vec![h.entry];
            entries.extend(entries_of(&active));
            entries.push(entry);
            v.flag(
                "I3",
                format!(
                    "{id} granted to {host} while breaker {scope} was half-open with {} \
                     active permits, probe budget {budget} ({} + {} successes)",
                    active.len(),
                    b.half_open_probes,
                    h.successes
                ),
                entries,
            );
        }
    }
    if let Some(p) = state.pause_over(a, labels, at) {
        v.flag(
            "I3",
            format!(
                "{id} granted to {host} while pause #{} was in force",
                p.pause.id
            ),
            vec![p.entry, entry],
        );
    }
    if let Some((gate, closed)) = state.gate_over(cx.policy, a, labels) {
        v.flag(
            "I3",
            format!("{id} granted {a} to {host} while alert gate {gate} was closed"),
            vec![closed, entry],
        );
    }
    if let Some(q) = state.quarantined.get(host) {
        v.flag(
            "I3",
            format!("{id} granted to quarantined {host}"),
            vec![*q, entry],
        );
    }
    let cooldown = cx.policy.limits(a).cooldown;
    if let Some(end) = state.last_end.get(&(host.clone(), a))
        && at.duration_since(end.at).unwrap_or_default() < cooldown
    {
        v.flag(
            "I3",
            format!(
                "{id} granted to {host} {:?} after its last {a} ended (cooldown {cooldown:?})",
                at.duration_since(end.at).unwrap_or_default(),
            ),
            vec![end.entry, entry],
        );
    }
    let warmup = cx.policy.fleet.warmup;
    if let Some(start) = cx.starts.iter().rev().find(|s| **s <= at)
        && at.duration_since(*start).unwrap_or_default() < warmup
    {
        v.flag(
            "I3",
            format!(
                "{id} granted {:?} after the coordinator started (warm-up {warmup:?})",
                at.duration_since(*start).unwrap_or_default(),
            ),
            vec![entry],
        );
    }
}

/// I3, over time: a permit that failed or expired under a half-open
/// breaker opens that breaker again at once (`probe_failed`), recorded at
/// the same time. `at`: the time of the entry about to be replayed (`None`
/// at the end of the history), by which every earlier one is overdue.
pub(super) fn i3_failed_probe_reopens(
    v: &mut Verdict,
    state: &mut Replay,
    at: Option<std::time::SystemTime>,
) {
    for r in state.overdue_reopens(at) {
        v.flag(
            "I3",
            format!(
                "a permit under half-open breaker {} failed or expired, and the breaker did \
                 not open again at the same time",
                r.scope
            ),
            vec![r.entry],
        );
    }
}

/// I4: a host holds at most one active permit.
pub(super) fn i4_one_permit_per_host(
    v: &mut Verdict,
    state: &Replay,
    permit: &Permit,
    entry: EntryId,
) {
    v.count("I4");
    if let Some(other) = state.active.values().find(|x| x.permit.host == permit.host) {
        v.flag(
            "I4",
            format!(
                "{} granted {} while still holding {}",
                permit.host, permit.id, other.permit.id
            ),
            vec![other.entry, entry],
        );
    }
}

/// I5: fencing tokens strictly increase, and only an active permit is
/// renewed, only a granted one ended, and only once.
pub(super) fn i5_fencing(v: &mut Verdict, state: &Replay, event: &Event, entry: EntryId) {
    match event {
        Event::PermitGranted { permit } => {
            v.count("I5");
            if let Some((prev, prev_entry)) = state.last_token
                && permit.token <= prev
            {
                v.flag(
                    "I5",
                    format!("fencing token {} granted after token {prev}", permit.token),
                    vec![prev_entry, entry],
                );
            }
        }
        Event::PermitRenewed { id, .. } => {
            v.count("I5");
            if !state.active.contains_key(id) {
                v.flag("I5", format!("{id} renewed while not active"), vec![entry]);
            }
        }
        Event::PermitEnded { id, .. } => {
            v.count("I5");
            if let Some(first) = state.ended.get(id) {
                v.flag("I5", format!("{id} ended twice"), vec![first.entry, entry]);
            } else if !state.granted.contains_key(id) {
                v.flag("I5", format!("{id} ended but never granted"), vec![entry]);
            }
        }
        _ => {}
    }
}

/// I6, at a grant: a permit id is granted once.
pub(super) fn i6_no_grant_duplicated(
    v: &mut Verdict,
    state: &Replay,
    permit: &Permit,
    entry: EntryId,
) {
    v.count("I6");
    if let Some(first) = state.granted.get(&permit.id) {
        v.flag(
            "I6",
            format!("permit {} granted twice", permit.id),
            vec![first.entry, entry],
        );
    }
}

/// I6, at an action: the permit a host acted under is in the durable
/// history. Returns its grant.
pub(super) fn i6_no_grant_lost<'s>(
    v: &mut Verdict,
    state: &'s Replay,
    r: &ActionRecord,
) -> Option<(&'s PermitId, &'s Granted)> {
    // A host's record names the permit as text; one that does not parse
    // cannot be in the history either.
    let found = PermitId::parse(r.permit_id.as_str())
        .ok()
        .and_then(|id| state.granted.get_key_value(&id));
    if found.is_none() {
        v.flag(
            "I6",
            format!(
                "{} acted ({}) under {} (token {}), which the history does not hold: a lost grant",
                r.host, r.action, r.permit_id, r.token
            ),
            vec![],
        );
    }
    found
}

/// I7: one request id of a host gets one grant.
pub(super) fn i7_one_grant_per_request(
    v: &mut Verdict,
    state: &Replay,
    permit: &Permit,
    entry: EntryId,
) {
    v.count("I7");
    let key = (permit.host.clone(), permit.request_id.clone());
    if let Some(first) = state.requests.get(&key)
        && first.permit != permit.id
    {
        v.flag(
            "I7",
            format!(
                "request {} of {} granted twice ({} and {})",
                permit.request_id, permit.host, first.permit, permit.id
            ),
            vec![first.entry, entry],
        );
    }
}

/// I8: a host acted under its own permit for that action, active and
/// unexpired at the time, right after a check that still saw the problem,
/// and (for a restart) once per permit. `seen` holds the permits and
/// actions acted under so far.
pub(super) fn i8_acts_under_valid_permit(
    v: &mut Verdict,
    state: &Replay,
    r: &ActionRecord,
    (id, granted): (&PermitId, &Granted),
    seen: &mut HashSet<(PermitId, Action)>,
) {
    let p = &granted.permit;
    let end = state.ended.get(id);
    let mut bad = Vec::new();
    if p.host.as_str() != r.host || p.action != r.action || p.token.0 != r.token {
        bad.push(format!(
            "the permit is {}'s {} with token {}",
            p.host, p.action, p.token
        ));
    }
    if r.at < p.granted_at {
        bad.push("acted before the grant".to_owned());
    }
    if end.is_some_and(|end| end.at <= r.at) {
        bad.push("acted after the permit ended".to_owned());
    }
    if r.at >= state.expiry_as_of(p, Some(r.at)) {
        bad.push("acted after the permit expired".to_owned());
    }
    if !r.rechecked_stuck {
        bad.push("the last check before acting did not see the problem".to_owned());
    }
    if !seen.insert((id.clone(), r.action)) && r.action == Action::RestartJob {
        bad.push("acted twice under one permit".to_owned());
    }
    if bad.is_empty() {
        return;
    }
    let mut entries = vec![granted.entry];
    entries.extend(end.map(|end| end.entry));
    v.flag(
        "I8",
        format!(
            "{} {} under {} at t={}: {}",
            r.host,
            r.action,
            r.permit_id,
            crate::report::minutes(r.t),
            bad.join("; ")
        ),
        entries,
    );
}

/// I9, per record: every audited record names who caused it, and the
/// kinds that need one, why.
pub(super) fn i9_records_name_actor_and_reason(v: &mut Verdict, e: &AuditEntry) {
    let needs_reason = matches!(
        e.kind,
        pb::EventKind::Grant
            | pb::EventKind::Breaker
            | pb::EventKind::Quarantine
            | pb::EventKind::Pause
    );
    let needs_actor = !matches!(e.kind, pb::EventKind::Renew | pb::EventKind::Unspecified);
    if !needs_actor {
        return;
    }
    v.count("I9");
    if e.actor.is_empty() || (needs_reason && e.reason.is_empty()) {
        v.flag(
            "I9",
            format!("{:?} entry without actor or reason", e.kind),
            vec![e.id],
        );
    }
}

/// I9, over the history: every permit ended, or was still within its TTL
/// when the history was read.
pub(super) fn i9_every_permit_ended(v: &mut Verdict, state: &Replay, cx: &Context<'_>) {
    for (id, g) in &state.granted {
        v.count("I9");
        if state.ended.contains_key(id) {
            continue;
        }
        let expires = state.expiry_as_of(&g.permit, None);
        if expires + cx.tick < cx.read_at {
            v.flag(
                "I9",
                format!(
                    "{id} of {} never ended (expired {expires:?})",
                    g.permit.host
                ),
                vec![g.entry],
            );
        }
    }
}

/// Approvals: an approval moves only forward (pending to decided; approved
/// to used or expired), is used by one grant at most, only while approved
/// and unexpired, and by the request it stands for.
pub(super) fn approvals_hold(v: &mut Verdict, state: &Replay, event: &Event, entry: EntryId) {
    use medic_policy::ApprovalState as S;
    let Event::ApprovalChanged {
        id,
        state: to,
        permit,
        at,
        ..
    } = event
    else {
        return;
    };
    v.count("approvals");
    let Some(a) = state.approvals.get(id) else {
        v.flag(
            "approvals",
            format!("approval {id} changed to {to} but was never requested"),
            vec![entry],
        );
        return;
    };
    // Decided or used only before it expired; expired only once due.
    let allowed = match (a.state, *to) {
        (S::Pending, S::Approved | S::Rejected) | (S::Approved, S::Used) => a.expires_at > *at,
        (S::Pending | S::Approved, S::Expired) => a.expires_at <= *at,
        (S::Pending, S::Withdrawn) => true,
        _ => false,
    };
    if !allowed {
        let why = match (a.state, *to) {
            (S::Used, S::Used) => "an approval used twice".to_owned(),
            (S::Approved, S::Used) => "used after it expired".to_owned(),
            (S::Pending, S::Approved | S::Rejected) => format!("{to} after it expired"),
            (_, S::Expired) => "expired before it was due".to_owned(),
            (_, S::Used) => format!("used while {}", a.state),
            (from, to) => format!("went from {from} to {to}"),
        };
        v.flag(
            "approvals",
            format!("approval {id} of {}: {why}", a.host),
            vec![a.entry, entry],
        );
    }
    if *to == S::Used {
        let used_by = permit.as_ref().and_then(|p| state.granted.get(p));
        match used_by {
            Some(g) if g.permit.request_id == a.request_id && g.permit.host == a.host => {}
            Some(g) => v.flag(
                "approvals",
                format!(
                    "approval {id} (request {} of {}) used by permit {} of request {} of {}",
                    a.request_id, a.host, g.permit.id, g.permit.request_id, g.permit.host
                ),
                vec![a.entry, g.entry, entry],
            ),
            None => v.flag(
                "approvals",
                format!("approval {id} used by a permit the history never granted"),
                vec![entry],
            ),
        }
    }
}

/// Approvals: every grant of an action whose approval is `always` needed
/// was granted with an approval.
pub(super) fn approvals_cover_always(v: &mut Verdict, state: &Replay, cx: &Context<'_>) {
    for (id, g) in &state.granted {
        let always = cx
            .policy
            .limits(g.permit.action)
            .approval
            .is_some_and(|r| r.always);
        if !always {
            continue;
        }
        v.count("approvals");
        if !state.used.contains_key(id) {
            v.flag(
                "approvals",
                format!(
                    "{} granted {} to {} without a human's approval (limits.{}.approval.always)",
                    id, g.permit.action, g.permit.host, g.permit.action
                ),
                vec![g.entry],
            );
        }
    }
}
