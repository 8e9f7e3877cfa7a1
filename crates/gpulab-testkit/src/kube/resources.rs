//! The resource kinds the emulator serves, and the discovery documents that describe them.

use serde_json::{Value, json};

/// One served resource (a group/version/kind and its REST name).
#[derive(Debug)]
pub(crate) struct ResourceDef {
    /// API group, "" for the core group.
    pub(crate) group: &'static str,
    pub(crate) version: &'static str,
    pub(crate) kind: &'static str,
    /// REST path segment (plural).
    pub(crate) plural: &'static str,
    pub(crate) singular: &'static str,
    pub(crate) namespaced: bool,
    pub(crate) short_names: &'static [&'static str],
    /// Subresources besides `status` (which every kind with `has_status` gets).
    pub(crate) subresources: &'static [(&'static str, &'static str, &'static [&'static str])],
    pub(crate) has_status: bool,
}

impl ResourceDef {
    /// `v1` or `apps/v1`.
    pub(crate) fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// How error messages name the resource: `pods`, `daemonsets.apps`.
    pub(crate) fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

macro_rules! res {
    ($group:expr, $kind:expr, $plural:expr, $singular:expr, $ns:expr, $short:expr, $status:expr, $subs:expr) => {
        ResourceDef {
            group: $group,
            version: "v1",
            kind: $kind,
            plural: $plural,
            singular: $singular,
            namespaced: $ns,
            short_names: $short,
            subresources: $subs,
            has_status: $status,
        }
    };
}

/// Index of each kind in [`RESOURCES`].
pub(crate) const NAMESPACE: usize = 0;
pub(crate) const NODE: usize = 1;
pub(crate) const POD: usize = 2;
pub(crate) const SERVICE: usize = 3;
pub(crate) const SECRET: usize = 4;
pub(crate) const CONFIG_MAP: usize = 5;
pub(crate) const PVC: usize = 6;
pub(crate) const PV: usize = 7;
pub(crate) const EVENT: usize = 8;
pub(crate) const SERVICE_ACCOUNT: usize = 9;
pub(crate) const DAEMON_SET: usize = 10;
pub(crate) const DEPLOYMENT: usize = 11;
pub(crate) const STORAGE_CLASS: usize = 12;
/// (13: CSI drivers, stored only.)
pub(crate) const STATEFUL_SET: usize = 14;

/// The `scale` subresource of workloads (autoscaling/v1 Scale).
const SCALE_SUBS: &[(&str, &str, &[&str])] = &[("scale", "Scale", &["get", "patch", "update"])];

const POD_SUBS: &[(&str, &str, &[&str])] = &[
    ("exec", "PodExecOptions", &["create", "get"]),
    ("log", "Pod", &["get"]),
    ("portforward", "PodPortForwardOptions", &["create", "get"]),
];

/// Every kind the emulator stores.
pub(crate) static RESOURCES: &[ResourceDef] = &[
    res!(
        "",
        "Namespace",
        "namespaces",
        "namespace",
        false,
        &["ns"],
        true,
        &[]
    ),
    res!("", "Node", "nodes", "node", false, &["no"], true, &[]),
    res!("", "Pod", "pods", "pod", true, &["po"], true, POD_SUBS),
    res!(
        "",
        "Service",
        "services",
        "service",
        true,
        &["svc"],
        true,
        &[]
    ),
    res!("", "Secret", "secrets", "secret", true, &[], false, &[]),
    res!(
        "",
        "ConfigMap",
        "configmaps",
        "configmap",
        true,
        &["cm"],
        false,
        &[]
    ),
    res!(
        "",
        "PersistentVolumeClaim",
        "persistentvolumeclaims",
        "persistentvolumeclaim",
        true,
        &["pvc"],
        true,
        &[]
    ),
    res!(
        "",
        "PersistentVolume",
        "persistentvolumes",
        "persistentvolume",
        false,
        &["pv"],
        true,
        &[]
    ),
    res!("", "Event", "events", "event", true, &["ev"], false, &[]),
    res!(
        "",
        "ServiceAccount",
        "serviceaccounts",
        "serviceaccount",
        true,
        &["sa"],
        false,
        &[]
    ),
    res!(
        "apps",
        "DaemonSet",
        "daemonsets",
        "daemonset",
        true,
        &["ds"],
        true,
        &[]
    ),
    res!(
        "apps",
        "Deployment",
        "deployments",
        "deployment",
        true,
        &["deploy"],
        true,
        SCALE_SUBS
    ),
    res!(
        "storage.k8s.io",
        "StorageClass",
        "storageclasses",
        "storageclass",
        false,
        &["sc"],
        false,
        &[]
    ),
    // What a CSI driver registers (an EKS cluster with the EBS CSI addon has `ebs.csi.aws.com`).
    res!(
        "storage.k8s.io",
        "CSIDriver",
        "csidrivers",
        "csidriver",
        false,
        &[],
        false,
        &[]
    ),
    res!(
        "apps",
        "StatefulSet",
        "statefulsets",
        "statefulset",
        true,
        &["sts"],
        true,
        SCALE_SUBS
    ),
    // Roles and their bindings: stored only. The emulator authorises nothing (any token may do
    // anything), so tests check a Role's rules by reading them.
    res!(
        "rbac.authorization.k8s.io",
        "Role",
        "roles",
        "role",
        true,
        &[],
        false,
        &[]
    ),
    res!(
        "rbac.authorization.k8s.io",
        "RoleBinding",
        "rolebindings",
        "rolebinding",
        true,
        &[],
        false,
        &[]
    ),
];

/// The resource whose plural is `plural` (any group).
pub(crate) fn by_plural(plural: &str) -> Option<usize> {
    RESOURCES.iter().position(|r| r.plural == plural)
}

/// The resource served at `group/version/plural`.
pub(crate) fn find(group: &str, version: &str, plural: &str) -> Option<usize> {
    RESOURCES
        .iter()
        .position(|r| r.group == group && r.version == version && r.plural == plural)
}

/// The groups besides core, in discovery order.
fn groups() -> Vec<&'static str> {
    let mut out: Vec<&str> = Vec::new();
    for r in RESOURCES {
        if !r.group.is_empty() && !out.contains(&r.group) {
            out.push(r.group);
        }
    }
    out
}

