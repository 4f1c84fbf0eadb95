//! Serving an object on ubusd from a daemon's poll loop, never blocking it.
//!
//! The connection is nonblocking: [`ObjectConnection::process`] reads whatever ubusd sent into
//! a buffer and handles each whole message, replies wait in an output buffer until the socket
//! takes them, so a ubusd that stops reading or sends half a message costs the daemon nothing
//! but memory bounded by the message size limit. Registration (ADD_OBJECT with the methods'
//! signature, answered by DATA {OBJID} and STATUS) happens in the same loop. ubusd forwards a
//! call as INVOKE {OBJID, METHOD, DATA} whose header names the caller (peer) and its sequence
//! number; the answer is DATA {OBJID, DATA} unless the caller asked for none (NO_REPLY), then
//! STATUS {STATUS, OBJID}, both addressed back with that peer and sequence number.

use super::blob::{self, Attrs, LEN_MASK, c_string, malformed};
use super::{
    ATTR_DATA, ATTR_METHOD, ATTR_OBJID, ATTR_OBJPATH, ATTR_STATUS, HEADER_LEN, MAX_MESSAGE_LEN,
    MSG_DATA, MSG_INVOKE, MSG_STATUS, Message, PREFIX_LEN, Status, connect_until, message, status,
};
use crate::error::{Error, Result};
use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, send};
use serde_json::{Map, Value};
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Instant;

const MSG_ADD_OBJECT: u8 = 6;
const ATTR_SIGNATURE: u8 = 6;
const ATTR_NO_REPLY: u8 = 10;
/// The sequence number of our one request, the registration.
const ADD_SEQ: u16 = 1;

/// A call of one of our methods; answer it with [`ObjectConnection::reply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub method: String,
    /// The call's arguments (its DATA table; empty without one).
    pub args: Map<String, Value>,
    seq: u16,
    peer: u32,
    object: u32,
    no_reply: bool,
}

/// One connection to ubusd that registers one object and receives its calls.
pub struct ObjectConnection {
    stream: UnixStream,
    socket: PathBuf,
    input: Vec<u8>,
    output: Vec<u8>,
    /// The id ubusd gave the object, once DATA {OBJID} came; registered when STATUS 0 follows.
    object: Option<u32>,
    registered: bool,
}

impl ObjectConnection {
    /// Connects without waiting (a ubusd whose listen queue is full is an error, to be retried
    /// later) and queues the registration of `name` with `methods`, which take no arguments.
    pub fn connect(path: &Path, name: &str, methods: &[&str]) -> Result<ObjectConnection> {
        let now = Instant::now();
        let stream = connect_until(path, now, std::time::Duration::ZERO)?;
        stream
            .set_nonblocking(true)
            .map_err(|e| Error::io(path.display(), e))?;
        let signature: Map<String, Value> = methods
            .iter()
            .map(|m| (m.to_string(), Value::Object(Map::new())))
            .collect();
        let output = message(MSG_ADD_OBJECT, ADD_SEQ, 0, |w| {
            w.put_str(ATTR_OBJPATH, name)?;
            w.nested(ATTR_SIGNATURE, |w| w.put_members(&signature))
        })?;
        let mut connection = ObjectConnection {
            stream,
            socket: path.to_path_buf(),
            input: Vec::new(),
            output,
            object: None,
            registered: false,
        };
        connection.flush()?;
        Ok(connection)
    }

    /// Whether ubusd confirmed the registration.
    pub fn registered(&self) -> bool {
        self.registered
    }

    /// Whether replies wait for the socket to take them (poll for writability too).
    pub fn wants_write(&self) -> bool {
        !self.output.is_empty()
    }

    /// Sends what is queued and reads what arrived; returns the calls of our object. An error
    /// means the connection is gone (ubusd exited, refused the object, or broke the protocol):
    /// connect again.
    pub fn process(&mut self) -> Result<Vec<Call>> {
        self.flush()?;
        self.fill()?;
        let mut calls = Vec::new();
        while let Some(message) = self.next_message()? {
            if let Some(call) = self.handle(message)? {
                calls.push(call);
            }
        }
        Ok(calls)
    }

    /// Answers `call` with `data` (a JSON object) and status OK.
    pub fn reply(&mut self, call: &Call, data: &Map<String, Value>) -> Result<()> {
        if !call.no_reply {
            let reply = message(MSG_DATA, call.seq, call.peer, |w| {
                w.put_u32(ATTR_OBJID, call.object)?;
                w.nested(ATTR_DATA, |w| w.put_members(data))
            })?;
            self.queue(&reply)?;
        }
        self.finish(call, Status::OK)
    }

    /// Answers `call` with a failure status and no data.
    pub fn fail(&mut self, call: &Call, code: Status) -> Result<()> {
        self.finish(call, code)
    }

