//! One QEMU guest: how it is configured, booted, driven and killed.

use std::collections::BTreeMap;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::assets::{Assets, Boot, Kernel};
use super::channel::{Channel, GuestOutput};
use super::error::{ErrorKind, VmError};
use super::qmp::Qmp;
use super::shell_quote;

const MIB: u64 = 1 << 20;

/// The kernel command line every guest gets. `panic=-1` (with QEMU's
/// `-no-reboot`): a panic ends QEMU at once. `swiotlb=noforce`: otherwise
/// the guest loses 64 MiB to bounce buffers. `online_movable`: hot-plugged
/// memory comes online, in ZONE_MOVABLE, so that it can be unplugged again.
/// `no_timer_check`: under TCG on a busy host the boot-time check that the
/// IO-APIC timer ticks can miss its window and panic ("IO-APIC + timer
/// doesn't work!"), as it did here.
pub const KERNEL_ARGS: &str = "console=ttyS0 panic=-1 memhp_default_state=online_movable \
     swiotlb=noforce no_timer_check";

/// The smallest balloon target the harness sends: below it a guest can
/// deadlock on memory and panic instead of failing the test cleanly.
pub const MIN_BALLOON_TARGET: u64 = 128 * MIB;

/// How many console lines an error repeats.
const CONSOLE_TAIL_LINES: usize = 30;

/// A virtio-balloon device (`balloon0`). Its target counts base RAM only
/// (QEMU 7.2): memory plugged by virtio-mem is not part of it. Without
/// `deflate_on_oom` the guest takes ballooned pages off MemTotal; with it,
/// MemTotal stays and only MemFree drops.
#[derive(Debug, Clone, Copy, Default)]
pub struct Balloon {
    /// The guest reports freed pages, and QEMU gives them back to the host.
    pub free_page_reporting: bool,
    /// The guest takes pages back from the balloon before its OOM killer runs.
    pub deflate_on_oom: bool,
}

/// A virtio-mem device (`vm0`) with room for `region_mib` of hot-pluggable
/// memory, in `block_mib` blocks, none of it plugged at boot.
#[derive(Debug, Clone, Copy)]
pub struct VirtioMem {
    pub region_mib: u64,
    pub block_mib: u64,
}

/// What to boot: every field has a default but the kernel.
#[derive(Debug, Clone)]
pub struct GuestConfig {
    pub qemu: PathBuf,
    pub qboot: PathBuf,
    pub kernel: Kernel,
    /// The guest's base RAM (`-m`).
    pub memory_mib: u64,
    pub cpus: u32,
    pub balloon: Option<Balloon>,
    pub virtio_mem: Option<VirtioMem>,
    /// Host folders mounted read-only at the same paths. `/usr` always is:
    /// the guest runs the host's programs and their libraries from it.
    pub shares: Vec<PathBuf>,
    pub boot_timeout: Duration,
}

impl GuestConfig {
    pub fn new(assets: &Assets, kernel: &Kernel) -> GuestConfig {
        GuestConfig {
            qemu: assets.qemu.clone(),
            qboot: assets.qboot.clone(),
            kernel: kernel.clone(),
            memory_mib: 512,
            cpus: 2,
            balloon: None,
            virtio_mem: None,
            shares: vec![PathBuf::from("/usr")],
            boot_timeout: Duration::from_secs(60),
        }
    }

    pub fn memory_mib(mut self, mib: u64) -> GuestConfig {
        self.memory_mib = mib;
        self
    }

    pub fn cpus(mut self, cpus: u32) -> GuestConfig {
        self.cpus = cpus;
        self
    }

    pub fn balloon(mut self, balloon: Balloon) -> GuestConfig {
        self.balloon = Some(balloon);
        self
    }

    pub fn virtio_mem(mut self, virtio_mem: VirtioMem) -> GuestConfig {
        self.virtio_mem = Some(virtio_mem);
        self
    }

