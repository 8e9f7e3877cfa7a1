//! Kubernetes resource quantities ("4", "3500m", "16Gi"), parsed far enough to compare them with what an
//! instance has. Kubernetes itself is the authority; this only catches what it would reject or what could
//! never fit, before anything is created.

use std::fmt;

use serde::Serialize;

/// A parsed quantity: the text as written and its value in base units (cores, bytes).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(into = "String")]
pub struct Quantity {
    /// As the user wrote it.
    pub text: String,
    /// Its value in base units.
    pub value: f64,
}

const SUFFIXES: &[(&str, f64)] = &[
    ("Ki", 1024.0),
    ("Mi", 1024.0 * 1024.0),
    ("Gi", 1024.0 * 1024.0 * 1024.0),
    ("Ti", 1024.0 * 1024.0 * 1024.0 * 1024.0),
    ("Pi", 1024.0 * 1024.0 * 1024.0 * 1024.0 * 1024.0),
    ("m", 1e-3),
    ("k", 1e3),
    ("M", 1e6),
    ("G", 1e9),
    ("T", 1e12),
    ("P", 1e15),
];

impl Quantity {
    /// Parse `text` as a Kubernetes quantity; the error says what is allowed.
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let (number, scale) = SUFFIXES
            .iter()
            .find_map(|(suffix, scale)| t.strip_suffix(suffix).map(|n| (n, *scale)))
            .unwrap_or((t, 1.0));
        let plain = !number.is_empty() && number.chars().all(|c| c.is_ascii_digit() || c == '.');
        let exponent = number.contains(['e', 'E']) && scale == 1.0;
        match number.parse::<f64>() {
            Ok(v) if (plain || exponent) && v.is_finite() && v >= 0.0 => Ok(Quantity {
                text: t.to_string(),
                value: v * scale,
            }),
            _ => Err(format!("{text:?} is not a Kubernetes quantity")),
        }
    }

    /// A quantity of whole GiB, as gpulab writes sizes it computes.
    pub fn gib(n: u64) -> Self {
        Quantity {
            text: format!("{n}Gi"),
            value: n as f64 * 1024.0 * 1024.0 * 1024.0,
        }
    }

    /// A CPU quantity in millicores, as gpulab writes the CPU it computes.
    pub fn millicores(n: u64) -> Self {
        Quantity {
            text: format!("{n}m"),
            value: n as f64 / 1000.0,
        }
    }

    /// The value in GiB.
    pub fn as_gib(&self) -> f64 {
        self.value / (1024.0 * 1024.0 * 1024.0)
    }
}

impl From<Quantity> for String {
    fn from(q: Quantity) -> String {
        q.text
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_kubernetes_accepts() {
        assert_eq!(Quantity::parse("4").unwrap().value, 4.0);
        assert_eq!(Quantity::parse("3500m").unwrap().value, 3.5);
        assert_eq!(Quantity::parse("16Gi").unwrap().as_gib(), 16.0);
        assert_eq!(Quantity::parse("0.5").unwrap().value, 0.5);
        assert_eq!(Quantity::parse("1G").unwrap().value, 1e9);
        assert_eq!(Quantity::parse("1e3").unwrap().value, 1000.0);
        assert_eq!(Quantity::millicores(3500).text, "3500m");
        assert_eq!(Quantity::gib(50).text, "50Gi");
    }

    #[test]
    fn rejects_what_kubernetes_rejects() {
        for bad in ["", "Gi", "16GB", "-1", "four", "16 Gi", "1.2.3", "0x10"] {
            assert!(Quantity::parse(bad).is_err(), "{bad:?} should not parse");
        }
    }
}
