//! A memory manager that shares one budget between consumers that can spill.
//! The budget is sized at run time the way Apache Gluten's dynamic off-heap
//! sizing sizes it: a heap and an off-heap pool share one total, and the
//! off-heap pool gets what the heap leaves. A WebAssembly linear memory grows
//! through the manager, and the manager's refusal is `memory.grow`'s -1.
//!
//! Part III of the book documents this file. Its Mermaid diagrams name only
//! types and functions defined here, and `tests/diagrams_match_code.rs` holds
//! them to that. Run it: `cargo run --example memory_manager`

use std::cmp::Reverse;
use std::collections::{BTreeMap, TryReserveError};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

// ANCHOR: config
/// What the manager is built from. The defaults are Gluten's, scaled down
/// 1024 times so that the demo fits in a few MiB: an 8 GiB executor becomes
/// 8 MiB, and Spark's fixed 300 MiB becomes 300 KiB. The fraction and the
/// growth percentage have no unit, so they keep their values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Config {
    /// Bytes the heap and the off-heap pool share
    /// (Gluten: `Runtime.getRuntime().maxMemory()`).
    pub total: u64,
    /// Bytes held back from both pools (Spark hard-codes 300 MiB).
    pub reserved_overhead: u64,
    /// The share of the rest that both pools may use together
    /// (`spark.gluten.memory.dynamic.offHeap.sizing.memory.fraction`).
    pub fraction: f64,
    /// How far a reservation grows past what it needs, in percent of its
    /// current size (Velox's `spillable-reservation-growth-pct`).
    pub growth_pct: u64,
    /// Reservations grow in whole multiples of this many bytes.
    pub granule: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            total: 8 * MIB,
            reserved_overhead: 300 * KIB,
            fraction: 0.6,
            growth_pct: 25,
            granule: 64 * KIB,
        }
    }
}

impl Config {
    /// `(total - reserved_overhead) * fraction`, truncated as Gluten's
    /// `(long)` cast truncates it. It is fixed for the manager's life: what
    /// moves is the heap's share of it.
    pub fn budget(&self) -> Result<u64, String> {
        // Written so that NaN fails too.
        if !(self.fraction > 0.0 && self.fraction <= 1.0) {
            return Err(format!("fraction must be in (0, 1], got {}", self.fraction));
        }
        if self.reserved_overhead >= self.total {
            return Err(format!(
                "reserved_overhead ({} bytes) must be less than total ({} bytes)",
                self.reserved_overhead, self.total
            ));
        }
        if self.granule == 0 || self.growth_pct > 1000 {
            return Err(format!(
                "granule must be at least 1 byte and growth_pct at most 1000, got {} and {}",
                self.granule, self.growth_pct
            ));
        }
        Ok(((self.total - self.reserved_overhead) as f64 * self.fraction) as u64)
    }
}
// ANCHOR_END: config

// ANCHOR: consumer
/// Anything that holds memory through a [`Reservation`] and can give some of
/// it back when the manager asks.
pub trait MemoryConsumer: Send + Sync {
    /// A name for timelines and errors.
    fn name(&self) -> &str;

    /// Frees about `bytes` (more or fewer is allowed), gives them back with
    /// its own `Reservation::release`, and returns how many it freed. The
    /// manager holds none of its locks during this call, so the consumer may
    /// call back into it.
    fn spill(&self, bytes: u64) -> u64;
}

/// Where a reservation is in its life (the state diagram in "The flows").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReservationState {
    /// Registered, holding nothing.
    Empty,
    /// Holding part of the budget.
    Reserved,
    /// Asked to spill. Until it returns, no other request asks it again.
    Spilling,
}
// ANCHOR_END: consumer

// ANCHOR: reports
/// A successful acquire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub requested: u64,
    /// Bytes added to the reservation; 0 when it already covered the request.
    pub grown: u64,
    pub used: u64,
    pub reserved: u64,
    /// Who was asked to spill to make room, in the order asked.
    pub spills: Vec<SpillReport>,
}

/// One consumer asked to spill.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpillReport {
    pub consumer: String,
    pub asked: u64,
    /// What `spill` returned.
    pub reported: u64,
    /// What the ledger saw the consumer release meanwhile. The manager
    /// trusts this number, not `reported`.
    pub released: u64,
}

/// What one consumer held at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holding {
    pub consumer: String,
    pub used: u64,
    pub reserved: u64,
}

/// The budget and both pools at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub budget: u64,
    pub heap_in_use: u64,
    /// The sum of every consumer's reservation.
    pub off_heap_used: u64,
}

impl Limits {
    /// What the off-heap pool may hold now: the budget minus the heap.
    pub fn off_heap_limit(&self) -> u64 {
        self.budget.saturating_sub(self.heap_in_use)
    }
}

/// Why an acquire or a release failed. The requester's account is unchanged
/// in every case; consumers listed in `spills` did spill.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemoryError {
    /// The request alone is larger than the off-heap limit. No spill could
    /// make room, so nobody was asked.
    TooLarge {
        consumer: String,
        requested: u64,
        limits: Limits,
    },
    /// Every consumer that could be asked was asked, and it still did not fit.
    OverBudget {
        consumer: String,
        requested: u64,
        short: u64,
        limits: Limits,
        holdings: Vec<Holding>,
        spills: Vec<SpillReport>,
    },
    /// Asked to release more than it used. Nothing changed.
    ReleaseTooLarge {
        consumer: String,
        requested: u64,
        used: u64,
    },
    /// No account with this id. A `Reservation` keeps its account alive, so
    /// this cannot happen through one; it is here so the ledger never panics.
    UnknownConsumer { id: u64 },
}
// ANCHOR_END: reports

