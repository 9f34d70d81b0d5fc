//! The connection to the coordinator, on `medic_client`: the global flags
//! turned into its settings (URLs, TLS, the caller's name as `medic-actor`
//! metadata, a bearer token, a deadline per call), and its errors turned
//! into [`Error`]s with the right exit code and the flag to fix.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use medic_client::headers::HeaderError;
use medic_client::{
    CallError, Client, ConfigError, Endpoints, Headers, Settings, TlsError, TlsFile,
};
use tonic::Status;

pub use medic_client::TlsFiles;

use crate::cli::GlobalArgs;
use crate::error::Error;
use crate::format;

/// The admin client medicctl uses: every request carries the actor.
pub type Admin = medic_client::Admin;

/// How often a call refused by the coordinator's admission control
/// (RESOURCE_EXHAUSTED) is tried again, after its `retry-after-ms` hint,
/// before giving up.
const ADMISSION_RETRIES: u32 = 5;

/// Where and how to connect, as the flags say.
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
    /// calls go to the first that accepts a connection and follow the
    /// leader a follower names among them. `url` is the first.
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

    /// The client settings. Flags that contradict each other, and
    /// unreadable files, are usage errors naming the flag.
    fn settings(&self) -> Result<Settings, Error> {
        let urls = if self.candidates.is_empty() {
            vec![self.url.clone()]
        } else {
            self.candidates.clone()
        };
        let endpoints = Endpoints::new(urls).map_err(config_error)?;
        let https = endpoints
            .as_slice()
            .iter()
            .all(|u| medic_client::endpoint::is_tls(u));
        let tls = if https {
            Some(self.tls.load().map_err(tls_error)?)
        } else {
            if self.tls.any() {
                return Err(Error::Usage(format!(
                    "TLS files are given (--tls-ca, --tls-cert, --tls-key or MEDIC_TLS_*) but \
                     --coordinator {} is not https://; use an https:// URL, or unset them",
                    self.url
                )));
            }
            None
        };
        Ok(Settings::new(endpoints, self.timeout)
            .tls(tls)
            .headers(self.headers()?)
            .admission_retries(ADMISSION_RETRIES))
    }

    fn headers(&self) -> Result<Headers, Error> {
        let mut headers = Headers::none();
        if let Some(name) = &self.actor {
            headers = headers.with_actor(name).map_err(|e| {
                Error::Usage(match e {
                    HeaderError::ActorTooLong(_) => format!("--as: {e}"),
                    _ => format!("--as {e}"),
                })
            })?;
        }
        if let Some(path) = &self.token_file {
            let bytes = medic_proto::secret_file::read(path)
                .map_err(|e| Error::Usage(format!("--token-file: {e}")))?;
            let text = String::from_utf8(bytes).map_err(|_| {
                Error::Usage(format!("--token-file {}: not UTF-8 text", path.display()))
            })?;
            headers = headers.with_bearer(&text).map_err(|e| {
                Error::Usage(match e {
                    HeaderError::EmptyToken => {
                        format!("--token-file {}: the file is empty", path.display())
                    }
                    _ => format!("--token-file {}: {e}", path.display()),
                })
            })?;
        }
        Ok(headers)
    }

    /// Connects (within `timeout`) and returns a connection for the Admin
    /// API. Given several URLs (replicas on etcd), the first that accepts
    /// a connection is used; a follower's answer naming the leader among
    /// them sends the call there (medic-client's one strategy).
    pub async fn connect(&self) -> Result<Connection, Error> {
        let client = Client::new(self.settings()?).map_err(config_error)?;
        let conn = Connection {
            timeout: self.timeout,
            client,
        };
        // Connect now: an unreachable coordinator fails before anything
        // is printed.
        conn.client.channel().await.map_err(|e| conn.error(e))?;
        Ok(conn)
    }
}

/// A settings error as a usage error naming the flag.
fn config_error(e: ConfigError) -> Error {
    Error::Usage(match e {
        ConfigError::NoEndpoints | ConfigError::NotAUrl { .. } | ConfigError::Scheme { .. } => {
            format!("--coordinator {e}")
        }
        ConfigError::PlaintextWithTls { url } => format!(
            "TLS files are given (--tls-ca, --tls-cert, --tls-key or MEDIC_TLS_*) but \
             --coordinator {url} is not https://; use an https:// URL, or unset them"
        ),
        ConfigError::NoCa { url } => format!(
            "--coordinator {url} is https:// but no --tls-ca is given; pass --tls-ca FILE with \
             the CA that signed the coordinator's certificate"
        ),
        ConfigError::BearerInPlaintext { url } => format!(
            "--token-file with {url}: a bearer token is only sent over https:// (or to a \
             loopback address), never in plaintext across a network"
        ),
        ConfigError::Tls(e) => return tls_error(e),
        ConfigError::TlsSettings {
            detail,
            system_roots: true,
            ..
        } => format!(
            "no --tls-ca given, and the system's trust store is not usable ({detail}); pass \
             --tls-ca FILE with the CA that signed the coordinator's certificate"
        ),
        ConfigError::TlsSettings { detail, .. } => {
            format!("TLS settings (--tls-ca, --tls-cert, --tls-key) are not usable: {detail}")
        }
    })
}

