//! `medic-sim sweep`: one scenario over a grid of coordinator settings, to
//! see what each point trades: capacity lost to stuck and rebooting hosts
//! against remediations performed. Each `--set KEY=V1,V2,...` names a key
//! of the scenario's `[coordinator]` table as a dotted TOML path
//! (`breaker.unhealthy_percent`, `limits.restart_job.rate.count`); the grid
//! is the cartesian product of the sets. Every point is checked before
//! anything runs: a key the coordinator does not know, or a value it
//! refuses, stops the sweep with an error naming the `--set` at fault.

use std::fmt::Write as _;

use crate::error::SimError;
use crate::report::{esc, minutes, nice_max};
use crate::run::{Options, RunResult};
use crate::scenario::{Scale, Scenario};

/// One `--set`: a dotted key and the values it takes.
#[derive(Clone, Debug, PartialEq)]
pub struct Axis {
    /// The key, as a dotted path inside `[coordinator]`.
    pub key: String,
    /// Its values, in the order given.
    pub values: Vec<toml::Value>,
}

impl Axis {
    /// Parses `KEY=V1,V2,...`. A value is read as TOML (`10`, `0.5`,
    /// `true`, `"2m"`), and as a string when it is not TOML (`2m`).
    pub fn parse(arg: &str) -> Result<Self, SimError> {
        let bad = |why: &str| SimError::Usage(format!("--set {arg:?}: {why}"));
        let (key, values) = arg
            .split_once('=')
            .ok_or_else(|| bad("expected KEY=VALUE[,VALUE...]"))?;
        let key = key.trim();
        if key.is_empty()
            || key
                .split('.')
                .any(|part| part.is_empty() || part.contains(char::is_whitespace))
        {
            return Err(bad(
                "the key must be a dotted path such as breaker.unhealthy_percent",
            ));
        }
        let values: Vec<toml::Value> = values
            .split(',')
            .map(value)
            .collect::<Result<_, _>>()
            .map_err(|v| bad(&format!("empty value in {v:?}")))?;
        Ok(Self {
            key: key.to_owned(),
            values,
        })
    }
}

fn value(raw: &str) -> Result<toml::Value, String> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Err(raw.to_owned());
    }
    let parsed: Result<toml::Table, _> = toml::from_str(&format!("v = {raw}"));
    Ok(parsed
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned())))
}

/// One point of the grid: a value per axis.
pub type Point = Vec<(String, toml::Value)>;

/// The cartesian product of `axes`, the last axis varying fastest.
pub fn grid(axes: &[Axis]) -> Vec<Point> {
    let mut points: Vec<Point> = vec![Vec::new()];
    for axis in axes {
        points = points
            .into_iter()
            .flat_map(|p| {
                axis.values.iter().map(move |v| {
                    let mut p = p.clone();
                    p.push((axis.key.clone(), v.clone()));
                    p
                })
            })
            .collect();
    }
    points
}

/// `key=value` as given on the command line.
pub fn label(point: &Point) -> String {
    point
        .iter()
        .map(|(k, v)| format!("{k}={}", show(v)))
        .collect::<Vec<_>>()
        .join(" ")
}

