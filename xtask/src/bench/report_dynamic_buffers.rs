//! The dynamic_buffers report: ns per element by where the buffers are, what
//! each step adds over the kernel alone, two charts and a table.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use super::criterion::{Estimate, Results};
use super::machine::Machine;
use super::Dirs;
use crate::charts::{self, group_digits, sig2, sig3, Chart, Series};
use crate::numbers::Numbers;
use crate::Result;

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

pub fn report_dynamic_buffers(r: &Results, machine: &Machine, dirs: &Dirs) -> Result<Vec<PathBuf>> {
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
    let numbers = dynamic_buffers_numbers(r, &lens).write(&dirs.results, "dynamic_buffers")?;
    Ok(vec![chart1, chart2, table, csv, numbers])
}

/// The numbers Part IV quotes from a `dynamic_buffers` run, and the charts'
/// alt texts, written from the same estimates as the table.
pub fn dynamic_buffers_numbers(r: &Results, lens: &[u64]) -> Numbers {
    let at = |variant: &str, len: u64| r.get(variant, len).expect("checked by the report");
    let per_elem = |e: &Estimate| e.mean_ns / e.elements.unwrap_or(e.param).max(1) as f64;
    let mut n = Numbers::default();
    for &len in lens {
        for (variant, _) in DB_VARIANTS {
            n.add(
                format!("{variant}_ns_{len}"),
                sig2(per_elem(at(variant, len))),
            );
        }
        for ((_, with, without), key) in DB_ADDED.iter().zip(["copy", "alloc", "touch"]) {
            let extra = at(with, len).mean_ns - at(without, len).mean_ns;
            n.add(
                format!("{key}_ratio_{len}"),
                sig2(extra / at("preallocated", len).mean_ns),
            );
        }
        if let Some(f) = r.fault("first_touch", len) {
            n.add(format!("first_touch_faults_{len}"), format!("{f:.0}"));
        }
    }
    // One fault's cost: the extra time of first touch at the largest length,
    // divided by the faults it took there.
    if let Some(&len) = lens.last() {
        let extra = at("first_touch", len).mean_ns - at("prefaulted", len).mean_ns;
        if let Some(faults) = r.fault("first_touch", len).filter(|&f| f > 0.0) {
            n.add("fault_us", sig2(extra / faults / 1000.0));
        }
    }
    let series = |variant: &str| {
        lens.iter()
            .map(|&len| {
                format!(
                    "{} at n = {}",
                    sig2(per_elem(at(variant, len))),
                    group_digits(len)
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (first, last) = (
        lens.first().copied().unwrap_or(0),
        lens.last().copied().unwrap_or(0),
    );
    let mut alt = format!(
        "Time per element in nanoseconds against length n from {} to {}, both on log scales, one line per variant.",
        group_digits(first),
        group_digits(last)
    );
    for (variant, _) in DB_VARIANTS {
        let _ = write!(alt, " {variant}: {}.", series(variant));
    }
    n.add("chart_alt", alt);
    let mut alt = "Added time divided by kernel time against length n, log scales, with a dashed line at 1; values at or below 0 are not drawn.".to_owned();
    for ((name, with, without), key) in DB_ADDED.iter().zip(["copy", "alloc", "touch"]) {
        let values: Vec<String> = lens
            .iter()
            .map(|&len| {
                let ratio = n
                    .get(&format!("{key}_ratio_{len}"))
                    .unwrap_or("?")
                    .to_owned();
                format!("{ratio} at n = {}", group_digits(len))
            })
            .collect();
        let _ = write!(alt, " {name} ({with} - {without}): {}.", values.join(", "));
    }
    n.add("added_alt", alt);
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::{check_output, Mode};

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