/// Bytes as KiB with one decimal, the unit of every number the demo prints.
fn kib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / KIB as f64)
}

impl fmt::Display for MemoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MemoryError::TooLarge {
                consumer,
                requested,
                limits,
            } => write!(
                f,
                "{consumer} asked for {} KiB, more than the whole off-heap limit of {} KiB \
                 (budget {} - heap {}); nobody was asked to spill",
                kib(*requested),
                kib(limits.off_heap_limit()),
                kib(limits.budget),
                kib(limits.heap_in_use)
            ),
            MemoryError::OverBudget {
                consumer,
                requested,
                short,
                limits,
                holdings,
                spills,
            } => {
                write!(
                    f,
                    "{consumer} asked for {} KiB and is {} KiB short: heap {} + off-heap {} \
                     of budget {}; held (used/reserved):",
                    kib(*requested),
                    kib(*short),
                    kib(limits.heap_in_use),
                    kib(limits.off_heap_used),
                    kib(limits.budget)
                )?;
                for h in holdings {
                    write!(f, " {} {}/{}", h.consumer, kib(h.used), kib(h.reserved))?;
                }
                write!(f, "; spilled:")?;
                if spills.is_empty() {
                    write!(f, " nobody")?;
                }
                for s in spills {
                    write!(f, " {} {}", s.consumer, kib(s.released))?;
                }
                Ok(())
            }
            MemoryError::ReleaseTooLarge {
                consumer,
                requested,
                used,
            } => write!(
                f,
                "{consumer} released {} KiB but used only {} KiB",
                kib(*requested),
                kib(*used)
            ),
            MemoryError::UnknownConsumer { id } => write!(f, "no consumer with id {id}"),
        }
    }
}

impl std::error::Error for MemoryError {}

// ANCHOR: ledger
/// One registered consumer's line in the ledger.
struct Account {
    name: String,
    /// Weak, because the consumer owns its `Reservation`, which owns an
    /// `Arc` of the manager: a strong reference back would be a cycle.
    consumer: Weak<dyn MemoryConsumer>,
    /// Bytes the consumer says it uses.
    used: u64,
    /// Bytes of the budget set aside for it: `used` plus room to grow.
    reserved: u64,
    /// Every byte of `used` it ever released. A spill's real effect is the
    /// change in this, whatever `spill` returns.
    released_total: u64,
    spilling: bool,
}

/// Everything the manager knows, behind one lock.
struct Ledger {
    budget: u64,
    heap_in_use: u64,
    /// The sum of every account's `reserved`.
    off_heap_used: u64,
    growth_pct: u64,
    granule: u64,
    accounts: BTreeMap<u64, Account>,
    next_id: u64,
}

/// Owns the ledger. Share it as `Arc<MemoryManager>`; there is no global.
pub struct MemoryManager {
    ledger: Mutex<Ledger>,
}
// ANCHOR_END: ledger

/// Why `try_reserve` said no.
enum Refusal {
    /// Larger than the off-heap limit: no spill can help.
    TooLarge,
    /// This many bytes short.
    Short(u64),
    Unknown,
}

/// `bytes` rounded up to a whole number of granules.
fn round_up(bytes: u64, granule: u64) -> u64 {
    bytes.div_ceil(granule).saturating_mul(granule)
}

impl Ledger {
    // ANCHOR: try_reserve
    /// What the off-heap pool may hold now. Recomputed on every request,
    /// because the heap grows and shrinks without asking the manager.
    fn off_heap_limit(&self) -> u64 {
        self.budget.saturating_sub(self.heap_in_use)
    }

    /// Grows `id`'s use by `bytes` if the budget allows, and its reservation
    /// by `growth_pct` where there is room. Changes nothing when it says no.
    fn try_reserve(&mut self, id: u64, bytes: u64) -> Result<Grant, Refusal> {
        let (budget, heap, off_heap_used) = (self.budget, self.heap_in_use, self.off_heap_used);
        let (growth_pct, granule, limit) = (self.growth_pct, self.granule, self.off_heap_limit());
        let account = self.accounts.get_mut(&id).ok_or(Refusal::Unknown)?;
        let need = account.used.saturating_add(bytes);
        if need <= account.reserved {
            // Inside the reservation: no budget check. This is what
            // reserving ahead buys.
            account.used = need;
            return Ok(grant(account, bytes, 0));
        }
        let size = need - account.reserved;
        // Gluten's check: a request fails when size + off-heap used + heap
        // in use is more than the budget.
        let total = size.saturating_add(off_heap_used).saturating_add(heap);
        if total > budget {
            if bytes > limit {
                return Err(Refusal::TooLarge);
            }
            return Err(Refusal::Short(total - budget));
        }
        // Reserve ahead where there is room: growth_pct of the reservation,
        // in whole granules. Only the bytes needed are required, so the
        // extra never makes anyone spill.
        let ahead = account
            .reserved
            .saturating_add(account.reserved.saturating_mul(growth_pct) / 100);
        let wish = round_up(need.max(ahead), granule);
        let room = budget - heap - off_heap_used;
        let grown = wish.saturating_sub(account.reserved).min(room).max(size);
        account.reserved += grown;
        account.used = need;
        self.off_heap_used += grown;
        Ok(grant(account, bytes, grown))
    }
    // ANCHOR_END: try_reserve

