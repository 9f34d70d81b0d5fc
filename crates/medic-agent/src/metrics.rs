//! The agent's Prometheus metrics (`medic_agent_*`), served on an optional
//! local port (`metrics_listen`).

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
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
    /// Jobs whose detectors fire while they are within their start grace.
    pub jobs_starting: Gauge,
    /// Heartbeats sent (answered or not).
    pub heartbeats: Counter,
    /// Permit requests sent.
    pub permit_requests: Counter,
    /// Permits granted.
    pub permits_granted: Counter,
    /// Denials by reason.
    pub permit_denials: Family<ReasonLabel, Counter>,
    /// 1 while a permit request waits for a human's approval.
    pub waiting_for_approval: Gauge,
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
        let jobs_starting = gauge(
            &mut r,
            "jobs_starting",
            "Jobs whose detectors fire while their processes are within start_grace",
        );
        let heartbeats = counter(&mut r, "heartbeats", "Heartbeats sent");
        let permit_requests = counter(&mut r, "permit_requests", "Permit requests sent");
        let permits_granted = counter(&mut r, "permits_granted", "Permits granted");
        let permit_denials = Family::<ReasonLabel, Counter>::default();
        r.register(
            "permit_denials",
            "Permit denials by reason",
            permit_denials.clone(),
        );
        let waiting_for_approval = gauge(
            &mut r,
            "waiting_for_approval",
            "1 while a permit request waits for a human's approval at the coordinator \
             (medicctl approvals)",
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
            jobs_starting,
            heartbeats,
            permit_requests,
            permits_granted,
            permit_denials,
            waiting_for_approval,
            actions,
            hooks,
            on_probation,
            coordinator_reachable,
            coordinator_errors,
            malformed_replies,
        }
    }

    /// The metrics in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Serves `/metrics` (in the format the scraper's `Accept` asks for:
/// OpenMetrics or the classic text format) and `/healthz` on `listener`,
/// HTTP/1.1 with hyper, until dropped. GET and HEAD only; any other path is
/// 404.
pub async fn serve(listener: TcpListener, metrics: Arc<AgentMetrics>) {
    loop {
        let Ok((sock, _)) = listener.accept().await else {
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let metrics = metrics.clone();
                async move { Ok::<_, std::convert::Infallible>(respond(&req, &metrics)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(5))
                .serve_connection(hyper_util::rt::TokioIo::new(sock), service);
            let _ = tokio::time::timeout(std::time::Duration::from_secs(60), conn).await;
        });
    }
}

fn respond<B>(
    req: &hyper::Request<B>,
    metrics: &AgentMetrics,
) -> hyper::Response<http_body_util::Full<bytes::Bytes>> {
    use hyper::{Method, StatusCode, header};
    let reply = |status: StatusCode, content_type: &str, body: String| {
        let len = body.len();
        let body = if req.method() == Method::HEAD {
            String::new()
        } else {
            body
        };
        let mut resp = hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from(body)));
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        if let Ok(v) = header::HeaderValue::from_str(content_type) {
            h.insert(header::CONTENT_TYPE, v);
        }
        h.insert(header::CONTENT_LENGTH, header::HeaderValue::from(len));
        resp
    };
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut resp = reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "only GET and HEAD\n".to_owned(),
        );
        resp.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return resp;
    }
    match req.uri().path() {
        "/metrics" => {
            let accept = req
                .headers()
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok());
            let format = medic_proto::exposition::Format::negotiate(accept);
            let mut resp = reply(
                StatusCode::OK,
                format.content_type(),
                format.render(metrics.encode()),
            );
            resp.headers_mut()
                .insert(header::VARY, header::HeaderValue::from_static("Accept"));
            resp
        }
        "/healthz" => reply(
            StatusCode::OK,
            "text/plain; charset=utf-8",
            "ok\n".to_owned(),
        ),
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found: try /metrics or /healthz\n".to_owned(),
        ),
    }
}
