//! Streaming subresources over WebSocket: `pods/exec` (channel protocol v4/v5, the command really runs
//! here, in the pod's sandbox directory) and `pods/portforward` (to the address the test registered),
//! the latter also as SPDY/3.1, tunnelled in WebSocket or after an `Upgrade: SPDY/3.1` (see `spdy`).

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};

use super::delay::{Io, with_latency};
use super::dial::{Target, dial, target};
use super::resources::{POD, RESOURCES};
use super::shared::{Body, Inner, Query, check_container, full};
use super::spdy;
use super::store::{ApiError, Sandbox};
use crate::rootfs;

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const STATUS: u8 = 3;
const RESIZE: u8 = 4;
const CLOSE: u8 = 255;

/// The sandbox directory of a pod: where its exec'd commands run.
pub(crate) fn pod_dir(root: &std::path::Path, ns: &str, pod: &str) -> PathBuf {
    root.join(ns).join(pod)
}

/// Answer an exec, attach or port-forward request: check the pod, then upgrade to WebSocket.
pub(crate) fn serve(
    inner: Arc<Inner>,
    mut req: Request<Incoming>,
    ns: String,
    name: String,
    sub: String,
    q: Query,
) -> Result<Response<Body>, ApiError> {
    let (containers, uid) = {
        let st = inner.lock();
        let pod = st
            .get(POD, &ns, &name)
            .ok_or_else(|| ApiError::not_found(&RESOURCES[POD], &name))?;
        if pod["spec"]["nodeName"].as_str().unwrap_or("").is_empty() {
            return Err(ApiError::bad_request(format!(
                "pod {name} does not have a host assigned"
            )));
        }
        let containers: Vec<String> = pod["spec"]["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["name"].as_str().map(str::to_string))
            .collect();
        if pod["status"]["phase"] != "Running" {
            let c = q.get("container").unwrap_or(containers[0].as_str());
            return Err(ApiError::bad_request(format!(
                "unable to upgrade connection: container not found (\"{c}\")"
            )));
        }
        (
            containers,
            pod["metadata"]["uid"].as_str().unwrap_or("").to_string(),
        )
    };
    if sub == "attach" {
        return Err(ApiError::bad_request(
            "attach is not supported by the gpulab emulator",
        ));
    }
    if sub == "exec" {
        check_container(&q, &containers, &name)?;
    }
    let upgrade = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if sub == "portforward" && upgrade.eq_ignore_ascii_case("SPDY/3.1") {
        let latency = *inner.latency.lock().unwrap_or_else(|e| e.into_inner());
        return Ok(spdy_upgrade(inner, req, ns, name, uid, latency));
    }
    let is_ws = upgrade.eq_ignore_ascii_case("websocket");
    let key = req.headers().get(header::SEC_WEBSOCKET_KEY).cloned();
    let (true, Some(key)) = (is_ws, key) else {
        return Err(ApiError::bad_request(
            "Upgrade request required: exec streams over WebSocket, port-forward over WebSocket or SPDY/3.1",
        ));
    };
    let offered: Vec<String> = req
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
        .collect();
    let supported: &[&str] = if sub == "exec" {
        &["v5.channel.k8s.io", "v4.channel.k8s.io"]
    } else {
        &[
            "v4.channel.k8s.io",
            "portforward.k8s.io",
            spdy::TUNNEL_PROTOCOL,
        ]
    };
    let Some(protocol) = offered
        .iter()
        .find(|p| supported.contains(&p.as_str()))
        .cloned()
    else {
        return Err(ApiError::bad_request(format!(
            "none of the offered WebSocket subprotocols {offered:?} is supported; use one of {supported:?}"
        )));
    };
    let latency = *inner.latency.lock().unwrap_or_else(|e| e.into_inner());
    let on_upgrade = hyper::upgrade::on(&mut req);
    let response = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::UPGRADE, "websocket")
        .header(header::CONNECTION, "Upgrade")
        .header(
            header::SEC_WEBSOCKET_ACCEPT,
            derive_accept_key(key.as_bytes()),
        )
        .header(header::SEC_WEBSOCKET_PROTOCOL, protocol.as_str())
        .body(full(Bytes::new()))
        .expect("response");
    if sub == "exec" {
        let command: Vec<String> = q.all("command").into_iter().map(str::to_string).collect();
        if command.is_empty() {
            return Err(ApiError::bad_request("you must specify at least 1 command"));
        }
        let dir = pod_dir(&inner.sandbox, &ns, &name);
        std::fs::create_dir_all(&dir)
            .map_err(|e| ApiError::new(500, "InternalError", format!("pod sandbox: {e}")))?;
        let sandbox = inner
            .lock()
            .sandboxes
            .get(&(ns.clone(), name.clone()))
            .cloned();
        let opts = ExecOptions {
            sandbox,
            command,
            stdin: q.get("stdin").is_some_and(|v| v == "true" || v == "1"),
            stdout: q.get("stdout").is_none_or(|v| v == "true" || v == "1"),
            stderr: q.get("stderr").is_none_or(|v| v == "true" || v == "1"),
            tty: q.get("tty").is_some_and(|v| v == "true" || v == "1"),
            v5: protocol == "v5.channel.k8s.io",
            dir,
            pod: format!("{ns}/{name}"),
        };
        tokio::spawn(async move {
            let up = on_upgrade.await;
            if let Ok(upgraded) = up {
                let ws = WebSocketStream::from_raw_socket(
                    with_latency(TokioIo::new(upgraded), latency),
                    Role::Server,
                    None,
                )
                .await;
                exec(ws, opts).await;
            }
        });
    } else if protocol == spdy::TUNNEL_PROTOCOL {
        let targets = spdy_targets(&inner, &ns, &name, uid);
        tokio::spawn(async move {
            if let Ok(upgraded) = on_upgrade.await {
                let ws = WebSocketStream::from_raw_socket(
                    with_latency(TokioIo::new(upgraded), latency),
                    Role::Server,
                    None,
                )
                .await;
                spdy_over_websocket(ws, targets).await;
            }
        });
    } else {
        let mut ports = Vec::new();
        for v in q.all("ports").into_iter().chain(q.all("port")) {
            for p in v.split(',') {
                let port: u16 = p
                    .trim()
                    .parse()
                    .map_err(|_| ApiError::bad_request(format!("invalid port {p:?}")))?;
                ports.push(port);
            }
        }
        if ports.is_empty() {
            return Err(ApiError::bad_request("at least one port must be specified"));
        }
        let targets: Vec<(u16, Option<Target>)> = {
            let st = inner.lock();
            ports
                .iter()
                .map(|p| (*p, target(&st, &ns, &name, *p)))
                .collect()
        };
        let pod = format!("{ns}/{name}");
        tokio::spawn(async move {
            if let Ok(upgraded) = on_upgrade.await {
                let ws = WebSocketStream::from_raw_socket(
                    with_latency(TokioIo::new(upgraded), latency),
                    Role::Server,
                    None,
                )
                .await;
                port_forward(ws, targets, &pod, &uid).await;
            }
        });
    }
    Ok(response)
}

