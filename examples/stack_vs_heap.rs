//! Why a benchmark's buffers belong on the heap.
//!
//! stdlib-js's C benchmark for `dmskmin` kept its input in two stack arrays,
//! `double x[len]` and `unsigned char mask[len]`. At len = 10^6 they need
//! 9 MB, more than the 8 MiB main-thread stack, and the benchmark crashed
//! (stdlib-js PR 9652 moved them to `malloc`). This example does the same in
//! Rust, safely:
//!
//! - the stack version runs in a child process (this program, re-executed),
//!   on a thread with a known stack size, and the parent reports how it died;
//! - the heap version (`Box<[f64]>`, `Box<[u8]>`) runs every length in this
//!   process, on a thread with a 64 KiB stack.
//!
//! The kernel and the buffer setup are also what `benches/dynamic_buffers.rs`
//! measures: the bench compiles this file in.
//!
//! Run: `cargo run --example stack_vs_heap` (add `-- --help` for options).

// `mdbook test` passes no `--extern`, so the crate is named here.
#[cfg(unix)]
extern crate libc;

use std::hint::black_box;
use std::io;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

/// The lengths stdlib's `benchmark.length.c` runs: 10^1 to 10^6.
pub const LENGTHS: [usize; 6] = [10, 100, 1_000, 10_000, 100_000, 1_000_000];

/// Bytes of input per element: one `f64` and one mask byte.
pub const BYTES_PER_ELEMENT: usize = std::mem::size_of::<f64>() + 1;

// ANCHOR: kernel
/// The minimum of `x[i * stride_x]` over the `n` elements whose
/// `mask[i * stride_mask]` is 0, computed as stdlib's `dmskmin` computes it:
/// NaN if `n` is 0, if every element is masked, or if any unmasked element
/// is NaN; and -0.0 counts as less than +0.0.
///
/// Never inlined: every caller, and every variant of the benchmark, runs the
/// same machine code, so a difference in time is not a difference in codegen.
#[inline(never)]
pub fn masked_min(n: usize, x: &[f64], stride_x: usize, mask: &[u8], stride_mask: usize) -> f64 {
    assert!(stride_x > 0 && stride_mask > 0, "strides must be positive");
    if n == 0 {
        return f64::NAN;
    }
    let last = |stride: usize| (n - 1).checked_mul(stride);
    assert!(
        last(stride_x).is_some_and(|i| i < x.len())
            && last(stride_mask).is_some_and(|i| i < mask.len()),
        "n = {n} elements do not fit the arrays at these strides"
    );
    let xs = x.iter().step_by(stride_x);
    let masks = mask.iter().step_by(stride_mask);
    let mut min = f64::INFINITY;
    let mut seen = false;
    for (&v, &m) in xs.zip(masks).take(n) {
        if m != 0 {
            continue; // masked: "missing" in stdlib's words
        }
        if v.is_nan() {
            return f64::NAN;
        }
        seen = true;
        if v < min || (v == min && v.is_sign_negative()) {
            min = v;
        }
    }
    if seen {
        min
    } else {
        f64::NAN
    }
}
// ANCHOR_END: kernel

// ANCHOR: buffers
/// The benchmark's input on the heap: `n` values and `n` mask bytes, sized
/// at run time. `vec![0.0; n]` builds the buffer in place on the heap;
/// `Box::new([0.0; N])` would build it on the stack first (in debug builds)
/// and overflow just the same.
pub fn heap_buffers(n: usize, seed: u64) -> (Box<[f64]>, Box<[u8]>) {
    let mut x = vec![0.0f64; n].into_boxed_slice();
    let mut mask = vec![0u8; n].into_boxed_slice();
    fill(&mut x, &mut mask, seed);
    (x, mask)
}

/// Fills the buffers as stdlib's benchmark does: each value uniform in
/// [-10000, 10000), and each mask byte 1 ("missing") with probability 0.2.
/// The generator is SplitMix64, so a seed always gives the same data.
pub fn fill(x: &mut [f64], mask: &mut [u8], seed: u64) {
    let mut state = seed;
    let mut uniform = || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) as f64 / (u64::MAX as f64 + 1.0) // in [0, 1)
    };
    for (v, m) in x.iter_mut().zip(mask.iter_mut()) {
        *m = u8::from(uniform() < 0.2);
        *v = uniform() * 20_000.0 - 10_000.0;
    }
}
// ANCHOR_END: buffers

