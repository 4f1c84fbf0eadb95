//! A small blocking ubus client: enough to `call` a method on an object and get its reply as
//! JSON, with every wait bounded.
//!
//! OpenWrt serves both our config (`uci get`) and the state of its WAN interfaces
//! (`network.interface.<name> status`) over ubus. The init script and procd's triggers wait
//! for us, so a ubusd that hangs, dies mid-message or sends garbage must give an error within
//! the timeout, never a hang or a panic.
//!
//! Wire format (ubus `ubusmsg.h`): an 8-byte header (version 0, type, big-endian sequence
//! number and peer id) followed by one root blob attribute holding the message attributes; see
//! [`blob`] for the attribute encoding. ubusd greets every new client with HELLO; a call is a
//! LOOKUP of the object path, answered by DATA {OBJID} and STATUS, then an INVOKE of the object
//! id, answered by DATA {DATA} messages and a final STATUS. Replies echo the request's
//! sequence number.

mod blob;
mod object;
#[cfg(test)]
mod tests;

use crate::error::{Context, Error, Result};
use blob::{Attrs, LEN_MASK, Writer, malformed};
use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, MsgFlags, SockFlag, SockType, UnixAddr, connect, send, socket,
};
use serde_json::{Map, Value};
use std::fmt;
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use object::{Call, ObjectConnection};

/// The largest message ubusd accepts or sends (UBUS_MAX_MSGLEN): bigger ones are refused in
/// both directions instead of being buffered.
pub const MAX_MESSAGE_LEN: usize = 1 << 20;

const HEADER_LEN: usize = 8;
/// The header plus the root attribute's header: what must be read to learn a message's size.
const PREFIX_LEN: usize = HEADER_LEN + 4;

const MSG_HELLO: u8 = 0;
const MSG_STATUS: u8 = 1;
const MSG_DATA: u8 = 2;
const MSG_LOOKUP: u8 = 4;
const MSG_INVOKE: u8 = 5;

const ATTR_STATUS: u8 = 1;
const ATTR_OBJPATH: u8 = 2;
const ATTR_OBJID: u8 = 3;
const ATTR_METHOD: u8 = 4;
const ATTR_DATA: u8 = 7;

/// How long `connect` sleeps between attempts while ubusd's listen queue is full.
const CONNECT_RETRY: Duration = Duration::from_millis(10);

/// The socket path of this system's ubusd: `/var/run/ubus/ubus.sock` since OpenWrt 21.02,
/// `/var/run/ubus.sock` before.
pub fn default_socket() -> PathBuf {
    let current = Path::new("/var/run/ubus/ubus.sock");
    if current.exists() {
        current.to_path_buf()
    } else {
        PathBuf::from("/var/run/ubus.sock")
    }
}

/// A ubus status code from a reply; kept as a value so callers can treat some of them (an
/// interface that does not exist) as an answer rather than a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status(pub u32);

impl Status {
    const OK: Status = Status(0);
    /// The object has no such method.
    pub const METHOD_NOT_FOUND: Status = Status(3);
    /// No such object (or, for `uci get`, no such config).
    pub const NOT_FOUND: Status = Status(4);

    fn name(self) -> &'static str {
        match self.0 {
            0 => "OK",
            1 => "INVALID_COMMAND",
            2 => "INVALID_ARGUMENT",
            3 => "METHOD_NOT_FOUND",
            4 => "NOT_FOUND",
            5 => "NO_DATA",
            6 => "PERMISSION_DENIED",
            7 => "TIMEOUT",
            8 => "NOT_SUPPORTED",
            9 => "UNKNOWN_ERROR",
            10 => "CONNECTION_FAILED",
            11 => "NO_MEMORY",
            12 => "PARSE_ERROR",
            13 => "SYSTEM_ERROR",
            _ => "unknown status",
        }
    }

    /// The error for a call that ended with this status.
    pub fn error(self, object: &str, method: &str) -> Error {
        Error::Ubus(format!("ubus call {object} {method} failed with {self}"))
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "status {} ({})", self.0, self.name())
    }
}

