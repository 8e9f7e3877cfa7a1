//! What every handler shares: the emulator's state behind the server, response bodies, query
//! parameters, and the API server's checks common to several endpoints.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use http::{Response, header};
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};
use serde_json::Value;
use tokio::sync::watch;

use super::store::{ApiError, State};

/// Response bodies.
pub(crate) type Body = UnsyncBoxBody<Bytes, Infallible>;

/// The emulator's shared state.
pub(crate) struct Inner {
    pub(crate) state: Mutex<State>,
    pub(crate) latency: Mutex<Duration>,
    pub(crate) fail_next: AtomicU64,
    pub(crate) close_watches: watch::Sender<u64>,
    pub(crate) bookmark_interval: Mutex<Duration>,
    pub(crate) sandbox: PathBuf,
    pub(crate) addr: SocketAddr,
}

impl Inner {
    /// The state, even if a panicking request poisoned the lock.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub(crate) fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed_unsync()
}

pub(crate) fn json_response(code: u16, v: &Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "application/json")
        .body(full(serde_json::to_vec(v).expect("serialize")))
        .expect("response")
}

pub(crate) fn json_response_raw(body: Vec<u8>) -> Response<Body> {
    Response::builder()
        .status(200)
        .header(header::CONTENT_TYPE, "application/json")
        .body(full(body))
        .expect("response")
}

pub(crate) fn error_response(e: &ApiError) -> Response<Body> {
    json_response(e.code, &e.status())
}

/// Decode `k=v&k2=v2` with percent-escapes and `+` as space.
pub(crate) fn query_pairs(q: &str) -> Vec<(String, String)> {
    fn decode(s: &str) -> String {
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < b.len() => {
                    let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
                    match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                        Some(v) => {
                            out.push(v);
                            i += 2;
                        }
                        None => out.push(b'%'),
                    }
                }
                c => out.push(c),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// Query parameters.
#[derive(Default)]
pub(crate) struct Query(pub(crate) Vec<(String, String)>);

impl Query {
    pub(crate) fn get(&self, k: &str) -> Option<&str> {
        self.0.iter().find(|(a, _)| a == k).map(|(_, v)| v.as_str())
    }
    pub(crate) fn all(&self, k: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(a, _)| a == k)
            .map(|(_, v)| v.as_str())
            .collect()
    }
    pub(crate) fn flag(&self, k: &str) -> bool {
        matches!(self.get(k), Some("true" | "1"))
    }
    pub(crate) fn dry_run(&self) -> bool {
        self.get("dryRun") == Some("All")
    }
}

/// The `container` parameter of a pod's log or exec, checked as the API server does: it must name one of
/// the pod's containers, and may be left out only when there is one.
pub(crate) fn check_container(q: &Query, containers: &[String], pod: &str) -> Result<(), ApiError> {
    match q.get("container") {
        Some(c) if !containers.iter().any(|x| x == c) => Err(ApiError::bad_request(format!(
            "container {c} is not valid for pod {pod}"
        ))),
        None if containers.len() > 1 => Err(ApiError::bad_request(format!(
            "a container name must be specified for pod {pod}, choose one of: [{}]",
            containers.join(" ")
        ))),
        _ => Ok(()),
    }
}
