//! End-to-end: the real `medicctl` binary against an in-process
//! coordinator on a loopback port, with agents driven over gRPC.

#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::*;
use medic_proto::pb::v1 as pb;
use pb::Action::RestartJob;
use serde_json::Value;

#[tokio::test]
async fn pause_denies_agents_with_paused_until_resumed() {
    let dir = tempfile::tempdir().unwrap();
    let (server, mut agent, _) = ready(dir.path(), FAST, &["h1", "h2"]).await;

    let out = server
        .medicctl(&[
            "pause",
            "--reason",
            "db-3 failover, INC-1234",
            "--as",
            "alice",
        ])
        .await;
    assert!(out.ok().contains("paused fleet"), "{out:#?}");

    let d = denied(request(&mut agent, "h1", RestartJob, "a").await);
    assert_eq!(d.reason(), pb::DenyReason::Paused);
    assert!(d.message.contains("INC-1234"), "{}", d.message);

    let out = server
        .medicctl(&[
            "resume",
            "--reason",
            "db-3 is back",
            "--as",
            "alice",
            "-o",
            "json",
        ])
        .await
        .json();
    assert_eq!(out["resumed"].as_array().unwrap().len(), 1, "{out}");
    assert_eq!(out["resumed"][0]["reason"], "db-3 failover, INC-1234");

    granted(request(&mut agent, "h1", RestartJob, "b").await);

    // Both calls are in the audit history with the caller and the reason.
    let h = server
        .medicctl(&["history", "--kind", "pause", "-o", "json"])
        .await
        .json();
    let events = h["events"].as_array().unwrap();
    assert_eq!(events.len(), 2, "{h}");
    assert_eq!(events[0]["payload"]["type"], "paused");
    assert_eq!(events[1]["payload"]["type"], "resumed");
    assert_eq!(events[1]["reason"], "db-3 is back");
    for e in events {
        let actor = e["actor"].as_str().unwrap();
        assert!(actor.starts_with("unverified:alice@127.0.0.1"), "{actor}");
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn scoped_pause_affects_only_matching_hosts() {
    let dir = tempfile::tempdir().unwrap();
    // h1 and h3 are in rack r1, h2 in rack r2.
    let (server, mut agent, _) = ready(dir.path(), FAST, &["h1", "h2", "h3"]).await;

    server
        .medicctl(&[
            "pause",
            "--reason",
            "rack r1 power work",
            "--selector",
            "rack=r1",
            "--for",
            "2h",
        ])
        .await
        .ok();

    let d = denied(request(&mut agent, "h1", RestartJob, "a").await);
    assert_eq!(d.reason(), pb::DenyReason::Paused);
    let d = denied(request(&mut agent, "h3", RestartJob, "b").await);
    assert_eq!(d.reason(), pb::DenyReason::Paused);
    granted(request(&mut agent, "h2", RestartJob, "c").await);

    // status shows the pause with its scope, author and expiry.
    let status = server.medicctl(&["status", "-o", "json"]).await.json();
    let pauses = status["pauses"].as_array().unwrap();
    assert_eq!(pauses.len(), 1, "{status}");
    assert_eq!(pauses[0]["scope"]["selector"]["rack"], "r1");
    assert_eq!(pauses[0]["scope"]["action"], Value::Null);
    assert!(pauses[0]["until"].is_string(), "{status}");
    assert!(
        pauses[0]["actor"]
            .as_str()
            .unwrap()
            .starts_with("unverified:tester@"),
        "{status}"
    );
    let table = server.medicctl(&["status"]).await;
    assert!(table.ok().contains("rack=r1"), "{table:#?}");
    assert!(table.ok().contains("rack r1 power work"), "{table:#?}");

    // Resuming another scope finds nothing; the exact scope ends it.
    let wrong = server
        .medicctl(&["resume", "--selector", "rack=r2", "--reason", "oops"])
        .await;
    assert_eq!(wrong.code, 1, "{wrong:#?}");
    assert!(wrong.stderr.contains("NOT_FOUND"), "{wrong:#?}");
    server
        .medicctl(&["resume", "--selector", "rack=r1", "--reason", "done"])
        .await
        .ok();
    granted(request(&mut agent, "h1", RestartJob, "d").await);

    // --all ends every pause, whatever its scope.
    server.medicctl(&["pause", "--reason", "one"]).await.ok();
    server
        .medicctl(&["pause", "--reason", "two", "--action", "reboot-host"])
        .await
        .ok();
    let all = server
        .medicctl(&["resume", "--all", "--reason", "all clear", "-o", "json"])
        .await
        .json();
    assert_eq!(all["resumed"].as_array().unwrap().len(), 2, "{all}");
    assert_eq!(all["resumed"][1]["scope"]["action"], "reboot_host", "{all}");
    let status = server.medicctl(&["status", "-o", "json"]).await.json();
    assert_eq!(status["pauses"], serde_json::json!([]), "{status}");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn quarantine_and_unquarantine_show_in_hosts() {
    let dir = tempfile::tempdir().unwrap();
    let (server, mut agent, _) = ready(dir.path(), FAST, &["h1", "h2"]).await;

    let q = server
        .medicctl(&["quarantine", "h1", "--reason", "disk errors", "-o", "json"])
        .await
        .json();
    assert_eq!(q["quarantine"]["host_id"], "h1");
    assert_eq!(q["quarantine"]["cause"], "manual");

    let d = denied(request(&mut agent, "h1", RestartJob, "a").await);
    assert_eq!(d.reason(), pb::DenyReason::Quarantined);

    let hosts = server
        .medicctl(&["hosts", "--quarantined", "-o", "json"])
        .await
        .json();
    let list = hosts["hosts"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{hosts}");
    assert_eq!(list[0]["host_id"], "h1");
    assert_eq!(list[0]["quarantine"]["reason"], "disk errors");
    assert_eq!(list[0]["labels"]["rack"], "r1");
    assert_eq!(list[0]["live"], true);
    let table = server.medicctl(&["hosts", "--quarantined"]).await;
    assert!(
        table.ok().contains("manual by unverified:tester@"),
        "{table:#?}"
    );
    assert!(!table.ok().contains("h2"), "{table:#?}");

    // Every host, and the selector filter.
    let all = server.medicctl(&["hosts", "-o", "json"]).await.json();
    assert_eq!(all["hosts"].as_array().unwrap().len(), 2, "{all}");
    let r2 = server
        .medicctl(&["hosts", "--selector", "rack=r2", "-o", "json"])
        .await
        .json();
    assert_eq!(r2["hosts"][0]["host_id"], "h2", "{r2}");
    assert_eq!(r2["hosts"].as_array().unwrap().len(), 1, "{r2}");

    let released = server
        .medicctl(&[
            "unquarantine",
            "h1",
            "--reason",
            "disk replaced",
            "-o",
            "json",
        ])
        .await
        .json();
    assert_eq!(released["released"]["reason"], "disk errors");
    let none = server.medicctl(&["hosts", "--quarantined"]).await;
    assert_eq!(none.ok().trim(), "no hosts match");
    granted(request(&mut agent, "h1", RestartJob, "b").await);

    // Quarantining twice is the server's error, with exit 1.
    server
        .medicctl(&["quarantine", "h2", "--reason", "flaky"])
        .await
        .ok();
    let again = server
        .medicctl(&["quarantine", "h2", "--reason", "flaky"])
        .await;
    assert_eq!(again.code, 1, "{again:#?}");
    assert!(
        again.stderr.starts_with("medicctl: ALREADY_EXISTS: "),
        "{again:#?}"
    );
    server.stop().await.unwrap();
}

/// A host id the coordinator does not know (a typo) is refused, naming it
/// and --force; --force quarantines a host before its first heartbeat.
#[tokio::test]
async fn quarantine_of_an_unknown_host_needs_force() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _agent, _) = ready(dir.path(), FAST, &["web-17"]).await;

    let typo = server
        .medicctl(&["quarantine", "web-71", "--reason", "disk errors"])
        .await;
    assert_eq!(typo.code, 1, "{typo:#?}");
    assert!(typo.stderr.contains("\"web-71\""), "{typo:#?}");
    assert!(typo.stderr.contains("--force"), "{typo:#?}");
    assert!(typo.stdout.is_empty(), "{typo:#?}");
    let h = server
        .medicctl(&["history", "--kind", "quarantine", "-o", "json"])
        .await
        .json();
    assert_eq!(
        h["events"],
        serde_json::json!([]),
        "nothing quarantined: {h}"
    );

    let forced = server
        .medicctl(&[
            "quarantine",
            "web-99",
            "--force",
            "--reason",
            "not provisioned yet",
            "-o",
            "json",
        ])
        .await
        .json();
    assert_eq!(forced["quarantine"]["host_id"], "web-99", "{forced}");
    // A known host needs no --force.
    server
        .medicctl(&["quarantine", "web-17", "--reason", "disk errors"])
        .await
        .ok();
    server.stop().await.unwrap();
}

/// Tables fit COLUMNS: free-text columns are cut with `…`, the host
/// never; piped without COLUMNS, nothing is cut.
#[tokio::test]
async fn tables_fit_the_columns_given() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _agent, _) = ready(dir.path(), FAST, &["web-17"]).await;
    let why = format!("disk errors {}", "x".repeat(118));
    server
        .medicctl(&["quarantine", "web-17", "--reason", &why])
        .await
        .ok();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_medicctl"))
        .args(["--coordinator", &server.url(), "hosts"])
        .env_remove("MEDIC_COORDINATOR")
        .env("COLUMNS", "100")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    for line in text.lines() {
        assert!(line.chars().count() <= 100, "{line:?} in\n{text}");
    }
    assert!(text.contains("web-17"), "{text}");
    assert!(text.contains("manual by") && text.contains('…'), "{text}");
    let whole = server.medicctl(&["hosts"]).await;
    assert!(whole.ok().contains(&why), "{whole:#?}");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn explain_lists_every_rule_that_denies() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _agent, _) = ready(dir.path(), FAST, &["h1", "h2"]).await;
    server
        .medicctl(&["pause", "--reason", "outage", "--for", "10m"])
        .await
        .ok();
    server
        .medicctl(&["quarantine", "h1", "--reason", "bad disk"])
        .await
        .ok();

    let e = server
        .medicctl(&["explain", "h1", "--action", "restart-job", "-o", "json"])
        .await
        .json();
    assert_eq!(e["host_id"], "h1");
    assert_eq!(e["action"], "restart_job");
    assert_eq!(e["would_grant"], false);
    let denials = e["denials"].as_array().unwrap();
    let reasons: Vec<&str> = denials
        .iter()
        .map(|d| d["reason"].as_str().unwrap())
        .collect();
    assert!(
        reasons.contains(&"paused") && reasons.contains(&"quarantined"),
        "{reasons:?}"
    );
    let by = |r: &str| denials.iter().find(|d| d["reason"] == r).unwrap();
    assert_eq!(by("paused")["retry_after_seconds"], 600.0, "{e}");
    assert_eq!(by("quarantined")["retry_after_seconds"], Value::Null, "{e}");

    let table = server
        .medicctl(&["explain", "h1", "--action", "restart-job"])
        .await;
    let text = table.ok();
    assert!(
        text.contains("h1 would be denied restart_job now"),
        "{text}"
    );
    assert!(text.contains("paused"), "{text}");
    assert!(text.contains("in 10m"), "{text}");
    assert!(text.contains("when a human acts"), "{text}");

    // Another host is only paused.
    let e = server
        .medicctl(&["explain", "h2", "--action", "reboot-host", "-o", "json"])
        .await
        .json();
    let reasons: Vec<&str> = e["denials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons, ["paused"], "{e}");
    server.stop().await.unwrap();
}

