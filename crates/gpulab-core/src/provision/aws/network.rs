//! The lab's network: a VPC with DNS on, two public subnets in two zones, an internet gateway, a public
//! route table and one security group that admits only itself. No NAT gateway.

use std::collections::BTreeMap;
use std::future::Future;

use aws_sdk_ec2::types::{
    AttributeBooleanValue, IpPermission, ResourceType, Subnet, Tag, TagSpecification,
    UserIdGroupPair,
};

use super::preflight::Zones;
use super::sdk::{CallResult, created_id, missing};
use super::{Ctx, ProvisionStep, StepCounter, filter, lab_filter};
use crate::Result;
use crate::provision::{ResourceKind, ResourceRef};
use gpulab_model::aws::{SUBNET_CIDRS, VPC_CIDR};

/// What the EKS steps need from the network.
pub(crate) struct Network {
    pub(crate) vpc_id: String,
    /// The public subnets; the first is in a zone that offers the node type (the node group's).
    pub(crate) subnet_ids: Vec<String>,
    pub(crate) security_group_id: String,
}

/// The tag `kubernetes.io/cluster/<cluster>` that Kubernetes' cloud integrations look for.
pub(crate) fn cluster_tag_key(cluster: &str) -> String {
    format!("kubernetes.io/cluster/{cluster}")
}

fn tag_spec(
    ctx: &Ctx<'_>,
    resource_type: ResourceType,
    name: &str,
    extra: &[(String, String)],
) -> TagSpecification {
    let mut tags: BTreeMap<String, String> = ctx.tags();
    tags.insert("Name".into(), name.into());
    for (k, v) in extra {
        tags.insert(k.clone(), v.clone());
    }
    TagSpecification::builder()
        .resource_type(resource_type)
        .set_tags(Some(
            tags.into_iter()
                .map(|(k, v)| Tag::builder().key(k).value(v).build())
                .collect(),
        ))
        .build()
}

fn on() -> AttributeBooleanValue {
    AttributeBooleanValue::builder().value(true).build()
}

/// The lab's VPCs (normally one), by its ID tag, sorted by id. Everything inside them is the lab's.
pub(crate) async fn find_vpcs(ctx: &Ctx<'_>, step: &str) -> Result<Vec<String>> {
    let out = ctx
        .c
        .ec2
        .describe_vpcs()
        .filters(lab_filter(ctx.id))
        .send()
        .await
        .at(step)?;
    let mut ids: Vec<String> = out
        .vpcs()
        .iter()
        .filter_map(|v| v.vpc_id().map(str::to_owned))
        .collect();
    ids.sort();
    Ok(ids)
}

/// Delete the lab's subnets in `vpc_id` that lie outside `valid` (the zones EKS named when it refused
/// one for the control plane), so that the next [`converge`] makes them again in zones it accepts. The
/// cluster was not created, so nothing runs in them yet. Returns the zones of the subnets deleted.
pub(crate) async fn drop_subnets_outside(
    ctx: &Ctx<'_>,
    vpc_id: &str,
    valid: &[String],
) -> Result<Vec<String>> {
    let step = ProvisionStep::Subnets.name();
    let out = ctx
        .c
        .ec2
        .describe_subnets()
        .filters(filter("vpc-id", &[vpc_id]))
        .filters(lab_filter(ctx.id))
        .send()
        .await
        .at(step)?;
    let mut dropped = Vec::new();
    for subnet in out.subnets() {
        let (Some(id), Some(zone)) = (subnet.subnet_id(), subnet.availability_zone()) else {
            continue;
        };
        if valid.iter().any(|v| v == zone) {
            continue;
        }
        let deleted = ctx.c.ec2.delete_subnet().subnet_id(id).send().await;
        deleted.unless_gone(step)?;
        dropped.push(zone.to_string());
    }
    Ok(dropped)
}

/// Find-or-create: the lab's existing resource (its id and what the step read from it), else the id
/// `create` answers with. `create` is a future, so it runs only when nothing was found.
async fn find_or_create<T: Default>(
    found: Option<(String, T)>,
    create: impl Future<Output = Result<String>>,
) -> Result<FoundOrCreated<T>> {
    Ok(match found {
        Some((id, seen)) => FoundOrCreated {
            id,
            seen,
            existed: true,
        },
        None => FoundOrCreated {
            id: create.await?,
            seen: T::default(),
            existed: false,
        },
    })
}

/// One network resource after [`find_or_create`].
struct FoundOrCreated<T> {
    id: String,
    /// What the step read from the existing resource (its default when just created).
    seen: T,
    existed: bool,
}

