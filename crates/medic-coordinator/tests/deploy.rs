//! The shipped systemd unit passes `systemd-analyze verify` with no
//! warning about it (the binary path is pointed at the one just built).

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

/// Verifies `unit` with its `/usr/bin/NAME` replaced by `binary`; returns
/// the warnings that concern the unit file.
fn verify_unit(unit: &Path, name: &str, binary: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(unit).unwrap();
    let file = dir.path().join(unit.file_name().unwrap());
    std::fs::write(&file, text.replace(&format!("/usr/bin/{name}"), binary)).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&file)
        .output()
        .expect("systemd-analyze (scripts/test installs systemd)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let file_name = file.file_name().unwrap().to_string_lossy().into_owned();
    let mut warnings: Vec<String> = stderr
        .lines()
        .filter(|l| l.contains(&file_name))
        .map(str::to_owned)
        .collect();
    if !out.status.success() {
        warnings.push(format!(
            "systemd-analyze exited with {}: {stderr}",
            out.status
        ));
    }
    warnings
}

#[test]
fn coordinator_unit_verifies_clean() {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy/systemd/medic-coordinator.service");
    let warnings = verify_unit(
        &unit,
        "medic-coordinator",
        env!("CARGO_BIN_EXE_medic-coordinator"),
    );
    assert!(warnings.is_empty(), "{warnings:#?}");
    let text = std::fs::read_to_string(&unit).unwrap();
    for want in [
        "Type=notify",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "StateDirectory=medic",
        "User=medic",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "RestartPreventExitStatus=78",
    ] {
        assert!(text.contains(want), "the unit lacks {want}");
    }
}

#[test]
fn a_broken_unit_is_caught() {
    // The check itself must be able to fail: an unknown key is reported.
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("broken.service");
    std::fs::write(
        &unit,
        "[Service]\nType=notifyy\nExecStart=/usr/bin/medic-coordinator run\n",
    )
    .unwrap();
    let warnings = verify_unit(
        &unit,
        "medic-coordinator",
        env!("CARGO_BIN_EXE_medic-coordinator"),
    );
    assert!(!warnings.is_empty());
}

fn rules_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/prometheus")
}

#[test]
fn alert_rules_pass_promtool_and_their_unit_tests() {
    for args in [
        vec!["check", "rules", "medic-rules.yaml"],
        vec!["test", "rules", "medic-rules.test.yaml"],
    ] {
        let out = Command::new("promtool")
            .args(&args)
            .current_dir(rules_dir())
            .output()
            .expect("promtool (scripts/test installs prometheus)");
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The text exposition of every metric family medic exports: the
/// coordinator's and the agent's (`medic_agent_*`).
fn exported() -> String {
    use medic_agent::metrics::{ActionLabels, AgentMetrics, HookLabels, ReasonLabel};
    let coordinator = medic_coordinator::metrics::Metrics::new();
    // The gate families have a series per configured gate.
    let gate = medic_coordinator::metrics::GateLabel {
        gate: "db-down".to_owned(),
    };
    let _ = coordinator.gate_open.get_or_create(&gate);
    let _ = coordinator.gate_closed_domains.get_or_create(&gate);
    let _ = coordinator.gate_failing.get_or_create(&gate);
    let _ = coordinator.gate_errors.get_or_create(&gate);
    let _ = coordinator.gate_last_success.get_or_create(&gate);
    let mut all = coordinator.encode();
    // A labelled family shows only once it has a series.
    let agent = AgentMetrics::new();
    let _ = agent.permit_denials.get_or_create(&ReasonLabel {
        reason: "paused".to_owned(),
    });
    let _ = agent.actions.get_or_create(&ActionLabels {
        action: "restart_job".to_owned(),
        outcome: "succeeded".to_owned(),
    });
    let _ = agent.hooks.get_or_create(&HookLabels {
        hook: "pre".to_owned(),
        result: "ok".to_owned(),
    });
    all.push_str(&agent.encode());
    all
}

#[test]
fn alert_rules_use_only_metrics_medic_exports() {
    let exported = exported();
    let rules = std::fs::read_to_string(rules_dir().join("medic-rules.yaml")).unwrap();
    let mut checked = 0;
    for word in rules.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if !word.starts_with("medic_") {
            continue;
        }
        let family = word.strip_suffix("_total").unwrap_or(word);
        assert!(
            exported.contains(&format!("# TYPE {family} ")),
            "the rules use {word}, which neither the coordinator nor the agent exports"
        );
        checked += 1;
    }
    assert!(checked >= 6, "only {checked} metric references found");
}

#[test]
fn every_alert_has_a_runbook_section() {
    let rules = std::fs::read_to_string(rules_dir().join("medic-rules.yaml")).unwrap();
    let runbook = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/operations.md"),
    )
    .unwrap();
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert!(alerts.len() >= 8, "{alerts:?}");
    for alert in alerts {
        let anchor = format!("docs/operations.md#{}", alert.to_lowercase());
        let heading = format!("### {alert}");
        let fleetwide_shares = alert == "MedicAgentsCoordinatorUnreachableFleetwide";
        assert!(
            runbook.contains(&heading) || fleetwide_shares,
            "docs/operations.md has no section for {alert}"
        );
        assert!(
            rules.contains(&anchor) || fleetwide_shares,
            "{alert} does not link its runbook section ({anchor})"
        );
    }
}

