//! A lab on the cluster EKS would give it: the emulated world (gpulab_testkit::eks_world) starts the
//! cluster as EKS does, with CoreDNS, kube-proxy and aws-node and no nodes; the lab's node group brings
//! its nodes, the EBS CSI addon its driver, which provisions only with credentials of its own (Pod
//! Identity), and each volume lives in one zone. These are the behaviours that kept a real lab from
//! working while every test passed against a cluster that agreed with gpulab.

use gpulab_core::events::Recorder;
use gpulab_core::image::{KanikoBuild, kaniko_job};
use gpulab_core::naming::KubeNames;
use gpulab_core::plan::SUBNET_CIDRS;
use gpulab_core::provision::aws::{AwsClients, load_sdk_config};
use gpulab_core::remote::ExecRequest;
use gpulab_core::spec::{AccessLayer, AccessMode, SpecLayer};
use gpulab_core::{Lab, Provider};
use gpulab_testkit::LabDir;
use gpulab_testkit::clouds::EmulatedClouds;
use gpulab_testkit::kube::{KubeEmulator, NodeSpec};

/// The pods in `namespace` whose label `key` is `value`, as (name, node, phase, ready).
fn pods(
    emu: &KubeEmulator,
    namespace: &str,
    key: &str,
    value: &str,
) -> Vec<(String, String, String, bool)> {
    emu.objects("pods", namespace)
        .into_iter()
        .filter(|p| p["metadata"]["labels"][key] == value)
        .map(|p| {
            let ready = p["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            (
                p["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                p["spec"]["nodeName"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                p["status"]["phase"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                ready,
            )
        })
        .collect()
}

async fn lab_up(name: &str) -> (LabDir, EmulatedClouds, Lab) {
    let (user, clouds, lab) = lab_in_clouds(name).await;
    lab.up(&Recorder::default()).await.expect("up");
    (user, clouds, lab)
}

/// A lab of `name` in fresh emulated clouds, not yet up.
async fn lab_in_clouds(name: &str) -> (LabDir, EmulatedClouds, Lab) {
    lab_of(SpecLayer {
        name: Some(name.into()),
        ..Default::default()
    })
    .await
}

/// A lab of `layer` in fresh emulated clouds, not yet up.
async fn lab_of(layer: SpecLayer) -> (LabDir, EmulatedClouds, Lab) {
    let user = LabDir::new().with_default_key();
    let clouds = EmulatedClouds::start(&user.home()).await.unwrap();
    let spec = user.inputs(layer).resolve().unwrap().validate().unwrap();
    let options = clouds.lab_options(user.gpulab_home());
    let lab = Lab::new(spec, Provider::Aws, options).await.unwrap();
    (user, clouds, lab)
}

/// Defects 1 and 2 of the real-EKS issue: the GPU node group was the only one and tainted, so CoreDNS
/// and the EBS CSI controller (which tolerate no GPU taint) had nowhere to run; and the driver had no
/// credentials (the node role is out of reach behind IMDSv2's hop limit). Now the nodes are untainted,
/// and the driver gets its own role through EKS Pod Identity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_only_node_group_runs_dns_and_a_credentialed_volume_driver() {
    let (_user, clouds, lab) = lab_up("ekslab").await;
    let emu = &clouds.kube;
    let nodes = clouds.world.nodes("ekslab", "ekslab-gpu");
    assert_eq!(nodes.len(), 1, "the node group's one node");

    let dns = pods(emu, "kube-system", "k8s-app", "kube-dns");
    assert_eq!(dns.len(), 2, "{dns:?}");
    assert!(
        dns.iter()
            .all(|(_, node, _, ready)| *ready && nodes.contains(node)),
        "{dns:?}"
    );
    let driver = pods(emu, "kube-system", "app", "ebs-csi-controller");
    assert!(
        !driver.is_empty() && driver.iter().all(|p| p.3),
        "{driver:?}"
    );

    let names = KubeNames::new(&lab.spec().spec);
    let claim = emu
        .object("persistentvolumeclaims", &names.namespace, &names.volume)
        .unwrap();
    assert_eq!(claim["status"]["phase"], "Bound", "{claim}");
    let volume = emu
        .object(
            "persistentvolumes",
            "",
            claim["spec"]["volumeName"].as_str().unwrap(),
        )
        .unwrap();
    let zone = &volume["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"]
        [0]["values"][0];
    assert_eq!(
        zone, "us-west-2a",
        "the volume lives in the node group's zone"
    );

    // The driver's credentials come from a role of its own, not from the nodes'.
    assert!(
        clouds
            .gaps
            .pod_identity_role("ekslab", "kube-system", "ebs-csi-controller-sa")
            .is_some_and(|arn| arn.ends_with(":role/ekslab-ebs-csi-role"))
    );
    let config = load_sdk_config("us-west-2", &lab_sdk(&clouds, &_user)).await;
    let c = AwsClients::new(&config, None);
    let attached = |role: &'static str| {
        let c = &c;
        async move {
            c.iam
                .list_attached_role_policies()
                .role_name(role)
                .send()
                .await
                .unwrap()
                .attached_policies()
                .iter()
                .filter_map(|p| p.policy_name().map(str::to_string))
                .collect::<Vec<_>>()
        }
    };
    assert!(
        !attached("ekslab-node-role")
            .await
            .contains(&"AmazonEBSCSIDriverPolicy".to_string())
    );
    assert_eq!(
        attached("ekslab-ebs-csi-role").await,
        ["AmazonEBSCSIDriverPolicy"]
    );
    let trust = c
        .iam
        .get_role()
        .role_name("ekslab-ebs-csi-role")
        .send()
        .await
        .unwrap();
    let document = trust
        .role()
        .unwrap()
        .assume_role_policy_document()
        .unwrap_or_default();
    let document = gpulab_testkit::moto::percent_decode(document);
    assert!(
        document.contains("pods.eks.amazonaws.com") && document.contains("sts:TagSession"),
        "{document}"
    );

    lab.down(&Recorder::default()).await.expect("down");
}

