//! `dynamic_buffers/<variant>/<len>`: stdlib's masked-minimum benchmark in
//! Rust, over lengths 10^1 .. 10^6, in six variants.
//!
//! - `preallocated`: the buffers are made once per length, outside the timed
//!   closure. Only the kernel is timed. This is the floor.
//! - `unmasked`: the same, with no element masked, so the kernel's branches
//!   are predictable: what the kernel costs when the data does not matter.
//! - `copy_in_loop`: each iteration copies the input into the preallocated
//!   buffers, then runs the kernel. What initialising costs, no allocation.
//! - `alloc_in_loop`: each iteration allocates the buffers (`to_vec`, as a
//!   benchmark that clones its input does), runs the kernel, and frees them.
//! - `prefaulted` and `first_touch`: each iteration copies the input into an
//!   anonymous mapping and runs the kernel. For `first_touch` the pages were
//!   dropped (`MADV_DONTNEED`, not timed) before each iteration, so every page
//!   faults again; for `prefaulted` they stay resident. Both are timed one
//!   iteration at a time, so they pay the same clock overhead.
//!
//! Throughput is in elements, so criterion's "elem/s" is per element of x.
//! Before each measurement the bench prints the minor page faults one
//! iteration takes (`faults <id> <n>`), which `cargo xtask bench` puts in the
//! table. `DMB_BENCH_QUICK=1` runs three lengths only (the xtask's `--quick`).
//!
//! The kernel and buffer setup are the example's: this file compiles
//! `examples/stack_vs_heap.rs` in, so the code the book shows is the code
//! measured.

#[path = "../examples/stack_vs_heap.rs"]
#[allow(dead_code)]
mod stack_vs_heap;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use memmap2::MmapMut;
use stack_vs_heap::{heap_buffers, masked_min, LENGTHS};
use std::hint::black_box;
use std::time::{Duration, Instant};

const SEED: u64 = 9652;

/// The lengths to run: all six, or three for `DMB_BENCH_QUICK=1`.
fn lengths() -> Vec<usize> {
    if std::env::var_os("DMB_BENCH_QUICK").is_some_and(|v| v == "1") {
        vec![10, 1_000, 100_000]
    } else {
        LENGTHS.to_vec()
    }
}

// ANCHOR: pages
/// `x` and `mask` in one anonymous mapping: `x` at the start, `mask` at the
/// next page boundary. Page-aligned, so `x` is aligned for `f64`.
struct Pages {
    map: MmapMut,
    n: usize,
    mask_at: usize,
}

impl Pages {
    fn new(n: usize) -> Pages {
        let page = page_size().expect("the page size");
        let mask_at = (n * 8).div_ceil(page) * page;
        let len = mask_at + n.div_ceil(page) * page;
        let map = MmapMut::map_anon(len).expect("an anonymous mapping");
        Pages { map, n, mask_at }
    }

    fn buffers(&mut self) -> (&mut [f64], &mut [u8]) {
        let (x, mask) = self.map.split_at_mut(self.mask_at);
        // SAFETY: the mapping is page-aligned, so `x` is aligned for f64; it
        // holds at least `8 * n` bytes; any bit pattern is a valid f64; and
        // the borrow of `self.map` lasts as long as the slice.
        let x = unsafe { std::slice::from_raw_parts_mut(x.as_mut_ptr().cast::<f64>(), self.n) };
        (x, &mut mask[..self.n])
    }
    // ANCHOR_END: pages

    // ANCHOR: drop_frames
    /// Gives the frames back: the next write to each page faults in a fresh
    /// zeroed page (madvise(2), MADV_DONTNEED on a private anonymous map).
    fn drop_frames(&mut self) {
        // SAFETY: the range is exactly this mapping, which we own; DONTNEED
        // only zeroes its contents, and no reference into it is alive here.
        let rc = unsafe {
            libc::madvise(
                self.map.as_mut_ptr().cast(),
                self.map.len(),
                libc::MADV_DONTNEED,
            )
        };
        assert_eq!(rc, 0, "madvise: {}", std::io::Error::last_os_error());
    }
    // ANCHOR_END: drop_frames
}

use os::page_size;

/// The examples' page size, copied from examples/memory_meter.rs
/// (tests/copies_match.rs holds the copy to it).
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

// ANCHOR: time_each
/// Times `iters` runs of `routine` one at a time; `setup` runs before each,
/// outside the timing.
fn time_each(iters: u64, mut setup: impl FnMut(), mut routine: impl FnMut() -> f64) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        setup();
        let started = Instant::now();
        black_box(routine());
        total += started.elapsed();
    }
    total
}
// ANCHOR_END: time_each

