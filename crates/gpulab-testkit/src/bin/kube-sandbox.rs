//! A standalone Kubernetes API emulator with one simulated GPU node (g4dn.xlarge-like), for pointing
//! kubectl, gpulab or a benchmark at. Writes its kubeconfig to the path given as the first argument (if
//! any), then says so and prints the kubeconfig, then serves until Ctrl-C.
//!
//! ```text
//! cargo run -p gpulab-testkit --bin kube-sandbox -- /tmp/emulator.kubeconfig
//! KUBECONFIG=/tmp/emulator.kubeconfig kubectl get nodes
//! ```
//!
//! Options (environment):
//! - `GPULAB_SANDBOX_ADDR`: listen address, default `127.0.0.1:0`;
//! - `GPULAB_SANDBOX_LATENCY_MS`: per-request latency;
//! - `GPULAB_SANDBOX_GPU_NODES`: how many GPU nodes (default 1); with 0, GPU pods stay Pending
//!   (`Unschedulable`) forever;
//! - `GPULAB_SANDBOX_PORTS`: port-forward routes, comma-separated `NAMESPACE/POD:PORT=HOST:PORT`, e.g.
//!   `gpulab/gpu-dev-pod:8888=127.0.0.1:40001`: a port-forward to that pod port connects there.
//!
//! The line `Kubernetes API emulator at URL` on standard error says it is serving (the kubeconfig file,
//! when asked for, is complete by then).

use std::net::SocketAddr;
use std::time::Duration;

use gpulab_testkit::kube::{KubeEmulator, NodeSpec};

/// One `GPULAB_SANDBOX_PORTS` entry: `NAMESPACE/POD:PORT=HOST:PORT`.
fn parse_route(entry: &str) -> Result<(String, String, u16, SocketAddr), String> {
    let bad = || format!("GPULAB_SANDBOX_PORTS: {entry:?} is not NAMESPACE/POD:PORT=HOST:PORT");
    let (pod_port, to) = entry.split_once('=').ok_or_else(bad)?;
    let (pod, port) = pod_port.rsplit_once(':').ok_or_else(bad)?;
    let (namespace, pod) = pod.split_once('/').ok_or_else(bad)?;
    let port = port.parse().map_err(|_| bad())?;
    let to = to.parse().map_err(|_| bad())?;
    Ok((namespace.into(), pod.into(), port, to))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::var("GPULAB_SANDBOX_ADDR").unwrap_or_else(|_| "127.0.0.1:0".into());
    let emu = KubeEmulator::start_on(addr.parse()?).await?;
    let gpu_nodes: u32 = match std::env::var("GPULAB_SANDBOX_GPU_NODES") {
        Ok(n) => n.parse()?,
        Err(_) => 1,
    };
    for i in 0..gpu_nodes {
        emu.add_node(NodeSpec::gpu(&format!(
            "ip-192-168-10-{}.us-west-2.compute.internal",
            10 + i
        )));
    }
    if let Ok(ms) = std::env::var("GPULAB_SANDBOX_LATENCY_MS") {
        emu.set_latency(Duration::from_millis(ms.parse()?));
    }
    if let Ok(routes) = std::env::var("GPULAB_SANDBOX_PORTS") {
        for entry in routes.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (namespace, pod, port, to) = parse_route(entry)?;
            emu.register_port(&namespace, &pod, port, to);
        }
    }
    if let Some(path) = std::env::args_os().nth(1) {
        emu.write_kubeconfig(path.as_ref())?;
        eprintln!("kubeconfig written to {}", path.to_string_lossy());
    }
    eprintln!("Kubernetes API emulator at {} (Ctrl-C stops it)", emu.url());
    println!("{}", emu.kubeconfig_yaml());
    tokio::signal::ctrl_c().await?;
    Ok(())
}
