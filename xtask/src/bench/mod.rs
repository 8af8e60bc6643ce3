//! `cargo xtask bench [--quick]`: runs the book's criterion benches and turns
//! their results into the charts (`src/charts/*.svg`) and tables
//! (`benches/results/*.md`, `*.csv`) that Part IV shows.
//!
//! - The full run writes over the committed charts and tables. Each names the
//!   machine (CPU model, cores, kernel, rustc) and the date.
//! - `--quick` checks the pipeline, not the numbers: criterion's `--quick`,
//!   fewer sizes, and every output under `target/xtask/bench-quick/`, never
//!   over the committed files. `cargo xtask test` runs it as a step.
//! - `--redraw` measures nothing: it redraws the charts and tables from the
//!   last full run's results (criterion's files, and the machine and page
//!   faults that run saved next to them), after a change to the drawing.
//! - `--numbers` measures nothing: it rewrites `benches/results/*_numbers.txt`
//!   (the numbers the chapters quote) from the committed CSV files.
//! - `--only BENCH` makes a full run of one bench (e.g. `runtime_grow`) and
//!   rewrites only its outputs (a later `--redraw` needs a full run again).
//! - `--repeat N` makes N full runs and writes how far they disagreed to
//!   `benches/results/spread.md` (see `spread.rs`).
//!
//! Criterion writes one `new/estimates.json` per benchmark under its home
//! (`CRITERION_HOME`, here a scratch folder that each run empties first), next
//! to `new/benchmark.json` with the benchmark's ids and throughput.

mod criterion;
pub mod machine;
mod report_dynamic_buffers;
mod report_memory_grow;
mod report_runtime_grow;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::numbers::Numbers;
use crate::{run_recorded, tools, Result};
use criterion::Results;
use machine::Machine;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    Full,
    Quick,
    /// The full run's outputs, from its saved results: no benchmark runs.
    Redraw,
}

/// The benches this task knows, in the order it runs them.
struct BenchSpec {
    name: &'static str,
    /// The workspace member whose `benches/` holds it: `None` for the book
    /// package at the root.
    package: Option<&'static str>,
    /// Criterion filter for `--quick` (fewer sizes), if the bench has no
    /// quick mode of its own.
    quick_filter: Option<&'static str>,
    report: fn(&Results, &Machine, &Dirs) -> Result<Vec<PathBuf>>,
    /// The numbers the chapters quote, from one run's results.
    numbers: fn(&Results) -> Numbers,
}

const BENCHES: [BenchSpec; 3] = [
    BenchSpec {
        name: "dynamic_buffers",
        package: None,
        // The bench reads DMB_BENCH_QUICK=1 and runs three lengths.
        quick_filter: None,
        report: report_dynamic_buffers::report_dynamic_buffers,
        numbers: |r| report_dynamic_buffers::dynamic_buffers_numbers(r, &r.params()),
    },
    BenchSpec {
        name: "memory_grow",
        package: None,
        quick_filter: Some("/(256|4096)$"),
        report: report_memory_grow::report_memory_grow,
        numbers: |r| {
            report_memory_grow::memory_grow_numbers(
                r,
                &report_memory_grow::mg_functions(r),
                &r.params(),
            )
        },
    },
    BenchSpec {
        name: "runtime_grow",
        package: Some("runtime"),
        // At 4096 pages wasmtime's 1 MiB reservation copies ~20 s per run.
        quick_filter: Some("/256$"),
        report: report_runtime_grow::report_runtime_grow,
        numbers: report_runtime_grow::runtime_grow_numbers,
    },
];

impl BenchSpec {
    /// `benches/NAME.rs`, or `MEMBER/benches/NAME.rs`.
    fn source(&self, root: &Path) -> PathBuf {
        let dir = self.package.map_or(root.to_path_buf(), |p| root.join(p));
        dir.join("benches").join(format!("{}.rs", self.name))
    }
}

/// Where a run writes.
pub struct Dirs {
    pub criterion: PathBuf,
    pub charts: PathBuf,
    pub results: PathBuf,
}

impl Dirs {
    fn new(root: &Path, mode: Mode) -> Dirs {
        match mode {
            Mode::Full | Mode::Redraw => Dirs {
                criterion: root.join("target/xtask/bench/criterion"),
                charts: root.join("src/charts"),
                results: root.join("benches/results"),
            },
            Mode::Quick => {
                let base = root.join("target/xtask/bench-quick");
                Dirs {
                    criterion: base.join("criterion"),
                    charts: base.join("charts"),
                    results: base.join("results"),
                }
            }
        }
    }
}