struct ExecOptions {
    /// The pod's real container, when it runs one: the command runs in it.
    sandbox: Option<Sandbox>,
    command: Vec<String>,
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
    v5: bool,
    dir: PathBuf,
    pod: String,
}

/// A task that sends the messages put on the returned channel, then closes the WebSocket normally once
/// every sender is gone.
fn spawn_writer<S>(
    mut sink: futures_util::stream::SplitSink<WebSocketStream<S>, Message>,
) -> (mpsc::Sender<Message>, tokio::task::JoinHandle<()>)
where
    S: Io + 'static,
{
    let (out_tx, mut out_rx) = mpsc::channel::<Message>(64);
    let writer = tokio::spawn(async move {
        // Messages are written as they come and flushed once no more are waiting, as a kubelet's
        // buffered connection does.
        while let Some(m) = out_rx.recv().await {
            if sink.feed(m).await.is_err() {
                return;
            }
            while let Ok(m) = out_rx.try_recv() {
                if sink.feed(m).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
        let _ = sink.send(normal_close()).await;
        let _ = sink.close().await;
    });
    (out_tx, writer)
}

/// A close frame with status 1000: clients (gorilla/websocket in kubectl) treat a close without a
/// status as an error.
fn normal_close() -> Message {
    Message::Close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    }))
}

