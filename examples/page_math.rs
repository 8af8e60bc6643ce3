//! Page arithmetic: rounding byte counts up to whole pages, without overflow.
//!
//! Also the book's specimen for each mdBook include form: keep its line
//! numbers stable, or update the appendix's line ranges with it.
//!
//! - Explained in: "How this book is tested" (src/how-this-book-is-tested.md)
//! - Run: `cargo run --example page_math`
//! - Tested by: `cargo test --example page_math`
//! - Depends on: std

// ANCHOR: constants
/// A WebAssembly page: the unit of `memory.grow`.
const WASM_PAGE: usize = 64 * 1024;
// ANCHOR_END: constants

// ANCHOR: round_up
/// Rounds `bytes` up to a multiple of `page` (a power of two), or `None` if
/// the result does not fit in `usize`.
fn round_up(bytes: usize, page: usize) -> Option<usize> {
    assert!(
        page.is_power_of_two(),
        "page size {page} is not a power of two"
    );
    Some(bytes.checked_add(page - 1)? & !(page - 1))
}
// ANCHOR_END: round_up

fn main() {
    for bytes in [0, 1, WASM_PAGE, WASM_PAGE + 1, usize::MAX] {
        match round_up(bytes, WASM_PAGE) {
            Some(rounded) => println!("{bytes:>20} bytes -> {:>6} wasm pages", rounded / WASM_PAGE),
            None => println!("{bytes:>20} bytes -> overflow: no page count fits"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_up_to_whole_pages() {
        assert_eq!(round_up(0, WASM_PAGE), Some(0));
        assert_eq!(round_up(1, WASM_PAGE), Some(WASM_PAGE));
        assert_eq!(round_up(WASM_PAGE, WASM_PAGE), Some(WASM_PAGE));
        assert_eq!(round_up(WASM_PAGE + 1, 4096), Some(WASM_PAGE + 4096));
    }

    /// The appendix shows lines 13, 19-25, 28- and -14 of this file by number.
    #[test]
    fn the_appendix_line_numbers_still_point_at_the_right_lines() {
        // This file, wherever it was copied (`file!()` is from the crate root).
        let text = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/", file!()));
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[13 - 1].starts_with("const WASM_PAGE"));
        assert!(lines[19 - 1].starts_with("fn round_up"));
        assert_eq!(lines[25 - 1], "}");
        assert_eq!(lines[28 - 1], "fn main() {");
        assert_eq!(lines[14 - 1], "// ANCHOR_END: constants");
    }

    #[test]
    fn reports_overflow_instead_of_wrapping() {
        assert_eq!(round_up(usize::MAX, WASM_PAGE), None);
        assert_eq!(round_up(usize::MAX - WASM_PAGE + 2, WASM_PAGE), None);
    }
}
