//! What a lab makes on AWS, fixed by design: the network's address ranges, the GPU nodes' AMI type, the
//! IAM policies of its roles, and its ECR repository's name. The provisioner creates exactly these, and
//! `plan` shows them.

use crate::spec::ValidSpec;

/// The VPC's address range; the two public subnets split its first half.
pub const VPC_CIDR: &str = "10.42.0.0/16";
/// The public subnets' ranges, one per availability zone.
pub const SUBNET_CIDRS: [&str; 2] = ["10.42.0.0/18", "10.42.64.0/18"];
/// The EKS AMI type of the GPU nodes: Amazon Linux 2023 with the NVIDIA driver and container toolkit.
pub const NODE_AMI_TYPE: &str = "AL2023_x86_64_NVIDIA";
/// AWS-managed policies of the node role. Nothing in a pod gets the node role's rights: AL2023 managed
/// nodes keep IMDSv2's hop limit at 1, so pods that need AWS get a role of their own through EKS Pod
/// Identity (the EBS CSI driver, in-cluster image builds).
pub const NODE_POLICIES: [&str; 3] = [
    "arn:aws:iam::aws:policy/AmazonEKSWorkerNodePolicy",
    "arn:aws:iam::aws:policy/AmazonEKS_CNI_Policy",
    "arn:aws:iam::aws:policy/AmazonEC2ContainerRegistryReadOnly",
];
/// The AWS-managed policy of the EBS CSI driver's role.
pub const EBS_CSI_POLICY: &str = "arn:aws:iam::aws:policy/service-role/AmazonEBSCSIDriverPolicy";
/// The service account the EBS CSI addon's controller runs as: the one its Pod Identity association
/// names (aws-ebs-csi-driver chart, `controller.serviceAccount.name`).
pub const EBS_CSI_SERVICE_ACCOUNT: (&str, &str) = ("kube-system", "ebs-csi-controller-sa");
/// The service principal EKS Pod Identity roles trust.
pub const POD_IDENTITY_PRINCIPAL: &str = "pods.eks.amazonaws.com";
/// The image-build role's inline policy: push to the lab's own ECR repository, for `gpulab image build`
/// in the cluster (kaniko runs as a pod, with this role through EKS Pod Identity).
pub const IMAGE_BUILD_POLICY: &str = "gpulab-ecr-push";

/// The document of [`IMAGE_BUILD_POLICY`]: the push actions on `gpulab/<lab>` in the lab's region only,
/// plus the registry login, which IAM cannot scope to a repository.
pub fn image_build_policy(spec: &ValidSpec) -> String {
    let repository = format!(
        "arn:aws:ecr:{}:*:repository/{}",
        spec.spec.region,
        repository_name(spec)
    );
    serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"},
            {
                "Effect": "Allow",
                "Action": [
                    "ecr:BatchCheckLayerAvailability",
                    "ecr:BatchGetImage",
                    "ecr:GetDownloadUrlForLayer",
                    "ecr:InitiateLayerUpload",
                    "ecr:UploadLayerPart",
                    "ecr:CompleteLayerUpload",
                    "ecr:PutImage",
                ],
                "Resource": repository,
            },
        ],
    })
    .to_string()
}
/// AWS-managed policy of the cluster role.
pub const CLUSTER_POLICY: &str = "arn:aws:iam::aws:policy/AmazonEKSClusterPolicy";

/// The ECR repository of `spec`'s lab: `gpulab/<lab>`.
pub fn repository_name(spec: &ValidSpec) -> String {
    format!("gpulab/{}", spec.name())
}

/// Credentials for `docker login` to the lab's ECR registry: user "AWS" and a token from ECR's
/// GetAuthorizationToken.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryLogin {
    /// Registry host, e.g. `123456789012.dkr.ecr.us-west-2.amazonaws.com`.
    pub registry: String,
    /// User name.
    pub username: String,
    /// Password, passed on standard input, never on a command line.
    pub password: String,
}

impl std::fmt::Debug for RegistryLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryLogin")
            .field("registry", &self.registry)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}
