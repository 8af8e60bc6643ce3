//! Part I: allocation strategies.

use super::Output;

pub const OUTPUTS: &[Output] = &[
    Output {
        name: "linear_memory",
        command: "cargo run --example linear_memory",
        exit: 0,
        note: "Part I: two reserve-and-commit memories grown to 4096 pages, and the path each grow took",
    },
    Output {
        name: "remap_memory",
        command: "cargo run --example remap_memory",
        exit: 0,
        note: "Part I, mremap: an exact mapping grown to 4096 pages, in place or moved",
    },
    Output {
        name: "file_backed_memory",
        command: "cargo run --example file_backed_memory -- --grow 2",
        exit: 0,
        note: "Part I, file-backed memory: one run grows a scratch file, closes it and reopens it",
    },
    Output {
        name: "file_backed_memory_refuses",
        command: "cargo run --example file_backed_memory -- --path README.md",
        exit: 1,
        note: "Part I, file-backed memory: a file it did not create is refused, unchanged",
    },
    Output {
        name: "file_backed_memory_bad_argument",
        command: "cargo run --example file_backed_memory -- --grow 0",
        exit: 2,
        note: "Part I, file-backed memory: a bad argument names the flag",
    },
    Output {
        name: "realloc_paths_growth",
        command: "cargo run --release --example realloc_paths -- --growth-only",
        exit: 0,
        note: "Part I, growth policies: reallocations and moves of a Vec grown to 256 pages",
    },
    Output {
        name: "realloc_paths_growth_2048",
        command: "cargo run --release --example realloc_paths -- --pages 2048 --growth-only",
        exit: 0,
        note: "Part I, growth policies: the same at 2048 pages",
    },
    Output {
        name: "realloc_paths_bad_argument",
        command: "cargo run --release --example realloc_paths -- --pages 0",
        exit: 2,
        note: "Part I, growth policies: a bad argument names the flag",
    },
    Output {
        name: "realloc_paths_realloc",
        command: "cargo run --release --example realloc_paths -- --realloc-only",
        exit: 0,
        note: "Part I, what realloc does: the page faults of one realloc, by alignment",
    },
    Output {
        name: "realloc_paths_hugetlb_keep_thp",
        command: "cargo run --release --example realloc_paths -- --realloc-only --hugetlb --keep-thp",
        exit: 0,
        note: "Part I, what realloc does: with glibc's huge-page tunable and THP left on, and the THP counters",
    },
    Output {
        name: "realloc_paths_hugetlb",
        command: "cargo run --release --example realloc_paths -- --realloc-only --hugetlb",
        exit: 0,
        note: "Part I, what realloc does: the same tunable with THP off for the process",
    },
];
