//! The simulated cluster: the controllers, scheduler and kubelets that a real control plane and its
//! nodes would run, applied synchronously after every write until nothing changes.

use std::collections::{BTreeMap, HashSet};

use serde_json::{Value, json};

use super::resources::{
    CONFIG_MAP, DAEMON_SET, DEPLOYMENT, EVENT, NODE, POD, PV, PVC, SECRET, SERVICE, STATEFUL_SET,
    STORAGE_CLASS,
};
use super::select::quantity_milli;
use super::store::{State, now};

/// The extended resource the NVIDIA device plugin advertises.
pub(crate) const GPU: &str = "nvidia.com/gpu";

/// Run every controller until the cluster is stable.
pub(crate) fn reconcile(st: &mut State) {
    for _ in 0..64 {
        let before = st.rv;
        collect_garbage(st);
        daemonsets(st);
        deployments(st);
        statefulsets(st);
        volumes(st);
        schedule(st);
        kubelet(st);
        readiness(st);
        device_plugin(st);
        services(st);
        if st.rv == before {
            break;
        }
    }
}

fn arr(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or(&[])
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

fn meta<'a>(obj: &'a Value, field: &str) -> &'a str {
    s(&obj["metadata"][field])
}

/// Record a core/v1 Event about `obj`.
pub(crate) fn record_event(
    st: &mut State,
    obj: &Value,
    type_: &str,
    reason: &str,
    message: &str,
    component: &str,
) {
    let ns = match meta(obj, "namespace") {
        "" => "default".to_string(),
        ns => ns.to_string(),
    };
    let name = format!("{}.{:016x}", meta(obj, "name"), st.random());
    let t = now();
    let event = json!({
        "metadata": {"name": name, "namespace": ns},
        "involvedObject": {
            "kind": obj["kind"],
            "namespace": obj["metadata"]["namespace"],
            "name": obj["metadata"]["name"],
            "uid": obj["metadata"]["uid"],
            "apiVersion": obj["apiVersion"],
            "resourceVersion": obj["metadata"]["resourceVersion"],
        },
        "reason": reason,
        "message": message,
        "source": {"component": component},
        "firstTimestamp": t,
        "lastTimestamp": t,
        "count": 1,
        "type": type_,
        "eventTime": null,
        "reportingComponent": component,
        "reportingInstance": "",
    });
    let _ = st.insert(EVENT, event);
}

/// Whether one of `tolerations` tolerates `taint`.
pub(crate) fn tolerates(tolerations: &[Value], taint: &Value) -> bool {
    tolerations.iter().any(|t| {
        let effect = s(&t["effect"]);
        let key = s(&t["key"]);
        let op = t["operator"].as_str().unwrap_or("Equal");
        (effect.is_empty() || effect == s(&taint["effect"]))
            && ((key.is_empty() && op == "Exists") || key == s(&taint["key"]))
            && (op == "Exists" || s(&t["value"]) == s(&taint["value"]))
    })
}

fn expr_matches(e: &Value, value: Option<&str>) -> bool {
    let values: Vec<&str> = arr(&e["values"]).iter().map(s).collect();
    let num = |x: &str| x.parse::<i64>().ok();
    match s(&e["operator"]) {
        "In" => value.is_some_and(|v| values.contains(&v)),
        "NotIn" => !value.is_some_and(|v| values.contains(&v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" => {
            matches!((value.and_then(num), values.first().and_then(|x| num(x))), (Some(a), Some(b)) if a > b)
        }
        "Lt" => {
            matches!((value.and_then(num), values.first().and_then(|x| num(x))), (Some(a), Some(b)) if a < b)
        }
        _ => false,
    }
}

/// Whether the pod spec's nodeSelector and required node affinity accept the node.
pub(crate) fn node_matches(spec: &Value, node: &Value) -> bool {
    let labels = &node["metadata"]["labels"];
    if let Some(sel) = spec["nodeSelector"].as_object()
        && sel.iter().any(|(k, v)| labels.get(k) != Some(v))
    {
        return false;
    }
    let terms = &spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        ["nodeSelectorTerms"];
    if let Some(terms) = terms.as_array() {
        let name = meta(node, "name");
        let term_ok = |t: &Value| {
            let exprs = arr(&t["matchExpressions"]);
            let fields = arr(&t["matchFields"]);
            (!exprs.is_empty() || !fields.is_empty())
                && exprs
                    .iter()
                    .all(|e| expr_matches(e, labels.get(s(&e["key"])).and_then(Value::as_str)))
                && fields
                    .iter()
                    .all(|e| expr_matches(e, (s(&e["key"]) == "metadata.name").then_some(name)))
        };
        if !terms.iter().any(term_ok) {
            return false;
        }
    }
    true
}

fn container_requests(c: &Value, out: &mut BTreeMap<String, i128>) {
    out.clear();
    for field in ["limits", "requests"] {
        if let Some(m) = c["resources"][field].as_object() {
            for (r, q) in m {
                if let Some(q) = q
                    .as_str()
                    .and_then(quantity_milli)
                    .or_else(|| q.as_i64().map(|n| i128::from(n) * 1000))
                {
                    out.insert(r.clone(), q);
                }
            }
        }
    }
}

/// What a pod spec requests, in milli-units: the containers' sum, at least each init container's.
pub(crate) fn pod_requests(spec: &Value) -> BTreeMap<String, i128> {
    let mut sum: BTreeMap<String, i128> = BTreeMap::new();
    let mut one = BTreeMap::new();
    for c in arr(&spec["containers"]) {
        container_requests(c, &mut one);
        for (r, q) in &one {
            *sum.entry(r.clone()).or_default() += q;
        }
    }
    for c in arr(&spec["initContainers"]) {
        container_requests(c, &mut one);
        for (r, q) in &one {
            let e = sum.entry(r.clone()).or_default();
            *e = (*e).max(*q);
        }
    }
    sum
}

fn active(pod: &Value) -> bool {
    !matches!(s(&pod["status"]["phase"]), "Succeeded" | "Failed")
}

/// The node affinity of each bound volume the pod mounts, as a pod spec `node_matches` can test.
fn volume_node_terms(st: &State, ns: &str, spec: &Value) -> Vec<Value> {
    arr(&spec["volumes"])
        .iter()
        .filter_map(|v| v["persistentVolumeClaim"]["claimName"].as_str())
        .filter_map(|claim| st.get(PVC, ns, claim))
        .filter_map(|pvc| pvc["spec"]["volumeName"].as_str())
        .filter_map(|pv| st.get(PV, "", pv))
        .filter(|pv| pv["spec"]["nodeAffinity"]["required"].is_object())
        .map(|pv| {
            json!({"affinity": {"nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": pv["spec"]["nodeAffinity"]["required"]
            }}})
        })
        .collect()
}

