//! The daemon's ubus object `connmark-lb` on the real ubusd: `ubus call connmark-lb status`
//! (status.json's content plus backend, pid and live per-link counters) and `reload`, answered
//! from the daemon's poll loop; a restarted ubusd gets the object again, and a ubusd that
//! never answers does not hold the daemon up.

use crate::support::checks::{servers, tcp_target};
use crate::support::daemon::Daemon;
use crate::support::lbconfig::{Backend, Balance, LbConfig};
use crate::support::owrt::{Stack, wait_for};
use crate::support::topology::Topology;
use crate::support::traffic::tcp_connections;
use connmark_lb::source::ubus::Client;
use serde_json::Value;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::time::{Duration, Instant};

/// `connmark-lb run --uci config` in the router, registering on the ubusd at `socket`; its
/// events and errors in daemon.log. Nothing is awaited: the ubusd may never answer.
fn start_daemon(topo: &Topology, config: &Path, socket: &Path) -> Daemon {
    let command = topo.lb_command(&[
        "run".as_ref(),
        "--uci".as_ref(),
        config.as_os_str(),
        "--ubus-socket".as_ref(),
        socket.as_os_str(),
    ]);
    Daemon::spawn(topo, command, topo.dir.path().join("daemon.log"))
}

fn status(stack: &Stack) -> Option<Value> {
    let out = stack.output("ubus", &["call", "connmark-lb", "status"]);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).ok())
        .flatten()
}

fn link<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["links"]
        .as_array()
        .and_then(|links| links.iter().find(|l| l["interface"] == name))
        .unwrap_or_else(|| panic!("no link {name} in {status}"))
}

