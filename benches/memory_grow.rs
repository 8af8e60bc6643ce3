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

use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use linear_memory::{grow_page_by_page, Floor, LinearMemory, Strategy};
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

fn strategy_run(strategy: Strategy, pages: u32) -> impl Fn(u64) -> Duration {
    move |iters| {
        time_runs(
            iters,
            || LinearMemory::new(1, None, strategy).expect("a 1-page memory"),
            |m| {
                grow_page_by_page(m, pages).expect("the grow sequence");
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
            b.iter_custom(|iters| {
                time_runs(
                    iters,
                    || Floor::new(pages).expect("a reservation"),
                    |f| f.grow_page_by_page(pages).expect("commit"),
                )
            })
        });
        let strategies = [
            (
                "reserved",
                Strategy::Reserved {
                    reservation_pages: None,
                },
            ),
            ("remap", Strategy::Remap),
            // 16 pages = a 1 MiB reservation: relocation happens again and again.
            (
                "relocate",
                Strategy::Reserved {
                    reservation_pages: Some(16),
                },
            ),
        ];
        for (name, strategy) in strategies {
            let run = strategy_run(strategy, pages);
            group.bench_function(BenchmarkId::new(name, pages), |b| b.iter_custom(&run));
        }
        if pages == 256 {
            let run = strategy_run(Strategy::Copy, pages);
            group.bench_function(BenchmarkId::new("copy", pages), |b| b.iter_custom(&run));
        }
        group.bench_function(BenchmarkId::new("vec_resize", pages), |b| {
            b.iter_custom(|iters| {
                time_runs(
                    iters,
                    || vec![0u8; linear_memory::WASM_PAGE],
                    |v| {
                        while v.len() < pages as usize * linear_memory::WASM_PAGE {
                            v.resize(v.len() + linear_memory::WASM_PAGE, 0);
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
