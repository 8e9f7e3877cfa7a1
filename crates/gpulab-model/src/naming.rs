//! Names, labels and tags: how gpulab marks what it creates, in AWS and in Kubernetes, so that `down`
//! can find all of it again, and nothing else. One place, because provisioning, rendering and teardown
//! must agree.
//!
//! Names are derived from the lab's name, so another tool's cluster (or another machine's lab) may carry
//! the same ones. What proves a resource is this lab's is its ID: a random [`LabId`] made at the first
//! `up`, kept in the lab's state and put on everything the lab creates ([`LAB_ID_KEY`]). gpulab changes
//! or deletes nothing that lacks it.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::spec::LabSpec;

/// AWS tag and Kubernetes label naming the lab a resource belongs to (for people and the leftover
/// search; ownership is [`LAB_ID_KEY`]).
pub const LAB_KEY: &str = "gpulab.io/lab";
/// AWS tag and Kubernetes label holding the lab's ID: the one mark gpulab trusts as "this lab made it".
pub const LAB_ID_KEY: &str = "gpulab.io/lab-id";
/// AWS tag marking a resource as created by gpulab (never set on resources gpulab only uses).
pub const MANAGED_KEY: &str = "gpulab.io/managed";
/// The standard Kubernetes label for the tool managing an object.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// The Kubernetes resource name of NVIDIA GPUs.
pub const GPU_RESOURCE: &str = "nvidia.com/gpu";
/// Label on GPU nodes (GPU feature discovery's name, so clusters that run it match too).
pub const GPU_NODE_LABEL: (&str, &str) = ("nvidia.com/gpu.present", "true");
/// The taint that would keep pods without GPU requests off GPU nodes. gpulab's node group does not set
/// it: with one node group, EKS's CoreDNS and the EBS CSI controller (which tolerate no such taint)
/// would have nowhere to run. Pods gpulab makes tolerate it, for clusters whose GPU nodes carry it.
pub const GPU_TAINT: (&str, &str, &str) = ("nvidia.com/gpu", "true", "NoSchedule");

/// A lab's identity: 16 random hex digits, made at the lab's first `up` and kept in its state. Every
/// AWS resource the lab creates is tagged with it and every Kubernetes object labelled with it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct LabId(String);

/// What [`LabId::unassigned`] holds: a plan's stand-in, never equal to a real ID.
const UNASSIGNED: &str = "unassigned";

impl LabId {
    /// A fresh random ID (64 bits from the system's random source).
    pub fn generate() -> std::io::Result<LabId> {
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes).map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(LabId(bytes.iter().map(|b| format!("{b:02x}")).collect()))
    }

    /// The ID `text` holds, if it is one: 16 lowercase hex digits.
    pub fn parse(text: &str) -> Result<LabId, String> {
        if text.len() == 16
            && text
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            Ok(LabId(text.into()))
        } else {
            Err(format!(
                "{text:?} is not a lab ID (16 lowercase hex digits, e.g. 3f9a0c1d2e4b5a6f)"
            ))
        }
    }

    /// What a plan shows before `up` has made the ID; no resource ever carries it.
    pub fn unassigned() -> LabId {
        LabId(UNASSIGNED.into())
    }

    /// The ID as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `tags` (an AWS resource's tags, or a Kubernetes object's labels) carry this ID.
    pub fn owns<'a>(&self, mut tags: impl Iterator<Item = (&'a str, &'a str)>) -> bool {
        self.0 != UNASSIGNED && tags.any(|(k, v)| k == LAB_ID_KEY && v == self.0)
    }

    /// [`LabId::owns`] over a map of tags or labels.
    pub fn owns_map(&self, tags: Option<&BTreeMap<String, String>>) -> bool {
        tags.is_some_and(|t| self.owns(t.iter().map(|(k, v)| (k.as_str(), v.as_str()))))
    }
}

impl TryFrom<String> for LabId {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        LabId::parse(&text)
    }
}

