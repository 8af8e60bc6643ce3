//! A bounded child process: a closure or a command runs with a memory rlimit
//! (`RLIMIT_DATA` or `RLIMIT_AS`), `oom_score_adj` 1000 and a timeout, and
//! the parent learns how it ended (exited, killed by a signal, timed out)
//! and its peak RSS from `wait4`.
//!
//! - Explained in: "A bounded child: rlimits, a timeout, the OOM score" (src/part2-bounded-child.md)
//! - Run: `cargo run --example rlimit_child`, or with `-- --data-mib 64 -- COMMAND [ARG...]`
//! - Tested by: `cargo test --test rlimit_child`
//! - Depends on: std, libc 0.2

// `mdbook test` passes no `--extern`, so the crate is named here.
extern crate libc;

use std::process::ExitCode;
use std::time::Duration;

const PROGRAM: &str = "rlimit_child";
const USAGE: &str =
    "usage: rlimit_child [--data-mib N | --as-mib N] [--timeout-ms N] [-- COMMAND [ARG...]]
  --data-mib N    RLIMIT_DATA for COMMAND in MiB, 0 for none (0..=65536, default 0)
  --as-mib N      RLIMIT_AS for COMMAND in MiB, 0 for none (0..=65536, default 0)
  --timeout-ms N  kill COMMAND after N ms (1..=600000, default 10000)
with no COMMAND, runs four children that ask for memory under a limit; off Linux, exits 1";

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

#[cfg(target_os = "linux")]
pub use bounded::*;

#[cfg(target_os = "linux")]
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

#[cfg(target_os = "linux")]
mod bounded {
    use super::signal_name;
    use std::io::{self, Read, Write};
    use std::panic::{catch_unwind, AssertUnwindSafe};
    use std::{ffi::CStr, fs::File, os::fd::FromRawFd, os::unix::process::CommandExt};
    use std::{process::Command, time::Duration, time::Instant};

    pub const MIB: u64 = 1 << 20;