/// Without --action, explain answers for every action, one after the other.
#[tokio::test]
async fn explain_without_action_explains_every_action() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _agent, _) = ready(dir.path(), FAST, &["h1"]).await;
    server
        .medicctl(&[
            "pause",
            "--reason",
            "kernel rollout",
            "--action",
            "reboot-host",
        ])
        .await
        .ok();

    let out = server.medicctl(&["explain", "h1"]).await;
    let text = out.ok();
    let restart = text
        .find("h1 would be granted restart_job now")
        .unwrap_or_else(|| panic!("{text}"));
    let reboot = text
        .find("h1 would be denied reboot_host now: 1 rule denies")
        .unwrap_or_else(|| panic!("{text}"));
    assert!(restart < reboot, "in action order: {text}");
    assert!(text.contains("kernel rollout"), "{text}");

    // JSON: one object per action, keyed by its name, each shaped as the
    // single-action answer.
    let all = server
        .medicctl(&["explain", "h1", "-o", "json"])
        .await
        .json();
    let keys: Vec<&String> = all.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["reboot_host", "restart_job"], "{all}");
    assert_eq!(all["restart_job"]["would_grant"], true, "{all}");
    assert_eq!(all["restart_job"]["action"], "restart_job", "{all}");
    assert_eq!(all["reboot_host"]["would_grant"], false, "{all}");
    assert_eq!(
        all["reboot_host"]["denials"][0]["reason"], "paused",
        "{all}"
    );
    // With --action, the single object as before.
    let one = server
        .medicctl(&["explain", "h1", "--action", "reboot-host", "-o", "json"])
        .await
        .json();
    assert_eq!(one["host_id"], "h1", "{one}");
    assert_eq!(one["action"], "reboot_host", "{one}");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn history_pages_through_more_than_one_page() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _agent, mut admin) = ready(dir.path(), FAST, &["h1", "h2"]).await;
    // Ten audit events: five pauses, five resumes.
    for i in 0..5 {
        admin
            .pause(pb::PauseRequest {
                scope: None,
                reason: format!("drill {i}"),
                duration: None,
            })
            .await
            .unwrap();
        admin
            .resume(pb::ResumeRequest {
                target: Some(pb::resume_request::Target::Scope(pb::Scope::default())),
                reason: format!("drill {i} over"),
            })
            .await
            .unwrap();
    }
    let expected: Vec<u64> = admin
        .get_history(pb::GetHistoryRequest::default())
        .await
        .unwrap()
        .into_inner()
        .events
        .iter()
        .map(|e| e.id)
        .collect();
    assert!(expected.len() >= 10, "{expected:?}");
    let ids = |v: &Value| -> Vec<u64> {
        v["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_u64().unwrap())
            .collect()
    };

    // Pages of 3, until all are printed: several requests, one listing.
    let all = server
        .medicctl(&["history", "--page-size", "3", "-o", "json"])
        .await
        .json();
    assert_eq!(ids(&all), expected);
    assert_eq!(all["next_page_token"], Value::Null);
    // The first is the clock mark of the coordinator's start-up.
    assert_eq!(all["events"][0]["kind"], "clock");
    let first = &all["events"][1];
    assert!(first["time"].as_str().unwrap().starts_with("2026-01-01T"));
    assert_eq!(first["kind"], "pause");
    assert_eq!(
        first["payload"]["pause"]["scope"]["selector"],
        serde_json::json!({})
    );

    // --limit stops across page boundaries, and says where to go on.
    let head = server
        .medicctl(&["history", "--page-size", "3", "--limit", "5", "-o", "json"])
        .await
        .json();
    assert_eq!(ids(&head), expected[..5]);
    let token = head["next_page_token"].as_str().unwrap().to_owned();
    let rest = server
        .medicctl(&[
            "history",
            "--page-size",
            "3",
            "--page-token",
            &token,
            "-o",
            "json",
        ])
        .await
        .json();
    assert_eq!(ids(&rest), expected[5..]);

    // The table says how to continue too.
    let table = server
        .medicctl(&["history", "--page-size", "2", "--limit", "4"])
        .await;
    let text = table.ok();
    assert_eq!(
        text.lines().filter(|l| l.contains("drill")).count(),
        3,
        "{text}"
    );
    assert!(
        text.contains("more events: repeat with --page-token "),
        "{text}"
    );
    assert!(text.contains("paused fleet"), "{text}");

    // A relative --since counts back on the coordinator's clock.
    let recent = server
        .medicctl(&["history", "--since", "1h", "--kind", "pause", "-o", "json"])
        .await
        .json();
    assert_eq!(recent["events"].as_array().unwrap().len(), 10, "{recent}");
    server.stop().await.unwrap();
}

