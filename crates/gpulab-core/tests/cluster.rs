//! The cluster side against the Kubernetes emulator, over real HTTP with kube-rs: the device plugin
//! addon, the workspace (objects, secrets, readiness and why it is not ready), and exec, copy and
//! port-forward through the API server.

use std::time::Duration;

use gpulab_core::Error;
use gpulab_core::addon::{ClusterAddon, NvidiaDevicePlugin};
use gpulab_core::events::{Event, Recorder, Silent};
use gpulab_core::naming::{KubeNames, LabId};
use gpulab_core::remote::api_server::ApiServerExec;
use gpulab_core::remote::{CopyDirection, ExecRequest, ExitStatus, RemoteExec};
use gpulab_core::spec::{DevicePluginLayer, SpecLayer, ValidSpec, WorkspaceLayer};
use gpulab_core::workspace::{KubeWorkspace, VolumeClass, WorkspaceManager};
use gpulab_testkit::LabDir;
use gpulab_testkit::kube::{KubeEmulator, NodeSpec};
use gpulab_testkit::ready_lab::{ReadyLab, test_spec};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::PostParams;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The ready lab, taken apart the way these tests use it.
async fn ready_lab() -> (KubeEmulator, LabDir, ValidSpec, LabId, ApiServerExec) {
    let lab = ReadyLab::start().await;
    let exec = lab.exec();
    (lab.emu, lab.dir, lab.spec, lab.id, exec)
}

#[tokio::test]
async fn the_device_plugin_makes_gpu_nodes_advertise_their_gpus() {
    let emu = KubeEmulator::start().await.unwrap();
    emu.add_node(NodeSpec::cpu("system-1"));
    emu.add_node(NodeSpec::gpu("gpu-1").with_gpus(4));
    let (_home, spec) = test_spec(SpecLayer::default());
    let id = LabId::generate().unwrap();
    let client = emu.client();

    let before = NvidiaDevicePlugin
        .status(&client, &spec, &id)
        .await
        .unwrap();
    assert!(!before.healthy);
    assert!(before.problem.unwrap().contains("not installed"));
    assert_eq!(before.gpu_nodes, [("gpu-1".to_string(), 0)]);

    NvidiaDevicePlugin
        .install(&client, &spec, &id, &Silent)
        .await
        .unwrap();
    let after = NvidiaDevicePlugin
        .status(&client, &spec, &id)
        .await
        .unwrap();
    assert!(after.healthy, "{:?}", after.problem);
    assert_eq!(
        after.installed_version.as_deref(),
        Some(NvidiaDevicePlugin::VERSION)
    );
    assert_eq!(
        (after.ready, after.desired),
        (1, 1),
        "one plugin pod, on the GPU node only"
    );
    assert_eq!(after.gpu_nodes, [("gpu-1".to_string(), 4)]);

    // Installing again is an upgrade in place, not a second copy.
    NvidiaDevicePlugin
        .install(&client, &spec, &id, &Silent)
        .await
        .unwrap();
    assert_eq!(
        NvidiaDevicePlugin
            .status(&client, &spec, &id)
            .await
            .unwrap()
            .desired,
        1
    );

    NvidiaDevicePlugin
        .remove(&client, &spec, &id)
        .await
        .unwrap();
    NvidiaDevicePlugin
        .remove(&client, &spec, &id)
        .await
        .unwrap();
    assert!(
        !NvidiaDevicePlugin
            .status(&client, &spec, &id)
            .await
            .unwrap()
            .healthy
    );
}

#[tokio::test]
async fn time_slicing_multiplies_the_advertised_gpus() {
    let emu = KubeEmulator::start().await.unwrap();
    emu.add_node(NodeSpec::gpu("gpu-1"));
    let layer = SpecLayer {
        device_plugin: DevicePluginLayer {
            time_slicing_replicas: Some(4),
        },
        ..Default::default()
    };
    let (_home, spec) = test_spec(layer);
    let id = LabId::generate().unwrap();
    NvidiaDevicePlugin
        .install(&emu.client(), &spec, &id, &Silent)
        .await
        .unwrap();
    let status = NvidiaDevicePlugin
        .status(&emu.client(), &spec, &id)
        .await
        .unwrap();
    assert_eq!(status.gpu_nodes, [("gpu-1".to_string(), 4)]);
}

