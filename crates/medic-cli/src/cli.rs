//! The command line: flags, subcommands and their help.
//!
//! Everything here is parsed by clap before any connection is made, so a
//! malformed value is a usage error (exit 64) that names the flag.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use clap::{Args, Parser, Subcommand, ValueEnum};
use medic_proto::pb::v1 as pb;

/// The coordinator's gRPC address when neither `--coordinator` nor
/// `MEDIC_COORDINATOR` says otherwise (the coordinator's default `listen`).
pub const DEFAULT_COORDINATOR: &str = "http://127.0.0.1:7470";

const ABOUT: &str = "Operate medic's coordinator: pause remediation, inspect it, override it";

const LONG_ABOUT: &str = "\
Operate medic's coordinator: pause remediation, inspect it, override it.

medicctl talks to the coordinator's operator API (medic.v1.Admin over gRPC).
Every call that changes state needs --reason; the coordinator records it in
the audit history with the caller's identity (--as, until mutual TLS names
operators).";

const AFTER_HELP: &str = "\
In an incident:
  medicctl pause --reason 'db-3 failover, INC-1234'   stop every grant, fleet-wide
  medicctl status                                      what medic is doing now
  medicctl permits                                     permits in flight
  medicctl revoke p-000000000042 --reason 'INC-1234'   stop one before it acts
  medicctl resume --reason 'db-3 back'                 end the fleet-wide pause

Exit codes:
  0   ok
  1   the call failed (the coordinator's message is printed)
  2   the coordinator is unreachable (refused, TLS failure, --timeout)
  64  bad usage";

/// `medicctl`: the operator's command line for medic's coordinator.
#[derive(Debug, Parser)]
#[command(
    name = "medicctl",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_help = AFTER_HELP,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    /// Where and how to connect, and how to print.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every subcommand accepts.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// The coordinator's gRPC URL (https:// for TLS); for replicas on
    /// etcd, every replica's, comma-separated: medicctl talks to the leader
    #[arg(
        long,
        global = true,
        env = "MEDIC_COORDINATOR",
        default_value = DEFAULT_COORDINATOR,
        value_name = "URL",
        help_heading = "Connection"
    )]
    pub coordinator: String,

    /// Output format: aligned tables for people, JSON for scripts
    #[arg(
        short = 'o',
        long,
        global = true,
        value_enum,
        default_value_t = OutputFormat::Table,
        value_name = "FORMAT",
        help_heading = "Output"
    )]
    pub output: OutputFormat,

    /// How long to wait for the coordinator, per call (`10s`, `1m`)
    #[arg(
        long,
        global = true,
        default_value = "10s",
        value_parser = parse_positive_duration,
        value_name = "DURATION",
        help_heading = "Connection"
    )]
    pub timeout: Duration,

    /// Who you are, for the audit history [default: $USER]
    ///
    /// Sent as `medic-actor` metadata. Over plaintext the coordinator
    /// records it as a claim (`unverified:NAME@ADDRESS`); over mutual TLS
    /// it records the identity your certificate or token proves instead.
    #[arg(
        long = "as",
        global = true,
        env = "MEDIC_ACTOR",
        value_name = "NAME",
        help_heading = "Connection"
    )]
    pub actor: Option<String>,

    /// CA certificate (PEM) to verify the coordinator with [default: the
    /// system's trust store]
    #[arg(
        long,
        global = true,
        env = "MEDIC_TLS_CA",
        value_name = "FILE",
        help_heading = "TLS (https:// only)"
    )]
    pub tls_ca: Option<PathBuf>,

    /// Client certificate (PEM) for mutual TLS; needs --tls-key
    #[arg(
        long,
        global = true,
        env = "MEDIC_TLS_CERT",
        value_name = "FILE",
        help_heading = "TLS (https:// only)"
    )]
    pub tls_cert: Option<PathBuf>,

    /// Client private key (PEM, mode 0600) for mutual TLS; needs --tls-cert
    #[arg(
        long,
        global = true,
        env = "MEDIC_TLS_KEY",
        value_name = "FILE",
        help_heading = "TLS (https:// only)"
    )]
    pub tls_key: Option<PathBuf>,

    /// A file holding a bearer token (mode 0600), instead of a client
    /// certificate: for automation (auth.tokens in the coordinator's config)
    #[arg(
        long,
        global = true,
        env = "MEDIC_TOKEN_FILE",
        value_name = "FILE",
        help_heading = "Connection"
    )]
    pub token_file: Option<PathBuf>,
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns, durations like `3m12s`, times absolute and relative.
    Table,
    /// One JSON document (`watch`: one object per line), stable field names.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// The coordinator at a glance: mode, pauses, breakers, slots, budgets, hosts
    #[command(
        long_about = "\
The coordinator at a glance: enforce or dry-run, warm-up, pauses in force (who,
why, since, until), open circuit breakers and why, and per action the active
permits against the effective cap, the rate budget left and when the next grant
fits (when a slot frees, while every slot is in use; otherwise when the rate
budget allows), and whether its time windows are open; then the host counts.

