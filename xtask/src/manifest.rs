//! The book package's dependencies, as `cargo metadata` reports them: the
//! direct ones for `mdbook test`'s `--extern` flags, and each one's features
//! for the copy-paste check's fresh crates.

use std::path::Path;
use std::process::Command;

use serde::Deserialize;

use crate::{tools, Result};

/// One `[dependencies]` entry (or `[target.'cfg(..)'.dependencies]`).
#[derive(Deserialize, Debug, Clone)]
pub struct Dependency {
    pub name: String,
    /// The version requirement, as cargo normalises it (`^0.2`).
    pub req: String,
    /// `None` for a normal dependency, else `"dev"` or `"build"`.
    pub kind: Option<String>,
    /// The platform, e.g. `cfg(windows)`, for a target-specific dependency.
    pub target: Option<String>,
    pub features: Vec<String>,
    pub uses_default_features: bool,
}

#[derive(Deserialize)]
struct Metadata {
    packages: Vec<Package>,
}

#[derive(Deserialize)]
struct Package {
    name: String,
    dependencies: Vec<Dependency>,
}

/// Every dependency that the package at `root` declares, of any kind.
pub fn dependencies(root: &Path) -> Result<Vec<Dependency>> {
    let out = Command::new(tools::cargo())
        .current_dir(root)
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--offline",
        ])
        .output()
        .map_err(|e| format!("cannot run cargo metadata: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )
        .into());
    }
    let metadata: Metadata = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("cargo metadata printed unexpected JSON: {e}"))?;
    let package = metadata
        .packages
        .into_iter()
        .find(|p| p.name == "dynamic-memory-book")
        .ok_or("cargo metadata lists no `dynamic-memory-book` package")?;
    Ok(package.dependencies)
}

/// The names under `[dependencies]` (not target-specific, dev or build ones).
pub fn direct_dependencies(root: &Path) -> Result<Vec<String>> {
    Ok(dependencies(root)?
        .into_iter()
        .filter(|d| d.kind.is_none() && d.target.is_none())
        .map(|d| d.name)
        .collect())
}