/// Minor page faults of this thread so far (getrusage(2), RUSAGE_THREAD).
fn minor_faults() -> u64 {
    // SAFETY: an all-zero `rusage` is a valid value for the call to overwrite.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable `rusage`.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) };
    assert_eq!(rc, 0, "getrusage: {}", std::io::Error::last_os_error());
    u64::try_from(usage.ru_minflt).unwrap_or(0)
}

/// Prints the page faults of one iteration: the average over `runs`.
fn report_faults(id: &str, runs: u32, mut one: impl FnMut()) {
    // Warm up: the first runs may fault in code and buffers (glibc serves the
    // first large allocation with mmap, the next from the heap, see mallopt(3)).
    for _ in 0..3 {
        one();
    }
    let before = minor_faults();
    for _ in 0..runs {
        one();
    }
    let per_iteration = (minor_faults() - before) as f64 / f64::from(runs);
    println!("faults {id} {per_iteration:.1}");
}

fn dynamic_buffers(c: &mut Criterion) {
    let mut group = c.benchmark_group("dynamic_buffers");
    for n in lengths() {
        group.throughput(Throughput::Elements(n as u64));
        let id = |variant: &str| format!("dynamic_buffers/{variant}/{n}");
        // The input, made once per length: also what the loops copy from.
        let (src_x, src_mask) = heap_buffers(n, SEED);

        // ANCHOR: preallocated
        let (x, mask) = heap_buffers(n, SEED);
        group.bench_function(BenchmarkId::new("preallocated", n), |b| {
            b.iter(|| masked_min(n, black_box(&x), 1, black_box(&mask), 1))
        });
        // ANCHOR_END: preallocated

        // ANCHOR: unmasked
        // The same kernel and values with no element masked: its branches
        // no longer depend on random mask bytes.
        let zeros = vec![0u8; n].into_boxed_slice();
        group.bench_function(BenchmarkId::new("unmasked", n), |b| {
            b.iter(|| masked_min(n, black_box(&x), 1, black_box(&zeros), 1))
        });
        // ANCHOR_END: unmasked

        // ANCHOR: copy_in_loop
        let (mut x, mut mask) = heap_buffers(n, SEED);
        let mut copy_in_loop = || {
            x.copy_from_slice(&src_x);
            mask.copy_from_slice(&src_mask);
            masked_min(n, black_box(&x), 1, black_box(&mask), 1)
        };
        report_faults(&id("copy_in_loop"), 20, || {
            black_box(copy_in_loop());
        });
        group.bench_function(BenchmarkId::new("copy_in_loop", n), |b| {
            b.iter(&mut copy_in_loop)
        });
        // ANCHOR_END: copy_in_loop

        // ANCHOR: alloc_in_loop
        let alloc_in_loop = || {
            let x = src_x.to_vec();
            let mask = src_mask.to_vec();
            masked_min(n, black_box(&x), 1, black_box(&mask), 1)
        };
        report_faults(&id("alloc_in_loop"), 20, || {
            black_box(alloc_in_loop());
        });
        group.bench_function(BenchmarkId::new("alloc_in_loop", n), |b| {
            b.iter(alloc_in_loop)
        });
        // ANCHOR_END: alloc_in_loop

        // ANCHOR: touch
        let mut pages = Pages::new(n);
        let copy_and_min = |pages: &mut Pages| {
            let (x, mask) = pages.buffers();
            x.copy_from_slice(&src_x);
            mask.copy_from_slice(&src_mask);
            masked_min(n, black_box(x), 1, black_box(mask), 1)
        };
        black_box(copy_and_min(&mut pages)); // every page resident
        report_faults(&id("prefaulted"), 20, || {
            black_box(copy_and_min(&mut pages));
        });
        group.bench_function(BenchmarkId::new("prefaulted", n), |b| {
            b.iter_custom(|iters| time_each(iters, || {}, || copy_and_min(&mut pages)))
        });

        let pages = std::cell::RefCell::new(Pages::new(n));
        report_faults(&id("first_touch"), 20, || {
            pages.borrow_mut().drop_frames();
            black_box(copy_and_min(&mut pages.borrow_mut()));
        });
        group.bench_function(BenchmarkId::new("first_touch", n), |b| {
            b.iter_custom(|iters| {
                time_each(
                    iters,
                    || pages.borrow_mut().drop_frames(),
                    || copy_and_min(&mut pages.borrow_mut()),
                )
            })
        });
        // ANCHOR_END: touch
    }
    group.finish();
}

// ANCHOR: config
criterion_group! {
    name = benches;
    // Short and small: 36 benchmarks in about a minute on 2 cores. Set here,
    // not on the group, so `--warm-up-time` etc. on the command line win.
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    targets = dynamic_buffers
}
criterion_main!(benches);
// ANCHOR_END: config
