//! The browser check: every built page is served on 127.0.0.1 and loaded in
//! headless Chromium with `probe.js` injected first. A page passes when it has
//! no script error, every Mermaid block became an SVG without Mermaid's error
//! text, and the search box finds results (so the search index loaded).

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::thread;

use crate::Result;

const PROBE: &str = include_str!("probe.js");
const PROBE_PATH: &str = "/__xtask_probe.js";

/// What the probe saw on one page in one theme.
#[derive(Debug, Default)]
pub struct PageReport {
    pub page: PathBuf,
    pub theme: String,
    pub html_class: String,
    /// One entry per Mermaid block, in page order: rendered SVG, theme, error.
    pub diagrams: Vec<(bool, String, String)>,
    pub search_results: usize,
    pub search_note: String,
    pub errors: Vec<String>,
}

impl PageReport {
    /// Problems, each naming the page's source chapter and the block.
    pub fn problems(&self) -> Vec<String> {
        let source = source_of(&self.page);
        let mut problems = Vec::new();
        for (i, (svg, theme, error)) in self.diagrams.iter().enumerate() {
            if !svg {
                let why = if error.is_empty() {
                    "no SVG after 15 s"
                } else {
                    error
                };
                problems.push(format!(
                    "{source} ({} theme): mermaid block {}: {why}",
                    self.theme,
                    i + 1
                ));
            }
            let want = if DARK_THEMES.contains(&self.theme.as_str()) {
                "dark"
            } else {
                "default"
            };
            if *svg && theme != want {
                problems.push(format!(
                    "{source} ({} theme): mermaid block {} drawn with Mermaid theme `{theme}`, want `{want}`",
                    self.theme,
                    i + 1
                ));
            }
        }
        if !self.html_class.split_whitespace().any(|c| c == self.theme) {
            problems.push(format!(
                "{source}: asked for theme `{}`, page has classes `{}`",
                self.theme, self.html_class
            ));
        }
        if self.search_results == 0 {
            problems.push(format!(
                "{source}: search found nothing ({})",
                self.search_note
            ));
        }
        for e in &self.errors {
            problems.push(format!("{source} ({} theme): {e}", self.theme));
        }
        problems
    }
}

pub const DARK_THEMES: [&str; 3] = ["navy", "coal", "ayu"];

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

/// Finds Chromium (`DMB_CHROMIUM` overrides), or installs it in CI.
pub fn chromium() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("DMB_CHROMIUM") {
        return Ok(PathBuf::from(path));
    }
    crate::system::require(
        &["chromium", "chromium-browser", "google-chrome"],
        "chromium",
        "the browser check",
    )
}

/// Loads each `(page, theme)` in Chromium, two at a time (this machine has two
/// cores), and returns the reports in the order given.
pub fn check_pages(
    chromium: &Path,
    site: &Path,
    site_url: &str,
    pages: &[(PathBuf, String)],
) -> Result<Vec<PageReport>> {
    let port = serve(site.to_path_buf(), site_url.to_owned())?;
    let queue = Arc::new(Mutex::new(
        pages.iter().cloned().enumerate().collect::<Vec<_>>(),
    ));
    let results = Arc::new(Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let (queue, results, chromium) =
                (queue.clone(), results.clone(), chromium.to_path_buf());
            thread::spawn(move || loop {
                let next = queue.lock().map(|mut q| q.pop()).unwrap_or(None);
                let Some((index, (page, theme))) = next else {
                    break;
                };
                let report = load_page(&chromium, port, &page, &theme);
                if let Ok(mut r) = results.lock() {
                    r.push((index, report));
                }
            })
        })
        .collect();
    for w in workers {
        w.join().map_err(|_| "a browser worker panicked")?;
    }
    let mut results = std::mem::take(&mut *results.lock().map_err(|_| "poisoned")?);
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

