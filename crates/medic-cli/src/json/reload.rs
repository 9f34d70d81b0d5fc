//! `medicctl reload`, and the config errors other outputs show.

use medic_proto::pb::v1 as pb;
use serde::Serialize;

/// `medicctl reload`.
#[derive(Debug, Clone, Serialize)]
pub struct Reload {
    /// Whether the new configuration is in force.
    pub applied: bool,
    /// Every error found, when not.
    pub errors: Vec<ConfigError>,
}

/// One invalid setting.
#[derive(Debug, Clone, Serialize)]
pub struct ConfigError {
    /// Its key path (`limits.reboot_host.cooldown`); empty for the file as
    /// a whole.
    pub key: String,
    /// What is wrong, and what would be accepted.
    pub message: String,
}

impl From<&pb::ConfigError> for ConfigError {
    fn from(e: &pb::ConfigError) -> Self {
        ConfigError {
            key: e.key.clone(),
            message: e.message.clone(),
        }
    }
}
