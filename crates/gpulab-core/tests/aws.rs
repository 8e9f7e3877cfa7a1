//! The AWS provisioner against moto in server mode (gpulab_testkit::moto), through the fault proxy
//! (gpulab_testkit::fault_proxy), which also answers the EKS calls moto lacks (access entries, addons).
//! Service Quotas, which moto has no EC2 quotas for, comes from wiremock.
//!
//! moto's EKS is bookkeeping only: clusters and node groups are ACTIVE at once and the CA is random.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use aws_credential_types::Credentials;
use aws_smithy_types::retry::{RetryConfig, RetryMode};
use gpulab_core::Error;
use gpulab_core::events::{Event, Recorder, Silent};
use gpulab_core::naming::{LAB_ID_KEY, LAB_KEY, LabId};
use gpulab_core::provision::aws::{
    AwsClients, AwsOptions, AwsProvisioner, ProvisionStep, SdkOptions, WaitOptions,
    default_retry_config, exec_credential_json, write_kubeconfig,
};
use gpulab_core::provision::{
    ClusterAuth, ClusterProvisioner, ClusterState, NodeGroupState, TokenSource,
};
use gpulab_core::spec::{NodesLayer, SpecLayer, ValidSpec};
use gpulab_testkit::LabDir;
use gpulab_testkit::fault_proxy::{
    Fault, FaultConfig, FaultProxy, FaultRule, Intercept, ProxyRequest, ProxyResponse,
};
use gpulab_testkit::moto::{EksGaps, MotoServer};
use wiremock::matchers::{header, method};
use wiremock::{Mock, MockServer, ResponseTemplate};

const LAB: &str = "motolab";

/// The lab's ID in these tests: each test has a moto of its own, so one fixed ID serves them all.
fn lab_id() -> LabId {
    LabId::parse("0123456789abcdef").unwrap()
}

fn spec(max_nodes: u32) -> ValidSpec {
    let dir = LabDir::new().with_default_key();
    dir.inputs(SpecLayer {
        name: Some(LAB.into()),
        region: Some("us-west-2".into()),
        nodes: NodesLayer {
            max: Some(max_nodes),
            ..Default::default()
        },
        ..Default::default()
    })
    .resolve()
    .expect("resolve")
    .validate()
    .expect("validate")
}

fn fast_retry() -> RetryConfig {
    RetryConfig::standard()
        .with_max_attempts(8)
        .with_initial_backoff(Duration::from_millis(5))
        .with_max_backoff(Duration::from_millis(50))
}

/// moto behind the fault proxy, and a provisioner pointed at the proxy.
struct Env {
    moto: MotoServer,
    proxy: FaultProxy,
    gaps: Arc<EksGaps>,
}

impl Env {
    async fn start(rules: Vec<FaultRule>) -> Env {
        Self::start_with(rules, |_: &ProxyRequest| None).await
    }

    /// With `answer` answering requests before moto and [`EksGaps`] do.
    async fn start_with(
        rules: Vec<FaultRule>,
        answer: impl Fn(&ProxyRequest) -> Option<ProxyResponse> + Send + Sync + 'static,
    ) -> Env {
        let moto = MotoServer::start();
        let gaps = Arc::new(EksGaps::checking_principals_in(moto.addr()));
        let g = gaps.clone();
        let intercept = move |req: &ProxyRequest| answer(req).or_else(|| g.handle(req));
        let proxy = FaultProxy::start(
            moto.addr(),
            FaultConfig {
                seed: 42,
                rules,
                intercept: Some(Arc::new(intercept)),
            },
        )
        .await
        .expect("start the fault proxy");
        Env { moto, proxy, gaps }
    }

    fn options(&self, quotas: Option<String>) -> AwsOptions {
        AwsOptions {
            sdk: SdkOptions {
                endpoint_url: Some(self.proxy.url()),
                service_quotas_endpoint_url: quotas,
                checkip_url: Some(self.proxy.checkip_url()),
                credentials: Some(Credentials::new("testing", "testing", None, None, "test")),
                retry: fast_retry(),
                profile: None,
            },
            waits: WaitOptions::fast(),
            stop_after_step: None,
        }
    }

    async fn aws(&self, spec: &ValidSpec) -> AwsProvisioner {
        AwsProvisioner::connect(spec, self.options(None)).await
    }

    async fn aws_stopping_after(&self, spec: &ValidSpec, step: usize) -> AwsProvisioner {
        let mut options = self.options(None);
        options.stop_after_step = Some(step);
        AwsProvisioner::connect(spec, options).await
    }
}

