//! `examples/map_and_touch.rs`, tested: the /proc parsers, and on Linux
//! what the primer claims: mapping alone leaves RSS where it was, touching
//! raises it by what was touched (within a stated tolerance), and the
//! overcommit mode decides whether a mapping larger than RAM is accepted.
//! Every test reads Linux's /proc, so the suite is Linux only.
#![cfg(target_os = "linux")]

#[path = "../../examples/map_and_touch.rs"]
#[allow(dead_code)]
mod map_and_touch;

use map_and_touch::{counters, map_anonymous, page_size, resident_pages, touch, MIB};
use std::io;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// RSS is one number for the whole process, and the test harness runs
/// tests on parallel threads: the tests that measure it take turns.
static RSS_TESTS: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> MutexGuard<'static, ()> {
    RSS_TESTS.lock().unwrap_or_else(PoisonError::into_inner)
}

#[test]
fn proc_text_is_parsed_in_bytes() {
    let smaps = "55d0-7ffe ---p 00000000 00:00 0     [rollup]\n\
                 Rss:                1616 kB\n\
                 Pss:                 401 kB\n";
    assert_eq!(counters::kib_field(smaps, "Rss:"), Some(1616 * 1024));
    assert_eq!(counters::kib_field(smaps, "Swap:"), None);
    assert_eq!(counters::kib_field("Rss: many kB\n", "Rss:"), None);
    assert_eq!(counters::kib_field("Rss: 1616\n", "Rss:"), None, "no unit");
}

/// The exact reading, from `smaps_rollup`, in bytes; a test that fell back
/// to the fast counter would measure something else.
fn exact_rss() -> io::Result<u64> {
    let rss = counters::rss(None).map_err(io::Error::other)?;
    assert!(rss.source.contains("smaps_rollup"), "{}", rss.source);
    Ok(rss.value)
}

#[test]
fn the_fast_counter_reads_a_resident_size_within_the_virtual_size() -> io::Result<()> {
    let _turn = one_at_a_time();
    let size = counters::virtual_size(None)
        .map_err(io::Error::other)?
        .value;
    let resident = counters::fast_rss(None).map_err(io::Error::other)?.value;
    assert!(resident > 0, "a running process has resident pages");
    assert!(resident <= size, "resident {resident} > size {size}");
    Ok(())
}

#[test]
fn mapping_alone_does_not_raise_rss() -> io::Result<()> {
    let _turn = one_at_a_time();
    let page = page_size()?;
    let before = exact_rss()?;
    let map = map_anonymous(64 * MIB, false)?;
    let after = exact_rss()?;
    // mmap only records the range; it faults in no page. The 1 MiB
    // allows for the heap this test and the harness use meanwhile.
    let rise = after.saturating_sub(before);
    assert!(
        rise < MIB as u64,
        "mapping 64 MiB raised RSS by {rise} bytes"
    );
    assert_eq!(resident_pages(&map, page)?, 0);
    Ok(())
}

#[test]
fn overcommit_mode_decides_whether_a_huge_mapping_is_accepted() -> io::Result<()> {
    let mode_path = "/proc/sys/vm/overcommit_memory";
    let mode = std::fs::read_to_string(mode_path)
        .map_err(|e| io::Error::new(e.kind(), format!("{mode_path}: {e}")))?;
    let meminfo = std::fs::read_to_string("/proc/meminfo")
        .map_err(|e| io::Error::new(e.kind(), format!("/proc/meminfo: {e}")))?;
    let field = |name: &str| {
        counters::kib_field(&meminfo, name).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("/proc/meminfo: no {name}"),
            )
        })
    };
    let ram_and_swap = field("MemTotal:")? + field("SwapTotal:")?;
    // Twice the larger of RAM + swap (the mode 0 heuristic refuses one
    // mapping larger than that) and CommitLimit (the mode 2 limit).
    let wanted = 2 * ram_and_swap.max(field("CommitLimit:")?);
    // RLIMIT_AS and RLIMIT_DATA (which covers private writable mmap
    // since Linux 4.7) could refuse the mapping for another reason.
    for (name, resource) in [
        ("RLIMIT_AS", libc::RLIMIT_AS),
        ("RLIMIT_DATA", libc::RLIMIT_DATA),
    ] {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `limit` is a valid, writable `rlimit` that getrlimit
        // fills in; it keeps no pointer to it after returning.
        if unsafe { libc::getrlimit(resource, &mut limit) } != 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(e.kind(), format!("getrlimit({name}): {e}")));
        }
        if limit.rlim_cur != libc::RLIM_INFINITY && limit.rlim_cur < wanted {
            eprintln!(
                "skipped: {name} is {} bytes, below the {wanted} this test maps",
                limit.rlim_cur
            );
            return Ok(());
        }
    }
    let bytes = usize::try_from(wanted)
        .map_err(|_| io::Error::other("RAM + swap does not fit in usize"))?;

    // Each mapping is dropped (unmapped) at the end of its statement.
    let plain = map_anonymous(bytes, false).is_ok();
    let no_reserve = map_anonymous(bytes, true).is_ok();
    let expected = match mode.trim() {
        "0" => (false, true),  // heuristic: too big, unless not charged
        "1" => (true, true),   // always overcommit
        "2" => (false, false), // strict: MAP_NORESERVE is ignored
        other => panic!("{mode_path} holds an unknown mode {other:?}"),
    };
    assert_eq!(
        (plain, no_reserve),
        expected,
        "overcommit_memory={}: mapping {} MiB (plain, MAP_NORESERVE)",
        mode.trim(),
        bytes / MIB
    );
    Ok(())
}

#[test]
fn touching_32_of_64_mib_raises_rss_by_32_mib_within_tolerance() -> io::Result<()> {
    let _turn = one_at_a_time();
    let page = page_size()?;
    let touched_bytes = 32 * MIB;
    let mut map = map_anonymous(64 * MIB, false)?;
    let before = exact_rss()?;
    let pages = touch(&mut map, touched_bytes, page);
    let after = exact_rss()?;

    // Exact, for this range alone: every touched page is resident.
    assert_eq!(pages, touched_bytes / page);
    assert_eq!(resident_pages(&map[..touched_bytes], page)?, pages);

    // RSS covers the whole process, so allow a tolerance:
    // - at least 90%: pages leave RSS only if reclaimed (swapped out
    //   under memory pressure) or if other code frees memory meanwhile;
    // - at most 110% + 2 MiB: other threads of the harness may allocate
    //   meanwhile, and with transparent huge pages set to `always` one
    //   fault can map a whole 2 MiB page past the end of the range.
    let rise = after.saturating_sub(before) as f64;
    let touched = touched_bytes as f64;
    let (low, high) = (0.9 * touched, 1.1 * touched + 2.0 * MIB as f64);
    let report = format!(
        "RSS rose by {:.2} MiB after touching 32 MiB; allowed {:.1}..={:.1} MiB",
        rise / MIB as f64,
        low / MIB as f64,
        high / MIB as f64
    );
    // Shown with `cargo test --test map_and_touch -- --nocapture`.
    eprintln!("{report}");
    assert!((low..=high).contains(&rise), "{report}");
    Ok(())
}