    // ANCHOR: release
    /// Lowers `id`'s use by `bytes` and gives back the part of its
    /// reservation past `used`, rounded up to a granule. Returns the bytes
    /// that went back to the pool.
    fn release(&mut self, id: u64, bytes: u64) -> Result<u64, MemoryError> {
        let granule = self.granule;
        let account = self
            .accounts
            .get_mut(&id)
            .ok_or(MemoryError::UnknownConsumer { id })?;
        if bytes > account.used {
            return Err(MemoryError::ReleaseTooLarge {
                consumer: account.name.clone(),
                requested: bytes,
                used: account.used,
            });
        }
        account.used -= bytes;
        account.released_total = account.released_total.wrapping_add(bytes);
        let keep = round_up(account.used, granule).min(account.reserved);
        let returned = account.reserved - keep;
        account.reserved = keep;
        self.off_heap_used -= returned;
        Ok(returned)
    }
    // ANCHOR_END: release

    // ANCHOR: victims
    /// Whom to ask next: the other consumers by reservation, largest first,
    /// then the requester itself. Skips anyone already asked for this
    /// request, anyone spilling for another one, and anyone holding nothing.
    fn next_victim(&self, requester: u64, asked: &[u64]) -> Option<(u64, Arc<dyn MemoryConsumer>)> {
        let mut candidates: Vec<(&u64, &Account)> = self
            .accounts
            .iter()
            .filter(|(id, a)| !asked.contains(id) && !a.spilling && a.reserved > 0)
            .collect();
        // `false` sorts first: the others, then the requester.
        candidates.sort_by_key(|(id, a)| (**id == requester, Reverse(a.reserved)));
        // A consumer being dropped cannot be upgraded: skip it.
        candidates
            .into_iter()
            .find_map(|(id, a)| Some((*id, a.consumer.upgrade()?)))
    }

    /// Marks `id` as spilling, so that no other request asks it meanwhile,
    /// and returns its release count to compare with afterwards.
    fn begin_spill(&mut self, id: u64) -> u64 {
        self.accounts.get_mut(&id).map_or(0, |a| {
            a.spilling = true;
            a.released_total
        })
    }

    /// Clears the mark and returns the bytes `id` released since `before`.
    fn end_spill(&mut self, id: u64, before: u64) -> u64 {
        self.accounts.get_mut(&id).map_or(0, |a| {
            a.spilling = false;
            a.released_total.wrapping_sub(before)
        })
    }
    // ANCHOR_END: victims

    fn limits(&self) -> Limits {
        Limits {
            budget: self.budget,
            heap_in_use: self.heap_in_use,
            off_heap_used: self.off_heap_used,
        }
    }

    fn holdings(&self) -> Vec<Holding> {
        self.accounts
            .values()
            .map(|a| Holding {
                consumer: a.name.clone(),
                used: a.used,
                reserved: a.reserved,
            })
            .collect()
    }

    fn name(&self, id: u64) -> String {
        self.accounts
            .get(&id)
            .map_or_else(|| format!("#{id}"), |a| a.name.clone())
    }
}

fn grant(account: &Account, requested: u64, grown: u64) -> Grant {
    Grant {
        requested,
        grown,
        used: account.used,
        reserved: account.reserved,
        spills: Vec::new(),
    }
}

impl MemoryManager {
    /// A manager with `config`'s budget and no heap in use yet.
    pub fn new(config: Config) -> Result<Arc<MemoryManager>, String> {
        let budget = config.budget()?;
        Ok(Arc::new(MemoryManager {
            ledger: Mutex::new(Ledger {
                budget,
                heap_in_use: 0,
                off_heap_used: 0,
                growth_pct: config.growth_pct,
                granule: config.granule,
                accounts: BTreeMap::new(),
                next_id: 0,
            }),
        }))
    }

    /// The lock. No code under it panics half-way through an update, so a
    /// ledger whose lock was poisoned by a panic elsewhere is still
    /// consistent, and is used as it is.
    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Opens an account for `consumer` and returns the handle it uses.
    pub fn register(
        self: &Arc<Self>,
        name: &str,
        consumer: Weak<dyn MemoryConsumer>,
    ) -> Reservation {
        let mut ledger = self.ledger();
        let id = ledger.next_id;
        ledger.next_id += 1;
        ledger.accounts.insert(
            id,
            Account {
                name: name.to_owned(),
                consumer,
                used: 0,
                reserved: 0,
                released_total: 0,
                spilling: false,
            },
        );
        Reservation {
            manager: Arc::clone(self),
            id,
        }
    }

    /// Closes an account and returns its whole reservation to the pool.
    fn unregister(&self, id: u64) {
        let mut ledger = self.ledger();
        if let Some(account) = ledger.accounts.remove(&id) {
            ledger.off_heap_used -= account.reserved;
        }
        // The account held only a `Weak`: dropping it here, under the
        // lock, runs no consumer code.
    }

    /// The heap is the other pool. Its owner (in Gluten, the JVM) reports
    /// it; the manager never refuses it, it only leaves the off-heap pool
    /// less room. Reservations already made stay, even past the new limit.
    pub fn set_heap_in_use(&self, bytes: u64) {
        self.ledger().heap_in_use = bytes;
    }

    pub fn limits(&self) -> Limits {
        self.ledger().limits()
    }

