//! The EKS side: the cluster, the caller's admin access entry, the EBS CSI addon and the GPU node group;
//! access, status and scaling.

use std::collections::HashMap;
use std::time::SystemTime;

use aws_sdk_eks::types::{
    AccessScope, AccessScopeType, AddonPodIdentityAssociations, AmiTypes, AuthenticationMode,
    CapacityTypes, Cluster, ClusterStatus, CreateAccessConfigRequest, Nodegroup,
    NodegroupScalingConfig, NodegroupStatus, ResolveConflicts, VpcConfigRequest,
};
use base64::Engine;

use super::iam::Roles;
use super::network::{self, Network};
use super::preflight::Zones;
use aws_sdk_eks::operation::create_cluster::CreateClusterError;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use super::sdk::{CallResult, error_code, is_already_exists, is_not_found, missing, sdk_error};
use super::{Ctx, Found, ProvisionStep, StepCounter, filter};
use crate::events::Event;
use crate::naming::{GPU_NODE_LABEL, KubeNames, LAB_ID_KEY, LAB_KEY};
use crate::provision::{
    ClusterAccess, ClusterAuth, ClusterState, NodeGroupState, ProvisionStatus, ResourceKind,
    ResourceRef,
};
use crate::spec::Capacity;
use crate::{Error, Result};
use gpulab_model::aws::EBS_CSI_SERVICE_ACCOUNT;
use gpulab_model::aws::NODE_AMI_TYPE;

/// The EKS addon that provisions EBS volumes (the workspace's `/workspace`).
pub(crate) const EBS_CSI_ADDON: &str = "aws-ebs-csi-driver";
/// The EKS addon that serves Pod Identity credentials on every node.
pub(crate) const POD_IDENTITY_ADDON: &str = "eks-pod-identity-agent";
/// How long a new IAM role may take before EKS accepts it.
const IAM_PROPAGATION: std::time::Duration = std::time::Duration::from_secs(120);
/// The access policy that makes the caller a cluster admin.
pub(crate) const CLUSTER_ADMIN_POLICY: &str =
    "arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy";

fn tags(ctx: &Ctx<'_>) -> HashMap<String, String> {
    ctx.tags().into_iter().collect()
}

fn owns(ctx: &Ctx<'_>, tags: Option<&HashMap<String, String>>) -> bool {
    tags.is_some_and(|t| ctx.owns(t.iter().map(|(k, v)| (k.as_str(), v.as_str()))))
}

/// The cluster with the lab's name, and whether it is the lab's.
pub(crate) async fn find_cluster(ctx: &Ctx<'_>, step: &str) -> Result<Found<Cluster>> {
    let described = ctx.c.eks.describe_cluster().name(&ctx.names.cluster).send();
    let out = described.await.unless_gone(step)?;
    Ok(match out.as_ref().and_then(|out| out.cluster()) {
        None => Found::Absent,
        Some(c) if owns(ctx, c.tags()) => Found::Ours(c.clone()),
        Some(_) => Found::NotOurs,
    })
}

/// The lab's node group in its cluster, and whether it is the lab's.
pub(crate) async fn find_node_group(ctx: &Ctx<'_>, step: &str) -> Result<Found<Nodegroup>> {
    let described = ctx
        .c
        .eks
        .describe_nodegroup()
        .cluster_name(&ctx.names.cluster);
    let out = described
        .nodegroup_name(&ctx.names.node_group)
        .send()
        .await
        .unless_gone(step)?;
    Ok(match out.as_ref().and_then(|out| out.nodegroup()) {
        None => Found::Absent,
        Some(n) if owns(ctx, n.tags()) => Found::Ours(n.clone()),
        Some(_) => Found::NotOurs,
    })
}

/// The error for an EKS cluster (or node group) of the lab's name without the lab's ID.
pub(crate) fn not_ours(ctx: &Ctx<'_>, what: &str) -> Error {
    Error::Ownership {
        resource: what.into(),
        message: format!(
            "it exists without the tag {LAB_ID_KEY}={} (another tool's, or another machine's lab of the same name)",
            ctx.id
        ),
        hint: "choose another lab name (--name); gpulab will neither use, change nor delete it"
            .into(),
    }
}

/// The role behind an assumed-role session ARN (`arn:aws:sts::1:assumed-role/R/s` → `R`), if it is one.
fn assumed_role(arn: &str) -> Option<&str> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    if parts.len() == 6 && parts[2] == "sts" {
        parts[5]
            .strip_prefix("assumed-role/")?
            .split_once('/')
            .map(|(role, _session)| role)
    } else {
        None
    }
}

/// The IAM principal an access entry needs for `arn`, without asking IAM: an assumed-role session
/// becomes its role's ARN, pathless (`arn:aws:iam::1:role/R`).
pub(crate) fn principal_arn(arn: &str) -> String {
    match assumed_role(arn) {
        Some(role) => {
            let parts: Vec<&str> = arn.splitn(6, ':').collect();
            format!("arn:{}:iam::{}:role/{role}", parts[1], parts[4])
        }
        None => arn.to_string(),
    }
}

