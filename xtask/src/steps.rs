//! `cargo xtask test`: every check of the book, in order, each reporting its
//! own pass or fail, then one summary line.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::{blocks, browser, links, run, run_recorded, tools, Result};

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

    fn mdbook(&self) -> Result<Command> {
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
    rust_blocks: usize,
    skeptic: usize,
    mdbook_test: usize,
    diagrams: usize,
    pages: usize,
    links: usize,
}

type Step = fn(&Book, &mut Tally) -> Result<()>;

const STEPS: [(&str, Step); 8] = [
    ("cargo test", cargo_test),
    ("cargo clippy", clippy),
    ("mdbook build", mdbook_build),
    ("mdbook test", mdbook_test),
    ("link check", link_check),
    ("browser check", browser_check),
    ("valgrind", valgrind_step),
    ("bench pipeline (quick)", crate::bench::quick_step),
];

pub fn test_all(root: &Path) -> Result<()> {
    // Two runs at once would share target/xtask's scratch folders: take turns.
    std::fs::create_dir_all(root.join("target/xtask"))?;
    let lock = std::fs::File::create(root.join("target/xtask/test.lock"))?;
    if lock.try_lock().is_err() {
        eprintln!("xtask: another `cargo xtask test` is running here; waiting for it");
        lock.lock()?;
    }
    let book = Book::new(root)?;
    let mut tally = Tally::default();
    let started = Instant::now();
    for (i, (name, step)) in STEPS.iter().enumerate() {
        eprintln!("\n==> step {}/{}: {name}", i + 1, STEPS.len());
        let t = Instant::now();
        if let Err(e) = step(&book, &mut tally) {
            eprintln!("==> step {}/{}: {name}: FAIL\n{e}", i + 1, STEPS.len());
            for (name, _) in &STEPS[i + 1..] {
                eprintln!("==> {name}: not run");
            }
            println!("steps: {} passed, 1 failed", i);
            return Err(format!("step `{name}` failed: {e}").into());
        }
        eprintln!(
            "==> step {}/{}: {name}: PASS ({:.0} s)",
            i + 1,
            STEPS.len(),
            t.elapsed().as_secs_f64()
        );
    }
    println!(
        "book: {} snippets tested by skeptic, {} by mdbook test, {} diagrams rendered, {} pages checked, 0 broken links (of {})",
        tally.skeptic, tally.mdbook_test, tally.diagrams, tally.pages, tally.links
    );
    println!("xtask test took {:.0} s", started.elapsed().as_secs_f64());
    println!("steps: {} passed, 0 failed", STEPS.len());
    Ok(())
}

/// Step 1: every test of the workspace: the examples' own tests, `tests/`
/// (skeptic's snippet tests and the expansion-vs-mdBook test) and xtask's.
fn cargo_test(book: &Book, tally: &mut Tally) -> Result<()> {
    compile(book)?;
    let mdbook = tools::tool("mdbook").binary()?;
    let out = run_recorded(
        book.cargo()
            .args(["test", "--workspace"])
            .env("DMB_MDBOOK", &mdbook)
            .env("DMB_CHROMIUM", &book.chromium)
            .env("PATH", tools::path_with(&book.bins)?),
        book.quiet,
    )?;
    if !out.success {
        return Err(out.error_lines().into());
    }
    // Skeptic names its tests `<chapter>_sect_<heading>_line_<n>` or `<chapter>_line_<n>`.
    tally.skeptic = out
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("test ")?.strip_suffix(" ... ok"))
        .filter(|name| is_skeptic_test(name))
        .count();
    if tally.skeptic == 0 {
        return Err("skeptic ran no snippet test".into());
    }
    Ok(())
}

/// Step 1's first half: build every target, so that a broken example or a
/// broken include (build.rs) fails here, with the compiler's message.
pub fn compile(book: &Book) -> Result<()> {
    let out = run_recorded(
        book.cargo().args(["test", "--workspace", "--no-run"]),
        book.quiet,
    )?;
    ok_or_errors(&out)
}

