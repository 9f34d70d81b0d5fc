//! The agent's metrics endpoint as Prometheus' own tools read it: classic
//! text or OpenMetrics by the `Accept` header, HEAD answered, unknown paths
//! 404; `promtool check metrics` and the Python client's parsers read both
//! formats cleanly.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;

use medic_agent::metrics::{ActionLabels, AgentMetrics, ReasonLabel};

use medic_coordinator::testing::{http_request as http, promtool_check_metrics, python_families};

fn families(text: &str, format: &str) -> String {
    python_families(text, format == "om")
}

async fn serving() -> SocketAddr {
    let metrics = Arc::new(AgentMetrics::new());
    metrics.checks.inc();
    metrics
        .permit_denials
        .get_or_create(&ReasonLabel {
            reason: "paused".into(),
        })
        .inc();
    metrics
        .actions
        .get_or_create(&ActionLabels {
            action: "restart_job".into(),
            outcome: "succeeded".into(),
        })
        .inc();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(medic_agent::metrics::serve(listener, metrics));
    addr
}

#[tokio::test]
async fn metrics_are_classic_text_by_default_and_openmetrics_when_asked() {
    let addr = serving().await;
    let (head, classic) = http(addr, "GET", "/metrics", Some("text/plain;version=0.0.4")).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    assert!(
        classic.contains("# TYPE medic_agent_actions_total counter"),
        "{classic}"
    );
    assert!(!classic.contains("# EOF"), "{classic}");
    let (_, plain) = http(addr, "GET", "/metrics", None).await;
    assert_eq!(plain, classic);
    let (head, om) = http(
        addr,
        "GET",
        "/metrics",
        Some("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"),
    )
    .await;
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text; version=1.0.0"),
        "{head}"
    );
    assert!(om.ends_with("# EOF\n"), "{om}");

    // Python's parsers: one family per metric, with its real type.
    let c = families(&classic, "classic");
    let o = families(&om, "om");
    for want in [
        "medic_agent_actions counter 1",
        "medic_agent_permit_denials counter 1",
        "medic_agent_jobs_stuck gauge 1",
    ] {
        assert!(c.lines().any(|l| l == want), "classic: no {want:?} in\n{c}");
        assert!(
            o.lines().any(|l| l == want),
            "openmetrics: no {want:?} in\n{o}"
        );
    }
    assert!(!c.contains(" unknown "), "{c}");
    assert_eq!(c.lines().count(), o.lines().count(), "{c}\n{o}");

    // promtool reads the classic format and finds nothing to complain of.
    promtool_check_metrics(&classic);
}

#[tokio::test]
async fn head_is_answered_and_unknown_paths_and_methods_are_refused() {
    let addr = serving().await;
    let (head, body) = http(addr, "HEAD", "/metrics", None).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(body.is_empty(), "{body}");
    let (head, _) = http(addr, "GET", "/metricsXYZ", None).await;
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    let (head, body) = http(addr, "GET", "/healthz", None).await;
    assert!(
        head.starts_with("HTTP/1.1 200") && body == "ok\n",
        "{head}{body}"
    );
    let (head, _) = http(addr, "POST", "/metrics", None).await;
    assert!(head.starts_with("HTTP/1.1 405"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("allow: get, head"),
        "{head}"
    );
}
