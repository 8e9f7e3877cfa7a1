//! Local port forwarding, `gpulab forward 8888`: a listener on this machine's loopback whose every
//! connection gets its own tunnel to a port in the workspace, over whichever transport
//! ([`RemoteExec::tunnel`]): SSH direct-tcpip channels or the API server's port-forward.
//!
//! ```no_run
//! # async fn demo(exec: std::sync::Arc<dyn gpulab_core::remote::RemoteExec>) -> gpulab_core::Result<()> {
//! use std::sync::Arc;
//! use gpulab_core::events::Silent;
//! use gpulab_core::remote::forward::forward_local;
//!
//! let forward = forward_local(exec, "127.0.0.1:8888".parse().unwrap(), 8888, Arc::new(Silent)).await?;
//! println!("Jupyter on http://{}", forward.local_addr());
//! tokio::signal::ctrl_c().await.ok();
//! forward.close().await;
//! # Ok(()) }
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

use super::RemoteExec;
use crate::events::{Event, Reporter, Unit};
use crate::{Error, Result};

/// A running forward. Dropping it (or [`ForwardHandle::close`]) stops the listener and ends the connections
/// it bridged.
#[derive(Debug)]
pub struct ForwardHandle {
    local_addr: SocketAddr,
    remote_port: u16,
    accepted: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl ForwardHandle {
    /// The address it listens on (with the port the system chose when asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The workspace port connections go to.
    pub fn remote_port(&self) -> u16 {
        self.remote_port
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Stop listening and end every connection, and wait until they have ended.
    pub async fn close(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

impl Drop for ForwardHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Listen on `listen` (a loopback address; port 0 picks a free one) and forward each connection to
/// `remote_port` in the workspace through `exec`, each over its own tunnel, bridged both ways until either
/// side closes. A connection whose tunnel cannot be opened is closed and reported as a warning; the
/// forward goes on. Returns once the listener is bound.
pub async fn forward_local(
    exec: Arc<dyn RemoteExec>,
    listen: SocketAddr,
    remote_port: u16,
    reporter: Arc<dyn Reporter>,
) -> Result<ForwardHandle> {
    if !listen.ip().is_loopback() {
        return Err(Error::Remote {
            message: format!("forward: {listen} is not a loopback address"),
            hint: Some(
                "forwards listen on 127.0.0.1 or ::1 only, so the workspace is not exposed to the network"
                    .into(),
            ),
        });
    }
    let listener = TcpListener::bind(listen).await.map_err(|e| {
        Error::io(
            format!("listen on {listen} for the forward to port {remote_port}"),
            e,
        )
    })?;
    let local_addr = listener
        .local_addr()
        .map_err(|e| Error::io("read the forward's local address", e))?;
    let accepted = Arc::new(AtomicU64::new(0));
    let counter = accepted.clone();
    let step = format!("forward {local_addr} → port {remote_port}");
    let task = tokio::spawn(async move {
        // Owned here, so aborting this task aborts every connection too.
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((socket, peer)) => {
                        let _ = socket.set_nodelay(true);
                        let n = counter.fetch_add(1, Ordering::Relaxed) + 1;
                        reporter.report(Event::Progress { step: step.clone(), done: n, total: None, unit: Unit::Items });
                        let exec = exec.clone();
                        let reporter = reporter.clone();
                        connections.spawn(async move {
                            if let Err(e) = bridge(exec.as_ref(), socket, remote_port).await {
                                reporter.report(Event::Warning {
                                    message: format!("forward to port {remote_port} for {peer}: {e}"),
                                });
                            }
                        });
                    }
                    Err(e) => {
                        // Out of descriptors and the like: say so, and keep listening.
                        reporter.report(Event::Warning { message: format!("forward: accept: {e}") });
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
    });
    Ok(ForwardHandle {
        local_addr,
        remote_port,
        accepted,
        task,
    })
}

async fn bridge(
    exec: &dyn RemoteExec,
    mut socket: tokio::net::TcpStream,
    remote_port: u16,
) -> Result<()> {
    let mut tunnel = exec.tunnel(remote_port).await?;
    match tokio::io::copy_bidirectional(&mut socket, &mut tunnel).await {
        Ok(_) => Ok(()),
        // A peer that resets or vanishes mid-stream is how connections often end; not worth a warning.
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::UnexpectedEof
            ) =>
        {
            Ok(())
        }
        Err(e) => Err(Error::io("bridge the forwarded connection", e)),
    }
}
