//! Growth policies and the allocator, measured: how often a growing `Vec`
//! reallocates, and whether one `realloc` copies or remaps.
//!
//! It grows a `Vec` one 4 KiB page at a time with `reserve` and with
//! `reserve_exact`, counting reallocations and moves against the math; then
//! it counts the minor page faults of one `System.realloc` of a large,
//! touched block: none when glibc moves the pages with `mremap`, one per page
//! when std copies (alignments above 16).
//!
//! - Explained in: "Growth policies: doubling or exact" (src/part1-growth-policies.md)
//!   and "What realloc does: remap or copy" (src/part1-realloc-paths.md)
//! - Run: `cargo run --release --example realloc_paths -- --pages 256`
//! - Tested by: `cargo test --test realloc_paths`
//! - Depends on: std, libc 0.2

// `mdbook test` passes no `--extern`, so the crate is named here.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
extern crate libc;

use std::time::Instant;

// ANCHOR: policy
/// The growth step: one 4 KiB page.
pub const STEP: usize = 4096;

/// A page-aligned element: a buffer of pages, say, or a block of SIMD lanes.
#[derive(Clone, Copy)]
#[repr(C, align(4096))]
pub struct Page(pub [u8; STEP]);

/// How the buffer asks for room for one more page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// `Vec::reserve`: std may over-allocate (today it at least doubles).
    Reserve,
    /// `Vec::reserve_exact`: exactly the length asked for.
    ReserveExact,
}

/// What growing cost, as the `Vec` itself saw it: its capacity and its
/// address before and after each step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Growth {
    /// Capacity changes after the first allocation: one `realloc` each.
    pub reallocations: u64,
    /// Reallocations after which the data lived at a new address.
    pub moves: u64,
    /// Bytes in the buffer at those moves: what a copying allocator copies.
    pub bytes_moved: u64,
}
// ANCHOR_END: policy

// ANCHOR: grow_page_by_page
/// Grows an empty `Vec<T>` by one page of `value`s at a time until it holds
/// `pages` pages, and counts what each step cost.
pub fn grow_page_by_page<T: Copy>(policy: Policy, pages: usize, value: T) -> Growth {
    let per_page = STEP / std::mem::size_of::<T>();
    let mut v: Vec<T> = Vec::new();
    let mut growth = Growth::default();
    for _ in 0..pages {
        let capacity = v.capacity();
        let address = v.as_ptr() as usize;
        let held = std::mem::size_of_val(v.as_slice()) as u64;
        match policy {
            Policy::Reserve => v.reserve(per_page),
            Policy::ReserveExact => v.reserve_exact(per_page),
        }
        if capacity > 0 && v.capacity() != capacity {
            growth.reallocations += 1;
            if v.as_ptr() as usize != address {
                growth.moves += 1;
                growth.bytes_moved += held;
            }
        }
        // Fill the whole page, as a real buffer would.
        v.extend(std::iter::repeat_n(value, per_page));
    }
    growth
}
// ANCHOR_END: grow_page_by_page

// ANCHOR: math
/// The math for growing to `pages` pages when every reallocation copies:
/// `(reallocations, bytes copied)`.
pub fn predicted(policy: Policy, pages: u64) -> (u64, u64) {
    let page = STEP as u64;
    match policy {
        // Capacities 1, 2, 4, ... pages: one reallocation per doubling, and
        // the copies add up to 1 + 2 + 4 + ... < the final size.
        Policy::Reserve => {
            let doublings = u64::from(pages.max(1).next_power_of_two().trailing_zeros());
            (doublings, ((1 << doublings) - 1) * page)
        }
        // One reallocation per page after the first, each copying every page
        // so far: 1 + 2 + ... + (pages - 1).
        Policy::ReserveExact => {
            let n = pages.saturating_sub(1);
            (n, pages * n / 2 * page)
        }
    }
}
// ANCHOR_END: math

