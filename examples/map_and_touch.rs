extern crate libc;
extern crate memmap2;

// The two lines above are for `mdbook test`. It compiles each listing with
// rustdoc and passes no `--extern` flags, so a listing must name the crates it
// uses itself (and the test is given `-L DIR` with their rlibs). Cargo and
// skeptic pass `--extern` anyway; for them these lines change nothing.
//
// map_and_touch: map anonymous memory, touch part of it, and watch the
// process's virtual size and resident set size (RSS) at each step.
//
//   Run:          cargo run --example map_and_touch
//                 cargo run --example map_and_touch -- --map-mib N --touch-mib M [--no-reserve]
//   Tested by:    cargo test --example map_and_touch
//   Explained in: src/primer.md, "A primer on virtual memory"
//
// The /proc readers and mincore are Linux only. Elsewhere the example still
// maps and touches memory, and prints "n/a" for what it cannot read.

use std::io;
use std::process::ExitCode;

use memmap2::{MmapMut, MmapOptions};

const MIB: usize = 1 << 20;

const PROGRAM: &str = "map_and_touch";
const USAGE: &str = "usage: map_and_touch [--map-mib N] [--touch-mib N] [--no-reserve]
  --map-mib N     MiB of anonymous memory to map (1..=1048576, default 256)
  --touch-mib N   MiB of it to touch, one write per page, at most --map-mib (1..=4096, default 64)
  --no-reserve    map with MAP_NORESERVE: no commit charge, except in overcommit mode 2";

/// What to do, from the command line.
#[derive(Debug, PartialEq, Eq)]
struct Options {
    map_mib: usize,
    touch_mib: usize,
    no_reserve: bool,
}

