//! Page arithmetic: rounding byte counts up to whole pages, without overflow.
//!
//! The appendix's specimen for each mdBook include form: it shows lines of
//! this file by number, and `tests/page_math` holds those numbers.
//!
//! - Explained in: "How this book is tested" (src/how-this-book-is-tested.md)
//! - Run: `cargo run --example page_math -- --page 4096`
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
    let page = Options::parse().page;
    for bytes in [0, 1, WASM_PAGE, WASM_PAGE + 1, usize::MAX] {
        match round_up(bytes, page) {
            Some(rounded) => println!("{bytes:>20} bytes -> {:>6} pages", rounded / page),
            None => println!("{bytes:>20} bytes -> overflow: no page count fits"),
        }
    }
}

const PROGRAM: &str = "page_math";
const USAGE: &str = "usage: page_math [--page N]
  --page N   the page size in bytes, a power of two (1..=1073741824, default 65536)";

// SHARED: cli (canonical: examples/map_and_touch.rs)
/// The command line, read the same way by every example: `--name value`
/// flags and switches, then `-- words` for a command to run. `--help` prints
/// the usage and exits 0; anything wrong prints one line naming the flag
/// and exits 2.
struct Args {
    program: &'static str,
    words: Vec<String>,
}

#[allow(dead_code)] // each example uses the methods it needs
impl Args {
    fn parse(program: &'static str, usage: &str) -> Args {
        let words: Vec<String> = std::env::args().skip(1).collect();
        if words
            .iter()
            .take_while(|w| *w != "--")
            .any(|w| w == "--help" || w == "-h")
        {
            println!("{usage}");
            std::process::exit(0);
        }
        Args { program, words }
    }

    fn fail(&self, why: &str) -> ! {
        eprintln!("{}: {why} (see --help)", self.program);
        std::process::exit(2)
    }

    /// `--name VALUE`, taken off the command line.
    fn text(&mut self, name: &str) -> Option<String> {
        let at = self
            .words
            .iter()
            .take_while(|w| *w != "--")
            .position(|w| w == name)?;
        if self.words.get(at + 1).is_none_or(|value| value == "--") {
            self.fail(&format!("{name} needs a value"));
        }
        self.words.remove(at);
        Some(self.words.remove(at))
    }

    /// `--name N`: a whole number in `range`, or `default` if absent.
    fn number(&mut self, name: &str, default: u64, range: std::ops::RangeInclusive<u64>) -> u64 {
        let Some(text) = self.text(name) else {
            return default;
        };
        match text.parse::<u64>() {
            Ok(n) if range.contains(&n) => n,
            _ => {
                let (min, max) = (range.start(), range.end());
                self.fail(&format!(
                    "{name} takes a whole number from {min} to {max}, not `{text}`"
                ))
            }
        }
    }

    /// Whether the switch `--name` was given.
    fn switch(&mut self, name: &str) -> bool {
        let at = self
            .words
            .iter()
            .take_while(|w| *w != "--")
            .position(|w| w == name);
        at.map(|at| self.words.remove(at)).is_some()
    }

    /// The words after `--` (a command to run), or none.
    fn rest(&mut self) -> Vec<String> {
        let at = self.words.iter().position(|w| w == "--");
        at.map(|at| self.words.split_off(at).split_off(1))
            .unwrap_or_default()
    }

    /// Ends the parse: a word no flag took is an error.
    fn finish(self) {
        if let Some(word) = self.words.first() {
            self.fail(&format!("unknown argument `{word}`"));
        }
    }
}
// SHARED_END: cli

/// What to do, from the command line.
struct Options {
    page: usize,
}

impl Options {
    /// Reads the command line; a bad one ends the program with exit code 2.
    fn parse() -> Options {
        let mut args = Args::parse(PROGRAM, USAGE);
        let page = args.number("--page", 65536, 1..=1 << 30);
        if !page.is_power_of_two() {
            args.fail(&format!("--page {page} is not a power of two"));
        }
        args.finish();
        // At most 2^30: it fits in any usize of 32 bits or more.
        Options {
            page: page as usize,
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

    #[test]
    fn reports_overflow_instead_of_wrapping() {
        assert_eq!(round_up(usize::MAX, WASM_PAGE), None);
        assert_eq!(round_up(usize::MAX - WASM_PAGE + 2, WASM_PAGE), None);
    }
}
