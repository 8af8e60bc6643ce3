//! A WebAssembly linear memory that reserves address space and commits it as
//! `memory.grow` asks. Past the reservation its pages move (Linux `mremap`)
//! or are copied into a bigger one. A failed grow returns -1 and leaves the
//! memory exactly as it was.
//!
//! - Explained in: "The memory.grow contract" (src/part1-contract.md) and
//!   "Reserve and commit", "When growth fails" after it
//! - Run: `cargo run --example linear_memory`
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

// ANCHOR: options
/// What a runtime may demand beyond the wasm rules.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// Inaccessible bytes after the reservation (a multiple of 64 KiB), so
    /// an access past the end faults even when the memory is full.
    pub guard_bytes: usize,
    /// The base never moves: a grow past the reservation returns -1.
    pub fixed_base: bool,
}
// ANCHOR_END: options

// ANCHOR: faults
/// OS steps made to fail on purpose, so tests drive every fallback path
/// without waiting for the OS to refuse. None by default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Faults {
    /// These paths fail as if the OS refused them.
    pub paths: Vec<GrowPath>,
    /// Relocation: moving committed segment `n` fails, after `0..n` moved.
    pub segment_move: Option<usize>,
    /// Undoing a relocation: moving back fails too, so bytes are copied.
    pub move_back: bool,
}
// ANCHOR_END: faults

/// The thin OS layer: one function per operation, the platform chosen once.
#[cfg(unix)]
mod os {
    #[cfg(target_os = "linux")]
    pub use linux::*;
    pub use unix::*;

    // ANCHOR: os_unix
    pub mod unix {
        use std::io::{Error, Result};

        /// Reserves `len` bytes of inaccessible address space.
        pub fn reserve(len: usize) -> Result<*mut u8> {
            let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;
            // SAFETY: a fresh mapping where the kernel chooses touches nothing.
            let ptr =
                unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_NONE, flags, -1, 0) };
            match ptr {
                libc::MAP_FAILED => Err(Error::last_os_error()), // not null
                ptr => Ok(ptr.cast()),
            }
        }

        /// Makes `[ptr, ptr + len)`, inside one reservation, read-write.
        pub fn commit(ptr: *mut u8, len: usize) -> Result<()> {
            let rw = libc::PROT_READ | libc::PROT_WRITE;
            // SAFETY: the caller passes a page-aligned range of its reservation.
            match unsafe { libc::mprotect(ptr.cast(), len, rw) } {
                0 => Ok(()),
                _ => Err(Error::last_os_error()),
            }
        }

        /// Unmaps `[ptr, ptr + len)`, a range of ours that is never empty.
        pub fn release(ptr: *mut u8, len: usize) {
            // SAFETY: the caller owns the range and nothing refers to it.
            let rc = unsafe { libc::munmap(ptr.cast(), len) };
            debug_assert_eq!(rc, 0, "munmap: {}", Error::last_os_error());
        }
    }
    // ANCHOR_END: os_unix

    // ANCHOR: os_linux
    #[cfg(target_os = "linux")]
    pub mod linux {
        use libc::{MREMAP_DONTUNMAP, MREMAP_FIXED, MREMAP_MAYMOVE};
        use std::io::{Error, Result};

        /// Moves one mapping's pages (`len` bytes at `from`) to `to`, a range
        /// of our own. With `keep_source` (MREMAP_DONTUNMAP, Linux 5.7) `from`
        /// stays mapped but empty, so nobody else can map there while we may
        /// still need to move the pages back.
        pub fn move_pages(from: *mut u8, len: usize, to: *mut u8, keep_source: bool) -> Result<()> {
            let keep = if keep_source { MREMAP_DONTUNMAP } else { 0 };
            let flags = MREMAP_MAYMOVE | MREMAP_FIXED | keep;
            // SAFETY: `from, len` is one mapping of ours and `to, len` a range
            // of ours that it may replace. A failed move of one mapping leaves
            // both untouched.
            let got = unsafe { libc::mremap(from.cast(), len, len, flags, to) };
            match got {
                libc::MAP_FAILED => Err(Error::last_os_error()),
                _ => Ok(()),
            }
        }
    }
    // ANCHOR_END: os_linux
}

