//! The "VM" of the suite's balloon cases: a memory cgroup made for one case,
//! under this process's own, with a fixed memory limit. Guest and balloon
//! both join it, so what the balloon takes is physical memory the guest no
//! longer has: the kernel charges both to the one limit, and past it, it
//! reclaims or OOM-kills inside the cgroup, never elsewhere.
//!
//! cgroup v2 (`memory.max`, `memory.current`, `memory.events`) and the v1
//! memory controller (`memory.limit_in_bytes`, `memory.usage_in_bytes`,
//! `memory.oom_control`) both work; hosts differ in which one has the
//! memory controller. A host where no such cgroup can be made gives a
//! reason to skip, with the command that would make one possible.

use super::memory_meter::{self, MemoryCgroup, Version};
use std::path::Path;
use std::time::Duration;

/// A memory cgroup made for one case, removed on drop, even when the case
/// fails or panics.
pub struct CgroupGuard {
    pub cgroup: MemoryCgroup,
    /// The folder's name, which is all the suite prints of it.
    pub name: String,
}

/// Why a case cannot have a cgroup here: a skip, never a pass.
pub struct NoCgroup(pub String);

/// Makes the cgroup `name` under this process's memory cgroup, with a hard
/// limit of `limit` bytes and no swap.
pub fn create(name: &str, limit: u64) -> Result<Result<CgroupGuard, NoCgroup>, String> {
    let parent = match memory_meter::memory_cgroup() {
        Ok(cgroup) => cgroup,
        Err(why) => {
            return Ok(Err(NoCgroup(format!(
                "no memory cgroup for this process ({why}); mount one, as root: `mount -t \
                 cgroup2 none /sys/fs/cgroup` (v2), or `mount -t cgroup -o memory none \
                 /sys/fs/cgroup/memory` (v1)"
            ))))
        }
    };
    let name = format!("{name}-{}", std::process::id());
    let dir = parent.dir.join(&name);
    if let Err(e) = std::fs::create_dir(&dir) {
        return Ok(Err(NoCgroup(format!(
            "cannot create a child of this process's memory cgroup ({} {}): {e}; run the \
             suite as a user who may write there (root, or the owner of a delegated cgroup)",
            parent.version.name(),
            parent.dir.display()
        ))));
    }
    let guard = CgroupGuard {
        cgroup: MemoryCgroup {
            version: parent.version,
            dir,
        },
        name,
    };
    let (limit_file, swap_file, no_swap) = match parent.version {
        Version::V2 => ("memory.max", "memory.swap.max", "0".to_string()),
        Version::V1 => (
            "memory.limit_in_bytes",
            "memory.memsw.limit_in_bytes",
            limit.to_string(),
        ),
    };
    if !guard.cgroup.dir.join(limit_file).exists() {
        return Ok(Err(NoCgroup(format!(
            "the new cgroup has no {limit_file}: the memory controller is not enabled for \
             the children of {}; `echo +memory > {}/cgroup.subtree_control` enables it, but \
             cgroup v2 allows that only in the root cgroup or one with no processes of its \
             own, and this process is in it: run the suite in the root cgroup, as root, or \
             on a host whose memory controller is on cgroup v1",
            parent.dir.display(),
            parent.dir.display()
        ))));
    }
    guard.write(limit_file, &limit.to_string())?;
    // No swap to escape to, where the host has swap (as the selftests do).
    if guard.cgroup.dir.join(swap_file).exists() {
        guard.write(swap_file, &no_swap)?;
    }
    Ok(Ok(guard))
}

impl CgroupGuard {
    fn write(&self, file: &str, value: &str) -> Result<(), String> {
        let path = self.cgroup.dir.join(file);
        std::fs::write(&path, value).map_err(|e| format!("{}/{file}: {e}", self.name))
    }

    /// The `cgroup.procs` file a child writes its pid to, to join.
    pub fn procs(&self) -> std::path::PathBuf {
        self.cgroup.dir.join("cgroup.procs")
    }

    /// The memory charged to the cgroup now, in bytes.
    pub fn usage(&self) -> Result<u64, String> {
        let reading = self.cgroup.usage()?;
        reading
            .value
            .ok_or_else(|| format!("{}: no usage", self.name))
    }

    pub fn limit(&self) -> Result<u64, String> {
        let reading = self.cgroup.limit()?;
        reading
            .value
            .ok_or_else(|| format!("{}: no limit", self.name))
    }

    pub fn oom_kills(&self) -> Result<u64, String> {
        Ok(self.cgroup.oom_kills()?.value)
    }

    pub fn version(&self) -> &'static str {
        self.cgroup.version.name()
    }

    /// The v1 or v2 file an event count came from, by name only.
    pub fn oom_file(&self) -> &'static str {
        match self.cgroup.version {
            Version::V2 => "memory.events",
            Version::V1 => "memory.oom_control",
        }
    }
}

/// Moves the calling process into the cgroup whose `cgroup.procs` is
/// `procs`. A child calls it first thing, before it takes any memory.
pub fn join(procs: &Path) -> Result<(), String> {
    std::fs::write(procs, std::process::id().to_string())
        .map_err(|e| format!("joining the cgroup: {e}"))
}

impl Drop for CgroupGuard {
    fn drop(&mut self) {
        // A cgroup can be removed once no process is in it; the kernel may
        // need a moment after the last one is reaped.
        for _ in 0..500 {
            match std::fs::remove_dir(&self.cgroup.dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                _ => return,
            }
        }
        eprintln!("dynamic_memory: could not remove the cgroup {}", self.name);
    }
}