/// The IAM principal an access entry needs for the caller `arn`: an assumed-role session becomes its
/// role's real ARN, path included, from IAM. STS drops the path from session ARNs, and roles with one
/// (IAM Identity Center's `aws-reserved/sso.amazonaws.com/…` roles, for everyone who uses `aws sso
/// login`) are refused by EKS without it. When IAM will not say (no iam:GetRole), the pathless ARN is
/// tried, with a warning.
pub(crate) async fn resolve_principal(ctx: &Ctx<'_>, step: &str, arn: &str) -> Result<String> {
    let Some(role) = assumed_role(arn) else {
        return Ok(arn.to_string());
    };
    match ctx.c.iam.get_role().role_name(role).send().await {
        Ok(out) => Ok(out
            .role()
            .map(|r| r.arn().to_string())
            .unwrap_or_else(|| principal_arn(arn))),
        Err(e) if error_code(&e) == Some("AccessDenied") => {
            ctx.reporter.report(Event::Warning {
                message: format!(
                    "IAM would not describe your role {role} (iam:GetRole denied): its access entry uses the role's ARN without a path, which EKS refuses for roles that have one (IAM Identity Center's); if `up` fails here, allow iam:GetRole on it"
                ),
            });
            Ok(principal_arn(arn))
        }
        Err(e) => Err(sdk_error(step, e)),
    }
}

/// The cluster's status, or `None` when it does not exist.
pub(crate) async fn cluster_status(ctx: &Ctx<'_>, step: &str) -> Result<Option<String>> {
    let described = ctx.c.eks.describe_cluster().name(&ctx.names.cluster).send();
    Ok(described.await.unless_gone(step)?.map(|out| {
        let status = out.cluster().and_then(|c| c.status());
        status.map_or_else(|| "UNKNOWN".into(), |s| s.as_str().to_string())
    }))
}

/// The node group's status, or `None` when it (or the cluster) does not exist.
pub(crate) async fn node_group_status(ctx: &Ctx<'_>, step: &str) -> Result<Option<String>> {
    let described = ctx
        .c
        .eks
        .describe_nodegroup()
        .cluster_name(&ctx.names.cluster);
    let out = described
        .nodegroup_name(&ctx.names.node_group)
        .send()
        .await
        .unless_gone(step)?;
    Ok(out.map(|out| {
        let status = out.nodegroup().and_then(|n| n.status());
        status.map_or_else(|| "UNKNOWN".into(), |s| s.as_str().to_string())
    }))
}

/// Send a create call, retrying while EKS does not yet accept a new IAM role; an "already exists"
/// counts as done. `Ok(Some(zones))` when EKS refused a zone of the subnets and named the ones it
/// accepts (`UnsupportedAvailabilityZoneException`, CreateCluster only).
async fn send_once_role_is_usable<F, Fut, T, E>(
    ctx: &Ctx<'_>,
    step: &str,
    mut send: F,
) -> Result<Option<Vec<String>>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = std::result::Result<T, SdkError<E, HttpResponse>>>,
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let refused = std::sync::Mutex::new(None);
    ctx.wait(
        step,
        "the new IAM role to become usable",
        IAM_PROPAGATION,
        || {
            let fut = send();
            let refused = &refused;
            async move {
                match fut.await {
                    Ok(_) => Ok(None),
                    Err(e) if is_already_exists(&e) => Ok(None),
                    Err(e)
                        if error_code(&e) == Some("InvalidParameterException")
                            && ProvideErrorMetadata::message(&e)
                                .is_some_and(|m| m.to_ascii_lowercase().contains("role")) =>
                    {
                        Ok(Some(format!(
                            "IAM role not usable yet: {}",
                            ProvideErrorMetadata::message(&e).unwrap_or_default()
                        )))
                    }
                    Err(e) => match unsupported_zones(&e) {
                        Some(valid) => {
                            *refused.lock().expect("refused zones") = Some(valid);
                            Ok(None)
                        }
                        None => Err(sdk_error(step, e)),
                    },
                }
            }
        },
    )
    .await?;
    Ok(refused.into_inner().expect("refused zones"))
}

/// The zones EKS accepts, when it refused the cluster's subnets for their zone: it names them in
/// `validZones` (EKS API reference, UnsupportedAvailabilityZoneException), e.g. when `us-east-1e` has
/// no control-plane capacity.
fn unsupported_zones<E>(e: &SdkError<E, HttpResponse>) -> Option<Vec<String>>
where
    E: std::error::Error + 'static,
{
    let service: &(dyn std::error::Error + 'static) = e.as_service_error()?;
    match service.downcast_ref::<CreateClusterError>()? {
        CreateClusterError::UnsupportedAvailabilityZoneException(refusal) => {
            Some(refusal.valid_zones().to_vec())
        }
        _ => None,
    }
}

/// Who may reach the cluster's API: the caller (made cluster admin) and from where.
pub(crate) struct Access<'a> {
    /// The caller's ARN, from STS.
    pub(crate) caller: &'a str,
    /// IPv4 ranges the public endpoint admits.
    pub(crate) api_cidrs: &'a [String],
}

