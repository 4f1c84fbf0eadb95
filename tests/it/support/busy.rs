//! The busy-link scenario of hitless failover, shared by the tests (which assert its bounds)
//! and the bench (which reports its figures): a LAN client opens one TCP connection every
//! 50 ms, to several servers in turn, while `connmark-lb run` tracks two links; then ISP 2
//! silently drops everything. Each connection's handshake time shows what the failure cost
//! it: a SYN sent into the dead link costs one retransmission (1 s) when the daemon deletes its
//! entry in time, more when it does not.

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::addr::srv_addr_towards;
use super::checks::TCP_PORT;
use super::topology::{Loss, Topology};
use super::traffic::{Server, spawn_in};

/// The servers the client talks to: several destinations, as any busy LAN has.
pub const DESTINATIONS: [Ipv4Addr; 4] = [
    Ipv4Addr::new(172, 31, 254, 1),
    Ipv4Addr::new(172, 31, 254, 2),
    Ipv4Addr::new(172, 31, 254, 3),
    Ipv4Addr::new(172, 31, 254, 4),
];
/// One new connection this often.
pub const SPACING: Duration = Duration::from_millis(50);
/// The window after the failure the figures cover (issue 12's goal: 10 s).
pub const AFTER: Duration = Duration::from_secs(10);
/// Traffic before the failure, so passive health has seen the links answer.
pub const BEFORE: Duration = Duration::from_secs(1);
/// A connection that takes longer than this to connect counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Puts [`DESTINATIONS`] on the server (routed through every ISP) with a TCP service on
/// each; the services stop when the returned servers are dropped.
pub fn add_destinations(topo: &Topology) -> Vec<Server> {
    let mut script = String::new();
    for addr in DESTINATIONS {
        script.push_str(&format!("addr add {addr}/32 dev lo\n"));
    }
    topo.srv.ip_batch(&script);
    for link in 1..=topo.link_count() {
        topo.isp(link).ip_batch(&format!(
            "route add 172.31.254.0/24 via {}\n",
            srv_addr_towards(link)
        ));
    }
    DESTINATIONS
        .iter()
        .map(|addr| Server::tcp(&topo.srv, SocketAddrV4::new(*addr, TCP_PORT)))
        .collect()
}

/// One connection of the run.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// When it started, from the failure (negative: before it).
    pub offset: f64,
    /// How long the handshake took, or why it failed.
    pub result: Result<Duration, String>,
}

/// What one run saw.
#[derive(Debug, Clone)]
pub struct BusyRun {
    pub attempts: Vec<Attempt>,
    /// From the failure to status.json saying the link is out of use.
    pub detection: Option<Duration>,
}

impl BusyRun {
    /// The connections started after the failure.
    pub fn after(&self) -> Vec<&Attempt> {
        self.attempts.iter().filter(|a| a.offset >= 0.0).collect()
    }

    pub fn failed(&self) -> usize {
        self.after().iter().filter(|a| a.result.is_err()).count()
    }

    /// Connections of the window that took longer than `limit` (failed ones included).
    pub fn delayed(&self, limit: Duration) -> usize {
        self.after()
            .iter()
            .filter(|a| a.result.as_ref().map_or(true, |took| *took > limit))
            .count()
    }

    /// Handshake times of the window's successful connections, sorted.
    pub fn delays(&self) -> Vec<Duration> {
        let mut delays: Vec<Duration> = self
            .after()
            .iter()
            .filter_map(|a| a.result.as_ref().ok().copied())
            .collect();
        delays.sort_unstable();
        delays
    }

    /// The `p`-th percentile of [`BusyRun::delays`].
    pub fn percentile(&self, p: f64) -> Duration {
        let delays = self.delays();
        let index = ((delays.len() as f64 - 1.0) * p / 100.0).round() as usize;
        delays.get(index).copied().unwrap_or_default()
    }

    /// One line with every figure, for logs and assertion messages.
    pub fn summary(&self) -> String {
        format!(
            "{} connections, {} failed, {} over 1 s, p50 {:?}, p99 {:?}, max {:?}, detection {:?}",
            self.after().len(),
            self.failed(),
            self.delayed(Duration::from_secs(1)),
            self.percentile(50.0),
            self.percentile(99.0),
            self.delays().last().copied().unwrap_or_default(),
            self.detection
        )
    }
}

