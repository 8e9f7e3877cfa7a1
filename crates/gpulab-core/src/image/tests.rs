use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::ConfigMap;

use super::*;

const DEFAULT_DOCKERFILE: &str = r#"# The gpulab workspace image, rendered by `gpulab image build`. It holds everything the workspace setup
# script looks for, so a pod started from it installs nothing; the setup script still configures SSH and
# Jupyter on every start.
FROM nvidia/cuda:12.4.1-cudnn-devel-ubuntu22.04

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_BREAK_SYSTEM_PACKAGES=1 \
    PYTHONUNBUFFERED=1 \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      openssh-server \
      python3 \
      python3-venv \
      python3-pip \
      python3-dev \
      git \
      curl \
      tmux \
      htop \
      vim \
      rsync \
      build-essential \
      ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /run/sshd

# Into the system Python: the workspace's venv on /workspace is created with --system-site-packages and
# sees these, so the setup script finds them and installs nothing.
RUN python3 -m pip install --upgrade pip \
 && python3 -m pip install vllm torch transformers accelerate jupyterlab

# Fail the build, not the first pod start, when something is missing.
RUN python3 -c "import vllm, torch, transformers, accelerate, jupyterlab" \
 && for tool in sshd git curl tmux htop vim rsync gcc; do command -v "$tool" >/dev/null || { echo "missing $tool"; exit 1; }; done

WORKDIR /workspace
EXPOSE 22 8888
"#;

#[test]
fn the_dockerfile_holds_everything_the_setup_script_checks_for() {
    let options = ImageOptions::on_base(crate::spec::DEFAULT_IMAGE);
    let dockerfile = render_dockerfile(&options);
    assert_eq!(dockerfile, DEFAULT_DOCKERFILE);

    // Every tool and module setup.sh probes with `have`/`import` is installed.
    let setup = include_str!("../workspace/setup.sh");
    for tool in [
        "sshd", "python3", "git", "curl", "tmux", "htop", "vim", "rsync", "gcc",
    ] {
        assert!(setup.contains(tool), "setup.sh no longer checks {tool}");
        assert!(dockerfile.contains(tool), "{tool} missing");
    }
    for module in ["vllm", "torch", "transformers", "jupyterlab"] {
        assert!(
            setup.contains(&format!("import {module}")),
            "setup.sh no longer imports {module}"
        );
        assert!(
            dockerfile.contains(&format!("import {module}"))
                || dockerfile.contains(&format!(", {module}"))
        );
    }

    let pinned = ImageOptions {
        base_image: "nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04".into(),
        python_packages: vec!["vllm==0.6.4".into(), "PyYAML".into()],
        slurm: true,
        ..options
    };
    let text = render_dockerfile(&pinned);
    assert!(text.contains("FROM nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04\n"));
    assert!(text.contains("pip install vllm==0.6.4 PyYAML\n"));
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

#[tokio::test]
async fn docker_builds_need_a_daemon() {
    // This machine has the docker CLI at most, no daemon: the in-cluster build is the path here.
    if !docker_available().await {
        let err = build_with_docker(
            "FROM scratch\n",
            "gpulab-test:none",
            None,
            &crate::events::Silent,
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("docker"), "{err}");
    }
}
