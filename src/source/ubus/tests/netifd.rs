//! Links resolved through a fake netifd: known, unknown and down interfaces, one deadline for
//! all of them, devices shared by two interfaces.

use super::*;

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
        "route": [{"target": "0.0.0.0", "mask": 0, "nexthop": "100.64.0.1"}],
        "dns-server": ["100.64.0.53", "9.9.9.9"]
    });
    let server = TestServer::start(
        Some(hello()),
        fake_ubusd(vec![("network.interface.wan", Behaviour::Reply(status))]),
    );
    let config = Config::from_raw(
        &RawConfig::from_json_text(
            r#"{"values":{
            "wan":{".type":"interface",".name":"wan",".index":0,"dns":"9.9.9.9"},
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
                dns: vec![
                    Ipv4Addr::new(9, 9, 9, 9).into(),
                    Ipv4Addr::new(100, 64, 0, 53).into()
                ],
                up: true
            },
            LinkState {
                device: None,
                gateway: None,
                source: None,
                prefixes: Vec::new(),
                dns: Vec::new(),
                up: false
            },
            LinkState {
                device: Some("eth3".into()),
                gateway: None,
                source: None,
                prefixes: Vec::new(),
                dns: Vec::new(),
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
    let context = crate::context::Context {
        config_json: None,
        config_uci: Some(uci.into()),
        ubus_socket: Some(socket.into()),
        state_dir: state.into(),
        hook: "/nonexistent".into(),
    };
    let error = context.apply().unwrap_err().to_string();
    assert!(
        error.contains("interfaces 'wan0' and 'wan1' both resolve to device eth9"),
        "{error}"
    );
    assert!(!dir.0.join("state").exists(), "apply went ahead");
}
