//! Structured TOML: documents built from the keys the config parsers know,
//! with values drawn from the edges of what they accept (durations that
//! overflow, counts past `u32`, percentages that are NaN, time zones that
//! do not exist, files that are keys instead of certificates). Random bytes
//! almost never make it past the TOML parser; these reach validation.
//!
//! Each schema is a tree of [`Field`]s; [`document`] draws a document from
//! it with a [`Gen`], so the input's bytes decide every key and value.

use medic_policy::ConfigErrors;
use toml::{Table, Value};

use crate::choices::Gen;
use crate::fixtures;

/// What a key holds.
#[derive(Debug)]
pub enum Kind {
    /// A duration string (`"10s"`, `"7000000000000000000s"`, `"never"`).
    Dur,
    /// An integer.
    Int,
    /// A number (percentages): integer or float, NaN and infinities too.
    Num,
    /// A boolean.
    Bool,
    /// A string from a pool (sometimes any string).
    Str(&'static [&'static str]),
    /// A file path: the fixture files (real certificates, keys, a token
    /// file), missing files, directories.
    Path,
    /// A file path, most often the fixture file named here (`server.pem`),
    /// so that whole TLS setups validate now and then.
    File(&'static str),
    /// An array of strings from a pool.
    Strs(&'static [&'static str]),
    /// A table of known fields.
    Table(&'static [Field]),
    /// A table keyed by names from a pool, each value of one kind.
    Map(&'static [&'static str], &'static Kind),
    /// An array of tables.
    Tables(&'static [Field]),
}

/// One known key.
#[derive(Debug)]
pub struct Field {
    /// The key.
    pub name: &'static str,
    /// What it holds.
    pub kind: Kind,
}

const fn f(name: &'static str, kind: Kind) -> Field {
    Field { name, kind }
}

// === Value pools ===

/// Durations at and past every bound medic has, and humantime's oddities.
pub const DURATIONS: &[&str] = &[
    "0s",
    "1ns",
    "1us",
    "1ms",
    "9ms",
    "10ms",
    "99ms",
    "100ms",
    "999ms",
    "1s",
    "2s",
    "5s",
    "10s",
    "29s",
    "30s",
    "59s",
    "60s",
    "1m",
    "5m",
    "15m",
    "30m",
    "1h",
    "2h",
    "24h",
    "1d",
    "2d",
    "7d",
    "1w",
    "30d",
    "31d",
    "365d",
    "366d",
    "367d",
    "1y",
    "2y",
    "10y",
    "100y",
    "1000y",
    "9999y",
    "10000y",
    "10001y",
    "584y",
    "585y",
    "584942417355y",
    "1000000000000s",
    "100000000000s",
    "315576000s",
    "315576001s",
    "315576000000s",
    "7000000000000000000s",
    "9223372036854775807s",
    "18446744073709551615s",
    "18446744073709551616s",
    "18446744073709551615ns",
    "99999999999999999999999999ns",
    "1h 30m",
    "1h30m",
    "2m 1ns",
    "1y 1ns",
    "-1s",
    "",
    " ",
    "never",
    "Never",
    "0",
    "1",
    "s",
    "1.5s",
    "1e3s",
    "0x10s",
    "1 s",
    "1s ",
    " 1s",
    "10 years",
    "1 week",
    "1sec",
    "1secs",
    "1minute",
    "5M",
    "1month",
    "1 months",
    "\u{0}1s",
    "1s\n",
];
const UNITS: &[&str] = &[
    "ns", "us", "ms", "s", "m", "h", "d", "w", "M", "y", "", "sec", "min", "hours", "days",
];
const NUMBERS: &[&str] = &[
    "0",
    "1",
    "9",
    "10",
    "59",
    "60",
    "999",
    "1000",
    "3600",
    "86400",
    "4294967295",
    "4294967296",
    "9223372036854775807",
    "9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "00",
    "01",
];
const INTS: &[i64] = &[
    0,
    1,
    2,
    3,
    4,
    5,
    10,
    100,
    1000,
    4096,
    65535,
    65536,
    262_144,
    1_000_000,
    1_000_001,
    1_048_576,
    1_048_577,
    i32::MAX as i64,
    i32::MAX as i64 + 1,
    u32::MAX as i64,
    u32::MAX as i64 + 1,
    i64::MAX,
    i64::MIN,
    -1,
    -2,
    i32::MIN as i64,
];
const FLOATS: &[f64] = &[
    0.0,
    -0.0,
    0.001,
    0.004,
    0.005,
    0.01,
    0.5,
    1.0,
    1.5,
    2.3,
    30.0,
    33.333,
    50.0,
    99.99,
    99.995,
    99.999_999,
    100.0,
    100.000_001,
    100.01,
    101.0,
    -1.0,
    1e-300,
    5e-324,
    1e300,
    f64::MAX,
    f64::MIN_POSITIVE,
    f64::NAN,
    f64::INFINITY,
    f64::NEG_INFINITY,
];
/// Host ids and DNS names, valid and not.
pub const HOSTS: &[&str] = &[
    "web-1",
    "web-2",
    "db-01.example.net",
    "localhost",
    "127.0.0.1",
    "",
    " ",
    "web 1",
    "WEB-1",
    "web_1",
    "-leading",
    "trailing-",
    "a..b",
    "\u{202e}evil",
    "zero\u{200b}width",
    "ünïcode",
    "tab\there",
    "new\nline",
    "*.example.net",
    "spiffe://medic.dev/host/web-1",
];
const LABEL_KEYS: &[&str] = &[
    "rack",
    "zone",
    "region",
    "",
    "Rack",
    "a/b",
    "kubernetes.io/hostname",
    "rack ",
    "\u{200b}",
    "_",
];
const LABEL_VALUES: &[&str] = &["r1", "r2", "z1", "", " ", "a=b", "\u{202e}", "ü"];
const MODES: &[&str] = &["enforce", "dry-run", "dry_run", "", "ENFORCE", "dryrun"];
const ACTIONS: &[&str] = &["restart_job", "reboot_host", "restart-job", "", "reboot"];
const TIMEZONES: &[&str] = &[
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",
    "Asia/Kathmandu",
    "Pacific/Chatham",
    "Pacific/Kiritimati",
    "Etc/GMT+12",
    "Etc/GMT-14",
    "EST5EDT",
    "Nope/Nope",
    "",
    "utc",
    "+01:00",
];
const DAYS: &[&str] = &[
    "mon", "tue", "wed", "thu", "fri", "sat", "sun", "Mon", "monday", "xyz", "",
];
const HHMM: &[&str] = &[
    "00:00", "00:01", "09:00", "12:00", "23:59", "24:00", "24:01", "25:00", "12:60", "9:00",
    "-1:00", "", "12", "00:00:00", "0:0", "99:99",
];
const ADDRS: &[&str] = &[
    "127.0.0.1:7470",
    "127.0.0.1:0",
    "0.0.0.0:7470",
    "[::1]:7470",
    "[::]:65535",
    "localhost:7470",
    "127.0.0.1:65536",
    "1.2.3.4",
    "",
    ":80",
    "10.0.0.1:7470",
];
const URLS: &[&str] = &[
    "https://localhost:7470",
    "http://127.0.0.1:7470",
    "http://[::1]:1",
    "https://",
    "ftp://x",
    "http://user@host:99999",
    "",
    "https://coordinator.example.net:7470/path?q",
    "http://10.0.0.1:2379",
    "https://10.0.0.1:2379",
    "localhost:7470",
    "http://\u{202e}x:1",
];
const IDENTITIES: &[&str] = &["dns", "spiffe", "uri", "", "DNS"];
const SPIFFE: &[&str] = &[
    "spiffe://medic.dev/host/",
    "spiffe://medic.dev/host",
    "",
    "https://x/",
    "spiffe://",
];
const OPERATORS: &[&str] = &[
    "spiffe://medic.dev/operator/admin",
    "spiffe://medic.dev/operator/*",
    "*",
    "",
    "admin",
    "CN=admin",
];
const TOKEN_NAMES: &[&str] = &["ci", "", "ci bot", "web-1"];
const ROLES: &[&str] = &["admin", "read_only", "read-only", "", "root", "agent"];
const FORMATS: &[&str] = &["json", "slack", "text", ""];
const NOTIFY_EVENTS: &[&str] = &[
    "breaker_opened",
    "breaker_closed",
    "paused",
    "resumed",
    "host_quarantined",
    "host_lost",
    "config_reload_failed",
    "all",
    "",
    "x",
];
const STORE_KINDS: &[&str] = &["embedded", "etcd", "", "redb"];
const PREFIXES: &[&str] = &["/medic", "", "medic", "/", "/a/../b", "/medic/"];
const JOBS: &[&str] = &["ingest", "", "a b", "db", "x/y"];
const SIGNALS: &[&str] = &[
    "TERM", "KILL", "SIGTERM", "HUP", "INT", "", "9", "SIGFOO", "STOP", "term",
];
const COMMANDS: &[&str] = &[
    "systemctl",
    "restart",
    "ingest.service",
    "/bin/true",
    "",
    "reboot",
    "sh -c 'x'",
];
const UNITS_SYSTEMD: &[&str] = &["ingest.service", "", "x", "a b.service", "../x.service"];
const REGEXES: &[&str] = &[
    "ingest",
    "^/usr/bin/ingest( |$)",
    "(",
    "a{1000}{1000}",
    ".*",
    "[",
    "\\",
    "(?i)x",
    "",
    "\\p{Greek}+",
    "(a*)*b",
    "x{4294967295}",
];
const GENERIC: &[&str] = &[
    "",
    " ",
    "x",
    "\u{0}",
    "\u{7f}",
    "\u{feff}",
    "'",
    "\"",
    "\\",
    "${HOME}",
    "%s%s%n",
    "../../etc/passwd",
    "ü",
    "😀",
];

// === Schemas ===

const RATE: &[Field] = &[
    f("count", Kind::Int),
    f("per", Kind::Dur),
    f("burst", Kind::Int),
];
const HOST_BUDGET: &[Field] = &[f("max_attempts", Kind::Int), f("per", Kind::Dur)];
const WINDOW: &[Field] = &[
    f("days", Kind::Strs(DAYS)),
    f("start", Kind::Str(HHMM)),
    f("end", Kind::Str(HHMM)),
];
const GROUP_CAP: &[Field] = &[
    f("max_in_flight", Kind::Int),
    f("max_in_flight_percent", Kind::Num),
];
const APPROVAL: &[Field] = &[
    f("always", Kind::Bool),
    f("above_in_flight", Kind::Int),
    f("outside_windows", Kind::Bool),
    f("expire_after", Kind::Dur),
    f("use_within", Kind::Dur),
];
const LIMITS: &[Field] = &[
    f("max_in_flight", Kind::Int),
    f("max_in_flight_percent", Kind::Num),
    f("permit_ttl", Kind::Dur),
    f("cooldown", Kind::Dur),
    f("rate", Kind::Table(RATE)),
    f("host_budget", Kind::Table(HOST_BUDGET)),
    f("timezone", Kind::Str(TIMEZONES)),
    f("windows", Kind::Tables(WINDOW)),
    f("groups", Kind::Map(LABEL_KEYS, &Kind::Table(GROUP_CAP))),
    f("approval", Kind::Table(APPROVAL)),
];
const FLEET: &[Field] = &[
    f("heartbeat_interval", Kind::Dur),
    f("host_ttl", Kind::Dur),
    f("warmup", Kind::Dur),
    f("min_fleet_size", Kind::Int),
];
const DOMAIN: &[Field] = &[f("unhealthy_percent", Kind::Num), f("min_hosts", Kind::Int)];
const BREAKER: &[Field] = &[
    f("unhealthy_percent", Kind::Num),
    f("failure_percent", Kind::Num),
    f("window", Kind::Dur),
    f("min_samples", Kind::Int),
    f("auto_close_after", Kind::Dur),
    f("domains", Kind::Map(LABEL_KEYS, &Kind::Table(DOMAIN))),
];
const IDEMPOTENCY: &[Field] = &[f("retention", Kind::Dur)];

/// The policy sections (medic-policy's `PolicyConfig::from_toml`).
pub const POLICY: &[Field] = &[
    f("mode", Kind::Str(MODES)),
    f("fleet", Kind::Table(FLEET)),
    f("breaker", Kind::Table(BREAKER)),
    f("limits", Kind::Map(ACTIONS, &Kind::Table(LIMITS))),
    f("idempotency", Kind::Table(IDEMPOTENCY)),
];

const ADMISSION: &[Field] = &[f("per_second", Kind::Int), f("burst", Kind::Int)];
const SERVER: &[Field] = &[
    f("listen", Kind::Str(ADDRS)),
    f("metrics_listen", Kind::Str(ADDRS)),
    f("state_dir", Kind::File("dir")),
    f("shutdown_grace", Kind::Dur),
    f("tick_interval", Kind::Dur),
    f("admission", Kind::Table(ADMISSION)),
    f("insecure", Kind::Bool),
    f("max_message_bytes", Kind::Int),
    f("request_timeout", Kind::Dur),
];
const SERVER_TLS: &[Field] = &[
    f("cert", Kind::File("server.pem")),
    f("key", Kind::File("server.key")),
    f("client_ca", Kind::File("ca.pem")),
];
const TOKEN: &[Field] = &[
    f("name", Kind::Str(TOKEN_NAMES)),
    f("file", Kind::File("token")),
    f("role", Kind::Str(ROLES)),
];
const AUTH: &[Field] = &[
    f("agent_identity", Kind::Str(IDENTITIES)),
    f("agent_spiffe_prefix", Kind::Str(SPIFFE)),
    f("operator_ca", Kind::File("ca.pem")),
    f("admin", Kind::Strs(OPERATORS)),
    f("read_only", Kind::Strs(OPERATORS)),
    f("tokens", Kind::Tables(TOKEN)),
];
const AUDIT: &[Field] = &[
    f("retention", Kind::Dur),
    f("max_entries", Kind::Int),
    f("denial_sample_interval", Kind::Dur),
    f("snapshot_every", Kind::Int),
];
const WEBHOOK: &[Field] = &[
    f("url", Kind::Str(URLS)),
    f("format", Kind::Str(FORMATS)),
    f("events", Kind::Strs(NOTIFY_EVENTS)),
    f("timeout", Kind::Dur),
    f("max_attempts", Kind::Int),
];
const NOTIFY: &[Field] = &[f("queue", Kind::Int), f("webhooks", Kind::Tables(WEBHOOK))];
const ETCD_TLS: &[Field] = &[
    f("ca", Kind::File("ca.pem")),
    f("cert", Kind::File("agent.pem")),
    f("key", Kind::File("agent.key")),
    f("server_name", Kind::Str(HOSTS)),
];
const STORE: &[Field] = &[
    f("kind", Kind::Str(STORE_KINDS)),
    f("endpoints", Kind::Strs(URLS)),
    f("prefix", Kind::Str(PREFIXES)),
    f("lease_ttl", Kind::Dur),
    f("advertise", Kind::Str(URLS)),
    f("tls", Kind::Table(ETCD_TLS)),
];

/// `coordinator.toml`.
pub const COORDINATOR: &[Field] = &[
    f("server", Kind::Table(SERVER)),
    f("tls", Kind::Table(SERVER_TLS)),
    f("auth", Kind::Table(AUTH)),
    f("audit", Kind::Table(AUDIT)),
    f("notify", Kind::Table(NOTIFY)),
    f("store", Kind::Table(STORE)),
    f("mode", Kind::Str(MODES)),
    f("fleet", Kind::Table(FLEET)),
    f("breaker", Kind::Table(BREAKER)),
    f("limits", Kind::Map(ACTIONS, &Kind::Table(LIMITS))),
    f("idempotency", Kind::Table(IDEMPOTENCY)),
];

const AGENT_TLS: &[Field] = &[
    f("ca", Kind::File("ca.pem")),
    f("cert", Kind::File("agent.pem")),
    f("key", Kind::File("agent.key")),
    f("server_name", Kind::Str(HOSTS)),
];
const RESTART: &[Field] = &[
    f("signal", Kind::Str(SIGNALS)),
    f("grace", Kind::Dur),
    f("command", Kind::Strs(COMMANDS)),
    f("command_timeout", Kind::Dur),
    f("verify_timeout", Kind::Dur),
];
const HEARTBEAT_FILE: &[Field] = &[
    f("path", Kind::Path),
    f("stale_after", Kind::Dur),
    f("startup_grace", Kind::Dur),
];
const PROCESS: &[Field] = &[
    f("pidfile", Kind::Path),
    f("systemd_unit", Kind::Str(UNITS_SYSTEMD)),
    f("cmdline", Kind::Str(REGEXES)),
    f("max_runtime", Kind::Dur),
    f("d_state_for", Kind::Dur),
    f("stopped_is_stuck", Kind::Bool),
    f("absent_is_stuck", Kind::Bool),
    f("absent_grace", Kind::Dur),
];
const PROBE: &[Field] = &[
    f("command", Kind::Strs(COMMANDS)),
    f("timeout", Kind::Dur),
    f("max_output", Kind::Int),
];
const SYSTEMD: &[Field] = &[
    f("unit", Kind::Str(UNITS_SYSTEMD)),
    f("transition_stuck_after", Kind::Dur),
];
const JOB: &[Field] = &[
    f("name", Kind::Str(JOBS)),
    f("confirm", Kind::Int),
    f("reboot_after_failed_restarts", Kind::Int),
    f("give_up_after_failed_reboots", Kind::Int),
    f("restart", Kind::Table(RESTART)),
    f("heartbeat_file", Kind::Table(HEARTBEAT_FILE)),
    f("process", Kind::Table(PROCESS)),
    f("probe", Kind::Table(PROBE)),
    f("systemd", Kind::Table(SYSTEMD)),
];

/// `agent.toml`.
pub const AGENT: &[Field] = &[
    f("host_id", Kind::Str(HOSTS)),
    f("labels", Kind::Map(LABEL_KEYS, &Kind::Str(LABEL_VALUES))),
    f("coordinators", Kind::Strs(URLS)),
    f("check_interval", Kind::Dur),
    f("heartbeat_interval", Kind::Dur),
    f("request_timeout", Kind::Dur),
    f("state_dir", Kind::File("dir")),
    f("dry_run", Kind::Bool),
    f("safety_margin", Kind::Dur),
    f("reboot_command", Kind::Strs(COMMANDS)),
    f("metrics_listen", Kind::Str(ADDRS)),
    f("tls", Kind::Table(AGENT_TLS)),
    f("jobs", Kind::Tables(JOB)),
];

// === Generation ===

/// A TOML document drawn from `schema`.
pub fn document(g: &mut Gen, schema: &[Field]) -> String {
    let table = table(g, schema, 0);
    toml::to_string(&table).unwrap_or_else(|_| table.to_string())
}

/// A table drawn from `fields`: each key present with a probability that is
/// itself drawn per table (so both sparse and dense tables occur).
pub fn table(g: &mut Gen, fields: &[Field], depth: usize) -> Table {
    let density = g.byte();
    let mut t = Table::new();
    for field in fields {
        if g.chance(density) {
            t.insert(field.name.to_owned(), value(g, &field.kind, depth + 1));
        }
    }
    if g.chance(6) {
        let key = if g.chance(128) {
            "extra".to_owned()
        } else {
            g.text(8)
        };
        t.insert(key, wrong(g));
    }
    t
}

fn value(g: &mut Gen, kind: &Kind, depth: usize) -> Value {
    if g.chance(8) || depth > 8 {
        return wrong(g);
    }
    match kind {
        Kind::Dur => Value::String(duration(g)),
        Kind::Int => Value::Integer(int(g)),
        Kind::Num => number(g),
        Kind::Bool => Value::Boolean(g.chance(128)),
        Kind::Str(pool) => Value::String(string(g, pool)),
        Kind::Path => Value::String(path(g)),
        Kind::File(name) => Value::String(if g.chance(160) {
            fixtures::file(name)
        } else {
            path(g)
        }),
        Kind::Strs(pool) => {
            let n = g.below(5);
            Value::Array((0..n).map(|_| Value::String(string(g, pool))).collect())
        }
        Kind::Table(fields) => Value::Table(table(g, fields, depth)),
        Kind::Map(keys, inner) => {
            let n = g.below(4);
            let mut t = Table::new();
            for _ in 0..n {
                let key = string(g, keys);
                t.insert(key, value(g, inner, depth + 1));
            }
            Value::Table(t)
        }
        Kind::Tables(fields) => {
            let n = g.below(4);
            Value::Array(
                (0..n)
                    .map(|_| Value::Table(table(g, fields, depth)))
                    .collect(),
            )
        }
    }
}

/// A value of a random type: what a typo or a confused operator writes.
fn wrong(g: &mut Gen) -> Value {
    match g.below(8) {
        0 => Value::Integer(int(g)),
        1 => number(g),
        2 => Value::Boolean(g.chance(128)),
        3 => Value::Array(Vec::new()),
        4 => Value::Array(vec![Value::Integer(int(g)), Value::String(g.text(4))]),
        5 => Value::Table(Table::new()),
        6 => "1979-05-27T07:32:00Z"
            .parse()
            .map_or_else(|_| Value::Boolean(false), Value::Datetime),
        _ => Value::String(string(g, GENERIC)),
    }
}

/// A duration string: from the pool, or a number and a unit, or two parts.
pub fn duration(g: &mut Gen) -> String {
    match g.below(5) {
        0..=2 => (*g.pick(DURATIONS)).to_owned(),
        3 => format!("{}{}", numeral(g), g.pick(UNITS)),
        _ => format!(
            "{}{} {}{}",
            numeral(g),
            g.pick(UNITS),
            numeral(g),
            g.pick(UNITS)
        ),
    }
}

fn numeral(g: &mut Gen) -> String {
    match g.below(3) {
        0 => (*g.pick(NUMBERS)).to_owned(),
        1 => (g.byte() % 100).to_string(),
        _ => g.u64().to_string(),
    }
}

fn int(g: &mut Gen) -> i64 {
    match g.below(4) {
        0..=1 => *g.pick(INTS),
        2 => i64::from(g.byte()),
        _ => i64::from_le_bytes(g.u64().to_le_bytes()),
    }
}

fn number(g: &mut Gen) -> Value {
    if g.chance(100) {
        Value::Integer(*g.pick(&[0, 1, 5, 30, 50, 99, 100, 101, -1, 1_000_000]))
    } else if g.chance(200) {
        Value::Float(*g.pick(FLOATS))
    } else {
        Value::Float(f64::from_bits(g.u64()))
    }
}

/// A string from `pool`, or now and then any string: long ones at every
/// length bound, control characters, random bytes.
pub fn string(g: &mut Gen, pool: &[&str]) -> String {
    match g.below(16) {
        0 => {
            let n = *g.pick(&[
                63, 64, 65, 127, 128, 129, 252, 253, 254, 255, 256, 1024, 1025, 4096, 4097, 65536,
            ]);
            let c = *g.pick(&['a', 'x', '9', 'ü', '.', '-']);
            std::iter::repeat_n(c, n).collect()
        }
        1 => g.text(12),
        2 => (*g.pick(GENERIC)).to_owned(),
        _ => (*g.pick(pool)).to_owned(),
    }
}

fn path(g: &mut Gen) -> String {
    if g.chance(30) {
        return string(g, GENERIC);
    }
    let paths = fixtures::paths();
    paths[g.below(paths.len())].clone()
}

// === Pruning to the valid part ===

/// The part of a generated document that `parse` accepts: the keys its
/// errors name are removed, a few rounds at most. Extreme values that
/// validate survive, which is the point: a value that passes validation
/// must not break what uses it later. `None` if no such part was found.
pub fn valid_part<T>(
    text: &str,
    parse: impl Fn(&str) -> Result<T, ConfigErrors>,
) -> Option<(String, T)> {
    let mut table: Table = text.parse().ok()?;
    for _ in 0..8 {
        let text = table.to_string();
        match parse(&text) {
            Ok(v) => return Some((text, v)),
            Err(e) => {
                let mut removed = false;
                for err in &e.0 {
                    removed |= remove_path(&mut table, &err.path);
                }
                if !removed {
                    return None;
                }
            }
        }
    }
    None
}

/// Removes what an error path names (`limits.restart_job.rate.per`,
/// `jobs[0].restart.signal`, `coordinators[1]`), or the deepest part of
/// the path that exists. Whether anything was removed.
fn remove_path(table: &mut Table, path: &str) -> bool {
    // `a.b[2].c` as keys and indices: a, b, [2], c.
    let mut steps: Vec<(String, Option<usize>)> = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let mut pieces = part.split('[');
        let key = pieces.next().unwrap_or("");
        if !key.is_empty() {
            steps.push((key.to_owned(), None));
        }
        for index in pieces {
            let Ok(i) = index.trim_end_matches(']').parse::<usize>() else {
                // A map key in brackets (`labels["x"]`): stop at its map.
                break;
            };
            if let Some(last) = steps.last_mut()
                && last.1.is_none()
            {
                last.1 = Some(i);
                continue;
            }
            break;
        }
    }
    remove_steps(table, &steps)
}

fn remove_steps(table: &mut Table, steps: &[(String, Option<usize>)]) -> bool {
    let Some(((key, index), rest)) = steps.split_first() else {
        return false;
    };
    match (index, table.get_mut(key)) {
        (None, Some(Value::Table(inner))) if !rest.is_empty() => {
            remove_steps(inner, rest) || table.remove(key).is_some()
        }
        (Some(i), Some(Value::Array(items))) if *i < items.len() => {
            let descended = match &mut items[*i] {
                Value::Table(inner) if !rest.is_empty() => remove_steps(inner, rest),
                _ => false,
            };
            if !descended {
                items.remove(*i);
            }
            true
        }
        (_, Some(_)) => table.remove(key).is_some(),
        (_, None) => false,
    }
}
