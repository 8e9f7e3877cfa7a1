//! Validation: every rule a spec must meet before gpulab makes a single API call, each failure naming the
//! field, the value, its source and what is allowed.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{
    AUTO, AccessMode, FieldError, LabSpec, Provenance, Quantity, ResolvedSpec, SpecErrors,
};
use crate::capacity;
use crate::catalog::{self, InstanceType, Region};

/// Longest lab name: EKS allows 100 characters, but gpulab derives IAM role names (64 at most) and
/// Kubernetes label values (63 at most) from it.
const MAX_NAME_LEN: usize = 40;
/// Most nodes gpulab will plan; more is almost surely a typo with a large bill attached.
const MAX_NODES: u32 = 100;

/// The SSH key the workspace authorises.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum SshKey {
    /// An existing public key.
    Existing {
        /// The `.pub` file.
        path: PathBuf,
        /// Its one line: type, base64 key, optional comment.
        public_key: String,
    },
    /// No key was named and none exists: `up` generates an ed25519 key pair here.
    Generate {
        /// Where the private key will be written (the public half beside it, `.pub`).
        path: PathBuf,
    },
}

/// A spec that passed validation, with what validation worked out: the instance type, the region, the
/// SSH key and the pod's resource requests. Only this type can be planned or brought up.
#[derive(Debug, Clone, Serialize)]
pub struct ValidSpec {
    /// The spec.
    pub spec: LabSpec,
    /// Where each value came from.
    pub provenance: Provenance,
    /// The GPU node type, from the catalog.
    pub instance: &'static InstanceType,
    /// The region.
    pub region: &'static Region,
    /// The SSH key to authorise.
    pub ssh_key: SshKey,
    /// CPU the pod requests (`workspace.cpu`, or for "auto" its share of what the node leaves once
    /// kubelet's reservations, the system pods and an image build are counted: [`capacity`]).
    pub cpu: Quantity,
    /// Memory the pod requests and is limited to (`workspace.memory`, or its share for "auto", as for
    /// `cpu`).
    pub memory: Quantity,
    /// Size of the `/workspace` volume.
    pub volume_size: Quantity,
    /// The software stack for the node's GPU generation (base image, PyTorch, vLLM, settings).
    pub stack: &'static crate::versions::Stack,
    /// The workspace image: `workspace.image`, or the stack's base image for "auto".
    pub image: String,
    /// Idle autostop and the budget, parsed.
    pub autostop: super::guard::Guard,
}

// The spec's own fields that nothing validated replaces, read without `.spec.` (the ones validation
// works out, `region` and `autostop`, keep their parsed form on `ValidSpec` and their text on `spec`).
impl ValidSpec {
    /// The lab's name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// The GPU node group's settings.
    pub fn nodes(&self) -> &super::NodesSpec {
        &self.spec.nodes
    }

    /// The workspace pod's settings.
    pub fn workspace(&self) -> &super::WorkspaceSpec {
        &self.spec.workspace
    }

    /// How the workspace is reached.
    pub fn access(&self) -> &super::AccessSpec {
        &self.spec.access
    }

    /// The device plugin's settings.
    pub fn device_plugin(&self) -> &super::DevicePluginSpec {
        &self.spec.device_plugin
    }
}

