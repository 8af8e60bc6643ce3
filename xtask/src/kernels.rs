//! `cargo xtask kernels`: the book's OS-behaviour tests on the host kernel
//! and on each Debian kernel of `vm_assets::KERNEL_SERIES`, booted in a
//! QEMU guest; then `tests/grow_paths.rs` on each, into
//! `tests/results/kernel-grow-paths.md`.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::grow_paths::{grow_paths_of, grow_paths_table, machine_line, GrowPaths};
use crate::libtest::count_before;
use crate::vm::{self, Assets, Guest, GuestConfig};
use crate::{tools, vm_assets, Result};

/// A cargo target of the workspace (target names are unique across its
/// packages).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Target {
    /// `test` or `example` (an example built with `test = true`).
    pub kind: &'static str,
    pub name: &'static str,
}

/// The test binaries whose results depend on the kernel: run on every
/// kernel of the matrix. The one list to edit when tests move.
pub const OS_TESTS: [Target; 9] = [
    Target {
        kind: "test",
        name: "linear_memory",
    },
    Target {
        kind: "test",
        name: "dynamic_memory",
    },
    Target {
        kind: "test",
        name: "file_backed_memory",
    },
    Target {
        kind: "test",
        name: "rlimit_child",
    },
    Target {
        kind: "example",
        name: "pressure",
    },
    Target {
        kind: "test",
        name: "pressure",
    },
    Target {
        kind: "test",
        name: "map_and_touch",
    },
    // The runtime workspace member's: Part I's memories under wasmtime.
    Target {
        kind: "test",
        name: "wasmtime_memory",
    },
    Target {
        kind: "test",
        name: "no_leaks",
    },
];

/// The program (`harness = false`) that prints one JSON line per growth
/// strategy: which path each `memory.grow` took.
pub const GROW_PATHS: Target = Target {
    kind: "test",
    name: "grow_paths",
};

/// Where the grow-path table goes, for a chapter to `{{#include}}`.
pub const GROW_PATHS_TABLE: &str = "tests/results/kernel-grow-paths.md";

/// Each guest's base RAM and CPUs. 1 GiB holds the suites' bounded children
/// (the largest, dynamic_memory's balloon cases, stay under 330 MiB) with
/// room for the page cache of the 9p-shared binaries; 2 vCPUs, as the
/// host has 2 cores, so the tests' threads interleave as they do there.
pub const GUEST_MEMORY_MIB: u64 = 1024;
pub const GUEST_CPUS: u32 = 2;

/// One test binary's bound. Natively each takes under 2 s; under TCG ten to
/// thirty times that.
const BINARY_TIMEOUT: Duration = Duration::from_secs(180);

/// Passed, failed and skipped tests (libtest's `ignored` count as skipped).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
}

impl Counts {
    fn add(&mut self, other: Counts) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.skipped += other.skipped;
    }
}

impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} passed, {} failed, {} skipped",
            self.passed, self.failed, self.skipped
        )
    }
}

/// What `cargo xtask test` prints about the matrix.
#[derive(Debug, Default)]
pub struct Summary {
    /// The kernels booted in QEMU.
    pub booted: Vec<String>,
    /// The host's kernel, if the tests ran on it.
    pub host: Option<String>,
    pub counts: Counts,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = match &self.host {
            Some(release) => format!(" and the host ({release})"),
            None => String::new(),
        };
        write!(
            f,
            "kernels: {} booted in QEMU ({}){host}; their OS tests: {}",
            self.booted.len(),
            self.booted.join(", "),
            self.counts
        )
    }
}

/// One kernel's run.
struct KernelRun {
    /// `6.1.0-57-amd64`, or `6.18.44 (host)`.
    label: String,
    counts: Counts,
    /// Why each failed binary failed.
    failures: Vec<String>,
    grow_paths: std::result::Result<Vec<GrowPaths>, String>,
    /// QEMU guests: how long the boot took; `None` if it failed. Always
    /// `None` on the host.
    boot: Option<Duration>,
    in_qemu: bool,
    took: Duration,
}

impl KernelRun {
    /// A guest's run before its boot.
    fn not_booted(release: &str) -> KernelRun {
        KernelRun {
            label: release.to_owned(),
            counts: Counts::default(),
            failures: Vec::new(),
            grow_paths: Err("not run: the guest did not boot".to_owned()),
            boot: None,
            in_qemu: true,
            took: Duration::ZERO,
        }
    }
}