/// Defect 4: the workspace was a bare pod, so `stop`/`start` (or a replaced node) lost it for good.
/// Under its StatefulSet it comes back by itself, on the new node, with the same volume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_workspace_comes_back_after_stop_start_and_a_replaced_node() {
    let (_user, clouds, lab) = lab_up("stoplab").await;
    let emu = &clouds.kube;
    let names = KubeNames::new(&lab.spec().spec);
    let claim = || {
        emu.object("persistentvolumeclaims", &names.namespace, &names.volume)
            .unwrap()["spec"]["volumeName"]
            .clone()
    };
    let volume = claim();
    let pod = || emu.object("pods", &names.namespace, &names.pod);
    let uid = |p: &serde_json::Value| p["metadata"]["uid"].as_str().unwrap().to_string();
    let first = pod().unwrap();
    lab.exec(ExecRequest::shell("echo kept > notes.txt"))
        .await
        .unwrap();

    // stop: the nodes go, and with them the pod; its StatefulSet makes it again at once, Pending
    // until a node comes.
    lab.scale(0, &Recorder::default()).await.unwrap();
    assert!(clouds.world.nodes("stoplab", "stoplab-gpu").is_empty());
    let waiting = pod().expect("made again");
    assert_ne!(uid(&waiting), uid(&first));
    assert_eq!(waiting["status"]["phase"], "Pending");
    assert!(waiting["spec"]["nodeName"].is_null());

    // start: a new node (another name), the pod made again by its StatefulSet, ready, same volume.
    lab.scale(1, &Recorder::default()).await.unwrap();
    let second = pod().expect("the workspace is back");
    assert_ne!(uid(&first), uid(&second));
    assert_ne!(first["spec"]["nodeName"], second["spec"]["nodeName"]);
    assert_eq!(claim(), volume, "the same /workspace volume");
    let out = lab.exec(ExecRequest::shell("cat notes.txt")).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "kept\n");

    // A node replaced under it (a repair, a spot interruption): the same again.
    let node = second["spec"]["nodeName"].as_str().unwrap().to_string();
    clouds.world.replace_node(&node);
    let info = lab.status().await.unwrap();
    let workspace = info.cluster.unwrap().workspace.unwrap();
    assert!(workspace.ready, "{workspace:?}");
    assert_ne!(workspace.node.as_deref(), Some(node.as_str()));
    assert_eq!(claim(), volume);

    // A spot interruption as the managed node group handles it: the replacement joins first, then the
    // old node is drained and goes (the preStop side is in tests/workspace_env.rs, run for real).
    let node = workspace.node.clone().expect("a node");
    clouds
        .world
        .interrupt_spot(&node, std::time::Duration::from_secs(30))
        .await;
    let workspace = lab
        .status()
        .await
        .unwrap()
        .cluster
        .unwrap()
        .workspace
        .unwrap();
    assert!(workspace.ready, "{workspace:?}");
    assert_ne!(workspace.node.as_deref(), Some(node.as_str()));
    assert_eq!(claim(), volume);
    let out = lab.exec(ExecRequest::shell("cat notes.txt")).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "kept\n");

    lab.down(&Recorder::default()).await.expect("down");
}

