//! Webhook notifications: what an on-call person must learn without
//! watching a terminal (breaker opened or closed, pause and resume, host
//! quarantined, host lost mid-remediation, config reload rejected).
//!
//! Notifications come from audit entries once they are durable. Each
//! webhook has its own bounded queue and delivery task, so a slow or dead
//! webhook delays nothing else: offering a notification never waits (a full
//! queue drops it, counted and logged), and delivery retries with
//! exponential backoff up to `max_attempts`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use medic_policy::{Event, PermitState};
use medic_store::{Entry, Record};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::config::{NotifyConfig, NotifyKind, Webhook, WebhookFormat};
use crate::metrics::Metrics;

pub(crate) type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// One notification, as the generic JSON body carries it. Field names are
/// stable; `details` depends on `kind` (see `config/coordinator.toml`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Notification {
    /// `breaker_opened`, `breaker_half_opened`, `breaker_closed`, `paused`,
    /// `resumed`, `host_quarantined`, `host_lost`, `config_reload_failed`,
    /// `override_set`, `override_ended`, `approval_requested`,
    /// `approval_decided` or `approval_expired`.
    pub kind: &'static str,
    /// The audit history entry it comes from (`medicctl history`).
    pub event_id: u64,
    /// When it happened, RFC 3339.
    pub time: String,
    /// One sentence for a human.
    pub summary: String,
    /// Who caused it (`coordinator` for the coordinator's own decisions).
    pub actor: String,
    /// Why, in the actor's words (or the numbers that opened a breaker).
    pub reason: String,
    /// The host concerned, if one.
    pub host: Option<String>,
    /// Kind-specific fields.
    pub details: serde_json::Value,
}

