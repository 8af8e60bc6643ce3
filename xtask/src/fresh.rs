//! The copy-paste step: every example builds as `src/main.rs` of a fresh
//! crate that has only the dependencies its header names,
//!
//! ```text
//! //! - Depends on: std, libc 0.2 (and windows-sys 0.61 on Windows)
//! ```
//!
//! at the versions of the book's `Cargo.lock`, offline, with its tests
//! (`--all-targets`): a reader who copies the file whole gets a program that
//! builds. Each crate lives in `target/xtask/fresh/<example>/`; they share one
//! target folder, so the dependencies compile once. A missing or wrong
//! header fails naming the example.

use std::path::Path;

use crate::book::{Book, Tally};
use crate::manifest::{self, Dependency};
use crate::{run_recorded, Result};

/// The lines every example's header has, in this order.
const HEADER_LINES: [&str; 4] = [
    "//! - Explained in:",
    "//! - Run:",
    "//! - Tested by:",
    "//! - Depends on:",
];

/// One dependency a header names.
#[derive(Debug, PartialEq)]
pub struct Named {
    pub name: String,
    pub version: String,
    /// `cfg(windows)` for `(... on Windows)`, else `None`.
    pub platform: Option<String>,
}

/// The crates of a `Depends on:` list (without `std`), or what is wrong.
pub fn parse_depends(list: &str) -> std::result::Result<Vec<Named>, String> {
    let mut named = Vec::new();
    let mut outside = String::new();
    let mut rest = list;
    while let Some(open) = rest.find('(') {
        outside.push_str(&rest[..open]);
        let close = rest[open..]
            .find(')')
            .map(|c| open + c)
            .ok_or("an unclosed `(`")?;
        let inner = rest[open + 1..close].trim();
        let inner = inner.strip_prefix("and ").unwrap_or(inner);
        let (crates, platform) = inner
            .rsplit_once(" on ")
            .ok_or_else(|| format!("`({inner})` should read `(and NAME VERSION on PLATFORM)`"))?;
        let cfg = match platform.trim() {
            "Windows" => "cfg(windows)",
            "Unix" => "cfg(unix)",
            "Linux" => "cfg(target_os = \"linux\")",
            "macOS" => "cfg(target_os = \"macos\")",
            other => {
                return Err(format!(
                    "unknown platform `{other}` (Windows, Unix, Linux or macOS)"
                ))
            }
        };
        for item in items(crates) {
            named.push(name_version(item, Some(cfg.to_owned()))?);
        }
        rest = &rest[close + 1..];
    }
    outside.push_str(rest);
    let items: Vec<&str> = items(&outside);
    if items.first() != Some(&"std") {
        return Err("the list should start with `std`".into());
    }
    for item in &items[1..] {
        named.push(name_version(item, None)?);
    }
    Ok(named)
}

fn items(list: &str) -> Vec<&str> {
    list.split(',')
        .flat_map(|part| part.split(" and "))
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .collect()
}

fn name_version(item: &str, platform: Option<String>) -> std::result::Result<Named, String> {
    let (name, version) = item
        .split_once(' ')
        .ok_or_else(|| format!("`{item}` should read `NAME VERSION`, e.g. `libc 0.2`"))?;
    let version = version.trim();
    if version.is_empty()
        || !version
            .split('.')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(format!("`{item}`: `{version}` is not a version like `0.2`"));
    }
    Ok(Named {
        name: name.to_owned(),
        version: version.to_owned(),
        platform,
    })
}

