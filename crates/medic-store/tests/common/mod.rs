//! Throwaway etcd servers for tests: one `etcd` process on loopback ports
//! with a temporary data directory, killed when its guard drops (also when
//! the test panics).
//!
//! A missing `etcd` binary fails the test with instructions; only
//! `MEDIC_SKIP_ETCD=1` turns that into a loud skip (`start` returns `None`).
//! `scripts/test` installs etcd (Debian's `etcd-server`) when missing, so CI
//! never skips. medic-coordinator's `tests/ha.rs` uses this same file.

#![allow(dead_code, unreachable_pub)]

// The coordinator's HA tests include this file too (by path), so etcd-client
// is reached through medic-store's re-export, which both crates see.
use medic_store::etcd_client;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The files of an etcd that speaks TLS, and of a client it accepts.
pub struct Tls {
    /// CA of both certificates.
    pub ca: std::path::PathBuf,
    /// etcd's certificate and key (for `localhost`).
    pub server: (std::path::PathBuf, std::path::PathBuf),
    /// A client certificate and key it accepts.
    pub client: (std::path::PathBuf, std::path::PathBuf),
}

impl Tls {
    /// etcd-client's TLS options for the client certificate.
    pub fn client_options(&self) -> etcd_client::TlsOptions {
        let read = |p: &std::path::Path| {
            std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        };
        etcd_client::TlsOptions::new()
            .ca_certificate(etcd_client::Certificate::from_pem(read(&self.ca)))
            .identity(etcd_client::Identity::from_pem(
                read(&self.client.0),
                read(&self.client.1),
            ))
            .domain_name("localhost")
    }
}

/// A running etcd, killed on drop.
pub struct EtcdServer {
    child: Child,
    /// Its client URL (`http://127.0.0.1:PORT`).
    pub endpoint: String,
    _dir: tempfile::TempDir,
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        // A stopped (SIGSTOP) process still dies of SIGKILL.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("cannot bind a loopback port: {e}"))
}

fn etcd_binary() -> String {
    std::env::var("MEDIC_ETCD_BIN").unwrap_or_else(|_| "etcd".to_owned())
}

impl EtcdServer {
    /// Starts an etcd, or returns `None` (after saying so loudly) when
    /// `MEDIC_SKIP_ETCD=1`. Panics when etcd is missing or does not start.
    pub fn start() -> Option<EtcdServer> {
        let bin = Self::precheck()?;
        Self::start_with(&bin, None)
    }

    /// The etcd binary, after the skip rule and a check that it runs.
    fn precheck() -> Option<String> {
        if std::env::var("MEDIC_SKIP_ETCD").is_ok_and(|v| v == "1") {
            eprintln!(
                "\n!!! MEDIC_SKIP_ETCD=1: SKIPPING the etcd part of this test. \
                 The etcd backend is NOT tested in this run. !!!\n"
            );
            return None;
        }
        let bin = etcd_binary();
        if Command::new(&bin)
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_err()
        {
            panic!(
                "etcd ({bin}) is not installed: the etcd backend's tests need a real etcd. \
                 Install it (`apt-get install etcd-server`, which scripts/test does), point \
                 MEDIC_ETCD_BIN at one, or set MEDIC_SKIP_ETCD=1 to skip these tests knowingly"
            );
        }
        Some(bin)
    }

    /// Starts an etcd that speaks only TLS and asks clients for a
    /// certificate (`--client-cert-auth`): its certificate and key are
    /// `tls.server` (for `localhost`), clients' certificates must chain to
    /// `tls.ca`. `None` as [`EtcdServer::start`].
    pub fn start_tls(tls: &Tls) -> Option<EtcdServer> {
        let bin = Self::precheck()?;
        Self::start_with(&bin, Some(tls))
    }

    fn start_with(bin: &str, tls: Option<&Tls>) -> Option<EtcdServer> {
        // The ports are free when picked and taken by etcd a moment later;
        // another process may win one in between, so a failed start retries.
        let mut last_error = String::new();
        for _ in 0..3 {
            match Self::try_start(bin, tls) {
                Ok(server) => return Some(server),
                Err(e) => last_error = e,
            }
        }
        panic!("etcd did not start: {last_error}");
    }

