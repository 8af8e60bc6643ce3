//! What the OS really does, asserted: the kernel facts Part I's chapters state,
//! and `memory.grow` failing for real under `RLIMIT_DATA` (in a child process,
//! so the limit and any failure stay there).
#![cfg(target_os = "linux")]

#[path = "../examples/linear_memory.rs"]
#[allow(dead_code)]
mod linear_memory;

use linear_memory::{GrowError, GrowPath, LinearMemory, Strategy, WASM_PAGE};
use std::io;
use std::process::Command;
use std::time::{Duration, Instant};

const PAGE: usize = 4096;

fn errno_of(rc: *mut libc::c_void) -> Option<i32> {
    (rc == libc::MAP_FAILED).then(|| io::Error::last_os_error().raw_os_error().unwrap_or(0))
}

/// Chapter "Growing in place on Linux with mremap": mremap cannot grow a
/// mapping into the rest of its own PROT_NONE reservation. After mprotect the
/// reservation is two VMAs; growing the writable one gives ENOMEM, a range
/// spanning both gives EFAULT, and only MREMAP_MAYMOVE succeeds, by moving.
#[test]
fn mremap_cannot_grow_into_its_own_prot_none_reservation() {
    let len = 16 * PAGE;
    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;
    // SAFETY: a fresh anonymous mapping; we own it until the munmap below.
    let base = unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_NONE, flags, -1, 0) };
    assert_ne!(base, libc::MAP_FAILED, "{}", io::Error::last_os_error());
    // SAFETY: the first page of our own reservation.
    let rc = unsafe { libc::mprotect(base, PAGE, libc::PROT_READ | libc::PROT_WRITE) };
    assert_eq!(rc, 0, "{}", io::Error::last_os_error());

    // SAFETY (all three mremap calls): `base` is our mapping; a failed mremap
    // changes nothing, and a successful MAYMOVE hands us the new address.
    let grow_rw = unsafe { libc::mremap(base, PAGE, 2 * PAGE, 0) };
    assert_eq!(
        errno_of(grow_rw),
        Some(libc::ENOMEM),
        "growing the RW VMA in place"
    );
    let spanning = unsafe { libc::mremap(base, 2 * PAGE, 3 * PAGE, 0) };
    assert_eq!(
        errno_of(spanning),
        Some(libc::EFAULT),
        "a range across both VMAs"
    );
    let moved = unsafe { libc::mremap(base, PAGE, 2 * PAGE, libc::MREMAP_MAYMOVE) };
    assert_eq!(errno_of(moved), None, "{}", io::Error::last_os_error());
    assert_ne!(
        moved, base,
        "MREMAP_MAYMOVE had to move out of the reservation"
    );

    // SAFETY: both ranges are ours and unused from here on.
    unsafe {
        libc::munmap(moved, 2 * PAGE);
        libc::munmap(base, len);
    }
}

/// Runs the test named `name` of this binary again in a child process with
/// `DMB_CHILD=1`, `oom_score_adj` 1000 and a timeout; asserts it succeeded
/// and returns its output.
fn in_child(name: &str, timeout: Duration) -> String {
    let (status, text) = run_child(name, timeout);
    assert!(
        status.success(),
        "{name}: the child failed ({status}):\n{text}"
    );
    text
}

