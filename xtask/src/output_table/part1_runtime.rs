//! Part I: plugging the memory into a runtime (wasmtime).

use crate::outputs::Output;

pub const OUTPUTS: &[Output] = &[];