    fn try_start(bin: &str, tls: Option<&Tls>) -> Result<EtcdServer, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let (client, peer) = (free_port(), free_port());
        let scheme = if tls.is_some() { "https" } else { "http" };
        let endpoint = format!("{scheme}://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let log = std::fs::File::create(dir.path().join("etcd.log")).map_err(|e| e.to_string())?;
        let mut command = Command::new(bin);
        if let Some(t) = tls {
            command
                .arg("--cert-file")
                .arg(&t.server.0)
                .arg("--key-file")
                .arg(&t.server.1)
                .arg("--trusted-ca-file")
                .arg(&t.ca)
                .arg("--client-cert-auth");
        }
        let mut child = command
            .args(["--name", "medic-test"])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--listen-client-urls", &endpoint])
            .args(["--advertise-client-urls", &endpoint])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("medic-test={peer_url}")])
            .args(["--log-level", "error"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot run {bin}: {e}"))?;
        let started = Instant::now();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(dir.path().join("etcd.log")).unwrap_or_default();
                return Err(format!("etcd exited with {status}: {log}"));
            }
            let ready = rt.block_on(async {
                let mut options = etcd_client::ConnectOptions::new()
                    .with_connect_timeout(Duration::from_millis(200))
                    .with_timeout(Duration::from_millis(500));
                if let Some(t) = tls {
                    options = options.with_tls(t.client_options());
                }
                let mut c = etcd_client::Client::connect([&endpoint], Some(options)).await?;
                c.get("medic-test-ready", None).await
            });
            if ready.is_ok() {
                return Ok(EtcdServer {
                    child,
                    endpoint,
                    _dir: dir,
                });
            }
            if started.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("etcd not ready after 20 s: {ready:?}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The etcd process id (to stop it with SIGSTOP).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Runs `f` with a fresh client to this etcd, outside any store: the
    /// tests' way to act as another party (revoke a lease, plant keys).
    pub fn with_client<T>(
        &self,
        f: impl AsyncFnOnce(&mut etcd_client::Client) -> Result<T, etcd_client::Error>,
    ) -> T {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        rt.block_on(async {
            let mut c = etcd_client::Client::connect([&self.endpoint], None)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            f(&mut c).await.unwrap_or_else(|e| panic!("{e}"))
        })
    }
}

/// Three etcd members on loopback forming one cluster, each killed on drop:
/// for the loss of a member (a minority) while the others keep quorum.
pub struct EtcdCluster {
    members: Vec<Member>,
    initial_cluster: String,
    bin: String,
    dir: tempfile::TempDir,
}

struct Member {
    name: String,
    client: String,
    peer: String,
    child: Option<Child>,
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}

impl EtcdCluster {
    /// Starts three members and waits until the cluster serves a
    /// linearizable read; `None` as [`EtcdServer::start`].
    pub fn start() -> Option<EtcdCluster> {
        let bin = EtcdServer::precheck()?;
        // The ports are free when picked and taken by etcd a moment later;
        // another process may win one in between (a member then exits with
        // "address already in use"), so a failed start retries on new ones.
        let mut last_error = String::new();
        for _ in 0..3 {
            match Self::try_start(&bin) {
                Ok(cluster) => return Some(cluster),
                Err(e) => last_error = e,
            }
        }
        panic!("the etcd cluster did not start: {last_error}");
    }

    fn try_start(bin: &str) -> Result<EtcdCluster, String> {
        let bin = bin.to_owned();
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let members: Vec<Member> = (0..3)
            .map(|i| Member {
                name: format!("m{i}"),
                client: format!("http://127.0.0.1:{}", free_port()),
                peer: format!("http://127.0.0.1:{}", free_port()),
                child: None,
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = EtcdCluster {
            members,
            initial_cluster,
            bin,
            dir,
        };
        for i in 0..3 {
            cluster.spawn(i);
        }
        let all = cluster.endpoints();
        cluster.try_wait_ready(&all)?;
        Ok(cluster)
    }

    /// Every member's client URL, in member order.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client.clone()).collect()
    }

    fn spawn(&mut self, i: usize) {
        let data = self.dir.path().join(format!("m{i}"));
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("m{i}.log")))
            .unwrap_or_else(|e| panic!("{e}"));
        let m = &mut self.members[i];
        let child = Command::new(&self.bin)
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(data)
            .args(["--listen-client-urls", &m.client])
            .args(["--advertise-client-urls", &m.client])
            .args(["--listen-peer-urls", &m.peer])
            .args(["--initial-advertise-peer-urls", &m.peer])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", "medic-test-cluster"])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(["--log-level", "error"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.bin));
        m.child = Some(child);
    }

    /// The member leading etcd's raft, as the members' status says.
    pub fn raft_leader(&self) -> usize {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        rt.block_on(async {
            let mut ids = Vec::new();
            let mut leader = 0;
            for m in &self.members {
                let mut c = etcd_client::Client::connect([&m.client], None)
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                let status = c.status().await.unwrap_or_else(|e| panic!("{e}"));
                ids.push(status.header().map_or(0, |h| h.member_id()));
                leader = status.leader();
            }
            ids.iter()
                .position(|id| *id == leader)
                .unwrap_or_else(|| panic!("no member leads etcd's raft"))
        })
    }

    /// SIGKILLs member `i` and waits for it to be gone.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts member `i` again on its data and waits until it serves a
    /// linearizable read itself (it rejoined and caught up).
    pub fn restart(&mut self, i: usize) {
        self.spawn(i);
        let one = vec![self.members[i].client.clone()];
        self.wait_ready(&one);
    }

    fn wait_ready(&mut self, endpoints: &[String]) {
        if let Err(e) = self.try_wait_ready(endpoints) {
            panic!("{e}");
        }
    }

    /// Waits until every endpoint serves a linearizable read; `Err` (with
    /// the members' logs) once a member has exited or after 30 s.
    fn try_wait_ready(&mut self, endpoints: &[String]) -> Result<(), String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        let started = Instant::now();
        loop {
            let ready = rt.block_on(async {
                for e in endpoints {
                    let options = etcd_client::ConnectOptions::new()
                        .with_connect_timeout(Duration::from_millis(200))
                        .with_timeout(Duration::from_millis(500))
                        .with_require_leader(true);
                    let mut c = etcd_client::Client::connect([e], Some(options)).await?;
                    c.get("medic-test-ready", None).await?;
                }
                Ok::<(), etcd_client::Error>(())
            });
            let exited = self.members.iter_mut().any(|m| {
                m.child
                    .as_mut()
                    .is_some_and(|c| !matches!(c.try_wait(), Ok(None)))
            });
            match ready {
                Ok(()) => return Ok(()),
                Err(e) if exited || started.elapsed() > Duration::from_secs(30) => {
                    let logs: Vec<String> = (0..self.members.len())
                        .map(|i| {
                            std::fs::read_to_string(self.dir.path().join(format!("m{i}.log")))
                                .unwrap_or_default()
                        })
                        .collect();
                    let why = if exited {
                        "a member exited"
                    } else {
                        "not ready after 30 s"
                    };
                    return Err(format!("etcd cluster {why}: {e}; logs: {logs:#?}"));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}
