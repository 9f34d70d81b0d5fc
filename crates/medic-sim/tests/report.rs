//! The HTML report renders: headless Chromium loads it, the page's own
//! script measures every chart's lines, and each chart must have drawn one.

#![allow(clippy::unwrap_used)]

use std::process::Command;

use medic_sim::{Options, Scenario};

#[tokio::test(flavor = "multi_thread")]
async fn html_report_charts_render_in_headless_chromium() {
    let r = medic_sim::run(
        Scenario::load("steady").unwrap(),
        &Options {
            seed: 3,
            short: true,
            speed: Some(240.0),
            ..Options::default()
        },
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("report.html");
    let html = medic_sim::report::html(&r);
    assert!(
        !html.contains("<script src"),
        "the report must be self-contained"
    );
    std::fs::write(&path, &html).unwrap();

    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--virtual-time-budget=2000",
            "--dump-dom",
        ])
        .arg(format!("file://{}", path.display()))
        .env("HOME", dir.path())
        .output()
        .expect("chromium (scripts/test installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        dom.contains(r#"data-charts-drawn="4""#),
        "not every chart drew a line: {}",
        dom.lines().find(|l| l.contains("<body")).unwrap_or("")
    );
    let widths: Vec<u32> = dom
        .split(r#"data-drawn-width=""#)
        .skip(1)
        .map(|s| s.split('"').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(widths.len(), 4, "{widths:?}");
    assert!(widths.iter().all(|w| *w > 100), "{widths:?}");
}
