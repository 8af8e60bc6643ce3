//! Part I: plugging the memory into a runtime (wasmtime).

use super::Output;

pub const OUTPUTS: &[Output] = &[Output {
    name: "wasmtime_memory",
    command: "cargo run -p runtime --example wasmtime_memory",
    exit: 0,
    note: "Part I, runtime: wasm grows a memory to 4096 pages under wasmtime, backed by each of Part I's memories, under both layouts",
}];