// ANCHOR: on_stack
/// What stdlib's benchmark did before PR 9652, in Rust: both buffers are
/// local arrays, so all `9 * N` bytes are in this function's stack frame.
#[inline(never)]
fn on_stack<const N: usize>(seed: u64) -> f64 {
    let mut x = [0.0f64; N];
    let mut mask = [0u8; N];
    fill(&mut x, &mut mask, seed);
    masked_min(N, black_box(&x), 1, black_box(&mask), 1)
}

/// A stack array's length is a compile-time constant: one copy per length.
fn on_stack_len(len: usize, seed: u64) -> Option<f64> {
    Some(match len {
        10 => on_stack::<10>(seed),
        100 => on_stack::<100>(seed),
        1_000 => on_stack::<1_000>(seed),
        10_000 => on_stack::<10_000>(seed),
        100_000 => on_stack::<100_000>(seed),
        1_000_000 => on_stack::<1_000_000>(seed),
        _ => return None,
    })
}
// ANCHOR_END: on_stack

/// Not the fix: `Box::new` takes the array by value, so the array is built
/// first, on the stack, and then moved to the heap. An optimised build may
/// build it in place; a debug build overflows just as `on_stack` does.
#[inline(never)]
fn boxed<const N: usize>(seed: u64) -> f64 {
    let mut x = Box::new([0.0f64; N]);
    let mut mask = Box::new([0u8; N]);
    fill(&mut x[..], &mut mask[..], seed);
    masked_min(N, black_box(&x[..]), 1, black_box(&mask[..]), 1)
}

fn boxed_len(len: usize, seed: u64) -> Option<f64> {
    Some(match len {
        10 => boxed::<10>(seed),
        100 => boxed::<100>(seed),
        1_000 => boxed::<1_000>(seed),
        10_000 => boxed::<10_000>(seed),
        100_000 => boxed::<100_000>(seed),
        1_000_000 => boxed::<1_000_000>(seed),
        _ => return None,
    })
}

/// The same work with heap buffers: the stack frame holds two pointers.
fn on_heap_len(len: usize, seed: u64) -> f64 {
    let (x, mask) = heap_buffers(len, seed);
    masked_min(len, black_box(&x), 1, black_box(&mask), 1)
}

/// One seed for everything, so stack and heap runs see the same data.
const SEED: u64 = 9652;

// ANCHOR: limits
/// The main thread's stack limit, `getrlimit(RLIMIT_STACK)`, as (soft, hard)
/// in bytes; `None` means unlimited.
#[cfg(unix)]
fn stack_rlimit() -> io::Result<(Option<u64>, Option<u64>)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable `rlimit` that the call fills in.
    if unsafe { libc::getrlimit(libc::RLIMIT_STACK, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    #[allow(clippy::unnecessary_cast)] // rlim_t is u64 on Linux, not everywhere
    let bytes = |v: libc::rlim_t| (v != libc::RLIM_INFINITY).then_some(v as u64);
    Ok((bytes(limit.rlim_cur), bytes(limit.rlim_max)))
}

#[cfg(not(unix))]
fn stack_rlimit() -> io::Result<(Option<u64>, Option<u64>)> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "RLIMIT_STACK is a Unix limit",
    ))
}

/// Rust's stack size for threads it spawns without `Builder::stack_size`:
/// `RUST_MIN_STACK` if it is set to a number of bytes, else 2 MiB.
fn spawned_thread_default(rust_min_stack: Option<&str>) -> (usize, &'static str) {
    match rust_min_stack.and_then(|s| s.parse().ok()) {
        Some(bytes) => (bytes, "from RUST_MIN_STACK"),
        None => (2 << 20, "Rust's default; RUST_MIN_STACK is not set"),
    }
}
// ANCHOR_END: limits