    // ANCHOR: limit
    /// Which rlimit caps the child's memory.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Resource {
        /// `RLIMIT_DATA`: private writable mappings, charged when a mapping
        /// becomes writable. A `PROT_NONE` reservation costs nothing.
        Data = libc::RLIMIT_DATA as isize,
        /// `RLIMIT_AS`: every byte of address space, reservations included.
        AddressSpace = libc::RLIMIT_AS as isize,
    }

    /// A memory limit for the child, in bytes.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct MemoryLimit {
        pub resource: Resource,
        /// The soft limit: what the kernel enforces.
        pub soft: u64,
        /// The hard limit, the ceiling for raising the soft one without
        /// privilege. `None` keeps the inherited one.
        pub hard: Option<u64>,
        /// Count both from what the child already uses when it starts: a
        /// forked child inherits its parent's mappings. (A command starts
        /// from a fresh image, so its limits are absolute.)
        pub above_current: bool,
    }
    // ANCHOR_END: limit

    // ANCHOR: outcome
    /// How the child ended.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Outcome {
        /// It returned or exited, with this code.
        Exited(i32),
        /// A signal ended it: 9 (`SIGKILL`) from the OOM killer, 6
        /// (`SIGABRT`) from `abort`, 11 (`SIGSEGV`) from a bad access.
        Killed { signal: i32 },
        /// It ran past the timeout, and the parent killed it.
        TimedOut,
    }

    /// Everything the parent learns from one bounded child.
    #[derive(Debug)]
    pub struct Report {
        pub outcome: Outcome,
        /// Peak resident set size (`ru_maxrss`), inherited pages included.
        pub peak_rss: u64,
        pub elapsed: Duration,
        /// Lines the child said that the parent had not read yet.
        pub output: String,
    }
    // ANCHOR_END: outcome

    impl std::fmt::Display for Outcome {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            let signal = match *self {
                Outcome::Exited(code) => return write!(f, "exited {code}"),
                Outcome::TimedOut => return write!(f, "timed out"),
                Outcome::Killed { signal } => signal,
            };
            write!(f, "killed by signal {signal} ({})", signal_name(signal))
        }
    }

    fn rlim(rlim_cur: u64, rlim_max: u64) -> libc::rlimit {
        libc::rlimit { rlim_cur, rlim_max }
    }

    /// A system call's 0 as `Ok`, anything else as the error in `errno`.
    fn check(rc: libc::c_int) -> io::Result<()> {
        (rc == 0).then_some(()).ok_or_else(io::Error::last_os_error)
    }

    // ANCHOR: setup
    /// The child's side of the setup, run first thing after `fork`: make it
    /// the OOM killer's first choice, then lower its limit.
    fn set_up_child(limit: Option<MemoryLimit>) -> Result<(), String> {
        std::fs::write("/proc/self/oom_score_adj", "1000")
            .map_err(|e| format!("oom_score_adj: {e}"))?;
        let Some(limit) = limit else { return Ok(()) };
        let field = ["VmData:", "VmSize:"][usize::from(limit.resource == Resource::AddressSpace)];
        let status = std::fs::read_to_string("/proc/self/status").map_err(|e| e.to_string())?;
        let current = kib_field(&status, field).ok_or(format!("/proc/self/status: no {field}"))?;
        let base = if limit.above_current { current } else { 0 };
        let old = get_limit(0, limit.resource).map_err(|e| format!("getrlimit: {e}"))?;
        let above = |bytes: u64| base.checked_add(bytes).ok_or("the limit overflows");
        let hard = limit.hard.map_or(Ok(old.rlim_max), above)?;
        let new = rlim(above(limit.soft)?, hard);
        set_limit(0, limit.resource, &new).map_err(|e| format!("setrlimit: {e}"))
    }
    // ANCHOR_END: setup

    // SHARED: kib_field (canonical: examples/memory_meter.rs)
    /// The value of a `Name:   123 kB` line, in bytes; `None` without the unit.
    pub fn kib_field(text: &str, name: &str) -> Option<u64> {
        let rest = text.lines().find_map(|l| l.strip_prefix(name))?;
        let mut words = rest.split_whitespace();
        let value: u64 = words.next()?.parse().ok()?;
        (words.next() == Some("kB")).then_some(value.checked_mul(1024)?)
    }
    // SHARED_END: kib_field

    /// The limit of process `pid` (0: this one), with `prlimit`.
    pub fn get_limit(pid: u32, resource: Resource) -> io::Result<libc::rlimit> {
        let (pid, id, mut old) = (pid as libc::pid_t, resource as _, rlim(0, 0));
        // SAFETY: `old` is valid for the kernel to fill; a null new limit means "only read".
        check(unsafe { libc::prlimit(pid, id, std::ptr::null(), &mut old) })?;
        Ok(old)
    }

    // ANCHOR: set_limit
    /// Sets the limit of process `pid` (0: this one). A parent may change a
    /// running child's limits this way. Raising a hard limit needs
    /// `CAP_SYS_RESOURCE`, and fails with `EPERM` without it.
    pub fn set_limit(pid: u32, resource: Resource, new: &libc::rlimit) -> io::Result<()> {
        let (pid, id) = (pid as libc::pid_t, resource as _);
        // SAFETY: `new` is a valid rlimit; a null old limit means "don't report it".
        check(unsafe { libc::prlimit(pid, id, new, std::ptr::null_mut()) })
    }
    // ANCHOR_END: set_limit

    /// The child's end of the link to the parent.
    pub struct Link(File);

    impl Link {
        /// Sends one line to the parent, which reads it in `wait`.
        pub fn say(&mut self, line: &str) -> Result<(), String> {
            writeln!(self.0, "{line}").map_err(|e| e.to_string())
        }
    }

    /// A bounded child still running. Dropping it kills and reaps the child.
    pub struct Running {
        pid: libc::pid_t,
        started: Instant,
        deadline: Instant,
        up: Option<File>, // what the child says (a command's output goes elsewhere)
        said: Vec<u8>,
        reaped: bool,
    }

    // ANCHOR: spawn
    /// Forks a child that sets up `limit` and `oom_score_adj`, then runs `f`:
    /// `Ok` exits 0, `Err(why)` says `error: why` and exits 1, a panic exits
    /// 101. Single-threaded callers only: the child has only the thread that
    /// forked, and a lock another thread held (stdout's, malloc's) stays held.
    pub fn spawn<F>(limit: Option<MemoryLimit>, timeout: Duration, f: F) -> io::Result<Running>
    where
        F: FnOnce(&mut Link) -> Result<(), String>,
    {
        io::stdout().flush()?; // or the child would print it a second time
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 returns.
        check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
        // SAFETY: both descriptors are fresh and owned by nothing else.
        let (up, up_write) = unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) };
        // SAFETY: sets O_NONBLOCK, for `wait`, on the end that `up` owns.
        check(unsafe { libc::fcntl(fds[0], libc::F_SETFL, libc::O_NONBLOCK) })?;
        // SAFETY: no preconditions; the child `_exit`s, never returning to the caller.
        match unsafe { libc::fork() } {
            0 => {
                drop(up);
                let code = child_main(limit, &mut Link(up_write), f);
                // SAFETY: ends the child without running atexit handlers or destructors twice.
                unsafe { libc::_exit(code) }
            }
            -1 => Err(io::Error::last_os_error()),
            pid => Ok(Running::new(pid, timeout, Some(up))),
        }
    }
    // ANCHOR_END: spawn

    // ANCHOR: child_main
    fn child_main<F>(limit: Option<MemoryLimit>, link: &mut Link, f: F) -> i32
    where
        F: FnOnce(&mut Link) -> Result<(), String>,
    {
        if let Err(why) = set_up_child(limit) {
            let _ = link.say(&format!("setup failed: {why}"));
            return 125; // setup failed: like env(1), which could not run its command
        }
        let code = match catch_unwind(AssertUnwindSafe(|| f(link))) {
            Ok(Ok(())) => 0,
            Ok(Err(why)) => {
                let _ = link.say(&format!("error: {why}"));
                1
            }
            Err(_) => 101, // the exit code of a Rust program that panicked
        };
        let _ = io::stdout().flush();
        code
    }
    // ANCHOR_END: child_main

    impl Running {
        fn new(pid: libc::pid_t, timeout: Duration, up: Option<File>) -> Running {
            let (started, said) = (Instant::now(), Vec::new());
            Running {
                pid,
                started,
                deadline: started + timeout,
                up,
                said,
                reaped: false,
            }
        }

        pub fn pid(&self) -> u32 {
            self.pid as u32
        }

        /// Reads what the child has said so far, without waiting.
        fn read_said(&mut self) -> io::Result<()> {
            match self.up.as_mut().map(|up| up.read_to_end(&mut self.said)) {
                Some(Ok(_)) => self.up = None, // end of file
                Some(Err(e)) if e.kind() != io::ErrorKind::WouldBlock => return Err(e),
                _ => {} // no pipe, or nothing more for now
            }
            Ok(())
        }

        // ANCHOR: wait
        /// Waits for the child to end, or kills it at the deadline.
        pub fn wait(mut self) -> io::Result<Report> {
            let (outcome, usage) = loop {
                if let Some((status, usage)) = reap(self.pid, libc::WNOHANG)? {
                    break (decode(status), usage);
                }
                if Instant::now() >= self.deadline {
                    // SAFETY: `pid` is our unreaped child, so its id cannot be reused.
                    unsafe { libc::kill(self.pid, libc::SIGKILL) };
                    let (_, usage) = reap(self.pid, 0)?.ok_or(io::ErrorKind::Other)?;
                    break (Outcome::TimedOut, usage);
                }
                self.read_said()?;
                std::thread::sleep(Duration::from_millis(5));
            };
            self.reaped = true;
            self.read_said()?;
            let output = String::from_utf8_lossy(&self.said).into_owned();
            let peak_rss = (usage.ru_maxrss.max(0) as u64).saturating_mul(1024); // KiB
            let elapsed = self.started.elapsed();
            Ok(Report {
                outcome,
                peak_rss,
                elapsed,
                output,
            })
        }
        // ANCHOR_END: wait
    }

    // ANCHOR: reap
    /// `wait4` on one child: its status and resource usage once it ended.
    fn reap(pid: libc::pid_t, flags: libc::c_int) -> io::Result<Option<(i32, libc::rusage)>> {
        let mut status = 0;
        // SAFETY: an all-zero rusage is a valid value of this plain C struct.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        loop {
            // SAFETY: `status` and `usage` are valid for the kernel to fill.
            match unsafe { libc::wait4(pid, &mut status, flags, &mut usage) } {
                0 => return Ok(None),
                got if got == pid => return Ok(Some((status, usage))),
                _ => match io::Error::last_os_error() {
                    e if e.kind() == io::ErrorKind::Interrupted => continue,
                    e => return Err(e),
                },
            }
        }
    }

    fn decode(status: i32) -> Outcome {
        let signal = libc::WTERMSIG(status);
        match libc::WIFSIGNALED(status) {
            true => Outcome::Killed { signal },
            false => Outcome::Exited(libc::WEXITSTATUS(status)),
        }
    }
    // ANCHOR_END: reap

    impl Drop for Running {
        fn drop(&mut self) {
            // SAFETY: our unreaped child, as in `wait`.
            if !self.reaped && unsafe { libc::kill(self.pid, libc::SIGKILL) } == 0 {
                let _ = reap(self.pid, 0);
            }
        }
    }

    // ANCHOR: command
    /// Runs `command` under the same bounds, with an absolute limit: `exec`
    /// replaces the image, so there is no baseline to count from.
    pub fn run_command(
        command: &mut Command,
        limit: Option<MemoryLimit>,
        timeout: Duration,
    ) -> io::Result<Report> {
        let rlimit = match limit {
            Some(l) if l.above_current => {
                let why = "a command's limit must be absolute (above_current: false)";
                return Err(io::Error::new(io::ErrorKind::InvalidInput, why));
            }
            Some(l) => {
                let rlim_max = l.hard.unwrap_or(get_limit(0, l.resource)?.rlim_max);
                Some((l.resource as _, rlim(l.soft, rlim_max)))
            }
            None => None,
        };
        // ANCHOR_END: command
        // ANCHOR: pre_exec
        const ADJ: &CStr = c"/proc/self/oom_score_adj";
        // SAFETY: open, write, close and setrlimit are async-signal-safe; no allocation.
        unsafe {
            command.pre_exec(move || {
                let fd = libc::open(ADJ.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 || libc::write(fd, b"1000".as_ptr().cast(), 4) != 4 {
                    return Err(io::Error::last_os_error());
                }
                libc::close(fd);
                match rlimit {
                    Some((id, new)) => check(libc::setrlimit(id, &new)),
                    None => Ok(()),
                }
            });
        }
        let pid = command.spawn()?.id() as libc::pid_t;
        Running::new(pid, timeout, None).wait()
    }
    // ANCHOR_END: pre_exec

    /// Maps `len` bytes with `prot`; the error names the call.
    pub fn map(len: usize, prot: libc::c_int) -> Result<*mut u8, String> {
        let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;
        // SAFETY: a fresh anonymous mapping at an address the kernel picks.
        let ptr = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, -1, 0) };
        let failed = || format!("mmap of {} MiB: {}", len >> 20, io::Error::last_os_error());
        let mapped = (ptr != libc::MAP_FAILED).then_some(ptr.cast());
        mapped.ok_or_else(failed)
    }

    /// Makes `len` bytes at `ptr` writable; the error names the call.
    pub fn commit(ptr: *mut u8, len: usize) -> Result<(), String> {
        let prot = libc::PROT_READ | libc::PROT_WRITE;
        // SAFETY: callers pass a page-aligned range of a mapping they own.
        check(unsafe { libc::mprotect(ptr.cast(), len, prot) })
            .map_err(|e| format!("mprotect of {} MiB: {e}", len >> 20))
    }
}

