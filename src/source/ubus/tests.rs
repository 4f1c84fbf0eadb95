//! The client against a test server that speaks ubusd's wire format over a real unix socket,
//! replaying captured bytes of a `uci get` exchange or playing a small fake ubusd.

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

#[test]
fn captured_uci_get_exchange_decodes_to_the_expected_json() {
    let mut replies = vec![
        hex_fixture("invoke-reply.hex"),
        hex_fixture("lookup-reply.hex"),
    ];
    let server = TestServer::start(Some(hello()), move |_| match replies.pop() {
        Some(reply) => Answer::Send(reply),
        None => Answer::Nothing,
    });
    let mut client = connect(&server);
    let reply = client
        .call("uci", "get", &json!({"config": "connmark-lb"}))
        .unwrap();
    drop(client);

    let expected: Value = serde_json::from_str(&fixture("uci-get.json")).unwrap();
    assert_eq!(reply, expected);
    // What we sent is byte for byte what the ubus CLI sent.
    assert_eq!(
        server.requests(),
        vec![
            hex_fixture("lookup-request.hex"),
            hex_fixture("invoke-request.hex")
        ]
    );
}

#[test]
fn reply_far_over_64_kib_is_decoded_whole() {
    let sections: Map<String, Value> = (0..2000)
        .map(|i| {
            let section = json!({
                ".type": "interface", ".index": i, ".anonymous": false,
                "track_ip": ["192.0.2.1", "198.51.100.1"], "padding": "x".repeat(40)
            });
            (format!("wan{i:04}"), section)
        })
        .collect();
    let big = json!({ "values": sections });
    let wire_len = data_message(1, 1, &encode_members(&big)).len();
    assert!(wire_len > 200 * 1024, "only {wire_len} bytes");

    let server = TestServer::start(
        Some(hello()),
        fake_ubusd(vec![("uci", Behaviour::Reply(big.clone()))]),
    );
    let mut client = connect(&server);
    let reply = client
        .call("uci", "get", &json!({"config": "big"}))
        .unwrap();
    assert_eq!(reply, big);
}

#[test]
fn tricky_strings_bools_numbers_and_nesting_survive_the_wire_both_ways() {
    let args = json!({
        "quote": "He said \"hi\" \\ C:\\path /x",
        "unicode": "ünïcødé ✓ 🦀\n\t\u{1}",
        "on": true, "off": false,
        "i32": -5, "i64": 1_u64 << 40, "pi": 3.25, "nothing": null,
        "list": ["a", 1, {"k": "v"}, [true]],
        "table": {"nested": {"deeper": ["x", {"y": false}]}},
        "empty_table": {}, "empty_list": []
    });
    let server = TestServer::start(Some(hello()), fake_ubusd(vec![("echo", Behaviour::Echo)]));
    let mut client = connect(&server);
    assert_eq!(client.call("echo", "echo", &args).unwrap(), args);
}