/// `cargo xtask bench [--quick | --redraw | --repeat N]`.
pub fn bench(root: &Path, args: &[String]) -> Result<()> {
    let (mode, repeat) = match args {
        [] => (Mode::Full, 1),
        [flag] if flag == "--quick" => (Mode::Quick, 1),
        [flag] if flag == "--redraw" => (Mode::Redraw, 1),
        [flag] if flag == "--numbers" => return numbers_from_csv(root),
        [flag, name] if flag == "--only" => {
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| root.join("target"));
            return pipeline_of(root, &target, Mode::Full, false, Some(name)).map(|_| ());
        }
        [flag, n] if flag == "--repeat" => match n.parse::<usize>() {
            Ok(n) if (2..=10).contains(&n) => (Mode::Full, n),
            _ => return Err(format!("--repeat takes a whole number from 2 to 10, not `{n}`").into()),
        },
        _ => {
            return Err(format!(
                "usage: cargo xtask bench [--quick | --redraw | --numbers | --repeat N | --only BENCH]\nunexpected argument(s): {}",
                args.join(" ")
            )
            .into())
        }
    };
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    if repeat == 1 {
        return pipeline(root, &target, mode, false).map(|_| ());
    }
    // N full runs; each run's CSV files are kept, and the last run's charts
    // and tables stay. Then the spread table, from the kept files.
    let runs_dir = root.join("target/xtask/bench/runs");
    if runs_dir.exists() {
        std::fs::remove_dir_all(&runs_dir)?;
    }
    let results = root.join("benches/results");
    let mut load = Vec::new();
    for k in 1..=repeat {
        eprintln!("xtask bench: run {k} of {repeat}");
        pipeline(root, &target, Mode::Full, false)?;
        load.push(crate::spread::load_average().unwrap_or_else(|| "n/a".into()));
        let kept = runs_dir.join(k.to_string());
        std::fs::create_dir_all(&kept)?;
        for spec in &BENCHES {
            let csv = format!("{}.csv", spec.name);
            if results.join(&csv).exists() {
                std::fs::copy(results.join(&csv), kept.join(&csv))?;
            }
        }
    }
    let out = results.join("spread.md");
    crate::spread::write(&runs_dir, repeat, &load, &out)?;
    eprintln!(
        "xtask bench: {repeat} runs compared -> {}",
        shown(root, &out)
    );
    Ok(())
}

/// `--numbers`: rewrites each bench's `*_numbers.txt` from its committed
/// `benches/results/<bench>.csv`, measuring nothing, so that the numbers the
/// chapters quote are the committed tables' own.
fn numbers_from_csv(root: &Path) -> Result<()> {
    let results = root.join("benches/results");
    for spec in &BENCHES {
        let csv = results.join(format!("{}.csv", spec.name));
        let text = std::fs::read_to_string(&csv).map_err(|e| format!("{}: {e}", csv.display()))?;
        let r = Results::from_csv(spec.name, &text)?;
        let file = (spec.numbers)(&r).write(&results, spec.name)?;
        if let Some(package) = spec.package {
            // The note names the bench's file: a member's is in its folder.
            let text = std::fs::read_to_string(&file)?;
            std::fs::write(
                &file,
                text.replace("`benches/", &format!("`{package}/benches/")),
            )?;
        }
        eprintln!(
            "xtask bench: {} -> {}",
            shown(root, &csv),
            shown(root, &file)
        );
    }
    Ok(())
}

/// What one run wrote, for the caller to check.
#[derive(Debug)]
pub struct Written {
    pub files: Vec<PathBuf>,
    pub skipped: Vec<String>,
}

pub fn pipeline(root: &Path, cargo_target: &Path, mode: Mode, quiet: bool) -> Result<Written> {
    pipeline_of(root, cargo_target, mode, quiet, None)
}