    /// Every account, in registration order.
    pub fn holdings(&self) -> Vec<Holding> {
        self.ledger().holdings()
    }

    /// The ledger's invariants, checked under its lock: the pool's total is
    /// the sum of the reservations, no reservation is smaller than its use,
    /// and the off-heap pool never passed the budget.
    pub fn check_invariants(&self) -> Result<(), String> {
        let ledger = self.ledger();
        let sum: u64 = ledger.accounts.values().map(|a| a.reserved).sum();
        if sum != ledger.off_heap_used {
            return Err(format!(
                "reservations sum to {sum} bytes, the pool says {}",
                ledger.off_heap_used
            ));
        }
        if let Some(a) = ledger.accounts.values().find(|a| a.used > a.reserved) {
            return Err(format!(
                "{} uses {} of {} reserved",
                a.name, a.used, a.reserved
            ));
        }
        if ledger.off_heap_used > ledger.budget {
            return Err(format!(
                "off-heap {} is over the budget {}",
                ledger.off_heap_used, ledger.budget
            ));
        }
        Ok(())
    }

    fn holding(&self, id: u64) -> Option<(u64, u64, bool)> {
        self.ledger()
            .accounts
            .get(&id)
            .map(|a| (a.used, a.reserved, a.spilling))
    }

    // ANCHOR: acquire
    /// The acquire flow: 1) try to reserve; 2) if short, ask one more
    /// consumer to spill, the others largest first and the requester last;
    /// 3) try again; 4) when nobody is left to ask, fail with who held what.
    /// Each consumer is asked at most once per request, so this ends.
    fn acquire(&self, id: u64, bytes: u64) -> Result<Grant, MemoryError> {
        let mut spills = Vec::new();
        let mut asked = Vec::new();
        loop {
            let mut ledger = self.ledger();
            // Re-validated on every pass: while the lock was released for a
            // spill, other threads may have taken or returned memory.
            let short = match ledger.try_reserve(id, bytes) {
                Ok(grant) => return Ok(Grant { spills, ..grant }),
                Err(Refusal::Short(short)) => short,
                Err(Refusal::TooLarge) => {
                    return Err(MemoryError::TooLarge {
                        consumer: ledger.name(id),
                        requested: bytes,
                        limits: ledger.limits(),
                    })
                }
                Err(Refusal::Unknown) => return Err(MemoryError::UnknownConsumer { id }),
            };
            let Some((victim, consumer)) = ledger.next_victim(id, &asked) else {
                return Err(MemoryError::OverBudget {
                    consumer: ledger.name(id),
                    requested: bytes,
                    short,
                    limits: ledger.limits(),
                    holdings: ledger.holdings(),
                    spills,
                });
            };
            asked.push(victim);
            let before = ledger.begin_spill(victim);
            // Never call a consumer under the lock: its spill gives memory
            // back through this manager, and would wait for the lock forever.
            drop(ledger);
            spills.push(self.spill_one(victim, consumer, short, before));
        }
    }
    // ANCHOR_END: acquire

    // ANCHOR: spill_one
    /// Asks one consumer to spill, with no lock held. The consumer may call
    /// `release`, or even `acquire`, on this manager meanwhile: it is marked
    /// as spilling, so a nested request never asks it again, and each level
    /// of nesting marks one more consumer, so nesting ends too.
    fn spill_one(
        &self,
        victim: u64,
        consumer: Arc<dyn MemoryConsumer>,
        asked: u64,
        before: u64,
    ) -> SpillReport {
        let reported = consumer.spill(asked);
        let released = self.ledger().end_spill(victim, before);
        let report = SpillReport {
            consumer: consumer.name().to_owned(),
            asked,
            reported,
            released,
        };
        // Dropped after the lock is released: if this is the last `Arc`, the
        // consumer's drop unregisters it, which takes the lock.
        drop(consumer);
        report
    }
    // ANCHOR_END: spill_one

    /// The release flow. Nobody waits on the manager, so there is nobody to
    /// wake: a consumer that was refused finds the room when it asks again.
    fn release(&self, id: u64, bytes: u64) -> Result<u64, MemoryError> {
        self.ledger().release(id, bytes)
    }
}

// ANCHOR: reservation
/// A consumer's handle on its account. Dropping it closes the account and
/// returns the whole reservation.
pub struct Reservation {
    manager: Arc<MemoryManager>,
    id: u64,
}

impl Reservation {
    /// Asks for `bytes` more. On success they are counted as used.
    pub fn acquire(&self, bytes: u64) -> Result<Grant, MemoryError> {
        self.manager.acquire(self.id, bytes)
    }

    /// Gives back `bytes` of use; returns what went back to the pool.
    pub fn release(&self, bytes: u64) -> Result<u64, MemoryError> {
        self.manager.release(self.id, bytes)
    }

    pub fn used(&self) -> u64 {
        self.manager.holding(self.id).map_or(0, |h| h.0)
    }

    pub fn reserved(&self) -> u64 {
        self.manager.holding(self.id).map_or(0, |h| h.1)
    }

