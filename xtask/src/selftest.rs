//! Tests of the xtask itself: break the book in a copy, in each of the ways a
//! chapter can rot, and check that the step that should catch it fails with a
//! message naming the file.
//!
//! The copies live in `target/xtask/selftest/<case>`; their cargo builds share
//! `target/xtask/selftest-target`, so dependencies compile once.

use std::path::{Path, PathBuf};

use crate::book::{Book, Tally};
use crate::load::Viewport;
use crate::site_check::Window;
use crate::steps;
use crate::Result;

const CHAPTER: &str = "src/how-this-book-is-tested.md";

/// A fresh copy of the book's sources (no build output).
fn copy_book(case: &str) -> Result<Book> {
    let root = crate::project_root();
    let dest = root.join("target/xtask/selftest").join(case);
    if dest.exists() {
        std::fs::remove_dir_all(&dest)?;
    }
    for item in [
        "Cargo.toml",
        "Cargo.lock",
        "build.rs",
        "book.toml",
        ".cargo",
        "src",
        "examples",
        "tests",
        "benches",
        "theme",
        "xtask/Cargo.toml",
        "xtask/tools.txt",
        "xtask/npm-tools.txt",
        "xtask/src",
        "runtime",
    ] {
        let from = root.join(item);
        if from.exists() {
            copy_tree(&from, &dest.join(item))?;
        }
    }
    // The runtime chapter includes runtime/'s sources, so they are copied;
    // but no self-test needs wasmtime built, so the copy's workspace leaves
    // the runtime members out.
    let manifest = dest.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest)?;
    let members = "members = [\".\", \"xtask\", \"runtime\", \"runtime/snippets\"]";
    assert!(
        text.contains(members),
        "Cargo.toml no longer lists {members}: update this self-test"
    );
    std::fs::write(
        &manifest,
        text.replace(members, "members = [\".\", \"xtask\"]"),
    )?;
    let mut book = Book::new(&dest)?;
    book.cargo_target = root.join("target/xtask/selftest-target");
    book.quiet = true;
    Ok(book)
}

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    if from.is_dir() {
        std::fs::create_dir_all(to)?;
        for entry in std::fs::read_dir(from)? {
            let entry = entry?;
            copy_tree(&entry.path(), &to.join(entry.file_name()))?;
        }
    } else {
        std::fs::create_dir_all(to.parent().expect("a file has a parent"))?;
        std::fs::copy(from, to)?;
    }
    Ok(())
}

/// Replaces `old` (which must be there) with `new` in `file` of the copy.
fn edit(book: &Book, file: &str, old: &str, new: &str) -> Result<()> {
    let path: PathBuf = book.root.join(file);
    let text = std::fs::read_to_string(&path)?;
    assert!(
        text.contains(old),
        "{file} no longer contains {old:?}: update this self-test"
    );
    std::fs::write(&path, text.replacen(old, new, 1))?;
    Ok(())
}

fn expect_failure(result: Result<()>, must_name: &[&str]) {
    let message = match result {
        Ok(()) => panic!("the broken book passed"),
        Err(e) => e.to_string(),
    };
    for name in must_name {
        assert!(
            message.contains(name),
            "the failure does not name `{name}`:\n{message}"
        );
    }
}

#[test]
fn a_broken_snippet_fails_the_build_naming_the_example() -> Result<()> {
    let book = copy_book("snippet")?;
    edit(
        &book,
        "examples/page_math.rs",
        "Some(bytes.checked_add(page - 1)? & !(page - 1))",
        "Some(bytes.checked_add(page - 1)? & !(page - 1) + \"one\")",
    )?;
    expect_failure(steps::compile(&book), &["examples/page_math.rs", "error"]);
    Ok(())
}

#[test]
fn a_broken_anchor_fails_the_build_naming_the_chapter() -> Result<()> {
    let book = copy_book("anchor")?;
    edit(
        &book,
        CHAPTER,
        "page_math.rs:constants}}\n```",
        "page_math.rs:constans}}\n```",
    )?;
    expect_failure(steps::compile(&book), &[CHAPTER, "ANCHOR: constans"]);
    Ok(())
}

#[test]
fn an_anchor_no_chapter_includes_fails_the_build_naming_file_and_anchor() -> Result<()> {
    let book = copy_book("dead-anchor")?;
    edit(
        &book,
        "examples/page_math.rs",
        "fn main() {",
        "// ANCHOR: nobody_shows_this\nfn main() {",
    )?;
    edit(
        &book,
        "examples/page_math.rs",
        "\n}\n\n#[cfg(test)]",
        "\n}\n// ANCHOR_END: nobody_shows_this\n\n#[cfg(test)]",
    )?;
    // Any build runs build.rs; checking one example is the cheapest.
    let out = crate::run_recorded(book.cargo().args(["check", "--example", "page_math"]), true)?;
    expect_failure(
        out.ok_or_errors(),
        &[
            "examples/page_math.rs:28",
            "ANCHOR: nobody_shows_this",
            "dead anchor",
        ],
    );
    Ok(())
}

