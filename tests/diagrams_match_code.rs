//! The Part III chapters draw `examples/memory_manager.rs` and
//! `examples/budgeted_memory.rs` in Mermaid. This test holds every diagram to
//! that code: each class, participant, state and message must name a type,
//! enum variant or function defined in one of them. Rename
//! a function and forget a diagram, and this fails with the diagram's file
//! and line.
//!
//! The check reads the examples' sources with `syn`, the parser procedural
//! macros use, and collects from its syntax tree the names of types
//! (`struct`, `enum`, `trait`, `type`), enum variants, functions, and which
//! functions each type's `impl` blocks or trait body define. Comments and
//! strings are not in the tree, and `#[cfg(test)]` items are skipped.
//!
//! It understands a small part of Mermaid and rejects the rest, so that a
//! diagram can never pass because the check skipped a line:
//!
//! - `classDiagram`: `class Name`, `class Name {` ... `}` with methods
//!   `+name(params) ReturnType` and `<<annotation>>` lines, relations
//!   `A "card" ARROW "card" B : label` (cardinalities optional), `note`,
//!   `direction`. Class names must be types; the names in a return type
//!   must be types, Rust primitives or a few std wrappers (`Vec~Holding~`);
//!   methods must be functions of that class. Parameters,
//!   cardinalities, labels and notes are free text. Attributes are rejected:
//!   draw a field as a relation instead.
//! - `sequenceDiagram`: `participant Name`, `actor Name`, messages
//!   `A->>B: name(args)` (every Mermaid arrow, with `+`/`-` activation),
//!   `activate`, `deactivate`, `Note ...: text`, `autonumber`, and the
//!   blocks `loop`, `alt`/`else`, `opt`, `par`/`and`, `critical`/`option`,
//!   `break`, `rect` closed by `end`. Participants must be types. A call
//!   (solid arrow) must start with a function of the receiving type; a reply
//!   (dashed arrow) must start with a type, a Rust primitive or a function.
//!   Aliases
//!   (`participant A as Label`) are rejected: the label would hide the name.
//! - `stateDiagram-v2`: transitions `A --> B` and `A --> B : label`, `[*]`,
//!   single-line `note left of`/`note right of`, `direction`. States must be
//!   enum variants, and a label must start with a function.
//!
//! The sequence diagrams are also held to the order the code runs in. Each
//! example's `--trace` records every call between its types while its
//! scenario runs (`From->>To: function`). Each call a diagram draws (solid
//! arrow) must be in one of those traces, and each call drawn directly after
//! another (the next line of the same block, or the first line of a block
//! that follows) must run directly after it at least once in one trace,
//! counting only calls the diagram draws. A diagram that swaps two calls
//! fails.
//!
//! `%%` comments, blank lines and the one-line accessibility lines
//! `accTitle: text` and `accDescr: text` (free text) are allowed everywhere.
//! Any other line is an error that names it.
//!
//! The diagrams are found by `tests/support/mermaid.rs`, as mdBook finds
//! them: fenced ```` ```mermaid ```` blocks, read with pulldown-cmark.

#[path = "../examples/memory_manager.rs"]
#[allow(dead_code)]
mod memory_manager;

#[path = "../examples/budgeted_memory.rs"]
#[allow(dead_code)]
mod budgeted_memory;

#[path = "support/mermaid.rs"]
mod mermaid;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use syn::visit::{self, Visit};

/// The sources the diagrams describe, and how the errors name them.
const EXAMPLES: [&str; 2] = ["examples/memory_manager.rs", "examples/budgeted_memory.rs"];
const EXAMPLE: &str = "examples/{memory_manager,budgeted_memory}.rs";
const CHAPTERS: [&str; 4] = [
    "src/part3-architecture.md",
    "src/part3-flows.md",
    "src/part3-dynamic-sizing.md",
    "src/part3-documenting.md",
];

/// Std types a return type may wrap others in (`Vec~Holding~`).
const STD_TYPES: [&str; 6] = ["Vec", "Option", "Arc", "Weak", "String", "Box"];

/// Types a diagram may name without the example defining them.
const PRIMITIVES: [&str; 16] = [
    "u8", "u16", "u32", "u64", "u128", "usize", "i8", "i16", "i32", "i64", "i128", "isize", "bool",
    "str", "f32", "f64",
];

// ---------------------------------------------------------------------------
// The names the example defines.
// ---------------------------------------------------------------------------

#[derive(Debug, Default)]
struct Symbols {
    types: BTreeSet<String>,
    variants: BTreeSet<String>,
    fns: BTreeSet<String>,
    /// A type or trait, and the functions its `impl` blocks or body define.
    methods: BTreeMap<String, BTreeSet<String>>,
}

