//! The manager's rules, one test each: the budget formula, the check at its
//! edge, growing ahead, releasing, whom a spill asks, what a failure says,
//! a spill that calls back in, and the scenario's output.

use crate::memory_manager::{
    Config, ErrorKind, Grant, MemoryConsumer, MemoryError, MemoryManager, Reservation,
    SpillableBuffer,
};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// A consumer whose spill frees a set number of bytes, or lies about it.
struct Fixed {
    reservation: Reservation,
    /// What `spill` really releases, at most.
    spillable: Mutex<u64>,
    /// Added to what `spill` reports, to test that the manager does not
    /// believe it.
    lie: u64,
    /// How many times `spill` was called.
    spilled: Mutex<u32>,
}

impl Fixed {
    fn new(manager: &Arc<MemoryManager>, name: &str, lie: u64) -> Arc<Fixed> {
        manager.register(name, |reservation| Fixed {
            reservation,
            spillable: Mutex::new(0),
            lie,
            spilled: Mutex::new(0),
        })
    }

    fn take(&self, bytes: u64) -> Result<Grant, MemoryError> {
        let grant = self.reservation.acquire(bytes)?;
        *self.spillable.lock().expect("lock") += bytes;
        Ok(grant)
    }

    /// From now on, `spill` frees nothing.
    fn pin(&self) {
        *self.spillable.lock().expect("lock") = 0;
    }
}

impl MemoryConsumer for Fixed {
    fn spill(&self, bytes: u64) -> u64 {
        *self.spilled.lock().expect("lock") += 1;
        let mut spillable = self.spillable.lock().expect("lock");
        let freed = bytes.min(*spillable);
        *spillable -= freed;
        drop(spillable);
        self.reservation.release(freed);
        freed + self.lie
    }
}

fn manager_with(budget_kib: u64, growth_pct: u64) -> Arc<MemoryManager> {
    // fraction 1 and no overhead: the budget is `total`.
    MemoryManager::new(Config {
        total: budget_kib * KIB + 1,
        reserved_overhead: 1,
        fraction: 1.0,
        growth_pct,
        granule: 64 * KIB,
    })
    .expect("valid config")
}

#[test]
fn the_budget_is_glutens_formula_scaled_down_1024_times() {
    let config = Config::default();
    // (8 MiB - 300 KiB) * 0.6 = 4848844.8 bytes, truncated.
    assert_eq!(config.budget(), Ok(4_848_844));
    let full = Config {
        total: 8 * 1024 * MIB,
        reserved_overhead: 300 * MIB,
        ..config
    };
    // (8192 MiB - 300 MiB) * 0.6 = 4735.2 MiB = 4965217075.2 bytes.
    assert_eq!(full.budget(), Ok(4_965_217_075));
    for bad in [0.0, -0.5, 1.5, f64::NAN] {
        let config = Config {
            fraction: bad,
            ..Config::default()
        };
        assert!(config.budget().is_err(), "fraction {bad}");
    }
    let no_room = Config {
        reserved_overhead: 8 * MIB,
        ..Config::default()
    };
    assert!(no_room.budget().is_err());
}

#[test]
fn a_request_fails_when_size_plus_off_heap_plus_heap_passes_the_budget() {
    let manager = manager_with(1024, 0);
    manager.set_heap_in_use(256 * KIB);
    let a = Fixed::new(&manager, "a", 0);
    // Exactly at the budget: 512 + 256 off-heap + 256 heap = 1024.
    a.take(256 * KIB).expect("fits");
    a.take(512 * KIB).expect("fits exactly");
    a.pin();
    let err = a.take(1).expect_err("one byte over");
    assert_eq!(err.kind, ErrorKind::OverBudget { short: 1 }, "{err:?}");
    // The heap shrinks: the off-heap limit grows with it.
    manager.set_heap_in_use(0);
    a.take(1).expect("fits now");
    check_invariants!(manager).expect("invariants");
}