    pub fn state(&self) -> ReservationState {
        match self.manager.holding(self.id) {
            Some((_, _, true)) => ReservationState::Spilling,
            Some((_, reserved, false)) if reserved > 0 => ReservationState::Reserved,
            _ => ReservationState::Empty,
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.manager.unregister(self.id);
    }
}
// ANCHOR_END: reservation

// ANCHOR: spillable_buffer
/// A consumer that holds batches of bytes and can drop them when asked, as
/// a sort or an aggregation spills its rows to disk.
pub struct SpillableBuffer {
    name: String,
    reservation: Reservation,
    batches: Mutex<Vec<Vec<u8>>>,
    spilled: AtomicU64,
}

impl SpillableBuffer {
    pub fn new(manager: &Arc<MemoryManager>, name: &str) -> Arc<SpillableBuffer> {
        Arc::new_cyclic(|me: &Weak<SpillableBuffer>| {
            let me: Weak<dyn MemoryConsumer> = me.clone();
            SpillableBuffer {
                name: name.to_owned(),
                reservation: manager.register(name, me),
                batches: Mutex::new(Vec::new()),
                spilled: AtomicU64::new(0),
            }
        })
    }

    /// Adds a batch of `len` bytes, reserving them first.
    pub fn push(&self, len: usize) -> Result<Grant, MemoryError> {
        // Reserve before taking `batches`: the manager may ask this very
        // buffer to spill, and `spill` takes `batches`.
        let grant = self.reservation.acquire(len as u64)?;
        self.lock_batches().push(vec![0; len]);
        Ok(grant)
    }

    /// Bytes spilled so far.
    pub fn spilled(&self) -> u64 {
        self.spilled.load(Ordering::Relaxed)
    }

    pub fn reservation(&self) -> &Reservation {
        &self.reservation
    }

    fn lock_batches(&self) -> MutexGuard<'_, Vec<Vec<u8>>> {
        self.batches.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl MemoryConsumer for SpillableBuffer {
    fn name(&self) -> &str {
        &self.name
    }

    fn spill(&self, bytes: u64) -> u64 {
        let mut freed = 0;
        {
            let mut batches = self.lock_batches();
            while freed < bytes {
                // A real engine writes the batch to disk first; this one
                // only counts it.
                let Some(batch) = batches.pop() else { break };
                freed += batch.len() as u64;
            }
        }
        self.spilled.fetch_add(freed, Ordering::Relaxed);
        // Every batch was reserved before it was pushed, so this release
        // cannot exceed the use. Report only what the manager took back.
        match self.reservation.release(freed) {
            Ok(_) => freed,
            Err(_) => 0,
        }
    }
}
// ANCHOR_END: spillable_buffer

// ANCHOR: linear_memory
/// The WebAssembly page: 64 KiB.
pub const WASM_PAGE: usize = 64 * 1024;
/// The most pages a 32-bit memory can have: 4 GiB.
pub const MAX_PAGES: u32 = 65536;

/// Why a grow returned -1. The memory and the budget are unchanged.
#[derive(Debug)]
pub enum GrowError {
    /// The new size would pass the declared maximum or 65536 pages.
    OverMaximum { requested: u64, maximum: u32 },
    /// The new size does not fit this platform's address space (32-bit).
    AddressSpace { pages: u32 },
    /// The manager said no.
    Refused(MemoryError),
    /// The manager said yes, the allocator said no.
    OutOfMemory(TryReserveError),
}

/// A reduced copy of `LinearMemory` from `examples/linear_memory.rs`: only
/// its Copy strategy (allocate the new size, copy, free the old block), on
/// std's allocator instead of `mmap`, and growing through a `Reservation`.
pub struct LinearMemory {
    bytes: Vec<u8>,
    maximum: u32,
}

impl LinearMemory {
    /// An empty memory that may grow to `maximum` pages (at most 65536).
    pub fn new(maximum: u32) -> LinearMemory {
        LinearMemory {
            bytes: Vec::new(),
            maximum: maximum.min(MAX_PAGES),
        }
    }

    /// The size in pages (`memory.size`).
    pub fn size(&self) -> u32 {
        (self.bytes.len() / WASM_PAGE) as u32
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.bytes
    }

    /// `memory.grow`: the old size in pages, or -1 with nothing changed.
    pub fn grow(&mut self, delta: u32, reservation: &Reservation) -> i32 {
        match self.grow_traced(delta, reservation) {
            // At most 65536, so it fits an i32.
            Ok((old_pages, _)) => old_pages as i32,
            Err(_) => -1,
        }
    }

    /// `grow`, also saying what the manager granted, or why it failed.
    pub fn grow_traced(
        &mut self,
        delta: u32,
        reservation: &Reservation,
    ) -> Result<(u32, Option<Grant>), GrowError> {
        let old_pages = self.size();
        let over = GrowError::OverMaximum {
            requested: u64::from(old_pages) + u64::from(delta),
            maximum: self.maximum,
        };
        let new_pages = match old_pages.checked_add(delta) {
            Some(n) if n <= self.maximum => n,
            _ => return Err(over),
        };
        if delta == 0 {
            return Ok((old_pages, None));
        }
        let Some(new_len) = (new_pages as usize).checked_mul(WASM_PAGE) else {
            return Err(GrowError::AddressSpace { pages: new_pages });
        };
        let delta_bytes = u64::from(delta) * WASM_PAGE as u64;
        // Ask the manager before touching memory: its no is the guest's -1.
        let grant = reservation
            .acquire(delta_bytes)
            .map_err(GrowError::Refused)?;
        let mut bigger = Vec::new();
        if let Err(e) = bigger.try_reserve_exact(new_len) {
            // Undo the grant, so that -1 leaves the budget as it was. It
            // cannot fail: these bytes were acquired just above, and
            // `WasmInstance::spill` never releases any.
            let _ = reservation.release(delta_bytes);
            return Err(GrowError::OutOfMemory(e));
        }
        bigger.extend_from_slice(&self.bytes);
        bigger.resize(new_len, 0);
        // The old block is freed here.
        self.bytes = bigger;
        Ok((old_pages, Some(grant)))
    }
}
// ANCHOR_END: linear_memory

impl fmt::Display for GrowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GrowError::OverMaximum { requested, maximum } => {
                write!(f, "{requested} pages requested, maximum is {maximum}")
            }
            GrowError::AddressSpace { pages } => {
                write!(f, "{pages} pages do not fit this address space")
            }
            GrowError::Refused(e) => write!(f, "{e}"),
            GrowError::OutOfMemory(e) => write!(f, "allocation failed: {e}"),
        }
    }
}