/// A byte count for people: `90 B`, `8.6 MiB`.
fn human(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

// ANCHOR: child
/// The environment variable that turns a run of this program into the child.
const CHILD_ENV: &str = "STACK_VS_HEAP_CHILD";
/// The child's first line, so the parent knows it re-ran this program.
const HELLO: &str = "stack_vs_heap child:";

/// Where the child puts the stack arrays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Where {
    /// A thread it spawns with exactly this many bytes of stack.
    Thread(usize),
    /// Its own main thread, whose stack is the RLIMIT_STACK soft limit.
    MainThread,
    /// A thread with this many bytes of stack, building `Box::new([0.0; N])`.
    BoxNew(usize),
}

/// The child's instructions, passed in `CHILD_ENV`: `thread:BYTES:LENS`,
/// `box:BYTES:LENS` or `main:LENS`, with LENS comma-separated.
fn child_spec(place: Where, lens: &[usize]) -> String {
    let lens: Vec<String> = lens.iter().map(usize::to_string).collect();
    match place {
        Where::Thread(bytes) => format!("thread:{bytes}:{}", lens.join(",")),
        Where::BoxNew(bytes) => format!("box:{bytes}:{}", lens.join(",")),
        Where::MainThread => format!("main:{}", lens.join(",")),
    }
}

fn parse_child_spec(spec: &str) -> Option<(Where, Vec<usize>)> {
    let (place, lens) = match spec.split_once(':')? {
        (kind @ ("thread" | "box"), rest) => {
            let (bytes, lens) = rest.split_once(':')?;
            let bytes = bytes.parse().ok()?;
            let place = if kind == "box" {
                Where::BoxNew(bytes)
            } else {
                Where::Thread(bytes)
            };
            (place, lens)
        }
        ("main", lens) => (Where::MainThread, lens),
        _ => return None,
    };
    let lens = lens
        .split(',')
        .map(|l| l.parse().ok())
        .collect::<Option<Vec<usize>>>()?;
    Some((place, lens))
}

/// The child: runs the stack version at each length in turn and prints a
/// line after each, like stdlib's benchmark. When a frame does not fit, Rust's
/// guard-page handler prints "thread '...' has overflowed its stack" and
/// aborts the whole process with SIGABRT.
fn child_main(spec: &str) -> ExitCode {
    println!("{HELLO} {spec}");
    let Some((place, lens)) = parse_child_spec(spec) else {
        eprintln!("stack_vs_heap child: bad {CHILD_ENV} value `{spec}`");
        return ExitCode::from(2);
    };
    no_core_dump();
    let build = match place {
        Where::BoxNew(_) => boxed_len,
        Where::Thread(_) | Where::MainThread => on_stack_len,
    };
    let run = move || {
        for len in lens {
            match build(len, SEED) {
                Some(min) => println!("len {len} ok: min {min}"),
                None => println!("len {len} has no stack version"),
            }
        }
    };
    match place {
        Where::MainThread => run(),
        Where::Thread(bytes) | Where::BoxNew(bytes) => {
            let spawned = std::thread::Builder::new()
                .name(format!("stack-{}KiB", bytes / 1024))
                .stack_size(bytes)
                .spawn(run);
            match spawned.map(|t| t.join()) {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return ExitCode::from(101), // a panic, already printed
                Err(e) => {
                    eprintln!("stack_vs_heap child: cannot spawn the thread: {e}");
                    return ExitCode::from(1);
                }
            }
        }
    }
    ExitCode::SUCCESS
}

/// The child is expected to abort: keep SIGABRT from writing a core file.
#[cfg(unix)]
fn no_core_dump() {
    let zero = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: lowering RLIMIT_CORE with a valid `rlimit` has no memory effects.
    unsafe { libc::setrlimit(libc::RLIMIT_CORE, &zero) };
    // A core_pattern that pipes to a program ignores RLIMIT_CORE; a process
    // that is not dumpable gets no core dump at all.
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_DUMPABLE takes plain integer arguments.
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0)
    };
}

#[cfg(not(unix))]
fn no_core_dump() {}

/// How the child ended, and what it printed.
#[derive(Debug)]
struct ChildReport {
    /// The child printed `HELLO` first: it really ran this program.
    is_this_program: bool,
    /// The lengths the child finished, each with the minimum it printed.
    finished: Vec<(usize, String)>,
    /// The signal that killed it (Unix), if one did.
    signal: Option<i32>,
    /// Its exit code, if it exited.
    code: Option<i32>,
    /// The line of its stderr that names the overflow, if any.
    overflow_line: Option<String>,
    stderr: String,
}