/// `--since` without an offset is a local time, in the zone TZ names; with
/// an offset it is that instant wherever medicctl runs.
#[tokio::test]
async fn history_since_takes_local_times_and_offsets() {
    let dir = tempfile::tempdir().unwrap();
    // The test clock starts at 2026-01-01T00:00:00Z; the pause is 3s later.
    let (server, _agent, _) = ready(dir.path(), FAST, &["h1"]).await;
    server.medicctl(&["pause", "--reason", "one"]).await.ok();
    let url = server.url();
    let pauses = async |tz: &str, since: &str| -> usize {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_medicctl"))
            .args(["--coordinator", &url, "history", "--kind", "pause"])
            .args(["--since", since, "-o", "json"])
            .env_remove("MEDIC_COORDINATOR")
            .env("TZ", tz)
            .output()
            .await
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        let h: Value = serde_json::from_slice(&out.stdout).unwrap();
        h["events"].as_array().unwrap().len()
    };
    // 00:30 in UTC+1 (POSIX TZ `XYZ-1`) is 23:30Z the day before.
    assert_eq!(pauses("XYZ-1", "2026-01-01 00:30").await, 1);
    assert_eq!(pauses("UTC0", "2026-01-01 00:30").await, 0);
    assert_eq!(pauses("UTC0", "2026-01-01T00:30:00+01:00").await, 1);
    assert_eq!(pauses("XYZ-1", "2026-01-01T00:30:00Z").await, 0);

    // A time it cannot read names the flag and the forms it takes.
    let out = server
        .medicctl(&["history", "--since", "26/11/2026 18:00"])
        .await;
    assert_eq!(out.code, 64, "{out:#?}");
    assert!(out.stderr.contains("--since"), "{out:#?}");
    assert!(
        out.stderr.contains("2026-11-26T18:00:00+01:00") && out.stderr.contains("1h"),
        "{out:#?}"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn status_json_reports_mode_warmup_actions_and_hosts() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), FAST).await;
    let s = server.medicctl(&["status", "-o", "json"]).await.json();
    assert_eq!(s["warming_up"], true, "{s}");
    assert!(s["warming_up_until"].is_string(), "{s}");
    let text = server.medicctl(&["status"]).await;
    assert!(text.ok().contains("no grants until then"), "{text:#?}");
    server.stop().await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let (server, mut agent, _) = ready(dir.path(), FAST, &["h1", "h2", "h3"]).await;
    granted(request(&mut agent, "h1", RestartJob, "a").await);
    let s = server.medicctl(&["status", "-o", "json"]).await.json();
    assert_eq!(s["mode"], "enforce");
    assert_eq!(s["warming_up"], false);
    assert_eq!(s["warming_up_until"], Value::Null);
    assert!(s["version"].is_string());
    assert_eq!(s["heartbeat_interval_seconds"], 1.0);
    assert_eq!(s["host_ttl_seconds"], 5.0);
    assert_eq!(s["hosts"]["live"], 3);
    assert_eq!(s["hosts"]["known"], 3);
    assert_eq!(s["hosts"]["unhealthy"], 3);
    assert_eq!(s["hosts"]["quarantined"], 0);
    assert_eq!(s["pauses"], serde_json::json!([]));
    assert_eq!(s["breakers"], serde_json::json!([]));
    let restart = s["actions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["action"] == "restart_job")
        .unwrap_or_else(|| panic!("{s}"));
    assert_eq!(restart["active"], 1);
    assert_eq!(restart["effective_cap"], 10);
    assert_eq!(restart["rate_limit"], 110);
    assert_eq!(restart["rate_used"], 1);
    assert_eq!(restart["rate_left"], 109);
    assert_eq!(restart["rate_per_seconds"], 3600.0);
    assert_eq!(restart["in_window"], true);

    let text = server.medicctl(&["status"]).await;
    let text = text.ok();
    assert!(text.contains("enforce"), "{text}");
    assert!(
        text.contains("3 live, 3 unhealthy, 0 silent, 0 quarantined, 3 known"),
        "{text}"
    );
    assert!(text.contains("109 of 110 per 1h"), "{text}");
    assert!(text.contains("1/10"), "{text}");
    server.stop().await.unwrap();
}

