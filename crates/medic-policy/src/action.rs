//! Remediation kinds: the two built-ins and the custom actions SREs declare
//! in the coordinator's `[actions.<name>]`.
//!
//! [`Action`] is `Copy` and cheap to compare because every custom name is
//! interned once per process: the engine, the store and the metrics pass
//! actions around by value on every decision. Each action gets a dense
//! process-wide [`Action::index`] (0 and 1 for the built-ins, then custom
//! names in the order the process first met them) so per-action state can
//! live in vectors ([`PerAction`]). Indices are never persisted or shown:
//! what is written and printed is the name.
//!
//! Interning never frees, so what may intern is bounded:
//! - names from configuration and the state file ([`Action::declare`]),
//!   bounded by what an SRE wrote;
//! - names from the wire ([`Action::from_wire`]), at most
//!   [`MAX_WIRE_ACTIONS`] distinct ones per process, so a caller sending
//!   random names cannot grow memory without bound; past that, a name no
//!   one declared is refused.

use std::collections::HashMap;
use std::fmt;
use std::sync::{OnceLock, RwLock};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::InvalidInput;

/// Longest custom action name, in bytes.
pub const MAX_ACTION_NAME: usize = 63;

/// Distinct names the wire may intern beyond the declared ones.
pub const MAX_WIRE_ACTIONS: usize = 1024;

/// A remediation kind. Each has its own limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    /// Restart one job on the host.
    RestartJob,
    /// Reboot the whole host.
    RebootHost,
    /// An action declared in the coordinator's configuration
    /// (`drain_host`, `reimage`, ...), run by the agent as a command.
    Custom(CustomAction),
}

/// An interned custom action name. Compares and orders by name.
#[derive(Clone, Copy)]
pub struct CustomAction {
    name: &'static str,
    index: u32,
}

impl PartialEq for CustomAction {
    fn eq(&self, other: &Self) -> bool {
        self.index == other.index
    }
}

impl Eq for CustomAction {}

impl std::hash::Hash for CustomAction {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.index.hash(state);
    }
}

impl PartialOrd for CustomAction {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for CustomAction {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.name.cmp(other.name)
    }
}

impl fmt::Debug for CustomAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.name)
    }
}

#[derive(Default)]
struct Interner {
    by_name: HashMap<&'static str, u32>,
    from_wire: usize,
}

/// Read-mostly: every request naming a custom action looks its name up,
/// and only a name seen for the first time writes.
fn interner() -> &'static RwLock<Interner> {
    static INTERNER: OnceLock<RwLock<Interner>> = OnceLock::new();
    INTERNER.get_or_init(RwLock::default)
}

/// Where a name to intern came from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Source {
    Declared,
    Wire,
}

impl Action {
    /// The two built-in actions, in index order.
    pub const BUILTIN: [Action; 2] = [Action::RestartJob, Action::RebootHost];

    /// The action named `name` as configuration or a state file wrote it:
    /// a built-in name or a valid custom name (interned).
    pub fn declare(name: &str) -> Result<Self, InvalidInput> {
        Self::intern(name, Source::Declared)
    }

    /// The action named `name` as a request on the wire carried it. Like
    /// [`Action::declare`], but a name nobody declared in this process
    /// counts against [`MAX_WIRE_ACTIONS`].
    pub fn from_wire(name: &str) -> Result<Self, InvalidInput> {
        Self::intern(name, Source::Wire)
    }

    fn intern(name: &str, source: Source) -> Result<Self, InvalidInput> {
        if let Some(a) = Self::builtin(name) {
            return Ok(a);
        }
        validate_name(name)?;
        {
            let table = interner()
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some((&name, &index)) = table.by_name.get_key_value(name) {
                return Ok(Action::Custom(CustomAction { name, index }));
            }
        }
        let mut table = interner()
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Another thread may have interned it meanwhile.
        if let Some((&name, &index)) = table.by_name.get_key_value(name) {
            return Ok(Action::Custom(CustomAction { name, index }));
        }
        if source == Source::Wire {
            if table.from_wire >= MAX_WIRE_ACTIONS {
                return Err(InvalidInput::new(
                    "action",
                    format!(
                        "unknown action {name:?}: this process has already seen \
                         {MAX_WIRE_ACTIONS} undeclared action names"
                    ),
                ));
            }
            table.from_wire += 1;
        }
        let index = u32::try_from(table.by_name.len() + Self::BUILTIN.len()).unwrap_or(u32::MAX);
        let name: &'static str = Box::leak(name.to_owned().into_boxed_str());
        table.by_name.insert(name, index);
        Ok(Action::Custom(CustomAction { name, index }))
    }

    /// The built-in action named `name`, if it is one.
    pub fn builtin(name: &str) -> Option<Self> {
        Self::BUILTIN.into_iter().find(|a| a.as_str() == name)
    }

    /// Whether this is one of the two built-ins.
    pub fn is_builtin(self) -> bool {
        !matches!(self, Action::Custom(_))
    }