impl std::error::Error for GrowError {}

// ANCHOR: wasm_instance
/// A WebAssembly instance whose memory grows through the manager.
pub struct WasmInstance {
    name: String,
    reservation: Reservation,
    memory: Mutex<LinearMemory>,
}

impl WasmInstance {
    pub fn new(manager: &Arc<MemoryManager>, name: &str, maximum_pages: u32) -> Arc<WasmInstance> {
        Arc::new_cyclic(|me: &Weak<WasmInstance>| {
            let me: Weak<dyn MemoryConsumer> = me.clone();
            WasmInstance {
                name: name.to_owned(),
                reservation: manager.register(name, me),
                memory: Mutex::new(LinearMemory::new(maximum_pages)),
            }
        })
    }

    /// The guest's `memory.grow`: the old size in pages, or -1.
    pub fn memory_grow(&self, delta: u32) -> i32 {
        self.lock_memory().grow(delta, &self.reservation)
    }

    /// `memory_grow`, with what happened.
    pub fn memory_grow_traced(&self, delta: u32) -> Result<(u32, Option<Grant>), GrowError> {
        // Holding `memory` across the manager's call is safe only because
        // `spill` below never takes it. A consumer may hold a lock across
        // `acquire` only if its own `spill` never takes that lock.
        self.lock_memory().grow_traced(delta, &self.reservation)
    }

    pub fn pages(&self) -> u32 {
        self.lock_memory().size()
    }

    pub fn reservation(&self) -> &Reservation {
        &self.reservation
    }