/// `cargo xtask kernels`.
pub fn kernels(root: &Path) -> Result<()> {
    let target_dir = root.join("target");
    let mut cargo = Command::new(tools::cargo());
    cargo.current_dir(root).env("CARGO_TARGET_DIR", &target_dir);
    run_matrix(root, cargo, &target_dir).map(|_| ())
}

/// Builds the binaries with `cargo` (a `cargo` command without arguments),
/// runs them on every kernel, prints one line per kernel, writes the table.
pub fn run_matrix(root: &Path, cargo: Command, target_dir: &Path) -> Result<Summary> {
    let assets = vm_assets::setup()?;
    let grow_paths_exists = has_target(root, GROW_PATHS)?;
    let mut wanted: Vec<Target> = OS_TESTS.to_vec();
    if grow_paths_exists {
        wanted.push(GROW_PATHS);
    }
    let binaries = build(cargo, &wanted)?;

    // Each binary's whole output, for a look after a failure.
    let logs = target_dir.join("xtask/kernels");
    let mut runs = Vec::new();
    let host = host_release();
    eprintln!("xtask: kernel {host} (host): running the OS tests");
    runs.push(on_host(root, &binaries, &host, &logs));
    // The guests boot at once: each is mostly one busy vCPU thread under
    // TCG, and the host has two cores. Their runs come back in the order of
    // `assets.kernels`.
    std::thread::scope(|scope| {
        let guests: Vec<_> = assets
            .kernels
            .iter()
            .map(|kernel| {
                eprintln!("xtask: kernel {}: booting a QEMU guest", kernel.release);
                let (assets, binaries, logs) = (&assets, &binaries, &logs);
                let run =
                    scope.spawn(move || in_guest(root, target_dir, assets, kernel, binaries, logs));
                (kernel, run)
            })
            .collect();
        for (kernel, run) in guests {
            runs.push(run.join().unwrap_or_else(|_| KernelRun {
                failures: vec!["the thread running this guest panicked".to_owned()],
                counts: Counts {
                    failed: 1,
                    ..Counts::default()
                },
                ..KernelRun::not_booted(&kernel.release)
            }));
        }
    });

    let mut summary = Summary::default();
    let mut problems = Vec::new();
    for run in &runs {
        let times = match run.boot {
            Some(boot) => format!(
                "boot {:.1} s, all {:.1} s",
                boot.as_secs_f64(),
                run.took.as_secs_f64()
            ),
            None if run.in_qemu => format!("did not boot, {:.1} s", run.took.as_secs_f64()),
            None => format!("all {:.1} s", run.took.as_secs_f64()),
        };
        eprintln!("xtask: kernel {}: took {times}", run.label);
        println!("kernel {}: {}", run.label, run.counts);
        summary.counts.add(run.counts);
        if !run.in_qemu {
            summary.host = Some(host.clone());
        } else if run.boot.is_some() {
            summary.booted.push(run.label.clone());
        }
        problems.extend(
            run.failures
                .iter()
                .map(|f| format!("kernel {}: {f}", run.label)),
        );
    }
    if !grow_paths_exists {
        problems.push(format!(
            "no `{}` test target (tests/grow_paths.rs): {GROW_PATHS_TABLE} cannot be written until it lands",
            GROW_PATHS.name
        ));
    } else {
        let grown: std::result::Result<Vec<_>, String> = runs
            .iter()
            .map(|r| match &r.grow_paths {
                Ok(rows) => Ok((r.label.clone(), rows.clone())),
                Err(e) => Err(format!("kernel {}: grow_paths: {e}", r.label)),
            })
            .collect();
        match grown {
            Ok(columns) => {
                let table = grow_paths_table(
                    &columns,
                    &machine_line(&assets, GUEST_MEMORY_MIB, GUEST_CPUS)?,
                );
                let path = root.join(GROW_PATHS_TABLE);
                std::fs::create_dir_all(path.parent().expect("has a parent"))?;
                std::fs::write(&path, table)?;
                eprintln!("xtask: wrote {GROW_PATHS_TABLE}");
            }
            Err(e) => problems.push(e),
        }
    }
    if problems.is_empty() {
        Ok(summary)
    } else {
        problems.push(format!(
            "each binary's whole output is in {}/<kernel>/",
            logs.display()
        ));
        Err(problems.join("\n").into())
    }
}

