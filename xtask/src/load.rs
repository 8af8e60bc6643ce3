//! What the browser check loads: a page, in a theme, in a window; and the
//! chapter a built page comes from, for messages.

use std::path::{Path, PathBuf};

/// The window a page is loaded in: a laptop's, or a phone's (390 px is the
/// CSS width of a current mid-size phone).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Viewport {
    Desktop,
    Phone,
}

impl Viewport {
    pub fn size(self) -> (u32, u32) {
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
    /// Click every Rust block's copy button, and search. Both work the same
    /// in any theme and window, and both take a while on this book (whole
    /// programs in every block, and a search index of several MiB), so each
    /// page does them once.
    pub copy: bool,
    pub search: bool,
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
