//! The workspace's Kubernetes objects, rendered from a validated spec. No I/O: `gpulab plan` shows
//! exactly what `up` applies.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    EnvVarSource, ExecAction, Lifecycle, LifecycleHandler, Namespace, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PersistentVolumeClaimVolumeSource, Pod, PodSpec, Probe,
    ResourceRequirements, Secret, SecretKeySelector, SecretVolumeSource, Service, ServicePort,
    ServiceSpec, TCPSocketAction, Toleration, Volume, VolumeResourceRequirements,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as KubeQuantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use serde::Serialize;

use super::autostop::{ACTIVITY_SCRIPT, ACTIVITY_TOKEN_DIR};
use super::{KubeObject, env_var, volume_mount};
use crate::autostop::ACTIVITY_PORT;
use crate::naming::{
    self, GPU_RESOURCE, GPU_TAINT, KubeNames, LAB_ID_KEY, LAB_KEY, LabId, MANAGED_KEY,
    WORKSPACE_LABEL,
};
use crate::spec::WorkspacePackages;
use crate::spec::{AccessMode, SshKey, ValidSpec};

/// The ports the workspace serves.
pub mod ports {
    /// sshd.
    pub const SSH: u16 = 22;
    /// Jupyter Lab.
    pub const JUPYTER: u16 = 8888;
    /// vLLM's OpenAI-compatible server.
    pub const VLLM: u16 = 8000;
}

/// Where `/workspace`'s volume comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(tag = "kind", content = "name", rename_all = "kebab-case")]
pub enum VolumeClass {
    /// The lab's own encrypted gp3 StorageClass for the EBS CSI driver, which tags every volume it
    /// provisions with the lab's ID (EKS: the lab's own cluster, or an existing one with the driver).
    Lab,
    /// A StorageClass the user named (`workspace.storage_class`).
    Named(String),
    /// The cluster's default StorageClass (an existing cluster without the EBS CSI driver).
    ClusterDefault,
}

impl VolumeClass {
    /// The class for `spec` on a cluster with (or without) the EBS CSI driver: the one the user named,
    /// else the lab's own where EBS volumes can be made, else the cluster's default.
    pub fn choose(spec: &ValidSpec, ebs_csi_driver: bool) -> VolumeClass {
        match &spec.workspace().storage_class {
            Some(name) => VolumeClass::Named(name.clone()),
            None if ebs_csi_driver => VolumeClass::Lab,
            None => VolumeClass::ClusterDefault,
        }
    }
}

/// The setup script the pod runs on every start: installs what is missing (caching on `/workspace`),
/// configures and starts sshd, starts Jupyter.
pub const SETUP_SCRIPT: &str = include_str!("setup.sh");

/// Where the volume, script and keys are mounted in the pod.
const WORKSPACE_DIR: &str = "/workspace";
const SETUP_DIR: &str = "/opt/gpulab";
const AUTHORIZED_KEYS_DIR: &str = "/etc/gpulab/ssh-keys";
const HOST_KEY_DIR: &str = "/etc/gpulab/ssh-host";

/// The workspace's venv, on the volume: every way in resolves `python` to it.
pub const VENV: &str = "/workspace/.venv";
/// Where every cache lives, on the volume.
pub const CACHE_DIR: &str = "/workspace/.cache";
/// The cache variables the pod (and every way into it) gets.
pub const CACHE_ENV: &[(&str, &str)] = &[
    ("XDG_CACHE_HOME", "/workspace/.cache"),
    ("PIP_CACHE_DIR", "/workspace/.cache/pip"),
    ("HF_HOME", "/workspace/.cache/huggingface"),
    ("VLLM_CACHE_ROOT", "/workspace/.cache/vllm"),
    ("TRITON_CACHE_DIR", "/workspace/.cache/triton"),
    ("TORCHINDUCTOR_CACHE_DIR", "/workspace/.cache/torchinductor"),
    ("TORCH_HOME", "/workspace/.cache/torch"),
    ("CUDA_CACHE_PATH", "/workspace/.cache/nv"),
];
/// The pod's ephemeral-storage request.
pub const EPHEMERAL_STORAGE: &str = "10Gi";

