//! Expands the book's `{{#include}}` and `{{#rustdoc_include}}` directives the way
//! mdBook 0.5.4 does and turns every Rust block of the expanded chapters into a
//! skeptic test (`tests/skeptic.rs` runs them).
//!
//! Why not hand `src/` to skeptic directly? Skeptic does not understand mdBook's
//! include directives, so it would test the directive text, not the code a reader
//! sees. `tests/book_expansion.rs` proves that this expansion and mdBook's own
//! (its markdown renderer) agree, chapter by chapter.
//!
//! Where mdBook only logs a problem (a missing file or anchor leaves the directive,
//! or an empty block, in the page), this script fails the build and names the
//! chapter, line and directive, so a broken include can never reach the site.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

#[path = "xtask/src/programs.rs"]
#[allow(dead_code)] // `is_hidden` serves the xtask's block-length check
mod programs;

/// mdBook stops expanding nested includes at this depth (`MAX_LINK_NESTED_DEPTH`).
const MAX_NESTED_DEPTH: usize = 10;

fn main() {
    let manifest_dir = PathBuf::from(env("CARGO_MANIFEST_DIR"));
    let out_root = PathBuf::from(env("OUT_DIR"));
    let src_dir = manifest_dir.join("src");

    // Cargo scans a directory named here recursively, so new chapters and new
    // examples re-run this script too.
    println!("cargo::rerun-if-changed=src");
    println!("cargo::rerun-if-changed=examples");
    println!("cargo::rerun-if-changed=xtask/src/programs.rs");
    println!("cargo::rerun-if-changed=runtime/examples");
    // Part IV's chapters include bench code, and the tables that
    // `cargo xtask bench` writes to benches/results/.
    println!("cargo::rerun-if-changed=benches");

    let chapters = markdown_files(&src_dir);
    // Rust sources a chapter includes from elsewhere (a test's source) re-run
    // this script too. The tables and outputs it includes do not: no Rust
    // block comes from them, so skeptic's tests cannot change, and the
    // xtask rewrites tests/results/ on every run (a re-run here rebuilds
    // every target of the package). tests/book_expansion.rs expands the
    // chapters afresh when it runs.
    for chapter in &chapters {
        let text = fs::read_to_string(chapter).unwrap_or_default();
        for piece in text.split("include ../").skip(1) {
            let path = piece.split([':', '}']).next().unwrap_or("");
            if path.ends_with(".rs") && !path.contains(char::is_whitespace) {
                println!("cargo::rerun-if-changed={path}");
            }
        }
    }
    let mut skeptic_paths = Vec::new();
    let mut programs = BTreeSet::new();
    let mut errors = Vec::new();
    let mut used = BTreeSet::new();
    for chapter in &chapters {
        let rel = chapter.strip_prefix(&src_dir).expect("walked from src_dir");
        let expanded = expand_chapter(&src_dir, rel, &mut errors, &mut used);
        // Checked here like every chapter, compiled by the member's skeptic.
        if !RUNTIME_CHAPTERS.iter().any(|c| Path::new(c) == rel) {
            skeptic_paths.push(skeptic_copy(&out_root, rel, &expanded, &mut programs));
        }
    }
    check_unique_stems(&chapters, &mut errors);
    check_dead_anchors(&manifest_dir, &used, &mut errors);
    if !errors.is_empty() {
        for e in &errors {
            println!("cargo::error={e}");
        }
        std::process::exit(1);
    }
    skeptic::generate_doc_tests(&skeptic_paths);
}

