//! Client TLS from PEM files: the CA that signed the coordinator's
//! certificate and, for mutual TLS, the client's certificate and private
//! key (which must be private to its owner: see
//! [`medic_proto::secret_file`]). Every error names the file.

use std::fmt;
use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, ClientTlsConfig, Identity};

/// Which of the TLS files an error is about, so a caller can name its flag
/// or config key (`--tls-ca`, `tls.ca`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsFile {
    /// The CA certificate(s).
    Ca,
    /// The client certificate.
    Cert,
    /// The client's private key.
    Key,
}

/// Why the TLS files cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file cannot be read.
    #[error("{}: cannot read it: {source}", .path.display())]
    Unreadable {
        /// Which file.
        file: TlsFile,
        /// Its path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file holds no PEM block of the kind expected.
    #[error("{}: no PEM {label} in it (expected a -----BEGIN ...{label}----- block)", .path.display())]
    NotPem {
        /// Which file.
        file: TlsFile,
        /// Its path.
        path: PathBuf,
        /// The label looked for: `CERTIFICATE`, `PRIVATE KEY`.
        label: &'static str,
    },
    /// The key cannot be read, or others can read it (the message names
    /// the file, its mode and the fix).
    #[error("{0}")]
    PrivateKey(String),
    /// A certificate without its key.
    #[error("a client certificate needs its private key")]
    CertWithoutKey,
    /// A key without its certificate.
    #[error("a client key needs its certificate")]
    KeyWithoutCert,
}

impl TlsError {
    /// The file the error is about, if one.
    pub fn file(&self) -> Option<TlsFile> {
        match self {
            TlsError::Unreadable { file, .. } | TlsError::NotPem { file, .. } => Some(*file),
            TlsError::PrivateKey(_) => Some(TlsFile::Key),
            TlsError::CertWithoutKey | TlsError::KeyWithoutCert => None,
        }
    }
}

/// The paths of the TLS files, as given (flags, a config table).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// The CA certificate(s) the coordinator's certificate must chain to.
    /// None: the system's trust store (with the `native-roots` feature).
    pub ca: Option<PathBuf>,
    /// The client certificate (mutual TLS); needs `key`.
    pub cert: Option<PathBuf>,
    /// Its private key; needs `cert`.
    pub key: Option<PathBuf>,
}

impl TlsFiles {
    /// Whether any file is given.
    pub fn any(&self) -> bool {
        self.ca.is_some() || self.cert.is_some() || self.key.is_some()
    }

    /// Reads and checks the files: the first problem is returned.
    pub fn load(&self) -> Result<ClientTls, TlsError> {
        let ca = self
            .ca
            .as_deref()
            .map(|p| read_pem(TlsFile::Ca, p))
            .transpose()?;
        let identity = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                // The key first: a key others can read is the worse news.
                let key = read_key(key)?;
                Some((read_pem(TlsFile::Cert, cert)?, key))
            }
            (None, None) => None,
            (Some(_), None) => return Err(TlsError::CertWithoutKey),
            (None, Some(_)) => return Err(TlsError::KeyWithoutCert),
        };
        Ok(ClientTls {
            ca,
            identity,
            server_name: None,
        })
    }
}

/// TLS material read from its files, ready for a connection.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientTls {
    ca: Option<Vec<u8>>,
    identity: Option<(Vec<u8>, Vec<u8>)>,
    server_name: Option<String>,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("ca", &self.ca.is_some())
            .field("identity", &self.identity.is_some())
            .field("server_name", &self.server_name)
            .finish()
    }
}

impl ClientTls {
    /// From PEM bytes already read and checked (the agent reads its files
    /// with its config, to report every problem at once).
    pub fn from_pem(ca: Option<Vec<u8>>, identity: Option<(Vec<u8>, Vec<u8>)>) -> Self {
        Self {
            ca,
            identity,
            server_name: None,
        }
    }

    /// Verifies the coordinator's certificate against `name` instead of the
    /// host in its URL.
    #[must_use]
    pub fn with_server_name(mut self, name: Option<String>) -> Self {
        self.server_name = name.filter(|n| !n.is_empty());
        self
    }

    /// Whether a CA is given (otherwise the system's trust store is used).
    pub fn has_ca(&self) -> bool {
        self.ca.is_some()
    }

    /// tonic's settings; `None` when no CA is given and this build cannot
    /// use the system's trust store.
    pub fn config(&self) -> Option<ClientTlsConfig> {
        let mut c = ClientTlsConfig::new();
        c = match &self.ca {
            Some(ca) => c.ca_certificate(Certificate::from_pem(ca)),
            None => native_roots(c)?,
        };
        if let Some((cert, key)) = &self.identity {
            c = c.identity(Identity::from_pem(cert, key));
        }
        if let Some(name) = &self.server_name {
            c = c.domain_name(name.clone());
        }
        Some(c)
    }
}

