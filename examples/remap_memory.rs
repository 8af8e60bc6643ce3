//! A WebAssembly linear memory that maps exactly its size and grows with
//! Linux `mremap`: in place when the next range is free, else by moving its
//! page tables to a new address. `Growth::Copy` (and every OS without
//! `mremap`) allocates a new block and copies instead. A failed grow returns
//! -1 and leaves the memory exactly as it was.
//!
//! - Explained in: "Growing in place on Linux with mremap" (src/part1-mremap.md)
//! - Run: `cargo run --example remap_memory`
//! - Tested by: `cargo test --test linear_memory`
//! - Depends on: std, libc 0.2 (windows-sys 0.61 on Windows)

// `mdbook test` passes no `--extern`, so the crates are named here.
#[cfg(unix)]
extern crate libc;
#[cfg(windows)]
extern crate windows_sys;

use std::io;
use std::ptr::NonNull;

// SHARED: contract (canonical: examples/linear_memory.rs)
// ANCHOR: grow_path
/// The WebAssembly page: 64 KiB.
pub const WASM_PAGE: usize = 64 * 1024;
/// The most pages a 32-bit memory can have: 4 GiB.
pub const MAX_PAGES: u32 = 65536;

/// The path one successful grow took, cheapest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GrowPath {
    Unchanged,       // delta 0: nothing to do
    Committed,       // reserved pages made accessible; the base stays
    ExtendedInPlace, // `mremap` grew the mapping where it was
    Moved,           // `mremap(MREMAP_MAYMOVE)` moved the page tables
    Relocated,       // the reservation was full: pages moved to a bigger one
    Allocated,       // a first block (nothing to copy)
    Copied,          // a new block, every byte copied into it
}
// ANCHOR_END: grow_path

// ANCHOR: errors
/// Why a memory could not be made, or why a grow returned -1 (leaving the
/// memory unchanged).
#[derive(Debug)]
pub enum GrowError {
    /// Not a valid memory type (a module declaring it would not validate).
    Invalid(&'static str),
    /// The new size would pass the declared maximum.
    OverMaximum { requested: u64, maximum: u32 },
    /// The size does not fit this platform's address space.
    AddressSpace { pages: u32 },
    /// The base must not move, and growing in place is impossible.
    WouldMove { capacity_pages: u32 },
    /// Every path was tried and the OS refused each one.
    OutOfMemory {
        attempts: Vec<(GrowPath, io::Error)>,
    },
}

/// An access outside `[0, size)`: an error, never undefined behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutOfBounds {
    pub offset: u64,
    pub len: usize,
    pub size: usize,
}
// ANCHOR_END: errors

/// `pages * 64 KiB`, or an error where that does not fit `usize` (32-bit).
fn bytes(pages: u32) -> Result<usize, GrowError> {
    let len = (pages as usize).checked_mul(WASM_PAGE);
    len.ok_or(GrowError::AddressSpace { pages })
}

fn injected(what: impl std::fmt::Debug) -> io::Error {
    io::Error::new(io::ErrorKind::OutOfMemory, format!("injected: {what:?}"))
}
// SHARED_END: contract

/// How a `RemapMemory` grows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Growth {
    /// `mremap` in place, else `mremap(MREMAP_MAYMOVE)`, else copy.
    Remap,
    /// Always allocate the new size, copy, free the old block.
    Copy,
}

/// The thin OS layer: one function per operation, the platform chosen once.
#[cfg(unix)]
mod os {
    #[cfg(target_os = "linux")]
    pub use linux::*;
    pub use unix::*;

    pub mod unix {
        use std::io::{Error, Result};

