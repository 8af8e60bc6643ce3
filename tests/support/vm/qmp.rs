//! A QMP client (QEMU's JSON monitor protocol) over a Unix socket: one
//! command at a time, every read bounded by a timeout.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::error::{ErrorKind, VmError};

/// How long QEMU may take to answer one command. Under TCG on a busy host a
/// `query-*` answers in milliseconds; seconds mean QEMU is stuck.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Qmp {
    writer: UnixStream,
    reader: BufReader<UnixStream>,
    /// Asynchronous events QEMU sent between answers (`BALLOON_CHANGE`, ...).
    pub events: Vec<Value>,
}

impl Qmp {
    /// Connects to QEMU's `-qmp unix:` socket, reads the greeting and
    /// enters command mode (`qmp_capabilities`).
    pub fn connect(socket: &Path) -> Result<Qmp, VmError> {
        let stream = UnixStream::connect(socket).map_err(|e| {
            VmError::new(
                ErrorKind::Qmp,
                format!("QMP: cannot connect to {}: {e}", socket.display()),
            )
        })?;
        Qmp::new(stream)
    }

    /// [`Qmp::connect`] over a stream already connected.
    pub fn new(stream: UnixStream) -> Result<Qmp, VmError> {
        let writer = stream.try_clone().map_err(|e| qmp_error(format!("{e}")))?;
        let mut qmp = Qmp {
            writer,
            reader: BufReader::new(stream),
            events: Vec::new(),
        };
        let greeting = qmp.read_message(Instant::now() + ANSWER_TIMEOUT)?;
        if greeting.get("QMP").is_none() {
            return Err(qmp_error(format!(
                "QMP: expected a greeting, got {greeting}"
            )));
        }
        qmp.execute("qmp_capabilities", json!({}))?;
        Ok(qmp)
    }

    /// Runs one command and returns its `return` value; a QMP `error` is an
    /// error naming the command and QEMU's description.
    pub fn execute(&mut self, command: &str, arguments: Value) -> Result<Value, VmError> {
        let request = json!({ "execute": command, "arguments": arguments });
        let mut line = request.to_string();
        line.push('\n');
        self.writer
            .write_all(line.as_bytes())
            .map_err(|e| qmp_error(format!("QMP {command}: cannot send: {e}")))?;
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        loop {
            let message = self.read_message(deadline).map_err(|mut e| {
                e.message = format!("QMP {command}: {}", e.message);
                e
            })?;
            if let Some(answer) = message.get("return") {
                return Ok(answer.clone());
            }
            if let Some(error) = message.get("error") {
                let desc = error.get("desc").and_then(Value::as_str).unwrap_or("?");
                return Err(qmp_error(format!("QMP {command} {arguments}: {desc}")));
            }
            if message.get("event").is_some() {
                self.events.push(message);
            }
        }
    }

    /// `qom-get PATH PROPERTY`.
    pub fn qom_get(&mut self, path: &str, property: &str) -> Result<Value, VmError> {
        self.execute("qom-get", json!({ "path": path, "property": property }))
    }

    /// `qom-set PATH PROPERTY VALUE`.
    pub fn qom_set(&mut self, path: &str, property: &str, value: Value) -> Result<(), VmError> {
        self.execute(
            "qom-set",
            json!({ "path": path, "property": property, "value": value }),
        )
        .map(|_| ())
    }

    fn read_message(&mut self, deadline: Instant) -> Result<Value, VmError> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(qmp_error("no answer in time".to_owned()));
        }
        self.reader
            .get_ref()
            .set_read_timeout(Some(left))
            .map_err(|e| qmp_error(format!("{e}")))?;
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => Err(qmp_error("QEMU closed the monitor".to_owned())),
            Ok(_) => serde_json::from_str(&line)
                .map_err(|e| qmp_error(format!("not JSON ({e}): {}", line.trim_end()))),
            Err(e) if is_timeout(&e) => Err(qmp_error(format!(
                "no answer within {:.0} s",
                ANSWER_TIMEOUT.as_secs_f64()
            ))),
            Err(e) => Err(qmp_error(format!("{e}"))),
        }
    }
}

fn qmp_error(message: String) -> VmError {
    VmError::new(ErrorKind::Qmp, message)
}

/// A socket read timeout: `WouldBlock` on Linux, `TimedOut` elsewhere.
pub(super) fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}
