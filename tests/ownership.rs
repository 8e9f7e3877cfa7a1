//! gpulab never changes or deletes what it did not create. Every test here puts things with the lab's
//! names in place that are not the lab's (another tool's EKS cluster, IAM roles, ECR repository and
//! volume in moto; NVIDIA's own device plugin, a default StorageClass and a stray secret in the
//! Kubernetes emulator; another lab of the same name; the user's own private key) and checks that they
//! survive `up` and `down`, that `down` says it left them alone, and that a lab whose record is lost or
//! corrupt is never guessed at.

use std::path::Path;
use std::time::Duration;

use aws_sdk_ec2::types::{ResourceType, Tag, TagSpecification};
use gpulab_core::events::{Event, Recorder};
use gpulab_core::image::ecr::EcrClient;
use gpulab_core::naming::{KubeNames, LabId};
use gpulab_core::provision::aws::{AwsClients, load_sdk_config};
use gpulab_core::spec::{SpecLayer, ValidSpec};
use gpulab_core::{Error, Lab, LabOptions, Provider};
use gpulab_testkit::LabDir;
use gpulab_testkit::clouds::EmulatedClouds;
use gpulab_testkit::kube::{KubeEmulator, NodeSpec};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::storage::v1::StorageClass;
use kube::Api;
use kube::api::PostParams;
use serde_json::json;

fn spec(user: &LabDir, name: &str) -> ValidSpec {
    user.inputs(SpecLayer {
        name: Some(name.into()),
        ..Default::default()
    })
    .resolve()
    .unwrap()
    .validate()
    .unwrap()
}

async fn clients(options: &LabOptions) -> AwsClients {
    let config = load_sdk_config("us-west-2", &options.aws.sdk).await;
    AwsClients::new(&config, None)
}

/// What another tool made with the lab's names: an EKS cluster (with a node group, an addon and an
/// access entry of its own), the two IAM roles, the ECR repository and a detached volume that carries
/// the cluster's Kubernetes tag. None carries a gpulab lab ID.
struct Foreign {
    volume: String,
}

const TRUST: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"eks.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;

