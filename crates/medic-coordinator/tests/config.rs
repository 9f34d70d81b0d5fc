//! coordinator.toml: the example is valid and documents the defaults;
//! broken files produce every error with its key path, from the library and
//! from `medic-coordinator check-config` (exit 78).

#![allow(clippy::unwrap_used)]

use std::process::Command;

use medic_coordinator::CoordinatorConfig;
use medic_coordinator::config::TransportSecurity;
use medic_coordinator::testing::{dev_certs, example_with_dev_certs};

fn example_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/coordinator.toml")
}

#[test]
fn embedded_defaults_are_valid() {
    let c = CoordinatorConfig::default();
    assert_eq!(c.server.listen.to_string(), "127.0.0.1:7470");
    assert_eq!(c.server.metrics_listen.to_string(), "127.0.0.1:7471");
}

/// The example differs from the embedded defaults only where it shows
/// mutual TLS: a network listen address, [tls] and the dev-certs operator
/// patterns.
#[test]
fn example_config_is_valid_and_documents_the_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let file = example_with_dev_certs(&example_path(), dir.path(), "web-17.example.net");
    let example = CoordinatorConfig::load(&file).unwrap_or_else(|e| panic!("{e}"));
    let default = CoordinatorConfig::default();
    assert_eq!(example.server.listen.to_string(), "0.0.0.0:7470");
    assert_eq!(example.transport_security(), TransportSecurity::MutualTls);
    assert_eq!(
        example.auth.admin[0].as_str(),
        medic_coordinator::devcerts::ADMIN_URI
    );
    assert_eq!(
        example.auth.read_only[0].as_str(),
        medic_coordinator::devcerts::VIEWER_URI
    );
    let mut server = example.server.clone();
    server.listen = default.server.listen;
    assert_eq!(server, default.server);
    assert_eq!(example.policy, default.policy);
    assert_eq!(example.audit, default.audit);
    assert_eq!(example.notify, default.notify);
    assert_eq!(example.auth.agent_identity, default.auth.agent_identity);
}

#[test]
fn non_loopback_listen_without_tls_is_refused_saying_how_to_fix_it() {
    let e = CoordinatorConfig::from_toml("[server]\nlisten = \"10.1.2.3:7470\"\n")
        .expect_err("refused");
    let text = e.to_string();
    assert!(
        text.contains(
            "server.listen: 10.1.2.3:7470 is not a loopback address, and there is no [tls]"
        ),
        "{text}"
    );
    assert!(
        text.contains("dev-certs") && text.contains("insecure = true"),
        "{text}"
    );
    // Said knowingly, it starts, and says so.
    let c = CoordinatorConfig::from_toml("[server]\nlisten = \"10.1.2.3:7470\"\ninsecure = true\n")
        .unwrap();
    assert_eq!(c.transport_security(), TransportSecurity::Insecure);
    assert!(c.summary().contains("INSECURE"), "{}", c.summary());
    // Metrics are read-only and may listen anywhere.
    CoordinatorConfig::from_toml("[server]\nmetrics_listen = \"0.0.0.0:7471\"\n").unwrap();
}

fn tls_section(certs: &std::path::Path, key: &str) -> String {
    format!(
        "[tls]\ncert = \"{c}/server.pem\"\nkey = \"{key}\"\nclient_ca = \"{c}/ca.pem\"\n",
        c = certs.display()
    )
}

#[test]
fn private_keys_and_tokens_readable_by_others_are_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let certs = dev_certs(dir.path(), &[]);
    let key = certs.join("server.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o604)).unwrap();
    let token = dir.path().join("bot.token");
    std::fs::write(&token, "x".repeat(40)).unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
    let text = format!(
        "{}[[auth.tokens]]\nname = \"bot\"\nfile = \"{}\"\nrole = \"admin\"\n",
        tls_section(&certs, key.to_str().unwrap()),
        token.display()
    );
    let e = CoordinatorConfig::from_toml(&text)
        .expect_err("refused")
        .to_string();
    assert!(e.contains("tls.key:") && e.contains("mode 0604"), "{e}");
    assert!(
        e.contains("auth.tokens[0].file:") && e.contains("mode 0644"),
        "{e}"
    );
    assert!(e.contains("chmod 600"), "{e}");
}