/// Writes the copy of chapter `rel` (expanded: `text`) that skeptic turns
/// into tests, under `<out_dir>/skeptic/`, and returns its path. A Rust
/// block whose program an earlier block already is (`programs` holds those
/// of the chapters before; see xtask/src/programs.rs) becomes a `text`
/// block on the same lines, so each program is compiled and run once.
pub fn skeptic_copy(
    out_dir: &Path,
    rel: &Path,
    text: &str,
    programs: &mut BTreeSet<String>,
) -> PathBuf {
    use pulldown_cmark::{CodeBlockKind, Event, Parser, Tag};
    let mut copy = String::with_capacity(text.len());
    let mut copied = 0;
    // The open Rust block: its info string, where its fence starts, its code.
    let mut open: Option<(String, usize, String)> = None;
    for (event, range) in Parser::new(text).into_offset_iter() {
        match event {
            Event::Start(Tag::CodeBlock(CodeBlockKind::Fenced(info)))
                if info.split(',').next().map(str::trim) == Some("rust") =>
            {
                open = Some((info.to_string(), range.start, String::new()));
            }
            Event::Text(code) => {
                if let Some((_, _, body)) = open.as_mut() {
                    body.push_str(&code);
                }
            }
            Event::End(Tag::CodeBlock(_)) => {
                let Some((info, start, body)) = open.take() else {
                    continue;
                };
                if programs.insert(programs::program(&info, body.lines())) {
                    continue;
                }
                let fence_end = text[start..].find('\n').map_or(text.len(), |n| start + n);
                let fence = &text[start..fence_end];
                let marks = fence.trim_start();
                let lead = fence.len() - marks.len();
                let run = marks.len() - marks.trim_start_matches(['`', '~']).len();
                copy.push_str(&text[copied..start]);
                copy.push_str(&fence[..lead + run]);
                copy.push_str("text");
                copied = fence_end;
            }
            _ => {}
        }
    }
    copy.push_str(&text[copied..]);
    let dest = out_dir.join("skeptic").join(rel);
    if let Err(e) = fs::create_dir_all(dest.parent().expect("has a parent"))
        .and_then(|()| write_if_changed(&dest, &copy))
    {
        fail(&format!("cannot write {}: {e}", dest.display()));
    }
    dest
}

/// Chapters whose snippets need wasmtime: the `runtime-snippets` workspace
/// member's build script (runtime/snippets/build.rs, which includes this
/// file) turns them into its skeptic tests, so the book package never builds wasmtime.
pub const RUNTIME_CHAPTERS: &[&str] = &["part1-runtime.md"];

/// One chapter (`rel`, under `src_dir`) as mdBook expands it, its code
/// blocks checked. Problems go to `errors`, included anchors to `used`.
pub fn expand_chapter(
    src_dir: &Path,
    rel: &Path,
    errors: &mut Vec<String>,
    used: &mut BTreeSet<(PathBuf, String)>,
) -> String {
    let chapter = src_dir.join(rel);
    let shown = Path::new("src").join(rel);
    let text = match fs::read_to_string(&chapter) {
        Ok(text) => text,
        Err(e) => fail(&format!("{}: cannot read: {e}", shown.display())),
    };
    let base = chapter.parent().expect("a chapter lives in a folder");
    let mut ctx = Context {
        chapter: &shown,
        errors: &mut *errors,
        depth: 0,
        used,
    };
    let expanded = expand(&text, base, &mut ctx);
    check_code_blocks(&shown, &expanded, errors);
    expanded
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| fail(&format!("cargo did not set {name}")))
}

fn fail(message: &str) -> ! {
    println!("cargo::error={message}");
    std::process::exit(1);
}

/// Every `*.md` under `dir`, sorted so the generated tests are stable.
fn markdown_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = fs::read_dir(&dir)
            .unwrap_or_else(|e| fail(&format!("cannot list {}: {e}", dir.display())));
        for entry in entries {
            let path = entry
                .unwrap_or_else(|e| fail(&format!("cannot list {}: {e}", dir.display())))
                .path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|ext| ext == "md") {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// Skeptic names each test after the chapter's file stem, so two chapters with
/// the same stem in different folders would produce clashing test names.
fn check_unique_stems(chapters: &[PathBuf], errors: &mut Vec<String>) {
    let mut seen = std::collections::BTreeMap::new();
    for chapter in chapters {
        let stem = chapter
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned());
        if let Some(previous) = seen.insert(stem, chapter) {
            errors.push(format!(
                "{} and {} share a file name; skeptic test names would clash",
                previous.display(),
                chapter.display()
            ));
        }
    }
}

struct Context<'a> {
    chapter: &'a Path,
    errors: &'a mut Vec<String>,
    /// How deep in nested includes the text being expanded is.
    depth: usize,
    /// Every `(file, anchor)` a chapter includes, for the dead-anchor check.
    used: &'a mut BTreeSet<(PathBuf, String)>,
}

impl Context<'_> {
    fn error(&mut self, line: usize, directive: &str, what: String) {
        self.errors.push(format!(
            "{}:{line}: {directive}: {what}",
            self.chapter.display()
        ));
    }
}

// ---------------------------------------------------------------------------
// Finding directives: the same matches as mdBook's `find_links` regex
//   \\\{\{\#.*\}\}  |  \{\{\s*\#([a-zA-Z0-9_]+)\s+([^}]+)\}\}
// scanned leftmost-first. A match whose type mdBook does not know is skipped
// (left in the text), exactly as mdBook skips it.
// ---------------------------------------------------------------------------

