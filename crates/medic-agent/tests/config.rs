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
