//! Prometheus metrics, named `medic_*` with units in the names.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;

use medic_policy::{Action, BreakerCause, DenyReason, Status};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// How often replicas on etcd read the revision of the stored fleet
/// config (`medic_fleet_config_stored_revision`).
pub const FLEET_CONFIG_POLL: std::time::Duration = std::time::Duration::from_secs(30);

/// Labels: an action.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabel {
    /// `restart_job` or `reboot_host`.
    pub action: String,
}

/// Labels: an action and a decision outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    /// `restart_job` or `reboot_host`.
    pub action: String,
    /// `granted`, `replayed`, or the denial reason (`breaker_open`, ...).
    pub outcome: String,
}

/// Labels: what opened a breaker.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CauseLabel {
    /// `unhealthy_fraction`, `failure_fraction`, `liveness_drop` or
    /// `probe_failed`.
    pub cause: String,
}

/// Labels: an RPC method.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabel {
    /// `Heartbeat`, `RequestPermit`, `Admin/Pause`, ...
    pub method: String,
}

/// Labels: a result.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// `ok` or `error`.
    pub result: String,
}

/// Labels: why something was dropped.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// `queue_full` or `failed`.
    pub reason: String,
}

/// Labels: which way the wall clock was stepped.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabel {
    /// `ahead` or `back`.
    pub direction: String,
}

/// Labels: a refused call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    /// `remediation` or `admin`.
    pub service: String,
    /// `unauthenticated` or `permission_denied`.
    pub code: String,
}

/// Labels: an alert gate.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GateLabel {
    /// The gate's name (`[[gates]] name`).
    pub gate: String,
}