    /// Also mounts `dir` (absolute) read-only at the same path in the guest,
    /// unless a folder it lies in is shared already.
    pub fn share(mut self, dir: &Path) -> GuestConfig {
        if !self.shares.iter().any(|s| dir.starts_with(s)) {
            self.shares.push(dir.to_path_buf());
        }
        self
    }

    pub fn boot_timeout(mut self, timeout: Duration) -> GuestConfig {
        self.boot_timeout = timeout;
        self
    }

    /// QEMU's arguments, sockets and logs in `dir`.
    fn qemu_args(&self, dir: &Path) -> Result<Vec<String>, VmError> {
        let path = |name: &str| dir.join(name).display().to_string();
        let mut memory = format!("{}M", self.memory_mib);
        if let Some(vm) = &self.virtio_mem {
            let max = self.memory_mib.checked_add(vm.region_mib).ok_or_else(|| {
                VmError::config("virtio-mem region + base memory overflows".to_owned())
            })?;
            memory = format!("{memory},slots=2,maxmem={max}M");
        }
        let mut shares = Vec::new();
        let mut args: Vec<String> = [
            "-accel",
            "tcg",
            "-nodefaults",
            "-no-user-config",
            "-nographic",
            "-monitor",
            "none",
            "-no-reboot",
        ]
        .map(str::to_owned)
        .to_vec();
        args.extend(["-m".into(), memory, "-smp".into(), self.cpus.to_string()]);
        args.extend(["-serial".into(), format!("file:{}", path("console.log"))]);
        args.extend([
            "-qmp".into(),
            format!("unix:{},server=on,wait=off", path("qmp.sock")),
        ]);
        args.extend([
            "-chardev".into(),
            format!(
                "socket,id=dmbcmd,path={},server=on,wait=off",
                path("cmd.sock")
            ),
            "-device".into(),
            "virtio-serial-pci,id=vser0".into(),
            "-device".into(),
            "virtserialport,bus=vser0.0,chardev=dmbcmd,name=dmb.cmd".into(),
        ]);
        for (i, dir) in self.shares.iter().enumerate() {
            let text = dir.to_str().unwrap_or_default();
            if !dir.is_absolute() || text.is_empty() || text.contains([',', ' ', ':']) {
                return Err(VmError::config(format!(
                    "cannot share {}: it must be an absolute path without commas, spaces or colons",
                    dir.display()
                )));
            }
            args.extend([
                "-fsdev".into(),
                format!(
                    "local,id=fs{i},path={text},security_model=none,readonly=on,multidevs=remap"
                ),
                "-device".into(),
                format!("virtio-9p-pci,fsdev=fs{i},mount_tag=fs{i}"),
            ]);
            shares.push(format!("fs{i}:{text}"));
        }
        if let Some(b) = &self.balloon {
            let on = |b: bool| if b { "on" } else { "off" };
            args.extend([
                "-device".into(),
                format!(
                    "virtio-balloon-pci,id=balloon0,free-page-reporting={},deflate-on-oom={}",
                    on(b.free_page_reporting),
                    on(b.deflate_on_oom)
                ),
            ]);
        }
        if let Some(vm) = &self.virtio_mem {
            args.extend([
                "-object".into(),
                format!("memory-backend-ram,id=vmem0,size={}M", vm.region_mib),
                "-device".into(),
                format!(
                    "virtio-mem-pci,id=vm0,memdev=vmem0,block-size={}M,requested-size=0",
                    vm.block_mib
                ),
            ]);
        }
        let image = self.kernel.image.display().to_string();
        if self.kernel.boot == Boot::Pvh {
            args.extend(["-bios".into(), self.qboot.display().to_string()]);
        }
        args.extend([
            "-kernel".into(),
            image,
            "-initrd".into(),
            self.kernel.initramfs.display().to_string(),
            "-append".into(),
            format!("{KERNEL_ARGS} dmb_shares={}", shares.join(",")),
        ]);
        Ok(args)
    }
}

