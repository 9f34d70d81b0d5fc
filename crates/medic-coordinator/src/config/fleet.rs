//! The fleet-wide part of the configuration: the sections replicas on etcd
//! share ([`FLEET_SECTIONS`]), read from a fleet config file and applied
//! over a replica's own file.

use medic_policy::PolicyConfig;
use medic_policy::config::{ConfigErrors, Errors};

use super::parse::errs_into_vec;
use super::{AuditConfig, CoordinatorConfig, NotifyConfig};

/// The top-level sections that are fleet-wide: with `[store] kind =
/// "etcd"` they live in etcd (`medic-coordinator config push`), so that
/// replicas cannot disagree on limits; each replica's own file holds the
/// rest (`server`, `tls`, `auth`, `store`), which name its addresses and
/// files.
pub const FLEET_SECTIONS: [&str; 9] = [
    "mode",
    "fleet",
    "breaker",
    "actions",
    "limits",
    "idempotency",
    "audit",
    "notify",
    "gates",
];

/// The fleet-wide part of the configuration (see [`FLEET_SECTIONS`]), as
/// pushed to etcd for replicated coordinators.
#[derive(Clone, Debug, PartialEq)]
pub struct FleetConfig {
    /// The rules' limits.
    pub policy: PolicyConfig,
    /// Audit history settings.
    pub audit: AuditConfig,
    /// Webhook notifications.
    pub notify: NotifyConfig,
}

impl FleetConfig {
    /// Reads and validates a fleet config file: only the fleet-wide
    /// sections, each checked as in `coordinator.toml`.
    pub fn from_toml(text: &str) -> Result<Self, ConfigErrors> {
        let mut table = match text.parse::<toml::Table>() {
            Ok(t) => t,
            // The full parser words syntax errors with their line.
            Err(e) => {
                return Err(CoordinatorConfig::from_toml(text).err().unwrap_or_else(|| {
                    ConfigErrors(vec![medic_policy::ConfigError {
                        path: String::new(),
                        message: e.to_string(),
                    }])
                }));
            }
        };
        let mut errs = Errors::default();
        table.retain(|key, _| {
            let fleet = FLEET_SECTIONS.contains(&key);
            if !fleet {
                errs.push(
                    key,
                    format!(
                        "is not fleet-wide: each replica sets [{key}] in its own \
                         coordinator.toml. A fleet config holds only {}",
                        FLEET_SECTIONS.join(", ")
                    ),
                );
            }
            fleet
        });
        let mut all = errs_into_vec(errs);
        // Only the fleet sections are validated: the others are refused
        // above, whatever they hold.
        match CoordinatorConfig::from_toml(&table.to_string()) {
            Err(e) => {
                all.extend(e.0);
                Err(ConfigErrors(all))
            }
            Ok(_) if !all.is_empty() => Err(ConfigErrors(all)),
            Ok(c) => Ok(FleetConfig {
                policy: c.policy,
                audit: c.audit,
                notify: c.notify,
            }),
        }
    }
}

impl CoordinatorConfig {
    /// This replica's config with the fleet-wide part replaced by `fleet`
    /// (etcd revision `revision`; `None`: nothing pushed yet, `fleet` is
    /// the defaults).
    pub fn with_fleet(mut self, fleet: FleetConfig, revision: Option<i64>) -> Self {
        self.policy = fleet.policy;
        self.audit = fleet.audit;
        self.notify = fleet.notify;
        self.fleet_revision = revision;
        self
    }
}