/// How many of each kind of the lab's resources exist in moto.
async fn counts(c: &AwsClients, gaps: &EksGaps) -> BTreeMap<&'static str, usize> {
    let tag = || {
        aws_sdk_ec2::types::Filter::builder()
            .name(format!("tag:{LAB_KEY}"))
            .values(LAB)
            .build()
    };
    let mut m = BTreeMap::new();
    let vpcs = c.ec2.describe_vpcs().filters(tag()).send().await.unwrap();
    m.insert("vpc", vpcs.vpcs().len());
    let subnets = c
        .ec2
        .describe_subnets()
        .filters(tag())
        .send()
        .await
        .unwrap();
    m.insert("subnet", subnets.subnets().len());
    let igws = c
        .ec2
        .describe_internet_gateways()
        .filters(tag())
        .send()
        .await
        .unwrap();
    m.insert("internet-gateway", igws.internet_gateways().len());
    let rts = c
        .ec2
        .describe_route_tables()
        .filters(tag())
        .send()
        .await
        .unwrap();
    m.insert("route-table", rts.route_tables().len());
    let sgs = c
        .ec2
        .describe_security_groups()
        .filters(tag())
        .send()
        .await
        .unwrap();
    m.insert("security-group", sgs.security_groups().len());
    let roles = c.iam.list_roles().send().await.unwrap();
    m.insert(
        "iam-role",
        roles
            .roles()
            .iter()
            .filter(|r| r.role_name().starts_with(LAB))
            .count(),
    );
    let clusters = c.eks.list_clusters().send().await.unwrap();
    let n_clusters = clusters.clusters().iter().filter(|n| *n == LAB).count();
    m.insert("eks-cluster", n_clusters);
    let nodegroups = if n_clusters > 0 {
        c.eks
            .list_nodegroups()
            .cluster_name(LAB)
            .send()
            .await
            .unwrap()
            .nodegroups()
            .len()
    } else {
        0
    };
    m.insert("eks-nodegroup", nodegroups);
    let (entries, addons) = gaps.counts(LAB);
    m.insert("eks-access-entry", entries);
    m.insert("eks-addon", addons);
    m
}

fn clean_counts() -> BTreeMap<&'static str, usize> {
    BTreeMap::from([
        ("vpc", 1),
        ("subnet", 2),
        ("internet-gateway", 1),
        ("route-table", 1),
        ("security-group", 1),
        // cluster, node, EBS CSI driver (Pod Identity), image builds and the autostop agent (Pod
        // Identity)
        ("iam-role", 5),
        ("eks-cluster", 1),
        ("eks-nodegroup", 1),
        // EKS's own for the cluster's creator (bootstrapClusterCreatorAdminPermissions)
        ("eks-access-entry", 1),
        // the Pod Identity agent and the EBS CSI driver
        ("eks-addon", 2),
    ])
}

