//! Bounds on what a caller can send: label counts, string lengths, list
//! lengths.
//!
//! A coordinator is shared by the whole fleet; one misbehaving agent or
//! script must not be able to make it store, index, log or replay megabytes
//! on its behalf. Every request conversion ([`convert`](crate::convert),
//! [`request`](crate::request)) checks these bounds before anything else and
//! rejects a request past one with `INVALID_ARGUMENT`, naming the field and
//! the limit:
//!
//! - `heartbeat.labels: at most 64 labels, got 65`
//! - `heartbeat.labels["rack"]: value must be at most 256 bytes, got 300`
//! - `request.reason: must be at most 1024 bytes, got 5000`
//!
//! Lengths are in bytes of UTF-8, not characters. Each bound is far above
//! what a real host or operator sends (a DNS-style label value, a paragraph
//! of reason, a page of evidence) and far below what would hurt.
//!
//! The bounds apply to requests only. Responses are read without them, so
//! that a client keeps working against a coordinator whose limits differ.
//!
//! Together they bound a request's size: a heartbeat at every limit
//! encodes to under 128 KiB (tested), so a server's maximum message size
//! can sit far below gRPC's 4 MiB default without refusing a valid request.
//!
//! Ids have their own bounds, kept by medic-policy's types and repeated here
//! so that one place lists them all: [`MAX_HOST_ID_LEN`],
//! [`MAX_REQUEST_ID_LEN`], [`MAX_PERMIT_ID_LEN`].
//!
//! Identifiers in a request (host ids, request ids, job and detector names,
//! label names and values) must also be visible: no control or Unicode
//! format characters, such as bidirectional overrides or zero-width spaces
//! ([`medic_policy::text`]), which would make one id print as another:
//!
//! - `request.host_id: must not contain invisible characters (...), got
//!   "web-1\u{202e}" (holds U+202E)`

use medic_policy::{HostId, InvalidInput, RequestId, text};

// === Labels and selectors ===

/// Most labels a heartbeat may carry, and most pairs a label selector
/// (pause, resume or host-list scope) may hold. Real hosts carry a handful
/// (`rack`, `zone`, `pool`, ...).
pub const MAX_LABELS: usize = 64;

/// Longest label key (`rack`), in bytes; also a breaker domain's `label`.
pub const MAX_LABEL_KEY_LEN: usize = 128;

/// Longest label value (`r12`), in bytes; also a breaker domain's `value`.
pub const MAX_LABEL_VALUE_LEN: usize = 256;

// === Heartbeats and permit requests ===

/// Most problems one heartbeat may report (at most one per job and
/// detector, so this bounds the jobs an agent watches × its detectors).
pub const MAX_PROBLEMS: usize = 64;

/// Longest job name (`Problem.job`, `RequestPermitRequest.job`), in bytes.
/// Room for any systemd unit name (at most 255).
pub const MAX_JOB_LEN: usize = 256;

/// Longest detector name (`Problem.detector`: `heartbeat_file`, `probe`,
/// ...), in bytes.
pub const MAX_DETECTOR_LEN: usize = 128;

/// Longest problem evidence (`Problem.detail`), in bytes. A heartbeat repeats
/// it every interval for every problem, so it is kept to a paragraph.
pub const MAX_PROBLEM_DETAIL_LEN: usize = 1024;

/// Longest agent version string (`HeartbeatRequest.agent_version`), in
/// bytes. Room for a semver with pre-release and build metadata.
pub const MAX_AGENT_VERSION_LEN: usize = 128;

/// Longest outcome evidence (`ReportOutcomeRequest.detail`), in bytes. Sent
/// once per permit, so it has room for a few lines of probe output.
pub const MAX_OUTCOME_DETAIL_LEN: usize = 4096;

// === Free text of the audit history ===

/// Longest reason, in bytes: `RequestPermitRequest.reason`,
/// `HeartbeatRequest.needs_human` (which becomes a quarantine's reason), and
/// the `reason` of every operator request (pause, resume, revoke,
/// quarantine, unquarantine, reset-breaker, reload-config). A paragraph
/// with a ticket id, kept whole in the audit history.
pub const MAX_REASON_LEN: usize = 1024;

// === Durations of operator requests ===

/// Longest timed pause (`PauseRequest.duration`): 366 days. A pause meant
/// to last longer is one without a duration, ended by a resume; a longer
/// duration is a typo (`--for 8000y`), and its end would lie past the
/// dates the audit history and messages can print.
pub const MAX_PAUSE_DURATION: std::time::Duration = std::time::Duration::from_secs(366 * 86_400);

// === Queries ===

/// Most entries of a repeated filter (`ListPermitsRequest.states`,
/// `GetHistoryRequest.kinds`, `WatchEventsRequest.kinds`). Every value of
/// those enums fits several times over.
pub const MAX_FILTER_VALUES: usize = 32;

/// Longest page token (`page_token` of the paged list calls), in bytes. The
/// coordinator issues tokens no longer than a host id.
pub const MAX_PAGE_TOKEN_LEN: usize = 512;

// === Ids (kept by medic-policy) ===

/// Longest host id, in bytes ([`HostId::MAX_LEN`], a DNS name's limit).
pub const MAX_HOST_ID_LEN: usize = HostId::MAX_LEN;

/// Longest request id, in bytes ([`RequestId::MAX_LEN`]).
pub const MAX_REQUEST_ID_LEN: usize = RequestId::MAX_LEN;

/// Longest permit id, in bytes (what [`medic_policy::PermitId::parse`]
/// accepts; the coordinator issues 14-byte ids like `p-000000000042`).
pub const MAX_PERMIT_ID_LEN: usize = 64;

// === Identifiers ===

/// Rejects an identifier of a request that holds an invisible character
/// (control or format, see [`medic_policy::text`]), naming the field and
/// the character. Check its length first: the value is quoted.
pub(crate) fn check_visible(field: &str, value: &str) -> Result<(), InvalidInput> {
    match text::first_hidden(value) {
        None => Ok(()),
        Some(c) => Err(InvalidInput::new(
            field,
            format!(
                "must not contain invisible characters (control or format characters such as \
                 bidirectional overrides and zero-width spaces), got {value:?} (holds {})",
                text::describe(c)
            ),
        )),
    }
}

/// A host id in a request: valid ([`HostId::new`]) and visible.
pub(crate) fn request_host_id(field: &str, value: String) -> Result<HostId, InvalidInput> {
    let host = crate::convert::host_id(field, value)?;
    check_visible(field, host.as_str())?;
    Ok(host)
}
