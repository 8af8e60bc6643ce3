//! What the probe (`probe.js`) reports from one page load, and which of its
//! findings fail the browser check.

use crate::load::Load;

pub const DARK_THEMES: [&str; 3] = ["navy", "coal", "ayu"];

#[derive(Debug, Default)]
pub struct Diagram {
    pub svg: bool,
    /// The Mermaid theme it was drawn in (`default` or `dark`).
    pub theme: String,
    /// Its accessible name and description (`accTitle:`, `accDescr:`).
    pub title: String,
    pub desc: String,
    pub error: String,
}

#[derive(Debug)]
pub struct AxeViolation {
    /// `critical`, `serious`, `moderate` or `minor`.
    pub impact: String,
    pub rule: String,
    pub nodes: usize,
    pub help: String,
    /// CSS selectors of the first few offending elements.
    pub targets: String,
}

/// What the probe saw on one load.
#[derive(Debug)]
pub struct PageReport {
    pub load: Load,
    pub html_class: String,
    pub diagrams: Vec<Diagram>,
    /// Bytes the page transferred before any interaction, and its heaviest
    /// resources.
    pub weight: u64,
    pub heaviest: String,
    pub overflows: Vec<String>,
    pub axe: Vec<AxeViolation>,
    /// `(block, copied the whole program, why not)` for each Rust block.
    pub copies: Vec<(usize, bool, String)>,
    pub search_results: usize,
    pub search_note: String,
    /// Interactions that worked: the sidebar toggle by keyboard, and the
    /// theme menu redrawing the diagrams. One that failed is an error.
    pub interactions: usize,
    pub errors: Vec<String>,
    /// How long Chromium took, start to exit.
    pub seconds: f64,
}

impl PageReport {
    /// Problems, each naming the page's source chapter and the block. Axe
    /// violations count when critical or serious; the rest are listed apart.
    pub fn problems(&self) -> Vec<String> {
        let at = self.load.name();
        let mut problems = Vec::new();
        let want = if DARK_THEMES.contains(&self.load.theme.as_str()) {
            "dark"
        } else {
            "default"
        };
        for (i, d) in self.diagrams.iter().enumerate() {
            let block = format!("{at}: mermaid block {}", i + 1);
            if !d.svg {
                let why = if d.error.is_empty() {
                    "no SVG after 15 s"
                } else {
                    &d.error
                };
                problems.push(format!("{block}: {why}"));
                continue;
            }
            if d.theme != want {
                problems.push(format!(
                    "{block} drawn with Mermaid theme `{}`, want `{want}`",
                    d.theme
                ));
            }
            if d.title.is_empty() {
                problems.push(format!(
                    "{block} has no accessible title (add an `accTitle:` line)"
                ));
            }
            if d.desc.is_empty() {
                problems.push(format!(
                    "{block} has no accessible description (add an `accDescr:` line)"
                ));
            }
        }
        if !self
            .html_class
            .split_whitespace()
            .any(|c| c == self.load.theme)
        {
            problems.push(format!(
                "{at}: asked for theme `{}`, page has classes `{}`",
                self.load.theme, self.html_class
            ));
        }
        for o in &self.overflows {
            problems.push(format!("{at}: overflows the viewport: {o}"));
        }
        for v in self.axe.iter().filter(|v| v.is_blocking()) {
            problems.push(format!(
                "{at}: axe {} `{}` on {} element(s): {} ({})",
                v.impact, v.rule, v.nodes, v.help, v.targets
            ));
        }
        for (block, ok, why) in &self.copies {
            if !ok {
                problems.push(format!("{at}: Rust block {block}: copy button: {why}"));
            }
        }
        if self.load.search && self.search_results == 0 {
            problems.push(format!("{at}: search found nothing ({})", self.search_note));
        }
        for e in &self.errors {
            problems.push(format!("{at}: {e}"));
        }
        problems
    }
}

impl AxeViolation {
    pub fn is_blocking(&self) -> bool {
        matches!(self.impact.as_str(), "critical" | "serious")
    }
}

