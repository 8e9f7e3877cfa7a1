//! The lab's IAM roles: one the EKS control plane assumes, one the GPU nodes assume, each with the
//! AWS-managed policies from the plan.

use aws_sdk_iam::types::Tag;
use serde_json::json;

use super::sdk::{CallResult, is_already_exists, sdk_error};
use super::{Ctx, Found, ProvisionStep, StepCounter};
use crate::naming::LAB_ID_KEY;
use crate::provision::{ResourceKind, ResourceRef};
use crate::{Error, Result};
use gpulab_model::aws::{
    CLUSTER_POLICY, EBS_CSI_POLICY, IMAGE_BUILD_POLICY, NODE_POLICIES, POD_IDENTITY_PRINCIPAL,
    image_build_policy,
};

/// The ARNs of the lab's roles.
pub(crate) struct Roles {
    pub(crate) cluster: String,
    pub(crate) node: String,
    pub(crate) ebs_csi: String,
    pub(crate) image_build: String,
    pub(crate) autostop: String,
}

/// The trust policy of a role `service` assumes. EKS Pod Identity also tags the session with the pod's
/// cluster, namespace and service account, so its roles allow `sts:TagSession` too (EKS user guide,
/// "Create an IAM role for Pod Identity").
fn trust_policy(service: &str) -> String {
    let actions = if service == POD_IDENTITY_PRINCIPAL {
        json!(["sts:AssumeRole", "sts:TagSession"])
    } else {
        json!("sts:AssumeRole")
    };
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"Service": service},
            "Action": actions,
        }],
    })
    .to_string()
}

/// Role `name` (its ARN), and whether it is this lab's.
pub(crate) async fn find_role(ctx: &Ctx<'_>, step: &str, name: &str) -> Result<Found<String>> {
    let out = ctx.c.iam.get_role().role_name(name).send().await;
    Ok(
        match out.unless_gone(step)?.as_ref().and_then(|out| out.role()) {
            None => Found::Absent,
            Some(role) if ctx.owns(role.tags().iter().map(|t| (t.key(), t.value()))) => {
                Found::Ours(role.arn().to_string())
            }
            Some(_) => Found::NotOurs,
        },
    )
}

/// The error for a role of the lab's name that is not the lab's: gpulab never adopts it.
pub(crate) fn not_ours(ctx: &Ctx<'_>, name: &str) -> Error {
    Error::Ownership {
        resource: format!("IAM role {name}"),
        message: format!("it exists without the tag {LAB_ID_KEY}={}", ctx.id),
        hint: "another tool or lab made it: choose another lab name (--name), or delete the role yourself if it is an old one".into(),
    }
}

async fn converge_role(
    ctx: &Ctx<'_>,
    step: &str,
    name: &str,
    service: &str,
    policies: &[&str],
) -> Result<(String, bool)> {
    let iam = &ctx.c.iam;
    let mut done = true;
    let arn = match find_role(ctx, step, name).await? {
        Found::Ours(arn) => arn,
        Found::NotOurs => return Err(not_ours(ctx, name)),
        Found::Absent => {
            done = false;
            let tags: Vec<Tag> = ctx
                .tags()
                .into_iter()
                .map(|(k, v)| Tag::builder().key(k).value(v).build())
                .collect::<std::result::Result<_, _>>()
                .map_err(|e| Error::Provision {
                    step: step.into(),
                    message: e.to_string(),
                    hint: None,
                    cause: None,
                })?;
            match iam
                .create_role()
                .role_name(name)
                .assume_role_policy_document(trust_policy(service))
                .description(format!("gpulab lab {}", ctx.lab()))
                .set_tags(Some(tags))
                .send()
                .await
            {
                Ok(out) => out.role().map(|r| r.arn().to_string()).unwrap_or_default(),
                // Made between our look and our create: ours only if it carries our ID.
                Err(e) if is_already_exists(&e) => match find_role(ctx, step, name).await? {
                    Found::Ours(arn) => arn,
                    Found::NotOurs => return Err(not_ours(ctx, name)),
                    Found::Absent => return Err(super::sdk::missing(step, "role")),
                },
                Err(e) => return Err(sdk_error(step, e)),
            }
        }
    };
    let attached = iam
        .list_attached_role_policies()
        .role_name(name)
        .send()
        .await
        .at(step)?;
    for policy in policies {
        let present = attached
            .attached_policies()
            .iter()
            .any(|p| p.policy_arn() == Some(policy));
        if !present {
            done = false;
            iam.attach_role_policy()
                .role_name(name)
                .policy_arn(*policy)
                .send()
                .await
                .at(step)?;
        }
    }
    Ok((arn, done))
}

