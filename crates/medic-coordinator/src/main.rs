//! `medic-coordinator`: flags, config, listeners, then `run`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use std::sync::Arc;

use medic_coordinator::config::StoreConfig;
use medic_coordinator::{CoordinatorConfig, Listeners, RunError, SystemClock, run, signal};
use medic_store::RedbStore;

const EXIT_USAGE: u8 = 64;
const EXIT_CONFIG: u8 = 78;
/// A replica that lost its leadership: restarted (`Restart=on-failure`)
/// to follow; the same value as `medic_coordinator::ha::EXIT_LOST_LEADERSHIP`,
/// which builds without the `etcd` feature do not have.
const EXIT_LOST_LEADERSHIP: u8 = 75;

#[derive(Parser, Debug)]
#[command(
    name = "medic-coordinator",
    version,
    about = "Grants remediation permits to medic agents inside fleet-wide limits"
)]
struct Cli {
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
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match cli.command {
        Command::CheckConfig { file } => {
            match CoordinatorConfig::load(&file).and_then(|c| match c.build_errors() {
                e if e.is_empty() => Ok(c),
                e => Err(medic_policy::config::ConfigErrors(e)),
            }) {
                Ok(c) => {
                    println!("{}: ok: {}", file.display(), c.summary());
                    ExitCode::SUCCESS
                }
                Err(errors) => {
                    for e in &errors.0 {
                        eprintln!("{}: {e}", file.display());
                    }
                    eprintln!("{}: {} error(s)", file.display(), errors.0.len());
                    ExitCode::from(EXIT_CONFIG)
                }
            }
        }
        Command::DevCerts {
            out,
            hosts,
            server_names,
            validity,
            force,
        } => {
            let spec = medic_coordinator::devcerts::DevCerts {
                out,
                hosts,
                server_names,
                validity,
                force,
            };
            match medic_coordinator::devcerts::write(&spec) {
                Ok(files) => {
                    for f in &files {
                        println!("wrote {}", f.display());
                    }
                    println!(
                        "{}/ca.key can sign operators' certificates: keep it here, never copy it \
                         to agents' hosts (they need ca.pem and their own agents/HOST.pem and .key)",
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
        Command::Run { config, log_format } => {
            init_logging(log_format);
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
    }
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
            medic_coordinator::ha::run_replicated(
                cfg,
                path,
                listeners,
                control,
                Arc::new(SystemClock),
            )
            .await?;
        }
        // Refused before the runtime started (`build_errors`).
        #[cfg(not(feature = "etcd"))]
        StoreConfig::Etcd(_) => {}
    }
    Ok(())
}

fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}
