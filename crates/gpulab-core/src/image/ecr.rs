//! The lab's ECR repository: create it (tagged with the lab's tags), get push credentials for docker,
//! and delete it with its images (for `down`). ECR's JSON API is called directly, signed with SigV4 from
//! the lab's shared AWS configuration, so the credentials, region and endpoint override (moto in tests)
//! are the same as every other AWS call.

use std::collections::BTreeMap;
use std::time::SystemTime;

use aws_config::SdkConfig;
use aws_credential_types::provider::ProvideCredentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::RegistryLogin;
use crate::{Error, Result};

/// The JSON API's target prefix.
const TARGET_PREFIX: &str = "AmazonEC2ContainerRegistry_V20150921";

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
}

/// A client for ECR's JSON API.
#[derive(Clone)]
pub struct EcrClient {
    config: SdkConfig,
    http: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl std::fmt::Debug for EcrClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EcrClient")
            .field("region", &self.config.region())
            .field("endpoint_url", &self.config.endpoint_url())
            .finish()
    }
}

fn ecr_error(step: &str, message: impl Into<String>) -> Error {
    Error::Provision {
        step: step.into(),
        message: message.into(),
        hint: None,
    }
}

impl EcrClient {
    /// A client from the lab's shared AWS configuration.
    pub fn new(config: &SdkConfig) -> Result<Self> {
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(rustls::crypto::ring::default_provider())
            .map_err(|e| Error::io("loading the platform's TLS roots for ECR", e))?
            .https_or_http()
            .enable_http1()
            .build();
        Ok(EcrClient {
            config: config.clone(),
            http: Client::builder(TokioExecutor::new()).build(connector),
        })
    }

    fn region(&self) -> Result<String> {
        self.config
            .region()
            .map(|r| r.to_string())
            .ok_or_else(|| ecr_error("ECR", "no AWS region configured"))
    }

