//! The QEMU harness itself (tests/support/vm/), on a real guest: it boots,
//! a command's exit status and output come back, a hung command is killed
//! by its timeout, and QMP's balloon and virtio-mem change the guest's
//! MemTotal. One guest serves every case (a boot costs seconds under TCG).
//!
//! Needs the assets of `cargo xtask vm-setup`, named by `$DMB_VM_ASSETS`
//! (`cargo xtask test` sets it); without it every case is SKIPPED, never
//! passed. `DMB_VM_KERNEL=<release>` picks the kernel (default: the first).
//!
//! Run: `cargo xtask vm-setup`, then
//! `DMB_VM_ASSETS=... cargo test --test vm_harness`.

#[cfg(target_os = "linux")]
#[path = "support/vm/mod.rs"]
mod vm;

#[cfg(not(target_os = "linux"))]
fn main() {
    println!("vm_harness: 0 passed, 0 failed, 0 skipped (QEMU guests run on Linux only)");
}

#[cfg(target_os = "linux")]
fn main() -> std::process::ExitCode {
    cases::main()
}

#[cfg(target_os = "linux")]
mod cases {
    use super::vm::{self, Assets, Balloon, ErrorKind, Guest, GuestConfig, VirtioMem};
    use std::process::ExitCode;
    use std::time::{Duration, Instant};

    const MIB: u64 = 1 << 20;
    const BASE_MIB: u64 = 512;
    const SHORT: Duration = Duration::from_secs(20);

