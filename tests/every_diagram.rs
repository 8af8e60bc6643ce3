//! Every Mermaid diagram outside Part III names only what its code defines
//! or calls. (Part III's diagrams have a stricter check of their own,
//! `tests/diagrams_match_code.rs`.)
//!
//! A diagram says which code it draws with one or more comment lines
//!
//! ```text
//! %% code: examples/linear_memory.rs
//! ```
//!
//! and every name in it that is written as code must be an identifier of
//! that source, read with `syn` (its items, the paths it calls, the fields
//! it reads, and the words of its string literals, such as `VmData` in a
//! `/proc` parser). A name written as code is one with `::` or `_` in it
//! (`os::commit`, `grow_traced`, `PROT_NONE`), a CamelCase word
//! (`LinearMemory`, `OverMaximum`), or a word followed by `(`
//! (`grow(delta_pages)`). Other words are prose. Rename a function and
//! forget its diagram, and this fails naming the chapter's line.
//!
//! A flowchart whose chain of nodes draws the steps of `cargo xtask test`
//! (the book's own "How this book is tested") is also held to their order:
//! the chain must list the functions of `xtask/src/steps.rs`'s `STEPS`, in
//! the order the xtask runs them.
//!
//! The diagrams are found by `tests/support/mermaid.rs`, which
//! `tests/diagrams_match_code.rs` shares.

use std::collections::BTreeSet;
use std::path::Path;

use quote::ToTokens;

#[path = "support/mermaid.rs"]
mod mermaid;

/// Chapters with their own, stricter diagram test.
const CHECKED_ELSEWHERE: &str = "part3-";

/// Mermaid's own words, which are never code names.
const MERMAID_WORDS: [&str; 6] = [
    "stateDiagram",
    "sequenceDiagram",
    "classDiagram",
    "flowchart",
    "accTitle",
    "accDescr",
];

/// One Mermaid block: the chapter, the line of its first diagram line, and
/// its lines.
struct Diagram {
    chapter: String,
    first_line: usize,
    lines: Vec<String>,
}

/// The Mermaid blocks of a chapter, with their line numbers.
fn diagrams(chapter: &str, markdown: &str) -> Vec<Diagram> {
    let diagram = |block: mermaid::Block| Diagram {
        chapter: chapter.to_owned(),
        first_line: block.first_line,
        lines: block.lines.into_iter().map(|(_, line)| line).collect(),
    };
    mermaid::blocks(markdown).into_iter().map(diagram).collect()
}

/// The files a diagram's `%% code:` lines name.
fn code_files(diagram: &Diagram) -> Vec<String> {
    diagram
        .lines
        .iter()
        .filter_map(|l| l.trim().strip_prefix("%% code:"))
        .flat_map(|list| list.split(','))
        .map(|f| f.trim().to_owned())
        .filter(|f| !f.is_empty())
        .collect()
}

/// Every identifier of a Rust source, and every word of its string
/// literals (doc comments left out: prose is not code).
fn identifiers(source: &str) -> BTreeSet<String> {
    let file = syn::parse_file(source).expect("the source parses as Rust");
    let mut names = BTreeSet::new();
    collect(file.into_token_stream(), &mut names);
    names
}

fn collect(tokens: proc_macro2::TokenStream, names: &mut BTreeSet<String>) {
    for tree in tokens {
        match tree {
            proc_macro2::TokenTree::Group(g) => {
                // `#[doc = "..."]` is a doc comment: prose, not code.
                let is_doc = g.stream().into_iter().next().is_some_and(
                    |t| matches!(t, proc_macro2::TokenTree::Ident(ref i) if i == "doc"),
                );
                if !is_doc {
                    collect(g.stream(), names);
                }
            }
            proc_macro2::TokenTree::Ident(i) => {
                names.insert(i.to_string());
            }
            proc_macro2::TokenTree::Literal(l) => {
                let text = l.to_string();
                for word in text.split(|c: char| !(c.is_alphanumeric() || c == '_')) {
                    if !word.is_empty() {
                        names.insert(word.to_owned());
                    }
                }
            }
            proc_macro2::TokenTree::Punct(_) => {}
        }
    }
}

/// The names of a diagram's line that are written as code.
fn code_names(line: &str) -> Vec<String> {
    let decoded = line.replace("#58;", ":").replace("#59;", ";");
    let chars: Vec<char> = decoded.chars().collect();
    let mut names = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let starts = (c.is_ascii_alphabetic() || c == '_')
            && (i == 0 || !(chars[i - 1].is_ascii_alphanumeric() || chars[i - 1] == '_'));
        if !starts {
            i += 1;
            continue;
        }
        let mut end = i;
        while end < chars.len() {
            if chars[end].is_ascii_alphanumeric() || chars[end] == '_' {
                end += 1;
            } else if chars[end] == ':'
                && chars.get(end + 1) == Some(&':')
                && chars.get(end + 2).is_some_and(|c| c.is_ascii_alphabetic())
            {
                end += 2;
            } else {
                break;
            }
        }
        let word: String = chars[i..end].iter().collect();
        let called = chars.get(end) == Some(&'(');
        // `tests/book_expansion.rs` names a file, not code.
        let in_path = (i > 0 && chars[i - 1] == '/')
            || (chars.get(end) == Some(&'.')
                && chars.get(end + 1).is_some_and(|c| c.is_ascii_alphabetic()));
        if !in_path && is_code_like(&word, called) {
            names.push(word);
        }
        i = end.max(i + 1);
    }
    names
}

