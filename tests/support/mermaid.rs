//! The Mermaid diagrams of a chapter, found the way mdBook finds them: with
//! pulldown-cmark, the Markdown parser it uses. A diagram is a fenced code
//! block whose info string starts with `mermaid`; an indented block, or a
//! fence inside another code block, is not one. Shared by
//! `tests/every_diagram.rs` and `tests/diagrams_match_code.rs`, which
//! include it with `#[path = "support/mermaid.rs"] mod mermaid;`.

use pulldown_cmark::{CodeBlockKind, Event, Parser, Tag};

/// One ```` ```mermaid ```` block.
#[derive(Debug)]
pub struct Block {
    /// The 1-based line after the opening fence, where the diagram starts.
    pub first_line: usize,
    /// The diagram's lines, each with its 1-based line in the chapter.
    pub lines: Vec<(usize, String)>,
}

/// The 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset].matches('\n').count() + 1
}

/// Every Mermaid block of `markdown`, in order.
pub fn blocks(markdown: &str) -> Vec<Block> {
    let mut found = Vec::new();
    // The block being read, and the text it has so far.
    let mut open: Option<(Block, String)> = None;
    for (event, range) in Parser::new(markdown).into_offset_iter() {
        match event {
            Event::Start(Tag::CodeBlock(CodeBlockKind::Fenced(info)))
                if info.split([' ', '\t', ',']).next() == Some("mermaid") =>
            {
                let first_line = line_of(markdown, range.start) + 1;
                let lines = Vec::new();
                open = Some((Block { first_line, lines }, String::new()));
            }
            Event::Text(text) => {
                if let Some((_, body)) = open.as_mut() {
                    body.push_str(&text);
                }
            }
            Event::End(Tag::CodeBlock(_)) => {
                if let Some((mut block, body)) = open.take() {
                    let numbered = body.lines().enumerate();
                    let lines = numbered.map(|(k, l)| (block.first_line + k, l.to_owned()));
                    block.lines = lines.collect();
                    found.push(block);
                }
            }
            _ => {}
        }
    }
    found
}