    type Case = (&'static str, fn(&mut Guest) -> Result<String, String>);

    /// Run in this order on one guest; each leaves it as it found it.
    const CASES: [Case; 4] = [
        ("command_status_and_output", command_status_and_output),
        ("hung_command_times_out", hung_command_times_out),
        ("balloon_changes_memtotal", balloon_changes_memtotal),
        ("virtio_mem_changes_memtotal", virtio_mem_changes_memtotal),
    ];

    pub fn main() -> ExitCode {
        let started = Instant::now();
        let total = CASES.len() + 3;
        let assets = match Assets::from_env() {
            Ok(Some(assets)) => assets,
            Ok(None) => {
                let why = format!(
                    "{} is not set: run `cargo xtask vm-setup` and export the line it prints",
                    vm::ASSETS_ENV
                );
                println!("vm_harness: every case SKIPPED: {why}");
                println!("vm_harness: 0 passed, 0 failed, {total} skipped");
                return ExitCode::SUCCESS;
            }
            Err(e) => {
                println!("vm_harness: {e}");
                println!("vm_harness: 0 passed, {total} failed, 0 skipped");
                return ExitCode::FAILURE;
            }
        };
        let mut tally = Tally::default();
        tally.record("boot_failure_names_what_failed", || {
            boot_failure_names_what_failed(&assets)
        });
        tally.record("a_panicking_kernel_boots_once_more", || {
            a_panicking_kernel_boots_once_more(&assets)
        });
        let kernel = match std::env::var("DMB_VM_KERNEL") {
            Ok(release) => assets.kernel(&release).cloned(),
            Err(_) => assets.kernels.first().cloned(),
        };
        let Some(kernel) = kernel else {
            println!("vm_harness: no such kernel in {}", vm::ASSETS_ENV);
            println!("vm_harness: 0 passed, {total} failed, 0 skipped");
            return ExitCode::FAILURE;
        };
        let config = GuestConfig::new(&assets, &kernel)
            .memory_mib(BASE_MIB)
            .balloon(Balloon::default())
            .virtio_mem(VirtioMem {
                region_mib: 512,
                block_mib: 2,
            });
        let mut guest = None;
        tally.record("guest_boots", || {
            let g = Guest::boot(config).map_err(|e| e.to_string())?;
            if g.release != kernel.release {
                return Err(format!("booted {}, wanted {}", g.release, kernel.release));
            }
            let detail = format!(
                "{} served commands {:.1} s after QEMU started",
                g.release,
                g.booted_in.as_secs_f64()
            );
            guest = Some(g);
            Ok(detail)
        });
        for (name, case) in CASES {
            match guest.as_mut() {
                Some(g) => tally.record(name, || case(g)),
                None => tally.record(name, || Err("no guest: it did not boot".to_owned())),
            }
        }
        if let Some(g) = guest {
            if let Err(e) = g.shutdown() {
                tally.record("shutdown", || Err(e.to_string()));
            }
        }
        println!(
            "vm_harness: {} passed, {} failed, 0 skipped in {:.1} s",
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
            println!("{name:<32} {word:<8} {:>5.2} s", t.elapsed().as_secs_f64());
            for line in detail.lines() {
                println!("    {line}");
            }
        }
    }

    fn check(ok: bool, what: impl FnOnce() -> String) -> Result<(), String> {
        if ok {
            Ok(())
        } else {
            Err(what())
        }
    }

    /// A kernel image that is no kernel: QEMU refuses it at once, and the
    /// error says that booting failed and what QEMU said.
    fn boot_failure_names_what_failed(assets: &Assets) -> Result<String, String> {
        let mut kernel = assets.kernels.first().ok_or("no kernels")?.clone();
        kernel.image = kernel.initramfs.clone();
        let config = GuestConfig::new(assets, &kernel).boot_timeout(SHORT);
        match Guest::boot(config) {
            Ok(_) => Err("an initramfs booted as a kernel".to_owned()),
            Err(e) if e.kind == ErrorKind::Boot && e.message.contains("QEMU") => {
                Ok(e.message.lines().take(2).collect::<Vec<_>>().join("\n"))
            }
            Err(e) => Err(format!("unexpected error ({:?}): {e}", e.kind)),
        }
    }

    /// A kernel given its own image as the initramfs finds no init and
    /// panics: `boot_retrying_a_panic` boots it once more, then fails with
    /// the panic on the console, never with a guest.
    fn a_panicking_kernel_boots_once_more(assets: &Assets) -> Result<String, String> {
        let mut kernel = assets.kernels.first().ok_or("no kernels")?.clone();
        kernel.initramfs = kernel.image.clone();
        let config = GuestConfig::new(assets, &kernel).boot_timeout(SHORT);
        match Guest::boot_retrying_a_panic(config) {
            Ok(_) => Err("a kernel without an init served commands".to_owned()),
            Err(e) if e.message.starts_with("booted twice: ") && e.kernel_panicked() => Ok(
                format!("booted twice; {}", e.panic_line().unwrap_or_default()),
            ),
            Err(e) => Err(format!("unexpected error ({:?}): {e}", e.kind)),
        }
    }

    fn command_status_and_output(guest: &mut Guest) -> Result<String, String> {
        let out = guest
            .run("echo out; echo err >&2; exit 3", SHORT)
            .map_err(|e| e.to_string())?;
        check(out.status == 3, || format!("status {}", out.status))?;
        check(out.stdout == "out\n", || format!("stdout {:?}", out.stdout))?;
        check(out.stderr == "err\n", || format!("stderr {:?}", out.stderr))?;
        // A host program, with its libraries, from the shared /usr.
        let version = guest
            .run_ok("stress-ng --version", SHORT)
            .map_err(|e| e.to_string())?;
        check(version.stdout.contains("stress-ng"), || {
            format!("stress-ng --version printed {:?}", version.stdout)
        })?;
        Ok(format!(
            "exit 3 with its stdout and stderr apart, in {:.0} ms; the host's {}",
            out.took.as_secs_f64() * 1e3,
            version.stdout.trim()
        ))
    }

    /// A command that never ends (and a child it started) is killed after
    /// its timeout; the channel serves the next command.
    fn hung_command_times_out(guest: &mut Guest) -> Result<String, String> {
        let timeout = Duration::from_secs(2);
        let t = Instant::now();
        let result = guest.run("sleep 997 & sleep 998", timeout);
        let took = t.elapsed();
        match result {
            Err(e) if e.kind == ErrorKind::CommandTimeout => {
                check(e.message.contains("timeout"), || e.message.clone())?
            }
            Err(e) => return Err(format!("wanted a timeout, got {:?}: {e}", e.kind)),
            Ok(out) => return Err(format!("a hung command returned {}", out.status)),
        }
        check(took >= timeout && took < timeout + SHORT, || {
            format!("the timeout came after {took:?}")
        })?;
        let left = guest
            .run_ok("ps -o args | grep -c '^sleep 99[78]' || true", SHORT)
            .map_err(|e| e.to_string())?;
        check(left.stdout.trim() == "0", || {
            format!("{} of its sleeps survived", left.stdout.trim())
        })?;
        Ok(format!(
            "killed after {:.1} s with both its processes; the next command ran",
            took.as_secs_f64()
        ))
    }

    fn mem_total_mib(guest: &mut Guest) -> Result<u64, String> {
        let info = guest.meminfo().map_err(|e| e.to_string())?;
        info.mib("MemTotal").ok_or_else(|| "no MemTotal".to_owned())
    }

    /// Without deflate-on-oom the guest takes ballooned pages off MemTotal.
    fn balloon_changes_memtotal(guest: &mut Guest) -> Result<String, String> {
        let before = mem_total_mib(guest)?;
        let took = guest
            .balloon_to(256 * MIB, SHORT)
            .map_err(|e| e.to_string())?;
        let inflated = mem_total_mib(guest)?;
        guest
            .balloon_to(BASE_MIB * MIB, SHORT)
            .map_err(|e| e.to_string())?;
        let after = mem_total_mib(guest)?;
        check(before - inflated.min(before) >= 250, || {
            format!("MemTotal {before} MiB -> {inflated} MiB with 256 MiB ballooned")
        })?;
        check(after == before, || {
            format!("MemTotal {before} MiB, {after} MiB after deflating")
        })?;
        let floor = guest.set_balloon_target(16 * MIB);
        check(floor.is_err(), || {
            "a 16 MiB balloon target was sent".to_owned()
        })?;
        Ok(format!(
            "MemTotal {before} -> {inflated} MiB in {:.2} s -> {after} MiB; 16 MiB refused",
            took.as_secs_f64()
        ))
    }

    fn virtio_mem_changes_memtotal(guest: &mut Guest) -> Result<String, String> {
        let before = mem_total_mib(guest)?;
        let took = guest
            .virtio_mem_to(256 * MIB, SHORT)
            .map_err(|e| e.to_string())?;
        let plugged = mem_total_mib(guest)?;
        guest.virtio_mem_to(0, SHORT).map_err(|e| e.to_string())?;
        let after = mem_total_mib(guest)?;
        check(plugged == before + 256, || {
            format!("MemTotal {before} MiB -> {plugged} MiB with 256 MiB plugged")
        })?;
        check(after == before, || {
            format!("MemTotal {before} MiB, {after} MiB after unplugging")
        })?;
        Ok(format!(
            "MemTotal {before} -> {plugged} MiB in {:.2} s -> {after} MiB",
            took.as_secs_f64()
        ))
    }
}
