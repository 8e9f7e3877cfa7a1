//! Teardown in dependency order, each step tolerating "already gone", then a sweep for anything that
//! still carries the lab's tag (or the `kubernetes.io/cluster/<name>` tag Kubernetes puts on the
//! volumes and load balancers it creates).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use aws_sdk_resourcegroupstagging::types::TagFilter;

use super::eks::{
    access_entry_is_ours, addon_is_ours, cluster_status, find_cluster, find_node_group,
    find_pod_identity_association, node_group_status,
};
use super::iam::{find_role, role_names};
use super::network::{cluster_tag_key, find_vpcs};
use super::sdk::{CallResult, error_code, is_already_exists, is_not_found, sdk_error};
use super::{Ctx, Found, filter, lab_filter};
use crate::events::Event;
use crate::naming::{LAB_ID_KEY, LAB_KEY, LabId};
use crate::provision::aws::ecr::RepositoryDeletion;
use crate::provision::{LeftAlone, ResourceKind, ResourceRef, TagSearch, TeardownReport};
use crate::{Error, Result};

fn r(kind: ResourceKind, id: &str) -> ResourceRef {
    ResourceRef::new(kind, id)
}

/// Failures of best-effort steps; teardown goes on past them so that one stuck resource does not keep
/// the rest alive (and billing).
struct Failures(Vec<String>);

impl Failures {
    /// Run `work`, a best-effort step that returns whether it found nothing to do, reporting it; on
    /// failure, warn and go on.
    async fn step(
        &mut self,
        ctx: &Ctx<'_>,
        step: &str,
        work: impl Future<Output = Result<bool>>,
    ) -> Result<()> {
        let result = ctx.step(step, async { Ok(((), work.await?)) }).await;
        self.check(ctx, step, result)
    }

    fn check(&mut self, ctx: &Ctx<'_>, step: &str, result: Result<()>) -> Result<()> {
        match result {
            Ok(()) => Ok(()),
            // Without credentials nothing else will work either.
            Err(e @ Error::Credentials { .. }) => Err(e),
            Err(e) => {
                // A provisioning error names its step already.
                let what = match &e {
                    Error::Provision { step: named, .. } if named == step => e.to_string(),
                    _ => format!("{step}: {e}"),
                };
                ctx.reporter.report(Event::Warning {
                    message: format!("{what}; continuing"),
                });
                self.0.push(what);
                Ok(())
            }
        }
    }
}