/// The ranges the endpoint should admit, given those it admits now (`current`): exactly the user's
/// `access.api_cidrs` when set; otherwise the current ones plus this machine's address, so a laptop
/// that moved networks gets in again without locking out a teammate. `None` when nothing changes.
fn endpoint_cidrs(ctx: &Ctx<'_>, current: &[String], wanted: &[String]) -> Option<Vec<String>> {
    let mut next: Vec<String> = if ctx.spec.access().api_cidrs.is_empty() {
        current.iter().chain(wanted).cloned().collect()
    } else {
        wanted.to_vec()
    };
    next.sort();
    next.dedup();
    let mut now = current.to_vec();
    now.sort();
    (next != now).then_some(next)
}

/// EKS refused a zone of the lab's subnets for the control plane and named those it accepts (`valid`):
/// remake the subnets outside them in accepted zones (the network's steps run again; all but the
/// subnets are found as they are) and say so.
async fn move_subnets(
    ctx: &Ctx<'_>,
    net: &mut Network,
    zones: &mut Zones,
    valid: &[String],
    resources: &mut Vec<ResourceRef>,
) -> Result<()> {
    zones.keep_only(valid);
    let dropped = network::drop_subnets_outside(ctx, &net.vpc_id, valid).await?;
    ctx.reporter.report(Event::Warning {
        message: format!(
            "EKS cannot place the control plane in {} now; moving the lab's subnets to zones it accepts ({})",
            dropped.join(", "),
            valid.join(", ")
        ),
    });
    let mut remade = Vec::new();
    *net = network::converge(ctx, zones, &StepCounter::unlimited(), &mut remade).await?;
    resources.retain(|r| r.kind != ResourceKind::Subnet);
    resources.extend(
        remade
            .into_iter()
            .filter(|r| r.kind == ResourceKind::Subnet),
    );
    Ok(())
}