Relative times are counted on the coordinator's clock.",
        after_help = "Example:\n  medicctl status\n  medicctl status -o json | jq '.pauses'"
    )]
    Status,

    /// Stop grants: fleet-wide, for a label selector, or for one action
    #[command(
        long_about = "\
Stop grants: fleet-wide, for hosts matching a label selector, for one action,
or a selector and an action. Permits already granted stay valid (see `revoke`).
Pauses survive coordinator restarts and last until resumed, or for --for
(at most 366 days; leave it out to pause until resumed).",
        after_help = "\
Examples:
  medicctl pause --reason 'db-3 failover, INC-1234'
  medicctl pause --reason 'rack r12 power work' --selector rack=r12 --for 2h
  medicctl pause --reason 'kernel rollout' --action reboot-host"
    )]
    Pause(PauseArgs),

    /// End pauses: by id, by exact scope (default: the fleet-wide pause), or all
    #[command(
        long_about = "\
End pauses. With --id, that pause. With --selector and/or --action, the pauses
whose scope is exactly that one (not pauses it overlaps). With neither, the
fleet-wide pauses. With --all, every pause in force.",
        after_help = "\
Examples:
  medicctl resume --reason 'db-3 back, INC-1234'
  medicctl resume --selector rack=r12 --reason 'power work done'
  medicctl resume --id 7 --reason 'wrong scope'"
    )]
    Resume(ResumeArgs),

    /// Raise or lower one limit of one action for a bounded time, or end such an override
    #[command(
        long_about = "\
Override one limit of one action for a bounded time: the fleet-wide cap
(--max-in-flight, which replaces min(max_in_flight, max_in_flight_percent)) or
the rate budget's count (--rate-count). Audited with your reason, announced by
webhook, shown in `medicctl status`, and ended by itself after --for (at most
7 days). An override never passes the configured ceiling
(limits.<action>.override_ceiling; by default the configured value, so that
without a ceiling an override can only lower a limit). A newer override of the
same action and limit replaces the older one. `medicctl override end ID` ends
one early.",
        after_help = "\
Examples:
  medicctl override --action restart-job --max-in-flight 20 --for 1h --reason 'backlog after db-3, INC-1234'
  medicctl override --action reboot-host --max-in-flight 0 --for 6h --reason 'kernel regression'
  medicctl override end 4 --reason 'backlog cleared'"
    )]
    Override(OverrideArgs),

    /// Requests waiting for a human's approval (with --all, the recent decided ones too)
    #[command(
        long_about = "\
Permit requests waiting for a human's approval ([limits.<action>.approval] in the
coordinator's configuration), newest first: who asks for what, why a human must
approve, and when the request expires undecided. Approved ones waiting for their
agent to ask again are listed too. With --all, the recently decided, expired,
withdrawn and used ones as well.",
        after_help = "\
Examples:
  medicctl approvals
  medicctl approvals --all -o json | jq '.approvals[] | select(.state == \"rejected\")'"
    )]
    Approvals(ApprovalsArgs),

    /// Approve a waiting request: it is granted when its agent asks again, if every rule still passes
    #[command(
        long_about = "\
Approve a pending approval (see `medicctl approvals`). The agent asks again
within a heartbeat and is granted only if every rule still passes: an approval
never bypasses caps, budgets, breakers, pauses or gates. An approval that its
agent does not use in time (limits.<action>.approval.use_within) expires.
Audited with your identity and reason; read-only operators cannot approve.",
        after_help = "Example:\n  medicctl approve 12 --reason 'checked the host, INC-1234'"
    )]
    Approve(DecideArgs),

    /// Reject a waiting request: it, and new ones for the same host, action and job, are denied for a while
    #[command(
        long_about = "\
Reject a pending approval (see `medicctl approvals`). The request is denied
(APPROVAL_REJECTED, naming you and your reason), and so are new requests for the
same host, action and job until the rejection lapses
(limits.<action>.approval.expire_after). Audited; read-only operators cannot
reject.",
        after_help = "Example:\n  medicctl reject 12 --reason 'host is being decommissioned'"
    )]
    Reject(DecideArgs),

    /// List hosts as the coordinator sees them
    #[command(after_help = "\
