//! Progress events. The library reports what it is doing through a [`Reporter`]; the CLI renders them as
//! spinners, the Python bindings as callbacks or a notebook widget, tests collect them.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

/// One thing that happened while gpulab worked.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    /// A step began, e.g. "create VPC".
    StepStarted {
        /// The step's name.
        step: String,
    },
    /// A step finished.
    StepFinished {
        /// The step's name.
        step: String,
        /// How long it took.
        elapsed: Duration,
        /// Whether it found the work already done (a resumed `up`, or an already-deleted resource).
        already_done: bool,
    },
    /// A step failed: its last event. The error itself is also what the call returns.
    StepFailed {
        /// The step's name.
        step: String,
        /// How long it ran before failing.
        elapsed: Duration,
        /// What went wrong, as the error's message.
        error: String,
    },
    /// Still waiting on something slow, e.g. the EKS control plane; sent on every poll.
    Waiting {
        /// The step waiting.
        step: String,
        /// What it waits for, in the cloud's words ("cluster status CREATING").
        on: String,
        /// How long it has waited so far.
        elapsed: Duration,
    },
    /// Bytes or items done out of a total, for transfers and multi-part steps.
    Progress {
        /// The step.
        step: String,
        /// Done so far.
        done: u64,
        /// The total, when known.
        total: Option<u64>,
        /// What `done` and `total` count.
        unit: Unit,
    },
    /// Something the user should know that does not stop the work.
    Warning {
        /// The warning.
        message: String,
    },
}

/// What an [`Event::Progress`] counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Unit {
    /// Bytes, of a copy or a stream.
    Bytes,
    /// Things of the step's own kind (connections of a forward, parts of a step).
    Items,
}

/// Receives progress events. Implementations must be cheap: events arrive on the hot path of waits and
/// transfers.
pub trait Reporter: Send + Sync {
    /// Take one event.
    fn report(&self, event: Event);
}

/// Run `work` as the step `name`, reporting it: [`Event::StepStarted`], then [`Event::StepFinished`]
/// (with whether `work` found the work already done, its second value) or [`Event::StepFailed`]. The
/// one place a step's events are written, so every frontend sees each step end one way or the other.
///
/// `work` goes on the heap as the step is made, not when it is first polled: steps nest (a lab's `up`
/// runs the provider's, whose steps hold SDK calls of tens of KiB each in debug builds), and a future
/// that held each step's work inline would carry all of them, past a 2 MiB thread stack.
pub fn reported_step<T, E: std::fmt::Display>(
    reporter: &dyn Reporter,
    name: &str,
    work: impl Future<Output = Result<(T, bool), E>>,
) -> impl Future<Output = Result<T, E>> {
    let work = Box::pin(work);
    async move { report_step(reporter, name, work).await }
}

async fn report_step<T, E: std::fmt::Display>(
    reporter: &dyn Reporter,
    name: &str,
    work: std::pin::Pin<Box<impl Future<Output = Result<(T, bool), E>>>>,
) -> Result<T, E> {
    reporter.report(Event::StepStarted { step: name.into() });
    let started = Instant::now();
    match work.await {
        Ok((value, already_done)) => {
            reporter.report(Event::StepFinished {
                step: name.into(),
                elapsed: started.elapsed(),
                already_done,
            });
            Ok(value)
        }
        Err(error) => {
            reporter.report(Event::StepFailed {
                step: name.into(),
                elapsed: started.elapsed(),
                error: error.to_string(),
            });
            Err(error)
        }
    }
}

/// Bytes done of a transfer, reported as [`Event::Progress`] at most once per MiB, and once more by
/// [`ByteProgress::finish`] so the last event says the whole amount.
pub struct ByteProgress<'a> {
    reporter: &'a dyn Reporter,
    step: String,
    total: Option<u64>,
    done: u64,
    reported: u64,
}

impl<'a> ByteProgress<'a> {
    /// Progress of `step`, out of `total` bytes when known.
    pub fn new(reporter: &'a dyn Reporter, step: impl Into<String>, total: Option<u64>) -> Self {
        ByteProgress {
            reporter,
            step: step.into(),
            total,
            done: 0,
            reported: 0,
        }
    }

    /// `n` more bytes done.
    pub fn add(&mut self, n: u64) {
        self.done += n;
        if self.done - self.reported >= 1 << 20 {
            self.report();
        }
    }

    /// Report what is done, if it was not reported yet.
    pub fn finish(&mut self) {
        if self.done > self.reported {
            self.report();
        }
    }

    fn report(&mut self) {
        self.reported = self.done;
        self.reporter.report(Event::Progress {
            step: self.step.clone(),
            done: self.done,
            total: self.total,
            unit: Unit::Bytes,
        });
    }
}

/// A reporter that drops every event.
#[derive(Debug, Default, Clone, Copy)]
pub struct Silent;

