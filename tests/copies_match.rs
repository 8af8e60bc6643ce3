//! Every example is one self-contained file, so a helper that several
//! examples need is copied into each. The copies are marked
//!
//! ```text
//! // SHARED: <name> (canonical: examples/<file>.rs)
//! ...
//! // SHARED_END: <name>
//! ```
//!
//! and this test holds each one byte for byte to the region of that name in
//! its canonical file, markers included. The test suites' shared helpers in
//! `tests/support/` and the benches in `benches/` may hold copies of an
//! example's region too (a test or bench that needs one small helper need
//! not compile the whole example in). A copy whose canonical file has no
//! such region fails, and so does a canonical region that no example copies
//! (a helper with one home needs no marker).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
struct Region {
    /// The example's path as the markers write it, `examples/x.rs`.
    file: String,
    name: String,
    canonical: String,
    /// 1-based line of the `SHARED:` marker.
    line: usize,
    /// The marker lines and everything between them.
    lines: Vec<String>,
}

/// `(name, canonical)` of a `// SHARED: name (canonical: examples/x.rs)` line.
fn start_marker(line: &str) -> Option<(&str, &str)> {
    let rest = line.trim_start().strip_prefix("// SHARED:")?.trim_start();
    let (name, rest) = rest.split_once(' ')?;
    let canonical = rest.trim().strip_prefix("(canonical:")?.strip_suffix(')')?;
    Some((name, canonical.trim()))
}

fn end_marker(line: &str) -> Option<&str> {
    Some(line.trim_start().strip_prefix("// SHARED_END:")?.trim())
}

/// The regions of one file, or what is wrong with its markers.
fn regions(file: &str, text: &str) -> Result<Vec<Region>, Vec<String>> {
    let mut found = Vec::new();
    let mut errors = Vec::new();
    let mut open: Option<Region> = None;
    for (index, line) in text.lines().enumerate() {
        let at = index + 1;
        if let Some((name, canonical)) = start_marker(line) {
            if let Some(outer) = &open {
                errors.push(format!(
                    "{file}:{at}: `SHARED: {name}` starts inside `{}` (from line {}); regions do not nest",
                    outer.name, outer.line
                ));
            }
            open = Some(Region {
                file: file.to_owned(),
                name: name.to_owned(),
                canonical: canonical.to_owned(),
                line: at,
                lines: vec![line.to_owned()],
            });
        } else if line.trim_start().starts_with("// SHARED:") {
            errors.push(format!(
                "{file}:{at}: a SHARED marker must read `// SHARED: <name> (canonical: examples/<file>.rs)`"
            ));
        } else if let Some(name) = end_marker(line) {
            match open.take() {
                Some(mut region) if region.name == name => {
                    region.lines.push(line.to_owned());
                    found.push(region);
                }
                Some(region) => errors.push(format!(
                    "{file}:{at}: `SHARED_END: {name}` closes `{}` (from line {})",
                    region.name, region.line
                )),
                None => errors.push(format!(
                    "{file}:{at}: `SHARED_END: {name}` without a `SHARED: {name}`"
                )),
            }
        } else if let Some(region) = open.as_mut() {
            region.lines.push(line.to_owned());
        }
    }
    if let Some(region) = open {
        errors.push(format!(
            "{file}:{}: `SHARED: {}` has no `SHARED_END: {}`",
            region.line, region.name, region.name
        ));
    }
    let mut seen = BTreeMap::new();
    for region in &found {
        if let Some(first) = seen.insert(region.name.clone(), region.line) {
            errors.push(format!(
                "{file}:{}: a second region `{}` (the first is at line {first})",
                region.line, region.name
            ));
        }
    }
    if errors.is_empty() {
        Ok(found)
    } else {
        Err(errors)
    }
}

