//! `[tls]` in agent.toml: the CA that signed the coordinator's certificate,
//! and this host's client certificate and key. Loaded and checked with the
//! config, so `check-config` and a SIGHUP reload catch a missing file, a
//! key others can read, an expired certificate, or one that does not name
//! this host, before the coordinator would refuse every call.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use medic_client::ClientTls;
use medic_client::tls::{TlsFile, read_key, read_pem};
use medic_policy::HostId;
use medic_policy::config::Errors;

/// The raw `[tls]` table.
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(default)]
pub(crate) struct RawTls {
    ca: Option<String>,
    cert: Option<String>,
    key: Option<String>,
    server_name: Option<String>,
}

/// `[tls]`, with its files read and checked.
#[derive(Clone, PartialEq, Eq)]
pub struct AgentTls {
    /// The CA certificate(s) the coordinator's certificate must chain to.
    pub ca: PathBuf,
    /// This host's certificate (PEM); its SANs must name `host_id`.
    pub cert: PathBuf,
    /// Its private key (PEM, mode 0600).
    pub key: PathBuf,
    /// The name to verify the coordinator's certificate against, when it
    /// differs from the host in the coordinator URLs.
    pub server_name: Option<String>,
    /// When the certificate expires.
    pub not_after: SystemTime,
    material: ClientTls,
}

impl fmt::Debug for AgentTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentTls")
            .field("ca", &self.ca)
            .field("cert", &self.cert)
            .field("key", &self.key)
            .field("server_name", &self.server_name)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl AgentTls {
    /// The client TLS material for the coordinator connections.
    pub fn client_tls(&self) -> ClientTls {
        self.material.clone()
    }
}

/// Reads a file with medic-client's checks; its error, naming the file,
/// is reported under `key`.
fn read<T, E: ToString>(errs: &mut Errors, key: &str, r: Result<T, E>) -> Option<T> {
    r.map_err(|e| errs.push(key, e.to_string())).ok()
}

impl RawTls {
    /// Validates the table for `host`; `https` says whether every
    /// coordinator URL is `https://`.
    pub(crate) fn validate(&self, errs: &mut Errors, host: &HostId) -> Option<AgentTls> {
        let mut path = |k: &str, v: &Option<String>, what: &str| match v.as_deref() {
            None | Some("") => {
                errs.push(
                    format!("tls.{k}"),
                    format!("is required with [tls] ({what})"),
                );
                None
            }
            Some(p) => Some(PathBuf::from(p)),
        };
        let ca = path(
            "ca",
            &self.ca,
            "the CA that signed the coordinator's certificate",
        );
        let cert = path(
            "cert",
            &self.cert,
            "this host's certificate: the coordinator identifies agents by it",
        );
        let key = path("key", &self.key, "its private key, mode 0600");
        let (ca, cert, key) = (ca?, cert?, key?);
        let ca_pem = read(errs, "tls.ca", read_pem(TlsFile::Ca, &ca));
        let cert_pem = read(errs, "tls.cert", read_pem(TlsFile::Cert, &cert));
        let key_pem = read(errs, "tls.key", read_key(&key));
        let not_after = cert_pem
            .as_deref()
            .and_then(|pem| check_certificate(errs, &cert, pem, host));
        Some(AgentTls {
            ca,
            cert,
            key,
            server_name: self.server_name.clone().filter(|s| !s.is_empty()),
            not_after: not_after?,
            material: ClientTls::from_pem(Some(ca_pem?), Some((cert_pem?, key_pem?)))
                .with_server_name(self.server_name.clone()),
        })
    }
}

/// Checks the certificate is current and names `host` (a DNS SAN, or a URI
/// SAN ending in `/<host>`); returns when it expires.
fn check_certificate(
    errs: &mut Errors,
    path: &Path,
    pem: &[u8],
    host: &HostId,
) -> Option<SystemTime> {
    use x509_parser::extensions::GeneralName;
    let parsed = x509_parser::pem::parse_x509_pem(pem)
        .map_err(|e| e.to_string())
        .and_then(|(_, p)| {
            p.parse_x509()
                .map(|c| {
                    let not_after = c.validity().not_after.timestamp();
                    let mut names = Vec::new();
                    if let Ok(Some(san)) = c.subject_alternative_name() {
                        for n in &san.value.general_names {
                            match n {
                                GeneralName::DNSName(d) => names.push((*d).to_owned()),
                                GeneralName::URI(u) => names.push((*u).to_owned()),
                                _ => {}
                            }
                        }
                    }
                    (not_after, names)
                })
                .map_err(|e| e.to_string())
        });
    let (not_after, names) = match parsed {
        Ok(x) => x,
        Err(e) => {
            errs.push(
                "tls.cert",
                format!("{}: cannot parse the certificate: {e}", path.display()),
            );
            return None;
        }
    };
    let not_after =
        SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(not_after).unwrap_or(0));
    if not_after <= SystemTime::now() {
        errs.push(
            "tls.cert",
            format!(
                "{} expired at {}; the coordinator would refuse every call",
                path.display(),
                humantime::format_rfc3339_seconds(not_after)
            ),
        );
    }
    let h = host.as_str();
    let named = names
        .iter()
        .any(|n| n.eq_ignore_ascii_case(h) || n.rsplit('/').next() == Some(h) && n.contains("://"));
    if !named {
        errs.push(
            "tls.cert",
            format!(
                "{} does not name this host: its names are [{}] and host_id is {h:?}; the \
                 coordinator only lets a certificate speak for the hosts it names",
                path.display(),
                names.join(", ")
            ),
        );
    }
    Some(not_after)
}
