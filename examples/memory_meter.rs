extern crate libc;
extern crate memmap2;

// The lines above are for `mdbook test`, which passes no `--extern` flags.
//
// memory_meter: one honest reading of this process's memory and of the
// machine's memory pressure. RSS and PSS from smaps_rollup (or status, and it
// says so), the peak from status, the resident pages of one mapping from
// mincore, PSI from /proc/pressure/memory, and the memory cgroup's limit and
// usage, v2 or v1. A source that is missing prints "unavailable: REASON".
//
//   Run:          cargo run --example memory_meter
//                 cargo run --example memory_meter -- --map-mib 64 --touch-mib 16 --interval-ms 500
//   Tested by:    cargo test --example memory_meter
//   Explained in: src/part2-measuring.md, "Measuring memory honestly"
//   Used by:      tests/dynamic_memory.rs
//
// Every source is a Linux file, so everything but the argument parser is
// Linux only.

use std::process::ExitCode;

const MIB: u64 = 1 << 20;

const USAGE: &str = "usage: memory_meter [--map-mib N] [--touch-mib M] [--interval-ms T]
  --map-mib N      MiB to map for the mincore reading (default 16)
  --touch-mib M    MiB of it to touch, 0 <= M <= N (default 8)
  --interval-ms T  how long to watch PSI (default 100)";

#[derive(Debug, PartialEq, Eq)]
struct Args {
    map_mib: u64,
    touch_mib: u64,
    interval_ms: u64,
}

fn parse_args(args: &[String]) -> Result<Args, String> {
    let mut parsed = Args {
        map_mib: 16,
        touch_mib: 8,
        interval_ms: 100,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let slot = match flag.as_str() {
            "--map-mib" => &mut parsed.map_mib,
            "--touch-mib" => &mut parsed.touch_mib,
            "--interval-ms" => &mut parsed.interval_ms,
            other => return Err(format!("unknown argument `{other}`")),
        };
        let value = it
            .next()
            .ok_or_else(|| format!("`{flag}` needs a number"))?;
        *slot = value
            .parse()
            .map_err(|_| format!("`{flag}` takes a whole number, got `{value}`"))?;
    }
    if parsed.map_mib == 0 || parsed.map_mib > 1 << 20 {
        return Err("`--map-mib` must be 1..=1048576".into());
    }
    if parsed.touch_mib > parsed.map_mib {
        return Err("`--touch-mib` must be at most `--map-mib`".into());
    }
    Ok(parsed)
}

#[cfg(target_os = "linux")]
pub use meter::*;

#[cfg(target_os = "linux")]
mod meter {
    use std::io;
    use std::path::{Path, PathBuf};

    // ANCHOR: reading
    /// A value and the file it came from, or why there is none. The meter
    /// never makes a number up: a missing source is an `Err` with a reason.
    pub type Reading<T> = Result<Sourced<T>, String>;

    #[derive(Debug, Clone, PartialEq)]
    pub struct Sourced<T> {
        pub value: T,
        pub source: String,
    }