/// With every slot of an action in use, the next grant does not fit now,
/// whatever the rate budget says.
#[tokio::test]
async fn status_says_a_full_action_waits_for_a_slot() {
    let dir = tempfile::tempdir().unwrap();
    let toml = FAST.replacen("max_in_flight = 10", "max_in_flight = 2", 1);
    let (server, mut agent, _) = ready(dir.path(), &toml, &["h1", "h2", "h3"]).await;
    granted(request(&mut agent, "h1", RestartJob, "a").await);
    let one = server.medicctl(&["status"]).await;
    let row = |text: &str| {
        text.lines()
            .find(|l| l.starts_with("restart_job"))
            .unwrap_or_else(|| panic!("{text}"))
            .to_owned()
    };
    assert!(row(one.ok()).contains("1/2"), "{one:#?}");
    assert!(
        row(one.ok()).contains(" now ") && row(one.ok()).ends_with("open"),
        "a slot is free: {one:#?}"
    );

    granted(request(&mut agent, "h2", RestartJob, "b").await);
    let full = server.medicctl(&["status"]).await;
    let line = row(full.ok());
    assert!(line.contains("when a slot frees (2/2 in use)"), "{line}");
    assert!(!line.contains(" now "), "{line}");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn permits_lists_active_permits_and_revoke_ends_one() {
    let dir = tempfile::tempdir().unwrap();
    let (server, mut agent, _) = ready(dir.path(), FAST, &["h1", "h2"]).await;
    let p = granted(request(&mut agent, "h1", RestartJob, "a").await)
        .permit
        .unwrap();

    let list = server.medicctl(&["permits", "-o", "json"]).await.json();
    let permits = list["permits"].as_array().unwrap();
    assert_eq!(permits.len(), 1, "{list}");
    assert_eq!(permits[0]["permit_id"], p.permit_id.as_str());
    assert_eq!(permits[0]["host_id"], "h1");
    assert_eq!(permits[0]["action"], "restart_job");
    assert_eq!(permits[0]["state"], "active");
    assert_eq!(permits[0]["ttl_seconds"], 30.0);
    assert_eq!(permits[0]["labels"]["rack"], "r1");
    let table = server.medicctl(&["permits", "--host", "h1"]).await;
    assert!(table.ok().contains(&p.permit_id), "{table:#?}");
    let none = server.medicctl(&["permits", "--host", "h2"]).await;
    assert_eq!(none.ok().trim(), "no active permits match");

    let revoked = server
        .medicctl(&[
            "revoke",
            &p.permit_id,
            "--reason",
            "wrong host, INC-7",
            "-o",
            "json",
        ])
        .await
        .json();
    assert_eq!(revoked["permit"]["state"], "revoked");

    let active = server.medicctl(&["permits", "-o", "json"]).await.json();
    assert_eq!(active["permits"], serde_json::json!([]));
    let all = server
        .medicctl(&["permits", "--all-states", "-o", "json"])
        .await
        .json();
    assert_eq!(all["permits"][0]["state"], "revoked", "{all}");

    // Revoking again: the server's error, exit 1.
    let again = server
        .medicctl(&["revoke", &p.permit_id, "--reason", "again"])
        .await;
    assert_eq!(again.code, 1, "{again:#?}");
    assert!(
        again.stderr.starts_with("medicctl: FAILED_PRECONDITION: "),
        "{again:#?}"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn breaker_shows_in_status_and_reset_moves_it_to_half_open() {
    let dir = tempfile::tempdir().unwrap();
    let toml = FAST.replace(
        "unhealthy_percent = 100",
        "unhealthy_percent = 50\nmin_unhealthy = 1",
    );
    // Both hosts report a stuck job: 100% unhealthy, over 50%.
    let (server, mut agent, _) = ready(dir.path(), &toml, &["h1", "h2"]).await;
    let d = denied(request(&mut agent, "h1", RestartJob, "a").await);
    assert_eq!(d.reason(), pb::DenyReason::BreakerOpen);

    let s = server.medicctl(&["status", "-o", "json"]).await.json();
    let breakers = s["breakers"].as_array().unwrap();
    assert_eq!(breakers.len(), 1, "{s}");
    assert_eq!(breakers[0]["scope"], "fleet");
    assert_eq!(breakers[0]["cause"], "unhealthy_fraction");
    let text = server.medicctl(&["status"]).await;
    let text = text.ok();
    assert!(text.contains("BREAKERS (open"), "{text}");
    assert!(
        text.contains("NO: the fleet-wide breaker is open"),
        "{text}"
    );

    // The hosts recover; a reset moves the breaker to half-open.
    heartbeat(&mut agent, "h1", labels(&[("rack", "r1")]), false).await;
    heartbeat(&mut agent, "h2", labels(&[("rack", "r2")]), false).await;

    let closed = server
        .medicctl(&[
            "breaker",
            "reset",
            "--scope",
            "fleet",
            "--reason",
            "db recovered",
            "-o",
            "json",
        ])
        .await
        .json();
    assert_eq!(closed["closed"][0]["scope"], "fleet", "{closed}");
    let h = server
        .medicctl(&["history", "--kind", "breaker", "-o", "json"])
        .await
        .json();
    let types: Vec<&str> = h["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["payload"]["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["breaker_opened", "breaker_half_opened"], "{h}");
    let s = server.medicctl(&["status", "-o", "json"]).await.json();
    assert_eq!(s["breakers"][0]["state"], "half_open", "{s}");
    assert_eq!(
        s["breakers"][0]["half_open"]["actor"], "unverified:tester@127.0.0.1",
        "{s}"
    );
    let text = server.medicctl(&["status"]).await;
    let text = text.ok();
    assert!(text.contains("half-open (0 ok)"), "{text}");
    assert!(text.contains("probes only"), "{text}");

    // Half-open already: only its probes close it. FAILED_PRECONDITION,
    // exit 1.
    let again = server
        .medicctl(&["breaker", "reset", "--reason", "again"])
        .await;
    assert_eq!(again.code, 1, "{again:#?}");
    assert!(again.stderr.contains("FAILED_PRECONDITION"), "{again:#?}");
    assert!(again.stderr.contains("already half-open"), "{again:#?}");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn reload_applies_or_prints_every_error_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _agent, _) = ready(dir.path(), FAST, &["h1"]).await;
    let ok = server.medicctl(&["reload", "--reason", "no change"]).await;
    assert!(ok.ok().contains("reloaded"), "{ok:#?}");

    std::fs::write(
        &server.config_path,
        "[limits.restart_job]\nmax_in_flight = -1\n[fleet]\nbogus = 1\n",
    )
    .unwrap();
    let bad = server.medicctl(&["reload", "--reason", "tune caps"]).await;
    assert_eq!(bad.code, 1, "{bad:#?}");
    assert!(
        bad.stdout.contains("limits.restart_job.max_in_flight"),
        "{bad:#?}"
    );
    assert!(bad.stdout.contains("fleet.bogus"), "{bad:#?}");
    assert!(
        bad.stderr.contains("rejected the new configuration"),
        "{bad:#?}"
    );
    let bad = server
        .medicctl(&["reload", "--reason", "tune caps", "-o", "json"])
        .await;
    assert_eq!(bad.code, 1, "{bad:#?}");
    let v: Value = serde_json::from_str(&bad.stdout).unwrap();
    assert_eq!(v["applied"], false);
    assert!(v["errors"].as_array().unwrap().len() >= 2, "{v}");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn watch_streams_events_until_interrupted() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _agent, mut admin) = ready(dir.path(), FAST, &["h1"]).await;
    admin
        .quarantine(pb::QuarantineRequest {
            host_id: "h1".into(),
            reason: "before the watch".into(),
        })
        .await
        .unwrap();
    let url = server.url();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_medicctl"))
        .args([
            "--coordinator",
            &url,
            "watch",
            "--after-id",
            "0",
            "--kind",
            "quarantine,pause",
            "-o",
            "json",
        ])
        .env_remove("MEDIC_COORDINATOR")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next = async || -> Value {
        let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .expect("an event within 10s")
            .unwrap()
            .expect("a line");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    };
    // The backlog first...
    let e = next().await;
    assert_eq!(e["kind"], "quarantine");
    assert_eq!(e["host_id"], "h1");
    assert_eq!(e["payload"]["quarantine"]["reason"], "before the watch");
    // ... then live events.
    admin
        .pause(pb::PauseRequest {
            scope: None,
            reason: "watched".into(),
            duration: None,
        })
        .await
        .unwrap();
    let e = next().await;
    assert_eq!(e["kind"], "pause");
    assert_eq!(e["reason"], "watched");
    // Ctrl-C ends it cleanly.
    let pid = child.id().unwrap().to_string();
    // The shell's own `kill`: no procps needed.
    let sent = tokio::process::Command::new("sh")
        .args(["-c", &format!("kill -INT {pid}")])
        .status()
        .await
        .unwrap();
    assert!(sent.success());
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("medicctl watch exits on SIGINT")
        .unwrap();
    assert_eq!(status.code(), Some(0), "{status:?}");
    server.stop().await.unwrap();
}

/// A coordinator restart does not end `watch`: it says it reconnects, and
/// goes on after the last event it printed, printing each event once.
#[tokio::test]
async fn watch_reconnects_after_a_coordinator_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _agent, mut admin) = ready(dir.path(), FAST, &["h1"]).await;
    let url = server.url();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_medicctl"))
        .args([
            "--coordinator",
            &url,
            "watch",
            "--kind",
            "pause",
            "-o",
            "json",
        ])
        .env_remove("MEDIC_COORDINATOR")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut errs = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let pause = |reason: &str| pb::PauseRequest {
        scope: None,
        reason: reason.into(),
        duration: None,
    };
    // Live only: wait until the stream is open, by an event seen on it.
    let mut first = None;
    for i in 0..50 {
        let reason = format!("before {i}");
        admin.pause(pause(&reason)).await.unwrap();
        admin
            .resume(pb::ResumeRequest {
                target: Some(pb::resume_request::Target::Scope(pb::Scope::default())),
                reason: "again".into(),
            })
            .await
            .unwrap();
        if let Ok(line) = tokio::time::timeout(Duration::from_millis(200), lines.next_line()).await
        {
            first = Some(line.unwrap().expect("a line"));
            break;
        }
    }
    let first: Value = serde_json::from_str(&first.expect("watch prints a live event")).unwrap();
    assert_eq!(first["kind"], "pause", "{first}");

    let server = server.restart().await;
    let said = tokio::time::timeout(Duration::from_secs(10), errs.next_line())
        .await
        .expect("a message within 10s")
        .unwrap()
        .expect("a stderr line");
    assert!(said.contains("reconnecting"), "{said}");
    assert!(
        !said.contains("after_id"),
        "names the flag, not the field: {said}"
    );
    let mut admin = server.admin().await;
    admin.pause(pause("after the restart")).await.unwrap();

    // Every event after the first is printed once, in id order, ending
    // with the one made after the restart.
    let mut last = first["id"].as_u64().unwrap();
    loop {
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("the event made after the restart within 20s")
            .unwrap()
            .expect("a line");
        let e: Value = serde_json::from_str(&line).unwrap();
        let id = e["id"].as_u64().unwrap();
        assert!(id > last, "printed once, in order: {id} after {last}");
        last = id;
        if e["reason"] == "after the restart" {
            break;
        }
    }
    assert!(child.try_wait().unwrap().is_none(), "watch still runs");
    child.start_kill().unwrap();
    server.stop().await.unwrap();
}