/// Off Linux no limit can be set: `parse_args` has none to return.
#[cfg(not(target_os = "linux"))]
type MemoryLimit = std::convert::Infallible;

/// The command line, read the same way on every platform. A bad one exits 2.
fn parse_args() -> (Option<MemoryLimit>, Duration, Vec<String>) {
    let mut args = Args::parse(PROGRAM, USAGE);
    let data = args.number("--data-mib", 0, 0..=65536);
    let space = args.number("--as-mib", 0, 0..=65536);
    let timeout = Duration::from_millis(args.number("--timeout-ms", 10_000, 1..=600_000));
    let command = args.rest();
    let (flag, mib) = match (data, space) {
        (mib, 0) => ("--data-mib", mib),
        (0, mib) => ("--as-mib", mib),
        _ => args.fail("--data-mib and --as-mib: give one of them, not both"),
    };
    if mib > 0 && command.is_empty() {
        args.fail(&format!("{flag} limits a COMMAND: add `-- COMMAND`"));
    }
    #[cfg(not(target_os = "linux"))]
    let limit = None;
    #[cfg(target_os = "linux")]
    let limit = {
        let resource = [Resource::Data, Resource::AddressSpace][usize::from(flag == "--as-mib")];
        // setrlimit would say only "Invalid argument"; this names the flag.
        let hard = get_limit(0, resource).map_or(u64::MAX, |old| old.rlim_max) / MIB;
        if mib > hard {
            let why = format!("{flag}: {mib} MiB is above the hard limit of {hard} MiB");
            args.fail(&why);
        }
        (mib > 0).then_some(MemoryLimit {
            resource,
            soft: mib * MIB, // the flag's range keeps this far from overflow
            hard: None,
            above_current: false,
        })
    };
    args.finish();
    (limit, timeout, command)
}

