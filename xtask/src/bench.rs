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
//!
//! Criterion writes one `new/estimates.json` per benchmark under its home
//! (`CRITERION_HOME`, here a scratch folder that each run empties first), next
//! to `new/benchmark.json` with the benchmark's ids and throughput.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::charts::{self, Chart, Series};
use crate::steps::{Book, Tally};
use crate::{run_recorded, tools, Result};

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
    /// Criterion filter for `--quick` (fewer sizes), if the bench has no
    /// quick mode of its own.
    quick_filter: Option<&'static str>,
    report: fn(&Results, &Machine, &Dirs) -> Result<Vec<PathBuf>>,
}

const BENCHES: [BenchSpec; 2] = [
    BenchSpec {
        name: "dynamic_buffers",
        // The bench reads DMB_BENCH_QUICK=1 and runs three lengths.
        quick_filter: None,
        report: report_dynamic_buffers,
    },
    BenchSpec {
        name: "memory_grow",
        quick_filter: Some("/(256|4096)$"),
        report: report_memory_grow,
    },
];

/// Where a run writes.
pub struct Dirs {
    criterion: PathBuf,
    charts: PathBuf,
    results: PathBuf,
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

/// `cargo xtask bench [--quick]`.
pub fn bench(root: &Path, args: &[String]) -> Result<()> {
    let mode = match args {
        [] => Mode::Full,
        [flag] if flag == "--quick" => Mode::Quick,
        [flag] if flag == "--redraw" => Mode::Redraw,
        _ => {
            return Err(format!(
                "usage: cargo xtask bench [--quick | --redraw]\nunexpected argument(s): {}",
                args.join(" ")
            )
            .into())
        }
    };
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    pipeline(root, &target, mode, false).map(|_| ())
}

/// The `cargo xtask test` step: the quick pipeline, into scratch folders.
pub fn quick_step(book: &Book, _: &mut Tally) -> Result<()> {
    pipeline(&book.root, &book.cargo_target, Mode::Quick, book.quiet).map(|_| ())
}

/// What one run wrote, for the caller to check.
#[derive(Debug)]
pub struct Written {
    pub files: Vec<PathBuf>,
    pub skipped: Vec<String>,
}

fn pipeline(root: &Path, cargo_target: &Path, mode: Mode, quiet: bool) -> Result<Written> {
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
    for spec in &BENCHES {
        let source = root.join("benches").join(format!("{}.rs", spec.name));
        if !source.exists() {
            eprintln!(
                "xtask bench: skipping {}: benches/{}.rs does not exist",
                spec.name, spec.name
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
    cmd.current_dir(root)
        .args(["bench", "--color=never", "--bench", spec.name, "--"])
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
fn check_output(file: &Path) -> Result<()> {
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

// ---------------------------------------------------------------------------
// Criterion's results
// ---------------------------------------------------------------------------

/// One benchmark's result: criterion's mean, in ns per iteration.
#[derive(Debug, Clone, PartialEq)]
pub struct Estimate {
    pub function: String,
    pub param: u64,
    pub mean_ns: f64,
    pub lower_ns: f64,
    pub upper_ns: f64,
    /// `Throughput::Elements`, if the bench set it.
    pub elements: Option<u64>,
}

impl Estimate {
    fn overlaps(&self, other: &Estimate) -> bool {
        self.lower_ns <= other.upper_ns && other.lower_ns <= self.upper_ns
    }
}

/// Every estimate of one criterion group, and the `faults <id> <n>` lines
/// the bench printed.
pub struct Results {
    pub group: String,
    pub estimates: Vec<Estimate>,
    pub faults: BTreeMap<String, f64>,
}

impl Results {
    fn read(criterion: &Path, group: &str, stdout: &str) -> Result<Results> {
        let mut estimates = Vec::new();
        let mut pending = vec![criterion.join(group)];
        while let Some(dir) = pending.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries {
                let path = entry?.path();
                if path.is_dir() {
                    if path.file_name().is_some_and(|n| n == "new") {
                        estimates.push(read_estimate(&path)?);
                    } else if path
                        .file_name()
                        .is_some_and(|n| n != "base" && n != "report")
                    {
                        pending.push(path);
                    }
                }
            }
        }
        estimates.sort_by(|a, b| (&a.function, a.param).cmp(&(&b.function, b.param)));
        let faults = stdout
            .lines()
            .filter_map(|line| {
                let mut words = line.strip_prefix("faults ")?.split_whitespace();
                Some((words.next()?.to_owned(), words.next()?.parse().ok()?))
            })
            .collect();
        Ok(Results {
            group: group.to_owned(),
            estimates,
            faults,
        })
    }

    fn get(&self, function: &str, param: u64) -> Option<&Estimate> {
        self.estimates
            .iter()
            .find(|e| e.function == function && e.param == param)
    }

    fn params(&self) -> Vec<u64> {
        let mut params: Vec<u64> = self.estimates.iter().map(|e| e.param).collect();
        params.sort_unstable();
        params.dedup();
        params
    }

    fn functions(&self) -> Vec<String> {
        let mut seen: Vec<String> = Vec::new();
        for e in &self.estimates {
            if !seen.contains(&e.function) {
                seen.push(e.function.clone());
            }
        }
        seen
    }

    fn fault(&self, function: &str, param: u64) -> Option<f64> {
        self.faults
            .get(&format!("{}/{function}/{param}", self.group))
            .copied()
    }

    /// The CSV every table comes from: for comparing two machines.
    fn csv(&self) -> String {
        let mut out = String::from(
            "group,function,param,elements,mean_ns,lower_ns,upper_ns,minor_faults_per_iteration\n",
        );
        for e in &self.estimates {
            let _ = writeln!(
                out,
                "{},{},{},{},{:.3},{:.3},{:.3},{}",
                self.group,
                e.function,
                e.param,
                e.elements.map_or(String::new(), |n| n.to_string()),
                e.mean_ns,
                e.lower_ns,
                e.upper_ns,
                self.fault(&e.function, e.param)
                    .map_or(String::new(), |f| format!("{f:.1}"))
            );
        }
        out
    }
}

fn read_estimate(new_dir: &Path) -> Result<Estimate> {
    let read = |name: &str| -> Result<Json> {
        let path = new_dir.join(name);
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        Json::parse(&text).map_err(|e| format!("{}: {e}", path.display()).into())
    };
    let bench = read("benchmark.json")?;
    let est = read("estimates.json")?;
    let text = |v: Option<&Json>, what: &str| -> Result<String> {
        v.and_then(Json::as_str)
            .map(str::to_owned)
            .ok_or_else(|| format!("{}: no {what}", new_dir.display()).into())
    };
    let number = |path: &[&str]| -> Result<f64> {
        est.at(path).and_then(Json::as_f64).ok_or_else(|| {
            format!(
                "{}: no {} in estimates.json",
                new_dir.display(),
                path.join(".")
            )
            .into()
        })
    };
    let function = text(bench.at(&["function_id"]), "function_id")?;
    let value = text(bench.at(&["value_str"]), "value_str")?;
    Ok(Estimate {
        function,
        param: value
            .parse()
            .map_err(|_| format!("{}: parameter `{value}` is not a number", new_dir.display()))?,
        mean_ns: number(&["mean", "point_estimate"])?,
        lower_ns: number(&["mean", "confidence_interval", "lower_bound"])?,
        upper_ns: number(&["mean", "confidence_interval", "upper_bound"])?,
        elements: bench
            .at(&["throughput", "Elements"])
            .and_then(Json::as_f64)
            .map(|n| n as u64),
    })
}

// ---------------------------------------------------------------------------
// dynamic_buffers: ns per element by variant; what each step adds
// ---------------------------------------------------------------------------

const DB_VARIANTS: [(&str, &str); 6] = [
    ("preallocated", "kernel alone (preallocated)"),
    ("unmasked", "kernel alone, no element masked"),
    ("copy_in_loop", "copy input, then kernel"),
    ("alloc_in_loop", "allocate + copy, then kernel"),
    ("prefaulted", "copy into resident pages, then kernel"),
    ("first_touch", "copy into fresh pages, then kernel"),
];

/// What one step adds, as (name, with, without): `with - without`.
const DB_ADDED: [(&str, &str, &str); 3] = [
    ("copying the input", "copy_in_loop", "preallocated"),
    (
        "allocating (malloc + free)",
        "alloc_in_loop",
        "copy_in_loop",
    ),
    ("first touch (page faults)", "first_touch", "prefaulted"),
];

fn report_dynamic_buffers(r: &Results, machine: &Machine, dirs: &Dirs) -> Result<Vec<PathBuf>> {
    let lens = r.params();
    for (variant, _) in DB_VARIANTS {
        for &len in &lens {
            if r.get(variant, len).is_none() {
                return Err(format!("dynamic_buffers: no result for {variant}/{len}").into());
            }
        }
    }
    let at = |variant: &str, len: u64| r.get(variant, len).expect("checked above");
    let per_elem = |e: &Estimate| e.mean_ns / e.elements.unwrap_or(e.param).max(1) as f64;

    // Chart 1: ns per element.
    let series: Vec<Series> = DB_VARIANTS
        .iter()
        .enumerate()
        .map(|(i, (variant, label))| Series {
            label: format!("{variant}: {label}"),
            points: lens
                .iter()
                .map(|&len| (len as f64, per_elem(at(variant, len))))
                .collect(),
            style: i,
        })
        .collect();
    let chart1 = dirs.charts.join("dynamic_buffers.svg");
    charts::draw(
        &chart1,
        &Chart {
            title: "dynamic_buffers: time per element, by where the buffers are".into(),
            x_desc: "length n (elements, log scale)".into(),
            y_desc: "ns per element (log scale)".into(),
            footer: machine.footer(),
            series,
            reference: None,
            x_log_base: 10.0,
        },
    )?;

    // Chart 2: what each step adds, divided by the kernel alone.
    let added: Vec<Series> = DB_ADDED
        .iter()
        .enumerate()
        .map(|(i, &(name, with, without))| Series {
            label: format!("{name}: {with} - {without}"),
            points: lens
                .iter()
                .map(|&len| {
                    let extra = at(with, len).mean_ns - at(without, len).mean_ns;
                    (len as f64, extra / at("preallocated", len).mean_ns)
                })
                .filter(|&(_, ratio)| ratio > 0.0)
                .collect(),
            style: DB_VARIANTS
                .iter()
                .position(|(v, _)| *v == with)
                .unwrap_or(i + 1),
        })
        .collect();
    let chart2 = dirs.charts.join("dynamic_buffers_added.svg");
    charts::draw(
        &chart2,
        &Chart {
            title: "dynamic_buffers: time each step adds, / the kernel alone".into(),
            x_desc: "length n (elements, log scale)".into(),
            y_desc: "added time / kernel time (log scale)".into(),
            footer: format!(
                "{}\nAbove the dashed line, the step costs more than the kernel itself. Differences <= 0 (noise) are not drawn; the table has them.",
                machine.footer()
            ),
            series: added,
            reference: Some((1.0, "1: the step takes as long as the kernel".into())),
            x_log_base: 10.0,
        },
    )?;

    // The table.
    let mut md = String::new();
    let _ = writeln!(md, "{}\n", machine.table_line("dynamic_buffers"));
    let _ = writeln!(
        md,
        "Time per element (ns), criterion's mean. `preallocated` is the kernel alone, the floor. `unmasked` is the kernel with no element masked. `copy_in_loop` adds copying the input; `alloc_in_loop` adds allocating and freeing the buffers to that. `prefaulted` and `first_touch` copy into a mapping whose pages are resident, or were dropped just before; they are timed one iteration at a time, the others in batches:\n"
    );
    md.push_str("| n | ");
    md.push_str(
        &DB_VARIANTS
            .iter()
            .map(|(v, _)| format!("`{v}`"))
            .collect::<Vec<_>>()
            .join(" | "),
    );
    md.push_str(" |\n| ---: |");
    md.push_str(&" ---: |".repeat(DB_VARIANTS.len()));
    md.push('\n');
    for &len in &lens {
        let _ = write!(md, "| {} |", group_digits(len));
        for (variant, _) in DB_VARIANTS {
            let _ = write!(md, " {} |", sig3(per_elem(at(variant, len))));
        }
        md.push('\n');
    }
    let _ = writeln!(
        md,
        "\nWhat each step adds per iteration, divided by the kernel alone (`preallocated`). Above 1, the step costs more than the kernel. A `~` marks a difference within the two means' 95% confidence intervals. Faults are minor page faults per iteration, counted with `getrusage` outside the timing:\n"
    );
    md.push_str("| n | kernel alone (µs) |");
    for (name, _, _) in DB_ADDED {
        let _ = write!(md, " {name} |");
    }
    md.push_str(" faults, `alloc_in_loop` | faults, `first_touch` |\n| ---: | ---: |");
    md.push_str(&" ---: |".repeat(DB_ADDED.len() + 2));
    md.push('\n');
    let mut above: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for &len in &lens {
        let kernel = at("preallocated", len);
        let _ = write!(
            md,
            "| {} | {} |",
            group_digits(len),
            sig3(kernel.mean_ns / 1000.0)
        );
        for (name, with, without) in DB_ADDED {
            let (a, b) = (at(with, len), at(without, len));
            let ratio = (a.mean_ns - b.mean_ns) / kernel.mean_ns;
            let mark = if a.overlaps(b) { "~" } else { "" };
            let _ = write!(md, " {mark}{} |", sig2(ratio));
            if ratio > 1.0 && !a.overlaps(b) {
                above.entry(name).or_default().push(len);
            }
        }
        for variant in ["alloc_in_loop", "first_touch"] {
            let f = r
                .fault(variant, len)
                .map_or("n/a".to_owned(), |f| format!("{f:.1}"));
            let _ = write!(md, " {f} |");
        }
        md.push('\n');
    }
    md.push('\n');
    for (name, _, _) in DB_ADDED {
        let lens = above.get(name).map_or(Vec::new(), |v| v.clone());
        let _ = writeln!(
            md,
            "- {name} costs more than the kernel at {}.",
            if lens.is_empty() {
                "no length measured".to_owned()
            } else {
                format!(
                    "n = {}",
                    lens.iter()
                        .map(|&l| group_digits(l))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        );
    }
    let table = dirs.results.join("dynamic_buffers.md");
    std::fs::write(&table, md)?;
    let csv = dirs.results.join("dynamic_buffers.csv");
    std::fs::write(&csv, r.csv())?;
    Ok(vec![chart1, chart2, table, csv])
}

// ---------------------------------------------------------------------------
// memory_grow: µs per grow by strategy and memory size, and ratios to floor
// ---------------------------------------------------------------------------

const MG_ORDER: [&str; 6] = [
    "floor",
    "reserved",
    "remap",
    "relocate",
    "copy",
    "vec_resize",
];

fn report_memory_grow(r: &Results, machine: &Machine, dirs: &Dirs) -> Result<Vec<PathBuf>> {
    let mut functions = r.functions();
    functions.sort_by_key(|f| {
        MG_ORDER
            .iter()
            .position(|o| o == f)
            .unwrap_or(MG_ORDER.len())
    });
    if !functions.iter().any(|f| f == "floor") {
        return Err("memory_grow: no `floor` results to compare with".into());
    }
    let sizes = r.params();
    // Criterion times one whole 1 -> P run; throughput is the grows in it.
    let per_grow_us = |e: &Estimate| e.mean_ns / e.elements.unwrap_or(1).max(1) as f64 / 1000.0;
    let series: Vec<Series> = functions
        .iter()
        .map(|f| Series {
            label: f.clone(),
            points: sizes
                .iter()
                .filter_map(|&p| r.get(f, p).map(|e| (p as f64, per_grow_us(e))))
                .collect(),
            style: MG_ORDER
                .iter()
                .position(|o| o == f)
                .unwrap_or(MG_ORDER.len()),
        })
        .collect();
    let chart = dirs.charts.join("memory_grow.svg");
    charts::draw(
        &chart,
        &Chart {
            title: "memory_grow: time per grow, growing page by page to P pages".into(),
            x_desc: "final size P (WebAssembly pages, log scale)".into(),
            y_desc: "µs per grow (log scale)".into(),
            footer: machine.footer(),
            series,
            reference: None,
            x_log_base: 2.0,
        },
    )?;

    let mut md = String::new();
    let _ = writeln!(md, "{}\n", machine.table_line("memory_grow"));
    let header = |md: &mut String, first: &str| {
        let _ = write!(md, "| {first} |");
        for &p in &sizes {
            let _ = write!(md, " P = {} |", group_digits(p));
        }
        md.push_str("\n| --- |");
        md.push_str(&" ---: |".repeat(sizes.len()));
        md.push('\n');
    };
    let _ = writeln!(
        md,
        "µs per grow: criterion's mean for one run from 1 to P pages, divided by its P - 1 grows:\n"
    );
    header(&mut md, "strategy");
    for f in &functions {
        let _ = write!(md, "| `{f}` |");
        for &p in &sizes {
            let cell = r.get(f, p).map_or("-".to_owned(), |e| sig3(per_grow_us(e)));
            let _ = write!(md, " {cell} |");
        }
        md.push('\n');
    }
    let _ = writeln!(
        md,
        "\nThe same, divided by `floor` at the same P, measured in the same run:\n"
    );
    header(&mut md, "strategy");
    for f in functions.iter().filter(|f| *f != "floor") {
        let _ = write!(md, "| `{f}` |");
        for &p in &sizes {
            let cell = match (r.get(f, p), r.get("floor", p)) {
                (Some(e), Some(floor)) => format!("{}×", sig3(e.mean_ns / floor.mean_ns)),
                _ => "-".to_owned(),
            };
            let _ = write!(md, " {cell} |");
        }
        md.push('\n');
    }
    write_targets(&mut md, r, &sizes);
    let table = dirs.results.join("memory_grow.md");
    std::fs::write(&table, md)?;
    let csv = dirs.results.join("memory_grow.csv");
    std::fs::write(&csv, r.csv())?;
    Ok(vec![chart, table, csv])
}

/// Part I's speed targets: the most each in-place strategy may cost, as a
/// multiple of `floor` measured in the same run, at the largest P.
const MG_TARGETS: [(&str, f64); 3] = [("reserved", 1.15), ("remap", 1.6), ("relocate", 3.0)];

fn write_targets(md: &mut String, r: &Results, sizes: &[u64]) {
    let Some(&p) = sizes.iter().max() else { return };
    let _ = writeln!(
        md,
        "\nThe targets, at P = {}, as multiples of `floor` in this run:\n",
        group_digits(p)
    );
    md.push_str("| strategy | target | measured | met? |\n| --- | ---: | ---: | --- |\n");
    for (f, limit) in MG_TARGETS {
        let (measured, met) = match (r.get(f, p), r.get("floor", p)) {
            (Some(e), Some(floor)) => {
                let ratio = e.mean_ns / floor.mean_ns;
                (
                    format!("{}×", sig3(ratio)),
                    if ratio <= limit { "yes" } else { "**no**" },
                )
            }
            _ => ("-".to_owned(), "not measured"),
        };
        let _ = writeln!(md, "| `{f}` | ≤ {limit}× | {measured} | {met} |");
    }
}

// ---------------------------------------------------------------------------
// Numbers for people
// ---------------------------------------------------------------------------

/// Three significant digits: `0.0123`, `1.23`, `123`, `12300`.
fn sig3(v: f64) -> String {
    sig(v, 3)
}

fn sig2(v: f64) -> String {
    sig(v, 2)
}

fn sig(v: f64, digits: i32) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let magnitude = v.abs().log10().floor() as i32;
    let decimals = (digits - 1 - magnitude).max(0) as usize;
    let scale = 10f64.powi(magnitude - digits + 1);
    let rounded = if magnitude >= digits - 1 {
        (v / scale).round() * scale
    } else {
        v
    };
    format!("{rounded:.decimals$}")
}

/// `1000000` -> `1,000,000`.
fn group_digits(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

// ---------------------------------------------------------------------------
// The machine and the date
// ---------------------------------------------------------------------------

pub struct Machine {
    cpu: String,
    cores: usize,
    kernel: String,
    rustc: String,
    date: String,
    mode: Mode,
}

impl Machine {
    fn here(mode: Mode) -> Machine {
        let cpu = cpu_model();
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|k| format!("Linux {}", k.trim()))
            .unwrap_or_else(|_| std::env::consts::OS.to_owned());
        let rustc = Command::new("rustc")
            .arg("-V")
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .and_then(|v| {
                v.split_whitespace()
                    .take(2)
                    .collect::<Vec<_>>()
                    .join(" ")
                    .into()
            })
            .unwrap_or_else(|| "rustc ?".to_owned());
        Machine {
            cpu,
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            kernel,
            rustc,
            date: today_utc(),
            mode,
        }
    }

    /// The machine as the run saved it, for `--redraw`.
    fn to_text(&self) -> String {
        format!(
            "cpu {}\ncores {}\nkernel {}\nrustc {}\ndate {}\n",
            self.cpu, self.cores, self.kernel, self.rustc, self.date
        )
    }

    fn parse(text: &str) -> Option<Machine> {
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
                .map(str::to_owned)
        };
        Some(Machine {
            cpu: field("cpu")?,
            cores: field("cores")?.parse().ok()?,
            kernel: field("kernel")?,
            rustc: field("rustc")?,
            date: field("date")?,
            mode: Mode::Full,
        })
    }

    fn line(&self) -> String {
        format!(
            "{}, {} cores, {}, {}, {}",
            self.cpu, self.cores, self.kernel, self.rustc, self.date
        )
    }

    fn footer(&self) -> String {
        let quick = if self.mode == Mode::Quick {
            " (--quick: pipeline check, not numbers)"
        } else {
            ""
        };
        format!("{}; cargo xtask bench{quick}", self.line())
    }

    fn table_line(&self, bench: &str) -> String {
        let quick = if self.mode == Mode::Quick {
            " with `--quick`, which checks the pipeline, not the numbers"
        } else {
            ""
        };
        format!(
            "Measured on {}, {} cores, {}, built with {}, on {} (UTC), by `cargo xtask bench`{quick} (`benches/{bench}.rs`).",
            self.cpu, self.cores, self.kernel, self.rustc, self.date
        )
    }
}

/// The CPU's model name (`/proc/cpuinfo`), or the architecture.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
                .map(|(_, name)| name.trim().to_owned())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_owned())
}

pub fn today_utc() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Days since 1970-01-01 to (year, month, day), Howard Hinnant's algorithm.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

// ---------------------------------------------------------------------------
// Just enough JSON for criterion's two files
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Number(f64),
    Text(String),
    List(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    pub fn parse(text: &str) -> std::result::Result<Json, String> {
        let mut p = Parser {
            bytes: text.as_bytes(),
            at: 0,
        };
        let value = p.value()?;
        p.space();
        if p.at != p.bytes.len() {
            return Err(format!("unexpected text at byte {}", p.at));
        }
        Ok(value)
    }

    pub fn at(&self, path: &[&str]) -> Option<&Json> {
        path.iter().try_fold(self, |v, key| match v {
            Json::Object(fields) => fields.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        })
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Json::Number(n) => Some(*n),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::Text(s) => Some(s),
            _ => None,
        }
    }
}

struct Parser<'t> {
    bytes: &'t [u8],
    at: usize,
}

impl Parser<'_> {
    fn space(&mut self) {
        while self.bytes.get(self.at).is_some_and(u8::is_ascii_whitespace) {
            self.at += 1;
        }
    }

