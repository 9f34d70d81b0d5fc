//! Conversions between the wire types of [`pb`](crate::pb::v1) and
//! medic-policy's domain types.
//!
//! Domain → wire is infallible ([`From`]); wire → domain validates
//! ([`TryFrom`], error [`InvalidInput`]) because the wire accepts anything:
//! unset messages, `_UNSPECIFIED` or unknown enum values, empty ids,
//! negative durations.
//!
//! Conversions of requests also hold them to the bounds of
//! [`limits`](crate::limits) (label counts, text and list lengths); those of
//! building blocks and responses do not, so that a client reads whatever a
//! coordinator with other limits sends.
//!
//! # Field paths in errors
//!
//! Errors name the offending field by its path in the wire message
//! (`problems[2].since: must be set`). Conversions of building blocks
//! ([`Permit`](crate::pb::v1::Permit), [`Problem`](crate::pb::v1::Problem), [`Scope`](crate::pb::v1::Scope),
//! ...) name fields relative to the message converted. Conversions of whole
//! RPC messages prefix the message's role, so an error can be returned to
//! the caller as it is: `heartbeat.` for a
//! [`HeartbeatRequest`](crate::pb::v1::HeartbeatRequest), `request.` for every other
//! request, and `response.` for responses (`request.host_id: must not be
//! empty`, `heartbeat.problems[2].since: must be set`).

mod admin;
mod agent;
mod event;
mod time;

pub use event::record_kind;

use std::collections::BTreeMap;

use medic_policy::{Action, HostId, InvalidInput, Labels, PermitId, Scope};

use crate::limits::{MAX_LABEL_KEY_LEN, MAX_LABEL_VALUE_LEN, MAX_LABELS};
use crate::pb::v1 as pb;

pub(crate) use admin::scope_or_fleet;
pub use time::{MAX_DURATION_SECS, from_duration, from_timestamp, to_duration, to_timestamp};
pub(crate) use time::{
    optional_duration, optional_time, positive_duration, required_duration, required_time,
};

// === Errors ===

/// `field: must be set`.
pub(crate) fn must_be_set(field: &str) -> InvalidInput {
    InvalidInput::new(field, "must be set")
}

/// Reports `err` as an error of `field` (medic-policy's validators name the
/// field by its domain name, which is not always the wire field's).
pub(crate) fn renamed(err: InvalidInput, field: &str) -> InvalidInput {
    InvalidInput::new(field, err.message)
}

/// `problems` + 2 = `problems[2]`.
pub(crate) fn indexed(field: &str, index: usize) -> String {
    format!("{field}[{index}]")
}

// === Required values ===

/// The value of a message-typed field that must be set.
pub(crate) fn required<T>(field: &str, value: Option<T>) -> Result<T, InvalidInput> {
    value.ok_or_else(|| must_be_set(field))
}

/// Converts a message-typed field that must be set, nesting errors under it.
pub(crate) fn required_msg<W, D>(field: &str, value: Option<W>) -> Result<D, InvalidInput>
where
    D: TryFrom<W, Error = InvalidInput>,
{
    D::try_from(required(field, value)?).map_err(|e| e.within(field))
}

/// Converts a message-typed field whose absence means `None`, nesting errors
/// under it.
pub(crate) fn optional_msg<W, D>(field: &str, value: Option<W>) -> Result<Option<D>, InvalidInput>
where
    D: TryFrom<W, Error = InvalidInput>,
{
    value
        .map(|v| D::try_from(v).map_err(|e| e.within(field)))
        .transpose()
}

/// Converts a repeated field, nesting errors under `field[i]`.
pub(crate) fn repeated<W, D>(field: &str, values: Vec<W>) -> Result<Vec<D>, InvalidInput>
where
    D: TryFrom<W, Error = InvalidInput>,
{
    values
        .into_iter()
        .enumerate()
        .map(|(i, v)| D::try_from(v).map_err(|e| e.within(&indexed(field, i))))
        .collect()
}

/// Text that must not be empty or blank (a reason, a job name).
pub(crate) fn non_empty(field: &str, value: String) -> Result<String, InvalidInput> {
    if value.trim().is_empty() {
        return Err(InvalidInput::new(field, "must not be empty"));
    }
    Ok(value)
}

// === Request limits (see crate::limits) ===

/// Rejects text longer than `max` bytes: `field: must be at most 1024
/// bytes, got 5000`.
pub(crate) fn check_len(field: &str, value: &str, max: usize) -> Result<(), InvalidInput> {
    if value.len() > max {
        return Err(InvalidInput::new(
            field,
            format!("must be at most {max} bytes, got {}", value.len()),
        ));
    }
    Ok(())
}

