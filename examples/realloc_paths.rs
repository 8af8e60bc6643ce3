//! Growth policies and the allocator, measured.
//!
//! A `Vec` grown one 4 KiB page at a time with `reserve` and with
//! `reserve_exact` (reallocations, moves, bytes moved, next to the math), and
//! one `System.realloc` of a large resident block, counting its page faults:
//! glibc moves a large block with `mremap`, but for an alignment above 16 std
//! allocates, copies and frees instead.
//!
//! - Explained in: "Growth policies and the allocator" (src/part1-growth-policies.md)
//! - Run: `cargo run --release --example realloc_paths`
//! - Tested by: `cargo test --example realloc_paths`
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
// ANCHOR_END: policy

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
mod faults {
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

    /// The OS page size.
    pub fn page_size() -> io::Result<usize> {
        // SAFETY: sysconf only reads a configuration value.
        let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        usize::try_from(size).map_err(|_| io::Error::last_os_error())
    }

    /// The glibc this process runs on, such as "2.36".
    pub fn glibc_version() -> String {
        // SAFETY: gnu_get_libc_version returns a static NUL-terminated string.
        let version = unsafe { std::ffi::CStr::from_ptr(libc::gnu_get_libc_version()) };
        version.to_string_lossy().into_owned()
    }
    // ANCHOR_END: faults

    // ANCHOR: realloc
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

    fn out_of_memory(size: usize) -> io::Error {
        io::Error::new(io::ErrorKind::OutOfMemory, format!("{size} bytes refused"))
    }

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
        let mark = |offset: usize| (offset / page % 251) as u8;
        for offset in (0..from).step_by(page) {
            // SAFETY: `offset < from`, so it lies inside the block.
            unsafe { block.ptr.as_ptr().add(offset).write_volatile(mark(offset)) };
        }
        let address = block.ptr.as_ptr() as usize;
        let before = minor_faults()?;
        let started = Instant::now();
        block.realloc(to)?;
        let micros = started.elapsed().as_secs_f64() * 1e6;
        let faults = minor_faults()? - before;
        for offset in (0..from).step_by(page) {
            // SAFETY: the block now holds `to >= from` bytes.
            let byte = unsafe { block.ptr.as_ptr().add(offset).read_volatile() };
            if byte != mark(offset) {
                return Err(io::Error::other(format!(
                    "realloc lost the byte at {offset}"
                )));
            }
        }
        Ok(ReallocRun {
            pages: (from / page) as u64,
            faults,
            moved: block.ptr.as_ptr() as usize != address,
            micros,
        })
    }
    // ANCHOR_END: realloc
}

struct Options {
    /// Pages to grow each `Vec` to.
    pages: usize,
    /// MiB of the block that one `realloc` doubles.
    realloc_mib: usize,
    /// Leave transparent huge pages as the system has them.
    keep_thp: bool,
}

const USAGE: &str = "usage: realloc_paths [--pages N] [--realloc-mib M] [--keep-thp]
  --pages N        grow each Vec page by page to N 4 KiB pages, 1 <= N <= 2048 (default 256)
  --realloc-mib M  realloc a touched M MiB block to 2M MiB, 32 <= M <= 1024 (default 64)
  --keep-thp       leave transparent huge pages on: faults then undercount copies";

