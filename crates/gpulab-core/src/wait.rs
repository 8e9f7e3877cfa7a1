//! One way to wait on the world: ask, and while the answer is "not yet", report what is pending, sleep
//! with backoff and ask again; at the deadline, fail naming what was still pending. Every wait in the
//! lifecycle (AWS resources, the workspace pod, cloud releases, image build Jobs, vLLM) goes through
//! [`until`]; where the API offers a watch, [`until_woken`] asks again as soon as it reports a change.

use std::future::Future;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};

use crate::events::{Event, Reporter};
use crate::{Error, Result};

/// One answer of a wait's check.
pub(crate) enum Check<T> {
    /// Done, with the value the wait returns.
    Done(T),
    /// Not yet: what is still pending, as a reader would say it ("cluster status CREATING").
    Pending(String),
}

/// How long to sleep between checks: from `first`, growing by half each time, up to `max`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Backoff {
    /// The first pause.
    pub(crate) first: Duration,
    /// The longest pause.
    pub(crate) max: Duration,
}

impl Backoff {
    /// The same pause every time.
    pub(crate) const fn fixed(pause: Duration) -> Self {
        Backoff {
            first: pause,
            max: pause,
        }
    }

    /// The pause after `pause`.
    fn next(&self, pause: Duration) -> Duration {
        (pause * 3 / 2).min(self.max)
    }
}

/// What a wait is for, as its events and its timeout error name it.
pub(crate) struct Wait<'a> {
    /// The step that waits (the `Waiting` events' step).
    pub(crate) step: &'a str,
    /// What it waits for ("EKS cluster lab to become ACTIVE"): the timeout error's subject.
    pub(crate) what: &'a str,
    /// How long at most.
    pub(crate) timeout: Duration,
    /// The pauses between checks.
    pub(crate) backoff: Backoff,
}