/// The pod's PATH: the workspace's venv, a prebuilt image's /opt/venv, then NVIDIA's CUDA images' PATH.
pub fn workspace_path() -> String {
    format!(
        "{VENV}/bin:/opt/venv/bin:/usr/local/nvidia/bin:/usr/local/cuda/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    )
}

/// The secret material of a workspace. `up` generates the host key and the token once and keeps them;
/// a plan shows placeholders instead.
#[derive(Clone, PartialEq, Eq)]
pub struct WorkspaceSecrets {
    /// Lines of `authorized_keys`.
    pub authorized_keys: String,
    /// The pod's SSH host private key, OpenSSH format.
    pub host_private_key: String,
    /// Its public half, which the client pins.
    pub host_public_key: String,
    /// Jupyter's token.
    pub jupyter_token: String,
    /// The token the autostop agent shows the activity reporter.
    pub activity_token: String,
}

impl std::fmt::Debug for WorkspaceSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkspaceSecrets")
            .field("authorized_keys", &self.authorized_keys)
            .field("host_public_key", &self.host_public_key)
            .finish_non_exhaustive()
    }
}

impl WorkspaceSecrets {
    /// What a plan shows: the user's real public key when it exists, placeholders for what `up` generates.
    pub fn placeholders(spec: &ValidSpec) -> Self {
        let authorized_keys = match &spec.ssh_key {
            SshKey::Existing { public_key, .. } => public_key.clone(),
            SshKey::Generate { path } => {
                format!("<public half of {}.pub, generated by up>", path.display())
            }
        };
        WorkspaceSecrets {
            authorized_keys,
            host_private_key: "<generated by up>".into(),
            host_public_key: "<generated by up>".into(),
            jupyter_token: "<generated by up>".into(),
            activity_token: "<generated by up>".into(),
        }
    }
}

fn meta(spec: &ValidSpec, id: &LabId, name: &str, namespaced: bool) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: namespaced.then(|| spec.workspace().namespace.clone()),
        labels: Some(naming::kube_labels(&spec.spec, id)),
        ..Default::default()
    }
}

fn quantity(text: &str) -> KubeQuantity {
    KubeQuantity(text.into())
}

