//! The typed configuration: what the rest of the program is allowed to believe about the
//! user's intent. Only types and the small impls that belong to them live here; reading them
//! from UCI is `sections`, checking them against each other is `checks`.

use super::classes::{AddrSet, HashKey, Sticky};
use super::failback::Failback;
use super::family::{Cidr, Family};
use super::matches::{Mac, Schedule};
use super::standby::Standby;
use super::track::TrackConfig;
use super::tunnel::Tunnel;
use std::net::IpAddr;

/// Which firewall tool carries the marking rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendChoice {
    /// nftables when `nft` works, else iptables.
    Auto,
    Nftables,
    Iptables,
}

/// How a policy spreads new connections over its links.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    /// Exact weighted rotation (the seed's nth).
    RoundRobin,
    /// Weighted random choice.
    Random,
    /// A fixed table of hash buckets mapped to links: the same source (or source and
    /// destination) always takes the same link, and a dead link's buckets alone move.
    Hash(HashKey),
}

/// What a policy does when none of its links is alive (mwan3's meanings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LastResort {
    /// Reject with "network unreachable" so clients fail fast.
    Unreachable,
    /// Drop silently.
    Blackhole,
    /// Leave the connection to the main routing table.
    Default,
}

/// A link event on which that link's conntrack entries are deleted (mwan3's
/// `flush_conntrack` words), so its pinned connections start over on a live link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushEvent {
    /// The link's device came up.
    IfUp,
    /// The link's device went down.
    IfDown,
    /// The link became usable for new connections.
    Connected,
    /// The link stopped being usable for new connections.
    Disconnected,
}

impl FlushEvent {
    /// mwan3's name of the event, used in config, logs and the hook's `ACTION`.
    pub fn as_str(self) -> &'static str {
        match self {
            FlushEvent::IfUp => "ifup",
            FlushEvent::IfDown => "ifdown",
            FlushEvent::Connected => "connected",
            FlushEvent::Disconnected => "disconnected",
        }
    }
}

/// `config globals`: settings shared by every link.
#[derive(Debug, Clone, PartialEq)]
pub struct Globals {
    pub enabled: bool,
    pub backend: BackendChoice,
    /// The fwmark/ctmark bits we own; other packages keep the rest.
    pub mark_mask: u32,
    /// Link i routes through table `table_base + i`.
    pub table_base: u32,
    /// Our ip rules start at this priority.
    pub priority_base: u32,
    /// Ingress devices whose new connections are balanced; empty = every non-WAN device.
    pub lan: Vec<String>,
    /// The default of every policy's `balance`.
    pub balance: Balance,
    /// New connections of the router itself are balanced too (through the output hook).
    pub local_traffic: bool,
    /// DNS queries to a link's servers leave by that link, and go to a live link's server
    /// while it is down.
    pub dns_follow: bool,
}

/// `config interface`: one WAN link.
#[derive(Debug, Clone, PartialEq)]
pub struct Interface {
    pub name: String,
    pub enabled: bool,
    /// Which traffic the link carries: IPv4 (the default) or IPv6.
    pub family: Family,
    /// Fixed kernel device; None when it is resolved from netifd.
    pub device: Option<String>,
    /// Next hop, of the link's family (IPv6 link-local is fine: the route names the device).
    pub gateway: Option<IpAddr>,
    /// SNAT address; None = masquerade.
    pub source: Option<IpAddr>,
    /// Whether traffic leaving the link is SNATed/masqueraded at all (`nat 0`: public LAN
    /// addresses, or NAT done elsewhere).
    pub nat: bool,
    /// IPv6 prefixes delegated or routed to this link (`list prefix`; netifd's are added at
    /// apply time): their sources are pinned to the link and never NATed.
    pub prefixes: Vec<Cidr>,
    /// DNS servers of the link (`list dns`), of its family; netifd's are added at apply time.
    pub dns: Vec<IpAddr>,
    pub weight: u32,
    pub metric: u32,
    /// netifd interface to resolve device/gateway/source from (None: fixed values only).
    pub netifd: Option<String>,
    /// Health tracking by `connmark-lb run`; no targets = up while the device is up.
    pub track: TrackConfig,
    /// Events on which this link's conntrack entries are deleted; default: when it goes down.
    pub flush_conntrack: Vec<FlushEvent>,
    /// Whether the link is a backup used only when its policies' primaries are down.
    pub standby: Standby,
    /// A tunnel's underlay links and outer endpoint (`list underlay`, `option endpoint`).
    pub tunnel: Option<Tunnel>,
    /// 1-based position among interface sections: decides mark and table, stable while the
    /// file's interface order is.
    pub id: u32,
}

