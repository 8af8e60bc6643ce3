//! The primer and the book's own chapters (introduction, how it is tested).

use super::Output;

pub const OUTPUTS: &[Output] = &[
    Output {
        name: "primer_meminfo",
        command: "grep -e MemTotal -e SwapTotal -e CommitLimit /proc/meminfo",
        exit: 0,
        note: "the primer: the machine's RAM, swap and commit limit",
    },
    Output {
        name: "primer_page_size",
        command: "getconf PAGESIZE",
        exit: 0,
        note: "the primer: the OS page size",
    },
    Output {
        name: "map_and_touch",
        command: "cargo run --example map_and_touch",
        exit: 0,
        note: "the primer: map 256 MiB, touch 64 MiB and unmap, with RSS at each step",
    },
    Output {
        name: "map_and_touch_bad_argument",
        command: "cargo run --example map_and_touch -- --map-mib 0",
        exit: 2,
        note: "the primer: a bad argument is refused before anything is mapped",
    },
    Output {
        name: "map_and_touch_tests",
        command: "cargo test --test map_and_touch -- --nocapture --test-threads=1 --format pretty",
        exit: 0,
        note: "the primer: the tests behind its claims, one at a time, with the measured RSS rise",
    },
    Output {
        name: "primer_overcommit_mode",
        command: "cat /proc/sys/vm/overcommit_memory",
        exit: 0,
        note: "the primer: the overcommit mode",
    },
    Output {
        name: "map_and_touch_16_gib",
        command: "cargo run --example map_and_touch -- --map-mib 16384 --touch-mib 1",
        exit: 0,
        note: "the primer, overcommit: 16 GiB mapped, 1 MiB touched",
    },
    Output {
        name: "map_and_touch_48_gib",
        command: "cargo run --example map_and_touch -- --map-mib 49152 --touch-mib 1",
        exit: 1,
        note: "the primer, overcommit: mode 0 refuses a mapping larger than RAM plus swap",
    },
    Output {
        name: "map_and_touch_48_gib_no_reserve",
        command: "cargo run --example map_and_touch -- --map-mib 49152 --touch-mib 1 --no-reserve",
        exit: 0,
        note: "the primer, overcommit: the same mapping with MAP_NORESERVE is accepted",
    },
    Output {
        name: "page_math",
        command: "cargo run --example page_math",
        exit: 0,
        note: "how this book is tested: page_math's run, the whole-file include form",
    },
    Output {
        name: "page_math_4096",
        command: "cargo run --example page_math -- --page 4096",
        exit: 0,
        note: "how this book is tested: the same byte counts in 4 KiB pages",
    },
];
