//! Every manifest `gpulab plan --output yaml` renders is one Kubernetes accepts: it parses back into
//! k8s-openapi's typed objects without losing a field, and the real `kubectl` decodes it.

use gpulab_core::manifest::KubeObject;
use gpulab_core::plan::Plan;
use gpulab_core::spec::{
    AccessLayer, AccessMode, DevicePluginLayer, NodesLayer, SpecLayer, WorkspaceLayer,
};
use gpulab_testkit::LabDir;

/// Specs that exercise every optional object: the default, a LoadBalancer with time-slicing on a
/// multi-GPU node, and a user-named StorageClass without Jupyter.
fn plans() -> Vec<(&'static str, Plan)> {
    let lab = LabDir::new().with_default_key();
    let variants = [
        ("default", SpecLayer::default()),
        (
            "load-balancer",
            SpecLayer {
                nodes: NodesLayer {
                    instance_type: Some("g5.12xlarge".into()),
                    ..Default::default()
                },
                workspace: WorkspaceLayer {
                    gpus: Some(2),
                    ..Default::default()
                },
                device_plugin: DevicePluginLayer {
                    time_slicing_replicas: Some(4),
                },
                access: AccessLayer {
                    mode: Some(AccessMode::LoadBalancer),
                    allowed_cidrs: Some(vec!["203.0.113.7/32".parse().unwrap()]),
                    api_cidrs: None,
                },
                ..Default::default()
            },
        ),
        (
            "own-storage",
            SpecLayer {
                workspace: WorkspaceLayer {
                    storage_class: Some("fast-ssd".into()),
                    jupyter: Some(false),
                    ..Default::default()
                },
                ..Default::default()
            },
        ),
    ];
    variants
        .into_iter()
        .map(|(name, layer)| {
            (
                name,
                Plan::new(&lab.inputs(layer).resolve().unwrap().validate().unwrap()),
            )
        })
        .collect()
}

#[test]
fn manifests_parse_back_into_typed_objects_without_loss() {
    for (name, plan) in plans() {
        let yaml = KubeObject::to_yaml_stream(&plan.kubernetes);
        let parsed = KubeObject::from_yaml_stream(&yaml).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            parsed, plan.kubernetes,
            "{name}: typed round trip changed the objects"
        );

        // k8s-openapi ignores unknown fields when it parses; comparing the untyped documents catches a
        // field it would have dropped.
        for (doc, object) in serde_yaml::Deserializer::from_str(&yaml).zip(&plan.kubernetes) {
            let raw: serde_json::Value = serde::Deserialize::deserialize(doc).unwrap();
            assert_eq!(
                raw,
                serde_json::to_value(object).unwrap(),
                "{name}: {} {}",
                object.kind(),
                object.name()
            );
        }
    }
}

#[test]
fn plans_contain_what_the_spec_asks_for() {
    let plans = plans();
    let kinds = |plan: &Plan| {
        plan.kubernetes
            .iter()
            .map(|o| format!("{}/{}", o.kind(), o.name()))
            .collect::<Vec<_>>()
    };

    let default = kinds(&plans[0].1);
    for expected in [
        "DaemonSet/gpulab-nvidia-device-plugin",
        "Secret/gpu-dev-pod-ssh-keys",
        "Secret/gpu-dev-pod-ssh-host-key",
        "Secret/gpu-dev-pod-jupyter",
        "ConfigMap/gpu-dev-pod-setup",
        "PersistentVolumeClaim/gpu-dev-pod-workspace",
        "StorageClass/gpulab-gpu-learning-cluster-gp3",
        "StatefulSet/gpu-dev-pod",
        "Service/gpu-dev-pod-ssh",
    ] {
        assert!(
            default.contains(&expected.to_string()),
            "default plan lacks {expected}: {default:?}"
        );
    }
    assert!(
        !default.iter().any(|k| k == "Service/gpu-dev-pod-public"),
        "no LoadBalancer unless asked"
    );

    let lb = &plans[1].1;
    let service = lb.kubernetes.iter().find_map(|o| match o {
        KubeObject::Service(s) if o.name() == "gpu-dev-pod-public" => s.spec.clone(),
        _ => None,
    });
    let service = service.expect("a LoadBalancer service");
    assert_eq!(service.type_.as_deref(), Some("LoadBalancer"));
    assert_eq!(
        service.load_balancer_source_ranges,
        Some(vec!["203.0.113.7/32".to_string()])
    );

    let own = kinds(&plans[2].1);
    assert!(
        !own.iter().any(|k| k.starts_with("StorageClass/")),
        "a named StorageClass is used, not created"
    );
    assert!(!own.iter().any(|k| k == "Secret/gpu-dev-pod-jupyter"));
}

#[test]
fn the_gpu_pod_requests_gpus_and_tolerates_the_gpu_taint_only() {
    let (_, plan) = plans().remove(1);
    let pod = plan
        .kubernetes
        .iter()
        .find_map(|o| {
            if let KubeObject::StatefulSet(set) = o {
                set.spec.as_ref()?.template.spec.clone()
            } else {
                None
            }
        })
        .unwrap();
    let container = &pod.containers[0];
    let resources = container.resources.as_ref().unwrap();
    assert_eq!(resources.limits.as_ref().unwrap()["nvidia.com/gpu"].0, "2");
    assert_eq!(
        resources.requests.as_ref().unwrap()["nvidia.com/gpu"].0,
        "2"
    );
    let env: Vec<&str> = container
        .env
        .as_ref()
        .unwrap()
        .iter()
        .map(|e| e.name.as_str())
        .collect();
    assert!(
        !env.contains(&"NVIDIA_VISIBLE_DEVICES"),
        "setting it would expose every GPU of the node"
    );
    let tolerations = pod.tolerations.unwrap();
    assert_eq!(tolerations.len(), 1);
    assert_eq!(tolerations[0].key.as_deref(), Some("nvidia.com/gpu"));
    assert!(
        container
            .readiness_probe
            .as_ref()
            .unwrap()
            .tcp_socket
            .is_some()
    );
}

#[test]
fn kubectl_decodes_every_manifest() {
    let Some(kubectl) = gpulab_testkit::kubectl() else {
        // The README's test command installs kubectl; a bare `cargo test` may run without it, CI may not.
        assert!(
            std::env::var_os("CI").is_none(),
            "kubectl is required in CI"
        );
        eprintln!("kubectl not installed: skipping (install the Debian package kubectl)");
        return;
    };
    for (name, plan) in plans() {
        let decoded =
            gpulab_testkit::kubectl_decode(&kubectl, &KubeObject::to_yaml_stream(&plan.kubernetes))
                .unwrap_or_else(|e| panic!("{name}: kubectl refused the manifests: {e}"));
        let expected: Vec<String> = plan
            .kubernetes
            .iter()
            .map(|o| {
                let group = match o.kind() {
                    "DaemonSet" | "StatefulSet" => ".apps",
                    "StorageClass" => ".storage.k8s.io",
                    _ => "",
                };
                format!("{}{group}/{}", o.kind().to_lowercase(), o.name())
            })
            .collect();
        assert_eq!(decoded, expected, "{name}");
    }
}