impl Symbols {
    fn is_method(&self, ty: &str, name: &str) -> bool {
        self.methods.get(ty).is_some_and(|m| m.contains(name))
    }
}

/// Collects the names, walking the syntax tree that `syn` parses.
#[derive(Default)]
struct Collect {
    s: Symbols,
}

/// `#[cfg(test)]`: test code is not what the diagrams describe.
fn is_test_only(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| match &a.meta {
        syn::Meta::List(l) => l.path.is_ident("cfg") && l.tokens.to_string() == "test",
        _ => false,
    })
}

impl Collect {
    fn method(&mut self, ty: &str, name: &syn::Ident) {
        self.s.fns.insert(name.to_string());
        self.s
            .methods
            .entry(ty.to_owned())
            .or_default()
            .insert(name.to_string());
    }
}

impl<'ast> Visit<'ast> for Collect {
    fn visit_item_mod(&mut self, i: &'ast syn::ItemMod) {
        if !is_test_only(&i.attrs) {
            visit::visit_item_mod(self, i);
        }
    }

    fn visit_item_fn(&mut self, i: &'ast syn::ItemFn) {
        if !is_test_only(&i.attrs) {
            self.s.fns.insert(i.sig.ident.to_string());
            visit::visit_item_fn(self, i);
        }
    }

    fn visit_item_struct(&mut self, i: &'ast syn::ItemStruct) {
        self.s.types.insert(i.ident.to_string());
    }

    fn visit_item_type(&mut self, i: &'ast syn::ItemType) {
        self.s.types.insert(i.ident.to_string());
    }

    fn visit_item_enum(&mut self, i: &'ast syn::ItemEnum) {
        self.s.types.insert(i.ident.to_string());
        for v in &i.variants {
            self.s.variants.insert(v.ident.to_string());
        }
    }

    fn visit_item_trait(&mut self, i: &'ast syn::ItemTrait) {
        let name = i.ident.to_string();
        self.s.types.insert(name.clone());
        for item in &i.items {
            if let syn::TraitItem::Fn(f) = item {
                self.method(&name, &f.sig.ident);
            }
        }
    }

    /// An `impl` block's functions belong to its self type, the last name of
    /// its path (`impl fmt::Display for MemoryError` adds `fmt` to
    /// `MemoryError`).
    fn visit_item_impl(&mut self, i: &'ast syn::ItemImpl) {
        if is_test_only(&i.attrs) {
            return;
        }
        let syn::Type::Path(path) = &*i.self_ty else {
            return;
        };
        let Some(ty) = path.path.segments.last().map(|s| s.ident.to_string()) else {
            return;
        };
        for item in &i.items {
            if let syn::ImplItem::Fn(f) = item {
                self.method(&ty, &f.sig.ident);
            }
        }
        visit::visit_item_impl(self, i);
    }
}

/// The names a source file defines. A file `syn` cannot parse is an error:
/// the diagrams must not pass because their code was not read.
fn symbols(src: &str) -> Symbols {
    let file = syn::parse_file(src).unwrap_or_else(|e| panic!("cannot parse the example: {e}"));
    let mut collect = Collect::default();
    collect.visit_file(&file);
    collect.s
}

// ---------------------------------------------------------------------------
// The diagrams.
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Class,
    Sequence,
    State,
}

struct Checker<'a> {
    file: &'a str,
    symbols: &'a Symbols,
    errors: Vec<String>,
}