/// The measurement of one `realloc`: glibc on Linux only.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub mod faults {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::io;
    use std::ptr::NonNull;
    use std::time::Instant;

    // ANCHOR: faults
    /// Minor page faults taken so far by the calling thread. The kernel
    /// counts one each time it gives a page its first frame. `RUSAGE_THREAD`,
    /// not `RUSAGE_SELF`: the test harness runs other tests on other threads.
    pub fn minor_faults() -> io::Result<u64> {
        // SAFETY: `rusage` is plain integers; all zeros is a valid value.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: getrusage writes one `rusage` through a pointer we own.
        if unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(usage.ru_minflt as u64)
    }

    /// Turns transparent huge pages off for this process (Linux 3.15+), so
    /// that one fault is one 4 KiB page. With THP a copy into fresh memory
    /// can take one fault per 2 MiB, and would look almost free.
    pub fn disable_thp() -> io::Result<()> {
        let (on, unused) = (1 as libc::c_ulong, 0 as libc::c_ulong);
        // SAFETY: PR_SET_THP_DISABLE takes integers and only sets a flag of
        // this process.
        if unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, on, unused, unused, unused) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
    // ANCHOR_END: faults

    /// The system's THP setting, the word in brackets: `always`, `madvise`
    /// or `never`.
    pub fn thp_setting() -> String {
        let path = "/sys/kernel/mm/transparent_hugepage/enabled";
        std::fs::read_to_string(path)
            .ok()
            .and_then(|s| Some(s.split('[').nth(1)?.split(']').next()?.to_owned()))
            .unwrap_or_else(|| "unknown".to_owned())
    }

    /// Environment variables that change glibc's malloc, if any is set.
    pub fn malloc_tuning() -> Option<String> {
        std::env::vars()
            .find(|(k, v)| {
                k.starts_with("MALLOC_") || (k == "GLIBC_TUNABLES" && v.contains("malloc"))
            })
            .map(|(k, v)| format!("{k}={v}"))
    }

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

    /// The glibc this process runs on, such as "2.36".
    pub fn glibc_version() -> String {
        // SAFETY: gnu_get_libc_version returns a static NUL-terminated string.
        let version = unsafe { std::ffi::CStr::from_ptr(libc::gnu_get_libc_version()) };
        version.to_string_lossy().into_owned()
    }

    // ANCHOR: vmstat
    /// A counter from /proc/vmstat, such as `thp_fault_alloc` (a fault
    /// mapped a huge page) or `thp_fault_fallback` (a fault wanted one and
    /// got 4 KiB pages). System-wide: other processes' faults count too.
    pub fn vmstat(key: &str) -> Option<u64> {
        let text = std::fs::read_to_string("/proc/vmstat").ok()?;
        let line = text.lines().find(|l| l.split(' ').next() == Some(key))?;
        line.split(' ').nth(1)?.parse().ok()
    }
    // ANCHOR_END: vmstat

    // ANCHOR: block
    /// One block from `System`, freed on drop.
    struct Block {
        ptr: NonNull<u8>,
        layout: Layout,
    }

    impl Block {
        fn new(layout: Layout) -> io::Result<Block> {
            // SAFETY: the caller checked that `layout` has a non-zero size.
            let ptr = unsafe { System.alloc(layout) };
            let ptr = NonNull::new(ptr).ok_or_else(|| out_of_memory(layout.size()))?;
            Ok(Block { ptr, layout })
        }

        /// `System.realloc`. On failure the block is unchanged and still ours.
        fn realloc(&mut self, new_size: usize) -> io::Result<()> {
            let new_layout =
                Layout::from_size_align(new_size, self.layout.align()).map_err(io::Error::other)?;
            // SAFETY: `ptr` came from `System` with `layout`; `new_size` is
            // non-zero and, rounded up to the alignment, fits in isize
            // (`from_size_align` checked).
            let ptr = unsafe { System.realloc(self.ptr.as_ptr(), self.layout, new_size) };
            self.ptr = NonNull::new(ptr).ok_or_else(|| out_of_memory(new_size))?;
            self.layout = new_layout;
            Ok(())
        }
    }

    impl Drop for Block {
        fn drop(&mut self) {
            // SAFETY: `ptr` came from `System` with exactly `layout`.
            unsafe { System.dealloc(self.ptr.as_ptr(), self.layout) };
        }
    }

    // ANCHOR_END: block

    fn out_of_memory(size: usize) -> io::Error {
        io::Error::new(io::ErrorKind::OutOfMemory, format!("{size} bytes refused"))
    }

    // ANCHOR: realloc
    /// What one `realloc` cost.
    #[derive(Debug, Clone, Copy)]
    pub struct ReallocRun {
        /// Pages in the old block: what a copy must write.
        pub pages: u64,
        /// Minor faults during the `realloc` call alone.
        pub faults: u64,
        /// The data lives at a new address afterwards.
        pub moved: bool,
        pub micros: f64,
    }

    /// Allocates `from` bytes aligned to `align`, writes every page (so all
    /// are resident), then reallocates to `to` bytes, counting the minor
    /// faults of that one call. Checks that every page kept its byte.
    pub fn measure_realloc(from: usize, to: usize, align: usize) -> io::Result<ReallocRun> {
        let page = page_size()?;
        if from == 0 || to < from {
            let what = format!("cannot grow {from} bytes to {to}");
            return Err(io::Error::new(io::ErrorKind::InvalidInput, what));
        }
        let layout = Layout::from_size_align(from, align).map_err(io::Error::other)?;
        let mut block = Block::new(layout)?;
        mark_every_page(&block, from, page);
        let address = block.ptr.as_ptr() as usize;
        let before = minor_faults()?;
        let started = Instant::now();
        block.realloc(to)?;
        let micros = started.elapsed().as_secs_f64() * 1e6;
        let faults = minor_faults()? - before;
        check_every_page(&block, from, page)?;
        Ok(ReallocRun {
            pages: (from / page) as u64,
            faults,
            moved: block.ptr.as_ptr() as usize != address,
            micros,
        })
    }
    // ANCHOR_END: realloc

    /// The byte each page holds: its index, modulo a prime.
    fn mark(offset: usize, page: usize) -> u8 {
        (offset / page % 251) as u8
    }

    /// Writes one byte in each of the first `len` bytes' pages.
    fn mark_every_page(block: &Block, len: usize, page: usize) {
        for offset in (0..len).step_by(page) {
            // SAFETY: `offset < len <= the block's size`.
            unsafe {
                block
                    .ptr
                    .as_ptr()
                    .add(offset)
                    .write_volatile(mark(offset, page))
            };
        }
    }

    /// Checks that each page of the first `len` bytes kept its byte.
    fn check_every_page(block: &Block, len: usize, page: usize) -> io::Result<()> {
        for offset in (0..len).step_by(page) {
            // SAFETY: `offset < len <= the block's size`.
            let byte = unsafe { block.ptr.as_ptr().add(offset).read_volatile() };
            if byte != mark(offset, page) {
                return Err(io::Error::other(format!(
                    "realloc lost the byte at {offset}"
                )));
            }
        }
        Ok(())
    }
}

