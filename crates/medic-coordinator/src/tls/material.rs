//! [`TlsMaterial`]: the serving certificate, its key and the client and
//! operator CAs, loaded and checked together with the config, and the
//! handshake-time verifier that asks clients for a certificate.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use medic_policy::config::Errors;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime, pem::PemObject};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ServerConfig, WebPkiClientVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};

use super::files::{certificates, read, roots};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn verifier(
    errs: &mut Errors,
    key: &str,
    roots: Arc<RootCertStore>,
) -> Option<Arc<dyn ClientCertVerifier>> {
    match WebPkiClientVerifier::builder_with_provider(roots, provider())
        .allow_unauthenticated()
        .build()
    {
        Ok(v) => Some(v),
        Err(e) => {
            errs.push(key, format!("not usable as a client CA: {e}"));
            None
        }
    }
}

/// The TLS settings with their certificates and keys loaded and checked.
#[derive(Clone)]
pub struct TlsMaterial {
    /// `tls.cert`.
    pub cert: PathBuf,
    /// `tls.key`.
    pub key: PathBuf,
    /// `tls.client_ca`.
    pub client_ca: PathBuf,
    /// `auth.operator_ca`.
    pub operator_ca: Option<PathBuf>,
    /// When the serving certificate expires.
    pub not_after: SystemTime,
    server: Arc<ServerConfig>,
    pub(super) client_verifier: Arc<dyn ClientCertVerifier>,
    pub(super) operator_verifier: Option<Arc<dyn ClientCertVerifier>>,
    /// SHA-256 over every file read: equal material compares equal.
    digest: Vec<u8>,
    /// The first 8 bytes of `digest`: which material a cached client
    /// verdict was reached with.
    pub(super) id: u64,
}

impl fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .field("client_ca", &self.client_ca)
            .field("operator_ca", &self.operator_ca)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl PartialEq for TlsMaterial {
    fn eq(&self, other: &Self) -> bool {
        self.cert == other.cert
            && self.key == other.key
            && self.client_ca == other.client_ca
            && self.operator_ca == other.operator_ca
            && self.digest == other.digest
    }
}

impl TlsMaterial {
    /// Loads and checks everything; each problem is pushed to `errs` under
    /// the key that names the file.
    pub fn load(
        errs: &mut Errors,
        cert: &Path,
        key: &Path,
        client_ca: &Path,
        operator_ca: Option<&Path>,
    ) -> Option<Self> {
        let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
        let chain = read(errs, "tls.cert", cert).and_then(|b| {
            digest.update(&b);
            certificates(errs, "tls.cert", cert, &b)
        });
        let private = match medic_proto::secret_file::read(key) {
            Err(e) => {
                errs.push("tls.key", e);
                None
            }
            Ok(b) => Some(b).and_then(|b| {
                digest.update(&b);
                match PrivateKeyDer::from_pem_slice(&b) {
                    Ok(k) => Some(k),
                    Err(e) => {
                        errs.push(
                            "tls.key",
                            format!("{}: no usable PEM private key: {e}", key.display()),
                        );
                        None
                    }
                }
            }),
        };
        for path in std::iter::once(client_ca).chain(operator_ca) {
            if let Ok(b) = std::fs::read(path) {
                digest.update(&b);
            }
        }
        let client_verifier = roots(errs, "tls.client_ca", client_ca)
            .and_then(|r| verifier(errs, "tls.client_ca", r));
        let operator_verifier = match operator_ca {
            None => None,
            Some(p) => Some(
                roots(errs, "auth.operator_ca", p)
                    .and_then(|r| verifier(errs, "auth.operator_ca", r))?,
            ),
        };
        let (chain, private, client_verifier) = (chain?, private?, client_verifier?);
        let not_after = match x509_parser::parse_x509_certificate(&chain[0]) {
            Ok((_, c)) => {
                let t = c.validity().not_after.timestamp();
                SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(t).unwrap_or(0))
            }
            Err(e) => {
                errs.push(
                    "tls.cert",
                    format!("{}: cannot parse the certificate: {e}", cert.display()),
                );
                return None;
            }
        };
        if not_after <= SystemTime::now() {
            errs.push(
                "tls.cert",
                format!(
                    "{} expired at {}; clients would refuse it",
                    cert.display(),
                    humantime::format_rfc3339_seconds(not_after)
                ),
            );
            return None;
        }
        let hints = Hints {
            client: client_verifier.clone(),
            subjects: client_verifier
                .root_hint_subjects()
                .iter()
                .chain(
                    operator_verifier
                        .iter()
                        .flat_map(|v| v.root_hint_subjects().iter()),
                )
                .cloned()
                .collect(),
        };
        let server = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| errs.push("tls", format!("TLS versions: {e}")))
            .ok()?
            .with_client_cert_verifier(Arc::new(hints))
            .with_single_cert(chain, private);
        let mut server = match server {
            Ok(s) => s,
            Err(e) => {
                errs.push(
                    "tls.key",
                    format!(
                        "{} does not go with the certificate {}: {e}",
                        key.display(),
                        cert.display()
                    ),
                );
                return None;
            }
        };
        server.alpn_protocols = vec![b"h2".to_vec()];
        Some(
            Self {
                cert: cert.to_owned(),
                key: key.to_owned(),
                client_ca: client_ca.to_owned(),
                operator_ca: operator_ca.map(Path::to_owned),
                not_after,
                server: Arc::new(server),
                client_verifier,
                operator_verifier,
                id: 0,
                digest: digest.finish().as_ref().to_vec(),
            }
            .with_id(),
        )
    }

    fn with_id(mut self) -> Self {
        let mut first = [0u8; 8];
        first.copy_from_slice(&self.digest[..8]);
        self.id = u64::from_be_bytes(first);
        self
    }

    pub(super) fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.server.clone())
    }
}

/// The handshake-time verifier: asks for a client certificate, checks the
/// handshake signature (proof of the key), and leaves the chain to
/// [`TlsMaterial::classify`], which runs right after.
#[derive(Debug)]
struct Hints {
    /// Checks handshake signatures (which do not depend on the roots).
    client: Arc<dyn ClientCertVerifier>,
    subjects: Vec<DistinguishedName>,
}

impl ClientCertVerifier for Hints {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.subjects
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.client.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.client.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.client.supported_verify_schemes()
    }
}
