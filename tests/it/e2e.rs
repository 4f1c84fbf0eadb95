//! The end-to-end tests of connmark-lb: each case is a function of the backend, and the macro
//! at the end instantiates every case once per backend.
//!
//! Longer than ~600 lines on purpose: it holds only the tests of this one area, each a few
//! dozen lines of steps and assertions; everything they share lives in `support/`.

use std::fs;
use std::net::SocketAddrV4;

use crate::support::addr::{SERVICE, link_addr, srv_addr_towards};
use crate::support::checks::{LinkLoad, SynLossOutcome, syn_loss_outcome, tcp_target, udp_target};
use crate::support::icmp::icmp_echoes;
use crate::support::lab::Lab;
use crate::support::lbconfig::{Backend, Balance, Format, LbConfig};
use crate::support::topology::{RouterState, Topology};
use crate::support::traffic::{Server, TcpLoad, tcp_connections, tcp_stream, udp_flows};

/// A port of a service running on the router itself.
const ROUTER_SERVICE_PORT: u16 = 7100;

/// The first `links` weights of 1:1:2 (2 links: 1:1, 3 links: 1:1:2).
fn weights(links: usize) -> &'static [u32] {
    match links {
        2 => &[1, 1],
        3 => &[1, 1, 2],
        _ => panic!("no weight pattern for {links} links"),
    }
}

/// What a refused change must leave alone: the router's rules, ip rules and routes, and the
/// record of the last apply.
struct Snapshot {
    applied: Vec<u8>,
    state: RouterState,
}

impl Snapshot {
    fn take(topo: &Topology) -> Snapshot {
        let path = topo.state_dir().join("applied.json");
        Snapshot {
            applied: fs::read(&path).unwrap_or_else(|e| panic!("{path:?}: {e}")),
            state: topo.router_state(),
        }
    }

    /// Panics with the differences if `topo` no longer matches the snapshot.
    fn assert_unchanged(&self, topo: &Topology, what: &str) {
        if let Some(diff) = self.state.differences(&topo.router_state()) {
            panic!("{what} changed the router:\n{diff}");
        }
        let applied = fs::read(topo.state_dir().join("applied.json")).expect("applied.json");
        assert_eq!(applied, self.applied, "{what} changed applied.json");
    }
}

/// Opens 100 connections from the LAN: none may fail, and the shares follow `weights`
/// (one per topology link) within 2 points.
fn assert_balanced(topo: &Topology, weights: &[u32], what: &str) {
    let tally = tcp_connections(&topo.lan, tcp_target(), 100);
    assert_eq!(tally.failures, 0, "{what}: {:?}", tally.errors);
    LinkLoad::from_tally(topo, &tally).assert_shares(what, weights, 2.0);
}

/// Opens `connections` short TCP connections and checks each link's share and that none
/// failed. 3 links are configured in JSON with link 3 masqueraded; random balancing leaves
/// `list lan` to its default: so both SNAT kinds, both formats and the default LAN are used.
fn tcp_balance(backend: Backend, balance: Balance, links: usize, connections: usize) {
    let mut config = LbConfig::new(backend, balance, weights(links));
    if links == 3 {
        config = config.masquerade(3).in_format(Format::Json);
    }
    if balance == Balance::Random {
        config = config.default_lan();
    }
    let lab = Lab::applied(&config);
    let tally = tcp_connections(&lab.topo.lan, tcp_target(), connections);
    assert_eq!(
        tally.failures, 0,
        "{} of {connections} connections failed: {:?}",
        tally.failures, tally.errors
    );
    let tolerance = match balance {
        Balance::RoundRobin => 2.0,
        Balance::Random => 5.0,
    };
    LinkLoad::from_tally(&lab.topo, &tally).assert_shares(
        &format!(
            "{} tcp {links} links {} over {connections}",
            backend.name(),
            balance.name()
        ),
        weights(links),
        tolerance,
    );
}

fn tcp_two_links_round_robin(backend: Backend) {
    tcp_balance(backend, Balance::RoundRobin, 2, 1000);
}

fn tcp_three_links_round_robin(backend: Backend) {
    tcp_balance(backend, Balance::RoundRobin, 3, 1000);
}

