//! The accept loop: connection limits, TLS handshakes (bounded in number,
//! per address and in time) and each connection tagged with its client's
//! verdict, fed to the gRPC server.

use std::io;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::pki_types::CertificateDer;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, watch};

use super::TlsMaterial;
use super::conn::{Conn, ConnInfo, Io, TlsClient, Verdict};
use crate::conn::{Activity, ConnLimits, IdleTimer, OpenConns};
use crate::metrics::Metrics;

/// How long a client has to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Handshakes in progress at once; beyond it new connections are closed
/// (counted as `busy`) so a flood of half-open connections cannot exhaust
/// memory.
pub const MAX_HANDSHAKES: usize = 4096;
/// Handshakes in progress at once from one address, so one machine cannot
/// take every slot (slowloris) and lock agents and operators out.
const MAX_HANDSHAKES_PER_IP: u32 = 64;
/// Connections are closed (gracefully) after this long, so clients
/// re-handshake against the certificates and CAs in force.
pub const MAX_CONNECTION_AGE: Duration = Duration::from_secs(3600);

/// Counts handshakes in progress per address; the guard gives the slot back.
#[derive(Debug, Default)]
struct PerIp(std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, u32>>);

struct PerIpSlot {
    table: Arc<PerIp>,
    ip: std::net::IpAddr,
}

impl PerIp {
    fn take(table: &Arc<PerIp>, ip: std::net::IpAddr) -> Option<PerIpSlot> {
        let mut t = table
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = t.entry(ip).or_insert(0);
        if *n >= MAX_HANDSHAKES_PER_IP {
            return None;
        }
        *n += 1;
        Some(PerIpSlot {
            table: table.clone(),
            ip,
        })
    }
}

impl Drop for PerIpSlot {
    fn drop(&mut self) {
        let mut t = self
            .table
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = t.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                t.remove(&self.ip);
            }
        }
    }
}

/// The TLS material in force, read for each new connection (`None`:
/// plaintext).
pub type CurrentTls = Arc<dyn Fn() -> Option<Arc<TlsMaterial>> + Send + Sync>;

