//! The lab's ECR repository: create it (tagged with the lab's tags), get push credentials for docker,
//! and delete it with its images (for `down`). The calls go through `aws_sdk_ecr`, built from the lab's
//! shared [`SdkConfig`], so the credentials, region, retries, HTTPS client and endpoint override (moto in
//! tests) are those of every other AWS call, and its errors are mapped the same way.

use std::collections::BTreeMap;

use aws_config::SdkConfig;
use aws_sdk_ecr::types::{ImageScanningConfiguration, ImageTagMutability, Tag};
use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::naming::{LAB_ID_KEY, LabId};
use crate::provision::aws::{CallResult, error_code, sdk_error};
use crate::{Error, Result};
use gpulab_model::aws::RegistryLogin;

/// What `delete_owned_repository` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepositoryDeletion {
    /// There was no repository of that name.
    Absent,
    /// It was the lab's, and it is deleted with its images.
    Deleted,
    /// It exists without the lab's ID: left alone.
    NotOurs,
}

fn not_ours(name: &str, id: &LabId) -> Error {
    Error::Ownership {
        resource: format!("ECR repository {name}"),
        message: format!("it exists without the tag {LAB_ID_KEY}={id}"),
        hint: "another tool or lab made it: choose another lab name (--name), or push there yourself; gpulab will neither push to nor delete it".into(),
    }
}

/// A repository, as ECR describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Repository {
    /// Name, e.g. `gpulab/dev`.
    pub name: String,
    /// `<account>.dkr.ecr.<region>.amazonaws.com/<name>`.
    pub uri: String,
    /// ARN.
    pub arn: String,
    /// False when it existed already.
    pub created: bool,
}

impl Repository {
    /// The registry host, the part of the URI before the first `/`.
    pub fn registry(&self) -> &str {
        self.uri.split('/').next().unwrap_or(&self.uri)
    }

    /// From ECR's description; `None` when a field gpulab needs is missing.
    fn from_sdk(repository: &aws_sdk_ecr::types::Repository, created: bool) -> Option<Self> {
        Some(Repository {
            name: repository.repository_name()?.into(),
            uri: repository.repository_uri()?.into(),
            arn: repository.repository_arn()?.into(),
            created,
        })
    }
}

/// A client for ECR, on the lab's shared AWS configuration.
#[derive(Clone)]
pub struct EcrClient {
    client: aws_sdk_ecr::Client,
    /// The shared configuration's endpoint override, for `Debug`.
    endpoint_url: Option<String>,
}

impl std::fmt::Debug for EcrClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EcrClient")
            .field("region", &self.client.config().region())
            .field("endpoint_url", &self.endpoint_url)
            .finish()
    }
}

/// An answer ECR should not give (a field missing); the service's code is not involved.
fn unexpected(step: &str, message: impl Into<String>) -> Error {
    Error::Provision {
        step: step.into(),
        message: message.into(),
        hint: Some(
            "ECR's answer was not what gpulab expects; retry, and report it if it persists".into(),
        ),
        cause: None,
    }
}

impl EcrClient {
    /// A client from the lab's shared AWS configuration (its credentials, region, retries and endpoint).
    pub fn new(config: &SdkConfig) -> Result<Self> {
        if config.region().is_none() {
            return Err(Error::Provision {
                step: "ECR".into(),
                message: "no AWS region configured".into(),
                hint: Some(
                    "set `region` in the lab's spec, or AWS_REGION / the profile's region".into(),
                ),
                cause: None,
            });
        }
        Ok(EcrClient {
            client: aws_sdk_ecr::Client::new(config),
            endpoint_url: config.endpoint_url().map(str::to_owned),
        })
    }

    /// The repository `name`, if it exists.
    pub async fn describe_repository(&self, name: &str) -> Result<Option<Repository>> {
        let step = "ECR DescribeRepositories";
        match self
            .client
            .describe_repositories()
            .repository_names(name)
            .send()
            .await
        {
            Ok(out) => Ok(out
                .repositories()
                .first()
                .and_then(|r| Repository::from_sdk(r, false))),
            Err(e) if error_code(&e) == Some("RepositoryNotFoundException") => Ok(None),
            Err(e) => Err(sdk_error(step, e)),
        }
    }