/// `cargo xtask vm-run RELEASE COMMAND`: boots the guest of `RELEASE` (a
/// prefix such as `6.12` is enough) with the repository shared as the
/// matrix shares it, runs `COMMAND` there, prints its output and exits
/// with its status. For looking into a failure by hand.
pub fn vm_run(root: &Path, args: &[String]) -> Result<()> {
    let [release, command @ ..] = args else {
        return Err("usage: cargo xtask vm-run RELEASE COMMAND...".into());
    };
    if command.is_empty() {
        return Err("usage: cargo xtask vm-run RELEASE COMMAND...".into());
    }
    let assets = vm_assets::setup()?;
    let kernel = assets
        .kernels
        .iter()
        .find(|k| k.release.starts_with(release.as_str()))
        .ok_or_else(|| {
            let known: Vec<&str> = assets.kernels.iter().map(|k| k.release.as_str()).collect();
            format!("no guest kernel `{release}`; there are {known:?}")
        })?;
    let config = GuestConfig::new(&assets, kernel)
        .memory_mib(GUEST_MEMORY_MIB)
        .cpus(GUEST_CPUS)
        .share(root)
        .share(&root.join("target"));
    let mut guest = Guest::boot(config)?;
    eprintln!(
        "xtask: {} booted in {:.1} s",
        guest.release,
        guest.booted_in.as_secs_f64()
    );
    let script = format!(
        "cd {} && {}",
        vm::shell_quote(&root.display().to_string()),
        command.join(" ")
    );
    let out = guest.run(&script, BINARY_TIMEOUT)?;
    print!("{}", out.stdout);
    eprint!("{}", out.stderr);
    guest.shutdown()?;
    if out.success() {
        Ok(())
    } else {
        Err(format!("the command exited with {}", out.status).into())
    }
}