        /// Maps `len` bytes readable, writable and zeroed.
        pub fn map_rw(len: usize) -> Result<*mut u8> {
            let (prot, flags) = (
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            );
            // SAFETY: a fresh mapping where the kernel chooses touches nothing.
            let ptr = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, -1, 0) };
            match ptr {
                libc::MAP_FAILED => Err(Error::last_os_error()), // not null
                ptr => Ok(ptr.cast()),
            }
        }

        /// Unmaps `[ptr, ptr + len)`, a range of ours that is never empty.
        pub fn release(ptr: *mut u8, len: usize) {
            // SAFETY: the caller owns the range and nothing refers to it.
            let rc = unsafe { libc::munmap(ptr.cast(), len) };
            debug_assert_eq!(rc, 0, "munmap: {}", Error::last_os_error());
        }
    }

    // ANCHOR: os_linux
    #[cfg(target_os = "linux")]
    pub mod linux {
        use std::io::{Error, Result};

        /// Grows the mapping at `ptr` from `old` to `new` bytes, where it is
        /// (`may_move` false) or wherever the kernel finds room. Returns the
        /// new address; the old one is gone. On failure nothing changed.
        pub fn remap(ptr: *mut u8, old: usize, new: usize, may_move: bool) -> Result<*mut u8> {
            let flags = if may_move { libc::MREMAP_MAYMOVE } else { 0 };
            // SAFETY: `ptr, old` is one mapping we own; the caller forgets
            // `ptr` once the mapping has moved.
            let got = unsafe { libc::mremap(ptr.cast(), old, new, flags) };
            match got {
                libc::MAP_FAILED => Err(Error::last_os_error()),
                got => Ok(got.cast()),
            }
        }
    }
    // ANCHOR_END: os_linux
}

#[cfg(windows)]
mod os {
    use std::io::{Error, Result};
    use windows_sys::Win32::System::Memory::{VirtualAlloc, VirtualFree};
    use windows_sys::Win32::System::Memory::{
        MEM_COMMIT, MEM_RELEASE, MEM_RESERVE, PAGE_READWRITE,
    };

    pub fn map_rw(len: usize) -> Result<*mut u8> {
        let kind = MEM_RESERVE | MEM_COMMIT;
        // SAFETY: reserving and committing fresh address space touches nothing.
        let ptr = unsafe { VirtualAlloc(std::ptr::null(), len, kind, PAGE_READWRITE) };
        match ptr.is_null() {
            true => Err(Error::last_os_error()),
            false => Ok(ptr.cast()),
        }
    }

    pub fn release(ptr: *mut u8, _len: usize) {
        // SAFETY: `ptr` is the base of an allocation we own.
        let ok = unsafe { VirtualFree(ptr.cast(), 0, MEM_RELEASE) };
        debug_assert_ne!(ok, 0, "VirtualFree: {}", Error::last_os_error());
    }
}

// SHARED: region (canonical: examples/linear_memory.rs)
// ANCHOR: region
/// An OS mapping we own, released on drop. An empty one maps nothing:
/// `mmap` rejects a length of 0, and so would `munmap`.
struct Region {
    ptr: *mut u8,
    len: usize,
}

impl Region {
    /// Maps `len` bytes with `map` (an `os` function), or nothing if 0.
    fn new(len: usize, map: fn(usize) -> io::Result<*mut u8>) -> io::Result<Region> {
        let ptr = match len {
            0 => std::ptr::null_mut(),
            _ => map(len)?,
        };
        Ok(Region { ptr, len })
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        if self.len > 0 {
            os::release(self.ptr, self.len);
        }
    }
}
// ANCHOR_END: region
// SHARED_END: region

/// A WebAssembly linear memory over an exact mapping.
pub struct RemapMemory {
    /// Exactly `pages * WASM_PAGE` bytes, mapped read-write.
    region: Region,
    /// Current size in pages.
    pages: u32,
    maximum: u32,
    growth: Growth,
    /// Paths made to fail on purpose, so tests drive every fallback.
    failing: Vec<GrowPath>,
}

// SAFETY: the memory owns its mapping outright and hands out access only
// through `&self`/`&mut self`, like a `Vec<u8>`; `&self` methods only read.
unsafe impl Send for RemapMemory {}
unsafe impl Sync for RemapMemory {} // SAFETY: as above.

