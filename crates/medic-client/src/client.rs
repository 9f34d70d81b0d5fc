//! [`Client`]: calls to the configured coordinators, each bounded by a
//! deadline, following the leader (see the crate's documentation), retrying
//! admission refusals on their hint, and converting requests and replies
//! through [`medic_proto`].

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use medic_policy::{Decision, Heartbeat, HeartbeatReply, InvalidInput, Permit, PermitRequest};
use medic_proto::metadata;
use medic_proto::pb::v1 as pb;
use medic_proto::request::{OutcomeReport, Renewal};
use pb::admin_client::AdminClient;
use pb::remediation_client::RemediationClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::endpoint::{Endpoints, is_loopback_url, is_tls};
use crate::error::{Attempt, CallError, ConfigError, chain};
use crate::headers::Headers;
use crate::memory::MemoryConnector;
use crate::retry;
use crate::tls::ClientTls;

/// An Admin API client whose requests carry the [`Headers`].
pub type Admin = AdminClient<InterceptedService<Channel, Headers>>;

/// A Remediation API client whose requests carry the [`Headers`].
pub type Remediation = RemediationClient<InterceptedService<Channel, Headers>>;

/// What a [`Client`] is built from.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The coordinators, tried in order.
    pub endpoints: Endpoints,
    /// The deadline of each call (and of each connection attempt).
    pub timeout: Duration,
    /// TLS for the `https://` endpoints; `None`: the system's trust store
    /// (with the `native-roots` feature) or an error for `https://`.
    pub tls: Option<ClientTls>,
    /// Sent with every request.
    pub headers: Headers,
    /// How many times a call refused by admission control
    /// (RESOURCE_EXHAUSTED) is tried again, after the coordinator's
    /// `retry-after-ms` hint (bounded, see [`retry::bounded_wait`]). 0: the
    /// refusal is returned at once, for callers with their own backoff.
    pub admission_retries: u32,
    /// Connect in memory instead of over the network (the simulator's
    /// fleet in one process); the endpoints' URLs then only name the
    /// coordinator.
    pub memory: Option<MemoryConnector>,
}

impl Settings {
    /// `endpoints`, each call within `timeout`; plaintext or the system's
    /// trust store, no headers, no admission retries.
    pub fn new(endpoints: Endpoints, timeout: Duration) -> Self {
        Self {
            endpoints,
            timeout,
            tls: None,
            headers: Headers::none(),
            admission_retries: 0,
            memory: None,
        }
    }

    /// Connecting through `connector` (in memory) instead of the network.
    #[must_use]
    pub fn memory(mut self, connector: MemoryConnector) -> Self {
        self.memory = Some(connector);
        self
    }

    /// With TLS material for the `https://` endpoints.
    #[must_use]
    pub fn tls(mut self, tls: Option<ClientTls>) -> Self {
        self.tls = tls;
        self
    }

    /// With headers for every request.
    #[must_use]
    pub fn headers(mut self, headers: Headers) -> Self {
        self.headers = headers;
        self
    }

    /// With admission retries.
    #[must_use]
    pub fn admission_retries(mut self, n: u32) -> Self {
        self.admission_retries = n;
        self
    }
}

/// Connections to the coordinators. Cheap to clone; clones share the
/// connection and which endpoint is in use.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    urls: Endpoints,
    endpoints: Vec<Endpoint>,
    timeout: Duration,
    headers: Headers,
    admission_retries: u32,
    memory: Option<MemoryConnector>,
    state: Mutex<State>,
}

/// The endpoint in use, and its connection once made.
struct State {
    current: usize,
    channel: Option<(usize, Channel)>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoints", &self.inner.urls)
            .field("current", &self.current())
            .field("timeout", &self.inner.timeout)
            .field("headers", &self.inner.headers)
            .finish_non_exhaustive()
    }
}

// === impl Client ===

