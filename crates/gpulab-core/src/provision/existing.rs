//! The existing-cluster provider: a cluster someone already runs (EKS, on-prem, k3s), reached through a
//! kubeconfig context. No AWS at all: it creates nothing, scales nothing and deletes nothing in the
//! cloud; it only checks that the API server answers and which nodes have GPUs.

use std::path::PathBuf;

use async_trait::async_trait;
use base64::Engine;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::events::{Event, Reporter, reported_step};
use crate::naming::{GPU_RESOURCE, LabId};
use crate::provision::{
    ClusterAccess, ClusterAuth, ClusterBinding, ClusterProvisioner, ClusterState, NodeGroupState,
    Preflight, ProvisionStatus, Provisioned, TeardownReport,
};
use crate::spec::ValidSpec;
use crate::{Error, Result};

/// The label Kubernetes puts the zone in.
const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// A cluster reached through a kubeconfig context.
#[derive(Debug, Clone, Default)]
pub struct ExistingCluster {
    /// The kubeconfig file; `None` for the default search (`KUBECONFIG`, `~/.kube/config`).
    pub kubeconfig: Option<PathBuf>,
    /// The context; `None` for the kubeconfig's current one.
    pub context: Option<String>,
    /// The cluster the lab's `up` found there; every later use must find the same one.
    pub binding: Option<ClusterBinding>,
}

/// What the kubeconfig says of the chosen context.
struct Resolved {
    kubeconfig: Kubeconfig,
    context: String,
    user: String,
    server: String,
    ca_pem: Option<Vec<u8>>,
}

fn cluster_err(message: String, hint: &str) -> Error {
    Error::Cluster {
        message,
        hint: Some(hint.into()),
        cause: None,
    }
}

impl ExistingCluster {
    /// The cluster of `context` (or the current one) in `kubeconfig` (or the default kubeconfig).
    pub fn new(kubeconfig: Option<PathBuf>, context: Option<String>) -> Self {
        ExistingCluster {
            kubeconfig,
            context,
            binding: None,
        }
    }

    /// The same, held to the cluster a lab's `up` recorded: a context that now leads to another API
    /// server or certificate authority is refused, since the lab's objects are not there.
    pub fn bound_to(mut self, binding: Option<ClusterBinding>) -> Self {
        self.binding = binding;
        self
    }

    /// The context's cluster as found now, checked against the recorded one.
    fn bind(&self, resolved: &Resolved) -> Result<ClusterBinding> {
        let found = ClusterBinding {
            context: resolved.context.clone(),
            server: resolved.server.clone(),
            ca_sha256: resolved.ca_pem.as_deref().map(sha256_hex),
        };
        match &self.binding {
            Some(recorded)
                if recorded.server != found.server || recorded.ca_sha256 != found.ca_sha256 =>
            {
                Err(Error::Ownership {
                    resource: format!("the cluster behind context {}", found.context),
                    message: format!(
                        "the lab was brought up on {} (CA {}), but the kubeconfig now leads to {} (CA {})",
                        recorded.server,
                        short(recorded.ca_sha256.as_deref()),
                        found.server,
                        short(found.ca_sha256.as_deref())
                    ),
                    hint: "point the kubeconfig (or --kubeconfig/--context on `up`) back at the lab's cluster; gpulab will not act on another one".into(),
                })
            }
            _ => Ok(found),
        }
    }

