//! The HTTP side: routing, CRUD (create, update, patch, delete), lists, subresources, logs and
//! discovery. Watches, tables and streams have their own modules.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use http::{HeaderMap, Method, Request, Response, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::{Value, json};

use super::patch;
use super::resources::{
    self, DAEMON_SET, DEPLOYMENT, NAMESPACE, NODE, POD, PVC, RESOURCES, SECRET, SERVICE,
    STATEFUL_SET, STORAGE_CLASS,
};
use super::select::{FieldSelector, LabelSelector};
use super::shared::{
    Body, Inner, Query, check_container, error_response, full, json_response, query_pairs,
};
use super::sim;
use super::store::{ApiError, State, now};
use super::stream;
use super::tables::table;
use super::watches::watch_stream;

fn not_found_path() -> ApiError {
    ApiError::new(
        404,
        "NotFound",
        "the server could not find the requested resource",
    )
}

/// Serve one request (after the latency and failure knobs).
pub(crate) async fn handle(
    inner: Arc<Inner>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let latency = *inner.latency.lock().unwrap_or_else(|e| e.into_inner());
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if inner
        .fail_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        let e = ApiError::new(
            500,
            "InternalError",
            "Internal error occurred: injected by the emulator (fail_next)",
        );
        return Ok(error_response(&e));
    }
    Ok(route(inner, req)
        .await
        .unwrap_or_else(|e| error_response(&e)))
}

async fn route(inner: Arc<Inner>, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let path: Vec<String> = req
        .uri()
        .path()
        .split('/')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    let segs: Vec<&str> = path.iter().map(String::as_str).collect();
    let get = req.method() == Method::GET;
    match segs.as_slice() {
        ["version"] if get => Ok(json_response(200, &resources::version())),
        ["healthz" | "livez" | "readyz"] if get => Ok(Response::new(full("ok"))),
        ["api"] if get => Ok(json_response(
            200,
            &resources::core_versions(&inner.addr.to_string()),
        )),
        ["apis"] if get => Ok(json_response(200, &resources::group_list())),
        ["api", v] if get => resources::resource_list("", v)
            .map(|l| json_response(200, &l))
            .ok_or_else(not_found_path),
        ["apis", g] if get => resources::group(g)
            .map(|l| json_response(200, &l))
            .ok_or_else(not_found_path),
        ["apis", g, v] if get => resources::resource_list(g, v)
            .map(|l| json_response(200, &l))
            .ok_or_else(not_found_path),
        ["openapi", "v3"] if get => Ok(json_response(200, &resources::openapi_root())),
        ["openapi", "v3", rest @ ..] if get => resources::openapi_gv(&rest.join("/"))
            .map(|d| json_response(200, &d))
            .ok_or_else(not_found_path),
        ["api", v, rest @ ..] => {
            let (v, rest) = (v.to_string(), rest.iter().map(|s| s.to_string()).collect());
            resource(inner, req, String::new(), v, rest).await
        }
        ["apis", g, v, rest @ ..] => {
            let (g, v) = (g.to_string(), v.to_string());
            let rest = rest.iter().map(|s| s.to_string()).collect();
            resource(inner, req, g, v, rest).await
        }
        _ => Err(not_found_path()),
    }
}

/// Where a resource request points.
struct Target {
    res: usize,
    ns: Option<String>,
    name: Option<String>,
    sub: Option<String>,
}

fn target(group: &str, version: &str, rest: &[String]) -> Result<Target, ApiError> {
    let namespaced =
        |p: &str| resources::find(group, version, p).filter(|i| RESOURCES[*i].namespaced);
    let (ns, plural, tail) = match rest {
        [first, ns, plural, tail @ ..] if first == "namespaces" && namespaced(plural).is_some() => {
            (Some(ns.clone()), plural, tail)
        }
        [plural, tail @ ..] => (None, plural, tail),
        [] => return Err(not_found_path()),
    };
    if tail.len() > 2 {
        return Err(not_found_path());
    }
    let res = resources::find(group, version, plural).ok_or_else(not_found_path)?;
    let def = &RESOURCES[res];
    let name = tail.first().cloned();
    if def.namespaced && ns.is_none() && name.is_some() {
        return Err(not_found_path());
    }
    Ok(Target {
        res,
        ns,
        name,
        sub: tail.get(1).cloned(),
    })
}