#[tokio::test]
async fn the_workspace_comes_up_with_its_volume_and_a_stable_host_key() {
    let (emu, _home, spec, id, _exec) = ready_lab().await;
    let client = emu.client();
    let info = KubeWorkspace.status(&client, &spec, &id).await.unwrap();
    assert!(info.ready && info.phase == "Running", "{info:?}");
    assert_eq!(info.node.as_deref(), Some("gpu-1"));
    assert_eq!(info.gpus, 1);
    assert_eq!(
        info.volume,
        Some(("gpu-dev-pod-workspace".to_string(), true))
    );
    let host_key = info.host_public_key.clone().expect("host key pinned");
    assert!(host_key.starts_with("ssh-ed25519 "));

    // A second apply (a resumed `up`) keeps the host key and the Jupyter token.
    let names = KubeNames::new(&spec.spec);
    let token = || {
        emu.object("secrets", &names.namespace, &names.jupyter_token)
            .unwrap()["data"]["token"]
            .clone()
    };
    let first_token = token();
    KubeWorkspace
        .apply(&client, &spec, &id, &VolumeClass::Lab, &Silent)
        .await
        .unwrap();
    assert_eq!(
        KubeWorkspace
            .status(&client, &spec, &id)
            .await
            .unwrap()
            .host_public_key,
        Some(host_key)
    );
    assert_eq!(token(), first_token);

    // Deleting with keep_volume leaves /workspace for the next up; without, everything goes.
    KubeWorkspace
        .delete(&client, &spec, &id, true)
        .await
        .unwrap();
    assert!(
        emu.object("persistentvolumeclaims", &names.namespace, &names.volume)
            .is_some()
    );
    assert!(emu.object("pods", &names.namespace, &names.pod).is_none());
    KubeWorkspace
        .delete(&client, &spec, &id, false)
        .await
        .unwrap();
    assert!(
        emu.object("persistentvolumeclaims", &names.namespace, &names.volume)
            .is_none()
    );
    assert_eq!(
        KubeWorkspace
            .status(&client, &spec, &id)
            .await
            .unwrap()
            .phase,
        "absent"
    );
    assert!(
        emu.object("namespaces", "", &names.namespace).is_none(),
        "the lab's own namespace goes with it"
    );
}