/// Runs the scenario on a topology whose daemon writes `status`: [`BEFORE`] of traffic, then
/// link `link` drops everything, then `after` more ([`AFTER`] for the goal's figures); waits
/// for every connection to end.
pub fn run(topo: &Topology, status: PathBuf, link: usize, after: Duration) -> BusyRun {
    let start = Instant::now();
    let mut threads: Vec<(Instant, JoinHandle<Result<Duration, String>>)> = Vec::new();
    let mut failed_at = None;
    let mut watcher = None;
    let mut next = 0;
    while start.elapsed() < BEFORE + after {
        if failed_at.is_none() && start.elapsed() >= BEFORE {
            topo.add_loss(link, Loss::All);
            let now = Instant::now();
            failed_at = Some(now);
            watcher = Some(watch_unusable(status.clone(), link, now, after));
        }
        let target = SocketAddrV4::new(DESTINATIONS[next % DESTINATIONS.len()], TCP_PORT);
        next += 1;
        threads.push((Instant::now(), spawn_in(&topo.lan, move || connect(target))));
        std::thread::sleep(SPACING);
    }
    let failed_at = failed_at.unwrap_or(start);
    let attempts = threads
        .into_iter()
        .map(|(started, thread)| Attempt {
            offset: if started >= failed_at {
                started.duration_since(failed_at).as_secs_f64()
            } else {
                -failed_at.duration_since(started).as_secs_f64()
            },
            result: thread
                .join()
                .unwrap_or_else(|_| Err("thread panicked".into())),
        })
        .collect();
    let detection = watcher.and_then(Watcher::finish);
    BusyRun {
        attempts,
        detection,
    }
}

/// One connection: the handshake time, once the server's greeting proves it works.
fn connect(target: SocketAddrV4) -> Result<Duration, String> {
    greeting(target, CONNECT_TIMEOUT).map(|(took, _)| took)
}

/// Connects to `target` (giving up after `timeout`) and reads the line the server greets with
/// (the address it saw); returns the handshake time and that line.
pub fn greeting(target: SocketAddrV4, timeout: Duration) -> Result<(Duration, String), String> {
    greeted(target, timeout, Duration::from_secs(2)).map(|(took, _, line)| (took, line))
}

/// Like [`greeting`], waiting `read_timeout` for the line, and keeps the connection open.
pub fn greeted(
    target: SocketAddrV4,
    timeout: Duration,
    read_timeout: Duration,
) -> Result<(Duration, TcpStream, String), String> {
    let started = Instant::now();
    let stream = TcpStream::connect_timeout(&target.into(), timeout)
        .map_err(|e| format!("connect {target}: {e}"))?;
    let took = started.elapsed();
    stream
        .set_read_timeout(Some(read_timeout))
        .map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(&stream)
        .read_line(&mut line)
        .map_err(|e| format!("read from {target}: {e}"))?;
    Ok((took, stream, line))
}

/// Polls status.json every 5 ms for link `link` to leave use.
struct Watcher {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Option<Duration>>,
}

impl Watcher {
    fn finish(self) -> Option<Duration> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().ok().flatten()
    }
}

fn watch_unusable(status: PathBuf, link: usize, since: Instant, after: Duration) -> Watcher {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let thread = std::thread::spawn(move || {
        while !flag.load(Ordering::Relaxed) && since.elapsed() < after {
            let usable = std::fs::read_to_string(&status)
                .ok()
                .and_then(|text| serde_json::from_str::<Value>(&text).ok())
                .map(|s| s["links"][link - 1]["usable"].clone());
            if usable == Some(Value::Bool(false)) {
                return Some(since.elapsed());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    });
    Watcher { stop, thread }
}

/// CPU time process `pid` (its main thread) has used so far, to the nanosecond: the first field
/// of /proc/PID/schedstat (the tick-based utime/stime of /proc/PID/stat are 10 ms coarse).
pub fn cpu_time(pid: i32) -> Duration {
    let path = format!("/proc/{pid}/schedstat");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let nanos = text
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{path}: {text:?}"));
    Duration::from_nanos(nanos)
}
