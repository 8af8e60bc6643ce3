//! The browser check over the built site: every page twice, in the light
//! theme in a laptop's window and in the navy theme in a phone's (390 px);
//! print.html in the first only, and a page with another's bytes as that page.
//! Each load must draw its diagrams (with an accessible title and
//! description), have no script error, overflow nothing sideways, let the
//! keyboard open the sidebar, and pass axe-core with no critical or serious
//! violation; the light load also clicks every copy button (each
//! must copy the whole program) and switches to navy (the diagrams must be
//! drawn again), and one page's light load searches. A page without a diagram must transfer at most
//! `PLAIN_PAGE_LIMIT`. Then a few screenshots, for a person to look at.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::browser::Browser;
use crate::load::{source_of, Load, Viewport};
use crate::page_report::PageReport;
use crate::Result;

/// What a page without a diagram may transfer: the HTML, CSS, fonts and
/// scripts it loads before the reader does anything.
pub const PLAIN_PAGE_LIMIT: u64 = 1024 * 1024;

/// Pages screenshotted (in the light and navy themes and on a phone), and
/// what to scroll to the middle of the window first: the introduction, a
/// chapter's diagram right under its long code block, and a chart.
const SCREENSHOTS: [(&str, &str); 3] = [
    ("introduction.html", ""),
    ("part1-contract.html", "pre.mermaid"),
    ("part4-memory-growth.html", "img[src$='memory_grow.svg']"),
];

