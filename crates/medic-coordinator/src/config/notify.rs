//! `[notify]`: the webhooks told about what an on-call person must know,
//! and the kinds of notification.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use medic_policy::config::{Errors, MAX_COUNT};
use serde::Deserialize;

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawNotify {
    queue: Option<i64>,
    webhooks: Vec<RawWebhook>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
struct RawWebhook {
    url: Option<String>,
    format: Option<String>,
    events: Option<Vec<String>>,
    timeout: Option<String>,
    max_attempts: Option<i64>,
    headers: BTreeMap<String, RawHeaderValue>,
    hmac_secret_file: Option<String>,
}

/// A header's value: written in the config (not secret), or read from a
/// file (a token).
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
enum RawHeaderValue {
    Value(String),
    File { file: String },
}

impl Default for RawHeaderValue {
    fn default() -> Self {
        RawHeaderValue::Value(String::new())
    }
}

/// `[notify]`: webhooks told about what an on-call person must know.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NotifyConfig {
    /// Notifications waiting per webhook; beyond it new ones are dropped
    /// (counted in `medic_notifications_dropped_total` and logged).
    /// Default 1000.
    pub queue: usize,
    /// Where to send them.
    pub webhooks: Vec<Webhook>,
}

/// What a notification is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NotifyKind {
    /// A circuit breaker opened.
    BreakerOpened,
    /// A circuit breaker went half-open: probe permits go out.
    BreakerHalfOpened,
    /// A circuit breaker closed.
    BreakerClosed,
    /// A pause began.
    Paused,
    /// A pause ended.
    Resumed,
    /// A host was quarantined.
    HostQuarantined,
    /// A permit expired without an outcome: the host went away mid-remediation.
    HostLost,
    /// A config reload was rejected.
    ConfigReloadFailed,
    /// An operator overrode a limit.
    OverrideSet,
    /// An override ended (by an operator, by its expiry, or replaced).
    OverrideEnded,
    /// A permit request began to wait for a human's approval.
    ApprovalRequested,
    /// A human approved or rejected a waiting request.
    ApprovalDecided,
    /// An approval expired: no human decided in time, or an approved
    /// request was not asked for again in time.
    ApprovalExpired,
}

impl NotifyKind {
    /// Every kind.
    pub const ALL: [NotifyKind; 13] = [
        NotifyKind::BreakerOpened,
        NotifyKind::BreakerHalfOpened,
        NotifyKind::BreakerClosed,
        NotifyKind::Paused,
        NotifyKind::Resumed,
        NotifyKind::HostQuarantined,
        NotifyKind::HostLost,
        NotifyKind::ConfigReloadFailed,
        NotifyKind::OverrideSet,
        NotifyKind::OverrideEnded,
        NotifyKind::ApprovalRequested,
        NotifyKind::ApprovalDecided,
        NotifyKind::ApprovalExpired,
    ];

    /// The name in config files and in the JSON body's `kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            NotifyKind::BreakerOpened => "breaker_opened",
            NotifyKind::BreakerHalfOpened => "breaker_half_opened",
            NotifyKind::BreakerClosed => "breaker_closed",
            NotifyKind::Paused => "paused",
            NotifyKind::Resumed => "resumed",
            NotifyKind::HostQuarantined => "host_quarantined",
            NotifyKind::HostLost => "host_lost",
            NotifyKind::ConfigReloadFailed => "config_reload_failed",
            NotifyKind::OverrideSet => "override_set",
            NotifyKind::OverrideEnded => "override_ended",
            NotifyKind::ApprovalRequested => "approval_requested",
            NotifyKind::ApprovalDecided => "approval_decided",
            NotifyKind::ApprovalExpired => "approval_expired",
        }
    }
}

/// How a webhook's body is shaped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WebhookFormat {
    /// medic's JSON document (see `config/coordinator.toml`).
    Json,
    /// `{"text": "..."}`, which Slack and compatible chat tools accept.
    Slack,
}

/// One webhook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Webhook {
    /// `http://` or `https://` URL.
    pub url: String,
    /// Body format.
    pub format: WebhookFormat,
    /// Kinds sent to it; default all.
    pub events: Vec<NotifyKind>,
    /// Per attempt. Default 5s.
    pub timeout: Duration,
    /// Attempts before a notification is dropped. Default 5.
    pub max_attempts: u32,
    /// Headers sent with every request (an `Authorization` token, say),
    /// values written in the config or read from files.
    pub headers: Vec<(hyper::header::HeaderName, Secret)>,
    /// The key that signs every body (`X-Medic-Signature`), read from a
    /// file.
    pub hmac_key: Option<Secret>,
}

/// A value that may be secret: compared, never shown (`Debug` names where
/// it came from, not what it is).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    value: Vec<u8>,
    /// The file it was read from, if it was.
    from: Option<PathBuf>,
}

impl Secret {
    /// The value.
    pub fn expose(&self) -> &[u8] {
        &self.value
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.from {
            Some(p) => write!(f, "Secret(from {})", p.display()),
            None => write!(f, "Secret({} bytes)", self.value.len()),
        }
    }
}

/// The shortest HMAC key: 32 bytes, as long as the SHA-256 output.
pub const MIN_HMAC_KEY: usize = 32;

