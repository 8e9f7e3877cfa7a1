//! The plan: everything `up` would create, in AWS and in the cluster, and what it would cost, worked
//! out from a validated spec alone: no credentials, no network.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::catalog;
use crate::cost::CostEstimate;
use crate::manifests::workspace::{self, VolumeClass, WorkspaceSecrets};
use crate::manifests::{KubeObject, device_plugin};
use crate::naming::{self, AwsNames, GPU_NODE_LABEL, KubeNames, LabId};
use crate::resources::ResourceKind;
use crate::spec::{AccessMode, SshKey, ValidSpec};

// What `up` makes on AWS; re-exported here, where readers of the plan look.
pub use crate::aws::{
    CLUSTER_POLICY, EBS_CSI_POLICY, EBS_CSI_SERVICE_ACCOUNT, IMAGE_BUILD_POLICY, NODE_AMI_TYPE,
    NODE_POLICIES, POD_IDENTITY_PRINCIPAL, SUBNET_CIDRS, VPC_CIDR, image_build_policy,
};

/// One AWS resource `up` would create.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlannedResource {
    /// Its kind, shown (and serialized) as its ARN's service and type, e.g. "ec2:vpc".
    #[serde(serialize_with = "arn_type")]
    pub kind: ResourceKind,
    /// Its name (the Name tag, or the resource's name).
    pub name: String,
    /// What it is set up with.
    pub detail: String,
}

impl PlannedResource {
    /// Its kind as its ARN's service and type ("ec2:vpc", "iam:role"), as the plan shows it.
    pub fn kind_name(&self) -> &str {
        self.kind.arn_type().unwrap_or(self.kind.name())
    }
}

fn arn_type<S: serde::Serializer>(kind: &ResourceKind, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(kind.arn_type().unwrap_or(kind.name()))
}

/// Everything `up` would do, and its cost.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// The lab's name.
    pub lab: String,
    /// The region.
    pub region: String,
    /// The GPU node type and its catalog entry.
    pub instance: &'static catalog::InstanceType,
    /// AWS resources, in creation order; `down` deletes them in reverse.
    pub aws: Vec<PlannedResource>,
    /// Tags on every AWS resource.
    pub tags: BTreeMap<String, String>,
    /// Kubernetes objects, in apply order: the device plugin, then the workspace.
    pub kubernetes: Vec<KubeObject>,
    /// What the lab costs.
    pub cost: CostEstimate,
    /// Idle autostop, the budget and the agent.
    pub autostop: AutostopPlan,
    /// Things to know before `up`.
    pub warnings: Vec<String>,
}

