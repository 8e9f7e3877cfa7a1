//! The workspace run for real: the emulator's kubelet starts the workspace pod's container in a Debian
//! root filesystem (debootstrap, cached under ~/.cache/gpulab-rootfs) with bubblewrap, so the real setup
//! script installs sshd, Python, the venv and Jupyter with apt and pip from the package registries, and
//! then every way in is checked for the same Python: exec through the API server (plain and `bash -lc`),
//! an SSH session through the API server's port-forward, the Jupyter server's kernel, a Slurm job, and
//! the pod started again from the volume. No GPU, so the spec asks for a small package set (no
//! PyTorch, no vLLM, no compilers): the mechanism is the one a real pod runs.
//!
//! Slow (minutes the first time: the root filesystem and the first start's downloads); it prints the
//! first start's and the restart's durations.

use std::sync::Arc;
use std::time::{Duration, Instant};

use gpulab_core::addon::{ClusterAddon, NvidiaDevicePlugin};
use gpulab_core::events::Silent;
use gpulab_core::naming::{KubeNames, LabId};
use gpulab_core::remote::api_server::ApiServerExec;
use gpulab_core::remote::forward::forward_local;
use gpulab_core::remote::ssh::{HostKeyPolicy, SshAuth, SshOptions, SshSession, parse_public_key};
use gpulab_core::remote::{ExecRequest, ExecStreams, RemoteExec};
use gpulab_core::slurm;
use gpulab_core::spec::{SpecLayer, WorkspaceLayer};
use gpulab_core::workspace::{KubeWorkspace, VolumeClass, WorkspaceManager};
use gpulab_testkit::LabDir;
use gpulab_testkit::kube::{KubeEmulator, NodeSpec};
use gpulab_testkit::rootfs::{self, Distro, RootFs};
use k8s_openapi::api::core::v1::Pod;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const FIRST_START: Duration = Duration::from_secs(1200);
const PRINT_PREFIX: &str = "import sys; print(sys.prefix)";

async fn run(exec: &dyn RemoteExec, request: ExecRequest) -> String {
    let what = request.argv.join(" ");
    let out = exec
        .exec(request)
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what}: {:?}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn argv(words: &[&str]) -> ExecRequest {
    ExecRequest {
        argv: words.iter().map(|w| w.to_string()).collect(),
        timeout: Some(Duration::from_secs(120)),
        ..Default::default()
    }
}

/// `gpulab slurm run -- python -c 'print(sys.prefix)'` without a GPU: the job's stdout.
async fn srun_prefix(exec: &dyn RemoteExec) -> String {
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let command: Vec<String> = ["python", "-c", PRINT_PREFIX].map(String::from).to_vec();
    let no_gpu = slurm::SrunOptions {
        gpus: 0,
        ..Default::default()
    };
    let streams = ExecStreams {
        stdin: None,
        stdout: Box::pin(&mut stdout),
        stderr: Box::pin(&mut stderr),
    };
    let status = slurm::run(exec, &command, &no_gpu, streams)
        .await
        .expect("slurm run");
    assert!(
        status.success(),
        "slurm run: {status:?}\n{}",
        String::from_utf8_lossy(&stderr)
    );
    String::from_utf8_lossy(&stdout).trim().to_string()
}