/// Create (or find) every network resource, one step each. Each step is rerunnable: it finds the
/// lab's resource by its tags (or name), creates what is missing, and repairs attributes, routes,
/// associations and rules an interrupted run left out.
pub(crate) async fn converge(
    ctx: &Ctx<'_>,
    zones: &Zones,
    counter: &StepCounter,
    resources: &mut Vec<ResourceRef>,
) -> Result<Network> {
    let ec2 = &ctx.c.ec2;
    let lab = ctx.lab().to_string();
    let mut record = |kind, id: &str| resources.push(ResourceRef::new(kind, id));

    // VPC, with DNS support and host names on: EKS nodes cannot register without both.
    let step = ProvisionStep::Vpc.name();
    let vpc_id = ctx
        .step(step, async {
            let found = find_vpcs(ctx, step).await?.into_iter().next();
            let vpc = find_or_create(found.map(|id| (id, ())), async {
                let out = ec2
                    .create_vpc()
                    .cidr_block(VPC_CIDR)
                    .tag_specifications(tag_spec(ctx, ResourceType::Vpc, &ctx.names.vpc, &[]))
                    .send()
                    .await
                    .at(step)?;
                created_id(step, out.vpc().and_then(|v| v.vpc_id()), "VpcId")
            })
            .await?;
            let dns_support = ec2.modify_vpc_attribute().vpc_id(&vpc.id);
            dns_support.enable_dns_support(on()).send().await.at(step)?;
            let dns_hostnames = ec2.modify_vpc_attribute().vpc_id(&vpc.id);
            dns_hostnames
                .enable_dns_hostnames(on())
                .send()
                .await
                .at(step)?;
            Ok((vpc.id, vpc.existed))
        })
        .await?;
    record(ResourceKind::Vpc, &vpc_id);
    counter.finished()?;

    // Subnets: SUBNET_CIDRS in two zones, public addresses on launch.
    let step = ProvisionStep::Subnets.name();
    let subnet_ids = ctx
        .step(step, async {
            let out = ec2
                .describe_subnets()
                .filters(filter("vpc-id", &[&vpc_id]))
                .send()
                .await
                .at(step)?;
            let existing = out.subnets().to_vec();
            let found: Vec<Option<&Subnet>> = SUBNET_CIDRS
                .iter()
                .map(|cidr| existing.iter().find(|s| s.cidr_block() == Some(cidr)))
                .collect();
            // Zones already taken by the lab's subnets; a new one goes in another zone (the first
            // subnet, the node group's, in a zone offering the node type).
            let mut taken: Vec<String> = found
                .iter()
                .flatten()
                .filter_map(|s| s.availability_zone().map(str::to_owned))
                .collect();
            let mut ids = Vec::new();
            let mut all_existed = true;
            for (i, cidr) in SUBNET_CIDRS.iter().enumerate() {
                let seen = found[i].map(|s| {
                    let id = s.subnet_id().unwrap_or_default().to_string();
                    (id, s.map_public_ip_on_launch() == Some(true))
                });
                let subnet = find_or_create(seen, async {
                    let zone = if i == 0 {
                        zones.offering.iter().find(|z| !taken.contains(z))
                    } else {
                        zones.all().find(|z| !taken.contains(z))
                    }
                    .ok_or_else(|| missing(step, "a free availability zone"))?
                    .clone();
                    taken.push(zone.clone());
                    let extra = [
                        ("kubernetes.io/role/elb".to_string(), "1".to_string()),
                        (cluster_tag_key(&ctx.names.cluster), "shared".to_string()),
                    ];
                    let out = ec2
                        .create_subnet()
                        .vpc_id(&vpc_id)
                        .cidr_block(*cidr)
                        .availability_zone(&zone)
                        .tag_specifications(tag_spec(
                            ctx,
                            ResourceType::Subnet,
                            &format!("{lab}-public-{}", i + 1),
                            &extra,
                        ))
                        .send()
                        .await
                        .at(step)?;
                    created_id(step, out.subnet().and_then(|s| s.subnet_id()), "SubnetId")
                })
                .await?;
                let public = subnet.seen;
                if !public {
                    let attribute = ec2.modify_subnet_attribute().subnet_id(&subnet.id);
                    attribute
                        .map_public_ip_on_launch(on())
                        .send()
                        .await
                        .at(step)?;
                }
                all_existed &= subnet.existed && public;
                ids.push(subnet.id);
            }
            Ok((ids, all_existed))
        })
        .await?;
    for id in &subnet_ids {
        record(ResourceKind::Subnet, id);
    }
    counter.finished()?;

    // Internet gateway, attached to the VPC.
    let step = ProvisionStep::InternetGateway.name();
    let igw_id = ctx
        .step(step, async {
            let out = ec2
                .describe_internet_gateways()
                .filters(lab_filter(ctx.id))
                .send()
                .await
                .at(step)?;
            let seen = out.internet_gateways().first().map(|igw| {
                let id = igw.internet_gateway_id().unwrap_or_default().to_string();
                let attachments = igw.attachments();
                (
                    id,
                    attachments
                        .iter()
                        .any(|a| a.vpc_id() == Some(vpc_id.as_str())),
                )
            });
            let igw = find_or_create(seen, async {
                let out = ec2
                    .create_internet_gateway()
                    .tag_specifications(tag_spec(
                        ctx,
                        ResourceType::InternetGateway,
                        &format!("{lab}-igw"),
                        &[],
                    ))
                    .send()
                    .await
                    .at(step)?;
                let id = out.internet_gateway().and_then(|g| g.internet_gateway_id());
                created_id(step, id, "InternetGatewayId")
            })
            .await?;
            let attached = igw.seen;
            if !attached {
                let attach = ec2.attach_internet_gateway().internet_gateway_id(&igw.id);
                attach.vpc_id(&vpc_id).send().await.unless_exists(step)?;
            }
            Ok((igw.id, igw.existed && attached))
        })
        .await?;
    record(ResourceKind::InternetGateway, &igw_id);
    counter.finished()?;

    // Route table: the default route to the gateway, associated with every subnet.
    let step = ProvisionStep::RouteTable.name();
    let rt_id = ctx
        .step(step, async {
            let out = ec2
                .describe_route_tables()
                .filters(filter("vpc-id", &[&vpc_id]))
                .filters(lab_filter(ctx.id))
                .send()
                .await
                .at(step)?;
            let seen = out.route_tables().first().map(|rt| {
                let id = rt.route_table_id().unwrap_or_default().to_string();
                let associated: Vec<String> = rt
                    .associations()
                    .iter()
                    .filter_map(|a| a.subnet_id().map(str::to_owned))
                    .collect();
                (id, (rt.routes().to_vec(), associated))
            });
            let table = find_or_create(seen, async {
                let out = ec2
                    .create_route_table()
                    .vpc_id(&vpc_id)
                    .tag_specifications(tag_spec(
                        ctx,
                        ResourceType::RouteTable,
                        &format!("{lab}-public"),
                        &[],
                    ))
                    .send()
                    .await
                    .at(step)?;
                let id = out.route_table().and_then(|r| r.route_table_id());
                created_id(step, id, "RouteTableId")
            })
            .await?;
            let (routes, associated) = &table.seen;
            let mut done = table.existed;
            let default_route = routes
                .iter()
                .find(|r| r.destination_cidr_block() == Some("0.0.0.0/0"));
            match default_route.map(|r| r.gateway_id() == Some(igw_id.as_str())) {
                Some(true) => {}
                Some(false) => {
                    done = false;
                    ec2.replace_route()
                        .route_table_id(&table.id)
                        .destination_cidr_block("0.0.0.0/0")
                        .gateway_id(&igw_id)
                        .send()
                        .await
                        .at(step)?;
                }
                None => {
                    done = false;
                    ec2.create_route()
                        .route_table_id(&table.id)
                        .destination_cidr_block("0.0.0.0/0")
                        .gateway_id(&igw_id)
                        .send()
                        .await
                        .unless_exists(step)?;
                }
            }
            for subnet in subnet_ids.iter().filter(|s| !associated.contains(s)) {
                done = false;
                let associate = ec2.associate_route_table().route_table_id(&table.id);
                associate
                    .subnet_id(subnet)
                    .send()
                    .await
                    .unless_exists(step)?;
            }
            Ok((table.id, done))
        })
        .await?;
    record(ResourceKind::RouteTable, &rt_id);
    counter.finished()?;

    // Security group: admits only itself (the control plane and the nodes), nothing from outside.
    let step = ProvisionStep::SecurityGroup.name();
    let sg_name = ctx.names.node_security_group.clone();
    let sg_id = ctx
        .step(step, async {
            let out = ec2
                .describe_security_groups()
                .filters(filter("vpc-id", &[&vpc_id]))
                .filters(filter("group-name", &[&sg_name]))
                .send()
                .await
                .at(step)?;
            let seen = out.security_groups().first().map(|sg| {
                let id = sg.group_id().unwrap_or_default().to_string();
                let self_rule = sg.ip_permissions().iter().any(|p| {
                    p.user_id_group_pairs()
                        .iter()
                        .any(|g| g.group_id() == Some(id.as_str()))
                });
                (id, self_rule)
            });
            let group = find_or_create(seen, async {
                let out = ec2
                    .create_security_group()
                    .group_name(&sg_name)
                    .description(format!(
                        "gpulab lab {lab}: EKS control plane and GPU nodes; admits only itself"
                    ))
                    .vpc_id(&vpc_id)
                    .tag_specifications(tag_spec(ctx, ResourceType::SecurityGroup, &sg_name, &[]))
                    .send()
                    .await
                    .at(step)?;
                created_id(step, out.group_id(), "GroupId")
            })
            .await?;
            let self_rule = group.seen;
            if !self_rule {
                ec2.authorize_security_group_ingress()
                    .group_id(&group.id)
                    .ip_permissions(
                        IpPermission::builder()
                            .ip_protocol("-1")
                            .user_id_group_pairs(
                                UserIdGroupPair::builder().group_id(&group.id).build(),
                            )
                            .build(),
                    )
                    .send()
                    .await
                    .unless_exists(step)?;
            }
            Ok((group.id, group.existed && self_rule))
        })
        .await?;
    record(ResourceKind::SecurityGroup, &sg_id);
    counter.finished()?;

    Ok(Network {
        vpc_id,
        subnet_ids,
        security_group_id: sg_id,
    })
}
