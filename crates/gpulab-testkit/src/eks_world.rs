//! What EKS does inside a cluster when its API is called, played against the Kubernetes emulator: the
//! system workloads every cluster starts with, the nodes a managed node group brings and takes away,
//! and the workloads of the EBS CSI addon. moto keeps the AWS-side records; [`EksWorld`] sits in the
//! fault proxy in front of it and makes the cluster side follow, so that a lab meets the cluster EKS
//! would give it, not one that agrees with gpulab.
//!
//! Each modelled behaviour names its source:
//! - Default system workloads (EKS user guide, "Amazon EKS add-ons": a new cluster gets CoreDNS,
//!   kube-proxy and the Amazon VPC CNI, `aws-node`, as self-managed add-ons unless
//!   `bootstrapSelfManagedAddons` is false). CoreDNS runs 2 replicas that tolerate only
//!   `CriticalAddonsOnly` and the control-plane taint (the coredns add-on's default `tolerations`, as
//!   `kubectl -n kube-system get deploy coredns -o yaml` shows on EKS 1.29 to 1.33); kube-proxy and
//!   aws-node are DaemonSets that tolerate every taint (`operator: Exists`).
//! - Managed node groups (EKS API reference, CreateNodegroup/UpdateNodegroupConfig): `desiredSize`
//!   nodes of the instance type, spread over the given subnets' zones, carrying the group's labels and
//!   taints plus `eks.amazonaws.com/nodegroup` and `eks.amazonaws.com/capacityType`; a scaled-down node
//!   is terminated, and scaling up brings new instances with new names (`ip-…` from their addresses).
//! - The EBS CSI addon (kubernetes-sigs/aws-ebs-csi-driver, charts/aws-ebs-csi-driver/values.yaml):
//!   the `ebs-csi-controller` Deployment (2 replicas, tolerating `CriticalAddonsOnly` and `NoExecute`
//!   for 300 s, no other taint), the `ebs-csi-node` DaemonSet (tolerates everything), the `CSIDriver`
//!   `ebs.csi.aws.com`, and the `ebs-csi-controller-sa` service account, which gets AWS credentials only
//!   through an EKS Pod Identity association (served by the `eks-pod-identity-agent` addon) or an IRSA
//!   role annotation: on AL2023 managed nodes IMDSv2's hop limit is 1, so pods cannot use the node role
//!   (EKS user guide, "Store an application in EBS": "the driver requires IAM permissions").
//! - Requests: every system container carries the requests of its upstream manifest (cited where each
//!   is made), and a node's allocatable is what kubelet leaves after the EKS AMI's reservations
//!   (`Kubelet`), so a workspace that asks for more than is left stays Pending with the
//!   scheduler's "Insufficient cpu", as on EKS.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use crate::fault_proxy::{Intercept, ProxyRequest, ProxyResponse};
use crate::kube::{KubeHandle, NodeSpec};
use crate::load_balancers::EmulatedLoadBalancers;
use crate::moto::{EksGaps, subnet_zones};
use crate::zones::ZoneWorld;

pub use crate::kube::POD_IDENTITY_MARK;

/// What kubelet on an EKS AL2023 node reports, as nodeadm configures it (awslabs/amazon-eks-ami,
/// `nodeadm/internal/kubelet/config.go`): `kubeReserved.cpu` 6% of the first core, 1% of the second,
/// 0.5% of the third and fourth, 0.25% of each core above (`getCPUMillicoresToReserve`);
/// `kubeReserved.memory` 11 MiB × maxPods + 255 MiB (`getMemoryMebibytesToReserve`), maxPods the VPC
/// CNI's ENI limit (`CalcMaxPods`); `evictionHard` `memory.available: 100Mi`. Memory capacity is the
/// kernel's `MemTotal`, some 7.5% below the instance's nominal memory (Karpenter's
/// `VM_MEMORY_OVERHEAD_PERCENT` default). Written out here rather than taken from gpulab-core, so that
/// the world does not agree with the code by construction; on a g4dn.xlarge it gives the 3920m CPU
/// and 14481Mi that Karpenter's instance-type reference lists.
struct Kubelet {
    memory_mib: u64,
    allocatable_cpu_millis: u64,
    allocatable_memory_mib: u64,
}

