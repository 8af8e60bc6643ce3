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
    use super::linear_memory::{LinearMemory, WASM_PAGE};
    use super::memory_meter;
    use super::pressure;
    use super::remap_memory::{Growth, RemapMemory};
    use super::rlimit_child::{self, MemoryLimit, Outcome, Resource, Running};
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

    fn expect_exit_0(what: &str, report: &rlimit_child::Report) -> Result<(), String> {
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
        let data = rlimit_child::status_bytes("VmData:").map_err(io("VmData"))?;
        Ok(limit.rlim_cur.saturating_sub(data))
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

    // ---- upper_limit ----

    /// LISA `verify_dynamic_memory_upper_limit`: under stress, assigned
    /// memory reaches the configured maximum (within 128 MB). Here: under a
    /// 64 MiB RLIMIT_DATA allowance, `memory.grow` stops with -1 less than
    /// one 64 KiB step below the cap, and every byte written before is
    /// intact. Run for `Remap` (mremap growth is charged) and `Reserved`
    /// (the PROT_NONE reservation is free; each mprotect commit is charged).
    fn upper_limit() -> CaseResult {
        let mut detail = Vec::new();
        let strategies = [("Remap", false), ("Reserved", true)];
        for (name, strategy) in strategies {
            let report = rlimit_child::run(data_limit(64 * MIB, None), BOUND, move |link| {
                let pattern = Pattern::new();
                let mut memory = new_memory(strategy)?;
                let pages = grow_until_refused(memory.as_mut(), &pattern)?;
                let line = format!("pages={pages} headroom={}", headroom()?);
                link.say(&line)
            })
            .map_err(io("fork"))?;
            expect_exit_0(name, &report)?;
            let line = report.output.trim();
            let (pages, room) = (field(line, "pages")?, field(line, "headroom")?);
            let size = pages * STEP;
            ensure(room < STEP, || {
                format!(
                    "{name}: refused with {} KiB still free under the cap",
                    room / KIB
                )
            })?;
            // The rest of the 64 MiB went to the child's heap and stack.
            ensure(size >= 60 * MIB, || {
                format!("{name}: only {} by the cap", mib(size))
            })?;
            detail.push(format!(
                "{name}: grew to {pages} pages ({}) under a 64 MiB allowance; -1 with {} KiB \
                 left (< one 64 KiB step); every byte intact; child peak RSS {}",
                mib(size),
                room / KIB,
                mib(report.peak_rss)
            ));
        }
        Ok(Verdict::Passed(detail.join("\n")))
    }

    // ---- hot_add ----

    /// LISA `verify_dynamic_memory_hot_add`: stress makes the host add
    /// memory. Here the host (this parent) raises the child's soft limit
    /// from 32 to 64 MiB at run time, within the hard limit; the grow that
    /// was refused now succeeds, and the data is intact.
    fn hot_add() -> CaseResult {
        let limit = data_limit(32 * MIB, Some(64 * MIB));
        let (mut host, mut guest) = talk::channel().map_err(io("pipe"))?;
        let host_fds = host.fds();
        let child = rlimit_child::spawn(limit, BOUND, move |_| {
            Ends::close_in_child(host_fds);
            let pattern = Pattern::new();
            let mut memory = new_memory(false)?;
            let first = grow_until_refused(memory.as_mut(), &pattern)?;
            guest.say(&format!("pages={first} headroom={}", headroom()?))?;
            guest.hear(BOUND)?; // the host added memory
            let old = memory.grow(1);
            ensure(old == first as i32, || {
                format!("the grow after the hot add returned {old}")
            })?;
            let offset = u64::from(first) * STEP;
            memory
                .write(offset, pattern.page(first))
                .map_err(|e| e.to_string())?;
            let second = grow_until_refused(memory.as_mut(), &pattern)?;
            guest.say(&format!("pages={second} headroom={}", headroom()?))
        })
        .map_err(io("fork"))?;

        let line = host.hear(STEP_TIMEOUT)?;
        let (first, room1) = (field(&line, "pages")?, field(&line, "headroom")?);
        let pid = child.pid();
        let old = rlimit_child::get_limit(pid, Resource::Data).map_err(io("prlimit"))?;
        let raised = libc::rlimit {
            rlim_cur: old.rlim_max,
            rlim_max: old.rlim_max,
        };
        rlimit_child::set_limit(pid, Resource::Data, &raised)
            .map_err(io("raise the soft limit"))?;
        // Past the hard limit needs CAP_SYS_RESOURCE.
        let past = libc::rlimit {
            rlim_cur: old.rlim_max + MIB,
            rlim_max: old.rlim_max + MIB,
        };
        let hard = match rlimit_child::set_limit(pid, Resource::Data, &past) {
            Ok(()) => "raising the hard limit too was allowed (CAP_SYS_RESOURCE)".to_string(),
            Err(e) => format!("raising the hard limit was refused: {e}"),
        };
        host.say("added")?;
        let line = host.hear(STEP_TIMEOUT)?;
        let (second, room2) = (field(&line, "pages")?, field(&line, "headroom")?);
        let report = child.wait().map_err(io("wait"))?;
        expect_exit_0("hot_add", &report)?;

        ensure(room1 < STEP && room2 < STEP, || {
            format!(
                "refused with {} and {} KiB still free",
                room1 / KIB,
                room2 / KIB
            )
        })?;
        let added = (second - first) * STEP;
        ensure(values_close(added, 32 * MIB, 3), || {
            format!(
                "grew {} after the hot add, not 32 MiB within 3%",
                mib(added)
            )
        })?;
        Ok(Verdict::Passed(format!(
            "refused at {} ({} KiB left); host raised the soft limit by 32 MiB; the refused \
             grow succeeded and growth went on to {} ({} KiB left): +{} (32 MiB within 3%); \
             every byte intact; {hard}",
            mib(first * STEP),
            room1 / KIB,
            mib(second * STEP),
            room2 / KIB,
            mib(added)
        )))
    }

    // ---- balloon_up and balloon_down ----

    /// The VM: a memory cgroup of this size holds guest and balloon.
    const VM: u64 = 256 * MIB;
    /// What the guest grows to before the balloon, in pages: 64 MiB.
    const WORKING_SET: u32 = 1024;
    /// What the balloon takes.
    const BALLOON: u64 = 96 * MIB;
    /// What the host keeps free in the VM when it sizes the guest's
    /// allowance, for page tables and the children's own small heaps, so
    /// that the VM never reaches its limit (where the kernel would OOM-kill
    /// inside it).
    const SLACK: u64 = 16 * MIB;

    /// The guest: joins the VM, grows to its working set, then, each time
    /// the host says `grow`, grows until its allowance refuses it and
    /// reports where it stopped and how much `VmData` it has.
    fn guest(procs: &Path, host_fds: [RawFd; 2], mut host: Ends) -> Result<(), String> {
        Ends::close_in_child(host_fds);
        vm::join(procs)?;
        let pattern = Pattern::new();
        let mut memory = new_memory(false)?;
        grow_filled(memory.as_mut(), &pattern, WORKING_SET)?;
        let data = rlimit_child::status_bytes("VmData:").map_err(io("VmData"))?;
        host.say(&format!("pages={WORKING_SET} data={data}"))?;
        while host.hear(BOUND)? == "grow" {
            let pages = grow_until_refused(memory.as_mut(), &pattern)?;
            let data = rlimit_child::status_bytes("VmData:").map_err(io("VmData"))?;
            host.say(&format!(
                "pages={pages} headroom={} data={data}",
                headroom()?
            ))?;
        }
        Ok(())
    }

    /// The balloon: joins the VM, takes `BALLOON` bytes of real memory on
    /// `take`, releases them on `release`, and ends on `exit`.
    fn balloon(procs: &Path, host_fds: [RawFd; 2], mut host: Ends) -> Result<(), String> {
        Ends::close_in_child(host_fds);
        vm::join(procs)?;
        let method = pressure::choose(pressure::Touch::Auto)?;
        let mut generator = pressure::Generator::new(method).map_err(|e| e.to_string())?;
        host.say("ready")?;
        loop {
            match host.hear(BOUND)?.as_str() {
                "take" => {
                    generator
                        .take(BALLOON as usize, &mut |_| {})
                        .map_err(io("take"))?;
                    host.say("took")?;
                }
                "release" => {
                    generator.release_all().map_err(io("release"))?;
                    host.say("released")?;
                }
                "exit" => return Ok(()),
                other => return Err(format!("unknown command {other:?}")),
            }
        }
    }

    /// A child of the VM, and the host's end of its channel.
    struct Member {
        child: Running,
        host: Ends,
    }

    fn start(
        cgroup: &CgroupGuard,
        limit: Option<MemoryLimit>,
        body: fn(&Path, [RawFd; 2], Ends) -> Result<(), String>,
    ) -> Result<Member, String> {
        let (host, child_side) = talk::channel().map_err(io("pipe"))?;
        let (procs, host_fds) = (cgroup.procs(), host.fds());
        let child = rlimit_child::spawn(limit, BOUND, move |_| body(&procs, host_fds, child_side))
            .map_err(io("fork"))?;
        Ok(Member { child, host })
    }

    /// The host sizes the guest's allowance from the VM's free memory, as
    /// the cgroup counts it: what the guest has now, plus what is free,
    /// less the slack.
    fn size_guest(vm: &CgroupGuard, guest: &Member, data: u64) -> Result<u64, String> {
        let free = vm.limit()?.saturating_sub(vm.usage()?);
        let allowance = data + free.saturating_sub(SLACK);
        let pid = guest.child.pid();
        let old = rlimit_child::get_limit(pid, Resource::Data).map_err(io("prlimit"))?;
        let new = libc::rlimit {
            rlim_cur: allowance,
            rlim_max: old.rlim_max,
        };
        rlimit_child::set_limit(pid, Resource::Data, &new).map_err(io("size the guest"))?;
        Ok(free)
    }

    /// A guest and an inflated balloon in one VM, as `balloon_up` leaves
    /// them.
    struct Inflated {
        vm: CgroupGuard,
        guest: Member,
        balloon: Member,
        /// The VM's usage before and after the balloon took its memory.
        vm_usage: (u64, u64),
        /// What was free in the VM when the host sized the guest.
        free: u64,
        /// The guest's size when its allowance refused it, its headroom
        /// then, and its `VmData`.
        refused_at: u64,
        headroom: u64,
        data: u64,
        psi: String,
    }

    /// Host pressure: the balloon takes 96 MiB inside the VM; the host
    /// sizes the guest to what is left; the guest grows until refused.
    fn inflate() -> Result<Result<Inflated, String>, String> {
        let vm = match vm::create("dynamic-memory-vm", VM)? {
            Ok(vm) => vm,
            Err(vm::NoCgroup(why)) => return Ok(Err(why)),
        };
        // RLIMIT_DATA far above the VM: the cgroup is the bound until the
        // host sizes the guest.
        let mut guest = start(&vm, data_limit(2 * VM, None), guest)?;
        let line = guest.host.hear(STEP_TIMEOUT)?;
        field(&line, "data")?;
        let mut balloon = start(&vm, data_limit(BALLOON + 32 * MIB, None), balloon)?;
        balloon.host.hear(STEP_TIMEOUT)?;
        let psi_before = memory_meter::pressure();
        let before = vm.usage()?;
        balloon.host.say("take")?;
        balloon.host.hear(STEP_TIMEOUT)?;
        let after = vm.usage()?;
        let psi = psi_delta(&psi_before, &memory_meter::pressure());
        let free = size_guest(&vm, &guest, field(&line, "data")?)?;
        guest.host.say("grow")?;
        let line = guest.host.hear(STEP_TIMEOUT)?;
        Ok(Ok(Inflated {
            refused_at: field(&line, "pages")? * STEP,
            headroom: field(&line, "headroom")?,
            data: field(&line, "data")?,
            vm,
            guest,
            balloon,
            vm_usage: (before, after),
            free,
            psi,
        }))
    }

    fn psi_delta(
        before: &memory_meter::Reading<memory_meter::Pressure>,
        after: &memory_meter::Reading<memory_meter::Pressure>,
    ) -> String {
        match (before, after) {
            (Ok(b), Ok(a)) => format!(
                "PSI memory some +{} µs, full +{} µs (system-wide, reported only)",
                a.value.some.total_us.saturating_sub(b.value.some.total_us),
                a.value.full.total_us.saturating_sub(b.value.full.total_us)
            ),
            (Err(why), _) | (_, Err(why)) => format!("PSI unavailable: {why}"),
        }
    }

    /// Checks what every balloon case checks: the VM never reached its
    /// limit, nobody in it was OOM-killed, and both children exit cleanly.
    fn finish(state: Inflated) -> Result<String, String> {
        let Inflated {
            vm,
            mut guest,
            mut balloon,
            ..
        } = state;
        let usage = vm.usage()?;
        let kills = vm.oom_kills()?;
        guest.host.say("exit")?;
        balloon.host.say("exit")?;
        expect_exit_0("guest", &guest.child.wait().map_err(io("wait"))?)?;
        expect_exit_0("balloon", &balloon.child.wait().map_err(io("wait"))?)?;
        ensure(usage < VM && kills == 0, || {
            format!(
                "the VM used {} of {} and saw {kills} OOM kills",
                mib(usage),
                mib(VM)
            )
        })?;
        Ok(format!(
            "VM {}: {} used of {}, oom_kill 0 ({}, {})",
            vm.name,
            mib(usage),
            mib(VM),
            vm.oom_file(),
            vm.version()
        ))
    }

    /// LISA `verify_dynamic_memory_balloon_up`: host pressure inflates the
    /// balloon, and the VM's memory left to the guest falls.
    fn balloon_up() -> CaseResult {
        let state = match inflate()? {
            Ok(state) => state,
            Err(why) => return Ok(Verdict::Skipped(why)),
        };
        let (before, after) = state.vm_usage;
        let rise = after.saturating_sub(before);
        ensure(values_close(rise, BALLOON, 3), || {
            format!("the VM's usage rose {}, not 96 MiB within 3%", mib(rise))
        })?;
        ensure(state.headroom < STEP, || {
            format!(
                "the guest was refused with {} KiB free",
                state.headroom / KIB
            )
        })?;
        // The guest's VmData may exceed what it touched by a little (its
        // heap); what it grew past its working set must fit what was free.
        let grown = state.refused_at - u64::from(WORKING_SET) * STEP;
        let expected = state.free.saturating_sub(SLACK);
        ensure(values_close(grown, expected, 3), || {
            format!(
                "the guest grew {} after the balloon, not the {} the VM had left within 3%",
                mib(grown),
                mib(expected)
            )
        })?;
        let detail = format!(
            "the balloon took 96 MiB in the VM: its usage {} -> {} (+96 MiB within 3%); the \
             host sized the guest to the {} left (less {} slack); the guest grew from 64 MiB \
             by {} and was refused at {} ({} KiB left), no crash, bytes intact\n{}",
            mib(before),
            mib(after),
            mib(state.free),
            mib(SLACK),
            mib(grown),
            mib(state.refused_at),
            state.headroom / KIB,
            state.psi
        );
        let end = finish(state)?;
        Ok(Verdict::Passed(format!("{detail}\n{end}")))
    }

    /// LISA `verify_dynamic_memory_balloon_down`: the balloon deflates and
    /// the guest's memory grows again. Here the balloon releases its 96 MiB
    /// (the VM's usage falls by that, within 3%), the host sizes the guest
    /// to the VM's free memory again, and the guest's growth resumes.
    fn balloon_down() -> CaseResult {
        let mut state = match inflate()? {
            Ok(state) => state,
            Err(why) => return Ok(Verdict::Skipped(why)),
        };
        let before = state.vm.usage()?;
        state.balloon.host.say("release")?;
        state.balloon.host.hear(STEP_TIMEOUT)?;
        let released = state.vm.usage()?;
        let fall = before.saturating_sub(released);
        ensure(values_close(fall, BALLOON, 3), || {
            format!("the VM's usage fell {}, not 96 MiB within 3%", mib(fall))
        })?;
        let free = size_guest(&state.vm, &state.guest, state.data)?;
        state.guest.host.say("grow")?;
        let line = state.guest.host.hear(STEP_TIMEOUT)?;
        let (pages, room) = (field(&line, "pages")?, field(&line, "headroom")?);
        let resumed = pages * STEP - state.refused_at;
        ensure(room < STEP, || {
            format!("refused with {} KiB free", room / KIB)
        })?;
        ensure(values_close(resumed, BALLOON, 3), || {
            format!("growth resumed by {}, not 96 MiB within 3%", mib(resumed))
        })?;
        let detail = format!(
            "the balloon released its memory: the VM's usage {} -> {} (-96 MiB within 3%); \
             the host sized the guest to the {} free (less {} slack); the guest grew from {} \
             to {} (+96 MiB within 3%, {} KiB left), bytes intact",
            mib(before),
            mib(released),
            mib(free),
            mib(SLACK),
            mib(state.refused_at),
            mib(pages * STEP),
            room / KIB,
        );
        let end = finish(state)?;
        Ok(Verdict::Passed(format!("{detail}\n{end}")))
    }

    // ---- lower_limit ----

    /// LISA `verify_dynamic_memory_lower_limit`: under host pressure,
    /// assigned memory falls to the configured minimum. Here: of a 64 MiB
    /// memory, 48 MiB are no longer in use; MADV_DONTNEED on them drops RSS
    /// by 48 MiB (within 3%), and the live 16 MiB are untouched: every page
    /// resident (mincore, exact) and every byte intact.
    ///
    /// The child reports its progress as it grows; the parent waits at most
    /// `STEP_TIMEOUT` for each report, so a loaded machine slows the case
    /// without failing it, and a stuck child still ends it.
    fn lower_limit() -> CaseResult {
        let (mut host, mut child_side) = talk::channel().map_err(io("pipe"))?;
        let host_fds = host.fds();
        let child = rlimit_child::spawn(data_limit(128 * MIB, None), BOUND, move |_| {
            Ends::close_in_child(host_fds);
            let pattern = Pattern::new();
            let mut memory = new_memory(false)?;
            for part in 0..8 {
                grow_filled_from(memory.as_mut(), &pattern, part * 128, 128)?;
                child_side.say(&format!("grown={}", (part + 1) * 128))?;
            }
            let live = 16 << 20;
            let rss = || memory_meter::rss(None).map(|r| r.value);
            let before = rss()?;
            pressure::release(&mut memory.as_mut_slice()[live..]).map_err(io("MADV_DONTNEED"))?;
            let after = rss()?;
            let page = pressure::page_size().map_err(io("page size"))?;
            let resident = |r: &[u8]| memory_meter::resident_pages(r, page).map_err(io("mincore"));
            let live_resident = resident(&memory.as_slice()[..live])?;
            let idle_resident = resident(&memory.as_slice()[live..])?;
            child_side.say("measured")?;
            for p in 0..256 {
                let bytes = memory
                    .slice(u64::from(p) * STEP, WASM_PAGE)
                    .map_err(|e| e.to_string())?;
                ensure(bytes == pattern.page(p), || {
                    format!("live page {p} changed")
                })?;
            }
            let zero = memory.as_slice()[live..].iter().all(|&b| b == 0);
            child_side.say(&format!(
                "before={before} after={after} live={live_resident} idle={idle_resident} \
                 pages={} zero={}",
                live / page,
                u8::from(zero)
            ))
        })
        .map_err(io("fork"))?;
        let line = loop {
            let line = host.hear(STEP_TIMEOUT)?;
            if line.starts_with("before=") {
                break line;
            }
        };
        let report = child.wait().map_err(io("wait"))?;
        expect_exit_0("lower_limit", &report)?;
        let fall = field(&line, "before")?.saturating_sub(field(&line, "after")?);
        let (live, idle, pages) = (
            field(&line, "live")?,
            field(&line, "idle")?,
            field(&line, "pages")?,
        );
        ensure(values_close(fall, 48 * MIB, 3), || {
            format!("RSS fell {}, not 48 MiB within 3%", mib(fall))
        })?;
        ensure(live == pages && idle == 0, || {
            format!("resident: live {live} of {pages} pages, released {idle} (want all, 0)")
        })?;
        ensure(field(&line, "zero")? == 1, || {
            "released pages did not read back as zero".into()
        })?;
        Ok(Verdict::Passed(format!(
            "RSS {} -> {} (-48 MiB within 3%); live 16 MiB: {live} of {pages} pages resident, \
             bytes intact; released 48 MiB: 0 pages resident, reads as zero",
            mib(field(&line, "before")?),
            mib(field(&line, "after")?)
        )))
    }

    // ---- hugepages ----

    /// The THP mode (`always`, `madvise` or `never`), or why there is none.
    fn thp_mode() -> Result<String, String> {
        let path = "/sys/kernel/mm/transparent_hugepage/enabled";
        let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
        text.split_whitespace()
            .find_map(|w| w.strip_prefix('[')?.strip_suffix(']'))
            .map(str::to_owned)
            .ok_or_else(|| format!("{path}: no [mode] in {text:?}"))
    }

    /// In a child: map 8 MiB of 2 MiB-aligned memory with MADV_HUGEPAGE,
    /// touch it, and report AnonHugePages (smaps_rollup) before and after,
    /// then after MADV_DONTNEED, with RSS around the release.
    fn huge_pages_in_child() -> Result<(String, u64), String> {
        let mode = match thp_mode() {
            Ok(mode) if mode == "never" => return Err("THP is `never` on this host".into()),
            Ok(mode) => mode,
            Err(why) => return Err(format!("no transparent huge pages: {why}")),
        };
        let path = "/sys/kernel/mm/transparent_hugepage/hpage_pmd_size";
        let huge: u64 = std::fs::read_to_string(path)
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(2 * MIB);
        let report = rlimit_child::run(data_limit(64 * MIB, None), BOUND, move |link| {
            let len = (4 * huge) as usize;
            let mut map = memmap2::MmapOptions::new()
                .len(len + huge as usize)
                .map_anon()
                .map_err(io("mmap"))?;
            let skip = map.as_ptr().align_offset(huge as usize);
            let region = &mut map[skip..skip + len];
            // SAFETY: a range of our own private mapping; advice only.
            let rc = unsafe { libc::madvise(region.as_mut_ptr().cast(), len, libc::MADV_HUGEPAGE) };
            ensure(rc == 0, || {
                format!("MADV_HUGEPAGE: {}", std::io::Error::last_os_error())
            })?;
            let ahp = || memory_meter::anon_huge_pages(None).map(|r| r.value);
            let rss = || memory_meter::rss(None).map(|r| r.value);
            let before = ahp()?;
            let method = pressure::choose(pressure::Touch::Auto)?;
            let page = pressure::page_size().map_err(io("page size"))?;
            pressure::touch(region, method, page).map_err(io("touch"))?;
            let (touched, rss_touched) = (ahp()?, rss()?);
            pressure::release(region).map_err(io("MADV_DONTNEED"))?;
            let (released, rss_released) = (ahp()?, rss()?);
            link.say(&format!(
                "before={before} touched={touched} released={released} rss_touched={rss_touched} \
                 rss_released={rss_released} len={len}"
            ))
        })
        .map_err(io("fork"))?;
        expect_exit_0("huge pages", &report)?;
        Ok((format!("{} mode={mode}", report.output.trim()), huge))
    }

    /// LISA `verify_dynamic_memory_hot_add_hugepages`: AnonHugePages rises
    /// under huge page stress. Here: at least one huge page, at most the
    /// 8 MiB region, after touching a MADV_HUGEPAGE region.
    fn hugepages_hot_add() -> CaseResult {
        let (line, huge) = match huge_pages_in_child() {
            Ok(found) => found,
            Err(why) if is_thp_skip(&why) => return Ok(Verdict::Skipped(why)),
            Err(why) => return Err(why),
        };
        let rise = field(&line, "touched")?.saturating_sub(field(&line, "before")?);
        let len = field(&line, "len")?;
        ensure(rise >= huge && rise <= len, || {
            format!(
                "AnonHugePages rose {}, want {}..={}",
                mib(rise),
                mib(huge),
                mib(len)
            )
        })?;
        Ok(Verdict::Passed(format!(
            "AnonHugePages +{} after touching an {} MADV_HUGEPAGE region ({} huge pages of {}; \
             LISA asks only for a rise); THP {}",
            mib(rise),
            mib(len),
            rise / huge,
            mib(huge),
            line.rsplit("mode=").next().unwrap_or("?")
        )))
    }

    /// LISA `verify_dynamic_memory_balloon_down_hugepages`, turned around
    /// for one process: releasing the huge-page region gives every huge
    /// page back (AnonHugePages to where it was, exactly) and drops RSS by
    /// the region (within 3%).
    fn hugepages_balloon_down() -> CaseResult {
        let (line, _) = match huge_pages_in_child() {
            Ok(found) => found,
            Err(why) if is_thp_skip(&why) => return Ok(Verdict::Skipped(why)),
            Err(why) => return Err(why),
        };
        let (before, released) = (field(&line, "before")?, field(&line, "released")?);
        let fall = field(&line, "rss_touched")?.saturating_sub(field(&line, "rss_released")?);
        let len = field(&line, "len")?;
        ensure(released == before, || {
            format!(
                "AnonHugePages {} after the release, {} before",
                mib(released),
                mib(before)
            )
        })?;
        ensure(values_close(fall, len, 3), || {
            format!("RSS fell {}, not {} within 3%", mib(fall), mib(len))
        })?;
        Ok(Verdict::Passed(format!(
            "MADV_DONTNEED on the {} huge-page region: AnonHugePages back to {} (exact), \
             RSS -{} (within 3%)",
            mib(len),
            mib(before),
            mib(fall)
        )))
    }

    fn is_thp_skip(why: &str) -> bool {
        why.starts_with("THP is `never`") || why.starts_with("no transparent huge pages")
    }

    // ---- cgroup_oom ----

    /// No LISA counterpart: the kernel selftest `test_memcg_oom_events`
    /// (tools/testing/selftests/cgroup/test_memcontrol.c), for either cgroup
    /// version. A child that touches 64 MiB in a 32 MiB memory cgroup is
    /// killed by the OOM killer inside that cgroup (SIGKILL), and the
    /// cgroup's `oom_kill` counter goes from 0 to 1. It is what would happen
    /// to a guest that ignored the balloon.
    fn cgroup_oom() -> CaseResult {
        let guard = match vm::create("dynamic-memory-oom", 32 * MIB)? {
            Ok(guard) => guard,
            Err(vm::NoCgroup(why)) => return Ok(Verdict::Skipped(why)),
        };
        let kills_before = guard.oom_kills()?;
        let procs = guard.procs();
        let report = rlimit_child::run(data_limit(256 * MIB, None), BOUND, move |_| {
            vm::join(&procs)?;
            let len = 64 << 20;
            let mut map = memmap2::MmapOptions::new()
                .len(len)
                .map_anon()
                .map_err(io("mmap"))?;
            let page = pressure::page_size().map_err(io("page size"))?;
            for offset in (0..len).step_by(page) {
                map[offset] = 1; // one of these faults is the one the OOM killer ends
            }
            Err("touched 64 MiB in a 32 MiB cgroup and was not killed".into())
        })
        .map_err(io("fork"))?;
        let kills = guard.oom_kills()?;
        let peak = guard.cgroup.peak().ok().and_then(|r| r.value);
        let sigkill = Outcome::Killed {
            signal: libc::SIGKILL,
        };
        ensure(report.outcome == sigkill, || {
            format!("the child {} ({})", report.outcome, report.output.trim())
        })?;
        ensure(kills == kills_before + 1, || {
            format!(
                "oom_kill went {kills_before} -> {kills} in {}",
                guard.oom_file()
            )
        })?;
        Ok(Verdict::Passed(format!(
            "cgroup {} ({}), limit 32 MiB: the child was {}; oom_kill {kills_before} -> \
             {kills} ({}); cgroup peak {}; child peak RSS {}; the cgroup is removed on drop",
            guard.name,
            guard.version(),
            report.outcome,
            guard.oom_file(),
            peak.map_or("unavailable".into(), mib),
            mib(report.peak_rss)
        )))
    }
}
