//! Both memories behind one face, so each test runs on every kind.

use crate::linear_memory::{LinearMemory, Options};
use crate::remap_memory::{Growth, RemapMemory};

/// Every kind of memory Part I builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `LinearMemory` reserving this many pages (`None`: the maximum).
    Reserved(Option<u32>),
    Remap,
    Copy,
}

pub const ALL: [Kind; 4] = [
    Kind::Reserved(None),
    Kind::Reserved(Some(2)),
    Kind::Remap,
    Kind::Copy,
];

pub enum Memory {
    Linear(LinearMemory),
    Remap(RemapMemory),
}

impl Memory {
    pub fn new(kind: Kind, minimum: u32, maximum: Option<u32>) -> Memory {
        Memory::try_new(kind, minimum, maximum).unwrap_or_else(|e| panic!("{kind:?}: {e}"))
    }

    pub fn try_new(kind: Kind, minimum: u32, maximum: Option<u32>) -> Result<Memory, String> {
        let remap = |growth| {
            RemapMemory::new(minimum, maximum, growth)
                .map(Memory::Remap)
                .map_err(text)
        };
        match kind {
            Kind::Reserved(pages) => {
                let options = Options::default();
                let memory = LinearMemory::with_options(minimum, maximum, pages, options);
                memory.map(Memory::Linear).map_err(text)
            }
            Kind::Remap => remap(Growth::Remap),
            Kind::Copy => remap(Growth::Copy),
        }
    }

    pub fn grow(&mut self, delta: u32) -> i32 {
        match self {
            Memory::Linear(m) => m.grow(delta),
            Memory::Remap(m) => m.grow(delta),
        }
    }

    /// The path a grow took, by name (the two examples each have their own
    /// `GrowPath`), or the error's text.
    pub fn grow_path(&mut self, delta: u32) -> Result<String, String> {
        match self {
            Memory::Linear(m) => m
                .grow_traced(delta)
                .map(|(_, p)| format!("{p:?}"))
                .map_err(|e| format!("{e:?}")),
            Memory::Remap(m) => m
                .grow_traced(delta)
                .map(|(_, p)| format!("{p:?}"))
                .map_err(|e| format!("{e:?}")),
        }
    }

    pub fn size(&self) -> u32 {
        match self {
            Memory::Linear(m) => m.size(),
            Memory::Remap(m) => m.size(),
        }
    }

    pub fn as_ptr(&self) -> *const u8 {
        self.as_slice().as_ptr()
    }

    pub fn as_slice(&self) -> &[u8] {
        match self {
            Memory::Linear(m) => m.as_slice(),
            Memory::Remap(m) => m.as_slice(),
        }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        match self {
            Memory::Linear(m) => m.as_mut_slice(),
            Memory::Remap(m) => m.as_mut_slice(),
        }
    }

    pub fn slice(&self, offset: u64, len: usize) -> Option<&[u8]> {
        match self {
            Memory::Linear(m) => m.slice(offset, len).ok(),
            Memory::Remap(m) => m.slice(offset, len).ok(),
        }
    }

    pub fn write(&mut self, offset: u64, data: &[u8]) -> bool {
        match self {
            Memory::Linear(m) => m.write(offset, data).is_ok(),
            Memory::Remap(m) => m.write(offset, data).is_ok(),
        }
    }
}

/// A recognisable byte for offset `i`, so a moved or lost byte shows.
pub fn pattern(i: usize) -> u8 {
    (i % 251) as u8
}

/// Fills the memory with `pattern`.
pub fn fill(memory: &mut [u8]) {
    memory
        .iter_mut()
        .enumerate()
        .for_each(|(i, b)| *b = pattern(i));
}

/// Asserts the first `len` bytes still hold `pattern`.
pub fn assert_pattern(memory: &[u8], len: usize, what: &str) {
    let bad = memory[..len]
        .iter()
        .enumerate()
        .position(|(i, &b)| b != pattern(i));
    assert_eq!(bad, None, "{what}: the first wrong byte of {len}");
}

/// A value's `Debug` text: paths and errors of either example compare as text.
pub fn text(value: impl std::fmt::Debug) -> String {
    format!("{value:?}")
}
