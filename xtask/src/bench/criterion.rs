//! Criterion's results: one `new/` folder per benchmark under criterion's
//! home, holding `benchmark.json` (the ids and throughput) and
//! `estimates.json` (the statistics), read with serde; and the `faults <id>
//! <n>` lines the benches print.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::Deserialize;

use crate::Result;

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
    pub fn overlaps(&self, other: &Estimate) -> bool {
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
    pub fn read(criterion: &Path, group: &str, stdout: &str) -> Result<Results> {
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

    /// One run's results as its CSV file saved them (`Results::csv`).
    pub fn from_csv(group: &str, text: &str) -> Result<Results> {
        let mut results = Results {
            group: group.to_owned(),
            estimates: Vec::new(),
            faults: BTreeMap::new(),
        };
        for (n, line) in text.lines().enumerate().skip(1) {
            let bad = || format!("{group}.csv line {}: not a results row: {line}", n + 1);
            let cells: Vec<&str> = line.split(',').collect();
            let [g, function, param, elements, mean, lower, upper, faults] = cells[..] else {
                return Err(bad().into());
            };
            if g != group {
                return Err(bad().into());
            }
            let number = |cell: &str| cell.parse::<f64>().map_err(|_| bad());
            let param: u64 = param.parse().map_err(|_| bad())?;
            if !faults.is_empty() {
                let key = format!("{group}/{function}/{param}");
                results.faults.insert(key, number(faults)?);
            }
            results.estimates.push(Estimate {
                function: function.to_owned(),
                param,
                mean_ns: number(mean)?,
                lower_ns: number(lower)?,
                upper_ns: number(upper)?,
                elements: if elements.is_empty() {
                    None
                } else {
                    Some(elements.parse().map_err(|_| bad())?)
                },
            });
        }
        Ok(results)
    }

    pub fn get(&self, function: &str, param: u64) -> Option<&Estimate> {
        self.estimates
            .iter()
            .find(|e| e.function == function && e.param == param)
    }

    pub fn params(&self) -> Vec<u64> {
        let mut params: Vec<u64> = self.estimates.iter().map(|e| e.param).collect();
        params.sort_unstable();
        params.dedup();
        params
    }

    pub fn functions(&self) -> Vec<String> {
        let mut seen: Vec<String> = Vec::new();
        for e in &self.estimates {
            if !seen.contains(&e.function) {
                seen.push(e.function.clone());
            }
        }
        seen
    }

    pub fn fault(&self, function: &str, param: u64) -> Option<f64> {
        self.faults
            .get(&format!("{}/{function}/{param}", self.group))
            .copied()
    }

    /// The CSV every table comes from: for comparing two machines.
    pub fn csv(&self) -> String {
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

/// The fields of criterion's `benchmark.json` that the reports use.
#[derive(Deserialize)]
struct BenchmarkFile {
    function_id: String,
    value_str: String,
    throughput: Option<Throughput>,
}

/// Criterion writes `{"Elements": n}` or `{"Bytes": n}`; only elements count here.
#[derive(Deserialize)]
struct Throughput {
    #[serde(rename = "Elements")]
    elements: Option<u64>,
}

/// The fields of criterion's `estimates.json` that the reports use.
#[derive(Deserialize)]
struct EstimatesFile {
    mean: Statistic,
}

#[derive(Deserialize)]
struct Statistic {
    point_estimate: f64,
    confidence_interval: Interval,
}

#[derive(Deserialize)]
struct Interval {
    lower_bound: f64,
    upper_bound: f64,
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()).into())
}

fn read_estimate(new_dir: &Path) -> Result<Estimate> {
    let bench: BenchmarkFile = read_json(&new_dir.join("benchmark.json"))?;
    let est: EstimatesFile = read_json(&new_dir.join("estimates.json"))?;
    let param = bench.value_str.parse().map_err(|_| {
        format!(
            "{}: parameter `{}` is not a number",
            new_dir.display(),
            bench.value_str
        )
    })?;
    Ok(Estimate {
        function: bench.function_id,
        param,
        mean_ns: est.mean.point_estimate,
        lower_ns: est.mean.confidence_interval.lower_bound,
        upper_ns: est.mean.confidence_interval.upper_bound,
        elements: bench.throughput.and_then(|t| t.elements),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--numbers` reads back exactly what a run's CSV saved.
    #[test]
    fn a_runs_csv_reads_back_as_its_results() {
        let mut faults = BTreeMap::new();
        faults.insert("memory_grow/floor/256".to_owned(), 255.0);
        let run = Results {
            group: "memory_grow".into(),
            estimates: vec![Estimate {
                function: "floor".into(),
                param: 256,
                mean_ns: 373541.66,
                lower_ns: 362994.397,
                upper_ns: 392373.27,
                elements: Some(255),
            }],
            faults,
        };
        let back = Results::from_csv("memory_grow", &run.csv()).expect("our own CSV");
        assert_eq!(back.csv(), run.csv());
        assert_eq!(back.fault("floor", 256), Some(255.0));
        assert!(Results::from_csv("memory_grow", "header\nmemory_grow,floor\n").is_err());
        assert!(
            Results::from_csv("dynamic_buffers", &run.csv()).is_err(),
            "another group's file"
        );
    }

    /// Criterion's two files as it writes them (fields this module ignores
    /// included): the ids, the throughput and the mean come out.
    #[test]
    fn reads_criterion_files() {
        let dir = std::env::temp_dir().join(format!("xtask-criterion-{}", std::process::id()));
        let new = dir.join("memory_grow/remap/256/new");
        std::fs::create_dir_all(&new).unwrap();
        std::fs::write(
            new.join("benchmark.json"),
            r#"{"group_id":"memory_grow","function_id":"remap","value_str":"256","throughput":{"Elements":255},"full_id":"memory_grow/remap/256","directory_name":"memory_grow/remap/256","title":"memory_grow/remap/256"}"#,
        )
        .unwrap();
        std::fs::write(
            new.join("estimates.json"),
            r#"{"mean":{"confidence_interval":{"confidence_level":0.95,"lower_bound":20.1,"upper_bound":2.03e1},"point_estimate":20.2,"standard_error":0.06},"median":{"confidence_interval":{"confidence_level":0.95,"lower_bound":1,"upper_bound":2},"point_estimate":1.5,"standard_error":0.1},"slope":null}"#,
        )
        .unwrap();
        let results = Results::read(
            &dir,
            "memory_grow",
            "faults memory_grow/remap/256 3.5
",
        )
        .unwrap();
        assert_eq!(
            results.estimates,
            vec![Estimate {
                function: "remap".into(),
                param: 256,
                mean_ns: 20.2,
                lower_ns: 20.1,
                upper_ns: 20.3,
                elements: Some(255),
            }]
        );
        assert_eq!(results.fault("remap", 256), Some(3.5));

        // Bytes instead of elements, and a broken file, named in the error.
        std::fs::write(
            new.join("benchmark.json"),
            r#"{"function_id":"remap","value_str":"256","throughput":{"Bytes":4096}}"#,
        )
        .unwrap();
        let results = Results::read(&dir, "memory_grow", "").unwrap();
        assert_eq!(results.estimates[0].elements, None);
        std::fs::write(
            new.join("estimates.json"),
            r#"{"mean":{"point_estimate":1}}"#,
        )
        .unwrap();
        let err = Results::read(&dir, "memory_grow", "")
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("estimates.json") && err.contains("confidence_interval"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