/// Random choice needs more samples: 2000 keeps 5 points above 3.5 standard deviations.
fn tcp_two_links_random(backend: Backend) {
    tcp_balance(backend, Balance::Random, 2, 2000);
}

fn tcp_three_links_random(backend: Backend) {
    tcp_balance(backend, Balance::Random, 3, 2000);
}

/// UDP flows (distinct source ports) and ICMP echoes (distinct identifiers) are new conntrack
/// flows too and must be spread like TCP connections.
fn udp_and_icmp_balanced(backend: Backend) {
    let lab = Lab::applied(&LbConfig::new(backend, Balance::RoundRobin, weights(3)));
    let tally = udp_flows(&lab.topo.lan, udp_target(), 1000, 20000);
    assert_eq!(tally.failures, 0, "udp flows failed: {:?}", tally.errors);
    LinkLoad::from_tally(&lab.topo, &tally).assert_shares(
        &format!("{} udp 3 links round-robin over 1000", backend.name()),
        weights(3),
        2.0,
    );

    let echoes = icmp_echoes(&lab.topo.lan, SERVICE, 1000, 1);
    assert_eq!(echoes.failures, 0, "icmp echoes unanswered: {echoes:?}");
    let load = LinkLoad {
        counts: lab.topo.srv_icmp_requests(),
    };
    assert_eq!(
        load.counts.iter().sum::<u64>(),
        1000,
        "the server must see every echo request once, from a link address: {load:?}"
    );
    load.assert_shares(
        &format!("{} icmp 3 links round-robin over 1000", backend.name()),
        weights(3),
        2.0,
    );
}

/// A 1000-message conversation on one connection: every packet must leave by the same link
/// (ISP counters), nothing may be dropped as spoofed, and the server sees one address.
fn long_stream_stays_on_its_link(backend: Backend) {
    let lab = Lab::applied(&LbConfig::new(backend, Balance::RoundRobin, weights(2)));
    let topo = &lab.topo;
    let before = topo.all_isp_counters();
    let report =
        tcp_stream(&topo.lan, tcp_target(), 1000).unwrap_or_else(|e| panic!("stream broke: {e}"));
    let isp: Vec<_> = topo
        .all_isp_counters()
        .into_iter()
        .zip(before)
        .map(|(after, before)| after.since(before))
        .collect();
    assert_eq!(report.answered, 1000);
    assert_eq!(report.peers.len(), 1, "source changed: {:?}", report.peers);
    let used: Vec<usize> = (1..=2).filter(|&l| isp[l - 1].forwarded > 0).collect();
    assert_eq!(
        used.len(),
        1,
        "stream packets went out of several links: {isp:?}"
    );
    let link = used[0];
    assert!(
        report.peers.contains_key(&link_addr(link)),
        "{report:?} via link {link}"
    );
    assert!(isp[link - 1].forwarded >= 1000, "{isp:?}");
    assert!(
        isp.iter().all(|c| c.spoofed == 0),
        "wrong-way packets: {isp:?}"
    );
    eprintln!(
        "FIGURE {} stream: 1000 messages on link {link}, {} packets through isp{link}, 0 elsewhere",
        backend.name(),
        isp[link - 1].forwarded
    );
}

/// Every ISP drops the first SYN of each connection: the retransmitted SYN is still NEW, and
/// must keep the link its connection already has (its NAT binding uses that link's address).
fn lost_syn_retransmit_keeps_its_link(backend: Backend) {
    let lab = Lab::applied(&LbConfig::new(backend, Balance::RoundRobin, weights(2)));
    let SynLossOutcome { tally, isp } = syn_loss_outcome(&lab.topo, 15);
    assert_eq!(
        tally.failures, 0,
        "connections with a lost SYN failed: {:?} {isp:?}",
        tally.errors
    );
    assert!(
        isp.iter().all(|c| c.spoofed == 0),
        "retransmitted SYNs went the wrong way: {isp:?}"
    );
    assert_eq!(
        isp.iter().map(|c| c.lost).sum::<u64>(),
        15,
        "each connection must lose exactly one SYN, in one ISP: {isp:?}"
    );
    let load = LinkLoad::from_tally(&lab.topo, &tally);
    assert!(
        load.counts.iter().all(|&c| c > 0),
        "a link was never used: {load:?}"
    );
    eprintln!(
        "FIGURE {} lost-SYN: 15 of 15 completed after one retransmission, per link {:?}",
        backend.name(),
        load.counts
    );
}