/// Whether cluster DNS answers: a CoreDNS pod (`k8s-app=kube-dns` in kube-system) is ready.
fn dns_ready(st: &State) -> bool {
    st.list(POD, Some("kube-system"))
        .iter()
        .any(|p| p["metadata"]["labels"]["k8s-app"] == "kube-dns" && is_ready(p))
}

/// Whether a pod is modelled as needing cluster DNS to become ready: in an EKS cluster, a pod with a
/// readiness probe that resolves names through the cluster (`dnsPolicy: ClusterFirst`, not on the
/// host's network) stands for an application that must fetch things by name before it serves (the
/// workspace installs packages first).
fn needs_dns(st: &State, pod: &Value) -> bool {
    let spec = &pod["spec"];
    st.eks
        && arr(&spec["containers"])
            .iter()
            .any(|c| c["readinessProbe"].is_object())
        && spec["hostNetwork"] != json!(true)
        && matches!(s(&spec["dnsPolicy"]), "" | "ClusterFirst")
}

/// Readiness that can change after start: a pod that needs cluster DNS is ready only while it answers.
fn readiness(st: &mut State) {
    let dns = dns_ready(st);
    for pod in st.list(POD, None) {
        if s(&pod["status"]["phase"]) != "Running" || !needs_dns(st, &pod) {
            continue;
        }
        if is_ready(&pod) == dns {
            continue;
        }
        let mut p = pod.clone();
        let value = if dns { "True" } else { "False" };
        for ty in ["Ready", "ContainersReady"] {
            let mut cond = json!({"type": ty, "status": value, "lastProbeTime": null, "lastTransitionTime": now()});
            if !dns {
                cond["reason"] = json!("ContainersNotReady");
                cond["message"] = json!("containers with unready status: [workspace]");
            }
            set_condition(&mut p, cond);
        }
        for c in p["status"]["containerStatuses"]
            .as_array_mut()
            .into_iter()
            .flatten()
        {
            c["ready"] = json!(dns);
        }
        let key = (
            meta(&p, "namespace").to_string(),
            meta(&p, "name").to_string(),
        );
        if !dns {
            st.logs.insert(
                key,
                "Temporary failure in name resolution: no cluster DNS answers (no CoreDNS pod is ready)\n".into(),
            );
        } else if st
            .logs
            .get(&key)
            .is_some_and(|l| l.starts_with("Temporary failure"))
        {
            st.logs.remove(&key);
        }
        st.update(POD, p);
    }
}

