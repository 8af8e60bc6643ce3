//! What the kernel really does, asserted on the kernel that runs the test:
//! the facts Part I's chapters state. Tests that lower a limit or expect a
//! signal run alone in a child process (`support::child`), with
//! `oom_score_adj` 1000 and a timeout.

use crate::linear_memory::{Faults, GrowError, GrowPath, LinearMemory, Options, WASM_PAGE};
use crate::memories::{assert_pattern, fill, Kind, Memory};
use crate::remap_memory::{self, Growth, RemapMemory};
use crate::support::child::{is_child, passes_alone, run_alone};
use crate::support::proc::{
    kernel_version, mappings_in, meminfo, overcommit_mode, protections_in, self_status,
};
use std::io;
use std::time::Duration;

const PAGE: usize = 4096;
const MIB: u64 = 1024 * 1024;

fn errno_of(rc: *mut libc::c_void) -> Option<i32> {
    (rc == libc::MAP_FAILED).then(|| io::Error::last_os_error().raw_os_error().unwrap_or(0))
}

/// A fresh `PROT_NONE | MAP_NORESERVE` reservation of `len` bytes.
fn reserve(len: usize) -> *mut libc::c_void {
    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;
    // SAFETY: a fresh anonymous mapping where the kernel chooses.
    let base = unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_NONE, flags, -1, 0) };
    assert_ne!(base, libc::MAP_FAILED, "{}", io::Error::last_os_error());
    base
}

fn make_rw(ptr: *mut libc::c_void, len: usize) {
    // SAFETY: a page-aligned range of a reservation the test owns.
    let rc = unsafe { libc::mprotect(ptr, len, libc::PROT_READ | libc::PROT_WRITE) };
    assert_eq!(rc, 0, "{}", io::Error::last_os_error());
}

/// "Growing in place on Linux with mremap": `mremap` cannot grow a mapping
/// into the rest of its own `PROT_NONE` reservation. After `mprotect` the
/// reservation is two VMAs: growing the writable one gives ENOMEM, a resize
/// spanning both gives EFAULT, and only MREMAP_MAYMOVE succeeds, by moving.
#[test]
fn mremap_cannot_grow_into_its_own_prot_none_reservation() {
    let len = 16 * PAGE;
    let base = reserve(len);
    make_rw(base, PAGE);
    // SAFETY (the three mremap calls): `base` is ours; a failed mremap of a
    // range within one mapping changes nothing; MAYMOVE hands us the new one.
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
        "a resize across both VMAs"
    );
    let moved = unsafe { libc::mremap(base, PAGE, 2 * PAGE, libc::MREMAP_MAYMOVE) };
    assert_eq!(errno_of(moved), None, "{}", io::Error::last_os_error());
    assert_ne!(
        moved, base,
        "MREMAP_MAYMOVE had to move out of the reservation"
    );
    // SAFETY: both ranges are ours and unused from here on. The first page
    // of `base` left with the move: another test thread may have mapped
    // something in that hole since, so it is not ours to unmap.
    unsafe {
        libc::munmap(moved, 2 * PAGE);
        libc::munmap(base.cast::<u8>().add(PAGE).cast(), len - PAGE);
    }
}

/// "When growth fails": one `mremap` moves one mapping before Linux 6.17.
/// A pure move (`old_size == new_size`, MREMAP_MAYMOVE | MREMAP_FIXED) of a
/// range that spans two VMAs fails with EFAULT there; since 6.17 it moves
/// both. This is why `LinearMemory` moves each segment with its own call.
#[test]
fn a_move_spanning_two_mappings_needs_linux_6_17() {
    let (from, to) = (reserve(4 * PAGE), reserve(4 * PAGE));
    make_rw(from, PAGE); // two VMAs: RW, then PROT_NONE
    let flags = libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED;
    // SAFETY: both reservations are ours; `to` may be replaced.
    let got = unsafe { libc::mremap(from, 2 * PAGE, 2 * PAGE, flags, to) };
    let version = kernel_version();
    if version >= (6, 17) {
        assert_eq!(
            errno_of(got),
            None,
            "{version:?}: {}",
            io::Error::last_os_error()
        );
    } else {
        assert_eq!(errno_of(got), Some(libc::EFAULT), "{version:?}");
    }
    // SAFETY: both ranges are ours and unused from here on, except the
    // first two pages of `from` after a move: that hole may hold another
    // test thread's mapping by now.
    let moved = got != libc::MAP_FAILED;
    let (keep, left) = if moved {
        (2 * PAGE, 2 * PAGE)
    } else {
        (0, 4 * PAGE)
    };
    unsafe {
        libc::munmap(from.cast::<u8>().add(keep).cast(), left);
        libc::munmap(to, 4 * PAGE);
    }
}

