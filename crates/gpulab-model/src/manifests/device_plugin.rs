//! The NVIDIA device plugin's objects: the DaemonSet that advertises each node's GPUs to Kubernetes as
//! `nvidia.com/gpu`, and its config (time-slicing).
//!
//! Pinned to v0.17.4, the last release of the 0.17 line: the version NVIDIA's GPU Operator 25.3 ships,
//! tested with the 5xx drivers of the EKS AL2023 NVIDIA AMIs, and with time-slicing configured by file.
//! Unlike the upstream static manifest (and eksctl's), it runs only on GPU nodes: elsewhere it would
//! crash-loop looking for a driver. Its DaemonSet and ConfigMap carry names and a pod selector that
//! NVIDIA's manifests never use, so the two cannot collide.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetSpec, DaemonSetUpdateStrategy};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, EnvVar, HostPathVolumeSource,
    PodSpec, PodTemplateSpec, SecurityContext, Toleration, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

use super::KubeObject;
use crate::naming::{self, GPU_NODE_LABEL, GPU_RESOURCE, GPU_TAINT, LabId};
use crate::spec::ValidSpec;

/// The addon's name.
pub const NAME: &str = "nvidia-device-plugin";
/// The pinned release.
pub const VERSION: &str = "v0.17.4";
/// Namespace it runs in (as in the original scripts).
pub const NAMESPACE: &str = "kube-system";
/// The DaemonSet's name (NVIDIA's manifests name theirs `nvidia-device-plugin-daemonset`).
pub const DAEMONSET: &str = "gpulab-nvidia-device-plugin";
/// The ConfigMap holding its config file (time-slicing).
pub const CONFIG_MAP: &str = "gpulab-nvidia-device-plugin-config";
/// The pod label the original troubleshooting guide selects (`-l name=nvidia-device-plugin-ds`); on
/// the pods, but not in the selector, which NVIDIA's manifests use too.
pub const POD_LABEL: (&str, &str) = ("name", "nvidia-device-plugin-ds");
/// The DaemonSet's selector: a label no other manifest puts on pods.
pub const SELECTOR: (&str, &str) = ("app.kubernetes.io/name", "gpulab-nvidia-device-plugin");

/// The container image of the pinned release.
pub fn image() -> String {
    format!("nvcr.io/nvidia/k8s-device-plugin:{}", VERSION)
}

/// The device plugin's config file: time-slicing replicas per GPU (1 means no sharing).
pub fn config_file(replicas: u32) -> String {
    format!(
        "version: v1\nflags:\n  migStrategy: none\nsharing:\n  timeSlicing:\n    resources:\n    - name: {GPU_RESOURCE}\n      replicas: {replicas}\n"
    )
}

/// The objects `install` applies for lab `id`: the config map and the DaemonSet.
pub fn manifests(spec: &ValidSpec, id: &LabId) -> Vec<KubeObject> {
    let meta = |name: &str| ObjectMeta {
        name: Some(name.into()),
        namespace: Some(NAMESPACE.into()),
        labels: Some(naming::kube_labels(&spec.spec, id)),
        ..Default::default()
    };
    let replicas = spec.device_plugin().time_slicing_replicas;
    let config = ConfigMap {
        metadata: meta(CONFIG_MAP),
        data: Some(BTreeMap::from([(
            "config.yaml".into(),
            config_file(replicas),
        )])),
        ..Default::default()
    };
    let selector = BTreeMap::from([(SELECTOR.0.to_string(), SELECTOR.1.to_string())]);
    let mut pod_labels = selector.clone();
    pod_labels.insert(POD_LABEL.0.into(), POD_LABEL.1.into());
    let mount = |name: &str, path: &str| VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        ..Default::default()
    };
    let daemon_set = DaemonSet {
        metadata: meta(DAEMONSET),
        spec: Some(DaemonSetSpec {
            selector: LabelSelector {
                match_labels: Some(selector),
                ..Default::default()
            },
            update_strategy: Some(DaemonSetUpdateStrategy {
                type_: Some("RollingUpdate".into()),
                ..Default::default()
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    // A changed config restarts the plugin, which only reads its file at start.
                    annotations: Some(BTreeMap::from([(
                        "gpulab.io/time-slicing-replicas".into(),
                        replicas.to_string(),
                    )])),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    priority_class_name: Some("system-node-critical".into()),
                    node_selector: Some(BTreeMap::from([(
                        GPU_NODE_LABEL.0.into(),
                        GPU_NODE_LABEL.1.into(),
                    )])),
                    tolerations: Some(vec![Toleration {
                        key: Some(GPU_TAINT.0.into()),
                        operator: Some("Exists".into()),
                        effect: Some(GPU_TAINT.2.into()),
                        ..Default::default()
                    }]),
                    containers: vec![Container {
                        name: "nvidia-device-plugin-ctr".into(),
                        image: Some(image()),
                        env: Some(vec![
                            EnvVar {
                                name: "FAIL_ON_INIT_ERROR".into(),
                                value: Some("false".into()),
                                ..Default::default()
                            },
                            EnvVar {
                                name: "CONFIG_FILE".into(),
                                value: Some("/etc/nvidia-device-plugin/config.yaml".into()),
                                ..Default::default()
                            },
                        ]),
                        security_context: Some(SecurityContext {
                            allow_privilege_escalation: Some(false),
                            capabilities: Some(Capabilities {
                                drop: Some(vec!["ALL".into()]),
                                ..Default::default()
                            }),
                            ..Default::default()
                        }),
                        volume_mounts: Some(vec![
                            mount("device-plugin", "/var/lib/kubelet/device-plugins"),
                            mount("config", "/etc/nvidia-device-plugin"),
                        ]),
                        ..Default::default()
                    }],
                    volumes: Some(vec![
                        Volume {
                            name: "device-plugin".into(),
                            host_path: Some(HostPathVolumeSource {
                                path: "/var/lib/kubelet/device-plugins".into(),
                                type_: None,
                            }),
                            ..Default::default()
                        },
                        Volume {
                            name: "config".into(),
                            config_map: Some(ConfigMapVolumeSource {
                                name: CONFIG_MAP.into(),
                                ..Default::default()
                            }),
                            ..Default::default()
                        },
                    ]),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    };
    vec![
        KubeObject::ConfigMap(config),
        KubeObject::DaemonSet(daemon_set),
    ]
}
