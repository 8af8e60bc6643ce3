//! The tests of `examples/rlimit_child.rs`. The example forks, and a fork
//! is safe only from a single-threaded process (see `spawn`), so this suite
//! has its own `main` (`harness = false`) and runs every test on the main
//! thread, one after the other.
//!
//! Run: `cargo test --test rlimit_child`, or name tests to run only those.

#[cfg(target_os = "linux")]
#[path = "../../examples/rlimit_child.rs"]
#[allow(dead_code, unused_imports)]
mod rlimit_child;

#[cfg(target_os = "linux")]
#[path = "../dynamic_memory/talk.rs"]
#[allow(dead_code)]
mod talk;

#[cfg(not(target_os = "linux"))]
fn main() {
    println!("rlimit_child: 0 passed, 0 failed (rlimits and oom_score_adj are Linux only)");
}

#[cfg(target_os = "linux")]
fn main() -> std::process::ExitCode {
    tests::main()
}

#[cfg(target_os = "linux")]
mod tests {
    use super::rlimit_child::{
        commit, get_limit, map, run_command, set_limit, spawn, Link, MemoryLimit, Outcome, Report,
        Resource,
    };
    use super::talk;
    use std::process::{Command, ExitCode};
    use std::time::{Duration, Instant};

    const MIB: u64 = 1 << 20;
    const SECOND: Duration = Duration::from_secs(1);
    /// A generous bound for children that should end at once: a loaded
    /// machine may take a while to schedule them, and a test that waited
    /// too little would fail for no fault of the code.
    const BOUND: Duration = Duration::from_secs(30);
    const RW: libc::c_int = libc::PROT_READ | libc::PROT_WRITE;

