//! The terminal summary (medic and the legacy script side by side) and the
//! self-contained HTML report with inline SVG charts.

use std::fmt::Write as _;

use std::time::SystemTime;

use medic_policy::DenyReason;
use medic_proto::pb::v1 as pb;

use crate::bench::{BenchResult, Latency, StormResult};
use crate::check::COVERED;
use crate::record::Side;
use crate::run::{BreakerState, RunResult};

/// Scenario seconds as `12m30s`.
pub fn minutes(t: f64) -> String {
    let neg = t < 0.0;
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let s = t.abs().round() as u64;
    let body = if s >= 3600 {
        format!("{}h{:02}m{:02}s", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}m{:02}s", s / 60, s % 60)
    };
    if neg { format!("-{body}") } else { body }
}

/// Undoes the coordinator's clock steps on the times of its history, so
/// that they can be read in scenario time: fed the history in order, it
/// learns each step from its `ClockChecked` record, and takes later times
/// back by the steps seen so far.
#[derive(Clone, Debug, Default)]
pub struct Unstep {
    steps: Vec<medic_policy::ClockStep>,
}

impl Unstep {
    /// Learns from one record of the history.
    pub fn observe(&mut self, event: Option<&medic_policy::Event>) {
        if let Some(medic_policy::Event::ClockChecked {
            step: Some(step), ..
        }) = event
        {
            self.steps.push(*step);
        }
    }

    /// `t`, read on the coordinator's clock, without the steps seen so far.
    pub fn apply(&self, t: SystemTime) -> SystemTime {
        self.steps.iter().rev().fold(t, |t, s| {
            medic_policy::ClockStep {
                forward: !s.forward,
                by: s.by,
            }
            .shift(t)
        })
    }
}

/// How many requests one rule denied, and when (scenario time).
#[derive(Clone, Debug, PartialEq)]
pub struct RuleDenials {
    /// The rule (`breaker_open`, `fleet_cap`...).
    pub rule: String,
    /// Requests it denied (the samples' counts summed).
    pub count: u64,
    /// Hosts it denied.
    pub hosts: usize,
    /// Its first sampled denial (scenario seconds).
    pub first: f64,
    /// Its last sampled denial (scenario seconds).
    pub last: f64,
}

/// Denials per rule from the history's denial samples (each stands for
/// `count` denials), with `t_of` turning their times into scenario time;
/// most denials first.
pub fn denials_by_rule(
    history: &[pb::Event],
    t_of: impl Fn(SystemTime) -> f64,
) -> Vec<RuleDenials> {
    let mut by: std::collections::BTreeMap<
        String,
        (RuleDenials, std::collections::BTreeSet<String>),
    > = std::collections::BTreeMap::new();
    let mut unstep = Unstep::default();
    for e in history {
        if let Some(pb::event::Payload::ClockChecked(_)) = &e.payload {
            unstep.observe(medic_policy::Event::try_from(e.clone()).ok().as_ref());
        }
        let Some(pb::event::Payload::Denied(d)) = &e.payload else {
            continue;
        };
        let rule = d
            .denial
            .as_ref()
            .and_then(|x| DenyReason::try_from(pb::DenyReason::try_from(x.reason).ok()?).ok())
            .map_or_else(|| "unknown".to_owned(), |r| r.as_str().to_owned());
        let t = e
            .time
            .and_then(|t| medic_proto::convert::from_timestamp("time", t).ok())
            .map_or(0.0, |at| t_of(unstep.apply(at)));
        let entry = by.entry(rule.clone()).or_insert_with(|| {
            (
                RuleDenials {
                    rule,
                    count: 0,
                    hosts: 0,
                    first: t,
                    last: t,
                },
                std::collections::BTreeSet::new(),
            )
        });
        entry.0.count += d.count.max(1);
        entry.0.first = entry.0.first.min(t);
        entry.0.last = entry.0.last.max(t);
        entry.1.insert(d.host_id.clone());
    }
    let mut out: Vec<RuleDenials> = by
        .into_values()
        .map(|(mut r, hosts)| {
            r.hosts = hosts.len();
            r
        })
        .collect();
    out.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.rule.cmp(&b.rule)));
    out
}