/// Every problem with the shared regions of the examples in `root/examples`
/// and `root/runtime/examples`, and of their copies in `root/tests/support`
/// and `root/benches`.
fn check(root: &Path) -> Vec<String> {
    // The runtime workspace member's examples hold copies too.
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    for dir in ["examples", "runtime/examples", "tests/support", "benches"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            assert_ne!(dir, "examples", "{dir}/ can be listed");
            continue;
        };
        files.extend(
            entries
                .map(|e| e.expect("a readable folder entry").path())
                .filter(|p| p.extension().is_some_and(|e| e == "rs"))
                .map(|p| {
                    let name = p.file_name().expect("a file name").to_string_lossy();
                    (format!("{dir}/{name}"), p)
                }),
        );
    }
    files.sort();
    let mut errors = Vec::new();
    let mut all = Vec::new();
    for (file, path) in &files {
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{file}: {e}"));
        match regions(file, &text) {
            Ok(found) => all.extend(found),
            Err(e) => errors.extend(e),
        }
    }
    let canonical_of = |file: &str, name: &str| {
        all.iter()
            .find(|r| r.file == file && r.name == name && r.canonical == file)
    };
    let mut copied: Vec<(&str, &str)> = Vec::new();
    for copy in all.iter().filter(|r| r.file != r.canonical) {
        let Some(canonical) = canonical_of(&copy.canonical, &copy.name) else {
            errors.push(format!(
                "{}:{}: `SHARED: {}` names {} as canonical, which has no region `{}` marked canonical",
                copy.file, copy.line, copy.name, copy.canonical, copy.name
            ));
            continue;
        };
        copied.push((&canonical.file, &canonical.name));
        if let Some(diff) = first_difference(copy, canonical) {
            errors.push(diff);
        }
    }
    for canonical in all.iter().filter(|r| r.file == r.canonical) {
        if copied.contains(&(canonical.file.as_str(), canonical.name.as_str())) {
            continue;
        }
        errors.push(format!(
            "{}:{}: canonical region `{}` has no copy in another example: drop its markers, or copy it",
            canonical.file, canonical.line, canonical.name
        ));
    }
    errors
}

/// Where `copy` first differs from `canonical`, naming both files and lines.
fn first_difference(copy: &Region, canonical: &Region) -> Option<String> {
    let longest = copy.lines.len().max(canonical.lines.len());
    let at = (0..longest).find(|&i| copy.lines.get(i) != canonical.lines.get(i))?;
    let show = |r: &Region| {
        r.lines
            .get(at)
            .map_or("(the region has ended)".to_owned(), |l| format!("`{l}`"))
    };
    Some(format!(
        "{}:{}: the copy of `{}` differs from its canonical {}:{}: {} here, {} there",
        copy.file,
        copy.line + at,
        copy.name,
        canonical.file,
        canonical.line + at,
        show(copy),
        show(canonical)
    ))
}

#[test]
fn every_shared_region_is_a_byte_for_byte_copy_of_its_canonical() {
    let errors = check(Path::new(env!("CARGO_MANIFEST_DIR")));
    assert!(errors.is_empty(), "\n{}", errors.join("\n"));
}

/// The checker on broken copies of the real examples: a changed copy fails
/// naming both files, and so does a copy of a region its canonical lacks.
#[test]
fn a_changed_copy_fails_naming_both_files() {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("copies_match_selftest");
    let examples = root.join("examples");
    if root.exists() {
        std::fs::remove_dir_all(&root).unwrap();
    }
    std::fs::create_dir_all(&examples).unwrap();
    for entry in std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")).unwrap()
    {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "rs") {
            std::fs::copy(&path, examples.join(path.file_name().unwrap())).unwrap();
        }
    }
    let errors = check(&root);
    assert!(
        errors.is_empty(),
        "the unbroken copy fails:\n{}",
        errors.join("\n")
    );

    // Change one line inside remap_memory's copy of `region`.
    let copy = examples.join("remap_memory.rs");
    let text = std::fs::read_to_string(&copy).unwrap();
    let start = text
        .find("// SHARED: region (canonical: examples/linear_memory.rs)")
        .expect("remap_memory.rs copies `region`: update this self-test");
    let line_end = start + text[start..].find('\n').unwrap() + 1;
    let next_end = line_end + text[line_end..].find('\n').unwrap();
    let broken = format!(
        "{}{} // changed{}",
        &text[..line_end],
        &text[line_end..next_end],
        &text[next_end..]
    );
    std::fs::write(&copy, &broken).unwrap();
    let errors = check(&root);
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("examples/remap_memory.rs:")
                && e.contains("`region`")
                && e.contains("examples/linear_memory.rs:")),
        "the changed copy was not named with its canonical:\n{}",
        errors.join("\n")
    );

    // A copy of a region the canonical file does not have.
    std::fs::write(
        &copy,
        broken
            .replace("// SHARED: region (", "// SHARED: regio (")
            .replace("// SHARED_END: region", "// SHARED_END: regio"),
    )
    .unwrap();
    let errors = check(&root);
    assert!(
        errors
            .iter()
            .any(|e| e.contains("examples/remap_memory.rs:")
                && e.contains("examples/linear_memory.rs as canonical")
                && e.contains("no region `regio`")),
        "the orphan copy was not named:\n{}",
        errors.join("\n")
    );
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn markers_that_do_not_pair_are_named() {
    let text =
        "// SHARED: a (canonical: examples/x.rs)\nfn a() {}\n// SHARED_END: b\n// SHARED: c\n";
    let errors = regions("examples/x.rs", text).unwrap_err();
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("examples/x.rs:3:") && e.contains("closes `a`")),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("examples/x.rs:4:") && e.contains("must read")),
        "{errors:?}"
    );
}