/// `GET /version`.
pub(crate) fn version() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": "v1.33.0-gpulab-emulator",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-04-23T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": "linux/amd64"
    })
}

/// `GET /api`.
pub(crate) fn core_versions(server: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server}]
    })
}

fn group_json(group: &str) -> Value {
    let gv = json!({"groupVersion": format!("{group}/v1"), "version": "v1"});
    json!({"name": group, "versions": [gv.clone()], "preferredVersion": gv})
}

/// `GET /apis`.
pub(crate) fn group_list() -> Value {
    json!({
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": groups().into_iter().map(group_json).collect::<Vec<_>>()
    })
}

/// `GET /apis/{group}`, if served.
pub(crate) fn group(group: &str) -> Option<Value> {
    groups().contains(&group).then(|| {
        let mut g = group_json(group);
        g["kind"] = json!("APIGroup");
        g["apiVersion"] = json!("v1");
        g
    })
}

/// `GET /api/v1` or `GET /apis/{group}/v1`, if served.
pub(crate) fn resource_list(group: &str, version: &str) -> Option<Value> {
    let defs: Vec<&ResourceDef> = RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .collect();
    if defs.is_empty() {
        return None;
    }
    let mut resources = Vec::new();
    for r in &defs {
        let mut entry = json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": VERBS,
        });
        if !r.short_names.is_empty() {
            entry["shortNames"] = json!(r.short_names);
        }
        if matches!(
            r.kind,
            "Pod" | "Service" | "DaemonSet" | "Deployment" | "StatefulSet"
        ) {
            entry["categories"] = json!(["all"]);
        }
        resources.push(entry);
        if r.has_status {
            resources.push(json!({
                "name": format!("{}/status", r.plural),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
        for (sub, kind, verbs) in r.subresources {
            resources.push(json!({
                "name": format!("{}/{sub}", r.plural),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": kind,
                "verbs": verbs,
            }));
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": gv,
        "resources": resources,
    }))
}

/// `GET /openapi/v3`: the index of per-group-version documents.
pub(crate) fn openapi_root() -> Value {
    let mut paths = serde_json::Map::new();
    let mut gvs = vec![String::from("api/v1")];
    gvs.extend(groups().into_iter().map(|g| format!("apis/{g}/v1")));
    for gv in gvs {
        let url = format!("/openapi/v3/{gv}?hash=0000000000000000");
        paths.insert(gv, json!({"serverRelativeURL": url}));
    }
    json!({"paths": paths})
}

/// `GET /openapi/v3/{api/v1 | apis/group/v1}`: a skeleton OpenAPI document with one PATCH operation
/// per kind that accepts `fieldValidation`, so that kubectl leaves validation to the server instead
/// of downloading schemas (it has no schemas: the emulator does not validate fields).
pub(crate) fn openapi_gv(gv: &str) -> Option<Value> {
    let (group, version) = match gv.split('/').collect::<Vec<_>>().as_slice() {
        ["api", v] => (String::new(), v.to_string()),
        ["apis", g, v] => (g.to_string(), v.to_string()),
        _ => return None,
    };
    let mut paths = serde_json::Map::new();
    for r in RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        let ns = if r.namespaced {
            "/namespaces/{namespace}"
        } else {
            ""
        };
        let path = format!("/{gv}{ns}/{}/{{name}}", r.plural);
        paths.insert(
            path,
            json!({"patch": {
                "operationId": format!("patch{}", r.kind),
                "x-kubernetes-group-version-kind": {"group": r.group, "version": r.version, "kind": r.kind},
                "x-kubernetes-action": "patch",
                "parameters": [
                    {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
                    {"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
                    {"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
                ],
                "responses": {"200": {"description": "OK"}},
            }}),
        );
    }
    if paths.is_empty() {
        return None;
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0-gpulab-emulator"},
        "paths": paths,
        "components": {"schemas": {}},
    }))
}