/// Defect 5: the zones. The account is opted in to the Los Angeles Local Zone, which offers g4dn and
/// sorts first (`us-west-2-lax-1a`); EKS cannot put a control plane there, and here it also has no
/// control-plane capacity in us-west-2a (UnsupportedAvailabilityZoneException, naming the zones it
/// accepts). The lab keeps to standard zones and moves its subnets where EKS accepts them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subnets_avoid_local_zones_and_move_where_eks_accepts_a_control_plane() {
    let (user, clouds, lab) = lab_in_clouds("zonelab").await;
    clouds.world.zones.refuse_control_plane_in("us-west-2a");
    let events = Recorder::default();
    lab.up(&events).await.expect("up");

    let config = load_sdk_config("us-west-2", &lab_sdk(&clouds, &user)).await;
    let c = AwsClients::new(&config, None);
    let subnets = c
        .ec2
        .describe_subnets()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("tag:Name")
                .values("zonelab-public-1")
                .values("zonelab-public-2")
                .build(),
        )
        .send()
        .await
        .unwrap();
    let mut zones: Vec<(String, String)> = subnets
        .subnets()
        .iter()
        .map(|s| {
            (
                s.cidr_block().unwrap().to_string(),
                s.availability_zone().unwrap().to_string(),
            )
        })
        .collect();
    zones.sort();
    assert_eq!(
        zones,
        [
            (SUBNET_CIDRS[0].to_string(), "us-west-2c".to_string()),
            (SUBNET_CIDRS[1].to_string(), "us-west-2b".to_string()),
        ],
        "no Local Zone, no refused zone: the nodes' subnet made again in the next zone offering g4dn.xlarge"
    );
    let warnings: Vec<String> = events
        .events()
        .into_iter()
        .filter_map(|e| match e {
            gpulab_core::events::Event::Warning { message } => Some(message),
            _ => None,
        })
        .collect();
    assert!(
        warnings.iter().any(|w| w.contains("us-west-2a")),
        "{warnings:?}"
    );
    // The nodes, and so the volume, follow the node group's subnet.
    let names = KubeNames::new(&lab.spec().spec);
    let claim = clouds
        .kube
        .object("persistentvolumeclaims", &names.namespace, &names.volume)
        .unwrap();
    let volume = clouds
        .kube
        .object(
            "persistentvolumes",
            "",
            claim["spec"]["volumeName"].as_str().unwrap(),
        )
        .unwrap();
    assert_eq!(
        volume["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0]["values"]
            [0],
        "us-west-2c"
    );

    lab.down(&Recorder::default()).await.expect("down");
}

