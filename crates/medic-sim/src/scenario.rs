//! Scenario files: the fleet, its jobs' failure processes, incidents on a
//! timeline, the coordinator's configuration and the run's length, all in
//! *scenario time* (what the fleet would live through). A run on virtual
//! time uses them as they are; a run on real time (a child-process or
//! external coordinator, the storm) divides every duration by its speed
//! factor before anything waits on it (see [`Scale`]).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::error::SimError;

/// A duration written as humantime text (`"20m"`, `"1h 30m"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s)
            .map(Dur)
            .map_err(|e| serde::de::Error::custom(format!("invalid duration {s:?}: {e}")))
    }
}

impl Dur {
    /// Seconds, as scenario time is kept.
    pub fn secs(self) -> f64 {
        self.0.as_secs_f64()
    }
}

/// A random duration drawn uniformly from `[min, max]`.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Span {
    /// Shortest.
    pub min: Dur,
    /// Longest.
    pub max: Dur,
}

/// One scenario file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Its name (`dependency-outage`).
    pub name: String,
    /// What it shows, in a sentence or two (printed in the report).
    pub description: String,
    /// How long the fleet runs, in scenario time.
    pub duration: Dur,
    /// Scenario seconds per real second on real time, unless `--speed`
    /// says otherwise (a run on virtual time ignores it).
    #[serde(default = "default_speed")]
    pub speed: f64,
    /// The fleet.
    pub fleet: Fleet,
    /// The jobs' own failures.
    #[serde(default)]
    pub jobs: Jobs,
    /// Agent settings (scenario time).
    #[serde(default)]
    pub agent: AgentSettings,
    /// The legacy reboot script's settings.
    #[serde(default)]
    pub legacy: Legacy,
    /// A shared dependency with a capacity (the database), for the
    /// cascade: remediations reconnect to it in bursts.
    pub dependency: Option<DependencySpec>,
    /// Incidents on the timeline.
    #[serde(default)]
    pub incidents: Vec<Incident>,
    /// A permit storm instead of a fleet timeline.
    pub storm: Option<Storm>,
    /// The coordinator's configuration (a `coordinator.toml`), in scenario
    /// time. Listen addresses and the state directory are the simulator's.
    #[serde(default)]
    pub coordinator: toml::Table,
    /// What `--short` changes, for CI.
    #[serde(default)]
    pub short: Short,
}

fn default_speed() -> f64 {
    20.0
}

/// The fleet: hosts spread evenly over racks, racks over zones.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fleet {
    /// How many hosts.
    pub hosts: usize,
    /// How many racks (label `rack=r00`...).
    #[serde(default = "default_racks")]
    pub racks: usize,
    /// How many zones (label `zone=z0`...); rack `i` is in zone `i % zones`.
    #[serde(default = "default_zones")]
    pub zones: usize,
    /// How long a reboot keeps a host down (and its agent silent).
    #[serde(default = "default_reboot_time")]
    pub reboot_time: Span,
    /// How long restarting a job takes.
    #[serde(default = "default_restart_time")]
    pub restart_time: Span,
}

fn default_racks() -> usize {
    10
}
fn default_zones() -> usize {
    2
}
fn default_reboot_time() -> Span {
    Span {
        min: Dur(Duration::from_secs(120)),
        max: Dur(Duration::from_secs(300)),
    }
}
fn default_restart_time() -> Span {
    Span {
        min: Dur(Duration::from_secs(5)),
        max: Dur(Duration::from_secs(20)),
    }
}

/// Each host's job fails on its own now and then (a Poisson process); a
/// restart or a reboot clears such a local fault with some probability.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Jobs {
    /// Local faults per host per hour (at the start, with a ramp).
    pub failure_rate_per_hour: f64,
    /// A slow burn: the rate climbs linearly from `failure_rate_per_hour`
    /// at the start to this at the end of the run.
    pub failure_rate_per_hour_at_end: Option<f64>,
    /// Probability that a restart clears a local fault.
    pub restart_fixes: f64,
    /// Probability that a reboot clears a local fault.
    pub reboot_fixes: f64,
}

