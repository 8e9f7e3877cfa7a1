//! A small HTTP proxy in front of an AWS emulator (moto) that injects faults on chosen operations:
//! throttling in the real error shapes of each protocol, 500s, and latency. A seeded RNG makes a test's
//! faults the same on every run. An [`Intercept`] can answer requests itself (what the emulator lacks).
//!
//! Operations are named as the SDK sends them: `Action=` of query-protocol requests (EC2, IAM, STS),
//! the part of `X-Amz-Target` after the dot for JSON protocols (Service Quotas, Tagging), and
//! `"<METHOD> <path>"` for REST protocols (EKS), which rules match by prefix.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

/// How an AWS service encodes requests and errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Form-encoded `Action=` requests, XML errors (EC2's own shape, or IAM/STS's `ErrorResponse`).
    Query,
    /// `X-Amz-Target` JSON requests, JSON errors with `__type`.
    Json,
    /// REST-JSON (EKS): errors named by the `x-amzn-ErrorType` header.
    RestJson,
}

/// One request as the proxy sees it.
#[derive(Debug, Clone)]
pub struct ProxyRequest {
    /// HTTP method.
    pub method: String,
    /// Path, without the query.
    pub path: String,
    /// The query string, if any.
    pub query: Option<String>,
    /// The request headers.
    pub headers: http::HeaderMap,
    /// The request body.
    pub body: Bytes,
    /// The protocol, from the headers and body.
    pub protocol: Protocol,
    /// The signing name of the service (`ec2`, `iam`, `eks`, …), from the SigV4 credential scope.
    pub service: String,
    /// The operation's name (see the module docs).
    pub operation: String,
}

/// A response the proxy sends instead of forwarding.
#[derive(Debug, Clone)]
pub struct ProxyResponse {
    /// HTTP status.
    pub status: u16,
    /// Headers.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

impl ProxyResponse {
    /// A JSON response.
    pub fn json(status: u16, value: &serde_json::Value) -> Self {
        ProxyResponse {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: value.to_string().into_bytes(),
        }
    }

    /// A Query-protocol (EC2) answer: HTTP 200 with an XML body.
    pub fn xml(body: String) -> Self {
        ProxyResponse {
            status: 200,
            headers: vec![("content-type".into(), "text/xml;charset=UTF-8".into())],
            body: body.into_bytes(),
        }
    }

    /// A REST-JSON error named by `x-amzn-ErrorType`, as EKS sends them.
    pub fn rest_error(status: u16, error_type: &str, message: &str) -> Self {
        let mut r = Self::json(status, &serde_json::json!({ "message": message }));
        r.headers
            .push(("x-amzn-errortype".into(), error_type.into()));
        r
    }
}

/// Answers some requests itself; `None` forwards the request upstream.
pub trait Intercept: Send + Sync {
    /// The response for `request`, or `None` to forward it.
    fn handle(&self, request: &ProxyRequest) -> Option<ProxyResponse>;
}

impl<F> Intercept for F
where
    F: Fn(&ProxyRequest) -> Option<ProxyResponse> + Send + Sync,
{
    fn handle(&self, request: &ProxyRequest) -> Option<ProxyResponse> {
        self(request)
    }
}

/// A fault to inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The service's throttling error: EC2 `RequestLimitExceeded` (503), IAM/STS `Throttling` (400),
    /// JSON and REST `ThrottlingException` (400 / 429).
    Throttle,
    /// An internal error with status 500.
    ServerError,
    /// A delay before forwarding.
    Latency(Duration),
}

/// Inject `fault` with `probability` on the matching operations.
#[derive(Debug, Clone)]
pub struct FaultRule {
    /// Operation names (REST ones match by prefix); empty matches every operation.
    pub operations: Vec<String>,
    /// What to inject.
    pub fault: Fault,
    /// Chance per request, 0.0–1.0.
    pub probability: f64,
}

impl FaultRule {
    /// `fault` on every operation with `probability`.
    pub fn all(fault: Fault, probability: f64) -> Self {
        FaultRule {
            operations: Vec::new(),
            fault,
            probability,
        }
    }

    /// `fault` on `operations` with `probability`.
    pub fn on(operations: &[&str], fault: Fault, probability: f64) -> Self {
        FaultRule {
            operations: operations.iter().map(|s| s.to_string()).collect(),
            fault,
            probability,
        }
    }

    fn matches(&self, op: &str) -> bool {
        self.operations.is_empty()
            || self
                .operations
                .iter()
                .any(|o| o == op || (o.contains(' ') && op.starts_with(o.as_str())))
    }
}

/// What the proxy does.
#[derive(Clone, Default)]
pub struct FaultConfig {
    /// Seed of the RNG that decides which requests get faults.
    pub seed: u64,
    /// The rules, checked in order; the first error fault that fires answers the request.
    pub rules: Vec<FaultRule>,
    /// Answers requests the upstream cannot.
    pub intercept: Option<Arc<dyn Intercept>>,
}

