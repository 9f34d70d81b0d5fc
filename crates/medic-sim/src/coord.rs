//! The coordinator a run talks to: in-process on virtual time with
//! in-memory connections (the default), in-process on loopback with the
//! system clock (the permit storm, which measures real latency), a child
//! process that can be SIGKILLed and restarted on the same state (for
//! `coordinator-crash`), or an external one (`--coordinator URL`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use medic_client::{Client, Endpoints, MemoryConnector, Settings};
use medic_coordinator::service::DirectAgents;
use medic_coordinator::{Control, CoordinatorConfig, Listeners, RunError, SystemClock};
use medic_proto::pb::v1 as pb;
use medic_store::{RedbStore, Store};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use crate::error::SimError;
use crate::host::SimClock;

/// The URL that names the in-memory coordinator (connections never leave
/// the process).
pub const MEMORY_URL: &str = "http://coordinator.medic-sim.invalid";

/// PEM files for a TLS connection to an external coordinator.
pub use medic_client::TlsFiles;

/// Where the coordinator runs.
#[derive(Clone, Debug)]
pub enum Mode {
    /// A `run_in_memory` task in this process on the run's virtual clock;
    /// clients connect in memory.
    Memory {
        /// The run's clock (virtual).
        clock: SimClock,
    },
    /// A `run` task in this process, on loopback port 0.
    InProcess,
    /// A child process: `EXE coordinator --config FILE` (this very binary's
    /// hidden subcommand), so it can be killed with SIGKILL.
    Child {
        /// The `medic-sim` executable.
        exe: PathBuf,
    },
    /// Someone else's coordinator.
    External {
        /// Its URL.
        url: String,
        /// TLS files, for `https://`.
        tls: TlsFiles,
    },
}

enum Inner {
    InProcess {
        control: mpsc::Sender<Control>,
        handle: JoinHandle<Result<(), RunError>>,
    },
    Child(tokio::process::Child),
    External,
    Down,
}

/// A running (or killed) coordinator.
pub struct Coordinator {
    mode: Mode,
    config_path: PathBuf,
    config: CoordinatorConfig,
    inner: Inner,
    url: String,
    /// Connections to an in-memory coordinator.
    memory: Option<MemoryConnector>,
    /// Calls to an in-memory coordinator without a connection.
    direct: Option<DirectAgents>,
    /// When each incarnation started (its `started_at`): warm-up counts
    /// from these.
    pub starts: Vec<SystemTime>,
    /// How many times it was killed.
    pub kills: usize,
    /// The in-process coordinator's clock, which a scenario may step.
    clock: Arc<crate::stepclock::StepClock>,
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Coordinator({})", self.url)
    }
}

impl Coordinator {
    /// Starts a coordinator with `toml` (already in real time), its state in
    /// `dir`.
    pub async fn start(mode: Mode, toml: &str, dir: &Path) -> Result<Self, SimError> {
        let config = CoordinatorConfig::from_toml(toml)
            .map_err(|e| SimError::Config(format!("coordinator: {e}")))?;
        let config_path = dir.join("coordinator.toml");
        std::fs::write(&config_path, toml)?;
        let mut c = Self {
            mode,
            config_path,
            config,
            inner: Inner::Down,
            url: String::new(),
            memory: None,
            direct: None,
            starts: Vec::new(),
            kills: 0,
            clock: Arc::default(),
        };
        c.launch().await?;
        Ok(c)
    }

    /// The configuration it runs (real time).
    pub fn config(&self) -> &CoordinatorConfig {
        &self.config
    }

    /// Its gRPC URL as of now (a restart may change the port).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether this run can kill it.
    pub fn killable(&self) -> bool {
        matches!(self.mode, Mode::Child { .. })
    }

