//! One Tokio runtime for the whole module, and the wait that runs core futures on it from Python.
//!
//! Every network call spawns its future on the shared multi-thread runtime (never a runtime per call, and
//! never Python's asyncio loop, so a running loop in Jupyter does not matter) and waits for it in the
//! calling thread with the GIL released, in short slices. Between slices it hands progress events to the
//! Python callback (in the calling thread, so notebook output lands in the right cell) and checks for
//! signals: Ctrl-C or the notebook's stop button raise `KeyboardInterrupt` and abort the future, which
//! drops it (and with it its connections and the lab's lock) at its next await point.

use std::future::Future;
use std::sync::mpsc::{RecvTimeoutError, channel};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use gpulab_core::events::{Event, Reporter};
use pyo3::prelude::*;

use crate::GpulabError;
use crate::convert::{to_py_err, to_python};

/// How long the calling thread waits, with the GIL released, before it checks for signals again.
const SLICE: Duration = Duration::from_millis(50);

/// The module's runtime, started on first use.
pub(crate) fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("gpulab-rt")
            // The main thread's size, not tokio's 2 MiB: the SDK's futures nest deep (`down` measured
            // over 2 MiB in a debug build, which `maturin develop` makes).
            .thread_stack_size(8 << 20)
            .enable_all()
            .build()
            .expect("start the gpulab runtime")
    })
}

enum Message<T> {
    Event(Event),
    Done(gpulab_core::Result<T>),
}

/// How long an interrupted wait waits for the aborted future to be dropped.
const SETTLE: Duration = Duration::from_secs(5);

/// Run the future `work` makes on the shared runtime and wait for it, interruptibly. `work` gets a
/// reporter whose events go to `progress` (a Python callable taking one dict), if any.
///
/// When a signal handler raises (Ctrl-C: `KeyboardInterrupt`) or the callback raises, the future is
/// aborted, and the exception is raised once the future has been dropped (so the lab's lock and
/// connections are released by then), or after [`SETTLE`] at most.
pub(crate) fn wait<T, Fut>(
    py: Python<'_>,
    progress: Option<&Bound<'_, PyAny>>,
    work: impl FnOnce(Arc<dyn Reporter>) -> Fut,
) -> PyResult<T>
where
    T: Send + 'static,
    Fut: Future<Output = gpulab_core::Result<T>> + Send + 'static,
{
    let (tx, rx) = channel::<Message<T>>();
    let events = tx.clone();
    let reporter: Arc<dyn Reporter> = Arc::new(move |event: Event| {
        let _ = events.send(Message::Event(event));
    });
    let future = work(reporter);
    let task = runtime().spawn(async move {
        let result = future.await;
        let _ = tx.send(Message::Done(result));
    });
    let mut rx = rx;
    let stopped = loop {
        // The receiver is not Sync: move it into the GIL-free section and back out.
        let (received, back) = py.detach(move || (rx.recv_timeout(SLICE), rx));
        rx = back;
        let handled = match received {
            Ok(Message::Done(result)) => return result.map_err(|e| to_py_err(py, e)),
            Ok(Message::Event(event)) => match progress {
                Some(callback) => to_python(py, &event)
                    .and_then(|event| callback.call1((event,)))
                    .map(drop),
                None => Ok(()),
            },
            Err(RecvTimeoutError::Timeout) => Ok(()),
            Err(RecvTimeoutError::Disconnected) => {
                return Err(GpulabError::new_err(
                    "gpulab's background task ended without a result (a bug: please report it)",
                ));
            }
        };
        if let Err(e) = handled.and_then(|()| py.check_signals()) {
            break e;
        }
    };
    task.abort();
    // Every sender lives in the future: the channel disconnects once the runtime has dropped it.
    py.detach(move || {
        let deadline = Instant::now() + SETTLE;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            if let Err(RecvTimeoutError::Disconnected) = rx.recv_timeout(left) {
                break;
            }
        }
    });
    Err(stopped)
}
