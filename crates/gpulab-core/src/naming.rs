//! Names, labels and tags: how gpulab marks what it creates, in AWS and in Kubernetes, so that `down`
//! can find all of it again. One place, because provisioning, rendering and teardown must agree.

use std::collections::BTreeMap;

use crate::spec::LabSpec;

/// AWS tag and Kubernetes label naming the lab a resource belongs to.
pub const LAB_KEY: &str = "gpulab.io/lab";
/// AWS tag marking a resource as created by gpulab (never set on resources gpulab only uses).
pub const MANAGED_KEY: &str = "gpulab.io/managed";
/// The standard Kubernetes label for the tool managing an object.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// The Kubernetes resource name of NVIDIA GPUs.
pub const GPU_RESOURCE: &str = "nvidia.com/gpu";
/// Label on GPU nodes (GPU feature discovery's name, so clusters that run it match too).
pub const GPU_NODE_LABEL: (&str, &str) = ("nvidia.com/gpu.present", "true");
/// Taint on GPU nodes, so that only pods asking for GPUs land there.
pub const GPU_TAINT: (&str, &str, &str) = ("nvidia.com/gpu", "true", "NoSchedule");

/// Labels on every Kubernetes object of the lab.
pub fn kube_labels(spec: &LabSpec) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LAB_KEY.to_string(), spec.name.clone()),
        (MANAGED_BY_LABEL.to_string(), "gpulab".to_string()),
    ])
}

/// Tags on every AWS resource of the lab: the user's, then gpulab's (which win).
pub fn aws_tags(spec: &LabSpec) -> BTreeMap<String, String> {
    let mut tags = spec.tags.clone();
    tags.insert(LAB_KEY.into(), spec.name.clone());
    tags.insert(MANAGED_KEY.into(), "true".into());
    tags
}

/// Names of the lab's AWS resources, all derived from the lab's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsNames {
    /// The EKS cluster.
    pub cluster: String,
    /// The managed node group.
    pub node_group: String,
    /// The VPC's Name tag.
    pub vpc: String,
    /// The IAM role the EKS control plane assumes.
    pub cluster_role: String,
    /// The IAM role the GPU nodes assume.
    pub node_role: String,
    /// The security group of the nodes.
    pub node_security_group: String,
}

impl AwsNames {
    /// The names for `spec`'s lab.
    pub fn new(spec: &LabSpec) -> Self {
        let n = &spec.name;
        AwsNames {
            cluster: n.clone(),
            node_group: format!("{n}-gpu"),
            vpc: format!("{n}-vpc"),
            cluster_role: format!("{n}-cluster-role"),
            node_role: format!("{n}-node-role"),
            node_security_group: format!("{n}-nodes"),
        }
    }
}

/// Names of the lab's Kubernetes objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeNames {
    /// The namespace.
    pub namespace: String,
    /// The pod.
    pub pod: String,
    /// The `/workspace` PersistentVolumeClaim.
    pub volume: String,
    /// The secret with the user's public key (`authorized_keys`).
    pub authorized_keys: String,
    /// The secret with the pod's SSH host key.
    pub host_key: String,
    /// The secret with the Jupyter token.
    pub jupyter_token: String,
    /// The ConfigMap with the setup script.
    pub setup: String,
    /// The ClusterIP service.
    pub service: String,
    /// The LoadBalancer service (opt-in).
    pub load_balancer: String,
    /// The StorageClass gpulab creates when none is named.
    pub storage_class: String,
}

impl KubeNames {
    /// The names for `spec`'s lab.
    pub fn new(spec: &LabSpec) -> Self {
        let pod = &spec.workspace.pod_name;
        KubeNames {
            namespace: spec.workspace.namespace.clone(),
            pod: pod.clone(),
            volume: format!("{pod}-workspace"),
            authorized_keys: format!("{pod}-ssh-keys"),
            host_key: format!("{pod}-ssh-host-key"),
            jupyter_token: format!("{pod}-jupyter"),
            setup: format!("{pod}-setup"),
            service: format!("{pod}-ssh"),
            load_balancer: format!("{pod}-public"),
            storage_class: "gpulab-gp3".into(),
        }
    }
}
