//! The API server's exec and port-forward streams, spoken by gpulab itself over kube's WebSocket
//! connection (`Client::connect`).
//!
//! kube-rs's own `AttachedProcess` and `Portforwarder` pass bytes through 1 KiB (exec) and 4 KiB
//! (port-forward) buffers and flush the WebSocket after every message, so a 512 MiB upload through exec
//! became half a million WebSocket messages, and every port-forwarded byte took two extra copies and a
//! hop between tasks. Here a command's standard input goes out in messages of up to [`MESSAGE`] bytes
//! (whatever the source has ready, read without waiting), its output is written straight from each
//! message, and a port-forward is a [`Tunnel`] that reads and writes the WebSocket itself: one message per
//! write (up to [`MESSAGE`]), sent at once when the socket takes it.
//!
//! The protocols are Kubernetes' channel protocols (`v5.channel.k8s.io`, falling back to
//! `v4.channel.k8s.io`): every binary message starts with its channel number. Exec: 0 stdin, 1 stdout,
//! 2 stderr, 3 the exit status (a `Status` object), and in v5 255 to close a channel (`[255, 0]` ends
//! stdin). Port-forward: for the n-th port, channel 2n carries data and 2n+1 errors, and the first message
//! on each is the port number (two bytes, little-endian).

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use futures::{FutureExt, SinkExt, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use kube::api::AttachParams;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{self as ws, Message};

use super::{ExecStreams, Tunnel};
use crate::cluster::cluster_error;
use crate::{Error, Result};

/// The size of the buffers between a stream and the code that reads or writes it.
pub(crate) const CHUNK: usize = 256 * 1024;

/// The most bytes one WebSocket message carries: kubectl's size (client-go copies standard input and
/// forwarded connections with `io.Copy`'s 32 KiB buffer, a message per read), the traffic API servers
/// and kubelets see every day. A server takes each message whole before passing it on; with 256 KiB
/// messages the emulated API server spent 50% more CPU on an upload than on kubectl's, and the
/// 512 MiB `--via kube` upload at 0 ms went from 0.62–0.86x of `kubectl cp` to 0.98–1.05x at 32 KiB.
pub(crate) const MESSAGE: usize = 32 * 1024;

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const STATUS: u8 = 3;
const CLOSE: u8 = 255;

fn pods_path(namespace: &str) -> String {
    <Pod as kube::Resource>::url_path(&(), Some(namespace))
}

fn build_err(what: &str, e: kube::core::request::Error) -> Error {
    Error::Remote {
        message: format!("{what}: {e}"),
        hint: None,
    }
}

/// Read what `input` has into `buf` (after what it holds, the channel byte) up to [`MESSAGE`] more bytes:
/// wait for the first bytes, then take more only while more are ready at once. 0 at the end of input.
async fn read_ready(
    input: &mut (impl AsyncRead + Unpin + ?Sized),
    buf: &mut Vec<u8>,
) -> std::io::Result<usize> {
    let start = buf.len();
    let limit = start + MESSAGE;
    buf.reserve(MESSAGE);
    let room = |buf: &Vec<u8>| (limit - buf.len()) as u64;
    if (&mut *input).take(room(buf)).read_buf(buf).await? == 0 {
        return Ok(0);
    }
    while buf.len() < limit {
        match (&mut *input).take(room(buf)).read_buf(buf).now_or_never() {
            Some(Ok(0)) | None => break,
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e),
        }
    }
    Ok(buf.len() - start)
}

/// Run `argv` in `pod` (its `container`) through the API server's exec, streaming `streams`, and return
/// the status the API server reports on the status channel (`None` when the stream ended without one).
pub(crate) async fn exec(
    client: &kube::Client,
    namespace: &str,
    pod: &str,
    container: Option<&str>,
    argv: Vec<String>,
    streams: ExecStreams<'_>,
) -> Result<Option<Status>> {
    let mut params = AttachParams::default()
        .stdin(streams.stdin.is_some())
        .stdout(true)
        .stderr(true);
    if let Some(container) = container {
        params = params.container(container);
    }
    let request = kube::core::Request::new(pods_path(namespace))
        .exec(pod, argv, &params)
        .map_err(|e| build_err("exec", e))?;
    let connection = client
        .connect(request)
        .await
        .map_err(|e| cluster_error(&format!("exec in pod {pod}"), e))?;
    crate::profile::mark("exec stream open");
    let v5 = connection.supports_stream_close();
    let (mut sink, mut source) = connection.into_stream().split();
    let ExecStreams {
        stdin,
        mut stdout,
        mut stderr,
    } = streams;
    let stream_error = |e: std::io::Error| Error::Remote {
        message: format!("exec stream: {e}"),
        hint: None,
    };
    let ws_error = |e: ws::Error| Error::Remote {
        message: format!("exec stream: {e}"),
        hint: Some("the connection to the API server dropped; retry".into()),
    };
    // A send that fails ends the input but not the command: the connection is going, and the output side
    // still reads what came before it (the exit status among it) or reports the drop.
    let feed = async {
        let Some(mut input) = stdin else {
            return Ok::<_, Error>(());
        };
        loop {
            let mut message = Vec::with_capacity(MESSAGE + 1);
            message.push(STDIN);
            if read_ready(&mut input, &mut message)
                .await
                .map_err(stream_error)?
                == 0
            {
                break;
            }
            if sink.send(Message::binary(message)).await.is_err() {
                return Ok(());
            }
        }
        let _ = if v5 {
            sink.send(Message::binary(vec![CLOSE, STDIN])).await
        } else {
            // v4 has no way to end stdin alone: end the whole stream, as kubectl does.
            sink.close().await
        };
        Ok(())
    };
    let outputs = async {
        let mut status = None;
        while let Some(message) = source.next().await {
            match message.map_err(ws_error)? {
                Message::Binary(b) if b.len() > 1 => match b[0] {
                    STDOUT => stdout.write_all(&b[1..]).await.map_err(stream_error)?,
                    STDERR => stderr.write_all(&b[1..]).await.map_err(stream_error)?,
                    STATUS => {
                        status = Some(serde_json::from_slice::<Status>(&b[1..]).map_err(|e| {
                            Error::Remote {
                                message: format!("exec: an exit status gpulab cannot read: {e}"),
                                hint: None,
                            }
                        })?);
                        break;
                    }
                    _ => {}
                },
                Message::Close(_) => break,
                _ => {}
            }
        }
        stdout.flush().await.map_err(stream_error)?;
        stderr.flush().await.map_err(stream_error)?;
        Ok::<_, Error>(status)
    };
    tokio::pin!(feed, outputs);
    // The command is done when its output ends; input it never read (a script's stdin left open) must not
    // keep us waiting.
    let mut feeding = true;
    loop {
        tokio::select! {
            fed = &mut feed, if feeding => {
                fed?;
                feeding = false;
            }
            done = &mut outputs => return done,
        }
    }
}