// The steps' futures are boxed: each holds many SDK calls, and inline they made `run`'s stack frame
// too large for a 2 MiB thread in debug builds (measured: 660 KiB for `run` alone).
pub(crate) async fn run(ctx: &Ctx<'_>) -> Result<TeardownReport> {
    let mut deleted: Vec<ResourceRef> = Vec::new();
    let mut left_alone: Vec<LeftAlone> = Vec::new();
    let mut failures = Failures(Vec::new());

    // The cluster decides for what lives in it: in a cluster of the lab's name that is not the lab's,
    // gpulab deletes nothing (not its node group, addons or access entries either).
    let step = "delete GPU node group";
    let mut cluster_is_ours = false;
    failures
        .step(ctx, step, async {
            match find_cluster(ctx, step).await? {
                Found::Absent => return Ok(true),
                Found::NotOurs => {
                    left_alone.push(alone(
                        ResourceKind::EksCluster,
                        &ctx.names.cluster,
                        &format!("it lacks {LAB_ID_KEY}={}; its node groups, addons and access entries are left alone too", ctx.id),
                    ));
                    return Ok(true);
                }
                Found::Ours(_) => cluster_is_ours = true,
            }
            match find_node_group(ctx, step).await? {
                Found::Absent => Ok(true),
                Found::NotOurs => {
                    left_alone.push(alone(
                        ResourceKind::EksNodegroup,
                        &ctx.names.node_group,
                        &format!("it lacks {LAB_ID_KEY}={}", ctx.id),
                    ));
                    Ok(true)
                }
                Found::Ours(_) => {
                    let found = Box::pin(delete_node_group(ctx, step)).await?;
                    if found {
                        deleted.push(r(ResourceKind::EksNodegroup, &ctx.names.node_group));
                    }
                    Ok(!found)
                }
            }
        })
        .await?;

    if cluster_is_ours {
        let step = "delete addons and access entries";
        failures
            .step(ctx, step, async {
                let n = Box::pin(delete_addons_and_access(ctx, step, &mut deleted)).await?;
                Ok(n == 0)
            })
            .await?;

        let step = "delete EKS cluster";
        failures
            .step(ctx, step, async {
                let found = Box::pin(delete_cluster(ctx, step)).await?;
                if found {
                    deleted.push(r(ResourceKind::EksCluster, &ctx.names.cluster));
                }
                Ok(!found)
            })
            .await?;
    }

    let step = "delete load balancers";
    failures
        .step(ctx, step, async {
            let any = Box::pin(super::load_balancers::delete_load_balancers(
                ctx,
                step,
                &mut deleted,
                &mut left_alone,
            ))
            .await?;
            Ok(!any)
        })
        .await?;

    let step = "delete network";
    failures
        .step(ctx, step, async {
            let before = deleted.len();
            Box::pin(delete_network(ctx, step, &mut deleted)).await?;
            Ok(deleted.len() == before)
        })
        .await?;

    let step = "delete IAM roles";
    failures
        .step(ctx, step, async {
            let mut any = false;
            for name in role_names(ctx) {
                match find_role(ctx, step, name).await? {
                    Found::Absent => {}
                    Found::NotOurs => left_alone.push(alone(
                        ResourceKind::IamRole,
                        name,
                        &format!("it lacks {LAB_ID_KEY}={}", ctx.id),
                    )),
                    Found::Ours(_) => {
                        if Box::pin(super::iam::delete_role(ctx, step, name)).await? {
                            deleted.push(r(ResourceKind::IamRole, name));
                            any = true;
                        }
                    }
                }
            }
            Ok(!any)
        })
        .await?;

    let step = "delete image repository";
    failures
        .step(ctx, step, async {
            let ecr = crate::provision::aws::ecr::EcrClient::new(&ctx.c.config)?;
            let name = gpulab_model::aws::repository_name(ctx.spec);
            Ok(
                match Box::pin(ecr.delete_owned_repository(&name, ctx.id)).await? {
                    RepositoryDeletion::Deleted => {
                        deleted.push(r(ResourceKind::EcrRepository, &name));
                        false
                    }
                    RepositoryDeletion::NotOurs => {
                        left_alone.push(alone(
                            ResourceKind::EcrRepository,
                            &name,
                            &format!("it lacks {LAB_ID_KEY}={}", ctx.id),
                        ));
                        true
                    }
                    RepositoryDeletion::Absent => true,
                },
            )
        })
        .await?;

    let step = "delete detached volumes";
    failures
        .step(ctx, step, async {
            let before = deleted.len();
            Box::pin(delete_volumes(ctx, step, &mut deleted, &mut left_alone)).await?;
            Ok(deleted.len() == before)
        })
        .await?;

    let step = "list leftovers";
    let leftovers = ctx
        .step(step, async {
            Ok((Box::pin(sweep(ctx, step, &mut left_alone)).await?, false))
        })
        .await?;
    // The sweep may find again what a step already left alone (by ARN there, by name here: one kind).
    let mut seen = BTreeSet::new();
    left_alone.retain(|a| seen.insert(a.resource.clone()));
    for thing in &left_alone {
        ctx.reporter.report(Event::Warning {
            message: thing.to_string(),
        });
    }
    if !failures.0.is_empty() && !leftovers.is_empty() {
        let names: Vec<String> = leftovers.iter().map(ToString::to_string).collect();
        return Err(Error::Provision {
            step: "teardown".into(),
            message: format!(
                "{}; still there: {}",
                failures.0.join("; "),
                names.join(", ")
            ),
            hint: Some(
                "rerun `gpulab down` (AWS releases some dependencies minutes after a cluster is deleted), or delete these by hand"
                    .into(),
            ),
            cause: None,
        });
    }
    Ok(TeardownReport {
        deleted,
        leftovers,
        left_alone,
    })
}

fn alone(kind: ResourceKind, id: &str, reason: &str) -> LeftAlone {
    LeftAlone {
        resource: r(kind, id),
        reason: reason.into(),
    }
}

