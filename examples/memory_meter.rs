//! One honest reading of this process's memory (RSS, PSS, peak, one mapping's
//! resident pages) and of the machine's (PSI, the memory cgroup). Each number
//! names its source; a missing one prints "unavailable: REASON".
//!
//! - Explained in: "Measuring memory honestly" (src/part2-measuring.md)
//! - Run: `cargo run --example memory_meter -- --map-mib 64 --touch-mib 16`
//! - Tested by: `cargo test --example memory_meter` and `cargo test --test memory_meter`
//! - Depends on: std, libc 0.2, memmap2 0.9

// `mdbook test` passes no `--extern`, so the crates are named here.
extern crate libc;
extern crate memmap2;

use std::process::ExitCode;

const MIB: u64 = 1 << 20;

const PROGRAM: &str = "memory_meter";
const USAGE: &str = "usage: memory_meter [--map-mib N] [--touch-mib N] [--interval-ms N]
  --map-mib N      MiB to map for the mincore reading (1..=2048, default 16)
  --touch-mib N    MiB of it to touch, at most --map-mib (0..=1024, default 8)
  --interval-ms N  how long to watch PSI, in milliseconds (0..=10000, default 100)";

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

#[cfg(target_os = "linux")]
pub use meter::*;

#[cfg(target_os = "linux")]
mod meter {
    use std::io;
    use std::path::{Path, PathBuf};

    // SHARED: kib_field (canonical: examples/memory_meter.rs)
    /// The value of a `Name:   123 kB` line, in bytes; `None` without the unit.
    pub fn kib_field(text: &str, name: &str) -> Option<u64> {
        let rest = text.lines().find_map(|l| l.strip_prefix(name))?;
        let mut words = rest.split_whitespace();
        let value: u64 = words.next()?.parse().ok()?;
        (words.next() == Some("kB")).then_some(value.checked_mul(1024)?)
    }
    // SHARED_END: kib_field

    // SHARED: rss (canonical: examples/memory_meter.rs)
    // ANCHOR: reading
    /// A value and the file it came from, or why there is none. The meter
    /// never makes a number up: a missing source is an `Err` with a reason.
    pub type Reading<T> = Result<Sourced<T>, String>;

    #[derive(Debug, Clone, PartialEq)]
    pub struct Sourced<T> {
        pub value: T,
        pub source: String,
    }

    /// The `Name:   123 kB` line of `/proc/self/FILE` (or `/proc/PID/FILE`),
    /// in bytes. A missing file or line is an error that names it.
    fn field(pid: Option<u32>, file: &str, name: &str) -> Reading<u64> {
        let pid = pid.map_or("self".to_owned(), |pid| pid.to_string());
        let path = format!("/proc/{pid}/{file}");
        let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
        let value = kib_field(&text, name).ok_or_else(|| format!("{path}: no `{name}` line"))?;
        let source = format!("{path} ({})", name.trim_end_matches(':'));
        Ok(Sourced { value, source })
    }
    // ANCHOR_END: reading

    // ANCHOR: rss
    /// RSS, exact: the sum over every mapping, from `smaps_rollup` (Linux
    /// 4.14+). Where that file is missing, the fast counter: `VmRSS` in
    /// `status`, which the kernel updates as pages come and go, and
    /// documents as approximate. The source says which one was read.
    pub fn rss(pid: Option<u32>) -> Reading<u64> {
        field(pid, "smaps_rollup", "Rss:").or_else(|exact| {
            field(pid, "status", "VmRSS:").map_err(|fast| format!("{exact}; {fast}"))
        })
    }
    // ANCHOR_END: rss
    // SHARED_END: rss

    // ANCHOR: pss
    /// The fast counter alone, which `rss` falls back to.
    pub fn fast_rss(pid: Option<u32>) -> Reading<u64> {
        field(pid, "status", "VmRSS:")
    }

    /// Proportional set size: each shared page divided among its sharers.
    pub fn pss(pid: Option<u32>) -> Reading<u64> {
        field(pid, "smaps_rollup", "Pss:")
    }

    /// Every mapped byte, resident or not.
    pub fn virtual_size(pid: Option<u32>) -> Reading<u64> {
        field(pid, "status", "VmSize:")
    }
    // ANCHOR_END: pss

