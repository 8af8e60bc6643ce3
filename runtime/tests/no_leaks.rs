//! Many instances, each with one of Part I's memories, made and dropped:
//! afterwards the process has no more mappings than before.
//!
//! One test in its own binary, so no other test maps memory meanwhile.
//! `cargo test -p runtime --test no_leaks`

#![cfg(target_os = "linux")]

#[path = "../examples/wasmtime_memory.rs"]
#[allow(dead_code)]
mod wasmtime_memory;

use wasmtime::Module;
use wasmtime_memory::{engine, grow_in_wasm, BookCreator, Layout, Strategy, GROW_WAT};

/// The lines of /proc/self/maps: one per mapping.
fn mappings() -> usize {
    let maps = std::fs::read_to_string("/proc/self/maps").expect("/proc/self/maps");
    maps.lines().count()
}

#[test]
fn many_instances_leave_no_mapping_behind() {
    // A leak of one mapping per instance shows as ROUNDS more lines.
    const ROUNDS: u32 = 20;
    let cases = [
        (Layout::Movable, Strategy::Reserved(None)),
        (Layout::Movable, Strategy::Reserved(Some(4))),
        (Layout::Movable, Strategy::Remap),
        (Layout::Movable, Strategy::Copy),
        (Layout::Fixed, Strategy::Reserved(None)),
        (Layout::Fixed, Strategy::Reserved(Some(4))),
    ];
    for (layout, strategy) in cases {
        let what = format!("{layout:?} {strategy:?}");
        let creator = BookCreator::new(strategy);
        let engine = engine(layout, &creator).unwrap();
        let module = Module::new(&engine, GROW_WAT).unwrap();
        // One round first: wasmtime's own lazily made state is not a leak.
        assert_eq!(grow_in_wasm(&engine, &module, 32).unwrap(), 32, "{what}");
        let before = mappings();
        for _ in 0..ROUNDS {
            assert_eq!(grow_in_wasm(&engine, &module, 32).unwrap(), 32, "{what}");
        }
        let after = mappings();
        assert!(
            after <= before,
            "{what}: {before} mappings before, {after} after"
        );
        let stats = creator.stats();
        assert_eq!(
            (stats.created, stats.alive),
            (ROUNDS + 1, 0),
            "{what}: {stats:?}"
        );
        let grows: u32 = stats.paths.values().sum();
        assert_eq!(grows, (ROUNDS + 1) * 31, "{what}: {stats:?}");
    }
}