/// `config member`: an interface with the metric and weight one policy gives it.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub name: String,
    /// Index into [`Config::interfaces`].
    pub interface: usize,
    pub metric: u32,
    pub weight: u32,
}

/// `config policy`: how new connections are spread over members.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub name: String,
    pub members: Vec<Member>,
    pub last_resort: LastResort,
    pub balance: Balance,
    /// What becomes of a link's connections when a better member returns.
    pub failback: Failback,
}

/// An inclusive port range (a single port has `from == to`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub from: u16,
    pub to: u16,
}

impl PortRange {
    /// `443`, or `from{separator}to` (nft writes ranges with `-`, iptables multiport with `:`).
    pub fn render(&self, separator: char) -> String {
        if self.from == self.to {
            self.from.to_string()
        } else {
            format!("{}{separator}{}", self.from, self.to)
        }
    }
}

/// Which protocol a rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    All,
    Tcp,
    Udp,
    Icmp,
    Number(u8),
}

impl Proto {
    /// The protocol as both nft and iptables spell it; None matches everything.
    pub fn keyword(&self) -> Option<String> {
        match self {
            Proto::All => None,
            Proto::Tcp => Some("tcp".into()),
            Proto::Udp => Some("udp".into()),
            Proto::Icmp => Some("icmp".into()),
            Proto::Number(n) => Some(n.to_string()),
        }
    }
}

/// Where a matched connection goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleTarget {
    /// Index into [`Config::policies`].
    Policy(usize),
    /// Bypass balancing: main routing table.
    Default,
    Unreachable,
    Blackhole,
}

/// `config rule`: first match decides the policy of a new LAN connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The section name (generated for anonymous sections): names the rule's sticky sets.
    pub name: String,
    pub label: String,
    /// The only family the rule matches (`family`, or the family of its addresses); None
    /// matches both.
    pub family: Option<Family>,
    pub proto: Proto,
    pub src_ip: Vec<Cidr>,
    pub dest_ip: Vec<Cidr>,
    pub src_port: Vec<PortRange>,
    pub dest_port: Vec<PortRange>,
    /// Address sets (by name) the destination / source must be in.
    pub dest_set: Option<String>,
    pub src_set: Option<String>,
    pub sticky: Option<Sticky>,
    /// When the rule matches (time of day, weekdays, month days); None: always.
    pub schedule: Option<Schedule>,
    /// Source hardware addresses, one of which the first packet must come from.
    pub src_mac: Vec<Mac>,
    /// Ingress devices, one of which the first packet must come in on.
    pub src_dev: Vec<String>,
    pub target: RuleTarget,
}

impl Rule {
    /// Whether the rule matches only what comes in on a device (a MAC or an ingress device):
    /// the router's own connections never do.
    pub fn needs_ingress(&self) -> bool {
        !self.src_mac.is_empty() || !self.src_dev.is_empty()
    }
}

/// The validated configuration; building it is the only place user input is checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub globals: Globals,
    pub interfaces: Vec<Interface>,
    pub policies: Vec<Policy>,
    pub rules: Vec<Rule>,
    /// Every address set: `config set` sections, then sets only rules name.
    pub sets: Vec<AddrSet>,
    /// Non-fatal findings (unknown options, unused sections) for the log.
    pub warnings: Vec<String>,
}

impl Default for Globals {
    fn default() -> Self {
        Globals {
            enabled: true,
            backend: BackendChoice::Auto,
            mark_mask: DEFAULT_MARK_MASK,
            table_base: DEFAULT_TABLE_BASE,
            priority_base: DEFAULT_PRIORITY_BASE,
            lan: Vec::new(),
            balance: Balance::RoundRobin,
            local_traffic: true,
            dns_follow: true,
        }
    }
}

/// Default mark mask: six bits, clear of sqm's 0xff and pbr's 0x00ff0000.
pub const DEFAULT_MARK_MASK: u32 = 0x3F00;
/// Default first routing table (link i uses base + i).
pub const DEFAULT_TABLE_BASE: u32 = 4000;
/// Default first ip rule priority: after mwan3's 1000-3999, well before pbr's ~30000.
pub const DEFAULT_PRIORITY_BASE: u32 = 4000;
/// How many ip rule priorities we may occupy from `priority_base`.
pub const PRIORITY_SPAN: u32 = 512;
/// Upper bound of links, so the priority and table spans stay fixed.
pub const MAX_LINKS: u32 = 250;