Examples:
  medicctl hosts --unhealthy
  medicctl hosts --quarantined
  medicctl hosts --selector rack=r12,zone=use1-az2")]
    Hosts(HostsArgs),

    /// List permits (active ones by default), in grant order
    #[command(after_help = "\
Examples:
  medicctl permits
  medicctl permits --action reboot-host
  medicctl permits --host web-17 --all-states")]
    Permits(PermitsArgs),

    /// End an active permit; its agent aborts before any irreversible step
    #[command(
        long_about = "\
End an active permit (state REVOKED). The agent learns it from its next
heartbeat or renewal and aborts before any irreversible step; an action already
past that step completes. The host's slot frees at once.",
        after_help = "Example:\n  medicctl revoke p-000000000042 --reason 'wrong host, INC-1234'"
    )]
    Revoke(RevokeArgs),

    /// Hold a host for a human: it gets no permit until released
    #[command(
        long_about = "\
Hold a host for a human: it gets no permit until released. The host must be
known to the coordinator (see `medicctl hosts`), so that a typo does not
quarantine nothing; --force quarantines a host that has not heartbeated yet
(before it is provisioned).",
        after_help = "\
Examples:
  medicctl quarantine web-17 --reason 'disk errors, DCOPS-881'
  medicctl quarantine web-99 --force --reason 'not ready, DCOPS-900'"
    )]
    Quarantine(QuarantineArgs),

    /// Release a quarantined host; its attempt budget starts afresh
    #[command(after_help = "Example:\n  medicctl unquarantine web-17 --reason 'disk replaced'")]
    Unquarantine(HostReasonArgs),

    /// The audit history: grants, denials, outcomes, operator calls, breakers
    #[command(
        long_about = "\
The audit history: grants, sampled denials, outcomes, revocations, breaker
changes, quarantines, pauses, config reloads and renewals, oldest first, with
who caused each and why. Fetches page after page until --limit events are
printed; when more remain, prints the --page-token that continues.",
        after_help = "\
Examples:
  medicctl history --since 1h
  medicctl history --host web-17 --kind grant,outcome
  medicctl history --kind pause,breaker,quarantine --since 2026-11-26T17:00:00Z
  medicctl history --limit 50 --page-token 1234"
    )]
    History(HistoryArgs),

    /// Why a host would (not) get a permit now: every rule that would deny
    #[command(
        long_about = "\
What would happen if HOST asked for --action now (without --action: for every
action, one after the other): every rule that would deny it (not only the
first), each with when it would clear by itself, or that a human must act.
Changes nothing and uses no budget. Exits 0 either way.",
        after_help = "\
Examples:
  medicctl explain web-17
  medicctl explain web-17 --action reboot-host"
    )]
    Explain(ExplainArgs),

    /// Circuit breakers
    #[command(subcommand)]
    Breaker(BreakerCommand),

    /// Re-read the coordinator's config file (as SIGHUP does), all or nothing
    #[command(
        long_about = "\
Re-read the coordinator's configuration file, as SIGHUP does. All or nothing: an
invalid file changes nothing, and every error is printed with its key path
(exit 1).",
        after_help = "Example:\n  medicctl reload --reason 'raise reboot cap for the kernel rollout, CHG-881'"
    )]
    Reload(ReloadArgs),

    /// Follow the audit history live, until interrupted (Ctrl-C)
    #[command(
        long_about = "\
Follow the audit history live, one line per event (one JSON object per line
with -o json), until interrupted. With --after-id, first the events recorded
after that id. When the stream breaks (the coordinator restarts or cannot be
reached, this watcher fell behind), watch says so on stderr and reconnects by
itself, waiting 0.5s doubling to 10s between attempts, and resumes after the
last event it printed: none is printed twice or lost. Only Ctrl-C, or an error
retrying cannot fix (bad arguments, permission denied), ends it.",
        after_help = "\
Examples:
  medicctl watch
  medicctl watch --kind breaker,pause,quarantine
  medicctl watch --after-id 1234 -o json"
    )]
    Watch(WatchArgs),

    /// Print a shell completion script
    #[command(
        long_about = "Print a completion script for SHELL on standard output.",
        after_help = "\
Examples:
  medicctl completions bash > /etc/bash_completion.d/medicctl
  medicctl completions zsh > \"${fpath[1]}/_medicctl\""
    )]
    Completions(CompletionsArgs),

    /// Write the man pages (medicctl.1 and one per subcommand) into a directory
    #[command(hide = true)]
    Man(ManArgs),
}