fn content_type(h: &HeaderMap) -> String {
    h.get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_string()
}

fn decode(ct: &str, body: &[u8]) -> Result<Value, ApiError> {
    let v: Result<Value, String> = if ct.contains("yaml") {
        serde_yaml::from_slice(body).map_err(|e| e.to_string())
    } else {
        serde_json::from_slice(body).map_err(|e| e.to_string())
    };
    v.map_err(|e| {
        ApiError::bad_request(format!("the body of the request could not be decoded: {e}"))
    })
}

async fn resource(
    inner: Arc<Inner>,
    req: Request<Incoming>,
    group: String,
    version: String,
    rest: Vec<String>,
) -> Result<Response<Body>, ApiError> {
    let t = target(&group, &version, &rest)?;
    let q = Query(query_pairs(req.uri().query().unwrap_or("")));
    let method = req.method().clone();
    let def = &RESOURCES[t.res];
    if let (Some(name), Some(sub)) = (&t.name, &t.sub) {
        if t.res == POD && matches!(sub.as_str(), "exec" | "portforward" | "attach") {
            let ns = t.ns.clone().unwrap_or_default();
            return stream::serve(inner, req, ns, name.clone(), sub.clone(), q);
        }
        if t.res == POD && sub == "log" && method == Method::GET {
            return pod_log(&inner, t.ns.as_deref().unwrap_or(""), name, &q);
        }
        if sub == "scale" && matches!(t.res, STATEFUL_SET | DEPLOYMENT) {
            let ns = t.ns.clone().unwrap_or_default();
            return scale_subresource(&inner, req, t.res, &ns, name).await;
        }
        if sub != "status" || !def.has_status {
            return Err(not_found_path());
        }
    }
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let ct = content_type(req.headers());
    let body = req
        .into_body()
        .collect()
        .await
        .map_err(|e| ApiError::bad_request(format!("reading the request body: {e}")))?
        .to_bytes();
    let ns = t.ns.as_deref();
    let status_only = t.sub.is_some();
    match (method, &t.name) {
        (Method::GET, None) if q.flag("watch") => watch_stream(inner, t.res, t.ns.clone(), &q),
        (Method::GET, None) => {
            let st = inner.lock();
            let items = filtered(&st, t.res, ns, &q)?;
            let rv = st.rv;
            drop(st);
            if accept.contains("as=Table") {
                return Ok(json_response(200, &table(t.res, &items, rv)));
            }
            if accept.contains("as=PartialObjectMetadataList") {
                return Ok(json_response(200, &metadata_list(items, rv)));
            }
            Ok(json_response(200, &list_json(t.res, items, rv)))
        }
        (Method::POST, None) => {
            if def.namespaced && ns.is_none() {
                return Err(ApiError::new(
                    405,
                    "MethodNotAllowed",
                    "the server does not allow this method on the requested resource",
                ));
            }
            let obj = decode(&ct, &body)?;
            let mut st = inner.lock();
            let created = create(&mut st, t.res, ns, obj, q.dry_run())?;
            sim::reconcile(&mut st);
            Ok(json_response(201, &created))
        }
        (Method::DELETE, None) => {
            let mut st = inner.lock();
            let items = filtered(&st, t.res, ns, &q)?;
            let mut gone = Vec::new();
            for o in items {
                let (ons, oname) = (
                    o["metadata"]["namespace"]
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                    o["metadata"]["name"].as_str().unwrap_or("").to_string(),
                );
                if !q.dry_run() {
                    delete(&mut st, t.res, &ons, &oname, None)?;
                }
                gone.push(o);
            }
            sim::reconcile(&mut st);
            let rv = st.rv;
            Ok(json_response(200, &list_json(t.res, gone, rv)))
        }
        (Method::GET, Some(name)) => {
            let st = inner.lock();
            let obj = st
                .get(t.res, ns.unwrap_or(""), name)
                .cloned()
                .ok_or_else(|| ApiError::not_found(def, name))?;
            drop(st);
            if accept.contains("as=Table") {
                let rv = obj["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or("0")
                    .parse()
                    .unwrap_or(0);
                return Ok(json_response(200, &table(t.res, &[obj], rv)));
            }
            Ok(json_response(200, &obj))
        }
        (Method::PUT, Some(name)) => {
            let obj = decode(&ct, &body)?;
            let mut st = inner.lock();
            let out = update(
                &mut st,
                t.res,
                ns.unwrap_or(""),
                name,
                obj,
                status_only,
                q.dry_run(),
            )?;
            sim::reconcile(&mut st);
            Ok(json_response(200, &out))
        }
        (Method::PATCH, Some(name)) => {
            let mut st = inner.lock();
            let (code, out) = patch_object(&mut st, t.res, ns, name, &ct, &body, &q, status_only)?;
            sim::reconcile(&mut st);
            Ok(json_response(code, &out))
        }
        (Method::DELETE, Some(name)) if !status_only => {
            let mut opts = if body.is_empty() {
                None
            } else {
                Some(decode("application/json", &body)?)
            };
            // DeleteOptions may also come as query parameters (`?gracePeriodSeconds=0`).
            if let Some(grace) = q
                .get("gracePeriodSeconds")
                .and_then(|g| g.parse::<i64>().ok())
            {
                opts.get_or_insert_with(|| json!({}))["gracePeriodSeconds"] = json!(grace);
            }
            let mut st = inner.lock();
            let out = if q.dry_run() {
                st.get(t.res, ns.unwrap_or(""), name)
                    .cloned()
                    .ok_or_else(|| ApiError::not_found(def, name))?
            } else {
                delete(&mut st, t.res, ns.unwrap_or(""), name, opts.as_ref())?
            };
            sim::reconcile(&mut st);
            Ok(json_response(200, &out))
        }
        _ => Err(ApiError::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )),
    }
}

