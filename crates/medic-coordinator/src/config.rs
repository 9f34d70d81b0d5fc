//! `coordinator.toml`: the server's own settings plus the policy sections of
//! medic-policy, validated together so `check-config` and reloads report
//! every error of the file at once, each with its key path.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use std::collections::BTreeMap;

use medic_policy::config::{
    ConfigErrors, Errors, MAX_COUNT, RawBreaker, RawFleet, RawIdempotency, RawLimits, parse_toml,
};
use medic_policy::{PolicyConfig, RawPolicy};
use serde::Deserialize;

use crate::auth::{AgentIdentity, AuthConfig, Pattern, Role, Token};
use crate::tls::TlsMaterial;

/// The whole file, as written.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
struct RawCoordinator {
    server: RawServer,
    tls: Option<RawTls>,
    auth: RawAuth,
    audit: RawAudit,
    notify: RawNotify,
    store: RawStore,
    // The policy sections (see medic-policy's config module).
    mode: Option<String>,
    fleet: RawFleet,
    breaker: RawBreaker,
    limits: BTreeMap<String, RawLimits>,
    idempotency: RawIdempotency,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
struct RawServer {
    listen: Option<String>,
    metrics_listen: Option<String>,
    state_dir: Option<String>,
    shutdown_grace: Option<String>,
    tick_interval: Option<String>,
    admission: RawAdmission,
    insecure: Option<bool>,
    max_message_bytes: Option<i64>,
    request_timeout: Option<String>,
    max_connections: Option<i64>,
    max_connections_per_address: Option<i64>,
    idle_timeout: Option<String>,
    watch_streams: Option<i64>,
    watch_streams_per_caller: Option<i64>,
    watch_stall_timeout: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
struct RawStore {
    kind: Option<String>,
    endpoints: Option<Vec<String>>,
    prefix: Option<String>,
    lease_ttl: Option<String>,
    advertise: Option<String>,
    tls: Option<RawEtcdTls>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
struct RawEtcdTls {
    ca: Option<String>,
    cert: Option<String>,
    key: Option<String>,
    server_name: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
struct RawTls {
    cert: Option<String>,
    key: Option<String>,
    client_ca: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
struct RawAuth {
    agent_identity: Option<String>,
    agent_spiffe_prefix: Option<String>,
    operator_ca: Option<String>,
    admin: Vec<String>,
    read_only: Vec<String>,
    tokens: Vec<RawToken>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
struct RawToken {
    name: Option<String>,
    file: Option<String>,
    role: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
struct RawAdmission {
    per_second: Option<i64>,
    burst: Option<i64>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
struct RawNotify {
    queue: Option<i64>,
    webhooks: Vec<RawWebhook>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
struct RawWebhook {
    url: Option<String>,
    format: Option<String>,
    events: Option<Vec<String>>,
    timeout: Option<String>,
    max_attempts: Option<i64>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
struct RawAudit {
    retention: Option<String>,
    max_entries: Option<i64>,
    denial_sample_interval: Option<String>,
    snapshot_every: Option<i64>,
}

/// The validated configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct CoordinatorConfig {
    /// Server settings.
    pub server: ServerConfig,
    /// `[tls]` with its files loaded; `None`: plaintext (loopback, or
    /// `server.insecure`).
    pub tls: Option<Arc<TlsMaterial>>,
    /// `[auth]`: who may call what.
    pub auth: AuthConfig,
    /// Audit history settings.
    pub audit: AuditConfig,
    /// Webhook notifications.
    pub notify: NotifyConfig,
    /// `[store]`: where the durable state lives.
    pub store: StoreConfig,
    /// The rules' limits.
    pub policy: PolicyConfig,
    /// With `[store] kind = "etcd"`: the etcd revision of the fleet config
    /// in force (`policy`, `audit`, `notify` come from it), `None` while
    /// none was ever pushed (the embedded defaults apply). Always `None`
    /// for the embedded store, whose file holds everything.
    pub fleet_revision: Option<i64>,
}

/// The top-level sections that are fleet-wide: with `[store] kind =
/// "etcd"` they live in etcd (`medic-coordinator config push`), so that
/// replicas cannot disagree on limits; each replica's own file holds the
/// rest (`server`, `tls`, `auth`, `store`), which name its addresses and
/// files.
pub const FLEET_SECTIONS: [&str; 7] = [
    "mode",
    "fleet",
    "breaker",
    "limits",
    "idempotency",
    "audit",
    "notify",
];

/// The fleet-wide part of the configuration (see [`FLEET_SECTIONS`]), as
/// pushed to etcd for replicated coordinators.
#[derive(Clone, Debug, PartialEq)]
pub struct FleetConfig {
    /// The rules' limits.
    pub policy: PolicyConfig,
    /// Audit history settings.
    pub audit: AuditConfig,
    /// Webhook notifications.
    pub notify: NotifyConfig,
}

impl FleetConfig {
    /// Reads and validates a fleet config file: only the fleet-wide
    /// sections, each checked as in `coordinator.toml`.
    pub fn from_toml(text: &str) -> Result<Self, ConfigErrors> {
        let mut table = match text.parse::<toml::Table>() {
            Ok(t) => t,
            // The full parser words syntax errors with their line.
            Err(e) => {
                return Err(CoordinatorConfig::from_toml(text).err().unwrap_or_else(|| {
                    ConfigErrors(vec![medic_policy::ConfigError {
                        path: String::new(),
                        message: e.to_string(),
                    }])
                }));
            }
        };
        let mut errs = Errors::default();
        table.retain(|key, _| {
            let fleet = FLEET_SECTIONS.contains(&key);
            if !fleet {
                errs.push(
                    key,
                    format!(
                        "is not fleet-wide: each replica sets [{key}] in its own \
                         coordinator.toml. A fleet config holds only {}",
                        FLEET_SECTIONS.join(", ")
                    ),
                );
            }
            fleet
        });
        let mut all = errs_into_vec(errs);
        // Only the fleet sections are validated: the others are refused
        // above, whatever they hold.
        match CoordinatorConfig::from_toml(&table.to_string()) {
            Err(e) => {
                all.extend(e.0);
                Err(ConfigErrors(all))
            }
            Ok(_) if !all.is_empty() => Err(ConfigErrors(all)),
            Ok(c) => Ok(FleetConfig {
                policy: c.policy,
                audit: c.audit,
                notify: c.notify,
            }),
        }
    }
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

/// `[store]`: where the durable state lives. Restart-only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreConfig {
    /// One coordinator, state in a redb file in `server.state_dir`
    /// (`kind = "embedded"`, the default).
    Embedded,
    /// Replicated coordinators on etcd (`kind = "etcd"`): one leader
    /// grants, the others redirect callers to it.
    Etcd(EtcdSettings),
}

/// `[store]` with `kind = "etcd"`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdSettings {
    /// etcd client URLs (`http://10.0.0.1:2379`). Required.
    pub endpoints: Vec<String>,
    /// Key prefix of this deployment: replicas of one fleet share it, two
    /// fleets on one etcd need two. Default `/medic`.
    pub prefix: String,
    /// The leader's lease: a leader that dies is replaced after at most
    /// this long (plus the new leader's warm-up). Whole seconds, 2s to
    /// 60s. Default 10s.
    pub lease_ttl: Duration,
    /// This replica's gRPC URL as agents reach it; followers hand it to
    /// callers as the leader's address, and agents follow it only if it is
    /// one of their configured `coordinators`. Required.
    pub advertise: String,
    /// `[store.tls]`: TLS to etcd, required with `https://` endpoints.
    pub tls: Option<EtcdTlsFiles>,
}

/// `[store.tls]`: the files for TLS to etcd, checked when the config is
/// loaded and read again when connecting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdTlsFiles {
    /// CA certificate(s) etcd's server certificates chain to, PEM.
    pub ca: PathBuf,
    /// Client certificate for etcd's `--client-cert-auth`, PEM.
    pub cert: Option<PathBuf>,
    /// Its private key, PEM, mode 0600 (or root-owned 0640).
    pub key: Option<PathBuf>,
    /// The name etcd's certificate must carry, when it is not the
    /// endpoints' host.
    pub server_name: Option<String>,
}

/// How the gRPC port is protected, as `medicctl status` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportSecurity {
    /// TLS, with client certificates for agents and operators.
    MutualTls,
    /// Plaintext on a loopback address.
    PlaintextLoopback,
    /// Plaintext on a non-loopback address (`server.insecure = true`).
    Insecure,
}

/// Per-caller rate limit: one broken agent cannot starve the rest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Admission {
    /// Sustained calls per second per caller. Default 20.
    pub per_second: u32,
    /// Calls a caller may make at once above that. Default 40.
    pub burst: u32,
}

/// `[notify]`: webhooks told about what an on-call person must know.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NotifyConfig {
    /// Notifications waiting per webhook; beyond it new ones are dropped
    /// (counted in `medic_notifications_dropped_total` and logged).
    /// Default 1000.
    pub queue: usize,
    /// Where to send them.
    pub webhooks: Vec<Webhook>,
}

/// What a notification is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NotifyKind {
    /// A circuit breaker opened.
    BreakerOpened,
    /// A circuit breaker closed.
    BreakerClosed,
    /// A pause began.
    Paused,
    /// A pause ended.
    Resumed,
    /// A host was quarantined.
    HostQuarantined,
    /// A permit expired without an outcome: the host went away mid-remediation.
    HostLost,
    /// A config reload was rejected.
    ConfigReloadFailed,
}

impl NotifyKind {
    /// Every kind.
    pub const ALL: [NotifyKind; 7] = [
        NotifyKind::BreakerOpened,
        NotifyKind::BreakerClosed,
        NotifyKind::Paused,
        NotifyKind::Resumed,
        NotifyKind::HostQuarantined,
        NotifyKind::HostLost,
        NotifyKind::ConfigReloadFailed,
    ];