    async fn launch(&mut self) -> Result<(), SimError> {
        match &self.mode {
            Mode::Memory { clock } => {
                // Steppable like the in-process one's, over the run's
                // virtual clock; a relaunch keeps the steps so far.
                if self.clock.offset_ns() == 0 {
                    self.clock = Arc::new(crate::stepclock::StepClock::over(Arc::new(*clock)));
                }
                let store = RedbStore::open(&self.config.server.state_dir)
                    .map_err(|e| SimError::Coordinator(e.to_string()))?;
                let (connector, incoming) = medic_client::memory::link();
                let direct = DirectAgents::new();
                let (control, rx) = mpsc::channel(4);
                let handle = tokio::spawn(medic_coordinator::run_in_memory(
                    self.config.clone(),
                    Inline(store),
                    incoming,
                    direct.clone(),
                    rx,
                    self.clock.clone(),
                ));
                self.inner = Inner::InProcess { control, handle };
                self.url = MEMORY_URL.to_owned();
                self.memory = Some(connector);
                self.direct = Some(direct);
            }
            Mode::InProcess => {
                let store = RedbStore::open(&self.config.server.state_dir)
                    .map_err(|e| SimError::Coordinator(e.to_string()))?;
                let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                let metrics = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                let addr = grpc.local_addr()?;
                let (control, rx) = mpsc::channel(4);
                let handle = tokio::spawn(medic_coordinator::run(
                    self.config.clone(),
                    Some(self.config_path.clone()),
                    store,
                    Listeners { grpc, metrics },
                    rx,
                    self.clock.clone(),
                ));
                self.inner = Inner::InProcess { control, handle };
                self.url = format!("http://{addr}");
            }
            Mode::Child { exe } => {
                let mut child = tokio::process::Command::new(exe)
                    .arg("coordinator")
                    .arg("--config")
                    .arg(&self.config_path)
                    .env("RUST_LOG", "warn")
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::inherit())
                    .kill_on_drop(true)
                    .spawn()
                    .map_err(|e| {
                        SimError::Coordinator(format!("cannot run {}: {e}", exe.display()))
                    })?;
                let stdout = child.stdout.take().ok_or_else(|| {
                    SimError::Coordinator("the child coordinator has no stdout".into())
                })?;
                let mut lines = BufReader::new(stdout).lines();
                let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
                    .await
                    .map_err(|_| SimError::Coordinator("child did not start within 30s".into()))?
                    .map_err(SimError::Io)?
                    .ok_or_else(|| SimError::Coordinator("child exited at start-up".into()))?;
                let addr: SocketAddr = line
                    .strip_prefix("grpc=")
                    .and_then(|a| a.trim().parse().ok())
                    .ok_or_else(|| {
                        SimError::Coordinator(format!("unexpected child output {line:?}"))
                    })?;
                // Keep draining stdout so the child never blocks on it.
                tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
                self.inner = Inner::Child(child);
                self.url = format!("http://{addr}");
            }
            Mode::External { url, .. } => {
                self.url = url.clone();
                self.inner = Inner::External;
            }
        }
        // Learn its start time (warm-up counts from it) once it answers.
        let mut admin = self.admin_retrying(Duration::from_secs(30)).await?;
        let status = admin
            .get_status(pb::GetStatusRequest {})
            .await
            .map_err(|e| SimError::Coordinator(e.to_string()))?
            .into_inner();
        if let Some(t) = status
            .started_at
            .and_then(|t| medic_proto::convert::from_timestamp("started_at", t).ok())
        {
            self.starts.push(t);
        }
        Ok(())
    }

    /// Steps its wall clock `by`, forward or back (an in-process
    /// coordinator only).
    pub fn step_clock(&self, forward: bool, by: Duration) -> Result<(), SimError> {
        match self.inner {
            Inner::InProcess { .. } => {
                self.clock.step(forward, by);
                Ok(())
            }
            _ => Err(SimError::Coordinator(
                "only an in-process coordinator's clock can be stepped".into(),
            )),
        }
    }

    /// Kills it with SIGKILL: no drain, no clean close of the store.
    pub async fn kill(&mut self) -> Result<(), SimError> {
        match std::mem::replace(&mut self.inner, Inner::Down) {
            Inner::Child(mut child) => {
                child.start_kill()?;
                let _ = child.wait().await;
                self.kills += 1;
                Ok(())
            }
            other => {
                self.inner = other;
                Err(SimError::Coordinator(
                    "only a child-process coordinator can be killed".into(),
                ))
            }
        }
    }

    /// Starts it again on the same state.
    pub async fn restart(&mut self) -> Result<(), SimError> {
        self.launch().await
    }

    /// Stops it cleanly (drain); an external one is left alone.
    pub async fn stop(&mut self) {
        match std::mem::replace(&mut self.inner, Inner::Down) {
            Inner::InProcess { control, handle } => {
                let _ = control.send(Control::Shutdown).await;
                let _ = handle.await;
            }
            Inner::Child(mut child) => {
                if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGTERM,
                    );
                }
                if tokio::time::timeout(Duration::from_secs(20), child.wait())
                    .await
                    .is_err()
                {
                    let _ = child.start_kill();
                    let _ = child.wait().await;
                }
            }
            Inner::External | Inner::Down => {}
        }
    }

    /// A channel to it (TLS for an external `https://` one).
    pub async fn channel(&self) -> Result<Channel, SimError> {
        self.dialer().connect().await
    }

    /// How to reach it as of now, for tasks that do not hold it.
    pub fn dialer(&self) -> Dialer {
        Dialer {
            url: self.url.clone(),
            tls: match &self.mode {
                Mode::External { tls, .. } => Some(tls.clone()),
                _ => None,
            },
            memory: self.memory.clone(),
        }
    }

    /// Its in-memory connector, on virtual time.
    pub fn memory(&self) -> Option<&MemoryConnector> {
        self.memory.as_ref()
    }

    /// Its agents' service called without a connection, on virtual time.
    pub fn direct(&self) -> Option<&DirectAgents> {
        self.direct.as_ref()
    }

    /// An Admin client, retrying the connection for up to `within`.
    pub async fn admin_retrying(
        &self,
        within: Duration,
    ) -> Result<pb::admin_client::AdminClient<Channel>, SimError> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match self.channel().await {
                Ok(ch) => {
                    let mut admin = pb::admin_client::AdminClient::new(ch);
                    match admin.get_status(pb::GetStatusRequest {}).await {
                        Ok(_) => return Ok(admin),
                        Err(e) if tokio::time::Instant::now() >= deadline => {
                            return Err(SimError::Coordinator(e.to_string()));
                        }
                        Err(_) => {}
                    }
                }
                Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
                Err(_) => {}
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The whole audit history, oldest first.
    pub async fn history(&self) -> Result<Vec<pb::Event>, SimError> {
        let mut admin = self.admin_retrying(Duration::from_secs(30)).await?;
        let mut out = Vec::new();
        let mut token = String::new();
        loop {
            let page = admin
                .get_history(pb::GetHistoryRequest {
                    page_size: 1000,
                    page_token: token.clone(),
                    ..Default::default()
                })
                .await
                .map_err(|e| SimError::Coordinator(format!("history: {e}")))?
                .into_inner();
            out.extend(page.events);
            if page.next_page_token.is_empty() {
                return Ok(out);
            }
            token = page.next_page_token;
        }
    }
}