// ANCHOR: os_windows
#[cfg(windows)]
mod os {
    use std::io::{Error, Result};
    use windows_sys::Win32::System::Memory::{VirtualAlloc, VirtualFree};
    use windows_sys::Win32::System::Memory::{MEM_COMMIT, MEM_RELEASE, MEM_RESERVE};
    use windows_sys::Win32::System::Memory::{PAGE_NOACCESS, PAGE_READWRITE};

    fn alloc(at: *mut u8, len: usize, kind: u32, protect: u32) -> Result<*mut u8> {
        // SAFETY: with a null `at` this reserves fresh address space; with
        // `at` inside our reservation it commits pages that read as zero.
        let ptr = unsafe { VirtualAlloc(at.cast(), len, kind, protect) };
        match ptr.is_null() {
            true => Err(Error::last_os_error()),
            false => Ok(ptr.cast()),
        }
    }

    pub fn reserve(len: usize) -> Result<*mut u8> {
        alloc(std::ptr::null_mut(), len, MEM_RESERVE, PAGE_NOACCESS)
    }

    /// Charged against the commit limit here: an out-of-memory shows now.
    pub fn commit(ptr: *mut u8, len: usize) -> Result<()> {
        alloc(ptr, len, MEM_COMMIT, PAGE_READWRITE).map(drop)
    }

    /// Frees a whole reservation (Windows frees them only whole).
    pub fn release(ptr: *mut u8, _len: usize) {
        // SAFETY: `ptr` is the base of a reservation we own.
        let ok = unsafe { VirtualFree(ptr.cast(), 0, MEM_RELEASE) };
        debug_assert_ne!(ok, 0, "VirtualFree: {}", Error::last_os_error());
    }
}
// ANCHOR_END: os_windows

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

impl Region {
    /// The address `offset` bytes in; the caller keeps it in range.
    fn at(&self, offset: usize) -> *mut u8 {
        self.ptr.wrapping_add(offset)
    }
}

// ANCHOR: memory
/// A WebAssembly linear memory over a reservation.
pub struct LinearMemory {
    /// The reservation, then `guard` bytes never committed.
    region: Region,
    guard: usize,
    /// The committed bytes as the kernel's mappings (VMAs), in order: the
    /// pages a relocation moved never merge with those committed later.
    segments: Vec<usize>,
    /// Current size in pages; `pages * WASM_PAGE` bytes are accessible.
    pages: u32,
    maximum: u32,
    fixed_base: bool,
    faults: Faults,
}
// ANCHOR_END: memory

// SAFETY: the memory owns its mapping outright and hands out access only
// through `&self`/`&mut self`, like a `Vec<u8>`; `&self` methods only read.
unsafe impl Send for LinearMemory {}
unsafe impl Sync for LinearMemory {} // SAFETY: as above.

impl LinearMemory {
    /// A memory of `minimum` pages that may grow to `maximum` (at most
    /// 65536), reserving `reservation` pages (default: the maximum).
    pub fn new(
        minimum: u32,
        maximum: Option<u32>,
        reservation: Option<u32>,
    ) -> Result<Self, GrowError> {
        LinearMemory::with_options(minimum, maximum, reservation, Options::default())
    }

