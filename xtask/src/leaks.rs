//! The leak step: nothing on the built site points at what a reader cannot
//! see. It reads every page's HTML (scripts and styles left out, so mdBook's
//! own JavaScript does not count; text, attributes and hidden code lines do)
//! and fails on:
//!
//! - the authoring notes and reviews: `FACTS`, a `seed` (document, PR), a
//!   `sandbox`, `closing notes`, `reader-review`, `aesthetics.md`, `reviews/`;
//! - paths of the build machine: `/work/`, `/root/`, the user's home, and
//!   this process's own cgroup path from `/proc/self/cgroup` (the machine's
//!   cgroup tree, like `process_api/...`, is not the reader's).
//!
//! Each finding names the chapter and line it comes from (or the page and
//! line of the HTML, for text an include put there).

use std::path::Path;

use crate::book::{Book, Tally};
use crate::{files, Result};

/// What to look for, and why it is a leak.
#[derive(Debug, Clone, PartialEq)]
pub struct Needle {
    pub text: String,
    /// Match only as a whole word (letters, digits and `_` around it end it).
    pub whole_word: bool,
    pub case_sensitive: bool,
    /// Look in the prose only, not in code: a program may well have a
    /// `seed` of its own.
    pub prose_only: bool,
    pub why: &'static str,
}

impl Needle {
    fn new(text: &str, whole_word: bool, case_sensitive: bool, why: &'static str) -> Needle {
        Needle {
            text: text.to_owned(),
            whole_word,
            case_sensitive,
            prose_only: false,
            why,
        }
    }

    fn in_prose(mut self) -> Needle {
        self.prose_only = true;
        self
    }
}

/// The needles for this machine: the fixed words and the machine's paths.
pub fn needles() -> Vec<Needle> {
    let mut list = vec![
        Needle::new("FACTS", true, true, "the authors' notes file"),
        Needle::new("seed", true, false, "the unpublished seed document").in_prose(),
        Needle::new("seeds", true, false, "the unpublished seed document").in_prose(),
        Needle::new("sandbox", false, false, "the authoring environment"),
        Needle::new("closing note", false, false, "notes outside the book"),
        Needle::new("reader-review", false, false, "an unpublished review"),
        Needle::new("aesthetics.md", false, false, "an unpublished review"),
        Needle::new("reviews/", false, false, "an unpublished review"),
        Needle::new("/work/", false, true, "a path of the build machine"),
        Needle::new("/root/", false, true, "a path of the build machine"),
    ];
    if let Some(home) = std::env::var_os("HOME").and_then(|h| h.into_string().ok()) {
        let home = home.trim_end_matches('/');
        if home.len() > 1 && home != "/root" {
            list.push(Needle::new(
                &format!("{home}/"),
                false,
                true,
                "the build machine's home folder",
            ));
        }
    }
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    for path in cgroup_words(&cgroups) {
        list.push(Needle::new(
            &path,
            false,
            true,
            "the build machine's own cgroup",
        ));
    }
    list
}

/// From `/proc/self/cgroup` (`4:memory:/process_api/ceea...`): each non-root
/// path, and its first folder unless it is one every systemd machine has
/// (`user.slice`, `system.slice`, `init.scope`).
fn cgroup_words(text: &str) -> Vec<String> {
    let mut words: Vec<String> = Vec::new();
    for line in text.lines() {
        let Some(path) = line.splitn(3, ':').nth(2) else {
            continue;
        };
        let path = path.trim().trim_start_matches('/');
        if path.is_empty() {
            continue;
        }
        let first = path.split('/').next().unwrap_or(path);
        let generic = [".slice", ".scope", ".service"]
            .iter()
            .any(|s| first.ends_with(s));
        for word in [path, first] {
            if (word == path || !generic) && !words.iter().any(|w| w == word) {
                words.push(word.to_owned());
            }
        }
    }
    words
}

/// One leak: where, what, and why.
#[derive(Debug, PartialEq)]
pub struct Leak {
    pub at: String,
    pub found: String,
    pub why: &'static str,
    pub context: String,
}

pub fn leak_check(book: &Book, _: &mut Tally) -> Result<()> {
    let leaks = find_leaks(&book.site(), &book.root.join("src"), &needles())?;
    if leaks.is_empty() {
        return Ok(());
    }
    Err(leaks
        .iter()
        .map(|l| format!("{}: `{}` ({}): {}", l.at, l.found, l.why, l.context))
        .collect::<Vec<_>>()
        .join("\n")
        .into())
}

/// Every leak on the pages of `site`. The print page and `index.html`
/// repeat the chapters, and `toc.html` the sidebar, so none is read.
pub fn find_leaks(site: &Path, src: &Path, needles: &[Needle]) -> Result<Vec<Leak>> {
    let mut leaks = Vec::new();
    for page in files::files_with_extension(site, "html")? {
        if matches!(
            page.to_str(),
            Some("print.html" | "toc.html" | "index.html")
        ) {
            continue;
        }
        let html = std::fs::read_to_string(site.join(&page))?;
        let chapter = page.with_extension("md");
        let source = std::fs::read_to_string(src.join(&chapter)).unwrap_or_default();
        let lines = readable_lines(&html);
        for needle in needles {
            let found: Vec<(usize, &str, String)> = lines
                .iter()
                .flat_map(|(n, full, prose)| {
                    let text = if needle.prose_only { prose } else { full };
                    find(text, needle)
                        .into_iter()
                        .map(move |f| (*n, full.as_str(), f))
                })
                .collect();
            // The chapter's own occurrences, in order: where the page's pair
            // up with them one to one, each is named by its chapter line.
            let in_source: Vec<usize> = source
                .lines()
                .enumerate()
                .flat_map(|(i, l)| find(l, needle).into_iter().map(move |_| i + 1))
                .collect();
            let paired = in_source.len() == found.len();
            for (k, (html_line, text, word)) in found.iter().enumerate() {
                let at = if paired {
                    format!("src/{}:{}", chapter.display(), in_source[k])
                } else {
                    format!("{}: line {html_line}", crate::load::source_of(&page))
                };
                let leak = Leak {
                    at,
                    found: word.clone(),
                    why: needle.why,
                    context: shorten(&strip_tags(text)),
                };
                if !leaks.contains(&leak) {
                    leaks.push(leak);
                }
            }
        }
    }
    Ok(leaks)
}

