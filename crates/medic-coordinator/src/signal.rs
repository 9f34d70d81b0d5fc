//! Signals become [`Control`] messages: SIGHUP reloads, SIGTERM or SIGINT
//! drains; a second SIGTERM or SIGINT exits at once.

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use crate::server::Control;

/// Spawns the signal listener and returns the control channel for `run`.
pub fn listen() -> std::io::Result<mpsc::Receiver<Control>> {
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(async move {
        let mut stopping = false;
        loop {
            let c = tokio::select! {
                _ = hup.recv() => Control::Reload,
                _ = term.recv() => Control::Shutdown,
                _ = int.recv() => Control::Shutdown,
            };
            if c == Control::Shutdown {
                if stopping {
                    tracing::warn!("second stop signal: exiting at once");
                    std::process::exit(1);
                }
                stopping = true;
            }
            if tx.send(c).await.is_err() {
                return;
            }
        }
    });
    Ok(rx)
}
