//! WebAssembly linear memory whose `memory.grow` grows in place.
//!
//! Three strategies, chosen at construction:
//! - `Reserved`: reserve address space up front, commit on grow (`mprotect`,
//!   `VirtualAlloc(MEM_COMMIT)`). The base never moves inside the reservation.
//!   Past it, Linux moves the pages into a bigger reservation with
//!   `mremap(MREMAP_MAYMOVE | MREMAP_FIXED)`: page tables move, bytes don't.
//! - `Remap` (Linux): map exactly the current size; grow with `mremap`, in
//!   place when the next range is free, else by moving the page tables.
//! - `Copy`: allocate, copy, free. The portable baseline and last fallback.
//!
//! Every grow reports the path it took. A grow that fails returns -1 and
//! leaves the memory exactly as it was. Run it:
//! `cargo run --release --example linear_memory -- --pages 4096`

// `mdbook test` passes no `--extern`, so the crates are named here.
#[cfg(unix)]
extern crate libc;
#[cfg(windows)]
extern crate windows_sys;

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::ptr::NonNull;
use std::time::Instant;

// ANCHOR: types
/// The WebAssembly page: 64 KiB.
pub const WASM_PAGE: usize = 64 * 1024;
/// The most pages a 32-bit memory can have: 4 GiB.
pub const MAX_PAGES: u32 = 65536;

/// How a memory gets more address space when it grows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Reserve `reservation_pages` (default: the maximum) and commit on grow.
    Reserved { reservation_pages: Option<u32> },
    /// Map exactly the current size and grow it with `mremap` (Linux only;
    /// elsewhere every grow takes the copy fallback).
    Remap,
    /// Allocate the new size, copy, free the old block.
    Copy,
}

/// The path one successful grow took, cheapest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GrowPath {
    /// `delta == 0`: nothing to do.
    Unchanged,
    /// Made pages of the reservation accessible; the base did not move.
    Committed,
    /// `mremap` extended the mapping where it was.
    ExtendedInPlace,
    /// `mremap(MREMAP_MAYMOVE)` moved the page tables to a new address.
    Moved,
    /// The reservation was used up: a bigger one was reserved and the pages
    /// moved into it with `mremap(MREMAP_FIXED)`.
    Relocated,
    /// A new block was allocated (the memory was empty: nothing to copy).
    Allocated,
    /// A new block was allocated and every byte copied into it.
    Copied,
}

/// Why a grow returned -1. The memory is unchanged in every case.
#[derive(Debug)]
pub enum GrowError {
    /// The new size would pass the declared maximum or 65536 pages.
    OverMaximum { requested: u64, maximum: u32 },
    /// The size does not fit this platform's address space.
    AddressSpace { pages: u32 },
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
// ANCHOR_END: types

impl fmt::Display for GrowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GrowError::OverMaximum { requested, maximum } => {
                write!(f, "{requested} pages requested, maximum is {maximum}")
            }
            GrowError::AddressSpace { pages } => {
                write!(f, "{pages} pages do not fit this address space")
            }
            GrowError::OutOfMemory { attempts } => {
                write!(f, "out of memory:")?;
                for (path, e) in attempts {
                    write!(f, " {path:?} failed ({e});")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for GrowError {}

impl fmt::Display for OutOfBounds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "access of {} bytes at offset {} is outside the memory's {} bytes",
            self.len, self.offset, self.size
        )
    }
}

impl std::error::Error for OutOfBounds {}

/// Makes chosen OS steps fail, so tests can drive every fallback path
/// without waiting for the OS to refuse. All off by default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    pub commit: bool,
    pub extend_in_place: bool,
    pub move_pages: bool,
    pub relocate: bool,
    pub copy: bool,
}

// ANCHOR: os
/// The thin OS layer: one function per operation, each behind a small `cfg`.
/// Everything above speaks only in these.
mod os {
    use std::io;

    // ANCHOR: os_unix
    /// Reserves `len` bytes of inaccessible address space; commits nothing.
    #[cfg(unix)]
    pub fn reserve(len: usize) -> io::Result<*mut u8> {
        map(len, libc::PROT_NONE, libc::MAP_NORESERVE)
    }

    /// Maps `len` bytes readable, writable and zeroed.
    #[cfg(unix)]
    pub fn map_rw(len: usize) -> io::Result<*mut u8> {
        map(len, libc::PROT_READ | libc::PROT_WRITE, 0)
    }