    fn resolve(&self) -> Result<Resolved> {
        let kubeconfig = match &self.kubeconfig {
            Some(path) => Kubeconfig::read_from(path).map_err(|e| {
                cluster_err(
                    format!("read kubeconfig {}: {e}", path.display()),
                    "check the path given for the kubeconfig",
                )
            })?,
            None => Kubeconfig::read().map_err(|e| {
                cluster_err(
                    format!("read the kubeconfig: {e}"),
                    "set KUBECONFIG or write ~/.kube/config (e.g. `aws eks update-kubeconfig`, `k3s kubectl config view --raw`)",
                )
            })?,
        };
        let context = self
            .context
            .clone()
            .or_else(|| kubeconfig.current_context.clone())
            .ok_or_else(|| {
                cluster_err(
                    "the kubeconfig has no current context".into(),
                    "name a context, or run `kubectl config use-context <name>`",
                )
            })?;
        let ctx = kubeconfig
            .contexts
            .iter()
            .find(|c| c.name == context)
            .and_then(|c| c.context.clone())
            .ok_or_else(|| {
                let known: Vec<&str> = kubeconfig
                    .contexts
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect();
                cluster_err(
                    format!("no context {context:?} in the kubeconfig"),
                    &format!("known contexts: {}", known.join(", ")),
                )
            })?;
        let cluster = kubeconfig
            .clusters
            .iter()
            .find(|c| c.name == ctx.cluster)
            .and_then(|c| c.cluster.clone());
        let server = cluster
            .as_ref()
            .and_then(|c| c.server.clone())
            .unwrap_or_default();
        let ca_pem = match cluster.as_ref() {
            Some(c) => match (&c.certificate_authority_data, &c.certificate_authority) {
                (Some(data), _) => base64::engine::general_purpose::STANDARD
                    .decode(data.trim())
                    .ok(),
                (None, Some(path)) => std::fs::read(path).ok(),
                (None, None) => None,
            },
            None => None,
        };
        Ok(Resolved {
            user: ctx.user.clone().unwrap_or_default(),
            kubeconfig,
            context,
            server,
            ca_pem,
        })
    }

    async fn client(&self, resolved: &Resolved) -> Result<kube::Client> {
        let options = KubeConfigOptions {
            context: Some(resolved.context.clone()),
            ..Default::default()
        };
        let config = kube::Config::from_custom_kubeconfig(resolved.kubeconfig.clone(), &options)
            .await
            .map_err(|e| {
                cluster_err(
                    format!("load context {}: {e}", resolved.context),
                    "check the context's cluster, user and credentials",
                )
            })?;
        kube::Client::try_from(config).map_err(|e| {
            cluster_err(
                format!("connect to {}: {e}", resolved.server),
                "check the context's cluster address and certificates",
            )
        })
    }

    /// The nodes, and the names of those advertising GPUs.
    async fn nodes(&self, client: &kube::Client, server: &str) -> Result<(Vec<Node>, Vec<String>)> {
        client.apiserver_version().await.map_err(|e| {
            cluster_err(
                format!("the API server at {server} does not answer: {e}"),
                "check that the cluster is running and reachable from here (VPN, firewall), and that the credentials are valid",
            )
        })?;
        let nodes = Api::<Node>::all(client.clone())
            .list(&ListParams::default())
            .await
            .map_err(|e| {
                cluster_err(
                    format!("list nodes: {e}"),
                    "gpulab needs permission to list nodes (a cluster-admin context, or a ClusterRole with nodes: list)",
                )
            })?
            .items;
        let gpu_nodes = nodes
            .iter()
            .filter(|n| gpu_count(n) > 0)
            .filter_map(|n| n.metadata.name.clone())
            .collect();
        Ok((nodes, gpu_nodes))
    }

    fn access_for(&self, resolved: &Resolved) -> ClusterAccess {
        ClusterAccess {
            endpoint: resolved.server.clone(),
            ca_pem: resolved.ca_pem.clone(),
            auth: ClusterAuth::Kubeconfig {
                path: self.kubeconfig.clone(),
                context: Some(resolved.context.clone()),
            },
        }
    }
}

/// SHA-256 of `bytes`, hex.
fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The first 12 hex digits of a fingerprint, for messages.
fn short(fingerprint: Option<&str>) -> String {
    fingerprint.map_or_else(
        || "system roots".into(),
        |f| format!("sha256:{}", &f[..12.min(f.len())]),
    )
}

/// The `nvidia.com/gpu` capacity of a node.
fn gpu_count(node: &Node) -> u64 {
    node.status
        .as_ref()
        .and_then(|s| s.capacity.as_ref())
        .and_then(|c| c.get(GPU_RESOURCE))
        .and_then(|q| q.0.parse::<u64>().ok())
        .unwrap_or(0)
}