/// The `scale` subresource of a StatefulSet or Deployment: an `autoscaling/v1` Scale whose
/// `spec.replicas` is the workload's (Kubernetes API reference, "Scale"; what `kubectl scale` and the
/// HorizontalPodAutoscaler use). A Role may grant it without granting changes to the workload itself.
/// GET reads it; PUT and PATCH (merge, strategic merge or JSON patch) set the replicas.
async fn scale_subresource(
    inner: &Inner,
    req: Request<Incoming>,
    res: usize,
    ns: &str,
    name: &str,
) -> Result<Response<Body>, ApiError> {
    let def = &RESOURCES[res];
    let method = req.method().clone();
    let ct = content_type(req.headers());
    let body = req
        .into_body()
        .collect()
        .await
        .map_err(|e| ApiError::bad_request(format!("reading the request body: {e}")))?
        .to_bytes();
    let mut st = inner.lock();
    let workload = st
        .get(res, ns, name)
        .cloned()
        .ok_or_else(|| ApiError::not_found(def, name))?;
    let as_scale = |w: &Value| {
        json!({
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                "name": w["metadata"]["name"], "namespace": w["metadata"]["namespace"],
                "uid": w["metadata"]["uid"], "resourceVersion": w["metadata"]["resourceVersion"],
                "creationTimestamp": w["metadata"]["creationTimestamp"],
            },
            "spec": {"replicas": w["spec"]["replicas"].as_u64().unwrap_or(1)},
            "status": {
                "replicas": w["status"]["replicas"].as_u64().unwrap_or(0),
                // The selector as a string, the form Scale's status carries.
                "selector": w["spec"]["selector"]["matchLabels"]
                    .as_object()
                    .map(|labels| {
                        labels
                            .iter()
                            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                            .collect::<Vec<_>>()
                            .join(",")
                    })
                    .unwrap_or_default(),
            },
        })
    };
    let mut scale = as_scale(&workload);
    match method {
        Method::GET => return Ok(json_response(200, &scale)),
        Method::PUT => scale = decode(&ct, &body)?,
        Method::PATCH => {
            let patch = decode(
                if ct.contains("yaml") {
                    &ct
                } else {
                    "application/json"
                },
                &body,
            )?;
            match ct.as_str() {
                "application/json-patch+json" => {
                    patch::json_patch(&mut scale, &patch).map_err(ApiError::bad_request)?
                }
                "application/strategic-merge-patch+json" => {
                    patch::strategic_merge(&mut scale, &patch)
                }
                _ => patch::merge_patch(&mut scale, &patch),
            }
        }
        _ => {
            return Err(ApiError::new(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
            ));
        }
    }
    let Some(replicas) = scale["spec"]["replicas"].as_u64() else {
        return Err(ApiError::invalid(
            def,
            name,
            "spec.replicas: Invalid value: a whole number of replicas, 0 or more, is required",
        ));
    };
    let mut updated = workload;
    updated["spec"]["replicas"] = json!(replicas);
    let updated = st.update(res, updated);
    sim::reconcile(&mut st);
    Ok(json_response(200, &as_scale(&updated)))
}

