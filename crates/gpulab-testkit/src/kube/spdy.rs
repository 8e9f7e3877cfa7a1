//! `pods/portforward` over SPDY/3.1, as `kubectl port-forward` speaks it: tunnelled in WebSocket binary
//! messages (subprotocol `SPDY/3.1+portforward.k8s.io`, the default since kubectl 1.31, KEP-4006), or
//! on the connection itself after an `Upgrade: SPDY/3.1` (the older path kubectl falls back to).
//!
//! The part of SPDY/3 the port-forward protocol uses: frames with an 8-byte header (control frames:
//! version 3 and a type; data frames: a stream id), `SYN_STREAM` from the client for each stream with a
//! zlib-compressed header block (one zlib stream per direction, the SPDY/3 preset dictionary, a sync
//! flush after each block), `SYN_REPLY` from us, `DATA` with `FIN` to half-close, `RST_STREAM`, `PING`
//! (echoed) and `GOAWAY`. Flow control (`WINDOW_UPDATE`, `SETTINGS`) is ignored, as spdystream does.
//!
//! Each forwarded connection is a pair of streams with the same `requestID` header: an `error` stream
//! and a `data` stream, both naming the `port`. Once both exist, the data stream is joined to the
//! address the test registered for that port; a failure to connect is written to the error stream.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

const VERSION: u16 = 3;
const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const FLAG_FIN: u8 = 1;
/// RST_STREAM status `CANCEL`.
const CANCEL: u32 = 5;

/// The WebSocket subprotocol of SPDY tunnelled over WebSocket for port-forward.
pub(crate) const TUNNEL_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";
/// The stream protocol negotiated on a plain SPDY upgrade (`X-Stream-Protocol-Version`).
pub(crate) const PORT_FORWARD_PROTOCOL: &str = "portforward.k8s.io";

/// The SPDY/3 header compression dictionary (draft-mbelshe-httpbis-spdy-00, 2.6.10.1): length-prefixed
/// header names and values, then common value fragments.
static DICTIONARY: LazyLock<Vec<u8>> = LazyLock::new(|| {
    const WORDS: &[&str] = &[
        "options",
        "head",
        "post",
        "put",
        "delete",
        "trace",
        "accept",
        "accept-charset",
        "accept-encoding",
        "accept-language",
        "accept-ranges",
        "age",
        "allow",
        "authorization",
        "cache-control",
        "connection",
        "content-base",
        "content-encoding",
        "content-language",
        "content-length",
        "content-location",
        "content-md5",
        "content-range",
        "content-type",
        "date",
        "etag",
        "expect",
        "expires",
        "from",
        "host",
        "if-match",
        "if-modified-since",
        "if-none-match",
        "if-range",
        "if-unmodified-since",
        "last-modified",
        "location",
        "max-forwards",
        "pragma",
        "proxy-authenticate",
        "proxy-authorization",
        "range",
        "referer",
        "retry-after",
        "server",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "user-agent",
        "vary",
        "via",
        "warning",
        "www-authenticate",
        "method",
        "get",
        "status",
        "200 OK",
        "version",
        "HTTP/1.1",
        "url",
        "public",
        "set-cookie",
        "keep-alive",
        "origin",
    ];
    const TAIL: &str = concat!(
        "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505",
        "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request",
        "401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented",
        "503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 ",
        "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,",
        "application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age=",
        "gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
    );
    let mut dict = Vec::with_capacity(1424);
    for w in WORDS {
        dict.extend_from_slice(&(w.len() as u32).to_be_bytes());
        dict.extend_from_slice(w.as_bytes());
    }
    dict.extend_from_slice(TAIL.as_bytes());
    dict
});

/// One SPDY frame.
#[derive(Debug, PartialEq)]
enum Frame {
    Control {
        kind: u16,
        flags: u8,
        payload: Vec<u8>,
    },
    Data {
        stream: u32,
        flags: u8,
        payload: Vec<u8>,
    },
}

/// Splits a byte stream into frames.
#[derive(Default)]
struct FrameReader {
    buf: Vec<u8>,
    /// Where the next frame starts in `buf`: consumed bytes are dropped in one go, not per frame.
    start: usize,
}

impl FrameReader {
    fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    fn next_frame(&mut self) -> Option<Frame> {
        let b = &self.buf[self.start..];
        if b.len() < 8 {
            return None;
        }
        let len = u32::from_be_bytes([0, b[5], b[6], b[7]]) as usize;
        if b.len() < 8 + len {
            return None;
        }
        let flags = b[4];
        let payload = b[8..8 + len].to_vec();
        let frame = if b[0] & 0x80 != 0 {
            Frame::Control {
                kind: u16::from_be_bytes([b[2], b[3]]),
                flags,
                payload,
            }
        } else {
            Frame::Data {
                stream: u32::from_be_bytes([b[0] & 0x7f, b[1], b[2], b[3]]),
                flags,
                payload,
            }
        };
        self.start += 8 + len;
        Some(frame)
    }
}

