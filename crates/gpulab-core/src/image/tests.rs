use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::ConfigMap;

use super::docker::build_with;
use super::*;
use crate::events::Event;

/// A Dockerfile as `gpulab image build` renders it for the default lab (T4, Turing).
const DEFAULT_DOCKERFILE: &str = "FROM nvidia/cuda:12.8.1-cudnn-devel-ubuntu22.04\nRUN true\n";

fn default_options() -> ImageOptions {
    let home = tempfile::tempdir().unwrap();
    let spec = crate::spec::SpecInputs {
        home: Some(home.path().into()),
        ..Default::default()
    }
    .resolve()
    .unwrap()
    .validate()
    .unwrap();
    ImageOptions::for_spec(&spec)
}

#[test]
fn the_image_is_built_for_the_gpu_nodes_platform() {
    // Defect: `docker build` without --platform builds for the laptop's architecture (arm64 on Apple
    // Silicon), and the pod fails on the GPU node with `exec format error`.
    let args = docker_build_args("repo:tag", "/ctx");
    let at = args
        .iter()
        .position(|a| *a == "--platform")
        .expect("--platform");
    assert_eq!(args[at + 1], "linux/amd64");
    let job = kaniko_job(&build());
    let kaniko_args = job.spec.unwrap().template.spec.unwrap().containers[0]
        .args
        .clone()
        .unwrap();
    assert!(kaniko_args.contains(&"--custom-platform=linux/amd64".to_string()));
}

#[test]
fn the_dockerfile_installs_into_a_venv_and_bakes_no_environment_over_the_pods() {
    let options = default_options();
    let dockerfile = render_dockerfile(&options);
    // Never the distribution's Python: `pip install --upgrade pip` into Ubuntu 24.04's system Python fails
    // ("Cannot uninstall pip ... installed by debian").
    assert!(!dockerfile.contains("python3 -m pip"), "{dockerfile}");
    assert!(
        !dockerfile.contains("PIP_BREAK_SYSTEM_PACKAGES"),
        "{dockerfile}"
    );
    assert!(
        dockerfile.contains("RUN python3 -m venv /opt/venv"),
        "{dockerfile}"
    );
    assert!(
        dockerfile.contains("PATH=/opt/venv/bin:$PATH"),
        "{dockerfile}"
    );
    // Nothing that overrides the pod: PIP_NO_CACHE_DIR would disable the workspace's pip cache on the
    // volume, NVIDIA_VISIBLE_DEVICES=all would expose GPUs the device plugin did not allocate.
    assert!(!dockerfile.contains("PIP_NO_CACHE_DIR"), "{dockerfile}");
    assert!(
        !dockerfile.contains("NVIDIA_VISIBLE_DEVICES"),
        "{dockerfile}"
    );
    // The Jupyter kernel is the venv's.
    assert!(
        dockerfile.contains("python -m ipykernel install --sys-prefix --name python3"),
        "{dockerfile}"
    );
    // Pinned versions from the matrix, PyTorch from its CUDA build's index, then vLLM with the same pin.
    assert!(dockerfile.contains("FROM nvidia/cuda:12.8.1-cudnn-devel-ubuntu22.04\n"));
    assert!(
        dockerfile.contains(
            "pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cu128 torch==2.8.0"
        ),
        "{dockerfile}"
    );
    assert!(
        dockerfile.contains("pip install --no-cache-dir torch==2.8.0 vllm==0.11.0 transformers==4.57.1 accelerate==1.10.1 jupyterlab==4.4.9 ipykernel==6.30.1"),
        "{dockerfile}"
    );
    assert!(
        dockerfile.contains("import torch, vllm, transformers, accelerate, jupyterlab, ipykernel")
    );
    // Every tool the setup script's default package list brings is checked for.
    for tool in ["sshd", "git", "curl", "tmux", "htop", "vim", "rsync", "gcc"] {
        assert!(dockerfile.contains(&format!(" {tool}")), "{tool} missing");
    }

    let pinned = ImageOptions {
        base_image: "nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04".into(),
        torch: None,
        python_packages: vec!["vllm==0.6.4".into(), "PyYAML".into()],
        jupyter: false,
        slurm: true,
        ..options
    };
    let text = render_dockerfile(&pinned);
    assert!(text.contains("FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04\n"));
    assert!(
        text.contains("pip install --no-cache-dir vllm==0.6.4 PyYAML\n"),
        "{text}"
    );
    assert!(text.contains("import vllm, yaml\""));
    assert!(text.contains("      slurm-wlm \\\n      munge \\\n"));
}