fn filtered(st: &State, res: usize, ns: Option<&str>, q: &Query) -> Result<Vec<Value>, ApiError> {
    let labels = LabelSelector::parse(q.get("labelSelector").unwrap_or(""))
        .map_err(ApiError::bad_request)?;
    let fields = FieldSelector::parse(q.get("fieldSelector").unwrap_or(""))
        .map_err(ApiError::bad_request)?;
    Ok(st
        .list(res, ns)
        .into_iter()
        .filter(|o| labels.matches(o) && fields.matches(o))
        .collect())
}

/// A `meta.k8s.io/v1` PartialObjectMetadataList: the items' metadata only (kube-rs `list_metadata`).
fn metadata_list(items: Vec<Value>, rv: u64) -> Value {
    let items: Vec<Value> = items
        .into_iter()
        .map(|mut o| {
            json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                "metadata": o["metadata"].take()})
        })
        .collect();
    json!({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": rv.to_string()}, "items": items})
}

fn list_json(res: usize, items: Vec<Value>, rv: u64) -> Value {
    let def = &RESOURCES[res];
    json!({
        "kind": format!("{}List", def.kind),
        "apiVersion": def.api_version(),
        "metadata": {"resourceVersion": rv.to_string()},
        "items": items,
    })
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Fold a secret's `stringData` into `data`.
fn secret_string_data(obj: &mut Value) {
    if let Some(Value::Object(sd)) = obj.as_object_mut().and_then(|o| o.remove("stringData")) {
        for (k, v) in sd {
            obj["data"][k] = json!(base64(v.as_str().unwrap_or("").as_bytes()));
        }
    }
}

/// Defaults and checks that the API server's strategies and admission give a new object.
fn defaults(st: &mut State, res: usize, obj: &mut Value) -> Result<(), ApiError> {
    let def = &RESOURCES[res];
    let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
    match res {
        POD => {
            let containers = obj["spec"]["containers"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if containers.is_empty() {
                return Err(ApiError::invalid(
                    def,
                    &name,
                    "spec.containers: Required value",
                ));
            }
            for (i, c) in containers.iter().enumerate() {
                for f in ["name", "image"] {
                    if c[f].as_str().unwrap_or("").is_empty() {
                        return Err(ApiError::invalid(
                            def,
                            &name,
                            format!("spec.containers[{i}].{f}: Required value"),
                        ));
                    }
                }
            }
            sim::pod_defaults(obj);
        }
        SERVICE => {
            let spec = &mut obj["spec"];
            if spec.get("type").is_none() {
                spec["type"] = json!("ClusterIP");
            }
            let ty = spec["type"].as_str().unwrap_or("").to_string();
            if spec.get("clusterIP").is_none() {
                let r = st.random();
                let ip = format!("10.100.{}.{}", (r >> 8) % 254 + 1, r % 254 + 1);
                spec["clusterIP"] = json!(ip);
                spec["clusterIPs"] = json!([ip]);
            }
            for (k, v) in [
                ("sessionAffinity", json!("None")),
                ("ipFamilies", json!(["IPv4"])),
                ("ipFamilyPolicy", json!("SingleStack")),
                ("internalTrafficPolicy", json!("Cluster")),
            ] {
                if spec.get(k).is_none() {
                    spec[k] = v;
                }
            }
            let node_ports = ty == "LoadBalancer" || ty == "NodePort";
            if node_ports && spec.get("externalTrafficPolicy").is_none() {
                spec["externalTrafficPolicy"] = json!("Cluster");
            }
            let mut ports = spec["ports"].as_array().cloned().unwrap_or_default();
            for p in &mut ports {
                if p.get("protocol").is_none() {
                    p["protocol"] = json!("TCP");
                }
                if p.get("targetPort").is_none() {
                    p["targetPort"] = p["port"].clone();
                }
                if node_ports && p.get("nodePort").is_none() {
                    p["nodePort"] = json!(30000 + st.random() % 2768);
                }
            }
            if !ports.is_empty() {
                spec["ports"] = Value::Array(ports);
            }
            obj["status"] = json!({"loadBalancer": {}});
        }
        SECRET => {
            secret_string_data(obj);
            if obj.get("type").is_none() {
                obj["type"] = json!("Opaque");
            }
        }
        PVC => {
            if obj["spec"].get("storageClassName").is_none() {
                let default = st.list(STORAGE_CLASS, None).into_iter().find(|sc| {
                    sc["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"]
                        == "true"
                });
                if let Some(sc) = default {
                    obj["spec"]["storageClassName"] = sc["metadata"]["name"].clone();
                }
            }
            if obj["spec"].get("volumeMode").is_none() {
                obj["spec"]["volumeMode"] = json!("Filesystem");
            }
            obj["status"] = json!({"phase": "Pending"});
        }
        NAMESPACE => {
            obj["metadata"]["labels"]["kubernetes.io/metadata.name"] = json!(name);
            obj["spec"] = json!({"finalizers": ["kubernetes"]});
            obj["status"] = json!({"phase": "Active"});
        }
        DAEMON_SET => {
            let selector = super::select::LabelSelector::from_object(&obj["spec"]["selector"]);
            let template = json!({"metadata": {"labels": obj["spec"]["template"]["metadata"]["labels"].clone()}});
            if obj["spec"]["selector"].is_null() || !selector.matches(&template) {
                return Err(ApiError::invalid(
                    def,
                    &name,
                    "spec.template.metadata.labels: Invalid value: `selector` does not match template `labels`",
                ));
            }
            let spec = &mut obj["spec"];
            if spec.get("updateStrategy").is_none() {
                spec["updateStrategy"] = json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}});
            }
            if spec.get("revisionHistoryLimit").is_none() {
                spec["revisionHistoryLimit"] = json!(10);
            }
            obj["status"] = json!({"currentNumberScheduled": 0, "desiredNumberScheduled": 0, "numberMisscheduled": 0, "numberReady": 0});
        }
        _ => {}
    }
    Ok(())
}

