//! Reloads: where a running coordinator reads its configuration again
//! ([`ConfigSource`]), and which settings only a restart can change.

use std::path::PathBuf;
use std::sync::Arc;

use super::CoordinatorConfig;

/// Where a running coordinator reads its configuration again: on SIGHUP,
/// on `medicctl reload`, and (replicas on etcd) when elected.
pub trait ConfigSource: Send + Sync + std::fmt::Debug {
    /// Reads and validates the whole configuration. May block: it reads
    /// files, and etcd.
    fn load(&self) -> Result<CoordinatorConfig, Vec<medic_policy::ConfigError>>;
}

/// [`ConfigSource::load`] on a blocking thread: it reads files and etcd.
pub async fn load_blocking(
    source: &Arc<dyn ConfigSource>,
) -> Result<CoordinatorConfig, Vec<medic_policy::ConfigError>> {
    let source = source.clone();
    tokio::task::spawn_blocking(move || source.load())
        .await
        .unwrap_or_else(|e| {
            Err(vec![medic_policy::ConfigError {
                path: String::new(),
                message: format!("the task reading the configuration failed: {e}"),
            }])
        })
}

/// A single coordinator's config file; `None` when it runs on the embedded
/// defaults, which leaves nothing to re-read.
#[derive(Debug)]
pub struct FileSource(pub Option<PathBuf>);

impl ConfigSource for FileSource {
    fn load(&self) -> Result<CoordinatorConfig, Vec<medic_policy::ConfigError>> {
        match &self.0 {
            None => Err(vec![medic_policy::ConfigError {
                path: String::new(),
                message: "the coordinator was started without a config file; nothing to reload"
                    .to_owned(),
            }]),
            Some(path) => CoordinatorConfig::load(path).map_err(|e| e.0),
        }
    }
}

impl CoordinatorConfig {
    /// The errors a reload to `new` would have beyond validation: settings
    /// that only a restart can change.
    pub fn reload_errors(&self, new: &CoordinatorConfig) -> Vec<medic_policy::ConfigError> {
        let mut out = Vec::new();
        let mut fixed = |path: &str, old: String, new: String| {
            if old != new {
                out.push(medic_policy::ConfigError {
                    path: path.to_owned(),
                    message: format!(
                        "cannot change on reload (running with {old}, file says {new}); restart the coordinator"
                    ),
                });
            }
        };
        fixed(
            "server.listen",
            self.server.listen.to_string(),
            new.server.listen.to_string(),
        );
        fixed(
            "server.metrics_listen",
            self.server.metrics_listen.to_string(),
            new.server.metrics_listen.to_string(),
        );
        fixed(
            "tls",
            if self.tls.is_some() { "TLS" } else { "no TLS" }.to_owned(),
            if new.tls.is_some() { "TLS" } else { "no TLS" }.to_owned(),
        );
        fixed(
            "server.insecure",
            self.server.insecure.to_string(),
            new.server.insecure.to_string(),
        );
        fixed(
            "server.max_message_bytes",
            self.server.max_message_bytes.to_string(),
            new.server.max_message_bytes.to_string(),
        );
        for (key, old, new) in [
            (
                "server.max_connections",
                self.server.max_connections,
                new.server.max_connections,
            ),
            (
                "server.max_connections_per_address",
                self.server.max_connections_per_address,
                new.server.max_connections_per_address,
            ),
        ] {
            fixed(key, old.to_string(), new.to_string());
        }
        fixed(
            "server.idle_timeout",
            humantime::format_duration(self.server.idle_timeout).to_string(),
            humantime::format_duration(new.server.idle_timeout).to_string(),
        );
        fixed(
            "server.request_timeout",
            humantime::format_duration(self.server.request_timeout).to_string(),
            humantime::format_duration(new.server.request_timeout).to_string(),
        );
        fixed(
            "store",
            format!("{:?}", self.store),
            format!("{:?}", new.store),
        );
        fixed(
            "server.state_dir",
            self.server.state_dir.display().to_string(),
            new.server.state_dir.display().to_string(),
        );
        out
    }
}
