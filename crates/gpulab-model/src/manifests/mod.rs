//! Kubernetes objects as gpulab renders them, without I/O: typed k8s-openapi values, one enum over the
//! kinds a lab uses, and the renderers of every object a lab applies (the workspace, the device plugin,
//! the autostop agent). `gpulab plan` shows exactly what `up` applies; gpulab-core applies them.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{
    ConfigMap, EnvVar, Namespace, PersistentVolumeClaim, Pod, Secret, Service, ServiceAccount,
    VolumeMount,
};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::{Metadata, Resource};
use serde::{Deserialize, Serialize};

pub mod autostop;
pub mod device_plugin;
pub mod workspace;

/// A container's environment variable with a literal value.
pub fn env_var(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..Default::default()
    }
}

/// A container's mount of the pod's volume `name` at `path`.
pub fn volume_mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: read_only.then_some(true),
        ..Default::default()
    }
}

/// One Kubernetes object a lab creates. Serialises as the object itself (with `apiVersion` and `kind`),
/// and deserialises by those two fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
#[allow(clippy::large_enum_variant)] // a handful per lab; boxing would only add noise
pub enum KubeObject {
    /// The lab's namespace.
    Namespace(Namespace),
    /// The encrypted gp3 StorageClass for `/workspace`.
    StorageClass(StorageClass),
    /// SSH keys and the Jupyter token.
    Secret(Secret),
    /// The setup script, the device plugin's config.
    ConfigMap(ConfigMap),
    /// The `/workspace` volume.
    PersistentVolumeClaim(PersistentVolumeClaim),
    /// The GPU development pod (a bare one; the workspace itself runs under a StatefulSet).
    Pod(Pod),
    /// The workspace: a StatefulSet of one GPU development pod.
    StatefulSet(StatefulSet),
    /// Access to SSH and Jupyter.
    Service(Service),
    /// The NVIDIA device plugin.
    DaemonSet(DaemonSet),
    /// The autostop agent's identity.
    ServiceAccount(ServiceAccount),
    /// The autostop agent's permissions in the lab's namespace.
    Role(Role),
    /// The autostop agent's Role, bound to its service account.
    RoleBinding(RoleBinding),
    /// The autostop agent.
    Deployment(Deployment),
}

/// `$body` for the object inside each variant (bound to `$obj`).
macro_rules! each_kube_kind {
    ($self:expr, $obj:ident => $body:expr) => {
        match $self {
            KubeObject::Namespace($obj) => $body,
            KubeObject::StorageClass($obj) => $body,
            KubeObject::Secret($obj) => $body,
            KubeObject::ConfigMap($obj) => $body,
            KubeObject::PersistentVolumeClaim($obj) => $body,
            KubeObject::Pod($obj) => $body,
            KubeObject::StatefulSet($obj) => $body,
            KubeObject::Service($obj) => $body,
            KubeObject::DaemonSet($obj) => $body,
            KubeObject::ServiceAccount($obj) => $body,
            KubeObject::Role($obj) => $body,
            KubeObject::RoleBinding($obj) => $body,
            KubeObject::Deployment($obj) => $body,
        }
    };
}

/// Where the API serves a kind: what a client needs to reach objects of it without their Rust type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiType {
    /// The API group ("" for the core group).
    pub group: &'static str,
    /// The group's version ("v1").
    pub version: &'static str,
    /// `group/version`, or `version` for the core group.
    pub api_version: &'static str,
    /// The kind ("Pod").
    pub kind: &'static str,
    /// The URL's plural ("pods").
    pub plural: &'static str,
}

fn api_type_of<K: Resource>(_: &K) -> ApiType {
    ApiType {
        group: K::GROUP,
        version: K::VERSION,
        api_version: K::API_VERSION,
        kind: K::KIND,
        plural: K::URL_PATH_SEGMENT,
    }
}

impl KubeObject {
    /// The object's kind, e.g. "Pod".
    pub fn kind(&self) -> &'static str {
        self.api_type().kind
    }

    /// Where the API serves the object's kind.
    pub fn api_type(&self) -> ApiType {
        each_kube_kind!(self, o => api_type_of(o))
    }

    /// The object's metadata.
    pub fn metadata(&self) -> &ObjectMeta {
        each_kube_kind!(self, o => o.metadata())
    }

    /// The object's name.
    pub fn name(&self) -> &str {
        self.metadata().name.as_deref().unwrap_or_default()
    }

    /// The object's namespace; `None` for cluster-scoped kinds.
    pub fn namespace(&self) -> Option<&str> {
        self.metadata().namespace.as_deref()
    }

    /// The object as messages name it: "Kind namespace/name", or "Kind name" when cluster-scoped.
    pub fn describe(&self) -> String {
        match self.namespace() {
            Some(namespace) => format!("{} {namespace}/{}", self.kind(), self.name()),
            None => format!("{} {}", self.kind(), self.name()),
        }
    }

    /// The objects as one multi-document YAML stream, as `kubectl apply -f` takes it.
    pub fn to_yaml_stream(objects: &[KubeObject]) -> String {
        objects
            .iter()
            .map(|o| serde_yaml::to_string(o).expect("k8s-openapi objects always serialise"))
            .collect::<Vec<_>>()
            .join("---\n")
    }

    /// Parse a multi-document YAML stream back into objects; fails on a kind gpulab does not render.
    pub fn from_yaml_stream(text: &str) -> Result<Vec<KubeObject>, serde_yaml::Error> {
        serde_yaml::Deserializer::from_str(text)
            .map(KubeObject::deserialize)
            .collect()
    }
}