    /// The name in config files and in the JSON body's `kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            NotifyKind::BreakerOpened => "breaker_opened",
            NotifyKind::BreakerClosed => "breaker_closed",
            NotifyKind::Paused => "paused",
            NotifyKind::Resumed => "resumed",
            NotifyKind::HostQuarantined => "host_quarantined",
            NotifyKind::HostLost => "host_lost",
            NotifyKind::ConfigReloadFailed => "config_reload_failed",
        }
    }
}

/// How a webhook's body is shaped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WebhookFormat {
    /// medic's JSON document (see `config/coordinator.toml`).
    Json,
    /// `{"text": "..."}`, which Slack and compatible chat tools accept.
    Slack,
}

/// One webhook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Webhook {
    /// `http://` or `https://` URL.
    pub url: String,
    /// Body format.
    pub format: WebhookFormat,
    /// Kinds sent to it; default all.
    pub events: Vec<NotifyKind>,
    /// Per attempt. Default 5s.
    pub timeout: Duration,
    /// Attempts before a notification is dropped. Default 5.
    pub max_attempts: u32,
}

/// `[audit]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditConfig {
    /// History older than this is removed. Default 30 days.
    pub retention: Duration,
    /// At most this many history entries are kept. Default 1,000,000.
    pub max_entries: u64,
    /// Denials are sampled: the first per host and reason per interval is
    /// recorded (with a count of the ones it stands for). Default 1m.
    pub denial_sample_interval: Duration,
    /// A snapshot of the durable state every this many log entries, so
    /// start-up replays at most that many. Default 10,000.
    pub snapshot_every: u64,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        match CoordinatorConfig::from_toml("") {
            Ok(c) => c,
            // Pinned by the test `embedded_defaults_are_valid`.
            Err(e) => panic!("embedded coordinator defaults are invalid: {e}"),
        }
    }
}

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
    /// Reads and validates a whole `coordinator.toml`.
    pub fn from_toml(text: &str) -> Result<Self, ConfigErrors> {
        let mut errs = Errors::default();
        let Some(raw) = parse_toml::<RawCoordinator>(text, &mut errs) else {
            return Err(ConfigErrors(errs_into_vec(errs)));
        };
        let policy = RawPolicy {
            mode: raw.mode.clone(),
            fleet: raw.fleet.clone(),
            breaker: raw.breaker.clone(),
            limits: raw.limits.clone(),
            idempotency: raw.idempotency.clone(),
        }
        .validate_into(&mut errs, "");
        let server = raw.server.validate(&mut errs);
        let auth = raw.auth.validate(&mut errs);
        let tls = match &raw.tls {
            None => {
                if raw.auth.operator_ca.is_some() {
                    errs.push(
                        "auth.operator_ca",
                        "needs [tls]: operators are identified by TLS client certificates",
                    );
                }
                None
            }
            Some(t) => t
                .validate(&mut errs, auth.operator_ca.as_deref())
                .map(Arc::new),
        };
        check_transport(&mut errs, &server, raw.tls.is_some());
        if raw.server.idle_timeout.is_some()
            && server.idle_timeout <= policy.fleet.heartbeat_interval
        {
            errs.push(
                "server.idle_timeout",
                format!(
                    "must be longer than fleet.heartbeat_interval ({}), got {}; agents would be \
                     cut off between heartbeats",
                    humantime::format_duration(policy.fleet.heartbeat_interval),
                    humantime::format_duration(server.idle_timeout)
                ),
            );
        }
        let audit = raw.audit.validate(&mut errs);
        let notify = raw.notify.validate(&mut errs);
        let store = raw.store.validate(&mut errs);
        if matches!(store, StoreConfig::Etcd(_))
            && let Ok(table) = text.parse::<toml::Table>()
        {
            for key in FLEET_SECTIONS {
                if table.contains_key(key) {
                    errs.push(
                        key,
                        "is fleet-wide with [store] kind = \"etcd\": replicas share it through \
                         etcd so that they cannot disagree. Move it to a fleet config file and \
                         push that with `medic-coordinator config push`",
                    );
                }
            }
        }
        errs.finish(Self {
            server,
            tls,
            auth,
            audit,
            notify,
            store,
            policy,
            fleet_revision: None,
        })
    }

    /// This replica's config with the fleet-wide part replaced by `fleet`
    /// (etcd revision `revision`; `None`: nothing pushed yet, `fleet` is
    /// the defaults).
    pub fn with_fleet(mut self, fleet: FleetConfig, revision: Option<i64>) -> Self {
        self.policy = fleet.policy;
        self.audit = fleet.audit;
        self.notify = fleet.notify;
        self.fleet_revision = revision;
        self
    }

    /// Reads and validates a file. I/O errors are reported like config
    /// errors, naming the file.
    pub fn load(path: &Path) -> Result<Self, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![medic_policy::ConfigError {
                path: String::new(),
                message: format!("cannot read {}: {e}", path.display()),
            }])
        })?;
        Self::from_toml(&text)
    }

    /// Reads only the `[store]` section of a file (the rest defaults):
    /// what tools that reach a deployment's etcd need, without the
    /// replica's own keys and certificates.
    pub fn load_store_section(path: &Path) -> Result<Self, ConfigErrors> {
        let fail = |message: String| {
            ConfigErrors(vec![medic_policy::ConfigError {
                path: String::new(),
                message,
            }])
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| fail(format!("cannot read {}: {e}", path.display())))?;
        let mut table = match text.parse::<toml::Table>() {
            Ok(t) => t,
            Err(_) => return Self::from_toml(&text),
        };
        table.retain(|key, _| key == "store");
        Self::from_toml(&table.to_string())
    }

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

    /// What this build cannot do of what the config asks: a file is valid
    /// or not whatever the build, but `store.kind = "etcd"` needs a
    /// coordinator built with the `etcd` feature. `check-config` and `run`
    /// report these like config errors.
    pub fn build_errors(&self) -> Vec<medic_policy::ConfigError> {
        let mut out = Vec::new();
        if matches!(self.store, StoreConfig::Etcd(_)) && !cfg!(feature = "etcd") {
            out.push(medic_policy::ConfigError {
                path: "store.kind".to_owned(),
                message: "\"etcd\" needs a medic-coordinator built with the `etcd` feature \
                          (cargo build --features etcd); this one has only the embedded store"
                    .to_owned(),
            });
        }
        out
    }

    /// How the gRPC port is protected.
    pub fn transport_security(&self) -> TransportSecurity {
        if self.tls.is_some() {
            TransportSecurity::MutualTls
        } else if self.server.listen.ip().is_loopback() {
            TransportSecurity::PlaintextLoopback
        } else {
            TransportSecurity::Insecure
        }
    }

    /// How the gRPC port is protected, in words.
    pub fn transport_summary(&self) -> &'static str {
        match self.transport_security() {
            TransportSecurity::MutualTls => "mutual TLS",
            TransportSecurity::PlaintextLoopback => "plaintext, loopback only",
            TransportSecurity::Insecure => "INSECURE plaintext",
        }
    }

    /// The actions' caps and rates, for summaries.
    pub fn limits_summary(&self) -> String {
        let p = &self.policy;
        let caps: Vec<String> = medic_policy::Action::ALL
            .iter()
            .map(|&a| {
                let l = p.limits(a);
                format!(
                    "{a} max {}{} rate {}/{}+{}",
                    l.max_in_flight,
                    l.max_in_flight_percent
                        .map(|x| format!(" ({x}%)"))
                        .unwrap_or_default(),
                    l.rate.count,
                    humantime::format_duration(l.rate.per),
                    l.rate.burst
                )
            })
            .collect();
        caps.join(", ")
    }

    /// A one-line summary for `check-config` and logs.
    pub fn summary(&self) -> String {
        let p = &self.policy;
        format!(
            "mode {}, listen {} ({}), metrics {}, state {}, {}",
            if p.dry_run { "dry-run" } else { "enforce" },
            self.server.listen,
            self.transport_summary(),
            self.server.metrics_listen,
            match &self.store {
                StoreConfig::Embedded => self.server.state_dir.display().to_string(),
                StoreConfig::Etcd(e) => format!(
                    "etcd {} at {} (advertised as {}), fleet config {}",
                    e.prefix,
                    e.endpoints.join(","),
                    e.advertise,
                    self.fleet_revision.map_or_else(
                        || "not from etcd (embedded defaults)".to_owned(),
                        |r| format!("etcd revision {r}")
                    )
                ),
            },
            self.limits_summary()
        )
    }
}

