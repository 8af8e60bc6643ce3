//! A two-way line channel between a parent and a child that
//! `rlimit_child::spawn` forked: the parent tells the child what to do next
//! and waits, with a timeout, for its answer. (`rlimit_child`'s own `Link`
//! carries only what the child says before it ends.)

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::time::{Duration, Instant};

/// One side: lines out, lines in.
pub struct Ends {
    tx: File,
    rx: File,
    pending: Vec<u8>,
}

/// The parent's side and the child's side. Give the child's side to the
/// closure; the closure must call `Ends::close_in_child` with the parent's
/// `fds()` first, so that the parent closing its side is end of file there.
pub fn channel() -> io::Result<(Ends, Ends)> {
    let (down_rx, down_tx) = pipe()?;
    let (up_rx, up_tx) = pipe()?;
    let parent = Ends {
        tx: down_tx,
        rx: up_rx,
        pending: Vec::new(),
    };
    let child = Ends {
        tx: up_tx,
        rx: down_rx,
        pending: Vec::new(),
    };
    Ok((parent, child))
}

fn pipe() -> io::Result<(File, File)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 returns.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors are fresh and owned by nothing else.
    Ok(unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) })
}

impl Ends {
    /// This side's descriptors, for the child to close its copies.
    pub fn fds(&self) -> [RawFd; 2] {
        [self.tx.as_raw_fd(), self.rx.as_raw_fd()]
    }

    /// In the child: closes the copies of the parent's side it got at fork.
    pub fn close_in_child(fds: [RawFd; 2]) {
        for fd in fds {
            // SAFETY: the child never uses the parent's side, and never
            // returns into the code that owns it, so nothing closes it twice.
            unsafe { libc::close(fd) };
        }
    }

    pub fn say(&mut self, line: &str) -> Result<(), String> {
        let line = format!("{line}\n");
        self.tx
            .write_all(line.as_bytes())
            .map_err(|e| e.to_string())
    }

    /// The next line, waiting at most `timeout` for it.
    pub fn hear(&mut self, timeout: Duration) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        loop {
            if let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=end).collect();
                return Ok(String::from_utf8_lossy(&line).trim_end().to_owned());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("no answer within {} s", timeout.as_secs()));
            }
            let ms = left.as_millis().min(100) as i32;
            if readable(&self.rx, ms).map_err(|e| e.to_string())? {
                match self.rx.read(&mut buf).map_err(|e| e.to_string())? {
                    0 => return Err("the other side closed the channel".into()),
                    n => self.pending.extend_from_slice(&buf[..n]),
                }
            }
        }
    }
}

/// Whether `file` has input (or end of file) within `ms` milliseconds.
fn readable(file: &File, ms: i32) -> io::Result<bool> {
    let (fd, events) = (file.as_raw_fd(), libc::POLLIN);
    let mut poll = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    match unsafe { libc::poll(&mut poll, 1, ms) } {
        n if n >= 0 => Ok(n > 0),
        _ => match io::Error::last_os_error() {
            e if e.kind() == io::ErrorKind::Interrupted => Ok(false),
            e => Err(e),
        },
    }
}