    /// Anonymous memory mapped with transparent huge pages.
    pub fn anon_huge_pages(pid: Option<u32>) -> Reading<u64> {
        field(pid, "smaps_rollup", "AnonHugePages:")
    }

    impl<T> Sourced<T> {
        /// The same source, with the value changed by `f`.
        pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Sourced<U> {
            let (value, source) = (f(self.value), self.source);
            Sourced { value, source }
        }
    }

    fn read(path: &Path) -> Result<String, String> {
        std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
    }
    fn sourced<T>(value: T, path: &Path) -> Reading<T> {
        let source = path.display().to_string();
        Ok(Sourced { value, source })
    }

    // ANCHOR: peak
    /// The peak RSS since the process started or since `reset_peak`.
    /// `smaps_rollup` has no peak; `status` (`VmHWM`) is the only source.
    pub fn peak_rss(pid: Option<u32>) -> Reading<u64> {
        field(pid, "status", "VmHWM:")
    }

    /// Resets `VmHWM` to the current RSS (`echo 5 > /proc/self/clear_refs`).
    pub fn reset_peak() -> Result<(), String> {
        std::fs::write("/proc/self/clear_refs", "5")
            .map_err(|e| format!("/proc/self/clear_refs: {e}"))
    }
    // ANCHOR_END: peak

    // SHARED: page_size (canonical: examples/memory_meter.rs)
    /// The OS page size, from `sysconf`.
    pub fn page_size() -> io::Result<usize> {
        // SAFETY: sysconf takes no pointers; it returns -1 for an unknown
        // name, which the check below turns into an error.
        let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        usize::try_from(size)
            .ok()
            .filter(|&size| size > 0)
            .ok_or_else(|| io::Error::other("sysconf(_SC_PAGESIZE) failed"))
    }
    // SHARED_END: page_size
    // ANCHOR: mincore
    // SHARED: mincore (canonical: examples/memory_meter.rs)
    /// How many pages of `range` are resident, by `mincore(2)`. Unlike RSS,
    /// which covers the whole process, this looks at one range only.
    pub fn resident_pages(range: &[u8], page: usize) -> io::Result<usize> {
        // One status byte per page, for up to 4096 pages per call: a fixed
        // buffer, so that measuring does not grow the heap it measures.
        let mut status = [0u8; 4096];
        let mut resident = 0;
        for part in range.chunks(status.len() * page) {
            // SAFETY: mincore writes one byte per page of `part`, at most
            // `status.len()` of them. `part` is part of a live slice; if it
            // is not page-aligned, mincore writes nothing and fails EINVAL.
            let rc =
                unsafe { libc::mincore(part.as_ptr() as *mut _, part.len(), status.as_mut_ptr()) };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
            // Bit 0 of each byte says whether that page is resident.
            let pages = part.len().div_ceil(page);
            resident += status[..pages].iter().filter(|&&s| s & 1 == 1).count();
        }
        Ok(resident)
    }
    // SHARED_END: mincore
    // ANCHOR_END: mincore

    // ANCHOR: psi
    /// One line of a PSI file: the share of time some (or all) non-idle
    /// tasks were stalled on memory, in percent, averaged over 10, 60 and
    /// 300 seconds, and the total stall time in microseconds since boot.
    #[derive(Debug, Clone, Copy, PartialEq)]
    pub struct Stall {
        pub avg10: f64,
        pub avg60: f64,
        pub avg300: f64,
        pub total_us: u64,
    }

    #[derive(Debug, Clone, Copy, PartialEq)]
    pub struct Pressure {
        pub some: Stall,
        pub full: Stall,
    }