impl Options {
    /// Reads the command line; a bad one ends the program with exit code 2.
    fn parse() -> Options {
        let mut args = Args::parse(PROGRAM, USAGE);
        let map_mib = args.number("--map-mib", 256, 1..=1_048_576);
        let touch_mib = args.number("--touch-mib", 64, 1..=4096);
        let no_reserve = args.switch("--no-reserve");
        if touch_mib > map_mib {
            args.fail(&format!(
                "--touch-mib ({touch_mib}) is larger than --map-mib ({map_mib})"
            ));
        }
        // The byte counts must fit in this machine's `usize`, so that
        // `mib * MIB` is safe later (it is not on a 32-bit target).
        let mib = |name: &str, n: u64| match usize::try_from(n)
            .ok()
            .filter(|n| n.checked_mul(MIB).is_some())
        {
            Some(n) => n,
            None => args.fail(&format!(
                "{name}: {n} MiB does not fit in this address space"
            )),
        };
        let options = Options {
            map_mib: mib("--map-mib", map_mib),
            touch_mib: mib("--touch-mib", touch_mib),
            no_reserve,
        };
        args.finish();
        options
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

/// One reading of a memory counter, in bytes, and the file it came from.
// Only the Linux readers build one; elsewhere every reading is "unavailable".
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
#[derive(Clone, Copy, Debug)]
struct Reading {
    bytes: u64,
    source: &'static str,
}

// ANCHOR: read_rss
#[cfg(target_os = "linux")]
mod counters {
    use super::{page_size, Reading};
    use std::{fs, io};

    pub const SMAPS_ROLLUP: &str = "/proc/self/smaps_rollup";
    pub const STATUS: &str = "/proc/self/status";
    pub const STATM: &str = "/proc/self/statm";

    /// Resident set size. `smaps_rollup` (Linux 4.14+) sums the page tables, so
    /// it is exact; `statm` is a cheap counter that may lag, used only when
    /// `smaps_rollup` cannot be read.
    pub fn rss() -> io::Result<Reading> {
        first_of(
            (SMAPS_ROLLUP, rss_from_smaps_rollup),
            (STATM, || statm_bytes(1)),
        )
    }

    /// Virtual size: `VmSize` in `/proc/self/status`, else `statm` field 0.
    pub fn virtual_size() -> io::Result<Reading> {
        first_of((STATUS, vm_size_from_status), (STATM, || statm_bytes(0)))
    }

    /// The first reader that succeeds, with the file it read. If both fail,
    /// the error says why each one did.
    fn first_of(
        (path, read): (&'static str, impl FnOnce() -> io::Result<u64>),
        (fallback_path, fallback): (&'static str, impl FnOnce() -> io::Result<u64>),
    ) -> io::Result<Reading> {
        match read() {
            Ok(bytes) => Ok(Reading {
                bytes,
                source: path,
            }),
            Err(first) => match fallback() {
                Ok(bytes) => Ok(Reading {
                    bytes,
                    source: fallback_path,
                }),
                Err(second) => Err(io::Error::new(
                    second.kind(),
                    format!("{first}; and the fallback failed: {second}"),
                )),
            },
        }
    }

    pub fn rss_from_smaps_rollup() -> io::Result<u64> {
        let text = read(SMAPS_ROLLUP)?;
        kib_field(&text, "Rss:").ok_or_else(|| malformed(SMAPS_ROLLUP, "no `Rss:` line"))
    }

    fn vm_size_from_status() -> io::Result<u64> {
        let text = read(STATUS)?;
        kib_field(&text, "VmSize:").ok_or_else(|| malformed(STATUS, "no `VmSize:` line"))
    }

    /// Field `index` of `/proc/self/statm` (0 = size, 1 = resident), in bytes.
    /// statm counts pages, so multiply by the page size.
    pub fn statm_bytes(index: usize) -> io::Result<u64> {
        let text = read(STATM)?;
        let pages = statm_field(&text, index)
            .ok_or_else(|| malformed(STATM, &format!("no numeric field {index}")))?;
        let page = page_size()? as u64;
        pages
            .checked_mul(page)
            .ok_or_else(|| malformed(STATM, "page count overflows"))
    }

    /// The value of a `Name:   1234 kB` line, in bytes.
    pub fn kib_field(text: &str, name: &str) -> Option<u64> {
        let rest = text.lines().find_map(|line| line.strip_prefix(name))?;
        let kib: u64 = rest.trim().strip_suffix("kB")?.trim().parse().ok()?;
        kib.checked_mul(1024)
    }

    pub fn statm_field(text: &str, index: usize) -> Option<u64> {
        text.split_whitespace().nth(index)?.parse().ok()
    }

    fn read(path: &str) -> io::Result<String> {
        fs::read_to_string(path).map_err(|e| io::Error::new(e.kind(), format!("{path}: {e}")))
    }

    fn malformed(path: &str, what: &str) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, format!("{path}: {what}"))
    }
}
// ANCHOR_END: read_rss

#[cfg(not(target_os = "linux"))]
mod counters {
    use super::Reading;
    use std::io;

    fn unavailable(what: &str) -> io::Error {
        io::Error::new(
            io::ErrorKind::Unsupported,
            format!("{what}: reading it is unavailable on this OS (this example reads /proc)"),
        )
    }

    pub fn rss() -> io::Result<Reading> {
        Err(unavailable("RSS"))
    }

    pub fn virtual_size() -> io::Result<Reading> {
        Err(unavailable("virtual size"))
    }
}

/// The OS page size.
#[cfg(unix)]
fn page_size() -> io::Result<usize> {
    // SAFETY: sysconf takes no pointers and has no preconditions; it returns
    // -1 for an unknown name, which the check below turns into an error.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size)
        .ok()
        .filter(|&size| size > 0)
        .ok_or_else(|| io::Error::other("sysconf(_SC_PAGESIZE) failed"))
}

/// Without `GetSystemInfo` (this example uses `libc` only), assume 4 KiB:
/// one write every 4 KiB touches every page of any larger page size too.
#[cfg(not(unix))]
fn page_size() -> io::Result<usize> {
    Ok(4096)
}

// ANCHOR: map
/// Maps `bytes` of private, anonymous, readable and writable memory.
/// The kernel only records the range: no page is allocated yet. With
/// `no_reserve` it passes MAP_NORESERVE, so the mapping is not charged to
/// the commit count (except in overcommit mode 2, which ignores the flag).
fn map_anonymous(bytes: usize, no_reserve: bool) -> io::Result<MmapMut> {
    let mut options = MmapOptions::new();
    options.len(bytes);
    if no_reserve {
        options.no_reserve_swap();
    }
    options.map_anon().map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("mmap of {} MiB anonymous memory: {e}", bytes / MIB),
        )
    })
}
// ANCHOR_END: map