/// A running guest. Dropping it kills QEMU.
pub struct Guest {
    child: Child,
    qmp: Qmp,
    channel: Channel,
    dir: PathBuf,
    config: GuestConfig,
    /// From starting QEMU to the guest's first answer on the channel.
    pub booted_in: Duration,
    /// `uname -r`, as the guest reported it.
    pub release: String,
}

impl Guest {
    /// Starts QEMU and waits (at most `config.boot_timeout`) until the guest
    /// serves commands.
    pub fn boot(config: GuestConfig) -> Result<Guest, VmError> {
        for file in [&config.qemu, &config.kernel.image, &config.kernel.initramfs] {
            if !file.is_file() {
                return Err(VmError::config(format!(
                    "{} is missing: run `cargo xtask vm-setup`",
                    file.display()
                )));
            }
        }
        let dir = scratch_dir()?;
        let args = config.qemu_args(&dir)?;
        let log = std::fs::File::create(dir.join("qemu.log"))
            .map_err(|e| VmError::config(format!("{}: {e}", dir.display())))?;
        let log_err = log
            .try_clone()
            .map_err(|e| VmError::config(format!("{e}")))?;
        let mut command = Command::new(&config.qemu);
        command
            .args(&args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        kill_with_parent(&mut command);
        let started = Instant::now();
        let child = command.spawn().map_err(|e| {
            VmError::new(
                ErrorKind::Boot,
                format!("cannot start {}: {e}", config.qemu.display()),
            )
        })?;
        let deadline = started + config.boot_timeout;
        let mut starting = Starting {
            child: Some(child),
            dir: dir.clone(),
            what: format!("booting {}", config.kernel.release),
            handed_over: false,
        };
        let qmp_socket = starting.connect(&dir.join("qmp.sock"), deadline)?;
        let qmp = Qmp::new(qmp_socket).map_err(|e| starting.fail(e))?;
        let stream = starting.connect(&dir.join("cmd.sock"), deadline)?;
        let mut channel = Channel::new(stream)
            .map_err(|e| starting.fail(VmError::new(ErrorKind::Boot, format!("{e}"))))?;
        let release = channel.handshake(deadline).map_err(|e| {
            // A channel that broke before the deadline: QEMU is exiting.
            let grace = if Instant::now() < deadline {
                Duration::from_secs(2)
            } else {
                Duration::ZERO
            };
            let exited = starting.exit_status_within(grace);
            let what = match exited {
                Some(status) => format!(
                    "QEMU exited ({status}) before the guest served commands: the kernel \
                     panicked or found no init"
                ),
                None => format!(
                    "the guest did not serve commands within {:.0} s of starting QEMU: {}",
                    config.boot_timeout.as_secs_f64(),
                    e.message
                ),
            };
            starting.fail(VmError::new(ErrorKind::Boot, what))
        })?;
        Ok(Guest {
            child: starting.booted(),
            qmp,
            channel,
            dir,
            config,
            booted_in: started.elapsed(),
            release,
        })
    }

    /// [`Guest::boot`], and one more boot if the first kernel panicked
    /// before it served commands. Under TCG a stock kernel now and then
    /// takes a fatal exception in its first seconds (6.12 did once, in
    /// `do_idle`, on a warm run of the kernel matrix), before any test has run: it
    /// says nothing about the memory under test. The first failure comes
    /// back beside the guest so that the caller prints it; a second failure,
    /// or a first one that is not a panic (a timeout, a missing file), is the
    /// error.
    pub fn boot_retrying_a_panic(config: GuestConfig) -> Result<(Guest, Option<VmError>), VmError> {
        match Guest::boot(config.clone()) {
            Ok(guest) => Ok((guest, None)),
            Err(first) if first.kind == ErrorKind::Boot && first.kernel_panicked() => {
                Guest::boot(config)
                    .map(|guest| (guest, Some(first)))
                    .map_err(|mut again| {
                        again.message = format!("booted twice: {}", again.message);
                        again
                    })
            }
            Err(e) => Err(e),
        }
    }

    pub fn config(&self) -> &GuestConfig {
        &self.config
    }

    /// QEMU's process id on the host: its RSS is the memory the guest holds
    /// (free page reporting gives pages back to the host).
    pub fn qemu_pid(&self) -> u32 {
        self.child.id()
    }

    /// Runs `script` with busybox `sh` in the guest (cwd `/`, stdin
    /// `/dev/null`, `PATH` busybox first, then the host's `/usr`), killing it
    /// and all it started after `timeout`. A process it starts in the
    /// background and that outlives it keeps running (a memory hog for a
    /// balloon test): redirect its output (`hog > /tmp/hog.log 2>&1 &`) and
    /// stop it with a later command.
    pub fn run(&mut self, script: &str, timeout: Duration) -> Result<GuestOutput, VmError> {
        let result = self.channel.run(script, timeout);
        result.map_err(|e| self.with_console(e))
    }

    /// Like [`Guest::run`], but a non-zero exit is an error too.
    pub fn run_ok(&mut self, script: &str, timeout: Duration) -> Result<GuestOutput, VmError> {
        let out = self.run(script, timeout)?;
        if out.success() {
            return Ok(out);
        }
        Err(self.with_console(VmError::new(
            ErrorKind::Command,
            format!(
                "guest command `{script}` exited with {}\nstdout: {}\nstderr: {}",
                out.status,
                out.stdout.trim_end(),
                out.stderr.trim_end()
            ),
        )))
    }

    /// A guest file's text.
    pub fn read_file(&mut self, path: &str) -> Result<String, VmError> {
        let script = format!("cat -- {}", shell_quote(path));
        Ok(self.run_ok(&script, Duration::from_secs(10))?.stdout)
    }

    /// The guest's `/proc/meminfo`.
    pub fn meminfo(&mut self) -> Result<Meminfo, VmError> {
        let text = self.read_file("/proc/meminfo")?;
        Meminfo::parse(&text).map_err(|e| self.with_console(VmError::new(ErrorKind::Command, e)))
    }

    /// The QMP connection, for commands this type has no method for.
    pub fn qmp(&mut self) -> &mut Qmp {
        &mut self.qmp
    }

    /// Asks the balloon to leave the guest `target` bytes of its base RAM
    /// (`balloon`), without waiting. Targets below [`MIN_BALLOON_TARGET`]
    /// are refused: the guest could deadlock on memory.
    pub fn set_balloon_target(&mut self, target: u64) -> Result<(), VmError> {
        if self.config.balloon.is_none() {
            return Err(VmError::config("this guest has no balloon device"));
        }
        if target < MIN_BALLOON_TARGET {
            return Err(VmError::config(format!(
                "balloon target {} MiB is below the harness's floor of {} MiB",
                target / MIB,
                MIN_BALLOON_TARGET / MIB
            )));
        }
        let result = self.qmp.execute("balloon", json!({ "value": target }));
        result.map(|_| ()).map_err(|e| self.with_console(e))
    }

    /// The memory the balloon leaves the guest (`query-balloon`'s `actual`).
    pub fn balloon_actual(&mut self) -> Result<u64, VmError> {
        let answer = self.qmp.execute("query-balloon", json!({}));
        let answer = answer.map_err(|e| self.with_console(e))?;
        answer
            .get("actual")
            .and_then(Value::as_u64)
            .ok_or_else(|| VmError::new(ErrorKind::Qmp, format!("query-balloon: {answer}")))
    }

    /// Sets the balloon target and waits until the guest has reached it.
    pub fn balloon_to(&mut self, target: u64, timeout: Duration) -> Result<Duration, VmError> {
        let started = Instant::now();
        self.set_balloon_target(target)?;
        self.wait_for("balloon", target, timeout, |g| g.balloon_actual())?;
        Ok(started.elapsed())
    }

    /// Asks virtio-mem to plug `bytes` (`requested-size`), without waiting.
    pub fn set_virtio_mem_requested(&mut self, bytes: u64) -> Result<(), VmError> {
        if self.config.virtio_mem.is_none() {
            return Err(VmError::config("this guest has no virtio-mem device"));
        }
        let result = self.qmp.qom_set("vm0", "requested-size", json!(bytes));
        result.map_err(|e| self.with_console(e))
    }

    /// The memory virtio-mem has plugged (`size`).
    pub fn virtio_mem_size(&mut self) -> Result<u64, VmError> {
        let answer = self.qmp.qom_get("vm0", "size");
        let answer = answer.map_err(|e| self.with_console(e))?;
        answer
            .as_u64()
            .ok_or_else(|| VmError::new(ErrorKind::Qmp, format!("qom-get vm0 size: {answer}")))
    }

    /// Requests `bytes` of virtio-mem memory and waits until it is plugged.
    pub fn virtio_mem_to(&mut self, bytes: u64, timeout: Duration) -> Result<Duration, VmError> {
        let started = Instant::now();
        self.set_virtio_mem_requested(bytes)?;
        self.wait_for("virtio-mem", bytes, timeout, |g| g.virtio_mem_size())?;
        Ok(started.elapsed())
    }

    fn wait_for(
        &mut self,
        what: &str,
        target: u64,
        timeout: Duration,
        read: impl Fn(&mut Guest) -> Result<u64, VmError>,
    ) -> Result<(), VmError> {
        let deadline = Instant::now() + timeout;
        loop {
            let now = read(self)?;
            if now == target {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let e = VmError::new(
                    ErrorKind::Command,
                    format!(
                        "{what}: still at {} MiB after {:.0} s, target {} MiB",
                        now / MIB,
                        timeout.as_secs_f64(),
                        target / MIB
                    ),
                );
                return Err(self.with_console(e));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last `lines` lines of the guest's serial console.
    pub fn console_tail(&self, lines: usize) -> String {
        console_tail(&self.dir, lines)
    }

    /// Asks QEMU to quit (`quit`), then waits for it; kills it if it lingers.
    pub fn shutdown(mut self) -> Result<(), VmError> {
        // QEMU may close the monitor before it answers `quit`.
        let _ = self.qmp.execute("quit", json!({}));
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(VmError::new(
            ErrorKind::Qmp,
            "QEMU did not exit within 10 s of `quit`; killed it",
        ))
    }

    fn with_console(&self, e: VmError) -> VmError {
        let tail = self.console_tail(CONSOLE_TAIL_LINES);
        e.with_console(tail)
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A guest being booted: on failure, kills QEMU and removes its folder.
struct Starting {
    child: Option<Child>,
    dir: PathBuf,
    /// `booting 6.1.0-57-amd64`, the start of every boot error.
    what: String,
    handed_over: bool,
}

impl Starting {
    /// Connects to `socket` once QEMU listens on it (the file appears
    /// before QEMU listens), failing if QEMU exits first.
    fn connect(&mut self, socket: &Path, deadline: Instant) -> Result<UnixStream, VmError> {
        loop {
            match UnixStream::connect(socket) {
                Ok(stream) => return Ok(stream),
                Err(e)
                    if !matches!(
                        e.kind(),
                        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                    ) =>
                {
                    let e = VmError::new(
                        ErrorKind::Boot,
                        format!("cannot connect to {}: {e}", socket.display()),
                    );
                    return Err(self.fail(e));
                }
                Err(_) => {}
            }
            let child = self.child.as_mut().expect("still starting");
            if let Ok(Some(status)) = child.try_wait() {
                let e = VmError::new(ErrorKind::Boot, format!("QEMU exited at once ({status})"));
                return Err(self.fail(e));
            }
            if Instant::now() >= deadline {
                let e = VmError::new(
                    ErrorKind::Boot,
                    format!("QEMU did not listen on {} in time", socket.display()),
                );
                return Err(self.fail(e));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// QEMU's exit status, if it exits within `grace`.
    fn exit_status_within(&mut self, grace: Duration) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        let until = Instant::now() + grace;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < until => std::thread::sleep(Duration::from_millis(20)),
                _ => return None,
            }
        }
    }

    /// Stops QEMU; `e` becomes a boot error with QEMU's own messages and
    /// the console's tail.
    fn fail(&mut self, mut e: VmError) -> VmError {
        e.kind = ErrorKind::Boot;
        e.message = format!("{}: {}", self.what, e.message);
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let qemu_log = std::fs::read_to_string(self.dir.join("qemu.log")).unwrap_or_default();
        if !qemu_log.trim().is_empty() {
            e.message = format!("{}\nQEMU said: {}", e.message, qemu_log.trim_end());
        }
        e.with_console(console_tail(&self.dir, CONSOLE_TAIL_LINES))
    }

    /// The booted QEMU, handed to its [`Guest`].
    fn booted(mut self) -> Child {
        self.handed_over = true;
        self.child.take().expect("still starting")
    }
}

impl Drop for Starting {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // A failed boot's error already has what the logs said.
        if !self.handed_over {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn console_tail(dir: &Path, lines: usize) -> String {
    let text = std::fs::read(dir.join("console.log")).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A fresh folder for one guest's sockets and logs. Under /tmp, not
/// `$TMPDIR`: a Unix socket's path must fit in 108 bytes.
fn scratch_dir() -> Result<PathBuf, VmError> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = PathBuf::from(format!("/tmp/dmb-vm-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)
        .map_err(|e| VmError::config(format!("{}: {e}", dir.display())))?;
    Ok(dir)
}

/// QEMU gets SIGKILL when the thread that started it dies, even by SIGKILL
/// (a test runner's timeout): no guest outlives its test.
fn kill_with_parent(command: &mut Command) {
    extern "C" {
        fn prctl(option: i32, ...) -> i32;
    }
    const PR_SET_PDEATHSIG: i32 = 1;
    const SIGKILL: u64 = 9;
    // SAFETY: the closure runs in the child between fork and exec, where only
    // async-signal-safe calls are allowed; prctl is a plain system call with
    // constant arguments and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            if prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// `/proc/meminfo` as a map from field to kB (`HugePages_*` are counts).
#[derive(Debug, Clone, PartialEq)]
pub struct Meminfo(pub BTreeMap<String, u64>);

impl Meminfo {
    pub fn parse(text: &str) -> Result<Meminfo, String> {
        let mut fields = BTreeMap::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let (name, rest) = line
                .split_once(':')
                .ok_or_else(|| format!("/proc/meminfo: no colon in `{line}`"))?;
            let number = rest.split_whitespace().next().unwrap_or_default();
            let value = number
                .parse()
                .map_err(|_| format!("/proc/meminfo: no number in `{line}`"))?;
            fields.insert(name.trim().to_owned(), value);
        }
        if !fields.contains_key("MemTotal") {
            return Err("/proc/meminfo has no MemTotal".to_owned());
        }
        Ok(Meminfo(fields))
    }

    /// A field in bytes (`MemTotal`, `MemAvailable`, ...).
    pub fn bytes(&self, name: &str) -> Option<u64> {
        self.0.get(name).and_then(|kb| kb.checked_mul(1024))
    }

    pub fn mib(&self, name: &str) -> Option<u64> {
        self.0.get(name).map(|kb| kb / 1024)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_meminfo() {
        let m =
            Meminfo::parse("MemTotal:  467856 kB\nMemFree: 4096 kB\nHugePages_Total: 0\n").unwrap();
        assert_eq!(m.mib("MemTotal"), Some(456));
        assert_eq!(m.bytes("MemFree"), Some(4096 * 1024));
        assert_eq!(m.0["HugePages_Total"], 0);
        assert!(Meminfo::parse("MemFree: 1 kB\n").is_err());
        assert!(Meminfo::parse("MemTotal 1 kB\n").is_err());
    }
}
