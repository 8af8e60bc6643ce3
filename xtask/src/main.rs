//! `cargo xtask <task>`: the book's build, serve and test tasks.
//!
//! Every task installs the pinned tools it needs (see `xtask/tools.txt`) into a
//! per-user folder first, so a fresh clone needs nothing but a Rust toolchain
//! (and, for `test`, Chromium and npm, which it installs itself when run as
//! root).

mod axe;
mod bench;
mod blocks;
mod browser;
mod charts;
mod links;
mod page_report;
mod process;
#[cfg(test)]
mod selftest;
mod site_check;
mod site_server;
mod steps;
mod system;
mod tools;
mod valgrind;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

pub use process::{run, run_recorded};

pub type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

const USAGE: &str = "\
usage: cargo xtask <task>

tasks:
  install-tools   install the pinned mdbook, mdbook-mermaid, mdbook-linkcheck2
                  and axe-core (with npm)
  build           build the book into book/
  serve           serve the book on http://localhost:3000, rebuilding on change
  test            run every check: cargo test, clippy, mdbook build, mdbook test,
                  the link check and the headless Chromium check
  bench           run the book's benches and redraw src/charts/*.svg and
                  benches/results/*; `bench --quick` checks that pipeline fast,
                  writing only under target/xtask/bench-quick/; `bench --redraw`
                  redraws them from the last full run without measuring";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = project_root();
    let result = match args.first().map(String::as_str) {
        Some("install-tools") => tools::install_all()
            .and_then(|_| axe::install())
            .map(|_| ()),
        Some("build") => build(&root),
        Some("serve") => serve(&root),
        Some("test") => steps::test_all(&root),
        Some("bench") => bench::bench(&root, &args[1..]),
        Some("help" | "-h" | "--help") => {
            println!("{USAGE}");
            Ok(())
        }
        Some(other) => Err(format!("unknown task `{other}`\n\n{USAGE}").into()),
        None => Err(USAGE.into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The repository root: the parent of this crate's manifest directory.
fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask/ lives in the repository root")
        .to_path_buf()
}

/// Every file under `dir` whose name ends in `.ext`, relative to `dir`, sorted.
pub fn files_with_extension(dir: &Path, ext: &str) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).map_err(|e| format!("{}: {e}", d.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == ext) {
                found.push(path.strip_prefix(dir)?.to_path_buf());
            }
        }
    }
    found.sort();
    Ok(found)
}

fn build(root: &Path) -> Result<()> {
    let bins = tools::install_all()?;
    run(tools::mdbook(&bins, root)?.arg("build"), "mdbook build")
}

fn serve(root: &Path) -> Result<()> {
    let bins = tools::install_all()?;
    eprintln!("xtask: serving the book on http://localhost:3000 (Ctrl-C stops it)");
    run(
        tools::mdbook(&bins, root)?.args(["serve", "--hostname", "127.0.0.1", "--port", "3000"]),
        "mdbook serve",
    )
}
