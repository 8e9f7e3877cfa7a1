//! The lab's network: a VPC with DNS on, two public subnets in two zones, an internet gateway, a public
//! route table and one security group that admits only itself. No NAT gateway.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{
    AttributeBooleanValue, IpPermission, ResourceType, Subnet, Tag, TagSpecification,
    UserIdGroupPair,
};

use super::preflight::Zones;
use super::sdk::{is_already_exists, sdk_error};
use super::{Ctx, ProvisionStep, StepCounter, filter, lab_filter};
use crate::provision::ResourceRef;
use crate::{Error, Result};
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
        .map_err(|e| sdk_error(step, e))?;
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
        .map_err(|e| sdk_error(step, e))?;
    let mut dropped = Vec::new();
    for subnet in out.subnets() {
        let (Some(id), Some(zone)) = (subnet.subnet_id(), subnet.availability_zone()) else {
            continue;
        };
        if valid.iter().any(|v| v == zone) {
            continue;
        }
        ctx.c
            .ec2
            .delete_subnet()
            .subnet_id(id)
            .send()
            .await
            .map_err(|e| sdk_error(step, e))?;
        dropped.push(zone.to_string());
    }
    Ok(dropped)
}

/// Create (or find) every network resource, one step each.
pub(crate) async fn converge(
    ctx: &Ctx<'_>,
    zones: &Zones,
    counter: &StepCounter,
    resources: &mut Vec<ResourceRef>,
) -> Result<Network> {
    let ec2 = &ctx.c.ec2;
    let lab = ctx.lab().to_string();

    // VPC
    let step = ProvisionStep::Vpc.name();
    let vpc_id = ctx
        .step(step, async {
            let found = find_vpcs(ctx, step).await?.into_iter().next();
            let (id, existed) = match found {
                Some(id) => (id, true),
                None => {
                    let out = ec2
                        .create_vpc()
                        .cidr_block(VPC_CIDR)
                        .tag_specifications(tag_spec(ctx, ResourceType::Vpc, &ctx.names.vpc, &[]))
                        .send()
                        .await
                        .map_err(|e| sdk_error(step, e))?;
                    let id = out
                        .vpc()
                        .and_then(|v| v.vpc_id())
                        .ok_or_else(|| missing(step, "VpcId"))?
                        .to_string();
                    (id, false)
                }
            };
            ec2.modify_vpc_attribute()
                .vpc_id(&id)
                .enable_dns_support(on())
                .send()
                .await
                .map_err(|e| sdk_error(step, e))?;
            ec2.modify_vpc_attribute()
                .vpc_id(&id)
                .enable_dns_hostnames(on())
                .send()
                .await
                .map_err(|e| sdk_error(step, e))?;
            Ok((id, existed))
        })
        .await?;
    resources.push(ResourceRef {
        kind: "vpc".into(),
        id: vpc_id.clone(),
    });
    counter.finished()?;

    // Subnets
    let step = ProvisionStep::Subnets.name();
    let subnet_ids = ctx
        .step(step, async {
            let out = ec2
                .describe_subnets()
                .filters(filter("vpc-id", &[&vpc_id]))
                .send()
                .await
                .map_err(|e| sdk_error(step, e))?;
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
                let (id, public) = match found[i] {
                    Some(s) => (
                        s.subnet_id().unwrap_or_default().to_string(),
                        s.map_public_ip_on_launch() == Some(true),
                    ),
                    None => {
                        all_existed = false;
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
                            .map_err(|e| sdk_error(step, e))?;
                        let id = out
                            .subnet()
                            .and_then(|s| s.subnet_id())
                            .ok_or_else(|| missing(step, "SubnetId"))?
                            .to_string();
                        (id, false)
                    }
                };
                if !public {
                    all_existed = false;
                    ec2.modify_subnet_attribute()
                        .subnet_id(&id)
                        .map_public_ip_on_launch(on())
                        .send()
                        .await
                        .map_err(|e| sdk_error(step, e))?;
                }
                ids.push(id);
            }
            Ok((ids, all_existed))
        })
        .await?;
    for id in &subnet_ids {
        resources.push(ResourceRef {
            kind: "subnet".into(),
            id: id.clone(),
        });
    }
    counter.finished()?;

    // Internet gateway
    let step = ProvisionStep::InternetGateway.name();
    let igw_id = ctx
        .step(step, async {
            let out = ec2
                .describe_internet_gateways()
                .filters(lab_filter(ctx.id))
                .send()
                .await
                .map_err(|e| sdk_error(step, e))?;
            let mut done = true;
            let (id, attached) = match out.internet_gateways().first() {
                Some(igw) => (
                    igw.internet_gateway_id().unwrap_or_default().to_string(),
                    igw.attachments()
                        .iter()
                        .any(|a| a.vpc_id() == Some(vpc_id.as_str())),
                ),
                None => {
                    done = false;
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
                        .map_err(|e| sdk_error(step, e))?;
                    let id = out
                        .internet_gateway()
                        .and_then(|g| g.internet_gateway_id())
                        .ok_or_else(|| missing(step, "InternetGatewayId"))?
                        .to_string();
                    (id, false)
                }
            };
            if !attached {
                done = false;
                match ec2
                    .attach_internet_gateway()
                    .internet_gateway_id(&id)
                    .vpc_id(&vpc_id)
                    .send()
                    .await
                {
                    Ok(_) => {}
                    Err(e) if is_already_exists(&e) => {}
                    Err(e) => return Err(sdk_error(step, e)),
                }
            }
            Ok((id, done))
        })
        .await?;
    resources.push(ResourceRef {
        kind: "internet-gateway".into(),
        id: igw_id.clone(),
    });
    counter.finished()?;

    // Route table
    let step = ProvisionStep::RouteTable.name();
    let rt_id = ctx
        .step(step, async {
            let out = ec2
                .describe_route_tables()
                .filters(filter("vpc-id", &[&vpc_id]))
                .filters(lab_filter(ctx.id))
                .send()
                .await
                .map_err(|e| sdk_error(step, e))?;
            let mut done = true;
            let (id, routes, associated) = match out.route_tables().first() {
                Some(rt) => (
                    rt.route_table_id().unwrap_or_default().to_string(),
                    rt.routes().to_vec(),
                    rt.associations()
                        .iter()
                        .filter_map(|a| a.subnet_id().map(str::to_owned))
                        .collect::<Vec<_>>(),
                ),
                None => {
                    done = false;
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
                        .map_err(|e| sdk_error(step, e))?;
                    let id = out
                        .route_table()
                        .and_then(|r| r.route_table_id())
                        .ok_or_else(|| missing(step, "RouteTableId"))?
                        .to_string();
                    (id, Vec::new(), Vec::new())
                }
            };
            let default_route = routes
                .iter()
                .find(|r| r.destination_cidr_block() == Some("0.0.0.0/0"));
            match default_route.map(|r| r.gateway_id() == Some(igw_id.as_str())) {
                Some(true) => {}
                Some(false) => {
                    done = false;
                    ec2.replace_route()
                        .route_table_id(&id)
                        .destination_cidr_block("0.0.0.0/0")
                        .gateway_id(&igw_id)
                        .send()
                        .await
                        .map_err(|e| sdk_error(step, e))?;
                }
                None => {
                    done = false;
                    match ec2
                        .create_route()
                        .route_table_id(&id)
                        .destination_cidr_block("0.0.0.0/0")
                        .gateway_id(&igw_id)
                        .send()
                        .await
                    {
                        Ok(_) => {}
                        Err(e) if is_already_exists(&e) => {}
                        Err(e) => return Err(sdk_error(step, e)),
                    }
                }
            }
            for subnet in &subnet_ids {
                if associated.contains(subnet) {
                    continue;
                }
                done = false;
                match ec2
                    .associate_route_table()
                    .route_table_id(&id)
                    .subnet_id(subnet)
                    .send()
                    .await
                {
                    Ok(_) => {}
                    Err(e) if is_already_exists(&e) => {}
                    Err(e) => return Err(sdk_error(step, e)),
                }
            }
            Ok((id, done))
        })
        .await?;
    resources.push(ResourceRef {
        kind: "route-table".into(),
        id: rt_id,
    });
    counter.finished()?;

    // Security group
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
                .map_err(|e| sdk_error(step, e))?;
            let mut done = true;
            let (id, self_rule) = match out.security_groups().first() {
                Some(sg) => {
                    let id = sg.group_id().unwrap_or_default().to_string();
                    let self_rule = sg.ip_permissions().iter().any(|p| {
                        p.user_id_group_pairs()
                            .iter()
                            .any(|g| g.group_id() == Some(id.as_str()))
                    });
                    (id, self_rule)
                }
                None => {
                    done = false;
                    let out = ec2
                        .create_security_group()
                        .group_name(&sg_name)
                        .description(format!(
                            "gpulab lab {lab}: EKS control plane and GPU nodes; admits only itself"
                        ))
                        .vpc_id(&vpc_id)
                        .tag_specifications(tag_spec(
                            ctx,
                            ResourceType::SecurityGroup,
                            &sg_name,
                            &[],
                        ))
                        .send()
                        .await
                        .map_err(|e| sdk_error(step, e))?;
                    let id = out
                        .group_id()
                        .ok_or_else(|| missing(step, "GroupId"))?
                        .to_string();
                    (id, false)
                }
            };
            if !self_rule {
                done = false;
                match ec2
                    .authorize_security_group_ingress()
                    .group_id(&id)
                    .ip_permissions(
                        IpPermission::builder()
                            .ip_protocol("-1")
                            .user_id_group_pairs(UserIdGroupPair::builder().group_id(&id).build())
                            .build(),
                    )
                    .send()
                    .await
                {
                    Ok(_) => {}
                    Err(e) if is_already_exists(&e) => {}
                    Err(e) => return Err(sdk_error(step, e)),
                }
            }
            Ok((id, done))
        })
        .await?;
    resources.push(ResourceRef {
        kind: "security-group".into(),
        id: sg_id.clone(),
    });
    counter.finished()?;

    Ok(Network {
        vpc_id: vpc_id.clone(),
        subnet_ids,
        security_group_id: sg_id,
    })
}

pub(crate) fn missing(step: &str, what: &str) -> Error {
    Error::Provision {
        step: step.into(),
        message: format!("the answer has no {what}"),
        hint: None,
        cause: None,
    }
}
