//! The test topology: `lan` -- `router` -- `isp1..N` -- `srv`, one set of namespaces per test.
//!
//! Every ISP behaves like a real one: it drops packets from the router whose source is not the
//! customer's address 10.0.I.2 and has no route to the LAN, so a missing SNAT or a packet sent
//! out of the wrong link fails instead of passing unnoticed. The server sees real source
//! addresses, so the link a connection used is known. The router starts with strict
//! reverse-path filtering, as many distributions ship it.
use std::ffi::OsStr;
use std::fs;
use std::path::PathBuf;
use std::process::{Command, Output};

use super::addr::{LAN_HOST, SERVICE, link_addr, link_gateway, srv_addr_towards, v6};
use super::lbconfig::{ConfigFile, LbConfig};
use super::netns::{NamespaceGuard, Netns};
use super::process::expect_success;
use super::tempdir::{TempDir, unique_tag};

/// How an ISP loses packets coming from the router (in addition to dropping spoofed ones).
#[derive(Debug, Clone, Copy)]
pub enum Loss {
    /// Every packet: the link is dead.
    All,
    /// This percentage of packets, at random.
    Percent(u8),
    /// The first SYN of every TCP connection; its retransmission passes.
    FirstSyn,
    /// Every IPv4 packet: the link is dead for IPv4 only.
    AllIpv4,
    /// Every IPv6 packet (neighbour discovery still passes): the link is dead for IPv6 only.
    AllIpv6,
}

/// Packet counts of one ISP, for packets arriving from the router.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IspCounters {
    /// Accepted and forwarded (or delivered to the ISP itself).
    pub forwarded: u64,
    /// Dropped because the source was not the customer's address.
    pub spoofed: u64,
    /// Dropped by a [`Loss`] rule.
    pub lost: u64,
}

impl IspCounters {
    /// What happened between `earlier` and `self`.
    pub fn since(self, earlier: IspCounters) -> IspCounters {
        IspCounters {
            forwarded: self.forwarded - earlier.forwarded,
            spoofed: self.spoofed - earlier.spoofed,
            lost: self.lost - earlier.lost,
        }
    }
}

/// Everything a test compares to see whether the router's rules changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterState {
    /// `nft list ruleset` (includes iptables-nft's tables).
    pub nft: String,
    /// `iptables-save` without its timestamp comments.
    pub iptables: String,
    /// `ip rule show`.
    pub rules: String,
    /// `ip route show table all`.
    pub routes: String,
    /// `ip6tables-save` without its timestamp comments.
    pub ip6tables: String,
    /// `ip -6 rule show`.
    pub rules6: String,
    /// `ip -6 route show table all`.
    pub routes6: String,
}

impl RouterState {
    /// Names the parts that differ from `other`, showing both versions, or None when equal.
    pub fn differences(&self, other: &RouterState) -> Option<String> {
        let parts = [
            ("nft list ruleset", &self.nft, &other.nft),
            ("iptables-save", &self.iptables, &other.iptables),
            ("ip rule", &self.rules, &other.rules),
            ("ip route show table all", &self.routes, &other.routes),
            ("ip6tables-save", &self.ip6tables, &other.ip6tables),
            ("ip -6 rule", &self.rules6, &other.rules6),
            ("ip -6 route show table all", &self.routes6, &other.routes6),
        ];
        let report: Vec<String> = parts
            .iter()
            .filter(|(_, a, b)| a != b)
            .map(|(what, a, b)| format!("--- {what} before:\n{a}\n--- {what} after:\n{b}"))
            .collect();
        (!report.is_empty()).then(|| report.join("\n"))
    }
}

/// One test's namespaces and temp dir; dropping it removes all of them.
pub struct Topology {
    pub lan: Netns,
    pub router: Netns,
    /// `isps[i]` serves link `i + 1`.
    pub isps: Vec<Netns>,
    pub srv: Netns,
    /// Whether IPv6 is set up too ([`Topology::dual_stack`]).
    pub ipv6: bool,
    pub dir: TempDir,
    /// Last field, so the namespaces go after everything else of the test.
    _namespaces: NamespaceGuard,
}

