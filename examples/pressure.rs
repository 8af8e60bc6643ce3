//! A memory pressure generator a test can bound: it takes N MiB in steps,
//! makes every page resident, reports RSS after each step, holds the memory
//! and gives it back with `MADV_DONTNEED`. It refuses to leave less than a
//! safety margin free unless told `--force`.
//!
//! - Explained in: "Creating pressure" (src/part2-creating-pressure.md)
//! - Run: `cargo run --example pressure -- --mib 256 --step-mib 32 --hold-ms 500`
//! - Tested by: `cargo test --example pressure` and `cargo test --test pressure`
//! - Depends on: std, libc 0.2, memmap2 0.9

// `mdbook test` passes no `--extern`, so the crates are named here.
extern crate libc;
extern crate memmap2;

use std::process::ExitCode;

const MIB: usize = 1 << 20;

const PROGRAM: &str = "pressure";
const USAGE: &str = "usage: pressure [--mib N] [--step-mib N] [--hold-ms N] [--touch HOW] [--force]
  --mib N          MiB to take in all (1..=65536, default 16)
  --step-mib N     MiB per step, at most --mib; 4 unless --mib is smaller (1..=65536, default 4)
  --hold-ms N      how long to hold the memory before releasing it (0..=60000, default 0)
  --touch HOW      populate (MADV_POPULATE_WRITE) or write (one write per page); default: populate where the kernel has it
  --force          take --mib even if that leaves less than the safety margin free";

/// How pages are made resident: `MADV_POPULATE_WRITE`, or a write per page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Populate,
    Write,
}

/// What to do, from the command line.
struct Options {
    mib: usize,
    step_mib: usize,
    hold_ms: u64,
    /// `None`: populate where the kernel can, else write.
    touch: Option<Method>,
    force: bool,
}

