//! `runtime_grow/<function>/<P>`: a wasm module grows its memory one page at
//! a time from 1 to P pages, storing to the last byte after each grow, under
//! wasmtime 48 with its own memory and with Part I's, in one run with the
//! raw floor of the same workload (`PROT_NONE`, `mprotect`, one page fault
//! per grow, no wasm at all).
//!
//! Criterion times one whole 1 -> P run (making the store and instance, and
//! dropping them, are not timed), with throughput in grows (P - 1).
//! `cargo xtask bench` turns the results into per-grow times and ratios to
//! `floor`.
//!
//! - `wasmtime_default`: wasmtime's own memory, its default config (4 GiB
//!   reserved, a 32 MiB guard: growth commits in place).
//! - `wasmtime_1mib`: wasmtime's own memory with `memory_reservation` and
//!   `memory_reservation_for_growth` of 1 MiB: past the reservation it maps
//!   a new block and copies (so only P <= 4096: at 16384 a run copies about
//!   512 GB).
//! - `ours_reserved`: `LinearMemory` under the default config (base fixed).
//! - `ours_relocate`: `LinearMemory` reserving 16 pages (1 MiB), under the
//!   movable config: past the reservation its pages move with `mremap`.
//! - `ours_remap`: `RemapMemory` under the movable config.
//! - `ours_copy`: `RemapMemory` copying every grow (only P = 256).

#[path = "../examples/wasmtime_memory.rs"]
#[allow(dead_code)]
mod wasmtime_memory;

use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use runtime::linear_memory::WASM_PAGE;
use std::time::{Duration, Instant};
use wasmtime::{Config, Engine, Instance, Module, Store, TypedFunc};
use wasmtime_memory::{engine, BookCreator, Layout, Strategy, GROW_WAT};

const SIZES: [u32; 3] = [256, 4096, 16384];
const MIB: u64 = 1 << 20;

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
        let error = std::io::Error::last_os_error();
        assert_ne!(base, libc::MAP_FAILED, "{error}");
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

/// One engine and its compiled module; each timed run gets a new instance.
struct Runner {
    engine: Engine,
    module: Module,
}

impl Runner {
    fn new(engine: Engine) -> Runner {
        let module = Module::new(&engine, GROW_WAT).expect("the module compiles");
        Runner { engine, module }
    }

    fn wasmtime(config: &Config) -> Runner {
        Runner::new(Engine::new(config).expect("an engine"))
    }

    fn ours(strategy: Strategy, layout: Layout) -> Runner {
        let creator = BookCreator::new(strategy);
        Runner::new(engine(layout, &creator).expect("an engine"))
    }

    /// Times `iters` runs, each 1 -> `pages` in a fresh instance.
    fn time(&self, iters: u64, pages: u32) -> Duration {
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            let mut store = Store::new(&self.engine, ());
            let instance = Instance::new(&mut store, &self.module, &[]).expect("instantiates");
            let grow_to: TypedFunc<i32, i32> =
                instance.get_typed_func(&mut store, "grow_to").unwrap();
            let started = Instant::now();
            let size = grow_to.call(&mut store, pages as i32).expect("no trap");
            total += started.elapsed();
            assert_eq!(size, pages as i32, "the memory refused a grow");
            drop(store);
        }
        total
    }
}

fn runtime_grow(c: &mut Criterion) {
    let mut group = c.benchmark_group("runtime_grow");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        // Every iteration is long (up to ~20 s): equal iterations per sample.
        .sampling_mode(SamplingMode::Flat);
    let mut one_mib = Config::new();
    one_mib
        .memory_reservation(MIB)
        .memory_reservation_for_growth(MIB);
    let runners = [
        (
            "wasmtime_default",
            Runner::wasmtime(&Config::new()),
            u32::MAX,
        ),
        ("wasmtime_1mib", Runner::wasmtime(&one_mib), 4096),
        (
            "ours_reserved",
            Runner::ours(Strategy::Reserved(None), Layout::Fixed),
            u32::MAX,
        ),
        (
            "ours_relocate",
            Runner::ours(Strategy::Reserved(Some(16)), Layout::Movable),
            u32::MAX,
        ),
        (
            "ours_remap",
            Runner::ours(Strategy::Remap, Layout::Movable),
            u32::MAX,
        ),
        (
            "ours_copy",
            Runner::ours(Strategy::Copy, Layout::Movable),
            256,
        ),
    ];
    for pages in SIZES {
        group.throughput(Throughput::Elements(u64::from(pages - 1)));
        group.bench_function(BenchmarkId::new("floor", pages), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let floor = Floor::new(pages);
                    let started = Instant::now();
                    floor.grow_page_by_page();
                    total += started.elapsed();
                }
                total
            })
        });
        for (name, runner, largest) in &runners {
            if pages <= *largest {
                group.bench_function(BenchmarkId::new(*name, pages), |b| {
                    b.iter_custom(|iters| runner.time(iters, pages))
                });
            }
        }
    }
    group.finish();
}

criterion_group!(benches, runtime_grow);
criterion_main!(benches);
