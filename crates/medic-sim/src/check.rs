//! The invariant checker: ARCHITECTURE.md's I1–I9 over what a run left behind,
//! the coordinator's audit history and the hosts' own action records.
//!
//! It replays the history in id order, keeping the permits that are active
//! (granted, not ended, not past their latest expiry), the open and
//! half-open breakers (with the successes each half-open one counted),
//! the pauses and the quarantines, and judges every grant against them.
//! Where a bound depends on the live fleet (percent caps) it uses the whole
//! fleet, the largest the live fleet can be, so it never blames the
//! coordinator for a cap it could not have known; what it flags is a
//! violation whatever the coordinator saw.
//!
//! [`check`] walks the history; `replay` holds the state it keeps (typed
//! by permit, host, request and action), and `invariants` one function
//! per invariant, named for it (`i1_caps_hold` ... `i9_every_permit_ended`).

mod invariants;
mod replay;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use medic_policy::{Event, Labels, PolicyConfig};
use medic_proto::pb::v1 as pb;

use self::invariants::{
    Fleet, approvals_cover_always, approvals_hold, i1_caps_hold, i2_rate_holds,
    i3_failed_probe_reopens, i3_no_grant_while_forbidden, i4_one_permit_per_host, i5_fencing,
    i6_no_grant_duplicated, i6_no_grant_lost, i7_one_grant_per_request, i8_acts_under_valid_permit,
    i9_every_permit_ended, i9_records_name_actor_and_reason,
};
use self::replay::Replay;
use crate::record::ActionRecord;

/// One entry of the audit history.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditEntry {
    /// Its id.
    pub id: u64,
    /// When (coordinator clock).
    pub at: SystemTime,
    /// Its kind.
    pub kind: pb::EventKind,
    /// Who.
    pub actor: String,
    /// Which host, if one.
    pub host: String,
    /// Why.
    pub reason: String,
    /// The decision-engine event, for the kinds that carry one.
    pub event: Option<Event>,
}

impl AuditEntry {
    /// From the wire.
    pub fn from_wire(e: pb::Event) -> Self {
        let at = e
            .time
            .and_then(|t| medic_proto::convert::from_timestamp("time", t).ok())
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let kind = pb::EventKind::try_from(e.kind).unwrap_or(pb::EventKind::Unspecified);
        Self {
            id: e.id,
            at,
            kind,
            actor: e.actor.clone(),
            host: e.host_id.clone(),
            reason: e.reason.clone(),
            event: Event::try_from(e).ok(),
        }
    }