async fn delete_node_group(ctx: &Ctx<'_>, step: &str) -> Result<bool> {
    match ctx
        .c
        .eks
        .delete_nodegroup()
        .cluster_name(&ctx.names.cluster)
        .nodegroup_name(&ctx.names.node_group)
        .send()
        .await
    {
        Ok(_) => {}
        Err(e) if is_not_found(&e) => return Ok(false),
        // Already deleting.
        Err(e) if is_already_exists(&e) => {}
        Err(e) => return Err(sdk_error(step, e)),
    }
    ctx.wait(
        step,
        &format!("node group {} to be deleted", ctx.names.node_group),
        ctx.waits.deletion,
        || async {
            Ok(match node_group_status(ctx, step).await? {
                None => None,
                Some(s) if s == "DELETE_FAILED" => {
                    return Err(Error::Provision {
                        step: step.into(),
                        message: format!("node group {} is DELETE_FAILED", ctx.names.node_group),
                        hint: Some("see its health issues in the EKS console, fix them, and rerun `gpulab down`".into()),
                        cause: None,
                    });
                }
                Some(s) => Some(format!("node group status {s}")),
            })
        },
    )
    .await?;
    Ok(true)
}

async fn delete_addons_and_access(
    ctx: &Ctx<'_>,
    step: &str,
    deleted: &mut Vec<ResourceRef>,
) -> Result<usize> {
    let eks = &ctx.c.eks;
    let cluster = &ctx.names.cluster;
    let mut n = 0;
    // The lab's own Pod Identity associations (an addon's go with the addon).
    let listed = eks
        .list_pod_identity_associations()
        .cluster_name(cluster)
        .send();
    let Some(associations) = listed.await.unless_gone(step)? else {
        return Ok(0);
    };
    let associations = associations.associations().to_vec();
    for association in associations {
        let (Some(namespace), Some(account), Some(id)) = (
            association.namespace(),
            association.service_account(),
            association.association_id(),
        ) else {
            continue;
        };
        if !matches!(
            find_pod_identity_association(ctx, step, namespace, account).await?,
            Found::Ours(_)
        ) || association.owner_arn().is_some()
        {
            continue;
        }
        let delete = eks.delete_pod_identity_association().cluster_name(cluster);
        if delete
            .association_id(id)
            .send()
            .await
            .unless_gone(step)?
            .is_some()
        {
            n += 1;
            deleted.push(r(ResourceKind::EksPodIdentityAssociation, id));
        }
    }
    let Some(addons) = eks
        .list_addons()
        .cluster_name(cluster)
        .send()
        .await
        .unless_gone(step)?
    else {
        return Ok(n);
    };
    let addons = addons.addons().to_vec();
    for addon in addons {
        // Only the lab's own; the rest go with the lab's cluster.
        if addon_is_ours(ctx, step, &addon).await? != Some(true) {
            continue;
        }
        match eks
            .delete_addon()
            .cluster_name(cluster)
            .addon_name(&addon)
            .send()
            .await
        {
            Ok(_) => {
                n += 1;
                deleted.push(r(ResourceKind::EksAddon, &addon));
            }
            Err(e) if is_not_found(&e) || is_already_exists(&e) => {}
            Err(e) => return Err(sdk_error(step, e)),
        }
    }
    let listed = eks.list_access_entries().cluster_name(cluster).send();
    let Some(entries) = listed.await.unless_gone(step)? else {
        return Ok(n);
    };
    let entries = entries.access_entries().to_vec();
    for principal in entries {
        if !access_entry_is_ours(ctx, step, &principal).await? {
            continue;
        }
        match eks
            .delete_access_entry()
            .cluster_name(cluster)
            .principal_arn(&principal)
            .send()
            .await
        {
            Ok(_) => {
                n += 1;
                deleted.push(r(ResourceKind::EksAccessEntry, &principal));
            }
            Err(e) if is_not_found(&e) => {}
            // EKS keeps the entries it manages itself; they go with the cluster.
            Err(e) if error_code(&e) == Some("InvalidRequestException") => {}
            Err(e) => return Err(sdk_error(step, e)),
        }
    }
    Ok(n)
}

