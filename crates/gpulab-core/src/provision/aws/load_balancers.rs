//! The workspace's load balancer (access mode `load-balancer`): an NLB and target group that the
//! cluster's AWS cloud provider makes for the LoadBalancer Service, tagged with the lab's ID through the
//! Service's additional-tags annotation. `down` deletes the Service first, and the cloud provider then
//! deletes them; when the cluster could not do it (unreachable, or deleted before), teardown deletes them
//! here, before the network: a live NLB keeps its ENIs, and they keep the VPC.

use aws_sdk_elasticloadbalancingv2::types::Tag;

use super::Ctx;
use super::network::find_vpcs;
use super::sdk::CallResult;
use crate::Result;
use crate::naming::LAB_ID_KEY;
use crate::provision::{LeftAlone, ResourceKind, ResourceRef};

/// DescribeTags takes at most 20 ARNs (ELBv2 API reference).
const TAGS_PER_CALL: usize = 20;

/// Tags of each of `arns`, in order.
async fn tags_of(ctx: &Ctx<'_>, step: &str, arns: &[String]) -> Result<Vec<(String, Vec<Tag>)>> {
    let mut out = Vec::new();
    for chunk in arns.chunks(TAGS_PER_CALL) {
        let answer = ctx
            .c
            .elb
            .describe_tags()
            .set_resource_arns(Some(chunk.to_vec()))
            .send()
            .await
            .at(step)?;
        for description in answer.tag_descriptions() {
            if let Some(arn) = description.resource_arn() {
                out.push((arn.to_string(), description.tags().to_vec()));
            }
        }
    }
    Ok(out)
}

fn owned(ctx: &Ctx<'_>, tags: &[Tag]) -> bool {
    ctx.owns(
        tags.iter()
            .filter_map(|t| Some((t.key()?, t.value().unwrap_or_default()))),
    )
}

/// Delete the lab's load balancers (those in its VPC that carry its ID) and then its target groups.
/// A load balancer in the lab's VPC without the ID is reported, not touched. Returns whether anything
/// was deleted.
pub(crate) async fn delete_load_balancers(
    ctx: &Ctx<'_>,
    step: &str,
    deleted: &mut Vec<ResourceRef>,
    left_alone: &mut Vec<LeftAlone>,
) -> Result<bool> {
    let vpcs = find_vpcs(ctx, step).await?;
    let mut in_vpc = Vec::new();
    let mut marker: Option<String> = None;
    loop {
        let page = ctx
            .c
            .elb
            .describe_load_balancers()
            .set_marker(marker.take())
            .send()
            .await
            .at(step)?;
        in_vpc.extend(page.load_balancers().iter().filter_map(|lb| {
            let vpc = lb.vpc_id()?;
            vpcs.iter()
                .any(|v| v == vpc)
                .then(|| lb.load_balancer_arn().map(str::to_owned))?
        }));
        match page.next_marker() {
            Some(m) if !m.is_empty() => marker = Some(m.to_owned()),
            _ => break,
        }
    }
    let mut any = false;
    for (arn, tags) in tags_of(ctx, step, &in_vpc).await? {
        let id = arn
            .rsplit(":loadbalancer/")
            .next()
            .unwrap_or(&arn)
            .to_string();
        if !owned(ctx, &tags) {
            left_alone.push(LeftAlone {
                resource: ResourceRef::new(ResourceKind::LoadBalancer, id),
                reason: format!(
                    "it lacks {LAB_ID_KEY}={}; it is in the lab's VPC, which cannot be deleted while it lives",
                    ctx.id
                ),
            });
            continue;
        }
        ctx.c
            .elb
            .delete_load_balancer()
            .load_balancer_arn(&arn)
            .send()
            .await
            .at(step)?;
        deleted.push(ResourceRef::new(ResourceKind::LoadBalancer, id));
        any = true;
    }

    // Then the target groups in the lab's VPC that carry its ID, now that their load balancers are
    // gone (a group in use cannot be deleted).
    let mut groups = Vec::new();
    let mut marker: Option<String> = None;
    loop {
        let page = ctx
            .c
            .elb
            .describe_target_groups()
            .set_marker(marker.take())
            .send()
            .await
            .at(step)?;
        groups.extend(page.target_groups().iter().filter_map(|g| {
            let vpc = g.vpc_id()?;
            vpcs.iter()
                .any(|v| v == vpc)
                .then(|| g.target_group_arn().map(str::to_owned))?
        }));
        match page.next_marker() {
            Some(m) if !m.is_empty() => marker = Some(m.to_owned()),
            _ => break,
        }
    }
    for (arn, tags) in tags_of(ctx, step, &groups).await? {
        if !owned(ctx, &tags) {
            continue;
        }
        ctx.c
            .elb
            .delete_target_group()
            .target_group_arn(&arn)
            .send()
            .await
            .at(step)?;
        deleted.push(ResourceRef::new(
            ResourceKind::TargetGroup,
            arn.rsplit(":targetgroup/")
                .next()
                .unwrap_or(&arn)
                .to_string(),
        ));
        any = true;
    }
    Ok(any)
}
