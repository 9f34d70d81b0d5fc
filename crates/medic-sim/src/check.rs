//! The invariant checker: ARCHITECTURE.md's I1–I9 over what a run left behind,
//! the coordinator's audit history and the hosts' own action records.
//!
//! It replays the history in id order, keeping the permits that are active
//! (granted, not ended, not past their latest expiry), the open breakers,
//! the pauses and the quarantines, and judges every grant against them.
//! Where a bound depends on the live fleet (percent caps) it uses the whole
//! fleet, the largest the live fleet can be, so it never blames the
//! coordinator for a cap it could not have known; what it flags is a
//! violation whatever the coordinator saw.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use medic_policy::{Action, BreakerScope, Event, Labels, Pause, Permit, PolicyConfig};
use medic_proto::pb::v1 as pb;

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
            Some(Event::BreakerClosed { scope, .. }) => format!("BREAKER CLOSED {scope}"),
            Some(Event::HostQuarantined(q)) => format!("QUARANTINE {}", q.host),
            Some(Event::HostReleased { host, .. }) => format!("RELEASE {host}"),
            Some(Event::Paused(p)) => format!("PAUSE #{}", p.id),
            Some(Event::Resumed { pause, .. }) => format!("RESUME #{}", pause.id),
            Some(Event::ClockChecked { step: Some(s), .. }) => format!("CLOCK STEPPED {s}"),
            Some(Event::ClockChecked { step: None, .. }) => "CLOCK CHECKED".to_owned(),
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

struct Active {
    permit: Permit,
    expires_at: SystemTime,
    entry: u64,
}