impl Topology {
    /// Builds the topology with `links` WAN links; the router has only plain routing (main
    /// default via 10.0.1.1, ip_forward on) and no NAT.
    pub fn new(links: usize) -> Self {
        Topology::build(links, false)
    }

    /// The same with IPv6 everywhere as well (see [`v6`]): the router's main IPv6 default route
    /// points at ISP 1's link-local address and IPv6 forwarding is off until something turns
    /// it on. Every ISP drops IPv6 sources outside its customer's WAN address and /56.
    pub fn dual_stack(links: usize) -> Self {
        Topology::build(links, true)
    }

    /// The topology `config` needs: one ISP per link, dual-stack when it has IPv6 links.
    pub fn for_config(config: &LbConfig) -> Self {
        Topology::build(config.links.len(), !config.links6.is_empty())
    }

    fn build(links: usize, ipv6: bool) -> Self {
        assert!(
            (1..=9).contains(&links),
            "1..=9 links supported, not {links}"
        );
        let tag = unique_tag();
        let mut guard = NamespaceGuard::default();
        let ns_name = |role: &str| format!("cmlb{tag}-{role}");
        let lan = guard.create(ns_name("lan"));
        let router = guard.create(ns_name("router"));
        let isps: Vec<Netns> = (1..=links)
            .map(|link| guard.create(ns_name(&format!("isp{link}"))))
            .collect();
        let srv = guard.create(ns_name("srv"));

        // Without IPv6, none; with it, no duplicate address detection (addresses usable at once).
        let no_ipv6 = if ipv6 {
            "net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0 \
             net.ipv6.conf.all.forwarding=0"
        } else {
            "net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1"
        };
        lan.sysctl(no_ipv6);
        srv.sysctl(no_ipv6);
        router.sysctl(&format!(
            "{no_ipv6} net.ipv4.ip_forward=1 \
             net.ipv4.conf.all.rp_filter=1 net.ipv4.conf.default.rp_filter=1"
        ));
        for isp in &isps {
            isp.sysctl(&format!("{no_ipv6} net.ipv4.ip_forward=1"));
            if ipv6 {
                isp.sysctl("net.ipv6.conf.all.forwarding=1");
            }
        }

        let mut router_script = format!(
            "link add eth0 type veth peer name eth0 netns {lan}\n\
             link set lo up\n\
             addr add 192.168.77.1/24 dev eth0\n\
             link set eth0 up\n",
            lan = lan.name()
        );
        for (i, isp) in isps.iter().enumerate() {
            let link = i + 1;
            router_script.push_str(&format!(
                "link add wan{link} type veth peer name eth0 netns {isp}\n\
                 addr add {addr}/24 dev wan{link}\n\
                 link set wan{link} up\n",
                isp = isp.name(),
                addr = link_addr(link),
            ));
        }
        router_script.push_str(&format!("route add default via {}\n", link_gateway(1)));
        router.ip_batch(&router_script);

        lan.ip_batch(&format!(
            "link set lo up\naddr add {LAN_HOST}/24 dev eth0\nlink set eth0 up\n\
             route add default via 192.168.77.1\n"
        ));

        let mut srv_script = format!("link set lo up\naddr add {SERVICE}/32 dev lo\n");
        for (i, isp) in isps.iter().enumerate() {
            let link = i + 1;
            isp.ip_batch(&format!(
                "link add eth1 type veth peer name eth{link} netns {srv}\n\
                 link set lo up\n\
                 addr add {gateway}/24 dev eth0\n\
                 link set eth0 up\n\
                 addr add 172.16.{link}.1/30 dev eth1\n\
                 link set eth1 up\n\
                 route add {SERVICE}/32 via {srv_addr}\n",
                srv = srv.name(),
                gateway = link_gateway(link),
                srv_addr = srv_addr_towards(link),
            ));
            isp.nft(&isp_ruleset(link));
            srv_script.push_str(&format!(
                "addr add {srv_addr}/30 dev eth{link}\n\
                 link set eth{link} up\n\
                 route add 10.0.{link}.0/24 via 172.16.{link}.1\n",
                srv_addr = srv_addr_towards(link),
            ));
        }
        srv.ip_batch(&srv_script);
        srv.nft(&srv_ruleset(links));

        if ipv6 {
            add_ipv6(&lan, &router, &isps, &srv);
        }

        let dir = TempDir::new("topo");
        fs::create_dir_all(dir.path().join("state")).expect("create state dir");
        Topology {
            lan,
            router,
            isps,
            srv,
            ipv6,
            dir,
            _namespaces: guard,
        }
    }

