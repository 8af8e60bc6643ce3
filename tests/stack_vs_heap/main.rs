//! `examples/stack_vs_heap.rs`, tested: stack arrays that overflow kill the
//! child process with Rust's overflow message, heap buffers run every length
//! on a small stack, and the kernel follows stdlib's `dmskmin`. The child is
//! this test binary, re-run and filtered to `child_entry_point`.

#[path = "../../examples/stack_vs_heap.rs"]
#[allow(dead_code)]
mod stack_vs_heap;
#[path = "../support/mod.rs"]
mod support;

use stack_vs_heap::*;
use std::process::{Command, ExitCode};
use std::time::Duration;

/// The child, when a test below spawns this test binary again with
/// `CHILD_ENV` set. In a normal test run it does nothing.
#[test]
fn child_entry_point() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        let code = if child_main(&spec) == ExitCode::SUCCESS {
            0
        } else {
            1
        };
        std::process::exit(code);
    }
}

/// This test binary, filtered to `child_entry_point` only. The example's
/// `run_child` runs it, as the example runs itself, and reads its report.
fn this_test_binary() -> Command {
    support::child::alone("child_entry_point")
}

#[test]
fn a_too_large_stack_array_aborts_the_child_with_the_overflow_message() {
    // 10^5 elements need 900,000 bytes; the thread has 64 KiB.
    let spec = child_spec(Where::Thread(64 << 10), &[10, 100_000]);
    let report = run_child(this_test_binary(), &spec, Duration::from_secs(20)).unwrap();
    assert!(report.is_this_program, "{report:?}");
    let lens: Vec<usize> = report.finished.iter().map(|(len, _)| *len).collect();
    assert_eq!(lens, [10], "{report:?}");
    #[cfg(unix)]
    assert_eq!(
        report.signal,
        Some((libc::SIGABRT, "SIGABRT")),
        "{report:?}"
    );
    let line = report.overflow_line.expect("the overflow message");
    assert!(line.contains("'stack-64KiB'"), "{line}");
}

#[test]
fn small_stack_arrays_fit_the_same_small_stack() {
    let spec = child_spec(Where::Thread(64 << 10), &[10, 100, 1_000]);
    let report = run_child(this_test_binary(), &spec, Duration::from_secs(20)).unwrap();
    let lens: Vec<usize> = report.finished.iter().map(|(len, _)| *len).collect();
    assert_eq!(lens, [10, 100, 1_000], "{report:?}");
    let heap = on_heap_len(1_000, SEED).to_string();
    assert_eq!(
        report.finished[2].1, heap,
        "the child's minimum is the heap's"
    );
    assert_eq!(report.code, Some(0), "{report:?}");
    assert_eq!(report.overflow_line, None);
}

/// `Box::new([0.0; N])` builds the array on the stack first: in a debug
/// build (the one `cargo test` makes) it overflows like a local array.
#[test]
#[cfg(debug_assertions)]
fn box_new_of_a_large_array_overflows_in_a_debug_build() {
    let spec = child_spec(Where::BoxNew(64 << 10), &[10, 100_000]);
    let report = run_child(this_test_binary(), &spec, Duration::from_secs(20)).unwrap();
    let lens: Vec<usize> = report.finished.iter().map(|(len, _)| *len).collect();
    assert_eq!(lens, [10], "{report:?}");
    #[cfg(unix)]
    assert_eq!(
        report.signal,
        Some((libc::SIGABRT, "SIGABRT")),
        "{report:?}"
    );
    assert!(report.overflow_line.is_some(), "{report:?}");
}

#[test]
fn heap_buffers_work_at_every_length_on_a_64_kib_stack() {
    let mins = std::thread::Builder::new()
        .stack_size(64 << 10)
        .spawn(|| LENGTHS.map(|len| on_heap_len(len, SEED)))
        .unwrap()
        .join()
        .expect("no overflow: the thread returned");
    for (len, min) in LENGTHS.iter().zip(mins) {
        assert!((-10_000.0..10_000.0).contains(&min), "len {len}: {min}");
    }
    // More elements can only lower the minimum of the same stream.
    assert!(mins.windows(2).all(|w| w[1] <= w[0]), "{mins:?}");
}

#[test]
fn stack_and_heap_versions_compute_the_same_minimum() {
    for len in [10, 100, 1_000] {
        assert_eq!(on_stack_len(len, SEED), Some(on_heap_len(len, SEED)));
    }
    assert_eq!(on_stack_len(7, SEED), None);
}

#[test]
fn masked_min_follows_stdlib_dmskmin() {
    let nan = f64::NAN;
    assert!(masked_min(0, &[], 1, &[], 1).is_nan(), "n = 0");
    assert!(
        masked_min(2, &[1.0, 2.0], 1, &[1, 1], 1).is_nan(),
        "all masked"
    );
    assert!(masked_min(3, &[1.0, nan, 0.5], 1, &[0, 0, 0], 1).is_nan());
    assert_eq!(masked_min(3, &[1.0, nan, 0.5], 1, &[0, 1, 0], 1), 0.5);
    assert_eq!(masked_min(3, &[4.0, -3.0, 2.0], 1, &[0, 1, 0], 1), 2.0);
    let zero = masked_min(2, &[0.0, -0.0], 1, &[0, 0], 1);
    assert!(zero == 0.0 && zero.is_sign_negative(), "-0.0 wins");
    assert_eq!(masked_min(1, &[f64::INFINITY], 1, &[0], 1), f64::INFINITY);
}

#[test]
fn masked_min_reads_every_stride_th_element() {
    let x = [5.0, -100.0, 3.0, -100.0, 4.0];
    let mask = [0u8; 7];
    assert_eq!(masked_min(3, &x, 2, &mask, 3), 3.0);
    let fine = std::panic::catch_unwind(|| masked_min(4, &x, 2, &mask, 1));
    assert!(fine.is_err(), "4 elements at stride 2 need 7 values");
}

#[test]
fn fill_masks_about_a_fifth_and_stays_in_range() {
    let (x, mask) = heap_buffers(100_000, 1);
    let masked = mask.iter().filter(|&&m| m == 1).count();
    assert!((19_000..21_000).contains(&masked), "{masked}");
    assert!(x.iter().all(|v| (-10_000.0..10_000.0).contains(v)));
    assert_eq!(heap_buffers(100, 1), heap_buffers(100, 1), "deterministic");
}

#[test]
fn limits_are_read_and_defaults_follow_rust_min_stack() {
    #[cfg(unix)]
    {
        let (soft, hard) = stack_rlimit().unwrap();
        if let (Some(soft), Some(hard)) = (soft, hard) {
            assert!(soft <= hard);
        }
        assert!(soft.is_none_or(|s| s >= 64 << 10), "{soft:?}");
    }
    assert_eq!(spawned_thread_default(None).0, 2 << 20);
    assert_eq!(spawned_thread_default(Some("65536")).0, 65536);
    assert_eq!(spawned_thread_default(Some("lots")).0, 2 << 20);
}

#[test]
fn child_specs_round_trip_and_bad_ones_are_refused() {
    for place in [Where::Thread(65536), Where::BoxNew(4096)] {
        let spec = child_spec(place, &LENGTHS);
        assert_eq!(parse_child_spec(&spec), Some((place, LENGTHS.to_vec())));
    }
    assert_eq!(parse_child_spec("thread big 10"), None);
    assert_eq!(parse_child_spec("heap 0 10"), None);
    assert_eq!(ExitCode::from(2), child_main("nonsense"));
}
