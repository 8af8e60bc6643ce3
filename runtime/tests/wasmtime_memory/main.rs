//! Part I's memories under wasmtime: every strategy under the movable
//! layout and under wasmtime's default (fixed) one, driven by wasm code.
//!
//! `cargo test -p runtime --test wasmtime_memory`

#[path = "../../examples/wasmtime_memory.rs"]
#[allow(dead_code)]
mod wasmtime_memory;

use runtime::linear_memory::{Faults, GrowPath};
use std::sync::Arc;
use wasmtime::{Engine, Instance, Module, Store, Trap, TypedFunc};
use wasmtime_memory::{engine, BookCreator, Layout, Stats, Strategy};

const LAYOUTS: [Layout; 2] = [Layout::Movable, Layout::Fixed];

/// Every strategy the example offers; 4 pages reserved makes `Reserved`
/// relocate early and often.
const STRATEGIES: [Strategy; 4] = [
    Strategy::Reserved(None),
    Strategy::Reserved(Some(4)),
    Strategy::Remap,
    Strategy::Copy,
];

/// Under a fixed base only `LinearMemory` can keep wasmtime's demands.
fn fits(strategy: Strategy, layout: Layout) -> bool {
    layout == Layout::Movable || matches!(strategy, Strategy::Reserved(_))
}

/// A module of this test's own: `$max` declared (or none), and functions
/// that grow, store a pattern on every page, and check it.
fn module_text(max: Option<u32>) -> String {
    let max = max.map_or(String::new(), |m| m.to_string());
    format!(
        r#"(module
  (memory (export "memory") 1 {max})
  ;; The byte every page's first and last positions hold: page index + 1.
  (func $mark (param $page i32) (result i32)
    (i32.add (i32.and (local.get $page) (i32.const 0x7f)) (i32.const 1)))
  (func (export "grow") (param $delta i32) (result i32)
    (memory.grow (local.get $delta)))
  (func (export "size") (result i32) (memory.size))
  ;; Grows one page at a time to $pages, marking each new page at both
  ;; ends and touching the last byte. Returns the size, or -1.
  (func (export "grow_marking") (param $pages i32) (result i32)
    (local $page i32)
    (block $done
      (loop $again
        (br_if $done (i32.ge_u (memory.size) (local.get $pages)))
        (local.set $page (memory.grow (i32.const 1)))
        (if (i32.eq (local.get $page) (i32.const -1))
          (then (return (i32.const -1))))
        (i32.store8 (i32.shl (local.get $page) (i32.const 16))
          (call $mark (local.get $page)))
        (i32.store8 (i32.sub (i32.shl (memory.size) (i32.const 16)) (i32.const 1))
          (call $mark (local.get $page)))
        (br $again)))
    (memory.size))
  ;; Marks page 0 as the first grow would (it exists from the start).
  (func (export "mark_first")
    (i32.store8 (i32.const 0) (call $mark (i32.const 0)))
    (i32.store8 (i32.const 0xffff) (call $mark (i32.const 0))))
  ;; The first page whose marks are wrong, or -1 if every page is intact.
  (func (export "check") (result i32)
    (local $page i32)
    (block $done
      (loop $again
        (br_if $done (i32.ge_u (local.get $page) (memory.size)))
        (if (i32.ne (i32.load8_u (i32.shl (local.get $page) (i32.const 16)))
                    (call $mark (local.get $page)))
          (then (return (local.get $page))))
        (if (i32.ne (i32.load8_u (i32.add (i32.shl (local.get $page) (i32.const 16))
                                          (i32.const 0xffff)))
                    (call $mark (local.get $page)))
          (then (return (local.get $page))))
        (local.set $page (i32.add (local.get $page) (i32.const 1)))
        (br $again)))
    (i32.const -1))
  (func (export "load") (param $at i32) (result i32)
    (i32.load8_u (local.get $at)))
  ;; 16 MiB past the index: from index 0xffffffff, inside the guard.
  (func (export "load_far") (param $at i32) (result i32)
    (i32.load8_u offset=0x1000000 (local.get $at)))
  (func (export "store") (param $at i32)
    (i32.store8 (local.get $at) (i32.const 0x5a))))"#
    )
}

