//! The workspace image: a Dockerfile gpulab renders (CUDA base from the spec, PyTorch, vLLM, Jupyter,
//! sshd, the dev tools: everything the workspace setup script looks for, so a pod from this image installs
//! nothing), built with a local docker daemon when one answers, otherwise in the cluster as a kaniko Job,
//! and pushed to an ECR repository that gpulab creates, tags with the lab's tags, and `down` deletes.
//!
//! Neither build runs in gpulab's own tests (no docker daemon, no registry): the Dockerfile and the Job
//! are tested as rendered text and typed objects, and the ECR calls against moto.

mod docker;
mod kaniko;

/// The lab's ECR repository (AWS code, under the provisioner).
#[cfg(feature = "aws")]
pub use crate::provision::aws::ecr;
pub use docker::{build_with_docker, docker_available, docker_build_args};
pub use gpulab_model::aws::RegistryLogin;
pub use kaniko::{
    KANIKO_IMAGE, KanikoBuild, build_in_cluster, kaniko_config_map, kaniko_job,
    kaniko_service_account,
};

use crate::spec::ValidSpec;

/// System packages the image always installs: sshd, and Python with venv and headers (for packages
/// that compile); the spec's `workspace.apt_packages` (the development tools by default) come on top.
pub const BASE_APT_PACKAGES: &[&str] =
    &["openssh-server", "python3", "python3-venv", "python3-dev"];

/// The platform images are built for: the GPU nodes' (EKS GPU AMIs are x86_64).
pub const PLATFORM: &str = "linux/amd64";

/// Where the image's Python environment lives: a venv, never the distribution's Python (Ubuntu 24.04's
/// pip refuses to touch it, and its own packages would be shadowed).
pub const IMAGE_VENV: &str = "/opt/venv";

/// What goes into the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageOptions {
    /// The base image: a CUDA image (the lab's workspace image by default: the version matrix's for its
    /// GPU generation).
    pub base_image: String,
    /// System packages.
    pub apt_packages: Vec<String>,
    /// The PyTorch requirement, installed first from `torch_index` (`None`: no PyTorch).
    pub torch: Option<String>,
    /// The wheel index of that PyTorch build.
    pub torch_index: Option<String>,
    /// Other Python packages (pip requirements; pin versions here, e.g. `vllm==0.11.0`).
    pub python_packages: Vec<String>,
    /// Jupyter Lab and its kernel, registered from the venv.
    pub jupyter: bool,
    /// Also install Slurm and munge (for `gpulab slurm setup` without a download).
    pub slurm: bool,
}

impl ImageOptions {
    /// What `spec`'s workspace gets: its image, its packages (the version matrix's by default).
    pub fn for_spec(spec: &ValidSpec) -> Self {
        let packages = crate::spec::WorkspacePackages::for_spec(spec);
        ImageOptions {
            base_image: spec.image.clone(),
            apt_packages: BASE_APT_PACKAGES
                .iter()
                .map(|s| s.to_string())
                .chain(packages.apt)
                .collect(),
            torch: packages.torch,
            torch_index: packages.torch_index,
            python_packages: packages.python,
            jupyter: spec.workspace().jupyter,
            slurm: false,
        }
    }

    /// The Dockerfile these options make (`gpulab image dockerfile`). Everything Python goes into
    /// [`IMAGE_VENV`], whose `bin` leads `PATH`; nothing is baked into the environment that would
    /// override the pod's.
    pub fn dockerfile(&self) -> String {
        render_dockerfile(self)
    }
}

/// The workspace Dockerfile. Everything Python goes into [`IMAGE_VENV`], whose `bin` leads `PATH`;
/// nothing is baked into the environment that would override the pod's (no `PIP_NO_CACHE_DIR`, which
/// would disable the workspace's pip cache; no `NVIDIA_VISIBLE_DEVICES`, which the device plugin sets
/// to the GPUs it allocated).
pub(crate) fn render_dockerfile(options: &ImageOptions) -> String {
    let mut apt = options.apt_packages.clone();
    if options.slurm {
        apt.extend(["slurm-wlm".to_string(), "munge".to_string()]);
    }
    let apt = apt.join(" \\\n      ");
    let mut python = options.python_packages.clone();
    if options.jupyter {
        python.extend(
            crate::workspace::versions::JUPYTER_PACKAGES
                .iter()
                .map(|p| p.to_string()),
        );
    }
    let pip = python.join(" ");
    let mut imports: Vec<String> = options
        .torch
        .iter()
        .filter_map(|p| python_module(p))
        .collect();
    imports.extend(python.iter().filter_map(|p| python_module(p)));
    let torch = match (&options.torch, &options.torch_index) {
        (Some(torch), Some(index)) => {
            format!(" \\\n && pip install --no-cache-dir --index-url {index} {torch}")
        }
        (Some(torch), None) => format!(" \\\n && pip install --no-cache-dir {torch}"),
        _ => String::new(),
    };
    // The same requirement again, so the resolver keeps the build installed above.
    let keep_torch = options
        .torch
        .as_ref()
        .map(|t| format!("{t} "))
        .unwrap_or_default();
    let kernel = if options.jupyter {
        " \\\n && python -m ipykernel install --sys-prefix --name python3 --display-name \"Python 3 (gpulab venv)\""
    } else {
        ""
    };
    let tools: Vec<&str> = [
        ("openssh-server", "sshd"),
        ("git", "git"),
        ("curl", "curl"),
        ("tmux", "tmux"),
        ("htop", "htop"),
        ("vim", "vim"),
        ("rsync", "rsync"),
        ("build-essential", "gcc"),
    ]
    .iter()
    .filter(|(package, _)| options.apt_packages.iter().any(|p| p == package))
    .map(|(_, tool)| *tool)
    .collect();
    let check_imports = if imports.is_empty() {
        String::new()
    } else {
        format!("python -c \"import {}\" \\\n && ", imports.join(", "))
    };
    format!(
        r#"# The gpulab workspace image, rendered by `gpulab image build` (built for linux/amd64). It holds everything
# the workspace setup script looks for, so a pod started from it installs nothing; the setup script still
# configures SSH and Jupyter on every start, and the workspace's venv on /workspace sees this image's.
FROM {base}

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      {apt} \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /run/sshd

# Python in a venv of its own, never the distribution's (whose pip is Debian's, and on Ubuntu 24.04
# refuses to change). PyTorch first, from the index of the CUDA build this GPU generation needs.
ENV VIRTUAL_ENV={venv} \
    PATH={venv}/bin:$PATH
RUN python3 -m venv {venv} \
 && pip install --no-cache-dir --upgrade pip{torch} \
 && pip install --no-cache-dir {keep_torch}{pip}{kernel}

# Fail the build, not the first pod start, when something is missing.
RUN {check_imports}for tool in {tools}; do command -v "$tool" >/dev/null || {{ echo "missing $tool"; exit 1; }}; done

WORKDIR /workspace
EXPOSE 22 8888
"#,
        base = options.base_image,
        venv = IMAGE_VENV,
        tools = tools.join(" "),
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

pub use gpulab_model::aws::repository_name;

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
