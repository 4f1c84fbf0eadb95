//! WAN links named by their netifd interface, against the real netifd in the router's
//! namespace: `check` and the daemon resolve device, gateway and address from
//! `network.interface.<name> status`; an `ifdown` reaches the running service through
//! netifd's real hotplug event and our hook (`files/etc/hotplug.d/iface/30-connmark-lb`, run
//! in procd's view), the link leaves the balance and its table empties; `ifup` brings it
//! back. No interface triggers run here (no `network` service watches netifd), so the hook
//! alone carries the event.

use crate::support::checks::{LinkLoad, tcp_target};
use crate::support::openwrt::{OpenwrtRouter, daemon_pid, view_dirs, wait_modulus, wait_table};
use crate::support::owrt::wait_for;
use crate::support::package::repo;
use crate::support::tempdir::TempDir;
use crate::support::traffic::tcp_connections;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(15);

#[test]
fn netifd_links_resolve_and_ifdown_ifup_reach_the_daemon_through_the_hotplug_hook() {
    let hotplug = repo().join("files/etc/hotplug.d");
    let world = OpenwrtRouter::start("netifd", Some(&hotplug));
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

    let files = TempDir::new("netifd-view");
    let (initd, sbin) = view_dirs(&files, false);
    stack.start_procd(router.name(), &initd, &sbin);
    stack.exec(&["/etc/init.d/connmark-lb", "start"]);
    let pid = wait_for(WAIT, "the daemon", || daemon_pid(stack));
    wait_modulus(router, 2, "both links balanced");
    wait_table(router, 4001, "default via 10.0.1.1 dev wan1");
    let load = LinkLoad::from_tally(topo, &tcp_connections(&topo.lan, tcp_target(), 20));
    load.assert_shares("netifd links", &[1, 1], 10.0);

    stack.call("network.interface.wanb", "down", "{}");
    wait_modulus(router, 1, "wanb out of the balance");
    wait_table(router, 4002, "");
    let load = LinkLoad::from_tally(topo, &tcp_connections(&topo.lan, tcp_target(), 10));
    assert_eq!(
        load.counts,
        [10, 0],
        "all new connections on wan after ifdown wanb"
    );
    // netifd also takes wan2 down, which the daemon notices by itself; the reload that
    // finds wanb down in netifd can only come from the hook.
    wait_for(WAIT, "a reload by the hotplug hook", || {
        let syslog = stack.log("procd-syslog");
        syslog
            .contains("reloaded: nftables backend, links wan (wan1, up), wanb (no device, down)")
            .then_some(())
    });
    let hotplug_log =
        std::fs::read_to_string(stack.state().join("netifd/hotplug.log")).unwrap_or_default();
    assert!(
        hotplug_log.contains("ACTION=ifdown INTERFACE=wanb"),
        "{hotplug_log}"
    );

    stack.call("network.interface.wanb", "up", "{}");
    wait_modulus(router, 2, "wanb back in the balance");
    wait_table(router, 4002, "default via 10.0.2.1 dev wan2");
    let load = LinkLoad::from_tally(topo, &tcp_connections(&topo.lan, tcp_target(), 20));
    load.assert_shares("after ifup", &[1, 1], 10.0);
    assert_eq!(
        daemon_pid(stack),
        Some(pid),
        "the hook reloads, never restarts"
    );
    wait_for(WAIT, "the hook's reload after ifup", || {
        (stack
            .log("procd-syslog")
            .matches("SIGHUP: reloading")
            .count()
            >= 2)
            .then_some(())
    });
}
