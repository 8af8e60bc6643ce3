//! A bounded child process: a closure or a command runs with a memory rlimit
//! (`RLIMIT_DATA` or `RLIMIT_AS`), `oom_score_adj` 1000 and a timeout, and
//! the parent learns how it ended (exited, killed by a signal, timed out)
//! and its peak RSS from `wait4`.
//!
//! - Explained in: "A bounded child: rlimits, a timeout, the OOM score"
//!   (src/part2-bounded-child.md)
//! - Run: `cargo run --example rlimit_child`, or with
//!   `-- --data-mib 64 -- COMMAND [ARG...]`
//! - Tested by: `cargo test --test rlimit_child`
//! - Depends on: std, libc 0.2

// `mdbook test` passes no `--extern`, so the crate is named here.
extern crate libc;

use std::process::ExitCode;
use std::time::Duration;

const MIB: u64 = 1 << 20;

const PROGRAM: &str = "rlimit_child";
const USAGE: &str =
    "usage: rlimit_child [--data-mib N | --as-mib N] [--timeout-ms N] [-- COMMAND [ARG...]]
  --data-mib N    RLIMIT_DATA for COMMAND in MiB, 0 for none (0..=65536, default 0)
  --as-mib N      RLIMIT_AS for COMMAND in MiB, 0 for none (0..=65536, default 0)
  --timeout-ms N  kill COMMAND after N ms (1..=600000, default 10000)
with no COMMAND, runs four children that ask for memory under a limit (Linux only)";

/// What to do, from the command line.
struct Options {
    /// `(RLIMIT_AS instead of RLIMIT_DATA, bytes)`.
    limit: Option<(bool, u64)>,
    timeout: Duration,
    command: Vec<String>,
}

impl Options {
    /// Reads the command line; a bad one ends the program with exit code 2.
    fn parse() -> Options {
        let mut args = Args::parse(PROGRAM, USAGE);
        let data = args.number("--data-mib", 0, 0..=65536);
        let space = args.number("--as-mib", 0, 0..=65536);
        let timeout = Duration::from_millis(args.number("--timeout-ms", 10_000, 1..=600_000));
        let command = args.rest();
        let limit = match (data, space) {
            (0, 0) => None,
            (mib, 0) => Some((false, "--data-mib", mib)),
            (0, mib) => Some((true, "--as-mib", mib)),
            _ => args.fail("--data-mib and --as-mib: give one of them, not both"),
        };
        let limit = limit.map(|(space, flag, mib)| {
            if command.is_empty() {
                args.fail(&format!("{flag} limits a COMMAND: add `-- COMMAND`"));
            }
            // In range, so this cannot overflow; checked all the same.
            let Some(bytes) = mib.checked_mul(MIB) else {
                args.fail(&format!("{flag}: {mib} MiB overflows a byte count"))
            };
            (space, bytes)
        });
        args.finish();
        Options {
            limit,
            timeout,
            command,
        }
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

#[cfg(target_os = "linux")]
pub use bounded::*;

#[cfg(target_os = "linux")]
mod bounded {
    use std::ffi::CStr;
    use std::fs::File;
    use std::io::{self, Read, Write};
    use std::os::fd::{AsRawFd, FromRawFd};
    use std::os::unix::process::CommandExt;
    use std::panic::{catch_unwind, AssertUnwindSafe};
    use std::process::Command;
    use std::time::{Duration, Instant};

    // ANCHOR: limit
    /// Which rlimit caps the child's memory.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Resource {
        /// `RLIMIT_DATA`: private writable mappings, charged when a mapping
        /// becomes writable. A `PROT_NONE` reservation costs nothing.
        Data,
        /// `RLIMIT_AS`: every byte of address space, reservations included.
        AddressSpace,
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

    /// Exit code of a child whose limits could not be set up.
    pub const SETUP_FAILED: i32 = 125;
    /// Exit code of a child whose closure panicked.
    pub const PANICKED: i32 = 101;

    impl std::fmt::Display for Outcome {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            match self {
                Outcome::Exited(code) => write!(f, "exited {code}"),
                Outcome::Killed { signal } => {
                    write!(f, "killed by signal {signal} ({})", signal_name(*signal))
                }
                Outcome::TimedOut => write!(f, "timed out"),
            }
        }
    }

    pub fn signal_name(signal: i32) -> &'static str {
        match signal {
            libc::SIGKILL => "SIGKILL",
            libc::SIGABRT => "SIGABRT",
            libc::SIGSEGV => "SIGSEGV",
            libc::SIGBUS => "SIGBUS",
            libc::SIGTERM => "SIGTERM",
            _ => "other",
        }
    }

