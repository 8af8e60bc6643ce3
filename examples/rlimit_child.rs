extern crate libc;

// The line above is for `mdbook test`, which passes no `--extern` flags.
//
// rlimit_child: run a closure or a command in a child process that cannot
// hurt the machine: a memory rlimit (RLIMIT_DATA or RLIMIT_AS), an
// `oom_score_adj` of 1000 (the first to go if the OOM killer runs) and a
// wall-clock timeout. It reports how the child ended: exited, killed by a
// signal, or timed out, with its peak RSS from `wait4`.
//
//   Run:          cargo run --example rlimit_child
//                 cargo run --example rlimit_child -- --data-mib 64 --timeout-ms 2000 -- CMD [ARG...]
//   Tested by:    cargo test --example rlimit_child
//   Explained in: src/part2-failing-on-purpose.md, "Failing on purpose"
//   Used by:      tests/dynamic_memory.rs (the Part II suite)
//
// rlimits, /proc and oom_score_adj are Linux interfaces, so everything but
// the argument parser is Linux only. Elsewhere the example says so and exits.

use std::process::ExitCode;
use std::time::Duration;

const MIB: u64 = 1 << 20;

const USAGE: &str =
    "usage: rlimit_child [--data-mib N | --as-mib N] [--timeout-ms T] [-- COMMAND [ARG...]]
  --data-mib N    RLIMIT_DATA of N MiB for COMMAND (private writable memory)
  --as-mib N      RLIMIT_AS of N MiB for COMMAND (all address space, reservations too)
  --timeout-ms T  kill the child after T ms (default 10000)
  with no COMMAND, runs seven small demonstration children";

#[derive(Debug, PartialEq, Eq)]
struct Args {
    /// (RLIMIT_AS instead of RLIMIT_DATA, MiB)
    limit: Option<(bool, u64)>,
    timeout: Duration,
    command: Vec<String>,
}

fn parse_args(args: &[String]) -> Result<Args, String> {
    let mut parsed = Args {
        limit: None,
        timeout: Duration::from_secs(10),
        command: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let flag = flag.as_str();
        if flag == "--" {
            parsed.command = it.by_ref().cloned().collect();
            if parsed.command.is_empty() {
                return Err("`--` must be followed by a command".into());
            }
            break;
        }
        let value = match flag {
            "--data-mib" | "--as-mib" | "--timeout-ms" => it
                .next()
                .ok_or_else(|| format!("`{flag}` needs a number"))?,
            other => return Err(format!("unknown argument `{other}`")),
        };
        let number: u64 = value
            .parse()
            .map_err(|_| format!("`{flag}` takes a whole number, got `{value}`"))?;
        if number == 0 {
            return Err(format!("`{flag}` must be at least 1"));
        }
        match flag {
            "--timeout-ms" => parsed.timeout = Duration::from_millis(number),
            _ if parsed.limit.is_some() => {
                return Err("give one of `--data-mib` and `--as-mib`, once".into())
            }
            _ => parsed.limit = Some((flag == "--as-mib", number)),
        }
    }
    if parsed.limit.is_some() && parsed.command.is_empty() {
        return Err("a limit applies to a COMMAND: add `-- COMMAND`".into());
    }
    Ok(parsed)
}

#[cfg(target_os = "linux")]
pub use bounded::*;

#[cfg(target_os = "linux")]
mod bounded {
    use std::ffi::CStr;
    use std::fs::File;
    use std::io::{self, BufRead, BufReader, Read, Write};
    use std::os::fd::{AsRawFd, FromRawFd};
    use std::os::unix::process::CommandExt;
    use std::panic::{catch_unwind, AssertUnwindSafe};
    use std::process::Command;
    use std::time::{Duration, Instant};

