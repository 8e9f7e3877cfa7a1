//! The real `kubectl` against the Kubernetes API emulator, to keep the emulator honest: discovery,
//! tables, apply (client- and server-side), exec over WebSocket with exit codes and stdin, and
//! `port-forward`, both as SPDY tunnelled in WebSocket (kubectl's default since 1.31) and as plain
//! SPDY/3.1 (its fallback, forced with `KUBECTL_PORT_FORWARD_WEBSOCKETS=false`).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use gpulab_testkit::echo_server;
use gpulab_testkit::kube::{KubeEmulator, NodeSpec};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

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

/// Start `kubectl port-forward pod/ws :PORT` (a free local port), and return it with the local port it
/// printed.
async fn start_port_forward(
    k: &Kubectl<'_>,
    remote: u16,
    websockets: bool,
) -> (tokio::process::Child, u16) {
    let mut child = tokio::process::Command::new(k.bin)
        .args([
            "port-forward",
            "--address",
            "127.0.0.1",
            "pod/ws",
            &format!(":{remote}"),
        ])
        .env("KUBECONFIG", k.kubeconfig)
        .env("HOME", k.home)
        .env(
            "KUBECTL_PORT_FORWARD_WEBSOCKETS",
            if websockets { "true" } else { "false" },
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("run kubectl port-forward");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let local = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            // "Forwarding from 127.0.0.1:41234 -> 8080"
            if let Some(rest) = line.strip_prefix("Forwarding from 127.0.0.1:") {
                return rest
                    .split_whitespace()
                    .next()
                    .unwrap()
                    .parse::<u16>()
                    .unwrap();
            }
        }
        panic!("kubectl port-forward exited before it listened");
    })
    .await
    .expect("kubectl port-forward listens");
    // keep reading its output so it never blocks on a full pipe
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, local)
}

/// Send `payload` through the forwarded port and read back everything the echo server returns.
async fn round_trip(local: u16, payload: &[u8]) -> Vec<u8> {
    let conn = tokio::net::TcpStream::connect(("127.0.0.1", local))
        .await
        .unwrap();
    let (mut r, mut w) = conn.into_split();
    let sent = payload.to_vec();
    let writer = tokio::spawn(async move {
        w.write_all(&sent).await.unwrap();
        w.shutdown().await.unwrap();
    });
    let mut back = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), r.read_to_end(&mut back))
        .await
        .expect("the echo comes back")
        .unwrap();
    writer.await.unwrap();
    back
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_port_forwards_over_websocket_and_spdy() {
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
    k.ok(&["apply", "-f", manifest.to_str().unwrap()]).await;
    let echo = echo_server().await;
    emu.register_port("default", "ws", 8080, echo);

    // 300 KiB: larger than SPDY's initial 64 KiB window and than one frame.
    let payload: Vec<u8> = (0..300 * 1024u32).map(|i| (i * 7 % 251) as u8).collect();
    for websockets in [true, false] {
        let (mut kubectl, local) = start_port_forward(&k, 8080, websockets).await;
        // two connections in turn: each is its own pair of streams on the one session
        assert_eq!(
            round_trip(local, b"hello through the pod\n").await,
            b"hello through the pod\n"
        );
        let back = round_trip(local, &payload).await;
        assert!(
            back == payload,
            "websockets={websockets}: {} bytes came back",
            back.len()
        );
        kubectl.kill().await.unwrap();
    }

    // A pod port nobody registered: the connection ends with nothing, kubectl reports why.
    let (mut kubectl, local) = start_port_forward(&k, 9999, true).await;
    let back = round_trip(local, b"anyone?").await;
    assert!(back.is_empty());
    let _ = kubectl.kill().await;
}
