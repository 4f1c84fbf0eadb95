//! Traffic classes end to end, with `connmark-lb run` tracking every link (0.5 s interval) so
//! a silent ISP failure takes its link out the way it would on a router: sticky sources,
//! resilient hash balancing, address sets filled by the real dnsmasq, the router's own
//! traffic, and `explain` checked against what the kernel then does.
//!
//! Longer than ~600 lines on purpose: it holds only the tests of this one area, each a few
//! dozen lines of steps and assertions; everything they share lives in `support/`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use connmark_lb::explain::Facts;
use nix::sys::signal::Signal;
use serde_json::Value;

use crate::support::addr::{LAN_HOST, link_addr, srv_addr_towards, v6};
use crate::support::checks::{LinkLoad, tcp_target, tcp6_target, udp_target};
use crate::support::dns::{Dnsmasq, resolve};
use crate::support::lab::DaemonLab;
use crate::support::lab::Lab;
use crate::support::lbconfig::{Backend, Balance, LbConfig, tracked};
use crate::support::topology::{Loss, Topology};
use crate::support::traffic::{
    Bound, Server, tcp_bound_each, tcp_connections, tcp_from_each, udp_flows,
};

const FAST: &[(&str, &str)] = &[("interval", "0.5")];
const DOWN_WITHIN: Duration = Duration::from_secs(10);

/// `count` more addresses of the LAN host, 192.168.77.10 upwards.
fn lan_sources(topo: &Topology, count: u8) -> Vec<Ipv4Addr> {
    let sources: Vec<Ipv4Addr> = (0..count)
        .map(|i| Ipv4Addr::new(192, 168, 77, 10 + i))
        .collect();
    add_to_lan(topo, sources.iter().map(|&a| a.into()));
    sources
}

/// Adds addresses to the LAN host's interface (IPv4 in its /24, IPv6 in its /64).
fn add_to_lan(topo: &Topology, addresses: impl Iterator<Item = IpAddr>) {
    let script: String = addresses
        .map(|a| match a {
            IpAddr::V4(_) => format!("addr add {a}/24 dev eth0\n"),
            IpAddr::V6(_) => format!("addr add {a}/64 dev eth0 nodad\n"),
        })
        .collect();
    topo.lan.ip_batch(&script);
}

/// The link whose SNAT (or NAT66) address the server saw.
fn link_of(seen: &Result<IpAddr, String>) -> usize {
    let addr = seen
        .as_ref()
        .unwrap_or_else(|e| panic!("connection failed: {e}"));
    (1..=9)
        .find(|&l| [link_addr(l).into(), v6::link_addr(l).into()].contains(addr))
        .unwrap_or_else(|| panic!("{addr} is no link's address"))
}

/// Links used by one connection from each source.
fn links_of(topo: &Topology, sources: &[Ipv4Addr]) -> Vec<usize> {
    tcp_from_each(&topo.lan, sources, tcp_target())
        .iter()
        .map(link_of)
        .collect()
}

/// The router's sets as the kernel holds them.
fn facts(topo: &Topology) -> Facts {
    Facts::parse(&topo.router.run("nft -j list table inet connmark_lb")).expect("nft -j")
}

