//! The permit client: calls to the coordinator, trying the configured
//! endpoints in order, each call bounded by a deadline; and the backoff the
//! agent keeps between attempts.

use std::time::Duration;

use medic_proto::metadata;
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

/// How one attempt failed: redirected to the configured endpoint at this
/// index, or not.
enum Redirect {
    To(usize, CallError),
    No(CallError),
}

impl Redirect {
    fn into_error(self) -> CallError {
        match self {
            Redirect::To(_, e) | Redirect::No(e) => e,
        }
    }
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

    /// Runs one call with `req`; on a transport failure or UNAVAILABLE,
    /// forgets the connection so the next call tries the endpoints again.
    ///
    /// A coordinator replica that follows answers UNAVAILABLE naming the
    /// leader (`medic-leader` metadata): when that is one of the configured
    /// endpoints, the call is retried once there at once; a leader that is
    /// not configured is never followed (a follower cannot send an agent
    /// anywhere its operators did not list).
    pub async fn call<R, T, F, Fut>(&mut self, req: R, f: F) -> Result<T, CallError>
    where
        R: Clone,
        F: Fn(RemediationClient<Channel>, R) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, Status>>,
    {
        match self.call_once(req.clone(), &f).await {
            Err(Redirect::To(i, _)) => {
                self.switch_to(i);
                match self.call_once(req, &f).await {
                    Err(Redirect::To(i, e)) => {
                        // Leadership moved again: go there next time.
                        self.switch_to(i);
                        Err(e)
                    }
                    r => r.map_err(Redirect::into_error),
                }
            }
            r => r.map_err(Redirect::into_error),
        }
    }

    fn switch_to(&mut self, i: usize) {
        tracing::info!(coordinator = %self.endpoints[i], "following the coordinators' leader");
        self.current = i;
        self.client = None;
    }