#[cfg(feature = "native-roots")]
#[allow(clippy::unnecessary_wraps)]
fn native_roots(c: ClientTlsConfig) -> Option<ClientTlsConfig> {
    Some(c.with_native_roots())
}

#[cfg(not(feature = "native-roots"))]
fn native_roots(_: ClientTlsConfig) -> Option<ClientTlsConfig> {
    None
}

/// Reads a PEM file that must hold a certificate.
pub fn read_pem(file: TlsFile, path: &Path) -> Result<Vec<u8>, TlsError> {
    let pem = std::fs::read(path).map_err(|source| TlsError::Unreadable {
        file,
        path: path.to_owned(),
        source,
    })?;
    require_pem(file, path, pem, "CERTIFICATE")
}

/// Reads a private key: private to its owner, holding a PEM private key.
pub fn read_key(path: &Path) -> Result<Vec<u8>, TlsError> {
    let pem = medic_proto::secret_file::read(path).map_err(TlsError::PrivateKey)?;
    require_pem(TlsFile::Key, path, pem, "PRIVATE KEY")
}

fn require_pem(
    file: TlsFile,
    path: &Path,
    pem: Vec<u8>,
    label: &'static str,
) -> Result<Vec<u8>, TlsError> {
    let found = String::from_utf8_lossy(&pem).lines().any(|l| {
        l.strip_prefix("-----BEGIN ")
            .is_some_and(|rest| rest.contains(label))
    });
    if found {
        Ok(pem)
    } else {
        Err(TlsError::NotPem {
            file,
            path: path.to_owned(),
            label,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    const CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    const KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n";

    fn write(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn a_missing_ca_is_named_with_its_path() {
        let files = TlsFiles {
            ca: Some("/nonexistent/ca.pem".into()),
            ..TlsFiles::default()
        };
        let e = files.load().unwrap_err();
        assert_eq!(e.file(), Some(TlsFile::Ca));
        assert!(
            e.to_string()
                .starts_with("/nonexistent/ca.pem: cannot read it: "),
            "{e}"
        );
    }

    #[test]
    fn a_file_without_the_expected_pem_block_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let junk = write(dir.path(), "ca.pem", "not a certificate\n", 0o644);
        let e = read_pem(TlsFile::Ca, &junk).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{}: no PEM CERTIFICATE in it (expected a -----BEGIN ...CERTIFICATE----- block)",
                junk.display()
            )
        );
        // A certificate where the key should be.
        let key = write(dir.path(), "client.key", CERT, 0o600);
        let e = read_key(&key).unwrap_err();
        assert_eq!(e.file(), Some(TlsFile::Key));
        assert!(e.to_string().contains("no PEM PRIVATE KEY"), "{e}");
    }

    #[test]
    fn a_key_others_can_read_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let key = write(dir.path(), "client.key", KEY, 0o644);
        let cert = write(dir.path(), "client.pem", CERT, 0o644);
        let files = TlsFiles {
            ca: None,
            cert: Some(cert),
            key: Some(key.clone()),
        };
        let e = files.load().unwrap_err();
        assert_eq!(e.file(), Some(TlsFile::Key));
        let text = e.to_string();
        assert!(text.contains(&key.display().to_string()), "{text}");
        assert!(
            text.contains("mode 0644") && text.contains("chmod 600"),
            "{text}"
        );
    }

    #[test]
    fn a_certificate_and_key_come_in_pairs() {
        let cert_only = TlsFiles {
            cert: Some("c.pem".into()),
            ..TlsFiles::default()
        };
        assert!(matches!(cert_only.load(), Err(TlsError::CertWithoutKey)));
        let key_only = TlsFiles {
            key: Some("c.key".into()),
            ..TlsFiles::default()
        };
        assert!(matches!(key_only.load(), Err(TlsError::KeyWithoutCert)));
    }

    #[test]
    fn good_files_load() {
        let dir = tempfile::tempdir().unwrap();
        let files = TlsFiles {
            ca: Some(write(dir.path(), "ca.pem", CERT, 0o644)),
            cert: Some(write(dir.path(), "c.pem", CERT, 0o644)),
            key: Some(write(dir.path(), "c.key", KEY, 0o600)),
        };
        let tls = files.load().unwrap();
        assert!(tls.has_ca());
        assert!(tls.config().is_some());
    }
}