    pub fn link_count(&self) -> usize {
        self.isps.len()
    }

    /// The ISP namespace of link `link` (1-based).
    pub fn isp(&self, link: usize) -> &Netns {
        &self.isps[link - 1]
    }

    /// The `--state-dir` every connmark-lb run of this test uses.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// `connmark-lb args --state-dir <this test's>` in the router, not started yet.
    pub fn lb_command<S: AsRef<OsStr>>(&self, args: &[S]) -> Command {
        let mut command = self.router.command(env!("CARGO_BIN_EXE_connmark-lb"));
        command.args(args).arg("--state-dir").arg(self.state_dir());
        command
    }

    /// Runs the connmark-lb binary inside the router with `args` plus this test's state dir.
    pub fn lb(&self, args: &[&str]) -> Output {
        self.lb_as(&[env!("CARGO_BIN_EXE_connmark-lb")], args)
    }

    /// Like `lb`, with another connmark-lb: `command` is its path, or an emulator and the path.
    pub fn lb_as(&self, command: &[&str], args: &[&str]) -> Output {
        let state_dir = self.state_dir();
        let state_dir = state_dir.to_str().expect("utf-8 temp path");
        let (program, leading) = command.split_first().expect("a program");
        let mut all: Vec<&str> = leading.to_vec();
        all.extend(args);
        all.extend(["--state-dir", state_dir]);
        self.router.output(program, &all, None)
    }

    /// Runs `connmark-lb <verb>` with `config` and asserts it exits 0; returns stdout.
    pub fn lb_ok(&self, verb: &str, config: &ConfigFile) -> String {
        self.lb_ok_as(&[env!("CARGO_BIN_EXE_connmark-lb")], verb, config)
    }

    /// Like `lb_ok`, with another connmark-lb (see `lb_as`).
    pub fn lb_ok_as(&self, command: &[&str], verb: &str, config: &ConfigFile) -> String {
        let output = self.lb_as(command, &[verb, config.flag(), config.path_str()]);
        expect_success(&format!("connmark-lb {verb} {}", config.describe()), output)
    }

    /// `connmark-lb apply` that must succeed.
    pub fn apply(&self, config: &ConfigFile) {
        self.lb_ok("apply", config);
    }

    /// `connmark-lb stop` that must succeed.
    pub fn stop(&self) {
        let output = self.lb(&["stop"]);
        expect_success("connmark-lb stop", output);
    }

    /// Writes `config` to a new file of this test in the format it asks for.
    pub fn write_config(&self, name: &str, config: &LbConfig) -> ConfigFile {
        config.write(&self.dir, name)
    }

    /// Makes ISP `link` lose packets from the router, on top of earlier loss rules.
    pub fn add_loss(&self, link: usize, loss: Loss) {
        let matcher = match loss {
            Loss::All => String::new(),
            Loss::Percent(percent) => format!("numgen random mod 100 < {percent} "),
            Loss::FirstSyn => "tcp flags & (syn | ack) == syn \
                               ip saddr . tcp sport != @syn_seen \
                               add @syn_seen { ip saddr . tcp sport } "
                .to_string(),
            Loss::AllIpv4 => "meta nfproto ipv4 ".to_string(),
            Loss::AllIpv6 => "meta nfproto ipv6 ".to_string(),
        };
        self.isp(link).nft(&format!(
            "add rule inet isp loss {matcher}counter name lost drop\n"
        ));
    }