/// Whether the book's package has `target` (`cargo metadata`), so a target
/// that moved is named, not a cargo error about a missing `--test`.
fn has_target(root: &Path, target: Target) -> Result<bool> {
    let out = Command::new(tools::cargo())
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .current_dir(root)
        .output()?;
    if !out.status.success() {
        return Err(format!("cargo metadata: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    let metadata: Value = serde_json::from_slice(&out.stdout)?;
    let root_manifest = root.join("Cargo.toml");
    let package = metadata["packages"]
        .as_array()
        .and_then(|ps| {
            ps.iter()
                .find(|p| p["manifest_path"].as_str() == root_manifest.to_str())
        })
        .ok_or("cargo metadata lists no package at the repository root")?;
    Ok(package["targets"].as_array().is_some_and(|ts| {
        ts.iter().any(|t| {
            t["name"] == target.name
                && t["kind"]
                    .as_array()
                    .is_some_and(|k| k.iter().any(|k| k == target.kind))
        })
    }))
}

/// `cargo test --no-run --message-format=json` for `targets`; their test
/// executables, by target.
fn build(mut cargo: Command, targets: &[Target]) -> Result<BTreeMap<Target, PathBuf>> {
    // `--workspace`: some targets are the `runtime` member's.
    cargo.args(["test", "--workspace", "--no-run", "--message-format=json"]);
    for t in targets {
        cargo.arg(format!("--{}", t.kind)).arg(t.name);
    }
    let out = cargo
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot start cargo: {e}"))?;
    if !out.status.success() {
        return Err("building the OS test binaries failed (see above)".into());
    }
    let mut found = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(message) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if message["reason"] != "compiler-artifact" || message["profile"]["test"] != true {
            continue;
        }
        let (Some(name), Some(exe)) = (
            message["target"]["name"].as_str(),
            message["executable"].as_str(),
        ) else {
            continue;
        };
        if let Some(t) = targets.iter().find(|t| {
            t.name == name
                && message["target"]["kind"]
                    .as_array()
                    .is_some_and(|k| k.iter().any(|k| k == t.kind))
        }) {
            found.insert(*t, PathBuf::from(exe));
        }
    }
    for t in targets {
        if !found.contains_key(t) {
            return Err(format!(
                "cargo built no test executable for {} `{}`: update OS_TESTS in xtask/src/kernels.rs",
                t.kind, t.name
            )
            .into());
        }
    }
    Ok(found)
}

fn host_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|r| r.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// What running one binary gave: `(exited 0, its output)`, or why it did
/// not run to the end.
type BinaryResult = std::result::Result<(bool, String), String>;

/// Runs every binary with `run_one`, keeping each output in `logs/`.
fn run_all(
    run: &mut KernelRun,
    binaries: &BTreeMap<Target, PathBuf>,
    logs: &Path,
    mut run_one: impl FnMut(&Path) -> BinaryResult,
) {
    let _ = std::fs::create_dir_all(logs);
    let keep = |name: &str, result: &BinaryResult| {
        let text = match result {
            Ok((_, out)) => out.clone(),
            Err(e) => e.clone(),
        };
        let _ = std::fs::write(logs.join(format!("{name}.log")), text);
    };
    for t in OS_TESTS {
        let t0 = Instant::now();
        let result = run_one(&binaries[&t]);
        // `pressure` is both an example and a test: the kind tells them apart.
        let name = format!("{} {}", t.kind, t.name);
        eprintln!(
            "xtask: kernel {}: {name} took {:.1} s",
            run.label,
            t0.elapsed().as_secs_f64()
        );
        keep(&name.replace(' ', "-"), &result);
        record(run, &name, result);
    }
    if let Some(exe) = binaries.get(&GROW_PATHS) {
        let result = run_one(exe);
        keep(GROW_PATHS.name, &result);
        run.grow_paths = result.and_then(|(ok, out)| grow_paths_of(ok, &out));
    }
}

/// The same binaries, run natively, as `cargo test` runs them (cwd: the
/// package root).
fn on_host(
    root: &Path,
    binaries: &BTreeMap<Target, PathBuf>,
    release: &str,
    logs: &Path,
) -> KernelRun {
    let started = Instant::now();
    let mut run = KernelRun {
        label: format!("{release} (host)"),
        counts: Counts::default(),
        failures: Vec::new(),
        grow_paths: Err("not run".to_owned()),
        boot: None,
        in_qemu: false,
        took: Duration::ZERO,
    };
    let scratch = logs.join(format!("{release}.out"));
    run_all(&mut run, binaries, &logs.join(release), |exe| {
        run_host_binary(root, exe, &scratch)
    });
    let _ = std::fs::remove_file(&scratch);
    run.took = started.elapsed();
    run
}

/// Runs `exe` with [`BINARY_TIMEOUT`], its stdout and stderr into the file
/// `out` (a pipe would wait for any grandchild a test leaves behind).
fn run_host_binary(root: &Path, exe: &Path, out: &Path) -> BinaryResult {
    let file = std::fs::File::create(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let file_err = file.try_clone().map_err(|e| e.to_string())?;
    let mut child = Command::new(exe)
        .current_dir(root)
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(file_err)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
    let deadline = Instant::now() + BINARY_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "still running after {} s; killed",
                    BINARY_TIMEOUT.as_secs()
                ));
            }
        }
    };
    let mut text = String::new();
    std::fs::File::open(out)
        .and_then(|mut f| f.read_to_string(&mut text))
        .map_err(|e| format!("{}: {e}", out.display()))?;
    Ok((status.success(), text))
}

/// Boots `kernel`, runs every binary in it, shuts it down.
fn in_guest(
    root: &Path,
    target_dir: &Path,
    assets: &Assets,
    kernel: &vm::Kernel,
    binaries: &BTreeMap<Target, PathBuf>,
    logs: &Path,
) -> KernelRun {
    let started = Instant::now();
    let mut run = KernelRun::not_booted(&kernel.release);
    let config = GuestConfig::new(assets, kernel)
        .memory_mib(GUEST_MEMORY_MIB)
        .cpus(GUEST_CPUS)
        .share(root)
        .share(target_dir);
    let mut guest = match Guest::boot_retrying_a_panic(config) {
        Ok((guest, first)) => {
            if let Some(first) = first {
                eprintln!(
                    "xtask: kernel {}: the first boot panicked before any test ran ({}); \
                     the second booted",
                    kernel.release,
                    first.panic_line().unwrap_or_default()
                );
            }
            guest
        }
        Err(e) => {
            run.failures.push(format!("boot: {e}"));
            run.counts.failed += 1;
            run.took = started.elapsed();
            return run;
        }
    };
    run.boot = Some(guest.booted_in);
    eprintln!(
        "xtask: kernel {}: booted in {:.1} s",
        kernel.release,
        guest.booted_in.as_secs_f64()
    );
    // The first read of a file over 9p is slow under TCG: read the test
    // binaries and the shell they start before any test's timeouts run.
    let mut warm = String::from("cat /usr/bin/sh /usr/lib/x86_64-linux-gnu/libc.so.6");
    for exe in binaries.values() {
        warm.push(' ');
        warm.push_str(&vm::shell_quote(&exe.display().to_string()));
    }
    let warm = format!("{warm} > /dev/null 2>&1; sh -c true");
    if let Err(e) = guest.run_ok(&warm, BINARY_TIMEOUT) {
        run.failures.push(format!("warming the page cache: {e}"));
    }
    let cwd = vm::shell_quote(&root.display().to_string());
    run_all(&mut run, binaries, &logs.join(&kernel.release), |exe| {
        let script = format!(
            "cd {cwd} && exec {} 2>&1",
            vm::shell_quote(&exe.display().to_string())
        );
        guest
            .run(&script, BINARY_TIMEOUT)
            .map(|out| (out.success(), out.stdout))
            .map_err(|e| e.to_string())
    });
    if let Err(e) = guest.shutdown() {
        run.failures.push(format!("shutdown: {e}"));
    }
    run.took = started.elapsed();
    run
}

