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
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
/// The largest growth percentage: a reservation at most 11 times its need.
const MAX_GROWTH_PCT: u64 = 1000;

// ANCHOR: config
/// What the manager is built from. `Config::default` is Gluten's defaults
/// scaled down 1024 times, so that the demo fits in a few MiB (the fraction
/// and the percentage have no unit, so they keep their values).
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
}
// ANCHOR_END: memory_error

/// Bytes as KiB with one decimal, the unit of every number the demo prints.
fn kib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / KIB as f64)
}

/// `name used/reserved` of each holding, in KiB.
fn held(holdings: &[Holding]) -> String {
    let one = |h: &Holding| format!(" {} {}/{}", h.consumer, kib(h.used), kib(h.reserved));
    holdings.iter().map(one).collect()
}

impl fmt::Display for MemoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (consumer, asked, l) = match self {
            MemoryError::TooLarge {
                consumer,
                requested,
                limits,
            } => (consumer, requested, limits),
            MemoryError::OverBudget {
                consumer,
                requested,
                limits,
                ..
            } => (consumer, requested, limits),
            MemoryError::ReleaseTooLarge {
                consumer,
                requested,
                used,
            } => {
                let (requested, used) = (kib(*requested), kib(*used));
                return write!(
                    f,
                    "{consumer} released {requested} KiB but used only {used} KiB"
                );
            }
        };
        let (heap, budget) = (kib(l.heap_in_use), kib(l.budget));
        write!(f, "{consumer} asked for {} KiB", kib(*asked))?;
        let MemoryError::OverBudget {
            short,
            holdings,
            spills,
            ..
        } = self
        else {
            let limit = kib(l.off_heap_limit());
            return write!(
                f,
                ", more than the whole off-heap limit of {limit} KiB \
                              (budget {budget} - heap {heap}); nobody was asked to spill"
            );
        };
        let (short, off, held) = (kib(*short), kib(l.off_heap_used), held(holdings));
        write!(
            f,
            " and is {short} KiB short: heap {heap} + off-heap {off} of budget {budget}; \
                   held (used/reserved):{held}; spilled:"
        )?;
        if spills.is_empty() {
            write!(f, " nobody")?;
        }
        spills
            .iter()
            .try_for_each(|s| write!(f, " {} {}", s.consumer, kib(s.released)))
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
        let account = self.account(id);
        let need = account.used.saturating_add(bytes);
        if need <= account.reserved {
            // Inside the reservation: no budget check at all.
            account.used = need;
            return Ok(grant(account, bytes, 0));
        }
        let size = need - account.reserved;
        // Gluten's check: a request fails when size + off-heap used + heap
        // in use is more than the budget.
        let total = size + l.off_heap_used + l.heap_in_use;
        if total > l.budget {
            return Err((bytes <= l.off_heap_limit()).then_some(total - l.budget));
        }
        // Only `size` is required: the extra comes from free room, so it
        // never makes anyone spill.
        let room = l.budget - l.heap_in_use - l.off_heap_used;
        let wished = wish(account.reserved, need, growth_pct, granule);
        let grown = wished.saturating_sub(account.reserved).min(room).max(size);
        account.reserved += grown;
        account.used = need;
        let granted = grant(account, bytes, grown);
        self.limits.off_heap_used += grown;
        Ok(granted)
    }
    // ANCHOR_END: try_reserve

    // ANCHOR: release
    /// Lowers `id`'s use by `bytes` and gives back the part of its
    /// reservation past `used`, rounded up to a granule. Returns the bytes
    /// that went back to the pool.
    fn release(&mut self, id: u64, bytes: u64) -> Result<u64, MemoryError> {
        let granule = self.config.granule;
        let account = self.account(id);
        if bytes > account.used {
            let (consumer, used) = (account.name.clone(), account.used);
            let requested = bytes;
            return Err(MemoryError::ReleaseTooLarge {
                consumer,
                requested,
                used,
            });
        }
        account.used -= bytes;
        account.released_total = account.released_total.wrapping_add(bytes);
        let keep = round_up(account.used, granule).min(account.reserved);
        let returned = account.reserved - keep;
        account.reserved = keep;
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
            .filter(|(id, a)| !asked.contains(id) && !a.spilling && a.reserved > 0)
            .collect();
        // `false` sorts first: the others, then the requester.
        candidates.sort_by_key(|(id, a)| (**id == requester, Reverse(a.reserved)));
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

    /// The account of a live `Reservation`: it stays open until the
    /// `Reservation` is dropped, so every id the manager is handed is open.
    fn account(&mut self, id: u64) -> &mut Account {
        let open = self.accounts.get_mut(&id);
        open.expect("a live Reservation's account is open")
    }

    fn holdings(&self) -> Vec<Holding> {
        let holding = |a: &Account| (a.name.clone(), a.used, a.reserved);
        let holdings = self.accounts.values().map(holding);
        let holding = |(consumer, used, reserved)| Holding {
            consumer,
            used,
            reserved,
        };
        holdings.map(holding).collect()
    }

    /// The refusal as the caller sees it: too large if it was never short,
    /// else who held what and who spilled.
    fn refused(
        &mut self,
        id: u64,
        bytes: u64,
        short: Refusal,
        spills: Vec<SpillReport>,
    ) -> MemoryError {
        let (consumer, requested, limits) = (self.account(id).name.clone(), bytes, self.limits);
        let Some(short) = short else {
            return MemoryError::TooLarge {
                consumer,
                requested,
                limits,
            };
        };
        let holdings = self.holdings();
        MemoryError::OverBudget {
            consumer,
            requested,
            short,
            limits,
            holdings,
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
        let limits = Limits {
            budget: config.budget()?,
            heap_in_use: 0,
            off_heap_used: 0,
        };
        let ledger = Mutex::new(Ledger {
            limits,
            config,
            accounts: BTreeMap::new(),
            next_id: 0,
        });
        Ok(Arc::new(MemoryManager { ledger }))
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
        let account = Account {
            name: name.to_owned(),
            consumer,
            used: 0,
            reserved: 0,
            released_total: 0,
            spilling: false,
        };
        ledger.accounts.insert(id, account);
        Reservation {
            manager: Arc::clone(self),
            id,
        }
    }

    /// Builds a consumer that holds its own `Reservation`: `build` gets the
    /// handle, and the account refers back to the consumer weakly.
    pub fn register_with<T, F>(self: &Arc<Self>, name: &str, build: F) -> Arc<T>
    where
        T: MemoryConsumer + 'static,
        F: FnOnce(Reservation) -> T,
    {
        Arc::new_cyclic(|me: &Weak<T>| build(self.register(name, me.clone())))
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

    /// Under the lock: the pool's total is the sum of the reservations, no
    /// reservation is smaller than its use, and the pool is within budget.
    pub fn check_invariants(&self) -> Result<(), String> {
        let ledger = self.ledger();
        let (pool, budget) = (ledger.limits.off_heap_used, ledger.limits.budget);
        let sum: u64 = ledger.accounts.values().map(|a| a.reserved).sum();
        let over = ledger.accounts.values().find(|a| a.used > a.reserved);
        match (sum == pool, over, pool <= budget) {
            (false, ..) => Err(format!(
                "reservations sum to {sum} bytes, the pool says {pool}"
            )),
            (_, Some(a), _) => Err(format!(
                "{} uses more than its {} reserved",
                a.name, a.reserved
            )),
            (_, _, false) => Err(format!("off-heap {pool} is over the budget {budget}")),
            _ => Ok(()),
        }
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
                Err(None) => return Err(ledger.refused(id, bytes, None, spills)),
                Err(Some(short)) => short,
            };
            trace("MemoryManager", "Ledger", "next_victim");
            let Some((victim, consumer)) = ledger.next_victim(id, &asked) else {
                return Err(ledger.refused(id, bytes, Some(short), spills));
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
        let name = consumer.name().to_owned();
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
        let mut ledger = self.manager.ledger();
        // The account holds only a `Weak`: dropping it runs no consumer code.
        if let Some(account) = ledger.accounts.remove(&self.id) {
            ledger.limits.off_heap_used -= account.reserved;
        }
    }
}
// ANCHOR_END: reservation

impl Reservation {
    fn read<T>(&self, f: impl FnOnce(&Account) -> T) -> T {
        f(self.manager.ledger().account(self.id))
    }

    pub fn used(&self) -> u64 {
        self.read(|a| a.used)
    }

    pub fn reserved(&self) -> u64 {
        self.read(|a| a.reserved)
    }

    pub fn state(&self) -> ReservationState {
        self.read(|a| match (a.spilling, a.reserved) {
            (true, _) => ReservationState::Spilling,
            (false, 0) => ReservationState::Empty,
            _ => ReservationState::Reserved,
        })
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
        let (batches, spilled) = (Mutex::default(), AtomicU64::new(0));
        manager.register_with(name, |reservation| {
            let name = name.to_owned();
            SpillableBuffer {
                name,
                reservation,
                batches,
                spilled,
            }
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
        self.spilled.load(Relaxed)
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
        self.spilled.fetch_add(freed, Relaxed);
        // Every batch was reserved before it was pushed, so this release
        // cannot exceed the use. Report only what the manager took back.
        trace("SpillableBuffer", "Reservation", "release");
        self.reservation.release(freed).map_or(0, |_| freed)
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
    /// The new size would pass the declared maximum, 65536 pages, or what
    /// this platform can address.
    OverMaximum { requested: u64, maximum: u32 },
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
    /// The size in pages (`memory.size`).
    pub fn size(&self) -> u32 {
        (self.bytes.len() / WASM_PAGE) as u32
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.bytes
    }

    /// `memory.grow`: the old size in pages (at most 65536, so it fits an
    /// `i32`), or -1 with nothing changed.
    pub fn grow(&mut self, delta: u32, reservation: &Reservation) -> i32 {
        let grown = self.grow_traced(delta, reservation);
        grown.map_or(-1, |(old_pages, _)| old_pages as i32)
    }

    // ANCHOR: grow_traced
    /// `grow`, also saying what the manager granted, or why it failed.
    pub fn grow_traced(
        &mut self,
        delta: u32,
        reservation: &Reservation,
    ) -> Result<(u32, Option<Grant>), MemoryGrowError> {
        let (old_pages, maximum) = (self.size(), self.maximum);
        let requested = u64::from(old_pages) + u64::from(delta);
        if requested > u64::from(maximum) {
            return Err(MemoryGrowError::OverMaximum { requested, maximum });
        } else if delta == 0 {
            return Ok((old_pages, None));
        }
        let delta_bytes = u64::from(delta) * WASM_PAGE as u64;
        // Ask the manager before touching memory: its no is the guest's -1.
        trace("BudgetedMemory", "Reservation", "acquire");
        let grant = reservation.acquire(delta_bytes);
        let grant = grant.map_err(MemoryGrowError::Refused)?;
        let (mut bigger, new_len) = (Vec::new(), requested as usize * WASM_PAGE);
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
            MemoryGrowError::OverMaximum {
                requested: r,
                maximum: m,
            } => {
                write!(f, "{r} pages requested, maximum is {m}")
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
    /// An instance whose memory may grow to `maximum_pages` (at most 65536).
    pub fn new(manager: &Arc<MemoryManager>, name: &str, maximum_pages: u32) -> Arc<WasmInstance> {
        // Fewer on a 32-bit host: no more than its address space holds.
        let addressable = u32::try_from(isize::MAX as usize / WASM_PAGE).unwrap_or(MAX_PAGES);
        let (bytes, maximum) = (Vec::new(), maximum_pages.min(MAX_PAGES).min(addressable));
        let memory = Mutex::new(BudgetedMemory { bytes, maximum });
        manager.register_with(name, |reservation| {
            let name = name.to_owned();
            WasmInstance {
                name,
                reservation,
                memory,
            }
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

/// The demo's output: one line per event, and under it the ledger.
struct Timeline<'a> {
    manager: &'a MemoryManager,
    lines: Vec<String>,
    step: u32,
}

impl Timeline<'_> {
    fn event(&mut self, who: &str, what: &str, result: &str) {
        self.step += 1;
        let (step, manager) = (self.step, self.manager);
        self.lines
            .push(format!("{step:>2} {who:<5} {what:<22} {result}"));
        let (l, held) = (manager.limits(), held(&manager.holdings()));
        let (heap, off, limit) = (kib(l.heap_in_use), kib(l.off_heap_used), l.off_heap_limit());
        let limit = kib(limit);
        self.lines.push(format!(
            "   heap {heap} + off-heap {off} (limit {limit}) |{held}"
        ));
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

    fn push(&mut self, buffer: &SpillableBuffer, bytes: u64) {
        let pushed = buffer.push(bytes as usize);
        let result = pushed.map_or_else(|e| format!("refused: {e}"), |g| describe(&g));
        self.event(buffer.name(), &format!("push {}", kib(bytes)), &result);
    }

    fn grow(&mut self, wasm: &WasmInstance, delta: u32) {
        let (old, result) = match wasm.memory_grow_traced(delta) {
            Ok((old, grant)) => (old as i32, grant.map_or("ok".into(), |g| describe(&g))),
            Err(e) => (-1, e.to_string()),
        };
        self.event(
            wasm.name(),
            &format!("memory.grow({delta}) = {old}"),
            &result,
        );
    }
}

fn describe(g: &Grant) -> String {
    let (grown, reserved, used) = (kib(g.grown), kib(g.reserved), kib(g.used));
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
    let gluten = Config {
        total: 8 * 1024 * MIB,
        reserved_overhead: 300 * MIB,
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
/// The demo: two spilling operators and a WebAssembly instance share the
/// budget while the heap grows under them.
pub fn run_scenario(config: Config) -> Result<Vec<String>, String> {
    let manager = MemoryManager::new(config)?;
    let lines = header(&config, manager.limits().budget)?;
    let mut t = Timeline {
        manager: &manager,
        lines,
        step: 0,
    };
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
    let (sorted, aggregated, pages) = (kib(sort.spilled()), kib(agg.spilled()), wasm.pages());
    let spilled = format!("spilled in total: sort {sorted} KiB, agg {aggregated} KiB");
    t.lines.push(format!("{spilled}; wasm has {pages} pages"));
    drop((sort, agg));
    t.event("all", "sort and agg dropped", "their reservations return");
    manager.check_invariants()?;
    t.lines
        .push("invariants hold: the reservations sum to the off-heap total".into());
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