fn is_skeptic_test(name: &str) -> bool {
    name.rsplit_once("_line_")
        .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

fn clippy(book: &Book, _: &mut Tally) -> Result<()> {
    let out = run_recorded(
        book.cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
        book.quiet,
    )?;
    ok_or_errors(&out)
}

/// Step 3: the site, into `book/`. mdBook only logs a failed include and goes
/// on, so any ERROR line fails the step.
pub fn mdbook_build(book: &Book, _: &mut Tally) -> Result<()> {
    let out = run_recorded(book.mdbook()?.arg("build"), book.quiet)?;
    ok_or_errors(&out)
}

fn ok_or_errors(out: &crate::process::Recorded) -> Result<()> {
    let errors = out.error_lines();
    if !out.success || !errors.is_empty() {
        return Err(if errors.is_empty() {
            "failed (see the output above)".to_owned()
        } else {
            errors
        }
        .into());
    }
    Ok(())
}

/// Step 4: `mdbook test` with a clean `-L` folder, and a count of the blocks
/// rustdoc ran held against the Rust blocks of mdBook's own expansion.
fn mdbook_test(book: &Book, tally: &mut Tally) -> Result<()> {
    let (deps, externs) = library_dir(book)?;

    // mdBook's expansion of every chapter, for counting.
    let expanded = book.target.join("xtask/book-markdown");
    let out = run_recorded(
        book.mdbook()?
            .args(["build", "--dest-dir"])
            .arg(&expanded)
            .env("MDBOOK_OUTPUT", r#"{"markdown":{}}"#),
        true,
    )?;
    ok_or_errors(&out)?;
    let chapters = blocks::count_dir(&expanded)?;
    tally.rust_blocks = chapters.iter().map(|c| c.rust).sum();

    // mdBook runs `rustdoc` by name and prints nothing on success, so a shim
    // first in PATH records what each rustdoc run reported.
    let shim = RustdocShim::new(&book.target.join("xtask/rustdoc-shim"), &externs)?;
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
    ok_or_errors(&out)?;
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
    if tally.skeptic != tally.rust_blocks {
        problems.push(format!(
            "the book has {} Rust blocks but skeptic ran {}",
            tally.rust_blocks, tally.skeptic
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n").into())
    }
}

/// Builds the package's own dependencies (and nothing else) for the host
/// triple, so `target/xtask/mdbook-deps/<host>/debug/deps` holds exactly one
/// rlib per crate: no build-script or dev-dependency builds to confuse rustc
/// (E0464, "multiple candidates").
fn library_dir(book: &Book) -> Result<(PathBuf, Vec<(String, PathBuf)>)> {
    let host = host_triple()?;
    let target_dir = book.target.join("xtask/mdbook-deps");
    let direct = direct_dependencies(&book.root.join("Cargo.toml"))?;
    let mut cmd = book.cargo();
    cmd.args(["build", "--quiet", "--target", &host, "--target-dir"])
        .arg(&target_dir);
    for dep in &direct {
        cmd.args(["--package", dep]);
    }
    run(&mut cmd, "build the -L dependencies")?;
    let deps = target_dir.join(&host).join("debug/deps");
    let mut rlibs = std::collections::BTreeMap::<String, Vec<String>>::new();
    for entry in std::fs::read_dir(&deps)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if let Some(stem) = name
            .strip_prefix("lib")
            .and_then(|n| n.strip_suffix(".rlib"))
        {
            let krate = stem.rsplit_once('-').map_or(stem, |(k, _)| k).to_owned();
            rlibs.entry(krate).or_default().push(name);
        }
    }
    let doubles: Vec<String> = rlibs
        .iter()
        .filter(|(_, files)| files.len() > 1)
        .map(|(krate, files)| format!("{krate}: {}", files.join(", ")))
        .collect();
    if !doubles.is_empty() {
        return Err(format!(
            "{} holds more than one rlib per crate:\n{}",
            deps.display(),
            doubles.join("\n")
        )
        .into());
    }
    // `extern crate libc;` is still ambiguous with `-L` alone (E0464): the
    // toolchain's sysroot ships a `liblibc-*.rlib` of its own. So rustdoc
    // gets each direct dependency by `--extern`, as cargo passes them.
    let mut externs = Vec::new();
    for dep in direct {
        let krate = dep.replace('-', "_");
        let file = rlibs
            .get(&krate)
            .and_then(|files| files.first())
            .ok_or_else(|| format!("{}: no rlib for `{dep}`", deps.display()))?;
        externs.push((krate, deps.join(file)));
    }
    Ok((deps, externs))
}

/// The names under `[dependencies]` (not target-specific, dev or build ones).
fn direct_dependencies(manifest: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(manifest)?;
    let mut in_deps = false;
    let mut deps = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_deps = line == "[dependencies]";
        } else if in_deps {
            if let Some((name, _)) = line.split_once('=') {
                if !line.starts_with('#') {
                    deps.push(name.trim().to_owned());
                }
            }
        }
    }
    Ok(deps)
}

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
    fn new(dir: &Path, externs: &[(String, PathBuf)]) -> Result<RustdocShim> {
        std::fs::create_dir_all(dir)?;
        let log = dir.join("runs.log");
        std::fs::write(&log, "")?;
        let script = dir.join("rustdoc");
        let extern_args: String = externs
            .iter()
            .map(|(krate, rlib)| format!(" --extern '{krate}={}'", rlib.display()))
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

/// `count_before("ok. 3 passed; 0 failed", " passed") == 3`
fn count_before(text: &str, label: &str) -> usize {
    text.find(label)
        .and_then(|at| text[..at].rsplit(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Step 5: mdbook-linkcheck2 over a scratch build (missing files), then every
/// `#fragment` against the ids of the built site (linkcheck2 skips those).
pub fn link_check(book: &Book, tally: &mut Tally) -> Result<()> {
    let scratch = book.target.join("xtask/book-linkcheck");
    let out = run_recorded(
        book.mdbook()?
            .args(["build", "--dest-dir"])
            .arg(&scratch)
            .env("MDBOOK_OUTPUT__LINKCHECK2", r#"{"follow-web-links":false}"#),
        book.quiet,
    )?;
    ok_or_errors(&out)?;
    let (checked, broken) = links::check_fragments(&book.site())?;
    tally.links = checked;
    if broken.is_empty() {
        return Ok(());
    }
    Err(broken
        .iter()
        .map(|b| {
            format!(
                "{}: link `{}`: {}",
                browser::source_of(&b.page),
                b.href,
                b.why
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
        .into())
}

/// Step 6: every page in headless Chromium (`site_check.rs`).
pub fn browser_check(book: &Book, tally: &mut Tally) -> Result<()> {
    let screenshots = book.target.join("xtask/screenshots");
    let summary = crate::site_check::check(&book.chromium, &book.root, None, Some(&screenshots))?;
    tally.pages = summary.pages;
    tally.diagrams = summary.diagrams;
    Ok(())
}

/// Step 7: valgrind memcheck over the examples that handle raw mappings.
fn valgrind_step(book: &Book, _: &mut Tally) -> Result<()> {
    crate::valgrind::memcheck(book).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_skeptic_test_names() {
        assert!(is_skeptic_test("primer_sect_reserve_line_42"));
        assert!(is_skeptic_test("introduction_line_7"));
        assert!(!is_skeptic_test("tests::rss_rises_by_touched_size"));
        assert!(!is_skeptic_test("baseline_line_"));
    }

    #[test]
    fn reads_rustdoc_result_counts() {
        let line =
            "ok. 3 passed; 0 failed; 2 ignored; 0 measured; 0 filtered out; finished in 0.4s";
        assert_eq!(count_before(line, " passed"), 3);
        assert_eq!(count_before(line, " ignored"), 2);
    }
}