#[test]
fn hand_assembled_reply_with_every_type_decodes_to_proper_json() {
    let server = TestServer::start(
        Some(hello()),
        fake_ubusd(vec![(
            "types",
            Behaviour::ReplyRaw(hex_fixture("all-types.hex")),
        )]),
    );
    let mut client = connect(&server);
    let reply = client.call("types", "dump", &Value::Null).unwrap();
    assert_eq!(reply, all_types_json());
    // As JSON text, quotes, backslashes and control characters come out escaped.
    let text = reply.to_string();
    assert!(
        text.contains(r#""quote":"He said \"hi\" \\ C:\\path /x""#),
        "{text}"
    );
    assert!(
        text.contains(r#""unicode":"ünïcødé ✓ 🦀\n\t\u0001""#),
        "{text}"
    );
}

#[test]
fn unknown_object_is_a_clear_not_found_error() {
    let server = TestServer::start(Some(hello()), fake_ubusd(vec![]));
    let mut client = connect(&server);
    let error = client
        .call("network.interface.nope", "status", &json!({}))
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "ubus call network.interface.nope status failed with status 4 (NOT_FOUND)"
    );
    // The same connection keeps working, and try_call hands the status back as a value.
    assert_eq!(
        client
            .try_call("network.interface.nope", "status", &json!({}))
            .unwrap(),
        Err(Status::NOT_FOUND)
    );
}

#[test]
fn failing_method_names_object_method_and_status() {
    let server = TestServer::start(Some(hello()), fake_ubusd(vec![("uci", Behaviour::Fail(3))]));
    let mut client = connect(&server);
    let error = client.call("uci", "bogus", &json!({})).unwrap_err();
    assert_eq!(
        error.to_string(),
        "ubus call uci bogus failed with status 3 (METHOD_NOT_FOUND)"
    );
}

#[test]
fn several_calls_share_one_connection() {
    let server = TestServer::start(
        Some(hello()),
        fake_ubusd(vec![
            ("a", Behaviour::Reply(json!({"n": 1}))),
            ("b", Behaviour::Reply(json!({"n": 2}))),
        ]),
    );
    let mut client = connect(&server);
    for _ in 0..3 {
        assert_eq!(
            client.call("a", "get", &json!({})).unwrap(),
            json!({"n": 1})
        );
        assert_eq!(
            client.call("b", "get", &json!({})).unwrap(),
            json!({"n": 2})
        );
    }
    drop(client);
    assert_eq!(server.requests().len(), 12);
}

#[test]
fn server_closing_mid_message_is_a_clear_error() {
    let mut replies = vec![
        Answer::SendAndHangUp(hex_fixture("invoke-reply.hex")[..500].to_vec()),
        Answer::Send(hex_fixture("lookup-reply.hex")),
    ];
    let server = TestServer::start(Some(hello()), move |_| {
        replies.pop().unwrap_or(Answer::Nothing)
    });
    let mut client = connect(&server);
    let error = client
        .call("uci", "get", &json!({"config": "connmark-lb"}))
        .unwrap_err();
    let text = error.to_string();
    assert!(
        text.starts_with("ubus call uci get: ubusd at ")
            && text
                .ends_with("closed the connection in the middle of a message (500 bytes received)"),
        "{text}"
    );
}

#[test]
fn server_closing_between_messages_is_a_clear_error() {
    let server = TestServer::start(Some(hello()), |_| Answer::SendAndHangUp(Vec::new()));
    let mut client = connect(&server);
    let error = client.call("uci", "get", &json!({})).unwrap_err();
    assert!(
        error.to_string().ends_with("closed the connection"),
        "{error}"
    );
}

#[test]
fn silent_server_times_out_within_the_bound() {
    let server = TestServer::start(Some(hello()), |_| Answer::Nothing);
    let bound = Duration::from_millis(300);
    let mut client = Client::connect(&server.socket, bound).unwrap();
    let started = Instant::now();
    let error = client.call("uci", "get", &json!({})).unwrap_err();
    assert_timed_out(&error, started, bound);
    assert!(
        error
            .to_string()
            .ends_with("no answer from ubusd within 300ms"),
        "{error}"
    );
    // A late answer would now be out of step: the connection refuses further calls at once.
    let started = Instant::now();
    let error = client.call("uci", "get", &json!({})).unwrap_err();
    assert!(started.elapsed() < Duration::from_millis(50));
    assert_eq!(
        error.to_string(),
        format!(
            "ubus call uci get: the connection to ubusd at {} failed earlier",
            server.socket.display()
        )
    );
}

#[test]
fn trickling_server_cannot_stretch_the_deadline() {
    let mut reply = hex_fixture("lookup-reply.hex");
    reply.extend(hex_fixture("invoke-reply.hex"));
    let mut replies = vec![reply];
    let server = TestServer::start(Some(hello()), move |_| match replies.pop() {
        Some(reply) => Answer::Trickle(reply, Duration::from_millis(20)),
        None => Answer::Nothing,
    });
    let bound = Duration::from_millis(400);
    let mut client = Client::connect(&server.socket, bound).unwrap();
    let started = Instant::now();
    let error = client.call("uci", "get", &json!({})).unwrap_err();
    assert_timed_out(&error, started, bound);
}

#[test]
fn server_that_never_greets_times_out_on_connect() {
    let server = TestServer::start(None, |_| Answer::Nothing);
    let bound = Duration::from_millis(300);
    let started = Instant::now();
    let error = Client::connect(&server.socket, bound).err().unwrap();
    assert_timed_out(&error, started, bound);
    assert!(
        error.to_string().starts_with("connecting to ubusd: "),
        "{error}"
    );
}

#[test]
fn server_that_never_accepts_times_out_on_connect() {
    use nix::sys::socket::{Backlog, bind, listen};
    let dir = TempDir::new();
    let path = dir.0.join("stuck.sock");
    let listener = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    bind(listener.as_raw_fd(), &UnixAddr::new(&path).unwrap()).unwrap();
    listen(&listener, Backlog::new(0).unwrap()).unwrap();
    let bound = Duration::from_millis(300);
    // The first client fills the listen queue (and gets no HELLO); the second cannot even
    // connect. Both give up on time.
    let mut started = Instant::now();
    let first = Client::connect(&path, bound).err().unwrap();
    assert_timed_out(&first, started, bound);
    started = Instant::now();
    let second = Client::connect(&path, bound).err().unwrap();
    assert_timed_out(&second, started, bound);
}

#[test]
fn reply_announcing_more_than_1_mib_is_refused_unread() {
    let mut replies = vec![{
        let mut header = vec![0, MSG_DATA, 0, 1, 0, 0, 0, 0];
        header.extend(((2 * MAX_MESSAGE_LEN) as u32).to_be_bytes());
        header
    }];
    let server = TestServer::start(Some(hello()), move |_| {
        Answer::Send(replies.pop().unwrap_or_default())
    });
    let mut client = connect(&server);
    let error = client.call("uci", "get", &json!({})).unwrap_err();
    assert_eq!(
        error.to_string(),
        "ubus call uci get: ubus message of 2097152 bytes exceeds the 1048576 byte limit"
    );
}

#[test]
fn reply_of_exactly_the_limit_is_accepted() {
    // One string sized so the DATA message's root attribute is exactly 1 MiB.
    let overhead = data_message(1, 1, &encode_members(&json!({"s": ""}))).len() - HEADER_LEN;
    let big = json!({"s": "y".repeat(MAX_MESSAGE_LEN - overhead)});
    let wire_len = data_message(1, 1, &encode_members(&big)).len();
    assert_eq!(wire_len, HEADER_LEN + MAX_MESSAGE_LEN);
    let server = TestServer::start(
        Some(hello()),
        fake_ubusd(vec![("uci", Behaviour::Reply(big.clone()))]),
    );
    let mut client = connect(&server);
    assert_eq!(client.call("uci", "get", &json!({})).unwrap(), big);
}

#[test]
fn request_over_1_mib_is_refused_before_sending() {
    let server = TestServer::start(Some(hello()), fake_ubusd(vec![("uci", Behaviour::Echo)]));
    let mut client = connect(&server);
    let args = json!({"blob": "z".repeat(MAX_MESSAGE_LEN)});
    let error = client.call("uci", "set", &args).unwrap_err();
    assert_eq!(
        error.to_string(),
        "ubus call uci set: ubus request exceeds the 1048576 byte message limit"
    );
    // A request just under the limit still goes through (1 KiB was the crate's limit).
    let args = json!({"blob": "z".repeat(MAX_MESSAGE_LEN - 1024)});
    assert_eq!(client.call("uci", "set", &args).unwrap(), args);
    drop(client);
    // Only the second call's lookup and invoke reached the server.
    assert_eq!(server.requests().len(), 3);
}

#[test]
fn malformed_reply_is_an_error_not_a_panic() {
    // A DATA whose table member claims more bytes than its container holds.
    let mut payload = encode_members(&json!({"k": "value"}));
    payload[3] = 0xf0;
    let server = TestServer::start(
        Some(hello()),
        fake_ubusd(vec![("uci", Behaviour::ReplyRaw(payload))]),
    );
    let mut client = connect(&server);
    let error = client.call("uci", "get", &json!({})).unwrap_err();
    assert_eq!(
        error.to_string(),
        "ubus call uci get: malformed ubus message: attribute length 240 exceeds the 16 bytes \
         left in its container"
    );
}

#[test]
fn arguments_must_be_an_object() {
    let server = TestServer::start(Some(hello()), fake_ubusd(vec![("uci", Behaviour::Echo)]));
    let mut client = connect(&server);
    let error = client.call("uci", "get", &json!(["x"])).unwrap_err();
    assert_eq!(
        error.to_string(),
        "ubus call uci get: ubus arguments must be a JSON object, not [\"x\"]"
    );
}

#[test]
fn missing_socket_names_the_path() {
    let dir = TempDir::new();
    let path = dir.0.join("absent.sock");
    let error = Client::connect(&path, TIMEOUT).err().unwrap();
    assert_eq!(
        error.to_string(),
        format!(
            "connecting to ubusd: {}: No such file or directory (os error 2)",
            path.display()
        )
    );
}

#[test]
fn netifd_link_status_resolves_known_and_unknown_interfaces() {
    let wan = json!({
        "up": true, "l3_device": "eth1",
        "ipv4-address": [{"address": "203.0.113.45", "mask": 24}],
        "route": [{"target": "0.0.0.0", "mask": 0, "nexthop": "203.0.113.1"}]
    });
    let server = TestServer::start(
        Some(hello()),
        fake_ubusd(vec![
            ("network.interface.wan", Behaviour::Reply(wan)),
            ("network.interface.broken", Behaviour::Fail(6)),
        ]),
    );
    let mut client = connect(&server);
    let link = crate::source::netifd::link_status(&mut client, "wan", Family::Ipv4).unwrap();
    assert!(link.up);
    assert_eq!(link.device.as_deref(), Some("eth1"));
    assert_eq!(
        crate::source::netifd::link_status(&mut client, "wanb", Family::Ipv4).unwrap(),
        crate::source::netifd::NetifdLink::default()
    );
    let error =
        crate::source::netifd::link_status(&mut client, "broken", Family::Ipv4).unwrap_err();
    assert_eq!(
        error.to_string(),
        "ubus call network.interface.broken status failed with status 6 (PERMISSION_DENIED)"
    );
}

#[test]
fn links_are_resolved_from_netifd_and_unknown_ones_are_down() {
    use crate::config::Config;
    use crate::config::raw::RawConfig;
    use crate::source::LinkState;
    use std::net::Ipv4Addr;

    let status = serde_json::json!({
        "up": true, "l3_device": "pppoe-wan",
        "ipv4-address": [{"address": "100.64.0.7", "mask": 32}],
        "route": [{"target": "0.0.0.0", "mask": 0, "nexthop": "100.64.0.1"}]
    });
    let server = TestServer::start(
        Some(hello()),
        fake_ubusd(vec![("network.interface.wan", Behaviour::Reply(status))]),
    );
    let config = Config::from_raw(
        &RawConfig::from_json_text(
            r#"{"values":{
            "wan":{".type":"interface",".name":"wan",".index":0},
            "wanb":{".type":"interface",".name":"wanb",".index":1,"interface":"lte"},
            "wanc":{".type":"interface",".name":"wanc",".index":2,"device":"eth3"}}}"#,
        )
        .unwrap(),
    )
    .unwrap();
    let (states, warnings) = crate::source::resolve_links(&config, &server.socket);
    assert_eq!(
        states,
        [
            LinkState {
                device: Some("pppoe-wan".into()),
                gateway: Some(Ipv4Addr::new(100, 64, 0, 1).into()),
                source: Some(Ipv4Addr::new(100, 64, 0, 7).into()),
                prefixes: Vec::new(),
                up: true
            },
            LinkState {
                device: None,
                gateway: None,
                source: None,
                prefixes: Vec::new(),
                up: false
            },
            LinkState {
                device: Some("eth3".into()),
                gateway: None,
                source: None,
                prefixes: Vec::new(),
                up: true
            },
        ]
    );
    assert!(warnings.is_empty(), "{warnings:?}");
    drop(server.requests());
}