/// The theme and window of a load.
pub type Window = (&'static str, Viewport);

/// Every page is loaded in both: the light theme in a laptop's window, the
/// navy theme in a phone's.
pub const BOTH_WINDOWS: &[Window] = &[("light", Viewport::Desktop), ("navy", Viewport::Phone)];

pub struct Summary {
    pub pages: usize,
    /// Diagrams drawn on chapter pages (print and index repeat them).
    pub diagrams: usize,
}

/// Checks `pages` (every page, if `None`) of the book built in
/// `<book_root>/book`, each in `windows` (print.html in the first only),
/// and writes the screenshots into `screenshots` if given.
pub fn check(
    chromium: &Path,
    book_root: &Path,
    pages: Option<&[&str]>,
    windows: &[Window],
    screenshots: Option<&Path>,
) -> Result<Summary> {
    let site = book_root.join("book");
    let pages = match pages {
        Some(pages) => pages.iter().map(PathBuf::from).collect(),
        None => site_pages(&site)?,
    };
    // A copy is checked by being the same bytes: it counts as checked.
    let page_count = pages.len();
    let pages = without_copies(&site, pages)?;
    let browser = Browser::new(chromium, &site, &site_url(&book_root.join("book.toml"))?)?;
    // Every page loads the same search script and index, and every page lives
    // at the book's root (SUMMARY.md has no folders), so the links a search
    // returns are the same from any page: one search, from the first chapter.
    let search_page = pages
        .iter()
        .find(|p| p.as_os_str() == "introduction.html")
        .or(pages.first())
        .cloned();
    let loads: Vec<Load> = windows
        .iter()
        .enumerate()
        .flat_map(|(i, &(theme, viewport))| {
            let search_page = &search_page;
            // print.html is every chapter on one page, for paper: its blocks
            // and diagrams are the chapter pages', each checked in every
            // window, and axe over all of it is the slowest load of the
            // step. It is checked in the first window only.
            let pages = pages.iter().filter(move |p| i == 0 || !is_print(p));
            pages.map(move |page| Load {
                page: page.clone(),
                theme: theme.to_owned(),
                viewport,
                // Once per page; print.html repeats every chapter's blocks.
                copy: viewport == Viewport::Desktop && is_chapter_page(page),
                search: viewport == Viewport::Desktop && Some(page) == search_page.as_ref(),
            })
        })
        .collect();
    let reports = browser.check(&loads)?;

    let mut problems: Vec<String> = reports.iter().flat_map(PageReport::problems).collect();
    for r in &reports {
        let html = std::fs::read_to_string(site.join(&r.load.page))?;
        let expected = html.matches("<pre class=\"mermaid\">").count();
        if r.diagrams.len() != expected {
            problems.push(format!(
                "{}: {expected} mermaid blocks in the HTML, the browser saw {}",
                r.load.name(),
                r.diagrams.len()
            ));
        }
    }
    print_axe_summary(&reports, page_count);
    problems.extend(weight_summary(&reports));
    print_search_index_size(&site)?;
    print_page_summary(&reports);

    let mut by_time: Vec<&PageReport> = reports.iter().collect();
    by_time.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
    let slowest: Vec<String> = by_time
        .iter()
        .take(4)
        .map(|r| format!("{:.1} s {}", r.seconds, r.load.name()))
        .collect();
    eprintln!(
        "{} loads, two at a time; the slowest: {}",
        reports.len(),
        slowest.join("; ")
    );

    if let Some(dir) = screenshots.filter(|_| problems.is_empty()) {
        take_screenshots(&browser, &site, dir)?;
    }
    if !problems.is_empty() {
        return Err(problems.join("\n").into());
    }
    Ok(Summary {
        pages: page_count,
        diagrams: reports
            .iter()
            .filter(|r| r.load.theme == "light" && is_chapter_page(&r.load.page))
            .map(|r| r.diagrams.iter().filter(|d| d.svg).count())
            .sum(),
    })
}

/// Prints what the copy buttons, the phone loads and the interactions did
/// (any failure is among the problems).
fn print_page_summary(reports: &[PageReport]) {
    let copies = reports.iter().flat_map(|r| &r.copies);
    let whole = copies.clone().filter(|c| c.1).count();
    eprintln!(
        "copy buttons: {whole} of {} Rust block copies took the whole program, hidden lines included",
        copies.count()
    );
    let phone: Vec<&PageReport> = reports
        .iter()
        .filter(|r| r.load.viewport == Viewport::Phone)
        .collect();
    eprintln!(
        "phone ({} px): {} of {} pages spill sideways out of the viewport",
        Viewport::Phone.width(),
        phone.iter().filter(|r| !r.overflows.is_empty()).count(),
        phone.len()
    );
    eprintln!(
        "keyboard and theme menu: {} checks passed (sidebar toggle by Enter; diagrams redrawn after picking Navy)",
        reports.iter().map(|r| r.interactions).sum::<usize>()
    );
}

/// Prints the step's axe line and every moderate and minor violation (rule by
/// rule, with the pages it was seen on); the critical and serious ones are
/// among the problems of each page.
fn print_axe_summary(reports: &[PageReport], pages: usize) {
    let count = |impact: &str| {
        reports
            .iter()
            .flat_map(|r| &r.axe)
            .filter(|v| v.impact == impact)
            .map(|v| v.nodes)
            .sum::<usize>()
    };
    eprintln!(
        "axe: {} critical, {} serious on {pages} pages (axe-core {}; rules wcag2a, wcag2aa, \
         wcag21aa, best-practice; light theme at {} px, navy at {} px)",
        count("critical"),
        count("serious"),
        crate::axe::version(),
        Viewport::Desktop.width(),
        Viewport::Phone.width()
    );
    let mut others: BTreeMap<(String, String), (String, Vec<String>)> = BTreeMap::new();
    for r in reports {
        for v in r.axe.iter().filter(|v| !v.is_blocking()) {
            let entry = others
                .entry((v.impact.clone(), v.rule.clone()))
                .or_insert_with(|| (format!("{} ({})", v.help, v.targets), Vec::new()));
            entry
                .1
                .push(format!("{} {}", r.load.page.display(), r.load.theme));
        }
    }
    for ((impact, rule), (help, seen)) in &others {
        eprintln!(
            "axe {impact} (listed, not failed): `{rule}` {help}: {} loads ({})",
            seen.len(),
            seen.join(", ")
        );
    }
}

/// Prints the heaviest pages with and without diagrams; a page without one
/// over `PLAIN_PAGE_LIMIT` is a problem.
fn weight_summary(reports: &[PageReport]) -> Vec<String> {
    let light = reports.iter().filter(|r| r.load.theme == "light");
    let (with, without): (Vec<&PageReport>, Vec<&PageReport>) =
        light.partition(|r| !r.diagrams.is_empty());
    if let Some(r) = with.iter().max_by_key(|r| r.weight) {
        eprintln!(
            "heaviest page with a diagram: {} KiB ({}: {})",
            r.weight / 1024,
            r.load.page.display(),
            r.heaviest
        );
    }
    let Some(r) = without.iter().max_by_key(|r| r.weight) else {
        return Vec::new();
    };
    eprintln!(
        "heaviest page without a diagram: {} KiB ({}: {}; limit {} KiB)",
        r.weight / 1024,
        r.load.page.display(),
        r.heaviest,
        PLAIN_PAGE_LIMIT / 1024
    );
    without
        .iter()
        .filter(|r| r.weight > PLAIN_PAGE_LIMIT)
        .map(|r| {
            format!(
                "{}: transfers {} KiB without a diagram, over the {} KiB limit (heaviest: {})",
                source_of(&r.load.page),
                r.weight / 1024,
                PLAIN_PAGE_LIMIT / 1024,
                r.heaviest
            )
        })
        .collect()
}

/// The search index is fetched when a reader first opens the search, from
/// any page, so it is in no page's weight: its size is printed apart.
fn print_search_index_size(site: &Path) -> Result<()> {
    for entry in std::fs::read_dir(site)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("searchindex") && name.ends_with(".js") {
            eprintln!(
                "search index: {} KiB ({name}), fetched when the reader first opens the search",
                entry.metadata()?.len() / 1024
            );
        }
    }
    Ok(())
}

