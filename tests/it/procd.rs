//! Our init script under the real procd (the kit's OpenWrt-like view inside the router's
//! namespace), with the config served by the real rpcd and the WAN links by the real netifd:
//! start, reload (SIGHUP: same pid, new weights), the `config.change` trigger LuCI's Save &
//! Apply causes (rpcd `uci commit`), interface triggers from netifd's events, respawn after
//! `kill -9`, stop (nothing of ours left), `enabled 0`, enable/disable.

use crate::support::checks::{LinkLoad, tcp_target};
use crate::support::netns::Netns;
use crate::support::openwrt::{
    OpenwrtRouter, WAIT, balance_modulus, daemon_pid, table_routes, wait_modulus, wait_table,
};
use crate::support::owrt::{Stack, netifd_lb_config, wait_for};
use crate::support::traffic::tcp_connections;
use serde_json::Value;
use std::time::Instant;

#[test]
fn init_script_under_real_procd_rpcd_and_netifd() {
    let world = OpenwrtRouter::start("procd");
    let (stack, topo) = (&world.stack, &world.topo);
    let router = &topo.router;
    let init = |verb: &str| stack.exec(&["/etc/init.d/connmark-lb", verb]);

    // start: a running instance whose rules balance over both netifd links.
    init("start");
    let pid = wait_for(WAIT, "the daemon instance", || daemon_pid(stack));
    wait_modulus(router, 2, "rules for both links");
    let load = LinkLoad::from_tally(topo, &tcp_connections(&topo.lan, tcp_target(), 20));
    load.assert_shares("procd start", &[1, 1], 10.0);

    // reload: SIGHUP to the same process, which applies the new weights.
    stack.write_config("connmark-lb", &netifd_lb_config(true, &[1, 3]));
    init("reload");
    wait_modulus(router, 4, "weights 1:3 after reload");
    assert_eq!(daemon_pid(stack), Some(pid), "reload restarted the daemon");

    // LuCI's Save & Apply: rpcd commits and sends config.change; procd's trigger reloads.
    let set = r#"{"config":"connmark-lb","section":"wanb","values":{"weight":"2"}}"#;
    stack.call("uci", "set", set);
    stack.call("uci", "commit", r#"{"config":"connmark-lb"}"#);
    let committed = Instant::now();
    wait_modulus(router, 3, "weights 1:2 after the config.change trigger");
    eprintln!(
        "FIGURE config.change trigger applied in {:?}",
        committed.elapsed()
    );
    assert_eq!(daemon_pid(stack), Some(pid));

    // Interface triggers (our one reload path for WAN events): ifdown takes the link out and
    // empties its table, ifup brings it back.
    stack.call("network.interface.wanb", "down", "{}");
    wait_modulus(router, 1, "wanb out of the balance after ifdown");
    wait_table(router, 4002, "");
    stack.call("network.interface.wanb", "up", "{}");
    wait_modulus(router, 3, "wanb back after ifup");
    wait_table(router, 4002, "default via 10.0.2.1 dev wan2");
    assert_eq!(daemon_pid(stack), Some(pid));

    // kill -9: procd respawns it, and the new daemon keeps the rules.
    stack.exec(&["kill", "-9", &pid.to_string()]);
    let respawned = wait_for(WAIT, "a respawned daemon", || {
        daemon_pid(stack).filter(|p| *p != pid)
    });
    assert_eq!(balance_modulus(router), Some(3));
    // Until the new daemon has written its status, `status` rightly calls the old one stale.
    wait_for(WAIT, "the respawned daemon's status", || {
        let out = stack.output("procd-exec", &["connmark-lb", "status"]);
        String::from_utf8_lossy(&out.stdout)
            .contains(&format!("\"pid\": {respawned}"))
            .then_some(())
    });

    // stop: the instance is gone and so is everything of ours.
    init("stop");
    assert_eq!(
        stack.service("connmark-lb"),
        Value::Object(Default::default())
    );
    assert_nothing_of_ours(router);

    // enabled 0: start runs no daemon and loads nothing.
    stack.write_config("connmark-lb", &netifd_lb_config(false, &[1, 1]));
    init("start");
    assert_eq!(daemon_pid(stack), None);
    assert_nothing_of_ours(router);

    // enable / disable: the rc.d links.
    init("enable");
    let links = stack.exec(&["ls", "/etc/rc.d"]);
    assert!(
        links.contains("S25connmark-lb") && links.contains("K10connmark-lb"),
        "{links}"
    );
    init("disable");
    assert!(!stack.exec(&["ls", "/etc/rc.d"]).contains("connmark-lb"));
    let log = stack.log("procd-syslog");
    assert!(
        log.contains("daemon.info connmark-lb") && log.contains("connmark-lb: started:"),
        "procd did not log our start at info level: {log}"
    );
    interface_triggers_follow_enabled_netifd_links(stack);
    stop_waits_for_the_daemon_only_while_it_is_ours(stack);
}

/// Interface triggers cover the enabled links netifd manages: a link with a fixed device
/// follows no netifd interface, a disabled one is left out.
fn interface_triggers_follow_enabled_netifd_links(stack: &Stack) {
    let config = format!(
        "{}\nconfig interface 'lte'\n\toption device 'wwan0'\n\n\
         config interface 'spare'\n\toption enabled '0'\n\toption interface 'wan4'\n\n\
         config interface 'wan3'\n\toption weight '1'\n",
        netifd_lb_config(true, &[1, 1])
    );
    stack.write_config("connmark-lb", &config);
    stack.exec(&["/etc/init.d/connmark-lb", "start"]);
    let service = stack.call(
        "service",
        "list",
        r#"{"name":"connmark-lb","verbose":true}"#,
    );
    let triggers = service["connmark-lb"]["triggers"].to_string();
    for iface in ["\"wan\"", "\"wanb\"", "\"wan3\"", "\"connmark-lb\""] {
        assert!(
            triggers.contains(iface),
            "no trigger for {iface}: {triggers}"
        );
    }
    for iface in ["lte", "wan4", "spare"] {
        assert!(!triggers.contains(iface), "trigger for {iface}: {triggers}");
    }
    stack.exec(&["/etc/init.d/connmark-lb", "stop"]);
}

/// `stop` removes our rules only after the daemon has exited, waits for a daemon that does
/// not exit only for a bounded time, and ignores a pidfile of another process.
fn stop_waits_for_the_daemon_only_while_it_is_ours(stack: &Stack) {
    let time_stop = |daemon: &str, cleanup: &str| {
        let script = format!(
            "{daemon}\nstarted=$(date +%s)\n/etc/init.d/connmark-lb stop >/dev/null\n\
             echo $(( $(date +%s) - started ))\n{cleanup}"
        );
        let waited: u64 = stack.exec(&["sh", "-c", &script]).trim().parse().unwrap();
        waited
    };
    // A process named connmark-lb that ignores SIGTERM: stop gives up after about 7 s.
    let hung = "mkdir -p /var/run/hung && cp /bin/sleep /var/run/hung/connmark-lb\n\
                (trap '' TERM; exec /var/run/hung/connmark-lb 60) >/dev/null 2>&1 &\n\
                echo $! >/var/run/connmark-lb.pid";
    let waited = time_stop(hung, "kill -9 $(cat /var/run/connmark-lb.pid)");
    assert!(
        (5..=10).contains(&waited),
        "stop waited {waited} s for a hung daemon"
    );
    // The pidfile names a live process that is not ours: no waiting.
    let waited = time_stop("echo $$ >/var/run/connmark-lb.pid", "");
    assert!(waited <= 1, "stop waited {waited} s for a stranger");
}

/// No table, ip rule or route of ours in `router`.
fn assert_nothing_of_ours(router: &Netns) {
    assert!(!router.run("nft list tables").contains("connmark_lb"));
    let rules = router.run("ip -4 rule show");
    assert!(
        !rules.contains("lookup 400") && !rules.contains("suppress_prefixlength"),
        "{rules}"
    );
    for table in [4001, 4002] {
        assert_eq!(table_routes(router, table).trim(), "", "table {table}");
    }
}
