//! `[tls]` (its files are loaded by [`TlsMaterial::load`]) and how the gRPC
//! port is protected: mutual TLS, or plaintext on loopback or knowingly
//! (`server.insecure`).

use std::path::{Path, PathBuf};

use medic_policy::config::Errors;
use serde::Deserialize;

use super::{CoordinatorConfig, ServerConfig};
use crate::tls::TlsMaterial;

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawTls {
    cert: Option<String>,
    key: Option<String>,
    client_ca: Option<String>,
}

/// How the gRPC port is protected, as `medicctl status` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportSecurity {
    /// TLS, with client certificates for agents and operators.
    MutualTls,
    /// Plaintext on a loopback address.
    PlaintextLoopback,
    /// Plaintext on a non-loopback address (`server.insecure = true`).
    Insecure,
}

impl CoordinatorConfig {
    /// How the gRPC port is protected.
    pub fn transport_security(&self) -> TransportSecurity {
        if self.tls.is_some() {
            TransportSecurity::MutualTls
        } else if self.server.listen.ip().is_loopback() {
            TransportSecurity::PlaintextLoopback
        } else {
            TransportSecurity::Insecure
        }
    }

    /// How the gRPC port is protected, in words.
    pub fn transport_summary(&self) -> &'static str {
        match self.transport_security() {
            TransportSecurity::MutualTls => "mutual TLS",
            TransportSecurity::PlaintextLoopback => "plaintext, loopback only",
            TransportSecurity::Insecure => "INSECURE plaintext",
        }
    }
}

/// Plaintext gRPC only on loopback, unless the operator said `insecure`:
/// a remediation API is a fleet-wide reboot button.
pub(super) fn check_transport(errs: &mut Errors, server: &ServerConfig, tls: bool) {
    let loopback = server.listen.ip().is_loopback();
    if tls && server.insecure {
        errs.push(
            "server.insecure",
            "is true but [tls] is configured; remove one (insecure means plaintext)",
        );
    }
    if !tls && !loopback && !server.insecure {
        errs.push(
            "server.listen",
            format!(
                "{} is not a loopback address, and there is no [tls]: anyone who can reach it \
                 could speak for any host or pause the fleet. Configure [tls] cert, key and \
                 client_ca (`medic-coordinator dev-certs --out DIR --hosts ...` makes a test set), \
                 or listen on 127.0.0.1, or set server.insecure = true to accept the risk",
                server.listen
            ),
        );
    }
}

impl RawTls {
    pub(super) fn validate(
        &self,
        errs: &mut Errors,
        operator_ca: Option<&Path>,
    ) -> Option<TlsMaterial> {
        let mut path = |key: &str, v: &Option<String>, what: &str| match v.as_deref() {
            None | Some("") => {
                errs.push(
                    format!("tls.{key}"),
                    format!("is required with [tls] ({what})"),
                );
                None
            }
            Some(p) => Some(PathBuf::from(p)),
        };
        let cert = path(
            "cert",
            &self.cert,
            "the coordinator's certificate chain, PEM",
        );
        let key = path("key", &self.key, "its private key, PEM, mode 0600");
        let client_ca = path(
            "client_ca",
            &self.client_ca,
            "the CA that signs agents' (and operators') client certificates, PEM",
        );
        TlsMaterial::load(errs, &cert?, &key?, &client_ca?, operator_ca)
    }
}
