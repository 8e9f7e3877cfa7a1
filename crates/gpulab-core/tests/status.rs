//! `status::cluster_status` against the Kubernetes emulator: a healthy lab, and each way a lab is not
//! (no GPU node, no device plugin, a pod stuck pending, an unreachable API server, no nvidia-smi).

use async_trait::async_trait;
use gpulab_core::addon::{ClusterAddon, NvidiaDevicePlugin};
use gpulab_core::events::{Reporter, Silent};
use gpulab_core::naming::{KubeNames, LabId};
use gpulab_core::remote::api_server::ApiServerExec;
use gpulab_core::remote::{
    CopyDirection, CopyOptions, ExecRequest, ExecStreams, ExitStatus, RemoteExec, TransferStats,
    Tunnel,
};
use gpulab_core::spec::{SpecLayer, ValidSpec};
use gpulab_core::status::{PodGpus, cluster_status};
use gpulab_core::workspace::{KubeWorkspace, VolumeClass, WorkspaceManager};
use gpulab_testkit::LabDir;
use gpulab_testkit::kube::{KubeEmulator, NodeSpec};
use gpulab_testkit::ready_lab::{ReadyLab, test_spec};

/// The ready lab, taken apart the way these tests use it.
async fn ready_lab() -> (KubeEmulator, LabDir, ValidSpec, LabId) {
    let lab = ReadyLab::start().await;
    (lab.emu, lab.dir, lab.spec, lab.id)
}

fn exec_for(emu: &KubeEmulator, spec: &ValidSpec) -> ApiServerExec {
    let names = KubeNames::new(&spec.spec);
    ApiServerExec::new(emu.client(), &names.namespace, &names.pod, None)
}

/// A FAKE nvidia-smi, for the one test that checks a successful query end to end: this machine has no
/// GPU. It wraps the real exec through the API server and only swaps the word `nvidia-smi` in a command for a
/// script in the pod's sandbox that prints what a T4 node's nvidia-smi prints for the query.
struct FakeNvidiaSmi {
    inner: ApiServerExec,
    script: String,
}

impl FakeNvidiaSmi {
    fn rewrite(&self, mut request: ExecRequest) -> ExecRequest {
        for word in &mut request.argv {
            if word == "nvidia-smi" {
                *word = self.script.clone();
            }
        }
        request
    }
}

#[async_trait]
impl RemoteExec for FakeNvidiaSmi {
    fn name(&self) -> &'static str {
        "fake-nvidia-smi"
    }

    async fn exec_streaming(
        &self,
        request: ExecRequest,
        streams: ExecStreams<'_>,
    ) -> gpulab_core::Result<ExitStatus> {
        self.inner
            .exec_streaming(self.rewrite(request), streams)
            .await
    }

    async fn copy_with(
        &self,
        direction: CopyDirection,
        options: &CopyOptions,
        reporter: &dyn Reporter,
    ) -> gpulab_core::Result<TransferStats> {
        self.inner.copy_with(direction, options, reporter).await
    }

    async fn tunnel(&self, port: u16) -> gpulab_core::Result<Box<dyn Tunnel>> {
        self.inner.tunnel(port).await
    }
}