/// One connection to ubusd. Each call (lookup + invoke) must finish within the timeout given
/// to [`Client::connect`]. After a timeout or a broken message the connection is out of step
/// with ubusd and every later call fails: connect again.
pub struct Client {
    stream: UnixStream,
    socket: PathBuf,
    timeout: Duration,
    seq: u16,
    broken: bool,
}

/// A received message: the header fields we use and the root attribute's payload.
struct Message {
    kind: u8,
    seq: u16,
    /// The peer id: for a call forwarded to our object, the caller's.
    peer: u32,
    body: Vec<u8>,
}

impl Client {
    /// Connects to the ubusd socket at `path` and reads its HELLO, all within `timeout`.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Client> {
        Self::handshake(path, timeout).context("connecting to ubusd")
    }

    /// Changes the bound of each later call (a caller with an overall deadline shrinks it).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Calls `method` on `object` with `args` (a JSON object, or null for none) and returns
    /// the reply's data as a JSON object (empty if the method sent none). A non-zero ubus
    /// status is an error naming the object, method and status.
    pub fn call(&mut self, object: &str, method: &str, args: &Value) -> Result<Value> {
        self.try_call(object, method, args)?
            .map_err(|status| status.error(object, method))
    }

    /// Like [`Client::call`], but hands a non-zero ubus status back as a value, for callers to
    /// whom e.g. NOT_FOUND is an answer. Transport and format errors are still errors.
    pub fn try_call(
        &mut self,
        object: &str,
        method: &str,
        args: &Value,
    ) -> Result<Result<Value, Status>> {
        let outcome = if self.broken {
            Err(Error::Ubus(format!(
                "the connection to ubusd at {} failed earlier",
                self.socket.display()
            )))
        } else {
            let deadline = Instant::now() + self.timeout;
            self.lookup_and_invoke(object, method, args, deadline)
        };
        outcome.with_context(|| format!("ubus call {object} {method}"))
    }

    fn handshake(path: &Path, timeout: Duration) -> Result<Client> {
        let deadline = Instant::now() + timeout;
        let stream = connect_until(path, deadline, timeout)?;
        let mut client = Client {
            stream,
            socket: path.to_path_buf(),
            timeout,
            seq: 0,
            broken: false,
        };
        let hello = client.read_message(deadline)?;
        if hello.kind != MSG_HELLO {
            return Err(malformed(format!(
                "expected HELLO from ubusd, got message type {}",
                hello.kind
            )));
        }
        Ok(client)
    }

    fn lookup_and_invoke(
        &mut self,
        object: &str,
        method: &str,
        args: &Value,
        deadline: Instant,
    ) -> Result<Result<Value, Status>> {
        match self.lookup(object, deadline)? {
            Ok(object_id) => self.invoke(object_id, method, args, deadline),
            Err(status) => Ok(Err(status)),
        }
    }

    fn lookup(&mut self, object: &str, deadline: Instant) -> Result<Result<u32, Status>> {
        let seq = self.next_seq();
        let request = message(MSG_LOOKUP, seq, 0, |w| w.put_str(ATTR_OBJPATH, object))?;
        self.send(&request, deadline)?;
        let mut object_id = None;
        loop {
            let reply = self.read_reply(seq, deadline)?;
            match reply.kind {
                MSG_DATA if object_id.is_none() => {
                    for attr in Attrs::new(&reply.body) {
                        let attr = attr?;
                        if attr.id == ATTR_OBJID {
                            object_id = Some(attr.u32()?);
                        }
                    }
                }
                MSG_STATUS => {
                    return Ok(match status(&reply)? {
                        Status::OK => object_id.ok_or(Status::NOT_FOUND),
                        failed => Err(failed),
                    });
                }
                _ => {}
            }
        }
    }

    fn invoke(
        &mut self,
        object_id: u32,
        method: &str,
        args: &Value,
        deadline: Instant,
    ) -> Result<Result<Value, Status>> {
        let no_args = Map::new();
        let args = match args {
            Value::Object(members) => members,
            Value::Null => &no_args,
            other => {
                return Err(Error::Ubus(format!(
                    "ubus arguments must be a JSON object, not {other}"
                )));
            }
        };
        let seq = self.next_seq();
        let request = message(MSG_INVOKE, seq, object_id, |w| {
            w.put_u32(ATTR_OBJID, object_id)?;
            w.put_str(ATTR_METHOD, method)?;
            w.nested(ATTR_DATA, |w| w.put_members(args))
        })?;
        self.send(&request, deadline)?;
        let mut data = Map::new();
        let mut data_len = 0;
        loop {
            let reply = self.read_reply(seq, deadline)?;
            match reply.kind {
                MSG_DATA => {
                    for attr in Attrs::new(&reply.body) {
                        let attr = attr?;
                        if attr.id != ATTR_DATA {
                            continue;
                        }
                        data_len += attr.payload.len();
                        if data_len > MAX_MESSAGE_LEN {
                            return Err(Error::Ubus(format!(
                                "ubus reply data exceeds {MAX_MESSAGE_LEN} bytes"
                            )));
                        }
                        data.extend(blob::decode_table(attr.payload)?);
                    }
                }
                MSG_STATUS => {
                    return Ok(match status(&reply)? {
                        Status::OK => Ok(Value::Object(data)),
                        failed => Err(failed),
                    });
                }
                _ => {}
            }
        }
    }

    fn next_seq(&mut self) -> u16 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// The next message answering request `seq`; anything else on the connection is skipped.
    fn read_reply(&mut self, seq: u16, deadline: Instant) -> Result<Message> {
        loop {
            let message = self.read_message(deadline)?;
            if message.seq == seq {
                return Ok(message);
            }
        }
    }

    /// A whole message. Any failure leaves the stream out of step with ubusd, so it marks
    /// the connection broken.
    fn read_message(&mut self, deadline: Instant) -> Result<Message> {
        let message = self.read_framed(deadline);
        self.broken |= message.is_err();
        message
    }

    /// Reads the header and root attribute header first, so the size is checked before the
    /// body is allocated.
    fn read_framed(&mut self, deadline: Instant) -> Result<Message> {
        let mut prefix = [0u8; PREFIX_LEN];
        self.read_exact(&mut prefix, 0, deadline)?;
        let [version, kind, seq_hi, seq_lo, p0, p1, p2, p3, root @ ..] = prefix;
        if version != 0 {
            return Err(malformed(format!("unsupported message version {version}")));
        }
        let root_len = (u32::from_be_bytes(root) & LEN_MASK) as usize;
        if root_len < 4 {
            return Err(malformed(format!(
                "root attribute length {root_len} is shorter than its header"
            )));
        }
        if root_len > MAX_MESSAGE_LEN {
            return Err(Error::Ubus(format!(
                "ubus message of {root_len} bytes exceeds the {MAX_MESSAGE_LEN} byte limit"
            )));
        }
        let mut body = vec![0u8; root_len - 4];
        self.read_exact(&mut body, PREFIX_LEN, deadline)?;
        Ok(Message {
            kind,
            seq: u16::from_be_bytes([seq_hi, seq_lo]),
            peer: u32::from_be_bytes([p0, p1, p2, p3]),
            body,
        })
    }

    /// Fills `buf`, giving up at `deadline`; `already` is how much of the current message was
    /// read before, for the error when ubusd hangs up halfway.
    fn read_exact(&mut self, buf: &mut [u8], already: usize, deadline: Instant) -> Result<()> {
        let mut filled = 0;
        while filled < buf.len() {
            self.arm(deadline, UnixStream::set_read_timeout)?;
            match self.stream.read(&mut buf[filled..]) {
                Ok(0) if already + filled == 0 => {
                    return Err(Error::Ubus(format!(
                        "ubusd at {} closed the connection",
                        self.socket.display()
                    )));
                }
                Ok(0) => {
                    return Err(Error::Ubus(format!(
                        "ubusd at {} closed the connection in the middle of a message \
                         ({} bytes received)",
                        self.socket.display(),
                        already + filled
                    )));
                }
                Ok(n) => filled += n,
                Err(e) if is_retryable(e.kind()) => {}
                Err(e) => return Err(self.io_error(e)),
            }
        }
        Ok(())
    }

    /// Sends a whole message; a partial one leaves the connection broken.
    fn send(&mut self, bytes: &[u8], deadline: Instant) -> Result<()> {
        let sent = self.write_all(bytes, deadline);
        self.broken |= sent.is_err();
        sent
    }

    /// Writes all of `bytes`, giving up at `deadline`; MSG_NOSIGNAL turns a closed socket into
    /// an error instead of a SIGPIPE.
    fn write_all(&mut self, bytes: &[u8], deadline: Instant) -> Result<()> {
        let mut sent = 0;
        while sent < bytes.len() {
            self.arm(deadline, UnixStream::set_write_timeout)?;
            match send(
                self.stream.as_raw_fd(),
                &bytes[sent..],
                MsgFlags::MSG_NOSIGNAL,
            ) {
                Ok(n) => sent += n,
                Err(Errno::EAGAIN | Errno::EINTR) => {}
                Err(errno) => return Err(self.io_error(errno.into())),
            }
        }
        Ok(())
    }

    /// Sets the socket's read or write timeout (`set`) to what is left until `deadline`, so
    /// one blocking call cannot outlast it; none left is the timeout error.
    fn arm(
        &self,
        deadline: Instant,
        set: fn(&UnixStream, Option<Duration>) -> io::Result<()>,
    ) -> Result<()> {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(timed_out(&self.socket, self.timeout));
        }
        set(&self.stream, Some(remaining)).map_err(|e| self.io_error(e))
    }

    fn io_error(&self, source: io::Error) -> Error {
        Error::io(self.socket.display(), source)
    }
}