/// `medicctl pause`.
#[derive(Debug, Args)]
pub struct PauseArgs {
    /// Why, for the audit history and the denials agents see (required)
    #[arg(long, value_parser = parse_reason)]
    pub reason: String,
    /// Lift the pause by itself after this long (`30m`, `2h`) [default: until resumed]
    #[arg(long = "for", value_parser = parse_positive_duration, value_name = "DURATION")]
    pub duration: Option<Duration>,
    /// Only hosts with these labels (repeat, or comma-separate, for all of several)
    #[arg(long, value_parser = parse_label, value_delimiter = ',', value_name = "KEY=VALUE")]
    pub selector: Vec<(String, String)>,
    /// Only this action [default: every action]
    #[arg(long, value_parser = parse_action, value_name = "ACTION")]
    pub action: Option<ActionArg>,
}

/// `medicctl override`: set one (the flags), or `end` one.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct OverrideArgs {
    /// `end ID`
    #[command(subcommand)]
    pub command: Option<OverrideCommand>,
    /// The action whose limit to override (required to set one)
    #[arg(long, value_parser = parse_action, value_name = "ACTION")]
    pub action: Option<ActionArg>,
    /// The fleet-wide cap to put in force (0 stops the action)
    #[arg(long, value_name = "N", conflicts_with = "rate_count")]
    pub max_in_flight: Option<u32>,
    /// The rate budget's count per its configured window (at least 1)
    #[arg(long, value_name = "N")]
    pub rate_count: Option<u32>,
    /// How long (`30m`, `2h`; at most 7 days; required to set one)
    #[arg(long = "for", value_parser = parse_positive_duration, value_name = "DURATION")]
    pub duration: Option<Duration>,
    /// Why, for the audit history and the webhook (required)
    #[arg(long, value_parser = parse_reason)]
    pub reason: Option<String>,
}

/// `medicctl approvals`.
#[derive(Debug, Args)]
pub struct ApprovalsArgs {
    /// Also the recently decided, expired, withdrawn and used ones
    #[arg(long)]
    pub all: bool,
}

/// `medicctl approve ID` and `medicctl reject ID`.
#[derive(Debug, Args)]
pub struct DecideArgs {
    /// The approval's id (see `medicctl approvals`)
    pub id: u64,
    /// Why, for the audit history and the webhook (required)
    #[arg(long, value_parser = parse_reason)]
    pub reason: String,
}

/// `medicctl override end`.
#[derive(Debug, Subcommand)]
pub enum OverrideCommand {
    /// End an override before its time
    End(OverrideEndArgs),
}

/// `medicctl override end ID`.
#[derive(Debug, Args)]
pub struct OverrideEndArgs {
    /// The override's id (see `medicctl status`)
    pub id: u64,
    /// Why (required)
    #[arg(long, value_parser = parse_reason)]
    pub reason: String,
}