fn run_child(name: &str, timeout: Duration) -> (std::process::ExitStatus, String) {
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut child = Command::new(exe)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env("DMB_CHILD", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn the child");
    // The child may be killed by the OOM killer before anything else here.
    let _ = std::fs::write(format!("/proc/{}/oom_score_adj", child.id()), "1000");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            break status;
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            panic!("{name}: the child ran past {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let out = child.wait_with_output().expect("the child's output");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (status, text)
}

fn is_child() -> bool {
    std::env::var_os("DMB_CHILD").is_some()
}

/// The data segment size now, from /proc/self/status (`VmData`, kB).
fn vm_data() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kb: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("VmData:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("a VmData line");
    kb * 1024
}

fn set_data_limit(bytes: usize) {
    let limit = libc::rlimit {
        rlim_cur: bytes as libc::rlim_t,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain system call on a struct we own; lowering a soft limit
    // needs no privilege.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_DATA, &limit) };
    assert_eq!(rc, 0, "setrlimit: {}", io::Error::last_os_error());
}

/// Under `RLIMIT_DATA` the OS refuses the memory: `grow` returns -1, the
/// memory keeps its size, base and bytes, and a smaller grow still works.
/// RLIMIT_DATA (Linux 4.7+) counts private writable mappings, so it limits
/// `mprotect` commits, `mremap` growth and fresh mappings alike.
#[test]
fn grow_fails_cleanly_under_rlimit_data() {
    if !is_child() {
        let out = in_child(
            "grow_fails_cleanly_under_rlimit_data",
            Duration::from_secs(30),
        );
        print!("{out}");
        assert!(out.contains("checked 3 strategies"), "{out}");
        return;
    }
    // Headroom for the test harness, then 64 MiB for the memories.
    set_data_limit(vm_data() + 64 * 1024 * 1024);
    for strategy in [
        Strategy::Reserved {
            reservation_pages: None,
        },
        Strategy::Remap,
        Strategy::Copy,
    ] {
        let mut memory = LinearMemory::new(4, None, strategy).expect("4 pages fit");
        for (i, b) in memory.as_mut_slice().iter_mut().enumerate() {
            *b = (i % 253) as u8;
        }
        let before = (memory.size(), memory.as_ptr());
        // 2048 pages = 128 MiB: over the limit on every path.
        match memory.grow_traced(2048) {
            Err(GrowError::OutOfMemory { attempts }) => {
                assert!(!attempts.is_empty());
                for (path, e) in &attempts {
                    println!("{strategy:?}: {path:?} refused: {e}");
                }
            }
            other => panic!("{strategy:?}: expected OutOfMemory, got {other:?}"),
        }
        assert_eq!(
            (memory.size(), memory.as_ptr()),
            before,
            "{strategy:?} changed"
        );
        let intact = memory
            .as_slice()
            .iter()
            .enumerate()
            .all(|(i, &b)| b == (i % 253) as u8);
        assert!(intact, "{strategy:?}: bytes changed");
        assert_eq!(
            memory.grow(4),
            4,
            "{strategy:?}: a smaller grow still works"
        );
        assert!(memory.as_slice()[4 * WASM_PAGE..].iter().all(|&b| b == 0));
    }
    println!("checked 3 strategies");
}

/// Raising the soft limit again lets the same grow succeed (the LISA suite's
/// "hot add", for one process).
#[test]
fn a_raised_limit_lets_the_refused_grow_succeed() {
    if !is_child() {
        let out = in_child(
            "a_raised_limit_lets_the_refused_grow_succeed",
            Duration::from_secs(30),
        );
        assert!(out.contains("grew after the limit rose"), "{out}");
        return;
    }
    let base = vm_data();
    set_data_limit(base + 16 * 1024 * 1024);
    let mut memory = LinearMemory::new(
        1,
        None,
        Strategy::Reserved {
            reservation_pages: None,
        },
    )
    .expect("memory");
    memory.as_mut_slice()[0] = 42;
    assert_eq!(memory.grow(1024), -1, "64 MiB does not fit 16 MiB");
    set_data_limit(base + 128 * 1024 * 1024);
    assert_eq!(
        memory.grow_traced(1024).map(|g| g.1).ok(),
        Some(GrowPath::Committed)
    );
    assert_eq!(memory.as_slice()[0], 42);
    println!("grew after the limit rose");
}

/// Chapter "Reserve and commit": the uncommitted rest of a reservation is a
/// guard. An access one byte past the memory's size, made with a raw pointer
/// (which `LinearMemory`'s API never does), is killed by SIGSEGV; it does not
/// read some neighbour's data.
#[test]
fn an_access_past_the_committed_size_faults() {
    use std::os::unix::process::ExitStatusExt;
    if !is_child() {
        let (status, text) = run_child(
            "an_access_past_the_committed_size_faults",
            Duration::from_secs(30),
        );
        assert_eq!(status.signal(), Some(libc::SIGSEGV), "{status}: {text}");
        assert!(text.contains("about to read past the end"), "{text}");
        return;
    }
    let memory = LinearMemory::new(
        1,
        None,
        Strategy::Reserved {
            reservation_pages: None,
        },
    )
    .expect("memory");
    let past_end = memory.as_ptr().wrapping_add(memory.byte_len());
    println!("about to read past the end");
    // SAFETY: deliberately unsound, in a child process that exists to show
    // the fault: the byte is reserved PROT_NONE, so the read raises SIGSEGV.
    let byte = unsafe { past_end.read_volatile() };
    println!("read {byte}: the guard did not work");
}

/// The data segment grows by what is committed, not by what is reserved: a
/// 1 GiB PROT_NONE reservation adds nothing to `VmData` (so nothing to
/// `RLIMIT_DATA`), and committing 64 MiB of it adds 64 MiB.
#[test]
fn a_reservation_counts_toward_the_data_limit_only_once_committed() {
    if !is_child() {
        let out = in_child(
            "a_reservation_counts_toward_the_data_limit_only_once_committed",
            Duration::from_secs(30),
        );
        assert!(out.contains("VmData checked"), "{out}");
        return;
    }
    let mib = 1024 * 1024;
    let before = vm_data();
    let mut memory = LinearMemory::new(
        0,
        Some(16384),
        Strategy::Reserved {
            reservation_pages: None,
        },
    )
    .expect("memory");
    let reserved = vm_data();
    assert_eq!(memory.reserved_bytes(), 1024 * mib);
    assert!(
        reserved - before < mib,
        "reserving 1 GiB added {} bytes of VmData",
        reserved - before
    );
    assert_eq!(memory.grow(1024), 0);
    let committed = vm_data() - reserved;
    // A fixed band: the harness may map a little meanwhile; 1 MiB is ample.
    assert!(
        committed.abs_diff(64 * mib) < mib,
        "committing 64 MiB added {committed} bytes"
    );
    println!(
        "VmData checked: +{} KiB reserved, +{} KiB committed",
        (reserved - before) / 1024,
        committed / 1024
    );
}