#[test]
fn tags_names_and_references() {
    let tag = image_tag(DEFAULT_DOCKERFILE);
    assert_eq!(tag.len(), 16);
    assert_eq!(tag, image_tag(DEFAULT_DOCKERFILE));
    assert_ne!(
        tag,
        image_tag(&DEFAULT_DOCKERFILE.replace("22.04", "24.04"))
    );
    let registry = ecr_registry("123456789012", "us-west-2");
    assert_eq!(registry, "123456789012.dkr.ecr.us-west-2.amazonaws.com");
    assert_eq!(
        ecr_registry("1", "cn-north-1"),
        "1.dkr.ecr.cn-north-1.amazonaws.com.cn"
    );
    assert_eq!(
        image_reference(&registry, "gpulab/dev", "abc"),
        "123456789012.dkr.ecr.us-west-2.amazonaws.com/gpulab/dev:abc"
    );
}

fn build() -> KanikoBuild {
    KanikoBuild {
        namespace: "gpulab".into(),
        name: "dev-image-build".into(),
        service_account: "gpulab-image-build".into(),
        dockerfile: DEFAULT_DOCKERFILE.into(),
        destination: "123456789012.dkr.ecr.us-west-2.amazonaws.com/gpulab/dev:0123456789abcdef"
            .into(),
        region: "us-west-2".into(),
        id: crate::naming::LabId::parse("0123456789abcdef").unwrap(),
        labels: [("gpulab.io/lab".to_string(), "dev".to_string())].into(),
    }
}

#[test]
fn the_kaniko_job_parses_back() {
    let b = build();
    let yaml = serde_yaml::to_string(&kaniko_job(&b)).unwrap();
    let job: Job = serde_yaml::from_str(&yaml).unwrap();
    assert_eq!(job, kaniko_job(&b));
    assert!(
        yaml.starts_with("apiVersion: batch/v1\nkind: Job\n"),
        "{yaml}"
    );

    let spec = job.spec.unwrap();
    assert_eq!(
        (spec.backoff_limit, spec.ttl_seconds_after_finished),
        (Some(0), Some(3600))
    );
    let pod = spec.template.spec.unwrap();
    assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
    // Pod Identity credentials come with the service account, not the node's role.
    assert_eq!(
        pod.service_account_name.as_deref(),
        Some("gpulab-image-build")
    );
    let account = kaniko_service_account(&b);
    assert_eq!(account.metadata.name.as_deref(), Some("gpulab-image-build"));
    assert_eq!(account.metadata.labels, Some(b.labels.clone()));
    let tolerations = pod.tolerations.unwrap();
    assert_eq!(tolerations[0].key.as_deref(), Some("nvidia.com/gpu"));
    let c = &pod.containers[0];
    assert_eq!(c.image.as_deref(), Some(KANIKO_IMAGE));
    let args = c.args.clone().unwrap();
    assert!(args.contains(&"--context=dir:///context".to_string()));
    assert!(args.contains(&"--dockerfile=/context/Dockerfile".to_string()));
    assert!(args.contains(&format!("--destination={}", b.destination)));
    let env: Vec<(String, String)> = c
        .env
        .clone()
        .unwrap()
        .into_iter()
        .map(|e| (e.name, e.value.unwrap()))
        .collect();
    assert!(env.contains(&("AWS_SDK_LOAD_CONFIG".into(), "true".into())));
    assert!(env.contains(&("AWS_REGION".into(), "us-west-2".into())));
    assert!(
        c.resources.as_ref().unwrap().limits.is_none(),
        "no GPU, no limits"
    );
    let mounts: Vec<&str> = c
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .map(|m| m.mount_path.as_str())
        .collect();
    assert_eq!(mounts, ["/context", "/kaniko/.docker"]);
    let volumes = pod.volumes.unwrap();
    assert!(
        volumes
            .iter()
            .all(|v| v.config_map.as_ref().unwrap().name == "dev-image-build")
    );

    let map: ConfigMap =
        serde_yaml::from_str(&serde_yaml::to_string(&kaniko_config_map(&b)).unwrap()).unwrap();
    let data = map.data.unwrap();
    assert_eq!(data["Dockerfile"], DEFAULT_DOCKERFILE);
    let config: serde_json::Value = serde_json::from_str(&data["config.json"]).unwrap();
    assert_eq!(config["credsStore"], "ecr-login");
}

/// A docker CLI stand-in: appends each call's arguments to `calls`, what `login` reads on stdin to
/// `calls.stdin`, the build context's Dockerfile to `calls.dockerfile`; `push` fails when `fail_push`.
fn fake_docker(dir: &std::path::Path, fail_push: bool) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let calls = dir.join("calls");
    let program = dir.join("docker");
    let push = if fail_push {
        "echo 'denied: User is not authorized to perform: ecr:InitiateLayerUpload' >&2; exit 1"
    } else {
        "true"
    };
    std::fs::write(
        &program,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$*\" >> '{calls}'\ncase \"$1\" in\n  \
             login) cat >> '{calls}.stdin' ;;\n  \
             build) for last; do :; done; cp \"$last/Dockerfile\" '{calls}.dockerfile' ;;\n  \
             push) {push} ;;\nesac\n",
            calls = calls.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
    program
}