fn control_frame(kind: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + payload.len());
    v.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
    v.extend_from_slice(&kind.to_be_bytes());
    v.push(flags);
    v.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    v.extend_from_slice(payload);
    v
}

fn data_frame(stream: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + payload.len());
    v.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    v.push(flags);
    v.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    v.extend_from_slice(payload);
    v
}

/// The two zlib streams of a connection's header blocks (one each way, both with the dictionary).
struct HeaderCodec {
    inflate: Decompress,
    deflate: Compress,
}

impl HeaderCodec {
    fn new() -> Self {
        let mut deflate = Compress::new(Compression::default(), true);
        deflate
            .set_dictionary(&DICTIONARY)
            .expect("a fresh deflate stream takes a dictionary");
        HeaderCodec {
            inflate: Decompress::new(true),
            deflate,
        }
    }

    /// Decompress one header block and parse its name/value pairs (SPDY/3: 32-bit counts and lengths;
    /// several values of one name are NUL-separated).
    fn decode(&mut self, block: &[u8]) -> Result<Vec<(String, String)>, String> {
        let mut out = Vec::with_capacity(block.len() * 4 + 256);
        let mut pos = 0;
        loop {
            if out.len() == out.capacity() {
                out.reserve(out.capacity());
            }
            let before = self.inflate.total_in();
            let result =
                self.inflate
                    .decompress_vec(&block[pos..], &mut out, FlushDecompress::Sync);
            pos += (self.inflate.total_in() - before) as usize;
            match result {
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate
                        .set_dictionary(&DICTIONARY)
                        .map_err(|e| format!("header dictionary: {e}"))?;
                }
                Err(e) => return Err(format!("header block: {e}")),
            }
            if pos >= block.len() && out.len() < out.capacity() {
                break;
            }
        }
        parse_header_block(&out)
    }

    /// Serialize and compress a header block (with a sync flush, so the peer can read it at once).
    fn encode(&mut self, headers: &[(&str, &str)]) -> Vec<u8> {
        let mut raw = Vec::new();
        raw.extend_from_slice(&(headers.len() as u32).to_be_bytes());
        for (name, value) in headers {
            raw.extend_from_slice(&(name.len() as u32).to_be_bytes());
            raw.extend_from_slice(name.to_ascii_lowercase().as_bytes());
            raw.extend_from_slice(&(value.len() as u32).to_be_bytes());
            raw.extend_from_slice(value.as_bytes());
        }
        let mut out = Vec::with_capacity(raw.len() + 64);
        let start = self.deflate.total_in();
        loop {
            if out.len() == out.capacity() {
                out.reserve(out.capacity().max(64));
            }
            let used = (self.deflate.total_in() - start) as usize;
            self.deflate
                .compress_vec(&raw[used..], &mut out, FlushCompress::Sync)
                .expect("deflate into memory");
            if (self.deflate.total_in() - start) as usize == raw.len() && out.len() < out.capacity()
            {
                break;
            }
        }
        out
    }
}

fn parse_header_block(raw: &[u8]) -> Result<Vec<(String, String)>, String> {
    fn take<'a>(raw: &'a [u8], pos: &mut usize, n: usize) -> Result<&'a [u8], String> {
        let s = raw
            .get(*pos..*pos + n)
            .ok_or_else(|| "truncated header block".to_string())?;
        *pos += n;
        Ok(s)
    }
    fn length(raw: &[u8], pos: &mut usize) -> Result<usize, String> {
        let b = take(raw, pos, 4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }
    let mut pos = 0;
    let count = length(raw, &mut pos)?;
    let mut headers = Vec::with_capacity(count.min(64));
    for _ in 0..count {
        let n = length(raw, &mut pos)?;
        let name = String::from_utf8_lossy(take(raw, &mut pos, n)?).to_ascii_lowercase();
        let n = length(raw, &mut pos)?;
        let value = take(raw, &mut pos, n)?;
        for v in value.split(|b| *b == 0) {
            headers.push((name.clone(), String::from_utf8_lossy(v).into_owned()));
        }
    }
    Ok(headers)
}

/// Where the session's ports lead and how its errors name the pod.
pub(crate) struct Targets {
    /// The address registered for a port of this pod, looked up when a connection is forwarded.
    pub(crate) lookup: Arc<dyn Fn(u16) -> Option<super::dial::Target> + Send + Sync>,
    /// `namespace/name`.
    pub(crate) pod: String,
    /// The pod's uid.
    pub(crate) uid: String,
}

