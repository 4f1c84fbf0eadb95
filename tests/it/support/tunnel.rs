//! A userspace tunnel over UDP, OpenVPN-style, between the router and the server: each end
//! is a small python3 forwarder that owns a tun device and carries its packets in UDP
//! datagrams. The router's end sends to the server's address towards ISP 2; the server's end
//! answers wherever the last datagram came from (the router's address after NAT). Each ISP
//! counts the outer datagrams it forwards, so a test sees which link carried them.

use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::process::{Child, Stdio};

use super::addr::srv_addr_towards;
use super::netns::Netns;
use super::topology::Topology;

/// The tunnel device on the router (and its name on the server).
pub const DEVICE: &str = "tun0";
/// The router's inner address; the server sees tunnelled connections come from it.
pub const ROUTER_INNER: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 2);
/// The server's inner address.
const SERVER_INNER: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 1);
/// The server's UDP port for outer datagrams.
pub const PORT: u16 = 5555;
/// The ISP whose link carries the outer datagrams.
pub const UNDERLAY: usize = 2;

/// The forwarder: `DEV ADDR PEER PORT [REMOTE REMOTE_PORT]`.
const FORWARDER: &str = r#"
import fcntl, os, select, socket, struct, subprocess, sys
dev, addr, peer, port = sys.argv[1:5]
remote = (sys.argv[5], int(sys.argv[6])) if len(sys.argv) > 6 else None
fd = os.open("/dev/net/tun", os.O_RDWR)
fcntl.ioctl(fd, 0x400454CA, struct.pack("16sH", dev.encode(), 0x1001))  # TUNSETIFF, TUN|NO_PI
subprocess.run(["ip", "addr", "add", addr, "peer", peer, "dev", dev], check=True)
with open(f"/proc/sys/net/ipv6/conf/{dev}/disable_ipv6", "w") as knob:
    knob.write("1")  # no router solicitations or MLD: only what is routed into it
subprocess.run(["ip", "link", "set", dev, "up"], check=True)
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(("0.0.0.0", int(port)))
print("ready", flush=True)
while True:
    ready, _, _ = select.select([fd, sock], [], [])
    if fd in ready:
        packet = os.read(fd, 65535)
        if remote:
            try:
                sock.sendto(packet, remote)
            except OSError:
                pass
    if sock in ready:
        try:
            packet, remote = sock.recvfrom(65535)
        except OSError:
            continue
        os.write(fd, packet)
"#;

/// One end of the tunnel, killed (and its device gone) when dropped.
pub struct TunnelEnd(Child);

impl TunnelEnd {
    fn start(ns: &Netns, script: &str, args: &[String]) -> TunnelEnd {
        let mut child = ns
            .command("python3")
            .arg(script)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start python3 (scripts/install-deps.sh installs it)");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("piped stdout");
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("forwarder output");
        assert_eq!(line.trim(), "ready", "the tunnel forwarder did not start");
        TunnelEnd(child)
    }
}

impl Drop for TunnelEnd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Both ends of the tunnel: the server's (`None` while it is failed) and the router's.
pub struct Tunnel {
    script: String,
    pub server: Option<TunnelEnd>,
    _router: TunnelEnd,
}

impl Tunnel {
    /// Starts both ends, and a counter of outer datagrams in each ISP.
    pub fn start(topo: &Topology) -> Tunnel {
        let script = topo.dir.write("tunnel.py", FORWARDER);
        let script = script.to_str().expect("utf-8 temp path").to_string();
        for isp in &topo.isps {
            isp.nft(&format!(
                "table inet tunnel {{\n counter outer {{}}\n chain forward {{\n type filter hook forward priority -10; policy accept;\n udp dport {PORT} counter name outer\n }}\n}}\n"
            ));
        }
        let server = Some(Self::server_end(topo, &script));
        let router = TunnelEnd::start(
            &topo.router,
            &script,
            &[
                DEVICE.to_string(),
                ROUTER_INNER.to_string(),
                SERVER_INNER.to_string(),
                (PORT + 1).to_string(),
                srv_addr_towards(UNDERLAY).to_string(),
                PORT.to_string(),
            ],
        );
        Tunnel {
            script,
            server,
            _router: router,
        }
    }

    fn server_end(topo: &Topology, script: &str) -> TunnelEnd {
        TunnelEnd::start(
            &topo.srv,
            script,
            &[
                DEVICE.to_string(),
                SERVER_INNER.to_string(),
                ROUTER_INNER.to_string(),
                PORT.to_string(),
            ],
        )
    }

    /// The tunnel peer dies: the router's device stays up, nothing comes back through it.
    pub fn fail_peer(&mut self) {
        self.server = None;
    }

    /// The tunnel peer comes back (it learns the router's address from its next datagram).
    pub fn heal_peer(&mut self, topo: &Topology) {
        self.server = Some(Self::server_end(topo, &self.script));
    }

    /// `topo`'s `endpoint` option value for the tunnel.
    pub fn endpoint() -> String {
        format!("{}:{PORT}", srv_addr_towards(UNDERLAY))
    }

    /// Packets the router has routed into its tunnel device so far.
    pub fn router_sent(topo: &Topology) -> u64 {
        let json = topo.router.run(&format!("ip -j -s link show {DEVICE}"));
        let links: serde_json::Value = serde_json::from_str(&json).expect("ip -j output");
        links[0]["stats64"]["tx"]["packets"]
            .as_u64()
            .expect("tx packet count")
    }

    /// Outer datagrams ISP `link` has forwarded so far.
    pub fn outer_packets(topo: &Topology, link: usize) -> u64 {
        topo.isp(link).nft_counters("inet", "tunnel")["outer"]
    }
}
