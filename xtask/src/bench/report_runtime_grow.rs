//! The runtime_grow report: µs per grow under wasmtime, with its own memory
//! and with Part I's, the ratios to `floor` measured in the same run, the
//! two comparisons the runtime chapter makes, a chart and a table.

use std::fmt::Write as _;
use std::path::PathBuf;

use super::criterion::{Estimate, Results};
use super::machine::Machine;
use super::Dirs;
use crate::charts::{self, group_digits, sig2, sig3, Chart, Series};
use crate::numbers::Numbers;
use crate::Result;

const RG_ORDER: [&str; 7] = [
    "floor",
    "wasmtime_default",
    "wasmtime_1mib",
    "ours_reserved",
    "ours_relocate",
    "ours_remap",
    "ours_copy",
];

/// What each row measures, for the table.
const RG_MEANING: [(&str, &str); 7] = [
    ("floor", "no wasm: `PROT_NONE`, `mprotect`, a page fault"),
    ("wasmtime_default", "wasmtime's memory, default config"),
    (
        "wasmtime_1mib",
        "wasmtime's memory, 1 MiB reserved and for growth",
    ),
    (
        "ours_reserved",
        "`LinearMemory`, default config (fixed base)",
    ),
    (
        "ours_relocate",
        "`LinearMemory`, 16 pages reserved, movable",
    ),
    ("ours_remap", "`RemapMemory` (`mremap`), movable"),
    ("ours_copy", "`RemapMemory` copying every grow, movable"),
];

/// The chapter's two claims: (numerator, denominator, P, the bound, and
/// whether the ratio must stay below it or reach it).
const RG_CLAIMS: [(&str, &str, u64, f64, bool); 2] = [
    ("ours_reserved", "wasmtime_default", 16384, 1.15, true),
    ("wasmtime_1mib", "ours_relocate", 4096, 500.0, false),
];

fn functions(r: &Results) -> Vec<String> {
    let mut functions = r.functions();
    functions.sort_by_key(|f| {
        RG_ORDER
            .iter()
            .position(|o| o == f)
            .unwrap_or(RG_ORDER.len())
    });
    functions
}

fn per_grow_us(e: &Estimate) -> f64 {
    e.mean_ns / e.elements.unwrap_or(1).max(1) as f64 / 1000.0
}