/// The reasons a node rejects the pod, and whether they are only about resources (preemption could help).
fn node_rejects(
    spec: &Value,
    node: &Value,
    used: &BTreeMap<String, i128>,
    pods_on_node: usize,
) -> Option<(Vec<String>, bool)> {
    let tolerations = arr(&spec["tolerations"]);
    if node["spec"]["unschedulable"] == json!(true)
        && !tolerates(
            tolerations,
            &json!({"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}),
        )
    {
        return Some((vec!["node(s) were unschedulable".into()], false));
    }
    for taint in arr(&node["spec"]["taints"]) {
        if matches!(s(&taint["effect"]), "NoSchedule" | "NoExecute")
            && !tolerates(tolerations, taint)
        {
            return Some((
                vec![format!(
                    "node(s) had untolerated taint {{{}: {}}}",
                    s(&taint["key"]),
                    s(&taint["value"])
                )],
                false,
            ));
        }
    }
    if !node_matches(spec, node) {
        return Some((
            vec!["node(s) didn't match Pod's node affinity/selector".into()],
            false,
        ));
    }
    let alloc = &node["status"]["allocatable"];
    let allocatable = |r: &str| {
        alloc
            .get(r)
            .and_then(Value::as_str)
            .and_then(quantity_milli)
            .unwrap_or(0)
    };
    let mut reasons = Vec::new();
    if (pods_on_node as i128 + 1) * 1000 > allocatable("pods") {
        reasons.push("Too many pods".to_string());
    }
    for (r, q) in pod_requests(spec) {
        if q > 0 && used.get(&r).copied().unwrap_or(0) + q > allocatable(&r) {
            reasons.push(format!("Insufficient {r}"));
        }
    }
    (!reasons.is_empty()).then_some((reasons, true))
}

/// The scheduler's message when no node fits.
fn fit_error(nodes: usize, reasons: &BTreeMap<String, usize>, resource_only: usize) -> String {
    if nodes == 0 {
        return "no nodes available to schedule pods".into();
    }
    let mut parts: Vec<String> = reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
    parts.sort();
    let mut pre = Vec::new();
    if resource_only > 0 {
        pre.push(format!(
            "{resource_only} No preemption victims found for incoming pod"
        ));
    }
    if nodes > resource_only {
        pre.push(format!(
            "{} Preemption is not helpful for scheduling",
            nodes - resource_only
        ));
    }
    pre.sort();
    format!(
        "0/{nodes} nodes are available: {}. preemption: 0/{nodes} nodes are available: {}.",
        parts.join(", "),
        pre.join(", ")
    )
}

fn set_condition(pod: &mut Value, cond: Value) {
    let conds = pod["status"]
        .as_object_mut()
        .expect("status")
        .entry("conditions")
        .or_insert(json!([]));
    let list = conds.as_array_mut().expect("conditions");
    list.retain(|c| c["type"] != cond["type"]);
    list.push(cond);
}

fn schedule(st: &mut State) {
    let nodes = st.list(NODE, None);
    for pod in st.list(POD, None) {
        if !s(&pod["spec"]["nodeName"]).is_empty()
            || s(&pod["status"]["phase"]) != "Pending"
            || pod["metadata"].get("deletionTimestamp").is_some()
            || !matches!(s(&pod["spec"]["schedulerName"]), "" | "default-scheduler")
        {
            continue;
        }
        let ns = meta(&pod, "namespace").to_string();
        let spec = &pod["spec"];
        let missing_claim = arr(&spec["volumes"])
            .iter()
            .filter_map(|v| v["persistentVolumeClaim"]["claimName"].as_str())
            .find(|c| st.get(PVC, &ns, c).is_none());
        let message = if let Some(claim) = missing_claim {
            let n = nodes.len();
            format!(
                "0/{n} nodes are available: persistentvolumeclaim \"{claim}\" not found. preemption: 0/{n} nodes are available: {n} Preemption is not helpful for scheduling."
            )
        } else {
            let all_pods = st.list(POD, None);
            let volume_terms = volume_node_terms(st, &ns, spec);
            let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
            let mut resource_only = 0;
            let mut chosen = None;
            for node in &nodes {
                let name = meta(node, "name");
                // A bound zonal volume can attach only in its zone (the volume binding plugin's
                // VolumeZone / "volume node affinity conflict").
                if volume_terms
                    .iter()
                    .any(|required| !node_matches(required, node))
                {
                    *reasons
                        .entry("node(s) had volume node affinity conflict".into())
                        .or_default() += 1;
                    continue;
                }
                let mut used: BTreeMap<String, i128> = BTreeMap::new();
                let mut count = 0;
                for p in all_pods
                    .iter()
                    .filter(|p| s(&p["spec"]["nodeName"]) == name && active(p))
                {
                    count += 1;
                    for (r, q) in pod_requests(&p["spec"]) {
                        *used.entry(r).or_default() += q;
                    }
                }
                match node_rejects(spec, node, &used, count) {
                    None => {
                        chosen = Some(name.to_string());
                        break;
                    }
                    Some((rs, resources)) => {
                        resource_only += usize::from(resources);
                        for r in rs {
                            *reasons.entry(r).or_default() += 1;
                        }
                    }
                }
            }
            if let Some(node) = chosen {
                let mut bound = pod.clone();
                bound["spec"]["nodeName"] = json!(node);
                set_condition(
                    &mut bound,
                    json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": now()}),
                );
                let bound = st.update(POD, bound);
                let msg = format!(
                    "Successfully assigned {ns}/{} to {node}",
                    meta(&pod, "name")
                );
                record_event(st, &bound, "Normal", "Scheduled", &msg, "default-scheduler");
                continue;
            }
            fit_error(nodes.len(), &reasons, resource_only)
        };
        let current = arr(&pod["status"]["conditions"])
            .iter()
            .find(|c| c["type"] == "PodScheduled")
            .map(|c| s(&c["message"]).to_string());
        if current.as_deref() == Some(message.as_str()) {
            continue;
        }
        let mut pending = pod.clone();
        set_condition(
            &mut pending,
            json!({"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message, "lastProbeTime": null, "lastTransitionTime": now()}),
        );
        let pending = st.update(POD, pending);
        record_event(
            st,
            &pending,
            "Warning",
            "FailedScheduling",
            &message,
            "default-scheduler",
        );
    }
}

fn hex(st: &mut State, n: usize) -> String {
    let mut out = String::new();
    while out.len() < n {
        out.push_str(&format!("{:016x}", st.random()));
    }
    out.truncate(n);
    out
}

/// What keeps a scheduled pod from starting: a missing config map or secret, an unbound claim.
fn mount_problem(st: &State, pod: &Value) -> Option<(String, String)> {
    let ns = meta(pod, "namespace");
    for v in arr(&pod["spec"]["volumes"]) {
        let name = s(&v["name"]);
        if let Some(cm) = v["configMap"]["name"].as_str()
            && st.get(CONFIG_MAP, ns, cm).is_none()
            && v["configMap"]["optional"] != json!(true)
        {
            return Some((
                "FailedMount".into(),
                format!(
                    "MountVolume.SetUp failed for volume \"{name}\" : configmap \"{cm}\" not found"
                ),
            ));
        }
        if let Some(sec) = v["secret"]["secretName"].as_str()
            && st.get(SECRET, ns, sec).is_none()
            && v["secret"]["optional"] != json!(true)
        {
            return Some((
                "FailedMount".into(),
                format!(
                    "MountVolume.SetUp failed for volume \"{name}\" : secret \"{sec}\" not found"
                ),
            ));
        }
        if let Some(claim) = v["persistentVolumeClaim"]["claimName"].as_str() {
            let bound = st
                .get(PVC, ns, claim)
                .is_some_and(|c| c["status"]["phase"] == "Bound");
            if !bound {
                return Some((
                    "FailedMount".into(),
                    format!(
                        "Unable to attach or mount volumes: unmounted volumes=[{name}]: timed out waiting for the condition"
                    ),
                ));
            }
        }
    }
    None
}

/// Time-slicing replicas from the device plugin's config map(s), as the plugin reads them at start.
fn time_slicing_replicas(st: &State, pod: &Value) -> u64 {
    let ns = meta(pod, "namespace");
    for v in arr(&pod["spec"]["volumes"]) {
        let Some(cm) = v["configMap"]["name"]
            .as_str()
            .and_then(|n| st.get(CONFIG_MAP, ns, n))
        else {
            continue;
        };
        for text in cm["data"].as_object().into_iter().flat_map(|m| m.values()) {
            let Ok(config) = serde_yaml::from_str::<Value>(s(text)) else {
                continue;
            };
            for r in arr(&config["sharing"]["timeSlicing"]["resources"]) {
                if r["name"] == GPU
                    && let Some(n) = r["replicas"].as_u64().filter(|n| *n > 0)
                {
                    return n;
                }
            }
        }
    }
    1
}

fn is_device_plugin(pod: &Value) -> bool {
    arr(&pod["spec"]["containers"])
        .iter()
        .any(|c| s(&c["image"]).contains("k8s-device-plugin"))
}

/// The kubelets: start scheduled pods (Running, Ready), or say why they cannot.
fn kubelet(st: &mut State) {
    for pod in st.list(POD, None) {
        let node_name = s(&pod["spec"]["nodeName"]).to_string();
        if node_name.is_empty() || s(&pod["status"]["phase"]) != "Pending" {
            continue;
        }
        let Some(node) = st.get(NODE, "", &node_name).cloned() else {
            continue;
        };
        let containers = arr(&pod["spec"]["containers"]).to_vec();
        let waiting_reason = arr(&pod["status"]["containerStatuses"])
            .first()
            .map(|c| s(&c["state"]["waiting"]["reason"]).to_string());
        let waiting = |reason: &str, message: &str| -> Value {
            Value::Array(
                containers
                    .iter()
                    .map(|c| {
                        json!({"name": c["name"], "image": c["image"], "imageID": "", "ready": false,
                        "restartCount": 0, "started": false, "lastState": {},
                        "state": {"waiting": {"reason": reason, "message": message}}})
                    })
                    .collect(),
            )
        };
        if let Some((reason, message)) = mount_problem(st, &pod) {
            if waiting_reason.as_deref() != Some("ContainerCreating") {
                let mut p = pod.clone();
                p["status"]["containerStatuses"] = waiting("ContainerCreating", "");
                let p = st.update(POD, p);
                record_event(st, &p, "Warning", &reason, &message, "kubelet");
            }
            continue;
        }
        let bad_image = containers
            .iter()
            .map(|c| s(&c["image"]).to_string())
            .find(|img| st.unpullable.iter().any(|u| img.contains(u.as_str())));
        if let Some(image) = bad_image {
            if waiting_reason.as_deref() != Some("ImagePullBackOff") {
                let mut p = pod.clone();
                let msg = format!("Back-off pulling image \"{image}\"");
                p["status"]["containerStatuses"] = waiting("ImagePullBackOff", &msg);
                let p = st.update(POD, p);
                let failed = format!(
                    "Failed to pull image \"{image}\": rpc error: code = NotFound desc = failed to pull and unpack image \"{image}\": not found"
                );
                record_event(st, &p, "Warning", "Failed", &failed, "kubelet");
                record_event(st, &p, "Normal", "BackOff", &msg, "kubelet");
            }
            continue;
        }
        let t = now();
        let host_ip = arr(&node["status"]["addresses"])
            .iter()
            .find(|a| a["type"] == "InternalIP")
            .map(|a| s(&a["address"]).to_string())
            .unwrap_or_default();
        let r = st.random();
        let pod_ip = format!("10.0.{}.{}", (r >> 8) % 250 + 2, r % 250 + 2);
        let mut statuses = Vec::new();
        for c in &containers {
            let (digest, id) = (hex(st, 64), hex(st, 64));
            statuses.push(json!({
                "name": c["name"], "image": c["image"],
                "imageID": format!("{}@sha256:{digest}", s(&c["image"]).split(':').next().unwrap_or("")),
                "containerID": format!("containerd://{id}"),
                "ready": true, "started": true, "restartCount": 0, "lastState": {},
                "state": {"running": {"startedAt": t}},
            }));
        }
        // A real container is ready once its readiness probe passes (the runtime in `containers`).
        let real = st.real.as_ref().is_some_and(|r| r.wants(&pod));
        if real {
            for cs in &mut statuses {
                cs["ready"] = json!(false);
            }
        }
        let mut p = pod.clone();
        let status = p["status"].as_object_mut().expect("status");
        status.insert("phase".into(), json!("Running"));
        status.insert("hostIP".into(), json!(host_ip));
        status.insert("hostIPs".into(), json!([{"ip": host_ip}]));
        status.insert("podIP".into(), json!(pod_ip));
        status.insert("podIPs".into(), json!([{"ip": pod_ip}]));
        status.insert("startTime".into(), json!(t));
        status.insert("containerStatuses".into(), Value::Array(statuses));
        for ty in [
            "PodReadyToStartContainers",
            "Initialized",
            "Ready",
            "ContainersReady",
        ] {
            let ok = !(real && (ty == "Ready" || ty == "ContainersReady"));
            set_condition(
                &mut p,
                json!({"type": ty, "status": if ok { "True" } else { "False" }, "lastProbeTime": null, "lastTransitionTime": t}),
            );
        }
        // `readiness` then holds it unready while it has no DNS.
        if is_device_plugin(&p) {
            let replicas = time_slicing_replicas(st, &p);
            st.plugin_replicas
                .insert(meta(&p, "uid").to_string(), replicas);
        }
        let p = st.update(POD, p);
        if real {
            let key = |f: &str| s(&p["metadata"][f]).to_string();
            st.to_start
                .push((key("namespace"), key("name"), key("uid")));
        }
        for c in &containers {
            let msg = format!("Started container {}", s(&c["name"]));
            record_event(st, &p, "Normal", "Started", &msg, "kubelet");
        }
    }
}

/// The device plugin: a GPU node advertises `nvidia.com/gpu` (times the time-slicing replicas) while a
/// plugin pod runs on it, and 0 once a plugin that ran there is gone.
fn device_plugin(st: &mut State) {
    let pods = st.list(POD, None);
    for node in st.list(NODE, None) {
        let name = meta(&node, "name").to_string();
        let Some(gpus) = st.node_gpus.get(&name).copied().filter(|g| *g > 0) else {
            continue;
        };
        let plugin = pods.iter().find(|p| {
            s(&p["spec"]["nodeName"]) == name
                && s(&p["status"]["phase"]) == "Running"
                && p["metadata"].get("deletionTimestamp").is_none()
                && is_device_plugin(p)
        });
        let advertised = match plugin {
            Some(p) => gpus * st.plugin_replicas.get(meta(p, "uid")).copied().unwrap_or(1),
            None if node["status"]["capacity"].get(GPU).is_some() => 0,
            None => continue,
        };
        let value = json!(advertised.to_string());
        if node["status"]["allocatable"][GPU] == value && node["status"]["capacity"][GPU] == value {
            continue;
        }
        let mut n = node.clone();
        n["status"]["capacity"][GPU] = value.clone();
        n["status"]["allocatable"][GPU] = value;
        st.update(NODE, n);
    }
}

/// The PV controller and the EBS CSI driver: claims bind (at once, or once a scheduled pod uses them
/// for `WaitForFirstConsumer` classes) to a volume created for them.
fn volumes(st: &mut State) {
    let default_class = st
        .list(STORAGE_CLASS, None)
        .into_iter()
        .find(|sc| {
            sc["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"] == "true"
        })
        .map(|sc| meta(&sc, "name").to_string());
    let pods = st.list(POD, None);
    for pvc in st.list(PVC, None) {
        if pvc["status"]["phase"] == "Bound" {
            continue;
        }
        let ns = meta(&pvc, "namespace").to_string();
        let name = meta(&pvc, "name").to_string();
        let Some(class) = pvc["spec"]["storageClassName"]
            .as_str()
            .map(str::to_string)
            .or(default_class.clone())
        else {
            continue;
        };
        let Some(sc) = st.get(STORAGE_CLASS, "", &class).cloned() else {
            continue;
        };
        // The first pod that uses it and has a node: its zone is the volume's (WaitForFirstConsumer).
        let consumer_node = pods
            .iter()
            .filter(|p| meta(p, "namespace") == ns && !s(&p["spec"]["nodeName"]).is_empty())
            .find(|p| {
                arr(&p["spec"]["volumes"])
                    .iter()
                    .any(|v| v["persistentVolumeClaim"]["claimName"] == json!(name))
            })
            .and_then(|p| st.get(NODE, "", s(&p["spec"]["nodeName"])).cloned());
        if sc["volumeBindingMode"] == "WaitForFirstConsumer" && consumer_node.is_none() {
            continue;
        }
        let uid = meta(&pvc, "uid").to_string();
        let pv_name = format!("pvc-{uid}");
        let ebs = st.eks
            && matches!(
                s(&sc["provisioner"]),
                "ebs.csi.aws.com" | "kubernetes.io/aws-ebs"
            );
        if ebs && let Err((reason, message)) = ebs_csi_can_provision(st, &class, &pv_name) {
            if pvc["metadata"]["annotations"]["testkit.gpulab.io/last-provisioning"]
                != json!(message)
            {
                let mut c = pvc.clone();
                c["metadata"]["annotations"]["testkit.gpulab.io/last-provisioning"] =
                    json!(message);
                let c = st.update(PVC, c);
                let kind = if reason == "ExternalProvisioning" {
                    "Normal"
                } else {
                    "Warning"
                };
                record_event(
                    st,
                    &c,
                    kind,
                    reason,
                    &message,
                    "persistentvolume-controller",
                );
            }
            continue;
        }
        let size = pvc["spec"]["resources"]["requests"]["storage"].clone();
        let modes = pvc["spec"]["accessModes"].clone();
        let mut pv = json!({
            "metadata": {"name": pv_name, "annotations": {"pv.kubernetes.io/provisioned-by": sc["provisioner"]}},
            "spec": {
                "capacity": {"storage": size},
                "accessModes": modes,
                "claimRef": {"kind": "PersistentVolumeClaim", "namespace": ns, "name": name, "uid": uid, "apiVersion": "v1"},
                "persistentVolumeReclaimPolicy": sc.get("reclaimPolicy").cloned().unwrap_or(json!("Delete")),
                "storageClassName": class,
                "volumeMode": "Filesystem",
            },
            "status": {"phase": "Bound"},
        });
        // An EBS volume lives in one zone; the driver pins the PV there (its topology key).
        if ebs
            && let Some(zone) = consumer_node
                .as_ref()
                .and_then(|n| n["metadata"]["labels"]["topology.kubernetes.io/zone"].as_str())
        {
            pv["spec"]["nodeAffinity"] = json!({"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "topology.kubernetes.io/zone", "operator": "In", "values": [zone]}
            ]}]}});
        }
        let _ = st.insert(PV, pv);
        let mut c = pvc.clone();
        c["spec"]["volumeName"] = json!(pv_name);
        c["spec"]["storageClassName"] = json!(class);
        c["metadata"]["annotations"]["pv.kubernetes.io/bind-completed"] = json!("yes");
        c["status"] =
            json!({"phase": "Bound", "accessModes": modes, "capacity": {"storage": size}});
        st.update(PVC, c);
    }
}

