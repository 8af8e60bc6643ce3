//! build.rs expands the chapters' include directives itself, because skeptic
//! cannot. This test proves the expansion is mdBook's: it builds the real book
//! with mdBook's markdown renderer (which writes each chapter as preprocessed)
//! and compares the two, chapter by chapter, byte for byte.
//!
//! It needs the pinned mdbook. `cargo xtask test` passes its path in
//! `DMB_MDBOOK`; otherwise an `mdbook` on PATH of the pinned version is used.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

// The expansion build.rs runs, run here afresh: build.rs does not re-run
// when an included table changes (no Rust block comes from one).
#[path = "../build.rs"]
#[allow(dead_code)]
mod build_script;

const PINS: &str = include_str!("../xtask/tools.txt");

fn pinned_mdbook_version() -> &'static str {
    PINS.lines()
        .find_map(|l| l.strip_prefix("mdbook "))
        .map(str::trim)
        .expect("xtask/tools.txt pins mdbook")
}

fn mdbook() -> PathBuf {
    if let Some(path) = std::env::var_os("DMB_MDBOOK") {
        return PathBuf::from(path);
    }
    let want = pinned_mdbook_version();
    let version = Command::new("mdbook").arg("--version").output();
    match version {
        Ok(out) if String::from_utf8_lossy(&out.stdout).contains(want) => PathBuf::from("mdbook"),
        _ => panic!(
            "this test needs mdbook {want}: run it through `cargo xtask test`, \
             or run `cargo xtask install-tools` and set DMB_MDBOOK to the installed binary"
        ),
    }
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        let entries = std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display()));
        for entry in entries {
            let path = entry.expect("readable folder entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                found.push(path.strip_prefix(dir).expect("under dir").to_path_buf());
            }
        }
    }
    found.sort();
    found
}

#[test]
fn build_rs_expands_every_chapter_exactly_as_mdbook_does() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let theirs = Path::new(env!("CARGO_TARGET_TMPDIR")).join("mdbook-markdown");

    let out = Command::new(mdbook())
        .args(["build", "--dest-dir"])
        .arg(&theirs)
        .current_dir(root)
        // Replace the book's outputs with mdBook's markdown renderer only.
        .env("MDBOOK_OUTPUT", r#"{"markdown":{}}"#)
        .output()
        .expect("mdbook runs");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "mdbook build failed:\n{log}");
    assert!(!log.contains("ERROR"), "mdbook reported errors:\n{log}");

    let mdbook_chapters = files_under(&theirs);
    assert!(
        mdbook_chapters.len() >= 3,
        "mdBook rendered only {mdbook_chapters:?}"
    );
    let src = root.join("src");
    let (mut errors, mut used) = (Vec::new(), BTreeSet::new());
    let mut mismatches = Vec::new();
    for chapter in &mdbook_chapters {
        let expected = std::fs::read_to_string(theirs.join(chapter)).expect("mdBook's chapter");
        let actual = build_script::expand_chapter(&src, chapter, &mut errors, &mut used);
        if actual != expected {
            mismatches.push(first_difference(chapter, &expected, &actual));
        }
    }
    assert!(
        errors.is_empty(),
        "build.rs's checks: {}",
        errors.join("\n")
    );
    // A chapter that mdBook never renders (not in SUMMARY.md) is not on the site.
    for chapter in files_under(&src) {
        if chapter != Path::new("SUMMARY.md") && !mdbook_chapters.contains(&chapter) {
            mismatches.push(format!(
                "src/{}: not listed in src/SUMMARY.md, so not on the site",
                chapter.display()
            ));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

fn first_difference(chapter: &Path, expected: &str, actual: &str) -> String {
    let line = expected
        .lines()
        .zip(actual.lines())
        .position(|(e, a)| e != a)
        .unwrap_or_else(|| expected.lines().count().min(actual.lines().count()));
    format!(
        "src/{}: expanded line {}: mdBook has {:?}, build.rs has {:?}",
        chapter.display(),
        line + 1,
        expected.lines().nth(line),
        actual.lines().nth(line)
    )
}