impl ResolvedSpec {
    /// Check every rule; all failures are reported together. Reads the SSH key file, and nothing else
    /// outside the spec: no credentials, no network.
    pub fn validate(self) -> Result<ValidSpec, SpecErrors> {
        let mut v = Validator {
            resolved: &self,
            errors: Vec::new(),
        };
        let spec = &self.spec;

        v.check_name();
        let region = catalog::region(&spec.region);
        if region.is_none() {
            let known: Vec<&str> = catalog::regions().iter().map(|r| r.code).collect();
            v.fail(
                "region",
                &spec.region,
                "not an AWS region gpulab knows",
                &known.join(", "),
            );
        }
        if let Some(version) = &spec.kubernetes_version {
            let ok = version
                .strip_prefix("1.")
                .is_some_and(|minor| minor.len() == 2 && minor.chars().all(|c| c.is_ascii_digit()));
            if !ok {
                v.fail(
                    "kubernetes_version",
                    version,
                    "not a Kubernetes minor version",
                    "a version such as 1.33, or unset for EKS's default",
                );
            }
        }
        let instance = v.check_instance_type();
        v.check_node_counts();
        if !(20..=16384).contains(&spec.nodes.disk_gib) {
            v.fail(
                "nodes.disk_gib",
                &spec.nodes.disk_gib.to_string(),
                "outside what EBS and the GPU AMI allow",
                "20 to 16384 (GiB)",
            );
        }

        v.check_dns_label("workspace.namespace", &spec.workspace.namespace, 63, false);
        // `down` deletes the lab's namespace: never one the cluster itself depends on.
        let namespace = spec.workspace.namespace.as_str();
        if namespace == "default" || namespace.starts_with("kube-") {
            v.fail(
                "workspace.namespace",
                namespace,
                "a namespace the cluster itself uses; `down` deletes the lab's namespace",
                "a namespace of the lab's own, e.g. gpulab (the default)",
            );
        }
        v.check_dns_label("workspace.pod_name", &spec.workspace.pod_name, 50, true);
        let image = &spec.workspace.image;
        if image.is_empty() || image.chars().any(char::is_whitespace) {
            v.fail(
                "workspace.image",
                image,
                "not an image reference",
                "\"auto\" (the version matrix's CUDA image), e.g. nvidia/cuda:12.8.1-cudnn-devel-ubuntu22.04, or an ECR URI",
            );
        }
        if let Some(class) = &spec.workspace.storage_class {
            v.check_dns_label("workspace.storage_class", class, 253, false);
        }
        let (cpu, memory) = match instance {
            Some(instance) => v.check_workspace_size(instance),
            None => (None, None),
        };
        let volume_size = v.check_volume_size();
        let ssh_key = v.check_ssh_key();

        let replicas = spec.device_plugin.time_slicing_replicas;
        if !(1..=32).contains(&replicas) {
            v.fail(
                "device_plugin.time_slicing_replicas",
                &replicas.to_string(),
                "out of range",
                "1 (no sharing) to 32 pods per GPU",
            );
        }
        v.check_access();
        v.check_tags();
        let autostop = v.check_autostop();

        let errors = v.errors;
        match (
            errors.is_empty(),
            instance,
            region,
            cpu,
            memory,
            volume_size,
            ssh_key,
        ) {
            (
                true,
                Some(instance),
                Some(region),
                Some(cpu),
                Some(memory),
                Some(volume_size),
                Some(ssh_key),
            ) => Ok({
                let stack = crate::versions::stack_for(instance);
                let image = if self.spec.workspace.image == AUTO {
                    stack.base_image.to_string()
                } else {
                    self.spec.workspace.image.clone()
                };
                ValidSpec {
                    stack,
                    image,
                    autostop,
                    spec: self.spec,
                    provenance: self.provenance,
                    instance,
                    region,
                    ssh_key,
                    cpu,
                    memory,
                    volume_size,
                }
            }),
            _ => Err(SpecErrors(errors)),
        }
    }
}

struct Validator<'a> {
    resolved: &'a ResolvedSpec,
    errors: Vec<FieldError>,
}