#[test]
fn a_link_to_a_missing_chapter_fails_naming_the_chapter() -> Result<()> {
    let book = copy_book("link")?;
    edit(
        &book,
        CHAPTER,
        "## One source of truth",
        "See [gone](gone.md).\n\n## One source of truth",
    )?;
    steps::mdbook_build(&book, &mut Tally::default())?;
    expect_failure(
        steps::link_check(&book, &mut Tally::default()),
        &["how-this-book-is-tested.md", "gone.md"],
    );
    Ok(())
}

#[test]
fn a_link_to_a_missing_heading_fails_naming_the_chapter() -> Result<()> {
    let book = copy_book("fragment")?;
    edit(
        &book,
        CHAPTER,
        "## One source of truth",
        "See [the primer](primer.md#no-such-heading).\n\n## One source of truth",
    )?;
    steps::mdbook_build(&book, &mut Tally::default())?;
    expect_failure(
        steps::link_check(&book, &mut Tally::default()),
        &[CHAPTER, "primer.html#no-such-heading", "no element with id"],
    );
    Ok(())
}

#[test]
fn a_broken_diagram_fails_naming_the_chapter_and_block() -> Result<()> {
    let book = copy_book("diagram")?;
    edit(
        &book,
        CHAPTER,
        "flowchart LR",
        "flowchart LR\n    this is --> --> not mermaid",
    )?;
    expect_failure(
        check_pages(&book, &["how-this-book-is-tested.html"], LIGHT),
        &[CHAPTER, "mermaid block 1"],
    );
    Ok(())
}

#[test]
fn a_chart_that_does_not_draw_fails_naming_the_chapter() -> Result<()> {
    let book = copy_book("chart")?;
    // An SVG that exists (so the link check passes) but is not an image.
    std::fs::write(book.root.join("src/charts/memory_grow.svg"), "not an svg")?;
    expect_failure(
        check_pages(&book, &["part4-memory-growth.html"], LIGHT),
        &[
            "src/part4-memory-growth.md",
            "image not drawn",
            "charts/memory_grow.svg",
        ],
    );
    Ok(())
}

#[test]
fn a_long_rust_block_fails_naming_the_chapter_and_the_include() -> Result<()> {
    let book = copy_book("long-block")?;
    edit(
        &book,
        CHAPTER,
        "## One source of truth",
        "```rust\n{{#rustdoc_include ../examples/memory_meter.rs}}\n```\n\n## One source of truth",
    )?;
    let result = crate::block_length::block_length(&book, &mut Tally::default());
    expect_failure(
        result,
        &[
            "src/how-this-book-is-tested.md:",
            "{{#rustdoc_include ../examples/memory_meter.rs}}",
            "visible lines (more than 40)",
        ],
    );
    Ok(())
}

#[test]
fn a_build_machine_path_on_a_page_fails_naming_the_chapter() -> Result<()> {
    let book = copy_book("leak")?;
    edit(
        &book,
        CHAPTER,
        "## One source of truth",
        "Our notes are in /work/notes/ and the sandbox.\n\n## One source of truth",
    )?;
    steps::mdbook_build(&book, &mut Tally::default())?;
    let result = crate::leaks::leak_check(&book, &mut Tally::default());
    expect_failure(result, &[CHAPTER, "`/work/`", "`sandbox`"]);
    Ok(())
}

#[test]
fn pasted_output_fails_naming_the_chapter_and_line() -> Result<()> {
    let book = copy_book("pasted-output")?;
    edit(
        &book,
        CHAPTER,
        "## One source of truth",
        "```console\n$ cargo run --example page_math\n                   0 bytes ->      0 wasm pages\n```\n\n## One source of truth",
    )?;
    let report = crate::outputs::output_blocks(&book.root.join("src"))?;
    assert!(
        report
            .pasted
            .iter()
            .any(|p| p.starts_with(CHAPTER) && p.contains("typed into the chapter")),
        "the pasted block was not named: {:?}",
        report.pasted
    );
    Ok(())
}

#[test]
fn a_recorded_output_that_no_longer_matches_fails_naming_the_file() -> Result<()> {
    let book = copy_book("stale-output")?;
    edit(
        &book,
        "examples/output/linear_memory.txt",
        "{Committed: 4095}",
        "{Committed: 4095, Moved: 3}",
    )?;
    let problems = crate::outputs::rerun_outputs(&book, Some(&["linear_memory"]))?;
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("examples/output/linear_memory.txt:")
                && p.contains("digits aside")),
        "the stale output was not named: {problems:?}"
    );
    Ok(())
}

