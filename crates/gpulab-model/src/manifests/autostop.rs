//! The autostop agent's Kubernetes objects: its service account and namespaced Role, its program and
//! settings, its state ConfigMap, the Service it reaches the activity reporter through, and its
//! Deployment.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, PodSecurityContext, PodSpec,
    PodTemplateSpec, ResourceRequirements, SecretVolumeSource, SecurityContext, Service,
    ServiceAccount, ServicePort, ServiceSpec, Volume,
};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{KubeObject, env_var, volume_mount};
use crate::autostop::{ACTIVITY_PORT, AGENT_IMAGE, AGENT_REQUESTS, Settings, Target};
use crate::naming::{self, KubeNames, LabId, WORKSPACE_LABEL};
use crate::spec::ValidSpec;

/// The agent's program (Python's standard library only; see gpulab-core's `autostop` module).
pub const AGENT_SCRIPT: &str = include_str!("agent.py");
/// The activity reporter's program, shipped in the workspace's setup ConfigMap.
pub const ACTIVITY_SCRIPT: &str = include_str!("activity.py");

/// Where the agent's program and settings are mounted.
const AGENT_DIR: &str = "/etc/gpulab/autostop";
/// Where the activity token is mounted, in the agent and in the workspace alike.
pub const ACTIVITY_TOKEN_DIR: &str = "/etc/gpulab/activity";
/// The label that selects the agent's pod.
const AGENT_LABEL: &str = "gpulab.io/autostop-agent";

fn meta(spec: &ValidSpec, id: &LabId, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some(spec.workspace().namespace.clone()),
        labels: Some(naming::kube_labels(&spec.spec, id)),
        ..Default::default()
    }
}

/// The ConfigMap the agent keeps its state in. It carries no data of gpulab's: applying it again (a
/// rerun of `up`) leaves the agent's `state.json` as it is, since server-side apply removes only fields
/// its own manager set.
pub fn state_config_map(spec: &ValidSpec, id: &LabId) -> KubeObject {
    let names = KubeNames::new(&spec.spec);
    KubeObject::ConfigMap(ConfigMap {
        metadata: meta(spec, id, &names.autostop_state),
        ..Default::default()
    })
}

