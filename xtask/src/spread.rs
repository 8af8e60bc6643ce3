//! `cargo xtask bench --repeat N`: how far N full runs of the benches
//! disagree. Each run's `benches/results/*.csv` is kept; this module reads
//! them back and writes `benches/results/spread.md`, the table
//! "Reproducing the numbers" includes: for each benchmark, how much its
//! time and its ratio to the floor of its own run moved between the runs.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use crate::Result;

/// The floor each group's ratios are taken to, measured in the same run.
const FLOORS: [(&str, &str); 2] = [
    ("dynamic_buffers", "preallocated"),
    ("memory_grow", "floor"),
];

/// One run's means, by (group, function, param).
pub type Means = BTreeMap<(String, String, u64), f64>;

/// Reads the means of one of our CSV files (see `Results::csv`).
pub fn read_csv(text: &str) -> Result<Means> {
    let mut means = Means::new();
    for (n, line) in text.lines().enumerate().skip(1) {
        let cells: Vec<&str> = line.split(',').collect();
        let bad = || format!("line {}: not a results row: {line}", n + 1);
        let (group, function, param, mean) = match cells.as_slice() {
            [g, f, p, _, m, ..] => (g, f, p, m),
            _ => return Err(bad().into()),
        };
        let param = param.parse().map_err(|_| bad())?;
        let mean = mean.parse().map_err(|_| bad())?;
        means.insert((group.to_string(), function.to_string(), param), mean);
    }
    Ok(means)
}

/// The 1-minute load average now (`/proc/loadavg`), to say how busy the
/// machine was as a run ended; `None` off Linux.
pub fn load_average() -> Option<String> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    text.split_whitespace().next().map(str::to_owned)
}

/// `(max - min) / min`, as a percentage.
fn spread(values: &[f64]) -> f64 {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (max - min) / min * 100.0
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// The spread table over `runs` (each run's means), with `load` the load
/// average at the end of each run.
pub fn table(runs: &[Means], load: &[String]) -> String {
    let mut md = format!(
        "How far {} full runs of `cargo xtask bench --repeat {}` disagreed, run one after the other on the same machine; the 1-minute load average at the end of each run: {}. A benchmark's spread is (largest − smallest) / smallest over the runs, for its mean time and for its ratio to the floor of its own run. The floors themselves are left out:\n\n",
        runs.len(),
        runs.len(),
        load.join(", ")
    );
    md.push_str("| group | benchmarks | median spread of the time | median spread of the ratio | largest spread of the ratio |\n| --- | ---: | ---: | ---: | --- |\n");
    for (group, floor) in FLOORS {
        let Some(first) = runs.first() else { break };
        let mut times = Vec::new();
        let mut ratios: Vec<(f64, String)> = Vec::new();
        for key @ (g, function, param) in first.keys() {
            if g != group || function == floor {
                continue;
            }
            let floor_key = (g.clone(), floor.to_owned(), *param);
            let per_run: Option<Vec<(f64, f64)>> = runs
                .iter()
                .map(|run| Some((*run.get(key)?, run.get(key)? / run.get(&floor_key)?)))
                .collect();
            let Some(per_run) = per_run else { continue };
            let (t, r): (Vec<f64>, Vec<f64>) = per_run.into_iter().unzip();
            times.push(spread(&t));
            ratios.push((spread(&r), format!("`{function}` at {param}")));
        }
        if times.is_empty() {
            continue;
        }
        let largest = ratios.iter().max_by(|a, b| a.0.total_cmp(&b.0)).cloned();
        let (largest, which) = largest.unwrap_or((f64::NAN, String::new()));
        let _ = writeln!(
            md,
            "| `{group}` | {} | {:.0}% | {:.0}% | {:.0}% ({which}) |",
            times.len(),
            median(times),
            median(ratios.iter().map(|r| r.0).collect()),
            largest
        );
    }
    md
}

/// Writes the table from the CSV files kept under `runs_dir/<k>/`.
pub fn write(runs_dir: &Path, count: usize, load: &[String], out: &Path) -> Result<()> {
    let mut runs = Vec::new();
    for k in 1..=count {
        let mut means = Means::new();
        for (group, _) in FLOORS {
            let file = runs_dir.join(k.to_string()).join(format!("{group}.csv"));
            if let Ok(text) = std::fs::read_to_string(&file) {
                means.extend(read_csv(&text).map_err(|e| format!("{}: {e}", file.display()))?);
            }
        }
        runs.push(means);
    }
    std::fs::write(out, table(&runs, load))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str =
        "group,function,param,elements,mean_ns,lower_ns,upper_ns,minor_faults_per_iteration\n";

    fn run(floor: f64, reserved: f64) -> Means {
        let text = format!(
            "{HEADER}memory_grow,floor,256,255,{floor},0,0,\nmemory_grow,reserved,256,255,{reserved},0,0,\n"
        );
        read_csv(&text).expect("a results file")
    }

    #[test]
    fn the_spread_of_times_and_of_ratios_comes_from_the_runs() {
        // The time moves 50%; the ratio to the floor does not move at all.
        let md = table(
            &[run(100.0, 120.0), run(150.0, 180.0)],
            &["0.5".into(), "3.1".into()],
        );
        assert!(
            md.contains("load average at the end of each run: 0.5, 3.1"),
            "{md}"
        );
        assert!(
            md.contains("| `memory_grow` | 1 | 50% | 0% | 0% (`reserved` at 256) |"),
            "{md}"
        );
        assert!(
            !md.contains("dynamic_buffers"),
            "no rows for a group with no results: {md}"
        );
    }

    #[test]
    fn a_row_that_is_not_a_result_is_an_error() {
        assert!(read_csv(&format!("{HEADER}memory_grow,floor")).is_err());
        assert!(read_csv(&format!("{HEADER}memory_grow,floor,x,1,2,3,4,")).is_err());
    }
}