impl Options {
    /// Reads the command line; a bad one ends the program with exit code 2.
    fn parse() -> Options {
        let mut args = Args::parse(PROGRAM, USAGE);
        let mib = args.number("--mib", 16, 1..=65536);
        let step_mib = args.number("--step-mib", 4.min(mib), 1..=65536);
        let hold_ms = args.number("--hold-ms", 0, 0..=60_000);
        let touch = match args.text("--touch").as_deref() {
            None => None,
            Some("populate") => Some(Method::Populate),
            Some("write") => Some(Method::Write),
            Some(other) => args.fail(&format!("--touch takes populate or write, not `{other}`")),
        };
        let force = args.switch("--force");
        if step_mib > mib {
            args.fail(&format!(
                "--step-mib ({step_mib}) is larger than --mib ({mib})"
            ));
        }
        // 65536 MiB is 64 GiB: more than a 32-bit `usize` can count.
        let fits = usize::try_from(mib).ok().and_then(|m| m.checked_mul(MIB));
        if fits.is_none() {
            args.fail(&format!(
                "--mib: {mib} MiB does not fit in this address space"
            ));
        }
        args.finish();
        // Both fit: step_mib <= mib, and mib * MIB fits a `usize`.
        Options {
            mib: mib as usize,
            step_mib: step_mib as usize,
            hold_ms,
            touch,
            force,
        }
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
pub use generator::*;

#[cfg(target_os = "linux")]
mod generator {
    use super::{Method, MIB};
    use memmap2::{MmapMut, MmapOptions};
    use std::io;
    use std::time::{Duration, Instant};

    /// The two `/proc/meminfo` numbers the budget needs, in bytes.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct MemInfo {
        pub total: u64,
        pub available: u64,
    }

    pub fn parse_meminfo(text: &str) -> Result<MemInfo, String> {
        let field = |name| kib_field(text, name).ok_or(format!("/proc/meminfo has no {name} line"));
        let (total, available) = (field("MemTotal:")?, field("MemAvailable:")?);
        Ok(MemInfo { total, available })
    }

    pub fn meminfo() -> Result<MemInfo, String> {
        let text =
            std::fs::read_to_string("/proc/meminfo").map_err(|e| format!("/proc/meminfo: {e}"))?;
        parse_meminfo(&text)
    }

    fn gib(bytes: u64) -> f64 {
        bytes as f64 / (1u64 << 30) as f64
    }

    // ANCHOR: budget
    /// What must stay free: a tenth of RAM, and never less than 256 MiB.
    pub fn safety_margin(total: u64) -> u64 {
        (total / 10).max(256 * MIB as u64)
    }

    /// Whether taking `bytes` is allowed: `Ok` with a note for the log, or
    /// `Err` with the reason for refusing. Without `MemAvailable` nothing
    /// can be checked, so only `--force` takes memory then.
    pub fn check_budget(
        bytes: u64,
        info: Result<MemInfo, String>,
        force: bool,
    ) -> Result<String, String> {
        let info = match info {
            Ok(info) => info,
            Err(why) if force => return Ok(format!("cannot read MemAvailable ({why}); --force")),
            Err(why) => return Err(format!("cannot read MemAvailable ({why}), so cannot check the request; pass --force to take it anyway")),
        };
        let margin = safety_margin(info.total);
        let allowed = info.available.saturating_sub(margin);
        let (available, margin, up_to) = (gib(info.available), gib(margin), allowed >> 20);
        let note = format!("MemAvailable {available:.1} GiB, safety margin {margin:.1} GiB, so up to {up_to} MiB may be taken");
        let mib = bytes >> 20;
        match (bytes <= allowed, force) {
            (true, _) => Ok(note),
            (false, true) => Ok(format!("{note}; taking {mib} MiB anyway (--force)")),
            (false, false) => Err(format!(
                "refusing to take {mib} MiB: {note}; pass --force to take it anyway"
            )),
        }
    }
    // ANCHOR_END: budget

    // ANCHOR: probe
    /// Whether the kernel knows `advice`. `madvise` checks the advice before
    /// it looks at the range, and an empty range then succeeds at once, so
    /// `madvise(NULL, 0, advice)` is 0 for a known advice and `EINVAL` for an
    /// unknown one (`madvise_should_skip` in the kernel's mm/madvise.c).
    pub fn advice_supported(advice: libc::c_int) -> bool {
        // SAFETY: an empty range: the kernel touches no memory.
        unsafe { libc::madvise(std::ptr::null_mut(), 0, advice) == 0 }
    }

    /// The method `--touch` asked for, or with none the best this kernel has.
    pub fn choose(touch: Option<Method>) -> Result<Method, String> {
        let populate = advice_supported(libc::MADV_POPULATE_WRITE);
        match touch {
            None if populate => Ok(Method::Populate),
            None | Some(Method::Write) => Ok(Method::Write),
            Some(Method::Populate) if populate => Ok(Method::Populate),
            Some(Method::Populate) => {
                Err("this kernel has no MADV_POPULATE_WRITE (Linux 5.14+)".into())
            }
        }
    }
    // ANCHOR_END: probe

    // ANCHOR: touch
    /// Makes every page of `region` resident and dirty.
    ///
    /// `MADV_POPULATE_WRITE` faults the pages in from inside the kernel, in
    /// one call, and reports a fault it cannot serve as an error instead of
    /// a signal. A write per page does the same work one fault at a time.
    /// Neither stops the OOM killer: where it runs first (a memory cgroup at
    /// its limit), the process is killed either way.
    pub fn touch(region: &mut [u8], method: Method, page: usize) -> io::Result<()> {
        match method {
            Method::Populate => advise(region, libc::MADV_POPULATE_WRITE)?,
            Method::Write => {
                for offset in (0..region.len()).step_by(page) {
                    region[offset] = 1;
                }
            }
        }
        Ok(())
    }
    // ANCHOR_END: touch

    // ANCHOR: release
    /// Gives the frames of `region` back to the kernel but keeps the range:
    /// RSS falls at once, and the pages read back as zero.
    pub fn release(region: &mut [u8]) -> io::Result<()> {
        advise(region, libc::MADV_DONTNEED)
    }

    /// `madvise(advice)` on all of `region`, a private anonymous range.
    fn advise(region: &mut [u8], advice: libc::c_int) -> io::Result<()> {
        // SAFETY: a page-aligned range of a mapping we own and hold mutably:
        // populating keeps its contents, and nothing observes DONTNEED's zeros.
        let rc = unsafe { libc::madvise(region.as_mut_ptr().cast(), region.len(), advice) };
        (rc == 0).then_some(()).ok_or_else(io::Error::last_os_error)
    }
    // ANCHOR_END: release

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

    // ANCHOR: generator
    /// Memory taken in steps, one mapping per step, so each step is one
    /// allocation that can fail on its own.
    pub struct Generator {
        /// The mappings, one per step.
        pub steps: Vec<MmapMut>,
        method: Method,
        page: usize,
    }

    impl Generator {
        /// Maps `bytes` more and makes them resident, 4 MiB at a time,
        /// calling `progress` with the bytes done so far after each chunk.
        pub fn take(
            &mut self,
            bytes: usize,
            progress: &mut dyn FnMut(usize),
        ) -> io::Result<Duration> {
            let started = Instant::now();
            let mut region = MmapOptions::new().len(bytes).map_anon()?;
            // A page multiple, so every chunk starts page-aligned.
            let chunk = (4 * MIB).max(self.page);
            let mut done = 0;
            for part in region.chunks_mut(chunk) {
                touch(part, self.method, self.page)?;
                done += part.len();
                progress(done);
            }
            self.steps.push(region);
            Ok(started.elapsed())
        }
    }
    // ANCHOR_END: generator

    impl Generator {
        pub fn new(method: Method) -> io::Result<Generator> {
            let (steps, page) = (Vec::new(), page_size()?);
            Ok(Generator {
                steps,
                method,
                page,
            })
        }

        /// Bytes held now.
        pub fn held(&self) -> usize {
            self.steps.iter().map(|m| m.len()).sum()
        }

        /// Releases every step with `MADV_DONTNEED`, keeping the mappings.
        pub fn release_all(&mut self) -> io::Result<Duration> {
            let started = Instant::now();
            for region in &mut self.steps {
                release(region)?;
            }
            Ok(started.elapsed())
        }

        /// How many of the pages held are resident, by `mincore`.
        pub fn resident_pages(&self) -> io::Result<usize> {
            let each = self.steps.iter().map(|r| resident_pages(r, self.page));
            each.sum()
        }
    }
}

// ANCHOR: run
/// A refusal comes before anything is mapped: exit code 2, like a bad
/// argument. A failure while taking memory: exit code 1.
#[cfg(target_os = "linux")]
fn run(options: &Options) -> Result<(), (u8, String)> {
    let bytes = (options.mib * MIB) as u64;
    let note = check_budget(bytes, meminfo(), options.force).map_err(|why| (2, why))?;
    let method = choose(options.touch).map_err(|why| (2, why))?;
    let mut generator = Generator::new(method).map_err(|e| (1, format!("page size: {e}")))?;
    print_plan(options, method, &note);
    take_in_steps(&mut generator, options).map_err(|why| (1, why))?;
    std::thread::sleep(std::time::Duration::from_millis(options.hold_ms));
    release_and_report(&mut generator).map_err(|why| (1, why))
}
// ANCHOR_END: run

// ANCHOR: steps
/// Takes `--mib` in steps of `--step-mib`, and prints RSS after each step.
#[cfg(target_os = "linux")]
fn take_in_steps(generator: &mut Generator, options: &Options) -> Result<(), String> {
    let (total, step) = (options.mib * MIB, options.step_mib * MIB);
    let steps = total.div_ceil(step);
    print_rss_row("before", 0, None)?;
    let mut took = std::time::Duration::ZERO;
    for n in 1..=steps {
        let held = generator.held();
        let bytes = step.min(total - held);
        let mut bar = |done: usize| progress_bar(Some((held + done, total)));
        let time = generator
            .take(bytes, &mut bar)
            .map_err(|e| format!("step {n}: taking {} MiB: {e}", bytes / MIB))?;
        took += time;
        progress_bar(None);
        print_rss_row(&format!("{n}/{steps}"), generator.held(), Some(time))?;
    }
    let pages = total / page_size().map_err(|e| format!("page size: {e}"))?;
    let per_page = took.as_secs_f64() * 1e6 / pages as f64;
    let ms = took.as_secs_f64() * 1e3;
    println!("took {pages} pages in {ms:.1} ms: {per_page:.2} µs per page");
    Ok(())
}
// ANCHOR_END: steps

#[cfg(target_os = "linux")]
fn print_plan(options: &Options, method: Method, note: &str) {
    let how = ["MADV_POPULATE_WRITE", "one write per page"][method as usize];
    println!(
        "{PROGRAM}: take {} MiB in steps of {} MiB ({how}), hold {} ms, release with MADV_DONTNEED",
        options.mib, options.step_mib, options.hold_ms
    );
    println!("{note}");
    println!("{:<8} {:>10} {:>12} {:>10}", "step", "held", "RSS", "time");
}

#[cfg(target_os = "linux")]
fn print_rss_row(step: &str, held: usize, took: Option<std::time::Duration>) -> Result<(), String> {
    let (held, now) = (held / MIB, rss(None)?.value as f64 / MIB as f64);
    let ms = took.map_or("-".into(), |t| format!("{:.1} ms", t.as_secs_f64() * 1e3));
    println!("{step:<8} {held:>6} MiB {now:>8.1} MiB {ms:>10}");
    Ok(())
}

#[cfg(target_os = "linux")]
fn release_and_report(generator: &mut Generator) -> Result<(), String> {
    let before = rss(None)?.value;
    let took = generator
        .release_all()
        .map_err(|e| format!("MADV_DONTNEED: {e}"));
    let ms = took?.as_secs_f64() * 1e3;
    let after = rss(None)?;
    let (held, now) = (generator.held() / MIB, after.value as f64 / MIB as f64);
    let change = now - before as f64 / MIB as f64;
    println!("released {held} MiB: RSS {now:.1} MiB ({change:+.1} MiB) in {ms:.1} ms");
    println!("RSS from {}", after.source);
    Ok(())
}

/// A progress line, `now` of `total` bytes, on a terminal only (a pipe or
/// a log gets the steps); `None` clears it.
#[cfg(target_os = "linux")]
fn progress_bar(done: Option<(usize, usize)>) {
    use std::io::{IsTerminal, Write};
    match done.filter(|_| std::io::stderr().is_terminal()) {
        Some((now, total)) => {
            let filled = (now as u64 * 20 / total as u64) as usize;
            let bar = "#".repeat(filled) + &" ".repeat(20 - filled);
            eprint!("\r[{bar}] {} / {} MiB", now / MIB, total / MIB);
        }
        None if std::io::stderr().is_terminal() => eprint!("\r\x1b[2K"),
        None => return,
    }
    let _ = std::io::stderr().flush();
}

fn main() -> ExitCode {
    let options = Options::parse();
    #[cfg(target_os = "linux")]
    match run(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, why)) => {
            eprintln!("{PROGRAM}: {why}");
            ExitCode::from(code)
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (
            options.mib,
            options.step_mib,
            options.hold_ms,
            options.touch,
            options.force,
        );
        println!("{PROGRAM}: MADV_POPULATE_WRITE and /proc/meminfo are Linux only");
        ExitCode::SUCCESS
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    // ANCHOR: test_take_release
    /// Every page taken is resident (mincore, exact), whichever way it was
    /// touched; after release none is, and the memory reads back as zero.
    #[test]
    fn taken_pages_are_resident_and_released_pages_are_not() {
        let mut methods = vec![Method::Write];
        if advice_supported(libc::MADV_POPULATE_WRITE) {
            methods.push(Method::Populate);
        }
        for method in methods {
            let mut generator = Generator::new(method).unwrap();
            let page = page_size().unwrap();
            generator.take(8 * MIB, &mut |_| {}).unwrap();
            generator.take(4 * MIB, &mut |_| {}).unwrap();
            assert_eq!(generator.held(), 12 * MIB);
            let resident = generator.resident_pages().unwrap();
            assert_eq!(resident, 12 * MIB / page, "{method:?}");
            generator.release_all().unwrap();
            assert_eq!(generator.resident_pages().unwrap(), 0, "{method:?}");
            assert_eq!(generator.held(), 12 * MIB, "the ranges stay mapped");
            let zero = generator.steps.iter().all(|r| r.iter().all(|&b| b == 0));
            assert!(zero, "{method:?}: released pages read back as zero");
        }
    }
    // ANCHOR_END: test_take_release
}
