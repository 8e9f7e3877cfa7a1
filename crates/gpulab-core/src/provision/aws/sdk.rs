//! The AWS SDK clients, built once from one shared [`SdkConfig`], and the mapping of SDK errors to
//! gpulab's [`Error`].

use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_smithy_http_client::tls;
use aws_smithy_runtime_api::client::http::SharedHttpClient;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use aws_smithy_types::retry::RetryConfig;

use crate::{ApiError, Error};

/// The SDK's retry settings gpulab uses unless told otherwise: the standard strategy (exponential
/// backoff with jitter, a retry quota), 8 attempts, backoff from 1 s up to 20 s. Throttling and 5xx
/// answers are retried; EKS and EC2 throttle bursts of describe calls during waits.
pub fn default_retry_config() -> RetryConfig {
    RetryConfig::standard()
        .with_max_attempts(8)
        .with_initial_backoff(Duration::from_secs(1))
        .with_max_backoff(Duration::from_secs(20))
}

/// The HTTPS client of every AWS call: hyper with rustls and the `ring` crypto provider, trusting the
/// platform's roots.
pub fn https_client() -> SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https()
}

/// Where and how gpulab talks to AWS.
#[derive(Debug, Clone)]
pub struct SdkOptions {
    /// The named profile (`~/.aws/config`); `None` follows `AWS_PROFILE`, then `default`.
    pub profile: Option<String>,
    /// One endpoint for every service instead of AWS's (moto, LocalStack, a proxy).
    pub endpoint_url: Option<String>,
    /// An endpoint for Service Quotas alone (tests serve it from wiremock: moto has no EC2 quotas).
    pub service_quotas_endpoint_url: Option<String>,
    /// Where to ask for this machine's public address instead of AWS's checkip service
    /// ([`super::CHECKIP_URL`]); tests serve it beside moto.
    pub checkip_url: Option<String>,
    /// Fixed credentials instead of the default chain (env, profiles, SSO, instance metadata).
    pub credentials: Option<Credentials>,
    /// The SDK's retry settings.
    pub retry: RetryConfig,
}

impl Default for SdkOptions {
    fn default() -> Self {
        SdkOptions {
            profile: None,
            endpoint_url: None,
            service_quotas_endpoint_url: None,
            checkip_url: None,
            credentials: None,
            retry: default_retry_config(),
        }
    }
}

/// Load the shared SDK configuration for `region`: aws-config's default chain for credentials, with
/// `options` on top.
pub async fn load_sdk_config(region: &str, options: &SdkOptions) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(region.to_string()))
        .retry_config(options.retry.clone())
        .http_client(https_client());
    if let Some(profile) = &options.profile {
        loader = loader.profile_name(profile);
    }
    if let Some(url) = &options.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    if let Some(creds) = &options.credentials {
        loader = loader.credentials_provider(SharedCredentialsProvider::new(creds.clone()));
    }
    loader.load().await
}

/// Every AWS client gpulab uses, built from one [`SdkConfig`].
#[derive(Debug, Clone)]
pub struct AwsClients {
    /// The shared configuration the clients were built from.
    pub config: SdkConfig,
    /// EC2: VPC, subnets, gateways, security groups, ENIs, volumes, offerings.
    pub ec2: aws_sdk_ec2::Client,
    /// EKS: cluster, access entries, addons, node group.
    pub eks: aws_sdk_eks::Client,
    /// IAM: the cluster and node roles.
    pub iam: aws_sdk_iam::Client,
    /// STS: the caller's identity.
    pub sts: aws_sdk_sts::Client,
    /// Service Quotas: the GPU vCPU quota.
    pub quotas: aws_sdk_servicequotas::Client,
    /// Resource Groups Tagging: the sweep after teardown.
    pub tagging: aws_sdk_resourcegroupstagging::Client,
    /// Elastic Load Balancing v2: the workspace's load balancer, deleted by teardown when the cluster
    /// could not delete it (the LoadBalancer Service's NLB and its target groups).
    pub elb: aws_sdk_elasticloadbalancingv2::Client,
}

