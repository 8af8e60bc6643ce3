//! `examples/realloc_paths.rs`, tested: the growth policies' counts against
//! the math, and (Linux with glibc) the page faults of one `realloc`, which
//! tell a remap from a copy.

#[path = "../../examples/realloc_paths.rs"]
#[allow(dead_code)]
mod realloc_paths;

use realloc_paths::{grow_page_by_page, predicted, Page, Policy, STEP};

/// The counts match the math: `reserve` reallocates once per doubling,
/// `reserve_exact` once per page. (If std ever changes its growth factor,
/// this test says so.)
#[test]
fn reserve_reallocates_per_doubling_and_reserve_exact_per_page() {
    for pages in [1, 2, 5, 64, 100] {
        for policy in [Policy::Reserve, Policy::ReserveExact] {
            let (reallocs, copied) = predicted(policy, pages);
            let bytes = grow_page_by_page(policy, pages as usize, 1u8);
            let aligned = grow_page_by_page(policy, pages as usize, Page([1; STEP]));
            for growth in [bytes, aligned] {
                assert_eq!(growth.reallocations, reallocs, "{policy:?} to {pages}");
                assert!(growth.moves <= reallocs && growth.bytes_moved <= copied);
            }
        }
    }
    assert_eq!(predicted(Policy::Reserve, 256), (8, 255 * 4096));
    assert_eq!(predicted(Policy::ReserveExact, 256), (255, 32640 * 4096));
}

/// For an alignment above 16, std's `realloc` allocates the new block while
/// the old one still lives, then copies: every reallocation moves, and every
/// byte is copied, exactly as the math says.
#[test]
fn a_page_aligned_vec_moves_and_copies_on_every_reallocation() {
    for policy in [Policy::Reserve, Policy::ReserveExact] {
        let growth = grow_page_by_page(policy, 64, Page([1; STEP]));
        let (reallocs, copied) = predicted(policy, 64);
        assert_eq!(growth.moves, reallocs, "{policy:?}");
        assert_eq!(growth.bytes_moved, copied, "{policy:?}");
    }
}

/// The claim of the chapter, counted in page faults: one realloc of a
/// touched 64 MiB block to 128 MiB. Alignment 1 or 16: std calls
/// `libc::realloc`, glibc calls `mremap`, and no page is written (a few
/// faults at most). Alignment 32 or 4096: std allocates and copies, and each
/// page copied into the new block faults once.
#[test]
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn glibc_remaps_realloc_but_std_copies_alignments_above_16() {
    use realloc_paths::faults::*;
    if let Some(tuning) = malloc_tuning() {
        panic!("{tuning} changes glibc's malloc: run the test without it");
    }
    if let Err(e) = disable_thp() {
        assert_ne!(
            thp_setting(),
            "always",
            "THP is `always` and could not be turned off ({e}): the counts would mean nothing"
        );
    }
    let mib = 1 << 20;
    for (align, copies) in [(1, false), (16, false), (32, true), (4096, true)] {
        let run = measure_realloc(64 * mib, 128 * mib, align).expect("realloc");
        println!("align {align}: {run:?}");
        if copies {
            assert!(
                run.faults > run.pages / 2,
                "align {align} should copy: {run:?}"
            );
            assert!(run.moved, "a copy lands at a new address: {run:?}");
        } else {
            assert!(run.faults < 256, "align {align} should remap: {run:?}");
        }
    }
}

/// The THP counters the `--keep-thp` run prints are there to be read.
#[test]
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn the_thp_fault_counters_are_readable() {
    use realloc_paths::faults::vmstat;
    for key in ["thp_fault_alloc", "thp_fault_fallback"] {
        assert!(vmstat(key).is_some(), "no {key} in /proc/vmstat");
    }
    assert_eq!(vmstat("no_such_counter"), None);
}
