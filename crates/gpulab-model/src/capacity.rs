//! What one GPU node leaves for the workspace: the node's allocatable CPU and memory as the EKS AL2023
//! AMI sets kubelet up, less the requests of every system pod that lands on the lab's only node group,
//! less room for an in-cluster image build. `workspace.cpu = "auto"` and `workspace.memory = "auto"`
//! take the workspace's share of what is left ([`workspace_room`]); the kaniko Job requests
//! [`IMAGE_BUILD`]; `plan` shows the sums ([`node_budget`]). This is the one place these facts live.
//!
//! Sources:
//! - kubelet's reservations: the EKS AMI's nodeadm (awslabs/amazon-eks-ami,
//!   `nodeadm/internal/kubelet/config.go`): `kubeReserved.cpu` is 6% of the first core, 1% of the
//!   second, 0.5% of the third and fourth and 0.25% of every core above four
//!   (`getCPUMillicoresToReserve`); `kubeReserved.memory` is 11 MiB per pod kubelet may run plus 255 MiB
//!   (`getMemoryMebibytesToReserve`), that pod count being the VPC CNI's ENI limit
//!   ([`InstanceType::max_pods`], `CalcMaxPods`); `evictionHard` keeps 100 MiB (`memory.available`). No
//!   `systemReserved` is set. Allocatable = capacity − kubeReserved − evictionHard.
//! - Memory capacity: what kubelet reports is the kernel's `MemTotal`, below the instance's nominal
//!   memory (firmware and the kernel keep some). Karpenter estimates the gap as 7.5%
//!   (`VM_MEMORY_OVERHEAD_PERCENT`, default 0.075, aws/karpenter-provider-aws
//!   `pkg/operator/options/options.go`); with it, the reservations above give exactly the allocatable
//!   Karpenter's instance-type reference lists (g4dn.xlarge: 3920m CPU, 14481Mi memory, 29 pods).
//! - The system pods: see [`SYSTEM_PODS`], each with its manifest.

use serde::Serialize;

use crate::catalog::InstanceType;

/// CPU (millicores) and memory (MiB), as requests and allocatable count them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Resources {
    /// CPU, millicores.
    pub cpu_millis: u64,
    /// Memory, MiB.
    pub memory_mib: u64,
}

impl Resources {
    /// `cpu_millis` millicores and `memory_mib` MiB.
    pub const fn new(cpu_millis: u64, memory_mib: u64) -> Self {
        Resources {
            cpu_millis,
            memory_mib,
        }
    }

    /// The sum of both.
    pub const fn plus(self, other: Resources) -> Resources {
        Resources::new(
            self.cpu_millis + other.cpu_millis,
            self.memory_mib + other.memory_mib,
        )
    }

    /// What is left of `self` once `other` is taken (never below zero).
    pub const fn minus(self, other: Resources) -> Resources {
        Resources::new(
            self.cpu_millis.saturating_sub(other.cpu_millis),
            self.memory_mib.saturating_sub(other.memory_mib),
        )
    }

    /// `n` times as much.
    pub const fn times(self, n: u64) -> Resources {
        Resources::new(self.cpu_millis * n, self.memory_mib * n)
    }

    /// True when `other` fits in `self`.
    pub const fn fits(self, other: Resources) -> bool {
        other.cpu_millis <= self.cpu_millis && other.memory_mib <= self.memory_mib
    }

    /// The CPU as a Kubernetes quantity ("250m").
    pub fn cpu_quantity(&self) -> String {
        format!("{}m", self.cpu_millis)
    }

    /// The memory as a Kubernetes quantity ("1536Mi").
    pub fn memory_quantity(&self) -> String {
        format!("{}Mi", self.memory_mib)
    }
}

impl std::fmt::Display for Resources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}m CPU, {} MiB", self.cpu_millis, self.memory_mib)
    }
}

/// One container of a system pod and what it requests (an unset request counts as zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ContainerRequests {
    /// The container's name in the manifest.
    pub name: &'static str,
    /// Its requests.
    pub requests: Resources,
}