/// Each line of `html` that has text, numbered from 1, twice: with
/// `<script>` and `<style>` elements removed (tags stay, so `alt`, `title`
/// and `href` are read too), and as prose, with code (`<pre>`, `<code>`)
/// removed as well. Character references are decoded.
fn readable_lines(html: &str) -> Vec<(usize, String, String)> {
    let full = without(html, &[("<script", "</script>"), ("<style", "</style>")]);
    let prose = without(&full, &[("<pre", "</pre>"), ("<code", "</code>")]);
    full.lines()
        .zip(prose.lines())
        .enumerate()
        .filter(|(_, (f, _))| !f.trim().is_empty())
        .map(|(i, (f, p))| (i + 1, crate::links::unescape(f), crate::links::unescape(p)))
        .collect()
}

/// `text` with each element `(open, close)` cut out, its newlines kept so
/// that the lines still count as before.
fn without(text: &str, elements: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    loop {
        let next = elements
            .iter()
            .filter_map(|&(open, close)| rest.find(open).map(|at| (at, close)))
            .min();
        let Some((at, close)) = next else {
            out.push_str(rest);
            return out;
        };
        out.push_str(&rest[..at]);
        let end = rest[at..]
            .find(close)
            .map_or(rest.len(), |e| at + e + close.len());
        out.extend(rest[at..end].chars().filter(|&c| c == '\n'));
        rest = &rest[end..];
    }
}

/// The text of an HTML line, for a report: tags dropped.
fn strip_tags(line: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in line.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => in_tag = false,
            _ if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.trim().to_owned()
}

/// The matches of `needle` in `text`, as they are written there.
fn find(text: &str, needle: &Needle) -> Vec<String> {
    let (hay, pin) = if needle.case_sensitive {
        (text.to_owned(), needle.text.clone())
    } else {
        (text.to_ascii_lowercase(), needle.text.to_ascii_lowercase())
    };
    let word_char = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(at) = hay[from..].find(&pin).map(|i| from + i) {
        let end = at + pin.len();
        from = end;
        if needle.whole_word
            && (word_char(hay[..at].chars().next_back()) || word_char(hay[end..].chars().next()))
        {
            continue;
        }
        // A random seed, or an RNG's, is a thing readers have.
        let before = hay[..at].trim_end();
        if needle.text.starts_with("seed")
            && ["random", "rng", "prng", "proptest"]
                .iter()
                .any(|w| before.ends_with(w))
        {
            continue;
        }
        found.push(text[at..end].to_owned());
    }
    found
}

fn shorten(text: &str) -> String {
    const MAX: usize = 120;
    if text.chars().count() <= MAX {
        return text.to_owned();
    }
    let cut: String = text.chars().take(MAX).collect();
    format!("{cut}...")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_paths_and_cgroups_are_found() {
        let needles = [
            Needle::new("FACTS", true, true, "notes"),
            Needle::new("seed", true, false, "seed"),
            Needle::new("process_api", false, true, "cgroup"),
        ];
        let find_all = |t: &str| needles.iter().flat_map(|n| find(t, n)).collect::<Vec<_>>();
        assert_eq!(
            find_all("(FACTS: the pitfalls) and the facts"),
            vec!["FACTS"]
        );
        assert_eq!(
            find_all("The seed of this part; seeding; a random seed"),
            vec!["seed"]
        );
        assert_eq!(
            find_all("/sys/fs/cgroup/memory/process_api/6ae2/x"),
            vec!["process_api"]
        );
        assert!(find_all("proptest seed 42 and linseed oil").is_empty());
    }

    #[test]
    fn the_machines_cgroup_path_and_its_first_folder() {
        let text = "4:memory:/process_api/ceea4adb\n1:cpu:/\n0::/user.slice/user-1000.slice/session-2.scope\n";
        assert_eq!(
            cgroup_words(text),
            vec![
                "process_api/ceea4adb".to_owned(),
                "process_api".to_owned(),
                "user.slice/user-1000.slice/session-2.scope".to_owned(),
            ]
        );
    }

    #[test]
    fn scripts_and_styles_are_not_read_and_code_is_not_prose() {
        let html = "<p>a</p><script>var sandbox = 1;\nmore()</script><p>b &amp; c</p>\n\
                    <style>x{}</style>d <code>seed</code>\n";
        let lines = readable_lines(html);
        assert_eq!(
            lines,
            vec![
                (1, "<p>a</p>".to_owned(), "<p>a</p>".to_owned()),
                (2, "<p>b & c</p>".to_owned(), "<p>b & c</p>".to_owned()),
                (3, "d <code>seed</code>".to_owned(), "d ".to_owned()),
            ]
        );
        assert_eq!(strip_tags("<p>b <em>c</em></p>"), "b c");
    }
}