    fn read(path: &Path) -> Result<String, String> {
        std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The value of a `Name:   123 kB` line, in bytes.
    pub fn kib_field(text: &str, name: &str) -> Option<u64> {
        let rest = text.lines().find_map(|l| l.strip_prefix(name))?;
        let mut words = rest.split_whitespace();
        let value: u64 = words.next()?.parse().ok()?;
        (words.next() == Some("kB")).then_some(value * 1024)
    }

    /// `/proc/self/FILE`, or `/proc/PID/FILE` for another process.
    pub fn proc_file(pid: Option<u32>, file: &str) -> PathBuf {
        match pid {
            Some(pid) => PathBuf::from(format!("/proc/{pid}/{file}")),
            None => PathBuf::from(format!("/proc/self/{file}")),
        }
    }

    fn field(pid: Option<u32>, file: &str, name: &str) -> Reading<u64> {
        let path = proc_file(pid, file);
        let text = read(&path)?;
        let value = kib_field(&text, name)
            .ok_or_else(|| format!("{}: no `{name}` line", path.display()))?;
        Ok(Sourced {
            value,
            source: format!("{} ({})", path.display(), name.trim_end_matches(':')),
        })
    }
    // ANCHOR_END: reading

    // ANCHOR: rss
    /// RSS, exact: the sum over every mapping, from `smaps_rollup` (Linux
    /// 4.14+). Where that file is missing, the fast counter in `status`,
    /// which the kernel documents as approximate; the source says which.
    pub fn rss(pid: Option<u32>) -> Reading<u64> {
        field(pid, "smaps_rollup", "Rss:").or_else(|exact| {
            field(pid, "status", "VmRSS:").map_err(|fast| format!("{exact}; {fast}"))
        })
    }

    /// Proportional set size: each shared page divided among its sharers.
    pub fn pss(pid: Option<u32>) -> Reading<u64> {
        field(pid, "smaps_rollup", "Pss:")
    }

    /// Anonymous memory mapped with transparent huge pages.
    pub fn anon_huge_pages(pid: Option<u32>) -> Reading<u64> {
        field(pid, "smaps_rollup", "AnonHugePages:")
    }

    /// The peak RSS since the process started or since `reset_peak`.
    /// `smaps_rollup` has no peak; `status` (`VmHWM`) is the only source.
    pub fn peak_rss(pid: Option<u32>) -> Reading<u64> {
        field(pid, "status", "VmHWM:")
    }

    pub fn virtual_size(pid: Option<u32>) -> Reading<u64> {
        field(pid, "status", "VmSize:")
    }

    /// RSS from the fast counter in `statm` (its second field, in pages).
    pub fn statm_rss(page: u64) -> Reading<u64> {
        let path = proc_file(None, "statm");
        let text = read(&path)?;
        let pages: u64 = text
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| format!("{}: no resident field", path.display()))?;
        Ok(Sourced {
            value: pages * page,
            source: format!("{} (resident)", path.display()),
        })
    }

    /// Resets `VmHWM` to the current RSS (`echo 5 > /proc/self/clear_refs`).
    pub fn reset_peak() -> Result<(), String> {
        std::fs::write("/proc/self/clear_refs", "5")
            .map_err(|e| format!("/proc/self/clear_refs: {e}"))
    }
    // ANCHOR_END: rss

    // ANCHOR: mincore
    /// How many pages of `range` are resident, by `mincore(2)`. Unlike RSS,
    /// which covers the whole process, this looks at one range only.
    pub fn resident_pages(range: &[u8], page: usize) -> io::Result<usize> {
        let mut status = [0u8; 4096];
        let mut resident = 0;
        for part in range.chunks(status.len() * page) {
            let pages = part.len().div_ceil(page);
            // SAFETY: `part` starts page-aligned (callers pass mappings) and
            // is mapped; `status` has one byte for each of its pages.
            let rc =
                unsafe { libc::mincore(part.as_ptr() as *mut _, part.len(), status.as_mut_ptr()) };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
            resident += status[..pages].iter().filter(|&&s| s & 1 == 1).count();
        }
        Ok(resident)
    }
    // ANCHOR_END: mincore

    // ANCHOR: psi
    /// One line of a PSI file: the share of time some (or all) non-idle
    /// tasks were stalled on memory, averaged over 10, 60 and 300 seconds,
    /// and the total stall time in microseconds since boot.
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

