//! The appendix "How this book is tested" shows lines of
//! `examples/page_math.rs` by number (`:13`, `:19:25`, `:149:`, `::14`).
//! Line numbers do not move with the code they point at, so this test holds
//! each one to the line it must select, and the chapter to those selectors.

use std::path::Path;

const EXAMPLE: &str = "examples/page_math.rs";
const CHAPTER: &str = "src/how-this-book-is-tested.md";

/// Each selector the chapter uses, with the start of each line it names.
const SELECTORS: [(&str, &[(usize, &str)]); 4] = [
    (":13", &[(13, "const WASM_PAGE")]),
    (":19:25", &[(19, "fn round_up"), (25, "}")]),
    (":149:", &[(149, "#[cfg(test)]")]),
    ("::14", &[(14, "// ANCHOR_END: constants")]),
];

fn read(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

#[test]
fn each_line_number_points_at_the_line_it_means() {
    let text = read(EXAMPLE);
    let lines: Vec<&str> = text.lines().collect();
    for (selector, expected) in SELECTORS {
        for &(line, start) in expected {
            let found = lines.get(line - 1).copied().unwrap_or("(past the end)");
            assert!(
                found.starts_with(start),
                "{EXAMPLE}:{line} (the appendix's `{selector}`) is `{found}`, not `{start}...`: \
                 update the line numbers in {CHAPTER} and here"
            );
        }
    }
    // `:149:` runs to the end: the tests module, which must end the file.
    assert_eq!(
        lines.last(),
        Some(&"}"),
        "{EXAMPLE} should end with the tests module"
    );
}

#[test]
fn the_chapter_uses_exactly_these_selectors() {
    let chapter = read(CHAPTER);
    let mut used: Vec<&str> = chapter
        .split("{{#rustdoc_include ../examples/page_math.rs")
        .skip(1)
        .filter_map(|rest| rest.split("}}").next())
        .filter(|selector| {
            selector.starts_with(':')
                && selector[1..].starts_with(|c: char| c.is_ascii_digit() || c == ':')
        })
        .collect();
    used.sort_unstable();
    used.dedup();
    let mut wanted: Vec<&str> = SELECTORS.iter().map(|(s, _)| *s).collect();
    wanted.sort_unstable();
    assert_eq!(
        used, wanted,
        "{CHAPTER} selects other lines of {EXAMPLE} than this test checks"
    );
}