/// Reads a secret from `file` (mode 0600 or stricter, or root-owned and
/// 0640), trimmed of surrounding ASCII whitespace.
fn secret_from(errs: &mut Errors, path: &str, file: &str) -> Option<Secret> {
    let p = PathBuf::from(file);
    match medic_proto::secret_file::read(&p) {
        Err(e) => {
            errs.push(path, e);
            None
        }
        // The bytes as written, less surrounding whitespace: a key that is
        // not UTF-8 must sign with its own bytes, not replacement ones.
        Ok(bytes) => Some(Secret {
            value: bytes.trim_ascii().to_vec(),
            from: Some(p),
        }),
    }
}

/// The longest `notify.webhooks[].timeout`: 5 minutes.
pub const MAX_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(300);

/// The most `notify.webhooks[].max_attempts`: 100 (backoff is at most a
/// minute, so the last attempt is still within about 100 minutes).
pub const MAX_WEBHOOK_ATTEMPTS: u32 = 100;

impl RawNotify {
    pub(super) fn validate(&self, errs: &mut Errors) -> NotifyConfig {
        let queue = errs.count_in("notify.queue", self.queue, 1000, 1, MAX_COUNT) as usize;
        let webhooks = self
            .webhooks
            .iter()
            .enumerate()
            .filter_map(|(i, w)| w.validate(errs, &format!("notify.webhooks[{i}]")))
            .collect();
        NotifyConfig { queue, webhooks }
    }
}

impl RawWebhook {
    fn validate(&self, errs: &mut Errors, path: &str) -> Option<Webhook> {
        let url = match self.url.as_deref() {
            None | Some("") => {
                errs.push(format!("{path}.url"), "is required (http:// or https://)");
                None
            }
            Some(u) => match u.parse::<hyper::Uri>() {
                Ok(uri)
                    if matches!(uri.scheme_str(), Some("http" | "https"))
                        && uri.host().is_some() =>
                {
                    Some(u.to_owned())
                }
                _ => {
                    errs.push(
                        format!("{path}.url"),
                        format!("{u:?} is not an http:// or https:// URL"),
                    );
                    None
                }
            },
        };
        let format = match self.format.as_deref() {
            None | Some("json") => WebhookFormat::Json,
            Some("slack") => WebhookFormat::Slack,
            Some(f) => {
                errs.push(
                    format!("{path}.format"),
                    format!("must be \"json\" or \"slack\", got {f:?}"),
                );
                WebhookFormat::Json
            }
        };
        let events = match &self.events {
            None => NotifyKind::ALL.to_vec(),
            Some(names) => names
                .iter()
                .enumerate()
                .filter_map(|(j, n)| {
                    let k = NotifyKind::ALL.iter().find(|k| k.as_str() == n).copied();
                    if k.is_none() {
                        errs.push(
                            format!("{path}.events[{j}]"),
                            format!(
                                "unknown event {n:?}; use {}",
                                NotifyKind::ALL.map(NotifyKind::as_str).join(", ")
                            ),
                        );
                    }
                    k
                })
                .collect(),
        };
        let timeout = errs.duration_in(
            &format!("{path}.timeout"),
            self.timeout.as_deref(),
            Duration::from_secs(5),
            Duration::from_millis(1)..=MAX_WEBHOOK_TIMEOUT,
            "",
        );
        let max_attempts = errs.count_in(
            &format!("{path}.max_attempts"),
            self.max_attempts,
            5,
            1,
            MAX_WEBHOOK_ATTEMPTS,
        );
        let mut headers = Vec::new();
        for (name, raw) in &self.headers {
            let at = format!("{path}.headers.{name}");
            let Ok(header) = hyper::header::HeaderName::from_bytes(name.as_bytes()) else {
                errs.push(&at, format!("{name:?} is not a valid HTTP header name"));
                continue;
            };
            let reserved = [
                hyper::header::CONTENT_TYPE,
                hyper::header::CONTENT_LENGTH,
                hyper::header::HOST,
                hyper::header::USER_AGENT,
            ];
            if reserved.contains(&header) || name.to_ascii_lowercase().starts_with("x-medic-") {
                errs.push(
                    &at,
                    format!("{name} is set by medic itself (Content-Type, Content-Length, Host, User-Agent, X-Medic-*)"),
                );
                continue;
            }
            let value = match raw {
                RawHeaderValue::Value(v) => Some(Secret {
                    value: v.as_bytes().to_vec(),
                    from: None,
                }),
                RawHeaderValue::File { file } => secret_from(errs, &at, file),
            };
            let Some(value) = value else { continue };
            if value.value.is_empty()
                || hyper::header::HeaderValue::from_bytes(&value.value).is_err()
            {
                errs.push(
                    &at,
                    "must be a non-empty header value: visible ASCII and spaces, no line breaks",
                );
                continue;
            }
            headers.push((header, value));
        }
        let hmac_key = self.hmac_secret_file.as_deref().and_then(|f| {
            let at = format!("{path}.hmac_secret_file");
            let key = secret_from(errs, &at, f)?;
            if key.value.len() < MIN_HMAC_KEY {
                errs.push(
                    &at,
                    format!(
                        "{f}: an HMAC key must be at least {MIN_HMAC_KEY} bytes (for example \
                         `openssl rand -hex 32`)"
                    ),
                );
                return None;
            }
            Some(key)
        });
        Some(Webhook {
            url: url?,
            format,
            events,
            timeout,
            max_attempts,
            headers,
            hmac_key,
        })
    }
}