// ANCHOR: touch
/// Writes one byte in each page of the first `bytes` of `map`. The first
/// write to a page faults, and the kernel then gives it a zeroed frame: the
/// page becomes resident. Returns how many pages were written.
fn touch(map: &mut [u8], bytes: usize, page: usize) -> usize {
    let end = bytes.min(map.len());
    let mut pages = 0;
    for byte in map[..end].iter_mut().step_by(page) {
        *byte = 1;
        pages += 1;
    }
    pages
}
// ANCHOR_END: touch

// ANCHOR: resident
/// How many pages of `map` are resident, by mincore(2). Unlike RSS, which
/// covers the whole process, this looks at one range only. `map` must start
/// on a page boundary (a mapping does), or mincore fails with EINVAL.
#[cfg(target_os = "linux")]
fn resident_pages(map: &[u8], page: usize) -> io::Result<usize> {
    // One status byte per page, for up to 4096 pages per call: a fixed buffer,
    // so that measuring does not grow the heap it measures.
    let mut status = [0u8; 4096];
    let mut resident = 0;
    for chunk in map.chunks(status.len() * page) {
        // SAFETY: mincore writes one byte per page of the chunk, and an
        // aligned chunk of at most `status.len() * page` bytes spans at most
        // `status.len()` pages, so every write lands in `status`. For an
        // unaligned chunk mincore writes nothing and returns EINVAL. The
        // chunk is part of a live slice, and mincore only reads page tables.
        let rc = unsafe {
            libc::mincore(
                chunk.as_ptr() as *mut libc::c_void,
                chunk.len(),
                status.as_mut_ptr(),
            )
        };
        if rc != 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(e.kind(), format!("mincore: {e}")));
        }
        // Bit 0 of each byte says whether that page is resident.
        let pages = chunk.len().div_ceil(page);
        resident += status[..pages].iter().filter(|&&b| b & 1 == 1).count();
    }
    Ok(resident)
}
// ANCHOR_END: resident

#[cfg(not(target_os = "linux"))]
fn resident_pages(_map: &[u8], _page: usize) -> io::Result<usize> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "resident pages: this example calls mincore on Linux only",
    ))
}

