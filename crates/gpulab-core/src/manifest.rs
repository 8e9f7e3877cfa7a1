//! Kubernetes objects as gpulab renders them: typed k8s-openapi values, one enum over the kinds a lab
//! uses, so a plan can list them and a workspace manager can apply them.

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{
    ConfigMap, Namespace, PersistentVolumeClaim, Pod, Secret, Service,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::{Metadata, Resource};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams};
use serde::{Deserialize, Serialize};

use crate::Result;
use crate::cluster::{cluster_error, is_not_found};

/// The field manager gpulab's server-side applies use, so re-applies update only gpulab's fields.
pub const FIELD_MANAGER: &str = "gpulab";

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
    /// The GPU development pod.
    Pod(Pod),
    /// Access to SSH and Jupyter.
    Service(Service),
    /// The NVIDIA device plugin.
    DaemonSet(DaemonSet),
}

macro_rules! each_kind {
    ($self:expr, $obj:ident => $body:expr) => {
        match $self {
            KubeObject::Namespace($obj) => $body,
            KubeObject::StorageClass($obj) => $body,
            KubeObject::Secret($obj) => $body,
            KubeObject::ConfigMap($obj) => $body,
            KubeObject::PersistentVolumeClaim($obj) => $body,
            KubeObject::Pod($obj) => $body,
            KubeObject::Service($obj) => $body,
            KubeObject::DaemonSet($obj) => $body,
        }
    };
}

fn kind_of<K: Resource>(_: &K) -> &'static str {
    K::KIND
}

fn api_resource_of<K: kube::Resource<DynamicType = ()>>(_: &K) -> ApiResource {
    ApiResource::erase::<K>(&())
}

impl KubeObject {
    /// The object's kind, e.g. "Pod".
    pub fn kind(&self) -> &'static str {
        each_kind!(self, o => kind_of(o))
    }

    /// The object's metadata.
    pub fn metadata(&self) -> &ObjectMeta {
        each_kind!(self, o => o.metadata())
    }

    /// The object's name.
    pub fn name(&self) -> &str {
        self.metadata().name.as_deref().unwrap_or_default()
    }

    /// The object's namespace; `None` for cluster-scoped kinds.
    pub fn namespace(&self) -> Option<&str> {
        self.metadata().namespace.as_deref()
    }

    /// The API to reach this object by: namespaced or cluster-wide.
    fn api(&self, client: &kube::Client) -> Api<DynamicObject> {
        let resource = each_kind!(self, o => api_resource_of(o));
        match self.namespace() {
            Some(namespace) => Api::namespaced_with(client.clone(), namespace, &resource),
            None => Api::all_with(client.clone(), &resource),
        }
    }

    /// Create or update the object with server-side apply (idempotent; gpulab's fields win conflicts).
    pub async fn apply(&self, client: &kube::Client) -> Result<()> {
        let params = PatchParams::apply(FIELD_MANAGER).force();
        self.api(client)
            .patch(self.name(), &params, &Patch::Apply(self))
            .await
            .map_err(|e| cluster_error(&format!("apply {} {}", self.kind(), self.name()), e))?;
        Ok(())
    }

    /// Delete the object; true if it existed.
    pub async fn delete(&self, client: &kube::Client) -> Result<bool> {
        match self
            .api(client)
            .delete(self.name(), &DeleteParams::background())
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(cluster_error(
                &format!("delete {} {}", self.kind(), self.name()),
                e,
            )),
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
