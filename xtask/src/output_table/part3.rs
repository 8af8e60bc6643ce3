//! Part III: documenting dynamic memory adjustments.

use crate::outputs::Output;

pub const OUTPUTS: &[Output] = &[Output {
    name: "memory_manager",
    command: "cargo run --example memory_manager",
    exit: 0,
    note: "Part III, dynamic sizing: the scenario, step by step",
}];