fn framed(channel: u8, data: &[u8]) -> Message {
    let mut v = Vec::with_capacity(data.len() + 1);
    v.push(channel);
    v.extend_from_slice(data);
    Message::binary(v)
}

/// How long a finished stream goes on reading what the client still sends, waiting for it to close.
const LINGER: std::time::Duration = std::time::Duration::from_secs(2);

/// End a stream's reading side the way a closing handshake ends (RFC 6455 §7.1.1: the server closes
/// the connection once the client has closed too), and as the API server's read loop, which runs until
/// the connection ends, does in effect: whatever the client sent is read, not left unread when the
/// socket closes. A socket closed with unread bytes answers with a reset, and a reset makes the client's
/// kernel drop what it has not read yet, such as an exec's exit status (the cause of a rare
/// "Connection reset by peer" after `gpulab exec -- echo hi`).
async fn linger(reader: tokio::task::JoinHandle<()>) {
    let abort = reader.abort_handle();
    if tokio::time::timeout(LINGER, reader).await.is_err() {
        abort.abort();
    }
}

/// How much one read from a command's output or a forwarded connection takes.
const READ_CHUNK: usize = 64 * 1024;

async fn pump(mut from: impl AsyncRead + Unpin, channel: u8, to: mpsc::Sender<Message>) {
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.send(framed(channel, &buf[..n])).await.is_err() {
                    break;
                }
            }
        }
    }
}

/// The exit status as the kubelet reports it on channel 3.
fn exit_status(command: &[String], code: i32) -> Value {
    if code == 0 {
        return json!({"metadata": {}, "status": "Success"});
    }
    json!({
        "metadata": {},
        "status": "Failure",
        "message": format!(
            "command terminated with non-zero exit code: error executing command [{}], exit code {code}",
            command.join(" ")
        ),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
    })
}