/// The streams of one forwarded connection, as they arrive.
#[derive(Default)]
struct Pair {
    port: u16,
    error: Option<u32>,
    data: Option<(u32, mpsc::Receiver<Vec<u8>>)>,
}

/// Serve one port-forward connection: SPDY bytes in from `input`, SPDY bytes out to `out` (each chunk
/// one or more whole frames). Returns when the client goes away or sends `GOAWAY`.
pub(crate) async fn serve(
    mut input: mpsc::Receiver<Vec<u8>>,
    out: mpsc::Sender<Vec<u8>>,
    targets: Targets,
) {
    let mut reader = FrameReader::default();
    let mut codec = HeaderCodec::new();
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    // data stream id -> the channel its bytes go to the target through
    let mut to_target: HashMap<u32, mpsc::Sender<Vec<u8>>> = HashMap::new();
    let mut forwarders: HashMap<u32, JoinHandle<()>> = HashMap::new();
    'session: while let Some(chunk) = input.recv().await {
        reader.push(&chunk);
        while let Some(frame) = reader.next_frame() {
            match frame {
                Frame::Control {
                    kind: SYN_STREAM,
                    payload,
                    ..
                } if payload.len() >= 10 => {
                    let id =
                        u32::from_be_bytes([payload[0] & 0x7f, payload[1], payload[2], payload[3]]);
                    let headers = match codec.decode(&payload[10..]) {
                        Ok(h) => h,
                        // the compression state is lost: nothing after this can be read
                        Err(_) => break 'session,
                    };
                    let get = |k: &str| {
                        headers
                            .iter()
                            .find(|(n, _)| n == k)
                            .map(|(_, v)| v.as_str())
                            .unwrap_or("")
                    };
                    let reply = codec.encode(&[]);
                    let mut body = id.to_be_bytes().to_vec();
                    body.extend_from_slice(&reply);
                    if out.send(control_frame(SYN_REPLY, 0, &body)).await.is_err() {
                        break 'session;
                    }
                    let Ok(port) = get("port").parse::<u16>() else {
                        let _ = out
                            .send(control_frame(RST_STREAM, 0, &rst_payload(id)))
                            .await;
                        continue;
                    };
                    let request = get("requestid").to_string();
                    let pair = pairs.entry(request.clone()).or_default();
                    pair.port = port;
                    match get("streamtype") {
                        "error" => pair.error = Some(id),
                        "data" => {
                            let (tx, rx) = mpsc::channel(64);
                            to_target.insert(id, tx);
                            pair.data = Some((id, rx));
                        }
                        _ => {
                            let _ = out
                                .send(control_frame(RST_STREAM, 0, &rst_payload(id)))
                                .await;
                            continue;
                        }
                    }
                    if pair.error.is_some() && pair.data.is_some() {
                        let pair = pairs.remove(&request).expect("pair");
                        let (data, rx) = pair.data.expect("data stream");
                        let error = pair.error.expect("error stream");
                        let target = (targets.lookup)(pair.port);
                        let task = tokio::spawn(forward(
                            target,
                            pair.port,
                            Streams { data, error },
                            rx,
                            out.clone(),
                            format!(
                                "error forwarding port {} to pod {}, uid {}",
                                pair.port, targets.pod, targets.uid
                            ),
                        ));
                        forwarders.insert(data, task);
                    }
                }
                Frame::Control {
                    kind: RST_STREAM,
                    payload,
                    ..
                } if payload.len() >= 4 => {
                    let id =
                        u32::from_be_bytes([payload[0] & 0x7f, payload[1], payload[2], payload[3]]);
                    to_target.remove(&id);
                    if let Some(task) = forwarders.remove(&id) {
                        task.abort();
                    }
                }
                Frame::Control {
                    kind: PING,
                    flags,
                    payload,
                } => {
                    if out
                        .send(control_frame(PING, flags, &payload))
                        .await
                        .is_err()
                    {
                        break 'session;
                    }
                }
                Frame::Control { kind: GOAWAY, .. } => break 'session,
                // SYN_REPLY, SETTINGS, WINDOW_UPDATE, HEADERS: nothing to do
                Frame::Control { .. } => {}
                Frame::Data {
                    stream,
                    flags,
                    payload,
                } => {
                    if let Some(tx) = to_target.get(&stream)
                        && !payload.is_empty()
                        && tx.send(payload).await.is_err()
                    {
                        to_target.remove(&stream);
                    }
                    if flags & FLAG_FIN != 0 {
                        // the client sends no more: the target's input ends
                        to_target.remove(&stream);
                    }
                }
            }
        }
        forwarders.retain(|_, t| !t.is_finished());
    }
    drop(to_target);
    for task in forwarders.into_values() {
        task.abort();
    }
}