#[tokio::test]
async fn a_namespace_the_lab_did_not_create_is_used_but_never_deleted() {
    let emu = KubeEmulator::start().await.unwrap();
    emu.add_node(NodeSpec::gpu("gpu-1"));
    let client = emu.client();
    // A team's namespace, with something of theirs in it.
    let team = Namespace {
        metadata: ObjectMeta {
            name: Some("team-ml".into()),
            labels: Some([("team".to_string(), "ml".to_string())].into()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &team)
        .await
        .unwrap();
    let (_home, spec) = test_spec(SpecLayer {
        workspace: WorkspaceLayer {
            namespace: Some("team-ml".into()),
            ..Default::default()
        },
        ..Default::default()
    });
    let id = LabId::generate().unwrap();
    KubeWorkspace
        .apply(&client, &spec, &id, &VolumeClass::Lab, &Silent)
        .await
        .unwrap();
    let names = KubeNames::new(&spec.spec);
    assert!(emu.object("pods", "team-ml", &names.pod).is_some());
    let labels = |emu: &KubeEmulator| {
        emu.object("namespaces", "", "team-ml").unwrap()["metadata"]["labels"].clone()
    };
    assert!(
        labels(&emu).get("gpulab.io/lab").is_none(),
        "not taken over: {}",
        labels(&emu)
    );

    KubeWorkspace
        .delete(&client, &spec, &id, false)
        .await
        .unwrap();
    assert!(emu.object("pods", "team-ml", &names.pod).is_none());
    assert!(
        emu.object("namespaces", "", "team-ml").is_some(),
        "down must not delete a namespace it did not create"
    );
}

#[tokio::test]
async fn without_a_gpu_node_the_pod_stays_pending_and_says_why() {
    let emu = KubeEmulator::start().await.unwrap();
    emu.add_node(NodeSpec::cpu("system-1"));
    let (_home, spec) = test_spec(SpecLayer::default());
    let id = LabId::generate().unwrap();
    let client = emu.client();
    KubeWorkspace
        .apply(&client, &spec, &id, &VolumeClass::Lab, &Silent)
        .await
        .unwrap();
    let recorder = Recorder::default();
    let err = KubeWorkspace
        .wait_ready(&client, &spec, &id, Duration::from_millis(600), &recorder)
        .await
        .unwrap_err();
    let Error::Timeout { pending, .. } = &err else {
        panic!("expected a timeout, got {err}")
    };
    assert!(
        pending.contains("not scheduled") && pending.contains("Insufficient nvidia.com/gpu"),
        "{pending}"
    );
    assert!(
        recorder.events().iter().any(
            |e| matches!(e, Event::Waiting { on, .. } if on.contains("no node has a free GPU"))
        )
    );
}

#[tokio::test]
async fn a_gpu_node_without_the_device_plugin_is_diagnosed() {
    let emu = KubeEmulator::start().await.unwrap();
    emu.add_node(NodeSpec::gpu("gpu-1"));
    let (_home, spec) = test_spec(SpecLayer::default());
    let id = LabId::generate().unwrap();
    let client = emu.client();
    KubeWorkspace
        .apply(&client, &spec, &id, &VolumeClass::Lab, &Silent)
        .await
        .unwrap();
    let info = KubeWorkspace.status(&client, &spec, &id).await.unwrap();
    assert!(!info.ready);
    assert!(
        info.problem.as_deref().unwrap().contains("device plugin"),
        "{info:?}"
    );
    let plugin = NvidiaDevicePlugin
        .status(&client, &spec, &id)
        .await
        .unwrap();
    assert!(plugin.problem.unwrap().contains("not installed"));

    // Installing the plugin lets the pending pod schedule.
    NvidiaDevicePlugin
        .install(&client, &spec, &id, &Silent)
        .await
        .unwrap();
    KubeWorkspace
        .wait_ready(&client, &spec, &id, Duration::from_secs(5), &Silent)
        .await
        .unwrap();
}

#[tokio::test]
async fn an_unpullable_image_is_reported() {
    let emu = KubeEmulator::start().await.unwrap();
    emu.add_node(NodeSpec::gpu("gpu-1"));
    emu.fail_image_pulls("nvidia/cuda");
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
    let info = KubeWorkspace.status(&client, &spec, &id).await.unwrap();
    assert!(
        info.problem
            .as_deref()
            .unwrap()
            .contains("cannot pull the image"),
        "{info:?}"
    );
}

#[tokio::test]
async fn a_deleted_image_fails_the_wait_at_once_with_its_name() {
    // A CUDA tag past its support window is deleted from the registry: the pull fails with "not found"
    // ("manifest unknown"), and waiting the full timeout for it helps no one.
    let emu = KubeEmulator::start().await.unwrap();
    emu.add_node(NodeSpec::gpu("gpu-1"));
    let (_home, spec) = test_spec(SpecLayer::default());
    emu.fail_image_pulls(&spec.image);
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
    let err = KubeWorkspace
        .wait_ready(&client, &spec, &id, Duration::from_secs(60), &Silent)
        .await
        .unwrap_err();
    assert!(
        matches!(err, gpulab_core::Error::Workspace { .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains(&spec.image), "{text}");
    assert!(text.contains("not found"), "{text}");
}

#[tokio::test]
async fn exec_returns_output_exit_codes_and_takes_stdin() {
    let (_emu, _home, _spec, _id, exec) = ready_lab().await;
    let out = exec
        .exec(ExecRequest::shell("echo hello; echo oops >&2"))
        .await
        .unwrap();
    assert_eq!(
        (out.stdout.as_slice(), out.stderr.as_slice(), out.status),
        (&b"hello\n"[..], &b"oops\n"[..], ExitStatus::Code(0))
    );

    let failed = exec.exec(ExecRequest::shell("exit 7")).await.unwrap();
    assert_eq!(failed.status, ExitStatus::Code(7));

    let request = ExecRequest {
        argv: vec!["wc".into(), "-c".into()],
        stdin: Some(vec![b'x'; 100_000]),
        ..Default::default()
    };
    let counted = exec.exec(request).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&counted.stdout).trim(), "100000");

    let request = ExecRequest {
        env: vec![("GREETING".into(), "hi there".into())],
        ..ExecRequest::shell("echo \"$GREETING\"")
    };
    assert_eq!(exec.exec(request).await.unwrap().stdout, b"hi there\n");
}

#[tokio::test]
async fn a_100_mib_file_round_trips_byte_identical() {
    let (emu, _home, spec, _id, exec) = ready_lab().await;
    let names = KubeNames::new(&spec.spec);
    let local = tempfile::tempdir().unwrap();
    let source = local.path().join("weights.bin");
    gpulab_testkit::write_noise(&source, 100 << 20, 1);
    let remote_dir = emu.pod_dir(&names.namespace, &names.pod).join("workspace");
    std::fs::create_dir_all(&remote_dir).unwrap();

    let recorder = Recorder::default();
    let up = exec
        .copy(
            CopyDirection::Upload {
                local: source.clone(),
                remote: remote_dir.display().to_string(),
            },
            &recorder,
        )
        .await
        .unwrap();
    assert_eq!((up.files, up.bytes), (1, 100 << 20));
    assert!(
        recorder
            .events()
            .iter()
            .any(|e| matches!(e, Event::Progress { done, .. } if *done > 50 << 20))
    );
    assert_eq!(
        std::fs::read(remote_dir.join("weights.bin")).unwrap(),
        std::fs::read(&source).unwrap()
    );
    let leftovers: Vec<_> = std::fs::read_dir(&remote_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(
        leftovers.len(),
        1,
        "no staging directory left behind: {leftovers:?}"
    );

    let back = local.path().join("back.bin");
    let down = exec
        .copy(
            CopyDirection::Download {
                remote: remote_dir.join("weights.bin").display().to_string(),
                local: back.clone(),
            },
            &Silent,
        )
        .await
        .unwrap();
    assert_eq!(down.bytes, 100 << 20);
    assert_eq!(
        std::fs::read(&back).unwrap(),
        std::fs::read(&source).unwrap()
    );
}

#[tokio::test]
async fn directories_copy_with_their_modes_and_failures_leave_nothing() {
    use std::os::unix::fs::PermissionsExt;
    let (emu, _home, spec, _id, exec) = ready_lab().await;
    let names = KubeNames::new(&spec.spec);
    let local = tempfile::tempdir().unwrap();
    let project = local.path().join("project");
    std::fs::create_dir_all(project.join("src")).unwrap();
    std::fs::write(project.join("src/train.py"), "print('hi')\n").unwrap();
    std::fs::write(project.join("run.sh"), "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(
        project.join("run.sh"),
        std::fs::Permissions::from_mode(0o750),
    )
    .unwrap();
    let remote_dir = emu.pod_dir(&names.namespace, &names.pod).join("workspace");
    std::fs::create_dir_all(&remote_dir).unwrap();

    let stats = exec
        .copy(
            CopyDirection::Upload {
                local: project.clone(),
                remote: remote_dir.display().to_string(),
            },
            &Silent,
        )
        .await
        .unwrap();
    assert_eq!(stats.files, 2);
    let mode = std::fs::metadata(remote_dir.join("project/run.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o750);
    assert_eq!(
        std::fs::read_to_string(remote_dir.join("project/src/train.py")).unwrap(),
        "print('hi')\n"
    );

    let into = local.path().join("fetched");
    std::fs::create_dir_all(&into).unwrap();
    let remote = remote_dir.join("project").display().to_string();
    exec.copy(
        CopyDirection::Download {
            remote,
            local: into.clone(),
        },
        &Silent,
    )
    .await
    .unwrap();
    let mode = std::fs::metadata(into.join("project/run.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o750);

    // A download of something missing fails, names it, and leaves no staging directory.
    let missing = remote_dir.join("nope.bin").display().to_string();
    let err = exec
        .copy(
            CopyDirection::Download {
                remote: missing,
                local: into.clone(),
            },
            &Silent,
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("nope.bin"), "{err}");
    let names: Vec<_> = std::fs::read_dir(&into)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names, ["project"], "only the earlier copy is there");
}

#[tokio::test]
async fn tunnels_reach_a_port_in_the_pod() {
    let (emu, _home, spec, _id, exec) = ready_lab().await;
    let names = KubeNames::new(&spec.spec);
    // An echo server stands in for sshd on the pod's port 22.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = socket.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    emu.register_port(&names.namespace, &names.pod, 22, addr);

    let mut tunnel = exec.tunnel(22).await.unwrap();
    tunnel.write_all(b"SSH-2.0-probe\r\n").await.unwrap();
    let mut buf = [0u8; 15];
    tunnel.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"SSH-2.0-probe\r\n");
}