async fn exec<S>(ws: WebSocketStream<S>, o: ExecOptions)
where
    S: Io + 'static,
{
    let (sink, mut stream) = ws.split();
    let (out_tx, writer) = spawn_writer(sink);
    let mut cmd = match &o.sandbox {
        Some(sb) => rootfs::exec_in(sb.pid, &sb.env, &sb.working_dir, &o.command, &[]),
        None => {
            let mut cmd = tokio::process::Command::new(&o.command[0]);
            cmd.args(&o.command[1..])
                .current_dir(&o.dir)
                .env("GPULAB_EMULATOR_POD", &o.pod);
            cmd
        }
    };
    cmd.stdin(if o.stdin {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(if o.stdout {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stderr(if o.stderr || o.tty {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let status = json!({
                "metadata": {},
                "status": "Failure",
                "message": format!(
                    "Internal error occurred: error executing command in container: failed to exec in container: failed to start exec: OCI runtime exec failed: exec failed: unable to start container process: exec: \"{}\": {e}: unknown",
                    o.command[0]
                ),
                "reason": "InternalError",
                "code": 500,
                "details": {"causes": [{"message": e.to_string()}]},
            });
            let _ = out_tx
                .send(framed(STATUS, &serde_json::to_vec(&status).expect("json")))
                .await;
            drop(out_tx);
            let _ = writer.await;
            linger(tokio::spawn(async move {
                while let Some(Ok(m)) = stream.next().await {
                    if m.is_close() {
                        break;
                    }
                }
            }))
            .await;
            return;
        }
    };
    let mut pumps = Vec::new();
    if let Some(out) = child.stdout.take() {
        pumps.push(tokio::spawn(pump(out, STDOUT, out_tx.clone())));
    }
    if let Some(err) = child.stderr.take() {
        // with a TTY, stderr is merged into stdout
        let ch = if o.tty { STDOUT } else { STDERR };
        pumps.push(tokio::spawn(pump(err, ch, out_tx.clone())));
    }
    let mut stdin = child.stdin.take();
    let v5 = o.v5;
    let reader = tokio::spawn(async move {
        while let Some(msg) = stream.next().await {
            match msg {
                Ok(Message::Binary(b)) if !b.is_empty() => match b[0] {
                    STDIN => {
                        if let Some(s) = stdin.as_mut()
                            && s.write_all(&b[1..]).await.is_err()
                        {
                            stdin = None;
                        }
                    }
                    CLOSE if v5 && b.get(1) == Some(&STDIN) => stdin = None,
                    RESIZE => {}
                    _ => {}
                },
                Ok(Message::Close(_)) | Err(_) => break,
                _ => {}
            }
        }
        // the client closed the connection: stdin ends with it
        drop(stdin);
    });
    let code = match child.wait().await {
        Ok(status) => {
            use std::os::unix::process::ExitStatusExt;
            status
                .code()
                .or_else(|| status.signal().map(|s| 128 + s))
                .unwrap_or(1)
        }
        Err(_) => 1,
    };
    for p in pumps {
        let _ = p.await;
    }
    let status = exit_status(&o.command, code);
    let _ = out_tx
        .send(framed(STATUS, &serde_json::to_vec(&status).expect("json")))
        .await;
    drop(out_tx);
    let _ = writer.await;
    linger(reader).await;
}

async fn port_forward<S>(
    ws: WebSocketStream<S>,
    targets: Vec<(u16, Option<Target>)>,
    pod: &str,
    uid: &str,
) where
    S: Io + 'static,
{
    let (sink, mut stream) = ws.split();
    let (out_tx, writer) = spawn_writer(sink);
    let mut writers: Vec<Option<tokio::net::tcp::OwnedWriteHalf>> = Vec::new();
    let mut readers = Vec::new();
    for (i, (port, addr)) in targets.iter().enumerate() {
        let data = (2 * i) as u8;
        let error = data + 1;
        let le = port.to_le_bytes();
        let _ = out_tx.send(framed(data, &le)).await;
        let _ = out_tx.send(framed(error, &le)).await;
        let conn = dial(addr.as_ref(), *port).await;
        match conn {
            Ok(tcp) => {
                let (r, w) = tcp.into_split();
                writers.push(Some(w));
                readers.push(tokio::spawn(pump(r, data, out_tx.clone())));
            }
            Err(e) => {
                let msg = format!(
                    "error forwarding port {port} to pod {pod}, uid {uid}: failed to connect to localhost:{port} inside namespace: {e}"
                );
                let _ = out_tx.send(framed(error, msg.as_bytes())).await;
                writers.push(None);
            }
        }
    }
    let aborts: Vec<_> = readers.iter().map(|r| r.abort_handle()).collect();
    let all_read = async {
        for r in readers {
            let _ = r.await;
        }
    };
    {
        let relay = async {
            while let Some(msg) = stream.next().await {
                match msg {
                    Ok(Message::Binary(b)) if b.len() > 1 => {
                        let ch = b[0] as usize;
                        if ch.is_multiple_of(2)
                            && let Some(Some(w)) = writers.get_mut(ch / 2)
                            && w.write_all(&b[1..]).await.is_err()
                        {
                            writers[ch / 2] = None;
                        }
                    }
                    Ok(Message::Close(_)) | Err(_) => break,
                    _ => {}
                }
            }
        };
        tokio::pin!(relay);
        tokio::select! {
            _ = &mut relay => {
                // the client closed: nothing more goes its way
                aborts.iter().for_each(|a| a.abort());
                drop(out_tx);
                let _ = writer.await;
            }
            _ = all_read => {
                // the pod's side closed: send the close, then read on until the client closes too
                drop(out_tx);
                let _ = writer.await;
                let _ = tokio::time::timeout(LINGER, &mut relay).await;
            }
        }
    }
    for w in writers.iter_mut().flatten() {
        let _ = w.shutdown().await;
    }
}

/// The addresses a SPDY port-forward session of pod `ns/name` reaches, looked up per connection.
fn spdy_targets(inner: &Arc<Inner>, ns: &str, name: &str, uid: String) -> spdy::Targets {
    let lookup_inner = inner.clone();
    let (ns, name) = (ns.to_string(), name.to_string());
    spdy::Targets {
        pod: format!("{ns}/{name}"),
        uid,
        lookup: Arc::new(move |port| target(&lookup_inner.lock(), &ns, &name, port)),
    }
}

/// Port-forward after `Upgrade: SPDY/3.1` (kubectl's fallback): the connection itself carries SPDY.
fn spdy_upgrade(
    inner: Arc<Inner>,
    mut req: Request<Incoming>,
    ns: String,
    name: String,
    uid: String,
    latency: std::time::Duration,
) -> Response<Body> {
    let targets = spdy_targets(&inner, &ns, &name, uid);
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let (mut rd, wr) = tokio::io::split(with_latency(TokioIo::new(upgraded), latency));
        let (in_tx, in_rx) = mpsc::channel::<Vec<u8>>(64);
        let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(64);
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; READ_CHUNK];
            loop {
                // once the session is over, what still comes is read and dropped (see `linger`)
                match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if !in_tx.is_closed() {
                            let _ = in_tx.send(buf[..n].to_vec()).await;
                        }
                    }
                }
            }
        });
        let writer = tokio::spawn(async move {
            // Frames are written as they come and flushed once no more are waiting.
            let mut wr = tokio::io::BufWriter::with_capacity(READ_CHUNK * 2, wr);
            while let Some(chunk) = out_rx.recv().await {
                if wr.write_all(&chunk).await.is_err() {
                    return;
                }
                while let Ok(chunk) = out_rx.try_recv() {
                    if wr.write_all(&chunk).await.is_err() {
                        return;
                    }
                }
                if wr.flush().await.is_err() {
                    return;
                }
            }
            let _ = wr.shutdown().await;
        });
        spdy::serve(in_rx, out_tx, targets).await;
        let _ = writer.await;
        linger(reader).await;
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "SPDY/3.1")
        .header("X-Stream-Protocol-Version", spdy::PORT_FORWARD_PROTOCOL)
        .body(full(Bytes::new()))
        .expect("response")
}