impl Kubelet {
    fn of(cpus: u32, memory_gib: f64, max_pods: u32) -> Self {
        let millis = u64::from(cpus) * 1000;
        let mut reserved_cpu = 0;
        for (start, end, hundredths_of_percent) in [
            (0, 1000, 600),
            (1000, 2000, 100),
            (2000, 4000, 50),
            (4000, u64::MAX, 25),
        ] {
            if millis > start {
                reserved_cpu += (millis.min(end) - start) * hundredths_of_percent / 10_000;
            }
        }
        let memory_mib = (memory_gib * 1024.0 * 0.925) as u64;
        let reserved_memory = 11 * u64::from(max_pods) + 255 + 100;
        Kubelet {
            memory_mib,
            allocatable_cpu_millis: millis - reserved_cpu,
            allocatable_memory_mib: memory_mib - reserved_memory,
        }
    }
}

/// One managed node group as the cluster sees it.
#[derive(Debug, Clone)]
struct NodeGroup {
    instance_type: String,
    zones: Vec<String>,
    labels: BTreeMap<String, String>,
    taints: Vec<(String, String, String)>,
    capacity: String,
    nodes: Vec<String>,
}

#[derive(Default)]
struct World {
    node_groups: BTreeMap<(String, String), NodeGroup>,
    next_address: u32,
}

/// EKS's side effects on the emulated cluster, in front of [`EksGaps`] (which answers the EKS calls
/// moto lacks).
pub struct EksWorld {
    /// The region's zones as the account sees them (Local Zones, control-plane capacity).
    pub zones: ZoneWorld,
    /// The NLBs the cluster's service controller keeps in moto for LoadBalancer Services.
    pub load_balancers: Arc<EmulatedLoadBalancers>,
    gaps: Arc<EksGaps>,
    kube: KubeHandle,
    moto: SocketAddr,
    world: Mutex<World>,
}

impl EksWorld {
    /// The world of the cluster behind `kube`, with AWS in moto at `moto`.
    pub fn new(gaps: Arc<EksGaps>, kube: KubeHandle, moto: SocketAddr) -> Self {
        let load_balancers = Arc::new(EmulatedLoadBalancers::new(moto));
        kube.set_load_balancers(load_balancers.clone());
        EksWorld {
            zones: ZoneWorld::new(moto),
            load_balancers,
            gaps,
            kube,
            moto,
            world: Mutex::new(World::default()),
        }
    }

    /// The nodes node group `group` of `cluster` runs now.
    pub fn nodes(&self, cluster: &str, group: &str) -> Vec<String> {
        let world = self.world.lock().expect("eks world lock");
        world
            .node_groups
            .get(&(cluster.to_string(), group.to_string()))
            .map(|g| g.nodes.clone())
            .unwrap_or_default()
    }

    /// Replace node `name` of its node group by a new instance, as a health check or a spot
    /// interruption does: the old node goes (and its pods with it), a new one of another name comes.
    pub fn replace_node(&self, name: &str) {
        let node = self.replacement(name);
        self.kube.remove_node(name);
        self.kube.add_node(node);
    }

    /// A spot interruption of node `name` as a managed node group handles it (EKS User Guide, "Managed
    /// node groups: capacity types, Spot"; Capacity Rebalancing is on for every spot node group): on the
    /// rebalance recommendation EKS launches a replacement, waits for it to join, then cordons and drains
    /// the old node (evictions: preStop hooks and grace periods run), and the instance goes. Returns when
    /// the old node is gone; `drain` bounds the wait for its pods.
    pub async fn interrupt_spot(&self, name: &str, drain: std::time::Duration) {
        let node = self.replacement(name);
        self.kube.add_node(node);
        self.kube.drain_node(name);
        let deadline = tokio::time::Instant::now() + drain;
        while !self.kube.pods_on(name).is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        self.kube.remove_node(name);
    }

    /// The instance that takes node `name`'s place in its node group (and zone, where its volume is).
    fn replacement(&self, name: &str) -> NodeSpec {
        let mut world = self.world.lock().expect("eks world lock");
        let Some(key) = world
            .node_groups
            .iter()
            .find(|(_, g)| g.nodes.iter().any(|n| n == name))
            .map(|(k, _)| k.clone())
        else {
            panic!("no node group runs {name}");
        };
        let address = world.next_address;
        world.next_address += 1;
        let group = world.node_groups.get_mut(&key).expect("the group");
        let index = group.nodes.iter().position(|n| n == name).expect("listed");
        let node = self.node_spec(&key.1, group, index, address);
        group.nodes[index] = node.name.clone();
        node
    }

