//! What happens when the OS refuses a grow, or another process shrinks the
//! file under the mapping: asserted on the kernel that runs the test. Both
//! run alone in a child process, so their limits and signals stay there.

use crate::file_backed_memory::{FileBackedMemory, HEADER, WASM_PAGE};
use crate::support::child::{is_child, passes_alone, run_alone};
use crate::support::proc::self_status;
use crate::TempFile;
use std::fs::OpenOptions;
use std::time::Duration;

#[cfg(target_env = "gnu")]
type Resource = libc::__rlimit_resource_t;
#[cfg(not(target_env = "gnu"))]
type Resource = libc::c_int;

fn set_limit(resource: Resource, bytes: u64) {
    let limit = libc::rlimit {
        rlim_cur: bytes,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: a plain system call on a struct we own.
    assert_eq!(unsafe { libc::setrlimit(resource, &limit) }, 0);
}

/// The file may not grow (`RLIMIT_FSIZE`: `set_len` fails), or the mapping
/// may not (`RLIMIT_AS`: `mremap` fails after `set_len` succeeded, so the
/// file must be shrunk back). Either way: -1, and nothing changed.
#[test]
fn os_failures_return_minus_one_and_change_nothing() {
    if !is_child() {
        passes_alone(
            "os::os_failures_return_minus_one_and_change_nothing",
            "both limits refused",
        );
        return;
    }
    let file = TempFile::new("limits");
    let mut m = FileBackedMemory::open(&file.0, 1, None).expect("open");
    m.as_mut_slice()[..4].copy_from_slice(b"keep");
    let unchanged = |m: &FileBackedMemory| {
        assert_eq!(m.size(), 1);
        assert_eq!(&m.as_slice()[..4], b"keep");
        assert_eq!(file.file_len(), HEADER + WASM_PAGE as u64);
    };
    // Past RLIMIT_FSIZE the kernel sends SIGXFSZ; ignored, set_len gets EFBIG.
    // SAFETY: ignoring a signal in this single-purpose child process.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    set_limit(libc::RLIMIT_FSIZE, HEADER + 2 * WASM_PAGE as u64);
    assert_eq!(m.grow(4), -1, "set_len past RLIMIT_FSIZE");
    unchanged(&m);
    set_limit(libc::RLIMIT_FSIZE, libc::RLIM_INFINITY);

    set_limit(
        libc::RLIMIT_AS,
        self_status("VmSize") + 8 * WASM_PAGE as u64,
    );
    assert_eq!(m.grow(1024), -1, "mremap past RLIMIT_AS");
    unchanged(&m);
    println!("both limits refused the grow; memory and file unchanged");
}

/// Another process shrinks the file under the mapping: the next access past
/// the new end raises SIGBUS, from safe code. The child must die of it.
#[test]
fn truncating_the_file_under_the_mapping_raises_sigbus() {
    const NAME: &str = "os::truncating_the_file_under_the_mapping_raises_sigbus";
    if !is_child() {
        use std::os::unix::process::ExitStatusExt;
        let _file = TempFile::new("sigbus");
        let run = run_alone(NAME, Duration::from_secs(60));
        assert_eq!(run.status.signal(), Some(libc::SIGBUS), "{}", run.output);
        assert!(
            run.output.contains("file shrunk to 1 page"),
            "{}",
            run.output
        );
        return;
    }
    set_limit(libc::RLIMIT_CORE, 0); // no core file from the expected signal
                                     // The parent's name for the file: the child dies of the signal, so the
                                     // parent's `TempFile` removes it.
    let parent = std::os::unix::process::parent_id();
    let file = std::env::temp_dir().join(format!("fbm-test-{parent}-sigbus"));
    let m = FileBackedMemory::open(&file, 2, None).expect("open");
    // What another process would do, through a handle of its own.
    let other = OpenOptions::new().write(true).open(&file).expect("open");
    other.set_len(HEADER + WASM_PAGE as u64).expect("shrink");
    assert_eq!(m.as_slice()[0], 0, "page 0 is still in the file");
    println!("file shrunk to 1 page; reading page 1");
    let byte = std::hint::black_box(m.as_slice()[WASM_PAGE]);
    panic!("read {byte} past the end of the file without SIGBUS");
}
