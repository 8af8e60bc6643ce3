//! Counting the code blocks of expanded chapters, so that the number of Rust
//! blocks can be held against the number each tool says it ran.

use std::path::{Path, PathBuf};

use crate::Result;

#[derive(Debug, Default, Clone, PartialEq)]
pub struct ChapterBlocks {
    /// The chapter's path relative to the book's `src/`.
    pub chapter: PathBuf,
    /// rustdoc tests a fence with no language as Rust, so those count here too
    /// (build.rs rejects them, so there should be none).
    pub rust: usize,
    pub mermaid: usize,
    /// Each Rust block's program (`programs::program`), in order.
    pub programs: Vec<String>,
}

/// One fenced code block (```` ``` ```` or `~~~`) of a markdown text.
#[derive(Debug, Clone, PartialEq)]
pub struct Fenced {
    /// The first word of the info string (`rust`, `console`, ``), as
    /// rustdoc and mdBook read it.
    pub lang: String,
    /// The whole info string (`rust,should_panic`).
    pub info: String,
    /// 1-based line of the opening fence.
    pub line: usize,
    /// The lines between the fences.
    pub body: Vec<String>,
}

/// The fenced blocks of `markdown`, in order. A fence indented by four
/// spaces or more is code, not a fence (CommonMark).
pub fn fenced(markdown: &str) -> Vec<Fenced> {
    let mut blocks = Vec::new();
    let mut open: Option<(char, usize, Fenced)> = None;
    for (index, line) in markdown.lines().enumerate() {
        let indent = line.len() - line.trim_start_matches(' ').len();
        let trimmed = line.trim_start_matches(' ');
        let fence = match trimmed.chars().next() {
            Some(c @ ('`' | '~')) if indent <= 3 => {
                let run = trimmed.chars().take_while(|&x| x == c).count();
                (run >= 3).then_some((c, run))
            }
            _ => None,
        };
        match (&mut open, fence) {
            (Some((c, len, _)), Some((fc, run)))
                if *c == fc && run >= *len && trimmed[run..].trim().is_empty() =>
            {
                let (_, _, block) = open.take().expect("a block is open");
                blocks.push(block);
            }
            (Some((_, _, block)), _) => block.body.push(line.to_owned()),
            (None, Some((c, run))) => {
                let info = trimmed[run..].trim();
                let lang = info
                    .split(|c: char| !(c == '_' || c == '-' || c.is_alphanumeric()))
                    .find(|t| !t.is_empty())
                    .unwrap_or("")
                    .to_owned();
                open = Some((
                    c,
                    run,
                    Fenced {
                        lang,
                        info: info.to_owned(),
                        line: index + 1,
                        body: Vec::new(),
                    },
                ));
            }
            (None, None) => {}
        }
    }
    // An unclosed fence runs to the end of the document.
    blocks.extend(open.map(|(_, _, block)| block));
    blocks
}

/// Counts fenced blocks by the first word of their info string: Rust (and
/// untagged, which rustdoc tests as Rust) and Mermaid.
pub fn count(markdown: &str) -> (usize, usize) {
    let blocks = fenced(markdown);
    let rust = blocks
        .iter()
        .filter(|b| b.lang == "rust" || b.lang.is_empty())
        .count();
    let mermaid = blocks.iter().filter(|b| b.lang == "mermaid").count();
    (rust, mermaid)
}

/// Counts the blocks of every chapter under `dir` (mdBook's markdown output).
pub fn count_dir(dir: &Path) -> Result<Vec<ChapterBlocks>> {
    crate::files::files_with_extension(dir, "md")?
        .into_iter()
        .map(|chapter| {
            let path = dir.join(&chapter);
            let text =
                std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let (rust, mermaid) = count(&text);
            let programs = fenced(&text)
                .into_iter()
                .filter(|b| b.lang == "rust" || b.lang.is_empty())
                .map(|b| crate::programs::program(&b.info, b.body.iter().map(String::as_str)))
                .collect();
            Ok(ChapterBlocks {
                chapter,
                rust,
                mermaid,
                programs,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::count;

    #[test]
    fn counts_rust_untagged_and_mermaid_fences() {
        let md = "text\n```rust\nfn main() {}\n```\n\n```\nuntagged\n```\n\
                  ````rust,should_panic\n```\nnested fence text\n```\n````\n\
                  ```mermaid\ngraph TD\n```\n~~~console\n$ ls\n~~~\n";
        assert_eq!(count(md), (3, 1));
    }

    #[test]
    fn blocks_keep_their_lines_and_opening_line() {
        let md = "a\n```rust,no_run\nfn x() {}\n# hidden\n```\n~~~console\n$ ls\n~~~\n";
        let blocks = super::fenced(md);
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[0].lang, "rust");
        assert_eq!(blocks[0].line, 2);
        assert_eq!(blocks[0].body, vec!["fn x() {}", "# hidden"]);
        assert_eq!(blocks[1].lang, "console");
        assert_eq!(blocks[1].body, vec!["$ ls"]);
    }

    #[test]
    fn an_indented_fence_of_four_spaces_is_code_not_a_fence() {
        assert_eq!(count("    ```rust\n    fn x() {}\n    ```\n"), (0, 0));
    }
}
