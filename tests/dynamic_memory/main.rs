//! The Part II suite on one host, without a VM: the eight tests of LISA's
//! Hyper-V dynamic memory suite (`lisa/microsoft/testsuites/hyperv/
//! dynamic_memory.py`), as an analogue. (The real one, with a QEMU guest
//! and a virtio balloon, is `tests/vm_dynamic_memory.rs`.)
//!
//! The "VM" of the balloon cases is a memory cgroup with a fixed limit
//! (`vm.rs`); the "guest" and the "balloon" are two children in it, so what
//! the balloon touches is charged to the guest's one limit. The "host" is
//! this parent: it reads the cgroup's free memory and sets the guest's
//! `RLIMIT_DATA` allowance to fit, with `prlimit`, so the guest's growth is
//! refused at `mmap` instead of OOM-killed at a page fault. The other cases
//! bound one child with `RLIMIT_DATA` alone.
//!
//! Every child runs with `oom_score_adj` 1000 and a memory limit, and the
//! parent waits a bounded time for each of its reports (`STEP_TIMEOUT`) and
//! for its whole run (`BOUND`). The suite forks, so it has its own
//! single-threaded `main`. A case that needs what the host lacks is SKIPPED
//! with its reason and the command that would provide it, and counted as
//! skipped, never as passed.
//!
//! Run: `cargo test --test dynamic_memory` (all cases), or name cases:
//! `cargo test --test dynamic_memory -- upper_limit cgroup_oom`.
//! Explained in src/part2-test-suite.md.

#[cfg(target_os = "linux")]
#[path = "../../examples/linear_memory.rs"]
#[allow(dead_code, unused_imports)]
mod linear_memory;

#[cfg(target_os = "linux")]
#[path = "../../examples/remap_memory.rs"]
#[allow(dead_code, unused_imports)]
mod remap_memory;

#[cfg(target_os = "linux")]
#[path = "../../examples/rlimit_child.rs"]
#[allow(dead_code, unused_imports)]
mod rlimit_child;

#[cfg(target_os = "linux")]
#[path = "../../examples/pressure.rs"]
#[allow(dead_code, unused_imports)]
mod pressure;

#[cfg(target_os = "linux")]
#[path = "../../examples/memory_meter.rs"]
#[allow(dead_code, unused_imports)]
mod memory_meter;

#[cfg(target_os = "linux")]
mod talk;

#[cfg(target_os = "linux")]
mod vm;

#[cfg(not(target_os = "linux"))]
fn main() {
    println!("dynamic_memory: 0 passed, 0 failed, 0 skipped (the suite runs on Linux only)");
}

#[cfg(target_os = "linux")]
fn main() -> std::process::ExitCode {
    suite::main()
}

#[cfg(target_os = "linux")]
mod suite {
    // The cases, one file each in suite/, beside the harness and the
    // helpers they share, which stay here.
    mod balloon;
    mod cgroup_oom;
    mod hugepages;
    mod limits;
    mod lower_limit;
    use balloon::{balloon_down, balloon_up};
    use cgroup_oom::cgroup_oom;
    use hugepages::{hugepages_balloon_down, hugepages_hot_add};
    use limits::{hot_add, upper_limit};
    use lower_limit::lower_limit;

    use super::linear_memory::{LinearMemory, WASM_PAGE};
    use super::memory_meter;
    use super::pressure;
    use super::remap_memory::{Growth, RemapMemory};
    use super::rlimit_child::{self, MemoryLimit, Outcome, Report, Resource, Running};
    use super::talk::{self, Ends};
    use super::vm::{self, CgroupGuard};
    use std::os::fd::RawFd;
    use std::panic::{catch_unwind, AssertUnwindSafe};
    use std::path::Path;
    use std::process::ExitCode;
    use std::time::{Duration, Instant};

    const MIB: u64 = 1 << 20;
    const KIB: u64 = 1 << 10;
    /// One `memory.grow` step: a WebAssembly page, 64 KiB.
    const STEP: u64 = WASM_PAGE as u64;
    /// The wall-clock bound of every child, from its start to its end.
    const BOUND: Duration = Duration::from_secs(120);
    /// How long the parent waits for a child's next report. A child that
    /// makes progress gets a new wait with each report; one that is stuck
    /// ends the case after this long, and `BOUND` caps the whole child.
    const STEP_TIMEOUT: Duration = Duration::from_secs(30);

    /// How a case ended. A skip carries its reason and is never a pass.
    enum Verdict {
        Passed(String),
        Skipped(String),
    }

    type CaseResult = Result<Verdict, String>;