#[test]
fn tls_and_auth_mistakes_are_reported_with_their_key_paths() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dev_certs(dir.path(), &[]);
    let weak = dir.path().join("weak.token");
    std::fs::write(&weak, "short").unwrap();
    std::fs::set_permissions(&weak, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let text = format!(
        "[server]\ninsecure = true\n{}[auth]\nagent_identity = \"spiffe\"\n\
         agent_spiffe_prefix = \"spiffe://medic.dev/host/\"\nadmin = [\"*\", \"spiffe://medic.dev/*\"]\n\
         [[auth.tokens]]\nname = \"a b\"\nfile = \"{}\"\nrole = \"root\"\n",
        tls_section(&certs, &format!("{}/missing.key", certs.display())),
        weak.display()
    );
    let e = CoordinatorConfig::from_toml(&text)
        .expect_err("refused")
        .to_string();
    for want in [
        "server.insecure: is true but [tls] is configured",
        "tls.key: cannot read",
        "auth.admin[0]: \"*\" would match every certificate",
        "auth.admin[1]: \"spiffe://medic.dev/*\" also matches agents' identities",
        "auth.tokens[0].name: must be 1-64 characters",
        "auth.tokens[0].role: must be \"admin\" or \"read-only\"",
        "auth.tokens[0].file:",
        "at least 32 characters",
    ] {
        assert!(e.contains(want), "missing {want:?} in:\n{e}");
    }
}

#[test]
fn reload_cannot_switch_tls_on_or_off() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dev_certs(dir.path(), &[]);
    let old = CoordinatorConfig::default();
    let new = CoordinatorConfig::from_toml(&tls_section(
        &certs,
        certs.join("server.key").to_str().unwrap(),
    ))
    .unwrap();
    let paths: Vec<String> = old
        .reload_errors(&new)
        .into_iter()
        .map(|e| e.path)
        .collect();
    assert_eq!(paths, vec!["tls".to_owned()]);
}

#[test]
fn server_and_policy_errors_are_reported_together_with_key_paths() {
    let e = CoordinatorConfig::from_toml(
        r#"
        [server]
        listen = "0.0.0.0:7470"
        metrics_listen = "localhost"
        admission = { per_second = 0 }
        shutdown_grace = "soon"
        [audit]
        max_entries = -5
        [limits.reboot_host]
        max_in_flight_percent = 250
        [fleet]
        heartbeat_intervall = "10s"
        "#,
    )
    .expect_err("invalid");
    let text = e.to_string();
    for want in [
        "server.listen: 0.0.0.0:7470 is not a loopback address",
        "server.metrics_listen: invalid address \"localhost\"",
        "server.admission.per_second: must be an integer of at least 1, got 0",
        "server.shutdown_grace: invalid duration \"soon\"",
        "audit.max_entries: must be an integer of at least 1, got -5",
        "limits.reboot_host.max_in_flight_percent: must be in (0, 100], got 250",
        "fleet.heartbeat_intervall: unknown key",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
}

#[test]
fn reload_refuses_settings_that_need_a_restart() {
    let old = CoordinatorConfig::default();
    let new = CoordinatorConfig::from_toml(
        "[server]\nlisten = \"127.0.0.1:9999\"\nstate_dir = \"/tmp/other\"\n",
    )
    .expect("valid");
    let errors = old.reload_errors(&new);
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, vec!["server.listen", "server.state_dir"]);
    assert!(errors[0].message.contains("restart the coordinator"));
}

fn check_config(file: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_medic-coordinator"))
        .arg("check-config")
        .arg(file)
        .output()
        .expect("run medic-coordinator")
}

#[test]
fn check_config_passes_on_the_example_with_a_summary() {
    let dir = tempfile::tempdir().unwrap();
    let file = example_with_dev_certs(&example_path(), dir.path(), "web-17.example.net");
    let out = check_config(&file);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(": ok: mode enforce, listen 0.0.0.0:7470 (mutual TLS)"),
        "{stdout}"
    );
    assert_eq!(stdout.lines().count(), 1, "one-line summary: {stdout}");
}

#[test]
fn check_config_prints_every_error_and_exits_78() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases: &[(&str, &[&str])] = &[
        (
            "mode = \"yolo\"\n[breaker]\nfailure_percent = 0\n",
            &[
                "mode: must be \"enforce\" or \"dry-run\"",
                "breaker.failure_percent: must be in (0, 100], got 0",
            ],
        ),
        ("[fleet\n", &["line 1"]),
        (
            "[limits.restart_job]\nrate = { count = 0, per = \"0s\" }\n",
            &[
                "limits.restart_job.rate.count",
                "limits.restart_job.rate.per: must be longer than zero",
            ],
        ),
        (
            "[limits.reboot_host]\ntimezone = \"Nowhere/Land\"\nwindows = [{ days = [\"someday\"], start = \"9\", end = \"17:00\" }]\n",
            &[
                "limits.reboot_host.timezone: unknown IANA time zone \"Nowhere/Land\"",
                "limits.reboot_host.windows[0].days[0]: unknown day \"someday\"",
                "limits.reboot_host.windows[0].start: invalid time \"9\"",
            ],
        ),
        (
            "[server]\nstate_dir = \"\"\n",
            &["server.state_dir: must not be empty"],
        ),
    ];
    for (i, (text, wants)) in cases.iter().enumerate() {
        let file = dir.path().join(format!("broken-{i}.toml"));
        std::fs::write(&file, text).expect("write");
        let out = check_config(&file);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "case {i}: {stderr}");
        for want in *wants {
            assert!(
                stderr.contains(want),
                "case {i}: missing {want:?} in:\n{stderr}"
            );
        }
    }
}

