//! The Part II suite: the eight tests of LISA's Hyper-V dynamic memory suite
//! (`lisa/microsoft/testsuites/hyperv/dynamic_memory.py`), adapted to one
//! process. The "VM" is a child process, its "assigned memory" is its
//! `RLIMIT_DATA` allowance, the "host" is this parent, which changes that
//! allowance at run time with `prlimit`, and the "balloon" is a sibling child
//! that takes and gives back real memory.
//!
//! Every case runs in bounded children (`RLIMIT_DATA`, `oom_score_adj` 1000,
//! a wall-clock timeout; see `examples/rlimit_child.rs`). The limits hold
//! every case under 330 MiB at once (the balloon cases: a 192 MiB guest and
//! a 128 MiB balloon allowance); the whole run takes about a second. A case
//! that needs what the host lacks is SKIPPED with its reason, and counted
//! as skipped, never as passed.
//!
//! Run: `cargo test --test dynamic_memory` (all cases), or name cases:
//! `cargo test --test dynamic_memory -- upper_limit cgroup_oom`.
//! Explained in src/part2-test-suite.md.

#[cfg(target_os = "linux")]
#[path = "../examples/linear_memory.rs"]
#[allow(dead_code, unused_imports)]
mod linear_memory;

#[cfg(target_os = "linux")]
#[path = "../examples/remap_memory.rs"]
#[allow(dead_code, unused_imports)]
mod remap_memory;

#[cfg(target_os = "linux")]
#[path = "../examples/rlimit_child.rs"]
#[allow(dead_code, unused_imports)]
mod rlimit_child;

#[cfg(target_os = "linux")]
#[path = "../examples/pressure.rs"]
#[allow(dead_code, unused_imports)]
mod pressure;

