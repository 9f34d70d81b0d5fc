//! Bounds on established connections: how many are open (in all and per
//! address), and how long one may stay without a call.
//!
//! Every accepted connection takes a [`ConnSlot`] before anything else
//! (before its TLS handshake), and gives it back when it closes; past
//! `server.max_connections` or `server.max_connections_per_address` it is
//! closed at once. Each connection's [`Activity`] records its calls (every
//! handler touches it) and its open streams; a connection with neither for
//! `server.idle_timeout` is closed ([`IdleTimer`]), so idle sockets cannot
//! pile up to the open-file limit and block every new call.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

use crate::metrics::Metrics;

/// File descriptors kept free of connections at the open-file limit: the
/// state file, listeners, webhooks, etcd.
const RESERVED_FDS: u64 = 64;

/// Limits on established connections (`[server]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnLimits {
    /// Most open at once.
    pub total: u32,
    /// Most open at once from one IP address.
    pub per_address: u32,
    /// Closed after this long without a call or an open stream.
    pub idle: Duration,
}

impl ConnLimits {
    /// `self` with `total` lowered to fit the process's open-file limit
    /// (less 64 descriptors for the state file, listeners and webhooks),
    /// and the limit it fits, when it had to.
    pub fn fitted_to_open_files(self) -> (ConnLimits, Option<u64>) {
        let soft = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .map(|(soft, _)| soft)
            .unwrap_or(u64::MAX);
        let room = soft.saturating_sub(RESERVED_FDS).max(16);
        if u64::from(self.total) <= room {
            return (self, None);
        }
        let total = u32::try_from(room).unwrap_or(u32::MAX);
        (ConnLimits { total, ..self }, Some(soft))
    }
}

/// Connections open now, in all and per address.
#[derive(Debug, Default)]
pub struct OpenConns(Mutex<(u32, HashMap<IpAddr, u32>)>);

impl OpenConns {
    /// A slot for one more connection from `ip`, or why not (`total`,
    /// `address`).
    pub fn take(
        self: &Arc<Self>,
        ip: IpAddr,
        limits: ConnLimits,
        metrics: &Arc<Metrics>,
    ) -> Result<ConnSlot, &'static str> {
        let mut open = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if open.0 >= limits.total {
            return Err("total");
        }
        let from = open.1.entry(ip).or_insert(0);
        if *from >= limits.per_address {
            return Err("address");
        }
        *from += 1;
        open.0 += 1;
        metrics.connections_open.set(i64::from(open.0));
        Ok(ConnSlot {
            open: self.clone(),
            ip,
            metrics: metrics.clone(),
        })
    }
}

/// One open connection's place; given back on drop.
#[derive(Debug)]
pub struct ConnSlot {
    open: Arc<OpenConns>,
    ip: IpAddr,
    metrics: Arc<Metrics>,
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let mut open = self
            .open
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        open.0 = open.0.saturating_sub(1);
        if let Some(n) = open.1.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.1.remove(&self.ip);
            }
        }
        self.metrics.connections_open.set(i64::from(open.0));
    }
}

/// What keeps a connection from being idle: calls, and open streams.
#[derive(Debug)]
pub struct Activity {
    /// On tokio's clock, as the idle timer is: both agree under a paused
    /// clock too (the simulator's virtual time).
    base: Instant,
    /// Milliseconds after `base` of the last call (or of the accept).
    last: AtomicU64,
    streams: AtomicUsize,
}

impl Activity {
    /// A connection accepted now.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            base: Instant::now(),
            last: AtomicU64::new(0),
            streams: AtomicUsize::new(0),
        })
    }

    /// A call began on the connection.
    pub fn touch(&self) {
        let ms = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.fetch_max(ms, Ordering::Relaxed);
    }

    /// A stream opened; the connection is busy until the guard drops.
    pub fn stream(self: &Arc<Self>) -> StreamGuard {
        self.streams.fetch_add(1, Ordering::Relaxed);
        self.touch();
        StreamGuard(self.clone())
    }

    /// How long since the last call; `None` while a stream is open.
    fn idle_for(&self) -> Option<Duration> {
        if self.streams.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let last = Duration::from_millis(self.last.load(Ordering::Relaxed));
        Some(self.base.elapsed().saturating_sub(last))
    }
}

/// An open stream (a `WatchEvents` call): its connection is not idle.
#[derive(Debug)]
pub struct StreamGuard(Arc<Activity>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// Closes an idle connection: polled by the connection's reads, it fails
/// the read once the connection has had no call and no stream for the
/// limit, and hyper closes the connection.
#[derive(Debug)]
pub struct IdleTimer {
    activity: Arc<Activity>,
    limit: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
    metrics: Arc<Metrics>,
}

impl IdleTimer {
    /// A timer for a connection with `activity`, closing it after `limit`.
    pub fn new(activity: Arc<Activity>, limit: Duration, metrics: Arc<Metrics>) -> Self {
        Self {
            activity,
            limit,
            timer: Box::pin(tokio::time::sleep(limit)),
            metrics,
        }
    }

    /// `Ready(err)` once the connection is idle; otherwise `Pending`, with
    /// a wake-up registered for when it could be.
    pub fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Error> {
        loop {
            if self.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let wait = match self.activity.idle_for() {
                Some(d) if d >= self.limit => {
                    self.metrics.connections_closed_idle.inc();
                    return Poll::Ready(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!(
                            "no call for {}s (server.idle_timeout)",
                            self.limit.as_secs()
                        ),
                    ));
                }
                Some(d) => self.limit - d,
                None => self.limit,
            };
            self.timer
                .as_mut()
                .reset(tokio::time::Instant::now() + wait);
        }
    }
}

/// Marks the connection of every call busy, whatever the service (agents,
/// operators, health, reflection): under [`server.idle_timeout`], only a
/// connection with no call for that long is closed.
///
/// [`server.idle_timeout`]: crate::config::ServerConfig::idle_timeout
#[derive(Clone, Copy, Debug, Default)]
pub struct ActivityLayer;

impl<S> tower_layer::Layer<S> for ActivityLayer {
    type Service = MarkActivity<S>;

    fn layer(&self, inner: S) -> MarkActivity<S> {
        MarkActivity(inner)
    }
}

/// See [`ActivityLayer`].
#[derive(Clone, Debug)]
pub struct MarkActivity<S>(S);

impl<S, B> tonic::codegen::Service<tonic::codegen::http::Request<B>> for MarkActivity<S>
where
    S: tonic::codegen::Service<tonic::codegen::http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: tonic::codegen::http::Request<B>) -> S::Future {
        if let Some(a) = req
            .extensions()
            .get::<crate::tls::ConnInfo>()
            .and_then(crate::tls::ConnInfo::activity)
        {
            a.touch();
        }
        self.0.call(req)
    }
}