async fn make_foreign(
    c: &AwsClients,
    clouds: &EmulatedClouds,
    options: &LabOptions,
    name: &str,
) -> Foreign {
    let team = aws_sdk_iam::types::Tag::builder()
        .key("team")
        .value("platform")
        .build()
        .unwrap();
    let mut role_arns = Vec::new();
    for role in [format!("{name}-cluster-role"), format!("{name}-node-role")] {
        let out = c
            .iam
            .create_role()
            .role_name(&role)
            .assume_role_policy_document(TRUST)
            .tags(team.clone())
            .send()
            .await
            .unwrap();
        role_arns.push(out.role().unwrap().arn().to_string());
    }
    let vpc = c
        .ec2
        .create_vpc()
        .cidr_block("10.9.0.0/16")
        .send()
        .await
        .unwrap();
    let vpc_id = vpc.vpc().unwrap().vpc_id().unwrap();
    let subnet = c
        .ec2
        .create_subnet()
        .vpc_id(vpc_id)
        .cidr_block("10.9.1.0/24")
        .availability_zone("us-west-2a")
        .send()
        .await
        .unwrap();
    let subnet_id = subnet.subnet().unwrap().subnet_id().unwrap().to_string();
    c.eks
        .create_cluster()
        .name(name)
        .role_arn(&role_arns[0])
        .resources_vpc_config(
            aws_sdk_eks::types::VpcConfigRequest::builder()
                .subnet_ids(&subnet_id)
                .build(),
        )
        .tags("team", "platform")
        .send()
        .await
        .unwrap();
    c.eks
        .create_nodegroup()
        .cluster_name(name)
        .nodegroup_name(format!("{name}-gpu"))
        .node_role(&role_arns[1])
        .subnets(&subnet_id)
        .tags("team", "platform")
        .send()
        .await
        .unwrap();
    clouds.gaps.add_foreign_addon(name, "aws-ebs-csi-driver");
    clouds
        .gaps
        .add_foreign_access_entry(name, "arn:aws:iam::123456789012:role/platform-admin");
    let ecr = EcrClient::new(&load_sdk_config("us-west-2", &options.aws.sdk).await).unwrap();
    ecr.ensure_repository(
        &format!("gpulab/{name}"),
        &[("team".to_string(), "platform".to_string())].into(),
        &LabId::unassigned(),
    )
    .await
    .unwrap();
    let volume = c
        .ec2
        .create_volume()
        .availability_zone("us-west-2a")
        .size(10)
        .tag_specifications(
            TagSpecification::builder()
                .resource_type(ResourceType::Volume)
                .tags(
                    Tag::builder()
                        .key(format!("kubernetes.io/cluster/{name}"))
                        .value("owned")
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();
    Foreign {
        volume: volume.volume_id().unwrap().to_string(),
    }
}

/// Everything [`make_foreign`] made is still there, as it was.
async fn foreign_survives(
    c: &AwsClients,
    clouds: &EmulatedClouds,
    options: &LabOptions,
    name: &str,
    foreign: &Foreign,
    when: &str,
) {
    let cluster = c.eks.describe_cluster().name(name).send().await;
    let cluster = cluster.unwrap_or_else(|e| panic!("{when}: the foreign cluster is gone: {e:?}"));
    assert_eq!(
        cluster
            .cluster()
            .unwrap()
            .tags()
            .unwrap()
            .get("team")
            .map(String::as_str),
        Some("platform"),
        "{when}"
    );
    c.eks
        .describe_nodegroup()
        .cluster_name(name)
        .nodegroup_name(format!("{name}-gpu"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{when}: the foreign node group is gone: {e:?}"));
    let (entries, addons) = clouds.gaps.contents(name);
    assert!(
        entries.contains(&"arn:aws:iam::123456789012:role/platform-admin".to_string()),
        "{when}: {entries:?}"
    );
    assert_eq!(addons, ["aws-ebs-csi-driver"], "{when}");
    for role in [format!("{name}-cluster-role"), format!("{name}-node-role")] {
        let out = c.iam.get_role().role_name(&role).send().await;
        let out = out.unwrap_or_else(|e| panic!("{when}: role {role} is gone: {e:?}"));
        assert!(
            out.role().unwrap().tags().iter().any(|t| t.key() == "team"),
            "{when}"
        );
        let attached = c
            .iam
            .list_attached_role_policies()
            .role_name(&role)
            .send()
            .await
            .unwrap();
        assert!(
            attached.attached_policies().is_empty(),
            "{when}: {role} was changed"
        );
    }
    let ecr = EcrClient::new(&load_sdk_config("us-west-2", &options.aws.sdk).await).unwrap();
    assert!(
        ecr.describe_repository(&format!("gpulab/{name}"))
            .await
            .unwrap()
            .is_some(),
        "{when}: the foreign repository is gone"
    );
    let volumes = c
        .ec2
        .describe_volumes()
        .volume_ids(&foreign.volume)
        .send()
        .await
        .unwrap();
    assert_eq!(
        volumes.volumes().len(),
        1,
        "{when}: the foreign volume is gone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_same_named_cluster_another_tool_made_survives_down_with_and_without_state() {
    // The name the original scripts gave their eksctl cluster: the likeliest collision there is.
    let name = "gpu-learning-cluster";
    let user = LabDir::new().with_default_key();
    let clouds = EmulatedClouds::start(&user.home()).await.unwrap();
    let options = clouds.lab_options(user.gpulab_home());
    let c = clients(&options).await;
    let foreign = make_foreign(&c, &clouds, &options, name).await;
    let spec = spec(&user, name);

    // Without a record on this machine, nothing is guessed: no lab to load, and a search by tag finds
    // no gpulab lab, only the same-named things, which it names.
    assert!(Lab::find(name, options.clone()).await.unwrap().is_none());
    let search = Lab::find_by_tag(&spec, &options).await.unwrap();
    assert!(search.labs.is_empty(), "{:?}", search.labs);
    let found: Vec<String> = search.not_gpulab.iter().map(ToString::to_string).collect();
    for expected in [
        format!("eks-cluster {name}"),
        format!("iam-role {name}-cluster-role"),
        format!("iam-role {name}-node-role"),
    ] {
        assert!(found.contains(&expected), "{expected} not in {found:?}");
    }
    foreign_survives(&c, &clouds, &options, name, &foreign, "after the search").await;

    // With a record: `up` makes the lab's network, then stops at the first same-named thing, naming it.
    let lab = Lab::new(spec, Provider::Aws, options.clone())
        .await
        .unwrap();
    let err = lab.up(&Recorder::default()).await.unwrap_err();
    assert!(matches!(err, Error::Ownership { .. }), "{err}");
    assert!(
        err.to_string()
            .contains(&format!("IAM role {name}-cluster-role")),
        "{err}"
    );
    assert!(
        lab.state().unwrap().is_some(),
        "the half-made lab is recorded"
    );

    // `down` removes what the lab made and leaves the rest alone, saying so.
    let recorder = Recorder::default();
    let report = lab.down(&recorder).await.unwrap();
    assert!(
        report.deleted.iter().any(|r| r.kind.name() == "vpc"),
        "{:?}",
        report.deleted
    );
    assert!(
        report
            .deleted
            .iter()
            .all(|r| !r.id.contains(name) || r.kind.name() == "vpc"),
        "deleted something by name: {:?}",
        report.deleted
    );
    let alone: Vec<String> = report
        .left_alone
        .iter()
        .map(|a| format!("{} {}", a.resource.kind, a.resource.id))
        .collect();
    for expected in [
        format!("eks-cluster {name}"),
        format!("iam-role {name}-cluster-role"),
        format!("iam-role {name}-node-role"),
        format!("ecr-repository gpulab/{name}"),
        format!("ebs-volume {}", foreign.volume),
    ] {
        assert!(alone.contains(&expected), "{expected} not in {alone:?}");
    }
    assert!(report.leftovers.is_empty(), "{:?}", report.leftovers);
    assert!(
        recorder.events().iter().any(|e| matches!(e,
            gpulab_core::events::Event::Warning { message } if message.contains("not this lab's, left alone"))),
        "down tells the user"
    );
    foreign_survives(&c, &clouds, &options, name, &foreign, "after down").await;
    assert!(lab.state().unwrap().is_none(), "nothing of the lab is left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_or_corrupt_record_is_never_guessed_at_and_another_id_touches_nothing() {
    let name = "taglab";
    let user = LabDir::new().with_default_key();
    let clouds = EmulatedClouds::start(&user.home()).await.unwrap();
    let options = clouds.lab_options(user.gpulab_home());
    let c = clients(&options).await;
    let lab = Lab::new(spec(&user, name), Provider::Aws, options.clone())
        .await
        .unwrap();
    lab.up(&Recorder::default()).await.expect("up");
    let id = lab.id().clone();
    let state_file = lab.dir().state_file();
    let good = std::fs::read(&state_file).unwrap();
    let cluster_exists = || async { c.eks.describe_cluster().name(name).send().await.is_ok() };

    // A corrupt provider, or a corrupt file: an error that says how to recover, and nothing deleted.
    let mut bad: serde_json::Value = serde_json::from_slice(&good).unwrap();
    bad["provider"] = json!({"kind": "gcp"});
    for corrupt in [bad.to_string().into_bytes(), b"{".to_vec()] {
        std::fs::write(&state_file, &corrupt).unwrap();
        let err = Lab::find(name, options.clone())
            .await
            .err()
            .expect("an error");
        assert!(matches!(err, Error::State { .. }), "{err}");
        assert!(err.to_string().contains("--find-by-tag"), "{err}");
        let listing = Lab::list(&options).unwrap();
        assert!(listing.labs.is_empty() && listing.unreadable.len() == 1);
        assert!(cluster_exists().await, "nothing is deleted");
    }

    // The record lost: a search by tag finds the lab by its ID, with what carries it.
    std::fs::remove_dir_all(lab.dir().path()).unwrap();
    let spec = spec(&user, name);
    let search = Lab::find_by_tag(&spec, &options).await.unwrap();
    assert_eq!(search.labs.len(), 1, "{:?}", search.labs);
    let (found, resources) = &search.labs[0];
    assert_eq!(found, &id);
    let kinds: Vec<&str> = resources.iter().map(|r| r.kind.name()).collect();
    for kind in ["eks-cluster", "iam-role", "vpc"] {
        assert!(kinds.contains(&kind), "{kind} not in {kinds:?}");
    }

    // Another lab of the same name (another ID) takes nothing of this one's down with it.
    let other = LabId::generate().unwrap();
    let stranger = Lab::adopt(spec.clone(), other, options.clone())
        .await
        .unwrap();
    let events = Recorder::default();
    let report = stranger.down(&events).await.unwrap();
    assert!(report.deleted.is_empty(), "{:?}", report.deleted);
    // Nor does it wait for this lab's volume and load balancer, which it leaves alone (it waited out
    // the 5-minute release timeout before).
    let waits: Vec<Event> = events
        .events()
        .into_iter()
        .filter(|e| matches!(e, Event::Waiting { .. }))
        .collect();
    assert!(waits.is_empty(), "{waits:?}");
    let alone: Vec<String> = report.left_alone.iter().map(|a| a.to_string()).collect();
    assert!(
        alone
            .iter()
            .any(|a| a.contains(&format!("eks-cluster {name}"))),
        "{alone:?}"
    );
    assert!(
        alone.iter().any(|a| a.contains(id.as_str())),
        "the other lab's ID is named: {alone:?}"
    );
    assert!(cluster_exists().await);

    // The lab itself, adopted by its ID, goes completely.
    let adopted = Lab::adopt(spec, id, options.clone()).await.unwrap();
    let report = adopted.down(&Recorder::default()).await.unwrap();
    assert!(report.leftovers.is_empty(), "{:?}", report.leftovers);
    assert!(!cluster_exists().await);
    let vpcs = c.ec2.describe_vpcs().send().await.unwrap();
    assert!(
        vpcs.vpcs()
            .iter()
            .all(|v| v.tags().iter().all(|t| t.value() != Some(name))),
        "the lab's VPC is gone"
    );
}

/// An existing cluster that is not EKS (the emulator, as k3s would be): NVIDIA's own device plugin runs
/// there, and its default StorageClass is a local-path one.
async fn guest_cluster(dir: &Path) -> (KubeEmulator, std::path::PathBuf) {
    let emu = KubeEmulator::start().await.unwrap();
    emu.add_node(NodeSpec::cpu("system-1"));
    emu.add_node(NodeSpec::gpu("gpu-1"));
    let client = emu.client();
    // NVIDIA's static manifest (nvidia-device-plugin.yml of k8s-device-plugin v0.17): its names, its
    // selector, no gpulab label.
    let nvidia: DaemonSet = serde_json::from_value(json!({
        "metadata": {"name": "nvidia-device-plugin-daemonset", "namespace": "kube-system"},
        "spec": {
            "selector": {"matchLabels": {"name": "nvidia-device-plugin-ds"}},
            "template": {
                "metadata": {"labels": {"name": "nvidia-device-plugin-ds"}},
                "spec": {
                    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                    "priorityClassName": "system-node-critical",
                    "containers": [{
                        "name": "nvidia-device-plugin-ctr",
                        "image": "nvcr.io/nvidia/k8s-device-plugin:v0.17.0",
                    }],
                },
            },
        },
    }))
    .unwrap();
    Api::<DaemonSet>::namespaced(client.clone(), "kube-system")
        .create(&PostParams::default(), &nvidia)
        .await
        .unwrap();
    let default_class: StorageClass = serde_json::from_value(json!({
        "metadata": {
            "name": "standard",
            "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
        },
        "provisioner": "rancher.io/local-path",
        "volumeBindingMode": "WaitForFirstConsumer",
    }))
    .unwrap();
    // Not EKS: no gp2 class (the emulator starts as an EKS cluster does, with one), no EBS CSI driver.
    let classes = Api::<StorageClass>::all(client);
    classes.delete("gp2", &Default::default()).await.unwrap();
    classes
        .create(&PostParams::default(), &default_class)
        .await
        .unwrap();
    let kubeconfig = dir.join("guest.kubeconfig");
    emu.write_kubeconfig(&kubeconfig).unwrap();
    (emu, kubeconfig)
}

fn existing(kubeconfig: &Path) -> Provider {
    Provider::Existing {
        kubeconfig: Some(kubeconfig.to_path_buf()),
        context: Some("gpulab-emulator".into()),
    }
}

fn guest_options(user: &LabDir) -> LabOptions {
    LabOptions {
        home: Some(user.gpulab_home()),
        ready_timeout: Some(Duration::from_secs(15)),
        ..Default::default()
    }
}

/// An object's resourceVersion in the emulator (unchanged objects keep theirs).
fn version(emu: &KubeEmulator, plural: &str, namespace: &str, name: &str) -> String {
    emu.object(plural, namespace, name)
        .unwrap_or_else(|| panic!("{plural} {namespace}/{name} is gone"))["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_someone_elses_cluster_the_lab_is_a_guest() {
    let user = LabDir::new().with_default_key();
    let (emu, kubeconfig) = guest_cluster(&user.home()).await;
    let plugin = || {
        version(
            &emu,
            "daemonsets",
            "kube-system",
            "nvidia-device-plugin-daemonset",
        )
    };
    let class = || version(&emu, "storageclasses", "", "standard");
    let (plugin_before, class_before) = (plugin(), class());

    let lab = Lab::new(
        spec(&user, "guest"),
        existing(&kubeconfig),
        guest_options(&user),
    )
    .await
    .unwrap();
    let recorder = Recorder::default();
    let report = lab.up(&recorder).await.expect("up");
    assert!(report.workspace.ready, "{:?}", report.workspace);
    assert!(
        recorder.events().iter().any(|e| matches!(e,
            gpulab_core::events::Event::Warning { message } if message.contains("already runs an NVIDIA device plugin (kube-system/nvidia-device-plugin-daemonset)"))),
        "up says it uses the cluster's plugin"
    );
    assert!(
        emu.object("daemonsets", "kube-system", "gpulab-nvidia-device-plugin")
            .is_none()
    );
    assert!(
        emu.object("storageclasses", "", "gpulab-guest-gp3")
            .is_none()
    );
    let names = KubeNames::new(&lab.spec().spec);
    let claim = emu
        .object("persistentvolumeclaims", &names.namespace, &names.volume)
        .unwrap();
    assert_eq!(
        claim["spec"]["storageClassName"], "standard",
        "the cluster's default class"
    );
    let status = lab.status().await.unwrap();
    let plugin_status = status.cluster.unwrap().device_plugin.unwrap();
    assert!(plugin_status.healthy, "{:?}", plugin_status.problem);
    assert_eq!(
        plugin_status.provided_by.as_deref(),
        Some("kube-system/nvidia-device-plugin-daemonset")
    );

    lab.down(&Recorder::default()).await.expect("down");
    assert!(emu.object("pods", &names.namespace, &names.pod).is_none());
    assert_eq!(
        (plugin(), class()),
        (plugin_before, class_before),
        "untouched"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_same_named_object_is_never_applied_over_or_deleted() {
    let user = LabDir::new().with_default_key();
    let (emu, kubeconfig) = guest_cluster(&user.home()).await;
    let client = emu.client();
    let spec = spec(&user, "stray");
    let names = KubeNames::new(&spec.spec);
    // Someone's secret with the name the workspace's keys would have, in a namespace of theirs.
    let namespace: k8s_openapi::api::core::v1::Namespace =
        serde_json::from_value(json!({"metadata": {"name": names.namespace}})).unwrap();
    Api::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .unwrap();
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": names.authorized_keys, "namespace": names.namespace},
        "stringData": {"authorized_keys": "ssh-ed25519 AAAA their-key"},
    }))
    .unwrap();
    Api::<Secret>::namespaced(client, &names.namespace)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let theirs = || version(&emu, "secrets", &names.namespace, &names.authorized_keys);
    let before = theirs();

    let lab = Lab::new(spec, existing(&kubeconfig), guest_options(&user))
        .await
        .unwrap();
    let err = lab.up(&Recorder::default()).await.unwrap_err();
    assert!(matches!(err, Error::Ownership { .. }), "{err}");
    assert!(
        err.to_string().contains(&format!(
            "Secret {}/{}",
            names.namespace, names.authorized_keys
        )),
        "{err}"
    );
    assert_eq!(theirs(), before, "not applied over");

    let report = lab.down(&Recorder::default()).await.unwrap();
    assert_eq!(theirs(), before, "not deleted");
    assert!(
        report
            .left_alone
            .iter()
            .any(|a| a.resource.id == format!("{}/{}", names.namespace, names.authorized_keys)),
        "{:?}",
        report.left_alone
    );
    assert!(
        emu.object("namespaces", "", &names.namespace).is_some(),
        "their namespace stays"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubeconfig_that_now_leads_elsewhere_is_refused() {
    let user = LabDir::new().with_default_key();
    let (_emu, kubeconfig) = guest_cluster(&user.home()).await;
    let lab = Lab::new(
        spec(&user, "bound"),
        existing(&kubeconfig),
        guest_options(&user),
    )
    .await
    .unwrap();
    lab.up(&Recorder::default()).await.expect("up");

    // The same context now names another cluster (another API server), with its own pods.
    let (other, _) = guest_cluster(&user.home().join("..")).await;
    other.write_kubeconfig(&kubeconfig).unwrap();
    let lab = Lab::load("bound", guest_options(&user)).await.unwrap();
    for err in [
        lab.down(&Recorder::default()).await.unwrap_err(),
        lab.remote()
            .await
            .err()
            .expect("no remote on another cluster"),
    ] {
        assert!(matches!(err, Error::Ownership { .. }), "{err}");
        assert!(err.to_string().contains("now leads to"), "{err}");
    }
    assert!(lab.state().unwrap().is_some(), "the lab is still recorded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_key_without_its_public_half_is_never_replaced() {
    let user = LabDir::new();
    let ssh = user.home().join(".ssh");
    let theirs = "-----BEGIN OPENSSH PRIVATE KEY-----\nnot gpulab's to touch\n-----END OPENSSH PRIVATE KEY-----\n";
    std::fs::write(ssh.join("id_ed25519"), theirs).unwrap();
    let (_emu, kubeconfig) = guest_cluster(&user.home()).await;
    let spec = spec(&user, "keys");
    let lab = Lab::new(spec, existing(&kubeconfig), guest_options(&user))
        .await
        .unwrap();
    lab.up(&Recorder::default()).await.expect("up");

    assert_eq!(
        std::fs::read_to_string(ssh.join("id_ed25519")).unwrap(),
        theirs
    );
    assert!(!ssh.join("id_ed25519.pub").exists());
    let public = std::fs::read_to_string(ssh.join("gpulab_ed25519.pub")).unwrap();
    assert!(public.starts_with("ssh-ed25519 "), "{public}");
    let mode = |p: &Path| {
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(p).unwrap().permissions())
            & 0o777
    };
    assert_eq!(mode(&ssh.join("gpulab_ed25519")), 0o600);
    assert_eq!(lab.ssh_identity(), ssh.join("gpulab_ed25519"));
}
