//! What a lab makes, records and removes: one vocabulary of resource kinds for the plan, the local
//! record, `down`'s report and the search by tag. Before this there were three ("vpc" in the record,
//! "ec2:vpc" in the plan and from ARNs, Kubernetes kinds from the cluster), bridged by string compares.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The kind of a resource a lab made, deleted or left alone.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ResourceKind {
    /// An EC2 VPC.
    Vpc,
    /// An EC2 subnet.
    Subnet,
    /// An EC2 internet gateway.
    InternetGateway,
    /// An EC2 route table.
    RouteTable,
    /// An EC2 security group.
    SecurityGroup,
    /// An EC2 network interface (a load balancer's or the control plane's, left in the VPC).
    NetworkInterface,
    /// An EBS volume (the workspace's).
    EbsVolume,
    /// An IAM role.
    IamRole,
    /// An EKS cluster.
    EksCluster,
    /// An EKS managed node group.
    EksNodegroup,
    /// An EKS addon.
    EksAddon,
    /// An EKS access entry (its principal's ARN is the id).
    EksAccessEntry,
    /// An EKS Pod Identity association.
    EksPodIdentityAssociation,
    /// An Elastic Load Balancing v2 load balancer.
    LoadBalancer,
    /// An Elastic Load Balancing v2 target group.
    TargetGroup,
    /// An ECR repository.
    EcrRepository,
    /// A Kubernetes object, by its kind ("DaemonSet", "PersistentVolumeClaim").
    Kubernetes(String),
    /// Another AWS resource type, as its ARN names it ("service:type"), found by the tag search.
    OtherAws(String),
}

/// Each AWS kind: its variant, its name in the record and reports, and its ARN's "service:type".
const AWS_KINDS: &[(ResourceKind, &str, &str)] = &[
    (ResourceKind::Vpc, "vpc", "ec2:vpc"),
    (ResourceKind::Subnet, "subnet", "ec2:subnet"),
    (
        ResourceKind::InternetGateway,
        "internet-gateway",
        "ec2:internet-gateway",
    ),
    (ResourceKind::RouteTable, "route-table", "ec2:route-table"),
    (
        ResourceKind::SecurityGroup,
        "security-group",
        "ec2:security-group",
    ),
    (
        ResourceKind::NetworkInterface,
        "network-interface",
        "ec2:network-interface",
    ),
    (ResourceKind::EbsVolume, "ebs-volume", "ec2:volume"),
    (ResourceKind::IamRole, "iam-role", "iam:role"),
    (ResourceKind::EksCluster, "eks-cluster", "eks:cluster"),
    (ResourceKind::EksNodegroup, "eks-nodegroup", "eks:nodegroup"),
    (ResourceKind::EksAddon, "eks-addon", "eks:addon"),
    (
        ResourceKind::EksAccessEntry,
        "eks-access-entry",
        "eks:access-entry",
    ),
    (
        ResourceKind::EksPodIdentityAssociation,
        "eks-pod-identity-association",
        "eks:podidentityassociation",
    ),
    (
        ResourceKind::LoadBalancer,
        "elb-load-balancer",
        "elasticloadbalancing:loadbalancer",
    ),
    (
        ResourceKind::TargetGroup,
        "elb-target-group",
        "elasticloadbalancing:targetgroup",
    ),
    (
        ResourceKind::EcrRepository,
        "ecr-repository",
        "ecr:repository",
    ),
];

impl ResourceKind {
    /// Its name in the lab's record and in reports: "vpc", "iam-role", a Kubernetes kind as it is, an
    /// unmodelled AWS type as "service:type".
    pub fn name(&self) -> &str {
        match self {
            ResourceKind::Kubernetes(kind) => kind,
            ResourceKind::OtherAws(kind) => kind,
            known => Self::aws_entry(known).1,
        }
    }

    /// The "service:type" an ARN of this kind carries ("ec2:vpc", "iam:role"); `None` for a
    /// Kubernetes object.
    pub fn arn_type(&self) -> Option<&str> {
        match self {
            ResourceKind::Kubernetes(_) => None,
            ResourceKind::OtherAws(kind) => Some(kind),
            known => Some(Self::aws_entry(known).2),
        }
    }

    /// The kind an ARN's "service:type" names ("ec2:vpc" is [`ResourceKind::Vpc`]).
    pub fn from_arn_type(service_type: &str) -> ResourceKind {
        AWS_KINDS
            .iter()
            .find(|(_, _, arn)| *arn == service_type)
            .map(|(kind, _, _)| kind.clone())
            .unwrap_or_else(|| ResourceKind::OtherAws(service_type.to_string()))
    }