fn is_code_like(word: &str, called: bool) -> bool {
    if MERMAID_WORDS.contains(&word) {
        return false;
    }
    let camel = {
        let mut humps = 0;
        let mut prev_upper = false;
        let chars: Vec<char> = word.chars().collect();
        for (k, c) in chars.iter().enumerate() {
            let next_lower = chars.get(k + 1).is_some_and(|n| n.is_ascii_lowercase());
            if c.is_ascii_uppercase() && next_lower && (k == 0 || !prev_upper) {
                humps += 1;
            }
            prev_upper = c.is_ascii_uppercase();
        }
        humps >= 2 && word.chars().next().is_some_and(|c| c.is_ascii_uppercase())
    };
    word.contains("::") || word.contains('_') || camel || called
}

/// What is wrong with one diagram, given how to read a source file.
fn problems(diagram: &Diagram, read: &dyn Fn(&str) -> Option<String>) -> Vec<String> {
    let at = |offset: usize| format!("{}:{}", diagram.chapter, diagram.first_line + offset);
    let files = code_files(diagram);
    if files.is_empty() {
        return vec![format!(
            "{}: a Mermaid diagram with no `%% code: examples/NAME.rs` line: say which code it draws",
            at(0)
        )];
    }
    let mut known = BTreeSet::new();
    let mut out = Vec::new();
    for file in &files {
        match read(file) {
            Some(source) => known.extend(identifiers(&source)),
            None => out.push(format!("{}: `%% code: {file}` names no file", at(0))),
        }
    }
    for (offset, line) in diagram.lines.iter().enumerate() {
        let trimmed = line.trim();
        // The diagram's type, comments and its accessible title and
        // description are not drawn names.
        let prose = ["%%", "accTitle", "accDescr"];
        if offset == 0 || prose.iter().any(|p| trimmed.starts_with(p)) {
            continue;
        }
        for name in code_names(trimmed) {
            let missing: Vec<&str> = name.split("::").filter(|p| !known.contains(*p)).collect();
            if !missing.is_empty() {
                out.push(format!(
                    "{}: `{name}` is not in {}: rename it in the diagram or the code",
                    at(offset),
                    files.join(", ")
                ));
            }
        }
    }
    out
}

/// The step functions of `STEPS` in `xtask/src/steps.rs`, in order.
fn step_functions(steps_rs: &str) -> Vec<String> {
    let file = syn::parse_file(steps_rs).expect("xtask/src/steps.rs parses");
    for item in file.items {
        let syn::Item::Const(c) = item else { continue };
        if c.ident != "STEPS" {
            continue;
        }
        let syn::Expr::Array(array) = *c.expr else {
            panic!("STEPS is an array")
        };
        return array
            .elems
            .iter()
            .filter_map(|e| match e {
                syn::Expr::Tuple(t) => t.elems.last().map(|f| {
                    let path = f.to_token_stream().to_string();
                    path.rsplit("::").next().unwrap_or(&path).trim().to_owned()
                }),
                _ => None,
            })
            .collect();
    }
    panic!("xtask/src/steps.rs has no const STEPS");
}