fn errs_into_vec(errs: Errors) -> Vec<medic_policy::ConfigError> {
    match errs.finish(()) {
        Ok(()) => Vec::new(),
        Err(e) => e.0,
    }
}

fn addr(errs: &mut Errors, path: &str, raw: Option<&str>, default: &str) -> SocketAddr {
    let text = raw.unwrap_or(default);
    match text.parse::<SocketAddr>() {
        Ok(a) => a,
        Err(e) => {
            errs.push(
                path,
                format!("invalid address {text:?} ({e}); use IP:PORT, for example 127.0.0.1:7470"),
            );
            SocketAddr::from(([127, 0, 0, 1], 0))
        }
    }
}

/// Plaintext gRPC only on loopback, unless the operator said `insecure`:
/// a remediation API is a fleet-wide reboot button.
fn check_transport(errs: &mut Errors, server: &ServerConfig, tls: bool) {
    let loopback = server.listen.ip().is_loopback();
    if tls && server.insecure {
        errs.push(
            "server.insecure",
            "is true but [tls] is configured; remove one (insecure means plaintext)",
        );
    }
    if !tls && !loopback && !server.insecure {
        errs.push(
            "server.listen",
            format!(
                "{} is not a loopback address, and there is no [tls]: anyone who can reach it \
                 could speak for any host or pause the fleet. Configure [tls] cert, key and \
                 client_ca (`medic-coordinator dev-certs --out DIR --hosts ...` makes a test set), \
                 or listen on 127.0.0.1, or set server.insecure = true to accept the risk",
                server.listen
            ),
        );
    }
}

