//! The `medic-coordinator` command line: `run`, `check-config`, `config
//! check|push|show` and `dev-certs`, each a function returning the exit
//! code; `main.rs` only parses the flags and calls [`Cli::run`].

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};
use medic_policy::ConfigError;
use medic_store::RedbStore;

use crate::config::StoreConfig;
use crate::{CoordinatorConfig, Listeners, RunError, SystemClock, run, signal};

/// A usage error (EX_USAGE).
pub const EXIT_USAGE: u8 = 64;
/// A config error (EX_CONFIG): systemd does not restart on it.
pub const EXIT_CONFIG: u8 = 78;
/// A replica that lost its leadership (EX_TEMPFAIL): restarted
/// (`Restart=on-failure`) to follow.
pub const EXIT_LOST_LEADERSHIP: u8 = 75;

#[derive(Parser, Debug)]
#[command(
    name = "medic-coordinator",
    version,
    about = "Grants remediation permits to medic agents inside fleet-wide limits"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve agents and operators.
    Run {
        /// The config file (coordinator.toml). Without it, the embedded
        /// defaults apply (and SIGHUP has nothing to re-read).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Log format: text (default) or json.
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
    },
    /// Validate a config file: print every error with its key path (exit
    /// 78), or a one-line summary (exit 0).
    CheckConfig {
        /// The config file.
        file: PathBuf,
    },
    /// The fleet-wide configuration of replicated coordinators, in etcd.
    Config {
        #[command(subcommand)]
        action: ConfigCommand,
    },
    /// Write a CA and certificates for trying medic with mutual TLS: the
    /// coordinator's (localhost and --server-names), one per agent host,
    /// an admin operator's (operator.pem) and a read-only one's
    /// (viewer.pem). Reuses the CA already in DIR; keys are written 0600.
    /// For trials and tests: production fleets use their own PKI.
    DevCerts {
        /// Where to write them (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Agent hosts, comma-separated: agents/HOST.pem and .key each.
        #[arg(long, value_delimiter = ',', value_name = "HOST,...")]
        hosts: Vec<String>,
        /// More names for the coordinator's certificate (DNS names or IP
        /// addresses), comma-separated.
        #[arg(long, value_delimiter = ',', value_name = "NAME,...")]
        server_names: Vec<String>,
        /// How long the certificates are valid.
        #[arg(long, default_value = "90d", value_parser = humantime::parse_duration)]
        validity: std::time::Duration,
        /// Replace existing certificates (the CA is always kept).
        #[arg(long)]
        force: bool,
    },
    /// Print a shell completion script (bash, zsh or fish), for example
    /// `medic-coordinator completions bash > /etc/bash_completion.d/medic-coordinator`. The Debian
    /// package installs them.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the man pages (medic-coordinator.1 and one per subcommand) into a directory.
    #[command(hide = true)]
    Man {
        /// Where to write them (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

/// `medic-coordinator config ...`: the fleet-wide configuration of
/// replicated coordinators, kept in etcd.
#[derive(Subcommand, Debug)]
enum ConfigCommand {
    /// Validate a fleet config file (only the fleet-wide sections: mode,
    /// fleet, breaker, limits, idempotency, audit, notify, gates) without storing
    /// it: every error with its key path (exit 78), or a summary (exit 0).
    Check {
        /// The fleet config file.
        file: PathBuf,
    },
    /// Validate a fleet config file and store it in the etcd of the
    /// replica config's [store]. Every replica re-reads it on SIGHUP
    /// (`systemctl reload medic-coordinator`): the leader applies it; a
    /// replica elected later reads it when elected.
    Push {
        /// A replica's coordinator.toml, for [store] (etcd endpoints,
        /// prefix, TLS).
        #[arg(long, short)]
        config: PathBuf,
        /// The fleet config file.
        file: PathBuf,
        /// Store it only if the stored config is still at this etcd
        /// revision (as `config show` printed it; 0: none pushed yet), so
        /// that a push made meanwhile by someone else is not undone.
        #[arg(long, value_name = "REVISION")]
        expect_revision: Option<i64>,
        /// Push into a prefix that holds no medic state yet (before the
        /// deployment's first replica starts); without it, that is an
        /// error, so that a mistyped prefix does not start a new, empty
        /// deployment nobody reads.
        #[arg(long)]
        init: bool,
    },
    /// Print the fleet config stored in etcd, and its revision (on stderr).
    Show {
        /// A replica's coordinator.toml, for [store].
        #[arg(long, short)]
        config: PathBuf,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

impl Cli {
    /// Runs the command; its exit code.
    pub fn run(self) -> ExitCode {
        match self.command {
            Command::CheckConfig { file } => check_config(&file),
            Command::Config { action } => fleet_command(action),
            Command::DevCerts {
                out,
                hosts,
                server_names,
                validity,
                force,
            } => dev_certs(&crate::devcerts::DevCerts {
                out,
                hosts,
                server_names,
                validity,
                force,
            }),
            Command::Run { config, log_format } => serve_command(config, log_format),
            Command::Completions { shell } => docs(Some(shell), None),
            Command::Man { out } => docs(None, Some(&out)),
        }
    }
}

/// `completions SHELL` and `man --out DIR`: what the Debian package
/// installs, generated from this command line's own definition.
fn docs(shell: Option<clap_complete::Shell>, out: Option<&Path>) -> ExitCode {
    use clap::CommandFactory;
    use std::io::Write;
    let result = match (shell, out) {
        (Some(shell), _) => std::io::stdout().write_all(&medic_proto::clidocs::completion(
            Cli::command(),
            "medic-coordinator",
            shell,
        )),
        (None, Some(dir)) => {
            medic_proto::clidocs::write_man_pages(Cli::command(), "medic-coordinator", dir)
                .map(|_| ())
        }
        (None, None) => Ok(()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("medic-coordinator: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `check-config FILE`.
fn check_config(file: &Path) -> ExitCode {
    match CoordinatorConfig::load(file).and_then(|c| match c.build_errors() {
        e if e.is_empty() => Ok(c),
        e => Err(medic_policy::config::ConfigErrors(e)),
    }) {
        Ok(c) if matches!(c.store, StoreConfig::Etcd(_)) => {
            println!(
                "{}: ok: a replica's config (listen {}, {}); the fleet-wide limits are in etcd: \
                 `medic-coordinator config show` prints them, `config check` validates a new \
                 fleet config file",
                file.display(),
                c.server.listen,
                c.transport_summary()
            );
            ExitCode::SUCCESS
        }
        Ok(c) => {
            println!("{}: ok: {}", file.display(), c.summary());
            ExitCode::SUCCESS
        }
        Err(errors) => print_errors(file, &errors.0),
    }
}

/// `dev-certs`.
fn dev_certs(spec: &crate::devcerts::DevCerts) -> ExitCode {
    match crate::devcerts::write(spec) {
        Ok(files) => {
            for f in &files {
                println!("wrote {}", f.display());
            }
            println!(
                "{}/ca.key can sign operators' certificates: keep it here, never copy it to \
                 agents' hosts (they need ca.pem and their own agents/HOST.pem and .key)",
                spec.out.display()
            );
            if files.is_empty() {
                println!(
                    "{}: every certificate already exists (--force replaces them)",
                    spec.out.display()
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("dev-certs: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `run`: load the config, start the runtime, serve until stopped.
fn serve_command(config: Option<PathBuf>, log_format: LogFormat) -> ExitCode {
    medic_proto::logs::init(matches!(log_format, LogFormat::Json));
    let cfg = match &config {
        None => CoordinatorConfig::default(),
        Some(path) => match CoordinatorConfig::load(path) {
            Ok(c) => c,
            Err(errors) => {
                for e in &errors.0 {
                    tracing::error!("{}: {e}", path.display());
                }
                return ExitCode::from(EXIT_CONFIG);
            }
        },
    };
    let unsupported = cfg.build_errors();
    if !unsupported.is_empty() {
        for e in &unsupported {
            tracing::error!("{e}");
        }
        return ExitCode::from(EXIT_CONFIG);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(cfg, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            match e.downcast_ref::<RunError>() {
                Some(RunError::LostLeadership(_)) => ExitCode::from(EXIT_LOST_LEADERSHIP),
                Some(RunError::Config { .. }) => ExitCode::from(EXIT_CONFIG),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

fn print_errors(file: &Path, errors: &[ConfigError]) -> ExitCode {
    for e in errors {
        eprintln!("{}: {e}", file.display());
    }
    eprintln!("{}: {} error(s)", file.display(), errors.len());
    ExitCode::from(EXIT_CONFIG)
}

/// What `config push|show` asks of etcd (a build without it refuses both).
#[cfg_attr(not(feature = "etcd"), allow(dead_code))]
enum FleetAction {
    Show,
    Push {
        file: PathBuf,
        expected: Option<i64>,
        init: bool,
    },
}

/// `config check|push|show`.
fn fleet_command(action: ConfigCommand) -> ExitCode {
    let (replica_path, action) = match action {
        ConfigCommand::Check { file } => return fleet_check(&file),
        ConfigCommand::Push {
            config,
            file,
            expect_revision,
            init,
        } => (
            config,
            FleetAction::Push {
                file,
                expected: expect_revision,
                init,
            },
        ),
        ConfigCommand::Show { config } => (config, FleetAction::Show),
    };
    // Only [store] of the replica's file: these commands need etcd, not
    // the replica's own keys and certificates.
    let replica = match CoordinatorConfig::load_store_section(&replica_path) {
        Ok(c) => c,
        Err(errors) => return print_errors(&replica_path, &errors.0),
    };
    let unsupported = replica.build_errors();
    if !unsupported.is_empty() {
        return print_errors(&replica_path, &unsupported);
    }
    fleet_etcd(&replica, &replica_path, action)
}

/// `config check FILE`.
fn fleet_check(file: &Path) -> ExitCode {
    use crate::config::FleetConfig;
    match read_text(file).and_then(|t| FleetConfig::from_toml(&t).map_err(|e| e.0)) {
        Ok(fleet) => {
            let c = CoordinatorConfig::default().with_fleet(fleet, None);
            let mode = if c.policy.dry_run {
                "dry-run"
            } else {
                "enforce"
            };
            println!(
                "{}: ok: mode {mode}, {}",
                file.display(),
                c.limits_summary()
            );
            ExitCode::SUCCESS
        }
        Err(errors) => print_errors(file, &errors),
    }
}

fn read_text(file: &Path) -> Result<String, Vec<ConfigError>> {
    std::fs::read_to_string(file).map_err(|e| {
        vec![ConfigError {
            path: String::new(),
            message: format!("cannot read {}: {e}", file.display()),
        }]
    })
}

#[cfg(feature = "etcd")]
fn fleet_etcd(replica: &CoordinatorConfig, replica_path: &Path, action: FleetAction) -> ExitCode {
    use crate::fleet::{self, FleetError};
    let (file, expected, init) = match action {
        FleetAction::Push {
            file,
            expected,
            init,
        } => (file, expected, init),
        FleetAction::Show => {
            return match fleet::show(replica) {
                Ok(Some((text, revision))) => {
                    eprintln!("# fleet config at etcd revision {revision}");
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Ok(None) => {
                    eprintln!(
                        "no fleet config was pushed: the replicas run on the embedded defaults"
                    );
                    ExitCode::SUCCESS
                }
                Err(FleetError::NotReplicated) => {
                    eprintln!("{}: {}", replica_path.display(), FleetError::NotReplicated);
                    ExitCode::FAILURE
                }
                Err(e) => {
                    eprintln!("config: {e}");
                    ExitCode::FAILURE
                }
            };
        }
    };
    let text = match read_text(&file) {
        Ok(t) => t,
        Err(errors) => return print_errors(&file, &errors),
    };
    match fleet::push_expecting(replica, &text, expected, init) {
        Ok(revision) => {
            println!(
                "{}: stored as the fleet config at etcd revision {revision}. The leader applies \
                 it on SIGHUP: run `systemctl reload medic-coordinator` on every replica \
                 (medicctl reload reaches only the leader, and the followers would lag); a \
                 replica elected later reads it when elected",
                file.display()
            );
            ExitCode::SUCCESS
        }
        Err(FleetError::Invalid(errors)) => print_errors(&file, &errors.0),
        Err(e @ FleetError::NotReplicated) => {
            eprintln!("{}: {e}", replica_path.display());
            ExitCode::FAILURE
        }
        Err(e @ FleetError::Store(medic_store::StoreError::Missing { .. })) => {
            eprintln!("config: {e}; to push before it has, add --init");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("config: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(not(feature = "etcd"))]
fn fleet_etcd(_: &CoordinatorConfig, replica_path: &Path, _: FleetAction) -> ExitCode {
    eprintln!(
        "{}: [store] kind = \"embedded\": a fleet config is for replicated coordinators on \
         etcd (a single coordinator reads everything from its own file)",
        replica_path.display()
    );
    ExitCode::from(EXIT_CONFIG)
}

async fn serve(cfg: CoordinatorConfig, path: Option<PathBuf>) -> anyhow::Result<()> {
    use anyhow::Context;
    let grpc = tokio::net::TcpListener::bind(cfg.server.listen)
        .await
        .with_context(|| format!("cannot listen on server.listen {}", cfg.server.listen))?;
    let metrics = tokio::net::TcpListener::bind(cfg.server.metrics_listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on server.metrics_listen {}",
                cfg.server.metrics_listen
            )
        })?;
    let control = signal::listen().context("cannot install signal handlers")?;
    let listeners = Listeners { grpc, metrics };
    match &cfg.store {
        StoreConfig::Embedded => {
            let store = RedbStore::open(&cfg.server.state_dir).map_err(RunError::from)?;
            run(cfg, path, store, listeners, control, Arc::new(SystemClock)).await?;
        }
        #[cfg(feature = "etcd")]
        StoreConfig::Etcd(_) => {
            crate::ha::run_replicated(cfg, path, listeners, control, Arc::new(SystemClock)).await?;
        }
        // Refused before the runtime started (`build_errors`).
        #[cfg(not(feature = "etcd"))]
        StoreConfig::Etcd(_) => {}
    }
    Ok(())
}
