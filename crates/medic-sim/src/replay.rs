//! `medic-sim replay`: a real coordinator's audit history, exported with
//! `medicctl history -o json --limit N` (or the lines of `medicctl watch -o
//! json`), decided again under candidate limits. The decision engine
//! (`medic_policy::Engine`) is pure and deterministic, so each recorded
//! request is fed to it at its recorded time, and what the candidate
//! decides is shown next to what was decided.
//!
//! What the history does not hold is rebuilt, and the output says how:
//! - Requests: every grant, and every denial sample (which stands for
//!   `count` denials of one host; it is replayed once, at its time).
//! - The fleet: every host named in the history, live throughout (it
//!   heartbeats at each record at least `fleet.heartbeat_interval` after
//!   the last, and every half `fleet.host_ttl` through quiet stretches),
//!   with the labels of its grants; `--fleet-size N` adds healthy hosts up to N, since a host that
//!   never asked for anything is not in the history but counts in every
//!   percentage.
//! - Health: a host reports a problem with its job from its first request
//!   until a recorded permit of it succeeds.
//! - Outcomes: a permit both sides granted ends as the recorded one did,
//!   when it did; one only the candidate granted ends SUCCEEDED after the
//!   median length of the recorded permits of its action (a minute if
//!   there is none).
//! - Warm-up: the candidate engine starts one `fleet.warmup` before the
//!   first record, so that it is warm when the history begins.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, SystemTime};

use medic_policy::{
    Action, Decision, Engine, Heartbeat, HostId, Labels, Outcome, PermitRef, PermitRequest,
    PolicyConfig, Problem, RequestId,
};
use serde::Deserialize;

use crate::error::SimError;
use crate::report::minutes;

// === The export's shape (medicctl's JSON) ===

#[derive(Debug, Deserialize)]
struct Export {
    events: Vec<ExportEvent>,
}

#[derive(Debug, Deserialize)]
struct ExportEvent {
    id: u64,
    time: Option<String>,
    #[serde(default)]
    host_id: Option<String>,
    payload: serde_json::Value,
}

/// What was decided for one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decided {
    /// Granted.
    Granted,
    /// Denied by this rule (`breaker_open`...).
    Denied(String),
}

impl Decided {
    fn text(&self) -> String {
        match self {
            Decided::Granted => "grant".to_owned(),
            Decided::Denied(r) => format!("deny {r}"),
        }
    }
}

/// One recorded request and both decisions.
#[derive(Clone, Debug)]
pub struct Row {
    /// The history entry it came from.
    pub id: u64,
    /// When it was decided.
    pub at: SystemTime,
    /// Seconds since the first record.
    pub t: f64,
    /// The host.
    pub host: String,
    /// The action.
    pub action: Action,
    /// What the recorded coordinator decided.
    pub recorded: Decided,
    /// Requests the record stands for (a denial sample's count).
    pub count: u64,
    /// What the candidate decides.
    pub candidate: Decided,
}

/// A whole replay.
#[derive(Clone, Debug, Default)]
pub struct Replay {
    /// Request by request, in time order.
    pub rows: Vec<Row>,
    /// Hosts in the replayed fleet (named in the history, and added).
    pub fleet: usize,
    /// Hosts named in the history.
    pub named: usize,
}

impl Replay {
    /// Rows where the two sides decided alike.
    pub fn agreeing(&self) -> usize {
        self.rows
            .iter()
            .filter(|r| r.recorded == r.candidate)
            .count()
    }

    /// Grants: recorded, candidate.
    pub fn grants(&self) -> (usize, usize) {
        (
            self.rows
                .iter()
                .filter(|r| r.recorded == Decided::Granted)
                .count(),
            self.rows
                .iter()
                .filter(|r| r.candidate == Decided::Granted)
                .count(),
        )
    }
}

/// Parses an export: one JSON document with `events` (`medicctl history -o
/// json`), or one event per line (`medicctl watch -o json`).
fn parse(text: &str, path: &Path) -> Result<Vec<ExportEvent>, SimError> {
    let bad = |what: String| SimError::Usage(format!("{}: {what}", path.display()));
    if let Ok(export) = serde_json::from_str::<Export>(text) {
        return Ok(export.events);
    }
    let mut events = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let e: ExportEvent = serde_json::from_str(line).map_err(|e| {
            bad(format!(
                "neither a `medicctl history -o json` document nor one event per line \
                 (`medicctl watch -o json`): line {}: {e}",
                n + 1
            ))
        })?;
        events.push(e);
    }
    Ok(events)
}

fn action_of(name: &str) -> Option<Action> {
    match name {
        "restart_job" => Some(Action::RestartJob),
        "reboot_host" => Some(Action::RebootHost),
        _ => None,
    }
}