/// The probe's report: one finding a line, its fields separated by tabs.
pub fn parse_report(load: &Load, body: &str) -> PageReport {
    let mut report = PageReport {
        load: load.clone(),
        html_class: String::new(),
        diagrams: Vec::new(),
        weight: 0,
        heaviest: String::new(),
        overflows: Vec::new(),
        axe: Vec::new(),
        copies: Vec::new(),
        search_results: 0,
        search_note: String::new(),
        interactions: 0,
        errors: Vec::new(),
        seconds: 0.0,
    };
    for line in body.lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        let field = |i: usize| fields.get(i).copied().unwrap_or("").to_owned();
        match fields[0] {
            "html-class" => report.html_class = field(1),
            // mermaid, index, svg|fail, theme, title, description, error
            "mermaid" => report.diagrams.push(Diagram {
                svg: field(2) == "svg",
                theme: field(3),
                title: field(4),
                desc: field(5),
                error: field(6),
            }),
            "weight" => {
                report.weight = field(1).parse().unwrap_or(0);
                report.heaviest = field(2);
            }
            "overflow" => report.overflows.push(field(1)),
            // axe, impact, rule, elements, help, targets
            "axe" => report.axe.push(AxeViolation {
                impact: field(1),
                rule: field(2),
                nodes: field(3).parse().unwrap_or(0),
                help: field(4),
                targets: field(5),
            }),
            "copy" => {
                report
                    .copies
                    .push((field(1).parse().unwrap_or(0), field(2) == "ok", field(3)))
            }
            "search" => {
                report.search_results = field(1).parse().unwrap_or(0);
                report.search_note = field(2);
            }
            // ui, what, ok|fail, why
            "ui" if field(2) != "ok" => report.errors.push(format!("{}: {}", field(1), field(3))),
            "ui" => report.interactions += 1,
            "error" => report.errors.push(field(1)),
            _ => {}
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::Viewport;

    fn load(theme: &str) -> Load {
        Load {
            page: "primer.html".into(),
            theme: theme.to_owned(),
            viewport: Viewport::Phone,
            copy: true,
            search: true,
        }
    }

    const REPORT: &str = "html-class\tnavy js\n\
        mermaid\t1\tsvg\tdark\tStates of a page\tA page is Unmapped until\t\n\
        mermaid\t2\tsvg\tdark\t\t\t\n\
        weight\t123456\t/primer.html 80 KiB\n\
        overflow\ttable \"x\" under #pages reaches 420 px in a 390 px viewport\n\
        axe\tserious\tcolor-contrast\t3\tElements must meet contrast\tp > a :: 3.6:1\n\
        axe\tminor\tempty-table-header\t1\tTable header text\tth\n\
        copy\t1\tok\t\n\
        copy\t2\tfail\tcopied 3 lines of 50\n\
        ui\tsidebar\tok\t\n\
        ui\ttheme-switch\tfail\tnot redrawn\n\
        search\t7\tok\n\
        error\tscript error: x at y:1\n\
        done";

    #[test]
    fn reads_every_kind_of_line() {
        let r = parse_report(&load("navy"), REPORT);
        assert_eq!(r.html_class, "navy js");
        assert_eq!(r.diagrams.len(), 2);
        assert_eq!(r.diagrams[0].title, "States of a page");
        assert_eq!(r.diagrams[0].desc, "A page is Unmapped until");
        assert_eq!(r.weight, 123456);
        assert_eq!(r.overflows.len(), 1);
        assert_eq!(r.axe.len(), 2);
        assert_eq!(
            (r.axe[0].rule.as_str(), r.axe[0].nodes),
            ("color-contrast", 3)
        );
        assert_eq!(
            r.copies,
            [
                (1, true, String::new()),
                (2, false, "copied 3 lines of 50".into())
            ]
        );
        assert_eq!((r.interactions, r.search_results), (1, 7));
        assert_eq!(
            r.errors,
            ["theme-switch: not redrawn", "script error: x at y:1"]
        );
    }

    #[test]
    fn blocking_findings_are_problems_and_minor_ones_are_not() {
        let problems = parse_report(&load("navy"), REPORT).problems();
        let has = |text: &str| problems.iter().any(|p| p.contains(text));
        assert!(has("src/primer.md (page primer.html) (navy theme, 390 px): mermaid block 2 has no accessible title"));
        assert!(has("mermaid block 2 has no accessible description"));
        assert!(!has("mermaid block 1 has no"));
        assert!(has("overflows the viewport: table"));
        assert!(has("axe serious `color-contrast` on 3 element(s)"));
        assert!(!has("empty-table-header"));
        assert!(has("Rust block 2: copy button: copied 3 lines of 50"));
        assert!(has("theme-switch: not redrawn"));
        assert_eq!(problems.len(), 7, "{problems:#?}");
    }

    #[test]
    fn a_diagram_in_the_wrong_mermaid_theme_is_a_problem() {
        let body = "html-class\tlight\nmermaid\t1\tsvg\tdark\tT\tD\t\nsearch\t1\tok";
        let problems = parse_report(&load("light"), body).problems();
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert!(problems[0].contains("drawn with Mermaid theme `dark`, want `default`"));
    }
}
