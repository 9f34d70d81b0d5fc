//! `medic-coordinator dev-certs`: a CA and the certificates to run medic
//! with real mutual TLS on a laptop, in tests and in a first rollout: a
//! server certificate, one client certificate per agent host, and two
//! operator certificates (an admin and a read-only viewer).
//!
//! Names, matching the examples in `config/`:
//! - agents: DNS SAN `<host>` and URI SAN `spiffe://medic.dev/host/<host>`
//!   (either `auth.agent_identity` works);
//! - operators: URI SANs `spiffe://medic.dev/operator/admin` and
//!   `spiffe://medic.dev/operator/viewer`, which carry no DNS name, so they
//!   can never speak for a host.
//!
//! Running it again in the same directory reuses the CA (`ca.pem`,
//! `ca.key`), so hosts can be added later; existing files are kept unless
//! `--force`. Keys are written 0600. `ca.key` signs operators' certificates:
//! keep it on the machine that ran dev-certs and never copy it to agents'
//! hosts (they need `ca.pem` and their own `agents/HOST.*` only).
//! Production fleets should use their own PKI (and a separate CA for
//! operators, `auth.operator_ca`); these certificates are for trying medic.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::OffsetDateTime;

/// The trust domain of the URIs dev-certs writes.
pub const TRUST_DOMAIN: &str = "medic.dev";
/// The admin operator's URI SAN.
pub const ADMIN_URI: &str = "spiffe://medic.dev/operator/admin";
/// The read-only operator's URI SAN.
pub const VIEWER_URI: &str = "spiffe://medic.dev/operator/viewer";
/// The prefix of agents' URI SANs (`auth.agent_spiffe_prefix`).
pub const AGENT_URI_PREFIX: &str = "spiffe://medic.dev/host/";

/// Why dev-certs failed.
#[derive(Debug, thiserror::Error)]
pub enum DevCertsError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// Which file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// Certificate generation failed.
    #[error("cannot make a certificate: {0}")]
    Cert(#[from] rcgen::Error),
    /// Bad input.
    #[error("{0}")]
    Invalid(String),
}

/// A certificate and its key, PEM.
#[derive(Clone)]
pub struct Issued {
    /// The certificate.
    pub cert_pem: String,
    /// Its private key (PKCS#8).
    pub key_pem: String,
}

impl fmt::Debug for Issued {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Issued").finish_non_exhaustive()
    }
}

/// What to put in a leaf certificate.
#[derive(Clone, Debug)]
pub struct Leaf {
    /// Subject common name.
    pub common_name: String,
    /// DNS SANs.
    pub dns: Vec<String>,
    /// IP SANs.
    pub ips: Vec<IpAddr>,
    /// URI SANs.
    pub uris: Vec<String>,
    /// For a server (serverAuth) or a client (clientAuth).
    pub server: bool,
    /// Valid from.
    pub not_before: OffsetDateTime,
    /// Valid until.
    pub not_after: OffsetDateTime,
}

impl Leaf {
    /// A leaf valid from an hour ago for `validity`.
    pub fn new(common_name: &str, server: bool, validity: Duration) -> Self {
        let now = OffsetDateTime::now_utc();
        Self {
            common_name: common_name.to_owned(),
            dns: Vec::new(),
            ips: Vec::new(),
            uris: Vec::new(),
            server,
            not_before: now - Duration::from_secs(3600),
            not_after: now + validity,
        }
    }

    /// An agent's client certificate for `host`.
    pub fn agent(host: &str, validity: Duration) -> Self {
        let mut l = Self::new(host, false, validity);
        l.dns.push(host.to_owned());
        l.uris.push(format!("{AGENT_URI_PREFIX}{host}"));
        l
    }

    /// An operator's client certificate with URI SAN `uri`.
    pub fn operator(uri: &str, validity: Duration) -> Self {
        let mut l = Self::new(uri.rsplit('/').next().unwrap_or(uri), false, validity);
        l.uris.push(uri.to_owned());
        l
    }
}

/// A certificate authority that can issue leaves.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    key_pem: String,
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

