//! `coordinator.toml`: the server's own settings plus the policy sections of
//! medic-policy, validated together so `check-config` and reloads report
//! every error of the file at once, each with its key path.
//!
//! One file per section: each holds the section's raw form (as serde reads
//! it), its validated form and the step between them. This file holds the
//! whole file's forms; `parse` the helpers the sections share.

mod audit;
mod auth;
mod fleet;
mod notify;
mod parse;
mod reload;
mod server;
mod store;
mod tls;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use medic_policy::config::{
    ConfigErrors, Errors, RawActionDecl, RawBreaker, RawFleet, RawGate, RawIdempotency, RawLimits,
    parse_toml,
};
use medic_policy::{PolicyConfig, RawPolicy};
use serde::Deserialize;

use crate::auth::AuthConfig;
use crate::tls::TlsMaterial;
use audit::RawAudit;
use auth::RawAuth;
use notify::RawNotify;
use parse::errs_into_vec;
use server::RawServer;
use store::RawStore;
use tls::{RawTls, check_transport};

pub use audit::{AuditConfig, MAX_DENIAL_SAMPLE_INTERVAL};
pub use fleet::{FLEET_SECTIONS, FleetConfig};
pub use notify::{
    MAX_WEBHOOK_ATTEMPTS, MAX_WEBHOOK_TIMEOUT, MIN_HMAC_KEY, NotifyConfig, NotifyKind, Secret,
    Webhook, WebhookFormat,
};
pub use reload::{ConfigSource, FileSource, load_blocking};
pub use server::{
    Admission, MAX_CONNECTIONS, MAX_IDLE_TIMEOUT, MAX_REQUEST_TIMEOUT, MAX_SHUTDOWN_GRACE,
    MAX_TICK_INTERVAL, MAX_WATCH_STREAMS, MIN_TICK_INTERVAL, ServerConfig,
};
pub use store::{EtcdSettings, EtcdTlsFiles, StoreConfig};
pub use tls::TransportSecurity;

/// The whole file, as written.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
struct RawCoordinator {
    server: RawServer,
    tls: Option<RawTls>,
    auth: RawAuth,
    audit: RawAudit,
    notify: RawNotify,
    store: RawStore,
    // The policy sections (see medic-policy's config module).
    mode: Option<String>,
    fleet: RawFleet,
    breaker: RawBreaker,
    actions: BTreeMap<String, RawActionDecl>,
    limits: BTreeMap<String, RawLimits>,
    idempotency: RawIdempotency,
    gates: Vec<RawGate>,
}

/// The validated configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct CoordinatorConfig {
    /// Server settings.
    pub server: ServerConfig,
    /// `[tls]` with its files loaded; `None`: plaintext (loopback, or
    /// `server.insecure`).
    pub tls: Option<Arc<TlsMaterial>>,
    /// `[auth]`: who may call what.
    pub auth: AuthConfig,
    /// Audit history settings.
    pub audit: AuditConfig,
    /// Webhook notifications.
    pub notify: NotifyConfig,
    /// `[store]`: where the durable state lives.
    pub store: StoreConfig,
    /// The rules' limits.
    pub policy: PolicyConfig,
    /// With `[store] kind = "etcd"`: the etcd revision of the fleet config
    /// in force (`policy`, `audit`, `notify` come from it), `None` while
    /// none was ever pushed (the embedded defaults apply). Always `None`
    /// for the embedded store, whose file holds everything.
    pub fleet_revision: Option<i64>,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        match CoordinatorConfig::from_toml("") {
            Ok(c) => c,
            // Pinned by the test `embedded_defaults_are_valid`.
            Err(e) => panic!("embedded coordinator defaults are invalid: {e}"),
        }
    }
}