impl Client {
    /// Checks `settings` and prepares every endpoint (TLS included); no
    /// connection is made until the first call.
    ///
    /// Refused: TLS material with an `http://` endpoint (the caller meant
    /// TLS); an `https://` endpoint with nothing to verify it against; a
    /// bearer token to an `http://` endpoint that is not loopback.
    pub fn new(settings: Settings) -> Result<Self, ConfigError> {
        let Settings {
            endpoints: urls,
            timeout,
            tls,
            headers,
            admission_retries,
            memory,
        } = settings;
        // The plaintext rules first: they say what the caller meant.
        for url in urls.as_slice().iter().filter(|u| !is_tls(u)) {
            if tls.is_some() {
                return Err(ConfigError::PlaintextWithTls { url: url.clone() });
            }
            if headers.has_bearer() && !is_loopback_url(url) {
                return Err(ConfigError::BearerInPlaintext { url: url.clone() });
            }
        }
        let mut endpoints = Vec::with_capacity(urls.len());
        for url in urls.as_slice() {
            let mut ep = Endpoint::from_shared(url.clone())
                .map_err(|e| ConfigError::NotAUrl {
                    url: url.clone(),
                    detail: chain(&e),
                })?
                .connect_timeout(timeout)
                .tcp_nodelay(true);
            if is_tls(url) {
                let material = tls.clone().unwrap_or(ClientTls::from_pem(None, None));
                let config = material
                    .config()
                    .ok_or_else(|| ConfigError::NoCa { url: url.clone() })?;
                ep = ep
                    .tls_config(config)
                    .map_err(|e| ConfigError::TlsSettings {
                        url: url.clone(),
                        detail: chain(&e),
                        system_roots: !material.has_ca(),
                    })?;
            }
            endpoints.push(ep);
        }
        Ok(Self {
            inner: Arc::new(Inner {
                urls,
                endpoints,
                timeout,
                headers,
                admission_retries,
                memory,
                state: Mutex::new(State {
                    current: 0,
                    channel: None,
                }),
            }),
        })
    }

    /// The endpoint calls go to now.
    pub fn current(&self) -> String {
        let i = self.state().current;
        self.inner.urls.as_slice()[i].clone()
    }

    /// The configured endpoints.
    pub fn endpoints(&self) -> &Endpoints {
        &self.inner.urls
    }

    /// The deadline of each call.
    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is two plain fields, consistent after any panic.
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// A connection to the endpoint in use, made if needed: the endpoints
    /// are tried in order from it, and the first that accepts is kept.
    async fn connected(&self) -> Result<(usize, Channel), CallError> {
        let start = {
            let st = self.state();
            if let Some((i, ch)) = &st.channel {
                return Ok((*i, ch.clone()));
            }
            st.current
        };
        let urls = self.inner.urls.as_slice();
        let mut attempts = Vec::new();
        for k in 0..urls.len() {
            let i = (start + k) % urls.len();
            let endpoint = &self.inner.endpoints[i];
            let connect = async {
                match &self.inner.memory {
                    Some(m) => endpoint.connect_with_connector(m.clone()).await,
                    None => endpoint.connect().await,
                }
            };
            let detail = match tokio::time::timeout(self.inner.timeout, connect).await {
                Ok(Ok(ch)) => {
                    let mut st = self.state();
                    st.current = i;
                    st.channel = Some((i, ch.clone()));
                    return Ok((i, ch));
                }
                Ok(Err(e)) => transport_detail(&e),
                Err(_) => format!(
                    "no connection within {}",
                    humantime::format_duration(self.inner.timeout)
                ),
            };
            attempts.push(Attempt {
                url: urls[i].clone(),
                detail,
            });
        }
        Err(CallError::Unreachable { attempts })
    }

    /// A connected channel to the endpoint in use, for what this client
    /// does not wrap (a health check, a load generator's raw calls).
    pub async fn channel(&self) -> Result<Channel, CallError> {
        self.connected().await.map(|(_, ch)| ch)
    }

    /// A connected Admin client, for streaming calls (which have no overall
    /// deadline), and the endpoint it talks to. Turn its errors into
    /// [`CallError`]s with [`CallError::from_status`].
    pub async fn admin(&self) -> Result<(String, Admin), CallError> {
        let (i, ch) = self.connected().await?;
        Ok((
            self.inner.urls.as_slice()[i].clone(),
            AdminClient::with_interceptor(ch, self.inner.headers.clone()),
        ))
    }

    /// One unary call made by `f` on a connection: within the deadline,
    /// retried after admission refusals (as configured), following the
    /// leader. Returns the endpoint that answered with the reply.
    async fn call<Resp, F, Fut>(&self, f: F) -> Result<(String, Resp), CallError>
    where
        F: Fn(Channel) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
    {
        let mut followed = false;
        loop {
            let (i, ch) = self.connected().await?;
            let url = self.inner.urls.as_slice()[i].clone();
            let mut refused = 0;
            let status = loop {
                match tokio::time::timeout(self.inner.timeout, f(ch.clone())).await {
                    Err(_) => {
                        self.forget(i);
                        return Err(CallError::Timeout {
                            url,
                            timeout: self.inner.timeout,
                        });
                    }
                    Ok(Ok(r)) => return Ok((url, r.into_inner())),
                    Ok(Err(s))
                        if s.code() == Code::ResourceExhausted
                            && refused < self.inner.admission_retries =>
                    {
                        refused += 1;
                        tokio::time::sleep(retry::bounded_wait(&s)).await;
                    }
                    Ok(Err(s)) => break s,
                }
            };
            let leader = if status.code() == Code::Unavailable {
                self.leader_index(&status).filter(|&l| l != i)
            } else {
                None
            };
            let error = CallError::from_status(&url, status);
            match leader {
                Some(l) => {
                    self.switch_to(l);
                    if !followed {
                        followed = true;
                        continue;
                    }
                    // Leadership moved again: go there next time.
                    return Err(error);
                }
                None => {
                    if error.is_transient() {
                        self.forget(i);
                    }
                    return Err(error);
                }
            }
        }
    }

