//! Progress for people: a spinner with the step in flight and the time spent, from the library's
//! events. Nothing is drawn when stderr is not a terminal or with `--quiet`; warnings always print.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

use gpulab_core::events::{Event, Reporter, Unit};
use indicatif::{ProgressBar, ProgressStyle};

/// Renders [`Event`]s on stderr.
pub(crate) struct Progress {
    bar: Option<ProgressBar>,
    quiet: bool,
    current: Mutex<Option<String>>,
}

impl Progress {
    pub(crate) fn new(quiet: bool) -> Self {
        let draw = !quiet && std::io::stderr().is_terminal();
        let bar = draw.then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
                    .expect("valid template"),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Progress {
            bar,
            quiet,
            current: Mutex::new(None),
        }
    }

    /// Print a line above the spinner (or plainly without one).
    fn println(&self, line: String) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    pub(crate) fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Reporter for Progress {
    fn report(&self, event: Event) {
        match event {
            Event::Warning { message } => self.println(format!("warning: {message}")),
            _ if self.quiet => {}
            Event::StepStarted { step } => {
                *self.current.lock().expect("progress lock") = Some(step.clone());
                if let Some(bar) = &self.bar {
                    bar.set_message(step);
                }
            }
            Event::StepFinished {
                step,
                elapsed,
                already_done,
            } => {
                let note = if already_done { " (already done)" } else { "" };
                if self.bar.is_some() {
                    self.println(format!("  ✓ {step}{note} [{}s]", elapsed.as_secs()));
                }
            }
            // The error itself follows, as the command's own message.
            Event::StepFailed { step, elapsed, .. } => {
                if self.bar.is_some() {
                    self.println(format!("  ✗ {step} [{}s]", elapsed.as_secs()));
                }
            }
            Event::Waiting { step, on, elapsed } => {
                if let Some(bar) = &self.bar {
                    bar.set_message(format!("{step}: {on} ({}s)", elapsed.as_secs()));
                }
            }
            Event::Progress {
                step,
                done,
                total,
                unit,
            } => {
                if let Some(bar) = &self.bar {
                    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
                    bar.set_message(match (unit, total) {
                        (Unit::Bytes, Some(total)) => {
                            format!("{step}: {:.1} of {:.1} MiB", mib(done), mib(total))
                        }
                        (Unit::Bytes, None) => format!("{step}: {:.1} MiB", mib(done)),
                        (Unit::Items, Some(total)) => format!("{step}: {done} of {total}"),
                        (Unit::Items, None) => format!("{step}: {done}"),
                    });
                }
            }
        }
    }
}
