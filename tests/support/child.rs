//! Running one test of the current test binary again, alone, in a child
//! process: for tests that lower a limit, install a signal-killing fault, or
//! need no other test thread mapping memory meanwhile. The child runs with
//! `oom_score_adj` 1000 and a timeout, so it never takes the host down.

use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Set in the child, so the test knows to do its work instead of re-running.
const CHILD_VAR: &str = "DMB_TEST_CHILD";

/// True inside the child that `run_alone` started.
pub fn is_child() -> bool {
    std::env::var_os(CHILD_VAR).is_some()
}

/// What the child did.
pub struct ChildRun {
    pub status: ExitStatus,
    /// stdout then stderr.
    pub output: String,
}

/// This test binary, set to run the test `name` (its full path in this
/// binary, e.g. `os::grow_fails_cleanly_under_rlimit_data`) alone, as the
/// child in which `is_child` is true. A caller may add arguments (such as
/// `--ignored`) and variables before it runs.
pub fn alone(name: &str) -> Command {
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut command = Command::new(exe);
    command.args([name, "--exact", "--nocapture", "--test-threads=1"]);
    command.env(CHILD_VAR, "1");
    command
}

/// Runs the test `name` alone in a child process and waits for it, killing
/// it after `timeout`.
pub fn run_alone(name: &str, timeout: Duration) -> ChildRun {
    run(name, alone(name), timeout)
}

/// Runs `command`, a child made by `alone(name)`, and waits for it, killing
/// it after `timeout`.
pub fn run(name: &str, mut command: Command, timeout: Duration) -> ChildRun {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the child");
    // Set before it has done anything: if memory runs out, the child goes first.
    std::fs::write(format!("/proc/{}/oom_score_adj", child.id()), "1000")
        .expect("raise the child's oom_score_adj");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            break status;
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{name}: the child ran past {timeout:?} and was killed");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let out = child.wait_with_output().expect("the child's output");
    let output =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    ChildRun { status, output }
}

/// `run_alone`, asserting that the child passed and printed `marker` (so a
/// child that skipped its body cannot pass by accident).
pub fn passes_alone(name: &str, marker: &str) -> String {
    let run = run_alone(name, Duration::from_secs(60));
    assert!(
        run.status.success() && run.output.contains(marker),
        "{name} in a child ({}): expected `{marker}`:\n{}",
        run.status,
        run.output
    );
    run.output
}
