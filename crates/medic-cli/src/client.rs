//! The connection to the coordinator: URL and TLS, the caller's name as
//! `medic-actor` metadata, a deadline per call, and gRPC errors turned
//! into [`Error`]s with the right exit code.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use medic_proto::pb::v1::admin_client::AdminClient;
use tonic::Status;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::cli::GlobalArgs;
use crate::error::{Error, chain, code_name};
use crate::format;

/// The admin client medicctl uses: every request carries the actor.
pub type Admin = AdminClient<InterceptedService<Channel, ActorHeader>>;

use medic_proto::metadata::{self, MAX_ACTOR_LEN};

/// How often a call refused by the coordinator's admission control
/// (RESOURCE_EXHAUSTED) is tried again before giving up.
const ADMISSION_RETRIES: u32 = 5;

/// Adds `medic-actor: NAME` and, with `--token-file`, `authorization:
/// Bearer TOKEN` to every request.
#[derive(Clone)]
pub struct ActorHeader {
    actor: Option<AsciiMetadataValue>,
    bearer: Option<AsciiMetadataValue>,
}

impl std::fmt::Debug for ActorHeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActorHeader")
            .field("actor", &self.actor)
            .field("bearer", &self.bearer.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Interceptor for ActorHeader {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(a) = &self.actor {
            req.metadata_mut().insert(metadata::ACTOR, a.clone());
        }
        if let Some(b) = &self.bearer {
            req.metadata_mut()
                .insert(metadata::AUTHORIZATION, b.clone());
        }
        Ok(req)
    }
}

/// TLS material for an `https://` coordinator.
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    /// `--tls-ca`: the CA to verify the coordinator with.
    pub ca: Option<PathBuf>,
    /// `--tls-cert`: the client certificate, for mutual TLS.
    pub cert: Option<PathBuf>,
    /// `--tls-key`: the client key, for mutual TLS.
    pub key: Option<PathBuf>,
}

/// Where and how to connect, validated.
#[derive(Debug, Clone)]
pub struct Target {
    /// The URL, with a scheme (`http://` is added to a bare `host:port`).
    pub url: String,
    /// Per-call deadline.
    pub timeout: Duration,
    /// The name sent as `medic-actor`, if any.
    pub actor: Option<String>,
    /// TLS files (used only for `https://`).
    pub tls: TlsFiles,
    /// `--token-file`: a bearer token for the Admin API.
    pub token_file: Option<PathBuf>,
    /// Every URL of `--coordinator URL,URL,...` (replicated coordinators):
    /// [`Target::connect`] talks to the one that leads. `url` is the first.
    pub candidates: Vec<String>,
}

impl Target {
    /// The target the global flags describe. `$USER` names the caller when
    /// `--as` does not.
    pub fn from_args(g: &GlobalArgs) -> Self {
        let candidates: Vec<String> = g
            .coordinator
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(|u| {
                if u.contains("://") {
                    u.to_owned()
                } else {
                    format!("http://{u}")
                }
            })
            .collect();
        let url = candidates
            .first()
            .cloned()
            .unwrap_or_else(|| g.coordinator.trim().to_owned());
        Target {
            url,
            candidates,
            timeout: g.timeout,
            actor: g
                .actor
                .clone()
                .or_else(|| std::env::var("USER").ok())
                .filter(|a| !a.is_empty()),
            tls: TlsFiles {
                ca: g.tls_ca.clone(),
                cert: g.tls_cert.clone(),
                key: g.tls_key.clone(),
            },
            token_file: g.token_file.clone(),
        }
    }

    fn is_tls(&self) -> bool {
        self.url.starts_with("https://")
    }

