//! What the router runs while something is measured: plain forwarding with one SNAT, our
//! ruleset (either backend), or the seed recipe; and the way back to the bare router between
//! measurements, checked against the state the topology started with.

use std::path::{Path, PathBuf};

use crate::addr::{link_addr, link_device};
use crate::checks::tcp_target;
use crate::lbconfig::{Backend, Balance, LbConfig};
use crate::measure::Invocation;
use crate::topology::{RouterState, Topology};
use crate::traffic::{Server, tcp_connections};

/// The router's default /etc/iproute2/rt_tables, which the seed recipe appends to (in a private
/// copy, see bench/seed.sh).
const RT_TABLES: &str = "255\tlocal\n254\tmain\n253\tdefault\n0\tunspec\n";

/// One way of running the router.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setup {
    /// Main-table forwarding out of link 1 with one SNAT rule: the cheapest router there is.
    Plain,
    /// `connmark-lb apply` with this backend.
    Ours(Backend),
    /// bench/seed.sh.
    Seed,
}

impl Setup {
    /// Every setup the data-plane comparison runs.
    pub const ALL: [Setup; 4] = [
        Setup::Plain,
        Setup::Ours(Backend::Nftables),
        Setup::Ours(Backend::Iptables),
        Setup::Seed,
    ];

    /// The short name used in results.json.
    pub fn key(self) -> &'static str {
        match self {
            Setup::Plain => "plain",
            Setup::Ours(Backend::Nftables) => "ours-nft",
            Setup::Ours(Backend::Iptables) => "ours-ipt",
            Setup::Seed => "seed",
        }
    }

    /// The name used in BENCH.md.
    pub fn label(self) -> &'static str {
        match self {
            Setup::Plain => "plain forwarding + 1 SNAT",
            Setup::Ours(Backend::Nftables) => "connmark-lb (nftables)",
            Setup::Ours(Backend::Iptables) => "connmark-lb (iptables)",
            Setup::Seed => "seed recipe",
        }
    }
}

/// The router of one topology, the programs under test, and the server's TCP service
/// (`checks::tcp_target`) that every measurement connects to.
pub struct Router<'t> {
    pub topo: &'t Topology,
    binary: PathBuf,
    seed_script: PathBuf,
    rt_tables: PathBuf,
    initial: RouterState,
    _server: Server,
}

impl<'t> Router<'t> {
    /// Takes the bare router's state as the state every reset returns to.
    pub fn new(topo: &'t Topology, binary: &Path, seed_script: &Path) -> Router<'t> {
        let router = Router {
            topo,
            binary: binary.to_path_buf(),
            seed_script: seed_script.to_path_buf(),
            rt_tables: topo.dir.path().join("rt_tables"),
            initial: topo.router_state(),
            _server: Server::tcp(&topo.srv, tcp_target()),
        };
        router.reset();
        router
    }

    /// The command that installs `setup` (Plain is no program of interest: None).
    pub fn invocation(
        &self,
        setup: Setup,
        weights: &[u32],
        balance: Balance,
    ) -> Option<Invocation> {
        let log_dir = self.topo.dir.path();
        match setup {
            Setup::Plain => None,
            Setup::Ours(backend) => {
                let name = format!("{}-{}", setup.key(), weight_name(weights));
                let config = self
                    .topo
                    .write_config(&name, &LbConfig::new(backend, balance, weights));
                let state_dir = self.topo.state_dir();
                Some(Invocation::new(
                    &self.binary,
                    &[
                        "apply",
                        config.flag(),
                        config.path_str(),
                        "--state-dir",
                        path_str(&state_dir),
                    ],
                    log_dir,
                ))
            }
            Setup::Seed => {
                assert!(
                    weights.iter().all(|&w| w == 1),
                    "the seed recipe balances equally only, not {weights:?}"
                );
                let links = weights.len().to_string();
                Some(Invocation::new(
                    "bash",
                    &[
                        path_str(&self.seed_script),
                        &links,
                        path_str(&self.rt_tables),
                    ],
                    log_dir,
                ))
            }
        }
    }

    /// Installs `setup` on the bare router.
    pub fn install(&self, setup: Setup, weights: &[u32], balance: Balance) {
        match self.invocation(setup, weights, balance) {
            Some(invocation) => {
                crate::measure::timed(&self.topo.router, &invocation);
            }
            None => self.topo.router.nft(&format!(
                "table ip bench_plain {{\n\
                 \tchain postrouting {{\n\
                 \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
                 \t\toifname \"{}\" snat to {}\n\
                 \t}}\n}}\n",
                link_device(1),
                link_addr(1)
            )),
        }
    }

    /// Checks that LAN connections get through and leave by the links `setup` should use.
    pub fn verify(&self, setup: Setup, links: usize) {
        let count = 4 * links;
        let tally = tcp_connections(&self.topo.lan, tcp_target(), count);
        assert_eq!(
            tally.succeeded(),
            count as u64,
            "{}: connections failed: {:?}",
            setup.label(),
            tally.errors
        );
        let expected: Vec<std::net::IpAddr> = match setup {
            Setup::Plain => vec![link_addr(1).into()],
            Setup::Ours(_) | Setup::Seed => (1..=links).map(|l| link_addr(l).into()).collect(),
        };
        let seen: Vec<_> = tally.seen.keys().copied().collect();
        assert_eq!(seen, expected, "{}: links used", setup.label());
    }

    /// Returns the router to the state the topology started with and checks that it did.
    pub fn reset(&self) {
        let router = &self.topo.router;
        router.nft("flush ruleset\n");
        let mut script = String::from(
            "rule flush\n\
             rule add priority 32766 lookup main\n\
             rule add priority 32767 lookup default\n",
        );
        for table in extra_route_tables(&router.run("ip route show table all")) {
            script.push_str(&format!("route flush table {table}\n"));
        }
        router.ip_batch(&script);
        let mut sysctls = String::from("net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=1");
        for link in 1..=self.topo.link_count() {
            sysctls.push_str(&format!(" net.ipv4.conf.{}.rp_filter=1", link_device(link)));
        }
        router.sysctl(&sysctls);
        router.run("conntrack -F");
        remove_if_present(&self.topo.state_dir().join("applied.json"));
        std::fs::write(&self.rt_tables, RT_TABLES)
            .unwrap_or_else(|e| panic!("write {}: {e}", self.rt_tables.display()));
        if let Some(differences) = self.topo.router_state().differences(&self.initial) {
            panic!("the router did not return to its bare state:\n{differences}");
        }
    }
}

/// Routing tables other than the kernel's own that have routes, from `ip route show table all`.
fn extra_route_tables(listing: &str) -> Vec<String> {
    let mut tables: Vec<String> = listing
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            words.find(|w| *w == "table")?;
            words.next().map(str::to_string)
        })
        .filter(|t| !["main", "local", "default"].contains(&t.as_str()))
        .collect();
    tables.sort();
    tables.dedup();
    tables
}

fn remove_if_present(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => panic!("remove {}: {e}", path.display()),
    }
}

/// "1-1-2" for weights 1:1:2, for file names.
pub fn weight_name(weights: &[u32]) -> String {
    weights
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join("-")
}

/// Paths as command arguments; the bench's temp paths are always UTF-8.
pub fn path_str(path: &Path) -> &str {
    path.to_str()
        .unwrap_or_else(|| panic!("{} is not UTF-8", path.display()))
}