fn no_gpu_warning(nodes: usize) -> String {
    format!(
        "none of the cluster's {nodes} node(s) advertises {GPU_RESOURCE} yet: GPU nodes show it once the NVIDIA device plugin runs (`up` installs it); add GPU nodes if the cluster has none"
    )
}

#[async_trait]
impl ClusterProvisioner for ExistingCluster {
    fn name(&self) -> &'static str {
        "existing"
    }

    async fn preflight(&self, _spec: &ValidSpec, reporter: &dyn Reporter) -> Result<Preflight> {
        let resolved = self.resolve()?;
        let client = self.client(&resolved).await?;
        let (nodes, gpu_nodes) = self.nodes(&client, &resolved.server).await?;
        let mut zones: Vec<String> = nodes
            .iter()
            .filter_map(|n| n.metadata.labels.as_ref()?.get(ZONE_LABEL).cloned())
            .collect();
        zones.sort();
        zones.dedup();
        let mut warnings = Vec::new();
        if gpu_nodes.is_empty() {
            let w = no_gpu_warning(nodes.len());
            reporter.report(Event::Warning { message: w.clone() });
            warnings.push(w);
        }
        Ok(Preflight {
            identity: format!("{} (context {})", resolved.user, resolved.context),
            zones,
            quota: None,
            warnings,
        })
    }

    async fn provision(
        &self,
        _spec: &ValidSpec,
        _id: &LabId,
        reporter: &dyn Reporter,
    ) -> Result<Provisioned> {
        let step = "connect to the existing cluster";
        reported_step(reporter, step, async {
            let resolved = self.resolve()?;
            let binding = self.bind(&resolved)?;
            let client = self.client(&resolved).await?;
            // Preflight already warned when no node advertises GPUs; this only proves the cluster
            // answers.
            self.nodes(&client, &resolved.server).await?;
            let provisioned = Provisioned {
                access: self.access_for(&resolved),
                resources: Vec::new(),
                binding: Some(binding),
            };
            Ok((provisioned, true))
        })
        .await
    }

    async fn access(&self, _spec: &ValidSpec, _id: &LabId) -> Result<ClusterAccess> {
        let resolved = self.resolve()?;
        self.bind(&resolved)?;
        Ok(self.access_for(&resolved))
    }

    async fn status(&self, _spec: &ValidSpec, _id: &LabId) -> Result<ProvisionStatus> {
        let resolved = self.resolve()?;
        self.bind(&resolved)?;
        let client = self.client(&resolved).await?;
        let (_nodes, gpu_nodes) = self.nodes(&client, &resolved.server).await?;
        Ok(ProvisionStatus {
            cluster: ClusterState::Reachable {
                context: resolved.context.clone(),
            },
            node_group: NodeGroupState::Existing {
                gpu_nodes: gpu_nodes.len() as u32,
            },
            nodes_running: gpu_nodes.len() as u32,
            created_at: None,
        })
    }

    async fn scale(
        &self,
        _spec: &ValidSpec,
        _id: &LabId,
        desired: u32,
        _reporter: &dyn Reporter,
    ) -> Result<()> {
        Err(Error::Provision {
            step: format!("scale GPU nodes to {desired}"),
            message: "an existing cluster is not scaled by gpulab".into(),
            hint: Some(
                "resize its GPU nodes with whatever manages the cluster (its node group, autoscaler or machines)"
                    .into(),
            ),
            cause: None,
        })
    }

    async fn teardown(
        &self,
        _spec: &ValidSpec,
        _id: &LabId,
        reporter: &dyn Reporter,
    ) -> Result<TeardownReport> {
        reporter.report(Event::Warning {
            message: "existing cluster: gpulab deletes nothing in the cloud; only the lab's Kubernetes objects are removed, and the cluster stays".into(),
        });
        Ok(TeardownReport::default())
    }
}