    /// Call `operation` with `body`; a service error comes back as `Ok(Err((code, message)))`.
    async fn call(
        &self,
        operation: &str,
        body: Value,
    ) -> Result<std::result::Result<Value, (String, String)>> {
        let step = format!("ECR {operation}");
        let region = self.region()?;
        let endpoint = self
            .config
            .endpoint_url()
            .map(|u| u.trim_end_matches('/').to_string())
            .unwrap_or_else(|| format!("https://api.ecr.{region}.amazonaws.com"));
        let url = format!("{endpoint}/");
        let host = url
            .split("://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .unwrap_or_default()
            .to_string();
        let provider = self
            .config
            .credentials_provider()
            .ok_or_else(|| ecr_error(&step, "no AWS credentials configured"))?;
        let credentials = provider
            .provide_credentials()
            .await
            .map_err(|e| Error::Credentials {
                message: e.to_string(),
                hint: "configure AWS credentials (aws configure, AWS_PROFILE or SSO)".into(),
            })?;
        let payload = serde_json::to_vec(&body).expect("JSON values serialise");
        let target = format!("{TARGET_PREFIX}.{operation}");
        let headers = [
            ("host", host.as_str()),
            ("content-type", "application/x-amz-json-1.1"),
            ("x-amz-target", target.as_str()),
        ];
        let identity: Identity = credentials.into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&region)
            .name("ecr")
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| ecr_error(&step, e.to_string()))?
            .into();
        let signable = SignableRequest::new(
            "POST",
            url.as_str(),
            headers.iter().copied(),
            SignableBody::Bytes(&payload),
        )
        .map_err(|e| ecr_error(&step, e.to_string()))?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| ecr_error(&step, e.to_string()))?
            .into_parts();
        let mut builder = http::Request::builder().method("POST").uri(&url);
        for (name, value) in headers {
            builder = builder.header(name, value);
        }
        let mut request = builder
            .body(Full::new(Bytes::from(payload)))
            .map_err(|e| ecr_error(&step, e.to_string()))?;
        instructions.apply_to_request_http1x(&mut request);
        let response = self
            .http
            .request(request)
            .await
            .map_err(|e| ecr_error(&step, format!("{url}: {e}")))?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| ecr_error(&step, e.to_string()))?
            .to_bytes();
        let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(Ok(value));
        }
        let code = value["__type"]
            .as_str()
            .map(|t| t.rsplit('#').next().unwrap_or(t).to_string())
            .unwrap_or_else(|| format!("HTTP {status}"));
        let message = value["message"]
            .as_str()
            .or(value["Message"].as_str())
            .unwrap_or_default()
            .to_string();
        Ok(Err((code, message)))
    }

    fn repository(value: &Value, created: bool) -> Option<Repository> {
        Some(Repository {
            name: value["repositoryName"].as_str()?.into(),
            uri: value["repositoryUri"].as_str()?.into(),
            arn: value["repositoryArn"].as_str()?.into(),
            created,
        })
    }

    /// The repository `name`, if it exists.
    pub async fn describe_repository(&self, name: &str) -> Result<Option<Repository>> {
        match self
            .call("DescribeRepositories", json!({ "repositoryNames": [name] }))
            .await?
        {
            Ok(v) => Ok(Self::repository(&v["repositories"][0], false)),
            Err((code, _)) if code == "RepositoryNotFoundException" => Ok(None),
            Err((code, message)) => Err(ecr_error(
                "ECR DescribeRepositories",
                format!("{code}: {message}"),
            )),
        }
    }

    /// Create the repository `name` with `tags` (scan on push, mutable tags), or return the existing one.
    pub async fn ensure_repository(
        &self,
        name: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<Repository> {
        let tags: Vec<Value> = tags
            .iter()
            .map(|(k, v)| json!({ "Key": k, "Value": v }))
            .collect();
        let body = json!({
            "repositoryName": name,
            "tags": tags,
            "imageTagMutability": "MUTABLE",
            "imageScanningConfiguration": { "scanOnPush": true },
        });
        match self.call("CreateRepository", body).await? {
            Ok(v) => Self::repository(&v["repository"], true)
                .ok_or_else(|| ecr_error("ECR CreateRepository", format!("unexpected answer {v}"))),
            Err((code, _)) if code == "RepositoryAlreadyExistsException" => {
                self.describe_repository(name).await?.ok_or_else(|| {
                    ecr_error(
                        "ECR CreateRepository",
                        format!("{name} exists but cannot be described"),
                    )
                })
            }
            Err((code, message)) => Err(Error::Provision {
                step: "ECR CreateRepository".into(),
                message: format!("{code}: {message}"),
                hint: (code == "AccessDeniedException")
                    .then(|| "the caller needs ecr:CreateRepository and ecr:TagResource".into()),
            }),
        }
    }

    /// The tags on the resource `arn` (a repository's ARN).
    pub async fn list_tags(&self, arn: &str) -> Result<BTreeMap<String, String>> {
        let v = self
            .call("ListTagsForResource", json!({ "resourceArn": arn }))
            .await?
            .map_err(|(code, message)| {
                ecr_error("ECR ListTagsForResource", format!("{code}: {message}"))
            })?;
        Ok(v["tags"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| {
                Some((
                    t["Key"].as_str()?.to_string(),
                    t["Value"].as_str()?.to_string(),
                ))
            })
            .collect())
    }

    /// Delete the repository `name` and every image in it; false when there was none.
    pub async fn delete_repository(&self, name: &str) -> Result<bool> {
        match self
            .call(
                "DeleteRepository",
                json!({ "repositoryName": name, "force": true }),
            )
            .await?
        {
            Ok(_) => Ok(true),
            Err((code, _)) if code == "RepositoryNotFoundException" => Ok(false),
            Err((code, message)) => Err(ecr_error(
                "ECR DeleteRepository",
                format!("{code}: {message}"),
            )),
        }
    }

    /// Credentials for `docker login` to the account's registry (valid 12 hours).
    pub async fn login(&self) -> Result<RegistryLogin> {
        let step = "ECR GetAuthorizationToken";
        let v = self
            .call("GetAuthorizationToken", json!({}))
            .await?
            .map_err(|(code, message)| ecr_error(step, format!("{code}: {message}")))?;
        let data = &v["authorizationData"][0];
        let token = data["authorizationToken"]
            .as_str()
            .ok_or_else(|| ecr_error(step, "no authorization token in the answer"))?;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(token)
            .map_err(|e| ecr_error(step, format!("token is not base64: {e}")))?;
        let decoded = String::from_utf8_lossy(&decoded);
        let (username, password) = decoded
            .split_once(':')
            .ok_or_else(|| ecr_error(step, "token is not user:password"))?;
        let registry = data["proxyEndpoint"]
            .as_str()
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