struct Directive<'t> {
    start: usize,
    end: usize,
    /// The whole directive, `{{#include ...}}`, for error messages.
    text: &'t str,
    /// `None` for an escaped directive (`\{{#...}}`).
    kind: Option<&'t str>,
    args: &'t str,
}

fn find_directive(text: &str, from: usize) -> Option<Directive<'_>> {
    let bytes = text.as_bytes();
    let mut at = from;
    while at < bytes.len() {
        if bytes[at] == b'\\' && text[at + 1..].starts_with("{{#") {
            // `.*` is greedy and stops at a newline: take the last `}}` on this line.
            let line_end = text[at..].find('\n').map_or(text.len(), |n| at + n);
            if let Some(close) = text[at + 3..line_end].rfind("}}") {
                let end = at + 3 + close + 2;
                return Some(Directive {
                    start: at,
                    end,
                    text: &text[at..end],
                    kind: None,
                    args: "",
                });
            }
        }
        if text[at..].starts_with("{{") {
            if let Some(found) = match_directive(text, at) {
                return Some(found);
            }
        }
        at += text[at..].chars().next().map_or(1, char::len_utf8);
    }
    None
}

fn match_directive(text: &str, start: usize) -> Option<Directive<'_>> {
    let rest = &text[start + 2..];
    let after_ws = rest.trim_start();
    let mut pos = start + 2 + (rest.len() - after_ws.len());
    let after_hash = after_ws.strip_prefix('#')?;
    pos += 1;
    let kind_len = after_hash
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(after_hash.len());
    if kind_len == 0 {
        return None;
    }
    let kind = &text[pos..pos + kind_len];
    pos += kind_len;
    let ws_len = text[pos..].len() - text[pos..].trim_start().len();
    if ws_len == 0 {
        return None;
    }
    pos += ws_len;
    // `\s+([^}]+)`: the regex can give back trailing whitespace to `\s+`, so any
    // run of non-`}` characters of length >= 1 works, followed by `}}`.
    let args_len = text[pos..].find('}').unwrap_or(text.len() - pos);
    if args_len == 0 || !text[pos + args_len..].starts_with("}}") {
        return None;
    }
    Some(Directive {
        start,
        end: pos + args_len + 2,
        text: &text[start..pos + args_len + 2],
        kind: Some(kind),
        args: &text[pos..pos + args_len],
    })
}

// ---------------------------------------------------------------------------
// Expanding: mdBook's `replace_all`, `take_lines`, `take_anchored_lines`,
// `take_rustdoc_include_lines` and `take_rustdoc_include_anchored_lines`.
// ---------------------------------------------------------------------------

fn expand(text: &str, base: &Path, ctx: &mut Context) -> String {
    let mut out = String::with_capacity(text.len());
    let mut copied_to = 0;
    let mut search_from = 0;
    while let Some(d) = find_directive(text, search_from) {
        search_from = d.end;
        let line = text[..d.start].matches('\n').count() + 1;
        let replacement = match d.kind {
            None => Some(d.text[1..].to_owned()),
            Some("title") => Some(String::new()),
            // mdBook ignores an include without a file argument.
            Some("include" | "rustdoc_include") if d.args.trim().is_empty() => continue,
            Some("include" | "rustdoc_include") => include(&d, line, base, ctx),
            Some("playground" | "playpen") => {
                ctx.error(
                    line,
                    d.text,
                    "use rustdoc_include: the book has no playground".into(),
                );
                None
            }
            Some(_) => continue, // not a directive mdBook knows: left as text
        };
        out.push_str(&text[copied_to..d.start]);
        match replacement {
            Some(r) => {
                out.push_str(&r);
                copied_to = d.end;
            }
            // mdBook leaves a directive it could not expand in place.
            None => copied_to = d.start,
        }
    }
    out.push_str(&text[copied_to..]);
    out
}

