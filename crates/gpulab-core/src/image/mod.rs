//! The workspace image: a Dockerfile gpulab renders (CUDA base from the spec, PyTorch, vLLM, Jupyter,
//! sshd, the dev tools: everything the workspace setup script looks for, so a pod from this image installs
//! nothing), built with a local docker daemon when one answers, otherwise in the cluster as a kaniko Job,
//! and pushed to an ECR repository that gpulab creates, tags with the lab's tags, and `down` deletes.
//!
//! Neither build runs in gpulab's own tests (no docker daemon, no registry): the Dockerfile and the Job
//! are tested as rendered text and typed objects, and the ECR calls against moto.

mod docker;
#[cfg(feature = "aws")]
pub mod ecr;
mod kaniko;

pub use docker::{RegistryLogin, build_with_docker, docker_available};
pub use kaniko::{
    KANIKO_IMAGE, KanikoBuild, build_in_cluster, kaniko_config_map, kaniko_job,
    kaniko_service_account,
};

use crate::spec::ValidSpec;

/// Python packages the image installs; vLLM first, as it pins the PyTorch it needs.
pub const DEFAULT_PYTHON_PACKAGES: &[&str] =
    &["vllm", "torch", "transformers", "accelerate", "jupyterlab"];

/// System packages the image installs: sshd, Python, and the tools the setup script checks for.
pub const DEFAULT_APT_PACKAGES: &[&str] = &[
    "openssh-server",
    "python3",
    "python3-venv",
    "python3-pip",
    "python3-dev",
    "git",
    "curl",
    "tmux",
    "htop",
    "vim",
    "rsync",
    "build-essential",
    "ca-certificates",
];

/// What goes into the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageOptions {
    /// The base image: a CUDA image (the spec's workspace image by default).
    pub base_image: String,
    /// System packages.
    pub apt_packages: Vec<String>,
    /// Python packages (pip requirement strings; pin versions here, e.g. `vllm==0.6.4`).
    pub python_packages: Vec<String>,
    /// Also install Slurm and munge (for `gpulab slurm setup` without a download).
    pub slurm: bool,
}

impl ImageOptions {
    /// The defaults on `spec`'s workspace image.
    pub fn for_spec(spec: &ValidSpec) -> Self {
        Self::on_base(&spec.spec.workspace.image)
    }

    /// The defaults on `base_image`.
    pub fn on_base(base_image: &str) -> Self {
        ImageOptions {
            base_image: base_image.into(),
            apt_packages: DEFAULT_APT_PACKAGES.iter().map(|s| s.to_string()).collect(),
            python_packages: DEFAULT_PYTHON_PACKAGES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            slurm: false,
        }
    }
}

/// The workspace Dockerfile.
pub fn render_dockerfile(options: &ImageOptions) -> String {
    let mut apt = options.apt_packages.clone();
    if options.slurm {
        apt.extend(["slurm-wlm".to_string(), "munge".to_string()]);
    }
    let apt = apt.join(" \\\n      ");
    let pip = options.python_packages.join(" ");
    let imports: Vec<String> = options
        .python_packages
        .iter()
        .filter_map(|p| python_module(p))
        .collect();
    format!(
        r#"# The gpulab workspace image, rendered by `gpulab image build`. It holds everything the workspace setup
# script looks for, so a pod started from it installs nothing; the setup script still configures SSH and
# Jupyter on every start.
FROM {base}

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_BREAK_SYSTEM_PACKAGES=1 \
    PYTHONUNBUFFERED=1 \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      {apt} \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /run/sshd

# Into the system Python: the workspace's venv on /workspace is created with --system-site-packages and
# sees these, so the setup script finds them and installs nothing.
RUN python3 -m pip install --upgrade pip \
 && python3 -m pip install {pip}

# Fail the build, not the first pod start, when something is missing.
RUN python3 -c "import {imports}" \
 && for tool in sshd git curl tmux htop vim rsync gcc; do command -v "$tool" >/dev/null || {{ echo "missing $tool"; exit 1; }}; done

WORKDIR /workspace
EXPOSE 22 8888
"#,
        base = options.base_image,
        imports = imports.join(", "),
    )
}

