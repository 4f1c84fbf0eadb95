//! The client against a test server that speaks ubusd's wire format over a real unix socket,
//! replaying captured bytes of a `uci get` exchange or playing a small fake ubusd.
//!
//! This file is the test server; `client` tests the wire protocol and its limits, `netifd`
//! resolving links through a fake netifd.

mod client;
mod netifd;

use super::*;
use crate::config::Family;
use serde_json::json;
use std::io::Write;
use std::os::unix::net::UnixListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;

/// Bounds every wait of the test server, so a broken test fails instead of hanging.
const SERVER_PATIENCE: Duration = Duration::from_secs(10);

pub(super) fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/ubus/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Bytes from a `.hex` fixture: hex pairs separated by whitespace, `#` starts a comment.
pub(super) fn hex_fixture(name: &str) -> Vec<u8> {
    fixture(name)
        .lines()
        .map(|line| line.split('#').next().unwrap_or_default())
        .flat_map(str::split_whitespace)
        .map(|pair| u8::from_str_radix(pair, 16).unwrap())
        .collect()
}

/// A unique directory per test server, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "connmark-lb-ubus-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A request as the test server received it.
struct Request {
    kind: u8,
    seq: u16,
    bytes: Vec<u8>,
}

impl Request {
    fn attr(&self, id: u8) -> Option<blob::Attr<'_>> {
        Attrs::new(&self.bytes[PREFIX_LEN..])
            .map(Result::unwrap)
            .find(|attr| attr.id == id)
    }
}

/// What the test server does after a request.
enum Answer {
    Send(Vec<u8>),
    SendAndHangUp(Vec<u8>),
    /// Sends the bytes one at a time, `pause` apart.
    Trickle(Vec<u8>, Duration),
    Nothing,
}

struct TestServer {
    socket: PathBuf,
    thread: Option<JoinHandle<Vec<Vec<u8>>>>,
    _dir: TempDir,
}

impl TestServer {
    /// Accepts one client, greets it with `hello` (if any) and answers each request with
    /// `handler`, until the client hangs up.
    fn start(
        hello: Option<Vec<u8>>,
        mut handler: impl FnMut(&Request) -> Answer + Send + 'static,
    ) -> Self {
        let dir = TempDir::new();
        let socket = dir.0.join("ubus.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let thread = std::thread::spawn(move || {
            let mut stream = accept_within(&listener, SERVER_PATIENCE);
            stream.set_read_timeout(Some(SERVER_PATIENCE)).unwrap();
            if let Some(hello) = hello {
                stream.write_all(&hello).unwrap();
            }
            let mut requests = Vec::new();
            while let Some(request) = read_request(&mut stream) {
                let answer = handler(&request);
                requests.push(request.bytes);
                match answer {
                    Answer::Send(bytes) => stream.write_all(&bytes).unwrap(),
                    Answer::SendAndHangUp(bytes) => {
                        stream.write_all(&bytes).unwrap();
                        break;
                    }
                    Answer::Trickle(bytes, pause) => {
                        for byte in bytes {
                            if stream.write_all(&[byte]).is_err() {
                                break;
                            }
                            std::thread::sleep(pause);
                        }
                    }
                    Answer::Nothing => {}
                }
            }
            requests
        });
        TestServer {
            socket,
            thread: Some(thread),
            _dir: dir,
        }
    }

    /// Waits for the server to finish and returns the raw requests it received.
    fn requests(mut self) -> Vec<Vec<u8>> {
        self.thread.take().unwrap().join().unwrap()
    }
}

fn accept_within(listener: &UnixListener, patience: Duration) -> UnixStream {
    listener.set_nonblocking(true).unwrap();
    let give_up = Instant::now() + patience;
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false).unwrap();
                return stream;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < give_up => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("test server: no client: {e}"),
        }
    }
}

/// The next request, or `None` once the client hung up.
fn read_request(stream: &mut UnixStream) -> Option<Request> {
    let mut prefix = [0u8; PREFIX_LEN];
    stream.read_exact(&mut prefix).ok()?;
    let root_len = u32::from_be_bytes([prefix[8], prefix[9], prefix[10], prefix[11]]) as usize;
    let mut bytes = prefix.to_vec();
    bytes.resize(HEADER_LEN + root_len, 0);
    stream.read_exact(&mut bytes[PREFIX_LEN..]).unwrap();
    Some(Request {
        kind: prefix[1],
        seq: u16::from_be_bytes([prefix[2], prefix[3]]),
        bytes,
    })
}

