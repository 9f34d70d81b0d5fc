//! `[server]`: addresses, the state directory, timing, admission control
//! and connection and stream limits, with the bounds each setting is
//! checked against.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use medic_policy::config::{Errors, MAX_COUNT};
use serde::Deserialize;

use super::parse::{addr, not_a_file};

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawServer {
    listen: Option<String>,
    metrics_listen: Option<String>,
    state_dir: Option<String>,
    shutdown_grace: Option<String>,
    tick_interval: Option<String>,
    admission: RawAdmission,
    insecure: Option<bool>,
    status_page: Option<bool>,
    max_message_bytes: Option<i64>,
    request_timeout: Option<String>,
    max_connections: Option<i64>,
    max_connections_per_address: Option<i64>,
    pub(super) idle_timeout: Option<String>,
    watch_streams: Option<i64>,
    watch_streams_per_caller: Option<i64>,
    watch_stall_timeout: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
struct RawAdmission {
    per_second: Option<i64>,
    burst: Option<i64>,
}

/// `[server]`.
#[derive(Clone, Debug, PartialEq)]
pub struct ServerConfig {
    /// gRPC address (agents and operators). Default `127.0.0.1:7470`.
    pub listen: SocketAddr,
    /// Prometheus metrics and `/healthz`. Default `127.0.0.1:7471`.
    pub metrics_listen: SocketAddr,
    /// Where the durable state lives. Default `/var/lib/medic`.
    pub state_dir: PathBuf,
    /// How long SIGTERM waits for in-flight calls. Default 10s.
    pub shutdown_grace: Duration,
    /// How often expiries and breakers are evaluated. Default 1s.
    pub tick_interval: Duration,
    /// Per-caller admission control.
    pub admission: Admission,
    /// Plaintext gRPC on a non-loopback address, accepted knowingly.
    /// Default false.
    pub insecure: bool,
    /// Serve the read-only status page at `/status` on the metrics
    /// listener. Default true.
    pub status_page: bool,
    /// Largest request message accepted, in bytes. Default 256 KiB.
    pub max_message_bytes: usize,
    /// Longest a call may run; past it the call is cut off with CANCELLED
    /// (a client's own shorter deadline gives DEADLINE_EXCEEDED first).
    /// Default 30s.
    pub request_timeout: Duration,
    /// Most connections open at once (agents hold one each); past it new
    /// ones are closed at once. Default 4096; lowered at start to fit the
    /// process's open-file limit. Restart-only.
    pub max_connections: u32,
    /// Most connections open at once from one IP address. Default 1024
    /// (agents behind one NAT address share it). Restart-only.
    pub max_connections_per_address: u32,
    /// A connection with no call in progress for this long is closed.
    /// Default 5m (agents call every heartbeat interval). Restart-only.
    pub idle_timeout: Duration,
    /// Most `WatchEvents` streams open at once. Default 64.
    pub watch_streams: u32,
    /// Most `WatchEvents` streams one caller (identity, or address over
    /// plaintext) may have open. Default 8.
    pub watch_streams_per_caller: u32,
    /// A watcher that reads nothing for this long while events wait is cut
    /// off with RESOURCE_EXHAUSTED. Default 30s.
    pub watch_stall_timeout: Duration,
}

/// Per-caller rate limit: one broken agent cannot starve the rest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Admission {
    /// Sustained calls per second per caller. Default 20.
    pub per_second: u32,
    /// Calls a caller may make at once above that. Default 40.
    pub burst: u32,
}

/// The shortest `server.tick_interval`: 10 ms. Every tick walks the
/// permits, pauses and breakers; more often only burns CPU.
pub const MIN_TICK_INTERVAL: Duration = Duration::from_millis(10);

/// The longest `server.tick_interval`: 10 s, so that expiries and breakers
/// are never judged late by more than that.
pub const MAX_TICK_INTERVAL: Duration = Duration::from_secs(10);

/// The longest `server.shutdown_grace`: an hour.
pub const MAX_SHUTDOWN_GRACE: Duration = Duration::from_secs(3600);

/// The longest `server.request_timeout`: an hour.
pub const MAX_REQUEST_TIMEOUT: Duration = Duration::from_secs(3600);

/// The most `server.max_connections` (and per address): a million.
pub const MAX_CONNECTIONS: u32 = 1_000_000;

/// The longest `server.idle_timeout`: a day.
pub const MAX_IDLE_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// The most `server.watch_streams` (and per caller): each may buffer a
/// few hundred events.
pub const MAX_WATCH_STREAMS: u32 = 10_000;