/// Create (or find) the cluster, the access entry, the addon and the node group, one step each.
pub(crate) async fn converge(
    ctx: &Ctx<'_>,
    net: &mut Network,
    zones: &mut Zones,
    roles: &Roles,
    access: &Access<'_>,
    counter: &StepCounter,
    resources: &mut Vec<ResourceRef>,
) -> Result<()> {
    let caller = access.caller;
    let eks = &ctx.c.eks;
    let spec = &ctx.spec.spec;
    let cluster = ctx.names.cluster.clone();

    // The control plane.
    let step = ProvisionStep::Cluster.name();
    ctx.step(step, async {
        let mut done = true;
        let mut admitted = None;
        match find_cluster(ctx, step).await? {
            Found::NotOurs => return Err(not_ours(ctx, &format!("EKS cluster {cluster}"))),
            Found::Ours(c) => {
                admitted = Some(
                    c.resources_vpc_config()
                        .map(|v| v.public_access_cidrs().to_vec())
                        .unwrap_or_default(),
                );
                if c.status() == Some(&ClusterStatus::Deleting) {
                    return Err(Error::Provision {
                        step: step.into(),
                        message: format!("cluster {cluster} is being deleted"),
                        hint: Some(
                            "wait for `gpulab down` to finish, then rerun `gpulab up`".into(),
                        ),
                        cause: None,
                    });
                }
            }
            Found::Absent => {
                done = false;
                let mut moved = false;
                loop {
                    let mut create = eks
                        .create_cluster()
                        .name(&cluster)
                        .role_arn(&roles.cluster)
                        .resources_vpc_config(
                            VpcConfigRequest::builder()
                                .set_subnet_ids(Some(net.subnet_ids.clone()))
                                .security_group_ids(&net.security_group_id)
                                .endpoint_public_access(true)
                                .endpoint_private_access(true)
                                .set_public_access_cidrs(Some(access.api_cidrs.to_vec()))
                                .build(),
                        )
                        .access_config(
                            CreateAccessConfigRequest::builder()
                                .authentication_mode(AuthenticationMode::ApiAndConfigMap)
                                .bootstrap_cluster_creator_admin_permissions(true)
                                .build(),
                        )
                        .set_tags(Some(tags(ctx)));
                    if let Some(version) = &spec.kubernetes_version {
                        create = create.version(version);
                    }
                    let Some(valid) =
                        send_once_role_is_usable(ctx, step, || create.clone().send()).await?
                    else {
                        break;
                    };
                    if moved {
                        return Err(Error::Provision {
                            step: step.into(),
                            message: format!(
                                "EKS refused the zones of the lab's subnets twice; it accepts {}",
                                valid.join(", ")
                            ),
                            hint: Some("rerun `gpulab up` later, or choose another region".into()),
                            cause: None,
                        });
                    }
                    moved = true;
                    move_subnets(ctx, net, zones, &valid, resources).await?;
                }
            }
        }
        let become_active = format!("EKS cluster {cluster} to become ACTIVE");
        let active = || {
            ctx.wait(step, &become_active, ctx.waits.cluster, || async {
                match cluster_status(ctx, step).await? {
                    Some(s) if s == "ACTIVE" => Ok(None),
                    Some(s) if s == "FAILED" => Err(Error::Provision {
                        step: step.into(),
                        message: format!("cluster {cluster} is FAILED"),
                        hint: Some(
                            "see the cluster's health in the EKS console; `gpulab down` removes it"
                                .into(),
                        ),
                        cause: None,
                    }),
                    Some(s) => Ok(Some(format!("cluster status {s}"))),
                    None => Ok(Some("cluster not visible yet".into())),
                }
            })
        };
        active().await?;
        // A rerun from another network, or with other api_cidrs: the endpoint admits the new ranges.
        if let Some(current) = admitted
            && let Some(next) = endpoint_cidrs(ctx, &current, access.api_cidrs)
        {
            done = false;
            eks.update_cluster_config()
                .name(&cluster)
                .resources_vpc_config(
                    VpcConfigRequest::builder()
                        .endpoint_public_access(true)
                        .endpoint_private_access(true)
                        .set_public_access_cidrs(Some(next))
                        .build(),
                )
                .send()
                .await
                .at(step)?;
            active().await?;
        }
        Ok(((), done))
    })
    .await?;
    resources.push(ResourceRef::new(ResourceKind::EksCluster, cluster.clone()));
    counter.finished()?;

    // The caller as cluster admin (bootstrapClusterCreatorAdminPermissions covers the creator; this
    // also covers a caller resuming a lab someone else's session created).
    let step = ProvisionStep::AdminAccess.name();
    let principal = resolve_principal(ctx, step, caller).await?;
    let entry_is_ours = ctx
        .step(step, async {
            let mut done = true;
            match eks
                .create_access_entry()
                .cluster_name(&cluster)
                .principal_arn(&principal)
                .set_tags(Some(tags(ctx)))
                .send()
                .await
            {
                Ok(_) => done = false,
                Err(e) if is_already_exists(&e) => {
                    // The creator's own entry (bootstrapClusterCreatorAdminPermissions) is EKS's, and
                    // already admin; an entry someone else made is theirs. Neither is changed.
                    if !access_entry_is_ours(ctx, step, &principal).await? {
                        return Ok((false, true));
                    }
                }
                Err(e) => return Err(sdk_error(step, e)),
            }
            eks.associate_access_policy()
                .cluster_name(&cluster)
                .principal_arn(&principal)
                .policy_arn(CLUSTER_ADMIN_POLICY)
                .access_scope(
                    AccessScope::builder()
                        .r#type(AccessScopeType::Cluster)
                        .build(),
                )
                .send()
                .await
                .unless_exists(step)?;
            Ok((true, done))
        })
        .await?;
    if entry_is_ours {
        resources.push(ResourceRef::new(
            ResourceKind::EksAccessEntry,
            principal.clone(),
        ));
    }
    counter.finished()?;

    // The Pod Identity agent serves the addons' and image builds' roles to their pods.
    if ensure_addon(
        ctx,
        ProvisionStep::PodIdentityAgent,
        POD_IDENTITY_ADDON,
        None,
    )
    .await?
    {
        resources.push(ResourceRef::new(ResourceKind::EksAddon, POD_IDENTITY_ADDON));
    }
    counter.finished()?;

    // The EBS CSI driver, with its controller's role. It becomes ACTIVE only once nodes run its pods,
    // so it is not awaited.
    let association = AddonPodIdentityAssociations::builder()
        .service_account(EBS_CSI_SERVICE_ACCOUNT.1)
        .role_arn(&roles.ebs_csi)
        .build()
        .map_err(|e| missing(ProvisionStep::EbsCsiAddon.name(), &e.to_string()))?;
    if ensure_addon(
        ctx,
        ProvisionStep::EbsCsiAddon,
        EBS_CSI_ADDON,
        Some(association),
    )
    .await?
    {
        resources.push(ResourceRef::new(ResourceKind::EksAddon, EBS_CSI_ADDON));
    }
    counter.finished()?;

    // The roles of the lab's own pods, for the service accounts they run as: kaniko's (image builds)
    // and the autostop agent's.
    let names = KubeNames::new(spec);
    for (step, account, role, user) in [
        (
            ProvisionStep::ImageBuildAccess,
            &names.image_build_account,
            &roles.image_build,
            "in-cluster image builds",
        ),
        (
            ProvisionStep::AutostopAccess,
            &names.autostop_agent,
            &roles.autostop,
            "the autostop agent",
        ),
    ] {
        if let Some(id) = ensure_pod_identity(ctx, step.name(), account, role, user).await? {
            resources.push(ResourceRef::new(
                ResourceKind::EksPodIdentityAssociation,
                id,
            ));
        }
        counter.finished()?;
    }

    // The GPU node group.
    let step = ProvisionStep::NodeGroup.name();
    let ng = ctx.names.node_group.clone();
    let instance_types = node_instance_types(ctx, step, zones.offering.first()).await?;
    ctx.step(step, async {
        let mut done = true;
        let found = find_node_group(ctx, step).await?;
        if matches!(found, Found::NotOurs) {
            return Err(not_ours(ctx, &format!("EKS node group {ng}")));
        }
        if matches!(found, Found::Absent) {
            done = false;
            let nodes = &spec.nodes;
            let create = eks
                .create_nodegroup()
                .cluster_name(&cluster)
                .nodegroup_name(&ng)
                .scaling_config(
                    NodegroupScalingConfig::builder()
                        .min_size(nodes.min as i32)
                        .max_size(nodes.max as i32)
                        .desired_size(nodes.desired as i32)
                        .build(),
                )
                .disk_size(nodes.disk_gib as i32)
                // One zone, the first subnet's: an EBS volume attaches only in its own zone, so a node
                // that replaces another (stop/start, a spot interruption, a repair) must come up where
                // /workspace is. The control plane keeps both subnets.
                .subnets(&net.subnet_ids[0])
                .set_instance_types(Some(instance_types.clone()))
                .ami_type(AmiTypes::from(NODE_AMI_TYPE))
                .node_role(&roles.node)
                .capacity_type(match nodes.capacity {
                    Capacity::OnDemand => CapacityTypes::OnDemand,
                    Capacity::Spot => CapacityTypes::Spot,
                })
                .labels(GPU_NODE_LABEL.0, GPU_NODE_LABEL.1)
                .labels(LAB_KEY, ctx.lab())
                .labels(LAB_ID_KEY, ctx.id.as_str())
                // No taint: this is the cluster's only node group, and CoreDNS and the EBS CSI
                // controller tolerate none of a GPU taint (see naming::GPU_TAINT).
                .set_tags(Some(tags(ctx)));
            send_once_role_is_usable(ctx, step, || create.clone().send()).await?;
        }
        wait_node_group_active(ctx, step, None).await?;
        Ok(((), done))
    })
    .await?;
    resources.push(ResourceRef::new(ResourceKind::EksNodegroup, ng));
    counter.finished()?;
    Ok(())
}

