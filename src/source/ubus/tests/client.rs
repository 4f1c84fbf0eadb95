//! The ubus client against the test server: captured exchanges, every blob type, errors,
//! deadlines and size limits.

use super::*;

/// The error, as text, of a call of `uci` `method` with `args` on a server answering with
/// `handler`.
fn call_error(
    handler: impl FnMut(&Request) -> Answer + Send + 'static,
    method: &str,
    args: &Value,
) -> String {
    let server = TestServer::start(Some(hello()), handler);
    let error = connect(&server).call("uci", method, args).unwrap_err();
    error.to_string()
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
    let error = call_error(
        fake_ubusd(vec![("uci", Behaviour::Fail(3))]),
        "bogus",
        &json!({}),
    );
    assert_eq!(
        error,
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
    let text = call_error(
        move |_| replies.pop().unwrap_or(Answer::Nothing),
        "get",
        &json!({"config": "connmark-lb"}),
    );
    assert!(
        text.starts_with("ubus call uci get: ubusd at ")
            && text
                .ends_with("closed the connection in the middle of a message (500 bytes received)"),
        "{text}"
    );
}

#[test]
fn server_closing_between_messages_is_a_clear_error() {
    let error = call_error(|_| Answer::SendAndHangUp(Vec::new()), "get", &json!({}));
    assert!(error.ends_with("closed the connection"), "{error}");
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
    let error = call_error(
        move |_| Answer::Send(replies.pop().unwrap_or_default()),
        "get",
        &json!({}),
    );
    assert_eq!(
        error,
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
    let error = call_error(
        fake_ubusd(vec![("uci", Behaviour::ReplyRaw(payload))]),
        "get",
        &json!({}),
    );
    assert_eq!(
        error,
        "ubus call uci get: malformed ubus message: attribute length 240 exceeds the 16 bytes \
         left in its container"
    );
}

#[test]
fn arguments_must_be_an_object() {
    let error = call_error(
        fake_ubusd(vec![("uci", Behaviour::Echo)]),
        "get",
        &json!(["x"]),
    );
    assert_eq!(
        error,
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
