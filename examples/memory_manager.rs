//! A memory manager that shares one budget between consumers that can spill,
//! sized at run time the way Apache Gluten's dynamic off-heap sizing sizes
//! it: the heap and the off-heap pool share one total, and the off-heap pool
//! gets what the heap leaves. A WebAssembly memory grows through the manager,
//! and the manager's refusal is `memory.grow`'s -1.
//!
//! - Explained in: "Architecture" (src/part3-architecture.md), "The flows"
//!   (src/part3-flows.md) and "Dynamic sizing" (src/part3-dynamic-sizing.md)
//! - Run: `cargo run --example memory_manager`
//! - Tested by: `cargo test --test memory_manager`
//! - Depends on: std

use std::cmp::Reverse;
use std::collections::{BTreeMap, TryReserveError};
use std::fmt;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
/// The largest growth percentage: a reservation at most 11 times its need.
const MAX_GROWTH_PCT: u64 = 1000;

// ANCHOR: config
/// What the manager is built from (defaults in `Config::default`: Gluten's,
/// scaled down 1024 times).
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
    /// current size (Gluten's `spillableReservationGrowthPct`).
    pub growth_pct: u64,
    /// Reservations grow in whole multiples of this many bytes.
    pub granule: u64,
}
// ANCHOR_END: config

/// Gluten's defaults, scaled down 1024 times so that the demo fits in a few
/// MiB: an 8 GiB executor becomes 8 MiB, and Spark's fixed 300 MiB becomes
/// 300 KiB. The fraction and the growth percentage have no unit, so they
/// keep their values.
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
    // ANCHOR: budget
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
        if self.granule == 0 || self.growth_pct > MAX_GROWTH_PCT {
            return Err(format!(
                "granule must be at least 1 byte and growth_pct at most {MAX_GROWTH_PCT}, got {} and {}",
                self.granule, self.growth_pct
            ));
        }
        Ok(((self.total - self.reserved_overhead) as f64 * self.fraction) as u64)
    }
    // ANCHOR_END: budget
}

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

// ANCHOR: grant
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

// ANCHOR_END: grant

// ANCHOR: limits
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

// ANCHOR_END: limits

// ANCHOR: memory_error
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
// ANCHOR_END: memory_error

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

// ANCHOR: ahead
/// `bytes` rounded up to a whole number of granules.
fn round_up(bytes: u64, granule: u64) -> u64 {
    bytes.div_ceil(granule).saturating_mul(granule)
}

/// What a reservation of `reserved` bytes would like to grow to when it must
/// hold `need`: `growth_pct` of itself ahead, in whole granules.
fn wish(reserved: u64, need: u64, growth_pct: u64, granule: u64) -> u64 {
    let ahead = reserved.saturating_add(reserved.saturating_mul(growth_pct) / 100);
    round_up(need.max(ahead), granule)
}
// ANCHOR_END: ahead

