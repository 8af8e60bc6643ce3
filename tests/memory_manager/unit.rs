//! The manager's rules, one test each: the budget formula, the check at its
//! edge, growing ahead, releasing, whom a spill asks, what a failure says,
//! a spill that calls back in, the reservation states and `memory.grow`.

use crate::memory_manager::{
    BudgetedMemory, Config, ErrorKind, Grant, MemoryConsumer, MemoryError, MemoryGrowError,
    MemoryManager, Reservation, ReservationState, SpillableBuffer, WASM_PAGE,
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
    /// The reservation state `spill` saw while it ran.
    seen: Mutex<Vec<ReservationState>>,
}

impl Fixed {
    fn new(manager: &Arc<MemoryManager>, name: &str, lie: u64) -> Arc<Fixed> {
        manager.register(name, |reservation| Fixed {
            reservation,
            spillable: Mutex::new(0),
            lie,
            seen: Mutex::new(Vec::new()),
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
        self.seen
            .lock()
            .expect("lock")
            .push(self.reservation.state());
        let mut spillable = self.spillable.lock().expect("lock");
        let freed = bytes.min(*spillable);
        *spillable -= freed;
        drop(spillable);
        self.reservation
            .release(freed)
            .expect("release what was taken");
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
    assert!(
        matches!(err.kind, ErrorKind::OverBudget { short: 1, .. }),
        "{err:?}"
    );
    // The heap shrinks: the off-heap limit grows with it.
    manager.set_heap_in_use(0);
    a.take(1).expect("fits now");
    manager.check_invariants().expect("invariants");
}

#[test]
fn reservations_grow_ahead_by_the_growth_percentage_in_granules() {
    let manager = manager_with(4096, 25);
    let a = Fixed::new(&manager, "a", 0);
    let grown: Vec<(u64, u64)> = (0..6)
        .map(|_| {
            a.take(200 * KIB)
                .map(|g| (g.grown / KIB, g.held.reserved / KIB))
        })
        .collect::<Result<_, _>>()
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
    assert_eq!(other.reservation.holding().used, 512 * KIB);
}

#[test]
fn release_returns_whole_granules_to_the_pool() {
    let manager = manager_with(4096, 25);
    let a = Fixed::new(&manager, "a", 0);
    a.take(1000 * KIB).expect("fits");
    assert_eq!(a.reservation.holding().reserved, 1024 * KIB);
    // Use falls to 300 KiB, kept as 320 (5 granules): 704 go back.
    assert_eq!(a.reservation.release(700 * KIB), Ok(704 * KIB));
    assert_eq!(a.reservation.holding().reserved, 320 * KIB);
    assert_eq!(manager.limits().off_heap_used, 320 * KIB);
    let before = manager.holdings();
    let err = a.reservation.release(301 * KIB).expect_err("too much");
    assert!(matches!(err.kind, ErrorKind::ReleaseTooLarge { .. }));
    assert_eq!(
        manager.holdings(),
        before,
        "a failed release changes nothing"
    );
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
    assert_eq!(me.reservation.holding().used, (512 - 128 + 640) * KIB);
    manager.check_invariants().expect("invariants");
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
    assert!(
        other.seen.lock().expect("lock").is_empty(),
        "nobody spilled"
    );
    assert_eq!(other.reservation.holding().used, 256 * KIB);
}

#[test]
fn a_failed_acquire_says_who_held_what_and_who_spilled() {
    let manager = manager_with(1024, 0);
    let wasm = BudgetedMemory::new(&manager, "wasm", 64);
    let sort = Fixed::new(&manager, "sort", 0);
    assert_eq!(wasm.grow(8), 0);
    sort.take(256 * KIB).expect("fits");
    let before = wasm.reservation.holding().used;
    let err = match wasm.grow_traced(9) {
        Err(MemoryGrowError::Refused(e)) => e,
        other => panic!("expected a refusal, got {other:?}"),
    };
    assert_eq!(
        err.to_string(),
        "wasm asked for 576.0 KiB and is 64.0 KiB short: heap 0.0 + off-heap 512.0 \
         of budget 1024.0; held (used/reserved): wasm 512.0/512.0 sort 0.0/0.0; \
         spilled: sort 256.0 wasm 0.0"
    );
    assert_eq!(
        wasm.reservation.holding().used,
        before,
        "the requester is unchanged"
    );
    assert_eq!(wasm.size(), 8);
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
    let err = a.take(256 * KIB).expect_err("the liar freed only 64");
    assert!(matches!(err.kind, ErrorKind::OverBudget { .. }), "{err:?}");
    let spills = err.spills;
    assert_eq!(spills[0].consumer, "liar");
    assert_eq!(spills[0].released, 64 * KIB);
    assert_eq!(spills[0].reported, (64 + 512) * KIB);
    manager.check_invariants().expect("invariants");
}

/// A consumer whose spill calls back into the manager: first a nested
/// acquire that cannot fit, then a release.
struct Reentrant {
    reservation: Reservation,
    nested: Mutex<Option<Result<Grant, MemoryError>>>,
}

impl MemoryConsumer for Reentrant {
    fn spill(&self, bytes: u64) -> u64 {
        // It needs a spill too. If the manager asked this consumer
        // again, this would recurse until the stack overflowed; if it
        // held its lock, this would deadlock.
        let nested = self.reservation.acquire(1024 * KIB);
        *self.nested.lock().expect("lock") = Some(nested);
        let freed = bytes.min(self.reservation.holding().used);
        self.reservation.release(freed).map_or(0, |_| freed)
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
            nested: Mutex::new(None),
        });
        let a = Fixed::new(&manager, "a", 0);
        r.reservation.acquire(768 * KIB).expect("fits");
        let outer = a.take(512 * KIB).map(|g| g.spills);
        let nested = r.nested.lock().expect("lock").take();
        let _ = done.send((outer, nested, manager.check_invariants()));
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
fn reservation_states_follow_the_lifecycle_diagram() {
    let manager = manager_with(1024, 0);
    let victim = Fixed::new(&manager, "victim", 0);
    let a = Fixed::new(&manager, "a", 0);
    assert_eq!(victim.reservation.state(), ReservationState::Empty);
    victim.take(512 * KIB).expect("fits");
    assert_eq!(victim.reservation.state(), ReservationState::Reserved);
    a.take(1024 * KIB).expect("fits after a spill");
    // While spilling it was `Spilling`; it gave back everything.
    assert_eq!(
        *victim.seen.lock().expect("lock"),
        [ReservationState::Spilling]
    );
    assert_eq!(victim.reservation.state(), ReservationState::Empty);
    victim.take(64 * KIB).expect("fits");
    victim.reservation.release(64 * KIB).expect("release");
    assert_eq!(victim.reservation.state(), ReservationState::Empty);
}

#[test]
fn dropping_a_consumer_returns_its_reservation() {
    let manager = manager_with(1024, 25);
    let a = Fixed::new(&manager, "a", 0);
    a.take(300 * KIB).expect("fits");
    assert!(manager.limits().off_heap_used > 0);
    drop(a);
    assert_eq!(manager.limits().off_heap_used, 0);
    assert!(manager.holdings().is_empty());
}

#[test]
fn memory_grow_returns_minus_one_when_the_manager_refuses_and_changes_nothing() {
    let manager = manager_with(1024, 0);
    let wasm = BudgetedMemory::new(&manager, "wasm", 64);
    assert_eq!(wasm.grow(4), 0);
    wasm.bytes()[0] = 7;
    let before = (manager.holdings(), manager.limits());
    assert_eq!(wasm.grow(13), -1, "13 pages are 832 KiB, 768 are free");
    assert_eq!(wasm.grow(61), -1, "over the declared maximum");
    assert_eq!((manager.holdings(), manager.limits()), before);
    assert_eq!(wasm.size(), 4);
    assert_eq!(wasm.grow(12), 4, "exactly what is free");
    assert_eq!(wasm.grow(0), 16);
    let bytes = wasm.bytes();
    assert_eq!(bytes[0], 7, "old bytes are kept");
    assert!(
        bytes[4 * WASM_PAGE..].iter().all(|&b| b == 0),
        "new pages are zero"
    );
}

#[test]
fn a_heap_that_grows_makes_the_next_request_spill() {
    // Gluten's dynamic sizing target fails instead of spilling (see the
    // chapter). Here the heap's growth shrinks the off-heap limit, and
    // the next request makes room by spilling.
    let manager = manager_with(1024, 0);
    let sort = SpillableBuffer::new(&manager, "sort");
    let wasm = BudgetedMemory::new(&manager, "wasm", 64);
    for _ in 0..8 {
        sort.push(64 * KIB as usize).expect("fits");
    }
    assert_eq!(wasm.grow(4), 0);
    manager.set_heap_in_use(512 * KIB);
    let (_, grant) = wasm.grow_traced(1).expect("grows after a spill");
    let spills = grant.map(|g| g.spills).unwrap_or_default();
    assert_eq!(spills.len(), 1);
    assert_eq!(
        (spills[0].consumer.as_str(), spills[0].released),
        ("sort", 320 * KIB)
    );
    assert_eq!(sort.reservation.holding().used, (512 - 320) * KIB);
    manager.check_invariants().expect("invariants");
}

/// `examples/output/memory_manager.txt`, which "Dynamic sizing" shows, is
/// this scenario's output to the last digit. (`cargo xtask test outputs`
/// checks it only with digits masked; the scenario is accounting, so its
/// digits are the same on every machine.)
#[test]
fn the_generated_output_is_the_scenario_exactly() {
    let lines = crate::memory_manager::run_scenario(Config::default()).expect("the scenario runs");
    let file =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/output/memory_manager.txt");
    let text = std::fs::read_to_string(&file).expect("the output file exists");
    // The file is the command, the program's lines, then a `# machine` line.
    let shown: Vec<&str> = text
        .lines()
        .skip(1)
        .take_while(|l| !l.starts_with("# "))
        .collect();
    assert_eq!(
        shown,
        lines,
        "{} is not the scenario's output: run `cargo xtask outputs memory_manager`",
        file.display()
    );
}