/// The chain of nodes a flowchart draws from `start`, following its
/// `a --> b` edges (a chain may wrap over several lines).
fn chain_from(diagram: &Diagram, start: &str) -> Vec<String> {
    let mut edges = Vec::new();
    for line in &diagram.lines {
        let nodes: Vec<String> = line
            .split("-->")
            .map(|n| {
                n.trim()
                    .split(['[', '(', '{'])
                    .next()
                    .unwrap_or("")
                    .to_owned()
            })
            .collect();
        edges.extend(nodes.windows(2).map(|w| (w[0].clone(), w[1].clone())));
    }
    let mut chain = vec![start.to_owned()];
    while let Some((_, next)) = edges.iter().find(|(from, _)| Some(from) == chain.last()) {
        if chain.contains(next) {
            break;
        }
        chain.push(next.clone());
    }
    chain
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn book_diagrams() -> Vec<Diagram> {
    let mut all = Vec::new();
    let mut chapters: Vec<_> = std::fs::read_dir(root().join("src"))
        .expect("src/ lists")
        .map(|e| e.expect("an entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    chapters.sort();
    for path in chapters {
        let name = format!("src/{}", path.file_name().unwrap().to_string_lossy());
        if name.contains(CHECKED_ELSEWHERE) {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("a chapter reads");
        all.extend(diagrams(&name, &text));
    }
    all
}

fn read_from_root(file: &str) -> Option<String> {
    std::fs::read_to_string(root().join(file)).ok()
}

#[test]
fn every_diagram_names_only_what_its_code_has() {
    let all = book_diagrams();
    assert!(
        !all.is_empty(),
        "the book has Mermaid diagrams outside Part III"
    );
    let found: Vec<String> = all
        .iter()
        .flat_map(|d| problems(d, &read_from_root))
        .collect();
    assert!(found.is_empty(), "\n{}", found.join("\n"));
    println!("every_diagram: {} diagrams checked", all.len());
}

#[test]
fn the_test_chain_lists_the_xtask_steps_in_their_order() {
    let steps = step_functions(&read_from_root("xtask/src/steps.rs").expect("steps.rs"));
    let drawn: Vec<Diagram> = book_diagrams()
        .into_iter()
        .filter(|d| code_files(d).iter().any(|f| f == "xtask/src/steps.rs"))
        .collect();
    assert!(!drawn.is_empty(), "no diagram draws xtask/src/steps.rs");
    for d in drawn {
        assert_eq!(
            chain_from(&d, &steps[0]),
            steps,
            "{}:{}: the chain of steps differs from STEPS in xtask/src/steps.rs",
            d.chapter,
            d.first_line
        );
    }
}

/// The check itself, on diagrams made to fail.
mod self_test {
    use super::*;

    fn diagram(lines: &[&str]) -> Diagram {
        Diagram {
            chapter: "src/x.md".to_owned(),
            first_line: 10,
            lines: lines.iter().map(|l| (*l).to_owned()).collect(),
        }
    }

    const CODE: &str = "mod os { pub fn commit() {} }\n\
        pub enum GrowPath { Committed }\n\
        pub struct LinearMemory;\n\
        /// grow_stale is only in a doc comment\n\
        fn grow_traced() { let _ = \"/proc/self/status VmData\"; os::commit(); }";

    fn check(lines: &[&str]) -> Vec<String> {
        problems(&diagram(lines), &|f: &str| {
            (f == "examples/x.rs").then(|| CODE.to_owned())
        })
    }

    #[test]
    fn names_in_the_code_pass() {
        let p = check(&[
            "flowchart TD",
            "%% code: examples/x.rs",
            "accTitle: How grow_stale was",
            "grow_traced --> c[\"Committed: os#58;#58;commit\"]",
            "c --> d[\"LinearMemory reads VmData, then the prose words\"]",
        ]);
        assert!(p.is_empty(), "{p:?}");
    }

    #[test]
    fn a_renamed_function_fails_with_its_line() {
        let p = check(&[
            "flowchart TD",
            "%% code: examples/x.rs",
            "grow_stale --> os::uncommit",
        ]);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].starts_with("src/x.md:12: `grow_stale`"), "{p:?}");
        assert!(p[1].contains("`os::uncommit`"), "{p:?}");
    }

    #[test]
    fn a_doc_comment_is_not_code_and_a_call_is_checked() {
        let p = check(&[
            "flowchart TD",
            "%% code: examples/x.rs",
            "a[\"grow_stale\"] --> b[\"touch(page)\"]",
        ]);
        assert_eq!(p.len(), 2, "{p:?}");
    }

    #[test]
    fn a_diagram_without_its_code_or_with_a_missing_file_fails() {
        assert!(check(&["flowchart TD", "a --> b"])[0].contains("no `%% code:"));
        let p = check(&["flowchart TD", "%% code: examples/gone.rs", "a --> b"]);
        assert!(p[0].contains("names no file"), "{p:?}");
    }

    #[test]
    fn the_chain_is_read_in_order() {
        let d = diagram(&[
            "flowchart LR",
            "a[\"x\"] --> cargo_test",
            "cargo_test --> clippy",
            "clippy --> mdbook_build --> cargo_test",
        ]);
        assert_eq!(
            chain_from(&d, "cargo_test"),
            ["cargo_test", "clippy", "mdbook_build"]
        );
        let steps = step_functions(
            "const STEPS: [(&str, Step); 2] = [(\"a\", cargo_test), (\"b\", mdbook_test::mdbook_test)];",
        );
        assert_eq!(steps, ["cargo_test", "mdbook_test"]);
    }

    #[test]
    fn diagrams_are_found_with_their_lines() {
        let md = "# T\n\ntext\n\n```mermaid\nflowchart TD\n    a --> b\n```\n\n```rust\nfn x() {}\n```\n";
        let d = diagrams("src/t.md", md);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].first_line, 6);
        assert_eq!(d[0].lines[0], "flowchart TD");
    }
}
