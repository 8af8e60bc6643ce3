//! LISA's eight dynamic-memory tests
//! (`lisa/microsoft/testsuites/hyperv/dynamic_memory.py` in microsoft/lisa)
//! in a real QEMU guest. Hyper-V's hot add becomes virtio-mem, its balloon
//! virtio-balloon; this program plays the host's memory manager
//! (`guest_memory::Policy`), the pressure is stress-ng inside the guest, and
//! every verdict comes from the guest's own `/proc/meminfo`, with LISA's
//! tolerances (`examples/guest_memory.rs`).
//!
//! One guest serves every case, each starting from the startup memory:
//! `-m 768M`, a 512 MiB virtio-mem region (the maximum, 1280 MiB) and a
//! balloon that may take it down to 384 MiB (the minimum). QEMU's memory is
//! fixed by its command line, so the guest's OOM killer, not the host's,
//! meets stress-ng's demand of 1.75 times the maximum. Each stress-ng run
//! lasts 10 s (LISA's: 30 to 45 s), to keep the suite to a few minutes
//! under TCG.
//!
//! Needs the assets of `cargo xtask vm-setup`, named by `$DMB_VM_ASSETS`
//! (`cargo xtask test vm` sets it); without it every case is SKIPPED, never
//! passed, and the exit status is a failure. `DMB_VM_KERNEL=<release>`
//! picks the kernel (default: the first).
//!
//! `cargo xtask test` runs this suite in its own `vm suite` step, so its
//! `cargo test` step sets `DMB_VM_SUITE_IN_OWN_STEP=1`, and the suite then
//! only says where it runs: it is neither passed nor skipped there.
//!
//! Run: `cargo xtask test vm-suite`, or `cargo xtask vm-setup`, then
//! `DMB_VM_ASSETS=... cargo test --test vm_dynamic_memory`.

#[cfg(target_os = "linux")]
#[path = "support/vm/mod.rs"]
mod vm;

#[cfg(target_os = "linux")]
#[path = "../examples/guest_memory.rs"]
#[allow(dead_code)]
mod guest_memory;

#[cfg(not(target_os = "linux"))]
fn main() {
    println!("vm_dynamic_memory: 0 passed, 0 failed, 8 skipped (QEMU guests run on Linux only)");
}

#[cfg(target_os = "linux")]
fn main() -> std::process::ExitCode {
    suite::main()
}

/// Set by `cargo xtask test`'s `cargo test` step: the suite has a step of
/// its own there.
#[cfg(target_os = "linux")]
const IN_OWN_STEP: &str = "DMB_VM_SUITE_IN_OWN_STEP";

#[cfg(target_os = "linux")]
mod suite {
    use super::guest_memory::{
        close_to, greater_than, host_guest_aligned, less_than, Action, Assigned,
        DynamicMemoryConfig, GuestReading, LIMIT_TOLERANCE_MIB, POLICY,
    };
    use super::vm::{self, Assets, Balloon, ErrorKind, Guest, GuestConfig, VirtioMem};
    use std::process::ExitCode;
    use std::time::{Duration, Instant};

    const MIB: u64 = 1 << 20;
    const CONFIG: DynamicMemoryConfig = DynamicMemoryConfig {
        startup_mib: 768,
        minimum_mib: 384,
        maximum_mib: 1280,
    };
    /// Each stress-ng run, in seconds.
    const STRESS_SECONDS: u64 = 10;
    /// One guest command's bound: generous, the host is shared.
    const COMMAND: Duration = Duration::from_secs(60);
    /// How long a balloon or virtio-mem change may take to complete.
    const SETTLE: Duration = Duration::from_secs(120);
    /// How often the host's manager reads the guest.
    const TICK: Duration = Duration::from_millis(250);