/// Whether the EBS CSI driver can make a volume now (EKS): its controller runs and has AWS credentials
/// (a Pod Identity association its agent serves on the controller's node, or an IRSA role). Otherwise
/// the event a real cluster shows: the external provisioner is missing, or CreateVolume fails for want
/// of credentials (the node role is out of reach behind IMDSv2's hop limit of 1).
fn ebs_csi_can_provision(
    st: &State,
    class: &str,
    pv_name: &str,
) -> Result<(), (&'static str, String)> {
    let controllers: Vec<Value> = st
        .list(POD, Some("kube-system"))
        .into_iter()
        .filter(|p| p["metadata"]["labels"]["app"] == "ebs-csi-controller" && is_ready(p))
        .collect();
    let Some(controller) = controllers.first() else {
        return Err((
            "ExternalProvisioning",
            "Waiting for a volume to be created either by the external provisioner 'ebs.csi.aws.com' or manually by the system administrator. If volume creation is delayed, please verify that the provisioner is running and correctly registered.".into(),
        ));
    };
    let account = st
        .get(
            super::resources::SERVICE_ACCOUNT,
            "kube-system",
            s(&controller["spec"]["serviceAccountName"]),
        )
        .cloned()
        .unwrap_or(Value::Null);
    let annotations = &account["metadata"]["annotations"];
    let irsa = annotations["eks.amazonaws.com/role-arn"].is_string();
    let node = s(&controller["spec"]["nodeName"]);
    let agent_here = st.list(POD, Some("kube-system")).iter().any(|p| {
        p["metadata"]["labels"]["app.kubernetes.io/name"] == "eks-pod-identity-agent"
            && s(&p["spec"]["nodeName"]) == node
            && is_ready(p)
    });
    let pod_identity = annotations[super::POD_IDENTITY_MARK].is_string() && agent_here;
    if irsa || pod_identity {
        return Ok(());
    }
    Err((
        "ProvisioningFailed",
        format!(
            "failed to provision volume with StorageClass \"{class}\": rpc error: code = Internal desc = Could not create volume \"{pv_name}\": could not create volume in EC2: operation error EC2: CreateVolume, get identity: get credentials: failed to refresh cached credentials, no EC2 IMDS role found, operation error ec2imds: GetMetadata, exceeded maximum number of attempts, 3, request send failed, Get \"http://169.254.169.254/latest/meta-data/iam/security-credentials/\": dial tcp 169.254.169.254:80: i/o timeout"
        ),
    ))
}

