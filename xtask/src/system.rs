//! System programs and files the checks need (Chromium, valgrind, npm, QEMU):
//! found on PATH, or installed with apt-get when running as root (CI, or a
//! fresh Debian or Ubuntu machine), saying what it installs. A normal user
//! gets the command.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{run, Result};

/// The first of `names` on PATH; otherwise, as root, `apt-get install
/// package`; otherwise an error with the install command.
pub fn require(names: &[&str], package: &str, needed_for: &str) -> Result<PathBuf> {
    require_with(|| find_in_path(names), names[0], package, needed_for)
}

/// A file a package ships (`/usr/share/qemu/qboot.rom`), installed like
/// [`require`] installs a program.
pub fn require_file(path: &Path, package: &str, needed_for: &str) -> Result<PathBuf> {
    let found = || path.is_file().then(|| path.to_path_buf());
    require_with(found, &path.display().to_string(), package, needed_for)
}

fn require_with(
    find: impl Fn() -> Option<PathBuf>,
    what: &str,
    package: &str,
    needed_for: &str,
) -> Result<PathBuf> {
    if let Some(found) = find() {
        return Ok(found);
    }
    let install = format!("apt-get install -y --no-install-recommends {package}");
    if !is_root() || find_in_path(&["apt-get"]).is_none() {
        return Err(format!(
            "{needed_for} needs {what}. Install it with `sudo {install}` (Debian/Ubuntu)"
        )
        .into());
    }
    eprintln!(
        "xtask: {needed_for} needs {what}, which is missing; installing Debian's `{package}` \
         (running as root): apt-get update && {install}"
    );
    run(Command::new("apt-get").arg("update"), "apt-get update")?;
    run(
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends", package])
            .env("DEBIAN_FRONTEND", "noninteractive"),
        &format!("apt-get install {package}"),
    )?;
    find().ok_or_else(|| format!("apt-get installed `{package}` but no {what}").into())
}

fn find_in_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
        .find(|p| p.is_file())
}

pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}
