//! Flags shared by commands: global ones, and the spec overrides every command that works on a lab takes.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use gpulab_core::spec::{ResolvedSpec, Source, SpecErrors, SpecInputs, SpecLayer, field_option};
use ipnet::IpNet;
use serde_json::Value;

/// How the CLI opens labs: as the library's defaults, plus a terminal prompt for the passphrase of an
/// encrypted SSH key that ssh-agent does not hold.
pub(crate) fn lab_options() -> gpulab_core::LabOptions {
    gpulab_core::LabOptions {
        ssh_passphrase: Some(std::sync::Arc::new(crate::terminal::prompt_passphrase)),
        ..Default::default()
    }
}

/// Flags every command takes.
#[derive(Debug, Args)]
pub(crate) struct GlobalArgs {
    /// Read settings from this file instead of the gpulab.toml files.
    #[arg(long, global = true, value_name = "PATH")]
    pub(crate) config: Option<PathBuf>,
    /// Print only results and errors: no progress, no hints.
    #[arg(long, short, global = true)]
    pub(crate) quiet: bool,
}

/// Overrides of the lab's spec. Each flag names the spec field it sets (see `gpulab config show`).
#[derive(Debug, Default, Args)]
#[command(next_help_heading = "Lab settings")]
pub(crate) struct SpecArgs {
    /// Lab and EKS cluster name [env: CLUSTER_NAME] [default: gpu-learning-cluster].
    #[arg(long)]
    name: Option<String>,
    /// AWS region [env: AWS_REGION] [default: us-west-2].
    #[arg(long)]
    region: Option<String>,
    /// Kubernetes version, e.g. 1.33 [default: EKS's current default].
    #[arg(long, value_name = "VERSION")]
    kubernetes_version: Option<String>,
    /// GPU instance type [env: NODE_TYPE] [default: g4dn.xlarge]; see `gpulab catalog`.
    #[arg(long, value_name = "TYPE")]
    node_type: Option<String>,
    /// Fewest GPU nodes [env: MIN_NODES] [default: 1].
    #[arg(long, value_name = "N")]
    min_nodes: Option<u32>,
    /// GPU nodes to run [env: DESIRED_NODES] [default: 1].
    #[arg(long, value_name = "N")]
    desired_nodes: Option<u32>,
    /// Most GPU nodes [env: MAX_NODES] [default: 2].
    #[arg(long, value_name = "N")]
    max_nodes: Option<u32>,
    /// Use spot capacity: up to ~70% cheaper, but AWS may reclaim the node.
    #[arg(long)]
    spot: bool,
    /// Root disk per node, GiB [default: 100].
    #[arg(long, value_name = "GIB")]
    disk: Option<u32>,
    /// Kubernetes namespace of the workspace [default: gpulab].
    #[arg(long)]
    namespace: Option<String>,
    /// Workspace pod name [env: POD_NAME] [default: gpu-dev-pod].
    #[arg(long, value_name = "NAME")]
    pod_name: Option<String>,
    /// Workspace container image [default: nvidia/cuda:12.4.1-cudnn-devel-ubuntu22.04].
    #[arg(long)]
    image: Option<String>,
    /// GPUs for the workspace pod [default: 1].
    #[arg(long, value_name = "N")]
    gpus: Option<u32>,
    /// CPU for the workspace pod, e.g. 2 or 3500m [default: auto, its share of the node].
    #[arg(long)]
    cpu: Option<String>,
    /// Memory for the workspace pod, e.g. 12Gi [default: auto, its share of the node].
    #[arg(long)]
    memory: Option<String>,
    /// Size of the persistent /workspace volume [default: 50Gi].
    #[arg(long, value_name = "SIZE")]
    volume_size: Option<String>,
    /// StorageClass for /workspace [default: an encrypted gp3 class gpulab creates].
    #[arg(long, value_name = "CLASS")]
    storage_class: Option<String>,
    /// Do not run Jupyter Lab in the workspace.
    #[arg(long)]
    no_jupyter: bool,
    /// Python requirement for the workspace's venv (repeatable); replaces the version matrix's
    /// defaults [default: PyTorch and vLLM pinned for the GPU generation, transformers, accelerate].
    #[arg(long = "python-package", value_name = "REQUIREMENT")]
    python_package: Vec<String>,
    /// System package for the workspace besides sshd and Python (repeatable); replaces the defaults
    /// [default: git, curl, tmux, htop, vim, rsync, build-essential].
    #[arg(long = "apt-package", value_name = "PACKAGE")]
    apt_package: Vec<String>,
    /// SSH public key to authorise [env: SSH_KEY] [default: ~/.ssh/id_ed25519.pub, id_ecdsa.pub or id_rsa.pub].
    #[arg(long, value_name = "PATH")]
    ssh_key: Option<PathBuf>,
    /// Pods that may share each GPU by time-slicing [default: 1, no sharing].
    #[arg(long, value_name = "N")]
    time_slicing: Option<u32>,
    /// How to reach SSH and Jupyter [default: port-forward, with no public port].
    #[arg(long, value_enum)]
    access: Option<AccessArg>,
    /// Address range a LoadBalancer admits (repeatable); needed with --access load-balancer.
    #[arg(long = "allow-cidr", value_name = "CIDR")]
    allow_cidr: Vec<IpNet>,
    /// IPv4 range the cluster's API endpoint admits (repeatable) [default: the address `up` runs from].
    #[arg(long = "api-cidr", value_name = "CIDR")]
    api_cidr: Vec<IpNet>,
    /// Extra tag on every AWS resource, KEY=VALUE (repeatable).
    #[arg(long = "tag", value_name = "KEY=VALUE", value_parser = parse_tag)]
    tags: Vec<(String, String)>,
    /// Scale the GPU nodes to zero after this long unused: no SSH session, busy kernel, Slurm job,
    /// vLLM request or GPU process (e.g. 30m, 2h, 1h30m; off) [default: off].
    #[arg(long, value_name = "DURATION")]
    autostop: Option<String>,
    /// Scale the GPU nodes to zero once the lab has spent this many US dollars since `up`, with a
    /// warning at 80% (off: no budget) [default: off].
    #[arg(long, value_name = "DOLLARS")]
    budget: Option<String>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum AccessArg {
    PortForward,
    LoadBalancer,
}

fn parse_tag(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{text:?} is not KEY=VALUE"))
}

/// The flag that sets `field`, for error messages ("from flag --min-nodes"): the option's name, but for
/// the flags that read better inverted or singular.
fn flag_source(field: &str) -> Source {
    let flag = match field {
        "nodes.capacity" => "--spot".to_string(),
        "workspace.jupyter" => "--no-jupyter".to_string(),
        "access.allowed_cidrs" => "--allow-cidr".to_string(),
        "access.api_cidrs" => "--api-cidr".to_string(),
        "workspace.python_packages" => "--python-package".to_string(),
        "workspace.apt_packages" => "--apt-package".to_string(),
        "tags" => "--tag".to_string(),
        _ => format!(
            "--{}",
            field_option(field).unwrap_or(field).replace('_', "-")
        ),
    };
    Source::Flag(flag)
}

impl SpecArgs {
    /// The flags as options, by the names every frontend shares (`--node-type` is `node_type`), set on
    /// a layer by the core's one mapping ([`SpecLayer::set`]).
    fn layer(&self) -> Result<SpecLayer, SpecErrors> {
        let text = |value: &Option<String>| value.clone().map(Value::from);
        let count = |value: Option<u32>| value.map(Value::from);
        let cidrs = |cidrs: &[IpNet]| {
            let cidrs: Vec<String> = cidrs.iter().map(ToString::to_string).collect();
            (!cidrs.is_empty()).then(|| cidrs.into())
        };
        let texts = |items: &[String]| (!items.is_empty()).then(|| items.to_vec().into());
        let options = [
            ("name", text(&self.name)),
            ("region", text(&self.region)),
            ("kubernetes_version", text(&self.kubernetes_version)),
            ("node_type", text(&self.node_type)),
            ("min_nodes", count(self.min_nodes)),
            ("desired_nodes", count(self.desired_nodes)),
            ("max_nodes", count(self.max_nodes)),
            ("spot", self.spot.then_some(Value::Bool(true))),
            ("disk", count(self.disk)),
            ("namespace", text(&self.namespace)),
            ("pod_name", text(&self.pod_name)),
            ("image", text(&self.image)),
            ("gpus", count(self.gpus)),
            ("cpu", text(&self.cpu)),
            ("memory", text(&self.memory)),
            ("volume_size", text(&self.volume_size)),
            ("storage_class", text(&self.storage_class)),
            ("jupyter", self.no_jupyter.then_some(Value::Bool(false))),
            ("python_packages", texts(&self.python_package)),
            ("apt_packages", texts(&self.apt_package)),
            (
                "ssh_key",
                self.ssh_key
                    .as_ref()
                    .map(|path| path.to_string_lossy().into_owned().into()),
            ),
            ("time_slicing", count(self.time_slicing)),
            (
                "access",
                self.access
                    .and_then(|access| access.to_possible_value())
                    .map(|value| value.get_name().into()),
            ),
            ("allowed_cidrs", cidrs(&self.allow_cidr)),
            ("api_cidrs", cidrs(&self.api_cidr)),
            ("autostop", text(&self.autostop)),
            ("budget", text(&self.budget)),
            (
                "tags",
                (!self.tags.is_empty()).then(|| {
                    let tags: serde_json::Map<String, Value> = self
                        .tags
                        .iter()
                        .map(|(key, value)| (key.clone(), value.clone().into()))
                        .collect();
                    tags.into()
                }),
            ),
        ];
        let mut layer = SpecLayer::default();
        let mut errors = Vec::new();
        for (option, value) in options {
            if let Some(value) = value
                && let Err(e) = layer.set(option, value)
            {
                let source = flag_source(e.field());
                errors.push(e.into_field_error(source));
            }
        }
        if errors.is_empty() {
            Ok(layer)
        } else {
            Err(SpecErrors(errors))
        }
    }