    /// Removes every loss rule of ISP `link`.
    pub fn clear_loss(&self, link: usize) {
        self.isp(link).nft("flush chain inet isp loss\n");
    }

    /// The counters of ISP `link`.
    pub fn isp_counters(&self, link: usize) -> IspCounters {
        let counters = self.isp(link).nft_counters("inet", "isp");
        let get = |name: &str| {
            *counters
                .get(name)
                .unwrap_or_else(|| panic!("isp{link} has no counter {name}: {counters:?}"))
        };
        IspCounters {
            forwarded: get("forwarded"),
            spoofed: get("spoofed"),
            lost: get("lost"),
        }
    }

    /// The counters of every ISP, index i for link i + 1.
    pub fn all_isp_counters(&self) -> Vec<IspCounters> {
        (1..=self.link_count())
            .map(|link| self.isp_counters(link))
            .collect()
    }

    /// ICMP echo requests the server received from each link's address, index i for link i + 1.
    pub fn srv_icmp_requests(&self) -> Vec<u64> {
        let counters = self.srv.nft_counters("inet", "srv");
        (1..=self.link_count())
            .map(|link| counters.get(&format!("icmp_{link}")).copied().unwrap_or(0))
            .collect()
    }

    /// ICMPv6 echo requests the server received from each link's IPv6 address.
    pub fn srv_icmp6_requests(&self) -> Vec<u64> {
        let counters = self.srv.nft_counters("inet", "srv");
        (1..=self.link_count())
            .map(|link| counters.get(&format!("icmp6_{link}")).copied().unwrap_or(0))
            .collect()
    }

    /// The router's live rules, routes and ip rules.
    pub fn router_state(&self) -> RouterState {
        let save = |tool: &str| -> String {
            self.router
                .run(tool)
                .lines()
                .filter(|line| !line.starts_with('#'))
                .map(|line| format!("{line}\n"))
                .collect()
        };
        RouterState {
            nft: self.router.run("nft list ruleset"),
            iptables: save("iptables-save"),
            rules: self.router.run("ip rule show"),
            routes: self.router.run("ip route show table all"),
            ip6tables: save("ip6tables-save"),
            rules6: self.router.run("ip -6 rule show"),
            routes6: self.router.run("ip -6 route show table all"),
        }
    }

    /// A readable dump of everything that explains a failure.
    pub fn diagnostics(&self) -> String {
        let mut report = String::new();
        for (what, ns, line) in [
            ("router nft", &self.router, "nft list ruleset"),
            ("router iptables", &self.router, "iptables-save"),
            ("router ip rule", &self.router, "ip rule show"),
            ("router routes", &self.router, "ip route show table all"),
            ("router conntrack", &self.router, "conntrack -L"),
            ("srv nft", &self.srv, "nft list ruleset"),
        ] {
            let output = ns.output(
                line.split_whitespace().next().unwrap_or_default(),
                &line.split_whitespace().skip(1).collect::<Vec<_>>(),
                None,
            );
            let text = String::from_utf8_lossy(&output.stdout);
            let lines: Vec<&str> = text.lines().take(80).collect();
            report.push_str(&format!("=== {what}:\n{}\n", lines.join("\n")));
        }
        for link in 1..=self.link_count() {
            let output = self.isp(link).output("nft", &["list", "counters"], None);
            report.push_str(&format!(
                "=== isp{link} counters:\n{}\n",
                String::from_utf8_lossy(&output.stdout)
            ));
        }
        report
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.diagnostics());
        }
    }
}

