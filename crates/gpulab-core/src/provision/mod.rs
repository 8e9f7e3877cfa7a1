//! Cloud provisioning: the one interface every way of getting a GPU cluster implements (EKS through the
//! AWS SDK, or an existing cluster through a kubeconfig context), after SkyPilot's provisioner: typed
//! inputs and records, idempotent steps, and a driver (the `Lab`) that owns ordering and resume.

#[cfg(feature = "aws")]
pub mod aws;
pub mod existing;

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use std::path::PathBuf;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::Result;
use crate::events::Reporter;
use crate::naming::LabId;
use crate::spec::ValidSpec;

/// Where a lab's cluster comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Provider {
    /// EKS in the spec's region, created and removed by gpulab.
    Aws,
    /// A cluster someone already runs, through a kubeconfig context.
    Existing {
        /// The kubeconfig; `None` for the default (`KUBECONFIG`, `~/.kube/config`).
        kubeconfig: Option<PathBuf>,
        /// The context; `None` for the current one.
        context: Option<String>,
    },
}

impl Provider {
    /// The provider a frontend's options name: an existing cluster when a kubeconfig context or file is
    /// given (the file's current context when no context is), otherwise AWS. The CLI's `--context` and
    /// `--kubeconfig` and Python's `context=` and `kubeconfig=` both come here.
    pub fn from_options(context: Option<String>, kubeconfig: Option<PathBuf>) -> Provider {
        if context.is_some() || kubeconfig.is_some() {
            Provider::Existing {
                kubeconfig,
                context,
            }
        } else {
            Provider::Aws
        }
    }
}

/// The cluster an existing-cluster lab was brought up on, as `up` found it through the kubeconfig. A
/// later command that finds another server or certificate authority behind the same context refuses to
/// act: the lab's objects are not in that cluster, and same-named ones there are someone else's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterBinding {
    /// The kubeconfig context.
    pub context: String,
    /// The API server's URL.
    pub server: String,
    /// SHA-256 of the cluster's CA certificate(s) as the kubeconfig holds them, hex; `None` when the
    /// context trusts the system's roots.
    pub ca_sha256: Option<String>,
}

/// Something with the lab's name that does not carry its ID: seen, and left alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeftAlone {
    /// What it is.
    pub resource: ResourceRef,
    /// Why it is not the lab's, and what to do about it.
    pub reason: String,
}

impl fmt::Display for LeftAlone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: not this lab's, left alone ({})",
            self.resource, self.reason
        )
    }
}

/// What a provider found before creating anything: who the caller is, and whether the account can run
/// the node group. Problems here stop `up` before it spends money.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Preflight {
    /// The caller's identity, e.g. an IAM ARN, or the kubeconfig user.
    pub identity: String,
    /// Standard availability zones offering the node type (the GPU nodes go in one of them; the
    /// control plane's second subnet may be in any other zone of the region).
    pub zones: Vec<String>,
    /// The GPU vCPU quota and what the node group needs, where the provider has quotas.
    pub quota: Option<QuotaCheck>,
    /// Problems that do not stop `up` but that the user should see; each was also reported as an
    /// [`Event::Warning`](crate::events::Event::Warning) when found.
    pub warnings: Vec<String>,
}

/// A Service Quotas check of GPU vCPUs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QuotaCheck {
    /// The quota's name, e.g. "Running On-Demand G and VT instances".
    pub quota_name: String,
    /// The quota's code, for `aws service-quotas request-service-quota-increase`.
    pub quota_code: String,
    /// vCPUs the account may run.
    pub limit_vcpus: f64,
    /// vCPUs the node group needs at its desired size, as `up` starts it (short of these, `up` fails).
    pub needed_vcpus: f64,
    /// vCPUs the node group needs at its maximum size (short of these, `up` warns that scaling up
    /// will be refused).
    pub max_vcpus: f64,
}

// What a provider records and reports, in the model's one vocabulary of kinds.
pub use gpulab_model::resources::{ResourceKind, ResourceRef};