fn string_data(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
    Some(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

/// The Service annotation whose `k=v,…` tags the AWS cloud provider puts on a load balancer it makes.
pub const LOAD_BALANCER_TAGS_ANNOTATION: &str =
    "service.beta.kubernetes.io/aws-load-balancer-additional-resource-tags";

/// Every object of lab `id`'s workspace, in the order they are applied, with `/workspace` on a volume of
/// `class`.
pub fn manifests(
    spec: &ValidSpec,
    id: &LabId,
    class: &VolumeClass,
    secrets: &WorkspaceSecrets,
) -> Vec<KubeObject> {
    let names = KubeNames::new(&spec.spec);
    let meta = |name: &str, namespaced: bool| meta(spec, id, name, namespaced);
    let mut objects = vec![KubeObject::Namespace(Namespace {
        metadata: meta(&names.namespace, false),
        ..Default::default()
    })];

    if *class == VolumeClass::Lab {
        // The EBS CSI driver puts `tagSpecification_N` parameters on each volume it provisions
        // (aws-ebs-csi-driver docs/tagging.md, v1.6.0 and later), so `down` finds the volume by the
        // lab's ID even when the cluster is gone.
        let tags = [
            (LAB_KEY, spec.name()),
            (LAB_ID_KEY, id.as_str()),
            (MANAGED_KEY, "true"),
        ];
        let mut parameters = BTreeMap::from([
            ("type".to_string(), "gp3".to_string()),
            ("encrypted".to_string(), "true".to_string()),
        ]);
        for (i, (key, value)) in tags.iter().enumerate() {
            parameters.insert(
                format!("tagSpecification_{}", i + 1),
                format!("{key}={value}"),
            );
        }
        objects.push(KubeObject::StorageClass(StorageClass {
            metadata: meta(&names.storage_class, false),
            provisioner: "ebs.csi.aws.com".into(),
            parameters: Some(parameters),
            reclaim_policy: Some("Delete".into()),
            volume_binding_mode: Some("WaitForFirstConsumer".into()),
            allow_volume_expansion: Some(true),
            ..Default::default()
        }));
    }

    let ws = spec.workspace();
    let secret = |name: &str, data: Option<BTreeMap<String, String>>| {
        KubeObject::Secret(Secret {
            metadata: meta(name, true),
            type_: Some("Opaque".into()),
            string_data: data,
            ..Default::default()
        })
    };
    objects.push(secret(
        &names.authorized_keys,
        string_data(&[("authorized_keys", &secrets.authorized_keys)]),
    ));
    objects.push(secret(
        &names.host_key,
        string_data(&[
            ("ssh_host_ed25519_key", &secrets.host_private_key),
            ("ssh_host_ed25519_key.pub", &secrets.host_public_key),
        ]),
    ));
    if ws.jupyter {
        objects.push(secret(
            &names.jupyter_token,
            string_data(&[("token", &secrets.jupyter_token)]),
        ));
    }

    objects.push(secret(
        &names.activity_token,
        string_data(&[("token", &secrets.activity_token)]),
    ));

    objects.push(KubeObject::ConfigMap(ConfigMap {
        metadata: meta(&names.setup, true),
        data: Some(BTreeMap::from([
            ("setup.sh".into(), SETUP_SCRIPT.into()),
            ("activity.py".into(), ACTIVITY_SCRIPT.into()),
        ])),
        ..Default::default()
    }));

    objects.push(KubeObject::PersistentVolumeClaim(PersistentVolumeClaim {
        metadata: meta(&names.volume, true),
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: match class {
                VolumeClass::Lab => Some(names.storage_class.clone()),
                VolumeClass::Named(name) => Some(name.clone()),
                // Unset: the cluster's default StorageClass.
                VolumeClass::ClusterDefault => None,
            },
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".into(),
                    quantity(&spec.volume_size.text),
                )])),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }));

    objects.push(KubeObject::StatefulSet(workload(spec, id, &names)));

    let mut service_ports = vec![service_port("ssh", ports::SSH)];
    if ws.jupyter {
        service_ports.push(service_port("jupyter", ports::JUPYTER));
    }
    let selector = Some(BTreeMap::from([(
        WORKSPACE_LABEL.to_string(),
        names.workload.clone(),
    )]));
    objects.push(KubeObject::Service(Service {
        metadata: meta(&names.service, true),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: selector.clone(),
            ports: Some(service_ports.clone()),
            ..Default::default()
        }),
        ..Default::default()
    }));
    if spec.access().mode == AccessMode::LoadBalancer {
        let mut metadata = meta(&names.load_balancer, true);
        // The in-tree AWS cloud provider makes an NLB with the type annotation (without it, a Classic
        // ELB), and puts the additional tags on it and its target groups (cloud-provider-aws,
        // aws_loadbalancer.go), so `down` finds and deletes them by the lab's ID even when the
        // cluster is gone.
        let tags = [
            (LAB_KEY, spec.name()),
            (LAB_ID_KEY, id.as_str()),
            (MANAGED_KEY, "true"),
        ]
        .map(|(k, v)| format!("{k}={v}"))
        .join(",");
        metadata.annotations = Some(BTreeMap::from([
            (
                "service.beta.kubernetes.io/aws-load-balancer-type".into(),
                "nlb".into(),
            ),
            (LOAD_BALANCER_TAGS_ANNOTATION.into(), tags),
        ]));
        objects.push(KubeObject::Service(Service {
            metadata,
            spec: Some(ServiceSpec {
                type_: Some("LoadBalancer".into()),
                selector,
                // SSH only: Jupyter speaks plain HTTP with a token, which a public address would carry
                // in clear text. `gpulab jupyter` reaches it through the API server instead.
                ports: Some(vec![service_port("ssh", ports::SSH)]),
                load_balancer_source_ranges: Some(
                    spec.spec
                        .access
                        .allowed_cidrs
                        .iter()
                        .map(|n| n.trunc().to_string())
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }));
    }
    objects
}

fn service_port(name: &str, port: u16) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        port: port.into(),
        target_port: Some(IntOrString::Int(port.into())),
        protocol: Some("TCP".into()),
        ..Default::default()
    }
}

