//! The permit client: calls to the coordinator, trying the configured
//! endpoints in order, each call bounded by a deadline; and the backoff the
//! agent keeps between attempts.

use std::time::Duration;

use medic_proto::pb::v1 as pb;
use pb::remediation_client::RemediationClient;
use rand::Rng;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Status};

/// Why a call did not get an answer from a coordinator.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No endpoint could be reached, or it could not decide now.
    #[error("no coordinator answered ({0})")]
    Unavailable(String),
    /// A coordinator answered with an error about this call.
    #[error("{}: {}", .0.code(), .0.message())]
    Refused(Status),
}

/// Connections to the coordinators.
#[derive(Debug)]
pub struct Coordinators {
    endpoints: Vec<String>,
    current: usize,
    client: Option<RemediationClient<Channel>>,
    timeout: Duration,
    tls: Option<ClientTlsConfig>,
}

impl Coordinators {
    /// Clients for `endpoints` (tried in order), each call at most
    /// `timeout`, over mutual TLS when `tls` is set.
    pub fn new(endpoints: Vec<String>, timeout: Duration, tls: Option<ClientTlsConfig>) -> Self {
        Self {
            endpoints,
            current: 0,
            client: None,
            timeout,
            tls,
        }
    }

    async fn client(&mut self) -> Result<RemediationClient<Channel>, CallError> {
        if let Some(c) = &self.client {
            return Ok(c.clone());
        }
        let mut last = String::new();
        for _ in 0..self.endpoints.len() {
            let url = &self.endpoints[self.current];
            let mut endpoint = Endpoint::from_shared(url.clone())
                .map_err(|e| CallError::Unavailable(format!("{url}: {e}")))?
                .connect_timeout(self.timeout)
                .timeout(self.timeout)
                .tcp_nodelay(true);
            if let Some(tls) = &self.tls {
                endpoint = endpoint
                    .tls_config(tls.clone())
                    .map_err(|e| CallError::Unavailable(format!("{url}: TLS settings: {e}")))?;
            }
            match endpoint.connect().await {
                Ok(ch) => {
                    let c = RemediationClient::new(ch);
                    self.client = Some(c.clone());
                    return Ok(c);
                }
                Err(e) => {
                    last = format!("{url}: {}", error_chain(&e));
                    self.current = (self.current + 1) % self.endpoints.len();
                }
            }
        }
        Err(CallError::Unavailable(last))
    }

    /// Runs one call; on a transport failure or UNAVAILABLE, forgets the
    /// connection so the next call tries the endpoints again.
    pub async fn call<T, F, Fut>(&mut self, f: F) -> Result<T, CallError>
    where
        F: FnOnce(RemediationClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let client = self.client().await?;
        match tokio::time::timeout(self.timeout, f(client)).await {
            Err(_) => {
                self.drop_connection();
                Err(CallError::Unavailable(format!(
                    "no answer within {}",
                    humantime::format_duration(self.timeout)
                )))
            }
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(s))
                if matches!(
                    s.code(),
                    Code::Unavailable | Code::Unknown | Code::DeadlineExceeded | Code::Cancelled
                ) =>
            {
                self.drop_connection();
                Err(CallError::Unavailable(format!(
                    "{}: {}",
                    s.code(),
                    s.message()
                )))
            }
            Ok(Err(s)) => Err(CallError::Refused(s)),
        }
    }

    fn drop_connection(&mut self) {
        self.client = None;
        self.current = (self.current + 1) % self.endpoints.len().max(1);
    }
}

/// An error with its causes ("transport error: ... : invalid peer
/// certificate: UnknownIssuer"), so a TLS problem is visible in the log.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Exponential backoff with full jitter between failed calls.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    min: Duration,
    max: Duration,
}

impl Backoff {
    /// Starts at `min`, doubles up to `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            next: min,
            min,
            max,
        }
    }

    /// The wait before the next attempt (random in [next/2, next]), and
    /// doubles the next one.
    pub fn fail(&mut self) -> Duration {
        let d = jitter(self.next, 0.5);
        self.next = (self.next * 2).min(self.max);
        d
    }

    /// A call got through: start again from the minimum.
    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

/// `d` scaled by a random factor in `[1 - spread, 1]`, so a fleet told the
/// same `retry_after` does not come back at the same instant.
pub fn jitter(d: Duration, spread: f64) -> Duration {
    let f = 1.0 - rand::rng().random_range(0.0..=spread);
    d.mul_f64(f)
}

/// The wait after a denial: its `retry_after` plus up to 20% jitter; when a
/// human must act (no `retry_after`), `idle`.
pub fn after_denial(retry_after: Option<Duration>, idle: Duration) -> Duration {
    match retry_after {
        Some(d) => d.max(Duration::from_secs(1)) + jitter(d / 5, 1.0),
        None => idle,
    }
}
