//! Why a benchmark's buffers belong on the heap: stack arrays that kill the
//! process at a length heap buffers run easily.
//!
//! stdlib-js's `dmskmin` benchmark crashed at len = 10^6: its two stack
//! arrays needed 9 MB (PR 9652 moved them to `malloc`). The stack version
//! runs here in a child process (this program, re-run) on a thread with a
//! known stack; the heap version in this process, on a 64 KiB stack.
//! `benches/dynamic_buffers.rs` compiles this file in to measure the kernel.
//!
//! - Explained in: "Static vs dynamic buffers in benchmarks" (src/part4-static-vs-dynamic.md)
//! - Run: `cargo run --example stack_vs_heap -- --stack-kib 8192`
//! - Tested by: `cargo test --test stack_vs_heap`
//! - Depends on: std, libc 0.2

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
/// Never inlined: every benchmark variant runs the same machine code.
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
macro_rules! per_length {
    ($build:ident, $len:expr, $seed:expr) => {
        Some(match $len {
            10 => $build::<10>($seed),
            100 => $build::<100>($seed),
            1_000 => $build::<1_000>($seed),
            10_000 => $build::<10_000>($seed),
            100_000 => $build::<100_000>($seed),
            1_000_000 => $build::<1_000_000>($seed),
            _ => return None,
        })
    };
}

pub fn on_stack_len(len: usize, seed: u64) -> Option<f64> {
    per_length!(on_stack, len, seed)
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

pub fn boxed_len(len: usize, seed: u64) -> Option<f64> {
    per_length!(boxed, len, seed)
}

/// The same work with heap buffers: the stack frame holds two pointers.
pub fn on_heap_len(len: usize, seed: u64) -> f64 {
    let (x, mask) = heap_buffers(len, seed);
    masked_min(len, black_box(&x), 1, black_box(&mask), 1)
}

/// One seed for everything, so stack and heap runs see the same data.
pub const SEED: u64 = 9652;

// ANCHOR: limits
/// The main thread's stack limit, `getrlimit(RLIMIT_STACK)`, as (soft, hard)
/// in bytes; `None` means unlimited.
#[cfg(unix)]
pub fn stack_rlimit() -> io::Result<(Option<u64>, Option<u64>)> {
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
pub fn spawned_thread_default(rust_min_stack: Option<&str>) -> (usize, &'static str) {
    match rust_min_stack.and_then(|s| s.parse().ok()) {
        Some(bytes) => (bytes, "from RUST_MIN_STACK"),
        None => (2 << 20, "Rust's default; RUST_MIN_STACK is not set"),
    }
}
// ANCHOR_END: limits

/// A byte count for people: `90 B`, `8.6 MiB`.
fn human(bytes: u64) -> String {
    let (value, unit) = match bytes {
        0..1024 => return format!("{bytes} B"),
        1024..1048576 => (bytes as f64 / 1024.0, "KiB"),
        _ => (bytes as f64 / 1048576.0, "MiB"),
    };
    format!("{value:.1} {unit}")
}

/// The environment variable that turns a run of this program into the child.
pub const CHILD_ENV: &str = "STACK_VS_HEAP_CHILD";
/// The child's first line, so the parent knows it re-ran this program.
const HELLO: &str = "stack_vs_heap child:";

/// Where the child puts the stack arrays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Where {
    /// A thread it spawns with exactly this many bytes of stack.
    Thread(usize),
    /// A thread with this many bytes of stack, building `Box::new([0.0; N])`.
    BoxNew(usize),
}

/// The child's instructions, passed in `CHILD_ENV`: `KIND BYTES LENS`, with
/// KIND `thread` or `box` and LENS comma-separated.
pub fn child_spec(place: Where, lens: &[usize]) -> String {
    let lens: Vec<String> = lens.iter().map(usize::to_string).collect();
    let (kind, bytes) = match place {
        Where::Thread(bytes) => ("thread", bytes),
        Where::BoxNew(bytes) => ("box", bytes),
    };
    format!("{kind} {bytes} {}", lens.join(","))
}

pub fn parse_child_spec(spec: &str) -> Option<(Where, Vec<usize>)> {
    let mut words = spec.split(' ');
    let (kind, bytes, lens) = (words.next()?, words.next()?.parse().ok()?, words.next()?);
    let place = match kind {
        "thread" => Where::Thread(bytes),
        "box" => Where::BoxNew(bytes),
        _ => return None,
    };
    let lens = lens
        .split(',')
        .map(|l| l.parse().ok())
        .collect::<Option<Vec<usize>>>()?;
    words.next().is_none().then_some((place, lens))
}

/// The child: told by `CHILD_ENV` where to put the arrays and which
/// lengths to run, it runs them and reports nothing else: how it ends is
/// the answer, read by the parent.
pub fn child_main(spec: &str) -> ExitCode {
    println!("{HELLO} {spec}");
    let Some((place, lens)) = parse_child_spec(spec) else {
        eprintln!("stack_vs_heap child: bad {CHILD_ENV} value `{spec}`");
        return ExitCode::from(2);
    };
    no_core_dump();
    let ran = match place {
        Where::Thread(bytes) => on_a_thread(bytes, lens, on_stack_len),
        Where::BoxNew(bytes) => on_a_thread(bytes, lens, boxed_len),
    };
    match ran {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stack_vs_heap child: {e}");
            ExitCode::from(1)
        }
    }
}

