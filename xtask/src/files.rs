//! Walking folders: the one place the xtask lists files.

use std::path::{Path, PathBuf};

use crate::Result;

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
