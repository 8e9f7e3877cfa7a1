//! The NVIDIA device plugin: the DaemonSet that advertises each node's GPUs to Kubernetes as
//! `nvidia.com/gpu`, so pods can request them.
//!
//! Pinned to v0.17.4, the last release of the 0.17 line: the version NVIDIA's GPU Operator 25.3 ships,
//! tested with the 5xx drivers of the EKS AL2023 NVIDIA AMIs, and with time-slicing configured by file.
//! Unlike the upstream static manifest (and eksctl's), it runs only on GPU nodes: elsewhere it would
//! crash-loop looking for a driver.
//!
//! On a cluster that already has one (NVIDIA's static manifest, its Helm chart, or the GPU Operator),
//! gpulab is a guest: it uses that plugin and installs none. Its own DaemonSet and ConfigMap carry
//! names and a pod selector that NVIDIA's manifests never use, so the two cannot collide.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::DaemonSet;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams};

use super::{AddonStatus, ClusterAddon};
use crate::Result;
use crate::cluster::{Deletion, cluster_error, is_not_found};
use crate::events::{Event, Reporter, reported_step};
use crate::manifest::{ApplyOwned, KubeObject, device_plugin};
use crate::naming::{GPU_NODE_LABEL, GPU_RESOURCE, LAB_ID_KEY, LabId};
use crate::provision::{LeftAlone, ResourceKind, ResourceRef};
use crate::spec::ValidSpec;

/// The device plugin, as gpulab installs it.
#[derive(Debug, Clone, Copy, Default)]
pub struct NvidiaDevicePlugin;

impl NvidiaDevicePlugin {
    /// The addon's name.
    pub const NAME: &'static str = device_plugin::NAME;
    /// The pinned release.
    pub const VERSION: &'static str = device_plugin::VERSION;
    /// Namespace it runs in (as in the original scripts).
    pub const NAMESPACE: &'static str = device_plugin::NAMESPACE;
    /// The DaemonSet's name (NVIDIA's manifests name theirs `nvidia-device-plugin-daemonset`).
    pub const DAEMONSET: &'static str = device_plugin::DAEMONSET;
    /// The ConfigMap holding its config file (time-slicing).
    pub const CONFIG_MAP: &'static str = device_plugin::CONFIG_MAP;
    /// The pod label the original troubleshooting guide selects (`-l name=nvidia-device-plugin-ds`).
    pub const POD_LABEL: (&'static str, &'static str) = device_plugin::POD_LABEL;
    /// The DaemonSet's selector: a label no other manifest puts on pods.
    pub const SELECTOR: (&'static str, &'static str) = device_plugin::SELECTOR;

    /// The container image of the pinned release.
    pub fn image() -> String {
        device_plugin::image()
    }

    /// The device plugin's config file: time-slicing replicas per GPU (1 means no sharing).
    pub fn config_file(replicas: u32) -> String {
        device_plugin::config_file(replicas)
    }

    /// The objects `install` applies for lab `id`: the config map and the DaemonSet.
    pub fn manifests(spec: &ValidSpec, id: &LabId) -> Vec<KubeObject> {
        device_plugin::manifests(spec, id)
    }
}

/// A device plugin the cluster runs that is not the lab's: an NVIDIA device plugin DaemonSet (NVIDIA's
/// static manifest or Helm chart, the GPU Operator's, another lab's), as "namespace/name".
fn foreign_plugin(daemon_sets: &[DaemonSet], id: &LabId) -> Option<String> {
    daemon_sets
        .iter()
        .filter(|ds| !id.owns_map(ds.metadata.labels.as_ref()))
        .find(|ds| {
            let images = ds
                .spec
                .as_ref()
                .and_then(|s| s.template.spec.as_ref())
                .map(|p| p.containers.iter().filter_map(|c| c.image.as_deref()))
                .into_iter()
                .flatten();
            images
                .into_iter()
                .any(|image| image.contains("k8s-device-plugin"))
        })
        .map(|ds| {
            format!(
                "{}/{}",
                ds.metadata.namespace.as_deref().unwrap_or_default(),
                ds.metadata.name.as_deref().unwrap_or_default()
            )
        })
}

/// GPU nodes: those labelled as such, or already advertising GPUs (clusters gpulab did not make).
fn gpu_nodes(nodes: &[Node]) -> Vec<(String, u32)> {
    let count = |map: Option<
        &BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
    >| {
        map.and_then(|m| m.get(GPU_RESOURCE))
            .and_then(|q| q.0.parse::<u32>().ok())
    };
    nodes
        .iter()
        .filter_map(|node| {
            let labelled = node
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(GPU_NODE_LABEL.0))
                .is_some_and(|v| v == GPU_NODE_LABEL.1);
            let status = node.status.as_ref();
            let capacity = count(status.and_then(|s| s.capacity.as_ref()));
            (labelled || capacity.is_some()).then(|| {
                let allocatable = count(status.and_then(|s| s.allocatable.as_ref())).unwrap_or(0);
                (node.metadata.name.clone().unwrap_or_default(), allocatable)
            })
        })
        .collect()
}

