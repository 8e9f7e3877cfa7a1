//! The EKS bearer token, made in-process as `aws eks get-token` makes it: a SigV4-presigned STS
//! `GetCallerIdentity` URL carrying the signed header `x-k8s-aws-id: <cluster>`, base64url-encoded
//! behind `k8s-aws-v1.`. The API server's authenticator replays the URL to STS to learn who the
//! caller is.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::http_request::{
    SignableBody, SignableRequest, SignatureLocation, SigningSettings, sign,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use base64::Engine;
use tokio::sync::Mutex;

use crate::provision::{BearerToken, TokenSource};
use crate::{Error, Result};

/// The prefix of EKS tokens.
pub const TOKEN_PREFIX: &str = "k8s-aws-v1.";
/// The header naming the cluster, signed into the URL.
pub const CLUSTER_ID_HEADER: &str = "x-k8s-aws-id";
/// How long the API server accepts a token after it was signed.
pub const TOKEN_VALIDITY: Duration = Duration::from_secs(15 * 60);
/// How long before [`TOKEN_VALIDITY`] ends gpulab reports the token as expired (as the aws CLI does),
/// leaving room for clock skew.
pub const TOKEN_EXPIRY_MARGIN: Duration = Duration::from_secs(60);
/// A cached token is replaced once it has less than this left.
pub const TOKEN_REFRESH_BEFORE: Duration = Duration::from_secs(60);

/// The presigned STS URL for `cluster` in `region`, signed with `credentials` at `now`.
pub fn presigned_url(
    credentials: &Credentials,
    region: &str,
    cluster: &str,
    now: SystemTime,
) -> Result<String> {
    let url =
        format!("https://sts.{region}.amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15");
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(Duration::from_secs(60));
    let identity: Identity = credentials.clone().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("sts")
        .time(now)
        .settings(settings)
        .build()
        .map_err(|e| token_error(e.to_string()))?
        .into();
    let signable = SignableRequest::new(
        "GET",
        url.as_str(),
        [(CLUSTER_ID_HEADER, cluster)].into_iter(),
        SignableBody::Bytes(&[]),
    )
    .map_err(|e| token_error(e.to_string()))?;
    let (instructions, _signature) = sign(signable, &params)
        .map_err(|e| token_error(e.to_string()))?
        .into_parts();
    let mut request = http::Request::builder()
        .method("GET")
        .uri(&url)
        .body(())
        .map_err(|e| token_error(e.to_string()))?;
    instructions.apply_to_request_http1x(&mut request);
    Ok(request.uri().to_string())
}

/// The EKS token for `cluster`: `k8s-aws-v1.` + base64url (no padding) of [`presigned_url`].
pub fn eks_token(
    credentials: &Credentials,
    region: &str,
    cluster: &str,
    now: SystemTime,
) -> Result<BearerToken> {
    let url = presigned_url(credentials, region, cluster, now)?;
    Ok(BearerToken {
        token: format!(
            "{TOKEN_PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(url)
        ),
        expires_at: now + TOKEN_VALIDITY - TOKEN_EXPIRY_MARGIN,
    })
}

fn token_error(message: String) -> Error {
    Error::Credentials {
        message: format!("sign the EKS token: {message}"),
        hint: "check that AWS credentials resolve (`aws sts get-caller-identity`)".into(),
    }
}

/// A [`TokenSource`] for one EKS cluster: resolves credentials through the SDK's provider chain,
/// signs in-process, and caches the token until a minute before it expires.
pub struct EksTokenSource {
    credentials: SharedCredentialsProvider,
    region: String,
    cluster: String,
    cached: Mutex<Option<BearerToken>>,
}

impl EksTokenSource {
    /// A token source for `cluster` in `region`, with credentials from `credentials`.
    pub fn new(credentials: SharedCredentialsProvider, region: &str, cluster: &str) -> Self {
        EksTokenSource {
            credentials,
            region: region.into(),
            cluster: cluster.into(),
            cached: Mutex::new(None),
        }
    }
}

#[async_trait]
impl TokenSource for EksTokenSource {
    async fn token(&self) -> Result<BearerToken> {
        let mut cached = self.cached.lock().await;
        let now = SystemTime::now();
        if let Some(token) = cached.as_ref()
            && token.expires_at > now + TOKEN_REFRESH_BEFORE
        {
            return Ok(token.clone());
        }
        let credentials =
            self.credentials
                .provide_credentials()
                .await
                .map_err(|e| Error::Credentials {
                    message: format!(
                        "resolve AWS credentials: {}",
                        aws_smithy_types::error::display::DisplayErrorContext(&e)
                    ),
                    hint: "check AWS_PROFILE / AWS_ACCESS_KEY_ID, or run `aws sso login`".into(),
                })?;
        let token = eks_token(&credentials, &self.region, &self.cluster, now)?;
        *cached = Some(token.clone());
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(url: &str) -> Vec<(String, String)> {
        let q = url.split_once('?').expect("query").1;
        q.split('&')
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (k.to_string(), v.to_string())
            })
            .collect()
    }

    #[test]
    fn token_decodes_to_a_presigned_sts_url() {
        let creds = Credentials::new("AKIDEXAMPLE", "secret", Some("session".into()), None, "t");
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let token = eks_token(&creds, "eu-west-1", "my-lab", now).unwrap();
        let b64 = token.token.strip_prefix(TOKEN_PREFIX).expect("prefix");
        assert!(!b64.contains('=') && !b64.contains('+') && !b64.contains('/'));
        let url = String::from_utf8(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(b64)
                .unwrap(),
        )
        .unwrap();
        assert!(
            url.starts_with("https://sts.eu-west-1.amazonaws.com/?"),
            "{url}"
        );
        let q = query(&url);
        let get = |k: &str| {
            q.iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| panic!("{k} missing in {url}"))
        };
        assert_eq!(get("Action"), "GetCallerIdentity");
        assert_eq!(get("Version"), "2011-06-15");
        assert_eq!(get("X-Amz-Expires"), "60");
        assert_eq!(get("X-Amz-Algorithm"), "AWS4-HMAC-SHA256");
        let signed = get("X-Amz-SignedHeaders");
        assert!(
            signed.split("%3B").any(|h| h == CLUSTER_ID_HEADER)
                || signed.split(';').any(|h| h == CLUSTER_ID_HEADER),
            "{signed}"
        );
        assert!(get("X-Amz-Credential").contains("eu-west-1%2Fsts%2Faws4_request"));
        assert_eq!(get("X-Amz-Security-Token"), "session");
        assert_eq!(get("X-Amz-Date"), "20231114T221320Z");
        assert_eq!(token.expires_at, now + Duration::from_secs(14 * 60));
    }

    #[tokio::test]
    async fn token_source_caches_until_near_expiry() {
        let creds = Credentials::new("AKID", "secret", None, None, "t");
        let source = EksTokenSource::new(SharedCredentialsProvider::new(creds), "us-west-2", "lab");
        let a = source.token().await.unwrap();
        let b = source.token().await.unwrap();
        assert_eq!(a, b);
        // A token that is about to expire is replaced.
        *source.cached.lock().await = Some(BearerToken {
            token: "old".into(),
            expires_at: SystemTime::now() + Duration::from_secs(30),
        });
        let c = source.token().await.unwrap();
        assert_ne!(c.token, "old");
        assert!(c.expires_at > SystemTime::now() + Duration::from_secs(13 * 60));
    }
}
