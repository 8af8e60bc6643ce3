//! The pinned book tools (`xtask/tools.txt`) and the per-user folder they live in.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{run, Result};

const PINS: &str = include_str!("../tools.txt");

/// The folder under the user's cache directory that holds one subfolder per
/// `name-version`, shared by every clone of the book.
const CACHE_SUBDIR: &str = "dynamic-memory-book/tools";

#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    pub name: &'static str,
    pub version: &'static str,
}

impl Tool {
    /// `<tools dir>/<name>-<version>`: `cargo install --root` writes `bin/` under it.
    pub fn root(&self) -> Result<PathBuf> {
        Ok(tools_dir()?.join(format!("{}-{}", self.name, self.version)))
    }

    pub fn binary(&self) -> Result<PathBuf> {
        let exe = format!("{}{}", self.name, std::env::consts::EXE_SUFFIX);
        Ok(self.root()?.join("bin").join(exe))
    }
}

pub fn pinned() -> Vec<Tool> {
    PINS.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (name, version) = l
                .split_once(' ')
                .expect("xtask/tools.txt: each line is `name version`");
            Tool {
                name,
                version: version.trim(),
            }
        })
        .collect()
}

pub fn tool(name: &str) -> Tool {
    pinned()
        .into_iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("xtask/tools.txt pins no `{name}`"))
}

/// The user's cache directory, as `dirs::cache_dir` would find it, without the
/// dependency: `$XDG_CACHE_HOME` or `~/.cache` on Linux, `~/Library/Caches` on
/// macOS, `%LOCALAPPDATA%` on Windows. `DMB_TOOLS_DIR` overrides it.
pub fn tools_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("DMB_TOOLS_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let cache = if cfg!(windows) {
        std::env::var_os("LOCALAPPDATA").map(PathBuf::from)
    } else if cfg!(target_os = "macos") {
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join("Library/Caches"))
    } else {
        std::env::var_os("XDG_CACHE_HOME")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
    };
    let cache = cache.ok_or("cannot find a cache directory: set HOME or DMB_TOOLS_DIR")?;
    Ok(cache.join(CACHE_SUBDIR))
}

/// Installs every pinned tool that is missing. Returns the `bin` folders, to be
/// put in front of PATH for the commands this process starts (and only those).
///
/// The tools share most of their dependencies (mdBook's own crates,
/// pulldown-cmark, clap, serde), so they build in one folder, where cargo
/// reuses what their lock files agree on; it is removed once every tool is
/// in place. They build at opt-level 1: a book this size renders in about a
/// second either way, and their build is a quarter of a cold `cargo xtask
/// test`.
pub fn install_all() -> Result<Vec<PathBuf>> {
    let mut bins = Vec::new();
    // Per process: two clones installing at once must not share it.
    let build_dir = tools_dir()?.join(format!("build-{}", std::process::id()));
    for tool in pinned() {
        let binary = tool.binary()?;
        if !binary.exists() {
            eprintln!(
                "xtask: installing {} {} into {}",
                tool.name,
                tool.version,
                tool.root()?.display()
            );
            let mut cmd = Command::new(cargo());
            cmd.args(["install", "--locked", "--quiet", "--root"])
                .arg(tool.root()?)
                .arg("--target-dir")
                .arg(&build_dir)
                .args([tool.name, "--version", tool.version])
                .env("CARGO_PROFILE_RELEASE_OPT_LEVEL", "1");
            run(&mut cmd, &format!("install {} {}", tool.name, tool.version))?;
        }
        bins.push(
            binary
                .parent()
                .expect("bin/ holds the binary")
                .to_path_buf(),
        );
    }
    if build_dir.exists() {
        std::fs::remove_dir_all(&build_dir)
            .map_err(|e| format!("remove {}: {e}", build_dir.display()))?;
    }
    Ok(bins)
}

/// PATH with the tools' `bin` folders first: mdBook finds its preprocessors
/// (`mdbook-mermaid`) and renderers (`mdbook-linkcheck2`) by command name.
pub fn path_with(bins: &[PathBuf]) -> Result<OsString> {
    let old = std::env::var_os("PATH").unwrap_or_default();
    let all = bins
        .iter()
        .cloned()
        .chain(std::env::split_paths(&old))
        .collect::<Vec<_>>();
    std::env::join_paths(all).map_err(|e| format!("cannot build PATH: {e}").into())
}

/// A `mdbook` command that can find the pinned preprocessors and renderers.
pub fn mdbook(bins: &[PathBuf], book_root: &Path) -> Result<Command> {
    let mut cmd = Command::new(tool("mdbook").binary()?);
    cmd.env("PATH", path_with(bins)?).current_dir(book_root);
    Ok(cmd)
}

pub fn cargo() -> OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}
