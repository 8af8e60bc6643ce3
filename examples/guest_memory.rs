//! What a dynamic-memory test reads from a Linux guest, and how it judges it
//! the way LISA's Hyper-V suite does: `/proc/meminfo`'s MemTotal,
//! MemAvailable and AnonHugePages, the memory the host has assigned, the
//! host's policy for giving and taking memory, and LISA's tolerances.
//!
//! - Explained in: "Testing in a real guest" (src/part2-real-guest.md)
//! - Run: `cargo run --example guest_memory`
//! - Tested by: `cargo test --example guest_memory`, and in a QEMU guest by
//!   `cargo test --test vm_dynamic_memory`
//! - Depends on: std

use std::process::ExitCode;

// ANCHOR: reading
/// What LISA's suite reads from the guest's `/proc/meminfo`, and what
/// hv_balloon reports to Hyper-V as pressure, in KiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestReading {
    pub mem_total_kib: u64,
    pub mem_available_kib: u64,
    /// Memory the guest's processes have mapped and may touch.
    pub committed_as_kib: u64,
    /// Anonymous memory backed by transparent huge pages.
    pub anon_huge_kib: u64,
}

impl GuestReading {
    /// Reads the four fields; a missing or unreadable one is an error
    /// (LISA reads a missing field as 0, which would pass a "rises" check
    /// by accident the other way round).
    pub fn parse(meminfo: &str) -> Result<GuestReading, String> {
        let field = |name: &str| -> Result<u64, String> {
            let line = meminfo
                .lines()
                .find(|l| l.split(':').next() == Some(name))
                .ok_or_else(|| format!("/proc/meminfo has no {name}"))?;
            let number = line.split_whitespace().nth(1).unwrap_or_default();
            number
                .parse()
                .map_err(|_| format!("/proc/meminfo: no number in `{line}`"))
        };
        Ok(GuestReading {
            mem_total_kib: field("MemTotal")?,
            mem_available_kib: field("MemAvailable")?,
            committed_as_kib: field("Committed_AS")?,
            anon_huge_kib: field("AnonHugePages")?,
        })
    }
    // ANCHOR_END: reading

    // ANCHOR: is_short
    /// LISA's `_read_meminfo_value(...) // 1024`: MiB, rounded down.
    pub fn mem_total_mib(&self) -> u64 {
        self.mem_total_kib / 1024
    }

    pub fn mem_available_mib(&self) -> u64 {
        self.mem_available_kib / 1024
    }

    /// Short of memory: what is mapped no longer fits with `buffer_mib` to
    /// spare, or what is free is below it.
    pub fn is_short(&self, buffer_mib: u64) -> bool {
        let committed = self.committed_as_kib / 1024;
        committed + buffer_mib > self.mem_total_mib() || self.mem_available_mib() < buffer_mib
    }
    // ANCHOR_END: is_short
}

// ANCHOR: config
/// A VM's dynamic memory settings, as Hyper-V names them, in MiB: it boots
/// with `startup`, and the host may take it down to `minimum` or give it
/// up to `maximum`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DynamicMemoryConfig {
    pub startup_mib: u64,
    pub minimum_mib: u64,
    pub maximum_mib: u64,
}

/// What the host has assigned, from its own side (QEMU's QMP): the base RAM
/// the balloon leaves the guest, plus what virtio-mem has plugged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Assigned {
    pub balloon_mib: u64,
    pub plugged_mib: u64,
}

impl Assigned {
    pub fn total_mib(&self) -> u64 {
        self.balloon_mib.saturating_add(self.plugged_mib)
    }

    /// LISA's "net pages transaction" (`pages_added - pages_ballooned` of
    /// hv_balloon's debugfs file) in MiB: memory added minus memory taken,
    /// counted from the startup memory.
    pub fn net_mib(&self, config: &DynamicMemoryConfig) -> i64 {
        self.total_mib() as i64 - config.startup_mib as i64
    }
}
// ANCHOR_END: config

// ANCHOR: action
/// One decision of the host's memory manager.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Hold,
    /// Set the balloon so that it leaves the guest this much base RAM.
    Balloon {
        balloon_mib: u64,
    },
    /// Ask virtio-mem to have this much plugged.
    Plug {
        plugged_mib: u64,
    },
}

/// The host's side of dynamic memory. Like Hyper-V, it reads what
/// hv_balloon's pressure report carries (`post_status` sends
/// `vm_memory_committed()` and `si_mem_available()`, that is Committed_AS
/// and MemAvailable); the guest is short when either leaves less than
/// `low_watermark_mib`. Each decision moves `step_mib`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub low_watermark_mib: u64,
    pub step_mib: u64,
}
// ANCHOR_END: action

