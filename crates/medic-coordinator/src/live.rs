//! The configuration in force, and everything outside the engine that
//! follows it: admission limits, the metrics that describe the config, the
//! certificate the TLS acceptor serves.
//!
//! Every way a configuration comes into force goes through
//! [`Live::install`]: the file read at start, SIGHUP, `Admin.ReloadConfig`,
//! a follower's reload and an election. So no reload path can forget a
//! side effect another one has (`medicctl reload` after a certificate
//! rotation updates the expiry metric exactly as SIGHUP does). What the
//! leader's engine, samplers and notifier take from a new configuration is
//! applied by [`crate::core::Core::reload`], which installs it here too.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use medic_policy::ConfigError;

use crate::admit::Admit;
use crate::config::{ConfigSource, CoordinatorConfig, TransportSecurity};
use crate::metrics::{Metrics, ResultLabel};

/// The configuration in force and where to read it again.
#[derive(Debug)]
pub struct Live {
    config: Mutex<Arc<CoordinatorConfig>>,
    loaded_at: Mutex<SystemTime>,
    source: Arc<dyn ConfigSource>,
    metrics: Arc<Metrics>,
    admit: Admit,
    /// One reload at a time (SIGHUP and `Admin.ReloadConfig` may race), so
    /// the engine's limits and the rest of the config always come from the
    /// same read (I10).
    reloading: tokio::sync::Mutex<()>,
    /// Counts installs: what follows the config outside any call (the
    /// alert gates' evaluators) waits on it.
    installed: tokio::sync::watch::Sender<u64>,
}

impl Live {
    /// `config` in force from `now`, re-read from `source`.
    pub fn new(
        config: CoordinatorConfig,
        source: Arc<dyn ConfigSource>,
        metrics: Arc<Metrics>,
        now: SystemTime,
    ) -> Self {
        let config = Arc::new(config);
        let live = Self {
            admit: Admit::new(config.server.admission),
            config: Mutex::new(config.clone()),
            loaded_at: Mutex::new(now),
            source,
            metrics,
            reloading: tokio::sync::Mutex::new(()),
            installed: tokio::sync::watch::Sender::new(0),
        };
        live.install(config, now);
        live
    }

    /// The configuration in force.
    pub fn current(&self) -> Arc<CoordinatorConfig> {
        lock(&self.config).clone()
    }

    /// When the configuration in force was loaded.
    pub fn loaded_at(&self) -> SystemTime {
        *lock(&self.loaded_at)
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Admission control, with the limits in force.
    pub fn admit(&self) -> &Admit {
        &self.admit
    }

    /// Holds off other reloads until the guard is dropped.
    pub async fn reloading(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.reloading.lock().await
    }

    /// Reads the configuration again and checks it against the one in
    /// force: every error, or the new configuration (not yet in force).
    pub async fn read(&self) -> Result<CoordinatorConfig, Vec<ConfigError>> {
        let new = crate::config::load_blocking(&self.source).await?;
        match self.current().reload_errors(&new) {
            e if e.is_empty() => Ok(new),
            e => Err(e),
        }
    }

    /// Puts `new` in force for everything outside the engine: the one
    /// place a configuration's side effects are applied.
    pub fn install(&self, new: Arc<CoordinatorConfig>, now: SystemTime) {
        self.admit.update(new.server.admission);
        let m = &self.metrics;
        m.dry_run.set(i64::from(new.policy.dry_run));
        m.fleet_config_revision.set(new.fleet_revision.unwrap_or(0));
        m.insecure.set(i64::from(
            new.transport_security() == TransportSecurity::Insecure,
        ));
        m.tls_cert_expiry.set(cert_expiry(&new));
        *lock(&self.config) = new;
        *lock(&self.loaded_at) = now;
        self.installed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Changes whenever a configuration is put in force.
    pub fn installs(&self) -> tokio::sync::watch::Receiver<u64> {
        self.installed.subscribe()
    }

    /// Counts a reload in `medic_config_reloads_total`.
    pub fn count_reload(&self, ok: bool) {
        self.metrics
            .config_reloads
            .get_or_create(&ResultLabel {
                result: if ok { "ok" } else { "error" }.to_owned(),
            })
            .inc();
    }
}

/// When the serving certificate expires, in seconds since the epoch (0
/// without TLS).
fn cert_expiry(config: &CoordinatorConfig) -> i64 {
    config.tls.as_ref().map_or(0, |t| {
        t.not_after
            .duration_since(std::time::SystemTime::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
    })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