/// Create an object from a request body.
pub(crate) fn create(
    st: &mut State,
    res: usize,
    ns: Option<&str>,
    mut obj: Value,
    dry_run: bool,
) -> Result<Value, ApiError> {
    let def = &RESOURCES[res];
    if !obj.is_object() {
        return Err(ApiError::bad_request(
            "the body of the request is not an object",
        ));
    }
    if let Some(kind) = obj.get("kind").and_then(Value::as_str)
        && kind != def.kind
    {
        return Err(ApiError::bad_request(format!(
            "the kind in the data ({kind}) does not match the kind of the resource ({})",
            def.kind
        )));
    }
    if let Some(av) = obj.get("apiVersion").and_then(Value::as_str)
        && av != def.api_version()
    {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({av}) does not match the expected API version ({})",
            def.api_version()
        )));
    }
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    let name = match (
        obj["metadata"]["name"].as_str(),
        obj["metadata"]["generateName"].as_str(),
    ) {
        (Some(n), _) if !n.is_empty() => n.to_string(),
        (_, Some(g)) if !g.is_empty() => format!("{g}{}", st.suffix(5)),
        _ => {
            return Err(ApiError::invalid(
                def,
                "",
                "metadata.name: Required value: name or generateName is required",
            ));
        }
    };
    if !valid_name(&name) {
        return Err(ApiError::invalid(
            def,
            &name,
            format!(
                "metadata.name: Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
            ),
        ));
    }
    obj["metadata"]["name"] = json!(name);
    let meta = obj["metadata"].as_object_mut().expect("object");
    for f in [
        "resourceVersion",
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "generation",
        "managedFields",
    ] {
        meta.remove(f);
    }
    if def.namespaced {
        let ns = ns.unwrap_or("default");
        if let Some(body_ns) = obj["metadata"]["namespace"].as_str()
            && body_ns != ns
        {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        if st.get(NAMESPACE, "", ns).is_none() {
            return Err(ApiError::not_found(&RESOURCES[NAMESPACE], ns));
        }
        obj["metadata"]["namespace"] = json!(ns);
    } else {
        obj["metadata"]
            .as_object_mut()
            .expect("object")
            .remove("namespace");
    }
    if def.has_status && res != NODE {
        obj.as_object_mut().expect("object").remove("status");
    }
    defaults(st, res, &mut obj)?;
    if dry_run {
        if st.get(res, ns.unwrap_or(""), &name).is_some() {
            return Err(ApiError::already_exists(def, &name));
        }
        obj["apiVersion"] = json!(def.api_version());
        obj["kind"] = json!(def.kind);
        obj["metadata"]["creationTimestamp"] = json!(now());
        obj["metadata"]["uid"] = json!(st.uid());
        return Ok(obj);
    }
    st.insert(res, obj)
}

