//! [`LabBuilder`]: a lab from Rust in one expression, with the options the `gpulab` command's flags and
//! the Python keyword arguments take, under the same names and checked by the same rules.
//!
//! ```no_run
//! # async fn run() -> gpulab_core::Result<()> {
//! use gpulab_core::Lab;
//!
//! let lab = Lab::builder().name("dev").node_type("g5.xlarge").build().await?;
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::spec::{AccessMode, SpecInputs, ValidSpec, field_option};
use crate::{Error, Lab, LabOptions, Provider, Result};

impl Lab {
    /// A [`LabBuilder`]: `Lab::builder().name("dev").node_type("g5.xlarge").build().await?`.
    pub fn builder() -> LabBuilder {
        LabBuilder::default()
    }
}

/// Builds a [`Lab`] from options named as the `gpulab` command's flags (`node_type` for
/// `--node-type`) and the Python keyword arguments; see [`crate::spec::OPTIONS`].
///
/// Settings come from the same sources as for the `gpulab` command, each overriding the one before:
/// the defaults, `gpulab.toml` (or only [`LabBuilder::config`]), the original scripts' environment
/// variables (`CLUSTER_NAME`, `NODE_TYPE`, ...), then this builder's options. Every option goes through
/// [`crate::spec::SpecLayer::set`], and the result through [`crate::spec::ResolvedSpec::validate`], so a bad value
/// is reported as the CLI and Python report it, naming the option (`method .min_nodes()`) and what is
/// allowed, with every other problem at once ([`SpecInputs::validate_options`]).
///
/// By default the lab is created on AWS by `up`; [`LabBuilder::context`] or
/// [`LabBuilder::kubeconfig`] use an existing cluster instead.
#[derive(Default)]
pub struct LabBuilder {
    settings: Vec<(String, Value)>,
    config: Option<PathBuf>,
    inputs: Option<SpecInputs>,
    provider: Option<Provider>,
    options: LabOptions,
}

impl LabBuilder {
    /// Set an option by name, as [`crate::spec::SpecLayer::set`] takes it: `.set("node_type",
    /// "g5.xlarge")`. An unknown name or a value of the wrong kind is reported by [`LabBuilder::spec`]
    /// and [`LabBuilder::build`], with every other problem.
    pub fn set(mut self, option: &str, value: impl Into<Value>) -> Self {
        self.settings.push((option.to_string(), value.into()));
        self
    }

    /// The lab's name (`--name`): also the EKS cluster's, and the prefix of everything it creates.
    pub fn name(self, name: impl Into<String>) -> Self {
        self.set("name", name.into())
    }

    /// The AWS region (`--region`).
    pub fn region(self, region: impl Into<String>) -> Self {
        self.set("region", region.into())
    }

    /// The Kubernetes version of the EKS control plane, e.g. "1.33" (`--kubernetes-version`).
    pub fn kubernetes_version(self, version: impl Into<String>) -> Self {
        self.set("kubernetes_version", version.into())
    }

    /// The GPU instance type, e.g. "g5.xlarge" (`--node-type`); `gpulab catalog` lists them.
    pub fn node_type(self, instance_type: impl Into<String>) -> Self {
        self.set("node_type", instance_type.into())
    }

    /// Fewest GPU nodes (`--min-nodes`).
    pub fn min_nodes(self, n: u32) -> Self {
        self.set("min_nodes", n)
    }

    /// GPU nodes to run (`--desired-nodes`).
    pub fn desired_nodes(self, n: u32) -> Self {
        self.set("desired_nodes", n)
    }

    /// Most GPU nodes (`--max-nodes`).
    pub fn max_nodes(self, n: u32) -> Self {
        self.set("max_nodes", n)
    }

    /// Spot capacity (`--spot`): up to ~70% cheaper, but AWS may reclaim the node.
    pub fn spot(self, spot: bool) -> Self {
        self.set("spot", spot)
    }

