//! agent.toml: the example is valid; broken files give every error with
//! its key path, from the library and from `medic-agent check-config`.

#![allow(clippy::unwrap_used)]

use std::process::Command;

use medic_agent::AgentConfig;

fn example() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/agent.toml")
}

/// The example, with its TLS paths pointed at a dev-certs set in `dir`.
fn example_in(dir: &std::path::Path) -> std::path::PathBuf {
    medic_coordinator::testing::example_with_dev_certs(&example(), dir, "web-17.example.net")
}

#[test]
fn example_config_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    let c = AgentConfig::load(&example_in(dir.path())).unwrap_or_else(|e| panic!("{e}"));
    assert!(c.tls.is_some());
    assert_eq!(c.host_id.as_str(), "web-17.example.net");
    assert_eq!(c.jobs.len(), 1);
    assert_eq!(c.jobs[0].confirm, 3);
}

#[test]
fn every_error_is_reported_with_its_key_path() {
    let e = AgentConfig::from_toml(
        r#"
        host_id = "h 1"
        coordinators = ["ftp://x"]
        check_interval = "often"
        colour = "blue"
        [[jobs]]
        confirm = 0
        [jobs.restart]
        signal = "KILLME"
        [[jobs]]
        name = "b"
        "#,
    )
    .expect_err("invalid");
    let text = e.to_string();
    for want in [
        "host_id: must not contain whitespace",
        "coordinators[0]: \"ftp://x\" is not an http:// or https:// URL",
        "check_interval: invalid duration \"often\"",
        "colour: unknown key",
        "jobs[0].name: is required",
        "jobs[0].confirm: must be an integer of at least 1, got 0",
        "jobs[0].restart.signal: unknown signal \"KILLME\"",
        "jobs[1]",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
}

#[test]
fn check_config_exits_0_on_the_example_and_78_on_errors() {
    let bin = env!("CARGO_BIN_EXE_medic-agent");
    let tmp = tempfile::tempdir().unwrap();
    let ok = Command::new(bin)
        .arg("check-config")
        .arg(example_in(tmp.path()))
        .output()
        .unwrap();
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(
        String::from_utf8_lossy(&ok.stdout)
            .contains("ok: host web-17.example.net, 1 job(s) [ingest]")
    );
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "check_interval = 5\n").unwrap();
    let out = Command::new(bin)
        .arg("check-config")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("check_interval"));
}

