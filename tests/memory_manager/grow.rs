//! `examples/budgeted_memory.rs`: a WebAssembly memory whose `memory.grow`
//! goes through its own copy of the manager.

use crate::budgeted_memory::{
    BudgetedMemory, Config, ErrorKind, MemoryConsumer, MemoryGrowError, MemoryManager, Reservation,
    WASM_PAGE,
};
use std::sync::{Arc, Mutex};

const KIB: u64 = 1024;

fn manager_with(budget_kib: u64) -> Arc<MemoryManager> {
    MemoryManager::new(Config {
        total: budget_kib * KIB + 1,
        reserved_overhead: 1,
        fraction: 1.0,
        growth_pct: 0,
        granule: 64 * KIB,
    })
    .expect("valid config")
}

/// A consumer that holds `bytes` and gives them all back when asked.
struct Spillable {
    reservation: Reservation,
    held: Mutex<u64>,
}

impl MemoryConsumer for Spillable {
    fn spill(&self, _bytes: u64) -> u64 {
        let mut held = self.held.lock().expect("lock");
        self.reservation.release(*held);
        std::mem::take(&mut *held)
    }
}

#[test]
fn memory_grow_returns_minus_one_when_the_manager_refuses_and_changes_nothing() {
    let manager = manager_with(1024);
    let wasm = BudgetedMemory::new(&manager, "wasm", 64);
    assert_eq!(wasm.grow(4), 0);
    wasm.bytes()[0] = 7;
    let before = manager.snapshot();
    assert_eq!(wasm.grow(13), -1, "13 pages are 832 KiB, 768 are free");
    assert_eq!(wasm.grow(61), -1, "over the declared maximum");
    assert_eq!(manager.snapshot(), before);
    assert_eq!(wasm.bytes().len(), 4 * WASM_PAGE);
    assert_eq!(wasm.grow(12), 4, "exactly what is free");
    assert_eq!(wasm.grow(0), 16);
    let bytes = wasm.bytes();
    assert_eq!(bytes[0], 7, "old bytes are kept");
    assert!(
        bytes[4 * WASM_PAGE..].iter().all(|&b| b == 0),
        "new pages are zero"
    );
}

#[test]
fn memory_grow_says_why_it_returned_minus_one() {
    let manager = manager_with(1024);
    let wasm = BudgetedMemory::new(&manager, "wasm", 64);
    manager.set_heap_in_use(256 * KIB);
    assert_eq!(wasm.grow(8), 0);
    let refused = |delta| match wasm.grow_traced(delta) {
        Err(MemoryGrowError::Refused(e)) => Some(e.kind),
        _ => None,
    };
    // 13 pages (832 KiB) are more than the whole 768 KiB off-heap limit.
    assert_eq!(refused(13), Some(ErrorKind::TooLarge));
    // 5 pages fit the limit, but 512 + 320 + 256 is 64 KiB over the budget,
    // and the memory itself cannot spill.
    assert_eq!(refused(5), Some(ErrorKind::OverBudget { short: 64 * KIB }));
    assert!(matches!(
        wasm.grow_traced(57),
        Err(MemoryGrowError::OverMaximum)
    ));
    assert_eq!(held!(manager, "wasm").used, 512 * KIB);
}

#[test]
fn a_memory_grow_can_make_another_consumer_spill() {
    let manager = manager_with(1024);
    let other = manager.register("other", |reservation| Spillable {
        reservation,
        held: Mutex::new(512 * KIB),
    });
    other.reservation.acquire(512 * KIB).expect("fits");
    let wasm = BudgetedMemory::new(&manager, "wasm", 64);
    let (old, grant) = wasm.grow_traced(12).expect("grows after a spill");
    let spills = grant.map(|g| g.spills).unwrap_or_default();
    assert_eq!(old, 0);
    assert_eq!(
        spills
            .iter()
            .map(|s| (s.consumer.as_str(), s.released))
            .collect::<Vec<_>>(),
        [("other", 512 * KIB)]
    );
    check_invariants!(manager).expect("invariants");
}

/// `examples/output/budgeted_memory.txt` is this scenario's output exactly.
#[test]
fn the_generated_grow_output_is_the_scenario_exactly() {
    let lines = crate::budgeted_memory::run_scenario(Config::default()).expect("it runs");
    assert_eq!(
        crate::unit::shown("budgeted_memory"),
        lines,
        "run `cargo xtask outputs budgeted_memory`"
    );
}
