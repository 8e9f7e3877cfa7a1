//! Connecting to a lab's cluster: a kube-rs [`kube::Client`] from a [`ClusterAccess`], and kube errors
//! turned into errors that say what to do.

use std::sync::Arc;

use base64::Engine;
use futures::StreamExt;
use futures::stream::BoxStream;
use http::{HeaderValue, Request, header::AUTHORIZATION};
use kube::client::retry::RetryPolicy;
use kube::client::{Body, ClientBuilder, ConfigExt, DynBody};
use kube::config::{KubeConfigOptions, Kubeconfig};
use tower::BoxError;
use tower::buffer::BufferLayer;
use tower::filter::{AsyncFilterLayer, AsyncPredicate};
use tower::retry::RetryLayer;
use tower::util::BoxService;
use tower::{ServiceBuilder, ServiceExt};

use crate::naming::LabId;
use crate::provision::{ClusterAccess, ClusterAuth, TokenSource};
use crate::{ApiError, Error, Result};
use kube::Api;
use kube::api::{DeleteParams, Preconditions, WatchParams};

/// Requests in flight to the API server before callers wait; watches and streams each hold one.
const MAX_IN_FLIGHT: usize = 256;

/// A client for the cluster `access` describes. Token-authenticated clients ask the token source before
/// every request, so a long `up` or an open port-forward outlives any one token.
pub async fn connect(access: &ClusterAccess) -> Result<kube::Client> {
    match &access.auth {
        ClusterAuth::Kubeconfig { path, context } => {
            let kubeconfig = match path {
                Some(path) => Kubeconfig::read_from(path),
                None => Kubeconfig::read(),
            }
            .map_err(|e| Error::Cluster {
                message: format!("cannot read the kubeconfig: {e}"),
                hint: Some(
                    "set KUBECONFIG, or pass the kubeconfig path of an existing cluster".into(),
                ),
                cause: None,
            })?;
            let options = KubeConfigOptions {
                context: context.clone(),
                ..Default::default()
            };
            let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .map_err(|e| Error::Cluster {
                    message: format!("the kubeconfig has no usable context: {e}"),
                    hint: Some("`kubectl config get-contexts` lists them".into()),
                    cause: None,
                })?;
            Ok(client_builder(config)?.build())
        }
        ClusterAuth::Token(source) => {
            let url = access.endpoint.parse().map_err(|e| Error::Cluster {
                message: format!(
                    "API server endpoint {:?} is not a URL: {e}",
                    access.endpoint
                ),
                hint: None,
                cause: None,
            })?;
            let mut config = kube::Config::new(url);
            if let Some(pem) = &access.ca_pem {
                config.root_cert = Some(pem_certificates(pem)?);
            }
            Ok(client_builder(config)?
                .with_layer(&BufferLayer::new(MAX_IN_FLIGHT))
                .with_layer(&AsyncFilterLayer::new(BearerAuth(source.clone())))
                .build())
        }
    }
}

/// The service under a kube client, boxed as kube-rs boxes its own.
type KubeService = BoxService<Request<Body>, http::Response<Box<DynBody>>, BoxError>;

/// kube-rs's client stack for `config` (its TLS, the base URI, the kubeconfig's auth and extra headers,
/// its retries of the API server's 429 and 503 and its connection timeouts) on a connector that sends
/// small writes at once (`TCP_NODELAY`).
///
/// kube-rs's own connector leaves Nagle's algorithm on, which holds a small write until everything sent
/// before it is acknowledged: a keystroke or an SSH window adjustment inside a port-forward waits up to a
/// round trip or the API server's delayed ACK. Go, and so kubectl, sets `TCP_NODELAY` on every
/// connection (`net.TCPConn.SetNoDelay`: "The default is true"). Left out from kube-rs's stack: its
/// tracing spans, and the expiry of a client certificate from an exec plugin (EKS's plugin gives tokens).
fn client_builder(config: kube::Config) -> Result<ClientBuilder<KubeService>> {
    let error = |e| cluster_error("connect", e);
    if config.proxy_url.is_some() {
        // kube-rs says what it cannot do with the kubeconfig's proxy-url (gpulab builds it without proxies)
        return ClientBuilder::try_from(config).map_err(error);
    }
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    let mut connector = hyper_timeout::TimeoutConnector::new(
        config
            .rustls_https_connector_with_connector(http)
            .map_err(error)?,
    );
    connector.set_connect_timeout(config.connect_timeout);
    connector.set_read_timeout(config.read_timeout);
    connector.set_write_timeout(config.write_timeout);
    connector.set_reset_reader_on_write(config.reset_reader_on_write);
    let client: hyper_util::client::legacy::Client<_, Body> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(connector);
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(
            config
                .default_retry
                .then(|| RetryLayer::new(RetryPolicy::server_retry())),
        )
        .option_layer(config.auth_layer().map_err(error)?)
        .layer(config.extra_headers_layer().map_err(error)?)
        .map_err(BoxError::from)
        .service(client)
        .map_response(|response| {
            response.map(|body| {
                Box::new(http_body_util::BodyExt::map_err(body, BoxError::from)) as Box<DynBody>
            })
        });
    Ok(ClientBuilder::new(
        BoxService::new(service),
        config.default_namespace,
    ))
}