impl Ledger {
    // ANCHOR: try_reserve
    /// Grows `id`'s use by `bytes` if the budget allows, and its reservation
    /// by `growth_pct` where there is room. Changes nothing when it says no.
    fn try_reserve(&mut self, id: u64, bytes: u64) -> Result<Grant, Refusal> {
        let Limits {
            budget,
            heap_in_use: heap,
            off_heap_used,
        } = self.limits();
        let limit = self.limits().off_heap_limit();
        let (growth_pct, granule) = (self.growth_pct, self.granule);
        let account = self.accounts.get_mut(&id).ok_or(Refusal::Unknown)?;
        let need = account.used.saturating_add(bytes);
        if need <= account.reserved {
            // Inside the reservation: no budget check at all.
            account.used = need;
            return Ok(grant(account, bytes, 0));
        }
        let size = need - account.reserved;
        // Gluten's check: a request fails when size + off-heap used + heap
        // in use is more than the budget.
        let total = size.saturating_add(off_heap_used).saturating_add(heap);
        if total > budget {
            return Err(if bytes > limit {
                Refusal::TooLarge
            } else {
                Refusal::Short(total - budget)
            });
        }
        // Only `size` is required: the extra comes from free room, so it
        // never makes anyone spill.
        let room = budget - heap - off_heap_used;
        let wished = wish(account.reserved, need, growth_pct, granule);
        let grown = wished.saturating_sub(account.reserved).min(room).max(size);
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

impl Ledger {
    /// The error for a request larger than the whole off-heap limit.
    fn too_large(&self, id: u64, bytes: u64) -> MemoryError {
        MemoryError::TooLarge {
            consumer: self.name(id),
            requested: bytes,
            limits: self.limits(),
        }
    }

    /// The error when nobody is left to ask: who held what, who spilled.
    fn over_budget(
        &self,
        id: u64,
        bytes: u64,
        short: u64,
        spills: Vec<SpillReport>,
    ) -> MemoryError {
        MemoryError::OverBudget {
            consumer: self.name(id),
            requested: bytes,
            short,
            limits: self.limits(),
            holdings: self.holdings(),
            spills,
        }
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

    /// Builds a consumer that holds its own `Reservation`: `build` gets the
    /// handle, and the account refers back to the consumer weakly.
    pub fn register_with<T: MemoryConsumer + 'static>(
        self: &Arc<Self>,
        name: &str,
        build: impl FnOnce(Reservation) -> T,
    ) -> Arc<T> {
        Arc::new_cyclic(|me: &Weak<T>| {
            let me: Weak<dyn MemoryConsumer> = me.clone();
            build(self.register(name, me))
        })
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
    /// The acquire flow. Each consumer is asked at most once per request,
    /// so the loop ends.
    fn acquire(&self, id: u64, bytes: u64) -> Result<Grant, MemoryError> {
        let mut spills = Vec::new();
        let mut asked = Vec::new();
        loop {
            let mut ledger = self.ledger();
            // Re-validated on every pass: while the lock was released for a
            // spill, other threads may have taken or returned memory.
            trace("MemoryManager", "Ledger", "try_reserve");
            let short = match ledger.try_reserve(id, bytes) {
                Ok(grant) => return Ok(Grant { spills, ..grant }),
                Err(Refusal::Short(short)) => short,
                Err(Refusal::TooLarge) => return Err(ledger.too_large(id, bytes)),
                Err(Refusal::Unknown) => return Err(MemoryError::UnknownConsumer { id }),
            };
            trace("MemoryManager", "Ledger", "next_victim");
            let Some((victim, consumer)) = ledger.next_victim(id, &asked) else {
                return Err(ledger.over_budget(id, bytes, short, spills));
            };
            asked.push(victim);
            trace("MemoryManager", "Ledger", "begin_spill");
            let before = ledger.begin_spill(victim);
            // Never call a consumer under the lock: its spill gives memory
            // back through this manager, and would wait for the lock forever.
            drop(ledger);
            trace("MemoryManager", "MemoryManager", "spill_one");
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
        // Traced by the consumer: its type is behind `dyn`.
        let reported = consumer.spill(asked);
        trace("MemoryManager", "Ledger", "end_spill");
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
        trace("MemoryManager", "Ledger", "release");
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
        trace("Reservation", "MemoryManager", "acquire");
        self.manager.acquire(self.id, bytes)
    }

    /// Gives back `bytes` of use; returns what went back to the pool.
    pub fn release(&self, bytes: u64) -> Result<u64, MemoryError> {
        trace("Reservation", "MemoryManager", "release");
        self.manager.release(self.id, bytes)
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.manager.unregister(self.id);
    }
}
// ANCHOR_END: reservation

impl Reservation {
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
    /// A buffer with an account of its own in `manager`.
    pub fn new(manager: &Arc<MemoryManager>, name: &str) -> Arc<SpillableBuffer> {
        manager.register_with(name, |reservation| SpillableBuffer {
            name: name.to_owned(),
            reservation,
            batches: Mutex::new(Vec::new()),
            spilled: AtomicU64::new(0),
        })
    }

    /// Adds a batch of `len` bytes, reserving them first.
    pub fn push(&self, len: usize) -> Result<Grant, MemoryError> {
        // Reserve before taking `batches`: the manager may ask this very
        // buffer to spill, and `spill` takes `batches`.
        trace("SpillableBuffer", "Reservation", "acquire");
        let grant = self.reservation.acquire(len as u64)?;
        self.lock_batches().push(vec![0; len]);
        Ok(grant)
    }
}
// ANCHOR_END: spillable_buffer

impl SpillableBuffer {
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

// ANCHOR: spillable_spill
impl MemoryConsumer for SpillableBuffer {
    fn name(&self) -> &str {
        &self.name
    }

    fn spill(&self, bytes: u64) -> u64 {
        trace("MemoryManager", "SpillableBuffer", "spill");
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
        trace("SpillableBuffer", "Reservation", "release");
        match self.reservation.release(freed) {
            Ok(_) => freed,
            Err(_) => 0,
        }
    }
}
// ANCHOR_END: spillable_spill

/// The WebAssembly page: 64 KiB.
pub const WASM_PAGE: usize = 64 * 1024;
/// The most pages a 32-bit memory can have: 4 GiB.
pub const MAX_PAGES: u32 = 65536;

// ANCHOR: budgeted_memory
/// Why a grow returned -1. The memory and the budget are unchanged.
#[derive(Debug)]
pub enum MemoryGrowError {
    /// The new size would pass the declared maximum or 65536 pages.
    OverMaximum { requested: u64, maximum: u32 },
    /// The new size does not fit this platform's address space (32-bit).
    AddressSpace { pages: u32 },
    /// The manager said no.
    Refused(MemoryError),
    /// The manager said yes, the allocator said no.
    OutOfMemory(TryReserveError),
}

/// A WebAssembly memory that grows only through a `Reservation`. It grows
/// by copying (allocate the new size, copy, free the old block) on std's
/// allocator, the simplest of Part I's strategies.
pub struct BudgetedMemory {
    bytes: Vec<u8>,
    maximum: u32,
}
// ANCHOR_END: budgeted_memory

impl BudgetedMemory {
    /// An empty memory that may grow to `maximum` pages (at most 65536).
    pub fn new(maximum: u32) -> BudgetedMemory {
        BudgetedMemory {
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

    // ANCHOR: grow_traced
    /// `grow`, also saying what the manager granted, or why it failed.
    pub fn grow_traced(
        &mut self,
        delta: u32,
        reservation: &Reservation,
    ) -> Result<(u32, Option<Grant>), MemoryGrowError> {
        let old_pages = self.size();
        let over = MemoryGrowError::OverMaximum {
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
            return Err(MemoryGrowError::AddressSpace { pages: new_pages });
        };
        let delta_bytes = u64::from(delta) * WASM_PAGE as u64;
        // Ask the manager before touching memory: its no is the guest's -1.
        trace("BudgetedMemory", "Reservation", "acquire");
        let grant = reservation
            .acquire(delta_bytes)
            .map_err(MemoryGrowError::Refused)?;
        let mut bigger = Vec::new();
        if let Err(e) = bigger.try_reserve_exact(new_len) {
            // Undo the grant, so that -1 leaves the budget as it was. It
            // cannot fail: `WasmInstance::spill` never releases any.
            let _ = reservation.release(delta_bytes);
            return Err(MemoryGrowError::OutOfMemory(e));
        }
        bigger.extend_from_slice(&self.bytes);
        bigger.resize(new_len, 0);
        self.bytes = bigger; // and the old block is freed
        Ok((old_pages, Some(grant)))
    }
    // ANCHOR_END: grow_traced
}

impl fmt::Display for MemoryGrowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MemoryGrowError::OverMaximum { requested, maximum } => {
                write!(f, "{requested} pages requested, maximum is {maximum}")
            }
            MemoryGrowError::AddressSpace { pages } => {
                write!(f, "{pages} pages do not fit this address space")
            }
            MemoryGrowError::Refused(e) => write!(f, "{e}"),
            MemoryGrowError::OutOfMemory(e) => write!(f, "allocation failed: {e}"),
        }
    }
}

impl std::error::Error for MemoryGrowError {}

// ANCHOR: wasm_instance
/// A WebAssembly instance whose memory grows through the manager.
pub struct WasmInstance {
    name: String,
    reservation: Reservation,
    memory: Mutex<BudgetedMemory>,
}

impl WasmInstance {
    /// The guest's `memory.grow`: the old size in pages, or -1.
    pub fn memory_grow(&self, delta: u32) -> i32 {
        self.lock_memory().grow(delta, &self.reservation)
    }

    /// `memory_grow`, with what happened.
    pub fn memory_grow_traced(&self, delta: u32) -> Result<(u32, Option<Grant>), MemoryGrowError> {
        // Holding `memory` across the manager's call is safe only because
        // `spill` below never takes it. A consumer may hold a lock across
        // `acquire` only if its own `spill` never takes that lock.
        trace("WasmInstance", "BudgetedMemory", "grow_traced");
        self.lock_memory().grow_traced(delta, &self.reservation)
    }
}
// ANCHOR_END: wasm_instance

impl WasmInstance {
    /// An instance whose memory may grow to `maximum_pages`.
    pub fn new(manager: &Arc<MemoryManager>, name: &str, maximum_pages: u32) -> Arc<WasmInstance> {
        manager.register_with(name, |reservation| WasmInstance {
            name: name.to_owned(),
            reservation,
            memory: Mutex::new(BudgetedMemory::new(maximum_pages)),
        })
    }

    pub fn pages(&self) -> u32 {
        self.lock_memory().size()
    }

    pub fn reservation(&self) -> &Reservation {
        &self.reservation
    }

    pub fn lock_memory(&self) -> MutexGuard<'_, BudgetedMemory> {
        self.memory.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

// ANCHOR: wasm_spill
impl MemoryConsumer for WasmInstance {
    fn name(&self) -> &str {
        &self.name
    }

    /// WebAssembly has no `memory.shrink`: once grown, a memory keeps its
    /// pages until the instance is dropped. So it has nothing to give back,
    /// and the manager must find the bytes elsewhere.
    fn spill(&self, _bytes: u64) -> u64 {
        trace("MemoryManager", "WasmInstance", "spill");
        0
    }
}
// ANCHOR_END: wasm_spill

/// The calls between the types, in the order they run, once `--trace` or a
/// test turns it on: `From->>To: function`, as the sequence diagrams in "The
/// flows" draw them. `tests/diagrams_match_code.rs` holds the diagrams to it.
static TRACE: Mutex<Option<Vec<String>>> = Mutex::new(None);

fn trace(from: &str, to: &str, call: &str) {
    let mut trace = TRACE.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(calls) = trace.as_mut() {
        calls.push(format!("{from}->>{to}: {call}"));
    }
}

/// Runs the scenario with the trace on, and returns the calls it made.
pub fn trace_scenario(config: Config) -> Result<Vec<String>, String> {
    *TRACE.lock().unwrap_or_else(PoisonError::into_inner) = Some(Vec::new());
    let run = run_scenario(config);
    let calls = TRACE.lock().unwrap_or_else(PoisonError::into_inner).take();
    run.map(|_| calls.unwrap_or_default())
}

/// The demo's output: one line per event, each followed by the ledger.
struct Timeline<'a> {
    manager: &'a MemoryManager,
    lines: Vec<String>,
    step: u32,
}

impl<'a> Timeline<'a> {
    /// The budget at Gluten's scale and at this demo's, then the events.
    fn new(config: &Config, manager: &'a MemoryManager) -> Result<Timeline<'a>, String> {
        let full_scale = Config {
            total: 8 * 1024 * MIB,
            reserved_overhead: 300 * MIB,
            ..*config
        };
        let lines = vec![
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
        ];
        Ok(Timeline {
            manager,
            lines,
            step: 0,
        })
    }

    fn event(&mut self, who: &str, what: &str, result: &str) {
        self.step += 1;
        self.lines
            .push(format!("{:>2} {who:<5} {what:<22} {result}", self.step));
        let l = self.manager.limits();
        let mut ledger = format!(
            "   heap {} + off-heap {} (limit {}) |",
            kib(l.heap_in_use),
            kib(l.off_heap_used),
            kib(l.off_heap_limit())
        );
        for h in self.manager.holdings() {
            let (used, reserved) = (kib(h.used), kib(h.reserved));
            ledger.push_str(&format!(" {} {used}/{reserved}", h.consumer));
        }
        self.lines.push(ledger);
    }

    /// The heap's owner reports `bytes` in use.
    fn heap(&mut self, bytes: u64) {
        self.manager.set_heap_in_use(bytes);
        let l = self.manager.limits();
        let mut result = format!(
            "off-heap limit = {} - {} = {}",
            kib(l.budget),
            kib(l.heap_in_use),
            kib(l.off_heap_limit())
        );
        if l.off_heap_used > l.off_heap_limit() {
            let over = kib(l.off_heap_used - l.off_heap_limit());
            result.push_str(&format!(": {over} over it, nobody is told"));
        }
        self.event("heap", &format!("in use: {}", kib(bytes)), &result);
    }

    fn push(&mut self, buffer: &SpillableBuffer, bytes: u64) {
        let result = match buffer.push(bytes as usize) {
            Ok(g) => describe_grant(&g),
            Err(e) => format!("refused: {e}"),
        };
        self.event(buffer.name(), &format!("push {}", kib(bytes)), &result);
    }

    fn grow(&mut self, wasm: &WasmInstance, delta: u32) {
        let (what, result) = match wasm.memory_grow_traced(delta) {
            Ok((old, grant)) => (
                format!("memory.grow({delta}) = {old}"),
                grant.map_or_else(|| "ok".to_owned(), |g| describe_grant(&g)),
            ),
            Err(e) => (format!("memory.grow({delta}) = -1"), format!("{e}")),
        };
        self.event(wasm.name(), &what, &result);
    }
}

fn describe_grant(g: &Grant) -> String {
    let mut s = if g.grown == 0 {
        format!("ok, inside the reservation (used {})", kib(g.used))
    } else {
        let (grown, reserved, used) = (kib(g.grown), kib(g.reserved), kib(g.used));
        format!("ok, reservation +{grown} to {reserved} (used {used})")
    };
    for spill in &g.spills {
        let (released, asked) = (kib(spill.released), kib(spill.asked));
        s.push_str(&format!(
            "; {} spilled {released} of {asked} asked",
            spill.consumer
        ));
    }
    s
}

// ANCHOR: scenario
/// The demo: two spilling operators and a WebAssembly instance share the
/// budget while the heap grows under them.
pub fn run_scenario(config: Config) -> Result<Vec<String>, String> {
    let manager = MemoryManager::new(config)?;
    let mut t = Timeline::new(&config, &manager)?;
    let sort = SpillableBuffer::new(&manager, "sort");
    let agg = SpillableBuffer::new(&manager, "agg");
    let wasm = WasmInstance::new(&manager, "wasm", 1024);
    t.heap(1024 * KIB);
    for _ in 0..8 {
        t.push(&sort, 128 * KIB);
    }
    for _ in 0..4 {
        t.push(&agg, 384 * KIB);
    }
    for delta in [8, 4] {
        t.grow(&wasm, delta);
    }
    // ANCHOR_END: scenario
    // ANCHOR: scenario_pressure
    // The heap doubles under the reservations, then the guest grows.
    t.heap(2048 * KIB);
    for delta in [4, 64, 32, 16] {
        t.grow(&wasm, delta);
    }
    let (sorted, aggregated) = (kib(sort.spilled()), kib(agg.spilled()));
    t.lines.push(format!(
        "spilled in total: sort {sorted} KiB, agg {aggregated} KiB; wasm has {} pages",
        wasm.pages()
    ));
    drop((sort, agg));
    t.event("all", "sort and agg dropped", "their reservations return");
    manager.check_invariants()?;
    t.lines
        .push("invariants hold: the reservations sum to the off-heap total".to_owned());
    Ok(t.lines)
}
// ANCHOR_END: scenario_pressure

const PROGRAM: &str = "memory_manager";

const USAGE: &str = "\
usage: memory_manager [--growth-pct N] [--fraction-pct N] [--trace]
Runs the scenario: two spilling buffers and a WebAssembly memory share one
budget while the heap grows under them.
  --growth-pct N     how far a reservation grows ahead, in % (0..=1000, default 25)
  --fraction-pct N   the budget's share of total - overhead, in % (1..=100, default 60)
  --trace            print the calls between the types instead, in the order they run";

/// The flags: the configuration, and whether to trace.
fn config_from_args() -> (Config, bool) {
    let mut args = Args::parse(PROGRAM, USAGE);
    let growth_pct = args.number("--growth-pct", 25, 0..=MAX_GROWTH_PCT);
    let fraction_pct = args.number("--fraction-pct", 60, 1..=100);
    let trace = args.switch("--trace");
    args.finish();
    let config = Config {
        growth_pct,
        fraction: fraction_pct as f64 / 100.0,
        ..Config::default()
    };
    (config, trace)
}

fn main() -> ExitCode {
    let (config, trace) = config_from_args();
    let run = if trace {
        trace_scenario(config)
    } else {
        run_scenario(config)
    };
    match run {
        Ok(lines) => {
            for line in lines {
                println!("{line}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{PROGRAM}: {e}");
            ExitCode::FAILURE
        }
    }
}

// SHARED: cli (canonical: examples/map_and_touch.rs)
/// The command line, read the same way by every example: `--name value`
/// flags and switches, then `-- words` for a command to run. `--help` prints
/// the usage and exits 0; anything wrong prints one line naming the flag
/// and exits 2.
struct Args {
    program: &'static str,
    words: Vec<String>,
}

#[allow(dead_code)] // each example uses the methods it needs
impl Args {
    fn parse(program: &'static str, usage: &str) -> Args {
        let words: Vec<String> = std::env::args().skip(1).collect();
        if words
            .iter()
            .take_while(|w| *w != "--")
            .any(|w| w == "--help" || w == "-h")
        {
            println!("{usage}");
            std::process::exit(0);
        }
        Args { program, words }
    }

    fn fail(&self, why: &str) -> ! {
        eprintln!("{}: {why} (see --help)", self.program);
        std::process::exit(2)
    }

    /// `--name VALUE`, taken off the command line.
    fn text(&mut self, name: &str) -> Option<String> {
        let at = self
            .words
            .iter()
            .take_while(|w| *w != "--")
            .position(|w| w == name)?;
        if self.words.get(at + 1).is_none_or(|value| value == "--") {
            self.fail(&format!("{name} needs a value"));
        }
        self.words.remove(at);
        Some(self.words.remove(at))
    }

    /// `--name N`: a whole number in `range`, or `default` if absent.
    fn number(&mut self, name: &str, default: u64, range: std::ops::RangeInclusive<u64>) -> u64 {
        let Some(text) = self.text(name) else {
            return default;
        };
        match text.parse::<u64>() {
            Ok(n) if range.contains(&n) => n,
            _ => {
                let (min, max) = (range.start(), range.end());
                self.fail(&format!(
                    "{name} takes a whole number from {min} to {max}, not `{text}`"
                ))
            }
        }
    }

    /// Whether the switch `--name` was given.
    fn switch(&mut self, name: &str) -> bool {
        let at = self
            .words
            .iter()
            .take_while(|w| *w != "--")
            .position(|w| w == name);
        at.map(|at| self.words.remove(at)).is_some()
    }

    /// The words after `--` (a command to run), or none.
    fn rest(&mut self) -> Vec<String> {
        let at = self.words.iter().position(|w| w == "--");
        at.map(|at| self.words.split_off(at).split_off(1))
            .unwrap_or_default()
    }

    /// Ends the parse: a word no flag took is an error.
    fn finish(self) {
        if let Some(word) = self.words.first() {
            self.fail(&format!("unknown argument `{word}`"));
        }
    }
}
// SHARED_END: cli