/// Text with its line breaks and runs of spaces folded into single spaces.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn ms(d: std::time::Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn latency_line(l: &Latency) -> String {
    format!(
        "p50 {}, p90 {}, p99 {}, max {}",
        ms(l.p50),
        ms(l.p90),
        ms(l.p99),
        ms(l.max)
    )
}

fn cap(c: Option<u32>) -> String {
    c.map_or_else(String::new, |c| format!(" (cap {c})"))
}

/// How the run kept time: `virtual time` (every part on one simulated
/// clock), or `real time at 20x` (a child-process or external coordinator).
fn time_base(r: &RunResult) -> String {
    if r.virtual_time {
        "virtual time".to_owned()
    } else {
        format!("real time at {}x", r.speed)
    }
}

/// The terminal summary.
pub fn summary(r: &RunResult) -> String {
    let mut o = String::new();
    let s = &r.scenario;
    let _ = writeln!(
        o,
        "medic-sim: {} (seed {}, {}, {} hosts, {} of scenario time in {:.1}s real)",
        s.name,
        r.seed,
        time_base(r),
        r.storm.as_ref().map_or(s.fleet.hosts, |st| st.hosts),
        minutes(s.duration.secs()),
        r.wall.as_secs_f64()
    );
    let _ = writeln!(o, "  {}", one_line(&s.description));
    if let Some(st) = &r.storm {
        storm_summary(&mut o, st, r);
    } else {
        let (m, l, k) = (&r.medic, &r.legacy, &r.lock);
        let _ = writeln!(o);
        let _ = writeln!(
            o,
            "  {:<40} {:>18} {:>18} {:>18}",
            "", "medic", "legacy script", k.name
        );
        let row = |o: &mut String, name: &str, a: String, b: String, c: String| {
            let _ = writeln!(o, "  {name:<40} {a:>18} {b:>18} {c:>18}");
        };
        row(
            &mut o,
            "restarts performed",
            m.restarts.to_string(),
            "-".into(),
            "-".into(),
        );
        row(
            &mut o,
            "reboots performed",
            m.reboots.to_string(),
            l.reboots.to_string(),
            k.reboots.to_string(),
        );
        row(
            &mut o,
            "most restarts in flight at once",
            format!("{}{}", m.max_restarts_in_flight, cap(r.caps.0)),
            "-".into(),
            "-".into(),
        );
        row(
            &mut o,
            "most reboots in flight at once",
            format!("{}{}", m.max_reboots_in_flight, cap(r.caps.1)),
            l.max_reboots_in_flight.to_string(),
            k.max_reboots_in_flight.to_string(),
        );
        row(
            &mut o,
            "lost capacity (host-minutes stuck/down)",
            format!("{:.0}", m.stuck_host_minutes),
            format!("{:.0}", l.stuck_host_minutes),
            format!("{:.0}", k.stuck_host_minutes),
        );
        row(
            &mut o,
            "longest a host stayed stuck",
            minutes(m.longest_stuck_minutes * 60.0),
            minutes(l.longest_stuck_minutes * 60.0),
            minutes(k.longest_stuck_minutes * 60.0),
        );
        let left = |s: &Side| {
            format!(
                "{} ({})",
                s.left_stuck,
                minutes(s.left_stuck_minutes * 60.0)
            )
        };
        row(
            &mut o,
            "hosts stuck at the end (longest for)",
            left(m),
            left(l),
            left(k),
        );
        if let (Some(md), Some(ld), Some(kd)) = (&m.dependency, &l.dependency, &k.dependency) {
            let _ = writeln!(
                o,
                "  the {} (capacity {:.0} requests/s):",
                md.name, md.capacity
            );
            row(
                &mut o,
                "  minutes it was failing",
                format!("{:.1}", md.down_minutes),
                format!("{:.1}", ld.down_minutes),
                format!("{:.1}", kd.down_minutes),
            );
            row(
                &mut o,
                "  times it failed",
                md.down.len().to_string(),
                ld.down.len().to_string(),
                kd.down.len().to_string(),
            );
            row(
                &mut o,
                "  peak demand (requests/s)",
                format!("{:.0}", md.peak_load),
                format!("{:.0}", ld.peak_load),
                format!("{:.0}", kd.peak_load),
            );
            let rec = |d: &crate::model::DependencyOutcome| {
                d.full_recovery_minutes
                    .map_or_else(|| "not in the run".to_owned(), |x| minutes(x * 60.0))
            };
            row(&mut o, "  time to full recovery", rec(md), rec(ld), rec(kd));
        }
        if !r.denials_by_rule.is_empty() {
            let _ = writeln!(o);
            let _ = writeln!(o, "  denials by rule (scenario time):");
            for d in &r.denials_by_rule {
                let _ = writeln!(
                    o,
                    "    {:<22} {:>7} to {:>4} host(s), {} to {}",
                    d.rule,
                    d.count,
                    d.hosts,
                    minutes(d.first),
                    minutes(d.last)
                );
            }
        }
        let _ = writeln!(o);
        let n = |state| r.breakers.iter().filter(|b| b.state == state).count();
        let _ = writeln!(
            o,
            "  breaker: opened {}x, half-open {}x, closed {}x{}",
            n(BreakerState::Open),
            n(BreakerState::HalfOpen),
            n(BreakerState::Closed),
            r.breakers
                .iter()
                .find(|b| b.open)
                .map_or_else(String::new, |b| format!(
                    " (first opened at {}: {} {})",
                    minutes(b.t),
                    b.scope,
                    b.reason
                ))
        );
        for b in &r.breakers {
            let _ = writeln!(
                o,
                "    {} {} {}{} by {}",
                minutes(b.t),
                b.scope,
                b.state.as_str(),
                b.cause
                    .as_ref()
                    .map_or_else(String::new, |c| format!(" ({c})")),
                b.actor
            );
        }
        if r.breakers
            .iter()
            .any(|b| b.state == BreakerState::HalfOpen && b.actor != "coordinator")
        {
            let _ = writeln!(
                o,
                "  granted after reset while half-open: {} (budget {})",
                r.half_open_grants_after_reset, r.half_open_probes
            );
        }
        let _ = writeln!(
            o,
            "  grants {}, denial samples {}, pauses {}, quarantines {}, permits expired without an outcome {}, coordinator killed {}x",
            r.grants, r.denials, r.pauses, r.quarantines, r.expired, r.coordinator_kills
        );
    }
    let _ = writeln!(o);
    let v = &r.verdict;
    let _ = writeln!(
        o,
        "  invariants: {}",
        if v.ok() { "all hold" } else { "VIOLATED" }
    );
    for (i, what) in COVERED {
        let n = v.checked.get(i).copied().unwrap_or(0);
        let bad = v.of(i);
        let _ = writeln!(
            o,
            "    {i} {:<4} {what} ({n} checked{})",
            if bad == 0 { "ok" } else { "FAIL" },
            if bad == 0 {
                String::new()
            } else {
                format!(", {bad} violation(s)")
            }
        );
    }
    if !v.ok() {
        let _ = writeln!(o, "\n  first violations:");
        o.push_str(&v.render(&r.history, r.origin, r.speed, 5));
    }
    o
}