/// `medicctl resume`.
#[derive(Debug, Args)]
pub struct ResumeArgs {
    /// Why (required)
    #[arg(long, value_parser = parse_reason)]
    pub reason: String,
    /// The pause with this id (see `medicctl status`)
    #[arg(long, value_name = "ID", conflicts_with_all = ["selector", "action", "all"])]
    pub id: Option<u64>,
    /// The pauses whose selector is exactly this one
    #[arg(long, value_parser = parse_label, value_delimiter = ',', value_name = "KEY=VALUE")]
    pub selector: Vec<(String, String)>,
    /// The pauses whose action is exactly this one
    #[arg(long, value_parser = parse_action, value_name = "ACTION")]
    pub action: Option<ActionArg>,
    /// Every pause in force, whatever its scope
    #[arg(long, conflicts_with_all = ["selector", "action"])]
    pub all: bool,
}

/// `medicctl hosts`.
#[derive(Debug, Args)]
pub struct HostsArgs {
    /// Only hosts reporting a problem or holding a permit
    #[arg(long)]
    pub unhealthy: bool,
    /// Only quarantined hosts
    #[arg(long)]
    pub quarantined: bool,
    /// Only hosts with these labels (repeat, or comma-separate)
    #[arg(long, value_parser = parse_label, value_delimiter = ',', value_name = "KEY=VALUE")]
    pub selector: Vec<(String, String)>,
}

/// `medicctl permits`.
#[derive(Debug, Args)]
pub struct PermitsArgs {
    /// Only this host's permits
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,
    /// Only this action's permits
    #[arg(long, value_parser = parse_action, value_name = "ACTION")]
    pub action: Option<ActionArg>,
    /// Ended permits too (kept for the coordinator's retention period)
    #[arg(long)]
    pub all_states: bool,
}

/// `medicctl revoke`.
#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// The permit (`p-000000000042`, see `medicctl permits`)
    #[arg(value_name = "PERMIT_ID")]
    pub permit_id: String,
    /// Why (required)
    #[arg(long, value_parser = parse_reason)]
    pub reason: String,
}

/// `medicctl quarantine` and `medicctl unquarantine`.
#[derive(Debug, Args)]
pub struct HostReasonArgs {
    /// The host (its id, as in `medicctl hosts`)
    #[arg(value_name = "HOST")]
    pub host: String,
    /// Why (required)
    #[arg(long, value_parser = parse_reason)]
    pub reason: String,
}

/// `medicctl quarantine`.
#[derive(Debug, Args)]
pub struct QuarantineArgs {
    /// The host, and why.
    #[command(flatten)]
    pub target: HostReasonArgs,
    /// Quarantine the host even if the coordinator does not know it (it has
    /// not heartbeated yet)
    #[arg(long)]
    pub force: bool,
}

/// `medicctl history`.
#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Only events at or after this: a duration back from now (`1h`), a time
    /// with Z or an offset (`2026-11-26T17:00:00Z`, `2026-11-26T18:00:00+01:00`),
    /// or a local time in this machine's zone (`2026-11-26 18:00`)
    #[arg(long, value_parser = parse_when, value_name = "WHEN")]
    pub since: Option<When>,
    /// Only events before this: the same forms as --since
    #[arg(long, value_parser = parse_when, value_name = "WHEN")]
    pub until: Option<When>,
    /// Only events about this host
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,
    /// Only these kinds (repeat, or comma-separate)
    #[arg(long, value_enum, value_delimiter = ',')]
    pub kind: Vec<KindArg>,
    /// Only events about this action (leaves out breakers, quarantines, config)
    #[arg(long, value_parser = parse_action, value_name = "ACTION")]
    pub action: Option<ActionArg>,
    /// Print at most this many events
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..), value_name = "N")]
    pub limit: u32,
    /// Continue where a previous listing stopped (the token it printed)
    #[arg(long, value_name = "TOKEN")]
    pub page_token: Option<String>,
    /// Events per request to the coordinator [default: the coordinator's, 100]
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000), value_name = "N")]
    pub page_size: Option<u32>,
    /// Newest events first
    #[arg(long)]
    pub newest_first: bool,
}

/// `medicctl explain`.
#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// The host asked about
    #[arg(value_name = "HOST")]
    pub host: String,
    /// The action asked about [default: every action]
    #[arg(long, value_parser = parse_action, value_name = "ACTION")]
    pub action: Option<ActionArg>,
}

