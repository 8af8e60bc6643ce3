//! A WebAssembly-style memory kept in a file: it grows, and it survives a restart.
//!
//! `grow` extends the file with `File::set_len`, then the mapping with
//! memmap2's `MmapMut::remap` (Linux's `mremap`). The file starts with a
//! header page that carries `MAGIC`, so the memory never takes over a file it
//! did not create: any other file is refused and left exactly as it was.
//!
//! - Explained in: "File-backed memory that grows" (src/part1-file-backed.md)
//! - Run: `cargo run --example file_backed_memory -- --path /tmp/mem.bin --grow 2`
//! - Tested by: `cargo test --test file_backed_memory`
//! - Depends on: std, memmap2 0.9

// `mdbook test` passes no `--extern`, so the crate is named here.
extern crate memmap2;

use memmap2::{MmapMut, MmapOptions};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

// ANCHOR: types
pub const WASM_PAGE: usize = 64 * 1024;
pub const MAX_PAGES: u32 = 65536;
/// The first bytes of every file this memory creates.
pub const MAGIC: [u8; 8] = *b"DMBMEM01";
/// The header: one page, so the memory's pages start page-aligned in the
/// file (mmap offsets must be; on Windows, to 64 KiB).
pub const HEADER: u64 = WASM_PAGE as u64;

/// How a grow got its new pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileGrowPath {
    Unchanged,
    /// The first pages: a new mapping.
    Mapped,
    /// `mremap` extended the mapping where it was.
    ExtendedInPlace,
    /// `mremap(MREMAP_MAYMOVE)` moved the page tables; no bytes copied.
    Moved,
    /// No `mremap` on this OS: unmapped and mapped again (also no copy: the
    /// bytes live in the page cache, not in the mapping).
    Remapped,
}

pub struct FileBackedMemory {
    file: File,
    /// `None` while the memory has no pages: a mapping cannot be empty.
    map: Option<MmapMut>,
    pages: u32,
    maximum: u32,
}
// ANCHOR_END: types

impl FileBackedMemory {
    // ANCHOR: open
    /// Opens the memory file at `path`, or creates it, with at least
    /// `minimum` pages. An existing file must be one this memory created
    /// (header, whole pages, at most `maximum`); any other is refused and
    /// left untouched.
    pub fn open(path: &Path, minimum: u32, maximum: Option<u32>) -> io::Result<Self> {
        let maximum = maximum.unwrap_or(MAX_PAGES).min(MAX_PAGES);
        let (file, found) = match create_new(path) {
            Ok(file) => (file, 0),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => open_ours(path, maximum)?,
            Err(e) => return Err(with_path(e, "create", path)),
        };
        let mut memory = FileBackedMemory {
            file,
            map: None,
            pages: 0,
            maximum,
        };
        memory.map_pages(found)?;
        if found < minimum && memory.grow_traced(minimum - found).is_err() {
            let what = format!("cannot grow to the minimum of {minimum} pages");
            return Err(with_path(io::Error::other(what), "grow", path));
        }
        Ok(memory)
    }
    // ANCHOR_END: open

    fn map_pages(&mut self, pages: u32) -> io::Result<()> {
        self.map = None;
        if pages > 0 {
            let len = bytes(pages)?;
            // SAFETY: the mapping is shared with the file; we own the file
            // handle, and the book's rule is that no other process truncates
            // it while mapped (that would turn accesses into SIGBUS). The
            // file holds HEADER + len bytes: `open` checked or wrote them.
            let map = unsafe {
                MmapOptions::new()
                    .offset(HEADER)
                    .len(len)
                    .map_mut(&self.file)?
            };
            self.map = Some(map);
        }
        self.pages = pages;
        Ok(())
    }

    pub fn size(&self) -> u32 {
        self.pages
    }

    pub fn as_slice(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        self.map.as_deref_mut().unwrap_or(&mut [])
    }

    /// Writes dirty pages to the file (`msync`).
    pub fn flush(&self) -> io::Result<()> {
        self.map.as_ref().map_or(Ok(()), MmapMut::flush)
    }

    // ANCHOR: grow
    /// `memory.grow`: the old size in pages, or -1 with memory and file unchanged.
    pub fn grow(&mut self, delta: u32) -> i32 {
        match self.grow_traced(delta) {
            Ok((old, _)) => old as i32,
            Err(_) => -1,
        }
    }

    pub fn grow_traced(&mut self, delta: u32) -> io::Result<(u32, FileGrowPath)> {
        let (old, maximum) = (self.pages, self.maximum);
        let new = old
            .checked_add(delta)
            .filter(|&n| n <= maximum)
            .ok_or_else(|| {
                io::Error::other(format!(
                    "{old} + {delta} pages passes the maximum of {maximum}"
                ))
            })?;
        if delta == 0 {
            return Ok((old, FileGrowPath::Unchanged));
        }
        let new_len = bytes(new)?;
        // The new bytes read as zero: extending a file fills it with zeros
        // (and on most filesystems stores nothing until written).
        self.file.set_len(HEADER + new_len as u64)?;
        match self.remap(new_len) {
            Ok(path) => {
                self.pages = new;
                Ok((old, path))
            }
            Err(e) => {
                // Undo the extension so the file is unchanged too. If even
                // that fails, the extra zero pages are harmless: the next
                // open sees a larger memory, never lost data.
                let _ = self.file.set_len(HEADER + bytes(old)? as u64);
                Err(e)
            }
        }
    }
    // ANCHOR_END: grow

