//! Which Rust blocks of the book are one program. A block shown with
//! `{{#rustdoc_include}}` carries its example's whole file, the lines outside
//! the anchor hidden behind rustdoc's `# ` marker, so every block a chapter
//! shows from one example compiles to the same program. build.rs hands
//! skeptic the first block of each program only (compiling and running one
//! file ten times proves nothing the first run did not), and
//! `cargo xtask test` holds skeptic's count to the number of programs in
//! mdBook's own expansion. build.rs includes this file, so both count alike.

/// What rustdoc and skeptic compile for a block with `info` (the fence's
/// info string) and `lines`: the attributes (`should_panic`, `no_run`, ...)
/// and the lines with the hidden-line marker taken off (`# x` and `#`
/// hidden, `##` an escaped `#`), so that blocks differing only in which
/// lines are hidden are equal.
pub fn program<'a>(info: &str, lines: impl IntoIterator<Item = &'a str>) -> String {
    let mut attributes: Vec<&str> = info
        .split(|c: char| !(c == '_' || c == '-' || c.is_alphanumeric()))
        .filter(|t| !t.is_empty())
        .collect();
    attributes.sort_unstable();
    let mut text = attributes.join(",");
    for line in lines {
        let rest = line.trim_start();
        let indent = &line[..line.len() - rest.len()];
        let shown = match rest.strip_prefix('#') {
            Some(after) if is_hidden(line) => after.strip_prefix(' ').unwrap_or(after),
            Some(after) if after.starts_with('#') => after, // `##`: an escaped `#`
            _ => rest,
        };
        text.push('\n');
        text.push_str(indent);
        text.push_str(shown);
    }
    text
}

/// rustdoc's rule: a line that is `#`, or starts with `# ` (after its
/// indentation), is hidden on the page; `##` escapes a shown `#`.
pub fn is_hidden(line: &str) -> bool {
    let t = line.trim();
    !t.starts_with("##") && (t.starts_with("# ") || t == "#")
}

#[cfg(test)]
mod tests {
    use super::program;

    #[test]
    fn hiding_other_lines_is_the_same_program() {
        let first = [
            "# use std::fs;",
            "fn a() {}",
            "# fn b() {}",
            "#",
            "fn main() {}",
        ];
        let second = [
            "use std::fs;",
            "# fn a() {}",
            "fn b() {}",
            "",
            "# fn main() {}",
        ];
        assert_eq!(program("rust", first), program("rust", second));
    }

    #[test]
    fn other_code_or_attributes_are_another_program() {
        let code = ["fn main() {}"];
        assert_ne!(program("rust", code), program("rust,should_panic", code));
        assert_ne!(program("rust", code), program("rust", ["fn main() { }"]));
        assert_eq!(
            program("rust,no_run,edition2021", code),
            program("rust,edition2021,no_run", code)
        );
        // `##` shows one `#`: `##[test]` is the attribute `#[test]`.
        assert_eq!(program("rust", ["##[test]"]), program("rust", ["#[test]"]));
    }
}