/// `medicctl breaker ...`.
#[derive(Debug, Subcommand)]
pub enum BreakerCommand {
    /// Move open circuit breakers to half-open (all of them, or one --scope)
    #[command(
        long_about = "\
Move open circuit breakers to half-open: every open one, or the one named by
--scope. A reset says the cause is fixed; it does not close the breaker. A
half-open breaker lets probe permits through (breaker.half_open_probes at a
time, one more per verified success), opens again at once if one fails or
expires, and closes after breaker.half_open_successes successes with its
condition clear. Half-open breakers are left as they are; a reset that finds
only half-open ones is refused. `medicctl status` shows each breaker's state.",
        after_help = "\
Examples:
  medicctl breaker reset --reason 'db-3 recovered, INC-1234'
  medicctl breaker reset --scope rack=r12 --reason 'switch replaced'"
    )]
    Reset(BreakerResetArgs),
}

/// `medicctl breaker reset`.
#[derive(Debug, Args)]
pub struct BreakerResetArgs {
    /// Why (required)
    #[arg(long, value_parser = parse_reason)]
    pub reason: String,
    /// Which breaker: `fleet`, or a failure domain `LABEL=VALUE` [default: every open one]
    #[arg(long, value_parser = parse_breaker_scope, value_name = "fleet|LABEL=VALUE")]
    pub scope: Option<BreakerScopeArg>,
}

/// `medicctl reload`.
#[derive(Debug, Args)]
pub struct ReloadArgs {
    /// Why (required)
    #[arg(long, value_parser = parse_reason)]
    pub reason: String,
}

/// `medicctl watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Only these kinds (repeat, or comma-separate)
    #[arg(long, value_enum, value_delimiter = ',')]
    pub kind: Vec<KindArg>,
    /// First the events recorded after this id, then live [default: live only]
    #[arg(long, value_name = "ID")]
    pub after_id: Option<u64>,
}

/// `medicctl completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// `medicctl man` (hidden: the Debian package runs it at build time).
#[derive(Debug, Args)]
pub struct ManArgs {
    /// Where to write them (created if missing)
    #[arg(long, value_name = "DIR")]
    pub out: std::path::PathBuf,
}

/// A remediation kind, as typed on the command line: `restart-job`,
/// `reboot-host`, or a custom action the coordinator declares
/// (`drain-host` or `drain_host`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActionArg(pub medic_policy::Action);

impl ActionArg {
    /// The wire's `(action, action_name)` pair.
    pub fn wire(self) -> (i32, String) {
        (
            medic_proto::convert::wire_action(self.0),
            self.0.as_str().to_owned(),
        )
    }
}

/// `--action`: hyphens or underscores, any valid action name.
pub fn parse_action(s: &str) -> Result<ActionArg, String> {
    let name = s.trim().replace('-', "_");
    medic_policy::Action::from_wire(&name)
        .map(ActionArg)
        .map_err(|e| {
            format!(
                "{}; the built-ins are restart-job and reboot-host, and medicctl status \
                 lists the coordinator's custom actions",
                e.message
            )
        })
}

/// An audit-event kind, as typed on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KindArg {
    /// A permit was granted.
    Grant,
    /// Permit requests were denied (sampled).
    Deny,
    /// A permit ended by its outcome or by expiry.
    Outcome,
    /// An operator revoked a permit.
    Admin,
    /// A circuit breaker opened, went half-open or closed.
    Breaker,
    /// A host was quarantined or released.
    Quarantine,
    /// A pause began or ended.
    Pause,
    /// A configuration reload was attempted.
    Config,
    /// A permit was renewed.
    Renew,
    /// An authenticated caller was refused (PERMISSION_DENIED).
    Access,
    /// The wall clock was checked at start-up, or found stepped.
    Clock,
    /// An operator's override of a limit began or ended.
    Override,
    /// A request began to wait for a human's approval, or its approval
    /// was decided, expired, withdrawn or used.
    Approval,
    /// An alert gate closed or opened.
    Gate,
}

impl From<KindArg> for pb::EventKind {
    fn from(k: KindArg) -> Self {
        match k {
            KindArg::Grant => pb::EventKind::Grant,
            KindArg::Deny => pb::EventKind::Deny,
            KindArg::Outcome => pb::EventKind::Outcome,
            KindArg::Admin => pb::EventKind::Admin,
            KindArg::Breaker => pb::EventKind::Breaker,
            KindArg::Quarantine => pb::EventKind::Quarantine,
            KindArg::Pause => pb::EventKind::Pause,
            KindArg::Config => pb::EventKind::Config,
            KindArg::Renew => pb::EventKind::Renew,
            KindArg::Access => pb::EventKind::Access,
            KindArg::Clock => pb::EventKind::Clock,
            KindArg::Override => pb::EventKind::Override,
            KindArg::Approval => pb::EventKind::Approval,
            KindArg::Gate => pb::EventKind::Gate,
        }
    }
}

