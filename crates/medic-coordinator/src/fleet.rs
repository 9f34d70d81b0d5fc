//! Fleet-wide configuration in etcd, for replicated coordinators.
//!
//! With `[store] kind = "etcd"`, each replica's `coordinator.toml` holds only
//! what is its own (`[server]`, `[tls]`, `[auth]`, `[store]`: addresses and
//! files), and the sections that set limits ([`FLEET_SECTIONS`]) live once,
//! in etcd, at `PREFIX/config/fleet`: replicas cannot disagree on limits,
//! because there is one copy. An operator validates and stores it with
//! `medic-coordinator config push --config coordinator.toml fleet.toml`
//! ([`push`]); every replica re-reads it on SIGHUP (the leader applies it,
//! a follower validates it and keeps it for when it is elected; `medicctl
//! reload` reaches only the leader), and a replica elected later reads it
//! when elected. Until a config is pushed,
//! the embedded defaults apply, and the replicas say so in their logs and
//! in `medic_fleet_config_revision` (0).
//!
//! The text is stored as pushed (comments included), so `config show`
//! prints what the operator wrote; it is validated again by every replica
//! that reads it, and a replica keeps its last valid configuration when a
//! newer medic pushed something it does not understand.

use std::path::PathBuf;
use std::sync::Arc;

use medic_policy::ConfigError;
use medic_policy::config::ConfigErrors;
use medic_store::{EtcdConfig, EtcdStore, EtcdTls, StoreError};

use crate::config::{ConfigSource, CoordinatorConfig, EtcdSettings, FleetConfig, StoreConfig};

pub use crate::config::FLEET_SECTIONS;

/// Why a fleet config could not be pushed or read.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// The fleet config file is invalid: every problem, with its key path.
    #[error("{0}")]
    Invalid(ConfigErrors),
    /// The replica's config does not use etcd.
    #[error(
        "the replica config has [store] kind = \"embedded\": a fleet config is for replicated \
         coordinators on etcd (a single coordinator reads everything from its own file)"
    )]
    NotReplicated,
    /// etcd refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The TLS files for etcd could not be read.
    #[error("store.tls: {0}")]
    Tls(String),
}

/// The store settings for `settings`, with `[store.tls]` read.
pub fn etcd_config(settings: &EtcdSettings) -> Result<EtcdConfig, String> {
    let mut config = EtcdConfig::new(settings.endpoints.clone(), settings.prefix.clone());
    // A request to etcd may not outlast half the lease (1 s to 5 s): a
    // leader whose write hangs longer is as good as one without a lease,
    // and a member that stopped answering is left for the next one while
    // the lease still holds.
    config.request_timeout = etcd_request_timeout(settings.lease_ttl);
    config.connect_timeout = config.request_timeout;
    if let Some(t) = &settings.tls {
        let ca_pem =
            std::fs::read(&t.ca).map_err(|e| format!("cannot read ca {}: {e}", t.ca.display()))?;
        let identity = match (&t.cert, &t.key) {
            (Some(cert), Some(key)) => Some((
                std::fs::read(cert)
                    .map_err(|e| format!("cannot read cert {}: {e}", cert.display()))?,
                medic_proto::secret_file::read(key)?,
            )),
            _ => None,
        };
        config.tls = Some(EtcdTls {
            ca_pem,
            identity,
            server_name: t.server_name.clone(),
        });
    }
    Ok(config)
}

/// The time one etcd request may take for a replica with `lease_ttl`:
/// half of it, at least 1 s and at most 5 s.
pub fn etcd_request_timeout(lease_ttl: std::time::Duration) -> std::time::Duration {
    (lease_ttl / 2).clamp(
        std::time::Duration::from_secs(1),
        std::time::Duration::from_secs(5),
    )
}

/// Connects to the etcd of a replica's config (blocking); with `create`
/// false, only to a deployment whose state exists already.
pub fn connect(replica: &CoordinatorConfig, create: bool) -> Result<EtcdStore, FleetError> {
    let StoreConfig::Etcd(settings) = &replica.store else {
        return Err(FleetError::NotReplicated);
    };
    let mut config = etcd_config(settings).map_err(FleetError::Tls)?;
    config.create = create;
    Ok(EtcdStore::connect(&config)?)
}