impl Default for Jobs {
    fn default() -> Self {
        Self {
            failure_rate_per_hour: 0.01,
            failure_rate_per_hour_at_end: None,
            restart_fixes: 0.7,
            reboot_fixes: 0.95,
        }
    }
}

/// The simulated agents' settings, in scenario time (defaults as
/// `agent.toml`'s).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentSettings {
    /// How often the job is checked.
    pub check_interval: Dur,
    /// Heartbeat interval until the coordinator says otherwise.
    pub heartbeat_interval: Dur,
    /// Positive checks before a job counts as stuck.
    pub confirm: u32,
    /// Failed restarts before a reboot is asked for.
    pub reboot_after_failed_restarts: u32,
    /// Failed reboots before the agent asks for a human.
    pub give_up_after_failed_reboots: u32,
    /// How long a restarted job has to verify healthy.
    pub verify_timeout: Dur,
    /// Least time a permit must have left before an irreversible step.
    pub safety_margin: Dur,
    /// How long a fixed job must stay healthy before the outcome is
    /// SUCCEEDED (the permit is held meanwhile).
    pub probation: Dur,
    /// A job whose process started less than this long ago is starting,
    /// not stuck (the agent's `start_grace`; zero: off).
    pub start_grace: Dur,
}

impl Default for AgentSettings {
    fn default() -> Self {
        Self {
            check_interval: Dur(Duration::from_secs(10)),
            heartbeat_interval: Dur(Duration::from_secs(10)),
            confirm: 3,
            reboot_after_failed_restarts: 2,
            give_up_after_failed_reboots: 1,
            verify_timeout: Dur(Duration::from_secs(120)),
            safety_margin: Dur(Duration::from_secs(30)),
            probation: Dur(Duration::from_secs(300)),
            start_grace: Dur(Duration::ZERO),
        }
    }
}

/// The reboot script medic replaces: every `interval`, every host whose job
/// looks stuck reboots, with no coordination at all.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Legacy {
    /// How often the cron job runs.
    pub interval: Dur,
}

impl Default for Legacy {
    fn default() -> Self {
        Self {
            interval: Dur(Duration::from_secs(60)),
        }
    }
}

/// A dependency the jobs share, with a capacity. Every connected job sends
/// it `steady_load` requests per second; a job that just (re)connected (its
/// restart, or its host's reboot, ended) sends `reconnect_load` for
/// `reconnect_for` (connection set-up, cold caches, backlog). While the
/// demand exceeds `capacity` it fails, and it recovers only once the demand
/// has stayed within capacity for `recover_after`: a metastable failure,
/// kept going by the load of the remediations themselves. While it fails,
/// the jobs that use it are stuck, and nothing done on a host fixes them.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DependencySpec {
    /// Its name, for the report (`database`).
    #[serde(default = "default_dependency_name")]
    pub name: String,
    /// Requests per second it can serve.
    pub capacity: f64,
    /// Requests per second of a connected job.
    #[serde(default = "default_steady_load")]
    pub steady_load: f64,
    /// Requests per second of a job in its first `reconnect_for`.
    pub reconnect_load: f64,
    /// How long a reconnecting job's burst lasts.
    pub reconnect_for: Dur,
    /// How long the demand must stay within capacity before it recovers.
    pub recover_after: Dur,
    /// Fraction of the hosts whose job uses it, in (0, 1].
    #[serde(default = "default_share")]
    pub share: f64,
}

fn default_dependency_name() -> String {
    "database".to_owned()
}
fn default_steady_load() -> f64 {
    1.0
}
fn default_share() -> f64 {
    1.0
}

