//! Part I's memories as wasmtime's linear memory: a `MemoryCreator` that
//! backs every wasm memory with a `LinearMemory` (or a `RemapMemory`), under
//! a config where the base may move and under wasmtime's default one (4 GiB
//! reserved, a guard after it, a base that never moves).
//!
//! - Explained in: "Plugging it into a runtime" (src/part1-runtime.md)
//! - Run: `cargo run -p runtime --example wasmtime_memory`
//! - Tested by: `cargo test -p runtime`
//! - Depends on: std, wasmtime 48 (cranelift, wat, runtime, threads), and
//!   this workspace's `runtime` crate (examples/linear_memory.rs and
//!   examples/remap_memory.rs, compiled as its modules)

// `mdbook test` passes no `--extern`, so the crates are named here.
extern crate runtime;
extern crate wasmtime;

use runtime::linear_memory::{Faults, GrowPath, LinearMemory, Options, Paths};
use runtime::linear_memory::{MAX_PAGES, WASM_PAGE};
use runtime::remap_memory::{self, Growth, RemapMemory};
use std::sync::{Arc, Mutex};
use wasmtime::{Config, Engine, Instance, MemoryCreator, MemoryType, Module, Store};

// ANCHOR: strategy
/// Which of Part I's memories backs each wasm memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// `LinearMemory`: reserve, commit, and relocate past a reservation of
    /// this many pages (`None`: the declared maximum).
    Reserved(Option<u32>),
    /// `RemapMemory`: an exact mapping that `mremap` grows or moves.
    Remap,
    /// `RemapMemory`: a new block and a copy on every grow.
    Copy,
}

/// What the engine lets compiled code assume about a memory's base.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Nothing reserved, no guard: code checks every access against the
    /// current length and reloads base and length after a grow.
    Movable,
    /// wasmtime's default: 4 GiB reserved and a guard after it, so code may
    /// skip bounds checks, which holds only if the base never moves.
    Fixed,
}
// ANCHOR_END: strategy

// ANCHOR: configs
/// The engine's config for a layout. A custom memory is not an mmap that
/// wasmtime made, so it cannot take wasmtime's copy-on-write data images.
pub fn config(layout: Layout) -> Config {
    let mut config = Config::new();
    config.memory_init_cow(false);
    if layout == Layout::Movable {
        config.memory_reservation(0).memory_guard_size(0);
        config
            .memory_reservation_for_growth(0)
            .memory_may_move(true);
    }
    config
}

/// An engine whose every wasm memory `creator` makes.
pub fn engine(layout: Layout, creator: &Arc<BookCreator>) -> wasmtime::Result<Engine> {
    let mut config = config(layout);
    config.shared_memory(true); // `(memory 1 2 shared)` needs it
    config.with_host_memory(creator.clone());
    Engine::new(&config)
}
// ANCHOR_END: configs

/// What the memories of one creator did, summed over all of them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Memories made, and still alive.
    pub created: u32,
    pub alive: u32,
    /// How many grows took each path.
    pub paths: Paths,
    /// Grows that returned an error (wasm sees -1).
    pub failed: u32,
    /// Grows after which the base was elsewhere.
    pub base_moves: u32,
}

/// wasmtime's `MemoryCreator`: one of Part I's memories per wasm memory.
pub struct BookCreator {
    strategy: Strategy,
    /// OS steps every memory it makes fails on purpose (tests).
    faults: Faults,
    stats: Arc<Mutex<Stats>>,
}

/// A reason a memory cannot be made the way wasmtime demands.
type Refusal = String;

/// What wasmtime asked for, in pages where Part I's memories count pages.
struct Request {
    min: u32,
    max: u32,
    fixed: bool,
    reserved: usize,
    guard: usize,
}

