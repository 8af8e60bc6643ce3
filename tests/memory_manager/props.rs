//! Property tests and a threaded stress test: random sequences of requests,
//! releases, spills and heap changes, checked after every step, and four
//! threads against one manager.

use crate::memory_manager::{
    Config, ErrorKind, Grant, Holding, MemoryConsumer, MemoryError, MemoryManager, Reservation,
    SpillReport,
};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use std::collections::BTreeMap;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

const KIB: u64 = 1024;

/// A consumer that knows how much it holds, and spills it if allowed.
struct Held {
    name: String,
    reservation: Reservation,
    held: Mutex<u64>,
    spillable: bool,
}

impl Held {
    fn new(manager: &Arc<MemoryManager>, name: &str, spillable: bool) -> Arc<Held> {
        manager.register(name, |reservation| Held {
            name: name.to_owned(),
            reservation,
            held: Mutex::new(0),
            spillable,
        })
    }

    fn take(&self, bytes: u64) -> Result<Grant, MemoryError> {
        // No lock of ours is held across acquire: our own spill takes it.
        let grant = self.reservation.acquire(bytes)?;
        *self.held.lock().expect("lock") += bytes;
        Ok(grant)
    }

    /// Gives back `bytes`, at most what it holds.
    fn give(&self, bytes: u64) -> u64 {
        let mut held = self.held.lock().expect("lock");
        let bytes = bytes.min(*held);
        *held -= bytes;
        self.reservation.release(bytes)
    }

    fn held(&self) -> u64 {
        *self.held.lock().expect("lock")
    }
}

impl MemoryConsumer for Held {
    fn spill(&self, bytes: u64) -> u64 {
        if !self.spillable {
            return 0;
        }
        let mut held = self.held.lock().expect("lock");
        let freed = bytes.min(*held);
        *held -= freed;
        self.reservation.release(freed);
        freed
    }
}

#[derive(Debug, Clone)]
enum Op {
    Take(usize, u64),
    Give(usize, u64),
    Spill(usize, u64),
    Heap(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..3usize, 0..600 * KIB).prop_map(|(c, b)| Op::Take(c, b)),
        2 => (0..3usize, 0..400 * KIB).prop_map(|(c, b)| Op::Give(c, b)),
        1 => (0..3usize, 0..400 * KIB).prop_map(|(c, b)| Op::Spill(c, b)),
        1 => (0..1300 * KIB).prop_map(Op::Heap),
    ]
}

fn config() -> impl Strategy<Value = Config> {
    (
        0..=100u64,
        prop_oneof![Just(1u64), Just(4096), Just(64 * KIB)],
        0.1..=1.0f64,
    )
        .prop_map(|(growth_pct, granule, fraction)| Config {
            total: 2 * 1024 * KIB,
            reserved_overhead: 300 * KIB,
            fraction,
            growth_pct,
            granule,
        })
}

/// `used` per consumer, by name.
fn used(holdings: &[Holding]) -> BTreeMap<String, u64> {
    holdings
        .iter()
        .map(|h| (h.consumer.clone(), h.used))
        .collect()
}

fn released_by(spills: &[SpillReport]) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for s in spills {
        *m.entry(s.consumer.clone()).or_insert(0) += s.released;
    }
    m
}

/// After a request that spilled `spills` (and, if it succeeded, added
/// `extra` to `requester`), every consumer's use must have changed by
/// exactly that.
fn check_spill_accounting(
    before: &[Holding],
    after: &[Holding],
    spills: &[SpillReport],
    requester: &str,
    extra: u64,
) -> Result<(), TestCaseError> {
    let released = released_by(spills);
    let (before, after) = (used(before), used(after));
    for (name, was) in &before {
        let freed = released.get(name).copied().unwrap_or(0);
        let added = if name == requester { extra } else { 0 };
        prop_assert_eq!(after[name], was - freed + added, "{}", name);
    }
    Ok(())
}

/// `name`'s use, as the ledger has it.
fn used_by(manager: &MemoryManager, name: &str) -> u64 {
    used(&manager.snapshot().1)[name]
}