/// Counts of what the proxy did.
#[derive(Debug, Default)]
pub struct ProxyStats {
    /// Requests received.
    pub requests: AtomicUsize,
    /// Throttling errors injected.
    pub throttled: AtomicUsize,
    /// 500s injected.
    pub server_errors: AtomicUsize,
    /// Delays injected.
    pub delayed: AtomicUsize,
    /// Requests answered by the intercept.
    pub intercepted: AtomicUsize,
    /// Requests per operation.
    pub operations: Mutex<BTreeMap<String, usize>>,
}

struct State {
    upstream: SocketAddr,
    rules: Vec<FaultRule>,
    intercept: Option<Arc<dyn Intercept>>,
    rng: Mutex<u64>,
    stats: Arc<ProxyStats>,
}

/// The running proxy; stops when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    stats: Arc<ProxyStats>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Listen on a free loopback port and forward to `upstream`, applying `config`.
    pub async fn start(upstream: SocketAddr, config: FaultConfig) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let stats = Arc::new(ProxyStats::default());
        let state = Arc::new(State {
            upstream,
            rules: config.rules,
            intercept: config.intercept,
            rng: Mutex::new(config.seed ^ 0x9E37_79B9_7F4A_7C15),
            stats: stats.clone(),
        });
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, peer)) = listener.accept().await else {
                    continue;
                };
                let state = state.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(handle(&state, req, peer).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(FaultProxy { addr, stats, task })
    }

    /// The proxy's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The proxy's URL, for an SDK endpoint override.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// AWS's checkip service as the proxy plays it: `GET` answers the caller's address, one line, as
    /// <https://checkip.amazonaws.com> does (`SdkOptions::checkip_url`).
    pub fn checkip_url(&self) -> String {
        format!("http://{}{CHECKIP_PATH}", self.addr)
    }

    /// What the proxy has done so far.
    pub fn stats(&self) -> &ProxyStats {
        &self.stats
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl State {
    /// The next number in [0, 1) from a splitmix64 sequence.
    fn roll(&self) -> f64 {
        let mut s = self.rng.lock().expect("rng lock");
        *s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn form_value(body: &str, key: &str) -> Option<String> {
    body.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| v.to_string())
    })
}

fn describe(
    method: &str,
    path: &str,
    query: Option<&str>,
    headers: &http::HeaderMap,
    body: &Bytes,
) -> (Protocol, String, String) {
    let service = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|a| a.split("Credential=").nth(1))
        .and_then(|c| c.split('/').nth(3))
        .unwrap_or("")
        .to_string();
    if let Some(target) = headers.get("x-amz-target").and_then(|v| v.to_str().ok()) {
        let op = target.rsplit('.').next().unwrap_or(target).to_string();
        return (Protocol::Json, service, op);
    }
    let text = std::str::from_utf8(body).unwrap_or("");
    if let Some(op) =
        form_value(text, "Action").or_else(|| query.and_then(|q| form_value(q, "Action")))
    {
        return (Protocol::Query, service, op);
    }
    (Protocol::RestJson, service, format!("{method} {path}"))
}

fn request_id(state: &State) -> String {
    format!("{:016x}", (state.roll() * u64::MAX as f64) as u64)
}

/// The fault's response in the shape `req`'s service uses.
fn fault_response(state: &State, req: &ProxyRequest, throttle: bool) -> ProxyResponse {
    let id = request_id(state);
    match req.protocol {
        Protocol::Query if req.service == "ec2" => {
            let (status, code, message) = if throttle {
                (503, "RequestLimitExceeded", "Request limit exceeded.")
            } else {
                (500, "InternalError", "An internal error has occurred")
            };
            ProxyResponse {
                status,
                headers: vec![("content-type".into(), "text/xml;charset=UTF-8".into())],
                body: format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors><RequestID>{id}</RequestID></Response>"
                )
                .into_bytes(),
            }
        }
        Protocol::Query => {
            let (status, kind, code, message) = if throttle {
                (400, "Sender", "Throttling", "Rate exceeded")
            } else {
                (
                    500,
                    "Receiver",
                    "InternalFailure",
                    "An internal error has occurred",
                )
            };
            ProxyResponse {
                status,
                headers: vec![("content-type".into(), "text/xml".into())],
                body: format!(
                    "<ErrorResponse><Error><Type>{kind}</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>{id}</RequestId></ErrorResponse>"
                )
                .into_bytes(),
            }
        }
        Protocol::Json => {
            let (status, code) = if throttle {
                (400, "ThrottlingException")
            } else {
                (500, "InternalFailure")
            };
            ProxyResponse {
                status,
                headers: vec![
                    ("content-type".into(), "application/x-amz-json-1.1".into()),
                    ("x-amzn-errortype".into(), code.into()),
                    ("x-amzn-requestid".into(), id),
                ],
                body: serde_json::json!({"__type": code, "message": "Rate exceeded"})
                    .to_string()
                    .into_bytes(),
            }
        }
        Protocol::RestJson => {
            if throttle {
                ProxyResponse::rest_error(429, "ThrottlingException", "Rate exceeded")
            } else {
                ProxyResponse::rest_error(500, "ServerException", "An internal error has occurred")
            }
        }
    }
}