/// Each of `memory`'s segments lies within a single VMA, so each can move
/// with one `mremap` on every kernel.
fn assert_each_segment_is_one_mapping(memory: &LinearMemory) {
    let mut start = memory.address_range().start;
    for (n, &len) in memory.segments().iter().enumerate() {
        let vmas = mappings_in(start..start + len);
        assert_eq!(vmas.len(), 1, "segment {n} ({len} bytes) spans {vmas:?}");
        start += len;
    }
}

/// Relocation moves pages, never copies them, on every kernel: growing with
/// a 1-page reservation doubles it 8 times on the way to 256 pages, and each
/// relocation moves all the segments the ones before it left.
#[test]
fn relocation_moves_every_segment_without_copying() {
    let mut memory = LinearMemory::new(1, Some(256), Some(1)).expect("memory");
    fill(memory.as_mut_slice());
    let mut relocations = 0;
    while memory.size() < 256 {
        let old_len = memory.byte_len();
        let (_, path) = memory.grow_traced(1).expect("grow");
        assert_ne!(
            path,
            GrowPath::Copied,
            "at {} pages: {:?}",
            memory.size(),
            memory.segments()
        );
        if path == GrowPath::Relocated {
            relocations += 1;
            assert_each_segment_is_one_mapping(&memory);
            assert_pattern(
                memory.as_slice(),
                old_len.min(WASM_PAGE),
                "after a relocation",
            );
        }
    }
    assert_eq!(relocations, 8, "1 -> 2 -> 4 -> ... -> 256 pages");
    assert_eq!(
        memory.segments().len(),
        9,
        "the first pages and one per relocation"
    );
    assert_pattern(memory.as_slice(), WASM_PAGE, "at 256 pages");
}

/// A relocation that fails after moving some segments moves them back: the
/// grow returns -1 and the memory keeps its base, size, bytes and mapped
/// pages, whether the pages go back by `mremap` or, if that fails too, by
/// copying.
#[test]
fn a_relocation_failing_between_segments_loses_no_byte() {
    for move_back_fails in [false, true] {
        let mut memory = LinearMemory::new(1, Some(64), Some(1)).expect("memory");
        assert_eq!(memory.grow(1), 1);
        assert_eq!(memory.grow(2), 2); // 4 pages: two relocations, three segments
        assert_eq!(memory.segments().len(), 3);
        fill(memory.as_mut_slice());
        let range = memory.address_range();
        let before = (memory.as_ptr(), memory.size(), memory.segments().to_vec());
        let protections = protections_in(range.clone());
        for failing_segment in 1..3 {
            memory.inject_faults(Faults {
                paths: vec![GrowPath::Copied],
                segment_move: Some(failing_segment),
                move_back: move_back_fails,
            });
            let what = format!("segment {failing_segment}, move back fails: {move_back_fails}");
            match memory.grow_traced(1) {
                Err(GrowError::OutOfMemory { attempts }) => assert_eq!(attempts.len(), 2, "{what}"),
                other => panic!("{what}: expected -1, got {other:?}"),
            }
            let after = (memory.as_ptr(), memory.size(), memory.segments().to_vec());
            assert_eq!(after, before, "{what}");
            assert_pattern(memory.as_slice(), memory.byte_len(), &what);
            assert_eq!(
                protections_in(range.clone()),
                protections,
                "{what}: the same pages mapped, with the same permissions"
            );
        }
        memory.inject_faults(Faults::default());
        assert_eq!(
            memory.grow_traced(1).map(|g| g.1).ok(),
            Some(GrowPath::Relocated)
        );
        assert_pattern(memory.as_slice(), 4 * WASM_PAGE, "then it relocates");
    }
}

/// "Reserve and commit", with `MAP_NORESERVE`: in overcommit modes 0 and 1
/// the kernel marks the reservation VM_NORESERVE and never charges its
/// commits to `Committed_AS`; a plain private writable mapping is charged
/// when mapped. Mode 2 ignores MAP_NORESERVE and charges both. Committed_AS
/// is system-wide, so each side is measured five times and the median kept.
#[test]
fn map_noreserve_commits_are_not_charged_outside_mode_2() {
    let len = 512 * MIB as usize;
    let median = |measure: &dyn Fn() -> i64| {
        let mut deltas: Vec<i64> = (0..5).map(|_| measure()).collect();
        deltas.sort();
        deltas[2]
    };
    let committed = || meminfo("Committed_AS") as i64;
    let noreserve = median(&|| {
        let mut memory = LinearMemory::new(0, None, None).expect("a 4 GiB reservation");
        let before = committed();
        assert_eq!(memory.grow((len / WASM_PAGE) as u32), 0);
        committed() - before
    });
    let plain = median(&|| {
        let before = committed();
        let memory = RemapMemory::new((len / WASM_PAGE) as u32, None, Growth::Copy);
        let delta = committed() - before;
        drop(memory.expect("a 512 MiB mapping"));
        delta
    });
    let (charged, slack) = (len as i64, 64 * MIB as i64);
    println!(
        "Committed_AS: +{} KiB for NORESERVE commits, +{} KiB plain",
        noreserve / 1024,
        plain / 1024
    );
    assert!(
        (plain - charged).abs() < slack,
        "a plain mapping is charged: +{plain}"
    );
    match overcommit_mode() {
        2 => assert!(
            (noreserve - charged).abs() < slack,
            "mode 2 charges: +{noreserve}"
        ),
        _ => assert!(
            noreserve.abs() < slack,
            "modes 0 and 1 do not: +{noreserve}"
        ),
    }
}

