//! Part III: documenting dynamic memory adjustments.

use super::Output;

pub const OUTPUTS: &[Output] = &[
    Output {
        name: "memory_manager",
        command: "cargo run --example memory_manager",
        exit: 0,
        note: "Part III, dynamic sizing: the scenario, step by step",
    },
    Output {
        name: "memory_manager_bad_argument",
        command: "cargo run --example memory_manager -- --fraction-pct 0",
        exit: 2,
        note: "Part III, dynamic sizing: a bad argument names the flag",
    },
    Output {
        name: "budgeted_memory",
        command: "cargo run --example budgeted_memory",
        exit: 0,
        note: "Part III, the flows: two WebAssembly memories grow under one budget",
    },
    Output {
        name: "memory_manager_stress",
        command: "cargo test --test memory_manager four_threads -- --nocapture",
        exit: 0,
        note:
            "Part III, architecture: four threads against one manager, and what they were granted",
    },
    Output {
        name: "diagrams_match_code_wrong_name",
        command: "cargo test --test diagrams_match_code a_wrong_name -- --nocapture",
        exit: 0,
        note: "Part III, documenting: the diagram check's error for a name the code lacks",
    },
];