fn to_hyper(r: ProxyResponse) -> Response<Full<Bytes>> {
    let mut builder = Response::builder().status(r.status);
    for (k, v) in &r.headers {
        builder = builder.header(k, v);
    }
    builder
        .body(Full::new(Bytes::from(r.body)))
        .expect("a valid response")
}

/// Where the proxy answers as checkip.amazonaws.com.
const CHECKIP_PATH: &str = "/checkip";

async fn handle(state: &State, req: Request<Incoming>, peer: SocketAddr) -> Response<Full<Bytes>> {
    if req.method() == hyper::Method::GET && req.uri().path() == CHECKIP_PATH {
        return Response::new(Full::new(Bytes::from(format!("{}\n", peer.ip()))));
    }
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return to_hyper(ProxyResponse::json(
                400,
                &serde_json::json!({"message": e.to_string()}),
            ));
        }
    };
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().map(str::to_owned);
    let (protocol, service, operation) = describe(
        parts.method.as_str(),
        &path,
        query.as_deref(),
        &parts.headers,
        &body,
    );
    let preq = ProxyRequest {
        method: parts.method.to_string(),
        path,
        query,
        headers: parts.headers.clone(),
        body: body.clone(),
        protocol,
        service,
        operation,
    };
    state.stats.requests.fetch_add(1, Ordering::SeqCst);
    *state
        .stats
        .operations
        .lock()
        .expect("stats lock")
        .entry(preq.operation.clone())
        .or_default() += 1;

    for rule in &state.rules {
        if !rule.matches(&preq.operation) || state.roll() >= rule.probability {
            continue;
        }
        match rule.fault {
            Fault::Latency(d) => {
                state.stats.delayed.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(d).await;
            }
            Fault::Throttle => {
                state.stats.throttled.fetch_add(1, Ordering::SeqCst);
                return to_hyper(fault_response(state, &preq, true));
            }
            Fault::ServerError => {
                state.stats.server_errors.fetch_add(1, Ordering::SeqCst);
                return to_hyper(fault_response(state, &preq, false));
            }
        }
    }

    if let Some(intercept) = &state.intercept
        && let Some(resp) = intercept.handle(&preq)
    {
        state.stats.intercepted.fetch_add(1, Ordering::SeqCst);
        return to_hyper(resp);
    }

    match forward(state.upstream, parts, body).await {
        Ok(resp) => resp,
        Err(e) => to_hyper(ProxyResponse::json(
            502,
            &serde_json::json!({"message": format!("fault proxy: upstream: {e}")}),
        )),
    }
}

async fn forward(
    upstream: SocketAddr,
    parts: http::request::Parts,
    body: Bytes,
) -> Result<Response<Full<Bytes>>, Box<dyn std::error::Error + Send + Sync>> {
    let stream = TcpStream::connect(upstream).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut builder = Request::builder().method(parts.method).uri(
        parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/"),
    );
    for (k, v) in &parts.headers {
        builder = builder.header(k, v);
    }
    let resp = sender.send_request(builder.body(Full::new(body))?).await?;
    let (rparts, rbody) = resp.into_parts();
    let bytes = rbody.collect().await?.to_bytes();
    let mut out = Response::from_parts(rparts, Full::new(bytes.clone()));
    out.headers_mut().remove(http::header::TRANSFER_ENCODING);
    out.headers_mut()
        .insert(http::header::CONTENT_LENGTH, bytes.len().into());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_are_named_per_protocol() {
        let mut h = http::HeaderMap::new();
        h.insert(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=AK/20240101/us-west-2/ec2/aws4_request, SignedHeaders=host"
                .parse()
                .unwrap(),
        );
        let (p, s, op) = describe(
            "POST",
            "/",
            None,
            &h,
            &Bytes::from("Action=CreateVpc&Version=2016-11-15"),
        );
        assert_eq!(
            (p, s.as_str(), op.as_str()),
            (Protocol::Query, "ec2", "CreateVpc")
        );
        h.insert(
            "x-amz-target",
            "ServiceQuotasV20190624.GetServiceQuota".parse().unwrap(),
        );
        let (p, _, op) = describe("POST", "/", None, &h, &Bytes::new());
        assert_eq!((p, op.as_str()), (Protocol::Json, "GetServiceQuota"));
        let (p, _, op) = describe(
            "POST",
            "/clusters",
            None,
            &http::HeaderMap::new(),
            &Bytes::new(),
        );
        assert_eq!((p, op.as_str()), (Protocol::RestJson, "POST /clusters"));
        assert!(FaultRule::on(&["GET /clusters"], Fault::Throttle, 1.0).matches("GET /clusters/x"));
        assert!(!FaultRule::on(&["CreateVpc"], Fault::Throttle, 1.0).matches("CreateVpcs"));
    }
}