impl RawTls {
    fn validate(&self, errs: &mut Errors, operator_ca: Option<&Path>) -> Option<TlsMaterial> {
        let mut path = |key: &str, v: &Option<String>, what: &str| match v.as_deref() {
            None | Some("") => {
                errs.push(
                    format!("tls.{key}"),
                    format!("is required with [tls] ({what})"),
                );
                None
            }
            Some(p) => Some(PathBuf::from(p)),
        };
        let cert = path(
            "cert",
            &self.cert,
            "the coordinator's certificate chain, PEM",
        );
        let key = path("key", &self.key, "its private key, PEM, mode 0600");
        let client_ca = path(
            "client_ca",
            &self.client_ca,
            "the CA that signs agents' (and operators') client certificates, PEM",
        );
        TlsMaterial::load(errs, &cert?, &key?, &client_ca?, operator_ca)
    }
}

impl RawAuth {
    fn validate(&self, errs: &mut Errors) -> AuthConfig {
        let agent_identity = match (
            self.agent_identity.as_deref(),
            self.agent_spiffe_prefix.as_deref(),
        ) {
            (None | Some("dns"), None) => AgentIdentity::Dns,
            (None | Some("dns"), Some(_)) => {
                errs.push(
                    "auth.agent_spiffe_prefix",
                    "is only used with agent_identity = \"spiffe\"",
                );
                AgentIdentity::Dns
            }
            (Some("spiffe"), prefix) => match prefix {
                Some(p) if p.starts_with("spiffe://") && p.ends_with('/') && p.len() > 10 => {
                    AgentIdentity::Spiffe {
                        prefix: p.to_owned(),
                    }
                }
                Some(p) => {
                    errs.push(
                        "auth.agent_spiffe_prefix",
                        format!(
                            "must be spiffe://TRUST-DOMAIN/PATH/ ending in \"/\" (the host id \
                             follows it), got {p:?}"
                        ),
                    );
                    AgentIdentity::Dns
                }
                None => {
                    errs.push(
                        "auth.agent_spiffe_prefix",
                        "is required with agent_identity = \"spiffe\", for example \
                         \"spiffe://example.org/medic/host/\"",
                    );
                    AgentIdentity::Dns
                }
            },
            (Some(other), _) => {
                errs.push(
                    "auth.agent_identity",
                    format!("must be \"dns\" or \"spiffe\", got {other:?}"),
                );
                AgentIdentity::Dns
            }
        };
        let mut patterns = |key: &str, raw: &[String]| -> Vec<Pattern> {
            raw.iter()
                .enumerate()
                .filter_map(|(i, p)| match Pattern::new(p) {
                    Ok(p) => {
                        let dns_only = !p.as_str().contains("://") && !p.as_str().contains('@');
                        if agent_identity == AgentIdentity::Dns && self.operator_ca.is_none() && dns_only {
                            errs.push(
                                format!("auth.{key}[{i}]"),
                                format!(
                                    "{:?} can only match DNS names, and with agent_identity = \"dns\" \
                                     a certificate with a DNS name is an agent's; match operators' URI \
                                     or email SANs (\"spiffe://example.org/operator/*\", \
                                     \"*@sre.example.org\"), or give operators a CA of their own \
                                     (auth.operator_ca)",
                                    p.as_str()
                                ),
                            );
                        }
                        if let AgentIdentity::Spiffe { prefix } = &agent_identity
                            && p.matches(&format!("{prefix}any-host"))
                        {
                            errs.push(
                                format!("auth.{key}[{i}]"),
                                format!(
                                    "{:?} also matches agents' identities ({prefix}...); an \
                                     agent's certificate must never be an operator's",
                                    p.as_str()
                                ),
                            );
                        }
                        Some(p)
                    }
                    Err(e) => {
                        errs.push(format!("auth.{key}[{i}]"), e);
                        None
                    }
                })
                .collect()
        };
        let admin = patterns("admin", &self.admin);
        let read_only = patterns("read_only", &self.read_only);
        let operator_ca = match self.operator_ca.as_deref() {
            None => None,
            Some("") => {
                errs.push(
                    "auth.operator_ca",
                    "must not be empty (leave it out instead)",
                );
                None
            }
            Some(p) => Some(PathBuf::from(p)),
        };
        let mut tokens: Vec<Token> = Vec::new();
        for (i, t) in self.tokens.iter().enumerate() {
            let at = |k: &str| format!("auth.tokens[{i}].{k}");
            let name = match t.name.as_deref() {
                Some(n)
                    if !n.is_empty()
                        && n.len() <= 64
                        && n.chars()
                            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) =>
                {
                    if tokens.iter().any(|o| o.name == n) {
                        errs.push(at("name"), format!("{n:?} is used by another token"));
                    }
                    Some(n.to_owned())
                }
                Some(n) => {
                    errs.push(
                        at("name"),
                        format!("must be 1-64 characters of A-Z a-z 0-9 - _ ., got {n:?}"),
                    );
                    None
                }
                None => {
                    errs.push(
                        at("name"),
                        "is required (the audit history's actor is token:NAME)",
                    );
                    None
                }
            };
            let role = match t.role.as_deref() {
                Some("admin") => Some(Role::Admin),
                Some("read-only") => Some(Role::ReadOnly),
                Some(r) => {
                    errs.push(
                        at("role"),
                        format!("must be \"admin\" or \"read-only\", got {r:?}"),
                    );
                    None
                }
                None => {
                    errs.push(at("role"), "is required: \"admin\" or \"read-only\"");
                    None
                }
            };
            let secret = match t.file.as_deref() {
                None | Some("") => {
                    errs.push(
                        at("file"),
                        "is required (a file holding the token, mode 0600)",
                    );
                    None
                }
                Some(f) => {
                    let path = PathBuf::from(f);
                    match medic_proto::secret_file::read(&path).and_then(|b| {
                        String::from_utf8(b).map_err(|_| format!("{f} is not UTF-8 text"))
                    }) {
                        Err(e) => {
                            errs.push(at("file"), e);
                            None
                        }
                        Ok(text) => {
                            let secret = text.trim().to_owned();
                            if secret.len() < 32 || secret.chars().any(char::is_whitespace) {
                                errs.push(
                                    at("file"),
                                    format!(
                                        "{f}: a token must be at least 32 characters without \
                                         spaces (for example `openssl rand -hex 32`)"
                                    ),
                                );
                                None
                            } else {
                                Some((path, secret))
                            }
                        }
                    }
                }
            };
            if let (Some(name), Some(role), Some((file, secret))) = (name, role, secret) {
                let token = Token::new(name, role, file, secret.as_bytes());
                if tokens.iter().any(|o| o.same_secret(&token)) {
                    errs.push(at("file"), "holds the same token as another entry");
                }
                tokens.push(token);
            }
        }
        AuthConfig {
            agent_identity,
            admin,
            read_only,
            operator_ca,
            tokens,
        }
    }
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