    fn aws_entry(kind: &ResourceKind) -> &'static (ResourceKind, &'static str, &'static str) {
        AWS_KINDS
            .iter()
            .find(|(k, _, _)| k == kind)
            .expect("every AWS variant is in AWS_KINDS")
    }
}

impl fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A kind name that is none of gpulab's: the record that holds it is not one gpulab wrote.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown resource kind {0:?}: expected one of gpulab's (\"vpc\", \"iam-role\", …), a Kubernetes kind (\"DaemonSet\") or an ARN's \"service:type\""
)]
pub struct UnknownResourceKind(pub String);

impl FromStr for ResourceKind {
    type Err = UnknownResourceKind;

    /// The inverse of [`ResourceKind::name`]; an ARN's "service:type" is read as well.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some((kind, _, _)) = AWS_KINDS.iter().find(|(_, name, _)| *name == s) {
            return Ok(kind.clone());
        }
        // "service:type"; the type is empty for ARNs without one (S3's `arn:aws:s3:::bucket`).
        let is_arn_type = s.split_once(':').is_some_and(|(service, _)| {
            !service.is_empty()
                && service
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        });
        if is_arn_type {
            return Ok(ResourceKind::from_arn_type(s));
        }
        // Kubernetes kinds are UpperCamelCase ("DaemonSet", "PersistentVolumeClaim").
        if s.starts_with(|c: char| c.is_ascii_uppercase())
            && s.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Ok(ResourceKind::Kubernetes(s.to_string()));
        }
        Err(UnknownResourceKind(s.to_string()))
    }
}

impl Serialize for ResourceKind {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for ResourceKind {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

/// A resource a lab created or found, as recorded in its state and listed by `down`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ResourceRef {
    /// Its kind.
    pub kind: ResourceKind,
    /// Its id or name, e.g. "vpc-0abc…".
    pub id: String,
}

impl ResourceRef {
    /// A `kind` resource with `id`.
    pub fn new(kind: ResourceKind, id: impl Into<String>) -> Self {
        ResourceRef {
            kind,
            id: id.into(),
        }
    }
}

impl fmt::Display for ResourceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind, self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_reads_back_from_its_name_and_its_arn_type() {
        for (kind, name, arn) in AWS_KINDS {
            assert_eq!(kind.name(), *name);
            assert_eq!(kind.arn_type(), Some(*arn));
            assert_eq!(name.parse::<ResourceKind>().as_ref(), Ok(kind));
            assert_eq!(arn.parse::<ResourceKind>().as_ref(), Ok(kind));
            assert_eq!(&ResourceKind::from_arn_type(arn), kind);
        }
        let daemon_set: ResourceKind = "DaemonSet".parse().unwrap();
        assert_eq!(daemon_set, ResourceKind::Kubernetes("DaemonSet".into()));
        assert_eq!(daemon_set.arn_type(), None);
        let other: ResourceKind = "sqs:queue".parse().unwrap();
        assert_eq!(other, ResourceKind::OtherAws("sqs:queue".into()));
        assert_eq!(other.name(), "sqs:queue");
    }

    #[test]
    fn a_corrupt_kind_is_an_error_not_a_default() {
        for bad in ["", "vpcs", ":vpc", "Daemon Set", "iam_role", "EC2:vpc"] {
            let err = bad.parse::<ResourceKind>().unwrap_err();
            assert!(
                err.to_string().contains("unknown resource kind"),
                "{bad}: {err}"
            );
        }
        let record = r#"{"kind": "vpcs", "id": "vpc-1"}"#;
        let err = serde_json::from_str::<ResourceRef>(record).unwrap_err();
        assert!(
            err.to_string().contains("unknown resource kind \"vpcs\""),
            "{err}"
        );
    }

    #[test]
    fn records_keep_the_names_they_always_had() {
        let vpc = ResourceRef::new(ResourceKind::Vpc, "vpc-1");
        assert_eq!(
            serde_json::to_string(&vpc).unwrap(),
            r#"{"kind":"vpc","id":"vpc-1"}"#
        );
        assert_eq!(vpc.to_string(), "vpc vpc-1");
        let role: ResourceRef = serde_json::from_str(r#"{"kind":"iam-role","id":"r"}"#).unwrap();
        assert_eq!(role.kind, ResourceKind::IamRole);
    }
}
