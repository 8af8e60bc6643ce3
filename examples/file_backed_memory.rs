//! A WebAssembly-style memory backed by a file: `grow` extends the file with
//! `File::set_len` and the mapping with memmap2's `MmapMut::remap` (Linux's
//! `mremap`), moving it only if it must. Everything written survives closing
//! and reopening the file.
//!
//! `cargo run --example file_backed_memory -- --path /tmp/mem.bin --grow 2`
//! (run it twice: the second run finds the first run's pages and counter).

extern crate memmap2;

use memmap2::{MmapMut, MmapOptions};
use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

// ANCHOR: types
pub const WASM_PAGE: usize = 64 * 1024;
pub const MAX_PAGES: u32 = 65536;

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
    /// Opens (or creates) the file at `path` as a memory of at least
    /// `minimum` pages. An existing file keeps its size and contents.
    pub fn open(path: &Path, minimum: u32, maximum: Option<u32>) -> io::Result<Self> {
        let maximum = maximum.unwrap_or(MAX_PAGES).min(MAX_PAGES);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| with_path(e, "open", path))?;
        let len = file
            .metadata()
            .map_err(|e| with_path(e, "stat", path))?
            .len();
        if len % WASM_PAGE as u64 != 0 || len / WASM_PAGE as u64 > u64::from(maximum) {
            let what = format!("{len} bytes is not a whole number of pages up to {maximum}");
            return Err(with_path(
                io::Error::new(io::ErrorKind::InvalidData, what),
                "open",
                path,
            ));
        }
        let mut memory = FileBackedMemory {
            file,
            map: None,
            pages: 0,
            maximum,
        };
        let found = (len / WASM_PAGE as u64) as u32;
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
            // it while mapped (that would turn accesses into SIGBUS).
            self.map = Some(unsafe { MmapOptions::new().len(len).map_mut(&self.file)? });
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
        let old = self.pages;
        let new = old
            .checked_add(delta)
            .filter(|&n| n <= self.maximum)
            .ok_or_else(|| {
                io::Error::other(format!(
                    "{old} + {delta} pages passes the maximum of {}",
                    self.maximum
                ))
            })?;
        if delta == 0 {
            return Ok((old, FileGrowPath::Unchanged));
        }
        let (old_len, new_len) = (bytes(old)?, bytes(new)?);
        // The new bytes read as zero: extending a file fills it with zeros
        // (and on most filesystems stores nothing until written).
        self.file.set_len(new_len as u64)?;
        match self.remap(new_len) {
            Ok(path) => {
                self.pages = new;
                Ok((old, path))
            }
            Err(e) => {
                // Undo the extension so the file is unchanged too. If even
                // that fails, the extra zero pages are harmless: the next
                // open sees a larger memory, never lost data.
                let _ = self.file.set_len(old_len as u64);
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

/// `pages * 64 KiB`, or an error where that does not fit `usize` (on 32-bit
/// targets 65536 pages would wrap to 0, and `set_len(0)` would empty the file).
fn bytes(pages: u32) -> io::Result<usize> {
    (pages as usize)
        .checked_mul(WASM_PAGE)
        .ok_or_else(|| io::Error::other(format!("{pages} pages do not fit this address space")))
}

fn with_path(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

// ANCHOR: main
struct Options {
    /// `None`: a fresh file in the temp folder, removed at the end.
    path: Option<PathBuf>,
    grow: u32,
}

fn parse_args(args: &[String]) -> Result<Options, String> {
    let mut options = Options {
        path: None,
        grow: 1,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--path" => options.path = Some(PathBuf::from(value)),
            "--grow" => {
                options.grow = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=1024).contains(n))
                    .ok_or(format!("--grow takes 1..=1024 pages, got `{value}`"))?
            }
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(options)
}

/// Open, count this run, grow, write a marker into the new pages, close;
/// then reopen, as a restart would, and check that everything is there.
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
        "run {runs}: {} grew {old} -> {} pages ({how:?})",
        path.display(),
        memory.size()
    );
    drop(memory);

    let reopened = FileBackedMemory::open(path, 1, None)?;
    let found = &reopened.as_slice()[at..at + marker.len()];
    if found != marker.as_bytes() || reopened.size() != old + grow {
        return Err(io::Error::other("the reopened file lost data"));
    }
    println!(
        "reopened: {} pages, run counter {runs}, marker at page {old} intact",
        reopened.size()
    );
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let options = parse_args(&args).unwrap_or_else(|e| {
        eprintln!(
            "file_backed_memory: {e}\nusage: file_backed_memory [--path FILE] [--grow PAGES]"
        );
        std::process::exit(2);
    });
    // Each process gets its own scratch file unless told otherwise, so
    // parallel test runs of this example never share one.
    let scratch =
        std::env::temp_dir().join(format!("file_backed_memory-{}.bin", std::process::id()));
    let path = options.path.clone().unwrap_or_else(|| scratch.clone());
    let result = run(&path, options.grow);
    if options.path.is_none() {
        let _ = std::fs::remove_file(&scratch);
    }
    if let Err(e) = result {
        eprintln!("file_backed_memory: {e}");
        std::process::exit(1);
    }
}
// ANCHOR_END: main