// ANCHOR: main
fn main() -> ExitCode {
    let options = Options::parse();
    match run(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{PROGRAM}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Options) -> io::Result<()> {
    let page = page_size()?;
    // Options::parse checked that these products fit in usize.
    let map_bytes = args.map_mib * MIB;
    let touch_bytes = args.touch_mib * MIB;
    println!(
        "map {} MiB{}, touch {} MiB: one write per {page}-byte page",
        args.map_mib,
        if args.no_reserve {
            " (MAP_NORESERVE)"
        } else {
            ""
        },
        args.touch_mib
    );
    let mut table = Table::default();
    table.header();

    table.row("before map", None, page)?;
    let mut map = map_anonymous(map_bytes, args.no_reserve)?;
    table.row("after map", Some(&map), page)?;
    let touched = touch(&mut map, touch_bytes, page);
    table.row("after touch", Some(&map), page)?;
    drop(map); // munmap: the pages go back to the kernel
    table.row("after drop", None, page)?;
    table.sources();

    println!("touched {touched} pages ({} MiB)", touched * page / MIB);
    Ok(())
}
// ANCHOR_END: main

/// Prints one row per step, with the change in RSS since the previous row.
#[derive(Default)]
struct Table {
    last_rss: Option<u64>,
    rss_sources: Vec<&'static str>,
    size_sources: Vec<&'static str>,
}

impl Table {
    fn header(&self) {
        println!(
            "{:<12} {:>13} {:>12} {:>12}  resident in mapping",
            "step", "virtual size", "RSS", "RSS change"
        );
    }

    fn row(&mut self, step: &str, map: Option<&[u8]>, page: usize) -> io::Result<()> {
        let vm = available(counters::virtual_size())?;
        let rss = available(counters::rss())?;
        let resident = match map {
            Some(map) => match available(resident_pages(map, page))? {
                Some(n) => format!("{n} of {} pages", map.len() / page),
                None => "unavailable".to_owned(),
            },
            None => "-".to_owned(),
        };
        let change = match (self.last_rss, rss) {
            (Some(last), Some(now)) => signed_mib(now.bytes as f64 - last as f64),
            _ => String::new(),
        };
        self.last_rss = rss.map(|r| r.bytes);
        for (reading, seen) in [(rss, &mut self.rss_sources), (vm, &mut self.size_sources)] {
            if let Some(r) = reading {
                if !seen.contains(&r.source) {
                    seen.push(r.source);
                }
            }
        }
        println!(
            "{step:<12} {:>13} {:>12} {change:>12}  {resident}",
            show_mib(vm),
            show_mib(rss)
        );
        Ok(())
    }

    /// Says where the numbers came from.
    fn sources(&self) {
        if self.rss_sources.is_empty() && self.size_sources.is_empty() {
            println!("RSS and virtual size: unavailable on this OS");
        } else {
            println!(
                "RSS from {}; virtual size from {}",
                self.rss_sources.join(" and "),
                self.size_sources.join(" and ")
            );
        }
    }
}

/// `Ok(None)` where the OS has no such counter; a real failure stays an error.
fn available<T>(reading: io::Result<T>) -> io::Result<Option<T>> {
    match reading {
        Ok(value) => Ok(Some(value)),
        Err(e) if e.kind() == io::ErrorKind::Unsupported => Ok(None),
        Err(e) => Err(e),
    }
}

fn show_mib(reading: Option<Reading>) -> String {
    match reading {
        Some(r) => format!("{:.1} MiB", r.bytes as f64 / MIB as f64),
        None => "n/a".to_owned(),
    }
}

fn signed_mib(bytes: f64) -> String {
    format!("{:+.1} MiB", bytes / MIB as f64)
}

#[cfg(test)]
mod tests {
    #[cfg(target_os = "linux")]
    mod linux {
        use super::super::*;
        use std::sync::{Mutex, MutexGuard, PoisonError};

        /// RSS is one number for the whole process, and the test harness runs
        /// tests on parallel threads: the tests that measure it take turns.
        static RSS_TESTS: Mutex<()> = Mutex::new(());

        fn one_at_a_time() -> MutexGuard<'static, ()> {
            RSS_TESTS.lock().unwrap_or_else(PoisonError::into_inner)
        }

        #[test]
        fn proc_text_is_parsed_in_bytes() {
            let smaps = "55d0-7ffe ---p 00000000 00:00 0     [rollup]\n\
                         Rss:                1616 kB\n\
                         Pss:                 401 kB\n";
            assert_eq!(counters::kib_field(smaps, "Rss:"), Some(1616 * 1024));
            assert_eq!(counters::kib_field(smaps, "Swap:"), None);
            assert_eq!(counters::kib_field("Rss: many kB\n", "Rss:"), None);
            let statm = "765 425 396 5 0 123 0\n";
            assert_eq!(counters::statm_field(statm, 0), Some(765));
            assert_eq!(counters::statm_field(statm, 1), Some(425));
            assert_eq!(counters::statm_field(statm, 7), None);
        }

        #[test]
        fn statm_fallback_reads_a_resident_size_within_the_virtual_size() -> io::Result<()> {
            let _turn = one_at_a_time();
            let size = counters::statm_bytes(0)?;
            let resident = counters::statm_bytes(1)?;
            assert!(resident > 0, "a running process has resident pages");
            assert!(resident <= size, "resident {resident} > size {size}");
            Ok(())
        }

        #[test]
        fn mapping_alone_does_not_raise_rss() -> io::Result<()> {
            let _turn = one_at_a_time();
            let page = page_size()?;
            let before = counters::rss_from_smaps_rollup()?;
            let map = map_anonymous(64 * MIB, false)?;
            let after = counters::rss_from_smaps_rollup()?;
            // mmap only records the range; it faults in no page. The 1 MiB
            // allows for the heap this test and the harness use meanwhile.
            let rise = after.saturating_sub(before);
            assert!(
                rise < MIB as u64,
                "mapping 64 MiB raised RSS by {rise} bytes"
            );
            assert_eq!(resident_pages(&map, page)?, 0);
            Ok(())
        }

        #[test]
        fn overcommit_mode_decides_whether_a_huge_mapping_is_accepted() -> io::Result<()> {
            let mode_path = "/proc/sys/vm/overcommit_memory";
            let mode = std::fs::read_to_string(mode_path)
                .map_err(|e| io::Error::new(e.kind(), format!("{mode_path}: {e}")))?;
            let meminfo = std::fs::read_to_string("/proc/meminfo")
                .map_err(|e| io::Error::new(e.kind(), format!("/proc/meminfo: {e}")))?;
            let field = |name: &str| {
                counters::kib_field(&meminfo, name).ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("/proc/meminfo: no {name}"),
                    )
                })
            };
            let ram_and_swap = field("MemTotal:")? + field("SwapTotal:")?;
            // Twice the larger of RAM + swap (the mode 0 heuristic refuses one
            // mapping larger than that) and CommitLimit (the mode 2 limit).
            let wanted = 2 * ram_and_swap.max(field("CommitLimit:")?);
            // RLIMIT_AS and RLIMIT_DATA (which covers private writable mmap
            // since Linux 4.7) could refuse the mapping for another reason.
            for (name, resource) in [
                ("RLIMIT_AS", libc::RLIMIT_AS),
                ("RLIMIT_DATA", libc::RLIMIT_DATA),
            ] {
                let mut limit = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                // SAFETY: `limit` is a valid, writable `rlimit` that getrlimit
                // fills in; it keeps no pointer to it after returning.
                if unsafe { libc::getrlimit(resource, &mut limit) } != 0 {
                    let e = io::Error::last_os_error();
                    return Err(io::Error::new(e.kind(), format!("getrlimit({name}): {e}")));
                }
                if limit.rlim_cur != libc::RLIM_INFINITY && limit.rlim_cur < wanted {
                    eprintln!(
                        "skipped: {name} is {} bytes, below the {wanted} this test maps",
                        limit.rlim_cur
                    );
                    return Ok(());
                }
            }
            let bytes = usize::try_from(wanted)
                .map_err(|_| io::Error::other("RAM + swap does not fit in usize"))?;

            // Each mapping is dropped (unmapped) at the end of its statement.
            let plain = map_anonymous(bytes, false).is_ok();
            let no_reserve = map_anonymous(bytes, true).is_ok();
            let expected = match mode.trim() {
                "0" => (false, true),  // heuristic: too big, unless not charged
                "1" => (true, true),   // always overcommit
                "2" => (false, false), // strict: MAP_NORESERVE is ignored
                other => panic!("{mode_path} holds an unknown mode {other:?}"),
            };
            assert_eq!(
                (plain, no_reserve),
                expected,
                "overcommit_memory={}: mapping {} MiB (plain, MAP_NORESERVE)",
                mode.trim(),
                bytes / MIB
            );
            Ok(())
        }

        #[test]
        fn touching_32_of_64_mib_raises_rss_by_32_mib_within_tolerance() -> io::Result<()> {
            let _turn = one_at_a_time();
            let page = page_size()?;
            let touched_bytes = 32 * MIB;
            let mut map = map_anonymous(64 * MIB, false)?;
            let before = counters::rss_from_smaps_rollup()?;
            let pages = touch(&mut map, touched_bytes, page);
            let after = counters::rss_from_smaps_rollup()?;

            // Exact, for this range alone: every touched page is resident.
            assert_eq!(pages, touched_bytes / page);
            assert_eq!(resident_pages(&map[..touched_bytes], page)?, pages);

            // RSS covers the whole process, so allow a tolerance:
            // - at least 90%: pages leave RSS only if reclaimed (swapped out
            //   under memory pressure) or if other code frees memory meanwhile;
            // - at most 110% + 2 MiB: other threads of the harness may allocate
            //   meanwhile, and with transparent huge pages set to `always` one
            //   fault can map a whole 2 MiB page past the end of the range.
            let rise = after.saturating_sub(before) as f64;
            let touched = touched_bytes as f64;
            let (low, high) = (0.9 * touched, 1.1 * touched + 2.0 * MIB as f64);
            let report = format!(
                "RSS rose by {:.2} MiB after touching 32 MiB; allowed {:.1}..={:.1} MiB",
                rise / MIB as f64,
                low / MIB as f64,
                high / MIB as f64
            );
            // Shown with `cargo test --example map_and_touch -- --nocapture`.
            eprintln!("{report}");
            assert!((low..=high).contains(&rise), "{report}");
            Ok(())
        }
    }
}