/// Labs found in the cloud by their name tag (`gpulab down --find-by-tag`), for a lab whose local state
/// is lost: what each lab ID of that name owns, and what has the lab's names but no gpulab ID.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TagSearch {
    /// Each lab ID found on resources of the lab's name, with those resources.
    pub labs: Vec<(LabId, Vec<ResourceRef>)>,
    /// Resources with the lab's names that carry no gpulab lab ID: never touched.
    pub not_gpulab: Vec<ResourceRef>,
}

/// What `provision` produced: how to reach the cluster, and every resource it owns.
#[derive(Clone, Debug)]
pub struct Provisioned {
    /// How to reach the cluster's API server.
    pub access: ClusterAccess,
    /// Every resource the lab owns, in creation order.
    pub resources: Vec<ResourceRef>,
    /// The cluster found through a kubeconfig (existing clusters), to be checked on every later use.
    pub binding: Option<ClusterBinding>,
}

/// How to reach and authenticate to a cluster's API server.
#[derive(Clone)]
pub struct ClusterAccess {
    /// The API server's URL.
    pub endpoint: String,
    /// PEM of the cluster's certificate authority; `None` trusts the system roots.
    pub ca_pem: Option<Vec<u8>>,
    /// How requests are authenticated.
    pub auth: ClusterAuth,
}

impl fmt::Debug for ClusterAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterAccess")
            .field("endpoint", &self.endpoint)
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

/// How a cluster authenticates gpulab.
#[derive(Clone)]
pub enum ClusterAuth {
    /// Short-lived bearer tokens, made in-process (EKS: a presigned STS GetCallerIdentity).
    Token(Arc<dyn TokenSource>),
    /// Whatever a kubeconfig context says (an existing cluster).
    Kubeconfig {
        /// The kubeconfig file; `None` for the default search (`KUBECONFIG`, `~/.kube/config`).
        path: Option<std::path::PathBuf>,
        /// The context; `None` for the current one.
        context: Option<String>,
    },
}

impl fmt::Debug for ClusterAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClusterAuth::Token(_) => f.write_str("Token(..)"),
            ClusterAuth::Kubeconfig { path, context } => f
                .debug_struct("Kubeconfig")
                .field("path", path)
                .field("context", context)
                .finish(),
        }
    }
}

/// A bearer token and when it stops working.
#[derive(Clone, PartialEq, Eq)]
pub struct BearerToken {
    /// The token, sent as `Authorization: Bearer …`.
    pub token: String,
    /// When the API server will stop accepting it.
    pub expires_at: SystemTime,
}

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BearerToken")
            .field("token", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Makes bearer tokens for a cluster; implementations cache and refresh before expiry.
#[async_trait]
pub trait TokenSource: Send + Sync {
    /// A token valid for at least another minute.
    async fn token(&self) -> Result<BearerToken>;
}

/// The cluster's state as the provider sees it, for `gpulab status`. Its states are data; the text
/// `status` prints (and its JSON carries) is their `Display`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProvisionStatus {
    /// The control plane's state, e.g. "ACTIVE", or "absent".
    #[serde(serialize_with = "as_text")]
    pub cluster: ClusterState,
    /// The node group's state and size, e.g. "ACTIVE (1 of 1..2)", or "absent".
    #[serde(serialize_with = "as_text")]
    pub node_group: NodeGroupState,
    /// Nodes running now.
    pub nodes_running: u32,
    /// When the cluster was created, if it exists.
    pub created_at: Option<SystemTime>,
}

/// The control plane, as its provider sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterState {
    /// No cluster of the lab's name.
    Absent,
    /// A cluster of the lab's name without the lab's ID: never read further, changed or deleted.
    NotOurs {
        /// The cluster's name.
        name: String,
        /// The lab ID tag it lacks, as `key=value`.
        missing_tag: String,
    },
    /// The lab's EKS cluster, in EKS's status ("ACTIVE", "CREATING", "DELETING").
    Eks {
        /// EKS's status.
        status: String,
    },
    /// An existing cluster, reachable through its kubeconfig context.
    Reachable {
        /// The context.
        context: String,
    },
}

impl fmt::Display for ClusterState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClusterState::Absent => f.write_str("absent"),
            ClusterState::NotOurs { name, missing_tag } => write!(
                f,
                "not this lab's (a cluster named {name} without {missing_tag})"
            ),
            ClusterState::Eks { status } => f.write_str(status),
            ClusterState::Reachable { context } => write!(f, "reachable (context {context})"),
        }
    }
}