impl Checker<'_> {
    fn error(&mut self, line: usize, what: String) {
        self.errors.push(format!("{}:{line}: {what}", self.file));
    }

    /// Checks one diagram and returns its kind, if it has a known one.
    fn diagram(&mut self, block: &mermaid::Block) -> Option<Kind> {
        let mut body = block
            .lines
            .iter()
            .map(|(n, l)| (*n, l.trim()))
            .filter(|(_, l)| !l.is_empty() && !l.starts_with("%%") && !is_accessibility_line(l));
        let Some((n, header)) = body.next() else {
            self.error(block.first_line, "empty mermaid block".into());
            return None;
        };
        let rest: Vec<(usize, &str)> = body.collect();
        match header {
            "classDiagram" => self.class(&rest),
            "sequenceDiagram" => self.sequence(&rest),
            "stateDiagram-v2" | "stateDiagram" => self.state(&rest),
            other => {
                self.error(
                    n,
                    format!(
                        "`{other}` diagrams are not understood by this check \
                         (it reads classDiagram, sequenceDiagram and stateDiagram-v2)"
                    ),
                );
                return None;
            }
        }
        Some(match header {
            "classDiagram" => Kind::Class,
            "sequenceDiagram" => Kind::Sequence,
            _ => Kind::State,
        })
    }

    fn not_understood(&mut self, n: usize, kind: &str, line: &str) {
        self.error(
            n,
            format!("{kind} line not understood by this check: `{line}`"),
        );
    }

    fn need_type(&mut self, n: usize, role: &str, name: &str) {
        if !self.symbols.types.contains(name) {
            self.error(n, format!("{role} `{name}` is not a type in {EXAMPLE}"));
        }
    }

    fn class(&mut self, lines: &[(usize, &str)]) {
        let mut body: Option<&str> = None;
        for &(n, line) in lines {
            if let Some(class) = body {
                if line == "}" {
                    body = None;
                } else if line.starts_with("<<") && line.ends_with(">>") {
                } else if line.contains('(') {
                    self.member(n, class, line);
                } else {
                    self.error(
                        n,
                        format!(
                            "class `{class}`: attribute `{line}` is not understood by this \
                             check; name a method, or draw the field as a relation"
                        ),
                    );
                }
            } else if let Some(rest) = line.strip_prefix("class ") {
                let (name, opens) = match rest.trim().strip_suffix('{') {
                    Some(name) => (name.trim(), true),
                    None => (rest.trim(), false),
                };
                if !is_ident(name) {
                    self.not_understood(n, "classDiagram", line);
                    continue;
                }
                self.need_type(n, "class", name);
                if opens {
                    body = Some(name);
                }
            } else if line.starts_with("direction ") || line.starts_with("note ") {
            } else if let Some((a, b)) = class_relation(line) {
                self.need_type(n, "class", a);
                self.need_type(n, "class", b);
            } else {
                self.not_understood(n, "classDiagram", line);
            }
        }
        if let Some(class) = body {
            let last = lines.last().map_or(0, |l| l.0);
            self.error(last, format!("class `{class}`: body not closed with `}}`"));
        }
    }

    /// `+name(params) Return`: the method must be the class's; the return
    /// type's names must be types.
    fn member(&mut self, n: usize, class: &str, line: &str) {
        let line = line.trim_start_matches(['+', '-', '#', '~']);
        let name = ident_prefix(line);
        if name.is_empty() || !line[name.len()..].starts_with('(') {
            self.error(
                n,
                format!("class `{class}`: member `{line}` is not understood by this check"),
            );
            return;
        }
        if !self.symbols.fns.contains(name) {
            self.error(
                n,
                format!("class `{class}` method `{name}` is not a fn in {EXAMPLE}"),
            );
        } else if !self.symbols.is_method(class, name) {
            self.error(n, format!("class `{class}` method `{name}` is a fn, but not one of `{class}`'s in {EXAMPLE}"));
        }
        let Some(close) = line.rfind(')') else {
            self.error(n, format!("class `{class}`: member `{line}` has no `)`"));
            return;
        };
        let ret = line[close + 1..].trim().trim_end_matches(['$', '*']);
        for word in ret
            .split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .filter(|w| !w.is_empty())
        {
            if !self.symbols.types.contains(word)
                && !PRIMITIVES.contains(&word)
                && !STD_TYPES.contains(&word)
            {
                self.error(n, format!("class `{class}` method `{name}` returns `{word}`, which is not a type in {EXAMPLE}"));
            }
        }
    }

    fn sequence(&mut self, lines: &[(usize, &str)]) {
        let mut blocks: Vec<(&str, usize)> = Vec::new();
        for &(n, line) in lines {
            let first = line.split_whitespace().next().unwrap_or("");
            match first {
                "autonumber" if line == "autonumber" => {}
                "participant" | "actor" => {
                    let name = line[first.len()..].trim();
                    if name.contains(" as ") {
                        self.error(n, format!("participant alias `{name}` is not understood by this check: the label would hide the name it checks"));
                    } else if is_ident(name) {
                        self.need_type(n, "sequence participant", name);
                    } else {
                        self.not_understood(n, "sequenceDiagram", line);
                    }
                }
                "activate" | "deactivate" => {
                    let name = line[first.len()..].trim();
                    self.need_type(n, "sequence participant", name);
                }
                "loop" | "alt" | "opt" | "par" | "critical" | "break" | "rect" => {
                    blocks.push((first, n))
                }
                "else" | "and" | "option" => {
                    let opener = match first {
                        "else" => "alt",
                        "and" => "par",
                        _ => "critical",
                    };
                    if blocks.last().map(|b| b.0) != Some(opener) {
                        self.error(n, format!("`{first}` outside an `{opener}` block"));
                    }
                }
                "end" if line == "end" => {
                    if blocks.pop().is_none() {
                        self.error(n, "`end` closes no block".into());
                    }
                }
                "Note" | "note" => match note_participants(line) {
                    Some(names) => {
                        for name in names {
                            self.need_type(n, "sequence participant", name);
                        }
                    }
                    None => self.not_understood(n, "sequenceDiagram", line),
                },
                _ => match parse_message(line) {
                    Some(m) => self.message(n, &m),
                    None => self.not_understood(n, "sequenceDiagram", line),
                },
            }
        }
        for (kind, n) in blocks {
            self.error(n, format!("`{kind}` block not closed with `end`"));
        }
    }

    fn message(&mut self, n: usize, m: &Message) {
        self.need_type(n, "sequence participant", m.from);
        self.need_type(n, "sequence participant", m.to);
        let name = ident_prefix(m.text);
        let s = self.symbols;
        if name.is_empty() {
            self.error(
                n,
                format!("sequence message `{}` does not start with a name", m.text),
            );
        } else if m.reply {
            if !s.types.contains(name) && !s.fns.contains(name) && !PRIMITIVES.contains(&name) {
                self.error(
                    n,
                    format!("sequence reply `{name}` is not a type or fn in {EXAMPLE}"),
                );
            }
        } else if !s.fns.contains(name) {
            self.error(
                n,
                format!("sequence message `{name}` is not a fn in {EXAMPLE}"),
            );
        } else if s.types.contains(m.to) && !s.is_method(m.to, name) {
            self.error(
                n,
                format!(
                    "sequence message `{name}` is a fn, but not one of `{}`'s in {EXAMPLE}",
                    m.to
                ),
            );
        }
    }

    fn state(&mut self, lines: &[(usize, &str)]) {
        for &(n, line) in lines {
            if line.starts_with("direction ") {
                continue;
            }
            if let Some(rest) = line
                .strip_prefix("note left of ")
                .or_else(|| line.strip_prefix("note right of "))
            {
                match rest.split_once(':') {
                    Some((state, _)) => self.need_state(n, state.trim()),
                    None => self.not_understood(n, "stateDiagram", line),
                }
                continue;
            }
            let Some((from, rest)) = line.split_once("-->") else {
                self.not_understood(n, "stateDiagram", line);
                continue;
            };
            let (to, label) = match rest.split_once(':') {
                Some((to, label)) => (to, Some(label.trim())),
                None => (rest, None),
            };
            let (from, to) = (from.trim(), to.trim());
            let simple = |s: &str| s == "[*]" || is_ident(s);
            if !simple(from) || !simple(to) {
                self.not_understood(n, "stateDiagram", line);
                continue;
            }
            for state in [from, to] {
                if state != "[*]" {
                    self.need_state(n, state);
                }
            }
            if let Some(label) = label {
                let name = ident_prefix(label);
                if name.is_empty() {
                    self.error(
                        n,
                        format!("state transition `{label}` does not start with a name"),
                    );
                } else if !self.symbols.fns.contains(name) {
                    self.error(
                        n,
                        format!("state transition `{name}` is not a fn in {EXAMPLE}"),
                    );
                }
            }
        }
    }

    fn need_state(&mut self, n: usize, state: &str) {
        if !self.symbols.variants.contains(state) {
            self.error(
                n,
                format!("state `{state}` is not an enum variant in {EXAMPLE}"),
            );
        }
    }
}