/// Sets `Authorization: Bearer` from the token source on every request.
#[derive(Clone)]
struct BearerAuth(Arc<dyn TokenSource>);

impl AsyncPredicate<Request<Body>> for BearerAuth {
    type Future = std::pin::Pin<Box<dyn Future<Output = Result<Request<Body>, BoxError>> + Send>>;
    type Request = Request<Body>;

    fn check(&mut self, mut request: Request<Body>) -> Self::Future {
        let source = self.0.clone();
        Box::pin(async move {
            let token = source.token().await?;
            let value = HeaderValue::from_str(&format!("Bearer {}", token.token))?;
            request.headers_mut().insert(AUTHORIZATION, value);
            Ok(request)
        })
    }
}

/// The DER certificates in a PEM bundle.
fn pem_certificates(pem: &[u8]) -> Result<Vec<Vec<u8>>> {
    let text = String::from_utf8_lossy(pem);
    let mut certificates = Vec::new();
    let mut body: Option<String> = None;
    for line in text.lines().map(str::trim) {
        match (line, &mut body) {
            ("-----BEGIN CERTIFICATE-----", None) => body = Some(String::new()),
            ("-----END CERTIFICATE-----", Some(b64)) => {
                let der = base64::engine::general_purpose::STANDARD
                    .decode(b64.as_bytes())
                    .map_err(|e| Error::Cluster {
                        message: format!("the cluster's CA certificate is not valid base64: {e}"),
                        hint: None,
                        cause: None,
                    })?;
                certificates.push(der);
                body = None;
            }
            (line, Some(b64)) => b64.push_str(line),
            _ => {}
        }
    }
    if certificates.is_empty() {
        return Err(Error::Cluster {
            message: "the cluster's CA bundle holds no certificate".into(),
            hint: None,
            cause: None,
        });
    }
    Ok(certificates)
}

/// A kube error as a gpulab error: what was being done, what the API server said, what to do.
pub(crate) fn cluster_error(doing: &str, error: kube::Error) -> Error {
    let hint = match &error {
        kube::Error::Api(status) if status.code == 401 => {
            Some("the API server rejected gpulab's credentials: check your AWS credentials (`aws sts get-caller-identity`)".into())
        }
        kube::Error::Api(status) if status.code == 403 => {
            Some("your identity lacks permission in the cluster; the identity that ran `gpulab up` is its admin".into())
        }
        kube::Error::HyperError(_) | kube::Error::Service(_) => {
            Some("cannot reach the API server: is the lab up (`gpulab status`) and the network reachable?".into())
        }
        _ => None,
    };
    let (message, code, http_status) = match &error {
        kube::Error::Api(status) => (
            format!("{doing}: {} ({})", status.message, status.reason),
            Some(status.reason.clone()).filter(|r| !r.is_empty()),
            Some(status.code),
        ),
        other => (format!("{doing}: {other}"), None, None),
    };
    Error::Cluster {
        message,
        hint,
        cause: Some(ApiError {
            code,
            http_status,
            source: Box::new(error),
        }),
    }
}

/// True when the error is the API server's 404.
pub(crate) fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 404)
}

/// True when the error is the API server's 409: a conflict, or a failed precondition.
pub(crate) fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 409)
}

/// The changes of object `name` that `api` serves, from a watch, as wake-ups for
/// [`crate::wait::until_woken`]. A watch that cannot be opened gives no wake-ups: the wait then polls.
pub(crate) async fn changes_of<K>(api: &Api<K>, name: &str) -> BoxStream<'static, ()>
where
    K: Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    let params = WatchParams::default()
        .fields(&format!("metadata.name={name}"))
        .timeout(290);
    match api.watch(&params, "0").await {
        Ok(events) => events.map(drop).boxed(),
        Err(_) => futures::stream::empty().boxed(),
    }
}

