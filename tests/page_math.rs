//! The appendix "How this book is tested" includes `examples/page_math.rs`
//! by line number (`:8`, `::9`, `:14:20`, `:24:`): those lines must still be
//! the ones it describes. (Read from the project, so that the example itself
//! stays a file a reader can copy into a fresh crate.)

const SOURCE: &str = include_str!("../examples/page_math.rs");

#[test]
fn the_appendix_line_numbers_still_point_at_the_right_lines() {
    let lines: Vec<&str> = SOURCE.lines().collect();
    let line = |n: usize| lines[n - 1];
    assert!(line(8).starts_with("const WASM_PAGE"), "{}", line(8));
    assert_eq!(line(9), "// ANCHOR_END: constants");
    assert!(line(14).starts_with("fn round_up"), "{}", line(14));
    assert_eq!(line(20), "}");
    assert_eq!(line(24), "fn main() {");
}