    /// The endpoint, with TLS when the URL is `https://`. Flags that
    /// contradict each other, and unreadable files, are usage errors.
    fn endpoint(&self) -> Result<Endpoint, Error> {
        let endpoint = Endpoint::from_shared(self.url.clone())
            .map_err(|e| {
                Error::Usage(format!(
                    "--coordinator {:?}: not a URL ({e}); expected http://HOST:PORT or \
                     https://HOST:PORT",
                    self.url
                ))
            })?
            .connect_timeout(self.timeout)
            .tcp_nodelay(true);
        if !self.url.starts_with("http://") && !self.is_tls() {
            return Err(Error::Usage(format!(
                "--coordinator {:?}: the scheme must be http:// or https://",
                self.url
            )));
        }
        let any_tls_flag =
            self.tls.ca.is_some() || self.tls.cert.is_some() || self.tls.key.is_some();
        if !self.is_tls() {
            if any_tls_flag {
                return Err(Error::Usage(format!(
                    "TLS files are given (--tls-ca, --tls-cert, --tls-key or MEDIC_TLS_*) but \
                     --coordinator {} is not https://; use an https:// URL, or unset them",
                    self.url
                )));
            }
            return Ok(endpoint);
        }
        let mut tls = ClientTlsConfig::new();
        tls = match &self.tls.ca {
            Some(ca) => {
                tls.ca_certificate(Certificate::from_pem(read("--tls-ca", ca, "CERTIFICATE")?))
            }
            None => tls.with_native_roots(),
        };
        match (&self.tls.cert, &self.tls.key) {
            (Some(cert), Some(key)) => {
                let key_pem = medic_proto::secret_file::read(key)
                    .map_err(|e| Error::Usage(format!("--tls-key: {e}")))?;
                if !String::from_utf8_lossy(&key_pem)
                    .lines()
                    .any(|l| l.starts_with("-----BEGIN ") && l.contains("PRIVATE KEY"))
                {
                    return Err(Error::Usage(format!(
                        "--tls-key {}: no PEM PRIVATE KEY in it (expected a -----BEGIN \
                         ...PRIVATE KEY----- block)",
                        key.display()
                    )));
                }
                tls = tls.identity(Identity::from_pem(
                    read("--tls-cert", cert, "CERTIFICATE")?,
                    key_pem,
                ));
            }
            (None, None) => {}
            (Some(_), None) => {
                return Err(Error::Usage(
                    "--tls-cert needs --tls-key (the client certificate's private key)".to_owned(),
                ));
            }
            (None, Some(_)) => {
                return Err(Error::Usage(
                    "--tls-key needs --tls-cert (the client certificate)".to_owned(),
                ));
            }
        }
        let system_roots = self.tls.ca.is_none();
        endpoint.tls_config(tls).map_err(|e| {
            Error::Usage(if system_roots {
                format!(
                    "no --tls-ca given, and the system's trust store is not usable ({}); pass \
                     --tls-ca FILE with the CA that signed the coordinator's certificate",
                    chain(&e)
                )
            } else {
                format!(
                    "TLS settings (--tls-ca, --tls-cert, --tls-key) are not usable: {}",
                    chain(&e)
                )
            })
        })
    }

    fn actor_header(&self) -> Result<ActorHeader, Error> {
        let actor = match &self.actor {
            None => None,
            Some(name) => {
                if name.len() > MAX_ACTOR_LEN {
                    return Err(Error::Usage(format!(
                        "--as: at most {MAX_ACTOR_LEN} bytes, got {}",
                        name.len()
                    )));
                }
                Some(MetadataValue::try_from(name.as_str()).map_err(|_| {
                    Error::Usage(format!(
                        "--as {name:?}: only printable ASCII can be sent as the caller's name"
                    ))
                })?)
            }
        };
        let bearer = match &self.token_file {
            None => None,
            Some(path) => {
                let bytes = medic_proto::secret_file::read(path)
                    .map_err(|e| Error::Usage(format!("--token-file: {e}")))?;
                let text = String::from_utf8(bytes).map_err(|_| {
                    Error::Usage(format!("--token-file {}: not UTF-8 text", path.display()))
                })?;
                let token = text.trim();
                if token.is_empty() {
                    return Err(Error::Usage(format!(
                        "--token-file {}: the file is empty",
                        path.display()
                    )));
                }
                let mut value =
                    MetadataValue::try_from(format!("Bearer {token}")).map_err(|_| {
                        Error::Usage(format!(
                            "--token-file {}: a token must be printable ASCII",
                            path.display()
                        ))
                    })?;
                value.set_sensitive(true);
                Some(value)
            }
        };
        if bearer.is_some() && !self.is_tls() && !is_loopback_url(&self.url) {
            return Err(Error::Usage(format!(
                "--token-file with {}: a bearer token is only sent over https:// (or to a \
                 loopback address), never in plaintext across a network",
                self.url
            )));
        }
        Ok(ActorHeader { actor, bearer })
    }

    /// Connects (within `timeout`) and returns a client for the Admin API.
    /// Given several URLs (replicas on etcd), it asks each for the status
    /// in turn and keeps the first that answers other than UNAVAILABLE:
    /// the leader, since followers answer every call UNAVAILABLE. When none
    /// does, the first URL's connection is returned, and the command's own
    /// call reports why (no leader elected, unreachable).
    pub async fn connect(&self) -> Result<Connection, Error> {
        if self.candidates.len() <= 1 {
            return self.connect_one().await;
        }
        for url in &self.candidates {
            let one = Target {
                url: url.clone(),
                candidates: vec![url.clone()],
                ..self.clone()
            };
            let Ok(mut conn) = one.connect_one().await else {
                continue;
            };
            let probe = tokio::time::timeout(
                self.timeout,
                conn.admin
                    .get_status(medic_proto::pb::v1::GetStatusRequest::default()),
            )
            .await;
            match probe {
                Ok(Err(s)) if s.code() == tonic::Code::Unavailable => {}
                Ok(_) => return Ok(conn),
                Err(_) => {}
            }
        }
        Target {
            candidates: vec![self.url.clone()],
            ..self.clone()
        }
        .connect_one()
        .await
    }