    #[cfg(unix)]
    fn map(len: usize, prot: libc::c_int, extra: libc::c_int) -> io::Result<*mut u8> {
        let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | extra;
        // SAFETY: a fresh anonymous mapping at an address the kernel picks
        // touches no existing memory.
        let ptr = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, -1, 0) };
        // mmap reports failure with MAP_FAILED (-1), not null.
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(ptr.cast())
    }

    /// Makes `[ptr, ptr + len)`, inside a reservation, readable and writable.
    #[cfg(unix)]
    pub fn commit(ptr: *mut u8, len: usize) -> io::Result<()> {
        // SAFETY: the caller passes a page-aligned range of its own reservation.
        let rc = unsafe { libc::mprotect(ptr.cast(), len, libc::PROT_READ | libc::PROT_WRITE) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Unmaps `[ptr, ptr + len)`.
    #[cfg(unix)]
    pub fn release(ptr: *mut u8, len: usize) {
        // SAFETY: the caller owns the range and nothing refers to it any more.
        // munmap of a range we mapped can only fail on bad arguments.
        let rc = unsafe { libc::munmap(ptr.cast(), len) };
        debug_assert_eq!(rc, 0, "munmap: {}", io::Error::last_os_error());
    }

    /// Unmaps the tail `[ptr + keep, ptr + len)` of a region whose head was
    /// moved away by `move_to`.
    #[cfg(unix)]
    pub fn release_tail(ptr: *mut u8, keep: usize, len: usize) {
        if len > keep {
            // SAFETY: `keep <= len`, so the tail lies inside the region.
            release(unsafe { ptr.add(keep) }, len - keep);
        }
    }

    // ANCHOR_END: os_unix

    // ANCHOR: os_linux
    /// Grows the mapping at `ptr` from `old` to `new` bytes without moving it.
    #[cfg(target_os = "linux")]
    pub fn extend_in_place(ptr: *mut u8, old: usize, new: usize) -> io::Result<()> {
        // SAFETY: `ptr, old` is one mapping we own; without MREMAP_MAYMOVE the
        // kernel either extends it where it is or changes nothing.
        let got = unsafe { libc::mremap(ptr.cast(), old, new, 0) };
        if got == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Grows the mapping at `ptr` to `new` bytes, moving its page tables to a
    /// new address if it must. The old address is invalid afterwards.
    #[cfg(target_os = "linux")]
    pub fn move_pages(ptr: *mut u8, old: usize, new: usize) -> io::Result<*mut u8> {
        // SAFETY: `ptr, old` is one mapping we own; the caller forgets `ptr`
        // once this succeeds. On failure the mapping is untouched.
        let got = unsafe { libc::mremap(ptr.cast(), old, new, libc::MREMAP_MAYMOVE) };
        if got == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(got.cast())
    }

    /// Moves the pages `[from, from + len)` to `to`, replacing whatever is
    /// mapped there (our own fresh reservation). Page tables move; bytes don't.
    #[cfg(target_os = "linux")]
    pub fn move_to(from: *mut u8, len: usize, to: *mut u8) -> io::Result<()> {
        let flags = libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED;
        // SAFETY: `from, len` is committed memory we own, `to, len` lies in a
        // reservation we own and nothing else uses.
        let got = unsafe { libc::mremap(from.cast(), len, len, flags, to) };
        if got == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    // ANCHOR_END: os_linux

    #[cfg(not(target_os = "linux"))]
    pub fn extend_in_place(_: *mut u8, _: usize, _: usize) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "no mremap on this OS",
        ))
    }

    #[cfg(not(target_os = "linux"))]
    pub fn move_pages(_: *mut u8, _: usize, _: usize) -> io::Result<*mut u8> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "no mremap on this OS",
        ))
    }

    #[cfg(not(target_os = "linux"))]
    pub fn move_to(_: *mut u8, _: usize, _: *mut u8) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "no mremap on this OS",
        ))
    }

    // ANCHOR: os_windows
    #[cfg(windows)]
    use windows_sys::Win32::System::Memory::{
        VirtualAlloc, VirtualFree, MEM_COMMIT, MEM_RELEASE, MEM_RESERVE, PAGE_NOACCESS,
        PAGE_READWRITE,
    };

    #[cfg(windows)]
    pub fn reserve(len: usize) -> io::Result<*mut u8> {
        // SAFETY: reserving fresh address space touches no existing memory.
        let ptr = unsafe { VirtualAlloc(std::ptr::null(), len, MEM_RESERVE, PAGE_NOACCESS) };
        if ptr.is_null() {
            return Err(io::Error::last_os_error());
        }
        Ok(ptr.cast())
    }

    #[cfg(windows)]
    pub fn map_rw(len: usize) -> io::Result<*mut u8> {
        let kind = MEM_RESERVE | MEM_COMMIT;
        // SAFETY: as for `reserve`; committed pages read as zero.
        let ptr = unsafe { VirtualAlloc(std::ptr::null(), len, kind, PAGE_READWRITE) };
        if ptr.is_null() {
            return Err(io::Error::last_os_error());
        }
        Ok(ptr.cast())
    }

    /// Windows charges committed pages against the commit limit here, so an
    /// out-of-memory shows at grow time, not at first touch.
    #[cfg(windows)]
    pub fn commit(ptr: *mut u8, len: usize) -> io::Result<()> {
        // SAFETY: the range lies inside a reservation we own.
        let got = unsafe { VirtualAlloc(ptr.cast(), len, MEM_COMMIT, PAGE_READWRITE) };
        if got.is_null() {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Windows frees a whole reservation at once: `len` must be its size.
    #[cfg(windows)]
    pub fn release(ptr: *mut u8, _len: usize) {
        // SAFETY: `ptr` is the base of a reservation we own; MEM_RELEASE with
        // size 0 frees exactly that one reservation.
        let ok = unsafe { VirtualFree(ptr.cast(), 0, MEM_RELEASE) };
        debug_assert_ne!(ok, 0, "VirtualFree: {}", io::Error::last_os_error());
    }

    #[cfg(windows)]
    pub fn release_tail(_: *mut u8, _: usize, _: usize) {
        unreachable!("move_to never succeeds on Windows")
    }
    // ANCHOR_END: os_windows
}
// ANCHOR_END: os

// ANCHOR: region
/// An OS mapping we own, released on drop. Failure paths just drop it.
struct Region {
    ptr: *mut u8,
    len: usize,
}

impl Region {
    const EMPTY: Region = Region {
        ptr: std::ptr::null_mut(),
        len: 0,
    };

    /// An empty region maps nothing: `mmap` rejects a length of 0.
    fn reserve(len: usize) -> io::Result<Region> {
        if len == 0 {
            return Ok(Region::EMPTY);
        }
        Ok(Region {
            ptr: os::reserve(len)?,
            len,
        })
    }

    fn map_rw(len: usize) -> io::Result<Region> {
        if len == 0 {
            return Ok(Region::EMPTY);
        }
        Ok(Region {
            ptr: os::map_rw(len)?,
            len,
        })
    }

    /// Gives up ownership without unmapping: the caller moved the pages away.
    fn forget(mut self) -> (*mut u8, usize) {
        let taken = (self.ptr, self.len);
        self.len = 0;
        taken
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

fn injected(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::OutOfMemory,
        format!("injected fault: {what}"),
    )
}

// ANCHOR: memory
/// A WebAssembly linear memory.
pub struct LinearMemory {
    /// The reservation (Reserved) or the exact mapping (Remap, Copy).
    region: Region,
    /// Current size in pages; `pages * WASM_PAGE` bytes are accessible.
    pages: u32,
    maximum: u32,
    strategy: Strategy,
    faults: Faults,
}

// SAFETY: the memory owns its mapping outright and hands out access only
// through `&self`/`&mut self`, like a `Vec<u8>`.
unsafe impl Send for LinearMemory {}
// SAFETY: `&self` methods only read.
unsafe impl Sync for LinearMemory {}

impl LinearMemory {
    /// A memory of `minimum` pages that may grow to `maximum` (at most 65536).
    pub fn new(minimum: u32, maximum: Option<u32>, strategy: Strategy) -> Result<Self, GrowError> {
        let maximum = maximum.unwrap_or(MAX_PAGES).min(MAX_PAGES);
        if minimum > maximum {
            return Err(GrowError::OverMaximum {
                requested: minimum.into(),
                maximum,
            });
        }
        let region = match strategy {
            Strategy::Reserved { reservation_pages } => {
                let pages = reservation_pages.unwrap_or(maximum).clamp(minimum, maximum);
                Region::reserve(bytes(pages)?)
            }
            Strategy::Remap | Strategy::Copy => Ok(Region::EMPTY),
        }
        .map_err(|e| GrowError::OutOfMemory {
            attempts: vec![(GrowPath::Allocated, e)],
        })?;
        let mut memory = LinearMemory {
            region,
            pages: 0,
            maximum,
            strategy,
            faults: Faults::default(),
        };
        memory.grow_traced(minimum)?;
        Ok(memory)
    }
    // ANCHOR_END: memory

    pub fn inject_faults(&mut self, faults: Faults) {
        self.faults = faults;
    }

    /// The size in pages (`memory.size`).
    pub fn size(&self) -> u32 {
        self.pages
    }

    pub fn byte_len(&self) -> usize {
        self.pages as usize * WASM_PAGE
    }

    pub fn maximum(&self) -> u32 {
        self.maximum
    }

    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    /// How many bytes of address space the memory holds (reserved or mapped).
    pub fn reserved_bytes(&self) -> usize {
        self.region.len
    }

    /// The base address. Any grow may change it, except a `Committed` one.
    pub fn as_ptr(&self) -> *const u8 {
        self.as_slice().as_ptr()
    }

    // ANCHOR: access
    pub fn as_slice(&self) -> &[u8] {
        let base = NonNull::new(self.region.ptr).unwrap_or(NonNull::dangling());
        // SAFETY: the first `byte_len()` bytes of the region are mapped
        // readable and writable (zero when empty, with a dangling but aligned
        // pointer), and `&self` keeps any grow from changing them meanwhile.
        unsafe { std::slice::from_raw_parts(base.as_ptr(), self.byte_len()) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        let base = NonNull::new(self.region.ptr).unwrap_or(NonNull::dangling());
        // SAFETY: as in `as_slice`, and `&mut self` makes the access unique.
        unsafe { std::slice::from_raw_parts_mut(base.as_ptr(), self.byte_len()) }
    }

    /// The bytes `[offset, offset + len)`, or an error if any lies outside.
    pub fn slice(&self, offset: u64, len: usize) -> Result<&[u8], OutOfBounds> {
        let range = self.checked_range(offset, len)?;
        Ok(&self.as_slice()[range])
    }

    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), OutOfBounds> {
        buf.copy_from_slice(self.slice(offset, buf.len())?);
        Ok(())
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
        let end = start.checked_add(len).ok_or(oob)?;
        if end > size {
            return Err(oob);
        }
        Ok(start..end)
    }
    // ANCHOR_END: access

    // ANCHOR: grow
    /// `memory.grow`: the old size in pages, or -1 with the memory unchanged.
    pub fn grow(&mut self, delta_pages: u32) -> i32 {
        match self.grow_traced(delta_pages) {
            // At most 65536, so it fits an i32.
            Ok((old_pages, _path)) => old_pages as i32,
            Err(_) => -1,
        }
    }

    /// `grow`, also saying which path it took, or why it failed.
    pub fn grow_traced(&mut self, delta_pages: u32) -> Result<(u32, GrowPath), GrowError> {
        let old_pages = self.pages;
        let new_pages = old_pages
            .checked_add(delta_pages)
            .filter(|&n| n <= self.maximum)
            .ok_or(GrowError::OverMaximum {
                requested: u64::from(old_pages) + u64::from(delta_pages),
                maximum: self.maximum,
            })?;
        if delta_pages == 0 {
            return Ok((old_pages, GrowPath::Unchanged));
        }
        let old_len = self.byte_len();
        let new_len = bytes(new_pages)?;

        // Try each path in order; a failure leaves the memory as it was and
        // falls through to the next.
        let mut attempts = Vec::new();
        for path in self.paths_for(new_len) {
            match self.try_path(path, old_len, new_len, new_pages) {
                Ok(()) => {
                    self.pages = new_pages;
                    return Ok((old_pages, path));
                }
                Err(e) => attempts.push((path, e)),
            }
        }
        Err(GrowError::OutOfMemory { attempts })
    }

    /// The paths to try, cheapest first; the copy fallback is always last.
    fn paths_for(&self, new_len: usize) -> Vec<GrowPath> {
        let fallback = if self.pages == 0 {
            GrowPath::Allocated
        } else {
            GrowPath::Copied
        };
        match self.strategy {
            Strategy::Reserved { .. } if new_len <= self.region.len => {
                vec![GrowPath::Committed, fallback]
            }
            // Only Linux can move pages into a new reservation; elsewhere, copy.
            Strategy::Reserved { .. } if cfg!(target_os = "linux") => {
                vec![GrowPath::Relocated, fallback]
            }
            Strategy::Reserved { .. } => vec![fallback],
            Strategy::Remap if self.pages > 0 => {
                vec![GrowPath::ExtendedInPlace, GrowPath::Moved, fallback]
            }
            Strategy::Remap | Strategy::Copy => vec![fallback],
        }
    }

    fn try_path(
        &mut self,
        path: GrowPath,
        old_len: usize,
        new_len: usize,
        new_pages: u32,
    ) -> io::Result<()> {
        let f = self.faults;
        match path {
            GrowPath::Committed if f.commit => Err(injected("commit")),
            GrowPath::Committed => self.commit(old_len, new_len),
            GrowPath::ExtendedInPlace if f.extend_in_place => Err(injected("extend in place")),
            GrowPath::ExtendedInPlace => {
                os::extend_in_place(self.region.ptr, old_len, new_len)?;
                self.region.len = new_len;
                Ok(())
            }
            GrowPath::Moved if f.move_pages => Err(injected("move pages")),
            GrowPath::Moved => {
                let ptr = os::move_pages(self.region.ptr, old_len, new_len)?;
                // The kernel moved the mapping: the old address is gone.
                let _ = std::mem::replace(&mut self.region, Region::EMPTY).forget();
                self.region = Region { ptr, len: new_len };
                Ok(())
            }
            GrowPath::Relocated if f.relocate => Err(injected("relocate")),
            GrowPath::Relocated => self.relocate(old_len, new_len, new_pages),
            GrowPath::Allocated | GrowPath::Copied if f.copy => Err(injected("copy")),
            GrowPath::Allocated | GrowPath::Copied => self.copy_to_new(old_len, new_len, new_pages),
            GrowPath::Unchanged => Ok(()),
        }
    }
    // ANCHOR_END: grow

    // ANCHOR: commit
    /// Reserved, within the reservation: make the delta accessible.
    fn commit(&mut self, old_len: usize, new_len: usize) -> io::Result<()> {
        // SAFETY: `old_len < new_len <= region.len`, so the delta lies inside
        // the reservation.
        let delta_start = unsafe { self.region.ptr.add(old_len) };
        os::commit(delta_start, new_len - old_len)
    }
    // ANCHOR_END: commit

    // ANCHOR: relocate
    /// Reserved, past the reservation: reserve a bigger one (at least double,
    /// at most the maximum), commit the delta there, then move the committed
    /// pages over with one `mremap(MREMAP_FIXED)`. Nothing is copied, and any
    /// failure before the move leaves the old region untouched.
    fn relocate(&mut self, old_len: usize, new_len: usize, new_pages: u32) -> io::Result<()> {
        let target = Region::reserve(self.next_reservation(new_pages)?)?;
        // SAFETY: `old_len < new_len <=` the new reservation's length.
        os::commit(unsafe { target.ptr.add(old_len) }, new_len - old_len)?;
        if old_len > 0 {
            os::move_to(self.region.ptr, old_len, target.ptr)?;
        }
        // The head of the old region now belongs to `target`; free the rest.
        let (old_ptr, old_region_len) = std::mem::replace(&mut self.region, target).forget();
        if old_len > 0 {
            os::release_tail(old_ptr, old_len, old_region_len);
        } else {
            os::release(old_ptr, old_region_len);
        }
        Ok(())
    }
    // ANCHOR_END: relocate

    // ANCHOR: copy
    /// The fallback: a new block of the new size, the old bytes copied in.
    /// Under `Reserved` the new block is a reservation again, sized as
    /// `relocate` would size it, so later grows commit in place.
    fn copy_to_new(&mut self, old_len: usize, new_len: usize, new_pages: u32) -> io::Result<()> {
        let target = match self.strategy {
            Strategy::Reserved { .. } => {
                let target = Region::reserve(self.next_reservation(new_pages)?)?;
                os::commit(target.ptr, new_len)?;
                target
            }
            Strategy::Remap | Strategy::Copy => Region::map_rw(new_len)?,
        };
        if old_len > 0 {
            // SAFETY: both ranges are mapped for at least `old_len` bytes and
            // are distinct mappings, so they cannot overlap.
            unsafe { std::ptr::copy_nonoverlapping(self.region.ptr, target.ptr, old_len) };
        }
        // Dropping the old region unmaps it.
        self.region = target;
        Ok(())
    }
    // ANCHOR_END: copy

    /// The reservation a Reserved memory moves to: the current one if
    /// `new_pages` fits, else double it (so relocations stay rare), at least
    /// `new_pages` and at most the maximum.
    fn next_reservation(&self, new_pages: u32) -> io::Result<usize> {
        let current = (self.region.len / WASM_PAGE) as u32;
        let pages = if new_pages <= current {
            current
        } else {
            current.saturating_mul(2).clamp(new_pages, self.maximum)
        };
        bytes(pages).map_err(io::Error::other)
    }
}

/// `pages * 64 KiB`, or an error where that does not fit `usize` (32-bit).
fn bytes(pages: u32) -> Result<usize, GrowError> {
    (pages as usize)
        .checked_mul(WASM_PAGE)
        .ok_or(GrowError::AddressSpace { pages })
}

// ANCHOR: demo
struct Options {
    pages: u32,
    reservation_pages: u32,
    copy_pages: u32,
}

fn parse_args(args: &[String]) -> Result<Options, String> {
    let mut options = Options {
        pages: 4096,
        reservation_pages: 16,
        copy_pages: 256,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let slot = match flag.as_str() {
            "--pages" => &mut options.pages,
            "--reservation-pages" => &mut options.reservation_pages,
            "--copy-pages" => &mut options.copy_pages,
            other => return Err(format!("unknown argument `{other}`")),
        };
        let value = it.next().ok_or(format!("{flag} needs a number of pages"))?;
        *slot = match value.parse::<u32>() {
            Ok(n) if (1..=MAX_PAGES).contains(&n) => n,
            _ => return Err(format!("{flag} takes 1..={MAX_PAGES} pages, got `{value}`")),
        };
    }
    Ok(options)
}

// ANCHOR: workload
/// The workload every strategy is measured on: grow one page at a time up to
/// `pages`, touching the last byte after each grow (so each grow pays its
/// page fault). Returns how many grows took each path.
pub fn grow_page_by_page(
    memory: &mut LinearMemory,
    pages: u32,
) -> Result<BTreeMap<GrowPath, u32>, GrowError> {
    let mut paths = BTreeMap::new();
    while memory.size() < pages {
        let (_, path) = memory.grow_traced(1)?;
        *paths.entry(path).or_insert(0) += 1;
        let last = memory.byte_len() - 1;
        memory.as_mut_slice()[last] = 1;
    }
    Ok(paths)
}

/// The physical floor of the same workload: a raw reservation, one commit
/// call and one page fault per grow, and nothing else. Every strategy is
/// reported as a ratio to this, measured in the same run.
pub struct Floor {
    region: Region,
}

impl Floor {
    /// Reserves `pages` and commits the first, as `LinearMemory::new(1, ..)` does.
    pub fn new(pages: u32) -> io::Result<Floor> {
        let region = Region::reserve(bytes(pages).map_err(io::Error::other)?)?;
        os::commit(region.ptr, WASM_PAGE)?;
        Ok(Floor { region })
    }

    pub fn grow_page_by_page(&mut self, pages: u32) -> io::Result<()> {
        for page in 1..pages as usize {
            // SAFETY: `page < pages`, so the page lies inside the reservation.
            let start = unsafe { self.region.ptr.add(page * WASM_PAGE) };
            os::commit(start, WASM_PAGE)?;
            // SAFETY: the page was just committed; its last byte is ours.
            unsafe { start.add(WASM_PAGE - 1).write_volatile(1) };
        }
        Ok(())
    }
}
// ANCHOR_END: workload

fn timed<T, E>(run: impl FnOnce() -> Result<T, E>, grows: u32) -> Result<(T, f64), E> {
    let started = Instant::now();
    let out = run()?;
    Ok((
        out,
        started.elapsed().as_secs_f64() * 1e6 / f64::from(grows.max(1)),
    ))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let options = match parse_args(&args) {
        Ok(options) => options,
        Err(e) => {
            eprintln!("linear_memory: {e}");
            eprintln!("usage: linear_memory [--pages N] [--reservation-pages R] [--copy-pages C]");
            std::process::exit(2);
        }
    };
    let pages = options.pages;
    let floor =
        Floor::new(pages).and_then(|mut floor| timed(|| floor.grow_page_by_page(pages), pages - 1));
    match floor {
        Ok(((), us)) => println!(
            "{:<17} 1 -> {pages:>5} pages: {us:>8.2} µs/grow",
            "floor (raw)"
        ),
        Err(e) => {
            eprintln!("linear_memory: the floor could not grow to {pages} pages: {e}");
            std::process::exit(1);
        }
    }
    let runs = [
        (
            "reserved (4 GiB)",
            Strategy::Reserved {
                reservation_pages: None,
            },
            pages,
        ),
        (
            "reserved (small)",
            Strategy::Reserved {
                reservation_pages: Some(options.reservation_pages),
            },
            pages,
        ),
        ("remap", Strategy::Remap, pages),
        ("copy", Strategy::Copy, options.copy_pages.min(pages)),
    ];
    for (name, strategy, pages) in runs {
        let run = LinearMemory::new(1, None, strategy)
            .and_then(|mut memory| timed(|| grow_page_by_page(&mut memory, pages), pages - 1));
        match run {
            Ok((paths, us)) => {
                println!("{name:<17} 1 -> {pages:>5} pages: {us:>8.2} µs/grow  {paths:?}")
            }
            Err(e) => {
                eprintln!("linear_memory: {name}: growing to {pages} pages failed: {e}");
                std::process::exit(1);
            }
        }
    }
}
// ANCHOR_END: demo

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Strategy; 4] = [
        Strategy::Reserved {
            reservation_pages: None,
        },
        Strategy::Reserved {
            reservation_pages: Some(2),
        },
        Strategy::Remap,
        Strategy::Copy,
    ];

    fn filled(strategy: Strategy, pages: u32) -> LinearMemory {
        let mut m = LinearMemory::new(pages, Some(64), strategy).expect("memory");
        for (i, b) in m.as_mut_slice().iter_mut().enumerate() {
            *b = (i % 251) as u8;
        }
        m
    }

    fn assert_pattern(m: &LinearMemory, len: usize) {
        let ok = m.as_slice()[..len]
            .iter()
            .enumerate()
            .all(|(i, &b)| b == (i % 251) as u8);
        assert!(ok, "the first {len} bytes changed");
    }

    #[test]
    fn grow_returns_the_old_size_and_zeroes_new_pages() {
        for strategy in ALL {
            let mut m = filled(strategy, 1);
            assert_eq!(m.grow(3), 1, "{strategy:?}");
            assert_eq!(m.size(), 4);
            assert_pattern(&m, WASM_PAGE);
            assert!(
                m.as_slice()[WASM_PAGE..].iter().all(|&b| b == 0),
                "{strategy:?}"
            );
            assert_eq!(m.grow(0), 4);
        }
    }

    #[test]
    fn growing_past_the_maximum_returns_minus_one_and_changes_nothing() {
        for strategy in ALL {
            let mut m = filled(strategy, 2);
            let ptr = m.as_ptr();
            assert_eq!(m.grow(63), -1, "{strategy:?}");
            assert_eq!(m.grow(u32::MAX), -1, "{strategy:?}: u32 overflow");
            assert_eq!((m.size(), m.as_ptr()), (2, ptr));
            assert_pattern(&m, 2 * WASM_PAGE);
            assert_eq!(m.grow(62), 2, "{strategy:?}: up to the maximum works");
        }
    }

    #[test]
    fn the_maximum_is_never_above_65536_pages() {
        let m = LinearMemory::new(0, Some(u32::MAX), Strategy::Copy).expect("memory");
        assert_eq!(m.maximum(), MAX_PAGES);
        assert!(LinearMemory::new(5, Some(4), Strategy::Copy).is_err());
    }

    #[test]
    fn out_of_bounds_access_is_an_error() {
        let mut m = LinearMemory::new(1, Some(2), Strategy::Remap).expect("memory");
        let mut buf = [0u8; 8];
        assert!(m.read(WASM_PAGE as u64 - 8, &mut buf).is_ok());
        let err = m.read(WASM_PAGE as u64 - 7, &mut buf).unwrap_err();
        assert_eq!(
            err,
            OutOfBounds {
                offset: WASM_PAGE as u64 - 7,
                len: 8,
                size: WASM_PAGE
            }
        );
        assert!(m.write(u64::MAX, &[1]).is_err());
        assert!(m.slice(1, usize::MAX).is_err(), "offset + len overflows");
        let empty = LinearMemory::new(0, Some(1), Strategy::Copy).expect("memory");
        assert!(empty.slice(0, 1).is_err());
        assert_eq!(empty.slice(0, 0).map(<[u8]>::len), Ok(0));
    }

    #[test]
    fn reserved_commits_in_place_and_the_base_never_moves() {
        let mut m = filled(
            Strategy::Reserved {
                reservation_pages: None,
            },
            1,
        );
        let base = m.as_ptr();
        for _ in 0..63 {
            assert_eq!(
                m.grow_traced(1).map(|g| g.1).ok(),
                Some(GrowPath::Committed)
            );
            assert_eq!(m.as_ptr(), base);
        }
        assert_pattern(&m, WASM_PAGE);
    }

    #[test]
    fn an_exhausted_reservation_relocates_without_changing_a_byte() {
        let mut m = filled(
            Strategy::Reserved {
                reservation_pages: Some(2),
            },
            2,
        );
        let before = m.as_ptr();
        let path = m.grow_traced(1).map(|g| g.1).expect("grow");
        if cfg!(target_os = "linux") {
            assert_eq!(path, GrowPath::Relocated);
        } else {
            assert_eq!(path, GrowPath::Copied);
        }
        assert_ne!(m.as_ptr(), before, "the pages moved to a new reservation");
        assert_eq!(m.reserved_bytes(), 4 * WASM_PAGE, "the reservation doubled");
        assert_pattern(&m, 2 * WASM_PAGE);
        assert_eq!(
            m.grow_traced(1).map(|g| g.1).ok(),
            Some(GrowPath::Committed)
        );
    }

    /// Each injected failure must fall through to the next path, and when
    /// every path fails, `grow` must return -1 with nothing changed.
    #[test]
    fn every_fallback_runs_when_the_path_before_it_fails() {
        let cases: [(Strategy, Faults, Option<GrowPath>); 7] = [
            (
                Strategy::Reserved {
                    reservation_pages: None,
                },
                Faults {
                    commit: true,
                    ..Faults::default()
                },
                Some(GrowPath::Copied),
            ),
            (
                Strategy::Reserved {
                    reservation_pages: None,
                },
                Faults {
                    commit: true,
                    copy: true,
                    ..Faults::default()
                },
                None,
            ),
            (
                Strategy::Reserved {
                    reservation_pages: Some(2),
                },
                Faults {
                    relocate: true,
                    ..Faults::default()
                },
                Some(GrowPath::Copied),
            ),
            (
                Strategy::Reserved {
                    reservation_pages: Some(2),
                },
                Faults {
                    relocate: true,
                    copy: true,
                    ..Faults::default()
                },
                None,
            ),
            (
                Strategy::Remap,
                Faults {
                    extend_in_place: true,
                    move_pages: true,
                    ..Faults::default()
                },
                Some(GrowPath::Copied),
            ),
            (
                Strategy::Remap,
                Faults {
                    extend_in_place: true,
                    move_pages: true,
                    copy: true,
                    ..Faults::default()
                },
                None,
            ),
            (
                Strategy::Copy,
                Faults {
                    copy: true,
                    ..Faults::default()
                },
                None,
            ),
        ];
        for (strategy, faults, want) in cases {
            let mut m = filled(strategy, 2);
            let ptr = m.as_ptr();
            m.inject_faults(faults);
            match want {
                Some(path) => {
                    assert_eq!(
                        m.grow_traced(1).map(|g| g.1).ok(),
                        Some(path),
                        "{strategy:?} {faults:?}"
                    );
                    assert_eq!(m.size(), 3);
                }
                None => {
                    assert_eq!(m.grow(1), -1, "{strategy:?} {faults:?}");
                    assert_eq!((m.size(), m.as_ptr()), (2, ptr), "{strategy:?} unchanged");
                }
            }
            assert_pattern(&m, 2 * WASM_PAGE);
        }
    }

    #[cfg(target_os = "linux")]
    mod linux {
        use super::*;

        /// Maps one page at exactly `at`, failing rather than replacing
        /// anything already there (MAP_FIXED_NOREPLACE, Linux 4.17).
        fn map_fixed(at: *mut u8, len: usize) -> Option<*mut u8> {
            let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE;
            // SAFETY: NOREPLACE never touches an existing mapping.
            let got = unsafe { libc::mmap(at.cast(), len, libc::PROT_READ, flags, -1, 0) };
            (got == at.cast()).then_some(at)
        }

        #[test]
        fn remap_moves_when_the_next_range_is_taken() {
            let mut m = filled(Strategy::Remap, 2);
            let end = m.as_ptr().wrapping_add(m.byte_len()) as *mut u8;
            // If something is mapped there already, it blocks just as well.
            let blocker = map_fixed(end, 4096);
            let before = m.as_ptr();
            assert_eq!(m.grow_traced(1).map(|g| g.1).ok(), Some(GrowPath::Moved));
            assert_ne!(m.as_ptr(), before);
            assert_pattern(&m, 2 * WASM_PAGE);
            if let Some(b) = blocker {
                // SAFETY: we mapped this page above and nothing uses it.
                unsafe { libc::munmap(b.cast(), 4096) };
            }
        }

        /// Runs the test `name` of this module again, alone, in a child
        /// process, where no other test thread maps memory meanwhile.
        /// Returns true in the parent (the child has passed), false in the
        /// child, which goes on to run the test's body.
        fn rerun_alone(name: &str) -> bool {
            if std::env::var_os("DMB_ALONE").is_some() {
                return false;
            }
            // libtest names tests by module path without the crate name.
            let module = module_path!().split_once("::").map_or("", |(_, rest)| rest);
            let exe = std::env::current_exe().expect("the test binary");
            let out = std::process::Command::new(exe)
                .args([&format!("{module}::{name}"), "--exact", "--test-threads=1"])
                .env("DMB_ALONE", "1")
                .output()
                .expect("run the test alone");
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && text.contains("1 passed"),
                "{name} alone:\n{text}"
            );
            true
        }

        #[test]
        fn remap_extends_in_place_when_the_next_range_is_free() {
            if rerun_alone("remap_extends_in_place_when_the_next_range_is_free") {
                return;
            }
            // The kernel places new mappings top-down, right below the last
            // one, so the range after a fresh memory is usually taken. Make
            // it free: map a scratch region, let the memory land right below
            // it, unmap the scratch, then grow into the hole.
            for _attempt in 0..10 {
                let scratch = Region::reserve(4 * WASM_PAGE).expect("scratch");
                let mut m = filled(Strategy::Remap, 1);
                let end = m.as_ptr().wrapping_add(m.byte_len());
                if end != scratch.ptr.cast_const() {
                    continue; // placed elsewhere: try again
                }
                drop(scratch);
                // Another test thread may map into the hole meanwhile; then
                // this grow moves instead, and we try again.
                match m.grow_traced(1).map(|g| g.1) {
                    Ok(GrowPath::ExtendedInPlace) => {
                        assert_pattern(&m, WASM_PAGE);
                        return;
                    }
                    Ok(GrowPath::Moved) => continue,
                    other => panic!("unexpected {other:?}"),
                }
            }
            panic!("mremap never extended in place in 10 tries");
        }
    }
}