/// `<dir>/<page>-light.png`, `-navy.png` and `-phone.png` for each of
/// `SCREENSHOTS`, in windows taller than the checks' so that more shows.
fn take_screenshots(browser: &Browser, site: &Path, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut shots = Vec::new();
    for (page, scroll) in SCREENSHOTS {
        if !site.join(page).is_file() {
            return Err(format!(
                "xtask/src/site_check.rs screenshots {page}, which the book no longer has"
            )
            .into());
        }
        let stem = page.trim_end_matches(".html");
        for (theme, viewport, name) in [
            ("light", Viewport::Desktop, "light"),
            ("navy", Viewport::Desktop, "navy"),
            ("light", Viewport::Phone, "phone"),
        ] {
            let load = Load {
                page: PathBuf::from(page),
                theme: theme.to_owned(),
                viewport,
                copy: false,
                search: false,
            };
            shots.push((load, scroll, dir.join(format!("{stem}-{name}.png"))));
        }
    }
    browser.screenshots(&shots)?;
    eprintln!("screenshots: {} PNGs in {}", shots.len(), dir.display());
    Ok(())
}

/// `[output.html] site-url` from book.toml, or `/`.
fn site_url(book_toml: &Path) -> Result<String> {
    let text = std::fs::read_to_string(book_toml)?;
    Ok(text
        .lines()
        .find_map(|l| l.trim().strip_prefix("site-url"))
        .and_then(|rest| rest.split('"').nth(1))
        .unwrap_or("/")
        .to_owned())
}

fn is_print(page: &Path) -> bool {
    page == Path::new("print.html")
}

/// `pages` less those whose bytes another page has (mdBook writes
/// index.html as a copy of the first chapter): a load of the same bytes
/// would check the same things again. The chapter's page is the one kept.
fn without_copies(site: &Path, mut pages: Vec<PathBuf>) -> Result<Vec<PathBuf>> {
    pages.sort_by_key(|p| !is_chapter_page(p));
    let mut seen: Vec<(Vec<u8>, PathBuf)> = Vec::new();
    let mut kept = Vec::new();
    for page in pages {
        let bytes = std::fs::read(site.join(&page))?;
        match seen.iter().find(|(b, _)| *b == bytes) {
            Some((_, first)) => eprintln!(
                "{}: the same bytes as {}, checked as that page",
                page.display(),
                first.display()
            ),
            None => {
                seen.push((bytes, page.clone()));
                kept.push(page);
            }
        }
    }
    Ok(kept)
}

/// Pages mdBook makes that repeat chapters: not counted as diagrams of their own.
fn is_chapter_page(page: &Path) -> bool {
    !matches!(
        page.to_str(),
        Some("print.html" | "index.html" | "404.html")
    )
}

/// Every HTML page of the site except `toc.html`, the no-JavaScript sidebar
/// fallback, which has no scripts to check.
fn site_pages(site: &Path) -> Result<Vec<PathBuf>> {
    let mut pages = crate::files::files_with_extension(site, "html")?;
    pages.retain(|p| p != Path::new("toc.html"));
    if pages.is_empty() {
        return Err(format!("{} has no pages: did mdbook build run?", site.display()).into());
    }
    Ok(pages)
}
