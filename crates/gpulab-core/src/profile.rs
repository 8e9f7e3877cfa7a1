//! Phase timings for profiling (`GPULAB_PROFILE=1`): the steps of reaching the workspace and copying print
//! the milliseconds since the first mark (the start of `gpulab`'s `main`) on stderr.

use std::sync::OnceLock;
use std::time::Instant;

/// The environment variable that turns the marks on.
pub const ENV: &str = "GPULAB_PROFILE";

/// Print `phase` with the time since the first mark, when [`ENV`] is set (read once, at the first mark).
pub fn mark(phase: &str) {
    static START: OnceLock<(Instant, bool)> = OnceLock::new();
    let (start, on) = *START.get_or_init(|| (Instant::now(), std::env::var_os(ENV).is_some()));
    if on {
        eprintln!(
            "[profile] {:>8.1} ms  {phase}",
            start.elapsed().as_secs_f64() * 1e3
        );
    }
}
