//! Part III's memory manager, tested: `unit` holds one test for each rule
//! the chapters state, `props` random sequences against the ledger's
//! invariants and a stress test with four threads.

#[path = "../../examples/memory_manager.rs"]
#[allow(dead_code)]
mod memory_manager;

mod props;
mod unit;
