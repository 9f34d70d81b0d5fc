//! `[actions.<name>]`: custom action kinds beside the two built-ins.
//!
//! A custom action (`drain_host`, `reimage`, `clear_cache`, ...) is
//! declared here and limited in `[limits.<name>]` like the built-ins, with
//! conservative defaults (those of `reboot_host`) for whatever is not
//! written. Agents run it as a command under a permit of its kind.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::Errors;
use crate::types::Action;

/// Longest accepted description, in bytes.
pub const MAX_DESCRIPTION: usize = 1024;

/// `[actions.<name>]`, as written.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawActionDecl {
    /// What the action does, for `medicctl status` and `explain`.
    pub description: Option<String>,
}

/// A declared custom action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActionDecl {
    /// The action.
    pub action: Action,
    /// What it does (may be empty).
    pub description: String,
}

/// Validates `[actions]` at `path` (`actions`): each key a valid custom
/// name that is not a built-in's. Returns the declared actions by name.
pub(super) fn validate_actions(
    raw: &BTreeMap<String, RawActionDecl>,
    errs: &mut Errors,
    path: &str,
) -> BTreeMap<Action, ActionDecl> {
    let mut out = BTreeMap::new();
    for (name, decl) in raw {
        let key = format!("{path}.{name}");
        if Action::builtin(name).is_some() {
            errs.push(
                key,
                "is a built-in action; configure it under [limits] instead of declaring it",
            );
            continue;
        }
        let action = match Action::declare(name) {
            Ok(a) => a,
            Err(e) => {
                errs.push(key, e.message);
                continue;
            }
        };
        let description = decl.description.clone().unwrap_or_default();
        if description.len() > MAX_DESCRIPTION {
            errs.push(
                format!("{key}.description"),
                format!(
                    "must be at most {MAX_DESCRIPTION} bytes, got {}",
                    description.len()
                ),
            );
        } else if description.chars().any(|c| c.is_control() && c != '\n') {
            errs.push(
                format!("{key}.description"),
                "must not contain control characters",
            );
        }
        out.insert(
            action,
            ActionDecl {
                action,
                description,
            },
        );
    }
    out
}