/// The GPU nodes' group, as its provider sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeGroupState {
    /// No node group of the lab's name (or no cluster).
    Absent,
    /// A node group of the lab's name without the lab's ID.
    NotOurs,
    /// The lab's EKS managed node group: EKS's status and its scaling.
    Eks {
        /// EKS's status ("ACTIVE", "UPDATING").
        status: String,
        /// Nodes it is asked to run.
        desired: u32,
        /// Its scaling bounds.
        min: u32,
        /// Its scaling bounds.
        max: u32,
    },
    /// An existing cluster's GPU nodes (no group gpulab manages).
    Existing {
        /// Nodes offering GPUs.
        gpu_nodes: u32,
    },
}

impl NodeGroupState {
    /// True when the provider runs nodes for the lab in it (the lab's own group, or an existing
    /// cluster's GPU nodes).
    pub fn is_present(&self) -> bool {
        matches!(
            self,
            NodeGroupState::Eks { .. } | NodeGroupState::Existing { .. }
        )
    }
}

impl fmt::Display for NodeGroupState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeGroupState::Absent => f.write_str("absent"),
            NodeGroupState::NotOurs => f.write_str("not this lab's"),
            NodeGroupState::Eks {
                status,
                desired,
                min,
                max,
            } => write!(f, "{status} ({desired} of {min}..{max})"),
            NodeGroupState::Existing { gpu_nodes } => {
                write!(f, "existing cluster: {gpu_nodes} GPU node(s)")
            }
        }
    }
}

/// A state as the text `gpulab status` shows (its JSON keeps that text).
fn as_text<T: fmt::Display, S: serde::Serializer>(
    value: &T,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}

/// What `teardown` did and what it could not do.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TeardownReport {
    /// Resources deleted.
    pub deleted: Vec<ResourceRef>,
    /// Resources that still carry the lab's ID after teardown: each may cost money and is named so the
    /// user can remove it by hand.
    pub leftovers: Vec<ResourceRef>,
    /// Resources with the lab's names that do not carry its ID: never changed or deleted.
    pub left_alone: Vec<LeftAlone>,
}

/// A way of getting a GPU cluster. Every method is idempotent: `provision` finds what exists (by the
/// lab's ID) before creating, and `teardown` treats "already gone" as success, so a lab stopped at any
/// step can be resumed or removed.
///
/// Ownership is part of the contract: a resource with the lab's name but without its `id` is never
/// adopted, changed or deleted. `provision` fails naming it; `teardown` reports it as
/// [`LeftAlone`].
#[async_trait]
pub trait ClusterProvisioner: Send + Sync {
    /// A short name for messages: "aws", "existing".
    fn name(&self) -> &'static str;

    /// Check credentials, capacity and quota. Creates nothing.
    async fn preflight(&self, spec: &ValidSpec, reporter: &dyn Reporter) -> Result<Preflight>;

    /// Create (or find) the cluster and its GPU nodes, marked with `id`, and return how to reach it.
    async fn provision(
        &self,
        spec: &ValidSpec,
        id: &LabId,
        reporter: &dyn Reporter,
    ) -> Result<Provisioned>;

    /// How to reach the lab's cluster, without changing anything; an error when the cluster with the
    /// lab's name is not lab `id`'s.
    async fn access(&self, spec: &ValidSpec, id: &LabId) -> Result<ClusterAccess>;

    /// What the provider sees of the lab now.
    async fn status(&self, spec: &ValidSpec, id: &LabId) -> Result<ProvisionStatus>;

    /// Resize the GPU node group; 0 stops the GPU bill while keeping the cluster and `/workspace`.
    async fn scale(
        &self,
        spec: &ValidSpec,
        id: &LabId,
        desired: u32,
        reporter: &dyn Reporter,
    ) -> Result<()>;

    /// Delete everything lab `id` created, in dependency order, then list what still carries its ID.
    /// Cluster-side objects that own cloud resources (LoadBalancer services, volumes) must already be
    /// gone; the `Lab` removes them through the cluster first.
    async fn teardown(
        &self,
        spec: &ValidSpec,
        id: &LabId,
        reporter: &dyn Reporter,
    ) -> Result<TeardownReport>;
}
