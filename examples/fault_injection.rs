//! A global allocator that fails on purpose, and the oomTest loop that uses it.
//!
//! It fails the Nth allocation or past a byte budget. Code that reserves with
//! `try_reserve` gets an error it can handle; code that allocates infallibly
//! (`push`, `Box::new`) aborts, which the demo shows in a child process (this
//! program, re-run; so only the example binary runs that part).
//!
//! - Explained in: "A failing allocator" (src/part2-fault-injection.md)
//! - Run: `cargo run --example fault_injection`
//! - Tested by: `cargo test --example fault_injection`
//! - Depends on: std

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::TryReserveError;
use std::fmt::Debug;
use std::process::ExitCode;

// ANCHOR: plan
/// What the allocator does on the current thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Never fail.
    Off,
    /// Fail allocation number `n` (counting from 0), and only that one.
    FailNth { n: usize },
    /// Fail any allocation that would take the bytes allocated under this
    /// plan (and not yet freed) past `bytes`.
    Budget { bytes: usize },
}

thread_local! {
    // Const-initialized and without destructors: reading them allocates
    // nothing, which an allocator must not do.
    static PLAN: Cell<Plan> = const { Cell::new(Plan::Off) };
    static SEEN: Cell<usize> = const { Cell::new(0) };
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static FIRED: Cell<bool> = const { Cell::new(false) };
}
// ANCHOR_END: plan

// ANCHOR: should_fail
/// Decides whether this allocation of `grow` more bytes fails, and counts it.
fn should_fail(grow: usize) -> bool {
    let plan = PLAN.try_with(Cell::get).unwrap_or(Plan::Off);
    let fail = match plan {
        Plan::Off => return false,
        Plan::FailNth { n } => SEEN.with(|seen| {
            let this = seen.get();
            seen.set(this + 1);
            this == n
        }),
        Plan::Budget { bytes } => LIVE.with(|live| live.get() + grow > bytes),
    };
    if fail {
        FIRED.with(|fired| fired.set(true));
    } else {
        LIVE.with(|live| live.set(live.get() + grow));
    }
    fail
}

fn freed(bytes: usize) {
    let _ = LIVE.try_with(|live| live.set(live.get().saturating_sub(bytes)));
}
// ANCHOR_END: should_fail

// ANCHOR: global_alloc
/// The system allocator, with failures on purpose. (`alloc_zeroed` keeps
/// its default, which calls `alloc`.)
pub struct FaultInjector;

// SAFETY: every call forwards to `System` with the caller's arguments, or
// returns null, which GlobalAlloc allows for any failed allocation.
unsafe impl GlobalAlloc for FaultInjector {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if should_fail(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: the caller's contract for `alloc` is System's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        freed(layout.size());
        // SAFETY: `ptr` came from System through this allocator.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // A realloc is an allocation: it can fail, and growth counts
        // against the budget.
        if should_fail(new_size.saturating_sub(layout.size())) {
            return std::ptr::null_mut();
        }
        freed(layout.size().saturating_sub(new_size));
        // SAFETY: as for `dealloc`; on null the old block is still valid.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: FaultInjector = FaultInjector;
// ANCHOR_END: global_alloc

/// What happened under a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Allocations the plan saw (reallocations included).
    pub allocations: usize,
    /// Whether the plan made one fail.
    pub fired: bool,
}

// ANCHOR: with_plan
/// Runs `f` with `plan` on this thread only; other threads never fail.
pub fn with_plan<R>(plan: Plan, f: impl FnOnce() -> R) -> (R, Stats) {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            PLAN.with(|p| p.set(Plan::Off));
        }
    }
    SEEN.with(|s| s.set(0));
    LIVE.with(|l| l.set(0));
    FIRED.with(|f| f.set(false));
    PLAN.with(|p| p.set(plan));
    let reset = Reset; // turns the plan off even if `f` panics
    let result = f();
    drop(reset);
    let stats = Stats {
        allocations: SEEN.with(Cell::get),
        fired: FIRED.with(Cell::get),
    };
    (result, stats)
}
// ANCHOR_END: with_plan

// ANCHOR: log
/// An append-only log: the bytes of every record in one buffer, and where
/// each record ends. Invariant: `ends` rises, and its last entry is the
/// length of `bytes` (0 records: `bytes` is empty).
#[derive(Debug, Default)]
pub struct RecordLog {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl RecordLog {
    /// Appends a record, or returns the error and leaves the log unchanged.
    /// Both buffers are reserved first; nothing after the reservations can
    /// fail, so a failure can never leave half a record.
    pub fn try_append(&mut self, record: &[u8]) -> Result<(), TryReserveError> {
        self.bytes.try_reserve(record.len())?;
        self.ends.try_reserve(1)?;
        self.bytes.extend_from_slice(record);
        self.ends.push(self.bytes.len());
        Ok(())
    }