    pub fn with_options(
        minimum: u32,
        maximum: Option<u32>,
        reservation: Option<u32>,
        options: Options,
    ) -> Result<Self, GrowError> {
        let (maximum, guard) = (maximum.unwrap_or(MAX_PAGES), options.guard_bytes);
        let pages = reservation.unwrap_or(maximum).max(minimum);
        // ANCHOR: rules
        let rules = [
            (maximum <= MAX_PAGES, "more than 65536 pages"),
            (minimum <= maximum, "minimum above maximum"),
            (pages <= MAX_PAGES, "reservation above 65536 pages"),
            (guard % WASM_PAGE == 0, "guard not in 64 KiB pages"),
        ];
        if let Some((_, why)) = rules.iter().find(|(holds, _)| !holds) {
            return Err(GrowError::Invalid(why));
        }
        // ANCHOR_END: rules
        let len = bytes(pages)?.checked_add(guard);
        let len = len.ok_or(GrowError::AddressSpace { pages })?;
        let region = Region::new(len, os::reserve);
        let region = region.map_err(|e| GrowError::OutOfMemory {
            attempts: vec![(GrowPath::Allocated, e)],
        })?;
        let (fixed_base, segments, faults) = (options.fixed_base, Vec::new(), Faults::default());
        let mut memory = LinearMemory {
            region,
            guard,
            segments,
            pages: 0,
            maximum,
            fixed_base,
            faults,
        };
        memory.grow_traced(minimum)?;
        Ok(memory)
    }

    pub fn inject_faults(&mut self, faults: Faults) {
        self.faults = faults;
    }

    /// How far the memory can grow, in bytes, without its base moving.
    pub fn capacity(&self) -> usize {
        self.region.len - self.guard
    }

    /// All the address space the memory holds: its bytes, the uncommitted
    /// rest of the reservation and the guard. Nothing else lives there.
    pub fn address_range(&self) -> std::ops::Range<usize> {
        self.region.ptr as usize..self.region.ptr as usize + self.region.len
    }