fn time_of(s: Option<&str>) -> Option<SystemTime> {
    s.and_then(|s| humantime::parse_rfc3339_weak(s).ok())
}

fn str_of<'a>(v: &'a serde_json::Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(serde_json::Value::as_str)
}

/// A request of the history.
#[derive(Debug)]
struct Recorded {
    id: u64,
    at: SystemTime,
    host: String,
    action: Action,
    job: Option<String>,
    reason: String,
    decided: Decided,
    count: u64,
    permit_id: Option<String>,
}

/// A recorded permit's end.
#[derive(Debug)]
struct Ended {
    at: SystemTime,
    state: String,
}

/// Reads the history at `path` and decides every request again under
/// `candidate`, over a fleet of at least `fleet_size` hosts.
pub fn replay_file(
    path: &Path,
    candidate: &PolicyConfig,
    fleet_size: usize,
) -> Result<Replay, SimError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        SimError::Usage(format!("{}: cannot read the history: {e}", path.display()))
    })?;
    let events = parse(&text, path)?;
    replay(&events, candidate, fleet_size, path)
}

/// Reads the candidate's coordinator configuration (a `coordinator.toml`),
/// every error named by its key path.
pub fn candidate(path: &Path) -> Result<PolicyConfig, SimError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| SimError::Config(format!("{}: {e}", path.display())))?;
    medic_coordinator::CoordinatorConfig::from_toml(&text)
        .map(|c| c.policy)
        .map_err(|e| SimError::Config(format!("{}: {e}", path.display())))
}