/// Connections from the server side to a service of the router on link 2's address must be
/// answered via link 2, although the router's main default route points to link 1.
fn inbound_replies_leave_by_their_link(backend: Backend) {
    let lab = Lab::applied(&LbConfig::new(backend, Balance::RoundRobin, weights(2)));
    let topo = &lab.topo;
    let mut tallies = Vec::new();
    for link in [2, 1] {
        let service = SocketAddrV4::new(link_addr(link), ROUTER_SERVICE_PORT);
        let _router_service = Server::tcp(&topo.router, service);
        let before = topo.all_isp_counters();
        let tally = tcp_connections(&topo.srv, service, 50);
        let spoofed: u64 = topo
            .all_isp_counters()
            .into_iter()
            .zip(before)
            .map(|(after, before)| after.since(before).spoofed)
            .sum();
        assert_eq!(
            tally.failures, 0,
            "inbound connections to link {link} failed: {:?}",
            tally.errors
        );
        assert_eq!(tally.count(srv_addr_towards(link)), 50, "{tally:?}");
        assert_eq!(spoofed, 0, "replies left by the wrong link");
        tallies.push(tally.succeeded());
    }
    eprintln!(
        "FIGURE {} inbound: {}/50 via link 2, {}/50 via link 1",
        backend.name(),
        tallies[0],
        tallies[1]
    );
}

/// Asserts the router carries our rules: the table or chains, fwmark rules and link tables.
fn assert_ours_present(backend: Backend, state: &RouterState, links: usize) {
    match backend {
        Backend::Nftables => assert!(
            state.nft.contains("table inet connmark_lb"),
            "no nft table:\n{}",
            state.nft
        ),
        Backend::Iptables => assert!(
            state.iptables.contains("CMLB_"),
            "no CMLB_ chains:\n{}",
            state.iptables
        ),
    }
    for link in 1..=links {
        let table = format!("table {}", 4000 + link);
        assert!(
            state.routes.contains(&table),
            "no {table}:\n{}",
            state.routes
        );
        assert!(
            state.rules.contains(&format!("lookup {}", 4000 + link)),
            "{}",
            state.rules
        );
    }
}

/// Applying three times leaves exactly what one apply left.
fn apply_three_times_equals_once(backend: Backend) {
    let lab = Lab::applied(&LbConfig::new(backend, Balance::RoundRobin, weights(3)));
    let once = lab.topo.router_state();
    assert_ours_present(backend, &once, 3);
    lab.topo.apply(&lab.config);
    lab.topo.apply(&lab.config);
    let thrice = lab.topo.router_state();
    if let Some(diff) = once.differences(&thrice) {
        panic!("apply x3 differs from apply x1:\n{diff}");
    }
    assert_balanced(
        &lab.topo,
        weights(3),
        &format!("{} tcp after apply x3", backend.name()),
    );
}

/// Re-applying with a link fewer removes that link's chains, ip rules and route (nothing stale
/// stays behind), and the remaining links are balanced.
fn fewer_links_leave_nothing_stale(backend: Backend) {
    let lab = Lab::applied(&LbConfig::new(backend, Balance::RoundRobin, weights(3)));
    assert_ours_present(backend, &lab.topo.router_state(), 3);
    let two = lab.topo.write_config(
        "two",
        &LbConfig::new(backend, Balance::RoundRobin, weights(2)),
    );
    lab.topo.apply(&two);
    let state = lab.topo.router_state();
    assert_ours_present(backend, &state, 2);
    let gone = match backend {
        Backend::Nftables => ["mark_wan3", "restore_wan3"],
        Backend::Iptables => ["CMLB_MARK_3", "CMLB_POLICY_2"],
    };
    let firewall = match backend {
        Backend::Nftables => &state.nft,
        Backend::Iptables => &state.iptables,
    };
    for name in gone {
        assert!(!firewall.contains(name), "{name} is stale:\n{firewall}");
    }
    assert!(!state.routes.contains("table 4003"), "{}", state.routes);
    assert!(!state.rules.contains("0x300/0x3f00"), "{}", state.rules);
    assert_balanced(
        &lab.topo,
        &[1, 1, 0],
        &format!("{} tcp after dropping a link", backend.name()),
    );
}