/// A system workload whose pods land on the lab's node: a DaemonSet (one pod per node) or a
/// Deployment's replicas (all on the one node when there is only one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SystemPod {
    /// "namespace/name" of the workload.
    pub workload: &'static str,
    /// "DaemonSet" or "Deployment".
    pub kind: &'static str,
    /// Its pods on one node of a one-node group: 1 for a DaemonSet, the replicas for a Deployment.
    pub pods_per_node: u64,
    /// Its containers (init containers only where one requests more than the containers together,
    /// which none of these does).
    pub containers: &'static [ContainerRequests],
    /// The manifest the requests come from.
    pub source: &'static str,
}

impl SystemPod {
    /// What one of its pods requests: the containers' sum.
    pub fn pod_requests(&self) -> Resources {
        self.containers
            .iter()
            .fold(Resources::default(), |sum, c| sum.plus(c.requests))
    }

    /// What all its pods on the node request.
    pub fn node_requests(&self) -> Resources {
        self.pod_requests().times(self.pods_per_node)
    }
}

const fn container(name: &'static str, cpu_millis: u64, memory_mib: u64) -> ContainerRequests {
    ContainerRequests {
        name,
        requests: Resources::new(cpu_millis, memory_mib),
    }
}

/// What the autostop agent's pod requests, which "auto" leaves free on the node
/// ([`SYSTEM_PODS`]): a Python process that wakes every 30 s (CPython 3.11 holds
/// 22 MB once the agent is loaded). Its memory limit is four times as much.
pub const AGENT_REQUESTS: Resources = Resources::new(10, 24);

/// Every system pod that runs on the lab's only node group, with its containers' requests, as the
/// upstream manifests set them.
pub const SYSTEM_PODS: &[SystemPod] = &[
    SystemPod {
        workload: "kube-system/aws-node",
        kind: "DaemonSet",
        pods_per_node: 1,
        // The chart's `resources.requests.cpu: 25m` applies to both containers (the node agent's
        // `nodeAgent.resources` defaults to it) and to the init container, which needs no more.
        containers: &[
            container("aws-node", 25, 0),
            container("aws-eks-nodeagent", 25, 0),
        ],
        source: "aws/amazon-vpc-cni-k8s charts/aws-vpc-cni/values.yaml (resources.requests.cpu 25m) and \
                 templates/daemonset.yaml (`default .Values.resources .Values.nodeAgent.resources`)",
    },
    SystemPod {
        workload: "kube-system/kube-proxy",
        kind: "DaemonSet",
        pods_per_node: 1,
        containers: &[container("kube-proxy", 100, 0)],
        source: "EKS's kube-proxy DaemonSet (`kubectl -n kube-system get ds kube-proxy -o yaml`: requests \
                 cpu 100m), as kubernetes/kubernetes cluster/addons/kube-proxy sets it",
    },
    SystemPod {
        workload: "kube-system/eks-pod-identity-agent",
        kind: "DaemonSet",
        pods_per_node: 1,
        // The chart leaves `resources: {}`: the agent requests nothing.
        containers: &[container("eks-pod-identity-agent", 0, 0)],
        source: "aws/eks-pod-identity-agent charts/eks-pod-identity-agent/values.yaml (resources: {})",
    },
    SystemPod {
        workload: "kube-system/ebs-csi-node",
        kind: "DaemonSet",
        pods_per_node: 1,
        containers: &[
            container("ebs-plugin", 10, 40),
            container("node-driver-registrar", 10, 32),
            container("liveness-probe", 10, 32),
        ],
        source: "kubernetes-sigs/aws-ebs-csi-driver charts/aws-ebs-csi-driver/values.yaml \
                 (node.resources: 10m, 40Mi) and templates/_node.tpl (sidecars default to 10m, 32Mi)",
    },
    SystemPod {
        workload: "kube-system/coredns",
        kind: "Deployment",
        pods_per_node: 2,
        containers: &[container("coredns", 100, 70)],
        source: "EKS's coredns add-on (2 replicas; requests cpu 100m, memory 70Mi), as \
                 kubernetes/kubernetes cluster/addons/dns/coredns/coredns.yaml.base sets them",
    },
    SystemPod {
        workload: "kube-system/ebs-csi-controller",
        kind: "Deployment",
        pods_per_node: 2,
        // csi-snapshotter runs only where the snapshot CRDs are installed (an EKS cluster has none
        // until the snapshot controller add-on is added); volumemodifier and metadata-labeler are off
        // by default.
        containers: &[
            container("ebs-plugin", 10, 40),
            container("csi-provisioner", 10, 40),
            container("csi-attacher", 10, 40),
            container("csi-resizer", 10, 40),
            container("liveness-probe", 10, 32),
        ],
        source: "kubernetes-sigs/aws-ebs-csi-driver charts/aws-ebs-csi-driver/values.yaml (controller: 2 \
                 replicas, resources 10m, 40Mi) and templates/controller.yaml (sidecars default to the \
                 controller's resources, the liveness probe to 10m, 32Mi)",
    },
    SystemPod {
        workload: "kube-system/gpulab-nvidia-device-plugin",
        kind: "DaemonSet",
        pods_per_node: 1,
        // As NVIDIA's static manifest and Helm chart (`resources: {}`): no requests.
        containers: &[container("nvidia-device-plugin-ctr", 0, 0)],
        source: "gpulab's own DaemonSet (addon/nvidia_device_plugin.rs), as NVIDIA's \
                 deployments/static/nvidia-device-plugin.yml: no requests",
    },
    SystemPod {
        workload: "gpulab/gpulab-autostop",
        kind: "Deployment",
        pods_per_node: 1,
        // Counted whether or not autostop is on, so turning it on later never leaves the agent
        // without room beside a workspace sized "auto".
        containers: &[container(
            "agent",
            AGENT_REQUESTS.cpu_millis,
            AGENT_REQUESTS.memory_mib,
        )],
        source: "gpulab's own Deployment (manifests/autostop.rs)",
    },
];