/// One instance of `module_text` in its own store, and its creator.
struct Guest {
    creator: Arc<BookCreator>,
    store: Store<()>,
    grow: TypedFunc<i32, i32>,
    size: TypedFunc<(), i32>,
    grow_marking: TypedFunc<i32, i32>,
    check: TypedFunc<(), i32>,
    load: TypedFunc<i32, i32>,
    load_far: TypedFunc<i32, i32>,
    store_at: TypedFunc<i32, ()>,
}

impl Guest {
    fn new(strategy: Strategy, layout: Layout, max: Option<u32>, faults: Faults) -> Guest {
        let creator = BookCreator::with_faults(strategy, faults);
        let engine = engine(layout, &creator).expect("an engine");
        Guest::on(&engine, creator, max)
    }

    fn on(engine: &Engine, creator: Arc<BookCreator>, max: Option<u32>) -> Guest {
        let module = Module::new(engine, module_text(max)).expect("the module compiles");
        let mut store = Store::new(engine, ());
        let instance = Instance::new(&mut store, &module, &[]).expect("instantiates");
        let mut func = |name| instance.get_func(&mut store, name).expect(name);
        let (g, s, gm, c, l, st, mf) = (
            func("grow"),
            func("size"),
            func("grow_marking"),
            func("check"),
            func("load"),
            func("store"),
            func("mark_first"),
        );
        let far = func("load_far");
        mf.typed::<(), ()>(&store)
            .unwrap()
            .call(&mut store, ())
            .unwrap();
        Guest {
            creator,
            grow: g.typed(&store).unwrap(),
            size: s.typed(&store).unwrap(),
            grow_marking: gm.typed(&store).unwrap(),
            check: c.typed(&store).unwrap(),
            load: l.typed(&store).unwrap(),
            load_far: far.typed(&store).unwrap(),
            store_at: st.typed(&store).unwrap(),
            store,
        }
    }

    fn grow(&mut self, delta: i32) -> i32 {
        self.grow
            .call(&mut self.store, delta)
            .expect("memory.grow never traps")
    }

    fn size(&mut self) -> i32 {
        self.size.call(&mut self.store, ()).unwrap()
    }

    fn grow_marking(&mut self, pages: i32) -> i32 {
        self.grow_marking
            .call(&mut self.store, pages)
            .expect("no trap")
    }

    /// -1 if every page holds its marks.
    fn check(&mut self) -> i32 {
        self.check.call(&mut self.store, ()).unwrap()
    }

    fn load(&mut self, at: u32) -> wasmtime::Result<i32> {
        self.load.call(&mut self.store, at as i32)
    }

    fn load_far(&mut self, at: u32) -> wasmtime::Result<i32> {
        self.load_far.call(&mut self.store, at as i32)
    }

    fn store(&mut self, at: u32) -> wasmtime::Result<()> {
        self.store_at.call(&mut self.store, at as i32)
    }

    fn stats(&self) -> Stats {
        self.creator.stats()
    }
}

fn is_out_of_bounds(e: &wasmtime::Error) -> bool {
    e.downcast_ref::<Trap>() == Some(&Trap::MemoryOutOfBounds)
}

#[test]
fn every_strategy_grows_page_by_page_and_keeps_every_page() {
    for layout in LAYOUTS {
        for strategy in STRATEGIES {
            let pages = if strategy == Strategy::Copy { 64 } else { 512 };
            let what = format!("{layout:?} {strategy:?}");
            if !fits(strategy, layout) {
                let creator = BookCreator::new(strategy);
                let engine = engine(layout, &creator).unwrap();
                let module = Module::new(&engine, module_text(None)).unwrap();
                let mut store = Store::new(&engine, ());
                let refused = Instance::new(&mut store, &module, &[]).err();
                let why = refused.map(|e| e.root_cause().to_string());
                assert!(
                    why.as_ref().is_some_and(|w| w.contains("no fixed base")),
                    "{what}: {why:?}"
                );
                continue;
            }
            let mut guest = Guest::new(strategy, layout, None, Faults::default());
            assert_eq!(guest.grow_marking(pages), pages, "{what}");
            assert_eq!(guest.check(), -1, "{what}: a page lost its marks");
            let stats = guest.stats();
            assert_eq!(stats.failed, 0, "{what}: {stats:?}");
            let grows: u32 = stats.paths.values().sum();
            assert_eq!(grows, pages as u32 - 1, "{what}: {stats:?}");
            if layout == Layout::Fixed {
                assert_eq!(stats.base_moves, 0, "{what}: a fixed base moved");
                assert_eq!(
                    stats.paths.keys().collect::<Vec<_>>(),
                    [&GrowPath::Committed]
                );
            }
        }
    }
}

