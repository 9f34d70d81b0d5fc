//! `medic-agent`: flags, config, then the agent loop.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use medic_agent::state::StateFile;
use medic_agent::{Agent, AgentConfig, Control, Environment};
use tokio::signal::unix::{SignalKind, signal};

const EXIT_USAGE: u8 = 64;
const EXIT_CONFIG: u8 = 78;
/// sysexits `EX_CANTCREAT`: the state directory cannot be written.
const EXIT_CANTCREAT: u8 = 73;

#[derive(Parser, Debug)]
#[command(
    name = "medic-agent",
    version,
    about = "Detects stuck jobs on this host and remediates them, only with the coordinator's permit"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Watch the jobs and remediate with permits.
    Run {
        /// The config file (agent.toml).
        #[arg(long, short, default_value = "/etc/medic/agent.toml")]
        config: PathBuf,
        /// Log format.
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
    },
    /// Validate a config file: every error with its key path (exit 78), or
    /// a one-line summary (exit 0).
    CheckConfig {
        /// The config file.
        file: PathBuf,
    },
    /// Reset a job's ladder after fixing it by hand: forget its failed
    /// restarts and reboots and its gave-up state, in the state file.
    ///
    /// A running agent only reads the state file again when it reloads:
    /// run `systemctl reload medic-agent` (SIGHUP) right after, or stop
    /// the agent first. The host's quarantine is the coordinator's: release
    /// it with `medicctl unquarantine HOST`, which also resets the ladders
    /// of jobs that gave up.
    ResetJob {
        /// The job's name, as in the config's [[jobs]] name.
        job: String,
        /// The config file, for its `state_dir`.
        #[arg(long, short, default_value = "/etc/medic/agent.toml")]
        config: PathBuf,
        /// The state directory, instead of the config's `state_dir`.
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
    /// Print a shell completion script (bash, zsh or fish), for example
    /// `medic-agent completions bash > /etc/bash_completion.d/medic-agent`. The Debian
    /// package installs them.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the man pages (medic-agent.1 and one per subcommand) into a directory.
    #[command(hide = true)]
    Man {
        /// Where to write them (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match cli.command {
        Command::CheckConfig { file } => match AgentConfig::load(&file) {
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
        },
        Command::ResetJob {
            job,
            config,
            state_dir,
        } => reset_job(&job, &config, state_dir),
        Command::Completions { shell } => docs(Some(shell), None),
        Command::Man { out } => docs(None, Some(&out)),
        Command::Run { config, log_format } => {
            medic_proto::logs::init(matches!(log_format, LogFormat::Json));
            let cfg = match AgentConfig::load(&config) {
                Ok(c) => c,
                Err(errors) => {
                    for e in &errors.0 {
                        tracing::error!("{}: {e}", config.display());
                    }
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            // Without a usable state directory the agent could not keep its
            // ladder or finish a reboot: refuse to start, and say why.
            if let Err(e) = StateFile::new(&cfg.state_dir).check_writable() {
                tracing::error!(
                    state_dir = %cfg.state_dir.display(),
                    "{e}; the agent keeps its ladder counters and a reboot's pending permit \
                     there and does not start without it (fix state_dir in {})",
                    config.display()
                );
                return ExitCode::from(EXIT_CANTCREAT);
            }
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!("cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            runtime.block_on(serve(cfg, config))
        }
    }
}

fn reset_job(job: &str, config: &Path, state_dir: Option<PathBuf>) -> ExitCode {
    let dir = match state_dir {
        Some(d) => d,
        None => match AgentConfig::load(config) {
            Ok(c) => c.state_dir,
            Err(errors) => {
                for e in &errors.0 {
                    eprintln!("{}: {e}", config.display());
                }
                eprintln!(
                    "cannot find the state directory in {}; name it with --state-dir",
                    config.display()
                );
                return ExitCode::from(EXIT_CONFIG);
            }
        },
    };
    let file = StateFile::new(&dir);
    match file.reset_job(job) {
        Ok(None) => {
            println!(
                "{}: job {job:?} has no ladder recorded; nothing to reset",
                file.path().display()
            );
            ExitCode::SUCCESS
        }
        Ok(Some(old)) => {
            println!(
                "{}: job {job:?} reset (was: {} failed restart(s), {} failed reboot(s){}). \
                 Reload a running agent now (systemctl reload medic-agent) so that it reads it.",
                file.path().display(),
                old.failed_restarts,
                old.failed_reboots,
                old.gave_up
                    .map(|why| format!(", gave up: {why}"))
                    .unwrap_or_default(),
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
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
            "medic-agent",
            shell,
        )),
        (None, Some(dir)) => {
            medic_proto::clidocs::write_man_pages(Cli::command(), "medic-agent", dir).map(|_| ())
        }
        (None, None) => Ok(()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("medic-agent: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The longest a stop waits for an action in flight: the slowest job's
/// restart (its hooks, grace, command and verification) with a minute to
/// spare, within the unit's `TimeoutStopSec` (5 minutes). Probation is not
/// waited for: the next agent resumes it.
fn stop_bound(cfg: &AgentConfig) -> Duration {
    let hook = |h: &Option<medic_agent::config::HookConfig>| h.as_ref().map(|h| h.timeout);
    let slowest = cfg
        .jobs
        .iter()
        .map(|j| {
            j.restart.grace
                + j.restart.command_timeout
                + j.restart.verify_timeout
                + hook(&j.pre).unwrap_or_default()
                + hook(&j.post).unwrap_or_default()
        })
        .max()
        .unwrap_or_default();
    (slowest + Duration::from_secs(60)).min(Duration::from_secs(270))
}

async fn serve(cfg: AgentConfig, path: PathBuf) -> ExitCode {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let agent = Agent::new(cfg.clone(), Environment::default());
    let activity = agent.activity();
    let bound = stop_bound(&cfg);
    let stop = move |signal: &str| {
        match activity.describe() {
            Some(what) => tracing::warn!(
                signal,
                "stopping after the action in flight: {what} (at most {})",
                humantime::format_duration(bound)
            ),
            None => tracing::info!(signal, "stopping"),
        }
        // Bounded: an action that overruns is left to its permit's expiry
        // (the coordinator then quarantines the host for a human).
        tokio::spawn(async move {
            tokio::time::sleep(bound).await;
            tracing::error!(
                "still not stopped {} after the stop request: exiting now; the permit in flight \
                 ends by expiry",
                humantime::format_duration(bound)
            );
            std::process::exit(1);
        });
    };
    let signals = (
        signal(SignalKind::hangup()),
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    let (Ok(mut hup), Ok(mut term), Ok(mut int)) = signals else {
        tracing::error!("cannot install signal handlers");
        return ExitCode::FAILURE;
    };
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = hup.recv() => match AgentConfig::load(&path) {
                    Ok(c) => { let _ = tx.send(Control::Reload(Box::new(c))).await; }
                    Err(errors) => for e in &errors.0 {
                        tracing::error!("reload rejected, the running configuration stays: {}: {e}", path.display());
                    },
                },
                _ = term.recv() => { stop("SIGTERM"); let _ = tx.send(Control::Shutdown).await; }
                _ = int.recv() => { stop("SIGINT"); let _ = tx.send(Control::Shutdown).await; }
            }
        }
    });
    let _ = sd_ready();
    agent.run(rx).await;
    ExitCode::SUCCESS
}

fn sd_ready() -> std::io::Result<()> {
    // Type=notify readiness, when run under systemd (NOTIFY_SOCKET set).
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(());
    };
    let sock = std::os::unix::net::UnixDatagram::unbound()?;
    sock.send_to(b"READY=1", path)?;
    Ok(())
}