// ANCHOR: creator
// SAFETY: every memory `new_memory` returns keeps wasmtime's demands: its
// bytes are zeroed and read-write, a fixed base owns `reserved` bytes and
// `guard` after them, and `grow_to` never moves the base for a size within
// `byte_capacity` (see `BookMemory`).
unsafe impl MemoryCreator for BookCreator {
    fn new_memory(
        &self,
        ty: MemoryType,
        minimum: usize,
        maximum: Option<usize>,
        reserved: Option<usize>,
        guard: usize,
    ) -> Result<Box<dyn wasmtime::LinearMemory>, Refusal> {
        if ty.page_size() != WASM_PAGE as u64 {
            return Err(format!("{} B pages: Part I's use 64 KiB", ty.page_size()));
        }
        let reserved = reserved.unwrap_or(0); // always `Some` in wasmtime 48
        let ask = Request {
            min: pages(minimum),
            max: maximum.map_or(MAX_PAGES, pages),
            fixed: base_is_fixed(&ty, reserved),
            reserved,
            guard,
        };
        let memory = match self.strategy {
            Strategy::Reserved(pages) => self.reserved(pages, &ask)?,
            Strategy::Remap => self.remap(Growth::Remap, &ask)?,
            Strategy::Copy => self.remap(Growth::Copy, &ask)?,
        };
        Ok(Box::new(BookMemory::new(memory, ask.fixed, &self.stats)))
    }
}
// ANCHOR_END: creator

/// Bytes as 64 KiB pages, capped at 4 GiB: a 64-bit memory's maximum past
/// that is Part I's memories' own limit (a grow past it returns -1).
fn pages(bytes: usize) -> u32 {
    (bytes / WASM_PAGE).min(MAX_PAGES as usize) as u32
}

// ANCHOR: fixed
/// wasmtime's own rule (`Memory::memory_may_move` in wasmtime-environ 48,
/// with `Config::memory_may_move` left on, as both configs leave it): the
/// base may move only if the memory is not shared, can grow, and its
/// maximum passes the reservation. Else compiled code may skip bounds
/// checks, trusting the reservation and guard to fault.
fn base_is_fixed(ty: &MemoryType, reserved: usize) -> bool {
    let index_limit = if ty.is_64() { u64::MAX } else { 1 << 32 };
    let max = ty
        .maximum()
        .map_or(index_limit, |m| m.saturating_mul(WASM_PAGE as u64));
    let may_move = !ty.is_shared() && ty.maximum() != Some(ty.minimum());
    !(may_move && max > reserved as u64)
}
// ANCHOR_END: fixed

impl BookCreator {
    pub fn new(strategy: Strategy) -> Arc<BookCreator> {
        BookCreator::with_faults(strategy, Faults::default())
    }

    /// A creator whose every memory fails these OS steps on purpose.
    pub fn with_faults(strategy: Strategy, faults: Faults) -> Arc<BookCreator> {
        let stats = Arc::default();
        Arc::new(BookCreator {
            strategy,
            faults,
            stats,
        })
    }

    pub fn stats(&self) -> Stats {
        self.stats.lock().unwrap().clone()
    }

    // ANCHOR: reserved
    /// A fixed base owns wasmtime's whole reservation (at least the maximum)
    /// and the guard after it, and never moves. A movable one reserves what
    /// the strategy says and relocates past it.
    fn reserved(&self, pages_wanted: Option<u32>, ask: &Request) -> Result<Memory, Refusal> {
        let at_least = match ask.fixed {
            true => ask.max.max(pages(ask.reserved)),
            false => ask.min,
        };
        let reservation = pages_wanted.unwrap_or(ask.max).max(at_least);
        let options = Options {
            guard_bytes: ask.guard.next_multiple_of(WASM_PAGE), // more is fine
            fixed_base: ask.fixed,
        };
        let memory = LinearMemory::with_options(ask.min, Some(ask.max), Some(reservation), options);
        let mut memory = memory.map_err(|e| format!("{e:?}"))?;
        memory.inject_faults(self.faults.clone());
        Ok(Memory::Reserved(memory))
    }
    // ANCHOR_END: reserved

