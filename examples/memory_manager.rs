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
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
/// At most 11 times the need: a larger percentage is a typo, not a policy.
const MAX_GROWTH_PCT: u64 = 1000;

// ANCHOR: config
/// What the manager is built from. `Config::default` is Gluten's defaults
/// scaled down 1024 times, so that the demo fits in a few MiB (the fraction
/// and the percentage have no unit, so they keep their values).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Config {
    /// Bytes the heap and the off-heap pool share (`Runtime.maxMemory()`).
    pub total: u64,
    /// Bytes held back from both pools (Spark hard-codes 300 MiB).
    pub reserved_overhead: u64,
    /// `spark.gluten.memory.dynamic.offHeap.sizing.memory.fraction`
    pub fraction: f64,
    /// How far a reservation grows past its need, in percent of its size
    /// (Gluten's `spillableReservationGrowthPct`).
    pub growth_pct: u64,
    /// Reservations grow in whole multiples of this many bytes.
    pub granule: u64,
}
// ANCHOR_END: config

impl Default for Config {
    fn default() -> Self {
        let (total, reserved_overhead, fraction) = (8 * MIB, 300 * KIB, 0.6);
        let (growth_pct, granule) = (25, 64 * KIB);
        Config {
            total,
            reserved_overhead,
            fraction,
            growth_pct,
            granule,
        }
    }
}

impl Config {
    // ANCHOR: budget
    /// `(total - reserved_overhead) * fraction`, truncated as Gluten's
    /// `(long)` cast truncates it. Fixed for the manager's life: what moves
    /// is the heap's share of it.
    pub fn budget(&self) -> Result<u64, String> {
        // Written so that NaN fails too.
        let fraction_ok = self.fraction > 0.0 && self.fraction <= 1.0;
        let sizes_ok = self.reserved_overhead < self.total && self.granule > 0;
        if !(fraction_ok && sizes_ok && self.growth_pct <= MAX_GROWTH_PCT) {
            return Err(format!(
                "need 0 < fraction <= 1, reserved_overhead < total, granule > 0 \
                 and growth_pct <= {MAX_GROWTH_PCT}; got {self:?}"
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
    /// Frees about `bytes`, gives them back with its own
    /// `Reservation::release`, and returns how many it freed. The manager
    /// holds none of its locks meanwhile, so `spill` may call back into it.
    fn spill(&self, bytes: u64) -> u64;
}

/// Where a reservation is in its life (the state diagram in "The flows").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReservationState {
    Empty,
    Reserved,
    /// Asked to spill. Until it returns, no other request asks it again.
    Spilling,
}
// ANCHOR_END: consumer

// ANCHOR: grant
/// A successful acquire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Bytes added to the reservation; 0 when it already covered the request.
    pub grown: u64,
    pub held: Holding,
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
    /// What the ledger saw it release meanwhile: the number the manager trusts.
    pub released: u64,
}
// ANCHOR_END: grant

// ANCHOR: limits
/// What one consumer holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holding {
    pub consumer: String,
    pub used: u64,
    /// `used` plus the room set aside for it to grow.
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
/// A refused acquire or release, and the limits it met. The requester's
/// account is unchanged; the consumers in `spills` did spill.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryError {
    pub consumer: String,
    pub requested: u64,
    pub kind: ErrorKind,
    pub limits: Limits,
    pub spills: Vec<SpillReport>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request alone is larger than the off-heap limit. No spill could
    /// make room, so nobody was asked.
    TooLarge,
    /// Every consumer that could be asked was, and it is still `short`.
    OverBudget { short: u64, holdings: Vec<Holding> },
    /// Asked to release more than it `used`. Nothing changed.
    ReleaseTooLarge { used: u64 },
}
// ANCHOR_END: memory_error

/// Bytes as KiB with one decimal, the unit of every number the demo prints.
fn kib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / KIB as f64)
}

/// ` name used/reserved` of each holding, in KiB.
fn held(holdings: &[Holding]) -> String {
    let one = |h: &Holding| format!(" {} {}/{}", h.consumer, kib(h.used), kib(h.reserved));
    holdings.iter().map(one).collect()
}

