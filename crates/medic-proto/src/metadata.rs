//! The gRPC metadata keys medic's clients and servers exchange besides the
//! messages, spelled once here for both ends.
//!
//! Each key's value is ASCII. A server reads what it needs and ignores the
//! rest; a client sends only what its caller has (an agent sends none of
//! the request keys: it is identified by its certificate).

/// Sent by a coordinator replica that follows (replicated coordinators on
/// etcd), on the UNAVAILABLE it answers every call with: the URL the leader
/// advertises. Clients switch to it only when it is one of the coordinators
/// they were configured with, so a follower cannot send them anywhere their
/// operators did not list. Absent while no leader is elected.
pub const LEADER: &str = "medic-leader";

/// Sent by operators' clients (`medicctl --as NAME`, `$USER` by default):
/// the name the caller claims. The coordinator records it in the audit
/// history only over plaintext, marked unverified; over TLS the caller is
/// its certificate (or bearer token), and this key is ignored. At most
/// [`MAX_ACTOR_LEN`] bytes, printable ASCII.
pub const ACTOR: &str = "medic-actor";

/// The longest [`ACTOR`] value the coordinator records; it ignores longer
/// ones, so clients refuse them up front.
pub const MAX_ACTOR_LEN: usize = 128;

/// Sent by a coordinator with RESOURCE_EXHAUSTED when its per-caller
/// admission control (`server.admission`) refuses a call: how many
/// milliseconds to wait before trying again, as a decimal integer. Clients
/// wait that long (within bounds of their own) before retrying.
pub const RETRY_AFTER_MS: &str = "retry-after-ms";

/// Sent by operators' clients given a bearer token (`medicctl
/// --token-file`): `Bearer TOKEN`, checked by the coordinator against
/// `auth.tokens`. Sent only over TLS or to a loopback address, never in
/// plaintext across a network; marked sensitive so it is never logged.
pub const AUTHORIZATION: &str = "authorization";