/// Each path of Part I, reached under wasmtime, with the marks checked
/// after it: the memory's bytes survive relocation, moves and copies.
#[test]
fn data_survives_every_path() {
    use GrowPath::*;
    let remap_fail = |paths: &[GrowPath]| Faults {
        paths: paths.to_vec(),
        ..Faults::default()
    };
    let cases: Vec<(Strategy, Faults, &[GrowPath])> = vec![
        (Strategy::Reserved(None), Faults::default(), &[Committed]),
        (
            Strategy::Reserved(Some(4)),
            Faults::default(),
            &[Committed, Relocated],
        ),
        // A refused commit or relocation falls back to a copy.
        (
            Strategy::Reserved(None),
            remap_fail(&[Committed]),
            &[Copied],
        ),
        (
            Strategy::Reserved(Some(4)),
            remap_fail(&[Relocated]),
            &[Committed, Copied],
        ),
        // Relocation fails part-way: the moved segments go back, then a copy.
        (
            Strategy::Reserved(Some(2)),
            Faults {
                segment_move: Some(1),
                ..Faults::default()
            },
            &[Committed, Relocated, Copied],
        ),
        (
            Strategy::Reserved(Some(2)),
            Faults {
                segment_move: Some(1),
                move_back: true,
                ..Faults::default()
            },
            &[Committed, Relocated, Copied],
        ),
        (Strategy::Remap, Faults::default(), &[ExtendedInPlace]),
        (Strategy::Remap, remap_fail(&[ExtendedInPlace]), &[Moved]),
        (
            Strategy::Remap,
            remap_fail(&[ExtendedInPlace, Moved]),
            &[Copied],
        ),
        (Strategy::Copy, Faults::default(), &[Copied]),
    ];
    for (strategy, faults, expected) in cases {
        let what = format!("{strategy:?} {faults:?}");
        let mut guest = Guest::new(strategy, Layout::Movable, None, faults);
        assert_eq!(guest.grow_marking(40), 40, "{what}");
        assert_eq!(guest.check(), -1, "{what}: a page lost its marks");
        let stats = guest.stats();
        for path in expected {
            assert!(
                stats.paths.contains_key(path),
                "{what}: no {path:?} in {stats:?}"
            );
        }
    }
}

#[test]
fn grow_past_the_declared_maximum_returns_minus_one() {
    for layout in LAYOUTS {
        for strategy in STRATEGIES.into_iter().filter(|s| fits(*s, layout)) {
            let what = format!("{layout:?} {strategy:?}");
            let mut guest = Guest::new(strategy, layout, Some(8), Faults::default());
            assert_eq!(guest.grow_marking(8), 8, "{what}");
            assert_eq!(guest.grow(1), -1, "{what}: grew past (memory 1 8)");
            assert_eq!(guest.grow(65536), -1, "{what}");
            assert_eq!(guest.size(), 8, "{what}: the size changed");
            assert_eq!(guest.check(), -1, "{what}: the bytes changed");
            assert_eq!(guest.grow(0), 8, "{what}: memory.grow 0 is memory.size");
        }
    }
}

/// The OS refuses every path: -1, and the memory is as it was, base too.
#[test]
fn an_injected_os_failure_returns_minus_one_and_changes_nothing() {
    use GrowPath::*;
    let cases = [
        (Layout::Fixed, Strategy::Reserved(None), vec![Committed]),
        (Layout::Fixed, Strategy::Reserved(Some(4)), vec![Committed]),
        (
            Layout::Movable,
            Strategy::Reserved(None),
            vec![Committed, Copied],
        ),
        (
            Layout::Movable,
            Strategy::Reserved(Some(4)),
            vec![Committed, Relocated, Copied],
        ),
        (
            Layout::Movable,
            Strategy::Remap,
            vec![ExtendedInPlace, Moved, Copied],
        ),
        (Layout::Movable, Strategy::Copy, vec![Copied]),
    ];
    for (layout, strategy, paths) in cases {
        let what = format!("{layout:?} {strategy:?} failing {paths:?}");
        let faults = Faults {
            paths,
            ..Faults::default()
        };
        let mut guest = Guest::new(strategy, layout, None, faults);
        assert_eq!(guest.grow(1), -1, "{what}");
        assert_eq!(guest.grow(7), -1, "{what}");
        assert_eq!(guest.size(), 1, "{what}: the size changed");
        assert_eq!(guest.check(), -1, "{what}: the bytes changed");
        let stats = guest.stats();
        assert_eq!(
            (stats.failed, stats.base_moves),
            (2, 0),
            "{what}: {stats:?}"
        );
        assert!(guest.load(0xffff).is_ok(), "{what}: the old memory is gone");
    }
}