#[tokio::test]
async fn failed_call_exits_1_with_the_servers_message() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _agent, _) = ready(dir.path(), FAST, &["h1"]).await;
    let out = server
        .medicctl(&["revoke", "p-000000000999", "--reason", "cleanup"])
        .await;
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(out.stderr.starts_with("medicctl: NOT_FOUND: "), "{out:#?}");
    assert!(out.stderr.contains("p-000000000999"), "{out:#?}");
    assert_eq!(out.stderr.lines().count(), 1, "one line, no dump: {out:#?}");
    assert!(!out.stderr.contains("Status {"), "{out:#?}");
    assert!(out.stdout.is_empty(), "{out:#?}");
    // A malformed value only the server checks: its message, exit 1.
    let out = server
        .medicctl(&["explain", "bad host", "--action", "restart-job"])
        .await;
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(
        out.stderr
            .starts_with("medicctl: INVALID_ARGUMENT: request.host_id"),
        "{out:#?}"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn unreachable_coordinator_exits_2_naming_the_url() {
    // A loopback port that nobody listens on any more.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}");
    let out = medicctl_raw(&["--coordinator", &url, "status"]).await;
    assert_eq!(out.code, 2, "{out:#?}");
    assert!(
        out.stderr
            .starts_with(&format!("medicctl: cannot reach the coordinator at {url}")),
        "{out:#?}"
    );
    // The environment variable works as the flag does.
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_medicctl"));
    let out = cmd
        .args(["hosts"])
        .env("MEDIC_COORDINATOR", &url)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&url),
        "{out:?}"
    );
}

#[tokio::test]
async fn bad_usage_exits_64_and_help_exits_0() {
    for args in [
        &["pause"][..],                                  // no --reason
        &["pause", "--reason", "  "],                    // an empty reason
        &["pause", "--reason", "x", "--for", "soon"],    // not a duration
        &["pause", "--reason", "x", "--selector", "r1"], // not KEY=VALUE
        &["resume", "--reason", "x", "--id", "1", "--all"],
        &["status", "-o", "yaml"],
        &["explain", "h1", "--action", "Format Disk!"],
        &["history", "--kind", "everything"],
        &["history", "--limit", "0"],
        &["breaker", "reset", "--reason", "x", "--scope", "rack"],
        &["frobnicate"],
        &[],
    ] {
        let out = medicctl_raw(args).await;
        assert_eq!(out.code, 64, "{args:?}: {out:#?}");
        assert!(!out.stderr.is_empty(), "{args:?}: {out:#?}");
    }
    // TLS files: a missing file is named with its flag, before connecting.
    let out = medicctl_raw(&[
        "--coordinator",
        "https://127.0.0.1:1",
        "--tls-ca",
        "/nonexistent/ca.pem",
        "status",
    ])
    .await;
    assert_eq!(out.code, 64, "{out:#?}");
    assert!(
        out.stderr
            .contains("--tls-ca /nonexistent/ca.pem: cannot read it"),
        "{out:#?}"
    );
    let out = medicctl_raw(&["--tls-ca", "ca.pem", "status"]).await;
    assert_eq!(out.code, 64, "TLS files with an http:// URL: {out:#?}");
    assert!(out.stderr.contains("not https://"), "{out:#?}");

    let help = medicctl_raw(&["--help"]).await;
    assert!(help.ok().contains("Exit codes:"), "{help:#?}");
    let version = medicctl_raw(&["--version"]).await;
    assert!(version.ok().starts_with("medicctl "), "{version:#?}");
    for sub in [
        &["status"][..],
        &["pause"],
        &["resume"],
        &["hosts"],
        &["permits"],
        &["revoke"],
        &["quarantine"],
        &["unquarantine"],
        &["history"],
        &["explain"],
        &["breaker", "reset"],
        &["reload"],
        &["watch"],
        &["completions"],
    ] {
        let mut args = sub.to_vec();
        args.push("--help");
        let out = medicctl_raw(&args).await;
        let text = out.ok();
        assert!(text.contains("Usage: medicctl"), "{sub:?}: {text}");
        assert!(text.contains("Example"), "{sub:?} has an example: {text}");
    }
}

