//! Bad input gets a clear error and loses nothing. This suite runs every
//! example binary with the arguments a reader gets wrong: none, `--help`,
//! `-h`, an unknown flag, and for each flag its usage lists `0`, `-1`, a word,
//! 2^64 and no value. It reads the flags from the example's own `--help`,
//! which lists one flag per line as
//!
//! ```text
//!   --name N   what it is (MIN..=MAX, default D)
//! ```
//!
//! and checks: help prints the usage on stdout and exits 0; anything wrong
//! prints one line on stderr naming the flag, nothing on stdout, and exits 2;
//! `0` is accepted exactly where the range allows it; nothing panics, and
//! every run (the one with no arguments too) ends within `TIMEOUT`.
//!
//! `cargo test --test bad_input` builds the examples first (`cargo build
//! --examples`); `cargo test --test bad_input -- NAME` checks only the
//! examples whose name contains NAME.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// The longest any one run may take, the demo run with no arguments included.
const TIMEOUT: Duration = Duration::from_secs(60);

/// Each run's data limit (RLIMIT_DATA): far above what any example's default
/// run maps, far below what would trouble the machine.
const DATA_LIMIT: u64 = 2 << 30;

/// A value no flag accepts, for each class of bad number.
const BAD_NUMBERS: [&str; 3] = ["-1", "many", "18446744073709551616"];