#[test]
fn daemon_serves_status_and_reload_on_real_ubusd_and_registers_again_after_a_restart() {
    let topo = Topology::new(2);
    let _servers = servers(&topo);
    let stack = Stack::new("ubus-object");
    let socket = stack.start_ubus();
    let config = LbConfig::new(Backend::Nftables, Balance::RoundRobin, &[1, 1]);
    let file = topo.dir.path().join("lb.uci");
    std::fs::write(&file, config.to_uci()).unwrap();
    let daemon = start_daemon(&topo, &file, &socket);

    let first = wait_for(Duration::from_secs(10), "the object on ubus", || {
        status(&stack)
    });
    assert_eq!(
        first["pid"].as_u64(),
        Some(u64::from(daemon.child_pid())),
        "{first}"
    );
    assert_eq!(first["backend"], "nftables");
    for name in ["wan1", "wan2"] {
        let l = link(&first, name);
        assert_eq!(l["device"], name);
        assert_eq!(l["state"], "up");
        assert_eq!(l["usable"], true);
        assert_eq!(l["new_connections"], 0, "{l}");
        for field in [
            "tracked",
            "rtt_us",
            "loss_percent",
            "last_change",
            "rx_bytes",
            "tx_bytes",
        ] {
            assert!(l.get(field).is_some(), "{name} lacks {field}: {l}");
        }
    }

    // The round trip of one status call over ubusd, with our own client.
    let mut client = Client::connect(&socket, Duration::from_secs(3)).unwrap();
    let mut took: Vec<Duration> = (0..21)
        .map(|_| {
            let started = Instant::now();
            client.call("connmark-lb", "status", &Value::Null).unwrap();
            started.elapsed()
        })
        .collect();
    took.sort();
    eprintln!(
        "FIGURE ubus call connmark-lb status: median {:?}, max {:?} (21 calls)",
        took[10], took[20]
    );

    let tally = tcp_connections(&topo.lan, tcp_target(), 40);
    assert_eq!(tally.succeeded(), 40);
    let counted = status(&stack).unwrap();
    for name in ["wan1", "wan2"] {
        let (l, before) = (link(&counted, name), link(&first, name));
        assert_eq!(l["new_connections"], 20, "round robin 1:1 over 40: {l}");
        assert!(
            l["tx_bytes"].as_u64() > before["tx_bytes"].as_u64(),
            "{name} sent nothing: {before} -> {l}"
        );
        assert!(l["rx_bytes"].as_u64() > before["rx_bytes"].as_u64());
    }

    // check: what `connmark-lb check` says of the config as the daemon reads it now.
    let checked = stack.call("connmark-lb", "check", "{}");
    assert_eq!(checked["valid"], true, "{checked}");
    assert_eq!(checked["errors"], serde_json::json!([]));
    let output = checked["output"].as_str().unwrap_or_default();
    assert!(output.contains("table inet connmark_lb {"), "{checked}");
    let broken = LbConfig::new(Backend::Nftables, Balance::RoundRobin, &[1, 1])
        .with_option("wan2", "weight", "x");
    std::fs::write(&file, broken.to_uci()).unwrap();
    let checked = stack.call("connmark-lb", "check", "{}");
    assert_eq!(checked["valid"], false, "{checked}");
    assert!(
        checked["errors"][0]
            .as_str()
            .unwrap_or_default()
            .contains("weight"),
        "{checked}"
    );
    assert_eq!(checked["output"], Value::Null);

    // explain: which link a connection would take, as LuCI's Explain page asks it.
    std::fs::write(&file, config.to_uci()).unwrap();
    let question =
        r#"{"source":"192.168.77.2","destination":"172.31.255.1","protocol":"tcp","port":7000}"#;
    let answer = stack.call("connmark-lb", "explain", question);
    assert_eq!(answer["decision"], "balanced", "{answer}");
    assert_eq!(answer["port"], 7000, "{answer}");
    let members = answer["members"].as_array().map(Vec::len);
    assert_eq!(members, Some(2), "{answer}");
    let wrong = stack.call(
        "connmark-lb",
        "explain",
        r#"{"source":"lan","destination":"x"}"#,
    );
    assert!(
        wrong["error"]
            .as_str()
            .unwrap_or_default()
            .contains("not an IP address"),
        "{wrong}"
    );

    // reload = SIGHUP: same daemon, the new weights, counters from the new apply.
    let reweighted = LbConfig::new(Backend::Nftables, Balance::RoundRobin, &[1, 3]);
    std::fs::write(&file, reweighted.to_uci()).unwrap();
    assert_eq!(
        stack.call("connmark-lb", "reload", "{}"),
        serde_json::json!({})
    );
    let reloaded = status(&stack).unwrap();
    assert_eq!(reloaded["pid"], first["pid"]);
    assert_eq!(link(&reloaded, "wan1")["new_connections"], 0);
    tcp_connections(&topo.lan, tcp_target(), 40);
    let after = status(&stack).unwrap();
    assert_eq!(link(&after, "wan1")["new_connections"], 10, "{after}");
    assert_eq!(link(&after, "wan2")["new_connections"], 30, "{after}");

    // ubusd restarts: the daemon registers again by itself.
    let pid_file = stack.state().join("pid/ubusd.pid");
    let ubusd_pid = std::fs::read_to_string(&pid_file).unwrap();
    crate::support::process::run_ok(std::process::Command::new("kill").arg(ubusd_pid.trim()));
    wait_for(Duration::from_secs(5), "ubusd to exit", || {
        (!socket.exists()).then_some(())
    });
    // Where nothing reaps orphans the dead ubusd stays a zombie, which owrt.sh would take
    // for a running one: forget its pid so ubus-start starts a new ubusd.
    std::fs::remove_file(&pid_file).unwrap();
    stack.start_ubus();
    let started = Instant::now();
    let again = wait_for(
        Duration::from_secs(10),
        "the object after the restart",
        || status(&stack),
    );
    eprintln!(
        "FIGURE ubus object registered again {:?} after ubusd restarted",
        started.elapsed()
    );
    assert_eq!(again["pid"], first["pid"]);
    let log = daemon.log();
    assert_eq!(log.matches("registered on").count(), 2, "{log}");
    assert!(log.contains("connection lost"), "{log}");
}

#[test]
fn a_ubusd_that_never_answers_does_not_hold_up_the_daemon() {
    let topo = Topology::new(1);
    let socket = topo.dir.path().join("silent.sock");
    // Accepts (the kernel does, into the backlog) and never reads or writes.
    let _listener = UnixListener::bind(&socket).unwrap();
    let file = topo.dir.path().join("lb.uci");
    let config = LbConfig::new(Backend::Nftables, Balance::RoundRobin, &[1]);
    std::fs::write(&file, config.to_uci()).unwrap();
    let daemon = start_daemon(&topo, &file, &socket);
    wait_for(Duration::from_secs(10), "the daemon to start", || {
        daemon.log().contains("started:").then_some(())
    });
    let sent = Instant::now();
    crate::support::process::run_ok(
        std::process::Command::new("kill").args(["-HUP", &daemon.child_pid().to_string()]),
    );
    wait_for(Duration::from_secs(3), "the reload", || {
        daemon.log().contains("reloaded:").then_some(())
    });
    eprintln!(
        "FIGURE reload with a silent ubusd took {:?}",
        sent.elapsed()
    );
    assert!(!daemon.log().contains("registered on"), "{}", daemon.log());
}