impl RemapMemory {
    /// A memory of `minimum` pages that may grow to `maximum` (at most 65536).
    pub fn new(minimum: u32, maximum: Option<u32>, growth: Growth) -> Result<Self, GrowError> {
        let maximum = maximum.unwrap_or(MAX_PAGES);
        if maximum > MAX_PAGES {
            return Err(GrowError::Invalid("more than 65536 pages"));
        } else if minimum > maximum {
            return Err(GrowError::Invalid("minimum above maximum"));
        }
        let region = Region::new(0, os::map_rw).expect("an empty region maps nothing");
        let mut memory = RemapMemory {
            region,
            pages: 0,
            maximum,
            growth,
            failing: Vec::new(),
        };
        memory.grow_traced(minimum)?;
        Ok(memory)
    }

    /// Makes these paths fail as if the OS refused them.
    pub fn inject_faults(&mut self, failing: &[GrowPath]) {
        self.failing = failing.to_vec();
    }

    /// How far the memory can grow without moving: only as far as it is.
    pub fn capacity(&self) -> usize {
        self.region.len
    }

    // SHARED: access (canonical: examples/linear_memory.rs)
    /// The size in pages (`memory.size`).
    pub fn size(&self) -> u32 {
        self.pages
    }

    pub fn byte_len(&self) -> usize {
        self.pages as usize * WASM_PAGE
    }

    /// The base address. A grow may change it, unless it is `Committed`.
    pub fn as_ptr(&self) -> *const u8 {
        self.as_slice().as_ptr()
    }

    pub fn as_slice(&self) -> &[u8] {
        let base = NonNull::new(self.region.ptr).unwrap_or(NonNull::dangling());
        // SAFETY: the first `byte_len()` bytes of the region are mapped
        // read-write (none when empty: a dangling, aligned pointer), and
        // `&self` keeps any grow from changing them meanwhile.
        unsafe { std::slice::from_raw_parts(base.as_ptr(), self.byte_len()) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        let base = NonNull::new(self.region.ptr).unwrap_or(NonNull::dangling());
        // SAFETY: as in `as_slice`, and `&mut self` makes the access unique.
        unsafe { std::slice::from_raw_parts_mut(base.as_ptr(), self.byte_len()) }
    }

    // ANCHOR: checked
    /// The bytes `[offset, offset + len)`, or an error if any lies outside.
    pub fn slice(&self, offset: u64, len: usize) -> Result<&[u8], OutOfBounds> {
        let range = self.checked_range(offset, len)?;
        Ok(&self.as_slice()[range])
    }

    pub fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), OutOfBounds> {
        let range = self.checked_range(offset, data.len())?;
        self.as_mut_slice()[range].copy_from_slice(data);
        Ok(())
    }

    fn checked_range(
        &self,
        offset: u64,
        len: usize,
    ) -> Result<std::ops::Range<usize>, OutOfBounds> {
        let size = self.byte_len();
        let oob = OutOfBounds { offset, len, size };
        let start = usize::try_from(offset).map_err(|_| oob)?;
        let end = start.checked_add(len).filter(|&end| end <= size);
        Ok(start..end.ok_or(oob)?)
    }
    // ANCHOR_END: checked

    // ANCHOR: grow
    /// `memory.grow`: the old size in pages, or -1 with the memory unchanged.
    pub fn grow(&mut self, delta_pages: u32) -> i32 {
        match self.grow_traced(delta_pages) {
            Ok((old_pages, _path)) => old_pages as i32, // at most 65536
            Err(_) => -1,
        }
    }

