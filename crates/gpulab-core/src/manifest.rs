//! Kubernetes objects as gpulab renders them: typed k8s-openapi values, one enum over the kinds a lab
//! uses, so a plan can list them and a workspace manager can apply them.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{
    ConfigMap, Namespace, PersistentVolumeClaim, Pod, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::{Metadata, Resource};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams};
use serde::{Deserialize, Serialize};

use crate::cluster::{Deletion, cluster_error, delete_owned, is_not_found};
use crate::naming::{LAB_ID_KEY, LabId};
use crate::{Error, Result};

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

macro_rules! each_kind {
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

    /// The object as messages name it: "Kind namespace/name", or "Kind name" when cluster-scoped.
    pub fn describe(&self) -> String {
        match self.namespace() {
            Some(namespace) => format!("{} {namespace}/{}", self.kind(), self.name()),
            None => format!("{} {}", self.kind(), self.name()),
        }
    }

    /// Create or update the object with server-side apply (idempotent; gpulab's fields win conflicts
    /// with other field managers). An object of the same name that does not carry lab `id`'s label is
    /// never applied over: that is an [`Error::Ownership`].
    pub async fn apply_owned(&self, client: &kube::Client, id: &LabId) -> Result<()> {
        let api = self.api(client);
        match api.get(self.name()).await {
            Ok(existing) if !id.owns_map(existing.metadata.labels.as_ref()) => {
                return Err(Error::Ownership {
                    resource: self.describe(),
                    message: format!("it exists without the label {LAB_ID_KEY}={id}"),
                    hint: "another tool, person or lab made it: choose another name for the lab's objects (--pod-name, --namespace), or remove it yourself".into(),
                });
            }
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(cluster_error(&format!("read {}", self.describe()), e)),
        }
        let params = PatchParams::apply(FIELD_MANAGER).force();
        api.patch(self.name(), &params, &Patch::Apply(self))
            .await
            .map_err(|e| cluster_error(&format!("apply {}", self.describe()), e))?;
        Ok(())
    }

    /// Delete the object if it carries lab `id`'s label (see [`crate::cluster::delete_owned`]).
    pub async fn delete_owned(&self, client: &kube::Client, id: &LabId) -> Result<Deletion> {
        delete_owned(
            &self.api(client),
            self.name(),
            id,
            DeleteParams::background(),
        )
        .await
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
