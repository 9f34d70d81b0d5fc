//! `docs/configuration.md` against the real parsers, in both directions, so
//! the reference cannot drift from the code:
//!
//! 1. every key path in the doc's tables is accepted: a valid document that
//!    sets it (to its documented default, or to a sample value) parses;
//! 2. every key the example configs show, commented-out examples included,
//!    is in the doc (serde structs cannot be enumerated; the examples are the
//!    next best list of what the parsers accept);
//! 3. every documented plain default gives the same validated config as
//!    leaving the key out.
//!
//! The doc's tables are read by the columns `| Key | Type | Default | Meaning |`,
//! the key path in backticks in the first column. A default cell that starts
//! with a backticked TOML value is a testable default; per-action defaults
//! are written ``restart_job: `X`, reboot_host: `Y` ``; anything else
//! ("required", "none", "the hostname") is not compared.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use medic_agent::AgentConfig;
use medic_coordinator::CoordinatorConfig;

// === The doc ===

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum File {
    Coordinator,
    Agent,
}

impl File {
    fn example(self) -> PathBuf {
        let name = match self {
            File::Coordinator => "coordinator.toml",
            File::Agent => "agent.toml",
        };
        repo().join("config").join(name)
    }
}

/// A documented default.
#[derive(Clone, Debug)]
enum Documented {
    /// One TOML value for every instance of the key.
    Value(String),
    /// Different per action (`limits.<action>.*`).
    PerAction {
        restart_job: String,
        reboot_host: String,
    },
    /// Not a plain value: "required", "none", "the hostname", ...
    Other,
}

#[derive(Clone, Debug)]
struct Row {
    file: File,
    key: String,
    default: Documented,
    line: usize,
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn doc_rows() -> Vec<Row> {
    let path = repo().join("docs/configuration.md");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mut file = None;
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        if let Some(h) = line.strip_prefix("## ") {
            file = if h.contains("coordinator.toml") {
                Some(File::Coordinator)
            } else if h.contains("agent.toml") {
                Some(File::Agent)
            } else {
                None
            };
            continue;
        }
        let Some(file) = file else { continue };
        if !line.starts_with("| `") {
            continue;
        }
        let cells: Vec<&str> = line
            .trim()
            .trim_matches('|')
            .split('|')
            .map(str::trim)
            .collect();
        assert_eq!(
            cells.len(),
            4,
            "docs/configuration.md:{line_no}: a settings row needs exactly the columns \
             Key | Type | Default | Meaning (no '|' inside cells): {line}"
        );
        let key = cells[0]
            .strip_prefix('`')
            .and_then(|k| k.strip_suffix('`'))
            .filter(|k| !k.contains('`'))
            .unwrap_or_else(|| {
                panic!("docs/configuration.md:{line_no}: the key cell must be one `key.path`")
            });
        rows.push(Row {
            file,
            key: key.to_owned(),
            default: parse_default(cells[2]),
            line: line_no,
        });
    }
    rows
}

/// The first backticked text after `after` in `cell`.
fn backticked_after<'a>(cell: &'a str, after: &str) -> Option<&'a str> {
    let start = cell.find(after)? + after.len();
    let rest = cell[start..].strip_prefix('`')?;
    Some(&rest[..rest.find('`')?])
}

fn parse_default(cell: &str) -> Documented {
    if let Some(v) = backticked_after(cell, "") {
        return Documented::Value(v.to_owned());
    }
    match (
        backticked_after(cell, "restart_job: "),
        backticked_after(cell, "reboot_host: "),
    ) {
        (Some(r), Some(b)) => Documented::PerAction {
            restart_job: r.to_owned(),
            reboot_host: b.to_owned(),
        },
        _ => Documented::Other,
    }
}

// === Building documents ===

/// Stands for the fixture directory in sample values: TLS and token keys
/// name files that must exist (keys mode 0600, which git cannot keep), so
/// they are written at run time.
const FIXTURE: &str = "@FIXTURE@";