/// `PUT` an object or its status.
fn update(
    st: &mut State,
    res: usize,
    ns: &str,
    name: &str,
    obj: Value,
    status_only: bool,
    dry_run: bool,
) -> Result<Value, ApiError> {
    let def = &RESOURCES[res];
    let old = st
        .get(res, ns, name)
        .cloned()
        .ok_or_else(|| ApiError::not_found(def, name))?;
    if !obj.is_object() {
        return Err(ApiError::bad_request(
            "the body of the request is not an object",
        ));
    }
    if let Some(n) = obj["metadata"]["name"].as_str()
        && n != name
    {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({n}) does not match the name on the URL ({name})"
        )));
    }
    if let Some(rv) = obj["metadata"]["resourceVersion"].as_str()
        && !rv.is_empty()
        && rv != old["metadata"]["resourceVersion"]
    {
        return Err(ApiError::conflict(def, name));
    }
    let new = merge_into_old(res, &old, obj, status_only);
    if dry_run {
        return Ok(new);
    }
    Ok(st.update(res, new))
}

/// The stored object after a write of `obj`: immutable metadata kept, and either only the status
/// (`/status`) or everything but the status (the main resource) taken from `obj`.
fn merge_into_old(res: usize, old: &Value, mut obj: Value, status_only: bool) -> Value {
    let def = &RESOURCES[res];
    if status_only {
        let mut new = old.clone();
        new["status"] = obj["status"].clone();
        return new;
    }
    if res == SECRET {
        secret_string_data(&mut obj);
    }
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    for f in [
        "uid",
        "creationTimestamp",
        "namespace",
        "name",
        "deletionTimestamp",
    ] {
        match old["metadata"].get(f) {
            Some(v) => obj["metadata"][f] = v.clone(),
            None => {
                obj["metadata"].as_object_mut().expect("object").remove(f);
            }
        }
    }
    obj["apiVersion"] = json!(def.api_version());
    obj["kind"] = json!(def.kind);
    if def.has_status {
        match old.get("status") {
            Some(s) => obj["status"] = s.clone(),
            None => {
                obj.as_object_mut().expect("object").remove("status");
            }
        }
    }
    obj
}