fn include(d: &Directive, line: usize, base: &Path, ctx: &mut Context) -> Option<String> {
    let target_arg = d.args.split_whitespace().next().unwrap_or("");
    let (path, selector) = match target_arg.split_once(':') {
        Some((path, selector)) => (path, Some(selector)),
        None => (target_arg, None),
    };
    let target = base.join(path);
    let source = match fs::read_to_string(&target) {
        Ok(source) => source,
        Err(e) => {
            ctx.error(
                line,
                d.text,
                format!("cannot read {}: {e}", target.display()),
            );
            return None;
        }
    };
    let rustdoc = d.kind == Some("rustdoc_include");
    let body = match parse_selector(selector) {
        Selector::Lines(start, end) => {
            if rustdoc {
                rustdoc_lines(&source, start, end)
            } else {
                take_lines(&source, start, end)
            }
        }
        Selector::Anchor(anchor) => {
            if !has_anchor(&source, anchor) {
                ctx.error(
                    line,
                    d.text,
                    format!("no `ANCHOR: {anchor}` in {}", target.display()),
                );
                return None;
            }
            let file = fs::canonicalize(&target).unwrap_or_else(|_| target.clone());
            ctx.used.insert((file, anchor.to_owned()));
            if rustdoc {
                rustdoc_anchored_lines(&source, anchor)
            } else {
                anchored_lines(&source, anchor)
            }
        }
    };
    if ctx.depth >= MAX_NESTED_DEPTH {
        ctx.error(line, d.text, "includes nest too deep (a cycle?)".into());
        return None;
    }
    let nested_base = target.parent().unwrap_or(base).to_path_buf();
    ctx.depth += 1;
    let expanded = expand(&body, &nested_base, ctx);
    ctx.depth -= 1;
    Some(expanded)
}

enum Selector<'a> {
    /// 0-based start line and exclusive end line, as mdBook's `LineRange`.
    Lines(usize, Option<usize>),
    Anchor(&'a str),
}

/// `:N`, `:N:M`, `:N:`, `::M`, `:ANCHOR` or nothing, parsed as mdBook's
/// `parse_range_or_anchor` parses them (1-based, inclusive line numbers).
fn parse_selector(selector: Option<&str>) -> Selector<'_> {
    let mut parts = selector.unwrap_or("").splitn(3, ':');
    let first = parts.next();
    let start = match first {
        Some(s) if s.parse::<usize>().is_ok() => {
            s.parse::<usize>().ok().map(|n| n.saturating_sub(1))
        }
        Some("") | None => None,
        Some(anchor) => return Selector::Anchor(anchor),
    };
    let end = parts.next().map(str::parse::<usize>);
    match (start, end) {
        (Some(start), Some(Ok(end))) => Selector::Lines(start, Some(end)),
        (Some(start), Some(Err(_))) => Selector::Lines(start, None),
        (Some(start), None) => Selector::Lines(start, Some(start + 1)),
        (None, Some(Ok(end))) => Selector::Lines(0, Some(end)),
        (None, _) => Selector::Lines(0, None),
    }
}

fn take_lines(source: &str, start: usize, end: Option<usize>) -> String {
    let lines = source.lines().skip(start);
    let taken: Vec<&str> = match end {
        Some(end) => lines.take(end.saturating_sub(start)).collect(),
        None => lines.collect(),
    };
    taken.join("\n")
}

fn rustdoc_lines(source: &str, start: usize, end: Option<usize>) -> String {
    let mut out = String::with_capacity(source.len());
    for (index, line) in source.lines().enumerate() {
        let shown = index >= start && end.is_none_or(|end| index < end);
        if !shown {
            out.push_str("# ");
        }
        out.push_str(line);
        out.push('\n');
    }
    out.pop();
    out
}

/// The name in an `ANCHOR:` or `ANCHOR_END:` marker (mdBook's `[\w_-]+`).
fn marker<'l>(line: &'l str, tag: &str) -> Option<&'l str> {
    let at = line.find(tag)?;
    let rest = line[at + tag.len()..].trim_start();
    let len = rest
        .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '-'))
        .unwrap_or(rest.len());
    (len > 0).then(|| &rest[..len])
}

fn anchor_start(line: &str) -> Option<&str> {
    marker(line, "ANCHOR:")
}

fn anchor_end(line: &str) -> Option<&str> {
    marker(line, "ANCHOR_END:")
}

fn has_anchor(source: &str, anchor: &str) -> bool {
    source.lines().any(|l| anchor_start(l) == Some(anchor))
}

fn anchored_lines(source: &str, anchor: &str) -> String {
    let mut kept = Vec::new();
    let mut inside = false;
    for line in source.lines() {
        if inside {
            match anchor_end(line) {
                Some(name) if name == anchor => break,
                Some(_) => {}
                None if anchor_start(line).is_none() => kept.push(line),
                None => {}
            }
        } else if anchor_start(line) == Some(anchor) {
            inside = true;
        }
    }
    kept.join("\n")
}