#[test]
fn out_of_bounds_access_traps() {
    for layout in LAYOUTS {
        for strategy in STRATEGIES.into_iter().filter(|s| fits(*s, layout)) {
            let what = format!("{layout:?} {strategy:?}");
            let mut guest = Guest::new(strategy, layout, None, Faults::default());
            for pages in [1u32, 2, 5] {
                assert_eq!(guest.grow_marking(pages as i32), pages as i32, "{what}");
                let end = pages * 0x10000;
                assert!(guest.store(end - 1).is_ok(), "{what}: the last byte");
                for at in [end, end + 1, end + 0xffff, u32::MAX] {
                    let load = guest.load(at).expect_err("a load past the end");
                    assert!(is_out_of_bounds(&load), "{what}: load at {at:#x}: {load:?}");
                    let store = guest.store(at).expect_err("a store past the end");
                    assert!(
                        is_out_of_bounds(&store),
                        "{what}: store at {at:#x}: {store:?}"
                    );
                }
            }
            // Under the fixed layout these land past the 4 GiB reservation,
            // in the guard: the compiled code checked nothing.
            for at in [0, 0xffff_0000, u32::MAX] {
                let far = guest.load_far(at).expect_err("16 MiB past a small memory");
                assert!(
                    is_out_of_bounds(&far),
                    "{what}: load at {at:#x} + 16 MiB: {far:?}"
                );
            }
            // A trap leaves the instance usable and its memory intact.
            assert_eq!(guest.load(0).unwrap(), 1, "{what}");
        }
    }
}

/// A 64-bit memory under wasmtime's default config: 4 GiB reserved no
/// longer bounds its index, so the base may move and code checks bounds.
#[test]
fn memory64_grows_and_checks_bounds() {
    let wat = r#"(module
      (memory (export "memory") i64 1)
      (func (export "grow") (param i64) (result i64) (memory.grow (local.get 0)))
      (func (export "store") (param i64) (i64.store8 (local.get 0) (i64.const 7)))
      (func (export "load") (param i64) (result i32) (i32.load8_u (local.get 0))))"#;
    for layout in LAYOUTS {
        // The default config's guard still applies: only `LinearMemory` has one.
        for strategy in STRATEGIES.into_iter().filter(|s| fits(*s, layout)) {
            let what = format!("{layout:?} {strategy:?}");
            let creator = BookCreator::new(strategy);
            let engine = engine(layout, &creator).unwrap();
            let module = Module::new(&engine, wat).unwrap();
            let mut store = Store::new(&engine, ());
            let instance = Instance::new(&mut store, &module, &[]).expect(&what);
            let grow = instance
                .get_typed_func::<i64, i64>(&mut store, "grow")
                .unwrap();
            let put = instance
                .get_typed_func::<i64, ()>(&mut store, "store")
                .unwrap();
            let get = instance
                .get_typed_func::<i64, i32>(&mut store, "load")
                .unwrap();
            for page in 1..24i64 {
                assert_eq!(grow.call(&mut store, 1).unwrap(), page, "{what}");
                put.call(&mut store, (page + 1) * 0x10000 - 1).unwrap();
            }
            let end = 24 * 0x10000i64;
            assert_eq!(get.call(&mut store, end - 1).unwrap(), 7, "{what}");
            for at in [end, 1 << 32, (1 << 32) + end, i64::MAX, -1] {
                let trap = get.call(&mut store, at).expect_err("past the end");
                assert!(is_out_of_bounds(&trap), "{what}: {at:#x}: {trap:?}");
            }
            // Past 4 GiB: Part I's memories stop there, so wasm sees -1.
            assert_eq!(grow.call(&mut store, 65536).unwrap(), -1, "{what}");
            assert_eq!(grow.call(&mut store, 0).unwrap(), 24, "{what}");
            let moved = creator.stats().base_moves;
            if strategy == Strategy::Copy {
                assert!(
                    moved > 0,
                    "{what}: a 64-bit memory may move, and Copy moves"
                );
            }
        }
    }
}