impl Validator<'_> {
    fn spec(&self) -> &LabSpec {
        &self.resolved.spec
    }

    fn fail(&mut self, field: &str, value: &str, problem: &str, allowed: &str) {
        self.errors.push(FieldError {
            field: field.into(),
            value: value.into(),
            source: self.resolved.provenance.source(field),
            problem: problem.into(),
            allowed: allowed.into(),
        });
    }

    /// `[autostop]`, as [`super::guard::Guard::parse`] reads it.
    fn check_autostop(&mut self) -> super::guard::Guard {
        let a = self.spec().autostop.clone();
        let (guard, problems) = super::guard::Guard::parse(&a);
        for p in problems {
            self.fail(p.field, &p.value, &p.problem, p.allowed);
        }
        guard
    }

    fn check_name(&mut self) {
        let name = self.spec().name.clone();
        let chars_ok = name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        let ends_ok = name.starts_with(|c: char| c.is_ascii_alphanumeric())
            && name.ends_with(|c: char| c.is_ascii_alphanumeric());
        if name.is_empty() || name.len() > MAX_NAME_LEN || !chars_ok || !ends_ok {
            self.fail(
                "name",
                &name,
                "not a valid lab (EKS cluster) name",
                "1 to 40 letters, digits, '-' or '_', starting and ending with a letter or digit \
                 (EKS allows 100 characters; gpulab derives IAM role and Kubernetes label names from it)",
            );
        }
    }

    fn check_instance_type(&mut self) -> Option<&'static InstanceType> {
        let name = self.spec().nodes.instance_type.clone();
        if let Some(instance) = catalog::instance(&name) {
            return Some(instance);
        }
        let mut families: Vec<&str> = catalog::instances().iter().map(|i| i.family()).collect();
        families.dedup();
        let allowed = format!(
            "a GPU instance type of the families {} (see `gpulab catalog`)",
            families.join(", ")
        );
        let problem = if catalog::is_known_cpu_family(&name) {
            "has no GPU"
        } else {
            "not in gpulab's GPU catalog"
        };
        self.fail("nodes.instance_type", &name, problem, &allowed);
        None
    }

    fn check_node_counts(&mut self) {
        let n = self.spec().nodes.clone();
        if n.max == 0 || n.max > MAX_NODES {
            self.fail(
                "nodes.max",
                &n.max.to_string(),
                "out of range",
                &format!("1 to {MAX_NODES}"),
            );
        }
        if n.min > n.max {
            self.fail(
                "nodes.min",
                &n.min.to_string(),
                &format!("greater than nodes.max ({})", n.max),
                &format!("0 to nodes.max ({})", n.max),
            );
        } else if n.desired < n.min || n.desired > n.max {
            self.fail(
                "nodes.desired",
                &n.desired.to_string(),
                &format!("outside nodes.min..=nodes.max ({}..={})", n.min, n.max),
                &format!("{} to {}", n.min, n.max),
            );
        }
    }

    /// DNS-1123 label; `letter_first` makes it a DNS-1035 label, which Service names need.
    fn check_dns_label(&mut self, field: &str, value: &str, max: usize, letter_first: bool) {
        let chars_ok = value.chars().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || (max > 63 && c == '.')
        });
        let first_ok = value
            .starts_with(|c: char| c.is_ascii_lowercase() || (!letter_first && c.is_ascii_digit()));
        let last_ok = value.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit());
        if value.is_empty() || value.len() > max || !chars_ok || !first_ok || !last_ok {
            let first = if letter_first {
                "a letter"
            } else {
                "a letter or digit"
            };
            self.fail(
                field,
                value,
                "not a valid Kubernetes name",
                &format!("1 to {max} lower-case letters, digits or '-', starting with {first} and ending with a letter or digit"),
            );
        }
    }

    /// The pod's CPU and memory: explicit values must fit the node; "auto" takes the pod's share of it
    /// (its GPUs over the node's GPUs).
    fn check_workspace_size(
        &mut self,
        instance: &InstanceType,
    ) -> (Option<Quantity>, Option<Quantity>) {
        let ws = self.spec().workspace.clone();
        if ws.gpus == 0 || ws.gpus > instance.gpu_count {
            self.fail(
                "workspace.gpus",
                &ws.gpus.to_string(),
                &format!(
                    "{} has {} GPU{}",
                    instance.name,
                    instance.gpu_count,
                    if instance.gpu_count == 1 { "" } else { "s" }
                ),
                &if instance.gpu_count == 1 {
                    "1, or a node type with more GPUs (`gpulab catalog`)".to_string()
                } else {
                    format!("1 to {}", instance.gpu_count)
                },
            );
            return (None, None);
        }
        let share = f64::from(ws.gpus) / f64::from(instance.gpu_count);
        // What the node's allocatable leaves once the system pods run (the most one pod can ask for),
        // and what "auto" shares out: that, less room for an in-cluster image build.
        let budget = capacity::node_budget(instance);
        let max = budget.allocatable.minus(budget.system_pods);
        let room = budget.workspaces;
        let max_cpu = max.cpu_millis;
        let max_memory_gib = max.memory_mib as f64 / 1024.0;
        let why = format!(
            "{} allocatable after kubelet's reservations, {} of it requested by the system pods",
            budget.allocatable, budget.system_pods
        );

        let cpu = if ws.cpu == AUTO {
            Some(Quantity::millicores(
                ((room.cpu_millis as f64 * share) as u64) / 100 * 100,
            ))
        } else {
            match Quantity::parse(&ws.cpu) {
                Ok(q) if q.value * 1000.0 > max_cpu as f64 => {
                    self.fail(
                        "workspace.cpu",
                        &ws.cpu,
                        &format!(
                            "more than {} can give a pod: it has {} vCPUs, {why}",
                            instance.name, instance.vcpus
                        ),
                        &format!("up to {max_cpu}m, or \"auto\""),
                    );
                    None
                }
                Ok(q) if q.value <= 0.0 => {
                    self.fail(
                        "workspace.cpu",
                        &ws.cpu,
                        "must be more than zero",
                        &format!("up to {max_cpu}m, or \"auto\""),
                    );
                    None
                }
                Ok(q) => Some(q),
                Err(problem) => {
                    self.fail(
                        "workspace.cpu",
                        &ws.cpu,
                        &problem,
                        "a CPU quantity such as 2, 3500m, or \"auto\"",
                    );
                    None
                }
            }
        };
        let memory = if ws.memory == AUTO {
            Some(Quantity::gib(
                (room.memory_mib as f64 * share / 1024.0).floor() as u64,
            ))
        } else {
            match Quantity::parse(&ws.memory) {
                Ok(q) if q.as_gib() > max_memory_gib => {
                    self.fail(
                        "workspace.memory",
                        &ws.memory,
                        &format!(
                            "more than {} can give a pod: it has {} GiB, {why}",
                            instance.name, instance.memory_gib
                        ),
                        &format!("up to {}Mi, or \"auto\"", max.memory_mib),
                    );
                    None
                }
                Ok(q) if q.as_gib() < 1.0 => {
                    self.fail(
                        "workspace.memory",
                        &ws.memory,
                        "too little to run PyTorch",
                        &format!("1Gi to {}Mi, or \"auto\"", max.memory_mib),
                    );
                    None
                }
                Ok(q) => Some(q),
                Err(problem) => {
                    self.fail(
                        "workspace.memory",
                        &ws.memory,
                        &problem,
                        "a memory quantity such as 12Gi, or \"auto\"",
                    );
                    None
                }
            }
        };
        (cpu, memory)
    }

    fn check_volume_size(&mut self) -> Option<Quantity> {
        let size = self.spec().workspace.volume_size.clone();
        match Quantity::parse(&size) {
            Ok(q) if (1.0..=16384.0).contains(&q.as_gib()) => Some(q),
            Ok(_) => {
                self.fail(
                    "workspace.volume_size",
                    &size,
                    "outside what an EBS gp3 volume can be",
                    "1Gi to 16Ti",
                );
                None
            }
            Err(problem) => {
                self.fail(
                    "workspace.volume_size",
                    &size,
                    &problem,
                    "a size such as 50Gi",
                );
                None
            }
        }
    }

    fn check_ssh_key(&mut self) -> Option<SshKey> {
        let home = self.resolved.home.clone();
        let Some(path) = self.spec().workspace.ssh_public_key.clone() else {
            // The user's usual keys, then the one gpulab made on an earlier `up`; with none, `up` makes
            // gpulab's own pair beside them (never an `id_*` file, which may exist without its `.pub`).
            let ssh_dir = home.unwrap_or_default().join(".ssh");
            let found = [
                "id_ed25519.pub",
                "id_ecdsa.pub",
                "id_rsa.pub",
                "gpulab_ed25519.pub",
            ]
            .iter()
            .map(|name| ssh_dir.join(name))
            .find_map(|path| {
                read_public_key(&path)
                    .ok()
                    .map(|public_key| SshKey::Existing { path, public_key })
            });
            return Some(found.unwrap_or(SshKey::Generate {
                path: ssh_dir.join("gpulab_ed25519"),
            }));
        };
        let shown = path.display().to_string();
        let mut path = expand_home(&path, home.as_deref());
        if path.extension().is_none_or(|ext| ext != "pub") {
            let public = path.with_file_name(format!(
                "{}.pub",
                path.file_name().unwrap_or_default().to_string_lossy()
            ));
            if public.exists() {
                path = public;
            }
        }
        match read_public_key(&path) {
            Ok(public_key) => Some(SshKey::Existing { path, public_key }),
            Err(problem) => {
                self.fail(
                    "workspace.ssh_public_key",
                    &shown,
                    &problem,
                    "a readable OpenSSH public key (ed25519, ecdsa or rsa), or its private key with the .pub file beside it",
                );
                None
            }
        }
    }

    fn check_access(&mut self) {
        let access = self.spec().access.clone();
        let shown = access
            .allowed_cidrs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",");
        if access.mode == AccessMode::LoadBalancer && access.allowed_cidrs.is_empty() {
            self.fail(
                "access.allowed_cidrs",
                "",
                "a LoadBalancer needs the address ranges it admits",
                "your own address range, e.g. 203.0.113.7/32; or access.mode = \"port-forward\", which needs none",
            );
        }
        if access.allowed_cidrs.iter().any(|net| net.prefix_len() == 0) {
            self.fail(
                "access.allowed_cidrs",
                &shown,
                "would open SSH to the whole internet",
                "ranges narrower than /0, e.g. 203.0.113.7/32",
            );
        }
        // EKS's publicAccessCidrs takes IPv4 blocks only (EKS API reference, VpcConfigRequest).
        let ipv6: Vec<String> = access
            .api_cidrs
            .iter()
            .filter(|net| matches!(net, ipnet::IpNet::V6(_)))
            .map(ToString::to_string)
            .collect();
        if !ipv6.is_empty() {
            self.fail(
                "access.api_cidrs",
                &ipv6.join(","),
                "EKS admits only IPv4 ranges to its public endpoint",
                "IPv4 ranges, e.g. 203.0.113.7/32; or leave it empty for the address `up` runs from",
            );
        }
    }

    fn check_tags(&mut self) {
        let tags = self.spec().tags.clone();
        if tags.len() > 40 {
            self.fail(
                "tags",
                &format!("{} tags", tags.len()),
                "too many: AWS allows 50 per resource and gpulab adds its own",
                "at most 40 tags",
            );
        }
        for (key, value) in &tags {
            let reserved = key.starts_with("aws:")
                || key.starts_with("gpulab.io/")
                || key.starts_with("kubernetes.io/");
            if key.is_empty() || key.len() > 128 || value.len() > 256 || reserved {
                self.fail(
                    "tags",
                    &format!("{key}={value}"),
                    "not a tag gpulab can set",
                    "keys of 1 to 128 characters not starting with aws:, gpulab.io/ or kubernetes.io/; values up to 256",
                );
            }
        }
    }
}

fn expand_home(path: &Path, home: Option<&Path>) -> PathBuf {
    match (path.strip_prefix("~"), home) {
        (Ok(rest), Some(home)) => home.join(rest),
        _ => path.to_path_buf(),
    }
}

/// The key's one line, if `path` holds an OpenSSH public key.
fn read_public_key(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .unwrap_or_default();
    if line.starts_with("-----BEGIN") {
        return Err(format!(
            "{} is a private key and has no .pub twin; create one with `ssh-keygen -y -f {0} > {0}.pub`",
            path.display()
        ));
    }
    let mut parts = line.split_whitespace();
    let kind = parts.next().unwrap_or_default();
    let blob = parts.next().unwrap_or_default();
    let known = [
        "ssh-ed25519",
        "ssh-rsa",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
    ];
    if known.contains(&kind) && blob.starts_with("AAAA") {
        Ok(line.to_string())
    } else {
        Err(format!("{} is not an OpenSSH public key", path.display()))
    }
}
