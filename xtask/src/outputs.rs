//! Program output on a page is generated, never pasted: `cargo xtask
//! outputs` runs each command of `output_table` and writes what it printed to
//! `examples/output/<name>.txt`, as the Rust book does with its `output.txt`
//! files. A file starts with the command as typed and ends with the machine
//! it ran on; a chapter shows it by including it, alone, in a `console`
//! block: `{{#include ../examples/output/<name>.txt}}`.
//!
//! The `outputs` step of `cargo xtask test` then checks that (a) every
//! output block of every chapter (a `console` or `text` block that is more
//! than `$ command` lines) is an include of a generated file, and (b) every
//! command still exits as recorded and prints the same lines, once digits are
//! masked: timings vary, the text and the structure may not.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::bench::machine::Machine;
use crate::bench::Mode;
use crate::block_length::include_path;
use crate::blocks;
use crate::book::{Book, Tally};
use crate::output_table::{self, Output};
use crate::{files, tools, Result};

/// The folders whose files are written by a command, never by hand.
const GENERATED: [&str; 3] = ["examples/output/", "benches/results/", "tests/results/"];

/// The longest one command may run.
const TIMEOUT: Duration = Duration::from_secs(300);

/// `cargo xtask outputs [NAME...]`: runs the commands (all, or those named)
/// and writes their output files.
pub fn write_outputs(root: &Path, names: &[String]) -> Result<()> {
    let picked: Vec<&Output> = output_table::all()
        .filter(|o| names.is_empty() || names.iter().any(|n| n == o.name))
        .collect();
    if let Some(unknown) = names
        .iter()
        .find(|n| !output_table::all().any(|o| o.name == n.as_str()))
    {
        let known: Vec<&str> = output_table::all().map(|o| o.name).collect();
        return Err(format!(
            "no output `{unknown}` in xtask/src/output_table/; there are: {}",
            known.join(", ")
        )
        .into());
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let dir = root.join("examples/output");
    std::fs::create_dir_all(&dir)?;
    let machine = Machine::here(Mode::Full);
    for output in picked {
        let (code, text) = run(root, &target, output.command)?;
        if code != Some(output.exit) {
            return Err(format!(
                "`{}` exited {}, but xtask/src/output_table/ says it exits {}:\n{text}",
                output.command,
                code.map_or("by a signal".to_owned(), |c| c.to_string()),
                output.exit
            )
            .into());
        }
        let file = dir.join(format!("{}.txt", output.name));
        std::fs::write(&file, render(output, &text, &machine))?;
        eprintln!(
            "xtask outputs: {} ({} lines): {}",
            file.strip_prefix(root)?.display(),
            text.lines().count(),
            output.note
        );
    }
    Ok(())
}

/// The file's text: the command, what it printed, the exit code if not 0,
/// and the machine.
fn render(output: &Output, printed: &str, machine: &Machine) -> String {
    let mut text = format!("$ {}\n", output.command);
    text.push_str(printed);
    if !text.ends_with('\n') {
        text.push('\n');
    }
    if output.exit != 0 {
        text.push_str(&format!("# exit status {}\n", output.exit));
    }
    text.push_str(&format!("# {}; `cargo xtask outputs`\n", machine.line()));
    text
}

/// The program's lines of a recorded file: no command, no trailer.
fn printed_lines<'t>(output: &Output, file_text: &'t str) -> Option<Vec<&'t str>> {
    let mut lines: Vec<&str> = file_text.lines().collect();
    if lines.first() != Some(&format!("$ {}", output.command).as_str()) {
        return None;
    }
    lines.remove(0);
    let trailer = if output.exit == 0 { 1 } else { 2 };
    if lines.len() < trailer
        || !lines[lines.len() - trailer..]
            .iter()
            .all(|l| l.starts_with("# "))
    {
        return None;
    }
    lines.truncate(lines.len() - trailer);
    Some(lines)
}

/// Runs `command` from `root`, stdout and stderr in one stream (in the
/// order they were written), and returns the exit code and the text.
fn run(root: &Path, target: &Path, command: &str) -> Result<(Option<i32>, String)> {
    let words: Vec<&str> = command.split_whitespace().collect();
    let (reader, writer) = std::io::pipe()?;
    let mut child = {
        let mut cmd = match words.split_first() {
            Some((&"cargo", rest)) => {
                let mut cmd = Command::new(tools::cargo());
                let (sub, args) = rest.split_first().ok_or("`cargo` with no subcommand")?;
                cmd.arg(sub);
                if !args.iter().any(|a| *a == "-q" || *a == "--quiet") {
                    cmd.arg("--quiet");
                }
                cmd.args(args).env("CARGO_TARGET_DIR", target);
                cmd
            }
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args);
                cmd
            }
            None => return Err("an empty command in xtask/src/output_table/".into()),
        };
        cmd.current_dir(root)
            .stdin(Stdio::null())
            .stdout(writer.try_clone()?)
            .stderr(writer)
            .env_remove("CARGO_TERM_COLOR");
        cmd.spawn()
            .map_err(|e| format!("cannot start `{command}`: {e}"))?
        // `cmd`, and with it this process's copy of the pipe's write end,
        // is dropped here, so the read below ends when the child does.
    };
    let reading = std::thread::spawn(move || {
        let mut text = Vec::new();
        let mut reader = reader;
        let _ = reader.read_to_end(&mut text);
        String::from_utf8_lossy(&text).into_owned()
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("`{command}` ran past {TIMEOUT:?} and was killed").into());
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Ok((status.code(), reading.join().unwrap_or_default()))
}