    fn lock_memory(&self) -> MutexGuard<'_, LinearMemory> {
        self.memory.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl MemoryConsumer for WasmInstance {
    fn name(&self) -> &str {
        &self.name
    }

    /// WebAssembly has no `memory.shrink`: once grown, a memory keeps its
    /// pages until the instance is dropped. So it has nothing to give back,
    /// and the manager must find the bytes elsewhere.
    fn spill(&self, _bytes: u64) -> u64 {
        0
    }
}
// ANCHOR_END: wasm_instance

/// The demo's output: one line per event, each followed by the ledger.
struct Timeline {
    lines: Vec<String>,
    step: u32,
}

impl Timeline {
    fn event(&mut self, manager: &MemoryManager, who: &str, what: &str, result: &str) {
        self.step += 1;
        self.lines
            .push(format!("{:>2} {who:<5} {what:<22} {result}", self.step));
        let l = manager.limits();
        let mut ledger = format!(
            "   heap {} + off-heap {} (limit {}) |",
            kib(l.heap_in_use),
            kib(l.off_heap_used),
            kib(l.off_heap_limit())
        );
        for h in manager.holdings() {
            ledger.push_str(&format!(
                " {} {}/{}",
                h.consumer,
                kib(h.used),
                kib(h.reserved)
            ));
        }
        self.lines.push(ledger);
    }
}

fn describe_grant(g: &Grant) -> String {
    let mut s = if g.grown == 0 {
        format!("ok, inside the reservation (used {})", kib(g.used))
    } else {
        format!(
            "ok, reservation +{} to {} (used {})",
            kib(g.grown),
            kib(g.reserved),
            kib(g.used)
        )
    };
    for spill in &g.spills {
        s.push_str(&format!(
            "; {} spilled {} of {} asked",
            spill.consumer,
            kib(spill.released),
            kib(spill.asked)
        ));
    }
    s
}

fn describe_push(result: Result<Grant, MemoryError>) -> String {
    match result {
        Ok(g) => describe_grant(&g),
        Err(e) => format!("refused: {e}"),
    }
}

fn describe_grow(delta: u32, result: Result<(u32, Option<Grant>), GrowError>) -> (String, String) {
    match result {
        Ok((old, grant)) => (
            format!("memory.grow({delta}) = {old}"),
            grant.map_or_else(|| "ok".to_owned(), |g| describe_grant(&g)),
        ),
        Err(e) => (format!("memory.grow({delta}) = -1"), format!("{e}")),
    }
}

// ANCHOR: scenario
/// The demo: two spilling operators and a WebAssembly instance share the
/// budget while the heap grows under them.
fn run_scenario(config: Config) -> Result<Vec<String>, String> {
    let manager = MemoryManager::new(config)?;
    let full_scale = Config {
        total: 8 * 1024 * MIB,
        reserved_overhead: 300 * MIB,
        ..config
    };
    let mut t = Timeline {
        lines: vec![
            format!(
                "Gluten at full scale, 8 GiB heap: budget = (8192 MiB - 300 MiB) * {} = {:.1} MiB",
                config.fraction,
                full_scale.budget()? as f64 / MIB as f64
            ),
            format!(
                "this demo, 1024 times smaller: budget = ({} KiB - {} KiB) * {} = {} KiB",
                kib(config.total),
                kib(config.reserved_overhead),
                config.fraction,
                kib(manager.limits().budget)
            ),
            format!(
                "reservations grow by {}% in {} KiB granules; all sizes below in KiB",
                config.growth_pct,
                kib(config.granule)
            ),
        ],
        step: 0,
    };
    let sort = SpillableBuffer::new(&manager, "sort");
    let agg = SpillableBuffer::new(&manager, "agg");
    let wasm = WasmInstance::new(&manager, "wasm", 1024);

    manager.set_heap_in_use(1024 * KIB);
    let limits = manager.limits();
    t.event(
        &manager,
        "heap",
        "in use: 1024.0",
        &format!(
            "off-heap limit = {} - {} = {}",
            kib(limits.budget),
            kib(limits.heap_in_use),
            kib(limits.off_heap_limit())
        ),
    );
    for _ in 0..8 {
        let result = describe_push(sort.push(128 * KIB as usize));
        t.event(&manager, "sort", "push 128.0", &result);
    }
    for _ in 0..4 {
        let result = describe_push(agg.push(384 * KIB as usize));
        t.event(&manager, "agg", "push 384.0", &result);
    }
    for delta in [8, 4] {
        let (what, result) = describe_grow(delta, wasm.memory_grow_traced(delta));
        t.event(&manager, "wasm", &what, &result);
    }
    manager.set_heap_in_use(2048 * KIB);
    let l = manager.limits();
    t.event(
        &manager,
        "heap",
        "in use: 2048.0",
        &format!(
            "off-heap limit = {} - {} = {}: {} over it, nobody is told",
            kib(l.budget),
            kib(l.heap_in_use),
            kib(l.off_heap_limit()),
            kib(l.off_heap_used.saturating_sub(l.off_heap_limit()))
        ),
    );
    for delta in [4, 64, 32, 16] {
        let (what, result) = describe_grow(delta, wasm.memory_grow_traced(delta));
        t.event(&manager, "wasm", &what, &result);
    }
    t.lines.push(format!(
        "spilled in total: sort {} KiB, agg {} KiB; wasm has {} pages",
        kib(sort.spilled()),
        kib(agg.spilled()),
        wasm.pages()
    ));
    drop((sort, agg));
    t.event(
        &manager,
        "all",
        "sort and agg dropped",
        "their reservations return",
    );
    manager.check_invariants()?;
    t.lines
        .push("invariants hold: the reservations sum to the off-heap total".to_owned());
    Ok(t.lines)
}
// ANCHOR_END: scenario

fn parse_args(args: &[String]) -> Result<Config, String> {
    let mut config = Config::default();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next();
        match (flag.as_str(), value) {
            ("--growth-pct", Some(v)) => {
                config.growth_pct = match v.parse::<u64>() {
                    Ok(n) if n <= 1000 => n,
                    _ => return Err(format!("--growth-pct takes 0..=1000, got `{v}`")),
                }
            }
            ("--fraction", Some(v)) => {
                config.fraction = match v.parse::<f64>() {
                    Ok(f) if f > 0.0 && f <= 1.0 => f,
                    _ => return Err(format!("--fraction takes a number in (0, 1], got `{v}`")),
                }
            }
            ("--growth-pct" | "--fraction", None) => {
                return Err(format!("{flag} needs a value"));
            }
            (other, _) => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(config)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let config = match parse_args(&args) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("memory_manager: {e}");
            eprintln!("usage: memory_manager [--growth-pct N] [--fraction F]");
            eprintln!("  --growth-pct N  how far a reservation grows ahead, in % (default 25)");
            eprintln!("  --fraction F    the budget's share of total - overhead (default 0.6)");
            std::process::exit(2);
        }
    };
    match run_scenario(config) {
        Ok(lines) => {
            for line in lines {
                println!("{line}");
            }
        }
        Err(e) => {
            eprintln!("memory_manager: {e}");
            std::process::exit(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    /// A consumer whose spill frees a set number of bytes, or lies about it.
    struct Fixed {
        name: String,
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
            Arc::new_cyclic(|me: &Weak<Fixed>| {
                let me: Weak<dyn MemoryConsumer> = me.clone();
                Fixed {
                    name: name.to_owned(),
                    reservation: manager.register(name, me),
                    spillable: Mutex::new(0),
                    lie,
                    seen: Mutex::new(Vec::new()),
                }
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
        fn name(&self) -> &str {
            &self.name
        }

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
            matches!(err, MemoryError::OverBudget { short: 1, .. }),
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
            .map(|_| a.take(200 * KIB).map(|g| (g.grown / KIB, g.reserved / KIB)))
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
        assert_eq!(other.reservation.used(), 512 * KIB);
    }

    #[test]
    fn release_returns_whole_granules_to_the_pool() {
        let manager = manager_with(4096, 25);
        let a = Fixed::new(&manager, "a", 0);
        a.take(1000 * KIB).expect("fits");
        assert_eq!(a.reservation.reserved(), 1024 * KIB);
        // Use falls to 300 KiB, kept as 320 (5 granules): 704 go back.
        assert_eq!(a.reservation.release(700 * KIB), Ok(704 * KIB));
        assert_eq!(a.reservation.reserved(), 320 * KIB);
        assert_eq!(manager.limits().off_heap_used, 320 * KIB);
        let before = manager.holdings();
        let err = a.reservation.release(301 * KIB).expect_err("too much");
        assert!(matches!(err, MemoryError::ReleaseTooLarge { .. }));
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
        assert_eq!(me.reservation.used(), (512 - 128 + 640) * KIB);
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
        assert!(matches!(err, MemoryError::TooLarge { .. }), "{err:?}");
        assert!(
            other.seen.lock().expect("lock").is_empty(),
            "nobody spilled"
        );
        assert_eq!(other.reservation.used(), 256 * KIB);
    }

    #[test]
    fn a_failed_acquire_says_who_held_what_and_who_spilled() {
        let manager = manager_with(1024, 0);
        let wasm = WasmInstance::new(&manager, "wasm", 64);
        let sort = Fixed::new(&manager, "sort", 0);
        assert_eq!(wasm.memory_grow(8), 0);
        sort.take(256 * KIB).expect("fits");
        let before = wasm.reservation().used();
        let err = match wasm.memory_grow_traced(9) {
            Err(GrowError::Refused(e)) => e,
            other => panic!("expected a refusal, got {other:?}"),
        };
        assert_eq!(
            err.to_string(),
            "wasm asked for 576.0 KiB and is 64.0 KiB short: heap 0.0 + off-heap 512.0 \
             of budget 1024.0; held (used/reserved): wasm 512.0/512.0 sort 0.0/0.0; \
             spilled: sort 256.0 wasm 0.0"
        );
        assert_eq!(
            wasm.reservation().used(),
            before,
            "the requester is unchanged"
        );
        assert_eq!(wasm.pages(), 8);
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
        let MemoryError::OverBudget { spills, .. } = err else {
            panic!("expected OverBudget, got {err:?}");
        };
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
        fn name(&self) -> &str {
            "reentrant"
        }

        fn spill(&self, bytes: u64) -> u64 {
            // It needs a spill too. If the manager asked this consumer
            // again, this would recurse until the stack overflowed; if it
            // held its lock, this would deadlock.
            let nested = self.reservation.acquire(1024 * KIB);
            *self.nested.lock().expect("lock") = Some(nested);
            let freed = bytes.min(self.reservation.used());
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
            let r = Arc::new_cyclic(|me: &Weak<Reentrant>| {
                let me: Weak<dyn MemoryConsumer> = me.clone();
                Reentrant {
                    reservation: manager.register("reentrant", me),
                    nested: Mutex::new(None),
                }
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
            Some(Err(MemoryError::OverBudget { spills, .. })) => assert!(spills.is_empty()),
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
        let wasm = WasmInstance::new(&manager, "wasm", 64);
        assert_eq!(wasm.memory_grow(4), 0);
        wasm.lock_memory().as_mut_slice()[0] = 7;
        let before = (manager.holdings(), manager.limits());
        assert_eq!(
            wasm.memory_grow(13),
            -1,
            "13 pages are 832 KiB, 768 are free"
        );
        assert_eq!(wasm.memory_grow(61), -1, "over the declared maximum");
        assert_eq!((manager.holdings(), manager.limits()), before);
        assert_eq!(wasm.pages(), 4);
        assert_eq!(wasm.memory_grow(12), 4, "exactly what is free");
        assert_eq!(wasm.memory_grow(0), 16);
        let mut memory = wasm.lock_memory();
        let bytes = memory.as_mut_slice();
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
        let wasm = WasmInstance::new(&manager, "wasm", 64);
        for _ in 0..8 {
            sort.push(64 * KIB as usize).expect("fits");
        }
        assert_eq!(wasm.memory_grow(4), 0);
        manager.set_heap_in_use(512 * KIB);
        let (_, grant) = wasm.memory_grow_traced(1).expect("grows after a spill");
        let spills = grant.map(|g| g.spills).unwrap_or_default();
        assert_eq!(spills.len(), 1);
        assert_eq!(
            (spills[0].consumer.as_str(), spills[0].released),
            ("sort", 320 * KIB)
        );
        assert_eq!(sort.spilled(), 320 * KIB);
        manager.check_invariants().expect("invariants");
    }

    #[test]
    fn bad_arguments_are_rejected_and_named() {
        let args = |s: &[&str]| s.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        assert_eq!(parse_args(&[]), Ok(Config::default()));
        let c = parse_args(&args(&["--growth-pct", "0", "--fraction", "0.5"])).expect("valid");
        assert_eq!((c.growth_pct, c.fraction), (0, 0.5));
        for (bad, named) in [
            (&["--fraction", "0"][..], "--fraction"),
            (&["--fraction", "x"], "--fraction"),
            (&["--growth-pct", "1001"], "--growth-pct"),
            (&["--growth-pct"], "--growth-pct"),
            (&["--pages", "1"], "--pages"),
        ] {
            let err = parse_args(&args(bad)).expect_err("rejected");
            assert!(err.contains(named), "{err}");
        }
    }

    /// The output printed in src/part3-dynamic-sizing.md must be this
    /// program's output, line for line: the book cannot drift from the code.
    #[test]
    fn the_book_shows_the_scenario_output_as_it_is() {
        let lines = run_scenario(Config::default()).expect("the scenario runs");
        let chapter =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/part3-dynamic-sizing.md");
        let text = std::fs::read_to_string(&chapter).expect("the chapter exists");
        let shown = format!("```text\n{}\n```", lines.join("\n"));
        assert!(
            text.contains(&shown),
            "{} does not show the current output of `cargo run --example memory_manager`:\n{}",
            chapter.display(),
            lines.join("\n")
        );
    }
}
