//! A WebAssembly memory whose `memory.grow` goes through the memory manager
//! of `examples/memory_manager.rs`: the manager's refusal is the guest's -1.
//!
//! - Explained in: "The flows" (src/part3-flows.md#growing-a-linear-memory)
//! - Run: `cargo run --example budgeted_memory`
//! - Tested by: `cargo test --test memory_manager`
//! - Depends on: std

use std::cmp::Reverse;
use std::collections::{BTreeMap, TryReserveError};
use std::process::ExitCode;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

// SHARED: manager (canonical: examples/memory_manager.rs)
const KIB: u64 = 1024;
const MAX_GROWTH_PCT: u64 = 1000;

// ANCHOR: config
/// `Config::default` is Gluten's defaults with the sizes divided by 1024.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Config {
    pub total: u64,             // bytes the heap and off-heap share: `maxMemory()`
    pub reserved_overhead: u64, // bytes kept from both: Spark hard-codes 300 MiB
    pub fraction: f64,          // `...offHeap.sizing.memory.fraction`
    pub growth_pct: u64,        // how far a reservation grows ahead, in % of itself
    pub granule: u64,           // reservations grow in whole multiples of this
}
// ANCHOR_END: config

impl Default for Config {
    fn default() -> Self {
        Config {
            total: 8 * 1024 * KIB,
            reserved_overhead: 300 * KIB,
            fraction: 0.6,
            growth_pct: 25,
            granule: 64 * KIB,
        }
    }
}

impl Config {
    // ANCHOR: budget
    /// `(total - reserved_overhead) * fraction`, truncated like Gluten's `(long)`.
    pub fn budget(&self) -> Result<u64, String> {
        // Written so that NaN fails too.
        let fraction_ok = self.fraction > 0.0 && self.fraction <= 1.0;
        let sizes_ok = self.reserved_overhead < self.total && self.granule > 0;
        if !(fraction_ok && sizes_ok && self.growth_pct <= MAX_GROWTH_PCT) {
            return Err(format!("not a valid configuration: {self:?}"));
        }
        Ok(((self.total - self.reserved_overhead) as f64 * self.fraction) as u64)
    }
    // ANCHOR_END: budget
}

// ANCHOR: consumer
/// Holds memory through a [`Reservation`], and can give some back.
pub trait MemoryConsumer: Send + Sync {
    /// Frees about `bytes` through its own `Reservation::release`; returns how many.
    fn spill(&self, bytes: u64) -> u64;
}
// ANCHOR_END: consumer

// ANCHOR: grant
/// A granted acquire: how much the reservation grew, and who spilled for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub grown: u64,
    pub spills: Vec<SpillReport>,
}

/// Who spilled, and what the ledger saw it release, whatever `spill` said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpillReport {
    pub consumer: String,
    pub released: u64,
}
// ANCHOR_END: grant

// ANCHOR: limits
/// One consumer's use, and its reservation: the use plus room to grow.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Holding {
    pub consumer: String,
    pub used: u64,
    pub reserved: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub budget: u64,
    pub heap_in_use: u64,
    pub off_heap_used: u64, // the sum of the reservations
}

impl Limits {
    pub fn off_heap_limit(&self) -> u64 {
        self.budget.saturating_sub(self.heap_in_use)
    }
}
// ANCHOR_END: limits

// ANCHOR: memory_error
/// A refused acquire: the requester is unchanged, those in `spills` spilled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryError {
    pub kind: ErrorKind,
    pub spills: Vec<SpillReport>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    TooLarge,                  // alone over the off-heap limit: nobody is asked
    OverBudget { short: u64 }, // still short after all who could spill were asked
}
// ANCHOR_END: memory_error

// ANCHOR: ledger
struct Account {
    held: Holding,
    consumer: Weak<dyn MemoryConsumer>, // it owns an `Arc` of the manager: no cycle
    spilling: Option<u64>,              // while asked to spill: what it released since
}

#[derive(Default)]
struct Ledger {
    limits: Limits,
    config: Config,
    accounts: BTreeMap<u64, Account>,
}

/// Shared as `Arc<MemoryManager>`; there is no global.
pub struct MemoryManager {
    ledger: Mutex<Ledger>,
}
// ANCHOR_END: ledger

