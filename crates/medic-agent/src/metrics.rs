//! The agent's Prometheus metrics (`medic_agent_*`), served on an optional
//! local port (`metrics_listen`).

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Labels: a denial reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// The coordinator's reason (`paused`, `rate_limited`, ...).
    pub reason: String,
}

/// Labels: an action and its outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    /// `restart_job` or `reboot_host`.
    pub action: String,
    /// `succeeded`, `failed`, `aborted` or `dry_run`.
    pub outcome: String,
}

/// Labels: a hook and how it ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HookLabels {
    /// `pre` or `post`.
    pub hook: String,
    /// `ok`, `failed` (non-zero exit), `timeout` or `not_started`.
    pub result: String,
}

/// Every agent metric.
#[derive(Debug)]
pub struct AgentMetrics {
    registry: Registry,
    /// Detector rounds run.
    pub checks: Counter,
    /// Jobs confirmed stuck now.
    pub jobs_stuck: Gauge,
    /// Heartbeats sent (answered or not).
    pub heartbeats: Counter,
    /// Permit requests sent.
    pub permit_requests: Counter,
    /// Permits granted.
    pub permits_granted: Counter,
    /// Denials by reason.
    pub permit_denials: Family<ReasonLabel, Counter>,
    /// Actions finished, by action and outcome.
    pub actions: Family<ActionLabels, Counter>,
    /// Hooks run, by hook and result.
    pub hooks: Family<HookLabels, Counter>,
    /// 1 while a verified fix is on probation (its permit held).
    pub on_probation: Gauge,
    /// 1 while the last call reached a coordinator.
    pub coordinator_reachable: Gauge,
    /// Calls that reached no coordinator.
    pub coordinator_errors: Counter,
    /// Replies that could not be used (a grant without a usable permit):
    /// each is logged at error with its cause.
    pub malformed_replies: Counter,
}

impl Default for AgentMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl AgentMetrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("medic_agent");
        let counter = |r: &mut Registry, name: &str, help: &str| {
            let c = Counter::default();
            r.register(name, help, c.clone());
            c
        };
        let gauge = |r: &mut Registry, name: &str, help: &str| {
            let g = Gauge::default();
            r.register(name, help, g.clone());
            g
        };
        let checks = counter(&mut r, "checks", "Detector rounds run over all jobs");
        let jobs_stuck = gauge(&mut r, "jobs_stuck", "Jobs confirmed stuck now");
        let heartbeats = counter(&mut r, "heartbeats", "Heartbeats sent");
        let permit_requests = counter(&mut r, "permit_requests", "Permit requests sent");
        let permits_granted = counter(&mut r, "permits_granted", "Permits granted");
        let permit_denials = Family::<ReasonLabel, Counter>::default();
        r.register(
            "permit_denials",
            "Permit denials by reason",
            permit_denials.clone(),
        );
        let actions = Family::<ActionLabels, Counter>::default();
        r.register(
            "actions",
            "Actions finished, by action and outcome",
            actions.clone(),
        );
        let hooks = Family::<HookLabels, Counter>::default();
        r.register(
            "hooks",
            "Job hooks run, by hook (pre, post) and result (ok, failed, timeout, not_started)",
            hooks.clone(),
        );
        let on_probation = gauge(
            &mut r,
            "on_probation",
            "1 while a verified fix is on probation, its permit held until the job has stayed healthy",
        );
        let coordinator_reachable = gauge(
            &mut r,
            "coordinator_reachable",
            "1 while the last call reached a coordinator; 0 means the agent takes no action",
        );
        let coordinator_errors = counter(
            &mut r,
            "coordinator_errors",
            "Calls that reached no coordinator",
        );
        let malformed_replies = counter(
            &mut r,
            "malformed_replies",
            "Coordinator replies the agent could not use (e.g. a grant without a usable permit); \
             each is logged at error",
        );
        Self {
            registry: r,
            checks,
            jobs_stuck,
            heartbeats,
            permit_requests,
            permits_granted,
            permit_denials,
            actions,
            hooks,
            on_probation,
            coordinator_reachable,
            coordinator_errors,
            malformed_replies,
        }
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Serves `GET /metrics` (and `/healthz`) on `listener` until dropped: a
/// minimal HTTP/1.1 responder, so the agent carries no HTTP server stack.
pub async fn serve(listener: TcpListener, metrics: Arc<AgentMetrics>) {
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let n =
                match tokio::time::timeout(std::time::Duration::from_secs(5), sock.read(&mut buf))
                    .await
                {
                    Ok(Ok(n)) => n,
                    _ => return,
                };
            let head = String::from_utf8_lossy(&buf[..n]);
            let (status, body) = if head.starts_with("GET /metrics") {
                ("200 OK", metrics.encode())
            } else if head.starts_with("GET /healthz") {
                ("200 OK", "ok\n".to_owned())
            } else {
                ("404 Not Found", "not found\n".to_owned())
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(resp.as_bytes()).await;
        });
    }
}