/// Defect 7: "auto" sized the workspace as if a node gave pods all but 500m of its CPU. On EKS kubelet
/// keeps its reservations and every node runs aws-node, kube-proxy, the Pod Identity agent, the EBS CSI
/// node plugin, and here also both CoreDNS replicas and both EBS CSI controllers (each with its
/// sidecars), so on a g4dn.xlarge the workspace stayed Pending ("Insufficient cpu"). And an in-cluster
/// image build (kaniko) must still schedule beside the auto-sized workspace on that one node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auto_sized_workspace_and_an_image_build_fit_beside_the_system_pods() {
    let (_user, clouds, lab) = lab_up("fitlab").await;
    let emu = &clouds.kube;
    assert_eq!(lab.spec().instance.name, "g4dn.xlarge");
    let nodes = clouds.world.nodes("fitlab", "fitlab-gpu");
    assert_eq!(nodes.len(), 1);
    let node = emu.object("nodes", "", &nodes[0]).unwrap();
    // The AMI's reservations, as Karpenter's instance-type reference lists them for a g4dn.xlarge.
    assert_eq!(node["status"]["allocatable"]["cpu"], "3920m", "{node}");
    assert_eq!(node["status"]["allocatable"]["memory"], "14481Mi", "{node}");
    assert_eq!(node["status"]["allocatable"]["pods"], "29", "{node}");

    let names = KubeNames::new(&lab.spec().spec);
    let workspace = emu.object("pods", &names.namespace, &names.pod).unwrap();
    assert_eq!(workspace["status"]["phase"], "Running", "{workspace}");
    assert_eq!(workspace["spec"]["nodeName"], nodes[0].as_str());

    // The build's pod, as the Job controller makes it from the Job's template.
    let build = KanikoBuild::for_spec(
        lab.spec(),
        lab.id(),
        "FROM nvidia/cuda:12.4.1-base-ubuntu22.04\n".into(),
        "123456789012.dkr.ecr.us-west-2.amazonaws.com/fitlab:latest".into(),
    );
    let job = serde_json::to_value(kaniko_job(&build)).unwrap();
    let template = &job["spec"]["template"];
    let mut pod = serde_json::json!({
        "metadata": template["metadata"].clone(),
        "spec": template["spec"].clone(),
    });
    pod["metadata"]["name"] = serde_json::json!(format!("{}-abcde", build.name));
    pod["metadata"]["namespace"] = serde_json::json!(build.namespace);
    emu.handle().create("pods", pod);
    let placed = wait_for(|| {
        let pod = emu.object("pods", &build.namespace, &format!("{}-abcde", build.name))?;
        let scheduled = pod["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == "PodScheduled")?
            .clone();
        Some((pod["spec"]["nodeName"].clone(), scheduled))
    })
    .await;
    assert_eq!(placed.1["status"], "True", "the build's pod: {placed:?}");
    assert_eq!(placed.0, nodes[0].as_str(), "beside the workspace");

    lab.down(&Recorder::default()).await.expect("down");
}

/// A lab whose SSH port is public through a LoadBalancer Service, up.
async fn load_balancer_lab(name: &str) -> (LabDir, EmulatedClouds, Lab) {
    let (user, clouds, lab) = lab_of(SpecLayer {
        name: Some(name.into()),
        access: AccessLayer {
            mode: Some(AccessMode::LoadBalancer),
            allowed_cidrs: Some(vec!["203.0.113.7/32".parse().unwrap()]),
            api_cidrs: None,
        },
        ..Default::default()
    })
    .await;
    lab.up(&Recorder::default()).await.expect("up");
    let balancers = clouds.world.load_balancers.load_balancers();
    assert_eq!(balancers.len(), 1, "{balancers:?}");
    let tags = &balancers[0].1;
    for tag in [
        ("gpulab.io/lab-id".to_string(), lab.id().to_string()),
        (format!("kubernetes.io/cluster/{name}"), "owned".to_string()),
    ] {
        assert!(tags.contains(&tag), "{tag:?} not in {tags:?}");
    }
    (user, clouds, lab)
}

/// Defect 6, with the cluster: the Service's finalizer holds it until the cloud provider has deleted
/// its NLB, and `down` waits for that (and for the EBS volume) before the nodes go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_lets_the_cluster_delete_its_load_balancer() {
    let (_user, clouds, lab) = load_balancer_lab("lblab").await;
    let names = KubeNames::new(&lab.spec().spec);
    let service = clouds
        .kube
        .object("services", &names.namespace, &names.load_balancer)
        .unwrap();
    assert_eq!(
        service["metadata"]["finalizers"],
        serde_json::json!(["service.kubernetes.io/load-balancer-cleanup"])
    );
    let report = lab.down(&Recorder::default()).await.expect("down");
    assert!(report.leftovers.is_empty(), "{:?}", report.leftovers);
    assert!(clouds.world.load_balancers.load_balancers().is_empty());
    assert!(
        !report
            .deleted
            .iter()
            .any(|r| r.kind.name() == "elb-load-balancer"),
        "the cluster deleted it, not the sweep: {:?}",
        report.deleted
    );
}