/// A store the coordinator calls on its own task ([`Store::inline`]): on
/// virtual time every part of the run shares one thread, and a commit
/// finishing on another thread would let the order of simultaneous events
/// depend on the machine's timing. No virtual time passes during a call.
#[derive(Debug)]
struct Inline<S>(S);

impl<S: Store> Store for Inline<S> {
    fn load(&self) -> Result<medic_store::Loaded, medic_store::StoreError> {
        self.0.load()
    }
    fn append(
        &self,
        records: Vec<(medic_policy::Time, medic_store::Record)>,
    ) -> Result<Vec<medic_store::Entry>, medic_store::StoreError> {
        self.0.append(records)
    }
    fn snapshot(
        &self,
        state: &medic_policy::DurableState,
        upto: u64,
    ) -> Result<(), medic_store::StoreError> {
        self.0.snapshot(state, upto)
    }
    fn history(
        &self,
        query: &medic_store::HistoryQuery,
    ) -> Result<medic_store::HistoryPage, medic_store::StoreError> {
        self.0.history(query)
    }
    fn compact(
        &self,
        retention: medic_store::Retention,
        now: medic_policy::Time,
    ) -> Result<u64, medic_store::StoreError> {
        self.0.compact(retention, now)
    }
    fn verify(&self) -> Result<(), medic_store::StoreError> {
        self.0.verify()
    }
    fn inline(&self) -> bool {
        true
    }
}

/// How to reach a coordinator: its URL, TLS files for `https://`, or an
/// in-memory connector.
#[derive(Clone, Debug)]
pub struct Dialer {
    url: String,
    tls: Option<TlsFiles>,
    memory: Option<MemoryConnector>,
}

impl Dialer {
    /// A coordinator at `url`, plaintext.
    pub fn url(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            tls: None,
            memory: None,
        }
    }

    /// A connected channel.
    pub async fn connect(&self) -> Result<Channel, SimError> {
        match &self.memory {
            Some(m) => {
                let endpoints = Endpoints::new([self.url.as_str()])
                    .map_err(|e| SimError::Coordinator(e.to_string()))?;
                Client::new(Settings::new(endpoints, Duration::from_secs(5)).memory(m.clone()))
                    .map_err(|e| SimError::Coordinator(e.to_string()))?
                    .channel()
                    .await
                    .map_err(|e| SimError::Coordinator(e.to_string()))
            }
            None => connect(&self.url, self.tls.as_ref()).await,
        }
    }
}