impl fmt::Display for MemoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (who, asked, l) = (&self.consumer, kib(self.requested), self.limits);
        let (heap, budget, off) = (kib(l.heap_in_use), kib(l.budget), kib(l.off_heap_used));
        let spilled = self
            .spills
            .iter()
            .map(|s| format!(" {} {}", s.consumer, kib(s.released)));
        let spilled = Some(spilled.collect::<String>()).filter(|s| !s.is_empty());
        let spilled = spilled.unwrap_or(" nobody".into());
        match &self.kind {
            ErrorKind::ReleaseTooLarge { used } => {
                let used = kib(*used);
                write!(f, "{who} released {asked} KiB but used only {used} KiB")
            }
            ErrorKind::TooLarge => {
                let limit = kib(l.off_heap_limit());
                write!(
                    f,
                    "{who} asked for {asked} KiB, more than the whole off-heap limit of \
                     {limit} KiB (budget {budget} - heap {heap}); nobody was asked to spill"
                )
            }
            ErrorKind::OverBudget { short, holdings } => {
                let (short, held) = (kib(*short), held(holdings));
                write!(
                    f,
                    "{who} asked for {asked} KiB and is {short} KiB short: heap {heap} + \
                     off-heap {off} of budget {budget}; held (used/reserved):{held}; \
                     spilled:{spilled}"
                )
            }
        }
    }
}

impl std::error::Error for MemoryError {}

// ANCHOR: ledger
/// One registered consumer's line in the ledger.
struct Account {
    held: Holding,
    /// Weak, because the consumer owns its `Reservation`, which owns an
    /// `Arc` of the manager: a strong reference back would be a cycle.
    consumer: Weak<dyn MemoryConsumer>,
    /// Every byte it ever released. A spill's real effect is the change in
    /// this, whatever `spill` returns.
    released_total: u64,
    spilling: bool,
}

/// Everything the manager knows, behind one lock. `limits.off_heap_used`
/// is the sum of every account's `reserved`.
struct Ledger {
    limits: Limits,
    config: Config,
    accounts: BTreeMap<u64, Account>,
    next_id: u64,
}

/// Owns the ledger. Share it as `Arc<MemoryManager>`; there is no global.
pub struct MemoryManager {
    ledger: Mutex<Ledger>,
}
// ANCHOR_END: ledger

/// Why `try_reserve` said no: `None` when the request alone is larger than
/// the off-heap limit (no spill can help), else how many bytes are missing.
type Refusal = Option<u64>;

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
        let (l, growth_pct, granule) = (self.limits, self.config.growth_pct, self.config.granule);
        let held = &mut self.account(id).held;
        let need = held.used.saturating_add(bytes);
        let size = need.saturating_sub(held.reserved);
        // Gluten's check, made only when the reservation must grow: a
        // request fails when size + off-heap used + heap in use is more
        // than the budget.
        let total = size + l.off_heap_used + l.heap_in_use;
        if size > 0 && total > l.budget {
            return Err((bytes <= l.off_heap_limit()).then_some(total - l.budget));
        }
        // Only `size` is required: the extra comes from free room, so it
        // never makes anyone spill.
        let room = l.budget.saturating_sub(l.heap_in_use + l.off_heap_used);
        let wished = wish(held.reserved, need, growth_pct, granule);
        let grown = match size {
            0 => 0,
            _ => wished.saturating_sub(held.reserved).min(room).max(size),
        };
        (held.reserved, held.used) = (held.reserved + grown, need);
        let held = held.clone();
        self.limits.off_heap_used += grown;
        Ok(Grant {
            grown,
            held,
            spills: Vec::new(),
        })
    }
    // ANCHOR_END: try_reserve

    // ANCHOR: release
    /// Lowers `id`'s use by `bytes` and gives back the part of its
    /// reservation past `used`, rounded up to a granule. Returns the bytes
    /// that went back to the pool.
    fn release(&mut self, id: u64, bytes: u64) -> Result<u64, ErrorKind> {
        let granule = self.config.granule;
        let account = self.account(id);
        let used = account.held.used;
        if bytes > used {
            return Err(ErrorKind::ReleaseTooLarge { used });
        }
        account.released_total = account.released_total.wrapping_add(bytes);
        let held = &mut account.held;
        held.used -= bytes;
        let keep = round_up(held.used, granule).min(held.reserved);
        let returned = held.reserved - keep;
        held.reserved = keep;
        self.limits.off_heap_used -= returned;
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
            .filter(|(id, a)| !asked.contains(id) && !a.spilling && a.held.reserved > 0)
            .collect();
        // `false` sorts first: the others, then the requester.
        candidates.sort_by_key(|(id, a)| (**id == requester, Reverse(a.held.reserved)));
        // A consumer being dropped cannot be upgraded: skip it.
        let upgrade = |(id, a): (&u64, &Account)| Some((*id, a.consumer.upgrade()?));
        candidates.into_iter().find_map(upgrade)
    }

    /// Marks `id` as spilling, so that no other request asks it meanwhile,
    /// and returns its release count to compare with afterwards.
    fn begin_spill(&mut self, id: u64) -> u64 {
        let account = self.account(id);
        account.spilling = true;
        account.released_total
    }

    /// Clears the mark and returns the bytes `id` released since `before`.
    fn end_spill(&mut self, id: u64, before: u64) -> u64 {
        let account = self.account(id);
        account.spilling = false;
        account.released_total.wrapping_sub(before)
    }
    // ANCHOR_END: victims

    /// A live `Reservation`'s account stays open until it is dropped, so
    /// every id the manager is handed is open.
    fn account(&mut self, id: u64) -> &mut Account {
        let open = self.accounts.get_mut(&id);
        open.expect("a live Reservation's account is open")
    }

    fn holdings(&self) -> Vec<Holding> {
        self.accounts.values().map(|a| a.held.clone()).collect()
    }

    /// The error the caller sees: the request, the limits it met, the spills.
    fn refused(
        &mut self,
        id: u64,
        requested: u64,
        kind: ErrorKind,
        spills: Vec<SpillReport>,
    ) -> MemoryError {
        let (consumer, limits) = (self.account(id).held.consumer.clone(), self.limits);
        MemoryError {
            consumer,
            requested,
            kind,
            limits,
            spills,
        }
    }
}