async fn delete_cluster(ctx: &Ctx<'_>, step: &str) -> Result<bool> {
    match ctx
        .c
        .eks
        .delete_cluster()
        .name(&ctx.names.cluster)
        .send()
        .await
    {
        Ok(_) => {}
        Err(e) if is_not_found(&e) => return Ok(false),
        Err(e) if is_already_exists(&e) => {
            // ResourceInUse: deleting already, or something still depends on it.
            if cluster_status(ctx, step).await?.as_deref() != Some("DELETING") {
                return Err(sdk_error(step, e));
            }
        }
        Err(e) => return Err(sdk_error(step, e)),
    }
    ctx.wait(
        step,
        &format!("EKS cluster {} to be deleted", ctx.names.cluster),
        ctx.waits.deletion,
        || async {
            Ok(cluster_status(ctx, step)
                .await?
                .map(|s| format!("cluster status {s}")))
        },
    )
    .await?;
    Ok(true)
}

/// Run `op` until it succeeds or says "gone", retrying while AWS reports a dependency that is still
/// going away (ENIs of a deleted cluster linger for minutes).
async fn delete_with_retry<F, Fut>(ctx: &Ctx<'_>, step: &str, what: &str, mut op: F) -> Result<bool>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let deleted = AtomicBool::new(false);
    let fatal: Mutex<Option<Error>> = Mutex::new(None);
    ctx.wait(step, what, ctx.waits.deletion, || {
        let fut = op();
        let deleted = &deleted;
        let fatal = &fatal;
        async move {
            let result = fut.await;
            // A dependency still going away (a deleted cluster's ENIs linger for minutes) is waited
            // out; anything else but "gone" ends the wait.
            let in_use = result
                .as_ref()
                .err()
                .and_then(Error::api)
                .is_some_and(|api| {
                    matches!(
                        api.code.as_deref(),
                        Some(
                            "DependencyViolation"
                                | "InvalidNetworkInterface.InUse"
                                | "ResourceInUse"
                        )
                    )
                });
            match result {
                Ok(()) => {
                    deleted.store(true, Ordering::SeqCst);
                    Ok(None)
                }
                Err(e) if e.is_not_found() => Ok(None),
                Err(e) if in_use => Ok(Some(e.to_string())),
                Err(e) => {
                    *fatal.lock().expect("fatal lock") = Some(e);
                    Ok(None)
                }
            }
        }
    })
    .await?;
    match fatal.into_inner().expect("fatal lock") {
        Some(e) => Err(e),
        None => Ok(deleted.load(Ordering::SeqCst)),
    }
}

