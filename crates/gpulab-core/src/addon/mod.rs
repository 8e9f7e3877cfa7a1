//! Cluster addons: what a cluster needs before a GPU pod can run on it. Each renders its objects without
//! I/O (for `gpulab plan`) and applies, inspects and removes them through a Kubernetes client.

pub mod nvidia_device_plugin;

use async_trait::async_trait;
use serde::Serialize;

use crate::Result;
use crate::events::Reporter;
use crate::manifest::KubeObject;
use crate::naming::LabId;
use crate::provision::LeftAlone;
use crate::spec::ValidSpec;

pub use nvidia_device_plugin::NvidiaDevicePlugin;

/// The state of an addon in a cluster.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AddonStatus {
    /// The addon's name.
    pub name: String,
    /// The version running, if installed.
    pub installed_version: Option<String>,
    /// The version gpulab pins.
    pub pinned_version: String,
    /// When the cluster already had one (an NVIDIA device plugin, the GPU Operator) and gpulab uses it
    /// instead of installing its own: what it is, e.g. "gpu-operator/nvidia-device-plugin-daemonset".
    pub provided_by: Option<String>,
    /// Pods ready out of pods wanted (a DaemonSet's rollout).
    pub ready: u32,
    /// Pods wanted.
    pub desired: u32,
    /// Per GPU node: its name and the `nvidia.com/gpu` it advertises as allocatable.
    pub gpu_nodes: Vec<(String, u32)>,
    /// Whether the addon is fully working: installed at the pinned version, rolled out, and every GPU
    /// node advertising its GPUs.
    pub healthy: bool,
    /// When not healthy: what is wrong and what to do.
    pub problem: Option<String>,
}

/// Something installed into the cluster for the lab.
#[async_trait]
pub trait ClusterAddon: Send + Sync {
    /// The addon's name, e.g. "nvidia-device-plugin".
    fn name(&self) -> &'static str;

    /// The version gpulab pins.
    fn version(&self) -> &'static str;

    /// The objects `install` applies for lab `id`, rendered without I/O.
    fn manifests(&self, spec: &ValidSpec, id: &LabId) -> Vec<KubeObject>;

    /// Install, or upgrade to the pinned version (server-side apply, so it is idempotent) — unless the
    /// cluster already provides what the addon does, in which case that is used and nothing is
    /// installed. Returns whether the lab's own is installed.
    async fn install(
        &self,
        client: &kube::Client,
        spec: &ValidSpec,
        id: &LabId,
        reporter: &dyn Reporter,
    ) -> Result<bool>;

    /// What is running and whether it works.
    async fn status(
        &self,
        client: &kube::Client,
        spec: &ValidSpec,
        id: &LabId,
    ) -> Result<AddonStatus>;

    /// Remove what `install` applied for lab `id`; absent objects are fine, and objects of the same
    /// names without the lab's ID are left alone (and returned).
    async fn remove(
        &self,
        client: &kube::Client,
        spec: &ValidSpec,
        id: &LabId,
    ) -> Result<Vec<LeftAlone>>;
}