#[test]
fn reservations_grow_ahead_by_the_growth_percentage_in_granules() {
    let manager = manager_with(4096, 25);
    let a = Fixed::new(&manager, "a", 0);
    let grown: Vec<(u64, u64)> = (0..6)
        .map(|_| {
            let g = a.take(200 * KIB)?;
            Ok((g.grown / KIB, held!(manager, "a").reserved / KIB))
        })
        .collect::<Result<_, MemoryError>>()
        .expect("fits");
    // need 200 -> 256; need 400 (> 320) -> 448; need 600 (> 560) -> 640;
    // need 800 (= 800) -> 832; need 1000 (< 1040) -> 1088; need 1200 ->
    // 1360, 1408 in granules.
    assert_eq!(
        grown,
        [
            (256, 256),
            (192, 448),
            (192, 640),
            (192, 832),
            (256, 1088),
            (320, 1408)
        ]
    );
    assert_eq!(a.take(100 * KIB).map(|g| g.grown), Ok(0), "inside");
}

#[test]
fn growth_ahead_is_only_taken_from_free_room_and_never_makes_anyone_spill() {
    let manager = manager_with(1024, 100);
    let other = Fixed::new(&manager, "other", 0);
    let a = Fixed::new(&manager, "a", 0);
    other.take(512 * KIB).expect("fits");
    a.take(256 * KIB).expect("fits");
    // Needs 256 more and would like 512 more; 256 is all the room there is.
    let g = a.take(256 * KIB).expect("fits without spilling");
    assert_eq!((g.grown, g.spills.len()), (256 * KIB, 0));
    assert_eq!(held!(manager, "other").used, 512 * KIB);
}

#[test]
fn release_returns_whole_granules_to_the_pool() {
    let manager = manager_with(4096, 25);
    let a = Fixed::new(&manager, "a", 0);
    a.take(1000 * KIB).expect("fits");
    assert_eq!(held!(manager, "a").reserved, 1024 * KIB);
    // Use falls to 300 KiB, kept as 320 (5 granules): 704 go back.
    assert_eq!(a.reservation.release(700 * KIB), 704 * KIB);
    assert_eq!(held!(manager, "a").reserved, 320 * KIB);
    assert_eq!(manager.snapshot().0.off_heap_used, 320 * KIB);
}

/// Releasing more than it uses is the consumer's bug. A debug build panics
/// before the ledger changes, and the ledger stays usable; a release build
/// releases what the consumer uses.
#[test]
fn releasing_more_than_it_uses_is_caught_in_debug_builds() {
    let manager = manager_with(4096, 0);
    let a = Fixed::new(&manager, "a", 0);
    a.take(300 * KIB).expect("fits");
    let before = manager.snapshot();
    let released = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        a.reservation.release(301 * KIB)
    }));
    if cfg!(debug_assertions) {
        assert!(released.is_err(), "a debug build panics");
        assert_eq!(manager.snapshot(), before, "and changes nothing");
    } else {
        assert_eq!(released.ok(), Some(320 * KIB));
        assert_eq!(held!(manager, "a").used, 0);
    }
    a.take(64 * KIB).expect("the ledger is still usable");
    check_invariants!(manager).expect("invariants");
}

#[test]
fn others_spill_largest_first_then_the_requester() {
    let manager = manager_with(1024, 0);
    let small = Fixed::new(&manager, "small", 0);
    let large = Fixed::new(&manager, "large", 0);
    let me = Fixed::new(&manager, "me", 0);
    small.take(128 * KIB).expect("fits");
    large.take(256 * KIB).expect("fits");
    me.take(512 * KIB).expect("fits");
    // 640 more on 896 of 1024: 512 short. large gives its 256, small its
    // 128, and me the last 128 of its own.
    let g = me.take(640 * KIB).expect("fits after spills");
    let order: Vec<(&str, u64)> = g
        .spills
        .iter()
        .map(|s| (s.consumer.as_str(), s.released / KIB))
        .collect();
    assert_eq!(order, [("large", 256), ("small", 128), ("me", 128)]);
    assert_eq!(held!(manager, "me").used, (512 - 128 + 640) * KIB);
    check_invariants!(manager).expect("invariants");
}

