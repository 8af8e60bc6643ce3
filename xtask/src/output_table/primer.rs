//! The primer and the book's own chapters (introduction, how it is tested).

use crate::outputs::Output;

pub const OUTPUTS: &[Output] = &[Output {
    name: "map_and_touch_bad_argument",
    command: "cargo run --example map_and_touch -- --map-mib 0",
    exit: 2,
    note: "the primer: a bad argument is refused before anything is mapped",
}];