    pub fn parse_pressure(text: &str) -> Result<Pressure, String> {
        let line = |kind: &str| -> Result<Stall, String> {
            let rest = text
                .lines()
                .find_map(|l| l.strip_prefix(kind)?.strip_prefix(' '))
                .ok_or_else(|| format!("no `{kind}` line"))?;
            let value = |key: &str| -> Result<&str, String> {
                rest.split_whitespace()
                    .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
                    .ok_or_else(|| format!("`{kind}` has no {key}"))
            };
            let avg = |key: &str| -> Result<f64, String> {
                value(key)?
                    .parse()
                    .map_err(|_| format!("`{kind}` {key} is not a number"))
            };
            Ok(Stall {
                avg10: avg("avg10")?,
                avg60: avg("avg60")?,
                avg300: avg("avg300")?,
                total_us: value("total")?
                    .parse()
                    .map_err(|_| format!("`{kind}` total is not a number"))?,
            })
        };
        Ok(Pressure {
            some: line("some")?,
            full: line("full")?,
        })
    }

    /// System-wide memory pressure. Missing when the kernel was built
    /// without PSI or booted with `psi=0`.
    pub fn pressure() -> Reading<Pressure> {
        let path = Path::new("/proc/pressure/memory");
        let text = read(path)?;
        let value = parse_pressure(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Sourced {
            value,
            source: path.display().to_string(),
        })
    }
    // ANCHOR_END: psi

    // ANCHOR: cgroup
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Version {
        V1,
        V2,
    }

