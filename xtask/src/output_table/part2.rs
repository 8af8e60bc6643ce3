//! Part II: measuring memory and creating pressure.

use super::Output;

pub const OUTPUTS: &[Output] = &[
    Output {
        name: "part2_meminfo",
        command: "grep -e MemTotal -e MemAvailable -e SwapTotal /proc/meminfo",
        exit: 0,
        note: "Part II, measuring: the machine's RAM, what is available, and its swap",
    },
    Output {
        name: "memory_meter",
        command: "cargo run --example memory_meter",
        exit: 0,
        note: "Part II, measuring: one reading of every source, with the file it came from",
    },
    Output {
        name: "pressure_refuses",
        command: "cargo run --example pressure -- --mib 65536",
        exit: 2,
        note: "Part II, creating pressure: 64 GiB is refused before anything is mapped",
    },
    Output {
        name: "pressure_populate",
        command:
            "cargo run --release --example pressure -- --mib 256 --step-mib 32 --touch populate",
        exit: 0,
        note: "Part II, creating pressure: 256 MiB made resident with MADV_POPULATE_WRITE",
    },
    Output {
        name: "pressure_write",
        command: "cargo run --release --example pressure -- --mib 256 --step-mib 32 --touch write",
        exit: 0,
        note: "Part II, creating pressure: the same with one write per page",
    },
    Output {
        name: "pressure_cgroup_oom",
        command: "cargo test --test pressure -- --ignored --nocapture",
        exit: 0,
        note:
            "Part II, creating pressure: a 32 MiB cgroup kills the generator either way it touches",
    },
    Output {
        name: "pressure_run",
        command: "cargo run --example pressure -- --mib 256 --step-mib 32 --hold-ms 500",
        exit: 0,
        note: "Part II, creating pressure: take, hold and release 256 MiB",
    },
    Output {
        name: "pressure_bad_argument",
        command: "cargo run --example pressure -- --mib 0",
        exit: 2,
        note: "Part II, creating pressure: a bad argument names the flag",
    },
];