/// A breaker, as named on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BreakerScopeArg {
    /// The fleet-wide breaker.
    Fleet,
    /// A failure domain's breaker (`rack=r12`).
    Domain {
        /// The label key.
        label: String,
        /// The label value.
        value: String,
    },
}

impl From<BreakerScopeArg> for pb::BreakerScope {
    fn from(s: BreakerScopeArg) -> Self {
        use pb::breaker_scope::{Domain, Fleet, Kind};
        pb::BreakerScope {
            kind: Some(match s {
                BreakerScopeArg::Fleet => Kind::Fleet(Fleet {}),
                BreakerScopeArg::Domain { label, value } => Kind::Domain(Domain { label, value }),
            }),
        }
    }
}

/// A point in time on the command line: an absolute UTC time, or a span
/// back from the coordinator's "now".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// This instant.
    At(SystemTime),
    /// This long before the coordinator's clock reads when asked.
    Ago(Duration),
}

// === Value parsers ===

/// A non-empty reason: the coordinator refuses an empty one too, but saying
/// so before connecting is kinder.
pub fn parse_reason(s: &str) -> Result<String, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("must not be empty: say why, for the audit history".to_owned());
    }
    Ok(t.to_owned())
}

/// A positive humantime duration (`30s`, `2h`, `1h 30m`).
pub fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| format!("{e}; expected a duration like 30s, 15m, 2h or 1h30m"))?;
    if d.is_zero() {
        return Err("must be longer than zero".to_owned());
    }
    Ok(d)
}

/// A `KEY=VALUE` label pair, with the coordinator's rules: a non-empty key,
/// and no whitespace or control characters on either side.
pub fn parse_label(s: &str) -> Result<(String, String), String> {
    let Some((k, v)) = s.split_once('=') else {
        return Err(format!("{s:?} is not KEY=VALUE (like rack=r12)"));
    };
    if k.is_empty() {
        return Err(format!("{s:?}: the key must not be empty"));
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "{s:?}: labels contain no whitespace or control characters"
        ));
    }
    Ok((k.to_owned(), v.to_owned()))
}

/// `fleet`, or `LABEL=VALUE`.
pub fn parse_breaker_scope(s: &str) -> Result<BreakerScopeArg, String> {
    if s == "fleet" {
        return Ok(BreakerScopeArg::Fleet);
    }
    let (label, value) =
        parse_label(s).map_err(|e| format!("{e}; expected `fleet` or LABEL=VALUE"))?;
    if value.is_empty() {
        return Err(format!("{s:?}: the value must not be empty"));
    }
    Ok(BreakerScopeArg::Domain { label, value })
}

/// The forms `--since` and `--until` accept, for their help and errors.
const WHEN_FORMS: &str = "a duration back from now (1h, 30m, 2d), an RFC 3339 time with \
     Z or an offset (2026-11-26T17:00:00Z, 2026-11-26T18:00:00+01:00), or a local time \
     in this machine's zone (2026-11-26 18:00, 2026-11-26T18:00:00, 2026-11-26)";

