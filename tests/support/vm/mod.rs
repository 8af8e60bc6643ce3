//! Real QEMU guests for the book's OS tests: boot a Debian kernel under TCG
//! with a busybox initramfs, drive QEMU over QMP (balloon, virtio-mem), and
//! run shell commands in the guest over a virtio-serial port.
//!
//! Shared by the xtask (`cargo xtask kernels`, which also builds the assets
//! this module boots: `xtask/src/vm_assets.rs`) and by the tests
//! (`tests/vm_harness.rs`), so it depends on std and serde_json only.
//!
//! ```text
//! let assets = vm::Assets::from_env()?.expect("run `cargo xtask vm-setup`");
//! let kernel = &assets.kernels[0];
//! let config = vm::GuestConfig::new(&assets, kernel)
//!     .memory_mib(1024)
//!     .balloon(vm::Balloon { free_page_reporting: true, deflate_on_oom: false })
//!     .virtio_mem(vm::VirtioMem { region_mib: 1024, block_mib: 2 })
//!     .share(Path::new(env!("CARGO_MANIFEST_DIR")));
//! let mut guest = vm::Guest::boot(config)?;
//! let out = guest.run("uname -r", Duration::from_secs(10))?;
//! assert_eq!(out.stdout.trim(), kernel.release);
//! guest.balloon_to(256 << 20, Duration::from_secs(20))?; // QMP `balloon`, until `query-balloon` agrees
//! guest.virtio_mem_to(512 << 20, Duration::from_secs(20))?; // `qom-set requested-size`, until `size` agrees
//! let total = guest.meminfo()?.mib("MemTotal");
//! guest.run("stress-ng --vm 1 --vm-bytes 300M -t 5", Duration::from_secs(30))?;
//! ```
//!
//! Every guest is killed when its [`Guest`] is dropped, and (through
//! `PR_SET_PDEATHSIG`) when the thread that booted it dies, so no guest
//! outlives its test. Keep a `Guest` on the thread that booted it.

#![allow(dead_code, unused_imports)]

mod assets;
mod channel;
mod error;
mod guest;
mod qmp;

pub use assets::{Assets, Boot, Kernel, ASSETS_ENV};
pub use channel::GuestOutput;
pub use error::{ErrorKind, VmError};
pub use guest::{Balloon, Guest, GuestConfig, Meminfo, VirtioMem};
pub use qmp::Qmp;

/// The guest's `/init`: it loads the modules, mounts the shares and serves
/// the command channel. The xtask writes it into every initramfs.
pub const INIT_SCRIPT: &str = include_str!("init.sh");

/// Where the initramfs puts what `/init` needs (busybox, the modules).
pub const GUEST_TOOLS_DIR: &str = "/dmb";

/// The modules `/init` needs, by the names `modinfo` gives them; the xtask
/// adds what they depend on. A kernel may have some built in.
pub const GUEST_MODULES: [&str; 6] = [
    "virtio_pci",
    "virtio_console",
    "virtio_balloon",
    "virtio_mem",
    "9pnet_virtio",
    "9p",
];

/// `'text'` for a POSIX shell, with embedded quotes escaped.
pub fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}
