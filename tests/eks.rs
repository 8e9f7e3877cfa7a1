//! A lab on the cluster EKS would give it: the emulated world (gpulab_testkit::eks_world) starts the
//! cluster as EKS does, with CoreDNS, kube-proxy and aws-node and no nodes; the lab's node group brings
//! its nodes, the EBS CSI addon its driver, which provisions only with credentials of its own (Pod
//! Identity), and each volume lives in one zone. These are the behaviours that kept a real lab from
//! working while every test passed against a cluster that agreed with gpulab.

use gpulab_core::events::Recorder;
use gpulab_core::naming::KubeNames;
use gpulab_core::provision::aws::{AwsClients, load_sdk_config};
use gpulab_core::remote::ExecRequest;
use gpulab_core::spec::SpecLayer;
use gpulab_core::{Lab, Provider};
use gpulab_testkit::LabDir;
use gpulab_testkit::clouds::EmulatedClouds;
use gpulab_testkit::kube::KubeEmulator;

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
    let user = LabDir::new().with_default_key();
    let clouds = EmulatedClouds::start(&user.home()).await.unwrap();
    let spec = user
        .inputs(SpecLayer {
            name: Some(name.into()),
            ..Default::default()
        })
        .resolve()
        .unwrap()
        .validate()
        .unwrap();
    let options = clouds.lab_options(user.gpulab_home());
    let lab = Lab::new(spec, Provider::Aws, options).await.unwrap();
    lab.up(&Recorder::default()).await.expect("up");
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
    let document = urlencoding_decode(document);
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

    lab.down(&Recorder::default()).await.expect("down");
}

fn lab_sdk(clouds: &EmulatedClouds, user: &LabDir) -> gpulab_core::provision::aws::SdkOptions {
    clouds.lab_options(user.gpulab_home()).aws.sdk
}

/// IAM returns policy documents URL-encoded.
fn urlencoding_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&text[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
