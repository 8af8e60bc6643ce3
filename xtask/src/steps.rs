//! `cargo xtask test`: every check of the book, in order, each reporting its
//! own pass or fail, then one summary line.

use std::path::Path;
use std::time::Instant;

use crate::book::{Book, Tally};
use crate::{
    bench, block_length, fresh, leaks, links, mdbook_test, outputs, run_recorded, tools, Result,
};

type Step = fn(&Book, &mut Tally) -> Result<()>;

/// The steps, in order. The last four hold the chapters and examples to the
/// book's rules: short blocks, generated output, examples that build alone,
/// nothing internal on the site.
const STEPS: [(&str, Step); 14] = [
    ("cargo test", cargo_test),
    ("kernel matrix", kernel_matrix),
    ("vm suite", crate::vm_suite::vm_suite),
    ("cargo clippy", clippy),
    ("mdbook build", mdbook_build),
    ("mdbook test", mdbook_test::mdbook_test),
    ("link check", link_check),
    ("browser check", browser_check),
    ("valgrind", valgrind_step),
    ("bench pipeline (quick)", bench_quick),
    ("block length", block_length::block_length),
    ("outputs", outputs::outputs_step),
    ("copy-paste", fresh::copy_paste),
    ("leaks", leaks::leak_check),
];

/// `cargo xtask test [STEP...]`: every step in order, or only those whose
/// name (lower case, `-` for spaces: `mdbook-test`, `block-length`) starts
/// with one of `only`. A step that reads `book/` reads the last build of it.
pub fn test_all(root: &Path, only: &[String]) -> Result<()> {
    let picked: Vec<&(&str, Step)> = STEPS
        .iter()
        .filter(|(name, _)| {
            only.is_empty() || only.iter().any(|o| slug(name).starts_with(o.as_str()))
        })
        .collect();
    if picked.is_empty() {
        let names: Vec<String> = STEPS.iter().map(|(name, _)| slug(name)).collect();
        return Err(format!(
            "no step matches {}; the steps are: {}",
            only.join(" "),
            names.join(", ")
        )
        .into());
    }
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
    let total = picked.len();
    for (i, (name, step)) in picked.iter().enumerate() {
        eprintln!("\n==> step {}/{total}: {name}", i + 1);
        let t = Instant::now();
        if let Err(e) = step(&book, &mut tally) {
            eprintln!("==> step {}/{total}: {name}: FAIL\n{e}", i + 1);
            for (name, _) in &picked[i + 1..] {
                eprintln!("==> {name}: not run");
            }
            println!("steps: {} passed, 1 failed", i);
            return Err(format!("step `{name}` failed: {e}").into());
        }
        eprintln!(
            "==> step {}/{total}: {name}: PASS ({:.0} s)",
            i + 1,
            t.elapsed().as_secs_f64()
        );
    }
    println!(
        "book: {} Rust blocks, {} programs tested by skeptic, {} blocks by mdbook test, {} diagrams rendered, {} pages checked, 0 broken links (of {}), longest block {} lines, outputs generated {} of {}",
        tally.rust_blocks,
        tally.skeptic,
        tally.mdbook_test,
        tally.diagrams,
        tally.pages,
        tally.links,
        tally.longest_block,
        tally.outputs_generated,
        tally.output_blocks
    );
    println!("{}", tally.kernels);
    println!(
        "vm suite (LISA's dynamic-memory cases in a QEMU guest): {}",
        tally.vm_suite
    );
    println!("xtask test took {:.0} s", started.elapsed().as_secs_f64());
    if total == STEPS.len() {
        println!("steps: {total} passed, 0 failed");
    } else {
        println!(
            "steps: {total} passed, 0 failed ({} not picked)",
            STEPS.len() - total
        );
    }
    Ok(())
}

/// A step's name as `cargo xtask test NAME` takes it: `bench pipeline (quick)`
/// is `bench-pipeline-quick`.
fn slug(name: &str) -> String {
    name.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_lowercase)
        .collect::<Vec<_>>()
        .join("-")
}

/// Step 1: every test of the workspace: the examples' own tests, `tests/`
/// (skeptic's snippet tests and the expansion-vs-mdBook test) and xtask's.
fn cargo_test(book: &Book, tally: &mut Tally) -> Result<()> {
    compile(book)?;
    let mdbook = tools::tool("mdbook").binary()?;
    // The guests tests/vm_harness.rs boots.
    crate::vm_assets::setup()?;
    let out = run_recorded(
        book.cargo()
            .args(["test", "--workspace"])
            .env(crate::vm::ASSETS_ENV, crate::vm_assets::assets_file()?)
            // The VM suite has its own step (`vm suite`): not twice.
            .env("DMB_VM_SUITE_IN_OWN_STEP", "1")
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
    out.ok_or_errors()
}

/// Step 2: the OS tests on the host kernel and in a QEMU guest of each
/// Debian kernel (`cargo xtask kernels`).
fn kernel_matrix(book: &Book, tally: &mut Tally) -> Result<()> {
    let mut cargo = book.cargo();
    cargo.arg("--quiet");
    tally.kernels = crate::kernels::run_matrix(&book.root, cargo, &book.cargo_target)?;
    Ok(())
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
    out.ok_or_errors()
}

/// Step 3: the site, into `book/`. mdBook only logs a failed include and goes
/// on, so any ERROR line fails the step.
pub fn mdbook_build(book: &Book, _: &mut Tally) -> Result<()> {
    let out = run_recorded(book.mdbook()?.arg("build"), book.quiet)?;
    out.ok_or_errors()
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
    out.ok_or_errors()?;
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
                crate::load::source_of(&b.page),
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
    let summary = crate::site_check::check(
        &book.chromium,
        &book.root,
        None,
        crate::site_check::BOTH_WINDOWS,
        Some(&screenshots),
    )?;
    tally.pages = summary.pages;
    tally.diagrams = summary.diagrams;
    Ok(())
}

/// Step 7: valgrind memcheck over the examples that handle raw mappings.
fn valgrind_step(book: &Book, _: &mut Tally) -> Result<()> {
    crate::valgrind::memcheck(book).map(|_| ())
}

/// Step 8: `cargo xtask bench --quick`, the whole pipeline into scratch
/// folders: criterion's quick mode, fewer sizes, the charts and tables.
fn bench_quick(book: &Book, _: &mut Tally) -> Result<()> {
    bench::pipeline(
        &book.root,
        &book.cargo_target,
        bench::Mode::Quick,
        book.quiet,
    )
    .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_names_on_the_command_line() {
        assert_eq!(slug("bench pipeline (quick)"), "bench-pipeline-quick");
        assert_eq!(slug("mdbook test"), "mdbook-test");
    }

    #[test]
    fn recognises_skeptic_test_names() {
        assert!(is_skeptic_test("primer_sect_reserve_line_42"));
        assert!(is_skeptic_test("introduction_line_7"));
        assert!(!is_skeptic_test("tests::rss_rises_by_touched_size"));
        assert!(!is_skeptic_test("baseline_line_"));
    }
}