impl Ledger {
    // ANCHOR: try_reserve
    /// Grows `id`'s use by `bytes` if the budget allows: returns how much it grew.
    fn try_reserve(&mut self, id: u64, bytes: u64) -> Result<u64, ErrorKind> {
        let (l, growth_pct, granule) = (self.limits, self.config.growth_pct, self.config.granule);
        let held = &mut self.account(id).held;
        let need = held.used.saturating_add(bytes);
        let size = need.saturating_sub(held.reserved);
        // Gluten's check, only if the reservation must grow: size + off-heap + heap.
        let short = (size + l.off_heap_used + l.heap_in_use).saturating_sub(l.budget);
        if size > 0 && bytes > l.off_heap_limit() {
            return Err(ErrorKind::TooLarge);
        } else if size > 0 && short > 0 {
            return Err(ErrorKind::OverBudget { short });
        }
        // Only `size` is required; the extra, only from free room.
        let room = l.budget.saturating_sub(l.heap_in_use + l.off_heap_used);
        // Growing ahead: `growth_pct` of itself, in whole granules.
        let ahead = held.reserved + held.reserved.saturating_mul(growth_pct) / 100;
        let wished = need.max(ahead).div_ceil(granule).saturating_mul(granule);
        let grown = match size {
            0 => 0,
            _ => wished.saturating_sub(held.reserved).min(room).max(size),
        };
        (held.reserved, held.used) = (held.reserved + grown, need);
        self.limits.off_heap_used += grown;
        Ok(grown)
    }
    // ANCHOR_END: try_reserve

    // ANCHOR: release
    /// Lowers `id`'s use; returns what of its reservation went back.
    fn release(&mut self, id: u64, bytes: u64) -> u64 {
        let granule = self.config.granule;
        let account = self.account(id);
        // More than it uses is the consumer's bug: debug builds stop here.
        debug_assert!(bytes <= account.held.used, "released more than it used");
        let bytes = bytes.min(account.held.used);
        let held = &mut account.held;
        held.used -= bytes;
        let keep = held
            .used
            .div_ceil(granule)
            .saturating_mul(granule)
            .min(held.reserved);
        let returned = held.reserved - keep;
        held.reserved = keep;
        account.spilling = account.spilling.map(|released| released + bytes);
        self.limits.off_heap_used -= returned;
        returned
    }
    // ANCHOR_END: release

    // ANCHOR: victims
    /// Others largest first, then the requester: none asked, spilling or empty.
    fn next_victim(&self, requester: u64, asked: &[u64]) -> Option<(u64, Arc<dyn MemoryConsumer>)> {
        let mut candidates: Vec<(&u64, &Account)> = self
            .accounts
            .iter()
            .filter(|(id, a)| !asked.contains(id) && a.spilling.is_none() && a.held.reserved > 0)
            .collect();
        // `false` sorts first: the others, then the requester.
        candidates.sort_by_key(|(id, a)| (**id == requester, Reverse(a.held.reserved)));
        let upgrade = |(id, a): (&u64, &Account)| Some((*id, a.consumer.upgrade()?));
        candidates.into_iter().find_map(upgrade)
    }
    // ANCHOR_END: victims

    fn account(&mut self, id: u64) -> &mut Account {
        let open = self.accounts.get_mut(&id);
        open.expect("a live Reservation's account is open")
    }
}

impl MemoryManager {
    pub fn new(config: Config) -> Result<Arc<MemoryManager>, String> {
        let mut ledger = Ledger::default();
        (ledger.config, ledger.limits.budget) = (config, config.budget()?);
        let ledger = Mutex::new(ledger);
        Ok(Arc::new(MemoryManager { ledger }))
    }

