//! The wasm contract on every memory, and every fallback path, driven by
//! fault injection.

use crate::linear_memory::{
    Faults, GrowError, GrowPath, LinearMemory, Options, MAX_PAGES, WASM_PAGE,
};
use crate::memories::{assert_pattern, fill, Kind, Memory, ALL};

fn filled(kind: Kind, pages: u32) -> Memory {
    let mut m = Memory::new(kind, pages, Some(64));
    fill(m.as_mut_slice());
    m
}

#[test]
fn grow_returns_the_old_size_and_zeroes_new_pages() {
    for kind in ALL {
        let mut m = filled(kind, 1);
        assert_eq!(m.grow(3), 1, "{kind:?}");
        assert_eq!(m.size(), 4);
        assert_pattern(m.as_slice(), WASM_PAGE, &format!("{kind:?}"));
        assert!(
            m.as_slice()[WASM_PAGE..].iter().all(|&b| b == 0),
            "{kind:?}"
        );
        assert_eq!(m.grow(0), 4, "{kind:?}: grow(0) is memory.size");
    }
}

#[test]
fn growing_past_the_maximum_returns_minus_one_and_changes_nothing() {
    for kind in ALL {
        let mut m = filled(kind, 2);
        let ptr = m.as_ptr();
        assert_eq!(m.grow(63), -1, "{kind:?}");
        assert_eq!(m.grow(u32::MAX), -1, "{kind:?}: old + delta overflows u32");
        assert_eq!((m.size(), m.as_ptr()), (2, ptr), "{kind:?}");
        assert_pattern(m.as_slice(), 2 * WASM_PAGE, &format!("{kind:?}"));
        assert_eq!(m.grow(62), 2, "{kind:?}: up to the maximum works");
    }
}

/// The spec makes a memory type with more than 65536 pages, or a minimum
/// above its maximum, invalid: the memory is refused, never clamped.
#[test]
fn invalid_memory_types_are_refused() {
    for kind in ALL {
        let err = Memory::try_new(kind, 0, Some(MAX_PAGES + 1)).err();
        assert!(
            err.as_deref().is_some_and(|e| e.contains("65536")),
            "{kind:?}: {err:?}"
        );
        let err = Memory::try_new(kind, 5, Some(4)).err();
        assert!(
            err.as_deref().is_some_and(|e| e.contains("minimum")),
            "{kind:?}: {err:?}"
        );
        assert!(
            Memory::try_new(kind, 0, Some(MAX_PAGES)).is_ok(),
            "{kind:?}: 65536 is valid"
        );
    }
    let guard = |guard_bytes| Options {
        guard_bytes,
        fixed_base: false,
    };
    let odd_guard = LinearMemory::with_options(0, Some(4), None, guard(4096)).err();
    assert!(
        matches!(odd_guard, Some(GrowError::Invalid(_))),
        "{odd_guard:?}"
    );
    let big = LinearMemory::with_options(0, Some(4), Some(MAX_PAGES + 1), Options::default());
    assert!(
        matches!(big, Err(GrowError::Invalid(_))),
        "a reservation above 4 GiB"
    );
}

/// An empty reservation maps nothing, and growing it maps a first one: no
/// empty region ever reaches `munmap` (which fails on length 0; a debug
/// build checks every `munmap`).
#[test]
fn an_empty_reservation_grows() {
    let mut m = LinearMemory::new(0, Some(10), Some(0)).expect("an empty memory");
    assert_eq!(m.capacity(), 0);
    assert_eq!(
        m.grow_traced(1).map(|g| g.1).ok(),
        Some(GrowPath::Allocated)
    );
    assert_eq!(m.grow(1), 1);
    m.as_mut_slice()[2 * WASM_PAGE - 1] = 7;
    drop(m);
    let empty = LinearMemory::new(0, Some(10), Some(0)).expect("an empty memory");
    drop(empty);
}

#[test]
fn out_of_bounds_access_is_an_error() {
    for kind in ALL {
        let mut m = Memory::new(kind, 1, Some(2));
        let page = WASM_PAGE as u64;
        assert!(m.slice(page - 8, 8).is_some(), "{kind:?}");
        assert!(
            m.slice(page - 7, 8).is_none(),
            "{kind:?}: one byte past the end"
        );
        assert!(!m.write(u64::MAX, &[1]), "{kind:?}");
        assert!(
            m.slice(1, usize::MAX).is_none(),
            "{kind:?}: offset + len overflows"
        );
        let empty = Memory::new(kind, 0, Some(1));
        assert!(empty.slice(0, 1).is_none(), "{kind:?}");
        assert_eq!(empty.slice(0, 0).map(<[u8]>::len), Some(0), "{kind:?}");
    }
}

#[test]
fn a_full_reservation_commits_in_place_and_the_base_never_moves() {
    let mut m = LinearMemory::new(1, Some(64), None).expect("memory");
    fill(m.as_mut_slice());
    let base = m.as_ptr();
    for _ in 0..63 {
        assert_eq!(
            m.grow_traced(1).map(|g| g.1).ok(),
            Some(GrowPath::Committed)
        );
        assert_eq!(m.as_ptr(), base);
    }
    assert_pattern(m.as_slice(), WASM_PAGE, "after 63 commits");
    assert_eq!(
        m.segments(),
        [64 * WASM_PAGE],
        "one mapping, grown in place"
    );
}