/// The finalizer the service controller puts on a LoadBalancer Service, so the Service stays until its
/// load balancer is deleted (kubernetes/kubernetes, pkg/controller/service/controller.go,
/// `servicehelper.LoadBalancerCleanupFinalizer`).
const LB_FINALIZER: &str = "service.kubernetes.io/load-balancer-cleanup";

/// The cloud provider's service controller: a LoadBalancer Service gets the finalizer and a load
/// balancer (from the test's cloud when it plays one, else a made-up name); a Service being deleted, or
/// no longer of that type, loses its load balancer and then the finalizer.
fn services(st: &mut State) {
    for svc in st.list(SERVICE, None) {
        let lb = svc["spec"]["type"] == "LoadBalancer";
        let deleting = svc["metadata"].get("deletionTimestamp").is_some();
        let finalizers: Vec<Value> = arr(&svc["metadata"]["finalizers"]).to_vec();
        let guarded = finalizers.iter().any(|f| f == LB_FINALIZER);
        let has = !arr(&svc["status"]["loadBalancer"]["ingress"]).is_empty();
        let mut s2 = svc.clone();
        if (deleting || !lb) && (guarded || has) {
            if let Some(cloud) = st.load_balancers.clone() {
                cloud.delete(&svc);
            }
            s2["metadata"]["finalizers"] = json!(
                finalizers
                    .into_iter()
                    .filter(|f| f != LB_FINALIZER)
                    .collect::<Vec<_>>()
            );
            if !deleting {
                s2["status"]["loadBalancer"] = json!({});
            }
        } else if lb && !deleting && !(guarded && has) {
            let hostname = match st.load_balancers.clone() {
                Some(cloud) => cloud.ensure(&svc),
                None => {
                    let id: String = meta(&svc, "uid").chars().filter(|c| *c != '-').collect();
                    let n = st.random() % 1_000_000_000;
                    format!("a{id}-{n}.us-west-2.elb.amazonaws.com")
                }
            };
            if !guarded {
                let mut with = finalizers;
                with.push(json!(LB_FINALIZER));
                s2["metadata"]["finalizers"] = json!(with);
            }
            s2["status"]["loadBalancer"] = json!({"ingress": [{"hostname": hostname}]});
        } else {
            continue;
        }
        st.update(SERVICE, s2);
    }
}

fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// The tolerations the DaemonSet controller adds to its pods.
fn daemonset_tolerations() -> Vec<Value> {
    let mut t = vec![
        json!({"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"}),
        json!({"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"}),
    ];
    for k in [
        "disk-pressure",
        "memory-pressure",
        "pid-pressure",
        "unschedulable",
    ] {
        t.push(json!({"key": format!("node.kubernetes.io/{k}"), "operator": "Exists", "effect": "NoSchedule"}));
    }
    t
}

fn daemonset_target(pod: &Value) -> String {
    let terms = &pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        ["nodeSelectorTerms"];
    arr(terms)
        .iter()
        .flat_map(|t| arr(&t["matchFields"]))
        .flat_map(|f| arr(&f["values"]))
        .map(|v| s(v).to_string())
        .next()
        .unwrap_or_else(|| s(&pod["spec"]["nodeName"]).to_string())
}

/// The DaemonSet controller: one pod per eligible node (a changed template replaces them all at once),
/// and the rollout status.
fn daemonsets(st: &mut State) {
    let nodes = st.list(NODE, None);
    for ds in st.list(DAEMON_SET, None) {
        let ns = meta(&ds, "namespace").to_string();
        let name = meta(&ds, "name").to_string();
        let uid = meta(&ds, "uid").to_string();
        let template = &ds["spec"]["template"];
        let hash = format!("{:010x}", fnv(&template.to_string()) & 0xff_ffff_ffff);
        let mut tolerations = arr(&template["spec"]["tolerations"]).to_vec();
        tolerations.extend(daemonset_tolerations());
        let eligible: Vec<String> = nodes
            .iter()
            .filter(|n| {
                node_matches(&template["spec"], n)
                    && arr(&n["spec"]["taints"]).iter().all(|t| {
                        !matches!(s(&t["effect"]), "NoSchedule" | "NoExecute")
                            || tolerates(&tolerations, t)
                    })
            })
            .map(|n| meta(n, "name").to_string())
            .collect();
        let owned = |st: &State| -> Vec<Value> {
            st.list(POD, Some(&ns))
                .into_iter()
                .filter(|p| {
                    arr(&p["metadata"]["ownerReferences"])
                        .iter()
                        .any(|o| o["uid"] == json!(uid))
                })
                .collect()
        };
        let mut covered = HashSet::new();
        for pod in owned(st) {
            let target = daemonset_target(&pod);
            let current = pod["metadata"]["labels"]["controller-revision-hash"] == json!(hash);
            if !eligible.contains(&target) || !current || covered.contains(&target) {
                st.remove(POD, &ns, meta(&pod, "name"));
            } else {
                covered.insert(target);
            }
        }
        for node in eligible.iter().filter(|n| !covered.contains(*n)) {
            let mut labels = template["metadata"]["labels"].clone();
            if !labels.is_object() {
                labels = json!({});
            }
            labels["controller-revision-hash"] = json!(hash);
            labels["pod-template-generation"] = json!(ds["metadata"]["generation"].to_string());
            let mut spec = template["spec"].clone();
            spec["tolerations"] = Value::Array(tolerations.clone());
            spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"] = json!({
                "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}]
            });
            let pod_name = format!("{name}-{}", st.suffix(5));
            let mut pod = json!({
                "metadata": {
                    "name": pod_name, "namespace": ns, "generateName": format!("{name}-"), "labels": labels,
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": name, "uid": uid,
                        "controller": true, "blockOwnerDeletion": true}],
                },
                "spec": spec,
            });
            if let Some(a) = template["metadata"].get("annotations") {
                pod["metadata"]["annotations"] = a.clone();
            }
            pod_defaults(&mut pod);
            if st.insert(POD, pod).is_ok() {
                let msg = format!("Created pod: {pod_name}");
                record_event(
                    st,
                    &ds,
                    "Normal",
                    "SuccessfulCreate",
                    &msg,
                    "daemonset-controller",
                );
            }
        }
        let pods = owned(st);
        let ready = pods
            .iter()
            .filter(|p| {
                arr(&p["status"]["conditions"])
                    .iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
            .count();
        let updated = pods
            .iter()
            .filter(|p| p["metadata"]["labels"]["controller-revision-hash"] == json!(hash))
            .count();
        let desired = eligible.len();
        let mut status = json!({
            "currentNumberScheduled": pods.len(),
            "desiredNumberScheduled": desired,
            "numberMisscheduled": 0,
            "numberReady": ready,
            "observedGeneration": ds["metadata"]["generation"],
            "updatedNumberScheduled": updated,
        });
        if ready > 0 {
            status["numberAvailable"] = json!(ready);
        }
        if desired > ready {
            status["numberUnavailable"] = json!(desired - ready);
        }
        if ds["status"] != status {
            let Some(mut d) = st.get(DAEMON_SET, &ns, &name).cloned() else {
                continue;
            };
            d["status"] = status;
            st.update(DAEMON_SET, d);
        }
    }
}

/// A new pod of `kind` `owner` (uid `uid`) from its pod template, labelled with `labels` on top of the
/// template's; `None` when the name is taken.
fn pod_from_template(
    st: &mut State,
    ns: &str,
    name: &str,
    template: &Value,
    labels: &[(&str, String)],
    (kind, owner, uid): (&str, &str, &str),
) -> Option<Value> {
    let mut pod_labels = template["metadata"]["labels"].clone();
    if !pod_labels.is_object() {
        pod_labels = json!({});
    }
    for (k, v) in labels {
        pod_labels[*k] = json!(v);
    }
    let mut pod = json!({
        "metadata": {
            "name": name, "namespace": ns, "labels": pod_labels,
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": kind, "name": owner, "uid": uid,
                "controller": true, "blockOwnerDeletion": true}],
        },
        "spec": template["spec"].clone(),
    });
    if let Some(a) = template["metadata"].get("annotations") {
        pod["metadata"]["annotations"] = a.clone();
    }
    pod_defaults(&mut pod);
    st.insert(POD, pod).ok()
}

