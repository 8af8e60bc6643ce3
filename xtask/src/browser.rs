//! Headless Chromium runs for the browser check. Each built page is served on
//! 127.0.0.1 (`site_server.rs`) and loaded with `probe.js` and axe-core
//! injected; the probe reports what it saw into the DOM that `--dump-dom`
//! hands back. The same pages can be loaded for a screenshot instead.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread;

use crate::Result;

pub const DARK_THEMES: [&str; 3] = ["navy", "coal", "ayu"];

/// Headless Chromium opens no window narrower than this (CSS pixels).
const MIN_WINDOW_WIDTH: u32 = 500;

/// The height of a screenshot's window, in CSS pixels.
const SHOT_HEIGHT: u32 = 1800;

/// The window a page is loaded in: a laptop's, or a phone's (390 px is the
/// CSS width of a current mid-size phone).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Viewport {
    Desktop,
    Phone,
}

impl Viewport {
    fn size(self) -> (u32, u32) {
        match self {
            Viewport::Desktop => (1280, 1000),
            Viewport::Phone => (390, 844),
        }
    }

    pub fn width(self) -> u32 {
        self.size().0
    }
}

/// One page, in one theme, in one window.
#[derive(Clone, Debug)]
pub struct Load {
    pub page: PathBuf,
    pub theme: String,
    pub viewport: Viewport,
    /// Click every Rust block's copy button (it copies the same in any
    /// theme and window, and takes a while on a page of whole programs).
    pub copy: bool,
}

