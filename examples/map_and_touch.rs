//! Maps anonymous memory, touches part of it, and prints the process's
//! virtual size and resident set size (RSS) after each step.
//!
//! - Explained in: "A primer on virtual memory" (src/primer.md)
//! - Run: `cargo run --example map_and_touch -- --map-mib 256 --touch-mib 64`
//! - Tested by: `cargo test --test map_and_touch`
//! - Depends on: std, libc 0.2, memmap2 0.9
//!
//! The /proc readers and mincore are Linux only. Elsewhere the example still
//! maps and touches memory, and prints "n/a" for what it cannot read.

// `mdbook test` passes no `--extern`, so the crates are named here.
extern crate libc;
extern crate memmap2;

use std::io;
use std::process::ExitCode;

use memmap2::{MmapMut, MmapOptions};

pub const MIB: usize = 1 << 20;

const PROGRAM: &str = "map_and_touch";
const USAGE: &str = "usage: map_and_touch [--map-mib N] [--touch-mib N] [--no-reserve]
  --map-mib N     MiB of anonymous memory to map (1..=1048576, default 256)
  --touch-mib N   MiB of it to touch, one write per page, at most --map-mib (1..=4096, default 64)
  --no-reserve    map with MAP_NORESERVE: no commit charge, except in overcommit mode 2";

/// What to do, from the command line.
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
        // `mib * MIB` must fit in this machine's `usize` (on a 32-bit target
        // 1048576 MiB does not), so that `run` can multiply unchecked.
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

#[cfg(target_os = "linux")]
pub use counters::resident_pages;

/// The /proc readers and `mincore`: the same functions as Part II's meter
/// (examples/memory_meter.rs), where "Measuring memory honestly" explains
/// them.
#[cfg(target_os = "linux")]
pub mod counters {
    use std::io;

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

    /// The fast counter alone, which `rss` falls back to.
    pub fn fast_rss(pid: Option<u32>) -> Reading<u64> {
        field(pid, "status", "VmRSS:")
    }

    /// Every mapped byte, resident or not: `VmSize` in `status`.
    pub fn virtual_size(pid: Option<u32>) -> Reading<u64> {
        field(pid, "status", "VmSize:")
    }

    // ANCHOR: resident
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
    // ANCHOR_END: resident
}

#[cfg(unix)]
pub use os::page_size;

#[cfg(unix)]
mod os {
    use std::io;

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
}

/// Without `GetSystemInfo` (this example uses `libc` only), assume 4 KiB:
/// one write every 4 KiB touches every page of any larger page size too.
#[cfg(not(unix))]
pub fn page_size() -> io::Result<usize> {
    Ok(4096)
}

// ANCHOR: map
/// Maps `bytes` of private, anonymous, readable and writable memory.
/// The kernel only records the range: no page is allocated yet. With
/// `no_reserve` it passes MAP_NORESERVE, so the mapping is not charged to
/// the commit count (except in overcommit mode 2, which ignores the flag).
pub fn map_anonymous(bytes: usize, no_reserve: bool) -> io::Result<MmapMut> {
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
pub fn touch(map: &mut [u8], bytes: usize, page: usize) -> usize {
    let end = bytes.min(map.len());
    let mut pages = 0;
    for byte in map[..end].iter_mut().step_by(page) {
        *byte = 1;
        pages += 1;
    }
    pages
}
// ANCHOR_END: touch

#[cfg(not(target_os = "linux"))]
pub fn resident_pages(_map: &[u8], _page: usize) -> io::Result<usize> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "resident pages: this example calls mincore on Linux only",
    ))
}

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

// ANCHOR: run
/// Maps, touches and unmaps, printing the counters after each step.
fn run(options: &Options) -> io::Result<()> {
    let page = page_size()?;
    // Options::parse checked that these products fit in usize.
    let (map_bytes, touch_bytes) = (options.map_mib * MIB, options.touch_mib * MIB);
    let mut table = Table::new(options, page);

    table.row("before map", None)?;
    let mut map = map_anonymous(map_bytes, options.no_reserve)?;
    table.row("after map", Some(&map))?;
    let touched = touch(&mut map, touch_bytes, page);
    table.row("after touch", Some(&map))?;
    drop(map); // munmap: the pages go back to the kernel
    table.row("after drop", None)?;

    table.finish(touched);
    Ok(())
}
// ANCHOR_END: run

