//! The lab's status in one call, as data: what the original `check-status.sh` printed (cluster, nodes,
//! NVIDIA plugin, pod, SSH service, GPU allocation), gathered with concurrent API calls.
//!
//! Nothing here fails because the lab is broken: an unreachable cluster, a missing plugin or a pod
//! that is not ready are reported in the [`ClusterStatus`], each problem in words with what to do.
//! Secrets are listed by name only; their values are never read into the status.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Secret, Service};
use kube::Api;
use kube::api::ListParams;
use serde::Serialize;

use crate::Result;
use crate::addon::{AddonStatus, ClusterAddon, NvidiaDevicePlugin};
use crate::naming::{GPU_NODE_LABEL, GPU_RESOURCE, KubeNames, LabId};
use crate::remote::{ExecRequest, RemoteExec};
use crate::slurm::SlurmState;
use crate::spec::ValidSpec;
use crate::workspace::{KubeWorkspace, WorkspaceInfo, WorkspaceManager};

/// The command that lists the GPUs visible in the pod.
pub const NVIDIA_SMI_QUERY: [&str; 3] = [
    "nvidia-smi",
    "--query-gpu=index,name,memory.total,driver_version",
    "--format=csv,noheader,nounits",
];

/// How long the nvidia-smi query may take.
const NVIDIA_SMI_TIMEOUT: Duration = Duration::from_secs(30);

/// Everything `gpulab status` shows about the cluster side of a lab.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClusterStatus {
    /// Whether the API server answered `/version`.
    pub reachable: bool,
    /// The API server's version (`gitVersion`, e.g. `v1.33.0-eks-…`), when reachable.
    pub server_version: Option<String>,
    /// Why the API server could not be reached; `None` when it answered.
    pub error: Option<String>,
    /// Every node, GPU or not, with the GPUs it advertises.
    pub nodes: Vec<NodeStatus>,
    /// The NVIDIA device plugin's rollout and whether every GPU node advertises its GPUs; `None` when
    /// it could not be read (the reason is in `problems`).
    pub device_plugin: Option<AddonStatus>,
    /// The workspace pod (phase, readiness, node, GPUs, volume, endpoint); `None` when it could not be
    /// read (the reason is in `problems`).
    pub workspace: Option<WorkspaceInfo>,
    /// The GPUs that nvidia-smi sees inside the pod.
    pub gpus: PodGpus,
    /// Slurm in the workspace (`gpulab slurm setup`); `None` when the pod was not asked (not ready, no
    /// exec transport) or could not answer.
    pub slurm: Option<SlurmState>,
    /// The services in the lab's namespace: where SSH and Jupyter can be reached.
    pub services: Vec<ServiceStatus>,
    /// The lab's secrets, by name only.
    pub secrets: SecretNames,
    /// What is wrong, each in words with what to do; empty when the lab is healthy.
    pub problems: Vec<String>,
}

impl ClusterStatus {
    /// Whether the cluster answered and nothing is wrong.
    pub fn healthy(&self) -> bool {
        self.reachable && self.problems.is_empty()
    }

    fn unreachable(error: String) -> Self {
        ClusterStatus {
            reachable: false,
            server_version: None,
            problems: vec![format!(
                "cannot reach the API server ({error}): is the lab up and the network reachable?"
            )],
            error: Some(error),
            nodes: Vec::new(),
            device_plugin: None,
            workspace: None,
            gpus: PodGpus::NotQueried {
                reason: "the cluster is unreachable".into(),
            },
            slurm: None,
            services: Vec::new(),
            secrets: SecretNames::default(),
        }
    }
}

/// One node of the cluster.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeStatus {
    /// The node's name.
    pub name: String,
    /// Whether its `Ready` condition is `True`.
    pub ready: bool,
    /// Whether it is labelled as a GPU node (`nvidia.com/gpu.present=true`).
    pub gpu_node: bool,
    /// Its allocatable `nvidia.com/gpu` (0 until the device plugin runs on it).
    pub allocatable_gpus: u32,
    /// Its instance type label (`node.kubernetes.io/instance-type`), if any.
    pub instance_type: Option<String>,
}