const USAGE: &str = "\
usage: realloc_paths [--pages N] [--realloc-mib M] [--keep-thp] [--hugetlb]
                     [--growth-only | --realloc-only]
  --pages N         grow each Vec page by page to N 4 KiB pages (1..=2048, default 256)
  --realloc-mib M   realloc a touched M MiB block to 2M MiB (32..=1024, default 64)
  --keep-thp        leave transparent huge pages as the system has them, and
                    print the system's THP fault counters instead of a verdict
  --hugetlb         run again with GLIBC_TUNABLES=glibc.malloc.hugetlb=1, so
                    glibc asks for huge pages (madvise) on its mappings
  --growth-only     only the Vec growth table
  --realloc-only    only the realloc fault count";

fn main() {
    let mut args = Args::parse("realloc_paths", USAGE);
    let pages = args.number("--pages", 256, 1..=2048) as usize;
    // At least 32 MiB: glibc's mmap threshold never rises above that on
    // 64-bit, so the block is normally a mapping of its own.
    let realloc_mib = args.number("--realloc-mib", 64, 32..=1024) as usize;
    let keep_thp = args.switch("--keep-thp");
    let hugetlb = args.switch("--hugetlb");
    let (growth_only, realloc_only) = (args.switch("--growth-only"), args.switch("--realloc-only"));
    if growth_only && realloc_only {
        args.fail("--growth-only and --realloc-only exclude each other");
    }
    args.finish();
    if hugetlb && !std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains(HUGETLB)) {
        // glibc reads its tunables once, at start-up: run this program again.
        let status = std::process::Command::new(std::env::current_exe().expect("this program"))
            .args(std::env::args_os().skip(1))
            .env("GLIBC_TUNABLES", HUGETLB)
            .status();
        std::process::exit(status.map_or(1, |s| s.code().unwrap_or(1)));
    }
    if !realloc_only {
        print_growth(pages);
    }
    if !growth_only && !realloc_only {
        println!();
    }
    if growth_only {
        return;
    }
    if let Err(e) = print_realloc(realloc_mib, keep_thp) {
        eprintln!("realloc_paths: {e}");
        std::process::exit(1);
    }
}

