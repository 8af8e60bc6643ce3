//! System programs the checks need (Chromium, valgrind): found on PATH, or
//! installed with apt-get when running as root in CI, as CI machines start
//! with only what the repository installs.

use std::path::PathBuf;
use std::process::Command;

use crate::{run, Result};

/// The first of `names` on PATH; otherwise, under `CI=true` as root,
/// `apt-get install package`; otherwise an error with the install command.
pub fn require(names: &[&str], package: &str, needed_for: &str) -> Result<PathBuf> {
    if let Some(found) = find_in_path(names) {
        return Ok(found);
    }
    let in_ci = std::env::var("CI").is_ok_and(|v| v == "true");
    if in_ci && is_root() {
        eprintln!(
            "xtask: {} is missing; installing Debian's `{package}` (CI=true, root)",
            names[0]
        );
        run(Command::new("apt-get").arg("update"), "apt-get update")?;
        run(
            Command::new("apt-get")
                .args(["install", "-y", "--no-install-recommends", package])
                .env("DEBIAN_FRONTEND", "noninteractive"),
            &format!("apt-get install {package}"),
        )?;
        return find_in_path(names)
            .ok_or_else(|| format!("apt-get installed `{package}` but no {}", names[0]).into());
    }
    Err(format!(
        "{needed_for} needs {}. Install it with `sudo apt-get install -y {package}` (Debian/Ubuntu)",
        names[0]
    )
    .into())
}

fn find_in_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
        .find(|p| p.is_file())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}