    fn expect(&mut self, byte: u8) -> std::result::Result<(), String> {
        self.space();
        if self.bytes.get(self.at) == Some(&byte) {
            self.at += 1;
            Ok(())
        } else {
            Err(format!("expected `{}` at byte {}", byte as char, self.at))
        }
    }

    fn value(&mut self) -> std::result::Result<Json, String> {
        self.space();
        match self.bytes.get(self.at) {
            Some(b'{') => {
                self.at += 1;
                let mut fields = Vec::new();
                self.space();
                if self.bytes.get(self.at) == Some(&b'}') {
                    self.at += 1;
                    return Ok(Json::Object(fields));
                }
                loop {
                    self.space();
                    let key = self.string()?;
                    self.expect(b':')?;
                    fields.push((key, self.value()?));
                    self.space();
                    match self.bytes.get(self.at) {
                        Some(b',') => self.at += 1,
                        Some(b'}') => {
                            self.at += 1;
                            return Ok(Json::Object(fields));
                        }
                        _ => return Err(format!("expected `,` or `}}` at byte {}", self.at)),
                    }
                }
            }
            Some(b'[') => {
                self.at += 1;
                let mut items = Vec::new();
                self.space();
                if self.bytes.get(self.at) == Some(&b']') {
                    self.at += 1;
                    return Ok(Json::List(items));
                }
                loop {
                    items.push(self.value()?);
                    self.space();
                    match self.bytes.get(self.at) {
                        Some(b',') => self.at += 1,
                        Some(b']') => {
                            self.at += 1;
                            return Ok(Json::List(items));
                        }
                        _ => return Err(format!("expected `,` or `]` at byte {}", self.at)),
                    }
                }
            }
            Some(b'"') => Ok(Json::Text(self.string()?)),
            Some(b't') => self.word("true", Json::Bool(true)),
            Some(b'f') => self.word("false", Json::Bool(false)),
            Some(b'n') => self.word("null", Json::Null),
            Some(b'-' | b'0'..=b'9') => {
                let start = self.at;
                while self
                    .bytes
                    .get(self.at)
                    .is_some_and(|b| b.is_ascii_digit() || b"+-.eE".contains(b))
                {
                    self.at += 1;
                }
                let token = std::str::from_utf8(&self.bytes[start..self.at]).unwrap_or("");
                token
                    .parse()
                    .map(Json::Number)
                    .map_err(|_| format!("bad number `{token}` at byte {start}"))
            }
            _ => Err(format!("unexpected byte at {}", self.at)),
        }
    }