async fn delete_network(ctx: &Ctx<'_>, step: &str, deleted: &mut Vec<ResourceRef>) -> Result<()> {
    let ec2 = &ctx.c.ec2;
    for vpc in find_vpcs(ctx, step).await? {
        let vpc_f = || filter("vpc-id", &[&vpc]);

        // ENIs left behind (load balancers, the control plane, the VPC CNI).
        let out = ec2
            .describe_network_interfaces()
            .filters(vpc_f())
            .send()
            .await
            .at(step)?;
        for eni in out.network_interfaces() {
            let Some(id) = eni.network_interface_id() else {
                continue;
            };
            if let Some(att) = eni.attachment()
                && let Some(att_id) = att.attachment_id()
                && att.device_index() != Some(0)
            {
                // Requester-managed interfaces (load balancers, the EKS control plane) refuse to be
                // detached; they go when their owner does, which the delete below waits for.
                if let Err(e) = ec2
                    .detach_network_interface()
                    .attachment_id(att_id)
                    .force(true)
                    .send()
                    .await
                    && !is_not_found(&e)
                    && let err @ Error::Credentials { .. } = sdk_error(step, e)
                {
                    return Err(err);
                }
            }
            let gone = delete_with_retry(
                ctx,
                step,
                &format!("network interface {id} to be released"),
                || async {
                    ec2.delete_network_interface()
                        .network_interface_id(id)
                        .send()
                        .await
                        .map(drop)
                        .at(step)
                },
            )
            .await?;
            if gone {
                deleted.push(r(ResourceKind::NetworkInterface, id));
            }
        }

        // Security groups (not the VPC's default): rules first, since groups may refer to each other.
        let out = ec2
            .describe_security_groups()
            .filters(vpc_f())
            .send()
            .await
            .at(step)?;
        let groups: Vec<_> = out
            .security_groups()
            .iter()
            .filter(|g| g.group_name() != Some("default"))
            .cloned()
            .collect();
        for g in &groups {
            if !g.ip_permissions().is_empty() {
                ec2.revoke_security_group_ingress()
                    .group_id(g.group_id().unwrap_or_default())
                    .set_ip_permissions(Some(g.ip_permissions().to_vec()))
                    .send()
                    .await
                    .unless_gone(step)?;
            }
        }
        for g in &groups {
            let id = g.group_id().unwrap_or_default();
            if delete_with_retry(
                ctx,
                step,
                &format!("security group {id} to be free"),
                || async {
                    ec2.delete_security_group()
                        .group_id(id)
                        .send()
                        .await
                        .map(drop)
                        .at(step)
                },
            )
            .await?
            {
                deleted.push(r(ResourceKind::SecurityGroup, id));
            }
        }

        // Subnets.
        let out = ec2
            .describe_subnets()
            .filters(vpc_f())
            .send()
            .await
            .at(step)?;
        for s in out.subnets() {
            let id = s.subnet_id().unwrap_or_default();
            if delete_with_retry(ctx, step, &format!("subnet {id} to be free"), || async {
                ec2.delete_subnet()
                    .subnet_id(id)
                    .send()
                    .await
                    .map(drop)
                    .at(step)
            })
            .await?
            {
                deleted.push(r(ResourceKind::Subnet, id));
            }
        }

        // Route tables (not the main one) and their associations.
        let out = ec2
            .describe_route_tables()
            .filters(vpc_f())
            .send()
            .await
            .at(step)?;
        for rt in out.route_tables() {
            let main = rt.associations().iter().any(|a| a.main() == Some(true));
            if main {
                continue;
            }
            for a in rt.associations() {
                if let Some(aid) = a.route_table_association_id() {
                    ec2.disassociate_route_table()
                        .association_id(aid)
                        .send()
                        .await
                        .unless_gone(step)?;
                }
            }
            let id = rt.route_table_id().unwrap_or_default();
            if delete_with_retry(
                ctx,
                step,
                &format!("route table {id} to be free"),
                || async {
                    ec2.delete_route_table()
                        .route_table_id(id)
                        .send()
                        .await
                        .map(drop)
                        .at(step)
                },
            )
            .await?
            {
                deleted.push(r(ResourceKind::RouteTable, id));
            }
        }

        // Internet gateways attached to the VPC.
        let out = ec2
            .describe_internet_gateways()
            .filters(filter("attachment.vpc-id", &[&vpc]))
            .send()
            .await
            .at(step)?;
        for igw in out.internet_gateways() {
            let id = igw.internet_gateway_id().unwrap_or_default();
            delete_internet_gateway(ctx, step, id, &[vpc.as_str()], deleted).await?;
        }

        if delete_with_retry(ctx, step, &format!("VPC {vpc} to be free"), || async {
            ec2.delete_vpc()
                .vpc_id(&vpc)
                .send()
                .await
                .map(drop)
                .at(step)
        })
        .await?
        {
            deleted.push(r(ResourceKind::Vpc, &vpc));
        }
    }

    // Gateways created but never attached (a run stopped between the two calls).
    let out = ec2
        .describe_internet_gateways()
        .filters(lab_filter(ctx.id))
        .send()
        .await
        .at(step)?;
    for igw in out.internet_gateways() {
        let id = igw.internet_gateway_id().unwrap_or_default();
        let attached: Vec<&str> = igw
            .attachments()
            .iter()
            .filter_map(|a| a.vpc_id())
            .collect();
        delete_internet_gateway(ctx, step, id, &attached, deleted).await?;
    }
    Ok(())
}

/// Detach gateway `id` from `vpcs`, then delete it, each waiting out what still depends on it.
async fn delete_internet_gateway(
    ctx: &Ctx<'_>,
    step: &str,
    id: &str,
    vpcs: &[&str],
    deleted: &mut Vec<ResourceRef>,
) -> Result<()> {
    let ec2 = &ctx.c.ec2;
    for vpc in vpcs {
        let detach = || async {
            let call = ec2.detach_internet_gateway().internet_gateway_id(id);
            call.vpc_id(*vpc).send().await.map(drop).at(step)
        };
        let what = format!("internet gateway {id} to detach");
        delete_with_retry(ctx, step, &what, detach).await?;
    }
    let delete = || async {
        let call = ec2.delete_internet_gateway().internet_gateway_id(id);
        call.send().await.map(drop).at(step)
    };
    let what = format!("internet gateway {id} to be free");
    if delete_with_retry(ctx, step, &what, delete).await? {
        deleted.push(r(ResourceKind::InternetGateway, id));
    }
    Ok(())
}