    /// `grow`, also saying which path it took, or why it failed.
    pub fn grow_traced(&mut self, delta_pages: u32) -> Result<(u32, GrowPath), GrowError> {
        let (old_pages, maximum) = (self.pages, self.maximum);
        let requested = u64::from(old_pages) + u64::from(delta_pages);
        if requested > u64::from(maximum) {
            return Err(GrowError::OverMaximum { requested, maximum });
        } else if delta_pages == 0 {
            return Ok((old_pages, GrowPath::Unchanged));
        }
        let new_pages = requested as u32; // at most `maximum`
        let new_len = bytes(new_pages)?;
        // ANCHOR_END: grow
        // ANCHOR: grow_loop
        let paths = self.paths_for(new_len);
        if paths.is_empty() {
            let capacity_pages = (self.capacity() / WASM_PAGE) as u32;
            return Err(GrowError::WouldMove { capacity_pages });
        }
        // Each path either succeeds or leaves the memory as it was.
        let mut attempts = Vec::new();
        for path in paths {
            match self.try_path(path, new_len) {
                Ok(()) => {
                    self.pages = new_pages;
                    return Ok((old_pages, path));
                }
                Err(e) => attempts.push((path, e)),
            }
        }
        Err(GrowError::OutOfMemory { attempts })
    }
    // ANCHOR_END: grow_loop
    // SHARED_END: access

    // ANCHOR: paths
    /// The paths to try, cheapest first, copying last. Only Linux has `mremap`.
    fn paths_for(&self, _new_len: usize) -> Vec<GrowPath> {
        use GrowPath::*;
        let remap = self.growth == Growth::Remap && cfg!(target_os = "linux");
        match self.pages {
            0 => vec![Allocated],
            _ if remap => vec![ExtendedInPlace, Moved, Copied],
            _ => vec![Copied],
        }
    }

    fn try_path(&mut self, path: GrowPath, new_len: usize) -> io::Result<()> {
        if self.failing.contains(&path) {
            return Err(injected(path));
        }
        let old_len = self.byte_len();
        let ptr = match path {
            #[cfg(target_os = "linux")]
            GrowPath::ExtendedInPlace => os::remap(self.region.ptr, old_len, new_len, false)?,
            #[cfg(target_os = "linux")]
            GrowPath::Moved => os::remap(self.region.ptr, old_len, new_len, true)?,
            _ => return self.copy_to_new(old_len, new_len), // Allocated, Copied
        };
        // The kernel resized (and maybe moved) the mapping: the old one is gone.
        std::mem::forget(std::mem::replace(
            &mut self.region,
            Region { ptr, len: new_len },
        ));
        Ok(())
    }
    // ANCHOR_END: paths

    /// The fallback: a new block of the new size, the old bytes copied in.
    fn copy_to_new(&mut self, old_len: usize, new_len: usize) -> io::Result<()> {
        let target = Region::new(new_len, os::map_rw)?;
        if old_len > 0 {
            // SAFETY: both ranges are mapped for at least `old_len` bytes and
            // are distinct mappings, so they cannot overlap.
            unsafe { std::ptr::copy_nonoverlapping(self.region.ptr, target.ptr, old_len) };
        }
        self.region = target; // dropping the old region unmaps it
        Ok(())
    }
}

/// Grows a memory to 4096 pages, one page at a time and touching the last
/// byte after each grow, and prints how many grows took each path.
fn main() {
    if let Some(word) = std::env::args().nth(1) {
        let help = word == "--help" || word == "-h";
        match help {
            true => println!("usage: remap_memory (no flags): grows a memory, prints its paths"),
            false => eprintln!("remap_memory: unknown argument `{word}` (see --help)"),
        }
        std::process::exit(if help { 0 } else { 2 });
    }
    let mut memory = RemapMemory::new(1, None, Growth::Remap).expect("a 1-page memory");
    let mut paths = std::collections::BTreeMap::new();
    while memory.size() < 4096 {
        let (_, path) = memory.grow_traced(1).expect("4096 pages fit");
        *paths.entry(path).or_insert(0) += 1;
        let last = memory.byte_len() - 1;
        memory.as_mut_slice()[last] = 1;
    }
    println!("1 -> 4096 pages: {paths:?}");
}