fn show(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Sets the dotted `key` of `table` to `value`, creating tables on the
/// way; a non-table in the way is an error naming it.
pub fn set(table: &mut toml::Table, key: &str, value: toml::Value) -> Result<(), String> {
    let parts: Vec<&str> = key.split('.').collect();
    let (last, path) = parts
        .split_last()
        .ok_or_else(|| format!("{key}: empty key"))?;
    let mut t = table;
    for (i, part) in path.iter().enumerate() {
        let entry = t
            .entry((*part).to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        t = match entry {
            toml::Value::Table(inner) => inner,
            _ => {
                return Err(format!(
                    "{key}: {} is a value, not a table",
                    parts[..=i].join(".")
                ));
            }
        };
    }
    t.insert((*last).to_owned(), value);
    Ok(())
}

/// `scenario` with `point` applied to its coordinator configuration, and
/// the configuration checked as the coordinator would check it.
pub fn apply(scenario: &Scenario, point: &Point) -> Result<Scenario, SimError> {
    let mut s = scenario.clone();
    for (k, v) in point {
        set(&mut s.coordinator, k, v.clone())
            .map_err(|e| SimError::Config(format!("--set {k}={}: {e}", show(v))))?;
    }
    let dir = tempfile::tempdir()?;
    let text = Scale(1.0).coordinator_toml(&s.coordinator, dir.path());
    if let Err(errs) = medic_coordinator::CoordinatorConfig::from_toml(&text) {
        return Err(SimError::Config(format!(
            "{}: the coordinator refuses it: {errs}",
            point
                .iter()
                .map(|(k, v)| format!("--set {k}={}", show(v)))
                .collect::<Vec<_>>()
                .join(" ")
        )));
    }
    Ok(s)
}

/// What one point of the grid gave.
#[derive(Clone, Debug)]
pub struct PointResult {
    /// The settings.
    pub point: Point,
    /// Host-minutes stuck or down under medic.
    pub lost_host_minutes: f64,
    /// Restarts performed.
    pub restarts: usize,
    /// Reboots performed.
    pub reboots: usize,
    /// Requests denied (all rules).
    pub denials: u64,
    /// Times a breaker opened.
    pub breaker_opens: usize,
    /// Hosts stuck at the end.
    pub left_stuck: usize,
    /// Minutes the shared dependency was failing, in a scenario with one.
    pub dependency_down_minutes: Option<f64>,
    /// Whether every invariant held.
    pub invariants_ok: bool,
}

impl PointResult {
    fn from_run(point: Point, r: &RunResult) -> Self {
        Self {
            point,
            lost_host_minutes: r.medic.stuck_host_minutes,
            restarts: r.medic.restarts,
            reboots: r.medic.reboots,
            denials: r.denials_by_rule.iter().map(|d| d.count).sum(),
            breaker_opens: r.breakers.iter().filter(|b| b.open).count(),
            left_stuck: r.medic.left_stuck,
            dependency_down_minutes: r.medic.dependency.as_ref().map(|d| d.down_minutes),
            invariants_ok: r.verdict.ok(),
        }
    }

    /// Restarts and reboots.
    pub fn remediations(&self) -> usize {
        self.restarts + self.reboots
    }
}

/// A whole sweep.
#[derive(Clone, Debug)]
pub struct SweepResult {
    /// The scenario (short form applied when asked).
    pub scenario: String,
    /// Its seed.
    pub seed: u64,
    /// Scenario time of each run (seconds).
    pub duration: f64,
    /// One per point, in grid order.
    pub points: Vec<PointResult>,
    /// The legacy script over the same world (the same for every point):
    /// host-minutes lost and reboots.
    pub legacy: (f64, usize),
}

/// Runs `scenario` once per point of the grid of `axes`; `progress` hears
/// of each point as it ends. Checks every point before running any.
pub async fn sweep(
    scenario: &Scenario,
    axes: &[Axis],
    opts: &Options,
    mut progress: impl FnMut(usize, usize, &PointResult),
) -> Result<SweepResult, SimError> {
    if axes.is_empty() {
        return Err(SimError::Usage(
            "nothing to sweep: give at least one --set KEY=V1,V2".into(),
        ));
    }
    let points = grid(axes);
    let scenarios: Vec<Scenario> = points
        .iter()
        .map(|p| apply(scenario, p))
        .collect::<Result<_, _>>()?;
    let total = points.len();
    let mut out = Vec::with_capacity(total);
    let mut legacy = (0.0, 0);
    let mut duration = scenario.duration.secs();
    for (i, (point, s)) in points.into_iter().zip(scenarios).enumerate() {
        let r = crate::run::run(s, opts).await?;
        legacy = (r.legacy.stuck_host_minutes, r.legacy.reboots);
        duration = r.scenario.duration.secs();
        let p = PointResult::from_run(point, &r);
        progress(i + 1, total, &p);
        out.push(p);
    }
    Ok(SweepResult {
        scenario: scenario.name.clone(),
        seed: opts.seed,
        duration,
        points: out,
        legacy,
    })
}

/// The terminal table.
pub fn table(r: &SweepResult) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "medic-sim sweep: {} (seed {}, {} of scenario time per point, {} points)",
        r.scenario,
        r.seed,
        minutes(r.duration),
        r.points.len()
    );
    let _ = writeln!(
        o,
        "  legacy script over the same failures: {:.0} host-minutes lost, {} reboots",
        r.legacy.0, r.legacy.1
    );
    let width = r
        .points
        .iter()
        .map(|p| label(&p.point).len())
        .max()
        .unwrap_or(0)
        .max(8);
    let dep = r.points.iter().any(|p| p.dependency_down_minutes.is_some());
    let _ = writeln!(
        o,
        "\n  {:>3} {:<width$} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8} {:>6}{}  invariants",
        "#",
        "settings",
        "lost h-min",
        "remed.",
        "restarts",
        "reboots",
        "denials",
        "breaker",
        "stuck",
        if dep { "  dep. down" } else { "" }
    );
    for (i, p) in r.points.iter().enumerate() {
        let _ = writeln!(
            o,
            "  {:>3} {:<width$} {:>10.0} {:>8} {:>8} {:>8} {:>8} {:>8} {:>6}{}  {}",
            i + 1,
            label(&p.point),
            p.lost_host_minutes,
            p.remediations(),
            p.restarts,
            p.reboots,
            p.denials,
            p.breaker_opens,
            p.left_stuck,
            p.dependency_down_minutes
                .map_or_else(String::new, |d| format!("  {:>9}", minutes(d * 60.0))),
            if p.invariants_ok { "hold" } else { "VIOLATED" }
        );
    }
    let _ = writeln!(
        o,
        "\n  lost h-min: host-minutes stuck or down; remed.: restarts + reboots; breaker: times a breaker opened; stuck: hosts stuck at the end"
    );
    o
}

