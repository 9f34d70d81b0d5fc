//! In-memory connections to a coordinator in the same process: each
//! connection is a [`tokio::io::duplex`] pair, one end handed to the
//! coordinator's in-memory listener (`medic_coordinator::run_in_memory`),
//! the other used by the client. The simulator runs a whole fleet this way
//! on tokio's paused clock: no socket, so no kernel I/O whose timing could
//! make a run differ from the next.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use tokio::io::DuplexStream;
use tokio::sync::mpsc;

/// Bytes each direction of a connection buffers before the writer waits.
const BUFFER: usize = 64 * 1024;

/// The listening side: one [`DuplexStream`] per connection a
/// [`MemoryConnector`] makes.
pub type MemoryIncoming = mpsc::UnboundedReceiver<DuplexStream>;

/// Makes connections to one in-memory listener. Cheap to clone.
#[derive(Clone, Debug)]
pub struct MemoryConnector {
    listener: mpsc::UnboundedSender<DuplexStream>,
}

/// A connector and the listener its connections arrive on.
pub fn link() -> (MemoryConnector, MemoryIncoming) {
    let (tx, rx) = mpsc::unbounded_channel();
    (MemoryConnector { listener: tx }, rx)
}

impl MemoryConnector {
    /// A new connection, or an error when the listener is gone (the
    /// coordinator stopped): the client sees it as a refused connection.
    pub fn connect(&self) -> std::io::Result<DuplexStream> {
        let (client, server) = tokio::io::duplex(BUFFER);
        self.listener.send(server).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                "the in-memory coordinator is not listening",
            )
        })?;
        Ok(client)
    }
}

impl tonic::codegen::Service<tonic::codegen::http::Uri> for MemoryConnector {
    type Response = TokioIo<DuplexStream>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: tonic::codegen::http::Uri) -> Self::Future {
        let conn = self.connect().map(TokioIo::new);
        Box::pin(std::future::ready(conn))
    }
}
