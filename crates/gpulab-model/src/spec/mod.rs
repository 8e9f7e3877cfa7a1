//! `LabSpec`: everything a user can ask of a lab, resolved from layered sources and validated before any
//! cloud call.
//!
//! Sources, each overriding the one before: built-in defaults, `gpulab.toml` in the user's config
//! directory, `gpulab.toml` in the working directory, the original scripts' environment variables, and
//! explicit overrides (CLI flags, Python keyword arguments). Every value remembers its [`Source`], so an
//! error can say where a bad value came from and `gpulab config show` can say where each value came from.

pub mod guard;
mod layer;
mod packages;
mod quantity;
mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

pub use layer::{
    AccessLayer, AutostopLayer, DevicePluginLayer, ENV_VARS, NodesLayer, OPTIONS, OptionError,
    SpecInputs, SpecLayer, WorkspaceLayer, config_file_candidates, field_option, option_field,
};
pub use packages::WorkspacePackages;
pub use quantity::Quantity;
pub use validate::{SshKey, ValidSpec};

/// The lab's name when none is given: the original scripts' cluster name.
pub const DEFAULT_NAME: &str = "gpu-learning-cluster";
/// The region when none is given.
pub const DEFAULT_REGION: &str = "us-west-2";
/// The GPU node type when none is given: one NVIDIA T4, the cheapest GPU on EC2.
pub const DEFAULT_INSTANCE_TYPE: &str = "g4dn.xlarge";
/// The workspace image when none is given: "auto", the CUDA development image of the version matrix
/// for the node's GPU generation ([`crate::versions`]); the setup script adds the rest.
pub const DEFAULT_IMAGE: &str = AUTO;
/// The value of `workspace.cpu` and `workspace.memory` that sizes the pod to fit its share of the node.
pub const AUTO: &str = "auto";

/// Everything a user can ask of a lab.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabSpec {
    /// The lab's name; also the EKS cluster's name and the prefix of every resource gpulab creates.
    pub name: String,
    /// AWS region code.
    pub region: String,
    /// Kubernetes version of the EKS control plane, e.g. "1.33"; `None` takes EKS's current default,
    /// which is always in standard support (older versions cost six times as much per hour).
    pub kubernetes_version: Option<String>,
    /// The GPU node group.
    pub nodes: NodesSpec,
    /// The GPU development pod.
    pub workspace: WorkspaceSpec,
    /// The NVIDIA device plugin.
    pub device_plugin: DevicePluginSpec,
    /// How the user reaches the workspace.
    pub access: AccessSpec,
    /// Extra tags on every AWS resource (gpulab adds its own ownership tags besides).
    pub tags: BTreeMap<String, String>,
    /// What stops the lab when nobody is looking: idle autostop and a budget cap.
    #[serde(default)]
    pub autostop: AutostopSpec,
}

/// Cost safety that runs in the cluster, so it works while the laptop is closed ([`crate::autostop`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AutostopSpec {
    /// Scale the GPU nodes to zero after this long without activity (no SSH session, busy kernel,
    /// Slurm job, vLLM request or GPU process), as a duration such as "30m" or "1h30m"; `None` or
    /// "off": never.
    #[serde(default)]
    pub idle: Option<String>,
    /// Scale the GPU nodes to zero once the lab has spent this many US dollars since `up` (warning at
    /// 80 %); `None`: no cap.
    #[serde(default)]
    pub budget: Option<f64>,
}

/// The GPU node group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodesSpec {
    /// EC2 instance type; must be a GPU type from the catalog.
    pub instance_type: String,
    /// Fewest nodes the group may scale to.
    pub min: u32,
    /// Nodes to run now.
    pub desired: u32,
    /// Most nodes the group may scale to.
    pub max: u32,
    /// On-demand or spot.
    pub capacity: Capacity,
    /// Root disk per node, GiB; CUDA images are large.
    pub disk_gib: u32,
}

/// How EC2 capacity is bought.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Capacity {
    /// Pay the full price; the node stays until you remove it.
    OnDemand,
    /// Up to ~70% cheaper; AWS may reclaim the node with two minutes' notice.
    Spot,
}