/// The header's `Depends on:` list, or what is missing from the header.
pub fn depends_line(source: &str) -> std::result::Result<String, String> {
    let header: Vec<&str> = source
        .lines()
        .take_while(|l| l.starts_with("//!"))
        .collect();
    if header.first().is_none_or(|l| l.trim() == "//!") {
        return Err("has no `//!` header: its first line says what it shows, in one line".into());
    }
    let mut at = 0;
    for wanted in HEADER_LINES {
        match header.iter().skip(at).position(|l| l.starts_with(wanted)) {
            Some(i) => at += i + 1,
            None => {
                return Err(format!(
                    "its `//!` header has no `{wanted}` line where the header style puts it: after a one-line summary, the lines {}, in that order",
                    HEADER_LINES.map(|l| format!("`{}`", l.trim_start_matches("//! "))).join(", ")
                ))
            }
        }
    }
    // The last line found is `Depends on:`; it may continue on `//!` lines.
    let mut list = header[at - 1]["//! - Depends on:".len()..]
        .trim()
        .to_owned();
    for more in header[at..].iter().take_while(|l| l.starts_with("//!   ")) {
        list.push(' ');
        list.push_str(more.trim_start_matches("//!").trim());
    }
    Ok(list)
}

/// The fresh crate's `Cargo.toml`: the header's crates, with the features
/// the book's own `Cargo.toml` gives them.
fn manifest_for(
    example: &str,
    named: &[Named],
    book_deps: &[Dependency],
) -> std::result::Result<String, String> {
    let mut normal = String::new();
    let mut by_platform: Vec<(String, String)> = Vec::new();
    for n in named {
        let Some(dep) = book_deps.iter().find(|d| {
            d.name == n.name && d.kind.is_none() && d.target.as_deref() == n.platform.as_deref()
        }) else {
            return Err(format!(
                "its header names `{} {}`{}, which the book's Cargo.toml does not declare there",
                n.name,
                n.version,
                n.platform
                    .as_ref()
                    .map_or(String::new(), |p| format!(" for {p}"))
            ));
        };
        let req = dep.req.trim_start_matches('^');
        if req != n.version {
            return Err(format!(
                "its header says `{} {}`, but the book's Cargo.toml uses {} {}",
                n.name, n.version, n.name, dep.req
            ));
        }
        let line = format!(
            "{} = {{ version = {:?}, default-features = {}, features = [{}] }}\n",
            n.name,
            n.version,
            dep.uses_default_features,
            dep.features
                .iter()
                .map(|f| format!("{f:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        match &n.platform {
            None => normal.push_str(&line),
            Some(p) => match by_platform.iter_mut().find(|(q, _)| q == p) {
                Some((_, lines)) => lines.push_str(&line),
                None => by_platform.push((p.clone(), line)),
            },
        }
    }
    let mut toml = format!(
        "# Written by `cargo xtask test` (copy-paste step): {example}.rs as src/main.rs, with only\n\
         # the crates its header names.\n\
         [package]\nname = \"fresh-{}\"\nversion = \"0.0.0\"\nedition = \"2021\"\npublish = false\n\n\
         [dependencies]\n{normal}",
        example.replace('_', "-")
    );
    for (platform, lines) in by_platform {
        toml.push_str(&format!("\n[target.'{platform}'.dependencies]\n{lines}"));
    }
    // Not a member of the book's workspace: a crate of its own.
    toml.push_str("\n[workspace]\n");
    Ok(toml)
}

/// Builds each example (or those in `only`) in a fresh crate, and returns
/// the problems, each naming its example.
pub fn check_examples(book: &Book, only: Option<&[&str]>) -> Result<Vec<String>> {
    let book_deps = manifest::dependencies(&book.root)?;
    let lock = std::fs::read_to_string(book.root.join("Cargo.lock"))?;
    let scratch = book.target.join("xtask/fresh");
    let target = scratch.join("target");
    let mut problems = Vec::new();
    let examples = crate::files::files_with_extension(&book.root.join("examples"), "rs")?;
    for file in examples
        .iter()
        .filter(|f| f.parent() == Some(Path::new("")))
    {
        let example = file
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        if only.is_some_and(|names| !names.contains(&example)) {
            continue;
        }
        let shown = format!("examples/{example}.rs");
        let source = std::fs::read_to_string(book.root.join(&shown))?;
        let manifest = depends_line(&source)
            .and_then(|list| {
                parse_depends(&list).map_err(|e| format!("its `Depends on:` line: {e}"))
            })
            .and_then(|named| manifest_for(example, &named, &book_deps));
        let manifest = match manifest {
            Ok(m) => m,
            Err(why) => {
                problems.push(format!("{shown}: {why}"));
                continue;
            }
        };
        let dir = scratch.join(example);
        std::fs::create_dir_all(dir.join("src"))?;
        // Unchanged files keep their times, so cargo rebuilds only what changed.
        write_if_changed(&dir.join("Cargo.toml"), &manifest)?;
        write_if_changed(&dir.join("src/main.rs"), &source)?;
        std::fs::write(dir.join("Cargo.lock"), &lock)?;
        let out = run_recorded(
            std::process::Command::new(crate::tools::cargo())
                .current_dir(&dir)
                .args([
                    "build",
                    "--offline",
                    "--all-targets",
                    "--quiet",
                    "--color=never",
                ])
                .env("CARGO_TARGET_DIR", &target),
            true,
        )?;
        if !out.success {
            problems.push(format!(
                "{shown}: does not build as src/main.rs of a fresh crate with only the crates its header names ({}):\n{}",
                dir.join("Cargo.toml").display(),
                out.error_lines()
                    .lines()
                    .map(|l| format!("    {l}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            ));
        }
    }
    Ok(problems)
}

fn write_if_changed(path: &Path, text: &str) -> Result<()> {
    if std::fs::read_to_string(path).is_ok_and(|old| old == text) {
        return Ok(());
    }
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()).into())
}

pub fn copy_paste(book: &Book, _: &mut Tally) -> Result<()> {
    let problems = check_examples(book, None)?;
    eprintln!(
        "copy-paste: {} examples do not build alone as their header says",
        problems.len()
    );
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n").into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depends_lists_in_the_header_style() {
        assert_eq!(parse_depends("std"), Ok(vec![]));
        assert_eq!(
            parse_depends("std, libc 0.2 (and windows-sys 0.61 on Windows)").unwrap(),
            vec![
                Named {
                    name: "windows-sys".into(),
                    version: "0.61".into(),
                    platform: Some("cfg(windows)".into())
                },
                Named {
                    name: "libc".into(),
                    version: "0.2".into(),
                    platform: None
                },
            ]
        );
        assert_eq!(
            parse_depends("std, libc 0.2 and memmap2 0.9")
                .unwrap()
                .len(),
            2
        );
        assert!(parse_depends("libc 0.2")
            .unwrap_err()
            .contains("start with `std`"));
        assert!(parse_depends("std, libc")
            .unwrap_err()
            .contains("NAME VERSION"));
        assert!(parse_depends("std, libc latest")
            .unwrap_err()
            .contains("not a version"));
        assert!(parse_depends("std (libc 0.2 on Plan9)")
            .unwrap_err()
            .contains("Plan9"));
    }

    #[test]
    fn the_header_needs_every_line_in_order() {
        let good = "//! Shows a thing.\n//!\n//! - Explained in: \"X\" (src/x.md)\n//! - Run: `cargo run --example x`\n\
                    //! - Tested by: `cargo test --example x`\n//! - Depends on: std, libc 0.2\n//!   (and windows-sys 0.61 on Windows)\nfn main() {}\n";
        assert_eq!(
            depends_line(good).as_deref(),
            Ok("std, libc 0.2 (and windows-sys 0.61 on Windows)")
        );
        assert!(depends_line("// old style\nfn main() {}")
            .unwrap_err()
            .contains("no `//!` header"));
        let no_run = good.replace("//! - Run: `cargo run --example x`\n", "");
        assert!(depends_line(&no_run).unwrap_err().contains("`//! - Run:`"));
    }
}