fn storm_summary(o: &mut String, st: &StormResult, r: &RunResult) {
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "  {} hosts asked for a restart permit within {} over {} connections",
        st.hosts,
        humantime::format_duration(st.within),
        st.connections
    );
    let _ = writeln!(
        o,
        "  answered {} ({} granted, {} denied), {} errors; all answered {:.3}s after the first request (bound {}): {}",
        st.answered,
        st.granted,
        st.denied,
        st.errors,
        st.all_answered_after.as_secs_f64(),
        humantime::format_duration(st.answer_within),
        if st.ok() { "ok" } else { "MISSED" }
    );
    let _ = writeln!(o, "  latency: {}", latency_line(&st.latency));
    let _ = writeln!(
        o,
        "  restart cap {} ; grants in the history {}",
        r.caps.0.map_or_else(|| "-".to_owned(), |c| c.to_string()),
        r.grants
    );
}

/// The bench's report.
pub fn bench_summary(b: &BenchResult) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "medic-sim bench: {} hosts, {} concurrent agents (one connection each)",
        b.hosts, b.agents
    );
    let _ = writeln!(
        o,
        "  {:<34} {:>10} {:>9}  latency",
        "phase", "calls/s", "of ceil."
    );
    for p in [&b.ceiling, &b.decisions] {
        let _ = writeln!(
            o,
            "  {:<34} {:>10.0} {:>9.2}  {}{}",
            p.name,
            p.rate,
            p.rate / b.ceiling.rate.max(1e-9),
            latency_line(&p.latency),
            if p.errors > 0 {
                format!(" ({} errors)", p.errors)
            } else {
                String::new()
            }
        );
    }
    let _ = writeln!(
        o,
        "  decisions: {} ({} granted and reported done at once)",
        b.decisions.calls, b.decisions.granted
    );
    let _ = writeln!(
        o,
        "  invariants over the bench's history: {}",
        if b.verdict.ok() {
            "all hold".to_owned()
        } else {
            format!("{} violation(s)", b.verdict.violations.len())
        }
    );
    o
}