impl AwsClients {
    /// Clients from `config`; `service_quotas_endpoint_url` overrides Service Quotas' endpoint alone.
    pub fn new(config: &SdkConfig, service_quotas_endpoint_url: Option<&str>) -> Self {
        let mut quotas = aws_sdk_servicequotas::config::Builder::from(config);
        if let Some(url) = service_quotas_endpoint_url {
            quotas = quotas.endpoint_url(url);
        }
        AwsClients {
            config: config.clone(),
            ec2: aws_sdk_ec2::Client::new(config),
            eks: aws_sdk_eks::Client::new(config),
            iam: aws_sdk_iam::Client::new(config),
            sts: aws_sdk_sts::Client::new(config),
            quotas: aws_sdk_servicequotas::Client::from_conf(quotas.build()),
            tagging: aws_sdk_resourcegroupstagging::Client::new(config),
            elb: aws_sdk_elasticloadbalancingv2::Client::new(config),
        }
    }
}

/// The service's error code, e.g. "InvalidVpcID.NotFound", for service errors.
pub(crate) fn error_code<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> Option<&str> {
    match e {
        SdkError::ServiceError(s) => s.err().code(),
        _ => None,
    }
}

/// True when the error says the resource does not exist (or is already detached/disassociated).
pub(crate) fn is_not_found<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> bool {
    error_code(e).is_some_and(crate::error::code_is_not_found)
}

/// True when the error says the resource already exists.
pub(crate) fn is_already_exists<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> bool {
    error_code(e).is_some_and(crate::error::code_is_conflict)
}

const CREDENTIAL_CODES: &[&str] = &[
    "ExpiredToken",
    "ExpiredTokenException",
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "AuthFailure",
    "SignatureDoesNotMatch",
    "InvalidAccessKeyId",
];

/// An error and its sources, one `: ` apart, without the debug dump `DisplayErrorContext` appends.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(e);
    while let Some(err) = next {
        let text = err.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = err.source();
    }
    parts.join(": ")
}

/// gpulab's error for a failed call in `step`: a credentials problem becomes [`Error::Credentials`],
/// anything else [`Error::Provision`] with the service's code and message.
pub(crate) fn sdk_error<E>(step: &str, e: SdkError<E, HttpResponse>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let (code, message) = match &e {
        SdkError::ServiceError(s) => (
            s.err().code().map(str::to_owned),
            s.err().message().map(str::to_owned),
        ),
        _ => (None, None),
    };
    let detail = match (&code, &message, e.raw_response()) {
        (Some(c), Some(m), _) => format!("{c}: {m}"),
        (Some(c), None, _) => c.clone(),
        // An answer that is not the service's error format (a proxy's or emulator's error page).
        (None, _, Some(raw)) if !raw.status().is_success() => format!(
            "the endpoint answered HTTP {} without an AWS error",
            raw.status().as_u16()
        ),
        _ => error_chain(&e),
    };
    let credentials_failure = code
        .as_deref()
        .is_some_and(|c| CREDENTIAL_CODES.contains(&c))
        || matches!(
            &e,
            SdkError::DispatchFailure(_) | SdkError::ConstructionFailure(_)
        ) && detail.contains("credentials");
    if credentials_failure {
        let detail = if code.is_none() {
            "no AWS credentials could be loaded (environment, ~/.aws profiles, SSO, instance metadata)".to_string()
        } else {
            detail
        };
        return Error::Credentials {
            message: format!("{step}: {detail}"),
            hint:
                "check AWS_PROFILE / AWS_ACCESS_KEY_ID, or run `aws sso login` for an SSO profile"
                    .into(),
        };
    }
    let hint = match code.as_deref() {
        Some("AccessDenied" | "AccessDeniedException" | "UnauthorizedOperation") => Some(
            "the caller lacks an IAM permission this step needs; the README's \"AWS permissions\" lists what gpulab calls"
                .to_string(),
        ),
        _ => None,
    };
    let http_status = e.raw_response().map(|raw| raw.status().as_u16());
    Error::Provision {
        step: step.into(),
        message: detail,
        hint,
        cause: Some(ApiError {
            code,
            http_status,
            source: Box::new(e),
        }),
    }
}