/// An apply the kernel refuses halfway (a gateway that is not on the link: the firewall rules
/// load, the route does not) exits 1 and puts everything back: rules, ip rules, routes and
/// applied state are byte-identical to before, and traffic still flows.
fn failed_apply_restores_previous_rules(backend: Backend) {
    let good = LbConfig::new(backend, Balance::RoundRobin, weights(2));
    let lab = Lab::applied(&good);
    let topo = &lab.topo;
    let before = Snapshot::take(topo);
    let refused = topo.write_config(
        "refused",
        &good
            .clone()
            .with_option("wan2", "gateway", "10.0.99.1")
            .with_option("wan2", "weight", "3"),
    );
    let output = topo.lb(&["apply", refused.flag(), refused.path_str()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "stderr: {stderr}");
    assert!(
        stderr.contains("10.0.99.1"),
        "the error names the refused line: {stderr}"
    );
    before.assert_unchanged(topo, "a refused apply");
    assert_balanced(
        topo,
        weights(2),
        &format!("{} tcp after a refused apply", backend.name()),
    );
}

/// `check` prints the rules and bad configs exit 2 naming the offending option; neither
/// changes the live rules, ip rules, routes or applied state by a single byte.
fn check_and_bad_config_change_nothing(backend: Backend) {
    let good = LbConfig::new(backend, Balance::RoundRobin, weights(2));
    let lab = Lab::applied(&good);
    let topo = &lab.topo;
    let before = Snapshot::take(topo);

    let printed = topo.lb_ok("check", &lab.config);
    let expected = match backend {
        Backend::Nftables => "table inet connmark_lb",
        Backend::Iptables => "CMLB_",
    };
    assert!(printed.contains(expected), "check printed:\n{printed}");

    let bad = [
        ("weight", good.clone().with_option("wan2", "weight", "x")),
        (
            "gateway",
            good.clone()
                .with_option("wan1", "gateway", "10.0.1.x")
                .in_format(Format::Json),
        ),
        (
            "device",
            good.clone()
                .with_option("wan2", "device", "a-device-name-too-long"),
        ),
        (
            "balance",
            good.clone().with_option("globals", "balance", "sometimes"),
        ),
    ];
    for (i, (option, config)) in bad.iter().enumerate() {
        let file = topo.write_config(&format!("bad{i}"), config);
        for verb in ["apply", "check"] {
            let output = topo.lb(&[verb, file.flag(), file.path_str()]);
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert_eq!(
                output.status.code(),
                Some(2),
                "{verb} with bad {option} must exit 2; stderr: {stderr}\n{}",
                file.describe()
            );
            assert!(
                stderr.contains(option),
                "{verb}: the error must name option {option}: {stderr}"
            );
        }
    }
    let broken = topo
        .dir
        .write("broken.uci", "config interface 'wan1\n\toption device\n");
    let output = topo.lb(&["apply", "--uci", broken.to_str().expect("utf-8")]);
    assert_eq!(output.status.code(), Some(2), "unparsable file: {output:?}");

    before.assert_unchanged(topo, "a rejected config");
}

/// Re-applying 10 times while at least 3000 short connections run: none may fail, and no
/// packet may leave by a wrong link during the swaps.
fn reapply_during_traffic_loses_nothing(backend: Backend) {
    let lab = Lab::applied(&LbConfig::new(backend, Balance::RoundRobin, weights(2)));
    let topo = &lab.topo;
    let before = topo.all_isp_counters();
    let load = TcpLoad::start(&topo.lan, tcp_target(), 4, 50_000);
    wait_for(
        || load.completed() >= 200,
        "200 connections before the first re-apply",
    );
    let mut during = Vec::new();
    for _ in 0..10 {
        topo.apply(&lab.config);
        during.push(load.completed());
    }
    let after_last = load.completed();
    wait_for(
        || load.completed() >= 3000.max(after_last + 200),
        "3000 connections, 200 of them after the last re-apply",
    );
    let tally = load.stop();
    let isp: Vec<_> = topo
        .all_isp_counters()
        .into_iter()
        .zip(before)
        .map(|(after, before)| after.since(before))
        .collect();
    eprintln!(
        "FIGURE {} re-apply: {} connections, {} failed, completed at each apply {during:?}, {:?}",
        backend.name(),
        tally.succeeded() + tally.failures,
        tally.failures,
        tally.seen
    );
    assert_eq!(
        tally.failures, 0,
        "connections failed during re-apply: {:?}",
        tally.errors
    );
    assert!(tally.succeeded() >= 3000);
    assert!(
        during.windows(2).any(|w| w[1] > w[0]),
        "no connection completed between re-applies: {during:?}"
    );
    assert!(
        isp.iter().all(|c| c.spoofed == 0),
        "wrong-way packets during re-apply: {isp:?}"
    );
    let load = LinkLoad::from_tally(topo, &tally);
    assert!(
        load.counts.iter().all(|&c| c > 0),
        "a link was never used: {load:?}"
    );
}

/// Polls `done` every 10 ms for up to 60 s.
fn wait_for(mut done: impl FnMut() -> bool, what: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// A foreign firewall on the router, as fw4/sqm/pbr would have: it sets packet mark bit 0x1
/// and conntrack mark bit 0x10000 (outside our mask) before anyone else, counts packets that
/// lost them by the forward hook, and masquerades on wan1 so the LAN keeps working without us.
const FOREIGN_TABLE: &str = "table inet foreign {
    counter from_lan { }
    counter mark_lost { }
    counter ctmark_lost { }
    chain early {
        type filter hook prerouting priority mangle - 40; policy accept;
        iifname \"eth0\" meta mark set meta mark | 0x1
        iifname \"eth0\" ct state new ct mark set ct mark | 0x10000
    }
    chain check {
        type filter hook forward priority filter + 10; policy accept;
        iifname != \"eth0\" accept
        counter name from_lan
        meta mark & 0x3 != 0x3 counter name mark_lost
        ct mark & 0x10000 != 0x10000 counter name ctmark_lost
    }
    chain nat {
        type nat hook postrouting priority srcnat + 10; policy accept;
        oifname \"wan1\" masquerade
    }
}
";

/// A foreign iptables rule (iptables-nft) setting packet mark bit 0x2 on LAN packets.
const FOREIGN_IPTABLES_RULE: &str =
    "iptables -t mangle -A PREROUTING -i eth0 -j MARK --or-mark 0x2";

/// Foreign counters: (from_lan, mark_lost, ctmark_lost).
fn foreign_counters(topo: &Topology) -> (u64, u64, u64) {
    let counters = topo.router.nft_counters("inet", "foreign");
    let get = |name: &str| {
        counters
            .get(name)
            .copied()
            .unwrap_or_else(|| panic!("{counters:?}"))
    };
    (get("from_lan"), get("mark_lost"), get("ctmark_lost"))
}

/// `nft list table inet foreign` with counter values blanked, to compare its rules.
fn foreign_rules(topo: &Topology) -> String {
    topo.router
        .run("nft list table inet foreign")
        .lines()
        .filter(|line| !line.trim_start().starts_with("packets "))
        .map(|line| format!("{line}\n"))
        .collect()
}

/// The `-A` lines of iptables-save: every rule, foreign or ours.
fn iptables_rules(state: &RouterState) -> Vec<String> {
    state
        .iptables
        .lines()
        .filter(|line| line.starts_with("-A "))
        .map(str::to_string)
        .collect()
}

/// With foreign rules, marks and ip rules on the router, balancing works without touching
/// them, and `stop` removes exactly what we added.
fn stop_removes_ours_and_keeps_foreign(backend: Backend) {
    let topo = Topology::new(2);
    let _server = Server::tcp(&topo.srv, tcp_target());
    topo.router.nft(FOREIGN_TABLE);
    topo.router.run(FOREIGN_IPTABLES_RULE);
    topo.router.ip_batch(
        "rule add priority 3999 from 192.168.99.0/24 lookup 99\n\
         route add blackhole 192.168.99.0/24 table 99\n",
    );
    let pristine = topo.router_state();
    let pristine_foreign = foreign_rules(&topo);

    let config = topo.write_config(
        "lb",
        &LbConfig::new(backend, Balance::RoundRobin, weights(2)),
    );
    topo.apply(&config);
    assert_ours_present(backend, &topo.router_state(), 2);
    let tally = tcp_connections(&topo.lan, tcp_target(), 200);
    assert_eq!(tally.failures, 0, "with foreign marks: {:?}", tally.errors);
    LinkLoad::from_tally(&topo, &tally).assert_shares(
        &format!("{} tcp beside foreign marks", backend.name()),
        weights(2),
        2.0,
    );
    let (from_lan, mark_lost, ctmark_lost) = foreign_counters(&topo);
    assert!(from_lan >= 200 * 3, "foreign check saw {from_lan} packets");
    assert_eq!(
        mark_lost, 0,
        "our rules cleared packet mark bits outside the mask"
    );
    assert_eq!(
        ctmark_lost, 0,
        "our rules cleared conntrack mark bits outside the mask"
    );

    topo.stop();
    let stopped = topo.router_state();
    assert!(
        !stopped.nft.contains("connmark_lb"),
        "our nft table survived stop:\n{}",
        stopped.nft
    );
    assert!(
        !stopped.iptables.contains("CMLB_"),
        "our iptables chains survived stop:\n{}",
        stopped.iptables
    );
    assert_eq!(
        iptables_rules(&stopped),
        iptables_rules(&pristine),
        "iptables rules"
    );
    assert_eq!(stopped.rules, pristine.rules, "ip rules after stop");
    assert_eq!(stopped.routes, pristine.routes, "routes after stop");
    assert_eq!(
        foreign_rules(&topo),
        pristine_foreign,
        "the foreign nft table changed"
    );

    let before = foreign_counters(&topo);
    let tally = tcp_connections(&topo.lan, tcp_target(), 100);
    assert_eq!(tally.failures, 0, "after stop: {:?}", tally.errors);
    assert_eq!(
        tally.count(link_addr(1)),
        100,
        "after stop all via wan1: {tally:?}"
    );
    let after = foreign_counters(&topo);
    assert!(after.0 > before.0);
    assert_eq!((after.1, after.2), (0, 0), "foreign marks lost after stop");
}

/// Re-applying with the other backend replaces ours instead of adding a second set of rules.
fn switching_backend_replaces_the_old_rules(backend: Backend) {
    let other = match backend {
        Backend::Nftables => Backend::Iptables,
        Backend::Iptables => Backend::Nftables,
    };
    let lab = Lab::applied(&LbConfig::new(other, Balance::RoundRobin, weights(2)));
    let topo = &lab.topo;
    let config = topo.write_config(
        "switched",
        &LbConfig::new(backend, Balance::RoundRobin, weights(2)),
    );
    topo.apply(&config);
    let state = topo.router_state();
    assert_ours_present(backend, &state, 2);
    match backend {
        Backend::Nftables => assert!(!state.iptables.contains("CMLB_"), "{}", state.iptables),
        Backend::Iptables => assert!(!state.nft.contains("connmark_lb"), "{}", state.nft),
    }
    assert_balanced(
        topo,
        weights(2),
        &format!("{} tcp after switching backend", backend.name()),
    );
}

for_both_backends!(
    tcp_two_links_round_robin,
    tcp_three_links_round_robin,
    tcp_two_links_random,
    tcp_three_links_random,
    udp_and_icmp_balanced,
    long_stream_stays_on_its_link,
    lost_syn_retransmit_keeps_its_link,
    inbound_replies_leave_by_their_link,
    apply_three_times_equals_once,
    fewer_links_leave_nothing_stale,
    failed_apply_restores_previous_rules,
    check_and_bad_config_change_nothing,
    reapply_during_traffic_loses_nothing,
    stop_removes_ours_and_keeps_foreign,
    switching_backend_replaces_the_old_rules,
);