    /// One line for a human.
    pub fn describe(&self, origin: SystemTime, speed: f64) -> String {
        let t = match self.at.duration_since(origin) {
            Ok(d) => d.as_secs_f64() * speed,
            Err(e) => -e.duration().as_secs_f64() * speed,
        };
        let what = match &self.event {
            Some(Event::PermitGranted { permit: p }) => format!(
                "GRANT {} {} to {} (token {}, request {}, labels {:?})",
                p.id,
                p.action,
                p.host,
                p.token,
                p.request_id.as_str(),
                p.labels
            ),
            Some(Event::PermitEnded {
                id, host, state, ..
            }) => format!("END {id} of {host}: {state:?}"),
            Some(Event::PermitRenewed { id, .. }) => format!("RENEW {id}"),
            Some(Event::BreakerOpened(t)) => format!("BREAKER OPEN {}", t.scope),
            Some(Event::BreakerHalfOpened { scope, .. }) => format!("BREAKER HALF-OPEN {scope}"),
            Some(Event::BreakerClosed { scope, .. }) => format!("BREAKER CLOSED {scope}"),
            Some(Event::HostQuarantined(q)) => format!("QUARANTINE {}", q.host),
            Some(Event::HostReleased { host, .. }) => format!("RELEASE {host}"),
            Some(Event::Paused(p)) => format!("PAUSE #{}", p.id),
            Some(Event::Resumed { pause, .. }) => format!("RESUME #{}", pause.id),
            Some(Event::OverrideSet(o)) => {
                format!("OVERRIDE #{} {} {} = {}", o.id, o.action, o.limit, o.value)
            }
            Some(Event::OverrideEnded { over, .. }) => format!("OVERRIDE END #{}", over.id),
            Some(Event::ClockChecked { step: Some(s), .. }) => format!("CLOCK STEPPED {s}"),
            Some(Event::ClockChecked { step: None, .. }) => "CLOCK CHECKED".to_owned(),
            Some(Event::GateChanged {
                gate,
                value,
                closed,
                ..
            }) => format!(
                "GATE {gate}{} {}",
                value
                    .as_ref()
                    .map(|v| format!(" for {v}"))
                    .unwrap_or_default(),
                if *closed { "CLOSED" } else { "OPEN" }
            ),
            Some(Event::ApprovalRequested(a)) => format!(
                "APPROVAL #{} requested: {} of {} (request {})",
                a.id,
                a.action,
                a.host,
                a.request_id.as_str()
            ),
            Some(Event::ApprovalChanged {
                id, state, permit, ..
            }) => match permit {
                Some(p) => format!("APPROVAL #{id} {state} by {p}"),
                None => format!("APPROVAL #{id} {state}"),
            },
            None => format!("{:?} {}", self.kind, self.host),
        };
        format!(
            "#{} t={} {what} actor={:?} reason={:?}",
            self.id,
            crate::report::minutes(t),
            self.actor,
            self.reason
        )
    }
}

/// What the checker needs besides the history.
#[derive(Clone, Debug)]
pub struct Context<'a> {
    /// The coordinator's policy (real time, as it ran).
    pub policy: &'a PolicyConfig,
    /// Every host's labels: bounds the live fleet and each group's.
    pub fleet: &'a [Labels],
    /// When each coordinator incarnation started (warm-up counts from each);
    /// empty when unknown (an external coordinator).
    pub starts: &'a [SystemTime],
    /// When the history was read: by then every permit must have ended or
    /// still be within its TTL.
    pub read_at: SystemTime,
    /// Slack for a permit past its expiry whose end the coordinator's next
    /// tick records.
    pub tick: Duration,
}

/// One broken invariant.
#[derive(Clone, Debug, PartialEq)]
pub struct Violation {
    /// `I1`...`I9`.
    pub invariant: &'static str,
    /// What is wrong.
    pub message: String,
    /// The history entries involved (ids).
    pub entries: Vec<u64>,
}

/// The checker's verdict.
#[derive(Clone, Debug, Default)]
pub struct Verdict {
    /// Per invariant: how many things were checked.
    pub checked: BTreeMap<&'static str, usize>,
    /// Every violation, in the order found.
    pub violations: Vec<Violation>,
}

impl Verdict {
    /// No violation.
    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }

    /// Violations of `invariant`.
    pub fn of(&self, invariant: &str) -> usize {
        self.violations
            .iter()
            .filter(|v| v.invariant == invariant)
            .count()
    }

    /// Counts one more thing checked for `invariant`.
    fn count(&mut self, invariant: &'static str) {
        *self.checked.entry(invariant).or_default() += 1;
    }

    /// Records a violation of `invariant`.
    fn flag(&mut self, invariant: &'static str, message: String, entries: Vec<u64>) {
        self.violations.push(Violation {
            invariant,
            message,
            entries,
        });
    }

    /// The first `n` violations with their events, for a terminal.
    pub fn render(
        &self,
        history: &[AuditEntry],
        origin: SystemTime,
        speed: f64,
        n: usize,
    ) -> String {
        let by_id: HashMap<u64, &AuditEntry> = history.iter().map(|e| (e.id, e)).collect();
        let mut out = String::new();
        for v in self.violations.iter().take(n) {
            let _ = writeln!(out, "  {} violated: {}", v.invariant, v.message);
            for id in &v.entries {
                if let Some(e) = by_id.get(id) {
                    let _ = writeln!(out, "      {}", e.describe(origin, speed));
                }
            }
        }
        if self.violations.len() > n {
            let _ = writeln!(out, "  ... and {} more", self.violations.len() - n);
        }
        out
    }
}