impl MemoryManager {
    /// A manager with `config`'s budget and no heap in use yet.
    pub fn new(config: Config) -> Result<Arc<MemoryManager>, String> {
        let limits = Limits {
            budget: config.budget()?,
            heap_in_use: 0,
            off_heap_used: 0,
        };
        let (accounts, next_id) = (BTreeMap::new(), 0);
        let ledger = Mutex::new(Ledger {
            limits,
            config,
            accounts,
            next_id,
        });
        Ok(Arc::new(MemoryManager { ledger }))
    }

    /// The lock. No code under it panics half-way through an update, so a
    /// ledger whose lock was poisoned by a panic elsewhere is still
    /// consistent, and is used as it is.
    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Opens an account for `build`'s consumer, which owns the handle; the
    /// account refers back to the consumer weakly.
    pub fn register<T: MemoryConsumer + 'static>(
        self: &Arc<Self>,
        name: &str,
        build: impl FnOnce(Reservation) -> T,
    ) -> Arc<T> {
        Arc::new_cyclic(|me: &Weak<T>| {
            let mut ledger = self.ledger();
            let (id, consumer) = (ledger.next_id, me.clone());
            let held = Holding {
                consumer: name.into(),
                used: 0,
                reserved: 0,
            };
            let account = Account {
                held,
                consumer,
                released_total: 0,
                spilling: false,
            };
            ledger.accounts.insert(id, account);
            ledger.next_id += 1;
            drop(ledger);
            build(Reservation {
                manager: Arc::clone(self),
                id,
            })
        })
    }

    /// The heap is the other pool. Its owner (in Gluten, the JVM) reports
    /// it; the manager never refuses it, it only leaves the off-heap pool
    /// less room. Reservations already made stay, even past the new limit.
    pub fn set_heap_in_use(&self, bytes: u64) {
        self.ledger().limits.heap_in_use = bytes;
    }

    pub fn limits(&self) -> Limits {
        self.ledger().limits
    }

    /// Every account, in registration order.
    pub fn holdings(&self) -> Vec<Holding> {
        self.ledger().holdings()
    }

    /// Under the lock: the reservations sum to the pool's total, none is
    /// smaller than its use, and the pool is within the budget.
    pub fn check_invariants(&self) -> Result<(), String> {
        let ledger = self.ledger();
        let (l, holdings) = (ledger.limits, ledger.holdings());
        let sum: u64 = holdings.iter().map(|h| h.reserved).sum();
        let under = holdings.iter().any(|h| h.used > h.reserved);
        if sum != l.off_heap_used || under || l.off_heap_used > l.budget {
            return Err(format!("reservations sum to {sum} in {l:?}: {holdings:?}"));
        }
        Ok(())
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
                Err(None) => return Err(ledger.refused(id, bytes, ErrorKind::TooLarge, spills)),
                Err(Some(short)) => short,
            };
            trace("MemoryManager", "Ledger", "next_victim");
            let Some((victim, consumer)) = ledger.next_victim(id, &asked) else {
                let kind = ErrorKind::OverBudget {
                    short,
                    holdings: ledger.holdings(),
                };
                return Err(ledger.refused(id, bytes, kind, spills));
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
        let mut ledger = self.ledger();
        let released = ledger.end_spill(victim, before);
        let name = ledger.account(victim).held.consumer.clone();
        drop(ledger);
        // Dropped after the lock is released: if this is the last `Arc`, the
        // consumer's drop unregisters it, which takes the lock.
        drop(consumer);
        SpillReport {
            consumer: name,
            asked,
            reported,
            released,
        }
    }
    // ANCHOR_END: spill_one

    /// The release flow. Nobody waits on the manager, so there is nobody to
    /// wake: a consumer that was refused finds the room when it asks again.
    fn release(&self, id: u64, bytes: u64) -> Result<u64, MemoryError> {
        trace("MemoryManager", "Ledger", "release");
        let mut ledger = self.ledger();
        let released = ledger.release(id, bytes);
        released.map_err(|kind| ledger.refused(id, bytes, kind, Vec::new()))
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
        let mut ledger = self.manager.ledger();
        // The account holds only a `Weak`: dropping it runs no consumer code.
        if let Some(account) = ledger.accounts.remove(&self.id) {
            ledger.limits.off_heap_used -= account.held.reserved;
        }
    }
}
// ANCHOR_END: reservation