/// A dev-certs set for `web-17.example.net` (the sample `host_id`), the
/// same pair also as `agent.pem` / `agent.key` (the example agent.toml's
/// names), and a token file; written once per test process.
fn fixture() -> &'static Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        use medic_coordinator::devcerts;
        // Under the target directory, replaced on every run.
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("config-docs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        devcerts::write(&devcerts::DevCerts {
            out: dir.clone(),
            hosts: vec!["web-17.example.net".to_owned()],
            server_names: Vec::new(),
            validity: std::time::Duration::from_secs(86400),
            force: false,
        })
        .unwrap();
        for (ext, mode) in [("pem", 0o644), ("key", 0o600)] {
            let text =
                std::fs::read_to_string(dir.join(format!("agents/web-17.example.net.{ext}")))
                    .unwrap();
            devcerts::write_file(&dir.join(format!("agent.{ext}")), &text, mode).unwrap();
        }
        devcerts::write_file(&dir.join("token"), &"0123456789abcdef".repeat(4), 0o600).unwrap();
        dir
    })
}

/// `text` with the fixture placeholder (and the example configs'
/// `/etc/medic/tls`) pointing at [`fixture`].
fn with_fixture(text: &str) -> String {
    if !text.contains(FIXTURE) && !text.contains("/etc/medic/tls/") {
        return text.to_owned();
    }
    let dir = fixture().display().to_string();
    text.replace(FIXTURE, &dir)
        .replace("/etc/medic/tls/", &format!("{dir}/"))
}

const ACTIONS: [&str; 2] = ["restart_job", "reboot_host"];

/// Values for keys whose documented default is not a plain value.
fn sample(key: &str) -> Option<&'static str> {
    Some(match key {
        // coordinator.toml
        "notify.webhooks[].url" => r#""https://hooks.example.net/medic""#,
        "notify.webhooks[].headers.<name>" => r#"{ file = "@FIXTURE@/token" }"#,
        "notify.webhooks[].hmac_secret_file" => r#""@FIXTURE@/token""#,
        "breaker.domains.<label>.unhealthy_percent" => "50",
        "limits.<action>.windows[].days" => r#"["sat", "sun"]"#,
        "limits.<action>.windows[].start" => r#""22:00""#,
        "limits.<action>.windows[].end" => r#""06:00""#,
        "limits.<action>.groups.<label>.max_in_flight" => "1",
        "limits.<action>.groups.<label>.max_in_flight_percent" => "25",
        "limits.<action>.jobs.<job>.max_in_flight" => "2",
        "limits.<action>.jobs.<job>.groups.<label>" => "1",
        "limits.<action>.approval.above_in_flight" => "3",
        "actions.<custom>" => "{}",
        "limits.<action>.override_ceiling.max_in_flight" => "100",
        "limits.<action>.override_ceiling.rate_count" => "200",
        "actions.<custom>.description" => r#""drain traffic""#,
        "tls.client_ca" => r#""@FIXTURE@/ca.pem""#,
        "auth.agent_spiffe_prefix" => r#""spiffe://medic.dev/host/""#,
        "auth.operator_ca" => r#""@FIXTURE@/ca.pem""#,
        "auth.tokens[].name" => r#""deploy-bot""#,
        "auth.tokens[].file" => r#""@FIXTURE@/token""#,
        "auth.tokens[].role" => r#""read-only""#,
        "gates[].name" => r#""database-down""#,
        "gates[].prometheus" => r#""http://prometheus.internal:9090""#,
        "gates[].query" => r#"'ALERTS{alertstate="firing"}'"#,
        "gates[].label" => r#""rack""#,
        "gates[].actions" => r#"["reboot_host"]"#,
        "store.endpoints" => r#"["http://127.0.0.1:2379"]"#,
        "store.advertise" => r#""http://127.0.0.1:7470""#,
        "store.tls.ca" => r#""@FIXTURE@/ca.pem""#,
        "store.tls.cert" => r#""@FIXTURE@/agent.pem""#,
        "store.tls.key" => r#""@FIXTURE@/agent.key""#,
        "store.tls.server_name" => r#""localhost""#,
        // both: a matching pair that names the agent's sample host_id
        "tls.cert" => r#""@FIXTURE@/agent.pem""#,
        "tls.key" => r#""@FIXTURE@/agent.key""#,
        // agent.toml
        "host_id" => r#""web-17.example.net""#,
        "labels.<label>" => r#""r12""#,
        "metrics_listen" => r#""127.0.0.1:7472""#,
        "jobs[].name" => r#""ingest""#,
        "jobs[].restart.command" => r#"["systemctl", "restart", "ingest.service"]"#,
        "jobs[].heartbeat_file.path" => r#""/run/ingest/heartbeat""#,
        "jobs[].process.pidfile" => r#""/run/ingest.pid""#,
        "jobs[].process.systemd_unit" => r#""ingest.service""#,
        "jobs[].process.cmdline" => r#""^/usr/bin/ingest( |$)""#,
        "jobs[].process.max_runtime" => r#""6h""#,
        "jobs[].probe.command" => r#"["/bin/true"]"#,
        "jobs[].pre.command" => r#"["/usr/local/bin/lb-drain"]"#,
        "jobs[].post.command" => r#"["/usr/local/bin/lb-undrain"]"#,
        "jobs[].ladder[].action" => r#""drain_host""#,
        "jobs[].ladder[].command" => r#"["/usr/local/bin/drain"]"#,
        "jobs[].ladder[].verify_timeout" => r#""1m""#,
        "jobs[].systemd.unit" => r#""ingest.service""#,
        "tls.ca" => r#""@FIXTURE@/ca.pem""#,
        "tls.server_name" => r#""localhost""#,
        _ => return None,
    })
}