// ANCHOR: demos
/// With no COMMAND: four children ask for memory, limited to 64 MiB above
/// what they use at the start. `mprotect` commits part of a reservation.
#[cfg(target_os = "linux")]
fn run_demos() -> std::io::Result<()> {
    use Resource::{AddressSpace as As, Data};
    let (rw, none) = (libc::PROT_READ | libc::PROT_WRITE, libc::PROT_NONE);
    let demos = [
        (Data, rw, 128, 0),
        (Data, none, 1024, 0),
        (As, none, 1024, 0),
        (Data, none, 1024, 128),
    ];
    println!("{:<12} {:<32} {:<10} said", "limit", "child", "outcome");
    for (resource, prot, map_mib, commit_mib) in demos {
        let limit = MemoryLimit {
            resource,
            soft: 64 * MIB,
            hard: None,
            above_current: true,
        };
        let child = spawn(Some(limit), Duration::from_secs(10), |link| {
            let ptr = map(map_mib << 20, prot)?;
            if commit_mib > 0 {
                commit(ptr, commit_mib << 20)?;
            }
            link.say("ok")
        })?;
        let report = child.wait()?;
        let name = ["DATA +64 MiB", "AS +64 MiB"][usize::from(resource == As)];
        let what = match (prot == rw, commit_mib) {
            (true, _) => format!("map {map_mib} MiB read-write"),
            (false, 0) => format!("reserve {map_mib} MiB PROT_NONE"),
            (false, c) => format!("reserve {map_mib} MiB, commit {c} MiB"),
        };
        let (outcome, said) = (report.outcome.to_string(), report.output.trim().to_owned());
        println!("{name:<12} {what:<32} {outcome:<10} {said}");
    }
    Ok(())
}
// ANCHOR_END: demos