/// Connects without blocking: a ubusd that stopped accepting leaves its listen queue full, and
/// a blocking connect would then wait forever.
fn connect_until(path: &Path, deadline: Instant, timeout: Duration) -> Result<UnixStream> {
    let io_error = |errno: Errno| Error::io(path.display(), errno.into());
    let address = UnixAddr::new(path).map_err(io_error)?;
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(io_error)?;
    loop {
        match connect(fd.as_raw_fd(), &address) {
            Ok(()) => break,
            Err(Errno::EAGAIN | Errno::EINTR) => {
                let remaining = deadline.saturating_duration_since(Instant::now());
                if remaining.is_zero() {
                    return Err(timed_out(path, timeout));
                }
                std::thread::sleep(remaining.min(CONNECT_RETRY));
            }
            Err(errno) => return Err(io_error(errno)),
        }
    }
    let stream = UnixStream::from(fd);
    stream
        .set_nonblocking(false)
        .map_err(|e| Error::io(path.display(), e))?;
    Ok(stream)
}

/// A request: header, then a root attribute holding what `fill` writes.
fn message(
    kind: u8,
    seq: u16,
    peer: u32,
    fill: impl FnOnce(&mut Writer) -> Result<()>,
) -> Result<Vec<u8>> {
    let mut writer = Writer::new();
    writer.raw(&[0, kind])?;
    writer.raw(&seq.to_be_bytes())?;
    writer.raw(&peer.to_be_bytes())?;
    writer.nested(0, fill)?;
    Ok(writer.finish())
}

fn status(reply: &Message) -> Result<Status> {
    for attr in Attrs::new(&reply.body) {
        let attr = attr?;
        if attr.id == ATTR_STATUS {
            return Ok(Status(attr.u32()?));
        }
    }
    Err(malformed("STATUS message without a status code"))
}

fn is_retryable(kind: io::ErrorKind) -> bool {
    matches!(
        kind,
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

fn timed_out(socket: &Path, timeout: Duration) -> Error {
    Error::io(
        socket.display(),
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no answer from ubusd within {timeout:?}"),
        ),
    )
}
