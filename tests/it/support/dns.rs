//! DNS in the test topology: real dnsmasq instances (one resolver per ISP, reachable only
//! through that ISP and answering a name with an address of its own, and the router's
//! forwarder), and a small client that sends one A query and reads the first A record back.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use super::netns::Netns;
use super::topology::Topology;
use super::traffic::spawn_in;

/// The domain every ISP resolver answers, with every name under it.
pub const NAME: &str = "probe.test";
/// The name the router's forwarder answers itself: it is listening once it does.
pub const READY: &str = "ready.test";

/// ISP `link`'s resolver address, on the ISP's loopback: no other ISP routes to it.
pub fn resolver(link: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 20, link_octet(link), 53)
}

/// The address ISP `link`'s resolver answers [`NAME`] with: tells which ISP answered.
pub fn answer(link: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 99, link_octet(link), 1)
}

/// The link whose resolver answered with `addr`.
pub fn answered_by(addr: Ipv4Addr) -> Option<usize> {
    (1..=9).find(|&link| answer(link) == addr)
}

fn link_octet(link: usize) -> u8 {
    u8::try_from(link).unwrap_or_else(|_| panic!("link number {link} out of range"))
}

/// A dnsmasq in a namespace (its log and pid file in `dir`), killed when dropped.
pub struct Dnsmasq(Child);

impl Dnsmasq {
    pub fn start(ns: &Netns, dir: &Path, name: &str, options: &[String]) -> Dnsmasq {
        let child = ns
            .command("dnsmasq")
            .args([
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--user=root",
                "--group=root",
            ])
            .arg(format!(
                "--pid-file={}",
                dir.join(format!("{name}.pid")).display()
            ))
            .arg(format!(
                "--log-facility={}",
                dir.join(format!("{name}.log")).display()
            ))
            .args(options)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start dnsmasq (scripts/install-deps.sh installs dnsmasq-base)");
        Dnsmasq(child)
    }

    /// One resolver per ISP of `topo` on [`resolver`], answering [`NAME`] with [`answer`]
    /// (its own records, as an ISP's resolver stub should). The ISP drops what does not come
    /// from its customer's address, so it answers only its customer.
    pub fn isp_resolvers(topo: &Topology) -> Vec<Dnsmasq> {
        (1..=topo.link_count())
            .map(|link| {
                let isp = topo.isp(link);
                isp.ip_batch(&format!("addr add {}/32 dev lo\n", resolver(link)));
                Dnsmasq::start(
                    isp,
                    topo.dir.path(),
                    &format!("isp{link}-resolver"),
                    &[
                        format!("--listen-address={}", resolver(link)),
                        format!("--address=/{NAME}/{}", answer(link)),
                    ],
                )
            })
            .collect()
    }

    /// A resolver of the router on `listen`, forwarding to every ISP's resolver without a
    /// cache (every lookup goes upstream), as OpenWrt's dnsmasq forwards to the links'
    /// servers; it asks ISP `first`'s resolver first and the next only when that one fails
    /// (`--strict-order`), so a test knows which server it keeps asking.
    pub fn router_forwarder(topo: &Topology, listen: SocketAddrV4, first: usize) -> Dnsmasq {
        let mut options = vec![
            format!("--listen-address={}", listen.ip()),
            format!("--port={}", listen.port()),
            "--cache-size=0".to_string(),
            "--strict-order".to_string(),
            "--log-queries".to_string(),
            format!("--address=/{READY}/127.0.0.1"),
        ];
        let mut links: Vec<usize> = (1..=topo.link_count()).collect();
        links.rotate_left(first - 1);
        options.extend(
            links
                .iter()
                .map(|&link| format!("--server={}", resolver(link))),
        );
        let name = format!("router-forwarder-{first}");
        Dnsmasq::start(&topo.router, topo.dir.path(), &name, &options)
    }

