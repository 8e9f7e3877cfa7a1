//! Every manifest `gpulab plan --output yaml` renders is one Kubernetes accepts: it parses back into
//! k8s-openapi's typed objects without losing a field, and the real `kubectl` decodes it.

use gpulab_core::manifest::KubeObject;
use gpulab_core::plan::Plan;
use gpulab_core::spec::{
    AccessLayer, AccessMode, DevicePluginLayer, NodesLayer, SpecLayer, WorkspaceLayer,
};
use gpulab_testkit::LabDir;
use k8s_openapi::api::core::v1::Container;

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

/// The workspace container of a spec on `instance_type`, as its StatefulSet's pod template has it.
fn workspace_container(instance_type: &str) -> Container {
    let lab = LabDir::new().with_default_key();
    let layer = SpecLayer {
        nodes: NodesLayer {
            instance_type: Some(instance_type.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let plan = Plan::new(&lab.inputs(layer).resolve().unwrap().validate().unwrap());
    let set = plan
        .kubernetes
        .iter()
        .find_map(|o| match o {
            KubeObject::StatefulSet(set) => Some(set.clone()),
            _ => None,
        })
        .expect("the workspace's StatefulSet");
    set.spec.unwrap().template.spec.unwrap().containers[0].clone()
}

/// A container's image and its env as (name, value).
fn image_and_env(c: &Container) -> (String, Vec<(String, String)>) {
    let env = c
        .env
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|e| (e.name, e.value.unwrap_or_default()))
        .collect();
    (c.image.clone().unwrap_or_default(), env)
}

fn value<'a>(env: &'a [(String, String)], name: &str) -> Option<&'a str> {
    env.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

#[test]
fn exec_through_the_api_server_finds_the_venv_first() {
    // Defect: the venv was on PATH only in /etc/environment, which only PAM (sshd) reads; exec through
    // the API server got the image's PATH, and `python` was not the venv's.
    let (_, env) = image_and_env(&workspace_container("g4dn.xlarge"));
    let path = value(&env, "PATH").expect("the pod sets PATH");
    assert!(path.starts_with("/workspace/.venv/bin:"), "{path}");
    // The CUDA images' own directories stay on it.
    assert!(path.contains(":/usr/local/cuda/bin:"), "{path}");
    assert!(path.ends_with(":/usr/bin:/sbin:/bin"), "{path}");
    assert_eq!(value(&env, "VIRTUAL_ENV"), Some("/workspace/.venv"));
}

#[test]
fn every_cache_is_on_the_volume_and_the_root_filesystem_is_requested() {
    // Defect: model downloads and compiled kernels went to the container's throwaway root filesystem,
    // filling the node's disk until DiskPressure evicted the pod; no ephemeral-storage request.
    let container = workspace_container("g4dn.xlarge");
    let (_, env) = image_and_env(&container);
    for var in [
        "HF_HOME",
        "VLLM_CACHE_ROOT",
        "TRITON_CACHE_DIR",
        "TORCHINDUCTOR_CACHE_DIR",
        "PIP_CACHE_DIR",
        "XDG_CACHE_HOME",
        "TORCH_HOME",
        "CUDA_CACHE_PATH",
    ] {
        let v = value(&env, var).unwrap_or_else(|| panic!("{var} is not set"));
        assert!(v.starts_with("/workspace/.cache"), "{var}={v}");
    }
    let requests = container.resources.unwrap().requests.unwrap();
    assert!(requests.contains_key("ephemeral-storage"), "{requests:?}");
}

#[test]
fn each_gpu_generation_gets_its_pinned_stack() {
    // Defect: `pip install torch vllm` unpinned, one base image for all, nothing for Turing's backends.
    let (image, env) = image_and_env(&workspace_container("g4dn.xlarge")); // T4, Turing
    assert_eq!(image, "nvidia/cuda:12.8.1-cudnn-devel-ubuntu22.04");
    assert_eq!(value(&env, "GPULAB_TORCH"), Some("torch==2.8.0"));
    assert_eq!(
        value(&env, "GPULAB_TORCH_INDEX"),
        Some("https://download.pytorch.org/whl/cu128")
    );
    assert!(
        value(&env, "GPULAB_PIP_PACKAGES")
            .unwrap()
            .starts_with("vllm==0.11.0 ")
    );
    assert_eq!(value(&env, "VLLM_ATTENTION_BACKEND"), Some("TRITON_ATTN"));
    assert_eq!(value(&env, "VLLM_USE_FLASHINFER_SAMPLER"), Some("0"));

    let (_, env) = image_and_env(&workspace_container("p3.2xlarge")); // V100, Volta: no sm_70 in the cu128 wheels
    assert_eq!(
        value(&env, "GPULAB_TORCH_INDEX"),
        Some("https://download.pytorch.org/whl/cu126")
    );
    let (image, env) = image_and_env(&workspace_container("g5.xlarge")); // A10G, Ampere
    assert_eq!(image, "nvidia/cuda:12.8.1-cudnn-devel-ubuntu22.04");
    assert_eq!(value(&env, "VLLM_ATTENTION_BACKEND"), None);
}
