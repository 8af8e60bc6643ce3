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
}

/// Counts fenced blocks (```` ``` ```` or `~~~`) by the first word of their info string.
pub fn count(markdown: &str) -> (usize, usize) {
    let mut rust = 0;
    let mut mermaid = 0;
    let mut open: Option<(char, usize)> = None;
    for line in markdown.lines() {
        let indent = line.len() - line.trim_start_matches(' ').len();
        let trimmed = line.trim_start_matches(' ');
        let fence_char = match trimmed.chars().next() {
            Some(c @ ('`' | '~')) if indent <= 3 => c,
            _ => continue,
        };
        let run = trimmed.chars().take_while(|&c| c == fence_char).count();
        if run < 3 {
            continue;
        }
        let info = trimmed[run..].trim();
        match open {
            Some((c, len)) if c == fence_char && run >= len && info.is_empty() => open = None,
            Some(_) => {}
            None => {
                open = Some((fence_char, run));
                let lang = info
                    .split(|c: char| !(c == '_' || c == '-' || c.is_alphanumeric()))
                    .find(|t| !t.is_empty())
                    .unwrap_or("");
                match lang {
                    "rust" | "" => rust += 1,
                    "mermaid" => mermaid += 1,
                    _ => {}
                }
            }
        }
    }
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
            Ok(ChapterBlocks {
                chapter,
                rust,
                mermaid,
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
    fn an_indented_fence_of_four_spaces_is_code_not_a_fence() {
        assert_eq!(count("    ```rust\n    fn x() {}\n    ```\n"), (0, 0));
    }
}