/// Checks I1–I9 over `history` (oldest first) and the hosts' `actions`.
pub fn check(history: &[AuditEntry], actions: &[ActionRecord], cx: &Context<'_>) -> Verdict {
    let mut v = Verdict::default();
    let bump = |v: &mut Verdict, i: &'static str| *v.checked.entry(i).or_default() += 1;
    let fleet_size = u32::try_from(cx.fleet.len()).unwrap_or(u32::MAX);
    let mut group_sizes: HashMap<(String, String), u32> = HashMap::new();
    for labels in cx.fleet {
        for (k, val) in labels {
            *group_sizes.entry((k.clone(), val.clone())).or_default() += 1;
        }
    }

    // Replay state.
    let mut active: HashMap<String, Active> = HashMap::new();
    let mut granted: HashMap<String, (Permit, u64)> = HashMap::new();
    let mut ended: HashMap<String, (SystemTime, u64)> = HashMap::new();
    let mut renewals: HashMap<String, Vec<(SystemTime, SystemTime)>> = HashMap::new();
    let mut last_token: Option<(u64, u64)> = None;
    let mut by_request: HashMap<(String, String), (String, u64)> = HashMap::new();
    let mut grant_times: [Vec<(SystemTime, u64)>; 2] = [Vec::new(), Vec::new()];
    let mut last_end: HashMap<(String, Action), (SystemTime, u64)> = HashMap::new();
    let mut breakers: HashMap<BreakerScope, u64> = HashMap::new();
    let mut pauses: HashMap<u64, (Pause, u64)> = HashMap::new();
    let mut quarantined: HashMap<String, u64> = HashMap::new();

    for e in history {
        // I9: every audited record names who and why.
        let needs_reason = matches!(
            e.kind,
            pb::EventKind::Grant
                | pb::EventKind::Breaker
                | pb::EventKind::Quarantine
                | pb::EventKind::Pause
        );
        let needs_actor = !matches!(e.kind, pb::EventKind::Renew | pb::EventKind::Unspecified);
        if needs_actor {
            bump(&mut v, "I9");
            if e.actor.is_empty() || (needs_reason && e.reason.is_empty()) {
                v.violations.push(Violation {
                    invariant: "I9",
                    message: format!("{:?} entry without actor or reason", e.kind),
                    entries: vec![e.id],
                });
            }
        }
        let Some(event) = &e.event else { continue };
        match event {
            Event::PermitGranted { permit } => {
                let at = permit.granted_at;
                // Permits past their expiry no longer hold a slot, whether
                // or not the tick that records it has run yet.
                active.retain(|_, a| a.expires_at > at);
                let id = permit.id.to_string();
                let host = permit.host.to_string();
                let a = permit.action;
                let limits = &cx.policy.limits[a.index()];

                // I5: tokens strictly increase; ids are never reused.
                bump(&mut v, "I5");
                if let Some((prev, prev_entry)) = last_token
                    && permit.token.0 <= prev
                {
                    v.violations.push(Violation {
                        invariant: "I5",
                        message: format!(
                            "fencing token {} granted after token {prev}",
                            permit.token
                        ),
                        entries: vec![prev_entry, e.id],
                    });
                }
                last_token = Some((permit.token.0, e.id));
                bump(&mut v, "I6");
                if let Some((_, first)) = granted.get(&id) {
                    v.violations.push(Violation {
                        invariant: "I6",
                        message: format!("permit {id} granted twice"),
                        entries: vec![*first, e.id],
                    });
                }

                // I7: one request id, one grant.
                bump(&mut v, "I7");
                let key = (host.clone(), permit.request_id.as_str().to_owned());
                if let Some((other, first)) = by_request.get(&key)
                    && *other != id
                {
                    v.violations.push(Violation {
                        invariant: "I7",
                        message: format!(
                            "request {} of {host} granted twice ({other} and {id})",
                            key.1
                        ),
                        entries: vec![*first, e.id],
                    });
                }
                by_request.insert(key, (id.clone(), e.id));

                // I4: one active permit per host.
                bump(&mut v, "I4");
                if let Some(other) = active.values().find(|x| x.permit.host == permit.host) {
                    v.violations.push(Violation {
                        invariant: "I4",
                        message: format!(
                            "{host} granted {id} while still holding {}",
                            other.permit.id
                        ),
                        entries: vec![other.entry, e.id],
                    });
                }

                // I3: nothing granted while denied by a rule.
                bump(&mut v, "I3");
                let labels = &permit.labels;
                if let Some((scope, opened)) = breakers.iter().find(|(s, _)| s.covers(labels)) {
                    v.violations.push(Violation {
                        invariant: "I3",
                        message: format!("{id} granted to {host} while breaker {scope} was open"),
                        entries: vec![*opened, e.id],
                    });
                }
                if let Some((p, paused)) = pauses.values().find(|(p, _)| {
                    p.scope.covers(a, labels) && p.since <= at && p.until.is_none_or(|u| at < u)
                }) {
                    v.violations.push(Violation {
                        invariant: "I3",
                        message: format!(
                            "{id} granted to {host} while pause #{} was in force",
                            p.id
                        ),
                        entries: vec![*paused, e.id],
                    });
                }
                if let Some(q) = quarantined.get(&host) {
                    v.violations.push(Violation {
                        invariant: "I3",
                        message: format!("{id} granted to quarantined {host}"),
                        entries: vec![*q, e.id],
                    });
                }
                if let Some((end, end_entry)) = last_end.get(&(host.clone(), a))
                    && at.duration_since(*end).unwrap_or_default() < limits.cooldown
                {
                    v.violations.push(Violation {
                        invariant: "I3",
                        message: format!(
                            "{id} granted to {host} {:?} after its last {a} ended (cooldown {:?})",
                            at.duration_since(*end).unwrap_or_default(),
                            limits.cooldown
                        ),
                        entries: vec![*end_entry, e.id],
                    });
                }
                if let Some(start) = cx.starts.iter().rev().find(|s| **s <= at)
                    && at.duration_since(*start).unwrap_or_default() < cx.policy.fleet.warmup
                {
                    v.violations.push(Violation {
                        invariant: "I3",
                        message: format!(
                            "{id} granted {:?} after the coordinator started (warm-up {:?})",
                            at.duration_since(*start).unwrap_or_default(),
                            cx.policy.fleet.warmup
                        ),
                        entries: vec![e.id],
                    });
                }

                // I1: caps, fleet-wide and per group value.
                active.insert(
                    id.clone(),
                    Active {
                        permit: permit.clone(),
                        expires_at: permit.expires_at,
                        entry: e.id,
                    },
                );
                bump(&mut v, "I1");
                let same: Vec<&Active> = active.values().filter(|x| x.permit.action == a).collect();
                let cap = limits.effective_cap(fleet_size);
                if u32::try_from(same.len()).unwrap_or(u32::MAX) > cap {
                    let mut entries: Vec<u64> = same.iter().map(|x| x.entry).collect();
                    entries.sort_unstable();
                    v.violations.push(Violation {
                        invariant: "I1",
                        message: format!(
                            "{} active {a} permits after {id}, cap at most {cap}",
                            same.len()
                        ),
                        entries,
                    });
                }
                for (label, group) in &limits.groups {
                    let Some(value) = labels.get(label) else {
                        continue;
                    };
                    let in_group: Vec<&&Active> = same
                        .iter()
                        .filter(|x| x.permit.labels.get(label) == Some(value))
                        .collect();
                    let size = group_sizes
                        .get(&(label.clone(), value.clone()))
                        .copied()
                        .unwrap_or(0);
                    let gcap = group.cap(size);
                    if u32::try_from(in_group.len()).unwrap_or(u32::MAX) > gcap {
                        let mut entries: Vec<u64> = in_group.iter().map(|x| x.entry).collect();
                        entries.sort_unstable();
                        v.violations.push(Violation {
                            invariant: "I1",
                            message: format!(
                                "{} active {a} permits in {label}={value} after {id}, cap at most {gcap}",
                                in_group.len()
                            ),
                            entries,
                        });
                    }
                }
                grant_times[a.index()].push((at, e.id));
                granted.insert(id, (permit.clone(), e.id));
            }
            Event::PermitRenewed { id, expires_at, at } => {
                let id = id.to_string();
                bump(&mut v, "I5");
                match active.get_mut(&id) {
                    Some(a) => a.expires_at = *expires_at,
                    None => v.violations.push(Violation {
                        invariant: "I5",
                        message: format!("{id} renewed while not active"),
                        entries: vec![e.id],
                    }),
                }
                renewals.entry(id).or_default().push((*at, *expires_at));
            }
            Event::PermitEnded {
                id,
                host,
                action,
                at,
                ..
            } => {
                let id = id.to_string();
                bump(&mut v, "I5");
                if let Some((_, first)) = ended.get(&id) {
                    v.violations.push(Violation {
                        invariant: "I5",
                        message: format!("{id} ended twice"),
                        entries: vec![*first, e.id],
                    });
                } else if !granted.contains_key(&id) {
                    v.violations.push(Violation {
                        invariant: "I5",
                        message: format!("{id} ended but never granted"),
                        entries: vec![e.id],
                    });
                }
                ended.insert(id.clone(), (*at, e.id));
                active.remove(&id);
                // Cooldown counts from any end: outcome, expiry or revocation.
                last_end.insert((host.to_string(), *action), (*at, e.id));
            }
            Event::BreakerOpened(t) => {
                breakers.insert(t.scope.clone(), e.id);
            }
            Event::BreakerClosed { scope, .. } => {
                breakers.remove(scope);
            }
            Event::HostQuarantined(q) => {
                quarantined.insert(q.host.to_string(), e.id);
            }
            Event::HostReleased { host, .. } => {
                quarantined.remove(host.as_str());
            }
            Event::Paused(p) => {
                pauses.insert(p.id, (p.clone(), e.id));
            }
            Event::Resumed { pause, .. } => {
                pauses.remove(&pause.id);
            }
            // A step moved every recorded time with the clock: so do the
            // times this replay holds, or the windows after it would be
            // judged across the jump.
            Event::ClockChecked { step: None, .. } => {}
            Event::ClockChecked {
                step: Some(step), ..
            } => {
                let s = |t: &mut SystemTime| *t = step.shift(*t);
                for a in active.values_mut() {
                    s(&mut a.expires_at);
                }
                for (t, _) in ended.values_mut().chain(last_end.values_mut()) {
                    s(t);
                }
                for times in &mut grant_times {
                    times.iter_mut().for_each(|(t, _)| s(t));
                }
                for (p, _) in pauses.values_mut() {
                    if let Some(u) = &mut p.until {
                        s(u);
                    }
                }
            }
        }
    }

    // I2: no window of length `per` holds more than count + burst grants.
    for a in Action::ALL {
        let rate = cx.policy.limits[a.index()].rate;
        let times = &grant_times[a.index()];
        let mut lo = 0;
        for hi in 0..times.len() {
            bump(&mut v, "I2");
            while times[hi].0.duration_since(times[lo].0).unwrap_or_default() >= rate.per {
                lo += 1;
            }
            let n = hi - lo + 1;
            if n > rate.limit() as usize {
                v.violations.push(Violation {
                    invariant: "I2",
                    message: format!(
                        "{n} {a} grants within {:?}, budget {} + burst {}",
                        rate.per, rate.count, rate.burst
                    ),
                    entries: vec![times[lo].1, times[hi].1],
                });
            }
        }
    }

    // I9: every permit ended (or is still within its TTL) when read.
    for (id, (p, entry)) in &granted {
        bump(&mut v, "I9");
        if ended.contains_key(id) {
            continue;
        }
        let expires = renewals
            .get(id)
            .and_then(|r| r.iter().map(|x| x.1).max())
            .unwrap_or(p.expires_at)
            .max(p.expires_at);
        if expires + cx.tick < cx.read_at {
            v.violations.push(Violation {
                invariant: "I9",
                message: format!("{id} of {} never ended (expired {expires:?})", p.host),
                entries: vec![*entry],
            });
        }
    }

    // I6, I8: every action a host took was under a permit the history
    // holds, for that host and action, active and unexpired at that time,
    // and right after a check that still saw the problem.
    let mut seen_actions = HashSet::new();
    for r in actions {
        bump(&mut v, "I8");
        let Some((p, entry)) = granted.get(&r.permit_id) else {
            v.violations.push(Violation {
                invariant: "I6",
                message: format!(
                    "{} acted ({}) under {} (token {}), which the history does not hold: a lost grant",
                    r.host, r.action, r.permit_id, r.token
                ),
                entries: vec![],
            });
            continue;
        };
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
        if let Some((end, _)) = ended.get(&r.permit_id)
            && *end <= r.at
        {
            bad.push("acted after the permit ended".to_owned());
        }
        let expires = renewals
            .get(&r.permit_id)
            .into_iter()
            .flatten()
            .filter(|(at, _)| *at <= r.at)
            .map(|x| x.1)
            .fold(p.expires_at, SystemTime::max);
        if r.at >= expires {
            bad.push("acted after the permit expired".to_owned());
        }
        if !r.rechecked_stuck {
            bad.push("the last check before acting did not see the problem".to_owned());
        }
        if !seen_actions.insert((r.permit_id.clone(), r.action)) && r.action == Action::RestartJob {
            bad.push("acted twice under one permit".to_owned());
        }
        if !bad.is_empty() {
            let mut entries = vec![*entry];
            if let Some((_, end_entry)) = ended.get(&r.permit_id) {
                entries.push(*end_entry);
            }
            v.violations.push(Violation {
                invariant: "I8",
                message: format!(
                    "{} {} under {} at t={}: {}",
                    r.host,
                    r.action,
                    r.permit_id,
                    crate::report::minutes(r.t),
                    bad.join("; ")
                ),
                entries,
            });
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
        "no grant while paused, breaker open, quarantined, in cooldown or warming up (weekly windows: not checked)",
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
];
