//! `cargo xtask <task>`: the book's build, serve and test tasks.
//!
//! Every task installs the pinned tools it needs (see `xtask/tools.txt`) into a
//! per-user folder first, so a fresh clone needs nothing but a Rust toolchain
//! (and, for `test`, Chromium and npm, which it installs itself when run as
//! root).

mod axe;
mod bench;
mod block_length;
mod blocks;
mod book;
mod browser;
mod charts;
mod files;
mod fresh;
mod grow_paths;
mod guest_image;
mod kernels;
mod leaks;
mod libtest;
mod links;
mod load;
mod manifest;
mod mdbook_test;
mod numbers;
mod output_table;
mod outputs;
mod page_report;
mod process;
mod programs;
#[cfg(test)]
mod selftest;
mod site_check;
mod site_server;
mod spread;
mod steps;
mod system;
mod tools;
mod valgrind;
#[path = "../../tests/support/vm/mod.rs"]
mod vm;
mod vm_assets;
mod vm_suite;

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
  test [STEP...]  run every check: cargo test, clippy, mdbook build, mdbook test,
                  the link check, the headless Chromium check and the rest; with
                  STEP names (`mdbook-test`, `leaks`, ...), only the steps named
  bench           run the book's benches and redraw src/charts/*.svg and
                  benches/results/*; `bench --quick` checks that pipeline fast,
                  writing only under target/xtask/bench-quick/; `bench --redraw`
                  redraws them from the last full run without measuring;
                  `bench --numbers` rewrites the quoted numbers from the
                  committed CSV files; `bench --repeat N` makes N full runs
                  and writes how far they disagree to benches/results/spread.md
  outputs [NAME...]
                  run the commands of xtask/src/output_table/ (all, or those named)
                  and write their output to examples/output/<name>.txt
  vm-setup        fetch Debian's kernels and busybox, build the guests' initramfs
                  images (and install QEMU and stress-ng as root); prints the
                  DMB_VM_ASSETS line that lets `cargo test` boot guests
  kernels         run the OS tests on the host kernel and in a QEMU guest of
                  each Debian kernel; write tests/results/kernel-grow-paths.md
  browser PAGE... load the pages named (`print.html`) of the last build in
                  headless Chromium, as the browser check does, with timings
  vm-run R CMD    boot the guest of kernel R (e.g. 6.12), run CMD in the
                  repository there, print its output";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = project_root();
    let result = match args.first().map(String::as_str) {
        Some("install-tools") => tools::install_all()
            .and_then(|_| axe::install())
            .map(|_| ()),
        Some("build") => build(&root),
        Some("serve") => serve(&root),
        Some("test") => steps::test_all(&root, &args[1..]),
        Some("bench") => bench::bench(&root, &args[1..]),
        Some("outputs") => outputs::write_outputs(&root, &args[1..]),
        Some("vm-setup") => vm_setup(),
        Some("kernels") => kernels::kernels(&root),
        Some("vm-run") => kernels::vm_run(&root, &args[1..]),
        Some("browser") => browser_pages(&root, &args[1..]),
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

fn vm_setup() -> Result<()> {
    let assets = vm_assets::setup()?;
    for k in &assets.kernels {
        eprintln!(
            "xtask: guest kernel {} ({:?} boot) from {} {}",
            k.release, k.boot, k.package, k.version
        );
    }
    println!(
        "export {}={}",
        vm::ASSETS_ENV,
        vm_assets::assets_file()?.display()
    );
    Ok(())
}

/// `cargo xtask browser PAGE...`: the browser check on some pages only.
fn browser_pages(root: &Path, pages: &[String]) -> Result<()> {
    if pages.is_empty() {
        return Err("usage: cargo xtask browser PAGE... (pages of book/, e.g. print.html)".into());
    }
    let pages: Vec<&str> = pages.iter().map(String::as_str).collect();
    let summary = site_check::check(
        &browser::chromium()?,
        root,
        Some(&pages),
        site_check::BOTH_WINDOWS,
        None,
    )?;
    eprintln!("xtask: {} pages passed the browser check", summary.pages);
    Ok(())
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