    /// The same, in the wrong order: the bytes go in before the second
    /// reservation, so a failure there leaves bytes that no record owns.
    pub fn try_append_in_the_wrong_order(&mut self, record: &[u8]) -> Result<(), TryReserveError> {
        self.bytes.try_reserve(record.len())?;
        self.bytes.extend_from_slice(record);
        self.ends.try_reserve(1)?;
        self.ends.push(self.bytes.len());
        Ok(())
    }

    // ANCHOR_END: log

    /// The infallible version: if an allocation fails, `extend_from_slice`
    /// and `push` call `handle_alloc_error`, which aborts the process.
    pub fn append(&mut self, record: &[u8]) {
        self.bytes.extend_from_slice(record);
        self.ends.push(self.bytes.len());
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    // ANCHOR: check
    /// The invariant, checked.
    pub fn check(&self) -> Result<(), String> {
        let last = self.ends.last().copied().unwrap_or(0);
        if last != self.bytes.len() {
            return Err(format!(
                "{} bytes, but the records end at {last}",
                self.bytes.len()
            ));
        }
        if self.ends.windows(2).any(|w| w[0] > w[1]) {
            return Err("record ends go backwards".into());
        }
        Ok(())
    }
    // ANCHOR_END: check
}

// ANCHOR: oom_test
/// SpiderMonkey's `oomTest`, for Rust. Runs `op` on a fresh state with
/// allocation 0 failing, then 1, then 2, and so on, and checks the state
/// after each run. Stops when `op` runs without reaching the failing
/// allocation, and returns how many allocations it made.
pub fn oom_test<S, E: Debug>(
    mut fresh: impl FnMut() -> S,
    mut op: impl FnMut(&mut S) -> Result<(), E>,
    mut check: impl FnMut(&S) -> Result<(), String>,
    mut trace: impl FnMut(usize, &Result<(), E>, bool, &S),
) -> Result<usize, String> {
    const MOST: usize = 10_000;
    for n in 0..MOST {
        let mut state = fresh();
        let (result, stats) = with_plan(Plan::FailNth { n }, || op(&mut state));
        // The plan is off again: checking and tracing may allocate.
        check(&state).map_err(|why| format!("after failing allocation {n}: {why}"))?;
        trace(n, &result, stats.fired, &state);
        match (&result, stats.fired) {
            (Ok(()), false) => return Ok(stats.allocations),
            (Err(e), false) => return Err(format!("failed with no failure injected: {e:?}")),
            // Failed cleanly, or recovered: both are fine once checked.
            (_, true) => {}
        }
    }
    Err(format!("still reaching new allocations after {MOST} runs"))
}
// ANCHOR_END: oom_test

const RECORDS: [&[u8]; 3] = [b"alpha", b"beta", b"gamma"];

fn append_all(
    append: fn(&mut RecordLog, &[u8]) -> Result<(), TryReserveError>,
) -> impl FnMut(&mut RecordLog) -> Result<(), TryReserveError> {
    move |log| RECORDS.iter().try_for_each(|r| append(log, r))
}

// ANCHOR: budget
/// Grows a `Vec` by doubling with `try_reserve` until the budget refuses.
/// Returns the capacity reached and the error that stopped it.
fn grow_under_budget(budget: usize) -> (usize, Option<TryReserveError>) {
    let (result, _) = with_plan(Plan::Budget { bytes: budget }, || {
        let mut v: Vec<u8> = Vec::new();
        loop {
            let more = v.capacity().max(4096);
            if let Err(e) = v.try_reserve_exact(v.capacity() + more - v.len()) {
                return (v.capacity(), Some(e));
            }
            v.resize(v.capacity(), 0);
        }
    });
    result
}
// ANCHOR_END: budget

// ANCHOR: abort_child
/// The child's body: an infallible append with allocation 0 failing.
/// `handle_alloc_error` prints "memory allocation of N bytes failed" and
/// aborts: there is no error to return, and no unwinding.
fn abort_in_child() -> ! {
    let mut log = RecordLog::default();
    with_plan(Plan::FailNth { n: 0 }, || log.append(b"never stored"));
    unreachable!("the append above aborts the process");
}
// ANCHOR_END: abort_child

const CHILD_ENV: &str = "FAULT_INJECTION_CHILD";

/// Whether this process is the example binary itself. skeptic and
/// `mdbook test` compile the same file into binaries with other names; the
/// demo re-runs only the example.
fn is_the_example_binary() -> bool {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.file_stem().map(|s| s == "fault_injection"))
        .unwrap_or(false)
}

/// Re-runs this program with `FAULT_INJECTION_CHILD=abort` and reports how
/// the child ended.
fn abort_demo() -> Result<String, String> {
    if !is_the_example_binary() {
        return Ok(
            "skipped: this copy is not the example binary, so it does not re-run itself \
                   (run `cargo run --example fault_injection`)"
                .into(),
        );
    }
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let out = std::process::Command::new(exe)
        .env(CHILD_ENV, "abort")
        .output()
        .map_err(|e| format!("re-running this program: {e}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    #[cfg(unix)]
    let how = {
        use std::os::unix::process::ExitStatusExt;
        match out.status.signal() {
            Some(6) => "killed by signal 6 (SIGABRT)".to_string(),
            Some(signal) => format!("killed by signal {signal}"),
            None => format!("{}", out.status),
        }
    };
    #[cfg(not(unix))]
    let how = format!("{}", out.status);
    // The first line; a backtrace follows it if RUST_BACKTRACE is set.
    let first = stderr.lines().next().unwrap_or("");
    Ok(format!("child {how}; it printed {first:?}"))
}

const PROGRAM: &str = "fault_injection";
const USAGE: &str = "usage: fault_injection
  takes no flags: runs the oomTest loop over a record log, a budget, and an
  infallible append in a child process";

// SHARED: cli (canonical: examples/map_and_touch.rs)
/// The command line, read the same way by every example: `--name value`
/// flags and switches, then `-- words` for a command to run. `--help` prints
/// the usage and exits 0; anything wrong prints one line naming the flag
/// and exits 2.
struct Args {
    program: &'static str,
    words: Vec<String>,
}

#[allow(dead_code)] // each example uses the methods it needs
impl Args {
    fn parse(program: &'static str, usage: &str) -> Args {
        let words: Vec<String> = std::env::args().skip(1).collect();
        if words
            .iter()
            .take_while(|w| *w != "--")
            .any(|w| w == "--help" || w == "-h")
        {
            println!("{usage}");
            std::process::exit(0);
        }
        Args { program, words }
    }

    fn fail(&self, why: &str) -> ! {
        eprintln!("{}: {why} (see --help)", self.program);
        std::process::exit(2)
    }

    /// `--name VALUE`, taken off the command line.
    fn text(&mut self, name: &str) -> Option<String> {
        let at = self
            .words
            .iter()
            .take_while(|w| *w != "--")
            .position(|w| w == name)?;
        if self.words.get(at + 1).is_none_or(|value| value == "--") {
            self.fail(&format!("{name} needs a value"));
        }
        self.words.remove(at);
        Some(self.words.remove(at))
    }

    /// `--name N`: a whole number in `range`, or `default` if absent.
    fn number(&mut self, name: &str, default: u64, range: std::ops::RangeInclusive<u64>) -> u64 {
        let Some(text) = self.text(name) else {
            return default;
        };
        match text.parse::<u64>() {
            Ok(n) if range.contains(&n) => n,
            _ => {
                let (min, max) = (range.start(), range.end());
                self.fail(&format!(
                    "{name} takes a whole number from {min} to {max}, not `{text}`"
                ))
            }
        }
    }

    /// Whether the switch `--name` was given.
    fn switch(&mut self, name: &str) -> bool {
        let at = self
            .words
            .iter()
            .take_while(|w| *w != "--")
            .position(|w| w == name);
        at.map(|at| self.words.remove(at)).is_some()
    }

    /// The words after `--` (a command to run), or none.
    fn rest(&mut self) -> Vec<String> {
        let at = self.words.iter().position(|w| w == "--");
        at.map(|at| self.words.split_off(at).split_off(1))
            .unwrap_or_default()
    }

    /// Ends the parse: a word no flag took is an error.
    fn finish(self) {
        if let Some(word) = self.words.first() {
            self.fail(&format!("unknown argument `{word}`"));
        }
    }
}
// SHARED_END: cli

fn main() -> ExitCode {
    if std::env::var_os(CHILD_ENV).is_some() {
        abort_in_child();
    }
    Args::parse(PROGRAM, USAGE).finish();
    println!("oomTest over RecordLog::try_append, 3 records:");
    let careful = oom_test(
        RecordLog::default,
        append_all(RecordLog::try_append),
        RecordLog::check,
        |n, result, fired, log| {
            let what = match (result, fired) {
                (Err(_), _) => format!("allocation {n} fails: try_append returns Err"),
                (Ok(()), true) => format!("allocation {n} fails: recovered, Ok"),
                (Ok(()), false) => format!("allocation {n} is never reached: Ok"),
            };
            println!("  {what}; log consistent, records: {}", log.len());
        },
    );
    match careful {
        Ok(n) => println!("  ran clean with {n} allocations: every failure point checked"),
        Err(why) => {
            println!("  FAILED: {why}");
            return ExitCode::FAILURE;
        }
    }
    println!("oomTest over RecordLog::try_append_in_the_wrong_order:");
    match oom_test(
        RecordLog::default,
        append_all(RecordLog::try_append_in_the_wrong_order),
        RecordLog::check,
        |_, _, _, _| {},
    ) {
        Err(why) => println!("  caught the bug: {why}"),
        Ok(_) => {
            println!("  FAILED: the bug went unnoticed");
            return ExitCode::FAILURE;
        }
    }
    let (capacity, error) = grow_under_budget(1 << 20);
    println!(
        "a Vec doubled with try_reserve under a 1 MiB budget stopped at {} KiB: {}",
        capacity >> 10,
        error.map_or("no error".into(), |e| e.to_string())
    );
    match abort_demo() {
        Ok(report) => println!("infallible append with allocation 0 failing: {report}"),
        Err(why) => {
            eprintln!("fault_injection: {why}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    // ANCHOR: tests
    #[test]
    fn every_failure_point_of_the_careful_append_leaves_a_consistent_log() {
        let mut failures = 0;
        let result = oom_test(
            RecordLog::default,
            append_all(RecordLog::try_append),
            RecordLog::check,
            |_, result, _, log| {
                if result.is_err() {
                    failures += 1;
                    assert!(log.len() < RECORDS.len());
                }
            },
        );
        let allocations = result.expect("no failure point breaks the invariant");
        // At least one allocation per buffer, and each was made to fail.
        assert!(allocations >= 2, "{allocations}");
        assert_eq!(failures, allocations);
    }

    #[test]
    fn the_oom_loop_catches_the_append_in_the_wrong_order() {
        let err = oom_test(
            RecordLog::default,
            append_all(RecordLog::try_append_in_the_wrong_order),
            RecordLog::check,
            |_, _, _, _| {},
        )
        .expect_err("the half-appended record is caught");
        // Allocation 0 is the bytes' reservation (nothing changes); 1 is
        // the ends', after the bytes went in.
        assert_eq!(
            err,
            "after failing allocation 1: 5 bytes, but the records end at 0"
        );
    }
    // ANCHOR_END: tests

    #[test]
    fn a_budget_stops_growth_below_it() {
        let (capacity, error) = grow_under_budget(1 << 20);
        assert!(error.is_some());
        assert!((256 << 10..=1 << 20).contains(&capacity), "{capacity}");
    }

    #[test]
    fn the_plan_is_per_thread() {
        use std::sync::{Arc, Barrier};
        let barrier = Arc::new(Barrier::new(2));
        let theirs = Arc::clone(&barrier);
        let other = std::thread::spawn(move || {
            theirs.wait(); // the plan is now on, on the main thread
            let len = vec![1u8; 1024].len();
            theirs.wait();
            len
        });
        // Waiting on a barrier allocates nothing, so the plan sees nothing
        // here, while the other thread allocates freely.
        let ((), stats) = with_plan(Plan::FailNth { n: 0 }, || {
            barrier.wait();
            barrier.wait();
        });
        assert_eq!(other.join().unwrap(), 1024);
        assert_eq!(
            stats,
            Stats {
                allocations: 0,
                fired: false
            }
        );
    }

    /// `handle_alloc_error` aborts: run it in a child (this test binary,
    /// again, with only this test and the environment variable set).
    #[cfg(unix)]
    #[test]
    fn an_infallible_append_aborts_the_process() {
        use std::os::unix::process::ExitStatusExt;
        const NAME: &str = "tests::an_infallible_append_aborts_the_process";
        if std::env::var_os(CHILD_ENV).is_some() {
            abort_in_child();
        }
        let exe = std::env::current_exe().unwrap();
        let out = std::process::Command::new(exe)
            .args([NAME, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, "abort")
            .output()
            .unwrap();
        assert_eq!(out.status.signal(), Some(6), "SIGABRT: {:?}", out.status);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("memory allocation of"), "{stderr}");
        assert!(stderr.contains("bytes failed"), "{stderr}");
    }
}
