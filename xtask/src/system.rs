//! System programs the checks need (Chromium, valgrind, npm): found on PATH,
//! or installed with apt-get when running as root (CI, or a fresh Debian or
//! Ubuntu machine), saying what it installs. A normal user gets the command.

use std::path::PathBuf;
use std::process::Command;

use crate::{run, Result};

/// The first of `names` on PATH; otherwise, as root, `apt-get install
/// package`; otherwise an error with the install command.
pub fn require(names: &[&str], package: &str, needed_for: &str) -> Result<PathBuf> {
    if let Some(found) = find_in_path(names) {
        return Ok(found);
    }
    let install = format!("apt-get install -y --no-install-recommends {package}");
    if !is_root() || find_in_path(&["apt-get"]).is_none() {
        return Err(format!(
            "{needed_for} needs {}. Install it with `sudo {install}` (Debian/Ubuntu)",
            names[0]
        )
        .into());
    }
    eprintln!(
        "xtask: {needed_for} needs {}, which is missing; installing Debian's `{package}` \
         (running as root): apt-get update && {install}",
        names[0]
    );
    run(Command::new("apt-get").arg("update"), "apt-get update")?;
    run(
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends", package])
            .env("DEBIAN_FRONTEND", "noninteractive"),
        &format!("apt-get install {package}"),
    )?;
    find_in_path(names)
        .ok_or_else(|| format!("apt-get installed `{package}` but no {}", names[0]).into())
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