    async fn connect_one(&self) -> Result<Connection, Error> {
        let endpoint = self.endpoint()?;
        let header = self.actor_header()?;
        let channel = match tokio::time::timeout(self.timeout, endpoint.connect()).await {
            Err(_) => return Err(self.timed_out()),
            Ok(Err(e)) => {
                return Err(Error::Unreachable {
                    url: self.url.clone(),
                    detail: transport_detail(&e),
                });
            }
            Ok(Ok(c)) => c,
        };
        Ok(Connection {
            target: self.clone(),
            admin: AdminClient::with_interceptor(channel, header),
        })
    }

    fn timed_out(&self) -> Error {
        Error::Timeout {
            url: self.url.clone(),
            timeout: format::duration(self.timeout),
        }
    }
}

/// Whether an `http://` URL names a loopback address.
fn is_loopback_url(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let host = rest.split('/').next().unwrap_or("");
    let host = match host.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Reads a PEM file that must hold a block whose label contains `what`
/// (`CERTIFICATE`, `PRIVATE KEY`); errors name the flag and the file.
fn read(flag: &str, path: &Path, what: &str) -> Result<Vec<u8>, Error> {
    let pem = std::fs::read(path)
        .map_err(|e| Error::Usage(format!("{flag} {}: cannot read it: {e}", path.display())))?;
    let text = String::from_utf8_lossy(&pem);
    let found = text.lines().any(|l| {
        l.strip_prefix("-----BEGIN ")
            .is_some_and(|label| label.contains(what))
    });
    if !found {
        return Err(Error::Usage(format!(
            "{flag} {}: no PEM {what} in it (expected a -----BEGIN ...{what}----- block)",
            path.display()
        )));
    }
    Ok(pem)
}

/// A plaintext client whose connection dies at once is most likely talking
/// to a TLS port: say so.
fn with_plaintext_hint(url: &str, detail: String) -> String {
    let closed = [
        "broken pipe",
        "connection closed",
        "connection reset",
        "stream closed",
    ];
    if url.starts_with("http://") && closed.iter().any(|c| detail.contains(c)) {
        format!("{detail} (if the coordinator serves TLS, use https:// with --tls-ca)")
    } else {
        detail
    }
}

/// A transport error's causes, without tonic's generic "transport error".
fn transport_detail(e: &tonic::transport::Error) -> String {
    let full = chain(e);
    full.strip_prefix("transport error: ")
        .map(str::to_owned)
        .unwrap_or(full)
}

/// A connected Admin client.
#[derive(Debug, Clone)]
pub struct Connection {
    target: Target,
    admin: Admin,
}

impl Connection {
    /// The URL connected to.
    pub fn url(&self) -> &str {
        &self.target.url
    }

    /// The client, for streaming calls (which have no overall deadline).
    pub fn admin(&self) -> Admin {
        self.admin.clone()
    }

    /// The per-call deadline.
    pub fn timeout(&self) -> Duration {
        self.target.timeout
    }

    /// One unary call: within the deadline, tried again (after the hint
    /// the coordinator gives) when refused by admission control, and its
    /// error turned into an [`Error`].
    pub async fn unary<Req, Resp, F, Fut>(&self, req: Req, call: F) -> Result<Resp, Error>
    where
        Req: Clone,
        F: Fn(Admin, Req) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
    {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let fut = call(self.admin.clone(), req.clone());
            match tokio::time::timeout(self.target.timeout, fut).await {
                Err(_) => return Err(self.target.timed_out()),
                Ok(Ok(r)) => return Ok(r.into_inner()),
                Ok(Err(s))
                    if s.code() == tonic::Code::ResourceExhausted
                        && attempt <= ADMISSION_RETRIES =>
                {
                    tokio::time::sleep(retry_hint(&s)).await;
                }
                Ok(Err(s)) => return Err(self.status_error(&s)),
            }
        }
    }

    /// A gRPC status as an [`Error`]: the coordinator's own errors exit 1;
    /// a status the transport made up (the connection broke, the peer does
    /// not speak gRPC) exits 2.
    pub fn status_error(&self, s: &Status) -> Error {
        // Statuses decoded from the coordinator's reply have no source; those
        // tonic makes up when the transport fails carry the transport error.
        if let Some(source) = std::error::Error::source(s) {
            let detail = chain(source);
            let detail = detail
                .strip_prefix("transport error: ")
                .map_or_else(|| detail.clone(), str::to_owned);
            return Error::Unreachable {
                url: self.target.url.clone(),
                detail: with_plaintext_hint(&self.target.url, detail),
            };
        }
        Error::Rpc {
            code: code_name(s.code()),
            message: s.message().to_owned(),
        }
    }
}

/// How long the coordinator asked us to wait (`retry-after-ms`), bounded;
/// 200ms when it did not say.
fn retry_hint(s: &Status) -> Duration {
    let ms = s
        .metadata()
        .get(metadata::RETRY_AFTER_MS)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(200);
    Duration::from_millis(ms.clamp(10, 5_000))
}
