//! axe-core, the accessibility engine the browser check runs on every page:
//! pinned in `xtask/npm-tools.txt` and installed with npm into the same
//! per-user folder as the cargo tools (`<tools dir>/axe-core-<version>`).

use std::path::PathBuf;
use std::process::Command;

use crate::{run, Result};

const PINS: &str = include_str!("../npm-tools.txt");

/// The pinned version of `name` in `xtask/npm-tools.txt`.
fn pinned(name: &str) -> &'static str {
    PINS.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .map(str::trim)
        .unwrap_or_else(|| panic!("xtask/npm-tools.txt pins no `{name}`"))
}

pub fn version() -> &'static str {
    pinned("axe-core")
}

/// `axe.min.js` of the pinned axe-core, whether or not it is installed.
pub fn script() -> Result<PathBuf> {
    Ok(crate::tools::tools_dir()?
        .join(format!("axe-core-{}", version()))
        .join("node_modules/axe-core/axe.min.js"))
}

/// Installs the pinned axe-core if it is missing (npm is found, or installed
/// as the other system programs are), and returns its `axe.min.js`.
pub fn install() -> Result<PathBuf> {
    let script = script()?;
    if script.is_file() {
        return Ok(script);
    }
    let npm = crate::system::require(&["npm"], "npm", "installing axe-core (the browser check)")?;
    let root = crate::tools::tools_dir()?.join(format!("axe-core-{}", version()));
    // Into a scratch folder first, so an interrupted install is never taken
    // for a finished one.
    let partial = root.with_file_name(format!("axe-core-{}.partial", version()));
    if partial.exists() {
        std::fs::remove_dir_all(&partial)?;
    }
    std::fs::create_dir_all(&partial)?;
    eprintln!(
        "xtask: installing axe-core {} into {} (npm)",
        version(),
        root.display()
    );
    run(
        Command::new(npm)
            .args([
                "install",
                "--no-save",
                "--no-audit",
                "--no-fund",
                "--ignore-scripts",
                "--prefix",
            ])
            .arg(&partial)
            .arg(format!("axe-core@{}", version())),
        &format!("npm install axe-core@{}", version()),
    )?;
    if root.exists() {
        std::fs::remove_dir_all(&root)?;
    }
    std::fs::rename(&partial, &root)?;
    if !script.is_file() {
        return Err(format!(
            "npm installed axe-core but there is no {}",
            script.display()
        )
        .into());
    }
    Ok(script)
}

#[cfg(test)]
mod tests {
    #[test]
    fn axe_core_is_pinned_to_an_exact_4_x_version() {
        let parts: Vec<&str> = super::version().split('.').collect();
        assert_eq!(parts.len(), 3, "{}", super::version());
        assert_eq!(parts[0], "4");
        assert!(parts.iter().all(|p| p.parse::<u32>().is_ok()));
    }
}