/// Runs `cmd` as the child with `spec`, bounded by `timeout`, and reads how
/// it ended. The child's output is small, so reading it after the exit is safe.
fn run_child(mut cmd: Command, spec: &str, timeout: Duration) -> io::Result<ChildReport> {
    use std::io::Read;
    let mut child = cmd
        .env(CHILD_ENV, spec)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > timeout {
            child.kill()?;
            child.wait()?;
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the child ran for more than {timeout:?} and was killed"),
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let (mut stdout, mut stderr) = (String::new(), String::new());
    if let Some(mut out) = child.stdout.take() {
        out.read_to_string(&mut stdout)?;
    }
    if let Some(mut err) = child.stderr.take() {
        err.read_to_string(&mut stderr)?;
    }
    #[cfg(unix)]
    let signal = std::os::unix::process::ExitStatusExt::signal(&status);
    #[cfg(not(unix))]
    let signal = None;
    Ok(ChildReport {
        is_this_program: stdout.contains(HELLO),
        finished: stdout
            .lines()
            .filter_map(|l| {
                let (len, min) = l.strip_prefix("len ")?.split_once(" ok: min ")?;
                Some((len.parse().ok()?, min.to_owned()))
            })
            .collect(),
        signal,
        code: status.code(),
        overflow_line: stderr
            .lines()
            .find(|l| l.contains("has overflowed its stack"))
            .map(str::to_owned),
        stderr,
    })
}
// ANCHOR_END: child

fn signal_name(signal: i32) -> &'static str {
    #[cfg(unix)]
    match signal {
        libc::SIGABRT => return "SIGABRT",
        libc::SIGSEGV => return "SIGSEGV",
        libc::SIGBUS => return "SIGBUS",
        libc::SIGKILL => return "SIGKILL",
        _ => {}
    }
    let _ = signal;
    "another signal"
}

const USAGE: &str = "\
usage: stack_vs_heap [--stack-kib K] [--main-thread] [--box-new]
  --stack-kib K    stack of the child's thread, in KiB, 16 <= K <= 1048576
                   (default: the RLIMIT_STACK soft limit, or 8192 if unlimited)
  --main-thread    put the child's arrays on its main thread instead, whose
                   stack is the RLIMIT_STACK soft limit (`ulimit -s`)
  --box-new        make the child's buffers with `Box::new([0.0; N])`";

#[derive(Debug, PartialEq, Eq)]
struct Args {
    stack_kib: Option<usize>,
    main_thread: bool,
    box_new: bool,
}

fn parse_args(args: &[String]) -> Result<Args, String> {
    let mut parsed = Args {
        stack_kib: None,
        main_thread: false,
        box_new: false,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--stack-kib" => {
                let value = it.next().ok_or("`--stack-kib` needs a value")?;
                let kib: usize = value
                    .parse()
                    .map_err(|_| format!("`--stack-kib` must be a whole number, not `{value}`"))?;
                if !(16..=1 << 20).contains(&kib) {
                    return Err(format!(
                        "`--stack-kib` must be between 16 and 1048576, not {kib}"
                    ));
                }
                parsed.stack_kib = Some(kib);
            }
            "--main-thread" => parsed.main_thread = true,
            "--box-new" => parsed.box_new = true,
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    if parsed.main_thread && (parsed.stack_kib.is_some() || parsed.box_new) {
        return Err("`--main-thread` goes with neither `--stack-kib` nor `--box-new`".into());
    }
    Ok(parsed)
}