impl Reporter for Silent {
    fn report(&self, _event: Event) {}
}

/// A reporter that prints a line on standard error per finished step, per warning and per finished
/// transfer of a known size: progress for programs and logs, where a redrawn display does not belong.
/// (The `gpulab` command draws a spinner on a terminal; Python shows a display in Jupyter.)
#[derive(Debug, Default, Clone, Copy)]
pub struct Lines;

impl Lines {
    /// The line for `event`, if it gets one.
    pub fn line(event: &Event) -> Option<String> {
        match event {
            Event::StepFinished {
                step,
                elapsed,
                already_done,
            } => {
                let note = if *already_done { " (already done)" } else { "" };
                Some(format!("✓ {step}{note} [{:.1}s]", elapsed.as_secs_f64()))
            }
            Event::StepFailed {
                step,
                elapsed,
                error,
            } => Some(format!("✗ {step} [{:.1}s]: {error}", elapsed.as_secs_f64())),
            Event::Warning { message } => Some(format!("warning: {message}")),
            Event::Progress {
                step,
                done,
                total: Some(total),
                unit: Unit::Bytes,
            } if done == total => Some(format!("✓ {step} [{}]", bytes(*done))),
            Event::StepStarted { .. } | Event::Waiting { .. } | Event::Progress { .. } => None,
        }
    }
}

impl Reporter for Lines {
    fn report(&self, event: Event) {
        if let Some(line) = Lines::line(&event) {
            eprintln!("{line}");
        }
    }
}

/// `n` bytes for people: "512 B", "3.1 MiB".
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A reporter that keeps every event, for tests and for callers that render afterwards.
#[derive(Debug, Default)]
pub struct Recorder(Mutex<Vec<Event>>);

impl Recorder {
    /// The events so far.
    pub fn events(&self) -> Vec<Event> {
        self.0.lock().expect("recorder lock").clone()
    }
}

impl Reporter for Recorder {
    fn report(&self, event: Event) {
        self.0.lock().expect("recorder lock").push(event);
    }
}

impl<F: Fn(Event) + Send + Sync> Reporter for F {
    fn report(&self, event: Event) {
        self(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A future that is ready at once (the model has no runtime; nothing here waits).
    fn now<F: Future>(future: F) -> F::Output {
        let mut future = std::pin::pin!(future);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match future.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(value) => value,
            std::task::Poll::Pending => panic!("the step waited"),
        }
    }

    #[test]
    fn a_step_ends_finished_or_failed() {
        let recorder = Recorder::default();
        let value = now(reported_step(&recorder, "create VPC", async {
            Ok::<_, String>((7, true))
        }));
        assert_eq!(value, Ok(7));
        let err = now(reported_step(&recorder, "create node group", async {
            Err::<((), bool), _>("AccessDeniedException: not authorized".to_string())
        }));
        assert_eq!(err, Err("AccessDeniedException: not authorized".into()));
        let events = recorder.events();
        assert!(matches!(&events[0], Event::StepStarted { step } if step == "create VPC"));
        assert!(matches!(
            &events[1],
            Event::StepFinished { step, already_done: true, .. } if step == "create VPC"
        ));
        assert!(matches!(&events[2], Event::StepStarted { step } if step == "create node group"));
        match &events[3] {
            Event::StepFailed { step, error, .. } => {
                assert_eq!(step, "create node group");
                assert_eq!(error, "AccessDeniedException: not authorized");
            }
            other => panic!("expected the step to fail, got {other:?}"),
        }
        assert_eq!(events.len(), 4);
        let failed = Event::StepFailed {
            step: "create node group".into(),
            elapsed: Duration::from_millis(3000),
            error: "AccessDeniedException: not authorized".into(),
        };
        assert_eq!(
            Lines::line(&failed).unwrap(),
            "✗ create node group [3.0s]: AccessDeniedException: not authorized"
        );
    }

    #[test]
    fn lines_name_finished_steps_warnings_and_finished_transfers() {
        let finished = Event::StepFinished {
            step: "create VPC".into(),
            elapsed: Duration::from_millis(1250),
            already_done: false,
        };
        assert_eq!(Lines::line(&finished).unwrap(), "✓ create VPC [1.2s]");
        let copying = |done| Event::Progress {
            step: "upload train.py".into(),
            done,
            total: Some(3 << 20),
            unit: Unit::Bytes,
        };
        assert_eq!(Lines::line(&copying(1 << 20)), None);
        assert_eq!(
            Lines::line(&copying(3 << 20)).unwrap(),
            "✓ upload train.py [3.0 MiB]"
        );
        let connections = Event::Progress {
            step: "forward".into(),
            done: 2,
            total: Some(2),
            unit: Unit::Items,
        };
        assert_eq!(Lines::line(&connections), None);
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(5 << 30), "5.0 GiB");
    }
}