#[test]
fn a_request_larger_than_the_limit_fails_without_asking_anyone() {
    let manager = manager_with(1024, 0);
    manager.set_heap_in_use(512 * KIB);
    let other = Fixed::new(&manager, "other", 0);
    let a = Fixed::new(&manager, "a", 0);
    other.take(256 * KIB).expect("fits");
    let err = a.take(513 * KIB).expect_err("larger than the limit");
    assert_eq!(err.kind, ErrorKind::TooLarge, "{err:?}");
    assert!(err.spills.is_empty());
    assert_eq!(*other.spilled.lock().expect("lock"), 0, "nobody spilled");
    assert_eq!(held!(manager, "other").used, 256 * KIB);
}

/// Everyone who could spill was asked, and it is still short: the error
/// says by how much, and who spilled anyway.
#[test]
fn a_failed_acquire_says_how_short_and_who_spilled() {
    let manager = manager_with(1024, 0);
    let pinned = Fixed::new(&manager, "pinned", 0);
    let sort = Fixed::new(&manager, "sort", 0);
    pinned.take(512 * KIB).expect("fits");
    pinned.pin();
    sort.take(256 * KIB).expect("fits");
    let before = held!(manager, "pinned");
    let err = pinned.take(576 * KIB).expect_err("still short");
    // 576 + 768 = 1344 of 1024 is 320 short; sort's 256 leaves it 64 short.
    assert_eq!(err.kind, ErrorKind::OverBudget { short: 64 * KIB });
    let spills: Vec<(&str, u64)> = err
        .spills
        .iter()
        .map(|s| (s.consumer.as_str(), s.released / KIB))
        .collect();
    assert_eq!(spills, [("sort", 256), ("pinned", 0)]);
    assert_eq!(
        held!(manager, "pinned"),
        before,
        "the requester is unchanged"
    );
    assert_eq!(held!(manager, "sort").used, 0, "sort lost what it spilled");
}

#[test]
fn the_manager_trusts_the_ledger_not_what_a_spill_reports() {
    let manager = manager_with(1024, 0);
    let liar = Fixed::new(&manager, "liar", 512 * KIB);
    let a = Fixed::new(&manager, "a", 0);
    liar.take(512 * KIB).expect("fits");
    *liar.spillable.lock().expect("lock") = 64 * KIB;
    a.take(512 * KIB).expect("fits");
    a.pin();
    // The liar's spill says 576 KiB; it released 64.
    let err = a.take(256 * KIB).expect_err("the liar freed only 64");
    assert!(matches!(err.kind, ErrorKind::OverBudget { .. }), "{err:?}");
    assert_eq!(err.spills[0].consumer, "liar");
    assert_eq!(err.spills[0].released, 64 * KIB);
    assert_eq!(held!(manager, "liar").used, 448 * KIB);
    check_invariants!(manager).expect("invariants");
}

/// A consumer whose spill calls back into the manager: first a nested
/// acquire that cannot fit, then a release.
struct Reentrant {
    reservation: Reservation,
    held: Mutex<u64>,
    nested: Mutex<Option<Result<Grant, MemoryError>>>,
}

impl MemoryConsumer for Reentrant {
    fn spill(&self, bytes: u64) -> u64 {
        // It needs a spill too. If the manager asked this consumer
        // again, this would recurse until the stack overflowed; if it
        // held its lock, this would deadlock.
        let nested = self.reservation.acquire(1024 * KIB);
        *self.nested.lock().expect("lock") = Some(nested);
        let mut held = self.held.lock().expect("lock");
        let freed = bytes.min(*held);
        *held -= freed;
        self.reservation.release(freed);
        freed
    }
}