/// The least a section needs to be valid, so that the key under test is
/// read inside a valid document.
fn skeleton(file: File, key: &str) -> Vec<(&'static str, &'static str)> {
    let mut out = Vec::new();
    let tls = match file {
        File::Coordinator => key.starts_with("tls.") || key == "auth.operator_ca",
        File::Agent => key.starts_with("tls."),
    };
    if tls {
        out.push(("tls.cert", r#""@FIXTURE@/agent.pem""#));
        out.push(("tls.key", r#""@FIXTURE@/agent.key""#));
        match file {
            File::Coordinator => out.push(("tls.client_ca", r#""@FIXTURE@/ca.pem""#)),
            File::Agent => {
                out.push(("tls.ca", r#""@FIXTURE@/ca.pem""#));
                out.push(("host_id", r#""web-17.example.net""#));
                out.push(("coordinators", r#"["https://localhost:7470"]"#));
            }
        }
    }
    // The etcd store's keys are only accepted with kind = "etcd", which
    // needs endpoints and advertise.
    if key.starts_with("store.") && key != "store.kind" {
        out.push(("store.kind", r#""etcd""#));
        out.push(("store.advertise", r#""http://127.0.0.1:7470""#));
        // [store.tls] goes with https:// endpoints, and at least a CA.
        if key.starts_with("store.tls.") {
            out.push(("store.endpoints", r#"["https://127.0.0.1:2379"]"#));
            out.push(("store.tls.ca", r#""@FIXTURE@/ca.pem""#));
            if key == "store.tls.cert" || key == "store.tls.key" {
                out.push(("store.tls.cert", r#""@FIXTURE@/agent.pem""#));
                out.push(("store.tls.key", r#""@FIXTURE@/agent.key""#));
            }
        } else {
            out.push(("store.endpoints", r#"["http://127.0.0.1:2379"]"#));
        }
    }
    if key == "auth.agent_spiffe_prefix" {
        out.push(("auth.agent_identity", r#""spiffe""#));
    }
    if key.starts_with("auth.tokens[].") {
        out.push(("auth.tokens[].name", r#""deploy-bot""#));
        out.push(("auth.tokens[].file", r#""@FIXTURE@/token""#));
        out.push(("auth.tokens[].role", r#""read-only""#));
    }
    if key.starts_with("breaker.domains.<label>.") {
        out.push(("breaker.domains.<label>.unhealthy_percent", "50"));
    }
    if key.starts_with("limits.<action>.groups.<label>.") {
        out.push(("limits.<action>.groups.<label>.max_in_flight", "5"));
    }
    // An approval table must say when one is needed.
    if key.starts_with("limits.<action>.approval.")
        && key != "limits.<action>.approval.above_in_flight"
    {
        out.push(("limits.<action>.approval.above_in_flight", "2"));
    }
    if key.starts_with("limits.<action>.windows[].") {
        out.push(("limits.<action>.windows[].days", r#"["sat", "sun"]"#));
        out.push(("limits.<action>.windows[].start", r#""22:00""#));
        out.push(("limits.<action>.windows[].end", r#""06:00""#));
    }
    if key.starts_with("gates[].") {
        for (k, v) in [
            ("gates[].name", r#""database-down""#),
            ("gates[].prometheus", r#""http://prometheus.internal:9090""#),
        ] {
            if key != k {
                out.push((k, v));
            }
        }
        // A per-domain gate's query names the host's value.
        if key == "gates[].label" {
            out.push((
                "gates[].query",
                r#"'ALERTS{alertstate="firing",rack="$value"}'"#,
            ));
        } else if key != "gates[].query" {
            out.push(("gates[].query", r#"'ALERTS{alertstate="firing"}'"#));
        }
    }
    if key.starts_with("notify.webhooks[].") {
        out.push((
            "notify.webhooks[].url",
            r#""https://hooks.example.net/medic""#,
        ));
    }
    if key.starts_with("jobs[].") {
        out.push(("jobs[].name", r#""ingest""#));
        out.push(("jobs[].probe.command", r#"["/bin/true"]"#));
        // A job must have something its restart can act on.
        if key != "jobs[].restart.command" {
            out.push(("jobs[].restart.command", r#"["/bin/true"]"#));
        }
    }
    // A rung is a custom action, so that its command keys apply.
    if key.starts_with("jobs[].ladder[].") {
        if key != "jobs[].ladder[].action" {
            out.push(("jobs[].ladder[].action", r#""drain_host""#));
        }
        if key != "jobs[].ladder[].command" {
            out.push(("jobs[].ladder[].command", r#"["/usr/local/bin/drain"]"#));
        }
    }
    if key.starts_with("jobs[].heartbeat_file.") {
        out.push(("jobs[].heartbeat_file.path", r#""/run/ingest/heartbeat""#));
    }
    // The process is named exactly one way.
    if key.starts_with("jobs[].process.")
        && key != "jobs[].process.pidfile"
        && key != "jobs[].process.cmdline"
    {
        out.push(("jobs[].process.systemd_unit", r#""ingest.service""#));
    }
    if key.starts_with("jobs[].systemd.") {
        out.push(("jobs[].systemd.unit", r#""ingest.service""#));
    }
    if key.starts_with("jobs[].pre.") {
        out.push(("jobs[].pre.command", r#"["/usr/local/bin/lb-drain"]"#));
    }
    if key.starts_with("jobs[].post.") {
        out.push(("jobs[].post.command", r#"["/usr/local/bin/lb-undrain"]"#));
    }
    out
}

/// Keys whose default only holds together with other keys' defaults: setting
/// `max_in_flight` alone drops the default percentage, and a `rate` table
/// without `burst` means no burst (both documented).
fn companions(key: &str) -> Vec<&'static str> {
    const RATE: [&str; 3] = [
        "limits.<action>.rate.count",
        "limits.<action>.rate.per",
        "limits.<action>.rate.burst",
    ];
    if key == "limits.<action>.max_in_flight" {
        vec!["limits.<action>.max_in_flight_percent"]
    } else if key.starts_with("limits.<action>.rate.") {
        RATE.to_vec()
    } else {
        Vec::new()
    }
}

/// A TOML value being built: tables (inline), arrays of one table, values.
enum Node {
    Table(BTreeMap<String, Node>),
    ArrayOfOne(BTreeMap<String, Node>),
    Leaf(String),
}

/// Assignments of (key path with placeholders, TOML value) as one TOML
/// document, with `<action>` as `action`, `<label>` as `rack`, `<name>`
/// (a header) as `Authorization`, `<custom>` (a custom action) as
/// `drain_host` and `<job>` as `zookeeper`.
fn document(assignments: &[(String, String)], action: &str) -> String {
    let mut root = BTreeMap::new();
    for (key, value) in assignments {
        let key = key
            .replace("<action>", action)
            .replace("<label>", "rack")
            .replace("<name>", "Authorization")
            .replace("<custom>", "drain_host")
            .replace("<job>", "zookeeper");
        let segs: Vec<&str> = key.split('.').collect();
        set(&mut root, &segs, value, &key);
    }
    let text: String = root
        .iter()
        .map(|(k, n)| format!("{k} = {}\n", render(n)))
        .collect();
    with_fixture(&text)
}

fn set(map: &mut BTreeMap<String, Node>, segs: &[&str], value: &str, key: &str) {
    let (head, rest) = segs.split_first().expect("a key path is never empty");
    if rest.is_empty() {
        map.insert((*head).to_owned(), Node::Leaf(value.to_owned()));
        return;
    }
    let (name, array) = match head.strip_suffix("[]") {
        Some(n) => (n, true),
        None => (*head, false),
    };
    let node = map.entry(name.to_owned()).or_insert_with(|| {
        if array {
            Node::ArrayOfOne(BTreeMap::new())
        } else {
            Node::Table(BTreeMap::new())
        }
    });
    match node {
        Node::Table(m) | Node::ArrayOfOne(m) => set(m, rest, value, key),
        Node::Leaf(_) => panic!("{key}: a value and a table at the same path"),
    }
}

fn render(node: &Node) -> String {
    let table = |m: &BTreeMap<String, Node>| {
        let fields: Vec<String> = m
            .iter()
            .map(|(k, n)| format!("{k} = {}", render(n)))
            .collect();
        format!("{{ {} }}", fields.join(", "))
    };
    match node {
        Node::Leaf(v) => v.clone(),
        Node::Table(m) => table(m),
        Node::ArrayOfOne(m) => format!("[{}]", table(m)),
    }
}

#[derive(Debug, PartialEq)]
enum Parsed {
    Coordinator(Box<CoordinatorConfig>),
    Agent(Box<AgentConfig>),
}

fn parse(file: File, text: &str) -> Result<Parsed, String> {
    match file {
        File::Coordinator => CoordinatorConfig::from_toml(text)
            .map(|c| Parsed::Coordinator(Box::new(c)))
            .map_err(|e| e.to_string()),
        File::Agent => AgentConfig::from_toml(text)
            .map(|c| Parsed::Agent(Box::new(c)))
            .map_err(|e| e.to_string()),
    }
}

/// The documented default of `key` for `action`, if it is a plain value.
fn documented_default(rows: &[Row], file: File, key: &str, action: &str) -> Option<String> {
    let row = rows.iter().find(|r| r.file == file && r.key == key)?;
    match &row.default {
        Documented::Value(v) => Some(v.clone()),
        Documented::PerAction {
            restart_job,
            reboot_host,
        } => Some(if action == "reboot_host" {
            reboot_host.clone()
        } else {
            restart_job.clone()
        }),
        Documented::Other => None,
    }
}

fn actions_of(key: &str) -> &'static [&'static str] {
    if key.contains("<action>") {
        &ACTIONS
    } else {
        &ACTIONS[..1]
    }
}

/// ` (restart_job)` for per-action keys, else nothing.
fn tag(key: &str, action: &str) -> String {
    if key.contains("<action>") {
        format!(" ({action})")
    } else {
        String::new()
    }
}

fn fail_if_any(problems: &[String], what: &str) {
    assert!(
        problems.is_empty(),
        "{what} ({} problem(s)):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

// === 1. Every documented key is accepted ===

#[test]
fn every_documented_key_is_accepted_by_the_parser() {
    let rows = doc_rows();
    assert!(
        rows.len() > 60,
        "only {} rows read from the doc",
        rows.len()
    );
    let mut seen = BTreeSet::new();
    let mut problems = Vec::new();
    for row in &rows {
        if !seen.insert((row.file, row.key.clone())) {
            problems.push(format!(
                "line {}: {} is documented twice",
                row.line, row.key
            ));
        }
        for &action in actions_of(&row.key) {
            let value = documented_default(&rows, row.file, &row.key, action)
                .or_else(|| sample(&row.key).map(str::to_owned));
            let Some(value) = value else {
                problems.push(format!(
                    "line {}: {} has no plain default; add a sample value to `sample()` \
                     in this test",
                    row.line, row.key
                ));
                continue;
            };
            let mut assignments: Vec<(String, String)> = skeleton(row.file, &row.key)
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            assignments.push((row.key.clone(), value));
            let text = document(&assignments, action);
            if let Err(e) = parse(row.file, &text) {
                let unknown = if e.contains("unknown key") {
                    "the parser does not know this key; "
                } else {
                    ""
                };
                problems.push(format!(
                    "line {}: {}{}: {unknown}document\n{text}was rejected:\n{e}\n",
                    row.line,
                    row.key,
                    tag(&row.key, action)
                ));
            }
        }
    }
    fail_if_any(&problems, "documented keys the parsers reject");
}

// === 2. Every key the examples show is documented ===

/// `[a.b]` / `[[a.b]]` → (`a.b`, is an array of tables).
fn header(body: &str) -> Option<(&str, bool)> {
    let (inner, array) = if let Some(i) = body.strip_prefix("[[") {
        (i.strip_suffix("]]")?, true)
    } else {
        (body.strip_prefix('[')?.strip_suffix(']')?, false)
    };
    let ok = !inner.is_empty()
        && inner
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-');
    ok.then_some((inner, array))
}

/// `key = value` with a bare key → (key, value).
fn assignment(body: &str) -> Option<(&str, &str)> {
    let end = body
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
        .unwrap_or(body.len());
    if end == 0 {
        return None;
    }
    let value = body[end..].trim_start().strip_prefix('=')?.trim();
    (!value.is_empty()).then_some((&body[..end], value))
}

/// Splits at top-level `,` (outside strings, brackets and braces).
fn split_top(s: &str) -> Vec<&str> {
    let (mut depth, mut in_str, mut escaped, mut start) = (0i32, false, false, 0);
    let mut parts = Vec::new();
    for (i, c) in s.char_indices() {
        if in_str {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_str = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_str = true,
            '[' | '{' => depth += 1,
            ']' | '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts.into_iter().filter(|p| !p.trim().is_empty()).collect()
}

/// Records `path` and, for inline tables and arrays of them, every key inside.
fn collect(path: &str, value: &str, out: &mut BTreeSet<String>) {
    let value = value.trim();
    if let Some(inner) = value.strip_prefix('{').and_then(|v| v.strip_suffix('}')) {
        for part in split_top(inner) {
            if let Some((k, v)) = assignment(part.trim()) {
                collect(&format!("{path}.{k}"), v, out);
            }
        }
        return;
    }
    out.insert(path.to_owned());
    if let Some(inner) = value.strip_prefix('[').and_then(|v| v.strip_suffix(']')) {
        for element in split_top(inner) {
            if element.trim().starts_with('{') {
                collect(&format!("{path}[]"), element, out);
            }
        }
    }
}

/// `limits.reboot_host.groups.rack.max_in_flight` →
/// `limits.<action>.groups.<label>.max_in_flight`.
fn normalise(path: &str) -> String {
    let segs: Vec<&str> = path.split('.').collect();
    let mut out: Vec<&str> = Vec::with_capacity(segs.len());
    for (i, seg) in segs.iter().enumerate() {
        let prev = if i == 0 {
            ""
        } else {
            segs[i - 1].trim_end_matches("[]")
        };
        // A header's value (a string, or `{ file = ... }`) is one key.
        if prev == "headers" {
            out.push("<name>");
            break;
        }
        out.push(match prev {
            "limits" => "<action>",
            "actions" if i == 1 => "<custom>",
            "jobs" if segs[0] == "limits" => "<job>",
            "groups" | "domains" | "labels" => "<label>",
            _ => seg,
        });
    }
    out.join(".")
}

/// Every key path in an example config, commented-out examples included
/// (`# key = value`, under the last `[section]` or `# [section]` header).
fn example_keys(text: &str) -> BTreeSet<String> {
    let mut arrays = BTreeSet::new();
    let (mut section, mut commented_section) = (String::new(), String::new());
    let mut raw = BTreeSet::new();
    for line in text.lines() {
        let line = line.trim();
        let (body, is_comment) = match line.strip_prefix('#') {
            Some(rest) => (rest.strip_prefix(' ').unwrap_or(rest).trim_end(), true),
            None => (line, false),
        };
        if let Some((name, array)) = header(body) {
            if array {
                arrays.insert(name.to_owned());
            }
            let segs: Vec<&str> = name.split('.').collect();
            let resolved: Vec<String> = (0..segs.len())
                .map(|i| {
                    if arrays.contains(&segs[..=i].join(".")) {
                        format!("{}[]", segs[i])
                    } else {
                        segs[i].to_owned()
                    }
                })
                .collect();
            commented_section = resolved.join(".");
            if !is_comment {
                section.clone_from(&commented_section);
            }
            continue;
        }
        if let Some((key, value)) = assignment(body) {
            let sec = if is_comment {
                &commented_section
            } else {
                &section
            };
            let path = if sec.is_empty() {
                key.to_owned()
            } else {
                format!("{sec}.{key}")
            };
            collect(&path, value, &mut raw);
        }
    }
    raw.iter().map(|p| normalise(p)).collect()
}

#[test]
fn every_key_in_the_example_configs_is_documented() {
    let rows = doc_rows();
    let mut problems = Vec::new();
    for file in [File::Coordinator, File::Agent] {
        let path = file.example();
        let text = std::fs::read_to_string(&path).unwrap();
        let keys = example_keys(&text);
        let documented: BTreeSet<&str> = rows
            .iter()
            .filter(|r| r.file == file)
            .map(|r| r.key.as_str())
            .collect();
        for key in &keys {
            if !documented.contains(key.as_str()) {
                problems.push(format!(
                    "{} shows `{key}`, which docs/configuration.md does not document",
                    path.display()
                ));
            }
        }
        // The extractor itself: it must see commented-out examples and
        // inline tables, or this test would pass on nothing.
        let must_see: &[&str] = match file {
            File::Coordinator => &[
                "mode",
                "server.admission.burst",
                "notify.webhooks[].url",
                "breaker.domains.<label>.min_hosts",
                "limits.<action>.rate.burst",
                "limits.<action>.windows[].end",
                "limits.<action>.groups.<label>.max_in_flight_percent",
            ],
            File::Agent => &[
                "metrics_listen",
                "labels.<label>",
                "jobs[].restart.verify_timeout",
                "jobs[].process.d_state_for",
                "jobs[].systemd.transition_stuck_after",
            ],
        };
        for k in must_see {
            assert!(
                keys.contains(*k),
                "the example-key extractor missed `{k}` in {}; it found {keys:?}",
                path.display()
            );
        }
    }
    fail_if_any(&problems, "example keys missing from docs/configuration.md");
}

#[test]
fn the_example_configs_still_parse() {
    // Their certificate paths (/etc/medic/tls) point at the fixture.
    for file in [File::Coordinator, File::Agent] {
        let text = std::fs::read_to_string(file.example()).unwrap();
        parse(file, &with_fixture(&text))
            .unwrap_or_else(|e| panic!("{}: {e}", file.example().display()));
    }
}

// === 3. Documented defaults are the code's defaults ===

#[test]
fn documented_defaults_match_the_code() {
    let rows = doc_rows();
    let mut problems = Vec::new();
    let mut compared = 0;
    for row in &rows {
        if matches!(row.default, Documented::Other) {
            continue;
        }
        for &action in actions_of(&row.key) {
            let base: Vec<(String, String)> = skeleton(row.file, &row.key)
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            let mut with = base.clone();
            for key in companions(&row.key).into_iter().chain([row.key.as_str()]) {
                let value = documented_default(&rows, row.file, key, action)
                    .unwrap_or_else(|| panic!("{key} (companion of {}) has no default", row.key));
                with.push((key.to_owned(), value));
            }
            let (base_text, with_text) = (document(&base, action), document(&with, action));
            let base = parse(row.file, &base_text);
            let with = parse(row.file, &with_text);
            compared += 1;
            match (base, with) {
                (Ok(b), Ok(w)) if b == w => {}
                (Ok(_), Ok(_)) => problems.push(format!(
                    "line {}: {}{}: the documented default changes the config:\n\
                     {with_text}differs from\n{base_text}",
                    row.line,
                    row.key,
                    tag(&row.key, action)
                )),
                (b, w) => problems.push(format!(
                    "line {}: {}{}: could not compare:\n{base_text}-> {:?}\n\
                     {with_text}-> {:?}",
                    row.line,
                    row.key,
                    tag(&row.key, action),
                    b.err(),
                    w.err()
                )),
            }
        }
    }
    assert!(compared > 50, "only {compared} defaults compared");
    fail_if_any(&problems, "documented defaults that disagree with the code");
}
