//! A standalone Kubernetes API emulator with one simulated GPU node (g4dn.xlarge-like), for pointing
//! kubectl, gpulab or a benchmark at. Prints a kubeconfig (and writes it to the path given as the first
//! argument, if any), then serves until Ctrl-C.
//!
//! ```text
//! cargo run -p gpulab-testkit --bin kube-sandbox -- /tmp/emulator.kubeconfig
//! KUBECONFIG=/tmp/emulator.kubeconfig kubectl get nodes
//! ```
//!
//! Options (environment): `GPULAB_SANDBOX_ADDR` (listen address, default `127.0.0.1:0`),
//! `GPULAB_SANDBOX_LATENCY_MS` (per-request latency).

use std::time::Duration;

use gpulab_testkit::kube::{KubeEmulator, NodeSpec};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::var("GPULAB_SANDBOX_ADDR").unwrap_or_else(|_| "127.0.0.1:0".into());
    let emu = KubeEmulator::start_on(addr.parse()?).await?;
    emu.add_node(NodeSpec::gpu("ip-192-168-10-10.us-west-2.compute.internal"));
    if let Ok(ms) = std::env::var("GPULAB_SANDBOX_LATENCY_MS") {
        emu.set_latency(Duration::from_millis(ms.parse()?));
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