impl RawServer {
    pub(super) fn validate(&self, errs: &mut Errors) -> ServerConfig {
        let listen = addr(
            errs,
            "server.listen",
            self.listen.as_deref(),
            "127.0.0.1:7470",
        );
        let metrics_listen = addr(
            errs,
            "server.metrics_listen",
            self.metrics_listen.as_deref(),
            "127.0.0.1:7471",
        );
        if listen == metrics_listen && listen.port() != 0 {
            errs.push(
                "server.metrics_listen",
                format!("must differ from server.listen ({listen})"),
            );
        }
        let state_dir = match self.state_dir.as_deref() {
            None => PathBuf::from("/var/lib/medic"),
            Some("") => {
                errs.push("server.state_dir", "must not be empty");
                PathBuf::new()
            }
            Some(s) => PathBuf::from(s),
        };
        not_a_file(errs, "server.state_dir", &state_dir);
        let shutdown_grace = errs.duration_in(
            "server.shutdown_grace",
            self.shutdown_grace.as_deref(),
            Duration::from_secs(10),
            Duration::ZERO..=MAX_SHUTDOWN_GRACE,
            "a stop that waits longer is a hang",
        );
        let tick_interval = errs.duration_in(
            "server.tick_interval",
            self.tick_interval.as_deref(),
            Duration::from_secs(1),
            MIN_TICK_INTERVAL..=MAX_TICK_INTERVAL,
            "expiries and breakers are evaluated on it",
        );
        let admission = Admission {
            per_second: errs.count_in(
                "server.admission.per_second",
                self.admission.per_second,
                20,
                1,
                MAX_COUNT,
            ),
            burst: errs.count_in(
                "server.admission.burst",
                self.admission.burst,
                40,
                1,
                MAX_COUNT,
            ),
        };
        let max_message_bytes = errs.count(
            "server.max_message_bytes",
            self.max_message_bytes,
            256 * 1024,
            4096,
        ) as usize;
        if max_message_bytes > 16 * 1024 * 1024 {
            errs.push(
                "server.max_message_bytes",
                "must be at most 16777216 (16 MiB)",
            );
        }
        let request_timeout = errs.duration_in(
            "server.request_timeout",
            self.request_timeout.as_deref(),
            Duration::from_secs(30),
            Duration::from_millis(1)..=MAX_REQUEST_TIMEOUT,
            "",
        );
        let max_connections = errs.count_in(
            "server.max_connections",
            self.max_connections,
            4096,
            16,
            MAX_CONNECTIONS,
        );
        let max_connections_per_address = errs.count_in(
            "server.max_connections_per_address",
            self.max_connections_per_address,
            1024,
            1,
            MAX_CONNECTIONS,
        );
        let idle_timeout = errs.duration_in(
            "server.idle_timeout",
            self.idle_timeout.as_deref(),
            Duration::from_secs(300),
            Duration::from_secs(1)..=MAX_IDLE_TIMEOUT,
            "agents call at least every heartbeat interval",
        );
        if idle_timeout <= request_timeout {
            errs.push(
                "server.idle_timeout",
                format!(
                    "must be longer than server.request_timeout ({}), got {}; a call that runs \
                     that long would see its connection closed under it",
                    humantime::format_duration(request_timeout),
                    humantime::format_duration(idle_timeout)
                ),
            );
        }
        let watch_streams = errs.count_in(
            "server.watch_streams",
            self.watch_streams,
            64,
            1,
            MAX_WATCH_STREAMS,
        );
        let watch_streams_per_caller = errs.count_in(
            "server.watch_streams_per_caller",
            self.watch_streams_per_caller,
            8,
            1,
            MAX_WATCH_STREAMS,
        );
        let watch_stall_timeout = errs.duration_in(
            "server.watch_stall_timeout",
            self.watch_stall_timeout.as_deref(),
            Duration::from_secs(30),
            Duration::from_secs(1)..=Duration::from_secs(3600),
            "",
        );
        ServerConfig {
            listen,
            metrics_listen,
            state_dir,
            shutdown_grace,
            tick_interval,
            admission,
            insecure: self.insecure.unwrap_or(false),
            status_page: self.status_page.unwrap_or(true),
            max_message_bytes,
            request_timeout,
            max_connections,
            max_connections_per_address,
            idle_timeout,
            watch_streams,
            watch_streams_per_caller,
            watch_stall_timeout,
        }
    }
}
