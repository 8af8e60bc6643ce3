//! The command channel: a virtio-serial port that the guest's `/init`
//! (`init.sh`) serves. One request a line, answers framed by byte counts:
//!
//! ```text
//! host:  PING 0                      guest: READY 0 6.1.0-57-amd64
//! host:  RUN 7 30 <script, hex>      guest: OUT 7 <n>  + n bytes of stdout
//!                                           ERR 7 <n>  + n bytes of stderr
//!                                           END 7 <exit status | timeout | killed>
//! ```
//!
//! The guest enforces each command's timeout itself (it kills the command's
//! whole session); the host waits a grace period longer, so a guest that
//! stops answering is an error too, not a hang.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use super::error::{ErrorKind, VmError};
use super::qmp::is_timeout;

/// How much longer than a command's own timeout the host waits for the
/// guest's answer: the guest's watchdog, its output's transfer, TCG.
const GRACE: Duration = Duration::from_secs(15);

/// What a guest command printed, and how it exited.
#[derive(Debug, Clone)]
pub struct GuestOutput {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
    /// Wall time from sending the command to its last byte of output.
    pub took: Duration,
}

impl GuestOutput {
    pub fn success(&self) -> bool {
        self.status == 0
    }
}

pub(super) struct Channel {
    writer: UnixStream,
    reader: BufReader<UnixStream>,
    next_id: u64,
    /// Set by a failed exchange: the stream may be mid-answer, so every
    /// later command fails at once instead of reading garbage.
    broken: Option<String>,
}

impl Channel {
    pub fn new(stream: UnixStream) -> std::io::Result<Channel> {
        Ok(Channel {
            writer: stream.try_clone()?,
            reader: BufReader::new(stream),
            next_id: 0,
            broken: None,
        })
    }

    /// Sends `PING` and waits for `READY`: the guest has booted, loaded its
    /// modules and mounted its shares. Returns the guest's `uname -r`.
    pub fn handshake(&mut self, deadline: Instant) -> Result<String, VmError> {
        let id = self.take_id();
        self.send(&format!("PING {id}"))?;
        loop {
            let line = self.read_line(deadline)?;
            let mut words = line.split_whitespace();
            if words.next() == Some("READY") && words.next() == Some(&id.to_string()) {
                return Ok(words.next().unwrap_or_default().to_owned());
            }
        }
    }

    /// Runs `script` with `sh` in the guest, killed after `timeout`.
    pub fn run(&mut self, script: &str, timeout: Duration) -> Result<GuestOutput, VmError> {
        if let Some(why) = &self.broken {
            return Err(channel_error(format!(
                "the command channel is broken ({why}); not running `{script}`"
            )));
        }
        let result = self.exchange(script, timeout);
        if let Err(e) = &result {
            if matches!(e.kind, ErrorKind::Channel) {
                self.broken = Some(e.message.clone());
            }
        }
        result
    }

    fn exchange(&mut self, script: &str, timeout: Duration) -> Result<GuestOutput, VmError> {
        let started = Instant::now();
        let id = self.take_id();
        let seconds = timeout.as_secs_f64().ceil().max(1.0) as u64;
        let hex: String = script.bytes().map(|b| format!("{b:02x}")).collect();
        self.send(&format!("RUN {id} {seconds} {hex}"))?;
        let deadline = started + Duration::from_secs(seconds) + GRACE;
        let stdout = self.read_block("OUT", id, deadline)?;
        let stderr = self.read_block("ERR", id, deadline)?;
        let end = self.read_line(deadline)?;
        let status = expect_header(&end, "END", id)?;
        let output = GuestOutput {
            status: 0,
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
            took: started.elapsed(),
        };
        match status {
            "timeout" => Err(VmError::new(
                ErrorKind::CommandTimeout,
                format!(
                    "guest command `{script}` was still running after its {seconds} s timeout and was killed\n\
                     stdout so far: {}\nstderr so far: {}",
                    output.stdout.trim_end(),
                    output.stderr.trim_end()
                ),
            )),
            "killed" => Err(VmError::new(
                ErrorKind::CommandKilled,
                format!(
                    "guest command `{script}`: its shell was killed without an exit status \
                     (the guest's OOM killer?)\nstderr: {}",
                    output.stderr.trim_end()
                ),
            )),
            code => {
                let status = code.parse().map_err(|_| {
                    channel_error(format!("guest answered `{end}` to `{script}`"))
                })?;
                Ok(GuestOutput { status, ..output })
            }
        }
    }

    fn take_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn send(&mut self, line: &str) -> Result<(), VmError> {
        self.writer
            .write_all(format!("{line}\n").as_bytes())
            .map_err(|e| channel_error(format!("cannot send to the guest: {e}")))
    }

    /// `NAME ID N` and then N bytes.
    fn read_block(&mut self, name: &str, id: u64, deadline: Instant) -> Result<Vec<u8>, VmError> {
        let header = self.read_line(deadline)?;
        let len: usize = expect_header(&header, name, id)?
            .parse()
            .map_err(|_| channel_error(format!("bad header from the guest: `{header}`")))?;
        let mut bytes = vec![0; len];
        self.set_timeout(deadline)?;
        self.reader
            .read_exact(&mut bytes)
            .map_err(|e| read_error(e, deadline))?;
        Ok(bytes)
    }

    fn read_line(&mut self, deadline: Instant) -> Result<String, VmError> {
        self.set_timeout(deadline)?;
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => Err(channel_error(
                "the guest closed the command channel".to_owned(),
            )),
            Ok(_) => Ok(line.trim_end().to_owned()),
            Err(e) => Err(read_error(e, deadline)),
        }
    }

    fn set_timeout(&self, deadline: Instant) -> Result<(), VmError> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(channel_error("the guest did not answer in time".to_owned()));
        }
        self.reader
            .get_ref()
            .set_read_timeout(Some(left))
            .map_err(|e| channel_error(format!("{e}")))
    }
}

/// The third word of `NAME ID WORD`, if NAME and ID match.
fn expect_header<'a>(line: &'a str, name: &str, id: u64) -> Result<&'a str, VmError> {
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        [n, i, value] if *n == name && *i == id.to_string() => Ok(value),
        _ => Err(channel_error(format!(
            "expected `{name} {id} ...` from the guest, got `{line}`"
        ))),
    }
}

fn read_error(e: std::io::Error, deadline: Instant) -> VmError {
    if is_timeout(&e) || Instant::now() >= deadline {
        channel_error("the guest stopped answering (no reply before the deadline)".to_owned())
    } else {
        channel_error(format!("reading from the guest: {e}"))
    }
}

fn channel_error(message: String) -> VmError {
    VmError::new(ErrorKind::Channel, message)
}