/// Everything moto still holds with the lab's tag (tagging API), plus roles and the cluster by name.
async fn tagged_leftovers(c: &AwsClients) -> Vec<String> {
    let out = c
        .tagging
        .get_resources()
        .tag_filters(
            aws_sdk_resourcegroupstagging::types::TagFilter::builder()
                .key(LAB_KEY)
                .values(LAB)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let mut left: Vec<String> = out
        .resource_tag_mapping_list()
        .iter()
        .filter_map(|m| m.resource_arn().map(str::to_owned))
        .collect();
    for r in c.iam.list_roles().send().await.unwrap().roles() {
        if r.role_name().starts_with(LAB) {
            left.push(r.arn().to_string());
        }
    }
    if c.eks
        .list_clusters()
        .send()
        .await
        .unwrap()
        .clusters()
        .iter()
        .any(|n| n == LAB)
    {
        left.push(format!("eks cluster {LAB}"));
    }
    left
}

async fn down_and_check_empty(env: &Env, aws: &AwsProvisioner, spec: &ValidSpec, when: &str) {
    let report = aws
        .teardown(spec, &lab_id(), &Silent)
        .await
        .unwrap_or_else(|e| panic!("teardown {when}: {e}"));
    assert!(
        report.leftovers.is_empty(),
        "{when}: leftovers {:?}",
        report.leftovers
    );
    let left = tagged_leftovers(aws.clients()).await;
    assert!(left.is_empty(), "{when}: moto still has {left:?}");
    let _ = env;
}

#[tokio::test]
async fn retry_config_is_the_chosen_one() {
    let spec = spec(2);
    let options = AwsOptions {
        sdk: SdkOptions {
            endpoint_url: Some("http://127.0.0.1:9".into()),
            credentials: Some(Credentials::new("a", "b", None, None, "test")),
            ..Default::default()
        },
        ..Default::default()
    };
    let aws = AwsProvisioner::connect(&spec, options).await;
    let retry = aws.retry_config().expect("a retry config");
    assert_eq!(retry, &default_retry_config());
    assert_eq!(retry.mode(), RetryMode::Standard);
    assert_eq!(retry.max_attempts(), 8);
    assert_eq!(retry.initial_backoff(), Duration::from_secs(1));
    // Every client carries it.
    assert_eq!(
        aws.clients().ec2.config().retry_config(),
        Some(&default_retry_config())
    );
    assert_eq!(
        aws.clients().eks.config().retry_config(),
        Some(&default_retry_config())
    );
}

#[tokio::test]
async fn up_rerun_scale_access_status_and_down() {
    let env = Env::start(Vec::new()).await;
    let spec = spec(2);
    let aws = env.aws(&spec).await;

    let recorder = Recorder::default();
    let provisioned = aws
        .provision(&spec, &lab_id(), &recorder)
        .await
        .unwrap_or_else(|e| panic!("provision: {e}\n{}", env.moto.log()));
    assert_eq!(counts(aws.clients(), &env.gaps).await, clean_counts());
    let finished: Vec<(String, bool)> = recorder
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Event::StepFinished {
                step, already_done, ..
            } => Some((step, already_done)),
            _ => None,
        })
        .collect();
    assert_eq!(
        finished.iter().map(|(s, _)| s.as_str()).collect::<Vec<_>>(),
        ProvisionStep::ALL.map(ProvisionStep::name).to_vec()
    );
    // Everything is new, but the caller's admin access: EKS made that entry itself, for the cluster's
    // creator (bootstrapClusterCreatorAdminPermissions), and gpulab leaves it as it is.
    assert!(
        finished
            .iter()
            .all(|(step, done)| *done == (step == "grant cluster admin access")),
        "{finished:?}"
    );
    assert!(provisioned.resources.iter().any(|r| r.kind.name() == "vpc"));
    assert!(provisioned.access.endpoint.starts_with("https://"));
    assert!(provisioned.access.ca_pem.is_some());

    // What was created is what the plan says.
    let c = aws.clients();
    let ng = c
        .eks
        .describe_nodegroup()
        .cluster_name(LAB)
        .nodegroup_name(format!("{LAB}-gpu"))
        .send()
        .await
        .unwrap();
    let ng = ng.nodegroup().unwrap();
    assert_eq!(ng.ami_type().unwrap().as_str(), "AL2023_x86_64_NVIDIA");
    assert_eq!(ng.capacity_type().unwrap().as_str(), "ON_DEMAND");
    assert_eq!(ng.instance_types(), ["g4dn.xlarge"]);
    assert_eq!(
        ng.labels()
            .unwrap()
            .get("nvidia.com/gpu.present")
            .map(String::as_str),
        Some("true")
    );
    // The only node group carries no taint: EKS's CoreDNS and the EBS CSI controller must run there.
    assert!(ng.taints().is_empty(), "{:?}", ng.taints());
    assert_eq!(ng.disk_size(), Some(100));
    assert_eq!(
        ng.tags().unwrap().get(LAB_KEY).map(String::as_str),
        Some(LAB)
    );
    let subnets = c.ec2.describe_subnets().send().await.unwrap();
    let ours: Vec<_> = subnets
        .subnets()
        .iter()
        .filter(|s| s.tags().iter().any(|t| t.key() == Some(LAB_KEY)))
        .collect();
    assert_eq!(ours.len(), 2);
    for s in &ours {
        assert_eq!(s.map_public_ip_on_launch(), Some(true));
        assert!(
            s.tags()
                .iter()
                .any(|t| t.key() == Some("kubernetes.io/role/elb"))
        );
        assert!(
            s.tags()
                .iter()
                .any(|t| t.key() == Some(&format!("kubernetes.io/cluster/{LAB}")[..]))
        );
    }
    assert_ne!(ours[0].availability_zone(), ours[1].availability_zone());
    // The nodes live in one zone (the first subnet's), where /workspace's volume will be.
    assert_eq!(ng.subnets().len(), 1);
    let first = ours
        .iter()
        .find(|s| s.cidr_block() == Some(gpulab_core::plan::SUBNET_CIDRS[0]))
        .expect("the first subnet");
    assert_eq!(ng.subnets()[0], first.subnet_id().unwrap());

    // A rerun finds everything and creates nothing.
    let recorder = Recorder::default();
    aws.provision(&spec, &lab_id(), &recorder)
        .await
        .expect("rerun");
    assert_eq!(counts(aws.clients(), &env.gaps).await, clean_counts());
    let all_done = recorder.events().iter().all(|e| match e {
        Event::StepFinished { already_done, .. } => *already_done,
        _ => true,
    });
    assert!(all_done, "{:?}", recorder.events());

    // Access: a token and a private kubeconfig.
    let access = aws.access(&spec, &lab_id()).await.unwrap();
    let ClusterAuth::Token(tokens) = &access.auth else {
        panic!("EKS access uses tokens");
    };
    let token = tokens.token().await.unwrap();
    assert!(token.token.starts_with("k8s-aws-v1."));
    let printed: serde_json::Value = serde_json::from_str(&exec_credential_json(
        &aws.tokens(&spec).unwrap().token().await.unwrap(),
    ))
    .unwrap();
    assert_eq!(printed["kind"], "ExecCredential");
    assert!(
        printed["status"]["token"]
            .as_str()
            .unwrap()
            .starts_with("k8s-aws-v1.")
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    write_kubeconfig(
        &path,
        LAB,
        &access.endpoint,
        access.ca_pem.as_deref(),
        "gpulab",
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // Status and scaling.
    let status = aws.status(&spec, &lab_id()).await.unwrap();
    assert_eq!(
        status.cluster,
        ClusterState::Eks {
            status: "ACTIVE".into()
        }
    );
    assert_eq!(status.node_group.to_string(), "ACTIVE (1 of 1..2)");
    aws.scale(&spec, &lab_id(), 0, &Silent).await.unwrap();
    assert_eq!(
        aws.status(&spec, &lab_id()).await.unwrap().node_group,
        NodeGroupState::Eks {
            status: "ACTIVE".into(),
            desired: 0,
            min: 0,
            max: 2
        }
    );
    aws.scale(&spec, &lab_id(), 1, &Silent).await.unwrap();
    assert_eq!(
        aws.status(&spec, &lab_id())
            .await
            .unwrap()
            .node_group
            .to_string(),
        "ACTIVE (1 of 1..2)"
    );
    let err = aws.scale(&spec, &lab_id(), 3, &Silent).await.unwrap_err();
    assert!(err.to_string().contains("nodes.max"), "{err}");

    // The EBS CSI driver tags what it makes through the lab's StorageClass with the lab's tags
    // (tagSpecification_N): a released volume (deleted by down) and a snapshot (reported as a
    // leftover). A volume that carries only the cluster's Kubernetes tag is not provably the lab's:
    // left alone, and said so.
    use aws_sdk_ec2::types::{ResourceType, Tag, TagSpecification};
    let tagged = |rt: ResourceType, tags: &[(String, String)]| {
        TagSpecification::builder()
            .resource_type(rt)
            .set_tags(Some(
                tags.iter()
                    .map(|(k, v)| Tag::builder().key(k).value(v).build())
                    .collect(),
            ))
            .build()
    };
    let lab_tags = [
        (format!("kubernetes.io/cluster/{LAB}"), "owned".to_string()),
        (LAB_KEY.to_string(), LAB.to_string()),
        (LAB_ID_KEY.to_string(), lab_id().to_string()),
    ];
    let volume = |tags: &[(String, String)]| {
        c.ec2
            .create_volume()
            .availability_zone("us-west-2a")
            .size(50)
            .tag_specifications(tagged(ResourceType::Volume, tags))
            .send()
    };
    let volume_id = volume(&lab_tags)
        .await
        .unwrap()
        .volume_id()
        .unwrap()
        .to_string();
    let foreign_volume = volume(&lab_tags[..1])
        .await
        .unwrap()
        .volume_id()
        .unwrap()
        .to_string();
    let snapshot = c
        .ec2
        .create_snapshot()
        .volume_id(&volume_id)
        .tag_specifications(tagged(ResourceType::Snapshot, &lab_tags))
        .send()
        .await
        .unwrap();
    let snapshot_id = snapshot.snapshot_id().unwrap().to_string();
    let report = aws.teardown(&spec, &lab_id(), &Silent).await.unwrap();
    assert!(
        report
            .deleted
            .iter()
            .any(|r| r.kind.name() == "ebs-volume" && r.id == volume_id),
        "{:?}",
        report.deleted
    );
    assert!(
        report
            .left_alone
            .iter()
            .any(|a| a.resource.kind.name() == "ebs-volume" && a.resource.id == foreign_volume),
        "{:?}",
        report.left_alone
    );
    for kind in ["eks-nodegroup", "eks-cluster", "vpc", "subnet", "iam-role"] {
        assert!(
            report.deleted.iter().any(|r| r.kind.name() == kind),
            "{kind} not in {:?}",
            report.deleted
        );
    }
    assert_eq!(
        report
            .leftovers
            .iter()
            .map(|r| (r.kind.name(), r.id.as_str()))
            .collect::<Vec<_>>(),
        [("ec2:snapshot", snapshot_id.as_str())]
    );
    c.ec2
        .delete_snapshot()
        .snapshot_id(&snapshot_id)
        .send()
        .await
        .unwrap();
    let still_there = c
        .ec2
        .describe_volumes()
        .volume_ids(&foreign_volume)
        .send()
        .await
        .unwrap();
    assert_eq!(
        still_there.volumes().len(),
        1,
        "the foreign volume survives"
    );
    c.ec2
        .delete_volume()
        .volume_id(&foreign_volume)
        .send()
        .await
        .unwrap();

    // Down removes everything; a second down finds nothing to do.
    down_and_check_empty(&env, &aws, &spec, "after a full up").await;
    let again = aws.teardown(&spec, &lab_id(), &Silent).await.unwrap();
    assert!(again.deleted.is_empty(), "{:?}", again.deleted);
    let status = aws.status(&spec, &lab_id()).await.unwrap();
    assert_eq!(status.cluster, ClusterState::Absent);
    assert_eq!(status.node_group, NodeGroupState::Absent);
}

#[tokio::test]
async fn crash_after_each_step_then_resume_or_teardown() {
    let env = Env::start(Vec::new()).await;
    let spec = spec(2);
    let aws = env.aws(&spec).await;
    for n in 1..ProvisionStep::ALL.len() {
        // Stopped after step n, `down` removes what exists.
        let stopping = env.aws_stopping_after(&spec, n).await;
        let err = stopping
            .provision(&spec, &lab_id(), &Silent)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Interrupted), "step {n}: {err}");
        down_and_check_empty(&env, &aws, &spec, &format!("down after step {n}")).await;

        // Stopped after step n, `up` resumes without duplicates.
        let err = stopping
            .provision(&spec, &lab_id(), &Silent)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Interrupted), "step {n}: {err}");
        aws.provision(&spec, &lab_id(), &Silent)
            .await
            .unwrap_or_else(|e| panic!("resume after step {n}: {e}"));
        assert_eq!(
            counts(aws.clients(), &env.gaps).await,
            clean_counts(),
            "resumed after step {n}"
        );
        down_and_check_empty(&env, &aws, &spec, &format!("down after resume {n}")).await;
    }
}

