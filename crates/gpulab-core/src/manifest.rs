//! Applying and deleting the objects the model renders ([`KubeObject`], `gpulab_model::manifests`):
//! server-side apply under gpulab's field manager, never over an object that is not the lab's.

use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams};

pub use gpulab_model::manifests::{ApiType, KubeObject, autostop, device_plugin, workspace};

use crate::cluster::{Deletion, cluster_error, delete_owned, is_not_found};
use crate::naming::{LAB_ID_KEY, LabId};
use crate::{Error, Result};

/// The field manager gpulab's server-side applies use, so re-applies update only gpulab's fields.
pub const FIELD_MANAGER: &str = "gpulab";

/// The API to reach `object` by: namespaced or cluster-wide.
fn api(object: &KubeObject, client: &kube::Client) -> Api<DynamicObject> {
    let ApiType {
        group,
        version,
        api_version,
        kind,
        plural,
    } = object.api_type();
    let resource = ApiResource {
        group: group.into(),
        version: version.into(),
        api_version: api_version.into(),
        kind: kind.into(),
        plural: plural.into(),
    };
    match object.namespace() {
        Some(namespace) => Api::namespaced_with(client.clone(), namespace, &resource),
        None => Api::all_with(client.clone(), &resource),
    }
}

/// What a lab does with the objects it renders, in a cluster.
#[allow(async_fn_in_trait)] // used within gpulab-core, never as a trait object
pub trait ApplyOwned {
    /// Create or update the object with server-side apply (idempotent; gpulab's fields win conflicts
    /// with other field managers). An object of the same name that does not carry lab `id`'s label is
    /// never applied over: that is an [`Error::Ownership`].
    async fn apply_owned(&self, client: &kube::Client, id: &LabId) -> Result<()>;

    /// Delete the object if it carries lab `id`'s label (see [`crate::cluster::delete_owned`]).
    async fn delete_owned(&self, client: &kube::Client, id: &LabId) -> Result<Deletion>;
}

impl ApplyOwned for KubeObject {
    async fn apply_owned(&self, client: &kube::Client, id: &LabId) -> Result<()> {
        let api = api(self, client);
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

    async fn delete_owned(&self, client: &kube::Client, id: &LabId) -> Result<Deletion> {
        delete_owned(
            &api(self, client),
            self.name(),
            id,
            DeleteParams::background(),
        )
        .await
    }
}
