//! The agent in the cluster: put it there (or take it away), read the state it keeps, and scale a
//! workspace on an existing cluster the way the agent does.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{Patch, PatchParams};

use super::{AgentState, Settings, agent_objects};
use crate::cluster::{Deletion, cluster_error, is_not_found};
use crate::manifest::{ApplyOwned, FIELD_MANAGER, KubeObject};
use crate::naming::{KubeNames, LAB_ID_KEY, LabId};
use crate::spec::ValidSpec;
use crate::{Error, Result};

/// Run the agent with `settings`: apply its objects, in order (a rerun updates them; its state is kept).
pub(crate) async fn apply(
    client: &kube::Client,
    spec: &ValidSpec,
    id: &LabId,
    settings: &Settings,
) -> Result<()> {
    for object in agent_objects(spec, id, settings) {
        object.apply_owned(client, id).await?;
    }
    Ok(())
}

/// Stop running the agent: delete its objects but its state (what it counted stays for `status`).
/// Returns how many it deleted.
pub(crate) async fn remove(client: &kube::Client, spec: &ValidSpec, id: &LabId) -> Result<usize> {
    let names = KubeNames::new(&spec.spec);
    // The settings' content does not matter for deletion; the objects' names do.
    let settings = Settings::new(
        spec,
        id,
        super::Target::Statefulset {
            namespace: names.namespace.clone(),
            name: names.workload.clone(),
        },
        0.0,
        std::time::UNIX_EPOCH,
    );
    let mut deleted = 0;
    for object in agent_objects(spec, id, &settings).iter().rev() {
        if matches!(object, KubeObject::ConfigMap(cm) if cm.metadata.name.as_deref() == Some(&names.autostop_state))
        {
            continue;
        }
        if matches!(object.delete_owned(client, id).await?, Deletion::Deleted) {
            deleted += 1;
        }
    }
    Ok(deleted)
}

/// The state the agent last wrote, or `None` when it has written none (or never ran).
pub async fn read_state(client: &kube::Client, spec: &ValidSpec) -> Result<Option<AgentState>> {
    let names = KubeNames::new(&spec.spec);
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), &names.namespace);
    let map = match maps.get(&names.autostop_state).await {
        Ok(map) => map,
        Err(e) if is_not_found(&e) => return Ok(None),
        Err(e) => {
            return Err(cluster_error(
                &format!("read the autostop agent's state {}", names.autostop_state),
                e,
            ));
        }
    };
    let Some(text) = map.data.as_ref().and_then(|d| d.get("state.json")) else {
        return Ok(None);
    };
    serde_json::from_str(text).map(Some).map_err(|e| Error::Cluster {
        message: format!(
            "the autostop agent's state in ConfigMap {}/{} is not what gpulab reads: {e}",
            names.namespace, names.autostop_state
        ),
        hint: Some(
            "the agent rewrites it every 30 s; if this persists, `gpulab up` installs the agent again"
                .into(),
        ),
        cause: None,
    })
}

/// Scale lab `id`'s workspace StatefulSet to `replicas` through its `scale` subresource (how `stop`
/// and `start` work on a cluster gpulab did not make, and what the agent does there). One of that name
/// without the lab's label is not touched.
pub(crate) async fn scale_workspace(
    client: &kube::Client,
    spec: &ValidSpec,
    id: &LabId,
    replicas: u32,
) -> Result<()> {
    let names = KubeNames::new(&spec.spec);
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), &names.namespace);
    let describe = format!("StatefulSet {}/{}", names.namespace, names.workload);
    let set = sets
        .get(&names.workload)
        .await
        .map_err(|e| cluster_error(&format!("read {describe}"), e))?;
    if !id.owns_map(set.metadata.labels.as_ref()) {
        return Err(Error::Ownership {
            resource: describe,
            message: format!("it exists without the label {LAB_ID_KEY}={id}"),
            hint: "another tool, person or lab made it; gpulab scales only the lab's own workspace"
                .into(),
        });
    }
    sets.patch_scale(
        &names.workload,
        &PatchParams::apply(FIELD_MANAGER),
        &Patch::Merge(serde_json::json!({"spec": {"replicas": replicas}})),
    )
    .await
    .map_err(|e| {
        cluster_error(
            &format!(
                "scale the workspace {}/{} to {replicas}",
                names.namespace, names.workload
            ),
            e,
        )
    })?;
    Ok(())
}