#[test]
fn an_example_whose_header_misses_a_crate_fails_naming_it() -> Result<()> {
    let book = copy_book("fresh")?;
    edit(
        &book,
        "examples/realloc_paths.rs",
        "//! - Depends on: std, libc 0.2",
        "//! - Depends on: std",
    )?;
    edit(
        &book,
        "examples/page_math.rs",
        "//! - Run: ",
        "//! - How to run: ",
    )?;
    let problems = crate::fresh::check_examples(
        &book,
        Some(&["realloc_paths", "page_math", "linear_memory"]),
    )?;
    let named = |file: &str, what: &str| {
        problems
            .iter()
            .any(|p| p.starts_with(file) && p.contains(what))
    };
    assert!(
        named("examples/realloc_paths.rs", "does not build"),
        "realloc_paths was not named: {problems:?}"
    );
    assert!(
        named("examples/page_math.rs", "`//! - Run:`"),
        "page_math was not named: {problems:?}"
    );
    assert_eq!(
        problems.len(),
        2,
        "linear_memory should build: {problems:?}"
    );
    Ok(())
}

#[test]
fn an_example_whose_parser_panics_fails_bad_input_naming_it() -> Result<()> {
    let book = copy_book("bad-input")?;
    edit(
        &book,
        "examples/map_and_touch.rs",
        "match text.parse::<u64>() {",
        "match Ok::<u64, ()>(text.parse::<u64>().unwrap()) {",
    )?;
    let out = crate::run_recorded(
        book.cargo()
            .args(["test", "--test", "bad_input", "--", "map_and_touch"]),
        true,
    )?;
    assert!(!out.success, "the panicking parser passed:\n{}", out.stdout);
    assert!(
        out.stdout.contains("bad_input: map_and_touch: FAILED") && out.stdout.contains("panicked"),
        "the failure does not name map_and_touch and the panic:\n{}",
        out.stdout
    );
    Ok(())
}

/// Most breakages show in any window: those cases load their page once.
const LIGHT: Window = ("light", Viewport::Desktop);

/// The browser check of the built copy, on `pages` only (every load takes
/// seconds) in one window, without screenshots.
fn check_pages(book: &Book, pages: &[&str], window: Window) -> Result<()> {
    steps::mdbook_build(book, &mut Tally::default())?;
    crate::site_check::check(&book.chromium, &book.root, Some(pages), &[window], None).map(|_| ())
}

#[test]
fn a_diagram_without_an_accessible_title_fails_naming_the_chapter() -> Result<()> {
    let book = copy_book("diagram-title")?;
    edit(&book, CHAPTER, "    accTitle: How the book is tested\n", "")?;
    expect_failure(
        check_pages(&book, &["how-this-book-is-tested.html"], LIGHT),
        &[
            CHAPTER,
            "mermaid block 1 has no accessible title",
            "accTitle",
        ],
    );
    Ok(())
}

#[test]
fn an_image_without_alt_text_fails_axe_naming_the_chapter() -> Result<()> {
    let book = copy_book("axe")?;
    edit(
        &book,
        CHAPTER,
        "## One source of truth",
        "<img src=\"charts/memory_grow.svg\">\n\n## One source of truth",
    )?;
    expect_failure(
        check_pages(&book, &["how-this-book-is-tested.html"], LIGHT),
        &[CHAPTER, "axe critical `image-alt`"],
    );
    Ok(())
}

#[test]
fn a_heavy_page_without_a_diagram_fails_naming_the_chapter() -> Result<()> {
    let book = copy_book("weight")?;
    // A valid SVG (it draws), made heavy by a comment.
    let heavy = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"8\" height=\"8\"><!-- {} --></svg>",
        "x".repeat(crate::site_check::PLAIN_PAGE_LIMIT as usize)
    );
    std::fs::write(book.root.join("src/charts/heavy.svg"), heavy)?;
    edit(
        &book,
        "src/introduction.md",
        "## The four parts",
        "![A blank square](charts/heavy.svg)\n\n## The four parts",
    )?;
    expect_failure(
        check_pages(&book, &["introduction.html"], LIGHT),
        &[
            "src/introduction.md",
            "without a diagram, over the 1024 KiB limit",
            "charts/heavy.svg",
        ],
    );
    Ok(())
}

#[test]
fn a_code_block_wider_than_a_phone_fails_naming_the_chapter() -> Result<()> {
    let book = copy_book("overflow")?;
    // Code that spills out of its block instead of scrolling in it.
    let css = book.root.join("theme/book.css");
    let mut text = std::fs::read_to_string(&css)?;
    text += "\n.content pre > code { overflow-x: visible !important; }\n";
    std::fs::write(&css, text)?;
    expect_failure(
        check_pages(&book, &["part1-contract.html"], ("navy", Viewport::Phone)),
        &[
            "src/part1-contract.md",
            "390 px): overflows the viewport: code block",
        ],
    );
    Ok(())
}