#[tokio::test]
async fn a_docker_build_targets_the_nodes_platform_logs_in_through_stdin_and_pushes() {
    let dir = tempfile::tempdir().unwrap();
    let docker = fake_docker(dir.path(), false);
    let login = RegistryLogin {
        registry: "123456789012.dkr.ecr.us-west-2.amazonaws.com".into(),
        username: "AWS".into(),
        password: "token-from-ecr".into(),
    };
    let image = "123456789012.dkr.ecr.us-west-2.amazonaws.com/gpulab/dev:abc";
    let recorder = crate::events::Recorder::default();
    build_with(
        &docker,
        "FROM ubuntu:24.04\n",
        image,
        Some(&login),
        &recorder,
    )
    .await
    .unwrap();
    let calls = std::fs::read_to_string(dir.path().join("calls")).unwrap();
    let calls: Vec<&str> = calls.lines().collect();
    assert_eq!(calls.len(), 3, "{calls:?}");
    assert!(
        calls[0].starts_with(&format!("build --platform linux/amd64 --pull -t {image} ")),
        "{calls:?}"
    );
    assert_eq!(
        calls[1],
        "login --username AWS --password-stdin 123456789012.dkr.ecr.us-west-2.amazonaws.com"
    );
    assert_eq!(calls[2], format!("push {image}"));
    // The password goes through stdin, never the command line.
    let stdin = std::fs::read_to_string(dir.path().join("calls.stdin")).unwrap();
    assert_eq!(stdin, "token-from-ecr");
    assert!(!calls.iter().any(|c| c.contains("token-from-ecr")));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("calls.dockerfile")).unwrap(),
        "FROM ubuntu:24.04\n"
    );
    // The build context is removed afterwards.
    let context = calls[0].rsplit(' ').next().unwrap();
    assert!(
        !std::path::Path::new(context).exists(),
        "{context} is left behind"
    );
    let finished: Vec<String> = recorder
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Event::StepFinished { step, .. } => Some(step),
            _ => None,
        })
        .collect();
    assert_eq!(finished, ["docker build", "docker login", "docker push"]);
}

#[tokio::test]
async fn a_failed_docker_step_says_what_docker_said_and_ends_its_step_failed() {
    let dir = tempfile::tempdir().unwrap();
    let docker = fake_docker(dir.path(), true);
    let recorder = crate::events::Recorder::default();
    let err = build_with(&docker, "FROM scratch\n", "gpulab/dev:abc", None, &recorder)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("docker push failed: denied: User is not authorized"),
        "{err}"
    );
    let last = recorder.events().pop().unwrap();
    assert!(
        matches!(&last, Event::StepFailed { step, error, .. }
            if step == "docker push" && error.contains("not authorized")),
        "{last:?}"
    );
    // No docker at all: the error names it.
    let missing = dir.path().join("no-such-docker");
    let err = build_with(
        &missing,
        "FROM scratch\n",
        "gpulab/dev:abc",
        None,
        &crate::events::Silent,
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string().contains("docker build: running docker"),
        "{err}"
    );
}

#[test]
fn the_build_requests_what_auto_leaves_beside_the_workspace_and_sets_no_limits() {
    let job = kaniko_job(&build());
    let pod = job.spec.unwrap().template.spec.unwrap();
    let resources = pod.containers[0].resources.clone().unwrap();
    assert!(
        resources.limits.is_none(),
        "a build may burst: {resources:?}"
    );
    let requests = resources.requests.unwrap();
    assert_eq!(requests["cpu"].0, "250m");
    assert_eq!(requests["memory"].0, "1536Mi");

    // On the default g4dn.xlarge, the auto-sized workspace (3100m, 12Gi) and the build fit together in
    // what the node allocates beside the system pods.
    let budget = crate::capacity::node_budget(crate::catalog::instance("g4dn.xlarge").unwrap());
    let workspace = crate::capacity::Resources::new(3100, 12 * 1024);
    assert!(
        budget
            .allocatable
            .minus(budget.system_pods)
            .fits(workspace.plus(crate::capacity::IMAGE_BUILD)),
        "{budget:?}"
    );
    // The old 1 CPU / 4 GiB did not.
    assert!(
        !budget
            .allocatable
            .minus(budget.system_pods)
            .fits(workspace.plus(crate::capacity::Resources::new(1000, 4096)))
    );
}