/// Validates `fleet_toml` and stores it as the fleet config of `replica`'s
/// deployment; returns the etcd revision of the write. Blocking: from async
/// code, call it in `spawn_blocking`.
pub fn push(replica: &CoordinatorConfig, fleet_toml: &str) -> Result<i64, FleetError> {
    push_expecting(replica, fleet_toml, None, true)
}

/// [`push`], only if the stored config is still at revision `expected` (0:
/// none pushed yet): two operators pushing at once cannot undo each other
/// unknowingly. With `create` false, only into a deployment whose state
/// exists (a mistyped prefix is an error).
pub fn push_expecting(
    replica: &CoordinatorConfig,
    fleet_toml: &str,
    expected: Option<i64>,
    create: bool,
) -> Result<i64, FleetError> {
    FleetConfig::from_toml(fleet_toml).map_err(FleetError::Invalid)?;
    let store = connect(replica, create)?;
    Ok(store.put_fleet_config(fleet_toml, expected)?)
}

/// The stored fleet config's text and revision, `None` if none was pushed.
pub fn show(replica: &CoordinatorConfig) -> Result<Option<(String, i64)>, FleetError> {
    Ok(connect(replica, false)?.fleet_config()?)
}

/// A replica's configuration: its own file (or, without one, the config it
/// started with) and the fleet config in etcd.
#[derive(Debug)]
pub struct ReplicatedSource {
    /// The replica's file.
    pub path: Option<PathBuf>,
    /// Used when there is no file (tests, embedding).
    pub replica: CoordinatorConfig,
    /// Where the fleet config is.
    pub store: Arc<EtcdStore>,
}

/// Why [`ReplicatedSource::read`] found no configuration to use.
#[derive(Debug)]
pub enum ReadError {
    /// etcd could not be read.
    Store(StoreError),
    /// The replica's own file is invalid.
    Replica(Vec<ConfigError>),
    /// The fleet config in etcd is invalid (for this build); each error's
    /// path names its etcd revision.
    Fleet(Vec<ConfigError>),
}

impl ReadError {
    /// As config errors, for reloads.
    pub fn into_errors(self) -> Vec<ConfigError> {
        match self {
            ReadError::Store(e) => vec![ConfigError {
                path: String::new(),
                message: format!("cannot read the fleet config from etcd: {e}"),
            }],
            ReadError::Replica(errors) | ReadError::Fleet(errors) => errors,
        }
    }
}

impl ReplicatedSource {
    /// [`ConfigSource::load`], telling apart where it failed: at start-up
    /// an unreachable etcd or an unusable fleet config is retried (exit 1),
    /// an error in the replica's own file is not (exit 78).
    pub fn read(&self) -> Result<CoordinatorConfig, ReadError> {
        let fleet = self.store.fleet_config().map_err(ReadError::Store)?;
        let replica = match &self.path {
            Some(p) => CoordinatorConfig::load(p).map_err(|e| ReadError::Replica(e.0))?,
            None => self.replica.clone(),
        };
        match fleet {
            None => {
                tracing::warn!(
                    "no fleet config was pushed to etcd: the embedded defaults apply; push one \
                     with `medic-coordinator config push`"
                );
                FleetConfig::from_toml("")
                    .map(|defaults| replica.with_fleet(defaults, None))
                    .map_err(|e| ReadError::Fleet(e.0))
            }
            Some((text, revision)) => match FleetConfig::from_toml(&text) {
                Ok(fleet) => Ok(replica.with_fleet(fleet, Some(revision))),
                Err(e) => Err(ReadError::Fleet(
                    e.0.into_iter()
                        .map(|e| ConfigError {
                            path: format!(
                                "fleet config (etcd revision {revision}){}{}",
                                if e.path.is_empty() { "" } else { " " },
                                e.path
                            ),
                            message: e.message,
                        })
                        .collect(),
                )),
            },
        }
    }
}

impl ConfigSource for ReplicatedSource {
    fn load(&self) -> Result<CoordinatorConfig, Vec<ConfigError>> {
        self.read().map_err(ReadError::into_errors)
    }
}