/// What `all-types.hex` holds.
pub(super) fn all_types_json() -> Value {
    json!({
        "quote": "He said \"hi\" \\ C:\\path /x",
        "unicode": "ünïcødé ✓ 🦀\n\t\u{1}",
        "on": true, "off": false,
        "i16": -2, "i32": -5, "i64": 1_u64 << 40, "pi": 3.25, "nothing": null,
        "list": ["a", 1, {"k": "v"}, [true]],
        "empty_table": {}, "empty_list": []
    })
}

fn hello() -> Vec<u8> {
    hex_fixture("hello.hex")
}

/// What an object of the fake ubusd does when invoked.
enum Behaviour {
    /// Replies with this JSON object as data.
    Reply(Value),
    /// Replies with this raw DATA payload.
    ReplyRaw(Vec<u8>),
    /// Replies with the request's own arguments.
    Echo,
    /// Fails with this status.
    Fail(u32),
}

fn object_id(index: usize) -> u32 {
    0x5eed_0000 + index as u32
}

/// A fake ubusd serving `objects`: lookups of other paths fail with NOT_FOUND.
fn fake_ubusd(objects: Vec<(&'static str, Behaviour)>) -> impl FnMut(&Request) -> Answer {
    move |request| {
        let seq = request.seq;
        match request.kind {
            MSG_LOOKUP => {
                let path = blob::c_string(request.attr(ATTR_OBJPATH).unwrap().payload).unwrap();
                let mut answer = Vec::new();
                let found = objects.iter().position(|(name, _)| *name == path);
                if let Some(index) = found {
                    answer.extend(
                        message(MSG_DATA, seq, 0, |w| {
                            w.put_str(ATTR_OBJPATH, &path)?;
                            w.put_u32(ATTR_OBJID, object_id(index))
                        })
                        .unwrap(),
                    );
                }
                answer.extend(status_message(seq, 0, if found.is_some() { 0 } else { 4 }));
                Answer::Send(answer)
            }
            MSG_INVOKE => {
                let id = request.attr(ATTR_OBJID).unwrap().u32().unwrap();
                let index = (id - object_id(0)) as usize;
                let args = request.attr(ATTR_DATA).unwrap().payload.to_vec();
                let data = match &objects[index].1 {
                    Behaviour::Reply(value) => encode_members(value),
                    Behaviour::ReplyRaw(payload) => payload.clone(),
                    Behaviour::Echo => args,
                    Behaviour::Fail(status) => {
                        return Answer::Send(status_message(seq, id, *status));
                    }
                };
                let mut answer = data_message(seq, id, &data);
                answer.extend(status_message(seq, id, 0));
                Answer::Send(answer)
            }
            other => panic!("test server: unexpected message type {other}"),
        }
    }
}

fn encode_members(value: &Value) -> Vec<u8> {
    let mut writer = Writer::new();
    writer.put_members(value.as_object().unwrap()).unwrap();
    writer.finish()
}

fn data_message(seq: u16, object: u32, payload: &[u8]) -> Vec<u8> {
    let mut writer = Writer::new();
    writer.raw(&[0, MSG_DATA]).unwrap();
    writer.raw(&seq.to_be_bytes()).unwrap();
    writer.raw(&object.to_be_bytes()).unwrap();
    writer
        .nested(0, |w| {
            w.put_u32(ATTR_OBJID, object)?;
            w.nested(ATTR_DATA, |w| w.raw(payload))
        })
        .unwrap();
    writer.finish()
}

fn status_message(seq: u16, object: u32, status: u32) -> Vec<u8> {
    message(MSG_STATUS, seq, object, |w| w.put_u32(ATTR_STATUS, status)).unwrap()
}

const TIMEOUT: Duration = Duration::from_secs(5);

fn connect(server: &TestServer) -> Client {
    Client::connect(&server.socket, TIMEOUT).unwrap()
}

/// The innermost error, below all context layers.
fn root_cause(error: &Error) -> &Error {
    match error {
        Error::Context { source, .. } => root_cause(source),
        other => other,
    }
}

fn assert_timed_out(error: &Error, started: Instant, bound: Duration) {
    let elapsed = started.elapsed();
    match root_cause(error) {
        Error::Io { source, .. } => assert_eq!(source.kind(), io::ErrorKind::TimedOut, "{error}"),
        other => panic!("expected a timeout, got: {other}"),
    }
    assert!(elapsed >= bound, "gave up early after {elapsed:?}");
    assert!(
        elapsed < bound + Duration::from_millis(700),
        "took {elapsed:?} for a {bound:?} timeout"
    );
}