#[tokio::test]
async fn completions_bash_prints_a_script() {
    let out = medicctl_raw(&["completions", "bash"]).await;
    let script = out.ok();
    assert!(script.contains("_medicctl()"), "{script}");
    assert!(script.contains("complete -F _medicctl"), "{script}");
    assert!(script.contains("unquarantine"), "{script}");
    let zsh = medicctl_raw(&["completions", "zsh"]).await;
    assert!(zsh.ok().starts_with("#compdef medicctl"), "{zsh:#?}");
}

/// A throwaway self-signed CA certificate and its key (P-256), made for
/// these tests only: they check that medicctl reads and uses TLS files.
const TEST_CA: &str = "-----BEGIN CERTIFICATE-----
MIIBiDCCAS2gAwIBAgIUegvx2gF5QKkha+nMJbSiNqdNVU0wCgYIKoZIzj0EAwIw
GDEWMBQGA1UEAwwNbWVkaWMgdGVzdCBDQTAgFw0yNjExMjYxODA5MzRaGA8yMTI2
MTEwMjE4MDkzNFowGDEWMBQGA1UEAwwNbWVkaWMgdGVzdCBDQTBZMBMGByqGSM49
AgEGCCqGSM49AwEHA0IABD790dDQ7uu68EA4A8X1vyHoIkbVBDoSnNX9ZzbwigiW
WCGJZkXvixDDL35MquF9qo7S/q8dxfluOndBQIB0H7+jUzBRMB0GA1UdDgQWBBTC
amakqtsdrzPIrdPXRdb+cqztfzAfBgNVHSMEGDAWgBTCamakqtsdrzPIrdPXRdb+
cqztfzAPBgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0kAMEYCIQDiBaduKSU3
LCsPFqA+sKndrLX1s1+Udt6iQSCluunX5AIhAMQyRrtDNGfsX5XUdBPJw29ZvAnx
b4tNXyDrIbzThVb5
-----END CERTIFICATE-----
";
const TEST_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgh+qLZXEH3m78zgpT
0F7gsTk+5RpBKMwUuaDWsU5pEYWhRANCAAQ+/dHQ0O7ruvBAOAPF9b8h6CJG1QQ6
EpzV/Wc28IoIllghiWZF74sQwy9+TKrhfaqO0v6vHcX5bjp3QUCAdB+/
-----END PRIVATE KEY-----
";

#[tokio::test]
async fn tls_files_are_checked_and_used_for_https() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    let key = dir.path().join("key.pem");
    let junk = dir.path().join("junk.pem");
    std::fs::write(&ca, TEST_CA).unwrap();
    std::fs::write(&key, TEST_KEY).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(&junk, "not a certificate\n").unwrap();
    let key_path = key.clone();
    let (ca, key, junk) = (
        ca.to_str().unwrap(),
        key.to_str().unwrap(),
        junk.to_str().unwrap(),
    );

    // A file without a certificate is named with its flag.
    let out = medicctl_raw(&[
        "--coordinator",
        "https://127.0.0.1:1",
        "--tls-ca",
        junk,
        "status",
    ])
    .await;
    assert_eq!(out.code, 64, "{out:#?}");
    assert!(
        out.stderr
            .contains(&format!("--tls-ca {junk}: no PEM CERTIFICATE in it")),
        "{out:#?}"
    );
    // A client certificate needs its key.
    let out = medicctl_raw(&[
        "--coordinator",
        "https://127.0.0.1:1",
        "--tls-cert",
        ca,
        "status",
    ])
    .await;
    assert_eq!(out.code, 64, "{out:#?}");
    assert!(
        out.stderr.contains("--tls-cert needs --tls-key"),
        "{out:#?}"
    );

    // A key others can read is refused before anything is sent.
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = medicctl_raw(&[
        "--coordinator",
        "https://127.0.0.1:1",
        "--tls-ca",
        ca,
        "--tls-cert",
        ca,
        "--tls-key",
        key,
        "status",
    ])
    .await;
    assert_eq!(out.code, 64, "{out:#?}");
    assert!(
        out.stderr.contains("mode 0644") && out.stderr.contains("chmod 600"),
        "{out:#?}"
    );

    // Good files: medicctl speaks TLS, which this plaintext coordinator
    // does not, so the handshake fails: unreachable, exit 2.
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let server = TestServer::start(dir.path(), FAST).await;
    let url = format!("https://{}", server.addr);
    let out = medicctl_raw(&[
        "--coordinator",
        &url,
        "--tls-ca",
        ca,
        "--tls-cert",
        ca,
        "--tls-key",
        key,
        "status",
    ])
    .await;
    assert_eq!(out.code, 2, "{out:#?}");
    assert!(
        out.stderr.starts_with(&format!(
            "medicctl: cannot reach the coordinator at {url}: "
        )),
        "{out:#?}"
    );
    assert!(
        out.stderr.contains(&format!(
            "the coordinator at {url} speaks plaintext, not TLS: use http://"
        )),
        "{out:#?}"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn medicctl_speaks_mutual_tls_as_the_certificate_it_presents() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dev_certs(dir.path(), &["h1"]);
    let toml = format!("{FAST}{}", tls_toml(&certs));
    let server = TestServer::start(dir.path(), &toml).await;
    let url = format!("https://localhost:{}", server.addr.port());
    let file = |n: &str| certs.join(n).to_str().unwrap().to_owned();
    let tls = |who: &str| {
        vec![
            "--coordinator".to_owned(),
            url.clone(),
            "--tls-ca".to_owned(),
            file("ca.pem"),
            "--tls-cert".to_owned(),
            file(&format!("{who}.pem")),
            "--tls-key".to_owned(),
            file(&format!("{who}.key")),
        ]
    };
    let run = |who: &str, rest: &[&str]| {
        let mut args = tls(who);
        args.extend(rest.iter().map(|s| (*s).to_owned()));
        async move {
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            medicctl_raw(&refs).await
        }
    };

    let out = run("operator", &["status"]).await;
    let text = out.ok();
    assert!(text.contains("security     mutual TLS"), "{out:#?}");
    assert!(
        text.contains("you are      cert:spiffe://medic.dev/operator/admin (admin)"),
        "{out:#?}"
    );
    // The audit actor is the certificate, whatever --as claims.
    let out = run(
        "operator",
        &["pause", "--reason", "INC-7", "--as", "mallory"],
    )
    .await;
    out.ok();
    let out = run("viewer", &["history", "--kind", "pause", "-o", "json"]).await;
    let h = out.json();
    let pause = &h["events"][0];
    assert_eq!(pause["actor"], "cert:spiffe://medic.dev/operator/admin");
    // The viewer may read but not resume: exit 1, PERMISSION_DENIED.
    let out = run("viewer", &["resume", "--reason", "done"]).await;
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(out.stderr.contains("PERMISSION_DENIED"), "{out:#?}");
    server.stop().await.unwrap();
}