#[cfg(target_os = "linux")]
#[path = "../examples/memory_meter.rs"]
#[allow(dead_code, unused_imports)]
mod memory_meter;

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
    use super::memory_meter::{self, MemoryCgroup, Version};
    use super::pressure;
    use super::remap_memory::{Growth, RemapMemory};
    use super::rlimit_child::{self, Link, MemoryLimit, Outcome, Resource, Running};
    use std::panic::{catch_unwind, AssertUnwindSafe};
    use std::path::{Path, PathBuf};
    use std::process::ExitCode;
    use std::time::{Duration, Instant};

    const MIB: u64 = 1 << 20;
    const KIB: u64 = 1 << 10;
    /// One `memory.grow` step: a WebAssembly page, 64 KiB.
    const STEP: u64 = WASM_PAGE as u64;
    /// The wall-clock bound of every child.
    const TIMEOUT: Duration = Duration::from_secs(15);

    // ANCHOR: cases
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
            "dynamic_memory: LISA's dynamic memory tests for one process; \
             every child bounded by RLIMIT_DATA, oom_score_adj 1000 and a {} s timeout",
            TIMEOUT.as_secs()
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
    // ANCHOR_END: cases

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

    // ANCHOR: values_close
    /// The kernel cgroup selftests' tolerance (`values_close` in
    /// tools/testing/selftests/cgroup): `a` and `b` differ by at most
    /// `err` percent of their sum.
    fn values_close(a: u64, b: u64, err: u64) -> bool {
        a.abs_diff(b) <= (a + b) / 100 * err
    }
    // ANCHOR_END: values_close

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

    // ANCHOR: grower
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
    // ANCHOR_END: grower

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
        for page in 0..pages {
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

    // ANCHOR: upper_limit
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
            let report = rlimit_child::run(data_limit(64 * MIB, None), TIMEOUT, move |link| {
                let pattern = Pattern::new();
                let mut memory = new_memory(strategy)?;
                let pages = grow_until_refused(memory.as_mut(), &pattern)?;
                let line = format!("pages={pages} headroom={}", headroom()?);
                link.say(&line).map_err(|e| e.to_string())
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
    // ANCHOR_END: upper_limit

    // ---- hot_add ----

    // ANCHOR: hot_add
    /// LISA `verify_dynamic_memory_hot_add`: stress makes the host add
    /// memory. Here the host (this parent) raises the child's soft limit
    /// from 32 to 64 MiB at run time, within the hard limit; the grow that
    /// was refused now succeeds, and the data is intact.
    fn hot_add() -> CaseResult {
        let limit = data_limit(32 * MIB, Some(64 * MIB));
        let mut child = rlimit_child::spawn(limit, TIMEOUT, |link: &mut Link| {
            let pattern = Pattern::new();
            let mut memory = new_memory(false)?;
            let first = grow_until_refused(memory.as_mut(), &pattern)?;
            let line = format!("pages={first} headroom={}", headroom()?);
            link.say(&line).map_err(|e| e.to_string())?;
            link.hear().map_err(|e| e.to_string())?; // the host added memory
            let old = memory.grow(1);
            ensure(old == first as i32, || {
                format!("the grow after the hot add returned {old}")
            })?;
            let offset = u64::from(first) * STEP;
            memory
                .write(offset, pattern.page(first))
                .map_err(|e| e.to_string())?;
            let second = grow_until_refused(memory.as_mut(), &pattern)?;
            let line = format!("pages={second} headroom={}", headroom()?);
            link.say(&line).map_err(|e| e.to_string())
        })
        .map_err(io("fork"))?;

        let line = child.listen().map_err(io("first plateau"))?;
        let (first, room1) = (field(&line, "pages")?, field(&line, "headroom")?);
        let pid = child.pid();
        let old = rlimit_child::get_limit(pid, Resource::Data).map_err(io("prlimit"))?;
        let raised = libc::rlimit {
            rlim_cur: old.rlim_max,
            rlim_max: old.rlim_max,
        };
        rlimit_child::set_limit(pid, Resource::Data, &raised)
            .map_err(io("raise the soft limit"))?;
        // Past the hard limit needs CAP_SYS_RESOURCE, which this sandbox lacks.
        let past = libc::rlimit {
            rlim_cur: old.rlim_max + MIB,
            rlim_max: old.rlim_max + MIB,
        };
        let hard = match rlimit_child::set_limit(pid, Resource::Data, &past) {
            Ok(()) => "raising the hard limit too was allowed (CAP_SYS_RESOURCE)".to_string(),
            Err(e) => format!("raising the hard limit was refused: {e}"),
        };
        child.tell("added").map_err(io("tell"))?;
        let line = child.listen().map_err(io("second plateau"))?;
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
    // ANCHOR_END: hot_add

    // ---- balloon_up and balloon_down ----

    /// The guest's allowance, what it has grown to before the balloon, and
    /// what the balloon takes.
    const ALLOWANCE: u64 = 192 * MIB;
    const WORKING_SET: u32 = 1024; // pages: 64 MiB
    const BALLOON: u64 = 96 * MIB;

    // ANCHOR: balloon
    /// The guest: grows to its working set, then grows until refused each
    /// time the host says `grow`, and reports where it stopped.
    fn guest(link: &mut Link) -> Result<(), String> {
        let pattern = Pattern::new();
        let mut memory = new_memory(false)?;
        grow_filled(memory.as_mut(), &pattern, WORKING_SET)?;
        link.say(&format!("pages={WORKING_SET}"))
            .map_err(|e| e.to_string())?;
        while link.hear().map_err(|e| e.to_string())? == "grow" {
            let pages = grow_until_refused(memory.as_mut(), &pattern)?;
            let line = format!("pages={pages} headroom={}", headroom()?);
            link.say(&line).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// The balloon: takes `BALLOON` bytes on `take`, releases them on
    /// `release`, and ends on `exit`.
    fn balloon(link: &mut Link) -> Result<(), String> {
        let method = pressure::choose(pressure::Touch::Auto)?;
        let mut generator = pressure::Generator::new(method).map_err(|e| e.to_string())?;
        link.say("ready").map_err(|e| e.to_string())?;
        loop {
            match link.hear().map_err(|e| e.to_string())?.as_str() {
                "take" => {
                    generator
                        .take(BALLOON as usize, &mut |_| {})
                        .map_err(io("take"))?;
                    link.say("took").map_err(|e| e.to_string())?;
                }
                "release" => {
                    generator.release_all().map_err(io("release"))?;
                    link.say("released").map_err(|e| e.to_string())?;
                }
                "exit" => return Ok(()),
                other => return Err(format!("unknown command {other:?}")),
            }
        }
    }

    /// A guest and an inflated balloon, as `balloon_up` leaves them.
    struct Inflated {
        guest: Running,
        balloon: Running,
        /// The guest's size when the tighter budget refused it.
        refused_at: u64,
        headroom: u64,
        /// The balloon's RSS before and after it took its memory.
        balloon_rss: (u64, u64),
        psi: String,
        available: String,
    }

    /// The host comes under pressure: the balloon takes 96 MiB, and the host
    /// takes that much from the guest's allowance (`prlimit`). The guest's
    /// next growth fails cleanly at the tighter budget.
    fn inflate() -> Result<Inflated, String> {
        let limit = data_limit(ALLOWANCE, Some(ALLOWANCE));
        let mut guest = rlimit_child::spawn(limit, TIMEOUT, guest).map_err(io("fork guest"))?;
        guest.listen().map_err(io("guest start"))?;
        let balloon_limit = data_limit(BALLOON + 32 * MIB, None);
        let mut balloon =
            rlimit_child::spawn(balloon_limit, TIMEOUT, balloon).map_err(io("fork balloon"))?;
        balloon.listen().map_err(io("balloon start"))?;

        let psi_before = memory_meter::pressure();
        let available_before = pressure::meminfo();
        let rss = |pid| memory_meter::rss(Some(pid)).map(|r| r.value);
        let rss_before = rss(balloon.pid())?;
        balloon.tell("take").map_err(io("tell"))?;
        balloon.listen().map_err(io("balloon take"))?;
        let rss_after = rss(balloon.pid())?;
        let psi = psi_delta(&psi_before, &memory_meter::pressure());
        let available = match (available_before, pressure::meminfo()) {
            (Ok(b), Ok(a)) => format!(
                "MemAvailable {:+.1} MiB (system-wide, reported only)",
                (a.available as f64 - b.available as f64) / MIB as f64
            ),
            (Err(why), _) | (_, Err(why)) => format!("MemAvailable unavailable: {why}"),
        };

        // The host takes the balloon's share out of the guest's allowance.
        let old = rlimit_child::get_limit(guest.pid(), Resource::Data).map_err(io("prlimit"))?;
        let tighter = libc::rlimit {
            rlim_cur: old.rlim_cur - BALLOON,
            rlim_max: old.rlim_max,
        };
        rlimit_child::set_limit(guest.pid(), Resource::Data, &tighter).map_err(io("balloon up"))?;
        guest.tell("grow").map_err(io("tell"))?;
        let line = guest.listen().map_err(io("guest grow"))?;
        Ok(Inflated {
            refused_at: field(&line, "pages")? * STEP,
            headroom: field(&line, "headroom")?,
            guest,
            balloon,
            balloon_rss: (rss_before, rss_after),
            psi,
            available,
        })
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

    /// Ends both children and checks that they exited cleanly.
    fn finish(mut guest: Running, mut balloon: Running) -> Result<(), String> {
        guest.tell("exit").map_err(io("tell"))?;
        balloon.tell("exit").map_err(io("tell"))?;
        expect_exit_0("guest", &guest.wait().map_err(io("wait"))?)?;
        expect_exit_0("balloon", &balloon.wait().map_err(io("wait"))?)
    }

    /// LISA `verify_dynamic_memory_balloon_up`: host pressure inflates the
    /// balloon and the VM's assigned memory falls.
    fn balloon_up() -> CaseResult {
        let state = inflate()?;
        let rise = state.balloon_rss.1.saturating_sub(state.balloon_rss.0);
        ensure(values_close(rise, BALLOON, 3), || {
            format!("the balloon's RSS rose {}, not 96 MiB within 3%", mib(rise))
        })?;
        ensure(state.headroom < STEP, || {
            format!(
                "the guest was refused with {} KiB free",
                state.headroom / KIB
            )
        })?;
        let budget = ALLOWANCE - BALLOON;
        ensure(values_close(state.refused_at, budget, 3), || {
            format!(
                "the guest stopped at {}, not 96 MiB within 3%",
                mib(state.refused_at)
            )
        })?;
        let detail = format!(
            "balloon RSS {} -> {} (+96 MiB within 3%); guest allowance 192 -> 96 MiB; the \
             guest grew from 64 MiB and was refused at {} ({} KiB left), no crash, bytes \
             intact\n{}; {}",
            mib(state.balloon_rss.0),
            mib(state.balloon_rss.1),
            mib(state.refused_at),
            state.headroom / KIB,
            state.psi,
            state.available
        );
        finish(state.guest, state.balloon)?;
        Ok(Verdict::Passed(detail))
    }
    // ANCHOR_END: balloon

    // ANCHOR: balloon_down
    /// LISA `verify_dynamic_memory_balloon_down`: the balloon deflates and
    /// the VM's assigned memory grows again. Here the balloon releases its
    /// 96 MiB (RSS falls by that, within 3%), the host gives the guest its
    /// allowance back, and the guest's growth resumes.
    fn balloon_down() -> CaseResult {
        let mut state = inflate()?;
        let rss = |pid| memory_meter::rss(Some(pid)).map(|r| r.value);
        let psi_before = memory_meter::pressure();
        state.balloon.tell("release").map_err(io("tell"))?;
        state.balloon.listen().map_err(io("balloon release"))?;
        let released = rss(state.balloon.pid())?;
        let psi = psi_delta(&psi_before, &memory_meter::pressure());
        let fall = state.balloon_rss.1.saturating_sub(released);
        ensure(values_close(fall, BALLOON, 3), || {
            format!("the balloon's RSS fell {}, not 96 MiB within 3%", mib(fall))
        })?;

        let pid = state.guest.pid();
        let old = rlimit_child::get_limit(pid, Resource::Data).map_err(io("prlimit"))?;
        let restored = libc::rlimit {
            rlim_cur: old.rlim_cur + BALLOON,
            rlim_max: old.rlim_max,
        };
        rlimit_child::set_limit(pid, Resource::Data, &restored).map_err(io("balloon down"))?;
        state.guest.tell("grow").map_err(io("tell"))?;
        let line = state.guest.listen().map_err(io("guest grow"))?;
        let (pages, room) = (field(&line, "pages")?, field(&line, "headroom")?);
        let resumed = pages * STEP - state.refused_at;
        ensure(room < STEP, || {
            format!("refused with {} KiB free", room / KIB)
        })?;
        ensure(values_close(resumed, BALLOON, 3), || {
            format!("growth resumed by {}, not 96 MiB within 3%", mib(resumed))
        })?;
        let detail = format!(
            "balloon released: RSS {} -> {} (-96 MiB within 3%); allowance back to 192 MiB; \
             the guest grew from {} to {} (+96 MiB within 3%, {} KiB left), bytes intact\n{}",
            mib(state.balloon_rss.1),
            mib(released),
            mib(state.refused_at),
            mib(pages * STEP),
            room / KIB,
            psi
        );
        finish(state.guest, state.balloon)?;
        Ok(Verdict::Passed(detail))
    }
    // ANCHOR_END: balloon_down

    // ---- lower_limit ----

    // ANCHOR: lower_limit
    /// LISA `verify_dynamic_memory_lower_limit`: under host pressure,
    /// assigned memory falls to the configured minimum. Here: of a 64 MiB
    /// memory, 48 MiB are no longer in use; MADV_DONTNEED on them drops RSS
    /// by 48 MiB (within 3%), and the live 16 MiB are untouched: every page
    /// resident (mincore, exact) and every byte intact.
    fn lower_limit() -> CaseResult {
        let report = rlimit_child::run(data_limit(128 * MIB, None), TIMEOUT, |link| {
            let pattern = Pattern::new();
            let mut memory = new_memory(false)?;
            grow_filled(memory.as_mut(), &pattern, 1024)?;
            let live = 16 << 20;
            let rss = || memory_meter::rss(None).map(|r| r.value);
            let before = rss()?;
            pressure::release(&mut memory.as_mut_slice()[live..]).map_err(io("MADV_DONTNEED"))?;
            let after = rss()?;
            let page = pressure::page_size().map_err(io("page size"))?;
            let resident = |r: &[u8]| memory_meter::resident_pages(r, page).map_err(io("mincore"));
            let live_resident = resident(&memory.as_slice()[..live])?;
            let idle_resident = resident(&memory.as_slice()[live..])?;
            for p in 0..256 {
                let bytes = memory
                    .slice(u64::from(p) * STEP, WASM_PAGE)
                    .map_err(|e| e.to_string())?;
                ensure(bytes == pattern.page(p), || {
                    format!("live page {p} changed")
                })?;
            }
            let zero = memory.as_slice()[live..].iter().all(|&b| b == 0);
            link.say(&format!(
                "before={before} after={after} live={live_resident} idle={idle_resident} \
                 pages={} zero={}",
                live / page,
                u8::from(zero)
            ))
            .map_err(|e| e.to_string())
        })
        .map_err(io("fork"))?;
        expect_exit_0("lower_limit", &report)?;
        let line = report.output.trim();
        let fall = field(line, "before")?.saturating_sub(field(line, "after")?);
        let (live, idle, pages) = (
            field(line, "live")?,
            field(line, "idle")?,
            field(line, "pages")?,
        );
        ensure(values_close(fall, 48 * MIB, 3), || {
            format!("RSS fell {}, not 48 MiB within 3%", mib(fall))
        })?;
        ensure(live == pages && idle == 0, || {
            format!("resident: live {live} of {pages} pages, released {idle} (want all, 0)")
        })?;
        ensure(field(line, "zero")? == 1, || {
            "released pages did not read back as zero".into()
        })?;
        Ok(Verdict::Passed(format!(
            "RSS {} -> {} (-48 MiB within 3%); live 16 MiB: {live} of {pages} pages resident, \
             bytes intact; released 48 MiB: 0 pages resident, reads as zero",
            mib(field(line, "before")?),
            mib(field(line, "after")?)
        )))
    }
    // ANCHOR_END: lower_limit

    // ---- hugepages ----

    // ANCHOR: hugepages
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
        let report = rlimit_child::run(data_limit(64 * MIB, None), TIMEOUT, move |link| {
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
            .map_err(|e| e.to_string())
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
    // ANCHOR_END: hugepages

    // ---- cgroup_oom ----

    // ANCHOR: cgroup_guard
    /// A memory cgroup made for one case, removed on drop, even when the
    /// case fails or panics.
    struct CgroupGuard {
        cgroup: MemoryCgroup,
    }

    impl CgroupGuard {
        fn create(parent: &MemoryCgroup, name: &str) -> std::io::Result<CgroupGuard> {
            let dir = parent.dir.join(name);
            std::fs::create_dir(&dir)?;
            Ok(CgroupGuard {
                cgroup: MemoryCgroup {
                    version: parent.version,
                    dir,
                },
            })
        }

        fn write(&self, file: &str, value: &str) -> Result<(), String> {
            let path = self.cgroup.dir.join(file);
            std::fs::write(&path, value).map_err(|e| format!("{}: {e}", path.display()))
        }
    }

    impl Drop for CgroupGuard {
        fn drop(&mut self) {
            // A cgroup can be removed once no process is in it; the kernel
            // may need a moment after the last one is reaped.
            for _ in 0..200 {
                match std::fs::remove_dir(&self.cgroup.dir) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        std::thread::sleep(Duration::from_millis(10))
                    }
                    _ => return,
                }
            }
            eprintln!(
                "dynamic_memory: could not remove {}",
                self.cgroup.dir.display()
            );
        }
    }
    // ANCHOR_END: cgroup_guard

    // ANCHOR: cgroup_oom
    /// No LISA counterpart: the kernel selftest `test_memcg_oom_events`
    /// (tools/testing/selftests/cgroup/test_memcontrol.c), for either cgroup
    /// version. A child that touches 64 MiB in a 32 MiB memory cgroup is
    /// killed by the OOM killer inside that cgroup (SIGKILL), and the
    /// cgroup's `oom_kill` counter goes from 0 to 1.
    fn cgroup_oom() -> CaseResult {
        let parent = match memory_meter::memory_cgroup() {
            Ok(cgroup) => cgroup,
            Err(why) => return Ok(Verdict::Skipped(format!("no memory cgroup: {why}"))),
        };
        let name = format!("dynamic-memory-oom-{}", std::process::id());
        let guard = match CgroupGuard::create(&parent, &name) {
            Ok(guard) => guard,
            Err(e) => {
                let why = format!("cannot create a cgroup in {}: {e}", parent.dir.display());
                return Ok(Verdict::Skipped(why));
            }
        };
        let (limit_file, swap_file) = match parent.version {
            Version::V2 => ("memory.max", "memory.swap.max"),
            Version::V1 => ("memory.limit_in_bytes", "memory.memsw.limit_in_bytes"),
        };
        if !guard.cgroup.dir.join(limit_file).exists() {
            return Ok(Verdict::Skipped(format!(
                "{} has no {limit_file}: the memory controller is not enabled for children \
                 of {} (this suite does not change cgroup.subtree_control)",
                guard.cgroup.dir.display(),
                parent.dir.display()
            )));
        }
        guard.write(limit_file, &(32 * MIB).to_string())?;
        // No swap to escape to, where the host has swap (as the selftest does).
        if guard.cgroup.dir.join(swap_file).exists() {
            let value = match parent.version {
                Version::V2 => "0".to_string(),
                Version::V1 => (32 * MIB).to_string(),
            };
            guard.write(swap_file, &value)?;
        }
        let kills_before = guard.cgroup.oom_kills()?.value;

        let procs = guard.cgroup.dir.join("cgroup.procs");
        let report = rlimit_child::run(data_limit(256 * MIB, None), TIMEOUT, move |link| {
            join_cgroup(&procs)?;
            link.say("joined").map_err(|e| e.to_string())?;
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
        let kills = guard.cgroup.oom_kills()?;
        let peak = guard.cgroup.peak().ok().and_then(|r| r.value);
        ensure(
            report.outcome
                == (Outcome::Killed {
                    signal: libc::SIGKILL,
                }),
            || format!("the child {} ({})", report.outcome, report.output.trim()),
        )?;
        ensure(kills.value == kills_before + 1, || {
            format!(
                "oom_kill went {kills_before} -> {} in {}",
                kills.value, kills.source
            )
        })?;
        Ok(Verdict::Passed(format!(
            "cgroup {} ({}), limit 32 MiB: the child was {}; oom_kill {kills_before} -> {} \
             ({}); cgroup peak {}; child peak RSS {}; the cgroup is removed on drop",
            guard.cgroup.dir.display(),
            parent.version.name(),
            report.outcome,
            kills.value,
            Path::new(&kills.source)
                .file_name()
                .map_or("?".into(), |f| f.to_string_lossy()),
            peak.map_or("unavailable".into(), mib),
            mib(report.peak_rss)
        )))
    }

    /// Moves this process into the cgroup whose `cgroup.procs` is `procs`.
    fn join_cgroup(procs: &PathBuf) -> Result<(), String> {
        std::fs::write(procs, std::process::id().to_string())
            .map_err(|e| format!("{}: {e}", procs.display()))
    }
    // ANCHOR_END: cgroup_oom
}