    /// The configured endpoint a follower's answer names as the leader.
    fn leader_index(&self, s: &Status) -> Option<usize> {
        let leader = s.metadata().get(metadata::LEADER)?.to_str().ok()?;
        let found = self.inner.urls.position(leader);
        if found.is_none() {
            tracing::warn!(
                leader,
                "a coordinator names a leader that is not among the configured coordinators; \
                 not following it"
            );
        }
        found
    }

    fn switch_to(&self, i: usize) {
        tracing::info!(coordinator = %self.inner.urls.as_slice()[i], "following the coordinators' leader");
        let mut st = self.state();
        st.current = i;
        st.channel = None;
    }

    /// Drops the connection to endpoint `i` after a transient failure: the
    /// next call starts at the next endpoint.
    fn forget(&self, i: usize) {
        let mut st = self.state();
        if st.current == i {
            st.channel = None;
            st.current = (i + 1) % self.inner.urls.len();
        }
    }

    fn remediation(&self, ch: Channel) -> Remediation {
        RemediationClient::with_interceptor(ch, self.inner.headers.clone())
    }

    // === Remediation (the agent's API) ===

    /// Sends a heartbeat; the reply as medic's type.
    pub async fn heartbeat(&self, heartbeat: Heartbeat) -> Result<HeartbeatReply, CallError> {
        let req = pb::HeartbeatRequest::from(heartbeat);
        let (url, reply) = self
            .call(|ch| {
                let (mut c, req) = (self.remediation(ch), req.clone());
                async move { c.heartbeat(req).await }
            })
            .await?;
        HeartbeatReply::try_from(reply).map_err(|error| CallError::Malformed { url, error })
    }

    /// Asks for a permit; the decision as medic's type. A grant whose
    /// permit does not convert is [`CallError::Malformed`].
    pub async fn request_permit(&self, request: PermitRequest) -> Result<Decision, CallError> {
        let req = pb::RequestPermitRequest::from(request);
        let (url, reply) = self
            .call(|ch| {
                let (mut c, req) = (self.remediation(ch), req.clone());
                async move { c.request_permit(req).await }
            })
            .await?;
        Decision::try_from(reply).map_err(|error| CallError::Malformed { url, error })
    }

    /// Renews a held permit; the permit with its new expiry.
    pub async fn renew_permit(&self, renewal: Renewal) -> Result<Permit, CallError> {
        let req = pb::RenewPermitRequest::from(renewal);
        let (url, reply) = self
            .call(|ch| {
                let (mut c, req) = (self.remediation(ch), req.clone());
                async move { c.renew_permit(req).await }
            })
            .await?;
        reply_permit(reply.permit).map_err(|error| CallError::Malformed { url, error })
    }

    /// Reports a permit's outcome; the permit in its final state.
    pub async fn report_outcome(&self, report: OutcomeReport) -> Result<Permit, CallError> {
        let req = pb::ReportOutcomeRequest::from(report);
        let (url, reply) = self
            .call(|ch| {
                let (mut c, req) = (self.remediation(ch), req.clone());
                async move { c.report_outcome(req).await }
            })
            .await?;
        reply_permit(reply.permit).map_err(|error| CallError::Malformed { url, error })
    }

    // === Admin (operators' API) ===

    /// One unary Admin call made by `f`: deadline, admission retries and
    /// leader following as every call. Its reply is the wire message:
    /// operators' tools show what the coordinator sent.
    pub async fn admin_call<Req, Resp, F, Fut>(&self, req: Req, f: F) -> Result<Resp, CallError>
    where
        Req: Clone,
        F: Fn(Admin, Req) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
    {
        self.call(|ch| {
            f(
                AdminClient::with_interceptor(ch, self.inner.headers.clone()),
                req.clone(),
            )
        })
        .await
        .map(|(_, r)| r)
    }
}

/// The `permit` of a renewal's or outcome's reply, which is always set.
fn reply_permit(permit: Option<pb::Permit>) -> Result<Permit, InvalidInput> {
    let permit = permit.ok_or_else(|| InvalidInput::new("response.permit", "must be set"))?;
    Permit::try_from(permit).map_err(|e| e.within("permit").within("response"))
}

/// A transport error's causes, without tonic's generic "transport error".
fn transport_detail(e: &tonic::transport::Error) -> String {
    let full = chain(e);
    full.strip_prefix("transport error: ")
        .map(str::to_owned)
        .unwrap_or(full)
}

#[cfg(test)]
mod tests;