    // ANCHOR: remap
    /// `RemapMemory` maps exactly its size: it has no reservation to keep a
    /// base fixed in, and no guard.
    fn remap(&self, growth: Growth, ask: &Request) -> Result<Memory, Refusal> {
        if ask.fixed || ask.guard > 0 {
            return Err(format!(
                "{growth:?} maps exactly its size: no fixed base, no guard"
            ));
        }
        let memory = RemapMemory::new(ask.min, Some(ask.max), growth);
        let mut memory = memory.map_err(|e| format!("{e:?}"))?;
        let failing: Vec<_> = self.faults.paths.iter().map(|p| to_remap(*p)).collect();
        memory.inject_faults(&failing);
        Ok(Memory::Remap(memory))
    }
    // ANCHOR_END: remap
}

/// Part I's two memory types.
enum Memory {
    Reserved(LinearMemory),
    Remap(RemapMemory),
}

// ANCHOR: memory
/// One wasm memory, as wasmtime sees it.
pub struct BookMemory {
    memory: Memory,
    fixed: bool,
    stats: Arc<Mutex<Stats>>,
}

// SAFETY: `byte_size` bytes from `as_ptr` are read-write and zeroed when
// new; `byte_capacity` is a size up to which `grow_to` keeps the base; a
// failed `grow_to` leaves size, base and bytes as they were.
unsafe impl wasmtime::LinearMemory for BookMemory {
    fn byte_size(&self) -> usize {
        match &self.memory {
            Memory::Reserved(m) => m.byte_len(),
            Memory::Remap(m) => m.byte_len(),
        }
    }

    /// A fixed base keeps its whole reservation. A movable one may move on
    /// any grow (a refused commit falls back to a copy), so it promises
    /// only the size it has.
    fn byte_capacity(&self) -> usize {
        match &self.memory {
            Memory::Reserved(m) if self.fixed => m.capacity(),
            _ => self.byte_size(),
        }
    }
    // ANCHOR_END: memory

    // ANCHOR: grow_to
    fn as_ptr(&self) -> *mut u8 {
        match &self.memory {
            Memory::Reserved(m) => m.as_ptr().cast_mut(),
            Memory::Remap(m) => m.as_ptr().cast_mut(),
        }
    }

    /// wasmtime checked the maximum already; an error here is -1 in wasm.
    fn grow_to(&mut self, new_size: usize) -> wasmtime::Result<()> {
        let (old_size, old_base) = (self.byte_size(), self.as_ptr());
        let delta = (new_size.saturating_sub(old_size) / WASM_PAGE) as u32;
        let grown = match &mut self.memory {
            Memory::Reserved(m) => m.grow_traced(delta).map_err(|e| format!("{e:?}")),
            Memory::Remap(m) => (m.grow_traced(delta).map(|(old, p)| (old, from_remap(p))))
                .map_err(|e| format!("{e:?}")),
        };
        self.record(&grown, old_base);
        grown.map(drop).map_err(wasmtime::Error::msg)
    }
}
// ANCHOR_END: grow_to

impl BookMemory {
    fn new(memory: Memory, fixed: bool, stats: &Arc<Mutex<Stats>>) -> BookMemory {
        let mut counts = stats.lock().unwrap();
        counts.created += 1;
        counts.alive += 1;
        drop(counts);
        let stats = Arc::clone(stats);
        BookMemory {
            memory,
            fixed,
            stats,
        }
    }

    fn record(&self, grown: &Result<(u32, GrowPath), String>, old_base: *mut u8) {
        let mut stats = self.stats.lock().unwrap();
        match grown {
            Ok((_, path)) => *stats.paths.entry(*path).or_insert(0) += 1,
            Err(_) => stats.failed += 1,
        }
        if wasmtime::LinearMemory::as_ptr(self) != old_base {
            stats.base_moves += 1;
        }
    }
}