struct Message<'l> {
    from: &'l str,
    to: &'l str,
    reply: bool,
    text: &'l str,
}

/// Mermaid's sequence arrows, longest first so that a prefix never wins.
const ARROWS: [&str; 10] = [
    "<<-->>", "<<->>", "-->>", "->>", "--x", "--)", "-->", "-x", "-)", "->",
];

fn parse_message(line: &str) -> Option<Message<'_>> {
    let from = ident_prefix(line);
    let rest = line[from.len()..].trim_start();
    let arrow = ARROWS.iter().find(|a| rest.starts_with(*a))?;
    let rest = rest[arrow.len()..].trim_start();
    let rest = rest.strip_prefix(['+', '-']).unwrap_or(rest);
    let to = ident_prefix(rest);
    let text = rest[to.len()..].trim_start().strip_prefix(':')?.trim();
    if from.is_empty() || to.is_empty() {
        return None;
    }
    Some(Message {
        from,
        to,
        reply: arrow.starts_with("--") || arrow.starts_with("<<--"),
        text,
    })
}

/// `Note over A,B: text` and `Note left of A: text`: the participants.
fn note_participants(line: &str) -> Option<Vec<&str>> {
    let (head, _) = line.split_once(':')?;
    let rest = head.split_once(' ')?.1.trim();
    let names = ["over ", "left of ", "right of "]
        .iter()
        .find_map(|p| rest.strip_prefix(p))?;
    let names: Vec<&str> = names.split(',').map(str::trim).collect();
    names.iter().all(|n| is_ident(n)).then_some(names)
}

/// Mermaid's class relations.
const RELATIONS: [&str; 14] = [
    "<|--", "--|>", "*--", "--*", "o--", "--o", "-->", "<--", "..>", "<..", "..|>", "<|..", "--",
    "..",
];