impl Reservation {
    /// Its account's use and reservation now.
    pub fn holding(&self) -> Holding {
        self.manager.ledger().account(self.id).held.clone()
    }

    pub fn state(&self) -> ReservationState {
        let mut ledger = self.manager.ledger();
        let account = ledger.account(self.id);
        match (account.spilling, account.held.reserved) {
            (true, _) => ReservationState::Spilling,
            (false, 0) => ReservationState::Empty,
            _ => ReservationState::Reserved,
        }
    }
}
// ANCHOR: spillable_buffer
/// A consumer that holds batches of bytes and can drop them when asked, as
/// a sort or an aggregation spills its rows to disk.
pub struct SpillableBuffer {
    pub reservation: Reservation,
    batches: Mutex<Vec<Vec<u8>>>,
}

impl SpillableBuffer {
    /// A buffer with an account of its own in `manager`.
    pub fn new(manager: &Arc<MemoryManager>, name: &str) -> Arc<SpillableBuffer> {
        let batches = Mutex::default();
        manager.register(name, |reservation| SpillableBuffer {
            reservation,
            batches,
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
    fn lock_batches(&self) -> MutexGuard<'_, Vec<Vec<u8>>> {
        self.batches.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

// ANCHOR: spillable_spill
impl MemoryConsumer for SpillableBuffer {
    fn spill(&self, bytes: u64) -> u64 {
        trace("MemoryManager", "SpillableBuffer", "spill");
        let mut freed = 0;
        {
            let mut batches = self.lock_batches();
            while freed < bytes {
                // A real engine writes the batch to disk first; this one
                // only drops it.
                let Some(batch) = batches.pop() else { break };
                freed += batch.len() as u64;
            }
        }
        // Every batch was reserved before it was pushed, so this release
        // cannot exceed the use. Report only what the manager took back.
        trace("SpillableBuffer", "Reservation", "release");
        self.reservation.release(freed).map_or(0, |_| freed)
    }
}
// ANCHOR_END: spillable_spill

/// The WebAssembly page: 64 KiB.
pub const WASM_PAGE: usize = 64 * 1024;

// ANCHOR: budgeted_memory
/// Why a grow returned -1. The memory and the budget are unchanged.
#[derive(Debug)]
pub enum MemoryGrowError {
    /// The new size would pass the declared maximum, at most 65536 pages
    /// and no more than this platform can address.
    OverMaximum { requested: u64, maximum: u32 },
    /// The manager said no.
    Refused(MemoryError),
    /// The manager said yes, the allocator said no.
    OutOfMemory(TryReserveError),
}

/// A WebAssembly memory that is its own consumer: it grows only through its
/// `Reservation`, by copying (allocate the new size, copy, free the old
/// block) on std's allocator, the simplest of Part I's strategies.
pub struct BudgetedMemory {
    pub reservation: Reservation,
    bytes: Mutex<Vec<u8>>,
    maximum: u32,
}
// ANCHOR_END: budgeted_memory

impl BudgetedMemory {
    /// A memory of 0 pages that may grow to `maximum` pages.
    pub fn new(manager: &Arc<MemoryManager>, name: &str, maximum: u32) -> Arc<BudgetedMemory> {
        // Fewer on a 32-bit host: no more than its address space holds.
        let addressable = u32::try_from(isize::MAX as usize / WASM_PAGE).unwrap_or(65536);
        let (bytes, maximum) = (Mutex::default(), maximum.min(65536).min(addressable));
        manager.register(name, |reservation| BudgetedMemory {
            reservation,
            bytes,
            maximum,
        })
    }

    /// `memory.size`, in pages.
    pub fn size(&self) -> u32 {
        (self.bytes().len() / WASM_PAGE) as u32
    }

    pub fn bytes(&self) -> MutexGuard<'_, Vec<u8>> {
        self.bytes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The guest's `memory.grow`: the old size in pages (at most 65536, so
    /// it fits an `i32`), or -1 with nothing changed.
    pub fn grow(&self, delta: u32) -> i32 {
        self.grow_traced(delta)
            .map_or(-1, |(old_pages, _)| old_pages as i32)
    }

    // ANCHOR: grow_traced
    /// `grow`, also saying what the manager granted, or why it failed.
    pub fn grow_traced(&self, delta: u32) -> Result<(u32, Option<Grant>), MemoryGrowError> {
        // Held across the manager's call, which is safe only because `spill`
        // below never takes it. A consumer may hold a lock across `acquire`
        // only if its own `spill` never takes that lock.
        let mut bytes = self.bytes();
        let (old_pages, maximum) = ((bytes.len() / WASM_PAGE) as u32, self.maximum);
        let requested = u64::from(old_pages) + u64::from(delta);
        if requested > u64::from(maximum) {
            return Err(MemoryGrowError::OverMaximum { requested, maximum });
        } else if delta == 0 {
            return Ok((old_pages, None));
        }
        let delta_bytes = u64::from(delta) * WASM_PAGE as u64;
        // Ask the manager before touching memory: its no is the guest's -1.
        trace("BudgetedMemory", "Reservation", "acquire");
        let grant = self.reservation.acquire(delta_bytes);
        let grant = grant.map_err(MemoryGrowError::Refused)?;
        let (mut bigger, new_len) = (Vec::new(), requested as usize * WASM_PAGE);
        if let Err(e) = bigger.try_reserve_exact(new_len) {
            // Undo the grant, so that -1 leaves the budget as it was. It
            // cannot fail: `spill` below never releases any.
            let _ = self.reservation.release(delta_bytes);
            return Err(MemoryGrowError::OutOfMemory(e));
        }
        bigger.extend_from_slice(&bytes);
        bigger.resize(new_len, 0);
        *bytes = bigger; // and the old block is freed
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
            MemoryGrowError::Refused(e) => write!(f, "{e}"),
            MemoryGrowError::OutOfMemory(e) => write!(f, "allocation failed: {e}"),
        }
    }
}

impl std::error::Error for MemoryGrowError {}

// ANCHOR: wasm_spill
impl MemoryConsumer for BudgetedMemory {
    /// WebAssembly has no `memory.shrink`: once grown, a memory keeps its
    /// pages until it is dropped. So it has nothing to give back,
    /// and the manager must find the bytes elsewhere.
    fn spill(&self, _bytes: u64) -> u64 {
        trace("MemoryManager", "BudgetedMemory", "spill");
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

/// The demo's output: one line per event, and under it the ledger.
struct Timeline<'a> {
    manager: &'a MemoryManager,
    lines: Vec<String>,
    step: u32,
}

impl Timeline<'_> {
    fn event(&mut self, who: &str, what: &str, result: &str) {
        self.step += 1;
        let (l, held) = (self.manager.limits(), held(&self.manager.holdings()));
        let (heap, off, limit) = (kib(l.heap_in_use), kib(l.off_heap_used), l.off_heap_limit());
        let step = self.step;
        self.lines
            .push(format!("{step:>2} {who:<5} {what:<22} {result}"));
        let ledger = format!("heap {heap} + off-heap {off} (limit {})", kib(limit));
        self.lines.push(format!("   {ledger} |{held}"));
    }

    /// The heap's owner reports `bytes` in use.
    fn heap(&mut self, bytes: u64) {
        self.manager.set_heap_in_use(bytes);
        let l = self.manager.limits();
        let (budget, heap, limit) = (kib(l.budget), kib(bytes), l.off_heap_limit());
        let mut result = format!("off-heap limit = {budget} - {heap} = {}", kib(limit));
        if let Some(over) = l.off_heap_used.checked_sub(limit).filter(|&o| o > 0) {
            result += &format!(": {} over it, nobody is told", kib(over));
        }
        self.event("heap", &format!("in use: {heap}"), &result);
    }

    fn push(&mut self, who: &str, buffer: &SpillableBuffer, bytes: u64) {
        let pushed = buffer.push(bytes as usize);
        let result = pushed.map_or_else(|e| format!("refused: {e}"), |g| describe(&g));
        self.event(who, &format!("push {}", kib(bytes)), &result);
    }

    /// The guest's `memory.grow`, played by the timeline.
    fn grow(&mut self, wasm: &BudgetedMemory, delta: u32) {
        let (old, result) = match wasm.grow_traced(delta) {
            Ok((old, grant)) => (old as i32, grant.map_or("ok".into(), |g| describe(&g))),
            Err(e) => (-1, e.to_string()),
        };
        self.event("wasm", &format!("memory.grow({delta}) = {old}"), &result);
    }
}

fn describe(g: &Grant) -> String {
    let (grown, reserved, used) = (kib(g.grown), kib(g.held.reserved), kib(g.held.used));
    let mut s = match g.grown {
        0 => format!("ok, inside the reservation (used {used})"),
        _ => format!("ok, reservation +{grown} to {reserved} (used {used})"),
    };
    for spill in &g.spills {
        let (name, released, asked) = (&spill.consumer, kib(spill.released), kib(spill.asked));
        s += &format!("; {name} spilled {released} of {asked} asked");
    }
    s
}

/// The budget at Gluten's scale and at this demo's, before the events.
fn header(c: &Config, budget: u64) -> Result<Vec<String>, String> {
    let (total, reserved_overhead) = (8 * 1024 * MIB, 300 * MIB);
    let gluten = Config {
        total,
        reserved_overhead,
        ..*c
    };
    let full = gluten.budget()? as f64 / MIB as f64;
    let (fraction, total, overhead) = (c.fraction, kib(c.total), kib(c.reserved_overhead));
    let (pct, granule, budget) = (c.growth_pct, kib(c.granule), kib(budget));
    Ok(vec![
        format!(
            "Gluten at full scale, 8 GiB heap: \
             budget = (8192 MiB - 300 MiB) * {fraction} = {full:.1} MiB"
        ),
        format!(
            "this demo, 1024 times smaller: \
             budget = ({total} KiB - {overhead} KiB) * {fraction} = {budget} KiB"
        ),
        format!("reservations grow by {pct}% in {granule} KiB granules; all sizes below in KiB"),
    ])
}

// ANCHOR: scenario
/// The demo: two spilling operators and a WebAssembly memory share the
/// budget while the heap grows under them.
pub fn run_scenario(config: Config) -> Result<Vec<String>, String> {
    let manager = MemoryManager::new(config)?;
    let (lines, step) = (header(&config, manager.limits().budget)?, 0);
    let mut t = Timeline {
        manager: &manager,
        lines,
        step,
    };
    let sort = SpillableBuffer::new(&manager, "sort");
    let agg = SpillableBuffer::new(&manager, "agg");
    let wasm = BudgetedMemory::new(&manager, "wasm", 1024);
    t.heap(1024 * KIB);
    for _ in 0..8 {
        t.push("sort", &sort, 128 * KIB);
    }
    for _ in 0..4 {
        t.push("agg", &agg, 384 * KIB);
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
    drop((sort, agg));
    t.event("all", "sort and agg dropped", "their reservations return");
    manager.check_invariants()?;
    let pages = wasm.size();
    let invariants = "invariants hold: the reservations sum to the off-heap total";
    t.lines
        .push(format!("wasm has {pages} pages; {invariants}"));
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

fn main() -> ExitCode {
    let mut args = Args::parse(PROGRAM, USAGE);
    let growth_pct = args.number("--growth-pct", 25, 0..=MAX_GROWTH_PCT);
    let fraction = args.number("--fraction-pct", 60, 1..=100) as f64 / 100.0;
    let trace = args.switch("--trace");
    args.finish();
    let config = Config {
        growth_pct,
        fraction,
        ..Config::default()
    };
    let run = if trace { trace_scenario } else { run_scenario };
    match run(config) {
        Ok(lines) => lines.iter().for_each(|line| println!("{line}")),
        Err(e) => {
            eprintln!("{PROGRAM}: {e}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
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
