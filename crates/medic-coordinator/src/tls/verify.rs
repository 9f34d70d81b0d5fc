//! What a client's certificate chain proves: checked against `tls.client_ca`
//! and `auth.operator_ca` right after the handshake (and again after a
//! reload or its expiry), with its names kept bounded and a failure worded
//! for the operator.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::pki_types::{CertificateDer, UnixTime};

use super::TlsMaterial;
use crate::auth::{CertNames, ClientCert};

/// Longest certificate name kept (SANs, subjects); longer ones are cut, so
/// a caller cannot make the coordinator log or remember megabytes.
const MAX_NAME_LEN: usize = 256;

impl TlsMaterial {
    /// What a client's certificate chain proves, checked against the CAs at
    /// `now`.
    pub fn classify(&self, chain: Option<&[CertificateDer<'_>]>, now: SystemTime) -> ClientCert {
        self.verdict(chain, now).0
    }

    /// [`Self::classify`], and until when the verdict holds (the end-entity
    /// certificate's expiry for a verified one).
    pub(super) fn verdict(
        &self,
        chain: Option<&[CertificateDer<'_>]>,
        now: SystemTime,
    ) -> (ClientCert, SystemTime) {
        let forever = SystemTime::UNIX_EPOCH + Duration::from_secs(u64::from(u32::MAX) * 4);
        let Some((end_entity, intermediates)) = chain.and_then(|c| c.split_first()) else {
            return (ClientCert::None, forever);
        };
        let (names, until) = match x509_parser::parse_x509_certificate(end_entity) {
            Ok((_, c)) => {
                let t = c.validity().not_after.timestamp();
                let until =
                    SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(t).unwrap_or(0));
                (names_of(&c), until)
            }
            Err(e) => {
                return (
                    ClientCert::Rejected {
                        name: "?".to_owned(),
                        why: format!("it cannot be parsed: {e}"),
                    },
                    forever,
                );
            }
        };
        let at = UnixTime::since_unix_epoch(
            now.duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default(),
        );
        let client = self
            .client_verifier
            .verify_client_cert(end_entity, intermediates, at);
        let operator = self
            .operator_verifier
            .as_ref()
            .map(|v| v.verify_client_cert(end_entity, intermediates, at));
        let by_client_ca = client.is_ok();
        let by_operator_ca = matches!(operator, Some(Ok(_)));
        if !by_client_ca && !by_operator_ca {
            let err = match (client, operator) {
                (Err(e), None | Some(Ok(_))) | (_, Some(Err(e))) => e,
                (Ok(_), _) => rustls::Error::General("unreachable".to_owned()),
            };
            return (
                ClientCert::Rejected {
                    name: names.display_name().to_owned(),
                    why: describe(&err, &self.client_ca, self.operator_ca.as_deref()),
                },
                forever,
            );
        }
        (
            ClientCert::Verified(Arc::new(CertNames {
                by_client_ca,
                by_operator_ca,
                ..names
            })),
            until,
        )
    }
}

fn names_of(c: &x509_parser::certificate::X509Certificate<'_>) -> CertNames {
    use x509_parser::extensions::GeneralName;
    let mut names = CertNames {
        subject: bounded(&c.subject().to_string()),
        ..CertNames::default()
    };
    if let Ok(Some(san)) = c.subject_alternative_name() {
        for n in san.value.general_names.iter().take(64) {
            match n {
                GeneralName::DNSName(d) => names.dns.push(bounded(d)),
                GeneralName::URI(u) => names.uris.push(bounded(u)),
                GeneralName::RFC822Name(m) => names.emails.push(bounded(m)),
                _ => {}
            }
        }
    }
    names
}

/// A certificate name as it may be kept, logged and compared: control
/// characters become `?` and it is cut at [`MAX_NAME_LEN`] bytes (marked
/// `…`). A changed name can never equal a host id (those have no control
/// characters and at most 253 bytes).
fn bounded(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if out.len() > MAX_NAME_LEN {
        let mut end = MAX_NAME_LEN;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
        out.push('…');
    }
    out
}

fn describe(e: &rustls::Error, client_ca: &Path, operator_ca: Option<&Path>) -> String {
    use rustls::CertificateError as C;
    let cas = match operator_ca {
        None => format!("tls.client_ca {}", client_ca.display()),
        Some(o) => format!(
            "tls.client_ca {} or auth.operator_ca {}",
            client_ca.display(),
            o.display()
        ),
    };
    match e {
        rustls::Error::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => {
            format!("it has expired ({e})")
        }
        rustls::Error::InvalidCertificate(C::NotValidYet | C::NotValidYetContext { .. }) => {
            format!("it is not valid yet; check the clocks ({e})")
        }
        rustls::Error::InvalidCertificate(C::UnknownIssuer) => {
            format!("it is not signed by a CA this coordinator trusts ({cas})")
        }
        rustls::Error::InvalidCertificate(C::BadSignature) => format!(
            "it is not signed by a CA this coordinator trusts: a CA with the same name but \
             another key signed it ({cas})"
        ),
        rustls::Error::InvalidCertificate(C::Revoked) => "it has been revoked".to_owned(),
        _ => format!("{e} (trusted CAs: {cas})"),
    }
}