/// Text of at most `max` bytes, possibly empty (evidence, a version).
pub(crate) fn bounded(field: &str, value: String, max: usize) -> Result<String, InvalidInput> {
    check_len(field, &value, max)?;
    Ok(value)
}

/// Text of at most `max` bytes that must not be empty or blank (a reason, a
/// job name).
pub(crate) fn required_text(
    field: &str,
    value: String,
    max: usize,
) -> Result<String, InvalidInput> {
    check_len(field, &value, max)?;
    non_empty(field, value)
}

/// Rejects a repeated field or map with more than `max` entries: `field: at
/// most 64 labels, got 65` (`what`: `labels`).
pub(crate) fn check_count(
    field: &str,
    count: usize,
    max: usize,
    what: &str,
) -> Result<(), InvalidInput> {
    if count > max {
        return Err(InvalidInput::new(
            field,
            format!("at most {max} {what}, got {count}"),
        ));
    }
    Ok(())
}

/// Checks labels (or a selector) in a request against [`MAX_LABELS`],
/// [`MAX_LABEL_KEY_LEN`] and [`MAX_LABEL_VALUE_LEN`].
///
/// A key too long is shown by its first characters only, so that the error
/// stays small whatever was sent.
pub(crate) fn check_labels(
    field: &str,
    value: &BTreeMap<String, String>,
) -> Result<(), InvalidInput> {
    check_count(field, value.len(), MAX_LABELS, "labels")?;
    for (k, v) in value {
        if k.len() > MAX_LABEL_KEY_LEN {
            let start: String = k.chars().take(32).collect();
            return Err(InvalidInput::new(
                field,
                format!(
                    "key {start:?}... must be at most {MAX_LABEL_KEY_LEN} bytes, got {}",
                    k.len()
                ),
            ));
        }
        if v.len() > MAX_LABEL_VALUE_LEN {
            return Err(InvalidInput::new(
                format!("{field}[{k:?}]"),
                format!(
                    "value must be at most {MAX_LABEL_VALUE_LEN} bytes, got {}",
                    v.len()
                ),
            ));
        }
        crate::limits::check_visible(&format!("{field}[{k:?}]"), k)?;
        crate::limits::check_visible(&format!("{field}[{k:?}]"), v)?;
    }
    Ok(())
}

/// Labels (or a selector) in a request: [`check_labels`], then [`labels`].
pub(crate) fn bounded_labels(
    field: &str,
    value: BTreeMap<String, String>,
) -> Result<Labels, InvalidInput> {
    check_labels(field, &value)?;
    labels(field, value)
}

/// A scope in a request (its selector bounded), absent meaning the fleet.
pub(crate) fn bounded_scope_or_fleet(
    field: &str,
    s: Option<crate::pb::v1::Scope>,
) -> Result<Scope, InvalidInput> {
    if let Some(s) = &s {
        check_labels(&format!("{field}.selector"), &s.selector)?;
    }
    scope_or_fleet(field, s)
}

// === Enums ===

/// Converts an enum field that must hold a valid, specified value.
///
/// `W` is the generated enum; its `TryFrom<W>` for the domain type rejects
/// `_UNSPECIFIED`.
pub(crate) fn required_enum<W, D>(field: &str, raw: i32) -> Result<D, InvalidInput>
where
    W: TryFrom<i32>,
    D: TryFrom<W, Error = InvalidInput>,
{
    let wire = W::try_from(raw).map_err(|_| unknown_enum(field, raw))?;
    D::try_from(wire).map_err(|e| renamed(e, field))
}

/// Converts an enum field whose `_UNSPECIFIED` value (0) means `None`.
pub(crate) fn optional_enum<W, D>(field: &str, raw: i32) -> Result<Option<D>, InvalidInput>
where
    W: TryFrom<i32>,
    D: TryFrom<W, Error = InvalidInput>,
{
    if raw == 0 {
        return Ok(None);
    }
    required_enum::<W, D>(field, raw).map(Some)
}

/// The wire value of a domain enum (`W` is the generated enum).
pub(crate) fn wire_enum<W, D>(value: D) -> i32
where
    W: From<D> + Into<i32>,
{
    W::from(value).into()
}

fn unknown_enum(field: &str, raw: i32) -> InvalidInput {
    InvalidInput::new(
        field,
        format!("unknown value {raw} (the peer may speak a newer medic.v1)"),
    )
}