/// Whether the cluster has the EBS CSI driver (its `CSIDriver` object, `ebs.csi.aws.com`), so that the
/// lab's own EBS StorageClass can provision volumes there.
pub(crate) async fn has_ebs_csi_driver(client: &kube::Client) -> Result<bool> {
    let drivers: Api<k8s_openapi::api::storage::v1::CSIDriver> = Api::all(client.clone());
    match drivers.get_opt("ebs.csi.aws.com").await {
        Ok(found) => Ok(found.is_some()),
        // A cluster that does not serve CSIDrivers to this identity has none gpulab can rely on.
        Err(kube::Error::Api(status)) if status.code == 403 => Ok(false),
        Err(e) => Err(cluster_error("look for the EBS CSI driver", e)),
    }
}

/// What [`delete_owned`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deletion {
    /// Nothing of that name.
    Absent,
    /// The lab's object, now deleted.
    Deleted,
    /// An object of that name without the lab's ID label: left alone.
    NotOurs,
}

/// Delete object `name` through `api` only if it carries lab `id`'s label, with the UID seen as a
/// precondition, so that an object made under the same name since the look is not deleted either.
pub(crate) async fn delete_owned<K>(
    api: &Api<K>,
    name: &str,
    id: &LabId,
    mut params: DeleteParams,
) -> Result<Deletion>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let what = |doing: &str| format!("{doing} {name}");
    let object = match api.get(name).await {
        Ok(object) => object,
        Err(e) if is_not_found(&e) => return Ok(Deletion::Absent),
        Err(e) => return Err(cluster_error(&what("read"), e)),
    };
    if !id.owns_map(object.meta().labels.as_ref()) {
        return Ok(Deletion::NotOurs);
    }
    params.preconditions = Some(Preconditions {
        uid: object.meta().uid.clone(),
        resource_version: None,
    });
    match api.delete(name, &params).await {
        Ok(_) => Ok(Deletion::Deleted),
        Err(e) if is_not_found(&e) => Ok(Deletion::Absent),
        // Replaced since the look: the new one is not the object that was checked.
        Err(e) if is_conflict(&e) => Ok(Deletion::NotOurs),
        Err(e) => Err(cluster_error(&what("delete"), e)),
    }
}

/// Whether any node of the cluster is Ready (a stopped lab has none).
pub async fn has_ready_node(client: &kube::Client) -> Result<bool> {
    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client.clone());
    let list = nodes
        .list(&Default::default())
        .await
        .map_err(|e| cluster_error("list the cluster's nodes", e))?;
    Ok(list.items.iter().any(|node| {
        node.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|conditions| {
                conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            })
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_bundles_decode_to_der() {
        let pem = "-----BEGIN CERTIFICATE-----\nAAEC\nAwQ=\n-----END CERTIFICATE-----\n-----BEGIN CERTIFICATE-----\nBQY=\n-----END CERTIFICATE-----\n";
        assert_eq!(
            pem_certificates(pem.as_bytes()).unwrap(),
            vec![vec![0, 1, 2, 3, 4], vec![5, 6]]
        );
        assert!(pem_certificates(b"no certificate here").is_err());
    }

    #[test]
    fn an_api_server_refusal_keeps_its_reason_and_status_for_callers_to_match() {
        let refusal = |message: &str, reason: &str, code: u16| {
            cluster_error(
                "get pod gpu-dev-pod-0",
                kube::Error::Api(
                    kube::core::Status::failure(message, reason)
                        .with_code(code)
                        .boxed(),
                ),
            )
        };
        let missing = refusal("pods \"gpu-dev-pod-0\" not found", "NotFound", 404);
        assert!(missing.is_not_found() && !missing.is_conflict() && !missing.is_throttled());
        assert_eq!(
            missing.to_string(),
            "cluster: get pod gpu-dev-pod-0: pods \"gpu-dev-pod-0\" not found (NotFound)"
        );
        let source = std::error::Error::source(&missing).expect("a source");
        assert_eq!(source.to_string(), "NotFound (HTTP 404)");
        assert!(source.source().is_some(), "kube's error is kept");
        assert!(refusal("the object has been modified", "Conflict", 409).is_conflict());
        assert!(refusal("already exists", "AlreadyExists", 409).is_conflict());
        assert!(refusal("too many requests", "TooManyRequests", 429).is_throttled());
    }
}
