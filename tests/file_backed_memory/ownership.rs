//! The memory never takes over a file it did not create: every file below
//! is refused, and its bytes and length are exactly what they were.

use crate::file_backed_memory::{FileBackedMemory, HEADER, MAGIC, WASM_PAGE};
use crate::TempFile;
use std::io;

/// Writes `bytes` to a fresh file, asks the memory to open it, and checks
/// that it was refused and that the file is unchanged.
fn refused_and_unchanged(name: &str, bytes: &[u8]) -> io::Error {
    let file = TempFile::new(name);
    std::fs::write(&file.0, bytes).expect("write the foreign file");
    let err = FileBackedMemory::open(&file.0, 1, None)
        .err()
        .expect("a refusal");
    assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
    assert!(
        err.to_string().contains(&file.0.display().to_string()),
        "{err}"
    );
    let after = std::fs::read(&file.0).expect("read back");
    assert_eq!(after.len(), bytes.len(), "{name}: the length changed");
    assert!(after == bytes, "{name}: the bytes changed");
    err
}

/// The case from the bad-input issue: a file whose size is a whole number
/// of 64 KiB pages used to be taken as a memory, its first bytes rewritten
/// and the file grown.
#[test]
fn a_foreign_file_of_whole_pages_is_refused_and_unchanged() {
    let bytes: Vec<u8> = (0..2 * WASM_PAGE).map(|i| (i % 251) as u8).collect();
    let err = refused_and_unchanged("whole-pages", &bytes);
    assert!(err.to_string().contains("not a memory file"), "{err}");
}

#[test]
fn empty_short_and_ragged_files_are_refused_and_unchanged() {
    refused_and_unchanged("empty", &[]);
    refused_and_unchanged("short", b"DMBMEM0");
    refused_and_unchanged("magic-only", &MAGIC);
    // The right header, then a page and a half: not whole pages.
    let mut ragged = MAGIC.to_vec();
    ragged.resize(HEADER as usize + WASM_PAGE + WASM_PAGE / 2, 0);
    let err = refused_and_unchanged("ragged", &ragged);
    assert!(err.to_string().contains("whole pages"), "{err}");
}

#[test]
fn a_file_this_memory_created_is_reopened() {
    let file = TempFile::new("ours");
    drop(FileBackedMemory::open(&file.0, 2, None).expect("create"));
    let head = std::fs::read(&file.0).expect("read");
    assert_eq!(&head[..MAGIC.len()], &MAGIC);
    assert_eq!(head.len() as u64, HEADER + 2 * WASM_PAGE as u64);
    let m = FileBackedMemory::open(&file.0, 1, None).expect("reopen");
    assert_eq!(m.size(), 2);
}