/// Delete the lab's EBS volumes that nothing uses any more (the `/workspace` volume once its claim is
/// gone): those carrying the lab's ID, which the lab's StorageClass puts on every volume it provisions.
/// Detached volumes that carry only the cluster's Kubernetes tag (`kubernetes.io/cluster/<name>`) are a
/// same-named cluster's, or were made through a StorageClass that is not the lab's: left alone.
async fn delete_volumes(
    ctx: &Ctx<'_>,
    step: &str,
    deleted: &mut Vec<ResourceRef>,
    left_alone: &mut Vec<LeftAlone>,
) -> Result<()> {
    let ec2 = &ctx.c.ec2;
    let available = || filter("status", &["available"]);
    let ours = ec2
        .describe_volumes()
        .filters(lab_filter(ctx.id))
        .filters(available())
        .send()
        .await
        .at(step)?;
    for id in ours.volumes().iter().filter_map(|v| v.volume_id()) {
        if ec2
            .delete_volume()
            .volume_id(id)
            .send()
            .await
            .unless_gone(step)?
            .is_some()
        {
            deleted.push(r(ResourceKind::EbsVolume, id));
        }
    }
    let same_cluster_name = ec2
        .describe_volumes()
        .filters(filter("tag-key", &[&cluster_tag_key(&ctx.names.cluster)]))
        .filters(available())
        .send()
        .await
        .at(step)?;
    for volume in same_cluster_name.volumes() {
        let tags = volume
            .tags()
            .iter()
            .filter_map(|t| Some((t.key()?, t.value()?)));
        if let Some(id) = volume.volume_id()
            && !ctx.owns(tags)
        {
            left_alone.push(alone(
                ResourceKind::EbsVolume,
                id,
                &format!(
                    "it carries {} but not {LAB_ID_KEY}={}; if it holds data you no longer need, delete it in the EC2 console",
                    cluster_tag_key(&ctx.names.cluster),
                    ctx.id
                ),
            ));
        }
    }
    Ok(())
}

/// A resource from its ARN: kind "service:type", id the last part.
fn from_arn(arn: &str) -> ResourceRef {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    if parts.len() == 6 {
        let service = parts[2];
        let resource = parts[5];
        let (rtype, id) = resource
            .split_once('/')
            .or_else(|| resource.split_once(':'))
            .unwrap_or(("", resource));
        return r(
            ResourceKind::from_arn_type(&format!("{service}:{rtype}")),
            id,
        );
    }
    // Not an ARN after all; kept whole, so the report still names it.
    r(ResourceKind::OtherAws("arn:".into()), arn)
}

/// Everything still carrying the lab's ID: the Resource Groups Tagging API (EC2, EKS, ELB, ECR, ...),
/// plus IAM and EKS by name (the tagging API does not cover IAM roles). What carries the lab's name tag
/// but another ID (another machine's lab of the same name) is added to `left_alone`.
pub(crate) async fn sweep(
    ctx: &Ctx<'_>,
    step: &str,
    left_alone: &mut Vec<LeftAlone>,
) -> Result<Vec<ResourceRef>> {
    let mut seen = BTreeSet::new();
    let mut left = Vec::new();
    let by_name = TagFilter::builder().key(LAB_KEY).values(ctx.lab()).build();
    let mut token: Option<String> = None;
    loop {
        let out = ctx
            .c
            .tagging
            .get_resources()
            .tag_filters(by_name.clone())
            .set_pagination_token(token.take())
            .send()
            .await
            .at(step)?;
        for m in out.resource_tag_mapping_list() {
            let Some(arn) = m.resource_arn() else {
                continue;
            };
            if !seen.insert(arn.to_string()) {
                continue;
            }
            let ours = ctx.owns(m.tags().iter().map(|t| (t.key(), t.value())));
            if ours {
                left.push(from_arn(arn));
            } else {
                let other = m
                    .tags()
                    .iter()
                    .find(|t| t.key() == LAB_ID_KEY)
                    .map(|t| format!("another lab of the same name, ID {}", t.value()))
                    .unwrap_or_else(|| format!("it lacks {LAB_ID_KEY}"));
                let resource = from_arn(arn);
                left_alone.push(LeftAlone {
                    reason: other,
                    resource,
                });
            }
        }
        match out.pagination_token() {
            Some(t) if !t.is_empty() => token = Some(t.to_string()),
            _ => break,
        }
    }
    for name in role_names(ctx) {
        if matches!(find_role(ctx, step, name).await?, Found::Ours(_)) {
            left.push(r(ResourceKind::IamRole, name));
        }
    }
    if matches!(find_cluster(ctx, step).await?, Found::Ours(_))
        && !left
            .iter()
            .any(|x| x.kind == ResourceKind::EksCluster && x.id == ctx.names.cluster)
    {
        left.push(r(ResourceKind::EksCluster, &ctx.names.cluster));
    }
    Ok(left)
}