// ANCHOR: child
/// Runs the stack version at each length, printing a line after each, as
/// stdlib's benchmark does. A frame that does not fit never returns: the
/// process dies with SIGABRT.
fn run_lengths(lens: &[usize], build: fn(usize, u64) -> Option<f64>) {
    for &len in lens {
        match build(len, SEED) {
            Some(min) => println!("len {len} ok: min {min}"),
            None => println!("len {len} has no stack version"),
        }
    }
}

/// The same, on a thread with exactly `bytes` of stack: a known amount,
/// whatever the child's own `main` has used.
fn on_a_thread(
    bytes: usize,
    lens: Vec<usize>,
    build: fn(usize, u64) -> Option<f64>,
) -> io::Result<()> {
    let thread = std::thread::Builder::new()
        .name(format!("stack-{}KiB", bytes / 1024))
        .stack_size(bytes)
        .spawn(move || run_lengths(&lens, build))?;
    thread
        .join()
        .map_err(|_| io::Error::other("the thread panicked"))
}
// ANCHOR_END: child

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

/// How the child ended: whether it printed `HELLO` (so it really ran this
/// program), the lengths it finished with their minima, the signal that
/// killed it or its exit code, and its stderr's overflow line.
#[derive(Debug)]
pub struct ChildReport {
    pub is_this_program: bool,
    pub finished: Vec<(usize, String)>,
    pub signal: Option<(i32, &'static str)>,
    pub code: Option<i32>,
    pub overflow_line: Option<String>,
    pub stderr: String,
}

/// Runs `cmd` as the child with `spec`, bounded by `timeout`, and reads how
/// it ended.
pub fn run_child(mut cmd: Command, spec: &str, timeout: Duration) -> io::Result<ChildReport> {
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
    // The child's output is small and it has exited: the pipes hold it all.
    let out = child.wait_with_output()?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let overflow = |line: &&str| line.contains("has overflowed its stack");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    #[cfg(unix)]
    let signal =
        std::os::unix::process::ExitStatusExt::signal(&status).map(|s| (s, signal_name(s)));
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
        overflow_line: stderr.lines().find(overflow).map(str::to_owned),
        stderr,
    })
}

#[cfg(unix)]
// SHARED: signal_name (canonical: examples/rlimit_child.rs)
/// The name of a signal that ends a child, for a report.
fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGKILL => "SIGKILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGBUS => "SIGBUS",
        libc::SIGTERM => "SIGTERM",
        _ => "another signal",
    }
}
// SHARED_END: signal_name

const USAGE: &str = "\
usage: stack_vs_heap [--stack-kib K] [--box-new]
  --stack-kib K   stack of the child's thread, in KiB (16..=1048576, default:
                  the RLIMIT_STACK soft limit, or 8192 if that is unlimited)
  --box-new       make the child's buffers with `Box::new([0.0; N])`";

/// What the command line asked for.
struct Options {
    /// `None`: the RLIMIT_STACK soft limit, or 8 MiB if unlimited.
    stack_kib: Option<usize>,
    box_new: bool,
}

fn main() -> ExitCode {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        return child_main(&spec);
    }
    let mut args = Args::parse("stack_vs_heap", USAGE);
    // 0, outside the range, stands for "not given".
    let kib = args.number("--stack-kib", 0, 16..=1 << 20) as usize;
    let options = Options {
        stack_kib: (kib > 0).then_some(kib),
        box_new: args.switch("--box-new"),
    };
    args.finish();
    match run(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stack_vs_heap: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Options) -> Result<(), String> {
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

    // 2. Where the child's arrays go, and which lengths fit there.
    let soft = rlimit.ok().and_then(|(soft, _)| soft);
    let default = soft.map_or(8 << 20, |s| s as usize);
    let bytes = args.stack_kib.map_or(default, |k| k << 10);
    let stack = human(bytes as u64);
    println!("\n{:>9} {:>10}  fits in {stack}?", "len", "9 * len");
    for len in LENGTHS {
        let need = len * BYTES_PER_ELEMENT;
        let fits = ["no", "yes"][usize::from(need < bytes)];
        println!("{len:>9} {:>10}  {fits}", human(need as u64));
    }

    // 3. The stack version, in a child process.
    let (place, what) = match args.box_new {
        true => (Where::BoxNew(bytes), "Box::new([0.0; N])"),
        false => (Where::Thread(bytes), "stack arrays"),
    };
    println!("\n{what}: a child process, on a thread with {stack} of stack");
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

    // 5. Where both ran, they must agree.
    for (len, min) in &report.finished {
        let at = LENGTHS.iter().position(|l| l == len);
        if at.is_none_or(|i| heap[i].to_string() != *min) {
            return Err(format!("the stack and heap versions disagree at len {len}"));
        }
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
        (Some((sig, name)), _) => println!("  child killed by signal {sig} ({name})"),
        (None, Some(code)) => println!("  child exited with status {code}"),
        (None, None) => println!("  child ended without a status"),
    }
    let overflow = report.overflow_line.as_deref();
    let stderr = overflow.unwrap_or(report.stderr.trim());
    if !stderr.is_empty() {
        println!("  its stderr: {}", stderr.trim());
    }
}

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