/// What the in-cluster image build (the kaniko Job) requests. Requests are the scheduler's minimum,
/// not a cap: the Job sets no limits, so kaniko may use idle CPU and memory beyond them. "auto" leaves
/// this much free beside the workspace, so a build schedules on the lab's one node.
pub const IMAGE_BUILD: Resources = Resources::new(250, 1536);

/// Memory kubelet keeps free before it evicts pods (`evictionHard: memory.available 100Mi`).
pub const EVICTION_HARD_MEMORY_MIB: u64 = 100;

/// The share of nominal memory the kernel reports as `MemTotal`, by Karpenter's estimate (1 − 0.075).
pub const MEMORY_CAPACITY_FRACTION: f64 = 0.925;

/// CPU kubelet reserves on a node with `vcpus` CPUs, millicores (nodeadm's `getCPUMillicoresToReserve`).
pub fn kube_reserved_cpu_millis(vcpus: u32) -> u64 {
    let total = u64::from(vcpus) * 1000;
    // (range start, range end, hundredths of a percent), as nodeadm writes them.
    let ranges = [
        (0, 1000, 600),
        (1000, 2000, 100),
        (2000, 4000, 50),
        (4000, total, 25),
    ];
    ranges
        .iter()
        .filter(|(start, _, _)| total > *start)
        .map(|(start, end, pct)| (total.min(*end) - start) * pct / 10000)
        .sum()
}

/// Memory kubelet reserves on a node that may run `max_pods` pods, MiB (nodeadm's
/// `getMemoryMebibytesToReserve`).
pub fn kube_reserved_memory_mib(max_pods: u32) -> u64 {
    11 * u64::from(max_pods) + 255
}

/// How a node's CPU and memory divide: what it has, what kubelet keeps, what the system pods and an
/// image build request, and what is left for workspaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct NodeBudget {
    /// What kubelet reports as capacity.
    pub capacity: Resources,
    /// `kubeReserved` plus the hard eviction threshold.
    pub reserved: Resources,
    /// Capacity less `reserved`: what the scheduler may place.
    pub allocatable: Resources,
    /// The requests of [`SYSTEM_PODS`] on the node.
    pub system_pods: Resources,
    /// Kept free for an image build ([`IMAGE_BUILD`]).
    pub image_build: Resources,
    /// What is left for workspaces: allocatable less the system pods and the image build.
    pub workspaces: Resources,
}

/// The requests of every system pod on one node.
pub fn system_pod_requests() -> Resources {
    SYSTEM_PODS
        .iter()
        .fold(Resources::default(), |sum, p| sum.plus(p.node_requests()))
}