    /// System-wide memory pressure. Missing when the kernel was built
    /// without PSI or booted with `psi=0`.
    pub fn pressure() -> Reading<Pressure> {
        let path = Path::new("/proc/pressure/memory");
        let text = read(path)?;
        let value = parse_pressure(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        sourced(value, path)
    }
    // ANCHOR_END: psi

    /// `some avg10=0.00 avg60=0.00 avg300=0.00 total=0`, and a `full` line.
    pub fn parse_pressure(text: &str) -> Result<Pressure, String> {
        let stall = |kind: &str| -> Option<Stall> {
            let line = text
                .lines()
                .find_map(|l| l.strip_prefix(kind)?.strip_prefix(' '))?;
            let value = |key: &str| {
                let mut pairs = line.split_whitespace();
                pairs.find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
            };
            Some(Stall {
                avg10: value("avg10")?.parse().ok()?,
                avg60: value("avg60")?.parse().ok()?,
                avg300: value("avg300")?.parse().ok()?,
                total_us: value("total")?.parse().ok()?,
            })
        };
        let line = |kind| stall(kind).ok_or_else(|| format!("no well-formed `{kind}` line"));
        Ok(Pressure {
            some: line("some")?,
            full: line("full")?,
        })
    }

    // ANCHOR: cgroup
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Version {
        V1,
        V2,
    }

    /// This process's memory cgroup: its version and its folder.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct MemoryCgroup {
        pub version: Version,
        pub dir: PathBuf,
    }
    // ANCHOR_END: cgroup
    // ANCHOR: cgroup_find
    /// Finds the memory cgroup: v2 if its folder has `memory.max`, else v1
    /// if a v1 `memory` hierarchy is mounted. Hosts differ: some have only
    /// v2, some only v1, some both (with the memory controller on one).
    pub fn memory_cgroup() -> Result<MemoryCgroup, String> {
        let cgroup = read(Path::new("/proc/self/cgroup"))?;
        let mountinfo = read(Path::new("/proc/self/mountinfo"))?;
        let mut why = Vec::new();
        for (version, dir) in cgroup_dirs(&cgroup, &mountinfo) {
            let marker = match version {
                Version::V2 => "memory.max",
                Version::V1 => "memory.limit_in_bytes",
            };
            if dir.join(marker).exists() {
                return Ok(MemoryCgroup { version, dir });
            }
            why.push(format!("{} has no {marker}", dir.display()));
        }
        if why.is_empty() {
            why.push("no cgroup2 mount and no v1 memory hierarchy".into());
        }
        Err(why.join("; "))
    }
    // ANCHOR_END: cgroup_find

    impl Version {
        pub fn name(self) -> &'static str {
            ["v1", "v2"][self as usize]
        }
    }

    // ANCHOR: cgroup_dirs
    /// The folders this process's cgroup has, v2 first, from the text of
    /// `/proc/self/cgroup` and `/proc/self/mountinfo`.
    pub fn cgroup_dirs(cgroup: &str, mountinfo: &str) -> Vec<(Version, PathBuf)> {
        let mounts: Vec<_> = mountinfo.lines().filter_map(mount).collect();
        let v1_memory = |options: &str| options.split(',').any(|o| o == "memory");
        let mut found = Vec::new();
        // Lines are `hierarchy-id:controllers:path`; v2's is `0::path`.
        for line in cgroup.lines() {
            let mut parts = line.splitn(3, ':');
            let (Some(id), Some(controllers), Some(path)) =
                (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let (version, found_mount) = if id == "0" && controllers.is_empty() {
                (Version::V2, mounts.iter().find(|m| m.2 == "cgroup2"))
            } else if controllers.split(',').any(|c| c == "memory") {
                let v1 = mounts.iter().find(|m| m.2 == "cgroup" && v1_memory(m.3));
                (Version::V1, v1)
            } else {
                continue;
            };
            // Inside a cgroup namespace the mount's root may be a folder.
            if let Some((root, point, _, _)) = found_mount {
                let inside = path.strip_prefix(root.trim_end_matches('/'));
                if let Some(rest) = inside.filter(|r| r.is_empty() || r.starts_with('/')) {
                    found.push((version, point.join(rest.trim_start_matches('/'))));
                }
            }
        }
        found.sort_by_key(|(version, _)| *version == Version::V1);
        found
    }
    // ANCHOR_END: cgroup_dirs

    /// One mountinfo line, `36 35 98:0 /root /point rw - fstype source options`:
    /// the mount's root, its mount point, its type and its options.
    fn mount(line: &str) -> Option<(String, PathBuf, &str, &str)> {
        let (left, right) = line.split_once(" - ")?;
        let mut left = left.split(' ').skip(3);
        let root = unescape(left.next()?);
        let point = PathBuf::from(unescape(left.next()?));
        let mut right = right.split(' ');
        let fstype = right.next()?;
        Some((root, point, fstype, right.nth(1).unwrap_or("")))
    }

    /// mountinfo writes a space as `\040`, a tab as `\011`, a newline as
    /// `\012` and a backslash as `\134` (the kernel's `mangle`).
    fn unescape(text: &str) -> String {
        let codes = [("\\040", " "), ("\\011", "\t"), ("\\012", "\n")];
        let mut t = text.to_owned();
        codes.iter().for_each(|(a, b)| t = t.replace(a, b));
        t.replace("\\134", "\\")
    }

    // ANCHOR: cgroup_files
    impl MemoryCgroup {
        /// The hard memory limit; `None` means no limit.
        pub fn limit(&self) -> Reading<Option<u64>> {
            self.number(self.file("memory.max", "memory.limit_in_bytes"))
        }

        pub fn usage(&self) -> Reading<Option<u64>> {
            self.number(self.file("memory.current", "memory.usage_in_bytes"))
        }

        /// The highest usage seen (v2: Linux 5.19+).
        pub fn peak(&self) -> Reading<Option<u64>> {
            self.number(self.file("memory.peak", "memory.max_usage_in_bytes"))
        }

        fn number(&self, path: PathBuf) -> Reading<Option<u64>> {
            let text = read(&path)?;
            let value = match text.trim() {
                "max" => None, // v2: no limit
                // v1 writes "no limit" as the largest page-aligned counter
                // value, 0x7FFFFFFFFFFFF000 with 4 KiB pages.
                n => Some(
                    n.parse::<u64>()
                        .map_err(|_| format!("{}: `{n}` is not a number", path.display()))?,
                )
                .filter(|&n| n < 1 << 62),
            };
            sourced(value, &path)
        }
    }
    // ANCHOR_END: cgroup_files

    impl MemoryCgroup {
        fn file(&self, v2: &str, v1: &str) -> PathBuf {
            self.dir.join([v1, v2][self.version as usize])
        }

        /// How many processes the OOM killer killed in this cgroup
        /// (`oom_kill` in v2's `memory.events`, v1's `memory.oom_control`).
        pub fn oom_kills(&self) -> Reading<u64> {
            let path = self.file("memory.events", "memory.oom_control");
            let text = read(&path)?;
            let value = text
                .lines()
                .find_map(|l| l.strip_prefix("oom_kill "))
                .and_then(|n| n.trim().parse().ok())
                .ok_or_else(|| format!("{}: no oom_kill line", path.display()))?;
            sourced(value, &path)
        }
    }
}