    /// Root disk per node, GiB (`--disk`).
    pub fn disk(self, gib: u32) -> Self {
        self.set("disk", gib)
    }

    /// The workspace's Kubernetes namespace (`--namespace`).
    pub fn namespace(self, namespace: impl Into<String>) -> Self {
        self.set("namespace", namespace.into())
    }

    /// The workspace pod's name (`--pod-name`).
    pub fn pod_name(self, name: impl Into<String>) -> Self {
        self.set("pod_name", name.into())
    }

    /// The workspace's container image (`--image`).
    pub fn image(self, image: impl Into<String>) -> Self {
        self.set("image", image.into())
    }

    /// GPUs for the workspace pod (`--gpus`).
    pub fn gpus(self, n: u32) -> Self {
        self.set("gpus", n)
    }

    /// CPU for the workspace pod, e.g. "2" or "3500m", or "auto" (`--cpu`).
    pub fn cpu(self, cpu: impl Into<String>) -> Self {
        self.set("cpu", cpu.into())
    }

    /// Memory for the workspace pod, e.g. "12Gi", or "auto" (`--memory`).
    pub fn memory(self, memory: impl Into<String>) -> Self {
        self.set("memory", memory.into())
    }

    /// Size of the persistent `/workspace` volume, e.g. "100Gi" (`--volume-size`).
    pub fn volume_size(self, size: impl Into<String>) -> Self {
        self.set("volume_size", size.into())
    }

    /// The StorageClass for `/workspace` (`--storage-class`).
    pub fn storage_class(self, class: impl Into<String>) -> Self {
        self.set("storage_class", class.into())
    }

    /// Whether the workspace runs Jupyter Lab (`--no-jupyter` for false).
    pub fn jupyter(self, jupyter: bool) -> Self {
        self.set("jupyter", jupyter)
    }

    /// The Python requirements the workspace installs into its venv, replacing the version matrix's
    /// defaults (`--python-package`, repeated); PyTorch only if the list names `torch`.
    pub fn python_packages<S: AsRef<str>>(self, packages: impl IntoIterator<Item = S>) -> Self {
        let packages: Vec<Value> = packages.into_iter().map(|p| p.as_ref().into()).collect();
        self.set("python_packages", packages)
    }

    /// The system packages the workspace installs besides sshd and Python, replacing the default
    /// development tools (`--apt-package`, repeated).
    pub fn apt_packages<S: AsRef<str>>(self, packages: impl IntoIterator<Item = S>) -> Self {
        let packages: Vec<Value> = packages.into_iter().map(|p| p.as_ref().into()).collect();
        self.set("apt_packages", packages)
    }

    /// The SSH public key to authorise (`--ssh-key`).
    pub fn ssh_key(self, path: impl AsRef<Path>) -> Self {
        let path = path.as_ref().to_string_lossy().into_owned();
        self.set("ssh_key", path)
    }

    /// Pods that may share each GPU by time-slicing (`--time-slicing`).
    pub fn time_slicing(self, replicas: u32) -> Self {
        self.set("time_slicing", replicas)
    }

    /// How SSH and Jupyter are reached (`--access`).
    pub fn access(self, mode: AccessMode) -> Self {
        self.set("access", mode.to_string())
    }

    /// Address ranges a LoadBalancer admits, e.g. `["203.0.113.7/32"]` (`--allow-cidr`, repeated).
    pub fn allowed_cidrs<S: AsRef<str>>(self, cidrs: impl IntoIterator<Item = S>) -> Self {
        let cidrs: Vec<Value> = cidrs.into_iter().map(|c| c.as_ref().into()).collect();
        self.set("allowed_cidrs", cidrs)
    }

    /// IPv4 ranges the EKS API endpoint admits, e.g. `["203.0.113.0/24"]` (`--api-cidr`, repeated);
    /// by default only the address `up` runs from.
    pub fn api_cidrs<S: AsRef<str>>(self, cidrs: impl IntoIterator<Item = S>) -> Self {
        let cidrs: Vec<Value> = cidrs.into_iter().map(|c| c.as_ref().into()).collect();
        self.set("api_cidrs", cidrs)
    }

