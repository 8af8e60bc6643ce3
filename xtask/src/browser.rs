//! Headless Chromium runs for the browser check. Each built page is served on
//! 127.0.0.1 (`site_server.rs`) and loaded with `probe.js` and axe-core
//! injected; the probe reports what it saw into the DOM that `--dump-dom`
//! hands back. The same pages can be loaded for a screenshot instead.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::load::Load;
use crate::page_report::{parse_report, PageReport};
use crate::Result;

/// Headless Chromium opens no window narrower than this (CSS pixels).
const MIN_WINDOW_WIDTH: u32 = 500;

/// The height of a screenshot's window, in CSS pixels.
const SHOT_HEIGHT: u32 = 1800;

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
        crate::process::two_at_a_time(loads, |load| self.check_one(load))
    }

    /// Writes a PNG of each load (to `(load, file)`), at the top of the page
    /// or scrolled to the first element `scroll` selects.
    pub fn screenshots(&self, shots: &[(Load, &str, PathBuf)]) -> Result<Vec<()>> {
        crate::process::two_at_a_time(shots, |(load, scroll, file)| {
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
        let query = format!(
            "theme={}&xtask-copy={}&xtask-search={}",
            load.theme,
            u8::from(load.copy),
            u8::from(load.search)
        );
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

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