#[test]
fn check_config_on_a_missing_file_names_it() {
    let out = check_config(std::path::Path::new("/nonexistent/medic.toml"));
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read /nonexistent/medic.toml"));
}

#[test]
fn bad_usage_exits_64() {
    let out = Command::new(env!("CARGO_BIN_EXE_medic-coordinator"))
        .arg("frobnicate")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(64));
}

const REPLICA: &str = "[store]\nkind = \"etcd\"\nendpoints = [\"http://10.0.0.1:2379\"]\n\
                       advertise = \"http://10.0.0.2:7470\"\n";

#[test]
fn a_replica_file_on_etcd_refuses_the_fleet_wide_sections_naming_each() {
    let text = format!(
        "mode = \"dry-run\"\n{REPLICA}[limits.reboot_host]\nmax_in_flight = 2\n[notify]\nqueue = 5\n"
    );
    let e = CoordinatorConfig::from_toml(&text)
        .expect_err("refused")
        .to_string();
    for section in ["mode", "limits", "notify"] {
        assert!(
            e.contains(&format!(
                "{section}: is fleet-wide with [store] kind = \"etcd\""
            )),
            "{section} in:\n{e}"
        );
    }
    assert!(e.contains("medic-coordinator config push"), "{e}");
    assert!(!e.contains("server"), "{e}");
    // Without them it is a valid replica file; the embedded store's file
    // still holds everything.
    CoordinatorConfig::from_toml(REPLICA).unwrap();
    CoordinatorConfig::from_toml("mode = \"dry-run\"\n[limits.reboot_host]\nmax_in_flight = 2\n")
        .unwrap();
}

#[test]
fn a_fleet_config_holds_only_fleet_wide_sections_each_validated() {
    use medic_coordinator::config::FleetConfig;
    let fleet =
        FleetConfig::from_toml("mode = \"dry-run\"\n[limits.reboot_host]\nmax_in_flight = 2\n")
            .unwrap();
    assert!(fleet.policy.dry_run);
    assert_eq!(
        fleet
            .policy
            .limits(medic_policy::Action::RebootHost)
            .max_in_flight,
        2
    );
    let e = FleetConfig::from_toml(
        "[server]\nlisten = \"0.0.0.0:7470\"\n[store]\nkind = \"etcd\"\n\
         [limits.reboot_host]\nmax_in_flight = -1\n",
    )
    .expect_err("refused")
    .to_string();
    for want in [
        "server: is not fleet-wide: each replica sets [server] in its own coordinator.toml",
        "store: is not fleet-wide",
        "limits.reboot_host.max_in_flight:",
    ] {
        assert!(e.contains(want), "missing {want:?} in:\n{e}");
    }
}

#[test]
fn etcd_tls_settings_are_checked_with_their_key_paths() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let certs = dev_certs(dir.path(), &["etcd-client"]);
    let https = REPLICA.replace("http://10.0.0.1:2379", "https://10.0.0.1:2379");
    let e = CoordinatorConfig::from_toml(&https)
        .expect_err("https needs [store.tls]")
        .to_string();
    assert!(
        e.contains("store.tls: is required with https:// endpoints"),
        "{e}"
    );
    let e = CoordinatorConfig::from_toml(&format!(
        "{REPLICA}[store.tls]\nca = \"{}/ca.pem\"\n",
        certs.display()
    ))
    .expect_err("tls with http endpoints")
    .to_string();
    assert!(
        e.contains("store.tls: is set but the endpoints are http://"),
        "{e}"
    );
    let key = certs.join("agents/etcd-client.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = CoordinatorConfig::from_toml(&format!(
        "{https}[store.tls]\nca = \"{c}/missing.pem\"\ncert = \"{c}/agents/etcd-client.pem\"\n\
         key = \"{}\"\n",
        key.display(),
        c = certs.display()
    ))
    .expect_err("bad files")
    .to_string();
    assert!(e.contains("store.tls.ca: cannot read"), "{e}");
    assert!(
        e.contains("store.tls.key:") && e.contains("mode 0644"),
        "{e}"
    );
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let ok = CoordinatorConfig::from_toml(&format!(
        "{https}[store.tls]\nca = \"{c}/ca.pem\"\ncert = \"{c}/agents/etcd-client.pem\"\n\
         key = \"{}\"\nserver_name = \"localhost\"\n",
        key.display(),
        c = certs.display()
    ));
    assert!(ok.is_ok(), "{ok:?}");
}