/// Something that happens to the fleet.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Incident {
    /// A shared dependency fails: `share` of the hosts' jobs stick from
    /// `at` for `duration`, then recover by themselves. Nothing done on a
    /// host fixes them.
    Dependency {
        /// When it starts.
        at: Dur,
        /// How long it lasts.
        duration: Dur,
        /// Fraction of hosts affected, in (0, 1].
        share: f64,
    },
    /// Every host of one rack sticks (its switch), fixed only when the
    /// switch is.
    Rack {
        /// When it starts.
        at: Dur,
        /// How long it lasts.
        duration: Dur,
        /// The rack (`r03`).
        rack: String,
    },
    /// The scenario's `[dependency]` fails from `at` for `duration`
    /// whatever its load; afterwards it recovers like an overloaded one,
    /// once its demand has stayed within capacity for `recover_after`.
    DependencyBlip {
        /// When it starts.
        at: Dur,
        /// How long it is down for sure.
        duration: Dur,
    },
    /// Every host of one zone sticks (its network, its power), fixed only
    /// when the zone is.
    Zone {
        /// When it starts.
        at: Dur,
        /// How long it lasts.
        duration: Dur,
        /// The zone (`z1`).
        zone: String,
    },
    /// A rolling deploy: every job restarts once on purpose, one host after
    /// the other over `duration`, and takes `start_time` to come back
    /// (its detectors fire meanwhile). Remediation should not pile on.
    Deploy {
        /// When it starts.
        at: Dur,
        /// How long the whole fleet takes.
        duration: Dur,
        /// How long a job takes to start again.
        start_time: Span,
    },
    /// The coordinator's wall clock steps (`forward` or `back`, exactly
    /// one), its boot clock does not: what a bad NTP server or an operator
    /// setting the time does.
    ClockStep {
        /// When.
        at: Dur,
        /// Steps it ahead by this much.
        #[serde(default)]
        forward: Option<Dur>,
        /// Steps it back by this much.
        #[serde(default)]
        back: Option<Dur>,
    },
    /// A few hosts fail again `refail_after` each fix.
    Flapping {
        /// When it starts.
        at: Dur,
        /// How long the hosts keep flapping.
        duration: Dur,
        /// How many hosts.
        hosts: usize,
        /// How soon after a fix the job sticks again.
        refail_after: Dur,
        /// Pick them inside this zone only.
        #[serde(default)]
        zone: Option<String>,
    },
    /// `share` of the agents cannot reach the coordinator.
    Partition {
        /// When it starts.
        at: Dur,
        /// How long it lasts.
        duration: Dur,
        /// Fraction of hosts cut off, in (0, 1].
        share: f64,
    },
    /// An operator resets every open breaker (`Admin.ResetBreaker`, as
    /// `medicctl breaker reset` does): each goes half-open and lets probe
    /// permits through.
    BreakerReset {
        /// When.
        at: Dur,
        /// Why (the operator's words, in the history).
        #[serde(default = "default_reset_reason")]
        reason: String,
    },
    /// The coordinator is killed (SIGKILL: no drain, no clean close) and
    /// started again on the same state after `down_for`.
    CoordinatorCrash {
        /// When it is killed.
        at: Dur,
        /// How long it stays down.
        down_for: Dur,
    },
    /// Agents die between a grant and its report; some rebooting hosts
    /// never come back.
    AgentCrash {
        /// When crashes start.
        at: Dur,
        /// How long they go on.
        duration: Dur,
        /// Probability that an agent dies right after acting on a grant,
        /// before reporting.
        after_grant: f64,
        /// How long a dead agent stays down before its supervisor restarts
        /// it.
        back_after: Dur,
        /// Probability that a rebooting host never comes back.
        never_back: f64,
    },
}

/// A permit storm: `hosts` hosts ask for a permit within `within`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Storm {
    /// How many hosts ask.
    pub hosts: usize,
    /// Over how long the requests are sent (real time).
    pub within: Dur,
    /// Every request must be answered this soon after the first was sent
    /// (real time).
    pub answer_within: Dur,
    /// Client connections the hosts' requests share.
    #[serde(default = "default_connections")]
    pub connections: usize,
}

fn default_reset_reason() -> String {
    "operator: the cause is fixed".to_owned()
}

fn default_connections() -> usize {
    64
}