    /// Nothing under the lock panics mid-update, so poison can be ignored.
    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn register<T: MemoryConsumer + 'static>(
        self: &Arc<Self>,
        name: &str,
        build: impl FnOnce(Reservation) -> T,
    ) -> Arc<T> {
        Arc::new_cyclic(|me: &Weak<T>| {
            let mut ledger = self.ledger();
            let id = ledger.accounts.last_key_value().map_or(0, |(id, _)| id + 1);
            let (manager, consumer) = (Arc::clone(self), me.clone());
            let account = Account {
                held: Holding {
                    consumer: name.into(),
                    ..Holding::default()
                },
                consumer,
                spilling: None,
            };
            ledger.accounts.insert(id, account);
            drop(ledger);
            build(Reservation { manager, id })
        })
    }

    /// The heap's owner reports it; it is never refused, and nobody is told.
    pub fn set_heap_in_use(&self, bytes: u64) {
        self.ledger().limits.heap_in_use = bytes;
    }

    /// The limits and every account, at one moment.
    pub fn snapshot(&self) -> (Limits, Vec<Holding>) {
        let ledger = self.ledger();
        (
            ledger.limits,
            ledger.accounts.values().map(|a| a.held.clone()).collect(),
        )
    }

    // ANCHOR: acquire
    /// Each consumer is asked at most once per request, so the loop ends.
    fn acquire(&self, id: u64, bytes: u64) -> Result<Grant, MemoryError> {
        let (mut spills, mut asked) = (Vec::new(), Vec::new());
        loop {
            let mut ledger = self.ledger();
            // Re-validated: while a spill ran, others may have changed it.
            trace("MemoryManager", "Ledger", "try_reserve");
            let short = match ledger.try_reserve(id, bytes) {
                Ok(grown) => return Ok(Grant { grown, spills }),
                Err(ErrorKind::OverBudget { short }) => short,
                Err(kind) => return Err(MemoryError { kind, spills }),
            };
            trace("MemoryManager", "Ledger", "next_victim");
            let Some((victim, consumer)) = ledger.next_victim(id, &asked) else {
                let kind = ErrorKind::OverBudget { short };
                return Err(MemoryError { kind, spills });
            };
            // Marked, so that no other request asks it meanwhile.
            ledger.account(victim).spilling = Some(0);
            asked.push(victim);
            // Never under the lock: `spill` releases, which takes it.
            drop(ledger);
            trace("MemoryManager", "MemoryManager", "spill_one");
            spills.push(self.spill_one(victim, consumer, short));
        }
    }
    // ANCHOR_END: acquire

    // ANCHOR: spill_one
    /// No lock held: a nested `acquire` skips the marked, so nesting ends.
    fn spill_one(&self, victim: u64, it: Arc<dyn MemoryConsumer>, asked: u64) -> SpillReport {
        it.spill(asked); // traced by the consumer: its type is behind `dyn`
        let mut ledger = self.ledger();
        let account = ledger.account(victim);
        let released = account.spilling.take().unwrap_or(0);
        let consumer = account.held.consumer.clone();
        drop(ledger);
        // A last `Arc` unregisters on drop, which takes the lock.
        drop(it);
        SpillReport { consumer, released }
    }
    // ANCHOR_END: spill_one
}

// ANCHOR: reservation
/// A consumer's handle; dropping it returns the whole reservation.
pub struct Reservation {
    manager: Arc<MemoryManager>,
    id: u64,
}

impl Reservation {
    pub fn acquire(&self, bytes: u64) -> Result<Grant, MemoryError> {
        trace("Reservation", "MemoryManager", "acquire");
        self.manager.acquire(self.id, bytes)
    }