/// A shared memory never moves, whatever the config: the creator reserves
/// its whole maximum. One thread grows it page by page while another reads
/// the last byte of whatever size it sees; no read may trap.
#[test]
fn a_shared_memory_grows_under_a_reader_in_another_thread() {
    let writer = r#"(module
      (memory (export "memory") 1 512 shared)
      (func (export "grow_to") (param $pages i32) (result i32)
        (block $done
          (loop $again
            (br_if $done (i32.ge_u (memory.size) (local.get $pages)))
            (if (i32.eq (memory.grow (i32.const 1)) (i32.const -1))
              (then (return (i32.const -1))))
            (i32.atomic.store8 (i32.sub (i32.shl (memory.size) (i32.const 16)) (i32.const 1))
              (i32.const 1))
            (br $again)))
        (memory.size)))"#;
    // Returns how many sizes it saw, -2 if the size shrank, -3 if a byte
    // held something no one wrote.
    let reader = r#"(module
      (import "env" "memory" (memory 1 512 shared))
      (func (export "watch") (param $until i32) (result i32)
        (local $size i32) (local $last i32) (local $seen i32)
        (loop $again
          (local.set $size (memory.size))
          (if (i32.lt_u (local.get $size) (local.get $last)) (then (return (i32.const -2))))
          (if (i32.ne (local.get $size) (local.get $last))
            (then (local.set $seen (i32.add (local.get $seen) (i32.const 1)))))
          (local.set $last (local.get $size))
          (if (i32.gt_u (i32.atomic.load8_u
                (i32.sub (i32.shl (local.get $size) (i32.const 16)) (i32.const 1)))
                (i32.const 1))
            (then (return (i32.const -3))))
          (br_if $again (i32.lt_u (local.get $size) (local.get $until))))
        (local.get $seen)))"#;
    for layout in LAYOUTS {
        for strategy in [Strategy::Reserved(None), Strategy::Reserved(Some(4))] {
            let what = format!("{layout:?} {strategy:?}");
            let creator = BookCreator::new(strategy);
            let engine = engine(layout, &creator).unwrap();
            let (writer, reader) = (
                Module::new(&engine, writer).unwrap(),
                Module::new(&engine, reader).unwrap(),
            );
            let mut store = Store::new(&engine, ());
            let instance = Instance::new(&mut store, &writer, &[]).expect(&what);
            let memory = instance.get_shared_memory(&mut store, "memory").unwrap();
            let grow_to = instance
                .get_typed_func::<i32, i32>(&mut store, "grow_to")
                .unwrap();
            let watcher = {
                let (engine, memory) = (engine.clone(), memory.clone());
                std::thread::spawn(move || {
                    let mut store = Store::new(&engine, ());
                    let imports = [memory.into()];
                    let instance = Instance::new(&mut store, &reader, &imports).unwrap();
                    let watch = instance
                        .get_typed_func::<i32, i32>(&mut store, "watch")
                        .unwrap();
                    watch.call(&mut store, 512)
                })
            };
            assert_eq!(grow_to.call(&mut store, 512).unwrap(), 512, "{what}");
            let seen = watcher.join().unwrap().expect("the reader never traps");
            assert!(seen >= 1, "{what}: the reader saw {seen}");
            let data = memory.data();
            for page in 1..512 {
                // SAFETY: both threads are done; nothing writes any more.
                let byte = unsafe { *data[page * 0x10000 + 0xffff].get() };
                assert_eq!(byte, 1, "{what}: page {page}");
            }
            let stats = creator.stats();
            assert_eq!(
                (stats.created, stats.base_moves),
                (1, 0),
                "{what}: {stats:?}"
            );
            assert_eq!(stats.paths.get(&GrowPath::Committed), Some(&511), "{what}");
        }
    }
}