    // ANCHOR: remap
    #[cfg(target_os = "linux")]
    fn remap(&mut self, new_len: usize) -> io::Result<FileGrowPath> {
        let Some(map) = self.map.as_mut() else {
            self.map_pages((new_len / WASM_PAGE) as u32)?;
            return Ok(FileGrowPath::Mapped);
        };
        let before = map.as_ptr();
        // SAFETY: `&mut self` means no slice of the mapping is alive, so a
        // move cannot leave a dangling reference; the file is already long
        // enough for `new_len`.
        unsafe { map.remap(new_len, memmap2::RemapOptions::new().may_move(true))? };
        Ok(if map.as_ptr() == before {
            FileGrowPath::ExtendedInPlace
        } else {
            FileGrowPath::Moved
        })
    }

    /// Elsewhere: unmap, then map the longer file again.
    #[cfg(not(target_os = "linux"))]
    fn remap(&mut self, new_len: usize) -> io::Result<FileGrowPath> {
        let had_pages = self.map.is_some();
        if let Some(map) = self.map.as_ref() {
            map.flush()?;
        }
        let old_pages = self.pages;
        if let Err(e) = self.map_pages((new_len / WASM_PAGE) as u32) {
            // Map the old size again so the memory stays usable.
            self.map_pages(old_pages)?;
            return Err(e);
        }
        Ok(if had_pages {
            FileGrowPath::Remapped
        } else {
            FileGrowPath::Mapped
        })
    }
    // ANCHOR_END: remap
}

// ANCHOR: create_new
/// Creates the file only if it does not exist yet, and writes the header.
/// `create_new` is atomic: no other file can be taken over by a race.
fn create_new(path: &Path) -> io::Result<File> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)?;
    let written = file.write_all(&MAGIC).and_then(|()| file.set_len(HEADER));
    if let Err(e) = written {
        let _ = std::fs::remove_file(path); // ours: we just created it
        return Err(with_path(e, "write the header of", path));
    }
    Ok(file)
}

// ANCHOR_END: create_new

// ANCHOR: open_ours
/// Opens an existing file, only if it is a memory file: the header, then
/// whole pages, at most `maximum`. Reads only; a refused file is unchanged.
fn open_ours(path: &Path, maximum: u32) -> io::Result<(File, u32)> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| with_path(e, "open", path))?;
    let len = file
        .metadata()
        .map_err(|e| with_path(e, "stat", path))?
        .len();
    let mut magic = [0u8; MAGIC.len()];
    let ours = len >= HEADER && file.read_exact(&mut magic).is_ok() && magic == MAGIC;
    let pages = len.saturating_sub(HEADER) / WASM_PAGE as u64;
    let why = if !ours {
        "it is not a memory file this program created".to_owned()
    } else if !(len - HEADER).is_multiple_of(WASM_PAGE as u64) || pages > u64::from(maximum) {
        format!("{len} bytes is not a header and whole pages up to {maximum}")
    } else {
        return Ok((file, pages as u32));
    };
    let refused = io::Error::new(io::ErrorKind::InvalidData, why);
    Err(with_path(refused, "refusing to use", path))
}
// ANCHOR_END: open_ours

/// `pages * 64 KiB`, or an error where that does not fit `usize` (on 32-bit
/// targets 65536 pages would wrap to 0, and `set_len` would cut the file).
fn bytes(pages: u32) -> io::Result<usize> {
    (pages as usize)
        .checked_mul(WASM_PAGE)
        .ok_or_else(|| io::Error::other(format!("{pages} pages do not fit this address space")))
}

fn with_path(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

// ANCHOR: restart
/// Opens the memory, counts this run in its first 8 bytes, grows it, writes
/// a marker into the first new page, and closes it; then reopens the file,
/// as a restarted program would, and checks that both are there.
fn run(path: &Path, grow: u32) -> io::Result<()> {
    let mut memory = FileBackedMemory::open(path, 1, None)?;
    let runs = u64::from_le_bytes(memory.as_slice()[..8].try_into().expect("8 bytes")) + 1;
    memory.as_mut_slice()[..8].copy_from_slice(&runs.to_le_bytes());
    let (old, how) = memory.grow_traced(grow)?;
    let marker = format!("written by run {runs}");
    let at = old as usize * WASM_PAGE;
    memory.as_mut_slice()[at..at + marker.len()].copy_from_slice(marker.as_bytes());
    memory.flush()?;
    println!(
        "run {runs}: grew {old} -> {} pages ({how:?})",
        memory.size()
    );
    drop(memory);

    let reopened = FileBackedMemory::open(path, 1, None)?;
    let found = &reopened.as_slice()[at..at + marker.len()];
    if found != marker.as_bytes() || reopened.size() != old + grow {
        return Err(io::Error::other("the reopened file lost data"));
    }
    let pages = reopened.size();
    println!("reopened: {pages} pages, run counter {runs}, marker at page {old} intact");
    Ok(())
}
// ANCHOR_END: restart

const USAGE: &str = "\
usage: file_backed_memory [--path FILE] [--grow N]
  --path FILE   the memory's file: created if missing; an existing file must be
                one this program created, any other is refused unchanged
                (default: a scratch file in the temp folder, removed at the end)
  --grow N      pages to grow by each run (1..=1024, default 1)";

fn main() {
    let mut args = Args::parse("file_backed_memory", USAGE);
    let path = args.text("--path").map(PathBuf::from);
    let grow = args.number("--grow", 1, 1..=1024) as u32;
    args.finish();
    // Each process gets its own scratch file unless told otherwise, so
    // parallel runs of this example never share one.
    let scratch =
        std::env::temp_dir().join(format!("file_backed_memory-{}.bin", std::process::id()));
    let result = run(path.as_deref().unwrap_or(&scratch), grow);
    if path.is_none() {
        let _ = std::fs::remove_file(&scratch);
    }
    if let Err(e) = result {
        eprintln!("file_backed_memory: {e}");
        std::process::exit(1);
    }
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
