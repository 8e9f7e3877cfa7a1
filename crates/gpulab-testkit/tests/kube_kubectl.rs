//! The real `kubectl` against the Kubernetes API emulator, to keep the emulator honest: discovery,
//! tables, apply (client- and server-side), exec over WebSocket with exit codes and stdin.
//!
//! Not covered: `kubectl port-forward`, which speaks SPDY (directly or tunnelled over WebSocket), a
//! protocol the emulator does not implement; kube-rs port-forwarding is tested in `kube_emulator.rs`.

use std::path::Path;
use std::process::Stdio;

use gpulab_testkit::kube::{KubeEmulator, NodeSpec};
use tokio::io::AsyncWriteExt;

struct Kubectl<'a> {
    bin: &'a Path,
    home: &'a Path,
    kubeconfig: &'a Path,
}

impl Kubectl<'_> {
    async fn run(&self, args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
        let mut child = tokio::process::Command::new(self.bin)
            .args(args)
            .env("KUBECONFIG", self.kubeconfig)
            .env("HOME", self.home)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("run kubectl");
        if let Some(input) = stdin {
            let mut s = child.stdin.take().unwrap();
            s.write_all(input.as_bytes()).await.unwrap();
            s.shutdown().await.unwrap();
            drop(s);
        }
        let out = child.wait_with_output().await.unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    async fn ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.run(args, None).await;
        assert_eq!(code, 0, "kubectl {args:?} failed: {err}");
        out
    }
}

const MANIFEST: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata:
  name: nvidia-device-plugin-config
  namespace: kube-system
data:
  config.yaml: |
    version: v1
    sharing:
      timeSlicing:
        resources:
        - name: nvidia.com/gpu
          replicas: 2
---
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: nvidia-device-plugin-daemonset
  namespace: kube-system
spec:
  selector:
    matchLabels: {name: nvidia-device-plugin-ds}
  template:
    metadata:
      labels: {name: nvidia-device-plugin-ds}
    spec:
      nodeSelector: {nvidia.com/gpu.present: "true"}
      tolerations: [{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]
      containers:
      - name: nvidia-device-plugin-ctr
        image: nvcr.io/nvidia/k8s-device-plugin:v0.17.4
        volumeMounts: [{name: config, mountPath: /etc/nvidia-device-plugin}]
      volumes:
      - name: config
        configMap: {name: nvidia-device-plugin-config}
---
apiVersion: v1
kind: Pod
metadata:
  name: ws
  namespace: default
spec:
  nodeSelector: {nvidia.com/gpu.present: "true"}
  tolerations: [{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]
  containers:
  - name: main
    image: pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime
    resources: {limits: {nvidia.com/gpu: 1}}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_gets_applies_and_execs() {
    let Some(bin) = gpulab_testkit::kubectl() else {
        eprintln!("skipping: kubectl is not installed");
        return;
    };
    let emu = KubeEmulator::start().await.unwrap();
    emu.add_node(NodeSpec::gpu("gpu-node-1"));
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    emu.write_kubeconfig(&kubeconfig).unwrap();
    let manifest = dir.path().join("lab.yaml");
    std::fs::write(&manifest, MANIFEST).unwrap();
    let k = Kubectl {
        bin: &bin,
        home: dir.path(),
        kubeconfig: &kubeconfig,
    };

    let nodes = k.ok(&["get", "nodes"]).await;
    assert!(
        nodes.contains("gpu-node-1") && nodes.contains("Ready"),
        "{nodes}"
    );

    let applied = k.ok(&["apply", "-f", manifest.to_str().unwrap()]).await;
    assert!(
        applied.contains("daemonset.apps/nvidia-device-plugin-daemonset created"),
        "{applied}"
    );
    let again = k.ok(&["apply", "-f", manifest.to_str().unwrap()]).await;
    assert!(again.contains("unchanged"), "{again}");
    let ssa = k
        .ok(&["apply", "--server-side", "-f", manifest.to_str().unwrap()])
        .await;
    assert!(ssa.contains("serverside-applied"), "{ssa}");

    let ds = k.ok(&["get", "ds", "-A"]).await;
    let row = ds
        .lines()
        .find(|l| l.contains("nvidia-device-plugin-daemonset"))
        .unwrap_or_else(|| panic!("{ds}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        &cells[..7],
        [
            "kube-system",
            "nvidia-device-plugin-daemonset",
            "1",
            "1",
            "1",
            "1",
            "1"
        ]
    );

    let pods = k.ok(&["get", "pods", "-A"]).await;
    let ws = pods
        .lines()
        .find(|l| l.contains(" ws "))
        .unwrap_or_else(|| panic!("{pods}"));
    assert!(ws.contains("1/1") && ws.contains("Running"), "{pods}");
    let gpus = k
        .ok(&[
            "get",
            "node",
            "gpu-node-1",
            "-o",
            "jsonpath={.status.allocatable.nvidia\\.com/gpu}",
        ])
        .await;
    assert_eq!(gpus, "2");

    assert_eq!(k.ok(&["exec", "ws", "--", "echo", "hi"]).await, "hi\n");
    let (code, _, err) = k
        .run(&["exec", "ws", "--", "sh", "-c", "exit 3"], None)
        .await;
    assert_eq!(code, 3, "{err}");
    let (code, out, err) = k
        .run(&["exec", "-i", "ws", "--", "cat"], Some("through stdin\n"))
        .await;
    assert_eq!((code, out.as_str()), (0, "through stdin\n"), "{err}");

    let (code, _, err) = k.run(&["get", "pod", "missing"], None).await;
    assert_eq!(code, 1);
    assert!(err.contains("pods \"missing\" not found"), "{err}");
    k.ok(&["delete", "pod", "ws"]).await;
    assert!(emu.object("pods", "default", "ws").is_none());
}