/// The module a pip requirement installs, for the import check ("vllm==0.6.4" → "vllm").
fn python_module(requirement: &str) -> Option<String> {
    let name: String = requirement
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_' || *c == '.')
        .collect();
    let module = match name.to_ascii_lowercase().as_str() {
        "" => return None,
        "pyyaml" => "yaml".to_string(),
        "scikit-learn" => "sklearn".to_string(),
        other => other.replace('-', "_"),
    };
    Some(module)
}

/// The ECR repository of `spec`'s lab: `gpulab/<lab>`.
pub fn repository_name(spec: &ValidSpec) -> String {
    format!("gpulab/{}", spec.spec.name)
}

/// The image tag for a Dockerfile: a hash of its text, so a changed Dockerfile is a new tag and an
/// unchanged one is the same (FNV-1a, 64 bits, hex).
pub fn image_tag(dockerfile: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in dockerfile.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// `<registry>/<repository>:<tag>`, the reference pods and pushes use.
pub fn image_reference(registry: &str, repository: &str, tag: &str) -> String {
    format!("{registry}/{repository}:{tag}")
}

/// The ECR registry host of an account in a region.
pub fn ecr_registry(account_id: &str, region: &str) -> String {
    let suffix = if region.starts_with("cn-") {
        "amazonaws.com.cn"
    } else {
        "amazonaws.com"
    };
    format!("{account_id}.dkr.ecr.{region}.{suffix}")
}

#[cfg(test)]
mod tests;

/// Which builder made an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Builder {
    /// The local docker daemon.
    Docker,
    /// A kaniko Job in the lab's cluster.
    Kaniko,
}

/// An image built and pushed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BuiltImage {
    /// The reference to run it by (`up --image`), `<registry>/<repository>:<tag>`.
    pub reference: String,
    /// The ECR repository.
    pub repository: String,
    /// Who built it.
    pub builder: Builder,
}

/// Build the workspace image for `spec`'s lab and push it to the lab's ECR repository (created, with the
/// lab's tags, when missing): with the local docker daemon when `docker info` answers, otherwise as a
/// kaniko Job in the cluster behind `cluster` (which needs ECR push rights on the node role).
#[cfg(feature = "aws")]
pub async fn build_and_push(
    spec: &ValidSpec,
    id: &crate::naming::LabId,
    options: &ImageOptions,
    ecr: &ecr::EcrClient,
    cluster: Option<&kube::Client>,
    timeout: std::time::Duration,
    reporter: &dyn crate::events::Reporter,
) -> crate::Result<BuiltImage> {
    let repository = ecr
        .ensure_repository(
            &repository_name(spec),
            &crate::naming::aws_tags(&spec.spec, id),
            id,
        )
        .await?;
    let dockerfile = render_dockerfile(options);
    let reference = format!("{}:{}", repository.uri, image_tag(&dockerfile));
    let builder = if docker_available().await {
        let login = ecr.login().await?;
        build_with_docker(&dockerfile, &reference, Some(&login), reporter).await?;
        Builder::Docker
    } else {
        let Some(client) = cluster else {
            return Err(crate::Error::Workspace {
                message:
                    "no docker daemon answers here, and the lab's cluster is not up to build in"
                        .into(),
                hint: Some(
                    "start docker, or run `gpulab up` first and build in the cluster".into(),
                ),
            });
        };
        let build = KanikoBuild::for_spec(spec, id, dockerfile, reference.clone());
        build_in_cluster(client, &build, timeout, reporter).await?;
        Builder::Kaniko
    };
    Ok(BuiltImage {
        reference,
        repository: repository.name,
        builder,
    })
}
