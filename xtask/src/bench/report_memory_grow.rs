//! The memory_grow report: µs per grow by strategy and memory size, the
//! ratios to `floor` measured in the same run, Part I's speed targets, a
//! chart and a table.

use std::fmt::Write as _;
use std::path::PathBuf;

use super::criterion::{Estimate, Results};
use super::machine::Machine;
use super::Dirs;
use crate::charts::{self, group_digits, sig2, sig3, Chart, Series};
use crate::numbers::Numbers;
use crate::Result;

const MG_ORDER: [&str; 6] = [
    "floor",
    "reserved",
    "remap",
    "relocate",
    "copy",
    "vec_resize",
];

/// The strategies measured, in the order of `MG_ORDER`.
pub fn mg_functions(r: &Results) -> Vec<String> {
    let mut functions = r.functions();
    functions.sort_by_key(|f| {
        MG_ORDER
            .iter()
            .position(|o| o == f)
            .unwrap_or(MG_ORDER.len())
    });
    functions
}

pub fn report_memory_grow(r: &Results, machine: &Machine, dirs: &Dirs) -> Result<Vec<PathBuf>> {
    let functions = mg_functions(r);
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
    let numbers = memory_grow_numbers(r, &functions, &sizes).write(&dirs.results, "memory_grow")?;
    Ok(vec![chart, table, csv, numbers])
}

/// The numbers Part I and Part IV quote from a `memory_grow` run, and the
/// chart's alt text, written from the same estimates as the table.
pub fn memory_grow_numbers(r: &Results, functions: &[String], sizes: &[u64]) -> Numbers {
    let per_grow_us = |e: &Estimate| e.mean_ns / e.elements.unwrap_or(1).max(1) as f64 / 1000.0;
    let mut n = Numbers::default();
    let mut in_place: Vec<f64> = Vec::new();
    let mut alt = format!(
        "Microseconds per grow against the final size P, from {} to {} WebAssembly pages, both on log scales, one line per strategy.",
        group_digits(sizes.first().copied().unwrap_or(0)),
        group_digits(sizes.last().copied().unwrap_or(0))
    );
    for f in functions {
        let mut points = Vec::new();
        for &p in sizes {
            let Some(e) = r.get(f, p) else { continue };
            n.add(format!("{f}_us_{p}"), sig3(per_grow_us(e)));
            points.push(format!(
                "{} at P = {}",
                sig2(per_grow_us(e)),
                group_digits(p)
            ));
            if let Some(floor) = r.get("floor", p).filter(|_| f != "floor") {
                let ratio = e.mean_ns / floor.mean_ns;
                n.add(format!("{f}_ratio_{p}"), sig3(ratio));
                if ["reserved", "remap", "relocate"].contains(&f.as_str()) {
                    in_place.push(ratio);
                }
            }
        }
        let _ = write!(alt, " {f}: {} µs.", points.join(", "));
    }
    let floors: Vec<f64> = sizes
        .iter()
        .filter_map(|&p| r.get("floor", p).map(per_grow_us))
        .collect();
    let range = |v: &[f64], name: &str, n: &mut Numbers| {
        let min = v.iter().copied().fold(f64::INFINITY, f64::min);
        let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if min.is_finite() {
            n.add(format!("{name}_min"), sig3(min));
            n.add(format!("{name}_max"), sig3(max));
        }
    };
    range(&in_place, "in_place_ratio", &mut n);
    range(&floors, "floor_us", &mut n);
    n.add("chart_alt", alt);
    n
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