    fn node_spec(
        &self,
        group_name: &str,
        group: &NodeGroup,
        index: usize,
        address: u32,
    ) -> NodeSpec {
        let zone = &group.zones[index % group.zones.len().max(1)];
        let region = zone.trim_end_matches(|c: char| c.is_ascii_lowercase());
        let (third, fourth) = (address / 250, 10 + address % 250);
        let name = format!("ip-10-0-{third}-{fourth}.{region}.compute.internal");
        let instance = gpulab_core::catalog::instance(&group.instance_type);
        let (cpus, memory_gib, gpus, max_pods) = instance
            .map(|i| (i.vcpus, i.memory_gib, i.gpu_count, i.max_pods))
            .unwrap_or((4, 16.0, 1, 29));
        let kubelet = Kubelet::of(cpus, memory_gib, max_pods);
        let mut node = NodeSpec::cpu(&name)
            .with_capacity(&cpus.to_string(), &format!("{}Mi", kubelet.memory_mib))
            .with_allocatable(
                &format!("{}m", kubelet.allocatable_cpu_millis),
                &format!("{}Mi", kubelet.allocatable_memory_mib),
            )
            .with_max_pods(max_pods)
            .with_gpus(u64::from(gpus))
            .in_zone(zone)
            .with_label("node.kubernetes.io/instance-type", &group.instance_type)
            .with_label("eks.amazonaws.com/nodegroup", group_name)
            .with_label("eks.amazonaws.com/capacityType", &group.capacity);
        for (k, v) in &group.labels {
            node = node.with_label(k, v);
        }
        for (key, value, effect) in &group.taints {
            node = node.with_taint(key, value, effect);
        }
        node
    }

    /// Bring `group` to `desired` nodes: the newest go first when shrinking, new names when growing.
    fn scale(&self, world: &mut World, key: &(String, String), desired: usize) {
        loop {
            let Some(group) = world.node_groups.get(key) else {
                return;
            };
            match group.nodes.len().cmp(&desired) {
                std::cmp::Ordering::Equal => return,
                std::cmp::Ordering::Greater => {
                    let group = world.node_groups.get_mut(key).expect("the group");
                    let gone = group.nodes.pop().expect("a node");
                    self.kube.remove_node(&gone);
                }
                std::cmp::Ordering::Less => {
                    let address = world.next_address;
                    world.next_address += 1;
                    let group = world.node_groups.get_mut(key).expect("the group");
                    let node = self.node_spec(&key.1, group, group.nodes.len(), address);
                    group.nodes.push(node.name.clone());
                    self.kube.add_node(node);
                }
            }
        }
    }