    fn resource_id(resource: Resource) -> libc::__rlimit_resource_t {
        match resource {
            Resource::Data => libc::RLIMIT_DATA,
            Resource::AddressSpace => libc::RLIMIT_AS,
        }
    }

    // ANCHOR: setup
    /// The child's side of the setup, run first thing after `fork`: make it
    /// the OOM killer's first choice, then lower its limit.
    fn set_up_child(limit: Option<MemoryLimit>) -> Result<(), String> {
        std::fs::write("/proc/self/oom_score_adj", "1000")
            .map_err(|e| format!("oom_score_adj: {e}"))?;
        let Some(limit) = limit else { return Ok(()) };
        let base = match (limit.above_current, limit.resource) {
            (false, _) => 0,
            (true, Resource::Data) => status_bytes("VmData:").map_err(|e| e.to_string())?,
            (true, Resource::AddressSpace) => status_bytes("VmSize:").map_err(|e| e.to_string())?,
        };
        let old = get_limit(0, limit.resource).map_err(|e| format!("getrlimit: {e}"))?;
        let above = |bytes: u64| base.checked_add(bytes).ok_or("the limit overflows");
        let new = libc::rlimit {
            rlim_cur: above(limit.soft)?,
            rlim_max: limit.hard.map_or(Ok(old.rlim_max), above)?,
        };
        set_limit(0, limit.resource, &new).map_err(|e| format!("setrlimit: {e}"))
    }
    // ANCHOR_END: setup

    /// One `kB` field of `/proc/self/status`, in bytes.
    pub fn status_bytes(field: &str) -> io::Result<u64> {
        let text = std::fs::read_to_string("/proc/self/status")?;
        text.lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
            .and_then(|kib| kib.checked_mul(1024))
            .ok_or_else(|| io::Error::other(format!("/proc/self/status: no {field}")))
    }

