//! The lab's IAM roles: one the EKS control plane assumes, one the GPU nodes assume, each with the
//! AWS-managed policies from the plan.

use aws_sdk_iam::types::Tag;
use serde_json::json;

use super::sdk::{is_already_exists, is_not_found, sdk_error};
use super::{Ctx, StepCounter};
use crate::naming::{self, LAB_KEY};
use crate::plan::{CLUSTER_POLICY, NODE_ECR_PUSH_POLICY, NODE_POLICIES, node_ecr_push_policy};
use crate::provision::ResourceRef;
use crate::{Error, Result};

/// The ARNs of the two roles.
pub(crate) struct Roles {
    pub(crate) cluster: String,
    pub(crate) node: String,
}

fn trust_policy(service: &str) -> String {
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"Service": service},
            "Action": "sts:AssumeRole",
        }],
    })
    .to_string()
}

/// `Some(arn)` of role `name` when it exists and is this lab's; an error when it exists but belongs to
/// something else (gpulab never adopts a role it did not create).
pub(crate) async fn find_role(ctx: &Ctx<'_>, step: &str, name: &str) -> Result<Option<String>> {
    match ctx.c.iam.get_role().role_name(name).send().await {
        Ok(out) => {
            let Some(role) = out.role() else {
                return Ok(None);
            };
            let ours = role
                .tags()
                .iter()
                .any(|t| t.key() == LAB_KEY && t.value() == ctx.lab());
            if !ours {
                return Err(Error::Provision {
                    step: step.into(),
                    message: format!(
                        "IAM role {name} exists but does not carry the tag {LAB_KEY}={}",
                        ctx.lab()
                    ),
                    hint: Some(
                        "another tool or lab owns it: choose another lab name, or delete the role"
                            .into(),
                    ),
                });
            }
            Ok(Some(role.arn().to_string()))
        }
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(sdk_error(step, e)),
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
        Some(arn) => arn,
        None => {
            done = false;
            let tags: Vec<Tag> = naming::aws_tags(&ctx.spec.spec)
                .into_iter()
                .map(|(k, v)| Tag::builder().key(k).value(v).build())
                .collect::<std::result::Result<_, _>>()
                .map_err(|e| Error::Provision {
                    step: step.into(),
                    message: e.to_string(),
                    hint: None,
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
                Err(e) if is_already_exists(&e) => find_role(ctx, step, name)
                    .await?
                    .ok_or_else(|| super::network::missing(step, "role"))?,
                Err(e) => return Err(sdk_error(step, e)),
            }
        }
    };
    let attached = iam
        .list_attached_role_policies()
        .role_name(name)
        .send()
        .await
        .map_err(|e| sdk_error(step, e))?;
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
                .map_err(|e| sdk_error(step, e))?;
        }
    }
    Ok((arn, done))
}

/// Create (or find) both roles, one step each.
pub(crate) async fn converge(
    ctx: &Ctx<'_>,
    counter: &StepCounter,
    resources: &mut Vec<ResourceRef>,
) -> Result<Roles> {
    let step = super::PROVISION_STEPS[5];
    let cluster = ctx
        .step(
            step,
            converge_role(
                ctx,
                step,
                &ctx.names.cluster_role,
                "eks.amazonaws.com",
                &[CLUSTER_POLICY],
            ),
        )
        .await?;
    resources.push(ResourceRef {
        kind: "iam-role".into(),
        id: ctx.names.cluster_role.clone(),
    });
    counter.finished()?;

    let step = super::PROVISION_STEPS[6];
    let node = ctx
        .step(
            step,
            converge_role(
                ctx,
                step,
                &ctx.names.node_role,
                "ec2.amazonaws.com",
                &NODE_POLICIES,
            ),
        )
        .await?;
    // PutRolePolicy replaces the document: idempotent, and a rerun repairs an edited policy.
    ctx.c
        .iam
        .put_role_policy()
        .role_name(&ctx.names.node_role)
        .policy_name(NODE_ECR_PUSH_POLICY)
        .policy_document(node_ecr_push_policy(ctx.spec))
        .send()
        .await
        .map_err(|e| sdk_error(step, e))?;
    resources.push(ResourceRef {
        kind: "iam-role".into(),
        id: ctx.names.node_role.clone(),
    });
    counter.finished()?;
    Ok(Roles { cluster, node })
}

/// Delete role `name` if it is this lab's: instance profiles, attached and inline policies, the role.
/// Returns whether it deleted anything.
pub(crate) async fn delete_role(ctx: &Ctx<'_>, step: &str, name: &str) -> Result<bool> {
    let iam = &ctx.c.iam;
    match find_role(ctx, step, name).await {
        Ok(Some(_)) => {}
        Ok(None) => return Ok(false),
        // Not ours: leave it alone (the sweep does not list it either: it lacks the tag).
        Err(Error::Provision { .. }) => return Ok(false),
        Err(e) => return Err(e),
    }
    let profiles = iam
        .list_instance_profiles_for_role()
        .role_name(name)
        .send()
        .await;
    match profiles {
        Ok(out) => {
            for p in out.instance_profiles() {
                let pname = p.instance_profile_name();
                match iam
                    .remove_role_from_instance_profile()
                    .instance_profile_name(pname)
                    .role_name(name)
                    .send()
                    .await
                {
                    Ok(_) => {}
                    Err(e) if is_not_found(&e) => {}
                    Err(e) => return Err(sdk_error(step, e)),
                }
                match iam
                    .delete_instance_profile()
                    .instance_profile_name(pname)
                    .send()
                    .await
                {
                    Ok(_) => {}
                    Err(e) if is_not_found(&e) => {}
                    Err(e) => return Err(sdk_error(step, e)),
                }
            }
        }
        Err(e) if is_not_found(&e) => return Ok(false),
        Err(e) => return Err(sdk_error(step, e)),
    }
    match iam
        .list_attached_role_policies()
        .role_name(name)
        .send()
        .await
    {
        Ok(out) => {
            for p in out.attached_policies() {
                if let Some(arn) = p.policy_arn() {
                    match iam
                        .detach_role_policy()
                        .role_name(name)
                        .policy_arn(arn)
                        .send()
                        .await
                    {
                        Ok(_) => {}
                        Err(e) if is_not_found(&e) => {}
                        Err(e) => return Err(sdk_error(step, e)),
                    }
                }
            }
        }
        Err(e) if is_not_found(&e) => return Ok(false),
        Err(e) => return Err(sdk_error(step, e)),
    }
    match iam.list_role_policies().role_name(name).send().await {
        Ok(out) => {
            for policy in out.policy_names() {
                match iam
                    .delete_role_policy()
                    .role_name(name)
                    .policy_name(policy)
                    .send()
                    .await
                {
                    Ok(_) => {}
                    Err(e) if is_not_found(&e) => {}
                    Err(e) => return Err(sdk_error(step, e)),
                }
            }
        }
        Err(e) if is_not_found(&e) => return Ok(false),
        Err(e) => return Err(sdk_error(step, e)),
    }
    match iam.delete_role().role_name(name).send().await {
        Ok(_) => Ok(true),
        Err(e) if is_not_found(&e) => Ok(false),
        Err(e) => Err(sdk_error(step, e)),
    }
}