fn main() -> ExitCode {
    check_the_usage_parser();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let picked: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let examples: Vec<String> = example_names(root)
        .into_iter()
        .filter(|name| picked.is_empty() || picked.iter().any(|p| name.contains(p.as_str())))
        .collect();
    if args.iter().any(|a| a == "--list") {
        for name in &examples {
            println!("{name}: test");
        }
        return ExitCode::SUCCESS;
    }
    let bin_dir = match build(root, &examples) {
        Ok(dir) => dir,
        Err(e) => {
            eprintln!("bad_input: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (mut passed, mut failed) = (0, 0);
    for name in &examples {
        let binary = bin_dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
        let (runs, problems) = check_example(name, &binary);
        if problems.is_empty() {
            passed += 1;
            println!("bad_input: {name}: ok ({runs} runs)");
        } else {
            failed += 1;
            println!("bad_input: {name}: FAILED ({runs} runs)");
            for p in &problems {
                println!("    {p}");
            }
        }
    }
    println!("bad_input: {passed} passed, {failed} failed");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The examples: every `examples/*.rs`, by name.
fn example_names(root: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root.join("examples"))
        .expect("examples/ can be listed")
        .filter_map(|e| {
            let path = e.expect("a readable folder entry").path();
            let stem = path.file_stem()?.to_str()?.to_owned();
            path.extension().is_some_and(|e| e == "rs").then_some(stem)
        })
        .collect();
    names.sort();
    names
}

/// Builds the examples with the profile this test was built with, and
/// returns the folder their binaries are in. (`cargo test` builds the
/// examples that have tests of their own only as test binaries.)
fn build(root: &Path, examples: &[String]) -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this test binary: {e}"))?;
    // <target>/<profile>/deps/bad_input-<hash>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or("this test binary is not in a cargo target folder")?;
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(root).args(["build", "--quiet"]);
    match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => {}
        Some("release") => {
            cmd.arg("--release");
        }
        Some(other) => {
            cmd.args(["--profile", other]);
        }
        None => return Err("cannot tell the build profile".into()),
    }
    for name in examples {
        cmd.args(["--example", name]);
    }
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run cargo build: {e}"))?;
    if !status.success() {
        return Err(format!("cargo build of the examples failed: {status}"));
    }
    Ok(profile_dir.join("examples"))
}

/// A flag as the usage lists it.
#[derive(Debug, PartialEq)]
enum Flag {
    Switch(String),
    /// Takes a value that is not a number (a path, a command).
    Text(String),
    Number {
        name: String,
        min: u64,
        max: u64,
    },
}

/// The flags of a usage text, or why a line does not follow the format
/// `  --name N   what it is (MIN..=MAX, default D)`.
fn flags(usage: &str) -> (Vec<Flag>, Vec<String>) {
    let mut flags = Vec::new();
    let mut problems = Vec::new();
    for line in usage.lines() {
        let Some(body) = line.strip_prefix("  ") else {
            continue;
        };
        let mut words = body.split_whitespace();
        let Some(name) = words.next().filter(|w| w.starts_with("--")) else {
            continue;
        };
        let placeholder = words
            .next()
            .filter(|w| w.chars().all(|c| c.is_ascii_uppercase() || c == '_'));
        let range = number_range(line);
        match (placeholder, range) {
            (None, _) => flags.push(Flag::Switch(name.to_owned())),
            (Some("N"), Some(Ok((min, max, default)))) => {
                if !(min..=max).contains(&default) {
                    problems.push(format!(
                        "usage: {name}: default {default} is outside {min}..={max}"
                    ));
                }
                flags.push(Flag::Number {
                    name: name.to_owned(),
                    min,
                    max,
                });
            }
            (Some("N"), Some(Err(why))) => problems.push(format!("usage: {name}: {why}")),
            (Some("N"), None) => problems.push(format!(
                "usage: `{}` takes N but gives no `(MIN..=MAX, default D)`",
                line.trim()
            )),
            (Some(_), _) => flags.push(Flag::Text(name.to_owned())),
        }
    }
    (flags, problems)
}

/// `(MIN, MAX, D)` from `... (MIN..=MAX, default D)`.
fn number_range(line: &str) -> Option<Result<(u64, u64, u64), String>> {
    let open = line.rfind('(')?;
    let inner = line[open + 1..].strip_suffix(')')?;
    let (range, default) = inner.split_once(", default ")?;
    let (min, max) = range.split_once("..=")?;
    let parse = |what: &str, text: &str| {
        text.trim()
            .parse::<u64>()
            .map_err(|_| format!("{what} `{text}` is not a whole number"))
    };
    Some((|| {
        Ok((
            parse("MIN", min)?,
            parse("MAX", max)?,
            parse("default", default)?,
        ))
    })())
}

/// How one run ended.
struct Run {
    /// `None` if a signal killed it, or it timed out.
    code: Option<i32>,
    timed_out: bool,
    stdout: String,
    stderr: String,
}

impl Run {
    fn panicked(&self) -> bool {
        self.code == Some(101) || self.stderr.contains("panicked")
    }

    fn describe(&self) -> String {
        let how = if self.timed_out {
            format!("still running after {TIMEOUT:?}, killed")
        } else {
            match self.code {
                Some(code) => format!("exit {code}"),
                None => "killed by a signal".to_owned(),
            }
        };
        let stderr = self.stderr.trim();
        if stderr.is_empty() {
            how
        } else {
            format!(
                "{how}, stderr: {}",
                stderr.lines().take(3).collect::<Vec<_>>().join(" | ")
            )
        }
    }
}

/// Runs `binary args` with no input, a data limit, `oom_score_adj` 1000 and
/// `TIMEOUT`, and collects what it printed.
fn run(binary: &Path, args: &[&str]) -> Run {
    let mut cmd = Command::new(binary);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    limit_data(&mut cmd);
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
    // If memory runs out anyway, this child goes first, never the machine.
    // (Only Linux has the file; elsewhere the data limit is the bound.)
    let _ = std::fs::write(format!("/proc/{}/oom_score_adj", child.id()), "1000");
    let drain = |stream: Option<Box<dyn Read + Send>>| {
        thread::spawn(move || {
            let mut text = Vec::new();
            if let Some(mut stream) = stream {
                let _ = stream.read_to_end(&mut text);
            }
            String::from_utf8_lossy(&text).into_owned()
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let started = Instant::now();
    let (status, timed_out) = loop {
        if let Some(status) = child.try_wait().expect("wait for the example") {
            break (Some(status), false);
        }
        if started.elapsed() > TIMEOUT {
            let _ = child.kill();
            break (child.wait().ok(), true);
        }
        thread::sleep(Duration::from_millis(5));
    };
    Run {
        code: if timed_out {
            None
        } else {
            status.and_then(|s| s.code())
        },
        timed_out,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

#[cfg(unix)]
fn limit_data(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the child between fork and exec, where only
    // async-signal-safe calls are allowed; setrlimit is one, and the closure
    // allocates nothing and takes no lock.
    unsafe {
        cmd.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: DATA_LIMIT as libc::rlim_t,
                rlim_max: DATA_LIMIT as libc::rlim_t,
            };
            if libc::setrlimit(libc::RLIMIT_DATA, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[cfg(not(unix))]
fn limit_data(_: &mut Command) {}

/// The runs of one example, and what was wrong with them.
struct Checker<'a> {
    name: &'a str,
    binary: &'a Path,
    runs: usize,
    problems: Vec<String>,
}

impl Checker<'_> {
    fn run(&mut self, args: &[&str]) -> Run {
        self.runs += 1;
        run(self.binary, args)
    }

    /// `args` must be refused: one stderr line naming `flag`, exit 2.
    fn refused(&mut self, args: &[&str], flag: &str) {
        let r = self.run(args);
        let lines: Vec<&str> = r.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        let one_line_naming_flag = lines.len() == 1 && lines[0].contains(flag);
        if r.code != Some(2) || r.panicked() || !r.stdout.is_empty() || !one_line_naming_flag {
            self.problems.push(format!(
                "`{} {}` should print one line naming `{flag}` on stderr, nothing on stdout, and exit 2: {}{}",
                self.name,
                args.join(" "),
                r.describe(),
                if r.stdout.is_empty() { "" } else { " (and it printed on stdout)" }
            ));
        }
    }

    /// `args` must be accepted: a run that ends by itself, no panic, not 2.
    fn accepted(&mut self, args: &[&str], why: &str) {
        let r = self.run(args);
        if r.timed_out || r.panicked() || r.code.is_none() || r.code == Some(2) {
            self.problems.push(format!(
                "`{} {}` {why}: {}",
                self.name,
                args.join(" "),
                r.describe()
            ));
        }
    }
}

/// Every problem `binary` shows with bad input, and how many runs it took.
fn check_example(name: &str, binary: &Path) -> (usize, Vec<String>) {
    let mut c = Checker {
        name,
        binary,
        runs: 0,
        problems: Vec::new(),
    };
    let help = c.run(&["--help"]);
    let usage = help.stdout.clone();
    if help.code != Some(0) || !usage.contains("usage:") {
        c.problems.push(format!(
            "`{name} --help` should print the usage on stdout and exit 0: {}",
            help.describe()
        ));
    }
    let short = c.run(&["-h"]);
    if short.code != Some(0) || short.stdout != usage {
        c.problems.push(format!(
            "`{name} -h` should print what `--help` prints and exit 0: {}",
            short.describe()
        ));
    }
    let (flags, usage_problems) = flags(&usage);
    c.problems.extend(usage_problems);

    c.accepted(
        &[],
        "(no arguments) runs the demo, so it must end by itself",
    );
    c.refused(&["--no-such-flag"], "--no-such-flag");
    for flag in &flags {
        match flag {
            Flag::Switch(_) => {}
            Flag::Text(flag) => c.refused(&[flag], flag),
            Flag::Number {
                name: flag, min, ..
            } => {
                c.refused(&[flag], flag);
                for value in BAD_NUMBERS {
                    c.refused(&[flag, value], flag);
                }
                if *min == 0 {
                    c.accepted(&[flag, "0"], "is in the usage's range, so it must run");
                } else {
                    c.refused(&[flag, "0"], flag);
                }
            }
        }
    }
    (c.runs, c.problems)
}

/// The usage parser, checked on a usage of each kind before it reads any
/// example's: a wrong reading would make every other check meaningless.
fn check_the_usage_parser() {
    let usage = "usage: x [--size N] [--path PATH] [--quiet]
  --size N      bytes to map (0..=64, default 8)
  --path PATH   where to write (default /tmp/x)
  --quiet       print nothing (see --help)
  --count N     how many (1..=9, default 10)
  --bad N       no range
with --size 0 ... (a line that is not a flag)";
    let (found, problems) = flags(usage);
    assert_eq!(
        found,
        vec![
            Flag::Number {
                name: "--size".into(),
                min: 0,
                max: 64
            },
            Flag::Text("--path".into()),
            Flag::Switch("--quiet".into()),
            Flag::Number {
                name: "--count".into(),
                min: 1,
                max: 9
            },
        ]
    );
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems[0].contains("--count: default 10 is outside 1..=9"));
    assert!(problems[1].contains("--bad N       no range"));
}