    /// The limit of process `pid` (0: this one), with `prlimit`.
    pub fn get_limit(pid: u32, resource: Resource) -> io::Result<libc::rlimit> {
        let mut old = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        let (pid, id) = (pid as libc::pid_t, resource_id(resource));
        // SAFETY: `old` is valid for the kernel to fill; a null new limit
        // means "only read".
        let rc = unsafe { libc::prlimit(pid, id, std::ptr::null(), &mut old) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(old)
    }

    // ANCHOR: set_limit
    /// Sets the limit of process `pid` (0: this one). A parent may change a
    /// running child's limits this way. Raising a hard limit needs
    /// `CAP_SYS_RESOURCE`, and fails with `EPERM` without it.
    pub fn set_limit(pid: u32, resource: Resource, new: &libc::rlimit) -> io::Result<()> {
        let (pid, id) = (pid as libc::pid_t, resource_id(resource));
        // SAFETY: `new` is a valid rlimit; a null old limit means "don't
        // report it".
        let rc = unsafe { libc::prlimit(pid, id, new, std::ptr::null_mut()) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
    // ANCHOR_END: set_limit

    /// The child's end of the link to the parent.
    pub struct Link {
        up: File,
    }

    impl Link {
        /// Sends one line to the parent, which reads it in `wait`.
        pub fn say(&mut self, line: &str) -> Result<(), String> {
            let line = format!("{line}\n");
            self.up
                .write_all(line.as_bytes())
                .map_err(|e| e.to_string())
        }
    }

    /// A bounded child that is still running. Dropping it kills and reaps
    /// the child, so a failing test never leaves one behind.
    pub struct Running {
        pid: libc::pid_t,
        started: Instant,
        deadline: Instant,
        /// What the child says; a command's output goes elsewhere.
        up: Option<File>,
        said: Vec<u8>,
        reaped: bool,
    }

    // ANCHOR: spawn
    /// Forks a child that sets up `limit` and `oom_score_adj`, then runs
    /// `f`: `Ok` exits 0, `Err(why)` says `error: why` and exits 1, a panic
    /// exits 101. Call it only from a single-threaded process: after `fork`
    /// the child has only the calling thread, and a lock another thread held
    /// (stdout's, the environment's, the allocator's) stays held forever.
    pub fn spawn<F>(limit: Option<MemoryLimit>, timeout: Duration, f: F) -> io::Result<Running>
    where
        F: FnOnce(&mut Link) -> Result<(), String>,
    {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 returns.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both descriptors are fresh and owned by nothing else.
        let (up, up_write) = unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) };
        io::stdout().flush()?; // or the child would print it a second time
                               // SAFETY: fork has no memory-safety preconditions; the child runs
                               // `child_main` and `_exit`s, never returning into the caller.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            drop(up);
            let code = child_main(limit, &mut Link { up: up_write }, f);
            // SAFETY: ends the child now, without running the parent's
            // atexit handlers or destructors a second time.
            unsafe { libc::_exit(code) };
        }
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Running::new(pid, timeout, Some(up)))
    }
    // ANCHOR_END: spawn

    // ANCHOR: child_main
    fn child_main<F>(limit: Option<MemoryLimit>, link: &mut Link, f: F) -> i32
    where
        F: FnOnce(&mut Link) -> Result<(), String>,
    {
        if let Err(why) = set_up_child(limit) {
            let _ = link.say(&format!("setup failed: {why}"));
            return SETUP_FAILED;
        }
        let code = match catch_unwind(AssertUnwindSafe(|| f(link))) {
            Ok(Ok(())) => 0,
            Ok(Err(why)) => {
                let _ = link.say(&format!("error: {why}"));
                1
            }
            Err(_) => PANICKED,
        };
        let _ = io::stdout().flush();
        code
    }
    // ANCHOR_END: child_main

    /// `spawn` and `wait` in one call.
    pub fn run<F>(limit: Option<MemoryLimit>, timeout: Duration, f: F) -> io::Result<Report>
    where
        F: FnOnce(&mut Link) -> Result<(), String>,
    {
        spawn(limit, timeout, f)?.wait()
    }

    /// Whether `file` has input (or end of file) within `ms` milliseconds.
    pub fn readable(file: &File, ms: i32) -> io::Result<bool> {
        let (fd, events) = (file.as_raw_fd(), libc::POLLIN);
        let mut poll = libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        match unsafe { libc::poll(&mut poll, 1, ms) } {
            n if n >= 0 => Ok(n > 0),
            _ => match io::Error::last_os_error() {
                e if e.kind() == io::ErrorKind::Interrupted => Ok(false),
                e => Err(e),
            },
        }
    }

    impl Running {
        fn new(pid: libc::pid_t, timeout: Duration, up: Option<File>) -> Running {
            let (started, said) = (Instant::now(), Vec::new());
            let deadline = started + timeout;
            Running {
                pid,
                started,
                deadline,
                up,
                said,
                reaped: false,
            }
        }

        pub fn pid(&self) -> u32 {
            self.pid as u32
        }

        /// Reads what the child said, waiting up to `ms` for the first
        /// bytes. Returns false at end of file.
        fn read_said(&mut self, ms: i32) -> io::Result<bool> {
            let Some(up) = self.up.as_mut() else {
                std::thread::sleep(Duration::from_millis(ms as u64));
                return Ok(true);
            };
            let mut buf = [0u8; 4096];
            let mut wait = ms;
            while readable(up, wait)? {
                match up.read(&mut buf)? {
                    0 => return Ok(false),
                    n => self.said.extend_from_slice(&buf[..n]),
                }
                wait = 0;
            }
            Ok(true)
        }

        // ANCHOR: wait
        /// Waits for the child to end, or kills it at the deadline.
        pub fn wait(mut self) -> io::Result<Report> {
            let (outcome, usage) = loop {
                if let Some((status, usage)) = reap(self.pid, libc::WNOHANG)? {
                    break (decode(status), usage);
                }
                if Instant::now() >= self.deadline {
                    // SAFETY: `pid` is our child and not reaped yet, so the
                    // id cannot have been reused.
                    unsafe { libc::kill(self.pid, libc::SIGKILL) };
                    break (
                        Outcome::TimedOut,
                        reap(self.pid, 0)?.ok_or_else(no_child)?.1,
                    );
                }
                if !self.read_said(10)? {
                    std::thread::sleep(Duration::from_millis(1)); // it is exiting
                }
            };
            self.reaped = true;
            self.read_said(0)?;
            let said = String::from_utf8_lossy(&self.said).into_owned();
            let (peak_rss, elapsed) = (max_rss(&usage), self.started.elapsed());
            Ok(Report {
                outcome,
                peak_rss,
                elapsed,
                output: said,
            })
        }
        // ANCHOR_END: wait
    }

    fn no_child() -> io::Error {
        io::Error::other("wait4 without WNOHANG returned no child")
    }

    /// `ru_maxrss` in bytes (Linux reports KiB).
    fn max_rss(usage: &libc::rusage) -> u64 {
        (usage.ru_maxrss.max(0) as u64).saturating_mul(1024)
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
        if libc::WIFSIGNALED(status) {
            Outcome::Killed {
                signal: libc::WTERMSIG(status),
            }
        } else {
            Outcome::Exited(libc::WEXITSTATUS(status))
        }
    }
    // ANCHOR_END: reap

    impl Drop for Running {
        fn drop(&mut self) {
            if !self.reaped {
                // SAFETY: our unreaped child, as in `wait`.
                unsafe { libc::kill(self.pid, libc::SIGKILL) };
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
                let new = libc::rlimit {
                    rlim_cur: l.soft,
                    rlim_max,
                };
                Some((resource_id(l.resource), new))
            }
            None => None,
        };
        // ANCHOR_END: command
        // ANCHOR: pre_exec
        const ADJ: &CStr = c"/proc/self/oom_score_adj";
        // SAFETY: the closure calls only open, write, close and setrlimit,
        // which are async-signal-safe, and allocates nothing.
        unsafe {
            command.pre_exec(move || {
                let fd = libc::open(ADJ.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 || libc::write(fd, b"1000".as_ptr().cast(), 4) != 4 {
                    return Err(io::Error::last_os_error());
                }
                libc::close(fd);
                match rlimit {
                    Some((id, new)) if libc::setrlimit(id, &new) != 0 => {
                        Err(io::Error::last_os_error())
                    }
                    _ => Ok(()),
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
        if ptr == libc::MAP_FAILED {
            let e = io::Error::last_os_error();
            return Err(format!("mmap of {} MiB: {e}", len >> 20));
        }
        Ok(ptr.cast())
    }

    /// Makes `len` bytes at `ptr` writable; the error names the call.
    pub fn commit(ptr: *mut u8, len: usize) -> Result<(), String> {
        let prot = libc::PROT_READ | libc::PROT_WRITE;
        // SAFETY: callers pass a page-aligned range of a mapping they own.
        if unsafe { libc::mprotect(ptr.cast(), len, prot) } != 0 {
            let e = io::Error::last_os_error();
            return Err(format!("mprotect of {} MiB: {e}", len >> 20));
        }
        Ok(())
    }
}

// ANCHOR: demos
/// With no COMMAND: four children ask for memory under a limit of 64 MiB
/// above what they use when they start. `mmap` maps; `mprotect` commits
/// part of a `PROT_NONE` reservation.
#[cfg(target_os = "linux")]
fn run_demos() -> std::io::Result<()> {
    use Resource::{AddressSpace as As, Data};
    let (rw, none) = (libc::PROT_READ | libc::PROT_WRITE, libc::PROT_NONE);
    let demos = [
        (Data, rw, 128, 0),
        (Data, none, 1024, 0),
        (As, none, 1024, 0),
    ];
    println!("{:<12} {:<32} {:<10} said", "limit", "child", "outcome");
    for (resource, prot, map_mib, commit_mib) in demos.into_iter().chain([(Data, none, 1024, 128)])
    {
        let limit = MemoryLimit {
            resource,
            soft: 64 * MIB,
            hard: None,
            above_current: true,
        };
        let report = run(Some(limit), Duration::from_secs(10), |link| {
            let ptr = map(map_mib << 20, prot)?;
            if commit_mib > 0 {
                commit(ptr, commit_mib << 20)?;
            }
            link.say("ok")
        })?;
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

/// Runs the command line's COMMAND bounded, and returns its exit code the
/// way timeout(1) does: 124 for a timeout, 128 + N for signal N, 127 for
/// a command that could not be started.
#[cfg(target_os = "linux")]
fn run_one_command(options: &Options) -> ExitCode {
    let limit = options.limit.map(|(address_space, bytes)| MemoryLimit {
        resource: [Resource::Data, Resource::AddressSpace][usize::from(address_space)],
        soft: bytes,
        hard: None,
        above_current: false,
    });
    // setrlimit says only "Invalid argument" for a soft limit above the
    // hard one; say which limit it is.
    if let Some(l) = limit {
        let hard = get_limit(0, l.resource).map_or(u64::MAX, |old| old.rlim_max);
        if l.soft > hard {
            let flag = ["--data-mib", "--as-mib"][usize::from(l.resource != Resource::Data)];
            let (mib, hard) = (l.soft / MIB, hard / MIB);
            eprintln!(
                "{PROGRAM}: {flag}: {mib} MiB is above the hard limit of {hard} MiB (see --help)"
            );
            return ExitCode::from(2);
        }
    }
    let name = &options.command[0];
    let mut command = std::process::Command::new(name);
    command.args(&options.command[1..]);
    let report = match run_command(&mut command, limit, options.timeout) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("{PROGRAM}: cannot run `{name}`: {e}");
            return ExitCode::from(127);
        }
    };
    let (ms, rss) = (
        report.elapsed.as_millis(),
        report.peak_rss as f64 / MIB as f64,
    );
    eprintln!(
        "{PROGRAM}: {} after {ms} ms, peak RSS {rss:.1} MiB",
        report.outcome
    );
    ExitCode::from(match report.outcome {
        Outcome::Exited(code) => code.clamp(0, 255) as u8,
        Outcome::Killed { signal } => (128 + signal).clamp(0, 255) as u8,
        Outcome::TimedOut => 124,
    })
}

fn main() -> ExitCode {
    let options = Options::parse();
    #[cfg(target_os = "linux")]
    {
        if !options.command.is_empty() {
            return run_one_command(&options);
        }
        if let Err(e) = run_demos() {
            eprintln!("{PROGRAM}: {e}");
            return ExitCode::FAILURE;
        }
        ExitCode::SUCCESS
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = options;
        println!("{PROGRAM}: rlimits, /proc and oom_score_adj are Linux interfaces");
        ExitCode::SUCCESS
    }
}