/// Runs COMMAND bounded, or with none the demos. Exits as timeout(1) does:
/// 124 for a timeout, 128 + N for signal N, 127 if COMMAND cannot start.
#[cfg(target_os = "linux")]
fn main() -> ExitCode {
    let (limit, timeout, words) = parse_args();
    let Some((name, args)) = words.split_first() else {
        let demos = run_demos().inspect_err(|e| eprintln!("{PROGRAM}: {e}"));
        return ExitCode::from(u8::from(demos.is_err()));
    };
    let report = run_command(std::process::Command::new(name).args(args), limit, timeout);
    let cannot = |e: &std::io::Error| eprintln!("{PROGRAM}: cannot run `{name}`: {e}");
    let Ok(report) = report.inspect_err(cannot) else {
        return ExitCode::from(127);
    };
    let (outcome, ms) = (report.outcome, report.elapsed.as_millis());
    let rss = report.peak_rss as f64 / MIB as f64;
    eprintln!("{PROGRAM}: {outcome} after {ms} ms, peak RSS {rss:.1} MiB");
    ExitCode::from(match outcome {
        Outcome::Exited(code) => code.clamp(0, 255) as u8,
        Outcome::Killed { signal } => (128 + signal).clamp(0, 255) as u8,
        Outcome::TimedOut => 124,
    })
}

#[cfg(not(target_os = "linux"))]
fn main() -> ExitCode {
    parse_args(); // a bad flag exits 2 here as on Linux
    eprintln!("{PROGRAM}: runs on Linux only (it sets rlimits and oom_score_adj)");
    ExitCode::FAILURE
}