fn dashboard() -> serde_json::Value {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/grafana/medic-dashboard.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn grafana_dashboard_queries_only_exported_metrics() {
    let dash = dashboard();
    let exported = exported();
    let panels = dash["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10);
    let mut metrics = 0;
    for p in panels {
        assert!(p["title"].as_str().is_some_and(|t| !t.is_empty()));
        for t in p["targets"].as_array().expect("targets") {
            let expr = t["expr"].as_str().expect("expr");
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if !word.starts_with("medic_") {
                    continue;
                }
                let family = word
                    .strip_suffix("_bucket")
                    .or_else(|| word.strip_suffix("_total"))
                    .unwrap_or(word);
                assert!(
                    exported.contains(&format!("# TYPE {family} ")),
                    "panel {:?} queries {word}, which neither the coordinator nor the agent exports",
                    p["title"]
                );
                metrics += 1;
            }
        }
    }
    assert!(metrics >= 15, "{metrics}");
}

/// The metric selectors in a PromQL expression: each `medic_*` name with
/// its label matchers ("" when it has none).
fn selectors(expr: &str) -> Vec<(&str, &str)> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut found = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("medic_") {
        let at_start = rest[..i].chars().next_back().is_none_or(|c| !word(c));
        let tail = &rest[i..];
        let end = tail.find(|c: char| !word(c)).unwrap_or(tail.len());
        let (name, after) = tail.split_at(end);
        let matchers = after
            .strip_prefix('{')
            .and_then(|m| m.split_once('}'))
            .map_or("", |(m, _)| m);
        if at_start {
            found.push((name, matchers));
        }
        rest = &tail[end..];
    }
    found
}

#[test]
fn grafana_dashboard_filters_every_query_on_the_instance_variable() {
    // The check itself: a selector without the filter is seen as such.
    assert_eq!(
        selectors(r#"sum(rate(medic_x_total[5m])) / medic_y{instance=~"$instance"}"#),
        [
            ("medic_x_total", ""),
            ("medic_y", r#"instance=~"$instance""#)
        ]
    );
    let dash = dashboard();
    let exported = exported();
    let vars = dash["templating"]["list"].as_array().expect("templating");
    let var = vars
        .iter()
        .find(|v| v["name"] == "instance")
        .expect("an `instance` variable");
    assert_eq!(var["type"], "query");
    assert_eq!(var["multi"], true);
    assert_eq!(var["includeAll"], true);
    // All as a regex of every listed instance would grow with the fleet,
    // and leave out hosts that appear after the dashboard was loaded.
    assert_eq!(var["allValue"], ".*");
    let query = var["query"].as_str().expect("query");
    assert!(
        query.starts_with("label_values(") && query.ends_with(", instance)"),
        "{query}"
    );
    let listed = selectors(query);
    assert!(!listed.is_empty(), "{query}");
    for (name, _) in listed {
        assert!(
            exported.contains(&format!("# TYPE {name} ")),
            "the instance variable lists {name}, which medic does not export"
        );
    }

    let filter = r#"instance=~"$instance""#;
    let mut panels: Vec<&serde_json::Value> =
        dash["panels"].as_array().expect("panels").iter().collect();
    let mut checked = 0;
    while let Some(p) = panels.pop() {
        // A collapsed row holds its panels.
        if let Some(inner) = p["panels"].as_array() {
            panels.extend(inner);
        }
        let Some(targets) = p["targets"].as_array() else {
            continue;
        };
        for t in targets {
            let expr = t["expr"].as_str().expect("expr");
            let found = selectors(expr);
            assert!(
                !found.is_empty(),
                "panel {:?} queries no medic metric: {expr}",
                p["title"]
            );
            for (name, matchers) in found {
                assert!(
                    matchers.split(',').any(|m| m.trim() == filter),
                    "panel {:?}: {name} in {expr} is not filtered on {filter}",
                    p["title"]
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 25, "{checked}");
}