/// Defines `From<domain> for wire` and `TryFrom<wire> for domain` for a
/// fieldless enum whose wire form has an extra `Unspecified` variant.
macro_rules! enum_conversions {
    ($domain:ty, $wire:ty, $name:literal, { $($d:ident <=> $w:ident),+ $(,)? }) => {
        impl From<$domain> for $wire {
            fn from(value: $domain) -> Self {
                match value {
                    $(<$domain>::$d => <$wire>::$w,)+
                }
            }
        }

        impl TryFrom<$wire> for $domain {
            type Error = InvalidInput;

            fn try_from(value: $wire) -> Result<Self, InvalidInput> {
                match value {
                    $(<$wire>::$w => Ok(<$domain>::$d),)+
                    <$wire>::Unspecified => Err(crate::convert::must_be_set($name)),
                }
            }
        }
    };
}
pub(crate) use enum_conversions;

// === Actions: the enum and the name ===

/// The `action` enum value of `a` (a custom action is `ACTION_CUSTOM`,
/// named by the sibling `action_name`, which replies always fill with
/// [`Action::as_str`]).
pub fn wire_action(a: Action) -> i32 {
    match a {
        Action::RestartJob => pb::Action::RestartJob,
        Action::RebootHost => pb::Action::RebootHost,
        Action::Custom(_) => pb::Action::Custom,
    }
    .into()
}

/// The action an `(action, action_name)` pair names, as the `Action` enum's
/// comment in types.proto reads it; `None` when both are unset. `field` is
/// the enum field's path; the name's is `field` + `_name`.
pub fn action_from_wire(field: &str, raw: i32, name: &str) -> Result<Option<Action>, InvalidInput> {
    let name_field = || format!("{field}_name");
    let by_name =
        || Action::from_wire(name).map_err(|e| InvalidInput::new(name_field(), e.message));
    let wire = pb::Action::try_from(raw).map_err(|_| unknown_enum(field, raw))?;
    let builtin = match wire {
        pb::Action::Unspecified if name.is_empty() => return Ok(None),
        pb::Action::Unspecified => return by_name().map(Some),
        pb::Action::Custom if name.is_empty() => {
            return Err(InvalidInput::new(
                name_field(),
                "must be set when action is ACTION_CUSTOM",
            ));
        }
        pb::Action::Custom => {
            let a = by_name()?;
            if a.is_builtin() {
                return Err(InvalidInput::new(
                    name_field(),
                    format!(
                        "{name:?} is a built-in action; send its own enum value, not ACTION_CUSTOM"
                    ),
                ));
            }
            return Ok(Some(a));
        }
        pb::Action::RestartJob => Action::RestartJob,
        pb::Action::RebootHost => Action::RebootHost,
    };
    if name.is_empty() || name == builtin.as_str() {
        Ok(Some(builtin))
    } else {
        Err(InvalidInput::new(
            name_field(),
            format!(
                "is {:?} but {field} is {builtin}; leave it empty or make them agree",
                name.chars().take(80).collect::<String>()
            ),
        ))
    }
}

/// Like [`action_from_wire`], for a field that is required.
pub fn required_action(field: &str, raw: i32, name: &str) -> Result<Action, InvalidInput> {
    action_from_wire(field, raw, name)?.ok_or_else(|| InvalidInput::new(field, "must be set"))
}

// === Ids and labels ===

/// A host id in wire field `field`.
pub(crate) fn host_id(field: &str, value: String) -> Result<HostId, InvalidInput> {
    HostId::new(value).map_err(|e| renamed(e, field))
}

/// A permit id in wire field `field`.
pub(crate) fn permit_id(field: &str, value: String) -> Result<PermitId, InvalidInput> {
    PermitId::parse(value).map_err(|e| renamed(e, field))
}

/// Labels (or a selector): keys non-empty, and neither keys nor values with
/// whitespace or control characters (they are printed as `k=v,k=v`).
pub(crate) fn labels(field: &str, value: BTreeMap<String, String>) -> Result<Labels, InvalidInput> {
    let bad = |c: char| c.is_whitespace() || c.is_control();
    for (k, v) in &value {
        let at = || format!("{field}[{k:?}]");
        if k.is_empty() {
            return Err(InvalidInput::new(at(), "key must not be empty"));
        }
        if k.chars().any(bad) {
            return Err(InvalidInput::new(
                at(),
                "key must not contain whitespace or control characters",
            ));
        }
        if v.chars().any(bad) {
            return Err(InvalidInput::new(
                at(),
                format!("value must not contain whitespace or control characters, got {v:?}"),
            ));
        }
    }
    Ok(value)
}

#[cfg(test)]
mod tests;