    /// Waits (bounded) until every ISP resolver of `topo` answers in its own namespace.
    pub fn wait_isp_resolvers(topo: &Topology) {
        for link in 1..=topo.link_count() {
            assert!(
                resolve(topo.isp(link), resolver(link), NAME),
                "ISP {link}'s resolver never answered"
            );
        }
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An A query for `name` with identifier `id`.
fn query(id: u16, name: &str) -> Vec<u8> {
    let mut query = id.to_be_bytes().to_vec();
    query.extend([0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        query.push(u8::try_from(label.len()).expect("short label"));
        query.extend(label.as_bytes());
    }
    query.extend([0, 0, 1, 0, 1]);
    query
}

/// The first A record of a reply to query `id`, if it is one without error.
fn first_a(reply: &[u8], id: u16) -> Option<Ipv4Addr> {
    if reply.len() < 12 || reply[..2] != id.to_be_bytes() || reply[3] & 0x0f != 0 {
        return None;
    }
    let answers = u16::from_be_bytes([reply[6], reply[7]]);
    let mut at = 12;
    // The question: labels up to the root, then type and class.
    while *reply.get(at)? != 0 {
        at += 1 + usize::from(reply[at]);
    }
    at += 5;
    for _ in 0..answers {
        // A name (a compression pointer here, or labels), type, class, ttl, length, data.
        if reply.get(at)? & 0xc0 == 0xc0 {
            at += 2;
        } else {
            while *reply.get(at)? != 0 {
                at += 1 + usize::from(reply[at]);
            }
            at += 1;
        }
        let kind = u16::from_be_bytes([*reply.get(at)?, *reply.get(at + 1)?]);
        let length = usize::from(u16::from_be_bytes([
            *reply.get(at + 8)?,
            *reply.get(at + 9)?,
        ]));
        let data = reply.get(at + 10..at + 10 + length)?;
        if kind == 1 && length == 4 {
            return Some(Ipv4Addr::new(data[0], data[1], data[2], data[3]));
        }
        at += 10 + length;
    }
    None
}

/// A name under [`NAME`] not asked before: the router's dnsmasq holds back a question that
/// is already on its way upstream, so lookups meant to be independent must differ.
pub fn fresh_name() -> String {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    format!("q{}.{NAME}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// One lookup of `name` at `server` from the namespace of the calling thread: one query,
/// answered within `timeout` or not at all. The answer and how long it took.
pub fn ask(
    server: SocketAddrV4,
    name: &str,
    timeout: Duration,
) -> Result<(Ipv4Addr, Duration), String> {
    static NEXT_ID: AtomicU16 = AtomicU16::new(0x1234);
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let started = Instant::now();
    let socket = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))
        .map_err(|e| format!("udp socket: {e}"))?;
    socket
        .send_to(&query(id, name), server)
        .map_err(|e| format!("send to {server}: {e}"))?;
    let mut reply = [0u8; 512];
    loop {
        let left = timeout.saturating_sub(started.elapsed());
        if left.is_zero() {
            return Err(format!("no answer from {server} within {timeout:?}"));
        }
        socket
            .set_read_timeout(Some(left))
            .map_err(|e| format!("timeout: {e}"))?;
        match socket.recv_from(&mut reply) {
            Ok((n, from)) if from == server.into() => {
                return first_a(&reply[..n], id)
                    .map(|addr| (addr, started.elapsed()))
                    .ok_or_else(|| format!("no A record in the answer of {server}"));
            }
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(format!("receive from {server}: {e}")),
        }
    }
}

/// [`ask`] from namespace `ns`, on a thread of its own.
pub fn ask_in(
    ns: &Netns,
    server: SocketAddrV4,
    name: &str,
    timeout: Duration,
) -> Result<(Ipv4Addr, Duration), String> {
    let name = name.to_string();
    spawn_in(ns, move || ask(server, &name, timeout))
        .join()
        .expect("dns client thread")
}

/// Asks `server` (port 53) for `name` from `ns` up to ten times, half a second each; true
/// when it answered with an address.
pub fn resolve(ns: &Netns, server: Ipv4Addr, name: &str) -> bool {
    resolve_at(ns, SocketAddrV4::new(server, 53), name)
}

/// [`resolve`] at any port.
pub fn resolve_at(ns: &Netns, server: SocketAddrV4, name: &str) -> bool {
    (0..10).any(|_| ask_in(ns, server, name, Duration::from_millis(500)).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_gives_its_first_a_record() {
        let mut reply = query(7, "probe.test");
        reply[2] = 0x81;
        reply[3] = 0x80;
        reply[7] = 1;
        reply.extend([0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4, 10, 99, 2, 1]);
        assert_eq!(first_a(&reply, 7), Some(Ipv4Addr::new(10, 99, 2, 1)));
        assert_eq!(first_a(&reply, 8), None, "another query's answer");
        reply[3] = 0x83;
        assert_eq!(first_a(&reply, 7), None, "NXDOMAIN");
        assert_eq!(answered_by(answer(2)), Some(2));
    }
}