    fn word(&mut self, word: &str, value: Json) -> std::result::Result<Json, String> {
        if self.bytes[self.at..].starts_with(word.as_bytes()) {
            self.at += word.len();
            Ok(value)
        } else {
            Err(format!("unexpected word at byte {}", self.at))
        }
    }

    fn string(&mut self) -> std::result::Result<String, String> {
        if self.bytes.get(self.at) != Some(&b'"') {
            return Err(format!("expected a string at byte {}", self.at));
        }
        self.at += 1;
        let mut out = Vec::new();
        loop {
            match self.bytes.get(self.at) {
                None => return Err("unterminated string".into()),
                Some(b'"') => {
                    self.at += 1;
                    return String::from_utf8(out).map_err(|e| e.to_string());
                }
                Some(b'\\') => {
                    let escaped = self.bytes.get(self.at + 1).copied();
                    self.at += 2;
                    let c = match escaped {
                        Some(b'n') => '\n',
                        Some(b't') => '\t',
                        Some(b'r') => '\r',
                        Some(b'b') => '\u{8}',
                        Some(b'f') => '\u{c}',
                        Some(b'u') => {
                            let hex = self
                                .bytes
                                .get(self.at..self.at + 4)
                                .and_then(|h| std::str::from_utf8(h).ok())
                                .and_then(|h| u32::from_str_radix(h, 16).ok())
                                .ok_or("bad \\u escape")?;
                            self.at += 4;
                            char::from_u32(hex).unwrap_or('\u{fffd}')
                        }
                        Some(other) => other as char,
                        None => return Err("unterminated escape".into()),
                    };
                    let mut buf = [0; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
                Some(&b) => {
                    out.push(b);
                    self.at += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_criterion_json() {
        let text = r#"{"mean":{"confidence_interval":{"confidence_level":0.95,"lower_bound":20.1,"upper_bound":2.03e1},"point_estimate":20.2,"standard_error":0.06},"slope":null,"t":[true,false,"a\"b\u00b5"]}"#;
        let json = Json::parse(text).unwrap();
        assert_eq!(
            json.at(&["mean", "point_estimate"]),
            Some(&Json::Number(20.2))
        );
        assert_eq!(
            json.at(&["mean", "confidence_interval", "upper_bound"])
                .and_then(Json::as_f64),
            Some(20.3)
        );
        assert_eq!(json.at(&["slope"]), Some(&Json::Null));
        assert_eq!(
            json.at(&["t"]),
            Some(&Json::List(vec![
                Json::Bool(true),
                Json::Bool(false),
                Json::Text("a\"bµ".into())
            ]))
        );
        assert!(Json::parse("{\"a\":1} x").is_err());
        assert!(Json::parse("{\"a\" 1}").is_err());
    }

    #[test]
    fn dates_and_numbers_for_people() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(sig3(20.2095), "20.2");
        assert_eq!(sig3(0.012345), "0.0123");
        assert_eq!(sig3(123456.0), "123000");
        assert_eq!(sig2(-0.0567), "-0.057");
        assert_eq!(group_digits(1_000_000), "1,000,000");
        assert_eq!(group_digits(100), "100");
    }

    #[test]
    fn a_saved_machine_reads_back() {
        let machine = Machine {
            cpu: "Intel(R) Xeon(R) Processor".into(),
            cores: 2,
            kernel: "Linux 6.18".into(),
            rustc: "rustc 1.95.0".into(),
            date: "2026-11-26".into(),
            mode: Mode::Full,
        };
        let back = Machine::parse(&machine.to_text()).unwrap();
        assert_eq!(back.line(), machine.line());
        assert!(Machine::parse("cpu x\n").is_none());
    }

    /// A fake criterion home with every dynamic_buffers result: the tables
    /// and charts come out, and name the crossovers.
    #[test]
    fn dynamic_buffers_results_become_charts_and_tables() {
        let root = std::env::temp_dir().join(format!("xtask-bench-test-{}", std::process::id()));
        let dirs = Dirs {
            criterion: root.join("criterion"),
            charts: root.join("charts"),
            results: root.join("results"),
        };
        let per_elem = |variant: &str, len: u64| -> f64 {
            let extra = match variant {
                "preallocated" | "unmasked" => 0.0,
                "copy_in_loop" => 0.3 * len as f64,
                "alloc_in_loop" => 0.3 * len as f64 + 40.0,
                "prefaulted" => 0.3 * len as f64 + 30.0,
                _ => 0.3 * len as f64 + 30.0 + 1000.0 * (len as f64 / 455.0).ceil(),
            };
            (2.5 * len as f64 + 10.0 + extra) / len as f64
        };
        for (variant, _) in DB_VARIANTS {
            for len in [10u64, 1000, 100_000] {
                let dir = dirs
                    .criterion
                    .join(format!("dynamic_buffers/{variant}/{len}/new"));
                std::fs::create_dir_all(&dir).unwrap();
                let mean = per_elem(variant, len) * len as f64;
                std::fs::write(
                    dir.join("benchmark.json"),
                    format!(r#"{{"group_id":"dynamic_buffers","function_id":"{variant}","value_str":"{len}","throughput":{{"Elements":{len}}}}}"#),
                )
                .unwrap();
                std::fs::write(
                    dir.join("estimates.json"),
                    format!(r#"{{"mean":{{"confidence_interval":{{"lower_bound":{},"upper_bound":{}}},"point_estimate":{mean}}}}}"#, mean * 0.99, mean * 1.01),
                )
                .unwrap();
            }
        }
        for d in [&dirs.charts, &dirs.results] {
            std::fs::create_dir_all(d).unwrap();
        }
        let stdout = "faults dynamic_buffers/first_touch/10 2.0\nnoise\n";
        let results = Results::read(&dirs.criterion, "dynamic_buffers", stdout).unwrap();
        assert_eq!(results.estimates.len(), 18);
        assert_eq!(results.fault("first_touch", 10), Some(2.0));
        let machine = Machine {
            cpu: "Test CPU".into(),
            cores: 2,
            kernel: "Linux 6.0".into(),
            rustc: "rustc 1.0".into(),
            date: "2026-01-01".into(),
            mode: Mode::Quick,
        };
        let files = report_dynamic_buffers(&results, &machine, &dirs).unwrap();
        for f in &files {
            check_output(f).unwrap();
        }
        let table = std::fs::read_to_string(dirs.results.join("dynamic_buffers.md")).unwrap();
        assert!(table.contains("Test CPU, 2 cores, Linux 6.0"), "{table}");
        assert!(table.contains("| 100,000 |"), "{table}");
        // 40 ns of allocation beats a 35 ns kernel at n = 10 only.
        assert!(
            table.contains("allocating (malloc + free) costs more than the kernel at n = 10."),
            "{table}"
        );
        assert!(
            table
                .contains("first touch (page faults) costs more than the kernel at n = 10, 1,000."),
            "{table}"
        );
        let svg = std::fs::read_to_string(dirs.charts.join("dynamic_buffers.svg")).unwrap();
        assert!(svg.contains("alloc_in_loop") && svg.contains("Test CPU"));
        std::fs::remove_dir_all(&root).unwrap();
    }
}