/// A TLS file error as a usage error naming the flag.
fn tls_error(e: TlsError) -> Error {
    let flag = |f: TlsFile| match f {
        TlsFile::Ca => "--tls-ca",
        TlsFile::Cert => "--tls-cert",
        TlsFile::Key => "--tls-key",
    };
    Error::Usage(match &e {
        TlsError::PrivateKey(_) => format!("--tls-key: {e}"),
        TlsError::CertWithoutKey => {
            "--tls-cert needs --tls-key (the client certificate's private key)".to_owned()
        }
        TlsError::KeyWithoutCert => {
            "--tls-key needs --tls-cert (the client certificate)".to_owned()
        }
        TlsError::Unreadable { file, .. } | TlsError::NotPem { file, .. } => {
            format!("{} {e}", flag(*file))
        }
    })
}

/// What the transport said, with a hint when it is what a client says
/// that speaks the wrong protocol for the port: plaintext HTTP/2 reading a
/// TLS record ("frame with invalid size"), or a connection a TLS server
/// drops at once (`closed`: medic-client's guess); TLS reading plaintext.
fn with_scheme_hint(url: &str, detail: &str, closed: bool) -> String {
    let plain_to_tls = [
        "frame with invalid size",
        "invalid frame size",
        "FRAME_SIZE_ERROR",
    ];
    let tls_to_plain = [
        "InvalidContentType",
        "invalid content type",
        "corrupt message",
        "wrong version number",
        "not a TLS handshake",
        "packet length too long",
    ];
    if url.starts_with("http://") && (closed || plain_to_tls.iter().any(|m| detail.contains(m))) {
        format!(
            "{detail} (the coordinator at {url} speaks TLS: use https:// and \
             --tls-ca/--tls-cert/--tls-key)"
        )
    } else if url.starts_with("https://") && tls_to_plain.iter().any(|m| detail.contains(m)) {
        format!(
            "{detail} (the coordinator at {url} speaks plaintext, not TLS: use http://, \
             without --tls-ca/--tls-cert/--tls-key)"
        )
    } else {
        detail.to_owned()
    }
}

/// A connected Admin client.
#[derive(Debug, Clone)]
pub struct Connection {
    timeout: Duration,
    client: Client,
}

impl Connection {
    /// The URL calls go to.
    pub fn url(&self) -> String {
        self.client.current()
    }

    /// The client, for streaming calls (which have no overall deadline).
    pub async fn admin(&self) -> Result<Admin, Error> {
        self.client
            .admin()
            .await
            .map(|(_, admin)| admin)
            .map_err(|e| self.error(e))
    }

    /// The per-call deadline.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// One unary call: within the deadline, tried again (after the hint
    /// the coordinator gives) when refused by admission control, following
    /// the leader, and its error turned into an [`Error`].
    pub async fn unary<Req, Resp, F, Fut>(&self, req: Req, call: F) -> Result<Resp, Error>
    where
        Req: Clone,
        F: Fn(Admin, Req) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
    {
        self.client
            .admin_call(req, call)
            .await
            .map_err(|e| self.error(e))
    }

    /// A gRPC status as an [`Error`]: the coordinator's own errors exit 1;
    /// a status the transport made up (the connection broke, the peer does
    /// not speak gRPC) exits 2.
    pub fn status_error(&self, s: &Status) -> Error {
        self.error(CallError::from_status(&self.url(), s.clone()))
    }

    /// A call's error as an [`Error`], with its exit code.
    fn error(&self, e: CallError) -> Error {
        let hint = e.looks_like_tls_port();
        match e {
            CallError::Unreachable { attempts } => {
                let urls: Vec<&str> = attempts.iter().map(|a| a.url.as_str()).collect();
                let detail = match attempts.as_slice() {
                    [one] => with_scheme_hint(&one.url, &one.detail, false),
                    many => many
                        .iter()
                        .map(|a| {
                            format!("{}: {}", a.url, with_scheme_hint(&a.url, &a.detail, false))
                        })
                        .collect::<Vec<_>>()
                        .join("; "),
                };
                Error::Unreachable {
                    url: urls.join(","),
                    detail,
                }
            }
            CallError::Transport { url, detail } => Error::Unreachable {
                detail: with_scheme_hint(&url, &detail, hint),
                url,
            },
            CallError::Timeout { url, .. } => Error::Timeout {
                url,
                timeout: format::duration(self.timeout),
            },
            CallError::Status { status, .. } => Error::Rpc {
                code: medic_client::code_name(status.code()),
                message: status.message().to_owned(),
            },
            e @ CallError::Malformed { .. } => Error::Failed(e.to_string()),
        }
    }
}