fn run_ops(config: Config, ops: &[Op]) -> Result<(), TestCaseError> {
    let manager = MemoryManager::new(config).map_err(TestCaseError::fail)?;
    let consumers = [
        Held::new(&manager, "a", true),
        Held::new(&manager, "b", true),
        Held::new(&manager, "pinned", false),
    ];
    for op in ops {
        let (limits_before, before) = manager.snapshot();
        match *op {
            Op::Take(c, bytes) => {
                let who = &consumers[c];
                match who.take(bytes) {
                    Ok(g) => {
                        // Growth is checked against the budget; use inside an
                        // existing reservation is not, even if the heap grew
                        // since it was granted.
                        let l = manager.snapshot().0;
                        if g.grown > 0 {
                            prop_assert!(l.off_heap_used + l.heap_in_use <= l.budget);
                        }
                        let after = manager.snapshot().1;
                        check_spill_accounting(&before, &after, &g.spills, &who.name, bytes)?;
                    }
                    Err(MemoryError {
                        kind: ErrorKind::TooLarge,
                        ..
                    }) => {
                        prop_assert!(bytes > limits_before.off_heap_limit());
                        prop_assert_eq!(
                            manager.snapshot(),
                            (limits_before, before),
                            "nobody spilled"
                        );
                    }
                    Err(MemoryError {
                        kind: ErrorKind::OverBudget { .. },
                        spills,
                    }) => {
                        let after = manager.snapshot().1;
                        check_spill_accounting(&before, &after, &spills, &who.name, 0)?;
                        // Whoever was not asked to spill kept its reservation.
                        let asked = released_by(&spills);
                        for (b, a) in before.iter().zip(after) {
                            if !asked.contains_key(&b.consumer) {
                                prop_assert_eq!(b, &a);
                            }
                        }
                    }
                }
            }
            Op::Give(c, bytes) => {
                let who = &consumers[c];
                let gave = bytes.min(who.held());
                who.give(bytes);
                let mut want = used(&before);
                *want.entry(who.name.clone()).or_default() -= gave;
                prop_assert_eq!(used(&manager.snapshot().1), want);
            }
            Op::Spill(c, bytes) => {
                let who = &consumers[c];
                let was = used_by(&manager, &who.name);
                let freed = who.spill(bytes);
                prop_assert_eq!(
                    used_by(&manager, &who.name),
                    was - freed,
                    "spill frees what it reports"
                );
            }
            Op::Heap(bytes) => {
                manager.set_heap_in_use(bytes);
                prop_assert_eq!(manager.snapshot().1, before);
            }
        }
        check_invariants!(manager).map_err(TestCaseError::fail)?;
        for c in &consumers {
            prop_assert_eq!(c.held(), used_by(&manager, &c.name), "{}", c.name);
        }
    }
    drop(consumers);
    prop_assert_eq!(
        manager.snapshot().0.off_heap_used,
        0,
        "dropping returns everything"
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        // An integration test has no lib.rs for proptest to find: name the file.
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "tests/memory_manager/props.proptest-regressions",
        ))),
        ..ProptestConfig::default()
    })]

    /// Random acquire/release/spill/heap sequences from three
    /// consumers: after every step, the ledger's invariants hold, usage is
    /// within the budget, failures change nothing but the spills they
    /// report, and spills free what they report.
    #[test]
    fn random_sequences_keep_the_ledger_consistent(
        config in config(),
        ops in prop::collection::vec(op(), 1..80),
    ) {
        run_ops(config, &ops)?;
    }
}

/// A small, seeded generator, so that the stress test needs no crate and
/// each thread's sequence can be replayed.
struct XorShift(u64);

impl XorShift {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Four threads take, give and spill against one manager while a fifth
/// checks the invariants; a sixth moves the heap. A deadlock fails the test
/// after the timeout instead of hanging it.
#[test]
fn four_threads_share_one_manager_without_deadlock() {
    const THREADS: u64 = 4;
    const OPS: u64 = 3000;
    let (done, wait) = mpsc::channel();
    std::thread::spawn(move || {
        let result = (|| -> Result<String, String> {
            let manager = MemoryManager::new(Config::default())?;
            let consumers: Vec<Arc<Held>> = (0..THREADS)
                .map(|i| Held::new(&manager, &format!("t{i}"), true))
                .collect();
            let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let auditor = {
                let (manager, stop) = (Arc::clone(&manager), Arc::clone(&stop));
                std::thread::spawn(move || -> Result<u64, String> {
                    let mut checks = 0;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        check_invariants!(manager)?;
                        checks += 1;
                    }
                    Ok(checks)
                })
            };
            let heap = {
                let (manager, stop) = (Arc::clone(&manager), Arc::clone(&stop));
                std::thread::spawn(move || {
                    let mut rng = XorShift(0x5eed);
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        manager.set_heap_in_use(rng.below(3072) * KIB);
                        std::thread::yield_now();
                    }
                })
            };
            let workers: Vec<_> = consumers
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let c = Arc::clone(c);
                    std::thread::spawn(move || {
                        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15 ^ (i as u64 + 1));
                        let (mut granted, mut refused, mut spills) = (0u64, 0u64, 0u64);
                        for _ in 0..OPS {
                            match rng.below(4) {
                                0 | 1 => match c.take(rng.below(1024) * KIB) {
                                    Ok(g) => {
                                        granted += 1;
                                        spills += g.spills.len() as u64;
                                    }
                                    Err(_) => refused += 1,
                                },
                                2 => {
                                    let bytes = rng.below(c.held() + 1);
                                    let _ = c.give(bytes);
                                }
                                _ => {
                                    c.spill(rng.below(256) * KIB);
                                }
                            }
                        }
                        (granted, refused, spills)
                    })
                })
                .collect();
            let mut totals = (0, 0, 0);
            for w in workers {
                let (g, r, s) = w.join().map_err(|_| "a worker panicked")?;
                totals = (totals.0 + g, totals.1 + r, totals.2 + s);
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            heap.join().map_err(|_| "the heap thread panicked")?;
            let checks = auditor.join().map_err(|_| "the auditor panicked")??;
            check_invariants!(manager)?;
            for c in &consumers {
                let used = used_by(&manager, &c.name);
                if c.held() != used {
                    return Err(format!("{} holds {} but uses {used}", c.name, c.held()));
                }
            }
            drop(consumers);
            if manager.snapshot().0.off_heap_used != 0 {
                return Err("dropping every consumer did not empty the pool".into());
            }
            Ok(format!(
                "{} granted ({} spills asked for), {} refused, {checks} invariant checks meanwhile",
                totals.0, totals.2, totals.1
            ))
        })();
        let _ = done.send(result);
    });
    match wait.recv_timeout(Duration::from_secs(60)) {
        Ok(Ok(summary)) => println!("{summary}"),
        Ok(Err(e)) => panic!("{e}"),
        Err(_) => panic!("no answer in 60 s: deadlock or livelock"),
    }
}