/// Accepts connections until `stop`, performing TLS handshakes (each in its
/// own task, with a timeout) when the material in force says so. The
/// returned channel feeds the gRPC server.
pub fn accept(
    listener: TcpListener,
    current: CurrentTls,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
    limits: ConnLimits,
) -> mpsc::Receiver<Result<Conn, io::Error>> {
    let (tx, rx) = mpsc::channel(256);
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    let per_ip = Arc::new(PerIp::default());
    let open = Arc::new(OpenConns::default());
    let mut accept_errors = LogEvery::new(Duration::from_secs(10));
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = stop.wait_for(|s| *s) => return,
                () = tx.closed() => return,
            };
            let (stream, addr) = match accepted {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning,
                    // and say so once in a while, not 20 times a second.
                    if let Some(suppressed) = accept_errors.due() {
                        tracing::warn!(
                            error = %e,
                            suppressed,
                            "accept failed (server.max_connections bounds what clients can hold)"
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let slot = match open.take(addr.ip(), limits, &metrics) {
                Ok(slot) => slot,
                Err(reason) => {
                    metrics
                        .connections_refused
                        .get_or_create(&crate::metrics::ReasonLabel {
                            reason: reason.to_owned(),
                        })
                        .inc();
                    continue;
                }
            };
            let activity = Activity::new();
            let idle = IdleTimer::new(activity.clone(), limits.idle, metrics.clone());
            let _ = stream.set_nodelay(true);
            match current() {
                None => {
                    let conn = Conn {
                        io: Io::Plain(stream),
                        info: ConnInfo {
                            addr: Some(addr),
                            tls: None,
                            activity: Some(activity),
                        },
                        idle,
                        _slot: Some(slot),
                    };
                    if tx.send(Ok(conn)).await.is_err() {
                        return;
                    }
                }
                Some(material) => {
                    let Ok(permit) = handshakes.clone().try_acquire_owned() else {
                        metrics.handshake("busy");
                        continue;
                    };
                    let Some(handshaking) = PerIp::take(&per_ip, addr.ip()) else {
                        metrics.handshake("busy");
                        continue;
                    };
                    let tx = tx.clone();
                    let metrics = metrics.clone();
                    tokio::spawn(async move {
                        let _permit = permit;
                        let _handshaking = handshaking;
                        let tls = tokio::time::timeout(
                            HANDSHAKE_TIMEOUT,
                            material.acceptor().accept(stream),
                        )
                        .await;
                        let tls = match tls {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => {
                                metrics.handshake("failed");
                                tracing::debug!(peer = %addr, error = %e, "TLS handshake failed (a plaintext client?)");
                                return;
                            }
                            Err(_) => {
                                metrics.handshake("timeout");
                                tracing::debug!(peer = %addr, "TLS handshake timed out");
                                return;
                            }
                        };
                        metrics.handshake("ok");
                        let chain: Vec<CertificateDer<'static>> = tls
                            .get_ref()
                            .1
                            .peer_certificates()
                            .map(|c| c.iter().map(|d| d.clone().into_owned()).collect())
                            .unwrap_or_default();
                        let now = SystemTime::now();
                        let (cert, until) =
                            material.verdict((!chain.is_empty()).then_some(chain.as_slice()), now);
                        let info = ConnInfo {
                            addr: Some(addr),
                            tls: Some(Arc::new(TlsClient {
                                chain,
                                cached: std::sync::Mutex::new(Verdict {
                                    material: material.id,
                                    until,
                                    cert,
                                }),
                            })),
                            activity: Some(activity),
                        };
                        let _ = tx
                            .send(Ok(Conn {
                                io: Io::Tls(Box::new(tls)),
                                info,
                                idle,
                                _slot: Some(slot),
                            }))
                            .await;
                    });
                }
            }
        }
    });
    rx
}

/// Lets a repeated message through once per period, counting the rest.
#[derive(Debug)]
struct LogEvery {
    period: Duration,
    last: Option<std::time::Instant>,
    suppressed: u64,
}

impl LogEvery {
    fn new(period: Duration) -> Self {
        Self {
            period,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(suppressed since the last one)` when the message is due.
    fn due(&mut self) -> Option<u64> {
        let now = std::time::Instant::now();
        if self
            .last
            .is_some_and(|l| now.duration_since(l) < self.period)
        {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// Accepts in-memory connections (`medic_client::memory`) until `stop`:
/// no TLS, no connection limits (the process's own clients), but closed
/// when idle like any other. The returned channel feeds the gRPC server.
pub fn accept_memory(
    mut incoming: mpsc::UnboundedReceiver<tokio::io::DuplexStream>,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
    idle: Duration,
) -> mpsc::Receiver<Result<Conn, io::Error>> {
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s) => return,
                () = tx.closed() => return,
                s = incoming.recv() => match s {
                    Some(s) => s,
                    None => return,
                },
            };
            let activity = Activity::new();
            let conn = Conn {
                io: Io::Memory(stream),
                info: ConnInfo {
                    addr: None,
                    tls: None,
                    activity: Some(activity.clone()),
                },
                idle: IdleTimer::new(activity, idle, metrics.clone()),
                _slot: None,
            };
            if tx.send(Ok(conn)).await.is_err() {
                return;
            }
        }
    });
    rx
}

#[cfg(test)]
mod log_every_tests {
    use super::*;

    /// EMFILE at the accept loop, retried every 50 ms, logged 20 lines a
    /// second: now once per period, with the count of the rest.
    #[test]
    fn a_repeated_accept_error_is_logged_once_per_period_with_a_count() {
        let mut log = LogEvery::new(Duration::from_millis(200));
        assert_eq!(log.due(), Some(0));
        let logged: Vec<Option<u64>> = (0..5).map(|_| log.due()).collect();
        assert_eq!(logged, vec![None; 5]);
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(log.due(), Some(5));
    }
}