/// The HTML report: the trade-off plotted (remediations across, capacity
/// lost up), one labelled dot per point, and the table.
pub fn html(r: &SweepResult) -> String {
    const W: f64 = 760.0;
    const H: f64 = 360.0;
    const M: f64 = 56.0;
    #[allow(clippy::cast_precision_loss)]
    let x_max = nice_max(
        r.points
            .iter()
            .map(|p| p.remediations() as f64)
            .fold(1.0, f64::max)
            * 1.05,
    );
    let y_max = nice_max(
        r.points
            .iter()
            .map(|p| p.lost_host_minutes)
            .fold(1.0, f64::max)
            * 1.05,
    );
    let px = |x: f64| M + x / x_max * (W - 2.0 * M);
    let py = |y: f64| H - M - y / y_max * (H - 2.0 * M);
    let tick = |v: f64| {
        if v.fract().abs() < 1e-9 {
            format!("{v:.0}")
        } else {
            format!("{v:.1}")
        }
    };
    let mut svg = String::new();
    let _ = write!(
        svg,
        r##"<svg class="chart" id="tradeoff" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" aria-label="lost capacity against remediations"><line x1="{M}" y1="{}" x2="{}" y2="{}" stroke="#888"/><line x1="{M}" y1="{M}" x2="{M}" y2="{}" stroke="#888"/>"##,
        H - M,
        W - M,
        H - M,
        H - M
    );
    for i in 0..=4 {
        let f = f64::from(i) / 4.0;
        let _ = write!(
            svg,
            r##"<text x="{:.1}" y="{}" font-size="11" text-anchor="middle" fill="#555">{}</text><text x="{}" y="{:.1}" font-size="11" text-anchor="end" fill="#555">{}</text>"##,
            px(x_max * f),
            H - M + 16.0,
            tick(x_max * f),
            M - 6.0,
            py(y_max * f) + 4.0,
            tick(y_max * f)
        );
    }
    let _ = write!(
        svg,
        r##"<text x="{}" y="{}" font-size="12" text-anchor="middle" fill="#222">remediations (restarts + reboots)</text><text x="14" y="{}" font-size="12" text-anchor="middle" fill="#222" transform="rotate(-90 14 {})">host-minutes of lost capacity</text>"##,
        W / 2.0,
        H - 14.0,
        H / 2.0,
        H / 2.0
    );
    // Points that fall on the same spot share one label.
    let mut labels: Vec<((i64, i64), Vec<usize>)> = Vec::new();
    for (i, p) in r.points.iter().enumerate() {
        #[allow(clippy::cast_precision_loss)]
        let (x, y) = (px(p.remediations() as f64), py(p.lost_host_minutes));
        let _ = write!(
            svg,
            r##"<circle class="point" cx="{x:.1}" cy="{y:.1}" r="5" fill="{}"><title>#{} {}</title></circle>"##,
            if p.invariants_ok {
                "#1f77b4"
            } else {
                "#d62728"
            },
            i + 1,
            esc(&label(&p.point)),
        );
        #[allow(clippy::cast_possible_truncation)]
        let key = ((x / 12.0).round() as i64, (y / 12.0).round() as i64);
        match labels.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => v.push(i + 1),
            None => labels.push((key, vec![i + 1])),
        }
    }
    for ((kx, ky), numbers) in &labels {
        #[allow(clippy::cast_precision_loss)]
        let (x, y) = (*kx as f64 * 12.0, *ky as f64 * 12.0);
        let text = numbers
            .iter()
            .map(|n| format!("#{n}"))
            .collect::<Vec<_>>()
            .join(" ");
        let _ = write!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" font-size="11" fill="#333">{}</text>"##,
            x + 8.0,
            y - 8.0,
            esc(&text)
        );
    }
    svg.push_str("</svg>");
    format!(
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>medic-sim sweep: {name}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 820px; color: #222; }}
pre {{ background: #f6f6f6; padding: 1em; white-space: pre; overflow-x: auto; font-size: 12px; }}
</style></head><body>
<h1>medic-sim sweep: {name}</h1>
<p>Each dot is one point of the grid (numbered as in the table below): what it cost in capacity (hosts stuck or down) against how much it remediated. Lower is better on both; red dots broke an invariant.</p>
<figure><figcaption>Lost capacity against remediations</figcaption>{svg}</figure>
<pre>{table}</pre>
</body></html>
"#,
        name = esc(&r.scenario),
        table = esc(&table(r))
    )
}
