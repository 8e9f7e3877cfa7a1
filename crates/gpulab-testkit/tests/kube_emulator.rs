//! The Kubernetes API emulator, driven by kube-rs as gpulab drives a real cluster.

use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use gpulab_testkit::kube::{KubeEmulator, NodeSpec};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Node, PersistentVolumeClaim, Pod, Service};
use kube::api::{
    Api, AttachParams, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent,
    WatchParams,
};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn api_code(e: kube::Error) -> (u16, String) {
    match e {
        kube::Error::Api(s) => (s.code, s.reason),
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn cm(name: &str, data: serde_json::Value) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}, "data": data})).unwrap()
}

/// The device plugin as gpulab renders it: a config map with the time-slicing replicas, and a
/// DaemonSet selecting and tolerating GPU nodes that mounts it.
fn device_plugin(replicas: u32) -> (ConfigMap, DaemonSet) {
    let config: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "nvidia-device-plugin-config", "namespace": "kube-system"},
        "data": {"config.yaml": gpulab_core::addon::nvidia_device_plugin::NvidiaDevicePlugin::config_file(replicas)},
    }))
    .unwrap();
    let ds: DaemonSet = serde_json::from_value(json!({
        "metadata": {"name": "nvidia-device-plugin-daemonset", "namespace": "kube-system"},
        "spec": {
            "selector": {"matchLabels": {"name": "nvidia-device-plugin-ds"}},
            "template": {
                "metadata": {"labels": {"name": "nvidia-device-plugin-ds"}},
                "spec": {
                    "nodeSelector": {"nvidia.com/gpu.present": "true"},
                    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                    "containers": [{"name": "nvidia-device-plugin-ctr", "image": "nvcr.io/nvidia/k8s-device-plugin:v0.17.4",
                        "volumeMounts": [{"name": "config", "mountPath": "/etc/nvidia-device-plugin"}]}],
                    "volumes": [{"name": "config", "configMap": {"name": "nvidia-device-plugin-config"}}],
                },
            },
        },
    }))
    .unwrap();
    (config, ds)
}

async fn install_device_plugin(client: &kube::Client, replicas: u32) {
    let (config, ds) = device_plugin(replicas);
    let pp = PatchParams::apply("gpulab-test");
    Api::<ConfigMap>::namespaced(client.clone(), "kube-system")
        .patch("nvidia-device-plugin-config", &pp, &Patch::Apply(&config))
        .await
        .unwrap();
    Api::<DaemonSet>::namespaced(client.clone(), "kube-system")
        .patch("nvidia-device-plugin-daemonset", &pp, &Patch::Apply(&ds))
        .await
        .unwrap();
}

fn gpu_pod(name: &str, gpus: u32, tolerate: bool) -> Pod {
    let mut pod = json!({
        "metadata": {"name": name, "labels": {"app": "workspace"}},
        "spec": {"containers": [{"name": "main", "image": "pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime",
            "resources": {"limits": {"nvidia.com/gpu": gpus.to_string()}, "requests": {"cpu": "250m", "memory": "1Gi"}}}]},
    });
    if tolerate {
        pod["spec"]["tolerations"] =
            json!([{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]);
        pod["spec"]["nodeSelector"] = json!({"nvidia.com/gpu.present": "true"});
    }
    serde_json::from_value(pod).unwrap()
}

fn condition(pod: &Pod, ty: &str) -> Option<(String, Option<String>, Option<String>)> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == ty)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