/// How one node of `instance` divides.
pub fn node_budget(instance: &InstanceType) -> NodeBudget {
    let capacity = Resources::new(
        u64::from(instance.vcpus) * 1000,
        (instance.memory_gib * 1024.0 * MEMORY_CAPACITY_FRACTION).floor() as u64,
    );
    let reserved = Resources::new(
        kube_reserved_cpu_millis(instance.vcpus),
        kube_reserved_memory_mib(instance.max_pods) + EVICTION_HARD_MEMORY_MIB,
    );
    let allocatable = capacity.minus(reserved);
    let system_pods = system_pod_requests();
    let workspaces = allocatable.minus(system_pods).minus(IMAGE_BUILD);
    NodeBudget {
        capacity,
        reserved,
        allocatable,
        system_pods,
        image_build: IMAGE_BUILD,
        workspaces,
    }
}

/// What workspaces may request on one node of `instance`: allocatable less the system pods and room
/// for an image build.
pub fn workspace_room(instance: &InstanceType) -> Resources {
    node_budget(instance).workspaces
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog;

    #[test]
    fn kubelet_reserves_what_nodeadm_reserves() {
        // nodeadm's ranges worked by hand: 6% of 1000m, + 1% of 1000m, + 0.5% of 2000m, + 0.25% of the rest.
        assert_eq!(kube_reserved_cpu_millis(1), 60);
        assert_eq!(kube_reserved_cpu_millis(2), 70);
        assert_eq!(kube_reserved_cpu_millis(4), 80);
        assert_eq!(kube_reserved_cpu_millis(8), 90);
        assert_eq!(kube_reserved_cpu_millis(96), 310);
        assert_eq!(kube_reserved_memory_mib(29), 574);
    }

    #[test]
    fn allocatable_matches_karpenters_reference() {
        // Karpenter's instance-type reference (website/content/en/preview/reference/instance-types.md).
        for (name, cpu, memory) in [
            ("g4dn.xlarge", 3920, 14481),
            ("g6f.large", 1930, 7002),
            ("gr6.4xlarge", 15890, 118312),
            ("p4de.24xlarge", 95690, 1082712),
            ("p5e.48xlarge", 191450, 1938410),
            ("p6-b200.48xlarge", 191450, 1937332),
        ] {
            let budget = node_budget(catalog::instance(name).unwrap());
            assert_eq!(budget.allocatable, Resources::new(cpu, memory), "{name}");
        }
    }

    #[test]
    fn system_pods_are_summed_over_every_container_and_replica() {
        let total = system_pod_requests();
        // aws-node 50m; kube-proxy 100m; ebs-csi-node 30m, 104Mi; CoreDNS 2 × (100m, 70Mi);
        // ebs-csi-controller 2 × (50m, 192Mi); gpulab's autostop agent 10m, 24Mi.
        assert_eq!(total, Resources::new(490, 652));
        let controller = SYSTEM_PODS
            .iter()
            .find(|p| p.workload == "kube-system/ebs-csi-controller")
            .unwrap();
        assert_eq!(controller.containers.len(), 5);
        assert_eq!(controller.node_requests(), Resources::new(100, 384));
        for pod in SYSTEM_PODS {
            assert!(!pod.source.is_empty(), "{}", pod.workload);
            assert!(["DaemonSet", "Deployment"].contains(&pod.kind));
        }
    }

    #[test]
    fn a_g4dn_xlarge_leaves_room_for_a_workspace_and_a_build() {
        let budget = node_budget(catalog::instance("g4dn.xlarge").unwrap());
        assert_eq!(budget.workspaces, Resources::new(3180, 12293));
        assert_eq!(
            budget
                .workspaces
                .plus(budget.image_build)
                .plus(budget.system_pods),
            budget.allocatable
        );
        assert_eq!(IMAGE_BUILD.cpu_quantity(), "250m");
        assert_eq!(IMAGE_BUILD.memory_quantity(), "1536Mi");
    }

    #[test]
    fn every_catalog_type_leaves_room_for_a_workspace() {
        for i in catalog::instances() {
            let room = workspace_room(i);
            assert!(
                room.cpu_millis >= 1000 && room.memory_mib >= 4096,
                "{}: {room}",
                i.name
            );
        }
    }
}
