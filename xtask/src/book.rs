//! The step context: where the book is, the tools to check it with, and the
//! counts each step adds to the summary line. Every step takes a `&Book` and
//! a `&mut Tally`, so this file sits below all of them.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{browser, tools, Result};

/// What the steps share: where the book is, and the tools to check it with.
pub struct Book {
    pub root: PathBuf,
    pub bins: Vec<PathBuf>,
    pub chromium: PathBuf,
    /// Scratch space for the xtask's own builds (`<root>/target`).
    pub target: PathBuf,
    /// Echo nothing of the commands run (the self-tests' copies).
    pub quiet: bool,
    /// Cargo's target directory. The xtask's self-tests share one between
    /// their copies of the book, so each compiles the dependencies once.
    pub cargo_target: PathBuf,
}

impl Book {
    pub fn new(root: &Path) -> Result<Book> {
        Ok(Book {
            root: root.to_path_buf(),
            bins: tools::install_all()?,
            chromium: browser::chromium()?,
            target: root.join("target"),
            cargo_target: root.join("target"),
            quiet: false,
        })
    }

    pub fn cargo(&self) -> Command {
        let mut cmd = Command::new(tools::cargo());
        cmd.current_dir(&self.root)
            .arg("--color=never")
            .env("CARGO_TARGET_DIR", &self.cargo_target);
        cmd
    }

    pub fn mdbook(&self) -> Result<Command> {
        tools::mdbook(&self.bins, &self.root)
    }

    /// The built site (mdBook's `build-dir`, `book/`).
    pub fn site(&self) -> PathBuf {
        self.root.join("book")
    }
}

/// The counts behind the summary line.
#[derive(Default, Debug)]
pub struct Tally {
    pub rust_blocks: usize,
    /// The distinct programs among `rust_blocks` (xtask/src/programs.rs).
    pub programs: usize,
    /// Skeptic's tests: one per program.
    pub skeptic: usize,
    pub mdbook_test: usize,
    pub diagrams: usize,
    pub pages: usize,
    pub links: usize,
    /// The most visible lines of any Rust block on a page.
    pub longest_block: usize,
    /// Output blocks of the chapters that include a generated file, of all
    /// their output blocks.
    pub outputs_generated: usize,
    pub output_blocks: usize,
    /// The kernels the matrix ran the OS tests on, and what they reported.
    pub kernels: crate::kernels::Summary,
    /// LISA's dynamic-memory cases in a QEMU guest (`vm suite`).
    pub vm_suite: crate::kernels::Counts,
}