/// `count` interface sections named `wan0..`, each resolved from the netifd interface of the
/// same name.
fn netifd_links(count: usize) -> crate::config::Config {
    let sections: Vec<String> = (0..count)
        .map(|i| format!(r#""wan{i}":{{".type":"interface",".name":"wan{i}",".index":{i}}}"#))
        .collect();
    let json = format!(r#"{{"values":{{{}}}}}"#, sections.join(","));
    crate::config::Config::from_raw(&crate::config::raw::RawConfig::from_json_text(&json).unwrap())
        .unwrap()
}

/// A fake ubusd whose netifd objects `network.interface.wan0..` exist but answer a `status`
/// call only after `delay` (never, for `None`).
fn slow_netifd(count: usize, delay: Option<Duration>) -> impl FnMut(&Request) -> Answer {
    let status = json!({
        "up": true, "l3_device": "eth9",
        "route": [{"target": "0.0.0.0", "mask": 0, "nexthop": "10.9.0.1"}]
    });
    let names: Vec<&'static str> = (0..count)
        .map(|i| &*Box::leak(format!("network.interface.wan{i}").into_boxed_str()))
        .collect();
    let mut ubusd = fake_ubusd(
        names
            .into_iter()
            .map(|n| (n, Behaviour::Reply(status.clone())))
            .collect(),
    );
    move |request| match (request.kind, delay) {
        (MSG_INVOKE, None) => Answer::Nothing,
        (MSG_INVOKE, Some(delay)) => {
            std::thread::sleep(delay);
            ubusd(request)
        }
        _ => ubusd(request),
    }
}

/// Resolves 20 netifd links against [`slow_netifd`]; returns the states, warnings and time.
fn resolve_twenty(
    delay: Option<Duration>,
) -> (Vec<crate::source::LinkState>, Vec<String>, Duration) {
    let config = netifd_links(20);
    let server = TestServer::start(Some(hello()), slow_netifd(20, delay));
    let started = Instant::now();
    let (states, warnings) = crate::source::resolve_links(&config, &server.socket);
    (states, warnings, started.elapsed())
}

#[test]
fn a_silent_netifd_costs_one_timeout_for_all_links() {
    let (states, warnings, took) = resolve_twenty(None);
    assert!(
        took < crate::source::UBUS_TIMEOUT + Duration::from_secs(1),
        "{took:?}"
    );
    assert!(states.iter().all(|s| !s.up), "{states:?}");
    assert_eq!(warnings.len(), 20, "{warnings:?}");
    assert!(warnings[19].contains("'wan19'"), "{warnings:?}");
}

#[test]
fn a_slow_netifd_is_bounded_by_one_deadline_for_all_links() {
    let (states, warnings, took) = resolve_twenty(Some(Duration::from_millis(700)));
    assert!(
        took < crate::source::RESOLVE_DEADLINE + Duration::from_secs(1),
        "{took:?}"
    );
    let up = states.iter().filter(|s| s.up).count();
    assert!((4..=8).contains(&up), "{up} links resolved in {took:?}");
    assert_eq!(warnings.len(), 20 - up, "{warnings:?}");
    assert!(
        warnings.iter().all(|w| w.ends_with("link down")),
        "{warnings:?}"
    );
}

#[test]
fn interfaces_sharing_a_device_leave_the_later_one_down() {
    let config = netifd_links(3);
    let server = TestServer::start(
        Some(hello()),
        slow_netifd(3, Some(Duration::from_millis(0))),
    );
    let (mut states, warnings) = crate::source::resolve_links(&config, &server.socket);
    assert!(warnings.is_empty(), "{warnings:?}");
    let conflicts = crate::source::shared_devices(&config, &mut states);
    assert_eq!(
        conflicts,
        [
            "interfaces 'wan0' and 'wan1' both resolve to device eth9 (the later one cannot be used)",
            "interfaces 'wan0' and 'wan2' both resolve to device eth9 (the later one cannot be used)",
        ]
    );
    assert!(states[0].up && !states[1].up && !states[2].up, "{states:?}");
    let plan = crate::plan::Plan::build(&config, &states);
    let ruleset = crate::render::nft::ruleset(&plan, crate::render::nft::Previous::default());
    // One inbound pin and one NAT rule: the later interfaces put nothing on the device.
    assert_eq!(ruleset.matches("\"eth9\" : goto").count(), 1, "{ruleset}");
    assert_eq!(ruleset.matches("oifname \"eth9\"").count(), 1, "{ruleset}");
    drop(server.requests());

    // One device may carry one link per family.
    let dual = crate::config::Config::from_raw(
        &crate::config::raw::RawConfig::from_json_text(
            r#"{"values":{
            "wan":{".type":"interface",".name":"wan",".index":0,"device":"eth1"},
            "wan6":{".type":"interface",".name":"wan6",".index":1,"device":"eth1","family":"ipv6"}}}"#,
        )
        .unwrap(),
    )
    .unwrap();
    let mut states: Vec<_> = dual
        .interfaces
        .iter()
        .map(crate::source::LinkState::from_config)
        .collect();
    assert!(crate::source::shared_devices(&dual, &mut states).is_empty());

    // `apply` refuses before touching anything, naming both interfaces.
    let server = TestServer::start(
        Some(hello()),
        slow_netifd(2, Some(Duration::from_millis(0))),
    );
    let dir = TempDir::new();
    let uci = dir.0.join("config");
    std::fs::write(&uci, "config interface 'wan0'\nconfig interface 'wan1'\n").unwrap();
    let text = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let (uci, socket, state) = (text(&uci), text(&server.socket), text(&dir.0.join("state")));
    let args = <crate::cli::Args as argh::FromArgs>::from_args(
        &["connmark-lb"],
        &[
            "apply",
            "--uci",
            &uci,
            "--ubus-socket",
            &socket,
            "--state-dir",
            &state,
        ],
    )
    .unwrap();
    let error = crate::cli::run(&args).unwrap_err().to_string();
    assert!(
        error.contains("interfaces 'wan0' and 'wan1' both resolve to device eth9"),
        "{error}"
    );
    assert!(!dir.0.join("state").exists(), "apply went ahead");
}