#[tokio::test]
async fn up_and_down_complete_with_30_percent_of_calls_throttled() {
    let env = Env::start(vec![
        FaultRule::all(Fault::Throttle, 0.3),
        FaultRule::all(Fault::ServerError, 0.05),
        FaultRule::on(
            &["DescribeVpcs", "GET /clusters"],
            Fault::Latency(Duration::from_millis(20)),
            0.5,
        ),
    ])
    .await;
    let spec = spec(2);
    let aws = env.aws(&spec).await;
    aws.provision(&spec, &lab_id(), &Silent)
        .await
        .unwrap_or_else(|e| panic!("provision under throttling: {e}"));
    aws.provision(&spec, &lab_id(), &Silent)
        .await
        .unwrap_or_else(|e| panic!("rerun under throttling: {e}"));
    let report = aws
        .teardown(&spec, &lab_id(), &Silent)
        .await
        .unwrap_or_else(|e| panic!("teardown under throttling: {e}"));
    assert!(report.leftovers.is_empty(), "{:?}", report.leftovers);
    let stats = env.proxy.stats();
    let throttled = stats.throttled.load(std::sync::atomic::Ordering::SeqCst);
    let requests = stats.requests.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        throttled * 5 >= requests,
        "{throttled} of {requests} throttled"
    );
    assert!(
        stats
            .server_errors
            .load(std::sync::atomic::Ordering::SeqCst)
            > 0
    );
    // Checked without faults: nothing is left.
    let plain = FaultProxy::start(env.moto.addr(), FaultConfig::default())
        .await
        .unwrap();
    let mut options = env.options(None);
    options.sdk.endpoint_url = Some(plain.url());
    let checker = AwsProvisioner::connect(&spec, options).await;
    let left = tagged_leftovers(checker.clients()).await;
    assert!(left.is_empty(), "{left:?}");
}