impl Policy {
    // ANCHOR: guest_pressure
    /// Guest pressure: give memory back through the balloon first (Hyper-V
    /// "balloon down"), then hot-add with virtio-mem, never past the maximum.
    pub fn on_guest_reading(
        &self,
        config: &DynamicMemoryConfig,
        now: &Assigned,
        reading: &GuestReading,
    ) -> Action {
        if !reading.is_short(self.low_watermark_mib) {
            return Action::Hold;
        }
        if now.balloon_mib < config.startup_mib {
            let balloon_mib = (now.balloon_mib + self.step_mib).min(config.startup_mib);
            return Action::Balloon { balloon_mib };
        }
        let room = config.maximum_mib.saturating_sub(config.startup_mib);
        let plugged_mib = (now.plugged_mib + self.step_mib).min(room);
        if plugged_mib == now.plugged_mib {
            return Action::Hold; // at the maximum: the guest's own OOM killer decides
        }
        Action::Plug { plugged_mib }
    }
    // ANCHOR_END: guest_pressure

    // ANCHOR: host_pressure
    /// Host pressure: take `reclaim_mib` back through the balloon (Hyper-V
    /// "balloon up"), never below the minimum.
    pub fn on_host_pressure(
        &self,
        config: &DynamicMemoryConfig,
        now: &Assigned,
        reclaim_mib: u64,
    ) -> Action {
        let total = now.total_mib().saturating_sub(reclaim_mib);
        let total = total.max(config.minimum_mib);
        let balloon_mib = total.saturating_sub(now.plugged_mib);
        if balloon_mib >= now.balloon_mib {
            return Action::Hold;
        }
        Action::Balloon { balloon_mib }
    }
    // ANCHOR_END: host_pressure
}

// ANCHOR: tolerances
/// LISA's tolerances (`limit_tolerance_mb`, `host_guest_tolerance_mb`). LISA
/// names them MB but counts KiB / 1024: they are MiB.
pub const LIMIT_TOLERANCE_MIB: u64 = 128;
pub const HOST_GUEST_TOLERANCE_MIB: u64 = 512;

/// A check's verdict, with what it compared either way.
pub type Verdict = Result<String, String>;

fn verdict(ok: bool, text: String) -> Verdict {
    if ok {
        Ok(text)
    } else {
        Err(text)
    }
}

/// assertpy's `is_close_to(expected, tolerance)`: within, inclusive.
pub fn close_to(what: &str, value: i64, expected: i64, tolerance: u64) -> Verdict {
    let text = format!("{what} {value:+} MiB, expected {expected:+} MiB within {tolerance}");
    verdict(value.abs_diff(expected) <= tolerance, text)
}

pub fn greater_than(what: &str, value: i64, before: i64) -> Verdict {
    verdict(
        value > before,
        format!("{what} {before} -> {value}, must rise"),
    )
}

pub fn less_than(what: &str, value: i64, before: i64) -> Verdict {
    verdict(
        value < before,
        format!("{what} {before:+} -> {value:+} MiB, must fall"),
    )
}
// ANCHOR_END: tolerances

// ANCHOR: alignment
/// LISA's `_validate_host_guest_alignment`: the guest's MemTotal within 512
/// MiB of what the host says it assigned. The gap is the kernel's own
/// reservations, which the guest never counts in MemTotal.
pub fn host_guest_aligned(reading: &GuestReading, assigned: &Assigned) -> Verdict {
    let (guest, host) = (reading.mem_total_mib(), assigned.total_mib());
    let gap = guest.abs_diff(host);
    let text = format!(
        "MemTotal {guest} MiB, host assigned {host} MiB: {gap} apart, at most {HOST_GUEST_TOLERANCE_MIB}"
    );
    verdict(gap <= HOST_GUEST_TOLERANCE_MIB, text)
}
// ANCHOR_END: alignment

const PROGRAM: &str = "guest_memory";
const USAGE: &str = "usage: guest_memory [--startup-mib N] [--minimum-mib N] [--maximum-mib N]
  Reads this machine's /proc/meminfo as a guest's, and says what the host's
  policy would do and whether LISA's host/guest check would pass, for a
  guest whose host assigned it its startup memory.
  --startup-mib N   memory at boot (128..=1048576, default 768)
  --minimum-mib N   the least the host may leave it, at most --startup-mib (128..=1048576, default 384)
  --maximum-mib N   the most the host may give it, at least --startup-mib (128..=1048576, default 1280)";

/// The policy the suite runs: a step of 128 MiB when MemAvailable is under
/// 96 MiB.
pub const POLICY: Policy = Policy {
    low_watermark_mib: 96,
    step_mib: 128,
};