/// Port-forward as SPDY tunnelled in WebSocket binary messages (kubectl 1.31+): each message carries
/// SPDY bytes, with no channel prefix; each frame we send is one message.
async fn spdy_over_websocket<S>(ws: WebSocketStream<S>, targets: spdy::Targets)
where
    S: Io + 'static,
{
    let (mut sink, mut stream) = ws.split();
    let (in_tx, in_rx) = mpsc::channel::<Vec<u8>>(64);
    let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(64);
    let reader = tokio::spawn(async move {
        // once the session is over, what still comes is read and dropped (see `linger`)
        while let Some(msg) = stream.next().await {
            match msg {
                Ok(Message::Binary(b)) if !in_tx.is_closed() => {
                    let _ = in_tx.send(b.to_vec()).await;
                }
                Ok(Message::Close(_)) | Err(_) => break,
                _ => {}
            }
        }
    });
    let writer = tokio::spawn(async move {
        while let Some(chunk) = out_rx.recv().await {
            if sink.feed(Message::binary(chunk)).await.is_err() {
                return;
            }
            while let Ok(chunk) = out_rx.try_recv() {
                if sink.feed(Message::binary(chunk)).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
        let _ = sink.send(normal_close()).await;
        let _ = sink.close().await;
    });
    spdy::serve(in_rx, out_tx, targets).await;
    let _ = writer.await;
    linger(reader).await;
}