fn rustdoc_anchored_lines(source: &str, anchor: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut inside = false;
    for line in source.lines() {
        if inside {
            match anchor_end(line) {
                Some(name) if name == anchor => inside = false,
                Some(_) => {}
                None if anchor_start(line).is_none() => {
                    out.push_str(line);
                    out.push('\n');
                }
                None => {}
            }
        } else if let Some(name) = anchor_start(line) {
            if name == anchor {
                inside = true;
            }
        } else if anchor_end(line).is_none() {
            out.push_str("# ");
            out.push_str(line);
            out.push('\n');
        }
    }
    out.pop();
    out
}

// ---------------------------------------------------------------------------
// Dead anchors: an `ANCHOR:` in an example that no chapter includes marks
// code as shown that no page shows. Inside a `// SHARED:` copy of another
// example's region the anchors are the canonical file's, checked there.
// ---------------------------------------------------------------------------

fn check_dead_anchors(root: &Path, used: &BTreeSet<(PathBuf, String)>, errors: &mut Vec<String>) {
    for dir in ["examples", "runtime/examples"] {
        check_dead_anchors_in(root, dir, used, errors);
    }
}

fn check_dead_anchors_in(
    root: &Path,
    dir: &str,
    used: &BTreeSet<(PathBuf, String)>,
    errors: &mut Vec<String>,
) {
    let Ok(entries) = fs::read_dir(root.join(dir)) else {
        return;
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .collect();
    files.sort();
    for file in files {
        let Ok(source) = fs::read_to_string(&file) else {
            continue;
        };
        let name = file
            .file_name()
            .map_or(String::new(), |n| n.to_string_lossy().into_owned());
        let shown = format!("{dir}/{name}");
        let canonical_file = fs::canonicalize(&file).unwrap_or_else(|_| file.clone());
        let mut copy_of: Option<String> = None;
        for (index, line) in source.lines().enumerate() {
            if let Some(canonical) = shared_canonical(line) {
                copy_of = (canonical != shown).then(|| canonical.to_owned());
            } else if marker(line, "SHARED_END:").is_some() {
                copy_of = None;
            } else if let Some(anchor) = anchor_start(line) {
                if copy_of.is_none() && !used.contains(&(canonical_file.clone(), anchor.to_owned()))
                {
                    errors.push(format!(
                        "{shown}:{}: `ANCHOR: {anchor}` is included by no chapter (a dead anchor): include it or remove its markers",
                        index + 1
                    ));
                }
            }
        }
    }
}

/// The canonical file of a `// SHARED: name (canonical: examples/x.rs)` line.
fn shared_canonical(line: &str) -> Option<&str> {
    marker(line, "SHARED:")?;
    let rest = &line[line.find("(canonical:")? + "(canonical:".len()..];
    Some(rest[..rest.find(')')?].trim())
}

// ---------------------------------------------------------------------------
// Rules for code blocks, checked on the expanded text.
// ---------------------------------------------------------------------------

/// rustdoc (and so `mdbook test`) treats a fence without a language as Rust,
/// but skeptic does not: such a block would be tested by one tool only. And an
/// `ignore`d block is tested by neither. Both are errors.
fn check_code_blocks(chapter: &Path, text: &str, errors: &mut Vec<String>) {
    use pulldown_cmark::{CodeBlockKind, Event, Parser, Tag};
    let mut report = String::new();
    for (event, range) in Parser::new(text).into_offset_iter() {
        if let Event::Start(Tag::CodeBlock(CodeBlockKind::Fenced(info))) = event {
            let line = text[..range.start].matches('\n').count() + 1;
            let tokens: Vec<&str> = info
                .split(|c: char| !(c == '_' || c == '-' || c.is_alphanumeric()))
                .filter(|t| !t.is_empty())
                .collect();
            if tokens.is_empty() {
                let _ = writeln!(
                    report,
                    "{}: expanded line {line}: a code block needs a language (`text`, `console`, `rust`, ...)",
                    chapter.display()
                );
            } else if tokens[0] == "rust" && tokens.contains(&"ignore") {
                let _ = writeln!(
                    report,
                    "{}: expanded line {line}: `ignore` hides a Rust block from every test",
                    chapter.display()
                );
            }
        }
    }
    errors.extend(report.lines().map(str::to_owned));
}

fn write_if_changed(path: &Path, contents: &str) -> std::io::Result<()> {
    if fs::read_to_string(path).is_ok_and(|old| old == contents) {
        return Ok(());
    }
    fs::write(path, contents)
}