#[test]
fn check_config_on_a_replica_file_says_the_limits_are_in_etcd() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("replica.toml");
    std::fs::write(&file, REPLICA).unwrap();
    let out = check_config(&file);
    let stdout = String::from_utf8_lossy(&out.stdout);
    if cfg!(feature = "etcd") {
        assert_eq!(out.status.code(), Some(0), "{stdout}");
        assert!(
            stdout.contains("the fleet-wide limits are in etcd"),
            "{stdout}"
        );
    } else {
        assert_eq!(out.status.code(), Some(78), "{stdout}");
    }
}

#[test]
fn config_check_validates_a_fleet_file_offline() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("fleet.toml");
    std::fs::write(&good, "[limits.reboot_host]\nmax_in_flight = 2\n").unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[server]\nlisten = \"0.0.0.0:1\"\n[breaker]\nfailure_percent = 0\n",
    )
    .unwrap();
    let run = |f: &std::path::Path| {
        Command::new(env!("CARGO_BIN_EXE_medic-coordinator"))
            .args(["config", "check"])
            .arg(f)
            .output()
            .unwrap()
    };
    let out = run(&good);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("ok: mode enforce") && stdout.contains("reboot_host max 2"),
        "{stdout}"
    );
    let out = run(&bad);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("server: is not fleet-wide"), "{stderr}");
    assert!(stderr.contains("breaker.failure_percent"), "{stderr}");
    assert!(stderr.contains("2 error(s)"), "{stderr}");
}

// === Every value has a bound (issue 14) ===

/// The message of the error at `path`, or a panic listing what there was.
fn error_at(toml: &str, path: &str) -> String {
    let e = CoordinatorConfig::from_toml(toml).expect_err("refused");
    e.0.iter()
        .find(|e| e.path == path)
        .map(|e| e.message.clone())
        .unwrap_or_else(|| panic!("no error at {path}; got:\n{e}"))
}

/// The configs of the report that made the coordinator panic, or that it
/// accepted although they cannot work: each now stops check-config with
/// exit 78, naming the key.
const CONFIGS_THAT_PANICKED: &[(&str, &[&str])] = &[
    (
        "[fleet]\nheartbeat_interval = \"7000000000000000000s\"\n",
        &["fleet.heartbeat_interval: must be at most 10years"],
    ),
    (
        "[limits.restart_job]\nrate = { count = 1, per = \"100000000000s\", burst = 4294967295 }\n",
        &[
            "limits.restart_job.rate.per: must be at most 10years",
            "limits.restart_job.rate.burst: must be at most 1000000, got 4294967295",
        ],
    ),
    (
        "[limits.reboot_host]\nrate = { count = 1, per = \"1y\", burst = 1000000 }\n",
        &["limits.reboot_host.rate: looks back"],
    ),
    (
        "[audit]\ndenial_sample_interval = \"100000000000s\"\n",
        &["audit.denial_sample_interval: must be at most 10years"],
    ),
    (
        "[audit]\ndenial_sample_interval = \"2d\"\n",
        &["audit.denial_sample_interval: must be at most 1day, got 2days"],
    ),
    (
        "[server]\ntick_interval = \"1ns\"\n",
        &["server.tick_interval: must be at least 10ms, got 1ns"],
    ),
    (
        "[fleet]\nheartbeat_interval = \"1ms\"\n",
        &["fleet.heartbeat_interval: must be at least 10ms, got 1ms"],
    ),
    (
        "[breaker]\nmin_samples = 4294967295\n",
        &["breaker.min_samples: must be at most 1000000, got 4294967295"],
    ),
    (
        "[server]\nstate_dir = \"/dev/null\"\n",
        &["server.state_dir: /dev/null exists and is not a directory"],
    ),
];