/// http:// against a TLS port fails with a hint to use https:// and the
/// TLS flags, whatever the transport's own words.
#[tokio::test]
async fn plaintext_against_a_tls_coordinator_says_to_use_https() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dev_certs(dir.path(), &["h1"]);
    let toml = format!("{FAST}{}", tls_toml(&certs));
    let server = TestServer::start(dir.path(), &toml).await;
    let url = format!("http://localhost:{}", server.addr.port());
    let out = medicctl_raw(&["--coordinator", &url, "status"]).await;
    assert_eq!(out.code, 2, "{out:#?}");
    assert!(
        out.stderr.contains(&format!(
            "the coordinator at {url} speaks TLS: use https:// and --tls-ca/--tls-cert/--tls-key"
        )),
        "{out:#?}"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn status_shows_an_insecure_coordinator() {
    let dir = tempfile::tempdir().unwrap();
    // FAST has no [server] table; the test server binds its own loopback
    // port, the config says what an operator would have written.
    let toml = format!("{FAST}\n[server]\nlisten = \"0.0.0.0:7470\"\ninsecure = true\n");
    let server = TestServer::start(dir.path(), &toml).await;
    let out = server.medicctl(&["status"]).await;
    assert!(
        out.ok()
            .contains("security     INSECURE: plaintext on a network address"),
        "{out:#?}"
    );
    let json = server.medicctl(&["status", "-o", "json"]).await.json();
    assert_eq!(json["transport_security"], "insecure");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn several_coordinators_are_tried_in_turn_until_one_answers() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), FAST).await;
    // A port nobody listens on: closed by the time medicctl tries it.
    let gone = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let gone_url = format!("http://{}", gone.local_addr().unwrap());
    drop(gone);
    let list = format!("{gone_url},{}", server.url());
    let s = medicctl_raw(&["--coordinator", &list, "status", "-o", "json"])
        .await
        .json();
    assert_eq!(s["mode"], "enforce", "{s}");
    // Alone, the same dead URL is reported as unreachable (exit 2).
    let alone = medicctl_raw(&["--coordinator", &gone_url, "status"]).await;
    assert_eq!(alone.code, 2, "{alone:#?}");
    server.stop().await.unwrap();
}

