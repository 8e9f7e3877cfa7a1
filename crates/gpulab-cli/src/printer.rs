//! All output goes through here: results to stdout, errors and hints to stderr, in the format the user
//! asked for, coloured only on a terminal and never under `NO_COLOR`.

use std::io::{IsTerminal, Write};

use serde::Serialize;

/// The one place that writes to the terminal.
pub(crate) struct Printer {
    quiet: bool,
    color: bool,
}

impl Printer {
    pub(crate) fn new(quiet: bool) -> Self {
        let color = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
            && std::io::stderr().is_terminal();
        Printer { quiet, color }
    }

    /// Print a result line.
    pub(crate) fn line(&self, text: impl AsRef<str>) {
        let mut out = std::io::stdout().lock();
        // A closed pipe (`gpulab plan | head`) is not an error worth reporting.
        let _ = writeln!(out, "{}", text.as_ref());
    }

    /// Print `value` as pretty JSON.
    pub(crate) fn json(&self, value: &impl Serialize) {
        self.line(serde_json::to_string_pretty(value).expect("gpulab's results always serialise"));
    }

    /// A hint for people (suppressed by `--quiet`), on stderr so that stdout stays parseable.
    pub(crate) fn hint(&self, text: impl AsRef<str>) {
        if !self.quiet {
            eprintln!("{}", text.as_ref());
        }
    }

    /// Print an error and what to do about it.
    pub(crate) fn error(&self, error: &gpulab_core::Error) {
        let prefix = if self.color {
            "\x1b[1;31merror\x1b[0m"
        } else {
            "error"
        };
        eprintln!("{prefix}: {error}");
    }

    /// A heading in table output.
    pub(crate) fn heading(&self, text: impl AsRef<str>) {
        self.line(format!("\n{}", text.as_ref()));
    }
}

/// Rows aligned in columns under upper-case headers, each line indented by two spaces. The last
/// column is not padded, so long details do not push lines wider than they need be.
pub(crate) fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let render = |cells: &mut dyn Iterator<Item = &str>| {
        let mut line = String::from(" ");
        for (i, cell) in cells.enumerate() {
            line.push(' ');
            if i + 1 == widths.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}", width = widths[i]));
                line.push(' ');
            }
        }
        line.trim_end().to_string()
    };
    let mut lines = vec![render(&mut headers.iter().copied())];
    lines.extend(
        rows.iter()
            .map(|row| render(&mut row.iter().map(String::as_str))),
    );
    lines.join("\n")
}

/// A price per hour, or a dash where there is none.
pub(crate) fn dollars(value: Option<f64>, decimals: usize) -> String {
    value.map_or("-".into(), |v| format!("{v:.decimals$}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_and_do_not_pad_the_last_column() {
        let rows = vec![
            vec!["g4dn.xlarge".into(), "0.526".into()],
            vec!["p5.48xlarge".into(), "55.04".into()],
        ];
        assert_eq!(
            table(&["TYPE", "PRICE"], &rows),
            "  TYPE         PRICE\n  g4dn.xlarge  0.526\n  p5.48xlarge  55.04"
        );
    }
}