/// Every object of the agent, in apply order, running with `settings`.
pub fn agent_objects(spec: &ValidSpec, id: &LabId, settings: &Settings) -> Vec<KubeObject> {
    let names = KubeNames::new(&spec.spec);
    let meta = |name: &str| meta(spec, id, name);
    let agent = names.autostop_agent.as_str();

    // Exactly what the agent calls, on exactly its objects (`resourceNames`): its state, and on an
    // existing cluster the workspace's `scale` subresource, which changes the replica count and
    // nothing else of the workload.
    let mut rules = vec![PolicyRule {
        api_groups: Some(vec![String::new()]),
        resources: Some(vec!["configmaps".into()]),
        resource_names: Some(vec![names.autostop_state.clone()]),
        verbs: vec!["get".into(), "patch".into()],
        ..Default::default()
    }];
    if matches!(settings.target, Target::Statefulset { .. }) {
        rules.push(PolicyRule {
            api_groups: Some(vec!["apps".into()]),
            resources: Some(vec!["statefulsets/scale".into()]),
            resource_names: Some(vec![names.workload.clone()]),
            verbs: vec!["get".into(), "patch".into()],
            ..Default::default()
        });
    }
    let settings_json =
        serde_json::to_string_pretty(settings).expect("the agent's settings always serialise");

    let pod_labels = {
        let mut labels = naming::kube_labels(&spec.spec, id);
        labels.insert(AGENT_LABEL.into(), agent.into());
        labels
    };
    let container = Container {
        name: "agent".into(),
        image: Some(AGENT_IMAGE.into()),
        command: Some(vec![
            "python3".into(),
            format!("{AGENT_DIR}/agent.py"),
            "run".into(),
        ]),
        env: Some(vec![
            env_var(
                "GPULAB_AUTOSTOP_SETTINGS",
                &format!("{AGENT_DIR}/settings.json"),
            ),
            env_var(
                "GPULAB_ACTIVITY_TOKEN_FILE",
                &format!("{ACTIVITY_TOKEN_DIR}/token"),
            ),
            env_var("PYTHONUNBUFFERED", "1"),
        ]),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".into(), Quantity(AGENT_REQUESTS.cpu_quantity())),
                ("memory".into(), Quantity(AGENT_REQUESTS.memory_quantity())),
            ])),
            limits: Some(BTreeMap::from([(
                "memory".into(),
                Quantity(format!("{}Mi", AGENT_REQUESTS.memory_mib * 4)),
            )])),
            ..Default::default()
        }),
        volume_mounts: Some(vec![
            volume_mount("agent", AGENT_DIR, true),
            volume_mount("activity-token", ACTIVITY_TOKEN_DIR, true),
        ]),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };

    vec![
        KubeObject::ServiceAccount(ServiceAccount {
            metadata: meta(agent),
            ..Default::default()
        }),
        KubeObject::Role(Role {
            metadata: meta(agent),
            rules: Some(rules),
        }),
        KubeObject::RoleBinding(RoleBinding {
            metadata: meta(agent),
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".into(),
                kind: "Role".into(),
                name: agent.into(),
            },
            subjects: Some(vec![Subject {
                kind: "ServiceAccount".into(),
                name: agent.into(),
                namespace: Some(spec.workspace().namespace.clone()),
                ..Default::default()
            }]),
        }),
        KubeObject::ConfigMap(ConfigMap {
            metadata: meta(&names.autostop_settings),
            data: Some(BTreeMap::from([
                ("agent.py".into(), AGENT_SCRIPT.into()),
                ("settings.json".into(), settings_json),
            ])),
            ..Default::default()
        }),
        state_config_map(spec, id),
        // Cluster-internal: how the agent reaches the workspace's activity reporter.
        KubeObject::Service(Service {
            metadata: meta(&names.activity_service),
            spec: Some(ServiceSpec {
                type_: Some("ClusterIP".into()),
                selector: Some(BTreeMap::from([(
                    WORKSPACE_LABEL.to_string(),
                    names.workload.clone(),
                )])),
                ports: Some(vec![ServicePort {
                    name: Some("activity".into()),
                    port: ACTIVITY_PORT.into(),
                    target_port: Some(IntOrString::Int(ACTIVITY_PORT.into())),
                    protocol: Some("TCP".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }),
        KubeObject::Deployment(Deployment {
            metadata: meta(agent),
            spec: Some(DeploymentSpec {
                replicas: Some(1),
                // Never two agents at once: both would stop the lab and write the ledger.
                strategy: Some(DeploymentStrategy {
                    type_: Some("Recreate".into()),
                    ..Default::default()
                }),
                selector: LabelSelector {
                    match_labels: Some(BTreeMap::from([(AGENT_LABEL.into(), agent.into())])),
                    ..Default::default()
                },
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(pod_labels),
                        ..Default::default()
                    }),
                    spec: Some(PodSpec {
                        service_account_name: Some(agent.into()),
                        containers: vec![container],
                        security_context: Some(PodSecurityContext {
                            run_as_non_root: Some(true),
                            run_as_user: Some(65534),
                            run_as_group: Some(65534),
                            ..Default::default()
                        }),
                        volumes: Some(vec![
                            Volume {
                                name: "agent".into(),
                                config_map: Some(ConfigMapVolumeSource {
                                    name: names.autostop_settings.clone(),
                                    ..Default::default()
                                }),
                                ..Default::default()
                            },
                            Volume {
                                name: "activity-token".into(),
                                secret: Some(SecretVolumeSource {
                                    secret_name: Some(names.activity_token.clone()),
                                    // Readable by the agent's non-root user.
                                    default_mode: Some(0o444),
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
        }),
    ]
}
