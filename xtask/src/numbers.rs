//! The numbers a chapter quotes in its prose and its charts' alt texts, as a
//! generated fragment: one `ANCHOR:` region per number, so a chapter writes
//! `{{#include ../benches/results/NAME_numbers.txt:floor_us_16384}}` instead
//! of typing a value that the next `cargo xtask bench` would make stale.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::Result;

/// Named values, in the order they were added.
#[derive(Default)]
pub struct Numbers {
    values: Vec<(String, String)>,
}

impl Numbers {
    /// Adds `name` (letters, digits, `_`: an mdBook anchor name) = `value`.
    pub fn add(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let name = name.into();
        debug_assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{name}"
        );
        let value = value.into();
        debug_assert!(!value.contains('\n'), "{name}: one line only");
        self.values.push((name, value));
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.values
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The fragment's text: a note, then `ANCHOR:`/value/`ANCHOR_END:` per number.
    pub fn text(&self, bench: &str) -> String {
        let mut out = format!(
            "Numbers the book quotes from this run of `benches/{bench}.rs`. Written by `cargo xtask bench`; do not edit.\n"
        );
        for (name, value) in &self.values {
            let _ = writeln!(out, "ANCHOR: {name}\n{value}\nANCHOR_END: {name}");
        }
        out
    }

    /// Writes `<dir>/<bench>_numbers.txt`.
    pub fn write(&self, dir: &Path, bench: &str) -> Result<PathBuf> {
        let file = dir.join(format!("{bench}_numbers.txt"));
        std::fs::write(&file, self.text(bench))?;
        Ok(file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_number_is_an_anchor_with_one_line() {
        let mut n = Numbers::default();
        n.add("floor_us_256", "1.46");
        n.add("chart_alt", "A chart, with 2 lines.");
        let text = n.text("memory_grow");
        assert!(text.contains("ANCHOR: floor_us_256\n1.46\nANCHOR_END: floor_us_256\n"));
        assert!(text.contains("ANCHOR: chart_alt\nA chart, with 2 lines.\nANCHOR_END: chart_alt\n"));
        assert_eq!(n.get("floor_us_256"), Some("1.46"));
        assert_eq!(n.get("nothing"), None);
    }
}