/// The pods `uid` controls in `ns`.
fn controlled(st: &State, ns: &str, uid: &str) -> Vec<Value> {
    st.list(POD, Some(ns))
        .into_iter()
        .filter(|p| {
            arr(&p["metadata"]["ownerReferences"])
                .iter()
                .any(|o| o["uid"] == json!(uid) && o["controller"] == json!(true))
        })
        .collect()
}

/// Delete pod `ns/name` as the API server does, with grace period `grace` (else the pod's
/// `terminationGracePeriodSeconds`, default 30). A pod whose container runs for real terminates
/// gracefully (Kubernetes docs, "Pod Lifecycle: Termination of Pods"): it is marked with
/// `deletionTimestamp` (now plus the grace period) and `deletionGracePeriodSeconds` and stays,
/// Terminating, while the runtime (`containers`) runs its preStop hook, sends SIGTERM and, when it has
/// stopped, removes it; until then a controller makes no replacement. Any other pod (nothing runs in it)
/// goes at once, as does one deleted with a grace period of 0. Returns the pod as the API answers.
pub(crate) fn delete_pod(
    st: &mut State,
    ns: &str,
    name: &str,
    grace: Option<i64>,
) -> Option<Value> {
    let pod = st.get(POD, ns, name)?.clone();
    let marked = pod["metadata"].get("deletionTimestamp").is_some();
    if marked && grace != Some(0) {
        return Some(pod);
    }
    let grace = grace
        .or_else(|| pod["spec"]["terminationGracePeriodSeconds"].as_i64())
        .unwrap_or(30);
    let runs = st.real.as_ref().is_some_and(|r| r.wants(&pod))
        && !s(&pod["spec"]["nodeName"]).is_empty()
        && s(&pod["status"]["phase"]) == "Running";
    if grace > 0 && runs {
        let mut p = pod;
        let until = k8s_openapi::jiff::Timestamp::now()
            .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(grace))
            .expect("a timestamp in range");
        p["metadata"]["deletionTimestamp"] =
            json!(until.strftime("%Y-%m-%dT%H:%M:%SZ").to_string());
        p["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
        let p = st.update(POD, p);
        let msg = format!(
            "Stopping container {}",
            s(&p["spec"]["containers"][0]["name"])
        );
        record_event(st, &p, "Normal", "Killing", &msg, "kubelet");
        return Some(p);
    }
    let mut gone = st.remove(POD, ns, name).unwrap_or(pod);
    gone["metadata"]["deletionTimestamp"] = json!(now());
    gone["metadata"]["deletionGracePeriodSeconds"] = json!(0);
    Some(gone)
}