/// The GPUs visible inside the pod.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum PodGpus {
    /// nvidia-smi ran and listed these GPUs.
    Visible {
        /// One entry per GPU, in nvidia-smi's order.
        gpus: Vec<PodGpu>,
    },
    /// nvidia-smi was not asked.
    NotQueried {
        /// Why: no way to exec was given, the pod is not ready, or the cluster is unreachable.
        reason: String,
    },
    /// nvidia-smi could not run, failed, or listed no GPU: the pod sees no usable GPU.
    Unavailable {
        /// What happened, in nvidia-smi's or the transport's words.
        reason: String,
    },
}

/// One GPU as nvidia-smi reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PodGpu {
    /// nvidia-smi's index.
    pub index: u32,
    /// The product name, e.g. `Tesla T4`.
    pub name: String,
    /// Total memory in MiB; `None` where the driver reports `[N/A]`.
    pub memory_total_mib: Option<u64>,
    /// The driver version, e.g. `535.104.05`.
    pub driver_version: String,
}

/// A service in the lab's namespace.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceStatus {
    /// The service's name.
    pub name: String,
    /// `ClusterIP`, `LoadBalancer`, `NodePort`, ….
    pub kind: String,
    /// Its cluster IP, if it has one.
    pub cluster_ip: Option<String>,
    /// Its ports.
    pub ports: Vec<u16>,
    /// A LoadBalancer's DNS name or IP once assigned.
    pub external_address: Option<String>,
}

/// The lab's secrets, by name (their values are never read into the status).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SecretNames {
    /// Every secret in the lab's namespace.
    pub present: Vec<String>,
    /// The secrets the workspace needs (authorized keys, host key, Jupyter token) that are absent.
    pub missing: Vec<String>,
}

/// Gather the lab's status. The API calls (`/version`, nodes, the device plugin, the workspace,
/// services, secrets) run concurrently; then, only when the pod is ready and `exec` is given, nvidia-smi
/// runs in the pod. An unreachable cluster is `reachable: false` with the error, not an `Err`.
pub async fn cluster_status(
    client: &kube::Client,
    spec: &ValidSpec,
    id: &LabId,
    exec: Option<&dyn RemoteExec>,
) -> Result<ClusterStatus> {
    let names = KubeNames::new(&spec.spec);
    let nodes: Api<Node> = Api::all(client.clone());
    let services: Api<Service> = Api::namespaced(client.clone(), &names.namespace);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &names.namespace);
    let all = ListParams::default();
    let (version, nodes, plugin, workspace, services, secrets) = tokio::join!(
        client.apiserver_version(),
        nodes.list(&all),
        NvidiaDevicePlugin.status(client, spec, id),
        KubeWorkspace.status(client, spec, id),
        services.list(&all),
        // names only: a metadata list never carries the secrets' data
        secrets.list_metadata(&all),
    );
    let version = match version {
        Ok(info) => info.git_version,
        Err(e) => return Ok(ClusterStatus::unreachable(e.to_string())),
    };
    let mut problems = Vec::new();

    let nodes = match nodes {
        Ok(list) => list.items.iter().map(node_status).collect(),
        Err(e) => {
            problems.push(format!("cannot list the nodes: {e}"));
            Vec::new()
        }
    };
    let device_plugin = match plugin {
        Ok(status) => {
            problems.extend(status.problem.clone());
            Some(status)
        }
        Err(e) => {
            problems.push(format!("cannot read the device plugin: {e}"));
            None
        }
    };
    let workspace = match workspace {
        Ok(info) => {
            problems.extend(info.problem.clone());
            Some(info)
        }
        Err(e) => {
            problems.push(format!("cannot read the workspace: {e}"));
            None
        }
    };
    let services = match services {
        Ok(list) => list.items.iter().map(service_status).collect(),
        Err(e) => {
            problems.push(format!("cannot list the services: {e}"));
            Vec::new()
        }
    };
    let secrets = match secrets {
        Ok(list) => {
            let mut present: Vec<String> = list
                .items
                .into_iter()
                .filter_map(|s| s.metadata.name)
                .collect();
            present.sort();
            let missing: Vec<String> = [
                &names.authorized_keys,
                &names.host_key,
                &names.jupyter_token,
            ]
            .into_iter()
            .filter(|n| !present.contains(n))
            .cloned()
            .collect();
            if !missing.is_empty() {
                problems.push(format!(
                    "the workspace's secrets {} are missing; `gpulab up` creates them",
                    missing.join(", ")
                ));
            }
            SecretNames { present, missing }
        }
        Err(e) => {
            problems.push(format!("cannot list the secrets: {e}"));
            SecretNames::default()
        }
    };

    let ready = workspace.as_ref().is_some_and(|w| w.ready);
    let (gpus, slurm) = match (exec, ready) {
        (_, false) => (
            PodGpus::NotQueried {
                reason: "the workspace pod is not ready".into(),
            },
            None,
        ),
        (None, true) => (
            PodGpus::NotQueried {
                reason: "no exec transport was given".into(),
            },
            None,
        ),
        (Some(exec), true) => {
            let (gpus, slurm) = tokio::join!(query_gpus(exec), crate::slurm::state(exec));
            (gpus, slurm.ok())
        }
    };
    if let PodGpus::Unavailable { reason } = &gpus {
        problems.push(format!(
            "no GPU is visible in the pod ({reason}); check its GPU limit and that the node runs the NVIDIA container runtime"
        ));
    }

    Ok(ClusterStatus {
        reachable: true,
        server_version: Some(version),
        error: None,
        nodes,
        device_plugin,
        workspace,
        gpus,
        slurm,
        services,
        secrets,
        problems,
    })
}