    fn observe(&self, req: &ProxyRequest) {
        let parts: Vec<String> = req
            .path
            .trim_start_matches('/')
            .split('/')
            .map(|p| p.to_string())
            .collect();
        let p: Vec<&str> = parts.iter().map(String::as_str).collect();
        let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        let mut world = self.world.lock().expect("eks world lock");
        match (req.method.as_str(), p.as_slice()) {
            ("POST", ["clusters"]) => {
                let subnets = body["resourcesVpcConfig"]["subnetIds"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect();
                self.load_balancers
                    .cluster_created(body["name"].as_str().unwrap_or_default(), subnets);
                if body["bootstrapSelfManagedAddons"] != json!(false) {
                    self.system_workloads();
                }
            }
            ("DELETE", ["clusters", cluster]) => self.load_balancers.cluster_deleted(cluster),
            ("POST", ["clusters", cluster, "node-groups"]) => {
                let name = body["nodegroupName"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let key = (cluster.to_string(), name);
                if world.node_groups.contains_key(&key) {
                    return;
                }
                let subnets: Vec<String> = body["subnets"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect();
                let zones_by_subnet = subnet_zones(self.moto, &subnets);
                let mut zones: Vec<String> = subnets
                    .iter()
                    .filter_map(|s| zones_by_subnet.get(s).cloned())
                    .collect();
                zones.dedup();
                if zones.is_empty() {
                    zones.push("us-west-2a".into());
                }
                let labels = body["labels"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                            .collect()
                    })
                    .unwrap_or_default();
                // EKS's taint effects are NO_SCHEDULE, NO_EXECUTE, PREFER_NO_SCHEDULE.
                let taints = body["taints"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|t| {
                        let effect = match t["effect"].as_str().unwrap_or_default() {
                            "NO_EXECUTE" => "NoExecute",
                            "PREFER_NO_SCHEDULE" => "PreferNoSchedule",
                            _ => "NoSchedule",
                        };
                        (
                            t["key"].as_str().unwrap_or_default().to_string(),
                            t["value"].as_str().unwrap_or_default().to_string(),
                            effect.to_string(),
                        )
                    })
                    .collect();
                let group = NodeGroup {
                    instance_type: body["instanceTypes"][0]
                        .as_str()
                        .unwrap_or("g4dn.xlarge")
                        .to_string(),
                    zones,
                    labels,
                    taints,
                    capacity: body["capacityType"].as_str().unwrap_or("ON_DEMAND").into(),
                    nodes: Vec::new(),
                };
                world.node_groups.insert(key.clone(), group);
                let desired = body["scalingConfig"]["desiredSize"].as_u64().unwrap_or(1);
                self.scale(&mut world, &key, desired as usize);
            }
            ("POST", ["clusters", cluster, "node-groups", group, "update-config"]) => {
                if let Some(desired) = body["scalingConfig"]["desiredSize"].as_u64() {
                    let key = (cluster.to_string(), group.to_string());
                    self.scale(&mut world, &key, desired as usize);
                }
            }
            ("DELETE", ["clusters", cluster, "node-groups", group]) => {
                let key = (cluster.to_string(), group.to_string());
                self.scale(&mut world, &key, 0);
                world.node_groups.remove(&key);
            }
            ("POST", ["clusters", _, "addons"]) => match body["addonName"].as_str() {
                Some("aws-ebs-csi-driver") => self.ebs_csi(),
                Some("eks-pod-identity-agent") => self.pod_identity_agent(),
                _ => {}
            },
            ("DELETE", ["clusters", _, "addons", "aws-ebs-csi-driver"]) => {
                self.kube
                    .delete("deployments", "kube-system", "ebs-csi-controller");
                self.kube
                    .delete("daemonsets", "kube-system", "ebs-csi-node");
                self.kube.delete("csidrivers", "", "ebs.csi.aws.com");
            }
            ("DELETE", ["clusters", _, "addons", "eks-pod-identity-agent"]) => {
                self.kube
                    .delete("daemonsets", "kube-system", "eks-pod-identity-agent");
            }
            _ => {}
        }
    }

    /// CoreDNS, kube-proxy and aws-node, as a new EKS cluster starts with them.
    fn system_workloads(&self) {
        let labels = |app: &str| json!({"k8s-app": app, "eks.amazonaws.com/component": app});
        self.kube.create(
            "deployments",
            json!({
                "metadata": {"name": "coredns", "namespace": "kube-system", "labels": labels("kube-dns")},
                "spec": {
                    "replicas": 2,
                    "selector": {"matchLabels": {"k8s-app": "kube-dns"}},
                    "template": {
                        "metadata": {"labels": labels("kube-dns")},
                        "spec": {
                            "priorityClassName": "system-cluster-critical",
                            "serviceAccountName": "coredns",
                            "tolerations": [
                                {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"},
                                {"key": "CriticalAddonsOnly", "operator": "Exists"},
                            ],
                            "containers": [{
                                "name": "coredns",
                                "image": "602401143452.dkr.ecr.us-west-2.amazonaws.com/eks/coredns:v1.11.4-eksbuild.2",
                                "resources": {"requests": {"cpu": "100m", "memory": "70Mi"}, "limits": {"memory": "170Mi"}},
                            }],
                        },
                    },
                },
            }),
        );
        let ecr = "602401143452.dkr.ecr.us-west-2.amazonaws.com";
        // kube-proxy: EKS's DaemonSet requests 100m CPU and nothing else (`kubectl -n kube-system get ds
        // kube-proxy -o yaml`, as kubernetes/kubernetes cluster/addons/kube-proxy sets it).
        self.daemon_set(
            "kube-proxy",
            json!([]),
            json!([{"name": "kube-proxy", "image": format!("{ecr}/eks/kube-proxy:v1.33.0-minimal-eksbuild.2"),
                "resources": {"requests": {"cpu": "100m"}}}]),
        );
        // aws-node: the VPC CNI and its network policy agent, each requesting the chart's 25m CPU, and
        // an init container that installs the CNI binaries (aws/amazon-vpc-cni-k8s
        // charts/aws-vpc-cni/values.yaml `resources.requests.cpu: 25m`; templates/daemonset.yaml gives
        // `aws-eks-nodeagent` and the init container `default .Values.resources`).
        let cni = format!("{ecr}/amazon-k8s-cni:v1.19.5-eksbuild.1");
        self.daemon_set(
            "aws-node",
            json!([{"name": "aws-vpc-cni-init", "image": format!("{ecr}/amazon-k8s-cni-init:v1.19.5-eksbuild.1"),
                "resources": {"requests": {"cpu": "25m"}}}]),
            json!([
                {"name": "aws-node", "image": cni, "resources": {"requests": {"cpu": "25m"}}},
                {"name": "aws-eks-nodeagent", "image": format!("{ecr}/amazon/aws-network-policy-agent:v1.2.1-eksbuild.1"),
                    "resources": {"requests": {"cpu": "25m"}}},
            ]),
        );
    }

    /// A kube-system DaemonSet named `name` (label `k8s-app`), on every node whatever its taints, as
    /// EKS's own system DaemonSets are.
    fn daemon_set(&self, name: &str, init_containers: Value, containers: Value) {
        self.kube.create(
            "daemonsets",
            json!({
                "metadata": {"name": name, "namespace": "kube-system", "labels": {"k8s-app": name}},
                "spec": {
                    "selector": {"matchLabels": {"k8s-app": name}},
                    "template": {
                        "metadata": {"labels": {"k8s-app": name}},
                        "spec": {
                            "priorityClassName": "system-node-critical",
                            "hostNetwork": true,
                            "tolerations": [{"operator": "Exists"}],
                            "initContainers": init_containers,
                            "containers": containers,
                        },
                    },
                },
            }),
        );
    }

    /// The EBS CSI addon's workloads; its controller's service account gets credentials once a Pod
    /// Identity association names it and the agent runs (see `handle`).
    fn ebs_csi(&self) {
        self.kube.create(
            "serviceaccounts",
            json!({"metadata": {"name": "ebs-csi-controller-sa", "namespace": "kube-system"}}),
        );
        self.kube.create(
            "csidrivers",
            json!({"metadata": {"name": "ebs.csi.aws.com"}, "spec": {"attachRequired": true, "podInfoOnMount": false}}),
        );
        let image = "602401143452.dkr.ecr.us-west-2.amazonaws.com/eks/aws-ebs-csi-driver:v1.44.0";
        let controller_container = |name: &str, image: &str| {
            json!({"name": name, "image": image,
                "resources": {"requests": {"cpu": "10m", "memory": "40Mi"}, "limits": {"memory": "256Mi"}}})
        };
        let sidecar = |name: &str, image: &str| {
            json!({"name": name, "image": image,
                "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "32Mi"}}})
        };
        self.kube.create(
            "deployments",
            json!({
                "metadata": {"name": "ebs-csi-controller", "namespace": "kube-system", "labels": {"app": "ebs-csi-controller"}},
                "spec": {
                    "replicas": 2,
                    "selector": {"matchLabels": {"app": "ebs-csi-controller"}},
                    "template": {
                        "metadata": {"labels": {"app": "ebs-csi-controller"}},
                        "spec": {
                            "priorityClassName": "system-cluster-critical",
                            "serviceAccountName": "ebs-csi-controller-sa",
                            "tolerations": [
                                {"key": "CriticalAddonsOnly", "operator": "Exists"},
                                {"effect": "NoExecute", "operator": "Exists", "tolerationSeconds": 300},
                            ],
                            // kubernetes-sigs/aws-ebs-csi-driver charts/aws-ebs-csi-driver:
                            // values.yaml `controller.resources` (10m, 40Mi; limit 256Mi), which
                            // templates/controller.yaml also gives csi-provisioner, csi-attacher and
                            // csi-resizer (`default .Values.controller.resources ...`); the liveness
                            // probe's default is 10m, 32Mi. csi-snapshotter runs only where the
                            // snapshot CRDs exist, which a new EKS cluster lacks.
                            "containers": [
                                controller_container("ebs-plugin", image),
                                controller_container("csi-provisioner", "public.ecr.aws/csi-components/csi-provisioner:v5.3.0-eksbuild.4"),
                                controller_container("csi-attacher", "public.ecr.aws/csi-components/csi-attacher:v4.9.0-eksbuild.4"),
                                controller_container("csi-resizer", "public.ecr.aws/csi-components/csi-resizer:v1.14.0-eksbuild.4"),
                                sidecar("liveness-probe", "public.ecr.aws/csi-components/livenessprobe:v2.16.0-eksbuild.5"),
                            ],
                        },
                    },
                },
            }),
        );
        self.kube.create(
            "daemonsets",
            json!({
                "metadata": {"name": "ebs-csi-node", "namespace": "kube-system", "labels": {"app": "ebs-csi-node"}},
                "spec": {
                    "selector": {"matchLabels": {"app": "ebs-csi-node"}},
                    "template": {
                        "metadata": {"labels": {"app": "ebs-csi-node"}},
                        "spec": {
                            "priorityClassName": "system-node-critical",
                            "tolerations": [{"operator": "Exists"}],
                            // values.yaml `node.resources` (10m, 40Mi); templates/_node.tpl's
                            // sidecar defaults (10m, 32Mi; limit 32Mi).
                            "containers": [
                                {"name": "ebs-plugin", "image": image,
                                    "resources": {"requests": {"cpu": "10m", "memory": "40Mi"}, "limits": {"memory": "256Mi"}}},
                                sidecar("node-driver-registrar", "public.ecr.aws/csi-components/csi-node-driver-registrar:v2.14.0-eksbuild.4"),
                                sidecar("liveness-probe", "public.ecr.aws/csi-components/livenessprobe:v2.16.0-eksbuild.5"),
                            ],
                        },
                    },
                },
            }),
        );
    }

    /// The Pod Identity agent: a DaemonSet on every node (it serves credentials on the node's
    /// link-local address, so a pod needs no IMDS hop).
    fn pod_identity_agent(&self) {
        self.kube.create(
            "daemonsets",
            json!({
                "metadata": {"name": "eks-pod-identity-agent", "namespace": "kube-system", "labels": {"app.kubernetes.io/name": "eks-pod-identity-agent"}},
                "spec": {
                    "selector": {"matchLabels": {"app.kubernetes.io/name": "eks-pod-identity-agent"}},
                    "template": {
                        "metadata": {"labels": {"app.kubernetes.io/name": "eks-pod-identity-agent"}},
                        "spec": {
                            "priorityClassName": "system-node-critical",
                            "hostNetwork": true,
                            "tolerations": [{"operator": "Exists"}],
                            // aws/eks-pod-identity-agent charts/eks-pod-identity-agent: values.yaml
                            // `resources: {}` (no requests) for the agent; its init container
                            // sets up the link-local address.
                            "initContainers": [{"name": "eks-pod-identity-agent-init",
                                "image": "602401143452.dkr.ecr.us-west-2.amazonaws.com/eks/eks-pod-identity-agent:v0.1.29"}],
                            "containers": [{"name": "eks-pod-identity-agent",
                                "image": "602401143452.dkr.ecr.us-west-2.amazonaws.com/eks/eks-pod-identity-agent:v0.1.29"}],
                        },
                    },
                },
            }),
        );
    }
}

impl Intercept for EksWorld {
    fn handle(&self, req: &ProxyRequest) -> Option<ProxyResponse> {
        if let Some(answer) = self.zones.handle(req) {
            return Some(answer);
        }
        if req.service != "eks" {
            return None;
        }
        self.observe(req);
        let answer = self.gaps.handle(req);
        // The EBS CSI controller's credentials follow its Pod Identity association, however it came
        // (with the addon, an addon update, or CreatePodIdentityAssociation).
        if let Some(cluster) = req.path.trim_start_matches('/').split('/').nth(1) {
            let role = self
                .gaps
                .pod_identity_role(cluster, "kube-system", "ebs-csi-controller-sa");
            self.kube.annotate(
                "serviceaccounts",
                "kube-system",
                "ebs-csi-controller-sa",
                POD_IDENTITY_MARK,
                role.as_deref(),
            );
        }
        answer
    }
}
