//! Part I's memories, tested: `examples/linear_memory.rs` (reserve and
//! commit) and `examples/remap_memory.rs` (an exact mapping grown with
//! `mremap`). `unit` holds the wasm contract and every fallback path, `model`
//! a property test against a `Vec`, and `os` what the kernel really does
//! (Linux): the facts the chapters state, asserted on the kernel that runs
//! them. `cargo xtask kernels` runs this binary on every kernel of the matrix.

#[path = "../../examples/linear_memory.rs"]
#[allow(dead_code)]
mod linear_memory;
#[path = "../../examples/remap_memory.rs"]
#[allow(dead_code)]
mod remap_memory;
#[cfg(target_os = "linux")]
#[path = "../../examples/rlimit_child.rs"]
#[allow(dead_code, unused_imports)]
mod rlimit_child;
#[path = "../support/mod.rs"]
mod support;

mod memories;
mod model;
#[cfg(target_os = "linux")]
mod os;
mod unit;