/// Create (or find) the lab's roles, one step each.
pub(crate) async fn converge(
    ctx: &Ctx<'_>,
    counter: &StepCounter,
    resources: &mut Vec<ResourceRef>,
) -> Result<Roles> {
    let names = &ctx.names;
    let mut role = async |step: ProvisionStep, name: &str, service: &str, policies: &[&str]| {
        let arn = ctx
            .step(
                step.name(),
                converge_role(ctx, step.name(), name, service, policies),
            )
            .await?;
        resources.push(ResourceRef::new(ResourceKind::IamRole, name.to_string()));
        Ok::<_, Error>(arn)
    };
    let cluster = role(
        ProvisionStep::ClusterRole,
        &names.cluster_role,
        "eks.amazonaws.com",
        &[CLUSTER_POLICY],
    )
    .await?;
    counter.finished()?;
    let node = role(
        ProvisionStep::NodeRole,
        &names.node_role,
        "ec2.amazonaws.com",
        &NODE_POLICIES,
    )
    .await?;
    // An inline push policy an earlier gpulab put on the node role goes: pods now get their own role.
    let old_policy = ctx.c.iam.delete_role_policy().role_name(&names.node_role);
    let deleted = old_policy.policy_name(IMAGE_BUILD_POLICY).send().await;
    deleted.unless_gone(ProvisionStep::NodeRole.name())?;
    counter.finished()?;
    let ebs_csi = role(
        ProvisionStep::EbsCsiRole,
        &names.ebs_csi_role,
        POD_IDENTITY_PRINCIPAL,
        &[EBS_CSI_POLICY],
    )
    .await?;
    counter.finished()?;
    let image_build = role(
        ProvisionStep::ImageBuildRole,
        &names.image_build_role,
        POD_IDENTITY_PRINCIPAL,
        &[],
    )
    .await?;
    put_inline_policy(
        ctx,
        ProvisionStep::ImageBuildRole,
        &names.image_build_role,
        IMAGE_BUILD_POLICY,
        image_build_policy(ctx.spec),
    )
    .await?;
    counter.finished()?;
    let autostop = role(
        ProvisionStep::AutostopRole,
        &names.autostop_role,
        POD_IDENTITY_PRINCIPAL,
        &[],
    )
    .await?;
    put_inline_policy(
        ctx,
        ProvisionStep::AutostopRole,
        &names.autostop_role,
        gpulab_model::autostop::AGENT_POLICY,
        gpulab_model::autostop::agent_policy(ctx.spec),
    )
    .await?;
    counter.finished()?;
    Ok(Roles {
        cluster,
        node,
        ebs_csi,
        image_build,
        autostop,
    })
}

/// Put inline policy `name` on `role`. PutRolePolicy replaces the document: idempotent, and a rerun
/// repairs an edited policy.
async fn put_inline_policy(
    ctx: &Ctx<'_>,
    step: ProvisionStep,
    role: &str,
    name: &str,
    document: String,
) -> Result<()> {
    ctx.c
        .iam
        .put_role_policy()
        .role_name(role)
        .policy_name(name)
        .policy_document(document)
        .send()
        .await
        .map_err(|e| sdk_error(step.name(), e))?;
    Ok(())
}

/// The lab's role names, in the order `down` deletes them.
pub(crate) fn role_names<'a>(ctx: &'a Ctx<'_>) -> [&'a str; 5] {
    let n = &ctx.names;
    [
        &n.autostop_role,
        &n.image_build_role,
        &n.ebs_csi_role,
        &n.node_role,
        &n.cluster_role,
    ]
}

/// Delete role `name` if it is this lab's: instance profiles, attached and inline policies, the role.
/// Returns whether it deleted anything; a role of that name that is not the lab's is not touched (the
/// caller reports it, having looked with [`find_role`]).
pub(crate) async fn delete_role(ctx: &Ctx<'_>, step: &str, name: &str) -> Result<bool> {
    let iam = &ctx.c.iam;
    if !matches!(find_role(ctx, step, name).await?, Found::Ours(_)) {
        return Ok(false);
    }
    // A role that goes while this runs (another `down`) is not this run's to report.
    let listed = iam.list_instance_profiles_for_role().role_name(name).send();
    let Some(profiles) = listed.await.unless_gone(step)? else {
        return Ok(false);
    };
    for profile in profiles.instance_profiles() {
        let pname = profile.instance_profile_name();
        let remove = iam
            .remove_role_from_instance_profile()
            .instance_profile_name(pname);
        remove.role_name(name).send().await.unless_gone(step)?;
        let delete = iam.delete_instance_profile().instance_profile_name(pname);
        delete.send().await.unless_gone(step)?;
    }
    let listed = iam.list_attached_role_policies().role_name(name).send();
    let Some(attached) = listed.await.unless_gone(step)? else {
        return Ok(false);
    };
    for arn in attached
        .attached_policies()
        .iter()
        .filter_map(|p| p.policy_arn())
    {
        let detach = iam.detach_role_policy().role_name(name).policy_arn(arn);
        detach.send().await.unless_gone(step)?;
    }
    let listed = iam.list_role_policies().role_name(name).send();
    let Some(inline) = listed.await.unless_gone(step)? else {
        return Ok(false);
    };
    for policy in inline.policy_names() {
        let delete = iam.delete_role_policy().role_name(name).policy_name(policy);
        delete.send().await.unless_gone(step)?;
    }
    let deleted = iam.delete_role().role_name(name).send().await;
    Ok(deleted.unless_gone(step)?.is_some())
}