/// Defect 6, without the cluster: the API server does not answer at `down`, so nothing in the cluster
/// deletes the NLB, and it would outlive the lab (keeping its VPC). Teardown finds it by the lab's ID
/// (which the Service's annotation put on it) and deletes it before the network.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_deletes_a_load_balancer_the_cluster_could_not() {
    let (_user, clouds, lab) = load_balancer_lab("lbgone").await;
    clouds.kube.fail_next(u64::MAX);
    let report = lab.down(&Recorder::default()).await.expect("down");
    assert!(clouds.world.load_balancers.load_balancers().is_empty());
    assert!(
        report
            .deleted
            .iter()
            .any(|r| r.kind.name() == "elb-load-balancer"),
        "{:?}",
        report.deleted
    );
    assert!(report.leftovers.is_empty(), "{:?}", report.leftovers);
}

/// `check` until it gives a value (the emulator schedules in the background), for at most 30 s.
async fn wait_for<T>(mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(std::time::Instant::now() < deadline, "nothing came in 30 s");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

fn lab_sdk(clouds: &EmulatedClouds, user: &LabDir) -> gpulab_core::provision::aws::SdkOptions {
    clouds.lab_options(user.gpulab_home()).aws.sdk
}

/// `status` says what in the cluster keeps the workspace from getting ready: here an EBS CSI driver
/// that is registered but whose controller does not run, so the claim waits for an external provisioner
/// (the event the persistent volume controller records on it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_names_the_volume_provisioner_that_keeps_the_workspace_waiting() {
    let user = LabDir::new().with_default_key();
    let emu = KubeEmulator::start().await.unwrap();
    let cluster = emu.handle();
    cluster.behave_as_eks();
    cluster.add_node(NodeSpec::gpu("gpu-node").in_zone("us-west-2a"));
    cluster.create(
        "csidrivers",
        serde_json::json!({"metadata": {"name": "ebs.csi.aws.com"}, "spec": {"attachRequired": true}}),
    );
    let kubeconfig = user.home().join("cluster.kubeconfig");
    emu.write_kubeconfig(&kubeconfig).unwrap();
    let spec = user
        .inputs(SpecLayer {
            name: Some("waiting".into()),
            ..Default::default()
        })
        .resolve()
        .unwrap()
        .validate()
        .unwrap();
    let options = gpulab_core::LabOptions {
        home: Some(user.gpulab_home()),
        ready_timeout: Some(std::time::Duration::from_secs(6)),
        ..Default::default()
    };
    let provider = Provider::Existing {
        kubeconfig: Some(kubeconfig),
        context: Some("gpulab-emulator".into()),
    };
    let lab = Lab::new(spec, provider, options).await.unwrap();
    lab.up(&Recorder::default())
        .await
        .expect_err("the volume never comes");
    wait_for(|| {
        emu.objects("events", "gpulab")
            .iter()
            .any(|e| e["reason"] == "ExternalProvisioning")
            .then_some(())
    })
    .await;
    let status = lab.status().await.unwrap();
    let problem = status
        .cluster
        .and_then(|c| c.workspace)
        .and_then(|w| w.problem)
        .unwrap_or_default();
    assert!(
        problem.contains("the volume's provisioner says ExternalProvisioning")
            && problem.contains("ebs.csi.aws.com"),
        "{problem}"
    );
    lab.down(&Recorder::default()).await.expect("down");
}

/// A spot lab's node group takes every catalog type with the same GPU that EC2 offers in the nodes'
/// zone, so EC2 finds spot capacity in more pools; an on-demand lab's takes its one type.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spot_node_group_takes_every_type_with_the_same_gpu_offered_in_its_zone() {
    let (user, clouds, lab) = lab_of(SpecLayer {
        name: Some("spotlab".into()),
        nodes: gpulab_core::spec::NodesLayer {
            capacity: Some(gpulab_core::spec::Capacity::Spot),
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    lab.up(&Recorder::default()).await.expect("up");
    let config = load_sdk_config("us-west-2", &lab_sdk(&clouds, &user)).await;
    let clients = AwsClients::new(&config, None);
    let group = clients
        .eks
        .describe_nodegroup()
        .cluster_name("spotlab")
        .nodegroup_name("spotlab-gpu")
        .send()
        .await
        .unwrap();
    let group = group.nodegroup().unwrap();
    assert_eq!(group.instance_types(), ["g4dn.xlarge", "g4dn.2xlarge"]);
    assert_eq!(
        group.capacity_type(),
        Some(&aws_sdk_eks::types::CapacityTypes::Spot)
    );
    // The workspace is sized for the smallest, so it fits on either.
    assert_eq!(lab.spec().cpu.text, "3100m");
}