impl Plan {
    /// The plan for `spec`.
    pub fn new(spec: &ValidSpec) -> Self {
        let s = &spec.spec;
        let names = AwsNames::new(s);
        let kube_names = KubeNames::new(s);
        let instance = spec.instance;
        let mut aws = Vec::new();
        let mut add = |kind, name: &str, detail: String| {
            aws.push(PlannedResource {
                kind,
                name: name.into(),
                detail,
            })
        };

        add(
            ResourceKind::Vpc,
            &names.vpc,
            format!("{VPC_CIDR}, DNS hostnames on; no NAT gateway"),
        );
        for (i, cidr) in SUBNET_CIDRS.iter().enumerate() {
            add(
                ResourceKind::Subnet,
                &format!("{}-public-{}", s.name, i + 1),
                if i == 0 {
                    format!(
                        "{cidr}, public, in the first standard availability zone offering {} (the nodes' zone)",
                        instance.name
                    )
                } else {
                    format!(
                        "{cidr}, public, in another standard availability zone (the control plane needs two; EKS's accepted zones when it refuses one)"
                    )
                },
            );
        }
        add(
            ResourceKind::InternetGateway,
            &format!("{}-igw", s.name),
            "attached to the VPC".into(),
        );
        add(
            ResourceKind::RouteTable,
            &format!("{}-public", s.name),
            "0.0.0.0/0 via the internet gateway; both subnets".into(),
        );
        add(
            ResourceKind::SecurityGroup,
            &names.node_security_group,
            "control plane and nodes; inbound only from itself (no port open to the internet)"
                .into(),
        );
        add(
            ResourceKind::IamRole,
            &names.cluster_role,
            format!(
                "assumed by eks.amazonaws.com; {}",
                short_policy(CLUSTER_POLICY)
            ),
        );
        add(
            ResourceKind::IamRole,
            &names.node_role,
            format!(
                "assumed by ec2.amazonaws.com; {}",
                NODE_POLICIES.map(short_policy).join(", ")
            ),
        );
        add(
            ResourceKind::IamRole,
            &names.ebs_csi_role,
            format!(
                "assumed by {POD_IDENTITY_PRINCIPAL} for {}/{}; {}",
                EBS_CSI_SERVICE_ACCOUNT.0,
                EBS_CSI_SERVICE_ACCOUNT.1,
                short_policy(EBS_CSI_POLICY)
            ),
        );
        add(
            ResourceKind::IamRole,
            &names.image_build_role,
            format!(
                "assumed by {POD_IDENTITY_PRINCIPAL} for in-cluster image builds; inline {IMAGE_BUILD_POLICY} (push to this lab's ECR repository only)"
            ),
        );
        add(
            ResourceKind::IamRole,
            &names.autostop_role,
            format!(
                "assumed by {POD_IDENTITY_PRINCIPAL} for the autostop agent; inline {} ({} on {} only)",
                crate::autostop::AGENT_POLICY,
                crate::autostop::AGENT_EKS_ACTIONS.join(", "),
                crate::autostop::node_group_arn_pattern(spec),
            ),
        );
        let version = s
            .kubernetes_version
            .as_deref()
            .unwrap_or("version: EKS's current default");
        let api_cidrs = if s.access.api_cidrs.is_empty() {
            "the address `up` runs from (a /32)".to_string()
        } else {
            s.access
                .api_cidrs
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        add(
            ResourceKind::EksCluster,
            &names.cluster,
            format!(
                "Kubernetes {version}; API authentication mode API_AND_CONFIG_MAP; public API endpoint admits only {api_cidrs}"
            ),
        );
        add(
            ResourceKind::EksAccessEntry,
            &names.cluster,
            "the caller, with AmazonEKSClusterAdminPolicy".into(),
        );
        add(
            ResourceKind::EksAddon,
            "eks-pod-identity-agent",
            "serves Pod Identity credentials on every node; EKS's default version for the cluster's Kubernetes version".into(),
        );
        add(
            ResourceKind::EksAddon,
            "aws-ebs-csi-driver",
            format!(
                "so the /workspace volume can be provisioned; EKS's default version for the cluster's Kubernetes version; Pod Identity association {}/{} -> {}",
                EBS_CSI_SERVICE_ACCOUNT.0, EBS_CSI_SERVICE_ACCOUNT.1, names.ebs_csi_role
            ),
        );
        add(
            ResourceKind::EksPodIdentityAssociation,
            &kube_names.image_build_account,
            format!(
                "{}/{} -> {}, for `gpulab image build` in the cluster",
                s.workspace.namespace, kube_names.image_build_account, names.image_build_role
            ),
        );
        add(
            ResourceKind::EksPodIdentityAssociation,
            &kube_names.autostop_agent,
            format!(
                "{}/{} -> {}, for the autostop agent (it runs only while autostop or a budget is on)",
                s.workspace.namespace, kube_names.autostop_agent, names.autostop_role
            ),
        );
        let spot_alternatives: Vec<&str> = if s.nodes.capacity == crate::spec::Capacity::Spot {
            instance
                .spot_alternatives(&s.region)
                .iter()
                .map(|i| i.name)
                .collect()
        } else {
            Vec::new()
        };
        add(
            ResourceKind::EksNodegroup,
            &names.node_group,
            format!(
                "{}{} {}, {} node(s) (min {}, max {}) in the first subnet's zone (where /workspace's volume lives), {} GiB gp3 root disk, AMI type {NODE_AMI_TYPE}, label {}={}, no taint (it is the only node group: CoreDNS and the EBS CSI controller run there too)",
                instance.name,
                if spot_alternatives.is_empty() {
                    String::new()
                } else {
                    format!(
                        " (or {}, the same GPU, where offered in the zone: more spot pools)",
                        spot_alternatives.join(", ")
                    )
                },
                s.nodes.capacity,
                s.nodes.desired,
                s.nodes.min,
                s.nodes.max,
                s.nodes.disk_gib,
                GPU_NODE_LABEL.0,
                GPU_NODE_LABEL.1,
            ),
        );
        add(
            ResourceKind::EbsVolume,
            &kube_names.volume,
            format!(
                "{} gp3, encrypted, created by the EBS CSI driver for /workspace",
                spec.volume_size
            ),
        );
        if s.access.mode == AccessMode::LoadBalancer {
            add(
                ResourceKind::LoadBalancer,
                &kube_names.load_balancer,
                format!(
                    "created by Kubernetes for SSH (Jupyter stays behind the API server); admits only {}",
                    s.access.allowed_cidrs_text()
                ),
            );
        }

        // `up` makes the lab's ID; a plan shows where it goes.
        let id = LabId::unassigned();
        let mut kubernetes = device_plugin::manifests(spec, &id);
        kubernetes.extend(workspace::manifests(
            spec,
            &id,
            &VolumeClass::choose(spec, true),
            &WorkspaceSecrets::placeholders(spec),
        ));
        let autostop = AutostopPlan::new(spec);
        if spec.autostop.is_on() {
            let target = crate::autostop::Target::EksNodegroup {
                region: s.region.clone(),
                cluster: names.cluster.clone(),
                nodegroup: names.node_group.clone(),
            };
            let settings =
                crate::autostop::Settings::new(spec, &id, target, 0.0, std::time::UNIX_EPOCH);
            kubernetes.extend(crate::manifests::autostop::agent_objects(
                spec, &id, &settings,
            ));
        }

        Plan {
            lab: s.name.clone(),
            region: s.region.clone(),
            instance,
            aws,
            tags: naming::aws_tags(s, &id),
            kubernetes,
            cost: CostEstimate::for_spec(spec),
            autostop,
            warnings: warnings(spec),
        }
    }
}

/// What stops the lab when nobody is looking, and what the agent that does it may do.
#[derive(Debug, Clone, Serialize)]
pub struct AutostopPlan {
    /// Idle autostop and the budget.
    pub settings: crate::autostop::Guard,
    /// The settings in words ("after 30m idle; at $25.00 spent", or "off").
    pub summary: String,
    /// Whether `up` runs the agent (autostop or a budget is on).
    pub agent: bool,
    /// The agent's image.
    pub image: &'static str,
    /// What the agent's pod requests.
    pub requests: crate::capacity::Resources,
    /// The agent's IAM role (EKS Pod Identity).
    pub role: String,
    /// Every AWS action the role allows.
    pub aws_actions: Vec<&'static str>,
    /// The only resource it allows them on.
    pub aws_resource: String,
    /// What its Kubernetes Role allows, one rule per line, e.g. "get, patch configmaps/x".
    pub kubernetes_rules: Vec<String>,
}

impl AutostopPlan {
    /// The autostop part of `spec`'s plan (an AWS lab).
    pub fn new(spec: &ValidSpec) -> Self {
        let kube_names = KubeNames::new(&spec.spec);
        AutostopPlan {
            settings: spec.autostop,
            summary: spec.autostop.describe(),
            agent: spec.autostop.is_on(),
            image: crate::autostop::AGENT_IMAGE,
            requests: crate::autostop::AGENT_REQUESTS,
            role: AwsNames::new(&spec.spec).autostop_role,
            aws_actions: crate::autostop::AGENT_EKS_ACTIONS.to_vec(),
            aws_resource: crate::autostop::node_group_arn_pattern(spec),
            kubernetes_rules: vec![format!(
                "get, patch configmaps/{} in {} (its state)",
                kube_names.autostop_state, kube_names.namespace
            )],
        }
    }
}

fn short_policy(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}

fn warnings(spec: &ValidSpec) -> Vec<String> {
    let s = &spec.spec;
    let mut warnings = Vec::new();
    if spec.instance.price_per_hour(&s.region).is_none() && spec.region.services.is_some() {
        warnings.push(format!(
            "{} is not offered in {} as far as gpulab's catalog knows; `up` checks with EC2 before creating anything",
            spec.instance.name, s.region
        ));
    }
    if s.nodes.desired == 0 {
        warnings.push(
            "nodes.desired is 0: the workspace pod stays Pending until the node group is scaled up"
                .into(),
        );
    }
    if s.access.mode == AccessMode::LoadBalancer {
        warnings.push("access.mode is load-balancer: SSH gets a public address, limited to access.allowed_cidrs (Jupyter stays behind the API server)".into());
    } else if !s.access.allowed_cidrs.is_empty() {
        warnings.push(
            "access.allowed_cidrs is ignored: it applies only with access.mode = load-balancer"
                .into(),
        );
    }
    if s.access.api_cidrs.iter().any(|net| net.prefix_len() == 0) {
        warnings.push(
            "access.api_cidrs admits the whole internet to the cluster's API endpoint; it still needs AWS credentials, but anyone can probe it".into(),
        );
    }
    if let SshKey::Generate { path } = &spec.ssh_key {
        warnings.push(format!(
            "no SSH key found: `up` will create an ed25519 key pair at {}",
            path.display()
        ));
    }
    warnings
}
