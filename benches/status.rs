//! gpulab's status call against the kubectl invocations a user would run for the same picture, on the
//! Kubernetes emulator with 20 ms added to every request (a nearby region's round trip).
//!
//! Reproduce: `cargo bench -p gpulab-benches --bench status`
//!
//! One run (2-core container, kubectl v1.32.4, warm kubectl discovery cache, median of 7):
//!
//! ```text
//! status at 20 ms per request, median of 7:
//!   gpulab cluster_status:            47.1 ms
//!   kubectl (8 invocations):       1055.7 ms
//!   ratio (kubectl / gpulab):         22.4x
//! ```
//!
//! The lab: a system node and a GPU node, the device plugin and the workspace applied and ready
//! (`gpulab_testkit::ready_lab`). gpulab issues its API calls concurrently (`cluster_status`), then runs
//! nvidia-smi and the Slurm probe in the pod, together; kubectl runs one process per question, one after
//! another: `version`, `get nodes -o json`, the device plugin's DaemonSet, the pod, the PVC, the
//! services, the secrets, and `exec POD -- nvidia-smi …`. This machine has no GPU, so nvidia-smi fails
//! on both sides after the same exec round trip. (Earlier runs: 47.7 ms against 1142.4 ms with one node, and
//! 45.1 ms against 1543.7 ms before status probed Slurm; kubectl's side varies most between runs on this machine.)

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use gpulab_core::addon::NvidiaDevicePlugin;
use gpulab_core::naming::KubeNames;
use gpulab_core::status::{NVIDIA_SMI_QUERY, cluster_status};
use gpulab_testkit::ready_lab::ReadyLab;

const RUNS: usize = 7;
const LATENCY: Duration = Duration::from_millis(20);

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// The kubectl invocations, in the order a user (or the original check-status.sh) runs them.
fn kubectl_sequence(names: &KubeNames) -> Vec<Vec<String>> {
    let ns = names.namespace.as_str();
    let mut exec = vec!["-n", ns, "exec", names.pod.as_str(), "--"];
    exec.extend(NVIDIA_SMI_QUERY);
    [
        vec!["version", "-o", "json"],
        vec!["get", "nodes", "-o", "json"],
        vec![
            "-n",
            NvidiaDevicePlugin::NAMESPACE,
            "get",
            "ds",
            NvidiaDevicePlugin::DAEMONSET,
        ],
        vec!["-n", ns, "get", "pod", names.pod.as_str()],
        vec!["-n", ns, "get", "pvc"],
        vec!["-n", ns, "get", "svc"],
        vec!["-n", ns, "get", "secrets"],
        exec,
    ]
    .into_iter()
    .map(|args| args.into_iter().map(str::to_string).collect())
    .collect()
}

async fn run_kubectl(bin: &Path, home: &Path, kubeconfig: &Path, seq: &[Vec<String>]) {
    for args in seq {
        // Exit codes are not checked: nvidia-smi fails here (no GPU), as it does for gpulab.
        tokio::process::Command::new(bin)
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .env("HOME", home)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .expect("run kubectl");
    }
}

fn main() {
    let Some(kubectl) = gpulab_testkit::kubectl() else {
        eprintln!("skipping: kubectl is not installed");
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // The ready lab the tests use: a system node, a GPU node, the device plugin and the workspace.
        let lab = ReadyLab::start().await;
        let (emu, spec) = (&lab.emu, &lab.spec);
        let home = lab.dir.home();
        let home = home.as_path();
        let client = emu.client();
        let kubeconfig = home.join("kubeconfig");
        emu.write_kubeconfig(&kubeconfig).unwrap();
        let names = lab.names();
        let exec = lab.exec();
        let seq = kubectl_sequence(&names);
        emu.set_latency(LATENCY);

        // Warm up both: kubectl fills its discovery cache under $HOME/.kube, gpulab its connection.
        let status = cluster_status(&client, spec, &lab.id, Some(&exec))
            .await
            .unwrap();
        assert!(status.reachable && status.workspace.as_ref().is_some_and(|w| w.ready));
        run_kubectl(&kubectl, home, &kubeconfig, &seq).await;

        let mut gpulab = Vec::new();
        let mut kubectl_times = Vec::new();
        for _ in 0..RUNS {
            let t = Instant::now();
            let status = cluster_status(&client, spec, &lab.id, Some(&exec))
                .await
                .unwrap();
            gpulab.push(t.elapsed());
            assert!(status.reachable);
            let t = Instant::now();
            run_kubectl(&kubectl, home, &kubeconfig, &seq).await;
            kubectl_times.push(t.elapsed());
        }
        let (g, k) = (median(gpulab), median(kubectl_times));
        println!(
            "status at {} ms per request, median of {RUNS}:",
            LATENCY.as_millis()
        );
        println!("  gpulab cluster_status:        {:>8.1} ms", ms(g));
        println!(
            "  kubectl ({} invocations):     {:>8.1} ms",
            seq.len(),
            ms(k)
        );
        println!(
            "  ratio (kubectl / gpulab):     {:>8.1}x",
            k.as_secs_f64() / g.as_secs_f64()
        );
    });
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