impl Ca {
    /// A new self-signed CA named `name` plus a fingerprint of its key.
    pub fn generate(name: &str, validity: Duration) -> Result<Self, DevCertsError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        let id = ring::digest::digest(&ring::digest::SHA256, key.public_key_raw());
        let id: String = id.as_ref()[..4]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        dn.push(DnType::CommonName, format!("{name} {id}"));
        dn.push(DnType::OrganizationName, "medic");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::from_secs(3600);
        params.not_after = now + validity;
        let cert = params.self_signed(&key)?;
        let key_pem = key.serialize_pem();
        Ok(Self {
            cert_pem: cert.pem(),
            key_pem,
            issuer: Issuer::new(params, key),
        })
    }

    /// An existing CA from its PEM certificate and key.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, DevCertsError> {
        let key = KeyPair::from_pem(key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)?;
        Ok(Self {
            issuer,
            cert_pem: cert_pem.to_owned(),
            key_pem: key_pem.to_owned(),
        })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Issues a leaf certificate.
    pub fn issue(&self, leaf: &Leaf) -> Result<Issued, DevCertsError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, leaf.common_name.as_str());
        params.distinguished_name = dn;
        for d in &leaf.dns {
            params.subject_alt_names.push(SanType::DnsName(
                d.as_str()
                    .try_into()
                    .map_err(|_| DevCertsError::Invalid(format!("{d:?} is not a DNS name")))?,
            ));
        }
        for ip in &leaf.ips {
            params.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        for u in &leaf.uris {
            params.subject_alt_names.push(SanType::URI(
                u.as_str()
                    .try_into()
                    .map_err(|_| DevCertsError::Invalid(format!("{u:?} is not a URI")))?,
            ));
        }
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![if leaf.server {
            ExtendedKeyUsagePurpose::ServerAuth
        } else {
            ExtendedKeyUsagePurpose::ClientAuth
        }];
        params.use_authority_key_identifier_extension = true;
        params.not_before = leaf.not_before;
        params.not_after = leaf.not_after;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// What `dev-certs` writes.
#[derive(Clone, Debug)]
pub struct DevCerts {
    /// The directory (created if missing).
    pub out: PathBuf,
    /// Agent hosts: one certificate each, in `agents/<host>.pem`.
    pub hosts: Vec<String>,
    /// Extra names for the server certificate, besides `localhost`,
    /// `127.0.0.1` and `::1` (DNS names or IP addresses).
    pub server_names: Vec<String>,
    /// How long the certificates are valid.
    pub validity: Duration,
    /// Overwrite existing leaf files.
    pub force: bool,
}

/// Writes the CA (or reuses the one in `out`), the server, agent and
/// operator certificates; returns the files written.
pub fn write(spec: &DevCerts) -> Result<Vec<PathBuf>, DevCertsError> {
    for h in &spec.hosts {
        medic_policy::HostId::new(h.as_str())
            .map_err(|e| DevCertsError::Invalid(format!("--hosts: {h:?}: {e}")))?;
        if h.contains('/') || h.starts_with('.') {
            return Err(DevCertsError::Invalid(format!(
                "--hosts: {h:?} cannot be a file name"
            )));
        }
    }
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| DevCertsError::Io { path, source }
    };
    std::fs::create_dir_all(spec.out.join("agents")).map_err(io(&spec.out))?;
    let mut written = Vec::new();
    let (ca_cert, ca_key) = (spec.out.join("ca.pem"), spec.out.join("ca.key"));
    let ca = if ca_cert.exists() && ca_key.exists() {
        // A CA found here signs operators' certificates: only reuse one
        // whose key nobody else could have read or planted.
        let key = medic_proto::secret_file::read(&ca_key).map_err(|e| {
            DevCertsError::Invalid(format!("not reusing the CA in {}: {e}", spec.out.display()))
        })?;
        let key = String::from_utf8(key)
            .map_err(|_| DevCertsError::Invalid(format!("{}: not PEM", ca_key.display())))?;
        let cert = std::fs::read_to_string(&ca_cert).map_err(io(&ca_cert))?;
        Ca::from_pem(&cert, &key)?
    } else {
        // Its name carries a fingerprint of its key: two dev sets never
        // look alike.
        let ca = Ca::generate("medic dev CA", spec.validity)?;
        write_file(&ca_cert, ca.cert_pem(), 0o644)?;
        write_file(&ca_key, &ca.key_pem, 0o600)?;
        written.extend([ca_cert.clone(), ca_key.clone()]);
        ca
    };

    let mut server = Leaf::new("medic-coordinator", true, spec.validity);
    server.dns.push("localhost".to_owned());
    server.ips.extend([
        IpAddr::from([127, 0, 0, 1]),
        IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
    ]);
    for n in &spec.server_names {
        match n.parse::<IpAddr>() {
            Ok(ip) => server.ips.push(ip),
            Err(_) => server.dns.push(n.clone()),
        }
    }
    let mut leaves: Vec<(String, Leaf)> = vec![
        ("server".to_owned(), server),
        (
            "operator".to_owned(),
            Leaf::operator(ADMIN_URI, spec.validity),
        ),
        (
            "viewer".to_owned(),
            Leaf::operator(VIEWER_URI, spec.validity),
        ),
    ];
    for h in &spec.hosts {
        leaves.push((format!("agents/{h}"), Leaf::agent(h, spec.validity)));
    }
    for (name, leaf) in leaves {
        let (cert, key) = (
            spec.out.join(format!("{name}.pem")),
            spec.out.join(format!("{name}.key")),
        );
        if !spec.force && (cert.exists() || key.exists()) {
            continue;
        }
        let issued = ca.issue(&leaf)?;
        write_file(&cert, &issued.cert_pem, 0o644)?;
        write_file(&key, &issued.key_pem, 0o600)?;
        written.extend([cert, key]);
    }
    Ok(written)
}