/// Run on a thread, so that a deadlock fails the test after a timeout
/// instead of hanging it.
#[test]
fn a_spill_that_calls_back_into_the_manager_cannot_deadlock() {
    let (done, wait) = mpsc::channel();
    std::thread::spawn(move || {
        let manager = manager_with(1024, 0);
        let r = manager.register("reentrant", |reservation| Reentrant {
            reservation,
            held: Mutex::new(768 * KIB),
            nested: Mutex::new(None),
        });
        let a = Fixed::new(&manager, "a", 0);
        r.reservation.acquire(768 * KIB).expect("fits");
        let outer = a.take(512 * KIB).map(|g| g.spills);
        let nested = r.nested.lock().expect("lock").take();
        let _ = done.send((outer, nested, check_invariants!(manager)));
    });
    let (outer, nested, invariants) = wait
        .recv_timeout(Duration::from_secs(10))
        .expect("no answer in 10 s: the manager deadlocked");
    let spills = outer.expect("the outer request fits after the spill");
    assert_eq!(spills.len(), 1);
    assert_eq!(
        (spills[0].consumer.as_str(), spills[0].released),
        ("reentrant", 256 * KIB)
    );
    // The nested request asked nobody: `a` held nothing, and the
    // spilling consumer is never asked twice.
    match nested {
        Some(Err(e)) if matches!(e.kind, ErrorKind::OverBudget { .. }) => {
            assert!(e.spills.is_empty())
        }
        other => panic!("expected the nested request to fail, got {other:?}"),
    }
    invariants.expect("invariants");
}

#[test]
fn dropping_a_consumer_returns_its_reservation() {
    let manager = manager_with(1024, 25);
    let a = Fixed::new(&manager, "a", 0);
    a.take(300 * KIB).expect("fits");
    assert!(manager.snapshot().0.off_heap_used > 0);
    drop(a);
    let (limits, holdings) = manager.snapshot();
    assert_eq!(limits.off_heap_used, 0);
    assert!(holdings.is_empty());
}

#[test]
fn a_heap_that_grows_makes_the_next_request_spill() {
    // Gluten's dynamic sizing target fails instead of spilling (see the
    // chapter). Here the heap's growth shrinks the off-heap limit, and
    // the next request makes room by spilling.
    let manager = manager_with(1024, 0);
    let sort = SpillableBuffer::new(&manager, "sort");
    let join = SpillableBuffer::new(&manager, "join");
    for _ in 0..8 {
        sort.push(64 * KIB as usize).expect("fits");
    }
    join.push(256 * KIB as usize).expect("fits");
    manager.set_heap_in_use(512 * KIB);
    let grant = join.push(64 * KIB as usize).expect("fits after a spill");
    // 64 + 768 + 512 = 1344 of 1024: 320 short, five of sort's batches.
    assert_eq!(grant.spills.len(), 1);
    assert_eq!(
        (grant.spills[0].consumer.as_str(), grant.spills[0].released),
        ("sort", 320 * KIB)
    );
    assert_eq!(held!(manager, "sort").used, (512 - 320) * KIB);
    check_invariants!(manager).expect("invariants");
}

/// `examples/output/memory_manager.txt`, which "Dynamic sizing" shows, is
/// this scenario's output to the last digit. (`cargo xtask test outputs`
/// checks it only with digits masked; the scenario is accounting, so its
/// digits are the same on every machine.)
#[test]
fn the_generated_output_is_the_scenario_exactly() {
    let lines = crate::memory_manager::run_scenario(Config::default()).expect("the scenario runs");
    assert_eq!(
        shown("memory_manager"),
        lines,
        "run `cargo xtask outputs memory_manager`"
    );
}

/// The program's lines in `examples/output/NAME.txt`: after the command, up
/// to the `# machine` line.
pub(crate) fn shown(name: &str) -> Vec<String> {
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/output")
        .join(format!("{name}.txt"));
    let text = std::fs::read_to_string(&file).expect("the output file exists");
    let lines = text.lines().skip(1).take_while(|l| !l.starts_with("# "));
    lines.map(str::to_owned).collect()
}