/// A GET through a local forward to the workspace's Jupyter server; the body of a 200, else empty.
async fn http_get(port: u16, path: &str) -> String {
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to the forward");
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), tcp.read_to_end(&mut response))
        .await
        .expect("Jupyter answers")
        .unwrap();
    // Empty while Jupyter is still starting (the forward connects, the pod's port refuses).
    let text = String::from_utf8_lossy(&response).into_owned();
    if !text.starts_with("HTTP/1.1 200") {
        return String::new();
    }
    text.split_once("\r\n\r\n")
        .map(|x| x.1)
        .unwrap_or("")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_workspace_runs_its_real_setup_with_one_python_everywhere_and_restarts_from_its_volume()
{
    if let Some(why) = rootfs::missing_tools() {
        eprintln!("skipped: {why}");
        return;
    }
    let root = tokio::task::spawn_blocking(|| RootFs::cached(&Distro::DEBIAN_12))
        .await
        .unwrap()
        .expect("the Debian root filesystem");
    match root.built_in {
        Some(took) => eprintln!(
            "built the Debian 12 root filesystem in {:.0?} ({} MiB, cached at {})",
            took,
            root.size_bytes() >> 20,
            root.path.display()
        ),
        None => eprintln!(
            "Debian 12 root filesystem from the cache: {}",
            root.path.display()
        ),
    }

    let emu = KubeEmulator::start().await.expect("start the emulator");
    emu.run_containers("nvidia/cuda", root);
    emu.add_node(NodeSpec::cpu("system-1"));
    emu.add_node(NodeSpec::gpu("gpu-1"));
    let (dir, _public) = LabDir::new().with_ssh_key(None);
    let spec = dir
        .inputs(SpecLayer {
            workspace: WorkspaceLayer {
                python_packages: Some(Vec::new()),
                apt_packages: Some(Vec::new()),
                ..Default::default()
            },
            ..Default::default()
        })
        .resolve()
        .and_then(|r| r.validate())
        .expect("a valid spec");
    let id = LabId::generate().unwrap();
    let client = emu.client();
    let names = KubeNames::new(&spec.spec);
    NvidiaDevicePlugin
        .install(&client, &spec, &id, &Silent)
        .await
        .unwrap();

    // First start: the real setup installs everything.
    let started = Instant::now();
    KubeWorkspace
        .apply(&client, &spec, &id, &VolumeClass::Lab, &Silent)
        .await
        .unwrap();
    let info = match KubeWorkspace
        .wait_ready(&client, &spec, &id, FIRST_START, &Silent)
        .await
    {
        Ok(info) => info,
        Err(e) => {
            let log = emu
                .object("pods", &names.namespace, &names.pod)
                .map(|p| p["status"].to_string())
                .unwrap_or_default();
            panic!("the workspace did not become ready: {e}\n{log}");
        }
    };
    let first_start = started.elapsed();

    let exec = ApiServerExec::new(client.clone(), &names.namespace, &names.pod, None);
    let venv = "/workspace/.venv";

    // 1. exec through the API server, no shell: `gpulab exec -- python -c ...`.
    assert_eq!(
        run(&exec, argv(&["python", "-c", PRINT_PREFIX])).await,
        venv
    );
    // ... and through a login shell, as the checks, vLLM and Slurm run their commands (Debian's
    // /etc/profile resets PATH: the profile.d file puts the venv back).
    let login = run(
        &exec,
        ExecRequest::shell(format!(
            "python -c '{PRINT_PREFIX}'; command -v pip; echo \"$HF_HOME $TRITON_CACHE_DIR\""
        )),
    )
    .await;
    assert_eq!(
        login,
        format!("{venv}\n{venv}/bin/pip\n/workspace/.cache/huggingface /workspace/.cache/triton")
    );

    // 2. An SSH session (PAM's /etc/environment, then the login shell's profile), through the API
    //    server's port-forward to the pod's own loopback.
    let exec_arc: Arc<dyn RemoteExec> = Arc::new(exec.clone());
    let ssh_forward = forward_local(
        exec_arc.clone(),
        "127.0.0.1:0".parse().unwrap(),
        22,
        Arc::new(Silent),
    )
    .await
    .unwrap();
    let host_key = parse_public_key(info.host_public_key.as_deref().expect("a host key")).unwrap();
    let ssh = SshSession::connect_tcp(
        ssh_forward.local_addr(),
        SshOptions::new(
            "root",
            SshAuth::key(dir.home().join(".ssh/id_ed25519")),
            HostKeyPolicy::Pinned(host_key),
        ),
    )
    .await
    .expect("SSH into the workspace");
    assert_eq!(run(&ssh, argv(&["python", "-c", PRINT_PREFIX])).await, venv);
    assert_eq!(
        run(
            &ssh,
            ExecRequest::shell(format!("python -c '{PRINT_PREFIX}'; echo $VLLM_CACHE_ROOT"))
        )
        .await,
        format!("{venv}\n/workspace/.cache/vllm")
    );

    // 3. Jupyter: the running server's kernel is the venv's python, and a kernel started from that spec
    //    prints the venv.
    let token = run(&exec, ExecRequest::shell("printf %s \"$JUPYTER_TOKEN\"")).await;
    let jupyter_forward = forward_local(
        exec_arc.clone(),
        "127.0.0.1:0".parse().unwrap(),
        8888,
        Arc::new(Silent),
    )
    .await
    .unwrap();
    let port = jupyter_forward.local_addr().port();
    let mut specs = String::new();
    for _ in 0..120 {
        // Jupyter starts in the background while sshd already answers.
        let probe = tokio::net::TcpStream::connect(("127.0.0.1", port)).await;
        if probe.is_ok() {
            specs = http_get(port, &format!("/api/kernelspecs?token={token}")).await;
            if specs.contains("python3") {
                break;
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let specs: serde_json::Value = serde_json::from_str(&specs).expect("kernelspecs JSON");
    assert_eq!(
        specs["kernelspecs"]["python3"]["spec"]["argv"][0],
        format!("{venv}/bin/python"),
        "{specs}"
    );
    let kernel = "from jupyter_client.manager import start_new_kernel\n\
km, kc = start_new_kernel(kernel_name='python3')\n\
out = []\n\
kc.execute_interactive('import sys; print(sys.prefix)', timeout=60, \
output_hook=lambda m: out.append(m['content'].get('text', '')) if m['msg_type'] == 'stream' else None)\n\
print(''.join(out).strip())\n\
km.shutdown_kernel(now=True)\n";
    let mut request = argv(&[
        "/usr/bin/env",
        "-u",
        "PATH",
        "/workspace/.venv/bin/python",
        "-",
    ]);
    request.stdin = Some(kernel.as_bytes().to_vec());
    assert_eq!(run(&exec, request).await, venv);

    // 4. Slurm, run for real: its setup installs slurm-wlm and munge with apt (the .debs into the
    //    volume's cache, the packages into the list a restart reinstalls), keeps the munge key on the
    //    volume, and starts munged, slurmctld and slurmd in the container; a job prints the venv. No
    //    GPU here, so the configuration is the detected CPUs and memory alone and the job asks for no
    //    GPU (`gpulab slurm setup` itself stops at "no GPU" before this point).
    let resources = slurm::detect(&exec).await.expect("detect for Slurm");
    assert_eq!(resources.gpu_count(), 0, "{resources:?}");
    let slurm_started = Instant::now();
    let slurm_log = slurm::start(&exec, &resources, &slurm::SetupOptions::default())
        .await
        .expect("Slurm starts in the workspace");
    let slurm_first = slurm_started.elapsed();
    assert_eq!(srun_prefix(&exec).await, venv, "{slurm_log}");

    // Something in each cache, to find again after the restart.
    run(
        &exec,
        ExecRequest::shell("mkdir -p \"$HF_HOME/hub\" && echo model > \"$HF_HOME/hub/marker\""),
    )
    .await;
    ssh_forward.close().await;
    jupyter_forward.close().await;

    // Restart: the pod is removed at once (grace period 0, as when its node is lost), the StatefulSet
    // makes `<name>-0` again with a fresh root filesystem and the same volume.
    let uid = |emu: &KubeEmulator| {
        emu.object("pods", &names.namespace, &names.pod)
            .map(|p| p["metadata"]["uid"].to_string())
    };
    let old_uid = uid(&emu);
    let pods: kube::Api<Pod> = kube::Api::namespaced(client.clone(), &names.namespace);
    let started = Instant::now();
    let at_once = kube::api::DeleteParams {
        grace_period_seconds: Some(0),
        ..Default::default()
    };
    pods.delete(&names.pod, &at_once).await.unwrap();
    while uid(&emu).is_none() || uid(&emu) == old_uid {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    KubeWorkspace
        .wait_ready(&client, &spec, &id, FIRST_START, &Silent)
        .await
        .expect("the workspace comes back");
    let restart = started.elapsed();
    let exec = ApiServerExec::new(client.clone(), &names.namespace, &names.pod, None);
    assert_eq!(
        run(&exec, argv(&["python", "-c", PRINT_PREFIX])).await,
        venv
    );
    assert_eq!(
        run(&exec, ExecRequest::shell("cat \"$HF_HOME/hub/marker\"")).await,
        "model"
    );
    let log = emu
        .pod_log(&names.namespace, &names.pod)
        .expect("the pod's log");
    assert!(log.contains("Python packages present"), "{log}");
    assert!(!log.contains("creating /workspace/.venv"), "{log}");
    // The system packages came back from the .debs on the volume, without `apt-get update`.
    let volume = emu.volume_dir(&names.namespace, &names.volume).unwrap();
    assert!(
        std::fs::read_dir(volume.join(".cache/apt/archives"))
            .unwrap()
            .flatten()
            .any(|e| e
                .file_name()
                .to_string_lossy()
                .starts_with("openssh-server_")),
        "no cached openssh-server .deb on the volume"
    );
    // Slurm came back from the volume: the packages from the cached .debs, the same munge key; starting
    // it again installs nothing.
    assert_eq!(
        run(
            &exec,
            ExecRequest::shell(
                "cmp /etc/munge/munge.key /workspace/.gpulab/munge.key && command -v srun"
            )
        )
        .await,
        "/usr/bin/srun"
    );
    let slurm_started = Instant::now();
    let slurm_log = slurm::start(
        &exec,
        &resources,
        &slurm::SetupOptions {
            install_missing: false,
            ..Default::default()
        },
    )
    .await
    .expect("Slurm starts again after the restart, with nothing to install");
    let slurm_again = slurm_started.elapsed();
    assert_eq!(srun_prefix(&exec).await, venv, "{slurm_log}");
    // Where the restart's time went, by the setup's own timestamps.
    for line in log.lines().filter(|l| l.starts_with("[gpulab-setup]")) {
        eprintln!("restart: {line}");
    }

    // A spot interruption, as an EKS managed node group handles one: a replacement node joins, the old
    // one is cordoned and drained. The eviction runs the pod's preStop hook for real (the activity
    // reporter's `prestop`: the notice on the volume, a wall message, 20 s for a training script to
    // checkpoint), then SIGTERM; the workspace comes back on the new node with /workspace intact.
    let old_node = emu
        .object("pods", &names.namespace, &names.pod)
        .and_then(|p| p["spec"]["nodeName"].as_str().map(str::to_string))
        .expect("the workspace's node");
    emu.add_node(NodeSpec::gpu("gpu-2"));
    let old_uid = uid(&emu);
    let started = Instant::now();
    emu.handle().drain_node(&old_node);
    let notice = volume.join(".gpulab/notice");
    while !notice.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the preStop hook wrote no notice"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // While it stops, the lab's status says so (the pod still carries its Ready condition).
    let stopping = KubeWorkspace.status(&client, &spec, &id).await.unwrap();
    assert!(!stopping.ready, "{stopping:?}");
    assert_eq!(stopping.phase, "Terminating");
    assert!(
        stopping
            .problem
            .as_deref()
            .unwrap_or("")
            .contains("stopping"),
        "{stopping:?}"
    );
    let left = emu.drain_node(&old_node, Duration::from_secs(90)).await;
    assert!(left.is_empty(), "still on the drained node: {left:?}");
    let drained = started.elapsed();
    emu.remove_node(&old_node);
    while uid(&emu).is_none() || uid(&emu) == old_uid {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let back = KubeWorkspace
        .wait_ready(&client, &spec, &id, FIRST_START, &Silent)
        .await
        .expect("the workspace comes back after the interruption");
    let interruption = started.elapsed();
    assert_eq!(back.node.as_deref(), Some("gpu-2"));
    let exec = ApiServerExec::new(client.clone(), &names.namespace, &names.pod, None);
    assert_eq!(
        run(&exec, ExecRequest::shell("cat \"$HF_HOME/hub/marker\"")).await,
        "model"
    );
    // The notice a training script polls, and the reason the next pod's reporter hands the agent.
    let notice: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&notice).unwrap()).expect("notice JSON");
    assert_eq!(notice["kind"], "shutdown", "{notice}");
    assert!(
        notice["text"].as_str().unwrap().contains("stopping"),
        "{notice}"
    );
    let report = "import json, urllib.request\n\
token = open('/etc/gpulab/activity/token').read().strip()\n\
request = urllib.request.Request('http://127.0.0.1:9102/activity', headers={'Authorization': 'Bearer ' + token})\n\
print(json.dumps(json.load(urllib.request.urlopen(request, timeout=10))['last_shutdown']))\n";
    let mut request = argv(&["python3", "-"]);
    request.stdin = Some(report.as_bytes().to_vec());
    let mut last_shutdown = String::new();
    for _ in 0..60 {
        // The reporter starts in the background of the setup.
        match exec.exec(request.clone()).await {
            Ok(out) if out.status.success() => {
                last_shutdown = String::from_utf8_lossy(&out.stdout).trim().to_string();
                break;
            }
            _ => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
    let last_shutdown: serde_json::Value =
        serde_json::from_str(&last_shutdown).expect("the reporter's last_shutdown");
    assert!(
        last_shutdown["reason"]
            .as_str()
            .unwrap_or("")
            .contains("spot interruption"),
        "{last_shutdown}"
    );

    eprintln!(
        "workspace in the real-root-filesystem mode: first start {:.1}s, restart {:.1}s, \
         Slurm's first setup {:.1}s and its start after the restart {:.1}s, \
         spot interruption {:.1}s (drained in {:.1}s, of which the preStop notice waits 20 s)",
        first_start.as_secs_f64(),
        restart.as_secs_f64(),
        slurm_first.as_secs_f64(),
        slurm_again.as_secs_f64(),
        interruption.as_secs_f64(),
        drained.as_secs_f64()
    );
}