pub fn report_runtime_grow(r: &Results, machine: &Machine, dirs: &Dirs) -> Result<Vec<PathBuf>> {
    let functions = functions(r);
    if !functions.iter().any(|f| f == "floor") {
        return Err("runtime_grow: no `floor` results to compare with".into());
    }
    let sizes = r.params();
    let series: Vec<Series> = functions
        .iter()
        .map(|f| Series {
            label: f.clone(),
            points: sizes
                .iter()
                .filter_map(|&p| r.get(f, p).map(|e| (p as f64, per_grow_us(e))))
                .collect(),
            style: RG_ORDER
                .iter()
                .position(|o| o == f)
                .unwrap_or(RG_ORDER.len()),
        })
        .collect();
    let chart = dirs.charts.join("runtime_grow.svg");
    charts::draw(
        &chart,
        &Chart {
            title: "runtime_grow: wasm memory.grow under wasmtime, page by page to P pages".into(),
            x_desc: "final size P (WebAssembly pages, log scale)".into(),
            y_desc: "µs per grow (log scale)".into(),
            footer: machine.footer(),
            series,
            reference: None,
            x_log_base: 2.0,
        },
    )?;

    let mut md = String::new();
    let line = machine.table_line("runtime_grow");
    let line = line.replace("(`benches/", "(`runtime/benches/");
    let _ = writeln!(md, "{line}\n");
    let header = |md: &mut String| {
        md.push_str("| strategy | memory |");
        for &p in &sizes {
            let _ = write!(md, " P = {} |", group_digits(p));
        }
        md.push_str("\n| --- | --- |");
        md.push_str(&" ---: |".repeat(sizes.len()));
        md.push('\n');
    };
    let meaning = |f: &str| {
        RG_MEANING
            .iter()
            .find(|(name, _)| *name == f)
            .map_or("", |(_, m)| m)
    };
    let _ = writeln!(
        md,
        "µs per grow: criterion's mean for one run from 1 to P pages, divided by its P - 1 grows (\"-\": not run at that size):\n"
    );
    header(&mut md);
    for f in &functions {
        let _ = write!(md, "| `{f}` | {} |", meaning(f));
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
    header(&mut md);
    for f in functions.iter().filter(|f| *f != "floor") {
        let _ = write!(md, "| `{f}` | {} |", meaning(f));
        for &p in &sizes {
            let cell = match (r.get(f, p), r.get("floor", p)) {
                (Some(e), Some(floor)) => format!("{}×", sig3(e.mean_ns / floor.mean_ns)),
                _ => "-".to_owned(),
            };
            let _ = write!(md, " {cell} |");
        }
        md.push('\n');
    }
    write_claims(&mut md, r);
    let table = dirs.results.join("runtime_grow.md");
    std::fs::write(&table, md)?;
    let csv = dirs.results.join("runtime_grow.csv");
    std::fs::write(&csv, r.csv())?;
    let numbers = runtime_grow_numbers(r);
    let file = dirs.results.join("runtime_grow_numbers.txt");
    let text = numbers.text("runtime_grow");
    std::fs::write(&file, text.replace("`benches/", "`runtime/benches/"))?;
    Ok(vec![chart, table, csv, file])
}

/// `a / b` at `p`, if both were measured.
fn ratio(r: &Results, a: &str, b: &str, p: u64) -> Option<f64> {
    Some(r.get(a, p)?.mean_ns / r.get(b, p)?.mean_ns)
}

fn write_claims(md: &mut String, r: &Results) {
    md.push_str("\nThe two comparisons, in this run:\n\n");
    md.push_str("| ratio | at P | bound | measured | met? |\n| --- | ---: | ---: | ---: | --- |\n");
    for (a, b, p, bound, below) in RG_CLAIMS {
        let (measured, met) = match ratio(r, a, b, p) {
            Some(x) => (
                format!("{}×", sig3(x)),
                if (below && x <= bound) || (!below && x >= bound) {
                    "yes"
                } else {
                    "**no**"
                },
            ),
            None => ("-".to_owned(), "not measured"),
        };
        let sign = if below { "≤" } else { "≥" };
        let _ = writeln!(
            md,
            "| `{a}` / `{b}` | {} | {sign} {bound}× | {measured} | {met} |",
            group_digits(p)
        );
    }
}

/// The numbers the runtime chapter quotes, and the chart's alt text.
pub fn runtime_grow_numbers(r: &Results) -> Numbers {
    let sizes = r.params();
    let mut n = Numbers::default();
    let mut alt = format!(
        "Microseconds per grow under wasmtime against the final size P, from {} to {} WebAssembly pages, both on log scales, one line per memory.",
        group_digits(sizes.first().copied().unwrap_or(0)),
        group_digits(sizes.last().copied().unwrap_or(0))
    );
    for f in functions(r) {
        let mut points = Vec::new();
        for &p in &sizes {
            let Some(e) = r.get(&f, p) else { continue };
            n.add(format!("{f}_us_{p}"), sig3(per_grow_us(e)));
            points.push(format!(
                "{} at P = {}",
                sig2(per_grow_us(e)),
                group_digits(p)
            ));
            if let Some(x) = ratio(r, &f, "floor", p).filter(|_| f != "floor") {
                n.add(format!("{f}_ratio_{p}"), sig3(x));
            }
        }
        let _ = write!(alt, " {f}: {} µs.", points.join(", "));
    }
    for (a, b, p, _, _) in RG_CLAIMS {
        if let Some(x) = ratio(r, a, b, p) {
            n.add(format!("{a}_over_{b}_{p}"), sig3(x));
        }
    }
    n.add("chart_alt", alt);
    n
}