/// `connmark-lb explain --json` on the router with the lab's config and state.
fn explain(lab: &DaemonLab, config: &LbConfig, query: &str) -> Value {
    let file = lab.topo.write_config("lb", config);
    let mut args = vec!["explain", "--json", file.flag(), file.path_str()];
    args.extend(query.split_whitespace());
    let output = lab.topo.lb(&args);
    assert!(
        output.status.success(),
        "explain {query}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("explain prints JSON")
}

/// The link number of an explained `interface` (`wanN`).
fn explained_link(answer: &Value) -> Option<usize> {
    answer["interface"]
        .as_str()?
        .strip_prefix("wan")?
        .parse()
        .ok()
}

/// SIGHUP, then waits until the daemon logged that it reloaded.
fn reload(lab: &DaemonLab) {
    let before = lab.daemon.log().matches("reloaded:").count();
    lab.daemon.signal(Signal::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    while lab.daemon.log().matches("reloaded:").count() == before {
        assert!(
            Instant::now() < deadline,
            "no reload:\n{}",
            lab.daemon.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn fail(lab: &DaemonLab, link: usize) {
    lab.topo.add_loss(link, Loss::All);
    lab.daemon.wait_link(link, "down", DOWN_WITHIN);
}

fn heal(lab: &DaemonLab, link: usize) {
    lab.topo.clear_loss(link);
    lab.daemon.wait_link(link, "up", DOWN_WITHIN);
}

const STICKY: &str = "
config member 'm1'
	option interface 'wan1'

config member 'm2'
	option interface 'wan2'

config policy 'both'
	list use_member 'm1'
	list use_member 'm2'

config rule 'brief'
	option src_ip '192.168.77.14'
	option sticky '1'
	option timeout '2'
	option use_policy 'both'

config rule 'bank'
	option src_ip '192.168.77.10/30'
	option sticky '1'
	option use_policy 'both'

config rule 'rest'
	option use_policy 'both'
";

/// 50 connections of a sticky source stay on one link while two other sources spread; the
/// entries survive a re-apply and a reload; when a link dies only its sticky sources move;
/// an entry expires after its timeout.
#[test]
fn sticky_sources_keep_their_link() {
    let config = tracked(Backend::Nftables, 2, FAST).with_sections(STICKY);
    let lab = DaemonLab::start(&config);
    let s = lan_sources(&lab.topo, 12);
    let (a, b, c, d, brief) = (s[0], s[1], s[10], s[11], s[4]);
    let mut sequence = Vec::new();
    for other in [c, d] {
        for _ in 0..25 {
            sequence.extend([a, other]);
        }
    }
    let seen = links_of(&lab.topo, &sequence);
    let of = |source: Ipv4Addr| -> Vec<usize> {
        sequence
            .iter()
            .zip(&seen)
            .filter(|(s, _)| **s == source)
            .map(|(_, l)| *l)
            .collect()
    };
    let held = of(a)[0];
    assert!(
        of(a).iter().all(|&l| l == held),
        "sticky source moved: {:?}",
        of(a)
    );
    for other in [c, d] {
        let links = of(other);
        let on_held = links.iter().filter(|&&l| l == held).count();
        assert!(
            (11..=14).contains(&on_held),
            "{other} did not spread: {links:?}"
        );
    }
    eprintln!("FIGURE sticky: 50/50 connections of {a} on link {held}; {c} and {d} spread 25 each");

    // The next sticky source gets the other link, and keeps it.
    let first_b = links_of(&lab.topo, &[b])[0];
    assert_ne!(first_b, held);
    let answer = explain(&lab, &config, &format!("{a} 172.31.255.1 tcp 7000"));
    assert_eq!(answer["decision"], "sticky", "{answer}");
    assert_eq!(explained_link(&answer), Some(held));

    lab.topo.apply(&lab.topo.write_config("lb", &config));
    reload(&lab);
    assert_eq!(
        links_of(&lab.topo, &[a, b, a, b]),
        [held, first_b, held, first_b]
    );

    fail(&lab, held);
    let after = links_of(&lab.topo, &[a, b, a, b]);
    assert_eq!(
        after, [first_b; 4],
        "the dead link's source moves, the other stays"
    );
    heal(&lab, held);
    assert_eq!(
        links_of(&lab.topo, &[a, b]),
        [first_b, first_b],
        "both now stick to it"
    );

    links_of(&lab.topo, &[brief]);
    let set = |link: usize| format!("sticky_brief_wan{link}");
    let holds = |facts: &Facts| (1..=2).any(|l| facts.contains(&set(l), brief.into()));
    assert!(holds(&facts(&lab.topo)));
    std::thread::sleep(Duration::from_millis(2600));
    assert!(
        !holds(&facts(&lab.topo)),
        "the entry outlived its 2 s timeout"
    );
}

/// 200 sources spread by weight; one of 3 links fails: no source of a live link changes
/// link and the dead link's sources spread over the others; it heals and they return.
/// `explain` names the bucket and link the kernel used for 20 of them.
#[test]
fn hash_moves_only_the_dead_links_sources() {
    let config = tracked(Backend::Nftables, 3, FAST)
        .with_option("globals", "balance", "hash")
        .with_option("wan3", "weight", "2");
    let lab = DaemonLab::start(&config);
    let sources = lan_sources(&lab.topo, 200);
    let before = links_of(&lab.topo, &sources);
    let counts = (1..=3)
        .map(|l| before.iter().filter(|&&x| x == l).count() as u64)
        .collect();
    LinkLoad { counts }.assert_shares("hash 200 sources 1:1:2", &[1, 1, 2], 5.0);
    for (source, &link) in sources.iter().zip(&before).step_by(10) {
        let answer = explain(&lab, &config, &format!("{source} 172.31.255.1 tcp 7000"));
        assert_eq!(answer["decision"], "hashed", "{answer}");
        assert_eq!(explained_link(&answer), Some(link), "{source}: {answer}");
        assert!(answer["bucket"].as_u64().is_some_and(|b| b < 240));
    }

    fail(&lab, 2);
    let during = links_of(&lab.topo, &sources);
    let moved_healthy = before
        .iter()
        .zip(&during)
        .filter(|(b, d)| **b != 2 && b != d)
        .count();
    assert_eq!(moved_healthy, 0, "sources of live links changed link");
    let moved_to: Vec<usize> = before
        .iter()
        .zip(&during)
        .filter(|(b, _)| **b == 2)
        .map(|(_, d)| *d)
        .collect();
    assert!(moved_to.iter().all(|&l| l != 2));
    assert!(
        moved_to.contains(&1) && moved_to.contains(&3),
        "{moved_to:?}"
    );
    heal(&lab, 2);
    assert_eq!(
        links_of(&lab.topo, &sources),
        before,
        "the sources returned"
    );
    eprintln!(
        "FIGURE hash: link 2 down moved its {} sources ({} to link 1, {} to link 3), 0 others; all returned",
        moved_to.len(),
        moved_to.iter().filter(|&&l| l == 1).count(),
        moved_to.iter().filter(|&&l| l == 3).count()
    );
}

const SETS: &str = "
config set 'vpn'
	list entry '172.31.254.1'

config member 'm2'
	option interface 'wan2'

config policy 'only2'
	list use_member 'm2'

config rule 'to_vpn'
	option dest_set 'vpn'
	option use_policy 'only2'
";

/// A server address on the server's loopback, routed by every ISP.
fn extra_service(topo: &Topology, addr: Ipv4Addr) {
    topo.srv.run(&format!("ip addr add {addr}/32 dev lo"));
    for link in 1..=topo.link_count() {
        topo.isp(link).run(&format!(
            "ip route replace {addr}/32 via {}",
            srv_addr_towards(link)
        ));
    }
}

/// A rule with `dest_set` sends set members through its policy's link and everything else by
/// the default; a name the real dnsmasq forwards lands in the set and then routes that way;
/// the elements survive an apply, a reload and a failover.
#[test]
fn address_sets_filled_by_dnsmasq() {
    let config = tracked(Backend::Nftables, 2, FAST).with_sections(SETS);
    let lab = DaemonLab::start(&config);
    let (static_member, resolved) = (
        Ipv4Addr::new(172, 31, 254, 1),
        Ipv4Addr::new(172, 31, 254, 7),
    );
    for addr in [static_member, resolved] {
        extra_service(&lab.topo, addr);
    }
    let _server = Server::tcp(
        &lab.topo.srv,
        SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 7100),
    );
    let to = |addr| SocketAddrV4::new(addr, 7100);
    let via =
        |lab: &DaemonLab, addr| link_of(&tcp_from_each(&lab.topo.lan, &[LAN_HOST], to(addr))[0]);
    assert_eq!(
        via(&lab, static_member),
        2,
        "a static member goes by the policy"
    );
    assert_eq!(
        via(&lab, crate::support::addr::SERVICE),
        1,
        "the rest by the default"
    );
    assert_eq!(via(&lab, resolved), 1, "not resolved yet");

    let dir = lab.topo.dir.path().to_path_buf();
    let _upstream = Dnsmasq::start(
        &lab.topo.router,
        &dir,
        "upstream",
        &[
            "--listen-address=127.0.0.1".into(),
            "--port=5353".into(),
            format!("--address=/svc.test/{resolved}"),
        ],
    );
    let _forwarder = Dnsmasq::start(
        &lab.topo.router,
        &dir,
        "forwarder",
        &[
            "--listen-address=192.168.77.1".into(),
            "--server=127.0.0.1#5353".into(),
            "--nftset=/svc.test/4#inet#connmark_lb#vpn_v4,6#inet#connmark_lb#vpn_v6".into(),
        ],
    );
    assert!(resolve(
        &lab.topo.lan,
        Ipv4Addr::new(192, 168, 77, 1),
        "svc.test"
    ));
    assert!(
        facts(&lab.topo).contains("vpn_v4", resolved.into()),
        "dnsmasq filled the set"
    );
    assert_eq!(via(&lab, resolved), 2, "a resolved name goes by the policy");
    let answer = explain(&lab, &config, &format!("{LAN_HOST} {resolved} tcp 7100"));
    assert_eq!(
        (answer["decision"].as_str(), explained_link(&answer)),
        (Some("pinned"), Some(2))
    );
    let answer = explain(&lab, &config, &format!("{LAN_HOST} 172.31.255.1 tcp 7000"));
    assert_eq!(answer["decision"], "default", "{answer}");

    lab.topo.apply(&lab.topo.write_config("lb", &config));
    reload(&lab);
    fail(&lab, 2);
    let answer = explain(&lab, &config, &format!("{LAN_HOST} {resolved} tcp 7100"));
    assert_eq!(answer["decision"], "unreachable", "{answer}");
    heal(&lab, 2);
    let held = facts(&lab.topo);
    for addr in [static_member, resolved] {
        assert!(held.contains("vpn_v4", addr.into()), "{addr} lost");
        assert_eq!(via(&lab, addr), 2);
    }
    eprintln!(
        "FIGURE sets: dnsmasq-resolved {resolved} and static {static_member} kept through apply, SIGHUP and a failover of link 2"
    );
}

/// The router's own TCP connections and UDP flows spread over the links, sockets bound to a
/// link's address or device keep it, and they fail over.
fn router_traffic_spreads_and_fails_over(backend: Backend) {
    let lab = DaemonLab::start(&tracked(backend, 2, FAST));
    let topo = &lab.topo;
    let tally = tcp_connections(&topo.router, tcp_target(), 100);
    assert_eq!(tally.failures, 0, "{:?}", tally.errors);
    LinkLoad::from_tally(topo, &tally).assert_shares(
        &format!("{} router tcp", backend.name()),
        &[1, 1],
        2.0,
    );
    let tally = udp_flows(&topo.router, udp_target(), 100, 31000);
    assert_eq!(tally.failures, 0, "{:?}", tally.errors);
    LinkLoad::from_tally(topo, &tally).assert_shares(
        &format!("{} router udp", backend.name()),
        &[1, 1],
        2.0,
    );
    let mut sockets = vec![Bound::Address(link_addr(2).into()); 10];
    sockets.extend(vec![Bound::Device("wan2".into()); 10]);
    sockets.extend(vec![Bound::Device("wan1".into()); 10]);
    let bound: Vec<usize> = tcp_bound_each(&topo.router, &sockets, tcp_target())
        .iter()
        .map(link_of)
        .collect();
    assert_eq!(
        bound,
        [[2; 20].as_slice(), &[1; 10]].concat(),
        "sockets bound to link 2's address or device, then to wan1, keep their link"
    );

    fail(&lab, 2);
    let tally = tcp_connections(&lab.topo.router, tcp_target(), 40);
    assert_eq!(tally.failures, 0, "{:?}", tally.errors);
    assert_eq!(tally.count(link_addr(1)), 40, "{tally:?}");
    let tally = udp_flows(&lab.topo.router, udp_target(), 40, 32000);
    assert_eq!(tally.count(link_addr(1)), 40, "{tally:?}");
    heal(&lab, 2);
    let tally = tcp_connections(&lab.topo.router, tcp_target(), 40);
    assert_eq!(tally.count(link_addr(2)), 20, "{tally:?}");
}

#[test]
fn router_traffic_nftables() {
    router_traffic_spreads_and_fails_over(Backend::Nftables);
}

#[test]
fn router_traffic_iptables() {
    router_traffic_spreads_and_fails_over(Backend::Iptables);
}

const DUAL_CLASSES: &str = "
config member 'm1'
	option interface 'wan1'

config member 'm2'
	option interface 'wan2'

config member 'm1_6'
	option interface 'wan1_6'

config member 'm2_6'
	option interface 'wan2_6'

config policy 'both'
	list use_member 'm1'
	list use_member 'm2'
	list use_member 'm1_6'
	list use_member 'm2_6'

config policy 'hashed'
	list use_member 'm1'
	list use_member 'm2'
	list use_member 'm1_6'
	list use_member 'm2_6'
	option balance 'hash'

config rule 'sticky6'
	option src_ip 'fd77::10/127'
	option sticky '1'
	option use_policy 'both'

config rule 'rest'
	option use_policy 'hashed'
";

/// IPv6 sources stick and hash like IPv4 ones (sets and maps of the IPv6 family), and
/// `explain` names the link the kernel then uses for an IPv6 source.
#[test]
fn ipv6_sources_stick_and_hash() {
    let config = LbConfig::new(Backend::Nftables, Balance::RoundRobin, &[1, 1])
        .with_ipv6(&[1, 1])
        .with_sections(DUAL_CLASSES);
    let lab = Lab::applied(&config);
    let topo = &lab.topo;
    let sources: Vec<Ipv6Addr> = (0x10..0x30)
        .map(|i| Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, i))
        .collect();
    add_to_lan(topo, sources.iter().map(|&a| a.into()));
    let links = |sequence: &[Ipv6Addr]| -> Vec<usize> {
        let sockets: Vec<Bound> = sequence.iter().map(|&a| Bound::Address(a.into())).collect();
        tcp_bound_each(&topo.lan, &sockets, tcp6_target())
            .iter()
            .map(link_of)
            .collect()
    };
    let (a, b) = (sources[0], sources[1]);
    let seen = links(&[a, b].repeat(10));
    let (held_a, held_b) = (seen[0], seen[1]);
    assert_ne!(
        held_a, held_b,
        "the sticky chain's rotation gives b the other link"
    );
    assert!(
        seen.chunks(2).all(|pair| pair == [held_a, held_b]),
        "IPv6 sticky sources moved: {seen:?}"
    );
    let sticky_set = format!("sticky_sticky6_wan{held_a}_6");
    assert!(facts(topo).contains(&sticky_set, a.into()), "{sticky_set}");

    let hashed = &sources[2..];
    let first = links(hashed);
    assert_eq!(links(hashed), first, "a hashed IPv6 source changed link");
    assert!(first.contains(&1) && first.contains(&2), "{first:?}");
    let file = &lab.config;
    for (source, &link) in
        std::iter::once((&a, &held_a)).chain(hashed.iter().zip(&first).step_by(5))
    {
        let mut args = vec!["explain", "--json", file.flag(), file.path_str()];
        let query = format!("{source} {} tcp {}", v6::SERVICE, tcp6_target().port());
        args.extend(query.split_whitespace());
        let output = topo.lb(&args);
        let answer: Value = serde_json::from_slice(&output.stdout).expect("explain JSON");
        let expected = if *source == a { "sticky" } else { "hashed" };
        assert_eq!(answer["decision"], expected, "{answer}");
        assert_eq!(
            answer["interface"].as_str(),
            Some(format!("wan{link}_6").as_str()),
            "{source}: {answer}"
        );
    }
    eprintln!(
        "FIGURE ipv6 classes: sticky {a} on link {held_a}, {b} on {held_b}; 30 hashed sources {first:?}"
    );
}
