//! The commands whose output the book shows, one file per part so that each
//! part's authors add theirs in their own file.

mod part1;
mod part1_runtime;
mod part2;
mod part2_failing;
mod part2_guest;
mod part3;
mod part4;
mod primer;

/// One program run whose output a chapter shows.
pub struct Output {
    /// The file: `examples/output/<name>.txt`.
    pub name: &'static str,
    /// The command as a reader types it, from the repository's root. Words
    /// are split at spaces (no shell quoting); a `cargo` command runs with
    /// `--quiet`, so only the program's own output is recorded.
    pub command: &'static str,
    /// The exit code it must end with.
    pub exit: i32,
    /// Where it is shown, and what it shows.
    pub note: &'static str,
}

/// Every command, in the book's order.
pub fn all() -> impl Iterator<Item = &'static Output> {
    [
        primer::OUTPUTS,
        part1::OUTPUTS,
        part1_runtime::OUTPUTS,
        part2::OUTPUTS,
        part2_failing::OUTPUTS,
        part2_guest::OUTPUTS,
        part3::OUTPUTS,
        part4::OUTPUTS,
    ]
    .into_iter()
    .flatten()
}