impl Notification {
    /// The notification an audit entry warrants, if any.
    pub fn from_entry(entry: &Entry) -> Option<(NotifyKind, Notification)> {
        let time = medic_policy::rfc3339(entry.at);
        let n = |kind: NotifyKind,
                 summary: String,
                 actor: &str,
                 reason: &str,
                 host: Option<String>,
                 details: serde_json::Value| {
            (
                kind,
                Notification {
                    kind: kind.as_str(),
                    event_id: entry.id,
                    time: time.clone(),
                    summary,
                    actor: actor.to_owned(),
                    reason: reason.to_owned(),
                    host,
                    details,
                },
            )
        };
        match &entry.record {
            Record::Policy(Event::BreakerOpened(t)) => Some(n(
                NotifyKind::BreakerOpened,
                format!(
                    "medic circuit breaker OPEN for {}: {}. No grants there until it closes.",
                    t.scope, t.detail
                ),
                medic_policy::COORDINATOR_ACTOR,
                &t.detail,
                None,
                serde_json::json!({
                    "scope": t.scope.to_string(),
                    "cause": t.cause.as_str(),
                }),
            )),
            Record::Policy(Event::BreakerHalfOpened {
                scope,
                actor,
                reason,
                ..
            }) => Some(n(
                NotifyKind::BreakerHalfOpened,
                format!("medic circuit breaker HALF-OPEN for {scope} by {actor}: {reason}"),
                actor,
                reason,
                None,
                serde_json::json!({ "scope": scope.to_string() }),
            )),
            Record::Policy(Event::BreakerClosed {
                scope,
                actor,
                reason,
                ..
            }) => Some(n(
                NotifyKind::BreakerClosed,
                format!("medic circuit breaker closed for {scope} by {actor}: {reason}"),
                actor,
                reason,
                None,
                serde_json::json!({ "scope": scope.to_string() }),
            )),
            Record::Policy(Event::Paused(p)) => Some(n(
                NotifyKind::Paused,
                format!(
                    "medic PAUSED ({}) by {}: {}{}",
                    p.scope,
                    p.actor,
                    p.reason,
                    p.until.map_or_else(
                        || ", until resumed".to_owned(),
                        |u| format!(", until {}", medic_policy::rfc3339(u))
                    )
                ),
                &p.actor,
                &p.reason,
                None,
                serde_json::json!({
                    "pause_id": p.id,
                    "scope": p.scope.to_string(),
                    "until": p.until.map(medic_policy::rfc3339),
                }),
            )),
            Record::Policy(Event::Resumed {
                pause,
                actor,
                reason,
                ..
            }) => Some(n(
                NotifyKind::Resumed,
                format!("medic resumed ({}) by {actor}: {reason}", pause.scope),
                actor,
                reason,
                None,
                serde_json::json!({ "pause_id": pause.id, "scope": pause.scope.to_string() }),
            )),
            Record::Policy(Event::OverrideSet(o)) => Some(n(
                NotifyKind::OverrideSet,
                format!(
                    "medic limit OVERRIDDEN by {}: {} {} = {} until {}: {}",
                    o.actor,
                    o.action,
                    o.limit,
                    o.value,
                    medic_policy::rfc3339(o.until),
                    o.reason
                ),
                &o.actor,
                &o.reason,
                None,
                serde_json::json!({
                    "override_id": o.id,
                    "action": o.action.as_str(),
                    "limit": o.limit.as_str(),
                    "value": o.value,
                    "until": medic_policy::rfc3339(o.until),
                }),
            )),
            Record::Policy(Event::OverrideEnded {
                over,
                actor,
                reason,
                ..
            }) => Some(n(
                NotifyKind::OverrideEnded,
                format!(
                    "medic override {} ({} {} = {}) ended by {actor}: {reason}",
                    over.id, over.action, over.limit, over.value
                ),
                actor,
                reason,
                None,
                serde_json::json!({
                    "override_id": over.id,
                    "action": over.action.as_str(),
                    "limit": over.limit.as_str(),
                }),
            )),
            Record::Policy(Event::ApprovalRequested(a)) => Some(n(
                NotifyKind::ApprovalRequested,
                format!(
                    "medic APPROVAL NEEDED: {} of job {:?} on {} waits for a human (approval \
                     {}, expires {}): {}. `medicctl approve {}` or `medicctl reject {}`, with \
                     a reason",
                    a.action,
                    a.job,
                    a.host,
                    a.id,
                    medic_policy::rfc3339(a.expires_at),
                    a.why,
                    a.id,
                    a.id
                ),
                &medic_policy::host_actor(&a.host),
                &a.reason,
                Some(a.host.to_string()),
                serde_json::json!({
                    "approval_id": a.id,
                    "action": a.action.as_str(),
                    "job": a.job,
                    "why": a.why,
                    "dry_run": a.dry_run,
                    "expires_at": medic_policy::rfc3339(a.expires_at),
                }),
            )),
            Record::Policy(Event::ApprovalChanged {
                id,
                host,
                state,
                actor,
                reason,
                expires_at,
                ..
            }) => {
                use medic_policy::ApprovalState as S;
                let kind = match state {
                    S::Approved | S::Rejected => NotifyKind::ApprovalDecided,
                    S::Expired => NotifyKind::ApprovalExpired,
                    S::Pending | S::Withdrawn | S::Used => return None,
                };
                Some(n(
                    kind,
                    format!("medic approval {id} for {host} {state} by {actor}: {reason}"),
                    actor,
                    reason,
                    Some(host.to_string()),
                    serde_json::json!({
                        "approval_id": id,
                        "state": state.as_str(),
                        "expires_at": expires_at.map(medic_policy::rfc3339),
                    }),
                ))
            }
            Record::Policy(Event::HostQuarantined(q)) => Some(n(
                NotifyKind::HostQuarantined,
                format!(
                    "host {} QUARANTINED ({}) by {}: {}. It gets no permit until a human releases it.",
                    q.host,
                    q.cause.as_str(),
                    q.actor,
                    q.reason
                ),
                &q.actor,
                &q.reason,
                Some(q.host.to_string()),
                serde_json::json!({ "cause": q.cause.as_str() }),
            )),
            Record::Policy(Event::PermitEnded {
                id,
                host,
                action,
                state: PermitState::Expired,
                actor,
                detail,
                ..
            }) => Some(n(
                NotifyKind::HostLost,
                format!(
                    "host {host} LOST mid-remediation: {action} permit {id} expired without an outcome"
                ),
                actor,
                detail,
                Some(host.to_string()),
                serde_json::json!({ "permit_id": id.as_str(), "action": action.as_str() }),
            )),
            Record::ConfigReloaded {
                actor,
                reason,
                errors,
            } if !errors.is_empty() => Some(n(
                NotifyKind::ConfigReloadFailed,
                format!(
                    "medic config reload REJECTED ({} error{}; the old config keeps running): {}",
                    errors.len(),
                    if errors.len() == 1 { "" } else { "s" },
                    errors[0]
                ),
                actor,
                reason,
                None,
                serde_json::json!({
                    "errors": errors
                        .iter()
                        .map(|e| serde_json::json!({ "key": e.path, "message": e.message }))
                        .collect::<Vec<_>>(),
                }),
            )),
            _ => None,
        }
    }

    /// The request body for `format`.
    pub fn body(&self, format: WebhookFormat) -> Vec<u8> {
        let value = match format {
            WebhookFormat::Json => serde_json::to_value(self).unwrap_or_default(),
            WebhookFormat::Slack => serde_json::json!({ "text": self.summary }),
        };
        serde_json::to_vec(&value).unwrap_or_default()
    }
}

struct Sink {
    hook: Webhook,
    tx: mpsc::Sender<Arc<Notification>>,
}

/// Fans notifications out to every configured webhook.
pub struct Notifier {
    sinks: Mutex<Vec<Sink>>,
    config: Mutex<NotifyConfig>,
    metrics: Arc<Metrics>,
    client: Option<HttpClient>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.sinks.lock().map(|s| s.len()).unwrap_or(0);
        write!(f, "Notifier({n} webhooks)")
    }
}