/// `pipeline`, for one bench only if `only` names it (`--only BENCH`): its
/// outputs are rewritten, the others' stay as they are.
fn pipeline_of(
    root: &Path,
    cargo_target: &Path,
    mode: Mode,
    quiet: bool,
    only: Option<&str>,
) -> Result<Written> {
    if let Some(name) = only.filter(|n| !BENCHES.iter().any(|s| s.name == *n)) {
        return Err(format!("--only: no bench `{name}`").into());
    }
    let started = Instant::now();
    let dirs = Dirs::new(root, mode);
    let machine_file = dirs.criterion.join("machine.txt");
    let machine = if mode == Mode::Redraw {
        let text = std::fs::read_to_string(&machine_file).map_err(|e| {
            format!(
                "--redraw needs a full run's results: {}: {e}",
                machine_file.display()
            )
        })?;
        Machine::parse(&text)
            .ok_or_else(|| format!("{}: not a machine description", machine_file.display()))?
    } else {
        if dirs.criterion.exists() {
            std::fs::remove_dir_all(&dirs.criterion)?;
        }
        Machine::here(mode)
    };
    for dir in [&dirs.criterion, &dirs.charts, &dirs.results] {
        std::fs::create_dir_all(dir)?;
    }
    if mode != Mode::Redraw {
        std::fs::write(&machine_file, machine.to_text())?;
    }
    eprintln!("xtask bench: {} ({mode:?})", machine.line());
    let mut written = Written {
        files: Vec::new(),
        skipped: Vec::new(),
    };
    for spec in BENCHES.iter().filter(|s| only.is_none_or(|n| n == s.name)) {
        let source = spec.source(root);
        if !source.exists() {
            eprintln!(
                "xtask bench: skipping {}: {} does not exist",
                spec.name,
                shown(root, &source)
            );
            written.skipped.push(spec.name.to_owned());
            continue;
        }
        let t = Instant::now();
        // The bench's stdout has the page-fault lines; a redraw reads the
        // copy the run saved.
        let saved = dirs.criterion.join(format!("{}.stdout.txt", spec.name));
        let stdout = if mode == Mode::Redraw {
            std::fs::read_to_string(&saved).unwrap_or_default()
        } else {
            let stdout = run_bench(root, cargo_target, &dirs, spec, mode, quiet)?;
            std::fs::write(&saved, &stdout)?;
            stdout
        };
        let results = Results::read(&dirs.criterion, spec.name, &stdout)?;
        if results.estimates.is_empty() {
            return Err(format!(
                "{}: criterion wrote no estimates under {}",
                spec.name,
                dirs.criterion.display()
            )
            .into());
        }
        let files = (spec.report)(&results, &machine, &dirs)?;
        for file in &files {
            check_output(file)?;
        }
        eprintln!(
            "xtask bench: {}: {} benchmarks in {:.0} s -> {}",
            spec.name,
            results.estimates.len(),
            t.elapsed().as_secs_f64(),
            files
                .iter()
                .map(|f| shown(root, f))
                .collect::<Vec<_>>()
                .join(", ")
        );
        written.files.extend(files);
    }
    eprintln!(
        "xtask bench: done in {:.0} s{}",
        started.elapsed().as_secs_f64(),
        if written.skipped.is_empty() {
            String::new()
        } else {
            format!(" (skipped: {})", written.skipped.join(", "))
        }
    );
    Ok(written)
}

fn shown(root: &Path, file: &Path) -> String {
    file.strip_prefix(root)
        .unwrap_or(file)
        .display()
        .to_string()
}

fn run_bench(
    root: &Path,
    cargo_target: &Path,
    dirs: &Dirs,
    spec: &BenchSpec,
    mode: Mode,
    quiet: bool,
) -> Result<String> {
    let mut cmd = Command::new(tools::cargo());
    cmd.current_dir(root).args(["bench", "--color=never"]);
    if let Some(package) = spec.package {
        cmd.args(["--package", package]);
        if mode == Mode::Quick {
            // The pipeline check needs no optimised wasmtime: the dev
            // profile, with the whole workspace's features, reuses the
            // build `cargo test --workspace` made, where a release build
            // of wasmtime would cost minutes for numbers nobody reads.
            cmd.args(["--profile", "dev", "--workspace"]);
        }
    }
    cmd.args(["--bench", spec.name, "--"])
        .env("CARGO_TARGET_DIR", cargo_target)
        .env("CRITERION_HOME", &dirs.criterion)
        .env_remove("DMB_BENCH_QUICK");
    if mode == Mode::Quick {
        cmd.arg("--quick").env("DMB_BENCH_QUICK", "1");
        if let Some(filter) = spec.quick_filter {
            cmd.arg(filter);
        }
    }
    eprintln!("xtask bench: running {cmd:?}");
    let out = run_recorded(&mut cmd, quiet)?;
    if !out.success {
        return Err(format!(
            "cargo bench --bench {} failed:\n{}",
            spec.name,
            out.error_lines()
        )
        .into());
    }
    Ok(out.stdout)
}

/// A written chart or table must exist and look like what it claims to be.
pub(crate) fn check_output(file: &Path) -> Result<()> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let ok = match file.extension().and_then(|e| e.to_str()) {
        Some("svg") => text.contains("<svg") && text.trim_end().ends_with("</svg>"),
        Some("md") => text.contains("| ---"),
        Some("csv") => text.lines().count() > 1,
        _ => !text.is_empty(),
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{}: written, but not a valid chart or table",
            file.display()
        )
        .into())
    }
}