/// Under `RLIMIT_DATA` the OS refuses the memory: `grow` returns -1 and the
/// memory keeps its size, base and bytes; a smaller grow still works.
/// RLIMIT_DATA (Linux 4.7+) counts private writable mappings, so it limits
/// `mprotect` commits, `mremap` growth and fresh mappings alike.
#[test]
fn grow_fails_cleanly_under_rlimit_data() {
    if !is_child() {
        passes_alone(
            "os::grow_fails_cleanly_under_rlimit_data",
            "checked 4 kinds",
        );
        return;
    }
    set_data_limit(self_status("VmData") + 64 * MIB);
    for kind in [
        Kind::Reserved(None),
        Kind::Reserved(Some(8)),
        Kind::Remap,
        Kind::Copy,
    ] {
        let mut memory = Memory::new(kind, 4, None);
        fill(memory.as_mut_slice());
        let before = (memory.size(), memory.as_ptr());
        let refused = memory.grow_path(2048); // 128 MiB: over the limit on every path
        assert!(
            refused.as_ref().is_err_and(|e| e.contains("OutOfMemory")),
            "{kind:?}: {refused:?}"
        );
        println!("{kind:?}: refused: {refused:?}");
        assert_eq!((memory.size(), memory.as_ptr()), before, "{kind:?} changed");
        assert_pattern(memory.as_slice(), 4 * WASM_PAGE, &format!("{kind:?}"));
        assert_eq!(memory.grow(4), 4, "{kind:?}: a smaller grow still works");
        assert!(memory.as_slice()[4 * WASM_PAGE..].iter().all(|&b| b == 0));
    }
    println!("checked 4 kinds");
}

/// Sets this process's RLIMIT_DATA soft limit to `bytes`, under the hard
/// limit it has, with the bounded child's `set_limit`.
fn set_data_limit(bytes: u64) {
    use crate::rlimit_child::{get_limit, set_limit, Resource};
    let hard = get_limit(0, Resource::Data).expect("getrlimit").rlim_max;
    let limit = libc::rlimit {
        rlim_cur: bytes,
        rlim_max: hard,
    };
    set_limit(0, Resource::Data, &limit).expect("setrlimit");
}

/// Raising the soft limit again lets the same grow succeed.
#[test]
fn a_raised_limit_lets_the_refused_grow_succeed() {
    if !is_child() {
        passes_alone(
            "os::a_raised_limit_lets_the_refused_grow_succeed",
            "grew after the limit rose",
        );
        return;
    }
    let base = self_status("VmData");
    set_data_limit(base + 16 * MIB);
    let mut memory = LinearMemory::new(1, None, None).expect("memory");
    memory.as_mut_slice()[0] = 42;
    assert_eq!(memory.grow(1024), -1, "64 MiB does not fit 16 MiB");
    set_data_limit(base + 128 * MIB);
    assert_eq!(
        memory.grow_traced(1024).map(|g| g.1).ok(),
        Some(GrowPath::Committed)
    );
    assert_eq!(memory.as_slice()[0], 42);
    println!("grew after the limit rose");
}

/// Reads the byte just past the memory's size with a raw pointer (which the
/// memory's own API never does), in a child that exists to be killed.
fn read_past_the_end(memory: &LinearMemory) {
    let past_end = memory.as_ptr().wrapping_add(memory.byte_len());
    println!("about to read past the end");
    // SAFETY: deliberately unsound, in a child process that exists to show
    // the fault: the byte is reserved PROT_NONE, so the read raises SIGSEGV.
    let byte = unsafe { past_end.read_volatile() };
    println!("read {byte}: nothing stopped it");
}

fn assert_killed_by_sigsegv(name: &str) {
    use std::os::unix::process::ExitStatusExt;
    let run = run_alone(name, Duration::from_secs(30));
    assert_eq!(
        run.status.signal(),
        Some(libc::SIGSEGV),
        "{}: {}",
        run.status,
        run.output
    );
    assert!(
        run.output.contains("about to read past the end"),
        "{}",
        run.output
    );
}

