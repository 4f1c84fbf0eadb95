//! One long TCP connection from the LAN host on a chosen link, exchanging a line every 100 ms
//! on its own thread until stopped: what a failover or failback does to connections already
//! open.

use std::io::{BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::addr::link_addr;
use super::busy;
use super::checks::tcp_target;
use super::topology::Topology;
use super::traffic::spawn_in;

/// The connection's thread; it counts answers and the addresses the server reported.
pub struct LongConnection {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Result<(usize, Vec<Ipv4Addr>), String>>,
}

impl LongConnection {
    /// Opens connections until one lands on `link` (at most four tries: round-robin, or the
    /// only link in use).
    pub fn on_link(topo: &Topology, link: usize) -> LongConnection {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = spawn_in(&topo.lan, move || {
            let mut stream = None;
            for _ in 0..4 {
                let (_, candidate, greeting) =
                    busy::greeted(tcp_target(), Duration::from_secs(2), Duration::from_secs(3))?;
                if greeting.trim() == link_addr(link).to_string() {
                    stream = Some(candidate);
                    break;
                }
            }
            let stream = stream.ok_or(format!("no connection landed on link {link}"))?;
            let mut reader = BufReader::new(&stream);
            let mut writer = &stream;
            let mut answered = 0;
            let mut peers = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(120);
            while !flag.load(Ordering::Relaxed) && Instant::now() < deadline {
                writer
                    .write_all(format!("ping {answered}\n").as_bytes())
                    .map_err(|e| format!("send {answered}: {e}"))?;
                let mut line = String::new();
                reader
                    .read_line(&mut line)
                    .map_err(|e| format!("answer {answered}: {e}"))?;
                let peer = line.split_whitespace().next().unwrap_or_default();
                let peer: Ipv4Addr = peer.parse().map_err(|e| format!("{line:?}: {e}"))?;
                if !peers.contains(&peer) {
                    peers.push(peer);
                }
                answered += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            Ok((answered, peers))
        });
        LongConnection { stop, thread }
    }

    /// Whether the exchange has ended by itself (the connection broke).
    pub fn broke(&self) -> bool {
        self.thread.is_finished()
    }

    /// Ends the exchange; (answers, addresses seen), or how the connection broke.
    pub fn finish(self) -> Result<(usize, Vec<Ipv4Addr>), String> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("long connection thread panicked")
    }
}