/// A span back from now (`90m`), an RFC 3339 time with `Z` or an offset
/// (`2026-11-26T18:00:00+01:00`; a space may stand for the `T`), or a local
/// time without an offset (`2026-11-26 18:00`, `2026-11-26T18:00:00`,
/// `2026-11-26` for its midnight) read in this machine's zone (`TZ`, or
/// `/etc/localtime`).
pub fn parse_when(s: &str) -> Result<When, String> {
    use chrono::{DateTime, Local, LocalResult, NaiveDate, NaiveDateTime, TimeZone};

    let s = s.trim();
    if let Ok(d) = humantime::parse_duration(s) {
        return Ok(When::Ago(d));
    }
    let bad = || format!("{s:?} is not a time; expected {WHEN_FORMS}");
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(When::At(SystemTime::from(t)));
    }
    let local = [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ]
    .iter()
    .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
    .or_else(|| {
        NaiveDate::parse_from_str(s, "%Y-%m-%d")
            .ok()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
    });
    let Some(naive) = local else {
        // An offset or Z with a space for the `T`: RFC 3339 allows it.
        return match s.split_once(' ') {
            Some((date, time)) if !time.contains(' ') => {
                DateTime::parse_from_rfc3339(&format!("{date}T{time}"))
                    .map(|t| When::At(SystemTime::from(t)))
                    .map_err(|_| bad())
            }
            _ => Err(bad()),
        };
    };
    match Local.from_local_datetime(&naive) {
        LocalResult::Single(t) => Ok(When::At(SystemTime::from(t))),
        // A wall-clock hour that happens twice (clocks set back): the
        // first, so that --since loses nothing.
        LocalResult::Ambiguous(first, _) => Ok(When::At(SystemTime::from(first))),
        LocalResult::None => Err(format!(
            "{s:?} does not exist in this machine's time zone (the clocks skip it); give an \
             offset (2026-03-29T02:30:00+01:00) or a UTC time with Z"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn reasons_must_say_something() {
        assert!(parse_reason("  ").is_err());
        assert_eq!(parse_reason(" INC-1 ").as_deref(), Ok("INC-1"));
    }

    #[test]
    fn labels_and_breaker_scopes_parse() {
        assert_eq!(
            parse_label("rack=r1"),
            Ok(("rack".to_owned(), "r1".to_owned()))
        );
        assert!(parse_label("rack").is_err());
        assert!(parse_label("=r1").is_err());
        assert!(parse_label("rack=r 1").is_err());
        assert_eq!(parse_breaker_scope("fleet"), Ok(BreakerScopeArg::Fleet));
        assert_eq!(
            parse_breaker_scope("zone=z1"),
            Ok(BreakerScopeArg::Domain {
                label: "zone".to_owned(),
                value: "z1".to_owned()
            })
        );
        assert!(parse_breaker_scope("zone=").is_err());
    }

    #[test]
    fn when_is_a_span_or_a_time() {
        assert_eq!(parse_when("1h"), Ok(When::Ago(Duration::from_secs(3600))));
        assert!(matches!(
            parse_when("2026-11-26T17:00:00Z"),
            Ok(When::At(_))
        ));
        assert!(parse_when("yesterday").is_err());
    }

    #[test]
    fn when_takes_offsets_and_local_times() {
        use chrono::{Local, NaiveDate, TimeZone};
        let utc_17 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_712_400); // 2026-11-26T17:00:00Z
        for s in [
            "2026-11-26T17:00:00Z",
            "2026-11-26T18:00:00+01:00",
            "2026-11-26 18:00:00+01:00",
            "2026-11-26T12:00:00-05:00",
        ] {
            assert_eq!(parse_when(s), Ok(When::At(utc_17)), "{s}");
        }
        // No offset: this machine's zone (TZ), whatever it is here.
        let naive = NaiveDate::from_ymd_opt(2026, 11, 26)
            .and_then(|d| d.and_hms_opt(18, 0, 0))
            .unwrap_or_default();
        let local = SystemTime::from(
            Local
                .from_local_datetime(&naive)
                .earliest()
                .unwrap_or_default(),
        );
        for s in [
            "2026-11-26 18:00",
            "2026-11-26T18:00:00",
            "2026-11-26 18:00:00.000",
        ] {
            assert_eq!(parse_when(s), Ok(When::At(local)), "{s}");
        }
        let midnight = NaiveDate::from_ymd_opt(2026, 11, 26)
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .unwrap_or_default();
        let midnight = SystemTime::from(
            Local
                .from_local_datetime(&midnight)
                .earliest()
                .unwrap_or_default(),
        );
        assert_eq!(parse_when("2026-11-26"), Ok(When::At(midnight)));
        // A mistake shows every accepted form.
        let e = parse_when("26/11/2026 18:00").expect_err("not a form it takes");
        assert!(
            e.contains("1h") && e.contains("+01:00") && e.contains("2026-11-26 18:00"),
            "{e}"
        );
        assert!(parse_when("2026-11-26T25:00:00Z").is_err());
    }
}