/// Run [`NVIDIA_SMI_QUERY`] in the pod and say what it found, or why it found nothing.
async fn query_gpus(exec: &dyn RemoteExec) -> PodGpus {
    // Through sh, so that a missing nvidia-smi is exit code 127 rather than a runtime-specific exec error.
    let argv: Vec<String> = [
        "sh",
        "-c",
        "command -v \"$1\" >/dev/null 2>&1 || exit 127; exec \"$@\"",
        "sh",
    ]
    .iter()
    .chain(NVIDIA_SMI_QUERY.iter())
    .map(|s| s.to_string())
    .collect();
    let request = ExecRequest {
        argv,
        timeout: Some(NVIDIA_SMI_TIMEOUT),
        ..Default::default()
    };
    let output = match exec.exec(request).await {
        Ok(output) => output,
        Err(e) => {
            return PodGpus::Unavailable {
                reason: format!("nvidia-smi could not run: {e}"),
            };
        }
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    if output.status.shell_code() == 127 {
        return PodGpus::Unavailable {
            reason: "nvidia-smi is not in the pod".into(),
        };
    }
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let said = first_line(&stderr).or_else(|| first_line(&stdout));
        return PodGpus::Unavailable {
            reason: format!(
                "nvidia-smi exited with code {}{}",
                output.status.shell_code(),
                said.map(|s| format!(": {s}")).unwrap_or_default()
            ),
        };
    }
    match parse_nvidia_smi(&stdout) {
        Ok(gpus) if gpus.is_empty() => PodGpus::Unavailable {
            reason: "nvidia-smi listed no GPU".into(),
        },
        Ok(gpus) => PodGpus::Visible { gpus },
        Err(e) => PodGpus::Unavailable { reason: e },
    }
}

fn first_line(text: &str) -> Option<&str> {
    text.lines().map(str::trim).find(|l| !l.is_empty())
}

/// Parse the output of [`NVIDIA_SMI_QUERY`]: one `index, name, memory.total, driver_version` line per
/// GPU (memory in MiB). A name may itself contain commas; blank lines are skipped.
pub fn parse_nvidia_smi(stdout: &str) -> std::result::Result<Vec<PodGpu>, String> {
    let mut gpus = Vec::new();
    for line in stdout.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if fields.len() < 4 {
            return Err(format!("unexpected nvidia-smi output: {line:?}"));
        }
        let index = fields[0]
            .parse()
            .map_err(|_| format!("unexpected nvidia-smi output: {line:?}"))?;
        let n = fields.len();
        let memory = fields[n - 2];
        let memory_total_mib = match memory.parse() {
            Ok(mib) => Some(mib),
            Err(_) if memory.starts_with('[') => None,
            Err(_) => return Err(format!("unexpected nvidia-smi output: {line:?}")),
        };
        gpus.push(PodGpu {
            index,
            name: fields[1..n - 2].join(", "),
            memory_total_mib,
            driver_version: fields[n - 1].to_string(),
        });
    }
    Ok(gpus)
}