/// Install addon `name` (with a Pod Identity `association`) in the lab's cluster unless it is there;
/// one of the lab's that lacks the association gets it. An addon someone else installed in the lab's
/// cluster is used as it is. Returns whether the addon is the lab's.
async fn ensure_addon(
    ctx: &Ctx<'_>,
    step: ProvisionStep,
    name: &str,
    association: Option<AddonPodIdentityAssociations>,
) -> Result<bool> {
    let step = step.name();
    let eks = &ctx.c.eks;
    let cluster = &ctx.names.cluster;
    ctx.step(step, async {
        let described = eks.describe_addon().cluster_name(cluster).addon_name(name);
        let existing = described.send().await.unless_gone(step)?;
        let existing = existing.and_then(|out| out.addon().cloned());
        match existing {
            Some(addon) if !owns(ctx, addon.tags()) => Ok((false, true)),
            Some(addon) => {
                let missing_association =
                    association.is_some() && addon.pod_identity_associations().is_empty();
                if missing_association {
                    eks.update_addon()
                        .cluster_name(cluster)
                        .addon_name(name)
                        .set_pod_identity_associations(association.clone().map(|a| vec![a]))
                        .resolve_conflicts(ResolveConflicts::Overwrite)
                        .send()
                        .await
                        .at(step)?;
                }
                Ok((true, !missing_association))
            }
            None => {
                let create = eks
                    .create_addon()
                    .cluster_name(cluster)
                    .addon_name(name)
                    .resolve_conflicts(ResolveConflicts::Overwrite)
                    .set_pod_identity_associations(association.clone().map(|a| vec![a]))
                    .set_tags(Some(tags(ctx)));
                match create.send().await {
                    Ok(_) => Ok((true, false)),
                    Err(e) if is_already_exists(&e) => {
                        Ok((addon_is_ours(ctx, step, name).await?.unwrap_or(false), true))
                    }
                    Err(e) => Err(sdk_error(step, e)),
                }
            }
        }
    })
    .await
}

/// The node group's instance types: the lab's, and for spot also its catalog alternatives with the
/// same GPUs ([`crate::catalog::InstanceType::spot_alternatives`]) that EC2 offers in the nodes' zone
/// (DescribeInstanceTypeOfferings), so a spot node finds capacity in more pools.
async fn node_instance_types(
    ctx: &Ctx<'_>,
    step: &str,
    zone: Option<&String>,
) -> Result<Vec<String>> {
    let instance = ctx.spec.instance;
    let mut types = vec![instance.name.to_string()];
    let mut alternatives: Vec<&str> = instance
        .spot_alternatives(&ctx.spec.spec.region)
        .iter()
        .map(|i| i.name)
        .collect();
    let (Capacity::Spot, Some(zone)) = (ctx.spec.nodes().capacity, zone) else {
        return Ok(types);
    };
    if alternatives.is_empty() {
        return Ok(types);
    }
    within_spot_quota(ctx, &mut alternatives).await;
    if alternatives.is_empty() {
        return Ok(types);
    }
    let out = ctx
        .c
        .ec2
        .describe_instance_type_offerings()
        .location_type(aws_sdk_ec2::types::LocationType::AvailabilityZone)
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("instance-type")
                .set_values(Some(alternatives.iter().map(|s| s.to_string()).collect()))
                .build(),
        )
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("location")
                .values(zone)
                .build(),
        )
        .send()
        .await
        .at(step)?;
    let offered: Vec<String> = out
        .instance_type_offerings()
        .iter()
        .filter_map(|o| o.instance_type().map(|t| t.as_str().to_string()))
        .collect();
    // In the catalog's order (cheapest first), only those offered where the nodes run.
    types.extend(
        alternatives
            .iter()
            .filter(|a| offered.iter().any(|o| o == *a))
            .map(|a| a.to_string()),
    );
    Ok(types)
}

