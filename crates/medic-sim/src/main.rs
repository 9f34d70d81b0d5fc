//! `medic-sim`: runs a scenario (or a benchmark) and reports.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use medic_sim::coord::TlsFiles;
use medic_sim::run::Transport;
use medic_sim::{Options, Scenario};

/// Exit codes: 0 every invariant held, 1 a violation (or a storm missed its
/// bound), 64 bad usage, 78 a bad scenario or configuration.
const EXIT_VIOLATION: u8 = 1;
const EXIT_USAGE: u8 = 64;
const EXIT_CONFIG: u8 = 78;

#[derive(Debug, Parser)]
#[command(
    name = "medic-sim",
    version,
    about = "medic's fleet simulator, incident replay and load harness"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Args)]
struct Remote {
    /// Drive this coordinator instead of an in-process one (`http://`;
    /// `https://` for `bench` and `storm`). Run it with the scenario's
    /// `[coordinator]` settings divided by the speed: the invariant checker
    /// judges the run against those. Only this run's history is judged.
    #[arg(long)]
    coordinator: Option<String>,
    /// CA certificate (PEM) for an `https://` coordinator.
    #[arg(long, requires = "coordinator")]
    tls_ca: Option<PathBuf>,
    /// Client certificate (PEM), for mutual TLS.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Client key (PEM), for mutual TLS.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

impl Remote {
    fn external(&self) -> Option<(String, TlsFiles)> {
        self.coordinator.clone().map(|url| {
            (
                url,
                TlsFiles {
                    ca: self.tls_ca.clone(),
                    cert: self.tls_cert.clone(),
                    key: self.tls_key.clone(),
                },
            )
        })
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs a scenario (a built-in name or a TOML file), compares medic with
    /// the legacy reboot script, checks the invariants, writes the report.
    Run {
        /// A built-in scenario (`cascade`, `steady`, `dependency-outage`...:
        /// `medic-sim list` names them all) or a path.
        scenario: String,
        /// The scenario's short form (what CI runs).
        #[arg(long)]
        short: bool,
        /// Seed of the failures and incidents.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Run this many seeds, from `--seed` on; fails if any fails.
        #[arg(long, default_value_t = 1)]
        seeds: u64,
        /// On virtual time (the default: the simulator's own coordinator),
        /// paces the run to this many scenario seconds per real second, to
        /// watch it live; unset, it runs as fast as it can. On real time
        /// (coordinator-crash, storm, --coordinator): scenario seconds per
        /// real second, overriding the scenario's.
        #[arg(long)]
        speed: Option<f64>,
        /// Where to write the HTML report.
        #[arg(long, default_value = "medic-sim-report.html")]
        report: PathBuf,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
        /// On virtual time, how the agents reach the simulator's
        /// coordinator: `direct` calls its handlers in the process (fast);
        /// `grpc` gives every agent its own HTTP/2 connection in memory
        /// (the wire path; many times slower). Each repeats under its seed;
        /// `run` prints the command that replays a failing one.
        #[arg(long, value_enum, default_value_t = Transport::Direct)]
        transport: Transport,
        #[command(flatten)]
        remote: Remote,
    },
    /// Runs a scenario once per point of a grid of coordinator settings and
    /// shows the trade-off between lost capacity and remediations.
    #[command(after_help = "Example:
  medic-sim sweep cascade --short --set breaker.unhealthy_percent=10,20,30,40 \\
      --set limits.restart_job.rate.count=10,60 --report sweep.html")]
    Sweep {
        /// A built-in scenario name or a path.
        scenario: String,
        /// `KEY=V1,V2,...`: a key of the scenario's `[coordinator]` table as
        /// a dotted TOML path, and the values it takes (TOML values; bare
        /// text is a string). Repeat for more axes: the grid is their
        /// cartesian product.
        #[arg(long = "set", value_name = "KEY=V1,V2,...", required = true)]
        sets: Vec<String>,
        /// The scenario's short form.
        #[arg(long)]
        short: bool,
        /// Seed of the failures and incidents (the same for every point).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Scenario seconds per real second (overrides the scenario's).
        #[arg(long)]
        speed: Option<f64>,
        /// Where to write the HTML report with the trade-off plot.
        #[arg(long, default_value = "medic-sim-sweep.html")]
        report: PathBuf,
        /// No progress lines.
        #[arg(long)]
        quiet: bool,
    },
    /// Decides a real coordinator's exported audit history again under a
    /// candidate configuration, request by request.
    #[command(after_help = "Export the history with:
  medicctl history -o json --limit 1000000 > history.json
(or keep the lines of `medicctl watch -o json`).")]
    Replay {
        /// The exported history (`medicctl history -o json`).
        #[arg(long)]
        history: PathBuf,
        /// The candidate `coordinator.toml`.
        #[arg(long)]
        config: PathBuf,
        /// Hosts in the fleet, counting those the history never names
        /// (they count in every percentage); at least the named ones.
        #[arg(long, default_value_t = 0)]
        fleet_size: usize,
        /// Show only the requests the candidate decides differently.
        #[arg(long)]
        changes_only: bool,
    },
    /// Lists the built-in scenarios.
    List,
    /// Decisions per second and latency against the no-op RPC ceiling.
    Bench {
        /// Hosts registered with the coordinator.
        #[arg(long, default_value_t = 10_000)]
        hosts: usize,
        /// Concurrent simulated agents, one connection each.
        #[arg(long, default_value_t = 64)]
        agents: usize,
        /// Seconds per phase.
        #[arg(long, default_value_t = 10.0)]
        secs: f64,
        #[command(flatten)]
        remote: Remote,
    },
    /// (internal) Serves a coordinator for a run that may SIGKILL it.
    #[command(hide = true)]
    Coordinator {
        /// Its configuration.
        #[arg(long)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("medic-sim: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move { dispatch(cli.command).await })
}

async fn dispatch(command: Command) -> ExitCode {
    match command {
        Command::List => {
            for (name, text) in medic_sim::scenario::BUILTIN {
                match Scenario::from_toml(text) {
                    Ok(s) => println!("{name:<20} {}", s.description.trim()),
                    Err(e) => println!("{name:<20} INVALID: {e}"),
                }
            }
            ExitCode::SUCCESS
        }
        Command::Sweep {
            scenario,
            sets,
            short,
            seed,
            speed,
            report,
            quiet,
        } => sweep(&scenario, &sets, short, seed, speed, &report, quiet).await,
        Command::Replay {
            history,
            config,
            fleet_size,
            changes_only,
        } => {
            let candidate = match medic_sim::replay::candidate(&config) {
                Ok(c) => c,
                Err(e) => return fail(&e),
            };
            match medic_sim::replay::replay_file(&history, &candidate, fleet_size) {
                Ok(r) => {
                    print!("{}", medic_sim::replay::render(&r, changes_only));
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        }
        Command::Coordinator { config } => {
            // Test builds only: faults named in FAILPOINTS (tests/netns.rs).
            #[cfg(feature = "failpoints")]
            let _faults = fail::FailScenario::setup();
            serve_coordinator(&config).await
        }
        Command::Bench {
            hosts,
            agents,
            secs,
            remote,
        } => {
            let opts = medic_sim::bench::BenchOptions {
                hosts,
                agents,
                secs,
                external: remote.external(),
            };
            match medic_sim::bench::bench(&opts).await {
                Ok(b) => {
                    print!("{}", medic_sim::report::bench_summary(&b));
                    if b.verdict.ok() {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(EXIT_VIOLATION)
                    }
                }
                Err(e) => {
                    eprintln!("medic-sim bench: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run {
            scenario,
            short,
            seed,
            seeds,
            speed,
            report,
            quiet,
            transport,
            remote,
        } => {
            let sc = match Scenario::load(&scenario) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("medic-sim: {e}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            let exe = std::env::current_exe().ok();
            let mut failed = false;
            for seed in seed..seed.saturating_add(seeds.max(1)) {
                let opts = Options {
                    seed,
                    speed,
                    short,
                    external: remote.external(),
                    exe: exe.clone(),
                    progress: !quiet && std::io::IsTerminal::is_terminal(&std::io::stderr()),
                    transport,
                };
                let r = match medic_sim::run(sc.clone(), &opts).await {
                    Ok(r) => r,
                    Err(
                        e @ (medic_sim::SimError::Scenario(_) | medic_sim::SimError::Config(_)),
                    ) => {
                        eprintln!("medic-sim: {e}");
                        return ExitCode::from(EXIT_CONFIG);
                    }
                    Err(e) => {
                        eprintln!("medic-sim: {e}");
                        return ExitCode::FAILURE;
                    }
                };
                print!("{}", medic_sim::report::summary(&r));
                let storm_ok = r
                    .storm
                    .as_ref()
                    .is_none_or(medic_sim::bench::StormResult::ok);
                if !r.verdict.ok() || !storm_ok {
                    failed = true;
                    let again = medic_sim::run::replay_command(&scenario, &opts);
                    if r.virtual_time {
                        println!("\n  replay this run exactly: {again}");
                    } else {
                        println!(
                            "\n  run this seed again (on real time, the same failures but not \
                             necessarily the same history): {again}"
                        );
                    }
                }
                if seeds <= 1 {
                    if let Err(e) = std::fs::write(&report, medic_sim::report::html(&r)) {
                        eprintln!("medic-sim: cannot write {}: {e}", report.display());
                        return ExitCode::FAILURE;
                    }
                    println!("\n  report: {}", report.display());
                }
            }
            if failed {
                ExitCode::from(EXIT_VIOLATION)
            } else {
                ExitCode::SUCCESS
            }
        }
    }
}

/// Prints `e` and picks the exit code of its kind.
fn fail(e: &medic_sim::SimError) -> ExitCode {
    eprintln!("medic-sim: {e}");
    match e {
        medic_sim::SimError::Usage(_) => ExitCode::from(EXIT_USAGE),
        medic_sim::SimError::Scenario(_) | medic_sim::SimError::Config(_) => {
            ExitCode::from(EXIT_CONFIG)
        }
        _ => ExitCode::FAILURE,
    }
}

/// `medic-sim sweep`.
async fn sweep(
    scenario: &str,
    sets: &[String],
    short: bool,
    seed: u64,
    speed: Option<f64>,
    report: &std::path::Path,
    quiet: bool,
) -> ExitCode {
    let sc = match Scenario::load(scenario) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    let axes: Vec<medic_sim::sweep::Axis> = match sets
        .iter()
        .map(|s| medic_sim::sweep::Axis::parse(s))
        .collect()
    {
        Ok(a) => a,
        Err(e) => return fail(&e),
    };
    let opts = Options {
        seed,
        speed,
        short,
        exe: std::env::current_exe().ok(),
        ..Options::default()
    };
    let r = medic_sim::sweep::sweep(&sc, &axes, &opts, |i, n, p| {
        if !quiet {
            eprintln!(
                "  [{i}/{n}] {}: {:.0} host-minutes lost, {} remediations",
                medic_sim::sweep::label(&p.point),
                p.lost_host_minutes,
                p.remediations()
            );
        }
    })
    .await;
    let r = match r {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    print!("{}", medic_sim::sweep::table(&r));
    if let Err(e) = std::fs::write(report, medic_sim::sweep::html(&r)) {
        eprintln!("medic-sim: cannot write {}: {e}", report.display());
        return ExitCode::FAILURE;
    }
    println!("\n  report: {}", report.display());
    if r.points.iter().all(|p| p.invariants_ok) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_VIOLATION)
    }
}

/// `medic-sim coordinator`.
async fn serve_coordinator(config: &std::path::Path) -> ExitCode {
    match medic_sim::coord::serve_child(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("medic-sim coordinator: {e}");
            ExitCode::FAILURE
        }
    }
}