impl Notifier {
    /// Starts a delivery task per webhook. Must run inside a tokio runtime.
    pub fn new(config: &NotifyConfig, metrics: Arc<Metrics>) -> Self {
        let client = match http_client() {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::error!(error = %e, "cannot set up TLS for webhooks; notifications are disabled");
                None
            }
        };
        let n = Self {
            sinks: Mutex::new(Vec::new()),
            config: Mutex::new(NotifyConfig::default()),
            metrics,
            client,
        };
        n.update(config);
        n
    }

    /// Applies a new configuration (after a reload). Webhooks that did not
    /// change keep their queues.
    pub fn update(&self, config: &NotifyConfig) {
        let mut current = self
            .config
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *current == *config {
            return;
        }
        *current = config.clone();
        let Some(client) = &self.client else {
            return;
        };
        let mut sinks = self
            .sinks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Dropping a sender lets its delivery task finish its queue and end.
        sinks.clear();
        for hook in &config.webhooks {
            let (tx, rx) = mpsc::channel(config.queue);
            tokio::spawn(deliver(
                hook.clone(),
                rx,
                client.clone(),
                self.metrics.clone(),
            ));
            sinks.push(Sink {
                hook: hook.clone(),
                tx,
            });
        }
    }

    /// Offers a durable audit entry; never waits.
    pub fn offer(&self, entry: &Entry) {
        let Some((kind, notification)) = Notification::from_entry(entry) else {
            return;
        };
        let notification = Arc::new(notification);
        let sinks = self
            .sinks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for sink in sinks.iter().filter(|s| s.hook.events.contains(&kind)) {
            if sink.tx.try_send(notification.clone()).is_err() {
                self.metrics.notification_dropped("queue_full");
                tracing::warn!(
                    webhook = %sink.hook.url,
                    kind = kind.as_str(),
                    event_id = entry.id,
                    "notification dropped: the webhook's queue is full (it is slow or down)"
                );
            }
        }
    }
}

pub(crate) fn http_client() -> Result<HttpClient, rustls::Error> {
    let roots: rustls::RootCertStore = webpki_roots::TLS_SERVER_ROOTS.iter().cloned().collect();
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build();
    Ok(Client::builder(TokioExecutor::new()).build(https))
}

/// Delivers one webhook's queue, retrying each notification with
/// exponential backoff (1s, 2s, 4s, ... at most 60s) up to `max_attempts`.
async fn deliver(
    hook: Webhook,
    mut rx: mpsc::Receiver<Arc<Notification>>,
    client: HttpClient,
    metrics: Arc<Metrics>,
) {
    while let Some(n) = rx.recv().await {
        let body = Bytes::from(n.body(hook.format));
        let mut backoff = Duration::from_secs(1);
        let mut attempt = 1;
        loop {
            match post(&client, &hook, body.clone()).await {
                Ok(()) => {
                    metrics.notifications_sent.inc();
                    break;
                }
                Err(why) if attempt >= hook.max_attempts => {
                    metrics.notification_dropped("failed");
                    tracing::warn!(
                        webhook = %hook.url, kind = n.kind, event_id = n.event_id, attempts = attempt,
                        error = %why, "notification dropped after its last attempt"
                    );
                    break;
                }
                Err(why) => {
                    metrics.notification_retries.inc();
                    tracing::debug!(webhook = %hook.url, attempt, error = %why, "webhook failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(60));
                    attempt += 1;
                }
            }
        }
    }
}

/// The header that carries the body's HMAC-SHA256 signature.
pub const SIGNATURE_HEADER: &str = "x-medic-signature";

/// The header that carries the time the signature was made (Unix seconds).
pub const TIMESTAMP_HEADER: &str = "x-medic-timestamp";

/// The signature of `body` sent at `timestamp` (Unix seconds) under `key`:
/// `sha256=` and the hex HMAC-SHA256 of `TIMESTAMP.BODY`. Signing the time
/// with the body lets a receiver refuse an old request replayed.
pub fn signature(key: &[u8], timestamp: u64, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    let mut ctx = ring::hmac::Context::with_key(&key);
    ctx.update(timestamp.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    let tag = ctx.sign();
    let mut out = String::from("sha256=");
    for b in tag.as_ref() {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

async fn post(client: &HttpClient, hook: &Webhook, body: Bytes) -> Result<(), String> {
    let mut req = hyper::Request::post(&hook.url)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(
            hyper::header::USER_AGENT,
            concat!("medic-coordinator/", env!("CARGO_PKG_VERSION")),
        );
    for (name, value) in &hook.headers {
        req = req.header(name, value.expose());
    }
    if let Some(key) = &hook.hmac_key {
        // Each attempt is signed afresh, so a retry is not refused as old.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        req = req
            .header(TIMESTAMP_HEADER, now)
            .header(SIGNATURE_HEADER, signature(key.expose(), now, &body));
    }
    let req = req.body(Full::new(body)).map_err(|e| e.to_string())?;
    match tokio::time::timeout(hook.timeout, client.request(req)).await {
        Err(_) => Err(format!(
            "no answer within {}",
            humantime::format_duration(hook.timeout)
        )),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok(resp)) if resp.status().is_success() => Ok(()),
        Ok(Ok(resp)) => Err(format!("HTTP {}", resp.status())),
    }
}