/// `A "1" *-- "many" B : label`: the two classes.
fn class_relation(line: &str) -> Option<(&str, &str)> {
    let head = line.split_once(" : ").map_or(line, |(h, _)| h);
    let words: Vec<&str> = head
        .split_whitespace()
        .filter(|w| !(w.len() >= 2 && w.starts_with('"') && w.ends_with('"')))
        .collect();
    match words[..] {
        [a, arrow, b] if is_ident(a) && is_ident(b) && RELATIONS.contains(&arrow) => Some((a, b)),
        _ => None,
    }
}

fn ident_prefix(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

fn is_ident(s: &str) -> bool {
    !s.is_empty()
        && ident_prefix(s) == s
        && s.chars()
            .next()
            .is_some_and(|c| c.is_alphabetic() || c == '_')
}

/// Every error in a chapter's diagrams, and the kinds of diagram it has.
/// `accTitle: ...` or `accDescr: ...`: the diagram's accessible name and
/// description, prose that names nothing for this check.
fn is_accessibility_line(line: &str) -> bool {
    ["accTitle", "accDescr"].iter().any(|key| {
        line.strip_prefix(key)
            .is_some_and(|rest| rest.trim_start().starts_with(':'))
    })
}

fn check_markdown(file: &str, markdown: &str, symbols: &Symbols) -> (Vec<String>, Vec<Kind>) {
    let mut checker = Checker {
        file,
        symbols,
        errors: Vec::new(),
    };
    let kinds = mermaid::blocks(markdown)
        .iter()
        .filter_map(|block| checker.diagram(block))
        .collect();
    (checker.errors, kinds)
}

// ---------------------------------------------------------------------------
// The order of the calls.
// ---------------------------------------------------------------------------

/// A sequence diagram's calls (solid arrows) and the blocks around them.
#[derive(Debug)]
enum Step {
    /// `From->>To: function`, as the trace writes it, and its line.
    Call(String, usize),
    /// `loop`, `alt`/`else`, `opt` and the other blocks: their branches.
    Block(Vec<Vec<Step>>),
}

/// The steps of a sequence diagram (already checked by `Checker`, so lines
/// it does not know are skipped here).
fn sequence_steps(lines: &[(usize, &str)]) -> Vec<Step> {
    // Each open block: its branches so far; the bottom is the diagram.
    let mut open: Vec<Vec<Vec<Step>>> = vec![vec![Vec::new()]];
    for &(n, line) in lines {
        let line = line.trim();
        let first = line.split_whitespace().next().unwrap_or("");
        match first {
            "loop" | "alt" | "opt" | "par" | "critical" | "break" | "rect" => {
                open.push(vec![Vec::new()]);
            }
            "else" | "and" | "option" => {
                if let Some(block) = open.last_mut() {
                    block.push(Vec::new());
                }
            }
            "end" if line == "end" && open.len() > 1 => {
                let block = open.pop().unwrap_or_default();
                if let Some(branch) = open.last_mut().and_then(|b| b.last_mut()) {
                    branch.push(Step::Block(block));
                }
            }
            _ => {
                if let Some(m) = parse_message(line).filter(|m| !m.reply) {
                    let call = format!("{}->>{}: {}", m.from, m.to, ident_prefix(m.text));
                    if let Some(branch) = open.last_mut().and_then(|b| b.last_mut()) {
                        branch.push(Step::Call(call, n));
                    }
                }
            }
        }
    }
    open.swap_remove(0).swap_remove(0)
}

/// The calls a step can start with: itself, or each branch's first.
fn first_calls(step: &Step, out: &mut Vec<(String, usize)>) {
    match step {
        Step::Call(call, n) => out.push((call.clone(), *n)),
        Step::Block(branches) => {
            for first in branches.iter().filter_map(|b| b.first()) {
                first_calls(first, out);
            }
        }
    }
}

/// Every call drawn, and every pair (call, call drawn directly after it).
fn drawn_order(
    steps: &[Step],
    calls: &mut Vec<(String, usize)>,
    pairs: &mut Vec<[(String, usize); 2]>,
) {
    for (i, step) in steps.iter().enumerate() {
        match step {
            Step::Call(call, n) => {
                calls.push((call.clone(), *n));
                let mut next = Vec::new();
                if let Some(following) = steps.get(i + 1) {
                    first_calls(following, &mut next);
                }
                pairs.extend(next.into_iter().map(|b| [(call.clone(), *n), b]));
            }
            Step::Block(branches) => {
                for branch in branches {
                    drawn_order(branch, calls, pairs);
                }
            }
        }
    }
}

/// What is wrong with a chapter's sequence diagrams, held to `traces`.
fn check_order(file: &str, markdown: &str, traces: &[Vec<String>]) -> Vec<String> {
    let mut errors = Vec::new();
    for block in mermaid::blocks(markdown) {
        let mut body = block
            .lines
            .iter()
            .map(|(n, l)| (*n, l.trim()))
            .filter(|(_, l)| !l.is_empty());
        if body.next().map(|(_, l)| l) != Some("sequenceDiagram") {
            continue;
        }
        let lines: Vec<(usize, &str)> = body.collect();
        let (mut calls, mut pairs) = (Vec::new(), Vec::new());
        drawn_order(&sequence_steps(&lines), &mut calls, &mut pairs);
        let drawn: BTreeSet<&str> = calls.iter().map(|(c, _)| c.as_str()).collect();
        // Each trace, counting only the calls this diagram draws.
        let seen: Vec<Vec<&str>> = traces
            .iter()
            .map(|trace| {
                let calls = trace.iter().map(String::as_str);
                calls.filter(|c| drawn.contains(c)).collect()
            })
            .collect();
        let ever = |call: &str| seen.iter().any(|s| s.contains(&call));
        for (call, n) in &calls {
            if !ever(call) {
                errors.push(format!(
                    "{file}:{n}: `{call}` is drawn, but the scenario never makes that call"
                ));
            }
        }
        for [(a, _), (b, n)] in &pairs {
            let after = |s: &Vec<&str>| s.windows(2).any(|w| w[0] == a && w[1] == b);
            if ever(a) && !seen.iter().any(after) {
                errors.push(format!("{file}:{n}: `{b}` is drawn right after `{a}`, but the scenario never runs it right after"));
            }
        }
    }
    errors
}

/// The calls each example's scenario makes, as `--trace` prints them.
fn traces() -> Vec<Vec<String>> {
    let config = memory_manager::Config::default();
    let spills = memory_manager::traced(|| memory_manager::run_scenario(config));
    let grows = budgeted_memory::traced(|| {
        budgeted_memory::run_scenario(budgeted_memory::Config::default())
    });
    vec![spills.expect("it runs"), grows.expect("it runs")]
}

#[test]
fn part3_sequence_diagrams_draw_the_calls_in_the_order_they_run() {
    let traces = traces();
    let mut errors = Vec::new();
    for chapter in CHAPTERS {
        errors.extend(check_order(chapter, &read(chapter), &traces));
    }
    let shown: Vec<String> = traces.iter().map(|t| t.join("\n")).collect();
    assert!(
        errors.is_empty(),
        "\n{}\n\nthe traces:\n{}",
        errors.join("\n"),
        shown.join("\n\n")
    );
}

#[test]
fn a_diagram_with_two_calls_swapped_fails() {
    let trace = traces();
    // The spill diagram of "The flows", with its first two calls swapped.
    let flows = read("src/part3-flows.md");
    let (victim, begin) = (
        "MemoryManager->>Ledger: next_victim(requester, asked)",
        "MemoryManager->>MemoryManager: spill_one(victim, it, short)",
    );
    assert!(flows.contains(victim) && flows.contains(begin));
    let swapped = flows
        .replace(victim, "SWAP")
        .replace(begin, victim)
        .replace("SWAP", begin);
    // Held to the spilling scenario's trace only: in the grow scenario's,
    // `next_victim` does follow `spill_one`, as the next pass asks again.
    // That trace has no `BudgetedMemory`, so the grow diagram fails against
    // it whether swapped or not; only what the swap adds is counted.
    let unswapped = check_order("flows.md", &flows, &trace[..1]);
    let errors: Vec<String> = check_order("flows.md", &swapped, &trace[..1])
        .into_iter()
        .filter(|e| !unswapped.contains(e))
        .collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors[0].ends_with("`MemoryManager->>Ledger: next_victim` is drawn right after `MemoryManager->>MemoryManager: spill_one`, but the scenario never runs it right after"), "{errors:?}");
    assert!(errors[1].contains("`MemoryManager->>SpillableBuffer: spill` is drawn right after `MemoryManager->>Ledger: next_victim`"), "{errors:?}");
    let never =
        "```mermaid\nsequenceDiagram\n    Ledger->>MemoryManager: acquire(id, bytes)\n```\n";
    assert_eq!(
        check_order("n.md", never, &trace),
        ["n.md:3: `Ledger->>MemoryManager: acquire` is drawn, but the scenario never makes that call"]
    );
}