/// Every metric the coordinator exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Decisions by action and outcome.
    pub decisions: Family<DecisionLabels, Counter>,
    /// Active permits per action.
    pub permits_active: Family<ActionLabel, Gauge>,
    /// Effective cap per action.
    pub permits_cap: Family<ActionLabel, Gauge>,
    /// Grants left in the current rate window per action.
    pub rate_budget_remaining: Family<ActionLabel, Gauge>,
    /// 1 while the fleet-wide breaker is open (not while it is half-open).
    pub breaker_fleet_open: Gauge,
    /// Open breakers, fleet and domains (half-open ones not counted).
    pub breakers_open: Gauge,
    /// Half-open breakers, fleet and domains.
    pub breakers_half_open: Gauge,
    /// Open breakers by cause (half-open ones not counted).
    pub breaker_open: Family<CauseLabel, Gauge>,
    /// Pauses in force.
    pub pauses_active: Gauge,
    /// Operators' overrides of limits in force.
    pub overrides_active: Gauge,
    /// Requests waiting for a human's approval.
    pub approvals_pending: Gauge,
    /// When the oldest of them began to wait (Unix seconds; 0: none).
    pub approval_oldest_pending: Gauge,
    /// Live hosts.
    pub hosts_live: Gauge,
    /// Unhealthy hosts.
    pub hosts_unhealthy: Gauge,
    /// Hosts that were live and went silent (not yet heard from again or
    /// forgotten).
    pub hosts_silent: Gauge,
    /// Quarantined hosts.
    pub hosts_quarantined: Gauge,
    /// Known hosts.
    pub hosts_known: Gauge,
    /// 1 while warming up.
    pub warming_up: Gauge,
    /// 1 in dry-run mode.
    pub dry_run: Gauge,
    /// RPC latency by method.
    pub rpc_duration: Family<MethodLabel, Histogram>,
    /// Store commit latency (append + fsync), per batch.
    pub store_commit_duration: Histogram,
    /// Records per store commit.
    pub store_commit_records: Histogram,
    /// Reloads by result.
    pub config_reloads: Family<ResultLabel, Counter>,
    /// Calls refused by per-caller admission control.
    pub admission_rejected: Counter,
    /// Denial records written to the audit history (each sampling many).
    pub denials_sampled: Counter,
    /// Permits that expired without an outcome.
    pub permits_expired: Counter,
    /// Store entries removed by retention.
    pub audit_compacted: Counter,
    /// Webhook notifications delivered.
    pub notifications_sent: Counter,
    /// Webhook attempts that failed and were retried.
    pub notification_retries: Counter,
    /// Webhook notifications dropped, by reason (`queue_full`, `failed`).
    pub notifications_dropped: Family<ReasonLabel, Counter>,
    /// Connections open now.
    pub connections_open: Gauge,
    /// Connections closed at accept, by reason (`total`, `address`).
    pub connections_refused: Family<ReasonLabel, Counter>,
    /// Connections closed for having no call for `server.idle_timeout`.
    pub connections_closed_idle: Counter,
    /// Wall-clock steps found (live and at start-up), by direction
    /// (`ahead`, `back`).
    pub clock_steps: Family<DirectionLabel, Counter>,
    /// TLS handshakes on the gRPC port by result (`ok`, `failed`,
    /// `timeout`, `busy`).
    pub tls_handshakes: Family<ResultLabel, Counter>,
    /// Calls refused by authentication or authorization.
    pub auth_refused: Family<RefusalLabels, Counter>,
    /// When the serving certificate expires (Unix seconds); 0 without TLS.
    pub tls_cert_expiry: Gauge,
    /// 1 while serving plaintext on a non-loopback address
    /// (`server.insecure = true`).
    pub insecure: Gauge,
    /// 1 while this coordinator decides (the embedded store's, or the
    /// elected replica on etcd), 0 while it follows.
    pub leader: Gauge,
    /// The etcd revision of the fleet config in force (replicas on etcd);
    /// 0 when none was pushed, or with the embedded store.
    pub fleet_config_revision: Gauge,
    /// The etcd revision of the fleet config stored in etcd, read every
    /// [`FLEET_CONFIG_POLL`] (replicas on etcd); above
    /// `fleet_config_revision` while a push waits for a SIGHUP.
    pub fleet_config_stored_revision: Gauge,
    /// 1 while an alert gate holds nothing back (its query returns nothing
    /// for any domain, and it can be evaluated or says `on_error = "open"`).
    pub gate_open: Family<GateLabel, Gauge>,
    /// The label values (domains) a per-domain gate holds; 0 or 1 for a
    /// fleet-wide gate.
    pub gate_closed_domains: Family<GateLabel, Gauge>,
    /// 1 while a gate's last round had an evaluation that failed.
    pub gate_failing: Family<GateLabel, Gauge>,
    /// Gate evaluations that failed (unreachable, timed out, refused).
    pub gate_errors: Family<GateLabel, Counter>,
    /// When a gate last finished a round with every evaluation answered
    /// (Unix seconds; 0: never).
    pub gate_last_success: Family<GateLabel, Gauge>,
    /// The decision counters, created up front: the hot path only clones
    /// an `Arc`, it never allocates label strings.
    decision_counters: HashMap<(Action, &'static str), Counter>,
    /// The actions the last status listed (their gauges exist).
    status_actions: std::sync::Mutex<Vec<Action>>,
    rpc_histograms: std::sync::RwLock<HashMap<String, Histogram>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("medic");
        let decisions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "decisions",
            "Permit decisions by action and outcome (granted, replayed, waiting_approval, or the denial reason)",
            decisions.clone(),
        );
        let permits_active = Family::<ActionLabel, Gauge>::default();
        registry.register(
            "permits_active",
            "Active permits by action",
            permits_active.clone(),
        );
        let permits_cap = Family::<ActionLabel, Gauge>::default();
        registry.register(
            "permits_cap",
            "Effective concurrency cap by action: min(max_in_flight, percent of live fleet)",
            permits_cap.clone(),
        );
        let rate_budget_remaining = Family::<ActionLabel, Gauge>::default();
        registry.register(
            "rate_budget_remaining",
            "Grants left in the current rate window (count + burst minus grants in the window)",
            rate_budget_remaining.clone(),
        );
        let gauge = |registry: &mut Registry, name: &str, help: &str| {
            let g = Gauge::default();
            registry.register(name, help, g.clone());
            g
        };
        let breaker_fleet_open = gauge(
            &mut registry,
            "breaker_fleet_open",
            "1 while the fleet-wide circuit breaker is open (no grants anywhere); 0 while it is half-open or closed",
        );
        let breakers_open = gauge(
            &mut registry,
            "breakers_open",
            "Open circuit breakers, fleet-wide and per failure domain (half-open ones not counted)",
        );
        let breakers_half_open = gauge(
            &mut registry,
            "breakers_half_open",
            "Half-open circuit breakers, fleet-wide and per failure domain (probe permits only)",
        );
        let breaker_open = Family::<CauseLabel, Gauge>::default();
        registry.register(
            "breaker_open",
            "Open circuit breakers by cause: unhealthy_fraction, failure_fraction, liveness_drop, probe_failed (half-open ones not counted)",
            breaker_open.clone(),
        );
        for cause in BreakerCause::ALL {
            let _ = breaker_open.get_or_create(&CauseLabel {
                cause: cause.as_str().to_owned(),
            });
        }
        let pauses_active = gauge(&mut registry, "pauses_active", "Pauses in force");
        let overrides_active = gauge(
            &mut registry,
            "overrides_active",
            "Operators' temporary overrides of limits in force",
        );
        let approvals_pending = gauge(
            &mut registry,
            "approvals_pending",
            "Permit requests waiting for a human's approval (medicctl approvals)",
        );
        let approval_oldest_pending = gauge(
            &mut registry,
            "approval_oldest_pending_timestamp_seconds",
            "When the oldest request still waiting for a human's approval began to wait \
             (Unix seconds; 0 when none waits)",
        );
        let hosts_live = gauge(&mut registry, "hosts_live", "Live hosts");
        let hosts_unhealthy = gauge(
            &mut registry,
            "hosts_unhealthy",
            "Live hosts reporting a problem or holding a permit",
        );
        let hosts_silent = gauge(
            &mut registry,
            "hosts_silent",
            "Hosts that were live and went silent, until heard from again or forgotten (the breakers count them as unhealthy)",
        );
        let hosts_quarantined = gauge(&mut registry, "hosts_quarantined", "Quarantined hosts");
        let hosts_known = gauge(
            &mut registry,
            "hosts_known",
            "Hosts known to the coordinator",
        );
        let warming_up = gauge(
            &mut registry,
            "warming_up",
            "1 while the coordinator is warming up after start (no grants)",
        );
        let dry_run = gauge(
            &mut registry,
            "dry_run",
            "1 when the coordinator runs in dry-run mode",
        );
        let rpc_duration = Family::<MethodLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_05, 2.0, 18))
        });
        registry.register(
            "rpc_duration_seconds",
            "gRPC call time by method (Service/Method: Remediation/Heartbeat, Admin/Pause), from the request to the reply's headers",
            rpc_duration.clone(),
        );
        let store_commit_duration = Histogram::new(exponential_buckets(0.000_1, 2.0, 16));
        registry.register(
            "store_commit_duration_seconds",
            "Time to append and fsync one batch of records",
            store_commit_duration.clone(),
        );
        let store_commit_records = Histogram::new(exponential_buckets(1.0, 2.0, 12));
        registry.register(
            "store_commit_records",
            "Records per store commit (commit batching)",
            store_commit_records.clone(),
        );
        let config_reloads = Family::<ResultLabel, Counter>::default();
        registry.register(
            "config_reloads",
            "Configuration reloads by result",
            config_reloads.clone(),
        );
        let counter = |registry: &mut Registry, name: &str, help: &str| {
            let c = Counter::<u64, AtomicU64>::default();
            registry.register(name, help, c.clone());
            c
        };
        let admission_rejected = counter(
            &mut registry,
            "admission_rejected",
            "Calls refused by per-caller admission control (RESOURCE_EXHAUSTED)",
        );
        let denials_sampled = counter(
            &mut registry,
            "denials_sampled",
            "Denial records written to the audit history (each stands for one or more denials)",
        );
        let permits_expired = counter(
            &mut registry,
            "permits_expired",
            "Permits that expired without an outcome (their hosts were quarantined)",
        );
        let audit_compacted = counter(
            &mut registry,
            "audit_compacted",
            "Audit history entries removed by retention",
        );
        let notifications_sent = counter(
            &mut registry,
            "notifications_sent",
            "Webhook notifications delivered",
        );
        let notification_retries = counter(
            &mut registry,
            "notification_retries",
            "Webhook delivery attempts that failed and were retried",
        );
        let connections_open = Gauge::default();
        registry.register(
            "connections_open",
            "gRPC connections open now",
            connections_open.clone(),
        );
        let connections_refused = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "connections_refused",
            "Connections closed at accept, past server.max_connections (reason total) or \
             server.max_connections_per_address (reason address)",
            connections_refused.clone(),
        );
        for reason in ["total", "address"] {
            let _ = connections_refused.get_or_create(&ReasonLabel {
                reason: reason.to_owned(),
            });
        }
        let connections_closed_idle = counter(
            &mut registry,
            "connections_closed_idle",
            "Connections closed after server.idle_timeout without a call or an open stream",
        );
        let clock_steps = Family::<DirectionLabel, Counter>::default();
        registry.register(
            "clock_steps",
            "Wall-clock steps found by comparing it with the boot clock (recorded times moved \
             with each)",
            clock_steps.clone(),
        );
        for direction in ["ahead", "back"] {
            let _ = clock_steps.get_or_create(&DirectionLabel {
                direction: direction.to_owned(),
            });
        }
        let notifications_dropped = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "notifications_dropped",
            "Webhook notifications dropped: queue_full (the webhook is slow or down) or failed (every attempt failed)",
            notifications_dropped.clone(),
        );
        let tls_handshakes = Family::<ResultLabel, Counter>::default();
        registry.register(
            "tls_handshakes",
            "TLS handshakes on the gRPC port by result: ok, failed (a plaintext client, an unsupported client), timeout, busy (too many at once)",
            tls_handshakes.clone(),
        );
        let auth_refused = Family::<RefusalLabels, Counter>::default();
        registry.register(
            "auth_refused",
            "Calls refused by authentication (unauthenticated) or authorization (permission_denied), by service",
            auth_refused.clone(),
        );
        let tls_cert_expiry = gauge(
            &mut registry,
            "tls_certificate_expiry_timestamp_seconds",
            "When the coordinator's serving certificate expires (Unix time); 0 without TLS",
        );
        let insecure = gauge(
            &mut registry,
            "insecure",
            "1 while the coordinator serves plaintext gRPC on a non-loopback address (server.insecure = true)",
        );
        let leader = gauge(
            &mut registry,
            "leader",
            "1 while this coordinator decides (embedded store, or the elected replica on etcd); 0 while it follows",
        );
        let fleet_config_revision = gauge(
            &mut registry,
            "fleet_config_revision",
            "etcd revision of the fleet config in force (replicas on etcd); 0 when none was pushed or with the embedded store",
        );
        let fleet_config_stored_revision = gauge(
            &mut registry,
            "fleet_config_stored_revision",
            "etcd revision of the fleet config stored in etcd, read every 30s (replicas on etcd); above medic_fleet_config_revision while a push waits for a SIGHUP",
        );
        let gate_open = Family::<GateLabel, Gauge>::default();
        registry.register(
            "gate_open",
            "1 while an alert gate holds nothing back: its query returns nothing, and it can be evaluated or says on_error = \"open\"",
            gate_open.clone(),
        );
        let gate_closed_domains = Family::<GateLabel, Gauge>::default();
        registry.register(
            "gate_closed_domains",
            "Label values (failure domains) an alert gate holds now, counting those it cannot evaluate when on_error = \"closed\"; 0 or 1 for a fleet-wide gate",
            gate_closed_domains.clone(),
        );
        let gate_failing = Family::<GateLabel, Gauge>::default();
        registry.register(
            "gate_failing",
            "1 while an alert gate's last round had an evaluation that failed (source unreachable, timeout, query refused)",
            gate_failing.clone(),
        );
        let gate_errors = Family::<GateLabel, Counter>::default();
        registry.register(
            "gate_errors",
            "Alert gate evaluations that failed (source unreachable, timeout, query refused)",
            gate_errors.clone(),
        );
        let gate_last_success = Family::<GateLabel, Gauge>::default();
        registry.register(
            "gate_last_success_timestamp_seconds",
            "When an alert gate last finished a round with every evaluation answered (Unix time; 0: never)",
            gate_last_success.clone(),
        );
        for result in ["ok", "failed", "timeout", "busy"] {
            let _ = tls_handshakes.get_or_create(&ResultLabel {
                result: result.to_owned(),
            });
        }
        for service in ["remediation", "admin"] {
            for code in ["unauthenticated", "permission_denied"] {
                let _ = auth_refused.get_or_create(&RefusalLabels {
                    service: service.to_owned(),
                    code: code.to_owned(),
                });
            }
        }
        // Series alerts compute increase() on exist from the start at 0:
        // a counter first seen at 1 has no increase to alert on.
        for result in ["ok", "error"] {
            let _ = config_reloads.get_or_create(&ResultLabel {
                result: result.to_owned(),
            });
        }
        for reason in ["queue_full", "failed"] {
            let _ = notifications_dropped.get_or_create(&ReasonLabel {
                reason: reason.to_owned(),
            });
        }
        for action in Action::BUILTIN {
            let l = ActionLabel {
                action: action.as_str().to_owned(),
            };
            let _ = permits_active.get_or_create(&l);
            let _ = permits_cap.get_or_create(&l);
            let _ = rate_budget_remaining.get_or_create(&l);
        }
        for method in ["Heartbeat", "RequestPermit", "RenewPermit", "ReportOutcome"] {
            let _ = rpc_duration.get_or_create(&MethodLabel {
                method: method.to_owned(),
            });
        }
        let mut decision_counters = HashMap::new();
        let outcomes = ["granted", "replayed", "waiting_approval"]
            .into_iter()
            .chain(DenyReason::ALL.iter().map(|r| r.as_str()));
        for outcome in outcomes {
            for action in Action::BUILTIN {
                let c = decisions
                    .get_or_create(&DecisionLabels {
                        action: action.as_str().to_owned(),
                        outcome: outcome.to_owned(),
                    })
                    .clone();
                decision_counters.insert((action, outcome), c);
            }
        }
        Self {
            tls_handshakes,
            auth_refused,
            tls_cert_expiry,
            insecure,
            leader,
            fleet_config_revision,
            fleet_config_stored_revision,
            gate_open,
            gate_closed_domains,
            gate_failing,
            gate_errors,
            gate_last_success,
            notifications_sent,
            notification_retries,
            notifications_dropped,
            clock_steps,
            connections_open,
            connections_refused,
            connections_closed_idle,
            decision_counters,
            status_actions: std::sync::Mutex::new(Action::BUILTIN.to_vec()),
            rpc_histograms: std::sync::RwLock::default(),
            registry,
            decisions,
            permits_active,
            permits_cap,
            rate_budget_remaining,
            breaker_fleet_open,
            breakers_open,
            breakers_half_open,
            breaker_open,
            pauses_active,
            overrides_active,
            approvals_pending,
            approval_oldest_pending,
            hosts_live,
            hosts_unhealthy,
            hosts_silent,
            hosts_quarantined,
            hosts_known,
            warming_up,
            dry_run,
            rpc_duration,
            store_commit_duration,
            store_commit_records,
            config_reloads,
            admission_rejected,
            denials_sampled,
            permits_expired,
            audit_compacted,
        }
    }

    /// Counts one decision (`outcome`: `granted`, `replayed`,
    /// `waiting_approval` or a denial reason's name). An action the
    /// configuration does not declare is counted as `undeclared`: its name
    /// comes from the caller, and a series per made-up name would last as
    /// long as the process.
    pub fn decision(&self, action: Action, outcome: &'static str) {
        if let Some(c) = self.decision_counters.get(&(action, outcome)) {
            c.inc();
            return;
        }
        let action = if outcome == DenyReason::UnknownAction.as_str() {
            "undeclared"
        } else {
            action.as_str()
        };
        self.decisions
            .get_or_create(&DecisionLabels {
                action: action.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Counts a dropped notification.
    pub fn notification_dropped(&self, reason: &str) {
        self.notifications_dropped
            .get_or_create(&ReasonLabel {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Counts a TLS handshake by result.
    pub fn handshake(&self, result: &str) {
        self.tls_handshakes
            .get_or_create(&ResultLabel {
                result: result.to_owned(),
            })
            .inc();
    }

    /// Counts a refused call.
    pub fn refused(&self, service: &str, code: tonic::Code) {
        let code = match code {
            tonic::Code::Unauthenticated => "unauthenticated",
            _ => "permission_denied",
        };
        self.auth_refused
            .get_or_create(&RefusalLabels {
                service: service.to_owned(),
                code: code.to_owned(),
            })
            .inc();
    }

    /// Observes one RPC's duration.
    pub fn rpc(&self, method: &str, seconds: f64) {
        let cached = self
            .rpc_histograms
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(method)
            .cloned();
        let h = match cached {
            Some(h) => h,
            None => {
                let h = self
                    .rpc_duration
                    .get_or_create(&MethodLabel {
                        method: method.to_owned(),
                    })
                    .clone();
                self.rpc_histograms
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert(method.to_owned(), h.clone());
                h
            }
        };
        h.observe(seconds);
    }

    /// Sets the gauges from the engine's status. A custom action a reload
    /// removed loses its series instead of keeping its last values.
    pub fn set_status(&self, s: &Status) {
        {
            let mut shown = self
                .status_actions
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let now: Vec<Action> = s.actions.iter().map(|a| a.action).collect();
            for gone in shown.iter().filter(|a| !now.contains(a)) {
                let l = ActionLabel {
                    action: gone.as_str().to_owned(),
                };
                self.permits_active.remove(&l);
                self.permits_cap.remove(&l);
                self.rate_budget_remaining.remove(&l);
            }
            *shown = now;
        }
        for a in &s.actions {
            let l = ActionLabel {
                action: a.action.as_str().to_owned(),
            };
            self.permits_active
                .get_or_create(&l)
                .set(i64::from(a.active));
            self.permits_cap
                .get_or_create(&l)
                .set(i64::from(a.effective_cap));
            self.rate_budget_remaining
                .get_or_create(&l)
                .set(i64::from(a.rate_limit.saturating_sub(a.rate_used)));
        }
        let open = || s.breakers.iter().filter(|b| b.is_open());
        let fleet_open = open().any(|b| b.scope == medic_policy::BreakerScope::Fleet);
        self.breaker_fleet_open.set(i64::from(fleet_open));
        self.breakers_open.set(len(open().count()));
        self.breakers_half_open
            .set(len(s.breakers.iter().filter(|b| !b.is_open()).count()));
        for cause in BreakerCause::ALL {
            self.breaker_open
                .get_or_create(&CauseLabel {
                    cause: cause.as_str().to_owned(),
                })
                .set(len(open().filter(|b| b.cause == cause).count()));
        }
        self.pauses_active.set(len(s.pauses.len()));
        self.overrides_active.set(len(s.overrides.len()));
        let pending = || {
            s.approvals
                .iter()
                .filter(|a| a.state == medic_policy::ApprovalState::Pending)
        };
        self.approvals_pending.set(len(pending().count()));
        self.approval_oldest_pending.set(
            pending()
                .map(|a| a.requested_at)
                .min()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
        );
        self.hosts_live.set(i64::from(s.live_hosts));
        self.hosts_unhealthy.set(i64::from(s.unhealthy_hosts));
        self.hosts_silent.set(i64::from(s.silent_hosts));
        self.hosts_quarantined.set(i64::from(s.quarantined_hosts));
        self.hosts_known.set(i64::from(s.known_hosts));
        self.warming_up.set(i64::from(s.warming_up_until.is_some()));
        self.dry_run.set(i64::from(s.dry_run));
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

fn len(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