/// The GPU development pod and its persistent `/workspace` volume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkspaceSpec {
    /// Kubernetes namespace for everything the lab puts in the cluster.
    pub namespace: String,
    /// The pod's name (the original scripts' `POD_NAME`).
    pub pod_name: String,
    /// Container image; "auto" takes the CUDA base image of the version matrix for the node's GPU
    /// generation.
    pub image: String,
    /// GPUs the pod requests.
    pub gpus: u32,
    /// CPU the pod requests, as a Kubernetes quantity ("4", "3500m"), or "auto" for its share of the node.
    pub cpu: String,
    /// Memory the pod requests, as a Kubernetes quantity ("16Gi"), or "auto" for its share of the node.
    pub memory: String,
    /// Size of the persistent `/workspace` volume, as a Kubernetes quantity.
    pub volume_size: String,
    /// StorageClass for the volume; `None` uses the encrypted gp3 class gpulab creates.
    pub storage_class: Option<String>,
    /// Run Jupyter Lab on port 8888, with a random token.
    pub jupyter: bool,
    /// Python packages installed into the workspace's venv (pip requirements); `None` takes the version
    /// matrix's pinned PyTorch and vLLM for the node's GPU generation, plus transformers and accelerate.
    /// With a list, PyTorch is installed (from the matrix's wheel index) only if the list names `torch`.
    #[serde(default)]
    pub python_packages: Option<Vec<String>>,
    /// System packages besides sshd and Python (Debian/Ubuntu names); `None` takes the development tools
    /// (git, curl, tmux, htop, vim, rsync, build-essential).
    #[serde(default)]
    pub apt_packages: Option<Vec<String>>,
    /// SSH public key to authorise (a private key's path works too: its `.pub` twin is used). `None`
    /// takes the first of `~/.ssh/id_ed25519.pub`, `~/.ssh/id_ecdsa.pub`, `~/.ssh/id_rsa.pub`, and
    /// generates an ed25519 key at `up` when there is none.
    pub ssh_public_key: Option<PathBuf>,
}

/// The NVIDIA device plugin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DevicePluginSpec {
    /// Pods that may share one GPU by time-slicing; 1 means no sharing.
    pub time_slicing_replicas: u32,
}

/// How the user reaches SSH and Jupyter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccessSpec {
    /// Through the API server (private), or a LoadBalancer (opt-in).
    pub mode: AccessMode,
    /// Address ranges a LoadBalancer admits; required with `load-balancer`.
    pub allowed_cidrs: Vec<IpNet>,
    /// IPv4 ranges the EKS API server's public endpoint admits (kubectl, `gpulab` itself). Empty: the
    /// address `up` is run from, as AWS sees it (a /32), so the endpoint is not open to the internet.
    #[serde(default)]
    pub api_cidrs: Vec<IpNet>,
}

impl AccessSpec {
    /// The ranges a LoadBalancer admits, comma-separated, as the plan and `gpulab plan` show them.
    pub fn allowed_cidrs_text(&self) -> String {
        let cidrs: Vec<String> = self.allowed_cidrs.iter().map(ToString::to_string).collect();
        cidrs.join(", ")
    }
}

/// How the workspace's ports are reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AccessMode {
    /// Through the Kubernetes API server's port-forward: nothing listens on the internet.
    PortForward,
    /// A Network Load Balancer, limited to `allowed_cidrs`.
    LoadBalancer,
}

impl Default for LabSpec {
    fn default() -> Self {
        LabSpec {
            name: DEFAULT_NAME.into(),
            region: DEFAULT_REGION.into(),
            kubernetes_version: None,
            nodes: NodesSpec {
                instance_type: DEFAULT_INSTANCE_TYPE.into(),
                min: 1,
                desired: 1,
                max: 2,
                capacity: Capacity::OnDemand,
                disk_gib: 100,
            },
            workspace: WorkspaceSpec {
                namespace: "gpulab".into(),
                pod_name: "gpu-dev-pod".into(),
                image: DEFAULT_IMAGE.into(),
                gpus: 1,
                cpu: AUTO.into(),
                memory: AUTO.into(),
                volume_size: "50Gi".into(),
                storage_class: None,
                jupyter: true,
                python_packages: None,
                apt_packages: None,
                ssh_public_key: None,
            },
            device_plugin: DevicePluginSpec {
                time_slicing_replicas: 1,
            },
            access: AccessSpec {
                mode: AccessMode::PortForward,
                allowed_cidrs: Vec::new(),
                api_cidrs: Vec::new(),
            },
            tags: BTreeMap::new(),
            autostop: AutostopSpec::default(),
        }
    }
}