/// IPv6 addresses and routes of a dual-stack topology, on top of the IPv4 ones.
fn add_ipv6(lan: &Netns, router: &Netns, isps: &[Netns], srv: &Netns) {
    let mut lan_script = format!(
        "addr add {}/64 dev eth0 nodad\nroute add default via {}\n",
        v6::HOST_ULA,
        v6::ROUTER_ULA
    );
    for link in 1..=isps.len() {
        lan_script.push_str(&format!(
            "addr add {}/64 dev eth0 nodad\n",
            v6::host_in_prefix(link)
        ));
    }
    lan.ip_batch(&lan_script);
    let mut router_script = format!("addr add {}/64 dev eth0 nodad\n", v6::ROUTER_ULA);
    let mut srv_script = format!("addr add {}/128 dev lo nodad\n", v6::SERVICE);
    for (i, isp) in isps.iter().enumerate() {
        let link = i + 1;
        let lan_subnet = v6::host_in_prefix(link).segments();
        router_script.push_str(&format!(
            "addr add {:x}:0:0:{:x}::1/64 dev eth0 nodad\naddr add {}/64 dev wan{link} nodad\n",
            lan_subnet[0],
            lan_subnet[3],
            v6::link_addr(link)
        ));
        isp.ip_batch(&format!(
            "addr add {}/64 dev eth0 nodad\naddr add {}/64 dev eth0 nodad\n\
             addr add fd98:{link:x}::1/64 dev eth1 nodad\n\
             route add {}/128 via {}\nroute add {} via {}\n",
            v6::ISP_LINK_LOCAL,
            v6::link_gateway(link),
            v6::SERVICE,
            v6::srv_addr_towards(link),
            v6::delegated(link),
            v6::link_addr(link),
        ));
        srv_script.push_str(&format!(
            "addr add {}/64 dev eth{link} nodad\nroute add fd00:{link:x}::/64 via fd98:{link:x}::1\n\
             route add {} via fd98:{link:x}::1\n",
            v6::srv_addr_towards(link),
            v6::delegated(link),
        ));
    }
    router_script.push_str(&format!(
        "route add default via {} dev wan1\n",
        v6::ISP_LINK_LOCAL
    ));
    router.ip_batch(&router_script);
    srv.ip_batch(&srv_script);
}

/// The ISP's filter: spoof drop first, then the optional loss rules, then a counter. IPv6
/// neighbour discovery (link-local, answered by the ISP itself) is never lost, like ARP: a
/// dead ISP still resolves its address, and only probes beyond it tell that it is dead.
fn isp_ruleset(link: usize) -> String {
    format!(
        "table inet isp {{
    counter forwarded {{ }}
    counter spoofed {{ }}
    counter lost {{ }}
    set syn_seen {{
        type ipv4_addr . inet_service
        flags dynamic, timeout
        timeout 5m
    }}
    chain loss {{
    }}
    chain from_router {{
        type filter hook prerouting priority raw; policy accept;
        iifname != \"eth0\" accept
        ip saddr != {customer} counter name spoofed drop
        ip6 saddr != {{ {customer6}, {delegated}, fe80::/10 }} counter name spoofed drop
        icmpv6 type {{ nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit }} accept
        jump loss
        counter name forwarded
    }}
}}
",
        customer = link_addr(link),
        customer6 = v6::link_addr(link),
        delegated = v6::delegated(link),
    )
}

/// Counts ICMP echo requests per source link, since ICMP has no port to report addresses on.
fn srv_ruleset(links: usize) -> String {
    let mut counters = String::new();
    let mut rules = String::new();
    for link in 1..=links {
        counters.push_str(&format!(
            "    counter icmp_{link} {{ }}\n    counter icmp6_{link} {{ }}\n"
        ));
        rules.push_str(&format!(
            "        ip saddr {} icmp type echo-request counter name icmp_{link}\n\
             \x20       ip6 saddr {} icmpv6 type echo-request counter name icmp6_{link}\n",
            link_addr(link),
            v6::link_addr(link)
        ));
    }
    format!(
        "table inet srv {{
{counters}    chain input {{
        type filter hook input priority filter; policy accept;
{rules}    }}
}}
"
    )
}