fn read(rel: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The names both examples define, together.
fn example_symbols() -> Symbols {
    let mut collect = Collect::default();
    for example in EXAMPLES {
        let file = syn::parse_file(&read(example));
        collect.visit_file(&file.unwrap_or_else(|e| panic!("cannot parse {example}: {e}")));
    }
    collect.s
}

#[test]
fn part3_diagrams_name_only_what_the_memory_manager_defines() {
    let symbols = example_symbols();
    let mut errors = Vec::new();
    let mut kinds = Vec::new();
    for chapter in CHAPTERS {
        let (e, k) = check_markdown(chapter, &read(chapter), &symbols);
        errors.extend(e);
        kinds.extend(k);
    }
    assert!(errors.is_empty(), "\n{}", errors.join("\n"));
    let count = |k: Kind| kinds.iter().filter(|&&x| x == k).count();
    assert!(
        kinds.len() >= 3 && count(Kind::Class) >= 1 && count(Kind::Sequence) >= 2,
        "Part III needs a class diagram and two sequence diagrams; found {kinds:?}"
    );
    println!("{} diagrams checked: {kinds:?}", kinds.len());
}

#[test]
fn a_wrong_name_fails_with_the_diagrams_file_and_line() {
    let chapter = "# The flows\n\
                   \n\
                   Some prose.\n\
                   \n\
                   ```mermaid\n\
                   sequenceDiagram\n    \
                   participant Reservation\n    \
                   participant MemoryManager\n    \
                   Reservation->>MemoryManager: acquire_memory(id, bytes)\n\
                   ```\n";
    let (errors, kinds) = check_markdown("src/part3-flows.md", chapter, &example_symbols());
    assert_eq!(
        errors,
        ["src/part3-flows.md:9: sequence message `acquire_memory` is not a fn in examples/{memory_manager,budgeted_memory}.rs"]
    );
    assert_eq!(kinds, [Kind::Sequence]);
    // Shown in "How to document memory adjustments".
    println!("the check reports:\n{}", errors.join("\n"));
}

#[test]
fn a_fn_of_another_type_is_not_a_message_to_this_one() {
    let chapter = "```mermaid\nsequenceDiagram\n    MemoryManager->>Reservation: try_reserve(id, bytes)\n```\n";
    let (errors, _) = check_markdown("x.md", chapter, &example_symbols());
    assert_eq!(
        errors,
        ["x.md:3: sequence message `try_reserve` is a fn, but not one of `Reservation`'s in examples/{memory_manager,budgeted_memory}.rs"]
    );
}

#[test]
fn wrong_classes_methods_states_and_transitions_are_named_with_their_lines() {
    let chapter = "```mermaid\n\
                   classDiagram\n    \
                   class MemoryManagr\n    \
                   class Reservation {\n        \
                   +acquire(bytes) Grant\n        \
                   +acquire_more(bytes) Grant\n        \
                   +release(bytes) Bytes\n    \
                   }\n    \
                   Reservation --> Ledgr : owns\n\
                   ```\n\
                   \n\
                   ```mermaid\n\
                   stateDiagram-v2\n    \
                   [*] --> TooLarge : register\n    \
                   TooLarge --> Spilled : try_reserve\n    \
                   TooLarge --> OverBudget : reserve\n\
                   ```\n";
    let (errors, kinds) = check_markdown("c.md", chapter, &example_symbols());
    assert_eq!(
        errors,
        [
            "c.md:3: class `MemoryManagr` is not a type in examples/{memory_manager,budgeted_memory}.rs",
            "c.md:6: class `Reservation` method `acquire_more` is not a fn in examples/{memory_manager,budgeted_memory}.rs",
            "c.md:7: class `Reservation` method `release` returns `Bytes`, which is not a type in examples/{memory_manager,budgeted_memory}.rs",
            "c.md:9: class `Ledgr` is not a type in examples/{memory_manager,budgeted_memory}.rs",
            "c.md:15: state `Spilled` is not an enum variant in examples/{memory_manager,budgeted_memory}.rs",
            "c.md:16: state transition `reserve` is not a fn in examples/{memory_manager,budgeted_memory}.rs",
        ]
    );
    assert_eq!(kinds, [Kind::Class, Kind::State]);
}

#[test]
fn syntax_the_check_does_not_understand_is_an_error_not_a_pass() {
    let cases = [
        (
            "flowchart LR\n    A --> B",
            "`flowchart LR` diagrams are not understood",
        ),
        (
            "sequenceDiagram\n    participant M as MemoryManager",
            "participant alias `M as MemoryManager`",
        ),
        (
            "sequenceDiagram\n    box Aqua Group\n    end",
            "line not understood by this check: `box Aqua Group`",
        ),
        (
            "sequenceDiagram\n    loop forever",
            "`loop` block not closed with `end`",
        ),
        ("sequenceDiagram\n    else", "`else` outside an `alt` block"),
        (
            "classDiagram\n    class Ledger {\n        +budget u64\n    }",
            "attribute `+budget u64` is not understood",
        ),
        (
            "classDiagram\n    Ledger <--> Account",
            "line not understood by this check: `Ledger <--> Account`",
        ),
        (
            "stateDiagram-v2\n    state Empty {\n    }",
            "line not understood by this check: `state Empty {`",
        ),
        (
            "stateDiagram-v2\n    Empty --> Reserved --> Spilling",
            "line not understood",
        ),
        (
            "sequenceDiagram\n    accDescr {\n    free text\n    }",
            "line not understood by this check: `accDescr {`",
        ),
    ];
    let symbols = example_symbols();
    for (diagram, want) in cases {
        let chapter = format!("```mermaid\n{diagram}\n```\n");
        let (errors, _) = check_markdown("s.md", &chapter, &symbols);
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("s.md:") && e.contains(want)),
            "for\n{diagram}\nexpected an error containing {want:?}, got {errors:?}"
        );
    }
}