    type Test = (&'static str, fn() -> Result<(), String>);

    const TESTS: [Test; 6] = [
        ("the_three_outcomes_are_told_apart", the_three_outcomes),
        ("the_child_runs_with_oom_score_adj_1000", oom_score_adj),
        ("peak_rss_counts_the_touched_memory", peak_rss),
        (
            "a_reservation_counts_against_rlimit_as_but_not_rlimit_data",
            reservation,
        ),
        (
            "a_parent_can_raise_the_soft_limit_but_not_the_hard_one",
            raise_soft_limit,
        ),
        ("a_command_runs_bounded", command),
    ];

    pub fn main() -> ExitCode {
        // Names on the command line pick tests; cargo's flags are ignored.
        let picked: Vec<String> = std::env::args()
            .skip(1)
            .filter(|a| !a.starts_with('-'))
            .collect();
        let (mut passed, mut failed) = (0, 0);
        for (name, test) in TESTS
            .iter()
            .filter(|(name, _)| picked.is_empty() || picked.iter().any(|p| name.contains(p)))
        {
            let started = Instant::now();
            let result = test();
            let secs = started.elapsed().as_secs_f64();
            match result {
                Ok(()) => {
                    passed += 1;
                    println!("{name:<62} ok      {secs:>5.2} s");
                }
                Err(why) => {
                    failed += 1;
                    println!("{name:<62} FAILED  {secs:>5.2} s\n    {why}");
                }
            }
        }
        println!("rlimit_child: {passed} passed, {failed} failed");
        if failed == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    }

    fn ensure(ok: bool, why: impl FnOnce() -> String) -> Result<(), String> {
        if ok {
            Ok(())
        } else {
            Err(why())
        }
    }

    fn data(soft: u64) -> Option<MemoryLimit> {
        Some(MemoryLimit {
            resource: Resource::Data,
            soft,
            hard: None,
            above_current: true,
        })
    }

    fn io(e: std::io::Error) -> String {
        e.to_string()
    }

    /// `spawn` and `wait` in one call.
    fn run<F>(limit: Option<MemoryLimit>, timeout: Duration, f: F) -> std::io::Result<Report>
    where
        F: FnOnce(&mut Link) -> Result<(), String>,
    {
        spawn(limit, timeout, f)?.wait()
    }

    fn the_three_outcomes() -> Result<(), String> {
        let ok = run(None, BOUND, |_| Ok(())).map_err(io)?;
        ensure(ok.outcome == Outcome::Exited(0), || format!("{ok:?}"))?;
        let err = run(None, BOUND, |_| Err("no".into())).map_err(io)?;
        ensure(err.outcome == Outcome::Exited(1), || format!("{err:?}"))?;
        ensure(err.output.trim() == "error: no", || format!("{err:?}"))?;
        let aborted = run(None, BOUND, |_| std::process::abort()).map_err(io)?;
        let sigabrt = Outcome::Killed {
            signal: libc::SIGABRT,
        };
        ensure(aborted.outcome == sigabrt, || format!("{aborted:?}"))?;
        let slow = run(None, Duration::from_millis(100), |_| {
            std::thread::sleep(Duration::from_secs(30));
            Ok(())
        })
        .map_err(io)?;
        ensure(slow.outcome == Outcome::TimedOut, || format!("{slow:?}"))?;
        // Killed at its deadline, long before the 30 s sleep would end.
        ensure(slow.elapsed < Duration::from_secs(25), || {
            format!("{slow:?}")
        })
    }

    fn oom_score_adj() -> Result<(), String> {
        let report = run(None, BOUND, |link| {
            let adj =
                std::fs::read_to_string("/proc/self/oom_score_adj").map_err(|e| e.to_string())?;
            link.say(adj.trim())
        })
        .map_err(io)?;
        ensure(report.outcome == Outcome::Exited(0), || {
            format!("{report:?}")
        })?;
        ensure(report.output.trim() == "1000", || format!("{report:?}"))
    }

    fn peak_rss() -> Result<(), String> {
        let report = run(data(128 * MIB), BOUND, |_| {
            let len = 64 << 20;
            let ptr = map(len, RW)?;
            // SAFETY: a fresh read-write mapping of `len` bytes.
            unsafe { std::ptr::write_bytes(ptr, 7, len) };
            Ok(())
        })
        .map_err(io)?;
        ensure(report.outcome == Outcome::Exited(0), || {
            format!("{report:?}")
        })?;
        // At least the 64 MiB touched; at most that plus what the child
        // shares with this small parent.
        let peak = report.peak_rss;
        ensure((64 * MIB..=(64 + 64) * MIB).contains(&peak), || {
            format!("peak RSS {peak}")
        })
    }

    /// A PROT_NONE reservation counts against RLIMIT_AS but not against
    /// RLIMIT_DATA, which counts only writable private memory. Making part
    /// of it writable with mprotect is charged to RLIMIT_DATA.
    fn reservation() -> Result<(), String> {
        let reserve_1_gib = |_: &mut Link| map(1 << 30, libc::PROT_NONE).map(drop);
        let under_data = run(data(64 * MIB), BOUND, reserve_1_gib).map_err(io)?;
        ensure(under_data.outcome == Outcome::Exited(0), || {
            format!("{under_data:?}")
        })?;
        let space = Some(MemoryLimit {
            resource: Resource::AddressSpace,
            soft: 64 * MIB,
            hard: None,
            above_current: true,
        });
        let under_as = run(space, BOUND, reserve_1_gib).map_err(io)?;
        ensure(under_as.outcome == Outcome::Exited(1), || {
            format!("{under_as:?}")
        })?;
        ensure(under_as.output.contains("Cannot allocate memory"), || {
            format!("{under_as:?}")
        })?;
        let map_128 = run(data(64 * MIB), BOUND, |_| map(128 << 20, RW).map(drop)).map_err(io)?;
        ensure(map_128.output.contains("mmap of 128 MiB"), || {
            format!("{map_128:?}")
        })?;
        let committed = run(data(64 * MIB), BOUND, |_| {
            let ptr = map(1 << 30, libc::PROT_NONE)?;
            commit(ptr, 32 << 20)?; // fits under 64 MiB
            commit(ptr, 128 << 20) // does not
        })
        .map_err(io)?;
        ensure(committed.outcome == Outcome::Exited(1), || {
            format!("{committed:?}")
        })?;
        ensure(committed.output.contains("mprotect of 128 MiB"), || {
            format!("{committed:?}")
        })
    }

    fn raise_soft_limit() -> Result<(), String> {
        let limit = Some(MemoryLimit {
            resource: Resource::Data,
            soft: 16 * MIB,
            hard: Some(64 * MIB),
            above_current: true,
        });
        let (mut parent, mut child_side) = talk::channel().map_err(io)?;
        let parent_fds = parent.fds();
        let child = spawn(limit, BOUND, move |_| {
            talk::Ends::close_in_child(parent_fds);
            let try_map = |mib: usize| map(mib << 20, RW).is_ok();
            child_side.say(&format!("first {}", try_map(32)))?;
            child_side.hear(BOUND)?;
            child_side.say(&format!("second {}", try_map(32)))
        })
        .map_err(io)?;
        let first = parent.hear(BOUND)?;
        ensure(first == "first false", || first.clone())?;
        let old = get_limit(child.pid(), Resource::Data).map_err(io)?;
        let raised = libc::rlimit {
            rlim_cur: old.rlim_max,
            rlim_max: old.rlim_max,
        };
        set_limit(child.pid(), Resource::Data, &raised).map_err(io)?;
        let past_hard = libc::rlimit {
            rlim_cur: old.rlim_max + MIB,
            rlim_max: old.rlim_max + MIB,
        };
        let err = set_limit(child.pid(), Resource::Data, &past_hard);
        if !has_cap_sys_resource() {
            let errno = err.err().and_then(|e| e.raw_os_error());
            ensure(errno == Some(libc::EPERM), || {
                format!("raising the hard limit: {errno:?}, not EPERM")
            })?;
        }
        parent.say("go")?;
        let second = parent.hear(BOUND)?;
        ensure(second == "second true", || second.clone())?;
        let report = child.wait().map_err(io)?;
        ensure(report.outcome == Outcome::Exited(0), || {
            format!("{report:?}")
        })
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

    fn command() -> Result<(), String> {
        let sh = |script: &str| {
            let mut c = Command::new("/bin/sh");
            c.args(["-c", script]);
            c
        };
        let limit = Some(MemoryLimit {
            resource: Resource::Data,
            soft: 256 * MIB,
            hard: None,
            above_current: false,
        });
        let report = run_command(&mut sh("exit 3"), limit, BOUND).map_err(io)?;
        ensure(report.outcome == Outcome::Exited(3), || {
            format!("{report:?}")
        })?;
        let report = run_command(&mut sh("kill -9 $$"), None, BOUND).map_err(io)?;
        let sigkill = Outcome::Killed { signal: 9 };
        ensure(report.outcome == sigkill, || format!("{report:?}"))?;
        let short = Duration::from_millis(100);
        let report = run_command(&mut sh("sleep 30"), None, short).map_err(io)?;
        ensure(report.outcome == Outcome::TimedOut, || {
            format!("{report:?}")
        })?;
        let relative = data(MIB);
        ensure(
            run_command(&mut sh("true"), relative, SECOND).is_err(),
            || "a relative limit for a command was accepted".into(),
        )
    }
}