async fn quota_server(code: &str, value: f64) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(header(
            "x-amz-target",
            "ServiceQuotasV20190624.GetServiceQuota",
        ))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("content-type", "application/x-amz-json-1.1")
                .set_body_json(serde_json::json!({"Quota": {
                    "ServiceCode": "ec2",
                    "QuotaCode": code,
                    "QuotaName": "Running On-Demand G and VT instances",
                    "Value": value,
                    "Unit": "None",
                    "Adjustable": true,
                }})),
        )
        .expect(1)
        .mount(&server)
        .await;
    server
}

#[tokio::test]
async fn preflight_checks_identity_zones_and_quota() {
    let env = Env::start(Vec::new()).await;
    // g4dn.xlarge has 4 vCPUs; nodes.desired = 1 needs 4, nodes.max = 2 needs 8.
    let spec = spec(2);
    assert_eq!((spec.nodes().desired, spec.nodes().max), (1, 2));

    // Short of the nodes `up` starts: an error.
    let short = quota_server("L-DB2E81BA", 2.0).await;
    let aws = AwsProvisioner::connect(&spec, env.options(Some(short.uri()))).await;
    let err = aws.preflight(&spec, &Silent).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::Provision { .. }), "{text}");
    for needle in [
        "L-DB2E81BA",
        "allows 2 vCPUs",
        "nodes.desired = 1) needs 4",
        "aws service-quotas request-service-quota-increase --service-code ec2 --quota-code L-DB2E81BA --desired-value 8",
        "console.aws.amazon.com/servicequotas",
        "Or lower nodes.desired",
    ] {
        assert!(text.contains(needle), "{needle:?} missing in: {text}");
    }

    // Enough for nodes.desired but not nodes.max: `up` goes on, with a warning that scaling stops.
    let tight = quota_server("L-DB2E81BA", 4.0).await;
    let aws = AwsProvisioner::connect(&spec, env.options(Some(tight.uri()))).await;
    let pre = aws.preflight(&spec, &Silent).await.unwrap();
    let quota = pre.quota.expect("quota checked");
    assert_eq!(
        (quota.limit_vcpus, quota.needed_vcpus, quota.max_vcpus),
        (4.0, 4.0, 8.0)
    );
    assert_eq!(pre.warnings.len(), 1, "{:?}", pre.warnings);
    for needle in [
        "allows 4 vCPUs",
        "not for nodes.max = 2 (8)",
        "scaling beyond 1 node of g4dn.xlarge will be refused",
        "--quota-code L-DB2E81BA --desired-value 8",
    ] {
        assert!(
            pre.warnings[0].contains(needle),
            "{needle:?} missing in: {}",
            pre.warnings[0]
        );
    }

    let enough = quota_server("L-DB2E81BA", 64.0).await;
    let aws = AwsProvisioner::connect(&spec, env.options(Some(enough.uri()))).await;
    let pre = aws.preflight(&spec, &Silent).await.unwrap();
    assert!(pre.identity.starts_with("arn:aws:"), "{}", pre.identity);
    assert!(pre.zones.len() >= 2, "{:?}", pre.zones);
    let quota = pre.quota.expect("quota checked");
    assert_eq!(quota.quota_code, "L-DB2E81BA");
    assert_eq!(quota.limit_vcpus, 64.0);
    assert_eq!((quota.needed_vcpus, quota.max_vcpus), (4.0, 8.0));
    assert!(pre.warnings.is_empty(), "{:?}", pre.warnings);

    // moto has no EC2 quotas: the check is skipped with a warning, not an error.
    let aws = env.aws(&spec).await;
    let pre = aws.preflight(&spec, &Silent).await.unwrap();
    assert!(pre.quota.is_none());
    assert!(
        pre.warnings.iter().any(|w| w.contains("L-DB2E81BA")),
        "{:?}",
        pre.warnings
    );
}

// The existing-cluster provider: no AWS, a kubeconfig context (here: the Kubernetes emulator's).