impl Drop for BookMemory {
    fn drop(&mut self) {
        self.stats.lock().unwrap().alive -= 1;
    }
}

/// The two modules' `GrowPath`s are the same enum, declared in each file.
const PATHS: [GrowPath; 7] = {
    use GrowPath::*;
    [
        Unchanged,
        Committed,
        ExtendedInPlace,
        Moved,
        Relocated,
        Allocated,
        Copied,
    ]
};

fn from_remap(path: remap_memory::GrowPath) -> GrowPath {
    PATHS[path as usize]
}

fn to_remap(path: GrowPath) -> remap_memory::GrowPath {
    use remap_memory::GrowPath::*;
    [
        Unchanged,
        Committed,
        ExtendedInPlace,
        Moved,
        Relocated,
        Allocated,
        Copied,
    ][path as usize]
}

// ANCHOR: workload
/// The workload of Part I in wasm: grow one page at a time up to `$pages`,
/// storing to the last byte after each grow. Returns the size, or -1.
pub const GROW_WAT: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "grow_to") (param $pages i32) (result i32)
    (block $done
      (loop $again
        (br_if $done (i32.ge_u (memory.size) (local.get $pages)))
        (if (i32.eq (memory.grow (i32.const 1)) (i32.const -1))
          (then (return (i32.const -1))))
        (i32.store8 (i32.sub (i32.shl (memory.size) (i32.const 16)) (i32.const 1))
          (i32.const 1))
        (br $again)))
    (memory.size)))"#;

/// Instantiates `GROW_WAT` in a new store and grows it to `pages`.
pub fn grow_in_wasm(engine: &Engine, module: &Module, pages: u32) -> wasmtime::Result<i32> {
    let mut store = Store::new(engine, ());
    let instance = Instance::new(&mut store, module, &[])?;
    let grow_to = instance.get_typed_func::<i32, i32>(&mut store, "grow_to")?;
    grow_to.call(&mut store, pages as i32) // at most 65536
}
// ANCHOR_END: workload

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

const USAGE: &str = "usage: wasmtime_memory [--pages N] [--reservation N]
Grows a wasm memory page by page under wasmtime, backed by each of Part I's
memories, under a movable layout and wasmtime's default (fixed) layout.
  --pages N         pages to grow to (2..=16384, default 4096)
  --reservation N   pages `Reserved` reserves before relocating (1..=65536, default 16)";

fn main() {
    let mut args = Args::parse("wasmtime_memory", USAGE);
    let pages = args.number("--pages", 4096, 2..=16384) as u32;
    let small = args.number("--reservation", 16, 1..=65536) as u32;
    args.finish();
    let strategies = [
        Strategy::Reserved(None),
        Strategy::Reserved(Some(small)),
        Strategy::Remap,
        Strategy::Copy,
    ];
    for layout in [Layout::Movable, Layout::Fixed] {
        for strategy in strategies {
            // Every grow copies under `Copy`: O(pages^2) bytes, so fewer.
            let pages = if strategy == Strategy::Copy {
                pages.min(256)
            } else {
                pages
            };
            let outcome = run(strategy, layout, pages);
            println!("{layout:?} {strategy:?}, 1 -> {pages} pages: {outcome}");
        }
    }
}

/// One line: what the memory did, or why wasmtime could not use it.
fn run(strategy: Strategy, layout: Layout, pages: u32) -> String {
    let creator = BookCreator::new(strategy);
    let ran = engine(layout, &creator).and_then(|engine| {
        let module = Module::new(&engine, GROW_WAT)?;
        grow_in_wasm(&engine, &module, pages)
    });
    match ran {
        Ok(size) => {
            let s = creator.stats();
            format!(
                "size {size}, {:?}, base moved {} times",
                s.paths, s.base_moves
            )
        }
        Err(e) => format!("refused: {}", e.root_cause()),
    }
}
