//! `examples/file_backed_memory.rs`, tested: the `memory.grow` contract on a
//! file, what survives a reopen, that a file the memory did not create is
//! refused and left byte for byte as it was, and (Linux) what the kernel
//! does when the OS refuses a grow or the file shrinks under the mapping.
//! Tests that lower a limit or expect a signal run alone in a child process
//! (`support::child`), with `oom_score_adj` 1000 and a timeout.

#[path = "../../examples/file_backed_memory.rs"]
#[allow(dead_code)]
mod file_backed_memory;
#[path = "../support/mod.rs"]
mod support;

#[cfg(target_os = "linux")]
mod os;
mod ownership;

use file_backed_memory::{FileBackedMemory, FileGrowPath, HEADER, WASM_PAGE};
use std::io;
use std::path::PathBuf;

/// A path in the temp folder, removed when dropped.
pub struct TempFile(pub PathBuf);

impl TempFile {
    pub fn new(name: &str) -> TempFile {
        let path = std::env::temp_dir().join(format!("fbm-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        TempFile(path)
    }

    pub fn file_len(&self) -> u64 {
        std::fs::metadata(&self.0).expect("stat").len()
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
    assert_eq!(file.file_len(), HEADER + 4 * WASM_PAGE as u64);
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
    assert_eq!(m.as_slice()[0], 1);
    assert_eq!(file.file_len(), HEADER + 2 * WASM_PAGE as u64);
    assert_eq!(m.grow(1), 2);
}

#[test]
fn a_memory_file_larger_than_the_maximum_is_refused() {
    let file = TempFile::new("toolarge");
    drop(FileBackedMemory::open(&file.0, 4, None).expect("create"));
    let err = FileBackedMemory::open(&file.0, 1, Some(3))
        .err()
        .expect("an error");
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert!(err.to_string().contains("up to 3"), "{err}");
    assert_eq!(file.file_len(), HEADER + 4 * WASM_PAGE as u64);
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
        let byte = m.as_slice()[page * WASM_PAGE - 1];
        assert_eq!(byte, page as u8, "page {page} after moves");
    }
    assert_eq!(m.size(), 65);
    assert_eq!(m.grow_traced(0).expect("grow").1, FileGrowPath::Unchanged);
}

#[test]
fn the_file_is_the_header_then_the_pages() {
    let file = TempFile::new("layout");
    let mut m = FileBackedMemory::open(&file.0, 2, None).expect("open");
    m.as_mut_slice()[0] = 7;
    m.as_mut_slice()[WASM_PAGE] = 8;
    m.flush().expect("flush");
    let bytes = std::fs::read(&file.0).expect("read");
    assert_eq!(
        &bytes[..file_backed_memory::MAGIC.len()],
        &file_backed_memory::MAGIC
    );
    assert_eq!(bytes[HEADER as usize], 7, "page 0 starts after the header");
    assert_eq!(bytes[HEADER as usize + WASM_PAGE], 8, "page 1 follows it");
}

/// Extending a file with `set_len` stores nothing until a page is written
/// (a sparse file): on the filesystems the book's tests run on.
#[test]
#[cfg(unix)]
fn grown_pages_take_no_disk_space_until_written() {
    use std::os::unix::fs::MetadataExt;
    let file = TempFile::new("sparse");
    let mut m = FileBackedMemory::open(&file.0, 1, None).expect("open");
    assert_eq!(m.grow(63), 1);
    m.as_mut_slice()[0] = 1;
    m.flush().expect("flush");
    let meta = std::fs::metadata(&file.0).expect("stat");
    let on_disk = meta.blocks() * 512; // st_blocks counts 512-byte units
    assert_eq!(meta.len(), HEADER + 64 * WASM_PAGE as u64);
    assert!(
        on_disk * 8 < meta.len(),
        "{on_disk} bytes on disk for a {}-byte file: not sparse",
        meta.len()
    );
}