/// What `--short` changes.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Short {
    /// Fewer hosts.
    pub hosts: Option<usize>,
    /// A higher speed.
    pub speed: Option<f64>,
    /// A shorter run.
    pub duration: Option<Dur>,
    /// A smaller storm.
    pub storm_hosts: Option<usize>,
}

impl Scenario {
    /// Parses and checks a scenario.
    pub fn from_toml(text: &str) -> Result<Self, SimError> {
        let s: Scenario = toml::from_str(text).map_err(|e| SimError::Scenario(e.to_string()))?;
        s.validate()?;
        Ok(s)
    }

    /// Reads a scenario file, or a built-in one by name (`steady`).
    pub fn load(name_or_path: &str) -> Result<Self, SimError> {
        if let Some(text) = builtin(name_or_path) {
            return Self::from_toml(text);
        }
        let text = std::fs::read_to_string(Path::new(name_or_path)).map_err(|e| {
            SimError::Scenario(format!(
                "{name_or_path}: not a built-in scenario ({}) and not a readable file: {e}",
                BUILTIN
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
        Self::from_toml(&text)
    }

    /// The short form CI runs.
    #[must_use]
    pub fn shortened(mut self) -> Self {
        if let Some(h) = self.short.hosts {
            self.fleet.hosts = h;
        }
        if let Some(s) = self.short.speed {
            self.speed = s;
        }
        if let Some(d) = self.short.duration {
            self.duration = d;
        }
        if let (Some(h), Some(storm)) = (self.short.storm_hosts, self.storm.as_mut()) {
            storm.hosts = h;
        }
        self
    }

    fn validate(&self) -> Result<(), SimError> {
        let mut errs = Vec::new();
        if self.fleet.hosts == 0 {
            errs.push("fleet.hosts: must be at least 1".to_owned());
        }
        if self.fleet.racks == 0 || self.fleet.zones == 0 {
            errs.push("fleet.racks, fleet.zones: must be at least 1".to_owned());
        }
        if self.speed.is_nan() || self.speed <= 0.0 {
            errs.push(format!("speed: must be positive, got {}", self.speed));
        }
        for (name, p) in [
            ("jobs.restart_fixes", self.jobs.restart_fixes),
            ("jobs.reboot_fixes", self.jobs.reboot_fixes),
        ] {
            if !(0.0..=1.0).contains(&p) {
                errs.push(format!("{name}: must be in [0, 1], got {p}"));
            }
        }
        if let Some(r) = self.jobs.failure_rate_per_hour_at_end
            && !(r >= 0.0 && r.is_finite())
        {
            errs.push(format!(
                "jobs.failure_rate_per_hour_at_end: must be a rate of 0 or more, got {r}"
            ));
        }
        if let Some(d) = &self.dependency {
            for (name, v) in [
                ("dependency.capacity", d.capacity),
                ("dependency.steady_load", d.steady_load),
                ("dependency.reconnect_load", d.reconnect_load),
            ] {
                if !(v >= 0.0 && v.is_finite()) {
                    errs.push(format!("{name}: must be 0 or more, got {v}"));
                }
            }
            if d.capacity <= 0.0 {
                errs.push(format!(
                    "dependency.capacity: must be positive, got {}",
                    d.capacity
                ));
            }
            if !(d.share > 0.0 && d.share <= 1.0) {
                errs.push(format!(
                    "dependency.share: must be in (0, 1], got {}",
                    d.share
                ));
            }
        }
        let zones: Vec<String> = (0..self.fleet.zones.max(1))
            .map(|z| format!("z{z}"))
            .collect();
        for (i, inc) in self.incidents.iter().enumerate() {
            match inc {
                Incident::ClockStep { forward, back, .. }
                    if forward.is_some() == back.is_some() =>
                {
                    errs.push(format!(
                        "incidents[{i}]: a clock-step needs exactly one of forward and back"
                    ));
                }
                Incident::DependencyBlip { .. } if self.dependency.is_none() => errs.push(format!(
                    "incidents[{i}]: a dependency-blip needs a [dependency] section (its capacity)"
                )),
                Incident::Zone { zone, .. }
                | Incident::Flapping {
                    zone: Some(zone), ..
                } if !zones.contains(zone) => errs.push(format!(
                    "incidents[{i}].zone: {zone:?} is not a zone of this fleet ({})",
                    zones.join(", ")
                )),
                _ => {}
            }
            let share = match inc {
                Incident::Dependency { share, .. } | Incident::Partition { share, .. } => {
                    Some(*share)
                }
                Incident::AgentCrash {
                    after_grant,
                    never_back,
                    ..
                } => {
                    if !(0.0..=1.0).contains(after_grant) || !(0.0..=1.0).contains(never_back) {
                        errs.push(format!("incidents[{i}]: probabilities must be in [0, 1]"));
                    }
                    None
                }
                _ => None,
            };
            if let Some(s) = share
                && !(s > 0.0 && s <= 1.0)
            {
                errs.push(format!("incidents[{i}].share: must be in (0, 1], got {s}"));
            }
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(SimError::Scenario(errs.join("; ")))
        }
    }

    /// The coordinator incidents ask for a coordinator that can be killed.
    pub fn crashes_coordinator(&self) -> bool {
        self.incidents
            .iter()
            .any(|i| matches!(i, Incident::CoordinatorCrash { .. }))
    }

    /// Whether the coordinator's clock is stepped.
    pub fn steps_clock(&self) -> bool {
        self.incidents
            .iter()
            .any(|i| matches!(i, Incident::ClockStep { .. }))
    }

    /// Whether some agents are cut off at some point.
    pub fn partitions(&self) -> bool {
        self.incidents
            .iter()
            .any(|i| matches!(i, Incident::Partition { .. }))
    }
}

// === Time scaling ===

/// How scenario time maps to real time, for a run on real time (a run on
/// virtual time has a scale of 1): every duration is divided by `speed`
/// before anything waits on it. The coordinator's whole config
/// (every humantime value: heartbeat interval, TTLs, cooldowns, rate
/// windows, breaker windows...), the agents' intervals, the incidents'
/// times, reboots and restarts are all scaled the same way, so the fleet
/// lives through the scenario's minutes in seconds. Rates that are counts
/// per window (`rate.count` per `rate.per`) stay right because the window
/// is scaled; the coordinator's per-caller admission limit (calls per real
/// second) is multiplied by `speed` instead.
///
/// What does not scale on real time: constants inside the agent that are
/// not configuration (its 1 s–5 min backoff after coordinator errors, 60 s
/// idle wait after a denial without `retry_after`, 5 min outcome-report
/// retries) and RPC latency. They run at real speed, so they look `speed`
/// times longer in the report's scenario time. On virtual time nothing is
/// scaled and all of them are in scenario time.
#[derive(Clone, Copy, Debug)]
pub struct Scale(pub f64);

impl Scale {
    /// A scenario duration as real time (at least 1 ms).
    pub fn real(self, d: Duration) -> Duration {
        d.div_f64(self.0).max(Duration::from_millis(1))
    }

    /// Scenario seconds as real time.
    pub fn real_secs(self, s: f64) -> Duration {
        Duration::from_secs_f64((s / self.0).max(0.0))
    }

    /// A humantime text for `d` scaled to real time.
    pub fn text(self, d: Duration) -> String {
        // Whole microseconds keep the text short and exact enough.
        let r = self.real(d);
        humantime::format_duration(Duration::from_micros(
            u64::try_from(r.as_micros()).unwrap_or(u64::MAX).max(1),
        ))
        .to_string()
    }

    /// The coordinator's config in real time: every humantime value
    /// divided by the speed, admission multiplied by it, and the
    /// simulator's own listen addresses and state directory.
    pub fn coordinator_toml(self, scenario: &toml::Table, state_dir: &Path) -> String {
        let mut t = scenario.clone();
        scale_table(&mut t, self);
        let server = t
            .entry("server")
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if let toml::Value::Table(server) = server {
            server.insert("listen".into(), "127.0.0.1:0".into());
            server.insert("metrics_listen".into(), "127.0.0.1:0".into());
            server.insert("state_dir".into(), state_dir.display().to_string().into());
            if !server.contains_key("tick_interval") {
                // The default 1 s in scenario time, but never below 20 ms.
                let tick = self
                    .real(Duration::from_secs(1))
                    .max(Duration::from_millis(20));
                server.insert(
                    "tick_interval".into(),
                    humantime::format_duration(tick).to_string().into(),
                );
            }
            let per_second = server
                .get("admission")
                .and_then(|a| a.get("per_second"))
                .and_then(toml::Value::as_integer)
                .unwrap_or(20);
            let burst = server
                .get("admission")
                .and_then(|a| a.get("burst"))
                .and_then(toml::Value::as_integer)
                .unwrap_or(40);
            #[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]
            let scaled = ((per_second as f64) * self.0.max(1.0)).ceil() as i64;
            let mut adm = toml::Table::new();
            adm.insert("per_second".into(), scaled.into());
            adm.insert("burst".into(), burst.max(scaled).into());
            server.insert("admission".into(), toml::Value::Table(adm));
        }
        toml::to_string(&t).unwrap_or_default()
    }
}

fn scale_table(t: &mut toml::Table, scale: Scale) {
    for (_, v) in t.iter_mut() {
        scale_value(v, scale);
    }
}

fn scale_value(v: &mut toml::Value, scale: Scale) {
    match v {
        toml::Value::String(s) => {
            if let Ok(d) = humantime::parse_duration(s) {
                *s = scale.text(d);
            }
        }
        toml::Value::Table(t) => scale_table(t, scale),
        toml::Value::Array(a) => {
            for v in a {
                scale_value(v, scale);
            }
        }
        _ => {}
    }
}

// === Built-in scenarios ===

/// The scenarios shipped in `scenarios/`, built into the binary.
pub const BUILTIN: &[(&str, &str)] = &[
    ("steady", include_str!("../scenarios/steady.toml")),
    (
        "dependency-outage",
        include_str!("../scenarios/dependency-outage.toml"),
    ),
    ("bad-rack", include_str!("../scenarios/bad-rack.toml")),
    ("flapping", include_str!("../scenarios/flapping.toml")),
    (
        "coordinator-crash",
        include_str!("../scenarios/coordinator-crash.toml"),
    ),
    ("agent-crash", include_str!("../scenarios/agent-crash.toml")),
    ("partition", include_str!("../scenarios/partition.toml")),
    (
        "reset-mid-outage",
        include_str!("../scenarios/reset-mid-outage.toml"),
    ),
    (
        "mass-silence",
        include_str!("../scenarios/mass-silence.toml"),
    ),
    ("storm", include_str!("../scenarios/storm.toml")),
    ("cascade", include_str!("../scenarios/cascade.toml")),
    ("slow-burn", include_str!("../scenarios/slow-burn.toml")),
    (
        "zone-flapping",
        include_str!("../scenarios/zone-flapping.toml"),
    ),
    (
        "half-cut-off",
        include_str!("../scenarios/half-cut-off.toml"),
    ),
    (
        "rolling-deploy",
        include_str!("../scenarios/rolling-deploy.toml"),
    ),
    ("clock-jump", include_str!("../scenarios/clock-jump.toml")),
];

fn builtin(name: &str) -> Option<&'static str> {
    BUILTIN.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

/// Labels of host `i` in a fleet.
pub fn host_labels(fleet: &Fleet, i: usize) -> BTreeMap<String, String> {
    let rack = i % fleet.racks;
    BTreeMap::from([
        ("rack".to_owned(), format!("r{rack:02}")),
        ("zone".to_owned(), format!("z{}", rack % fleet.zones)),
    ])
}

/// Name of host `i`.
pub fn host_name(i: usize) -> String {
    format!("h{i:05}")
}