impl Load {
    /// `src/primer.md (page primer.html) (navy theme, 390 px)`
    pub fn name(&self) -> String {
        format!(
            "{} ({} theme, {} px)",
            source_of(&self.page),
            self.theme,
            self.viewport.width()
        )
    }
}

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
        if self.search_results == 0 {
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

/// `primer.html` was built from `src/primer.md`; pages mdBook makes itself
/// (print, 404, the index copy of the first chapter) are named as they are.
pub fn source_of(page: &Path) -> String {
    match page.to_str() {
        Some("print.html" | "404.html" | "index.html" | "toc.html") => {
            format!("page {}", page.display())
        }
        _ => format!(
            "src/{} (page {})",
            page.with_extension("md").display(),
            page.display()
        ),
    }
}

/// Finds Chromium (`DMB_CHROMIUM` overrides), installing it as root, and
/// installs the pinned axe-core the check runs in it.
pub fn chromium() -> Result<PathBuf> {
    crate::axe::install()?;
    if let Some(path) = std::env::var_os("DMB_CHROMIUM") {
        return Ok(PathBuf::from(path));
    }
    crate::system::require(
        &["chromium", "chromium-browser", "google-chrome"],
        "chromium",
        "the browser check",
    )
}

/// A running site server and the browser to load its pages in.
pub struct Browser {
    chromium: PathBuf,
    port: u16,
}

impl Browser {
    pub fn new(chromium: &Path, site: &Path, site_url: &str) -> Result<Browser> {
        let axe = crate::axe::script()?;
        let port = crate::site_server::serve(site.to_path_buf(), site_url.to_owned(), &axe)?;
        Ok(Browser {
            chromium: chromium.to_path_buf(),
            port,
        })
    }

    /// Loads each page and returns the probe's reports in the order given.
    pub fn check(&self, loads: &[Load]) -> Result<Vec<PageReport>> {
        two_at_a_time(loads, |load| self.check_one(load))
    }

    /// Writes a PNG of each load (to `(load, file)`), at the top of the page
    /// or scrolled to the first element `scroll` selects.
    pub fn screenshots(&self, shots: &[(Load, &str, PathBuf)]) -> Result<Vec<()>> {
        two_at_a_time(shots, |(load, scroll, file)| {
            let mut query = format!("xtask=shot&theme={}", load.theme);
            if !scroll.is_empty() {
                query += &format!("&scroll={}", percent_encode(scroll));
            }
            let arg = format!("--screenshot={}", file.display());
            let _ = std::fs::remove_file(file);
            // Taller than the checks' window, so that more of the page shows.
            let output = self.run(load, (load.viewport.width(), SHOT_HEIGHT), &query, &arg)?;
            match std::fs::metadata(file) {
                Ok(m) if m.len() > 0 => Ok(()),
                _ => Err(format!(
                    "{}: no screenshot written to {} ({})",
                    load.name(),
                    file.display(),
                    last_lines(&output)
                )
                .into()),
            }
        })
    }

    fn check_one(&self, load: &Load) -> Result<PageReport> {
        let query = format!("theme={}&copy={}", load.theme, u8::from(load.copy));
        let started = std::time::Instant::now();
        let output = self.run(load, load.viewport.size(), &query, "--dump-dom")?;
        let seconds = started.elapsed().as_secs_f64();
        let dom = String::from_utf8_lossy(&output.stdout);
        let body = dom
            .split_once("<pre id=\"xtask-probe\"")
            .and_then(|(_, rest)| rest.split_once('>'))
            .and_then(|(_, rest)| rest.split_once("</pre>"))
            .map(|(report, _)| crate::links::unescape(report))
            .ok_or_else(|| {
                format!(
                    "{}: the probe did not report ({}); Chromium said: {}",
                    load.name(),
                    output.status,
                    last_lines(&output)
                )
            })?;
        let mut report = parse_report(load, &body);
        report.seconds = seconds;
        Ok(report)
    }

    fn run(&self, load: &Load, window: (u32, u32), query: &str, action: &str) -> Result<Output> {
        // A fresh profile per load, so nothing is cached. Checks may run
        // concurrently in one process (the self-tests do), so the name needs
        // more than the pid and the page.
        static LOADS: AtomicUsize = AtomicUsize::new(0);
        let profile = std::env::temp_dir().join(format!(
            "xtask-chromium-{}-{}",
            std::process::id(),
            LOADS.fetch_add(1, Ordering::Relaxed)
        ));
        let (width, height) = window;
        // A phone is a frame inside headless Chromium's narrowest window, and
        // a screenshot is always of a frame (see frame.html).
        let framed = width < MIN_WINDOW_WIDTH || action.starts_with("--screenshot");
        let url = if framed {
            format!(
                "http://127.0.0.1:{}{}?page={}&width={width}&height={height}&{query}",
                self.port,
                crate::site_server::FRAME_PATH,
                percent_encode(&load.page.display().to_string()),
            )
        } else {
            format!(
                "http://127.0.0.1:{}/{}?{query}",
                self.port,
                load.page.display()
            )
        };
        let window_width = width.max(MIN_WINDOW_WIDTH);
        let output = Command::new(&self.chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--force-device-scale-factor=1",
                // Virtual time runs ahead while the page idles, so a generous
                // budget costs nothing; a heavy page (print.html: every
                // chapter, every diagram, axe over all of it) needs it.
                "--virtual-time-budget=120000",
                action,
            ])
            .arg(format!("--window-size={window_width},{height}"))
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(&url)
            .output()
            .map_err(|e| format!("cannot start {}: {e}", self.chromium.display()))?;
        let _ = std::fs::remove_dir_all(&profile);
        Ok(output)
    }
}

fn last_lines(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr)
        .lines()
        .rev()
        .take(5)
        .collect::<Vec<_>>()
        .join(" | ")
}

/// Runs `job` on every item, two at a time (the machine has two cores), and
/// returns the results in the order of `items`.
fn two_at_a_time<T, R, F>(items: &[T], job: F) -> Result<Vec<R>>
where
    T: Sync,
    R: Send,
    F: Fn(&T) -> Result<R> + Sync,
{
    let next = AtomicUsize::new(0);
    let results = Mutex::new(Vec::new());
    thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(i) else { break };
                let result = job(item);
                if let Ok(mut r) = results.lock() {
                    r.push((i, result));
                }
            });
        }
    });
    let mut results = results
        .into_inner()
        .map_err(|_| "a browser worker panicked")?;
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The probe's report: one finding a line, its fields separated by tabs.
fn parse_report(load: &Load, body: &str) -> PageReport {
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
