//! An accepted connection ([`Conn`]) and what it carries into every call
//! on it ([`ConnInfo`]): the client's address and, over TLS, its
//! certificate chain with the verdict cached until a reload or its expiry.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tonic::transport::server::Connected;

use super::TlsMaterial;
use crate::auth::{ClientCert, Peer, Transport};
use crate::conn::{Activity, ConnSlot, IdleTimer};

pub(super) enum Io {
    Plain(TcpStream),
    /// A connection from a client in the same process (the simulator).
    Memory(tokio::io::DuplexStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// An accepted connection.
pub struct Conn {
    pub(super) io: Io,
    pub(super) info: ConnInfo,
    pub(super) idle: IdleTimer,
    /// `None` for an in-memory connection, which no limit counts.
    pub(super) _slot: Option<ConnSlot>,
}

impl fmt::Debug for Conn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conn").field("info", &self.info).finish()
    }
}

impl Connected for Conn {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}

/// What a connection carries into every call on it (a request extension):
/// the client's address and, over TLS, its certificate chain with the
/// verdict cached.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    pub(super) addr: Option<SocketAddr>,
    pub(super) tls: Option<Arc<TlsClient>>,
    pub(super) activity: Option<Arc<Activity>>,
}

#[derive(Debug)]
pub(super) struct TlsClient {
    pub(super) chain: Vec<CertificateDer<'static>>,
    pub(super) cached: std::sync::Mutex<Verdict>,
}

#[derive(Clone, Debug)]
pub(super) struct Verdict {
    /// [`TlsMaterial::id`] it was reached with.
    pub(super) material: u64,
    /// When it lapses (the certificate's expiry).
    pub(super) until: SystemTime,
    pub(super) cert: ClientCert,
}

impl ConnInfo {
    /// A plaintext connection from `addr`.
    pub fn plaintext(addr: Option<SocketAddr>) -> Self {
        Self {
            addr,
            tls: None,
            activity: None,
        }
    }

    /// The connection's activity record: handlers touch it, streams hold
    /// it busy.
    pub fn activity(&self) -> Option<&Arc<Activity>> {
        self.activity.as_ref()
    }

    /// Who is calling on this connection, as of `now` and the TLS material
    /// in force: the cached verdict while it holds, else the chain checked
    /// again (after a reload, or once the certificate has expired).
    pub fn peer(&self, current: Option<&TlsMaterial>, now: SystemTime) -> Peer {
        let Some(tls) = &self.tls else {
            return Peer::plaintext(self.addr);
        };
        let mut cached = tls
            .cached
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(m) = current
            && (cached.material != m.id || now >= cached.until)
        {
            let chain = (!tls.chain.is_empty()).then_some(tls.chain.as_slice());
            let (cert, until) = m.verdict(chain, now);
            *cached = Verdict {
                material: m.id,
                until,
                cert,
            };
        }
        Peer {
            addr: self.addr,
            transport: Transport::Tls(cached.cert.clone()),
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let read = match &mut this.io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Memory(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        };
        if read.is_pending()
            && let Poll::Ready(e) = this.idle.poll_idle(cx)
        {
            return Poll::Ready(Err(e));
        }
        read
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Memory(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Memory(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Memory(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Memory(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Memory(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