/// Adds one binary's result to `run`.
fn record(run: &mut KernelRun, name: &str, result: BinaryResult) {
    match result.and_then(|(ok, out)| counts_of(ok, &out).map(|c| (c, out))) {
        Ok((counts, out)) => {
            if counts.failed > 0 {
                run.failures
                    .push(format!("{name}: {counts}\n{}", failure_lines(&out)));
            }
            run.counts.add(counts);
        }
        Err(e) => {
            run.failures.push(format!("{name}: {e}"));
            run.counts.failed += 1;
        }
    }
}

/// The counts a test binary printed: libtest's `test result:` line, or a
/// custom harness's `N passed, N failed, N skipped`. A binary that exited
/// non-zero but counted no failure counts as one.
pub fn counts_of(success: bool, output: &str) -> std::result::Result<Counts, String> {
    let mut counts = Counts::default();
    let mut found = false;
    for line in output.lines() {
        if let Some(rest) = line.trim().strip_prefix("test result: ") {
            counts.add(Counts {
                passed: count_before(rest, " passed"),
                failed: count_before(rest, " failed"),
                skipped: count_before(rest, " ignored"),
            });
            found = true;
        } else if line.contains(" passed, ") && line.contains(" failed") {
            counts.add(Counts {
                passed: count_before(line, " passed"),
                failed: count_before(line, " failed"),
                skipped: count_before(line, " skipped"),
            });
            found = true;
        }
    }
    if !found {
        let tail: Vec<&str> = output.lines().rev().take(15).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(format!("printed no result line:\n{}", tail.join("\n")));
    }
    if !success && counts.failed == 0 {
        counts.failed = 1;
    }
    Ok(counts)
}

/// What a failed binary said about its failures: libtest's `failures:`
/// section (each test's panic and assertion), or a custom harness's
/// FAILED lines with their indented details.
fn failure_lines(output: &str) -> String {
    let lines: Vec<&str> = output.lines().collect();
    let mut picked = Vec::new();
    if let Some(start) = lines.iter().position(|l| l.starts_with("---- ")) {
        picked.extend(
            lines[start..]
                .iter()
                .take_while(|l| l.trim() != "failures:")
                .copied(),
        );
    } else {
        let mut in_failure = false;
        for line in &lines {
            if line.contains("FAILED") {
                in_failure = true;
            } else if !line.starts_with("    ") {
                in_failure = false;
            }
            if in_failure {
                picked.push(*line);
            }
        }
    }
    picked.truncate(40);
    picked.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_libtest_and_custom_result_lines() {
        let libtest = "running 3 tests\ntest a ... ok\n\ntest result: ok. 2 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.31s\n";
        assert_eq!(
            counts_of(true, libtest),
            Ok(Counts {
                passed: 2,
                failed: 0,
                skipped: 1
            })
        );
        let custom = "upper_limit: PASS\ndynamic_memory: 7 passed, 0 failed, 1 skipped in 1.5 s\n";
        assert_eq!(
            counts_of(true, custom),
            Ok(Counts {
                passed: 7,
                failed: 0,
                skipped: 1
            })
        );
    }

    #[test]
    fn a_crash_without_a_result_line_is_an_error_and_a_bad_exit_a_failure() {
        assert!(counts_of(false, "Segmentation fault\n")
            .unwrap_err()
            .contains("no result line"));
        let counted_nothing = "test result: ok. 3 passed; 0 failed; 0 ignored\n";
        assert_eq!(counts_of(false, counted_nothing).unwrap().failed, 1);
    }
}