    /// Create the repository `name` with `tags` (scan on push, mutable tags), or return the existing one.
    pub async fn ensure_repository(
        &self,
        name: &str,
        tags: &BTreeMap<String, String>,
        id: &LabId,
    ) -> Result<Repository> {
        let step = "ECR CreateRepository";
        let tags = tags
            .iter()
            .map(|(k, v)| {
                Tag::builder()
                    .key(k)
                    .value(v)
                    .build()
                    .map_err(|e| unexpected(step, format!("tag {k}={v}: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let created = self
            .client
            .create_repository()
            .repository_name(name)
            .set_tags(Some(tags))
            .image_tag_mutability(ImageTagMutability::Mutable)
            .image_scanning_configuration(
                ImageScanningConfiguration::builder()
                    .scan_on_push(true)
                    .build(),
            )
            .send()
            .await;
        match created {
            Ok(out) => out
                .repository()
                .and_then(|r| Repository::from_sdk(r, true))
                .ok_or_else(|| {
                    unexpected(
                        step,
                        format!("ECR created {name} but did not describe it (name, URI, ARN)"),
                    )
                }),
            Err(e) if error_code(&e) == Some("RepositoryAlreadyExistsException") => {
                let repository = self.describe_repository(name).await?.ok_or_else(|| {
                    unexpected(
                        step,
                        format!("{name} exists, but DescribeRepositories does not find it"),
                    )
                })?;
                if !id.owns_map(Some(&self.list_tags(&repository.arn).await?)) {
                    return Err(not_ours(name, id));
                }
                Ok(repository)
            }
            Err(e) => {
                let denied = error_code(&e) == Some("AccessDeniedException");
                let mut error = sdk_error(step, e);
                if let (true, Error::Provision { hint, .. }) = (denied, &mut error) {
                    *hint = Some(
                        "the caller needs ecr:CreateRepository and ecr:TagResource (the tags are set on create); the README's \"AWS permissions\" lists what gpulab calls"
                            .into(),
                    );
                }
                Err(error)
            }
        }
    }

    /// The tags on the resource `arn` (a repository's ARN).
    pub async fn list_tags(&self, arn: &str) -> Result<BTreeMap<String, String>> {
        let out = self
            .client
            .list_tags_for_resource()
            .resource_arn(arn)
            .send()
            .await
            .map_err(|e| sdk_error("ECR ListTagsForResource", e))?;
        Ok(out
            .tags()
            .iter()
            .map(|t| (t.key().to_string(), t.value().to_string()))
            .collect())
    }

    /// Delete the repository `name` and every image in it if it carries lab `id`'s tag; one without it
    /// is left alone.
    pub async fn delete_owned_repository(
        &self,
        name: &str,
        id: &LabId,
    ) -> Result<RepositoryDeletion> {
        let Some(repository) = self.describe_repository(name).await? else {
            return Ok(RepositoryDeletion::Absent);
        };
        if !id.owns_map(Some(&self.list_tags(&repository.arn).await?)) {
            return Ok(RepositoryDeletion::NotOurs);
        }
        Ok(if self.delete_repository(name).await? {
            RepositoryDeletion::Deleted
        } else {
            RepositoryDeletion::Absent
        })
    }

    /// Delete the repository `name` and every image in it, whoever made it; false when there was none.
    /// Only for callers that checked its owner ([`EcrClient::delete_owned_repository`]).
    pub(crate) async fn delete_repository(&self, name: &str) -> Result<bool> {
        match self
            .client
            .delete_repository()
            .repository_name(name)
            .force(true)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if error_code(&e) == Some("RepositoryNotFoundException") => Ok(false),
            Err(e) => Err(sdk_error("ECR DeleteRepository", e)),
        }
    }

    /// Credentials for `docker login` to the account's registry (valid 12 hours).
    pub async fn login(&self) -> Result<RegistryLogin> {
        let step = "ECR GetAuthorizationToken";
        let out = self
            .client
            .get_authorization_token()
            .send()
            .await
            .at(step)?;
        let data = out
            .authorization_data()
            .first()
            .ok_or_else(|| unexpected(step, "no authorization data in the answer"))?;
        let token = data
            .authorization_token()
            .ok_or_else(|| unexpected(step, "no authorization token in the answer"))?;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(token)
            .map_err(|e| unexpected(step, format!("the token is not base64: {e}")))?;
        let decoded = String::from_utf8_lossy(&decoded);
        let (username, password) = decoded
            .split_once(':')
            .ok_or_else(|| unexpected(step, "the token is not user:password"))?;
        let registry = data
            .proxy_endpoint()
            .unwrap_or_default()
            .trim_start_matches("https://")
            .trim_end_matches('/')
            .to_string();
        Ok(RegistryLogin {
            registry,
            username: username.into(),
            password: password.into(),
        })
    }
}