fn is_ready(pod: &Value) -> bool {
    arr(&pod["status"]["conditions"])
        .iter()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// Write `status` into the stored object when it changed.
fn set_status(st: &mut State, res: usize, ns: &str, name: &str, status: Value) {
    if let Some(mut o) = st.get(res, ns, name).cloned()
        && o["status"] != status
    {
        o["status"] = status;
        st.update(res, o);
    }
}

/// The Deployment controller, without ReplicaSets in between: `spec.replicas` (default 1) pods from
/// the template, named `<name>-<template hash>-<random>` and labelled `pod-template-hash` as a
/// ReplicaSet would; a changed template replaces them all (the effect of a rollout); the status counts.
fn deployments(st: &mut State) {
    for d in st.list(DEPLOYMENT, None) {
        let ns = meta(&d, "namespace").to_string();
        let name = meta(&d, "name").to_string();
        let uid = meta(&d, "uid").to_string();
        let template = d["spec"]["template"].clone();
        let hash = format!("{:010x}", fnv(&template.to_string()) & 0xff_ffff_ffff);
        let want = d["spec"]["replicas"].as_u64().unwrap_or(1) as usize;
        let mut current = Vec::new();
        for pod in controlled(st, &ns, &uid) {
            let same = pod["metadata"]["labels"]["pod-template-hash"] == json!(hash);
            let terminating = pod["metadata"].get("deletionTimestamp").is_some();
            if !same || current.len() >= want {
                delete_pod(st, &ns, meta(&pod, "name"), None);
            } else if !terminating {
                current.push(pod);
            }
        }
        for _ in current.len()..want {
            let pod_name = format!("{name}-{hash}-{}", st.suffix(5));
            let labels = [("pod-template-hash", hash.clone())];
            if let Some(pod) = pod_from_template(
                st,
                &ns,
                &pod_name,
                &template,
                &labels,
                ("ReplicaSet", &name, &uid),
            ) {
                current.push(pod);
            }
        }
        let pods = controlled(st, &ns, &uid);
        let ready = pods.iter().filter(|p| is_ready(p)).count();
        let mut status = json!({
            "observedGeneration": d["metadata"]["generation"],
            "replicas": pods.len(),
            "updatedReplicas": pods.len(),
        });
        if ready > 0 {
            status["readyReplicas"] = json!(ready);
            status["availableReplicas"] = json!(ready);
        }
        if want > ready {
            status["unavailableReplicas"] = json!(want - ready);
        }
        set_status(st, DEPLOYMENT, &ns, &name, status);
    }
}

/// The StatefulSet controller: pods `<name>-0` … `<name>-(replicas-1)` from the template, each made
/// again under the same name when it is gone (deleted, evicted, its node removed), so a claim it
/// mounts by name follows it; scaling down removes the highest ordinals; a changed template replaces
/// the pods (RollingUpdate, one at a time in reality; at once here).
fn statefulsets(st: &mut State) {
    for set in st.list(STATEFUL_SET, None) {
        let ns = meta(&set, "namespace").to_string();
        let name = meta(&set, "name").to_string();
        let uid = meta(&set, "uid").to_string();
        let template = set["spec"]["template"].clone();
        let revision = format!(
            "{name}-{:010x}",
            fnv(&template.to_string()) & 0xff_ffff_ffff
        );
        let want = set["spec"]["replicas"].as_u64().unwrap_or(1) as usize;
        for pod in controlled(st, &ns, &uid) {
            let ordinal = meta(&pod, "name")
                .rsplit_once('-')
                .and_then(|(_, i)| i.parse::<usize>().ok())
                .unwrap_or(usize::MAX);
            let stale = pod["metadata"]["labels"]["controller-revision-hash"] != json!(revision);
            if ordinal >= want || stale {
                delete_pod(st, &ns, meta(&pod, "name"), None);
            }
        }
        for ordinal in 0..want {
            let pod_name = format!("{name}-{ordinal}");
            if st.get(POD, &ns, &pod_name).is_some() {
                continue;
            }
            let labels = [
                ("controller-revision-hash", revision.clone()),
                ("statefulset.kubernetes.io/pod-name", pod_name.clone()),
                ("apps.kubernetes.io/pod-index", ordinal.to_string()),
            ];
            if let Some(mut pod) = pod_from_template(
                st,
                &ns,
                &pod_name,
                &template,
                &labels,
                ("StatefulSet", &name, &uid),
            ) {
                // The pod's hostname is its own name, and the set's governing service its subdomain.
                pod["spec"]["hostname"] = json!(pod_name);
                if let Some(service) = set["spec"]["serviceName"].as_str() {
                    pod["spec"]["subdomain"] = json!(service);
                }
                st.update(POD, pod);
                let msg = format!("create Pod {pod_name} in StatefulSet {name} successful");
                record_event(
                    st,
                    &set,
                    "Normal",
                    "SuccessfulCreate",
                    &msg,
                    "statefulset-controller",
                );
            }
        }
        let pods = controlled(st, &ns, &uid);
        let ready = pods.iter().filter(|p| is_ready(p)).count();
        let mut status = json!({
            "observedGeneration": set["metadata"]["generation"],
            "replicas": pods.len(),
            "currentReplicas": pods.len(),
            "updatedReplicas": pods.len(),
            "currentRevision": revision,
            "updateRevision": revision,
            "availableReplicas": ready,
        });
        if ready > 0 {
            status["readyReplicas"] = json!(ready);
        }
        set_status(st, STATEFUL_SET, &ns, &name, status);
    }
}

/// Delete what the garbage collector would: objects whose owners are all gone, volumes whose claims
/// are gone (reclaim policy Delete).
fn collect_garbage(st: &mut State) {
    let uids: HashSet<String> = st
        .objects
        .values()
        .filter_map(|o| o["metadata"]["uid"].as_str().map(str::to_string))
        .collect();
    let nodes: HashSet<String> = st
        .list(NODE, None)
        .iter()
        .map(|n| meta(n, "name").to_string())
        .collect();
    // On EKS a released volume goes only when the EBS CSI controller can delete it (DeleteVolume needs
    // the same running, credentialed controller as CreateVolume); until then its PV stays `Released`.
    let volumes_deletable = !st.eks || ebs_csi_can_provision(st, "", "").is_ok();
    let doomed: Vec<((usize, String, String), bool)> = st
        .objects
        .iter()
        .filter(|((res, _, _), o)| {
            let owners = arr(&o["metadata"]["ownerReferences"]);
            let orphan = !owners.is_empty() && owners.iter().all(|r| !uids.contains(s(&r["uid"])));
            // The pod garbage collector deletes pods bound to a node that no longer exists
            // (kube-controller-manager's podgc: "orphaned" pods), so their controllers make new ones.
            let node = s(&o["spec"]["nodeName"]);
            let on_a_gone_node = *res == POD && !node.is_empty() && !nodes.contains(node);
            let claim = &o["spec"]["claimRef"]["uid"];
            let released = *res == PV
                && claim.is_string()
                && !uids.contains(s(claim))
                && o["spec"]["persistentVolumeReclaimPolicy"] == "Delete"
                && volumes_deletable;
            orphan || released || on_a_gone_node
        })
        .map(|(k, o)| {
            let on_a_node = nodes.contains(s(&o["spec"]["nodeName"]));
            (k.clone(), on_a_node)
        })
        .collect();
    for ((res, ns, name), on_a_node) in doomed {
        if res == POD && on_a_node {
            // An orphan on a live node: its kubelet stops it gracefully (preStop included).
            delete_pod(st, &ns, &name, None);
        } else {
            st.remove(res, &ns, &name);
        }
    }
}

/// The defaults the API server and its admission plugins give a new pod.
pub(crate) fn pod_defaults(pod: &mut Value) {
    let spec = &mut pod["spec"];
    for (k, v) in [
        ("restartPolicy", json!("Always")),
        ("dnsPolicy", json!("ClusterFirst")),
        ("schedulerName", json!("default-scheduler")),
        ("terminationGracePeriodSeconds", json!(30)),
        ("serviceAccountName", json!("default")),
        ("securityContext", json!({})),
        ("enableServiceLinks", json!(true)),
        ("priority", json!(0)),
    ] {
        if spec.get(k).is_none() {
            spec[k] = v;
        }
    }
    let tolerations = spec
        .as_object_mut()
        .expect("spec")
        .entry("tolerations")
        .or_insert(json!([]));
    if let Some(list) = tolerations.as_array_mut() {
        for key in [
            "node.kubernetes.io/not-ready",
            "node.kubernetes.io/unreachable",
        ] {
            if !list.iter().any(|t| t["key"] == key) {
                list.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}));
            }
        }
    }
    for c in spec["containers"].as_array_mut().into_iter().flatten() {
        let latest = {
            let image = s(&c["image"]);
            let tail = image.rsplit('/').next().unwrap_or(image);
            !tail.contains(':') || image.ends_with(":latest")
        };
        for (k, v) in [
            (
                "imagePullPolicy",
                json!(if latest { "Always" } else { "IfNotPresent" }),
            ),
            ("terminationMessagePath", json!("/dev/termination-log")),
            ("terminationMessagePolicy", json!("File")),
            ("resources", json!({})),
        ] {
            if c.get(k).is_none() {
                c[k] = v;
            }
        }
    }
    let requests = pod_requests(&pod["spec"]);
    let containers = arr(&pod["spec"]["containers"]);
    let qos = if requests.is_empty()
        && containers
            .iter()
            .all(|c| c["resources"]["limits"].is_null())
    {
        "BestEffort"
    } else if containers.iter().all(|c| {
        ["cpu", "memory"].iter().all(|r| {
            let l = &c["resources"]["limits"][*r];
            !l.is_null()
                && (c["resources"]["requests"][*r].is_null()
                    || c["resources"]["requests"][*r] == *l)
        })
    }) {
        "Guaranteed"
    } else {
        "Burstable"
    };
    pod["status"] = json!({"phase": "Pending", "qosClass": qos});
}