/// The longest `notify.webhooks[].timeout`: 5 minutes.
pub const MAX_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(300);

/// The most `notify.webhooks[].max_attempts`: 100 (backoff is at most a
/// minute, so the last attempt is still within about 100 minutes).
pub const MAX_WEBHOOK_ATTEMPTS: u32 = 100;

/// The longest `audit.denial_sample_interval`: a day.
pub const MAX_DENIAL_SAMPLE_INTERVAL: Duration = Duration::from_secs(24 * 3600);

/// Records an error at `key` when `dir` exists and is not a directory
/// (`/dev/null`, a regular file): the state directory is created when
/// missing, but never in place of something else.
pub(crate) fn not_a_file(errs: &mut Errors, key: &str, dir: &Path) {
    if dir.as_os_str().is_empty() {
        return;
    }
    if let Ok(meta) = std::fs::metadata(dir)
        && !meta.is_dir()
    {
        errs.push(
            key,
            format!(
                "{} exists and is not a directory; name a directory (it is created when missing)",
                dir.display()
            ),
        );
    }
}

impl RawServer {
    fn validate(&self, errs: &mut Errors) -> ServerConfig {
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

impl RawNotify {
    fn validate(&self, errs: &mut Errors) -> NotifyConfig {
        let queue = errs.count_in("notify.queue", self.queue, 1000, 1, MAX_COUNT) as usize;
        let webhooks = self
            .webhooks
            .iter()
            .enumerate()
            .filter_map(|(i, w)| w.validate(errs, &format!("notify.webhooks[{i}]")))
            .collect();
        NotifyConfig { queue, webhooks }
    }
}

impl RawWebhook {
    fn validate(&self, errs: &mut Errors, path: &str) -> Option<Webhook> {
        let url = match self.url.as_deref() {
            None | Some("") => {
                errs.push(format!("{path}.url"), "is required (http:// or https://)");
                None
            }
            Some(u) => match u.parse::<hyper::Uri>() {
                Ok(uri)
                    if matches!(uri.scheme_str(), Some("http" | "https"))
                        && uri.host().is_some() =>
                {
                    Some(u.to_owned())
                }
                _ => {
                    errs.push(
                        format!("{path}.url"),
                        format!("{u:?} is not an http:// or https:// URL"),
                    );
                    None
                }
            },
        };
        let format = match self.format.as_deref() {
            None | Some("json") => WebhookFormat::Json,
            Some("slack") => WebhookFormat::Slack,
            Some(f) => {
                errs.push(
                    format!("{path}.format"),
                    format!("must be \"json\" or \"slack\", got {f:?}"),
                );
                WebhookFormat::Json
            }
        };
        let events = match &self.events {
            None => NotifyKind::ALL.to_vec(),
            Some(names) => names
                .iter()
                .enumerate()
                .filter_map(|(j, n)| {
                    let k = NotifyKind::ALL.iter().find(|k| k.as_str() == n).copied();
                    if k.is_none() {
                        errs.push(
                            format!("{path}.events[{j}]"),
                            format!(
                                "unknown event {n:?}; use {}",
                                NotifyKind::ALL.map(NotifyKind::as_str).join(", ")
                            ),
                        );
                    }
                    k
                })
                .collect(),
        };
        let timeout = errs.duration_in(
            &format!("{path}.timeout"),
            self.timeout.as_deref(),
            Duration::from_secs(5),
            Duration::from_millis(1)..=MAX_WEBHOOK_TIMEOUT,
            "",
        );
        let max_attempts = errs.count_in(
            &format!("{path}.max_attempts"),
            self.max_attempts,
            5,
            1,
            MAX_WEBHOOK_ATTEMPTS,
        );
        Some(Webhook {
            url: url?,
            format,
            events,
            timeout,
            max_attempts,
        })
    }
}

impl RawAudit {
    fn validate(&self, errs: &mut Errors) -> AuditConfig {
        let retention = errs.positive_duration(
            "audit.retention",
            self.retention.as_deref(),
            Duration::from_secs(30 * 24 * 3600),
        );
        let max_entries =
            u64::from(errs.count("audit.max_entries", self.max_entries, 1_000_000, 1));
        let denial_sample_interval = errs.duration_in(
            "audit.denial_sample_interval",
            self.denial_sample_interval.as_deref(),
            Duration::from_secs(60),
            Duration::from_millis(1)..=MAX_DENIAL_SAMPLE_INTERVAL,
            "denials are recorded at least once a day",
        );
        let snapshot_every = u64::from(errs.count_in(
            "audit.snapshot_every",
            self.snapshot_every,
            10_000,
            1,
            MAX_COUNT,
        ));
        AuditConfig {
            retention,
            max_entries,
            denial_sample_interval,
            snapshot_every,
        }
    }
}

/// An `http://HOST:PORT` URL (or `https://` when `https` is allowed).
fn url_error(u: &str, https: bool) -> Option<String> {
    match u.parse::<hyper::Uri>() {
        Ok(uri)
            if (uri.scheme_str() == Some("http")
                || (https && uri.scheme_str() == Some("https")))
                && uri.host().is_some_and(|h| !h.is_empty())
                && uri.path() == "/"
                && !u.ends_with('/') =>
        {
            None
        }
        _ => Some(format!(
            "{u:?} is not {} URL with a host and no path (for example http://10.0.0.1:2379)",
            if https {
                "an http:// or https://"
            } else {
                "an http://"
            }
        )),
    }
}

impl RawEtcdTls {
    fn validate(&self, errs: &mut Errors) -> Option<EtcdTlsFiles> {
        let path = |v: &Option<String>| v.as_deref().filter(|p| !p.is_empty()).map(PathBuf::from);
        let Some(ca) = path(&self.ca) else {
            errs.push(
                "store.tls.ca",
                "is required with [store.tls]: the CA of etcd's server certificates, PEM",
            );
            return None;
        };
        let (cert, key) = (path(&self.cert), path(&self.key));
        if cert.is_some() != key.is_some() {
            errs.push(
                if cert.is_some() {
                    "store.tls.key"
                } else {
                    "store.tls.cert"
                },
                "store.tls.cert and store.tls.key go together: the client certificate \
                 etcd's --client-cert-auth asks for, and its private key",
            );
            return None;
        }
        let before = errs.len();
        crate::tls::check_client_files(
            errs,
            ("store.tls.ca", &ca),
            cert.as_deref()
                .zip(key.as_deref())
                .map(|(c, k)| (("store.tls.cert", c), ("store.tls.key", k))),
        );
        if let Some(name) = &self.server_name
            && rustls::pki_types::ServerName::try_from(name.as_str()).is_err()
        {
            errs.push(
                "store.tls.server_name",
                format!("{name:?} is not a DNS name or IP address"),
            );
        }
        (errs.len() == before).then_some(EtcdTlsFiles {
            ca,
            cert,
            key,
            server_name: self.server_name.clone(),
        })
    }
}

impl RawStore {
    fn validate(&self, errs: &mut Errors) -> StoreConfig {
        match self.kind.as_deref() {
            None | Some("embedded") => {
                for (key, set) in [
                    ("endpoints", self.endpoints.is_some()),
                    ("prefix", self.prefix.is_some()),
                    ("lease_ttl", self.lease_ttl.is_some()),
                    ("advertise", self.advertise.is_some()),
                    ("tls", self.tls.is_some()),
                ] {
                    if set {
                        errs.push(
                            format!("store.{key}"),
                            "is only used with kind = \"etcd\" (the embedded store lives in \
                             server.state_dir)",
                        );
                    }
                }
                StoreConfig::Embedded
            }
            Some("etcd") => {
                let endpoints = self.endpoints.clone().unwrap_or_default();
                if endpoints.is_empty() {
                    errs.push(
                        "store.endpoints",
                        "is required with kind = \"etcd\": the etcd members' client URLs, \
                         for example [\"http://10.0.0.1:2379\"]",
                    );
                }
                for (i, e) in endpoints.iter().enumerate() {
                    if let Some(m) = url_error(e, true) {
                        errs.push(format!("store.endpoints[{i}]"), m);
                    }
                }
                let https = endpoints
                    .iter()
                    .filter(|e| e.starts_with("https://"))
                    .count();
                if https > 0 && https < endpoints.len() {
                    errs.push(
                        "store.endpoints",
                        "mixes http:// and https://: every etcd member is reached the same way",
                    );
                }
                let tls = match (&self.tls, https > 0) {
                    (None, true) => {
                        errs.push(
                            "store.tls",
                            "is required with https:// endpoints: at least `ca`, the CA of \
                             etcd's server certificates",
                        );
                        None
                    }
                    (Some(_), false) if !endpoints.is_empty() => {
                        errs.push(
                            "store.tls",
                            "is set but the endpoints are http://: write them as https:// \
                             (or remove [store.tls])",
                        );
                        None
                    }
                    (Some(t), _) => t.validate(errs),
                    (None, false) => None,
                };
                let prefix = self.prefix.clone().unwrap_or_else(|| "/medic".to_owned());
                if !prefix.starts_with('/') || prefix.trim_end_matches('/').is_empty() {
                    errs.push(
                        "store.prefix",
                        format!("must start with \"/\" and name something, got {prefix:?}"),
                    );
                }
                let lease_ttl = errs.positive_duration(
                    "store.lease_ttl",
                    self.lease_ttl.as_deref(),
                    Duration::from_secs(10),
                );
                if !lease_ttl.is_zero()
                    && (lease_ttl.subsec_nanos() != 0
                        || lease_ttl < Duration::from_secs(2)
                        || lease_ttl > Duration::from_secs(60))
                {
                    errs.push(
                        "store.lease_ttl",
                        "must be whole seconds from 2s (etcd's shortest lease) to 60s (how long \
                         the fleet may wait for a new leader)",
                    );
                }
                let advertise = match self.advertise.as_deref() {
                    None | Some("") => {
                        errs.push(
                            "store.advertise",
                            "is required with kind = \"etcd\": this replica's gRPC URL as \
                             agents reach it (one of their coordinators), for example \
                             \"https://coord-1.example.net:7470\"",
                        );
                        String::new()
                    }
                    Some(a) => {
                        if let Some(m) = url_error(a, true) {
                            errs.push("store.advertise", m);
                        }
                        a.to_owned()
                    }
                };
                StoreConfig::Etcd(EtcdSettings {
                    endpoints,
                    prefix,
                    lease_ttl,
                    advertise,
                    tls,
                })
            }
            Some(other) => {
                errs.push(
                    "store.kind",
                    format!("must be \"embedded\" or \"etcd\", got {other:?}"),
                );
                StoreConfig::Embedded
            }
        }
    }
}
