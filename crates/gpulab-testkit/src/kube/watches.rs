//! Watches: the initial events or a list, then every change that matches the watch's selectors,
//! with bookmarks, as the API server streams them (`?watch=true`).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::resources::RESOURCES;
use super::select::{FieldSelector, LabelSelector};
use super::shared::{Body, Inner, Query, json_response_raw};
use super::store::{ApiError, Change};

/// How a watch event looks to a watch with these filters (`None`: not at all).
fn view(
    change: &Change,
    ns: Option<&str>,
    labels: &LabelSelector,
    fields: &FieldSelector,
) -> Option<(&'static str, Value)> {
    let in_ns = |o: &Value| ns.is_none_or(|ns| o["metadata"]["namespace"] == ns);
    let m = |o: &Value| in_ns(o) && labels.matches(o) && fields.matches(o);
    let now_matches = m(&change.object);
    match (change.kind, change.prev.as_ref().map(m)) {
        ("MODIFIED", Some(true)) if now_matches => Some(("MODIFIED", change.object.clone())),
        ("MODIFIED", Some(true)) => Some(("DELETED", change.object.clone())),
        ("MODIFIED", _) if now_matches => Some(("ADDED", change.object.clone())),
        ("ADDED" | "DELETED", _) if now_matches => Some((change.kind, change.object.clone())),
        _ => None,
    }
}

fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": kind, "object": object})).expect("serialize");
    line.push(b'\n');
    Bytes::from(line)
}

fn bookmark(res: usize, rv: u64, initial_end: bool) -> Bytes {
    let def = &RESOURCES[res];
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    event_line(
        "BOOKMARK",
        &json!({"kind": def.kind, "apiVersion": def.api_version(), "metadata": meta}),
    )
}

pub(crate) fn watch_stream(
    inner: Arc<Inner>,
    res: usize,
    ns: Option<String>,
    q: &Query,
) -> Result<Response<Body>, ApiError> {
    let labels = LabelSelector::parse(q.get("labelSelector").unwrap_or(""))
        .map_err(ApiError::bad_request)?;
    let fields = FieldSelector::parse(q.get("fieldSelector").unwrap_or(""))
        .map_err(ApiError::bad_request)?;
    let bookmarks = q.flag("allowWatchBookmarks");
    let send_initial = q.flag("sendInitialEvents");
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs);
    let from: u64 = q
        .get("resourceVersion")
        .and_then(|r| r.parse().ok())
        .unwrap_or(0);
    let mut initial = Vec::new();
    let (mut rx, start_rv) = {
        let st = inner.lock();
        let rx = st.tx.subscribe();
        if from == 0 || send_initial {
            for o in st.list(res, ns.as_deref()) {
                if labels.matches(&o) && fields.matches(&o) {
                    initial.push(event_line("ADDED", &o));
                }
            }
            if send_initial && bookmarks {
                initial.push(bookmark(res, st.rv, true));
            }
        } else {
            match st.changes_since(from) {
                Some(changes) => {
                    for c in changes.iter().filter(|c| c.res == res) {
                        if let Some((kind, obj)) = view(c, ns.as_deref(), &labels, &fields) {
                            initial.push(event_line(kind, &obj));
                        }
                    }
                }
                None => {
                    let gone = ApiError::new(
                        410,
                        "Expired",
                        format!("too old resource version: {from} ({})", st.log_floor),
                    );
                    initial.push(event_line("ERROR", &gone.status()));
                    let body = initial.concat();
                    return Ok(json_response_raw(body));
                }
            }
        }
        (rx, st.rv)
    };
    let (tx, body_rx) = mpsc::channel::<Bytes>(256);
    let mut closed = inner.close_watches.subscribe();
    closed.borrow_and_update();
    let interval = *inner
        .bookmark_interval
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    tokio::spawn(async move {
        for line in initial {
            if tx.send(line).await.is_err() {
                return;
            }
        }
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        loop {
            let line = tokio::select! {
                ev = rx.recv() => match ev {
                    Ok(c) if c.rv > start_rv && c.res == res => match view(&c, ns.as_deref(), &labels, &fields) {
                        Some((kind, obj)) => event_line(kind, &obj),
                        None => continue,
                    },
                    Ok(_) => continue,
                    // lagging or shut down: end the watch, the client lists again
                    Err(_) => break,
                },
                _ = closed.changed() => break,
                _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => break,
                _ = tick.tick(), if bookmarks => {
                    let rv = inner.lock().rv;
                    bookmark(res, rv, false)
                }
                _ = tx.closed() => break,
            };
            if tx.send(line).await.is_err() {
                break;
            }
        }
    });
    let mut body_rx = body_rx;
    let stream = futures_util::stream::poll_fn(move |cx| {
        body_rx
            .poll_recv(cx)
            .map(|o| o.map(|b| Ok::<_, Infallible>(Frame::data(b))))
    });
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::TRANSFER_ENCODING, "chunked")
        .body(BodyExt::boxed_unsync(StreamBody::new(stream)))
        .expect("response"))
}