#[tokio::test]
async fn existing_cluster_is_reached_through_its_kubeconfig() {
    use gpulab_core::provision::existing::ExistingCluster;
    use gpulab_testkit::kube::{KubeEmulator, NodeSpec};
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Api, PostParams};

    let kube = KubeEmulator::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    kube.write_kubeconfig(&path).unwrap();
    kube.add_node(NodeSpec::cpu("cpu-1"));
    kube.add_node(NodeSpec::gpu("gpu-1").with_label("topology.kubernetes.io/zone", "us-west-2a"));
    let spec = spec(2);
    let existing = ExistingCluster::new(Some(path.clone()), None);

    // Before the device plugin runs, no node advertises GPUs: a warning, not an error.
    let recorder = Recorder::default();
    let pre = existing.preflight(&spec, &recorder).await.unwrap();
    assert_eq!(pre.zones, ["us-west-2a"]);
    assert!(pre.quota.is_none());
    assert!(pre.identity.contains("gpulab-emulator"), "{}", pre.identity);
    assert_eq!(pre.warnings.len(), 1, "{:?}", pre.warnings);
    assert!(pre.warnings[0].contains("nvidia.com/gpu"));
    assert!(
        recorder
            .events()
            .iter()
            .any(|e| matches!(e, Event::Warning { .. }))
    );

    // Once the device plugin runs on the GPU node, it advertises nvidia.com/gpu and preflight is quiet.
    let plugin: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "nvidia-device-plugin", "namespace": "kube-system"},
        "spec": {
            "nodeName": "gpu-1",
            "containers": [{"name": "plugin", "image": "nvcr.io/nvidia/k8s-device-plugin:v0.17.0"}],
        },
    }))
    .unwrap();
    Api::<Pod>::namespaced(kube.client(), "kube-system")
        .create(&PostParams::default(), &plugin)
        .await
        .unwrap();
    let mut pre = existing.preflight(&spec, &Silent).await.unwrap();
    for _ in 0..100 {
        if pre.warnings.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        pre = existing.preflight(&spec, &Silent).await.unwrap();
    }
    assert!(pre.warnings.is_empty(), "{:?}", pre.warnings);

    let provisioned = existing.provision(&spec, &lab_id(), &Silent).await.unwrap();
    assert!(provisioned.resources.is_empty());
    assert_eq!(provisioned.access.endpoint, kube.url());
    match &provisioned.access.auth {
        ClusterAuth::Kubeconfig { path: p, context } => {
            assert_eq!(p.as_deref(), Some(path.as_path()));
            assert_eq!(context.as_deref(), Some("gpulab-emulator"));
        }
        other => panic!("unexpected auth {other:?}"),
    }
    let status = existing.status(&spec, &lab_id()).await.unwrap();
    assert_eq!(status.nodes_running, 1);

    let err = existing
        .scale(&spec, &lab_id(), 0, &Silent)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Provision { .. }));
    assert!(err.to_string().contains("not scaled by gpulab"), "{err}");

    let recorder = Recorder::default();
    let report = existing
        .teardown(&spec, &lab_id(), &recorder)
        .await
        .unwrap();
    assert!(report.deleted.is_empty() && report.leftovers.is_empty());
    assert!(recorder.events().iter().any(
        |e| matches!(e, Event::Warning { message } if message.contains("deletes nothing in the cloud"))
    ));

    // A context that does not exist, and a server that does not answer, are clear errors.
    let err = ExistingCluster::new(Some(path.clone()), Some("nope".into()))
        .preflight(&spec, &Silent)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no context \"nope\""), "{err}");
    drop(kube);
    let err = existing.preflight(&spec, &Silent).await.unwrap_err();
    assert!(matches!(err, Error::Cluster { .. }), "{err}");
    assert!(err.to_string().contains("does not answer"), "{err}");
}

/// The nodes need one standard zone offering their type; the control plane's second subnet may go in
/// any other zone of the region (p5 and p6 types are often offered in one zone only).
#[tokio::test]
async fn preflight_needs_a_zone_offering_the_node_type() {
    let offered_in_one = Arc::new(AtomicBool::new(true));
    let switch = offered_in_one.clone();
    let env = Env::start_with(Vec::new(), move |req: &ProxyRequest| {
        let items = if switch.load(Ordering::SeqCst) {
            "<item><instanceType>g4dn.xlarge</instanceType><locationType>availability-zone</locationType><location>us-west-2c</location></item>"
        } else {
            ""
        };
        (req.operation == "DescribeInstanceTypeOfferings").then(|| ProxyResponse {
            status: 200,
            headers: vec![("content-type".into(), "text/xml".into())],
            body: format!("<DescribeInstanceTypeOfferingsResponse xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\"><requestId>1</requestId><instanceTypeOfferingSet>{items}</instanceTypeOfferingSet></DescribeInstanceTypeOfferingsResponse>").into_bytes(),
        })
    })
    .await;
    let spec = spec(2);
    let aws = env.aws(&spec).await;
    let preflight = aws.preflight(&spec, &Silent).await.unwrap();
    assert_eq!(preflight.zones, ["us-west-2c"]);

    offered_in_one.store(false, Ordering::SeqCst);
    let err = aws.preflight(&spec, &Silent).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::Provision { .. }), "{text}");
    assert!(
        text.contains("g4dn.xlarge is not offered in any availability zone of us-west-2"),
        "{text}"
    );
    assert!(text.contains("gpulab catalog --region"), "{text}");
    // provision checks it too, before creating anything.
    assert!(aws.provision(&spec, &lab_id(), &Silent).await.is_err());
    assert_eq!(counts(aws.clients(), &env.gaps).await["vpc"], 0);
}