/// Writes `text` to `path` with `mode`, never leaving the file readable by
/// others in between: a temporary file is created with the mode, then
/// renamed into place.
pub fn write_file(path: &Path, text: &str, mode: u32) -> Result<(), DevCertsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let err = |source| DevCertsError::Io {
        path: path.to_owned(),
        source,
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(text.as_bytes()).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn dev_certs_write_keys_owner_only_and_reuse_the_ca() {
        let dir = tempfile::tempdir().unwrap();
        let spec = DevCerts {
            out: dir.path().to_owned(),
            hosts: vec!["web-1".to_owned(), "web-2".to_owned()],
            server_names: vec!["medic.example.org".to_owned(), "10.0.0.5".to_owned()],
            validity: Duration::from_secs(86400),
            force: false,
        };
        let first = write(&spec).unwrap();
        assert_eq!(first.len(), 2 + 2 * 5, "{first:?}");
        for f in &first {
            let mode = std::fs::metadata(f).unwrap().permissions().mode() & 0o777;
            let want = if f.extension().unwrap() == "key" {
                0o600
            } else {
                0o644
            };
            assert_eq!(mode, want, "{}", f.display());
        }
        let ca = std::fs::read(dir.path().join("ca.pem")).unwrap();
        let more = DevCerts {
            hosts: vec!["web-3".to_owned()],
            ..spec
        };
        let second = write(&more).unwrap();
        assert_eq!(
            second,
            vec![
                dir.path().join("agents/web-3.pem"),
                dir.path().join("agents/web-3.key")
            ]
        );
        assert_eq!(std::fs::read(dir.path().join("ca.pem")).unwrap(), ca);
    }

    #[test]
    fn dev_certs_refuse_host_names_that_are_not_file_names() {
        let dir = tempfile::tempdir().unwrap();
        let spec = DevCerts {
            out: dir.path().to_owned(),
            hosts: vec!["../etc".to_owned()],
            server_names: Vec::new(),
            validity: Duration::from_secs(86400),
            force: false,
        };
        assert!(matches!(write(&spec), Err(DevCertsError::Invalid(_))));
    }
}