    async fn call_once<R, T, F, Fut>(&mut self, req: R, f: &F) -> Result<T, Redirect>
    where
        F: Fn(RemediationClient<Channel>, R) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let client = self.client().await.map_err(Redirect::No)?;
        match tokio::time::timeout(self.timeout, f(client, req)).await {
            Err(_) => {
                self.drop_connection();
                Err(Redirect::No(CallError::Unavailable(format!(
                    "no answer within {}",
                    humantime::format_duration(self.timeout)
                ))))
            }
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(s))
                if matches!(
                    s.code(),
                    Code::Unavailable | Code::Unknown | Code::DeadlineExceeded | Code::Cancelled
                ) =>
            {
                let error = CallError::Unavailable(format!("{}: {}", s.code(), s.message()));
                if s.code() == Code::Unavailable
                    && let Some(i) = self.leader_index(&s)
                    && i != self.current
                {
                    return Err(Redirect::To(i, error));
                }
                self.drop_connection();
                Err(Redirect::No(error))
            }
            Ok(Err(s)) => Err(Redirect::No(CallError::Refused(s))),
        }
    }

    /// The configured endpoint a follower's answer names as the leader.
    fn leader_index(&self, s: &Status) -> Option<usize> {
        let leader = s.metadata().get(metadata::LEADER)?.to_str().ok()?;
        let leader = leader.trim_end_matches('/');
        let found = self
            .endpoints
            .iter()
            .position(|e| e.trim_end_matches('/') == leader);
        if found.is_none() {
            tracing::warn!(
                leader,
                "a coordinator names a leader that is not among the configured coordinators; \
                 not following it"
            );
        }
        found
    }

    /// The endpoint calls go to now.
    pub fn current(&self) -> &str {
        self.endpoints.get(self.current).map_or("", String::as_str)
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio_stream::wrappers::TcpListenerStream;
    use tonic::{Request, Response};

    use super::*;

    /// A coordinator that answers every call as a follower naming
    /// `leader` (`None`: as the leader, with an empty reply), counting
    /// the calls it gets.
    #[derive(Clone)]
    struct Fake {
        leader: Option<String>,
        calls: Arc<AtomicUsize>,
    }

    impl Fake {
        fn answer<T: Default>(&self) -> Result<Response<T>, Status> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            match &self.leader {
                None => Ok(Response::new(T::default())),
                Some(url) => {
                    let mut s = Status::unavailable(format!("follower; the leader is {url}"));
                    s.metadata_mut()
                        .insert(metadata::LEADER, url.parse().unwrap());
                    Err(s)
                }
            }
        }
    }

    #[tonic::async_trait]
    impl pb::remediation_server::Remediation for Fake {
        async fn heartbeat(
            &self,
            _: Request<pb::HeartbeatRequest>,
        ) -> Result<Response<pb::HeartbeatResponse>, Status> {
            self.answer()
        }
        async fn request_permit(
            &self,
            _: Request<pb::RequestPermitRequest>,
        ) -> Result<Response<pb::RequestPermitResponse>, Status> {
            self.answer()
        }
        async fn renew_permit(
            &self,
            _: Request<pb::RenewPermitRequest>,
        ) -> Result<Response<pb::RenewPermitResponse>, Status> {
            self.answer()
        }
        async fn report_outcome(
            &self,
            _: Request<pb::ReportOutcomeRequest>,
        ) -> Result<Response<pb::ReportOutcomeResponse>, Status> {
            self.answer()
        }
    }

    /// Serves `fake` on a loopback port; returns its URL.
    async fn serve(fake: Fake) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(pb::remediation_server::RemediationServer::new(fake))
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        url
    }

    fn fake(leader: Option<String>) -> (Fake, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        (
            Fake {
                leader,
                calls: calls.clone(),
            },
            calls,
        )
    }

    async fn heartbeat(c: &mut Coordinators) -> Result<pb::HeartbeatResponse, CallError> {
        c.call(pb::HeartbeatRequest::default(), |mut c, req| async move {
            c.heartbeat(req).await
        })
        .await
    }

    #[tokio::test]
    async fn a_follower_redirect_to_a_configured_coordinator_is_followed_at_once() {
        let (leader, leader_calls) = fake(None);
        let leader_url = serve(leader).await;
        let (follower, follower_calls) = fake(Some(leader_url.clone()));
        let follower_url = serve(follower).await;
        // The follower first, as after an election moved the leadership.
        let mut c = Coordinators::new(
            vec![follower_url, leader_url.clone()],
            Duration::from_secs(5),
            None,
        );
        heartbeat(&mut c).await.unwrap();
        assert_eq!(c.current(), leader_url);
        assert_eq!(follower_calls.load(Ordering::SeqCst), 1);
        assert_eq!(leader_calls.load(Ordering::SeqCst), 1);
        // Later calls go straight to the leader.
        heartbeat(&mut c).await.unwrap();
        assert_eq!(follower_calls.load(Ordering::SeqCst), 1);
        assert_eq!(leader_calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_redirect_to_an_unconfigured_address_is_never_followed() {
        let (elsewhere, elsewhere_calls) = fake(None);
        let elsewhere_url = serve(elsewhere).await;
        let (follower, follower_calls) = fake(Some(elsewhere_url));
        let follower_url = serve(follower).await;
        let mut c = Coordinators::new(vec![follower_url], Duration::from_secs(5), None);
        match heartbeat(&mut c).await {
            Err(CallError::Unavailable(e)) => assert!(e.contains("follower"), "{e}"),
            other => panic!("expected Unavailable, got {other:?}"),
        }
        assert_eq!(follower_calls.load(Ordering::SeqCst), 1);
        assert_eq!(elsewhere_calls.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_redirect_is_retried_once_only() {
        // Two followers naming each other: one retry, then the error.
        let (a, a_calls) = fake(None);
        let (b, b_calls) = fake(None);
        let (a_url, b_url) = {
            let la = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let lb = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let (ua, ub) = (
                format!("http://{}", la.local_addr().unwrap()),
                format!("http://{}", lb.local_addr().unwrap()),
            );
            for (l, f) in [
                (
                    la,
                    Fake {
                        leader: Some(ub.clone()),
                        ..a
                    },
                ),
                (
                    lb,
                    Fake {
                        leader: Some(ua.clone()),
                        ..b
                    },
                ),
            ] {
                tokio::spawn(
                    tonic::transport::Server::builder()
                        .add_service(pb::remediation_server::RemediationServer::new(f))
                        .serve_with_incoming(TcpListenerStream::new(l)),
                );
            }
            (ua, ub)
        };
        let mut c = Coordinators::new(vec![a_url.clone(), b_url], Duration::from_secs(5), None);
        assert!(matches!(
            heartbeat(&mut c).await,
            Err(CallError::Unavailable(_))
        ));
        assert_eq!(a_calls.load(Ordering::SeqCst), 1);
        assert_eq!(b_calls.load(Ordering::SeqCst), 1);
        assert_eq!(c.current(), a_url, "the last redirect is remembered");
    }
}
