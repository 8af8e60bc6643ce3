//! Part IV: benchmarking with dynamic memory.

use super::Output;

pub const OUTPUTS: &[Output] = &[
    Output {
        name: "stack_vs_heap",
        command: "cargo run --example stack_vs_heap",
        exit: 0,
        note: "Part IV, static vs dynamic: stack arrays in a child that dies at 10^6, heap buffers on 64 KiB",
    },
    Output {
        name: "stack_vs_heap_bigger_stack",
        command: "cargo run --example stack_vs_heap -- --stack-kib 16384",
        exit: 0,
        note: "Part IV, static vs dynamic: a 16 MiB stack fits every length",
    },
    Output {
        name: "stack_vs_heap_box_new",
        command: "cargo run --example stack_vs_heap -- --box-new --stack-kib 256",
        exit: 0,
        note: "Part IV, static vs dynamic: Box::new of a large array overflows in a debug build",
    },
    Output {
        name: "stack_vs_heap_bad_argument",
        command: "cargo run --example stack_vs_heap -- --stack-kib 8",
        exit: 2,
        note: "Part IV, static vs dynamic: a bad argument names the flag",
    },
];