    /// The committed mappings' lengths, in order.
    pub fn segments(&self) -> &[usize] {
        &self.segments
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
    /// The paths to try, cheapest first, copying last. A fixed base allows
    /// only `Committed`; only Linux can move pages without copying them.
    fn paths_for(&self, new_len: usize) -> Vec<GrowPath> {
        use GrowPath::*;
        let copy = if self.pages == 0 { Allocated } else { Copied };
        match new_len <= self.capacity() {
            true if self.fixed_base => vec![Committed],
            false if self.fixed_base => vec![], // it would move
            true => vec![Committed, copy],
            false if cfg!(target_os = "linux") && self.pages > 0 => vec![Relocated, copy],
            false => vec![copy],
        }
    }

    fn try_path(&mut self, path: GrowPath, new_len: usize) -> io::Result<()> {
        if self.faults.paths.contains(&path) {
            return Err(injected(path));
        }
        let old_len = self.byte_len();
        match path {
            GrowPath::Committed => self.commit(old_len, new_len),
            #[cfg(target_os = "linux")]
            GrowPath::Relocated => self.relocate(old_len, new_len),
            _ => self.copy_to_new(old_len, new_len), // Allocated, Copied
        }
    }
    // ANCHOR_END: paths

    // ANCHOR: commit
    /// Within the reservation: make the delta accessible. The delta lies in
    /// one `PROT_NONE` mapping, so a failure changes nothing.
    fn commit(&mut self, old_len: usize, new_len: usize) -> io::Result<()> {
        os::commit(self.region.at(old_len), new_len - old_len)?;
        // The new pages merge with the last committed mapping.
        match self.segments.last_mut() {
            Some(last) => *last += new_len - old_len,
            None => self.segments.push(new_len),
        }
        Ok(())
    }
    // ANCHOR_END: commit

    // ANCHOR: relocate
    /// Past the reservation: reserve a bigger one, commit the delta there,
    /// then move each committed mapping with its own `mremap` (before Linux
    /// 6.17 one call moves one mapping). Page tables move; bytes don't. A
    /// failure part-way moves everything back.
    #[cfg(target_os = "linux")]
    fn relocate(&mut self, old_len: usize, new_len: usize) -> io::Result<()> {
        let target = self.bigger_reservation(new_len)?;
        os::commit(target.at(old_len), new_len - old_len)?;
        let mut moved = 0; // bytes of `target` that hold our pages
        for (n, &len) in self.segments.iter().enumerate() {
            let result = match self.faults.segment_move == Some(n) {
                true => Err(injected(format!("moving segment {n}"))),
                false => os::move_pages(self.region.at(moved), len, target.at(moved), true),
            };
            if let Err(e) = result {
                self.move_back(&target, moved);
                return Err(e); // dropping `target` unmaps what is left in it
            }
            moved += len;
        }
        self.region = target; // the old region is empty now: unmapped
        self.segments.push(new_len - old_len);
        Ok(())
    }

    // ANCHOR_END: relocate

    // ANCHOR: move_back
    /// Undoes a relocation part-way: the first `moved` bytes of `target` go
    /// back where they were, by `mremap` or, failing that, by copying.
    #[cfg(target_os = "linux")]
    fn move_back(&self, target: &Region, moved: usize) {
        let mut at = 0;
        for &len in self.segments.iter() {
            if at == moved {
                break;
            }
            let (from, to) = (target.at(at), self.region.at(at));
            let undone = match self.faults.move_back {
                true => Err(injected("moving back")),
                // Kept mapped, so dropping `target` cannot unmap what
                // another thread mapped into a hole the move left.
                false => os::move_pages(from, len, to, true),
            };
            if undone.is_err() {
                // SAFETY: `from` holds the moved pages and `to` is still
                // mapped read-write (MREMAP_DONTUNMAP): distinct mappings.
                unsafe { std::ptr::copy_nonoverlapping(from, to, len) };
            }
            at += len;
        }
    }
    // ANCHOR_END: move_back

    // ANCHOR: copy
    /// The fallback: a new reservation, sized as `relocate` sizes it, with
    /// the old bytes copied in.
    fn copy_to_new(&mut self, old_len: usize, new_len: usize) -> io::Result<()> {
        let target = self.bigger_reservation(new_len)?;
        os::commit(target.ptr, new_len)?;
        if old_len > 0 {
            // SAFETY: both ranges are mapped for at least `old_len` bytes and
            // are distinct mappings, so they cannot overlap.
            unsafe { std::ptr::copy_nonoverlapping(self.region.ptr, target.ptr, old_len) };
        }
        self.region = target; // dropping the old region unmaps it
        self.segments = vec![new_len];
        Ok(())
    }
    // ANCHOR_END: copy

    /// A reservation to move to: double this one (so moves stay rare), at
    /// least `new_len`, at most the maximum, with the same guard after it.
    fn bigger_reservation(&self, new_len: usize) -> io::Result<Region> {
        let limit = (self.maximum as usize)
            .saturating_mul(WASM_PAGE)
            .max(new_len);
        let len = self.capacity().saturating_mul(2).clamp(new_len, limit);
        Region::new(len.saturating_add(self.guard), os::reserve)
    }
}

// ANCHOR: workload
/// The workload every memory is measured on: grow one page at a time up to
/// `pages`, touching the last byte after each grow (so each grow pays its
/// page fault). Returns how many grows took each path.
pub fn grow_page_by_page(memory: &mut LinearMemory, pages: u32) -> Result<Paths, GrowError> {
    let mut paths = Paths::new();
    while memory.size() < pages {
        let (_, path) = memory.grow_traced(1)?;
        *paths.entry(path).or_insert(0) += 1;
        let last = memory.byte_len() - 1;
        memory.as_mut_slice()[last] = 1;
    }
    Ok(paths)
}

/// How many grows took each path.
pub type Paths = std::collections::BTreeMap<GrowPath, u32>;
// ANCHOR_END: workload

/// Grows a memory to 4096 pages with the whole 4 GiB reserved, and with only
/// 16 pages reserved, and prints how many grows took each path.
fn main() {
    if let Some(word) = std::env::args().nth(1) {
        let help = word == "--help" || word == "-h";
        match help {
            true => {
                println!("usage: linear_memory (no flags): grows two memories, prints their paths")
            }
            false => eprintln!("linear_memory: unknown argument `{word}` (see --help)"),
        }
        std::process::exit(if help { 0 } else { 2 });
    }
    for reservation in [None, Some(16)] {
        let mut memory = LinearMemory::new(1, None, reservation).expect("a 1-page memory");
        let paths = grow_page_by_page(&mut memory, 4096).expect("4096 pages fit");
        println!("reservation {reservation:?}: 1 -> 4096 pages: {paths:?}");
    }
}
