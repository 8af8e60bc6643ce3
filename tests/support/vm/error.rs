//! One error type for the harness: what failed, and the end of the guest's
//! console, where the kernel says why.

use std::fmt;

/// What kind of step failed, for callers that expect some failures (a
/// command that must time out).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Bad configuration or missing assets: nothing was started.
    Config,
    /// QEMU did not start, exited, or the guest did not answer in time.
    Boot,
    /// A QMP command failed or QEMU's monitor did not answer.
    Qmp,
    /// The command channel broke or the guest stopped answering.
    Channel,
    /// A guest command ran past its timeout and was killed.
    CommandTimeout,
    /// A guest command's shell died without an exit status (OOM killer).
    CommandKilled,
    /// A command ran but did not do what the caller needed (`read_file`).
    Command,
}

#[derive(Debug)]
pub struct VmError {
    pub kind: ErrorKind,
    pub message: String,
    /// The last lines of the guest's serial console (empty before boot).
    pub console_tail: String,
}

impl VmError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> VmError {
        VmError {
            kind,
            message: message.into(),
            console_tail: String::new(),
        }
    }

    pub fn config(message: impl Into<String>) -> VmError {
        VmError::new(ErrorKind::Config, message)
    }

    /// The guest console's `Kernel panic` line, if the tail holds one.
    pub fn panic_line(&self) -> Option<&str> {
        self.console_tail
            .lines()
            .find(|line| line.contains("Kernel panic - not syncing"))
            .map(str::trim)
    }

    pub fn kernel_panicked(&self) -> bool {
        self.panic_line().is_some()
    }

    pub(super) fn with_console(mut self, tail: String) -> VmError {
        self.console_tail = tail;
        self
    }
}

impl fmt::Display for VmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.message)?;
        if !self.console_tail.is_empty() {
            write!(
                f,
                "\n--- the guest console's last lines ---\n{}",
                self.console_tail.trim_end()
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for VmError {}