/// Prints one row per step, with the change in RSS since the previous row.
struct Table {
    page: usize,
    last_rss: Option<u64>,
    rss_sources: Vec<String>,
    size_sources: Vec<String>,
}

impl Table {
    /// Prints what the run does, and the column headings.
    fn new(options: &Options, page: usize) -> Table {
        let flag = if options.no_reserve {
            " (MAP_NORESERVE)"
        } else {
            ""
        };
        println!(
            "map {} MiB{flag}, touch {} MiB: one write per {page}-byte page",
            options.map_mib, options.touch_mib
        );
        println!(
            "{:<12} {:>13} {:>12} {:>12}  resident in mapping",
            "step", "virtual size", "RSS", "RSS change"
        );
        Table {
            page,
            last_rss: None,
            rss_sources: Vec::new(),
            size_sources: Vec::new(),
        }
    }

    fn row(&mut self, step: &str, map: Option<&[u8]>) -> io::Result<()> {
        let (vm, rss) = match sizes()? {
            Some([(vm, vm_source), (rss, rss_source)]) => {
                for (source, seen) in [
                    (vm_source, &mut self.size_sources),
                    (rss_source, &mut self.rss_sources),
                ] {
                    if !seen.contains(&source) {
                        seen.push(source);
                    }
                }
                (Some(vm), Some(rss))
            }
            None => (None, None),
        };
        let resident = match map {
            Some(map) => match available(resident_pages(map, self.page))? {
                Some(n) => format!("{n} of {} pages", map.len() / self.page),
                None => "unavailable".to_owned(),
            },
            None => "-".to_owned(),
        };
        let change = match (self.last_rss, rss) {
            (Some(last), Some(now)) => format!("{:+.1} MiB", mib(now) - mib(last)),
            _ => String::new(),
        };
        self.last_rss = rss;
        let show =
            |bytes: Option<u64>| bytes.map_or("n/a".to_owned(), |b| format!("{:.1} MiB", mib(b)));
        println!(
            "{step:<12} {:>13} {:>12} {change:>12}  {resident}",
            show(vm),
            show(rss)
        );
        Ok(())
    }

    /// Says where the numbers came from, and how much was touched.
    fn finish(&self, touched: usize) {
        if self.rss_sources.is_empty() && self.size_sources.is_empty() {
            println!("RSS and virtual size: unavailable on this OS");
        } else {
            println!(
                "RSS from {}; virtual size from {}",
                self.rss_sources.join(" and "),
                self.size_sources.join(" and ")
            );
        }
        println!(
            "touched {touched} pages ({} MiB)",
            touched * self.page / MIB
        );
    }
}

/// Virtual size and RSS, in bytes, each with the file it came from; `None`
/// off Linux, which has no /proc to read them from.
fn sizes() -> io::Result<Option<[(u64, String); 2]>> {
    #[cfg(target_os = "linux")]
    {
        let read = |r: counters::Reading<u64>| r.map(|r| (r.value, r.source));
        let vm = read(counters::virtual_size(None)).map_err(io::Error::other)?;
        let rss = read(counters::rss(None)).map_err(io::Error::other)?;
        Ok(Some([vm, rss]))
    }
    #[cfg(not(target_os = "linux"))]
    Ok(None)
}

/// `Ok(None)` where the OS has no such counter; a real failure stays an error.
fn available<T>(reading: io::Result<T>) -> io::Result<Option<T>> {
    match reading {
        Ok(value) => Ok(Some(value)),
        Err(e) if e.kind() == io::ErrorKind::Unsupported => Ok(None),
        Err(e) => Err(e),
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / MIB as f64
}
