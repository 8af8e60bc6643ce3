//! Part III's memory manager, tested: `unit` holds one test for each rule
//! the chapters state, `props` random sequences against the ledger's
//! invariants and a stress test with four threads, `grow` the WebAssembly
//! memory of `examples/budgeted_memory.rs`.

#[path = "../../examples/memory_manager.rs"]
#[allow(dead_code)]
mod memory_manager;

#[path = "../../examples/budgeted_memory.rs"]
#[allow(dead_code)]
mod budgeted_memory;

/// The ledger's invariants, read from one snapshot under the manager's lock:
/// the reservations sum to the off-heap total, none is smaller than its use,
/// and the pool is within the budget. A macro, because each example has its
/// own copy of the manager's types.
macro_rules! check_invariants {
    ($manager:expr) => {{
        let (l, holdings) = $manager.snapshot();
        let sum: u64 = holdings.iter().map(|h| h.reserved).sum();
        let under = holdings.iter().any(|h| h.used > h.reserved);
        if sum != l.off_heap_used || under || l.off_heap_used > l.budget {
            Err(format!("reservations sum to {sum} in {l:?}: {holdings:?}"))
        } else {
            Ok(())
        }
    }};
}

/// One consumer's holding, by name, from a snapshot.
macro_rules! held {
    ($manager:expr, $name:expr) => {{
        let holdings = $manager.snapshot().1;
        let found = holdings.into_iter().find(|h| h.consumer == $name);
        found.expect("a registered consumer")
    }};
}

mod grow;
mod props;
mod unit;