    /// An extra tag on every AWS resource (`--tag KEY=VALUE`); call it once per tag.
    pub fn tag(self, key: impl Into<String>, value: impl Into<String>) -> Self {
        let mut tag = serde_json::Map::new();
        tag.insert(key.into(), Value::String(value.into()));
        self.set("tags", tag)
    }

    /// Read settings from this file instead of the `gpulab.toml` files (`--config`); it must exist.
    pub fn config(mut self, path: impl Into<PathBuf>) -> Self {
        self.config = Some(path.into());
        self
    }

    /// Read files, environment and home directory from `inputs` instead of this process (tests, and
    /// programs that keep their own settings). The builder's options go on top of `inputs.overrides`.
    pub fn inputs(mut self, inputs: SpecInputs) -> Self {
        self.inputs = Some(inputs);
        self
    }

    /// Use this kubeconfig context's existing cluster instead of creating one on AWS (`up --context`).
    pub fn context(mut self, context: impl Into<String>) -> Self {
        let (kubeconfig, _) = self.existing();
        self.provider = Some(Provider::Existing {
            kubeconfig,
            context: Some(context.into()),
        });
        self
    }

    /// Use the existing cluster of this kubeconfig (its current context, unless [`LabBuilder::context`]
    /// names another) instead of creating one on AWS (`up --kubeconfig`).
    pub fn kubeconfig(mut self, path: impl Into<PathBuf>) -> Self {
        let (_, context) = self.existing();
        self.provider = Some(Provider::Existing {
            kubeconfig: Some(path.into()),
            context,
        });
        self
    }

    /// Where the cluster comes from, when neither AWS (the default) nor [`LabBuilder::context`] and
    /// [`LabBuilder::kubeconfig`] say it.
    pub fn provider(mut self, provider: Provider) -> Self {
        self.provider = Some(provider);
        self
    }

    /// Knobs for tests and unusual setups ([`LabOptions`]): where labs are kept, AWS endpoints.
    pub fn options(mut self, options: LabOptions) -> Self {
        self.options = options;
        self
    }

    /// The kubeconfig and context of the existing cluster named so far, if any.
    fn existing(&self) -> (Option<PathBuf>, Option<String>) {
        match &self.provider {
            Some(Provider::Existing {
                kubeconfig,
                context,
            }) => (kubeconfig.clone(), context.clone()),
            _ => (None, None),
        }
    }

    /// The validated spec: what [`LabBuilder::build`] would bring up. Needs no network, so a
    /// [`crate::plan::Plan`] of it shows what the lab creates and costs.
    pub fn spec(&self) -> Result<ValidSpec> {
        let mut inputs = match &self.inputs {
            Some(inputs) => inputs.clone(),
            None => {
                let cwd = std::env::current_dir()
                    .map_err(|e| Error::io("read the working directory", e))?;
                SpecInputs::from_process(&cwd, None)
            }
        };
        if let Some(config) = &self.config {
            inputs.explicit_file = Some(config.clone());
        }
        inputs.override_source = Some(|field| {
            crate::spec::Source::Method(format!(".{}()", field_option(field).unwrap_or(field)))
        });
        Ok(inputs.validate_options(self.settings.iter().cloned())?)
    }