#[tokio::test]
async fn a_wait_that_runs_out_says_what_is_pending() {
    // The control plane never leaves CREATING.
    let env = Env::start_with(Vec::new(), |req: &ProxyRequest| {
        (req.method == "GET" && req.path == format!("/clusters/{LAB}")).then(|| {
            ProxyResponse::json(
                200,
                &serde_json::json!({"cluster": {
                    "name": LAB,
                    "status": "CREATING",
                    "tags": {LAB_KEY: LAB, LAB_ID_KEY: lab_id().to_string()},
                }}),
            )
        })
    })
    .await;
    let spec = spec(2);
    let mut options = env.options(None);
    options.waits.cluster = Duration::from_millis(300);
    let aws = AwsProvisioner::connect(&spec, options).await;
    let recorder = Recorder::default();
    let err = aws
        .provision(&spec, &lab_id(), &recorder)
        .await
        .unwrap_err();
    match &err {
        Error::Timeout { what, pending, .. } => {
            assert!(what.contains(LAB) && what.contains("ACTIVE"), "{what}");
            assert_eq!(pending, "cluster status CREATING");
        }
        other => panic!("expected a timeout, got {other}"),
    }
    let waits = recorder
        .events()
        .into_iter()
        .filter(|e| matches!(e, Event::Waiting { on, .. } if on == "cluster status CREATING"))
        .count();
    assert!(waits >= 2, "{waits} Waiting events");
}

#[tokio::test]
async fn a_step_that_fails_halfway_resumes_and_tears_down_cleanly() {
    // Each of these calls comes after the step has created something; it fails every time (500s).
    let moto = MotoServer::start();
    let gaps = Arc::new(EksGaps::checking_principals_in(moto.addr()));
    let spec = spec(2);
    // Each round ends with `down` and checks moto is empty, so one reset suffices (a reset makes moto
    // reload its managed IAM policies, which takes seconds).
    moto.reset();
    for op in [
        "AttachInternetGateway",
        "CreateRoute",
        "AuthorizeSecurityGroupIngress",
        "AttachRolePolicy",
        "POST /clusters/motolab/addons",
        "POST /clusters/motolab/node-groups",
    ] {
        let failing = FaultProxy::start(
            moto.addr(),
            FaultConfig {
                seed: 7,
                rules: vec![FaultRule::on(&[op], Fault::ServerError, 1.0)],
                intercept: Some(gaps.clone()),
            },
        )
        .await
        .unwrap();
        let plain = FaultProxy::start(
            moto.addr(),
            FaultConfig {
                intercept: Some(gaps.clone()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let connect = |url: String| {
            let spec = &spec;
            async move {
                AwsProvisioner::connect(
                    spec,
                    AwsOptions {
                        sdk: SdkOptions {
                            checkip_url: Some(format!("{url}/checkip")),
                            endpoint_url: Some(url),
                            credentials: Some(Credentials::new("t", "t", None, None, "test")),
                            retry: fast_retry(),
                            ..Default::default()
                        },
                        waits: WaitOptions::fast(),
                        stop_after_step: None,
                    },
                )
                .await
            }
        };
        let broken = connect(failing.url()).await;
        let err = broken
            .provision(&spec, &lab_id(), &Silent)
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::Provision { .. }),
            "{op}: unexpected error {err}"
        );
        assert!(
            failing
                .stats()
                .server_errors
                .load(std::sync::atomic::Ordering::SeqCst)
                >= 8,
            "{op}: the SDK retries 8 times"
        );

        let aws = connect(plain.url()).await;
        aws.provision(&spec, &lab_id(), &Silent)
            .await
            .unwrap_or_else(|e| panic!("resume after {op} failed: {e}"));
        assert_eq!(
            counts(aws.clients(), &gaps).await,
            clean_counts(),
            "resumed after {op} failed"
        );

        // And down after the same half-done step.
        aws.teardown(&spec, &lab_id(), &Silent).await.unwrap();
        let _ = broken
            .provision(&spec, &lab_id(), &Silent)
            .await
            .unwrap_err();
        let report = aws.teardown(&spec, &lab_id(), &Silent).await.unwrap();
        assert!(report.leftovers.is_empty(), "{op}: {:?}", report.leftovers);
        let left = tagged_leftovers(aws.clients()).await;
        assert!(left.is_empty(), "{op}: moto still has {left:?}");
    }
}

#[tokio::test]
async fn eks_is_retried_while_a_new_role_is_not_yet_assumable() {
    // Real EKS refuses a role created seconds ago; moto never does, so the proxy says it twice.
    let refusals = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let r = refusals.clone();
    let env = Env::start_with(Vec::new(), move |req: &ProxyRequest| {
        (req.method == "POST"
            && (req.path == "/clusters" || req.path.ends_with("/node-groups"))
            && r.fetch_add(1, std::sync::atomic::Ordering::SeqCst) % 3 != 2)
            .then(|| {
                ProxyResponse::rest_error(
                    400,
                    "InvalidParameterException",
                    "Role with arn: arn:aws:iam::123456789012:role/motolab-cluster-role, could not be assumed because it does not exist or the trusted entity is not correct",
                )
            })
    })
    .await;
    let spec = spec(2);
    let aws = env.aws(&spec).await;
    let recorder = Recorder::default();
    aws.provision(&spec, &lab_id(), &recorder).await.unwrap();
    assert_eq!(refusals.load(std::sync::atomic::Ordering::SeqCst), 6);
    assert_eq!(counts(aws.clients(), &env.gaps).await, clean_counts());
    assert!(recorder.events().iter().any(
        |e| matches!(e, Event::Waiting { on, .. } if on.starts_with("IAM role not usable yet"))
    ));
}

/// Defect 3 of the real-EKS issue: a caller signed in with IAM Identity Center (`aws sso login`) is an
/// assumed-role session of a role under `/aws-reserved/sso.amazonaws.com/`; STS's session ARN drops
/// the path, and EKS refuses the pathless role ARN for an access entry. gpulab asks IAM for the role's
/// real ARN.
#[tokio::test]
async fn an_identity_center_caller_gets_an_access_entry_for_its_roles_real_arn() {
    let env = Env::start(Vec::new()).await;
    let spec = spec(2);
    let admin = env.aws(&spec).await;
    let trust = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"*"},"Action":"sts:AssumeRole"}]}"#;
    let role = admin
        .clients()
        .iam
        .create_role()
        .path("/aws-reserved/sso.amazonaws.com/us-west-2/")
        .role_name("AWSReservedSSO_AdministratorAccess_0123456789abcdef")
        .assume_role_policy_document(trust)
        .send()
        .await
        .unwrap();
    let role_arn = role.role().unwrap().arn().to_string();
    assert!(
        role_arn.contains(":role/aws-reserved/sso.amazonaws.com/"),
        "{role_arn}"
    );
    let session = admin
        .clients()
        .sts
        .assume_role()
        .role_arn(&role_arn)
        .role_session_name("alice@example.com")
        .send()
        .await
        .unwrap();
    let c = session.credentials().unwrap();
    let mut options = env.options(None);
    options.sdk.credentials = Some(Credentials::new(
        c.access_key_id(),
        c.secret_access_key(),
        Some(c.session_token().to_string()),
        None,
        "sso",
    ));
    let caller = AwsProvisioner::connect(&spec, options).await;
    let who = caller
        .clients()
        .sts
        .get_caller_identity()
        .send()
        .await
        .unwrap();
    assert!(
        who.arn().unwrap().contains(":assumed-role/AWSReservedSSO_"),
        "moto answers as STS does: {:?}",
        who.arn()
    );

    caller
        .provision(&spec, &lab_id(), &Silent)
        .await
        .unwrap_or_else(|e| panic!("provision as an SSO user: {e}"));
    let (entries, _) = env.gaps.contents(LAB);
    assert!(entries.contains(&role_arn), "{entries:?}");
    down_and_check_empty(&env, &admin, &spec, "after an SSO user's up").await;
}