/// A client for `url` (medic-client's: its endpoint checks, TLS from the
/// files, deadlines, admission retries), with TLS when the URL is https.
pub fn client(url: &str, tls: Option<&TlsFiles>) -> Result<Client, SimError> {
    let coordinator = |e: &dyn std::fmt::Display| SimError::Coordinator(format!("{url}: {e}"));
    let endpoints = Endpoints::new([url]).map_err(|e| coordinator(&e))?;
    // The files are for `https://` only; a plaintext run ignores them.
    let tls = if medic_client::endpoint::is_tls(url) {
        let files = tls.cloned().unwrap_or_default();
        Some(files.load().map_err(|e| coordinator(&e))?)
    } else {
        None
    };
    Client::new(
        Settings::new(endpoints, Duration::from_secs(5))
            .tls(tls)
            .admission_retries(5),
    )
    .map_err(|e| coordinator(&e))
}

/// Connects to `url`, with TLS when the URL is https.
pub async fn connect(url: &str, tls: Option<&TlsFiles>) -> Result<Channel, SimError> {
    client(url, tls)?
        .channel()
        .await
        .map_err(|e| SimError::Coordinator(e.to_string()))
}

/// The hidden `medic-sim coordinator --config FILE` subcommand: serves like
/// the real binary (same `run`, same store, system clock) and prints
/// `grpc=ADDR` on stdout, for a parent that may SIGKILL it.
///
/// With the embedded store it binds loopback port 0. With `[store] kind =
/// "etcd"` it is one replica of several (`ha::run_replicated`, in a build
/// with the `etcd` feature): it binds `server.listen` and
/// `server.metrics_listen` as configured, since the URL it advertises names
/// that address, and takes SIGHUP and SIGTERM as the real binary does. A
/// replica that loses its leadership exits with code 75
/// (`ha::EXIT_LOST_LEADERSHIP`), as `medic-coordinator` does, so that a
/// supervisor restarts it as a follower.
pub async fn serve_child(config_path: &Path) -> Result<(), SimError> {
    let text = std::fs::read_to_string(config_path)?;
    let config = CoordinatorConfig::from_toml(&text)
        .map_err(|e| SimError::Config(format!("coordinator: {e}")))?;
    if let medic_coordinator::config::StoreConfig::Etcd(_) = &config.store {
        return serve_replica(config, config_path).await;
    }
    let store = RedbStore::open(&config.server.state_dir)
        .map_err(|e| SimError::Coordinator(e.to_string()))?;
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let metrics = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("grpc={}", grpc.local_addr()?);
    let (control, rx) = mpsc::channel(1);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        let _ = control.send(Control::Shutdown).await;
        // Keep `control` open: a closed channel would also mean "stop".
        std::future::pending::<()>().await;
    });
    let r = medic_coordinator::run(
        config,
        Some(config_path.to_owned()),
        store,
        Listeners { grpc, metrics },
        rx,
        Arc::new(SystemClock),
    )
    .await;
    r.map_err(|e| SimError::Coordinator(e.to_string()))
}

/// [`serve_child`] for `[store] kind = "etcd"`.
#[cfg(feature = "etcd")]
async fn serve_replica(config: CoordinatorConfig, config_path: &Path) -> Result<(), SimError> {
    let errors = config.build_errors();
    if !errors.is_empty() {
        let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
        return Err(SimError::Config(format!(
            "coordinator: {}",
            errors.join("; ")
        )));
    }
    let grpc = tokio::net::TcpListener::bind(config.server.listen).await?;
    let metrics = tokio::net::TcpListener::bind(config.server.metrics_listen).await?;
    println!("grpc={}", grpc.local_addr()?);
    let control = medic_coordinator::signal::listen()?;
    match medic_coordinator::ha::run_replicated(
        config,
        Some(config_path.to_owned()),
        Listeners { grpc, metrics },
        control,
        Arc::new(SystemClock),
    )
    .await
    {
        Ok(()) => Ok(()),
        Err(RunError::LostLeadership(why)) => {
            // `main` maps every error to exit code 1; a deposed replica
            // must say 75, as `medic-coordinator` does, and this hidden
            // subcommand is a process entry point of its own.
            eprintln!("medic-sim coordinator: lost leadership: {why}");
            std::process::exit(i32::from(medic_coordinator::ha::EXIT_LOST_LEADERSHIP));
        }
        Err(e) => Err(SimError::Coordinator(e.to_string())),
    }
}

/// [`serve_child`] for `[store] kind = "etcd"` in a build without the
/// `etcd` feature: refused.
#[cfg(not(feature = "etcd"))]
async fn serve_replica(_config: CoordinatorConfig, config_path: &Path) -> Result<(), SimError> {
    Err(SimError::Config(format!(
        "{}: [store] kind = \"etcd\" needs medic-sim built with the `etcd` feature",
        config_path.display()
    )))
}