// === HTML ===

/// `s` escaped for HTML text and attributes.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// One line of a chart.
#[derive(Debug)]
struct Line {
    name: String,
    color: &'static str,
    dashed: bool,
    points: Vec<(f64, f64)>,
}

const W: f64 = 760.0;
const H: f64 = 240.0;
const ML: f64 = 56.0;
const MR: f64 = 16.0;
const MT: f64 = 16.0;
const MB: f64 = 34.0;

/// The least round number (1, 2, 2.5 or 5 times a power of ten) at least `v`.
pub(crate) fn nice_max(v: f64) -> f64 {
    if v <= 1.0 {
        return 1.0;
    }
    let mag = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if m * mag >= v {
            return m * mag;
        }
    }
    10.0 * mag
}

fn chart(id: &str, title: &str, y_label: &str, x_max: f64, lines: &[Line]) -> String {
    let y_max = nice_max(
        lines
            .iter()
            .flat_map(|l| l.points.iter().map(|p| p.1))
            .fold(0.0, f64::max),
    );
    let x_max = x_max.max(1.0);
    let px = |x: f64| ML + (x / x_max) * (W - ML - MR);
    let py = |y: f64| MT + (1.0 - y / y_max) * (H - MT - MB);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<figure><figcaption>{}</figcaption><svg class="chart" id="{id}" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" aria-label="{}">"#,
        esc(title),
        esc(title)
    );
    // Grid and axes.
    // Whole-number ticks where the range allows.
    let div = if y_max >= 5.0 && (y_max / 4.0).fract() != 0.0 {
        5
    } else {
        4
    };
    for i in 0..=div {
        let y = y_max * f64::from(i) / f64::from(div);
        let _ = write!(
            s,
            r##"<line x1="{ML}" x2="{}" y1="{:.1}" y2="{:.1}" stroke="#e3e3e3"/><text x="{}" y="{:.1}" font-size="11" text-anchor="end" fill="#555">{}</text>"##,
            W - MR,
            py(y),
            py(y),
            ML - 6.0,
            py(y) + 4.0,
            if y_max <= 4.0 {
                format!("{y:.1}")
            } else {
                format!("{y:.0}")
            }
        );
    }
    for i in 0..=6 {
        let x = x_max * f64::from(i) / 6.0;
        let _ = write!(
            s,
            r##"<text x="{:.1}" y="{}" font-size="11" text-anchor="{}" fill="#555">{}</text>"##,
            px(x),
            H - MB + 16.0,
            if i == 6 { "end" } else { "middle" },
            minutes(x)
        );
    }
    let _ = write!(
        s,
        r##"<line x1="{ML}" x2="{ML}" y1="{MT}" y2="{}" stroke="#888"/><line x1="{ML}" x2="{}" y1="{}" y2="{}" stroke="#888"/><text x="12" y="{}" font-size="11" fill="#555" transform="rotate(-90 12 {})" text-anchor="middle">{}</text>"##,
        H - MB,
        W - MR,
        H - MB,
        H - MB,
        H / 2.0,
        H / 2.0,
        esc(y_label)
    );
    for l in lines {
        if l.points.is_empty() {
            continue;
        }
        let pts: Vec<String> = l
            .points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        let _ = write!(
            s,
            r#"<polyline class="series" data-name="{}" fill="none" stroke="{}" stroke-width="2"{} points="{}"/>"#,
            esc(&l.name),
            l.color,
            if l.dashed {
                r#" stroke-dasharray="6 4""#
            } else {
                ""
            },
            pts.join(" ")
        );
    }
    // Legend.
    let mut x = ML + 8.0;
    for l in lines {
        let _ = write!(
            s,
            r##"<line x1="{x:.1}" x2="{:.1}" y1="{}" y2="{}" stroke="{}" stroke-width="3"{}/><text x="{:.1}" y="{}" font-size="11" fill="#222">{}</text>"##,
            x + 18.0,
            MT + 6.0,
            MT + 6.0,
            l.color,
            if l.dashed {
                r#" stroke-dasharray="4 3""#
            } else {
                ""
            },
            x + 22.0,
            MT + 10.0,
            esc(&l.name)
        );
        #[allow(clippy::cast_precision_loss)]
        let width = 30.0 + 6.5 * l.name.len() as f64;
        x += width;
    }
    s.push_str("</svg></figure>");
    s
}

