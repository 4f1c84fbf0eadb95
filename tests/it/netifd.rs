//! WAN links named by their netifd interface, against the real netifd in the router's
//! namespace: `check` and the daemon resolve device, gateway and address from
//! `network.interface.<name> status`. As on a router, the `network` service holds procd's watch
//! on netifd, so an `ifdown` or `ifup` of a WAN reaches the running service through our procd
//! interface trigger, the one reload path for WAN events: an `ifdown` reloads the daemon
//! exactly once, the link leaves the balance and its table empties; an `ifup` brings it back.

use crate::support::checks::{LinkLoad, tcp_target};
use crate::support::openwrt::{OpenwrtRouter, daemon_pid, wait_modulus, wait_table};
use crate::support::owrt::{Stack, wait_for};
use crate::support::traffic::tcp_connections;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(15);

/// How long after a reload a second one for the same event would have come: procd holds a
/// trigger back one second to gather events.
const SETTLE: Duration = Duration::from_secs(3);

fn reloads(stack: &Stack) -> usize {
    stack
        .log("procd-syslog")
        .matches("SIGHUP: reloading")
        .count()
}

/// Waits for the reload after `before`, then checks that no second one follows.
fn assert_one_reload(stack: &Stack, before: usize, event: &str) {
    wait_for(WAIT, &format!("the reload after {event}"), || {
        (reloads(stack) > before).then_some(())
    });
    std::thread::sleep(SETTLE);
    assert_eq!(reloads(stack), before + 1, "reloads after {event}");
}

#[test]
fn netifd_links_resolve_and_a_wan_event_reloads_the_daemon_once() {
    let world = OpenwrtRouter::start("netifd");
    let (stack, topo, socket) = (&world.stack, &world.topo, &world.socket);
    let router = &topo.router;

    // check asks netifd exactly as apply does.
    let check = router.run(&format!(
        "{} check --ubus-socket {}",
        env!("CARGO_BIN_EXE_connmark-lb"),
        socket.display()
    ));
    for line in [
        "oifname \"wan1\" snat ip to 10.0.1.2",
        "oifname \"wan2\" snat ip to 10.0.2.2",
        "route replace default via 10.0.1.1 dev wan1 table 4001",
        "route replace default via 10.0.2.1 dev wan2 table 4002",
    ] {
        assert!(check.contains(line), "check lacks {line:?}:\n{check}");
    }

    stack.exec(&["/etc/init.d/connmark-lb", "start"]);
    let pid = wait_for(WAIT, "the daemon", || daemon_pid(stack));
    wait_modulus(router, 2, "both links balanced");
    wait_table(router, 4001, "default via 10.0.1.1 dev wan1");
    let load = LinkLoad::from_tally(topo, &tcp_connections(&topo.lan, tcp_target(), 20));
    load.assert_shares("netifd links", &[1, 1], 10.0);

    let before = reloads(stack);
    stack.call("network.interface.wanb", "down", "{}");
    wait_modulus(router, 1, "wanb out of the balance");
    wait_table(router, 4002, "");
    assert_one_reload(stack, before, "ifdown wanb");
    assert!(
        stack
            .log("procd-syslog")
            .contains("reloaded: nftables backend, links wan (wan1, up), wanb (no device, down)"),
        "the reload did not find wanb down in netifd"
    );
    let load = LinkLoad::from_tally(topo, &tcp_connections(&topo.lan, tcp_target(), 10));
    assert_eq!(
        load.counts,
        [10, 0],
        "all new connections on wan after ifdown wanb"
    );

    let before = reloads(stack);
    stack.call("network.interface.wanb", "up", "{}");
    wait_modulus(router, 2, "wanb back in the balance");
    wait_table(router, 4002, "default via 10.0.2.1 dev wan2");
    wait_for(WAIT, "the reload after ifup wanb", || {
        (reloads(stack) > before).then_some(())
    });
    let load = LinkLoad::from_tally(topo, &tcp_connections(&topo.lan, tcp_target(), 20));
    load.assert_shares("after ifup", &[1, 1], 10.0);
    assert_eq!(
        daemon_pid(stack),
        Some(pid),
        "a WAN event reloads, never restarts"
    );
}