/// One place for what every AWS call does with its answer: the step's [`Error`] on failure, and the two
/// answers that mean "already done" for an idempotent step (find-or-create, delete-if-present).
pub(crate) trait CallResult<T> {
    /// The answer, or the step's error with the API's answer as its cause.
    fn at(self, step: &str) -> Result<T, Error>;
    /// `None` where the resource is already gone: what a delete (or detach) that may be rerun wants.
    fn unless_gone(self, step: &str) -> Result<Option<T>, Error>;
    /// `None` where the resource (or rule, route, association) already exists: a rerun's create.
    fn unless_exists(self, step: &str) -> Result<Option<T>, Error>;
}

impl<T, E> CallResult<T> for Result<T, SdkError<E, HttpResponse>>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    fn at(self, step: &str) -> Result<T, Error> {
        self.map_err(|e| sdk_error(step, e))
    }

    fn unless_gone(self, step: &str) -> Result<Option<T>, Error> {
        match self {
            Ok(v) => Ok(Some(v)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(sdk_error(step, e)),
        }
    }

    fn unless_exists(self, step: &str) -> Result<Option<T>, Error> {
        match self {
            Ok(v) => Ok(Some(v)),
            Err(e) if is_already_exists(&e) => Ok(None),
            Err(e) => Err(sdk_error(step, e)),
        }
    }
}

/// The id a create call answered with, or the step's error naming the field the answer lacked.
pub(crate) fn created_id(step: &str, id: Option<&str>, field: &str) -> Result<String, Error> {
    id.map(str::to_owned).ok_or_else(|| missing(step, field))
}

/// The step's error for an answer that lacks `what`.
pub(crate) fn missing(step: &str, what: &str) -> Error {
    Error::Provision {
        step: step.into(),
        message: format!("the answer has no {what}"),
        hint: None,
        cause: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::code_is_not_found;

    #[test]
    fn not_found_codes() {
        for code in [
            "InvalidVpcID.NotFound",
            "InvalidGroup.NotFound",
            "NoSuchEntity",
            "ResourceNotFoundException",
            "Gateway.NotAttached",
        ] {
            assert!(code_is_not_found(code), "{code}");
        }
        assert!(!code_is_not_found("DependencyViolation"));
    }

    /// A service's error answer, as the SDK hands it over: code, message, HTTP status.
    fn service_error(
        code: &str,
        status: u16,
    ) -> SdkError<aws_sdk_eks::operation::describe_cluster::DescribeClusterError, HttpResponse>
    {
        use aws_sdk_eks::operation::describe_cluster::DescribeClusterError;
        use aws_smithy_types::error::ErrorMetadata;
        let meta = ErrorMetadata::builder()
            .code(code)
            .message("from the service")
            .build();
        let raw = HttpResponse::new(
            status.try_into().unwrap(),
            aws_smithy_types::body::SdkBody::empty(),
        );
        SdkError::service_error(DescribeClusterError::generic(meta), raw)
    }

    #[test]
    fn a_failed_call_keeps_its_code_status_and_source_for_callers_to_match() {
        let err = sdk_error(
            "describe cluster",
            service_error("ResourceNotFoundException", 404),
        );
        assert!(err.is_not_found() && !err.is_conflict() && !err.is_throttled());
        let api = err.api().expect("the API's answer");
        assert_eq!(api.code.as_deref(), Some("ResourceNotFoundException"));
        assert_eq!(api.http_status, Some(404));
        let source = std::error::Error::source(&err).expect("a source");
        assert_eq!(source.to_string(), "ResourceNotFoundException (HTTP 404)");
        assert!(source.source().is_some(), "the SDK's error is kept");
        // The message stays what it was: the service's code and text.
        assert_eq!(
            err.to_string(),
            "describe cluster: ResourceNotFoundException: from the service"
        );

        let err = sdk_error(
            "create node group",
            service_error("ResourceInUseException", 409),
        );
        assert!(err.is_conflict() && !err.is_not_found());
        // EC2's throttling answer is a 503 with its own code.
        let err = sdk_error(
            "describe subnets",
            service_error("RequestLimitExceeded", 503),
        );
        assert!(err.is_throttled());
        let err = sdk_error("get role", service_error("Throttling", 400));
        assert!(err.is_throttled());
    }

    #[test]
    fn retry_config_is_standard_with_eight_attempts() {
        let r = default_retry_config();
        assert_eq!(r.mode(), aws_smithy_types::retry::RetryMode::Standard);
        assert_eq!(r.max_attempts(), 8);
    }
}
