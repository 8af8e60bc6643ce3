//! Running commands: streamed to the terminal as usual, and recorded so that a
//! failure can be reported with the lines that name the broken file.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread;

use crate::Result;

/// Runs `cmd` with inherited output and fails, naming `what`, if it fails.
pub fn run(cmd: &mut Command, what: &str) -> Result<()> {
    let status = cmd
        .status()
        .map_err(|e| format!("{what}: cannot start {:?}: {e}", cmd.get_program()))?;
    if !status.success() {
        return Err(format!("{what}: {status}").into());
    }
    Ok(())
}

pub struct Recorded {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Recorded {
    /// Fails, with the lines that name what broke, if the command failed or
    /// printed an error (mdBook logs some errors and still exits 0).
    pub fn ok_or_errors(&self) -> Result<()> {
        let errors = self.error_lines();
        if !self.success || !errors.is_empty() {
            return Err(if errors.is_empty() {
                "failed (see the output above)".to_owned()
            } else {
                errors
            }
            .into());
        }
        Ok(())
    }

    /// The lines worth repeating in an error: compiler errors and their
    /// locations, test failures, and tools' ERROR lines.
    pub fn error_lines(&self) -> String {
        let mut picked = Vec::new();
        for line in self.stderr.lines().chain(self.stdout.lines()) {
            let plain = strip_ansi(line);
            let t = plain.trim_start();
            let keep = t.starts_with("error")
                // codespan's location line, as mdbook-linkcheck2 prints it
                || t.starts_with("┌─")
                || t.starts_with("--> ")
                || t.starts_with("ERROR")
                || t.contains(" ERROR ")
                || t.starts_with("panicked")
                || t.starts_with("thread '")
                || t.starts_with("---- ")
                || t.ends_with("... FAILED");
            if keep && !picked.iter().any(|p| p == t) {
                picked.push(t.to_owned());
            }
        }
        picked.truncate(40);
        picked.join("\n")
    }
}

/// Drops terminal colour codes (`ESC [ ... m`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Runs `cmd`, echoing its stdout and stderr as they come (unless `quiet`), and
/// returns both. Never fails on a non-zero exit: the caller decides.
pub fn run_recorded(cmd: &mut Command, quiet: bool) -> Result<Recorded> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {:?}: {e}", cmd.get_program()))?;
    let out = child.stdout.take().expect("stdout is piped");
    let err = child.stderr.take().expect("stderr is piped");
    let out_thread = thread::spawn(move || tee(out, quiet, false));
    let err_thread = thread::spawn(move || tee(err, quiet, true));
    let status = child.wait()?;
    Ok(Recorded {
        success: status.success(),
        stdout: out_thread.join().unwrap_or_default(),
        stderr: err_thread.join().unwrap_or_default(),
    })
}

fn tee(stream: impl Read, quiet: bool, to_stderr: bool) -> String {
    let mut all = String::new();
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    while reader.read_until(b'\n', &mut line).unwrap_or(0) > 0 {
        let text = String::from_utf8_lossy(&line);
        if !quiet {
            // Echo failures are not worth failing the run for.
            let _ = if to_stderr {
                std::io::stderr().write_all(text.as_bytes())
            } else {
                std::io::stdout().write_all(text.as_bytes())
            };
        }
        all.push_str(&text);
        line.clear();
    }
    all
}

/// Runs `job` on every item, two at a time (the machine has two cores), and
/// returns the results in the order of `items`.
pub fn two_at_a_time<T, R, F>(items: &[T], job: F) -> Result<Vec<R>>
where
    T: Sync,
    R: Send,
    F: Fn(&T) -> Result<R> + Sync,
{
    let next = AtomicUsize::new(0);
    let results = Mutex::new(Vec::new());
    thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(i) else { break };
                let result = job(item);
                if let Ok(mut r) = results.lock() {
                    r.push((i, result));
                }
            });
        }
    });
    let mut results = results
        .into_inner()
        .map_err(|_| "a browser worker panicked")?;
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}