#[test]
fn an_exhausted_reservation_moves_without_changing_a_byte() {
    let mut m = LinearMemory::new(2, Some(64), Some(2)).expect("memory");
    fill(m.as_mut_slice());
    let before = m.as_ptr();
    let path = m.grow_traced(1).map(|g| g.1).expect("grow");
    let want = if cfg!(target_os = "linux") {
        GrowPath::Relocated
    } else {
        GrowPath::Copied
    };
    assert_eq!(path, want);
    assert_ne!(m.as_ptr(), before, "the pages moved to a new reservation");
    assert_eq!(m.capacity(), 4 * WASM_PAGE, "the reservation doubled");
    assert_pattern(m.as_slice(), 2 * WASM_PAGE, "after the move");
    assert_eq!(
        m.grow_traced(1).map(|g| g.1).ok(),
        Some(GrowPath::Committed)
    );
}

/// Each injected failure falls through to the next path; when every path
/// fails, `grow` returns -1 with nothing changed.
#[test]
fn every_fallback_runs_when_the_path_before_it_fails() {
    use GrowPath::*;
    let relocated_or_copied = if cfg!(target_os = "linux") {
        Relocated
    } else {
        Copied
    };
    let cases: [(Option<u32>, &[GrowPath], Option<GrowPath>); 6] = [
        (None, &[], Some(Committed)),
        (None, &[Committed], Some(Copied)),
        (None, &[Committed, Copied], None),
        (Some(2), &[], Some(relocated_or_copied)),
        (Some(2), &[Relocated], Some(Copied)),
        (Some(2), &[Relocated, Copied], None),
    ];
    for (reservation, failing, want) in cases {
        let mut m = LinearMemory::new(2, Some(64), reservation).expect("memory");
        fill(m.as_mut_slice());
        let (ptr, segments) = (m.as_ptr(), m.segments().to_vec());
        m.inject_faults(Faults {
            paths: failing.to_vec(),
            ..Faults::default()
        });
        let what = format!("reservation {reservation:?}, failing {failing:?}");
        match want {
            Some(path) => {
                assert_eq!(m.grow_traced(1).map(|g| g.1).ok(), Some(path), "{what}");
                assert_eq!(m.size(), 3, "{what}");
            }
            None => {
                assert_eq!(m.grow(1), -1, "{what}");
                assert_eq!((m.size(), m.as_ptr()), (2, ptr), "{what}: unchanged");
                assert_eq!(m.segments(), segments, "{what}: unchanged");
            }
        }
        assert_pattern(m.as_slice(), 2 * WASM_PAGE, &what);
    }
}

#[test]
fn every_remap_fallback_runs_when_the_path_before_it_fails() {
    use crate::remap_memory::{GrowPath::*, Growth, RemapMemory};
    let linux = cfg!(target_os = "linux");
    let cases = [
        (
            vec![],
            if linux {
                vec![ExtendedInPlace, Moved]
            } else {
                vec![Copied]
            },
        ),
        (vec![ExtendedInPlace, Moved], vec![Copied]),
        (vec![ExtendedInPlace, Moved, Copied], vec![]),
    ];
    for (failing, allowed) in cases {
        let mut m = RemapMemory::new(2, Some(64), Growth::Remap).expect("memory");
        fill(m.as_mut_slice());
        let ptr = m.as_ptr();
        m.inject_faults(&failing);
        match m.grow_traced(1) {
            Ok((_, path)) => assert!(allowed.contains(&path), "{failing:?}: took {path:?}"),
            Err(e) => {
                assert!(allowed.is_empty(), "{failing:?}: {e:?}");
                assert_eq!((m.size(), m.as_ptr()), (2, ptr), "{failing:?}: unchanged");
            }
        }
        assert_pattern(m.as_slice(), 2 * WASM_PAGE, &format!("{failing:?}"));
    }
}

/// A runtime that compiled code against a fixed base: the memory commits in
/// place or refuses, never copies, even when committing fails.
#[test]
fn a_fixed_base_never_moves() {
    let options = Options {
        guard_bytes: 2 * WASM_PAGE,
        fixed_base: true,
    };
    let mut m = LinearMemory::with_options(1, Some(64), Some(4), options).expect("memory");
    fill(m.as_mut_slice());
    let base = m.as_ptr();
    assert_eq!(m.capacity(), 4 * WASM_PAGE, "the guard is not capacity");
    assert_eq!(
        m.address_range().len(),
        6 * WASM_PAGE,
        "reservation and guard"
    );
    assert_eq!(m.grow(3), 1, "up to the reservation");
    assert!(matches!(
        m.grow_traced(1),
        Err(GrowError::WouldMove { capacity_pages: 4 })
    ));
    assert_eq!(
        (m.size(), m.as_ptr()),
        (4, base),
        "refused past the reservation"
    );
    let mut m = LinearMemory::with_options(1, Some(64), Some(4), options).expect("memory");
    m.inject_faults(Faults {
        paths: vec![GrowPath::Committed],
        ..Faults::default()
    });
    let base = m.as_ptr();
    assert_eq!(m.grow(1), -1, "a failed commit is -1, not a copy");
    assert_eq!((m.size(), m.as_ptr()), (1, base));
}

/// The 4 GiB maximum is reachable and final. Nothing is touched, and the
/// reservation is never charged, so this needs only address space.
#[test]
#[cfg(target_pointer_width = "64")]
fn the_4_gib_maximum_is_reachable_and_final() {
    let mut memory = LinearMemory::new(0, None, None).expect("memory");
    assert_eq!(memory.grow(MAX_PAGES), 0);
    assert_eq!(memory.size(), MAX_PAGES);
    assert_eq!(memory.grow(1), -1, "past 65536 pages");
    assert_eq!(memory.grow(0), MAX_PAGES as i32);
    let last = memory.byte_len() as u64 - 1;
    assert!(memory.write(last, &[7]).is_ok());
    assert!(memory.write(last + 1, &[7]).is_err());
}
