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

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use crate::fault_proxy::{Intercept, ProxyRequest, ProxyResponse};
use crate::kube::{KubeHandle, NodeSpec};
use crate::moto::{EksGaps, subnet_zones};

/// The service account annotation the emulated Pod Identity agent sets once an association exists (a
/// test-side mark standing in for the credentials the agent would serve).
pub const POD_IDENTITY_MARK: &str = "testkit.gpulab.io/pod-identity-role";

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
    gaps: Arc<EksGaps>,
    kube: KubeHandle,
    moto: SocketAddr,
    world: Mutex<World>,
}

impl EksWorld {
    /// The world of the cluster behind `kube`, with AWS in moto at `moto`.
    pub fn new(gaps: Arc<EksGaps>, kube: KubeHandle, moto: SocketAddr) -> Self {
        EksWorld {
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
        let mut world = self.world.lock().expect("eks world lock");
        let Some(key) = world
            .node_groups
            .iter()
            .find(|(_, g)| g.nodes.iter().any(|n| n == name))
            .map(|(k, _)| k.clone())
        else {
            panic!("no node group runs {name}");
        };
        self.kube.remove_node(name);
        let address = world.next_address;
        world.next_address += 1;
        let group = world.node_groups.get_mut(&key).expect("the group");
        group.nodes.retain(|n| n != name);
        let index = group.nodes.len();
        let node = self.node_spec(&key.1, group, index, address);
        group.nodes.push(node.name.clone());
        self.kube.add_node(node);
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
        let (cpus, memory_gib, gpus) = instance
            .map(|i| (i.vcpus, i.memory_gib, i.gpu_count))
            .unwrap_or((4, 16.0, 1));
        let mut node = NodeSpec::cpu(&name)
            .with_capacity(
                &cpus.to_string(),
                &format!("{}Mi", (memory_gib * 1024.0) as u64),
            )
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
            ("POST", ["clusters"]) if body["bootstrapSelfManagedAddons"] != json!(false) => {
                self.system_workloads();
            }
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
        for (name, image) in [
            (
                "kube-proxy",
                "602401143452.dkr.ecr.us-west-2.amazonaws.com/eks/kube-proxy:v1.33.0-minimal-eksbuild.2",
            ),
            (
                "aws-node",
                "602401143452.dkr.ecr.us-west-2.amazonaws.com/amazon-k8s-cni:v1.19.5-eksbuild.1",
            ),
        ] {
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
                                "containers": [{"name": name, "image": image,
                                    "resources": {"requests": {"cpu": if name == "aws-node" { "25m" } else { "100m" }}}}],
                            },
                        },
                    },
                }),
            );
        }
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
                            "containers": [{"name": "ebs-plugin", "image": image,
                                "resources": {"requests": {"cpu": "10m", "memory": "40Mi"}, "limits": {"memory": "256Mi"}}}],
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
                            "containers": [{"name": "ebs-plugin", "image": image,
                                "resources": {"requests": {"cpu": "10m", "memory": "40Mi"}}}],
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
                            "containers": [{"name": "eks-pod-identity-agent",
                                "image": "602401143452.dkr.ecr.us-west-2.amazonaws.com/eks/eks-pod-identity-agent:v0.1.29",
                                "resources": {"requests": {"cpu": "25m"}}}],
                        },
                    },
                },
            }),
        );
    }
}

impl Intercept for EksWorld {
    fn handle(&self, req: &ProxyRequest) -> Option<ProxyResponse> {
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