fn parse_args(args: &[String]) -> Result<Options, String> {
    let mut options = Options {
        pages: 256,
        realloc_mib: 64,
        keep_thp: false,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let (slot, range) = match flag.as_str() {
            "--keep-thp" => {
                options.keep_thp = true;
                continue;
            }
            "--pages" => (&mut options.pages, 1..=2048),
            // At least 32 MiB: glibc's mmap threshold never rises above that on
            // 64-bit, so the block is always a mapping of its own.
            "--realloc-mib" => (&mut options.realloc_mib, 32..=1024),
            other => return Err(format!("unknown argument `{other}`")),
        };
        let value = it.next().ok_or(format!("`{flag}` needs a number"))?;
        *slot = match value.parse() {
            Ok(n) if range.contains(&n) => n,
            _ => return Err(format!("`{flag}` takes {range:?}, got `{value}`")),
        };
    }
    Ok(options)
}

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
    println!("align   minor faults   pages in block   address           µs  verdict");
    for align in [1, 16, 32, 4096] {
        let run = measure_realloc(mib << 20, mib << 21, align)?;
        let verdict = if !thp_off {
            "none: with THP a fault may be 2 MiB"
        } else if run.faults * 64 < run.pages {
            "remapped: no page copied"
        } else if run.faults * 2 > run.pages {
            "copied: a fault per page"
        } else {
            "unclear"
        };
        let address = if run.moved { "moved" } else { "same" };
        println!(
            "{align:>5} {:>14} {:>16}   {address:<8} {:>12.0}  {verdict}",
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

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let options = parse_args(&args).unwrap_or_else(|e| {
        eprintln!("realloc_paths: {e}\n{USAGE}");
        std::process::exit(2);
    });
    print_growth(options.pages);
    println!();
    if let Err(e) = print_realloc(options.realloc_mib, options.keep_thp) {
        eprintln!("realloc_paths: {e}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The counts match the math: `reserve` reallocates once per doubling,
    /// `reserve_exact` once per page. (If std ever changes its growth
    /// factor, this test says so.)
    #[test]
    fn reserve_reallocates_per_doubling_and_reserve_exact_per_page() {
        for pages in [1, 2, 5, 64, 100] {
            for policy in [Policy::Reserve, Policy::ReserveExact] {
                let (reallocs, copied) = predicted(policy, pages);
                let bytes = grow_page_by_page(policy, pages as usize, 1u8);
                let aligned = grow_page_by_page(policy, pages as usize, Page([1; STEP]));
                for growth in [bytes, aligned] {
                    assert_eq!(growth.reallocations, reallocs, "{policy:?} to {pages}");
                    assert!(growth.moves <= reallocs && growth.bytes_moved <= copied);
                }
            }
        }
        assert_eq!(predicted(Policy::Reserve, 256), (8, 255 * 4096));
        assert_eq!(predicted(Policy::ReserveExact, 256), (255, 32640 * 4096));
    }

    /// For an alignment above 16, std's `realloc` allocates the new block
    /// while the old one still lives, then copies: every reallocation moves,
    /// and every byte is copied, exactly as the math says.
    #[test]
    fn a_page_aligned_vec_moves_and_copies_on_every_reallocation() {
        for policy in [Policy::Reserve, Policy::ReserveExact] {
            let growth = grow_page_by_page(policy, 64, Page([1; STEP]));
            let (reallocs, copied) = predicted(policy, 64);
            assert_eq!(growth.moves, reallocs, "{policy:?}");
            assert_eq!(growth.bytes_moved, copied, "{policy:?}");
        }
    }

    /// The claim of the chapter, counted in page faults: one realloc of a
    /// touched 64 MiB block to 128 MiB. Alignment 1 or 16: std calls
    /// `libc::realloc`, glibc calls `mremap`, and no page is written (a few
    /// faults at most). Alignment 32 or 4096: std allocates and copies, and
    /// each page copied into the new block faults once.
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn glibc_remaps_realloc_but_std_copies_alignments_above_16() {
        use faults::*;
        if let Some(tuning) = malloc_tuning() {
            println!("skipped: {tuning} changes glibc's malloc");
            return;
        }
        if let Err(e) = disable_thp() {
            if thp_setting() == "always" {
                println!("skipped: THP is `always` and could not be turned off ({e})");
                return;
            }
        }
        let mib = 1 << 20;
        for (align, copies) in [(1, false), (16, false), (32, true), (4096, true)] {
            let run = measure_realloc(64 * mib, 128 * mib, align).expect("realloc");
            println!("align {align}: {run:?}");
            if copies {
                assert!(
                    run.faults > run.pages / 2,
                    "align {align} should copy: {run:?}"
                );
                assert!(run.moved, "a copy lands at a new address: {run:?}");
            } else {
                assert!(run.faults < 256, "align {align} should remap: {run:?}");
            }
        }
    }

    #[test]
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    fn glibc_remaps_realloc_but_std_copies_alignments_above_16() {
        println!("skipped: needs Linux with glibc");
    }

    #[test]
    fn bad_arguments_are_named() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let err = |a: &[&str]| parse_args(&args(a)).err().expect("an error");
        assert!(err(&["--pages", "0"]).contains("--pages"));
        assert!(err(&["--pages", "x"]).contains("`x`"));
        assert!(err(&["--realloc-mib", "16"]).contains("32..=1024"));
        assert!(err(&["--realloc-mib"]).contains("needs a number"));
        assert!(err(&["--size", "1"]).contains("--size"));
        let options = parse_args(&args(&["--pages", "8", "--realloc-mib", "32"])).expect("ok");
        assert_eq!((options.pages, options.realloc_mib), (8, 32));
        assert!(!options.keep_thp);
        let default = parse_args(&[]).expect("ok");
        assert_eq!((default.pages, default.realloc_mib), (256, 64));
        assert!(parse_args(&args(&["--keep-thp"])).expect("ok").keep_thp);
    }
}