    /// The lab. Validates the spec first, so every problem with it is an [`Error::Spec`] before any
    /// cloud call; with AWS, loads the AWS configuration (credentials are checked by `up`'s
    /// preflight).
    pub async fn build(self) -> Result<Lab> {
        let spec = self.spec()?;
        Lab::new(spec, self.provider.unwrap_or(Provider::Aws), self.options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Capacity, OPTIONS, Source, SpecLayer};

    /// A builder that reads no file and no environment of this process.
    fn builder() -> LabBuilder {
        let home = std::env::temp_dir().join("gpulab-builder-test-home");
        Lab::builder().inputs(SpecInputs {
            home: Some(home),
            ..Default::default()
        })
    }

    #[test]
    fn options_set_the_fields_their_flags_set() {
        let spec = builder()
            .name("dev")
            .node_type("g5.xlarge")
            .spot(true)
            .max_nodes(3)
            .cpu("2")
            .jupyter(false)
            .access(AccessMode::LoadBalancer)
            .allowed_cidrs(["203.0.113.7/32"])
            .api_cidrs(["198.51.100.0/24"])
            .tag("team", "ml")
            .tag("cost-center", "42")
            .spec()
            .unwrap();
        let s = &spec.spec;
        assert_eq!(s.name, "dev");
        assert_eq!(s.nodes.instance_type, "g5.xlarge");
        assert_eq!(s.nodes.capacity, Capacity::Spot);
        assert_eq!(s.nodes.max, 3);
        assert_eq!(s.workspace.cpu, "2");
        assert!(!s.workspace.jupyter);
        assert_eq!(s.access.mode, AccessMode::LoadBalancer);
        assert_eq!(s.access.allowed_cidrs[0].to_string(), "203.0.113.7/32");
        assert_eq!(s.access.api_cidrs[0].to_string(), "198.51.100.0/24");
        assert_eq!(s.tags.len(), 2);
        assert_eq!(
            spec.provenance.source("nodes.instance_type"),
            Source::Method(".node_type()".into())
        );
        assert_eq!(spec.provenance.source("region"), Source::Default);
    }

    #[test]
    fn every_problem_is_reported_at_once_naming_its_method() {
        let Err(Error::Spec(errors)) = builder()
            .node_type("m5.large")
            .set("min_nodes", "two")
            .set("gpu_count", 2)
            .spec()
        else {
            panic!("expected spec errors")
        };
        let text = errors.to_string();
        assert!(
            text.contains("nodes.min = \"two\" (from method .min_nodes()): not a whole number\n    allowed: a whole number, 0 or more"),
            "{text}"
        );
        assert!(
            text.contains("gpu_count = \"2\" (from method .gpu_count()): no such option\n    allowed: name, region, kubernetes_version, node_type,"),
            "{text}"
        );
        let instance_type = errors.for_field("nodes.instance_type").next().unwrap();
        assert_eq!(instance_type.value, "m5.large");
        assert_eq!(instance_type.source, Source::Method(".node_type()".into()));
        assert_eq!(errors.0.len(), 3, "{text}");
    }

    #[test]
    fn the_builder_the_cli_and_python_share_one_table_of_options() {
        // Every option the table names is one `SpecLayer::set` takes, and sets the field it names.
        for (option, field) in OPTIONS {
            let value = match *option {
                "min_nodes" | "desired_nodes" | "max_nodes" | "disk" | "gpus" | "time_slicing" => {
                    serde_json::json!(7)
                }
                "spot" | "jupyter" => serde_json::json!(true),
                "access" => serde_json::json!("load-balancer"),
                "allowed_cidrs" | "api_cidrs" => serde_json::json!(["10.0.0.0/8"]),
                "python_packages" | "apt_packages" => serde_json::json!(["x"]),
                "tags" => serde_json::json!({"k": "v"}),
                "budget" => serde_json::json!(25),
                _ => serde_json::json!("x"),
            };
            let mut layer = SpecLayer::default();
            layer.set(option, value).unwrap();
            assert_ne!(layer, SpecLayer::default(), "{option} set nothing");
            let set = serde_json::to_value(&layer).unwrap();
            let node = field.split('.').fold(&set, |node, key| &node[key]);
            assert!(!node.is_null(), "{option} did not set {field}: {set}");
        }
    }

    #[test]
    fn existing_clusters_keep_both_kubeconfig_and_context() {
        let builder = builder().kubeconfig("/tmp/k").context("ctx");
        assert_eq!(
            builder.provider,
            Some(Provider::Existing {
                kubeconfig: Some("/tmp/k".into()),
                context: Some("ctx".into())
            })
        );
    }
}