/// The workspace's StatefulSet of one: whenever its pod is gone (its node stopped, replaced or
/// interrupted), the controller makes `<workload>-0` again, which mounts the same `/workspace` claim.
/// A StatefulSet rather than a Deployment because it never runs two pods at once: the old one is gone
/// before the new one starts, as a ReadWriteOnce EBS volume needs.
fn workload(spec: &ValidSpec, id: &LabId, names: &KubeNames) -> StatefulSet {
    let pod = pod(spec, id, names);
    let selector = BTreeMap::from([(WORKSPACE_LABEL.to_string(), names.workload.clone())]);
    StatefulSet {
        metadata: meta(spec, id, &names.workload, true),
        spec: Some(StatefulSetSpec {
            replicas: Some(1),
            service_name: Some(names.service.clone()),
            selector: LabelSelector {
                match_labels: Some(selector),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(pod.metadata),
                spec: pod.spec,
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The workspace pod, as the StatefulSet's template makes it.
fn pod(spec: &ValidSpec, id: &LabId, names: &KubeNames) -> Pod {
    let ws = spec.workspace();
    let gpus = quantity(&ws.gpus.to_string());
    let mut labels = naming::kube_labels(&spec.spec, id);
    labels.insert(WORKSPACE_LABEL.into(), names.workload.clone());

    // NVIDIA_VISIBLE_DEVICES is deliberately not set: the device plugin sets it to the GPUs it allocated,
    // and "all" (as the original manifest had it) would expose every GPU of the node to this pod.
    let packages = WorkspacePackages::for_spec(spec);
    let mut env = vec![
        // One environment for every way in: exec through the API server gets the container's, and the
        // setup script hands the same to login shells, SSH sessions, Jupyter and Slurm jobs. The venv
        // comes first on PATH (the image's PATH is not visible here, so it is given in full: the CUDA
        // images' own, with /opt/venv of a `gpulab image build` image after the workspace's venv).
        env_var("PATH", &workspace_path()),
        env_var("VIRTUAL_ENV", VENV),
        env_var("GPULAB_VENV", VENV),
        env_var("NVIDIA_DRIVER_CAPABILITIES", "compute,utility"),
        env_var("GPULAB_JUPYTER", if ws.jupyter { "1" } else { "0" }),
        env_var(
            "GPULAB_JUPYTER_PACKAGES",
            &crate::versions::JUPYTER_PACKAGES.join(" "),
        ),
        // Jupyter is reached through the API server's port-forward (or an SSH tunnel), which connects to
        // the pod's loopback: it need not listen anywhere else, load balancer or not.
        env_var("GPULAB_JUPYTER_IP", "127.0.0.1"),
        env_var("GPULAB_APT_PACKAGES", &packages.apt.join(" ")),
        env_var("GPULAB_PIP_PACKAGES", &packages.python.join(" ")),
    ];
    if let (Some(torch), Some(index)) = (&packages.torch, &packages.torch_index) {
        env.push(env_var("GPULAB_TORCH", torch));
        env.push(env_var("GPULAB_TORCH_INDEX", index));
    }
    // Every cache on the volume: models, compiled kernels and wheels survive restarts, and large models
    // do not fill the node's root disk (DiskPressure would evict the pod).
    env.extend(CACHE_ENV.iter().map(|(k, v)| env_var(k, v)));
    env.extend(spec.stack.env.iter().map(|(k, v)| env_var(k, v)));
    env.push(env_var(
        "GPULAB_ACTIVITY_TOKEN_FILE",
        &format!("{ACTIVITY_TOKEN_DIR}/token"),
    ));
    let mut ports_list = vec![
        ContainerPort {
            name: Some("ssh".into()),
            container_port: ports::SSH.into(),
            ..Default::default()
        },
        ContainerPort {
            name: Some("activity".into()),
            container_port: ACTIVITY_PORT.into(),
            ..Default::default()
        },
    ];
    if ws.jupyter {
        env.push(EnvVar {
            name: "JUPYTER_TOKEN".into(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: names.jupyter_token.clone(),
                    key: "token".into(),
                    optional: None,
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        ports_list.push(ContainerPort {
            name: Some("jupyter".into()),
            container_port: ports::JUPYTER.into(),
            ..Default::default()
        });
    }

    let secret_volume = |name: &str, secret: &str| Volume {
        name: name.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.into()),
            default_mode: Some(0o400),
            ..Default::default()
        }),
        ..Default::default()
    };
    // PyTorch's DataLoader workers and NCCL share memory through /dev/shm; the container default is 64 MiB.
    let shm_limit = format!("{}Gi", (spec.memory.as_gib() / 2.0).floor().max(1.0) as u64);

    Pod {
        metadata: ObjectMeta {
            labels: Some(labels),
            ..Default::default()
        },
        spec: Some(PodSpec {
            // The workspace never calls the Kubernetes API; without a token, code run in it cannot
            // either.
            automount_service_account_token: Some(false),
            // The preStop notice's wait (20 s) and sshd's and Jupyter's shutdown fit in it.
            termination_grace_period_seconds: Some(60),
            containers: vec![Container {
                name: "workspace".into(),
                image: Some(spec.image.clone()),
                command: Some(vec!["/bin/bash".into(), format!("{SETUP_DIR}/setup.sh")]),
                working_dir: Some(WORKSPACE_DIR.into()),
                env: Some(env),
                ports: Some(ports_list),
                resources: Some(ResourceRequirements {
                    requests: Some(BTreeMap::from([
                        ("cpu".into(), quantity(&spec.cpu.text)),
                        // The root filesystem holds only what the setup installs with apt (the caches
                        // are on the volume); the request keeps the pod off a node without room.
                        ("ephemeral-storage".into(), quantity(EPHEMERAL_STORAGE)),
                        ("memory".into(), quantity(&spec.memory.text)),
                        (GPU_RESOURCE.into(), gpus.clone()),
                    ])),
                    // No CPU limit: the pod may burst into idle cores. Memory is limited to what it requested,
                    // so it cannot starve the node's system pods.
                    limits: Some(BTreeMap::from([
                        ("memory".into(), quantity(&spec.memory.text)),
                        (GPU_RESOURCE.into(), gpus),
                    ])),
                    ..Default::default()
                }),
                volume_mounts: Some(vec![
                    volume_mount("workspace", WORKSPACE_DIR, false),
                    volume_mount("setup", SETUP_DIR, true),
                    volume_mount("authorized-keys", AUTHORIZED_KEYS_DIR, true),
                    volume_mount("host-key", HOST_KEY_DIR, true),
                    volume_mount("activity-token", ACTIVITY_TOKEN_DIR, true),
                    volume_mount("dshm", "/dev/shm", false),
                ]),
                // Before the container stops (a node drained for a spot interruption or a
                // replacement, `stop`, `down`): a notice on every terminal and in
                // /workspace/.gpulab/notice, and time for a training script to checkpoint.
                lifecycle: Some(Lifecycle {
                    pre_stop: Some(LifecycleHandler {
                        exec: Some(ExecAction {
                            command: Some(vec![
                                "/bin/sh".into(),
                                "-c".into(),
                                format!(
                                    "command -v python3 >/dev/null 2>&1 && exec python3 {SETUP_DIR}/activity.py prestop; exit 0"
                                ),
                            ]),
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                // Ready means set up: the script starts sshd last.
                readiness_probe: Some(Probe {
                    tcp_socket: Some(TCPSocketAction {
                        port: IntOrString::Int(ports::SSH.into()),
                        host: None,
                    }),
                    period_seconds: Some(5),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            tolerations: Some(vec![Toleration {
                key: Some(GPU_TAINT.0.into()),
                operator: Some("Exists".into()),
                effect: Some(GPU_TAINT.2.into()),
                ..Default::default()
            }]),
            volumes: Some(vec![
                Volume {
                    name: "workspace".into(),
                    persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                        claim_name: names.volume.clone(),
                        read_only: None,
                    }),
                    ..Default::default()
                },
                Volume {
                    name: "setup".into(),
                    config_map: Some(ConfigMapVolumeSource {
                        name: names.setup.clone(),
                        default_mode: Some(0o555),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                secret_volume("authorized-keys", &names.authorized_keys),
                secret_volume("host-key", &names.host_key),
                secret_volume("activity-token", &names.activity_token),
                Volume {
                    name: "dshm".into(),
                    empty_dir: Some(EmptyDirVolumeSource {
                        medium: Some("Memory".into()),
                        size_limit: Some(quantity(&shm_limit)),
                    }),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        }),
        ..Default::default()
    }
}
