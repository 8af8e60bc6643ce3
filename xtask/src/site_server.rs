//! A minimal static file server on 127.0.0.1 for the browser check. It serves
//! the built site and injects the probe (and axe-core) into every HTML page.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread;

use crate::Result;

const PROBE: &str = include_str!("probe.js");
const PROBE_PATH: &str = "/__xtask_probe.js";
const AXE_PATH: &str = "/__xtask_axe.js";
const FRAME: &str = include_str!("frame.html");
/// A page in a frame of a given size: `?page=PATH&width=W&height=H&<its query>`.
pub const FRAME_PATH: &str = "/__xtask_frame.html";

struct Site {
    root: PathBuf,
    /// book.toml's `site-url`, where the deployed book lives and which
    /// `404.html` links through: the site is served there and at `/`.
    url: String,
    axe: Vec<u8>,
}

/// Serves `root` on a free port, which it returns, until the process ends.
pub fn serve(root: PathBuf, site_url: String, axe_script: &Path) -> Result<u16> {
    let axe = std::fs::read(axe_script).map_err(|e| format!("{}: {e}", axe_script.display()))?;
    let site = Arc::new(Site {
        root,
        url: site_url,
        axe,
    });
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let site = site.clone();
            thread::spawn(move || {
                // A failed response only fails the page that asked for it.
                let _ = respond(stream, &site);
            });
        }
    });
    Ok(port)
}

fn respond(mut stream: TcpStream, site: &Site) -> std::io::Result<()> {
    let mut request_line = String::new();
    let mut reader = BufReader::new(stream.try_clone()?);
    reader.read_line(&mut request_line)?;
    let mut header = String::new();
    while reader.read_line(&mut header)? > 2 {
        header.clear();
    }
    let target = request_line.split_whitespace().nth(1).unwrap_or("/");
    let path = target.split(['?', '#']).next().unwrap_or("/");
    let path = match path.strip_prefix(site.url.trim_end_matches('/')) {
        Some(rest) if site.url.len() > 1 && rest.starts_with('/') => rest,
        _ => path,
    };
    let (status, body, mime) = match path {
        PROBE_PATH => ("200 OK", PROBE.as_bytes().to_vec(), "text/javascript"),
        AXE_PATH => ("200 OK", site.axe.clone(), "text/javascript"),
        FRAME_PATH => (
            "200 OK",
            FRAME.as_bytes().to_vec(),
            "text/html; charset=utf-8",
        ),
        _ => {
            let rel = path.trim_start_matches('/');
            let rel = if rel.is_empty() || rel.ends_with('/') {
                format!("{rel}index.html")
            } else {
                rel.to_owned()
            };
            let file = site.root.join(&rel);
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
        }
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {mime}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    stream.write_all(&body)
}

/// The probe first, so it sees every error; axe-core after it.
fn inject_probe(html: Vec<u8>) -> Vec<u8> {
    let text = String::from_utf8_lossy(&html);
    match text.find("<head>") {
        Some(at) => {
            let tags = format!(
                "<script src=\"{PROBE_PATH}\"></script><script src=\"{AXE_PATH}\"></script>"
            );
            format!("{}{tags}{}", &text[..at + 6], &text[at + 6..]).into_bytes()
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