#[test]
fn tls_certificate_must_name_this_host_and_key_must_be_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let certs = medic_coordinator::testing::dev_certs(dir.path(), &["web-1"]);
    let toml = |host: &str| {
        format!(
            "host_id = \"{host}\"\ncoordinators = [\"https://localhost:7470\"]\n\
             [tls]\nca = \"{c}/ca.pem\"\ncert = \"{c}/agents/web-1.pem\"\nkey = \"{c}/agents/web-1.key\"\n",
            c = certs.display()
        )
    };
    AgentConfig::from_toml(&toml("web-1")).unwrap_or_else(|e| panic!("{e}"));
    let e = AgentConfig::from_toml(&toml("web-2"))
        .expect_err("not its host")
        .to_string();
    assert!(
        e.contains("tls.cert:") && e.contains("does not name this host") && e.contains("web-2"),
        "{e}"
    );
    std::fs::set_permissions(
        certs.join("agents/web-1.key"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let e = AgentConfig::from_toml(&toml("web-1"))
        .expect_err("readable key")
        .to_string();
    assert!(e.contains("tls.key:") && e.contains("mode 0644"), "{e}");
}

#[test]
fn https_and_tls_go_together() {
    let e = AgentConfig::from_toml("host_id = \"h\"\ncoordinators = [\"https://c:7470\"]\n")
        .expect_err("https without [tls]")
        .to_string();
    assert!(
        e.contains("coordinators[0]") && e.contains("needs [tls]"),
        "{e}"
    );
}

// === Every value has a bound (issue 14) ===

/// The message of the error at `path`, or a panic listing what there was.
fn error_at(toml: &str, path: &str) -> String {
    let e = AgentConfig::from_toml(toml).expect_err("refused");
    e.0.iter()
        .find(|e| e.path == path)
        .map(|e| e.message.clone())
        .unwrap_or_else(|| panic!("no error at {path}; got:\n{e}"))
}

#[test]
fn intervals_and_timeouts_past_their_bounds_are_refused_naming_the_key() {
    for (toml, path, want) in [
        (
            "host_id = \"h\"\nheartbeat_interval = \"1ms\"\n",
            "heartbeat_interval",
            "must be at least 10ms, got 1ms",
        ),
        (
            "host_id = \"h\"\nheartbeat_interval = \"2h\"\n",
            "heartbeat_interval",
            "must be at most 1h, got 2h",
        ),
        (
            "host_id = \"h\"\ncheck_interval = \"1ms\"\n",
            "check_interval",
            "must be at least 10ms, got 1ms",
        ),
        (
            "host_id = \"h\"\nrequest_timeout = \"2h\"\n",
            "request_timeout",
            "must be at most 1h, got 2h",
        ),
        (
            "host_id = \"h\"\nsafety_margin = \"7000000000000000000s\"\n",
            "safety_margin",
            "must be at most 10years",
        ),
        (
            "host_id = \"h\"\n[[jobs]]\nname = \"j\"\nheartbeat_file = { path = \"/run/j\", stale_after = \"11y\" }\n",
            "jobs[0].heartbeat_file.stale_after",
            "must be at most 10years",
        ),
        (
            "host_id = \"h\"\n[[jobs]]\nname = \"j\"\nconfirm = 4294967295\nheartbeat_file = { path = \"/run/j\" }\n",
            "jobs[0].confirm",
            "must be at most 1000000",
        ),
    ] {
        let m = error_at(toml, path);
        assert!(m.contains(want), "{path}: {m}");
    }
}

#[test]
fn a_state_dir_that_exists_and_is_not_a_directory_is_refused_naming_the_key() {
    let m = error_at("host_id = \"h\"\nstate_dir = \"/dev/null\"\n", "state_dir");
    assert!(m.contains("/dev/null exists and is not a directory"), "{m}");
}

#[test]
fn host_ids_labels_and_job_names_with_invisible_characters_are_refused() {
    // A right-to-left override and a zero-width space: ids that print as
    // something else, or like another host's.
    let m = error_at("host_id = \"web-1\u{202E}\"\n", "host_id");
    assert!(m.contains("invisible") && m.contains("U+202E"), "{m}");
    let m = error_at("host_id = \"web\u{200B}-1\"\n", "host_id");
    assert!(m.contains("U+200B"), "{m}");
    let m = error_at(
        "host_id = \"h\"\n[labels]\nrack = \"r1\u{2066}\"\n",
        "labels.rack",
    );
    assert!(m.contains("value must not contain invisible"), "{m}");
    let m = error_at(
        "host_id = \"h\"\n[[jobs]]\nname = \"ingest\u{FEFF}\"\nheartbeat_file = { path = \"/run/j\" }\n",
        "jobs[0].name",
    );
    assert!(m.contains("U+FEFF"), "{m}");
}

#[test]
fn an_unknown_key_in_an_inline_detector_table_is_named_by_its_path() {
    let m = error_at(
        "host_id = \"h\"\n[[jobs]]\nname = \"j\"\nheartbeat_file = { path = \"/run/j\", colour = 1 }\n",
        "jobs[0].heartbeat_file.colour",
    );
    assert_eq!(m, "unknown key");
}

#[test]
fn check_config_rejects_a_job_whose_restart_can_give_no_fresh_evidence() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("agent.toml");
    std::fs::write(
        &path,
        r#"
host_id = "h1"
[[jobs]]
name = "ingest"
[jobs.heartbeat_file]
path = "/run/ingest.hb"
"#,
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_medic-agent"))
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(
        stderr.contains("jobs[0].restart: job \"ingest\" cannot be restarted")
            && stderr.contains("no restart.command and no process detector"),
        "{stderr}"
    );
    // A job going straight to a reboot needs no restart.
    let ok = AgentConfig::from_toml(
        "host_id = \"h1\"\n[[jobs]]\nname = \"ingest\"\nreboot_after_failed_restarts = 0\n[jobs.heartbeat_file]\npath = \"/run/ingest.hb\"\n",
    );
    assert!(ok.is_ok(), "{ok:?}");
}

/// An agent that could not keep its ladder or a reboot's pending permit
/// must not run: an unusable `state_dir` stops start-up, naming it.
#[test]
fn an_unusable_state_dir_stops_start_up_naming_it() {
    let bin = env!("CARGO_BIN_EXE_medic-agent");
    let dir = tempfile::tempdir().unwrap();
    // A regular file where a directory must be created: unusable even for
    // root.
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, "x").unwrap();
    let state_dir = blocker.join("state");
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            r#"
host_id = "h1"
coordinators = ["http://127.0.0.1:9"]
state_dir = "{}"
[[jobs]]
name = "ingest"
[jobs.restart]
command = ["true"]
[jobs.heartbeat_file]
path = "{}"
"#,
            state_dir.display(),
            dir.path().join("job.hb").display()
        ),
    )
    .unwrap();
    let out = Command::new(bin)
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    // Logs go to stdout or stderr depending on the log setup: read both.
    let stderr = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(73), "{stderr}");
    assert!(
        stderr.contains(&state_dir.display().to_string()),
        "{stderr}"
    );
    assert!(stderr.contains("does not start without it"), "{stderr}");
}