#[tokio::test]
async fn a_healthy_lab_reports_nodes_plugin_pod_gpus_services_and_secret_names() {
    let (emu, _home, spec, id) = ready_lab().await;
    let names = KubeNames::new(&spec.spec);
    let sandbox = emu.pod_dir(&names.namespace, &names.pod);
    std::fs::create_dir_all(&sandbox).unwrap();
    let script = sandbox.join("nvidia-smi");
    // FAKE nvidia-smi (see FakeNvidiaSmi): answers the query only.
    std::fs::write(
        &script,
        "#!/bin/sh\n[ \"$1\" = --query-gpu=index,name,memory.total,driver_version ] || exit 9\necho '0, Tesla T4, 15360, 535.104.05'\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let exec = FakeNvidiaSmi {
        inner: exec_for(&emu, &spec),
        script: script.to_str().unwrap().to_string(),
    };

    let status = cluster_status(&emu.client(), &spec, &id, Some(&exec))
        .await
        .unwrap();
    assert!(status.healthy(), "{:?}", status.problems);
    assert!(status.reachable && status.error.is_none());
    assert!(status.server_version.is_some());

    let gpu = status.nodes.iter().find(|n| n.name == "gpu-1").unwrap();
    assert!(gpu.ready && gpu.gpu_node);
    assert_eq!(gpu.allocatable_gpus, 1);
    let cpu = status.nodes.iter().find(|n| n.name == "system-1").unwrap();
    assert!(!cpu.gpu_node && cpu.allocatable_gpus == 0);

    let plugin = status.device_plugin.as_ref().unwrap();
    assert!(plugin.healthy && (plugin.ready, plugin.desired) == (1, 1));
    let ws = status.workspace.as_ref().unwrap();
    assert_eq!((ws.phase.as_str(), ws.ready), ("Running", true));
    assert_eq!(ws.node.as_deref(), Some("gpu-1"));

    match &status.gpus {
        PodGpus::Visible { gpus } => {
            assert_eq!(gpus.len(), 1);
            assert_eq!(gpus[0].name, "Tesla T4");
            assert_eq!(gpus[0].memory_total_mib, Some(15360));
            assert_eq!(gpus[0].driver_version, "535.104.05");
        }
        other => panic!("{other:?}"),
    }

    assert!(
        status
            .services
            .iter()
            .any(|s| s.name == names.service && s.kind == "ClusterIP" && s.ports.contains(&22)),
        "{:?}",
        status.services
    );
    for secret in [
        &names.authorized_keys,
        &names.host_key,
        &names.jupyter_token,
    ] {
        assert!(status.secrets.present.contains(secret), "{secret}");
    }
    assert!(status.secrets.missing.is_empty());

    // Names only: no secret's value reaches the status.
    let json = serde_json::to_string(&status).unwrap();
    assert!(!json.contains("PRIVATE KEY"), "{json}");
    let token = emu
        .object("secrets", &names.namespace, &names.jupyter_token)
        .unwrap();
    for value in token["data"].as_object().unwrap().values() {
        assert!(!json.contains(value.as_str().unwrap()));
    }
}

#[tokio::test]
async fn without_nvidia_smi_the_gpus_are_reported_unavailable() {
    let (emu, _home, spec, id) = ready_lab().await;
    let exec = exec_for(&emu, &spec);
    let status = cluster_status(&emu.client(), &spec, &id, Some(&exec))
        .await
        .unwrap();
    let host_has_nvidia_smi = std::process::Command::new("sh")
        .args(["-c", "command -v nvidia-smi"])
        .output()
        .is_ok_and(|o| o.status.success());
    if host_has_nvidia_smi {
        // The emulator's exec runs on this machine: a real GPU host answers for real.
        eprintln!("this machine has nvidia-smi: it was queried for real");
        return;
    }
    match &status.gpus {
        PodGpus::Unavailable { reason } => assert!(reason.contains("nvidia-smi"), "{reason}"),
        other => panic!("nvidia-smi is absent here, yet: {other:?}"),
    }
    assert!(!status.healthy());
    assert!(
        status
            .problems
            .iter()
            .any(|p| p.contains("no GPU is visible in the pod")),
        "{:?}",
        status.problems
    );

    // Without an exec transport, nvidia-smi is not asked at all, and that is no problem.
    let status = cluster_status(&emu.client(), &spec, &id, None)
        .await
        .unwrap();
    assert!(matches!(status.gpus, PodGpus::NotQueried { .. }));
    assert!(status.healthy(), "{:?}", status.problems);
}

#[tokio::test]
async fn without_a_gpu_node_the_pod_is_pending_and_no_gpu_is_queried() {
    let emu = KubeEmulator::start().await.unwrap();
    emu.add_node(NodeSpec::cpu("system-1"));
    let (_home, spec) = test_spec(SpecLayer::default());
    let id = LabId::generate().unwrap();
    let client = emu.client();
    NvidiaDevicePlugin
        .install(&client, &spec, &id, &Silent)
        .await
        .unwrap();
    KubeWorkspace
        .apply(&client, &spec, &id, &VolumeClass::Lab, &Silent)
        .await
        .unwrap();
    let exec = exec_for(&emu, &spec);

    let status = cluster_status(&client, &spec, &id, Some(&exec))
        .await
        .unwrap();
    assert!(status.reachable && !status.healthy());
    assert!(status.nodes.iter().all(|n| !n.gpu_node));
    let plugin = status.device_plugin.as_ref().unwrap();
    assert!(plugin.gpu_nodes.is_empty() && !plugin.healthy);
    let ws = status.workspace.as_ref().unwrap();
    assert_eq!((ws.phase.as_str(), ws.ready), ("Pending", false));
    assert!(ws.problem.is_some());
    assert!(matches!(status.gpus, PodGpus::NotQueried { .. }));
    assert!(
        status.problems.iter().any(|p| p.contains("no GPU node")),
        "{:?}",
        status.problems
    );
}