fn main() -> ExitCode {
    let mut args = Args::parse(PROGRAM, USAGE);
    let map_mib = args.number("--map-mib", 16, 1..=2048);
    let touch_mib = args.number("--touch-mib", 8, 0..=1024);
    let interval_ms = args.number("--interval-ms", 100, 0..=10_000);
    if touch_mib > map_mib {
        args.fail(&format!(
            "--touch-mib ({touch_mib}) is larger than --map-mib ({map_mib})"
        ));
    }
    args.finish();
    #[cfg(target_os = "linux")]
    match run(map_mib, touch_mib, interval_ms) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{PROGRAM}: {e}");
            ExitCode::FAILURE
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (MIB, interval_ms);
        println!("{PROGRAM}: every source it reads is a Linux file");
        ExitCode::SUCCESS
    }
}

/// The report: one row per reading, `what  value  source`.
#[cfg(target_os = "linux")]
fn run(map_mib: u64, touch_mib: u64, interval_ms: u64) -> Result<(), String> {
    use std::time::{Duration, Instant};
    let show = |what: &str, reading: Reading<String>| match reading {
        Ok(r) => println!("{what:<24} {:<34} {}", r.value, r.source),
        Err(why) => println!("{what:<24} unavailable: {why}"),
    };
    let mib = |bytes: u64| format!("{:.1} MiB", bytes as f64 / MIB as f64);
    let in_mib = |r: Reading<u64>| r.map(|s| s.map(mib));
    let page = page_size().map_err(|e| format!("page size: {e}"))?;
    let started = Instant::now();
    let psi_before = pressure();
    // At most 2 GiB (the flags' bounds): the byte counts fit any `usize`.
    let (map_bytes, touch_bytes) = ((map_mib * MIB) as usize, (touch_mib * MIB) as usize);
    let mut map = memmap2::MmapOptions::new()
        .len(map_bytes)
        .map_anon()
        .map_err(|e| format!("mmap of {map_mib} MiB: {e}"))?;
    for offset in (0..touch_bytes).step_by(page) {
        map[offset] = 1;
    }
    let pid = std::process::id();
    println!("{PROGRAM}: pid {pid}, after mapping {map_mib} MiB and touching {touch_mib} MiB");
    println!("{:<24} {:<34} source", "what", "value");
    show("virtual size", in_mib(virtual_size(None)));
    show("RSS", in_mib(rss(None)));
    show("RSS, fast counter", in_mib(fast_rss(None)));
    show("PSS", in_mib(pss(None)));
    show("peak RSS", in_mib(peak_rss(None)));
    let pages = resident_pages(&map, page).map_err(|e| format!("mincore: {e}"));
    let (of, source) = (map.len() / page, "mincore(2)".to_owned());
    let value = pages.map(|n| format!("{n} of {of} pages"));
    show(
        "resident in the mapping",
        value.map(|value| Sourced { value, source }),
    );
    drop(map);
    let peak = reset_peak().and_then(|()| in_mib(peak_rss(None)));
    show("peak RSS, after a reset", peak);

    let wait = Duration::from_millis(interval_ms);
    std::thread::sleep(wait.saturating_sub(started.elapsed()));
    let watched = started.elapsed().as_millis();
    let psi_after = pressure();
    let stalled = |pick: fn(&Pressure) -> Stall| -> Reading<String> {
        let (before, after) = (psi_before.clone()?, psi_after.clone()?);
        let (b, a) = (pick(&before.value), pick(&after.value));
        let total = a.total_us.saturating_sub(b.total_us);
        let (avg10, avg60, avg300) = (a.avg10, a.avg60, a.avg300);
        let value = format!("{avg10:.2} {avg60:.2} {avg300:.2}, +{total} µs in {watched} ms");
        let source = after.source;
        Ok(Sourced { value, source })
    };
    show("PSI some (avg10/60/300)", stalled(|p| p.some));
    show("PSI full (avg10/60/300)", stalled(|p| p.full));

    // The cgroup's folder is this machine's own business: the report
    // writes it as `$CGROUP`, and says where it came from.
    let cgroup = memory_cgroup();
    let Ok(cgroup) = cgroup.inspect_err(|why| show("cgroup memory", Err(why.clone()))) else {
        return Ok(());
    };
    let version = cgroup.version.name();
    let dir = cgroup.dir.display().to_string();
    let row = |reading: Reading<Option<u64>>| {
        let r = reading?.map(|limit| limit.map_or("no limit".into(), mib));
        let source = r.source.replacen(&dir, "$CGROUP", 1);
        let source = format!("{source} (cgroup {version})");
        Ok(Sourced { source, ..r })
    };
    show("cgroup memory limit", row(cgroup.limit()));
    show("cgroup memory usage", row(cgroup.usage()));
    show("cgroup memory peak", row(cgroup.peak()));
    println!(
        "$CGROUP: this process's {version} memory cgroup, from /proc/self/cgroup and mountinfo"
    );
    Ok(())
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    // ANCHOR: test_rss
    /// smaps_rollup and mincore agree with what was touched: RSS rises by
    /// the 16 MiB touched within 3% (the kernel selftests' `values_close(a,
    /// b, 3)`: |a - b| <= 3% of a + b), and mincore counts exactly the
    /// touched pages.
    #[test]
    fn touching_16_mib_raises_rss_by_16_mib() {
        let page = page_size().unwrap();
        let mut map = memmap2::MmapOptions::new()
            .len(32 << 20)
            .map_anon()
            .unwrap();
        let before = rss(None).unwrap();
        assert!(before.source.contains("smaps_rollup"), "{}", before.source);
        for offset in (0..16 << 20).step_by(page) {
            map[offset] = 1;
        }
        let after = rss(None).unwrap().value;
        let rise = after.saturating_sub(before.value) as i64;
        let want = 16 << 20;
        let close = (rise - want).abs() <= (rise + want) * 3 / 100;
        assert!(close, "RSS rose {rise} bytes, not {want} within 3%");
        assert_eq!(resident_pages(&map, page).unwrap(), (16 << 20) / page);
        assert!(peak_rss(None).unwrap().value >= after - (1 << 20));
    }
    // ANCHOR_END: test_rss
}