    /// Dense process-wide index for per-action vectors ([`PerAction`]).
    pub fn index(self) -> usize {
        match self {
            Action::RestartJob => 0,
            Action::RebootHost => 1,
            Action::Custom(c) => c.index as usize,
        }
    }

    /// The name used in config keys, messages and metrics (`restart_job`,
    /// `drain_host`).
    pub fn as_str(self) -> &'static str {
        match self {
            Action::RestartJob => "restart_job",
            Action::RebootHost => "reboot_host",
            Action::Custom(c) => c.name,
        }
    }
}

/// A custom name: 1 to [`MAX_ACTION_NAME`] bytes of `a-z`, `0-9` and `_`,
/// starting with a letter, so it fits config keys, metric labels and
/// environment values unquoted.
fn validate_name(name: &str) -> Result<(), InvalidInput> {
    let ok = !name.is_empty()
        && name.len() <= MAX_ACTION_NAME
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        let shown: String = name.chars().take(80).collect();
        Err(InvalidInput::new(
            "action",
            format!(
                "invalid action name {shown:?}: 1 to {MAX_ACTION_NAME} characters of a-z, 0-9 \
                 and _, starting with a letter"
            ),
        ))
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Action {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Action {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Action::declare(&name).map_err(serde::de::Error::custom)
    }
}

/// A value per action, indexed by [`Action::index`]. Actions never touched
/// read as `T::default()`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PerAction<T> {
    slots: Vec<Option<(Action, T)>>,
    default: T,
}

impl<T: Default> Default for PerAction<T> {
    fn default() -> Self {
        Self {
            slots: Vec::new(),
            default: T::default(),
        }
    }
}

impl<T: Default> PerAction<T> {
    /// The value of `action` (the default when never set).
    pub fn get(&self, action: Action) -> &T {
        match self.slots.get(action.index()) {
            Some(Some((_, v))) => v,
            _ => &self.default,
        }
    }

    /// The value of `action`, created at its default when missing.
    pub fn get_mut(&mut self, action: Action) -> &mut T {
        let i = action.index();
        if self.slots.len() <= i {
            self.slots.resize_with(i + 1, || None);
        }
        &mut self.slots[i]
            .get_or_insert_with(|| (action, T::default()))
            .1
    }

    /// Every action ever touched with its value, by index (not in name
    /// order).
    pub fn iter(&self) -> impl Iterator<Item = (Action, &T)> {
        self.slots.iter().flatten().map(|(a, v)| (*a, v))
    }

    /// Every action ever touched with its value, mutably.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (Action, &mut T)> {
        self.slots.iter_mut().flatten().map(|(a, v)| (*a, v))
    }

    /// Every value ever touched.
    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.iter().map(|(_, v)| v)
    }

    /// Every value ever touched, mutably.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.iter_mut().map(|(_, v)| v)
    }
}

impl<T: Default> std::ops::Index<Action> for PerAction<T> {
    type Output = T;
    fn index(&self, action: Action) -> &T {
        self.get(action)
    }
}

impl<T: Default> std::ops::IndexMut<Action> for PerAction<T> {
    fn index_mut(&mut self, action: Action) -> &mut T {
        self.get_mut(action)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn builtin_names_are_the_builtins_not_custom_actions() {
        assert_eq!(Action::declare("restart_job").unwrap(), Action::RestartJob);
        assert_eq!(
            Action::from_wire("reboot_host").unwrap(),
            Action::RebootHost
        );
    }

    #[test]
    fn a_custom_name_is_interned_once_and_compares_by_name() {
        let a = Action::declare("drain_host").unwrap();
        let b = Action::from_wire("drain_host").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.index(), b.index());
        assert!(a.index() >= 2);
        assert_eq!(a.to_string(), "drain_host");
        let c = Action::declare("clear_cache").unwrap();
        assert!(c < a, "orders by name, not by interning order");
        assert!(Action::RebootHost < c, "built-ins come first");
    }

    #[test]
    fn invalid_custom_names_are_refused_naming_the_rule() {
        for bad in [
            "",
            "Drain",
            "1drain",
            "drain-host",
            "drain host",
            &"x".repeat(64),
        ] {
            let err = Action::declare(bad).unwrap_err().to_string();
            assert!(err.contains("invalid action name"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn serde_writes_and_reads_the_name() {
        let a = Action::declare("reimage").unwrap();
        let json = serde_json::to_string(&[Action::RestartJob, a]).unwrap();
        assert_eq!(json, r#"["restart_job","reimage"]"#);
        let back: Vec<Action> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, vec![Action::RestartJob, a]);
    }

    #[test]
    fn per_action_reads_default_for_untouched_actions() {
        let mut m: PerAction<u32> = PerAction::default();
        let a = Action::declare("failover_leader").unwrap();
        assert_eq!(m[a], 0);
        m[a] += 3;
        m[Action::RestartJob] += 1;
        assert_eq!(m[a], 3);
        assert_eq!(m[Action::RebootHost], 0);
        assert_eq!(m.values().sum::<u32>(), 4);
    }
}