#[test]
fn an_empty_diagram_is_named_with_its_line() {
    let chapter = "# T\n\n~~~mermaid\n~~~\n";
    let (errors, kinds) = check_markdown("e.md", chapter, &example_symbols());
    assert_eq!(errors, ["e.md:4: empty mermaid block"]);
    assert!(kinds.is_empty());
}

#[test]
fn other_code_blocks_and_indented_fences_are_not_diagrams() {
    let chapter = "````text\n```mermaid\nflowchart LR\n```\n````\n\n    ```mermaid\n    flowchart LR\n    ```\n";
    let (errors, kinds) = check_markdown("t.md", chapter, &example_symbols());
    assert_eq!((errors.len(), kinds.len()), (0, 0), "{errors:?}");
}

#[test]
fn names_come_from_the_code_not_from_comments_strings_or_tests() {
    let src = r##"
        // fn in_comment() {}
        /* struct InBlockComment; /* nested */ fn in_block() {} */
        const S: &str = "fn in_string() { enum InString { X } }";
        const R: &str = r#"fn in_raw() {"#;
        const C: char = '{';
        pub trait Spill { fn spill(&self) -> u64; fn name(&self) -> &str; }
        pub struct Buffer<'a> { bytes: &'a [u8] }
        impl<'a> Buffer<'a> { pub fn push(&mut self, x: impl Into<u8>) { let _ = x; } }
        impl fmt::Display for Phase { fn fmt(&self) {} }
        impl Spill for Buffer<'_> { fn spill(&self) -> u64 { 0 } fn name(&self) -> &str { "b" } }
        pub enum Phase { Empty, #[allow(dead_code)] Full(Vec<(u8, u8)>), Spilling { at: u64, by: u64 } }
        fn free() {}
        #[cfg(test)]
        mod tests { fn only_in_tests() {} struct TestOnly; }
    "##;
    let s = symbols(src);
    let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(s.types, set(&["Buffer", "Phase", "Spill"]));
    assert_eq!(s.variants, set(&["Empty", "Full", "Spilling"]));
    assert_eq!(s.fns, set(&["fmt", "free", "name", "push", "spill"]));
    assert_eq!(s.methods["Buffer"], set(&["name", "push", "spill"]));
    assert_eq!(s.methods["Spill"], set(&["name", "spill"]));
    assert_eq!(s.methods["Phase"], set(&["fmt"]));
    assert!(!s.methods.contains_key("Into"), "{:?}", s.methods);
}