#[tokio::test]
async fn a_missing_device_plugin_is_reported() {
    let emu = KubeEmulator::start().await.unwrap();
    emu.add_node(NodeSpec::gpu("gpu-1"));
    let (_home, spec) = test_spec(SpecLayer::default());
    let id = LabId::generate().unwrap();
    let client = emu.client();
    KubeWorkspace
        .apply(&client, &spec, &id, &VolumeClass::Lab, &Silent)
        .await
        .unwrap();

    let status = cluster_status(&client, &spec, &id, None).await.unwrap();
    let plugin = status.device_plugin.as_ref().unwrap();
    assert!(!plugin.healthy && plugin.installed_version.is_none());
    assert_eq!(plugin.gpu_nodes, [("gpu-1".to_string(), 0)]);
    assert_eq!(status.nodes[0].allocatable_gpus, 0);
    assert!(!status.workspace.as_ref().unwrap().ready);
    assert!(
        status.problems.iter().any(|p| p.contains("not installed")),
        "{:?}",
        status.problems
    );
}

#[tokio::test]
async fn a_pod_stuck_pending_is_reported_with_its_reason() {
    let emu = KubeEmulator::start().await.unwrap();
    emu.add_node(NodeSpec::gpu("gpu-1"));
    let (_home, spec) = test_spec(SpecLayer::default());
    let id = LabId::generate().unwrap();
    let client = emu.client();
    NvidiaDevicePlugin
        .install(&client, &spec, &id, &Silent)
        .await
        .unwrap();
    emu.fail_image_pulls(&spec.image);
    KubeWorkspace
        .apply(&client, &spec, &id, &VolumeClass::Lab, &Silent)
        .await
        .unwrap();
    let exec = exec_for(&emu, &spec);

    let status = cluster_status(&client, &spec, &id, Some(&exec))
        .await
        .unwrap();
    assert!(status.device_plugin.as_ref().unwrap().healthy);
    let ws = status.workspace.as_ref().unwrap();
    assert_eq!((ws.phase.as_str(), ws.ready), ("Pending", false));
    let problem = ws.problem.as_deref().unwrap();
    assert!(status.problems.iter().any(|p| p == problem));
    assert!(matches!(status.gpus, PodGpus::NotQueried { .. }));

    // Before the workspace exists at all: absent, and its secrets are missing (by name).
    let names = KubeNames::new(&spec.spec);
    KubeWorkspace
        .delete(&client, &spec, &id, false)
        .await
        .unwrap();
    let status = cluster_status(&client, &spec, &id, None).await.unwrap();
    assert_eq!(status.workspace.as_ref().unwrap().phase, "absent");
    assert!(status.secrets.missing.contains(&names.host_key));
}

#[tokio::test]
async fn an_unreachable_api_server_is_data_not_an_error() {
    let (_home, spec) = test_spec(SpecLayer::default());
    let id = LabId::generate().unwrap();

    // A stopped emulator.
    let emu = KubeEmulator::start().await.unwrap();
    let client = emu.client();
    drop(emu);
    let status = cluster_status(&client, &spec, &id, None).await.unwrap();
    assert!(!status.reachable && !status.healthy());
    assert!(status.error.is_some());
    assert!(status.nodes.is_empty() && status.workspace.is_none());
    assert!(matches!(status.gpus, PodGpus::NotQueried { .. }));

    // A port nobody listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let client = kube::Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap();
    let status = cluster_status(&client, &spec, &id, None).await.unwrap();
    assert!(!status.reachable);
    assert!(
        status.problems[0].contains("cannot reach the API server"),
        "{:?}",
        status.problems
    );
}