    /// Name the lab, as `--name` would.
    pub(crate) fn set_name(&mut self, name: &str) {
        self.name = Some(name.into());
    }

    /// Choose the region, as `--region` would.
    pub(crate) fn set_region(&mut self, region: &str) {
        self.region = Some(region.into());
    }

    /// The lab's spec from this process's files and environment, with these flags on top.
    pub(crate) fn resolve(&self, global: &GlobalArgs) -> gpulab_core::Result<ResolvedSpec> {
        let cwd = std::env::current_dir()
            .map_err(|e| gpulab_core::Error::io("read the working directory", e))?;
        let mut inputs = SpecInputs::from_process(&cwd, global.config.clone());
        inputs.overrides = self.layer()?;
        inputs.override_source = Some(flag_source);
        Ok(inputs.resolve()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn every_spec_field_has_a_flag_that_exists() {
        #[derive(clap::Parser)]
        struct Probe {
            #[command(flatten)]
            spec: SpecArgs,
        }
        let command = Probe::command();
        let resolved = SpecInputs::default().resolve().unwrap();
        for field in resolved.explain() {
            let Source::Flag(flag) = flag_source(field.field) else {
                unreachable!()
            };
            let long = flag.trim_start_matches("--");
            assert!(
                command.get_arguments().any(|a| a.get_long() == Some(long)),
                "{} names a missing flag {flag}",
                field.field
            );
        }
    }

    #[test]
    fn every_flag_sets_its_field_through_the_shared_options() {
        #[derive(clap::Parser)]
        struct Probe {
            #[command(flatten)]
            spec: SpecArgs,
        }
        let flags = "gpulab --name n --region r --kubernetes-version 1.33 --node-type t \
                     --min-nodes 1 --desired-nodes 1 --max-nodes 1 --spot --disk 20 --namespace ns \
                     --pod-name p --image i --gpus 1 --cpu 1 --memory 1Gi --volume-size 1Gi \
                     --storage-class s --no-jupyter --python-package p --apt-package a --ssh-key /k --time-slicing 2 \
                     --access load-balancer --allow-cidr 10.0.0.0/8 --api-cidr 198.51.100.0/24 \
                     --tag k=v --autostop 30m --budget 25";
        let probe = <Probe as clap::Parser>::try_parse_from(flags.split_whitespace()).unwrap();
        let layer = serde_json::to_value(probe.spec.layer().unwrap()).unwrap();
        let resolved = SpecInputs::default().resolve().unwrap();
        for field in resolved.explain() {
            let value = field.field.split('.').fold(&layer, |node, key| &node[key]);
            assert!(
                !value.is_null() && value != &serde_json::json!({}),
                "no flag set {}: {layer}",
                field.field
            );
        }
        assert_eq!(layer["nodes"]["capacity"], "spot");
        assert_eq!(layer["access"]["mode"], "load-balancer");
    }
}