/// A port-forward to `port` of `pod`: a byte stream over its own WebSocket connection.
pub(crate) async fn port_forward(
    client: &kube::Client,
    namespace: &str,
    pod: &str,
    port: u16,
) -> Result<Box<dyn Tunnel>> {
    let request = kube::core::Request::new(pods_path(namespace))
        .portforward(pod, &[port])
        .map_err(|e| build_err("port-forward", e))?;
    let connection = client
        .connect(request)
        .await
        .map_err(|e| cluster_error(&format!("port-forward to {pod}:{port}"), e))?;
    Ok(Box::new(ForwardStream::new(connection.into_stream())))
}

/// One forwarded port's byte stream on a WebSocket: reads come from the data channel's messages, writes
/// go out as one message each; a message on the error channel is a read error.
pub(crate) struct ForwardStream<S> {
    ws: WebSocketStream<S>,
    /// Data received and not yet read.
    pending: Bytes,
    /// Whether the data and error channels have sent their port numbers.
    data_started: bool,
    error_started: bool,
    /// The error channel's message, once one came.
    error: Option<String>,
    eof: bool,
}

impl<S> ForwardStream<S> {
    pub(crate) fn new(ws: WebSocketStream<S>) -> Self {
        ForwardStream {
            ws,
            pending: Bytes::new(),
            data_started: false,
            error_started: false,
            error: None,
            eof: false,
        }
    }
}

fn to_io(e: ws::Error) -> std::io::Error {
    match e {
        ws::Error::Io(e) => e,
        ws::Error::ConnectionClosed | ws::Error::AlreadyClosed => {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the port-forward closed")
        }
        other => std::io::Error::other(other),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for ForwardStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.pending.is_empty() {
                let n = this.pending.len().min(buf.remaining());
                buf.put_slice(&this.pending[..n]);
                this.pending.advance(n);
                return Poll::Ready(Ok(()));
            }
            if let Some(message) = &this.error {
                return Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionRefused,
                    message.clone(),
                )));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            match ready!(this.ws.poll_next_unpin(cx)) {
                None | Some(Ok(Message::Close(_))) => this.eof = true,
                Some(Err(ws::Error::ConnectionClosed | ws::Error::AlreadyClosed)) => {
                    this.eof = true
                }
                Some(Err(e)) => return Poll::Ready(Err(to_io(e))),
                Some(Ok(Message::Binary(mut b))) if !b.is_empty() => {
                    let channel = b[0];
                    b.advance(1);
                    match channel {
                        0 if !this.data_started => {
                            this.data_started = true;
                            b.advance(b.len().min(2));
                            this.pending = b;
                        }
                        0 => this.pending = b,
                        1 if !this.error_started => {
                            this.error_started = true;
                            b.advance(b.len().min(2));
                            if !b.is_empty() {
                                this.error = Some(String::from_utf8_lossy(&b).into_owned());
                            }
                        }
                        1 if !b.is_empty() => {
                            this.error = Some(String::from_utf8_lossy(&b).into_owned())
                        }
                        _ => {}
                    }
                }
                Some(Ok(_)) => {}
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for ForwardStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        ready!(self.ws.poll_ready_unpin(cx)).map_err(to_io)?;
        let n = buf.len().min(MESSAGE);
        let mut message = Vec::with_capacity(n + 1);
        message.push(0);
        message.extend_from_slice(&buf[..n]);
        self.ws
            .start_send_unpin(Message::binary(message))
            .map_err(to_io)?;
        // Send it now if the socket takes it: callers that write and then only read (a protocol's
        // greeting) never flush. What the socket does not take goes with the next write, flush or read.
        if let Poll::Ready(Err(e)) = self.ws.poll_flush_unpin(cx) {
            return Poll::Ready(Err(to_io(e)));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.ws.poll_flush_unpin(cx).map_err(to_io)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        // The port-forward protocol cannot end one direction: ending the stream ends both.
        match ready!(self.ws.poll_close_unpin(cx)) {
            Ok(()) | Err(ws::Error::ConnectionClosed | ws::Error::AlreadyClosed) => {
                Poll::Ready(Ok(()))
            }
            Err(e) => Poll::Ready(Err(to_io(e))),
        }
    }
}
