//! Part II: testing in a real guest.

use super::Output;

pub const OUTPUTS: &[Output] = &[Output {
    name: "guest_memory",
    command: "cargo run --example guest_memory",
    exit: 0,
    note: "src/part2-real-guest.md: this machine's /proc/meminfo, judged as a 768 MiB guest's",
}];