    struct Case {
        name: &'static str,
        run: fn() -> CaseResult,
    }

    const CASES: [Case; 8] = [
        Case {
            name: "upper_limit",
            run: upper_limit,
        },
        Case {
            name: "hot_add",
            run: hot_add,
        },
        Case {
            name: "balloon_up",
            run: balloon_up,
        },
        Case {
            name: "balloon_down",
            run: balloon_down,
        },
        Case {
            name: "lower_limit",
            run: lower_limit,
        },
        Case {
            name: "hugepages_hot_add",
            run: hugepages_hot_add,
        },
        Case {
            name: "hugepages_balloon_down",
            run: hugepages_balloon_down,
        },
        Case {
            name: "cgroup_oom",
            run: cgroup_oom,
        },
    ];

    pub fn main() -> ExitCode {
        // Names on the command line pick cases; cargo's flags are ignored.
        let picked: Vec<String> = std::env::args()
            .skip(1)
            .filter(|a| !a.starts_with('-'))
            .collect();
        println!(
            "dynamic_memory: LISA's dynamic memory tests, on one host without a VM; every child \
             bounded by RLIMIT_DATA, oom_score_adj 1000, {} s per report and {} s in all",
            STEP_TIMEOUT.as_secs(),
            BOUND.as_secs()
        );
        let started = Instant::now();
        let (mut passed, mut failed, mut skipped) = (0, 0, 0);
        for case in CASES
            .iter()
            .filter(|c| picked.is_empty() || picked.iter().any(|p| p == c.name))
        {
            let t = Instant::now();
            // A panic in a case is a failure of that case; the next one runs.
            let verdict = catch_unwind(AssertUnwindSafe(case.run))
                .unwrap_or_else(|panic| Err(format!("panicked: {}", panic_text(&panic))));
            let (word, detail) = match verdict {
                Ok(Verdict::Passed(detail)) => {
                    passed += 1;
                    ("passed", detail)
                }
                Ok(Verdict::Skipped(why)) => {
                    skipped += 1;
                    ("SKIPPED", why)
                }
                Err(why) => {
                    failed += 1;
                    ("FAILED", why)
                }
            };
            println!(
                "{:<24} {word:<8} {:>5.2} s",
                case.name,
                t.elapsed().as_secs_f64()
            );
            for line in detail.lines() {
                println!("    {line}");
            }
        }
        println!(
            "dynamic_memory: {passed} passed, {failed} failed, {skipped} skipped in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        if failed > 0 {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        }
    }

    fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
        panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "(no message)".into())
    }

    /// Fails the case with `why` unless `ok`.
    fn ensure(ok: bool, why: impl FnOnce() -> String) -> Result<(), String> {
        if ok {
            Ok(())
        } else {
            Err(why())
        }
    }

    /// The kernel cgroup selftests' tolerance (`values_close` in
    /// tools/testing/selftests/cgroup): `a` and `b` differ by at most
    /// `err` percent of their sum.
    fn values_close(a: u64, b: u64, err: u64) -> bool {
        a.abs_diff(b) <= (a + b) / 100 * err
    }

    fn mib(bytes: u64) -> String {
        format!("{:.1} MiB", bytes as f64 / MIB as f64)
    }

    fn data_limit(soft: u64, hard: Option<u64>) -> Option<MemoryLimit> {
        Some(MemoryLimit {
            resource: Resource::Data,
            soft,
            hard,
            above_current: true,
        })
    }

    /// `rlimit_child::spawn`, then `wait`: a child that need not be talked to.
    fn run_bounded<F>(limit: Option<MemoryLimit>, bound: Duration, f: F) -> std::io::Result<Report>
    where
        F: FnOnce(&mut rlimit_child::Link) -> Result<(), String>,
    {
        rlimit_child::spawn(limit, bound, f)?.wait()
    }

    fn expect_exit_0(what: &str, report: &Report) -> Result<(), String> {
        ensure(report.outcome == Outcome::Exited(0), || {
            format!("{what}: {} ({})", report.outcome, report.output.trim())
        })
    }

    fn io(what: &str) -> impl FnOnce(std::io::Error) -> String + '_ {
        move |e| format!("{what}: {e}")
    }

    /// Parses `key=value` words of a child's line.
    fn field(line: &str, key: &str) -> Result<u64, String> {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("no {key}= in the child's line {line:?}"))
    }

    // ---- The grower: a LinearMemory that grows until the OS refuses ----

    /// Page `p` of a memory holds this pattern, different for each page.
    struct Pattern(Vec<u8>);

    impl Pattern {
        fn new() -> Pattern {
            Pattern((0..WASM_PAGE + 251).map(|i| (i % 251) as u8).collect())
        }

        fn page(&self, p: u32) -> &[u8] {
            let start = (p as usize * 131) % 251;
            &self.0[start..start + WASM_PAGE]
        }
    }

    /// `memory.grow(1)` until it returns -1, filling each new page. Checks
    /// that the refused grow left the size alone and that every byte
    /// written so far is intact. Returns the size in pages.
    fn grow_until_refused(memory: &mut dyn Grower, pattern: &Pattern) -> Result<u32, String> {
        loop {
            let before = memory.size();
            let old = memory.grow(1);
            if old == -1 {
                ensure(memory.size() == before, || {
                    "a refused grow changed the size".into()
                })?;
                verify(memory, pattern)?;
                return Ok(before);
            }
            let page = old as u32;
            let offset = u64::from(page) * STEP;
            memory
                .write(offset, pattern.page(page))
                .map_err(|e| e.to_string())?;
        }
    }

    /// Every page still holds its pattern (compared with memcmp).
    fn verify(memory: &dyn Grower, pattern: &Pattern) -> Result<(), String> {
        for p in 0..memory.size() {
            let bytes = memory
                .slice(u64::from(p) * STEP, WASM_PAGE)
                .map_err(|e| e.to_string())?;
            ensure(bytes == pattern.page(p), || format!("page {p} changed"))?;
        }
        Ok(())
    }

    /// How far this process is below its RLIMIT_DATA soft limit, in bytes.
    /// `VmData` is exactly what the kernel checks against the limit.
    fn headroom() -> Result<u64, String> {
        let limit = rlimit_child::get_limit(0, Resource::Data).map_err(io("getrlimit"))?;
        Ok(limit.rlim_cur.saturating_sub(vm_data()?))
    }

    /// This process's `VmData` from `/proc/self/status`, in bytes.
    fn vm_data() -> Result<u64, String> {
        let path = "/proc/self/status";
        let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
        rlimit_child::kib_field(&text, "VmData:").ok_or(format!("{path}: no VmData line"))
    }

    /// Part I's two memories, as the cases use them.
    trait Grower {
        fn grow(&mut self, delta: u32) -> i32;
        fn size(&self) -> u32;
        fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), String>;
        fn slice(&self, offset: u64, len: usize) -> Result<&[u8], String>;
        fn as_slice(&self) -> &[u8];
        fn as_mut_slice(&mut self) -> &mut [u8];
    }

    macro_rules! grower {
        ($memory:ty) => {
            impl Grower for $memory {
                fn grow(&mut self, delta: u32) -> i32 {
                    <$memory>::grow(self, delta)
                }
                fn size(&self) -> u32 {
                    <$memory>::size(self)
                }
                fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), String> {
                    <$memory>::write(self, offset, data).map_err(|e| format!("{e:?}"))
                }
                fn slice(&self, offset: u64, len: usize) -> Result<&[u8], String> {
                    <$memory>::slice(self, offset, len).map_err(|e| format!("{e:?}"))
                }
                fn as_slice(&self) -> &[u8] {
                    <$memory>::as_slice(self)
                }
                fn as_mut_slice(&mut self) -> &mut [u8] {
                    <$memory>::as_mut_slice(self)
                }
            }
        };
    }
    grower!(LinearMemory);
    grower!(RemapMemory);

    fn new_memory(reserved: bool) -> Result<Box<dyn Grower>, String> {
        Ok(match reserved {
            true => Box::new(LinearMemory::new(0, None, None).map_err(|e| format!("{e:?}"))?),
            false => {
                Box::new(RemapMemory::new(0, None, Growth::Remap).map_err(|e| format!("{e:?}"))?)
            }
        })
    }

    /// Grows an empty memory one step at a time to `pages`, writing each
    /// step's pattern as it goes.
    fn grow_filled(memory: &mut dyn Grower, pattern: &Pattern, pages: u32) -> Result<(), String> {
        grow_filled_from(memory, pattern, 0, pages)
    }

    /// Grows a memory of `from` pages by `pages` more, one step at a time.
    fn grow_filled_from(
        memory: &mut dyn Grower,
        pattern: &Pattern,
        from: u32,
        pages: u32,
    ) -> Result<(), String> {
        for page in from..from + pages {
            ensure(memory.grow(1) == page as i32, || {
                format!("grow {page} refused")
            })?;
            let offset = u64::from(page) * STEP;
            memory
                .write(offset, pattern.page(page))
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}