/// A line with its numbers masked and its spacing normalised: what may not
/// change between two runs.
fn masked(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut last_digit = false;
    for c in line.chars() {
        if c.is_ascii_digit() {
            if !last_digit {
                out.push('#');
            }
            last_digit = true;
        } else {
            out.push(c);
            last_digit = false;
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// How the output blocks of the chapters stand.
#[derive(Debug, Default, PartialEq)]
pub struct BlockReport {
    pub blocks: usize,
    pub generated: usize,
    /// `src/<chapter>.md:<line>: why`, for each block that is not generated.
    pub pasted: Vec<String>,
    /// Includes of `examples/output/` files that no entry of `output_table` writes.
    pub orphans: Vec<String>,
    /// The `output_table` entries no chapter includes.
    pub unused: Vec<&'static str>,
}

/// (a): every output block of the chapters in `src`.
pub fn output_blocks(src: &Path) -> Result<BlockReport> {
    let mut report = BlockReport::default();
    let mut included = Vec::new();
    for chapter in files::files_with_extension(src, "md")? {
        let text = std::fs::read_to_string(src.join(&chapter))?;
        for block in blocks::fenced(&text) {
            if block.lang != "console" && block.lang != "text" {
                continue;
            }
            let at = format!("src/{}:{}", chapter.display(), block.line);
            let mut continued = false;
            let (mut pasted, mut generated) = (0, 0);
            for line in &block.body {
                let command = continued || line.trim_start().starts_with("$ ");
                continued = command && line.trim_end().ends_with('\\');
                if command || line.trim().is_empty() {
                    continue;
                }
                match include_path(line).map(|arg| arg.split(':').next().unwrap_or(arg)) {
                    // Rust source shown as text is code, not output.
                    Some(path) if path.ends_with(".rs") => {}
                    Some(path) => {
                        let from_root = normalise(&chapter, path);
                        if GENERATED.iter().any(|g| from_root.starts_with(g)) {
                            generated += 1;
                            if let Some(name) = from_root
                                .strip_prefix("examples/output/")
                                .and_then(|f| f.strip_suffix(".txt"))
                            {
                                if !output_table::all().any(|o| o.name == name) {
                                    report.orphans.push(format!(
                                        "{at}: includes {from_root}, which no entry of xtask/src/output_table/ writes"
                                    ));
                                }
                                included.push(name.to_owned());
                            }
                        } else {
                            pasted += 1;
                        }
                    }
                    None => pasted += 1,
                }
            }
            // Only `$ command` lines, or Rust source shown as text: not output.
            if pasted + generated == 0 {
                continue;
            }
            report.blocks += 1;
            if pasted == 0 {
                report.generated += 1;
            } else {
                report.pasted.push(format!(
                    "{at}: a {} block with output typed into the chapter: generate it (an entry in xtask/src/output_table/<part>.rs) and include examples/output/<name>.txt",
                    block.lang
                ));
            }
        }
    }
    report.unused = output_table::all()
        .map(|o| o.name)
        .filter(|name| !included.iter().any(|i| i == name))
        .collect();
    Ok(report)
}

/// `../examples/output/x.txt` in `src/<chapter>` as a path from the root.
fn normalise(chapter: &Path, path: &str) -> String {
    let mut parts: Vec<&str> = vec!["src"];
    if let Some(parent) = chapter.parent().and_then(|p| p.to_str()) {
        parts.extend(parent.split('/').filter(|p| !p.is_empty()));
    }
    for part in path.split('/') {
        match part {
            ".." => {
                parts.pop();
            }
            "." | "" => {}
            p => parts.push(p),
        }
    }
    parts.join("/")
}

/// (b): every command again, into `target/xtask/outputs-check/`, held to
/// its recorded file.
pub fn rerun_outputs(book: &Book, only: Option<&[&str]>) -> Result<Vec<String>> {
    let scratch = book.target.join("xtask/outputs-check");
    std::fs::create_dir_all(&scratch)?;
    let machine = Machine::here(Mode::Full);
    let picked: Vec<&Output> = output_table::all()
        .filter(|o| only.is_none_or(|names| names.contains(&o.name)))
        .collect();
    // Two commands at a time: most are one busy thread, and what is held
    // to the recorded file is the lines with their digits masked, which a
    // neighbour cannot change (`cargo xtask outputs` records one at a time).
    let ran = crate::process::two_at_a_time(&picked, |output| {
        run(&book.root, &book.cargo_target, output.command)
    })?;
    let mut problems = Vec::new();
    for (output, (code, text)) in picked.into_iter().zip(ran) {
        let recorded_file = format!("examples/output/{}.txt", output.name);
        let Ok(recorded) = std::fs::read_to_string(book.root.join(&recorded_file)) else {
            problems.push(format!(
                "{recorded_file}: missing: run `cargo xtask outputs {}`",
                output.name
            ));
            continue;
        };
        let Some(before) = printed_lines(output, &recorded) else {
            problems.push(format!(
                "{recorded_file}: does not start with `$ {}` and end with the machine line: run `cargo xtask outputs {}`",
                output.command, output.name
            ));
            continue;
        };
        std::fs::write(
            scratch.join(format!("{}.txt", output.name)),
            render(output, &text, &machine),
        )?;
        if code != Some(output.exit) {
            problems.push(format!(
                "{recorded_file}: `{}` now exits {}, not {} as recorded",
                output.command,
                code.map_or("by a signal".to_owned(), |c| c.to_string()),
                output.exit
            ));
            continue;
        }
        let now: Vec<&str> = text.lines().collect();
        let differs = (0..before.len().max(now.len()))
            .find(|&i| before.get(i).map(|l| masked(l)) != now.get(i).map(|l| masked(l)));
        if let Some(i) = differs {
            let show = |l: Option<&&str>| l.map_or("(no line)".to_owned(), |l| format!("`{l}`"));
            problems.push(format!(
                "{recorded_file}:{}: `{}` printed {} where the file has {} (digits aside): run `cargo xtask outputs {}` and read the diff",
                i + 2,
                output.command,
                show(now.get(i)),
                show(before.get(i)),
                output.name
            ));
        }
    }
    Ok(problems)
}

/// The outputs step: (a) and (b).
pub fn outputs_step(book: &Book, tally: &mut Tally) -> Result<()> {
    let report = output_blocks(&book.root.join("src"))?;
    tally.output_blocks = report.blocks;
    tally.outputs_generated = report.generated;
    eprintln!(
        "outputs: {} of {} output blocks include a generated file; {} commands in xtask/src/output_table/",
        report.generated,
        report.blocks,
        output_table::all().count()
    );
    if !report.unused.is_empty() {
        eprintln!(
            "outputs: not shown by any chapter yet: {}",
            report.unused.join(", ")
        );
    }
    let mut problems = report.orphans;
    problems.extend(rerun_outputs(book, None)?);
    problems.extend(report.pasted);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n").into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_and_spacing_may_change_words_may_not() {
        assert_eq!(
            masked("floor   1 -> 16384 pages:  2.14 µs/grow"),
            masked("floor 1 -> 4096 pages: 12.9 µs/grow")
        );
        assert_ne!(masked("{Committed: 4095}"), masked("{Relocated: 4095}"));
        assert_eq!(masked("run 1: /tmp/x-25404.bin"), "run #: /tmp/x-#.bin");
    }

    #[test]
    fn a_recorded_file_reads_back() {
        let output = Output {
            name: "x",
            command: "cargo run --example x -- --n 0",
            exit: 2,
            note: "",
        };
        let machine = Machine {
            cpu: "CPU".into(),
            cores: 2,
            kernel: "Linux 6.1".into(),
            rustc: "rustc 1.95.0".into(),
            date: "2026-01-01".into(),
            mode: Mode::Full,
        };
        let text = render(&output, "x: --n takes 1..=9\n", &machine);
        assert_eq!(
            text,
            "$ cargo run --example x -- --n 0\nx: --n takes 1..=9\n# exit status 2\n# CPU, 2 cores, Linux 6.1, rustc 1.95.0, 2026-01-01; `cargo xtask outputs`\n"
        );
        assert_eq!(
            printed_lines(&output, &text),
            Some(vec!["x: --n takes 1..=9"])
        );
        assert_eq!(printed_lines(&output, "$ other\n"), None);
    }

    #[test]
    fn output_blocks_are_told_from_commands_and_code() {
        let dir = std::env::temp_dir().join(format!("xtask-outputs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("ch.md"),
            "```console\n$ cargo run \\\n  --example x\n```\n\n\
             ```console\n{{#include ../examples/output/linear_memory.txt}}\n```\n\n\
             ```text\n{{#include ../benches/dynamic_buffers.rs:pages}}\n```\n\n\
             ```text\npasted 1\n```\n\n\
             ```console\n{{#include ../examples/output/gone.txt}}\n```\n",
        )
        .unwrap();
        let report = output_blocks(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(report.blocks, 3);
        assert_eq!(report.generated, 2);
        assert_eq!(report.pasted.len(), 1);
        assert!(
            report.pasted[0].starts_with("src/ch.md:14: a text block"),
            "{:?}",
            report.pasted
        );
        assert_eq!(report.orphans.len(), 1);
        assert!(report.orphans[0].contains("examples/output/gone.txt"));
    }
}