#[cfg(test)]
mod tests {
    use super::*;

    struct TempFile(PathBuf);

    impl TempFile {
        fn new(name: &str) -> TempFile {
            let path = std::env::temp_dir().join(format!("fbm-test-{}-{name}", std::process::id()));
            let _ = std::fs::remove_file(&path);
            TempFile(path)
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[test]
    fn grown_pages_are_zero_and_everything_survives_a_reopen() {
        let file = TempFile::new("reopen");
        let mut m = FileBackedMemory::open(&file.0, 1, Some(8)).expect("open");
        m.as_mut_slice()[..5].copy_from_slice(b"hello");
        assert_eq!(m.grow(3), 1);
        assert!(m.as_slice()[WASM_PAGE..].iter().all(|&b| b == 0));
        m.as_mut_slice()[4 * WASM_PAGE - 1] = 9;
        drop(m);
        let m = FileBackedMemory::open(&file.0, 1, Some(8)).expect("reopen");
        assert_eq!(m.size(), 4);
        assert_eq!(&m.as_slice()[..5], b"hello");
        assert_eq!(m.as_slice()[4 * WASM_PAGE - 1], 9);
    }

    #[test]
    fn growing_past_the_maximum_changes_neither_memory_nor_file() {
        let file = TempFile::new("max");
        let mut m = FileBackedMemory::open(&file.0, 2, Some(3)).expect("open");
        m.as_mut_slice()[0] = 1;
        assert_eq!(m.grow(2), -1);
        assert_eq!(m.grow(u32::MAX), -1);
        assert_eq!(m.size(), 2);
        let len = std::fs::metadata(&file.0).expect("stat").len();
        assert_eq!(len, 2 * WASM_PAGE as u64);
        assert_eq!(m.grow(1), 2);
    }

    #[test]
    fn a_file_that_is_not_whole_pages_is_refused() {
        let file = TempFile::new("ragged");
        std::fs::write(&file.0, [0u8; 100]).expect("write");
        let err = FileBackedMemory::open(&file.0, 1, None)
            .err()
            .expect("an error");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(
            err.to_string().contains(&file.0.display().to_string()),
            "{err}"
        );
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn each_grow_reports_how_the_mapping_grew() {
        let file = TempFile::new("paths");
        let mut m = FileBackedMemory::open(&file.0, 0, None).expect("open");
        assert_eq!(m.grow_traced(1).expect("grow").1, FileGrowPath::Mapped);
        for page in 1..65 {
            m.as_mut_slice()[page * WASM_PAGE - 1] = page as u8;
            let path = m.grow_traced(1).expect("grow").1;
            assert!(
                matches!(path, FileGrowPath::ExtendedInPlace | FileGrowPath::Moved),
                "{path:?}"
            );
        }
        for page in 1..65 {
            assert_eq!(
                m.as_slice()[page * WASM_PAGE - 1],
                page as u8,
                "page {page} after moves"
            );
        }
        assert_eq!(m.size(), 65);
        assert_eq!(m.grow_traced(0).expect("grow").1, FileGrowPath::Unchanged);
    }

    /// Failures from the OS, for real, in a child process (the limits stay
    /// there): the file may not grow (RLIMIT_FSIZE: set_len fails), or the
    /// mapping may not (RLIMIT_AS: mremap fails after set_len succeeded, so
    /// the file must be shrunk back). Either way: -1, nothing changed.
    #[test]
    #[cfg(target_os = "linux")]
    fn os_failures_return_minus_one_and_change_nothing() {
        const NAME: &str = "tests::os_failures_return_minus_one_and_change_nothing";
        if std::env::var_os("DMB_CHILD").is_none() {
            let exe = std::env::current_exe().expect("test binary");
            let out = std::process::Command::new(exe)
                .args([NAME, "--exact", "--nocapture", "--test-threads=1"])
                .env("DMB_CHILD", "1")
                .output()
                .expect("run the child");
            let text = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.success() && text.contains("both limits refused"),
                "{text}"
            );
            return;
        }
        let file = TempFile::new("limits");
        let mut m = FileBackedMemory::open(&file.0, 1, None).expect("open");
        m.as_mut_slice()[..4].copy_from_slice(b"keep");
        let limit = |resource, bytes: u64| {
            let rl = libc::rlimit {
                rlim_cur: bytes,
                rlim_max: libc::RLIM_INFINITY,
            };
            // SAFETY: a plain system call on a struct we own.
            assert_eq!(unsafe { libc::setrlimit(resource, &rl) }, 0);
        };
        let unchanged = |m: &FileBackedMemory| {
            assert_eq!(m.size(), 1);
            assert_eq!(&m.as_slice()[..4], b"keep");
            assert_eq!(
                std::fs::metadata(&file.0).expect("stat").len(),
                WASM_PAGE as u64
            );
        };
        // Past RLIMIT_FSIZE the kernel sends SIGXFSZ; ignored, set_len gets EFBIG.
        // SAFETY: ignoring a signal in this single-purpose child process.
        unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
        limit(libc::RLIMIT_FSIZE, 2 * WASM_PAGE as u64);
        assert_eq!(m.grow(4), -1, "set_len past RLIMIT_FSIZE");
        unchanged(&m);
        limit(libc::RLIMIT_FSIZE, libc::RLIM_INFINITY);

        let status = std::fs::read_to_string("/proc/self/status").expect("status");
        let vm_kb: u64 = status
            .lines()
            .find_map(|l| {
                l.strip_prefix("VmSize:")?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
            .expect("VmSize");
        limit(libc::RLIMIT_AS, vm_kb * 1024 + 8 * WASM_PAGE as u64);
        assert_eq!(m.grow(1024), -1, "mremap past RLIMIT_AS");
        unchanged(&m);
        println!("both limits refused the grow; memory and file unchanged");
    }

    /// Another process shrinks the file under the mapping: the next access
    /// past the new end raises SIGBUS, from safe code. Run in a child, which
    /// must die of that signal.
    #[test]
    #[cfg(target_os = "linux")]
    fn truncating_the_file_under_the_mapping_raises_sigbus() {
        const NAME: &str = "tests::truncating_the_file_under_the_mapping_raises_sigbus";
        let Some(path) = std::env::var_os("DMB_SIGBUS_FILE") else {
            use std::os::unix::process::ExitStatusExt;
            let file = TempFile::new("sigbus");
            let exe = std::env::current_exe().expect("test binary");
            let out = std::process::Command::new(exe)
                .args([NAME, "--exact", "--nocapture", "--test-threads=1"])
                .env("DMB_SIGBUS_FILE", &file.0)
                .output()
                .expect("run the child");
            let text = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.signal(), Some(libc::SIGBUS), "{text}");
            assert!(text.contains("file shrunk to 1 page"), "{text}");
            return;
        };
        let no_core = libc::rlimit {
            rlim_cur: 0,
            rlim_max: libc::RLIM_INFINITY,
        };
        // SAFETY: a plain system call on a struct we own; no core file.
        unsafe { libc::setrlimit(libc::RLIMIT_CORE, &no_core) };
        let m = FileBackedMemory::open(Path::new(&path), 2, None).expect("open");
        // What another process would do, through a handle of its own.
        let other = OpenOptions::new().write(true).open(&path).expect("open");
        other.set_len(WASM_PAGE as u64).expect("shrink");
        assert_eq!(m.as_slice()[0], 0, "page 0 is still in the file");
        println!("file shrunk to 1 page; reading page 1");
        let byte = std::hint::black_box(m.as_slice()[WASM_PAGE]);
        panic!("read {byte} past the end of the file without SIGBUS");
    }

    #[test]
    fn bad_arguments_are_named() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(parse_args(&args(&["--grow", "0"]))
            .err()
            .expect("error")
            .contains("--grow"));
        assert!(parse_args(&args(&["--grow", "x"]))
            .err()
            .expect("error")
            .contains("`x`"));
        assert!(parse_args(&args(&["--path"]))
            .err()
            .expect("error")
            .contains("--path"));
        assert!(parse_args(&args(&["--size", "1"]))
            .err()
            .expect("error")
            .contains("--size"));
        assert_eq!(parse_args(&args(&["--grow", "3"])).map(|o| o.grow), Ok(3));
    }
}
