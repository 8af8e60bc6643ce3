//! `memory_grow/<function>/<P>`: grow one page at a time from 1 to P pages,
//! touching the last byte after each grow. The code measured is the code the
//! book shows: the example is compiled into this bench.
//!
//! Criterion reports the time of one whole 1 -> P run, with throughput in
//! grows (P - 1), so "elements/s" is grows per second. `cargo xtask bench`
//! turns the results into per-grow times and ratios to `floor`, which is
//! measured in the same run.
//!
//! `copy` runs only at P = 256: every grow copies the whole memory, so a run
//! costs O(P^2) bytes copied (about 2 GB at 256 pages, 8.8 TB at 16384).

#[path = "../examples/linear_memory.rs"]
#[allow(dead_code)]
mod linear_memory;
#[path = "../examples/remap_memory.rs"]
#[allow(dead_code)]
mod remap_memory;

use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use linear_memory::{grow_page_by_page, LinearMemory, WASM_PAGE};
use remap_memory::{Growth, RemapMemory};
use std::time::{Duration, Instant};

const SIZES: [u32; 3] = [256, 4096, 16384];

/// Times `iters` runs of `workload`, each on a fresh memory made by `setup`,
/// which is not timed (nor is dropping the memory).
fn time_runs<M>(iters: u64, setup: impl Fn() -> M, workload: impl Fn(&mut M)) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let mut memory = setup();
        let started = Instant::now();
        workload(&mut memory);
        total += started.elapsed();
        drop(memory);
    }
    total
}

/// The physical floor of the workload: a raw `PROT_NONE` reservation, one
/// `mprotect` and one page fault per grow, and nothing else.
struct Floor {
    base: *mut u8,
    len: usize,
}

impl Floor {
    fn new(pages: u32) -> Floor {
        let len = pages as usize * WASM_PAGE;
        let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;
        // SAFETY: a fresh anonymous mapping where the kernel chooses.
        let base = unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_NONE, flags, -1, 0) };
        assert_ne!(
            base,
            libc::MAP_FAILED,
            "{}",
            std::io::Error::last_os_error()
        );
        let floor = Floor {
            base: base.cast(),
            len,
        };
        floor.commit(0);
        floor
    }

    fn commit(&self, page: usize) {
        let start = self.base.wrapping_add(page * WASM_PAGE);
        let rw = libc::PROT_READ | libc::PROT_WRITE;
        // SAFETY: the page lies inside our reservation (`page < pages`).
        let rc = unsafe { libc::mprotect(start.cast(), WASM_PAGE, rw) };
        assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
        // SAFETY: the page was just made writable; its last byte is ours.
        unsafe { start.add(WASM_PAGE - 1).write_volatile(1) };
    }

    fn grow_page_by_page(&self) {
        (1..self.len / WASM_PAGE).for_each(|page| self.commit(page));
    }
}

impl Drop for Floor {
    fn drop(&mut self) {
        // SAFETY: the reservation is ours and nothing uses it any more.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

fn reserved_run(reservation: Option<u32>, pages: u32) -> impl Fn(u64) -> Duration {
    move |iters| {
        time_runs(
            iters,
            || LinearMemory::new(1, None, reservation).expect("a 1-page memory"),
            |m| {
                grow_page_by_page(m, pages).expect("the grow sequence");
            },
        )
    }
}

fn exact_run(growth: Growth, pages: u32) -> impl Fn(u64) -> Duration {
    move |iters| {
        time_runs(
            iters,
            || RemapMemory::new(1, None, growth).expect("a 1-page memory"),
            |m| {
                while m.size() < pages {
                    m.grow_traced(1).expect("the grow sequence");
                    let last = m.byte_len() - 1;
                    m.as_mut_slice()[last] = 1;
                }
            },
        )
    }
}

fn memory_grow(c: &mut Criterion) {
    let mut group = c.benchmark_group("memory_grow");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        // Every iteration is long (up to ~1 s): equal iterations per sample.
        .sampling_mode(SamplingMode::Flat);
    for pages in SIZES {
        group.throughput(Throughput::Elements(u64::from(pages - 1)));
        group.bench_function(BenchmarkId::new("floor", pages), |b| {
            b.iter_custom(|iters| time_runs(iters, || Floor::new(pages), |f| f.grow_page_by_page()))
        });
        let reserved = reserved_run(None, pages);
        group.bench_function(BenchmarkId::new("reserved", pages), |b| {
            b.iter_custom(&reserved)
        });
        let remap = exact_run(Growth::Remap, pages);
        group.bench_function(BenchmarkId::new("remap", pages), |b| b.iter_custom(&remap));
        // 16 pages = a 1 MiB reservation: relocation happens again and again.
        let relocate = reserved_run(Some(16), pages);
        group.bench_function(BenchmarkId::new("relocate", pages), |b| {
            b.iter_custom(&relocate)
        });
        if pages == 256 {
            let copy = exact_run(Growth::Copy, pages);
            group.bench_function(BenchmarkId::new("copy", pages), |b| b.iter_custom(&copy));
        }
        group.bench_function(BenchmarkId::new("vec_resize", pages), |b| {
            b.iter_custom(|iters| {
                time_runs(
                    iters,
                    || vec![0u8; WASM_PAGE],
                    |v| {
                        while v.len() < pages as usize * WASM_PAGE {
                            v.resize(v.len() + WASM_PAGE, 0);
                            let last = v.len() - 1;
                            v[last] = 1;
                        }
                    },
                )
            })
        });
    }
    group.finish();
}

criterion_group!(benches, memory_grow);
criterion_main!(benches);
