//! A TCP relay between agents and the coordinator. It lets a run cut a
//! share of the agents off (`partition`) and point every agent at a
//! coordinator that came back on another port (`coordinator-crash`)
//! without touching the agents' configuration.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A running relay.
#[derive(Debug)]
pub struct Proxy {
    /// Where agents connect.
    pub addr: SocketAddr,
    cut: watch::Sender<bool>,
    target: watch::Sender<Option<SocketAddr>>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// A relay on loopback port 0 to `target`.
    pub async fn start(target: Option<SocketAddr>) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (cut, cut_rx) = watch::channel(false);
        let (target, target_rx) = watch::channel(target);
        let task = tokio::spawn(accept(listener, cut_rx, target_rx));
        Ok(Self {
            addr,
            cut,
            target,
            task,
        })
    }

    /// The URL agents are given.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Cuts (true) or restores (false) the link. Cutting closes every
    /// relayed connection at once and refuses new ones.
    pub fn set_cut(&self, cut: bool) {
        self.cut.send_replace(cut);
    }

    /// Relays new connections to `target` (`None`: refuse them).
    pub fn set_target(&self, target: Option<SocketAddr>) {
        self.target.send_replace(target);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept(
    listener: TcpListener,
    cut: watch::Receiver<bool>,
    target: watch::Receiver<Option<SocketAddr>>,
) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else {
            continue;
        };
        while conns.try_join_next().is_some() {}
        let (is_cut, to) = (*cut.borrow(), *target.borrow());
        let Some(to) = to.filter(|_| !is_cut) else {
            drop(inbound);
            continue;
        };
        let mut cut = cut.clone();
        conns.spawn(async move {
            let Ok(mut outbound) = TcpStream::connect(to).await else {
                return;
            };
            let _ = inbound.set_nodelay(true);
            let _ = outbound.set_nodelay(true);
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                _ = cut.wait_for(|c| *c) => {}
            }
        });
    }
}
