//! The block-length step: no Rust block shown on a page is longer than
//! `MAX_VISIBLE` lines. It counts what a reader sees in mdBook's expanded
//! chapters: rustdoc's hidden `# ` lines are left out, and Rust source shown
//! as a `text` block (an `{{#include}}` of a `.rs` file) counts too.

use std::path::Path;

use crate::blocks::{self, Fenced};
use crate::book::{Book, Tally};
use crate::programs::is_hidden;
use crate::{files, mdbook_test, Result};

/// The most lines a reader may have to read in one block (COMMON: most
/// blocks should stay under 25).
pub const MAX_VISIBLE: usize = 40;

/// One block that is too long.
#[derive(Debug, PartialEq)]
pub struct LongBlock {
    /// `src/<chapter>.md:<line>` of the block's opening fence (or its line
    /// in the expanded chapter, if the two cannot be matched).
    pub at: String,
    /// The include directive(s) that put the code there, if any.
    pub directive: String,
    pub visible: usize,
}

/// The step: any block over `MAX_VISIBLE` visible lines fails it.
pub fn block_length(book: &Book, tally: &mut Tally) -> Result<()> {
    let expanded = mdbook_test::expanded_markdown(book)?;
    let (longest, long) = long_blocks(&book.root.join("src"), &expanded)?;
    tally.longest_block = longest;
    eprintln!(
        "block length: the longest Rust block shows {longest} lines (at most {MAX_VISIBLE}); {} longer",
        long.len()
    );
    if long.is_empty() {
        return Ok(());
    }
    let report = long
        .iter()
        .map(|b| {
            format!(
                "{}: {}: {} visible lines (more than {MAX_VISIBLE})",
                b.at, b.directive, b.visible
            )
        })
        .collect::<Vec<_>>()
        .join("\n");
    Err(report.into())
}

/// The most visible lines of any code block, and every block over the limit,
/// for the chapters in `expanded` (mdBook's markdown output), named by their
/// source in `src`.
pub fn long_blocks(src: &Path, expanded: &Path) -> Result<(usize, Vec<LongBlock>)> {
    let mut longest = 0;
    let mut long = Vec::new();
    for chapter in files::files_with_extension(expanded, "md")? {
        let shown_text = std::fs::read_to_string(expanded.join(&chapter))?;
        let source_text = std::fs::read_to_string(src.join(&chapter)).unwrap_or_default();
        let shown = blocks::fenced(&shown_text);
        let source = blocks::fenced(&source_text);
        // Includes of code and outputs add no fences, so the blocks pair up
        // one to one; if they do not, the expanded line is named instead.
        let paired = shown.len() == source.len();
        for (i, block) in shown.iter().enumerate() {
            let origin = paired.then(|| &source[i]);
            let Some(visible) = visible_code_lines(block, origin) else {
                continue;
            };
            longest = longest.max(visible);
            if visible <= MAX_VISIBLE {
                continue;
            }
            let chapter = chapter.display();
            long.push(match origin {
                Some(origin) => LongBlock {
                    at: format!("src/{chapter}:{}", origin.line),
                    directive: directives(origin),
                    visible,
                },
                None => LongBlock {
                    at: format!("src/{chapter} (expanded line {})", block.line),
                    directive: "a block".to_owned(),
                    visible,
                },
            });
        }
    }
    Ok((longest, long))
}

/// The lines a reader sees of a Rust block, or of Rust source shown as
/// text; `None` for any other block.
fn visible_code_lines(shown: &Fenced, origin: Option<&Fenced>) -> Option<usize> {
    if shown.lang == "rust" {
        return Some(shown.body.iter().filter(|l| !is_hidden(l)).count());
    }
    let includes_rust_source = origin.is_some_and(|o| {
        o.body
            .iter()
            .filter_map(|l| include_path(l))
            .any(|path| path.split(':').next().is_some_and(|p| p.ends_with(".rs")))
    });
    includes_rust_source.then_some(shown.body.len())
}

/// rustdoc's rule, which mdBook's hidden lines follow: after leading
/// whitespace, `# ` or a lone `#` hides the line; `##` shows one `#`.
/// The argument of an unescaped `{{#include ...}}` or `{{#rustdoc_include
/// ...}}` on this line.
pub fn include_path(line: &str) -> Option<&str> {
    let t = line.trim();
    let rest = t
        .strip_prefix("{{#rustdoc_include ")
        .or_else(|| t.strip_prefix("{{#include "))?;
    Some(rest.strip_suffix("}}")?.trim())
}

fn directives(block: &Fenced) -> String {
    let found: Vec<&str> = block
        .body
        .iter()
        .map(|l| l.trim())
        .filter(|l| include_path(l).is_some())
        .collect();
    if found.is_empty() {
        "a block written in the chapter".to_owned()
    } else {
        found.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_lines_are_not_counted() {
        assert!(is_hidden("# use std::io;"));
        assert!(is_hidden("    # fn x() {}"));
        assert!(is_hidden("#"));
        assert!(!is_hidden("## shown as one #"));
        assert!(!is_hidden("#[derive(Debug)]"));
        assert!(!is_hidden("#![allow(dead_code)]"));
        let block = Fenced {
            lang: "rust".into(),
            info: "rust".into(),
            line: 1,
            body: vec!["# hidden".into(), "fn x() {}".into(), "".into()],
        };
        assert_eq!(visible_code_lines(&block, None), Some(2));
    }

    #[test]
    fn rust_source_shown_as_text_counts_and_output_does_not() {
        let text = |body: &str| Fenced {
            lang: "text".into(),
            info: "text".into(),
            line: 3,
            body: vec![body.into()],
        };
        let shown = text("let x = 1;");
        let code = text("{{#include ../benches/dynamic_buffers.rs:pages}}");
        let output = text("{{#include ../examples/output/linear_memory.txt}}");
        assert_eq!(visible_code_lines(&shown, Some(&code)), Some(1));
        assert_eq!(visible_code_lines(&shown, Some(&output)), None);
        assert_eq!(
            directives(&code),
            "{{#include ../benches/dynamic_buffers.rs:pages}}"
        );
    }
}