/// Keep only the spot alternatives the account's spot vCPU quota has room for at `nodes.desired`: a
/// larger type counts more vCPUs against it than the preflight checked for the lab's own, and EC2 would
/// refuse those launches. A warning names what was left out. When the quota cannot be read (the
/// preflight warned already) all stay.
async fn within_spot_quota(ctx: &Ctx<'_>, alternatives: &mut Vec<&str>) {
    let code = super::preflight::quota_code(ctx.spec.instance.quota_class(), Capacity::Spot);
    let Ok((limit, _)) = super::preflight::read_quota(ctx, code).await else {
        return;
    };
    let desired = f64::from(ctx.spec.nodes().desired);
    let vcpus = |name: &str| crate::catalog::instance(name).map_or(0, |i| i.vcpus);
    let (fit, over): (Vec<&str>, Vec<&str>) = alternatives
        .iter()
        .partition(|a| f64::from(vcpus(a)) * desired <= limit);
    if !over.is_empty() {
        let listed: Vec<String> = over
            .iter()
            .map(|a| format!("{a} ({} vCPUs)", vcpus(a)))
            .collect();
        ctx.reporter.report(Event::Warning {
            message: format!(
                "spot: the node group leaves out {}: the quota \"{}\" ({}) allows {limit} vCPUs, too few for nodes.desired = {} of them; it takes {} and the types that fit. A larger quota lets spot find capacity in more pools",
                listed.join(", "),
                code.name,
                code.code,
                ctx.spec.nodes().desired,
                ctx.spec.instance.name,
            ),
        });
    }
    *alternatives = fit;
}

/// Give the lab's service account `account` (in the lab's namespace) `role` through EKS Pod Identity,
/// unless an association of the lab's exists. Returns the association's ID, or `None` when one that is
/// not the lab's exists: `user` then gets what that one gives, and a warning says so.
async fn ensure_pod_identity(
    ctx: &Ctx<'_>,
    step: &str,
    account: &str,
    role: &str,
    user: &str,
) -> Result<Option<String>> {
    let namespace = &ctx.spec.workspace().namespace;
    ctx.step(step, async {
        match find_pod_identity_association(ctx, step, namespace, account).await? {
            Found::Ours(id) => return Ok((Some(id), true)),
            Found::NotOurs => {
                ctx.reporter.report(Event::Warning {
                    message: format!(
                        "a Pod Identity association for {namespace}/{account} that is not this lab's exists: {user} use it as it is"
                    ),
                });
                return Ok((None, true));
            }
            Found::Absent => {}
        }
        let out = ctx
            .c
            .eks
            .create_pod_identity_association()
            .cluster_name(&ctx.names.cluster)
            .namespace(namespace)
            .service_account(account)
            .role_arn(role)
            .set_tags(Some(tags(ctx)))
            .send()
            .await
            .at(step)?;
        let id = out
            .association()
            .and_then(|a| a.association_id())
            .ok_or_else(|| missing(step, "associationId"))?
            .to_string();
        Ok((Some(id), false))
    })
    .await
}

/// The Pod Identity association of `namespace/service_account` in the lab's cluster (its ID), and
/// whether it is the lab's.
pub(crate) async fn find_pod_identity_association(
    ctx: &Ctx<'_>,
    step: &str,
    namespace: &str,
    service_account: &str,
) -> Result<Found<String>> {
    let eks = &ctx.c.eks;
    let listed = eks
        .list_pod_identity_associations()
        .cluster_name(&ctx.names.cluster)
        .namespace(namespace)
        .service_account(service_account)
        .send();
    let Some(out) = listed.await.unless_gone(step)? else {
        return Ok(Found::Absent);
    };
    let Some(id) = out
        .associations()
        .first()
        .and_then(|a| a.association_id())
        .map(str::to_string)
    else {
        return Ok(Found::Absent);
    };
    let described = eks
        .describe_pod_identity_association()
        .cluster_name(&ctx.names.cluster)
        .association_id(&id)
        .send()
        .await
        .at(step)?;
    Ok(
        if owns(ctx, described.association().and_then(|a| a.tags())) {
            Found::Ours(id)
        } else {
            Found::NotOurs
        },
    )
}