impl NvidiaDevicePlugin {
    /// Whether the cluster already provides GPUs without the lab's plugin, and by what: another device
    /// plugin DaemonSet, or nodes that advertise `nvidia.com/gpu` while the lab's plugin is absent.
    async fn provided_by(&self, client: &kube::Client, id: &LabId) -> Result<Option<String>> {
        let all = ListParams::default();
        let daemon_sets = Api::<DaemonSet>::all(client.clone())
            .list(&all)
            .await
            .map_err(|e| cluster_error("list DaemonSets", e))?
            .items;
        let ours = daemon_sets.iter().any(|ds| {
            ds.metadata.name.as_deref() == Some(Self::DAEMONSET)
                && id.owns_map(ds.metadata.labels.as_ref())
        });
        if let Some(other) = foreign_plugin(&daemon_sets, id) {
            return Ok(Some(other));
        }
        if ours {
            return Ok(None);
        }
        let nodes = Api::<Node>::all(client.clone())
            .list(&all)
            .await
            .map_err(|e| cluster_error("list nodes", e))?
            .items;
        Ok(gpu_nodes(&nodes)
            .iter()
            .any(|(_, gpus)| *gpus > 0)
            .then(|| format!("the nodes' own {GPU_RESOURCE} (a device plugin gpulab cannot see)")))
    }
}

#[async_trait]
impl ClusterAddon for NvidiaDevicePlugin {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn version(&self) -> &'static str {
        Self::VERSION
    }

    fn manifests(&self, spec: &ValidSpec, id: &LabId) -> Vec<KubeObject> {
        Self::manifests(spec, id)
    }

    async fn install(
        &self,
        client: &kube::Client,
        spec: &ValidSpec,
        id: &LabId,
        reporter: &dyn Reporter,
    ) -> Result<bool> {
        let step = format!("install {} {}", Self::NAME, Self::VERSION);
        reported_step(reporter, &step, async {
            let provided_by = self.provided_by(client, id).await?;
            match &provided_by {
                Some(other) => reporter.report(Event::Warning {
                    message: format!(
                        "the cluster already runs an NVIDIA device plugin ({other}): using it, installing none"
                    ),
                }),
                None => {
                    for object in Self::manifests(spec, id) {
                        object.apply_owned(client, id).await?;
                    }
                }
            }
            Ok((provided_by.is_none(), provided_by.is_some()))
        })
        .await
    }

    async fn status(
        &self,
        client: &kube::Client,
        _spec: &ValidSpec,
        id: &LabId,
    ) -> Result<AddonStatus> {
        let daemon_sets: Api<DaemonSet> = Api::namespaced(client.clone(), Self::NAMESPACE);
        let nodes: Api<Node> = Api::all(client.clone());
        let all = ListParams::default();
        let (daemon_set, nodes) = tokio::join!(daemon_sets.get(Self::DAEMONSET), nodes.list(&all));
        let gpu_nodes = gpu_nodes(&nodes.map_err(|e| cluster_error("list nodes", e))?.items);
        let daemon_set = match daemon_set {
            Ok(ds) if id.owns_map(ds.metadata.labels.as_ref()) => Some(ds),
            Ok(_) => None,
            Err(e) if is_not_found(&e) => None,
            Err(e) => return Err(cluster_error("read the device plugin", e)),
        };
        let provided_by = match daemon_set {
            Some(_) => None,
            None => self.provided_by(client, id).await?,
        };
        let installed_version = daemon_set.as_ref().and_then(|ds| {
            let image = ds
                .spec
                .as_ref()?
                .template
                .spec
                .as_ref()?
                .containers
                .first()?
                .image
                .clone()?;
            image.rsplit_once(':').map(|(_, tag)| tag.to_string())
        });
        let ds_status = daemon_set.as_ref().and_then(|ds| ds.status.as_ref());
        let ready = ds_status.map_or(0, |s| s.number_ready.max(0) as u32);
        let desired = ds_status.map_or(0, |s| s.desired_number_scheduled.max(0) as u32);

        let silent: Vec<&str> = gpu_nodes
            .iter()
            .filter(|(_, gpus)| *gpus == 0)
            .map(|(name, _)| name.as_str())
            .collect();
        let problem = if let Some(other) = &provided_by {
            silent.first().map(|node| {
                format!("{node} advertises no GPU; the cluster's device plugin ({other}) is not gpulab's: ask whoever runs the cluster")
            })
        } else if daemon_set.is_none() {
            Some("the NVIDIA device plugin is not installed; `gpulab up` installs it".to_string())
        } else if installed_version.as_deref() != Some(Self::VERSION) {
            Some(format!(
                "the device plugin runs {}, gpulab pins {}; `gpulab up` upgrades it",
                installed_version.as_deref().unwrap_or("an unknown version"),
                Self::VERSION
            ))
        } else if gpu_nodes.is_empty() {
            Some(
                "no GPU node is running: the node group may be scaled to zero or still starting"
                    .to_string(),
            )
        } else if ready < desired || !silent.is_empty() {
            Some(format!(
                "{ready} of {desired} device plugin pods are ready{}; see `kubectl -n {} logs -l {}={}`",
                if silent.is_empty() {
                    String::new()
                } else {
                    format!(" and {} advertise no GPU", silent.join(", "))
                },
                Self::NAMESPACE,
                Self::SELECTOR.0,
                Self::SELECTOR.1
            ))
        } else {
            None
        };
        Ok(AddonStatus {
            name: Self::NAME.into(),
            installed_version,
            pinned_version: Self::VERSION.into(),
            provided_by,
            ready,
            desired,
            gpu_nodes,
            healthy: problem.is_none(),
            problem,
        })
    }

    async fn remove(
        &self,
        client: &kube::Client,
        spec: &ValidSpec,
        id: &LabId,
    ) -> Result<Vec<LeftAlone>> {
        let mut left_alone = Vec::new();
        for object in Self::manifests(spec, id).iter().rev() {
            if object.delete_owned(client, id).await? == Deletion::NotOurs {
                left_alone.push(LeftAlone {
                    resource: ResourceRef::new(
                        ResourceKind::Kubernetes(object.kind().to_string()),
                        format!("{}/{}", Self::NAMESPACE, object.name()),
                    ),
                    reason: format!("it lacks the label {LAB_ID_KEY}={id}"),
                });
            }
        }
        Ok(left_alone)
    }
}