fn node_status(node: &Node) -> NodeStatus {
    let labels = node.metadata.labels.as_ref();
    let status = node.status.as_ref();
    NodeStatus {
        name: node.metadata.name.clone().unwrap_or_default(),
        ready: status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True")),
        gpu_node: labels
            .and_then(|l| l.get(GPU_NODE_LABEL.0))
            .is_some_and(|v| v == GPU_NODE_LABEL.1),
        allocatable_gpus: status
            .and_then(|s| s.allocatable.as_ref()?.get(GPU_RESOURCE))
            .and_then(|q| q.0.parse().ok())
            .unwrap_or(0),
        instance_type: labels
            .and_then(|l| l.get("node.kubernetes.io/instance-type"))
            .cloned(),
    }
}

fn service_status(service: &Service) -> ServiceStatus {
    let spec = service.spec.as_ref();
    ServiceStatus {
        name: service.metadata.name.clone().unwrap_or_default(),
        kind: spec
            .and_then(|s| s.type_.clone())
            .unwrap_or_else(|| "ClusterIP".into()),
        cluster_ip: spec
            .and_then(|s| s.cluster_ip.clone())
            .filter(|ip| !ip.is_empty() && ip != "None"),
        ports: spec
            .and_then(|s| s.ports.as_ref())
            .map(|ports| ports.iter().map(|p| p.port as u16).collect())
            .unwrap_or_default(),
        external_address: service
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref()?.ingress.as_ref()?.first().cloned())
            .and_then(|i| i.hostname.or(i.ip)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_recorded_nvidia_smi_lines() {
        // NVIDIA_SMI_QUERY's output as drivers print it on a g4dn.xlarge (T4), a p4de (A100 80GB,
        // two of its eight lines) and a p5 (H100).
        let t4 = "0, Tesla T4, 15360, 535.104.05\n";
        assert_eq!(
            parse_nvidia_smi(t4).unwrap(),
            [PodGpu {
                index: 0,
                name: "Tesla T4".into(),
                memory_total_mib: Some(15360),
                driver_version: "535.104.05".into(),
            }]
        );
        let a100 = "0, NVIDIA A100-SXM4-80GB, 81920, 550.54.15\n1, NVIDIA A100-SXM4-80GB, 81920, 550.54.15\n";
        let gpus = parse_nvidia_smi(a100).unwrap();
        assert_eq!(gpus.iter().map(|g| g.index).collect::<Vec<_>>(), [0, 1]);
        assert_eq!(gpus[1].name, "NVIDIA A100-SXM4-80GB");
        let h100 = "0, NVIDIA H100 80GB HBM3, 81559, 550.54.15\n";
        assert_eq!(
            parse_nvidia_smi(h100).unwrap()[0].memory_total_mib,
            Some(81559)
        );
    }

    #[test]
    fn names_with_commas_blank_lines_and_missing_memory() {
        let out = "\n0, NVIDIA Graphics Device, 16GB, [N/A], 550.54.14\n\n";
        let gpus = parse_nvidia_smi(out).unwrap();
        assert_eq!(gpus[0].name, "NVIDIA Graphics Device, 16GB");
        assert_eq!(gpus[0].memory_total_mib, None);
        assert_eq!(gpus[0].driver_version, "550.54.14");
        assert!(parse_nvidia_smi("").unwrap().is_empty());
    }

    #[test]
    fn rejects_what_is_not_the_query_output() {
        let err = parse_nvidia_smi(
            "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.",
        )
        .unwrap_err();
        assert!(err.contains("unexpected nvidia-smi output"), "{err}");
        assert!(parse_nvidia_smi("x, Tesla T4, 15360, 535.104.05").is_err());
    }
}