    /// Straight to the ledger. Nobody waits on the manager: nobody to wake.
    pub fn release(&self, bytes: u64) -> u64 {
        trace("Reservation", "Ledger", "release");
        self.manager.ledger().release(self.id, bytes)
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

/// `From->>To: function` for each call between the types, once turned on.
static TRACE: Mutex<Option<Vec<String>>> = Mutex::new(None);

fn trace(from: &str, to: &str, call: &str) {
    if let Some(calls) = TRACE
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .as_mut()
    {
        calls.push(format!("{from}->>{to}: {call}"));
    }
}

pub fn traced<T>(run: impl FnOnce() -> Result<T, String>) -> Result<Vec<String>, String> {
    *TRACE.lock().unwrap_or_else(PoisonError::into_inner) = Some(Vec::new());
    let run = run();
    let calls = TRACE.lock().unwrap_or_else(PoisonError::into_inner).take();
    run.map(|_| calls.unwrap_or_default())
}
// SHARED_END: manager

/// The WebAssembly page: 64 KiB.
pub const WASM_PAGE: usize = 64 * 1024;

// ANCHOR: budgeted_memory
/// Why a grow returned -1. The memory and the budget are unchanged.
#[derive(Debug)]
pub enum MemoryGrowError {
    OverMaximum,                  // the declared one, at most 65536 pages
    Refused(MemoryError),         // the manager said no
    OutOfMemory(TryReserveError), // the manager said yes, the allocator no
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
        let addressable = u32::try_from(isize::MAX as usize / WASM_PAGE).unwrap_or(65536);
        let (bytes, maximum) = (Mutex::default(), maximum.min(65536).min(addressable));
        manager.register(name, |reservation| BudgetedMemory {
            reservation,
            bytes,
            maximum,
        })
    }

    pub fn bytes(&self) -> MutexGuard<'_, Vec<u8>> {
        self.bytes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The guest's `memory.grow`: the old size in pages (at most 65536, so
    /// it fits an `i32`), or -1 with nothing changed.
    pub fn grow(&self, delta: u32) -> i32 {
        self.grow_traced(delta).map_or(-1, |(old, _)| old as i32)
    }

    // ANCHOR: grow_traced
    /// `grow`, also saying what the manager granted, or why it failed.
    pub fn grow_traced(&self, delta: u32) -> Result<(u32, Option<Grant>), MemoryGrowError> {
        // Held across the manager's call: safe as `spill` below never takes it.
        let mut bytes = self.bytes();
        let old_pages = (bytes.len() / WASM_PAGE) as u32;
        let pages = u64::from(old_pages) + u64::from(delta);
        if pages > u64::from(self.maximum) {
            return Err(MemoryGrowError::OverMaximum);
        } else if delta == 0 {
            return Ok((old_pages, None));
        }
        let delta_bytes = u64::from(delta) * WASM_PAGE as u64;
        let new_len = pages as usize * WASM_PAGE;
        // Ask the manager before touching memory: its no is the guest's -1.
        trace("BudgetedMemory", "Reservation", "acquire");
        let grant = self.reservation.acquire(delta_bytes);
        let grant = grant.map_err(MemoryGrowError::Refused)?;
        let mut bigger = Vec::new();
        if let Err(e) = bigger.try_reserve_exact(new_len) {
            // Undo the grant, so that -1 leaves the budget as it was.
            self.reservation.release(delta_bytes);
            return Err(MemoryGrowError::OutOfMemory(e));
        }
        bigger.extend_from_slice(&bytes);
        bigger.resize(new_len, 0);
        *bytes = bigger; // and the old block is freed
        Ok((old_pages, Some(grant)))
    }
    // ANCHOR_END: grow_traced
}

// ANCHOR: wasm_spill
impl MemoryConsumer for BudgetedMemory {
    /// WebAssembly has no `memory.shrink`: a memory keeps its pages until it
    /// is dropped, so it has nothing to give back.
    fn spill(&self, _bytes: u64) -> u64 {
        trace("MemoryManager", "BudgetedMemory", "spill");
        0
    }
}
// ANCHOR_END: wasm_spill

// ANCHOR: grow_scenario
/// Two guests grow under one budget while the heap moves. Each line: the
/// heap, one `memory.grow` and what it returned, and the reservations after.
pub fn run_scenario(config: Config) -> Result<Vec<String>, String> {
    let manager = MemoryManager::new(config)?;
    let a = BudgetedMemory::new(&manager, "a", 1024);
    let b = BudgetedMemory::new(&manager, "b", 1024);
    let grows = [(1024, 0, 16), (1024, 1, 24), (1024, 0, 32)];
    let more = [(2048, 1, 48), (2048, 0, 2000), (512, 0, 16)];
    let mut lines = Vec::new();
    for (heap, i, delta) in grows.into_iter().chain(more) {
        let (name, wasm) = (["a", "b"][i], [&a, &b][i]);
        manager.set_heap_in_use(heap * KIB);
        let (old, why) = match wasm.grow_traced(delta) {
            Ok((old, _)) => (old as i32, String::new()),
            Err(MemoryGrowError::Refused(e)) => {
                let asked: Vec<&str> = e.spills.iter().map(|s| s.consumer.as_str()).collect();
                (-1, format!(" ({:?}; asked {asked:?})", e.kind))
            }
            Err(e) => (-1, format!(" ({e:?})")),
        };
        let (l, held) = manager.snapshot();
        let limit = l.off_heap_limit() as f64 / KIB as f64;
        let one = |h: &Holding| format!("{} {}", h.consumer, h.reserved / KIB);
        let held = held.iter().map(one).collect::<Vec<_>>().join(", ");
        let grew = format!("{name}: memory.grow({delta}) = {old}{why}");
        lines.push(format!("heap {heap}, limit {limit:.1}: {grew} | {held}"));
    }
    Ok(lines)
}
// ANCHOR_END: grow_scenario

const PROGRAM: &str = "budgeted_memory";

const USAGE: &str = "\
usage: budgeted_memory [--fraction-pct N] [--trace]
Runs the scenario: two WebAssembly memories grow under one budget and the heap.
  --fraction-pct N   the budget's share of total - overhead, in % (1..=100, default 60)
  --trace            print the calls between the types instead, in the order they run";

fn main() -> ExitCode {
    let mut args = Args::parse(PROGRAM, USAGE);
    let config = Config {
        fraction: args.number("--fraction-pct", 60, 1..=100) as f64 / 100.0,
        ..Config::default()
    };
    let trace = args.switch("--trace");
    args.finish();
    let run = || run_scenario(config);
    match if trace { traced(run) } else { run() } {
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
