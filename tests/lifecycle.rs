//! The whole lifecycle, as a user runs it, against emulated clouds: AWS in moto (behind the fault proxy
//! that answers the EKS calls moto lacks) and the cluster side in the Kubernetes emulator, which runs
//! the workspace's commands on this machine. plan → up → up again (resume) → status → exec → cp →
//! cost → stop/start → down, then nothing tagged with the lab is left.

use std::sync::Arc;
use std::time::Duration;

use aws_credential_types::Credentials;
use gpulab_core::events::{Event, Recorder};
use gpulab_core::lab::steps;
use gpulab_core::plan::Plan;
use gpulab_core::provision::aws::{AwsOptions, SdkOptions, WaitOptions};
use gpulab_core::provision::{ClusterAccess, ClusterAuth};
use gpulab_core::remote::{CopyDirection, ExecRequest, ExitStatus};
use gpulab_core::spec::SpecLayer;
use gpulab_core::{Lab, LabOptions, Provider};
use gpulab_testkit::LabDir;
use gpulab_testkit::fault_proxy::{FaultConfig, FaultProxy};
use gpulab_testkit::kube::{KubeEmulator, NodeSpec};
use gpulab_testkit::moto::{EksGaps, MotoServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_up_status_exec_cp_cost_stop_start_down() {
    let moto = MotoServer::start();
    let gaps = Arc::new(EksGaps::new());
    let proxy = FaultProxy::start(
        moto.addr(),
        FaultConfig {
            seed: 7,
            rules: vec![],
            intercept: Some(gaps),
        },
    )
    .await
    .expect("start the proxy in front of moto");
    let emu = KubeEmulator::start()
        .await
        .expect("start the Kubernetes emulator");
    emu.add_node(NodeSpec::cpu("system-1"));
    emu.add_node(NodeSpec::gpu("gpu-1"));

    let user = LabDir::new().with_default_key();
    let kubeconfig = user.home().join("emulator.kubeconfig");
    emu.write_kubeconfig(&kubeconfig).unwrap();
    let spec = user
        .inputs(SpecLayer {
            name: Some("lifecycle".into()),
            ..Default::default()
        })
        .resolve()
        .unwrap()
        .validate()
        .unwrap();

    // plan: what up will make, with no call to anything.
    let plan = Plan::new(&spec);
    assert!(plan.aws.iter().any(|r| r.kind == "eks:nodegroup"));
    assert!(plan.cost.per_hour > 0.6);

    let options = LabOptions {
        home: Some(user.home().join(".local/share/gpulab")),
        aws: AwsOptions {
            sdk: SdkOptions {
                endpoint_url: Some(proxy.url()),
                credentials: Some(Credentials::new("testing", "testing", None, None, "test")),
                ..Default::default()
            },
            waits: WaitOptions::fast(),
            stop_after_step: None,
        },
        cluster_override: Some(ClusterAccess {
            endpoint: emu.url(),
            ca_pem: None,
            auth: ClusterAuth::Kubeconfig {
                path: Some(kubeconfig),
                context: None,
            },
        }),
        ready_timeout: Some(Duration::from_secs(15)),
        gpulab_bin: Some("gpulab".into()),
    };
    let lab = Lab::new(spec, Provider::Aws, options.clone())
        .await
        .unwrap();

    // up, with progress a user can follow.
    let recorder = Recorder::default();
    let report = lab.up(&recorder).await.expect("up");
    assert!(report.workspace.ready, "{:?}", report.workspace);
    assert!(
        report
            .workspace
            .host_public_key
            .as_deref()
            .is_some_and(|k| k.starts_with("ssh-ed25519 "))
    );
    let events = recorder.events();
    for step in [
        "preflight",
        "create VPC",
        "create GPU node group",
        "create the workspace",
    ] {
        assert!(
            events
                .iter()
                .any(|e| matches!(e, Event::StepFinished { step: s, .. } if s == step)),
            "no {step} in {events:?}"
        );
    }
    let state = lab.state().unwrap().expect("state recorded");
    assert_eq!(
        state.steps_done,
        [
            steps::PREFLIGHT,
            steps::PROVISION,
            steps::WORKSPACE,
            steps::READY
        ]
    );
    assert!(
        state.resources.iter().any(|r| r.kind.contains("vpc")),
        "{:?}",
        state.resources
    );
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&report.kubeconfig)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(
            std::fs::read_to_string(&report.kubeconfig)
                .unwrap()
                .contains("token")
        );
    }

    // up again resumes: nothing new is created, the host key stays.
    let again = Lab::load("lifecycle", options.clone())
        .await
        .unwrap()
        .up(&Recorder::default())
        .await
        .expect("up again");
    assert_eq!(
        again.workspace.host_public_key,
        report.workspace.host_public_key
    );
    assert_eq!(lab.state().unwrap().unwrap().resources, state.resources);

    // status: the provider's view, the cluster's, and the bill.
    let status = lab.status().await.unwrap();
    assert!(status.cluster_error.is_none(), "{:?}", status.cluster_error);
    let cluster = status.cluster.as_ref().unwrap();
    assert!(cluster.reachable && cluster.device_plugin.as_ref().unwrap().healthy);
    assert!(cluster.workspace.as_ref().unwrap().ready);
    // This machine has no GPU: the status says nvidia-smi gave nothing, rather than inventing GPUs.
    assert!(
        !matches!(cluster.gpus, gpulab_core::status::PodGpus::Visible { .. }),
        "{:?}",
        cluster.gpus
    );
    assert_eq!(status.provider.as_ref().unwrap().cluster, "ACTIVE");
    assert_eq!(status.cost.nodes, 1);

    // exec and cp through the API server (the emulator runs them in the pod's sandbox directory).
    let remote = lab.remote().await.unwrap();
    let out = remote
        .exec(ExecRequest::shell("echo ready; exit 3"))
        .await
        .unwrap();
    assert_eq!(
        (out.stdout.as_slice(), out.status),
        (&b"ready\n"[..], ExitStatus::Code(3))
    );
    let pod_dir = emu.pod_dir("gpulab", "gpu-dev-pod");
    let local = user.work().join("train.py");
    std::fs::write(&local, "print('hi')\n").unwrap();
    remote
        .copy(
            CopyDirection::Upload {
                local,
                remote: pod_dir.display().to_string(),
            },
            &Recorder::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(pod_dir.join("train.py")).unwrap(),
        "print('hi')\n"
    );

    // cost, and stop/start scale the GPU nodes.
    assert!(lab.cost().unwrap().per_hour > 0.6);
    lab.scale(0, &Recorder::default()).await.unwrap();
    let stopped = lab.cost().unwrap();
    assert_eq!(stopped.nodes, 0);
    assert!(
        stopped.per_hour < 0.2,
        "only the control plane and volumes: {}",
        stopped.per_hour
    );
    lab.scale(1, &Recorder::default()).await.unwrap();

    // down: everything goes, the lab is forgotten, and Lab::list no longer shows it.
    assert_eq!(Lab::list(&options).unwrap().len(), 1);
    let teardown = lab.down(&Recorder::default()).await.expect("down");
    assert!(teardown.leftovers.is_empty(), "{:?}", teardown.leftovers);
    assert!(!teardown.deleted.is_empty());
    assert!(lab.state().unwrap().is_none());
    assert!(Lab::list(&options).unwrap().is_empty());
    assert!(emu.object("pods", "gpulab", "gpu-dev-pod").is_none());
    assert!(
        emu.object("persistentvolumeclaims", "gpulab", "gpu-dev-pod-workspace")
            .is_none()
    );
    assert!(
        emu.object(
            "daemonsets",
            "kube-system",
            "nvidia-device-plugin-daemonset"
        )
        .is_none()
    );
}