    fn finish(&mut self, call: &Call, code: Status) -> Result<()> {
        let done = message(MSG_STATUS, call.seq, call.peer, |w| {
            w.put_u32(ATTR_STATUS, code.0)?;
            w.put_u32(ATTR_OBJID, call.object)
        })?;
        self.queue(&done)?;
        self.flush()
    }

    /// Appends a message to the output; a ubusd that takes nothing while more than a whole
    /// message waits is not reading, and the connection is given up.
    fn queue(&mut self, bytes: &[u8]) -> Result<()> {
        if self.output.len() + bytes.len() > 2 * MAX_MESSAGE_LEN {
            return Err(Error::Ubus(format!(
                "ubusd at {} does not read its messages",
                self.socket.display()
            )));
        }
        self.output.extend_from_slice(bytes);
        Ok(())
    }

    /// Writes as much of the output as the socket takes now.
    fn flush(&mut self) -> Result<()> {
        while !self.output.is_empty() {
            let flags = MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT;
            match send(self.stream.as_raw_fd(), &self.output, flags) {
                Ok(n) => {
                    self.output.drain(..n);
                }
                Err(Errno::EAGAIN) => break,
                Err(Errno::EINTR) => {}
                Err(errno) => return Err(Error::io(self.socket.display(), errno.into())),
            }
        }
        Ok(())
    }

    /// Reads everything the socket holds now; end of stream is an error.
    fn fill(&mut self) -> Result<()> {
        let mut chunk = [0u8; 4096];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    return Err(Error::Ubus(format!(
                        "ubusd at {} closed the connection",
                        self.socket.display()
                    )));
                }
                Ok(n) => self.input.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io(self.socket.display(), e)),
            }
        }
    }

    /// Takes the first whole message off the input, if one is there.
    fn next_message(&mut self) -> Result<Option<Message>> {
        if self.input.len() < PREFIX_LEN {
            return Ok(None);
        }
        let version = self.input[0];
        if version != 0 {
            return Err(malformed(format!("unsupported message version {version}")));
        }
        let root = [self.input[8], self.input[9], self.input[10], self.input[11]];
        let root_len = (u32::from_be_bytes(root) & LEN_MASK) as usize;
        if !(4..=MAX_MESSAGE_LEN).contains(&root_len) {
            return Err(malformed(format!("root attribute length {root_len}")));
        }
        let total = HEADER_LEN + root_len;
        if self.input.len() < total {
            return Ok(None);
        }
        let bytes: Vec<u8> = self.input.drain(..total).collect();
        Ok(Some(Message {
            kind: bytes[1],
            seq: u16::from_be_bytes([bytes[2], bytes[3]]),
            peer: u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]),
            body: bytes[PREFIX_LEN..].to_vec(),
        }))
    }

    /// Follows the registration; turns an INVOKE of our object into a call.
    fn handle(&mut self, message: Message) -> Result<Option<Call>> {
        match message.kind {
            MSG_DATA if message.seq == ADD_SEQ && !self.registered => {
                for attr in Attrs::new(&message.body) {
                    let attr = attr?;
                    if attr.id == ATTR_OBJID {
                        self.object = Some(attr.u32()?);
                    }
                }
                Ok(None)
            }
            MSG_STATUS if message.seq == ADD_SEQ && !self.registered => {
                match (status(&message)?, self.object) {
                    (Status::OK, Some(_)) => {
                        self.registered = true;
                        Ok(None)
                    }
                    (Status::OK, None) => Err(malformed("object added without an id")),
                    (failed, _) => Err(Error::Ubus(format!(
                        "ubusd refused to add the object: {failed}"
                    ))),
                }
            }
            MSG_INVOKE => {
                let (mut object, mut method, mut no_reply) = (None, None, false);
                let mut args = Map::new();
                for attr in Attrs::new(&message.body) {
                    let attr = attr?;
                    match attr.id {
                        ATTR_OBJID => object = Some(attr.u32()?),
                        ATTR_METHOD => method = Some(c_string(attr.payload)?),
                        ATTR_NO_REPLY => no_reply = attr.payload.first().is_some_and(|b| *b != 0),
                        ATTR_DATA => args = blob::decode_table(attr.payload)?,
                        _ => {}
                    }
                }
                match (object, method) {
                    (Some(object), Some(method)) if Some(object) == self.object => Ok(Some(Call {
                        method,
                        args,
                        seq: message.seq,
                        peer: message.peer,
                        object,
                        no_reply,
                    })),
                    _ => Ok(None),
                }
            }
            // HELLO, notifications about subscribers, anything newer: nothing to do.
            _ => Ok(None),
        }
    }
}

impl AsFd for ObjectConnection {
    /// The socket to poll: readable for calls, writable while replies wait.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }
}
