//! Tables: `meta.k8s.io/v1` Table answers with the columns `kubectl get` prints for each resource.

use serde_json::{Value, json};

use super::resources::{self, CONFIG_MAP, DAEMON_SET, NAMESPACE, NODE, POD, PVC, SECRET, SERVICE};

fn age(ts: &Value) -> String {
    let Some(t) = ts
        .as_str()
        .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
    else {
        return "<unknown>".into();
    };
    let secs = (k8s_openapi::jiff::Timestamp::now().as_second() - t.as_second()).max(0);
    let (m, h, d) = (secs / 60, secs / 3600, secs / 86400);
    if secs < 120 {
        format!("{secs}s")
    } else if m < 10 {
        format!("{m}m{}s", secs % 60)
    } else if h < 3 {
        format!("{m}m")
    } else if h < 8 {
        format!("{h}h{}m", m % 60)
    } else if h < 48 {
        format!("{h}h")
    } else {
        format!("{d}d")
    }
}

/// How a row's cells come from an object.
type Cells = Box<dyn Fn(&Value) -> Vec<Value>>;

/// A `meta.k8s.io/v1` Table, as `kubectl get` asks for.
pub(crate) fn table(res: usize, items: &[Value], rv: u64) -> Value {
    let st = |v: &Value| v.as_str().unwrap_or("").to_string();
    let (cols, cells): (Vec<&str>, Cells) = match res {
        POD => (
            vec!["Name", "Ready", "Status", "Restarts", "Age", "IP", "Node"],
            Box::new(move |o: &Value| {
                let cs = o["status"]["containerStatuses"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                let total = o["spec"]["containers"].as_array().map_or(0, Vec::len);
                let ready = cs.iter().filter(|c| c["ready"] == json!(true)).count();
                let waiting = cs
                    .iter()
                    .find_map(|c| c["state"]["waiting"]["reason"].as_str().map(str::to_string));
                let phase = waiting.unwrap_or_else(|| st(&o["status"]["phase"]));
                vec![
                    o["metadata"]["name"].clone(),
                    json!(format!("{ready}/{total}")),
                    json!(phase),
                    json!(0),
                    json!(age(&o["metadata"]["creationTimestamp"])),
                    json!(o["status"]["podIP"].as_str().unwrap_or("<none>")),
                    json!(o["spec"]["nodeName"].as_str().unwrap_or("<none>")),
                ]
            }),
        ),
        NODE => (
            vec!["Name", "Status", "Roles", "Age", "Version"],
            Box::new(move |o: &Value| {
                let mut status = "Ready".to_string();
                if o["spec"]["unschedulable"] == json!(true) {
                    status.push_str(",SchedulingDisabled");
                }
                vec![
                    o["metadata"]["name"].clone(),
                    json!(status),
                    json!("<none>"),
                    json!(age(&o["metadata"]["creationTimestamp"])),
                    o["status"]["nodeInfo"]["kubeletVersion"].clone(),
                ]
            }),
        ),
        DAEMON_SET => (
            vec![
                "Name",
                "Desired",
                "Current",
                "Ready",
                "Up-to-date",
                "Available",
                "Node Selector",
                "Age",
            ],
            Box::new(move |o: &Value| {
                let s = &o["status"];
                let sel = o["spec"]["template"]["spec"]["nodeSelector"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                            .collect::<Vec<_>>()
                            .join(",")
                    })
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| "<none>".into());
                let n = |k: &str| json!(s[k].as_i64().unwrap_or(0));
                vec![
                    o["metadata"]["name"].clone(),
                    n("desiredNumberScheduled"),
                    n("currentNumberScheduled"),
                    n("numberReady"),
                    n("updatedNumberScheduled"),
                    n("numberAvailable"),
                    json!(sel),
                    json!(age(&o["metadata"]["creationTimestamp"])),
                ]
            }),
        ),
        SERVICE => (
            vec![
                "Name",
                "Type",
                "Cluster-IP",
                "External-IP",
                "Port(s)",
                "Age",
            ],
            Box::new(move |o: &Value| {
                let ext = o["status"]["loadBalancer"]["ingress"][0]["hostname"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| {
                        if o["spec"]["type"] == "LoadBalancer" {
                            "<pending>".into()
                        } else {
                            "<none>".into()
                        }
                    });
                let ports = o["spec"]["ports"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|p| match p["nodePort"].as_i64() {
                        Some(np) => format!("{}:{np}/{}", p["port"], st(&p["protocol"])),
                        None => format!("{}/{}", p["port"], st(&p["protocol"])),
                    })
                    .collect::<Vec<_>>()
                    .join(",");
                vec![
                    o["metadata"]["name"].clone(),
                    o["spec"]["type"].clone(),
                    o["spec"]["clusterIP"].clone(),
                    json!(ext),
                    json!(ports),
                    json!(age(&o["metadata"]["creationTimestamp"])),
                ]
            }),
        ),
        PVC => (
            vec![
                "Name",
                "Status",
                "Volume",
                "Capacity",
                "Access Modes",
                "StorageClass",
                "Age",
            ],
            Box::new(move |o: &Value| {
                vec![
                    o["metadata"]["name"].clone(),
                    o["status"]["phase"].clone(),
                    json!(st(&o["spec"]["volumeName"])),
                    json!(st(&o["status"]["capacity"]["storage"])),
                    json!(
                        o["status"]["accessModes"]
                            .as_array()
                            .map(|m| m
                                .iter()
                                .map(|a| match a.as_str() {
                                    Some("ReadWriteOnce") => "RWO",
                                    Some("ReadOnlyMany") => "ROX",
                                    Some("ReadWriteMany") => "RWX",
                                    _ => "?",
                                })
                                .collect::<Vec<_>>()
                                .join(","))
                            .unwrap_or_default()
                    ),
                    json!(st(&o["spec"]["storageClassName"])),
                    json!(age(&o["metadata"]["creationTimestamp"])),
                ]
            }),
        ),
        NAMESPACE => (
            vec!["Name", "Status", "Age"],
            Box::new(move |o: &Value| {
                vec![
                    o["metadata"]["name"].clone(),
                    o["status"]["phase"].clone(),
                    json!(age(&o["metadata"]["creationTimestamp"])),
                ]
            }),
        ),
        CONFIG_MAP | SECRET => (
            vec!["Name", "Data", "Age"],
            Box::new(move |o: &Value| {
                let n = o["data"].as_object().map_or(0, |m| m.len());
                vec![
                    o["metadata"]["name"].clone(),
                    json!(n),
                    json!(age(&o["metadata"]["creationTimestamp"])),
                ]
            }),
        ),
        resources::EVENT => (
            vec!["Last Seen", "Type", "Reason", "Object", "Message"],
            Box::new(move |o: &Value| {
                let io = &o["involvedObject"];
                vec![
                    json!(age(&o["lastTimestamp"])),
                    o["type"].clone(),
                    o["reason"].clone(),
                    json!(format!(
                        "{}/{}",
                        st(&io["kind"]).to_lowercase(),
                        st(&io["name"])
                    )),
                    o["message"].clone(),
                ]
            }),
        ),
        _ => (
            vec!["Name", "Age"],
            Box::new(move |o: &Value| {
                vec![
                    o["metadata"]["name"].clone(),
                    json!(age(&o["metadata"]["creationTimestamp"])),
                ]
            }),
        ),
    };
    let columns: Vec<Value> = cols
        .iter()
        .map(|c| {
            let wide = matches!(*c, "IP" | "Node") && res == POD;
            json!({"name": c, "type": "string", "format": if *c == "Name" { "name" } else { "" }, "description": "", "priority": i32::from(wide)})
        })
        .collect();
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            json!({"cells": cells(o), "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]}})
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": rv.to_string()},
        "columnDefinitions": columns,
        "rows": rows,
    })
}