#[test]
fn hooks_and_probation_are_validated_naming_the_key() {
    let job = "host_id = \"h\"\n[[jobs]]\nname = \"j\"\nrestart.command = [\"true\"]\nheartbeat_file = { path = \"/run/j\" }\n";
    for (extra, path, want) in [
        (
            "[jobs.pre]\ntimeout = \"5s\"\n",
            "jobs[0].pre.command",
            "is required",
        ),
        (
            "[jobs.post]\ncommand = []\n",
            "jobs[0].post.command",
            "must name a program",
        ),
        (
            "[jobs.pre]\ncommand = [\"drain\"]\ntimeout = \"0s\"\n",
            "jobs[0].pre.timeout",
            "must be longer than zero",
        ),
        (
            "[jobs.pre]\ncommand = [\"drain\"]\ntimout = \"5s\"\n",
            "jobs[0].pre.timout",
            "unknown key",
        ),
        (
            "probation = \"2days\"\n",
            "jobs[0].probation",
            "must be at most 1day",
        ),
    ] {
        // `probation` belongs to the job's own table, before its sub-tables.
        let toml = if extra.starts_with('[') {
            format!("{job}{extra}")
        } else {
            job.replacen("name = \"j\"\n", &format!("name = \"j\"\n{extra}"), 1)
        };
        let m = error_at(&toml, path);
        assert!(m.contains(want), "{path}: {m}");
    }
    let ok = AgentConfig::from_toml(&format!(
        "{}[jobs.pre]\ncommand = [\"/usr/local/bin/drain\", \"--wait\"]\n[jobs.post]\ncommand = [\"/usr/local/bin/undrain\"]\ntimeout = \"2m\"\n",
        job.replacen("name = \"j\"\n", "name = \"j\"\nprobation = \"0s\"\n", 1)
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    let j = &ok.jobs[0];
    assert_eq!(j.probation, std::time::Duration::ZERO);
    let pre = j.pre.as_ref().unwrap();
    assert_eq!(pre.command, ["/usr/local/bin/drain", "--wait"]);
    assert_eq!(pre.timeout, std::time::Duration::from_secs(60));
    assert_eq!(
        j.post.as_ref().unwrap().timeout,
        std::time::Duration::from_secs(120)
    );
    let defaults = AgentConfig::from_toml(job).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        defaults.jobs[0].probation,
        std::time::Duration::from_secs(300)
    );
    assert!(defaults.jobs[0].pre.is_none() && defaults.jobs[0].post.is_none());
}

#[test]
fn start_grace_needs_a_process_detector_and_stays_within_an_hour() {
    let job = "host_id = \"h\"\n[[jobs]]\nname = \"j\"\nrestart.command = [\"true\"]\nheartbeat_file = { path = \"/run/j\" }\n";
    let with = |keys: &str| job.replacen("name = \"j\"\n", &format!("name = \"j\"\n{keys}\n"), 1);
    let m = error_at(&with("start_grace = \"2m\""), "jobs[0].start_grace");
    assert!(
        m.contains("no process detector") && m.contains("[jobs.process]"),
        "{m}"
    );
    let m = error_at(
        &format!(
            "{}process = {{ pidfile = \"/run/j.pid\" }}\n",
            with("start_grace = \"2h\"")
        ),
        "jobs[0].start_grace",
    );
    assert!(m.contains("must be at most 1h"), "{m}");
    let ok = AgentConfig::from_toml(&format!(
        "{}process = {{ pidfile = \"/run/j.pid\" }}\n",
        with("start_grace = \"90s\"")
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ok.jobs[0].start_grace, std::time::Duration::from_secs(90));
    let defaults = AgentConfig::from_toml(job).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(defaults.jobs[0].start_grace, std::time::Duration::ZERO);
}

#[test]
fn a_ladder_of_custom_and_builtin_rungs_is_read_in_order() {
    let c = AgentConfig::from_toml(
        r#"
host_id = "h1"
[[jobs]]
name = "ingest"
[[jobs.ladder]]
action = "restart_job"
attempts = 2
[[jobs.ladder]]
action = "drain_host"
command = ["/usr/local/bin/drain", "ingest"]
timeout = "2m"
[[jobs.ladder]]
action = "reboot_host"
[jobs.restart]
command = ["systemctl", "restart", "ingest"]
[jobs.heartbeat_file]
path = "/run/ingest.hb"
"#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let ladder = &c.jobs[0].ladder;
    let names: Vec<(&str, u32)> = ladder
        .iter()
        .map(|s| (s.action.as_str(), s.attempts))
        .collect();
    assert_eq!(
        names,
        [("restart_job", 2), ("drain_host", 1), ("reboot_host", 1)]
    );
    let drain = ladder[1].custom.as_ref().unwrap();
    assert_eq!(drain.command, ["/usr/local/bin/drain", "ingest"]);
    assert_eq!(drain.timeout, std::time::Duration::from_secs(120));
    // verify_timeout defaults to the restart's (2m).
    assert_eq!(drain.verify_timeout, std::time::Duration::from_secs(120));
}

#[test]
fn ladder_mistakes_are_named_by_key() {
    let job = |ladder: &str| {
        format!(
            "host_id = \"h1\"\n[[jobs]]\nname = \"ingest\"\n{ladder}\n[jobs.heartbeat_file]\npath = \"/run/x.hb\"\n"
        )
    };
    for (ladder, path, words) in [
        (
            "[[jobs.ladder]]\naction = \"drain_host\"\n",
            "jobs[0].ladder[0].command",
            "is required for the custom action drain_host",
        ),
        (
            "[[jobs.ladder]]\naction = \"reboot_host\"\ncommand = [\"x\"]\n",
            "jobs[0].ladder[0].command",
            "is for custom actions",
        ),
        (
            "[[jobs.ladder]]\naction = \"Drain Host\"\ncommand = [\"x\"]\n",
            "jobs[0].ladder[0].action",
            "invalid action name",
        ),
        (
            "[[jobs.ladder]]\naction = \"reboot_host\"\n[[jobs.ladder]]\naction = \"reboot_host\"\n",
            "jobs[0].ladder[1].action",
            "already a rung",
        ),
        (
            "reboot_after_failed_restarts = 1\n[[jobs.ladder]]\naction = \"reboot_host\"\n",
            "jobs[0].reboot_after_failed_restarts",
            "cannot be combined with ladder",
        ),
        ("ladder = []\n", "jobs[0].ladder", "at least one rung"),
    ] {
        let msg = error_at(&job(ladder), path);
        assert!(msg.contains(words), "{path}: {msg}");
    }
}