#[test]
fn the_example_s_names_are_found() {
    let s = example_symbols();
    for ty in [
        "MemoryManager",
        "Reservation",
        "Ledger",
        "MemoryConsumer",
        "BudgetedMemory",
        "ErrorKind",
    ] {
        assert!(s.types.contains(ty), "{ty} missing from {:?}", s.types);
    }
    for v in ["TooLarge", "OverBudget", "OverMaximum", "Refused"] {
        assert!(s.variants.contains(v), "{v} missing from {:?}", s.variants);
    }
    assert!(s.is_method("MemoryManager", "acquire"));
    assert!(s.is_method("Ledger", "try_reserve"));
    assert!(s.is_method("MemoryConsumer", "spill"));
    assert!(s.is_method("SpillableBuffer", "spill"));
    assert!(s.is_method("Reservation", "drop"));
    assert!(s.is_method("BudgetedMemory", "grow_traced"));
    assert!(
        !s.types.contains("LinearMemory"),
        "Part I's type, not this example's"
    );
}

#[test]
fn accessibility_lines_are_free_text() {
    let chapter = "```mermaid\nsequenceDiagram\n    accTitle: How Nobody calls nothing\n    \
                   accDescr : Names no type of the example\n    \
                   MemoryManager->>Ledger: try_reserve(id, bytes)\n```\n";
    let (errors, kinds) = check_markdown("a.md", chapter, &example_symbols());
    assert_eq!(errors, Vec::<String>::new());
    assert_eq!(kinds, [Kind::Sequence]);
}