/// Checks I1–I9 over `history` (oldest first) and the hosts' `actions`.
pub fn check(history: &[AuditEntry], actions: &[ActionRecord], cx: &Context<'_>) -> Verdict {
    let mut v = Verdict::default();
    let fleet = Fleet::of(cx.fleet);
    let mut state = Replay::default();
    let mut starts = cx.starts.iter().peekable();
    for e in history {
        // A coordinator start: its gates hold everything back until their
        // first evaluation, whatever the history last said of them.
        while starts.next_if(|s| **s <= e.at).is_some() {
            state.gates_closed.clear();
        }
        i9_records_name_actor_and_reason(&mut v, e);
        let Some(event) = &e.event else { continue };
        i3_failed_probe_reopens(&mut v, &mut state, Some(e.at));
        match event {
            // A grant is judged against the state just before it, then
            // the caps against the state that includes it.
            Event::PermitGranted { permit } => {
                state.expire_before(permit.granted_at);
                i5_fencing(&mut v, &state, event, e.id);
                i6_no_grant_duplicated(&mut v, &state, permit, e.id);
                i7_one_grant_per_request(&mut v, &state, permit, e.id);
                i4_one_permit_per_host(&mut v, &state, permit, e.id);
                i3_no_grant_while_forbidden(&mut v, &state, cx, permit, e.id);
                state.apply(event, e.id);
                i1_caps_hold(&mut v, &state, &fleet, cx, permit);
            }
            _ => {
                i5_fencing(&mut v, &state, event, e.id);
                approvals_hold(&mut v, &state, event, e.id);
                state.apply(event, e.id);
            }
        }
    }
    i3_failed_probe_reopens(&mut v, &mut state, None);
    approvals_cover_always(&mut v, &state, cx);
    i2_rate_holds(&mut v, &state, cx);
    i9_every_permit_ended(&mut v, &state, cx);

    // I6, I8: every action a host took was under a permit the history
    // holds, for that host and action, active and unexpired at that time,
    // and right after a check that still saw the problem.
    let mut seen = HashSet::new();
    for r in actions {
        // Counted as I8 whether or not the grant is found (I6).
        v.count("I8");
        // The hosts' clocks never stepped; the replay's times are in the
        // frame of the coordinator's clock after its last step.
        let moved;
        let r = if state.steps.is_empty() {
            r
        } else {
            moved = ActionRecord {
                at: state.in_final_frame(r.at),
                ..r.clone()
            };
            &moved
        };
        if let Some(grant) = i6_no_grant_lost(&mut v, &state, r) {
            i8_acts_under_valid_permit(&mut v, &state, r, grant, &mut seen);
        }
    }
    v
}

/// The invariants this checker covers, with what it checks, for reports.
pub const COVERED: &[(&str, &str)] = &[
    (
        "I1",
        "active permits per action and per group value within the cap",
    ),
    (
        "I2",
        "grants per action in any window of `per` within count + burst",
    ),
    (
        "I3",
        "no grant while paused, breaker open, an alert gate closed (as the history records it), quarantined, in cooldown or warming up; under a half-open breaker, at most its probe budget active, and a failed or expired probe reopens it (weekly windows: not checked)",
    ),
    ("I4", "at most one active permit per host"),
    (
        "I5",
        "fencing tokens increase; no renewal or end of a permit that is not active",
    ),
    (
        "I6",
        "every permit a host acted under is in the durable history, granted once",
    ),
    ("I7", "one grant per request id"),
    (
        "I8",
        "hosts act only under an active, unexpired permit, right after re-checking",
    ),
    (
        "I9",
        "every record has actor and reason; every permit ended",
    ),
    (
        "approvals",
        "an approval is used by one grant at most, only while approved and unexpired, by the request it stands for; every grant of an action whose approval is `always` needed used one",
    ),
];