/// A spot node group takes the catalog's larger types with the same GPU only where the spot vCPU quota
/// has room for `nodes.desired` of them: g4dn.2xlarge (8 vCPUs) is left out under a 4-vCPU quota, with a
/// warning, and taken under a 64-vCPU one.
#[tokio::test]
async fn spot_types_beyond_the_spot_quota_are_left_out() {
    let env = Env::start(Vec::new()).await;
    let dir = LabDir::new().with_default_key();
    let spec = dir
        .inputs(SpecLayer {
            name: Some(LAB.into()),
            region: Some("us-west-2".into()),
            nodes: NodesLayer {
                capacity: Some(gpulab_core::spec::Capacity::Spot),
                ..Default::default()
            },
            ..Default::default()
        })
        .resolve()
        .and_then(|r| r.validate())
        .expect("a valid spot spec");
    let types = |aws: &AwsProvisioner| {
        let eks = aws.clients().eks.clone();
        async move {
            eks.describe_nodegroup()
                .cluster_name(LAB)
                .nodegroup_name(format!("{LAB}-gpu"))
                .send()
                .await
                .unwrap()
                .nodegroup()
                .unwrap()
                .instance_types()
                .to_vec()
        }
    };

    let tight = quota_server("L-3819A6DF", 4.0).await;
    let aws = AwsProvisioner::connect(&spec, env.options(Some(tight.uri()))).await;
    let events = Recorder::default();
    aws.provision(&spec, &lab_id(), &events)
        .await
        .unwrap_or_else(|e| panic!("provision: {e}"));
    assert_eq!(types(&aws).await, ["g4dn.xlarge"]);
    let warned = events.events().into_iter().any(|e| {
        matches!(e, Event::Warning { message } if message.contains("leaves out g4dn.2xlarge (8 vCPUs)")
            && message.contains("L-3819A6DF") && message.contains("allows 4 vCPUs"))
    });
    assert!(warned, "{:?}", events.events());
    down_and_check_empty(&env, &aws, &spec, "after the tight quota").await;

    let roomy = quota_server("L-3819A6DF", 64.0).await;
    let aws = AwsProvisioner::connect(&spec, env.options(Some(roomy.uri()))).await;
    aws.provision(&spec, &lab_id(), &Silent)
        .await
        .unwrap_or_else(|e| panic!("provision: {e}"));
    assert_eq!(types(&aws).await, ["g4dn.xlarge", "g4dn.2xlarge"]);
    down_and_check_empty(&env, &aws, &spec, "after the roomy quota").await;
}