#[allow(clippy::too_many_lines)]
fn replay(
    events: &[ExportEvent],
    config: &PolicyConfig,
    fleet_size: usize,
    path: &Path,
) -> Result<Replay, SimError> {
    let mut requests: Vec<Recorded> = Vec::new();
    let mut ends: HashMap<String, Ended> = HashMap::new();
    let mut labels: BTreeMap<String, Labels> = BTreeMap::new();
    let mut jobs: HashMap<String, String> = HashMap::new();
    for e in events {
        let kind = str_of(&e.payload, "type").unwrap_or("");
        let at = time_of(e.time.as_deref());
        match kind {
            "permit_granted" => {
                let p = &e.payload["permit"];
                let (Some(host), Some(action), Some(at)) = (
                    str_of(p, "host_id"),
                    str_of(p, "action").and_then(action_of),
                    time_of(str_of(p, "granted_at")).or(at),
                ) else {
                    continue;
                };
                let l: Labels = p
                    .get("labels")
                    .and_then(|l| serde_json::from_value(l.clone()).ok())
                    .unwrap_or_default();
                labels.insert(host.to_owned(), l);
                let job = str_of(p, "job").map(str::to_owned);
                if let Some(j) = &job {
                    jobs.insert(host.to_owned(), j.clone());
                }
                requests.push(Recorded {
                    id: e.id,
                    at,
                    host: host.to_owned(),
                    action,
                    job,
                    reason: str_of(p, "reason").unwrap_or("").to_owned(),
                    decided: Decided::Granted,
                    count: 1,
                    permit_id: str_of(p, "permit_id").map(str::to_owned),
                });
            }
            "denied" => {
                let host = str_of(&e.payload, "host_id").or(e.host_id.as_deref());
                let (Some(host), Some(action), Some(at)) =
                    (host, str_of(&e.payload, "action").and_then(action_of), at)
                else {
                    continue;
                };
                let rule = e
                    .payload
                    .get("denial")
                    .and_then(|d| str_of(d, "reason"))
                    .unwrap_or("unknown")
                    .to_owned();
                labels.entry(host.to_owned()).or_default();
                requests.push(Recorded {
                    id: e.id,
                    at,
                    host: host.to_owned(),
                    action,
                    job: None,
                    reason: "replayed denial sample".to_owned(),
                    decided: Decided::Denied(rule),
                    count: e
                        .payload
                        .get("count")
                        .and_then(serde_json::Value::as_u64)
                        .unwrap_or(1),
                    permit_id: None,
                });
            }
            "permit_ended" => {
                if let (Some(id), Some(state), Some(at)) = (
                    str_of(&e.payload, "permit_id"),
                    str_of(&e.payload, "state"),
                    time_of(str_of(&e.payload, "at")).or(at),
                ) {
                    ends.insert(
                        id.to_owned(),
                        Ended {
                            at,
                            state: state.to_owned(),
                        },
                    );
                }
            }
            _ => {}
        }
    }
    if requests.is_empty() {
        return Err(SimError::Usage(format!(
            "{}: no grant or denial in this history: nothing to replay",
            path.display()
        )));
    }
    requests.sort_by(|a, b| a.at.cmp(&b.at).then(a.id.cmp(&b.id)));
    let first = requests[0].at;

    // The median recorded length of a permit, per action.
    let median = |action: Action| -> Duration {
        let mut lens: Vec<Duration> = requests
            .iter()
            .filter(|r| r.action == action)
            .filter_map(|r| {
                let end = ends.get(r.permit_id.as_deref()?)?;
                end.at.duration_since(r.at).ok()
            })
            .collect();
        lens.sort();
        lens.get(lens.len() / 2)
            .copied()
            .unwrap_or(Duration::from_secs(60))
    };
    let medians = [
        (Action::RestartJob, median(Action::RestartJob)),
        (Action::RebootHost, median(Action::RebootHost)),
    ];

    // The fleet: named hosts, then healthy fillers.
    let named = labels.len();
    // Each host's labels are those of its last grant.
    let mut fleet: Vec<(HostId, Labels)> = Vec::new();
    for (h, l) in &labels {
        let id = HostId::new(h)
            .map_err(|e| SimError::Usage(format!("{}: host {h:?}: {e}", path.display())))?;
        fleet.push((id, l.clone()));
    }
    for i in named..fleet_size {
        if let Ok(id) = HostId::new(format!("replay-fill-{i:06}")) {
            fleet.push((id, Labels::new()));
        }
    }
    let index: HashMap<String, usize> = fleet
        .iter()
        .enumerate()
        .map(|(i, (h, _))| (h.as_str().to_owned(), i))
        .collect();

    let start = first
        .checked_sub(config.fleet.warmup + Duration::from_secs(1))
        .unwrap_or(first);
    let mut engine = Engine::new(config.clone(), start);
    let hb_every = config.fleet.heartbeat_interval.max(Duration::from_secs(1));
    let gap_step = (config.fleet.host_ttl / 2).max(hb_every);
    // Per host: reporting a problem since; the candidate's active permit
    // (and when it ends, how).
    let mut sick: Vec<Option<SystemTime>> = vec![None; fleet.len()];
    let mut held: Vec<Option<(PermitRef, SystemTime, Outcome)>> = vec![None; fleet.len()];
    let mut recorded_success: Vec<SystemTime> = Vec::new();
    let mut successes: Vec<(SystemTime, usize)> = requests
        .iter()
        .filter_map(|r| {
            let end = ends.get(r.permit_id.as_deref()?)?;
            (end.state == "succeeded").then(|| (end.at, index[&r.host]))
        })
        .collect();
    successes.sort();
    let mut next_success = 0;
    let mut last_hb: Option<SystemTime> = None;

    let heartbeat = |engine: &mut Engine,
                     i: usize,
                     now: SystemTime,
                     sick: &[Option<SystemTime>],
                     held: &[Option<(PermitRef, SystemTime, Outcome)>]| {
        let (host, l) = &fleet[i];
        let job = jobs
            .get(host.as_str())
            .cloned()
            .unwrap_or_else(|| "job".to_owned());
        engine.heartbeat(
            Heartbeat {
                host: host.clone(),
                labels: l.clone(),
                agent_version: "replay".into(),
                problems: sick[i]
                    .map(|since| Problem {
                        job,
                        detector: "replay".into(),
                        since,
                        detail: "asked for a remediation in the recorded history".into(),
                    })
                    .into_iter()
                    .collect(),
                held_permit: held[i].as_ref().map(|h| h.0.clone()),
                needs_human: None,
                state_error: None,
            },
            now,
        );
    };

    let mut rows = Vec::with_capacity(requests.len());
    for (n, r) in requests.iter().enumerate() {
        let now = r.at;
        let i = index[&r.host];
        // Recorded successes up to now heal their hosts.
        while next_success < successes.len() && successes[next_success].0 <= now {
            let (at, h) = successes[next_success];
            sick[h] = None;
            recorded_success.push(at);
            next_success += 1;
        }
        // The fleet heartbeats through a quiet stretch of the history, so
        // that it is not read as silence; the candidate's permits end on
        // the way, when they do.
        let mut t = last_hb.unwrap_or(now);
        loop {
            let next = (t + gap_step).min(now);
            for (h, slot) in held.iter_mut().enumerate() {
                if let Some((p, until, outcome)) = slot.clone()
                    && until <= next
                {
                    let _ =
                        engine.report_outcome(&fleet[h].0, &p, outcome, "replayed outcome", next);
                    *slot = None;
                }
            }
            if next >= now {
                break;
            }
            for h in 0..fleet.len() {
                heartbeat(&mut engine, h, next, &sick, &held);
            }
            last_hb = Some(next);
            t = next;
        }
        if last_hb.is_none_or(|t| now.duration_since(t).unwrap_or_default() >= hb_every) {
            for h in 0..fleet.len() {
                heartbeat(&mut engine, h, now, &sick, &held);
            }
            last_hb = Some(now);
        }
        if sick[i].is_none() {
            sick[i] = Some(now);
        }
        heartbeat(&mut engine, i, now, &sick, &held);
        engine.tick(now);
        let job = r
            .job
            .clone()
            .or_else(|| jobs.get(&r.host).cloned())
            .unwrap_or_else(|| "job".to_owned());
        let req = PermitRequest {
            request_id: RequestId::new(format!("replay-{n}-{}", r.id))
                .map_err(|e| SimError::Usage(format!("request id: {e}")))?,
            host: fleet[i].0.clone(),
            action: r.action,
            job,
            reason: r.reason.clone(),
            dry_run: false,
        };
        let candidate = match engine.request_permit(req, now) {
            Ok(Decision::Granted { permit: p, .. }) => {
                let pref = PermitRef {
                    id: p.id.clone(),
                    token: p.token,
                };
                let ended = r.permit_id.as_deref().and_then(|id| ends.get(id));
                let (until, outcome) = match ended {
                    Some(e) => (e.at, outcome_of(&e.state)),
                    None => {
                        let len = medians
                            .iter()
                            .find(|m| m.0 == r.action)
                            .map_or(Duration::from_secs(60), |m| m.1);
                        (now + len, Some(Outcome::Succeeded))
                    }
                };
                // An expired or revoked permit gets no outcome: the engine
                // ends it by its TTL.
                if let Some(outcome) = outcome {
                    held[i] = Some((pref, until, outcome));
                }
                Decided::Granted
            }
            Ok(other) => match other.denial() {
                Some(d) => Decided::Denied(d.reason.as_str().to_owned()),
                None => Decided::Granted,
            },
            Err(e) => Decided::Denied(format!("error: {e}")),
        };
        let _ = engine.take_events();
        rows.push(Row {
            id: r.id,
            at: now,
            t: now.duration_since(first).unwrap_or_default().as_secs_f64(),
            host: r.host.clone(),
            action: r.action,
            recorded: r.decided.clone(),
            count: r.count,
            candidate,
        });
    }
    Ok(Replay {
        rows,
        fleet: fleet.len(),
        named,
    })
}