impl fmt::Display for Capacity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Capacity::OnDemand => "on-demand",
            Capacity::Spot => "spot",
        })
    }
}

impl fmt::Display for AccessMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AccessMode::PortForward => "port-forward",
            AccessMode::LoadBalancer => "load-balancer",
        })
    }
}

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "name", rename_all = "kebab-case")]
pub enum Source {
    /// gpulab's built-in default.
    Default,
    /// A `gpulab.toml` file.
    File(PathBuf),
    /// An environment variable.
    Env(String),
    /// A command-line flag, e.g. `--node-type`.
    Flag(String),
    /// A keyword argument of the Python API, e.g. `node_type=`.
    Argument(String),
    /// A method of the Rust [`crate::LabBuilder`], e.g. `.node_type()`.
    Method(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::File(path) => write!(f, "file {}", path.display()),
            Source::Env(var) => write!(f, "env {var}"),
            Source::Flag(flag) => write!(f, "flag {flag}"),
            Source::Argument(arg) => write!(f, "argument {arg}"),
            Source::Method(method) => write!(f, "method {method}"),
        }
    }
}

/// The source of every field of a resolved spec, by dotted field name ("nodes.min").
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Provenance(BTreeMap<&'static str, Source>);

impl Provenance {
    /// Where `field` came from; fields never set by a layer are [`Source::Default`].
    pub fn source(&self, field: &str) -> Source {
        self.0.get(field).cloned().unwrap_or(Source::Default)
    }

    fn set(&mut self, field: &'static str, source: Source) {
        self.0.insert(field, source);
    }
}

/// A spec with the source of each of its values.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResolvedSpec {
    /// The effective spec.
    pub spec: LabSpec,
    /// Where each value came from.
    pub provenance: Provenance,
    /// The home directory `~` expands to, and where default SSH keys are looked for.
    #[serde(skip)]
    pub home: Option<PathBuf>,
}

/// One problem with one field.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldError {
    /// Dotted field name, e.g. "nodes.min"; "file" for a file that does not parse.
    pub field: String,
    /// The offending value, as the user wrote it.
    pub value: String,
    /// Where the value came from.
    pub source: Source,
    /// What is wrong with it.
    pub problem: String,
    /// What would be accepted.
    pub allowed: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} = {:?} (from {}): {}",
            self.field, self.value, self.source, self.problem
        )?;
        if !self.allowed.is_empty() {
            write!(f, "\n    allowed: {}", self.allowed)?;
        }
        Ok(())
    }
}

/// Every problem found in a spec; all of them are reported together.
#[derive(Debug, Clone, PartialEq, Serialize, thiserror::Error)]
pub struct SpecErrors(pub Vec<FieldError>);

impl fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        write!(
            f,
            "invalid lab spec ({n} problem{}):",
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.0 {
            write!(f, "\n  - {e}")?;
        }
        Ok(())
    }
}

impl SpecErrors {
    /// The errors about `field`.
    pub fn for_field<'a>(&'a self, field: &'a str) -> impl Iterator<Item = &'a FieldError> + 'a {
        self.0.iter().filter(move |e| e.field == field)
    }
}

/// One field of a resolved spec, for `gpulab config show`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldValue {
    /// Dotted field name.
    pub field: &'static str,
    /// The effective value (`null` for unset optional fields).
    pub value: serde_json::Value,
    /// Where it came from.
    pub source: Source,
}

impl ResolvedSpec {
    /// Every field with its effective value and source, in a stable order.
    pub fn explain(&self) -> Vec<FieldValue> {
        let tree = serde_json::to_value(&self.spec).expect("a spec always serialises");
        layer::FIELDS
            .iter()
            .map(|field| {
                let value = field.split('.').fold(&tree, |node, key| &node[key]).clone();
                FieldValue {
                    field,
                    value,
                    source: self.provenance.source(field),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