/// Run `check` until it is done, reporting each pending answer to `reporter`; after the wait's timeout,
/// an [`Error::Timeout`] naming the last pending answer. A throttled check (AWS or the API server
/// refusing for its rate, already retried by the client) counts as pending: a wait of minutes
/// outlasts a burst of throttling. Any other error ends the wait.
pub(crate) async fn until<T, F, Fut>(reporter: &dyn Reporter, wait: Wait<'_>, check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Check<T>>>,
{
    until_woken(reporter, wait, check, futures::stream::pending::<()>()).await
}

/// [`until`], asking again as soon as `changes` yields (a watch's events) instead of sleeping out the
/// pause. The pauses stay as the fallback: for what the watch does not see, and after it ends (a
/// server closes a watch after its timeout).
pub(crate) async fn until_woken<T, F, Fut, W>(
    reporter: &dyn Reporter,
    wait: Wait<'_>,
    mut check: F,
    changes: W,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Check<T>>>,
    W: Stream,
{
    let mut changes = std::pin::pin!(changes);
    let mut watching = true;
    let started = Instant::now();
    let mut pause = wait.backoff.first;
    loop {
        let pending = match check().await {
            Ok(Check::Done(value)) => return Ok(value),
            Ok(Check::Pending(pending)) => pending,
            Err(e) if e.is_throttled() => format!("an answer (the poll was throttled: {e})"),
            Err(e) => return Err(e),
        };
        let elapsed = started.elapsed();
        if elapsed >= wait.timeout {
            return Err(Error::Timeout {
                what: wait.what.into(),
                waited: elapsed,
                pending,
            });
        }
        reporter.report(Event::Waiting {
            step: wait.step.into(),
            on: pending,
            elapsed,
        });
        let wake_at = tokio::time::Instant::now() + pause.min(wait.timeout.saturating_sub(elapsed));
        if watching {
            tokio::select! {
                () = tokio::time::sleep_until(wake_at) => {}
                change = changes.next() => match change {
                    Some(_) => {}
                    None => {
                        watching = false;
                        tokio::time::sleep_until(wake_at).await;
                    }
                },
            }
        } else {
            tokio::time::sleep_until(wake_at).await;
        }
        pause = wait.backoff.next(pause);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Recorder;

    fn quick(timeout: Duration) -> Wait<'static> {
        Wait {
            step: "step",
            what: "the thing",
            timeout,
            backoff: Backoff::fixed(Duration::from_millis(1)),
        }
    }

    #[tokio::test]
    async fn pending_answers_are_reported_until_done() {
        let recorder = Recorder::default();
        let mut left = 3;
        let value = until(&recorder, quick(Duration::from_secs(10)), || {
            left -= 1;
            let answer = if left == 0 {
                Check::Done(42)
            } else {
                Check::Pending(format!("{left} to go"))
            };
            async move { Ok(answer) }
        })
        .await
        .unwrap();
        assert_eq!(value, 42);
        let pending: Vec<String> = recorder
            .events()
            .into_iter()
            .filter_map(|e| match e {
                Event::Waiting { on, .. } => Some(on),
                _ => None,
            })
            .collect();
        assert_eq!(pending, ["2 to go", "1 to go"]);
    }

    #[tokio::test]
    async fn the_deadline_names_what_was_still_pending() {
        let err = until::<(), _, _>(&Recorder::default(), quick(Duration::ZERO), || async {
            Ok(Check::Pending("status CREATING".into()))
        })
        .await
        .unwrap_err();
        match err {
            Error::Timeout { what, pending, .. } => {
                assert_eq!(what, "the thing");
                assert_eq!(pending, "status CREATING");
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn other_errors_end_the_wait_at_once() {
        let mut calls = 0;
        let err = until::<(), _, _>(&Recorder::default(), quick(Duration::from_secs(10)), || {
            calls += 1;
            async {
                Err(Error::Usage {
                    message: "no".into(),
                    hint: "yes".into(),
                })
            }
        })
        .await
        .unwrap_err();
        assert!(matches!(err, Error::Usage { .. }));
        assert_eq!(calls, 1);
    }

    /// A wait of five-minute pauses whose check is done on its `n`th call, as `until_woken` runs it
    /// with `changes` on tokio's paused clock; returns how far that clock moved.
    async fn paused_wait_done_on(n: u32, changes: impl futures::Stream<Item = ()>) -> Duration {
        let slow = Wait {
            step: "step",
            what: "the thing",
            timeout: Duration::from_secs(600),
            backoff: Backoff::fixed(Duration::from_secs(300)),
        };
        let started = tokio::time::Instant::now();
        let mut checks = 0;
        let check = || {
            checks += 1;
            let answer = if checks == n {
                Check::Done(checks)
            } else {
                Check::Pending("not yet".into())
            };
            async move { Ok(answer) }
        };
        let done = until_woken(&Recorder::default(), slow, check, changes).await;
        assert_eq!(done.unwrap(), n);
        started.elapsed()
    }

    #[tokio::test(start_paused = true)]
    async fn a_change_asks_again_without_sleeping_out_the_pause() {
        // Two changes woke it twice: the paused clock never moved.
        let waited = paused_wait_done_on(3, futures::stream::iter([(), ()])).await;
        assert_eq!(waited, Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn an_ended_watch_falls_back_to_the_pauses() {
        let waited = paused_wait_done_on(2, futures::stream::empty()).await;
        assert_eq!(waited, Duration::from_secs(300));
    }

    #[test]
    fn pauses_grow_by_half_up_to_the_maximum() {
        let backoff = Backoff {
            first: Duration::from_secs(2),
            max: Duration::from_secs(5),
        };
        let mut pauses = vec![backoff.first];
        for _ in 0..3 {
            pauses.push(backoff.next(*pauses.last().unwrap()));
        }
        assert_eq!(pauses, [2000, 3000, 4500, 5000].map(Duration::from_millis));
        let fixed = Backoff::fixed(Duration::from_secs(3));
        assert_eq!(fixed.next(fixed.first), Duration::from_secs(3));
    }
}