impl CoordinatorConfig {
    /// Reads and validates a whole `coordinator.toml`.
    pub fn from_toml(text: &str) -> Result<Self, ConfigErrors> {
        let mut errs = Errors::default();
        let Some(raw) = parse_toml::<RawCoordinator>(text, &mut errs) else {
            return Err(ConfigErrors(errs_into_vec(errs)));
        };
        let policy = RawPolicy {
            mode: raw.mode.clone(),
            fleet: raw.fleet.clone(),
            breaker: raw.breaker.clone(),
            actions: raw.actions.clone(),
            limits: raw.limits.clone(),
            idempotency: raw.idempotency.clone(),
            gates: raw.gates.clone(),
        }
        .validate_into(&mut errs, "");
        let server = raw.server.validate(&mut errs);
        let auth = raw.auth.validate(&mut errs);
        let tls = match &raw.tls {
            None => {
                if raw.auth.operator_ca.is_some() {
                    errs.push(
                        "auth.operator_ca",
                        "needs [tls]: operators are identified by TLS client certificates",
                    );
                }
                None
            }
            Some(t) => t
                .validate(&mut errs, auth.operator_ca.as_deref())
                .map(Arc::new),
        };
        check_transport(&mut errs, &server, raw.tls.is_some());
        if raw.server.idle_timeout.is_some()
            && server.idle_timeout <= policy.fleet.heartbeat_interval
        {
            errs.push(
                "server.idle_timeout",
                format!(
                    "must be longer than fleet.heartbeat_interval ({}), got {}; agents would be \
                     cut off between heartbeats",
                    humantime::format_duration(policy.fleet.heartbeat_interval),
                    humantime::format_duration(server.idle_timeout)
                ),
            );
        }
        let audit = raw.audit.validate(&mut errs);
        let notify = raw.notify.validate(&mut errs);
        let store = raw.store.validate(&mut errs);
        if matches!(store, StoreConfig::Etcd(_))
            && let Ok(table) = text.parse::<toml::Table>()
        {
            for key in FLEET_SECTIONS {
                if table.contains_key(key) {
                    errs.push(
                        key,
                        "is fleet-wide with [store] kind = \"etcd\": replicas share it through \
                         etcd so that they cannot disagree. Move it to a fleet config file and \
                         push that with `medic-coordinator config push`",
                    );
                }
            }
        }
        errs.finish(Self {
            server,
            tls,
            auth,
            audit,
            notify,
            store,
            policy,
            fleet_revision: None,
        })
    }

    /// Reads and validates a file. I/O errors are reported like config
    /// errors, naming the file.
    pub fn load(path: &Path) -> Result<Self, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![medic_policy::ConfigError {
                path: String::new(),
                message: format!("cannot read {}: {e}", path.display()),
            }])
        })?;
        Self::from_toml(&text)
    }

    /// Reads only the `[store]` section of a file (the rest defaults):
    /// what tools that reach a deployment's etcd need, without the
    /// replica's own keys and certificates.
    pub fn load_store_section(path: &Path) -> Result<Self, ConfigErrors> {
        let fail = |message: String| {
            ConfigErrors(vec![medic_policy::ConfigError {
                path: String::new(),
                message,
            }])
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| fail(format!("cannot read {}: {e}", path.display())))?;
        let mut table = match text.parse::<toml::Table>() {
            Ok(t) => t,
            Err(_) => return Self::from_toml(&text),
        };
        table.retain(|key, _| key == "store");
        Self::from_toml(&table.to_string())
    }

    /// What this build cannot do of what the config asks: a file is valid
    /// or not whatever the build, but `store.kind = "etcd"` needs a
    /// coordinator built with the `etcd` feature. `check-config` and `run`
    /// report these like config errors.
    pub fn build_errors(&self) -> Vec<medic_policy::ConfigError> {
        let mut out = Vec::new();
        if matches!(self.store, StoreConfig::Etcd(_)) && !cfg!(feature = "etcd") {
            out.push(medic_policy::ConfigError {
                path: "store.kind".to_owned(),
                message: "\"etcd\" needs a medic-coordinator built with the `etcd` feature \
                          (cargo build --features etcd); this one has only the embedded store"
                    .to_owned(),
            });
        }
        out
    }

    /// The actions' caps and rates, for summaries.
    pub fn limits_summary(&self) -> String {
        let p = &self.policy;
        let caps: Vec<String> = p
            .actions()
            .map(|a| {
                let l = p.limits(a);
                format!(
                    "{a} max {}{} rate {}/{}+{}",
                    l.max_in_flight,
                    l.max_in_flight_percent
                        .map(|x| format!(" ({x}%)"))
                        .unwrap_or_default(),
                    l.rate.count,
                    humantime::format_duration(l.rate.per),
                    l.rate.burst
                )
            })
            .collect();
        caps.join(", ")
    }

    /// A one-line summary for `check-config` and logs.
    pub fn summary(&self) -> String {
        let p = &self.policy;
        format!(
            "mode {}, listen {} ({}), metrics {}, state {}, {}",
            if p.dry_run { "dry-run" } else { "enforce" },
            self.server.listen,
            self.transport_summary(),
            self.server.metrics_listen,
            match &self.store {
                StoreConfig::Embedded => self.server.state_dir.display().to_string(),
                StoreConfig::Etcd(e) => format!(
                    "etcd {} at {} (advertised as {}), fleet config {}",
                    e.prefix,
                    e.endpoints.join(","),
                    e.advertise,
                    self.fleet_revision.map_or_else(
                        || "not from etcd (embedded defaults)".to_owned(),
                        |r| format!("etcd revision {r}")
                    )
                ),
            },
            self.limits_summary()
        )
    }
}