#[allow(clippy::too_many_arguments)]
fn patch_object(
    st: &mut State,
    res: usize,
    ns: Option<&str>,
    name: &str,
    ct: &str,
    body: &[u8],
    q: &Query,
    status_only: bool,
) -> Result<(u16, Value), ApiError> {
    let def = &RESOURCES[res];
    let key_ns = ns.unwrap_or("");
    let old = st.get(res, key_ns, name).cloned();
    let patched = match ct {
        "application/apply-patch+yaml" => {
            let manager = q.get("fieldManager").unwrap_or("");
            if manager.is_empty() {
                return Err(ApiError::bad_request(
                    "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
                ));
            }
            let applied = decode("application/yaml", body)?;
            if applied["apiVersion"].as_str() != Some(&def.api_version())
                || applied["kind"].as_str() != Some(def.kind)
            {
                return Err(ApiError::bad_request(format!(
                    "the apply configuration must have apiVersion {} and kind {}",
                    def.api_version(),
                    def.kind
                )));
            }
            if let Some(n) = applied["metadata"]["name"].as_str()
                && n != name
            {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({n}) does not match the name on the URL ({name})"
                )));
            }
            let key = (
                (res, key_ns.to_string(), name.to_string()),
                manager.to_string(),
            );
            let entry = json!({"manager": manager, "operation": "Apply", "apiVersion": def.api_version(),
                "time": now(), "fieldsType": "FieldsV1", "fieldsV1": {}});
            let Some(old) = old else {
                if status_only {
                    return Err(ApiError::not_found(def, name));
                }
                let mut obj = applied.clone();
                obj["metadata"]["name"] = json!(name);
                obj["metadata"]["managedFields"] = json!([entry]);
                let created = create(st, res, ns, obj, q.dry_run())?;
                if !q.dry_run() {
                    // `create` strips managedFields; put them back.
                    let mut c = created;
                    c["metadata"]["managedFields"] = json!([entry]);
                    let c = st.update(res, c);
                    st.applied.insert(key, applied);
                    return Ok((201, c));
                }
                return Ok((201, created));
            };
            if let Some(rv) = applied["metadata"]["resourceVersion"].as_str()
                && rv != old["metadata"]["resourceVersion"]
            {
                return Err(ApiError::conflict(def, name));
            }
            let mut new = old.clone();
            let mut body = applied.clone();
            if let Some(m) = body["metadata"].as_object_mut() {
                m.remove("resourceVersion");
            }
            patch::strategic_merge(&mut new, &body);
            if let Some(prev) = st.applied.get(&key) {
                patch::prune_unapplied(&mut new, prev, &applied);
            }
            let mut fields: Vec<Value> = old["metadata"]["managedFields"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            fields.retain(|f| f["manager"] != json!(manager));
            fields.push(entry);
            new["metadata"]["managedFields"] = Value::Array(fields);
            if !q.dry_run() {
                st.applied.insert(key, applied);
            }
            new
        }
        "application/merge-patch+json"
        | "application/strategic-merge-patch+json"
        | "application/json-patch+json" => {
            let old = old.ok_or_else(|| ApiError::not_found(def, name))?;
            let p = decode("application/json", body)?;
            let mut new = old.clone();
            match ct {
                "application/merge-patch+json" => patch::merge_patch(&mut new, &p),
                "application/strategic-merge-patch+json" => patch::strategic_merge(&mut new, &p),
                _ => {
                    patch::json_patch(&mut new, &p).map_err(|e| ApiError::new(422, "Invalid", e))?
                }
            }
            if let Some(rv) = p["metadata"]["resourceVersion"].as_str()
                && rv != old["metadata"]["resourceVersion"]
            {
                return Err(ApiError::conflict(def, name));
            }
            new
        }
        other => {
            return Err(ApiError::new(
                415,
                "UnsupportedMediaType",
                format!(
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {other})"
                ),
            ));
        }
    };
    let old = st
        .get(res, key_ns, name)
        .cloned()
        .ok_or_else(|| ApiError::not_found(def, name))?;
    let mut new = merge_into_old(res, &old, patched, status_only);
    if !status_only {
        // a patch keeps the stored resourceVersion check above; the metadata it carries otherwise wins
        new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
    }
    if q.dry_run() {
        return Ok((200, new));
    }
    Ok((200, st.update(res, new)))
}

