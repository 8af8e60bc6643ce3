//! Part I's memories, compiled once for the runtime examples, tests and
//! benchmarks (the code is the book's examples, included by path).

#[path = "../../examples/linear_memory.rs"]
#[allow(dead_code)]
pub mod linear_memory;
#[path = "../../examples/remap_memory.rs"]
#[allow(dead_code)]
pub mod remap_memory;
