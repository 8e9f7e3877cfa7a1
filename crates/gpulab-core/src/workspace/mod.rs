//! The workspace: the GPU development pod, its persistent `/workspace` volume, its SSH keys and Jupyter
//! token, and the services that reach it. The model renders every object without I/O
//! (`gpulab_model::manifests::workspace`); a [`WorkspaceManager`] applies them, waits for the pod, and explains a pod that does not start.

mod manager;

pub use gpulab_model::versions;

use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;

use crate::Result;
use crate::events::Reporter;
use crate::naming::LabId;
use crate::provision::LeftAlone;
use crate::spec::ValidSpec;

pub use manager::{CloudRelease, KubeWorkspace, generate_host_key, generate_token};
// The workspace's objects are rendered in the model (`gpulab plan` shows them without a cluster).
pub use gpulab_model::manifests::workspace::{
    CACHE_DIR, CACHE_ENV, EPHEMERAL_STORAGE, LOAD_BALANCER_TAGS_ANNOTATION, SETUP_SCRIPT, VENV,
    VolumeClass, WorkspaceSecrets, manifests, ports, workspace_path,
};

/// Where the workspace can be reached.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Endpoint {
    /// Through the API server's port-forward to the pod (the private default).
    PortForward {
        /// Namespace of the pod.
        namespace: String,
        /// The pod.
        pod: String,
    },
    /// A LoadBalancer's address.
    LoadBalancer {
        /// Its DNS name or IP, once AWS has assigned one.
        address: Option<String>,
    },
}

/// The workspace as it is now.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkspaceInfo {
    /// Namespace of the pod.
    pub namespace: String,
    /// The pod's name.
    pub pod: String,
    /// The pod's phase: "Pending", "Running", …, "Terminating" (being deleted, as kubectl shows it),
    /// or "absent".
    pub phase: String,
    /// Whether the pod is ready (sshd answers).
    pub ready: bool,
    /// The node it runs on.
    pub node: Option<String>,
    /// The GPUs it was given.
    pub gpus: u32,
    /// Where SSH and Jupyter can be reached.
    pub endpoint: Endpoint,
    /// The public half of the pod's SSH host key, pinned by the client (`ssh-ed25519 AAAA…`).
    pub host_public_key: Option<String>,
    /// The `/workspace` volume's claim and whether it is bound.
    pub volume: Option<(String, bool)>,
    /// Why the pod is not ready, in words, with what to do; `None` when ready.
    pub problem: Option<String>,
}

/// Creates, inspects and removes the workspace in a cluster.
#[async_trait]
pub trait WorkspaceManager: Send + Sync {
    /// Apply every workspace object of lab `id` (server-side apply; idempotent), with `/workspace` on a
    /// volume of `class`. Generates the SSH host key and the Jupyter token on first creation and keeps
    /// them afterwards. An object of the same name without the lab's ID is an
    /// [`Error::Ownership`](crate::Error::Ownership), never applied over; a namespace someone else made
    /// is used as it is.
    async fn apply(
        &self,
        client: &kube::Client,
        spec: &ValidSpec,
        id: &LabId,
        class: &VolumeClass,
        reporter: &dyn Reporter,
    ) -> Result<WorkspaceInfo>;

    /// Wait until the pod is ready; on timeout, the error says why from the pod's conditions and events
    /// (no GPU node yet, device plugin missing, image pull failure) and what to do.
    async fn wait_ready(
        &self,
        client: &kube::Client,
        spec: &ValidSpec,
        id: &LabId,
        timeout: Duration,
        reporter: &dyn Reporter,
    ) -> Result<WorkspaceInfo>;

    /// Lab `id`'s workspace now; a pod of its name without the lab's ID is reported as not the lab's.
    async fn status(
        &self,
        client: &kube::Client,
        spec: &ValidSpec,
        id: &LabId,
    ) -> Result<WorkspaceInfo>;

    /// Delete lab `id`'s workspace. With `keep_volume`, `/workspace` survives for the next `up`;
    /// without, the claim goes too, and with it the EBS volume it costs. Objects of the workspace's names
    /// without the lab's ID are left alone, and returned.
    async fn delete(
        &self,
        client: &kube::Client,
        spec: &ValidSpec,
        id: &LabId,
        keep_volume: bool,
    ) -> Result<Vec<LeftAlone>>;
}