// ANCHOR: main
fn main() -> ExitCode {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        return child_main(&spec);
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let args = match parse_args(&args) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("stack_vs_heap: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stack_vs_heap: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    // 1. The limits.
    let rlimit = stack_rlimit();
    let show = |v: Option<u64>| v.map_or("unlimited".to_owned(), human);
    match &rlimit {
        Ok((soft, hard)) => println!(
            "main thread stack (RLIMIT_STACK): soft {}, hard {}",
            show(*soft),
            show(*hard)
        ),
        Err(e) => println!("main thread stack (RLIMIT_STACK): n/a ({e})"),
    }
    let env_min = std::env::var("RUST_MIN_STACK").ok();
    let (spawned, why) = spawned_thread_default(env_min.as_deref());
    println!("spawned threads: {} ({why})", human(spawned as u64));

    // 2. Where the child's arrays go.
    let soft = rlimit.ok().and_then(|(soft, _)| soft);
    let bytes = args
        .stack_kib
        .map_or(soft.map_or(8 << 20, |s| s as usize), |k| k << 10);
    let place = match (args.main_thread, args.box_new) {
        (true, _) => Where::MainThread,
        (false, true) => Where::BoxNew(bytes),
        (false, false) => Where::Thread(bytes),
    };
    let (stack_bytes, where_text) = match place {
        Where::Thread(b) => (
            Some(b as u64),
            format!("a thread with {} of stack", human(b as u64)),
        ),
        Where::BoxNew(b) => (
            Some(b as u64),
            format!("a thread with {} of stack", human(b as u64)),
        ),
        Where::MainThread => (soft, format!("its main thread ({} stack)", show(soft))),
    };
    println!(
        "\n{:>9} {:>10}  fits in {}?",
        "len",
        "9 * len",
        show(stack_bytes)
    );
    for len in LENGTHS {
        let bytes = (len * BYTES_PER_ELEMENT) as u64;
        let fits = stack_bytes.is_none_or(|s| bytes < s);
        println!(
            "{len:>9} {:>10}  {}",
            human(bytes),
            if fits { "yes" } else { "no" }
        );
    }

    // 3. The stack version, in a child process.
    let what = match place {
        Where::BoxNew(_) => "Box::new([0.0; N])",
        Where::Thread(_) | Where::MainThread => "stack arrays",
    };
    println!("\n{what}: a child process, on {where_text}");
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let spec = child_spec(place, &LENGTHS);
    let report = run_child(Command::new(exe), &spec, Duration::from_secs(20))
        .map_err(|e| format!("child process: {e}"))?;
    summarise_child(&report);

    // 4. The heap version, here, on a 64 KiB stack.
    println!("\nheap buffers: this process, on a thread with a 64 KiB stack");
    let heap = std::thread::Builder::new()
        .name("heap-64KiB".into())
        .stack_size(64 << 10)
        .spawn(|| LENGTHS.map(|len| on_heap_len(len, SEED)))
        .map_err(|e| format!("cannot spawn the heap thread: {e}"))?
        .join()
        .map_err(|_| "the heap thread panicked".to_owned())?;
    for (len, min) in LENGTHS.iter().zip(heap) {
        println!("  len {len:>7} ok: min {min}");
    }

    // 5. The verdict: the same minima where both ran, and where the stack stopped.
    let same = report
        .finished
        .iter()
        .filter(|(len, min)| {
            let at = LENGTHS.iter().position(|l| l == len);
            at.is_some_and(|i| heap[i].to_string() == *min)
        })
        .count();
    if same != report.finished.len() {
        return Err("the stack and heap versions disagree on a minimum".into());
    }
    match LENGTHS
        .iter()
        .find(|&&l| !report.finished.iter().any(|(len, _)| *len == l))
    {
        Some(stopped) if report.is_this_program => println!(
            "\nheap buffers ran every length; stack arrays stopped at len {stopped} \
             (the {same} lengths both ran gave the same minimum)"
        ),
        _ => println!("\nheap buffers ran every length; so did the stack arrays here"),
    }
    Ok(())
}

/// Prints what the child did.
fn summarise_child(report: &ChildReport) {
    if !report.is_this_program {
        println!("  the re-executed program was not this example; no stack run to show");
        return;
    }
    for (len, min) in &report.finished {
        println!("  len {len:>7} ok: min {min}");
    }
    match (report.signal, report.code) {
        (Some(sig), _) => println!("  child killed by signal {sig} ({})", signal_name(sig)),
        (None, Some(0)) => println!("  child exited with status 0"),
        (None, Some(code)) => println!("  child exited with status {code}"),
        (None, None) => println!("  child ended without a status"),
    }
    match &report.overflow_line {
        Some(line) => println!("  its stderr: {}", line.trim()),
        None if !report.stderr.trim().is_empty() => {
            println!("  its stderr: {}", report.stderr.trim())
        }
        None => {}
    }
}
// ANCHOR_END: main

#[cfg(test)]
mod tests {
    use super::*;

    /// The child, when a test below spawns this test binary again with
    /// `CHILD_ENV` set. In a normal test run it does nothing.
    #[test]
    fn child_entry_point() {
        if let Ok(spec) = std::env::var(CHILD_ENV) {
            let code = if child_main(&spec) == ExitCode::SUCCESS {
                0
            } else {
                1
            };
            std::process::exit(code);
        }
    }

    /// This test binary, filtered to `child_entry_point` only.
    fn this_test_binary() -> Command {
        let mut cmd = Command::new(std::env::current_exe().expect("the test binary"));
        cmd.args([
            "tests::child_entry_point",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ]);
        cmd
    }

    #[test]
    fn a_too_large_stack_array_aborts_the_child_with_the_overflow_message() {
        // 10^5 elements need 900,000 bytes; the thread has 64 KiB.
        let spec = child_spec(Where::Thread(64 << 10), &[10, 100_000]);
        let report = run_child(this_test_binary(), &spec, Duration::from_secs(20)).unwrap();
        assert!(report.is_this_program, "{report:?}");
        let lens: Vec<usize> = report.finished.iter().map(|(len, _)| *len).collect();
        assert_eq!(lens, [10], "{report:?}");
        #[cfg(unix)]
        assert_eq!(report.signal, Some(libc::SIGABRT), "{report:?}");
        let line = report.overflow_line.expect("the overflow message");
        assert!(line.contains("'stack-64KiB'"), "{line}");
    }

    #[test]
    fn small_stack_arrays_fit_the_same_small_stack() {
        let spec = child_spec(Where::Thread(64 << 10), &[10, 100, 1_000]);
        let report = run_child(this_test_binary(), &spec, Duration::from_secs(20)).unwrap();
        let lens: Vec<usize> = report.finished.iter().map(|(len, _)| *len).collect();
        assert_eq!(lens, [10, 100, 1_000], "{report:?}");
        let heap = on_heap_len(1_000, SEED).to_string();
        assert_eq!(
            report.finished[2].1, heap,
            "the child's minimum is the heap's"
        );
        assert_eq!(report.code, Some(0), "{report:?}");
        assert_eq!(report.overflow_line, None);
    }

    /// `Box::new([0.0; N])` builds the array on the stack first: in a debug
    /// build (the one `cargo test` makes) it overflows like a local array.
    #[test]
    #[cfg(debug_assertions)]
    fn box_new_of_a_large_array_overflows_in_a_debug_build() {
        let spec = child_spec(Where::BoxNew(64 << 10), &[10, 100_000]);
        let report = run_child(this_test_binary(), &spec, Duration::from_secs(20)).unwrap();
        let lens: Vec<usize> = report.finished.iter().map(|(len, _)| *len).collect();
        assert_eq!(lens, [10], "{report:?}");
        #[cfg(unix)]
        assert_eq!(report.signal, Some(libc::SIGABRT), "{report:?}");
        assert!(report.overflow_line.is_some(), "{report:?}");
    }

    #[test]
    fn heap_buffers_work_at_every_length_on_a_64_kib_stack() {
        let mins = std::thread::Builder::new()
            .stack_size(64 << 10)
            .spawn(|| LENGTHS.map(|len| on_heap_len(len, SEED)))
            .unwrap()
            .join()
            .expect("no overflow: the thread returned");
        for (len, min) in LENGTHS.iter().zip(mins) {
            assert!((-10_000.0..10_000.0).contains(&min), "len {len}: {min}");
        }
        // More elements can only lower the minimum of the same stream.
        assert!(mins.windows(2).all(|w| w[1] <= w[0]), "{mins:?}");
    }

    #[test]
    fn stack_and_heap_versions_compute_the_same_minimum() {
        for len in [10, 100, 1_000] {
            assert_eq!(on_stack_len(len, SEED), Some(on_heap_len(len, SEED)));
        }
        assert_eq!(on_stack_len(7, SEED), None);
    }

    #[test]
    fn masked_min_follows_stdlib_dmskmin() {
        let nan = f64::NAN;
        assert!(masked_min(0, &[], 1, &[], 1).is_nan(), "n = 0");
        assert!(
            masked_min(2, &[1.0, 2.0], 1, &[1, 1], 1).is_nan(),
            "all masked"
        );
        assert!(masked_min(3, &[1.0, nan, 0.5], 1, &[0, 0, 0], 1).is_nan());
        assert_eq!(masked_min(3, &[1.0, nan, 0.5], 1, &[0, 1, 0], 1), 0.5);
        assert_eq!(masked_min(3, &[4.0, -3.0, 2.0], 1, &[0, 1, 0], 1), 2.0);
        let zero = masked_min(2, &[0.0, -0.0], 1, &[0, 0], 1);
        assert!(zero == 0.0 && zero.is_sign_negative(), "-0.0 wins");
        assert_eq!(masked_min(1, &[f64::INFINITY], 1, &[0], 1), f64::INFINITY);
    }

    #[test]
    fn masked_min_reads_every_stride_th_element() {
        let x = [5.0, -100.0, 3.0, -100.0, 4.0];
        let mask = [0u8; 7];
        assert_eq!(masked_min(3, &x, 2, &mask, 3), 3.0);
        let fine = std::panic::catch_unwind(|| masked_min(4, &x, 2, &mask, 1));
        assert!(fine.is_err(), "4 elements at stride 2 need 7 values");
    }

    #[test]
    fn fill_masks_about_a_fifth_and_stays_in_range() {
        let (x, mask) = heap_buffers(100_000, 1);
        let masked = mask.iter().filter(|&&m| m == 1).count();
        assert!((19_000..21_000).contains(&masked), "{masked}");
        assert!(x.iter().all(|v| (-10_000.0..10_000.0).contains(v)));
        assert_eq!(heap_buffers(100, 1), heap_buffers(100, 1), "deterministic");
    }

    #[test]
    fn limits_are_read_and_defaults_follow_rust_min_stack() {
        #[cfg(unix)]
        {
            let (soft, hard) = stack_rlimit().unwrap();
            if let (Some(soft), Some(hard)) = (soft, hard) {
                assert!(soft <= hard);
            }
            assert!(soft.is_none_or(|s| s >= 64 << 10), "{soft:?}");
        }
        assert_eq!(spawned_thread_default(None).0, 2 << 20);
        assert_eq!(spawned_thread_default(Some("65536")).0, 65536);
        assert_eq!(spawned_thread_default(Some("lots")).0, 2 << 20);
    }

    #[test]
    fn child_specs_round_trip_and_bad_ones_are_refused() {
        for place in [Where::Thread(65536), Where::BoxNew(4096), Where::MainThread] {
            let spec = child_spec(place, &LENGTHS);
            assert_eq!(parse_child_spec(&spec), Some((place, LENGTHS.to_vec())));
        }
        assert_eq!(parse_child_spec("thread:big:10"), None);
        assert_eq!(parse_child_spec("heap:10"), None);
        assert_eq!(ExitCode::from(2), child_main("nonsense"));
    }

    #[test]
    fn bad_arguments_are_rejected_and_named() {
        let parse =
            |args: &[&str]| parse_args(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(
            parse(&[]),
            Ok(Args {
                stack_kib: None,
                main_thread: false,
                box_new: false,
            })
        );
        assert_eq!(parse(&["--stack-kib", "64"]).unwrap().stack_kib, Some(64));
        assert!(parse(&["--stack-kib"])
            .unwrap_err()
            .contains("needs a value"));
        assert!(parse(&["--stack-kib", "8"])
            .unwrap_err()
            .contains("between 16"));
        assert!(parse(&["--stack-kib", "x"]).unwrap_err().contains("`x`"));
        assert!(parse(&["--heap"]).unwrap_err().contains("`--heap`"));
        assert!(parse(&["--main-thread", "--stack-kib", "64"]).is_err());
        assert!(parse(&["--box-new"]).unwrap().box_new);
    }
}