/// The uncommitted rest of a reservation faults: one byte past the size.
#[test]
fn an_access_past_the_committed_size_faults() {
    if !is_child() {
        return assert_killed_by_sigsegv("os::an_access_past_the_committed_size_faults");
    }
    read_past_the_end(&LinearMemory::new(1, None, None).expect("memory"));
}

/// A full memory has no uncommitted rest; its guard still faults.
#[test]
fn a_full_memory_faults_in_its_guard() {
    if !is_child() {
        return assert_killed_by_sigsegv("os::a_full_memory_faults_in_its_guard");
    }
    let options = Options {
        guard_bytes: WASM_PAGE,
        fixed_base: true,
    };
    let memory = LinearMemory::with_options(4, Some(4), None, options).expect("memory");
    assert_eq!(memory.capacity(), memory.byte_len(), "full");
    read_past_the_end(&memory);
}

/// The data segment grows by what is committed, not by what is reserved: a
/// 1 GiB reservation adds nothing to `VmData` (so nothing to RLIMIT_DATA),
/// and committing 64 MiB of it adds 64 MiB.
#[test]
fn a_reservation_counts_toward_the_data_limit_only_once_committed() {
    if !is_child() {
        let marker = "VmData checked";
        passes_alone(
            "os::a_reservation_counts_toward_the_data_limit_only_once_committed",
            marker,
        );
        return;
    }
    let before = self_status("VmData");
    let mut memory = LinearMemory::new(0, Some(16384), None).expect("memory");
    let reserved = self_status("VmData");
    assert_eq!(memory.capacity() as u64, 1024 * MIB);
    assert!(
        reserved - before < MIB,
        "reserving 1 GiB added {} bytes",
        reserved - before
    );
    assert_eq!(memory.grow(1024), 0);
    let committed = self_status("VmData") - reserved;
    // A fixed band: the harness may map a little meanwhile; 1 MiB is ample.
    assert!(
        committed.abs_diff(64 * MIB) < MIB,
        "committing 64 MiB added {committed}"
    );
    println!(
        "VmData checked: +{} KiB reserved, +{} KiB committed",
        (reserved - before) / 1024,
        committed / 1024
    );
}

/// Maps one page at exactly `at`, failing rather than replacing anything
/// already there (MAP_FIXED_NOREPLACE, Linux 4.17).
fn map_fixed(at: *const u8, len: usize) -> Option<*mut libc::c_void> {
    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE;
    // SAFETY: NOREPLACE never touches an existing mapping.
    let got = unsafe { libc::mmap(at as *mut _, len, libc::PROT_READ, flags, -1, 0) };
    (got == at as *mut _).then_some(got)
}

#[test]
fn remap_moves_when_the_next_range_is_taken() {
    let mut m = RemapMemory::new(2, Some(64), Growth::Remap).expect("memory");
    fill(m.as_mut_slice());
    let end = m.as_ptr().wrapping_add(m.byte_len());
    let blocker = map_fixed(end, PAGE); // if something is there already, it blocks as well
    let before = m.as_ptr();
    assert_eq!(
        m.grow_traced(1).map(|g| g.1).ok(),
        Some(remap_memory::GrowPath::Moved)
    );
    assert_ne!(m.as_ptr(), before);
    assert_pattern(m.as_slice(), 2 * WASM_PAGE, "after the move");
    if let Some(b) = blocker {
        // SAFETY: we mapped this page above and nothing uses it.
        unsafe { libc::munmap(b, PAGE) };
    }
}

/// The kernel places new mappings top-down, right below the last one, so
/// the range after a fresh memory is usually taken. Make it free: map a
/// scratch region, let the memory land right below it, unmap the scratch,
/// then grow into the hole. Alone in a child, so no other test thread maps
/// into the hole meanwhile.
#[test]
fn remap_extends_in_place_when_the_next_range_is_free() {
    if !is_child() {
        passes_alone(
            "os::remap_extends_in_place_when_the_next_range_is_free",
            "extended in place",
        );
        return;
    }
    for _attempt in 0..10 {
        let scratch = reserve(4 * WASM_PAGE);
        let mut m = RemapMemory::new(1, Some(64), Growth::Remap).expect("memory");
        fill(m.as_mut_slice());
        let end = m.as_ptr().wrapping_add(m.byte_len());
        // SAFETY: the scratch reservation is ours and unused.
        unsafe { libc::munmap(scratch, 4 * WASM_PAGE) };
        if end != scratch as *const u8 {
            continue; // placed elsewhere: try again
        }
        assert_eq!(
            m.grow_traced(1).map(|g| g.1).ok(),
            Some(remap_memory::GrowPath::ExtendedInPlace)
        );
        assert_pattern(m.as_slice(), WASM_PAGE, "after extending");
        println!("extended in place");
        return;
    }
    panic!("the memory never landed right below the scratch region in 10 tries");
}