/// Whether addon `name` of the lab's cluster carries the lab's ID; `None` when it is not installed.
pub(crate) async fn addon_is_ours(ctx: &Ctx<'_>, step: &str, name: &str) -> Result<Option<bool>> {
    let described = ctx.c.eks.describe_addon().cluster_name(&ctx.names.cluster);
    let out = described.addon_name(name).send().await.unless_gone(step)?;
    Ok(out.map(|out| owns(ctx, out.addon().and_then(|a| a.tags()))))
}

/// Whether the access entry of `principal` in the lab's cluster carries the lab's ID (false when there
/// is none).
pub(crate) async fn access_entry_is_ours(
    ctx: &Ctx<'_>,
    step: &str,
    principal: &str,
) -> Result<bool> {
    let described = ctx
        .c
        .eks
        .describe_access_entry()
        .cluster_name(&ctx.names.cluster);
    let out = described
        .principal_arn(principal)
        .send()
        .await
        .unless_gone(step)?;
    Ok(out.is_some_and(|out| owns(ctx, out.access_entry().and_then(|a| a.tags()))))
}

/// Wait until the node group is ACTIVE (and, with `desired`, at that size).
async fn wait_node_group_active(ctx: &Ctx<'_>, step: &str, desired: Option<u32>) -> Result<()> {
    let ng = &ctx.names.node_group;
    ctx.wait(
        step,
        &format!("node group {ng} to become ACTIVE"),
        ctx.waits.node_group,
        || async {
            let out = match ctx
                .c
                .eks
                .describe_nodegroup()
                .cluster_name(&ctx.names.cluster)
                .nodegroup_name(ng)
                .send()
                .await
            {
                Ok(out) => out,
                Err(e) if is_not_found(&e) => {
                    return Ok(Some("node group not visible yet".into()));
                }
                Err(e) => return Err(sdk_error(step, e)),
            };
            let Some(group) = out.nodegroup() else {
                return Ok(Some("node group not visible yet".into()));
            };
            let status = group.status().cloned().unwrap_or(NodegroupStatus::Creating);
            match status {
                NodegroupStatus::Active => {}
                NodegroupStatus::CreateFailed | NodegroupStatus::Degraded => {
                    let issues: Vec<String> = group
                        .health()
                        .map(|h| {
                            h.issues()
                                .iter()
                                .map(|i| {
                                    format!(
                                        "{}: {}",
                                        i.code().map(|c| c.as_str()).unwrap_or("?"),
                                        i.message().unwrap_or_default()
                                    )
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    return Err(Error::Provision {
                        step: step.into(),
                        message: format!(
                            "node group {ng} is {}: {}",
                            status.as_str(),
                            if issues.is_empty() { "no details".to_string() } else { issues.join("; ") }
                        ),
                        hint: Some(
                            "InsufficientInstanceCapacity: try another region or node type, or spot/on-demand; `gpulab down` removes the lab".into(),
                        ),
                        cause: None,
                    });
                }
                other => return Ok(Some(format!("node group status {}", other.as_str()))),
            }
            if let Some(want) = desired {
                let have = group
                    .scaling_config()
                    .and_then(|s| s.desired_size())
                    .unwrap_or(-1);
                if have != want as i32 {
                    return Ok(Some(format!("node group desired size {have}, want {want}")));
                }
            }
            Ok(None)
        },
    )
    .await
}

/// How to reach the cluster: endpoint and CA from DescribeCluster, tokens made in-process. A cluster of
/// the lab's name that is not the lab's is never reached: its pods are not the lab's workspace.
pub(crate) async fn access(ctx: &Ctx<'_>) -> Result<ClusterAccess> {
    let step = "describe EKS cluster";
    let cluster = match find_cluster(ctx, step).await? {
        Found::Ours(cluster) => cluster,
        Found::NotOurs => {
            return Err(not_ours(ctx, &format!("EKS cluster {}", ctx.names.cluster)));
        }
        Found::Absent => {
            return Err(Error::Provision {
                step: step.into(),
                message: format!("no EKS cluster named {}", ctx.names.cluster),
                hint: Some("run `gpulab up` first".into()),
                cause: None,
            });
        }
    };
    let endpoint = cluster
        .endpoint()
        .ok_or_else(|| Error::Provision {
            step: step.into(),
            message: format!(
                "cluster {} has no endpoint yet (status {})",
                ctx.names.cluster,
                cluster.status().map(|s| s.as_str()).unwrap_or("?")
            ),
            hint: Some("rerun `gpulab up` to wait for it".into()),
            cause: None,
        })?
        .to_string();
    let ca_pem = match cluster.certificate_authority().and_then(|c| c.data()) {
        Some(data) => Some(
            base64::engine::general_purpose::STANDARD
                .decode(data.trim())
                .map_err(|e| Error::Provision {
                    step: step.into(),
                    message: format!("the cluster's certificate authority is not base64: {e}"),
                    hint: None,
                    cause: None,
                })?,
        ),
        None => None,
    };
    let tokens = super::token_source(ctx.c, &ctx.names.cluster)?;
    Ok(ClusterAccess {
        endpoint,
        ca_pem,
        auth: ClusterAuth::Token(tokens),
    })
}

/// What EKS and EC2 say of the lab now. A same-named cluster that is not the lab's is reported as such,
/// and nothing of it is read further.
pub(crate) async fn status(ctx: &Ctx<'_>) -> Result<ProvisionStatus> {
    let step = "read lab status";
    let absent = |cluster| ProvisionStatus {
        cluster,
        node_group: NodeGroupState::Absent,
        nodes_running: 0,
        created_at: None,
    };
    let cluster = match find_cluster(ctx, step).await? {
        Found::Absent => return Ok(absent(ClusterState::Absent)),
        Found::NotOurs => {
            return Ok(absent(ClusterState::NotOurs {
                name: ctx.names.cluster.clone(),
                missing_tag: format!("{LAB_ID_KEY}={}", ctx.id),
            }));
        }
        Found::Ours(cluster) => cluster,
    };
    let created_at = cluster
        .created_at()
        .and_then(|t| SystemTime::try_from(*t).ok());
    let cluster = ClusterState::Eks {
        status: cluster
            .status()
            .map_or_else(|| "UNKNOWN".into(), |s| s.as_str().to_string()),
    };
    let node_group = match find_node_group(ctx, step).await? {
        Found::Ours(n) => {
            let s = n.scaling_config();
            let size = |f: fn(&aws_sdk_eks::types::NodegroupScalingConfig) -> Option<i32>| {
                s.and_then(f).unwrap_or(0).max(0) as u32
            };
            NodeGroupState::Eks {
                status: n.status().map_or("UNKNOWN", |s| s.as_str()).to_string(),
                desired: size(|s| s.desired_size()),
                min: size(|s| s.min_size()),
                max: size(|s| s.max_size()),
            }
        }
        Found::NotOurs => NodeGroupState::NotOurs,
        Found::Absent => NodeGroupState::Absent,
    };
    let nodes_running = if !node_group.is_present() {
        0
    } else {
        let out = ctx
            .c
            .ec2
            .describe_instances()
            .filters(filter("tag:eks:cluster-name", &[&ctx.names.cluster]))
            .filters(filter("tag:eks:nodegroup-name", &[&ctx.names.node_group]))
            .filters(filter("instance-state-name", &["running"]))
            .send()
            .await
            .at(step)?;
        out.reservations()
            .iter()
            .map(|r| r.instances().len() as u32)
            .sum()
    };
    Ok(ProvisionStatus {
        cluster,
        node_group,
        nodes_running,
        created_at,
    })
}

/// Resize the node group to `desired`, lowering its minimum when needed, and wait until it is ACTIVE.
pub(crate) async fn scale(ctx: &Ctx<'_>, desired: u32) -> Result<()> {
    let step = format!("scale GPU nodes to {desired}");
    let nodes = ctx.spec.nodes();
    if desired > nodes.max {
        return Err(Error::Provision {
            step,
            message: format!("{desired} nodes is above nodes.max = {}", nodes.max),
            hint: Some(
                "raise nodes.max (and check the GPU vCPU quota with `gpulab up --preflight`)"
                    .into(),
            ),
            cause: None,
        });
    }
    ctx.step(&step, async {
        match find_node_group(ctx, &step).await? {
            Found::Ours(_) => {}
            Found::NotOurs => {
                return Err(not_ours(
                    ctx,
                    &format!("EKS node group {}", ctx.names.node_group),
                ));
            }
            Found::Absent => {
                return Err(Error::Provision {
                    step: step.clone(),
                    message: format!("node group {} does not exist", ctx.names.node_group),
                    hint: Some("run `gpulab up` first".into()),
                    cause: None,
                });
            }
        }
        // EKS refuses an update while the group is still changing.
        wait_node_group_active(ctx, &step, None).await?;
        ctx.c
            .eks
            .update_nodegroup_config()
            .cluster_name(&ctx.names.cluster)
            .nodegroup_name(&ctx.names.node_group)
            .scaling_config(
                NodegroupScalingConfig::builder()
                    .min_size(nodes.min.min(desired) as i32)
                    .max_size(nodes.max as i32)
                    .desired_size(desired as i32)
                    .build(),
            )
            .send()
            .await
            .map_err(|e| sdk_error(&step, e))?;
        wait_node_group_active(ctx, &step, Some(desired)).await?;
        Ok(((), false))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assumed_role_sessions_map_to_their_role() {
        assert_eq!(
            principal_arn("arn:aws:sts::123456789012:assumed-role/Admin/alice"),
            "arn:aws:iam::123456789012:role/Admin"
        );
        assert_eq!(
            principal_arn("arn:aws:iam::123456789012:user/bob"),
            "arn:aws:iam::123456789012:user/bob"
        );
    }

    #[test]
    fn node_ami_type_is_known_to_the_sdk() {
        assert_eq!(AmiTypes::from(NODE_AMI_TYPE), AmiTypes::Al2023X8664Nvidia);
    }
}
