//! Reading and checking certificate files: PEM certificates, CA bundles,
//! and the files of a TLS client (this coordinator as etcd's client).

use std::path::Path;
use std::sync::Arc;

use medic_policy::config::Errors;
use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

pub(super) fn read(errs: &mut Errors, key: &str, path: &Path) -> Option<Vec<u8>> {
    match std::fs::read(path) {
        Ok(b) => Some(b),
        Err(e) => {
            let hint = if e.kind() == std::io::ErrorKind::NotFound {
                " (to try medic, `medic-coordinator dev-certs --out DIR --hosts HOST,...` writes \
                 a CA, server, agent and operator certificates)"
            } else {
                ""
            };
            errs.push(key, format!("cannot read {}: {e}{hint}", path.display()));
            None
        }
    }
}

pub(super) fn certificates(
    errs: &mut Errors,
    key: &str,
    path: &Path,
    bytes: &[u8],
) -> Option<Vec<CertificateDer<'static>>> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(bytes).collect();
    match certs {
        Ok(c) if !c.is_empty() => Some(c),
        Ok(_) => {
            errs.push(
                key,
                format!(
                    "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                    path.display()
                ),
            );
            None
        }
        Err(e) => {
            errs.push(key, format!("{}: not valid PEM: {e}", path.display()));
            None
        }
    }
}

/// A config key and the file it names.
pub(crate) type KeyedPath<'a> = (&'a str, &'a Path);

/// Checks the files of a TLS client (this coordinator as etcd's client):
/// the CA must hold certificates, the certificate too, and the key must be
/// private (see `medic_proto::secret_file`) and a PEM private key. Each
/// problem is pushed under the key (first of each pair) naming the file.
pub(crate) fn check_client_files(
    errs: &mut Errors,
    ca: KeyedPath<'_>,
    identity: Option<(KeyedPath<'_>, KeyedPath<'_>)>,
) {
    let _ = roots(errs, ca.0, ca.1);
    if let Some(((cert_key, cert), (key_key, key))) = identity {
        if let Some(b) = read(errs, cert_key, cert) {
            let _ = certificates(errs, cert_key, cert, &b);
        }
        match medic_proto::secret_file::read(key) {
            Err(e) => errs.push(key_key, e),
            Ok(b) => {
                if let Err(e) = PrivateKeyDer::from_pem_slice(&b) {
                    errs.push(
                        key_key,
                        format!("{}: no usable PEM private key: {e}", key.display()),
                    );
                }
            }
        }
    }
}

pub(super) fn roots(errs: &mut Errors, key: &str, path: &Path) -> Option<Arc<RootCertStore>> {
    let bytes = read(errs, key, path)?;
    let certs = certificates(errs, key, path, &bytes)?;
    let mut store = RootCertStore::empty();
    let (added, ignored) = store.add_parsable_certificates(certs);
    if added == 0 || ignored > 0 {
        errs.push(
            key,
            format!(
                "{}: {ignored} of {} certificates are not usable as CA certificates",
                path.display(),
                added + ignored
            ),
        );
        return None;
    }
    Some(Arc::new(store))
}
