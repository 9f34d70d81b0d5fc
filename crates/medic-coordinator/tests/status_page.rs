//! The status page as a browser shows it: headless Chromium loads `/status`
//! from a running coordinator after a pause and a breaker trip, and the
//! page says medic is not granting and why, names the pause and the
//! breaker, shows the permit in flight and the rack that is unhealthy; a
//! screenshot is saved. Turned off, the page is not served.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use medic_proto::pb::v1 as pb;

/// What headless Chromium renders for `url` (its DOM), and a screenshot of
/// it in `shot`.
fn chromium(url: &str, home: &std::path::Path, shot: &std::path::Path) -> String {
    let run = |extra: &[String]| {
        Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--window-size=1200,1600",
            ])
            .args(extra)
            .arg(url)
            .env("HOME", home)
            .output()
            .expect("chromium (scripts/test installs it)")
    };
    let out = run(&["--dump-dom".to_owned()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shot_out = run(&[format!("--screenshot={}", shot.display())]);
    assert!(
        shot_out.status.success(),
        "{}",
        String::from_utf8_lossy(&shot_out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The text of the element with `id` in `dom`: tags stripped, entities
/// decoded, whitespace collapsed.
fn text_of(dom: &str, id: &str) -> String {
    let at = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in the page:\n{dom}"));
    let open = dom[..at].rfind('<').unwrap();
    let tag: String = dom[open + 1..]
        .chars()
        .take_while(char::is_ascii_alphanumeric)
        .collect();
    let rest = &dom[at..];
    let rest = &rest[rest.find('>').unwrap() + 1..];
    let end = rest.find(&format!("</{tag}>")).unwrap_or(rest.len());
    let mut out = String::new();
    let mut in_tag = false;
    for c in rest[..end].chars() {
        match c {
            '<' => {
                in_tag = true;
                out.push(' ');
            }
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_a_pause_a_breaker_a_permit_and_the_unhealthy_rack() {
    let dir = tempfile::tempdir().unwrap();
    let toml = FAST.replace(
        "unhealthy_percent = 100",
        "unhealthy_percent = 50\nmin_unhealthy = 1",
    );
    let server = TestServer::start(dir.path(), &toml).await;
    let mut agent = server.agent().await;
    let mut admin = server.admin().await;
    let racks = [
        ("h1", "r1"),
        ("h2", "r1"),
        ("h3", "r2"),
        ("h4", "r2"),
        ("h5", "r3"),
    ];
    for (h, r) in racks {
        heartbeat(&mut agent, h, labels(&[("rack", r)]), false).await;
    }
    server.advance(Duration::from_secs(3));
    for (h, r) in racks {
        heartbeat(&mut agent, h, labels(&[("rack", r)]), false).await;
    }
    // A permit in flight, then an operator's pause whose reason holds markup.
    granted(request(&mut agent, "h5", pb::Action::RestartJob, "r-1").await);
    let mut req = tonic::Request::new(pb::PauseRequest {
        scope: None,
        reason: "db migration <b>INC-42</b>".into(),
        duration: None,
    });
    req.metadata_mut()
        .insert("medic-actor", "alice".parse().unwrap());
    admin.pause(req).await.unwrap();
    // Rack r1 goes bad: both of its hosts stuck. With h5 under a permit,
    // 3 of 5 hosts are unhealthy: the fleet breaker opens.
    heartbeat(&mut agent, "h1", labels(&[("rack", "r1")]), true).await;
    heartbeat(&mut agent, "h2", labels(&[("rack", "r1")]), true).await;
    let s = admin
        .get_status(pb::GetStatusRequest {})
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert!(!s.breakers.is_empty(), "a breaker must have tripped: {s:?}");

    let url = format!("http://{}/status", server.metrics_addr);
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("medic-status-page.png");
    let _ = std::fs::remove_file(&shot);
    let dom = chromium(&url, dir.path(), &shot);

    assert_eq!(text_of(&dom, "granting"), "granting: NO: paused fleet-wide");
    let pauses = text_of(&dom, "pauses");
    assert!(
        pauses.contains("alice") && pauses.contains("db migration <b>INC-42</b>"),
        "the reason is shown as text, not markup: {pauses}"
    );
    assert!(
        !dom.contains("<b>INC-42</b>"),
        "operator text must be escaped"
    );
    let breakers = text_of(&dom, "breakers");
    assert!(
        breakers.contains("fleet open unhealthy_fraction")
            && breakers.contains("3 of 5 live hosts unhealthy"),
        "{breakers}"
    );
    let permits = text_of(&dom, "permits");
    assert!(
        permits.contains("h5") && permits.contains("restart_job"),
        "{permits}"
    );
    assert!(
        dom.contains("data-domain=\"rack=r1\"") && dom.contains("2/2 unhealthy"),
        "the heat map shows rack r1 unhealthy"
    );
    let events = text_of(&dom, "events");
    assert!(events.contains("PAUSED"), "{events}");
    assert!(events.contains("granted restart_job"), "{events}");
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "a real screenshot"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn the_status_page_can_be_turned_off() {
    let dir = tempfile::tempdir().unwrap();
    let toml = format!("[server]\nstatus_page = false\n{FAST}");
    let server = TestServer::start(dir.path(), &toml).await;
    let (head, _) = http_request(server.metrics_addr, "GET", "/status", None).await;
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    server.stop().await.unwrap();
}

/// However many viewers refresh, the engine is read for the page at most
/// once per `REUSE`: a pause made right after a render shows only once the
/// rendered page is older than that.
#[tokio::test]
async fn viewers_within_a_moment_share_one_render() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), FAST).await;
    let mut admin = server.admin().await;
    let started = std::time::Instant::now();
    let (_, first) = http_request(server.metrics_addr, "GET", "/status", None).await;
    admin
        .pause(pb::PauseRequest {
            scope: None,
            reason: "change freeze".into(),
            duration: None,
        })
        .await
        .unwrap();
    let (_, second) = http_request(server.metrics_addr, "GET", "/status", None).await;
    if started.elapsed() < medic_coordinator::status_page::REUSE {
        assert_eq!(first, second, "re-rendered within REUSE");
    }
    tokio::time::sleep(medic_coordinator::status_page::REUSE).await;
    let (_, third) = http_request(server.metrics_addr, "GET", "/status", None).await;
    assert!(third.contains("change freeze"), "{third}");
    server.stop().await.unwrap();
}
