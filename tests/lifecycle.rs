//! The whole lifecycle, as a user runs it, against emulated clouds: AWS in moto (behind the fault proxy
//! that answers the EKS calls moto lacks) and the cluster side in the Kubernetes emulator, which runs
//! the workspace's commands on this machine. plan → up → up again (resume) → status → exec → cp →
//! test (which must report the missing GPU) → slurm setup (refused) → cost → stop/start → down, which also
//! deletes the image repository, then nothing tagged with the lab is left.

use gpulab_core::checks::{CheckOptions, CheckStatus};
use gpulab_core::events::{Event, Recorder};
use gpulab_core::image::ecr::EcrClient;
use gpulab_core::plan::Plan;
use gpulab_core::provision::aws::load_sdk_config;
use gpulab_core::remote::ssh::workspace_user;
use gpulab_core::remote::{CopyDirection, ExecRequest, ExitStatus, RemoteExec};
use gpulab_core::slurm::{SetupOptions, SlurmState};
use gpulab_core::spec::SpecLayer;
use gpulab_core::state::UpStep;
use gpulab_core::{Lab, Provider};
use gpulab_testkit::LabDir;
use gpulab_testkit::clouds::EmulatedClouds;
use gpulab_testkit::sshd::Sshd;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_up_status_exec_cp_test_slurm_cost_stop_start_down() {
    let (user, public_key) = LabDir::new().with_ssh_key(None);
    let clouds = EmulatedClouds::start(&user.home())
        .await
        .expect("start moto and the Kubernetes emulator");
    let emu = &clouds.kube;
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
    assert!(plan.aws.iter().any(|r| r.kind_name() == "eks:nodegroup"));
    assert!(plan.cost.per_hour > 0.6);

    // The workspace's sshd is a real OpenSSH sshd on this machine, reached through the emulator's
    // port-forward to the pod's port 22 and pinned to the host key `up` records. It admits only the user
    // running the tests, and gpulab logs in as root, as the workspace image's sshd expects: so the SSH
    // steps run as root (as CI does).
    let sshd = Sshd::start();
    sshd.authorize(&public_key);
    let options = clouds.lab_options(user.home().join(".local/share/gpulab"));
    let lab = Lab::new(spec, Provider::Aws, options.clone())
        .await
        .unwrap();
    sshd.stand_in_for_workspace(emu, &lab.spec().spec, lab.id())
        .await;

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
            UpStep::Preflight,
            UpStep::Provision,
            UpStep::Workspace,
            UpStep::Ready
        ]
    );
    assert!(
        state
            .resources
            .iter()
            .any(|r| r.kind.name().contains("vpc")),
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
    assert_eq!(
        status.provider.as_ref().unwrap().cluster.to_string(),
        "ACTIVE"
    );
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
    let pod_dir = emu.pod_dir("gpulab", "gpu-dev-pod-0");
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

    // ssh: one connection through the API server's port-forward, many commands over it.
    if sshd.user() == workspace_user() {
        let ssh = lab.ssh().await.expect("ssh through the port-forward");
        let out = ssh
            .exec(ExecRequest::shell("echo over-ssh; exit 6"))
            .await
            .unwrap();
        assert_eq!(
            (String::from_utf8_lossy(&out.stdout).trim(), out.status),
            ("over-ssh", ExitStatus::Code(6))
        );
        ssh.close().await.unwrap();
    } else {
        eprintln!(
            "skipping the SSH steps: sshd admits only {}, gpulab logs in as {}",
            sshd.user(),
            workspace_user()
        );
    }

    // test: no GPU, nvidia-smi or CUDA PyTorch on this machine, so the report must say so and fail,
    // not pass.
    let report = lab
        .test_gpu(&CheckOptions {
            vllm_model: None,
            repeats: 3,
            ..Default::default()
        })
        .await
        .expect("the checks run and report");
    assert!(!report.passed(), "{:#?}", report.rows());
    let smi = report
        .checks
        .iter()
        .find(|c| c.name == "nvidia-smi")
        .expect("an nvidia-smi check");
    assert_eq!(smi.status, CheckStatus::Unavailable, "{smi:?}");
    assert!(
        !report
            .checks
            .iter()
            .any(|c| c.status == CheckStatus::Pass && c.measured.is_some()),
        "no benchmark passes without a GPU: {:#?}",
        report.rows()
    );

    // slurm setup: it detects the pod's GPUs first and refuses, changing nothing, when there are none.
    let refused = lab
        .slurm_setup(&SetupOptions {
            install_missing: false,
            ..Default::default()
        })
        .await
        .expect_err("no GPU, no Slurm");
    assert!(refused.to_string().contains("no GPU"), "{refused}");
    let slurm = lab.status().await.unwrap().cluster.unwrap().slurm;
    let sinfo_here = std::process::Command::new("sh")
        .args(["-c", "command -v sinfo"])
        .output()
        .unwrap()
        .status
        .success();
    if !sinfo_here {
        assert_eq!(slurm, Some(SlurmState::NotInstalled));
    } else {
        assert!(slurm.is_some(), "status asks a ready pod about Slurm");
    }

    // image: `gpulab image build` creates the lab's ECR repository before it builds (the build needs
    // docker or a cluster that runs Jobs, neither of which is here); `down` must delete it.
    let ecr =
        EcrClient::new(&load_sdk_config(&lab.spec().spec.region, &options.aws.sdk).await).unwrap();
    let repository = gpulab_core::image::repository_name(lab.spec());
    ecr.ensure_repository(
        &repository,
        &gpulab_core::naming::aws_tags(&lab.spec().spec, lab.id()),
        lab.id(),
    )
    .await
    .unwrap();

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
    assert_eq!(Lab::list(&options).unwrap().labs.len(), 1);
    let teardown = lab.down(&Recorder::default()).await.expect("down");
    assert!(teardown.leftovers.is_empty(), "{:?}", teardown.leftovers);
    assert!(!teardown.deleted.is_empty());
    assert!(
        teardown
            .deleted
            .iter()
            .any(|r| r.kind.name() == "ecr-repository" && r.id == repository),
        "{:?}",
        teardown.deleted
    );
    assert_eq!(ecr.describe_repository(&repository).await.unwrap(), None);
    assert!(lab.state().unwrap().is_none());
    assert!(Lab::list(&options).unwrap().labs.is_empty());
    assert!(emu.object("pods", "gpulab", "gpu-dev-pod-0").is_none());
    assert!(
        emu.object("persistentvolumeclaims", "gpulab", "gpu-dev-pod-workspace")
            .is_none()
    );
    assert!(
        emu.object("daemonsets", "kube-system", "gpulab-nvidia-device-plugin")
            .is_none()
    );
}
