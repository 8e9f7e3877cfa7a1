//! The idle and budget guard: `[autostop]` as the spec validates it (the agent that enforces it is in
//! [`crate::autostop`]).

use std::time::Duration;

use serde::Serialize;

/// The shortest idle period: the warning comes five minutes before the stop.
pub const MIN_IDLE: Duration = Duration::from_secs(10 * 60);
/// The longest idle period.
pub const MAX_IDLE: Duration = Duration::from_secs(7 * 24 * 3600);

/// What stops a lab nobody is using: the validated `[autostop]` settings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Guard {
    /// Stop after this long without activity; `None`: never.
    #[serde(with = "seconds")]
    pub idle: Option<Duration>,
    /// Stop once the lab has spent this many US dollars; `None`: no cap.
    pub budget_usd: Option<f64>,
}

/// One problem with an `[autostop]` value, for a field error.
#[derive(Debug, Clone, PartialEq)]
pub struct GuardProblem {
    /// "autostop.idle" or "autostop.budget".
    pub field: &'static str,
    /// The value as written.
    pub value: String,
    /// What is wrong with it.
    pub problem: String,
    /// What would be accepted.
    pub allowed: &'static str,
}

impl Guard {
    /// Read `[autostop]`: an idle period as [`parse_idle`] reads it, and a budget of up to $100,000
    /// (0: none). A bad value is left off the guard and reported.
    pub fn parse(spec: &super::AutostopSpec) -> (Guard, Vec<GuardProblem>) {
        let mut problems = Vec::new();
        let idle = match spec.idle.as_deref().map(parse_idle) {
            None => None,
            Some(Ok(idle)) => idle,
            Some(Err(problem)) => {
                problems.push(GuardProblem {
                    field: "autostop.idle",
                    value: spec.idle.clone().unwrap_or_default(),
                    problem,
                    allowed: "a duration such as \"30m\", \"2h\" or \"1h30m\" (10m to 7d), or \"off\"",
                });
                None
            }
        };
        let budget_usd = match spec.budget {
            Some(b) if !b.is_finite() || !(0.0..=100_000.0).contains(&b) => {
                problems.push(GuardProblem {
                    field: "autostop.budget",
                    value: b.to_string(),
                    problem: "out of range".into(),
                    allowed: "US dollars above 0 and at most 100000, e.g. 25; 0 or \"off\" for no budget",
                });
                None
            }
            Some(b) if b > 0.0 => Some(b),
            _ => None,
        };
        (Guard { idle, budget_usd }, problems)
    }

    /// Whether the agent runs: autostop or a budget is on.
    pub fn is_on(&self) -> bool {
        self.idle.is_some() || self.budget_usd.is_some()
    }

    /// The settings in words, e.g. "after 30m idle; at $25.00 spent", or "off".
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(idle) = self.idle {
            parts.push(format!("after {} idle", format_duration(idle)));
        }
        if let Some(budget) = self.budget_usd {
            parts.push(format!("at ${budget:.2} spent"));
        }
        if parts.is_empty() {
            "off".into()
        } else {
            parts.join("; ")
        }
    }
}

mod seconds {
    use std::time::Duration;

    use serde::Serializer;

    pub(super) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_u64(d.as_secs()),
            None => s.serialize_none(),
        }
    }
}

/// Parse an idle period: "off" (or "") is none; otherwise numbers with units `d`, `h`, `m` or `s`,
/// e.g. "30m", "2h", "1h30m", "1h 30m", between [`MIN_IDLE`] and [`MAX_IDLE`]. The error says what is
/// wrong, for the field's message.
pub fn parse_idle(text: &str) -> Result<Option<Duration>, String> {
    let text = text.trim();
    if text.is_empty() || text.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let mut total = 0u64;
    let mut number = String::new();
    let mut any_unit = false;
    for c in text.chars().filter(|c| !c.is_whitespace()) {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            'd' => 86_400,
            'h' => 3_600,
            'm' => 60,
            's' => 1,
            _ => return Err(format!("{c:?} is not a unit (d, h, m or s)")),
        };
        let n: u64 = number
            .parse()
            .map_err(|_| format!("a number must come before {c:?}"))?;
        total = total.saturating_add(n.saturating_mul(unit));
        number.clear();
        any_unit = true;
    }
    if !number.is_empty() || !any_unit {
        return Err("a number without a unit (d, h, m or s)".into());
    }
    let idle = Duration::from_secs(total);
    if idle < MIN_IDLE || idle > MAX_IDLE {
        return Err(format!(
            "{} is outside {} to {}",
            format_duration(idle),
            format_duration(MIN_IDLE),
            format_duration(MAX_IDLE)
        ));
    }
    Ok(Some(idle))
}

/// A duration as people write it: "30m", "1h 30m", "2d 4h", "45s".
pub fn format_duration(d: Duration) -> String {
    let secs = d.as_secs();
    let (days, hours, minutes, rest) = (
        secs / 86_400,
        secs % 86_400 / 3_600,
        secs % 3_600 / 60,
        secs % 60,
    );
    let parts: Vec<String> = [(days, "d"), (hours, "h"), (minutes, "m"), (rest, "s")]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect();
    if parts.is_empty() {
        "0s".into()
    } else {
        parts.join(" ")
    }
}
