//! The latency knob for streams ([`super::KubeEmulator::set_latency`]): exec and port-forward connections
//! pass through a delay line, so each direction takes half the round trip, as over a real network. The
//! stream's open already paid the whole round trip as a request; after that every request and its answer
//! inside the stream (an SFTP write and its status, an SSH window adjustment) costs one round trip more,
//! while bulk data flows at full speed once the pipe is full, up to [`WINDOW`] bytes in flight each way
//! (a TCP window: at 20 ms, 4 MiB in flight is up to 400 MiB/s).

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// A byte stream, boxed.
pub(crate) trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// Bytes in flight each way, at most.
pub(crate) const WINDOW: usize = 4 << 20;
const READ: usize = 64 * 1024;

/// `io` as is with no latency; else through a delay line of half of `round_trip` each way.
pub(crate) fn with_latency<S: Io + 'static>(io: S, round_trip: Duration) -> Box<dyn Io> {
    if round_trip.is_zero() {
        return Box::new(io);
    }
    let one_way = round_trip / 2;
    let (near, far) = tokio::io::duplex(WINDOW);
    let (io_read, io_write) = tokio::io::split(io);
    let (far_read, far_write) = tokio::io::split(far);
    tokio::spawn(delay_line(io_read, far_write, one_way));
    tokio::spawn(delay_line(far_read, io_write, one_way));
    Box::new(near)
}

/// Copy `from` to `to`, each chunk held until `delay` after it was read, with at most [`WINDOW`] bytes
/// held at once; ends `to` when `from` ends.
async fn delay_line(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    delay: Duration,
) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Bytes)>(WINDOW / READ);
    let reader = async move {
        loop {
            let mut buf = BytesMut::with_capacity(READ);
            match from.read_buf(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if tx
                        .send((Instant::now() + delay, buf.freeze()))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
    };
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}