fn main() -> ExitCode {
    let mut args = Args::parse(PROGRAM, USAGE);
    let config = DynamicMemoryConfig {
        startup_mib: args.number("--startup-mib", 768, 128..=1 << 20),
        minimum_mib: args.number("--minimum-mib", 384, 128..=1 << 20),
        maximum_mib: args.number("--maximum-mib", 1280, 128..=1 << 20),
    };
    if config.minimum_mib > config.startup_mib {
        args.fail("--minimum-mib must be at most --startup-mib");
    }
    if config.maximum_mib < config.startup_mib {
        args.fail("--maximum-mib must be at least --startup-mib");
    }
    args.finish();
    let text = match std::fs::read_to_string("/proc/meminfo") {
        Ok(text) => text,
        Err(e) => {
            eprintln!("{PROGRAM}: cannot read /proc/meminfo (Linux only): {e}");
            return ExitCode::FAILURE;
        }
    };
    let reading = match GuestReading::parse(&text) {
        Ok(reading) => reading,
        Err(e) => {
            eprintln!("{PROGRAM}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let assigned = Assigned {
        balloon_mib: config.startup_mib,
        plugged_mib: 0,
    };
    println!(
        "this machine as the guest: MemTotal {} MiB, MemAvailable {} MiB, AnonHugePages {} MiB",
        reading.mem_total_mib(),
        reading.mem_available_mib(),
        reading.anon_huge_kib / 1024
    );
    println!(
        "host policy (startup {}, minimum {}, maximum {} MiB; {} MiB assigned): {}",
        config.startup_mib,
        config.minimum_mib,
        config.maximum_mib,
        assigned.total_mib(),
        describe(POLICY.on_guest_reading(&config, &assigned, &reading))
    );
    let aligned = host_guest_aligned(&reading, &assigned);
    match &aligned {
        Ok(text) => println!("host/guest alignment passes: {text}"),
        Err(text) => println!("host/guest alignment fails: {text}"),
    }
    ExitCode::SUCCESS
}

fn describe(action: Action) -> String {
    match action {
        Action::Hold => "hold: MemAvailable is above the low watermark".to_owned(),
        Action::Balloon { balloon_mib } => format!("set the balloon to leave {balloon_mib} MiB"),
        Action::Plug { plugged_mib } => format!("plug virtio-mem memory up to {plugged_mib} MiB"),
    }
}

// SHARED: cli (canonical: examples/map_and_touch.rs)
/// The command line, read the same way by every example: `--name value`
/// flags and switches, then `-- words` for a command to run. `--help` prints
/// the usage and exits 0; anything wrong prints one line naming the flag
/// and exits 2.
struct Args {
    program: &'static str,
    words: Vec<String>,
}

#[allow(dead_code)] // each example uses the methods it needs
impl Args {
    fn parse(program: &'static str, usage: &str) -> Args {
        let words: Vec<String> = std::env::args().skip(1).collect();
        if words
            .iter()
            .take_while(|w| *w != "--")
            .any(|w| w == "--help" || w == "-h")
        {
            println!("{usage}");
            std::process::exit(0);
        }
        Args { program, words }
    }

    fn fail(&self, why: &str) -> ! {
        eprintln!("{}: {why} (see --help)", self.program);
        std::process::exit(2)
    }

    /// `--name VALUE`, taken off the command line.
    fn text(&mut self, name: &str) -> Option<String> {
        let at = self
            .words
            .iter()
            .take_while(|w| *w != "--")
            .position(|w| w == name)?;
        if self.words.get(at + 1).is_none_or(|value| value == "--") {
            self.fail(&format!("{name} needs a value"));
        }
        self.words.remove(at);
        Some(self.words.remove(at))
    }

    /// `--name N`: a whole number in `range`, or `default` if absent.
    fn number(&mut self, name: &str, default: u64, range: std::ops::RangeInclusive<u64>) -> u64 {
        let Some(text) = self.text(name) else {
            return default;
        };
        match text.parse::<u64>() {
            Ok(n) if range.contains(&n) => n,
            _ => {
                let (min, max) = (range.start(), range.end());
                self.fail(&format!(
                    "{name} takes a whole number from {min} to {max}, not `{text}`"
                ))
            }
        }
    }

    /// Whether the switch `--name` was given.
    fn switch(&mut self, name: &str) -> bool {
        let at = self
            .words
            .iter()
            .take_while(|w| *w != "--")
            .position(|w| w == name);
        at.map(|at| self.words.remove(at)).is_some()
    }

    /// The words after `--` (a command to run), or none.
    fn rest(&mut self) -> Vec<String> {
        let at = self.words.iter().position(|w| w == "--");
        at.map(|at| self.words.split_off(at).split_off(1))
            .unwrap_or_default()
    }

    /// Ends the parse: a word no flag took is an error.
    fn finish(self) {
        if let Some(word) = self.words.first() {
            self.fail(&format!("unknown argument `{word}`"));
        }
    }
}
// SHARED_END: cli

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: DynamicMemoryConfig = DynamicMemoryConfig {
        startup_mib: 512,
        minimum_mib: 256,
        maximum_mib: 1024,
    };

    fn reading(available_mib: u64) -> GuestReading {
        GuestReading {
            mem_total_kib: 457 << 10,
            mem_available_kib: available_mib << 10,
            committed_as_kib: 100 << 10,
            anon_huge_kib: 0,
        }
    }

    #[test]
    fn parses_the_four_fields() {
        let text = "MemTotal:  467856 kB\nMemFree: 1 kB\nMemAvailable: 4096 kB\n\
                    Committed_AS: 1024 kB\nAnonHugePages:  2048 kB\n";
        let r = GuestReading::parse(text).unwrap();
        assert_eq!((r.mem_total_mib(), r.mem_available_mib()), (456, 4));
        assert_eq!((r.anon_huge_kib, r.committed_as_kib), (2048, 1024));
        assert!(GuestReading::parse("MemTotal: 1 kB\nMemAvailable: 1 kB\n").is_err());
        assert!(GuestReading::parse("MemTotal: x kB\n").is_err());
    }

    #[test]
    fn mapped_memory_past_memtotal_is_pressure_too() {
        let mut r = reading(300);
        assert!(!r.is_short(96));
        r.committed_as_kib = 400 << 10; // 400 + 96 > 457
        assert!(r.is_short(96));
    }

    #[test]
    fn guest_pressure_deflates_first_then_plugs_up_to_the_maximum() {
        let full = Assigned {
            balloon_mib: 512,
            plugged_mib: 0,
        };
        assert_eq!(
            POLICY.on_guest_reading(&CONFIG, &full, &reading(200)),
            Action::Hold
        );
        let ballooned = Assigned {
            balloon_mib: 256,
            plugged_mib: 0,
        };
        let short = reading(10);
        assert_eq!(
            POLICY.on_guest_reading(&CONFIG, &ballooned, &short),
            Action::Balloon { balloon_mib: 384 }
        );
        assert_eq!(
            POLICY.on_guest_reading(&CONFIG, &full, &short),
            Action::Plug { plugged_mib: 128 }
        );
        let near = Assigned {
            balloon_mib: 512,
            plugged_mib: 480,
        };
        assert_eq!(
            POLICY.on_guest_reading(&CONFIG, &near, &short),
            Action::Plug { plugged_mib: 512 }
        );
        let at_max = Assigned {
            balloon_mib: 512,
            plugged_mib: 512,
        };
        assert_eq!(
            POLICY.on_guest_reading(&CONFIG, &at_max, &short),
            Action::Hold
        );
    }

    #[test]
    fn host_pressure_stops_at_the_minimum() {
        let full = Assigned {
            balloon_mib: 512,
            plugged_mib: 0,
        };
        assert_eq!(
            POLICY.on_host_pressure(&CONFIG, &full, 128),
            Action::Balloon { balloon_mib: 384 }
        );
        assert_eq!(
            POLICY.on_host_pressure(&CONFIG, &full, 10_000),
            Action::Balloon { balloon_mib: 256 }
        );
        let at_min = Assigned {
            balloon_mib: 256,
            plugged_mib: 0,
        };
        assert_eq!(POLICY.on_host_pressure(&CONFIG, &at_min, 64), Action::Hold);
        assert_eq!(at_min.net_mib(&CONFIG), -256);
    }

    #[test]
    fn lisa_tolerances_are_inclusive() {
        assert!(close_to("net", 512 - 128, 512, LIMIT_TOLERANCE_MIB).is_ok());
        assert!(close_to("net", 512 - 129, 512, LIMIT_TOLERANCE_MIB).is_err());
        assert!(greater_than("AnonHugePages", 1, 0).is_ok());
        assert!(greater_than("AnonHugePages", 0, 0).is_err());
        assert!(less_than("net", -1, 0).is_ok());
        let assigned = Assigned {
            balloon_mib: 512,
            plugged_mib: 0,
        };
        assert!(host_guest_aligned(&reading(1), &assigned).is_ok());
        let far = Assigned {
            balloon_mib: 512,
            plugged_mib: 1 << 20,
        };
        assert!(host_guest_aligned(&reading(1), &far).is_err());
    }
}