/// An agent that cannot use its state file takes no action; `hosts` says
/// so, and why, first in its HEALTH column.
#[tokio::test]
async fn hosts_show_an_agent_whose_state_file_is_unusable() {
    let dir = tempfile::tempdir().unwrap();
    let (server, mut agent, _) = ready(dir.path(), FAST, &["h1", "h2"]).await;
    let why = "agent state file /var/lib/medic-agent/state.json is unusable (expected value)";
    agent
        .heartbeat(pb::HeartbeatRequest {
            state_error: Some(why.into()),
            host_id: "h1".into(),
            labels: labels(&[("rack", "r1")]),
            agent_version: "test".into(),
            problems: vec![],
            held_permit: None,
            needs_human: None,
        })
        .await
        .unwrap();
    let hosts = server.medicctl(&["hosts", "-o", "json"]).await.json();
    let list = hosts["hosts"].as_array().unwrap();
    let h1 = list.iter().find(|h| h["host_id"] == "h1").unwrap();
    let h2 = list.iter().find(|h| h["host_id"] == "h2").unwrap();
    assert_eq!(h1["state_error"], why, "{hosts}");
    assert_eq!(h2["state_error"], serde_json::Value::Null, "{hosts}");
    let table = server.medicctl(&["hosts"]).await;
    assert!(
        table
            .ok()
            .contains("AGENT STATE UNUSABLE: agent state file"),
        "{table:#?}"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn custom_actions_show_in_status_permits_explain_and_history() {
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "{FAST}\n[actions.drain_host]\ndescription = \"drain traffic\"\n\
         [limits.drain_host]\nmax_in_flight = 1\npermit_ttl = \"30s\"\n\
         [limits.restart_job.jobs.zookeeper]\nmax_in_flight = 1\n"
    );
    let (server, mut agent, _) = ready(dir.path(), &toml, &["h1", "h2"]).await;
    let drain = |host: &str, id: &str| pb::RequestPermitRequest {
        action: pb::Action::Custom.into(),
        action_name: "drain_host".into(),
        ..permit_request(host, pb::Action::Unspecified, id)
    };
    let g = granted(
        agent
            .request_permit(drain("h1", "d1"))
            .await
            .unwrap()
            .into_inner()
            .decision
            .unwrap(),
    );
    let permit = g.permit.unwrap();
    assert_eq!(permit.action_name, "drain_host");

    let s = server.medicctl(&["status", "-o", "json"]).await.json();
    let names: Vec<&str> = s["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["restart_job", "reboot_host", "drain_host"], "{s}");
    let text = server.medicctl(&["status"]).await;
    assert!(text.ok().contains("drain_host"), "{text:#?}");

    let permits = server
        .medicctl(&["permits", "--action", "drain-host"])
        .await;
    let permits = permits.ok();
    assert!(permits.contains(&permit.permit_id), "{permits}");
    assert!(permits.contains("drain_host"), "{permits}");
    let none = server
        .medicctl(&["permits", "--action", "restart-job", "-o", "json"])
        .await
        .json();
    assert_eq!(none["permits"], serde_json::json!([]), "{none}");

    // Explain without --action asks about every configured action.
    let all = server
        .medicctl(&["explain", "h2", "-o", "json"])
        .await
        .json();
    let keys: Vec<&String> = all.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["drain_host", "reboot_host", "restart_job"], "{all}");
    assert_eq!(
        all["drain_host"]["denials"][0]["reason"], "concurrency_cap",
        "{all}"
    );
    // An action nobody declared: the answer names it.
    let unknown = server
        .medicctl(&["explain", "h2", "--action", "reimage"])
        .await;
    assert!(
        unknown.ok().contains("unknown action \"reimage\""),
        "{unknown:#?}"
    );
    // A bad name is refused before any call.
    let bad = server
        .medicctl(&["explain", "h2", "--action", "Re Image"])
        .await;
    assert_eq!(bad.code, 64, "{bad:#?}");
    assert!(bad.stderr.contains("invalid action name"), "{bad:#?}");

    let history = server
        .medicctl(&["history", "--action", "drain_host", "-o", "json"])
        .await
        .json();
    let events = history["events"].as_array().unwrap();
    assert!(events.iter().any(|e| e["kind"] == "grant"), "{history}");

    // A pause of one custom action stops only it.
    server
        .medicctl(&[
            "pause",
            "--reason",
            "drain script bug",
            "--action",
            "drain-host",
        ])
        .await
        .ok();
    let one = server
        .medicctl(&["explain", "h2", "--action", "drain-host", "-o", "json"])
        .await
        .json();
    assert_eq!(one["denials"][0]["reason"], "paused", "{one}");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn override_lowers_a_cap_survives_a_restart_and_ends_early() {
    let dir = tempfile::tempdir().unwrap();
    let (server, mut agent, _) = ready(dir.path(), FAST, &["h1", "h2", "h3"]).await;

    // Above the ceiling (no override_ceiling: the configured 10) it is
    // refused, naming the ceiling; without a reason it is a usage error.
    let above = server
        .medicctl(&[
            "override",
            "--action",
            "restart-job",
            "--max-in-flight",
            "11",
            "--for",
            "1h",
            "--reason",
            "more",
        ])
        .await;
    assert_eq!(above.code, 1, "{above:#?}");
    assert!(
        above.stderr.contains("override_ceiling") && above.stderr.contains("up to 10"),
        "{above:#?}"
    );
    let no_reason = server
        .medicctl(&[
            "override",
            "--action",
            "restart-job",
            "--max-in-flight",
            "1",
            "--for",
            "1h",
        ])
        .await;
    assert_eq!(no_reason.code, 64, "{no_reason:#?}");
    assert!(no_reason.stderr.contains("--reason"), "{no_reason:#?}");

    let set = server
        .medicctl(&[
            "override",
            "--action",
            "restart-job",
            "--max-in-flight",
            "1",
            "--for",
            "1h",
            "--reason",
            "db-3 fragile, INC-9",
            "-o",
            "json",
        ])
        .await
        .json();
    let id = set["id"].as_u64().unwrap();
    assert_eq!(set["limit"], "max_in_flight", "{set}");
    assert_eq!(set["value"], 1, "{set}");

    granted(request(&mut agent, "h1", RestartJob, "a").await);
    let d = denied(request(&mut agent, "h2", RestartJob, "b").await);
    assert_eq!(d.reason(), pb::DenyReason::ConcurrencyCap, "{d:?}");

    // It is durable: a restarted coordinator still holds it.
    let server = server.restart().await;
    let status = server.medicctl(&["status"]).await;
    let text = status.ok();
    assert!(text.contains("OVERRIDDEN"), "{text}");
    assert!(text.contains("db-3 fragile, INC-9"), "{text}");
    let s = server.medicctl(&["status", "-o", "json"]).await.json();
    assert_eq!(s["overrides"][0]["id"], id, "{s}");

    let ended = server
        .medicctl(&[
            "override",
            "end",
            &id.to_string(),
            "--reason",
            "db-3 healthy",
        ])
        .await;
    assert!(ended.ok().contains("db-3 fragile"), "{ended:#?}");
    let again = server
        .medicctl(&["override", "end", &id.to_string(), "--reason", "twice"])
        .await;
    assert_eq!(again.code, 1, "{again:#?}");
    assert!(again.stderr.contains("no override"), "{again:#?}");
    let s = server.medicctl(&["status", "-o", "json"]).await.json();
    assert_eq!(s["overrides"], serde_json::json!([]), "{s}");

    // The audit history has both ends, with who and why.
    let h = server
        .medicctl(&["history", "--kind", "override", "-o", "json"])
        .await
        .json();
    let events = h["events"].as_array().unwrap();
    assert_eq!(events.len(), 2, "{h}");
    assert_eq!(events[0]["reason"], "db-3 fragile, INC-9", "{h}");
    assert_eq!(events[1]["reason"], "db-3 healthy", "{h}");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn approvals_are_listed_approved_rejected_and_audited() {
    let dir = tempfile::tempdir().unwrap();
    let toml =
        format!("{FAST}\n[limits.restart_job.approval]\nalways = true\nexpire_after = \"10m\"\n");
    let (server, mut agent, _) = ready(dir.path(), &toml, &["h1", "h2", "h3"]).await;

    let w = waiting(request(&mut agent, "h1", RestartJob, "a").await);
    let status = server.medicctl(&["status"]).await;
    assert!(status.ok().contains("APPROVALS"), "{status:#?}");
    let list = server.medicctl(&["approvals"]).await;
    let text = list.ok();
    assert!(
        text.contains("pending") && text.contains("h1") && text.contains("restart_job"),
        "{text}"
    );
    let j = server.medicctl(&["approvals", "-o", "json"]).await.json();
    assert_eq!(j["approvals"][0]["id"], w.approval_id, "{j}");
    assert_eq!(j["approvals"][0]["state"], "pending", "{j}");

    // A reason is required; an unknown id is named.
    let id = w.approval_id.to_string();
    let no_reason = server.medicctl(&["approve", &id]).await;
    assert_eq!(no_reason.code, 64, "{no_reason:#?}");
    let unknown = server
        .medicctl(&["approve", "999", "--reason", "who?"])
        .await;
    assert_eq!(unknown.code, 1, "{unknown:#?}");
    assert!(unknown.stderr.contains("no approval 999"), "{unknown:#?}");

    let ok = server
        .medicctl(&["approve", &id, "--reason", "checked h1, INC-7"])
        .await;
    assert!(ok.ok().contains("approved"), "{ok:#?}");
    let twice = server
        .medicctl(&["reject", &id, "--reason", "changed my mind"])
        .await;
    assert_eq!(twice.code, 1, "{twice:#?}");
    assert!(
        twice.stderr.contains("already approved") && twice.stderr.contains("tester"),
        "{twice:#?}"
    );
    granted(request(&mut agent, "h1", RestartJob, "a").await);

    // A rejection denies the request, naming who and why.
    let w2 = waiting(request(&mut agent, "h2", RestartJob, "b").await);
    server
        .medicctl(&[
            "reject",
            &w2.approval_id.to_string(),
            "--reason",
            "h2 is being replaced",
        ])
        .await
        .ok();
    let d = denied(request(&mut agent, "h2", RestartJob, "b").await);
    assert_eq!(d.reason(), pb::DenyReason::ApprovalRejected, "{d:?}");
    assert!(d.message.contains("h2 is being replaced"), "{}", d.message);

    // An approval nobody decided expires, and cannot be approved then.
    let w3 = waiting(request(&mut agent, "h3", RestartJob, "c").await);
    server.advance(Duration::from_secs(11 * 60));
    heartbeat(&mut agent, "h3", labels(&[("rack", "r1")]), true).await;
    let late = server
        .medicctl(&[
            "approve",
            &w3.approval_id.to_string(),
            "--reason",
            "sorry, was at lunch",
        ])
        .await;
    assert_eq!(late.code, 1, "{late:#?}");
    assert!(late.stderr.contains("already expired"), "{late:#?}");

    let all = server
        .medicctl(&["approvals", "--all", "-o", "json"])
        .await
        .json();
    let states: Vec<&str> = all["approvals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["expired", "rejected", "used"], "{all}");

    // Every step is in the audit history with who and why.
    let h = server
        .medicctl(&["history", "--kind", "approval", "-o", "json"])
        .await
        .json();
    let reasons: Vec<&str> = h["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["reason"].as_str().unwrap())
        .collect();
    assert!(reasons.contains(&"checked h1, INC-7"), "{h}");
    assert!(reasons.contains(&"h2 is being replaced"), "{h}");
    let text = server.medicctl(&["history", "--kind", "approval"]).await;
    assert!(text.ok().contains("approval"), "{text:#?}");
    server.stop().await.unwrap();
}
