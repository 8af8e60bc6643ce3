//! The valgrind step: memcheck over the examples that handle raw mappings.
//! Each runs a small configuration (valgrind slows code ~50x); the reasons
//! are next to the arguments. Any memcheck error or definite leak fails.

use std::process::Command;

use crate::book::Book;
use crate::{run_recorded, Result};

/// `(example, arguments, why this configuration)`.
const RUNS: [(&str, &[&str], &str); 3] = [
    (
        "linear_memory",
        &[],
        "commit in place under a 4 GiB reservation, and relocation out of a 16-page one \
         (memcheck follows the PROT_NONE reservation and each mremap)",
    ),
    (
        "remap_memory",
        &[],
        "mremap in place and by moving; `Moved` is rare under valgrind, whose mappings \
         are placed differently",
    ),
    (
        "map_and_touch",
        &["--map-mib", "16", "--touch-mib", "4"],
        "the same map/touch/drop sequence as the default, at 16 MiB",
    ),
];

pub fn memcheck(book: &Book) -> Result<Vec<String>> {
    let valgrind = crate::system::require(&["valgrind"], "valgrind", "the valgrind step")?;
    let mut build = book.cargo();
    build.args(["build", "--quiet"]);
    for (example, _, _) in RUNS {
        build.args(["--example", example]);
    }
    let out = run_recorded(&mut build, book.quiet)?;
    if !out.success {
        return Err(out.error_lines().into());
    }
    let mut reports = Vec::new();
    for (example, args, why) in RUNS {
        let binary = book.cargo_target.join("debug/examples").join(example);
        let out = run_recorded(
            Command::new(&valgrind)
                .args([
                    "--tool=memcheck",
                    "--error-exitcode=99",
                    "--leak-check=full",
                    "--errors-for-leak-kinds=definite",
                ])
                .arg(&binary)
                .args(args),
            true,
        )?;
        let summary = out
            .stderr
            .lines()
            .filter(|l| l.contains("ERROR SUMMARY") || l.contains("definitely lost"))
            .map(|l| l.split_once(' ').map_or(l, |(_, rest)| rest).trim())
            .collect::<Vec<_>>()
            .join("; ");
        if !out.success {
            return Err(format!(
                "valgrind: examples/{example}.rs {}: {summary}\n{}",
                args.join(" "),
                out.stderr
                    .lines()
                    .rev()
                    .take(30)
                    .collect::<Vec<_>>()
                    .join("\n")
            )
            .into());
        }
        eprintln!(
            "valgrind: examples/{example}.rs {}: {summary} ({why})",
            args.join(" ")
        );
        reports.push(summary);
    }
    Ok(reports)
}