fn rst_payload(id: u32) -> [u8; 8] {
    let mut p = [0u8; 8];
    p[..4].copy_from_slice(&id.to_be_bytes());
    p[4..].copy_from_slice(&CANCEL.to_be_bytes());
    p
}

struct Streams {
    data: u32,
    error: u32,
}

/// Join a data stream to the target: the client's bytes arrive on `from_client` (closed on its `FIN`),
/// the target's go out as `DATA` frames; when the target closes, both streams get `FIN`.
async fn forward(
    target: Option<super::dial::Target>,
    port: u16,
    streams: Streams,
    mut from_client: mpsc::Receiver<Vec<u8>>,
    out: mpsc::Sender<Vec<u8>>,
    context: String,
) {
    let conn = super::dial::dial(target.as_ref(), port).await;
    let tcp = match conn {
        Ok(tcp) => tcp,
        Err(e) => {
            let msg =
                format!("{context}: failed to connect to localhost:{port} inside namespace: {e}");
            let _ = out.send(data_frame(streams.error, 0, msg.as_bytes())).await;
            let _ = out.send(data_frame(streams.error, FLAG_FIN, &[])).await;
            let _ = out.send(data_frame(streams.data, FLAG_FIN, &[])).await;
            return;
        }
    };
    let (mut r, mut w) = tcp.into_split();
    let upstream = async move {
        while let Some(chunk) = from_client.recv().await {
            if w.write_all(&chunk).await.is_err() {
                // drain what the client still sends, so the session never blocks on us
                while from_client.recv().await.is_some() {}
                return;
            }
        }
        let _ = w.shutdown().await;
    };
    let downstream = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if out
                        .send(data_frame(streams.data, 0, &buf[..n]))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
        let _ = out.send(data_frame(streams.data, FLAG_FIN, &[])).await;
        let _ = out.send(data_frame(streams.error, FLAG_FIN, &[])).await;
    };
    tokio::join!(upstream, downstream);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dictionary_is_the_spdy3_one() {
        // 1423 bytes, and its Adler-32 (the dictionary id every SPDY/3 peer puts in its zlib header)
        assert_eq!(DICTIONARY.len(), 1423);
        let mut c = Compress::new(Compression::default(), true);
        let adler = c.set_dictionary(&DICTIONARY).unwrap();
        let mut d = Decompress::new(true);
        let mut out = Vec::with_capacity(64);
        c.compress_vec(b"x", &mut out, FlushCompress::Sync).unwrap();
        let err = d
            .decompress_vec(&out, &mut Vec::with_capacity(64), FlushDecompress::Sync)
            .unwrap_err();
        assert_eq!(err.needs_dictionary(), Some(adler));
        assert_eq!(&out[2..6], adler.to_be_bytes());
    }

    #[test]
    fn header_blocks_round_trip_across_one_zlib_stream_each_way() {
        let mut client = HeaderCodec::new();
        let mut server = HeaderCodec::new();
        for request in 0..3 {
            let id = request.to_string();
            let block =
                client.encode(&[("streamType", "data"), ("port", "22"), ("requestID", &id)]);
            let headers = server.decode(&block).unwrap();
            assert_eq!(
                headers,
                [
                    ("streamtype".to_string(), "data".to_string()),
                    ("port".to_string(), "22".to_string()),
                    ("requestid".to_string(), id),
                ]
            );
            let reply = server.encode(&[]);
            assert!(client.decode(&reply).unwrap().is_empty());
        }
    }

    #[test]
    fn frames_split_across_chunks_are_reassembled() {
        let mut bytes = control_frame(PING, 0, &7u32.to_be_bytes());
        bytes.extend(data_frame(3, FLAG_FIN, b"hello"));
        let mut r = FrameReader::default();
        r.push(&bytes[..5]);
        assert_eq!(r.next_frame(), None);
        r.push(&bytes[5..13]);
        assert_eq!(
            r.next_frame(),
            Some(Frame::Control {
                kind: PING,
                flags: 0,
                payload: 7u32.to_be_bytes().to_vec()
            })
        );
        assert_eq!(r.next_frame(), None);
        r.push(&bytes[13..]);
        assert_eq!(
            r.next_frame(),
            Some(Frame::Data {
                stream: 3,
                flags: FLAG_FIN,
                payload: b"hello".to_vec()
            })
        );
    }
}