    impl Version {
        pub fn name(self) -> &'static str {
            match self {
                Version::V1 => "v1",
                Version::V2 => "v2",
            }
        }
    }

    /// This process's memory cgroup: its version and its folder.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct MemoryCgroup {
        pub version: Version,
        pub dir: PathBuf,
    }

    /// Finds the memory cgroup from `/proc/self/cgroup` and
    /// `/proc/self/mountinfo`: v2 if its folder has `memory.max`, else v1 if
    /// a v1 `memory` hierarchy is mounted. Hosts differ: some have only v2,
    /// some only v1, some both (with the memory controller on one of them).
    pub fn memory_cgroup() -> Result<MemoryCgroup, String> {
        let cgroup = read(Path::new("/proc/self/cgroup"))?;
        let mountinfo = read(Path::new("/proc/self/mountinfo"))?;
        let candidates = cgroup_dirs(&cgroup, &mountinfo);
        let mut why = Vec::new();
        for (version, dir) in candidates {
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

    /// The folders this process's cgroup has, v2 first, from the text of
    /// `/proc/self/cgroup` and `/proc/self/mountinfo`.
    pub fn cgroup_dirs(cgroup: &str, mountinfo: &str) -> Vec<(Version, PathBuf)> {
        let mut found = Vec::new();
        let mounts: Vec<Mount> = mountinfo.lines().filter_map(Mount::parse).collect();
        // Lines are `hierarchy-id:controllers:path`; v2's is `0::path`.
        for line in cgroup.lines() {
            let mut parts = line.splitn(3, ':');
            let (Some(id), Some(controllers), Some(path)) =
                (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let mount = if id == "0" && controllers.is_empty() {
                mounts
                    .iter()
                    .find(|m| m.fstype == "cgroup2")
                    .map(|m| (Version::V2, m))
            } else if controllers.split(',').any(|c| c == "memory") {
                let v1 = |m: &&Mount| {
                    m.fstype == "cgroup" && m.options.split(',').any(|o| o == "memory")
                };
                mounts.iter().find(v1).map(|m| (Version::V1, m))
            } else {
                None
            };
            if let Some((version, mount)) = mount {
                // Inside a cgroup namespace the mount's root may be a folder.
                let root = mount.root.trim_end_matches('/');
                let inside = path
                    .strip_prefix(root)
                    .filter(|r| r.is_empty() || r.starts_with('/'));
                if let Some(rest) = inside {
                    found.push((version, mount.point.join(rest.trim_start_matches('/'))));
                }
            }
        }
        found.sort_by_key(|(version, _)| *version == Version::V1);
        found
    }

    struct Mount {
        root: String,
        point: PathBuf,
        fstype: String,
        options: String,
    }

    impl Mount {
        /// `36 35 98:0 /root /point rw master:1 - fstype source superoptions`
        fn parse(line: &str) -> Option<Mount> {
            let (left, right) = line.split_once(" - ")?;
            let left: Vec<&str> = left.split(' ').collect();
            let right: Vec<&str> = right.split(' ').collect();
            Some(Mount {
                root: unescape(left.get(3)?),
                point: PathBuf::from(unescape(left.get(4)?)),
                fstype: right.first()?.to_string(),
                options: right.get(2).unwrap_or(&"").to_string(),
            })
        }
    }

    /// mountinfo writes a space as `\040`, a tab as `\011`, and so on.
    fn unescape(text: &str) -> String {
        let bytes = text.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            let octal = bytes
                .get(i + 1..i + 4)
                .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
            match (bytes[i], octal) {
                (b'\\', Some(d)) => {
                    out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                    i += 4;
                }
                (b, _) => {
                    out.push(b);
                    i += 1;
                }
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    impl MemoryCgroup {
        fn file(&self, v2: &str, v1: &str) -> PathBuf {
            self.dir.join(match self.version {
                Version::V2 => v2,
                Version::V1 => v1,
            })
        }

        fn number(&self, path: PathBuf) -> Reading<Option<u64>> {
            let text = read(&path)?;
            let text = text.trim();
            let value = match text {
                "max" => None, // v2: no limit
                _ => {
                    let n: u64 = text
                        .parse()
                        .map_err(|_| format!("{}: `{text}` is not a number", path.display()))?;
                    // v1 writes "no limit" as the largest page-aligned
                    // counter value, 0x7FFFFFFFFFFFF000 with 4 KiB pages.
                    (n < 1 << 62).then_some(n)
                }
            };
            Ok(Sourced {
                value,
                source: path.display().to_string(),
            })
        }

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
            Ok(Sourced {
                value,
                source: path.display().to_string(),
            })
        }
    }
    // ANCHOR_END: cgroup
}

#[cfg(target_os = "linux")]
fn run(args: &Args) -> Result<(), String> {
    use std::time::{Duration, Instant};
    let mib = |bytes: u64| format!("{:.1} MiB", bytes as f64 / MIB as f64);
    let show = |what: &str, reading: Reading<String>| match reading {
        Ok(r) => println!("{what:<24} {:<34} {}", r.value, r.source),
        Err(why) => println!("{what:<24} unavailable: {why}"),
    };
    let in_mib = |r: Reading<u64>| {
        r.map(|s| Sourced {
            value: mib(s.value),
            source: s.source,
        })
    };
    // SAFETY: sysconf only reads a configuration value.
    let page = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        n if n > 0 => n as usize,
        _ => return Err(format!("sysconf: {}", std::io::Error::last_os_error())),
    };

    let started = Instant::now();
    let psi_before = pressure();
    let mut map = memmap2::MmapOptions::new()
        .len((args.map_mib * MIB) as usize)
        .map_anon()
        .map_err(|e| format!("mmap of {} MiB: {e}", args.map_mib))?;
    for offset in (0..(args.touch_mib * MIB) as usize).step_by(page) {
        map[offset] = 1;
    }
    println!(
        "memory_meter: pid {}, after mapping {} MiB and touching {} MiB",
        std::process::id(),
        args.map_mib,
        args.touch_mib
    );
    println!("{:<24} {:<34} source", "what", "value");
    show("virtual size", in_mib(virtual_size(None)));
    show("RSS", in_mib(rss(None)));
    show("RSS, fast counter", in_mib(statm_rss(page as u64)));
    show("PSS", in_mib(pss(None)));
    show("peak RSS", in_mib(peak_rss(None)));
    let resident = resident_pages(&map, page).map_err(|e| format!("mincore: {e}"));
    show(
        "resident in the mapping",
        resident.map(|pages| Sourced {
            value: format!("{pages} of {} pages", map.len() / page),
            source: "mincore(2)".into(),
        }),
    );
    drop(map);
    show(
        "peak RSS, after a reset",
        reset_peak().and_then(|()| in_mib(peak_rss(None))),
    );

    std::thread::sleep(Duration::from_millis(args.interval_ms).saturating_sub(started.elapsed()));
    let watched = started.elapsed().as_millis();
    let psi_after = pressure();
    for (kind, pick) in [("some", 0), ("full", 1)] {
        let stall = |p: &Pressure| if pick == 0 { p.some } else { p.full };
        let reading = match (&psi_before, &psi_after) {
            (Ok(before), Ok(after)) => {
                let (b, a) = (stall(&before.value), stall(&after.value));
                Ok(Sourced {
                    value: format!(
                        "{:.2} {:.2} {:.2}, +{} µs in {watched} ms",
                        a.avg10,
                        a.avg60,
                        a.avg300,
                        a.total_us.saturating_sub(b.total_us)
                    ),
                    source: after.source.clone(),
                })
            }
            (Err(why), _) | (_, Err(why)) => Err(why.clone()),
        };
        show(&format!("PSI {kind} (avg10/60/300)"), reading);
    }

    let cgroup = memory_cgroup();
    let limit = |c: &MemoryCgroup, r: Reading<Option<u64>>| {
        r.map(|s| Sourced {
            value: s.value.map_or("no limit".into(), mib),
            source: format!("{} (cgroup {})", s.source, c.version.name()),
        })
    };
    match &cgroup {
        Ok(c) => {
            show("cgroup memory limit", limit(c, c.limit()));
            show("cgroup memory usage", limit(c, c.usage()));
            show("cgroup memory peak", limit(c, c.peak()));
        }
        Err(why) => show("cgroup memory", Err(why.clone())),
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args = match parse_args(&args) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("memory_meter: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    #[cfg(target_os = "linux")]
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("memory_meter: {e}");
            ExitCode::FAILURE
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (args, MIB);
        println!("memory_meter: every source it reads is a Linux file");
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, String> {
        parse_args(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn bad_arguments_are_rejected_and_named() {
        for (args, needle) in [
            (&["--map-mib", "0"][..], "`--map-mib` must be 1..=1048576"),
            (&["--map-mib", "x"], "`--map-mib` takes a whole number"),
            (&["--touch-mib", "32"], "at most `--map-mib`"),
            (&["--interval-ms"], "needs a number"),
            (&["--verbose"], "unknown argument `--verbose`"),
        ] {
            let err = parse(args).expect_err(needle);
            assert!(err.contains(needle), "{args:?}: {err}");
        }
        assert_eq!(
            parse(&[]).unwrap(),
            Args {
                map_mib: 16,
                touch_mib: 8,
                interval_ms: 100
            }
        );
    }

    #[cfg(target_os = "linux")]
    mod linux {
        use super::super::*;
        use std::path::PathBuf;

        #[test]
        fn kib_fields_are_bytes_and_need_their_unit() {
            let text = "Rss:                1748 kB\nPss:                 479 kB\nOdd: 12\n";
            assert_eq!(kib_field(text, "Rss:"), Some(1748 * 1024));
            assert_eq!(kib_field(text, "Pss:"), Some(479 * 1024));
            assert_eq!(kib_field(text, "Odd:"), None, "no kB unit");
            assert_eq!(kib_field(text, "Swap:"), None);
        }

        #[test]
        fn psi_lines_are_parsed() {
            let text = "some avg10=1.50 avg60=0.25 avg300=0.00 total=123456\n\
                        full avg10=0.00 avg60=0.00 avg300=0.00 total=789\n";
            let p = parse_pressure(text).unwrap();
            assert_eq!(p.some.avg10, 1.5);
            assert_eq!(p.some.total_us, 123456);
            assert_eq!(p.full.total_us, 789);
            let err = parse_pressure("some avg10=0.00 avg60=0.00 avg300=0.00 total=1\n");
            assert!(err.unwrap_err().contains("no `full` line"));
        }

        const MOUNTS: &str = "\
30 24 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
35 30 0:31 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 30 0:32 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
";

        #[test]
        fn a_hybrid_host_offers_v2_first_then_v1_memory() {
            let cgroup = "4:memory:/jobs/a b\n1:cpu:/\n0::/\n";
            let dirs = cgroup_dirs(cgroup, MOUNTS);
            assert_eq!(
                dirs,
                vec![
                    (Version::V2, PathBuf::from("/sys/fs/cgroup/unified/")),
                    (Version::V1, PathBuf::from("/sys/fs/cgroup/memory/jobs/a b")),
                ]
            );
        }

        #[test]
        fn a_v2_only_host_and_a_namespaced_root_are_found() {
            let mounts =
                "29 23 0:26 /user.slice /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
            let dirs = cgroup_dirs("0::/user.slice/session 1.scope\n", mounts);
            assert_eq!(
                dirs,
                vec![(Version::V2, PathBuf::from("/sys/fs/cgroup/session 1.scope"))]
            );
            let escaped = "29 23 0:26 / /sys/fs/my\\040cgroups rw - cgroup2 cgroup2 rw\n";
            let dirs = cgroup_dirs("0::/x\n", escaped);
            assert_eq!(dirs[0].1, PathBuf::from("/sys/fs/my cgroups/x"));
            assert!(cgroup_dirs("0::/x\n", "").is_empty(), "no mount, no folder");
        }

        #[test]
        fn v1_unlimited_and_v2_max_both_read_as_no_limit() {
            let dir =
                std::env::temp_dir().join(format!("memory_meter_test_{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("memory.limit_in_bytes"), "9223372036854771712\n").unwrap();
            std::fs::write(dir.join("memory.usage_in_bytes"), "4452352\n").unwrap();
            std::fs::write(
                dir.join("memory.oom_control"),
                "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
            )
            .unwrap();
            std::fs::write(dir.join("memory.max"), "max\n").unwrap();
            let v1 = MemoryCgroup {
                version: Version::V1,
                dir: dir.clone(),
            };
            assert_eq!(v1.limit().unwrap().value, None);
            assert_eq!(v1.usage().unwrap().value, Some(4452352));
            assert_eq!(v1.oom_kills().unwrap().value, 2);
            let v2 = MemoryCgroup {
                version: Version::V2,
                dir: dir.clone(),
            };
            assert_eq!(v2.limit().unwrap().value, None);
            let missing = v2.usage().unwrap_err();
            assert!(missing.contains("memory.current"), "{missing}");
            std::fs::remove_dir_all(&dir).unwrap();
        }

        #[test]
        fn a_missing_source_says_why() {
            let err = rss(Some(u32::MAX)).unwrap_err();
            assert!(err.contains("/proc/4294967295/smaps_rollup"), "{err}");
            assert!(err.contains("/proc/4294967295/status"), "{err}");
        }

        // ANCHOR: test_rss
        /// smaps_rollup and mincore agree with what was touched: RSS rises
        /// by the 16 MiB touched within 3% (the kernel selftests'
        /// `values_close(a, b, 3)`: |a - b| <= 3% of a + b), and mincore
        /// counts exactly the touched pages.
        #[test]
        fn touching_16_mib_raises_rss_by_16_mib() {
            // SAFETY: sysconf only reads a configuration value.
            let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
            let before = rss(None).unwrap();
            assert!(before.source.contains("smaps_rollup"), "{}", before.source);
            let mut map = memmap2::MmapOptions::new()
                .len(32 << 20)
                .map_anon()
                .unwrap();
            for offset in (0..16 << 20).step_by(page) {
                map[offset] = 1;
            }
            let after = rss(None).unwrap().value;
            let rise = after.saturating_sub(before.value) as i64;
            let want = 16 << 20;
            assert!(
                (rise - want).abs() <= (rise + want) / 100 * 3,
                "rise {rise}"
            );
            assert_eq!(resident_pages(&map, page).unwrap(), (16 << 20) / page);
            assert!(peak_rss(None).unwrap().value >= after - (1 << 20));
        }
        // ANCHOR_END: test_rss
    }
}
