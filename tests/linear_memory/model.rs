//! Every memory against a model: a plain `Vec<u8>` that grows by zeroed
//! pages. Random sequences of grow, write, read and size must give the same
//! results and the same bytes, including the deltas that overflow the
//! maximum, the u32 page count, or the byte size.

use crate::linear_memory::{MAX_PAGES, WASM_PAGE};
use crate::memories::{Kind, Memory};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Grow(u32),
    Write(u64, Vec<u8>),
    Read(u64, usize),
    Size,
}

fn delta() -> impl Strategy<Value = u32> {
    prop_oneof![
        6 => 0u32..4,
        1 => Just(u32::MAX),           // old + delta overflows u32
        1 => Just(MAX_PAGES),          // past 65536 pages from any size > 0
        1 => Just(u32::MAX / 2 + 1),   // bytes overflow on a 32-bit usize
        1 => 4u32..20,                 // often past the declared maximum
    ]
}

fn op(max_bytes: u64) -> impl Strategy<Value = Op> {
    // Offsets reach a little past the end, so out-of-bounds accesses happen.
    let offset = prop_oneof![4 => 0..max_bytes + 64, 1 => Just(u64::MAX - 3)];
    prop_oneof![
        3 => delta().prop_map(Op::Grow),
        3 => (offset.clone(), prop::collection::vec(any::<u8>(), 0..300))
            .prop_map(|(o, d)| Op::Write(o, d)),
        3 => (offset, 0usize..300).prop_map(|(o, n)| Op::Read(o, n)),
        1 => Just(Op::Size),
    ]
}

fn kinds() -> impl Strategy<Value = Kind> {
    prop_oneof![
        Just(Kind::Reserved(None)),
        (0u32..4).prop_map(|r| Kind::Reserved(Some(r))),
        Just(Kind::Remap),
        Just(Kind::Copy),
    ]
}

/// The reference: WebAssembly's rules on a `Vec<u8>`.
struct Model {
    bytes: Vec<u8>,
    maximum: u32,
}

impl Model {
    fn pages(&self) -> u32 {
        (self.bytes.len() / WASM_PAGE) as u32
    }

    fn grow(&mut self, delta: u32) -> i32 {
        let old = self.pages();
        match old.checked_add(delta) {
            Some(new) if new <= self.maximum => {
                self.bytes.resize(new as usize * WASM_PAGE, 0);
                old as i32
            }
            _ => -1,
        }
    }

    fn range(&self, offset: u64, len: usize) -> Option<std::ops::Range<usize>> {
        let start = usize::try_from(offset).ok()?;
        let end = start.checked_add(len)?;
        (end <= self.bytes.len()).then_some(start..end)
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn matches_the_vec_model(
        kind in kinds(),
        minimum in 0u32..3,
        extra in 0u32..6,
        ops in prop::collection::vec(op(8 * WASM_PAGE as u64), 1..40),
    ) {
        let maximum = minimum + extra;
        let mut memory = Memory::new(kind, minimum, Some(maximum));
        let mut model = Model { bytes: vec![0; minimum as usize * WASM_PAGE], maximum };
        for op in ops {
            match op {
                Op::Grow(delta) => {
                    let before = memory.as_ptr();
                    let got = memory.grow(delta);
                    prop_assert_eq!(got, model.grow(delta), "grow({})", delta);
                    if got == -1 {
                        prop_assert_eq!(memory.as_ptr(), before, "a failed grow moved the base");
                    }
                }
                Op::Write(offset, data) => {
                    let ok = memory.write(offset, &data);
                    match model.range(offset, data.len()) {
                        Some(r) => {
                            prop_assert!(ok, "write at {} of {} failed", offset, data.len());
                            model.bytes[r].copy_from_slice(&data);
                        }
                        None => prop_assert!(!ok, "out-of-bounds write at {} succeeded", offset),
                    }
                }
                Op::Read(offset, len) => {
                    let got = memory.slice(offset, len).map(<[u8]>::to_vec);
                    let want = model.range(offset, len).map(|r| model.bytes[r].to_vec());
                    prop_assert_eq!(got, want, "read({}, {})", offset, len);
                }
                Op::Size => prop_assert_eq!(memory.size(), model.pages()),
            }
        }
        prop_assert_eq!(memory.size(), model.pages());
        prop_assert!(memory.as_slice() == model.bytes.as_slice(), "contents differ");
    }
}