    // ANCHOR: types
    /// Which rlimit caps the child's memory.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Resource {
        /// `RLIMIT_DATA`: private writable mappings and the heap (all `mmap`
        /// since Linux 4.7). A `PROT_NONE` reservation costs nothing until
        /// `mprotect` makes it writable.
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
        /// The hard limit: the ceiling the soft limit may be raised to
        /// without privilege. `None` keeps the inherited one.
        pub hard: Option<u64>,
        /// Count `soft` and `hard` from what the child already uses when it
        /// starts. A forked child inherits its parent's mappings, so an
        /// absolute number would mean little. (A command starts from a fresh
        /// image, so its limits are always absolute.)
        pub above_current: bool,
    }

    /// How the child ended.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Outcome {
        /// It returned or exited, with this code.
        Exited(i32),
        /// A signal ended it: 9 (`SIGKILL`) from the OOM killer, 6
        /// (`SIGABRT`) from `abort`, 11 (`SIGSEGV`) from a bad access.
        Killed { signal: i32 },
        /// It ran past the timeout, and we killed it.
        TimedOut,
    }

    /// Everything the parent learns from one bounded child.
    #[derive(Debug)]
    pub struct Report {
        pub outcome: Outcome,
        /// The child's peak resident set size, from `wait4`'s `ru_maxrss`.
        /// It includes what the child inherited at `fork`.
        pub peak_rss: u64,
        pub elapsed: Duration,
        /// Lines the child said that the parent had not read yet.
        pub output: String,
    }
    // ANCHOR_END: types

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
    fn set_up_child(limit: Option<MemoryLimit>) -> Result<String, String> {
        std::fs::write("/proc/self/oom_score_adj", "1000")
            .map_err(|e| format!("oom_score_adj: {e}"))?;
        let Some(limit) = limit else {
            return Ok("no memory limit".into());
        };
        let base = if limit.above_current {
            match limit.resource {
                Resource::Data => status_bytes("VmData:"),
                Resource::AddressSpace => status_bytes("VmSize:"),
            }
            .map_err(|e| format!("/proc/self/status: {e}"))?
        } else {
            0
        };
        let old = get_limit(0, limit.resource).map_err(|e| format!("getrlimit: {e}"))?;
        let new = libc::rlimit {
            rlim_cur: base + limit.soft,
            rlim_max: limit.hard.map_or(old.rlim_max, |hard| base + hard),
        };
        set_limit(0, limit.resource, &new).map_err(|e| format!("setrlimit: {e}"))?;
        Ok(format!(
            "{:?} soft limit {} bytes ({} above a baseline of {base})",
            limit.resource, new.rlim_cur, limit.soft
        ))
    }

    /// One `kB` field of `/proc/self/status`, in bytes.
    pub fn status_bytes(field: &str) -> io::Result<u64> {
        let text = std::fs::read_to_string("/proc/self/status")?;
        text.lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
            .map(|kib| kib * 1024)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("no {field}")))
    }

    /// The limit of process `pid` (0: this one), with `prlimit`.
    pub fn get_limit(pid: u32, resource: Resource) -> io::Result<libc::rlimit> {
        let mut old = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `old` is a valid rlimit for the kernel to fill; a null
        // new limit means "only read".
        let rc = unsafe {
            libc::prlimit(
                pid as libc::pid_t,
                resource_id(resource),
                std::ptr::null(),
                &mut old,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(old)
    }

    /// Sets the limit of process `pid` (0: this one). A parent may change its
    /// child's limits at run time this way; raising a hard limit needs
    /// `CAP_SYS_RESOURCE` and fails with `EPERM` without it.
    pub fn set_limit(pid: u32, resource: Resource, new: &libc::rlimit) -> io::Result<()> {
        // SAFETY: `new` is a valid rlimit; a null old limit means "don't report".
        let rc = unsafe {
            libc::prlimit(
                pid as libc::pid_t,
                resource_id(resource),
                new,
                std::ptr::null_mut(),
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
    // ANCHOR_END: setup

    /// The child's end of the link: lines to the parent, lines from it.
    pub struct Link {
        up: File,
        down: BufReader<File>,
    }

    impl Link {
        /// Sends one line to the parent.
        pub fn say(&mut self, line: &str) -> io::Result<()> {
            self.up.write_all(format!("{line}\n").as_bytes())
        }

        /// Waits for one line from the parent.
        pub fn hear(&mut self) -> io::Result<String> {
            let mut line = String::new();
            if self.down.read_line(&mut line)? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the parent closed the link",
                ));
            }
            Ok(line.trim_end().to_owned())
        }
    }

    /// A bounded child that is still running. Dropping it kills and reaps
    /// the child, so a failing test never leaves one behind.
    pub struct Running {
        pid: libc::pid_t,
        started: Instant,
        deadline: Instant,
        up: File,
        down: Option<File>,
        pending: Vec<u8>,
        up_closed: bool,
        reaped: bool,
    }

    fn pipe() -> io::Result<(File, File)> {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 returns.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both descriptors are fresh and owned by nothing else.
        Ok(unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) })
    }

    // ANCHOR: spawn
    /// Forks a child that sets up `limit` and `oom_score_adj`, then runs `f`.
    /// `f` returning `Ok` exits 0; `Err(why)` says `error: why` and exits 1;
    /// a panic exits 101. The child never returns into the caller's code.
    ///
    /// Call it from a single-threaded program (the suite's own `main`, an
    /// example's `main`). After `fork` only the calling thread exists in the
    /// child; a lock another thread held at that moment stays locked there.
    /// (glibc holds its malloc locks across `fork`, so the child may
    /// allocate; this file's own tests rely on that, inside libtest's
    /// threads, and fork one at a time.)
    pub fn spawn<F>(limit: Option<MemoryLimit>, timeout: Duration, f: F) -> io::Result<Running>
    where
        F: FnOnce(&mut Link) -> Result<(), String>,
    {
        let (up_read, up_write) = pipe()?;
        let (down_read, down_write) = pipe()?;
        // Anything buffered now would be written twice, once by each process.
        io::stdout().flush()?;
        // SAFETY: fork has no memory-safety preconditions; the child only
        // runs `child_main` and then `_exit`s, never returning.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
        if pid == 0 {
            drop((up_read, down_write));
            let mut link = Link {
                up: up_write,
                down: BufReader::new(down_read),
            };
            let code = child_main(limit, &mut link, f);
            let _ = io::stdout().flush();
            // SAFETY: ends the child at once, without running the parent's
            // atexit handlers or destructors a second time.
            unsafe { libc::_exit(code) };
        }
        drop((up_write, down_read));
        set_nonblocking(&up_read)?;
        let started = Instant::now();
        Ok(Running {
            pid,
            started,
            deadline: started + timeout,
            up: up_read,
            down: Some(down_write),
            pending: Vec::new(),
            up_closed: false,
            reaped: false,
        })
    }

    fn child_main<F>(limit: Option<MemoryLimit>, link: &mut Link, f: F) -> i32
    where
        F: FnOnce(&mut Link) -> Result<(), String>,
    {
        if let Err(why) = set_up_child(limit) {
            let _ = link.say(&format!("setup failed: {why}"));
            return SETUP_FAILED;
        }
        match catch_unwind(AssertUnwindSafe(|| f(link))) {
            Ok(Ok(())) => 0,
            Ok(Err(why)) => {
                let _ = link.say(&format!("error: {why}"));
                1
            }
            Err(_) => PANICKED,
        }
    }
    // ANCHOR_END: spawn

    /// `spawn` and `wait` in one call.
    pub fn run<F>(limit: Option<MemoryLimit>, timeout: Duration, f: F) -> io::Result<Report>
    where
        F: FnOnce(&mut Link) -> Result<(), String>,
    {
        spawn(limit, timeout, f)?.wait()
    }

    fn set_nonblocking(file: &File) -> io::Result<()> {
        let fd = file.as_raw_fd();
        // SAFETY: F_GETFL/F_SETFL on a descriptor we own.
        let ok = unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFL);
            flags >= 0 && libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) == 0
        };
        if !ok {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    impl Running {
        pub fn pid(&self) -> u32 {
            self.pid as u32
        }

        /// Sends one line to the child.
        pub fn tell(&mut self, line: &str) -> io::Result<()> {
            match self.down.as_mut() {
                Some(down) => down.write_all(format!("{line}\n").as_bytes()),
                None => Err(io::Error::new(io::ErrorKind::BrokenPipe, "link closed")),
            }
        }

        /// Waits for the child's next line, until the child's deadline.
        pub fn listen(&mut self) -> io::Result<String> {
            loop {
                if let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = self.pending.drain(..=end).collect();
                    return Ok(String::from_utf8_lossy(&line).trim_end().to_owned());
                }
                if self.up_closed {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "the child ended the link (it said {:?})",
                            String::from_utf8_lossy(&self.pending)
                        ),
                    ));
                }
                let left = self.deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the child said nothing before its deadline",
                    ));
                }
                self.poll_up(left.min(Duration::from_millis(100)))?;
            }
        }

        /// Waits up to `wait` for output, then reads what there is.
        fn poll_up(&mut self, wait: Duration) -> io::Result<()> {
            let mut fd = libc::pollfd {
                fd: self.up.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = wait.as_millis().min(i32::MAX as u128) as libc::c_int;
            // SAFETY: one valid pollfd.
            if unsafe { libc::poll(&mut fd, 1, ms) } < 0 {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            self.drain_up()
        }

        fn drain_up(&mut self) -> io::Result<()> {
            let mut buf = [0u8; 4096];
            loop {
                match self.up.read(&mut buf) {
                    Ok(0) => {
                        self.up_closed = true;
                        return Ok(());
                    }
                    Ok(n) => self.pending.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        }

        // ANCHOR: wait
        /// Waits for the child to end, or kills it at the deadline.
        pub fn wait(mut self) -> io::Result<Report> {
            self.down = None; // the child's `hear` now sees end of file
            loop {
                if let Some((status, usage)) = reap(self.pid, libc::WNOHANG)? {
                    self.reaped = true;
                    self.drain_up()?;
                    return Ok(self.report(decode(status), &usage));
                }
                if Instant::now() >= self.deadline {
                    // SAFETY: `pid` is our child and not reaped yet, so the
                    // id cannot have been reused.
                    unsafe { libc::kill(self.pid, libc::SIGKILL) };
                    let (_, usage) = reap(self.pid, 0)?.ok_or_else(|| {
                        io::Error::other("wait4 without WNOHANG returned no child")
                    })?;
                    self.reaped = true;
                    self.drain_up()?;
                    return Ok(self.report(Outcome::TimedOut, &usage));
                }
                if self.up_closed {
                    // End of file: the child is exiting. Poll the exit.
                    std::thread::sleep(Duration::from_millis(1));
                } else {
                    self.poll_up(Duration::from_millis(10))?;
                }
            }
        }

        fn report(&mut self, outcome: Outcome, usage: &libc::rusage) -> Report {
            Report {
                outcome,
                // Linux reports ru_maxrss in KiB.
                peak_rss: usage.ru_maxrss.max(0) as u64 * 1024,
                elapsed: self.started.elapsed(),
                output: String::from_utf8_lossy(&std::mem::take(&mut self.pending)).into_owned(),
            }
        }
    }

    /// `wait4` on one child: its status and resource usage once it ended.
    fn reap(pid: libc::pid_t, flags: libc::c_int) -> io::Result<Option<(i32, libc::rusage)>> {
        let mut status = 0;
        // SAFETY: an all-zero rusage is a valid value of this plain C struct.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        loop {
            // SAFETY: `status` and `usage` are valid for the kernel to fill.
            let got = unsafe { libc::wait4(pid, &mut status, flags, &mut usage) };
            if got == pid {
                return Ok(Some((status, usage)));
            }
            if got == 0 {
                return Ok(None);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
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
    // ANCHOR_END: wait

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
    /// Runs `command` under the same bounds. The limit is absolute: `exec`
    /// replaces the image, so there is no baseline to count from. The
    /// command's output goes where `command` sends it (inherited by default).
    pub fn run_command(
        command: &mut Command,
        limit: Option<MemoryLimit>,
        timeout: Duration,
    ) -> io::Result<Report> {
        if limit.is_some_and(|l| l.above_current) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a command's limit must be absolute (above_current: false)",
            ));
        }
        let rlimit = match limit {
            Some(l) => {
                let old = get_limit(0, l.resource)?;
                Some((
                    resource_id(l.resource),
                    libc::rlimit {
                        rlim_cur: l.soft,
                        rlim_max: l.hard.unwrap_or(old.rlim_max),
                    },
                ))
            }
            None => None,
        };
        const ADJ_PATH: &CStr = c"/proc/self/oom_score_adj";
        // SAFETY: between fork and exec the closure calls only
        // async-signal-safe functions (open, write, close, setrlimit) on
        // values prepared before the fork, and allocates nothing.
        unsafe {
            command.pre_exec(move || {
                let fd = libc::open(ADJ_PATH.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 || libc::write(fd, b"1000".as_ptr().cast(), 4) != 4 {
                    return Err(io::Error::last_os_error());
                }
                libc::close(fd);
                if let Some((resource, limit)) = rlimit {
                    if libc::setrlimit(resource, &limit) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let started = Instant::now();
        let child = command.spawn()?;
        let pid = child.id() as libc::pid_t;
        loop {
            if let Some((status, usage)) = reap(pid, libc::WNOHANG)? {
                return Ok(command_report(decode(status), &usage, started));
            }
            if started.elapsed() >= timeout {
                // SAFETY: our unreaped child.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                let (_, usage) =
                    reap(pid, 0)?.ok_or_else(|| io::Error::other("wait4 returned no child"))?;
                return Ok(command_report(Outcome::TimedOut, &usage, started));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    // ANCHOR_END: command

    fn command_report(outcome: Outcome, usage: &libc::rusage, started: Instant) -> Report {
        Report {
            outcome,
            peak_rss: usage.ru_maxrss.max(0) as u64 * 1024,
            elapsed: started.elapsed(),
            output: String::new(),
        }
    }

    /// Maps `len` bytes with `prot`; the error names the call.
    pub fn map(len: usize, prot: libc::c_int) -> Result<*mut u8, String> {
        let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;
        // SAFETY: a fresh anonymous mapping at an address the kernel picks.
        let ptr = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, -1, 0) };
        if ptr == libc::MAP_FAILED {
            return Err(format!(
                "mmap of {} MiB: {}",
                len >> 20,
                io::Error::last_os_error()
            ));
        }
        Ok(ptr.cast())
    }

    /// Makes `len` bytes at `ptr` writable; the error names the call.
    pub fn commit(ptr: *mut u8, len: usize) -> Result<(), String> {
        // SAFETY: callers pass a page-aligned range of a mapping they own.
        let rc = unsafe { libc::mprotect(ptr.cast(), len, libc::PROT_READ | libc::PROT_WRITE) };
        if rc != 0 {
            return Err(format!(
                "mprotect of {} MiB: {}",
                len >> 20,
                io::Error::last_os_error()
            ));
        }
        Ok(())
    }
}

/// The demonstration children: each shows one way a bounded child ends.
#[cfg(target_os = "linux")]
type Demo = (
    &'static str,
    Option<MemoryLimit>,
    fn(&mut Link) -> Result<(), String>,
);

#[cfg(target_os = "linux")]
fn demos() -> Vec<Demo> {
    let data_limit = MemoryLimit {
        resource: Resource::Data,
        soft: 64 * MIB,
        hard: None,
        above_current: true,
    };
    let address_space = Some(MemoryLimit {
        resource: Resource::AddressSpace,
        ..data_limit
    });
    let data = Some(data_limit);
    vec![
        ("touch 32 MiB (DATA +64 MiB)", data, |link| {
            let len = 32 << 20;
            let ptr = map(len, libc::PROT_READ | libc::PROT_WRITE)?;
            // SAFETY: `ptr` is a fresh private read-write mapping of `len` bytes.
            unsafe { std::ptr::write_bytes(ptr, 1, len) };
            link.say("touched 32 MiB").map_err(|e| e.to_string())
        }),
        ("map 128 MiB (DATA +64 MiB)", data, |_| {
            map(128 << 20, libc::PROT_READ | libc::PROT_WRITE).map(drop)
        }),
        ("reserve 1 GiB (DATA +64 MiB)", data, |link| {
            map(1 << 30, libc::PROT_NONE)?;
            link.say("reserved 1 GiB PROT_NONE")
                .map_err(|e| e.to_string())
        }),
        ("reserve 1 GiB (AS +64 MiB)", address_space, |_| {
            map(1 << 30, libc::PROT_NONE).map(drop)
        }),
        ("commit 128 MiB of it (DATA)", data, |_| {
            let ptr = map(1 << 30, libc::PROT_NONE)?;
            commit(ptr, 128 << 20)
        }),
        ("sleep past the timeout", data, |_| {
            std::thread::sleep(std::time::Duration::from_secs(5));
            Ok(())
        }),
        ("abort()", data, |_| std::process::abort()),
    ]
}

#[cfg(target_os = "linux")]
fn run_demos() -> std::io::Result<()> {
    let timeout = Duration::from_millis(200);
    println!(
        "each child: oom_score_adj 1000, a {} ms timeout, and the limit shown",
        timeout.as_millis()
    );
    println!("{:<29} {:<28} {:>9}  said", "child", "outcome", "peak RSS");
    for (name, limit, f) in demos() {
        let report = run(limit, timeout, f)?;
        let outcome = match report.outcome {
            Outcome::TimedOut => format!("timed out after {} ms", report.elapsed.as_millis()),
            other => other.to_string(),
        };
        println!(
            "{name:<29} {outcome:<28} {:>5.1} MiB  {}",
            report.peak_rss as f64 / MIB as f64,
            report.output.trim().replace('\n', "; ")
        );
    }
    Ok(())
}

#[cfg(target_os = "linux")]
fn run_one_command(args: &Args) -> std::io::Result<ExitCode> {
    let limit = args.limit.map(|(address_space, mib)| MemoryLimit {
        resource: if address_space {
            Resource::AddressSpace
        } else {
            Resource::Data
        },
        soft: mib * MIB,
        hard: None,
        above_current: false,
    });
    let mut command = std::process::Command::new(&args.command[0]);
    command.args(&args.command[1..]);
    let report = run_command(&mut command, limit, args.timeout)?;
    eprintln!(
        "rlimit_child: {} after {} ms, peak RSS {:.1} MiB",
        report.outcome,
        report.elapsed.as_millis(),
        report.peak_rss as f64 / MIB as f64
    );
    // The exit code follows timeout(1): 124 for a timeout, 128 + N for signal N.
    Ok(ExitCode::from(match report.outcome {
        Outcome::Exited(code) => code.clamp(0, 255) as u8,
        Outcome::Killed { signal } => (128 + signal).clamp(0, 255) as u8,
        Outcome::TimedOut => 124,
    }))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args = match parse_args(&args) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("rlimit_child: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    #[cfg(target_os = "linux")]
    {
        let result = if args.command.is_empty() {
            run_demos().map(|()| ExitCode::SUCCESS)
        } else {
            run_one_command(&args)
        };
        result.unwrap_or_else(|e| {
            eprintln!("rlimit_child: {e}");
            ExitCode::FAILURE
        })
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (args, Duration::ZERO, MIB);
        println!("rlimit_child: RLIMIT_DATA accounting and oom_score_adj are Linux only");
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn bad_arguments_are_rejected_and_named() {
        for (args, needle) in [
            (&["--data-mib", "0"][..], "`--data-mib` must be at least 1"),
            (&["--data-mib", "x"], "`--data-mib` takes a whole number"),
            (&["--as-mib"], "`--as-mib` needs a number"),
            (&["--data-mib", "1", "--as-mib", "1", "--", "true"], "once"),
            (&["--data-mib", "8"], "add `-- COMMAND`"),
            (&["--"], "followed by a command"),
            (&["--frobnicate"], "unknown argument `--frobnicate`"),
        ] {
            let err = parse_args(&strings(args)).expect_err(needle);
            assert!(err.contains(needle), "{args:?}: {err}");
        }
    }

    #[test]
    fn a_command_and_its_limit_are_parsed() {
        let args = parse_args(&strings(&["--as-mib", "64", "--", "sh", "-c", "true"])).unwrap();
        assert_eq!(args.limit, Some((true, 64)));
        assert_eq!(args.command, strings(&["sh", "-c", "true"]));
        assert_eq!(parse_args(&[]).unwrap().command, Vec::<String>::new());
    }

    #[cfg(target_os = "linux")]
    mod linux {
        use super::super::*;
        use std::sync::{Mutex, MutexGuard, PoisonError};

        /// The tests fork; they take turns so that one child's memory never
        /// shows in another's numbers.
        static FORKS: Mutex<()> = Mutex::new(());

        fn one_at_a_time() -> MutexGuard<'static, ()> {
            FORKS.lock().unwrap_or_else(PoisonError::into_inner)
        }

        fn data(soft: u64) -> Option<MemoryLimit> {
            Some(MemoryLimit {
                resource: Resource::Data,
                soft,
                hard: None,
                above_current: true,
            })
        }

        const SECOND: Duration = Duration::from_secs(1);

        #[test]
        fn the_three_outcomes_are_told_apart() {
            let _turn = one_at_a_time();
            let ok = run(None, SECOND, |_| Ok(())).unwrap();
            assert_eq!(ok.outcome, Outcome::Exited(0));
            let err = run(None, SECOND, |_| Err("no".into())).unwrap();
            assert_eq!(err.outcome, Outcome::Exited(1));
            assert_eq!(err.output.trim(), "error: no");
            let aborted = run(None, SECOND, |_| std::process::abort()).unwrap();
            assert_eq!(
                aborted.outcome,
                Outcome::Killed {
                    signal: libc::SIGABRT
                }
            );
            let slow = run(None, Duration::from_millis(100), |_| {
                std::thread::sleep(Duration::from_secs(30));
                Ok(())
            })
            .unwrap();
            assert_eq!(slow.outcome, Outcome::TimedOut);
            assert!(slow.elapsed < Duration::from_secs(5), "{:?}", slow.elapsed);
        }

        #[test]
        fn the_child_runs_with_oom_score_adj_1000() {
            let _turn = one_at_a_time();
            let report = run(None, SECOND, |link| {
                let adj = std::fs::read_to_string("/proc/self/oom_score_adj")
                    .map_err(|e| e.to_string())?;
                link.say(adj.trim()).map_err(|e| e.to_string())
            })
            .unwrap();
            assert_eq!(report.outcome, Outcome::Exited(0));
            assert_eq!(report.output.trim(), "1000");
        }

        #[test]
        fn peak_rss_counts_the_touched_memory() {
            let _turn = one_at_a_time();
            let report = run(data(128 * MIB), SECOND, |_| {
                let len = 64 << 20;
                let ptr = map(len, libc::PROT_READ | libc::PROT_WRITE)?;
                // SAFETY: a fresh read-write mapping of `len` bytes.
                unsafe { std::ptr::write_bytes(ptr, 7, len) };
                Ok(())
            })
            .unwrap();
            assert_eq!(report.outcome, Outcome::Exited(0));
            // At least the 64 MiB touched; at most that plus what the child
            // shares with the parent (the test harness), which stays small.
            let peak = report.peak_rss;
            assert!((64 * MIB..=(64 + 64) * MIB).contains(&peak), "{peak}");
        }

        // ANCHOR: reservation_test
        /// A PROT_NONE reservation counts against RLIMIT_AS but not against
        /// RLIMIT_DATA, which counts only writable private memory. Making part
        /// of it writable with mprotect is charged to RLIMIT_DATA.
        #[test]
        fn a_reservation_counts_against_rlimit_as_but_not_rlimit_data() {
            let _turn = one_at_a_time();
            let reserve_1_gib = |_: &mut Link| map(1 << 30, libc::PROT_NONE).map(drop);
            let under_data = run(data(64 * MIB), SECOND, reserve_1_gib).unwrap();
            assert_eq!(under_data.outcome, Outcome::Exited(0), "{under_data:?}");

            let address_space = Some(MemoryLimit {
                resource: Resource::AddressSpace,
                soft: 64 * MIB,
                hard: None,
                above_current: true,
            });
            let under_as = run(address_space, SECOND, reserve_1_gib).unwrap();
            assert_eq!(under_as.outcome, Outcome::Exited(1), "{under_as:?}");
            assert!(under_as.output.contains("Cannot allocate memory"));

            let commit = run(data(64 * MIB), SECOND, |_| {
                let ptr = map(1 << 30, libc::PROT_NONE)?;
                commit(ptr, 32 << 20)?; // fits under 64 MiB
                commit(ptr, 128 << 20) // does not
            })
            .unwrap();
            assert_eq!(commit.outcome, Outcome::Exited(1), "{commit:?}");
            assert!(commit.output.contains("mprotect of 128 MiB"), "{commit:?}");
        }
        // ANCHOR_END: reservation_test

        #[test]
        fn a_parent_can_raise_the_soft_limit_but_not_the_hard_one() {
            let _turn = one_at_a_time();
            let limit = Some(MemoryLimit {
                resource: Resource::Data,
                soft: 16 * MIB,
                hard: Some(64 * MIB),
                above_current: true,
            });
            let mut child = spawn(limit, 5 * SECOND, |link| {
                let try_map = |mib: usize| map(mib << 20, libc::PROT_READ | libc::PROT_WRITE);
                let first = try_map(32).is_ok();
                link.say(&format!("first {first}"))
                    .map_err(|e| e.to_string())?;
                link.hear().map_err(|e| e.to_string())?;
                let second = try_map(32).is_ok();
                link.say(&format!("second {second}"))
                    .map_err(|e| e.to_string())
            })
            .unwrap();
            assert_eq!(child.listen().unwrap(), "first false");
            let old = get_limit(child.pid(), Resource::Data).unwrap();
            let raised = libc::rlimit {
                rlim_cur: old.rlim_max,
                rlim_max: old.rlim_max,
            };
            set_limit(child.pid(), Resource::Data, &raised).unwrap();
            let past_hard = libc::rlimit {
                rlim_cur: old.rlim_max + MIB,
                rlim_max: old.rlim_max + MIB,
            };
            let err = set_limit(child.pid(), Resource::Data, &past_hard);
            if !has_cap_sys_resource() {
                let errno = err.expect_err("raising a hard limit").raw_os_error();
                assert_eq!(errno, Some(libc::EPERM));
            }
            child.tell("go").unwrap();
            assert_eq!(child.listen().unwrap(), "second true");
            assert_eq!(child.wait().unwrap().outcome, Outcome::Exited(0));
        }

        /// The capability's number, from linux/capability.h.
        const CAP_SYS_RESOURCE: u32 = 24;

        fn has_cap_sys_resource() -> bool {
            let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
            status
                .lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
                .is_some_and(|caps| caps & (1 << CAP_SYS_RESOURCE) != 0)
        }

        #[test]
        fn a_command_runs_bounded() {
            let _turn = one_at_a_time();
            let sh = |script: &str| {
                let mut c = std::process::Command::new("/bin/sh");
                c.args(["-c", script]);
                c
            };
            let limit = Some(MemoryLimit {
                resource: Resource::Data,
                soft: 256 * MIB,
                hard: None,
                above_current: false,
            });
            let report = run_command(&mut sh("exit 3"), limit, SECOND).unwrap();
            assert_eq!(report.outcome, Outcome::Exited(3));
            let report = run_command(&mut sh("kill -9 $$"), None, SECOND).unwrap();
            assert_eq!(report.outcome, Outcome::Killed { signal: 9 });
            let report = run_command(&mut sh("sleep 30"), None, Duration::from_millis(100));
            assert_eq!(report.unwrap().outcome, Outcome::TimedOut);
            let relative = data(MIB);
            assert!(run_command(&mut sh("true"), relative, SECOND).is_err());
        }
    }
}