    type Case = (&'static str, fn(&mut Guest) -> Result<String, String>);

    /// LISA's eight, in its order.
    const CASES: [Case; 8] = [
        ("hot_add", hot_add),
        ("hot_add_hugepages", hot_add_hugepages),
        ("upper_limit", upper_limit),
        ("upper_limit_hugepages", upper_limit_hugepages),
        ("balloon_up", balloon_up),
        ("lower_limit", lower_limit),
        ("balloon_down", balloon_down),
        ("balloon_down_hugepages", balloon_down_hugepages),
    ];

    pub fn main() -> ExitCode {
        use super::IN_OWN_STEP;
        let started = Instant::now();
        let total = CASES.len();
        if std::env::var_os(IN_OWN_STEP).is_some_and(|v| v == "1") {
            println!(
                "vm_dynamic_memory: not run by this `cargo test`: {IN_OWN_STEP}=1 says the `vm suite` step of `cargo xtask test` runs it"
            );
            return ExitCode::SUCCESS;
        }
        let assets = match Assets::from_env() {
            Ok(Some(assets)) => assets,
            Ok(None) => {
                println!(
                    "vm_dynamic_memory: every case SKIPPED: {} is not set: run `cargo xtask vm-setup` \
                     and export the line it prints (or `cargo xtask test vm-suite`)",
                    vm::ASSETS_ENV
                );
                println!("vm_dynamic_memory: 0 passed, 0 failed, {total} skipped");
                return ExitCode::FAILURE;
            }
            Err(e) => {
                println!("vm_dynamic_memory: {e}");
                println!("vm_dynamic_memory: 0 passed, {total} failed, 0 skipped");
                return ExitCode::FAILURE;
            }
        };
        let kernel = match std::env::var("DMB_VM_KERNEL") {
            Ok(release) => assets.kernel(&release).cloned(),
            Err(_) => assets.kernels.first().cloned(),
        };
        let Some(kernel) = kernel else {
            println!("vm_dynamic_memory: no such kernel in {}", vm::ASSETS_ENV);
            println!("vm_dynamic_memory: 0 passed, {total} failed, 0 skipped");
            return ExitCode::FAILURE;
        };
        let config = GuestConfig::new(&assets, &kernel)
            .memory_mib(CONFIG.startup_mib)
            .cpus(2)
            .balloon(Balloon {
                free_page_reporting: true,
                deflate_on_oom: false,
            })
            .virtio_mem(VirtioMem {
                region_mib: CONFIG.maximum_mib - CONFIG.startup_mib,
                block_mib: 2,
            })
            .boot_timeout(Duration::from_secs(180));
        let mut tally = Tally::default();
        let mut guest = match Guest::boot_retrying_a_panic(config) {
            Ok((guest, first)) => {
                if let Some(first) = first {
                    println!(
                        "vm_dynamic_memory: the first boot panicked before any case ran ({}); \
                         the second booted",
                        first.panic_line().unwrap_or_default()
                    );
                }
                guest
            }
            Err(e) => {
                println!("vm_dynamic_memory: the guest did not boot: {e}");
                println!("vm_dynamic_memory: 0 passed, {total} failed, 0 skipped");
                return ExitCode::FAILURE;
            }
        };
        println!(
            "vm_dynamic_memory: kernel {} served commands {:.1} s after QEMU started; \
             startup {} MiB, minimum {} MiB, maximum {} MiB",
            guest.release,
            guest.booted_in.as_secs_f64(),
            CONFIG.startup_mib,
            CONFIG.minimum_mib,
            CONFIG.maximum_mib
        );
        // `cargo test --test vm_dynamic_memory -- NAME...` runs only those.
        let only: Vec<String> = std::env::args()
            .skip(1)
            .filter(|a| !a.starts_with('-'))
            .collect();
        for (name, case) in CASES {
            if !only.is_empty() && !only.iter().any(|o| o == name) {
                continue;
            }
            tally.record(name, || {
                reset(&mut guest)?;
                case(&mut guest)
            });
        }
        if let Err(e) = guest.shutdown() {
            println!("vm_dynamic_memory: shutdown: {e}");
        }
        println!(
            "vm_dynamic_memory: {} passed, {} failed, 0 skipped in {:.0} s",
            tally.passed,
            tally.failed,
            started.elapsed().as_secs_f64()
        );
        if tally.failed > 0 {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        }
    }

    #[derive(Default)]
    struct Tally {
        passed: usize,
        failed: usize,
    }

    impl Tally {
        fn record(&mut self, name: &str, case: impl FnOnce() -> Result<String, String>) {
            let t = Instant::now();
            let (word, detail) = match case() {
                Ok(detail) => {
                    self.passed += 1;
                    ("passed", detail)
                }
                Err(why) => {
                    self.failed += 1;
                    ("FAILED", why)
                }
            };
            println!("{name:<24} {word:<8} {:>5.1} s", t.elapsed().as_secs_f64());
            for line in detail.lines() {
                println!("    {line}");
            }
        }
    }

    fn text(e: vm::VmError) -> String {
        e.to_string()
    }

    fn read(guest: &mut Guest) -> Result<GuestReading, String> {
        let text_ = guest.read_file("/proc/meminfo").map_err(text)?;
        GuestReading::parse(&text_)
    }

    /// The host's side: what QMP says the balloon leaves and virtio-mem plugged.
    fn assigned(guest: &mut Guest) -> Result<Assigned, String> {
        Ok(Assigned {
            balloon_mib: guest.balloon_actual().map_err(text)? / MIB,
            plugged_mib: guest.virtio_mem_size().map_err(text)? / MIB,
        })
    }

    fn apply(guest: &mut Guest, action: Action) -> Result<(), String> {
        match action {
            Action::Hold => Ok(()),
            Action::Balloon { balloon_mib } => {
                guest.set_balloon_target(balloon_mib * MIB).map_err(text)
            }
            Action::Plug { plugged_mib } => guest
                .set_virtio_mem_requested(plugged_mib * MIB)
                .map_err(text),
        }
    }

    /// Every case starts from the startup memory, with no stress-ng left.
    fn reset(guest: &mut Guest) -> Result<(), String> {
        guest
            .run_ok(
                "if [ -f /tmp/stress.pid ]; then kill $(cat /tmp/stress.pid) 2>/dev/null; fi; \
                 while pidof stress-ng >/dev/null; do sleep 0.2; done; rm -f /tmp/stress.*",
                COMMAND,
            )
            .map_err(text)?;
        guest.virtio_mem_to(0, SETTLE).map_err(text)?;
        guest
            .balloon_to(CONFIG.startup_mib * MIB, SETTLE)
            .map_err(text)?;
        Ok(())
    }

    /// What one stress-ng run under the host's manager left behind.
    struct Stressed {
        /// Read every tick: the lowest MemAvailable and the highest
        /// Committed_AS, in MiB.
        low_available_mib: u64,
        high_committed_mib: u64,
        /// AnonHugePages half-way through the run (LISA samples it there), KiB.
        mid_anon_huge_kib: u64,
        /// What the manager did: balloon changes and virtio-mem plugs.
        balloon_moves: usize,
        plugs: usize,
        readings: usize,
        /// stress-ng's exit status.
        status: String,
    }

    /// Runs `stressor` (stress-ng arguments) for [`STRESS_SECONDS`] in the
    /// guest, at nice 19 so that the host's reads still get the vCPUs, while
    /// the host's policy reads the guest every [`TICK`] and gives it memory;
    /// then waits until the devices have done what was asked.
    fn stress(guest: &mut Guest, stressor: &str) -> Result<Stressed, String> {
        let start = format!(
            "cd /tmp && rm -f /tmp/stress.rc && \
             (nice -n 19 stress-ng {stressor} --timeout {STRESS_SECONDS}s > /tmp/stress.log 2>&1; \
              echo $? > /tmp/stress.rc) > /dev/null 2>&1 & echo $! > /tmp/stress.pid"
        );
        guest.run_ok(&start, COMMAND).map_err(text)?;
        let started = Instant::now();
        let half = Duration::from_secs(STRESS_SECONDS / 2);
        // Progress-based: stress-ng ends on its own; this only stops a hang.
        let bound = Duration::from_secs(STRESS_SECONDS) + SETTLE;
        let mut out = Stressed {
            low_available_mib: u64::MAX,
            high_committed_mib: 0,
            mid_anon_huge_kib: 0,
            balloon_moves: 0,
            plugs: 0,
            readings: 0,
            status: String::new(),
        };
        let mut mid_taken = false;
        let mut asked = assigned(guest)?;
        loop {
            let poll = guest.run(
                "cat /proc/meminfo; echo @rc; cat /tmp/stress.rc 2>/dev/null",
                COMMAND,
            );
            let poll = match poll {
                Ok(poll) => poll,
                // The guest's OOM killer may pick the reading shell: read again.
                Err(e) if e.kind == ErrorKind::CommandKilled => continue,
                Err(e) => return Err(text(e)),
            };
            let (meminfo, rc) = poll.stdout.split_once("@rc").unwrap_or((&poll.stdout, ""));
            let reading = GuestReading::parse(meminfo)?;
            out.readings += 1;
            if std::env::var_os("DMB_VM_TRACE").is_some() {
                println!(
                    "    trace {:5.1} s: MemTotal {} MemAvailable {} AnonHugePages {} MiB",
                    started.elapsed().as_secs_f64(),
                    reading.mem_total_mib(),
                    reading.mem_available_mib(),
                    reading.anon_huge_kib / 1024
                );
            }
            out.low_available_mib = out.low_available_mib.min(reading.mem_available_mib());
            out.high_committed_mib = out.high_committed_mib.max(reading.committed_as_kib / 1024);
            if !mid_taken && started.elapsed() >= half {
                out.mid_anon_huge_kib = reading.anon_huge_kib;
                mid_taken = true;
            }
            if !rc.trim().is_empty() {
                out.status = rc.trim().to_owned();
                if out.status != "0" {
                    let log = guest
                        .run("tail -n 5 /tmp/stress.log", COMMAND)
                        .map(|o| o.stdout)
                        .unwrap_or_default();
                    out.status = format!("{} ({})", out.status, log.trim().replace('\n', " | "));
                }
                break;
            }
            // Decide on what was asked for, not on what has arrived yet.
            let action = POLICY.on_guest_reading(&CONFIG, &asked, &reading);
            apply(guest, action)?;
            match action {
                Action::Hold => {}
                Action::Balloon { balloon_mib } => {
                    asked.balloon_mib = balloon_mib;
                    out.balloon_moves += 1;
                }
                Action::Plug { plugged_mib } => {
                    asked.plugged_mib = plugged_mib;
                    out.plugs += 1;
                }
            }
            if started.elapsed() > bound {
                return Err(format!(
                    "stress-ng {stressor} had not ended {} s after it started",
                    bound.as_secs()
                ));
            }
            std::thread::sleep(TICK);
        }
        if !mid_taken {
            return Err("stress-ng ended before half its run: no mid-run reading".to_owned());
        }
        guest
            .virtio_mem_to(asked.plugged_mib * MIB, SETTLE)
            .map_err(text)?;
        guest
            .balloon_to(asked.balloon_mib * MIB, SETTLE)
            .map_err(text)?;
        Ok(out)
    }

    /// LISA's `--vm` stressor, sized at 1.75 times the maximum, over 2
    /// workers (the guest's 2 vCPUs); `--vm-keep` holds each worker's
    /// mapping instead of remapping it every round, which is slow under TCG.
    fn vm_stressor() -> String {
        let mib = (CONFIG.maximum_mib * 7).div_ceil(4);
        format!("--vm 8 --vm-bytes {mib}M --vm-keep")
    }

    /// LISA's `--mmaphuge` stressor, 4 workers: mappings the kernel backs
    /// with transparent huge pages.
    fn mmaphuge_stressor() -> String {
        "--mmaphuge 4".to_owned()
    }

    /// LISA's host pressure: the host asks for `reclaim_mib` back.
    fn host_pressure(guest: &mut Guest, reclaim_mib: u64) -> Result<Assigned, String> {
        let now = assigned(guest)?;
        match POLICY.on_host_pressure(&CONFIG, &now, reclaim_mib) {
            Action::Balloon { balloon_mib } => {
                guest.balloon_to(balloon_mib * MIB, SETTLE).map_err(text)?;
            }
            Action::Hold => {}
            Action::Plug { .. } => return Err("host pressure plugged memory".to_owned()),
        }
        assigned(guest)
    }

    fn stressed_line(s: &Stressed, before: &GuestReading, after: &GuestReading) -> String {
        format!(
            "read /proc/meminfo {} times: MemTotal {} -> {} MiB, MemAvailable as low as {} MiB, \
             Committed_AS as high as {} MiB, AnonHugePages {} -> {} MiB mid-run -> {} MiB; {} balloon moves, {} plugs; \
             stress-ng exited {}",
            s.readings,
            before.mem_total_mib(),
            after.mem_total_mib(),
            s.low_available_mib,
            s.high_committed_mib,
            before.anon_huge_kib / 1024,
            s.mid_anon_huge_kib / 1024,
            after.anon_huge_kib / 1024,
            s.balloon_moves,
            s.plugs,
            s.status
        )
    }

    /// Runs every check, and lists them all, passed or not.
    fn verdicts(first: String, checks: Vec<Result<String, String>>) -> Result<String, String> {
        let mut lines = vec![first];
        let mut failed = false;
        for check in checks {
            match check {
                Ok(t) => lines.push(format!("ok: {t}")),
                Err(t) => {
                    failed = true;
                    lines.push(format!("FAILED: {t}"));
                }
            }
        }
        let text = lines.join("\n");
        if failed {
            Err(text)
        } else {
            Ok(text)
        }
    }

    /// hot_add and upper_limit: stress from the startup memory; `limit`
    /// also holds the net change to maximum - startup, and `huge` checks
    /// AnonHugePages mid-run.
    fn grow_case(guest: &mut Guest, huge: bool, limit: bool) -> Result<String, String> {
        let before = read(guest)?;
        let stressor = if huge {
            mmaphuge_stressor()
        } else {
            vm_stressor()
        };
        let s = stress(guest, &stressor)?;
        let after = read(guest)?;
        let now = assigned(guest)?;
        let net = now.net_mib(&CONFIG);
        let mut checks = vec![greater_than("net MiB (added - ballooned), from", net, 0)];
        if limit {
            let expected = (CONFIG.maximum_mib - CONFIG.startup_mib) as i64;
            checks.push(close_to("net", net, expected, LIMIT_TOLERANCE_MIB));
        }
        if huge {
            checks.push(greater_than(
                "AnonHugePages KiB, before -> mid-run",
                s.mid_anon_huge_kib as i64,
                before.anon_huge_kib as i64,
            ));
        }
        checks.push(host_guest_aligned(&after, &now));
        verdicts(stressed_line(&s, &before, &after), checks)
    }

    fn hot_add(guest: &mut Guest) -> Result<String, String> {
        grow_case(guest, false, false)
    }

    fn hot_add_hugepages(guest: &mut Guest) -> Result<String, String> {
        grow_case(guest, true, false)
    }

    fn upper_limit(guest: &mut Guest) -> Result<String, String> {
        grow_case(guest, false, true)
    }

    fn upper_limit_hugepages(guest: &mut Guest) -> Result<String, String> {
        grow_case(guest, true, true)
    }

    /// LISA's host pressure approximates the host's whole memory; here the
    /// host asks for 128 MiB back.
    fn balloon_up(guest: &mut Guest) -> Result<String, String> {
        let before_reading = read(guest)?;
        let before = assigned(guest)?.net_mib(&CONFIG);
        let now = host_pressure(guest, 128)?;
        let after = read(guest)?;
        let first = format!(
            "read /proc/meminfo: MemTotal {} -> {} MiB, MemAvailable {} -> {} MiB",
            before_reading.mem_total_mib(),
            after.mem_total_mib(),
            before_reading.mem_available_mib(),
            after.mem_available_mib()
        );
        let checks = vec![
            less_than("net", now.net_mib(&CONFIG), before),
            host_guest_aligned(&after, &now),
        ];
        verdicts(first, checks)
    }

    /// The host asks for all of the startup memory; the policy stops at the
    /// minimum.
    fn lower_limit(guest: &mut Guest) -> Result<String, String> {
        let before_reading = read(guest)?;
        let now = host_pressure(guest, CONFIG.startup_mib)?;
        let after = read(guest)?;
        let first = format!(
            "read /proc/meminfo: MemTotal {} -> {} MiB, MemAvailable {} -> {} MiB",
            before_reading.mem_total_mib(),
            after.mem_total_mib(),
            before_reading.mem_available_mib(),
            after.mem_available_mib()
        );
        let expected = CONFIG.minimum_mib as i64 - CONFIG.startup_mib as i64;
        let checks = vec![
            close_to("net", now.net_mib(&CONFIG), expected, LIMIT_TOLERANCE_MIB),
            host_guest_aligned(&after, &now),
        ];
        verdicts(first, checks)
    }

    /// Host pressure down to the minimum, then stress: the policy deflates
    /// the balloon (and plugs past the startup memory if it must).
    fn shrink_then_stress(guest: &mut Guest, huge: bool) -> Result<String, String> {
        let before_net = host_pressure(guest, CONFIG.startup_mib)?.net_mib(&CONFIG);
        let before = read(guest)?;
        let stressor = if huge {
            mmaphuge_stressor()
        } else {
            vm_stressor()
        };
        let s = stress(guest, &stressor)?;
        let after = read(guest)?;
        let now = assigned(guest)?;
        let mut checks = vec![greater_than(
            "net MiB (added - ballooned), from",
            now.net_mib(&CONFIG),
            before_net,
        )];
        if huge {
            checks.push(greater_than(
                "AnonHugePages KiB, before -> mid-run",
                s.mid_anon_huge_kib as i64,
                before.anon_huge_kib as i64,
            ));
        }
        checks.push(host_guest_aligned(&after, &now));
        verdicts(stressed_line(&s, &before, &after), checks)
    }

    fn balloon_down(guest: &mut Guest) -> Result<String, String> {
        shrink_then_stress(guest, false)
    }

    fn balloon_down_hugepages(guest: &mut Guest) -> Result<String, String> {
        shrink_then_stress(guest, true)
    }
}