/// Delete one object; returns what the real API server would.
fn delete(
    st: &mut State,
    res: usize,
    ns: &str,
    name: &str,
    opts: Option<&Value>,
) -> Result<Value, ApiError> {
    let def = &RESOURCES[res];
    let obj = st
        .get(res, ns, name)
        .cloned()
        .ok_or_else(|| ApiError::not_found(def, name))?;
    if let Some(pre) = opts.map(|o| &o["preconditions"]) {
        if let Some(uid) = pre["uid"].as_str()
            && uid != obj["metadata"]["uid"]
        {
            return Err(ApiError::new(
                409,
                "Conflict",
                format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    obj["metadata"]["uid"].as_str().unwrap_or("")
                ),
            ));
        }
        if let Some(rv) = pre["resourceVersion"].as_str()
            && rv != obj["metadata"]["resourceVersion"]
        {
            return Err(ApiError::conflict(def, name));
        }
    }
    match res {
        NAMESPACE => {
            let inside: Vec<(usize, String, String)> = st
                .objects
                .keys()
                .filter(|(_, n, _)| n == name)
                .cloned()
                .collect();
            for (r, n, o) in inside {
                st.remove(r, &n, &o);
            }
            let mut gone = st.remove(res, ns, name).unwrap_or(obj);
            gone["metadata"]["deletionTimestamp"] = json!(now());
            gone["status"]["phase"] = json!("Terminating");
            Ok(gone)
        }
        POD => {
            let grace = opts.and_then(|o| o["gracePeriodSeconds"].as_i64());
            Ok(sim::delete_pod(st, ns, name, grace).unwrap_or(obj))
        }
        // With finalizers, deletion only marks the object; it goes when they are all removed.
        _ if obj["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty()) =>
        {
            if obj["metadata"].get("deletionTimestamp").is_some() {
                return Ok(obj);
            }
            let mut marked = obj;
            marked["metadata"]["deletionTimestamp"] = json!(now());
            Ok(st.update(res, marked))
        }
        _ => {
            let gone = st.remove(res, ns, name).unwrap_or(obj);
            let mut details =
                json!({"name": name, "kind": def.plural, "uid": gone["metadata"]["uid"]});
            if !def.group.is_empty() {
                details["group"] = json!(def.group);
            }
            Ok(
                json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}),
            )
        }
    }
}

fn pod_log(inner: &Inner, ns: &str, name: &str, q: &Query) -> Result<Response<Body>, ApiError> {
    let st = inner.lock();
    let pod = st
        .get(POD, ns, name)
        .ok_or_else(|| ApiError::not_found(&RESOURCES[POD], name))?;
    let containers: Vec<String> = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str().map(str::to_string))
        .collect();
    check_container(q, &containers, name)?;
    let text = st
        .logs
        .get(&(ns.to_string(), name.to_string()))
        .cloned()
        .unwrap_or_default();
    Ok(Response::builder()
        .header(header::CONTENT_TYPE, "text/plain")
        .body(full(text))
        .expect("response"))
}
