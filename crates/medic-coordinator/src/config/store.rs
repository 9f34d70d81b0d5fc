//! `[store]`: the embedded store, or etcd for replicated coordinators
//! (endpoints, prefix, lease, advertised address and `[store.tls]`).

use std::path::PathBuf;
use std::time::Duration;

use medic_policy::config::Errors;
use serde::Deserialize;

use super::parse::url_error;

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawStore {
    kind: Option<String>,
    endpoints: Option<Vec<String>>,
    prefix: Option<String>,
    lease_ttl: Option<String>,
    advertise: Option<String>,
    tls: Option<RawEtcdTls>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
struct RawEtcdTls {
    ca: Option<String>,
    cert: Option<String>,
    key: Option<String>,
    server_name: Option<String>,
}

/// `[store]`: where the durable state lives. Restart-only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreConfig {
    /// One coordinator, state in a redb file in `server.state_dir`
    /// (`kind = "embedded"`, the default).
    Embedded,
    /// Replicated coordinators on etcd (`kind = "etcd"`): one leader
    /// grants, the others redirect callers to it.
    Etcd(EtcdSettings),
}

/// `[store]` with `kind = "etcd"`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdSettings {
    /// etcd client URLs (`http://10.0.0.1:2379`). Required.
    pub endpoints: Vec<String>,
    /// Key prefix of this deployment: replicas of one fleet share it, two
    /// fleets on one etcd need two. Default `/medic`.
    pub prefix: String,
    /// The leader's lease: a leader that dies is replaced after at most
    /// this long (plus the new leader's warm-up). Whole seconds, 2s to
    /// 60s. Default 10s.
    pub lease_ttl: Duration,
    /// This replica's gRPC URL as agents reach it; followers hand it to
    /// callers as the leader's address, and agents follow it only if it is
    /// one of their configured `coordinators`. Required.
    pub advertise: String,
    /// `[store.tls]`: TLS to etcd, required with `https://` endpoints.
    pub tls: Option<EtcdTlsFiles>,
}

/// `[store.tls]`: the files for TLS to etcd, checked when the config is
/// loaded and read again when connecting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdTlsFiles {
    /// CA certificate(s) etcd's server certificates chain to, PEM.
    pub ca: PathBuf,
    /// Client certificate for etcd's `--client-cert-auth`, PEM.
    pub cert: Option<PathBuf>,
    /// Its private key, PEM, mode 0600 (or root-owned 0640).
    pub key: Option<PathBuf>,
    /// The name etcd's certificate must carry, when it is not the
    /// endpoints' host.
    pub server_name: Option<String>,
}

impl RawEtcdTls {
    fn validate(&self, errs: &mut Errors) -> Option<EtcdTlsFiles> {
        let path = |v: &Option<String>| v.as_deref().filter(|p| !p.is_empty()).map(PathBuf::from);
        let Some(ca) = path(&self.ca) else {
            errs.push(
                "store.tls.ca",
                "is required with [store.tls]: the CA of etcd's server certificates, PEM",
            );
            return None;
        };
        let (cert, key) = (path(&self.cert), path(&self.key));
        if cert.is_some() != key.is_some() {
            errs.push(
                if cert.is_some() {
                    "store.tls.key"
                } else {
                    "store.tls.cert"
                },
                "store.tls.cert and store.tls.key go together: the client certificate \
                 etcd's --client-cert-auth asks for, and its private key",
            );
            return None;
        }
        let before = errs.len();
        crate::tls::check_client_files(
            errs,
            ("store.tls.ca", &ca),
            cert.as_deref()
                .zip(key.as_deref())
                .map(|(c, k)| (("store.tls.cert", c), ("store.tls.key", k))),
        );
        if let Some(name) = &self.server_name
            && rustls::pki_types::ServerName::try_from(name.as_str()).is_err()
        {
            errs.push(
                "store.tls.server_name",
                format!("{name:?} is not a DNS name or IP address"),
            );
        }
        (errs.len() == before).then_some(EtcdTlsFiles {
            ca,
            cert,
            key,
            server_name: self.server_name.clone(),
        })
    }
}