fn load_page(chromium: &Path, port: u16, page: &Path, theme: &str) -> Result<PageReport> {
    // A fresh profile per load. Checks may run concurrently in one process
    // (the self-tests do), so the name needs more than the pid and the page.
    static LOADS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let load = LOADS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let profile = std::env::temp_dir().join(format!(
        "xtask-chromium-{}-{load}-{}",
        std::process::id(),
        page.display().to_string().replace(['/', '\\'], "_") + "-" + theme
    ));
    let url = format!("http://127.0.0.1:{port}/{}?theme={theme}", page.display());
    let output = Command::new(chromium)
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
            "--virtual-time-budget=30000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(&url)
        .output()
        .map_err(|e| format!("cannot start {}: {e}", chromium.display()))?;
    let _ = std::fs::remove_dir_all(&profile);
    let dom = String::from_utf8_lossy(&output.stdout);
    let body = dom
        .split_once("<pre id=\"xtask-probe\">")
        .and_then(|(_, rest)| rest.split_once("</pre>"))
        .map(|(report, _)| crate::links::unescape(report))
        .ok_or_else(|| {
            format!(
                "{}: the probe did not report ({}); Chromium said: {}",
                source_of(page),
                output.status,
                String::from_utf8_lossy(&output.stderr)
                    .lines()
                    .rev()
                    .take(5)
                    .collect::<Vec<_>>()
                    .join(" | ")
            )
        })?;
    Ok(parse_report(page, theme, &body))
}

fn parse_report(page: &Path, theme: &str, body: &str) -> PageReport {
    let mut report = PageReport {
        page: page.to_path_buf(),
        theme: theme.to_owned(),
        ..PageReport::default()
    };
    for line in body.lines() {
        let (key, rest) = line.split_once(' ').unwrap_or((line, ""));
        match key {
            "html-class" => report.html_class = rest.to_owned(),
            "mermaid" => {
                let mut parts = rest.splitn(4, ' ');
                let _index = parts.next();
                let ok = parts.next() == Some("svg");
                let theme = parts.next().unwrap_or("?").to_owned();
                let error = parts.next().unwrap_or("").to_owned();
                report.diagrams.push((ok, theme, error));
            }
            "search" => {
                let (n, note) = rest.split_once(' ').unwrap_or((rest, ""));
                report.search_results = n.parse().unwrap_or(0);
                report.search_note = note.to_owned();
            }
            "error" => report.errors.push(rest.to_owned()),
            _ => {}
        }
    }
    report
}

/// A minimal static file server on 127.0.0.1 that injects the probe into HTML.
/// It serves the site at `/` and at `site_url` (book.toml's `site-url`, where
/// the deployed book lives and which `404.html` links through).
fn serve(site: PathBuf, site_url: String) -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (site, site_url) = (site.clone(), site_url.clone());
            thread::spawn(move || {
                // A failed response only fails the page that asked for it.
                let _ = respond(stream, &site, &site_url);
            });
        }
    });
    Ok(port)
}

fn respond(mut stream: TcpStream, site: &Path, site_url: &str) -> std::io::Result<()> {
    let mut request_line = String::new();
    let mut reader = BufReader::new(stream.try_clone()?);
    reader.read_line(&mut request_line)?;
    let mut header = String::new();
    while reader.read_line(&mut header)? > 2 {
        header.clear();
    }
    let target = request_line.split_whitespace().nth(1).unwrap_or("/");
    let path = target.split(['?', '#']).next().unwrap_or("/");
    let path = match path.strip_prefix(site_url.trim_end_matches('/')) {
        Some(rest) if site_url.len() > 1 && rest.starts_with('/') => rest,
        _ => path,
    };
    let (status, body, mime) = if path == PROBE_PATH {
        ("200 OK", PROBE.as_bytes().to_vec(), "text/javascript")
    } else {
        let rel = path.trim_start_matches('/');
        let rel = if rel.is_empty() || rel.ends_with('/') {
            format!("{rel}index.html")
        } else {
            rel.to_owned()
        };
        let file = site.join(&rel);
        let safe = !rel.split('/').any(|p| p == "..");
        match std::fs::read(&file) {
            Ok(bytes) if safe => {
                let mime = mime_of(&file);
                let bytes = if mime.starts_with("text/html") {
                    inject_probe(bytes)
                } else {
                    bytes
                };
                ("200 OK", bytes, mime)
            }
            _ => ("404 Not Found", b"not found".to_vec(), "text/plain"),
        }
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {mime}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    stream.write_all(&body)
}

fn inject_probe(html: Vec<u8>) -> Vec<u8> {
    let text = String::from_utf8_lossy(&html);
    match text.find("<head>") {
        Some(at) => {
            let tag = format!("<script src=\"{PROBE_PATH}\"></script>");
            format!("{}{tag}{}", &text[..at + 6], &text[at + 6..]).into_bytes()
        }
        None => html,
    }
}

fn mime_of(file: &Path) -> &'static str {
    match file.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript",
        Some("css") => "text/css",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("json") => "application/json",
        Some("woff2") => "font/woff2",
        Some("woff") => "font/woff",
        Some("ttf") => "font/ttf",
        _ => "application/octet-stream",
    }
}
