//! Part II: a bounded child, a failing allocator, and the one-process suite.

use super::Output;

pub const OUTPUTS: &[Output] = &[
    Output {
        name: "rlimit_child",
        command: "cargo run --example rlimit_child",
        exit: 0,
        note: "Part II, a bounded child: four children ask for memory under RLIMIT_DATA or RLIMIT_AS",
    },
    Output {
        name: "rlimit_child_python",
        command: "cargo run --example rlimit_child -- --data-mib 64 --timeout-ms 10000 -- python3 -c b=bytearray(128<<20)",
        exit: 1,
        note: "Part II, a bounded child: Python's MemoryError under a 64 MiB RLIMIT_DATA",
    },
    Output {
        name: "rlimit_child_timeout",
        command: "cargo run --example rlimit_child -- --timeout-ms 300 -- sleep 5",
        exit: 124,
        note: "Part II, a bounded child: a command killed at its timeout exits 124",
    },
    Output {
        name: "rlimit_child_no_command",
        command: "cargo run --example rlimit_child -- -- /nonexistent",
        exit: 127,
        note: "Part II, a bounded child: a command that cannot start is named, exit 127",
    },
    Output {
        name: "rlimit_child_too_big",
        command: "cargo run --example rlimit_child -- --as-mib 17592186044416 -- true",
        exit: 2,
        note: "Part II, a bounded child: a limit past the flag's range is refused by name",
    },
    Output {
        name: "rlimit_child_tests",
        command: "cargo test --test rlimit_child",
        exit: 0,
        note: "Part II, a bounded child: the example's tests, on a single-threaded main",
    },
    Output {
        name: "fault_injection",
        command: "cargo run --example fault_injection",
        exit: 0,
        note: "Part II, a failing allocator: the oomTest loop, a budget, and an aborting append",
    },
    Output {
        name: "fault_injection_tests",
        command: "cargo test --example fault_injection",
        exit: 0,
        note: "Part II, a failing allocator: the example's own tests",
    },
    Output {
        name: "dynamic_memory",
        command: "cargo test --test dynamic_memory",
        exit: 0,
        note: "Part II, the one-process suite: eight cases, the balloon ones in a memory cgroup",
    },
];