/// Labs of the context's name, by their tags (see [`super::find_by_tag`]).
pub(crate) async fn find_by_tag(ctx: &Ctx<'_>) -> Result<TagSearch> {
    let step = "find the lab by its tags";
    let mut labs: BTreeMap<LabId, Vec<ResourceRef>> = BTreeMap::new();
    let mut not_gpulab = Vec::new();
    let mut file = |resource: ResourceRef, id: Option<&str>| match id.map(LabId::parse) {
        Some(Ok(id)) => labs.entry(id).or_default().push(resource),
        _ => not_gpulab.push(resource),
    };
    // Everything the tagging API covers (EC2, EKS, ECR, ELB), by the lab's name tag.
    let by_name = TagFilter::builder().key(LAB_KEY).values(ctx.lab()).build();
    let mut token: Option<String> = None;
    loop {
        let out = ctx
            .c
            .tagging
            .get_resources()
            .tag_filters(by_name.clone())
            .set_pagination_token(token.take())
            .send()
            .await
            .at(step)?;
        for m in out.resource_tag_mapping_list() {
            if let Some(arn) = m.resource_arn() {
                let id = m.tags().iter().find(|t| t.key() == LAB_ID_KEY);
                file(from_arn(arn), id.map(|t| t.value()));
            }
        }
        match out.pagination_token() {
            Some(t) if !t.is_empty() => token = Some(t.to_string()),
            _ => break,
        }
    }
    // The cluster, by name (a cluster another tool made carries no gpulab tag at all).
    if let Ok(out) = ctx
        .c
        .eks
        .describe_cluster()
        .name(&ctx.names.cluster)
        .send()
        .await
        && let Some(cluster) = out.cluster()
    {
        let id = cluster.tags().and_then(|t| t.get(LAB_ID_KEY));
        file(
            r(ResourceKind::EksCluster, &ctx.names.cluster),
            id.map(String::as_str),
        );
    }
    // IAM roles, which the tagging API does not cover.
    for name in role_names(ctx) {
        let found = ctx.c.iam.get_role().role_name(name).send().await;
        if let Some(out) = found.unless_gone(step)?
            && let Some(role) = out.role()
        {
            let id = role.tags().iter().find(|t| t.key() == LAB_ID_KEY);
            file(r(ResourceKind::IamRole, name), id.map(|t| t.value()));
        }
    }
    // The same resource may be found by its tag and by its name.
    for resources in labs.values_mut() {
        let mut seen = BTreeSet::new();
        resources.retain(|x| seen.insert(x.clone()));
    }
    let mut seen = BTreeSet::new();
    not_gpulab.retain(|x| seen.insert(x.clone()));
    Ok(TagSearch {
        labs: labs.into_iter().collect(),
        not_gpulab,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arns_become_kinds_and_ids() {
        assert_eq!(
            from_arn("arn:aws:ec2:us-west-2:123:vpc/vpc-1"),
            r(ResourceKind::Vpc, "vpc-1")
        );
        assert_eq!(
            from_arn("arn:aws:eks:us-west-2:123:cluster/lab"),
            r(ResourceKind::EksCluster, "lab")
        );
        assert_eq!(
            from_arn("arn:aws:elasticloadbalancing:us-west-2:123:loadbalancer/net/a/b"),
            r(ResourceKind::LoadBalancer, "net/a/b")
        );
        assert_eq!(
            from_arn("arn:aws:s3:::a-bucket"),
            r(ResourceKind::OtherAws("s3:".into()), "a-bucket")
        );
    }
}