fn series(side: &Side, f: impl Fn(&crate::record::Sample) -> Option<f64>) -> Vec<(f64, f64)> {
    side.series
        .iter()
        .filter_map(|s| f(s).map(|v| (s.t, v)))
        .collect()
}

#[allow(clippy::cast_precision_loss)]
fn u(v: usize) -> f64 {
    v as f64
}

/// The HTML report: summary, charts, breaker changes, invariants.
pub fn html(r: &RunResult) -> String {
    let s = &r.scenario;
    let x_max = s.duration.secs();
    let (m, l, k) = (&r.medic, &r.legacy, &r.lock);
    let mut charts = String::new();
    if r.storm.is_none() {
        charts.push_str(&chart(
            "stuck",
            "Hosts with a stuck job (or down rebooting)",
            "hosts",
            x_max,
            &[
                Line {
                    name: "medic".into(),
                    color: "#1f77b4",
                    dashed: false,
                    points: series(m, |s| Some(u(s.stuck))),
                },
                Line {
                    name: "legacy script".into(),
                    color: "#d62728",
                    dashed: false,
                    points: series(l, |s| Some(u(s.stuck))),
                },
                Line {
                    name: k.name.clone(),
                    color: "#9467bd",
                    dashed: true,
                    points: series(k, |s| Some(u(s.stuck))),
                },
            ],
        ));
        if let (Some(md), Some(ld), Some(kd)) = (&m.dependency, &l.dependency, &k.dependency) {
            let load = |d: &crate::model::DependencyOutcome| -> Vec<(f64, f64)> {
                d.series.iter().map(|s| (s.t, s.load)).collect()
            };
            charts.push_str(&chart(
                "dependency",
                &format!(
                    "Demand on the {} against its capacity (requests per second)",
                    md.name
                ),
                "requests/s",
                x_max,
                &[
                    Line {
                        name: "medic".into(),
                        color: "#1f77b4",
                        dashed: false,
                        points: load(md),
                    },
                    Line {
                        name: "legacy script".into(),
                        color: "#d62728",
                        dashed: false,
                        points: load(ld),
                    },
                    Line {
                        name: k.name.clone(),
                        color: "#9467bd",
                        dashed: true,
                        points: load(kd),
                    },
                    Line {
                        name: "capacity".into(),
                        color: "#7f7f7f",
                        dashed: true,
                        points: vec![(0.0, md.capacity), (x_max, md.capacity)],
                    },
                ],
            ));
        }
        charts.push_str(&chart(
            "inflight",
            "Remediations in flight against the cap",
            "in flight",
            x_max,
            &[
                Line {
                    name: "medic restarts".into(),
                    color: "#2ca02c",
                    dashed: false,
                    points: series(m, |s| s.coordinator_up.then(|| u(s.restarts_in_flight))),
                },
                Line {
                    name: "restart cap".into(),
                    color: "#2ca02c",
                    dashed: true,
                    points: series(m, |s| s.restart_cap.map(f64::from)),
                },
                Line {
                    name: "medic reboots".into(),
                    color: "#1f77b4",
                    dashed: false,
                    points: series(m, |s| s.coordinator_up.then(|| u(s.reboots_in_flight))),
                },
                Line {
                    name: "reboot cap".into(),
                    color: "#1f77b4",
                    dashed: true,
                    points: series(m, |s| s.reboot_cap.map(f64::from)),
                },
                Line {
                    name: "legacy reboots".into(),
                    color: "#d62728",
                    dashed: false,
                    points: series(l, |s| Some(u(s.reboots_in_flight))),
                },
            ],
        ));
        charts.push_str(&chart(
            "reboots",
            "Cumulative reboots: medic and the legacy script",
            "reboots",
            x_max,
            &[
                Line {
                    name: "medic reboots".into(),
                    color: "#1f77b4",
                    dashed: false,
                    points: series(m, |s| Some(u(s.reboots_total))),
                },
                Line {
                    name: "medic restarts".into(),
                    color: "#2ca02c",
                    dashed: true,
                    points: series(m, |s| Some(u(s.restarts_total))),
                },
                Line {
                    name: "legacy reboots".into(),
                    color: "#d62728",
                    dashed: false,
                    points: series(l, |s| Some(u(s.reboots_total))),
                },
            ],
        ));
        charts.push_str(&chart(
            "breaker",
            "Breaker state (open and half-open breakers) and coordinator availability",
            "count",
            x_max,
            &[
                Line {
                    name: "open breakers".into(),
                    color: "#ff7f0e",
                    dashed: false,
                    points: series(m, |s| Some(u(s.breakers_open.unwrap_or(0)))),
                },
                Line {
                    name: "half-open breakers".into(),
                    color: "#2ca02c",
                    dashed: false,
                    points: series(m, |s| Some(u(s.breakers_half_open.unwrap_or(0)))),
                },
                Line {
                    name: "coordinator down".into(),
                    color: "#7f7f7f",
                    dashed: true,
                    points: series(m, |s| Some(if s.coordinator_up { 0.0 } else { 1.0 })),
                },
            ],
        ));
    }
    let mut body = String::new();
    let _ = write!(
        body,
        "<h1>medic-sim: {}</h1><p class=\"desc\">{}</p><p class=\"meta\">seed {}, {}, {} of scenario time in {:.1} s of real time</p>",
        esc(&s.name),
        esc(&one_line(&s.description)),
        r.seed,
        esc(&time_base(r)),
        minutes(s.duration.secs()),
        r.wall.as_secs_f64()
    );
    let _ = write!(body, "<pre class=\"summary\">{}</pre>", esc(&summary(r)));
    body.push_str(&charts);
    if !r.denials_by_rule.is_empty() {
        body.push_str("<h2>Denials by rule</h2><table><tr><th>rule</th><th>requests denied</th><th>hosts</th><th>first</th><th>last</th></tr>");
        for d in &r.denials_by_rule {
            let _ = write!(
                body,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&d.rule),
                d.count,
                d.hosts,
                minutes(d.first),
                minutes(d.last)
            );
        }
        body.push_str("</table>");
    }
    if !r.breakers.is_empty() {
        body.push_str("<h2>Breaker changes</h2><table><tr><th>time</th><th>change</th><th>scope</th><th>why</th></tr>");
        for b in &r.breakers {
            let _ = write!(
                body,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                minutes(b.t),
                match (b.state, &b.cause) {
                    (BreakerState::Open, Some(c)) => format!("opened ({c})"),
                    (BreakerState::Open, None) => "opened".to_owned(),
                    (BreakerState::HalfOpen, _) => format!("half-open (by {})", esc(&b.actor)),
                    (BreakerState::Closed, _) => "closed".to_owned(),
                },
                esc(&b.scope),
                esc(&b.reason)
            );
        }
        body.push_str("</table>");
    }
    format!(
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>medic-sim: {title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 820px; color: #222; }}
figure {{ margin: 1.5em 0; }} figcaption {{ font-weight: 600; margin-bottom: .3em; }}
pre.summary {{ background: #f6f6f6; padding: 1em; white-space: pre-wrap; font-size: 12px; }}
table {{ border-collapse: collapse; font-size: 13px; }} td, th {{ border: 1px solid #ddd; padding: 3px 8px; text-align: left; }}
.desc {{ font-style: italic; }} .meta {{ color: #666; }}
</style></head><body>
{body}
<script>
// Marks how many charts drew a visible line (read by the report test).
(function () {{
  let drawn = 0;
  for (const svg of document.querySelectorAll("svg.chart")) {{
    let width = 0;
    for (const p of svg.querySelectorAll("polyline.series")) {{
      const b = p.getBBox();
      width = Math.max(width, b.width);
    }}
    svg.dataset.drawnWidth = String(Math.round(width));
    if (width > 0) drawn++;
  }}
  document.body.dataset.chartsDrawn = String(drawn);
}})();
</script>
</body></html>
"#,
        title = esc(&s.name)
    )
}
