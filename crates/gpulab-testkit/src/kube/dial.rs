//! Where a port-forward goes: the loopback of a pod's real container, or an address the test
//! registered for the pod's port; and the connection to it, failing with the kubelet's words.

use std::net::SocketAddr;

use super::store::State;
use crate::rootfs;

/// Where a forwarded port of a pod leads: an address the test registered, or the loopback of the
/// pod's real container.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    /// A server the test runs.
    Addr(SocketAddr),
    /// Port `port` on the loopback of the network namespace of process `pid`.
    Sandbox {
        /// A process in the container.
        pid: u32,
    },
}

/// The target of `port` of pod `ns/name`: its real container's loopback when it runs one (as the
/// kubelet connects inside the pod's network namespace), else the address the test registered.
pub(crate) fn target(st: &State, ns: &str, name: &str, port: u16) -> Option<Target> {
    let key = (ns.to_string(), name.to_string());
    if let Some(sb) = st.sandboxes.get(&key) {
        return Some(Target::Sandbox { pid: sb.pid });
    }
    st.ports
        .get(&(key.0, key.1, port))
        .copied()
        .map(Target::Addr)
}

/// Connect to a port-forward target, with the kubelet's error text on failure.
pub(crate) async fn dial(
    target: Option<&Target>,
    port: u16,
) -> Result<tokio::net::TcpStream, String> {
    match target {
        Some(Target::Addr(a)) => tokio::net::TcpStream::connect(a)
            .await
            .map_err(|e| format!("dial tcp4 {a}: {e}")),
        Some(Target::Sandbox { pid }) => rootfs::connect_in(*pid, port)
            .await
            .map_err(|e| format!("dial tcp4 127.0.0.1:{port}: connect: {e}")),
        None => Err(format!(
            "dial tcp4 127.0.0.1:{port}: connect: connection refused (no address registered)"
        )),
    }
}