impl From<LabId> for String {
    fn from(id: LabId) -> String {
        id.0
    }
}

impl fmt::Display for LabId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Labels on every Kubernetes object of the lab.
pub fn kube_labels(spec: &LabSpec, id: &LabId) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LAB_KEY.to_string(), spec.name.clone()),
        (LAB_ID_KEY.to_string(), id.to_string()),
        (MANAGED_BY_LABEL.to_string(), "gpulab".to_string()),
    ])
}

/// Tags on every AWS resource of the lab: the user's, then gpulab's (which win).
pub fn aws_tags(spec: &LabSpec, id: &LabId) -> BTreeMap<String, String> {
    let mut tags = spec.tags.clone();
    tags.insert(LAB_KEY.into(), spec.name.clone());
    tags.insert(LAB_ID_KEY.into(), id.to_string());
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
    /// The IAM role the EBS CSI driver's controller gets through EKS Pod Identity.
    pub ebs_csi_role: String,
    /// The IAM role in-cluster image builds (kaniko) get through EKS Pod Identity, to push to the lab's
    /// ECR repository.
    pub image_build_role: String,
    /// The IAM role the autostop agent gets through EKS Pod Identity: it may read and resize the lab's
    /// node group, nothing else ([`crate::autostop`]).
    pub autostop_role: String,
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
            ebs_csi_role: format!("{n}-ebs-csi-role"),
            image_build_role: format!("{n}-image-build-role"),
            autostop_role: format!("{n}-autostop-role"),
            node_security_group: format!("{n}-nodes"),
        }
    }
}

/// The label that selects the workspace pod (its value: the workload's name).
pub const WORKSPACE_LABEL: &str = "gpulab.io/workspace";

/// Names of the lab's Kubernetes objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeNames {
    /// The namespace.
    pub namespace: String,
    /// The workspace's StatefulSet (of one): it makes the pod again whenever it is gone.
    pub workload: String,
    /// The workspace pod, the StatefulSet's only one (`<workload>-0`).
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
    /// The service account in-cluster image builds run as (its Pod Identity association gives it the
    /// image-build role).
    pub image_build_account: String,
    /// The lab's own StorageClass (on EKS, when none is named): one per lab, so that no lab ever
    /// changes or deletes another's, or a class someone else made.
    pub storage_class: String,
    /// The secret with the token the workspace's activity reporter and the autostop agent share.
    pub activity_token: String,
    /// The ClusterIP service through which the autostop agent reaches the activity reporter.
    pub activity_service: String,
    /// The autostop agent's Deployment, and its service account, Role and RoleBinding.
    pub autostop_agent: String,
    /// The ConfigMap with the agent's program and settings.
    pub autostop_settings: String,
    /// The ConfigMap the agent keeps its state in (idle time, spend, stops).
    pub autostop_state: String,
}

impl KubeNames {
    /// The names for `spec`'s lab.
    pub fn new(spec: &LabSpec) -> Self {
        let pod = &spec.workspace.pod_name;
        KubeNames {
            namespace: spec.workspace.namespace.clone(),
            workload: pod.clone(),
            pod: format!("{pod}-0"),
            volume: format!("{pod}-workspace"),
            authorized_keys: format!("{pod}-ssh-keys"),
            host_key: format!("{pod}-ssh-host-key"),
            jupyter_token: format!("{pod}-jupyter"),
            setup: format!("{pod}-setup"),
            service: format!("{pod}-ssh"),
            load_balancer: format!("{pod}-public"),
            storage_class: format!("gpulab-{}-gp3", spec.name),
            image_build_account: "gpulab-image-build".into(),
            activity_token: format!("{pod}-activity"),
            activity_service: format!("{pod}-activity"),
            autostop_agent: "gpulab-autostop".into(),
            autostop_settings: format!("{pod}-autostop"),
            autostop_state: format!("{pod}-autostop-state"),
        }
    }
}