fn outcome_of(state: &str) -> Option<Outcome> {
    match state {
        "succeeded" => Some(Outcome::Succeeded),
        "failed" => Some(Outcome::Failed),
        "aborted" => Some(Outcome::Aborted),
        _ => None,
    }
}

/// The request-by-request table (only the rows that differ when
/// `changes_only`) and the summary.
pub fn render(r: &Replay, changes_only: bool) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "medic-sim replay: {} recorded requests over {} hosts ({} named in the history)",
        r.rows.len(),
        r.fleet,
        r.named
    );
    let _ = writeln!(
        o,
        "\n  {:>9} {:>8}  {:<16} {:<12} {:<26} {:<26}",
        "time", "id", "host", "action", "recorded", "candidate"
    );
    for row in &r.rows {
        let same = row.recorded == row.candidate;
        if changes_only && same {
            continue;
        }
        let recorded = if row.count > 1 {
            format!("{} (x{})", row.recorded.text(), row.count)
        } else {
            row.recorded.text()
        };
        let _ = writeln!(
            o,
            "  {:>9} {:>8}  {:<16} {:<12} {:<26} {:<26}{}",
            minutes(row.t),
            row.id,
            row.host,
            row.action.as_str(),
            recorded,
            row.candidate.text(),
            if same { "" } else { "  <- differs" }
        );
    }
    let (g_rec, g_cand) = r.grants();
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "  agree on {} of {} requests; grants: {} recorded, {} under the candidate",
        r.agreeing(),
        r.rows.len(),
        g_rec,
        g_cand
    );
    let only = |f: &dyn Fn(&Row) -> bool| r.rows.iter().filter(|x| f(x)).count();
    let _ = writeln!(
        o,
        "  granted only as recorded: {}; granted only by the candidate: {}",
        only(&|x| x.recorded == Decided::Granted && x.candidate != Decided::Granted),
        only(&|x| x.recorded != Decided::Granted && x.candidate == Decided::Granted)
    );
    let mut by: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for row in &r.rows {
        if let Decided::Denied(rule) = &row.recorded {
            by.entry(rule.clone()).or_default().0 += 1;
        }
        if let Decided::Denied(rule) = &row.candidate {
            by.entry(rule.clone()).or_default().1 += 1;
        }
    }
    if !by.is_empty() {
        let _ = writeln!(o, "  denials by rule (recorded samples / candidate):");
        for (rule, (a, b)) in by {
            let _ = writeln!(o, "    {rule:<22} {a:>6} / {b:<6}");
        }
    }
    o
}
