//! The machine and the date that every table, chart and recorded output
//! names: CPU model, cores, kernel, rustc, and today's date (UTC).

use std::process::Command;

use super::Mode;

/// The machine a run measured on, named under every table and chart.
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub kernel: String,
    pub rustc: String,
    pub date: String,
    pub mode: Mode,
}

impl Machine {
    pub fn here(mode: Mode) -> Machine {
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
    pub fn to_text(&self) -> String {
        format!(
            "cpu {}\ncores {}\nkernel {}\nrustc {}\ndate {}\n",
            self.cpu, self.cores, self.kernel, self.rustc, self.date
        )
    }

    pub fn parse(text: &str) -> Option<Machine> {
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

    pub fn line(&self) -> String {
        format!(
            "{}, {} cores, {}, {}, {}",
            self.cpu, self.cores, self.kernel, self.rustc, self.date
        )
    }

    pub fn footer(&self) -> String {
        let quick = if self.mode == Mode::Quick {
            " (--quick: pipeline check, not numbers)"
        } else {
            ""
        };
        format!("{}; cargo xtask bench{quick}", self.line())
    }

    pub fn table_line(&self, bench: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_from_days() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
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
}