impl RawStore {
    pub(super) fn validate(&self, errs: &mut Errors) -> StoreConfig {
        match self.kind.as_deref() {
            None | Some("embedded") => {
                for (key, set) in [
                    ("endpoints", self.endpoints.is_some()),
                    ("prefix", self.prefix.is_some()),
                    ("lease_ttl", self.lease_ttl.is_some()),
                    ("advertise", self.advertise.is_some()),
                    ("tls", self.tls.is_some()),
                ] {
                    if set {
                        errs.push(
                            format!("store.{key}"),
                            "is only used with kind = \"etcd\" (the embedded store lives in \
                             server.state_dir)",
                        );
                    }
                }
                StoreConfig::Embedded
            }
            Some("etcd") => {
                let endpoints = self.endpoints.clone().unwrap_or_default();
                if endpoints.is_empty() {
                    errs.push(
                        "store.endpoints",
                        "is required with kind = \"etcd\": the etcd members' client URLs, \
                         for example [\"http://10.0.0.1:2379\"]",
                    );
                }
                for (i, e) in endpoints.iter().enumerate() {
                    if let Some(m) = url_error(e, true) {
                        errs.push(format!("store.endpoints[{i}]"), m);
                    }
                }
                let https = endpoints
                    .iter()
                    .filter(|e| e.starts_with("https://"))
                    .count();
                if https > 0 && https < endpoints.len() {
                    errs.push(
                        "store.endpoints",
                        "mixes http:// and https://: every etcd member is reached the same way",
                    );
                }
                let tls = match (&self.tls, https > 0) {
                    (None, true) => {
                        errs.push(
                            "store.tls",
                            "is required with https:// endpoints: at least `ca`, the CA of \
                             etcd's server certificates",
                        );
                        None
                    }
                    (Some(_), false) if !endpoints.is_empty() => {
                        errs.push(
                            "store.tls",
                            "is set but the endpoints are http://: write them as https:// \
                             (or remove [store.tls])",
                        );
                        None
                    }
                    (Some(t), _) => t.validate(errs),
                    (None, false) => None,
                };
                let prefix = self.prefix.clone().unwrap_or_else(|| "/medic".to_owned());
                if !prefix.starts_with('/') || prefix.trim_end_matches('/').is_empty() {
                    errs.push(
                        "store.prefix",
                        format!("must start with \"/\" and name something, got {prefix:?}"),
                    );
                }
                let lease_ttl = errs.positive_duration(
                    "store.lease_ttl",
                    self.lease_ttl.as_deref(),
                    Duration::from_secs(10),
                );
                if !lease_ttl.is_zero()
                    && (lease_ttl.subsec_nanos() != 0
                        || lease_ttl < Duration::from_secs(2)
                        || lease_ttl > Duration::from_secs(60))
                {
                    errs.push(
                        "store.lease_ttl",
                        "must be whole seconds from 2s (etcd's shortest lease) to 60s (how long \
                         the fleet may wait for a new leader)",
                    );
                }
                let advertise = match self.advertise.as_deref() {
                    None | Some("") => {
                        errs.push(
                            "store.advertise",
                            "is required with kind = \"etcd\": this replica's gRPC URL as \
                             agents reach it (one of their coordinators), for example \
                             \"https://coord-1.example.net:7470\"",
                        );
                        String::new()
                    }
                    Some(a) => {
                        if let Some(m) = url_error(a, true) {
                            errs.push("store.advertise", m);
                        }
                        a.to_owned()
                    }
                };
                StoreConfig::Etcd(EtcdSettings {
                    endpoints,
                    prefix,
                    lease_ttl,
                    advertise,
                    tls,
                })
            }
            Some(other) => {
                errs.push(
                    "store.kind",
                    format!("must be \"embedded\" or \"etcd\", got {other:?}"),
                );
                StoreConfig::Embedded
            }
        }
    }
}