async fn events_for(client: &kube::Client, name: &str) -> Vec<Event> {
    Api::<Event>::default_namespaced(client.clone())
        .list(&ListParams::default().fields(&format!("involvedObject.name={name}")))
        .await
        .unwrap()
        .items
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crud_conflicts_and_not_found() {
    let emu = KubeEmulator::start().await.unwrap();
    let cms = Api::<ConfigMap>::default_namespaced(emu.client());
    let created = cms
        .create(&PostParams::default(), &cm("a", json!({"k": "1"})))
        .await
        .unwrap();
    let meta = &created.metadata;
    assert!(meta.uid.is_some() && meta.creation_timestamp.is_some());
    let rv = meta.resource_version.clone().unwrap();

    let again = cms
        .create(&PostParams::default(), &cm("a", json!({})))
        .await;
    assert_eq!(api_code(again.unwrap_err()), (409, "AlreadyExists".into()));

    let mut stale = created.clone();
    stale.data = Some([("k".to_string(), "2".to_string())].into());
    let updated = cms
        .replace("a", &PostParams::default(), &stale)
        .await
        .unwrap();
    assert_ne!(
        updated.metadata.resource_version.as_deref(),
        Some(rv.as_str())
    );
    // the same resourceVersion again is stale now
    let conflict = cms.replace("a", &PostParams::default(), &stale).await;
    assert_eq!(api_code(conflict.unwrap_err()), (409, "Conflict".into()));

    assert_eq!(cms.get("a").await.unwrap().data.unwrap()["k"], "2");
    let deleted = cms.delete("a", &DeleteParams::default()).await.unwrap();
    assert!(
        deleted.is_right(),
        "a config map is deleted at once: {deleted:?}"
    );
    assert_eq!(
        api_code(cms.get("a").await.unwrap_err()),
        (404, "NotFound".into())
    );
    assert_eq!(
        api_code(cms.delete("a", &DeleteParams::default()).await.unwrap_err()),
        (404, "NotFound".into())
    );
    let elsewhere = Api::<ConfigMap>::namespaced(emu.client(), "missing");
    let err = elsewhere
        .create(&PostParams::default(), &cm("b", json!({})))
        .await;
    assert_eq!(api_code(err.unwrap_err()), (404, "NotFound".into()));

    // generateName and dry run
    let generated: ConfigMap =
        serde_json::from_value(json!({"metadata": {"generateName": "gen-"}})).unwrap();
    let dry = cms
        .create(
            &PostParams {
                dry_run: true,
                ..Default::default()
            },
            &generated,
        )
        .await
        .unwrap();
    assert!(dry.metadata.name.unwrap().starts_with("gen-"));
    assert!(
        cms.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_with_label_and_field_selectors() {
    let emu = KubeEmulator::start().await.unwrap();
    emu.add_node(NodeSpec::cpu("cpu-1"));
    let pods = Api::<Pod>::default_namespaced(emu.client());
    for (name, app) in [("p1", "a"), ("p2", "b"), ("p3", "c")] {
        let p: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"app": app}},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]},
        }))
        .unwrap();
        pods.create(&PostParams::default(), &p).await.unwrap();
    }
    let names = |l: Vec<Pod>| {
        l.into_iter()
            .map(|p| p.metadata.name.unwrap())
            .collect::<Vec<_>>()
    };
    let list = |lp: ListParams| {
        let pods = pods.clone();
        async move { names(pods.list(&lp).await.unwrap().items) }
    };
    assert_eq!(list(ListParams::default().labels("app=a")).await, ["p1"]);
    assert_eq!(
        list(ListParams::default().labels("app in (a,c)")).await,
        ["p1", "p3"]
    );
    assert_eq!(
        list(ListParams::default().labels("app!=a")).await,
        ["p2", "p3"]
    );
    assert!(list(ListParams::default().labels("!app")).await.is_empty());
    assert_eq!(
        list(ListParams::default().fields("metadata.name=p2")).await,
        ["p2"]
    );
    assert_eq!(
        list(ListParams::default().fields("spec.nodeName=cpu-1,status.phase=Running"))
            .await
            .len(),
        3
    );
    assert!(
        list(ListParams::default().fields("status.phase=Pending"))
            .await
            .is_empty()
    );

    let all = Api::<Pod>::all(emu.client())
        .list(&ListParams::default())
        .await
        .unwrap();
    assert_eq!(all.items.len(), 3);
    let ns = Api::<Pod>::namespaced(emu.client(), "kube-system")
        .list(&ListParams::default())
        .await
        .unwrap();
    assert!(ns.items.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_events_bookmarks_resume_and_close() {
    let emu = KubeEmulator::start().await.unwrap();
    emu.set_bookmark_interval(Duration::from_millis(20));
    let cms = Api::<ConfigMap>::default_namespaced(emu.client());
    let first = cms
        .create(&PostParams::default(), &cm("one", json!({})))
        .await
        .unwrap();
    let rv = first.metadata.resource_version.clone().unwrap();

    let mut stream = cms
        .watch(&WatchParams::default().labels(""), &rv)
        .await
        .unwrap()
        .boxed();
    cms.create(&PostParams::default(), &cm("two", json!({})))
        .await
        .unwrap();
    cms.patch(
        "two",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"x": "y"}})),
    )
    .await
    .unwrap();
    cms.delete("one", &DeleteParams::default()).await.unwrap();
    let mut seen = Vec::new();
    let mut bookmark = false;
    while seen.len() < 3 || !bookmark {
        match stream.try_next().await.unwrap().expect("the watch is open") {
            WatchEvent::Added(c) => seen.push(format!("ADDED {}", c.metadata.name.unwrap())),
            WatchEvent::Modified(c) => seen.push(format!("MODIFIED {}", c.metadata.name.unwrap())),
            WatchEvent::Deleted(c) => seen.push(format!("DELETED {}", c.metadata.name.unwrap())),
            WatchEvent::Bookmark(b) => {
                assert!(b.metadata.resource_version.parse::<u64>().unwrap() > 0);
                bookmark = true;
            }
            WatchEvent::Error(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(seen, ["ADDED two", "MODIFIED two", "DELETED one"]);

    // resuming from the first version replays what happened since
    let replay: Vec<_> = cms
        .watch(&WatchParams::default().disable_bookmarks(), &rv)
        .await
        .unwrap()
        .take(3)
        .try_collect()
        .await
        .unwrap();
    assert!(matches!(replay[2], WatchEvent::Deleted(_)));

    // a selector turns objects leaving it into DELETED
    let mut labelled = cms
        .watch(
            &WatchParams::default().labels("team=ml").disable_bookmarks(),
            "0",
        )
        .await
        .unwrap()
        .boxed();
    cms.patch(
        "two",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"team": "ml"}}})),
    )
    .await
    .unwrap();
    assert!(matches!(
        labelled.try_next().await.unwrap(),
        Some(WatchEvent::Added(_))
    ));
    cms.patch(
        "two",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"team": null}}})),
    )
    .await
    .unwrap();
    assert!(matches!(
        labelled.try_next().await.unwrap(),
        Some(WatchEvent::Deleted(_))
    ));

    emu.close_watches();
    // the stream ends (after what was already sent)
    while stream.try_next().await.unwrap().is_some() {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_apply_merge_json_and_strategic_patches() {
    let emu = KubeEmulator::start().await.unwrap();
    let cms = Api::<ConfigMap>::default_namespaced(emu.client());
    let pp = PatchParams::apply("gpulab");
    let applied = cms
        .patch(
            "cfg",
            &pp,
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "cfg"}, "data": {"a": "1", "b": "2"}})),
        )
        .await
        .unwrap();
    assert_eq!(
        applied.metadata.managed_fields.unwrap()[0]
            .manager
            .as_deref(),
        Some("gpulab")
    );
    // someone else's edit survives a re-apply; what the manager dropped goes
    cms.patch(
        "cfg",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"other": "x"}})),
    )
    .await
    .unwrap();
    let reapplied = cms
        .patch(
            "cfg",
            &pp,
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "cfg"}, "data": {"a": "10"}})),
        )
        .await
        .unwrap();
    let data = reapplied.data.unwrap();
    assert_eq!(data.get("a").map(String::as_str), Some("10"));
    assert_eq!(data.get("b"), None);
    assert_eq!(data.get("other").map(String::as_str), Some("x"));

    let ops = json!([
        {"op": "add", "path": "/data/c", "value": "3"},
        {"op": "remove", "path": "/data/other"},
    ]);
    let req = http::Request::patch("/api/v1/namespaces/default/configmaps/cfg")
        .header("Content-Type", "application/json-patch+json")
        .body(serde_json::to_vec(&ops).unwrap())
        .unwrap();
    let patched: ConfigMap = emu.client().request(req).await.unwrap();
    assert_eq!(patched.data.unwrap().keys().collect::<Vec<_>>(), ["a", "c"]);

    let missing = cms
        .patch("nope", &PatchParams::default(), &Patch::Merge(json!({})))
        .await;
    assert_eq!(api_code(missing.unwrap_err()), (404, "NotFound".into()));

    // strategic merge keys list elements by name
    emu.add_node(NodeSpec::cpu("cpu-1"));
    let pods = Api::<Pod>::default_namespaced(emu.client());
    let pod: Pod =
        serde_json::from_value(json!({"metadata": {"name": "two"}, "spec": {"containers": [
        {"name": "a", "image": "busybox:1", "args": ["x"]}, {"name": "b", "image": "busybox:1"}]}}))
        .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let p = pods
        .patch(
            "two",
            &PatchParams::default(),
            &Patch::Strategic(
                json!({"spec": {"containers": [{"name": "b", "image": "busybox:2"}]}}),
            ),
        )
        .await
        .unwrap();
    let containers = p.spec.unwrap().containers;
    assert_eq!(containers.len(), 2);
    assert_eq!(containers[0].args.as_deref(), Some(&["x".to_string()][..]));
    assert_eq!(containers[1].image.as_deref(), Some("busybox:2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_plugin_makes_gpus_allocatable() {
    let emu = KubeEmulator::start().await.unwrap();
    emu.add_node(NodeSpec::gpu("gpu-1"));
    emu.add_node(NodeSpec::cpu("cpu-1"));
    let client = emu.client();
    let nodes = Api::<Node>::all(client.clone());
    let alloc = |n: Node| {
        n.status
            .unwrap()
            .allocatable
            .unwrap()
            .get("nvidia.com/gpu")
            .map(|q| q.0.clone())
    };
    assert_eq!(alloc(nodes.get("gpu-1").await.unwrap()), None);

    install_device_plugin(&client, 1).await;
    assert_eq!(
        alloc(nodes.get("gpu-1").await.unwrap()).as_deref(),
        Some("1")
    );
    assert_eq!(alloc(nodes.get("cpu-1").await.unwrap()), None);
    let ds = Api::<DaemonSet>::namespaced(client.clone(), "kube-system")
        .get("nvidia-device-plugin-daemonset")
        .await
        .unwrap();
    let status = ds.status.unwrap();
    assert_eq!(
        (status.desired_number_scheduled, status.number_ready),
        (1, 1)
    );
    let plugin_pods = Api::<Pod>::namespaced(client.clone(), "kube-system")
        .list(&ListParams::default().labels("name=nvidia-device-plugin-ds"))
        .await
        .unwrap();
    assert_eq!(plugin_pods.items.len(), 1);
    assert_eq!(
        plugin_pods.items[0]
            .spec
            .as_ref()
            .unwrap()
            .node_name
            .as_deref(),
        Some("gpu-1")
    );

    // a second GPU node gets its own plugin pod
    emu.add_node(NodeSpec::gpu("gpu-2").with_gpus(4));
    assert_eq!(emu.allocatable_gpus("gpu-2"), Some(4));

    // without the plugin, the GPUs are no longer allocatable
    Api::<DaemonSet>::namespaced(client.clone(), "kube-system")
        .delete("nvidia-device-plugin-daemonset", &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(emu.allocatable_gpus("gpu-1"), Some(0));
    let left = Api::<Pod>::namespaced(client, "kube-system")
        .list(&ListParams::default())
        .await
        .unwrap();
    assert!(
        left.items.is_empty(),
        "the DaemonSet's pods are garbage collected"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_slicing_multiplies_allocatable() {
    let emu = KubeEmulator::start().await.unwrap();
    emu.add_node(NodeSpec::gpu("gpu-1").with_gpus(2));
    install_device_plugin(&emu.client(), 4).await;
    assert_eq!(emu.allocatable_gpus("gpu-1"), Some(8));
    // four one-GPU pods fit on a time-sliced GPU... and eight on two
    let pods = Api::<Pod>::default_namespaced(emu.client());
    for i in 0..9 {
        pods.create(&PostParams::default(), &gpu_pod(&format!("p{i}"), 1, true))
            .await
            .unwrap();
    }
    let running = pods
        .list(&ListParams::default().fields("status.phase=Running"))
        .await
        .unwrap();
    assert_eq!(running.items.len(), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_pods_say_why() {
    let emu = KubeEmulator::start().await.unwrap();
    let client = emu.client();
    let pods = Api::<Pod>::default_namespaced(client.clone());

    // no node at all
    pods.create(&PostParams::default(), &gpu_pod("lonely", 1, true))
        .await
        .unwrap();
    let p = pods.get("lonely").await.unwrap();
    assert_eq!(p.status.as_ref().unwrap().phase.as_deref(), Some("Pending"));
    let (status, reason, message) = condition(&p, "PodScheduled").unwrap();
    assert_eq!(
        (status.as_str(), reason.as_deref()),
        ("False", Some("Unschedulable"))
    );
    assert_eq!(
        message.as_deref(),
        Some("no nodes available to schedule pods")
    );
    pods.delete("lonely", &DeleteParams::default())
        .await
        .unwrap();

    // a GPU node without the device plugin, a CPU node, and a pod that does not tolerate the taint
    emu.add_node(NodeSpec::gpu("gpu-1"));
    emu.add_node(NodeSpec::cpu("cpu-1"));
    pods.create(&PostParams::default(), &gpu_pod("untolerated", 1, false))
        .await
        .unwrap();
    let (_, _, message) =
        condition(&pods.get("untolerated").await.unwrap(), "PodScheduled").unwrap();
    let expected = "0/2 nodes are available: 1 Insufficient nvidia.com/gpu, 1 node(s) had untolerated taint {nvidia.com/gpu: true}. preemption: 0/2 nodes are available: 1 No preemption victims found for incoming pod, 1 Preemption is not helpful for scheduling.";
    assert_eq!(message.as_deref(), Some(expected));
    let events = events_for(&client, "untolerated").await;
    let failed = events
        .iter()
        .find(|e| e.reason.as_deref() == Some("FailedScheduling"))
        .unwrap();
    assert_eq!(failed.message.as_deref(), Some(expected));
    assert_eq!(failed.type_.as_deref(), Some("Warning"));

    // tolerating it: the GPU node lacks allocatable GPUs until the plugin runs
    pods.create(&PostParams::default(), &gpu_pod("ws", 1, true))
        .await
        .unwrap();
    let (_, _, message) = condition(&pods.get("ws").await.unwrap(), "PodScheduled").unwrap();
    assert!(message.unwrap().starts_with(
        "0/2 nodes are available: 1 Insufficient nvidia.com/gpu, 1 node(s) didn't match Pod's node affinity/selector."
    ));

    // the plugin arrives: the pending pod is retried and runs
    install_device_plugin(&client, 1).await;
    let ws = pods.get("ws").await.unwrap();
    assert_eq!(
        ws.spec.as_ref().unwrap().node_name.as_deref(),
        Some("gpu-1")
    );
    assert_eq!(
        ws.status.as_ref().unwrap().phase.as_deref(),
        Some("Running")
    );
    assert_eq!(condition(&ws, "Ready").unwrap().0, "True");
    let cs = &ws
        .status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_ref()
        .unwrap()[0];
    assert!(cs.ready && cs.state.as_ref().unwrap().running.is_some());
    assert!(
        events_for(&client, "ws")
            .await
            .iter()
            .any(|e| e.reason.as_deref() == Some("Scheduled"))
    );

    // the only GPU is taken
    pods.create(&PostParams::default(), &gpu_pod("second", 1, true))
        .await
        .unwrap();
    let (_, _, message) = condition(&pods.get("second").await.unwrap(), "PodScheduled").unwrap();
    assert!(
        message
            .unwrap()
            .starts_with("0/2 nodes are available: 1 Insufficient nvidia.com/gpu,")
    );
    // too much memory for any node
    let mut huge = gpu_pod("huge", 0, true);
    huge.spec.as_mut().unwrap().containers[0]
        .resources
        .as_mut()
        .unwrap()
        .requests = Some(
        [(
            "memory".to_string(),
            k8s_openapi::apimachinery::pkg::api::resource::Quantity("64Gi".into()),
        )]
        .into(),
    );
    pods.create(&PostParams::default(), &huge).await.unwrap();
    let (_, _, message) = condition(&pods.get("huge").await.unwrap(), "PodScheduled").unwrap();
    assert!(message.unwrap().contains("1 Insufficient memory"));

    // freeing the GPU lets the second pod run
    pods.delete("ws", &DeleteParams::default()).await.unwrap();
    assert_eq!(
        pods.get("second")
            .await
            .unwrap()
            .status
            .unwrap()
            .phase
            .as_deref(),
        Some("Running")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_bind_load_balancers_get_hostnames_and_image_pulls_fail() {
    let emu = KubeEmulator::start().await.unwrap();
    emu.add_node(NodeSpec::cpu("cpu-1"));
    let client = emu.client();
    let pvcs = Api::<PersistentVolumeClaim>::default_namespaced(client.clone());
    let claim: PersistentVolumeClaim = serde_json::from_value(json!({"metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "50Gi"}}}})).unwrap();
    pvcs.create(&PostParams::default(), &claim).await.unwrap();
    let pending = pvcs.get("data").await.unwrap();
    assert_eq!(
        pending.status.unwrap().phase.as_deref(),
        Some("Pending"),
        "gp2 waits for a consumer"
    );
    let pods = Api::<Pod>::default_namespaced(client.clone());
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "user"}, "spec": {
        "containers": [{"name": "c", "image": "busybox", "volumeMounts": [{"name": "d", "mountPath": "/workspace"}]}],
        "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "data"}}]}})).unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let bound = pvcs.get("data").await.unwrap();
    assert_eq!(bound.status.unwrap().phase.as_deref(), Some("Bound"));
    assert!(bound.spec.unwrap().volume_name.unwrap().starts_with("pvc-"));
    assert_eq!(
        pods.get("user")
            .await
            .unwrap()
            .status
            .unwrap()
            .phase
            .as_deref(),
        Some("Running")
    );

    let svcs = Api::<Service>::default_namespaced(client.clone());
    let svc: Service = serde_json::from_value(json!({"metadata": {"name": "ssh"}, "spec": {"type": "LoadBalancer",
        "selector": {"app": "x"}, "ports": [{"port": 22}], "loadBalancerSourceRanges": ["203.0.113.7/32"]}})).unwrap();
    svcs.create(&PostParams::default(), &svc).await.unwrap();
    let svc = svcs.get("ssh").await.unwrap();
    let host = svc.status.unwrap().load_balancer.unwrap().ingress.unwrap()[0]
        .hostname
        .clone()
        .unwrap();
    assert!(host.ends_with(".elb.amazonaws.com"), "{host}");
    assert!(svc.spec.unwrap().ports.unwrap()[0].node_port.is_some());

    emu.fail_image_pulls("does-not-exist");
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "bad"}, "spec": {
        "containers": [{"name": "c", "image": "example.com/does-not-exist:1"}]}}))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let bad = pods.get("bad").await.unwrap();
    let status = bad.status.unwrap();
    assert_eq!(status.phase.as_deref(), Some("Pending"));
    let waiting = status.container_statuses.unwrap()[0]
        .state
        .clone()
        .unwrap()
        .waiting
        .unwrap();
    assert_eq!(waiting.reason.as_deref(), Some("ImagePullBackOff"));
    emu.allow_image_pulls();
    assert_eq!(
        pods.get("bad")
            .await
            .unwrap()
            .status
            .unwrap()
            .phase
            .as_deref(),
        Some("Running")
    );
}

async fn running_pod(emu: &KubeEmulator, name: &str) -> Api<Pod> {
    emu.add_node(NodeSpec::cpu(&format!("node-for-{name}")));
    let pods = Api::<Pod>::default_namespaced(emu.client());
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": name},
        "spec": {"containers": [{"name": "main", "image": "busybox"}]}}))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    pods
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_runs_commands_streams_and_returns_exit_codes() {
    let emu = KubeEmulator::start().await.unwrap();
    let pods = running_pod(&emu, "ws").await;

    let mut p = pods
        .exec("ws", ["echo", "hi"], &AttachParams::default().stderr(false))
        .await
        .unwrap();
    let mut out = String::new();
    p.stdout().unwrap().read_to_string(&mut out).await.unwrap();
    let status = p.take_status().unwrap().await.unwrap();
    assert_eq!(out, "hi\n");
    assert_eq!(status.status.as_deref(), Some("Success"));
    p.join().await.unwrap();

    // stdin passes through; the working directory is the pod's sandbox
    let mut p = pods
        .exec(
            "ws",
            ["sh", "-c", "cat > got.txt && pwd"],
            &AttachParams::default().stdin(true).stderr(false),
        )
        .await
        .unwrap();
    let mut stdin = p.stdin().unwrap();
    stdin.write_all(b"from stdin\n").await.unwrap();
    stdin.shutdown().await.unwrap();
    let mut out = String::new();
    p.stdout().unwrap().read_to_string(&mut out).await.unwrap();
    assert_eq!(
        p.take_status().unwrap().await.unwrap().status.as_deref(),
        Some("Success")
    );
    let dir = emu.pod_dir("default", "ws");
    assert_eq!(out.trim(), dir.canonicalize().unwrap().to_str().unwrap());
    assert_eq!(
        std::fs::read_to_string(dir.join("got.txt")).unwrap(),
        "from stdin\n"
    );

    // a failing command: stderr, and its exit code in the status
    let mut p = pods
        .exec(
            "ws",
            ["sh", "-c", "echo oops >&2; exit 7"],
            &AttachParams::default(),
        )
        .await
        .unwrap();
    let mut err = String::new();
    p.stderr().unwrap().read_to_string(&mut err).await.unwrap();
    let status = p.take_status().unwrap().await.unwrap();
    assert_eq!(err, "oops\n");
    assert_eq!(status.status.as_deref(), Some("Failure"));
    assert_eq!(status.reason.as_deref(), Some("NonZeroExitCode"));
    let cause = &status.details.unwrap().causes.unwrap()[0];
    assert_eq!(
        (cause.reason.as_deref(), cause.message.as_deref()),
        (Some("ExitCode"), Some("7"))
    );

    // exec into a missing or pending pod is refused
    let missing = pods.exec("nope", ["true"], &AttachParams::default()).await;
    assert!(missing.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_forward_reaches_the_registered_address() {
    let emu = KubeEmulator::start().await.unwrap();
    let pods = running_pod(&emu, "ws").await;
    let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = echo.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = echo.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    emu.register_port("default", "ws", 22, addr);

    let mut pf = pods.portforward("ws", &[22]).await.unwrap();
    let mut stream = pf.take_stream(22).unwrap();
    stream.write_all(b"ping over the API server").await.unwrap();
    let mut buf = [0u8; 24];
    stream.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping over the API server");
    drop(stream);
    pf.abort();

    // an unregistered port reports an error on its error channel
    let mut pf = pods.portforward("ws", &[8888]).await.unwrap();
    let err = pf.take_error(8888).unwrap().await.unwrap();
    assert!(err.contains("8888"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn knobs_fail_requests_and_add_latency() {
    let emu = KubeEmulator::start().await.unwrap();
    let cms = Api::<ConfigMap>::default_namespaced(emu.client());
    emu.fail_next(2);
    for _ in 0..2 {
        assert_eq!(
            api_code(cms.list(&ListParams::default()).await.unwrap_err()),
            (500, "InternalError".into())
        );
    }
    cms.list(&ListParams::default()).await.unwrap();
    emu.set_latency(Duration::from_millis(5));
    cms.create(&PostParams::default(), &cm("slow", json!({})))
        .await
        .unwrap();
    emu.set_latency(Duration::ZERO);
    assert!(emu.resource_version() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubeconfig_works_for_kube_rs() {
    let emu = KubeEmulator::start().await.unwrap();
    emu.add_node(NodeSpec::gpu("gpu-1"));
    let kc = kube::config::Kubeconfig::from_yaml(&emu.kubeconfig_yaml()).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    assert_eq!(config.default_namespace, "default");
    let client = kube::Client::try_from(config).unwrap();
    let nodes = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap();
    assert_eq!(nodes.items.len(), 1);
    assert_eq!(client.apiserver_version().await.unwrap().minor, "33");
}