#[test]
fn check_config_refuses_every_config_that_used_to_panic_with_exit_78_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for (i, (text, wants)) in CONFIGS_THAT_PANICKED.iter().enumerate() {
        let file = dir.path().join(format!("case-{i}.toml"));
        std::fs::write(&file, text).unwrap();
        let out = check_config(&file);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "case {i} {text:?}: {stderr}");
        for want in *wants {
            assert!(
                stderr.contains(want),
                "case {i}: missing {want:?} in:\n{stderr}"
            );
        }
        assert!(!stderr.contains("panicked"), "case {i}: {stderr}");
    }
}

#[test]
fn tick_interval_below_ten_milliseconds_is_refused_naming_the_key() {
    let m = error_at(
        "[server]\ntick_interval = \"9ms\"\n",
        "server.tick_interval",
    );
    assert!(m.contains("must be at least 10ms, got 9ms"), "{m}");
    let m = error_at(
        "[server]\ntick_interval = \"11s\"\n",
        "server.tick_interval",
    );
    assert!(m.contains("must be at most 10s, got 11s"), "{m}");
    let c = CoordinatorConfig::from_toml("[server]\ntick_interval = \"10ms\"\n").unwrap();
    assert_eq!(c.server.tick_interval, std::time::Duration::from_millis(10));
}

#[test]
fn a_state_dir_that_exists_and_is_not_a_directory_is_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let m = error_at(
        &format!("[server]\nstate_dir = \"{}\"\n", file.display()),
        "server.state_dir",
    );
    assert!(m.contains("exists and is not a directory"), "{m}");
    // A missing one is created at start; an existing directory is fine.
    CoordinatorConfig::from_toml(&format!(
        "[server]\nstate_dir = \"{}\"\n",
        dir.path().join("new").display()
    ))
    .unwrap();
    CoordinatorConfig::from_toml(&format!(
        "[server]\nstate_dir = \"{}\"\n",
        dir.path().display()
    ))
    .unwrap();
}

#[test]
fn server_audit_and_notify_values_past_their_bounds_are_refused_naming_the_key() {
    for (toml, path, want) in [
        (
            "[server]\nshutdown_grace = \"2h\"\n",
            "server.shutdown_grace",
            "must be at most 1h, got 2h",
        ),
        (
            "[server]\nrequest_timeout = \"2h\"\n",
            "server.request_timeout",
            "must be at most 1h, got 2h",
        ),
        (
            "[server]\nadmission = { per_second = 1000001 }\n",
            "server.admission.per_second",
            "must be at most 1000000",
        ),
        (
            "[server]\nadmission = { burst = 1000001 }\n",
            "server.admission.burst",
            "must be at most 1000000",
        ),
        (
            "[audit]\nretention = \"11y\"\n",
            "audit.retention",
            "must be at most 10years",
        ),
        (
            "[audit]\nsnapshot_every = 1000001\n",
            "audit.snapshot_every",
            "must be at most 1000000",
        ),
        (
            "[notify]\nqueue = 1000001\n",
            "notify.queue",
            "must be at most 1000000",
        ),
        (
            "[[notify.webhooks]]\nurl = \"http://hooks.example\"\ntimeout = \"10m\"\n",
            "notify.webhooks[0].timeout",
            "must be at most 5m, got 10m",
        ),
        (
            "[[notify.webhooks]]\nurl = \"http://hooks.example\"\nmax_attempts = 101\n",
            "notify.webhooks[0].max_attempts",
            "must be at most 100, got 101",
        ),
    ] {
        let m = error_at(toml, path);
        assert!(m.contains(want), "{path}: {m}");
    }
}

#[test]
fn an_unknown_key_in_an_inline_table_is_named_without_a_question_mark() {
    let m = error_at(
        "[limits.restart_job]\nrate = { count = 1, extra = 2 }\n",
        "limits.restart_job.rate.extra",
    );
    assert_eq!(m, "unknown key");
    let m = error_at(
        "[[notify.webhooks]]\nurl = \"http://hooks.example\"\ncolour = 1\n",
        "notify.webhooks[0].colour",
    );
    assert_eq!(m, "unknown key");
}

#[test]
fn the_runbook_gives_the_tls_handshake_timeout_and_limit_the_code_uses() {
    let runbook = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/operations.md"),
    )
    .unwrap();
    let timeout = humantime::format_duration(medic_coordinator::tls::HANDSHAKE_TIMEOUT);
    assert!(
        runbook.contains(&format!("do not finish the handshake within {timeout}")),
        "docs/operations.md must give the handshake timeout of the code ({timeout})"
    );
    let busy = medic_coordinator::tls::MAX_HANDSHAKES;
    assert!(
        runbook.contains(&format!("more than {busy} handshakes were in progress")),
        "docs/operations.md must give the handshake limit of the code ({busy})"
    );
}
