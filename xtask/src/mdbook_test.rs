//! The `mdbook test` step: rustdoc over every chapter with a clean `-L`
//! folder and an `--extern` for each direct dependency, and a count of the
//! blocks rustdoc ran held against the Rust blocks of mdBook's own expansion.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;

use crate::book::{Book, Tally};
use crate::libtest::count_before;
use crate::{blocks, manifest, run_recorded, tools, Result};

/// `mdbook test` with a clean `-L` folder, and a count of the blocks rustdoc
/// ran held against the Rust blocks of mdBook's own expansion.
pub fn mdbook_test(book: &Book, tally: &mut Tally) -> Result<()> {
    let (deps, externs) = library_dir(book)?;

    let expanded = expanded_markdown(book)?;
    let chapters = blocks::count_dir(&expanded)?;
    tally.rust_blocks = chapters.iter().map(|c| c.rust).sum();

    // mdBook runs `rustdoc` by name and prints nothing on success, so a shim
    // first in PATH records what each rustdoc run reported.
    // Proc macros (wasmtime's serde_derive) are built for the host, outside
    // the `--target` folder: rustdoc needs that folder too.
    let host_deps = deps.ancestors().nth(3).map(|d| d.join("debug/deps"));
    let shim = RustdocShim::new(
        &book.target.join("xtask/rustdoc-shim"),
        &externs,
        host_deps.as_deref(),
    )?;
    let out = run_recorded(
        book.mdbook()?
            .arg("test")
            .arg("-L")
            .arg(&deps)
            .env("PATH", shim.path(&book.bins)?)
            .env("DMB_REAL_RUSTDOC", real_rustdoc()?)
            .env("DMB_RUSTDOC_LOG", &shim.log),
        book.quiet,
    )?;
    out.ok_or_errors()?;
    let ran = shim.results()?;
    let mut problems = Vec::new();
    for chapter in &chapters {
        let got = ran.iter().find(|(c, _, _)| *c == chapter.chapter);
        match got {
            Some((_, passed, ignored)) if *passed != chapter.rust || *ignored != 0 => problems
                .push(format!(
                    "src/{}: {} Rust blocks, but rustdoc passed {passed} and ignored {ignored}",
                    chapter.chapter.display(),
                    chapter.rust
                )),
            Some(_) => {}
            None if chapter.rust > 0 => problems.push(format!(
                "src/{}: {} Rust blocks, but mdbook test never ran rustdoc on it",
                chapter.chapter.display(),
                chapter.rust
            )),
            None => {}
        }
    }
    tally.mdbook_test = ran.iter().map(|(_, passed, _)| passed).sum();
    // Step 1 counts skeptic's tests, one per program (xtask/src/programs.rs);
    // `cargo xtask test mdbook-test` alone has none.
    let programs: std::collections::BTreeSet<&String> =
        chapters.iter().flat_map(|c| &c.programs).collect();
    tally.programs = programs.len();
    if tally.skeptic == 0 {
        eprintln!("mdbook test: skeptic's count not compared (the cargo test step did not run)");
    } else if tally.skeptic != tally.programs {
        problems.push(format!(
            "the book's {} Rust blocks are {} programs, but skeptic ran {} (build.rs hands \
             skeptic each program once; a program shown both in a runtime chapter and \
             elsewhere is tested once by each package)",
            tally.rust_blocks, tally.programs, tally.skeptic
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n").into())
    }
}

/// mdBook's expansion of every chapter (its markdown renderer), written to
/// `target/xtask/book-markdown`: the text rustdoc tests and readers see.
pub fn expanded_markdown(book: &Book) -> Result<PathBuf> {
    let expanded = book.target.join("xtask/book-markdown");
    let out = run_recorded(
        book.mdbook()?
            .args(["build", "--dest-dir"])
            .arg(&expanded)
            .env("MDBOOK_OUTPUT", r#"{"markdown":{}}"#),
        true,
    )?;
    out.ok_or_errors()?;
    Ok(expanded)
}

/// The part of a cargo `--message-format=json` line this file reads.
#[derive(Deserialize)]
struct Message {
    reason: String,
    #[serde(default)]
    target: Option<ArtifactTarget>,
    #[serde(default)]
    filenames: Vec<PathBuf>,
}

#[derive(Deserialize)]
struct ArtifactTarget {
    /// The crate's name (`memmap2`, `libc`), underscores for hyphens.
    name: String,
    kind: Vec<String>,
}

/// Builds the package's own dependencies (and nothing else) for the host
/// triple into `target/xtask/mdbook-deps`, so its `deps` folder holds no
/// build-script or dev-dependency builds to confuse rustc (E0464, "multiple
/// candidates"). Returns that folder and, from cargo's own build messages,
/// the rlib of each direct dependency.
fn library_dir(book: &Book) -> Result<(PathBuf, Vec<(String, PathBuf)>)> {
    let host = host_triple()?;
    let target_dir = book.target.join("xtask/mdbook-deps");
    let mut direct = manifest::direct_dependencies(&book.root)?;
    // The runtime chapter's snippets use the `runtime` member (Part I's
    // memories as a library) and wasmtime; the member builds both.
    direct.extend(RUNTIME_CRATES.map(str::to_owned));
    // Two builds: cargo matches `--package libc` only against the book
    // package's graph when a member (`runtime`) is named with it.
    let book_packages: Vec<&str> = direct
        .iter()
        .map(String::as_str)
        .filter(|d| !RUNTIME_CRATES.contains(d))
        .collect();
    let mut rlibs: Vec<(String, PathBuf)> = Vec::new();
    for packages in [book_packages, vec!["runtime"]] {
        // A crate both builds report (libc) keeps the first build's rlib.
        let known: Vec<String> = rlibs.iter().map(|(name, _)| name.clone()).collect();
        let mut cmd = book.cargo();
        cmd.args([
            "build",
            "--quiet",
            "--message-format=json-render-diagnostics",
            "--target",
            &host,
            "--target-dir",
        ])
        .arg(&target_dir);
        for package in packages {
            cmd.args(["--package", package]);
        }
        let out = run_recorded(&mut cmd, true)?;
        if !out.success {
            return Err(format!("build the -L dependencies:\n{}", out.error_lines()).into());
        }
        for line in out.stdout.lines().filter(|l| l.starts_with('{')) {
            let message: Message = serde_json::from_str(line)
                .map_err(|e| format!("cargo printed a message this xtask cannot read: {e}"))?;
            let Some(target) = message.target else {
                continue;
            };
            if message.reason != "compiler-artifact"
                || !target.kind.iter().any(|k| k.contains("lib"))
            {
                continue;
            }
            rlibs.extend(
                message
                    .filenames
                    .into_iter()
                    .filter(|f| f.extension().is_some_and(|e| e == "rlib"))
                    .filter(|_| !known.contains(&target.name))
                    .map(|f| (target.name.clone(), f)),
            );
        }
    }
    let deps = target_dir.join(&host).join("debug/deps");
    // `extern crate libc;` is still ambiguous with `-L` alone (E0464): the
    // toolchain's sysroot ships a `liblibc-*.rlib` of its own. So rustdoc
    // gets each direct dependency by `--extern`, as cargo passes them.
    let mut externs = Vec::new();
    for dep in direct {
        let krate = dep.replace('-', "_");
        let found: Vec<&PathBuf> = rlibs
            .iter()
            .filter(|(name, _)| *name == krate)
            .map(|(_, file)| file)
            .collect();
        match found[..] {
            [rlib] => externs.push((krate, rlib.clone())),
            [] => return Err(format!("cargo built no rlib for `{dep}`").into()),
            _ => {
                return Err(format!(
                    "cargo built more than one rlib for `{dep}`: {}",
                    found
                        .iter()
                        .map(|f| f.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
                .into())
            }
        }
    }
    Ok((deps, externs))
}

/// The crates the runtime chapter's snippets name (`extern crate`), built
/// by building the `runtime` workspace member.
const RUNTIME_CRATES: [&str; 2] = ["runtime", "wasmtime"];

fn host_triple() -> Result<String> {
    let out = Command::new("rustc").arg("-vV").output()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(str::to_owned)
        .ok_or_else(|| "`rustc -vV` printed no host".into())
}

fn real_rustdoc() -> Result<PathBuf> {
    let out = Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()?;
    let sysroot = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    Ok(Path::new(&sysroot)
        .join("bin")
        .join(format!("rustdoc{}", std::env::consts::EXE_SUFFIX)))
}

struct RustdocShim {
    dir: PathBuf,
    log: PathBuf,
}

impl RustdocShim {
    fn new(dir: &Path, externs: &[(String, PathBuf)], also: Option<&Path>) -> Result<RustdocShim> {
        std::fs::create_dir_all(dir)?;
        let log = dir.join("runs.log");
        std::fs::write(&log, "")?;
        let script = dir.join("rustdoc");
        let extern_args: String = externs
            .iter()
            .map(|(krate, rlib)| format!(" --extern '{krate}={}'", rlib.display()))
            .chain(also.map(|dir| format!(" -L 'dependency={}'", dir.display())))
            .collect();
        // mdBook calls `rustdoc <chapter.md> --test -L ...` from its temp folder.
        let script_text = format!(
            "#!/bin/sh\n\
             out=$(\"$DMB_REAL_RUSTDOC\" \"$@\"{extern_args} 2>&1); rc=$?\n\
             printf 'chapter %s\\n%s\\nexit %s\\n' \"$1\" \"$out\" \"$rc\" >> \"$DMB_RUSTDOC_LOG\"\n\
             printf '%s\\n' \"$out\"\n\
             exit $rc\n"
        );
        std::fs::write(&script, script_text)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;
        }
        Ok(RustdocShim {
            dir: dir.to_path_buf(),
            log,
        })
    }

    fn path(&self, bins: &[PathBuf]) -> Result<std::ffi::OsString> {
        let mut all = vec![self.dir.clone()];
        all.extend(bins.iter().cloned());
        tools::path_with(&all)
    }

    /// `(chapter, passed, ignored)` for each rustdoc run.
    fn results(&self) -> Result<Vec<(PathBuf, usize, usize)>> {
        let log = std::fs::read_to_string(&self.log)?;
        let mut runs = Vec::new();
        let mut current: Option<(PathBuf, usize, usize)> = None;
        for line in log.lines() {
            if let Some(chapter) = line.strip_prefix("chapter ") {
                runs.extend(current.take());
                current = Some((PathBuf::from(chapter), 0, 0));
            } else if let (Some(c), Some(rest)) =
                (current.as_mut(), line.strip_prefix("test result: "))
            {
                c.1 += count_before(rest, " passed");
                c.2 += count_before(rest, " ignored");
            }
        }
        runs.extend(current);
        Ok(runs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_cargo_artifact_message() {
        let line = r#"{"reason":"compiler-artifact","package_id":"registry+https://github.com/rust-lang/crates.io-index#libc@0.2.180","target":{"kind":["lib"],"crate_types":["lib"],"name":"libc","src_path":"/x/src/lib.rs"},"filenames":["/t/deps/liblibc-1.rlib","/t/deps/liblibc-1.rmeta"],"fresh":true}"#;
        let m: Message = serde_json::from_str(line).unwrap();
        assert_eq!(m.reason, "compiler-artifact");
        assert_eq!(m.target.unwrap().name, "libc");
        assert_eq!(m.filenames.len(), 2);
        let done: Message =
            serde_json::from_str(r#"{"reason":"build-finished","success":true}"#).unwrap();
        assert!(done.target.is_none());
    }
}
