//! The client's errors: [`ConfigError`] for settings that cannot work
//! (found before any connection), [`CallError`] for a call that did not get
//! a usable answer.

use std::time::Duration;

use medic_policy::InvalidInput;
use tonic::{Code, Status};

use crate::tls::TlsError;

/// Settings that cannot work. Each names the endpoint or file at fault;
/// callers add the flag or config key it came from.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// No endpoint at all.
    #[error("no coordinator URL given")]
    NoEndpoints,
    /// An endpoint that does not parse as a URL.
    #[error("{url:?}: not a URL ({detail}); expected http://HOST:PORT or https://HOST:PORT")]
    NotAUrl {
        /// The endpoint as given.
        url: String,
        /// What the URL parser said.
        detail: String,
    },
    /// An endpoint whose scheme is neither `http://` nor `https://`.
    #[error("{url:?}: the scheme must be http:// or https://")]
    Scheme {
        /// The endpoint as given.
        url: String,
    },
    /// TLS material is given but this endpoint is plaintext: the caller
    /// meant TLS, and would silently not get it.
    #[error("{url:?} is plaintext (http://) but TLS files are given; use https://")]
    PlaintextWithTls {
        /// The `http://` endpoint.
        url: String,
    },
    /// An `https://` endpoint with no CA to verify it against (and no
    /// system trust store in this build).
    #[error("{url:?} is https:// but no CA is given to verify the coordinator's certificate")]
    NoCa {
        /// The `https://` endpoint.
        url: String,
    },
    /// A bearer token would cross a network in plaintext.
    #[error(
        "{url:?}: a bearer token is only sent over https:// (or to a loopback address), never \
         in plaintext across a network"
    )]
    BearerInPlaintext {
        /// The `http://` endpoint that is not loopback.
        url: String,
    },
    /// The TLS files could not be used.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// tonic refused the TLS settings for this endpoint (an unusable CA, a
    /// certificate and key that do not match, no usable system roots).
    #[error("{url:?}: TLS settings are not usable: {detail}")]
    TlsSettings {
        /// The endpoint.
        url: String,
        /// What tonic said, cause by cause.
        detail: String,
        /// Whether the system's trust store was in use (no CA given).
        system_roots: bool,
    },
}

/// One failed connection attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    /// The endpoint tried.
    pub url: String,
    /// Why it failed, cause by cause.
    pub detail: String,
}

/// Why a call did not get a usable answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No configured coordinator accepted a connection.
    #[error("{}", unreachable(.attempts))]
    Unreachable {
        /// Every endpoint tried, in order, and why each failed.
        attempts: Vec<Attempt>,
    },
    /// The connection broke during the call, or the peer does not speak
    /// gRPC (tonic made the status up; the coordinator did not send it).
    #[error("cannot reach the coordinator at {url}: {detail}")]
    Transport {
        /// The endpoint.
        url: String,
        /// What the transport said, cause by cause.
        detail: String,
    },
    /// No answer within the per-call deadline.
    #[error("no answer from the coordinator at {url} within {}", humantime::format_duration(*.timeout))]
    Timeout {
        /// The endpoint.
        url: String,
        /// The deadline.
        timeout: Duration,
    },
    /// The coordinator answered with an error status.
    #[error("{}: {}", code_name(.status.code()), .status.message())]
    Status {
        /// The endpoint that answered.
        url: String,
        /// Its status, with its metadata.
        status: Status,
    },
    /// The coordinator answered, but its reply does not convert to medic's
    /// types (a grant without a usable permit, an unknown enum value):
    /// what it said cannot be acted on.
    #[error("the coordinator at {url} sent a reply that cannot be used: {error}")]
    Malformed {
        /// The endpoint that answered.
        url: String,
        /// The conversion's error, naming the field (`response.decision.granted.permit.ttl: must be set`).
        error: InvalidInput,
    },
}

fn unreachable(attempts: &[Attempt]) -> String {
    match attempts {
        [] => "cannot reach the coordinator: no endpoint to try".to_owned(),
        [one] => format!(
            "cannot reach the coordinator at {}: {}",
            one.url, one.detail
        ),
        many => {
            let each: Vec<String> = many
                .iter()
                .map(|a| format!("{}: {}", a.url, a.detail))
                .collect();
            format!("cannot reach any coordinator ({})", each.join("; "))
        }
    }
}

impl CallError {
    /// Whether no coordinator could decide now (unreachable, timed out, a
    /// follower, a broken connection): worth trying again later, unlike an
    /// answer about the call itself.
    pub fn is_transient(&self) -> bool {
        match self {
            CallError::Unreachable { .. }
            | CallError::Transport { .. }
            | CallError::Timeout { .. } => true,
            CallError::Status { status, .. } => matches!(
                status.code(),
                Code::Unavailable | Code::Unknown | Code::DeadlineExceeded | Code::Cancelled
            ),
            CallError::Malformed { .. } => false,
        }
    }

    /// The coordinator's status, if it answered with one.
    pub fn status(&self) -> Option<&Status> {
        match self {
            CallError::Status { status, .. } => Some(status),
            _ => None,
        }
    }

    /// How long the coordinator asked to wait before trying again
    /// (`retry-after-ms`), if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        self.status().and_then(crate::retry::retry_after)
    }

    /// Whether a plaintext (`http://`) connection died as soon as it was
    /// used: most likely the port serves TLS. Callers word the hint (a
    /// flag, a config key).
    pub fn looks_like_tls_port(&self) -> bool {
        let closed = [
            "broken pipe",
            "connection closed",
            "connection reset",
            "stream closed",
        ];
        match self {
            CallError::Transport { url, detail } => {
                url.starts_with("http://") && closed.iter().any(|c| detail.contains(c))
            }
            _ => false,
        }
    }

    /// A status tonic returned for `url` as a [`CallError`]: one the
    /// transport made up (it carries the transport error as its source)
    /// is [`CallError::Transport`]; one the coordinator sent is
    /// [`CallError::Status`].
    pub fn from_status(url: &str, status: Status) -> Self {
        // Statuses decoded from the coordinator's reply have no source;
        // those tonic makes up when the transport fails carry its error.
        if let Some(source) = std::error::Error::source(&status) {
            let detail = chain(source);
            let detail = detail
                .strip_prefix("transport error: ")
                .map_or_else(|| detail.clone(), str::to_owned);
            return CallError::Transport {
                url: url.to_owned(),
                detail,
            };
        }
        CallError::Status {
            url: url.to_owned(),
            status,
        }
    }
}

/// The canonical name of a gRPC status code, as grpcurl and the gRPC
/// documentation spell it (`NOT_FOUND`).
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// An error and its causes, joined with `: `, skipping a cause whose text
/// the previous one already contains (hyper and tonic repeat themselves),
/// so that a TLS problem deep in the chain is visible.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(c) = cur {
        let s = c.to_string();
        if !parts.last().is_some_and(|p| p.contains(&s)) {
            parts.push(s);
        }
        cur = c.source();
    }
    parts.join(": ")
}