/// The tunable that makes glibc `madvise(MADV_HUGEPAGE)` its mappings.
const HUGETLB: &str = "glibc.malloc.hugetlb=1";

fn print_growth(pages: usize) {
    println!("Vec grown one 4 KiB page at a time to {pages} pages; the math assumes every realloc copies");
    println!(
        "element  align  policy         reallocs  math  moves  MiB at moves  math MiB       ms"
    );
    let mib = |bytes: u64| bytes as f64 / (1 << 20) as f64;
    for policy in [Policy::Reserve, Policy::ReserveExact] {
        for (element, align) in [("u8", 1), ("Page", STEP)] {
            let started = Instant::now();
            let growth = if align == 1 {
                grow_page_by_page(policy, pages, 1u8)
            } else {
                grow_page_by_page(policy, pages, Page([1; STEP]))
            };
            let ms = started.elapsed().as_secs_f64() * 1e3;
            let (reallocs, copied) = predicted(policy, pages as u64);
            let policy = match policy {
                Policy::Reserve => "reserve",
                Policy::ReserveExact => "reserve_exact",
            };
            println!(
                "{element:<7} {align:>6}  {policy:<14} {:>8} {reallocs:>5} {:>6} {:>13.2} {:>9.2} {ms:>8.2}",
                growth.reallocations,
                growth.moves,
                mib(growth.bytes_moved),
                mib(copied),
            );
        }
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn print_realloc(mib: usize, keep_thp: bool) -> std::io::Result<()> {
    use faults::*;
    let thp_off = !keep_thp && disable_thp().is_ok();
    let thp = if thp_off {
        "off for this process"
    } else {
        "as the system has it"
    };
    println!(
        "one System.realloc of a touched {mib} MiB block to {} MiB: glibc {}, THP {thp} (system: {})",
        2 * mib,
        glibc_version(),
        thp_setting()
    );
    if let Some(tuning) = malloc_tuning() {
        println!("note: {tuning} changes glibc's malloc; the numbers may not match the book");
    }
    let last = if thp_off {
        "verdict"
    } else {
        "thp_fault_alloc  thp_fault_fallback (system-wide)"
    };
    println!("align   minor faults   pages in block   address           µs  {last}");
    for align in [1, 16, 32, 4096] {
        let thp_before = (vmstat("thp_fault_alloc"), vmstat("thp_fault_fallback"));
        let run = measure_realloc(mib << 20, mib << 21, align)?;
        let thp_after = (vmstat("thp_fault_alloc"), vmstat("thp_fault_fallback"));
        let counted = |before: Option<u64>, after: Option<u64>| match (before, after) {
            (Some(b), Some(a)) => format!("+{}", a.saturating_sub(b)),
            _ => "n/a".to_owned(),
        };
        let last = if !thp_off {
            let alloc = counted(thp_before.0, thp_after.0);
            format!("{alloc:>15}  {:>18}", counted(thp_before.1, thp_after.1))
        } else if run.faults * 64 < run.pages {
            "remapped: no page copied".to_owned()
        } else if run.faults * 2 > run.pages {
            "copied: a fault per page".to_owned()
        } else {
            "unclear".to_owned()
        };
        let address = if run.moved { "moved" } else { "same" };
        println!(
            "{align:>5} {:>14} {:>16}   {address:<8} {:>12.0}  {last}",
            run.faults, run.pages, run.micros
        );
    }
    Ok(())
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn print_realloc(_mib: usize, _keep_thp: bool) -> std::io::Result<()> {
    println!("realloc fault count skipped: it measures glibc, and this is not Linux with glibc");
    Ok(())
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
